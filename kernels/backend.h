/*
 * backend.h — the compute backend interface.
 *
 * Model code sees an opaque sl_backend_t and calls only the sl_<op>() wrappers below; it never
 * knows whether the memory behind a tensor is host memory (CPU backend: OpenBLAS + OpenMP) or
 * device memory (CUDA backend: cuBLAS/cuBLASLt + a few kernels). Each implementation fills a
 * static const table of function pointers (kernels/backend_impl.h); the wrappers in backend.c
 * check dtypes and shapes once, so implementations may assume valid arguments.
 *
 * Tensors are dense, row-major (last dimension contiguous) and carry a dtype from day one.
 * Operations are asynchronous with respect to the host on device backends (ordered on the
 * backend's stream); sl_backend_sync() waits for them. Copies to and from the host synchronise.
 */
#ifndef SL_BACKEND_H
#define SL_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "common/sl_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    SL_F32 = 0,
    SL_F16 = 1,
    SL_BF16 = 2,
    SL_I32 = 3,
    SL_I8 = 4,
} sl_dtype_t;

/* Block-quantized weights, blocks of 32 values laid out as GGUF stores them (kernels/quant.h):
 * only as the weight of sl_linear and the table of sl_embedding; the last dimension of such a
 * tensor is a multiple of 32. Kept out of the enum: they are not element types, and the
 * switches over element types (casts, collectives) need no case for them. */
#define SL_Q8_0 ((sl_dtype_t)5)
#define SL_Q4_0 ((sl_dtype_t)6)
#define SL_Q4_1 ((sl_dtype_t)7)
/* K-quants, super-blocks of 256 values, and the 5-bit 32-value formats (kernels/quant.h). A
 * backend holds these only packed (sl_tensor_pack; on the CPU), so they are uploaded only where
 * sl_backend_packs says so. */
#define SL_Q4_K ((sl_dtype_t)8)
#define SL_Q6_K ((sl_dtype_t)9)
#define SL_Q5_0 ((sl_dtype_t)10)
#define SL_Q5_1 ((sl_dtype_t)11)
#define SL_Q5_K ((sl_dtype_t)12)

/* Bytes of one element, or of one block of sl_dtype_block(dt) elements for a quantized dtype. */
size_t sl_dtype_size(sl_dtype_t dt);
/* Elements per block: 32 for Q8_0/Q4_0/Q4_1/Q5_0/Q5_1, 256 for the K-quants, 1 otherwise. */
int64_t sl_dtype_block(sl_dtype_t dt);
/* Bytes of n consecutive elements (n a multiple of sl_dtype_block(dt)). */
size_t sl_dtype_bytes(sl_dtype_t dt, int64_t n);
int sl_dtype_quantized(sl_dtype_t dt);
int sl_dtype_kquant(sl_dtype_t dt);      /* SL_Q4_K, SL_Q5_K or SL_Q6_K */
int sl_dtype_packed_only(sl_dtype_t dt); /* the K-quants, SL_Q5_0 and SL_Q5_1 */
const char *sl_dtype_name(sl_dtype_t dt);
/* "f32"/"float32", "f16"/"float16", "bf16"/"bfloat16" -> dtype; -1 if unknown. */
int sl_dtype_parse(const char *s);

typedef enum {
    SL_ACT_NONE = 0,
    SL_ACT_RELU,
    SL_ACT_GELU, /* exact (erf) form, as torch.nn.GELU() */
    SL_ACT_SILU,
    SL_ACT_TANH,
    SL_ACT_SIGMOID,
} sl_act_t;

const char *sl_act_name(sl_act_t act);
/* "relu", "gelu", "silu", "tanh", "sigmoid" -> act; -1 if unknown. */
int sl_act_parse(const char *s);

typedef enum { SL_BACKEND_CPU = 0, SL_BACKEND_CUDA = 1 } sl_backend_kind_t;

typedef struct sl_backend sl_backend_t;

#define SL_MAX_DIMS 4

