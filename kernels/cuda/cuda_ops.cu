/*
 * cuda_ops.cu — the simple kernels of the CUDA backend: bias add, scaling, activation, row
 * softmax, dtype cast, input standardisation, and the non-GEMM parts of the transformer ops
 * (residual add, layer norm, embedding gather, L2 normalisation) and the packed-token ops (RMSNorm,
 * RoPE, SwiGLU, KV-cache write, attention against the KV cache, row gather, packed pooling,
 * log-sum-exp pieces, logit pick, top-k) — declared in cuda_ops.cuh; matrix products go to cuBLAS
 * in cuda_backend.cu.
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
#include "kernels/quant.h"

namespace
{

constexpr int kThreads = 256;         /* threads per block of the elementwise kernels */
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

/* out[n, dim] = table[ids[n], dim] for a quantized table: one thread per 32-value block. */
__global__ void embedding_q_kernel(const uint8_t *table, int dt, size_t block_bytes,
                                   const int32_t *ids, float *out, int64_t n, int64_t dim)
{
    const int64_t nb = dim / SL_QBLOCK, total = n * nb;
    for (int64_t i = global_index(); i < total; i += grid_stride()) {
        const int64_t row = i / nb, b = i - row * nb;
        sl_q_dequant_block(dt, table + ((int64_t)ids[row] * nb + b) * block_bytes,
                           out + row * dim + b * SL_QBLOCK);
    }
}

/* y[m, n] = x[m, k] @ w[n, k]^T (+ bias) for a quantized w: one warp per output element; lane l
 * dequantises weight blocks l, l + 32, ... of row j into registers and multiplies them with the
 * f32 activations, then the warp sums its lanes. Activations stay f32 (only the weights are
 * quantized here), so results differ from the CPU's int8-activation path by that rounding. */
__global__ void linear_q_kernel(const float *x, const uint8_t *w, int dt, size_t block_bytes,
                                const float *bias, float *y, int64_t m, int64_t n, int64_t k,
                                const float *xmax)
{
    const int64_t nb = k / SL_QBLOCK, warps = m * n;
    const int lane = threadIdx.x & 31;
    const int64_t first = global_index() / 32, stride = grid_stride() / 32;
    for (int64_t o = first; o < warps; o += stride) { /* uniform per warp */
        const int64_t i = o / n, j = o - i * n;
        const float *xr = x + i * k;                  /* [k] */
        const uint8_t *wr = w + j * nb * block_bytes; /* [nb blocks] */
        float acc = 0.0f, v[SL_QBLOCK];
        for (int64_t b = lane; b < nb; b += 32) {
            sl_q_dequant_block(dt, wr + b * block_bytes, v);
            /* W8A8: x on the block's static int8 grid, rounded as the CPU rounds it; a block
             * whose own max exceeds its range takes its own max, as on the CPU (a block
             * without a calibrated scale stays f32 here) */
            const float range = xmax ? xmax[b] : 0.0f;
            float own = 0.0f;
            if (range > 0.0f)
                for (int t = 0; t < SL_QBLOCK; t++)
                    own = fmaxf(own, fabsf(xr[b * SL_QBLOCK + t]));
            const float xd = range > 0.0f ? fmaxf(range, own) / 127.0f : 0.0f;
            for (int t = 0; t < SL_QBLOCK; t++) {
                float xv = xr[b * SL_QBLOCK + t];
                if (xd > 0.0f)
                    xv = fminf(fmaxf(rintf(xv * (1.0f / xd)), -127.0f), 127.0f) * xd;
                acc += v[t] * xv;
            }
        }
        for (int off = 16; off > 0; off >>= 1)
            acc += __shfl_down_sync(0xffffffffu, acc, off);
        if (lane == 0)
            y[i * n + j] = acc + (bias ? bias[j] : 0.0f);
    }
}

