/*
 * test_cpu_ops.c — every CPU backend op against a naive double-precision reference written
 * here (not against another backend op), on odd sizes, plus exact checks of the f16/bf16
 * conversions on values whose encodings are known.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/elementwise.h"
#include "sl_test.h"

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static float frand(void) /* uniform in [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static sl_tensor_t *rand_tensor(sl_backend_t *be, sl_dtype_t dt, int64_t r, int64_t c, float *host)
{
    sl_tensor_t *t = sl_tensor_new2(be, dt, r, c);
    uint16_t *tmp = malloc((size_t)(r * c) * 2);
    for (int64_t i = 0; i < r * c; i++) {
        float v = frand();
        if (dt == SL_F16) {
            tmp[i] = sl_f32_to_f16(v);
            v = sl_f16_to_f32(tmp[i]);
        } else if (dt == SL_BF16) {
            tmp[i] = sl_f32_to_bf16(v);
            v = sl_bf16_to_f32(tmp[i]);
        }
        host[i] = v; /* the exact value the backend sees */
    }
    sl_copy_h2d(t, dt == SL_F32 ? (void *)host : (void *)tmp, sl_tensor_bytes(t));
    free(tmp);
    return t;
}

static void test_matmul(sl_backend_t *be, sl_dtype_t dt, int ta, int tb, int with_bias)
{
    const int64_t m = 37, n = 53, k = 71;
    float *ah = malloc(sizeof(float) * m * k), *bh = malloc(sizeof(float) * k * n);
    float *ch = malloc(sizeof(float) * m * n), *bias = malloc(sizeof(float) * n);
    sl_tensor_t *a = ta ? rand_tensor(be, dt, k, m, ah) : rand_tensor(be, dt, m, k, ah);
    sl_tensor_t *b = tb ? rand_tensor(be, dt, n, k, bh) : rand_tensor(be, dt, k, n, bh);
    sl_tensor_t *c = rand_tensor(be, SL_F32, m, n, ch);
    sl_tensor_t *bt = sl_tensor_new1(be, SL_F32, n);
    for (int64_t j = 0; j < n; j++)
        bias[j] = frand();
    sl_copy_h2d(bt, bias, sizeof(float) * n);
    const float alpha = 0.75f, beta = 0.5f;
    double *ref = malloc(sizeof(double) * m * n);
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0;
            for (int64_t p = 0; p < k; p++) {
                double av = ta ? ah[p * m + i] : ah[i * k + p];
                double bv = tb ? bh[j * k + p] : bh[p * n + j];
                s += av * bv;
            }
            ref[i * n + j] = alpha * s + beta * ch[i * n + j] + (with_bias ? bias[j] : 0.0);
        }
    sl_matmul(a, ta, b, tb, alpha, beta, with_bias ? bt : NULL, c);
    sl_copy_d2h(ch, c, sizeof(float) * m * n);
    double e = sl_test_rel_err(ch, ref, m * n);
    CHECKF(e < 1e-5, "matmul %s ta=%d tb=%d bias=%d: rel err %g", sl_dtype_name(dt), ta, tb, with_bias, e);
    free(ah), free(bh), free(ch), free(bias), free(ref);
    sl_tensor_free(a), sl_tensor_free(b), sl_tensor_free(c), sl_tensor_free(bt);
}

static double ref_act(int act, double x)
{
    switch (act) {
    case SL_ACT_RELU: return x > 0 ? x : 0;
    case SL_ACT_GELU: return 0.5 * x * (1 + erf(x / sqrt(2.0)));
    case SL_ACT_SILU: return x / (1 + exp(-x));
    case SL_ACT_TANH: return tanh(x);
    case SL_ACT_SIGMOID: return 1 / (1 + exp(-x));
    }
    return x;
}

