/*
 * test_cuda_ops.c — every op of the CUDA backend against the CPU backend.
 *
 * Each case builds the same random inputs (the same bits) on both backends, runs the op through
 * the public API of kernels/backend.h on each, copies both results back and compares them with a
 * normalised mean squared error, NMSE = sum (gpu - cpu)^2 / sum cpu^2, against a tolerance set by
 * the least precise dtype involved (f32 1e-9, f16 1e-5, bf16 1e-4: rounding-level differences
 * pass, a wrong index or transpose gives NMSE ~ 1). Casts must agree exactly (NMSE 0), copies
 * and zeroing bit for bit, embedding gathers exactly. Linear layers with block-quantized weights
 * (Q8_0, Q4_0, Q4_1) and gathers from quantized tables are compared the same way. The transformer
 * ops are run on the shapes that matter for them, e.g. rows with a large offset (layer norm). The
 * packed-token ops likewise: slots
 * interleaved, a slot without keys, decode steps, head dims up to 256, top-k with many ties
 * (indices bit for bit). Sizes are odd (37 x 53 x 71 ...) so that no kernel relies on multiples of
 * a block, plus a few large ones (more rows than a launch has blocks, more elements than a launch
 * has threads). Set SL_TEST_HUGE=1 to also run an op over more than 2^31 elements (~17 GB of host
 * memory, ~4.3 GB of GPU memory).
 *
 * One line per case. Without a GPU it prints "skipped: no GPU" and exits 77 (ctest: SKIPPED).
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/elementwise.h"
#include "sl_test.h"

static sl_backend_t *g_cpu, *g_gpu;

static const sl_dtype_t k_float_dtypes[3] = {SL_F32, SL_F16, SL_BF16};

/* ---- random data and dtype encoding ---------------------------------------------------------- */

static uint64_t g_rng = 0x243f6a8885a308d3ull;

static uint64_t rng_next(void) /* xorshift64* */
{
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return g_rng * 0x2545f4914f6cdd1dull;
}

/* Uniform in [lo, hi] (hi itself only through rounding to float). */
static float rnd(float lo, float hi)
{
    double u = (double)(rng_next() >> 11) * 0x1.0p-53; /* [0, 1) */
    return (float)(lo + (hi - lo) * u);
}

static void encode(float v, sl_dtype_t dt, void *raw, int64_t i)
{
    switch (dt) {
    case SL_F32: ((float *)raw)[i] = v; break;
    case SL_F16: ((uint16_t *)raw)[i] = sl_f32_to_f16(v); break;
    case SL_BF16: ((uint16_t *)raw)[i] = sl_f32_to_bf16(v); break;
    default: fprintf(stderr, "encode: unsupported dtype\n"); exit(1);
    }
}

static double decode(const void *raw, sl_dtype_t dt, int64_t i)
{
    switch (dt) {
    case SL_F32: return ((const float *)raw)[i];
    case SL_F16: return sl_f16_to_f32(((const uint16_t *)raw)[i]);
    case SL_BF16: return sl_bf16_to_f32(((const uint16_t *)raw)[i]);
    default: fprintf(stderr, "decode: unsupported dtype\n"); exit(1);
    }
}

/* Least precise of two float dtypes. */
static sl_dtype_t coarser(sl_dtype_t a, sl_dtype_t b)
{
    if (a == SL_BF16 || b == SL_BF16)
        return SL_BF16;
    if (a == SL_F16 || b == SL_F16)
        return SL_F16;
    return SL_F32;
}

/* "f16->f32" */
static const char *dtypes_name(char *buf, size_t len, sl_dtype_t from, sl_dtype_t to)
{
    snprintf(buf, len, "%s->%s", sl_dtype_name(from), sl_dtype_name(to));
    return buf;
}

static double tol_for(sl_dtype_t dt)
{
    switch (dt) {
    case SL_F16: return 1e-5;
    case SL_BF16: return 1e-4;
    default: return 1e-9;
    }
}

/* ---- a tensor on both backends --------------------------------------------------------------- */

typedef struct {
    sl_tensor_t *cpu, *gpu;
} pair_t;

/* Same shape, dtype and contents (uniform in [lo, hi), rounded to dt) on both backends. */
static pair_t pair_new(sl_dtype_t dt, int ndim, const int64_t *shape, float lo, float hi)
{
    pair_t p;
    p.cpu = sl_tensor_new(g_cpu, dt, ndim, shape);
    p.gpu = sl_tensor_new(g_gpu, dt, ndim, shape);
    int64_t n = sl_tensor_numel(p.cpu);
    size_t bytes = sl_tensor_bytes(p.cpu);
    void *raw = malloc(bytes ? bytes : 1);
    if (!raw) {
        fprintf(stderr, "out of host memory\n");
        exit(1);
    }
    for (int64_t i = 0; i < n; i++)
        encode(rnd(lo, hi), dt, raw, i);
    sl_copy_h2d(p.cpu, raw, bytes);
    sl_copy_h2d(p.gpu, raw, bytes);
    free(raw);
    return p;
}

static pair_t pair_new2(sl_dtype_t dt, int64_t d0, int64_t d1, float lo, float hi)
{
    int64_t shape[2] = {d0, d1};
    return pair_new(dt, 2, shape, lo, hi);
}

static pair_t pair_new1(sl_dtype_t dt, int64_t d0, float lo, float hi)
{
    return pair_new(dt, 1, &d0, lo, hi);
}

static void pair_free(pair_t *p)
{
    sl_tensor_free(p->cpu);
    sl_tensor_free(p->gpu);
    p->cpu = p->gpu = NULL;
}

/* NMSE of the GPU tensor against the CPU tensor; +Inf if either holds a NaN or an Inf. */
static double pair_nmse(const pair_t *p)
{
    size_t bytes = sl_tensor_bytes(p->cpu);
    int64_t n = sl_tensor_numel(p->cpu);
    sl_dtype_t dt = p->cpu->dtype;
    void *c = malloc(bytes ? bytes : 1), *g = malloc(bytes ? bytes : 1);
    if (!c || !g) {
        fprintf(stderr, "out of host memory\n");
        exit(1);
    }
    sl_copy_d2h(c, p->cpu, bytes);
    sl_copy_d2h(g, p->gpu, bytes); /* waits for the GPU work queued before it */
    double num = 0.0, den = 0.0;
    int finite = 1;
    for (int64_t i = 0; i < n; i++) {
        double a = decode(g, dt, i), b = decode(c, dt, i);
        if (!isfinite(a) || !isfinite(b))
            finite = 0;
        num += (a - b) * (a - b);
        den += b * b;
    }
    free(c);
    free(g);
    if (!finite)
        return INFINITY;
    return den > 0.0 ? num / den : num; /* all-zero reference: absolute error */
}

