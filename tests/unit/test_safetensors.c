/*
 * test_safetensors.c — the safetensors reader against files written byte by byte here: one
 * valid file whose tensors must read back exactly, then one file per kind of corruption, each
 * of which must be refused with a message naming the file, the tensor where there is one, and
 * the problem. Files go to a fresh mkdtemp directory, removed at the end.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/elementwise.h"
#include "models/formats/safetensors.h"
#include "sl_test.h"

static char g_dir[4096];
static char g_paths[64][4200]; /* every file written, for clean-up */
static int g_npaths;

/* Creates <dir>/<name> for writing (ends the test if it cannot); *path receives its path. */
static FILE *create(const char *name, const char **path)
{
    if (g_npaths == (int)(sizeof g_paths / sizeof g_paths[0])) {
        fprintf(stderr, "too many files\n");
        exit(1);
    }
    char *p = g_paths[g_npaths++];
    if (snprintf(p, sizeof g_paths[0], "%s/%s", g_dir, name) >= (int)sizeof g_paths[0]) {
        fprintf(stderr, "path too long: %s/%s\n", g_dir, name);
        exit(1);
    }
    FILE *f = fopen(p, "wb");
    if (!f) {
        perror(p);
        exit(1);
    }
    *path = p;
    return f;
}

/* Writes <dir>/<name>: an 8-byte little-endian `hlen`, the header text, then `ndata` bytes
 * (from `data`, or a 0, 1, 2, ... pattern when data is NULL). Returns the path. */
