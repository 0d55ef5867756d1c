/*
 * comm.c — collectives over a TP group on backend memory (see comm.h for the three
 * transports and when each is used).
 */
#include "partition/comm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef SL_HAVE_CUDA
#include <cuda_runtime_api.h>
#include <nccl.h>
#endif

typedef enum { T_MPI, T_NCCL, T_MPI_STAGED } transport_t;

struct sl_comm {
    MPI_Comm group;
    int size, rank;
    sl_backend_t *be;
    transport_t transport;
    double seconds;
    void *host;      /* staging buffer for mpi-staged */
    size_t host_len; /* bytes */
#ifdef SL_HAVE_CUDA
    ncclComm_t nccl;
#endif
};

static const char *const transport_names[] = {"mpi", "nccl", "mpi-staged"};

static MPI_Datatype mpi_type(sl_dtype_t dt)
{
    switch (dt) {
    case SL_F32: return MPI_FLOAT;
    case SL_I32: return MPI_INT32_T;
    default: SL_FATAL("all-reduce over MPI of %s elements is not supported", sl_dtype_name(dt));
    }
}

#ifdef SL_HAVE_CUDA
#define NCCL_CHECK(call)                                                                     \
    do {                                                                                     \
        ncclResult_t r_ = (call);                                                            \
        if (r_ != ncclSuccess)                                                               \
            sl_fatal(__FILE__, __LINE__, #call, "%s", ncclGetErrorString(r_));              \
    } while (0)
#define CUDA_CHECK_C(call)                                                                   \
    do {                                                                                     \
        cudaError_t e_ = (call);                                                             \
        if (e_ != cudaSuccess)                                                               \
            sl_fatal(__FILE__, __LINE__, #call, "%s", cudaGetErrorString(e_));              \
    } while (0)

static ncclDataType_t nccl_type(sl_dtype_t dt)
{
    switch (dt) {
    case SL_F32: return ncclFloat32;
    case SL_F16: return ncclFloat16;
    case SL_BF16: return ncclBfloat16;
    case SL_I32: return ncclInt32;
    case SL_I8: return ncclInt8;
    }
    return ncclFloat32;
}

/* Whether two ranks of the group drive the same physical GPU (same host and PCI bus id). */
static int group_shares_gpu(MPI_Comm group, int size)
{
    char mine[128] = {0};
    int dev = 0;
    CUDA_CHECK_C(cudaGetDevice(&dev));
    char bus[64] = {0};
    CUDA_CHECK_C(cudaDeviceGetPCIBusId(bus, sizeof bus, dev));
    char host[64] = {0};
    gethostname(host, sizeof host - 1);
    snprintf(mine, sizeof mine, "%s/%s", host, bus);
    char *all = sl_xcalloc((size_t)size, sizeof mine);
    MPI_Allgather(mine, sizeof mine, MPI_CHAR, all, sizeof mine, MPI_CHAR, group);
    int shared = 0;
    for (int i = 0; i < size && !shared; i++)
        for (int j = i + 1; j < size; j++)
            if (!strcmp(all + i * sizeof mine, all + j * sizeof mine)) {
                shared = 1;
                break;
            }
    free(all);
    return shared;
}
#endif

sl_comm_t *sl_comm_create(MPI_Comm group, sl_backend_t *be, sl_error_t *err)
{
    sl_comm_t *c = sl_xcalloc(1, sizeof *c);
    c->group = group;
    c->be = be;
    MPI_Comm_size(group, &c->size);
    MPI_Comm_rank(group, &c->rank);
    c->transport = T_MPI;
#ifdef SL_HAVE_CUDA
    if (sl_backend_kind(be) == SL_BACKEND_CUDA && c->size > 1) {
        if (group_shares_gpu(group, c->size)) {
            /* NCCL refuses two ranks of one communicator on one GPU. */
            c->transport = T_MPI_STAGED;
            if (c->rank == 0)
                sl_log_warn("two ranks of a tensor-parallel group share a GPU: all-reduce goes "
                            "through host memory and MPI instead of NCCL (slower)");
        } else {
            ncclUniqueId id;
            /* Group rank 0 makes the id; everyone else learns it over MPI. */
            if (c->rank == 0)
                NCCL_CHECK(ncclGetUniqueId(&id));
            MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, group);
            NCCL_CHECK(ncclCommInitRank(&c->nccl, c->size, id, c->rank));
            c->transport = T_NCCL;
        }
    } else if (sl_backend_kind(be) == SL_BACKEND_CUDA) {
        c->transport = T_MPI_STAGED; /* size 1: never communicates */
    }
#else
    (void)err;
#endif
    return c;
}

void sl_comm_free(sl_comm_t *c)
{
    if (!c)
        return;
#ifdef SL_HAVE_CUDA
    if (c->transport == T_NCCL)
        ncclCommDestroy(c->nccl);
#endif
    free(c->host);
    free(c);
}

const char *sl_comm_transport(const sl_comm_t *c) { return transport_names[c->transport]; }
int sl_comm_size(const sl_comm_t *c) { return c->size; }
double sl_comm_seconds(const sl_comm_t *c) { return c ? c->seconds : 0.0; }

void sl_comm_allreduce_sum(sl_comm_t *c, sl_tensor_t *t, size_t count_elems)
{
    if ((int64_t)count_elems > sl_tensor_numel(t))
        SL_FATAL("sl_comm_allreduce_sum: %zu elements of a tensor of %lld", count_elems,
                 (long long)sl_tensor_numel(t));
    if (c->size == 1 || count_elems == 0)
        return;
    double t0 = MPI_Wtime();
    switch (c->transport) {
    case T_MPI:
        MPI_Allreduce(MPI_IN_PLACE, t->data, (int)count_elems, mpi_type(t->dtype), MPI_SUM, c->group);
        break;
    case T_MPI_STAGED: {
        size_t bytes = count_elems * sl_dtype_size(t->dtype);
        if (c->host_len < bytes) {
            free(c->host);
            c->host = sl_xmalloc(bytes);
            c->host_len = bytes;
        }
        sl_copy_d2h(c->host, t, bytes); /* synchronises the stream first */
        MPI_Allreduce(MPI_IN_PLACE, c->host, (int)count_elems, mpi_type(t->dtype), MPI_SUM, c->group);
        sl_copy_h2d(t, c->host, bytes);
        break;
    }
    case T_NCCL:
#ifdef SL_HAVE_CUDA
        NCCL_CHECK(ncclAllReduce(t->data, t->data, count_elems, nccl_type(t->dtype), ncclSum,
                                 c->nccl, (cudaStream_t)sl_backend_stream(c->be)));
        /* Wait, so that the time counted here is the all-reduce's, not the next GEMM's. */
        sl_backend_sync(c->be);
#endif
        break;
    }
    c->seconds += MPI_Wtime() - t0;
}

MPI_Comm sl_comm_mpi(const sl_comm_t *c) { return c ? c->group : MPI_COMM_SELF; }
