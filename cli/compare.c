/*
 * compare.c — `shardline compare OUT_A OUT_B` (see compare.h). Reads the predictions.h5 of two
 * finished jobs, in blocks of rows so memory does not grow with the dataset, and reports per
 * output how far B is from A:
 *   float outputs [rows, cols] (embeddings, logits, probs, mlp predictions): the cosine of each
 *       row's pair of vectors (min and mean) and the largest and mean |A - B|;
 *   classify: the share of rows whose /labels agree;
 *   score: corpus perplexity of each, exp(-sum(sum_logprob) / sum(n_tokens)), their ratio B/A,
 *       and, when both wrote /token_logprobs, the mean and largest |delta log-probability| per
 *       scored token;
 *   generate: the share of rows whose generated token ids are identical (same count, same ids),
 *       the mean share of each row's tokens before the first difference, and the share of rows
 *       whose /text is identical.
 * Rows that failed in either job (listed in /errors) are left out and counted.
 *
 * Two outputs are comparable when they come from the same task over the same rows: the same
 * input files (path, size, modification time, rows), the same input dataset, and the same
 * options that change what the model sees or does (max length, BOS, chat template, system
 * message, prompt dataset, generation settings), as predictions.h5's root attributes and
 * manifest.json record them; the model, its precision, --tp and the batching may differ (that
 * is what one compares). Anything else is refused with exit status 3 naming the difference.
 */
#include "cli/compare.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/sl_error.h"
#include "common/sl_fs.h"
#include "jobs/h5util.h"
#include "jobs/output.h"

/* Float elements read per block (16 MiB per side): bounds memory whatever the row count. */
#define BLOCK_ELEMS (1 << 22)

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: shardline compare [options] OUT_A OUT_B\n\n"
        "Compares the outputs of two finished jobs over the same rows (their predictions.h5;\n"
        "e.g. one model in f32 and in bf16, quantized and not, pruned and not). B is measured\n"
        "against A:\n"
        "  float outputs (embeddings, logits, probs, mlp predictions): cosine of each row's\n"
        "      vectors (min, mean; outputs one column wide: none) and max/mean |A - B|\n"
        "  classify: share of rows whose labels agree\n"
        "  score: corpus perplexity of each (exp of minus the summed log-probabilities over\n"
        "      the scored tokens), the ratio B/A, and with --token-logprobs in both jobs the\n"
        "      mean and max |delta log-probability| per token\n"
        "  generate: share of rows with identical generated token ids, mean share of a row's\n"
        "      tokens before the first difference, share of rows with identical text\n"
        "Rows that failed in either job are left out (and counted).\n\n"
        "options:\n"
        "  --json             print one JSON object instead of the table\n"
        "  --min-cosine X     fail (status 6) when a float output's min cosine is below X\n"
        "                     (-1 .. 1; outputs at least two columns wide)\n"
        "  --max-ppl-ratio X  score: fail (status 6) when the perplexity ratio B/A is above X\n"
        "                     or below 1/X (X >= 1)\n"
        "  --min-agreement X  classify: fail (status 6) when the label agreement is below X;\n"
        "                     generate: when the share of rows with identical tokens is (0 .. 1)\n"
        "  --help             this help\n\n"
        "exit status: 0 compared (and every threshold met), 2 bad command line, 3 the outputs\n"
        "are missing, incomplete or not comparable (the message says which difference),\n"
        "6 a threshold was not met\n");
}

/* ---- one side ------------------------------------------------------------------------------ */

typedef struct {
    const char *dir;
    char path[4096]; /* DIR/predictions.h5 */
    cJSON *manifest;
    const cJSON *attrs;   /* manifest "attributes" (predictions.h5's root attributes) */
    const cJSON *outputs; /* manifest model.outputs */
    hid_t f;
    char task[32];
    int64_t rows;
    int64_t *failed; /* sorted global row indices listed in /errors */
    int64_t nfailed;
} side_t;

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* /errors: compound (row int64, reason string) [n]; only the rows are kept. */
static int read_failed(side_t *s, sl_error_t *err)
{
    if (H5Lexists(s->f, "errors", H5P_DEFAULT) <= 0)
        return 0;
    hid_t d = H5Dopen2(s->f, "errors", H5P_DEFAULT);
    if (d < 0)
        return sl_errorf(err, "%s: cannot open /errors", s->path);
    hid_t sp = H5Dget_space(d);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    int rc = 0;
    if (n > 0) {
        hid_t mt = H5Tcreate(H5T_COMPOUND, sizeof(int64_t));
        H5Tinsert(mt, "row", 0, H5T_NATIVE_INT64);
        s->failed = sl_xmalloc((size_t)n * sizeof(int64_t));
        if (H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->failed) < 0)
            rc = sl_errorf(err, "%s: /errors: cannot read its rows", s->path);
        H5Tclose(mt);
        s->nfailed = (int64_t)n;
        qsort(s->failed, (size_t)n, sizeof(int64_t), cmp_i64);
    }
    H5Sclose(sp);
    H5Dclose(d);
    return rc;
}

static void side_close(side_t *s)
{
    if (s->f >= 0)
        H5Fclose(s->f);
    cJSON_Delete(s->manifest);
    free(s->failed);
}