__device__ __forceinline__ int64_t clamp_length(int32_t len, int64_t seq)
{
    return len < 0 ? 0 : (len > seq ? seq : (int64_t)len);
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

/* ---- packed-token kernels (f32) -------------------------------------------------------------- */

/* One block per row (grid-stride over rows): out = w * (x * rsqrt(mean(x^2) + eps)), f32 as HF
 * LlamaRMSNorm. out may be x: each thread writes only the elements it read, after the
 * reduction. */
__global__ void rmsnorm_kernel(const float *x, const float *w, float eps, float *out, int64_t rows,
                               int64_t n)
{
    __shared__ float red[32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) { /* uniform per block */
        const float *xr = x + r * n;
        float *yr = out + r * n;
        float ss = 0.0f;
        for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
            ss += xr[j] * xr[j];
        const float rs = 1.0f / sqrtf(block_reduce<false>(ss, red) / (float)n + eps);
        for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
            yr[j] = w[j] * (xr[j] * rs);
    }
}

/* One thread per rotated pair (token, head, i < half): a = x[i], b = x[i + half]. */
__global__ void rope_kernel(float *x, const int32_t *pos, const float *inv_freq, int64_t tokens,
                            int64_t heads, int64_t half)
{
    const int64_t total = tokens * heads * half;
    for (int64_t i = global_index(); i < total; i += grid_stride()) {
        const int64_t th = i / half, c = i - th * half, t = th / heads;
        const float ang = (float)pos[t] * inv_freq[c];
        float sn, cs;
        sincosf(ang, &sn, &cs);
        float *a = x + th * 2 * half + c, *b = a + half;
        const float av = *a, bv = *b;
        *a = av * cs - bv * sn;
        *b = bv * cs + av * sn;
    }
}

/* out[r, j] = silu(gu[r, j]) * gu[r, f + j] */
__global__ void swiglu_kernel(const float *gu, float *out, int64_t rows, int64_t f)
{
    const int64_t total = rows * f;
    for (int64_t i = global_index(); i < total; i += grid_stride()) {
        const int64_t r = i / f, j = i - r * f;
        const float *g = gu + r * 2 * f;
        out[i] = sl_silu(g[j]) * g[f + j];
    }
}

/* cache[slot[t], pos[t], c] = src[t, c] */
__global__ void kv_write_kernel(float *cache, const float *src, const int32_t *slot,
                                const int32_t *pos, int64_t tokens, int64_t cache_len, int64_t row)
{
    const int64_t total = tokens * row;
    for (int64_t i = global_index(); i < total; i += grid_stride()) {
        const int64_t t = i / row, c = i - t * row;
        cache[((int64_t)slot[t] * cache_len + pos[t]) * row + c] = src[i];
    }
}

constexpr int kAttnWarps = 4; /* warps per (token, head) block */
constexpr int kAttnPerLane = SL_CUDA_ATTN_KV_MAX_HEAD_DIM / 32;

/*
 * One block per (token, head) (grid-stride over the pairs). Warp w takes keys w, w + 4, ...:
 * its lanes hold head dims lane + 32 c of q (pre-scaled) and of an unnormalised accumulator; a
 * key's score is a warp sum, then the warp's online softmax (running max m, sum l) rescales the
 * accumulator and adds p v_j. The four warps' (m, l, acc) are merged through shared memory. A
 * token with no allowed key writes zeros.
 */
__global__ void attention_kv_kernel(const float *q, const float *kc, const float *vc,
                                    const int32_t *slot, const int32_t *pos, const int32_t *kv_len,
                                    float scale, int causal, float *out, int64_t tokens,
                                    int64_t cache_len, int64_t heads, int64_t kv_heads,
                                    int64_t head_dim)
{
    __shared__ float sm_m[kAttnWarps], sm_l[kAttnWarps];
    __shared__ float sm_acc[kAttnWarps][SL_CUDA_ATTN_KV_MAX_HEAD_DIM];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t rep = heads / kv_heads, kld = kv_heads * head_dim;
    for (int64_t th = blockIdx.x; th < tokens * heads; th += gridDim.x) { /* uniform per block */
        const int64_t t = th / heads, h = th - t * heads, g = h / rep, s = slot[t];
        int64_t n = clamp_length(kv_len[s], cache_len); /* keys 0 .. n-1 */
        if (causal && (int64_t)pos[t] + 1 < n)
            n = pos[t] < 0 ? 0 : (int64_t)pos[t] + 1;
        const float *qh = q + th * head_dim;
        const float *kb = kc + s * cache_len * kld + g * head_dim;
        const float *vb = vc + s * cache_len * kld + g * head_dim;
        float qv[kAttnPerLane], acc[kAttnPerLane];
#pragma unroll
        for (int c = 0; c < kAttnPerLane; c++) {
            const int64_t d = lane + 32 * c;
            qv[c] = d < head_dim ? qh[d] * scale : 0.0f;
            acc[c] = 0.0f;
        }
        float m = -INFINITY, l = 0.0f;
        for (int64_t j = warp; j < n; j += kAttnWarps) { /* uniform per warp */
            const float *kj = kb + j * kld, *vj = vb + j * kld;
            float dot = 0.0f;
#pragma unroll
            for (int c = 0; c < kAttnPerLane; c++) {
                const int64_t d = lane + 32 * c;
                if (d < head_dim)
                    dot += qv[c] * kj[d];
            }
            dot = warp_sum(dot);
            const float mn = fmaxf(m, dot);
            const float corr = expf(m - mn); /* 0 for the first key (m = -Inf) */
            const float p = expf(dot - mn);
            l = l * corr + p;
#pragma unroll
            for (int c = 0; c < kAttnPerLane; c++) {
                const int64_t d = lane + 32 * c;
                if (d < head_dim)
                    acc[c] = acc[c] * corr + p * vj[d];
            }
            m = mn;
        }
        if (lane == 0) {
            sm_m[warp] = m;
            sm_l[warp] = l;
        }
#pragma unroll
        for (int c = 0; c < kAttnPerLane; c++) {
            const int64_t d = lane + 32 * c;
            if (d < head_dim)
                sm_acc[warp][d] = acc[c];
        }
        __syncthreads(); /* why: every warp's partial result must be in shared memory */
        float mx = -INFINITY;
        for (int w = 0; w < kAttnWarps; w++)
            mx = fmaxf(mx, sm_m[w]);
        float sum = 0.0f;
        for (int w = 0; w < kAttnWarps; w++)
            if (sm_m[w] != -INFINITY) /* a warp without keys adds nothing */
                sum += sm_l[w] * expf(sm_m[w] - mx);
        for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
            float o = 0.0f;
            for (int w = 0; w < kAttnWarps; w++)
                if (sm_m[w] != -INFINITY)
                    o += sm_acc[w][d] * expf(sm_m[w] - mx);
            out[th * head_dim + d] = n > 0 ? o / sum : 0.0f;
        }
        __syncthreads(); /* why: the next pair overwrites the shared partials */
    }
}

