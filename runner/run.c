/*
 * run.c — `shardline run`, on every rank:
 *
 *   1. parse the job; build the process grid (TP x DP);
 *   2. rank 0 validates the inputs and the model, plans the units and keeps the part files
 *      that still match (resume); the plan is broadcast, so every rank sees the same list;
 *   3. each rank creates its backend and loads its slice of the model;
 *   4. the DP group leaders take units from the shared queue; inside a unit the I/O thread
 *      reads batches ahead while this thread computes; a finished unit is handed back to the
 *      I/O thread to be committed as a part file;
 *   5. between batches each TP group agrees whether to stop (signal); at the end rank 0
 *      writes predictions.h5 (only when every unit is committed), manifest.json, report.json.
 *
 * Every failure that user input can cause is detected on rank 0 (or agreed by all ranks)
 * before any collective that could hang, and reported once.
 */
#include "runner/run.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "common/sl_fault.h"
#include "common/sl_hash.h"
#include "common/sl_json.h"
#include "common/sl_profile.h"
#include "common/sl_size.h"
#include "jobs/h5util.h"
#include "jobs/input.h"
#include "jobs/output.h"
#include "jobs/spec.h"
#include "models/calib.h"
#include "models/formats/fingerprint.h"
#include "partition/comm.h"
#include "partition/grid.h"
#include "partition/units.h"
#include "runner/pipeline.h"
#include "runner/report.h"
#include "runner/signals.h"
#include "runner/task.h"

/* ---- log lines: text, or one JSON object per line (--log-format json) --------------------------
 */

/* A JSON event: {"event": name, "time": seconds since 1970, ...}. */
static cJSON *ev_new(const char *name)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "event", name);
    cJSON_AddNumberToObject(o, "time", (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec);
    return o;
}

/* Prints the event as one line (one call: the I/O thread's lines do not interleave with it)
 * and frees it. */
static void ev_emit(cJSON *o)
{
    char *text = cJSON_PrintUnformatted(o);
    fprintf(stderr, "%s\n", text);
    fflush(stderr);
    free(text);
    cJSON_Delete(o);
}

static void print_error(const char *msg)
{
    if (sl_log_json()) {
        cJSON *o = ev_new("error");
        cJSON_AddStringToObject(o, "message", msg);
        ev_emit(o);
    } else {
        fprintf(stderr, "shardline: error: %s\n", msg);
    }
}

/* ---- agreement helpers --------------------------------------------------------------------- */

/* Every rank passes its own status (0 ok, else an SL_EXIT_* code) and message; all ranks get
 * the status of the lowest failing rank, and that rank prints its message. */
static int agree(MPI_Comm comm, int status, const sl_error_t *err)
{
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    int mine = status ? rank : size, first = size;
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm);
    if (first == size)
        return 0;
    if (rank == first)
        print_error(err->msg);
    int code = status;
    MPI_Bcast(&code, 1, MPI_INT, first, comm);
    return code;
}

/* Fatal bad input discovered mid-run by one rank (a corrupt block in a shard): say what, and
 * take every rank down so that nobody waits forever in a collective. */
static _Noreturn void abort_input(const sl_error_t *err)
{
    print_error(err->msg);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, SL_EXIT_INPUT);
    exit(SL_EXIT_INPUT);
}

/* ---- the plan (rank 0) ----------------------------------------------------------------------- */

typedef struct {
    sl_inputs_t in;
    sl_task_plan_t task;
    uint64_t model_fp, job_hash;
    sl_unit_t *units;
    int64_t nunits;
    unsigned char *done0; /* [nunits] committed before this run started (rank 0 only) */
    int64_t nuncommitted; /* units of the whole job not committed at the start */
    int64_t *pending;     /* unit indices this run computes: the uncommitted ones of its share */
    int64_t npending;
    int64_t pending_rows;
} plan_t;

/* Everything that changes the values in a part file: a part made under another hash is
 * computed again. (Batch size and rank count change only the rounding, not the values.) */
static uint64_t job_hash(uint64_t model_fp, const sl_job_t *job, const sl_task_plan_t *t,
                         int64_t cols)
{
    uint64_t h = sl_hash_u64(SL_HASH_INIT, model_fp);
    h = sl_hash_str(h, t->dataset);
    h = sl_hash_str(h, job->precision);
    if (!strcmp(job->precision, "w8a8")) /* another calibration file, other scales */
        h = sl_hash_str(h, job->calibration ? job->calibration : "");
    h = sl_hash_str(h, sl_task_name(t->task));
    h = sl_hash_u64(h, (uint64_t)t->max_length);
    h = sl_hash_str(h, t->params);
    for (int i = 0; i < t->outs.n; i++) {
        h = sl_hash_str(h, t->outs.spec[i].name);
        h = sl_hash_u64(h, (uint64_t)t->outs.spec[i].file_dtype);
    }
    return sl_hash_u64(h, (uint64_t)cols);
}

/* The canonical spelling of a path (resolved from here), or the path itself when it cannot be
 * resolved (malloc'd). */
