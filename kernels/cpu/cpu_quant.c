/*
 * cpu_quant.c — integer dot products of block-quantized weights with int8-quantized activations
 * and the linear layer built on them (see cpu_quant.h for the formulas).
 *
 * The SIMD forms are compiled with function target attributes, so the binary runs on any
 * x86-64 and picks the form the CPU supports at run time (__builtin_cpu_supports); on other
 * architectures only the scalar form exists.
 */
#include "kernels/cpu/cpu_quant.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/quant.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SL_QUANT_X86 1
#include <cpuid.h>
#include <immintrin.h>
#endif

const char *sl_qform_name(sl_qform_t f)
{
    switch (f) {
    case SL_QFORM_AVX2: return "avx2";
    case SL_QFORM_VNNI: return "avx512-vnni";
    default: return "scalar";
    }
}

#ifdef SL_QUANT_X86
/* F16C from CPUID leaf 1 (ECX bit 29): clang before 16 does not know "f16c" in
 * __builtin_cpu_supports. */
static int cpu_f16c(void)
{
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}
#endif

static int probe_form(sl_qform_t f)
{
#ifdef SL_QUANT_X86
    __builtin_cpu_init();
    if (f == SL_QFORM_AVX2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_f16c();
    if (f == SL_QFORM_VNNI)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
               __builtin_cpu_supports("fma") && cpu_f16c();
#endif
    return f == SL_QFORM_SCALAR;
}

int sl_qform_available(sl_qform_t f)
{
    /* Probed once per form. why: CPUID traps to the hypervisor in a VM (microseconds), and the
     * quantizers ask for every linear layer, hundreds of times per decoded token. Threads that
     * race here store the same value. */
    static int known[3] = {-1, -1, -1};
    if ((int)f < 0 || (int)f > 2)
        return 0;
    int v = __atomic_load_n(&known[f], __ATOMIC_RELAXED);
    if (v < 0) {
        v = probe_form(f);
        __atomic_store_n(&known[f], v, __ATOMIC_RELAXED);
    }
    return v;
}

sl_qform_t sl_qform_best(void)
{
    sl_qform_t cap = SL_QFORM_VNNI;
    const char *env = getenv("SL_QDOT_FORM");
    if (env && !strcmp(env, "scalar"))
        cap = SL_QFORM_SCALAR;
    else if (env && !strcmp(env, "avx2"))
        cap = SL_QFORM_AVX2;
    for (int f = cap; f > SL_QFORM_SCALAR; f--)
        if (sl_qform_available((sl_qform_t)f))
            return (sl_qform_t)f;
    return SL_QFORM_SCALAR;
}

/* ---- int8 blocks: activations and weights quantized on load -------------------------------
 * The 32 values of a block with step 1 / id (id 0 for an all-zero block): q =
 * round-to-nearest-even(x * id) clamped to [-127, 127], 0 for NaN, into q[32]; returns sum(q).
 * The AVX2 form (q8_values_avx2) does the same operations (vroundps, vmaxps/vminps, a NaN
 * mask), so both give the same bits. */
static int q8_values(const float *x, float id, int8_t *q)
{
    int sum = 0;
    for (int j = 0; j < SL_QBLOCK; j++) {
        const float v = nearbyintf(x[j] * id);
        q[j] = (int8_t)(v > 127.0f ? 127 : v < -127.0f ? -127 : v == v ? (int)v : 0);
        sum += q[j];
    }
    return sum;
}

/* A Q8_0 block's header for weights of max |w| amax: the f16 scale d = amax / 127 into out[0..1];
 * returns the quotient taken with that rounded scale (0 for a zero block), so that q * d is as
 * close to w as the stored scale allows. */
static float q8_0_scale(float amax, uint8_t *out)
{
    const uint16_t h = sl_f32_to_f16(amax / 127.0f);
    const float d = sl_f16_to_f32(h);
    out[0] = (uint8_t)(h & 0xff);
    out[1] = (uint8_t)(h >> 8);
    return d > 0.0f ? 1.0f / d : 0.0f;
}

/* One block of 32 activations with step d (id = 1 / d, or 0 for an all-zero block). */
static void q8a_block(const float *x, float d, float id, sl_q8a_t *o)
{
    const int sum = q8_values(x, id, o->q);
    o->d = d;
    o->s = d * (float)sum;
    o->sum = sum;
    o->sum0 = 0;
    for (int j = 0; j < 16; j++)
        o->sum0 += o->q[j];
}

/* max |x| of a block's 32 values (NaN ignored, as fmaxf ignores it) */
static float block_max(const float *x)
{
    float amax = 0.0f;
    for (int j = 0; j < SL_QBLOCK; j++)
        amax = fmaxf(amax, fabsf(x[j]));
    return amax;
}

static void q8a_row_scalar(const float *x, int64_t k, const float *xmax, sl_q8a_t *out)
{
    for (int64_t b = 0; b < k / SL_QBLOCK; b++, x += SL_QBLOCK) {
        const float own = block_max(x);
        const float d = (xmax && xmax[b] > own ? xmax[b] : own) / 127.0f;
        q8a_block(x, d, d > 0.0f ? 1.0f / d : 0.0f, out + b);
    }
}

void sl_q8a_quantize(const float *x, int64_t k, sl_q8a_t *out) { q8a_row_scalar(x, k, NULL, out); }

void sl_q8a_quantize_static(const float *x, int64_t k, const float *xmax, sl_q8a_t *out)
{
    q8a_row_scalar(x, k, xmax, out);
}

#ifdef SL_QUANT_X86
#define SL_AVX2_ONLY __attribute__((target("avx2")))
/* why SIMD forms: with the scalar ones, quantizing the activations (a libm nearbyintf per
 * value) took as long as the integer GEMM that follows it, and quantizing a model's weights on
 * load most of a second for 135M values. */

/* max |x| of 32 values; vmaxps returns its second operand for a NaN first: NaN is ignored, as
 * fmaxf ignores it */
SL_AVX2_ONLY static inline float absmax_avx2(const __m256 v[4])
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < 4; i++)
        m = _mm256_max_ps(_mm256_andnot_ps(sign, v[i]), m);
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

