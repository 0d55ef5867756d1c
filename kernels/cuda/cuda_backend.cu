/*
 * cuda_backend.cu — the CUDA implementation of the backend interface (kernels/backend_impl.h).
 *
 * One backend owns one device, one non-blocking stream and one cuBLAS handle bound to that
 * stream. Every operation is enqueued on the stream and returns without waiting, so a model's
 * layers run back to back on the GPU; only the host copies (h2d/d2h) and sync() wait. Matrix
 * products go to cuBLAS (f32 accumulation for every dtype, as the CPU backend); bias add,
 * activations, softmax, casts, standardisation and the row kernels of the transformer ops are
 * in cuda_ops.cu; the packed-token ops (attention against the KV cache included) are single
 * kernels in cuda_ops.cu.
 *
 * A backend and its tensors are meant to be used from the thread that created it: the device is
 * made current in sl_cuda_backend_create() and the process uses that one device (one GPU per
 * rank). Failures of the environment (a CUDA or cuBLAS call that must not fail) abort through
 * sl_fatal(); only creation reports an error, so a run without a GPU gets a clear message.
 */
#include "kernels/cuda/cuda_ops.cuh"

#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/backend_impl.h"

typedef struct {
    struct sl_backend base; /* first: backend.c reaches the ops table through it */
    int device;
    cudaStream_t stream;   /* every operation of this backend is ordered on it */
    cublasHandle_t cublas; /* bound to `stream` */
    char desc[320];        /* "cuda:N (device name)" */
} sl_cuda_backend_t;

static sl_cuda_backend_t *cuda_of(sl_backend_t *be) { return (sl_cuda_backend_t *)be; }
static cudaStream_t stream_of(sl_backend_t *be) { return cuda_of(be)->stream; }

static cudaDataType_t cuda_dtype(sl_dtype_t dt)
{
    switch (dt) {
    case SL_F32: return CUDA_R_32F;
    case SL_F16: return CUDA_R_16F;
    case SL_BF16: return CUDA_R_16BF;
    default: sl_fatal(__FILE__, __LINE__, "cuda_matmul", "unsupported dtype %s", sl_dtype_name(dt));
    }
}

/* ---- backend --------------------------------------------------------------------------------- */

static void cuda_destroy(sl_backend_t *be)
{
    sl_cuda_backend_t *cb = cuda_of(be);
    /* why: queued work may still use the handle and the stream; wait before destroying them. */
    CUDA_CHECK(cudaStreamSynchronize(cb->stream));
    CUBLAS_CHECK(cublasDestroy(cb->cublas));
    CUDA_CHECK(cudaStreamDestroy(cb->stream));
    free(cb);
}

static const char *cuda_describe(sl_backend_t *be) { return cuda_of(be)->desc; }

static void *cuda_stream(sl_backend_t *be) { return (void *)stream_of(be); }

static void cuda_sync(sl_backend_t *be) { CUDA_CHECK(cudaStreamSynchronize(stream_of(be))); }

/* ---- memory ---------------------------------------------------------------------------------- */

static void *cuda_alloc(sl_backend_t *be, size_t bytes)
{
    void *p = NULL;
    /* A zero-byte tensor still gets a distinct non-NULL pointer (NULL means out of memory). */
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError(); /* clear it: the caller reports it, later checks must not */
        return NULL;
    }
    if (e != cudaSuccess)
        sl_fatal(__FILE__, __LINE__, "cudaMalloc", "%s (%zu bytes)", cudaGetErrorString(e), bytes);
    return p;
}

static void cuda_free(sl_backend_t *be, void *ptr)
{
    /* cudaFree waits for the device to finish work that may still use the buffer. */
    if (ptr)
        CUDA_CHECK(cudaFree(ptr));
}

static void cuda_h2d(sl_backend_t *be, void *dst, const void *src, size_t bytes)
{
    if (bytes == 0)
        return;
    cudaStream_t s = stream_of(be);
    /* On the stream, so the copy waits for kernels still reading the old contents of dst. */
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s));
    /* why: copies are synchronous by contract; the caller may reuse src as soon as we return. */
    CUDA_CHECK(cudaStreamSynchronize(s));
}

