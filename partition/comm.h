/*
 * comm.h — collectives over a TP group, on backend memory.
 *
 * Three transports, chosen once at creation by sl_comm_choose from the job's --comm and where
 * the group's ranks run:
 *   "mpi"        CPU backend: MPI_Allreduce in place on host buffers.
 *   "nccl"       CUDA backend, every rank of the group on its own GPU: NCCL on device buffers,
 *                ordered on the backend's stream. The NCCL unique id is made by group rank 0
 *                and broadcast over the group's MPI communicator. With --comm nccl a group of
 *                one rank gets a 1-rank communicator too, and its all-reduces run through it.
 *   "mpi-staged" CUDA backend, two ranks of the group share a GPU (NCCL refuses that), --comm
 *                mpi, or a group of one rank: copy to the host, MPI_Allreduce, copy back.
 * Counts are in elements, never bytes.
 */
#ifndef SL_COMM_H
#define SL_COMM_H

#include <mpi.h>
#include <stddef.h>

#include "kernels/backend.h"

typedef struct sl_comm sl_comm_t;

typedef enum { SL_COMM_MPI, SL_COMM_NCCL, SL_COMM_MPI_STAGED } sl_transport_t;

/* Where one rank of a TP group runs: its host name and its GPU ("" on the CPU backend; the
 * PCI bus id on CUDA, unique per physical GPU of a host). */
typedef struct {
    char host[64];
    char gpu[64];
} sl_comm_place_t;

/* The transport of a TP group of `size` ranks at places[0..size) (the same answer on every
 * rank: no MPI, no CUDA). mode is --comm: "auto" (NCCL when every rank of the group has its
 * own GPU, else host-staged MPI; one rank: host-staged, it never communicates), "mpi" or
 * "nccl". cuda: the backend is CUDA. Writes one sentence saying why into why[why_cap].
 * Returns the transport, or -1 with err naming --comm when the mode cannot be honoured (nccl
 * on the CPU backend, nccl with two ranks on one GPU, an unknown mode). */
int sl_comm_choose(const char *mode, int cuda, int size, const sl_comm_place_t *places, char *why,
                   size_t why_cap, sl_error_t *err);

/* Collective over `group`, its transport chosen by sl_comm_choose from mode (--comm). Returns
 * NULL and fills err when the mode cannot be honoured (a usage error). */
sl_comm_t *sl_comm_create(MPI_Comm group, sl_backend_t *be, const char *mode, sl_error_t *err);
void sl_comm_free(sl_comm_t *c);
const char *sl_comm_transport(const sl_comm_t *c);
/* Why the transport was chosen (one sentence). */
const char *sl_comm_why(const sl_comm_t *c);
int sl_comm_size(const sl_comm_t *c);

/* In-place sum over the group of `count_elems` elements of `dtype` at the start of t->data. */
void sl_comm_allreduce_sum(sl_comm_t *c, sl_tensor_t *t, size_t count_elems);
/* The group's MPI communicator, for small host-side collectives (log-sum-exp pieces, gathered
 * logits rows); MPI_COMM_SELF when c is NULL (a group of one). */
MPI_Comm sl_comm_mpi(const sl_comm_t *c);
/* Seconds spent inside collectives so far (wall clock, includes waiting for peers). */
double sl_comm_seconds(const sl_comm_t *c);

#endif