SL_AVX2_ONLY static inline int hsum_i32_avx2(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* q8_values in AVX2; *sum0 (when not NULL): the sum of q[0..15] */
SL_AVX2_ONLY static inline int q8_values_avx2(const __m256 v[4], float id, int8_t *q, int *sum0)
{
    const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
    __m256i qi[4];
    for (int i = 0; i < 4; i++) {
        const __m256 p = _mm256_mul_ps(v[i], _mm256_set1_ps(id));
        __m256 r = _mm256_round_ps(p, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        r = _mm256_min_ps(_mm256_max_ps(r, lo), hi);
        r = _mm256_and_ps(r, _mm256_cmp_ps(p, p, _CMP_ORD_Q)); /* NaN -> 0 */
        qi[i] = _mm256_cvtps_epi32(r);
    }
    /* int32 -> int8 in value order (the packs interleave 128-bit lanes; the permute undoes it) */
    const __m256i p16a = _mm256_packs_epi32(qi[0], qi[1]), p16b = _mm256_packs_epi32(qi[2], qi[3]);
    const __m256i p8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p16a, p16b),
                                                   _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)q, p8);
    const __m256i first = _mm256_add_epi32(qi[0], qi[1]);
    if (sum0)
        *sum0 = hsum_i32_avx2(first);
    return hsum_i32_avx2(_mm256_add_epi32(first, _mm256_add_epi32(qi[2], qi[3])));
}

SL_AVX2_ONLY static void q8a_row_avx2(const float *x, int64_t k, const float *xmax, sl_q8a_t *out)
{
    for (int64_t b = 0; b < k / SL_QBLOCK; b++, x += SL_QBLOCK) {
        __m256 v[4];
        for (int i = 0; i < 4; i++)
            v[i] = _mm256_loadu_ps(x + 8 * i);
        const float own = absmax_avx2(v);
        const float amax = xmax && xmax[b] > own ? xmax[b] : own;
        const float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        int sum0;
        const int sum = q8_values_avx2(v, id, out[b].q, &sum0);
        out[b].d = d;
        out[b].s = d * (float)sum;
        out[b].sum = sum;
        out[b].sum0 = sum0;
    }
}

/* sl_q8_0_quantize_rows's blocks in the AVX2 form */
SL_AVX2_ONLY static void q8_0_blocks_avx2(const float *x, int64_t nblocks, uint8_t *out)
{
    for (int64_t b = 0; b < nblocks; b++, x += SL_QBLOCK, out += SL_Q8_0_BYTES) {
        __m256 v[4];
        for (int i = 0; i < 4; i++)
            v[i] = _mm256_loadu_ps(x + 8 * i);
        int8_t q[32];
        q8_values_avx2(v, q8_0_scale(absmax_avx2(v), out), q, NULL);
        memcpy(out + 2, q, sizeof q);
    }
}
#endif

