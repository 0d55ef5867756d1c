/*
 * encoder_task.c — the bert family (tasks `embed` and `classify`). The I/O thread reads a whole
 * unit of text (tokenized with the model's WordPiece tokenizer, cut to --max-length) or of
 * token ids; the compute thread sorts the unit's rows by length and packs them into batches
 * under --batch-tokens, and writes outputs back in input order. classify adds the softmax
 * probabilities and the argmax label to the logits.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/sl_profile.h"
#include "models/bert.h"
#include "models/tokenizers/wordpiece.h"
#include "runner/task.h"

typedef struct {
    sl_task_t base;
    sl_bert_t *bert;
    sl_tokenizer_t *tok; /* NULL without tokenizer.json (token id inputs only) */
    /* compute thread: the padded batch, grown as needed */
    int32_t *ids, *types; /* [B, S] */
    float *out;           /* [B, width] */
    int64_t *order;       /* [rows] */
    size_t cap_ids, cap_rows, cap_out;
} encoder_task_t;

static int encoder_plan(const sl_job_t *job, sl_task_plan_t *p, sl_error_t *err)
{
    int out_f = !strcmp(job->output_dtype, "f16") ? SL_F16 : SL_F32;
    sl_bert_config_t *cfg = sl_xcalloc(1, sizeof *cfg);
    if (sl_bert_config_load(job->model, cfg, err) != 0) {
        free(cfg);
        return -1;
    }
    p->config = cfg;
    p->want_tokens = 1;
    p->vocab = cfg->vocab;
    p->max_length = job->max_length > 0 ? job->max_length : cfg->max_length;
    int rc = 0;
    if (p->max_length > cfg->max_positions)
        rc = sl_errorf(err, "--max-length %d: the model has only %lld positions", p->max_length,
                       (long long)cfg->max_positions);
    else if (p->max_length < 2)
        rc = sl_errorf(err, "--max-length %d: at least 2 ([CLS] and [SEP])", p->max_length);
    if (!strcmp(job->task, "classify") || (!strcmp(job->task, "auto") && cfg->n_labels > 0)) {
        if (cfg->n_labels <= 0 && rc == 0)
            rc = sl_errorf(err,
                           "--task classify: %s/config.json has no classification head "
                           "(id2label/num_labels)",
                           job->model);
        p->task = SL_TASK_CLASSIFY;
        p->outs.n = 3;
        p->outs.spec[0] = (sl_out_spec_t){"logits", cfg->n_labels, out_f};
        p->outs.spec[1] = (sl_out_spec_t){"probs", cfg->n_labels, out_f};
        p->outs.spec[2] = (sl_out_spec_t){"labels", 0, SL_I32};
        p->outs.n_labels = cfg->n_labels;
        p->outs.labels = sl_xcalloc((size_t)cfg->n_labels + 1, sizeof(char *));
        for (int i = 0; i < cfg->n_labels; i++)
            p->outs.labels[i] = sl_xstrdup(cfg->labels[i]);
    } else if (!strcmp(job->task, "embed") || !strcmp(job->task, "auto")) {
        p->task = SL_TASK_EMBED;
        p->outs.n = 1;
        p->outs.spec[0] = (sl_out_spec_t){"embeddings", cfg->hidden, out_f};
    } else if (rc == 0) {
        rc = sl_errorf(err, "--task %s: a bert model does 'embed' or 'classify'", job->task);
    }
    p->dataset = job->input_dataset ? job->input_dataset : "text";
    return rc;
}

static void encoder_plan_free(sl_task_plan_t *p)
{
    sl_bert_config_free(p->config);
    free(p->config);
    p->config = NULL;
}

static int encoder_load(sl_task_t *t, const sl_grid_t *g, sl_dtype_t dt, sl_error_t *err)
{
    encoder_task_t *e = (encoder_task_t *)t;
    const sl_job_t *job = t->job;
    e->bert =
        sl_bert_load_with(job->model, t->plan->config, t->be, g->tp_size, g->tp_rank, dt, err);
    if (!e->bert || sl_batch_calibrate(job, err) != 0)
        return -1;
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", job->model);
    if (access(path, R_OK) == 0) {
        e->tok = sl_tokenizer_load(path, err);
        if (!e->tok || sl_tokenizer_check_vocab(e->tok, t->plan->vocab, err) != 0)
            return -1;
    }
    return 0;
}

static void encoder_free(sl_task_t *t)
{
    encoder_task_t *e = (encoder_task_t *)t;
    sl_bert_free(e->bert);
    sl_tokenizer_free(e->tok);
    free(e->ids);
    free(e->types);
    free(e->out);
    free(e->order);
}