static int side_open(side_t *s, const char *dir, sl_error_t *err)
{
    memset(s, 0, sizeof *s);
    s->f = -1;
    s->dir = dir;
    char mpath[4096];
    snprintf(mpath, sizeof mpath, "%s/manifest.json", dir);
    char *text = NULL;
    if (sl_read_file(mpath, 1u << 30, &text, NULL, err) != 0)
        return sl_error_prefix(err, "%s: not a shardline output directory", dir);
    s->manifest = cJSON_Parse(text);
    free(text);
    if (!s->manifest)
        return sl_errorf(err, "%s: not valid JSON", mpath);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(s->manifest, "model");
    s->attrs = cJSON_GetObjectItemCaseSensitive(s->manifest, "attributes");
    s->outputs = model ? cJSON_GetObjectItemCaseSensitive(model, "outputs") : NULL;
    if (!cJSON_IsObject(s->attrs) || !cJSON_IsArray(s->outputs) ||
        !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(s->manifest, "inputs")))
        return sl_errorf(err,
                         "%s: 'attributes', 'model.outputs' or 'inputs' is missing (not a "
                         "shardline manifest, or from another version)",
                         mpath);
    if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(s->manifest, "complete")))
        return sl_errorf(err, "%s: the job is not complete (see `shardline status %s`)", dir, dir);
    snprintf(s->path, sizeof s->path, "%s/predictions.h5", dir);
    s->f = sl_h5_open_ro(s->path, err);
    if (s->f < 0)
        return -1;
    int64_t total = 0, missing = 0;
    char first[4096] = "";
    if (sl_vds_sources(s->path, &total, &missing, first, sizeof first, err) != 0)
        return -1;
    if (missing > 0)
        return sl_errorf(err, "%s: %lld of its %lld part files are missing (first: %s)", s->path,
                         (long long)missing, (long long)total, first);
    const cJSON *mtask = cJSON_GetObjectItemCaseSensitive(s->attrs, "task");
    if (sl_h5_attr_read_str(s->f, "task", s->task, sizeof s->task) != 0 ||
        sl_h5_attr_read_i64(s->f, "total_rows", &s->rows) != 0)
        return sl_errorf(err, "%s: root attribute 'task' or 'total_rows' is missing", s->path);
    if (!cJSON_IsString(mtask) || strcmp(mtask->valuestring, s->task))
        return sl_errorf(err, "%s: task '%s', but %s says '%s' (written by another job?)", s->path,
                         s->task, mpath, cJSON_IsString(mtask) ? mtask->valuestring : "");
    return read_failed(s, err);
}

/* The manifest's dtype of output `name` ("f32", "f16", "i32", "text"), or NULL when absent. */
static const char *out_dtype(const side_t *s, const char *name)
{
    const cJSON *o;
    cJSON_ArrayForEach(o, s->outputs)
    {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, "name");
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "dtype");
        if (cJSON_IsString(n) && !strcmp(n->valuestring, name))
            return cJSON_IsString(t) ? t->valuestring : "f32";
    }
    return NULL;
}

/* ---- comparability ------------------------------------------------------------------------- */

static void json_text(const cJSON *v, char *buf, size_t len)
{
    if (!v) {
        snprintf(buf, len, "(none)");
        return;
    }
    char *t = cJSON_PrintUnformatted(v);
    snprintf(buf, len, "%s", t ? t : "?");
    free(t);
}

static int refuse(sl_error_t *err, const side_t *a, const side_t *b, const char *what,
                  const cJSON *va, const cJSON *vb)
{
    char x[512], y[512];
    json_text(va, x, sizeof x);
    json_text(vb, y, sizeof y);
    return sl_errorf(err, "not comparable: %s differs (%s: %s; %s: %s)", what, a->dir, x, b->dir,
                     y);
}

static int check_comparable(const side_t *a, const side_t *b, sl_error_t *err)
{
    if (strcmp(a->task, b->task))
        return sl_errorf(err, "not comparable: %s is task %s, %s is task %s", a->dir, a->task,
                         b->dir, b->task);
    if (a->rows != b->rows)
        return sl_errorf(err, "not comparable: %s has %lld rows, %s has %lld", a->dir,
                         (long long)a->rows, b->dir, (long long)b->rows);
    /* What the model sees and what it is asked to do; absent in both is equal. */
    static const char *const keys[] = {
        "input_dataset",  "max_length",  "bos",   "chat_template", "system", "prompt_dataset",
        "max_new_tokens", "temperature", "top_k", "top_p",         "seed",   "stop"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        const cJSON *va = cJSON_GetObjectItemCaseSensitive(a->attrs, keys[i]);
        const cJSON *vb = cJSON_GetObjectItemCaseSensitive(b->attrs, keys[i]);
        if ((va || vb) && !(va && vb && cJSON_Compare(va, vb, 1)))
            return refuse(err, a, b, keys[i], va, vb);
    }
    /* The same input files, unchanged: path, size, modification time and rows of each. */
    const cJSON *ia = cJSON_GetObjectItemCaseSensitive(a->manifest, "inputs");
    const cJSON *ib = cJSON_GetObjectItemCaseSensitive(b->manifest, "inputs");
    int na = cJSON_GetArraySize(ia), nb = cJSON_GetArraySize(ib);
    if (na != nb)
        return sl_errorf(err, "not comparable: %s read %d input files, %s read %d", a->dir, na,
                         b->dir, nb);
    for (int i = 0; i < na; i++) {
        const cJSON *sa = cJSON_GetArrayItem(ia, i), *sb = cJSON_GetArrayItem(ib, i);
        static const char *const fields[] = {"path", "rows", "size", "mtime_ns"};
        for (size_t k = 0; k < sizeof fields / sizeof *fields; k++) {
            const cJSON *va = cJSON_GetObjectItemCaseSensitive(sa, fields[k]);
            const cJSON *vb = cJSON_GetObjectItemCaseSensitive(sb, fields[k]);
            if (!(va && vb && cJSON_Compare(va, vb, 1))) {
                char what[160];
                snprintf(what, sizeof what, "input file %d's %s", i + 1, fields[k]);
                return refuse(err, a, b, what, va, vb);
            }
        }
    }
    /* Classification: the same labels in the same order. */
    const cJSON *ma = cJSON_GetObjectItemCaseSensitive(a->manifest, "model");
    const cJSON *mb = cJSON_GetObjectItemCaseSensitive(b->manifest, "model");
    const cJSON *la = cJSON_GetObjectItemCaseSensitive(ma, "labels");
    const cJSON *lb = cJSON_GetObjectItemCaseSensitive(mb, "labels");
    if ((la || lb) && !(la && lb && cJSON_Compare(la, lb, 1)))
        return refuse(err, a, b, "the classification labels", la, lb);
    return 0;
}

