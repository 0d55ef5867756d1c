/*
 * cpu_backend.c — the CPU implementation of the backend interface: host memory, OpenBLAS
 * sgemm for GEMMs and OpenMP loops for the elementwise, normalisation, pooling and attention
 * ops, using the per-element math shared with the CUDA backend (kernels/elementwise.h).
 * f16/bf16 operands are widened to f32 scratch buffers before the sgemm, so accumulation is
 * always f32, as on the GPU.
 *
 * This backend is also the reference the CUDA ops are tested against.
 */
#include "kernels/backend_impl.h"
#include "kernels/elementwise.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    struct sl_backend base;
    int threads;
    char desc[256];
    float *scratch[3]; /* widened A, widened B, f32 C for f16/bf16 GEMMs */
    size_t scratch_len[3];
} cpu_backend_t;

static cpu_backend_t *cpu(sl_backend_t *be) { return (cpu_backend_t *)be; }

static float *scratch(cpu_backend_t *b, int slot, size_t n)
{
    if (b->scratch_len[slot] < n) {
        free(b->scratch[slot]);
        b->scratch[slot] = sl_xmalloc(n * sizeof(float));
        b->scratch_len[slot] = n;
    }
    return b->scratch[slot];
}

/* ---- conversions ------------------------------------------------------------------------- */

static float load_f(const void *p, sl_dtype_t dt, int64_t i)
{
    switch (dt) {
    case SL_F16: return sl_f16_to_f32(((const uint16_t *)p)[i]);
    case SL_BF16: return sl_bf16_to_f32(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

static void store_f(void *p, sl_dtype_t dt, int64_t i, float v)
{
    switch (dt) {
    case SL_F16: ((uint16_t *)p)[i] = sl_f32_to_f16(v); break;
    case SL_BF16: ((uint16_t *)p)[i] = sl_f32_to_bf16(v); break;
    default: ((float *)p)[i] = v; break;
    }
}

static void to_f32(float *dst, const void *src, sl_dtype_t dt, int64_t n)
{
    if (dt == SL_F32) {
        memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    }
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        dst[i] = load_f(src, dt, i);
}

static void from_f32(void *dst, sl_dtype_t dt, const float *src, int64_t n)
{
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        store_f(dst, dt, i, src[i]);
}

/* ---- table entries ----------------------------------------------------------------------- */

static void cpu_destroy(sl_backend_t *be)
{
    cpu_backend_t *b = cpu(be);
    for (int i = 0; i < 3; i++)
        free(b->scratch[i]);
    free(b);
}

static const char *cpu_describe(sl_backend_t *be) { return cpu(be)->desc; }
static void *cpu_stream(sl_backend_t *be) { return NULL; }
static void cpu_sync(sl_backend_t *be) {}

static void *cpu_alloc(sl_backend_t *be, size_t bytes)
{
    /* 64-byte alignment: full cache lines for the GEMM packing routines. */
    void *p = NULL;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, rounded ? rounded : 64) != 0)
        return NULL;
    return p;
}

static void cpu_free(sl_backend_t *be, void *ptr) { free(ptr); }
static void cpu_copy(sl_backend_t *be, void *dst, const void *src, size_t bytes)
{
    if (dst != src && bytes)
        memcpy(dst, src, bytes);
}
static void cpu_memzero(sl_backend_t *be, void *ptr, size_t bytes) { memset(ptr, 0, bytes); }

/* C = beta C + bias (the part of the GEMM epilogue done before the sgemm, which then
 * accumulates with beta = 1). With beta == 0 the old C is ignored, even if it held NaN. */
static void prepare_c(float *c, int64_t m, int64_t n, float beta, const sl_tensor_t *bias)
{
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < m; i++) {
        float *row = c + i * n;
        for (int64_t j = 0; j < n; j++) {
            float base = beta == 0.0f ? 0.0f : beta * row[j];
            row[j] = base + (bias ? load_f(bias->data, bias->dtype, j) : 0.0f);
        }
    }
}

