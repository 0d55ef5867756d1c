/*
 * task.h — what the runner computes, independent of the model family: the model family
 * (mlp, bert or llama) and the task (predict, embed, classify, score, generate) decide the
 * input kind, the output
 * datasets, how the I/O thread prepares rows (read features; read text and tokenize; read
 * token ids) and how the compute thread turns prepared rows into output rows.
 *
 * Features (mlp) are read and computed batch by batch. Token inputs (bert, decoders) are read a
 * whole unit at a time, so that the unit's rows can be sorted by length and packed into batches
 * under a token budget; outputs go back in input order. Decoder tasks live in decoder.c.
 */
#ifndef SL_TASK_H
#define SL_TASK_H

#include <stdint.h>

#include "jobs/input.h"
#include "jobs/output.h"
#include "jobs/spec.h"
#include "partition/comm.h"
#include "partition/grid.h"

typedef enum { SL_MODEL_MLP = 0, SL_MODEL_BERT = 1, SL_MODEL_LLAMA = 2 } sl_model_kind_t;
typedef enum {
    SL_TASK_PREDICT = 0,
    SL_TASK_EMBED = 1,
    SL_TASK_CLASSIFY = 2,
    SL_TASK_SCORE = 3,
    SL_TASK_GENERATE = 4,
} sl_task_kind_t;

/* What every rank knows before loading anything (from config files only). */
typedef struct {
    sl_model_kind_t model;
    sl_task_kind_t task;
    int want_tokens;       /* inputs are text or token ids */
    const char *dataset;   /* the input dataset name to use */
    int64_t d_in;          /* mlp: features */
    int max_length;        /* bert, decoders: tokens per row incl. specials */
    int64_t vocab;         /* bert, decoders: valid ids are [0, vocab) */
    const char *prompt_dataset; /* score: prompts of the continuations, or NULL */
    char params[512];      /* task settings that change results (hashed into the job hash) */
    sl_outputs_t outs;
} sl_task_plan_t;

/* Reads the model directory's config; errors name the file and key. */
int sl_task_plan(const sl_job_t *job, sl_task_plan_t *plan, sl_error_t *err);
void sl_task_plan_free(sl_task_plan_t *plan);
const char *sl_task_name(sl_task_kind_t t);
const char *sl_task_model_name(sl_model_kind_t m); /* "mlp", "bert", "llama" */
/* model_type from DIR/config.json into buf; errors name the file (and --model DIR). */
int sl_task_model_type(const char *dir, char *buf, size_t len, sl_error_t *err);

typedef struct sl_task sl_task_t;

/* Loads this rank's slice of the model (and the tokenizer) onto the backend. */
sl_task_t *sl_task_load(const sl_job_t *job, const sl_task_plan_t *plan, sl_backend_t *be,
                        const sl_grid_t *g, sl_error_t *err);
void sl_task_free(sl_task_t *t);

/* Rows the I/O thread reads per request: a batch (features) or a whole unit (tokens), at most
 * the rows of the largest unit of `in`. */
int64_t sl_task_read_rows(const sl_task_t *t, const sl_job_t *job, const sl_inputs_t *in);

/* Refuses option values whose host buffers (read-ahead slots, a unit's outputs, the batch) would
 * not fit in `avail` bytes, or whose sizes overflow: the message names the options and values
 * and the bytes needed. Run before anything is allocated (sl_mem_available() for avail). */
int sl_task_check_memory(const sl_job_t *job, const sl_task_plan_t *plan, const sl_inputs_t *in,
                         int64_t avail, sl_error_t *err);

/* Buffers for one I/O slot of up to `rows` rows. */
void *sl_task_payload_new(sl_task_t *t, const sl_inputs_t *in, int64_t rows);
void sl_task_payload_free(sl_task_t *t, void *payload);
/* I/O thread: read (and tokenize) rows into a payload. Bad rows are recorded in the payload,
 * not returned as errors; a failed read is. */
int sl_task_read(sl_task_t *t, sl_reader_t *r, const sl_inputs_t *in, int shard, int64_t row0,
                 int64_t rows, void *payload, sl_error_t *err);

/* Row failures found while preparing or computing: row index relative to out_row0's unit. */
typedef void (*sl_row_error_fn)(void *ctx, int64_t row, const char *reason);

/* Compute thread: runs the model over the payload's rows and writes output i's rows to
 * outs[i] + out_row0 * width. Failed rows get NaN (or -1 for integer outputs). */
void sl_task_compute(sl_task_t *t, sl_comm_t *comm, void *payload, int64_t rows,
                     float *const *outs, int64_t out_row0, sl_row_error_fn on_error, void *ctx);

/* Sorts order[0..n) (row indices) by len[row], shortest first, equal lengths in input order:
 * how token rows are batched (encoder and decoder tasks). Not thread-safe (one compute thread). */
void sl_order_by_length(int64_t *order, int64_t n, const int32_t *len);

/* Counters for the report: rows truncated to max_length, real tokens computed (generate:
 * prompt + generated tokens of the finished rows, split by sl_task_token_split), seconds the
 * I/O thread spent tokenizing. */
int64_t sl_task_truncated(const sl_task_t *t);
int64_t sl_task_tokens(const sl_task_t *t);
void sl_task_token_split(const sl_task_t *t, int64_t *prompt, int64_t *generated);
double sl_task_tokenize_seconds(const sl_task_t *t);

/* Forward passes by size, for the report: batch_rows[k] counts passes of 2^k .. 2^(k+1)-1
 * rows (mlp, bert); padding[k] counts bert passes whose padded [B, S] token grid was
 * 10k % .. 10(k+1) % padding (the last bin includes 100 %), with the token totals. Decoder
 * tasks batch inside runner/decoder.c and record nothing here. */
#define SL_BATCH_HIST_BINS 21
typedef struct {
    int64_t batch_rows[SL_BATCH_HIST_BINS];
    int64_t padding[10];
    int64_t real_tokens, padded_tokens;
} sl_batch_hist_t;
const sl_batch_hist_t *sl_task_batch_hist(const sl_task_t *t);

/* Progress inside a compute call: fn(ctx, rows) as rows are finished (per batch, or per
 * generated row), before the unit is committed. Called on the compute thread. */
typedef void (*sl_task_rows_fn)(void *ctx, int64_t rows);
void sl_task_set_progress(sl_task_t *t, sl_task_rows_fn fn, void *ctx);

#endif
