/*
 * cuda_ops.cu — the simple kernels of the CUDA backend: bias add, scaling, activation, row
 * softmax, dtype cast, input standardisation, and the non-GEMM parts of the transformer ops
 * (residual add, layer norm, embedding gather, attention's masked softmax, pooling, L2
 * normalisation) — declared in cuda_ops.cuh; matrix products, including attention's two
 * batched products, go to cuBLAS in cuda_backend.cu.
 *
 * Each kernel is a grid-stride loop with 64-bit indices, so a launch of at most kMaxBlocks blocks
 * covers any tensor size, including more than 2^31 elements. Values are loaded into f32, computed
 * with the formulas of kernels/elementwise.h (shared with the CPU backend) and rounded once when
 * stored. Tensors may be f32, f16 or bf16; the dtype is dispatched on the host into a template.
 */
#include "kernels/cuda/cuda_ops.cuh"

#include <math.h>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/elementwise.h"

namespace {

constexpr int kThreads = 256;        /* threads per block of the elementwise kernels */
constexpr int64_t kMaxBlocks = 65536; /* enough to fill any GPU; larger tensors loop */

/* ---- f32 <-> storage type (round to nearest even, as sl_f32_to_f16 / sl_f32_to_bf16) ------- */

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f32<__half>(float v)
{
    return __float2half_rn(v);
}
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v)
{
    return __float2bfloat16_rn(v);
}

/* Calls f with a null pointer of the storage type of dt (float, __half or __nv_bfloat16), so a
 * generic lambda can name the type as std::remove_pointer_t<decltype(tag)>. */
template <typename F> void dispatch_float(sl_dtype_t dt, const char *what, F f)
{
    switch (dt) {
    case SL_F32: f(static_cast<float *>(nullptr)); break;
    case SL_F16: f(static_cast<__half *>(nullptr)); break;
    case SL_BF16: f(static_cast<__nv_bfloat16 *>(nullptr)); break;
    default: sl_fatal(__FILE__, __LINE__, what, "unsupported dtype %s", sl_dtype_name(dt));
    }
}

#define SL_TYPE_OF(tag) std::remove_pointer_t<decltype(tag)>

unsigned blocks_for(int64_t n)
{
    int64_t b = (n + kThreads - 1) / kThreads;
    return (unsigned)(b < 1 ? 1 : (b > kMaxBlocks ? kMaxBlocks : b));
}

