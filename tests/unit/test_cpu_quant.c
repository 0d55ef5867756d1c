/*
 * test_cpu_quant.c — the linear layers that compute from block-quantized weights
 * (kernels/cpu/cpu_quant.h), checked three ways:
 *
 *   1. real GGUF blocks: the Q8_0, Q4_0 and Q4_1 matrices of tests/reference/goldens/
 *      mixed_types.gguf, read as stored (sl_weights_read, no dequantisation), times activations,
 *      against a double-precision product with gguf-py's dequantised values of the same tensors
 *      (mixed_types_expected.h5), within the bound the int8 rounding of the activations allows:
 *      |error| <= sum over blocks of (d_x / 2) * sum |w| (d_x = the block's max|x| / 127), plus
 *      float slack;
 *   2. every dot-product form the CPU runs (AVX-512 VNNI, AVX2) against the scalar form on random
 *      blocks of each type (odd and even block counts, since the VNNI form takes blocks in
 *      pairs): the same bits, since every form does the same f32 operations in the same order
 *      (a last-bit difference would move quantized decoders' outputs from one CPU to another),
 *      and every form against the double-precision dequantised product
 *      within the bound of 1; the same for the multi-row dots (one weight row, 3 or 4
 *      activation rows; nothing written past the rows asked for);
 *   3. sl_linear on the CPU backend with a quantized weight and a bias, on 1, 3 and 70 rows:
 *      bulk rows (the default: f32 activations, dequantised tiles in the BLAS) within f32
 *      rounding of the double reference; decode rows (sl_backend_set_bulk_rows 0: int8 dot
 *      products) within the int8 bound and with the bits of the int8 path itself (2 threads,
 *      tiles); a step split between the two gives each row the bits of its own path; every row
 *      has the same bits computed alone or among 70 rows (batch invariance), on the bulk path
 *      and in every int8 form; sl_embedding of a
 * quantized table equals the dequantised rows exactly; and a slice that would cut a 32-value block
 * is refused with the tensor named;
 *   4. quantization on load (--precision int8, w8a8): sl_q8_0_quantize_rows gives each 32 weights
 *      the f16 scale of max|w| / 127 exactly, |q| <= 127 with 127 reached, and q d within d / 2
 *      of w (all zeros for a zero block); sl_cpu_linear_q_ex with static per-block activation
 *      ranges (W8A8; one block whose rows exceed its range and take their own max instead of
 *      saturating, one without a range, which falls back to its own
 *      max) equals a double-precision reference that quantizes x independently, in every form;
 *      sl_linear with act_scales on a weight takes that path.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_qgemm.h"
#include "kernels/cpu/cpu_quant.h"
#include "kernels/quant.h"
#include "models/formats/weights.h"
#include "sl_test.h"

static uint64_t rng = 88172645463325252ull;
static double urand(void) /* [0, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

static const sl_dtype_t kTypes[3] = {SL_Q8_0, SL_Q4_0, SL_Q4_1};

/* Random valid blocks of type dt for n rows of k values (scales of realistic size). */
static uint8_t *random_blocks(sl_dtype_t dt, int64_t n, int64_t k)
{
    size_t bytes = sl_dtype_bytes(dt, n * k);
    uint8_t *w = malloc(bytes);
    for (size_t i = 0; i < bytes; i++)
        w[i] = (uint8_t)(urand() * 256.0);
    size_t bb = sl_dtype_size(dt);
    for (int64_t b = 0; b < n * k / sl_dtype_block(dt); b++) {
        uint8_t *p = w + b * bb;
        float d = (float)(0.002 + 0.02 * urand()), m = (float)(-0.1 * urand());
        if (sl_dtype_kquant(dt)) /* sub-block scales up to 63 (Q4_K) or 127 (Q6_K) */
            d /= 32.0f, m = -m / 32.0f;
        uint16_t hd = sl_f32_to_f16(d), hm = sl_f32_to_f16(m);
        memcpy(p + (dt == SL_Q6_K ? 208 : 0), &hd, 2);
        if (dt == SL_Q4_1 || dt == SL_Q4_K || dt == SL_Q5_1 || dt == SL_Q5_K)
            memcpy(p + 2, &hm, 2);
    }
    return w;
}

/* The values of n rows of blocks (the K-quants and the 5-bit formats through quant.h's readers,
 * which test_gguf holds to gguf-py's values). */
static void dequant_rows(sl_dtype_t dt, const uint8_t *w, int64_t n, int64_t k, float *out)
{
    if (dt == SL_Q5_0 || dt == SL_Q5_1) {
        for (int64_t b = 0; b < n * k / SL_QBLOCK; b++) {
            const uint8_t *p = w + b * sl_dtype_size(dt);
            const int one = dt == SL_Q5_1;
            uint8_t u[32];
            sl_q5_values(p + (one ? 4 : 2), u);
            const float d = sl_q_half(p), m = one ? sl_q_half(p + 2) : 0.0f;
            for (int j = 0; j < 32; j++)
                out[b * SL_QBLOCK + j] = one ? d * (float)u[j] + m : d * (float)((int)u[j] - 16);
        }
        return;
    }
    if (!sl_dtype_kquant(dt)) {
        for (int64_t b = 0; b < n * k / SL_QBLOCK; b++)
            sl_q_dequant_block((int)dt, w + b * sl_dtype_size(dt), out + b * SL_QBLOCK);
        return;
    }
    for (int64_t b = 0; b < n * k / SL_QK; b++) {
        const uint8_t *p = w + b * sl_dtype_size(dt);
        for (int j = 0; j < 8; j++) {
            uint8_t u[32];
            int sc[2], m;
            float *y = out + b * SL_QK + 32 * j;
            if (dt == SL_Q4_K || dt == SL_Q5_K) {
                sl_q45_k_sub(p, dt == SL_Q5_K, j, u, &sc[0], &m);
                const float dl = sl_q_half(p) * (float)sc[0], ml = sl_q_half(p + 2) * (float)m;
                for (int l = 0; l < 32; l++)
                    y[l] = dl * (float)u[l] - ml;
            } else {
                sl_q6_k_sub(p, j, u, sc);
                for (int l = 0; l < 32; l++)
                    y[l] = (sl_q_half(p + 208) * (float)sc[l / 16]) * (float)((int)u[l] - 32);
            }
        }
    }
}

