/*
 * decoder_task.c — the LLaMA-family decoders (tasks `score` and `generate`): the plan (context,
 * chat template, the settings hashed into the job), the I/O thread's tokenization of text rows
 * (with a prompt dataset or a chat template) or reading of token ids, and the compute thread's
 * hand-over of a unit's rows to the decoder engine (runner/decoder.c), which batches them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/sl_hash.h"
#include "common/sl_profile.h"
#include "common/sl_size.h"
#include "models/tokenizers/bpe.h"
#include "models/tokenizers/chat_template.h"
#include "models/llama.h"
#include "runner/decoder.h"
#include "runner/task.h"

typedef struct {
    sl_task_t base;
    sl_llama_t *llama;
    sl_decoder_t *dec;
    sl_chat_t chat;            /* --chat-template, resolved */
    sl_reader_t prompt_reader; /* I/O thread: the --prompt-dataset of the same shard */
} decoder_task_t;

/* ---- plan ------------------------------------------------------------------------------------ */

/* A LLaMA-family decoder: score (the default) or generate. */
static int decoder_plan(const sl_job_t *job, sl_task_plan_t *p, sl_error_t *err)
{
    sl_llama_config_t *cfg = sl_xcalloc(1, sizeof *cfg);
    if (sl_llama_config_load(job->model, cfg, err) != 0) {
        free(cfg);
        return -1;
    }
    p->config = cfg;
    p->want_tokens = 1;
    p->vocab = cfg->vocab;
    int generate = !strcmp(job->task, "generate");
    if (!generate && strcmp(job->task, "auto") && strcmp(job->task, "score"))
        return sl_errorf(err, "--task %s: a %s decoder does 'score' or 'generate'", job->task,
                         cfg->arch);
    p->task = generate ? SL_TASK_GENERATE : SL_TASK_SCORE;
    int64_t ctx = cfg->max_positions;
    p->max_length = job->max_length > 0 ? job->max_length : (int)(ctx < 2048 ? ctx : 2048);
    if (p->max_length > ctx)
        return sl_errorf(err, "--max-length %d: the model has a context of %lld tokens",
                         p->max_length, (long long)ctx);
    if (p->max_length < 2)
        return sl_errorf(err, "--max-length %d: at least 2", p->max_length);
    if (job->prompt_dataset && generate)
        return sl_errorf(err, "--prompt-dataset: only for --task score (generate reads its "
                              "prompts from --input-dataset)");
    if (generate && job->max_new_tokens >= p->max_length)
        return sl_errorf(err, "--max-new-tokens %d: must be below the context (--max-length %d)",
                         job->max_new_tokens, p->max_length);
    p->prompt_dataset = job->prompt_dataset;
    /* The chat template: read and recognised here, so a model whose template shardline does not
     * render is refused before anything runs. */
    sl_chat_t chat;
    if (sl_chat_load(job->model, job->chat_template, &chat, err) != 0)
        return -1;
    char chat_params[64] = "";
    if (chat.form != SL_CHAT_NONE) {
        int rc = 0;
        if (!generate && !job->prompt_dataset)
            rc = sl_errorf(err,
                           "--chat-template %s: for --task generate, or score with "
                           "--prompt-dataset (the prompt row is the user message)",
                           job->chat_template);
        else if (chat.form == SL_CHAT_MISTRAL && job->system && *job->system)
            rc = sl_errorf(err, "--system: the mistral chat template of %s has no system role",
                           job->model);
        /* what the rendered text depends on, hashed: the form, the system message, the
         * template's default system message and BOS text */
        uint64_t h = sl_hash_str(SL_HASH_INIT, job->system ? job->system : "");
        h = sl_hash_str(h, chat.default_system ? chat.default_system : "");
        h = sl_hash_str(h, chat.bos_text ? chat.bos_text : "");
        snprintf(chat_params, sizeof chat_params, " chat=%s/%016llx", sl_chat_form_name(chat.form),
                 (unsigned long long)h);
        sl_chat_free(&chat);
        if (rc != 0)
            return -1;
    } else if (job->system) {
        return sl_errorf(err, "--system: needs --chat-template (auto or a form)");
    }
    sl_decoder_outputs(job, generate, p->max_length, &p->outs);
    if (generate) {
        int n = snprintf(p->params, sizeof p->params,
                         "gen new=%d t=%.17g k=%d p=%.17g seed=%lld "
                         "text=%lld stops=%d bos=%s",
                         job->max_new_tokens, job->temperature, job->top_k, job->top_p,
                         (long long)job->seed, (long long)sl_decoder_text_bytes(job), job->n_stops,
                         job->bos);
        n += snprintf(p->params + n, sizeof p->params - (size_t)n, "%s", chat_params);
        /* the stop strings themselves, hashed: a long list does not fit the text */
        uint64_t h = SL_HASH_INIT;
        for (int i = 0; i < job->n_stops; i++)
            h = sl_hash_str(h, job->stops[i]);
        snprintf(p->params + n, sizeof p->params - (size_t)n, " stophash=%016llx",
                 (unsigned long long)h);
    } else {
        snprintf(p->params, sizeof p->params, "score prompt=%s tokens=%d bos=%s%s",
                 job->prompt_dataset ? job->prompt_dataset : "", job->token_logprobs, job->bos,
                 chat_params);
    }
    p->dataset = job->input_dataset ? job->input_dataset : "text";
    return 0;
}

