/*
 * backend_impl.h — what a backend implementation provides: a static const table of function
 * pointers. The wrappers in backend.c have already checked shapes and dtypes, so entries may
 * assume valid arguments. No entry is optional, except repack.
 */
#ifndef SL_BACKEND_IMPL_H
#define SL_BACKEND_IMPL_H

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *name;
    void (*destroy)(sl_backend_t *be);
    const char *(*describe)(sl_backend_t *be);
    void *(*stream)(sl_backend_t *be);
    void (*sync)(sl_backend_t *be);

    void *(*alloc)(sl_backend_t *be, size_t bytes); /* NULL when out of memory */
    void (*free)(sl_backend_t *be, void *ptr);
    void (*h2d)(sl_backend_t *be, void *dst, const void *src, size_t bytes);
    void (*d2h)(sl_backend_t *be, void *dst, const void *src, size_t bytes);
    void (*memzero)(sl_backend_t *be, void *ptr, size_t bytes);
    /* Packs (pack = 1) or unpacks in place the n x k matrix of dtype dt at data (backend
     * memory, or host memory where the two are one: the CPU). Packing returns 1, or 0 and
     * leaves a matrix it cannot pack (its dtype or shape) as it is; unpacking takes a matrix
     * this entry packed. data NULL: only says whether it would pack. NULL: the backend keeps
     * GGUF's layout (sl_tensor_pack does nothing) and holds no packed-only type
     * (sl_dtype_packed_only). */
    int (*repack)(sl_backend_t *be, void *data, sl_dtype_t dt, int64_t n, int64_t k, int pack);

    /* C[M,N] = alpha op(A) op(B) + beta C (+ bias[N]); lda/ldb/ldc follow row-major storage. */
    void (*matmul)(sl_backend_t *be, const sl_tensor_t *a, int trans_a, const sl_tensor_t *b,
                   int trans_b, float alpha, float beta, const sl_tensor_t *bias, sl_tensor_t *c,
                   int64_t m, int64_t n, int64_t k);
    /* y[M,N] = x[M,K] @ w[N,K]^T (+ bias[N]) for a quantized w (SL_Q8_0/Q4_0/Q4_1, or one
     * of the packed-only types, packed); x, y, bias f32; K a multiple of 32. int8_act: quantize x's
     * rows to int8 per 32-block (decode rows, and always under static scales), else keep them f32
     * against dequantised weights (bulk rows; see sl_backend_set_bulk_rows). */
    void (*linear_q)(sl_backend_t *be, const sl_tensor_t *x, const sl_tensor_t *w,
                     const sl_tensor_t *bias, sl_tensor_t *y, int64_t m, int64_t n, int64_t k,
                     int int8_act);
    void (*add_bias)(sl_backend_t *be, sl_tensor_t *x, const sl_tensor_t *bias, int64_t rows,
                     int64_t cols);
    void (*activation)(sl_backend_t *be, sl_tensor_t *x, sl_act_t act);
    void (*softmax)(sl_backend_t *be, sl_tensor_t *x, int64_t rows, int64_t cols);
    void (*cast)(sl_backend_t *be, const sl_tensor_t *src, sl_tensor_t *dst);
    void (*standardize)(sl_backend_t *be, sl_tensor_t *x, const sl_tensor_t *mean,
                        const sl_tensor_t *std, int64_t rows, int64_t cols);

    /* transformer ops; shapes as documented in backend.h, already checked */
    void (*add)(sl_backend_t *be, sl_tensor_t *x, const sl_tensor_t *y, int64_t n);
    void (*layernorm)(sl_backend_t *be, const sl_tensor_t *x, const sl_tensor_t *gamma,
                      const sl_tensor_t *beta, float eps, sl_tensor_t *out, int64_t rows,
                      int64_t n);
    void (*embedding)(sl_backend_t *be, const sl_tensor_t *table, const sl_tensor_t *ids,
                      sl_tensor_t *out, int64_t n, int64_t dim);
    void (*l2_normalize)(sl_backend_t *be, sl_tensor_t *x, int64_t rows, int64_t dim);

    /* packed-token ops; shapes as documented in backend.h, already checked; every count > 0
     * except where noted */
    void (*rmsnorm)(sl_backend_t *be, const sl_tensor_t *x, const sl_tensor_t *weight, float eps,
                    sl_tensor_t *out, int64_t rows, int64_t n);
    void (*rope)(sl_backend_t *be, sl_tensor_t *x, const sl_tensor_t *positions,
                 const sl_tensor_t *inv_freq, int64_t tokens, int64_t heads, int64_t head_dim);
    void (*swiglu)(sl_backend_t *be, const sl_tensor_t *gate_up, sl_tensor_t *out, int64_t rows,
                   int64_t f);
    /* row = Hkv * Dh floats per (slot, position) */
    void (*kv_write)(sl_backend_t *be, sl_tensor_t *cache, const sl_tensor_t *src,
                     const sl_tensor_t *slot, const sl_tensor_t *pos, int64_t tokens,
                     int64_t cache_len, int64_t row);
    void (*attention_kv)(sl_backend_t *be, const sl_tensor_t *q, const sl_tensor_t *kc,
                         const sl_tensor_t *vc, const sl_tensor_t *slot, const sl_tensor_t *pos,
                         const sl_tensor_t *kv_len, float scale, int causal, sl_tensor_t *out,
                         int64_t tokens, int64_t slots, int64_t cache_len, int64_t heads,
                         int64_t kv_heads, int64_t head_dim);
    void (*gather_rows)(sl_backend_t *be, const sl_tensor_t *src, const sl_tensor_t *idx,
                        sl_tensor_t *out, int64_t m, int64_t dim);
    /* dim > 0; batch > 0; tokens may be 0 */
    void (*pool_packed)(sl_backend_t *be, const sl_tensor_t *x, const sl_tensor_t *offsets,
                        sl_pool_t mode, sl_tensor_t *out, int64_t batch, int64_t dim);
    /* rows > 0; v may be 0 (rowmax -inf, sumexp 0) */
    void (*logsumexp_parts)(sl_backend_t *be, const sl_tensor_t *logits, sl_tensor_t *rowmax,
                            sl_tensor_t *sumexp, int64_t rows, int64_t v);
    /* rows > 0; v may be 0 (every out 0) */
    void (*pick_logits)(sl_backend_t *be, const sl_tensor_t *logits, const sl_tensor_t *target,
                        int64_t v0, sl_tensor_t *out, int64_t rows, int64_t v);
    void (*topk_rows)(sl_backend_t *be, const sl_tensor_t *logits, int k, sl_tensor_t *vals,
                      sl_tensor_t *idx, int64_t rows, int64_t v);
    size_t (*free_bytes)(sl_backend_t *be);
} sl_backend_ops_t;

/* Every backend struct starts with this header, so backend.c can reach the table. */
struct sl_backend {
    const sl_backend_ops_t *ops;
    sl_backend_kind_t kind;
    /* GEMM accounting, kept by backend.c on synchronous (CPU) backends */
    double gemm_seconds, gemm_flops;
    /* static W8A8 accounting (CPU backend): the rows' 32-value blocks quantized against a
     * calibrated range, and those of them whose own max reached beyond it (their own step) */
    double w8a8_blocks, w8a8_own;
    /* sl_backend_set_bulk_rows; SL_BULK_ALL when unset */
    int64_t bulk_rows;
};

/* Constructors of the two implementations. */
sl_backend_t *sl_cpu_backend_create(int threads, sl_error_t *err);
#ifdef SL_HAVE_CUDA
sl_backend_t *sl_cuda_backend_create(int device, sl_error_t *err);
int sl_cuda_backend_device_count(void);
#endif

#ifdef __cplusplus
}
#endif

#endif