/* ref[i,j] = sum_t x[i,t] wf[j,t] in double; bound[i,j] = the activation rounding bound. */
static void reference(const float *x, const float *wf, int64_t m, int64_t n, int64_t k, double *ref,
                      double *bound)
{
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0.0, bd = 0.0;
            for (int64_t b = 0; b < k / SL_QBLOCK; b++) {
                double amax = 0.0, wsum = 0.0;
                for (int t = 0; t < SL_QBLOCK; t++) {
                    int64_t c = b * SL_QBLOCK + t;
                    s += (double)x[i * k + c] * wf[j * k + c];
                    amax = fmax(amax, fabs(x[i * k + c]));
                    wsum += fabs(wf[j * k + c]);
                }
                bd += amax / 127.0 / 2.0 * wsum;
            }
            ref[i * n + j] = s;
            bound[i * n + j] = bd * 1.001 + 1e-5 * (fabs(s) + 1.0);
        }
}

static void random_x(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)((urand() - 0.5) * 4.0 * (urand() < 0.05 ? 8.0 : 1.0));
}

/* 1. the real GGUF blocks against gguf-py's dequantised values */
static void test_gguf_blocks(void)
{
    char gpath[4096], hpath[4096];
    snprintf(gpath, sizeof gpath, "%s/tests/reference/goldens/mixed_types.gguf",
             sl_test_source_dir());
    snprintf(hpath, sizeof hpath, "%s/tests/reference/goldens/mixed_types_expected.h5",
             sl_test_source_dir());
    sl_error_t err = {0};
    sl_weights_t *w = sl_weights_open(gpath, &err);
    CHECKF(w != NULL, "%s", err.msg);
    hid_t h5 = H5Fopen(hpath, H5F_ACC_RDONLY, H5P_DEFAULT);
    CHECK(h5 >= 0);
    if (!w || h5 < 0)
        return;
    static const char *names[3] = {"tensor.q8_0", "tensor.q4_0.2d", "tensor.q4_1"};
    const int64_t n = 3, k = 64, m = 4;
    for (int t = 0; t < 3; t++) {
        char ds[128];
        snprintf(ds, sizeof ds, "tensors/%s", names[t]);
        size_t cnt = 0;
        float *wf = sl_test_h5_read(h5, ds, H5T_NATIVE_FLOAT, sizeof(float), &cnt, NULL, NULL);
        sl_dtype_t dt = SL_F32;
        uint8_t *raw = sl_weights_read(w, names[t], 0, n, 0, k, 1, &dt, &err);
        CHECKF(raw && wf && cnt == (size_t)(n * k) && dt == kTypes[t], "%s: %s", names[t], err.msg);
        if (!raw || !wf) {
            free(raw);
            free(wf);
            continue;
        }
        float x[4 * 64], y[4 * 3];
        double ref[12], bound[12];
        random_x(x, m * k);
        reference(x, wf, m, n, k, ref, bound);
        for (int f = SL_QFORM_SCALAR; f <= SL_QFORM_VNNI; f++) {
            if (!sl_qform_available((sl_qform_t)f))
                continue;
            sl_q8a_t xq[4 * 2];
            sl_cpu_linear_q(1, (sl_qform_t)f, dt, x, m, k, raw, n, NULL, y, xq);
            int bad = 0;
            for (int i = 0; i < m * n; i++)
                bad += !(fabs(y[i] - ref[i]) <= bound[i]);
            CHECKF(bad == 0, "%s, %s form: %d of %lld outputs outside the int8 bound", names[t],
                   sl_qform_name((sl_qform_t)f), bad, (long long)(m * n));
        }
        /* the f32 path of the same tensor still dequantises as gguf-py does */
        float *deq = sl_weights_read(w, names[t], 0, n, 0, k, 0, &dt, &err);
        CHECK(deq && dt == SL_F32 && memcmp(deq, wf, sizeof(float) * (size_t)(n * k)) == 0);
        free(deq);
        free(raw);
        free(wf);
    }
    /* a slice that cuts a block is refused, naming the tensor */
    sl_dtype_t dt;
    err.msg[0] = 0;
    void *cut = sl_weights_read(w, "tensor.q4_1", 0, 3, 16, 48, 1, &dt, &err);
    CHECKF(cut == NULL && strstr(err.msg, "tensor.q4_1") && strstr(err.msg, "column 16"), "%s",
           err.msg);
    free(cut);
    H5Fclose(h5);
    sl_weights_close(w);
}