static void cuda_d2h(sl_backend_t *be, void *dst, const void *src, size_t bytes)
{
    if (bytes == 0)
        return;
    cudaStream_t s = stream_of(be);
    /* On the stream, so the copy waits for the kernels that produce src. */
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s));
    /* why: the host reads dst as soon as we return. */
    CUDA_CHECK(cudaStreamSynchronize(s));
}

static void cuda_memzero(sl_backend_t *be, void *ptr, size_t bytes)
{
    if (bytes == 0)
        return;
    CUDA_CHECK(cudaMemsetAsync(ptr, 0, bytes, stream_of(be)));
}

/* ---- ops ------------------------------------------------------------------------------------- */

/*
 * C[m,n] = alpha op(A)[m,k] op(B)[k,n] + beta C (+ bias[n]), all row-major.
 *
 * cuBLAS is column-major, and a row-major [r, c] matrix (leading dimension c) is, read
 * column-major, its transpose [c, r]. So we ask cuBLAS for C^T[n,m] = op(B)^T[n,k] op(A)^T[k,m]:
 *   - C stored [m,n] is column-major C^T [n,m], ldc = n.
 *   - B stored [k,n] (no trans_b) is column-major [n,k] = op(B)^T: CUBLAS_OP_N, ld = n.
 *     B stored [n,k] (trans_b)   is column-major [k,n] = op(B):   CUBLAS_OP_T, ld = k.
 *   - A stored [m,k] (no trans_a) is column-major [k,m] = op(A)^T: CUBLAS_OP_N, ld = k.
 *     A stored [k,m] (trans_a)   is column-major [m,k] = op(A):   CUBLAS_OP_T, ld = m.
 * cuBLAS (transa, transb, m', n', k') = (op_B, op_A, n, m, k), its "A" is our B and its "B" is
 * our A. beta == 0 leaves C unread (BLAS rule). With CUBLAS_COMPUTE_32F the products of f16 and
 * bf16 inputs accumulate in f32 and reductions stay f32 (math mode set at creation).
 */
