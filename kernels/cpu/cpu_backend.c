/*
 * cpu_backend.c — the CPU implementation of the backend interface: host memory, CBLAS
 * sgemm for GEMMs (BLIS or OpenBLAS, chosen at build time: CMake's SL_BLAS) and OpenMP loops
 * for the elementwise, normalisation, pooling and attention ops, using the per-element math
 * shared with the CUDA backend (kernels/elementwise.h). f16/bf16 operands are widened to f32
 * scratch buffers before the sgemm, so accumulation is always f32, as on the GPU.
 *
 * Threads: with BLIS, each BLIS call is single-threaded and sgemm_blocks spreads a GEMM's row
 * blocks over this backend's OpenMP threads, the same pool as the loops here, so BLAS threads and
 * OpenMP threads never run side by side.
 *
 * This backend is also the reference the CUDA ops are tested against.
 */
#include "kernels/backend_impl.h"
#include "kernels/cpu/cpu_qgemm.h"
#include "kernels/cpu/cpu_quant.h"
#include "kernels/elementwise.h"
#include "kernels/quant.h"

#include <cblas.h>
#ifdef SL_BLAS_BLIS
#include <blis.h>
#endif
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    struct sl_backend base;
    int threads;
    char desc[256];
    float *scratch[3]; /* widened A, widened B, f32 C for f16/bf16 GEMMs */
    size_t scratch_len[3];
    sl_qform_t qform; /* the int8 dot-product form of quantized linear layers */
    sl_q8a_t *xq;     /* quantized activations of a quantized linear layer */
    size_t xq_len;    /* blocks */
} cpu_backend_t;

/* Loops over fewer elements than this run on the calling thread: a parallel region costs a
 * fork and a barrier, and a decode step (one token per row) issues hundreds of small ops, whose
 * barriers cost more than their work, most of all on a machine shared with other jobs. */
#define SL_PAR_MIN 32768

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
#pragma omp parallel for schedule(static) if (n >= SL_PAR_MIN)
    for (int64_t i = 0; i < n; i++)
        dst[i] = load_f(src, dt, i);
}

static void from_f32(void *dst, sl_dtype_t dt, const float *src, int64_t n)
{
#pragma omp parallel for schedule(static) if (n >= SL_PAR_MIN)
    for (int64_t i = 0; i < n; i++)
        store_f(dst, dt, i, src[i]);
}

/* ---- table entries ----------------------------------------------------------------------- */

static void cpu_destroy(sl_backend_t *be)
{
    cpu_backend_t *b = cpu(be);
    for (int i = 0; i < 3; i++)
        free(b->scratch[i]);
    free(b->xq);
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
#pragma omp parallel for schedule(static) if (m * n >= SL_PAR_MIN)
    for (int64_t i = 0; i < m; i++) {
        float *row = c + i * n;
        for (int64_t j = 0; j < n; j++) {
            float base = beta == 0.0f ? 0.0f : beta * row[j];
            row[j] = base + (bias ? load_f(bias->data, bias->dtype, j) : 0.0f);
        }
    }
}

#ifdef SL_BLAS_BLIS
/*
 * BLIS runs single-threaded here (sl_cpu_backend_create sets its threads to 1): a GEMM with
 * enough rows is cut into blocks of rows of op(A) and C, which the OpenMP threads take one at a
 * time (dynamic schedule), each block one BLIS call over the whole K.
 * why: BLIS's own threads meet at spin barriers inside every GEMM; on a machine shared with other
 * work, a thread that loses its core leaves the others spinning for whole scheduler time slices
 * (2-thread sgemm measured at 4-16 GFLOP/s instead of ~60 under load; these blocks kept 34-58).
 * Here a descheduled thread delays only its own block while the others take the rest. The blocks
 * depend only on m and the thread count, so results do not change from run to run.
 */
static void sgemm_blocks(int threads, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                         float alpha, const float *a, const float *b, float beta, float *c,
                         int64_t ldc)
{
    const int64_t lda = trans_a ? m : k, ldb = trans_b ? k : n;
    const enum CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
    const enum CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
    /* about four blocks per thread, whole multiples of 16 rows, at least 64 rows each */
    int64_t rows = (m + 4 * threads - 1) / (4 * threads);
    rows = rows < 64 ? 64 : (rows + 15) / 16 * 16;
    const int64_t nblk = (m + rows - 1) / rows;
    if (threads > 1 && nblk < 2 && n >= 128 * threads) {
        /* Few rows (a decode step: one per sequence): blocks of columns of C instead, i.e. of
         * rows of an nn.Linear weight, so that every thread streams its share of the weights. */
        int64_t cols = (n + 4 * threads - 1) / (4 * threads);
        cols = (cols + 15) / 16 * 16;
        const int64_t ncb = (n + cols - 1) / cols;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
        for (int64_t i = 0; i < ncb; i++) {
            const int64_t c0 = i * cols, nc = n - c0 < cols ? n - c0 : cols;
            cblas_sgemm(CblasRowMajor, ta, tb, (int)m, (int)nc, (int)k, alpha, a, (int)lda,
                        trans_b ? b + c0 * ldb : b + c0, (int)ldb, beta, c + c0, (int)ldc);
        }
        return;
    }
    if (threads <= 1 || nblk < 2) {
        cblas_sgemm(CblasRowMajor, ta, tb, (int)m, (int)n, (int)k, alpha, a, (int)lda, b, (int)ldb,
                    beta, c, (int)ldc);
        return;
    }
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t i = 0; i < nblk; i++) {
        const int64_t r0 = i * rows, mr = m - r0 < rows ? m - r0 : rows;
        cblas_sgemm(CblasRowMajor, ta, tb, (int)mr, (int)n, (int)k, alpha,
                    trans_a ? a + r0 : a + r0 * lda, (int)lda, b, (int)ldb, beta, c + r0 * ldc,
                    (int)ldc);
    }
}
#endif

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
#ifdef SL_BLAS_BLIS
        sgemm_blocks(cb->threads, trans_a, trans_b, m, n, k, alpha, af, bf, gemm_beta, cf, n);