/* One line per case: name, NMSE, tolerance, verdict; counts a CHECK. */
__attribute__((format(printf, 3, 4))) static void report(double nmse, double tol, const char *fmt,
                                                         ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    int ok = nmse <= tol; /* false for NaN */
    printf("%-68s nmse %9.3e  tol %7.1e  %s\n", name, nmse, tol, ok ? "ok" : "FAIL");
    CHECKF(ok, "%s: nmse %.3e > tol %.1e", name, nmse, tol);
}

/* One line for a case checked bit for bit; counts a CHECK. */
__attribute__((format(printf, 2, 3))) static void report_exact(int ok, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    printf("%-68s %-28s %s\n", name, "bit-exact", ok ? "ok" : "FAIL");
    CHECKF(ok, "%s: not bit-exact", name);
}

/* ---- copies and zeroing ---------------------------------------------------------------------- */

static void test_copies(void)
{
    const int64_t n = 250001; /* f32 elements: 1,000,004 bytes */
    const size_t bytes = (size_t)n * 4;
    unsigned char *src = malloc(bytes), *back = malloc(bytes), *src2 = malloc(bytes);
    if (!src || !back || !src2) {
        fprintf(stderr, "out of host memory\n");
        exit(1);
    }
    for (size_t i = 0; i < bytes; i++) {
        src[i] = (unsigned char)(rng_next() >> 56);
        src2[i] = (unsigned char)(rng_next() >> 56);
    }
    sl_tensor_t *t = sl_tensor_new1(g_gpu, SL_F32, n);

    /* Full round trip. */
    sl_copy_h2d(t, src, bytes);
    memset(back, 0, bytes);
    sl_copy_d2h(back, t, bytes);
    report_exact(memcmp(src, back, bytes) == 0, "h2d/d2h round trip of 1000004 bytes");

    /* Partial h2d of an odd byte count leaves the rest untouched. */
    const size_t part = 999;
    sl_copy_h2d(t, src2, part);
    sl_copy_d2h(back, t, bytes);
    report_exact(memcmp(back, src2, part) == 0 &&
                     memcmp(back + part, src + part, bytes - part) == 0,
                 "h2d of the first 999 bytes, d2h of all");

    /* Partial d2h writes only the bytes asked for. */
    memset(back, 0xab, bytes);
    sl_copy_d2h(back, t, 13);
    report_exact(memcmp(back, src2, 13) == 0 && back[13] == 0xab && back[bytes - 1] == 0xab,
                 "d2h of the first 13 bytes");

    /* sl_tensor_zero on a whole tensor and on a view of its first rows. */
    for (int d = 0; d < 3; d++) {
        sl_dtype_t dt = k_float_dtypes[d];
        pair_t z = pair_new2(dt, 101, 37, 1.0f, 2.0f);
        sl_tensor_t vc = sl_tensor_rows(z.cpu, 7), vg = sl_tensor_rows(z.gpu, 7);
        sl_tensor_zero(&vc);
        sl_tensor_zero(&vg);
        size_t zb = sl_tensor_bytes(z.gpu), vb = sl_tensor_bytes(&vg);
        unsigned char *hg = malloc(zb), *hc = malloc(zb);
        if (!hg || !hc) {
            fprintf(stderr, "out of host memory\n");
            exit(1);
        }
        sl_copy_d2h(hg, z.gpu, zb);
        sl_copy_d2h(hc, z.cpu, zb);
        int zero = 1;
        for (size_t i = 0; i < vb; i++)
            zero &= hg[i] == 0;
        /* Rows after the view keep their (non-zero) contents, identical to the CPU's. */
        int same = memcmp(hg, hc, zb) == 0 && decode(hg, dt, vb / sl_dtype_size(dt)) >= 1.0;
        report_exact(zero && same, "sl_tensor_zero %-4s first 7 of 101x37 rows (a view)",
                     sl_dtype_name(dt));

        sl_tensor_zero(z.gpu);
        sl_copy_d2h(hg, z.gpu, zb);
        zero = 1;
        for (size_t i = 0; i < zb; i++)
            zero &= hg[i] == 0;
        report_exact(zero, "sl_tensor_zero %-4s 101x37", sl_dtype_name(dt));
        free(hg);
        free(hc);
        pair_free(&z);
    }

    sl_tensor_free(t);
    free(src);
    free(src2);
    free(back);
}

/* ---- matmul and linear ----------------------------------------------------------------------- */

/* bias_kind: 0 none, 1 f32, 2 C's dtype. */
static void matmul_case(int64_t m, int64_t n, int64_t k, int ta, int tb, sl_dtype_t in_dt,
                        sl_dtype_t out_dt, int bias_kind, float alpha, float beta)
{
    pair_t a = ta ? pair_new2(in_dt, k, m, -1.0f, 1.0f) : pair_new2(in_dt, m, k, -1.0f, 1.0f);
    pair_t b = tb ? pair_new2(in_dt, n, k, -1.0f, 1.0f) : pair_new2(in_dt, k, n, -1.0f, 1.0f);
    pair_t c = pair_new2(out_dt, m, n, -1.0f, 1.0f);
    pair_t bias = {NULL, NULL};
    sl_dtype_t bias_dt = bias_kind == 1 ? SL_F32 : out_dt;
    if (bias_kind)
        bias = pair_new1(bias_dt, n, -1.0f, 1.0f);

    sl_matmul(a.cpu, ta, b.cpu, tb, alpha, beta, bias.cpu, c.cpu);
    sl_matmul(a.gpu, ta, b.gpu, tb, alpha, beta, bias.gpu, c.gpu);

    char dts[16];
    report(pair_nmse(&c), tol_for(coarser(in_dt, out_dt)),
           "sl_matmul %lldx%lldx%lld %s %s %-10s bias %-4s alpha %g beta %g", (long long)m,
           (long long)n, (long long)k, ta ? "At" : "A", tb ? "Bt" : "B",
           dtypes_name(dts, sizeof dts, in_dt, out_dt), bias_kind ? sl_dtype_name(bias_dt) : "none",
           alpha, beta);
    pair_free(&a);
    pair_free(&b);
    pair_free(&c);
    if (bias_kind)
        pair_free(&bias);
}

/* Every input dtype with both output dtypes it allows (f32 and its own). */
static void matmul_sweep(int64_t m, int64_t n, int64_t k, int all_bias, float alpha, float beta,
                         int one_bias_kind)
{
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int d = 0; d < 3; d++)
                for (int o = 0; o < 2; o++) {
                    sl_dtype_t in_dt = k_float_dtypes[d], out_dt = o ? in_dt : SL_F32;
                    if (o && in_dt == SL_F32)
                        continue;
                    if (!all_bias) {
                        matmul_case(m, n, k, ta, tb, in_dt, out_dt, one_bias_kind, alpha, beta);
                        continue;
                    }
                    for (int bk = 0; bk < 3; bk++) {
                        if (bk == 2 && out_dt == SL_F32)
                            continue; /* same as bk == 1 */
                        matmul_case(m, n, k, ta, tb, in_dt, out_dt, bk, 1.0f, 0.0f);
                        matmul_case(m, n, k, ta, tb, in_dt, out_dt, bk, alpha, beta);
                    }
                }
}

