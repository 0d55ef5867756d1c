/*
 * test_gguf.c — the GGUF reader (models/formats/gguf.c) against gguf-py, the llama.cpp project's
 * own GGUF library (tests/reference/make_gguf_goldens.py made the reference files):
 * 1. tests/reference/goldens/mixed_types.gguf: every metadata value (each value type, string
 *    arrays, a nested array) through every getter, including the refusals of the typed ones.
 * 2. Every tensor of that file (F32, F16, BF16 with Inf/NaN/subnormals, Q8_0, Q4_0, Q4_1, in
 *    1-D, 2-D and 3-D shapes) dequantised and compared bit for bit with gguf.quants.dequantize
 *    (mixed_types_expected.h5), whole and row by row, the Q5_0 tensor too; a copy whose Q5_0
 *    tensor claims type IQ4_NL (a type shardline does not dequantise) opens, and its rows are
 *    refused naming the tensor and the type.
 * 2b. tests/reference/goldens/kquants.gguf: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q5_0 and Q5_1
 *    tensors of random blocks with valid f16 scales, bit for bit against gguf.quants.dequantize
 *    (kquants_expected.h5); and the weights reader's row and column slices of a Q4_K tensor for
 *    TP sizes 1-4 (including splits inside a super-block) against the same values; Q4_K, Q5_K,
 *    Q6_K, Q5_0 and Q5_1 tensors kept in their own blocks and packed on the CPU gather gguf-py's
 *    values.
 * 3. The real SmolLM2-135M GGUF ($SL_MODELS_DIR/smollm2.path): every tensor's type and shape,
 *    the sum and sum of squares of all its dequantised values (1e-6 relative) and the first 64
 *    values of its first and last row (bit for bit), against smollm2_gguf_check.h5.
 * 4. Corrupt copies of the mixed file written to /tmp: every truncation, a bad magic, versions
 *    1, 4 and big-endian, absurd counts, unknown value types, huge string/array/key lengths,
 *    tensor offsets past the end or misaligned, duplicate keys and names, bad block sizes, a
 *    deeply nested array; each must fail with a message naming the file (and the key or tensor
 *    at fault). Then random byte flips: whatever opens is read in full (run under valgrind to
 *    prove no read strays).
 * 5. `shardline inspect FILE.gguf` (sl_inspect_gguf) on the mixed file.
 * Fails (exit 1) when the SmolLM2 model is not installed: run scripts/install-models.sh.
 */
#include "common/sl_fs.h"
#include "models/formats/gguf.h"
#include "cli/inspect_model.h"
#include "models/formats/weights.h"
#include "kernels/backend.h"
#include "kernels/quant.h"

#include <hdf5.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sl_test.h"

static char src_dir[4096];
static char mixed_path[4200];

/* ---- helpers ----------------------------------------------------------------------------- */

static int str_is(const char *s, size_t len, const char *want)
{
    return len == strlen(want) && memcmp(s, want, len) == 0;
}

static uint32_t f32_bits(float f)
{
    uint32_t b;
    memcpy(&b, &f, 4);
    return b;
}

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* Offset of the first occurrence of a length-prefixed string s (the u64 length field). */
static size_t find_str(const unsigned char *buf, size_t len, const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 8; i + n <= len; i++)
        if (memcmp(buf + i, s, n) == 0 && get_u64(buf + i - 8) == n)
            return i - 8;
    fprintf(stderr, "FAIL: '%s' not found in %s\n", s, mixed_path);
    exit(1);
}

/* ---- 1. metadata ------------------------------------------------------------------------- */

static const struct {
    const char *key;
    sl_gguf_vtype_t type, elem;
    uint64_t n;
} expected_keys[] = {
    {"general.architecture", SL_GGUF_STRING, SL_GGUF_STRING, 1},
    {"general.alignment", SL_GGUF_U32, SL_GGUF_U32, 1},
    {"test.u8", SL_GGUF_U8, SL_GGUF_U8, 1},
    {"test.i8", SL_GGUF_I8, SL_GGUF_I8, 1},
    {"test.u16", SL_GGUF_U16, SL_GGUF_U16, 1},
    {"test.i16", SL_GGUF_I16, SL_GGUF_I16, 1},
    {"test.u32", SL_GGUF_U32, SL_GGUF_U32, 1},
    {"test.i32", SL_GGUF_I32, SL_GGUF_I32, 1},
    {"test.u64", SL_GGUF_U64, SL_GGUF_U64, 1},
    {"test.i64", SL_GGUF_I64, SL_GGUF_I64, 1},
    {"test.f32", SL_GGUF_F32, SL_GGUF_F32, 1},
    {"test.f64", SL_GGUF_F64, SL_GGUF_F64, 1},
    {"test.true", SL_GGUF_BOOL, SL_GGUF_BOOL, 1},
    {"test.false", SL_GGUF_BOOL, SL_GGUF_BOOL, 1},
    {"test.empty", SL_GGUF_STRING, SL_GGUF_STRING, 1},
    {"test.utf8", SL_GGUF_STRING, SL_GGUF_STRING, 1},
    {"test.strs", SL_GGUF_ARRAY, SL_GGUF_STRING, 4},
    {"test.i32s", SL_GGUF_ARRAY, SL_GGUF_I32, 5},
    {"test.f32s", SL_GGUF_ARRAY, SL_GGUF_F32, 3},
    {"test.u8s", SL_GGUF_ARRAY, SL_GGUF_U8, 3},
    {"test.u64s", SL_GGUF_ARRAY, SL_GGUF_U64, 3},
    {"test.i64s", SL_GGUF_ARRAY, SL_GGUF_I64, 2},
    {"test.bools", SL_GGUF_ARRAY, SL_GGUF_BOOL, 3},
    {"test.nested", SL_GGUF_ARRAY, SL_GGUF_ARRAY, 2},
    {"testarch.context_length", SL_GGUF_U32, SL_GGUF_U32, 1},
    {"testarch.embedding_length", SL_GGUF_U32, SL_GGUF_U32, 1},
    {"testarch.block_count", SL_GGUF_U32, SL_GGUF_U32, 1},
    {"testarch.feed_forward_length", SL_GGUF_U32, SL_GGUF_U32, 1},
    {"testarch.attention.head_count", SL_GGUF_U32, SL_GGUF_U32, 1},
    {"testarch.attention.head_count_kv", SL_GGUF_U32, SL_GGUF_U32, 1},
    {"testarch.attention.layer_norm_rms_epsilon", SL_GGUF_F32, SL_GGUF_F32, 1},
    {"testarch.rope.freq_base", SL_GGUF_F32, SL_GGUF_F32, 1},
    {"tokenizer.ggml.model", SL_GGUF_STRING, SL_GGUF_STRING, 1},
    {"tokenizer.ggml.tokens", SL_GGUF_ARRAY, SL_GGUF_STRING, 5},
    {"tokenizer.ggml.bos_token_id", SL_GGUF_U32, SL_GGUF_U32, 1},
};
#define N_KEYS ((int)(sizeof expected_keys / sizeof expected_keys[0]))

