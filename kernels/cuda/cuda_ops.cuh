/*
 * cuda_ops.cuh — the elementwise and row kernels of the CUDA backend (bias add, scaling,
 * activation, softmax, cast, standardisation, and the transformer ops: residual add, layer norm,
 * embedding gather, L2 normalisation), the
 * packed-token ops (RMSNorm, RoPE, SwiGLU, KV-cache write and attention, row gather, packed
 * pooling, log-sum-exp pieces, logit pick, top-k) and the error-check macros of the CUDA code.
 *
 * Every launcher enqueues its kernel on the given stream and returns at once (no host
 * synchronisation); tensors are dense and row-major, addressed with 64-bit indices so that
 * tensors of more than 2^31 elements work. Per-element math comes from kernels/elementwise.h,
 * the same formulas as the CPU backend; half and bfloat16 values are converted with the
 * hardware round-to-nearest-even instructions, which give the same bits as the CPU helpers
 * (sl_f32_to_f16, sl_f32_to_bf16) for every value but NaN payloads.
 * Any CUDA or cuBLAS failure here is an environment failure: the macros call sl_fatal().
 */
#ifndef SL_CUDA_OPS_CUH
#define SL_CUDA_OPS_CUH

#include <stdint.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "common/sl_error.h"
#include "kernels/backend.h"

