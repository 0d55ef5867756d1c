/*
 * comm.h — every collective of a TP group: all-reduces of activations on backend memory, the
 * row-parallel linear step built on them, and the small host-memory collectives of the sharded
 * LM head. Models and the runner call nothing else, so sl_comm_seconds is all of the group's
 * communication time.
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

/* y = x @ w^T for a row-parallel weight w (each rank holds a slice of the input columns, x the
 * matching slice of the activations), summed over the group, then + bias (f32 [N], or NULL).
 * x, y: f32 [M, *]; cast: scratch of w's dtype for x when w is f16/bf16 (sl_linear_cast).
 * c may be NULL (a group of one). The bias is added after the sum so that it counts once. */
void sl_linear_row_parallel(sl_comm_t *c, const sl_tensor_t *x, const sl_tensor_t *w,
                            const sl_tensor_t *bias, sl_tensor_t *y, sl_tensor_t *cast);

/* ---- small host-memory collectives (per-row values of the sharded LM head, budgets) ----------
 * Blocking, over the same group; c NULL means a group of one (nothing to exchange). Their time
 * counts in sl_comm_seconds like the all-reduces of activations. */
typedef enum { SL_REDUCE_SUM, SL_REDUCE_MAX, SL_REDUCE_MIN } sl_reduce_t;
/* buf[0..n) = op over the group of every rank's buf[0..n), in place. */
void sl_comm_host_allreduce_f32(sl_comm_t *c, float *buf, size_t n, sl_reduce_t op);
/* The smallest v over the group. */
size_t sl_comm_host_min_size(sl_comm_t *c, size_t v);
/* all[r * n .. (r + 1) * n) = rank r's mine[0..n); dtype SL_F32 or SL_I32. */
void sl_comm_host_allgather(sl_comm_t *c, const void *mine, size_t n, sl_dtype_t dtype, void *all);
/* all[displs[r] .. displs[r] + counts[r]) = rank r's mine[0..counts[r]) (f32 elements). */
void sl_comm_host_allgatherv_f32(sl_comm_t *c, const float *mine, float *all, const int *counts,
                                 const int *displs);
/* Seconds spent inside collectives so far (wall clock, includes waiting for peers). */
double sl_comm_seconds(const sl_comm_t *c);

#endif
