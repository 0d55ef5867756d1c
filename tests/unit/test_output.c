/*
 * test_output.c — what a job leaves in its output directory (jobs/output.{h,c}), read back
 * through the HDF5 C API: output widths and ranks; part file names (stable, distinct per shard
 * and row range); a written part file (values of every output dtype, failed rows, the
 * attributes naming source, rows, model, job and version) matching its own meta and no other;
 * the commit by rename (no temporary file left, also when the commit fails); the output
 * directory check; predictions.h5 over several parts (values through the virtual datasets in
 * input order, fill values where a part is missing, /shards, /errors, describe attributes),
 * sl_vds_sources and sl_predictions_consolidate.
 */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common/sl_fs.h"
#include "jobs/h5util.h"
#include "jobs/output.h"
#include "partition/units.h"
#include "sl_test.h"

static char g_dir[4096];

static int contains(const char *s, const char *sub) { return s && strstr(s, sub) != NULL; }

/* ---- reading back (HDF5 C API) --------------------------------------------------------------- */

/* A string attribute (variable or fixed length) into buf; -1 when absent or not a string. */
static int attr_str(hid_t obj, const char *name, char *buf, size_t len)
{
    buf[0] = '\0';
    if (H5Aexists(obj, name) <= 0)
        return -1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    hid_t t = H5Aget_type(a);
    int rc = -1;
    if (H5Tget_class(t) == H5T_STRING) {
        if (H5Tis_variable_str(t) > 0) {
            char *s = NULL;
            if (H5Aread(a, t, &s) >= 0 && s) {
                snprintf(buf, len, "%s", s);
                H5free_memory(s);
                rc = 0;
            }
        } else {
            size_t n = H5Tget_size(t);
            char *s = calloc(n + 1, 1);
            if (H5Aread(a, t, s) >= 0) {
                snprintf(buf, len, "%s", s);
                rc = 0;
            }
            free(s);
        }
    }
    H5Tclose(t);
    H5Aclose(a);
    return rc;
}

static int attr_i64(hid_t obj, const char *name, int64_t *v)
{
    if (H5Aexists(obj, name) <= 0)
        return -1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    int rc = H5Aread(a, H5T_NATIVE_INT64, v) < 0 ? -1 : 0;
    H5Aclose(a);
    return rc;
}

/* Entries of dir whose name contains sub (NULL: all but . and ..). */
static int count_entries(const char *dir, const char *sub)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && (!sub || strstr(e->d_name, sub)))
            n++;
    closedir(d);
    return n;
}

static int is_virtual(hid_t f, const char *name)
{
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0)
        return -1;
    hid_t p = H5Dget_create_plist(d);
    int v = H5Pget_layout(p) == H5D_VIRTUAL;
    H5Pclose(p);
    H5Dclose(d);
    return v;
}

/* ---- widths and names ------------------------------------------------------------------------ */

static void test_widths(void)
{
    sl_out_spec_t a = {"p", 5, SL_F32}, b = {"l", 0, SL_I32}, c = {"t", 16, SL_OUT_TEXT},
                  d = {"h", 3, SL_F16}, e = {"s", 0, SL_F32};
    CHECK(sl_out_width(&a) == 5 && sl_out_ndims(&a) == 2);
    CHECK(sl_out_width(&b) == 1 && sl_out_ndims(&b) == 1);
    CHECK(sl_out_width(&c) == 16 && sl_out_ndims(&c) == 1);
    CHECK(sl_out_width(&d) == 3 && sl_out_ndims(&d) == 2);
    CHECK(sl_out_width(&e) == 1 && sl_out_ndims(&e) == 1);
    /* buffers are typed by the file dtype: float (f32, f16), int32_t, text bytes */
    CHECK(sl_out_elem_size(&a) == sizeof(float) && sl_out_elem_size(&d) == sizeof(float));
    CHECK(sl_out_elem_size(&b) == sizeof(int32_t) && sl_out_elem_size(&c) == 1);
    CHECK(sl_out_row_bytes(&a) == 5 * sizeof(float) && sl_out_row_bytes(&b) == sizeof(int32_t));
    CHECK(sl_out_row_bytes(&c) == 16 && sl_out_row_bytes(&d) == 3 * sizeof(float));
    char buf[64];
    CHECK((char *)sl_out_row(&a, buf, 2) == buf + 40 && (char *)sl_out_row(&c, buf, 3) == buf + 48);
}

