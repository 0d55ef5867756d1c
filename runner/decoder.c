/*
 * decoder.c — `score` and `generate` over one unit's rows (see decoder.h).
 *
 * Score: rows are sorted by length and packed under --batch-tokens; one forward pass per batch
 * (a KV cache shared by the layers, since each step holds whole rows), the LM head only on the
 * tokens whose successor is scored, log-probabilities vocabulary-parallel.
 *
 * Generate: S cache slots (from --batch-size, the rows, and the memory the backend has left);
 * each step packs the prompts of newly admitted rows (prefill) and the last token of every
 * running row (decode) into one forward pass; a row that finishes (EOS, a stop string,
 * --max-new-tokens, or the end of its context) frees its slot for the next waiting row.
 * Greedy and top-k sampling take each row's k best candidates, selected on the backend within
 * each rank's vocabulary shard and merged over the TP group; other sampling gathers the full
 * logits. Every rank then samples the same token (same candidates, same counter-based random
 * numbers), so no token broadcast is needed.
 */
#include "runner/decoder.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/sl_error.h"
#include "common/sl_size.h"

#define SL_TEXT_FINISH_BYTES 8

struct sl_decoder {
    sl_llama_t *m;
    const sl_job_t *job;
    int max_length;
    sl_llama_cache_t *cache;
    int64_t cache_slots, cache_ctx;
    int cache_shared;
    /* host step buffers, grown as needed */
    int32_t *ids, *slot, *pos, *sel, *target, *kv_len;
    float *logp;
    int64_t cap_t, cap_s;
    sl_rows_done_fn on_rows; /* progress, or NULL */
    void *rows_ctx;
    int64_t n_prompt, n_generated; /* tokens in the outputs of finished rows */
};

void sl_decoder_set_progress(sl_decoder_t *d, sl_rows_done_fn fn, void *ctx)
{
    d->on_rows = fn;
    d->rows_ctx = ctx;
}

void sl_decoder_token_counts(const sl_decoder_t *d, int64_t *prompt, int64_t *generated)
{
    *prompt = d->n_prompt;
    *generated = d->n_generated;
}

static void rows_done(sl_decoder_t *d, int64_t rows)
{
    if (d->on_rows && rows > 0)
        d->on_rows(d->rows_ctx, rows);
}

/* ---- outputs ----------------------------------------------------------------------------- */

int64_t sl_decoder_text_bytes(const sl_job_t *job)
{
    /* Checked: `(w + 3) / 4 * 4` wrapped negative for --text-bytes 2^63-1 and a row's text was
     * then cleared with a 2^63-byte memset. The parser bounds both options, so this cannot fail
     * for a parsed job. */
    int64_t w = job->text_bytes, up;
    if (w <= 0 && (sl_size_mul(8, job->max_new_tokens, &w) != 0 || sl_size_add(w, 64, &w) != 0))
        SL_FATAL("--max-new-tokens %d: the /text width overflows", job->max_new_tokens);
    if (sl_size_add(w, 3, &up) != 0)
        SL_FATAL("--text-bytes %lld: the /text width overflows", (long long)w);
    return up / 4 * 4;
}

