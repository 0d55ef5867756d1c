/*
 * task.c — the model families behind the runner's generic loop (see task.h).
 */
#include "runner/task.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/sl_fs.h"
#include "common/sl_hash.h"
#include "common/sl_profile.h"
#include "common/sl_size.h"
#include "models/bert.h"
#include "models/bpe.h"
#include "models/calib.h"
#include "models/chat_template.h"
#include "models/llama.h"
#include "models/mlp.h"
#include "models/tokenizer.h"
#include "models/weights.h"
#include "runner/decoder.h"

/* ---- plan ------------------------------------------------------------------------------------ */

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

/* A LLaMA-family decoder: score (the default) or generate. */
static int plan_decoder(const sl_job_t *job, sl_task_plan_t *p, sl_error_t *err)
{
    sl_llama_config_t cfg;
    if (sl_llama_config_load(job->model, &cfg, err) != 0)
        return -1;
    p->model = SL_MODEL_LLAMA;
    p->want_tokens = 1;
    p->vocab = cfg.vocab;
    int generate = !strcmp(job->task, "generate");
    if (!generate && strcmp(job->task, "auto") && strcmp(job->task, "score"))
        return sl_errorf(err, "--task %s: a %s decoder does 'score' or 'generate'", job->task,
                         cfg.arch);
    p->task = generate ? SL_TASK_GENERATE : SL_TASK_SCORE;
    int64_t ctx = cfg.max_positions;
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
        int n = snprintf(p->params, sizeof p->params, "gen new=%d t=%.17g k=%d p=%.17g seed=%lld "
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
        rc = sl_errorf(err, "%s: key 'model_type': missing or not a string (mlp or bert expected)", path);
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
        if (!strcmp(job->precision, "w8a8"))
            return sl_errorf(err,
                             "--precision w8a8: static activation scales are calibrated for mlp "
                             "and bert models (%s is a decoder); use --precision int8",
                             job->model);
        return plan_decoder(job, p, err);
    }
    if (strcmp(job->chat_template, "none") || job->system)
        return sl_errorf(err, "--%s: only for decoder models (%s is not one)",
                         job->system ? "system" : "chat-template", job->model);
    if (sl_task_model_type(job->model, mt, sizeof mt, err) != 0)
        return -1;
    int out_f = !strcmp(job->output_dtype, "f16") ? SL_F16 : SL_F32;
    if (!strcmp(mt, "mlp")) {
        sl_mlp_config_t cfg;
        snprintf(path, sizeof path, "%s/config.json", job->model);
        if (sl_mlp_config_load(path, &cfg, err) != 0)
            return -1;
        p->model = SL_MODEL_MLP;
        p->task = SL_TASK_PREDICT;
        p->d_in = cfg.dims[0];
        p->outs.n = 1;
        p->outs.spec[0] = (sl_out_spec_t){"predictions", cfg.dims[cfg.n_layers], out_f};
        sl_mlp_config_free(&cfg);
        if (strcmp(job->task, "auto") && strcmp(job->task, "predict"))
            return sl_errorf(err, "--task %s: an mlp model only does 'predict'", job->task);
        p->dataset = job->input_dataset ? job->input_dataset : "features";
        return 0;
    }
    if (!strcmp(mt, "bert")) {
        sl_bert_config_t cfg;
        if (sl_bert_config_load(job->model, &cfg, err) != 0)
            return -1;
        p->model = SL_MODEL_BERT;
        p->want_tokens = 1;
        p->vocab = cfg.vocab;
        p->max_length = job->max_length > 0 ? job->max_length : cfg.max_length;
        int rc = 0;
        if (p->max_length > cfg.max_positions)
            rc = sl_errorf(err, "--max-length %d: the model has only %lld positions", p->max_length,
                           (long long)cfg.max_positions);
        else if (p->max_length < 2)
            rc = sl_errorf(err, "--max-length %d: at least 2 ([CLS] and [SEP])", p->max_length);
        if (!strcmp(job->task, "classify") || (!strcmp(job->task, "auto") && cfg.n_labels > 0)) {
            if (cfg.n_labels <= 0 && rc == 0)
                rc = sl_errorf(err, "--task classify: %s/config.json has no classification head (id2label/num_labels)",
                               job->model);
            p->task = SL_TASK_CLASSIFY;
            p->outs.n = 3;
            p->outs.spec[0] = (sl_out_spec_t){"logits", cfg.n_labels, out_f};
            p->outs.spec[1] = (sl_out_spec_t){"probs", cfg.n_labels, out_f};
            p->outs.spec[2] = (sl_out_spec_t){"labels", 0, SL_I32};
            p->outs.n_labels = cfg.n_labels;
            p->outs.labels = sl_xcalloc((size_t)cfg.n_labels + 1, sizeof(char *));
            for (int i = 0; i < cfg.n_labels; i++)
                p->outs.labels[i] = sl_xstrdup(cfg.labels[i]);
        } else if (!strcmp(job->task, "embed") || !strcmp(job->task, "auto")) {
            p->task = SL_TASK_EMBED;
            p->outs.n = 1;
            p->outs.spec[0] = (sl_out_spec_t){"embeddings", cfg.hidden, out_f};
        } else if (rc == 0) {
            rc = sl_errorf(err, "--task %s: a bert model does 'embed' or 'classify'", job->task);
        }
        sl_bert_config_free(&cfg);
        p->dataset = job->input_dataset ? job->input_dataset : "text";
        return rc;
    }
    snprintf(path, sizeof path, "%s/config.json", job->model);
    return sl_errorf(err, "%s: model_type '%s' is not supported (mlp, bert, llama, mistral, qwen2)",
                     path, mt);
}