/* A quantizer's form for form f: the AVX2 one unless f is the scalar form or the CPU lacks
 * AVX2 (x86-64 only). */
#ifdef SL_QUANT_X86
#define QUANT_FORM(f, scalar_fn, avx2_fn)                                                          \
    ((f) != SL_QFORM_SCALAR && sl_qform_available(SL_QFORM_AVX2) ? (avx2_fn) : (scalar_fn))
#else
#define QUANT_FORM(f, scalar_fn, avx2_fn) ((void)(f), (scalar_fn))
#endif

void sl_q8a_quantize_rows(int threads, sl_qform_t f, const float *x, int64_t m, int64_t k,
                          const float *xmax, sl_q8a_t *xq)
{
    const int64_t nb = k / SL_QBLOCK;
    void (*row)(const float *, int64_t, const float *, sl_q8a_t *) =
        QUANT_FORM(f, q8a_row_scalar, q8a_row_avx2);
#pragma omp parallel for schedule(static)                                                          \
    num_threads(threads > 0 ? threads : 1) if (m > 1 && m * k >= 65536)
    for (int64_t i = 0; i < m; i++)
        row(x + i * k, k, xmax, xq + i * nb);
}

void sl_q8_0_quantize_rows(const float *x, int64_t rows, int64_t k, uint8_t *out)
{
    sl_q8_0_quantize_rows_form(sl_qform_best(), x, rows, k, out);
}

static void q8_0_blocks_scalar(const float *x, int64_t nblocks, uint8_t *out)
{
    for (int64_t b = 0; b < nblocks; b++, x += SL_QBLOCK, out += SL_Q8_0_BYTES) {
        int8_t q[32];
        q8_values(x, q8_0_scale(block_max(x), out), q);
        memcpy(out + 2, q, sizeof q);
    }
}

void sl_q8_0_quantize_rows_form(sl_qform_t f, const float *x, int64_t rows, int64_t k, uint8_t *out)
{
    void (*blocks)(const float *, int64_t, uint8_t *) =
        QUANT_FORM(f, q8_0_blocks_scalar, q8_0_blocks_avx2);
    const int64_t nb = rows * (k / SL_QBLOCK), chunk = 4096;
#pragma omp parallel for schedule(static) if (nb > chunk)
    for (int64_t c = 0; c < nb; c += chunk)
        blocks(x + c * SL_QBLOCK, nb - c < chunk ? nb - c : chunk, out + c * SL_Q8_0_BYTES);
}

/* ---- scalar form --------------------------------------------------------------------------
 * The same arithmetic as the SIMD forms below, operation for operation, so that every form
 * gives the same bits: per block, 8 lanes of exact int32 sums over 4 consecutive values each
 * (lane l: values 4l..4l+3, which is what vpmaddubsw + vpmaddwd and vpdpbusd produce), each
 * lane's f32 accumulator takes fmaf(sum, d_w * d_x, acc), and the lanes are added in the order
 * of hsum_avx2: ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)). why: the activations of the
 * next layer are quantized to int8 again, and rounding is discontinuous, so a last-bit
 * difference in one output flips whole quanta downstream: summed in another order, a 30-layer
 * decoder's log-probabilities moved by ~0.06 per token, as much as the quantization itself. */