static char *resolved(const char *path)
{
    char buf[4096];
    return sl_xstrdup(realpath(path, buf) ? buf : path);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Whether two spellings of a path name the same file. */
static int same_path(const char *a, const char *b)
{
    char *ra = resolved(a), *rb = resolved(b);
    int same = !strcmp(ra, rb);
    free(ra);
    free(rb);
    return same;
}

/* The output directory must be new, empty, or this job's own: a directory whose manifest
 * names another model, task or inputs is refused unless --restart (the earlier job's files
 * would be replaced), and a non-empty directory without a manifest is refused always (it is
 * not a shardline output). The same job with changed files (a retrained model at the same
 * path, a grown input glob, a rewritten shard) is this job: its stale units are recomputed. */
static int check_output_dir(const sl_job_t *job, const plan_t *p, sl_error_t *err)
{
    int exists = 0;
    char foreign[256], path[4096];
    if (sl_output_check(job->output, &exists, foreign, sizeof foreign, err) != 0)
        return -1;
    if (!exists)
        return 0;
    snprintf(path, sizeof path, "%s/manifest.json", job->output);
    if (access(path, F_OK) != 0) {
        if (foreign[0])
            return sl_errorf(err,
                             "--output %s: holds '%s' but no manifest.json, so it is not a "
                             "shardline output directory; give a new or empty directory",
                             job->output, foreign);
        return 0; /* only what an earlier start of shardline left (parts/, an sbatch script) */
    }
    cJSON *man = sl_json_read(path, 1u << 30, 0, err);
    if (!man)
        return sl_error_prefix(err, "--output %s: cannot read its manifest", job->output);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(man, "model");
    const cJSON *opts = cJSON_GetObjectItemCaseSensitive(man, "options");
    const cJSON *mpath = cJSON_GetObjectItemCaseSensitive(model, "path");
    const cJSON *mfp = cJSON_GetObjectItemCaseSensitive(model, "fingerprint");
    const cJSON *mtask = cJSON_GetObjectItemCaseSensitive(model, "task");
    const cJSON *globs = cJSON_GetObjectItemCaseSensitive(opts, "inputs");
    const cJSON *inputs = cJSON_GetObjectItemCaseSensitive(man, "inputs");
    char fp[17];
    snprintf(fp, sizeof fp, "%016llx", (unsigned long long)p->model_fp);
    int same_model = (cJSON_IsString(mpath) && same_path(mpath->valuestring, job->model)) ||
                     (cJSON_IsString(mfp) && !strcmp(mfp->valuestring, fp));
    int same_task =
        cJSON_IsString(mtask) && !strcmp(mtask->valuestring, sl_task_name(p->task.task));
    /* Inputs: the same globs (a scheduled job over a growing glob), or, failing that, at
     * least one input file in common. */
    int same_inputs = cJSON_IsArray(globs) && cJSON_GetArraySize(globs) == job->n_inputs;
    for (int i = 0; same_inputs && i < job->n_inputs; i++) {
        const cJSON *g = cJSON_GetArrayItem(globs, i);
        same_inputs = cJSON_IsString(g) && !strcmp(g->valuestring, job->inputs[i]);
    }
    if (!same_inputs) {
        /* each path resolved once, then looked up: jobs may have many thousands of shards */
        char **mine = sl_xcalloc((size_t)p->in.n + 1, sizeof *mine);
        for (int i = 0; i < p->in.n; i++)
            mine[i] = resolved(p->in.shards[i].path);
        qsort(mine, (size_t)p->in.n, sizeof *mine, cmp_str);
        const cJSON *it;
        cJSON_ArrayForEach(it, inputs)
        {
            const cJSON *ip = cJSON_GetObjectItemCaseSensitive(it, "path");
            if (same_inputs || !cJSON_IsString(ip))
                continue;
            char *r = resolved(ip->valuestring);
            same_inputs = bsearch(&r, mine, (size_t)p->in.n, sizeof *mine, cmp_str) != NULL;
            free(r);
        }
        for (int i = 0; i < p->in.n; i++)
            free(mine[i]);
        free(mine);
    }
    int rc = 0;
    if (!(same_model && same_task && same_inputs) && !job->restart) {
        const cJSON *first = cJSON_GetArrayItem(inputs, 0);
        const cJSON *fpath = cJSON_GetObjectItemCaseSensitive(first, "path");
        char what[64];
        snprintf(what, sizeof what, "%s%s%s%s%s", same_model ? "" : "model",
                 !same_model && !same_task ? ", " : "", same_task ? "" : "task",
                 (!same_model || !same_task) && !same_inputs ? ", " : "",
                 same_inputs ? "" : "inputs");
        rc = sl_errorf(err,
                       "--output %s: holds another job's output (another %s): its model %s, "
                       "task %s, inputs %s%s; this job: model %s, task %s, inputs %s%s. Give "
                       "another --output, or --restart to replace it",
                       job->output, what, cJSON_IsString(mpath) ? mpath->valuestring : "?",
                       cJSON_IsString(mtask) ? mtask->valuestring : "?",
                       cJSON_IsString(fpath) ? fpath->valuestring : "(none)",
                       cJSON_GetArraySize(inputs) > 1 ? " ..." : "", job->model,
                       sl_task_name(p->task.task), p->in.n ? p->in.shards[0].path : "(none)",
                       p->in.n > 1 ? " ..." : "");
    }
    cJSON_Delete(man);
    return rc;
}

static int plan_make(plan_t *p, const sl_job_t *job, sl_error_t *err)
{
    if (sl_task_plan(job, &p->task, err) != 0)
        return -1;
    const sl_task_plan_t *t = &p->task;
    if (sl_inputs_scan(&p->in, job->inputs, job->n_inputs, t->dataset, t->want_tokens, err) != 0)
        return -1;
    if (!t->want_tokens && p->in.cols != t->d_in)
        return sl_errorf(err, "%s: dataset '%s' has %lld features but the model %s expects %lld",
                         p->in.shards[0].path, t->dataset, (long long)p->in.cols, job->model,
                         (long long)t->d_in);
    if (t->prompt_dataset) {
        /* The prompts: a text dataset beside the continuations, row for row, in every file. */
        sl_inputs_t pin;
        memset(&pin, 0, sizeof pin);
        int rc = sl_inputs_scan(&pin, job->inputs, job->n_inputs, t->prompt_dataset, 1, err);
        if (rc == 0 && pin.kind != SL_INPUT_TEXT)
            rc = sl_errorf(err, "%s: --prompt-dataset '%s' must hold text", pin.shards[0].path,
                           t->prompt_dataset);
        if (rc == 0 && p->in.kind != SL_INPUT_TEXT)
            rc = sl_errorf(err, "%s: --prompt-dataset needs text in '%s' too", p->in.shards[0].path,
                           t->dataset);
        for (int i = 0; rc == 0 && i < pin.n; i++)
            if (pin.shards[i].rows != p->in.shards[i].rows)
                rc = sl_errorf(err, "%s: dataset '%s' has %lld rows but '%s' has %lld",
                               pin.shards[i].path, t->prompt_dataset, (long long)pin.shards[i].rows,
                               t->dataset, (long long)p->in.shards[i].rows);
        sl_inputs_free(&pin);
        if (rc != 0)
            return -1;
    }
    if (sl_model_fingerprint(job->model, &p->model_fp, err) != 0)
        return -1;
    p->job_hash = job_hash(p->model_fp, job, t, p->in.cols);
    /* Nothing is created yet: a start that fails leaves no trace (see sl_run_main). */
    if (check_output_dir(job, p, err) != 0)
        return -1;
    int64_t *rows = sl_xcalloc((size_t)p->in.n + 1, sizeof *rows);
    for (int i = 0; i < p->in.n; i++)
        rows[i] = p->in.shards[i].rows;
    p->nunits = sl_units_plan(rows, p->in.n, job->unit_rows, &p->units);
    free(rows);
    p->pending = sl_xcalloc((size_t)p->nunits + 1, sizeof *p->pending);
    p->done0 = sl_xcalloc((size_t)p->nunits + 1, 1);
    for (int64_t i = 0; i < p->nunits; i++) {
        const sl_unit_t *u = &p->units[i];
        sl_part_meta_t m = {&p->in.shards[u->shard], u->row0,     u->nrows,
                            &p->task.outs,           p->model_fp, p->job_hash};
        char *rel = sl_part_relpath(m.shard, u->row0, u->nrows);
        int keep = !job->restart && sl_part_matches(job->output, rel, &m);
        free(rel);
        p->done0[i] = (unsigned char)keep;
        p->nuncommitted += !keep;
        /* A job array shares the units out by index: deterministic and disjoint. */
        if (!keep && i % job->array_tasks == job->array_task) {
            p->pending[p->npending++] = i;
            p->pending_rows += u->nrows;
        }
    }
    return 0;
}

/* Rank 0's plan, copied to every rank. */
static void plan_bcast(plan_t *p, const sl_grid_t *g)
{
    sl_inputs_bcast(&p->in, g->world, 0);
    int64_t head[6] = {
        p->nunits,      p->npending, p->pending_rows, (int64_t)p->model_fp, (int64_t)p->job_hash,
        p->nuncommitted};
    MPI_Bcast(head, 6, MPI_INT64_T, 0, g->world);
    if (g->world_rank != 0) {
        p->nunits = head[0];
        p->npending = head[1];
        p->pending_rows = head[2];
        p->model_fp = (uint64_t)head[3];
        p->job_hash = (uint64_t)head[4];
        p->nuncommitted = head[5];
        p->units = sl_xcalloc((size_t)p->nunits + 1, sizeof *p->units);
        p->pending = sl_xcalloc((size_t)p->npending + 1, sizeof *p->pending);
    }
    MPI_Bcast(p->units, (int)(p->nunits * (int64_t)sizeof *p->units), MPI_BYTE, 0, g->world);
    MPI_Bcast(p->pending, (int)p->npending, MPI_INT64_T, 0, g->world);
}

static void plan_free(plan_t *p)
{
    sl_inputs_free(&p->in);
    sl_task_plan_free(&p->task);
    free(p->units);
    free(p->pending);
    free(p->done0);
}

/* ---- the compute loop ------------------------------------------------------------------------ */

typedef struct {
    double compute_s, wait_s, read_s, write_s, comm_s, gemm_s, gemm_flops;
    double w8a8_blocks, w8a8_own; /* sl_backend_w8a8_stats */
    double load_s, tokenize_s, peak_rss_bytes;
    int64_t rows, failed, units, truncated, tokens, prompt_tokens, generated_tokens;
} stats_t;

/* One issued read: which pending unit (index into the claimed list) and which batch. */
typedef struct {
    int64_t unit;  /* index into plan->units */
    int64_t batch; /* batch number inside the unit */
} issued_t;

typedef struct {
    const sl_job_t *job;
    const plan_t *plan;
    const sl_grid_t *grid;
    sl_queue_t *queue;
    sl_io_t *io;
    sl_task_t *task;
    sl_comm_t *comm;
    int64_t read_rows; /* rows per I/O request: a batch, or a whole unit for token inputs */
    /* read cursor */
    int64_t read_seq, comp_seq;
    int64_t cur_unit; /* unit being read (-1: claim the next) */
    int64_t cur_batch;
    int exhausted;
    int stop;
    issued_t *issued; /* [nslots] */
    /* unit being computed: one f32 buffer per output, [unit rows, width] */
    void *bufs[SL_MAX_OUTPUTS];
    sl_row_error_t *errs;
    int nerr, cap_err;
    stats_t st;
    int64_t *committed; /* unit indices committed by this rank (leaders) */
    int64_t ncommitted;
    double t_start, t_last, interval; /* progress lines: compute start, last line, period */
    sl_report_rec_t *rec;             /* unit times for report.json's timeline */
    double unit_t0;
} loop_t;

static int64_t unit_batches(const loop_t *L, int64_t unit)
{
    int64_t n = L->plan->units[unit].nrows, b = L->read_rows;
    return (n + b - 1) / b;
}

/* Keeps every free slot busy with the next batch to read, claiming units as needed. Called at
 * the same points on every rank of a TP group, so the (collective) claims line up. */
static void refill(loop_t *L)
{
    int nslots = sl_io_nslots(L->io);
    while (!L->exhausted && L->read_seq - L->comp_seq < nslots) {
        if (L->cur_unit < 0) {
            int64_t k = sl_queue_next(L->queue, L->stop);
            if (k < 0) {
                L->exhausted = 1;
                break;
            }
            L->cur_unit = L->plan->pending[k];
            L->cur_batch = 0;
        }
        const sl_unit_t *u = &L->plan->units[L->cur_unit];
        int64_t r0 = L->cur_batch * L->read_rows;
        int64_t rows = u->nrows - r0 < L->read_rows ? u->nrows - r0 : L->read_rows;
        int slot = (int)(L->read_seq % nslots);
        L->issued[slot] = (issued_t){L->cur_unit, L->cur_batch};
        sl_io_read(L->io, slot, u->shard, u->row0 + r0, rows);
        L->read_seq++;
        if (++L->cur_batch == unit_batches(L, L->cur_unit))
            L->cur_unit = -1;
    }
}

/* sl_row_error_fn: a failed row of the unit being computed. */
static void add_row_error(void *ctx, int64_t row, const char *reason)
{
    loop_t *L = ctx;
    if (L->nerr == L->cap_err) {
        L->cap_err = L->cap_err ? 2 * L->cap_err : 16;
        L->errs = sl_xrealloc(L->errs, (size_t)L->cap_err * sizeof *L->errs);
    }
    L->errs[L->nerr].row = row;
    snprintf(L->errs[L->nerr].reason, sizeof L->errs[L->nerr].reason, "%s", reason);
    L->nerr++;
}

static double now(void) { return MPI_Wtime(); }

static void compute_batch(loop_t *L, sl_io_slot_t *s, const issued_t *is)
{
    const sl_unit_t *u = &L->plan->units[is->unit];
    const sl_outputs_t *outs = &L->plan->task.outs;
    if (is->batch == 0) {
        for (int i = 0; i < outs->n; i++)
            L->bufs[i] = sl_xmalloc((size_t)u->nrows * sl_out_row_bytes(&outs->spec[i]));
        L->nerr = 0;
        L->unit_t0 = sl_report_now(L->rec);
    }
    double t0 = now(), c0 = sl_comm_seconds(L->comm);
    sl_task_compute(L->task, L->comm, s->payload, s->rows, L->bufs, is->batch * L->read_rows,
                    add_row_error, L);
    double comm = sl_comm_seconds(L->comm) - c0;
    L->st.compute_s += now() - t0 - comm;
    L->st.comm_s += comm;
    L->st.rows += s->rows;
}

static void free_bufs(loop_t *L)
{
    for (int i = 0; i < SL_MAX_OUTPUTS; i++) {
        free(L->bufs[i]);
        L->bufs[i] = NULL;
    }
}

static void finish_unit(loop_t *L, int64_t unit)
{
    const sl_unit_t *u = &L->plan->units[unit];
    L->st.units++;
    L->st.failed += L->nerr;
    if (L->grid->tp_rank == 0 && sl_log_json()) {
        const sl_shard_t *sh = &L->plan->in.shards[u->shard];
        for (int i = 0; i < L->nerr; i++) {
            cJSON *o = ev_new("row_error");
            cJSON_AddNumberToObject(o, "rank", L->grid->world_rank);
            cJSON_AddNumberToObject(o, "row", (double)(sh->first_row + u->row0 + L->errs[i].row));
            cJSON_AddStringToObject(o, "shard", sh->path);
            cJSON_AddNumberToObject(o, "shard_row", (double)(u->row0 + L->errs[i].row));
            cJSON_AddStringToObject(o, "reason", L->errs[i].reason);
            ev_emit(o);
        }
    }
    if (L->grid->tp_rank == 0) {
        /* Only the group leader writes: every TP rank holds the same full output. */
        sl_part_meta_t m = {&L->plan->in.shards[u->shard], u->row0,           u->nrows,
                            &L->plan->task.outs,           L->plan->model_fp, L->plan->job_hash};
        sl_row_error_t *errs = L->nerr ? sl_xmalloc((size_t)L->nerr * sizeof *errs) : NULL;
        if (L->nerr)
            memcpy(errs, L->errs, (size_t)L->nerr * sizeof *errs);
        sl_io_commit(L->io, sl_part_relpath(m.shard, u->row0, u->nrows), &m, L->bufs, errs,
                     L->nerr);
        L->committed[L->ncommitted++] = unit;
        sl_report_unit(L->rec, L->unit_t0, sl_report_now(L->rec), u->nrows);
        sl_queue_add_done(L->queue, u->nrows);
    } else {
        free_bufs(L);
    }
    memset(L->bufs, 0, sizeof L->bufs);
}

/* Rank 0's progress line, at most every L->interval seconds (SL_PROGRESS_SECONDS, default
 * 10): rows computed by every group (also inside a unit: a generate unit can take hours) and
 * rows committed. */
static void progress(loop_t *L)
{
    if (L->grid->world_rank != 0 || L->job->quiet)
        return;
    double t = now();
    if (t - L->t_last < L->interval)
        return;
    L->t_last = t;
    int64_t computed = sl_queue_computed(L->queue), done = sl_queue_done(L->queue);
    int64_t total = L->plan->pending_rows;
    computed = computed < total ? computed : total;
    double rate = (double)computed / (t - L->t_start > 1e-9 ? t - L->t_start : 1e-9);
    double eta = rate > 0 ? (double)(total - computed) / rate : 0.0;
    if (sl_log_json()) {
        cJSON *o = ev_new("progress");
        cJSON_AddNumberToObject(o, "rows_computed", (double)computed);
        cJSON_AddNumberToObject(o, "rows_to_compute", (double)total);
        cJSON_AddNumberToObject(o, "rows_committed", (double)done);
        cJSON_AddNumberToObject(o, "rows_per_second", rate);
        cJSON_AddNumberToObject(o, "eta_seconds", eta);
        ev_emit(o);
        return;
    }
    fprintf(stderr,
            "shardline: progress %lld/%lld rows computed (%.1f%%), %lld committed, "
            "%.1f rows/s, ETA %.0fs\n",
            (long long)computed, (long long)total,
            total ? 100.0 * (double)computed / (double)total : 100.0, (long long)done, rate, eta);
}

/* sl_rows_done_fn: rows finished inside the current compute call. */
static void rows_done(void *ctx, int64_t rows)
{
    loop_t *L = ctx;
    if (L->grid->tp_rank == 0) /* each group counts once */
        sl_queue_add_computed(L->queue, rows);
    progress(L);
}

/* Between batches: does the TP group stop? A rank that saw a signal tells everyone through
 * the queue window; the group leader looks there; the group agrees by all-reduce, so all its
 * ranks leave the loop after the same batch. */
static int agree_stop(loop_t *L, int *posted)
{
    int local = sl_signals_received() > 0;
    if (local && !*posted) {
        sl_queue_post_stop(L->queue);
        *posted = 1;
    }
    if (L->grid->tp_rank == 0 && !local)
        local = sl_queue_stop_posted(L->queue);
    int any = local;
    if (L->grid->tp_size > 1)
        MPI_Allreduce(&local, &any, 1, MPI_INT, MPI_MAX, L->grid->tp);
    return any;
}

/* sl_io_commit_fn (on the I/O thread): a part file is in place. */
static void on_commit(void *ctx, const char *relpath, const sl_part_meta_t *m, int nerr,
                      double seconds)
{
    const loop_t *L = ctx;
    cJSON *o = ev_new("unit_committed");
    cJSON_AddNumberToObject(o, "rank", L->grid->world_rank);
    cJSON_AddStringToObject(o, "shard", m->shard->path);
    cJSON_AddNumberToObject(o, "first_row", (double)(m->shard->first_row + m->row0));
    cJSON_AddNumberToObject(o, "shard_row", (double)m->row0);
    cJSON_AddNumberToObject(o, "rows", (double)m->nrows);
    cJSON_AddNumberToObject(o, "failed_rows", nerr);
    cJSON_AddStringToObject(o, "part", relpath);
    cJSON_AddNumberToObject(o, "write_seconds", seconds);
    ev_emit(o);
}

static void compute_loop(loop_t *L)
{
    int nslots = sl_io_nslots(L->io);
    L->issued = sl_xcalloc((size_t)nslots, sizeof *L->issued);
    L->committed = sl_xcalloc((size_t)L->plan->npending + 1, sizeof *L->committed);
    L->cur_unit = -1;
    int posted = 0;
    const char *iv = getenv("SL_PROGRESS_SECONDS");
    L->interval = iv && atof(iv) >= 0 ? atof(iv) : 10.0;
    L->t_start = L->t_last = now();
    sl_task_set_progress(L->task, rows_done, L);
    refill(L);
    while (L->comp_seq < L->read_seq) {
        int slot = (int)(L->comp_seq % nslots);
        issued_t is = L->issued[slot];
        double w0 = now();
        sl_io_slot_t *s = sl_io_wait(L->io, slot);
        L->st.wait_s += now() - w0;
        if (s->state < 0)
            abort_input(&s->err);
        compute_batch(L, s, &is);
        L->comp_seq++;
        if (is.batch + 1 == unit_batches(L, is.unit))
            finish_unit(L, is.unit);
        sl_error_t ioerr;
        if (sl_io_failed(L->io, &ioerr))
            sl_fatal(__FILE__, __LINE__, "commit", "%s", ioerr.msg);
        if (agree_stop(L, &posted)) {
            L->stop = 1;
            break;
        }
        progress(L);
        refill(L);
    }
    /* A unit cut short by a stop is not committed: it is computed again on resume. */
    free_bufs(L);
    free(L->issued);
    free(L->errs);
}

/* ---- manifest and report (rank 0) ------------------------------------------------------------ */

static int write_json(const char *dir, const char *name, cJSON *root, sl_error_t *err)
{
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    char *text = cJSON_Print(root);
    errno = 0;
    FILE *f = fopen(tmp, "w");
    int ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    if (f)
        ok = (fclose(f) == 0) && ok;
    if (ok && sl_fault_hit(SL_FAULT_MANIFEST))
        ok = 0;
    int e = errno ? errno : EIO;
    free(text);
    if (!ok || rename(tmp, path) != 0) {
        e = ok ? errno : e;
        unlink(tmp);
        return sl_errorf(err, "%s: cannot write: %s%s", path, strerror(e),
                         sl_fault_note(SL_FAULT_MANIFEST));
    }
    return 0;
}

/* What predictions.h5 says about itself (its root attributes; also kept in the manifest for
 * `shardline merge`): the model, the task, every option that changes the values, the inputs
 * and the version. */
static cJSON *describe_json(const sl_job_t *job, const plan_t *p)
{
    char buf[4096];
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "model", realpath(job->model, buf) ? buf : job->model);
    snprintf(buf, sizeof buf, "%016llx", (unsigned long long)p->model_fp);
    cJSON_AddStringToObject(d, "model_fingerprint", buf);
    cJSON_AddStringToObject(d, "model_type", sl_task_model_name(p->task.model));
    cJSON_AddStringToObject(d, "task", sl_task_name(p->task.task));
    cJSON_AddStringToObject(d, "precision", job->precision);
    cJSON_AddStringToObject(d, "output_dtype", job->output_dtype);
    cJSON_AddStringToObject(d, "input_dataset", p->task.dataset);
    if (p->task.want_tokens)
        cJSON_AddNumberToObject(d, "max_length", p->task.max_length);
    if (p->task.model == SL_MODEL_LLAMA) {
        cJSON_AddStringToObject(d, "bos", job->bos);
        cJSON_AddStringToObject(d, "chat_template", job->chat_template);
        if (job->system)
            cJSON_AddStringToObject(d, "system", job->system);
        if (p->task.prompt_dataset)
            cJSON_AddStringToObject(d, "prompt_dataset", p->task.prompt_dataset);
    }
    if (p->task.task == SL_TASK_GENERATE) {
        cJSON_AddNumberToObject(d, "max_new_tokens", job->max_new_tokens);
        cJSON_AddNumberToObject(d, "temperature", job->temperature);
        cJSON_AddNumberToObject(d, "top_k", job->top_k);
        cJSON_AddNumberToObject(d, "top_p", job->top_p);
        cJSON_AddNumberToObject(d, "seed", (double)job->seed);
        cJSON *stops = cJSON_AddArrayToObject(d, "stop");
        for (int i = 0; i < job->n_stops; i++)
            cJSON_AddItemToArray(stops, cJSON_CreateString(job->stops[i]));
    }
    cJSON_AddStringToObject(d, "task_settings", p->task.params);
    cJSON *inputs = cJSON_AddArrayToObject(d, "inputs");
    for (int i = 0; i < p->in.n; i++)
        cJSON_AddItemToArray(inputs, cJSON_CreateString(p->in.shards[i].path));
    return d;
}

