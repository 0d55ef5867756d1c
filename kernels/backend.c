/*
 * backend.c — the public sl_<op>() wrappers: argument checks (dtype, shape) done once here,
 * then a call through the backend's function table (backend_impl.h). A shape or dtype mismatch
 * here is a programming error, not user input, so it is fatal with the op and shapes named.
 */
#include "kernels/backend_impl.h"
#include "kernels/quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/sl_profile.h"
#include "common/sl_fault.h"
#include "common/sl_size.h"

size_t sl_dtype_size(sl_dtype_t dt)
{
    switch (dt) {
    case SL_F32: return 4;
    case SL_F16: return 2;
    case SL_BF16: return 2;
    case SL_I32: return 4;
    case SL_I8: return 1;
    }
    return dt == SL_Q8_0   ? SL_Q8_0_BYTES
           : dt == SL_Q4_0 ? SL_Q4_0_BYTES
           : dt == SL_Q4_1 ? SL_Q4_1_BYTES
           : dt == SL_Q4_K ? SL_Q4_K_BYTES
           : dt == SL_Q6_K ? SL_Q6_K_BYTES
           : dt == SL_Q5_0 ? SL_Q5_0_BYTES
           : dt == SL_Q5_1 ? SL_Q5_1_BYTES
           : dt == SL_Q5_K ? SL_Q5_K_BYTES
                           : 0;
}

int sl_dtype_kquant(sl_dtype_t dt) { return dt == SL_Q4_K || dt == SL_Q5_K || dt == SL_Q6_K; }
int sl_dtype_packed_only(sl_dtype_t dt)
{
    return sl_dtype_kquant(dt) || dt == SL_Q5_0 || dt == SL_Q5_1;
}
int sl_dtype_quantized(sl_dtype_t dt)
{
    return dt == SL_Q8_0 || dt == SL_Q4_0 || dt == SL_Q4_1 || sl_dtype_packed_only(dt);
}
int64_t sl_dtype_block(sl_dtype_t dt)
{
    return sl_dtype_kquant(dt) ? SL_QK : sl_dtype_quantized(dt) ? SL_QBLOCK : 1;
}

size_t sl_dtype_bytes(sl_dtype_t dt, int64_t n)
{
    int64_t bytes;
    if (sl_size_mul(n / sl_dtype_block(dt), (int64_t)sl_dtype_size(dt), &bytes) != 0)
        SL_FATAL("a %s tensor of %lld elements has more than 2^63 bytes", sl_dtype_name(dt),
                 (long long)n);
    return (size_t)bytes;
}

const char *sl_dtype_name(sl_dtype_t dt)
{
    switch (dt) {
    case SL_F32: return "f32";
    case SL_F16: return "f16";
    case SL_BF16: return "bf16";
    case SL_I32: return "i32";
    case SL_I8: return "i8";
    }
    return dt == SL_Q8_0   ? "q8_0"
           : dt == SL_Q4_0 ? "q4_0"
           : dt == SL_Q4_1 ? "q4_1"
           : dt == SL_Q4_K ? "q4_k"
           : dt == SL_Q6_K ? "q6_k"
           : dt == SL_Q5_0 ? "q5_0"
           : dt == SL_Q5_1 ? "q5_1"
           : dt == SL_Q5_K ? "q5_k"
                           : "?";
}

int sl_dtype_parse(const char *s)
{
    if (!strcasecmp(s, "f32") || !strcasecmp(s, "float32") || !strcasecmp(s, "fp32"))
        return SL_F32;
    if (!strcasecmp(s, "f16") || !strcasecmp(s, "float16") || !strcasecmp(s, "fp16"))
        return SL_F16;
    if (!strcasecmp(s, "bf16") || !strcasecmp(s, "bfloat16"))
        return SL_BF16;
    return -1;
}

static const char *const act_names[] = {"none", "relu", "gelu", "silu", "tanh", "sigmoid"};

const char *sl_act_name(sl_act_t act)
{
    return (act >= 0 && act <= SL_ACT_SIGMOID) ? act_names[act] : "?";
}

int sl_act_parse(const char *s)
{
    for (int i = 1; i <= SL_ACT_SIGMOID; i++)
        if (!strcmp(s, act_names[i]))
            return i;
    return -1;
}

/* ---- backends ---------------------------------------------------------------------------- */

int sl_cuda_compiled(void)
{
#ifdef SL_HAVE_CUDA
    return 1;
#else
    return 0;
#endif
}

int sl_cuda_device_count(void)
{
#ifdef SL_HAVE_CUDA
    return sl_cuda_backend_device_count();
#else
    return 0;
#endif
}