/* A failed row: NaN in float outputs, -1 in i32 ones, an empty string in text; other rows kept. */
static void test_fill_failed(void)
{
    sl_outputs_t o = {3, {{"p", 2, SL_F32}, {"n", 0, SL_I32}, {"t", 8, SL_OUT_TEXT}}, NULL, 0};
    float p[6] = {1, 2, 3, 4, 5, 6};
    int32_t n[3] = {16777217, 7, 9};
    char t[24] = "row0....row1....row2...";
    void *bufs[3] = {p, n, t};
    sl_out_fill_failed(&o, bufs, 1);
    CHECK(p[0] == 1 && p[1] == 2 && isnan(p[2]) && isnan(p[3]) && p[4] == 5 && p[5] == 6);
    CHECK(n[0] == 16777217 && n[1] == -1 && n[2] == 9);
    static const char zero[8];
    CHECK(!memcmp(t, "row0....", 8) && !memcmp(t + 8, zero, 8) && !memcmp(t + 16, "row2", 4));
}

static void test_relpath(void)
{
    sl_shard_t s1 = {.path = "/data/a/shard.h5", .rows = 100};
    sl_shard_t s2 = {.path = "/data/b/shard.h5", .rows = 100}; /* same basename, other dir */
    char *p = sl_part_relpath(&s1, 0, 10), *q = sl_part_relpath(&s1, 0, 10);
    char *r = sl_part_relpath(&s1, 10, 10), *t = sl_part_relpath(&s2, 0, 10);
    char *u = sl_part_relpath(&s1, 0, 11);
    CHECKF(!strcmp(p, q), "%s vs %s", p, q);
    CHECKF(!strncmp(p, "parts/shard.h5.", 15), "%s", p);
    CHECKF(contains(p, "rows-000000000000-000000000010.h5"), "%s", p);
    CHECKF(strcmp(p, r) && strcmp(p, t) && strcmp(p, u) && strcmp(r, t), "%s %s %s %s", p, r, t, u);
    /* the folder is per shard: two row ranges of one shard share it, the other shard not */
    CHECK(!strncmp(p, r, (size_t)(strrchr(p, '/') - p)));
    CHECK(strncmp(p, t, (size_t)(strrchr(p, '/') - p)));
    free(p);
    free(q);
    free(r);
    free(t);
    free(u);
}

/* ---- one part file --------------------------------------------------------------------------- */

#define NR 4
static const sl_outputs_t g_outs = {4,
                                    {{"predictions", 3, SL_F32},
                                     {"label", 0, SL_I32},
                                     {"half", 2, SL_F16},
                                     {"text", 8, SL_OUT_TEXT}},
                                    NULL,
                                    0};
static const char *const g_text[NR] = {"r0", "full8chr", "", "\xc3\xa9t\xc3\xa9"};

/* The i32 value of global row g: odd rows hold 2^24 + g, an odd number above 2^24 that a float
 * cannot hold (16777217 would read back as 16777216), so the typed buffers are checked end to
 * end. */
static int32_t label_of(int64_t g) { return g % 2 ? (int32_t)(16777216 + g) : (int32_t)(g % 7); }

/* Output buffers of rows [row0, row0+n) with values made from the global row g0 + i. */
static void fill_bufs(void *bufs[4], int64_t g0, int64_t n)
{
    float *pred = calloc((size_t)n * 3 + 1, sizeof(float));
    int32_t *lab = calloc((size_t)n + 1, sizeof(int32_t));
    float *half = calloc((size_t)n * 2 + 1, sizeof(float));
    char *text = calloc((size_t)n * 8 + 1, 1); /* 8 bytes per row */
    for (int64_t i = 0; i < n; i++) {
        int64_t g = g0 + i;
        for (int j = 0; j < 3; j++)
            pred[i * 3 + j] = (float)g * 10.0f + (float)j + 0.5f;
        lab[i] = label_of(g);
        half[i * 2] = 0.25f * (float)g; /* exact in f16 */
        half[i * 2 + 1] = -1.5f - (float)g;
        memcpy(text + i * 8, g_text[g % NR], strlen(g_text[g % NR]));
    }
    bufs[0] = pred;
    bufs[1] = lab;
    bufs[2] = half;
    bufs[3] = text;
}