/* ---- reading rows ------------------------------------------------------------------------- */

typedef struct {
    hid_t d;
    int64_t cols; /* 0 for a 1-D dataset */
} dset_t;

/* Opens /name in both files and checks they hold `rows` rows of the same width. */
static int dset_open_pair(const side_t *a, const side_t *b, const char *name, dset_t *da,
                          dset_t *db, sl_error_t *err)
{
    const side_t *s[2] = {a, b};
    dset_t *d[2] = {da, db};
    da->d = db->d = -1;
    for (int k = 0; k < 2; k++) {
        d[k]->d = H5Dopen2(s[k]->f, name, H5P_DEFAULT);
        if (d[k]->d < 0)
            return sl_errorf(err, "%s: dataset /%s is missing", s[k]->path, name);
        hid_t sp = H5Dget_space(d[k]->d);
        hsize_t dims[2] = {0, 0};
        int nd = H5Sget_simple_extent_ndims(sp);
        if (nd >= 1 && nd <= 2)
            H5Sget_simple_extent_dims(sp, dims, NULL);
        H5Sclose(sp);
        if (nd < 1 || nd > 2 || (int64_t)dims[0] != s[k]->rows)
            return sl_errorf(err, "%s: /%s is not [%lld] or [%lld, cols]", s[k]->path, name,
                             (long long)s[k]->rows, (long long)s[k]->rows);
        d[k]->cols = nd == 2 ? (int64_t)dims[1] : 0;
    }
    if (da->cols != db->cols)
        return sl_errorf(err, "not comparable: /%s is %lld wide in %s, %lld in %s", name,
                         (long long)da->cols, a->dir, (long long)db->cols, b->dir);
    return 0;
}

static void dset_close(dset_t *d)
{
    if (d->d >= 0)
        H5Dclose(d->d);
    d->d = -1;
}

/* Rows [row0, row0 + n) of a dataset into buf, converted to `mtype`. */
static int read_rows(const side_t *s, const char *name, const dset_t *d, hid_t mtype, int64_t row0,
                     int64_t n, void *buf, sl_error_t *err)
{
    hid_t fs = H5Dget_space(d->d);
    hsize_t start[2] = {(hsize_t)row0, 0}, count[2] = {(hsize_t)n, (hsize_t)d->cols};
    int nd = d->cols > 0 ? 2 : 1;
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    hid_t ms = H5Screate_simple(nd, count, NULL);
    herr_t rc = H5Dread(d->d, mtype, ms, fs, H5P_DEFAULT, buf);
    H5Sclose(ms);
    H5Sclose(fs);
    if (rc < 0)
        return sl_errorf(err, "%s: /%s: cannot read rows %lld..%lld", s->path, name,
                         (long long)row0, (long long)(row0 + n - 1));
    return 0;
}

/* Walks the failed rows of both sides in step with the rows: failed(row) for rising rows. */
typedef struct {
    const side_t *a, *b;
    int64_t ia, ib;
} skip_t;

static int row_failed(skip_t *k, int64_t row)
{
    while (k->ia < k->a->nfailed && k->a->failed[k->ia] < row)
        k->ia++;
    while (k->ib < k->b->nfailed && k->b->failed[k->ib] < row)
        k->ib++;
    return (k->ia < k->a->nfailed && k->a->failed[k->ia] == row) ||
           (k->ib < k->b->nfailed && k->b->failed[k->ib] == row);
}

static int64_t block_rows(int64_t width, int64_t rows)
{
    int64_t n = BLOCK_ELEMS / (width > 0 ? width : 1);
    if (n < 1)
        n = 1;
    return n < rows ? n : rows;
}

/* ---- metrics ------------------------------------------------------------------------------- */

typedef struct {
    char name[64];
    int64_t cols;
    int cosine; /* 1 when cols >= 2 */
    sl_rows_diff_t d;
} float_stats_t;

void sl_rows_diff_init(sl_rows_diff_t *d)
{
    memset(d, 0, sizeof *d);
    d->cos_min = INFINITY;
    d->cos_min_row = -1;
}

void sl_compare_rows(const float *a, const float *b, int64_t n, int64_t w, int64_t row0,
                     sl_rows_diff_t *st)
{
    for (int64_t i = 0; i < n; i++) {
        const float *p = a + i * w, *q = b + i * w;
        double dot = 0, pp = 0, qq = 0, mx = 0, sum = 0;
        int finite = 1;
        for (int64_t j = 0; j < w; j++) {
            double x = p[j], y = q[j];
            finite &= isfinite(x) && isfinite(y);
            dot += x * y;
            pp += x * x;
            qq += y * y;
            double dd = fabs(x - y);
            mx = dd > mx ? dd : mx;
            sum += dd;
        }
        if (!finite) {
            st->nonfinite++;
            continue;
        }
        st->rows++;
        st->elems += w;
        st->sum_abs += sum;
        if (mx > st->max_abs)
            st->max_abs = mx;
        /* two zero vectors are the same vector; one zero vector shares no direction */
        double c = pp > 0 && qq > 0 ? dot / sqrt(pp * qq) : (pp == qq ? 1.0 : 0.0);
        st->cos_sum += c;
        if (c < st->cos_min) {
            st->cos_min = c;
            st->cos_min_row = row0 + i;
        }
    }
}

