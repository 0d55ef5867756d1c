/*
 * mlp_task.c — the mlp family (task `predict`): rows of features are read and computed batch by
 * batch, one forward pass per batch of --batch-size rows; a row holding NaN/Inf fails alone.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/mlp.h"
#include "runner/task.h"

typedef struct {
    sl_task_t base;
    sl_mlp_t *mlp;
    sl_tensor_t *x, *y; /* [batch, d0], [batch, dn] */
} mlp_task_t;

static int mlp_plan(const sl_job_t *job, sl_task_plan_t *p, sl_error_t *err)
{
    char path[4096];
    int out_f = !strcmp(job->output_dtype, "f16") ? SL_F16 : SL_F32;
    sl_mlp_config_t *cfg = sl_xcalloc(1, sizeof *cfg);
    snprintf(path, sizeof path, "%s/config.json", job->model);
    if (sl_mlp_config_load(path, cfg, err) != 0) {
        free(cfg);
        return -1;
    }
    p->config = cfg;
    p->task = SL_TASK_PREDICT;
    p->d_in = cfg->dims[0];
    p->outs.n = 1;
    p->outs.spec[0] = (sl_out_spec_t){"predictions", cfg->dims[cfg->n_layers], out_f};
    if (strcmp(job->task, "auto") && strcmp(job->task, "predict"))
        return sl_errorf(err, "--task %s: an mlp model only does 'predict'", job->task);
    p->dataset = job->input_dataset ? job->input_dataset : "features";
    return 0;
}

static void mlp_plan_free(sl_task_plan_t *p)
{
    sl_mlp_config_free(p->config);
    free(p->config);
    p->config = NULL;
}

static int mlp_load(sl_task_t *t, const sl_grid_t *g, sl_dtype_t dt, sl_error_t *err)
{
    mlp_task_t *m = (mlp_task_t *)t;
    const sl_job_t *job = t->job;
    m->mlp = sl_mlp_load_with(job->model, t->plan->config, t->be, g->tp_size, g->tp_rank, dt, err);
    if (!m->mlp)
        return -1;
    m->x = sl_tensor_new2(t->be, SL_F32, job->batch_size, t->plan->d_in);
    m->y = sl_tensor_new2(t->be, SL_F32, job->batch_size, t->plan->outs.spec[0].cols);
    return sl_batch_calibrate(job, err);
}

static void mlp_free(sl_task_t *t)
{
    mlp_task_t *m = (mlp_task_t *)t;
    sl_tensor_free(m->y);
    sl_tensor_free(m->x);
    sl_mlp_free(m->mlp);
}

/* A batch per read, at most the rows of the largest unit. */
static int64_t mlp_read_rows(const sl_job_t *job, const sl_task_plan_t *plan, const sl_inputs_t *in)
{
    (void)plan;
    return sl_batch_read_rows(job, in, job->batch_size);
}

/* Read-ahead slots of features; the batch's input and output rows, allocated for --batch-size
 * rows whatever the units. */
static void mlp_memory(const sl_job_t *job, const sl_task_plan_t *plan, const sl_inputs_t *in,
                       sl_task_memory_t *m)
{
    const int64_t f = (int64_t)sizeof(float);
    m->read_rows = mlp_read_rows(job, plan, in);
    m->read_row_bytes = in->cols * f;
    m->read_opt = "batch-size";
    m->read_opt_value = job->batch_size;
    m->outs = &plan->outs;
    snprintf(m->out_opt, sizeof m->out_opt, "--unit-rows %lld", (long long)job->unit_rows);
    m->batch_rows = job->batch_size;
    m->batch_row_bytes = sl_bytes3(plan->d_in + plan->outs.spec[0].cols, f, 1);
}

/* The payload: features, f32 [rows, d0]. */
static void *mlp_payload_new(sl_task_t *t, const sl_inputs_t *in, int64_t rows)
{
    (void)t;
    return sl_xmalloc((size_t)sl_bytes3(rows, in->cols, sizeof(float)));
}

static void mlp_payload_free(sl_task_t *t, void *payload)
{
    (void)t;
    free(payload);
}

static int mlp_read(sl_task_t *t, sl_reader_t *r, const sl_inputs_t *in, int shard, int64_t row0,
                    int64_t rows, void *payload, sl_error_t *err)
{
    (void)t;
    return sl_reader_read(r, in, shard, row0, rows, payload, err);
}

static void mlp_compute(sl_task_t *t, sl_comm_t *comm, void *payload, int64_t rows,
                        void *const *outs, int64_t r0, sl_row_error_fn on_error, void *ctx)
{
    mlp_task_t *m = (mlp_task_t *)t;
    float *x = payload;
    int64_t cols = t->plan->d_in, out_cols = t->plan->outs.spec[0].cols;
    unsigned char *bad = sl_xcalloc((size_t)rows + 1, 1);
    /* Rows holding NaN/Inf fail alone: recorded, zeroed for the forward pass, NaN on output. */
    for (int64_t i = 0; i < rows; i++) {
        float *r = x + i * cols;
        for (int64_t j = 0; j < cols; j++)
            if (!isfinite(r[j])) {
                char why[96];
                snprintf(why, sizeof why, "%s in feature %lld", isnan(r[j]) ? "NaN" : "Inf",
                         (long long)j);
                on_error(ctx, r0 + i, why);
                bad[i] = 1;
                memset(r, 0, (size_t)cols * sizeof *r);
                break;
            }
    }
    sl_tensor_t xv = sl_tensor_rows(m->x, rows), yv = sl_tensor_rows(m->y, rows);
    sl_batch_hist_add(&t->hist, rows, 0, 0);
    sl_copy_h2d(&xv, x, (size_t)rows * (size_t)cols * sizeof(float));
    sl_mlp_forward(m->mlp, comm, &xv, &yv); /* x [rows, d0] -> y [rows, dn] */
    float *out = sl_out_row(&t->plan->outs.spec[0], outs[0], r0);
    sl_copy_d2h(out, &yv, (size_t)rows * (size_t)out_cols * sizeof(float));
    for (int64_t i = 0; i < rows; i++) {
        float *o = out + i * out_cols;
        int finite = 1;
        for (int64_t j = 0; j < out_cols && finite; j++)
            finite = isfinite(o[j]);
        if (!bad[i] && !finite)
            on_error(ctx, r0 + i, "non-finite output (NaN/Inf from the model)");
        if (bad[i] || !finite)
            sl_out_fill_failed(&t->plan->outs, outs, r0 + i);
    }
    free(bad);
    if (t->on_rows)
        t->on_rows(t->rows_ctx, rows);
}

const sl_task_ops_t sl_mlp_task_ops = {
    .name = "mlp",
    .model = SL_MODEL_MLP,
    .size = sizeof(mlp_task_t),
    .plan = mlp_plan,
    .plan_free = mlp_plan_free,
    .load = mlp_load,
    .free = mlp_free,
    .read_rows = mlp_read_rows,
    .memory = mlp_memory,
    .payload_new = mlp_payload_new,
    .payload_free = mlp_payload_free,
    .read = mlp_read,
    .compute = mlp_compute,
};
