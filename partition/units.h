/*
 * units.h — units of work and how they are shared.
 *
 * A unit is (shard, first row, row count): a row range of at most unit_rows rows inside one
 * input shard. Every rank derives the same ordered list from the same shard table, so a unit is
 * named by its index alone. On one node units are handed out dynamically: the leader (tp_rank
 * 0) of each DP group takes the next index from a shared counter (an MPI RMA window on world
 * rank 0, MPI_Fetch_and_op) and broadcasts it to its TP group. Across nodes each DP group takes
 * a fixed interleaved share (see sl_queue_init for why).
 */
#ifndef SL_UNITS_H
#define SL_UNITS_H

#include <mpi.h>
#include <stdint.h>

#include "common/sl_error.h"
#include "partition/grid.h"

typedef struct {
    int shard;
    int64_t row0;  /* first row inside the shard */
    int64_t nrows; /* 1 .. unit_rows */
} sl_unit_t;

/* Splits every shard into units of unit_rows rows (the last unit of a shard may be shorter;
 * empty shards have none). Returns the count; *out is malloc'd (free it). */
int64_t sl_units_plan(const int64_t *shard_rows, int nshards, int64_t unit_rows, sl_unit_t **out);

/* Splits n items into `parts` contiguous parts: part `idx` gets [*off, *off + *len).
 * Fails when n is not divisible by parts (TP slices must be equal). */
int sl_split_even(int64_t n, int parts, int idx, int64_t *off, int64_t *len, sl_error_t *err);

/* The shared queue of unit indices [0, count). */
typedef struct {
    MPI_Win win;
    int64_t *base; /* the counter lives on world rank 0 (dynamic schedule) */
    int64_t count;
    const sl_grid_t *grid;
    int dynamic;            /* 1: shared counter; 0: fixed interleaved shares per DP group */
    int64_t taken;          /* static: units taken by this group so far */
    int64_t done_local;     /* static: rows this group has committed */
    int64_t computed_local; /* static: rows this group has computed */
} sl_queue_t;

typedef enum {
    SL_SCHEDULE_AUTO = 0,
    SL_SCHEDULE_DYNAMIC = 1,
    SL_SCHEDULE_STATIC = 2
} sl_schedule_t;

/* Collective over the world. AUTO: dynamic when every rank is on one node, else static. */
void sl_queue_init(sl_queue_t *q, const sl_grid_t *g, int64_t count, int schedule);
/* Collective over the TP group: every member gets the same next index, or -1 when the queue is
 * empty or `stop` (already agreed within the group) is set. */
int64_t sl_queue_next(sl_queue_t *q, int stop);
/* Any rank: ask every group to stop (a signal arrived). Not collective. */
void sl_queue_post_stop(sl_queue_t *q);
/* Any rank: whether some rank asked to stop. Not collective. */
int sl_queue_stop_posted(sl_queue_t *q);
/* Any rank: add to / read the job-wide count of rows done (progress). Not collective. */
void sl_queue_add_done(sl_queue_t *q, int64_t rows);
int64_t sl_queue_done(sl_queue_t *q);
/* The same for rows computed (finished, maybe not yet committed): progress inside a unit. */
void sl_queue_add_computed(sl_queue_t *q, int64_t rows);
int64_t sl_queue_computed(sl_queue_t *q);
/* Collective over the world. */
void sl_queue_free(sl_queue_t *q);

#endif
