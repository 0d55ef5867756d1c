/*
 * comm.h — collectives over a TP group, on backend memory.
 *
 * Three transports, chosen once at creation:
 *   "mpi"        CPU backend: MPI_Allreduce in place on host buffers.
 *   "nccl"       CUDA backend, every rank of the group on its own GPU: NCCL on device buffers,
 *                ordered on the backend's stream. The NCCL unique id is made by group rank 0
 *                and broadcast over the group's MPI communicator.
 *   "mpi-staged" CUDA backend, two ranks of the group share a GPU (NCCL refuses that): copy to
 *                the host, MPI_Allreduce, copy back. Said once in the log.
 * Counts are in elements, never bytes.
 */
#ifndef SL_COMM_H
#define SL_COMM_H

#include <mpi.h>
#include <stddef.h>

#include "kernels/backend.h"

typedef struct sl_comm sl_comm_t;

/* Collective over `group`. Returns NULL and fills err when the transport cannot be set up. */
sl_comm_t *sl_comm_create(MPI_Comm group, sl_backend_t *be, sl_error_t *err);
void sl_comm_free(sl_comm_t *c);
const char *sl_comm_transport(const sl_comm_t *c);
int sl_comm_size(const sl_comm_t *c);

/* In-place sum over the group of `count_elems` elements of `dtype` at the start of t->data. */
void sl_comm_allreduce_sum(sl_comm_t *c, sl_tensor_t *t, size_t count_elems);
/* The group's MPI communicator, for small host-side collectives (log-sum-exp pieces, gathered
 * logits rows); MPI_COMM_SELF when c is NULL (a group of one). */
MPI_Comm sl_comm_mpi(const sl_comm_t *c);
/* Seconds spent inside collectives so far (wall clock, includes waiting for peers). */
double sl_comm_seconds(const sl_comm_t *c);

#endif