#else
        cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                    trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha, af,
                    trans_a ? (int)m : (int)k, bf, trans_b ? (int)k : (int)n, gemm_beta, cf,
                    (int)n);
#endif
    }
    if (c->dtype != SL_F32)
        from_f32(c->data, c->dtype, cf, m * n);
}

/* The bulk rows of a quantized linear layer (backend.h, sl_backend_set_bulk_rows): y[m, n] =
 * x[m, k] @ w[n, k]^T (+ bias) with f32 activations and w dequantised a chunk of weight rows at a
 * time into scratch (at most 8 MiB of f32, so every layer matrix of the shipped models is one
 * chunk and only an LM head takes several), each chunk dequantised by the OpenMP threads and
 * multiplied by the same threaded GEMM as f32 weights (sgemm_blocks; OpenBLAS threads itself).
 * why: with many rows each dequantised chunk serves every row, so the GEMM runs at the f32
 * path's rate less the dequantisation (about 1.5x the int8 dot products' rate on these CPUs,
 * bench/RESULTS.md), and the activations keep their f32 precision. Each output element is one
 * BLAS dot product over k whatever m is, so a row's result does not depend on its batch. */
static void linear_q_tiles(cpu_backend_t *cb, const sl_tensor_t *x, const sl_tensor_t *w,
                           const sl_tensor_t *bias, sl_tensor_t *y, int64_t m, int64_t n, int64_t k)
{
    int64_t chunk = (int64_t)(((size_t)8 << 20) / (sizeof(float) * (size_t)k));
    chunk = chunk < 64 ? 64 : chunk / 16 * 16;
    chunk = chunk > n ? n : chunk;
    const int64_t nb = k / SL_QBLOCK;
    const size_t rb = sl_dtype_bytes(w->dtype, k), bb = sl_dtype_size(w->dtype);
    float *wt = scratch(cb, 0, (size_t)(chunk * k)), *yf = y->data; /* wt [chunk, k] */
    if (bias)
        prepare_c(yf, m, n, 0.0f, bias);
    for (int64_t j0 = 0; j0 < n; j0 += chunk) {
        const int64_t nj = n - j0 < chunk ? n - j0 : chunk;
        const uint8_t *wr = (const uint8_t *)w->data + (size_t)j0 * rb;
        if (w->packed) /* chunk and n are multiples of 16: whole groups */
            sl_qpack_dequant_rows(cb->threads, w->dtype, w->data, k, j0, nj, wt);
        else
#pragma omp parallel for schedule(static) num_threads(cb->threads) if (nj * k >= SL_PAR_MIN)
            for (int64_t b = 0; b < nj * nb; b++)
                sl_q_dequant_block((int)w->dtype, wr + (size_t)b * bb, wt + b * SL_QBLOCK);
#ifdef SL_BLAS_BLIS
        sgemm_blocks(cb->threads, 0, 1, m, nj, k, 1.0f, x->data, wt, bias ? 1.0f : 0.0f, yf + j0,
                     n);
#else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)nj, (int)k, 1.0f, x->data,
                    (int)k, wt, (int)k, bias ? 1.0f : 0.0f, yf + j0, (int)n);
#endif
    }
}

/* sl_backend_w8a8_stats: a block took the static step xmax[b] / 127 unless its own max was
 * larger (cpu_quant.c computes the step the same way, so equality means the static step).
 * Columns without a range (all of them under --calibration dynamic) cost one test each. */
static void count_static_blocks(sl_backend_t *be, const sl_q8a_t *xq, int64_t m, int64_t nb,
                                const float *xmax)
{
    double all = 0, own = 0;
    for (int64_t b = 0; b < nb; b++) {
        if (!(xmax[b] > 0.0f))
            continue;
        const float step = xmax[b] / 127.0f;
        all += (double)m;
        for (int64_t i = 0; i < m; i++)
            own += xq[i * nb + b].d > step;
    }
    be->w8a8_blocks += all;
    be->w8a8_own += own;
}

static void cpu_linear_q(sl_backend_t *be, const sl_tensor_t *x, const sl_tensor_t *w,
                         const sl_tensor_t *bias, sl_tensor_t *y, int64_t m, int64_t n, int64_t k,
                         int int8_act)
{
    cpu_backend_t *cb = cpu(be);
    if (sl_dtype_packed_only(w->dtype) && !w->packed) /* uploads pack them (sl_backend_packs) */
        SL_FATAL("cpu linear_q: an unpacked %s matrix", sl_dtype_name(w->dtype));
    if (!int8_act) {
        linear_q_tiles(cb, x, w, bias, y, m, n, k);
        return;
    }
    size_t blocks = (size_t)(m * (k / SL_QBLOCK));
    if (cb->xq_len < blocks) {
        free(cb->xq);
        cb->xq = sl_xmalloc(blocks * sizeof *cb->xq);
        cb->xq_len = blocks;
    }
    const float *xmax = w->act_scales ? ((const sl_tensor_t *)w->act_scales)->data : NULL;
    if (!w->packed) {
        sl_cpu_linear_q_ex(cb->threads, cb->qform, w->dtype, x->data, m, k, w->data, n,
                           bias ? bias->data : NULL, y->data, cb->xq, xmax);
    } else {
        sl_q8a_quantize_rows(cb->threads, cb->qform, x->data, m, k, xmax, cb->xq);
        sl_qgemm(cb->threads, cb->qform, w->dtype, cb->xq, m, k, w->data, n,
                 bias ? bias->data : NULL, y->data);
    }
    if (xmax)
        count_static_blocks(be, cb->xq, m, k / SL_QBLOCK, xmax);
}

static int cpu_repack(sl_backend_t *be, void *data, sl_dtype_t dt, int64_t n, int64_t k, int pack)
{
    if (!sl_qpack_fits(dt, n, k))
        return 0;
    if (!data)
        return 1;
    if (pack)
        sl_qpack(cpu(be)->threads, dt, data, n, k);
    else
        sl_qunpack(cpu(be)->threads, dt, data, n, k);
    return 1;
}