static void test_matmul(void)
{
    matmul_sweep(37, 53, 71, 1, -0.75f, 0.5f, 0);  /* every option */
    matmul_sweep(1, 7, 3, 0, 2.0f, 0.0f, 1);       /* a single row, tiny k */
    matmul_sweep(300, 257, 520, 0, 1.0f, 1.0f, 2); /* larger, accumulate into C */
    matmul_sweep(5, 9, 0, 0, 1.0f, 0.5f, 1);       /* k = 0: C = beta C + bias */
    matmul_sweep(5, 9, 0, 0, 1.0f, 0.0f, 0);       /* k = 0, beta = 0: C = 0 */
    /* Long k (split-K reductions) and a linear-layer-sized product. */
    for (int d = 0; d < 3; d++) {
        sl_dtype_t dt = k_float_dtypes[d];
        matmul_case(64, 64, 8192, 0, 1, dt, dt, 1, 1.0f, 0.0f);
        matmul_case(64, 64, 8192, 0, 0, dt, SL_F32, 0, 0.5f, 0.25f);
        matmul_case(512, 1536, 384, 0, 1, dt, dt, 2, 1.0f, 0.0f);
    }
}

static void test_linear(void)
{
    const int64_t m = 37, n = 53, k = 71;
    for (int d = 0; d < 3; d++)
        for (int o = 0; o < 2; o++)
            for (int with_bias = 0; with_bias < 2; with_bias++) {
                sl_dtype_t in_dt = k_float_dtypes[d], out_dt = o ? in_dt : SL_F32;
                if (o && in_dt == SL_F32)
                    continue;
                pair_t x = pair_new2(in_dt, m, k, -1.0f, 1.0f);
                pair_t w = pair_new2(in_dt, n, k, -1.0f, 1.0f);
                pair_t y = pair_new2(out_dt, m, n, -1.0f, 1.0f);
                pair_t bias = {NULL, NULL};
                if (with_bias)
                    bias = pair_new1(SL_F32, n, -1.0f, 1.0f);
                sl_linear(x.cpu, w.cpu, bias.cpu, y.cpu);
                sl_linear(x.gpu, w.gpu, bias.gpu, y.gpu);
                char dts[16];
                report(pair_nmse(&y), tol_for(coarser(in_dt, out_dt)),
                       "sl_linear %lldx%lldx%lld %-10s bias %s", (long long)m, (long long)n,
                       (long long)k, dtypes_name(dts, sizeof dts, in_dt, out_dt),
                       with_bias ? "f32" : "none");
                pair_free(&x);
                pair_free(&w);
                pair_free(&y);
                if (with_bias)
                    pair_free(&bias);
            }
}

/* Random Q8_0/Q4_0/Q4_1 blocks for [d0, d1] (d1 a multiple of 32) on both backends: random
 * quants, f16 scales in [0.002, 0.022), Q4_1 minimums in [-0.1, 0]. */
static pair_t pair_quant(sl_dtype_t dt, int64_t d0, int64_t d1)
{
    pair_t p = {sl_tensor_new2(g_cpu, dt, d0, d1), sl_tensor_new2(g_gpu, dt, d0, d1)};
    size_t bytes = sl_tensor_bytes(p.cpu), bb = sl_dtype_size(dt);
    uint8_t *raw = malloc(bytes);
    if (!raw) {
        fprintf(stderr, "out of host memory\n");
        exit(1);
    }
    for (size_t i = 0; i < bytes; i++)
        raw[i] = (uint8_t)(rng_next() >> 56);
    for (size_t b = 0; b < bytes / bb; b++) {
        uint16_t d = sl_f32_to_f16(rnd(0.002f, 0.022f)), m = sl_f32_to_f16(rnd(-0.1f, 0.0f));
        memcpy(raw + b * bb, &d, 2);
        if (dt == SL_Q4_1)
            memcpy(raw + b * bb + 2, &m, 2);
    }
    sl_copy_h2d(p.cpu, raw, bytes);
    sl_copy_h2d(p.gpu, raw, bytes);
    free(raw);
    return p;
}

/* Quantized weights: the CUDA kernel dequantises them and keeps the activations f32; the CPU
 * quantizes the activations to int8 per 32-block below 64 rows (NMSE ~1e-5 from that rounding;
 * tolerance 1e-4) and multiplies dequantised f32 tiles in BLIS from 64 rows (f32 tolerance).
 * Embedding rows of a quantized table are dequantised on both (1e-12: a fused multiply-add on the
 * GPU may round Q4_1's d * q + m once instead of twice). */
static pair_t pair_i32(const int32_t *vals, int64_t n);

static void test_linear_q(void)
{
    const sl_dtype_t types[3] = {SL_Q8_0, SL_Q4_0, SL_Q4_1};
    const int64_t ms[3] = {1, 37, 100}, n = 53, k = 32 * 7;
    for (int t = 0; t < 3; t++) {
        pair_t w = pair_quant(types[t], n, k);
        for (int mi = 0; mi < 3; mi++)
            for (int with_bias = 0; with_bias < 2; with_bias++) {
                const int64_t m = ms[mi];
                pair_t x = pair_new2(SL_F32, m, k, -1.0f, 1.0f);
                pair_t y = pair_new2(SL_F32, m, n, -1.0f, 1.0f);
                pair_t bias = {NULL, NULL};
                if (with_bias)
                    bias = pair_new1(SL_F32, n, -1.0f, 1.0f);
                sl_linear(x.cpu, w.cpu, bias.cpu, y.cpu);
                sl_linear(x.gpu, w.gpu, bias.gpu, y.gpu);
                report(pair_nmse(&y), m < 64 ? 1e-4 : tol_for(SL_F32),
                       "sl_linear %lldx%lldx%lld %s weight, bias %s", (long long)m, (long long)n,
                       (long long)k, sl_dtype_name(types[t]), with_bias ? "f32" : "none");
                pair_free(&x);
                pair_free(&y);
                if (with_bias)
                    pair_free(&bias);
            }
        if (types[t] == SL_Q8_0) {
            /* W8A8: static ranges per 32 input columns (block 2's rows exceed theirs and take
             * their own max, block 5 has none):
             * both backends round x to the same grid (the CPU's block without a range takes its
             * own max per row, the GPU's stays f32, within the same 1e-4) */
            float r[7] = {1.0f, 0.9f, 0.3f, 1.0f, 2.0f, 0.0f, 1.0f};
            pair_t sc = pair_new1(SL_F32, k / 32, 0.0f, 1.0f);
            sl_copy_h2d(sc.cpu, r, sizeof r);
            sl_copy_h2d(sc.gpu, r, sizeof r);
            w.cpu->act_scales = sc.cpu; /* freed with the weights */
            w.gpu->act_scales = sc.gpu;
            for (int mi = 0; mi < 3; mi++) {
                pair_t x = pair_new2(SL_F32, ms[mi], k, -1.0f, 1.0f);
                pair_t y = pair_new2(SL_F32, ms[mi], n, -1.0f, 1.0f);
                sl_linear(x.cpu, w.cpu, NULL, y.cpu);
                sl_linear(x.gpu, w.gpu, NULL, y.gpu);
                report(pair_nmse(&y), 1e-4, "sl_linear %lldx%lldx%lld q8_0 weight, static ranges",
                       (long long)ms[mi], (long long)n, (long long)k);
                pair_free(&x);
                pair_free(&y);
            }
        }
        int32_t ids[5] = {0, 52, 7, 7, 31};
        pair_t id = pair_i32(ids, 5), out = pair_new2(SL_F32, 5, k, -1.0f, 1.0f);
        sl_embedding(w.cpu, id.cpu, out.cpu);
        sl_embedding(w.gpu, id.gpu, out.gpu);
        report(pair_nmse(&out), 1e-12, "sl_embedding %s table %lldx%lld, 5 ids",
               sl_dtype_name(types[t]), (long long)n, (long long)k);
        pair_free(&id);
        pair_free(&out);
        pair_free(&w);
    }
}