static void cuda_matmul(sl_backend_t *be, const sl_tensor_t *a, int trans_a, const sl_tensor_t *b,
                        int trans_b, float alpha, float beta, const sl_tensor_t *bias,
                        sl_tensor_t *c, int64_t m, int64_t n, int64_t k)
{
    sl_cuda_backend_t *cb = cuda_of(be);
    if (m <= 0 || n <= 0)
        return;
    if (k <= 0) {
        /* An empty product: C = beta C (+ bias), without relying on cuBLAS for k == 0.
         * beta == 0 writes zeros without reading C (BLAS rule: C may hold NaN). */
        if (beta == 0.0f)
            CUDA_CHECK(cudaMemsetAsync(c->data, 0, sl_tensor_bytes(c), cb->stream));
        else if (beta != 1.0f)
            sl_cuda_scale(cb->stream, c->data, c->dtype, m * n, beta);
        if (bias)
            sl_cuda_add_bias(cb->stream, c->data, c->dtype, bias->data, bias->dtype, m, n);
        return;
    }
    const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    const int64_t ldb = trans_b ? k : n;
    const int64_t lda = trans_a ? m : k;
    const int64_t ldc = n;
    const cudaDataType_t ab_type = cuda_dtype(a->dtype); /* A and B share it */
    const cudaDataType_t c_type = cuda_dtype(c->dtype);

    if (m <= INT_MAX && n <= INT_MAX && k <= INT_MAX && lda <= INT_MAX && ldb <= INT_MAX) {
        CUBLAS_CHECK(cublasGemmEx(cb->cublas, op_b, op_a, (int)n, (int)m, (int)k, &alpha, b->data,
                                  ab_type, (int)ldb, a->data, ab_type, (int)lda, &beta, c->data,
                                  c_type, (int)ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    } else {
        CUBLAS_CHECK(cublasGemmEx_64(cb->cublas, op_b, op_a, n, m, k, &alpha, b->data, ab_type, ldb,
                                     a->data, ab_type, lda, &beta, c->data, c_type, ldc,
                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    /* Same stream as the GEMM, so the bias kernel runs after it. */
    if (bias)
        sl_cuda_add_bias(cb->stream, c->data, c->dtype, bias->data, bias->dtype, m, n);
}

/* int8_act is not used: the kernel always takes f32 activations against dequantised blocks,
 * except under static scales (xmax), which it applies to every row as the CPU does. */
static void cuda_linear_q(sl_backend_t *be, const sl_tensor_t *x, const sl_tensor_t *w,
                          const sl_tensor_t *bias, sl_tensor_t *y, int64_t m, int64_t n, int64_t k,
                          int int8_act)
{
    (void)int8_act;
    sl_cuda_linear_q(stream_of(be), (const float *)x->data, w->data, w->dtype,
                     bias ? (const float *)bias->data : NULL, (float *)y->data, m, n, k,
                     w->act_scales ? (const float *)((const sl_tensor_t *)w->act_scales)->data
                                   : NULL);
}

static void cuda_add_bias(sl_backend_t *be, sl_tensor_t *x, const sl_tensor_t *bias, int64_t rows,
                          int64_t cols)
{
    sl_cuda_add_bias(stream_of(be), x->data, x->dtype, bias->data, bias->dtype, rows, cols);
}

static void cuda_activation(sl_backend_t *be, sl_tensor_t *x, sl_act_t act)
{
    sl_cuda_activation(stream_of(be), x->data, x->dtype, sl_tensor_numel(x), act);
}

static void cuda_softmax(sl_backend_t *be, sl_tensor_t *x, int64_t rows, int64_t cols)
{
    sl_cuda_softmax(stream_of(be), x->data, x->dtype, rows, cols);
}

static void cuda_cast(sl_backend_t *be, const sl_tensor_t *src, sl_tensor_t *dst)
{
    sl_cuda_cast(stream_of(be), src->data, src->dtype, dst->data, dst->dtype, sl_tensor_numel(src));
}

static void cuda_standardize(sl_backend_t *be, sl_tensor_t *x, const sl_tensor_t *mean,
                             const sl_tensor_t *std, int64_t rows, int64_t cols)
{
    sl_cuda_standardize(stream_of(be), (float *)x->data, (const float *)mean->data,
                        (const float *)std->data, rows, cols);
}

/* ---- transformer ops ------------------------------------------------------------------------- */

static void cuda_add(sl_backend_t *be, sl_tensor_t *x, const sl_tensor_t *y, int64_t n)
{
    sl_cuda_add(stream_of(be), (float *)x->data, (const float *)y->data, n);
}

static void cuda_layernorm(sl_backend_t *be, const sl_tensor_t *x, const sl_tensor_t *gamma,
                           const sl_tensor_t *beta, float eps, sl_tensor_t *out, int64_t rows,
                           int64_t n)
{
    sl_cuda_layernorm(stream_of(be), (const float *)x->data, (const float *)gamma->data,
                      (const float *)beta->data, eps, (float *)out->data, rows, n);
}

static void cuda_embedding(sl_backend_t *be, const sl_tensor_t *table, const sl_tensor_t *ids,
                           sl_tensor_t *out, int64_t n, int64_t dim)
{
    sl_cuda_embedding(stream_of(be), table->data, table->dtype, (const int32_t *)ids->data,
                      (float *)out->data, n, dim);
}

static void cuda_l2_normalize(sl_backend_t *be, sl_tensor_t *x, int64_t rows, int64_t dim)
{
    sl_cuda_l2_normalize(stream_of(be), (float *)x->data, rows, dim);
}

/* ---- packed-token ops ------------------------------------------------------------------------ */

static const int32_t *i32_of(const sl_tensor_t *t) { return (const int32_t *)t->data; }

static void cuda_rmsnorm(sl_backend_t *be, const sl_tensor_t *x, const sl_tensor_t *weight,
                         float eps, sl_tensor_t *out, int64_t rows, int64_t n)
{
    sl_cuda_rmsnorm(stream_of(be), (const float *)x->data, (const float *)weight->data, eps,
                    (float *)out->data, rows, n);
}

static void cuda_rope(sl_backend_t *be, sl_tensor_t *x, const sl_tensor_t *positions,
                      const sl_tensor_t *inv_freq, int64_t tokens, int64_t heads, int64_t head_dim)
{
    sl_cuda_rope(stream_of(be), (float *)x->data, i32_of(positions), (const float *)inv_freq->data,
                 tokens, heads, head_dim);
}

static void cuda_swiglu(sl_backend_t *be, const sl_tensor_t *gate_up, sl_tensor_t *out,
                        int64_t rows, int64_t f)
{
    sl_cuda_swiglu(stream_of(be), (const float *)gate_up->data, (float *)out->data, rows, f);
}

static void cuda_kv_write(sl_backend_t *be, sl_tensor_t *cache, const sl_tensor_t *src,
                          const sl_tensor_t *slot, const sl_tensor_t *pos, int64_t tokens,
                          int64_t cache_len, int64_t row)
{
    sl_cuda_kv_write(stream_of(be), (float *)cache->data, (const float *)src->data, i32_of(slot),
                     i32_of(pos), tokens, cache_len, row);
}

static void cuda_attention_kv(sl_backend_t *be, const sl_tensor_t *q, const sl_tensor_t *kc,
                              const sl_tensor_t *vc, const sl_tensor_t *slot,
                              const sl_tensor_t *pos, const sl_tensor_t *kv_len, float scale,
                              int causal, sl_tensor_t *out, int64_t tokens, int64_t slots,
                              int64_t cache_len, int64_t heads, int64_t kv_heads, int64_t head_dim)
{
    sl_cuda_attention_kv(stream_of(be), (const float *)q->data, (const float *)kc->data,
                         (const float *)vc->data, i32_of(slot), i32_of(pos), i32_of(kv_len), scale,
                         causal, (float *)out->data, tokens, cache_len, heads, kv_heads, head_dim);
}

static void cuda_gather_rows(sl_backend_t *be, const sl_tensor_t *src, const sl_tensor_t *idx,
                             sl_tensor_t *out, int64_t m, int64_t dim)
{
    sl_cuda_gather_rows(stream_of(be), (const float *)src->data, i32_of(idx), (float *)out->data, m,
                        dim);
}

static void cuda_pool_packed(sl_backend_t *be, const sl_tensor_t *x, const sl_tensor_t *offsets,
                             sl_pool_t mode, sl_tensor_t *out, int64_t batch, int64_t dim)
{
    sl_cuda_pool_packed(stream_of(be), (const float *)x->data, i32_of(offsets), mode,
                        (float *)out->data, batch, dim);
}

static void cuda_logsumexp_parts(sl_backend_t *be, const sl_tensor_t *logits, sl_tensor_t *rowmax,
                                 sl_tensor_t *sumexp, int64_t rows, int64_t v)
{
    sl_cuda_logsumexp_parts(stream_of(be), (const float *)logits->data, (float *)rowmax->data,
                            (float *)sumexp->data, rows, v);
}

static void cuda_pick_logits(sl_backend_t *be, const sl_tensor_t *logits, const sl_tensor_t *target,
                             int64_t v0, sl_tensor_t *out, int64_t rows, int64_t v)
{
    sl_cuda_pick_logits(stream_of(be), (const float *)logits->data, i32_of(target), v0,
                        (float *)out->data, rows, v);
}

static void cuda_topk_rows(sl_backend_t *be, const sl_tensor_t *logits, int k, sl_tensor_t *vals,
                           sl_tensor_t *idx, int64_t rows, int64_t v)
{
    sl_cuda_topk_rows(stream_of(be), (const float *)logits->data, k, (float *)vals->data,
                      (int32_t *)idx->data, rows, v);
}

/* The device's free memory; other processes on the same GPU take from it too. */
static size_t cuda_free_bytes(sl_backend_t *be)
{
    size_t free_b = 0, total_b = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    return free_b;
}

static const sl_backend_ops_t cuda_ops = {
    .name = "cuda",
    .destroy = cuda_destroy,
    .describe = cuda_describe,
    .stream = cuda_stream,
    .sync = cuda_sync,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .h2d = cuda_h2d,
    .d2h = cuda_d2h,
    .memzero = cuda_memzero,
    .repack = NULL, /* GGUF's layout: the kernel dequantises it */
    .matmul = cuda_matmul,
    .linear_q = cuda_linear_q,
    .add_bias = cuda_add_bias,
    .activation = cuda_activation,
    .softmax = cuda_softmax,
    .cast = cuda_cast,
    .standardize = cuda_standardize,
    .add = cuda_add,
    .layernorm = cuda_layernorm,
    .embedding = cuda_embedding,
    .l2_normalize = cuda_l2_normalize,
    .rmsnorm = cuda_rmsnorm,
    .rope = cuda_rope,
    .swiglu = cuda_swiglu,
    .kv_write = cuda_kv_write,
    .attention_kv = cuda_attention_kv,
    .gather_rows = cuda_gather_rows,
    .pool_packed = cuda_pool_packed,
    .logsumexp_parts = cuda_logsumexp_parts,
    .pick_logits = cuda_pick_logits,
    .topk_rows = cuda_topk_rows,
    .free_bytes = cuda_free_bytes,
};

/* ---- creation -------------------------------------------------------------------------------- */

extern "C" int sl_cuda_backend_device_count(void)
{
    int count = 0; /* without a driver cudaGetDeviceCount fails and leaves it unwritten */
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        (void)cudaGetLastError(); /* not sticky: clear it so later checks do not see it */
        return 0;
    }
    return count;
}

extern "C" sl_backend_t *sl_cuda_backend_create(int device, sl_error_t *err)
{
    cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        sl_errorf(err, "cudaSetDevice(%d): %s (%d CUDA devices visible)", device,
                  cudaGetErrorString(e), sl_cuda_backend_device_count());
        return NULL;
    }
    cudaDeviceProp prop;
    e = cudaGetDeviceProperties(&prop, device);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        sl_errorf(err, "cudaGetDeviceProperties(%d): %s", device, cudaGetErrorString(e));
        return NULL;
    }
    cudaStream_t stream = NULL;
    /* Non-blocking: no implicit synchronisation with the legacy default stream, which other
     * libraries in the process (NCCL, MPI's CUDA support) may use. */
    e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        sl_errorf(err, "cudaStreamCreateWithFlags (device %d): %s", device, cudaGetErrorString(e));
        return NULL;
    }
    cublasHandle_t handle = NULL;
    cublasStatus_t st = cublasCreate(&handle);
    if (st != CUBLAS_STATUS_SUCCESS) {
        sl_errorf(err, "cublasCreate (device %d): %s", device, cublasGetStatusString(st));
        (void)cudaStreamDestroy(stream);
        return NULL;
    }
    st = cublasSetStream(handle, stream);
    if (st == CUBLAS_STATUS_SUCCESS)
        /* f16/bf16 products with an f16/bf16 C must not reduce split-K partials in 16 bits:
         * accumulation stays f32, as the interface promises. TF32 stays off (default math). */
        st = cublasSetMathMode(
            handle,
            (cublasMath_t)(CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION));
    if (st != CUBLAS_STATUS_SUCCESS) {
        sl_errorf(err, "cublasSetStream/cublasSetMathMode (device %d): %s", device,
                  cublasGetStatusString(st));
        (void)cublasDestroy(handle);
        (void)cudaStreamDestroy(stream);
        return NULL;
    }

    sl_cuda_backend_t *cb = (sl_cuda_backend_t *)sl_xcalloc(1, sizeof *cb);
    cb->base.ops = &cuda_ops;
    cb->base.kind = SL_BACKEND_CUDA;
    cb->base.bulk_rows = SL_BULK_ALL;
    cb->device = device;
    cb->stream = stream;
    cb->cublas = handle;
    snprintf(cb->desc, sizeof cb->desc, "cuda:%d (%s)", device, prop.name);
    return &cb->base;
}