static int compare_float(const side_t *a, const side_t *b, const char *name, float_stats_t *st,
                         sl_error_t *err)
{
    dset_t da, db;
    memset(st, 0, sizeof *st);
    snprintf(st->name, sizeof st->name, "%s", name);
    int rc = dset_open_pair(a, b, name, &da, &db, err);
    if (rc == 0) {
        int64_t w = da.cols > 0 ? da.cols : 1, nb = block_rows(w, a->rows);
        st->cols = w;
        st->cosine = w >= 2;
        sl_rows_diff_init(&st->d);
        float *xa = sl_xmalloc((size_t)(nb * w) * sizeof(float));
        float *xb = sl_xmalloc((size_t)(nb * w) * sizeof(float));
        skip_t sk = {a, b, 0, 0};
        for (int64_t r0 = 0; r0 < a->rows && rc == 0; r0 += nb) {
            int64_t n = a->rows - r0 < nb ? a->rows - r0 : nb;
            if (read_rows(a, name, &da, H5T_NATIVE_FLOAT, r0, n, xa, err) != 0 ||
                read_rows(b, name, &db, H5T_NATIVE_FLOAT, r0, n, xb, err) != 0) {
                rc = -1;
                break;
            }
            for (int64_t i = 0; i < n; i++)
                if (!row_failed(&sk, r0 + i))
                    sl_compare_rows(xa + i * w, xb + i * w, 1, w, r0 + i, &st->d);
        }
        free(xa);
        free(xb);
    }
    dset_close(&da);
    dset_close(&db);
    return rc;
}

/* Reads a whole 1-D int32 or float column of both sides (rows of one value: small). */
static int read_column(const side_t *a, const side_t *b, const char *name, hid_t mtype, size_t elem,
                       void **va, void **vb, sl_error_t *err)
{
    dset_t da, db;
    *va = *vb = NULL;
    int rc = dset_open_pair(a, b, name, &da, &db, err);
    if (rc == 0 && da.cols != 0)
        rc = sl_errorf(err, "%s: /%s is not one value per row", a->path, name);
    if (rc == 0) {
        *va = sl_xmalloc((size_t)a->rows * elem + 1);
        *vb = sl_xmalloc((size_t)a->rows * elem + 1);
        rc = read_rows(a, name, &da, mtype, 0, a->rows, *va, err) != 0 ||
                     read_rows(b, name, &db, mtype, 0, a->rows, *vb, err) != 0
                 ? -1
                 : 0;
    }
    dset_close(&da);
    dset_close(&db);
    if (rc != 0) {
        free(*va);
        free(*vb);
        *va = *vb = NULL;
    }
    return rc;
}

typedef struct {
    int64_t rows, agree;
} agree_t;

static int compare_labels(const side_t *a, const side_t *b, agree_t *ag, sl_error_t *err)
{
    int32_t *la, *lb;
    memset(ag, 0, sizeof *ag);
    if (read_column(a, b, "labels", H5T_NATIVE_INT32, sizeof(int32_t), (void **)&la, (void **)&lb,
                    err) != 0)
        return -1;
    skip_t sk = {a, b, 0, 0};
    for (int64_t r = 0; r < a->rows; r++) {
        if (row_failed(&sk, r))
            continue;
        ag->rows++;
        ag->agree += la[r] == lb[r];
    }
    free(la);
    free(lb);
    return 0;
}

typedef struct {
    int64_t rows, tokens;
    double sum_a, sum_b; /* summed log-probabilities over every compared row */
    double ppl_a, ppl_b, ratio;
    int per_token; /* both have /token_logprobs */
    int64_t tok_compared;
    double tok_sum_abs, tok_max_abs;
    double row_sum_abs; /* sum over rows of |delta mean_logprob| */
} score_t;

