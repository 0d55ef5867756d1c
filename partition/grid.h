/*
 * grid.h — the process grid: world = TP x DP.
 *
 * Tensor-parallel (TP) groups are runs of consecutive world ranks, so on a node with G GPUs and
 * TP <= G a group stays inside the node (fast links). With world size W and TP size T:
 *   tp_rank = world_rank % T,  dp_rank = world_rank / T,  dp_size = W / T.
 * The node-local rank (from MPI_Comm_split_type SHARED) picks the GPU: local_rank % devices.
 */
#ifndef SL_GRID_H
#define SL_GRID_H

#include <mpi.h>

#include "common/sl_error.h"

typedef struct {
    int world_rank, world_size;
    int tp_rank, tp_size;       /* position inside the tensor-parallel group */
    int dp_rank, dp_size;       /* which TP group (data-parallel replica) */
    int local_rank, local_size; /* on this node */
    MPI_Comm world;
    MPI_Comm tp;   /* ranks of this TP group */
    MPI_Comm node; /* ranks on this node */
    char host[64];
} sl_grid_t;

/* Pure arithmetic, for tests and for sl_grid_init: fails when world_size % tp_size != 0. */
int sl_grid_coords(int world_rank, int world_size, int tp_size, int *tp_rank, int *dp_rank,
                   int *dp_size, sl_error_t *err);

/* Collective over `world`. Fails (same message on every rank) when tp does not divide it. */
int sl_grid_init(sl_grid_t *g, MPI_Comm world, int tp_size, sl_error_t *err);
void sl_grid_free(sl_grid_t *g);

/* Threads for this process on the CPU backend: cores of the node / ranks on the node, at
 * least 1, at most the cores this process may run on (its affinity mask). */
int sl_grid_cpu_threads(const sl_grid_t *g);

#endif