/* ---- elementwise and row ops ----------------------------------------------------------------- */

static void test_add_bias(void)
{
    const int64_t shapes[2][2] = {{37, 53}, {1001, 129}};
    for (int s = 0; s < 2; s++)
        for (int d = 0; d < 3; d++)
            for (int same = 0; same < 2; same++) {
                sl_dtype_t dt = k_float_dtypes[d], bias_dt = same ? dt : SL_F32;
                if (same && dt == SL_F32)
                    continue;
                int64_t rows = shapes[s][0], cols = shapes[s][1];
                pair_t x = pair_new2(dt, rows, cols, -2.0f, 2.0f);
                pair_t bias = pair_new1(bias_dt, cols, -1.0f, 1.0f);
                sl_add_bias(x.cpu, bias.cpu);
                sl_add_bias(x.gpu, bias.gpu);
                report(pair_nmse(&x), tol_for(dt), "sl_add_bias %lldx%lld %-4s bias %s",
                       (long long)rows, (long long)cols, sl_dtype_name(dt), sl_dtype_name(bias_dt));
                pair_free(&x);
                pair_free(&bias);
            }
}

static void test_activation(void)
{
    const int64_t shape[3] = {3, 37, 53};
    for (int act = SL_ACT_NONE; act <= SL_ACT_SIGMOID; act++)
        for (int d = 0; d < 3; d++) {
            sl_dtype_t dt = k_float_dtypes[d];
            pair_t x = pair_new(dt, 3, shape, -6.0f, 6.0f);
            sl_activation(x.cpu, (sl_act_t)act);
            sl_activation(x.gpu, (sl_act_t)act);
            report(pair_nmse(&x), tol_for(dt), "sl_activation %-7s %-4s 3x37x53",
                   sl_act_name((sl_act_t)act), sl_dtype_name(dt));
            pair_free(&x);
        }
    /* More elements than one launch has threads (65536 blocks x 256): the grid-stride loop. */
    const int64_t big = ((int64_t)1 << 24) + 12345;
    pair_t x = pair_new1(SL_F32, big, -6.0f, 6.0f);
    sl_activation(x.cpu, SL_ACT_GELU);
    sl_activation(x.gpu, SL_ACT_GELU);
    report(pair_nmse(&x), tol_for(SL_F32), "sl_activation gelu    f32  %lld", (long long)big);
    pair_free(&x);
    /* NaN in, NaN out on the GPU too (the per-element code is shared with the CPU): ReLU used
     * to map NaN to 0, turning NaN weights into finite answers. */
    for (int act = SL_ACT_RELU; act <= SL_ACT_SIGMOID; act++) {
        const float in[4] = {NAN, 1.5f, -2.0f, NAN};
        float out[4];
        sl_tensor_t *t = sl_tensor_new1(g_gpu, SL_F32, 4);
        sl_copy_h2d(t, in, sizeof in);
        sl_activation(t, (sl_act_t)act);
        sl_copy_d2h(out, t, sizeof out);
        report_exact(isnan(out[0]) && isnan(out[3]) && !isnan(out[1]) && !isnan(out[2]),
                     "sl_activation %-7s f32  NaN in, NaN out", sl_act_name((sl_act_t)act));
        sl_tensor_free(t);
    }
}

static void test_softmax(void)
{
    /* cols < 32, cols > 256 threads, rows > 65536 blocks, and large values (overflow without
     * the max subtraction: exp(90) is not a float). */
    const struct {
        int64_t rows, cols;
        float lo, hi;
    } cases[] = {
        {37, 53, -10.0f, 10.0f}, {3, 5000, -10.0f, 10.0f}, {70001, 3, -4.0f, 4.0f},
        {17, 1, -1.0f, 1.0f},    {29, 301, 70.0f, 90.0f},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int d = 0; d < 3; d++) {
            sl_dtype_t dt = k_float_dtypes[d];
            pair_t x = pair_new2(dt, cases[c].rows, cases[c].cols, cases[c].lo, cases[c].hi);
            sl_softmax(x.cpu);
            sl_softmax(x.gpu);
            report(pair_nmse(&x), tol_for(dt), "sl_softmax %-4s %lldx%lld values in [%g, %g)",
                   sl_dtype_name(dt), (long long)cases[c].rows, (long long)cases[c].cols,
                   cases[c].lo, cases[c].hi);
            pair_free(&x);
        }
}

static void test_cast(void)
{
    /* Normal values, and tiny ones (f16 subnormals, below 6.1e-5). */
    const float ranges[2][2] = {{-4.0f, 4.0f}, {-1e-5f, 1e-5f}};
    for (int r = 0; r < 2; r++)
        for (int s = 0; s < 3; s++)
            for (int d = 0; d < 3; d++) {
                sl_dtype_t sdt = k_float_dtypes[s], ddt = k_float_dtypes[d];
                pair_t src = pair_new2(sdt, 1000, 1037, ranges[r][0], ranges[r][1]);
                pair_t dst = pair_new2(ddt, 1000, 1037, -1.0f, 1.0f);
                sl_cast(src.cpu, dst.cpu);
                sl_cast(src.gpu, dst.gpu);
                /* Both backends round to nearest even once: the same bits, NMSE 0. */
                char dts[16];
                report(pair_nmse(&dst), 0.0, "sl_cast %-10s 1000x1037 values in [%g, %g)",
                       dtypes_name(dts, sizeof dts, sdt, ddt), ranges[r][0], ranges[r][1]);
                pair_free(&src);
                pair_free(&dst);
            }
}