/* 2. every form against the scalar one and the double reference */
static void test_forms(void)
{
    const int64_t ks[3] = {32 * 9, 576, 1536};
    int forms = 0;
    for (int f = SL_QFORM_AVX2; f <= SL_QFORM_VNNI; f++)
        if (sl_qform_available((sl_qform_t)f))
            forms++;
    printf("int8 dot forms on this CPU: scalar%s%s (best: %s)\n",
           sl_qform_available(SL_QFORM_AVX2) ? ", avx2" : "",
           sl_qform_available(SL_QFORM_VNNI) ? ", avx512-vnni" : "",
           sl_qform_name(sl_qform_best()));
    for (int t = 0; t < 3; t++)
        for (int ki = 0; ki < 3; ki++) {
            const int64_t k = ks[ki], n = 24, nb = k / SL_QBLOCK;
            sl_dtype_t dt = kTypes[t];
            uint8_t *w = random_blocks(dt, n, k);
            float *wf = malloc(sizeof(float) * (size_t)(n * k)), *x = malloc(sizeof(float) * k);
            double *ref = malloc(sizeof(double) * n), *bound = malloc(sizeof(double) * n);
            sl_q8a_t *xq = malloc(sizeof(sl_q8a_t) * (size_t)nb);
            dequant_rows(dt, w, n, k, wf);
            random_x(x, k);
            reference(x, wf, 1, n, k, ref, bound);
            sl_q8a_quantize(x, k, xq);
            int bad_ref = 0, bad_form = 0;
            for (int64_t j = 0; j < n; j++) {
                const uint8_t *wr = w + sl_dtype_bytes(dt, k) * (size_t)j;
                float s0 = sl_qdot(SL_QFORM_SCALAR, dt, wr, xq, nb);
                bad_ref += !(fabs(s0 - ref[j]) <= bound[j]);
                for (int f = SL_QFORM_AVX2; f <= SL_QFORM_VNNI; f++) {
                    if (!sl_qform_available((sl_qform_t)f))
                        continue;
                    float sf = sl_qdot((sl_qform_t)f, dt, wr, xq, nb);
                    if (memcmp(&sf, &s0, sizeof sf) != 0) { /* the same bits (cpu_quant.c) */
                        bad_form++;
                        fprintf(stderr, "  %s k %lld row %lld: %s %.7g scalar %.7g\n",
                                sl_dtype_name(dt), (long long)k, (long long)j,
                                sl_qform_name((sl_qform_t)f), sf, s0);
                    }
                }
            }
            /* four activation rows per weight row (and three: the last one repeated) */
            float *x4 = malloc(sizeof(float) * (size_t)(4 * k));
            sl_q8a_t *xq4 = malloc(sizeof(sl_q8a_t) * (size_t)(4 * nb));
            random_x(x4, 4 * k);
            for (int r = 0; r < 4; r++)
                sl_q8a_quantize(x4 + r * k, k, xq4 + r * nb);
            int bad_rows = 0;
            for (int64_t j = 0; j < n; j++) {
                const uint8_t *wr = w + sl_dtype_bytes(dt, k) * (size_t)j;
                for (int f = SL_QFORM_SCALAR; f <= SL_QFORM_VNNI; f++) {
                    if (!sl_qform_available((sl_qform_t)f))
                        continue;
                    for (int rows = 3; rows <= 4; rows++) {
                        float o[4] = {NAN, NAN, NAN, NAN};
                        sl_qdot_rows((sl_qform_t)f, dt, wr, xq4, nb, rows, o);
                        for (int r = 0; r < 4; r++) {
                            float s0 = sl_qdot(SL_QFORM_SCALAR, dt, wr, xq4 + r * nb, nb);
                            if (r < rows ? memcmp(&o[r], &s0, sizeof s0) != 0 : !isnan(o[r]))
                                bad_rows++;
                        }
                    }
                }
            }
            CHECKF(bad_rows == 0, "%s k %lld: %d multi-row dots differ from the scalar form",
                   sl_dtype_name(dt), (long long)k, bad_rows);
            free(x4);
            free(xq4);
            CHECKF(bad_ref == 0, "%s k %lld: %d scalar dots outside the int8 bound",
                   sl_dtype_name(dt), (long long)k, bad_ref);
            CHECKF(bad_form == 0, "%s k %lld: %d SIMD dots differ from the scalar form",
                   sl_dtype_name(dt), (long long)k, bad_form);
            free(w);
            free(wf);
            free(x);
            free(ref);
            free(bound);
            free(xq);
        }
    CHECKF(forms >= 0, "forms counted");
}