static cJSON *manifest_json(const sl_job_t *job, const plan_t *p, const unsigned char *done,
                            int complete)
{
    char hex[17];
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "shardline_version", SL_VERSION);
    cJSON_AddBoolToObject(root, "complete", complete);
    cJSON_AddNumberToObject(root, "written_at", (double)time(NULL));
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)p->job_hash);
    cJSON_AddStringToObject(root, "job_hash", hex);
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "path", job->model);
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)p->model_fp);
    cJSON_AddStringToObject(model, "fingerprint", hex);
    cJSON_AddStringToObject(model, "model_type", sl_task_model_name(p->task.model));
    cJSON_AddStringToObject(model, "task", sl_task_name(p->task.task));
    cJSON *outputs = cJSON_AddArrayToObject(model, "outputs");
    for (int i = 0; i < p->task.outs.n; i++) {
        const sl_out_spec_t *o = &p->task.outs.spec[i];
        cJSON *oj = cJSON_CreateObject();
        cJSON_AddStringToObject(oj, "name", o->name);
        cJSON_AddNumberToObject(oj, "cols", (double)o->cols);
        cJSON_AddStringToObject(oj, "dtype", sl_out_dtype_name(o->file_dtype));
        cJSON_AddItemToArray(outputs, oj);
    }
    cJSON *opts = cJSON_AddObjectToObject(root, "options");
    cJSON *globs = cJSON_AddArrayToObject(opts, "inputs"); /* as given: globs */
    for (int i = 0; i < job->n_inputs; i++)
        cJSON_AddItemToArray(globs, cJSON_CreateString(job->inputs[i]));
    cJSON_AddStringToObject(opts, "input_dataset", p->task.dataset);
    cJSON_AddNumberToObject(opts, "array_task", job->array_task);
    cJSON_AddNumberToObject(opts, "array_tasks", job->array_tasks);
    if (p->task.outs.labels) {
        cJSON *labels = cJSON_AddArrayToObject(model, "labels");
        for (int i = 0; i < p->task.outs.n_labels; i++)
            cJSON_AddItemToArray(labels, cJSON_CreateString(p->task.outs.labels[i]));
    }
    if (p->task.want_tokens)
        cJSON_AddNumberToObject(opts, "max_length", p->task.max_length);
    cJSON_AddNumberToObject(opts, "unit_rows", (double)job->unit_rows);
    cJSON_AddNumberToObject(opts, "batch_size", (double)job->batch_size);
    cJSON_AddNumberToObject(opts, "tp", job->tp);
    cJSON_AddStringToObject(opts, "precision", job->precision);
    cJSON *inputs = cJSON_AddArrayToObject(root, "inputs");
    for (int i = 0; i < p->in.n; i++) {
        const sl_shard_t *s = &p->in.shards[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "path", s->path);
        cJSON_AddNumberToObject(o, "first_row", (double)s->first_row);
        cJSON_AddNumberToObject(o, "rows", (double)s->rows);
        cJSON_AddNumberToObject(o, "size", (double)s->size);
        /* A string: nanoseconds since 1970 do not fit a double's 53 bits, and readers (merge,
         * status) must compare them exactly with the part files' attributes. */
        char ns[32];
        snprintf(ns, sizeof ns, "%lld", (long long)s->mtime_ns);
        cJSON_AddStringToObject(o, "mtime_ns", ns);
        cJSON_AddItemToArray(inputs, o);
    }
    cJSON_AddItemToObject(root, "attributes", describe_json(job, p));
    cJSON *units = cJSON_AddArrayToObject(root, "units");
    for (int64_t i = 0; i < p->nunits; i++) {
        const sl_unit_t *u = &p->units[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "shard", u->shard);
        cJSON_AddNumberToObject(o, "first_row", (double)u->row0);
        cJSON_AddNumberToObject(o, "rows", (double)u->nrows);
        char *rel = sl_part_relpath(&p->in.shards[u->shard], u->row0, u->nrows);
        cJSON_AddStringToObject(o, "part", rel);
        free(rel);
        cJSON_AddStringToObject(o, "status", done && done[i] ? "committed" : "pending");
        cJSON_AddItemToArray(units, o);
    }
    return root;
}