static void test_standardize(void)
{
    const int64_t shapes[2][2] = {{999, 37}, {70001, 5}};
    for (int s = 0; s < 2; s++) {
        int64_t rows = shapes[s][0], cols = shapes[s][1];
        pair_t x = pair_new2(SL_F32, rows, cols, -3.0f, 3.0f);
        pair_t mean = pair_new1(SL_F32, cols, -1.0f, 1.0f);
        pair_t std = pair_new1(SL_F32, cols, 0.5f, 2.0f);
        sl_standardize(x.cpu, mean.cpu, std.cpu);
        sl_standardize(x.gpu, mean.gpu, std.gpu);
        report(pair_nmse(&x), tol_for(SL_F32), "sl_standardize f32 %lldx%lld", (long long)rows,
               (long long)cols);
        pair_free(&x);
        pair_free(&mean);
        pair_free(&std);
    }
}

/* ---- transformer ops ------------------------------------------------------------------------- */

/* The same i32 values on both backends. */
static pair_t pair_i32(const int32_t *vals, int64_t n)
{
    pair_t p;
    p.cpu = sl_tensor_new1(g_cpu, SL_I32, n);
    p.gpu = sl_tensor_new1(g_gpu, SL_I32, n);
    sl_copy_h2d(p.cpu, vals, sizeof(int32_t) * (size_t)n);
    sl_copy_h2d(p.gpu, vals, sizeof(int32_t) * (size_t)n);
    return p;
}

static void test_add(void)
{
    const int64_t shape[3] = {3, 37, 53};
    pair_t x = pair_new(SL_F32, 3, shape, -2.0f, 2.0f), y = pair_new(SL_F32, 3, shape, -1.0f, 1.0f);
    sl_add(x.cpu, y.cpu);
    sl_add(x.gpu, y.gpu);
    report(pair_nmse(&x), tol_for(SL_F32), "sl_add f32 3x37x53");
    pair_free(&x);
    pair_free(&y);
    const int64_t big = ((int64_t)1 << 24) + 12345; /* more than one launch's threads */
    x = pair_new1(SL_F32, big, -2.0f, 2.0f);
    y = pair_new1(SL_F32, big, -1.0f, 1.0f);
    sl_add(x.cpu, y.cpu);
    sl_add(x.gpu, y.gpu);
    report(pair_nmse(&x), tol_for(SL_F32), "sl_add f32 %lld", (long long)big);
    pair_free(&x);
    pair_free(&y);
}

static void test_layernorm(void)
{
    /* BERT-sized rows, rows shorter than a warp, rows longer than a block, more rows than a
     * launch has blocks, and rows with a large offset and a small spread (mean 1000, spread
     * 2e-3: a plain f32 sum loses the variance). */
    const struct {
        int64_t rows, n;
        float lo, hi;
    } cases[] = {
        {37, 53, -3.0f, 3.0f},   {129, 768, -3.0f, 3.0f},        {3, 5000, -3.0f, 3.0f},
        {70001, 5, -3.0f, 3.0f}, {33, 768, 999.999f, 1000.001f}, {17, 1, -1.0f, 1.0f},
    };
    const float eps_list[2] = {1e-12f, 1e-5f};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int e = 0; e < 2; e++)
            for (int inplace = 0; inplace < 2; inplace++) {
                const int64_t rows = cases[c].rows, n = cases[c].n;
                pair_t x = pair_new2(SL_F32, rows, n, cases[c].lo, cases[c].hi);
                pair_t g = pair_new1(SL_F32, n, 0.5f, 1.5f), b = pair_new1(SL_F32, n, -1.0f, 1.0f);
                pair_t o = inplace ? x : pair_new2(SL_F32, rows, n, -1.0f, 1.0f);
                sl_layernorm(x.cpu, g.cpu, b.cpu, eps_list[e], o.cpu);
                sl_layernorm(x.gpu, g.gpu, b.gpu, eps_list[e], o.gpu);
                report(pair_nmse(&o), tol_for(SL_F32),
                       "sl_layernorm %lldx%lld values in [%g, %g) eps %g %s", (long long)rows,
                       (long long)n, cases[c].lo, cases[c].hi, eps_list[e],
                       inplace ? "in place" : "out of place");
                if (!inplace)
                    pair_free(&o);
                pair_free(&x);
                pair_free(&g);
                pair_free(&b);
            }
}

static void test_embedding(void)
{
    const int64_t V = 1000, D = 77, n = 513;
    int32_t *ids = malloc(sizeof(int32_t) * n);
    if (!ids) {
        fprintf(stderr, "out of host memory\n");
        exit(1);
    }
    for (int64_t i = 0; i < n; i++)
        ids[i] = (int32_t)(rng_next() % (uint64_t)V);
    ids[0] = 0;
    ids[n - 1] = (int32_t)(V - 1); /* both ends of the table */
    pair_t id = pair_i32(ids, n);
    for (int d = 0; d < 3; d++) {
        sl_dtype_t dt = k_float_dtypes[d];
        pair_t table = pair_new2(dt, V, D, -2.0f, 2.0f);
        pair_t out = pair_new2(SL_F32, n, D, -1.0f, 1.0f);
        sl_embedding(table.cpu, id.cpu, out.cpu);
        sl_embedding(table.gpu, id.gpu, out.gpu);
        /* a gather of exactly representable values: NMSE 0 */
        report(pair_nmse(&out), 0.0, "sl_embedding %-4s table %lldx%lld, %lld ids",
               sl_dtype_name(dt), (long long)V, (long long)D, (long long)n);
        pair_free(&table);
        pair_free(&out);
    }
    pair_free(&id);
    free(ids);
}

static void test_l2_normalize(void)
{
    const int64_t shapes[3][2] = {{37, 53}, {1001, 768}, {70001, 3}};
    for (int s = 0; s < 3; s++) {
        pair_t x = pair_new2(SL_F32, shapes[s][0], shapes[s][1], -3.0f, 3.0f);
        sl_l2_normalize(x.cpu);
        sl_l2_normalize(x.gpu);
        report(pair_nmse(&x), tol_for(SL_F32), "sl_l2_normalize %lldx%lld", (long long)shapes[s][0],
               (long long)shapes[s][1]);
        pair_free(&x);
    }
    /* a zero row, a tiny row (norm below 1e-12) and a normal one, compared bit for bit against
     * the zero row's expectation too */
    float h[3 * 40];
    for (int j = 0; j < 40; j++) {
        h[j] = 0.0f;
        h[40 + j] = 1e-15f * (float)(j - 20);
        h[80 + j] = rnd(-1.0f, 1.0f);
    }
    pair_t x = pair_new2(SL_F32, 3, 40, 0.0f, 1.0f);
    sl_copy_h2d(x.cpu, h, sizeof h);
    sl_copy_h2d(x.gpu, h, sizeof h);
    sl_l2_normalize(x.cpu);
    sl_l2_normalize(x.gpu);
    report(pair_nmse(&x), tol_for(SL_F32), "sl_l2_normalize zero, tiny and normal rows");
    float back[3 * 40];
    sl_copy_d2h(back, x.gpu, sizeof back);
    int zero = 1;
    for (int j = 0; j < 40; j++)
        zero &= back[j] == 0.0f;
    report_exact(zero, "sl_l2_normalize of a zero row stays zero");
    pair_free(&x);
}

