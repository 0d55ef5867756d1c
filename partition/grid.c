/*
 * grid.c — the process grid (see grid.h): TP groups of consecutive ranks, node-local ranks.
 */
#include "partition/grid.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int sl_grid_coords(int world_rank, int world_size, int tp_size, int *tp_rank, int *dp_rank,
                   int *dp_size, sl_error_t *err)
{
    if (tp_size < 1)
        return sl_errorf(err, "--tp %d: must be at least 1", tp_size);
    if (world_size % tp_size != 0)
        return sl_errorf(
            err,
            "--tp %d does not divide the %d MPI ranks (use a world size that is a multiple of %d)",
            tp_size, world_size, tp_size);
    *tp_rank = world_rank % tp_size;
    *dp_rank = world_rank / tp_size;
    *dp_size = world_size / tp_size;
    return 0;
}

int sl_grid_init(sl_grid_t *g, MPI_Comm world, int tp_size, sl_error_t *err)
{
    memset(g, 0, sizeof *g);
    g->world = world;
    g->tp = g->node = MPI_COMM_NULL;
    MPI_Comm_rank(world, &g->world_rank);
    MPI_Comm_size(world, &g->world_size);
    if (gethostname(g->host, sizeof g->host) != 0)
        strcpy(g->host, "?");
    g->host[sizeof g->host - 1] = '\0';
    g->tp_size = tp_size;
    if (sl_grid_coords(g->world_rank, g->world_size, tp_size, &g->tp_rank, &g->dp_rank, &g->dp_size,
                       err) != 0)
        return -1;
    /* Consecutive ranks form a TP group: color = dp_rank, ordered by world rank. */
    MPI_Comm_split(world, g->dp_rank, g->tp_rank, &g->tp);
    MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, g->world_rank, MPI_INFO_NULL, &g->node);
    MPI_Comm_rank(g->node, &g->local_rank);
    MPI_Comm_size(g->node, &g->local_size);
    /* Cross-check with what the launcher says: a mismatch means ranks were placed in a way
     * MPI does not see (e.g. a container hiding the node), and GPUs may be shared by mistake. */
    const char *vars[] = {"SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK"};
    for (int i = 0; i < 2; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v && atoi(v) != g->local_rank)
            sl_log_warn("rank %d on %s: node-local rank %d from MPI, but %s=%s", g->world_rank,
                        g->host, g->local_rank, vars[i], v);
    }
    return 0;
}

void sl_grid_free(sl_grid_t *g)
{
    if (g->tp != MPI_COMM_NULL)
        MPI_Comm_free(&g->tp);
    if (g->node != MPI_COMM_NULL)
        MPI_Comm_free(&g->node);
}

int sl_grid_cpu_threads(const sl_grid_t *g)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int n = (int)(cores / (g->local_size > 0 ? g->local_size : 1));
    cpu_set_t set;
    /* mpirun may bind a rank to fewer cores than its share: never run more threads than that. */
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int allowed = CPU_COUNT(&set);
        if (allowed > 0 && n > allowed)
            n = allowed;
    }
    return n < 1 ? 1 : n;
}