static void cpu_matmul(sl_backend_t *be, const sl_tensor_t *a, int trans_a, const sl_tensor_t *b,
                       int trans_b, float alpha, float beta, const sl_tensor_t *bias,
                       sl_tensor_t *c, int64_t m, int64_t n, int64_t k)
{
    cpu_backend_t *cb = cpu(be);
    const float *af = a->data, *bf = b->data;
    if (a->dtype != SL_F32) {
        float *wa = scratch(cb, 0, (size_t)(m * k));
        to_f32(wa, a->data, a->dtype, m * k);
        af = wa;
    }
    if (b->dtype != SL_F32) {
        float *wb = scratch(cb, 1, (size_t)(k * n));
        to_f32(wb, b->data, b->dtype, k * n);
        bf = wb;
    }
    float *cf = c->data;
    if (c->dtype != SL_F32) {
        cf = scratch(cb, 2, (size_t)(m * n));
        if (beta != 0.0f)
            to_f32(cf, c->data, c->dtype, m * n);
    }
    float gemm_beta = beta;
    if (bias) {
        prepare_c(cf, m, n, beta, bias);
        gemm_beta = 1.0f;
    }
    /* Row-major: A is [m,k] (lda k) or stored [k,m] (lda m); B [k,n] (ldb n) or [n,k] (ldb k). */
    if (k == 0) {
        if (!bias)
            prepare_c(cf, m, n, beta, NULL);
    } else {
        cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                    trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha, af,
                    trans_a ? (int)m : (int)k, bf, trans_b ? (int)k : (int)n, gemm_beta, cf,
                    (int)n);
    }
    if (c->dtype != SL_F32)
        from_f32(c->data, c->dtype, cf, m * n);
}

static void cpu_add_bias(sl_backend_t *be, sl_tensor_t *x, const sl_tensor_t *bias, int64_t rows,
                         int64_t cols)
{
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            store_f(x->data, x->dtype, i * cols + j,
                    load_f(x->data, x->dtype, i * cols + j) + load_f(bias->data, bias->dtype, j));
}

static void cpu_activation(sl_backend_t *be, sl_tensor_t *x, sl_act_t act)
{
    int64_t n = sl_tensor_numel(x);
    if (x->dtype == SL_F32) {
        float *p = x->data;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++)
            p[i] = sl_apply_act((int)act, p[i]);
        return;
    }
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        store_f(x->data, x->dtype, i, sl_apply_act((int)act, load_f(x->data, x->dtype, i)));
}

static void cpu_softmax(sl_backend_t *be, sl_tensor_t *x, int64_t rows, int64_t cols)
{
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < rows; i++) {
        int64_t o = i * cols;
        float mx = load_f(x->data, x->dtype, o);
        for (int64_t j = 1; j < cols; j++) {
            float v = load_f(x->data, x->dtype, o + j);
            mx = v > mx ? v : mx;
        }
        float sum = 0.0f;
        for (int64_t j = 0; j < cols; j++)
            sum += expf(load_f(x->data, x->dtype, o + j) - mx);
        float inv = 1.0f / sum;
        for (int64_t j = 0; j < cols; j++)
            store_f(x->data, x->dtype, o + j, expf(load_f(x->data, x->dtype, o + j) - mx) * inv);
    }
}

static void cpu_cast(sl_backend_t *be, const sl_tensor_t *src, sl_tensor_t *dst)
{
    int64_t n = sl_tensor_numel(src);
    if (src->dtype == dst->dtype) {
        cpu_copy(be, dst->data, src->data, sl_tensor_bytes(src));
        return;
    }
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        store_f(dst->data, dst->dtype, i, load_f(src->data, src->dtype, i));
}

static void cpu_standardize(sl_backend_t *be, sl_tensor_t *x, const sl_tensor_t *mean,
                            const sl_tensor_t *std, int64_t rows, int64_t cols)
{
    float *p = x->data;
    const float *mu = mean->data, *sd = std->data;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            p[i * cols + j] = (p[i * cols + j] - mu[j]) / sd[j];
}

/* ---- transformer ops ----------------------------------------------------------------------- */

static void cpu_add(sl_backend_t *be, sl_tensor_t *x, const sl_tensor_t *y, int64_t n)
{
    float *xp = x->data;
    const float *yp = y->data;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        xp[i] += yp[i];
}

/* Row statistics in double, two passes (mean first, then the squared deviations from it): a
 * row like 1000 + 1e-3 * noise keeps its variance, which the one-pass E[x^2] - E[x]^2 loses. */
