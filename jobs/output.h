/*
 * output.h — what a job leaves in its output directory.
 *
 *   parts/<shard basename>.<hash of its path>/rows-<first>-<end>.h5   one per unit, committed by
 *       rename: written as "<name>.tmp.<pid>", flushed, fsync'ed, closed, then renamed, so a
 *       part file that exists is complete. Dataset `predictions` [rows, cols] f32, datasets
 *       `failed_rows` [n] (row index inside the unit) and `failed_reasons` [n], attributes
 *       naming the source (path, size, mtime), the rows, the model fingerprint, the job hash
 *       and the shardline version.
 *   predictions.h5   written last by rank 0, also by rename: `/predictions` [total rows, cols]
 *       (a virtual dataset over the part files, in input order), `/shards`, `/errors`.
 */
#ifndef SL_OUTPUT_H
#define SL_OUTPUT_H

#include <stdint.h>

#include <cjson/cJSON.h>

#include "common/sl_error.h"
#include "jobs/input.h"
#include "kernels/backend.h"
#include "partition/units.h"

/* One output dataset of a job: `/name` [rows, cols] (cols 0: a 1-D dataset [rows]).
 * `file_dtype` is how it is stored, and says how it is held in memory: SL_F32 and SL_F16 as
 * `float` (f16 is converted when written), SL_I32 as `int32_t` (token ids, counts, labels:
 * exact over the whole int32 range). SL_OUT_TEXT: a 1-D dataset of variable-length UTF-8
 * strings (h5py: `.asstr()` gives str), held in memory as `cols` bytes (`char`) per row
 * (NUL-padded, a multiple of 4), so `cols` bounds a row's text. */
#define SL_OUT_TEXT 100
typedef struct {
    const char *name;
    int64_t cols;
    int file_dtype;
} sl_out_spec_t;

#define SL_MAX_OUTPUTS 8

typedef struct {
    int n;
    sl_out_spec_t spec[SL_MAX_OUTPUTS];
    /* attribute "labels" on the first output (classification label names), or NULL */
    char **labels;
    int n_labels;
} sl_outputs_t;

/* Elements per row of an output: cols (bytes for text), or 1 for a 1-D dataset. */
static inline int64_t sl_out_width(const sl_out_spec_t *o) { return o->cols > 0 ? o->cols : 1; }
/* Bytes per element of an output's buffer: sizeof(float), sizeof(int32_t), or 1 for text. */
static inline size_t sl_out_elem_size(const sl_out_spec_t *o)
{
    return o->file_dtype == SL_OUT_TEXT ? 1
           : o->file_dtype == SL_I32    ? sizeof(int32_t)
                                        : sizeof(float);
}
/* Bytes per row of an output's buffer. */
static inline size_t sl_out_row_bytes(const sl_out_spec_t *o)
{
    return (size_t)sl_out_width(o) * sl_out_elem_size(o);
}
/* Row `row` of output buffer `buf` (laid out [rows, sl_out_width(o)] of its element type). */
static inline void *sl_out_row(const sl_out_spec_t *o, void *buf, int64_t row)
{
    return (char *)buf + (size_t)row * sl_out_row_bytes(o);
}
/* Rank of an output's dataset: 2 for [rows, cols], 1 for [rows] (text, or cols 0). */
static inline int sl_out_ndims(const sl_out_spec_t *o)
{
    return o->cols > 0 && o->file_dtype != SL_OUT_TEXT ? 2 : 1;
}
/* Fills row `row` of every output buffer as a failed row: NaN, -1 for integer outputs, an empty
 * string for text. bufs[i]: output i's buffer, [rows, sl_out_width] of its element type. */
void sl_out_fill_failed(const sl_outputs_t *outs, void *const *bufs, int64_t row);
/* "f32", "f16", "i32" or "text": how manifest.json names an output's storage. */
const char *sl_out_dtype_name(int file_dtype);
int sl_out_dtype_parse(const char *s); /* the inverse; SL_F32 for anything unknown */