static void cpu_add_bias(sl_backend_t *be, sl_tensor_t *x, const sl_tensor_t *bias, int64_t rows,
                         int64_t cols)
{
#pragma omp parallel for schedule(static) if (rows * cols >= SL_PAR_MIN)
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            store_f(x->data, x->dtype, i * cols + j,
                    load_f(x->data, x->dtype, i * cols + j) + load_f(bias->data, bias->dtype, j));
}

/* x86-64 builds target the baseline ISA; the attention tile kernel and GELU, where the time
 * goes, are also compiled for AVX2 and AVX-512 and picked at load time. Not under ThreadSanitizer:
 * the clones' ifunc resolver is instrumented and runs during relocation, before TSan's runtime is
 * up, and crashes the program at start. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) &&       \
    !defined(__SANITIZE_THREAD__)
#define SL_VEC_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SL_VEC_CLONES
#endif

/* erf(x) for GELU on the CPU: x N(x^2) / D(x^2) on [-4, 4] (beyond, erf(+-4) = +-(1 - 1.5e-8)),
 * with coefficients fitted for this form (a weighted least-squares fit of erf(x)/x, 40001 points
 * on [0, 4], reweighted towards the largest error). Evaluated in f32 it stays within 4.2e-7 of
 * erf, a few ulps of 1. why: libm's erff is scalar and took 13% of an encoder's time; this form
 * is multiplies, adds, one divide and a clamp, which the compiler vectorizes. NaN passes through
 * (the clamp's comparisons are false for it). */
static inline float erf_rational(float x)
{
    const float a = x < -4.0f ? -4.0f : x > 4.0f ? 4.0f : x, z = a * a;
    float p = -1.366144442016548e-08f;
    p = p * z + 4.779439223057125e-06f;
    p = p * z + 0.0003826549800578505f;
    p = p * z + 0.0038395964074879885f;
    p = p * z + 0.054332274943590164f;
    p = p * z + 0.18471498787403107f;
    p = p * z + 1.128379225730896f;
    float q = 6.399884296115488e-05f;
    q = q * z + 0.0013095425674691796f;
    q = q * z + 0.0154535211622715f;
    q = q * z + 0.11382739990949631f;
    q = q * z + 0.49703294038772583f;
    q = q * z + 1.0f;
    return a * p / q;
}

/* x = GELU(x) (the exact form, with erf_rational) over n values. */
SL_VEC_CLONES static void gelu_f32(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = 0.5f * x[i] * (1.0f + erf_rational(x[i] * 0.70710678118654752f));
}

static void cpu_activation(sl_backend_t *be, sl_tensor_t *x, sl_act_t act)
{
    int64_t n = sl_tensor_numel(x);
    if (x->dtype == SL_F32 && act == SL_ACT_GELU) {
        /* chunks for the threads, each through the vector clone of gelu_f32 */
        float *p = x->data;
        const int64_t chunk = 8192, nc = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (n >= SL_PAR_MIN)
        for (int64_t c = 0; c < nc; c++)
            gelu_f32(p + c * chunk, n - c * chunk < chunk ? n - c * chunk : chunk);
        return;
    }
    if (x->dtype == SL_F32) {
        float *p = x->data;
#pragma omp parallel for schedule(static) if (n >= SL_PAR_MIN)
        for (int64_t i = 0; i < n; i++)
            p[i] = sl_apply_act((int)act, p[i]);
        return;
    }
#pragma omp parallel for schedule(static) if (n >= SL_PAR_MIN)
    for (int64_t i = 0; i < n; i++)
        store_f(x->data, x->dtype, i, sl_apply_act((int)act, load_f(x->data, x->dtype, i)));
}

static void cpu_softmax(sl_backend_t *be, sl_tensor_t *x, int64_t rows, int64_t cols)
{
#pragma omp parallel for schedule(static) if (rows * cols >= SL_PAR_MIN)
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
#pragma omp parallel for schedule(static) if (n >= SL_PAR_MIN)
    for (int64_t i = 0; i < n; i++)
        store_f(dst->data, dst->dtype, i, load_f(src->data, src->dtype, i));
}

static void cpu_standardize(sl_backend_t *be, sl_tensor_t *x, const sl_tensor_t *mean,
                            const sl_tensor_t *std, int64_t rows, int64_t cols)
{
    float *p = x->data;
    const float *mu = mean->data, *sd = std->data;
#pragma omp parallel for schedule(static) if (rows * cols >= SL_PAR_MIN)
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            p[i * cols + j] = (p[i * cols + j] - mu[j]) / sd[j];
}

/* ---- transformer ops ----------------------------------------------------------------------- */

static void cpu_add(sl_backend_t *be, sl_tensor_t *x, const sl_tensor_t *y, int64_t n)
{
    float *xp = x->data;
    const float *yp = y->data;
#pragma omp parallel for schedule(static) if (n >= SL_PAR_MIN)
    for (int64_t i = 0; i < n; i++)
        xp[i] += yp[i];
}

/* One row of LayerNorm, its statistics in double and in two passes (mean first, then the
 * squared deviations from it, the biased variance of torch.nn.LayerNorm): a row like 1000 +
 * 1e-3 * noise keeps its variance, which the one-pass E[x^2] - E[x]^2 loses. Each pass sums in
 * 8 partial sums (lane k takes elements k, k + 8, ...) added in a fixed order, so the result
 * depends only on the row; why the partial sums: a single running double sum is a chain the
 * compiler may not reorder, and took 7% of an int8 encoder's time. */