typedef struct {
    sl_backend_t *be;
    sl_dtype_t dtype;
    int ndim;
    int64_t shape[SL_MAX_DIMS]; /* row-major; shape[ndim-1] is contiguous */
    void *data;                 /* backend memory (host memory on the CPU backend) */
    int owns_data;
    /* A quantized linear weight under --precision w8a8: an sl_tensor_t * of f32 [K / 32] on the
     * same backend, the calibrated max |x| of each 32-column block of the layer's input x
     * [M, K]; sl_linear quantizes block b of every row with the static step act_scales[b] / 127
     * (a row's block whose own max is larger takes its own, so nothing saturates; a 0 entry: that
     * block's own max, as without). NULL (the default): one scale per 32-value block of each row,
     * from the row. Freed with the tensor. */
    void *act_scales;
    /* A quantized matrix rearranged by sl_tensor_pack into the backend's own layout (CPU: 16
     * rows packed together, kernels/cpu/cpu_qgemm.h); 0: GGUF's row-major blocks. */
    int packed;
} sl_tensor_t;

/* ---- backends ---------------------------------------------------------------------------- */

/* Number of CUDA devices visible to this process; 0 when built without CUDA or without a GPU. */
int sl_cuda_device_count(void);
/* Whether this build contains the CUDA backend. */
int sl_cuda_compiled(void);

/* Creates a backend. device: CUDA device ordinal (ignored on CPU). threads: CPU threads for
 * this process (<= 0: leave the libraries' defaults). Returns NULL and fills err on failure. */
sl_backend_t *sl_backend_create(sl_backend_kind_t kind, int device, int threads, sl_error_t *err);
void sl_backend_free(sl_backend_t *be);
sl_backend_kind_t sl_backend_kind(const sl_backend_t *be);
/* Short description: "cpu (2 threads, OpenBLAS)" or "cuda:0 (NVIDIA H100 ...)". */
const char *sl_backend_describe(const sl_backend_t *be);
/* CUDA stream of the backend (cudaStream_t) for NCCL; NULL on CPU. */
void *sl_backend_stream(sl_backend_t *be);
/* Waits until every queued operation has finished. */
void sl_backend_sync(sl_backend_t *be);
/* Wall seconds spent in sl_matmul and the FLOPs it did (2 m n k each), on the CPU backend,
 * where operations are synchronous; zeros on CUDA (timing would need a sync per GEMM). */
void sl_backend_gemm_stats(const sl_backend_t *be, double *seconds, double *flops);
/* Static W8A8 (--precision w8a8 with a calibration file), on the CPU backend: the 32-value
 * activation blocks quantized so far against a calibrated range (a range of 0 is per-row
 * scaling and is not counted), and how many of them reached beyond it and took their own,
 * larger step; zeros on CUDA and without calibrated ranges. */
void sl_backend_w8a8_stats(const sl_backend_t *be, double *blocks, double *own);

/* ---- memory ------------------------------------------------------------------------------ */

/* Allocates an uninitialised tensor of the given shape. Aborts (sl_fatal) when out of memory. */
sl_tensor_t *sl_tensor_new(sl_backend_t *be, sl_dtype_t dt, int ndim, const int64_t *shape);
sl_tensor_t *sl_tensor_new2(sl_backend_t *be, sl_dtype_t dt, int64_t d0, int64_t d1);
sl_tensor_t *sl_tensor_new1(sl_backend_t *be, sl_dtype_t dt, int64_t d0);
void sl_tensor_free(sl_tensor_t *t); /* NULL-safe */
int64_t sl_tensor_numel(const sl_tensor_t *t);
size_t sl_tensor_bytes(const sl_tensor_t *t);
/* A view of the first `rows` rows of a tensor (no copy; dim 0 shrinks). Not to be freed. */
sl_tensor_t sl_tensor_rows(const sl_tensor_t *t, int64_t rows);
/* A view of the first d0*d1*... elements of t with the shape [d0, .., d(ndim-1)] (unused dims
 * 0): how flat scratch buffers, allocated for the largest batch, serve each batch. No copy; not to
 * be freed; aborts when the view is larger than t. */
sl_tensor_t sl_tensor_view(const sl_tensor_t *t, int ndim, int64_t d0, int64_t d1, int64_t d2,
                           int64_t d3);

/* Rows of a quantized matrix packed together (sl_tensor_pack): a row view of a packed matrix
 * must start and end on a multiple of it. */