sl_backend_t *sl_backend_create(sl_backend_kind_t kind, int device, int threads, sl_error_t *err)
{
    if (kind == SL_BACKEND_CPU)
        return sl_cpu_backend_create(threads, err);
#ifdef SL_HAVE_CUDA
    return sl_cuda_backend_create(device, err);
#else
    sl_errorf(err,
              "--device cuda: this shardline was built without CUDA (rebuild with nvcc on PATH)");
    return NULL;
#endif
}

void sl_backend_free(sl_backend_t *be)
{
    if (be)
        be->ops->destroy(be);
}

sl_backend_kind_t sl_backend_kind(const sl_backend_t *be) { return be->kind; }

void sl_backend_set_bulk_rows(sl_backend_t *be, int64_t rows)
{
    be->bulk_rows = rows < 0 ? 0 : rows;
}
const char *sl_backend_describe(const sl_backend_t *be)
{
    return be->ops->describe((sl_backend_t *)be);
}
void *sl_backend_stream(sl_backend_t *be) { return be->ops->stream(be); }
void sl_backend_sync(sl_backend_t *be) { be->ops->sync(be); }

void sl_backend_gemm_stats(const sl_backend_t *be, double *seconds, double *flops)
{
    *seconds = be->gemm_seconds;
    *flops = be->gemm_flops;
}

void sl_backend_w8a8_stats(const sl_backend_t *be, double *blocks, double *own)
{
    *blocks = be->w8a8_blocks;
    *own = be->w8a8_own;
}

/* ---- memory ------------------------------------------------------------------------------ */

/* Shapes come from user input (--batch-size, dataset and tensor shapes): a product that wraps
 * around would allocate a small buffer that a reader then writes past, so it is a fatal error
 * here, and every caller that takes a size from the user refuses it earlier with a message
 * naming the option. */
int64_t sl_tensor_numel(const sl_tensor_t *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        if (sl_size_mul(n, t->shape[i], &n) != 0)
            SL_FATAL("a tensor shape of %d dimensions (the first %lld) overflows 64 bits", t->ndim,
                     (long long)t->shape[0]);
    return n;
}

size_t sl_tensor_bytes(const sl_tensor_t *t)
{
    return sl_dtype_bytes(t->dtype, sl_tensor_numel(t));
}

sl_tensor_t *sl_tensor_new(sl_backend_t *be, sl_dtype_t dt, int ndim, const int64_t *shape)
{
    if (ndim < 1 || ndim > SL_MAX_DIMS)
        SL_FATAL("sl_tensor_new: %d dimensions (1..%d allowed)", ndim, SL_MAX_DIMS);
    sl_tensor_t *t = sl_xcalloc(1, sizeof *t);
    t->be = be;
    t->dtype = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            SL_FATAL("sl_tensor_new: negative dimension %lld", (long long)shape[i]);
        t->shape[i] = shape[i];
    }
    if (shape[ndim - 1] % sl_dtype_block(dt) != 0)
        SL_FATAL("sl_tensor_new: a %s tensor's last dimension (%lld) must be a multiple of %lld",
                 sl_dtype_name(dt), (long long)shape[ndim - 1], (long long)sl_dtype_block(dt));
    size_t bytes = sl_tensor_bytes(t);
    t->data = bytes >= SL_FAULT_ALLOC_MIN && sl_fault_hit(SL_FAULT_ALLOC)
                  ? NULL
                  : be->ops->alloc(be, bytes);
    if (!t->data)
        SL_FATAL("out of %s memory allocating a %s tensor of %zu bytes%s", be->ops->name,
                 sl_dtype_name(dt), bytes, sl_fault_note(SL_FAULT_ALLOC));
    t->owns_data = 1;
    return t;
}

sl_tensor_t *sl_tensor_new2(sl_backend_t *be, sl_dtype_t dt, int64_t d0, int64_t d1)
{
    int64_t shape[2] = {d0, d1};
    return sl_tensor_new(be, dt, 2, shape);
}

sl_tensor_t *sl_tensor_new1(sl_backend_t *be, sl_dtype_t dt, int64_t d0)
{
    return sl_tensor_new(be, dt, 1, &d0);
}

void sl_tensor_free(sl_tensor_t *t)
{
    if (!t)
        return;
    if (t->owns_data && t->data)
        t->be->ops->free(t->be, t->data);
    sl_tensor_free(t->act_scales);
    free(t);
}

sl_tensor_t sl_tensor_rows(const sl_tensor_t *t, int64_t rows)
{
    if (rows < 0 || rows > t->shape[0])
        SL_FATAL("sl_tensor_rows: %lld rows of a tensor with %lld", (long long)rows,
                 (long long)t->shape[0]);
    if (t->packed && rows % SL_PACK_ROWS != 0)
        SL_FATAL("sl_tensor_rows: %lld rows of a packed matrix (a multiple of 16 expected)",
                 (long long)rows);
    sl_tensor_t v = *t;
    v.shape[0] = rows;
    v.owns_data = 0;
    return v;
}