/* The per-phase seconds of one rank (or the slowest rank, for the job). */
static void add_times(cJSON *o, const stats_t *s)
{
    cJSON_AddNumberToObject(o, "load_seconds", s->load_s);
    if (s->tokenize_s > 0) /* reading and tokenizing text, on the I/O thread */
        cJSON_AddNumberToObject(o, "tokenize_seconds", s->tokenize_s);
    cJSON_AddNumberToObject(o, "peak_memory_bytes", s->peak_rss_bytes);
    cJSON_AddNumberToObject(o, "read_seconds", s->read_s);
    cJSON_AddNumberToObject(o, "read_wait_seconds", s->wait_s);
    cJSON_AddNumberToObject(o, "compute_seconds", s->compute_s);
    cJSON_AddNumberToObject(o, "comm_seconds", s->comm_s);
    cJSON_AddNumberToObject(o, "write_seconds", s->write_s);
    if (s->gemm_flops > 0) { /* CPU backend only: see sl_backend_gemm_stats */
        cJSON_AddNumberToObject(o, "gemm_seconds", s->gemm_s);
        cJSON_AddNumberToObject(o, "gemm_gflop", s->gemm_flops * 1e-9);
    }
}

/* ---- main ------------------------------------------------------------------------------------ */

static sl_backend_t *make_backend(const sl_job_t *job, const sl_grid_t *g, sl_error_t *err)
{
    int ndev = sl_cuda_device_count();
    int use_cuda = !strcmp(job->device, "cuda") || (!strcmp(job->device, "auto") && ndev > 0);
    if (use_cuda && ndev == 0) {
        sl_errorf(err, "--device cuda: no CUDA device is visible%s",
                  sl_cuda_compiled() ? "" : " (and this build has no CUDA backend)");
        return NULL;
    }
    if (!strcmp(job->device, "auto") && g->world_rank == 0 && !job->quiet)
        sl_log_info("--device auto: %s", use_cuda ? "a GPU is visible, using the CUDA backend"
                                                  : "no GPU is visible, using the CPU backend");
    if (use_cuda)
        return sl_backend_create(SL_BACKEND_CUDA, g->local_rank % ndev, 0, err);
    return sl_backend_create(SL_BACKEND_CPU, 0, sl_grid_cpu_threads(g), err);
}