static void free_bufs(void *bufs[4])
{
    for (int i = 0; i < 4; i++)
        free(bufs[i]);
}

static void test_part(void)
{
    char out[4200];
    snprintf(out, sizeof out, "%s/part_job", g_dir);
    sl_error_t err = {{0}};
    CHECKF(sl_output_prepare(out, &err) == 0, "%s", err.msg);
    sl_shard_t shard = {.path = "/data/in/shard-0.h5",
                        .rows = 50,
                        .first_row = 0,
                        .size = 123456,
                        .mtime_ns = 1700000000123456789LL};
    sl_part_meta_t m = {&shard, 8, NR, &g_outs, 0x0123456789abcdefULL, 0xfedcba9876543210ULL};
    char *rel = sl_part_relpath(&shard, m.row0, m.nrows);
    void *bufs[4];
    fill_bufs(bufs, 0, NR);
    sl_row_error_t errs[2] = {{1, "NaN in feature 2"}, {3, "non-finite output"}};
    CHECK(sl_part_matches(out, rel, &m) == 0); /* not written yet */
    int rc = sl_part_write(out, rel, &m, bufs, errs, 2, &err);
    CHECKF(rc == 0, "%s", err.msg);

    /* committed: the final file and nothing else in its folder */
    char path[8400], dir[8400];
    snprintf(path, sizeof path, "%s/%s", out, rel);
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = '\0';
    CHECK(access(path, R_OK) == 0);
    CHECKF(count_entries(dir, NULL) == 1, "%d entries in %s", count_entries(dir, NULL), dir);
    CHECK(count_entries(dir, ".tmp") == 0);

    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    CHECK(f >= 0);
    if (f >= 0) {
        size_t n = 0;
        int nd = 0;
        hsize_t dims[2];
        float *p = sl_test_h5_read(f, "predictions", H5T_NATIVE_FLOAT, 4, &n, &nd, dims);
        CHECK(p && nd == 2 && dims[0] == NR && dims[1] == 3);
        CHECK(p && !memcmp(p, bufs[0], NR * 3 * sizeof(float)));
        free(p);
        int32_t *lab = sl_test_h5_read(f, "label", H5T_NATIVE_INT32, 4, &n, &nd, dims);
        CHECK(lab && nd == 1 && n == NR);
        for (int i = 0; lab && i < NR; i++)
            CHECKF(lab[i] == label_of(i), "label row %d: %d", i, lab[i]);
        CHECK(lab && lab[1] == 16777217 && lab[3] == 16777219); /* above 2^24, exact */
        free(lab);
        hid_t d = H5Dopen2(f, "label", H5P_DEFAULT), t = H5Dget_type(d);
        CHECK(H5Tget_class(t) == H5T_INTEGER && H5Tget_size(t) == 4);
        H5Tclose(t);
        H5Dclose(d);
        d = H5Dopen2(f, "half", H5P_DEFAULT);
        t = H5Dget_type(d);
        CHECK(H5Tget_class(t) == H5T_FLOAT && H5Tget_size(t) == 2);
        H5Tclose(t);
        H5Dclose(d);
        float *h = sl_test_h5_read(f, "half", H5T_NATIVE_FLOAT, 4, &n, &nd, dims);
        CHECK(h && nd == 2 && dims[0] == NR && dims[1] == 2);
        CHECK(h && !memcmp(h, bufs[2], NR * 2 * sizeof(float)));
        free(h);
        int ns = 0;
        char **txt = sl_test_h5_strings(f, "text", &ns);
        CHECK(txt && ns == NR);
        for (int i = 0; txt && i < NR && i < ns; i++)
            CHECKF(!strcmp(txt[i], g_text[i]), "text row %d: '%s'", i, txt[i]);
        sl_test_free_strings(txt, ns);
        int64_t *fr = sl_test_h5_read(f, "failed_rows", H5T_NATIVE_INT64, 8, &n, &nd, dims);
        CHECK(fr && n == 2 && fr[0] == 1 && fr[1] == 3);
        free(fr);
        char **why = sl_test_h5_strings(f, "failed_reasons", &ns);
        CHECK(why && ns == 2 && !strcmp(why[0], errs[0].reason) && !strcmp(why[1], errs[1].reason));
        sl_test_free_strings(why, ns);

        char s[4096];
        int64_t v = 0;
        CHECK(attr_str(f, "source_path", s, sizeof s) == 0 && !strcmp(s, shard.path));
        CHECK(attr_i64(f, "source_size", &v) == 0 && v == shard.size);
        CHECK(attr_i64(f, "source_mtime_ns", &v) == 0 && v == shard.mtime_ns);
        CHECK(attr_i64(f, "first_row", &v) == 0 && v == 8);
        CHECK(attr_i64(f, "rows", &v) == 0 && v == NR);
        CHECK(attr_str(f, "model_fingerprint", s, sizeof s) == 0 && !strcmp(s, "0123456789abcdef"));
        CHECK(attr_str(f, "job_hash", s, sizeof s) == 0 && !strcmp(s, "fedcba9876543210"));
        CHECK(attr_str(f, "shardline_version", s, sizeof s) == 0 && !strcmp(s, SL_VERSION));
        H5Fclose(f);
    }

    /* matches its own meta, and no meta that differs in any field */
    CHECK(sl_part_matches(out, rel, &m) == 1);
    sl_shard_t other = shard;
    sl_part_meta_t x = m;
    x.model_fp ^= 1;
    CHECK(sl_part_matches(out, rel, &x) == 0);
    x = m;
    x.job_hash ^= 1 << 20;
    CHECK(sl_part_matches(out, rel, &x) == 0);
    x = m;
    x.shard = &other;
    other.size++;
    CHECK(sl_part_matches(out, rel, &x) == 0);
    other = shard;
    other.mtime_ns++;
    CHECK(sl_part_matches(out, rel, &x) == 0);
    other = shard;
    other.path = "/data/in/shard-1.h5";
    CHECK(sl_part_matches(out, rel, &x) == 0);
    other = shard;
    CHECK(sl_part_matches(out, rel, &x) == 1); /* an equal copy of the shard matches */
    x = m;
    x.row0 = 9;
    CHECK(sl_part_matches(out, rel, &x) == 0);
    x = m;
    x.nrows = NR - 1;
    CHECK(sl_part_matches(out, rel, &x) == 0);
    sl_outputs_t wider = g_outs;
    wider.spec[0].cols = 4;
    x = m;
    x.outs = &wider;
    CHECK(sl_part_matches(out, rel, &x) == 0);
    sl_outputs_t more = g_outs;
    more.spec[more.n++] = (sl_out_spec_t){"extra", 1, SL_F32};
    x.outs = &more;
    CHECK(sl_part_matches(out, rel, &x) == 0);
    CHECK(sl_part_matches(out, "parts/none/rows-x.h5", &m) == 0);

    /* a commit that cannot rename (a non-empty directory where the file goes): refused, naming
     * the path, with no temporary file left behind */
    char *rel2 = sl_part_relpath(&shard, 20, NR);
    char blocker[8400];
    snprintf(blocker, sizeof blocker, "%s/%s/keep", out, rel2);
    CHECK(sl_mkdir_p(blocker, &err) == 0);
    rc = sl_part_write(out, rel2, &m, bufs, errs, 0, &err);
    CHECK(rc != 0);
    CHECKF(contains(err.msg, rel2) && contains(err.msg, "cannot commit"), "%s", err.msg);
    CHECKF(count_entries(dir, ".tmp") == 0, "a temporary file was left in %s", dir);
    /* a file where the part's folder goes: refused, naming it */
    char fake[8400];
    snprintf(fake, sizeof fake, "%s/parts/blocked", out);
    sl_test_write_file(fake, "x", 1);
    rc = sl_part_write(out, "parts/blocked/rows-1.h5", &m, bufs, errs, 0, &err);
    CHECK(rc != 0);
    CHECKF(contains(err.msg, "parts/blocked"), "%s", err.msg);
    free(rel2);
    free(rel);
    free_bufs(bufs);
}