/* out[i, c] = src[idx[i], c] */
__global__ void gather_rows_kernel(const float *src, const int32_t *idx, float *out, int64_t m,
                                   int64_t dim)
{
    const int64_t total = m * dim;
    for (int64_t i = global_index(); i < total; i += grid_stride()) {
        const int64_t r = i / dim, c = i - r * dim;
        out[i] = src[(int64_t)idx[r] * dim + c];
    }
}

/* One thread per output element (b, c), tokens summed in order (the CPU's order: same bits). */
__global__ void pool_packed_kernel(const float *x, const int32_t *offsets, int cls, float *out,
                                   int64_t batch, int64_t dim)
{
    const int64_t total = batch * dim;
    for (int64_t i = global_index(); i < total; i += grid_stride()) {
        const int64_t b = i / dim, c = i - b * dim;
        const int64_t t0 = offsets[b], n = (int64_t)offsets[b + 1] - t0;
        if (cls) {
            out[i] = n > 0 ? x[t0 * dim + c] : 0.0f;
            continue;
        }
        float sum = 0.0f;
        for (int64_t t = t0; t < t0 + n; t++)
            sum += x[t * dim + c];
        out[i] = n > 0 ? sum / (float)n : 0.0f;
    }
}

/* One block per row: its max, then the sum of exp(x - max) (0 when the max is -Inf). */
__global__ void logsumexp_kernel(const float *logits, float *rowmax, float *sumexp, int64_t rows,
                                 int64_t v)
{
    __shared__ float red[32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) { /* uniform per block */
        const float *x = logits + r * v;
        float mx = -INFINITY;
        for (int64_t j = threadIdx.x; j < v; j += blockDim.x)
            mx = fmaxf(mx, x[j]);
        mx = block_reduce<true>(mx, red);
        float sum = 0.0f;
        if (mx != -INFINITY) /* the same for every thread of the block */
            for (int64_t j = threadIdx.x; j < v; j += blockDim.x)
                sum += expf(x[j] - mx);
        sum = block_reduce<false>(sum, red);
        if (threadIdx.x == 0) {
            rowmax[r] = mx;
            sumexp[r] = sum;
        }
    }
}