/* ---- packed-token ops ------------------------------------------------------------------------ */

static void test_rmsnorm(void)
{
    const int64_t cases[4][2] = {{37, 53}, {129, 576}, {3, 5000}, {70001, 5}};
    for (int c = 0; c < 4; c++)
        for (int inplace = 0; inplace < 2; inplace++) {
            const int64_t rows = cases[c][0], n = cases[c][1];
            pair_t x = pair_new2(SL_F32, rows, n, -3.0f, 3.0f),
                   w = pair_new1(SL_F32, n, 0.5f, 1.5f);
            pair_t o = inplace ? x : pair_new2(SL_F32, rows, n, -1.0f, 1.0f);
            sl_rmsnorm(x.cpu, w.cpu, 1e-5f, o.cpu);
            sl_rmsnorm(x.gpu, w.gpu, 1e-5f, o.gpu);
            report(pair_nmse(&o), tol_for(SL_F32), "sl_rmsnorm %lldx%lld %s", (long long)rows,
                   (long long)n, inplace ? "in place" : "out of place");
            if (!inplace)
                pair_free(&o);
            pair_free(&x);
            pair_free(&w);
        }
}

static void test_rope(void)
{
    const struct {
        int64_t t, h, dh;
        float theta;
    } cases[] = {{5, 3, 10, 1e4f}, {37, 9, 64, 1e5f}, {300, 3, 64, 1e5f}, {7, 2, 128, 5e5f}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int64_t T = cases[c].t, H = cases[c].h, Dh = cases[c].dh;
        const int64_t xs[3] = {T, H, Dh};
        int32_t *pos = malloc(sizeof(int32_t) * (size_t)T);
        float inv[64];
        for (int64_t t = 0; t < T; t++)
            pos[t] = (int32_t)(rng_next() % 4097); /* up to 4096 */
        pos[0] = 4096;
        for (int64_t i = 0; i < Dh / 2; i++)
            inv[i] = 1.0f / powf(cases[c].theta, (float)(2 * i) / (float)Dh);
        pair_t x = pair_new(SL_F32, 3, xs, -2.0f, 2.0f), p = pair_i32(pos, T);
        pair_t f = pair_new1(SL_F32, Dh / 2, 0.0f, 1.0f);
        sl_copy_h2d(f.cpu, inv, sizeof(float) * (size_t)(Dh / 2));
        sl_copy_h2d(f.gpu, inv, sizeof(float) * (size_t)(Dh / 2));
        sl_rope(x.cpu, p.cpu, f.cpu);
        sl_rope(x.gpu, p.gpu, f.gpu);
        report(pair_nmse(&x), tol_for(SL_F32),
               "sl_rope T%lld H%lld Dh%lld theta %g, positions to 4096", (long long)T, (long long)H,
               (long long)Dh, cases[c].theta);
        pair_free(&x);
        pair_free(&p);
        pair_free(&f);
        free(pos);
    }
}

static void test_swiglu(void)
{
    const int64_t cases[2][2] = {{37, 53}, {1001, 1536}};
    for (int c = 0; c < 2; c++) {
        pair_t gu = pair_new2(SL_F32, cases[c][0], 2 * cases[c][1], -6.0f, 6.0f);
        pair_t o = pair_new2(SL_F32, cases[c][0], cases[c][1], -1.0f, 1.0f);
        sl_swiglu(gu.cpu, o.cpu);
        sl_swiglu(gu.gpu, o.gpu);
        report(pair_nmse(&o), tol_for(SL_F32), "sl_swiglu %lldx%lld", (long long)cases[c][0],
               (long long)cases[c][1]);
        pair_free(&gu);
        pair_free(&o);
    }
}

static void test_kv_write(void)
{
    const int64_t S = 5, C = 37, Hkv = 3, Dh = 16, T = 41;
    int32_t slot[41], pos[41];
    for (int64_t t = 0; t < T; t++) { /* distinct (slot, position) pairs */
        slot[t] = (int32_t)(t % S);
        pos[t] = (int32_t)((t * 7 + 3) % C);
    }
    const int64_t cs[4] = {S, C, Hkv, Dh}, ss[3] = {T, Hkv, Dh};
    pair_t cache = pair_new(SL_F32, 4, cs, -1.0f, 1.0f), src = pair_new(SL_F32, 3, ss, 2.0f, 3.0f);
    pair_t st = pair_i32(slot, T), pt = pair_i32(pos, T);
    sl_kv_write(cache.cpu, src.cpu, st.cpu, pt.cpu);
    sl_kv_write(cache.gpu, src.gpu, st.gpu, pt.gpu);
    report(pair_nmse(&cache), 0.0, "sl_kv_write %lld tokens into [%lld,%lld,%lld,%lld]",
           (long long)T, (long long)S, (long long)C, (long long)Hkv, (long long)Dh);
    pair_free(&cache);
    pair_free(&src);
    pair_free(&st);
    pair_free(&pt);
}

/* Tokens of several slots, interleaved: n[s] tokens of slot s at positions p0[s] .. */
static void attention_kv_case(const char *what, int64_t S, int64_t C, int64_t H, int64_t Hkv,
                              int64_t Dh, const int32_t *n, const int32_t *p0,
                              const int32_t *kv_len, int causal, float amp)
{
    int64_t T = 0;
    for (int64_t s = 0; s < S; s++)
        T += n[s];
    int32_t *slot = malloc(sizeof(int32_t) * (size_t)(T + 1));
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)(T + 1));
    int32_t *left = malloc(sizeof(int32_t) * (size_t)S);
    memcpy(left, n, sizeof(int32_t) * (size_t)S);
    for (int64_t t = 0; t < T;) /* round-robin over the slots with tokens left */
        for (int64_t s = 0; s < S; s++)
            if (left[s] > 0) {
                slot[t] = (int32_t)s;
                pos[t] = p0[s] + (n[s] - left[s]);
                left[s]--;
                t++;
            }
    const int64_t qs[3] = {T, H, Dh}, cs[4] = {S, C, Hkv, Dh};
    pair_t q = pair_new(SL_F32, 3, qs, -amp, amp), o = pair_new(SL_F32, 3, qs, -1.0f, 1.0f);
    pair_t k = pair_new(SL_F32, 4, cs, -amp, amp), v = pair_new(SL_F32, 4, cs, -1.0f, 1.0f);
    pair_t st = pair_i32(slot, T), pt = pair_i32(pos, T), lt = pair_i32(kv_len, S);
    const float scale = 1.0f / sqrtf((float)Dh);
    sl_attention_kv(q.cpu, k.cpu, v.cpu, st.cpu, pt.cpu, lt.cpu, scale, causal, o.cpu);
    sl_attention_kv(q.gpu, k.gpu, v.gpu, st.gpu, pt.gpu, lt.gpu, scale, causal, o.gpu);
    report(pair_nmse(&o), tol_for(SL_F32), "sl_attention_kv %s T%lld H%lld Hkv%lld Dh%lld %s", what,
           (long long)T, (long long)H, (long long)Hkv, (long long)Dh, causal ? "causal" : "full");
    pair_free(&q);
    pair_free(&o);
    pair_free(&k);
    pair_free(&v);
    pair_free(&st);
    pair_free(&pt);
    pair_free(&lt);
    free(slot);
    free(pos);
    free(left);
}