__device__ __forceinline__ int64_t global_index()
{
    return (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_stride() { return (int64_t)gridDim.x * blockDim.x; }

/* ---- kernels --------------------------------------------------------------------------------- */

/* x[rows, cols] += bias[cols] */
template <typename T, typename B>
__global__ void add_bias_kernel(T *x, const B *bias, int64_t rows, int64_t cols)
{
    const int64_t n = rows * cols;
    for (int64_t i = global_index(); i < n; i += grid_stride())
        x[i] = from_f32<T>(to_f32(x[i]) + to_f32(bias[i % cols]));
}

/* x[n] *= scale */
template <typename T> __global__ void scale_kernel(T *x, int64_t n, float scale)
{
    for (int64_t i = global_index(); i < n; i += grid_stride())
        x[i] = from_f32<T>(scale * to_f32(x[i]));
}

/* x[n] = act(x[n]) */
template <typename T> __global__ void activation_kernel(T *x, int64_t n, int act)
{
    for (int64_t i = global_index(); i < n; i += grid_stride())
        x[i] = from_f32<T>(sl_apply_act(act, to_f32(x[i])));
}

/* dst[n] = src[n] */
template <typename S, typename D> __global__ void cast_kernel(const S *src, D *dst, int64_t n)
{
    for (int64_t i = global_index(); i < n; i += grid_stride())
        dst[i] = from_f32<D>(to_f32(src[i]));
}

/* x[rows, cols] = (x - mean[cols]) / std[cols] */
__global__ void standardize_kernel(float *x, const float *mean, const float *std, int64_t rows,
                                   int64_t cols)
{
    const int64_t n = rows * cols;
    for (int64_t i = global_index(); i < n; i += grid_stride()) {
        const int64_t c = i % cols;
        x[i] = (x[i] - mean[c]) / std[c];
    }
}

/* Butterfly reductions: every lane ends with the same value (IEEE max and + are commutative). */
__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Max (IS_MAX) or sum over the block; every thread gets the result. blockDim.x is a multiple of
 * 32 and at most 1024; red has 32 slots. Every thread of the block must call it. */
template <bool IS_MAX> __device__ float block_reduce(float v, float *red)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = IS_MAX ? warp_max(v) : warp_sum(v);
    __syncthreads(); /* why: threads may still be reading red[] from the previous reduction */
    if (lane == 0)
        red[warp] = v;
    __syncthreads(); /* why: every warp's partial must be written before any warp reads them */
    v = lane < nwarps ? red[lane] : (IS_MAX ? -INFINITY : 0.0f);
    return IS_MAX ? warp_max(v) : warp_sum(v);
}

/* One block per row (grid-stride over rows): softmax of x[r, 0:cols] in place,
 * y = exp(x - max) / sum exp(x - max), all in f32. */
template <typename T> __global__ void softmax_kernel(T *x, int64_t rows, int64_t cols)
{
    __shared__ float red[32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) { /* uniform per block */
        T *row = x + r * cols;
        float mx = -INFINITY;
        for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
            mx = fmaxf(mx, to_f32(row[j]));
        mx = block_reduce<true>(mx, red);
        float sum = 0.0f;
        for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
            sum += expf(to_f32(row[j]) - mx);
        sum = block_reduce<false>(sum, red);
        const float inv = 1.0f / sum;
        /* Each thread rewrites only the elements it read itself, so no barrier is needed here;
         * the barrier at the start of the next row's first reduction protects red[]. */
        for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
            row[j] = from_f32<T>(expf(to_f32(row[j]) - mx) * inv);
    }
}

/* ---- transformer kernels (f32) -------------------------------------------------------------- */

/* x[n] += y[n] */
__global__ void add_kernel(float *x, const float *y, int64_t n)
{
    for (int64_t i = global_index(); i < n; i += grid_stride())
        x[i] += y[i];
}

/* One block per row (grid-stride over rows), two passes over the row shifted by its first
 * element c: mean_d = mean(x - c), then var = mean((x - c - mean_d)^2).
 * why the shift: in a row like 1000 + 1e-3 * noise, an f32 sum of the raw values carries an
 * error of the order of ulp(1000 n) / n ~ 1e-4 in the mean, a tenth of the spread; the
 * differences x - c are exact there (Sterbenz), so mean and variance are as accurate as the
 * spread itself. x and out may be the same buffer (no __restrict__): each thread writes only the
 * elements it read itself, after both reductions. */
__global__ void layernorm_kernel(const float *x, const float *gamma, const float *beta, float eps,
                                 float *out, int64_t rows, int64_t n)
{
    __shared__ float red[32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) { /* uniform per block */
        const float *xr = x + r * n;
        float *yr = out + r * n;
        const float c = xr[0];
        float sum = 0.0f;
        for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
            sum += xr[j] - c;
        const float mean_d = block_reduce<false>(sum, red) / (float)n;
        float sq = 0.0f;
        for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
            const float d = (xr[j] - c) - mean_d;
            sq += d * d;
        }
        const float var = block_reduce<false>(sq, red) / (float)n; /* biased, as PyTorch */
        const float rstd = 1.0f / sqrtf(var + eps);
        for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
            yr[j] = ((xr[j] - c) - mean_d) * rstd * gamma[j] + beta[j];
    }
}

/* out[n, dim] = table[ids[n], dim] */
template <typename T>
__global__ void embedding_kernel(const T *table, const int32_t *ids, float *out, int64_t n,
                                 int64_t dim)
{
    const int64_t total = n * dim;
    for (int64_t i = global_index(); i < total; i += grid_stride()) {
        const int64_t row = i / dim, c = i - row * dim;
        out[i] = to_f32(table[(int64_t)ids[row] * dim + c]);
    }
}

__device__ __forceinline__ int64_t clamp_length(int32_t len, int64_t seq)
{
    return len < 0 ? 0 : (len > seq ? seq : (int64_t)len);
}

/* One block per score row (b, i) of p [nb, seq, seq] (grid-stride over rows). Keys j < nj take
 * part (nj = lengths[b], or i + 1 when causal); the others, and every key of a padded query row,
 * are written as exact zeros without being read (the GEMM wrote scores there too). */
__global__ void attention_softmax_kernel(float *p, const int32_t *lengths, int64_t nb, int64_t seq,
                                         int causal)
{
    __shared__ float red[32];
    const int64_t rows = nb * seq;
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) { /* uniform per block */
        const int64_t b = r / seq, i = r - b * seq;
        const int64_t len = clamp_length(lengths[b], seq);
        const int64_t nj = i >= len ? 0 : (causal ? i + 1 : len);
        float *row = p + r * seq;
        if (nj == 0) { /* the same for every thread of the block: no reduction skipped by half */
            for (int64_t j = threadIdx.x; j < seq; j += blockDim.x)
                row[j] = 0.0f;
            continue;
        }
        float mx = -INFINITY;
        for (int64_t j = threadIdx.x; j < nj; j += blockDim.x)
            mx = fmaxf(mx, row[j]);
        mx = block_reduce<true>(mx, red);
        float sum = 0.0f;
        for (int64_t j = threadIdx.x; j < nj; j += blockDim.x)
            sum += expf(row[j] - mx);
        sum = block_reduce<false>(sum, red);
        const float inv = 1.0f / sum;
        for (int64_t j = threadIdx.x; j < seq; j += blockDim.x)
            row[j] = j < nj ? expf(row[j] - mx) * inv : 0.0f;
    }
}

