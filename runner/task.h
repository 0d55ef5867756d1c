/*
 * task.h — what the runner computes, independent of the model family: the model family
 * (mlp, bert or llama) and the task (predict, embed, classify, score, generate) decide the
 * input kind, the output datasets, how the I/O thread prepares rows (read features; read text
 * and tokenize; read token ids) and how the compute thread turns prepared rows into output rows.
 *
 * Each family is a table of functions (sl_task_ops_t, below), as each backend is: mlp_task.c
 * (predict), encoder_task.c (bert: embed, classify), decoder_task.c (llama: score, generate).
 * task.c picks the family from the model directory's config and forwards to it; the families
 * share runner/batching.c and call nothing in task.c.
 *
 * Features (mlp) are read and computed batch by batch. Token inputs (bert, decoders) are read a
 * whole unit at a time, so that the unit's rows can be sorted by length and packed into batches
 * under a token budget; outputs go back in input order.
 */
#ifndef SL_TASK_H
#define SL_TASK_H

#include <stdint.h>

#include "jobs/input.h"
#include "jobs/output.h"
#include "jobs/spec.h"
#include "partition/comm.h"
#include "partition/grid.h"
#include "runner/batching.h"

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
    int want_tokens;            /* inputs are text or token ids */
    const char *dataset;        /* the input dataset name to use */
    int64_t d_in;               /* mlp: features */
    int max_length;             /* bert, decoders: tokens per row incl. specials */
    int64_t vocab;              /* bert, decoders: valid ids are [0, vocab) */
    const char *prompt_dataset; /* score: prompts of the continuations, or NULL */
    char params[512];           /* task settings that change results (hashed into the job hash) */
    sl_outputs_t outs;
    void *config; /* the family's parsed model config, handed to its load; NULL when none */
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

/* Compute thread: runs the model over the payload's rows and writes output i's rows from
 * sl_out_row(spec i, outs[i], out_row0), in the output's element type (float, int32_t or
 * text bytes). Failed rows get NaN (or -1 for integer outputs, an empty string for text). */
void sl_task_compute(sl_task_t *t, sl_comm_t *comm, void *payload, int64_t rows, void *const *outs,
                     int64_t out_row0, sl_row_error_fn on_error, void *ctx);

/* Counters for the report: rows truncated to max_length, real tokens computed (generate:
 * prompt + generated tokens of the finished rows, split by sl_task_token_split), seconds the
 * I/O thread spent tokenizing. */
int64_t sl_task_truncated(const sl_task_t *t);
int64_t sl_task_tokens(const sl_task_t *t);
void sl_task_token_split(const sl_task_t *t, int64_t *prompt, int64_t *generated);
double sl_task_tokenize_seconds(const sl_task_t *t);

/* Forward passes by size (sl_batch_hist_t in batching.h), for the report. */
const sl_batch_hist_t *sl_task_batch_hist(const sl_task_t *t);

/* Progress inside a compute call: fn(ctx, rows) as rows are finished (per batch, or per
 * generated row), before the unit is committed. Called on the compute thread. */
void sl_task_set_progress(sl_task_t *t, sl_rows_done_fn fn, void *ctx);

/* ---- the task families ---------------------------------------------------------------------- */

/* What a family provides: a static const table. task.c has checked what is generic (the model
 * kind, the option that only decoders take) and frees what it allocated; no entry is optional.
 * The entries run where the public function of the same name runs (task.h above). */
typedef struct {
    const char *name;      /* "mlp", "bert", "llama" */
    sl_model_kind_t model; /* plan->model of its plans */
    size_t size;           /* bytes of the family's task struct, which starts with sl_task_t */
    /* Fills the plan from the job and the model's config, parsed once and kept in
     * plan->config; plan->model is set already. */
    int (*plan)(const sl_job_t *job, sl_task_plan_t *plan, sl_error_t *err);
    void (*plan_free)(sl_task_plan_t *plan); /* plan->config */
    /* t: zeroed, its sl_task_t header filled; loads from plan->config (not read again) */
    int (*load)(sl_task_t *t, const sl_grid_t *g, sl_dtype_t dtype, sl_error_t *err);
    void (*free)(sl_task_t *t); /* what load made, also after a failed load; not t itself */
    int64_t (*read_rows)(const sl_job_t *job, const sl_task_plan_t *plan, const sl_inputs_t *in);
    /* sizes the host buffers for sl_batch_check_memory (plan->config may be NULL here) */
    void (*memory)(const sl_job_t *job, const sl_task_plan_t *plan, const sl_inputs_t *in,
                   sl_task_memory_t *m);
    void *(*payload_new)(sl_task_t *t, const sl_inputs_t *in, int64_t rows);
    void (*payload_free)(sl_task_t *t, void *payload);
    int (*read)(sl_task_t *t, sl_reader_t *r, const sl_inputs_t *in, int shard, int64_t row0,
                int64_t rows, void *payload, sl_error_t *err);
    void (*compute)(sl_task_t *t, sl_comm_t *comm, void *payload, int64_t rows, void *const *outs,
                    int64_t out_row0, sl_row_error_fn on_error, void *ctx);
} sl_task_ops_t;

/* Every family's task struct starts with this header: what task.c reads for the report. The
 * counters are kept by the family (tokenize_s on the I/O thread, the rest on the compute
 * thread). */
struct sl_task {
    const sl_task_ops_t *ops;
    const sl_task_plan_t *plan;
    const sl_job_t *job;
    sl_backend_t *be;
    int64_t truncated;                 /* rows cut to max_length */
    int64_t tokens;                    /* real tokens computed (generate: prompt + generated) */
    int64_t prompt_tokens, gen_tokens; /* generate: the split of tokens */
    double tokenize_s;
    sl_batch_hist_t hist;
    sl_rows_done_fn on_rows; /* progress, or NULL */
    void *rows_ctx;
};

extern const sl_task_ops_t sl_mlp_task_ops, sl_encoder_task_ops, sl_decoder_task_ops;

#endif