sl_tensor_t sl_tensor_view(const sl_tensor_t *t, int ndim, int64_t d0, int64_t d1, int64_t d2,
                           int64_t d3)
{
    sl_tensor_t v = *t;
    int64_t dims[SL_MAX_DIMS] = {d0, d1, d2, d3}, n = 1;
    if (ndim < 1 || ndim > SL_MAX_DIMS)
        SL_FATAL("sl_tensor_view: %d dimensions", ndim);
    v.ndim = ndim;
    int overflow = 0;
    for (int i = 0; i < ndim; i++) {
        v.shape[i] = dims[i];
        overflow |= sl_size_mul(n, dims[i], &n);
    }
    if (overflow || n > sl_tensor_numel(t))
        SL_FATAL("sl_tensor_view: a view of %lld elements in a tensor of %lld", (long long)n,
                 (long long)sl_tensor_numel(t));
    v.owns_data = 0;
    return v;
}

static void check_bytes(const char *op, const sl_tensor_t *t, size_t bytes)
{
    if (bytes > sl_tensor_bytes(t))
        SL_FATAL("%s: %zu bytes into a tensor of %zu bytes", op, bytes, sl_tensor_bytes(t));
}

void sl_copy_h2d(sl_tensor_t *dst, const void *src, size_t bytes)
{
    check_bytes("sl_copy_h2d", dst, bytes);
    SL_RANGE_PUSH("H2D");
    dst->be->ops->h2d(dst->be, dst->data, src, bytes);
    SL_RANGE_POP();
}

void sl_copy_d2h(void *dst, const sl_tensor_t *src, size_t bytes)
{
    check_bytes("sl_copy_d2h", src, bytes);
    if (src->packed && bytes != sl_tensor_bytes(src))
        SL_FATAL("sl_copy_d2h: %zu bytes of a packed %s matrix (only the whole of it)", bytes,
                 sl_dtype_name(src->dtype));
    SL_RANGE_PUSH("D2H");
    src->be->ops->d2h(src->be, dst, src->data, bytes);
    SL_RANGE_POP();
    if (src->packed) /* back to GGUF's layout */
        src->be->ops->repack(src->be, dst, src->dtype, src->shape[0], src->shape[1], 0);
}

void sl_tensor_pack(sl_tensor_t *w)
{
    if (w->packed || !w->be->ops->repack || w->ndim != 2)
        return;
    w->packed = w->be->ops->repack(w->be, w->data, w->dtype, w->shape[0], w->shape[1], 1);
}

int sl_backend_packs(sl_backend_t *be, sl_dtype_t dt, int64_t n, int64_t k)
{
    return be->ops->repack && be->ops->repack(be, NULL, dt, n, k, 1);
}

void sl_tensor_zero(sl_tensor_t *t) { t->be->ops->memzero(t->be, t->data, sl_tensor_bytes(t)); }

/* ---- ops --------------------------------------------------------------------------------- */

static int is_float(sl_dtype_t dt) { return dt == SL_F32 || dt == SL_F16 || dt == SL_BF16; }

static void need_2d(const char *op, const char *name, const sl_tensor_t *t)
{
    if (t->ndim != 2)
        SL_FATAL("%s: %s must be 2-D, is %d-D", op, name, t->ndim);
    if (!is_float(t->dtype))
        SL_FATAL("%s: %s has dtype %s (f32, f16 or bf16 expected)", op, name,
                 sl_dtype_name(t->dtype));
}

static void need_bias(const char *op, const sl_tensor_t *bias, int64_t n, sl_dtype_t other)
{
    if (bias->ndim != 1 || bias->shape[0] != n)
        SL_FATAL("%s: bias must be [%lld]", op, (long long)n);
    if (bias->dtype != SL_F32 && bias->dtype != other)
        SL_FATAL("%s: bias dtype %s (f32 or %s expected)", op, sl_dtype_name(bias->dtype),
                 sl_dtype_name(other));
}

/* Monotonic seconds, for the GEMM time kept on synchronous (CPU) backends. */
static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

