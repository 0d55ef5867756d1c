/*
 * cuda_ops.cu — the simple kernels of the CUDA backend: bias add, scaling, activation, row
 * softmax, dtype cast and input standardisation (declared in cuda_ops.cuh; matrix products go to
 * cuBLAS in cuda_backend.cu).
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