static int compare_score(const side_t *a, const side_t *b, score_t *sc, sl_error_t *err)
{
    memset(sc, 0, sizeof *sc);
    float *sa = NULL, *sb = NULL;
    int32_t *na = NULL, *nb = NULL;
    int rc = read_column(a, b, "sum_logprob", H5T_NATIVE_FLOAT, sizeof(float), (void **)&sa,
                         (void **)&sb, err);
    if (rc == 0)
        rc = read_column(a, b, "n_tokens", H5T_NATIVE_INT32, sizeof(int32_t), (void **)&na,
                         (void **)&nb, err);
    skip_t sk = {a, b, 0, 0};
    for (int64_t r = 0; rc == 0 && r < a->rows; r++) {
        if (row_failed(&sk, r))
            continue;
        /* The same text scored by the same tokenizer gives the same count; a different count
         * means the tokens themselves differ, and a per-token comparison means nothing. */
        if (na[r] != nb[r]) {
            rc = sl_errorf(err,
                           "not comparable: row %lld is %d scored tokens in %s, %d in %s "
                           "(another tokenizer?)",
                           (long long)r, na[r], a->dir, nb[r], b->dir);
            break;
        }
        if (na[r] <= 0 || !isfinite(sa[r]) || !isfinite(sb[r]))
            continue;
        sc->rows++;
        sc->tokens += na[r];
        sc->sum_a += sa[r];
        sc->sum_b += sb[r];
        sc->row_sum_abs += fabs((double)sa[r] - (double)sb[r]) / na[r];
    }
    free(sa);
    free(sb);
    free(na);
    free(nb);
    if (rc != 0)
        return -1;
    sc->ppl_a = sc->tokens ? exp(-sc->sum_a / (double)sc->tokens) : NAN;
    sc->ppl_b = sc->tokens ? exp(-sc->sum_b / (double)sc->tokens) : NAN;
    sc->ratio = sc->ppl_b / sc->ppl_a;

    /* Per token, where both jobs kept the log-probabilities (--token-logprobs). */
    if (!out_dtype(a, "token_logprobs") || !out_dtype(b, "token_logprobs"))
        return 0;
    dset_t da, db, ia, ib;
    ia.d = ib.d = -1;
    rc = dset_open_pair(a, b, "token_logprobs", &da, &db, err);
    int ids = rc == 0 && out_dtype(a, "token_ids") && out_dtype(b, "token_ids");
    if (ids)
        rc = dset_open_pair(a, b, "token_ids", &ia, &ib, err);
    if (rc == 0) {
        sc->per_token = 1;
        int64_t w = da.cols > 0 ? da.cols : 1, n0 = block_rows(w, a->rows);
        float *xa = sl_xmalloc((size_t)(n0 * w) * sizeof(float));
        float *xb = sl_xmalloc((size_t)(n0 * w) * sizeof(float));
        int32_t *ta = ids ? sl_xmalloc((size_t)(n0 * w) * sizeof(int32_t)) : NULL;
        int32_t *tb = ids ? sl_xmalloc((size_t)(n0 * w) * sizeof(int32_t)) : NULL;
        skip_t sk2 = {a, b, 0, 0};
        for (int64_t r0 = 0; r0 < a->rows && rc == 0; r0 += n0) {
            int64_t n = a->rows - r0 < n0 ? a->rows - r0 : n0;
            if (read_rows(a, "token_logprobs", &da, H5T_NATIVE_FLOAT, r0, n, xa, err) != 0 ||
                read_rows(b, "token_logprobs", &db, H5T_NATIVE_FLOAT, r0, n, xb, err) != 0 ||
                (ids && (read_rows(a, "token_ids", &ia, H5T_NATIVE_INT32, r0, n, ta, err) != 0 ||
                         read_rows(b, "token_ids", &ib, H5T_NATIVE_INT32, r0, n, tb, err) != 0))) {
                rc = -1;
                break;
            }
            for (int64_t i = 0; i < n && rc == 0; i++) {
                if (row_failed(&sk2, r0 + i))
                    continue;
                if (ids && memcmp(ta + i * w, tb + i * w, (size_t)w * sizeof(int32_t))) {
                    rc = sl_errorf(err,
                                   "not comparable: row %lld's token ids differ between %s "
                                   "and %s (another tokenizer?)",
                                   (long long)(r0 + i), a->dir, b->dir);
                    break;
                }
                for (int64_t j = 0; j < w; j++) {
                    double x = xa[i * w + j], y = xb[i * w + j];
                    if (!isfinite(x) || !isfinite(y)) /* NaN: not a scored token */
                        continue;
                    double dd = fabs(x - y);
                    sc->tok_compared++;
                    sc->tok_sum_abs += dd;
                    sc->tok_max_abs = dd > sc->tok_max_abs ? dd : sc->tok_max_abs;
                }
            }
        }
        free(xa);
        free(xb);
        free(ta);
        free(tb);
    }
    dset_close(&da);
    dset_close(&db);
    dset_close(&ia);
    dset_close(&ib);
    return rc;
}

typedef struct {
    int64_t rows, tokens_equal, text_equal;
    double prefix_sum; /* sum over rows of the share of tokens before the first difference */
} gen_t;