static void test_elementwise(sl_backend_t *be)
{
    const int64_t r = 19, c = 33;
    float *h = malloc(sizeof(float) * r * c), *o = malloc(sizeof(float) * r * c);
    double *ref = malloc(sizeof(double) * r * c);
    for (int act = SL_ACT_RELU; act <= SL_ACT_SIGMOID; act++) {
        sl_tensor_t *t = rand_tensor(be, SL_F32, r, c, h);
        for (int64_t i = 0; i < r * c; i++)
            ref[i] = ref_act(act, 4.0 * h[i]);
        for (int64_t i = 0; i < r * c; i++)
            h[i] *= 4.0f;
        sl_copy_h2d(t, h, sizeof(float) * r * c);
        sl_activation(t, (sl_act_t)act);
        sl_copy_d2h(o, t, sizeof(float) * r * c);
        double e = sl_test_rel_err(o, ref, r * c);
        CHECKF(e < 1e-6, "activation %s: rel err %g", sl_act_name((sl_act_t)act), e);
        sl_tensor_free(t);
    }
    /* softmax: rows sum to 1 and match exp(x - max)/sum in double; large inputs stay finite */
    sl_tensor_t *t = rand_tensor(be, SL_F32, r, c, h);
    for (int64_t i = 0; i < r * c; i++)
        h[i] = h[i] * 50.0f + (i % c == 0 ? 80.0f : 0.0f);
    sl_copy_h2d(t, h, sizeof(float) * r * c);
    for (int64_t i = 0; i < r; i++) {
        double mx = -INFINITY, s = 0;
        for (int64_t j = 0; j < c; j++)
            mx = fmax(mx, h[i * c + j]);
        for (int64_t j = 0; j < c; j++)
            s += exp(h[i * c + j] - mx);
        for (int64_t j = 0; j < c; j++)
            ref[i * c + j] = exp(h[i * c + j] - mx) / s;
    }
    sl_softmax(t);
    sl_copy_d2h(o, t, sizeof(float) * r * c);
    double e = sl_test_rel_err(o, ref, r * c);
    CHECKF(e < 1e-6, "softmax: rel err %g", e);
    /* bias add and standardisation */
    float *bias = malloc(sizeof(float) * c), *sd = malloc(sizeof(float) * c);
    for (int64_t j = 0; j < c; j++) {
        bias[j] = frand();
        sd[j] = 0.5f + fabsf(frand());
    }
    sl_tensor_t *bt = sl_tensor_new1(be, SL_F32, c), *st = sl_tensor_new1(be, SL_F32, c);
    sl_copy_h2d(bt, bias, sizeof(float) * c);
    sl_copy_h2d(st, sd, sizeof(float) * c);
    sl_copy_h2d(t, h, sizeof(float) * r * c);
    sl_add_bias(t, bt);
    sl_copy_d2h(o, t, sizeof(float) * r * c);
    for (int64_t i = 0; i < r * c; i++)
        ref[i] = (double)h[i] + bias[i % c];
    CHECKF(sl_test_rel_err(o, ref, r * c) < 1e-7, "add_bias");
    sl_copy_h2d(t, h, sizeof(float) * r * c);
    sl_standardize(t, bt, st);
    sl_copy_d2h(o, t, sizeof(float) * r * c);
    for (int64_t i = 0; i < r * c; i++)
        ref[i] = ((double)h[i] - bias[i % c]) / sd[i % c];
    CHECKF(sl_test_rel_err(o, ref, r * c) < 1e-6, "standardize");
    sl_tensor_free(t), sl_tensor_free(bt), sl_tensor_free(st);
    free(h), free(o), free(ref), free(bias), free(sd);
}