static float lanes_sum(const float acc[8])
{
    return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

/* The 32 weight values of one block (Q8_0: the int8 bytes; Q4: the nibbles 0..15 in value
 * order, low nibbles first) into v. */
static void block_values(int kind, const uint8_t *w, int32_t v[32])
{
    if (kind == 0) {
        for (int j = 0; j < 32; j++)
            v[j] = (int8_t)w[2 + j];
        return;
    }
    const uint8_t *nib = w + (kind == 1 ? 2 : 4);
    for (int j = 0; j < 16; j++) {
        v[j] = nib[j] & 0x0f;
        v[j + 16] = nib[j] >> 4;
    }
}

/* kind: 0 Q8_0, 1 Q4_0 (- 8 d_w s_x per block, summed apart), 2 Q4_1 (+ m_w s_x, likewise) */
static float dot_scalar(int kind, size_t bytes, const uint8_t *w, const sl_q8a_t *a, int64_t nb)
{
    float acc[8] = {0}, ex = 0.0f;
    for (int64_t b = 0; b < nb; b++, w += bytes) {
        const float d = sl_q_half(w), e = kind == 2 ? sl_q_half(w + 2) : d;
        int32_t v[32];
        block_values(kind, w, v);
        const float dd = d * a[b].d;
        for (int l = 0; l < 8; l++) {
            int32_t sum = 0;
            for (int j = 4 * l; j < 4 * l + 4; j++)
                sum += v[j] * a[b].q[j];
            acc[l] = fmaf((float)sum, dd, acc[l]);
        }
        ex = fmaf(e, a[b].s, ex);
    }
    return kind == 1   ? fmaf(-8.0f, ex, lanes_sum(acc))
           : kind == 2 ? lanes_sum(acc) + ex
                       : lanes_sum(acc);
}

static float dot_q8_0_scalar(const uint8_t *w, const sl_q8a_t *a, int64_t nb)
{
    return dot_scalar(0, SL_Q8_0_BYTES, w, a, nb);
}

static float dot_q4_0_scalar(const uint8_t *w, const sl_q8a_t *a, int64_t nb)
{
    return dot_scalar(1, SL_Q4_0_BYTES, w, a, nb);
}

static float dot_q4_1_scalar(const uint8_t *w, const sl_q8a_t *a, int64_t nb)
{
    return dot_scalar(2, SL_Q4_1_BYTES, w, a, nb);
}

#ifdef SL_QUANT_X86
/* ---- AVX2 form: vpmaddubsw (u8 x s8 -> s16 pairs), vpmaddwd with ones (-> s32) ------------- */
#define SL_AVX2 __attribute__((target("avx2,fma,f16c")))

/* a block's f16 scale with the F16C instruction (the portable sl_q_half branches per value) */
SL_AVX2 static inline float half_f16c(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, sizeof h);
    return _cvtsh_ss(h);
}

SL_AVX2 static inline float hsum_avx2(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 16 bytes of nibbles -> 32 bytes 0..15 in value order (low nibbles, then high ones) */
SL_AVX2 static inline __m256i nibbles_avx2(const uint8_t *p)
{
    __m128i r = _mm_loadu_si128((const __m128i *)p);
    __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(r), _mm_srli_epi16(r, 4), 1);
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
}

/* u8 x s8, 32 pairs -> 8 s32 partial sums (no s16 overflow: |u| <= 128, |s| <= 127) */
SL_AVX2 static inline __m256i dot_u8s8_avx2(__m256i u, __m256i s)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* ---- AVX-512 VNNI form: vpdpbusd (u8 x s8, 4 pairs summed into each s32 in one instruction),
 * on 256-bit registers (AVX512VL) ----------------------------------------------------------- */
#define SL_VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))

/* ---- the SIMD dot products, one and four activation rows per weight row ---------------------
 * Per block: PREP sets u (the unsigned operand: |w| for Q8_0, the nibbles for Q4) from the
 * weight block once; for each activation row, XOP(x) gives the signed operand (x with w's signs
 * for Q8_0), MUL the form's u8 x s8 -> 8 s32 step (AVX2: vpmaddubsw + vpmaddwd; VNNI:
 * vpdpbusd), and the row's f32 accumulator takes sums * (d_w d_x) while a scalar takes e * s_x
 * (KIND 0: Q8_0, none; 1: Q4_0, e = d_w, - 8 at the end; 2: Q4_1, e = m_w).
 * The four-row form (batched decode, prefill) reads and expands each weight block once for four
 * rows; rows < 4 repeats the last row (its extra results are dropped). Each row goes through
 * exactly the same operations in the one- and four-row forms (explicit fmaf, no reassociation),
 * so a row's result does not depend on how many rows share its GEMM: outputs are the same
 * whatever the batch, the unit size or the rank count. */
#define SL_DOT_BODY(NR, BYTES, KIND)                                                               \
    const sl_q8a_t *ar[NR];                                                                        \
    __m256 acc[NR];                                                                                \
    float ex[NR];                                                                                  \
    for (int r = 0; r < (NR); r++) {                                                               \
        ar[r] = a + (r < rows ? r : rows - 1) * nb;                                                \
        acc[r] = _mm256_setzero_ps();                                                              \
        ex[r] = 0.0f;                                                                              \
    }                                                                                              \
    for (int64_t b = 0; b < nb; b++, w += (BYTES)) {                                               \
        const float d = half_f16c(w), e = (KIND) == 2 ? half_f16c(w + 2) : d;                      \
        PREP;                                                                                      \
        for (int r = 0; r < (NR); r++) {                                                           \
            const sl_q8a_t *ab = ar[r] + b;                                                        \
            const __m256i xr = _mm256_loadu_si256((const __m256i *)ab->q);                         \
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(MUL(u, XOP(xr))),                          \
                                     _mm256_set1_ps(d * ab->d), acc[r]);                           \
            ex[r] = fmaf(e, ab->s, ex[r]);                                                         \
        }                                                                                          \
    }                                                                                              \
    for (int r = 0; r < rows; r++)                                                                 \
        out[r] = (KIND) == 1   ? fmaf(-8.0f, ex[r], hsum_avx2(acc[r]))                             \
                 : (KIND) == 2 ? hsum_avx2(acc[r]) + ex[r]                                         \
                               : hsum_avx2(acc[r]);

