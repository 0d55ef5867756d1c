/*
 * test_cpu_ops.c — every CPU backend op against a naive double-precision reference written
 * here (not against another backend op), on odd sizes, plus exact checks of the f16/bf16
 * conversions on values whose encodings are known. The transformer ops (residual add, layer
 * norm, embedding, L2 normalisation) are checked on their edge cases too: large offsets, zero
 * rows. The packed-token
 * ops (RMSNorm, RoPE, SwiGLU, KV-cache write and attention, row gather, packed pooling, sharded
 * log-sum-exp, top-k) likewise: slots interleaved in the packing, a slot without keys, decode
 * positions, several key blocks and tiles, ties in top-k. NaN propagates through activations
 * and softmax; a tensor shape whose size overflows 64 bits is a fatal error.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

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
    CHECKF(e < 1e-5, "matmul %s ta=%d tb=%d bias=%d: rel err %g", sl_dtype_name(dt), ta, tb,
           with_bias, e);
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

/* NaN in, NaN out: every activation (the backend op and the shared per-element function) and
 * softmax keep a NaN, so a NaN weight or input cannot become a finite, confident output. ReLU
 * used to map NaN to 0. Finite and infinite inputs keep their values. */
static void test_activation_nan(sl_backend_t *be)
{
    const float in[6] = {NAN, -NAN, 1.5f, -2.0f, 3.0f, -0.25f};
    for (int act = SL_ACT_RELU; act <= SL_ACT_SIGMOID; act++) {
        float o[6];
        sl_tensor_t *t = sl_tensor_new2(be, SL_F32, 2, 3);
        sl_copy_h2d(t, in, sizeof in);
        sl_activation(t, (sl_act_t)act);
        sl_copy_d2h(o, t, sizeof o);
        CHECKF(isnan(o[0]) && isnan(o[1]), "activation %s: NaN in gave %g, %g",
               sl_act_name((sl_act_t)act), o[0], o[1]);
        CHECKF(isnan(sl_apply_act(act, NAN)), "sl_apply_act(%s, NaN) is not NaN",
               sl_act_name((sl_act_t)act));
        for (int i = 2; i < 6; i++)
            CHECKF(fabs(o[i] - ref_act(act, in[i])) <= 1e-6 * fmax(1.0, fabs(ref_act(act, in[i]))),
                   "activation %s(%g) = %g", sl_act_name((sl_act_t)act), in[i], o[i]);
        sl_tensor_free(t);
    }
    CHECK(sl_relu(-0.0f) == 0.0f && !signbit(sl_relu(-0.0f)) && sl_relu(INFINITY) == INFINITY &&
          sl_relu(-INFINITY) == 0.0f);
    /* softmax over a row holding a NaN: the whole row is NaN, the other row untouched */
    const float sm[6] = {0.5f, NAN, -1.0f, 0.0f, 0.0f, 0.0f};
    float o[6];
    sl_tensor_t *t = sl_tensor_new2(be, SL_F32, 2, 3);
    sl_copy_h2d(t, sm, sizeof sm);
    sl_softmax(t);
    sl_copy_d2h(o, t, sizeof o);
    CHECKF(isnan(o[0]) && isnan(o[1]) && isnan(o[2]), "softmax of a NaN row: %g %g %g", o[0], o[1],
           o[2]);
    CHECKF(fabsf(o[3] - 1.0f / 3) < 1e-7f && fabsf(o[5] - 1.0f / 3) < 1e-7f, "softmax row 2: %g",
           o[3]);
    sl_tensor_free(t);
}

/* A tensor shape whose element or byte count overflows 64 bits is a fatal error naming the
 * overflow, not a wrapped-around small allocation (2^62 x 2 floats wrapped to 0 bytes, and a
 * reader then wrote past it). Run in a child: sl_fatal exits the process. */
static int child_exit(sl_backend_t *be, int64_t d0, int64_t d1)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        sl_tensor_t *t = sl_tensor_new2(be, SL_F32, d0, d1);
        _exit(t ? 0 : 9);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void test_shape_overflow(sl_backend_t *be)
{
    const int64_t big[][2] = {{(int64_t)1 << 62, 2},
                              {((int64_t)1 << 62) + 1, 4},
                              {INT64_MAX, 2},
                              {(int64_t)1 << 32, (int64_t)1 << 32},
                              {(int64_t)1 << 61, 4}};
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
        int rc = child_exit(be, big[i][0], big[i][1]);
        CHECKF(rc == 1, "a [%lld, %lld] f32 tensor: child exit %d, expected the fatal exit 1",
               (long long)big[i][0], (long long)big[i][1], rc);
    }
    sl_tensor_t t = {0};
    t.ndim = 2;
    t.shape[0] = 1000;
    t.shape[1] = 1000;
    t.dtype = SL_F32;
    CHECK(sl_tensor_numel(&t) == 1000000 && sl_tensor_bytes(&t) == 4000000);
}