/* out[r] = logits[r, target[r] - v0] inside the shard, else 0 */
__global__ void pick_logits_kernel(const float *logits, const int32_t *target, int64_t v0,
                                   float *out, int64_t rows, int64_t v)
{
    for (int64_t r = global_index(); r < rows; r += grid_stride()) {
        const int64_t c = (int64_t)target[r] - v0;
        out[r] = c >= 0 && c < v ? logits[r * v + c] : 0.0f;
    }
}

constexpr int kTopkThreads = 256; /* = the largest k, a power of two for the bitonic sort */

/* (key a, index ia) comes before (key b, index ib) in the output order */
__device__ __forceinline__ bool topk_before(uint32_t a, int32_t ia, uint32_t b, int32_t ib)
{
    return a > b || (a == b && ia < ib);
}

/*
 * One block of kTopkThreads per row (grid-stride over rows), on the keys of sl_order_key:
 *  1. radix select, 8 bits at a time from the top: a 256-bin histogram of the keys that match
 *     the digits chosen so far finds the digit of the k-th largest key, until the whole key thr
 *     is known, with `need` = how many keys equal to thr belong to the top k;
 *  2. the keys > thr (k - need of them, any order) and the first `need` keys == thr in index
 *     order (a block-wide ordered count with warp ballots) go to shared memory;
 *  3. a bitonic sort of those k entries (padded to kTopkThreads) into output order.
 */
__global__ void topk_kernel(const float *logits, int k, float *vals, int32_t *idx, int64_t rows,
                            int64_t v)
{
    __shared__ unsigned hist[256];
    __shared__ uint32_t ckey[kTopkThreads];
    __shared__ int32_t cidx[kTopkThreads];
    __shared__ uint32_t s_prefix;
    __shared__ int s_need, s_count;
    __shared__ int s_warp[kTopkThreads / 32];
    const int tid = threadIdx.x, lane = tid & 31, wid = tid >> 5;
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) { /* uniform per block */
        const float *x = logits + r * v;
        uint32_t prefix = 0, mask = 0;
        int need = k;
        for (int shift = 24; shift >= 0; shift -= 8) {
            hist[tid] = 0;
            __syncthreads(); /* why: the histogram is cleared before anyone counts */
            for (int64_t j = tid; j < v; j += kTopkThreads) {
                const uint32_t key = sl_order_key(x[j]);
                if ((key & mask) == prefix)
                    atomicAdd(&hist[(key >> shift) & 255u], 1u);
            }
            __syncthreads(); /* why: every count is in before the digit is chosen */
            if (tid == 0) {
                int rem = need, digit = 255;
                for (; digit > 0; digit--) { /* the k-th largest lies in the first bin that */
                    if ((int64_t)hist[digit] >= rem) /* reaches the rank still wanted */
                        break;
                    rem -= (int)hist[digit];
                }
                s_prefix = prefix | ((uint32_t)digit << shift);
                s_need = rem;
            }
            __syncthreads(); /* why: s_prefix and s_need are read by every thread */
            prefix = s_prefix;
            need = s_need;
            mask |= 255u << shift;
        }
        const uint32_t thr = prefix;
        const int n_gt = k - need;
        if (tid == 0)
            s_count = 0;
        __syncthreads(); /* why: s_count is zero before the first atomicAdd */
        for (int64_t j = tid; j < v; j += kTopkThreads) {
            const uint32_t key = sl_order_key(x[j]);
            if (key > thr) {
                const int at = atomicAdd(&s_count, 1);
                ckey[at] = key;
                cidx[at] = (int32_t)j;
            }
        }
        int taken = 0; /* keys == thr seen so far, in index order; the same in every thread */
        for (int64_t j0 = 0; j0 < v && taken < need; j0 += kTopkThreads) {
            const int64_t j = j0 + tid;
            const bool eq = j < v && sl_order_key(x[j]) == thr;
            const unsigned ballot = __ballot_sync(0xffffffffu, eq);
            if (lane == 0)
                s_warp[wid] = __popc(ballot);
            __syncthreads(); /* why: every warp's count is needed below */
            int before = __popc(ballot & ((1u << lane) - 1u)), total = 0;
            for (int w = 0; w < kTopkThreads / 32; w++) {
                before += w < wid ? s_warp[w] : 0;
                total += s_warp[w];
            }
            if (eq && taken + before < need) {
                ckey[n_gt + taken + before] = thr;
                cidx[n_gt + taken + before] = (int32_t)j;
            }
            taken += total;
            __syncthreads(); /* why: s_warp is rewritten by the next chunk */
        }
        if (tid >= k) { /* padding that sorts after every real entry */
            ckey[tid] = 0;
            cidx[tid] = INT32_MAX;
        }
        __syncthreads(); /* why: all k candidates are in shared memory before the sort */
        for (int size = 2; size <= kTopkThreads; size <<= 1)
            for (int stride = size >> 1; stride > 0; stride >>= 1) {
                const int p = tid ^ stride;
                if (p > tid) {
                    const bool fwd = (tid & size) == 0; /* this run goes in output order */
                    const bool first = topk_before(ckey[tid], cidx[tid], ckey[p], cidx[p]);
                    if (first != fwd) {
                        const uint32_t tk = ckey[tid];
                        const int32_t ti = cidx[tid];
                        ckey[tid] = ckey[p];
                        cidx[tid] = cidx[p];
                        ckey[p] = tk;
                        cidx[p] = ti;
                    }
                }
                __syncthreads(); /* why: the next step reads what this one swapped */
            }
        if (tid < k) {
            vals[r * k + tid] = x[cidx[tid]];
            idx[r * k + tid] = cidx[tid];
        }
        __syncthreads(); /* why: the next row reuses the shared arrays */
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
    if (sl_dtype_quantized(table_dt)) {
        embedding_q_kernel<<<blocks_for(n * (dim / SL_QBLOCK)), kThreads, 0, s>>>(
            static_cast<const uint8_t *>(table), (int)table_dt, sl_dtype_size(table_dt), ids, out,
            n, dim);
        CUDA_CHECK_LAUNCH();
        return;
    }
    dispatch_float(table_dt, "sl_cuda_embedding", [&](auto tag) {
        using T = SL_TYPE_OF(tag);
        embedding_kernel<T><<<blocks_for(n * dim), kThreads, 0, s>>>(static_cast<const T *>(table),
                                                                     ids, out, n, dim);
        CUDA_CHECK_LAUNCH();
    });
}