#define SL_DOT_FNS(NAME1, NAME4, ATTR, BYTES, KIND)                                                \
    ATTR static void NAME4(const uint8_t *w, const sl_q8a_t *a, int64_t nb, int rows,              \
                           float *out){SL_DOT_BODY(4, BYTES, KIND)} ATTR static float              \
    NAME1(const uint8_t *w, const sl_q8a_t *a, int64_t nb)                                         \
    {                                                                                              \
        const int rows = 1;                                                                        \
        float out[1];                                                                              \
        SL_DOT_BODY(1, BYTES, KIND)                                                                \
        return out[0];                                                                             \
    }

#define PREP_Q8                                                                                    \
    const __m256i wq = _mm256_loadu_si256((const __m256i *)(w + 2));                               \
    const __m256i u = _mm256_sign_epi8(wq, wq)
#define XOP_Q8(x) _mm256_sign_epi8(x, wq)
#define PREP_Q4(hdr) const __m256i u = nibbles_avx2(w + (hdr))
#define XOP_Q4(x) (x)
#define MUL_AVX2(u, x) dot_u8s8_avx2(u, x)
#define MUL_VNNI(u, x) _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, x)

#define PREP PREP_Q8
#define XOP XOP_Q8
#define MUL MUL_AVX2
SL_DOT_FNS(dot_q8_0_avx2, dot4_q8_0_avx2, SL_AVX2, SL_Q8_0_BYTES, 0)
#undef MUL
#define MUL MUL_VNNI
SL_DOT_FNS(dot_q8_0_vnni, dot4_q8_0_vnni, SL_VNNI, SL_Q8_0_BYTES, 0)
#undef MUL
#undef PREP
#undef XOP
#define XOP XOP_Q4
#define PREP PREP_Q4(2)
#define MUL MUL_AVX2
SL_DOT_FNS(dot_q4_0_avx2, dot4_q4_0_avx2, SL_AVX2, SL_Q4_0_BYTES, 1)
#undef MUL
#define MUL MUL_VNNI
SL_DOT_FNS(dot_q4_0_vnni, dot4_q4_0_vnni, SL_VNNI, SL_Q4_0_BYTES, 1)
#undef MUL
#undef PREP
#define PREP PREP_Q4(4)
#define MUL MUL_AVX2
SL_DOT_FNS(dot_q4_1_avx2, dot4_q4_1_avx2, SL_AVX2, SL_Q4_1_BYTES, 2)
#undef MUL
#define MUL MUL_VNNI
SL_DOT_FNS(dot_q4_1_vnni, dot4_q4_1_vnni, SL_VNNI, SL_Q4_1_BYTES, 2)
#undef MUL
#undef PREP
#undef XOP
#endif

/* ---- dispatch ----------------------------------------------------------------------------- */

typedef float (*qdot_fn)(const uint8_t *w, const sl_q8a_t *a, int64_t nb);
/* out[r] = one weight row times activation rows a + r * nb, r < rows <= 4 */
typedef void (*qdot4_fn)(const uint8_t *w, const sl_q8a_t *a, int64_t nb, int rows, float *out);

/* A form's one-row and four-row dot products for one weight type (four: NULL for the scalar
 * form, which takes the rows one at a time). */
typedef struct {
    qdot_fn one;
    qdot4_fn four;
} qdot_fns_t;

