/*
 * test_pipeline.c — the I/O thread (runner/pipeline.{h,c}) with a real task: the example mlp
 * model (examples/mlp) loaded through sl_task_plan / sl_task_load on the CPU backend, over HDF5
 * shards this test writes. Reads queued ahead into several slots come back in queue order
 * holding the rows asked for (checked by running the model over each slot and comparing with
 * a plain C forward pass of the same weights); a read of a truncated shard fails its slot,
 * naming the file, and the slot serves the next read; commits write part files that match
 * their meta and hold the computed rows; sl_io_finish reports read and write seconds;
 * sl_io_failed reports a commit that could not be written (a file where the output directory
 * goes, and a read-only output directory where chmod can make one).
 */
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/sl_fs.h"
#include "jobs/h5util.h"
#include "jobs/input.h"
#include "jobs/output.h"
#include "jobs/spec.h"
#include "kernels/backend.h"
#include "models/formats/safetensors.h"
#include "partition/comm.h"
#include "partition/grid.h"
#include "runner/pipeline.h"
#include "runner/task.h"
#include "sl_test.h"

#define D_IN 16
#define D_OUT 3
#define NSHARDS 3
static const int64_t g_rows[NSHARDS] = {7, 6, 4};
static float *g_x[NSHARDS]; /* the features written: f32 [rows, 16] per shard */
static char g_dir[4096];

static int contains(const char *s, const char *sub) { return s && strstr(s, sub) != NULL; }

/* ---- the reference: the example model's forward pass in plain C ----------------------------- */

typedef struct {
    sl_safetensors_t st;
    float *w[3], *b[3], *mean, *std;
    int64_t dims[4];
} ref_t;

static float *tensor_f32(const sl_safetensors_t *st, const char *name, int64_t n)
{
    const sl_st_tensor_t *t = sl_st_find(st, name);
    if (!t || sl_st_numel(t) != n)
        return NULL;
    float *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++)
        v[i] = sl_st_raw_f32(t->data, t->dtype, i);
    return v;
}