void sl_decoder_outputs(const sl_job_t *job, int generate, int max_length, sl_outputs_t *outs)
{
    memset(outs, 0, sizeof *outs);
    if (!generate) {
        int out_f = !strcmp(job->output_dtype, "f16") ? SL_F16 : SL_F32;
        outs->spec[SL_SCORE_SUM] = (sl_out_spec_t){"sum_logprob", 0, SL_F32};
        outs->spec[SL_SCORE_MEAN] = (sl_out_spec_t){"mean_logprob", 0, SL_F32};
        outs->spec[SL_SCORE_NTOK] = (sl_out_spec_t){"n_tokens", 0, SL_I32};
        outs->spec[SL_SCORE_PPL] = (sl_out_spec_t){"perplexity", 0, SL_F32};
        outs->n = 4;
        if (job->token_logprobs) {
            outs->spec[outs->n++] = (sl_out_spec_t){"token_logprobs", max_length, out_f};
            /* the ids beside their log-probabilities, position for position */
            outs->spec[outs->n++] = (sl_out_spec_t){"token_ids", max_length, SL_I32};
        }
        return;
    }
    outs->spec[SL_GEN_TOKENS] = (sl_out_spec_t){"tokens", job->max_new_tokens, SL_I32};
    outs->spec[SL_GEN_NTOK] = (sl_out_spec_t){"n_tokens", 0, SL_I32};
    outs->spec[SL_GEN_TEXT] = (sl_out_spec_t){"text", sl_decoder_text_bytes(job), SL_OUT_TEXT};
    outs->spec[SL_GEN_FINISH] = (sl_out_spec_t){"finish_reason", SL_TEXT_FINISH_BYTES, SL_OUT_TEXT};
    outs->spec[SL_GEN_NPROMPT] = (sl_out_spec_t){"n_prompt_tokens", 0, SL_I32};
    outs->n = 5;
}

sl_decoder_t *sl_decoder_new(sl_llama_t *m, const sl_job_t *job, int max_length)
{
    sl_decoder_t *d = sl_xcalloc(1, sizeof *d);
    d->m = m;
    d->job = job;
    d->max_length = max_length;
    return d;
}

void sl_decoder_free(sl_decoder_t *d)
{
    if (!d)
        return;
    sl_llama_cache_free(d->cache);
    free(d->ids);
    free(d->slot);
    free(d->pos);
    free(d->sel);
    free(d->target);
    free(d->kv_len);
    free(d->logp);
    free(d);
}

static void reserve_tokens(sl_decoder_t *d, int64_t T)
{
    if (T <= d->cap_t)
        return;
    int64_t cap = T > 2 * d->cap_t ? T : 2 * d->cap_t;
    d->ids = sl_xrealloc(d->ids, (size_t)cap * sizeof *d->ids);
    d->slot = sl_xrealloc(d->slot, (size_t)cap * sizeof *d->slot);
    d->pos = sl_xrealloc(d->pos, (size_t)cap * sizeof *d->pos);
    d->sel = sl_xrealloc(d->sel, (size_t)cap * sizeof *d->sel);
    d->target = sl_xrealloc(d->target, (size_t)cap * sizeof *d->target);
    d->logp = sl_xrealloc(d->logp, (size_t)cap * sizeof *d->logp);
    d->cap_t = cap;
}

static void reserve_slots(sl_decoder_t *d, int64_t S)
{
    if (S <= d->cap_s)
        return;
    d->kv_len = sl_xrealloc(d->kv_len, (size_t)S * sizeof *d->kv_len);
    d->cap_s = S;
}

/* A cache of at least slots x ctx (shared layers or not); kept when it is big enough. */
static int ensure_cache(sl_decoder_t *d, int64_t slots, int64_t ctx, int shared, sl_error_t *err)
{
    if (d->cache && d->cache_shared == shared && d->cache_slots >= slots && d->cache_ctx >= ctx)
        return 0;
    sl_llama_cache_free(d->cache);
    d->cache = NULL;
    if (d->cache_shared == shared) {
        /* Keep the larger of each dimension, so that batches rarely reallocate, unless that
         * would more than double what this batch needs (many short rows after a few long
         * ones would otherwise multiply into a cache far larger than either). */
        int64_t s2 = slots > d->cache_slots ? slots : d->cache_slots;
        int64_t c2 = ctx > d->cache_ctx ? ctx : d->cache_ctx;
        if (s2 * c2 <= 2 * slots * ctx) {
            slots = s2;
            ctx = c2;
        }
    }
    d->cache = sl_llama_cache_new(d->m, slots, ctx, shared, err);
    if (!d->cache)
        return -1;
    d->cache_slots = slots;
    d->cache_ctx = ctx;
    d->cache_shared = shared;
    return 0;
}

/* ---- score ------------------------------------------------------------------------------- */

