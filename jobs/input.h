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
    char *path;       /* as matched by the glob */
    int64_t rows;     /* dataset rows */
    int64_t first_row; /* global index of its first row (shards in path order) */
    int64_t size;     /* file bytes */
    int64_t mtime_ns; /* modification time */
} sl_shard_t;

typedef struct {
    sl_shard_t *shards;
    int n;
    int64_t total_rows;
    int64_t cols;
    char *dataset;
} sl_inputs_t;

/* Expands the globs (sorted, duplicates removed), opens every file and checks the dataset:
 * present, 2-D, numeric, the same feature count everywhere. Errors name the glob, file and
 * dataset. Single process (rank 0). */
int sl_inputs_scan(sl_inputs_t *in, char *const *globs, int nglobs, const char *dataset,
                   sl_error_t *err);
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

#endif