static void decoder_plan_free(sl_task_plan_t *p)
{
    free(p->config);
    p->config = NULL;
}

/* ---- loading --------------------------------------------------------------------------------- */

static int decoder_load(sl_task_t *t, const sl_grid_t *g, sl_dtype_t dt, sl_error_t *err)
{
    decoder_task_t *d = (decoder_task_t *)t;
    const sl_job_t *job = t->job;
    sl_reader_init(&d->prompt_reader);
    d->llama =
        sl_llama_load_with(job->model, t->plan->config, t->be, g->tp_size, g->tp_rank, dt, err);
    /* w8a8: the calibrated ranges onto the matrices just quantized, before any row runs */
    if (!d->llama || sl_batch_calibrate(job, err) != 0)
        return -1;
    d->dec = sl_decoder_new(d->llama, job, t->plan->max_length);
    return sl_chat_load(job->model, job->chat_template, &d->chat, err);
}

static void decoder_free(sl_task_t *t)
{
    decoder_task_t *d = (decoder_task_t *)t;
    sl_decoder_free(d->dec);
    sl_chat_free(&d->chat);
    sl_llama_free(d->llama);
    sl_reader_close(&d->prompt_reader);
}

/* A whole unit per read (at most the rows of the largest unit). */
static int64_t decoder_read_rows(const sl_job_t *job, const sl_task_plan_t *plan,
                                 const sl_inputs_t *in)
{
    (void)plan;
    return sl_batch_read_rows(job, in, job->unit_rows);
}

/* Read-ahead slots of a whole unit's per-row offsets, lengths and reasons (plus the ids and
 * type ids of pre-tokenized rows); generate: per-slot tokens and candidates (the full
 * vocabulary when sampling without a small top-k), for at most a unit's rows. */
static void decoder_memory(const sl_job_t *job, const sl_task_plan_t *plan, const sl_inputs_t *in,
                           sl_task_memory_t *m)
{
    const int64_t f = (int64_t)sizeof(float), unit = sl_batch_largest_unit(job, in);
    m->read_rows = decoder_read_rows(job, plan, in);
    m->read_row_bytes =
        3 * (int64_t)sizeof(int64_t) + (in->kind == SL_INPUT_TOKENS ? 2 * in->cols * f : 0);
    m->read_opt = "unit-rows";
    m->read_opt_value = job->unit_rows;
    m->outs = &plan->outs;
    m->batch_rows = job->batch_size < unit ? job->batch_size : unit;
    if (plan->task == SL_TASK_GENERATE) {
        snprintf(m->out_opt, sizeof m->out_opt,
                 "--unit-rows %lld with --text-bytes %lld and --max-new-tokens %d",
                 (long long)job->unit_rows, (long long)sl_decoder_text_bytes(job),
                 job->max_new_tokens);
        sl_size_add(sl_bytes3(job->max_new_tokens + 1, f, 1), sl_bytes3(plan->vocab, 2 * f, 1),
                    &m->batch_row_bytes);
    } else {
        snprintf(m->out_opt, sizeof m->out_opt, "--unit-rows %lld", (long long)job->unit_rows);
    }
}

/* ---- reading (the I/O thread) ---------------------------------------------------------------- */

static void *decoder_payload_new(sl_task_t *t, const sl_inputs_t *in, int64_t rows)
{
    (void)t;
    (void)in;
    return sl_token_rows_new(rows);
}

static void decoder_payload_free(sl_task_t *t, void *payload)
{
    (void)t;
    sl_token_rows_free(payload);
}

/* Encodes text with the decoder's tokenizer into *buf (grown as needed); n tokens or a negative
 * SL_BPE_* status with err filled. bos: 'a'uto (the tokenizer's own special tokens), 'y' (a BOS
 * first and no other added special token), 'n' (no special tokens). */