static void test_attention_kv(void)
{
    /* mixed: a chunk at 40.., a prefill from 0, an empty slot, a decode token */
    const int32_t n1[4] = {30, 100, 2, 1}, p1[4] = {40, 0, 0, 137}, l1[4] = {70, 100, 0, 138};
    for (int c = 0; c < 2; c++) {
        attention_kv_case("mixed", 4, 150, 9, 3, 64, n1, p1, l1, c, 1.0f);
        attention_kv_case("mixed", 4, 150, 6, 2, 7, n1, p1, l1, c, 3.0f);
        attention_kv_case("mixed", 4, 150, 4, 1, 256, n1, p1, l1, c, 1.0f);
        attention_kv_case("mixed", 4, 150, 8, 8, 130, n1, p1, l1, c, 1.0f);
    }
    /* decode: 32 slots, one token each at the end of up to 1024 cached keys */
    int32_t n2[32], p2[32], l2[32];
    for (int s = 0; s < 32; s++) {
        n2[s] = 1;
        l2[s] = s == 5 ? 0 : 1 + (int32_t)(rng_next() % 1024);
        p2[s] = l2[s] > 0 ? l2[s] - 1 : 0;
    }
    l2[0] = 1024;
    p2[0] = 1023;
    attention_kv_case("decode", 32, 1024, 9, 3, 64, n2, p2, l2, 1, 1.0f);
    /* prefill: 3 rows of 300 tokens; encoder rows: not causal, kv_len = lengths */
    const int32_t n3[3] = {300, 213, 1}, p3[3] = {0, 0, 0}, l3[3] = {300, 213, 1};
    attention_kv_case("prefill", 3, 320, 9, 3, 64, n3, p3, l3, 1, 1.0f);
    attention_kv_case("encoder", 3, 320, 12, 12, 64, n3, p3, l3, 0, 1.0f);
    /* more (token, head) pairs than a launch has blocks */
    const int32_t n4[2] = {4000, 3500}, p4[2] = {0, 10}, l4[2] = {4000, 3510};
    attention_kv_case("long", 2, 4096, 12, 4, 16, n4, p4, l4, 1, 1.0f);
}

static void test_gather_rows(void)
{
    const int64_t N = 1000, D = 77, M = 513;
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)M);
    for (int64_t i = 0; i < M; i++)
        idx[i] = (int32_t)(rng_next() % (uint64_t)N);
    idx[0] = 0;
    idx[M - 1] = (int32_t)(N - 1);
    pair_t src = pair_new2(SL_F32, N, D, -2.0f, 2.0f), id = pair_i32(idx, M);
    pair_t o = pair_new2(SL_F32, M, D, -1.0f, 1.0f);
    sl_gather_rows(src.cpu, id.cpu, o.cpu);
    sl_gather_rows(src.gpu, id.gpu, o.gpu);
    report(pair_nmse(&o), 0.0, "sl_gather_rows %lld of %lldx%lld", (long long)M, (long long)N,
           (long long)D);
    pair_free(&src);
    pair_free(&id);
    pair_free(&o);
    free(idx);
}

static void test_pool_packed(void)
{
    enum { B = 33 };
    int32_t off[B + 1];
    off[0] = 0;
    for (int b = 0; b < B; b++)
        off[b + 1] = off[b] + (b == 1 ? 0 : (int32_t)(rng_next() % 130));
    const int64_t T = off[B], D = 768;
    pair_t x = pair_new2(SL_F32, T, D, -2.0f, 2.0f), of = pair_i32(off, B + 1);
    for (int mode = SL_POOL_MEAN; mode <= SL_POOL_CLS; mode++) {
        pair_t o = pair_new2(SL_F32, B, D, -1.0f, 1.0f);
        sl_pool_packed(x.cpu, of.cpu, (sl_pool_t)mode, o.cpu);
        sl_pool_packed(x.gpu, of.gpu, (sl_pool_t)mode, o.gpu);
        report(pair_nmse(&o), tol_for(SL_F32), "sl_pool_packed %-4s %d rows, %lld tokens, D %lld",
               mode == SL_POOL_CLS ? "cls" : "mean", B, (long long)T, (long long)D);
        pair_free(&o);
    }
    pair_free(&x);
    pair_free(&of);
}

static void test_logsumexp_pick(void)
{
    const int64_t cases[3][2] = {{5, 49152}, {37, 1000}, {70001, 3}};
    for (int c = 0; c < 3; c++) {
        const int64_t T = cases[c][0], V = cases[c][1];
        pair_t x = pair_new2(SL_F32, T, V, -20.0f, 30.0f);
        if (c == 1) { /* a row of -Inf only */
            float *ninf = malloc(sizeof(float) * (size_t)V);
            for (int64_t j = 0; j < V; j++)
                ninf[j] = -INFINITY;
            sl_copy_h2d(x.cpu, ninf, sizeof(float) * (size_t)V);
            sl_copy_h2d(x.gpu, ninf, sizeof(float) * (size_t)V);
            free(ninf);
        }
        pair_t m = pair_new1(SL_F32, T, 0.0f, 1.0f), e = pair_new1(SL_F32, T, 0.0f, 1.0f);
        pair_t p = pair_new1(SL_F32, T, 0.0f, 1.0f);
        int32_t *tg = malloc(sizeof(int32_t) * (size_t)T);
        const int64_t v0 = 1000;
        for (int64_t t = 0; t < T; t++) /* inside the shard [v0, v0 + V) or outside it */
            tg[t] = (int32_t)(v0 - 3 + (int64_t)(rng_next() % (uint64_t)(V + 6)));
        if (c == 1)
            tg[0] = (int32_t)(v0 - 1); /* the -Inf row: outside the shard, so 0 */
        pair_t tt = pair_i32(tg, T);
        sl_logsumexp_parts(x.cpu, m.cpu, e.cpu);
        sl_logsumexp_parts(x.gpu, m.gpu, e.gpu);
        sl_pick_logits(x.cpu, tt.cpu, v0, p.cpu);
        sl_pick_logits(x.gpu, tt.gpu, v0, p.gpu);
        if (c == 1) { /* -Inf rowmax: compare row 0 apart, then the rest */
            float mg, eg;
            sl_copy_d2h(&mg, m.gpu, sizeof mg);
            sl_copy_d2h(&eg, e.gpu, sizeof eg);
            report_exact(mg == -INFINITY && eg == 0.0f, "sl_logsumexp_parts row of -Inf");
            sl_tensor_t mc = *m.cpu, mgv = *m.gpu;
            mc.data = (float *)mc.data + 1, mgv.data = (float *)mgv.data + 1;
            mc.shape[0] = mgv.shape[0] = T - 1;
            pair_t rest = {&mc, &mgv};
            report(pair_nmse(&rest), 0.0, "sl_logsumexp_parts rowmax %lldx%lld", (long long)T,
                   (long long)V);
        } else {
            report(pair_nmse(&m), 0.0, "sl_logsumexp_parts rowmax %lldx%lld", (long long)T,
                   (long long)V);
        }
        report(pair_nmse(&e), tol_for(SL_F32), "sl_logsumexp_parts sumexp %lldx%lld", (long long)T,
               (long long)V);
        report(pair_nmse(&p), 0.0, "sl_pick_logits %lldx%lld", (long long)T, (long long)V);
        pair_free(&x);
        pair_free(&m);
        pair_free(&e);
        pair_free(&p);
        pair_free(&tt);
        free(tg);
    }
}