/* Rank 0 prints where every rank runs: host, ranks, device. */
static void print_placement(const sl_grid_t *g, sl_backend_t *be, const sl_comm_t *comm, int quiet)
{
    char line[384];
    const char *cvd = getenv("CUDA_VISIBLE_DEVICES");
    snprintf(line, sizeof line, "rank %d/%d host %s local %d/%d tp %d/%d dp %d/%d device %s%s%s",
             g->world_rank, g->world_size, g->host, g->local_rank, g->local_size, g->tp_rank,
             g->tp_size, g->dp_rank, g->dp_size, sl_backend_describe(be),
             cvd && sl_backend_kind(be) == SL_BACKEND_CUDA ? " CUDA_VISIBLE_DEVICES=" : "",
             cvd && sl_backend_kind(be) == SL_BACKEND_CUDA ? cvd : "");
    char *all = g->world_rank == 0 ? sl_xcalloc((size_t)g->world_size, sizeof line) : NULL;
    MPI_Gather(line, sizeof line, MPI_CHAR, all, sizeof line, MPI_CHAR, 0, g->world);
    if (g->world_rank == 0 && !quiet && sl_log_json()) {
        for (int i = 0; i < g->world_size; i++) {
            cJSON *o = ev_new("placement");
            cJSON_AddNumberToObject(o, "rank", i);
            cJSON_AddStringToObject(o, "placement", all + (size_t)i * sizeof line);
            ev_emit(o);
        }
        cJSON *o = ev_new("groups");
        cJSON_AddNumberToObject(o, "tp_groups", g->dp_size);
        cJSON_AddNumberToObject(o, "tp", g->tp_size);
        cJSON_AddStringToObject(o, "all_reduce", sl_comm_transport(comm));
        cJSON_AddStringToObject(o, "why", sl_comm_why(comm));
        ev_emit(o);
    } else if (g->world_rank == 0 && !quiet) {
        for (int i = 0; i < g->world_size; i++)
            fprintf(stderr, "shardline: %s\n", all + (size_t)i * sizeof line);
        fprintf(stderr, "shardline: %d TP group(s) of %d rank(s), all-reduce over %s (%s)\n",
                g->dp_size, g->tp_size, sl_comm_transport(comm), sl_comm_why(comm));
    }
    free(all);
}

