/*
 * units.c — unit planning and the shared dynamic queue of units (see units.h).
 */
#include "partition/units.h"

#include <stdlib.h>
#include <string.h>

#include "common/sl_size.h"

int64_t sl_units_plan(const int64_t *shard_rows, int nshards, int64_t unit_rows, sl_unit_t **out)
{
    /* Checked sums and a ceiling division that never forms rows + unit_rows - 1: with
     * --unit-rows near 2^63 that sum wrapped negative, the count came out too small and the
     * loop below wrote past the array. */
    int64_t count = 0;
    for (int s = 0; s < nshards; s++)
        if (sl_size_add(count, sl_size_div_up(shard_rows[s], unit_rows), &count) != 0)
            SL_FATAL("sl_units_plan: the unit count overflows");
    sl_unit_t *u = sl_xcalloc((size_t)(count ? count : 1), sizeof *u);
    int64_t i = 0;
    for (int s = 0; s < nshards; s++)
        for (int64_t r = 0; r < shard_rows[s]; r += u[i - 1].nrows) {
            u[i].shard = s;
            u[i].row0 = r;
            u[i].nrows = shard_rows[s] - r < unit_rows ? shard_rows[s] - r : unit_rows;
            i++;
        }
    *out = u;
    return count;
}

int sl_split_even(int64_t n, int parts, int idx, int64_t *off, int64_t *len, sl_error_t *err)
{
    if (parts < 1 || idx < 0 || idx >= parts)
        return sl_errorf(err, "split of %lld into %d parts: bad part index %d", (long long)n, parts,
                         idx);
    if (n % parts != 0)
        return sl_errorf(err, "%lld is not divisible by %d", (long long)n, parts);
    *len = n / parts;
    *off = *len * idx;
    return 0;
}

/* Window layout on world rank 0: [0] next unit index, [1] stop flag (set by any rank),
 * [2] rows committed, [3] rows computed (both for the progress line). */
enum { Q_NEXT = 0, Q_STOP = 1, Q_DONE = 2, Q_COMPUTED = 3, Q_WORDS = 4 };

void sl_queue_init(sl_queue_t *q, const sl_grid_t *g, int64_t count, int schedule)
{
    memset(q, 0, sizeof *q);
    q->grid = g;
    q->count = count;
    /* Dynamic only inside one node, where the window lives in shared memory and a fetch never
     * waits for rank 0. Across nodes a window needs an RMA transport that may be missing
     * (Debian's Open MPI disables osc/pt2pt, so MPI_Win_allocate fails over TCP) or only
     * progresses when rank 0 calls MPI: there every group takes a fixed interleaved share. */
    int one_node = g->local_size == g->world_size, all_one = 0;
    MPI_Allreduce(&one_node, &all_one, 1, MPI_INT, MPI_MIN, g->world);
    q->dynamic = schedule == SL_SCHEDULE_DYNAMIC || (schedule == SL_SCHEDULE_AUTO && all_one);
    if (!q->dynamic)
        return;
    MPI_Aint bytes = g->world_rank == 0 ? Q_WORDS * (MPI_Aint)sizeof(int64_t) : 0;
    MPI_Win_allocate(bytes, sizeof(int64_t), MPI_INFO_NULL, g->world, &q->base, &q->win);
    if (g->world_rank == 0) {
        MPI_Win_lock(MPI_LOCK_EXCLUSIVE, 0, 0, q->win);
        q->base[Q_NEXT] = 0;
        q->base[Q_STOP] = 0;
        q->base[Q_DONE] = 0;
        q->base[Q_COMPUTED] = 0;
        MPI_Win_unlock(0, q->win);
    }
    /* Nobody may fetch before rank 0 has initialised the counter. */
    MPI_Barrier(g->world);
    MPI_Win_lock_all(0, q->win);
}

static int64_t fetch_op(sl_queue_t *q, int word, int64_t operand, MPI_Op op)
{
    int64_t old = 0;
    MPI_Fetch_and_op(&operand, &old, MPI_INT64_T, 0, word, op, q->win);
    MPI_Win_flush(0, q->win);
    return old;
}

int64_t sl_queue_next(sl_queue_t *q, int stop)
{
    int64_t idx = -1;
    if (q->grid->tp_rank == 0 && !stop) {
        if (q->dynamic) {
            idx = fetch_op(q, Q_NEXT, 1, MPI_SUM);
        } else {
            /* static: group d takes units d, d + D, d + 2D, ... */
            idx = q->grid->dp_rank + q->taken * q->grid->dp_size;
            q->taken++;
        }
        if (idx >= q->count)
            idx = -1;
    }
    /* The leader's choice is the group's: every TP rank must work on the same unit. */
    MPI_Bcast(&idx, 1, MPI_INT64_T, 0, q->grid->tp);
    return idx;
}

/* Static schedules have no shared window: a signal reaches every rank anyway (mpirun forwards
 * it, Slurm signals every task), and progress is this group's rows scaled by the group count. */
void sl_queue_post_stop(sl_queue_t *q)
{
    if (q->dynamic)
        fetch_op(q, Q_STOP, 1, MPI_REPLACE);
}

int sl_queue_stop_posted(sl_queue_t *q)
{
    return q->dynamic && fetch_op(q, Q_STOP, 0, MPI_NO_OP) != 0;
}

/* A job-wide row counter: in the window (dynamic), or this group's own count scaled by the
 * number of groups (static: the groups share the work evenly). */
static void counter_add(sl_queue_t *q, int word, int64_t *local, int64_t rows)
{
    if (q->dynamic)
        fetch_op(q, word, rows, MPI_SUM);
    else
        *local += rows;
}

static int64_t counter_get(sl_queue_t *q, int word, int64_t local)
{
    return q->dynamic ? fetch_op(q, word, 0, MPI_NO_OP) : local * q->grid->dp_size;
}

void sl_queue_add_done(sl_queue_t *q, int64_t rows)
{
    counter_add(q, Q_DONE, &q->done_local, rows);
}
int64_t sl_queue_done(sl_queue_t *q) { return counter_get(q, Q_DONE, q->done_local); }

void sl_queue_add_computed(sl_queue_t *q, int64_t rows)
{
    counter_add(q, Q_COMPUTED, &q->computed_local, rows);
}
int64_t sl_queue_computed(sl_queue_t *q) { return counter_get(q, Q_COMPUTED, q->computed_local); }

void sl_queue_free(sl_queue_t *q)
{
    if (!q->dynamic)
        return;
    MPI_Win_unlock_all(q->win);
    MPI_Win_free(&q->win);
}