#define SL_PACK_ROWS 16
/* Rearranges a quantized weight matrix w [N, K] into the layout its backend multiplies fastest
 * (CPU: SL_PACK_ROWS rows packed together for the integer GEMM, when N is a multiple of it;
 * other backends and shapes: nothing). sl_linear and sl_embedding take either layout, and
 * sl_copy_d2h hands back GGUF's. Call it once the matrix is uploaded; calling it again does
 * nothing. */
void sl_tensor_pack(sl_tensor_t *w);
/* Whether sl_tensor_pack would pack an [n, k] matrix of dtype dt on this backend. */
int sl_backend_packs(sl_backend_t *be, sl_dtype_t dt, int64_t n, int64_t k);

/* Host <-> backend copies of `bytes` bytes from the start of the tensor (synchronous). */
void sl_copy_h2d(sl_tensor_t *dst, const void *src, size_t bytes);
void sl_copy_d2h(void *dst, const sl_tensor_t *src, size_t bytes);
void sl_tensor_zero(sl_tensor_t *t);

/* ---- ops --------------------------------------------------------------------------------- */

/*
 * C = alpha * op(A) @ op(B) + beta * C + bias      (bias broadcast over rows; may be NULL)
 *   op(A): [M, K] (A is [M,K], or [K,M] when trans_a)
 *   op(B): [K, N] (B is [K,N], or [N,K] when trans_b: the PyTorch nn.Linear weight layout)
 *   C: [M, N]
 * A and B share a dtype (f32, f16 or bf16); C and bias are f32 or A's dtype. Accumulation is in
 * f32 on every backend.
 */
void sl_matmul(const sl_tensor_t *a, int trans_a, const sl_tensor_t *b, int trans_b, float alpha,
               float beta, const sl_tensor_t *bias, sl_tensor_t *c);
/* y = x @ w^T + bias: the nn.Linear form of sl_matmul. x [M,K], w [N,K], bias [N] or NULL.
 * A quantized w (Q8_0, Q4_0, Q4_1) takes f32 x, y and bias and is used as stored. On the CPU,
 * the bulk rows of x (sl_backend_set_bulk_rows: by default all of them) stay f32 and meet
 * tiles of w dequantised to f32 in the BLAS GEMM; the other rows (generation) are quantized to
 * int8 per 32-value block (one f32 scale per block) and multiplied with the weight blocks in
 * the integer GEMM (on w packed by sl_tensor_pack; per-row dot products on an unpacked w); a w
 * with activation scales (w8a8) takes every row in int8. On CUDA, the weights are dequantised
 * inside the kernel. */
void sl_linear(const sl_tensor_t *x, const sl_tensor_t *w, const sl_tensor_t *bias, sl_tensor_t *y);
/* Which rows of the next quantized sl_linear calls on `be` are bulk rows: rows [0, rows) of each
 * x (SL_BULK_ALL: all, the default). Bulk rows (scored tokens, encoder and mlp batches) keep
 * their f32 activations, the closest to f32 results; the rest (generation: prompts and decode
 * steps) take int8 activations in the integer GEMM, the fastest path, as llama.cpp computes. A
 * row's path depends on what the row is, never on its neighbours, so its result does not depend
 * on the batch. The caller sets it around its calls (bulk rows first) and restores SL_BULK_ALL
 * after. */
#define SL_BULK_ALL INT64_MAX
void sl_backend_set_bulk_rows(sl_backend_t *be, int64_t rows);
/* sl_linear for f32 activations x and weights w in any dtype: when w is not f32, x is first cast
 * into a view of `scratch` (w's dtype, at least as many elements as x), since both GEMM operands
 * must share a dtype. A quantized w takes x as it is (sl_linear). */
void sl_linear_cast(const sl_tensor_t *x, const sl_tensor_t *w, const sl_tensor_t *bias,
                    sl_tensor_t *y, sl_tensor_t *scratch);
/* Calibration (`shardline calibrate`): while set, sl_linear calls fn(ctx, x, w) with its input x
 * (f32 only; host memory on the CPU backend) and weight w before each product, on the calling
 * thread. NULL clears it. One observer per process. */
