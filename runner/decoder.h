/*
 * decoder.h — the decoder tasks over one unit's tokenised rows: `score` (log-likelihood of each
 * row, or of its continuation after a prompt) and `generate` (batched generation with a KV cache,
 * continuous batching inside the unit, greedy or sampled with a per-row seed).
 *
 * Rows arrive packed as the I/O thread tokenised them: row i is ids[off[i] .. off[i] + len[i]),
 * of which the first plen[i] tokens are the prompt (score: not scored; generate: all of them).
 * Every rank of a TP group calls with the same rows and gets the same outputs. The decoder task
 * (runner/decoder_task.c) is its only caller in the runner.
 */
#ifndef SL_DECODER_H
#define SL_DECODER_H

#include <stdint.h>

#include "jobs/output.h"
#include "jobs/spec.h"
#include "models/llama.h"
#include "partition/comm.h"
#include "runner/batching.h"

typedef struct sl_decoder sl_decoder_t;

/* What the outputs are; the order of the output buffers handed to the run functions. */
enum {
    SL_SCORE_SUM = 0,
    SL_SCORE_MEAN,
    SL_SCORE_NTOK,
    SL_SCORE_PPL,
    SL_SCORE_TOKENS,
    SL_SCORE_TOKEN_IDS
};
enum { SL_GEN_TOKENS = 0, SL_GEN_NTOK, SL_GEN_TEXT, SL_GEN_FINISH, SL_GEN_NPROMPT };

/* Fills the output specs of a score or generate task (generate: 1 = generate). */
void sl_decoder_outputs(const sl_job_t *job, int generate, int max_length, sl_outputs_t *outs);
/* Bytes of the /text output of generate. */
int64_t sl_decoder_text_bytes(const sl_job_t *job);

sl_decoder_t *sl_decoder_new(sl_llama_t *m, const sl_job_t *job, int max_length);
void sl_decoder_free(sl_decoder_t *d);

typedef struct {
    int64_t rows;
    const int32_t *ids;
    const int64_t *off;
    const int32_t *len, *plen;
    char *const *fail;   /* reason per row (row error), NULL when fine */
    int64_t global_row0; /* index of row 0 in the whole job: seeds of sampling */
} sl_decoder_rows_t;

/* fn is called as rows finish inside a call (generate: each row; score: each batch), so
 * progress can move inside a long unit. */
void sl_decoder_set_progress(sl_decoder_t *d, sl_rows_done_fn fn, void *ctx);
/* Tokens in the outputs of the rows generated so far: prompts and generated tokens (the sums
 * of /n_prompt_tokens and /n_tokens over the rows that did not fail). */
void sl_decoder_token_counts(const sl_decoder_t *d, int64_t *prompt, int64_t *generated);

/* Writes output k's row out_row0 + i at sl_out_row(&outs->spec[k], bufs[k], out_row0 + i), in
 * the output's element type. Returns tokens computed. */
int64_t sl_decoder_score(sl_decoder_t *d, sl_comm_t *comm, const sl_decoder_rows_t *r,
                         const sl_outputs_t *outs, void *const *bufs, int64_t out_row0,
                         sl_row_error_fn on_error, void *ctx);
int64_t sl_decoder_generate(sl_decoder_t *d, sl_comm_t *comm, const sl_decoder_rows_t *r,
                            const sl_outputs_t *outs, void *const *bufs, int64_t out_row0,
                            sl_row_error_fn on_error, void *ctx);

/* Sampling of one next token from full logits [V] (exposed for tests): temperature 0 is
 * greedy (argmax; the lowest id on ties); otherwise softmax(logits / temperature) restricted to
 * the top_k most likely (0: all) and then to the smallest set reaching top_p, drawn with u in
 * [0, 1). scratch: room for 2 * V floats/ints. */
int32_t sl_sample_token(const float *logits, int64_t V, double temperature, int top_k, double top_p,
                        double u, void *scratch);
/* The u in [0, 1) of draw `step` of row `row` under `seed` (a counter-based generator, so a
 * row's draws do not depend on batching, ranks or units). */
double sl_sample_uniform(uint64_t seed, uint64_t row, uint64_t step);

#endif