/* The first scored position of a row: after its prompt, and never position 0 (nothing
 * predicts the first token). */
static int64_t first_scored(const sl_decoder_rows_t *r, int64_t i)
{
    return r->plen[i] > 1 ? r->plen[i] : 1;
}

int64_t sl_decoder_score(sl_decoder_t *d, sl_comm_t *comm, const sl_decoder_rows_t *r,
                         const sl_outputs_t *outs, void *const *bufs, int64_t out_row0,
                         sl_row_error_fn on_error, void *ctx)
{
    int64_t *order = sl_xmalloc((size_t)(r->rows + 1) * sizeof *order);
    int64_t n = 0, tokens = 0;
    for (int64_t i = 0; i < r->rows; i++) {
        if (r->fail[i]) {
            on_error(ctx, out_row0 + i, r->fail[i]);
            sl_out_fill_failed(outs, bufs, out_row0 + i);
        } else if (r->len[i] - first_scored(r, i) < 1) {
            on_error(ctx, out_row0 + i,
                     r->plen[i] > 0 ? "empty continuation: no token to score"
                                    : "a single token: nothing to score");
            sl_out_fill_failed(outs, bufs, out_row0 + i);
        } else {
            order[n++] = i;
        }
    }
    sl_order_by_length(order, n, r->len);
    int64_t budget = sl_job_batch_tokens(d->job, 0), max_rows = d->job->batch_size;
    for (int64_t i = 0; i < n;) {
        /* A batch: rows in length order while the tokens fit the budget (one row at least). */
        int64_t j = i, T = 0, longest = 0;
        while (j < n && j - i < max_rows && (j == i || T + r->len[order[j]] <= budget)) {
            T += r->len[order[j]];
            longest = r->len[order[j]];
            j++;
        }
        int64_t B = j - i;
        sl_error_t err;
        if (ensure_cache(d, B, longest, 1, &err) != 0)
            SL_FATAL("%s", err.msg); /* the same on every rank: nothing half-done to keep */
        reserve_tokens(d, T);
        reserve_slots(d, d->cache_slots);
        memset(d->kv_len, 0, (size_t)d->cache_slots * sizeof *d->kv_len);
        int64_t t = 0, ns = 0;
        for (int64_t b = 0; b < B; b++) {
            int64_t row = order[i + b], L = r->len[row], s0 = first_scored(r, row);
            const int32_t *src = r->ids + r->off[row];
            for (int64_t p = 0; p < L; p++, t++) {
                d->ids[t] = src[p];
                d->slot[t] = (int32_t)b;
                d->pos[t] = (int32_t)p;
                if (p + 1 >= s0 && p + 1 < L) { /* this token's logits score token p + 1 */
                    d->sel[ns] = (int32_t)t;
                    d->target[ns++] = src[p + 1];
                }
            }
            d->kv_len[b] = (int32_t)L;
        }
        sl_llama_step_t st = {T, d->ids, d->slot, d->pos, d->kv_len, ns, d->sel, T};
        sl_llama_forward(d->m, comm, d->cache, &st);
        sl_llama_logprobs(d->m, comm, d->target, d->logp);
        tokens += T;

        int64_t k = 0;
        for (int64_t b = 0; b < B; b++) {
            int64_t row = order[i + b], L = r->len[row], s0 = first_scored(r, row);
            int64_t out = out_row0 + row, cnt = L - s0;
            double sum = 0;
            for (int64_t q = 0; q < cnt; q++)
                sum += d->logp[k + q];
            if (!isfinite(sum)) {
                on_error(ctx, out, "non-finite log-probability (NaN/Inf from the model)");
                sl_out_fill_failed(outs, bufs, out);
                k += cnt;
                continue;
            }
            const sl_out_spec_t *sp = outs->spec;
            *(float *)sl_out_row(&sp[SL_SCORE_SUM], bufs[SL_SCORE_SUM], out) = (float)sum;
            *(float *)sl_out_row(&sp[SL_SCORE_MEAN], bufs[SL_SCORE_MEAN], out) =
                (float)(sum / (double)cnt);
            *(int32_t *)sl_out_row(&sp[SL_SCORE_NTOK], bufs[SL_SCORE_NTOK], out) = (int32_t)cnt;
            *(float *)sl_out_row(&sp[SL_SCORE_PPL], bufs[SL_SCORE_PPL], out) =
                (float)exp(-sum / (double)cnt);
            if (outs->n > SL_SCORE_TOKENS) {
                int64_t w = sp[SL_SCORE_TOKENS].cols;
                float *tl = sl_out_row(&sp[SL_SCORE_TOKENS], bufs[SL_SCORE_TOKENS], out);
                for (int64_t p = 0; p < w; p++)
                    tl[p] = NAN;
                for (int64_t q = 0; q < cnt && s0 + q < w; q++)
                    tl[s0 + q] = d->logp[k + q];
                /* every token, -1 after */
                int32_t *ti = sl_out_row(&sp[SL_SCORE_TOKEN_IDS], bufs[SL_SCORE_TOKEN_IDS], out);
                const int32_t *src = r->ids + r->off[row];
                for (int64_t p = 0; p < w; p++)
                    ti[p] = p < L ? src[p] : -1;
            }
            k += cnt;
        }
        rows_done(d, B);
        i = j;
    }
    free(order);
    return tokens;
}