void sl_matmul(const sl_tensor_t *a, int trans_a, const sl_tensor_t *b, int trans_b, float alpha,
               float beta, const sl_tensor_t *bias, sl_tensor_t *c)
{
    need_2d("sl_matmul", "A", a);
    need_2d("sl_matmul", "B", b);
    need_2d("sl_matmul", "C", c);
    if (a->dtype != b->dtype)
        SL_FATAL("sl_matmul: A is %s but B is %s", sl_dtype_name(a->dtype),
                 sl_dtype_name(b->dtype));
    if (c->dtype != SL_F32 && c->dtype != a->dtype)
        SL_FATAL("sl_matmul: C is %s (f32 or %s expected)", sl_dtype_name(c->dtype),
                 sl_dtype_name(a->dtype));
    int64_t m = trans_a ? a->shape[1] : a->shape[0];
    int64_t k = trans_a ? a->shape[0] : a->shape[1];
    int64_t kb = trans_b ? b->shape[1] : b->shape[0];
    int64_t n = trans_b ? b->shape[0] : b->shape[1];
    if (k != kb || c->shape[0] != m || c->shape[1] != n)
        SL_FATAL("sl_matmul: op(A) [%lld,%lld] @ op(B) [%lld,%lld] -> C [%lld,%lld]", (long long)m,
                 (long long)k, (long long)kb, (long long)n, (long long)c->shape[0],
                 (long long)c->shape[1]);
    if (bias)
        need_bias("sl_matmul", bias, n, c->dtype);
    if (a->be != c->be || b->be != c->be)
        SL_FATAL("sl_matmul: tensors live on different backends");
    if (m == 0 || n == 0)
        return;
    sl_backend_t *be = c->be;
    double t0 = be->kind == SL_BACKEND_CPU ? now_s() : 0.0;
    be->ops->matmul(be, a, trans_a, b, trans_b, alpha, beta, bias, c, m, n, k);
    if (be->kind == SL_BACKEND_CPU) {
        be->gemm_seconds += now_s() - t0;
        be->gemm_flops += 2.0 * (double)m * (double)n * (double)k;
    }
}

/* Rows [r0, r0 + n) of a contiguous 2-D f32 tensor, as a view (not to be freed). */
static sl_tensor_t rows_at(const sl_tensor_t *t, int64_t r0, int64_t n)
{
    sl_tensor_t v = *t;
    v.shape[0] = n;
    v.data = (char *)t->data + (size_t)(r0 * t->shape[1]) * sl_dtype_size(t->dtype);
    v.owns_data = 0;
    return v;
}

static void linear_q(const sl_tensor_t *x, const sl_tensor_t *w, const sl_tensor_t *bias,
                     sl_tensor_t *y)
{
    need_2d("sl_linear", "x", x);
    need_2d("sl_linear", "y", y);
    if (w->ndim != 2)
        SL_FATAL("sl_linear: w must be 2-D, is %d-D", w->ndim);
    if (x->dtype != SL_F32 || y->dtype != SL_F32 || (bias && bias->dtype != SL_F32))
        SL_FATAL("sl_linear: a %s weight takes f32 x, y and bias", sl_dtype_name(w->dtype));
    int64_t m = x->shape[0], k = x->shape[1], n = w->shape[0];
    if (w->shape[1] != k || y->shape[0] != m || y->shape[1] != n || k % SL_QBLOCK != 0)
        SL_FATAL("sl_linear: x [%lld,%lld] @ w^T [%lld,%lld] (%s) -> y [%lld,%lld]", (long long)m,
                 (long long)k, (long long)w->shape[0], (long long)w->shape[1],
                 sl_dtype_name(w->dtype), (long long)y->shape[0], (long long)y->shape[1]);
    if (bias)
        need_bias("sl_linear", bias, n, SL_F32);
    if (x->be != y->be || w->be != y->be)
        SL_FATAL("sl_linear: tensors live on different backends");
    if (m == 0 || n == 0)
        return;
    sl_backend_t *be = y->be;
    double t0 = be->kind == SL_BACKEND_CPU ? now_s() : 0.0;
    /* rows [0, bulk) f32 against dequantised weights, [bulk, m) int8 (backend.h) */
    const int64_t bulk = w->act_scales ? 0 : be->bulk_rows < m ? be->bulk_rows : m;
    if (bulk == m || bulk == 0) {
        be->ops->linear_q(be, x, w, bias, y, m, n, k, bulk == 0);
    } else {
        sl_tensor_t xb = rows_at(x, 0, bulk), xd = rows_at(x, bulk, m - bulk),
                    yb = rows_at(y, 0, bulk), yd = rows_at(y, bulk, m - bulk);
        be->ops->linear_q(be, &xb, w, bias, &yb, bulk, n, k, 0);
        be->ops->linear_q(be, &xd, w, bias, &yd, m - bulk, n, k, 1);
    }
    if (be->kind == SL_BACKEND_CPU) {
        be->gemm_seconds += now_s() - t0;
        be->gemm_flops += 2.0 * (double)m * (double)n * (double)k;
    }
}

static sl_linear_observer_fn linear_observer;
static void *linear_observer_ctx;

void sl_linear_set_observer(sl_linear_observer_fn fn, void *ctx)
{
    linear_observer = fn;
    linear_observer_ctx = ctx;
}