void sl_cuda_l2_normalize(cudaStream_t s, float *x, int64_t rows, int64_t dim)
{
    if (rows <= 0 || dim <= 0)
        return;
    l2_normalize_kernel<<<row_blocks(rows), row_threads(dim), 0, s>>>(x, rows, dim);
    CUDA_CHECK_LAUNCH();
}

/* ---- packed-token launchers ------------------------------------------------------------------ */

void sl_cuda_rmsnorm(cudaStream_t s, const float *x, const float *w, float eps, float *out,
                     int64_t rows, int64_t n)
{
    if (rows <= 0 || n <= 0)
        return;
    rmsnorm_kernel<<<row_blocks(rows), row_threads(n), 0, s>>>(x, w, eps, out, rows, n);
    CUDA_CHECK_LAUNCH();
}

void sl_cuda_rope(cudaStream_t s, float *x, const int32_t *pos, const float *inv_freq,
                  int64_t tokens, int64_t heads, int64_t head_dim)
{
    const int64_t half = head_dim / 2;
    if (tokens <= 0 || heads <= 0 || half <= 0)
        return;
    rope_kernel<<<blocks_for(tokens * heads * half), kThreads, 0, s>>>(x, pos, inv_freq, tokens,
                                                                       heads, half);
    CUDA_CHECK_LAUNCH();
}

void sl_cuda_swiglu(cudaStream_t s, const float *gate_up, float *out, int64_t rows, int64_t f)
{
    if (rows <= 0 || f <= 0)
        return;
    swiglu_kernel<<<blocks_for(rows * f), kThreads, 0, s>>>(gate_up, out, rows, f);
    CUDA_CHECK_LAUNCH();
}