typedef void (*sl_linear_observer_fn)(void *ctx, const sl_tensor_t *x, const sl_tensor_t *w);
void sl_linear_set_observer(sl_linear_observer_fn fn, void *ctx);
/* x[m, n] += bias[n] (bias dtype = x dtype or f32). */
void sl_add_bias(sl_tensor_t *x, const sl_tensor_t *bias);
/* In-place elementwise activation. */
void sl_activation(sl_tensor_t *x, sl_act_t act);
/* In-place softmax over the last dimension (numerically stable, f32 accumulation). */
void sl_softmax(sl_tensor_t *x);
/* dst = (dst dtype) src; same number of elements. */
void sl_cast(const sl_tensor_t *src, sl_tensor_t *dst);
/* x = (x - mean[col]) / std[col]  (mean, std: f32 [cols]) — input standardisation. */
void sl_standardize(sl_tensor_t *x, const sl_tensor_t *mean, const sl_tensor_t *std);

/* ---- transformer ops (all f32 activations) -------------------------------------------------- */

/* x += y, elementwise, same shape (residual connections). */
void sl_add(sl_tensor_t *x, const sl_tensor_t *y);
/* out[r, :] = (x[r, :] - mean) / sqrt(var + eps) * gamma + beta over the last dim n.
 * x, out: f32 [rows, n] (out may be x); gamma, beta: f32 [n]. Biased variance, as PyTorch. */
void sl_layernorm(const sl_tensor_t *x, const sl_tensor_t *gamma, const sl_tensor_t *beta,
                  float eps, sl_tensor_t *out);
/* out[i, :] = table[ids[i], :]; table: [V, D] f32/f16/bf16 or quantized (rows dequantised as
 * they are gathered); ids: i32 [n] (every id must be in
 * [0, V): the caller validates user input); out: f32 [n, D]. */
void sl_embedding(const sl_tensor_t *table, const sl_tensor_t *ids, sl_tensor_t *out);
/* Pooling of a row's token vectors: their mean, or the first token's ([CLS]). */
typedef enum { SL_POOL_MEAN = 0, SL_POOL_CLS = 1 } sl_pool_t;
/* x[r, :] /= max(||x[r, :]||_2, 1e-12), as torch.nn.functional.normalize. x: f32 [rows, D]. */
void sl_l2_normalize(sl_tensor_t *x);

/* ---- packed-token ops (decoders, and encoders without padding) ------------------------------
 * A batch of rows is packed: its T tokens are consecutive rows of [T, ...] tensors, and small i32
 * tensors say which row (KV-cache slot) and position each token has. Nothing is padded, so
 * GEMMs see exactly the real tokens. All activations f32; index tensors i32 on the backend; index
 * values are validated by the caller (model code), not here. */

/* out[r, :] = x[r, :] / sqrt(mean_j x[r, j]^2 + eps) * weight, as HF LlamaRMSNorm (f32 math).
 * x, out: f32 [rows, n] (out may be x); weight: f32 [n]. */
void sl_rmsnorm(const sl_tensor_t *x, const sl_tensor_t *weight, float eps, sl_tensor_t *out);

/* Rotary position embedding in place, with the Hugging Face "rotate_half" pairing (dimension i
 * with i + Dh/2). For token t, head h, i < Dh/2, ang = (float)positions[t] * inv_freq[i]:
 *   x[t,h,i]        = a cos(ang) - b sin(ang)      (a = x[t,h,i], b = x[t,h,i+Dh/2])
 *   x[t,h,i+Dh/2]   = b cos(ang) + a sin(ang)
 * x: f32 [T, H, Dh], Dh even; positions: i32 [T]; inv_freq: f32 [Dh/2] (theta and any frequency
 * scaling already folded in by the caller). */
void sl_rope(sl_tensor_t *x, const sl_tensor_t *positions, const sl_tensor_t *inv_freq);

/* SwiGLU on a fused gate/up projection: out[r, j] = silu(gu[r, j]) * gu[r, F + j].
 * gate_up: f32 [rows, 2F] (gate columns first, then up); out: f32 [rows, F]. */
void sl_swiglu(const sl_tensor_t *gate_up, sl_tensor_t *out);