static int compare_generate(const side_t *a, const side_t *b, gen_t *g, sl_error_t *err)
{
    memset(g, 0, sizeof *g);
    int32_t *na = NULL, *nb = NULL, *pa = NULL, *pb = NULL;
    int rc = read_column(a, b, "n_tokens", H5T_NATIVE_INT32, sizeof(int32_t), (void **)&na,
                         (void **)&nb, err);
    if (rc == 0)
        rc = read_column(a, b, "n_prompt_tokens", H5T_NATIVE_INT32, sizeof(int32_t), (void **)&pa,
                         (void **)&pb, err);
    dset_t da, db, xa_d, xb_d;
    da.d = db.d = xa_d.d = xb_d.d = -1;
    if (rc == 0)
        rc = dset_open_pair(a, b, "tokens", &da, &db, err);
    /* /text's width in memory is the job's --text-bytes, which may differ between the jobs:
     * variable-length strings are read whatever it is. */
    if (rc == 0)
        rc = dset_open_pair(a, b, "text", &xa_d, &xb_d, err);
    if (rc == 0) {
        int64_t w = da.cols > 0 ? da.cols : 1, n0 = block_rows(w, a->rows);
        int32_t *ta = sl_xmalloc((size_t)(n0 * w) * sizeof(int32_t));
        int32_t *tb = sl_xmalloc((size_t)(n0 * w) * sizeof(int32_t));
        char **sa = sl_xcalloc((size_t)n0, sizeof(char *));
        char **sb = sl_xcalloc((size_t)n0, sizeof(char *));
        hid_t st = sl_h5_vlen_str_type();
        skip_t sk = {a, b, 0, 0};
        for (int64_t r0 = 0; r0 < a->rows && rc == 0; r0 += n0) {
            int64_t n = a->rows - r0 < n0 ? a->rows - r0 : n0;
            if (read_rows(a, "tokens", &da, H5T_NATIVE_INT32, r0, n, ta, err) != 0 ||
                read_rows(b, "tokens", &db, H5T_NATIVE_INT32, r0, n, tb, err) != 0 ||
                read_rows(a, "text", &xa_d, st, r0, n, sa, err) != 0 ||
                read_rows(b, "text", &xb_d, st, r0, n, sb, err) != 0) {
                rc = -1;
                break;
            }
            for (int64_t i = 0; i < n; i++) {
                int64_t r = r0 + i;
                if (row_failed(&sk, r) || na[r] < 0 || nb[r] < 0)
                    continue;
                if (pa[r] != pb[r]) {
                    rc = sl_errorf(err,
                                   "not comparable: row %lld's prompt is %d tokens in %s, %d "
                                   "in %s (another tokenizer?)",
                                   (long long)r, pa[r], a->dir, pb[r], b->dir);
                    break;
                }
                const int32_t *p = ta + i * w, *q = tb + i * w;
                int64_t m = na[r] > nb[r] ? na[r] : nb[r], same = 0;
                int64_t lim = na[r] < nb[r] ? na[r] : nb[r];
                while (same < lim && p[same] == q[same])
                    same++;
                g->rows++;
                g->tokens_equal += na[r] == nb[r] && same == m;
                g->prefix_sum += m > 0 ? (double)same / (double)m : 1.0;
                g->text_equal += !strcmp(sa[i] ? sa[i] : "", sb[i] ? sb[i] : "");
            }
            for (int64_t i = 0; i < n; i++) {
                H5free_memory(sa[i]);
                H5free_memory(sb[i]);
                sa[i] = sb[i] = NULL;
            }
        }
        H5Tclose(st);
        free(ta);
        free(tb);
        free(sa);
        free(sb);
    }
    dset_close(&da);
    dset_close(&db);
    dset_close(&xa_d);
    dset_close(&xb_d);
    free(na);
    free(nb);
    free(pa);
    free(pb);
    return rc;
}

/* ---- thresholds and report ---------------------------------------------------------------- */

typedef struct {
    const char *option;
    double limit, measured;
    int passed;
    char what[96];
} gate_t;

static int parse_num(const char *opt, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "shardline: error: compare: %s '%s': a number in %g .. %g\n", opt, s, lo,
                hi);
        return -1;
    }
    *out = v;
    return 0;
}

static cJSON *num(double v)
{
    /* cJSON would print NaN as null anyway; say so explicitly */
    return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull();
}

static cJSON *side_json(const side_t *s)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "dir", s->dir);
    static const char *const keys[] = {"model", "model_type", "precision", "task"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(s->attrs, keys[i]);
        if (v)
            cJSON_AddItemToObject(o, keys[i], cJSON_Duplicate(v, 1));
    }
    cJSON_AddNumberToObject(o, "rows", (double)s->rows);
    cJSON_AddNumberToObject(o, "failed_rows", (double)s->nfailed);
    return o;
}

static const char *attr_str(const side_t *s, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(s->attrs, key);
    return cJSON_IsString(v) ? v->valuestring : "?";
}

