/*
 * comm.c — collectives over a TP group on backend memory (see comm.h for the three
 * transports and when each is used).
 */
#include "partition/comm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/sl_profile.h"
#include "common/sl_fault.h"

#ifdef SL_HAVE_CUDA
#include <cuda_runtime_api.h>
#include <nccl.h>
#endif

struct sl_comm {
    MPI_Comm group;
    int size, rank;
    sl_backend_t *be;
    sl_transport_t transport;
    char why[256];
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
#define NCCL_CHECK(call)                                                                           \
    do {                                                                                           \
        ncclResult_t r_ = (call);                                                                  \
        if (r_ != ncclSuccess)                                                                     \
            sl_fatal(__FILE__, __LINE__, #call, "%s", ncclGetErrorString(r_));                     \
    } while (0)
#define CUDA_CHECK_C(call)                                                                         \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess)                                                                     \
            sl_fatal(__FILE__, __LINE__, #call, "%s", cudaGetErrorString(e_));                     \
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

#endif

int sl_comm_choose(const char *mode, int cuda, int size, const sl_comm_place_t *places, char *why,
                   size_t why_cap, sl_error_t *err)
{
    int is_auto = !strcmp(mode, "auto"), is_mpi = !strcmp(mode, "mpi"),
        is_nccl = !strcmp(mode, "nccl");
    if (!is_auto && !is_mpi && !is_nccl)
        return sl_errorf(err, "--comm '%s': expected auto, mpi or nccl", mode);
    if (!cuda) {
        if (is_nccl)
            return sl_errorf(err, "--comm nccl: NCCL needs the CUDA backend (--device cuda); the "
                                  "CPU backend reduces over MPI");
        snprintf(why, why_cap, "CPU backend: MPI on host memory");
        return SL_COMM_MPI;
    }
    /* The first pair of ranks on one physical GPU (same host, same PCI bus id), if any. */
    int a = -1, b = -1;
    for (int i = 0; i < size && a < 0; i++)
        for (int j = i + 1; j < size; j++)
            if (!strcmp(places[i].host, places[j].host) && !strcmp(places[i].gpu, places[j].gpu)) {
                a = i, b = j;
                break;
            }
    if (is_mpi) {
        snprintf(why, why_cap, "--comm mpi: through host memory and MPI");
        return SL_COMM_MPI_STAGED;
    }
    if (a >= 0) {
        if (is_nccl)
            return sl_errorf(err,
                             "--comm nccl: ranks %d and %d of a tensor-parallel group share "
                             "GPU %s on host %s, and NCCL refuses two ranks of one "
                             "communicator on one GPU; use --comm auto or mpi, or one rank "
                             "per GPU",
                             a, b, places[a].gpu, places[a].host);
        snprintf(why, why_cap,
                 "ranks %d and %d share GPU %s on %s, which NCCL refuses: through "
                 "host memory and MPI (slower)",
                 a, b, places[a].gpu, places[a].host);
        return SL_COMM_MPI_STAGED;
    }
    if (is_nccl) {
        snprintf(why, why_cap, "--comm nccl%s", size == 1 ? ": a 1-rank NCCL communicator" : "");
        return SL_COMM_NCCL;
    }
    if (size == 1) {
        snprintf(why, why_cap, "one rank per group: nothing to reduce");
        return SL_COMM_MPI_STAGED;
    }
    snprintf(why, why_cap, "every rank of the group has its own GPU");
    return SL_COMM_NCCL;
}

sl_comm_t *sl_comm_create(MPI_Comm group, sl_backend_t *be, const char *mode, sl_error_t *err)
{
    sl_comm_t *c = sl_xcalloc(1, sizeof *c);
    c->group = group;
    c->be = be;
    MPI_Comm_size(group, &c->size);
    MPI_Comm_rank(group, &c->rank);
    int cuda = sl_backend_kind(be) == SL_BACKEND_CUDA;
    /* Every rank learns where every rank of its group runs, then makes the same choice. */
    sl_comm_place_t mine, *all = sl_xcalloc((size_t)c->size, sizeof *all);
    memset(&mine, 0, sizeof mine);
    gethostname(mine.host, sizeof mine.host - 1);
#ifdef SL_HAVE_CUDA
    if (cuda) {
        int dev = 0;
        CUDA_CHECK_C(cudaGetDevice(&dev));
        CUDA_CHECK_C(cudaDeviceGetPCIBusId(mine.gpu, sizeof mine.gpu, dev));
    }
#endif
    MPI_Allgather(&mine, sizeof mine, MPI_BYTE, all, sizeof mine, MPI_BYTE, group);
    int t = sl_comm_choose(mode, cuda, c->size, all, c->why, sizeof c->why, err);
    free(all);
    if (t < 0) {
        free(c);
        return NULL;
    }
    c->transport = (sl_transport_t)t;
#ifdef SL_HAVE_CUDA
    if (c->transport == SL_COMM_NCCL) {
        ncclUniqueId id;
        /* Group rank 0 makes the id; everyone else learns it over MPI. */
        if (c->rank == 0)
            NCCL_CHECK(ncclGetUniqueId(&id));
        MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, group);
        NCCL_CHECK(ncclCommInitRank(&c->nccl, c->size, id, c->rank));
    }
#endif
    return c;
}

void sl_comm_free(sl_comm_t *c)
{
    if (!c)
        return;
#ifdef SL_HAVE_CUDA
    if (c->transport == SL_COMM_NCCL)
        ncclCommDestroy(c->nccl);
#endif
    free(c->host);
    free(c);
}

const char *sl_comm_transport(const sl_comm_t *c) { return transport_names[c->transport]; }
const char *sl_comm_why(const sl_comm_t *c) { return c->why; }
int sl_comm_size(const sl_comm_t *c) { return c->size; }
double sl_comm_seconds(const sl_comm_t *c) { return c ? c->seconds : 0.0; }

void sl_comm_allreduce_sum(sl_comm_t *c, sl_tensor_t *t, size_t count_elems)
{
    if ((int64_t)count_elems > sl_tensor_numel(t))
        SL_FATAL("sl_comm_allreduce_sum: %zu elements of a tensor of %lld", count_elems,
                 (long long)sl_tensor_numel(t));
    /* A 1-rank NCCL communicator (--comm nccl) still runs its all-reduce: that is its point. */
    if ((c->size == 1 && c->transport != SL_COMM_NCCL) || count_elems == 0)
        return;
    double t0 = MPI_Wtime();
    /* An MPI error here is fatal on every rank (the default MPI_ERRORS_ARE_FATAL handler, or
     * sl_fatal -> MPI_Abort below): the ranks of the group cannot agree on anything else. */
    if (sl_fault_hit(SL_FAULT_ALLREDUCE))
        sl_fatal(__FILE__, __LINE__, "MPI_Allreduce", "MPI_ERR_OTHER: %zu elements over %d ranks%s",
                 count_elems, c->size, sl_fault_note(SL_FAULT_ALLREDUCE));
    SL_RANGE_PUSH("all-reduce");
    switch (c->transport) {
    case SL_COMM_MPI:
        MPI_Allreduce(MPI_IN_PLACE, t->data, (int)count_elems, mpi_type(t->dtype), MPI_SUM,
                      c->group);
        break;
    case SL_COMM_MPI_STAGED: {
        size_t bytes = count_elems * sl_dtype_size(t->dtype);
        if (c->host_len < bytes) {
            free(c->host);
            c->host = sl_xmalloc(bytes);
            c->host_len = bytes;
        }
        sl_copy_d2h(c->host, t, bytes); /* synchronises the stream first */
        MPI_Allreduce(MPI_IN_PLACE, c->host, (int)count_elems, mpi_type(t->dtype), MPI_SUM,
                      c->group);
        sl_copy_h2d(t, c->host, bytes);
        break;
    }
    case SL_COMM_NCCL:
#ifdef SL_HAVE_CUDA
        NCCL_CHECK(ncclAllReduce(t->data, t->data, count_elems, nccl_type(t->dtype), ncclSum,
                                 c->nccl, (cudaStream_t)sl_backend_stream(c->be)));
        /* Wait, so that the time counted here is the all-reduce's, not the next GEMM's. */
        sl_backend_sync(c->be);
#endif
        break;
    }
    SL_RANGE_POP();
    c->seconds += MPI_Wtime() - t0;
}

void sl_linear_row_parallel(sl_comm_t *c, const sl_tensor_t *x, const sl_tensor_t *w,
                            const sl_tensor_t *bias, sl_tensor_t *y, sl_tensor_t *cast)
{
    /* A 1-rank NCCL communicator (--comm nccl) still runs its all-reduce, as below. */
    if (!c || (c->size == 1 && c->transport != SL_COMM_NCCL)) {
        sl_linear_cast(x, w, bias, y, cast);
        return;
    }
    /* Each rank's product is a partial sum of the full output: the bias waits for the sum. */
    sl_linear_cast(x, w, NULL, y, cast);
    sl_comm_allreduce_sum(c, y, (size_t)sl_tensor_numel(y));
    if (bias)
        sl_add_bias(y, bias);
}

static MPI_Op mpi_op(sl_reduce_t op)
{
    return op == SL_REDUCE_SUM ? MPI_SUM : op == SL_REDUCE_MAX ? MPI_MAX : MPI_MIN;
}

/* Whether a host collective has anything to exchange. */
static int host_peers(const sl_comm_t *c) { return c && c->size > 1; }

void sl_comm_host_allreduce_f32(sl_comm_t *c, float *buf, size_t n, sl_reduce_t op)
{
    if (!host_peers(c) || n == 0)
        return;
    double t0 = MPI_Wtime();
    MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, mpi_op(op), c->group);
    c->seconds += MPI_Wtime() - t0;
}

size_t sl_comm_host_min_size(sl_comm_t *c, size_t v)
{
    if (!host_peers(c))
        return v;
    unsigned long long x = (unsigned long long)v;
    double t0 = MPI_Wtime();
    MPI_Allreduce(MPI_IN_PLACE, &x, 1, MPI_UNSIGNED_LONG_LONG, MPI_MIN, c->group);
    c->seconds += MPI_Wtime() - t0;
    return (size_t)x;
}

void sl_comm_host_allgather(sl_comm_t *c, const void *mine, size_t n, sl_dtype_t dtype, void *all)
{
    if (!host_peers(c)) {
        memcpy(all, mine, n * sl_dtype_size(dtype));
        return;
    }
    double t0 = MPI_Wtime();
    MPI_Allgather(mine, (int)n, mpi_type(dtype), all, (int)n, mpi_type(dtype), c->group);
    c->seconds += MPI_Wtime() - t0;
}

void sl_comm_host_allgatherv_f32(sl_comm_t *c, const float *mine, float *all, const int *counts,
                                 const int *displs)
{
    if (!host_peers(c)) {
        memcpy(all + displs[0], mine, (size_t)counts[0] * sizeof(float));
        return;
    }
    double t0 = MPI_Wtime();
    MPI_Allgatherv(mine, counts[c->rank], MPI_FLOAT, all, counts, displs, MPI_FLOAT, c->group);
    c->seconds += MPI_Wtime() - t0;
}