/* 3. sl_linear and sl_embedding on the CPU backend */
static void test_backend(void)
{
    sl_error_t err = {0};
    sl_backend_t *be = sl_backend_create(SL_BACKEND_CPU, 0, 2, &err);
    CHECKF(be != NULL, "%s", err.msg);
    if (!be)
        return;
    const int64_t ms[3] = {1, 3, 70}, n = 200, k = 32 * 11;
    for (int t = 0; t < 3; t++) {
        sl_dtype_t dt = kTypes[t];
        uint8_t *w = random_blocks(dt, n, k);
        float *wf = malloc(sizeof(float) * (size_t)(n * k));
        dequant_rows(dt, w, n, k, wf);
        sl_tensor_t *wt = sl_tensor_new2(be, dt, n, k);
        CHECK(sl_tensor_bytes(wt) == sl_dtype_bytes(dt, n * k));
        sl_copy_h2d(wt, w, sl_tensor_bytes(wt));
        float bias_h[200];
        for (int j = 0; j < n; j++)
            bias_h[j] = (float)(urand() - 0.5);
        sl_tensor_t *bias = sl_tensor_new1(be, SL_F32, n);
        sl_copy_h2d(bias, bias_h, sizeof bias_h);
        for (int mi = 0; mi < 3; mi++) {
            const int64_t m = ms[mi];
            float *x = malloc(sizeof(float) * (size_t)(m * k));
            double *ref = malloc(sizeof(double) * (size_t)(m * n));
            double *bound = malloc(sizeof(double) * (size_t)(m * n));
            random_x(x, m * k);
            reference(x, wf, m, n, k, ref, bound);
            sl_tensor_t *xt = sl_tensor_new2(be, SL_F32, m, k),
                        *yt = sl_tensor_new2(be, SL_F32, m, n);
            sl_copy_h2d(xt, x, sizeof(float) * (size_t)(m * k));
            /* bulk rows (the default): f32 activations against dequantised tiles, within
             * f32 rounding of the double product */
            sl_linear(xt, wt, bias, yt);
            float *yf = malloc(sizeof(float) * (size_t)(m * n));
            memcpy(yf, yt->data, sizeof(float) * (size_t)(m * n));
            int bad = 0;
            for (int64_t i = 0; i < m; i++)
                for (int64_t j = 0; j < n; j++) {
                    double mag = 0.0;
                    for (int64_t c = 0; c < k; c++)
                        mag += fabs((double)x[i * k + c] * wf[j * k + c]);
                    bad += !(fabs(yf[i * n + j] - bias_h[j] - ref[i * n + j]) <=
                             1e-5 * mag + 1e-5 * (fabs(bias_h[j]) + 1.0));
                }
            CHECKF(bad == 0, "sl_linear %s, %lld bulk rows: %d outputs outside f32 rounding",
                   sl_dtype_name(dt), (long long)m, bad);
            /* decode rows (bulk 0): int8 activations, within the int8 bound */
            sl_backend_set_bulk_rows(be, 0);
            sl_linear(xt, wt, bias, yt);
            const float *y = yt->data;
            bad = 0;
            for (int64_t i = 0; i < m; i++)
                for (int64_t j = 0; j < n; j++)
                    bad += !(fabs(y[i * n + j] - bias_h[j] - ref[i * n + j]) <= bound[i * n + j]);
            CHECKF(bad == 0, "sl_linear %s, %lld decode rows: %d outputs outside the int8 bound",
                   sl_dtype_name(dt), (long long)m, bad);
            /* the int8 path itself on as many rows: tiles of weight rows x activation rows on 2
             * threads, the same bits as sl_linear's decode rows */
            float *y8 = malloc(sizeof(float) * (size_t)(m * n));
            sl_q8a_t *xq = malloc(sizeof(sl_q8a_t) * (size_t)(m * k / SL_QBLOCK));
            sl_cpu_linear_q(2, sl_qform_best(), dt, x, m, k, w, n, bias_h, y8, xq);
            CHECKF(memcmp(y8, y, sizeof(float) * (size_t)(m * n)) == 0,
                   "sl_linear %s, %lld decode rows: the int8 path's bits", sl_dtype_name(dt),
                   (long long)m);
            /* a split step (the first half bulk, as a decoder packs prompt tokens first): each
             * row has the bits of its own path, and a bulk row computed alone has them too */
            const int64_t half = m / 2;
            sl_backend_set_bulk_rows(be, half);
            sl_linear(xt, wt, bias, yt);
            sl_backend_set_bulk_rows(be, SL_BULK_ALL);
            CHECKF(memcmp(y, yf, sizeof(float) * (size_t)(half * n)) == 0 &&
                       memcmp(y + half * n, y8 + half * n,
                              sizeof(float) * (size_t)((m - half) * n)) == 0,
                   "sl_linear %s, %lld rows split at %lld: each row as on its own path",
                   sl_dtype_name(dt), (long long)m, (long long)half);
            int differ = 0;
            for (int64_t i = 0; i < m; i++) {
                sl_tensor_t *x1 = sl_tensor_new2(be, SL_F32, 1, k),
                            *y1 = sl_tensor_new2(be, SL_F32, 1, n);
                sl_copy_h2d(x1, x + i * k, sizeof(float) * (size_t)k);
                sl_linear(x1, wt, bias, y1);
                differ += memcmp(y1->data, yf + i * n, sizeof(float) * (size_t)n) != 0;
                sl_tensor_free(x1);
                sl_tensor_free(y1);
            }
            CHECKF(differ == 0,
                   "sl_linear %s bulk rows: %d of %lld rows differ when computed alone",
                   sl_dtype_name(dt), differ, (long long)m);
            bad = 0;
            for (int64_t i = 0; i < m; i++)
                for (int64_t j = 0; j < n; j++)
                    bad += !(fabs(y8[i * n + j] - bias_h[j] - ref[i * n + j]) <= bound[i * n + j]);
            CHECKF(bad == 0, "sl_cpu_linear_q %s, %lld rows: %d outputs outside the int8 bound",
                   sl_dtype_name(dt), (long long)m, bad);
            /* batch invariance: each row alone gives the same bits, in every form */
            for (int f = SL_QFORM_SCALAR; f <= SL_QFORM_VNNI; f++) {
                if (!sl_qform_available((sl_qform_t)f))
                    continue;
                sl_cpu_linear_q(2, (sl_qform_t)f, dt, x, m, k, w, n, bias_h, y8, xq);
                differ = 0;
                for (int64_t i = 0; i < m; i++) {
                    float y1[200];
                    sl_cpu_linear_q(1, (sl_qform_t)f, dt, x + i * k, 1, k, w, n, bias_h, y1, xq);
                    differ += memcmp(y1, y8 + i * n, sizeof(float) * (size_t)n) != 0;
                }
                CHECKF(differ == 0, "%s %s form: %d of %lld rows differ when computed alone",
                       sl_dtype_name(dt), sl_qform_name((sl_qform_t)f), differ, (long long)m);
            }
            free(yf);
            free(y8);
            free(xq);
            sl_tensor_free(xt);
            sl_tensor_free(yt);
            free(x);
            free(ref);
            free(bound);
        }
        /* embedding rows of the quantized table: the dequantised rows, exactly */
        int32_t ids_h[4] = {7, 0, 199, 7};
        sl_tensor_t *ids = sl_tensor_new1(be, SL_I32, 4), *out = sl_tensor_new2(be, SL_F32, 4, k);
        sl_copy_h2d(ids, ids_h, sizeof ids_h);
        sl_embedding(wt, ids, out);
        int same = 1;
        for (int i = 0; i < 4; i++)
            same &= memcmp((float *)out->data + i * k, wf + ids_h[i] * k, sizeof(float) * k) == 0;
        CHECKF(same, "sl_embedding of a %s table equals the dequantised rows", sl_dtype_name(dt));
        sl_tensor_free(ids);
        sl_tensor_free(out);
        sl_tensor_free(bias);
        sl_tensor_free(wt);
        free(w);
        free(wf);
    }
    sl_backend_free(be);
}