void sl_task_plan_free(sl_task_plan_t *p)
{
    for (int i = 0; i < p->outs.n_labels; i++)
        free(p->outs.labels[i]);
    free(p->outs.labels);
    memset(p, 0, sizeof *p);
}

/* ---- loading --------------------------------------------------------------------------------- */

struct sl_task {
    const sl_task_plan_t *plan;
    const sl_job_t *job;
    sl_mlp_t *mlp;
    sl_bert_t *bert;
    sl_tokenizer_t *tok;
    sl_llama_t *llama;
    sl_decoder_t *dec;
    sl_chat_t chat;            /* decoders: --chat-template, resolved */
    sl_reader_t prompt_reader; /* I/O thread: the --prompt-dataset of the same shard */
    sl_backend_t *be;
    sl_tensor_t *x, *y; /* mlp: [batch, d0], [batch, dn] */
    /* bert scratch: host batch buffers */
    int32_t *ids, *types; /* [B, S] padded batch */
    float *out;           /* [B, width] */
    int64_t *order;
    size_t cap_ids, cap_rows, cap_out;
    int64_t truncated, tokens;
    double tokenize_s; /* I/O thread; read by the compute thread only after sl_io_finish */
    sl_batch_hist_t hist;
    sl_task_rows_fn on_rows;
    void *rows_ctx;
};

/* --precision w8a8: the static activation scales onto the loaded quantized matrices. */
static int apply_calibration(const sl_job_t *job, sl_error_t *err)
{
    if (strcmp(job->precision, "w8a8"))
        return 0;
    char *def = sl_path_join(job->model, SL_CALIB_FILE);
    int rc = sl_calib_apply(job->calibration ? job->calibration : def, job->model, err);
    free(def);
    return rc;
}