int sl_run_main(int argc, char **argv)
{
    double t0 = MPI_Wtime();
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    sl_h5_quiet();

    /* --log-format json given on the command line applies to its parse errors too */
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--log-format=json") ||
            (!strcmp(argv[i], "--log-format") && i + 1 < argc && !strcmp(argv[i + 1], "json")))
            sl_log_set_json(1);
    sl_job_t job;
    sl_error_t err = {{0}};
    int rc = sl_job_parse(&job, argc, argv, &err);
    if (rc == 0)
        sl_log_set_json(!strcmp(job.log_format, "json"));
    if (rc == 1) {
        sl_job_free(&job);
        return SL_EXIT_OK;
    }
    if (rc != 0) {
        if (rank == 0)
            print_error(err.msg);
        sl_job_free(&job);
        return SL_EXIT_USAGE;
    }
    sl_profile_enabled = job.profile; /* NVTX ranges; set before any thread starts */

    sl_grid_t grid;
    if (sl_grid_init(&grid, MPI_COMM_WORLD, job.tp, &err) != 0) {
        if (rank == 0)
            print_error(err.msg);
        sl_job_free(&job);
        return SL_EXIT_USAGE;
    }
    sl_log_set_identity(grid.host, rank);
    sl_signals_install();

    /* 2. the plan, on rank 0 */
    plan_t plan;
    memset(&plan, 0, sizeof plan);
    int status = 0;
    if (rank == 0 && plan_make(&plan, &job, &err) != 0)
        status = SL_EXIT_INPUT;
    else if (rank == 0 &&
             sl_task_check_memory(&job, &plan.task, &plan.in, sl_mem_available(), &err) != 0)
        status = SL_EXIT_USAGE; /* the option values at fault, named in the message */
    if ((status = agree(MPI_COMM_WORLD, status, &err)) != 0)
        goto out_plan;
    if (rank != 0 && sl_task_plan(&job, &plan.task, &err) != 0)
        status = SL_EXIT_INPUT;
    if ((status = agree(MPI_COMM_WORLD, status, &err)) != 0)
        goto out_plan;
    plan_bcast(&plan, &grid);

    /* 3. backend, model slice, communicator */
    sl_backend_t *be = make_backend(&job, &grid, &err);
    status = be ? 0 : SL_EXIT_FAILURE;
    if ((status = agree(MPI_COMM_WORLD, status, &err)) != 0)
        goto out_backend;
    double t_load = MPI_Wtime();
    sl_task_t *model = sl_task_load(&job, &plan.task, be, &grid, &err);
    t_load = MPI_Wtime() - t_load;
    status = model ? 0 : SL_EXIT_INPUT;
    if ((status = agree(MPI_COMM_WORLD, status, &err)) != 0)
        goto out_model;
    sl_comm_t *comm = sl_comm_create(grid.tp, be, job.comm, &err);
    status = comm ? 0 : SL_EXIT_USAGE; /* --comm asked for what cannot be */
    if ((status = agree(MPI_COMM_WORLD, status, &err)) != 0)
        goto out_model;
    /* The output directory is created only now, once the job has really started: a start that
     * fails earlier (bad model, no device) leaves nothing behind. */
    status = rank == 0 && sl_output_prepare(job.output, &err) != 0 ? SL_EXIT_INPUT : 0;
    /* One job at a time in an output directory (a job array's tasks together): taken before
     * anything is written there, held until this process ends. */
    int lock_fds[2] = {-1, -1};
    if (status == 0 && rank == 0 &&
        sl_output_lock(job.output, job.array_task, job.array_tasks, lock_fds, &err) != 0)
        status = SL_EXIT_INPUT;
    /* Under the exclusive lock nobody else writes here: what earlier runs left half-written
     * (killed, or failed mid-commit) can go, so that it does not fill the disk. */
    if (status == 0 && rank == 0 && job.array_tasks == 1) {
        int swept = sl_output_sweep_tmp(job.output);
        if (swept > 0 && !job.quiet)
            fprintf(stderr, "shardline: removed %d temporary file(s) left by an earlier run\n",
                    swept);
    }
    if ((status = agree(MPI_COMM_WORLD, status, &err)) != 0)
        goto out_comm;
    print_placement(&grid, be, comm, job.quiet);
    sl_report_rec_t rec;
    sl_report_start(&rec, &grid, be, job.quiet);

    /* A job with work left must not leave an earlier, now stale predictions.h5 looking
     * complete: it reappears only when every unit is committed again. */
    if (rank == 0 && plan.nuncommitted > 0) {
        char path[4096];
        snprintf(path, sizeof path, "%s/predictions.h5", job.output);
        unlink(path);
    }
    if (rank == 0) {
        /* The manifest is there from the start, so `shardline status` and `shardline merge`
         * can read the job while it runs (and after it was killed). */
        cJSON *man = manifest_json(&job, &plan, plan.done0, 0);
        if (write_json(job.output, "manifest.json", man, &err) != 0)
            sl_fatal(__FILE__, __LINE__, "manifest", "%s", err.msg);
        cJSON_Delete(man);
    }
    if (rank == 0 && !job.quiet && sl_log_json()) {
        cJSON *o = ev_new("start");
        cJSON_AddNumberToObject(o, "rows", (double)plan.in.total_rows);
        cJSON_AddNumberToObject(o, "shards", plan.in.n);
        cJSON_AddNumberToObject(o, "units", (double)plan.nunits);
        cJSON_AddNumberToObject(o, "units_committed_before",
                                (double)(plan.nunits - plan.nuncommitted));
        cJSON_AddNumberToObject(o, "units_to_compute", (double)plan.npending);
        cJSON_AddNumberToObject(o, "ranks", size);
        cJSON_AddStringToObject(o, "task", sl_task_name(plan.task.task));
        cJSON_AddStringToObject(o, "output", job.output);
        if (job.array_tasks > 1) {
            cJSON_AddNumberToObject(o, "array_task", job.array_task);
            cJSON_AddNumberToObject(o, "array_tasks", job.array_tasks);
        }
        ev_emit(o);
    } else if (rank == 0 && !job.quiet) {
        fprintf(stderr,
                "shardline: %lld rows in %d shard(s), %lld unit(s): %lld already committed, %lld "
                "to compute",
                (long long)plan.in.total_rows, plan.in.n, (long long)plan.nunits,
                (long long)(plan.nunits - plan.nuncommitted), (long long)plan.npending);
        if (job.array_tasks > 1)
            fprintf(stderr, " (array task %d of %d: units i %% %d == %d)", job.array_task,
                    job.array_tasks, job.array_tasks, job.array_task);
        fputc('\n', stderr);
    }

    /* 4. the work */
    loop_t L;
    memset(&L, 0, sizeof L);
    L.job = &job;
    L.plan = &plan;
    L.grid = &grid;
    L.task = model;
    L.comm = comm;
    L.rec = &rec;
    L.read_rows = sl_task_read_rows(model, &job, &plan.in);
    sl_queue_t queue;
    sl_queue_init(&queue, &grid, plan.npending,
                  !strcmp(job.schedule, "dynamic")  ? SL_SCHEDULE_DYNAMIC
                  : !strcmp(job.schedule, "static") ? SL_SCHEDULE_STATIC
                                                    : SL_SCHEDULE_AUTO);
    if (rank == 0 && !job.quiet && grid.dp_size > 1)
        sl_log_info("units handed out %s",
                    queue.dynamic ? "dynamically (shared counter on rank 0)"
                                  : "statically (DP group d takes units d, d+D, d+2D, ...)");
    L.queue = &queue;
    L.io =
        sl_io_start(&plan.in, job.output, job.prefetch < 1 ? 1 : job.prefetch, model, L.read_rows);
    if (sl_log_json())
        sl_io_on_commit(L.io, on_commit, &L);
    compute_loop(&L);
    sl_backend_gemm_stats(be, &L.st.gemm_s, &L.st.gemm_flops);
    sl_backend_w8a8_stats(be, &L.st.w8a8_blocks, &L.st.w8a8_own);
    L.st.truncated = sl_task_truncated(model);
    L.st.tokens = sl_task_tokens(model);
    sl_task_token_split(model, &L.st.prompt_tokens, &L.st.generated_tokens);
    sl_error_t ioerr;
    if (sl_io_finish(L.io, &L.st.read_s, &L.st.write_s, &ioerr) != 0)
        sl_fatal(__FILE__, __LINE__, "commit", "%s", ioerr.msg); /* a unit is not committed */
    L.st.tokenize_s = sl_task_tokenize_seconds(model);           /* the I/O thread has finished */
    L.st.load_s = t_load;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    L.st.peak_rss_bytes = 1024.0 * (double)ru.ru_maxrss; /* Linux: kilobytes */

    /* 5. agree on the outcome, then rank 0 writes the job's files */
    int stopped = L.stop, any_stopped = 0;
    MPI_Allreduce(&stopped, &any_stopped, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    stats_t *all = rank == 0 ? sl_xcalloc((size_t)size, sizeof *all) : NULL;
    MPI_Gather(&L.st, sizeof L.st, MPI_BYTE, all, sizeof L.st, MPI_BYTE, 0, MPI_COMM_WORLD);
    int nc = (int)L.ncommitted;
    int *counts = rank == 0 ? sl_xcalloc((size_t)size, sizeof *counts) : NULL;
    MPI_Gather(&nc, 1, MPI_INT, counts, 1, MPI_INT, 0, MPI_COMM_WORLD);
    int *displs = rank == 0 ? sl_xcalloc((size_t)size, sizeof *displs) : NULL;
    int64_t *done_units = NULL;
    if (rank == 0) {
        int total = 0;
        for (int i = 0; i < size; i++) {
            displs[i] = total;
            total += counts[i];
        }
        done_units = sl_xcalloc((size_t)total + 1, sizeof *done_units);
    }
    MPI_Gatherv(L.committed, nc, MPI_INT64_T, done_units, counts, displs, MPI_INT64_T, 0,
                MPI_COMM_WORLD);
    cJSON *extra = sl_report_gather(&rec, &grid, sl_task_batch_hist(model));

    int exit_status = any_stopped ? SL_EXIT_STOPPED : SL_EXIT_OK;
    if (rank == 0) {
        unsigned char *done = sl_xcalloc((size_t)plan.nunits + 1, 1);
        memcpy(done, plan.done0, (size_t)plan.nunits);
        int64_t ndone_now = displs[size - 1] + counts[size - 1];
        for (int64_t i = 0; i < ndone_now; i++)
            done[done_units[i]] = 1;
        /* Units outside this run's share may have been committed meanwhile by other tasks of a
         * job array: look at their part files. The task that finds everything committed
         * writes predictions.h5. */
        /* Every unit is looked at on disk, also those this run committed: a part file can
         * have gone since (the output directory removed or emptied while the job ran), and
         * a manifest or predictions.h5 must never claim a unit that is not there. */
        int complete = 1;
        int64_t lost = 0;
        for (int64_t i = 0; i < plan.nunits; i++) {
            if (done[i] || job.array_tasks > 1) {
                int was = done[i];
                const sl_unit_t *u = &plan.units[i];
                sl_part_meta_t m = {&plan.in.shards[u->shard], u->row0,       u->nrows,
                                    &plan.task.outs,           plan.model_fp, plan.job_hash};
                char *rel = sl_part_relpath(m.shard, u->row0, u->nrows);
                done[i] = (unsigned char)sl_part_matches(job.output, rel, &m);
                lost += was && !done[i];
                free(rel);
            }
            complete &= done[i];
        }
        int64_t failed = 0;
        stats_t tot = {0};
        for (int i = 0; i < size; i++) {
            /* rows and failures once per TP group (its leader); times: the slowest rank */
            if (i % grid.tp_size == 0) {
                tot.rows += all[i].rows;
                tot.failed += all[i].failed;
                tot.units += all[i].units;
                tot.truncated += all[i].truncated;
                tot.tokens += all[i].tokens;
                tot.prompt_tokens += all[i].prompt_tokens;
                tot.generated_tokens += all[i].generated_tokens;
            }
            tot.load_s = fmax(tot.load_s, all[i].load_s);
            tot.tokenize_s = fmax(tot.tokenize_s, all[i].tokenize_s);
            tot.peak_rss_bytes = fmax(tot.peak_rss_bytes, all[i].peak_rss_bytes);
            tot.read_s = fmax(tot.read_s, all[i].read_s);
            tot.wait_s = fmax(tot.wait_s, all[i].wait_s);
            tot.compute_s = fmax(tot.compute_s, all[i].compute_s);
            tot.comm_s = fmax(tot.comm_s, all[i].comm_s);
            tot.write_s = fmax(tot.write_s, all[i].write_s);
            tot.gemm_s = fmax(tot.gemm_s, all[i].gemm_s);
            tot.gemm_flops += all[i].gemm_flops;
            tot.w8a8_blocks += all[i].w8a8_blocks;
            tot.w8a8_own += all[i].w8a8_own;
        }
        failed = tot.failed;
        if (complete && !any_stopped) {
            cJSON *desc = describe_json(&job, &plan);
            int wrc = sl_predictions_write(job.output, &plan.in, plan.units, plan.nunits,
                                           &plan.task.outs, desc, &failed, &err);
            cJSON_Delete(desc);
            if (wrc != 0) {
                print_error(err.msg);
                exit_status = SL_EXIT_FAILURE;
                complete = 0; /* the manifest must not say complete without predictions.h5 */
            }
        }
        if (lost > 0) {
            fprintf(stderr,
                    "shardline: error: %s: %lld committed unit(s) are no longer in "
                    "parts/ (was the output directory removed or changed while the job "
                    "ran?); rerun the same command to compute them again\n",
                    job.output, (long long)lost);
            exit_status = SL_EXIT_FAILURE;
        }
        cJSON *man = manifest_json(&job, &plan, done, complete && !any_stopped);
        if (write_json(job.output, "manifest.json", man, &err) != 0) {
            print_error(err.msg);
            exit_status = SL_EXIT_FAILURE;
        }
        cJSON_Delete(man);

        double secs = MPI_Wtime() - t0;
        cJSON *rep = cJSON_CreateObject();
        cJSON_AddBoolToObject(rep, "complete", complete && !any_stopped);
        cJSON_AddBoolToObject(rep, "stopped", any_stopped);
        cJSON_AddNumberToObject(rep, "rows", (double)plan.in.total_rows);
        cJSON_AddNumberToObject(rep, "rows_computed", (double)tot.rows);
        cJSON_AddNumberToObject(rep, "failed_rows", (double)failed);
        cJSON_AddNumberToObject(rep, "units_total", (double)plan.nunits);
        cJSON_AddNumberToObject(rep, "units_skipped", (double)(plan.nunits - plan.nuncommitted));
        cJSON_AddNumberToObject(rep, "units_computed", (double)tot.units);
        cJSON_AddNumberToObject(rep, "seconds", secs);
        cJSON_AddNumberToObject(rep, "rows_per_second", secs > 0 ? (double)tot.rows / secs : 0.0);
        if (plan.task.want_tokens) {
            cJSON_AddNumberToObject(rep, "tokens", (double)tot.tokens);
            cJSON_AddNumberToObject(rep, "tokens_per_second",
                                    secs > 0 ? (double)tot.tokens / secs : 0.0);
            cJSON_AddNumberToObject(rep, "truncated_rows", (double)tot.truncated);
        }
        if (plan.task.task == SL_TASK_GENERATE) {
            /* the sums of /n_prompt_tokens and /n_tokens over the rows computed */
            cJSON_AddNumberToObject(rep, "prompt_tokens", (double)tot.prompt_tokens);
            cJSON_AddNumberToObject(rep, "generated_tokens", (double)tot.generated_tokens);
            cJSON_AddNumberToObject(rep, "generated_tokens_per_second",
                                    secs > 0 ? (double)tot.generated_tokens / secs : 0.0);
        }
        cJSON_AddStringToObject(rep, "task", sl_task_name(plan.task.task));
        add_times(rep, &tot);
        cJSON_AddNumberToObject(rep, "ranks", size);
        cJSON_AddNumberToObject(rep, "tp", grid.tp_size);
        cJSON_AddNumberToObject(rep, "dp", grid.dp_size);
        cJSON_AddStringToObject(rep, "device", sl_backend_describe(be));
        cJSON_AddStringToObject(rep, "all_reduce", sl_comm_transport(comm));
        /* the precision of every matrix rank 0 holds, and its weight bytes */
        cJSON_AddStringToObject(rep, "precision", job.precision);
        cJSON_AddItemToObject(rep, "weights", sl_wlog_json());
        if (tot.w8a8_blocks > 0) { /* static W8A8 on the CPU: how static it was */
            cJSON *q = cJSON_AddObjectToObject(rep, "w8a8_blocks");
            cJSON_AddNumberToObject(q, "static_range", tot.w8a8_blocks);
            cJSON_AddNumberToObject(q, "own_step", tot.w8a8_own);
            cJSON_AddNumberToObject(q, "own_step_fraction", tot.w8a8_own / tot.w8a8_blocks);
        }
        cJSON *per = cJSON_AddArrayToObject(rep, "per_rank");
        for (int i = 0; i < size; i++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "rank", i);
            cJSON_AddNumberToObject(o, "rows", (double)all[i].rows);
            cJSON_AddNumberToObject(o, "failed_rows", (double)all[i].failed);
            cJSON_AddNumberToObject(o, "units", (double)all[i].units);
            add_times(o, &all[i]);
            cJSON_AddItemToArray(per, o);
        }
        sl_report_merge(rep, extra);
        if (write_json(job.output, "report.json", rep, &err) != 0) {
            print_error(err.msg);
            exit_status = SL_EXIT_FAILURE;
        } else if (sl_report_html_write(job.output, &err) != 0) {
            print_error(err.msg);
            exit_status = SL_EXIT_FAILURE;
        }
        if (exit_status == SL_EXIT_OK && failed > 0)
            exit_status = SL_EXIT_ROWS_FAILED;
        if (sl_log_json()) {
            /* the final summary: report.json's single values (stage times included; its
             * per-rank and per-unit arrays stay in the file), the outcome and where the
             * results are */
            cJSON *o = ev_new("done");
            for (cJSON *m = rep->child; m; m = m->next)
                if (!cJSON_IsArray(m) && !cJSON_IsObject(m))
                    cJSON_AddItemToObject(o, m->string, cJSON_Duplicate(m, 1));
            cJSON_AddNumberToObject(o, "exit_status", exit_status);
            if (complete && !any_stopped) {
                char pp[4200];
                snprintf(pp, sizeof pp, "%s/predictions.h5", job.output);
                cJSON_AddStringToObject(o, "predictions", pp);
            }
            if (any_stopped)
                cJSON_AddStringToObject(o, "stopped_by",
                                        sl_signals_first_name() ? sl_signals_first_name()
                                                                : "a signal on another rank");
            ev_emit(o);
        }
        cJSON_Delete(rep);
        if (!sl_log_json() && (!job.quiet || any_stopped || failed > 0)) {
            if (any_stopped)
                fprintf(stderr,
                        "shardline: stopped by %s after committing %lld of %lld units; "
                        "rerun the same command to resume\n",
                        sl_signals_first_name() ? sl_signals_first_name()
                                                : "a signal on another rank",
                        (long long)(plan.nunits - plan.nuncommitted + tot.units),
                        (long long)plan.nunits);
            else if (complete)
                fprintf(stderr,
                        "shardline: done: %lld rows (%lld computed, %lld failed) in %.2fs -> "
                        "%s/predictions.h5\n",
                        (long long)plan.in.total_rows, (long long)tot.rows, (long long)failed, secs,
                        job.output);
            if (tot.w8a8_blocks > 0)
                fprintf(stderr,
                        "shardline: w8a8: %.1f%% of the activation blocks went beyond their "
                        "calibrated range and took their own step (report.json: w8a8_blocks)\n",
                        100.0 * tot.w8a8_own / tot.w8a8_blocks);
            if (tot.truncated > 0)
                fprintf(stderr,
                        "shardline: %lld row(s) were longer than --max-length %d and were "
                        "truncated (report.json: truncated_rows)\n",
                        (long long)tot.truncated, plan.task.max_length);
        }
        free(done);
    }
    MPI_Bcast(&exit_status, 1, MPI_INT, 0, MPI_COMM_WORLD);
    sl_output_unlock(lock_fds);
    free(all);
    free(counts);
    free(displs);
    free(done_units);
    free(L.committed);
    sl_report_free(&rec);
    sl_queue_free(&queue);
    sl_comm_free(comm);
    sl_task_free(model);
    sl_backend_free(be);
    plan_free(&plan);
    sl_grid_free(&grid);
    sl_job_free(&job);
    return exit_status;

out_comm:
    sl_comm_free(comm);
out_model:
    sl_task_free(model);
out_backend:
    sl_backend_free(be);
out_plan:
    plan_free(&plan);
    sl_grid_free(&grid);
    sl_job_free(&job);
    return status;
}