/* ---- sampling ---------------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

double sl_sample_uniform(uint64_t seed, uint64_t row, uint64_t step)
{
    uint64_t x = splitmix64(splitmix64(splitmix64(seed) ^ row) ^ step);
    return (double)(x >> 11) * (1.0 / 9007199254740992.0); /* 53 bits: [0, 1) */
}

typedef struct {
    float p;
    int32_t id;
} cand_t;

static int by_prob_desc(const void *a, const void *b)
{
    const cand_t *x = a, *y = b;
    if (x->p != y->p)
        return x->p > y->p ? -1 : 1;
    return x->id < y->id ? -1 : (x->id > y->id);
}

int32_t sl_sample_token(const float *logits, int64_t V, double temperature, int top_k, double top_p,
                        double u, void *scratch)
{
    int64_t best = 0;
    for (int64_t v = 1; v < V; v++)
        if (logits[v] > logits[best])
            best = v;
    if (temperature <= 0)
        return (int32_t)best;
    cand_t *c = scratch;
    double inv_t = 1.0 / temperature, mx = logits[best] * inv_t, z = 0;
    for (int64_t v = 0; v < V; v++) {
        c[v].p = (float)exp(logits[v] * inv_t - mx);
        c[v].id = (int32_t)v;
    }
    int64_t n = V;
    /* Most likely first; ties by id, so the order (and the draw) is deterministic. */
    qsort(c, (size_t)V, sizeof *c, by_prob_desc);
    if (top_k > 0 && top_k < n)
        n = top_k;
    for (int64_t i = 0; i < n; i++)
        z += c[i].p;
    if (top_p < 1.0) { /* the smallest prefix whose probability reaches top_p */
        double cum = 0;
        int64_t keep = n;
        for (int64_t i = 0; i < n; i++) {
            cum += c[i].p / z;
            if (cum >= top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
        z = 0;
        for (int64_t i = 0; i < n; i++)
            z += c[i].p;
    }
    double target = u * z, cum = 0;
    for (int64_t i = 0; i < n; i++) {
        cum += c[i].p;
        if (target < cum)
            return c[i].id;
    }
    return c[n - 1].id;
}

/* ---- generate ---------------------------------------------------------------------------- */

typedef enum { FIN_NONE = 0, FIN_EOS, FIN_STOP, FIN_LENGTH } finish_t;

typedef struct {
    int64_t row;  /* index in the unit; -1: free */
    int64_t len;  /* positions in the cache so far */
    int64_t ngen; /* tokens generated */
    int prefill;  /* admitted this step: its prompt goes in */
    int32_t last; /* last generated token */
    int32_t *gen; /* [max_new] */
} gslot_t;

/* Writes a finished row's outputs. Text: decoded (special tokens skipped), cut before the
 * first stop string, NUL-padded, and cut at a character boundary when longer than the field. */
static void finish_row(sl_decoder_t *d, const sl_decoder_rows_t *r, const sl_outputs_t *outs,
                       void *const *bufs, int64_t out, const gslot_t *g, finish_t why, char *text,
                       size_t text_cap)
{
    const sl_bpe_t *tok = sl_llama_tokenizer(d->m);
    const sl_out_spec_t *sp = outs->spec;
    int64_t maxn = sp[SL_GEN_TOKENS].cols;
    int32_t *ids = sl_out_row(&sp[SL_GEN_TOKENS], bufs[SL_GEN_TOKENS], out);
    for (int64_t i = 0; i < maxn; i++)
        ids[i] = i < g->ngen ? g->gen[i] : -1;
    *(int32_t *)sl_out_row(&sp[SL_GEN_NTOK], bufs[SL_GEN_NTOK], out) = (int32_t)g->ngen;
    *(int32_t *)sl_out_row(&sp[SL_GEN_NPROMPT], bufs[SL_GEN_NPROMPT], out) = r->len[g->row];
    d->n_prompt += r->len[g->row];
    d->n_generated += g->ngen;
    int64_t w = outs->spec[SL_GEN_TEXT].cols;
    char *dst = sl_out_row(&sp[SL_GEN_TEXT], bufs[SL_GEN_TEXT], out);
    memset(dst, 0, (size_t)w);
    if (tok) {
        size_t n = sl_bpe_decode(tok, g->gen, (int)g->ngen, 1, text, text_cap);
        if (n >= text_cap)
            n = text_cap - 1;
        text[n] = '\0';
        for (int s = 0; s < d->job->n_stops; s++) {
            char *at = strstr(text, d->job->stops[s]);
            if (at) {
                *at = '\0';
                n = (size_t)(at - text);
            }
        }
        if (n > (size_t)w) { /* cut at a UTF-8 character boundary */
            n = (size_t)w;
            while (n > 0 && ((unsigned char)text[n] & 0xC0) == 0x80)
                n--;
        }
        memcpy(dst, text, n);
    }
    static const char *names[] = {"", "eos", "stop", "length"};
    char *fin = sl_out_row(&sp[SL_GEN_FINISH], bufs[SL_GEN_FINISH], out);
    memset(fin, 0, SL_TEXT_FINISH_BYTES);
    memcpy(fin, names[why], strlen(names[why]));
}

/* Whether the generated text so far contains a stop string. */
static int hits_stop(sl_decoder_t *d, const gslot_t *g, char *text, size_t cap)
{
    const sl_bpe_t *tok = sl_llama_tokenizer(d->m);
    if (d->job->n_stops == 0 || !tok)
        return 0;
    size_t n = sl_bpe_decode(tok, g->gen, (int)g->ngen, 1, text, cap);
    text[n < cap ? n : cap - 1] = '\0';
    for (int s = 0; s < d->job->n_stops; s++)
        if (strstr(text, d->job->stops[s]))
            return 1;
    return 0;
}

int64_t sl_decoder_generate(sl_decoder_t *d, sl_comm_t *comm, const sl_decoder_rows_t *r,
                            const sl_outputs_t *outs, void *const *bufs, int64_t out_row0,
                            sl_row_error_fn on_error, void *ctx)
{
    const sl_llama_config_t *c = sl_llama_config(d->m);
    const sl_job_t *job = d->job;
    int64_t maxnew = job->max_new_tokens, V = c->vocab;

    /* Context per slot: the longest admissible row's prompt + new tokens, within max_length
     * and what one slot's share of memory allows. All TP ranks agree (the smallest budget). */
    int64_t ctx_need = 0;
    int64_t *queue = sl_xmalloc((size_t)(r->rows + 1) * sizeof *queue), nq = 0;
    for (int64_t i = 0; i < r->rows; i++) {
        int64_t out = out_row0 + i;
        char why[96];
        if (r->fail[i]) {
            on_error(ctx, out, r->fail[i]);
            sl_out_fill_failed(outs, bufs, out);
            continue;
        }
        if (r->len[i] + 1 > d->max_length) {
            snprintf(why, sizeof why, "prompt of %d tokens leaves no room to generate within %d",
                     r->len[i], d->max_length);
            on_error(ctx, out, why);
            sl_out_fill_failed(outs, bufs, out);
            continue;
        }
        int64_t need = r->len[i] + maxnew < d->max_length ? r->len[i] + maxnew : d->max_length;
        ctx_need = need > ctx_need ? need : ctx_need;
        queue[nq++] = i;
    }
    int64_t tokens = 0;
    if (nq == 0) {
        free(queue);
        return 0;
    }
    /* Slots: --batch-size, the rows, and memory (half of what is free, so activations fit). */
    size_t free_b = sl_comm_host_min_size(comm, sl_llama_free_bytes(d->m));
    size_t per_pos = sl_llama_cache_slot_bytes(d->m, 1);
    int64_t max_ctx = (int64_t)(free_b / 2 / (per_pos ? per_pos : 1));
    if (ctx_need > max_ctx) {
        /* Rows whose own context does not fit even alone are row errors; the rest go on. */
        char why[96];
        int64_t kept = 0;
        ctx_need = 0;
        for (int64_t q = 0; q < nq; q++) {
            int64_t i = queue[q];
            int64_t need = r->len[i] + maxnew < d->max_length ? r->len[i] + maxnew : d->max_length;
            if (need > max_ctx) {
                snprintf(why, sizeof why, "needs a KV cache of %lld positions; memory holds %lld",
                         (long long)need, (long long)max_ctx);
                on_error(ctx, out_row0 + i, why);
                sl_out_fill_failed(outs, bufs, out_row0 + i);
            } else {
                queue[kept++] = i;
                ctx_need = need > ctx_need ? need : ctx_need;
            }
        }
        nq = kept;
        if (nq == 0) {
            free(queue);
            return 0;
        }
    }
    size_t per_slot = sl_llama_cache_slot_bytes(d->m, ctx_need);
    int64_t S = job->batch_size < nq ? job->batch_size : nq;
    int64_t fit = (int64_t)(free_b / 2 / (per_slot ? per_slot : 1));
    S = S < fit ? S : fit;
    sl_error_t err;
    if (ensure_cache(d, S, ctx_need, 0, &err) != 0)
        SL_FATAL("%s", err.msg);
    S = d->cache_slots;

    gslot_t *slots = sl_xcalloc((size_t)S, sizeof *slots);
    for (int64_t s = 0; s < S; s++) {
        slots[s].row = -1;
        slots[s].gen = sl_xmalloc((size_t)(maxnew + 1) * sizeof *slots[s].gen);
    }
    reserve_slots(d, S);
    int64_t *sel_slot = sl_xmalloc((size_t)S * sizeof *sel_slot);
    /* Greedy and top-k sampling need only each row's best candidates, selected on the backend
     * per vocabulary shard (sl_llama_topk); other sampling gathers the full logits. */
    int tp = comm ? sl_comm_size(comm) : 1;
    int cand_k = job->temperature <= 0 ? 1 : job->top_k;
    if (cand_k > 256 || cand_k > V / tp)
        cand_k = 0;
    float *logits = cand_k > 0 ? NULL : sl_xmalloc((size_t)(S * V) * sizeof *logits);
    float *cvals = sl_xmalloc((size_t)(S * (cand_k > 0 ? cand_k : 1)) * sizeof *cvals);
    int32_t *cids = sl_xmalloc((size_t)(S * (cand_k > 0 ? cand_k : 1)) * sizeof *cids);
    void *scratch = sl_xmalloc((size_t)V * 2 * sizeof(float) + 16);
    size_t text_cap = (size_t)(maxnew * 64 + 256);
    char *text = sl_xmalloc(text_cap);
    int64_t next = 0, running = 0;
    while (next < nq || running > 0) {
        /* Admit waiting rows into free slots while their prompts fit the token budget. */
        int64_t T = running;
        for (int64_t s = 0; s < S && next < nq; s++) {
            if (slots[s].row >= 0)
                continue;
            int64_t row = queue[next];
            if (T > 0 && T + r->len[row] > sl_job_batch_tokens(job, 0))
                break;
            slots[s] = (gslot_t){row, 0, 0, 1, 0, slots[s].gen};
            T += r->len[row];
            next++;
            running++;
        }
        reserve_tokens(d, T);
        /* The step's tokens, slot by slot: a prompt being prefilled, or a running row's decode
         * step. Every token of generation is an int8-activation row (n_prompt 0): on the CPU,
         * quantized weights meet prompts and decode steps alike in the integer GEMM, as a decode
         * step's rows always did; only scoring keeps its tokens in f32 (sl_llama_step_t). */
        int64_t t = 0, ns = 0;
        for (int64_t s = 0; s < S; s++) {
            gslot_t *g = &slots[s];
            if (g->row < 0) {
                d->kv_len[s] = 0;
                continue;
            }
            if (g->prefill) {
                const int32_t *src = r->ids + r->off[g->row];
                for (int64_t p = 0; p < r->len[g->row]; p++, t++) {
                    d->ids[t] = src[p];
                    d->slot[t] = (int32_t)s;
                    d->pos[t] = (int32_t)p;
                }
                g->len = r->len[g->row];
                g->prefill = 0;
            } else {
                d->ids[t] = g->last;
                d->slot[t] = (int32_t)s;
                d->pos[t] = (int32_t)g->len;
                t++;
                g->len++;
            }
            d->sel[ns] = (int32_t)(t - 1);
            sel_slot[ns++] = s;
            d->kv_len[s] = (int32_t)g->len;
        }
        sl_llama_step_t st = {t, d->ids, d->slot, d->pos, d->kv_len, ns, d->sel, 0};
        sl_llama_forward(d->m, comm, d->cache, &st);
        if (cand_k > 0)
            sl_llama_topk(d->m, comm, cand_k, cvals, cids);
        else
            sl_llama_logits(d->m, comm, logits);
        tokens += t;
        for (int64_t i = 0; i < ns; i++) {
            gslot_t *g = &slots[sel_slot[i]];
            double u = sl_sample_uniform((uint64_t)job->seed, (uint64_t)(r->global_row0 + g->row),
                                         (uint64_t)g->ngen);
            /* The candidates come sorted as sl_sample_token orders them (value, then id), so
             * sampling among them picks exactly what sampling the full logits would. */
            int32_t tok = cand_k > 0 ? cids[i * cand_k + sl_sample_token(cvals + i * cand_k, cand_k,
                                                                         job->temperature, 0,
                                                                         job->top_p, u, scratch)]
                                     : sl_sample_token(logits + i * V, V, job->temperature,
                                                       job->top_k, job->top_p, u, scratch);
            g->gen[g->ngen++] = tok;
            g->last = tok;
            finish_t why = FIN_NONE;
            if (c->eos_id >= 0 && tok == c->eos_id)
                why = FIN_EOS;
            else if (hits_stop(d, g, text, text_cap))
                why = FIN_STOP;
            else if (g->ngen >= maxnew || g->len >= d->cache_ctx || g->len >= d->max_length)
                why = FIN_LENGTH;
            if (why != FIN_NONE) {
                finish_row(d, r, outs, bufs, out_row0 + g->row, g, why, text, text_cap);
                g->row = -1;
                running--;
                rows_done(d, 1);
            }
        }
    }
    for (int64_t s = 0; s < S; s++)
        free(slots[s].gen);
    free(slots);
    free(sel_slot);
    free(logits);
    free(cvals);
    free(cids);
    free(scratch);
    free(text);
    free(queue);
    return tokens;
}