static void check_int(const sl_gguf_t *g, const char *key, int64_t want)
{
    int64_t v = 12345;
    sl_error_t err;
    int rc = sl_gguf_get_int(g, key, &v, &err);
    CHECKF(rc == 0 && v == want, "%s: rc %d, %lld, want %lld (%s)", key, rc, (long long)v,
           (long long)want, rc ? err.msg : "");
    double d = 0;
    CHECKF(sl_gguf_get_float(g, key, &d, &err) == 0 && d == (double)want, "%s as float: %g", key,
           d);
}

static void check_str(const sl_gguf_t *g, const char *key, const char *want)
{
    const char *s = NULL;
    size_t len = 0;
    sl_error_t err;
    int rc = sl_gguf_get_str(g, key, &s, &len, &err);
    CHECKF(rc == 0 && str_is(s, len, want), "%s: '%.*s', want '%s'", key, (int)len, s ? s : "",
           want);
}

/* A getter that must refuse: the message names the file and the key (and contains `what`). */
static void check_refused(int rc, const sl_error_t *err, const char *key, const char *what)
{
    CHECKF(rc == -1 && strstr(err->msg, mixed_path) && strstr(err->msg, key) &&
               strstr(err->msg, what),
           "refusal for '%s': rc %d, message '%s'", key, rc, err->msg);
}

static void check_str_array(const sl_gguf_kv_t *kv, const char *const *want, int n)
{
    CHECK(kv && kv->n == (uint64_t)n);
    for (int i = 0; kv && i < n; i++) {
        const char *s = NULL;
        size_t len = 0;
        int rc = sl_gguf_arr_str(kv, (uint64_t)i, &s, &len);
        CHECKF(rc == 0 && str_is(s, len, want[i]), "%s[%d] = '%.*s', want '%s'", kv->key, i,
               (int)len, s ? s : "", want[i]);
    }
    /* backwards too: access does not depend on a previous call */
    for (int i = n - 1; kv && i >= 0; i--) {
        const char *s = NULL;
        size_t len = 0;
        CHECK(sl_gguf_arr_str(kv, (uint64_t)i, &s, &len) == 0 && str_is(s, len, want[i]));
    }
}

static void test_metadata(const sl_gguf_t *g)
{
    CHECK(sl_gguf_version(g) == 3);
    CHECK(strcmp(sl_gguf_path(g), mixed_path) == 0);
    CHECKF(sl_gguf_kv_count(g) == N_KEYS, "%d keys, want %d", sl_gguf_kv_count(g), N_KEYS);
    for (int i = 0; i < N_KEYS; i++) {
        const sl_gguf_kv_t *kv = sl_gguf_kv_at(g, i); /* the file keeps the writer's order */
        CHECKF(kv && strcmp(kv->key, expected_keys[i].key) == 0, "key %d is '%s', want '%s'", i,
               kv ? kv->key : "(null)", expected_keys[i].key);
        CHECK(sl_gguf_find(g, expected_keys[i].key) == kv);
        if (!kv)
            continue;
        CHECKF(kv->type == expected_keys[i].type && kv->elem == expected_keys[i].elem &&
                   kv->n == expected_keys[i].n,
               "%s: type %d elem %d n %llu", kv->key, kv->type, kv->elem,
               (unsigned long long)kv->n);
    }
    CHECK(sl_gguf_kv_at(g, -1) == NULL && sl_gguf_kv_at(g, N_KEYS) == NULL);
    CHECK(sl_gguf_find(g, "test.absent") == NULL && sl_gguf_find(g, "") == NULL);

    check_str(g, "general.architecture", "testarch");
    check_int(g, "general.alignment", 64);
    check_int(g, "test.u8", 200);
    check_int(g, "test.i8", -100);
    check_int(g, "test.u16", 60000);
    check_int(g, "test.i16", -30000);
    check_int(g, "test.u32", 4000000000LL);
    check_int(g, "test.i32", -2000000000LL);
    check_int(g, "test.i64", -9000000000000000000LL);
    check_int(g, "testarch.context_length", 128);
    check_int(g, "testarch.embedding_length", 64);
    check_int(g, "testarch.block_count", 2);
    check_int(g, "testarch.feed_forward_length", 96);
    check_int(g, "testarch.attention.head_count", 4);
    check_int(g, "testarch.attention.head_count_kv", 2);
    check_int(g, "tokenizer.ggml.bos_token_id", 0);
    check_str(g, "test.empty", "");
    check_str(g, "test.utf8",
              "gr\xc3\xbc\xc3\x9f"
              "e, \xe4\xb8\x96\xe7\x95\x8c");
    check_str(g, "tokenizer.ggml.model", "gpt2");

    sl_error_t err;
    double d = 0;
    int64_t v = 0;
    int b = -1;
    /* u64 beyond int64: exact as a double, refused as an integer */
    const sl_gguf_kv_t *u64 = sl_gguf_find(g, "test.u64");
    CHECK(u64 && get_u64(u64->raw) == 18000000000000000000ULL);
    CHECK(sl_gguf_get_float(g, "test.u64", &d, &err) == 0 && d == 18000000000000000000.0);
    check_refused(sl_gguf_get_int(g, "test.u64", &v, &err), &err, "test.u64", "int64");
    CHECK(sl_gguf_get_float(g, "test.f32", &d, &err) == 0 && d == 0.15625);
    CHECK(sl_gguf_get_float(g, "test.f64", &d, &err) == 0 && d == -2.718281828459045);
    CHECK(sl_gguf_get_float(g, "testarch.attention.layer_norm_rms_epsilon", &d, &err) == 0 &&
          d == (double)1e-5f);
    CHECK(sl_gguf_get_float(g, "testarch.rope.freq_base", &d, &err) == 0 && d == 10000.0);
    CHECK(sl_gguf_get_bool(g, "test.true", &b, &err) == 0 && b == 1);
    CHECK(sl_gguf_get_bool(g, "test.false", &b, &err) == 0 && b == 0);

    /* refusals name the file and the key */
    const char *s;
    size_t len;
    check_refused(sl_gguf_get_int(g, "test.absent", &v, &err), &err, "test.absent", "missing");
    check_refused(sl_gguf_get_int(g, "test.f32", &v, &err), &err, "test.f32", "f32");
    check_refused(sl_gguf_get_int(g, "test.true", &v, &err), &err, "test.true", "bool");
    check_refused(sl_gguf_get_int(g, "test.i32s", &v, &err), &err, "test.i32s", "array");
    check_refused(sl_gguf_get_float(g, "test.utf8", &d, &err), &err, "test.utf8", "string");
    check_refused(sl_gguf_get_bool(g, "test.u8", &b, &err), &err, "test.u8", "u8");
    check_refused(sl_gguf_get_str(g, "test.strs", &s, &len, &err), &err, "test.strs", "array");
    check_refused(sl_gguf_get_str(g, "test.absent", &s, &len, &err), &err, "test.absent",
                  "missing");

    /* arrays */
    static const char *const strs[] = {"alpha", "", "gamma delta", "\xce\xb5"};
    check_str_array(sl_gguf_find(g, "test.strs"), strs, 4);
    static const char *const toks[] = {"<unk>", "a", "b", "ab", "\xc4\xa0the"};
    check_str_array(sl_gguf_find(g, "tokenizer.ggml.tokens"), toks, 5);
    const sl_gguf_kv_t *kv = sl_gguf_find(g, "general.architecture");
    CHECK(kv && sl_gguf_arr_str(kv, 0, &s, &len) == 0 && str_is(s, len, "testarch"));
    kv = sl_gguf_find(g, "test.i32s");
    static const int64_t i32s[] = {1, -2, 3, 2147483647, -2147483648LL};
    for (int i = 0; kv && i < 5; i++)
        CHECK(sl_gguf_arr_int(kv, (uint64_t)i) == i32s[i] &&
              sl_gguf_arr_float(kv, (uint64_t)i) == (double)i32s[i]);
    CHECK(kv && sl_gguf_arr_str(kv, 0, &s, &len) == -1);
    kv = sl_gguf_find(g, "test.f32s");
    CHECK(kv && sl_gguf_arr_float(kv, 0) == 0.5 && sl_gguf_arr_float(kv, 1) == -1.25 &&
          sl_gguf_arr_float(kv, 2) == (double)1e30f && sl_gguf_arr_int(kv, 1) == -1);
    kv = sl_gguf_find(g, "test.u8s");
    CHECK(kv && sl_gguf_arr_int(kv, 0) == 0 && sl_gguf_arr_int(kv, 1) == 1 &&
          sl_gguf_arr_int(kv, 2) == 255);
    kv = sl_gguf_find(g, "test.u64s");
    CHECK(kv && sl_gguf_arr_int(kv, 1) == 1 && get_u64(kv->raw + 16) == UINT64_MAX &&
          sl_gguf_arr_int(kv, 2) == INT64_MAX &&
          sl_gguf_arr_float(kv, 2) == 18446744073709551615.0);
    kv = sl_gguf_find(g, "test.i64s");
    CHECK(kv && sl_gguf_arr_int(kv, 0) == -1 && sl_gguf_arr_int(kv, 1) == INT64_MAX);
    kv = sl_gguf_find(g, "test.bools");
    CHECK(kv && sl_gguf_arr_int(kv, 0) == 1 && sl_gguf_arr_int(kv, 1) == 0 &&
          sl_gguf_arr_int(kv, 2) == 1);
    /* [[1, 2], [3, 4, 5]]: raw is the first inner array (u32 type, u64 n, values) */
    kv = sl_gguf_find(g, "test.nested");
    if (kv) {
        const unsigned char *p = kv->raw;
        int32_t x[5];
        CHECK(p[0] == SL_GGUF_I32 && get_u64(p + 4) == 2);
        memcpy(x, p + 12, 8);
        CHECK(p[20] == SL_GGUF_I32 && get_u64(p + 24) == 3);
        memcpy(x + 2, p + 32, 12);
        CHECK(x[0] == 1 && x[1] == 2 && x[2] == 3 && x[3] == 4 && x[4] == 5);
        CHECK(sl_gguf_arr_int(kv, 0) == 0 && isnan(sl_gguf_arr_float(kv, 0)) &&
              sl_gguf_arr_str(kv, 0, &s, &len) == -1);
    }
}