static void test_conversions(sl_backend_t *be)
{
    /* encodings from the IEEE 754 binary16 and bfloat16 definitions */
    CHECK(sl_f32_to_f16(1.0f) == 0x3c00);
    CHECK(sl_f32_to_f16(-2.0f) == 0xc000);
    CHECK(sl_f32_to_f16(65504.0f) == 0x7bff);
    CHECK(sl_f32_to_f16(65520.0f) == 0x7c00);              /* rounds to +Inf */
    CHECK(sl_f32_to_f16(5.9604645e-8f) == 0x0001);         /* smallest subnormal */
    CHECK(sl_f32_to_f16(6.1035156e-5f) == 0x0400);         /* smallest normal */
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

/* ---- transformer ops ------------------------------------------------------------------------ */

static sl_tensor_t *f32_tensor(sl_backend_t *be, int ndim, const int64_t *shape, const float *host)
{
    sl_tensor_t *t = sl_tensor_new(be, SL_F32, ndim, shape);
    sl_copy_h2d(t, host, sl_tensor_bytes(t));
    return t;
}

static sl_tensor_t *i32_tensor(sl_backend_t *be, int64_t n, const int32_t *host)
{
    sl_tensor_t *t = sl_tensor_new1(be, SL_I32, n);
    sl_copy_h2d(t, host, sizeof(int32_t) * n);
    return t;
}

static void test_add(sl_backend_t *be)
{
    const int64_t shape[3] = {3, 7, 5}, n = 105;
    float x[105], y[105], o[105];
    double ref[105];
    for (int64_t i = 0; i < n; i++) {
        x[i] = frand() * 10.0f;
        y[i] = frand();
        ref[i] = (double)x[i] + y[i];
    }
    sl_tensor_t *xt = f32_tensor(be, 3, shape, x), *yt = f32_tensor(be, 3, shape, y);
    sl_add(xt, yt);
    sl_copy_d2h(o, xt, sizeof o);
    CHECKF(sl_test_rel_err(o, ref, n) < 1e-7, "add");
    sl_tensor_free(xt), sl_tensor_free(yt);
}

/* Rows: plain random, offset 1000 with spread 1e-3 (catastrophic cancellation in a one-pass
 * E[x^2] - E[x]^2), constant (variance 0: eps alone), and large values. Out of place and in
 * place, eps 1e-12 (BERT-family checkpoints) and 1e-5 (torch default). */
static void test_layernorm(sl_backend_t *be)
{
    enum { R = 5, N = 37 };
    float x[R * N], g[N], b[N], o[R * N];
    double ref[R * N];
    for (int64_t j = 0; j < N; j++) {
        g[j] = 0.5f + frand();
        b[j] = frand();
    }
    const float eps_list[2] = {1e-12f, 1e-5f};
    for (int e = 0; e < 2; e++)
        for (int inplace = 0; inplace < 2; inplace++) {
            for (int64_t j = 0; j < N; j++) {
                x[0 * N + j] = frand();
                x[1 * N + j] = 1000.0f + 1e-3f * frand();
                x[2 * N + j] = -3.25f;
                x[3 * N + j] = 1e4f * frand();
                x[4 * N + j] = -1000.0f + 0.5f * frand();
            }
            const float eps = eps_list[e];
            for (int64_t r = 0; r < R; r++) {
                double mean = 0, var = 0;
                for (int64_t j = 0; j < N; j++)
                    mean += x[r * N + j];
                mean /= N;
                for (int64_t j = 0; j < N; j++)
                    var += (x[r * N + j] - mean) * (x[r * N + j] - mean);
                var /= N;
                for (int64_t j = 0; j < N; j++)
                    ref[r * N + j] = (x[r * N + j] - mean) / sqrt(var + eps) * g[j] + b[j];
            }
            int64_t xs[2] = {R, N}, vs[1] = {N};
            sl_tensor_t *xt = f32_tensor(be, 2, xs, x), *gt = f32_tensor(be, 1, vs, g);
            sl_tensor_t *bt = f32_tensor(be, 1, vs, b);
            sl_tensor_t *ot = inplace ? xt : sl_tensor_new2(be, SL_F32, R, N);
            sl_layernorm(xt, gt, bt, eps, ot);
            sl_copy_d2h(o, ot, sizeof o);
            for (int64_t r = 0; r < R; r++) {
                double err = sl_test_rel_err(o + r * N, ref + r * N, N);
                CHECKF(err < 1e-5, "layernorm eps %g %s row %lld: rel err %g", eps,
                       inplace ? "in place" : "out of place", (long long)r, err);
            }
            if (!inplace)
                sl_tensor_free(ot);
            sl_tensor_free(xt), sl_tensor_free(gt), sl_tensor_free(bt);
        }
}

/* Gathers are exact: the output is the decoded table entry, bit for bit. */
static void test_embedding(sl_backend_t *be)
{
    enum { V = 11, D = 13, NI = 9 };
    const int32_t ids[NI] = {0, 10, 3, 3, 7, 0, 1, 10, 5};
    float host[V * D], o[NI * D];
    for (int dt = SL_F32; dt <= SL_BF16; dt++) {
        sl_tensor_t *table = rand_tensor(be, (sl_dtype_t)dt, V, D, host);
        sl_tensor_t *it = i32_tensor(be, NI, ids), *ot = sl_tensor_new2(be, SL_F32, NI, D);
        sl_embedding(table, it, ot);
        sl_copy_d2h(o, ot, sizeof o);
        int bad = 0;
        for (int64_t i = 0; i < NI; i++)
            for (int64_t j = 0; j < D; j++)
                bad += o[i * D + j] != host[ids[i] * D + j];
        CHECKF(bad == 0, "embedding %s: %d mismatches", sl_dtype_name((sl_dtype_t)dt), bad);
        sl_tensor_free(table), sl_tensor_free(it), sl_tensor_free(ot);
    }
}

/* Random rows, a zero row (stays zero: divided by 1e-12, not by 0) and a tiny row (norm below
 * 1e-12: divided by 1e-12, not normalised to 1). */
static void test_l2_normalize(sl_backend_t *be)
{
    enum { R = 4, D = 9 };
    float x[R * D], o[R * D];
    double ref[R * D];
    for (int64_t j = 0; j < D; j++) {
        x[0 * D + j] = frand();
        x[1 * D + j] = 0.0f;
        x[2 * D + j] = 1e-14f * frand();
        x[3 * D + j] = 1e3f * frand();
    }
    for (int64_t r = 0; r < R; r++) {
        double ss = 0;
        for (int64_t j = 0; j < D; j++)
            ss += (double)x[r * D + j] * x[r * D + j];
        double nrm = fmax(sqrt(ss), 1e-12);
        for (int64_t j = 0; j < D; j++)
            ref[r * D + j] = x[r * D + j] / nrm;
    }
    const int64_t xs[2] = {R, D};
    sl_tensor_t *xt = f32_tensor(be, 2, xs, x);
    sl_l2_normalize(xt);
    sl_copy_d2h(o, xt, sizeof o);
    for (int64_t r = 0; r < R; r++) {
        double err = sl_test_rel_err(o + r * D, ref + r * D, D);
        CHECKF(err < 1e-6, "l2_normalize row %lld: rel err %g", (long long)r, err);
    }
    int zero = 1;
    for (int64_t j = 0; j < D; j++)
        zero &= o[D + j] == 0.0f;
    CHECKF(zero, "l2_normalize of a zero row is not zero");
    sl_tensor_free(xt);
}

/* ---- packed-token ops ----------------------------------------------------------------------- */

/* Rows: random, large values, a zero row (eps alone), a tiny one; in place and out of place. */
static void test_rmsnorm(sl_backend_t *be)
{
    enum { R = 4, N = 37 };
    float x[R * N], w[N], o[R * N];
    double ref[R * N];
    for (int64_t j = 0; j < N; j++) {
        w[j] = 0.5f + frand();
        x[0 * N + j] = frand();
        x[1 * N + j] = 300.0f * frand();
        x[2 * N + j] = 0.0f;
        x[3 * N + j] = 1e-4f * frand();
    }
    const float eps_list[2] = {1e-5f, 1e-6f};
    for (int e = 0; e < 2; e++)
        for (int inplace = 0; inplace < 2; inplace++) {
            for (int64_t r = 0; r < R; r++) {
                double ss = 0;
                for (int64_t j = 0; j < N; j++)
                    ss += (double)x[r * N + j] * x[r * N + j];
                const double rs = 1.0 / sqrt(ss / N + eps_list[e]);
                for (int64_t j = 0; j < N; j++)
                    ref[r * N + j] = x[r * N + j] * rs * w[j];
            }
            int64_t xs[2] = {R, N}, ws[1] = {N};
            sl_tensor_t *xt = f32_tensor(be, 2, xs, x), *wt = f32_tensor(be, 1, ws, w);
            sl_tensor_t *ot = inplace ? xt : sl_tensor_new2(be, SL_F32, R, N);
            sl_rmsnorm(xt, wt, eps_list[e], ot);
            sl_copy_d2h(o, ot, sizeof o);
            for (int64_t r = 0; r < R; r++) {
                double err = r == 2 ? 0.0 : sl_test_rel_err(o + r * N, ref + r * N, N);
                int zero = 1;
                for (int64_t j = 0; r == 2 && j < N; j++)
                    zero &= o[r * N + j] == 0.0f;
                CHECKF(err < 1e-6 && zero, "rmsnorm eps %g %s row %lld: rel err %g", eps_list[e],
                       inplace ? "in place" : "out of place", (long long)r, err);
            }
            if (!inplace)
                sl_tensor_free(ot);
            sl_tensor_free(xt), sl_tensor_free(wt);
        }
}

/* inv_freq as Hugging Face computes it in f32: 1 / theta^(2i / Dh). */
static void hf_inv_freq(float theta, int64_t dh, float *inv)
{
    for (int64_t i = 0; i < dh / 2; i++)
        inv[i] = 1.0f / powf(theta, (float)(2 * i) / (float)dh);
}

/* The Hugging Face formula literally, in double on the f32 angle (float)pos * inv_freq:
 *   emb = cat(freqs, freqs); out = x * cos(emb) + rotate_half(x) * sin(emb),
 *   rotate_half(x) = cat(-x[half:], x[:half]). */
static void rope_case(sl_backend_t *be, int64_t T, int64_t H, int64_t Dh, const int32_t *pos,
                      const float *inv)
{
    const int64_t n = T * H * Dh, half = Dh / 2;
    float *x = malloc(sizeof(float) * n), *o = malloc(sizeof(float) * n);
    double *ref = malloc(sizeof(double) * n);
    for (int64_t i = 0; i < n; i++)
        x[i] = 2.0f * frand();
    for (int64_t t = 0; t < T; t++)
        for (int64_t h = 0; h < H; h++) {
            const float *xr = x + (t * H + h) * Dh;
            for (int64_t j = 0; j < Dh; j++) {
                const double ang = (double)((float)pos[t] * inv[j % half]);
                const double rot = j < half ? -(double)xr[j + half] : (double)xr[j - half];
                ref[(t * H + h) * Dh + j] = xr[j] * cos(ang) + rot * sin(ang);
            }
        }
    const int64_t xs[3] = {T, H, Dh}, fs[1] = {half};
    sl_tensor_t *xt = f32_tensor(be, 3, xs, x), *pt = i32_tensor(be, T, pos);
    sl_tensor_t *ft = f32_tensor(be, 1, fs, inv);
    sl_rope(xt, pt, ft);
    sl_copy_d2h(o, xt, sizeof(float) * n);
    double err = sl_test_rel_err(o, ref, n);
    CHECKF(err < 1e-6, "rope T %lld H %lld Dh %lld: rel err %g", (long long)T, (long long)H,
           (long long)Dh, err);
    sl_tensor_free(xt), sl_tensor_free(pt), sl_tensor_free(ft);
    free(x), free(o), free(ref);
}

static void test_rope(sl_backend_t *be)
{
    /* odd half (Dh 10), positions in any order, not from 0 */
    const int32_t pos1[7] = {5, 0, 4095, 17, 4096, 1, 300};
    float inv[64];
    for (int i = 0; i < 5; i++)
        inv[i] = 0.5f + 0.7f * frand();
    rope_case(be, 7, 3, 10, pos1, inv);
    /* SmolLM2's shape: Dh 64, theta 1e5, positions up to 4096 */
    const int32_t pos2[9] = {0, 1, 2, 100, 1000, 2047, 4000, 4095, 4096};
    hf_inv_freq(1e5f, 64, inv);
    CHECK(inv[0] == 1.0f && fabs(inv[31] - pow(1e5, -62.0 / 64.0)) < 1e-6 * inv[31]);
    rope_case(be, 9, 2, 64, pos2, inv);
    hf_inv_freq(1e4f, 64, inv);
    rope_case(be, 9, 3, 64, pos2, inv);
}

static void test_swiglu(sl_backend_t *be)
{
    enum { R = 3, F = 13 };
    float gu[R * 2 * F], o[R * F];
    double ref[R * F];
    for (int64_t i = 0; i < R * 2 * F; i++)
        gu[i] = 6.0f * frand();
    for (int64_t r = 0; r < R; r++)
        for (int64_t j = 0; j < F; j++) {
            const double g = gu[r * 2 * F + j], u = gu[r * 2 * F + F + j];
            ref[r * F + j] = g / (1.0 + exp(-g)) * u;
        }
    const int64_t gs[2] = {R, 2 * F};
    sl_tensor_t *gt = f32_tensor(be, 2, gs, gu), *ot = sl_tensor_new2(be, SL_F32, R, F);
    sl_swiglu(gt, ot);
    sl_copy_d2h(o, ot, sizeof o);
    double err = sl_test_rel_err(o, ref, R * F);
    CHECKF(err < 1e-6, "swiglu: rel err %g", err);
    sl_tensor_free(gt), sl_tensor_free(ot);
}

/* Written rows equal their source bit for bit; every other row keeps its old contents. */
static void test_kv_write(sl_backend_t *be)
{
    enum { S = 3, C = 5, HKV = 2, DH = 3, T = 4, ROW = HKV * DH };
    const int32_t slot[T] = {2, 0, 2, 1}, pos[T] = {4, 0, 1, 3};
    float cache[S * C * ROW], src[T * ROW], o[S * C * ROW];
    for (int64_t i = 0; i < S * C * ROW; i++)
        cache[i] = -7.0f - (float)i;
    for (int64_t i = 0; i < T * ROW; i++)
        src[i] = frand();
    const int64_t cs[4] = {S, C, HKV, DH}, ss[3] = {T, HKV, DH};
    sl_tensor_t *ct = f32_tensor(be, 4, cs, cache), *st = f32_tensor(be, 3, ss, src);
    sl_tensor_t *slt = i32_tensor(be, T, slot), *pt = i32_tensor(be, T, pos);
    sl_kv_write(ct, st, slt, pt);
    sl_copy_d2h(o, ct, sizeof o);
    for (int t = 0; t < T; t++)
        memcpy(cache + (slot[t] * C + pos[t]) * ROW, src + t * ROW, sizeof(float) * ROW);
    CHECKF(memcmp(o, cache, sizeof o) == 0, "kv_write: cache differs");
    sl_tensor_free(ct), sl_tensor_free(st), sl_tensor_free(slt), sl_tensor_free(pt);
}

/* softmax(scale q k^T) v over the allowed keys, in double, straight from the contract. */
static void ref_attention_kv(const float *q, const float *kc, const float *vc, const int32_t *slot,
                             const int32_t *pos, const int32_t *kv_len, double scale, int causal,
                             int64_t T, int64_t C, int64_t H, int64_t Hkv, int64_t Dh, double *out)
{
    double *p = malloc(sizeof(double) * (size_t)(C + 1));
    for (int64_t t = 0; t < T; t++)
        for (int64_t h = 0; h < H; h++) {
            const int64_t g = h / (H / Hkv), s = slot[t];
            const float *qh = q + (t * H + h) * Dh;
            double *oh = out + (t * H + h) * Dh;
            for (int64_t d = 0; d < Dh; d++)
                oh[d] = 0;
            double mx = -INFINITY, sum = 0;
            int64_t n = 0;
            for (int64_t j = 0; j < kv_len[s]; j++) {
                if (causal && j > pos[t])
                    break;
                double dot = 0;
                for (int64_t d = 0; d < Dh; d++)
                    dot += (double)qh[d] * kc[((s * C + j) * Hkv + g) * Dh + d];
                p[j] = scale * dot;
                mx = fmax(mx, p[j]);
                n = j + 1;
            }
            for (int64_t j = 0; j < n; j++) {
                p[j] = exp(p[j] - mx);
                sum += p[j];
            }
            for (int64_t j = 0; j < n; j++)
                for (int64_t d = 0; d < Dh; d++)
                    oh[d] += p[j] / sum * vc[((s * C + j) * Hkv + g) * Dh + d];
        }
    free(p);
}

/* The whole cache is random (positions past kv_len too, so reading one would show); out starts
 * as NaN, so every element must be written. */
static void attention_kv_case(sl_backend_t *be, const char *what, int64_t S, int64_t C, int64_t H,
                              int64_t Hkv, int64_t Dh, int64_t T, const int32_t *slot,
                              const int32_t *pos, const int32_t *kv_len, int causal, float amp)
{
    const int64_t nq = T * H * Dh, nc = S * C * Hkv * Dh;
    float *q = malloc(sizeof(float) * (size_t)(nq + 1)),
          *o = malloc(sizeof(float) * (size_t)(nq + 1));
    float *k = malloc(sizeof(float) * (size_t)nc), *v = malloc(sizeof(float) * (size_t)nc);
    double *ref = malloc(sizeof(double) * (size_t)(nq + 1));
    for (int64_t i = 0; i < nq; i++)
        q[i] = amp * frand();
    for (int64_t i = 0; i < nc; i++) {
        k[i] = amp * frand();
        v[i] = frand();
    }
    const double scale = 1.0 / sqrt((double)Dh);
    ref_attention_kv(q, k, v, slot, pos, kv_len, scale, causal, T, C, H, Hkv, Dh, ref);
    const int64_t qs[3] = {T, H, Dh}, cs[4] = {S, C, Hkv, Dh};
    sl_tensor_t *qt = f32_tensor(be, 3, qs, q), *kt = f32_tensor(be, 4, cs, k);
    sl_tensor_t *vt = f32_tensor(be, 4, cs, v), *ot = sl_tensor_new(be, SL_F32, 3, qs);
    sl_tensor_t *st = i32_tensor(be, T, slot), *pt = i32_tensor(be, T, pos);
    sl_tensor_t *lt = i32_tensor(be, S, kv_len);
    for (int64_t i = 0; i < nq; i++)
        o[i] = NAN;
    sl_copy_h2d(ot, o, sizeof(float) * (size_t)nq);
    sl_attention_kv(qt, kt, vt, st, pt, lt, (float)scale, causal, ot);
    sl_copy_d2h(o, ot, sizeof(float) * (size_t)nq);
    double err = sl_test_rel_err(o, ref, nq);
    int zeros_ok = 1; /* tokens without an allowed key: exact zeros */
    for (int64_t t = 0; t < T; t++)
        if (kv_len[slot[t]] == 0 || (causal && pos[t] < 0))
            for (int64_t i = 0; i < H * Dh; i++)
                zeros_ok &= o[t * H * Dh + i] == 0.0f;
    CHECKF(err < 1e-5 && zeros_ok,
           "attention_kv %s %s (T %lld H %lld Hkv %lld Dh %lld): rel err %g%s", what,
           causal ? "causal" : "full", (long long)T, (long long)H, (long long)Hkv, (long long)Dh,
           err, zeros_ok ? "" : ", a token without keys is not zero");
    sl_tensor_free(qt), sl_tensor_free(kt), sl_tensor_free(vt), sl_tensor_free(ot);
    sl_tensor_free(st), sl_tensor_free(pt), sl_tensor_free(lt);
    free(q), free(o), free(k), free(v), free(ref);
}

/* Appends count tokens of slot s at positions p0 .. p0+count-1 to the packing, each inserted at
 * a pseudo-random place among the tokens already there: slots interleave, and a slot's tokens
 * need not be in position order (the contract does not ask for it). */
static int64_t pack_tokens(int32_t *slot, int32_t *pos, int64_t T, int32_t s, int32_t p0,
                           int32_t count)
{
    for (int32_t i = 0; i < count; i++) {
        const int64_t at = (int64_t)(((uint64_t)(i + 1) * 2654435761u) % (uint64_t)(T + 1));
        memmove(slot + at + 1, slot + at, sizeof(int32_t) * (size_t)(T - at));
        memmove(pos + at + 1, pos + at, sizeof(int32_t) * (size_t)(T - at));
        slot[at] = s;
        pos[at] = p0 + i;
        T++;
    }
    return T;
}

static void test_attention_kv(sl_backend_t *be)
{
    enum { TMAX = 200 };
    int32_t slot[TMAX], pos[TMAX];
    /* Small: a chunk continuing at position 3, a prefill from 0, a slot with kv_len 0, a decode
     * token at position 10; H/Hkv = 3; slots interleaved. */
    {
        const int32_t kv_len[4] = {8, 5, 0, 11};
        int64_t T = 0;
        T = pack_tokens(slot, pos, T, 0, 3, 5);
        T = pack_tokens(slot, pos, T, 1, 0, 5);
        T = pack_tokens(slot, pos, T, 2, 0, 2);
        T = pack_tokens(slot, pos, T, 3, 10, 1);
        for (int c = 0; c < 2; c++) {
            attention_kv_case(be, "small mixed", 4, 12, 6, 2, 7, T, slot, pos, kv_len, c, 1.0f);
            attention_kv_case(be, "small mixed MQA", 4, 12, 3, 1, 10, T, slot, pos, kv_len, c,
                              3.0f);
        }
    }
    /* Several tiles per slot and several key blocks (100 tokens from 0; 30 tokens at 40..69;
     * one decode token at 137 of 138 keys), large scores. */
    {
        const int32_t kv_len[3] = {100, 138, 70};
        int64_t T = 0;
        T = pack_tokens(slot, pos, T, 0, 0, 100);
        T = pack_tokens(slot, pos, T, 1, 137, 1);
        T = pack_tokens(slot, pos, T, 2, 40, 30);
        for (int c = 0; c < 2; c++) {
            attention_kv_case(be, "long mixed", 3, 150, 6, 2, 16, T, slot, pos, kv_len, c, 1.0f);
            attention_kv_case(be, "long mixed amp 4", 3, 150, 9, 3, 9, T, slot, pos, kv_len, c,
                              4.0f);
        }
    }
    /* Decode: one token per slot, different lengths, in reverse slot order. */
    {
        const int32_t kv_len[5] = {1, 65, 0, 129, 300};
        for (int s = 0; s < 5; s++) {
            slot[s] = 4 - s;
            pos[s] = kv_len[4 - s] - 1;
        }
        attention_kv_case(be, "decode", 5, 301, 4, 2, 12, 5, slot, pos, kv_len, 1, 2.0f);
    }
    /* Encoder rows: not causal, kv_len = row lengths (one empty row), multi-head. */
    {
        const int32_t kv_len[3] = {5, 0, 70};
        int64_t T = 0;
        T = pack_tokens(slot, pos, T, 0, 0, 5);
        T = pack_tokens(slot, pos, T, 2, 0, 70);
        attention_kv_case(be, "encoder", 3, 72, 4, 4, 8, T, slot, pos, kv_len, 0, 1.0f);
    }
    /* No tokens at all: nothing to do, nothing read. */
    {
        const int32_t kv_len[1] = {3};
        attention_kv_case(be, "empty", 1, 4, 2, 1, 4, 0, slot, pos, kv_len, 1, 1.0f);
    }
}

static void test_gather_rows(sl_backend_t *be)
{
    enum { N = 7, D = 5, M = 6 };
    const int32_t idx[M] = {6, 0, 3, 3, 1, 6};
    float src[N * D], o[M * D];
    for (int64_t i = 0; i < N * D; i++)
        src[i] = frand();
    const int64_t ss[2] = {N, D};
    sl_tensor_t *st = f32_tensor(be, 2, ss, src), *it = i32_tensor(be, M, idx);
    sl_tensor_t *ot = sl_tensor_new2(be, SL_F32, M, D);
    sl_gather_rows(st, it, ot);
    sl_copy_d2h(o, ot, sizeof o);
    int bad = 0;
    for (int64_t i = 0; i < M; i++)
        bad += memcmp(o + i * D, src + idx[i] * D, sizeof(float) * D) != 0;
    CHECKF(bad == 0, "gather_rows: %d rows differ", bad);
    sl_tensor_free(st), sl_tensor_free(it), sl_tensor_free(ot);
}

static void test_pool_packed(sl_backend_t *be)
{
    enum { T = 9, D = 6, B = 4 };
    const int32_t off[B + 1] = {0, 4, 4, 5, 9}; /* rows of 4, 0, 1 and 4 tokens */
    float x[T * D], o[B * D];
    double ref[B * D];
    for (int64_t i = 0; i < T * D; i++)
        x[i] = frand() + 3.0f;
    const int64_t xs[2] = {T, D};
    sl_tensor_t *xt = f32_tensor(be, 2, xs, x), *ft = i32_tensor(be, B + 1, off);
    sl_tensor_t *ot = sl_tensor_new2(be, SL_F32, B, D);
    for (int mode = SL_POOL_MEAN; mode <= SL_POOL_CLS; mode++) {
        for (int64_t b = 0; b < B; b++)
            for (int64_t j = 0; j < D; j++) {
                double s = 0;
                const int64_t n = off[b + 1] - off[b];
                for (int64_t t = off[b]; t < off[b + 1]; t++)
                    s += x[t * D + j];
                ref[b * D + j] = n == 0 ? 0.0 : (mode == SL_POOL_CLS ? x[off[b] * D + j] : s / n);
            }
        sl_pool_packed(xt, ft, (sl_pool_t)mode, ot);
        sl_copy_d2h(o, ot, sizeof o);
        int zero = 1;
        for (int64_t j = 0; j < D; j++)
            zero &= o[D + j] == 0.0f;
        CHECKF(sl_test_rel_err(o, ref, B * D) < 1e-6 && zero, "pool_packed %s",
               mode ? "cls" : "mean");
    }
    sl_tensor_free(xt), sl_tensor_free(ft), sl_tensor_free(ot);
}

/* Two vocabulary shards [0, 20) and [20, 37): combined as TP ranks would, rowmax, sumexp and
 * the picked logits give log_softmax(row)[target] of the whole row. */
static void test_logsumexp_pick(sl_backend_t *be)
{
    enum { T = 5, V = 37, V1 = 20, V2 = V - V1 };
    const int32_t target[T] = {0, 19, 20, 36, 5};
    const float amp[T] = {1.0f, 30.0f, 80.0f, 5.0f, 0.01f};
    float x[T * V], x1[T * V1], x2[T * V2];
    for (int64_t t = 0; t < T; t++)
        for (int64_t j = 0; j < V; j++) {
            x[t * V + j] = amp[t] * frand() + (t == 2 ? 60.0f : 0.0f);
            if (j < V1)
                x1[t * V1 + j] = x[t * V + j];
            else
                x2[t * V2 + j - V1] = x[t * V + j];
        }
    const int64_t s1[2] = {T, V1}, s2[2] = {T, V2};
    sl_tensor_t *l1 = f32_tensor(be, 2, s1, x1), *l2 = f32_tensor(be, 2, s2, x2);
    sl_tensor_t *tg = i32_tensor(be, T, target);
    sl_tensor_t *m1 = sl_tensor_new1(be, SL_F32, T), *m2 = sl_tensor_new1(be, SL_F32, T);
    sl_tensor_t *e1 = sl_tensor_new1(be, SL_F32, T), *e2 = sl_tensor_new1(be, SL_F32, T);
    sl_tensor_t *p1 = sl_tensor_new1(be, SL_F32, T), *p2 = sl_tensor_new1(be, SL_F32, T);
    sl_logsumexp_parts(l1, m1, e1);
    sl_logsumexp_parts(l2, m2, e2);
    sl_pick_logits(l1, tg, 0, p1);
    sl_pick_logits(l2, tg, V1, p2);
    float hm1[T], hm2[T], he1[T], he2[T], hp1[T], hp2[T];
    sl_copy_d2h(hm1, m1, sizeof hm1), sl_copy_d2h(hm2, m2, sizeof hm2);
    sl_copy_d2h(he1, e1, sizeof he1), sl_copy_d2h(he2, e2, sizeof he2);
    sl_copy_d2h(hp1, p1, sizeof hp1), sl_copy_d2h(hp2, p2, sizeof hp2);
    for (int64_t t = 0; t < T; t++) {
        double mx = -INFINITY, mx1 = -INFINITY, s = 0, s1r = 0;
        for (int64_t j = 0; j < V; j++)
            mx = fmax(mx, x[t * V + j]);
        for (int64_t j = 0; j < V1; j++)
            mx1 = fmax(mx1, x[t * V + j]);
        for (int64_t j = 0; j < V; j++)
            s += exp(x[t * V + j] - mx);
        for (int64_t j = 0; j < V1; j++)
            s1r += exp(x[t * V + j] - mx1);
        const double want = x[t * V + target[t]] - mx - log(s); /* log_softmax at the target */
        const double gm = fmax(hm1[t], hm2[t]);
        const double lse = gm + log(he1[t] * exp(hm1[t] - gm) + he2[t] * exp(hm2[t] - gm));
        const double got = (double)hp1[t] + hp2[t] - lse;
        const int owner_ok = target[t] < V1 ? hp2[t] == 0.0f && hp1[t] == x[t * V + target[t]]
                                            : hp1[t] == 0.0f && hp2[t] == x[t * V + target[t]];
        CHECKF(hm1[t] == (float)mx1 && fabs(he1[t] - s1r) <= 1e-6 * s1r,
               "logsumexp_parts row %lld: max %g (want %g), sumexp %g (want %g)", (long long)t,
               hm1[t], mx1, he1[t], s1r);
        CHECKF(fabs(got - want) <= 1e-5 * fmax(1.0, fabs(want)) && owner_ok,
               "logsumexp_parts + pick_logits row %lld: log p %.9g, want %.9g", (long long)t, got,
               want);
    }
    sl_tensor_free(l1), sl_tensor_free(l2), sl_tensor_free(tg), sl_tensor_free(m1);
    sl_tensor_free(m2), sl_tensor_free(e1), sl_tensor_free(e2), sl_tensor_free(p1);
    sl_tensor_free(p2);
}

static const float *g_topk_row; /* for the qsort comparator */
static int topk_cmp(const void *a, const void *b)
{
    const int ia = *(const int *)a, ib = *(const int *)b;
    const float va = g_topk_row[ia], vb = g_topk_row[ib];
    if (va != vb)
        return va > vb ? -1 : 1;
    return ia < ib ? -1 : 1; /* ties: the lower index first */
}

static void topk_case(sl_backend_t *be, int64_t T, int64_t V, int k, int levels)
{
    float *x = malloc(sizeof(float) * (size_t)(T * V)),
          *vals = malloc(sizeof(float) * (size_t)(T * k));
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)(T * k));
    int *order = malloc(sizeof(int) * (size_t)V);
    for (int64_t i = 0; i < T * V; i++)
        x[i] = levels ? (float)(int)(levels * (frand() + 1.0f)) - (float)levels : frand();
    if (levels && V > 3) { /* -0 and +0 are equal values: a tie, decided by the index */
        x[1] = -0.0f;
        x[2] = 0.0f;
        x[3] = -0.0f;
    }
    const int64_t xs[2] = {T, V};
    sl_tensor_t *xt = f32_tensor(be, 2, xs, x), *vt = sl_tensor_new2(be, SL_F32, T, k);
    sl_tensor_t *it = sl_tensor_new2(be, SL_I32, T, k);
    sl_topk_rows(xt, k, vt, it);
    sl_copy_d2h(vals, vt, sizeof(float) * (size_t)(T * k));
    sl_copy_d2h(idx, it, sizeof(int32_t) * (size_t)(T * k));
    int bad = 0;
    for (int64_t t = 0; t < T; t++) {
        g_topk_row = x + t * V;
        for (int i = 0; i < V; i++)
            order[i] = i;
        qsort(order, (size_t)V, sizeof(int), topk_cmp);
        for (int i = 0; i < k; i++)
            bad += idx[t * k + i] != order[i] ||
                   memcmp(&vals[t * k + i], &x[t * V + order[i]], sizeof(float)) != 0;
    }
    CHECKF(bad == 0, "topk_rows T %lld V %lld k %d%s: %d entries differ", (long long)T,
           (long long)V, k, levels ? " (many ties)" : "", bad);
    sl_tensor_free(xt), sl_tensor_free(vt), sl_tensor_free(it);
    free(x), free(vals), free(idx), free(order);
}

static void test_topk(sl_backend_t *be)
{
    topk_case(be, 4, 37, 5, 0);
    topk_case(be, 4, 37, 1, 0);
    topk_case(be, 4, 37, 37, 0); /* k = V */
    topk_case(be, 3, 37, 37, 3); /* k = V with ties */
    topk_case(be, 5, 41, 7, 2);  /* ties across the cut */
    topk_case(be, 3, 1000, 256, 0);
    topk_case(be, 2, 256, 256, 4);
    topk_case(be, 3, 5000, 40, 50);
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
    test_activation_nan(be);
    test_shape_overflow(be);
    test_conversions(be);
    test_add(be);
    test_layernorm(be);
    test_embedding(be);
    test_l2_normalize(be);
    test_rmsnorm(be);
    test_rope(be);
    test_swiglu(be);
    test_kv_write(be);
    test_attention_kv(be);
    test_gather_rows(be);
    test_pool_packed(be);
    test_logsumexp_pick(be);
    test_topk(be);
    CHECKF(sl_backend_free_bytes(be) > ((size_t)1 << 20), "free bytes %zu",
           sl_backend_free_bytes(be));
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