/* 4. quantization on load and static activation scales */
static void test_load_quant(void)
{
    const int64_t n = 5, k = 128, nb = k / SL_QBLOCK, m = 3;
    float *w = malloc((size_t)(n * k) * sizeof *w), *x = malloc((size_t)(m * k) * sizeof *x);
    for (int64_t i = 0; i < n * k; i++)
        w[i] = (float)(0.2 * (urand() - 0.5));
    for (int j = 0; j < SL_QBLOCK; j++) /* row 1, block 2: all zero; row 3: an outlier */
        w[1 * k + 2 * SL_QBLOCK + j] = 0.0f;
    w[3 * k + 5] = 4.0f;
    uint8_t *q = malloc(sl_dtype_bytes(SL_Q8_0, n * k));
    sl_q8_0_quantize_rows(w, n, k, q);
    int bad = 0;
    for (int64_t b = 0; b < n * nb; b++) {
        const uint8_t *blk = q + b * SL_Q8_0_BYTES;
        const float *wb = w + b * SL_QBLOCK;
        float amax = 0.0f;
        for (int j = 0; j < SL_QBLOCK; j++)
            amax = fmaxf(amax, fabsf(wb[j]));
        const uint16_t want = sl_f32_to_f16(amax / 127.0f);
        const float d = sl_f16_to_f32(want);
        int qmax = 0;
        bad += (uint16_t)(blk[0] | (blk[1] << 8)) != want;
        for (int j = 0; j < SL_QBLOCK; j++) {
            const int v = (int8_t)blk[2 + j];
            qmax = abs(v) > qmax ? abs(v) : qmax;
            bad += fabs((double)v * d - wb[j]) > 0.5 * d * (1 + 1e-6) + 1e-12;
        }
        bad += amax > 0.0f ? qmax != 127 : qmax != 0;
    }
    CHECKF(bad == 0, "sl_q8_0_quantize_rows: %d scales or values off", bad);

    /* activation ranges per block: block 1's range is a third of its values' (rows beyond it
     * take their own max), block 3 has none (0: its own max per row) */
    random_x(x, m * k);
    float xmax[4] = {0, 0, 0, 0};
    for (int64_t i = 0; i < m * k; i++)
        xmax[(i % k) / SL_QBLOCK] = fmaxf(xmax[(i % k) / SL_QBLOCK], fabsf(x[i]));
    xmax[1] /= 3.0f;
    xmax[3] = 0.0f;
    float *wf = malloc((size_t)(n * k) * sizeof *wf);
    dequant_rows(SL_Q8_0, q, n, k, wf);
    double *ref = malloc((size_t)(m * n) * sizeof *ref);
    for (int64_t i = 0; i < m; i++) {
        double xq[128];
        for (int64_t b = 0; b < nb; b++) {
            double amax = 0;
            for (int j = 0; j < SL_QBLOCK; j++)
                amax = fmax(amax, fabs(x[i * k + b * SL_QBLOCK + j]));
            const double d = fmax(xmax[b], amax) / 127.0;
            for (int j = 0; j < SL_QBLOCK; j++) {
                double v = d > 0 ? rint(x[i * k + b * SL_QBLOCK + j] / d) : 0.0;
                xq[b * SL_QBLOCK + j] = fmin(fmax(v, -127.0), 127.0) * d;
            }
        }
        for (int64_t o = 0; o < n; o++) {
            double acc = 0;
            for (int64_t j = 0; j < k; j++)
                acc += xq[j] * wf[o * k + j];
            ref[i * n + o] = acc;
        }
    }
    float y[15];
    sl_q8a_t xqb[3 * 4] __attribute__((aligned(32)));
    for (int f = SL_QFORM_SCALAR; f <= SL_QFORM_VNNI; f++) {
        if (!sl_qform_available((sl_qform_t)f))
            continue;
        sl_cpu_linear_q_ex(1, (sl_qform_t)f, SL_Q8_0, x, m, k, q, n, NULL, y, xqb, xmax);
        double worst = 0;
        for (int64_t i = 0; i < m * n; i++)
            worst = fmax(worst, fabs(y[i] - ref[i]));
        /* one rounding step of x apart at most where x / d lands on a tie: 1e-3 covers it */
        CHECKF(worst <= 1e-3, "static scales, form %s: max error %.3g against the reference",
               sl_qform_name((sl_qform_t)f), worst);
    }

    /* the backend: a weight with act_scales takes the static path */
    sl_error_t err;
    sl_backend_t *be = sl_backend_create(SL_BACKEND_CPU, 0, 1, &err);
    CHECK(be != NULL);
    if (be) {
        sl_tensor_t *wt = sl_upload_int8(be, w, n, k), *xt = sl_tensor_new2(be, SL_F32, m, k);
        sl_tensor_t *yt = sl_tensor_new2(be, SL_F32, m, n), *st = sl_tensor_new1(be, SL_F32, nb);
        sl_copy_h2d(xt, x, (size_t)(m * k) * sizeof *x);
        sl_copy_h2d(st, xmax, sizeof xmax);
        CHECK(wt->dtype == SL_Q8_0);
        wt->act_scales = st; /* freed with wt */
        sl_linear(xt, wt, NULL, yt);
        float yb[15];
        sl_copy_d2h(yb, yt, sizeof yb);
        double worst = 0;
        for (int64_t i = 0; i < m * n; i++)
            worst = fmax(worst, fabs(yb[i] - ref[i]));
        CHECKF(worst <= 1e-3, "sl_linear with act_scales: max error %.3g", worst);
        sl_tensor_t *odd = sl_upload_int8(be, w, n, 40); /* not whole blocks: stays f32 */
        CHECK(odd->dtype == SL_F32);
        sl_tensor_free(odd);
        sl_tensor_free(wt);
        sl_tensor_free(xt);
        sl_tensor_free(yt);
        sl_backend_free(be);
    }
    free(ref);
    free(wf);
    free(q);
    free(w);
    free(x);
}