/* KV-cache write: cache[slot[t], pos[t], :, :] = src[t, :, :].
 * cache: f32 [S, C, Hkv, Dh]; src: f32 [T, Hkv, Dh]; slot, pos: i32 [T] (slot < S, pos < C). */
void sl_kv_write(sl_tensor_t *cache, const sl_tensor_t *src, const sl_tensor_t *slot,
                 const sl_tensor_t *pos);

/*
 * Attention of packed query tokens against a KV cache.
 *   q:      f32 [T, H, Dh]
 *   kc, vc: f32 [S, C, Hkv, Dh]   Hkv divides H (head h reads kv head h / (H / Hkv))
 *   slot, pos: i32 [T]           token t belongs to cache slot slot[t], at position pos[t]
 *   kv_len: i32 [S]              slot s holds kv_len[s] valid keys (positions 0 .. kv_len[s]-1)
 *   causal: token t also ignores keys j > pos[t]
 *   out:    f32 [T, H, Dh] = softmax(scale * q k^T over the allowed keys) v
 * A token with no allowed key gets zeros. Decoders: causal, after sl_kv_write of the same tokens
 * (prefill and decode steps alike); encoders: not causal, kv_len = row lengths.
 */
void sl_attention_kv(const sl_tensor_t *q, const sl_tensor_t *kc, const sl_tensor_t *vc,
                     const sl_tensor_t *slot, const sl_tensor_t *pos, const sl_tensor_t *kv_len,
                     float scale, int causal, sl_tensor_t *out);

/* out[i, :] = src[idx[i], :]. src: f32 [N, D]; idx: i32 [M] (in [0, N)); out: f32 [M, D]. */
void sl_gather_rows(const sl_tensor_t *src, const sl_tensor_t *idx, sl_tensor_t *out);

/* Pooling over packed rows: x: f32 [T, D]; offsets: i32 [B + 1] (row b is tokens
 * offsets[b] .. offsets[b+1]-1); out: f32 [B, D]. MEAN averages the row's tokens (an empty row
 * gives zeros); CLS takes its first token (an empty row gives zeros). */
void sl_pool_packed(const sl_tensor_t *x, const sl_tensor_t *offsets, sl_pool_t mode,
                    sl_tensor_t *out);

/* Log-sum-exp pieces of each row of a (vocabulary shard of) logits, so that TP ranks can form
 * log-softmax without gathering the logits: rowmax[t] = max_j logits[t, j],
 * sumexp[t] = sum_j exp(logits[t, j] - rowmax[t]). logits: f32 [T, V]; rowmax, sumexp: f32 [T].
 * A row of -Inf only gives rowmax -Inf and sumexp 0 (it then adds nothing when combined). */
void sl_logsumexp_parts(const sl_tensor_t *logits, sl_tensor_t *rowmax, sl_tensor_t *sumexp);

/* out[t] = logits[t, target[t] - v0] when v0 <= target[t] < v0 + V, else 0 (the rank holding
 * vocabulary ids [v0, v0 + V) contributes, the others add zero). logits: f32 [T, V];
 * target: i32 [T]; out: f32 [T]. */
void sl_pick_logits(const sl_tensor_t *logits, const sl_tensor_t *target, int64_t v0,
                    sl_tensor_t *out);

/* The k largest logits of each row, in descending order (ties: the lower index first; -0 and +0
 * are equal values, a NaN counts as larger than +Inf, as in torch.topk).
 * logits: f32 [T, V]; vals: f32 [T, k]; idx: i32 [T, k] (column indices); 1 <= k <= min(V, 256). */
void sl_topk_rows(const sl_tensor_t *logits, int k, sl_tensor_t *vals, sl_tensor_t *idx);

/* Bytes new tensors may still take on this backend: MemAvailable (/proc/meminfo) on the CPU, or
 * less when the cgroup limit (/sys/fs/cgroup/memory.max) minus its usage (memory.current) is
 * lower; cudaMemGetInfo's free bytes on CUDA. Used to size KV caches. */
size_t sl_backend_free_bytes(sl_backend_t *be);

#ifdef __cplusplus
}
#endif

#endif
