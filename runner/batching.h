/*
 * batching.h — what the task families (runner/<family>_task.c) share to turn a unit of input rows
 * into batches: the token rows the I/O thread prepares (packed ids, per-row lengths and failure
 * reasons), reading pre-tokenized ids into them, ordering rows by length, the report's
 * batch-size histogram, and the host memory check of the buffers a job will hold.
 *
 * Nothing here knows a model family; the families call it, and it calls none of them.
 */
#ifndef SL_BATCHING_H
#define SL_BATCHING_H

#include <stddef.h>
#include <stdint.h>

#include "common/sl_error.h"
#include "jobs/input.h"
#include "jobs/output.h"
#include "jobs/spec.h"

/* A row failure found while preparing or computing: `row` is relative to the unit the outputs
 * belong to (out_row0 already added), `reason` a short message. */
typedef void (*sl_row_error_fn)(void *ctx, int64_t row, const char *reason);
/* Progress inside a compute call: `rows` more rows finished (per batch, or per generated row),
 * before the unit is committed. Called on the compute thread. */
typedef void (*sl_rows_done_fn)(void *ctx, int64_t rows);

/* a * b * c, or INT64_MAX when it overflows (sl_size_check_memory says so). */
int64_t sl_bytes3(int64_t a, int64_t b, int64_t c);

/* Rows of the largest unit of `in`: no buffer needs more rows than that, whatever --unit-rows
 * says. */
int64_t sl_batch_largest_unit(const sl_job_t *job, const sl_inputs_t *in);

/* Rows the I/O thread reads per request: `want` (--batch-size, or --unit-rows for a whole
 * unit), at most the rows of the largest unit. */
int64_t sl_batch_read_rows(const sl_job_t *job, const sl_inputs_t *in, int64_t want);

/* Token rows of one I/O slot: row i is ids[off[i] .. off[i] + len[i]) (type ids beside them),
 * of which the first plen[i] are a prompt (decoders). A row that could not be prepared has
 * fail[i] set (its reason) and len[i] 0. */
typedef struct {
    int32_t *ids, *types; /* [cap] */
    int32_t *len, *plen;  /* [rows] */
    int64_t *off;         /* [rows] */
    char **fail;          /* [rows] reason per row, NULL when fine */
    size_t cap;
    int64_t rows;
    int64_t global_row0; /* index of row 0 in the whole job */
    int64_t truncated;   /* rows cut to the maximum length */
} sl_token_rows_t;

sl_token_rows_t *sl_token_rows_new(int64_t rows);
void sl_token_rows_free(sl_token_rows_t *p);
/* Ready for rows [row0, row0 + rows) of shard `shard`: reasons freed, counters and prompt
 * lengths zeroed. */
void sl_token_rows_reset(sl_token_rows_t *p, const sl_inputs_t *in, int shard, int64_t row0,
                         int64_t rows);
/* Room for n packed ids (and type ids). */
void sl_token_rows_reserve(sl_token_rows_t *p, size_t n);
/* Row i failed: the reason is fmt with two integers. */
void sl_token_rows_fail(sl_token_rows_t *p, int64_t i, const char *fmt, long long a, long long b);
/* Reads pre-tokenized rows (ids with lengths and type ids): rows longer than max_length or with
 * an id outside [0, vocab) fail alone. A failed read is returned. */
int sl_token_rows_read_ids(sl_token_rows_t *p, sl_reader_t *r, const sl_inputs_t *in, int shard,
                           int64_t row0, int64_t rows, int max_length, int64_t vocab,
                           sl_error_t *err);

/* Sorts order[0..n) (row indices) by len[row], shortest first, equal lengths in input order:
 * how token rows are batched (encoder and decoder tasks). */
void sl_order_by_length(int64_t *order, int64_t n, const int32_t *len);

/* Grows *buf to at least n elements of elem bytes (contents kept). */
void sl_grow(void **buf, size_t *cap, size_t n, size_t elem);

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
/* One forward pass of `rows` rows; padded > 0: its grid held `padded` tokens, `real` of them
 * real. */
void sl_batch_hist_add(sl_batch_hist_t *h, int64_t rows, int64_t real, int64_t padded);

/* Host buffers a job holds, as a family sizes them for sl_batch_check_memory. */
typedef struct {
    int64_t read_rows;      /* rows per I/O slot (--prefetch slots) */
    int64_t read_row_bytes; /* bytes per row of a slot */
    const char *read_opt;   /* the option that sets read_rows: "batch-size" or "unit-rows" */
    int64_t read_opt_value;
    const sl_outputs_t *outs;            /* a unit's outputs (two units are held) */
    char out_opt[256];                   /* the options behind their size */
    int64_t batch_rows, batch_row_bytes; /* the compute thread's batch */
} sl_task_memory_t;

/* Refuses sizes (one kind of buffer, or all together) that would not fit in `avail` bytes, or
 * overflow: the message names the options and values and the bytes needed. */
int sl_batch_check_memory(const sl_job_t *job, const sl_inputs_t *in, const sl_task_memory_t *m,
                          int64_t avail, sl_error_t *err);

/* The calibration file of `model` in folder `dir` (NULL: the folder `run` reads it from by
 * default): DIR/shardline-calibration.safetensors for a model directory (by default the model
 * directory itself), DIR/FILE.shardline-calibration.safetensors for a single-file model (a GGUF
 * file FILE; by default the folder that holds it), so that several GGUF files in one folder
 * each have their own. Malloc'd. */
char *sl_batch_calibration_path(const char *model, const char *dir);

/* --precision w8a8: the static activation scales (--calibration, or the model's calibration file,
 * sl_batch_calibration_path) onto the quantized matrices loaded since sl_wlog_reset; other
 * precisions: nothing. For every family, right after its weights load. */
int sl_batch_calibrate(const sl_job_t *job, sl_error_t *err);

/* Monotonic seconds (timing of tokenization on the I/O thread). */
double sl_batch_now(void);

#endif