static void cpu_layernorm(sl_backend_t *be, const sl_tensor_t *x, const sl_tensor_t *gamma,
                          const sl_tensor_t *beta, float eps, sl_tensor_t *out, int64_t rows,
                          int64_t n)
{
    const float *g = gamma->data, *bt = beta->data;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = (const float *)x->data + r * n; /* [n] */
        float *yr = (float *)out->data + r * n;           /* [n], may be xr */
        double mean = 0.0, var = 0.0;
        for (int64_t j = 0; j < n; j++)
            mean += xr[j];
        mean /= (double)n;
        for (int64_t j = 0; j < n; j++) {
            double d = xr[j] - mean;
            var += d * d;
        }
        var /= (double)n; /* biased, as torch.nn.LayerNorm */
        double rstd = 1.0 / sqrt(var + (double)eps);
        /* Every statistic is known before the first write, so out may alias x. */
        for (int64_t j = 0; j < n; j++)
            yr[j] = (float)(((double)xr[j] - mean) * rstd * g[j] + bt[j]);
    }
}

static void cpu_embedding(sl_backend_t *be, const sl_tensor_t *table, const sl_tensor_t *ids,
                          sl_tensor_t *out, int64_t n, int64_t dim)
{
    const int32_t *id = ids->data;
    float *o = out->data; /* [n, dim] */
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const int64_t base = (int64_t)id[i] * dim;
        if (table->dtype == SL_F32) {
            memcpy(o + i * dim, (const float *)table->data + base, (size_t)dim * sizeof(float));
            continue;
        }
        for (int64_t j = 0; j < dim; j++)
            o[i * dim + j] = load_f(table->data, table->dtype, base + j);
    }
}

static int64_t clamp_len(int32_t len, int64_t seq)
{
    return len < 0 ? 0 : (len > seq ? seq : (int64_t)len);
}

/*
 * Attention, one (batch row, query head) pair per OpenMP iteration, over the first L =
 * lengths[b] positions only. Per pair:
 *   kt = K_bg^T            [Dh, L]   (the kv head's keys, transposed into thread scratch)
 *   s  = scale * q_i kt    [L]       for each query i < L (j <= i when causal)
 *   p  = softmax(s)                  max-subtracted, f32
 *   out_i = sum_j p_j v_j  [Dh]
 * Query rows i >= L are zeroed.
 * why loops and not a per-head cblas_sgemm: OpenBLAS (pthreads build) serialises concurrent
 * multithreaded level-3 calls behind one lock, so GEMMs issued from inside this parallel region
 * would run one at a time. The loops are written in axpy form (contiguous innermost index, no
 * reduction in the inner loop), which the compiler vectorises without reassociating sums.
 */
static void cpu_attention(sl_backend_t *be, const sl_tensor_t *q, const sl_tensor_t *k,
                          const sl_tensor_t *v, const sl_tensor_t *lengths, float scale, int causal,
                          sl_tensor_t *out, int64_t batch, int64_t seq, int64_t heads,
                          int64_t kv_heads, int64_t head_dim)
{
    const int64_t rep = heads / kv_heads;    /* query heads per kv head */
    const int64_t qld = heads * head_dim;    /* row stride of q and out */
    const int64_t kld = kv_heads * head_dim; /* row stride of k and v */
    const int32_t *len = lengths->data;      /* [batch] */
#pragma omp parallel
    {
        /* per thread: kt [Dh, S], s [S], acc [Dh] */
        float *kt = sl_xmalloc((size_t)(head_dim * seq + seq + head_dim) * sizeof(float));
        float *s = kt + head_dim * seq, *acc = s + seq;
#pragma omp for schedule(dynamic, 1)
        for (int64_t bh = 0; bh < batch * heads; bh++) {
            const int64_t b = bh / heads, h = bh % heads, g = h / rep;
            const int64_t L = clamp_len(len[b], seq);
            /* head views [S, Dh]: q and out with row stride qld, k and v with kld */
            const float *qb = (const float *)q->data + b * seq * qld + h * head_dim;
            const float *kb = (const float *)k->data + b * seq * kld + g * head_dim;
            const float *vb = (const float *)v->data + b * seq * kld + g * head_dim;
            float *ob = (float *)out->data + b * seq * qld + h * head_dim;
            for (int64_t j = 0; j < L; j++)
                for (int64_t d = 0; d < head_dim; d++)
                    kt[d * L + j] = kb[j * kld + d];
            for (int64_t i = 0; i < L; i++) {
                const float *qi = qb + i * qld;
                const int64_t nj = causal ? i + 1 : L; /* keys 0 .. nj-1 */
                for (int64_t j = 0; j < nj; j++)
                    s[j] = 0.0f;
                for (int64_t d = 0; d < head_dim; d++) {
                    const float qd = qi[d];
                    const float *ktd = kt + d * L;
                    for (int64_t j = 0; j < nj; j++)
                        s[j] += qd * ktd[j];
                }
                float mx = -INFINITY;
                for (int64_t j = 0; j < nj; j++) {
                    s[j] *= scale;
                    mx = s[j] > mx ? s[j] : mx;
                }
                float sum = 0.0f;
                for (int64_t j = 0; j < nj; j++) {
                    s[j] = expf(s[j] - mx);
                    sum += s[j];
                }
                const float inv = 1.0f / sum;
                for (int64_t d = 0; d < head_dim; d++)
                    acc[d] = 0.0f;
                for (int64_t j = 0; j < nj; j++) {
                    const float pj = s[j] * inv;
                    const float *vj = vb + j * kld;
                    for (int64_t d = 0; d < head_dim; d++)
                        acc[d] += pj * vj[d];
                }
                memcpy(ob + i * qld, acc, (size_t)head_dim * sizeof(float));
            }
            for (int64_t i = L; i < seq; i++)
                memset(ob + i * qld, 0, (size_t)head_dim * sizeof(float));
        }
        free(kt);
    }
}