void sl_linear(const sl_tensor_t *x, const sl_tensor_t *w, const sl_tensor_t *bias, sl_tensor_t *y)
{
    if (linear_observer && x->dtype == SL_F32)
        linear_observer(linear_observer_ctx, x, w);
    if (sl_dtype_quantized(w->dtype))
        linear_q(x, w, bias, y);
    else
        sl_matmul(x, 0, w, 1, 1.0f, 0.0f, bias, y);
}

void sl_linear_cast(const sl_tensor_t *x, const sl_tensor_t *w, const sl_tensor_t *bias,
                    sl_tensor_t *y, sl_tensor_t *scratch)
{
    if (w->dtype == x->dtype || sl_dtype_quantized(w->dtype)) {
        sl_linear(x, w, bias, y);
        return;
    }
    sl_tensor_t xc = sl_tensor_view(scratch, 2, x->shape[0], x->shape[1], 0, 0);
    xc.dtype = scratch->dtype;
    sl_cast(x, &xc);
    sl_linear(&xc, w, bias, y);
}

void sl_add_bias(sl_tensor_t *x, const sl_tensor_t *bias)
{
    need_2d("sl_add_bias", "x", x);
    need_bias("sl_add_bias", bias, x->shape[1], x->dtype);
    if (x->shape[0] > 0)
        x->be->ops->add_bias(x->be, x, bias, x->shape[0], x->shape[1]);
}

void sl_activation(sl_tensor_t *x, sl_act_t act)
{
    if (!is_float(x->dtype))
        SL_FATAL("sl_activation: dtype %s", sl_dtype_name(x->dtype));
    if (act == SL_ACT_NONE || sl_tensor_numel(x) == 0)
        return;
    if (act < SL_ACT_NONE || act > SL_ACT_SIGMOID)
        SL_FATAL("sl_activation: unknown activation %d", (int)act);
    x->be->ops->activation(x->be, x, act);
}

void sl_softmax(sl_tensor_t *x)
{
    if (!is_float(x->dtype))
        SL_FATAL("sl_softmax: dtype %s", sl_dtype_name(x->dtype));
    int64_t cols = x->shape[x->ndim - 1];
    int64_t rows = cols ? sl_tensor_numel(x) / cols : 0;
    if (rows > 0)
        x->be->ops->softmax(x->be, x, rows, cols);
}

void sl_cast(const sl_tensor_t *src, sl_tensor_t *dst)
{
    if (!is_float(src->dtype) || !is_float(dst->dtype))
        SL_FATAL("sl_cast: %s -> %s not supported", sl_dtype_name(src->dtype),
                 sl_dtype_name(dst->dtype));
    if (sl_tensor_numel(src) != sl_tensor_numel(dst))
        SL_FATAL("sl_cast: %lld elements into %lld", (long long)sl_tensor_numel(src),
                 (long long)sl_tensor_numel(dst));
    if (sl_tensor_numel(src) > 0)
        dst->be->ops->cast(dst->be, src, dst);
}

void sl_standardize(sl_tensor_t *x, const sl_tensor_t *mean, const sl_tensor_t *std)
{
    need_2d("sl_standardize", "x", x);
    if (x->dtype != SL_F32)
        SL_FATAL("sl_standardize: x must be f32");
    need_bias("sl_standardize", mean, x->shape[1], SL_F32);
    need_bias("sl_standardize", std, x->shape[1], SL_F32);
    if (x->shape[0] > 0)
        x->be->ops->standardize(x->be, x, mean, std, x->shape[0], x->shape[1]);
}

/* ---- transformer ops ------------------------------------------------------------------------ */

static void need_f32(const char *op, const char *name, const sl_tensor_t *t, int ndim)
{
    if (t->dtype != SL_F32)
        SL_FATAL("%s: %s must be f32, is %s", op, name, sl_dtype_name(t->dtype));
    if (ndim && t->ndim != ndim)
        SL_FATAL("%s: %s must be %d-D, is %d-D", op, name, ndim, t->ndim);
}

void sl_add(sl_tensor_t *x, const sl_tensor_t *y)
{
    need_f32("sl_add", "x", x, 0);
    need_f32("sl_add", "y", y, 0);
    if (sl_tensor_numel(x) != sl_tensor_numel(y))
        SL_FATAL("sl_add: %lld and %lld elements", (long long)sl_tensor_numel(x),
                 (long long)sl_tensor_numel(y));
    if (sl_tensor_numel(x) > 0)
        x->be->ops->add(x->be, x, y, sl_tensor_numel(x));
}

void sl_layernorm(const sl_tensor_t *x, const sl_tensor_t *gamma, const sl_tensor_t *beta,
                  float eps, sl_tensor_t *out)
{
    need_f32("sl_layernorm", "x", x, 2);
    need_f32("sl_layernorm", "out", out, 2);
    need_f32("sl_layernorm", "gamma", gamma, 1);
    need_f32("sl_layernorm", "beta", beta, 1);
    int64_t rows = x->shape[0], n = x->shape[1];
    if (out->shape[0] != rows || out->shape[1] != n || gamma->shape[0] != n || beta->shape[0] != n)
        SL_FATAL("sl_layernorm: shapes disagree (x [%lld,%lld])", (long long)rows, (long long)n);
    if (rows > 0)
        x->be->ops->layernorm(x->be, x, gamma, beta, eps, out, rows, n);
}