/* ---- the output directory check -------------------------------------------------------------- */

static void test_output_check(void)
{
    char d[4200], p[8400], foreign[256];
    int exists = -1;
    sl_error_t err = {{0}};
    /* not there yet, under a writable directory */
    snprintf(d, sizeof d, "%s/chk/new/deeper", g_dir);
    CHECKF(sl_output_check(d, &exists, foreign, sizeof foreign, &err) == 0, "%s", err.msg);
    CHECK(exists == 0);
    /* empty */
    snprintf(d, sizeof d, "%s/chk_empty", g_dir);
    CHECK(sl_mkdir_p(d, &err) == 0);
    CHECKF(sl_output_check(d, &exists, foreign, sizeof foreign, &err) == 0, "%s", err.msg);
    CHECK(exists == 1 && foreign[0] == '\0');
    /* what shardline writes there is not foreign */
    snprintf(p, sizeof p, "%s/parts", d);
    CHECK(sl_mkdir_p(p, &err) == 0);
    const char *own[] = {"manifest.json", "report.json",           "predictions.h5",
                         ".lock",         "predictions.h5.tmp.42", "slurm-123.out"};
    for (size_t i = 0; i < sizeof own / sizeof *own; i++) {
        snprintf(p, sizeof p, "%s/%s", d, own[i]);
        sl_test_write_file(p, "x", 1);
    }
    CHECKF(sl_output_check(d, &exists, foreign, sizeof foreign, &err) == 0, "%s", err.msg);
    CHECKF(exists == 1 && foreign[0] == '\0', "foreign '%s'", foreign);
    /* someone else's file */
    snprintf(p, sizeof p, "%s/notes.txt", d);
    sl_test_write_file(p, "x", 1);
    CHECKF(sl_output_check(d, &exists, foreign, sizeof foreign, &err) == 0, "%s", err.msg);
    CHECKF(exists == 1 && !strcmp(foreign, "notes.txt"), "foreign '%s'", foreign);
    /* a file in place of the directory, and a file on the way to it */
    snprintf(d, sizeof d, "%s/chk_file", g_dir);
    sl_test_write_file(d, "x", 1);
    CHECK(sl_output_check(d, &exists, foreign, sizeof foreign, &err) != 0);
    CHECKF(contains(err.msg, d) && contains(err.msg, "not a directory"), "%s", err.msg);
    snprintf(p, sizeof p, "%s/below", d);
    CHECK(sl_output_check(p, &exists, foreign, sizeof foreign, &err) != 0);
    CHECKF(contains(err.msg, p) && contains(err.msg, "not a directory"), "%s", err.msg);
}