/* ---- 2. tensors of the mixed file -------------------------------------------------------- */

static const struct {
    const char *name;
    int type, ndim;
    int64_t ne[4];
} expected_tensors[] = {
    {"tensor.f32", SL_GGML_F32, 2, {64, 3, 1, 1}},
    {"tensor.f16", SL_GGML_F16, 3, {32, 2, 2, 1}},
    {"tensor.bf16", SL_GGML_BF16, 2, {64, 3, 1, 1}},
    {"tensor.q8_0", SL_GGML_Q8_0, 2, {64, 3, 1, 1}},
    {"tensor.q8_0.3d", SL_GGML_Q8_0, 3, {32, 2, 2, 1}},
    {"tensor.q4_0", SL_GGML_Q4_0, 3, {32, 2, 2, 1}},
    {"tensor.q4_0.2d", SL_GGML_Q4_0, 2, {64, 3, 1, 1}},
    {"tensor.q4_1", SL_GGML_Q4_1, 2, {64, 3, 1, 1}},
    {"tensor.q4_1.3d", SL_GGML_Q4_1, 3, {32, 2, 2, 1}},
    {"tensor.vec", SL_GGML_F32, 1, {64, 1, 1, 1}},
    {"tensor.q5_0", 6, 2, {32, 2, 1, 1}},
};
#define N_TENSORS ((int)(sizeof expected_tensors / sizeof expected_tensors[0]))

/* Dequantises tensor t whole and row by row and compares the bits with gguf-py's values in
 * /tensors/<name> of the open HDF5 file f; checks the refusal of rows out of range. Returns the
 * number of values that differ; *compared grows by the number compared. */
static long compare_tensor(const sl_gguf_tensor_t *t, hid_t f, long *compared)
{
    const char *name = t->name;
    int64_t ne0 = t->ne[0], rows = sl_gguf_rows(t);
    sl_error_t err;
    float *got = malloc((size_t)(ne0 * rows) * sizeof *got);
    size_t n = 0;
    char dsname[256];
    snprintf(dsname, sizeof dsname, "/tensors/%s", name);
    float *want = sl_test_h5_read(f, dsname, H5T_NATIVE_FLOAT, 4, &n, NULL, NULL);
    CHECKF(want && n == (size_t)(ne0 * rows), "%s: expected values missing", name);
    int rc = sl_gguf_dequant_rows(t, 0, rows, got, &err);
    CHECKF(rc == 0, "%s: %s", name, err.msg);
    long bad = 0;
    for (size_t j = 0; want && rc == 0 && j < n; j++) {
        if (f32_bits(got[j]) != f32_bits(want[j])) {
            if (bad++ < 3)
                fprintf(stderr, "  %s[%zu]: %.9g (0x%08x), gguf-py %.9g (0x%08x)\n", name, j,
                        got[j], f32_bits(got[j]), want[j], f32_bits(want[j]));
        }
    }
    CHECKF(bad == 0, "%s (%s): %ld of %zu values differ from gguf-py", name,
           sl_ggml_type_name(t->type), bad, n);
    *compared += (long)n;
    /* one row at a time gives the same bits */
    float *row = malloc((size_t)ne0 * sizeof *row);
    for (int64_t r = 0; want && r < rows; r++)
        CHECK(sl_gguf_dequant_rows(t, r, 1, row, &err) == 0 &&
              memcmp(row, want + r * ne0, (size_t)ne0 * 4) == 0);
    free(row);
    /* rows out of range */
    rc = sl_gguf_dequant_rows(t, rows, 1, got, &err);
    CHECKF(rc == -1 && strstr(err.msg, name) && strstr(err.msg, "out of range"), "'%s'", err.msg);
    CHECK(sl_gguf_dequant_rows(t, -1, 1, got, &err) == -1);
    CHECK(sl_gguf_dequant_rows(t, 0, rows + 1, got, &err) == -1);
    CHECK(sl_gguf_dequant_rows(t, rows, 0, got, &err) == 0);
    free(want);
    free(got);
    return bad;
}