/* 5. the packed layout and the integer GEMM on it (cpu_qgemm.h), for the 32-value formats (the
 * 5-bit ones included) and the K-quants (odd and even block counts) */
static void test_packed(void)
{
    const int64_t n = 48, ks[2][2] = {{32 * 9, 576}, {512, 768}}, ms[5] = {1, 3, 4, 7, 70};
    const sl_dtype_t types[8] = {SL_Q8_0, SL_Q4_0, SL_Q4_1, SL_Q5_0,
                                 SL_Q5_1, SL_Q4_K, SL_Q5_K, SL_Q6_K};
    sl_error_t err = {0};
    sl_backend_t *be = sl_backend_create(SL_BACKEND_CPU, 0, 2, &err);
    CHECKF(be != NULL, "%s", err.msg);
    if (!be)
        return;
    for (int t = 0; t < 8; t++)
        for (int ki = 0; ki < 2; ki++) {
            const sl_dtype_t dt = types[t];
            const int kq = sl_dtype_kquant(dt), only = sl_dtype_packed_only(dt);
            const int64_t k = ks[kq][ki], nb = k / SL_QBLOCK;
            const size_t bytes = sl_dtype_bytes(dt, n * k);
            uint8_t *w = random_blocks(dt, n, k), *p = malloc(bytes);
            memcpy(p, w, bytes);
            CHECK(sl_qpack_fits(dt, n, k) && !sl_qpack_fits(dt, n + 8, k) &&
                  !sl_qpack_fits(SL_F32, n, k) && sl_qpack_fits(dt, n, k + 32) == !kq &&
                  sl_backend_packs(be, dt, n, k) && !sl_backend_packs(be, dt, n + 8, k));
            sl_qpack(2, dt, p, n, k);
            CHECKF(memcmp(p, w, bytes) != 0, "%s: packing changed nothing", sl_dtype_name(dt));
            /* every row dequantised from the packed form: the bits of the row blocks */
            float *wf = malloc(sizeof(float) * (size_t)(n * k)),
                  *pf = malloc(sizeof(float) * (size_t)(n * k));
            dequant_rows(dt, w, n, k, wf);
            int bad_row = 0;
            float *row = malloc(sizeof(float) * (size_t)k);
            for (int64_t r = 0; r < n; r++) {
                sl_qpack_dequant_row(dt, p, k, r, row);
                bad_row += memcmp(row, wf + r * k, sizeof(float) * (size_t)k) != 0;
            }
            sl_qpack_dequant_rows(2, dt, p, k, 16, 32, pf);
            CHECKF(bad_row == 0 && !memcmp(pf, wf + 16 * k, sizeof(float) * (size_t)(32 * k)),
                   "%s k %lld: %d packed rows dequantise differently", sl_dtype_name(dt),
                   (long long)k, bad_row);
            /* the GEMM: scalar within the int8 bound of the double product; every form and
             * thread count the scalar bits; each row the bits it has alone (batch invariance) */
            const int64_t mmax = 70;
            float *x = malloc(sizeof(float) * (size_t)(mmax * k)), bias[48];
            for (int j = 0; j < n; j++)
                bias[j] = (float)(urand() - 0.5);
            random_x(x, mmax * k);
            sl_q8a_t *xq = malloc(sizeof(sl_q8a_t) * (size_t)(mmax * nb));
            sl_q8a_quantize_rows(2, SL_QFORM_SCALAR, x, mmax, k, NULL, xq);
            double *ref = malloc(sizeof(double) * (size_t)(mmax * n)),
                   *bound = malloc(sizeof(double) * (size_t)(mmax * n));
            reference(x, wf, mmax, n, k, ref, bound);
            float *y0 = malloc(sizeof(float) * (size_t)(mmax * n)),
                  *y1 = malloc(sizeof(float) * (size_t)(mmax * n)), one[48];
            int bad_ref = 0, bad_form = 0, bad_batch = 0;
            for (int mi = 0; mi < 5; mi++) {
                const int64_t m = ms[mi];
                sl_qgemm(1, SL_QFORM_SCALAR, dt, xq, m, k, p, n, bias, y0);
                for (int64_t i = 0; i < m * n; i++)
                    bad_ref += !(fabs(y0[i] - bias[i % n] - ref[i]) <= bound[i]);
                for (int f = SL_QFORM_SCALAR; f <= SL_QFORM_VNNI; f++) {
                    if (!sl_qform_available((sl_qform_t)f))
                        continue;
                    sl_qgemm(2, (sl_qform_t)f, dt, xq, m, k, p, n, bias, y1);
                    bad_form += memcmp(y0, y1, sizeof(float) * (size_t)(m * n)) != 0;
                    for (int64_t i = 0; i < m; i += 3) {
                        sl_qgemm(1, (sl_qform_t)f, dt, xq + i * nb, 1, k, p, n, bias, one);
                        bad_batch += memcmp(one, y0 + i * n, sizeof one) != 0;
                    }
                }
            }
            CHECKF(bad_ref == 0, "%s k %lld: %d packed GEMM outputs outside the int8 bound",
                   sl_dtype_name(dt), (long long)k, bad_ref);
            CHECKF(bad_form == 0, "%s k %lld: %d forms differ from the scalar GEMM",
                   sl_dtype_name(dt), (long long)k, bad_form);
            CHECKF(bad_batch == 0, "%s k %lld: %d rows differ alone and in a batch",
                   sl_dtype_name(dt), (long long)k, bad_batch);
            /* through the backend: sl_tensor_pack, sl_linear on both paths, w8a8's static
             * scales, sl_embedding, and sl_copy_d2h back to GGUF's layout */
            sl_tensor_t *wu = sl_tensor_new2(be, dt, n, k), *wp = sl_tensor_new2(be, dt, n, k);
            sl_copy_h2d(wu, w, bytes);
            sl_copy_h2d(wp, w, bytes);
            sl_tensor_pack(wp);
            CHECK(wp->packed && !memcmp(wp->data, p, bytes));
            sl_tensor_t *xt = sl_tensor_new2(be, SL_F32, mmax, k),
                        *ya = sl_tensor_new2(be, SL_F32, mmax, n),
                        *yb = sl_tensor_new2(be, SL_F32, mmax, n),
                        *bt = sl_tensor_new1(be, SL_F32, n);
            sl_copy_h2d(xt, x, sizeof(float) * (size_t)(mmax * k));
            sl_copy_h2d(bt, bias, sizeof bias);
            sl_linear(xt, wp, bt, yb);
            if (only) { /* held only packed: bulk rows within f32 rounding of the double product
                         * (254 bound >= sum |x w|, the scale of that rounding) */
                int bad_bulk = 0;
                for (int64_t i = 0; i < mmax * n; i++)
                    bad_bulk += !(fabs((double)((float *)yb->data)[i] - bias[i % n] - ref[i]) <=
                                  1e-4 * 254.0 * bound[i]);
                CHECKF(bad_bulk == 0, "%s: %d bulk rows of a packed matrix off the product",
                       sl_dtype_name(dt), bad_bulk);
            } else {
                sl_linear(xt, wu, bt, ya); /* bulk rows: dequantised chunks, the same values */
                CHECKF(!memcmp(ya->data, yb->data, sizeof(float) * (size_t)(mmax * n)),
                       "%s: bulk rows of a packed matrix differ", sl_dtype_name(dt));
            }
            sl_backend_set_bulk_rows(be, 0);
            sl_linear(xt, wp, bt, yb);
            sl_qgemm(2, sl_qform_best(), dt, xq, mmax, k, p, n, bias, y1);
            CHECKF(!memcmp(yb->data, y1, sizeof(float) * (size_t)(mmax * n)),
                   "%s: int8 rows of sl_linear are not the packed GEMM's", sl_dtype_name(dt));
            float *xmax = malloc(sizeof(float) * (size_t)nb);
            for (int64_t b = 0; b < nb; b++)
                xmax[b] =
                    b == 1 ? 0.0f : (float)(0.5 + urand()); /* ranges below and above x's; none */
            sl_tensor_t *xs = sl_tensor_new1(be, SL_F32, nb);
            sl_copy_h2d(xs, xmax, sizeof(float) * (size_t)nb);
            wp->act_scales = xs;
            sl_backend_set_bulk_rows(be, SL_BULK_ALL);
            sl_linear(xt, wp, bt, yb); /* static scales: every row in int8 */
            sl_q8a_quantize_rows(1, SL_QFORM_SCALAR, x, mmax, k, xmax, xq);
            sl_qgemm(1, SL_QFORM_SCALAR, dt, xq, mmax, k, p, n, bias, y1);
            CHECKF(!memcmp(yb->data, y1, sizeof(float) * (size_t)(mmax * n)),
                   "%s: w8a8 rows of a packed matrix are not the scalar GEMM's", sl_dtype_name(dt));
            int32_t ids[5] = {0, 47, 16, 5, 31};
            sl_tensor_t *it = sl_tensor_new1(be, SL_I32, 5), *et = sl_tensor_new2(be, SL_F32, 5, k);
            sl_copy_h2d(it, ids, sizeof ids);
            sl_embedding(wp, it, et);
            int bad_emb = 0;
            for (int i = 0; i < 5; i++)
                bad_emb += memcmp((float *)et->data + i * k, wf + ids[i] * k,
                                  sizeof(float) * (size_t)k) != 0;
            CHECKF(bad_emb == 0, "%s: %d embedding rows of a packed table differ",
                   sl_dtype_name(dt), bad_emb);
            uint8_t *back = malloc(bytes);
            sl_copy_d2h(back, wp, bytes);
            CHECKF(!memcmp(back, w, bytes), "%s: a packed matrix read back is not GGUF's layout",
                   sl_dtype_name(dt));
            free(back);
            free(xmax);
            sl_tensor_free(it);
            sl_tensor_free(et);
            sl_tensor_free(xt);
            sl_tensor_free(ya);
            sl_tensor_free(yb);
            sl_tensor_free(bt);
            sl_tensor_free(wu);
            sl_tensor_free(wp);
            free(w);
            free(p);
            free(wf);
            free(pf);
            free(row);
            free(x);
            free(xq);
            free(ref);
            free(bound);
            free(y0);
            free(y1);
        }
    sl_backend_free(be);
}

