/*
 * batching.c — the helpers the task families share (see batching.h).
 */
#include "runner/batching.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/sl_fs.h"
#include "common/sl_size.h"
#include "models/calib.h"

int64_t sl_bytes3(int64_t a, int64_t b, int64_t c)
{
    int64_t r;
    if (sl_size_mul(a, b, &r) != 0 || sl_size_mul(r, c, &r) != 0)
        return INT64_MAX;
    return r;
}

int64_t sl_batch_largest_unit(const sl_job_t *job, const sl_inputs_t *in)
{
    int64_t most = 1;
    for (int i = 0; i < in->n; i++) {
        int64_t r = in->shards[i].rows < job->unit_rows ? in->shards[i].rows : job->unit_rows;
        most = r > most ? r : most;
    }
    return most;
}

int64_t sl_batch_read_rows(const sl_job_t *job, const sl_inputs_t *in, int64_t want)
{
    int64_t most = sl_batch_largest_unit(job, in);
    return want < most ? want : most;
}

/* ---- token rows ------------------------------------------------------------------------------ */

sl_token_rows_t *sl_token_rows_new(int64_t rows)
{
    sl_token_rows_t *p = sl_xcalloc(1, sizeof *p);
    p->len = sl_xcalloc((size_t)rows + 1, sizeof *p->len);
    p->plen = sl_xcalloc((size_t)rows + 1, sizeof *p->plen);
    p->off = sl_xcalloc((size_t)rows + 1, sizeof *p->off);
    p->fail = sl_xcalloc((size_t)rows + 1, sizeof *p->fail);
    return p;
}

static void clear_fail(sl_token_rows_t *p)
{
    for (int64_t i = 0; i < p->rows; i++) {
        free(p->fail[i]);
        p->fail[i] = NULL;
    }
}

void sl_token_rows_free(sl_token_rows_t *p)
{
    if (!p)
        return;
    clear_fail(p);
    free(p->ids);
    free(p->types);
    free(p->len);
    free(p->plen);
    free(p->off);
    free(p->fail);
    free(p);
}

void sl_token_rows_reset(sl_token_rows_t *p, const sl_inputs_t *in, int shard, int64_t row0,
                         int64_t rows)
{
    clear_fail(p);
    p->rows = rows;
    p->truncated = 0;
    p->global_row0 = in->shards[shard].first_row + row0;
    memset(p->plen, 0, (size_t)rows * sizeof *p->plen);
}

void sl_token_rows_reserve(sl_token_rows_t *p, size_t n)
{
    if (n <= p->cap)
        return;
    size_t cap = p->cap ? p->cap : 4096;
    while (cap < n)
        cap *= 2;
    p->ids = sl_xrealloc(p->ids, cap * sizeof *p->ids);
    p->types = sl_xrealloc(p->types, cap * sizeof *p->types);
    p->cap = cap;
}

void sl_token_rows_fail(sl_token_rows_t *p, int64_t i, const char *fmt, long long a, long long b)
{
    char buf[96];
    snprintf(buf, sizeof buf, fmt, a, b);
    p->fail[i] = sl_xstrdup(buf);
    p->len[i] = 0;
}

int sl_token_rows_read_ids(sl_token_rows_t *p, sl_reader_t *r, const sl_inputs_t *in, int shard,
                           int64_t row0, int64_t rows, int max_length, int64_t vocab,
                           sl_error_t *err)
{
    int64_t L = in->cols;
    int32_t *ids = sl_xmalloc((size_t)sl_bytes3(rows, L, sizeof *ids) + sizeof *ids);
    int32_t *types = sl_xmalloc((size_t)sl_bytes3(rows, L, sizeof *types) + sizeof *types);
    int rc = sl_reader_read_tokens(r, in, shard, row0, rows, ids, p->len, types, err);
    size_t used = 0;
    for (int64_t i = 0; rc == 0 && i < rows; i++) {
        p->off[i] = (int64_t)used;
        int64_t n = p->len[i];
        if (n < 1 || n > L) {
            sl_token_rows_fail(p, i, "length %lld outside 1..%lld", (long long)n, (long long)L);
            continue;
        }
        if (n > max_length) {
            sl_token_rows_fail(p, i, "%lld tokens exceed the maximum length %lld", (long long)n,
                               (long long)max_length);
            continue;
        }
        const int32_t *row = ids + i * L;
        int64_t bad = -1;
        for (int64_t j = 0; j < n && bad < 0; j++)
            if (row[j] < 0 || row[j] >= vocab || types[i * L + j] < 0)
                bad = j;
        if (bad >= 0) {
            sl_token_rows_fail(p, i, "token id %lld at position %lld is out of the vocabulary",
                               (long long)row[bad], (long long)bad);
            continue;
        }
        sl_token_rows_reserve(p, used + (size_t)n);
        memcpy(p->ids + used, row, (size_t)n * sizeof *row);
        memcpy(p->types + used, types + i * L, (size_t)n * sizeof *types);
        used += (size_t)n;
    }
    free(ids);
    free(types);
    return rc;
}