static int bpe_encode_grow(const sl_bpe_t *tok, const char *s, char bos, int32_t **buf, int *cap,
                           sl_error_t *err)
{
    int n = 0;
    for (;;) {
        /* one spare slot for a BOS to prepend */
        int rc = sl_bpe_encode(tok, s, strlen(s), bos == 'a', *buf, *cap - 1, &n, err);
        if (rc == SL_BPE_OK)
            break;
        if (rc != SL_BPE_ERROR || n < *cap - 1)
            return rc;
        *cap = n + 64;
        *buf = sl_xrealloc(*buf, (size_t)*cap * sizeof **buf);
    }
    /* 'y': the BOS first, unconditionally, as transformers does (even before a text that
     * itself starts with the BOS token, as a chat template's <|im_start|> does) */
    int32_t b = sl_bpe_bos_id(tok);
    if (bos == 'y' && b >= 0) {
        memmove(*buf + 1, *buf, (size_t)n * sizeof **buf);
        (*buf)[0] = b;
        n++;
    }
    return n;
}

/* A row as the user message of the chat template's conversation, encoded: the rendered text
 * with no added special tokens (as transformers' apply_chat_template(tokenize=True)), then bos
 * 'y' puts a BOS first unless the template wrote one and 'n' drops a BOS the template wrote. */
static int chat_encode_grow(const decoder_task_t *d, const sl_bpe_t *tok, const char *user,
                            char bos, int32_t **buf, int *cap, sl_error_t *err)
{
    char *text = sl_chat_render(&d->chat, tok, d->base.job->system, user, err);
    if (!text)
        return SL_BPE_ERROR;
    int n = bpe_encode_grow(tok, text, 'n', buf, cap, err);
    free(text);
    int32_t b = sl_bpe_bos_id(tok);
    if (n > 0 && b >= 0 && bos == 'y' && (*buf)[0] != b) { /* one spare slot is kept */
        memmove(*buf + 1, *buf, (size_t)n * sizeof **buf);
        (*buf)[0] = b;
        n++;
    } else if (n > 0 && b >= 0 && bos == 'n' && (*buf)[0] == b) {
        memmove(*buf, *buf + 1, (size_t)(n - 1) * sizeof **buf);
        n--;
    }
    return n;
}

/* Decoder text rows: the text (score, generate), or a prompt + continuation pair (score with
 * --prompt-dataset: the prompt with the tokenizer's special tokens, then the continuation without
 * them; only the continuation is scored). With --chat-template, the text of generate or the
 * prompt of score is the user message of a conversation in the template (chat_encode_grow),
 * the continuation the reply that is scored. Scoring keeps the first max_length tokens (counted as
 * truncated); generation hands long prompts to the decoder, which refuses them as row errors. */
static int read_text_rows(decoder_task_t *d, sl_reader_t *r, const sl_inputs_t *in, int shard,
                          int64_t row0, int64_t rows, sl_token_rows_t *p, sl_error_t *err)
{
    const sl_task_t *t = &d->base;
    const sl_bpe_t *tok = sl_llama_tokenizer(d->llama);
    if (!tok)
        return sl_errorf(err,
                         "%s: no tokenizer (tokenizer.json): text input needs one (or give "
                         "token ids)",
                         t->job->model);
    char **texts = sl_xcalloc((size_t)rows + 1, sizeof *texts);
    char **prompts = NULL;
    int rc = sl_reader_read_text(r, in, shard, row0, rows, texts, err);
    if (rc == 0 && t->plan->prompt_dataset) {
        sl_inputs_t pin = *in; /* the same shards, the prompt dataset */
        pin.dataset = (char *)t->plan->prompt_dataset;
        prompts = sl_xcalloc((size_t)rows + 1, sizeof *prompts);
        rc = sl_reader_read_text(&d->prompt_reader, &pin, shard, row0, rows, prompts, err);
    }
    int cap = 1024, pcap = 256;
    int32_t *buf = sl_xmalloc((size_t)cap * sizeof *buf),
            *pbuf = sl_xmalloc((size_t)pcap * sizeof *pbuf);
    int score = t->plan->task == SL_TASK_SCORE, max_len = t->plan->max_length;
    char bos = !strcmp(t->job->bos, "always") ? 'y' : !strcmp(t->job->bos, "never") ? 'n' : 'a';
    int chat = d->chat.form != SL_CHAT_NONE;
    size_t used = 0;
    for (int64_t i = 0; rc == 0 && i < rows; i++) {
        p->off[i] = (int64_t)used;
        sl_error_t rowerr;
        const char *s = texts[i] ? texts[i] : "";
        int np = 0, n;
        if (prompts) {
            const char *ps = prompts[i] ? prompts[i] : "";
            if (chat) {
                np = chat_encode_grow(d, tok, ps, bos, &pbuf, &pcap, &rowerr);
            } else if (*ps) {
                np = bpe_encode_grow(tok, ps, bos, &pbuf, &pcap, &rowerr);
            } else if (bos != 'n' && sl_bpe_bos_id(tok) >= 0) {
                /* an empty prompt: the BOS alone, when this row's text would start with one */
                np = 0;
                if (bpe_encode_grow(tok, "x", bos, &pbuf, &pcap, &rowerr) > 1 &&
                    pbuf[0] == sl_bpe_bos_id(tok))
                    np = 1;
            }
            if (np < 0) {
                char why[sizeof rowerr.msg + 16];
                snprintf(why, sizeof why, "prompt: %s", rowerr.msg);
                p->fail[i] = sl_xstrdup(why);
                p->len[i] = 0;
                goto next;
            }
        }
        n = chat && !prompts ? chat_encode_grow(d, tok, s, bos, &buf, &cap, &rowerr)
                             : bpe_encode_grow(tok, s, prompts ? 'n' : bos, &buf, &cap, &rowerr);
        if (n < 0) {
            p->fail[i] = sl_xstrdup(rowerr.msg);
            p->len[i] = 0;
            goto next;
        }
        int total = np + n;
        if (score && total > max_len) {
            p->truncated++;
            total = max_len;
        }
        sl_token_rows_reserve(p, used + (size_t)total);
        memcpy(p->ids + used, pbuf, (size_t)(np < total ? np : total) * sizeof *pbuf);
        if (total > np)
            memcpy(p->ids + used + np, buf, (size_t)(total - np) * sizeof *buf);
        memset(p->types + used, 0, (size_t)total * sizeof *p->types);
        p->len[i] = total;
        p->plen[i] = np < total ? np : total;
        used += (size_t)total;
    next:
        free(texts[i]);
        texts[i] = NULL;
        if (prompts) {
            free(prompts[i]);
            prompts[i] = NULL;
        }
    }
    for (int64_t i = 0; i < rows; i++) {
        free(texts[i]);
        if (prompts)
            free(prompts[i]);
    }
    free(buf);
    free(pbuf);
    free(texts);
    free(prompts);
    return rc;
}