static void test_mixed_tensors(const sl_gguf_t *g)
{
    char h5path[4300];
    snprintf(h5path, sizeof h5path, "%s/tests/reference/goldens/mixed_types_expected.h5", src_dir);
    hid_t f = H5Fopen(h5path, H5F_ACC_RDONLY, H5P_DEFAULT);
    CHECKF(f >= 0, "cannot open %s", h5path);
    if (f < 0)
        return;
    CHECK(sl_gguf_tensor_count(g) == N_TENSORS);
    long compared = 0, differ = 0;
    for (int i = 0; i < N_TENSORS && i < sl_gguf_tensor_count(g); i++) {
        const sl_gguf_tensor_t *t = sl_gguf_tensor_at(g, i);
        const char *name = expected_tensors[i].name;
        CHECKF(strcmp(t->name, name) == 0, "tensor %d is '%s', want '%s'", i, t->name, name);
        CHECK(sl_gguf_tensor_find(g, name) == t);
        CHECKF(t->type == expected_tensors[i].type && t->ndim == expected_tensors[i].ndim &&
                   memcmp(t->ne, expected_tensors[i].ne, sizeof t->ne) == 0,
               "%s: type %d ndim %d ne [%lld %lld %lld %lld]", name, t->type, t->ndim,
               (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3]);
        CHECK(t->offset % 64 == 0);
        CHECKF(t->supported, "%s: type %s not dequantised", name, sl_ggml_type_name(t->type));
        differ += compare_tensor(t, f, &compared);
    }
    printf("mixed_types.gguf: %ld values in %d tensors compared with gguf-py, %ld differ\n",
           compared, N_TENSORS, differ);
    CHECK(sl_gguf_tensor_find(g, "tensor.absent") == NULL &&
          sl_gguf_tensor_at(g, N_TENSORS) == NULL);
    CHECK(strcmp(sl_ggml_type_name(0), "F32") == 0 && strcmp(sl_ggml_type_name(30), "BF16") == 0);
    CHECK(strcmp(sl_ggml_type_name(200), "type 200") == 0);
    H5Fclose(f);
}

/* ---- 2b. K-quants ------------------------------------------------------------------------ */

/* Q4_K, Q5_K, Q6_K, Q5_0 and Q5_1 kept in their own blocks (sl_weights_keep): the [3, 512] tensors'
 * rows read as stored, repeated to 16 rows (the CPU packs whole groups of 16) and packed on the CPU
 * backend; every row gathered from the packed matrix (sl_embedding) has gguf-py's bits, and the
 * matrix reads back as the file's bytes. 3 rows alone are not kept: the loader requantizes them. */
static void test_kquants_packed(sl_weights_t *w, sl_backend_t *be, hid_t f)
{
    static const char *names[5] = {"tensor.q4_k", "tensor.q6_k", "tensor.q5_k", "tensor.q5_0",
                                   "tensor.q5_1"};
    static const sl_dtype_t dts[5] = {SL_Q4_K, SL_Q6_K, SL_Q5_K, SL_Q5_0, SL_Q5_1};
    for (int t = 0; t < 5; t++) {
        const int64_t k = 512;
        sl_error_t err = {0};
        CHECKF(
            sl_weights_stored_dtype(w, names[t]) == dts[t] &&
                sl_weights_keep(w, be, names[t], 3, 0, k) == SL_KEEP_BLOCKS &&
                sl_weights_keep(w, be, names[t], 16, 0, k) == (SL_KEEP_BLOCKS | SL_KEEP_PACKED) &&
                sl_weights_keep(w, be, names[t], 16, 0, 256) == (SL_KEEP_BLOCKS | SL_KEEP_PACKED) &&
                sl_weights_keep(w, be, names[t], 16, t < 3 ? 128 : 16, 256) == SL_KEEP_BLOCKS,
            "%s: which slices are kept as stored", names[t]);
        sl_dtype_t dt = SL_F32;
        uint8_t *raw =
            sl_weights_read(w, names[t], 0, 3, 0, k, SL_KEEP_BLOCKS | SL_KEEP_PACKED, &dt, &err);
        sl_dtype_t dt1 = SL_F32;
        float *deq = sl_weights_read(w, names[t], 0, 3, 0, k, SL_KEEP_BLOCKS, &dt1, &err);
        size_t n = 0;
        char ds[64];
        snprintf(ds, sizeof ds, "/tensors/%s", names[t]);
        float *want = sl_test_h5_read(f, ds, H5T_NATIVE_FLOAT, 4, &n, NULL, NULL);
        CHECKF(raw && dt == dts[t] && deq && dt1 == SL_F32 && want && n == 3 * (size_t)k,
               "%s: read as stored (%s)", names[t], err.msg);
        if (raw && dt == dts[t] && want && n == 3 * (size_t)k) {
            const size_t rb = sl_dtype_bytes(dt, k);
            uint8_t *rows = malloc(16 * rb), *back = malloc(16 * rb);
            for (int r = 0; r < 16; r++)
                memcpy(rows + r * rb, raw + (r % 3) * rb, rb);
            sl_tensor_t *q = sl_tensor_new2(be, dt, 16, k), *ids = sl_tensor_new1(be, SL_I32, 16),
                        *out = sl_tensor_new2(be, SL_F32, 16, k);
            sl_copy_h2d(q, rows, 16 * rb);
            sl_tensor_pack(q);
            int32_t id[16];
            for (int r = 0; r < 16; r++)
                id[r] = 15 - r;
            sl_copy_h2d(ids, id, sizeof id);
            sl_embedding(q, ids, out);
            int bad = 0;
            for (int r = 0; r < 16; r++)
                bad +=
                    memcmp((float *)out->data + r * k, want + (id[r] % 3) * k, 4 * (size_t)k) != 0;
            sl_copy_d2h(back, q, 16 * rb);
            CHECKF(q->packed && bad == 0 && memcmp(back, rows, 16 * rb) == 0,
                   "%s packed: %d of 16 rows differ from gguf-py's values, or the bytes read back "
                   "differ",
                   names[t], bad);
            sl_tensor_free(q);
            sl_tensor_free(ids);
            sl_tensor_free(out);
            free(rows);
            free(back);
        }
        free(raw);
        free(deq);
        free(want);
    }
}

/* kquants.gguf: random super-blocks of each K-quant type against gguf-py; then the weights
 * reader's blocks of the [4, 768] Q4_K tensor for every TP split of its rows and of its columns
 * (384 and 192 columns cut a 256-value super-block: whole rows are dequantised, then sliced). */