SL_VEC_CLONES static void layernorm_row(const float *xr, const float *g, const float *bt, float eps,
                                        int64_t n, float *yr)
{
    double s[8] = {0, 0, 0, 0, 0, 0, 0, 0}, v[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const int64_t n8 = n / 8 * 8;
    for (int64_t j = 0; j < n8; j += 8)
        for (int k = 0; k < 8; k++)
            s[k] += (double)xr[j + k];
    for (int64_t j = n8; j < n; j++)
        s[j - n8] += (double)xr[j];
    const double mean =
        (((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))) / (double)n;
    for (int64_t j = 0; j < n8; j += 8)
        for (int k = 0; k < 8; k++) {
            const double d = (double)xr[j + k] - mean;
            v[k] += d * d;
        }
    for (int64_t j = n8; j < n; j++) {
        const double d = (double)xr[j] - mean;
        v[j - n8] += d * d;
    }
    const double var =
        (((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]))) / (double)n;
    const double rstd = 1.0 / sqrt(var + (double)eps);
    /* Every statistic is known before the first write, so yr may alias xr. */
    for (int64_t j = 0; j < n; j++)
        yr[j] = (float)(((double)xr[j] - mean) * rstd * g[j] + bt[j]);
}

static void cpu_layernorm(sl_backend_t *be, const sl_tensor_t *x, const sl_tensor_t *gamma,
                          const sl_tensor_t *beta, float eps, sl_tensor_t *out, int64_t rows,
                          int64_t n)
{
    const float *g = gamma->data, *bt = beta->data;
#pragma omp parallel for schedule(static) if (rows * n >= SL_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) /* [n] rows; out may be x */
        layernorm_row((const float *)x->data + r * n, g, bt, eps, n, (float *)out->data + r * n);
}

static void cpu_embedding(sl_backend_t *be, const sl_tensor_t *table, const sl_tensor_t *ids,
                          sl_tensor_t *out, int64_t n, int64_t dim)
{
    const int32_t *id = ids->data;
    float *o = out->data; /* [n, dim] */
#pragma omp parallel for schedule(static) if (n * dim >= SL_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const int64_t base = (int64_t)id[i] * dim;
        if (table->dtype == SL_F32) {
            memcpy(o + i * dim, (const float *)table->data + base, (size_t)dim * sizeof(float));
            continue;
        }
        if (table->packed) {
            sl_qpack_dequant_row(table->dtype, table->data, dim, id[i], o + i * dim);
            continue;
        }
        if (sl_dtype_quantized(table->dtype)) { /* the row's blocks, dequantised */
            const size_t bb = sl_dtype_size(table->dtype);
            const uint8_t *row = (const uint8_t *)table->data + sl_dtype_bytes(table->dtype, base);
            for (int64_t b = 0; b < dim / SL_QBLOCK; b++)
                sl_q_dequant_block((int)table->dtype, row + b * bb, o + i * dim + b * SL_QBLOCK);
            continue;
        }
        for (int64_t j = 0; j < dim; j++)
            o[i * dim + j] = load_f(table->data, table->dtype, base + j);
    }
}

static void cpu_l2_normalize(sl_backend_t *be, sl_tensor_t *x, int64_t rows, int64_t dim)
{
#pragma omp parallel for schedule(static) if (rows * dim >= SL_PAR_MIN)
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

/* ---- packed-token ops ----------------------------------------------------------------------- */

/* HF LlamaRMSNorm in f32: x * rsqrt(mean(x^2) + eps), then times the weight. */
static void cpu_rmsnorm(sl_backend_t *be, const sl_tensor_t *x, const sl_tensor_t *weight,
                        float eps, sl_tensor_t *out, int64_t rows, int64_t n)
{
    const float *w = weight->data;
#pragma omp parallel for schedule(static) if (rows * n >= SL_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = (const float *)x->data + r * n; /* [n] */
        float *yr = (float *)out->data + r * n;           /* [n], may be xr */
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int64_t j = 0; j < n; j++)
            ss += xr[j] * xr[j];
        const float rs = 1.0f / sqrtf(ss / (float)n + eps);
        for (int64_t j = 0; j < n; j++)
            yr[j] = w[j] * (xr[j] * rs);
    }
}

/* cos and sin of a token's angles once, then every head of it. */
static void cpu_rope(sl_backend_t *be, sl_tensor_t *x, const sl_tensor_t *positions,
                     const sl_tensor_t *inv_freq, int64_t tokens, int64_t heads, int64_t head_dim)
{
    const int64_t half = head_dim / 2;
    const int32_t *p = positions->data;
    const float *f = inv_freq->data;
#pragma omp parallel if (tokens * heads * head_dim >= SL_PAR_MIN)
    {
        float *cs = sl_xmalloc((size_t)(2 * half) * sizeof(float)); /* cos [half], sin [half] */
        float *sn = cs + half;
#pragma omp for schedule(static)
        for (int64_t t = 0; t < tokens; t++) {
            const float pf = (float)p[t];
            for (int64_t i = 0; i < half; i++) {
                const float ang = pf * f[i];
                cs[i] = cosf(ang);
                sn[i] = sinf(ang);
            }
            for (int64_t h = 0; h < heads; h++) {
                float *a = (float *)x->data + (t * heads + h) * head_dim, *b = a + half;
                for (int64_t i = 0; i < half; i++) {
                    const float ai = a[i], bi = b[i];
                    a[i] = ai * cs[i] - bi * sn[i];
                    b[i] = bi * cs[i] + ai * sn[i];
                }
            }
        }
        free(cs);
    }
}

static void cpu_swiglu(sl_backend_t *be, const sl_tensor_t *gate_up, sl_tensor_t *out, int64_t rows,
                       int64_t f)
{
#pragma omp parallel for schedule(static) if (rows * f >= SL_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *g = (const float *)gate_up->data + r * 2 * f, *u = g + f;
        float *o = (float *)out->data + r * f;
        for (int64_t j = 0; j < f; j++)
            o[j] = sl_silu(g[j]) * u[j];
    }
}

static void cpu_kv_write(sl_backend_t *be, sl_tensor_t *cache, const sl_tensor_t *src,
                         const sl_tensor_t *slot, const sl_tensor_t *pos, int64_t tokens,
                         int64_t cache_len, int64_t row)
{
    const int32_t *sl = slot->data, *ps = pos->data;
#pragma omp parallel for schedule(static) if (tokens * row >= SL_PAR_MIN)
    for (int64_t t = 0; t < tokens; t++)
        memcpy((float *)cache->data + ((int64_t)sl[t] * cache_len + ps[t]) * row,
               (const float *)src->data + t * row, (size_t)row * sizeof(float));
}

