/*
 * task.c — picks the model family from the model's config and forwards to its table of
 * functions (see task.h); what is the same for every family (the names, the per-job counters)
 * is here.
 */
#include "runner/task.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/sl_fs.h"
#include "models/llama.h"
#include "models/formats/weights.h"

const char *sl_task_name(sl_task_kind_t t)
{
    static const char *const names[] = {"predict", "embed", "classify", "score", "generate"};
    return names[t];
}

const char *sl_task_model_name(sl_model_kind_t m)
{
    static const char *const names[] = {"mlp", "bert", "llama"};
    return names[m];
}

/* The families, by sl_model_kind_t. */
static const sl_task_ops_t *const families[] = {&sl_mlp_task_ops, &sl_encoder_task_ops,
                                                &sl_decoder_task_ops};

static const sl_task_ops_t *family(const sl_task_plan_t *plan) { return families[plan->model]; }

int sl_task_model_type(const char *dir, char *buf, size_t len, sl_error_t *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *text = NULL;
    if (sl_read_file(path, 16u << 20, &text, NULL, err) != 0)
        return sl_error_prefix(err, "--model %s", dir);
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!root)
        return sl_errorf(err, "%s: not valid JSON", path);
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    int rc = 0;
    if (!cJSON_IsString(mt))
        rc = sl_errorf(err, "%s: key 'model_type': missing or not a string (mlp or bert expected)",
                       path);
    else
        snprintf(buf, len, "%s", mt->valuestring);
    cJSON_Delete(root);
    return rc;
}

int sl_task_plan(const sl_job_t *job, sl_task_plan_t *p, sl_error_t *err)
{
    memset(p, 0, sizeof *p);
    char mt[64], path[4096];
    /* A model that is a file, not a directory, can only be a GGUF file: the GGUF reader says
     * what is wrong with one that does not start with its magic (rather than a missing
     * FILE/config.json). */
    struct stat sb;
    if (sl_llama_detect(job->model) || (stat(job->model, &sb) == 0 && !S_ISDIR(sb.st_mode))) {
        p->model = SL_MODEL_LLAMA;
        return sl_decoder_task_ops.plan(job, p, err);
    }
    if (strcmp(job->chat_template, "none") || job->system)
        return sl_errorf(err, "--%s: only for decoder models (%s is not one)",
                         job->system ? "system" : "chat-template", job->model);
    if (sl_task_model_type(job->model, mt, sizeof mt, err) != 0)
        return -1;
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
        if (families[i]->model != SL_MODEL_LLAMA && !strcmp(mt, families[i]->name)) {
            p->model = families[i]->model;
            return families[i]->plan(job, p, err);
        }
    snprintf(path, sizeof path, "%s/config.json", job->model);
    return sl_errorf(err, "%s: model_type '%s' is not supported (mlp, bert, llama, mistral, qwen2)",
                     path, mt);
}

void sl_task_plan_free(sl_task_plan_t *p)
{
    if (p->config)
        family(p)->plan_free(p);
    for (int i = 0; i < p->outs.n_labels; i++)
        free(p->outs.labels[i]);
    free(p->outs.labels);
    memset(p, 0, sizeof *p);
}

sl_task_t *sl_task_load(const sl_job_t *job, const sl_task_plan_t *plan, sl_backend_t *be,
                        const sl_grid_t *g, sl_error_t *err)
{
    const sl_task_ops_t *ops = family(plan);
    sl_task_t *t = sl_xcalloc(1, ops->size);
    t->ops = ops;
    t->plan = plan;
    t->job = job;
    t->be = be;
    /* auto: decoders keep a GGUF's quantized matrices as stored; the rest is f32 */
    sl_dtype_t dt = !strcmp(job->precision, "int8") || !strcmp(job->precision, "w8a8")
                        ? SL_WEIGHTS_INT8
                    : strcmp(job->precision, "auto") ? (sl_dtype_t)sl_dtype_parse(job->precision)
                    : plan->model == SL_MODEL_LLAMA  ? SL_WEIGHTS_AS_STORED
                                                     : SL_F32;
    sl_wlog_reset(); /* the tensors this load uploads, for the report and w8a8's scales */
    if (ops->load(t, g, dt, err) != 0) {
        sl_task_free(t);
        return NULL;
    }
    return t;
}

void sl_task_free(sl_task_t *t)
{
    if (!t)
        return;
    t->ops->free(t);
    free(t);
}

int64_t sl_task_read_rows(const sl_task_t *t, const sl_job_t *job, const sl_inputs_t *in)
{
    return t->ops->read_rows(job, t->plan, in);
}

int sl_task_check_memory(const sl_job_t *job, const sl_task_plan_t *plan, const sl_inputs_t *in,
                         int64_t avail, sl_error_t *err)
{
    sl_task_memory_t m;
    memset(&m, 0, sizeof m);
    family(plan)->memory(job, plan, in, &m);
    return sl_batch_check_memory(job, in, &m, avail, err);
}

void *sl_task_payload_new(sl_task_t *t, const sl_inputs_t *in, int64_t rows)
{
    return t->ops->payload_new(t, in, rows);
}

void sl_task_payload_free(sl_task_t *t, void *payload)
{
    if (payload)
        t->ops->payload_free(t, payload);
}

int sl_task_read(sl_task_t *t, sl_reader_t *r, const sl_inputs_t *in, int shard, int64_t row0,
                 int64_t rows, void *payload, sl_error_t *err)
{
    return t->ops->read(t, r, in, shard, row0, rows, payload, err);
}

void sl_task_compute(sl_task_t *t, sl_comm_t *comm, void *payload, int64_t rows, void *const *outs,
                     int64_t out_row0, sl_row_error_fn on_error, void *ctx)
{
    t->ops->compute(t, comm, payload, rows, outs, out_row0, on_error, ctx);
}

int64_t sl_task_truncated(const sl_task_t *t) { return t->truncated; }
int64_t sl_task_tokens(const sl_task_t *t) { return t->tokens; }
double sl_task_tokenize_seconds(const sl_task_t *t) { return t->tokenize_s; }
const sl_batch_hist_t *sl_task_batch_hist(const sl_task_t *t) { return &t->hist; }

void sl_task_token_split(const sl_task_t *t, int64_t *prompt, int64_t *generated)
{
    *prompt = t->prompt_tokens;
    *generated = t->gen_tokens;
}

void sl_task_set_progress(sl_task_t *t, sl_rows_done_fn fn, void *ctx)
{
    t->on_rows = fn;
    t->rows_ctx = ctx;
}