/* A whole unit per read (at most the rows of the largest unit). */
static int64_t token_read_rows(const sl_job_t *job, const sl_task_plan_t *plan,
                               const sl_inputs_t *in)
{
    (void)plan;
    return sl_batch_read_rows(job, in, job->unit_rows);
}

/* Read-ahead slots of a whole unit's per-row offsets, lengths and reasons (plus the ids and
 * type ids of pre-tokenized rows); the batch buffers grow with the batches. */
static void encoder_memory(const sl_job_t *job, const sl_task_plan_t *plan, const sl_inputs_t *in,
                           sl_task_memory_t *m)
{
    const int64_t f = (int64_t)sizeof(float), unit = sl_batch_largest_unit(job, in);
    m->read_rows = token_read_rows(job, plan, in);
    m->read_row_bytes =
        3 * (int64_t)sizeof(int64_t) + (in->kind == SL_INPUT_TOKENS ? 2 * in->cols * f : 0);
    m->read_opt = "unit-rows";
    m->read_opt_value = job->unit_rows;
    m->outs = &plan->outs;
    snprintf(m->out_opt, sizeof m->out_opt, "--unit-rows %lld", (long long)job->unit_rows);
    m->batch_rows = job->batch_size < unit ? job->batch_size : unit;
    m->batch_row_bytes = 0;
}

static void *encoder_payload_new(sl_task_t *t, const sl_inputs_t *in, int64_t rows)
{
    (void)t;
    (void)in;
    return sl_token_rows_new(rows);
}

static void encoder_payload_free(sl_task_t *t, void *payload)
{
    (void)t;
    sl_token_rows_free(payload);
}

/* Text rows: WordPiece with [CLS]/[SEP], cut to max_length (counted as truncated). */
static int read_text_rows(encoder_task_t *e, sl_reader_t *r, const sl_inputs_t *in, int shard,
                          int64_t row0, int64_t rows, sl_token_rows_t *p, sl_error_t *err)
{
    const sl_task_t *t = &e->base;
    if (!e->tok)
        return sl_errorf(err, "%s: no tokenizer.json: text input needs one (or give token ids)",
                         t->job->model);
    char **texts = sl_xcalloc((size_t)rows + 1, sizeof *texts);
    if (sl_reader_read_text(r, in, shard, row0, rows, texts, err) != 0) {
        free(texts);
        return -1;
    }
    int max_len = t->plan->max_length;
    int32_t *buf = sl_xmalloc((size_t)max_len * sizeof *buf);
    size_t used = 0;
    for (int64_t i = 0; i < rows; i++) {
        p->off[i] = (int64_t)used;
        int n = 0, trunc = 0;
        sl_error_t rowerr;
        const char *s = texts[i] ? texts[i] : "";
        if (sl_tokenizer_encode(e->tok, s, strlen(s), max_len, buf, &n, &trunc, &rowerr) != 0) {
            p->fail[i] = sl_xstrdup(rowerr.msg);
            p->len[i] = 0;
        } else {
            sl_token_rows_reserve(p, used + (size_t)n);
            memcpy(p->ids + used, buf, (size_t)n * sizeof *buf);
            memset(p->types + used, 0, (size_t)n * sizeof *p->types);
            p->len[i] = n;
            used += (size_t)n;
            p->truncated += trunc;
        }
        free(texts[i]);
    }
    free(buf);
    free(texts);
    return 0;
}

static int encoder_read(sl_task_t *t, sl_reader_t *r, const sl_inputs_t *in, int shard,
                        int64_t row0, int64_t rows, void *payload, sl_error_t *err)
{
    sl_token_rows_t *p = payload;
    sl_token_rows_reset(p, in, shard, row0, rows);
    if (in->kind != SL_INPUT_TEXT)
        return sl_token_rows_read_ids(p, r, in, shard, row0, rows, t->plan->max_length,
                                      t->plan->vocab, err);
    /* reading and tokenizing text: the report counts it as tokenize time */
    double t0 = sl_batch_now();
    SL_RANGE_PUSH("tokenize");
    int rc = read_text_rows((encoder_task_t *)t, r, in, shard, row0, rows, p, err);
    SL_RANGE_POP();
    t->tokenize_s += sl_batch_now() - t0;
    return rc;
}