/* 5b. the packed GEMM over several row blocks (SL_QGEMM_BLOCK_BYTES), the last one partial:
 * every row written, with the bits it has alone, in every form and on 1 and 2 threads. */
static void test_packed_blocks(void)
{
    const int64_t n = 32, k = 512, nb = k / SL_QBLOCK;
    const int64_t per_block =
        SL_QGEMM_BLOCK_BYTES / (nb * (int64_t)sizeof(sl_q8a_t) * 64) * 64; /* rows of a block */
    const int64_t m = 2 * per_block + 70;
    const sl_dtype_t types[2] = {SL_Q8_0, SL_Q4_K};
    for (int t = 0; t < 2; t++) {
        const sl_dtype_t dt = types[t];
        uint8_t *p = random_blocks(dt, n, k);
        sl_qpack(1, dt, p, n, k);
        float *x = malloc(sizeof(float) * (size_t)(m * k));
        float *y = malloc(sizeof(float) * (size_t)(m * n)), one[32];
        random_x(x, m * k);
        sl_q8a_t *xq = malloc(sizeof(sl_q8a_t) * (size_t)(m * nb));
        sl_q8a_quantize_rows(2, SL_QFORM_SCALAR, x, m, k, NULL, xq);
        int bad = 0, runs = 0;
        for (int f = SL_QFORM_SCALAR; f <= SL_QFORM_VNNI; f++)
            for (int threads = 1; threads <= 2; threads++) {
                if (!sl_qform_available((sl_qform_t)f))
                    continue;
                for (int64_t i = 0; i < m * n; i++)
                    y[i] = NAN; /* a row no task wrote stays NaN */
                sl_qgemm(threads, (sl_qform_t)f, dt, xq, m, k, p, n, NULL, y);
                runs++;
                /* every 13th row, and the rows on both sides of each block edge */
                const int64_t edges[5] = {per_block - 1, per_block, 2 * per_block - 1,
                                          2 * per_block, m - 1};
                for (int64_t e = 0; e < m / 13 + 5; e++) {
                    const int64_t i = e < m / 13 ? 13 * e : edges[e - m / 13];
                    sl_qgemm(1, SL_QFORM_SCALAR, dt, xq + i * nb, 1, k, p, n, NULL, one);
                    bad += memcmp(one, y + i * n, sizeof one) != 0;
                }
                for (int64_t i = 0; i < m * n; i++)
                    bad += isnan(y[i]);
            }
        CHECKF(runs > 0 && bad == 0,
               "%s: %lld rows over %lld-row blocks: %d rows or values differ from the rows alone",
               sl_dtype_name(dt), (long long)m, (long long)per_block, bad);
        free(p);
        free(x);
        free(y);
        free(xq);
    }
}