void sl_embedding(const sl_tensor_t *table, const sl_tensor_t *ids, sl_tensor_t *out)
{
    if (table->ndim != 2 || !(is_float(table->dtype) || sl_dtype_quantized(table->dtype)))
        SL_FATAL("sl_embedding: table must be a 2-D float or quantized tensor");
    if (ids->dtype != SL_I32 || ids->ndim != 1)
        SL_FATAL("sl_embedding: ids must be i32 [n]");
    need_f32("sl_embedding", "out", out, 2);
    if (out->shape[0] != ids->shape[0] || out->shape[1] != table->shape[1])
        SL_FATAL("sl_embedding: out must be [%lld, %lld]", (long long)ids->shape[0],
                 (long long)table->shape[1]);
    if (ids->shape[0] > 0)
        out->be->ops->embedding(out->be, table, ids, out, ids->shape[0], table->shape[1]);
}

void sl_l2_normalize(sl_tensor_t *x)
{
    need_f32("sl_l2_normalize", "x", x, 2);
    if (x->shape[0] > 0)
        x->be->ops->l2_normalize(x->be, x, x->shape[0], x->shape[1]);
}

/* ---- packed-token ops ----------------------------------------------------------------------- */

/* "[2,3,4]" */
static const char *shape_str(const sl_tensor_t *t, char *buf, size_t len)
{
    int off = snprintf(buf, len, "[");
    for (int i = 0; i < t->ndim && off > 0 && (size_t)off < len; i++)
        off +=
            snprintf(buf + off, len - (size_t)off, "%s%lld", i ? "," : "", (long long)t->shape[i]);
    if (off > 0 && (size_t)off < len)
        snprintf(buf + off, len - (size_t)off, "]");
    return buf;
}

/* An i32 index tensor [n] (n < 0: any length). */
static void need_i32(const char *op, const char *name, const sl_tensor_t *t, int64_t n)
{
    char b[64];
    if (t->dtype != SL_I32 || t->ndim != 1 || (n >= 0 && t->shape[0] != n))
        SL_FATAL("%s: %s must be i32 [%lld], is %s %s", op, name, (long long)n,
                 sl_dtype_name(t->dtype), shape_str(t, b, sizeof b));
}

static void need_same_be(const char *op, const sl_tensor_t *a, const sl_tensor_t *b)
{
    if (a->be != b->be)
        SL_FATAL("%s: tensors live on different backends", op);
}

void sl_rmsnorm(const sl_tensor_t *x, const sl_tensor_t *weight, float eps, sl_tensor_t *out)
{
    need_f32("sl_rmsnorm", "x", x, 2);
    need_f32("sl_rmsnorm", "weight", weight, 1);
    need_f32("sl_rmsnorm", "out", out, 2);
    int64_t rows = x->shape[0], n = x->shape[1];
    if (out->shape[0] != rows || out->shape[1] != n || weight->shape[0] != n) {
        char b1[64], b2[64], b3[64];
        SL_FATAL("sl_rmsnorm: x %s, weight %s, out %s disagree", shape_str(x, b1, sizeof b1),
                 shape_str(weight, b2, sizeof b2), shape_str(out, b3, sizeof b3));
    }
    need_same_be("sl_rmsnorm", x, out);
    need_same_be("sl_rmsnorm", weight, out);
    if (rows > 0 && n > 0)
        out->be->ops->rmsnorm(out->be, x, weight, eps, out, rows, n);
}

void sl_rope(sl_tensor_t *x, const sl_tensor_t *positions, const sl_tensor_t *inv_freq)
{
    need_f32("sl_rope", "x", x, 3);
    need_f32("sl_rope", "inv_freq", inv_freq, 1);
    int64_t t = x->shape[0], h = x->shape[1], d = x->shape[2];
    need_i32("sl_rope", "positions", positions, t);
    if (d % 2 != 0 || inv_freq->shape[0] != d / 2) {
        char b1[64], b2[64];
        SL_FATAL("sl_rope: x %s needs an even head dim and inv_freq [%lld], inv_freq is %s",
                 shape_str(x, b1, sizeof b1), (long long)(d / 2),
                 shape_str(inv_freq, b2, sizeof b2));
    }
    need_same_be("sl_rope", x, positions);
    need_same_be("sl_rope", x, inv_freq);
    if (t > 0 && h > 0 && d > 0)
        x->be->ops->rope(x->be, x, positions, inv_freq, t, h, d);
}