int sl_compare_main(int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                         {"min-cosine", required_argument, NULL, 'c'},
                                         {"max-ppl-ratio", required_argument, NULL, 'p'},
                                         {"min-agreement", required_argument, NULL, 'a'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int json = 0, c;
    double min_cos = NAN, max_ppl = NAN, min_agree = NAN;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = 1; break;
        case 'c':
            if (parse_num("--min-cosine", optarg, -1, 1, &min_cos) != 0)
                return SL_EXIT_USAGE;
            break;
        case 'p':
            if (parse_num("--max-ppl-ratio", optarg, 1, 1e300, &max_ppl) != 0)
                return SL_EXIT_USAGE;
            break;
        case 'a':
            if (parse_num("--min-agreement", optarg, 0, 1, &min_agree) != 0)
                return SL_EXIT_USAGE;
            break;
        case 'h': usage(stdout); return SL_EXIT_OK;
        default:
            fprintf(stderr, "shardline: error: compare: unknown option or missing value: %s\n\n",
                    argv[optind - 1]);
            usage(stderr);
            return SL_EXIT_USAGE;
        }
    }
    if (argc - optind != 2) {
        fprintf(stderr, "shardline: error: compare: expected two output directories, got %d\n\n",
                argc - optind);
        usage(stderr);
        return SL_EXIT_USAGE;
    }
    sl_h5_quiet();
    sl_error_t err = {{0}};
    side_t a, b;
    memset(&b, 0, sizeof b);
    b.f = -1;
    int status = SL_EXIT_INPUT;
    if (side_open(&a, argv[optind], &err) != 0 || side_open(&b, argv[optind + 1], &err) != 0 ||
        check_comparable(&a, &b, &err) != 0)
        goto fail;

    const char *task = a.task;
    int is_score = !strcmp(task, "score"), is_gen = !strcmp(task, "generate");
    int is_cls = !strcmp(task, "classify");
    /* A threshold that cannot apply to this task is a mistake on the command line. */
    const char *misuse = NULL;
    if (!isnan(max_ppl) && !is_score)
        misuse = "--max-ppl-ratio: only for score outputs";
    else if (!isnan(min_agree) && !is_cls && !is_gen)
        misuse = "--min-agreement: only for classify and generate outputs";
    else if (!isnan(min_cos) && (is_score || is_gen))
        misuse = "--min-cosine: only for outputs of float vectors (embed, classify, predict)";
    if (misuse) {
        fprintf(stderr, "shardline: error: compare: %s (these are %s outputs)\n", misuse, task);
        status = SL_EXIT_USAGE;
        goto done;
    }

    float_stats_t fl[SL_MAX_OUTPUTS];
    int nfl = 0;
    agree_t ag = {0, 0};
    score_t sc;
    gen_t gen;
    memset(&sc, 0, sizeof sc);
    memset(&gen, 0, sizeof gen);
    if (!is_score && !is_gen) {
        const cJSON *o;
        cJSON_ArrayForEach(o, a.outputs)
        {
            const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, "name");
            const char *dt = cJSON_IsString(n) ? out_dtype(&a, n->valuestring) : NULL;
            if (!dt || (strcmp(dt, "f32") && strcmp(dt, "f16")) || nfl >= SL_MAX_OUTPUTS)
                continue;
            if (compare_float(&a, &b, n->valuestring, &fl[nfl], &err) != 0)
                goto fail;
            nfl++;
        }
        if (is_cls && compare_labels(&a, &b, &ag, &err) != 0)
            goto fail;
    } else if (is_score) {
        if (compare_score(&a, &b, &sc, &err) != 0)
            goto fail;
    } else if (compare_generate(&a, &b, &gen, &err) != 0) {
        goto fail;
    }

    /* Thresholds. */
    gate_t gates[SL_MAX_OUTPUTS + 2];
    int ngates = 0;
    if (!isnan(min_cos)) {
        for (int i = 0; i < nfl; i++) {
            if (!fl[i].cosine)
                continue;
            gate_t *g = &gates[ngates++];
            *g = (gate_t){"--min-cosine", min_cos, fl[i].d.cos_min, 0, ""};
            g->passed = fl[i].d.rows > 0 && fl[i].d.nonfinite == 0 && fl[i].d.cos_min >= min_cos;
            snprintf(g->what, sizeof g->what, "%.80s min cosine", fl[i].name);
        }
        if (ngates == 0) {
            fprintf(stderr,
                    "shardline: error: compare: --min-cosine: no output of %s is a "
                    "vector of two or more values\n",
                    a.path);
            status = SL_EXIT_USAGE;
            goto done;
        }
    }
    if (!isnan(max_ppl)) {
        gate_t *g = &gates[ngates++];
        *g = (gate_t){"--max-ppl-ratio", max_ppl, sc.ratio, 0, "perplexity ratio B/A"};
        g->passed = isfinite(sc.ratio) && sc.ratio <= max_ppl && sc.ratio >= 1.0 / max_ppl;
    }
    if (!isnan(min_agree)) {
        gate_t *g = &gates[ngates++];
        double v = is_cls ? (ag.rows ? (double)ag.agree / (double)ag.rows : NAN)
                          : (gen.rows ? (double)gen.tokens_equal / (double)gen.rows : NAN);
        *g = (gate_t){"--min-agreement", min_agree, v, 0, ""};
        snprintf(g->what, sizeof g->what, "%s",
                 is_cls ? "label agreement" : "rows with identical tokens");
        g->passed = isfinite(v) && v >= min_agree;
    }
    int passed = 1;
    for (int i = 0; i < ngates; i++)
        passed &= gates[i].passed;

    int64_t compared = is_score ? sc.rows
                       : is_gen ? gen.rows
                       : is_cls ? ag.rows
                       : nfl    ? fl[0].d.rows
                                : 0;
    if (compared == 0 && a.rows > 0) {
        sl_errorf(&err,
                  "no row of %s has a result in both jobs (failed rows: %lld in A, %lld in B)",
                  a.path, (long long)a.nfailed, (long long)b.nfailed);
        goto fail;
    }
    if (json) {
        cJSON *root = cJSON_CreateObject();
        cJSON_AddItemToObject(root, "a", side_json(&a));
        cJSON_AddItemToObject(root, "b", side_json(&b));
        cJSON_AddStringToObject(root, "task", task);
        cJSON_AddNumberToObject(root, "rows", (double)a.rows);
        cJSON_AddNumberToObject(root, "rows_compared", (double)compared);
        cJSON *outs = cJSON_AddObjectToObject(root, "outputs");
        for (int i = 0; i < nfl; i++) {
            cJSON *o = cJSON_AddObjectToObject(outs, fl[i].name);
            cJSON_AddNumberToObject(o, "cols", (double)fl[i].cols);
            cJSON_AddNumberToObject(o, "rows", (double)fl[i].d.rows);
            cJSON_AddItemToObject(o, "cosine_min", fl[i].cosine ? num(fl[i].d.cos_min) : num(NAN));
            cJSON_AddItemToObject(o, "cosine_mean",
                                  fl[i].cosine && fl[i].d.rows
                                      ? num(fl[i].d.cos_sum / (double)fl[i].d.rows)
                                      : num(NAN));
            cJSON_AddNumberToObject(o, "cosine_min_row", (double)fl[i].d.cos_min_row);
            cJSON_AddItemToObject(o, "max_abs_diff", num(fl[i].d.max_abs));
            cJSON_AddItemToObject(
                o, "mean_abs_diff",
                num(fl[i].d.elems ? fl[i].d.sum_abs / (double)fl[i].d.elems : NAN));
            cJSON_AddNumberToObject(o, "nonfinite_rows", (double)fl[i].d.nonfinite);
        }
        if (is_cls) {
            cJSON *o = cJSON_AddObjectToObject(outs, "labels");
            cJSON_AddNumberToObject(o, "rows", (double)ag.rows);
            cJSON_AddNumberToObject(o, "agree", (double)ag.agree);
            cJSON_AddItemToObject(o, "agreement",
                                  num(ag.rows ? (double)ag.agree / (double)ag.rows : NAN));
        }
        if (is_score) {
            cJSON *o = cJSON_AddObjectToObject(root, "score");
            cJSON_AddNumberToObject(o, "tokens", (double)sc.tokens);
            cJSON_AddItemToObject(o, "perplexity_a", num(sc.ppl_a));
            cJSON_AddItemToObject(o, "perplexity_b", num(sc.ppl_b));
            cJSON_AddItemToObject(o, "perplexity_ratio", num(sc.ratio));
            cJSON_AddItemToObject(o, "mean_abs_delta_mean_logprob",
                                  num(sc.rows ? sc.row_sum_abs / (double)sc.rows : NAN));
            if (sc.per_token) {
                cJSON_AddNumberToObject(o, "tokens_compared", (double)sc.tok_compared);
                cJSON_AddItemToObject(
                    o, "mean_abs_delta_logprob",
                    num(sc.tok_compared ? sc.tok_sum_abs / (double)sc.tok_compared : NAN));
                cJSON_AddItemToObject(o, "max_abs_delta_logprob", num(sc.tok_max_abs));
            }
        }
        if (is_gen) {
            cJSON *o = cJSON_AddObjectToObject(root, "generate");
            double n = (double)gen.rows;
            cJSON_AddItemToObject(o, "token_exact_match",
                                  num(gen.rows ? gen.tokens_equal / n : NAN));
            cJSON_AddItemToObject(o, "text_exact_match", num(gen.rows ? gen.text_equal / n : NAN));
            cJSON_AddItemToObject(o, "mean_prefix_share", num(gen.rows ? gen.prefix_sum / n : NAN));
        }
        cJSON *th = cJSON_AddArrayToObject(root, "thresholds");
        for (int i = 0; i < ngates; i++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "option", gates[i].option);
            cJSON_AddStringToObject(o, "what", gates[i].what);
            cJSON_AddNumberToObject(o, "limit", gates[i].limit);
            cJSON_AddItemToObject(o, "measured", num(gates[i].measured));
            cJSON_AddBoolToObject(o, "passed", gates[i].passed);
            cJSON_AddItemToArray(th, o);
        }
        cJSON_AddBoolToObject(root, "passed", passed);
        char *text = cJSON_Print(root);
        printf("%s\n", text);
        free(text);
        cJSON_Delete(root);
    } else {
        printf("A: %s (%s %s, precision %s)\nB: %s (%s %s, precision %s)\n", a.dir,
               attr_str(&a, "model_type"), task, attr_str(&a, "precision"), b.dir,
               attr_str(&b, "model_type"), task, attr_str(&b, "precision"));
        printf("rows: %lld, compared %lld (failed in A: %lld, in B: %lld)\n\n", (long long)a.rows,
               (long long)compared, (long long)a.nfailed, (long long)b.nfailed);
        for (int i = 0; i < nfl; i++) {
            const float_stats_t *s = &fl[i];
            if (s->cosine)
                printf("%-14s cosine min %.6f (row %lld), mean %.6f\n", s->name, s->d.cos_min,
                       (long long)s->d.cos_min_row,
                       s->d.rows ? s->d.cos_sum / (double)s->d.rows : NAN);
            printf("%-14s |A - B| max %.4g, mean %.4g\n", s->name, s->d.max_abs,
                   s->d.elems ? s->d.sum_abs / (double)s->d.elems : NAN);
            if (s->d.nonfinite)
                printf("%-14s %lld rows hold NaN/Inf (not compared)\n", s->name,
                       (long long)s->d.nonfinite);
        }
        if (is_cls)
            printf("%-14s agreement %.4f (%lld of %lld rows)\n", "labels",
                   ag.rows ? (double)ag.agree / (double)ag.rows : NAN, (long long)ag.agree,
                   (long long)ag.rows);
        if (is_score) {
            printf("perplexity     A %.4f, B %.4f, ratio B/A %.5f (%lld tokens)\n", sc.ppl_a,
                   sc.ppl_b, sc.ratio, (long long)sc.tokens);
            if (sc.per_token)
                printf("log-prob       |delta| per token mean %.4g, max %.4g (%lld tokens)\n",
                       sc.tok_compared ? sc.tok_sum_abs / (double)sc.tok_compared : NAN,
                       sc.tok_max_abs, (long long)sc.tok_compared);
            else
                printf("log-prob       |delta mean per row| mean %.4g (per token: run both jobs "
                       "with --token-logprobs)\n",
                       sc.rows ? sc.row_sum_abs / (double)sc.rows : NAN);
        }
        if (is_gen) {
            double n = gen.rows ? (double)gen.rows : NAN;
            printf("tokens         identical in %.4f of rows (%lld of %lld); mean share before "
                   "the first difference %.4f\n",
                   gen.tokens_equal / n, (long long)gen.tokens_equal, (long long)gen.rows,
                   gen.prefix_sum / n);
            printf("text           identical in %.4f of rows (%lld of %lld)\n", gen.text_equal / n,
                   (long long)gen.text_equal, (long long)gen.rows);
        }
        if (ngates)
            printf("\n");
        for (int i = 0; i < ngates; i++)
            printf("%s %s %.10g: %s %.6g\n", gates[i].passed ? "ok  " : "FAIL", gates[i].option,
                   gates[i].limit, gates[i].what, gates[i].measured);
    }
    status = passed ? SL_EXIT_OK : SL_COMPARE_EXIT_BELOW;
    goto done;
fail:
    fprintf(stderr, "shardline: error: %s\n", err.msg);
    status = SL_EXIT_INPUT;
done:
    side_close(&a);
    side_close(&b);
    return status;
}