/* One thread per output element (b, c): consecutive threads read consecutive c (coalesced). */
__global__ void pool_kernel(const float *x, const int32_t *lengths, int cls, float *out,
                            int64_t batch, int64_t seq, int64_t dim)
{
    const int64_t total = batch * dim;
    for (int64_t i = global_index(); i < total; i += grid_stride()) {
        const int64_t b = i / dim, c = i - b * dim;
        const float *xb = x + b * seq * dim + c;
        if (cls) {
            out[i] = seq > 0 ? xb[0] : 0.0f;
            continue;
        }
        const int64_t len = clamp_length(lengths[b], seq);
        float sum = 0.0f;
        for (int64_t t = 0; t < len; t++)
            sum += xb[t * dim];
        out[i] = len > 0 ? sum / (float)len : 0.0f;
    }
}

/* One block per row: x[r, :] /= max(||x[r, :]||, 1e-12). */
__global__ void l2_normalize_kernel(float *x, int64_t rows, int64_t dim)
{
    __shared__ float red[32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) { /* uniform per block */
        float *xr = x + r * dim;
        float ss = 0.0f;
        for (int64_t j = threadIdx.x; j < dim; j += blockDim.x)
            ss += xr[j] * xr[j];
        const float denom = fmaxf(sqrtf(block_reduce<false>(ss, red)), 1e-12f);
        for (int64_t j = threadIdx.x; j < dim; j += blockDim.x)
            xr[j] /= denom;
    }
}

/* Threads for a one-block-per-row kernel: one warp for short rows, up to 256 for long ones (a
 * multiple of 32, as block_reduce needs). */
unsigned row_threads(int64_t cols)
{
    const int64_t t = (cols + 31) / 32 * 32;
    return (unsigned)(t < 32 ? 32 : (t > 256 ? 256 : t));
}

unsigned row_blocks(int64_t rows) { return (unsigned)(rows < kMaxBlocks ? rows : kMaxBlocks); }

} // namespace

/* ---- launchers ------------------------------------------------------------------------------- */

void sl_cuda_add_bias(cudaStream_t s, void *x, sl_dtype_t x_dt, const void *bias,
                      sl_dtype_t bias_dt, int64_t rows, int64_t cols)
{
    if (rows <= 0 || cols <= 0)
        return;
    dispatch_float(x_dt, "sl_cuda_add_bias", [&](auto xtag) {
        using T = SL_TYPE_OF(xtag);
        dispatch_float(bias_dt, "sl_cuda_add_bias", [&](auto btag) {
            using B = SL_TYPE_OF(btag);
            add_bias_kernel<T, B><<<blocks_for(rows * cols), kThreads, 0, s>>>(
                static_cast<T *>(x), static_cast<const B *>(bias), rows, cols);
            CUDA_CHECK_LAUNCH();
        });
    });
}

void sl_cuda_scale(cudaStream_t s, void *x, sl_dtype_t dt, int64_t n, float scale)
{
    if (n <= 0)
        return;
    dispatch_float(dt, "sl_cuda_scale", [&](auto tag) {
        using T = SL_TYPE_OF(tag);
        scale_kernel<T><<<blocks_for(n), kThreads, 0, s>>>(static_cast<T *>(x), n, scale);
        CUDA_CHECK_LAUNCH();
    });
}

void sl_cuda_activation(cudaStream_t s, void *x, sl_dtype_t dt, int64_t n, sl_act_t act)
{
    if (n <= 0 || act == SL_ACT_NONE)
        return;
    dispatch_float(dt, "sl_cuda_activation", [&](auto tag) {
        using T = SL_TYPE_OF(tag);
        activation_kernel<T><<<blocks_for(n), kThreads, 0, s>>>(static_cast<T *>(x), n, (int)act);
        CUDA_CHECK_LAUNCH();
    });
}