void sl_cuda_kv_write(cudaStream_t s, float *cache, const float *src, const int32_t *slot,
                      const int32_t *pos, int64_t tokens, int64_t cache_len, int64_t row)
{
    if (tokens <= 0 || row <= 0)
        return;
    kv_write_kernel<<<blocks_for(tokens * row), kThreads, 0, s>>>(cache, src, slot, pos, tokens,
                                                                  cache_len, row);
    CUDA_CHECK_LAUNCH();
}

void sl_cuda_attention_kv(cudaStream_t s, const float *q, const float *kc, const float *vc,
                          const int32_t *slot, const int32_t *pos, const int32_t *kv_len,
                          float scale, int causal, float *out, int64_t tokens, int64_t cache_len,
                          int64_t heads, int64_t kv_heads, int64_t head_dim)
{
    if (tokens <= 0 || heads <= 0 || head_dim <= 0)
        return;
    if (head_dim > SL_CUDA_ATTN_KV_MAX_HEAD_DIM)
        sl_fatal(__FILE__, __LINE__, "sl_cuda_attention_kv", "head dim %lld > %d not supported",
                 (long long)head_dim, SL_CUDA_ATTN_KV_MAX_HEAD_DIM);
    attention_kv_kernel<<<row_blocks(tokens * heads), kAttnWarps * 32, 0, s>>>(
        q, kc, vc, slot, pos, kv_len, scale, causal, out, tokens, cache_len, heads, kv_heads,
        head_dim);
    CUDA_CHECK_LAUNCH();
}

void sl_cuda_gather_rows(cudaStream_t s, const float *src, const int32_t *idx, float *out,
                         int64_t m, int64_t dim)
{
    if (m <= 0 || dim <= 0)
        return;
    gather_rows_kernel<<<blocks_for(m * dim), kThreads, 0, s>>>(src, idx, out, m, dim);
    CUDA_CHECK_LAUNCH();
}

void sl_cuda_pool_packed(cudaStream_t s, const float *x, const int32_t *offsets, sl_pool_t mode,
                         float *out, int64_t batch, int64_t dim)
{
    if (batch <= 0 || dim <= 0)
        return;
    pool_packed_kernel<<<blocks_for(batch * dim), kThreads, 0, s>>>(x, offsets, mode == SL_POOL_CLS,
                                                                    out, batch, dim);
    CUDA_CHECK_LAUNCH();
}

void sl_cuda_logsumexp_parts(cudaStream_t s, const float *logits, float *rowmax, float *sumexp,
                             int64_t rows, int64_t v)
{
    if (rows <= 0)
        return;
    logsumexp_kernel<<<row_blocks(rows), row_threads(v), 0, s>>>(logits, rowmax, sumexp, rows, v);
    CUDA_CHECK_LAUNCH();
}

void sl_cuda_pick_logits(cudaStream_t s, const float *logits, const int32_t *target, int64_t v0,
                         float *out, int64_t rows, int64_t v)
{
    if (rows <= 0)
        return;
    pick_logits_kernel<<<blocks_for(rows), kThreads, 0, s>>>(logits, target, v0, out, rows, v);
    CUDA_CHECK_LAUNCH();
}

void sl_cuda_topk_rows(cudaStream_t s, const float *logits, int k, float *vals, int32_t *idx,
                       int64_t rows, int64_t v)
{
    if (rows <= 0)
        return;
    if (k < 1 || k > kTopkThreads || k > v)
        sl_fatal(__FILE__, __LINE__, "sl_cuda_topk_rows", "k %d of %lld columns (1..%d)", k,
                 (long long)v, kTopkThreads);
    topk_kernel<<<row_blocks(rows), kTopkThreads, 0, s>>>(logits, k, vals, idx, rows, v);
    CUDA_CHECK_LAUNCH();
}

void sl_cuda_linear_q(cudaStream_t s, const float *x, const void *w, sl_dtype_t w_dt,
                      const float *bias, float *y, int64_t m, int64_t n, int64_t k,
                      const float *xmax)
{
    if (m <= 0 || n <= 0)
        return;
    linear_q_kernel<<<blocks_for(m * n * 32), kThreads, 0, s>>>(
        x, static_cast<const uint8_t *>(w), (int)w_dt, sl_dtype_size(w_dt), bias, y, m, n, k, xmax);
    CUDA_CHECK_LAUNCH();
}