/* ---- predictions.h5 -------------------------------------------------------------------------- */

typedef struct {
    int64_t row;
    char *reason;
} err_rec_t;

typedef struct {
    char *path;
    int64_t first_row, rows;
} shard_rec_t;

/* Checks predictions.h5-like file `path` against the values fill_bufs makes for global rows
 * (rows in [miss0, miss1) read as fill values). */
static void check_values(const char *path, int64_t total, int64_t miss0, int64_t miss1)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    CHECKF(f >= 0, "cannot open %s", path);
    if (f < 0)
        return;
    void *want[4];
    fill_bufs(want, 0, total);
    const float *wp = want[0], *wh = want[2];
    size_t n = 0;
    int nd = 0;
    hsize_t dims[2];
    float *p = sl_test_h5_read(f, "predictions", H5T_NATIVE_FLOAT, 4, &n, &nd, dims);
    int32_t *lab = sl_test_h5_read(f, "label", H5T_NATIVE_INT32, 4, NULL, NULL, NULL);
    float *h = sl_test_h5_read(f, "half", H5T_NATIVE_FLOAT, 4, NULL, NULL, NULL);
    int ns = 0;
    char **txt = sl_test_h5_strings(f, "text", &ns);
    CHECK(p && lab && h && txt);
    CHECK(nd == 2 && dims[0] == (hsize_t)total && dims[1] == 3 && ns == total);
    int bad = 0, badfill = 0;
    for (int64_t g = 0; p && lab && h && txt && g < total; g++) {
        if (g >= miss0 && g < miss1) {
            for (int j = 0; j < 3; j++)
                badfill += !isnan(p[g * 3 + j]);
            badfill += lab[g] != -1 || !isnan(h[g * 2]) || strcmp(txt[g], "");
            continue;
        }
        bad += memcmp(p + g * 3, wp + g * 3, 3 * sizeof(float)) != 0;
        bad += lab[g] != label_of(g); /* odd rows: above 2^24, exact */
        bad += memcmp(h + g * 2, wh + g * 2, 2 * sizeof(float)) != 0;
        bad += strcmp(txt[g], g_text[g % NR]) != 0;
    }
    CHECKF(bad == 0, "%s: %d rows differ from the parts' values", path, bad);
    CHECKF(badfill == 0, "%s: %d rows of a missing part are not fill values", path, badfill);
    free(p);
    free(lab);
    free(h);
    sl_test_free_strings(txt, ns);
    free_bufs(want);
    H5Fclose(f);
}