static void test_kquants(void)
{
    char gpath[4300], h5path[4300];
    snprintf(gpath, sizeof gpath, "%s/tests/reference/goldens/kquants.gguf", src_dir);
    snprintf(h5path, sizeof h5path, "%s/tests/reference/goldens/kquants_expected.h5", src_dir);
    sl_error_t err;
    sl_gguf_t *g = sl_gguf_open(gpath, &err);
    CHECKF(g != NULL, "%s", err.msg);
    hid_t f = H5Fopen(h5path, H5F_ACC_RDONLY, H5P_DEFAULT);
    CHECKF(f >= 0, "cannot open %s", h5path);
    if (!g || f < 0)
        return;
    CHECK(sl_gguf_tensor_count(g) == 13);
    long compared = 0, differ = 0;
    int seen[15] = {0};
    for (int i = 0; i < sl_gguf_tensor_count(g); i++) {
        const sl_gguf_tensor_t *t = sl_gguf_tensor_at(g, i);
        CHECKF(((t->type >= SL_GGML_Q2_K && t->type <= SL_GGML_Q6_K) || t->type == SL_GGML_Q5_0 ||
                t->type == SL_GGML_Q5_1) &&
                   t->supported,
               "%s: type %s", t->name, sl_ggml_type_name(t->type));
        if (t->type >= 0 && t->type < 15)
            seen[t->type]++;
        differ += compare_tensor(t, f, &compared);
    }
    for (int ty = SL_GGML_Q2_K; ty <= SL_GGML_Q6_K; ty++)
        CHECKF(seen[ty] >= 2, "no %s tensors", sl_ggml_type_name(ty));
    CHECK(seen[SL_GGML_Q5_0] == 1 && seen[SL_GGML_Q5_1] == 1);
    printf("kquants.gguf: %ld values in %d tensors compared with gguf-py, %ld differ\n", compared,
           sl_gguf_tensor_count(g), differ);

    size_t n = 0;
    float *want =
        sl_test_h5_read(f, "/tensors/tensor.q4_k.wide", H5T_NATIVE_FLOAT, 4, &n, NULL, NULL);
    sl_weights_t *w = sl_weights_open(gpath, &err);
    CHECKF(w != NULL, "%s", err.msg);
    CHECKF(w && sl_weights_check(w, "tensor.q4_k.wide", 4, 768, &err) == 0, "%s", err.msg);
    for (int tp = 1; w && want && n == 4 * 768 && tp <= 4; tp++) {
        for (int r = 0; r < tp; r++) {
            int64_t nc = 768 / tp, c0 = r * nc; /* a row-parallel (column) slice */
            float *b = sl_weights_block(w, "tensor.q4_k.wide", 0, 4, c0, nc, &err);
            CHECKF(b != NULL, "%s", err.msg);
            for (int64_t i = 0; b && i < 4; i++)
                CHECKF(memcmp(b + i * nc, want + i * 768 + c0, (size_t)nc * 4) == 0,
                       "TP %d rank %d: row %lld of the column slice differs", tp, r, (long long)i);
            free(b);
            if (4 % tp)
                continue;
            int64_t nr = 4 / tp; /* a column-parallel (row) slice */
            b = sl_weights_block(w, "tensor.q4_k.wide", r * nr, nr, 0, 768, &err);
            CHECKF(b && memcmp(b, want + r * nr * 768, (size_t)(nr * 768) * 4) == 0,
                   "TP %d rank %d: row slice differs", tp, r);
            free(b);
        }
    }
    /* loaded as stored, a K-quant matrix becomes Q8_0: each value within half a Q8_0 step of
     * gguf-py's dequantised one, plus what the f16 rounding of the step moves the block's
     * largest value by (random blocks reach f16's subnormal steps) */
    sl_backend_t *be = sl_backend_create(SL_BACKEND_CPU, 0, 1, &err);
    sl_tensor_t *q = w && be ? sl_weights_upload(w, be, "tensor.q4_k.wide", 0, 4, 0, 768, 0,
                                                 SL_WEIGHTS_AS_STORED, NULL, NULL, &err)
                             : NULL;
    CHECKF(q && q->dtype == SL_Q8_0 && q->shape[0] == 4 && q->shape[1] == 768 &&
               sl_weights_requantized(w, "tensor.q4_k.wide"),
           "tensor.q4_k.wide as stored: a [4, 768] Q8_0 matrix (%s)", q ? "" : err.msg);
    if (q && q->dtype == SL_Q8_0 && want && n == 4 * 768) {
        uint8_t *raw = malloc(sl_tensor_bytes(q));
        sl_copy_d2h(raw, q, sl_tensor_bytes(q));
        int bad = 0;
        for (int64_t b = 0; b < 4 * 768 / 32; b++) {
            const uint8_t *blk = raw + b * SL_Q8_0_BYTES;
            const float d = sl_q_half(blk);
            float amax = 0.0f;
            for (int j = 0; j < 32; j++)
                amax = fmaxf(amax, fabsf(want[b * 32 + j]));
            const float slack = 127.0f * fabsf(amax / 127.0f - d);
            for (int j = 0; j < 32; j++)
                bad += !(fabsf((float)(int8_t)blk[2 + j] * d - want[b * 32 + j]) <=
                         0.5001f * d + slack + 1e-6f * amax);
        }
        CHECKF(bad == 0, "tensor.q4_k.wide requantized: %d values beyond half a Q8_0 step", bad);
        free(raw);
    }
    sl_tensor_free(q);
    if (w && be)
        test_kquants_packed(w, be, f);
    if (be)
        sl_backend_free(be);
    free(want);
    sl_weights_close(w);
    H5Fclose(f);
    sl_gguf_close(g);
}

/* ---- 3. the real SmolLM2 file ------------------------------------------------------------ */