void sl_swiglu(const sl_tensor_t *gate_up, sl_tensor_t *out)
{
    need_f32("sl_swiglu", "gate_up", gate_up, 2);
    need_f32("sl_swiglu", "out", out, 2);
    int64_t rows = out->shape[0], f = out->shape[1];
    if (gate_up->shape[0] != rows || gate_up->shape[1] != 2 * f) {
        char b1[64], b2[64];
        SL_FATAL("sl_swiglu: gate_up %s must be [rows, 2F] for out %s [rows, F]",
                 shape_str(gate_up, b1, sizeof b1), shape_str(out, b2, sizeof b2));
    }
    need_same_be("sl_swiglu", gate_up, out);
    if (rows > 0 && f > 0)
        out->be->ops->swiglu(out->be, gate_up, out, rows, f);
}

void sl_kv_write(sl_tensor_t *cache, const sl_tensor_t *src, const sl_tensor_t *slot,
                 const sl_tensor_t *pos)
{
    need_f32("sl_kv_write", "cache", cache, 4);
    need_f32("sl_kv_write", "src", src, 3);
    int64_t t = src->shape[0];
    need_i32("sl_kv_write", "slot", slot, t);
    need_i32("sl_kv_write", "pos", pos, t);
    if (src->shape[1] != cache->shape[2] || src->shape[2] != cache->shape[3]) {
        char b1[64], b2[64];
        SL_FATAL("sl_kv_write: src %s must be [T, Hkv, Dh] of cache %s [S, C, Hkv, Dh]",
                 shape_str(src, b1, sizeof b1), shape_str(cache, b2, sizeof b2));
    }
    need_same_be("sl_kv_write", cache, src);
    need_same_be("sl_kv_write", cache, slot);
    need_same_be("sl_kv_write", cache, pos);
    int64_t row = cache->shape[2] * cache->shape[3];
    if (t > 0 && row > 0)
        cache->be->ops->kv_write(cache->be, cache, src, slot, pos, t, cache->shape[1], row);
}

void sl_attention_kv(const sl_tensor_t *q, const sl_tensor_t *kc, const sl_tensor_t *vc,
                     const sl_tensor_t *slot, const sl_tensor_t *pos, const sl_tensor_t *kv_len,
                     float scale, int causal, sl_tensor_t *out)
{
    need_f32("sl_attention_kv", "q", q, 3);
    need_f32("sl_attention_kv", "kc", kc, 4);
    need_f32("sl_attention_kv", "vc", vc, 4);
    need_f32("sl_attention_kv", "out", out, 3);
    int64_t t = q->shape[0], h = q->shape[1], d = q->shape[2];
    int64_t s = kc->shape[0], c = kc->shape[1], hkv = kc->shape[2];
    int ok = hkv > 0 && h % hkv == 0 && kc->shape[3] == d;
    for (int i = 0; i < 4; i++)
        ok = ok && vc->shape[i] == kc->shape[i];
    for (int i = 0; i < 3; i++)
        ok = ok && out->shape[i] == q->shape[i];
    if (!ok) {
        char b1[64], b2[64], b3[64], b4[64];
        SL_FATAL("sl_attention_kv: q %s, kc %s, vc %s, out %s disagree (q [T,H,Dh], caches "
                 "[S,C,Hkv,Dh] with Hkv dividing H, out like q)",
                 shape_str(q, b1, sizeof b1), shape_str(kc, b2, sizeof b2),
                 shape_str(vc, b3, sizeof b3), shape_str(out, b4, sizeof b4));
    }
    need_i32("sl_attention_kv", "slot", slot, t);
    need_i32("sl_attention_kv", "pos", pos, t);
    need_i32("sl_attention_kv", "kv_len", kv_len, s);
    need_same_be("sl_attention_kv", q, out);
    need_same_be("sl_attention_kv", kc, out);
    need_same_be("sl_attention_kv", vc, out);
    need_same_be("sl_attention_kv", slot, out);
    need_same_be("sl_attention_kv", pos, out);
    need_same_be("sl_attention_kv", kv_len, out);
    if (t > 0 && h > 0 && d > 0)
        out->be->ops->attention_kv(out->be, q, kc, vc, slot, pos, kv_len, scale, causal, out, t, s,
                                   c, h, hkv, d);
}

void sl_gather_rows(const sl_tensor_t *src, const sl_tensor_t *idx, sl_tensor_t *out)
{
    need_f32("sl_gather_rows", "src", src, 2);
    need_f32("sl_gather_rows", "out", out, 2);
    int64_t m = out->shape[0], d = out->shape[1];
    need_i32("sl_gather_rows", "idx", idx, m);
    if (src->shape[1] != d) {
        char b1[64], b2[64];
        SL_FATAL("sl_gather_rows: src %s and out %s have different row lengths",
                 shape_str(src, b1, sizeof b1), shape_str(out, b2, sizeof b2));
    }
    need_same_be("sl_gather_rows", src, out);
    need_same_be("sl_gather_rows", idx, out);
    if (m > 0 && d > 0)
        out->be->ops->gather_rows(out->be, src, idx, out, m, d);
}