typedef struct {
    const sl_shard_t *shard;
    int64_t row0, nrows;
    const sl_outputs_t *outs;
    uint64_t model_fp, job_hash;
} sl_part_meta_t;

typedef struct {
    int64_t row; /* inside the unit */
    char reason[96];
} sl_row_error_t;

/* Creates the output directory and parts/ (mkdir -p); fails naming the path. */
int sl_output_prepare(const char *out_dir, sl_error_t *err);
/* Locks the output directory for this job (rank 0, after sl_output_prepare, before anything
 * is written there): flock on OUT/.shardline.lock, exclusive for a plain job; a job array's
 * task takes it shared plus OUT/.shardline.lock.task-N exclusive. fds[2] receive the
 * descriptors (-1 when unused). Another job holding it is an error naming that job (pid,
 * host, start time). The kernel releases the locks when the process ends, however it ends,
 * so a killed job never blocks its rerun (or a Slurm requeue). */
int sl_output_lock(const char *out_dir, int array_task, int array_tasks, int *fds, sl_error_t *err);
/* Removes the temporary files (*.tmp.<pid>) that killed or failed runs left in OUT and
 * OUT/parts/<shard>/: only under an exclusive lock (no other process writes there). Returns
 * how many were removed. */
int sl_output_sweep_tmp(const char *out_dir);
/* Releases what sl_output_lock took. */
void sl_output_unlock(int *fds);
/* Before anything is created: the output directory exists and is writable, or can be made
 * (its nearest existing ancestor is a writable directory). *exists: it is already there.
 * *foreign: the name of an entry that shardline never writes into an output directory
 * (NUL when none), so a directory holding other files can be refused. */
int sl_output_check(const char *out_dir, int *exists, char *foreign, size_t len, sl_error_t *err);
/* Path of a unit's part file relative to the output directory (malloc'd). */
char *sl_part_relpath(const sl_shard_t *s, int64_t row0, int64_t nrows);
/* 1 when the part file exists and was made from exactly this source, rows, model and job. */
int sl_part_matches(const char *out_dir, const char *relpath, const sl_part_meta_t *m);
/* Writes and commits a part file. bufs[i]: [m->nrows, width of output i] of output i's
 * element type (float, int32_t or char: see sl_out_spec_t). */
int sl_part_write(const char *out_dir, const char *relpath, const sl_part_meta_t *m,
                  void *const *bufs, const sl_row_error_t *errs, int nerr, sl_error_t *err);
/* Writes predictions.h5 over the committed parts of every unit. Returns the number of failed
 * rows found in the parts via *failed (and their global indices/reasons in /errors).
 * `describe`: an object whose members become root attributes (strings, numbers, booleans as
 * 0/1, arrays of strings), so the file says what made it; NULL for none. */
int sl_predictions_write(const char *out_dir, const sl_inputs_t *in, const sl_unit_t *units,
                         int64_t nunits, const sl_outputs_t *outs, const cJSON *describe,
                         int64_t *failed, sl_error_t *err);

/* The virtual datasets of an HDF5 file read their rows from other files (the part files,
 * named relative to the file's directory). Counts the mappings of the file's first virtual
 * dataset and those whose source file does not exist (their rows read as the fill value:
 * NaN, -1 or an empty string); *first_missing (may be NULL) gets the first such name. A file
 * without virtual datasets gives 0 and 0. */
int sl_vds_sources(const char *path, int64_t *total, int64_t *missing, char *first_missing,
                   size_t len, sl_error_t *err);

/* Warns on stderr, naming the first missing part file and the way out (merge
 * --consolidate), when `path` reads rows from part files that are not there. Returns the
 * number missing. */
int64_t sl_vds_warn_missing(const char *path);

/* Copies the HDF5 file `src` (predictions.h5) to `dst` with every virtual dataset replaced by
 * a real one holding the same values, read in blocks of rows (memory does not grow with the
 * file); groups, other datasets and attributes are copied as they are. Written to a
 * temporary name and renamed, so `dst` may be `src`. Fails, naming the part file, when a
 * source is missing. */
int sl_predictions_consolidate(const char *src, const char *dst, sl_error_t *err);

#endif