static void test_predictions(void)
{
    char out[4200];
    snprintf(out, sizeof out, "%s/job", g_dir);
    sl_error_t err = {{0}};
    CHECKF(sl_output_prepare(out, &err) == 0, "%s", err.msg);
    /* two shards (5 and 3 rows), units of 2 rows: (0,0,2) (0,2,2) (0,4,1) (1,0,2) (1,2,1) */
    sl_shard_t shards[2] = {{"/data/x/s0.h5", 5, 0, 1000, 1}, {"/data/y/s1.h5", 3, 5, 2000, 2}};
    sl_inputs_t in = {shards, 2, 8, 16, "features", SL_INPUT_FEATURES};
    int64_t rows[2] = {5, 3};
    sl_unit_t *units = NULL;
    int64_t nunits = sl_units_plan(rows, 2, 2, &units);
    CHECK(nunits == 5);
    char *labels[3] = {"zero", "one", "two"};
    sl_outputs_t outs = g_outs;
    outs.labels = labels;
    outs.n_labels = 3;
    int64_t nfailed_parts = 0;
    /* written in reverse order: predictions.h5 must still put rows in input order */
    for (int64_t i = nunits - 1; i >= 0; i--) {
        const sl_unit_t *u = &units[i];
        sl_part_meta_t m = {&shards[u->shard], u->row0, u->nrows, &outs, 1, 2};
        void *bufs[4];
        fill_bufs(bufs, shards[u->shard].first_row + u->row0, u->nrows);
        sl_row_error_t e[1] = {{u->nrows - 1, ""}};
        snprintf(e[0].reason, sizeof e[0].reason, "unit %lld failed", (long long)i);
        int ne = i == 1 || i == 3; /* one failed row in units 1 and 3 */
        nfailed_parts += ne;
        char *rel = sl_part_relpath(&shards[u->shard], u->row0, u->nrows);
        CHECKF(sl_part_write(out, rel, &m, bufs, e, ne, &err) == 0, "%s", err.msg);
        free(rel);
        free_bufs(bufs);
    }
    cJSON *desc = cJSON_CreateObject();
    cJSON_AddStringToObject(desc, "model", "/models/m");
    cJSON_AddNumberToObject(desc, "tp", 2);
    cJSON_AddNumberToObject(desc, "temperature", 0.75);
    cJSON_AddBoolToObject(desc, "restart", 1);
    const char *ins[2] = {"a*.h5", "b.h5"};
    cJSON_AddItemToObject(desc, "inputs", cJSON_CreateStringArray(ins, 2));
    int64_t failed = -1;
    int rc = sl_predictions_write(out, &in, units, nunits, &outs, desc, &failed, &err);
    CHECKF(rc == 0, "%s", err.msg);
    CHECK(failed == nfailed_parts);
    CHECK(count_entries(out, ".tmp") == 0);
    char pred[8400];
    snprintf(pred, sizeof pred, "%s/predictions.h5", out);
    check_values(pred, 8, -1, -1);

    hid_t f = H5Fopen(pred, H5F_ACC_RDONLY, H5P_DEFAULT);
    CHECK(f >= 0);
    if (f >= 0) {
        CHECK(is_virtual(f, "predictions") == 1 && is_virtual(f, "text") == 1);
        int64_t v = 0;
        char s[512];
        CHECK(attr_i64(f, "total_rows", &v) == 0 && v == 8);
        CHECK(attr_str(f, "shardline_version", s, sizeof s) == 0 && !strcmp(s, SL_VERSION));
        CHECK(attr_str(f, "layout", s, sizeof s) == 0 && contains(s, "virtual"));
        CHECK(attr_str(f, "model", s, sizeof s) == 0 && !strcmp(s, "/models/m"));
        CHECK(attr_i64(f, "tp", &v) == 0 && v == 2);
        CHECK(attr_i64(f, "restart", &v) == 0 && v == 1);
        double dv = 0;
        hid_t a = H5Aopen(f, "temperature", H5P_DEFAULT);
        CHECK(a >= 0 && H5Aread(a, H5T_NATIVE_DOUBLE, &dv) >= 0 && dv == 0.75);
        if (a >= 0)
            H5Aclose(a);
        a = H5Aopen(f, "inputs", H5P_DEFAULT);
        char *iv[2] = {0};
        hid_t st = sl_h5_vlen_str_type();
        CHECK(a >= 0 && H5Aread(a, st, iv) >= 0 && iv[0] && !strcmp(iv[0], "a*.h5") && iv[1] &&
              !strcmp(iv[1], "b.h5"));
        H5free_memory(iv[0]);
        H5free_memory(iv[1]);
        if (a >= 0)
            H5Aclose(a);
        /* labels on the first output */
        hid_t d = H5Dopen2(f, "predictions", H5P_DEFAULT);
        a = H5Aopen(d, "labels", H5P_DEFAULT);
        char *lv[3] = {0};
        CHECK(a >= 0 && H5Aread(a, st, lv) >= 0 && lv[2] && !strcmp(lv[2], "two"));
        for (int i = 0; i < 3; i++)
            H5free_memory(lv[i]);
        if (a >= 0)
            H5Aclose(a);
        H5Dclose(d);
        /* /errors: global rows of the failed rows with their reasons */
        hid_t et = H5Tcreate(H5T_COMPOUND, sizeof(err_rec_t));
        H5Tinsert(et, "row", HOFFSET(err_rec_t, row), H5T_NATIVE_INT64);
        H5Tinsert(et, "reason", HOFFSET(err_rec_t, reason), st);
        err_rec_t er[4] = {{0}};
        d = H5Dopen2(f, "errors", H5P_DEFAULT);
        hid_t sp = H5Dget_space(d);
        CHECK(H5Sget_simple_extent_npoints(sp) == 2);
        CHECK(H5Dread(d, et, H5S_ALL, H5S_ALL, H5P_DEFAULT, er) >= 0);
        /* unit 1 = shard 0 rows 2..4 (last row global 3); unit 3 = shard 1 rows 0..2 (global 6);
         * written in reverse, collected in unit order */
        CHECKF(er[0].row == 3 && er[1].row == 6, "errors at rows %lld, %lld", (long long)er[0].row,
               (long long)er[1].row);
        CHECK(contains(er[0].reason, "unit 1 failed") && contains(er[1].reason, "unit 3 failed"));
        H5Dvlen_reclaim(et, sp, H5P_DEFAULT, er);
        H5Sclose(sp);
        H5Dclose(d);
        H5Tclose(et);
        /* /shards */
        hid_t ct = H5Tcreate(H5T_COMPOUND, sizeof(shard_rec_t));
        H5Tinsert(ct, "path", HOFFSET(shard_rec_t, path), st);
        H5Tinsert(ct, "first_row", HOFFSET(shard_rec_t, first_row), H5T_NATIVE_INT64);
        H5Tinsert(ct, "rows", HOFFSET(shard_rec_t, rows), H5T_NATIVE_INT64);
        shard_rec_t sr[2] = {{0}};
        d = H5Dopen2(f, "shards", H5P_DEFAULT);
        sp = H5Dget_space(d);
        CHECK(H5Sget_simple_extent_npoints(sp) == 2);
        CHECK(H5Dread(d, ct, H5S_ALL, H5S_ALL, H5P_DEFAULT, sr) >= 0);
        CHECK(sr[1].path && !strcmp(sr[1].path, shards[1].path) && sr[1].first_row == 5 &&
              sr[1].rows == 3 && sr[0].rows == 5);
        H5Dvlen_reclaim(ct, sp, H5P_DEFAULT, sr);
        H5Sclose(sp);
        H5Dclose(d);
        H5Tclose(ct);
        H5Tclose(st);
        H5Fclose(f);
    }

    /* a part missing: its rows read as fill values; sl_vds_sources names it; consolidating
     * is refused, naming it; writing predictions.h5 anew is refused, naming it */
    char *rel3 = sl_part_relpath(&shards[1], 0, 2), part3[8400], moved[8400];
    snprintf(part3, sizeof part3, "%s/%s", out, rel3);
    snprintf(moved, sizeof moved, "%s/moved.h5", g_dir);
    CHECK(rename(part3, moved) == 0);
    check_values(pred, 8, 5, 7);
    int64_t total = 0, missing = 0;
    char first[4096];
    CHECK(sl_vds_sources(pred, &total, &missing, first, sizeof first, &err) == 0);
    CHECKF(total == 5 && missing == 1, "total %lld missing %lld", (long long)total,
           (long long)missing);
    CHECKF(contains(first, rel3), "first missing '%s'", first);
    CHECK(sl_vds_warn_missing(pred) == 1);
    char copy[8400];
    snprintf(copy, sizeof copy, "%s/copy.h5", out);
    CHECK(sl_predictions_consolidate(pred, copy, &err) != 0);
    CHECKF(contains(err.msg, rel3) && contains(err.msg, pred), "%s", err.msg);
    CHECK(access(copy, F_OK) != 0);
    rc = sl_predictions_write(out, &in, units, nunits, &outs, NULL, &failed, &err);
    CHECK(rc != 0);
    CHECKF(contains(err.msg, rel3), "%s", err.msg);
    CHECK(count_entries(out, ".tmp") == 0);
    CHECK(rename(moved, part3) == 0);
    CHECK(sl_vds_sources(pred, &total, &missing, first, sizeof first, &err) == 0);
    CHECK(total == 5 && missing == 0 && first[0] == '\0');

    /* consolidated: real datasets with the same values and attributes, readable without
     * parts/ beside it; then in place */
    rc = sl_predictions_consolidate(pred, copy, &err);
    CHECKF(rc == 0, "%s", err.msg);
    char parts[8400], parts_away[8400];
    snprintf(parts, sizeof parts, "%s/parts", out);
    snprintf(parts_away, sizeof parts_away, "%s/parts_away", g_dir);
    CHECK(rename(parts, parts_away) == 0);
    check_values(copy, 8, -1, -1);
    f = H5Fopen(copy, H5F_ACC_RDONLY, H5P_DEFAULT);
    CHECK(f >= 0);
    if (f >= 0) {
        CHECK(is_virtual(f, "predictions") == 0 && is_virtual(f, "text") == 0);
        char s[512];
        int64_t v = 0;
        CHECK(attr_str(f, "layout", s, sizeof s) == 0 && contains(s, "self-contained"));
        CHECK(attr_str(f, "model", s, sizeof s) == 0 && !strcmp(s, "/models/m"));
        CHECK(attr_i64(f, "total_rows", &v) == 0 && v == 8);
        hid_t d = H5Dopen2(f, "predictions", H5P_DEFAULT);
        CHECK(H5Aexists(d, "labels") > 0);
        H5Dclose(d);
        CHECK(H5Lexists(f, "errors", H5P_DEFAULT) > 0 && H5Lexists(f, "shards", H5P_DEFAULT) > 0);
        H5Fclose(f);
    }
    CHECK(sl_vds_sources(copy, &total, &missing, first, sizeof first, &err) == 0);
    CHECK(total == 0 && missing == 0);
    CHECK(rename(parts_away, parts) == 0);
    rc = sl_predictions_consolidate(pred, pred, &err);
    CHECKF(rc == 0, "%s", err.msg);
    CHECK(count_entries(out, ".tmp") == 0);
    CHECK(rename(parts, parts_away) == 0);
    check_values(pred, 8, -1, -1);
    free(rel3);
    free(units);
    cJSON_Delete(desc);
}

int main(void)
{
    sl_h5_quiet();
    if (sl_test_tmpdir(g_dir, sizeof g_dir, "sl_test_output") != 0)
        return 1;
    test_widths();
    test_fill_failed();
    test_relpath();
    test_part();
    test_output_check();
    test_predictions();
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_dir);
    return sl_test_finish("test_output");
}