void sl_pool_packed(const sl_tensor_t *x, const sl_tensor_t *offsets, sl_pool_t mode,
                    sl_tensor_t *out)
{
    need_f32("sl_pool_packed", "x", x, 2);
    need_f32("sl_pool_packed", "out", out, 2);
    int64_t b = out->shape[0], d = out->shape[1];
    need_i32("sl_pool_packed", "offsets", offsets, b + 1);
    if (x->shape[1] != d) {
        char b1[64], b2[64];
        SL_FATAL("sl_pool_packed: x %s and out %s have different row lengths",
                 shape_str(x, b1, sizeof b1), shape_str(out, b2, sizeof b2));
    }
    if (mode != SL_POOL_MEAN && mode != SL_POOL_CLS)
        SL_FATAL("sl_pool_packed: unknown mode %d", (int)mode);
    need_same_be("sl_pool_packed", x, out);
    need_same_be("sl_pool_packed", offsets, out);
    if (b > 0 && d > 0)
        out->be->ops->pool_packed(out->be, x, offsets, mode, out, b, d);
}

void sl_logsumexp_parts(const sl_tensor_t *logits, sl_tensor_t *rowmax, sl_tensor_t *sumexp)
{
    need_f32("sl_logsumexp_parts", "logits", logits, 2);
    need_f32("sl_logsumexp_parts", "rowmax", rowmax, 1);
    need_f32("sl_logsumexp_parts", "sumexp", sumexp, 1);
    int64_t t = logits->shape[0];
    if (rowmax->shape[0] != t || sumexp->shape[0] != t) {
        char b1[64], b2[64], b3[64];
        SL_FATAL("sl_logsumexp_parts: logits %s, rowmax %s, sumexp %s disagree",
                 shape_str(logits, b1, sizeof b1), shape_str(rowmax, b2, sizeof b2),
                 shape_str(sumexp, b3, sizeof b3));
    }
    need_same_be("sl_logsumexp_parts", logits, rowmax);
    need_same_be("sl_logsumexp_parts", logits, sumexp);
    if (t > 0)
        logits->be->ops->logsumexp_parts(logits->be, logits, rowmax, sumexp, t, logits->shape[1]);
}

void sl_pick_logits(const sl_tensor_t *logits, const sl_tensor_t *target, int64_t v0,
                    sl_tensor_t *out)
{
    need_f32("sl_pick_logits", "logits", logits, 2);
    need_f32("sl_pick_logits", "out", out, 1);
    int64_t t = logits->shape[0];
    need_i32("sl_pick_logits", "target", target, t);
    if (out->shape[0] != t) {
        char b1[64], b2[64];
        SL_FATAL("sl_pick_logits: logits %s, out %s disagree", shape_str(logits, b1, sizeof b1),
                 shape_str(out, b2, sizeof b2));
    }
    need_same_be("sl_pick_logits", logits, out);
    need_same_be("sl_pick_logits", target, out);
    if (t > 0)
        out->be->ops->pick_logits(out->be, logits, target, v0, out, t, logits->shape[1]);
}

void sl_topk_rows(const sl_tensor_t *logits, int k, sl_tensor_t *vals, sl_tensor_t *idx)
{
    need_f32("sl_topk_rows", "logits", logits, 2);
    need_f32("sl_topk_rows", "vals", vals, 2);
    int64_t t = logits->shape[0], v = logits->shape[1];
    if (idx->dtype != SL_I32 || idx->ndim != 2)
        SL_FATAL("sl_topk_rows: idx must be i32 2-D, is %s %d-D", sl_dtype_name(idx->dtype),
                 idx->ndim);
    if (k < 1 || k > 256 || k > v || vals->shape[0] != t || vals->shape[1] != k ||
        idx->shape[0] != t || idx->shape[1] != k) {
        char b1[64], b2[64], b3[64];
        SL_FATAL("sl_topk_rows: k %d (1..min(V, 256)) with logits %s, vals %s, idx %s", k,
                 shape_str(logits, b1, sizeof b1), shape_str(vals, b2, sizeof b2),
                 shape_str(idx, b3, sizeof b3));
    }
    need_same_be("sl_topk_rows", logits, vals);
    need_same_be("sl_topk_rows", logits, idx);
    if (t > 0)
        logits->be->ops->topk_rows(logits->be, logits, k, vals, idx, t, v);
}

size_t sl_backend_free_bytes(sl_backend_t *be) { return be->ops->free_bytes(be); }