static const char *write_file_hlen(const char *name, uint64_t hlen, const char *header,
                                   const void *data, size_t ndata)
{
    const char *path;
    FILE *f = create(name, &path);
    unsigned char len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (unsigned char)(hlen >> (8 * i));
    fwrite(len, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    for (size_t i = 0; i < ndata; i++)
        fputc(data ? ((const unsigned char *)data)[i] : (int)(i & 0xff), f);
    fclose(f);
    return path;
}

/* The usual case: the length field is the header's length. */
static const char *write_st(const char *name, const char *header, const void *data, size_t ndata)
{
    return write_file_hlen(name, strlen(header), header, data, ndata);
}

/* Opens `path`, expects failure with a message containing the path and each of the words. */
static void expect_fail(const char *path, const char *w1, const char *w2, const char *w3)
{
    sl_safetensors_t st;
    sl_error_t err = {{0}};
    int rc = sl_st_open(&st, path, &err);
    CHECKF(rc == -1, "%s: opened a corrupt file", path);
    CHECKF(strstr(err.msg, path) != NULL, "message does not name the file: %s", err.msg);
    const char *words[3] = {w1, w2, w3};
    for (int i = 0; i < 3; i++)
        if (words[i])
            CHECKF(strstr(err.msg, words[i]) != NULL, "message lacks '%s': %s", words[i], err.msg);
    CHECK(st.map == NULL && st.tensors == NULL && st.n_tensors == 0);
    sl_st_close(&st); /* a failed struct may be closed again */
}

static void test_valid(void)
{
    /* a: F32 [2,3] at [0,24); b: I8 [4] at [24,28); c: BF16 scalar at [28,30);
     * d: F16 [1] at [30,32); e: I32 [1] at [32,36); z: F32 [0] at [36,36) (empty). */
    unsigned char data[36];
    for (int i = 0; i < 6; i++) {
        float v = (float)i * 0.5f - 1.0f;
        memcpy(data + 4 * i, &v, 4);
    }
    for (int i = 0; i < 4; i++)
        data[24 + i] = (unsigned char)(int8_t)(i - 2);
    uint16_t c = sl_f32_to_bf16(1.5f), d = sl_f32_to_f16(-2.25f);
    memcpy(data + 28, &c, 2);
    memcpy(data + 30, &d, 2);
    int32_t e = -123456;
    memcpy(data + 32, &e, 4);
    const char *header = "{\"__metadata__\":{\"format\":\"pt\"},"
                         "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                         "\"b\":{\"dtype\":\"I8\",\"shape\":[4],\"data_offsets\":[24,28]},"
                         "\"c\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[28,30]},"
                         "\"d\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[30,32]},"
                         "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[36,36]},"
                         "\"e\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[32,36]}}     ";
    const char *path = write_st("valid.safetensors", header, data, sizeof data);

    sl_safetensors_t st;
    sl_error_t err = {{0}};
    int rc = sl_st_open(&st, path, &err);
    CHECKF(rc == 0, "valid file refused: %s", err.msg);
    if (rc != 0)
        return;
    CHECK(st.n_tensors == 6); /* __metadata__ is not a tensor */
    CHECK(st.header_len == strlen(header));
    CHECK(st.buffer_len == sizeof data);
    CHECK(st.size == 8 + strlen(header) + sizeof data);
    CHECK(sl_st_find(&st, "__metadata__") == NULL);
    CHECK(sl_st_find(&st, "missing") == NULL);

    const sl_st_tensor_t *a = sl_st_find(&st, "a");
    CHECK(a && a->dtype == SL_F32 && a->ndim == 2 && a->shape[0] == 2 && a->shape[1] == 3);
    if (a) {
        CHECK(sl_st_numel(a) == 6 && a->begin == 0 && a->end == 24);
        float v[6];
        memcpy(v, a->data, sizeof v);
        for (int i = 0; i < 6; i++)
            CHECKF(v[i] == (float)i * 0.5f - 1.0f, "a[%d] = %g", i, (double)v[i]);
    }
    const sl_st_tensor_t *b = sl_st_find(&st, "b");
    CHECK(b && b->dtype == SL_I8 && b->ndim == 1 && b->shape[0] == 4);
    if (b)
        CHECK(((const int8_t *)b->data)[0] == -2 && ((const int8_t *)b->data)[3] == 1);
    const sl_st_tensor_t *ct = sl_st_find(&st, "c");
    CHECK(ct && ct->dtype == SL_BF16 && ct->ndim == 0 && sl_st_numel(ct) == 1);
    if (ct) {
        uint16_t h;
        memcpy(&h, ct->data, 2);
        CHECK(sl_bf16_to_f32(h) == 1.5f);
    }
    const sl_st_tensor_t *dt = sl_st_find(&st, "d");
    CHECK(dt && dt->dtype == SL_F16);
    if (dt) {
        uint16_t h;
        memcpy(&h, dt->data, 2);
        CHECK(sl_f16_to_f32(h) == -2.25f);
    }
    const sl_st_tensor_t *et = sl_st_find(&st, "e");
    CHECK(et && et->dtype == SL_I32);
    if (et) {
        int32_t v;
        memcpy(&v, et->data, 4);
        CHECK(v == -123456);
    }
    const sl_st_tensor_t *z = sl_st_find(&st, "z");
    CHECK(z && z->ndim == 1 && z->shape[0] == 0 && sl_st_numel(z) == 0);
    sl_st_close(&st);
    CHECK(st.map == NULL && st.n_tensors == 0);
    sl_st_close(&st); /* twice is harmless */

    /* An empty header object is a valid file with no tensors. */
    path = write_st("empty.safetensors", "{}", NULL, 0);
    rc = sl_st_open(&st, path, &err);
    CHECKF(rc == 0 && st.n_tensors == 0, "empty header refused: %s", err.msg);
    sl_st_close(&st);

    /* A zeroed struct may be closed. */
    sl_safetensors_t zero;
    memset(&zero, 0, sizeof zero);
    sl_st_close(&zero);
}

static void test_corrupt(void)
{
    const char *p;

    /* Fewer than 8 bytes: not even a header length. */
    FILE *f = create("short.safetensors", &p);
    fwrite("\x05\0\0\0\0", 1, 5, f);
    fclose(f);
    expect_fail(p, "shorter than", "8", NULL);

    char missing[4200];
    snprintf(missing, sizeof missing, "%s/does-not-exist.safetensors", g_dir);
    expect_fail(missing, "cannot open", NULL, NULL);

    p = write_file_hlen("hlen_beyond.safetensors", 1000, "{}", NULL, 16);
    expect_fail(p, "header length 1000", "beyond the file", NULL);

    p = write_file_hlen("hlen_absurd.safetensors", 1ULL << 40, "{}", NULL, 16);
    expect_fail(p, "absurdly large", NULL, NULL);
    p = write_file_hlen("hlen_absurd2.safetensors", 200000000ULL, "{}", NULL, 16);
    expect_fail(p, "absurdly large", NULL, NULL);

    p = write_st("bad_json.safetensors", "{\"a\": {\"dtype\": \"F32\",", NULL, 8);
    expect_fail(p, "not valid JSON", NULL, NULL);

    p = write_st("trailing.safetensors", "{} x", NULL, 8);
    expect_fail(p, "not valid JSON", NULL, NULL);

    p = write_st("not_object.safetensors", "[1, 2]", NULL, 8);
    expect_fail(p, "not a JSON object", NULL, NULL);

    p = write_st("entry_not_object.safetensors", "{\"w\": 3}", NULL, 8);
    expect_fail(p, "'w'", "not a JSON object", NULL);

    /* Valid safetensors dtypes shardline does not compute with: the file opens (real
     * checkpoints carry I64 position ids), the tensor is marked unmapped, and its byte count
     * is still checked against its own element size. */
    p = write_st("f64.safetensors",
                 "{\"layers.0.weight\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]},"
                 "\"mask\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[16,19]}}",
                 NULL, 19);
    {
        sl_safetensors_t st;
        sl_error_t err;
        int rc = sl_st_open(&st, p, &err);
        CHECKF(rc == 0, "F64/BOOL file should open: %s", rc ? err.msg : "");
        if (rc == 0) {
            const sl_st_tensor_t *w = sl_st_find(&st, "layers.0.weight");
            const sl_st_tensor_t *m = sl_st_find(&st, "mask");
            CHECK(w && !w->mapped && !strcmp(w->code, "F64"));
            CHECK(m && !m->mapped && !strcmp(m->code, "BOOL") && m->end - m->begin == 3);
            sl_st_close(&st);
        }
    }
    p = write_st("i64_short.safetensors",
                 "{\"ids\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,8]}}", NULL, 8);
    expect_fail(p, "'ids'", "mismatch", NULL);

    p = write_st("xx.safetensors",
                 "{\"w\":{\"dtype\":\"XX\",\"shape\":[2],\"data_offsets\":[0,8]}}", NULL, 8);
    expect_fail(p, "'w'", "XX", "unknown dtype");

    p = write_st("no_dtype.safetensors", "{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", NULL, 8);
    expect_fail(p, "'w'", "missing 'dtype'", NULL);

    p = write_st(
        "beyond.safetensors",
        "{\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[25],\"data_offsets\":[0,100]}}", NULL,
        64);
    expect_fail(p, "'layers.0.weight'", "[0, 100] end beyond the data buffer", "(64 bytes)");

    p = write_st("begin_after_end.safetensors",
                 "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", NULL, 16);
    expect_fail(p, "'w'", "begin after end", NULL);

    p = write_st("overlap.safetensors",
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
                 NULL, 24);
    expect_fail(p, "overlap", "'a'", "'b'");

    /* c lies inside a; the empty z sits between them in begin order, so comparing only
     * neighbours would miss it */
    p = write_st("overlap_nested.safetensors",
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[0,32]},"
                 "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]},"
                 "\"c\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[16,20]}}",
                 NULL, 32);
    expect_fail(p, "overlap", "'c'", "'a'");

    p = write_st("duplicate.safetensors",
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                 "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                 NULL, 8);
    expect_fail(p, "'a'", "twice", NULL);

    p = write_st("mismatch.safetensors",
                 "{\"layers.1.bias\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}}",
                 NULL, 16);
    expect_fail(p, "'layers.1.bias'", "shape/byte count mismatch", NULL);

    /* numel * 4 overflows 64 bits: must be a mismatch, not a wrap-around that matches */
    p = write_st("overflow.safetensors",
                 "{\"huge\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
                 "\"data_offsets\":[0,0]}}",
                 NULL, 0);
    expect_fail(p, "'huge'", "shape/byte count mismatch", NULL);

    p = write_st("negative.safetensors",
                 "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1,4],\"data_offsets\":[0,16]}}", NULL, 16);
    expect_fail(p, "'w'", "negative", NULL);

    p = write_st("fraction.safetensors",
                 "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", NULL, 4);
    expect_fail(p, "'w'", "shape", "not a non-negative integer");

    p = write_st("too_many_dims.safetensors",
                 "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                 "\"data_offsets\":[0,4]}}",
                 NULL, 4);
    expect_fail(p, "'w'", "9 dimensions", NULL);

    p = write_st("no_offsets.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", NULL, 8);
    expect_fail(p, "'w'", "missing 'data_offsets'", NULL);

    p = write_st("bad_offsets.safetensors",
                 "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", NULL, 8);
    expect_fail(p, "'w'", "data_offsets", NULL);

    p = write_st("neg_offsets.safetensors",
                 "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", NULL, 8);
    expect_fail(p, "'w'", "data_offsets", NULL);
}

int main(void)
{
    if (sl_test_tmpdir(g_dir, sizeof g_dir, "test_safetensors") != 0)
        return 1;
    test_valid();
    test_corrupt();
    for (int i = 0; i < g_npaths; i++)
        unlink(g_paths[i]);
    rmdir(g_dir);
    return sl_test_finish("test_safetensors");
}
