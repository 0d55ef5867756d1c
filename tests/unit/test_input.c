/*
 * test_input.c — the input shards (jobs/input.{h,c}) on HDF5 files this test writes itself
 * through the HDF5 C API: sl_inputs_scan over globs (sorted, duplicates removed, first_row and
 * total_rows, file size and mtime), its refusals (a glob matching nothing, a missing file, a
 * missing dataset, wrong rank, non-numeric data, feature counts that differ between shards,
 * text mixed with token ids, token ids without lengths or attention_mask, a file that is not
 * HDF5), each message naming the file and dataset; and sl_reader_read / sl_reader_read_text /
 * sl_reader_read_tokens of row ranges across shards, compared with the values written.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jobs/h5util.h"
#include "jobs/input.h"
#include "sl_test.h"

static char g_dir[4096];

static void path_of(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", g_dir, name);
}

/* Creates (truncating) g_dir/name and returns the open file. */
static hid_t create(const char *name)
{
    char p[4200];
    path_of(p, sizeof p, name);
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        fprintf(stderr, "cannot create %s\n", p);
        exit(1);
    }
    return f;
}

/* Writes dataset `name` of file type ftype from memory (mtype) with the given shape. */
static void put(hid_t f, const char *name, hid_t ftype, hid_t mtype, int nd, hsize_t d0, hsize_t d1,
                const void *data)
{
    hsize_t dims[3] = {d0, d1, 2};
    hid_t sp = H5Screate_simple(nd, dims, NULL);
    hid_t d = H5Dcreate2(f, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (d < 0 || (data && H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)) {
        fprintf(stderr, "cannot write dataset %s\n", name);
        exit(1);
    }
    H5Dclose(d);
    H5Sclose(sp);
}

/* The value of feature j of global row g in the feature shards: distinct, exact in f32. */
static double feat(int64_t g, int64_t j) { return (double)g * 10.0 + (double)j + 0.25; }

/* A feature shard of `rows` x `cols` rows starting at global row g0, stored as `ftype`. */
static void feature_shard(const char *name, int64_t rows, int64_t cols, int64_t g0, hid_t ftype)
{
    double *v = malloc((size_t)(rows * cols + 1) * sizeof *v);
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            v[i * cols + j] = feat(g0 + i, j);
    hid_t f = create(name);
    put(f, "features", ftype, H5T_NATIVE_DOUBLE, 2, (hsize_t)rows, (hsize_t)cols, v);
    H5Fclose(f);
    free(v);
}

static int contains(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

/* Scans one glob; returns rc and leaves the message in err. */
static int scan1(sl_inputs_t *in, const char *glob, const char *dataset, int want_tokens,
                 sl_error_t *err)
{
    char pat[4200];
    path_of(pat, sizeof pat, glob);
    char *globs[1] = {pat};
    err->msg[0] = '\0';
    return sl_inputs_scan(in, globs, 1, dataset, want_tokens, err);
}

/* Expects a refusal whose message holds every one of subs (NULL-terminated). */
static void expect_refusal(const char *glob, const char *dataset, int want_tokens,
                           const char *const *subs)
{
    sl_inputs_t in;
    sl_error_t err;
    int rc = scan1(&in, glob, dataset, want_tokens, &err);
    CHECKF(rc != 0, "scan of %s (dataset %s) accepted", glob, dataset);
    for (int i = 0; subs[i]; i++)
        CHECKF(contains(err.msg, subs[i]), "message \"%s\" lacks \"%s\"", err.msg, subs[i]);
    sl_inputs_free(&in);
}

/* ---- features -------------------------------------------------------------------------------- */

static void test_scan_features(void)
{
    /* written out of order; f_b holds integers, f_a float64, f_c float32 */
    feature_shard("f_c.h5", 2, 3, 9, H5T_IEEE_F32LE);
    feature_shard("f_a.h5", 4, 3, 0, H5T_IEEE_F64LE);
    {
        int32_t v[5 * 3];
        for (int i = 0; i < 5; i++)
            for (int j = 0; j < 3; j++)
                v[i * 3 + j] = (int32_t)((4 + i) * 100 + j); /* integers: converted to f32 */
        hid_t f = create("f_b.h5");
        put(f, "features", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, 5, 3, v);
        H5Fclose(f);
    }
    /* f_c.h5 matched twice (by both globs), listed once, in path order */
    char g1[4200], g2[4200], g3[4200];
    path_of(g1, sizeof g1, "f_[cb].h5");
    path_of(g2, sizeof g2, "f_*.h5");
    path_of(g3, sizeof g3, "f_c.h5");
    char *globs[3] = {g1, g2, g3};
    sl_inputs_t in;
    sl_error_t err = {{0}};
    int rc = sl_inputs_scan(&in, globs, 3, "features", 0, &err);
    CHECKF(rc == 0, "%s", err.msg);
    if (rc != 0)
        return;
    CHECK(in.n == 3);
    CHECK(in.kind == SL_INPUT_FEATURES);
    CHECK(in.cols == 3);
    CHECK(in.total_rows == 11);
    CHECK(!strcmp(in.dataset, "features"));
    const char *names[3] = {"f_a.h5", "f_b.h5", "f_c.h5"};
    const int64_t rows[3] = {4, 5, 2}, first[3] = {0, 4, 9};
    for (int i = 0; i < in.n && i < 3; i++) {
        const sl_shard_t *s = &in.shards[i];
        const char *slash = strrchr(s->path, '/');
        CHECKF(slash && !strcmp(slash + 1, names[i]), "shard %d is %s", i, s->path);
        CHECKF(s->path[0] == '/', "shard path %s is not absolute", s->path);
        CHECK(s->rows == rows[i]);
        CHECKF(s->first_row == first[i], "shard %d first_row %lld", i, (long long)s->first_row);
        struct stat st;
        CHECK(stat(s->path, &st) == 0 && s->size == (int64_t)st.st_size);
        CHECK(s->mtime_ns == (int64_t)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec);
    }

    /* rows across shards, in an order that makes the reader switch files and come back */
    sl_reader_t r;
    sl_reader_init(&r);
    struct {
        int shard;
        int64_t row0, n;
    } reads[] = {{0, 1, 3}, {1, 0, 5}, {0, 0, 1}, {2, 1, 1}, {1, 3, 2}, {2, 0, 2}};
    for (size_t k = 0; k < sizeof reads / sizeof *reads; k++) {
        float buf[5 * 3 + 1];
        buf[reads[k].n * 3] = -7.0f; /* a guard after the rows asked for */
        rc = sl_reader_read(&r, &in, reads[k].shard, reads[k].row0, reads[k].n, buf, &err);
        CHECKF(rc == 0, "read %zu: %s", k, err.msg);
        int64_t g0 = in.shards[reads[k].shard].first_row + reads[k].row0;
        int bad = 0;
        for (int64_t i = 0; i < reads[k].n; i++)
            for (int64_t j = 0; j < 3; j++) {
                double want = reads[k].shard == 1 ? (double)((g0 + i) * 100 + j) : feat(g0 + i, j);
                bad += buf[i * 3 + j] != (float)want;
            }
        CHECKF(bad == 0, "read %zu (shard %d rows %lld+%lld): %d wrong values", k, reads[k].shard,
               (long long)reads[k].row0, (long long)reads[k].n, bad);
        CHECKF(buf[reads[k].n * 3] == -7.0f, "read %zu wrote past its rows", k);
    }
    /* rows past the end: refused, naming the file, the dataset and the rows */
    float big[8 * 3];
    rc = sl_reader_read(&r, &in, 2, 1, 4, big, &err);
    CHECK(rc != 0);
    CHECKF(contains(err.msg, in.shards[2].path) && contains(err.msg, "'features'") &&
               contains(err.msg, "rows 1..5"),
           "%s", err.msg);
    sl_reader_close(&r);

    /* a shard truncated after the scan: the read fails, naming the file */
    char p[4200];
    path_of(p, sizeof p, "f_c.h5");
    if (truncate(p, 100) != 0)
        perror("truncate");
    sl_reader_init(&r);
    float one[3];
    rc = sl_reader_read(&r, &in, 2, 0, 1, one, &err);
    CHECK(rc != 0);
    CHECKF(contains(err.msg, in.shards[2].path), "%s", err.msg);
    sl_reader_close(&r);
    sl_inputs_free(&in);
    CHECK(in.n == 0 && in.shards == NULL);
}

static void test_scan_refusals(void)
{
    char p[4200];
    /* a glob matching nothing; a plain name that is not there */
    path_of(p, sizeof p, "nothing_*.h5");
    expect_refusal("nothing_*.h5", "features", 0, (const char *[]){p, "no file matches", NULL});
    path_of(p, sizeof p, "absent.h5");
    expect_refusal("absent.h5", "features", 0, (const char *[]){p, "no such file", NULL});

    /* the dataset is not there: the message lists what the file holds */
    {
        float v[2] = {1, 2};
        hid_t f = create("other.h5");
        put(f, "x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, 1, 2, v);
        hid_t g = H5Gcreate2(f, "grp", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        put(g, "y", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, 1, 2, v);
        H5Gclose(g);
        H5Fclose(f);
    }
    path_of(p, sizeof p, "other.h5");
    expect_refusal("other.h5", "features", 0,
                   (const char *[]){p, "no dataset 'features'", "grp/y", "x", NULL});

    /* wrong rank: 1-D and 3-D */
    {
        float v[12] = {0};
        hid_t f = create("rank1.h5");
        put(f, "features", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, 4, 0, v);
        H5Fclose(f);
        f = create("rank3.h5");
        put(f, "features", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 3, 3, 2, v);
        H5Fclose(f);
    }
    path_of(p, sizeof p, "rank1.h5");
    expect_refusal("rank1.h5", "features", 0,
                   (const char *[]){p, "'features'", "1 dimensions", NULL});
    path_of(p, sizeof p, "rank3.h5");
    expect_refusal("rank3.h5", "features", 0,
                   (const char *[]){p, "'features'", "3 dimensions", NULL});

    /* strings where numbers are expected */
    {
        hid_t st = H5Tcopy(H5T_C_S1);
        H5Tset_size(st, 4);
        char v[2 * 2 * 4] = "abcdefghijklmno";
        hid_t f = create("strings2d.h5");
        put(f, "features", st, st, 2, 2, 2, v);
        H5Fclose(f);
        H5Tclose(st);
    }
    path_of(p, sizeof p, "strings2d.h5");
    expect_refusal("strings2d.h5", "features", 0,
                   (const char *[]){p, "'features'", "not numeric", NULL});
    /* ... and as tokens or text: neither */
    expect_refusal("strings2d.h5", "features", 1,
                   (const char *[]){p, "'features'", "neither text", NULL});

    /* feature counts that differ: the later file is named, with both counts */
    feature_shard("w_1.h5", 2, 3, 0, H5T_IEEE_F32LE);
    feature_shard("w_2.h5", 2, 4, 0, H5T_IEEE_F32LE);
    char p1[4200];
    path_of(p1, sizeof p1, "w_1.h5");
    path_of(p, sizeof p, "w_2.h5");
    expect_refusal("w_*.h5", "features", 0, (const char *[]){p, p1, "4 features", "has 3", NULL});

    /* not an HDF5 file */
    path_of(p, sizeof p, "junk.h5");
    sl_test_write_file(p, "this is not hdf5\n", 17);
    expect_refusal("junk.h5", "features", 0, (const char *[]){p, NULL});
}

/* ---- text ------------------------------------------------------------------------------------ */

static void test_text(void)
{
    /* t_1: variable-length UTF-8, with a NULL string; t_2: fixed length 6, NUL-padded, one row
     * filling all 6 bytes (no terminator in the file) */
    const char *v1[4] = {"hello", "h\xc3\xa9llo w\xc3\xb6rld", NULL, ""};
    {
        hid_t st = sl_h5_vlen_str_type();
        hid_t f = create("t_1.h5");
        put(f, "text", st, st, 1, 4, 0, v1);
        H5Fclose(f);
        H5Tclose(st);
    }
    const char fixed[3][6] = {{'a', 'b', 0, 0, 0, 0}, {'s', 'i', 'x', 'x', 'x', 'x'}, {0}};
    {
        hid_t st = H5Tcopy(H5T_C_S1);
        H5Tset_size(st, 6);
        H5Tset_strpad(st, H5T_STR_NULLPAD);
        hid_t f = create("t_2.h5");
        put(f, "text", st, st, 1, 3, 0, fixed);
        H5Fclose(f);
        H5Tclose(st);
    }
    sl_inputs_t in;
    sl_error_t err;
    int rc = scan1(&in, "t_*.h5", "text", 1, &err);
    CHECKF(rc == 0, "%s", err.msg);
    if (rc != 0)
        return;
    CHECK(in.kind == SL_INPUT_TEXT);
    CHECK(in.cols == 0);
    CHECK(in.n == 2 && in.total_rows == 7);
    CHECK(in.n == 2 && in.shards[1].first_row == 4);

    sl_reader_t r;
    sl_reader_init(&r);
    char *t[4] = {0};
    rc = sl_reader_read_text(&r, &in, 0, 1, 3, t, &err);
    CHECKF(rc == 0, "%s", err.msg);
    CHECK(t[0] && !strcmp(t[0], v1[1]));
    CHECK(t[1] == NULL); /* a NULL vlen string stays NULL */
    CHECK(t[2] && !strcmp(t[2], ""));
    for (int i = 0; i < 3; i++)
        free(t[i]);
    memset(t, 0, sizeof t);
    rc = sl_reader_read_text(&r, &in, 1, 0, 3, t, &err);
    CHECKF(rc == 0, "%s", err.msg);
    CHECK(t[0] && !strcmp(t[0], "ab"));
    CHECK(t[1] && !strcmp(t[1], "sixxxx"));
    CHECK(t[2] && !strcmp(t[2], ""));
    for (int i = 0; i < 3; i++)
        free(t[i]);
    memset(t, 0, sizeof t);
    rc = sl_reader_read_text(&r, &in, 0, 0, 1, t, &err); /* back to the first file */
    CHECK(rc == 0 && t[0] && !strcmp(t[0], "hello"));
    free(t[0]);
    rc = sl_reader_read_text(&r, &in, 1, 2, 2, t, &err);
    CHECK(rc != 0);
    CHECKF(contains(err.msg, in.shards[1].path) && contains(err.msg, "'text'") &&
               contains(err.msg, "rows 2..4"),
           "%s", err.msg);
    sl_reader_close(&r);
    sl_inputs_free(&in);
}

/* ---- token ids ------------------------------------------------------------------------------- */

#define L 5
static int32_t tok(int64_t g, int j) { return (int32_t)(1000 + g * 10 + j); }

/* A token shard of `rows` rows from global row g0: ids, and `lengths` (with_lengths) or an
 * attention_mask whose row i has i % L + 1 leading ones, and token_type_ids if asked. */
static void token_shard(const char *name, int64_t rows, int64_t g0, int with_lengths,
                        int with_types)
{
    int32_t ids[8 * L], mask[8 * L], types[8 * L], len[8];
    for (int64_t i = 0; i < rows; i++) {
        len[i] = (int32_t)((g0 + i) % L + 1);
        for (int j = 0; j < L; j++) {
            ids[i * L + j] = tok(g0 + i, j);
            mask[i * L + j] = j < len[i];
            types[i * L + j] = (int32_t)((i + j) % 2);
        }
    }
    hid_t f = create(name);
    put(f, "input_ids", H5T_STD_I64LE, H5T_NATIVE_INT32, 2, (hsize_t)rows, L, ids);
    if (with_lengths)
        put(f, "lengths", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, (hsize_t)rows, 0, len);
    else
        put(f, "attention_mask", H5T_STD_U8LE, H5T_NATIVE_INT32, 2, (hsize_t)rows, L, mask);
    if (with_types)
        put(f, "token_type_ids", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, (hsize_t)rows, L, types);
    H5Fclose(f);
}

static void test_tokens(void)
{
    token_shard("k_1.h5", 3, 0, 1, 1);
    token_shard("k_2.h5", 4, 3, 0, 0);
    sl_inputs_t in;
    sl_error_t err;
    int rc = scan1(&in, "k_*.h5", "input_ids", 1, &err);
    CHECKF(rc == 0, "%s", err.msg);
    if (rc != 0)
        return;
    CHECK(in.kind == SL_INPUT_TOKENS);
    CHECK(in.cols == L);
    CHECK(in.n == 2 && in.total_rows == 7 && in.shards[1].first_row == 3);

    sl_reader_t r;
    sl_reader_init(&r);
    int32_t ids[4 * L], len[4], types[4 * L];
    /* k_1: lengths from `lengths`, types from token_type_ids */
    rc = sl_reader_read_tokens(&r, &in, 0, 1, 2, ids, len, types, &err);
    CHECKF(rc == 0, "%s", err.msg);
    int bad = 0;
    for (int i = 0; i < 2; i++) {
        bad += len[i] != (i + 1) % L + 1;
        for (int j = 0; j < L; j++)
            bad += ids[i * L + j] != tok(1 + i, j) || types[i * L + j] != (1 + i + j) % 2;
    }
    CHECKF(bad == 0, "k_1 rows 1..3: %d wrong values", bad);
    /* k_2: lengths counted from attention_mask, types zero */
    for (int i = 0; i < 4 * L; i++)
        types[i] = 77;
    rc = sl_reader_read_tokens(&r, &in, 1, 0, 4, ids, len, types, &err);
    CHECKF(rc == 0, "%s", err.msg);
    bad = 0;
    for (int i = 0; i < 4; i++) {
        bad += len[i] != (3 + i) % L + 1;
        for (int j = 0; j < L; j++)
            bad += ids[i * L + j] != tok(3 + i, j) || types[i * L + j] != 0;
    }
    CHECKF(bad == 0, "k_2 rows 0..4: %d wrong values", bad);
    rc = sl_reader_read_tokens(&r, &in, 1, 3, 2, ids, len, types, &err);
    CHECK(rc != 0);
    CHECKF(contains(err.msg, in.shards[1].path) && contains(err.msg, "'input_ids'"), "%s", err.msg);
    sl_reader_close(&r);
    sl_inputs_free(&in);

    /* token ids without lengths or attention_mask */
    {
        int32_t ids1[2 * L] = {0};
        hid_t f = create("bare.h5");
        put(f, "input_ids", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, 2, L, ids1);
        H5Fclose(f);
    }
    char p[4200], p2[4200];
    path_of(p, sizeof p, "bare.h5");
    expect_refusal("bare.h5", "input_ids", 1,
                   (const char *[]){p, "'input_ids'", "'lengths'", "'attention_mask'", NULL});

    /* text and token ids mixed: the second file (in path order) is named, with the first */
    {
        const char *v[1] = {"x"};
        hid_t st = sl_h5_vlen_str_type();
        hid_t f = create("m_2.h5");
        put(f, "input_ids", st, st, 1, 1, 0, v);
        H5Fclose(f);
        H5Tclose(st);
    }
    token_shard("m_1.h5", 2, 0, 1, 0);
    path_of(p, sizeof p, "m_1.h5");
    path_of(p2, sizeof p2, "m_2.h5");
    expect_refusal("m_*.h5", "input_ids", 1,
                   (const char *[]){p2, p, "holds text", "holds token ids", NULL});

    /* companions shorter than the ids: the read names the file and the companion */
    {
        int32_t ids2[4 * L] = {0}, l2[2] = {1, 1}, ty[2 * L] = {0};
        hid_t f = create("short_len.h5");
        put(f, "input_ids", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, 4, L, ids2);
        put(f, "lengths", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, 2, 0, l2);
        H5Fclose(f);
        f = create("short_mask.h5");
        put(f, "input_ids", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, 4, L, ids2);
        put(f, "attention_mask", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, 2, L, ty);
        H5Fclose(f);
        f = create("short_types.h5");
        put(f, "input_ids", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, 4, L, ids2);
        put(f, "lengths", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, 4, 0, ids2);
        put(f, "token_type_ids", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, 2, L, ty);
        H5Fclose(f);
    }
    const char *files[3] = {"short_len.h5", "short_mask.h5", "short_types.h5"};
    const char *what[3] = {"'lengths'", "'attention_mask'", "'token_type_ids'"};
    for (int k = 0; k < 3; k++) {
        rc = scan1(&in, files[k], "input_ids", 1, &err);
        CHECKF(rc == 0, "%s", err.msg);
        if (rc != 0) {
            sl_inputs_free(&in);
            continue;
        }
        sl_reader_init(&r);
        rc = sl_reader_read_tokens(&r, &in, 0, 0, 4, ids, len, types, &err);
        CHECKF(rc != 0, "%s: short %s accepted", files[k], what[k]);
        CHECKF(contains(err.msg, in.shards[0].path) && contains(err.msg, what[k]) &&
                   contains(err.msg, "rows 0..4"),
               "%s", err.msg);
        /* rows the companion has are read fine */
        rc = sl_reader_read_tokens(&r, &in, 0, 0, 2, ids, len, types, &err);
        CHECKF(rc == 0, "%s rows 0..2: %s", files[k], err.msg);
        sl_reader_close(&r);
        sl_inputs_free(&in);
    }

    /* companions of the wrong shape: refused, naming the file and the companion, before any
     * row is read into buffers sized for [rows] and [rows, L] */
    {
        int32_t ids3[2 * L] = {0}, wide[2 * (L + 3)] = {0}, flat[2] = {1, 1};
        hid_t f = create("shape_len.h5"); /* lengths [rows, L] */
        put(f, "input_ids", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, 2, L, ids3);
        put(f, "lengths", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, 2, L, ids3);
        H5Fclose(f);
        f = create("shape_mask.h5"); /* attention_mask [rows] */
        put(f, "input_ids", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, 2, L, ids3);
        put(f, "attention_mask", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, 2, 0, flat);
        H5Fclose(f);
        f = create("shape_types.h5"); /* token_type_ids [rows, L + 3] */
        put(f, "input_ids", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, 2, L, ids3);
        put(f, "lengths", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, 2, 0, flat);
        put(f, "token_type_ids", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, 2, L + 3, wide);
        H5Fclose(f);
    }
    const char *sfiles[3] = {"shape_len.h5", "shape_mask.h5", "shape_types.h5"};
    for (int k = 0; k < 3; k++) {
        rc = scan1(&in, sfiles[k], "input_ids", 1, &err);
        CHECKF(rc == 0, "%s", err.msg);
        if (rc != 0) {
            sl_inputs_free(&in);
            continue;
        }
        sl_reader_init(&r);
        rc = sl_reader_read_tokens(&r, &in, 0, 0, 2, ids, len, types, &err);
        CHECKF(rc != 0, "%s: %s of the wrong shape accepted", sfiles[k], what[k]);
        CHECKF(contains(err.msg, in.shards[0].path) && contains(err.msg, what[k]) &&
                   contains(err.msg, "must be"),
               "%s", err.msg);
        sl_reader_close(&r);
        sl_inputs_free(&in);
    }
}

int main(void)
{
    sl_h5_quiet();
    if (sl_test_tmpdir(g_dir, sizeof g_dir, "sl_test_input") != 0)
        return 1;
    test_scan_features();
    test_scan_refusals();
    test_text();
    test_tokens();
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_dir);
    return sl_test_finish("test_input");
}