static void test_conversions(sl_backend_t *be)
{
    /* encodings from the IEEE 754 binary16 and bfloat16 definitions */
    CHECK(sl_f32_to_f16(1.0f) == 0x3c00);
    CHECK(sl_f32_to_f16(-2.0f) == 0xc000);
    CHECK(sl_f32_to_f16(65504.0f) == 0x7bff);
    CHECK(sl_f32_to_f16(65520.0f) == 0x7c00);            /* rounds to +Inf */
    CHECK(sl_f32_to_f16(5.9604645e-8f) == 0x0001);       /* smallest subnormal */
    CHECK(sl_f32_to_f16(6.1035156e-5f) == 0x0400);       /* smallest normal */
    CHECK(sl_f32_to_f16(1.0f + 1.0f / 2048.0f) == 0x3c00); /* tie rounds to even */
    CHECK(sl_f32_to_f16(1.0f + 3.0f / 2048.0f) == 0x3c02);
    CHECK((sl_f32_to_f16(NAN) & 0x7c00) == 0x7c00 && (sl_f32_to_f16(NAN) & 0x3ff) != 0);
    CHECK(sl_f16_to_f32(0x0001) == 5.9604645e-8f);
    CHECK(sl_f16_to_f32(0x3555) == 0.333251953125f);
    CHECK(isinf(sl_f16_to_f32(0xfc00)) && sl_f16_to_f32(0xfc00) < 0);
    CHECK(sl_f32_to_bf16(1.0f) == 0x3f80);
    CHECK(sl_f32_to_bf16(3.140625f) == 0x4049);
    CHECK(sl_bf16_to_f32(0xc0a0) == -5.0f);
    CHECK(isnan(sl_bf16_to_f32(sl_f32_to_bf16(NAN))));
    /* every f16 value survives f16 -> f32 -> f16 */
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff))
            continue; /* NaN payloads may change */
        if (sl_f32_to_f16(sl_f16_to_f32((uint16_t)h)) != h)
            bad++;
    }
    CHECKF(bad == 0, "%d f16 values do not round-trip", bad);
    /* the backend's cast op agrees with the scalar conversions */
    const int64_t n = 1000;
    float *h = malloc(sizeof(float) * n), *back = malloc(sizeof(float) * n);
    uint16_t *half = malloc(2 * n);
    sl_tensor_t *src = rand_tensor(be, SL_F32, 1, n, h);
    for (int dt = SL_F16; dt <= SL_BF16; dt++) {
        sl_tensor_t *mid = sl_tensor_new2(be, (sl_dtype_t)dt, 1, n);
        sl_tensor_t *dst = sl_tensor_new2(be, SL_F32, 1, n);
        sl_cast(src, mid);
        sl_copy_d2h(half, mid, 2 * n);
        sl_cast(mid, dst);
        sl_copy_d2h(back, dst, sizeof(float) * n);
        int mism = 0;
        for (int64_t i = 0; i < n; i++) {
            uint16_t want = dt == SL_F16 ? sl_f32_to_f16(h[i]) : sl_f32_to_bf16(h[i]);
            float wantf = dt == SL_F16 ? sl_f16_to_f32(want) : sl_bf16_to_f32(want);
            mism += half[i] != want || back[i] != wantf;
        }
        CHECKF(mism == 0, "cast f32<->%s: %d mismatches", sl_dtype_name((sl_dtype_t)dt), mism);
        sl_tensor_free(mid), sl_tensor_free(dst);
    }
    sl_tensor_free(src);
    free(h), free(back), free(half);
}

int main(void)
{
    sl_error_t err;
    sl_backend_t *be = sl_backend_create(SL_BACKEND_CPU, 0, 2, &err);
    CHECK(be != NULL);
    if (!be)
        return sl_test_finish("test_cpu_ops");
    for (int dt = SL_F32; dt <= SL_BF16; dt++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int bias = 0; bias < 2; bias++)
                    test_matmul(be, (sl_dtype_t)dt, ta, tb, bias);
    test_elementwise(be);
    test_conversions(be);
    /* a view of the first rows shares memory and shrinks dim 0 only */
    sl_tensor_t *t = sl_tensor_new2(be, SL_F32, 8, 3);
    sl_tensor_t v = sl_tensor_rows(t, 5);
    CHECK(v.data == t->data && v.shape[0] == 5 && v.shape[1] == 3 && !v.owns_data);
    sl_tensor_zero(t);
    float z[24];
    sl_copy_d2h(z, t, sizeof z);
    int nz = 0;
    for (int i = 0; i < 24; i++)
        nz += z[i] != 0.0f;
    CHECK(nz == 0);
    sl_tensor_free(t);
    CHECK(sl_dtype_parse("bfloat16") == SL_BF16 && sl_dtype_parse("f64") == -1);
    CHECK(sl_act_parse("gelu") == SL_ACT_GELU && sl_act_parse("softmax") == -1);
    sl_backend_free(be);
    return sl_test_finish("test_cpu_ops");
}