void sl_cuda_softmax(cudaStream_t s, void *x, sl_dtype_t dt, int64_t rows, int64_t cols)
{
    if (rows <= 0 || cols <= 0)
        return;
    /* Short rows get a single warp, long rows up to 256 threads (a multiple of 32, as
     * block_reduce needs). */
    int64_t threads = (cols + 31) / 32 * 32;
    if (threads > 256)
        threads = 256;
    const unsigned blocks = (unsigned)(rows < kMaxBlocks ? rows : kMaxBlocks);
    dispatch_float(dt, "sl_cuda_softmax", [&](auto tag) {
        using T = SL_TYPE_OF(tag);
        softmax_kernel<T><<<blocks, (unsigned)threads, 0, s>>>(static_cast<T *>(x), rows, cols);
        CUDA_CHECK_LAUNCH();
    });
}

void sl_cuda_cast(cudaStream_t s, const void *src, sl_dtype_t src_dt, void *dst, sl_dtype_t dst_dt,
                  int64_t n)
{
    if (n <= 0)
        return;
    if (src_dt == dst_dt) {
        CUDA_CHECK(cudaMemcpyAsync(dst, src, (size_t)n * sl_dtype_size(src_dt),
                                   cudaMemcpyDeviceToDevice, s));
        return;
    }
    dispatch_float(src_dt, "sl_cuda_cast", [&](auto stag) {
        using S = SL_TYPE_OF(stag);
        dispatch_float(dst_dt, "sl_cuda_cast", [&](auto dtag) {
            using D = SL_TYPE_OF(dtag);
            cast_kernel<S, D><<<blocks_for(n), kThreads, 0, s>>>(static_cast<const S *>(src),
                                                                 static_cast<D *>(dst), n);
            CUDA_CHECK_LAUNCH();
        });
    });
}

void sl_cuda_standardize(cudaStream_t s, float *x, const float *mean, const float *std,
                         int64_t rows, int64_t cols)
{
    if (rows <= 0 || cols <= 0)
        return;
    standardize_kernel<<<blocks_for(rows * cols), kThreads, 0, s>>>(x, mean, std, rows, cols);
    CUDA_CHECK_LAUNCH();
}

/* ---- transformer launchers ------------------------------------------------------------------- */

void sl_cuda_add(cudaStream_t s, float *x, const float *y, int64_t n)
{
    if (n <= 0)
        return;
    add_kernel<<<blocks_for(n), kThreads, 0, s>>>(x, y, n);
    CUDA_CHECK_LAUNCH();
}

void sl_cuda_layernorm(cudaStream_t s, const float *x, const float *gamma, const float *beta,
                       float eps, float *out, int64_t rows, int64_t n)
{
    if (rows <= 0 || n <= 0)
        return;
    layernorm_kernel<<<row_blocks(rows), row_threads(n), 0, s>>>(x, gamma, beta, eps, out, rows, n);
    CUDA_CHECK_LAUNCH();
}

void sl_cuda_embedding(cudaStream_t s, const void *table, sl_dtype_t table_dt, const int32_t *ids,
                       float *out, int64_t n, int64_t dim)
{
    if (n <= 0 || dim <= 0)
        return;
    dispatch_float(table_dt, "sl_cuda_embedding", [&](auto tag) {
        using T = SL_TYPE_OF(tag);
        embedding_kernel<T><<<blocks_for(n * dim), kThreads, 0, s>>>(static_cast<const T *>(table),
                                                                     ids, out, n, dim);
        CUDA_CHECK_LAUNCH();
    });
}

void sl_cuda_attention_softmax(cudaStream_t s, float *p, const int32_t *lengths, int64_t nb,
                               int64_t seq, int causal)
{
    if (nb <= 0 || seq <= 0)
        return;
    attention_softmax_kernel<<<row_blocks(nb * seq), row_threads(seq), 0, s>>>(p, lengths, nb, seq,
                                                                               causal);
    CUDA_CHECK_LAUNCH();
}

void sl_cuda_pool(cudaStream_t s, const float *x, const int32_t *lengths, sl_pool_t mode,
                  float *out, int64_t batch, int64_t seq, int64_t dim)
{
    if (batch <= 0 || dim <= 0)
        return;
    pool_kernel<<<blocks_for(batch * dim), kThreads, 0, s>>>(x, lengths, mode == SL_POOL_CLS, out,
                                                             batch, seq, dim);
    CUDA_CHECK_LAUNCH();
}

void sl_cuda_l2_normalize(cudaStream_t s, float *x, int64_t rows, int64_t dim)
{
    if (rows <= 0 || dim <= 0)
        return;
    l2_normalize_kernel<<<row_blocks(rows), row_threads(dim), 0, s>>>(x, rows, dim);
    CUDA_CHECK_LAUNCH();
}