static int decoder_read(sl_task_t *t, sl_reader_t *r, const sl_inputs_t *in, int shard,
                        int64_t row0, int64_t rows, void *payload, sl_error_t *err)
{
    decoder_task_t *d = (decoder_task_t *)t;
    sl_token_rows_t *p = payload;
    sl_token_rows_reset(p, in, shard, row0, rows);
    if (in->kind != SL_INPUT_TEXT) {
        if (d->chat.form != SL_CHAT_NONE)
            return sl_errorf(err, "%s: --chat-template needs text in dataset '%s', not token ids",
                             in->shards[shard].path, in->dataset);
        return sl_token_rows_read_ids(p, r, in, shard, row0, rows, t->plan->max_length,
                                      t->plan->vocab, err);
    }
    /* reading and tokenizing text: the report counts it as tokenize time */
    double t0 = sl_batch_now();
    SL_RANGE_PUSH("tokenize");
    int rc = read_text_rows(d, r, in, shard, row0, rows, p, err);
    SL_RANGE_POP();
    t->tokenize_s += sl_batch_now() - t0;
    return rc;
}

/* ---- compute --------------------------------------------------------------------------------- */

static void decoder_compute(sl_task_t *t, sl_comm_t *comm, void *payload, int64_t rows,
                            void *const *outs, int64_t out_row0, sl_row_error_fn on_error,
                            void *ctx)
{
    decoder_task_t *d = (decoder_task_t *)t;
    sl_token_rows_t *p = payload;
    t->truncated += p->truncated;
    sl_decoder_set_progress(d->dec, t->on_rows, t->rows_ctx);
    sl_decoder_rows_t dr = {rows, p->ids, p->off, p->len, p->plen, p->fail, p->global_row0};
    if (t->plan->task == SL_TASK_GENERATE) {
        sl_decoder_generate(d->dec, comm, &dr, &t->plan->outs, outs, out_row0, on_error, ctx);
        /* the tokens of generate: what its finished rows hold (prompts and generated) */
        sl_decoder_token_counts(d->dec, &t->prompt_tokens, &t->gen_tokens);
        t->tokens = t->prompt_tokens + t->gen_tokens;
    } else {
        t->tokens +=
            sl_decoder_score(d->dec, comm, &dr, &t->plan->outs, outs, out_row0, on_error, ctx);
    }
}

const sl_task_ops_t sl_decoder_task_ops = {
    .name = "llama",
    .model = SL_MODEL_LLAMA,
    .size = sizeof(decoder_task_t),
    .plan = decoder_plan,
    .plan_free = decoder_plan_free,
    .load = decoder_load,
    .free = decoder_free,
    .read_rows = decoder_read_rows,
    .memory = decoder_memory,
    .payload_new = decoder_payload_new,
    .payload_free = decoder_payload_free,
    .read = decoder_read,
    .compute = decoder_compute,
};