/* exp(x) for x <= 0 (x = -Inf included) within a few ulp, in plain arithmetic that the compiler
 * vectorises (a libm call would not be): x = n ln2 + r with |r| <= ln2 / 2 (ln2 split in a
 * 16-bit head, so n * head is exact, and a tail), e^r by its Taylor series to degree 7
 * (truncation below 1e-8 relative), 2^n through the exponent bits. Below -87 it returns 0. */
static inline float exp_nonpos(float x)
{
    const float xc = x < -87.0f ? -87.0f : x;
    const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round(x/ln2) */
    const float r = (xc - n * 0.693145751953125f) - n * 1.4286068202862268e-6f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t bits = ((int32_t)n + 127) << 23; /* n in [-126, 0]: a normal 2^n */
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    return x < -87.0f ? 0.0f : p * two_n;
}

/* Keys per block of the tiled attention: one block of K is transposed into kt [Dh, KV_BLOCK]
 * and serves every query row of the tile; a tile of fewer than KV_DOT_ROWS rows (a decode step)
 * reads the keys in place with dot products instead, as a transposition would cost more than
 * the few rows that use it. */
enum { KV_BLOCK = 64, KV_TILE_ROWS = 64, KV_DOT_ROWS = 8 };
/* Scores and output dims a tile keeps in registers at once (one AVX-512 vector, two AVX2 ones);
 * KV_BLOCK is a multiple of it. */
enum { KV_LANES = 16 };

/*
 * One tile of attention: R query rows (tokens of one slot times the query heads of one kv head)
 * against the keys of that slot and kv head, flash style: key blocks of KV_BLOCK with an online
 * softmax (running max m, running sum l, unnormalised accumulator acc per row), so the scores
 * never exceed one block. Row r sees keys 0 .. nk[r]-1 (0 keys: zeros).
 *   qrow[r], orow[r]: [Dh] rows of q and out;  kb, vb: key / value j at kb + j * kld
 * Scratch: qs, acc [R, Dh]; m, l [R]; kt [Dh, KV_BLOCK]; s [KV_BLOCK].
 * The inner loops run over a contiguous index: in axpy form (s over keys for the scores, acc over
 * Dh for the values), or as OpenMP simd reductions (dot products of few-row tiles, block max
 * and sum), which allow the compiler to reassociate the sum into vector lanes. The axpy loops
 * hold KV_LANES scores (of consecutive keys) or KV_LANES dims of acc in registers while they
 * take every dim (scores, four per step) or every key of the block (values, four per step), so
 * s and acc go through memory once per block; each sum is added in the same order as a loop
 * over all lanes would, so the results do not depend on KV_LANES.
 */