sl_task_t *sl_task_load(const sl_job_t *job, const sl_task_plan_t *plan, sl_backend_t *be,
                        const sl_grid_t *g, sl_error_t *err)
{
    sl_task_t *t = sl_xcalloc(1, sizeof *t);
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
    if (plan->model == SL_MODEL_MLP) {
        t->mlp = sl_mlp_load(job->model, be, g->tp_size, g->tp_rank, dt, err);
        if (!t->mlp)
            goto fail;
        t->x = sl_tensor_new2(be, SL_F32, job->batch_size, plan->d_in);
        t->y = sl_tensor_new2(be, SL_F32, job->batch_size, plan->outs.spec[0].cols);
        if (apply_calibration(job, err) != 0)
            goto fail;
        return t;
    }
    sl_reader_init(&t->prompt_reader);
    if (plan->model == SL_MODEL_LLAMA) {
        t->llama = sl_llama_load(job->model, be, g->tp_size, g->tp_rank, dt, err);
        if (!t->llama)
            goto fail;
        if (sl_llama_config(t->llama)->vocab != plan->vocab) {
            sl_errorf(err, "%s: vocab_size changed while loading", job->model);
            goto fail;
        }
        t->dec = sl_decoder_new(t->llama, job, plan->max_length);
        if (sl_chat_load(job->model, job->chat_template, &t->chat, err) != 0)
            goto fail;
        return t;
    }
    t->bert = sl_bert_load(job->model, be, g->tp_size, g->tp_rank, dt, err);
    if (!t->bert || apply_calibration(job, err) != 0)
        goto fail;
    if (sl_bert_config(t->bert)->vocab != plan->vocab) {
        sl_errorf(err, "%s: vocab_size changed while loading", job->model);
        goto fail;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", job->model);
    if (access(path, R_OK) == 0) {
        t->tok = sl_tokenizer_load(path, err);
        if (!t->tok || sl_tokenizer_check_vocab(t->tok, plan->vocab, err) != 0)
            goto fail;
    }
    return t;
fail:
    sl_task_free(t);
    return NULL;
}

void sl_task_free(sl_task_t *t)
{
    if (!t)
        return;
    sl_tensor_free(t->y);
    sl_tensor_free(t->x);
    sl_mlp_free(t->mlp);
    sl_bert_free(t->bert);
    sl_tokenizer_free(t->tok);
    sl_decoder_free(t->dec);
    sl_chat_free(&t->chat);
    sl_llama_free(t->llama);
    if (t->plan && t->plan->model == SL_MODEL_LLAMA)
        sl_reader_close(&t->prompt_reader);
    free(t->ids);
    free(t->types);
    free(t->out);
    free(t->order);
    free(t);
}

/* Rows of the largest unit: no buffer needs more rows than that, whatever --unit-rows says. */
static int64_t largest_unit(const sl_job_t *job, const sl_inputs_t *in)
{
    int64_t most = 1;
    for (int i = 0; i < in->n; i++) {
        int64_t r = in->shards[i].rows < job->unit_rows ? in->shards[i].rows : job->unit_rows;
        most = r > most ? r : most;
    }
    return most;
}

static int64_t read_rows(const sl_job_t *job, const sl_task_plan_t *plan, const sl_inputs_t *in)
{
    int64_t rows = plan->want_tokens ? job->unit_rows : job->batch_size,
            most = largest_unit(job, in);
    return rows < most ? rows : most;
}

int64_t sl_task_read_rows(const sl_task_t *t, const sl_job_t *job, const sl_inputs_t *in)
{
    return read_rows(job, t->plan, in);
}

/* a * b * c, or INT64_MAX when it overflows (sl_size_check_memory says so). */
static int64_t bytes3(int64_t a, int64_t b, int64_t c)
{
    int64_t r;
    if (sl_size_mul(a, b, &r) != 0 || sl_size_mul(r, c, &r) != 0)
        return INT64_MAX;
    return r;
}

int sl_task_check_memory(const sl_job_t *job, const sl_task_plan_t *plan, const sl_inputs_t *in,
                         int64_t avail, sl_error_t *err)
{
    const int64_t f = (int64_t)sizeof(float), unit = largest_unit(job, in);
    char opt[256];
    int64_t total = 0;
    /* The I/O thread's read-ahead slots: features, or a whole unit's per-row offsets, lengths
     * and reasons (plus the ids and type ids of pre-tokenized rows). */
    int64_t rows = read_rows(job, plan, in), row_bytes = in->cols * f;
    if (plan->want_tokens)
        row_bytes =
            3 * (int64_t)sizeof(int64_t) + (in->kind == SL_INPUT_TOKENS ? 2 * in->cols * f : 0);
    int64_t b = bytes3(job->prefetch, rows, row_bytes);
    snprintf(opt, sizeof opt, "--prefetch %d with --%s %lld", job->prefetch,
             plan->want_tokens ? "unit-rows" : "batch-size",
             (long long)(plan->want_tokens ? job->unit_rows : job->batch_size));
    if (sl_size_check_memory(b, avail, opt, "the read-ahead buffers", err) != 0)
        return -1;
    sl_size_add(total, b, &total);
    /* A unit's output rows, held until written (one unit computing, one being written). */
    int64_t width = 0;
    for (int i = 0; i < plan->outs.n; i++)
        sl_size_add(width, sl_out_width(&plan->outs.spec[i]), &width);
    b = bytes3(2 * unit, width, f);
    if (plan->task == SL_TASK_GENERATE)
        snprintf(opt, sizeof opt, "--unit-rows %lld with --text-bytes %lld and --max-new-tokens %d",
                 (long long)job->unit_rows, (long long)sl_decoder_text_bytes(job),
                 job->max_new_tokens);
    else
        snprintf(opt, sizeof opt, "--unit-rows %lld", (long long)job->unit_rows);
    if (sl_size_check_memory(b, avail, opt, "a unit's output buffers", err) != 0)
        return -1;
    sl_size_add(total, b, &total);
    /* The batch: mlp input and output rows (allocated for --batch-size rows, whatever the
     * units); generate: per-slot tokens and candidates (the full vocabulary when sampling
     * without a small top-k), for at most a unit's rows. */
    int64_t batch = job->batch_size < unit ? job->batch_size : unit, per_row = 0;
    if (plan->model == SL_MODEL_MLP) {
        batch = job->batch_size;
        per_row = bytes3(plan->d_in + plan->outs.spec[0].cols, f, 1);
    } else if (plan->task == SL_TASK_GENERATE) {
        sl_size_add(bytes3(job->max_new_tokens + 1, f, 1), bytes3(plan->vocab, 2 * f, 1), &per_row);
    }
    b = bytes3(batch, per_row, 1);
    snprintf(opt, sizeof opt, "--batch-size %lld", (long long)job->batch_size);
    if (sl_size_check_memory(b, avail, opt, "the batch buffers", err) != 0)
        return -1;
    sl_size_add(total, b, &total);
    snprintf(opt, sizeof opt, "--batch-size %lld, --unit-rows %lld and --prefetch %d",
             (long long)job->batch_size, (long long)job->unit_rows, job->prefetch);
    return sl_size_check_memory(total, avail, opt,
                                "the batch, read-ahead and unit buffers together", err);
}

int64_t sl_task_truncated(const sl_task_t *t) { return t->truncated; }
double sl_task_tokenize_seconds(const sl_task_t *t) { return t->tokenize_s; }
const sl_batch_hist_t *sl_task_batch_hist(const sl_task_t *t) { return &t->hist; }

static void count_batch(sl_task_t *t, int64_t rows, int64_t real, int64_t padded)
{
    int k = 0;
    while (k + 1 < SL_BATCH_HIST_BINS && (rows >> (k + 1)) > 0)
        k++;
    t->hist.batch_rows[k]++;
    if (padded > 0) {
        int64_t pad = padded - real, bin = 10 * pad / padded;
        t->hist.padding[bin > 9 ? 9 : bin]++;
        t->hist.real_tokens += real;
        t->hist.padded_tokens += padded;
    }
}

int64_t sl_task_tokens(const sl_task_t *t)
{
    int64_t prompt, gen;
    if (t->plan->task != SL_TASK_GENERATE)
        return t->tokens;
    sl_task_token_split(t, &prompt, &gen);
    return prompt + gen;
}

void sl_task_token_split(const sl_task_t *t, int64_t *prompt, int64_t *generated)
{
    *prompt = *generated = 0;
    if (t->dec)
        sl_decoder_token_counts(t->dec, prompt, generated);
}

void sl_task_set_progress(sl_task_t *t, sl_task_rows_fn fn, void *ctx)
{
    t->on_rows = fn;
    t->rows_ctx = ctx;
    if (t->dec)
        sl_decoder_set_progress(t->dec, fn, ctx);
}

/* ---- payloads (filled on the I/O thread) ----------------------------------------------------- */

typedef struct {
    float *x; /* features: f32 [rows, d0] */
    /* tokens: row i is ids[off[i] .. off[i] + len[i]) */
    int32_t *ids, *types, *len;
    int32_t *plen; /* decoders: leading prompt tokens of each row (not scored) */
    int64_t *off;
    int64_t global_row0;
    size_t cap;
    char **fail; /* reason per row, NULL when fine */
    int64_t rows;
    int64_t truncated;
} payload_t;

void *sl_task_payload_new(sl_task_t *t, const sl_inputs_t *in, int64_t rows)
{
    payload_t *p = sl_xcalloc(1, sizeof *p);
    if (!t->plan->want_tokens) {
        p->x = sl_xmalloc((size_t)bytes3(rows, in->cols, sizeof(float)));
    } else {
        p->len = sl_xcalloc((size_t)rows + 1, sizeof *p->len);
        p->plen = sl_xcalloc((size_t)rows + 1, sizeof *p->plen);
        p->off = sl_xcalloc((size_t)rows + 1, sizeof *p->off);
        p->fail = sl_xcalloc((size_t)rows + 1, sizeof *p->fail);
    }
    return p;
}

static void clear_fail(payload_t *p)
{
    if (!p->fail)
        return;
    for (int64_t i = 0; i < p->rows; i++) {
        free(p->fail[i]);
        p->fail[i] = NULL;
    }
}

void sl_task_payload_free(sl_task_t *t, void *payload)
{
    payload_t *p = payload;
    if (!p)
        return;
    clear_fail(p);
    free(p->x);
    free(p->ids);
    free(p->types);
    free(p->len);
    free(p->plen);
    free(p->off);
    free(p->fail);
    free(p);
}

static void reserve(payload_t *p, size_t n)
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

static void fail_row(payload_t *p, int64_t i, const char *fmt, long long a, long long b)
{
    char buf[96];
    snprintf(buf, sizeof buf, fmt, a, b);
    p->fail[i] = sl_xstrdup(buf);
    p->len[i] = 0;
}

static int read_text_rows(sl_task_t *t, sl_reader_t *r, const sl_inputs_t *in, int shard,
                          int64_t row0, int64_t rows, payload_t *p, sl_error_t *err)
{
    if (!t->tok)
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
        if (sl_tokenizer_encode(t->tok, s, strlen(s), max_len, buf, &n, &trunc, &rowerr) != 0) {
            p->fail[i] = sl_xstrdup(rowerr.msg);
            p->len[i] = 0;
        } else {
            reserve(p, used + (size_t)n);
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
static int chat_encode_grow(const sl_task_t *t, const sl_bpe_t *tok, const char *user, char bos,
                            int32_t **buf, int *cap, sl_error_t *err)
{
    char *text = sl_chat_render(&t->chat, tok, t->job->system, user, err);
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
static int read_decoder_text_rows(sl_task_t *t, sl_reader_t *r, const sl_inputs_t *in, int shard,
                                  int64_t row0, int64_t rows, payload_t *p, sl_error_t *err)
{
    const sl_bpe_t *tok = sl_llama_tokenizer(t->llama);
    if (!tok)
        return sl_errorf(err, "%s: no tokenizer (tokenizer.json): text input needs one (or give "
                              "token ids)",
                         t->job->model);
    char **texts = sl_xcalloc((size_t)rows + 1, sizeof *texts);
    char **prompts = NULL;
    int rc = sl_reader_read_text(r, in, shard, row0, rows, texts, err);
    if (rc == 0 && t->plan->prompt_dataset) {
        sl_inputs_t pin = *in; /* the same shards, the prompt dataset */
        pin.dataset = (char *)t->plan->prompt_dataset;
        prompts = sl_xcalloc((size_t)rows + 1, sizeof *prompts);
        rc = sl_reader_read_text(&t->prompt_reader, &pin, shard, row0, rows, prompts, err);
    }
    int cap = 1024, pcap = 256;
    int32_t *buf = sl_xmalloc((size_t)cap * sizeof *buf), *pbuf = sl_xmalloc((size_t)pcap * sizeof *pbuf);
    int score = t->plan->task == SL_TASK_SCORE, max_len = t->plan->max_length;
    char bos = !strcmp(t->job->bos, "always") ? 'y' : !strcmp(t->job->bos, "never") ? 'n' : 'a';
    int chat = t->chat.form != SL_CHAT_NONE;
    size_t used = 0;
    for (int64_t i = 0; rc == 0 && i < rows; i++) {
        p->off[i] = (int64_t)used;
        sl_error_t rowerr;
        const char *s = texts[i] ? texts[i] : "";
        int np = 0, n;
        if (prompts) {
            const char *ps = prompts[i] ? prompts[i] : "";
            if (chat) {
                np = chat_encode_grow(t, tok, ps, bos, &pbuf, &pcap, &rowerr);
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
                char why[160];
                snprintf(why, sizeof why, "prompt: %s", rowerr.msg);
                p->fail[i] = sl_xstrdup(why);
                p->len[i] = 0;
                goto next;
            }
        }
        n = chat && !prompts ? chat_encode_grow(t, tok, s, bos, &buf, &cap, &rowerr)
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
        reserve(p, used + (size_t)total);
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

static int read_token_rows(sl_task_t *t, sl_reader_t *r, const sl_inputs_t *in, int shard,
                           int64_t row0, int64_t rows, payload_t *p, sl_error_t *err)
{
    int64_t L = in->cols;
    int32_t *ids = sl_xmalloc((size_t)bytes3(rows, L, sizeof *ids) + sizeof *ids);
    int32_t *types = sl_xmalloc((size_t)bytes3(rows, L, sizeof *types) + sizeof *types);
    int rc = sl_reader_read_tokens(r, in, shard, row0, rows, ids, p->len, types, err);
    size_t used = 0;
    for (int64_t i = 0; rc == 0 && i < rows; i++) {
        p->off[i] = (int64_t)used;
        int64_t n = p->len[i];
        if (n < 1 || n > L) {
            fail_row(p, i, "length %lld outside 1..%lld", (long long)n, (long long)L);
            continue;
        }
        if (n > t->plan->max_length) {
            fail_row(p, i, "%lld tokens exceed the maximum length %lld", (long long)n,
                     (long long)t->plan->max_length);
            continue;
        }
        const int32_t *row = ids + i * L;
        int64_t bad = -1;
        for (int64_t j = 0; j < n && bad < 0; j++)
            if (row[j] < 0 || row[j] >= t->plan->vocab || types[i * L + j] < 0)
                bad = j;
        if (bad >= 0) {
            fail_row(p, i, "token id %lld at position %lld is out of the vocabulary", (long long)row[bad],
                     (long long)bad);
            continue;
        }
        reserve(p, used + (size_t)n);
        memcpy(p->ids + used, row, (size_t)n * sizeof *row);
        memcpy(p->types + used, types + i * L, (size_t)n * sizeof *types);
        used += (size_t)n;
    }
    free(ids);
    free(types);
    return rc;
}

int sl_task_read(sl_task_t *t, sl_reader_t *r, const sl_inputs_t *in, int shard, int64_t row0,
                 int64_t rows, void *payload, sl_error_t *err)
{
    payload_t *p = payload;
    clear_fail(p);
    p->rows = rows;
    p->truncated = 0;
    p->global_row0 = in->shards[shard].first_row + row0;
    if (p->plen)
        memset(p->plen, 0, (size_t)rows * sizeof *p->plen);
    if (in->kind == SL_INPUT_FEATURES)
        return sl_reader_read(r, in, shard, row0, rows, p->x, err);
    if (in->kind != SL_INPUT_TEXT) {
        if (t->chat.form != SL_CHAT_NONE)
            return sl_errorf(err, "%s: --chat-template needs text in dataset '%s', not token ids",
                             in->shards[shard].path, in->dataset);
        return read_token_rows(t, r, in, shard, row0, rows, p, err);
    }
    /* reading and tokenizing text: the report counts it as tokenize time */
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    SL_RANGE_PUSH("tokenize");
    int rc = t->llama ? read_decoder_text_rows(t, r, in, shard, row0, rows, p, err)
                      : read_text_rows(t, r, in, shard, row0, rows, p, err);
    SL_RANGE_POP();
    clock_gettime(CLOCK_MONOTONIC, &b);
    t->tokenize_s += (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
    return rc;
}

/* ---- compute --------------------------------------------------------------------------------- */

static void compute_features(sl_task_t *t, sl_comm_t *comm, payload_t *p, int64_t rows,
                             float *const *outs, int64_t r0, sl_row_error_fn on_error, void *ctx)
{
    int64_t cols = t->plan->d_in, out_cols = t->plan->outs.spec[0].cols;
    unsigned char *bad = sl_xcalloc((size_t)rows + 1, 1);
    /* Rows holding NaN/Inf fail alone: recorded, zeroed for the forward pass, NaN on output. */
    for (int64_t i = 0; i < rows; i++) {
        float *r = p->x + i * cols;
        for (int64_t j = 0; j < cols; j++)
            if (!isfinite(r[j])) {
                char why[96];
                snprintf(why, sizeof why, "%s in feature %lld", isnan(r[j]) ? "NaN" : "Inf", (long long)j);
                on_error(ctx, r0 + i, why);
                bad[i] = 1;
                memset(r, 0, (size_t)cols * sizeof *r);
                break;
            }
    }
    sl_tensor_t xv = sl_tensor_rows(t->x, rows), yv = sl_tensor_rows(t->y, rows);
    count_batch(t, rows, 0, 0);
    sl_copy_h2d(&xv, p->x, (size_t)rows * (size_t)cols * sizeof(float));
    sl_mlp_forward(t->mlp, comm, &xv, &yv);
    float *out = outs[0] + r0 * out_cols;
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

static const int32_t *g_sort_len; /* qsort has no context argument in C11 */
static int by_length(const void *a, const void *b)
{
    int64_t i = *(const int64_t *)a, j = *(const int64_t *)b;
    int32_t li = g_sort_len[i], lj = g_sort_len[j];
    if (li != lj)
        return li < lj ? -1 : 1;
    return i < j ? -1 : (i > j); /* stable: equal lengths keep input order */
}

void sl_order_by_length(int64_t *order, int64_t n, const int32_t *len)
{
    g_sort_len = len;
    qsort(order, (size_t)n, sizeof *order, by_length);
}

static void grow(void **buf, size_t *cap, size_t n, size_t elem)
{
    if (n > *cap) {
        *buf = sl_xrealloc(*buf, n * elem);
        *cap = n;
    }
}

static void compute_tokens(sl_task_t *t, sl_comm_t *comm, payload_t *p, int64_t rows,
                           float *const *outs, int64_t r0, sl_row_error_fn on_error, void *ctx)
{
    const sl_task_plan_t *plan = t->plan;
    t->truncated += p->truncated;
    /* Sort the good rows by length, so each batch pads only to its own longest row. */
    grow((void **)&t->order, &t->cap_rows, (size_t)rows + 1, sizeof *t->order);
    int64_t n = 0;
    for (int64_t i = 0; i < rows; i++) {
        if (p->fail[i]) {
            on_error(ctx, r0 + i, p->fail[i]);
            sl_out_fill_failed(&plan->outs, outs, r0 + i);
        } else {
            t->order[n++] = i;
        }
    }
    sl_order_by_length(t->order, n, p->len);
    int64_t width = plan->outs.spec[0].cols; /* embedding size, or the number of labels */
    for (int64_t i = 0; i < n;) {
        /* Grow the batch while its real tokens stay within the token budget: the encoder runs
         * over the packed real tokens only (padding costs no GEMM work), so sorted rows of any
         * length mix share one batch and the GEMMs get as many rows as the budget allows. The
         * padded size still bounds the attention's per-row key buffers (4x the budget). */
        int64_t j = i + 1, real = p->len[t->order[i]];
        while (j < n && j - i < t->job->batch_size) {
            int64_t next = p->len[t->order[j]];
            if (real + next > t->job->batch_tokens || (j - i + 1) * next > 4 * t->job->batch_tokens)
                break;
            real += next;
            j++;
        }
        int64_t B = j - i, S = p->len[t->order[j - 1]];
        if ((size_t)(B * S) > t->cap_ids) {
            t->ids = sl_xrealloc(t->ids, (size_t)(B * S) * sizeof *t->ids);
            t->types = sl_xrealloc(t->types, (size_t)(B * S) * sizeof *t->types);
            t->cap_ids = (size_t)(B * S);
        }
        int32_t *lens = sl_xmalloc((size_t)B * sizeof *lens);
        for (int64_t b = 0; b < B; b++) {
            int64_t row = t->order[i + b];
            int32_t L = p->len[row];
            lens[b] = L;
            memcpy(t->ids + b * S, p->ids + p->off[row], (size_t)L * sizeof(int32_t));
            memcpy(t->types + b * S, p->types + p->off[row], (size_t)L * sizeof(int32_t));
            for (int64_t s = L; s < S; s++)
                t->ids[b * S + s] = t->types[b * S + s] = 0; /* padding: masked out */
            t->tokens += L;
        }
        count_batch(t, B, real, B * S);
        grow((void **)&t->out, &t->cap_out, (size_t)(B * width), sizeof *t->out);
        if (plan->task == SL_TASK_CLASSIFY)
            sl_bert_classify(t->bert, comm, t->ids, t->types, lens, B, S, t->out);
        else
            sl_bert_embed(t->bert, comm, t->ids, t->types, lens, B, S, t->out);
        /* Back to input order. */
        for (int64_t b = 0; b < B; b++) {
            int64_t row = r0 + t->order[i + b];
            const float *o = t->out + b * width;
            int finite = 1;
            for (int64_t k = 0; k < width && finite; k++)
                finite = isfinite(o[k]);
            if (!finite) {
                on_error(ctx, row, "non-finite output (NaN/Inf from the model)");
                sl_out_fill_failed(&plan->outs, outs, row);
                continue;
            }
            memcpy(outs[0] + row * width, o, (size_t)width * sizeof(float));
            if (plan->task == SL_TASK_CLASSIFY) {
                /* probs = softmax(logits) in double; label = argmax */
                float *pr = outs[1] + row * width;
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
                outs[2][row] = (float)arg;
            }
        }
        free(lens);
        if (t->on_rows)
            t->on_rows(t->rows_ctx, B);
        i = j;
    }
}

void sl_task_compute(sl_task_t *t, sl_comm_t *comm, void *payload, int64_t rows,
                     float *const *outs, int64_t out_row0, sl_row_error_fn on_error, void *ctx)
{
    payload_t *p = payload;
    if (t->plan->model == SL_MODEL_MLP) {
        compute_features(t, comm, payload, rows, outs, out_row0, on_error, ctx);
    } else if (t->plan->model == SL_MODEL_LLAMA) {
        t->truncated += p->truncated;
        sl_decoder_rows_t dr = {rows, p->ids, p->off, p->len, p->plen, p->fail, p->global_row0};
        if (t->plan->task == SL_TASK_GENERATE)
            t->tokens += sl_decoder_generate(t->dec, comm, &dr, &t->plan->outs, outs, out_row0,
                                             on_error, ctx);
        else
            t->tokens += sl_decoder_score(t->dec, comm, &dr, &t->plan->outs, outs, out_row0,
                                          on_error, ctx);
    } else {
        compute_tokens(t, comm, payload, rows, outs, out_row0, on_error, ctx);
    }
}