static void encoder_compute(sl_task_t *t, sl_comm_t *comm, void *payload, int64_t rows,
                            void *const *outs, int64_t r0, sl_row_error_fn on_error, void *ctx)
{
    encoder_task_t *e = (encoder_task_t *)t;
    sl_token_rows_t *p = payload;
    const sl_task_plan_t *plan = t->plan;
    t->truncated += p->truncated;
    /* Sort the good rows by length, so each batch pads only to its own longest row. */
    sl_grow((void **)&e->order, &e->cap_rows, (size_t)rows + 1, sizeof *e->order);
    int64_t n = 0;
    for (int64_t i = 0; i < rows; i++) {
        if (p->fail[i]) {
            on_error(ctx, r0 + i, p->fail[i]);
            sl_out_fill_failed(&plan->outs, outs, r0 + i);
        } else {
            e->order[n++] = i;
        }
    }
    sl_order_by_length(e->order, n, p->len);
    int64_t width = plan->outs.spec[0].cols; /* embedding size, or the number of labels */
    for (int64_t i = 0; i < n;) {
        /* Grow the batch while its real tokens stay within the token budget: the encoder runs
         * over the packed real tokens only (padding costs no GEMM work), so sorted rows of any
         * length mix share one batch and the GEMMs get as many rows as the budget allows. The
         * padded size still bounds the attention's per-row key buffers (4x the budget). */
        const int64_t budget =
            sl_job_batch_tokens(t->job, sl_backend_kind(t->be) == SL_BACKEND_CPU);
        int64_t j = i + 1, real = p->len[e->order[i]];
        while (j < n && j - i < t->job->batch_size) {
            int64_t next = p->len[e->order[j]];
            if (real + next > budget || (j - i + 1) * next > 4 * budget)
                break;
            real += next;
            j++;
        }
        int64_t B = j - i, S = p->len[e->order[j - 1]];
        if ((size_t)(B * S) > e->cap_ids) {
            e->ids = sl_xrealloc(e->ids, (size_t)(B * S) * sizeof *e->ids);
            e->types = sl_xrealloc(e->types, (size_t)(B * S) * sizeof *e->types);
            e->cap_ids = (size_t)(B * S);
        }
        int32_t *lens = sl_xmalloc((size_t)B * sizeof *lens);
        for (int64_t b = 0; b < B; b++) {
            int64_t row = e->order[i + b];
            int32_t L = p->len[row];
            lens[b] = L;
            memcpy(e->ids + b * S, p->ids + p->off[row], (size_t)L * sizeof(int32_t));
            memcpy(e->types + b * S, p->types + p->off[row], (size_t)L * sizeof(int32_t));
            for (int64_t s = L; s < S; s++)
                e->ids[b * S + s] = e->types[b * S + s] = 0; /* padding: masked out */
            t->tokens += L;
        }
        sl_batch_hist_add(&t->hist, B, real, B * S);
        sl_grow((void **)&e->out, &e->cap_out, (size_t)(B * width), sizeof *e->out);
        if (plan->task == SL_TASK_CLASSIFY)
            sl_bert_classify(e->bert, comm, e->ids, e->types, lens, B, S, e->out);
        else
            sl_bert_embed(e->bert, comm, e->ids, e->types, lens, B, S, e->out);
        /* Back to input order. */
        for (int64_t b = 0; b < B; b++) {
            int64_t row = r0 + e->order[i + b];
            const float *o = e->out + b * width;
            int finite = 1;
            for (int64_t k = 0; k < width && finite; k++)
                finite = isfinite(o[k]);
            if (!finite) {
                on_error(ctx, row, "non-finite output (NaN/Inf from the model)");
                sl_out_fill_failed(&plan->outs, outs, row);
                continue;
            }
            memcpy(sl_out_row(&plan->outs.spec[0], outs[0], row), o, (size_t)width * sizeof(float));
            if (plan->task == SL_TASK_CLASSIFY) {
                /* probs = softmax(logits) in double; label = argmax */
                float *pr = sl_out_row(&plan->outs.spec[1], outs[1], row);
                double mx = o[0], sum = 0;
                int64_t arg = 0;
                for (int64_t k = 1; k < width; k++)
                    if (o[k] > mx) {
                        mx = o[k];
                        arg = k;
                    }
                for (int64_t k = 0; k < width; k++)
                    sum += exp((double)o[k] - mx);
                for (int64_t k = 0; k < width; k++)
                    pr[k] = (float)(exp((double)o[k] - mx) / sum);
                *(int32_t *)sl_out_row(&plan->outs.spec[2], outs[2], row) = (int32_t)arg;
            }
        }
        free(lens);
        if (t->on_rows)
            t->on_rows(t->rows_ctx, B);
        i = j;
    }
}

const sl_task_ops_t sl_encoder_task_ops = {
    .name = "bert",
    .model = SL_MODEL_BERT,
    .size = sizeof(encoder_task_t),
    .plan = encoder_plan,
    .plan_free = encoder_plan_free,
    .load = encoder_load,
    .free = encoder_free,
    .read_rows = token_read_rows,
    .memory = encoder_memory,
    .payload_new = encoder_payload_new,
    .payload_free = encoder_payload_free,
    .read = encoder_read,
    .compute = encoder_compute,
};