SL_VEC_CLONES static void attn_kv_tile(int64_t R, const float *const *qrow, float *const *orow,
                                       const int32_t *nk, const float *kb, const float *vb,
                                       int64_t kld, int64_t Dh, float scale, float *restrict qs,
                                       float *restrict acc, float *restrict m, float *restrict l,
                                       float *restrict kt, float *restrict s)
{
    const int dots = R < KV_DOT_ROWS;
    int32_t nkmax = 0;
    for (int64_t r = 0; r < R; r++) {
        nkmax = nk[r] > nkmax ? nk[r] : nkmax;
        for (int64_t d = 0; d < Dh; d++) {
            qs[r * Dh + d] = qrow[r][d] * scale;
            acc[r * Dh + d] = 0.0f;
        }
        m[r] = -INFINITY;
        l[r] = 0.0f;
    }
    for (int64_t j0 = 0; j0 < nkmax; j0 += KV_BLOCK) {
        const int64_t nb = nkmax - j0 < KV_BLOCK ? nkmax - j0 : KV_BLOCK;
        if (!dots)
            for (int64_t jj = 0; jj < nb; jj++) {
                const float *kj = kb + (j0 + jj) * kld;
                for (int64_t d = 0; d < Dh; d++)
                    kt[d * KV_BLOCK + jj] = kj[d];
            }
        for (int64_t r = 0; r < R; r++) {
            const int64_t nbr = nk[r] - j0 < nb ? nk[r] - j0 : nb; /* this row's keys here */
            if (nbr <= 0)
                continue;
            const float *qr = qs + r * Dh;
            if (dots) {
                for (int64_t jj = 0; jj < nbr; jj++) {
                    const float *kj = kb + (j0 + jj) * kld;
                    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
                    for (int64_t d = 0; d < Dh; d++)
                        dot += qr[d] * kj[d];
                    s[jj] = dot;
                }
            } else {
                for (int64_t j = 0; j < nbr; j += KV_LANES) { /* j + KV_LANES <= KV_BLOCK */
                    float sv[KV_LANES] = {0.0f}; /* the scores of keys j.., in registers */
                    int64_t d = 0;
                    for (; d + 4 <= Dh; d += 4) { /* four dims per pass */
                        const float q0 = qr[d], q1 = qr[d + 1], q2 = qr[d + 2], q3 = qr[d + 3];
                        const float *k0 = kt + d * KV_BLOCK + j, *k1 = k0 + KV_BLOCK;
                        const float *k2 = k1 + KV_BLOCK, *k3 = k2 + KV_BLOCK;
#pragma omp simd
                        for (int c = 0; c < KV_LANES; c++)
                            sv[c] += (q0 * k0[c] + q1 * k1[c]) + (q2 * k2[c] + q3 * k3[c]);
                    }
                    for (; d < Dh; d++) {
                        const float qd = qr[d];
                        const float *ktd = kt + d * KV_BLOCK + j;
#pragma omp simd
                        for (int c = 0; c < KV_LANES; c++)
                            sv[c] += qd * ktd[c];
                    }
                    const int64_t nc = nbr - j < KV_LANES ? nbr - j : KV_LANES;
                    for (int64_t c = 0; c < nc; c++)
                        s[j + c] = sv[c];
                }
            }
            float mb = m[r];
#pragma omp simd reduction(max : mb)
            for (int64_t jj = 0; jj < nbr; jj++)
                mb = s[jj] > mb ? s[jj] : mb;
            const float corr = exp_nonpos(m[r] - mb); /* 0 for the first block (m = -Inf) */
            for (int64_t jj = 0; jj < nbr; jj++)
                s[jj] = exp_nonpos(s[jj] - mb);
            float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
            for (int64_t jj = 0; jj < nbr; jj++)
                sum += s[jj];
            l[r] = l[r] * corr + sum;
            m[r] = mb;
            float *ar = acc + r * Dh;
            int64_t d0 = 0;
            for (; d0 + KV_LANES <= Dh; d0 += KV_LANES) { /* these dims of acc in registers */
                float av[KV_LANES];
#pragma omp simd
                for (int c = 0; c < KV_LANES; c++)
                    av[c] = corr != 1.0f ? ar[d0 + c] * corr : ar[d0 + c];
                int64_t jj = 0;
                for (; jj + 4 <= nbr; jj += 4) { /* four keys per pass */
                    const float p0 = s[jj], p1 = s[jj + 1], p2 = s[jj + 2], p3 = s[jj + 3];
                    const float *v0 = vb + (j0 + jj) * kld + d0, *v1 = v0 + kld;
                    const float *v2 = v1 + kld, *v3 = v2 + kld;
#pragma omp simd
                    for (int c = 0; c < KV_LANES; c++)
                        av[c] += (p0 * v0[c] + p1 * v1[c]) + (p2 * v2[c] + p3 * v3[c]);
                }
                for (; jj < nbr; jj++) {
                    const float pj = s[jj];
                    const float *vj = vb + (j0 + jj) * kld + d0;
#pragma omp simd
                    for (int c = 0; c < KV_LANES; c++)
                        av[c] += pj * vj[c];
                }
#pragma omp simd
                for (int c = 0; c < KV_LANES; c++)
                    ar[d0 + c] = av[c];
            }
            if (d0 < Dh) { /* the dims past the last whole KV_LANES, in the same order */
                if (corr != 1.0f)
                    for (int64_t d = d0; d < Dh; d++)
                        ar[d] *= corr;
                int64_t jj = 0;
                for (; jj + 4 <= nbr; jj += 4) {
                    const float p0 = s[jj], p1 = s[jj + 1], p2 = s[jj + 2], p3 = s[jj + 3];
                    const float *v0 = vb + (j0 + jj) * kld, *v1 = v0 + kld, *v2 = v1 + kld;
                    const float *v3 = v2 + kld;
                    for (int64_t d = d0; d < Dh; d++)
                        ar[d] += (p0 * v0[d] + p1 * v1[d]) + (p2 * v2[d] + p3 * v3[d]);
                }
                for (; jj < nbr; jj++) {
                    const float pj = s[jj];
                    const float *vj = vb + (j0 + jj) * kld;
                    for (int64_t d = d0; d < Dh; d++)
                        ar[d] += pj * vj[d];
                }
            }
        }
    }
    for (int64_t r = 0; r < R; r++) {
        const float inv = nk[r] > 0 ? 1.0f / l[r] : 0.0f;
        for (int64_t d = 0; d < Dh; d++)
            orow[r][d] = acc[r * Dh + d] * inv;
    }
}

/*
 * Attention against the KV cache. The tokens are grouped by slot (a counting sort of the packing
 * order) and each slot's tokens cut into tiles of up to KV_TILE_ROWS / rep tokens; one OpenMP
 * work item is a (tile, kv head) pair, whose rep query heads and tokens share every key and value
 * row they read: a prefill tile reuses each transposed K block for up to 64 query rows, a decode
 * step (one token per slot) is one item per (slot, kv head).
 */