static qdot_fns_t qdot_pick(sl_qform_t f, sl_dtype_t wt)
{
    int i = wt == SL_Q8_0 ? 0 : wt == SL_Q4_0 ? 1 : 2;
#ifdef SL_QUANT_X86
    static const qdot_fns_t vnni[3] = {{dot_q8_0_vnni, dot4_q8_0_vnni},
                                       {dot_q4_0_vnni, dot4_q4_0_vnni},
                                       {dot_q4_1_vnni, dot4_q4_1_vnni}};
    static const qdot_fns_t avx2[3] = {{dot_q8_0_avx2, dot4_q8_0_avx2},
                                       {dot_q4_0_avx2, dot4_q4_0_avx2},
                                       {dot_q4_1_avx2, dot4_q4_1_avx2}};
    if (f == SL_QFORM_VNNI)
        return vnni[i];
    if (f == SL_QFORM_AVX2)
        return avx2[i];
#endif
    static const qdot_fns_t scalar[3] = {
        {dot_q8_0_scalar, NULL}, {dot_q4_0_scalar, NULL}, {dot_q4_1_scalar, NULL}};
    return scalar[i];
}

float sl_qdot(sl_qform_t f, sl_dtype_t wt, const uint8_t *w, const sl_q8a_t *a, int64_t nb)
{
    return qdot_pick(f, wt).one(w, a, nb);
}

void sl_qdot_rows(sl_qform_t f, sl_dtype_t wt, const uint8_t *w, const sl_q8a_t *a, int64_t nb,
                  int rows, float *out)
{
    qdot4_fn fn = qdot_pick(f, wt).four;
    if (fn) {
        fn(w, a, nb, rows, out);
        return;
    }
    for (int r = 0; r < rows; r++)
        out[r] = sl_qdot(f, wt, w, a + r * nb, nb);
}

/* Work below this many multiply-adds runs on the calling thread (a parallel region's fork and
 * barrier would cost more). */
#define SL_QPAR_MIN 65536
/* Tiles for many activation rows: weight rows x activation rows. 32 weight rows of a 1536-wide
 * Q4_1 matrix are 30 KiB (L1-sized); 64 quantized activation rows of it 188 KiB (L2). */
#define SL_QTILE_N 32
#define SL_QTILE_M 64

void sl_cpu_linear_q(int threads, sl_qform_t f, sl_dtype_t wt, const float *x, int64_t m, int64_t k,
                     const uint8_t *w, int64_t n, const float *bias, float *y, sl_q8a_t *xq)
{
    sl_cpu_linear_q_ex(threads, f, wt, x, m, k, w, n, bias, y, xq, NULL);
}

void sl_cpu_linear_q_ex(int threads, sl_qform_t f, sl_dtype_t wt, const float *x, int64_t m,
                        int64_t k, const uint8_t *w, int64_t n, const float *bias, float *y,
                        sl_q8a_t *xq, const float *xmax)
{
    const int64_t nb = k / SL_QBLOCK;
    const size_t rb = sl_dtype_bytes(wt, k);
    const qdot_fn dot = qdot_pick(f, wt).one;
    const qdot4_fn dot4 = qdot_pick(f, wt).four;
    const int par = threads > 1 && m * n * k >= SL_QPAR_MIN;
    sl_q8a_quantize_rows(par ? threads : 1, f, x, m, k, xmax, xq);
    /* Decode steps (a few rows): only the weight rows split, in chunks a multiple of 16 rows,
     * about four per thread, taken dynamically (a thread that loses its core on a shared
     * machine delays only its chunk). */
    int64_t tn = SL_QTILE_N, tm = SL_QTILE_M;
    if (m <= 4) {
        tm = m;
        tn = (n + 4 * threads - 1) / (4 * threads);
        tn = tn < 16 ? 16 : (tn + 15) / 16 * 16;
    }
    const int64_t ntn = (n + tn - 1) / tn, ntm = (m + tm - 1) / tm;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (par)
    for (int64_t t = 0; t < ntn * ntm; t++) {
        const int64_t j0 = (t / ntm) * tn, i0 = (t % ntm) * tm;
        const int64_t j1 = j0 + tn < n ? j0 + tn : n, i1 = i0 + tm < m ? i0 + tm : m;
        for (int64_t j = j0; j < j1; j++) {
            const uint8_t *wr = w + (size_t)j * rb; /* weight row j: [nb blocks] */
            const float bj = bias ? bias[j] : 0.0f;
            int64_t i = i0;
            if (dot4) /* four activation rows per pass over the weight row */
                for (; i + 1 < i1; i += 4) {
                    float o[4];
                    const int rows = i1 - i < 4 ? (int)(i1 - i) : 4;
                    dot4(wr, xq + i * nb, nb, rows, o);
                    for (int r = 0; r < rows; r++)
                        y[(i + r) * n + j] = o[r] + bj;
                }
            for (; i < i1; i++)
                y[i * n + j] = dot(wr, xq + i * nb, nb) + bj;
        }
    }
}