/* Aborts (every rank) on a CUDA runtime error; `call` is printed as written. */
#define CUDA_CHECK(call)                                                                           \
    do {                                                                                           \
        cudaError_t sl_e_ = (call);                                                                \
        if (sl_e_ != cudaSuccess)                                                                  \
            sl_fatal(__FILE__, __LINE__, #call, "%s", cudaGetErrorString(sl_e_));                  \
    } while (0)

/* Aborts (every rank) on a cuBLAS error. */
#define CUBLAS_CHECK(call)                                                                         \
    do {                                                                                           \
        cublasStatus_t sl_s_ = (call);                                                             \
        if (sl_s_ != CUBLAS_STATUS_SUCCESS)                                                        \
            sl_fatal(__FILE__, __LINE__, #call, "%s", cublasGetStatusString(sl_s_));               \
    } while (0)

/* Checks the launch of the kernel just enqueued (bad configuration, missing sm image). */
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

/* x[rows, cols] += bias[cols]. x: f32/f16/bf16; bias: f32 or x's dtype. */
void sl_cuda_add_bias(cudaStream_t s, void *x, sl_dtype_t x_dt, const void *bias,
                      sl_dtype_t bias_dt, int64_t rows, int64_t cols);

/* x[n] *= scale, computed in f32. x: f32/f16/bf16. */
void sl_cuda_scale(cudaStream_t s, void *x, sl_dtype_t dt, int64_t n, float scale);

/* x[n] = act(x[n]) in place, computed in f32. x: f32/f16/bf16. */
void sl_cuda_activation(cudaStream_t s, void *x, sl_dtype_t dt, int64_t n, sl_act_t act);

/* In-place softmax of each row of x[rows, cols]: max-subtracted, f32 accumulation. */
void sl_cuda_softmax(cudaStream_t s, void *x, sl_dtype_t dt, int64_t rows, int64_t cols);

/* dst[n] = (dst dtype) src[n], any pair of f32/f16/bf16 (a plain copy when the dtypes match). */
void sl_cuda_cast(cudaStream_t s, const void *src, sl_dtype_t src_dt, void *dst, sl_dtype_t dst_dt,
                  int64_t n);

/* x[rows, cols] = (x - mean[cols]) / std[cols]; all f32. */
void sl_cuda_standardize(cudaStream_t s, float *x, const float *mean, const float *std,
                         int64_t rows, int64_t cols);

/* ---- transformer ops (f32 activations) ---- */

/* x[n] += y[n]. */
void sl_cuda_add(cudaStream_t s, float *x, const float *y, int64_t n);

/* out[rows, n] = (x - mean) / sqrt(var + eps) * gamma[n] + beta[n] per row, biased variance,
 * two shifted passes in f32 with block reductions. out may be x. */
void sl_cuda_layernorm(cudaStream_t s, const float *x, const float *gamma, const float *beta,
                       float eps, float *out, int64_t rows, int64_t n);

/* out[n, dim] = table[ids[n], dim]; table: f32/f16/bf16 [V, dim]; ids: i32 in [0, V). */
/* y[m, n] = x[m, k] @ w[n, k]^T (+ bias[n]; may be NULL) for a quantized w (Q8_0, Q4_0, Q4_1;
 * k a multiple of 32), the weights dequantised inside the kernel, f32 activations. xmax (W8A8;
 * device f32 [k / 32], or NULL): each x of block b is first rounded to the static int8 grid of
 * step xmax[b] / 127 and clamped to +-127 steps, as the CPU quantizes it. */
void sl_cuda_linear_q(cudaStream_t s, const float *x, const void *w, sl_dtype_t w_dt,
                      const float *bias, float *y, int64_t m, int64_t n, int64_t k,
                      const float *xmax);
void sl_cuda_embedding(cudaStream_t s, const void *table, sl_dtype_t table_dt, const int32_t *ids,
                       float *out, int64_t n, int64_t dim);

/* x[rows, dim]: each row divided by max(||row||_2, 1e-12). */
void sl_cuda_l2_normalize(cudaStream_t s, float *x, int64_t rows, int64_t dim);

/* ---- packed-token ops (f32 activations, i32 indices in device memory) ---- */

/* out[rows, n] = w[n] * (x * rsqrt(mean(x^2) + eps)) per row (HF LlamaRMSNorm). out may be x. */
void sl_cuda_rmsnorm(cudaStream_t s, const float *x, const float *w, float eps, float *out,
                     int64_t rows, int64_t n);

/* Rotary embedding in place on x[tokens, heads, head_dim] (pairs i, i + head_dim/2), angle
 * (float)pos[t] * inv_freq[i]. */
void sl_cuda_rope(cudaStream_t s, float *x, const int32_t *pos, const float *inv_freq,
                  int64_t tokens, int64_t heads, int64_t head_dim);

/* out[rows, f] = silu(gate_up[:, j]) * gate_up[:, f + j]. */
void sl_cuda_swiglu(cudaStream_t s, const float *gate_up, float *out, int64_t rows, int64_t f);

/* cache[slot[t], pos[t], :] = src[t, :] with `row` floats per (slot, position). */
void sl_cuda_kv_write(cudaStream_t s, float *cache, const float *src, const int32_t *slot,
                      const int32_t *pos, int64_t tokens, int64_t cache_len, int64_t row);

/* Largest head_dim sl_cuda_attention_kv takes (8 values per lane of a warp). */
#define SL_CUDA_ATTN_KV_MAX_HEAD_DIM 256

/* Attention of q[tokens, heads, head_dim] against the caches kc, vc [slots, cache_len, kv_heads,
 * head_dim] as sl_attention_kv documents; one block per (token, head), online softmax. */
void sl_cuda_attention_kv(cudaStream_t s, const float *q, const float *kc, const float *vc,
                          const int32_t *slot, const int32_t *pos, const int32_t *kv_len,
                          float scale, int causal, float *out, int64_t tokens, int64_t cache_len,
                          int64_t heads, int64_t kv_heads, int64_t head_dim);

/* out[m, dim] = src[idx[m], dim]. */
void sl_cuda_gather_rows(cudaStream_t s, const float *src, const int32_t *idx, float *out,
                         int64_t m, int64_t dim);

/* out[batch, dim] from packed x: mean of tokens offsets[b] .. offsets[b+1]-1 (f32 sum in token
 * order, then a division), or the first of them (CLS); an empty row gives zeros. */
void sl_cuda_pool_packed(cudaStream_t s, const float *x, const int32_t *offsets, sl_pool_t mode,
                         float *out, int64_t batch, int64_t dim);

/* rowmax[r] = max of logits[r, :], sumexp[r] = sum exp(logits[r, :] - rowmax[r]) (0 for a row of
 * -Inf only). */
void sl_cuda_logsumexp_parts(cudaStream_t s, const float *logits, float *rowmax, float *sumexp,
                             int64_t rows, int64_t v);

/* out[r] = logits[r, target[r] - v0] when that column is in [0, v), else 0. */
void sl_cuda_pick_logits(cudaStream_t s, const float *logits, const int32_t *target, int64_t v0,
                         float *out, int64_t rows, int64_t v);

/* The k (<= 256) largest of each row in descending order, ties by lower index (sl_order_key
 * order): vals[rows, k], idx[rows, k]. */
void sl_cuda_topk_rows(cudaStream_t s, const float *logits, int k, float *vals, int32_t *idx,
                       int64_t rows, int64_t v);

#endif