static void cpu_attention_kv(sl_backend_t *be, const sl_tensor_t *q, const sl_tensor_t *kc,
                             const sl_tensor_t *vc, const sl_tensor_t *slot, const sl_tensor_t *pos,
                             const sl_tensor_t *kv_len, float scale, int causal, sl_tensor_t *out,
                             int64_t tokens, int64_t slots, int64_t cache_len, int64_t heads,
                             int64_t kv_heads, int64_t head_dim)
{
    const int32_t *sl = slot->data, *ps = pos->data, *kl = kv_len->data;
    const int64_t rep = heads / kv_heads, kld = kv_heads * head_dim, Dh = head_dim;
    const int64_t tile_tok = rep < KV_TILE_ROWS ? KV_TILE_ROWS / rep : 1;
    const int64_t R = tile_tok * rep; /* query rows of a full tile */
    /* tokens by slot: first[s] .. first[s+1]-1 index order[] */
    int64_t *first = sl_xcalloc((size_t)slots + 1, sizeof *first);
    int64_t *order = sl_xmalloc((size_t)tokens * sizeof *order);
    int64_t *tiles = sl_xmalloc((size_t)tokens * 2 * sizeof *tiles); /* (start, count) */
    for (int64_t t = 0; t < tokens; t++)
        first[sl[t] + 1]++;
    for (int64_t s = 0; s < slots; s++)
        first[s + 1] += first[s];
    int64_t *fill = sl_xmalloc((size_t)slots * sizeof *fill);
    memcpy(fill, first, (size_t)slots * sizeof *fill);
    for (int64_t t = 0; t < tokens; t++)
        order[fill[sl[t]]++] = t;
    free(fill);
    int64_t ntiles = 0;
    for (int64_t s = 0; s < slots; s++)
        for (int64_t i = first[s]; i < first[s + 1]; i += tile_tok) {
            tiles[2 * ntiles] = i;
            tiles[2 * ntiles + 1] = first[s + 1] - i < tile_tok ? first[s + 1] - i : tile_tok;
            ntiles++;
        }
#pragma omp parallel
    {
        const float **qrow = sl_xmalloc((size_t)R * sizeof *qrow);
        float **orow = sl_xmalloc((size_t)R * sizeof *orow);
        int32_t *nk = sl_xmalloc((size_t)R * sizeof *nk);
        float *buf =
            sl_xmalloc((size_t)(2 * R * Dh + 2 * R + Dh * KV_BLOCK + KV_BLOCK) * sizeof(float));
        float *qs = buf, *acc = qs + R * Dh, *m = acc + R * Dh, *l = m + R;
        float *kt = l + R, *s = kt + Dh * KV_BLOCK;
        /* the score loops read whole KV_LANES of kt past a block's last key (and drop those
         * lanes): values, never uninitialised memory */
        memset(kt, 0, (size_t)(Dh * KV_BLOCK) * sizeof *kt);
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < ntiles * kv_heads; it++) {
            const int64_t ti = it / kv_heads, g = it % kv_heads;
            const int64_t start = tiles[2 * ti], count = tiles[2 * ti + 1];
            const int64_t sidx = sl[order[start]];
            const int64_t len = kl[sidx] < 0 ? 0 : (kl[sidx] > cache_len ? cache_len : kl[sidx]);
            int64_t r = 0;
            for (int64_t i = 0; i < count; i++) {
                const int64_t t = order[start + i];
                int64_t n = len;
                if (causal && (int64_t)ps[t] + 1 < n)
                    n = ps[t] < 0 ? 0 : (int64_t)ps[t] + 1;
                for (int64_t hr = 0; hr < rep; hr++, r++) {
                    const int64_t h = g * rep + hr;
                    qrow[r] = (const float *)q->data + (t * heads + h) * Dh;
                    orow[r] = (float *)out->data + (t * heads + h) * Dh;
                    nk[r] = (int32_t)n;
                }
            }
            const int64_t base = sidx * cache_len * kld + g * Dh;
            attn_kv_tile(r, qrow, orow, nk, (const float *)kc->data + base,
                         (const float *)vc->data + base, kld, Dh, scale, qs, acc, m, l, kt, s);
        }
        free(buf);
        free(nk);
        free(orow);
        free(qrow);
    }
    free(tiles);
    free(order);
    free(first);
}

static void cpu_gather_rows(sl_backend_t *be, const sl_tensor_t *src, const sl_tensor_t *idx,
                            sl_tensor_t *out, int64_t m, int64_t dim)
{
    const int32_t *ix = idx->data;
#pragma omp parallel for schedule(static) if (m * dim >= SL_PAR_MIN)
    for (int64_t i = 0; i < m; i++)
        memcpy((float *)out->data + i * dim, (const float *)src->data + (int64_t)ix[i] * dim,
               (size_t)dim * sizeof(float));
}

/* f32 sums in token order, then a division, as the CUDA kernel (the same bits). */
static void cpu_pool_packed(sl_backend_t *be, const sl_tensor_t *x, const sl_tensor_t *offsets,
                            sl_pool_t mode, sl_tensor_t *out, int64_t batch, int64_t dim)
{
    const int32_t *off = offsets->data;
    const float *xp = x->data; /* [T, dim] */
#pragma omp parallel for schedule(static) if (batch * dim * 8 >= SL_PAR_MIN)
    for (int64_t b = 0; b < batch; b++) {
        const int64_t t0 = off[b], n = off[b + 1] - off[b];
        float *o = (float *)out->data + b * dim;
        if (mode == SL_POOL_CLS) {
            if (n > 0)
                memcpy(o, xp + t0 * dim, (size_t)dim * sizeof(float));
            else
                memset(o, 0, (size_t)dim * sizeof(float));
            continue;
        }
        for (int64_t j = 0; j < dim; j++)
            o[j] = 0.0f;
        for (int64_t t = t0; t < t0 + n; t++)
            for (int64_t j = 0; j < dim; j++)
                o[j] += xp[t * dim + j];
        if (n > 0)
            for (int64_t j = 0; j < dim; j++)
                o[j] /= (float)n;
    }
}

static void cpu_logsumexp_parts(sl_backend_t *be, const sl_tensor_t *logits, sl_tensor_t *rowmax,
                                sl_tensor_t *sumexp, int64_t rows, int64_t v)
{
#pragma omp parallel for schedule(static) if (rows * v >= SL_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *x = (const float *)logits->data + r * v;
        float mx = -INFINITY;
        for (int64_t j = 0; j < v; j++)
            mx = x[j] > mx ? x[j] : mx;
        /* Summed in double: over a vocabulary of ~10^5 terms, a float accumulator drops the
         * many tiny terms (each below half an ulp of the running sum) and biases the sum low
         * by ~1e-4, which shows directly in log-probabilities. */
        double sum = 0.0;
        if (mx != -INFINITY) /* a row of -Inf only (or no columns) sums to 0 */
            for (int64_t j = 0; j < v; j++)
                sum += (double)expf(x[j] - mx);
        ((float *)rowmax->data)[r] = mx;
        ((float *)sumexp->data)[r] = (float)sum;
    }
}

static void cpu_pick_logits(sl_backend_t *be, const sl_tensor_t *logits, const sl_tensor_t *target,
                            int64_t v0, sl_tensor_t *out, int64_t rows, int64_t v)
{
    const int32_t *tg = target->data;
    const float *x = logits->data;
    float *o = out->data;
#pragma omp parallel for schedule(static) if (rows * 64 >= SL_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t c = (int64_t)tg[r] - v0;
        o[r] = c >= 0 && c < v ? x[r * v + c] : 0.0f;
    }
}

typedef struct {
    uint32_t key; /* sl_order_key of the value */
    int32_t idx;
} topk_ent_t;

/* a comes before b in the output: a larger value, or an equal one at a lower index */
static inline int topk_before(topk_ent_t a, topk_ent_t b)
{
    return a.key > b.key || (a.key == b.key && a.idx < b.idx);
}

