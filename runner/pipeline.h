/*
 * pipeline.h — the I/O thread of a rank: it owns every HDF5 call while a job runs, reads
 * batches ahead into a ring of host buffers (slots) while the compute thread works on the
 * current one, and writes + commits part files handed to it, so the compute thread never
 * waits on the disk unless the disk is slower than the model.
 *
 * Requests are served in the order they were queued. The compute thread owns a slot from the
 * moment sl_io_wait() returns it until it queues the next read into it.
 */
#ifndef SL_PIPELINE_H
#define SL_PIPELINE_H

#include <stdint.h>

#include "jobs/input.h"
#include "jobs/output.h"
#include "runner/task.h"

typedef struct sl_io sl_io_t;

typedef struct {
    void *payload; /* the task's prepared rows (sl_task_payload_new) */
    int64_t rows;
    int state; /* 0 queued, 1 ready, -1 failed (err says why) */
    sl_error_t err;
} sl_io_slot_t;

/* Slots hold up to read_rows rows each, prepared by sl_task_read on the I/O thread. */
sl_io_t *sl_io_start(const sl_inputs_t *in, const char *out_dir, int nslots, sl_task_t *task,
                     int64_t read_rows);
int sl_io_nslots(const sl_io_t *io);
/* Queues a read of rows [row0, row0+rows) of a shard into slot i. */
void sl_io_read(sl_io_t *io, int i, int shard, int64_t row0, int64_t rows);
/* Blocks until slot i is filled (or failed). */
sl_io_slot_t *sl_io_wait(sl_io_t *io, int i);
/* Queues a part file; takes ownership of relpath, the output buffers bufs[0..meta->outs->n)
 * and errs (all freed after writing). */
void sl_io_commit(sl_io_t *io, char *relpath, const sl_part_meta_t *meta, void **bufs,
                  sl_row_error_t *errs, int nerr);
/* Called on the I/O thread after each part file is committed (renamed into place), with the
 * seconds its writing took; NULL (the default) for none. Set before the first commit. */
typedef void (*sl_io_commit_fn)(void *ctx, const char *relpath, const sl_part_meta_t *meta,
                                int nerr, double seconds);
void sl_io_on_commit(sl_io_t *io, sl_io_commit_fn fn, void *ctx);
/* Whether a commit failed (err filled with the first failure). */
int sl_io_failed(sl_io_t *io, sl_error_t *err);
/* Finishes every queued request, then joins the thread and frees everything. Reports the
 * seconds the thread spent reading and writing. Returns -1 (err filled with the first
 * failure) when any commit failed, else 0. */
int sl_io_finish(sl_io_t *io, double *read_seconds, double *write_seconds, sl_error_t *err);

#endif