static void test_smollm2(void)
{
    char gpath[4096], h5path[4300];
    if (sl_test_model_path("smollm2", "the SmolLM2 GGUF", gpath, sizeof gpath) != 0) {
        sl_test_failed++;
        return;
    }
    snprintf(h5path, sizeof h5path, "%s/tests/reference/goldens/smollm2_gguf_check.h5", src_dir);
    hid_t f = H5Fopen(h5path, H5F_ACC_RDONLY, H5P_DEFAULT);
    CHECKF(f >= 0, "cannot open %s", h5path);
    if (f < 0)
        return;
    sl_error_t err;
    sl_gguf_t *g = sl_gguf_open(gpath, &err);
    CHECKF(g, "%s", err.msg);
    if (!g) {
        H5Fclose(f);
        return;
    }

    hsize_t d[2] = {0, 0};
    int32_t *types = sl_test_h5_read(f, "type", H5T_NATIVE_INT32, 4, NULL, NULL, d);
    int64_t *ne = sl_test_h5_read(f, "ne", H5T_NATIVE_INT64, 8, NULL, NULL, NULL);
    double *sums = sl_test_h5_read(f, "sum", H5T_NATIVE_DOUBLE, 8, NULL, NULL, NULL);
    double *sumsq = sl_test_h5_read(f, "sumsq", H5T_NATIVE_DOUBLE, 8, NULL, NULL, NULL);
    float *first = sl_test_h5_read(f, "first_row", H5T_NATIVE_FLOAT, 4, NULL, NULL, NULL);
    float *last = sl_test_h5_read(f, "last_row", H5T_NATIVE_FLOAT, 4, NULL, NULL, NULL);
    hsize_t n = d[0];
    int n_names = 0;
    char **names = sl_test_h5_strings(f, "name", &n_names);
    CHECK(names && n_names == (int)n && types && ne && sums && sumsq && first && last);
    CHECKF((int)n == sl_gguf_tensor_count(g), "%d tensors in the file, %d in the goldens",
           sl_gguf_tensor_count(g), (int)n);

    double max_rel_sum = 0, max_rel_sq = 0;
    int bad_rows = 0, bad_meta = 0;
    float *buf = NULL;
    size_t cap = 0;
    for (int i = 0; names && types && i < n_names && i < (int)n && i < sl_gguf_tensor_count(g);
         i++) {
        const sl_gguf_tensor_t *t = sl_gguf_tensor_at(g, i);
        if (strcmp(t->name, names[i]) != 0 || t->type != types[i] ||
            memcmp(t->ne, ne + 4 * i, sizeof t->ne) != 0 || !t->supported) {
            if (bad_meta++ < 5)
                fprintf(stderr, "  tensor %d: '%s' %s, gguf-py '%s' type %d\n", i, t->name,
                        sl_ggml_type_name(t->type), names[i], types[i]);
            continue;
        }
        CHECK(sl_gguf_tensor_find(g, names[i]) == t);
        /* in chunks of rows, so the 28M-value embedding needs no 113 MB buffer */
        int64_t ne0 = t->ne[0], rows = sl_gguf_rows(t), chunk = 1 + (1 << 20) / ne0;
        if ((size_t)(chunk * ne0) > cap) {
            cap = (size_t)(chunk * ne0);
            free(buf);
            buf = malloc(cap * sizeof *buf);
        }
        double s = 0, s2 = 0;
        for (int64_t r = 0; r < rows; r += chunk) {
            int64_t nr = rows - r < chunk ? rows - r : chunk;
            if (sl_gguf_dequant_rows(t, r, nr, buf, &err) != 0) {
                CHECKF(0, "%s", err.msg);
                break;
            }
            for (int64_t j = 0; j < nr * ne0; j++) {
                double v = buf[j];
                s += v;
                s2 += v * v;
            }
            int k = ne0 < 64 ? (int)ne0 : 64;
            if (r == 0 && memcmp(buf, first + 64 * i, (size_t)k * 4) != 0)
                bad_rows++;
            if (r + nr == rows && memcmp(buf + (nr - 1) * ne0, last + 64 * i, (size_t)k * 4) != 0)
                bad_rows++;
        }
        double rs = fabs(s - sums[i]) / fmax(fabs(sums[i]), 1e-300);
        double rq = fabs(s2 - sumsq[i]) / fmax(fabs(sumsq[i]), 1e-300);
        CHECKF(rs <= 1e-6 && rq <= 1e-6, "%s: sum %.17g (gguf-py %.17g), sumsq %.17g (%.17g)",
               t->name, s, sums[i], s2, sumsq[i]);
        max_rel_sum = fmax(max_rel_sum, rs);
        max_rel_sq = fmax(max_rel_sq, rq);
    }
    CHECKF(bad_meta == 0, "%d tensors differ in name, type or shape", bad_meta);
    CHECKF(bad_rows == 0, "%d first/last rows differ from gguf-py", bad_rows);
    printf("%s: %d tensors; max relative error: sum %.3g, sum of squares %.3g; "
           "first/last rows: %d differ\n",
           gpath, (int)n, max_rel_sum, max_rel_sq, bad_rows);

    /* the metadata the decoder needs */
    int64_t v = 0;
    const char *s;
    size_t len;
    CHECK(sl_gguf_get_str(g, "general.architecture", &s, &len, &err) == 0 &&
          str_is(s, len, "llama"));
    CHECK(sl_gguf_get_int(g, "llama.embedding_length", &v, &err) == 0 && v == 576);
    CHECK(sl_gguf_get_int(g, "llama.block_count", &v, &err) == 0 && v == 30);
    const sl_gguf_kv_t *tok = sl_gguf_find(g, "tokenizer.ggml.tokens");
    CHECK(tok && tok->n == 49152 && sl_gguf_arr_str(tok, 49151, &s, &len) == 0);
    const sl_gguf_kv_t *merges = sl_gguf_find(g, "tokenizer.ggml.merges");
    CHECK(merges && merges->elem == SL_GGUF_STRING && sl_gguf_arr_str(merges, 0, &s, &len) == 0 &&
          memchr(s, ' ', len));

    free(buf);
    sl_test_free_strings(names, n_names);
    free(types);
    free(ne);
    free(sums);
    free(sumsq);
    free(first);
    free(last);
    sl_gguf_close(g);
    H5Fclose(f);
}

/* ---- 4. corrupt files -------------------------------------------------------------------- */

static char bad_path[64];

/* Writes buf as the bad file and opens it: it must fail, naming the file and each of the
 * given substrings (NULL-terminated list). */
static void expect_fail(const char *label, const unsigned char *buf, size_t len, ...)
{
    sl_test_write_file(bad_path, buf, len);
    sl_error_t err;
    memset(&err, 0, sizeof err);
    sl_gguf_t *g = sl_gguf_open(bad_path, &err);
    CHECKF(g == NULL, "%s: opened", label);
    sl_gguf_close(g);
    int ok = strstr(err.msg, bad_path) != NULL;
    va_list ap;
    va_start(ap, len);
    for (const char *w; (w = va_arg(ap, const char *)) != NULL;)
        ok &= strstr(err.msg, w) != NULL;
    va_end(ap);
    CHECKF(ok, "%s: message '%s'", label, err.msg);
    printf("  %-26s %s\n", label, err.msg);
}

/* Reads everything a caller could read from an opened file (valgrind checks the reads). */
static double touch_all(const sl_gguf_t *g)
{
    double acc = 0;
    for (int i = 0; i < sl_gguf_kv_count(g); i++) {
        const sl_gguf_kv_t *kv = sl_gguf_kv_at(g, i);
        for (uint64_t j = 0; j < kv->n && j < 64; j++) {
            const char *s;
            size_t len;
            if (sl_gguf_arr_str(kv, j, &s, &len) == 0)
                for (size_t c = 0; c < len; c++)
                    acc += (unsigned char)s[c];
            acc += (double)sl_gguf_arr_int(kv, j);
        }
    }
    for (int i = 0; i < sl_gguf_tensor_count(g); i++) {
        const sl_gguf_tensor_t *t = sl_gguf_tensor_at(g, i);
        if (!t->supported || t->ne[0] * sl_gguf_rows(t) > 4096)
            continue;
        float out[4096];
        sl_error_t err;
        if (sl_gguf_dequant_rows(t, 0, sl_gguf_rows(t), out, &err) == 0)
            for (int64_t j = 0; j < t->ne[0] * sl_gguf_rows(t); j++)
                acc += out[j] == out[j] ? 1 : 0;
    }
    return acc;
}

/* The position of a tensor's info fields: name length, then ndim, dims, type, offset. */
static size_t tensor_info(const unsigned char *buf, size_t len, const char *name, size_t *type_at,
                          size_t *offset_at)
{
    size_t at = find_str(buf, len, name);
    size_t p = at + 8 + strlen(name);
    uint32_t ndim = buf[p];
    *type_at = p + 4 + 8 * ndim;
    *offset_at = *type_at + 4;
    return p + 4; /* ne[0] */
}

/* Appends to a growing byte buffer (for hand-made files). */
typedef struct {
    unsigned char b[4096];
    size_t n;
} bytes_t;

static void add_u32(bytes_t *o, uint32_t v)
{
    put_u32(o->b + o->n, v);
    o->n += 4;
}

static void add_u64(bytes_t *o, uint64_t v)
{
    put_u64(o->b + o->n, v);
    o->n += 8;
}

static void add_str(bytes_t *o, const char *s)
{
    add_u64(o, strlen(s));
    memcpy(o->b + o->n, s, strlen(s));
    o->n += strlen(s);
}