/* ---- batches --------------------------------------------------------------------------------- */

static int by_length(const void *a, const void *b, void *ctx)
{
    const int32_t *len = ctx;
    int64_t i = *(const int64_t *)a, j = *(const int64_t *)b;
    int32_t li = len[i], lj = len[j];
    if (li != lj)
        return li < lj ? -1 : 1;
    return i < j ? -1 : (i > j); /* stable: equal lengths keep input order */
}

void sl_order_by_length(int64_t *order, int64_t n, const int32_t *len)
{
    qsort_r(order, (size_t)n, sizeof *order, by_length, (void *)len);
}

void sl_grow(void **buf, size_t *cap, size_t n, size_t elem)
{
    if (n > *cap) {
        *buf = sl_xrealloc(*buf, n * elem);
        *cap = n;
    }
}

void sl_batch_hist_add(sl_batch_hist_t *h, int64_t rows, int64_t real, int64_t padded)
{
    int k = 0;
    while (k + 1 < SL_BATCH_HIST_BINS && (rows >> (k + 1)) > 0)
        k++;
    h->batch_rows[k]++;
    if (padded > 0) {
        int64_t pad = padded - real, bin = 10 * pad / padded;
        h->padding[bin > 9 ? 9 : bin]++;
        h->real_tokens += real;
        h->padded_tokens += padded;
    }
}

int sl_batch_check_memory(const sl_job_t *job, const sl_inputs_t *in, const sl_task_memory_t *m,
                          int64_t avail, sl_error_t *err)
{
    const int64_t unit = sl_batch_largest_unit(job, in);
    char opt[256];
    int64_t total = 0;
    /* The I/O thread's read-ahead slots. */
    int64_t b = sl_bytes3(job->prefetch, m->read_rows, m->read_row_bytes);
    snprintf(opt, sizeof opt, "--prefetch %d with --%s %lld", job->prefetch, m->read_opt,
             (long long)m->read_opt_value);
    if (sl_size_check_memory(b, avail, opt, "the read-ahead buffers", err) != 0)
        return -1;
    sl_size_add(total, b, &total);
    /* A unit's output rows, held until written (one unit computing, one being written). */
    int64_t width = 0;
    for (int i = 0; i < m->outs->n; i++)
        sl_size_add(width, (int64_t)sl_out_row_bytes(&m->outs->spec[i]), &width);
    b = sl_bytes3(2 * unit, width, 1);
    if (sl_size_check_memory(b, avail, m->out_opt, "a unit's output buffers", err) != 0)
        return -1;
    sl_size_add(total, b, &total);
    /* The compute thread's batch. */
    b = sl_bytes3(m->batch_rows, m->batch_row_bytes, 1);
    snprintf(opt, sizeof opt, "--batch-size %lld", (long long)job->batch_size);
    if (sl_size_check_memory(b, avail, opt, "the batch buffers", err) != 0)
        return -1;
    sl_size_add(total, b, &total);
    snprintf(opt, sizeof opt, "--batch-size %lld, --unit-rows %lld and --prefetch %d",
             (long long)job->batch_size, (long long)job->unit_rows, job->prefetch);
    return sl_size_check_memory(total, avail, opt,
                                "the batch, read-ahead and unit buffers together", err);
}

char *sl_batch_calibration_path(const char *model, const char *dir)
{
    struct stat sb;
    if (stat(model, &sb) != 0 || S_ISDIR(sb.st_mode))
        return sl_path_join(dir ? dir : model, SL_CALIB_FILE);
    /* a file model: FILE.shardline-calibration.safetensors, by default beside FILE */
    const char *slash = strrchr(model, '/');
    const char *base = dir ? (slash ? slash + 1 : model) : model;
    char *name = sl_xmalloc(strlen(base) + sizeof SL_CALIB_FILE + 1);
    sprintf(name, "%s.%s", base, SL_CALIB_FILE);
    if (!dir)
        return name;
    char *path = sl_path_join(dir, name);
    free(name);
    return path;
}

int sl_batch_calibrate(const sl_job_t *job, sl_error_t *err)
{
    if (strcmp(job->precision, "w8a8"))
        return 0;
    if (job->calibration && !strcmp(job->calibration, "dynamic")) {
        sl_calib_apply_dynamic();
        return 0;
    }
    char *def = sl_batch_calibration_path(job->model, NULL);
    int rc = sl_calib_apply(job->calibration ? job->calibration : def, job->model, err);
    free(def);
    return rc;
}

double sl_batch_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
