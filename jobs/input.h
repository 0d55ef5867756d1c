/*
 * input.h — the input shards: expanding the --input globs, validating every file once (on rank
 * 0, then broadcast), and reading row ranges as float32 (on the I/O thread).
 */
#ifndef SL_INPUT_H
#define SL_INPUT_H

#include <hdf5.h>
#include <mpi.h>
#include <stdint.h>

#include "common/sl_error.h"

typedef struct {
    char *path;        /* as matched by the glob */
    int64_t rows;      /* dataset rows */
    int64_t first_row; /* global index of its first row (shards in path order) */
    int64_t size;      /* file bytes */
    int64_t mtime_ns;  /* modification time */
} sl_shard_t;

/* What the input datasets hold. */
typedef enum {
    SL_INPUT_FEATURES = 0, /* 2-D numeric [rows, features] (read as f32) */
    SL_INPUT_TEXT = 1,     /* 1-D strings [rows], UTF-8, variable or fixed length */
    SL_INPUT_TOKENS = 2,   /* 2-D integer token ids [rows, L], with `lengths` [rows] or
                              `attention_mask` [rows, L], optional `token_type_ids` [rows, L] */
} sl_input_kind_t;

typedef struct {
    sl_shard_t *shards;
    int n;
    int64_t total_rows;
    int64_t cols; /* features, or L for token ids, 0 for text */
    char *dataset;
    int kind; /* sl_input_kind_t */
} sl_inputs_t;

/* Expands the globs (sorted, duplicates removed), opens every file and checks the dataset:
 * present, 2-D, numeric, the same feature count everywhere. Errors name the glob, file and
 * dataset. Single process (rank 0). */
int sl_inputs_scan(sl_inputs_t *in, char *const *globs, int nglobs, const char *dataset,
                   int want_tokens, sl_error_t *err);
/* want_tokens: 0 expects SL_INPUT_FEATURES; 1 accepts SL_INPUT_TEXT or SL_INPUT_TOKENS (the
 * first file decides, every file must agree). */
/* Collective: root's table is copied to every rank of comm. */
void sl_inputs_bcast(sl_inputs_t *in, MPI_Comm comm, int root);
void sl_inputs_free(sl_inputs_t *in);

/* Reads rows of one shard, converted to float32, keeping the last file open. */
typedef struct {
    int shard;
    hid_t file, dset;
} sl_reader_t;

void sl_reader_init(sl_reader_t *r);
/* dst: float32 [n, in->cols]. */
int sl_reader_read(sl_reader_t *r, const sl_inputs_t *in, int shard, int64_t row0, int64_t n,
                   float *dst, sl_error_t *err);
void sl_reader_close(sl_reader_t *r);
/* Text rows: texts[i] is a malloc'd NUL-terminated copy (NULL for a NULL vlen string); free
 * each and the array. */
int sl_reader_read_text(sl_reader_t *r, const sl_inputs_t *in, int shard, int64_t row0, int64_t n,
                        char **texts, sl_error_t *err);
/* Token rows: ids i32 [n, in->cols], lengths [n] (from `lengths`, else the count of non-zero
 * `attention_mask` entries, else L), type_ids i32 [n, in->cols] (zeros if absent). */
int sl_reader_read_tokens(sl_reader_t *r, const sl_inputs_t *in, int shard, int64_t row0, int64_t n,
                          int32_t *ids, int32_t *lengths, int32_t *type_ids, sl_error_t *err);

#endif