static void test_corrupt(void)
{
    size_t len = 0;
    char *text = NULL;
    sl_error_t rerr = {{0}};
    CHECKF(sl_read_file(mixed_path, 1u << 20, &text, &len, &rerr) == 0 && len > 1000, "%s",
           rerr.msg);
    unsigned char *orig = (unsigned char *)text;
    if (!orig)
        return;
    snprintf(bad_path, sizeof bad_path, "/tmp/sl_test_gguf_%d.gguf", (int)getpid());
    unsigned char *b = malloc(len);
    sl_error_t err;

    /* Every truncation: the file stays valid only once the last tensor's bytes are in (the
     * writer pads after it). */
    sl_gguf_t *g0 = sl_gguf_open(mixed_path, &err);
    size_t min_len = 0;
    for (int i = 0; g0 && i < sl_gguf_tensor_count(g0); i++) {
        const sl_gguf_tensor_t *t = sl_gguf_tensor_at(g0, i);
        size_t end = (size_t)(t->data - sl_gguf_tensor_at(g0, 0)->data) + t->nbytes;
        if (end > min_len)
            min_len = end;
    }
    /* the last tensor info ends the header; data starts at the next multiple of 64 */
    size_t type_at, off_at;
    tensor_info(orig, len, "tensor.q5_0", &type_at, &off_at);
    size_t data_start = (off_at + 8 + 63) / 64 * 64;
    min_len += data_start;
    sl_gguf_close(g0);
    int trunc_fail = 0, trunc_named = 0, trunc_ok = 0;
    char first_msg[1024] = "", data_msg[1024] = "";
    for (size_t cut = 0; cut < len; cut++) {
        sl_test_write_file(bad_path, orig, cut);
        sl_gguf_t *g = sl_gguf_open(bad_path, &err);
        if (g) {
            trunc_ok++;
            CHECKF(cut >= min_len, "truncated at %zu of %zu (data ends at %zu): opened", cut, len,
                   min_len);
            touch_all(g);
            sl_gguf_close(g);
            continue;
        }
        trunc_fail++;
        trunc_named += strstr(err.msg, bad_path) != NULL;
        if (cut == 100)
            snprintf(first_msg, sizeof first_msg, "%s", err.msg);
        if (cut == min_len - 1)
            snprintf(data_msg, sizeof data_msg, "%s", err.msg);
    }
    CHECKF(trunc_fail == (int)min_len && trunc_named == trunc_fail,
           "truncations: %d failed (want %zu), %d named the file", trunc_fail, min_len,
           trunc_named);
    CHECKF(strstr(data_msg, "tensor.q5_0"), "truncated data: '%s'", data_msg);
    printf("truncation at each of %zu lengths: %d refused (all naming the file), %d valid "
           "(only trailing padding cut)\n  at 100: %s\n  at %zu: %s\n",
           len, trunc_fail, trunc_ok, first_msg, min_len - 1, data_msg);

    printf("corrupt copies:\n");
#define RESET() memcpy(b, orig, len)
    RESET();
    b[0] ^= 0xff;
    expect_fail("bad magic", b, len, "magic", NULL);
    RESET();
    put_u32(b + 4, 4);
    expect_fail("version 4", b, len, "version 4", NULL);
    RESET();
    put_u32(b + 4, 1);
    expect_fail("version 1", b, len, "version 1", NULL);
    RESET();
    put_u32(b + 4, 0x03000000u);
    expect_fail("big-endian", b, len, "big-endian", NULL);
    RESET();
    put_u64(b + 8, 1ULL << 40);
    expect_fail("absurd tensor count", b, len, "tensor count", NULL);
    RESET();
    put_u64(b + 16, UINT64_MAX);
    expect_fail("absurd metadata count", b, len, "metadata count", NULL);
    RESET();
    put_u64(b + 16, 40); /* 5 more entries than there are: tensor infos read as metadata */
    expect_fail("metadata count too high", b, len, NULL);

    size_t k = find_str(orig, len, "test.f64");
    RESET();
    put_u32(b + k + 8 + 8, 13);
    expect_fail("unknown value type", b, len, "test.f64", "unknown value type 13", NULL);
    k = find_str(orig, len, "test.i32s");
    RESET();
    put_u32(b + k + 8 + 9 + 4, 99);
    expect_fail("unknown element type", b, len, "test.i32s", "99", NULL);
    RESET();
    put_u64(b + k + 8 + 9 + 8, 1ULL << 61);
    expect_fail("huge array length", b, len, "test.i32s", NULL);
    k = find_str(orig, len, "test.strs");
    RESET();
    put_u64(b + k + 8 + 9 + 8, 1ULL << 40);
    expect_fail("huge string array", b, len, "test.strs", NULL);
    RESET();
    put_u64(b + k + 8 + 9 + 16 + 13, 1ULL << 62); /* element 1 (""), after "alpha" */
    expect_fail("huge string in array", b, len, "test.strs", "element 1", NULL);
    k = find_str(orig, len, "test.utf8");
    RESET();
    put_u64(b + k + 8 + 9 + 4, 1ULL << 62);
    expect_fail("huge string length", b, len, "test.utf8", "string value length", NULL);
    RESET();
    put_u64(b + k + 8 + 9 + 4, len); /* just past the end */
    expect_fail("string past the end", b, len, "test.utf8", NULL);
    k = find_str(orig, len, "test.u16");
    RESET();
    put_u64(b + k, 1ULL << 50);
    expect_fail("huge key length", b, len, "metadata entry 4", "key length", NULL);
    k = find_str(orig, len, "test.i8");
    RESET();
    memcpy(b + k + 8, "test.u8", 7);
    expect_fail("duplicate key", b, len, "test.u8", "twice", NULL);
    k = find_str(orig, len, "general.alignment");
    RESET();
    put_u32(b + k + 8 + 17 + 4, 48);
    expect_fail("alignment 48", b, len, "general.alignment", "power of two", NULL);
    RESET();
    put_u32(b + k + 8 + 17, SL_GGUF_I32);
    expect_fail("alignment not u32", b, len, "general.alignment", "i32", NULL);

    size_t ne_at = tensor_info(orig, len, "tensor.q4_1.3d", &type_at, &off_at);
    uint64_t off = get_u64(orig + off_at);
    RESET();
    put_u64(b + off_at, 1ULL << 40);
    expect_fail("offset past the end", b, len, "tensor.q4_1.3d", "offset", NULL);
    RESET();
    put_u64(b + off_at, (len - data_start) / 64 * 64); /* starts in, ends past the end */
    expect_fail("data past the end", b, len, "tensor.q4_1.3d", "beyond the end", NULL);
    RESET();
    put_u64(b + off_at, off + 32);
    expect_fail("misaligned offset", b, len, "tensor.q4_1.3d", "alignment 64", NULL);
    RESET();
    put_u64(b + ne_at, 48);
    expect_fail("ne[0] not whole blocks", b, len, "tensor.q4_1.3d", "block size 32", NULL);
    RESET();
    put_u64(b + ne_at, (uint64_t)-32);
    expect_fail("negative dimension", b, len, "tensor.q4_1.3d", "negative", NULL);
    RESET();
    put_u64(b + ne_at + 8, 1ULL << 40);
    put_u64(b + ne_at + 16, 1ULL << 40);
    expect_fail("element count overflow", b, len, "tensor.q4_1.3d", "2^63", NULL);
    RESET();
    b[ne_at - 4] = 9;
    expect_fail("9 dimensions", b, len, "tensor.q4_1.3d", "9 dimensions", NULL);
    ne_at = tensor_info(orig, len, "tensor.f16", &type_at, &off_at);
    RESET();
    memcpy(b + ne_at - 4 - 10, "tensor.f32", 10);
    expect_fail("duplicate tensor name", b, len, "tensor.f32", "twice", NULL);
    RESET();
    put_u64(b + ne_at - 4 - 10 - 8, 1ULL << 33);
    expect_fail("huge tensor name", b, len, "tensor info 1", NULL);

    /* An unknown tensor type, and a known one shardline does not dequantise (IQ4_NL: 18-byte
     * blocks of 32, so the Q5_0 tensor's 44 bytes hold its two rows), open; the tensor cannot be
     * dequantised, by name and type. */
    static const struct {
        const char *tensor, *type_name, *label;
        uint32_t type;
    } undecoded[2] = {{"tensor.vec", "type 200", "unknown tensor type 200", 200},
                      {"tensor.q5_0", "IQ4_NL", "an IQ4_NL tensor", 20}};
    for (int i = 0; i < 2; i++) {
        tensor_info(orig, len, undecoded[i].tensor, &type_at, &off_at);
        RESET();
        put_u32(b + type_at, undecoded[i].type);
        sl_test_write_file(bad_path, b, len);
        sl_gguf_t *g = sl_gguf_open(bad_path, &err);
        CHECKF(g != NULL, "%s: %s", undecoded[i].label, err.msg);
        if (!g)
            continue;
        const sl_gguf_tensor_t *t = sl_gguf_tensor_find(g, undecoded[i].tensor);
        float out[64];
        CHECK(t && t->type == (int)undecoded[i].type && !t->supported);
        int rc = t ? sl_gguf_dequant_rows(t, 0, 1, out, &err) : 0;
        CHECKF(rc == -1 && strstr(err.msg, undecoded[i].tensor) &&
                   strstr(err.msg, undecoded[i].type_name),
               "'%s'", err.msg);
        printf("  %-26s opens; dequantising: %s\n", undecoded[i].label, err.msg);
        sl_gguf_close(g);
    }

    /* Hand-made files: arrays nested 100 deep are refused; 3 deep, version 2 and no tensors
     * at all (no padding after the header) are fine. */
    bytes_t o = {.n = 0};
    memcpy(o.b, "GGUF", 4);
    o.n = 4;
    add_u32(&o, 3);
    add_u64(&o, 0);
    add_u64(&o, 1);
    add_str(&o, "deep");
    add_u32(&o, SL_GGUF_ARRAY);
    for (int i = 0; i < 100; i++) {
        add_u32(&o, SL_GGUF_ARRAY);
        add_u64(&o, 1);
    }
    add_u32(&o, SL_GGUF_U8);
    add_u64(&o, 1);
    o.b[o.n++] = 7;
    expect_fail("arrays nested 100 deep", o.b, o.n, "deep", "nested", NULL);

    o.n = 4;
    add_u32(&o, 2);
    add_u64(&o, 0);
    add_u64(&o, 2);
    add_str(&o, "shallow");
    add_u32(&o, SL_GGUF_ARRAY);
    add_u32(&o, SL_GGUF_ARRAY);
    add_u64(&o, 1);
    add_u32(&o, SL_GGUF_ARRAY);
    add_u64(&o, 1);
    add_u32(&o, SL_GGUF_STRING);
    add_u64(&o, 2);
    add_str(&o, "x");
    add_str(&o, "yz");
    add_str(&o, "after");
    add_u32(&o, SL_GGUF_STRING);
    add_str(&o, "ok");
    sl_test_write_file(bad_path, o.b, o.n);
    sl_gguf_t *g = sl_gguf_open(bad_path, &err);
    CHECKF(g != NULL, "nested 3 deep, version 2: %s", err.msg);
    if (g) {
        const char *s;
        size_t sl;
        CHECK(sl_gguf_version(g) == 2 && sl_gguf_tensor_count(g) == 0);
        CHECK(sl_gguf_get_str(g, "after", &s, &sl, &err) == 0 && str_is(s, sl, "ok"));
        sl_gguf_close(g);
    }

    /* Random damage to the header region: whatever opens is read in full. */
    unsigned seed = 12345;
    int opened = 0, refused = 0, unnamed = 0;
    for (int it = 0; it < 3000; it++) {
        RESET();
        int flips = 1 + it % 4;
        for (int j = 0; j < flips; j++) {
            seed = seed * 1103515245u + 12345u;
            size_t at = (seed >> 8) % data_start;
            seed = seed * 1103515245u + 12345u;
            b[at] = it % 3 == 0 ? (unsigned char)(seed >> 16)
                                : b[at] ^ (unsigned char)(1u << ((seed >> 16) % 8));
        }
        sl_test_write_file(bad_path, b, len);
        g = sl_gguf_open(bad_path, &err);
        if (g) {
            opened++;
            touch_all(g);
            sl_gguf_close(g);
        } else {
            refused++;
            unnamed += strstr(err.msg, bad_path) == NULL;
        }
    }
    CHECKF(unnamed == 0, "%d refusals did not name the file", unnamed);
    printf("random damage: 3000 copies, %d refused (all naming the file), %d opened and read\n",
           refused, opened);

    unlink(bad_path);
    free(b);
    free(orig);
}