static int ref_load(ref_t *r, const char *dir)
{
    char *path = sl_path_join(dir, "model.safetensors");
    sl_error_t err;
    memset(r, 0, sizeof *r);
    int rc = sl_st_open(&r->st, path, &err);
    free(path);
    if (rc != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    const int64_t dims[4] = {D_IN, 64, 64, D_OUT};
    memcpy(r->dims, dims, sizeof dims);
    int ok = 1;
    for (int l = 0; l < 3; l++) {
        char name[64];
        snprintf(name, sizeof name, "layers.%d.weight", l); /* [out, in] */
        r->w[l] = tensor_f32(&r->st, name, dims[l + 1] * dims[l]);
        snprintf(name, sizeof name, "layers.%d.bias", l);
        r->b[l] = tensor_f32(&r->st, name, dims[l + 1]);
        ok = ok && r->w[l] && r->b[l];
    }
    r->mean = tensor_f32(&r->st, "input_mean", D_IN);
    r->std = tensor_f32(&r->st, "input_std", D_IN);
    return ok && r->mean && r->std ? 0 : -1;
}

static void ref_free(ref_t *r)
{
    for (int l = 0; l < 3; l++) {
        free(r->w[l]);
        free(r->b[l]);
    }
    free(r->mean);
    free(r->std);
    sl_st_close(&r->st);
}

/* One row: standardise, (W x + b, ReLU) x 2, W x + b, softmax; in double. */
static void ref_row(const ref_t *r, const float *x, double *y)
{
    double a[64], h[64];
    for (int j = 0; j < D_IN; j++)
        a[j] = ((double)x[j] - r->mean[j]) / r->std[j];
    for (int l = 0; l < 3; l++) {
        int64_t in = r->dims[l], out = r->dims[l + 1];
        for (int64_t o = 0; o < out; o++) {
            double s = r->b[l][o];
            for (int64_t i = 0; i < in; i++)
                s += (double)r->w[l][o * in + i] * a[i];
            h[o] = l < 2 && s < 0 ? 0 : s;
        }
        memcpy(a, h, (size_t)out * sizeof *a);
    }
    double mx = a[0], sum = 0;
    for (int o = 1; o < D_OUT; o++)
        mx = a[o] > mx ? a[o] : mx;
    for (int o = 0; o < D_OUT; o++)
        sum += y[o] = exp(a[o] - mx);
    for (int o = 0; o < D_OUT; o++)
        y[o] /= sum;
}

/* ---- shards ---------------------------------------------------------------------------------- */

/* Features within about one std of the model's input mean, where its softmax is not
 * saturated: rows read from the wrong place give visibly different outputs. */
static void write_shard(const ref_t *ref, int k)
{
    int64_t n = g_rows[k];
    g_x[k] = malloc((size_t)n * D_IN * sizeof(float));
    uint32_t s = 12345u + (uint32_t)k * 7919u;
    for (int64_t i = 0; i < n * D_IN; i++) {
        s = s * 1664525u + 1013904223u;
        double u = (double)(s >> 8) / (double)(1u << 24) * 2.0 - 1.0;
        g_x[k][i] = (float)(ref->mean[i % D_IN] + u * ref->std[i % D_IN]);
    }
    if (k == 1)
        g_x[k][2 * D_IN + 5] = NAN; /* shard 1 row 2 fails alone */
    char path[4200];
    snprintf(path, sizeof path, "%s/in/p_%d.h5", g_dir, k);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dims[2] = {(hsize_t)n, D_IN};
    hid_t sp = H5Screate_simple(2, dims, NULL);
    hid_t d = H5Dcreate2(f, "features", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0 || d < 0 ||
        H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, g_x[k]) < 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
    H5Dclose(d);
    H5Sclose(sp);
    H5Fclose(f);
}

/* The data must tell rows apart: every two rows of a shard differ by more than the
 * tolerance in some output, so a read of the wrong rows cannot pass. */
static void check_distinct(const ref_t *ref)
{
    int close = 0;
    for (int k = 0; k < NSHARDS; k++)
        for (int64_t i = 0; i < g_rows[k]; i++)
            for (int64_t j = i + 1; j < g_rows[k]; j++) {
                double a[D_OUT], b[D_OUT], d = 0;
                ref_row(ref, g_x[k] + i * D_IN, a);
                ref_row(ref, g_x[k] + j * D_IN, b);
                for (int o = 0; o < D_OUT; o++)
                    d = fmax(d, fabs(a[o] - b[o]));
                close += d < 1e-3 && isfinite(a[0]) && isfinite(b[0]); /* NaN row: skipped */
            }
    CHECKF(close == 0, "%d pairs of rows give nearly the same outputs", close);
}

/* ---- the test -------------------------------------------------------------------------------- */

typedef struct {
    int shard;
    int64_t row0, rows;
} rd_t;

typedef struct {
    int n;
    int64_t rows[8];
    char why[8][96];
} errs_t;

static void on_error(void *ctx, int64_t row, const char *reason)
{
    errs_t *e = ctx;
    if (e->n < 8) {
        e->rows[e->n] = row;
        snprintf(e->why[e->n], sizeof e->why[e->n], "%s", reason);
        e->n++;
    }
}

/* Compares the model's rows out [rows, 3] with the reference over the features of a read. */
static int check_rows(const ref_t *ref, const rd_t *r, const float *out)
{
    int bad = 0;
    for (int64_t i = 0; i < r->rows; i++) {
        const float *x = g_x[r->shard] + (r->row0 + i) * D_IN;
        int finite = 1;
        for (int j = 0; j < D_IN; j++)
            finite = finite && isfinite(x[j]);
        if (!finite) {
            for (int o = 0; o < D_OUT; o++)
                bad += !isnan(out[i * D_OUT + o]);
            continue;
        }
        double y[D_OUT];
        ref_row(ref, x, y);
        for (int o = 0; o < D_OUT; o++)
            bad += !(fabs((double)out[i * D_OUT + o] - y[o]) <= 1e-5 + 1e-4 * fabs(y[o]));
    }
    return bad;
}

/* Waits for a read queued behind everything before it: every earlier request is served. */
static void drain(sl_io_t *io, int slot, int shard)
{
    sl_io_read(io, slot, shard, 0, 1);
    sl_io_wait(io, slot);
}

/* A commit of one row of zeros whose write must fail; returns what sl_io_failed says. */
static int failing_commit(const sl_inputs_t *in, const char *out, sl_task_t *task,
                          const sl_outputs_t *outs, int64_t read_rows, sl_error_t *err)
{
    sl_io_t *io = sl_io_start(in, out, 1, task, read_rows);
    sl_part_meta_t m = {&in->shards[0], 0, 1, outs, 1, 2};
    void *bufs[1] = {calloc(D_OUT, sizeof(float))};
    sl_io_commit(io, sl_part_relpath(&in->shards[0], 0, 1), &m, bufs, NULL, 0);
    drain(io, 0, 0);
    int failed = sl_io_failed(io, err);
    sl_error_t ferr = {{0}};
    int fin = sl_io_finish(io, NULL, NULL, &ferr);
    CHECKF((fin != 0) == (failed != 0), "sl_io_finish %d agrees with sl_io_failed %d: %s", fin,
           failed, ferr.msg);
    return failed;
}

static void run(ref_t *ref, const char *model_dir)
{
    char glob[4200], out[4200];
    snprintf(glob, sizeof glob, "%s/in/p_*.h5", g_dir);
    snprintf(out, sizeof out, "%s/out", g_dir);
    const char *argv[] = {"run",      "--model",     model_dir,  "--input", glob,
                          "--output", out,           "--device", "cpu",     "--batch-size",
                          "4",        "--unit-rows", "4",        "--quiet", NULL};
    sl_job_t job;
    sl_error_t err = {{0}};
    int rc = sl_job_parse(&job, (int)(sizeof argv / sizeof *argv) - 1, (char **)argv, &err);
    CHECKF(rc == 0, "%s", err.msg);
    if (rc != 0)
        return;
    sl_task_plan_t plan;
    memset(&plan, 0, sizeof plan);
    rc = sl_task_plan(&job, &plan, &err);
    CHECKF(rc == 0, "%s", err.msg);
    CHECK(plan.model == SL_MODEL_MLP && plan.d_in == D_IN && plan.outs.n == 1 &&
          plan.outs.spec[0].cols == D_OUT);
    sl_inputs_t in;
    memset(&in, 0, sizeof in);
    if (rc == 0)
        rc = sl_inputs_scan(&in, job.inputs, job.n_inputs, plan.dataset, plan.want_tokens, &err);
    CHECKF(rc == 0, "%s", err.msg);
    CHECKF(rc != 0 || in.n == NSHARDS, "%d shards", in.n);
    if (rc != 0 || in.n != NSHARDS) {
        sl_inputs_free(&in);
        sl_task_plan_free(&plan);
        sl_job_free(&job);
        return;
    }
    /* shard 2 is valid when scanned, truncated before it is read */
    CHECK(truncate(in.shards[2].path, 64) == 0);

    sl_grid_t grid;
    rc = sl_grid_init(&grid, MPI_COMM_WORLD, job.tp, &err);
    CHECKF(rc == 0, "%s", err.msg);
    sl_backend_t *be = rc ? NULL : sl_backend_create(SL_BACKEND_CPU, 0, 1, &err);
    CHECKF(be, "%s", err.msg);
    sl_task_t *task = be ? sl_task_load(&job, &plan, be, &grid, &err) : NULL;
    CHECKF(task, "%s", err.msg);
    sl_comm_t *comm = task ? sl_comm_create(grid.tp, be, job.comm, &err) : NULL;
    CHECKF(comm, "%s", err.msg);
    if (!comm)
        goto out;
    CHECKF(sl_output_prepare(out, &err) == 0, "%s", err.msg);
    int64_t read_rows = sl_task_read_rows(task, &job, &in);
    CHECK(read_rows == 4);

    /* Reads: all three slots queued before the first wait, each slot reused as soon as its
     * rows are consumed; the truncated shard in the middle, then a good read in its slot. */
    const rd_t reads[] = {{0, 0, 4}, {0, 4, 3}, {1, 0, 4}, {2, 0, 4},
                          {1, 4, 2}, {0, 2, 4}, {1, 1, 3}};
    const int nreads = (int)(sizeof reads / sizeof *reads);
    const int nslots = 3;
    sl_io_t *io = sl_io_start(&in, out, nslots, task, read_rows);
    CHECK(sl_io_nslots(io) == nslots);
    for (int k = 0; k < nslots; k++)
        sl_io_read(io, k, reads[k].shard, reads[k].row0, reads[k].rows);
    char *committed[8] = {0};
    float *values[8] = {0};
    errs_t errs_of[8];
    int ncommit = 0;
    for (int k = 0; k < nreads; k++) {
        int slot = k % nslots;
        sl_io_slot_t *s = sl_io_wait(io, slot);
        if (reads[k].shard == 2) {
            CHECKF(s->state == -1, "read %d of the truncated shard: state %d", k, s->state);
            CHECKF(contains(s->err.msg, in.shards[2].path), "read %d: '%s'", k, s->err.msg);
        } else {
            CHECKF(s->state == 1, "read %d: state %d (%s)", k, s->state,
                   s->state < 0 ? s->err.msg : "");
            CHECKF(s->rows == reads[k].rows, "read %d: %lld rows", k, (long long)s->rows);
        }
        if (s->state == 1) {
            float *o = calloc((size_t)reads[k].rows * D_OUT, sizeof(float));
            errs_t e = {0};
            void *outs[1] = {o};
            sl_task_compute(task, comm, s->payload, s->rows, outs, 0, on_error, &e);
            int bad = check_rows(ref, &reads[k], o);
            CHECKF(bad == 0,
                   "read %d (shard %d rows %lld+%lld): %d values differ from the reference", k,
                   reads[k].shard, (long long)reads[k].row0, (long long)reads[k].rows, bad);
            /* shard 1 row 2 has a NaN feature: reported for exactly that row */
            int64_t want =
                reads[k].shard == 1 && reads[k].row0 <= 2 && reads[k].row0 + reads[k].rows > 2
                    ? 2 - reads[k].row0
                    : -1;
            CHECKF(want < 0 ? e.n == 0 : e.n == 1 && e.rows[0] == want && contains(e.why[0], "NaN"),
                   "read %d: %d row errors", k, e.n);
            /* commit the rows (the first four reads that succeeded), keeping a copy */
            if (ncommit < 4) {
                const sl_shard_t *sh = &in.shards[reads[k].shard];
                sl_part_meta_t m = {sh,         reads[k].row0, reads[k].rows,
                                    &plan.outs, 0xabcULL,      0xdefULL};
                sl_row_error_t *re = calloc((size_t)e.n + 1, sizeof *re);
                for (int i = 0; i < e.n; i++) {
                    re[i].row = e.rows[i];
                    snprintf(re[i].reason, sizeof re[i].reason, "%s", e.why[i]);
                }
                committed[ncommit] = sl_part_relpath(sh, reads[k].row0, reads[k].rows);
                values[ncommit] = malloc((size_t)reads[k].rows * D_OUT * sizeof(float));
                memcpy(values[ncommit], o, (size_t)reads[k].rows * D_OUT * sizeof(float));
                errs_of[ncommit] = e;
                void *bufs[1] = {o};
                sl_io_commit(io, sl_xstrdup(committed[ncommit]), &m, bufs, re, e.n);
                ncommit++;
                o = NULL; /* the I/O thread frees it */
            }
            free(o);
        }
        if (k + nslots < nreads)
            sl_io_read(io, slot, reads[k + nslots].shard, reads[k + nslots].row0,
                       reads[k + nslots].rows);
    }
    drain(io, 0, 0);
    CHECKF(sl_io_failed(io, &err) == 0, "%s", err.msg);
    double read_s = -1, write_s = -1;
    CHECKF(sl_io_finish(io, &read_s, &write_s, &err) == 0, "%s", err.msg);
    CHECKF(read_s > 0 && write_s > 0, "read %g s, write %g s", read_s, write_s);
    CHECK(ncommit == 4);

    /* the part files: there, matching their meta, holding the rows computed */
    int c = 0;
    for (int k = 0; k < nreads && c < ncommit; k++) {
        if (reads[k].shard == 2)
            continue;
        sl_part_meta_t m = {&in.shards[reads[k].shard],
                            reads[k].row0,
                            reads[k].rows,
                            &plan.outs,
                            0xabcULL,
                            0xdefULL};
        CHECKF(sl_part_matches(out, committed[c], &m) == 1, "%s does not match", committed[c]);
        char path[8400];
        snprintf(path, sizeof path, "%s/%s", out, committed[c]);
        hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        CHECKF(f >= 0, "cannot open %s", path);
        if (f >= 0) {
            size_t n = 0;
            float *v = sl_test_h5_read(f, "predictions", H5T_NATIVE_FLOAT, 4, &n, NULL, NULL);
            int same = v && n == (size_t)(reads[k].rows * D_OUT);
            for (size_t i = 0; same && i < n; i++)
                same = v[i] == values[c][i] || (isnan(v[i]) && isnan(values[c][i]));
            CHECKF(same, "%s: values differ from the rows committed", path);
            free(v);
            int64_t *fr = sl_test_h5_read(f, "failed_rows", H5T_NATIVE_INT64, 8, &n, NULL, NULL);
            CHECK(n == (size_t)errs_of[c].n && (n == 0 || (fr && fr[0] == errs_of[c].rows[0])));
            free(fr);
            H5Fclose(f);
        }
        c++;
    }

    /* a commit that cannot be written is reported by sl_io_failed, naming the path: a file
     * where the output directory goes ... */
    char notdir[4200];
    snprintf(notdir, sizeof notdir, "%s/not_a_dir", g_dir);
    sl_test_write_file(notdir, "x", 1);
    err.msg[0] = '\0';
    CHECK(failing_commit(&in, notdir, task, &plan.outs, read_rows, &err) == 1);
    CHECKF(contains(err.msg, notdir), "%s", err.msg);
    /* ... and a read-only output directory, where chmod makes one (not for root) */
    char ro[4200], probe[4300];
    snprintf(ro, sizeof ro, "%s/read_only", g_dir);
    snprintf(probe, sizeof probe, "%s/probe", ro);
    mkdir(ro, 0755);
    chmod(ro, 0555);
    FILE *pf = fopen(probe, "w");
    if (pf) {
        fclose(pf);
        unlink(probe);
        printf("test_pipeline: commit into a read-only directory: NOT CHECKED (chmod 0555 does "
               "not stop this user's writes: running as root)\n");
    } else {
        err.msg[0] = '\0';
        CHECK(failing_commit(&in, ro, task, &plan.outs, read_rows, &err) == 1);
        CHECKF(contains(err.msg, ro), "%s", err.msg);
    }
    chmod(ro, 0755);
    for (int i = 0; i < ncommit; i++) {
        free(committed[i]);
        free(values[i]);
    }
out:
    sl_comm_free(comm);
    sl_task_free(task);
    sl_backend_free(be);
    if (!rc)
        sl_grid_free(&grid);
    sl_inputs_free(&in);
    sl_task_plan_free(&plan);
    sl_job_free(&job);
}

int main(int argc, char **argv)
{
    /* the grid and the communicator are MPI objects: a singleton MPI process */
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    sl_h5_quiet();
    char model_dir[4200];
    snprintf(model_dir, sizeof model_dir, "%s/examples/mlp", sl_test_source_dir());
    ref_t ref;
    int rc = 1;
    if (ref_load(&ref, model_dir) != 0) {
        fprintf(stderr, "test_pipeline: cannot load %s/model.safetensors\n", model_dir);
        ref_free(&ref);
        MPI_Finalize();
        return 1;
    }
    if (sl_test_tmpdir(g_dir, sizeof g_dir, "sl_test_pipeline") == 0) {
        char in[4200];
        snprintf(in, sizeof in, "%s/in", g_dir);
        mkdir(in, 0755);
        for (int k = 0; k < NSHARDS; k++)
            write_shard(&ref, k);
        check_distinct(&ref);
        double t0 = sl_test_now_s();
        run(&ref, model_dir);
        printf("test_pipeline: %.2f s\n", sl_test_now_s() - t0);
        char cmd[4200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", g_dir);
        rc = sl_test_finish("test_pipeline");
    }
    for (int k = 0; k < NSHARDS; k++)
        free(g_x[k]);
    ref_free(&ref);
    MPI_Finalize();
    return rc;
}