/* Restores the heap below node i: each node comes after (is worse than) its children, so the
 * root is the worst of the k kept. */
static void topk_sift(topk_ent_t *hp, int n, int i)
{
    for (;;) {
        int w = i;
        const int c1 = 2 * i + 1, c2 = 2 * i + 2;
        if (c1 < n && topk_before(hp[w], hp[c1]))
            w = c1;
        if (c2 < n && topk_before(hp[w], hp[c2]))
            w = c2;
        if (w == i)
            return;
        const topk_ent_t tmp = hp[i];
        hp[i] = hp[w];
        hp[w] = tmp;
        i = w;
    }
}

/* Per row: a heap of the k best so far, scanned in index order, so a later column replaces the
 * worst kept only with a strictly larger key (equal keys keep the lower index); then a heap sort
 * into output order. */
static void cpu_topk_rows(sl_backend_t *be, const sl_tensor_t *logits, int k, sl_tensor_t *vals,
                          sl_tensor_t *idx, int64_t rows, int64_t v)
{
#pragma omp parallel
    {
        topk_ent_t *hp = sl_xmalloc((size_t)k * sizeof *hp);
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            const float *x = (const float *)logits->data + r * v;
            for (int i = 0; i < k; i++) {
                hp[i].key = sl_order_key(x[i]);
                hp[i].idx = i;
            }
            for (int i = k / 2 - 1; i >= 0; i--)
                topk_sift(hp, k, i);
            for (int64_t j = k; j < v; j++) {
                const uint32_t key = sl_order_key(x[j]);
                if (key > hp[0].key) {
                    hp[0].key = key;
                    hp[0].idx = (int32_t)j;
                    topk_sift(hp, k, 0);
                }
            }
            float *ov = (float *)vals->data + r * k;
            int32_t *oi = (int32_t *)idx->data + r * k;
            for (int n = k; n > 0; n--) { /* the worst left goes last */
                oi[n - 1] = hp[0].idx;
                ov[n - 1] = x[hp[0].idx];
                hp[0] = hp[n - 1];
                topk_sift(hp, n - 1, 0);
            }
        }
        free(hp);
    }
}

/* "Key: <n> kB" from /proc/meminfo, in bytes; 0 when absent. */
static size_t meminfo_bytes(const char *key)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return 0;
    char line[256];
    size_t klen = strlen(key), bytes = 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, klen) && line[klen] == ':') {
            bytes = (size_t)strtoull(line + klen + 1, NULL, 10) * 1024;
            break;
        }
    fclose(f);
    return bytes;
}

/* A cgroup v2 memory file holding a byte count; 0 when absent or "max". */
static size_t cgroup_bytes(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char buf[64] = {0};
    size_t n = 0;
    if (fgets(buf, sizeof buf, f) && buf[0] >= '0' && buf[0] <= '9')
        n = (size_t)strtoull(buf, NULL, 10);
    fclose(f);
    return n;
}

/* MemAvailable, or less when this process's cgroup has a memory limit closer to its usage. */
static size_t cpu_free_bytes(sl_backend_t *be)
{
    size_t avail = meminfo_bytes("MemAvailable");
    if (avail == 0) /* no /proc: the free pages */
        avail = (size_t)sysconf(_SC_AVPHYS_PAGES) * (size_t)sysconf(_SC_PAGESIZE);
    const size_t limit = cgroup_bytes("/sys/fs/cgroup/memory.max");
    if (limit > 0) {
        const size_t used = cgroup_bytes("/sys/fs/cgroup/memory.current");
        const size_t left = used < limit ? limit - used : 0;
        avail = left < avail ? left : avail;
    }
    return avail;
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
    .repack = cpu_repack,
    .matmul = cpu_matmul,
    .linear_q = cpu_linear_q,
    .add_bias = cpu_add_bias,
    .activation = cpu_activation,
    .softmax = cpu_softmax,
    .cast = cpu_cast,
    .standardize = cpu_standardize,
    .add = cpu_add,
    .layernorm = cpu_layernorm,
    .embedding = cpu_embedding,
    .l2_normalize = cpu_l2_normalize,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .swiglu = cpu_swiglu,
    .kv_write = cpu_kv_write,
    .attention_kv = cpu_attention_kv,
    .gather_rows = cpu_gather_rows,
    .pool_packed = cpu_pool_packed,
    .logsumexp_parts = cpu_logsumexp_parts,
    .pick_logits = cpu_pick_logits,
    .topk_rows = cpu_topk_rows,
    .free_bytes = cpu_free_bytes,
};

sl_backend_t *sl_cpu_backend_create(int threads, sl_error_t *err)
{
    cpu_backend_t *b = sl_xcalloc(1, sizeof *b);
    b->base.ops = &cpu_ops;
    b->base.kind = SL_BACKEND_CPU;
    b->base.bulk_rows = SL_BULK_ALL;
    if (threads > 0)
        omp_set_num_threads(threads);
    b->threads = threads > 0 ? threads : omp_get_max_threads();
    b->qform = sl_qform_best();
#ifdef SL_BLAS_BLIS
    /* One thread per BLIS call: sgemm_blocks spreads a GEMM's row blocks over the OpenMP
     * threads itself, so BLIS's threads never run beside (or inside) shardline's. */
    bli_thread_set_num_threads(1);
    snprintf(b->desc, sizeof b->desc, "cpu (%d thread%s, BLIS %s %s%s, int8 dot %s)", b->threads,
             b->threads == 1 ? "" : "s", bli_info_get_version_str(),
             bli_arch_string(bli_arch_query_id()),
             bli_info_get_enable_openmp() ? " OpenMP" : " (not the OpenMP build)",
             sl_qform_name(b->qform));
#else
    if (threads > 0)
        openblas_set_num_threads(threads);
    snprintf(b->desc, sizeof b->desc, "cpu (%d thread%s, %s, int8 dot %s)", b->threads,
             b->threads == 1 ? "" : "s", openblas_get_config(), sl_qform_name(b->qform));
#endif
    return &b->base;
}