/* Indices and values must agree exactly (ties: the lower index first on both). */
static void topk_case(int64_t T, int64_t V, int k, int levels)
{
    pair_t x = pair_new2(SL_F32, T, V, -5.0f, 5.0f);
    if (levels) { /* few distinct values: many ties, -0 and +0 among them */
        float *h = malloc(sizeof(float) * (size_t)(T * V));
        for (int64_t i = 0; i < T * V; i++)
            h[i] = (float)((int64_t)(rng_next() % (uint64_t)levels) - levels / 2);
        h[0] = -0.0f;
        sl_copy_h2d(x.cpu, h, sizeof(float) * (size_t)(T * V));
        sl_copy_h2d(x.gpu, h, sizeof(float) * (size_t)(T * V));
        free(h);
    }
    pair_t vals = pair_new2(SL_F32, T, k, 0.0f, 1.0f);
    sl_tensor_t *ic = sl_tensor_new2(g_cpu, SL_I32, T, k),
                *ig = sl_tensor_new2(g_gpu, SL_I32, T, k);
    sl_topk_rows(x.cpu, k, vals.cpu, ic);
    sl_topk_rows(x.gpu, k, vals.gpu, ig);
    const size_t nb = sizeof(int32_t) * (size_t)(T * k);
    int32_t *hc = malloc(nb), *hg = malloc(nb);
    float *vc = malloc(nb), *vg = malloc(nb);
    sl_copy_d2h(hc, ic, nb);
    sl_copy_d2h(hg, ig, nb);
    sl_copy_d2h(vc, vals.cpu, nb);
    sl_copy_d2h(vg, vals.gpu, nb);
    report_exact(memcmp(hc, hg, nb) == 0 && memcmp(vc, vg, nb) == 0,
                 "sl_topk_rows %lldx%lld k %d%s", (long long)T, (long long)V, k,
                 levels ? " (many ties)" : "");
    free(hc);
    free(hg);
    free(vc);
    free(vg);
    sl_tensor_free(ic);
    sl_tensor_free(ig);
    pair_free(&x);
    pair_free(&vals);
}

static void test_topk(void)
{
    topk_case(7, 49152, 1, 0);
    topk_case(7, 49152, 50, 0);
    topk_case(3, 49152, 256, 0);
    topk_case(5, 300, 256, 7);
    topk_case(4, 256, 256, 3); /* k = V */
    topk_case(70001, 5, 3, 4); /* more rows than a launch has blocks */
    topk_case(2, 100000, 40, 5);
}

/* SL_TEST_HUGE=1: ReLU over 2^31 + 1001 bf16 elements, compared bit for bit (an element left
 * untouched past index 2^31 would hardly move an NMSE). */
static void test_huge(void)
{
    const int64_t n = ((int64_t)1 << 31) + 1001;
    const size_t bytes = (size_t)n * 2;
    uint16_t *raw = malloc(bytes);
    if (!raw) {
        fprintf(stderr, "out of host memory\n");
        exit(1);
    }
    for (int64_t i = 0; i < n; i++)
        raw[i] = sl_f32_to_bf16((float)((i * 2654435761LL) % 2001 - 1000) * 0.01f);
    sl_tensor_t *c = sl_tensor_new1(g_cpu, SL_BF16, n), *g = sl_tensor_new1(g_gpu, SL_BF16, n);
    sl_copy_h2d(c, raw, bytes);
    sl_copy_h2d(g, raw, bytes);
    sl_activation(c, SL_ACT_RELU);
    sl_activation(g, SL_ACT_RELU);
    uint16_t *hc = raw, *hg = malloc(bytes);
    if (!hg) {
        fprintf(stderr, "out of host memory\n");
        exit(1);
    }
    sl_copy_d2h(hc, c, bytes);
    sl_copy_d2h(hg, g, bytes);
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++)
        bad += hc[i] != hg[i];
    if (bad)
        printf("%lld elements differ\n", (long long)bad);
    report_exact(bad == 0, "sl_activation relu    bf16 2^31+1001");
    free(hg);
    free(raw);
    sl_tensor_free(c);
    sl_tensor_free(g);
}

int main(void)
{
    if (sl_cuda_device_count() == 0) {
        printf("test_cuda_ops: skipped: no GPU\n");
        return 77;
    }
    sl_error_t err;
    g_cpu = sl_backend_create(SL_BACKEND_CPU, 0, 0, &err);
    if (!g_cpu) {
        fprintf(stderr, "test_cuda_ops: CPU backend: %s\n", err.msg);
        return 1;
    }
    g_gpu = sl_backend_create(SL_BACKEND_CUDA, 0, 0, &err);
    CHECKF(g_gpu != NULL, "CUDA backend: %s", err.msg);
    if (!g_gpu) {
        sl_backend_free(g_cpu);
        return sl_test_finish("test_cuda_ops");
    }
    printf("reference: %s\nunder test: %s\n", sl_backend_describe(g_cpu),
           sl_backend_describe(g_gpu));
    CHECK(sl_backend_kind(g_gpu) == SL_BACKEND_CUDA);
    CHECK(strncmp(sl_backend_describe(g_gpu), "cuda:0 (", 8) == 0);
    CHECK(sl_backend_stream(g_gpu) != NULL);

    test_copies();
    test_matmul();
    test_linear();
    test_linear_q();
    test_add_bias();
    test_activation();
    test_softmax();
    test_cast();
    test_standardize();
    test_add();
    test_layernorm();
    test_embedding();
    test_l2_normalize();
    test_rmsnorm();
    test_rope();
    test_swiglu();
    test_kv_write();
    test_attention_kv();
    test_gather_rows();
    test_pool_packed();
    test_logsumexp_pick();
    test_topk();
    CHECKF(sl_backend_free_bytes(g_gpu) > ((size_t)1 << 20), "GPU free bytes %zu",
           sl_backend_free_bytes(g_gpu));
    const char *huge = getenv("SL_TEST_HUGE");
    if (huge && strcmp(huge, "1") == 0)
        test_huge();

    sl_backend_sync(g_gpu);
    sl_backend_free(g_gpu);
    sl_backend_free(g_cpu);
    return sl_test_finish("test_cuda_ops");
}