static void test_inspect(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    sl_error_t err;
    int rc = sl_inspect_gguf(mixed_path, out, &err);
    fclose(out);
    CHECKF(rc == 0, "%s", err.msg);
    static const char *const want[] = {
        "format       GGUF version 3, 35 metadata keys, 11 tensors\n",
        "architecture testarch\n",
        "  testarch.block_count                     2\n",
        "  testarch.attention.layer_norm_rms_epsilon 1e-05\n",
        "tokenizer    gpt2, 5 tokens\n",
        "tensors      11 (2 F32, 1 F16, 1 BF16, 2 Q8_0, 2 Q4_0, 2 Q4_1, 1 Q5_0), 1600 parameters\n",
        "first        tensor.f32  F32  ne [64, 3]\n",
        "last         tensor.q5_0  Q5_0  ne [32, 2]\n",
    };
    for (size_t i = 0; text && i < sizeof want / sizeof want[0]; i++)
        CHECKF(strstr(text, want[i]), "inspect output lacks '%s':\n%s", want[i], text);
    CHECK(sl_inspect_is_gguf(mixed_path) && !sl_inspect_is_gguf("/nonexistent.gguf"));
    free(text);
}

int main(void)
{
    snprintf(src_dir, sizeof src_dir, "%s", sl_test_source_dir());
    snprintf(mixed_path, sizeof mixed_path, "%s/tests/reference/goldens/mixed_types.gguf", src_dir);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);

    sl_error_t err;
    sl_gguf_t *g = sl_gguf_open(mixed_path, &err);
    CHECKF(g != NULL, "%s", err.msg);
    if (g) {
        test_metadata(g);
        test_mixed_tensors(g);
        sl_gguf_close(g);
    }
    sl_gguf_close(NULL);
    CHECK(sl_gguf_open("/nonexistent/x.gguf", &err) == NULL && strstr(err.msg, "/nonexistent"));
    test_kquants();
    test_inspect();
    test_corrupt();
    test_smollm2();
    return sl_test_finish("test_gguf");
}