static void cpu_pool(sl_backend_t *be, const sl_tensor_t *x, const sl_tensor_t *lengths,
                     sl_pool_t mode, sl_tensor_t *out, int64_t batch, int64_t seq, int64_t dim)
{
    const int32_t *len = lengths->data;
    const float *xp = x->data; /* [batch, seq, dim] */
    float *o = out->data;      /* [batch, dim] */
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < batch; b++) {
        const float *xb = xp + b * seq * dim;
        if (mode == SL_POOL_CLS) {
            for (int64_t j = 0; j < dim; j++)
                o[b * dim + j] = seq > 0 ? xb[j] : 0.0f;
            continue;
        }
        const int64_t L = clamp_len(len[b], seq);
        for (int64_t j = 0; j < dim; j++) {
            double sum = 0.0;
            for (int64_t t = 0; t < L; t++)
                sum += xb[t * dim + j];
            o[b * dim + j] = L > 0 ? (float)(sum / (double)L) : 0.0f;
        }
    }
}

static void cpu_l2_normalize(sl_backend_t *be, sl_tensor_t *x, int64_t rows, int64_t dim)
{
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        float *xr = (float *)x->data + r * dim;
        double ss = 0.0;
        for (int64_t j = 0; j < dim; j++)
            ss += (double)xr[j] * xr[j];
        const double norm = sqrt(ss), denom = norm > 1e-12 ? norm : 1e-12;
        for (int64_t j = 0; j < dim; j++)
            xr[j] = (float)(xr[j] / denom);
    }
}

static const sl_backend_ops_t cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .describe = cpu_describe,
    .stream = cpu_stream,
    .sync = cpu_sync,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .h2d = cpu_copy,
    .d2h = cpu_copy,
    .memzero = cpu_memzero,
    .matmul = cpu_matmul,
    .add_bias = cpu_add_bias,
    .activation = cpu_activation,
    .softmax = cpu_softmax,
    .cast = cpu_cast,
    .standardize = cpu_standardize,
    .add = cpu_add,
    .layernorm = cpu_layernorm,
    .embedding = cpu_embedding,
    .attention = cpu_attention,
    .pool = cpu_pool,
    .l2_normalize = cpu_l2_normalize,
};

sl_backend_t *sl_cpu_backend_create(int threads, sl_error_t *err)
{
    cpu_backend_t *b = sl_xcalloc(1, sizeof *b);
    b->base.ops = &cpu_ops;
    b->base.kind = SL_BACKEND_CPU;
    if (threads > 0) {
        openblas_set_num_threads(threads);
        omp_set_num_threads(threads);
    }
    b->threads = threads > 0 ? threads : omp_get_max_threads();
    snprintf(b->desc, sizeof b->desc, "cpu (%d thread%s, %s)", b->threads,
             b->threads == 1 ? "" : "s", openblas_get_config());
    return &b->base;
}