/* 6. activation quantization: the AVX2 form gives the scalar form's bytes, NaN, infinities,
 * zero blocks, exceeded and unranged static blocks included */
static void test_quantize_forms(void)
{
    const int64_t m = 9, k = 32 * 7, nb = k / SL_QBLOCK;
    float *x = malloc(sizeof(float) * (size_t)(m * k)), xmax[7];
    random_x(x, m * k);
    for (int64_t j = 0; j < SL_QBLOCK; j++)
        x[2 * k + j] = 0.0f; /* a zero block */
    x[3 * k + 5] = NAN;
    x[4 * k + 40] = INFINITY;
    x[5 * k + 70] = -INFINITY;
    x[6 * k + 100] = 3e38f;
    for (int b = 0; b < 7; b++)
        xmax[b] = b == 2   ? 0.0f
                  : b == 3 ? NAN
                  : b == 5 ? 50.0f                   /* within: the calibrated step */
                           : (float)(0.2 + urand()); /* exceeded: each row's own */
    sl_q8a_t *a = calloc((size_t)(m * nb), sizeof *a), *b = calloc((size_t)(m * nb), sizeof *b);
    for (int stat = 0; stat < 2; stat++) {
        const float *xm = stat ? xmax : NULL;
        sl_q8a_quantize_rows(1, SL_QFORM_SCALAR, x, m, k, xm, a);
        sl_q8a_quantize_rows(2, sl_qform_best(), x, m, k, xm, b);
        int bad = 0;
        for (int64_t i = 0; i < m * nb; i++)
            bad += memcmp(&a[i], &b[i], sizeof a[i]) != 0;
        CHECKF(bad == 0, "%s: %d activation blocks quantized differently by the %s form",
               stat ? "static" : "dynamic", bad, sl_qform_name(sl_qform_best()));
        /* the scalar rows are sl_q8a_quantize's / sl_q8a_quantize_static's */
        sl_q8a_t one[7];
        if (stat)
            sl_q8a_quantize_static(x + 3 * k, k, xmax, one);
        else
            sl_q8a_quantize(x + 3 * k, k, one);
        CHECK(!memcmp(one, a + 3 * nb, sizeof one));
    }
    CHECKF(a[3 * nb].q[5] == 0 && a[3 * nb + 1].sum != 0, "NaN quantizes to 0, the rest kept");
    /* the static step of each block of row 0: its range where its own max is within it, else
     * its own max (a range is never a clip) */
    int bad_step = 0, within = 0;
    for (int64_t bl = 0; bl < nb; bl++) {
        float own = 0.0f;
        for (int j = 0; j < SL_QBLOCK; j++)
            own = fmaxf(own, fabsf(x[bl * SL_QBLOCK + j]));
        const float want = (xmax[bl] > own ? xmax[bl] : own) / 127.0f;
        within += xmax[bl] > own;
        bad_step += a[bl].d != want;
    }
    CHECKF(bad_step == 0 && within > 0 && within < nb,
           "static steps of row 0: %d wrong (%d of %lld blocks within their range)", bad_step,
           within, (long long)nb);
    /* weights quantized on load: the same bytes in both forms (NaN and infinities included) */
    uint8_t *wa = malloc(sl_dtype_bytes(SL_Q8_0, m * k)),
            *wb = malloc(sl_dtype_bytes(SL_Q8_0, m * k));
    sl_q8_0_quantize_rows_form(SL_QFORM_SCALAR, x, m, k, wa);
    sl_q8_0_quantize_rows_form(sl_qform_best(), x, m, k, wb);
    CHECKF(!memcmp(wa, wb, sl_dtype_bytes(SL_Q8_0, m * k)),
           "sl_q8_0_quantize_rows: the %s form's bytes are the scalar form's",
           sl_qform_name(sl_qform_best()));
    free(wa);
    free(wb);
    free(x);
    free(a);
    free(b);
}

int main(void)
{
    test_gguf_blocks();
    test_forms();
    test_backend();
    test_load_quant();
    test_packed();
    test_packed_blocks();
    test_quantize_forms();
    return sl_test_finish("test_cpu_quant");
}
