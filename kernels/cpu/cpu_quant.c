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

int sl_qform_available(sl_qform_t f)
{
#ifdef SL_QUANT_X86
    __builtin_cpu_init();
    if (f == SL_QFORM_AVX2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("f16c");
    if (f == SL_QFORM_VNNI)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
               __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#endif
    return f == SL_QFORM_SCALAR;
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

void sl_q8a_quantize(const float *x, int64_t k, sl_q8a_t *out)
{
    for (int64_t b = 0; b < k / SL_QBLOCK; b++, x += SL_QBLOCK) {
        float amax = 0.0f;
        for (int j = 0; j < SL_QBLOCK; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int j = 0; j < SL_QBLOCK; j++) {
            int q = (int)nearbyintf(x[j] * id);
            out[b].q[j] = (int8_t)q;
            sum += q;
        }
        out[b].d = d;
        out[b].s = d * (float)sum;
        out[b].pad[0] = out[b].pad[1] = 0;
    }
}

/* ---- scalar form -------------------------------------------------------------------------- */

static float dot_q8_0_scalar(const uint8_t *w, const sl_q8a_t *a, int64_t nb)
{
    float sum = 0.0f;
    for (int64_t b = 0; b < nb; b++, w += SL_Q8_0_BYTES) {
        int32_t acc = 0;
        for (int j = 0; j < 32; j++)
            acc += (int8_t)w[2 + j] * a[b].q[j];
        sum += sl_q_half(w) * a[b].d * (float)acc;
    }
    return sum;
}

/* sum(nib * q) of one Q4 block's 16 bytes of nibbles */
static int32_t nib_dot(const uint8_t *nib, const int8_t *q)
{
    int32_t acc = 0;
    for (int j = 0; j < 16; j++)
        acc += (nib[j] & 0x0f) * q[j] + (nib[j] >> 4) * q[j + 16];
    return acc;
}

static float dot_q4_0_scalar(const uint8_t *w, const sl_q8a_t *a, int64_t nb)
{
    float sum = 0.0f;
    for (int64_t b = 0; b < nb; b++, w += SL_Q4_0_BYTES)
        sum += sl_q_half(w) * (a[b].d * (float)nib_dot(w + 2, a[b].q) - 8.0f * a[b].s);
    return sum;
}

static float dot_q4_1_scalar(const uint8_t *w, const sl_q8a_t *a, int64_t nb)
{
    float sum = 0.0f;
    for (int64_t b = 0; b < nb; b++, w += SL_Q4_1_BYTES)
        sum += sl_q_half(w) * a[b].d * (float)nib_dot(w + 4, a[b].q) + sl_q_half(w + 2) * a[b].s;
    return sum;
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

/* The per-block sums of the SIMD forms go to two f32 accumulators, even and odd blocks, so that
 * consecutive blocks do not wait on each other's fused multiply-add (4 cycles of latency). */

/* 8 s32 partial sums of one Q8_0 block times one activation block: signed x signed through
 * |w| x sign(w) x */
SL_AVX2 static inline __m256i q8_0_sums_avx2(const uint8_t *w, const sl_q8a_t *a)
{
    __m256i wq = _mm256_loadu_si256((const __m256i *)(w + 2));
    __m256i xq = _mm256_loadu_si256((const __m256i *)a->q);
    return dot_u8s8_avx2(_mm256_sign_epi8(wq, wq), _mm256_sign_epi8(xq, wq));
}

SL_AVX2 static inline __m256i q4_sums_avx2(const uint8_t *nib, const sl_q8a_t *a)
{
    return dot_u8s8_avx2(nibbles_avx2(nib), _mm256_loadu_si256((const __m256i *)a->q));
}

/* acc += (f32) sums * scale */
#define SL_QACC(acc, sums, scale)                                                                  \
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(scale), acc)

SL_AVX2 static float dot_q8_0_avx2(const uint8_t *w, const sl_q8a_t *a, int64_t nb)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + 1 < nb; b += 2, w += 2 * SL_Q8_0_BYTES) {
        SL_QACC(acc0, q8_0_sums_avx2(w, &a[b]), half_f16c(w) * a[b].d);
        SL_QACC(acc1, q8_0_sums_avx2(w + SL_Q8_0_BYTES, &a[b + 1]),
                half_f16c(w + SL_Q8_0_BYTES) * a[b + 1].d);
    }
    if (b < nb)
        SL_QACC(acc0, q8_0_sums_avx2(w, &a[b]), half_f16c(w) * a[b].d);
    return hsum_avx2(_mm256_add_ps(acc0, acc1));
}

SL_AVX2 static float dot_q4_0_avx2(const uint8_t *w, const sl_q8a_t *a, int64_t nb)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    float off0 = 0.0f, off1 = 0.0f;
    int64_t b = 0;
    for (; b + 1 < nb; b += 2, w += 2 * SL_Q4_0_BYTES) {
        const uint8_t *w1 = w + SL_Q4_0_BYTES;
        float d0 = half_f16c(w), d1 = half_f16c(w1);
        SL_QACC(acc0, q4_sums_avx2(w + 2, &a[b]), d0 * a[b].d);
        SL_QACC(acc1, q4_sums_avx2(w1 + 2, &a[b + 1]), d1 * a[b + 1].d);
        off0 += d0 * a[b].s;
        off1 += d1 * a[b + 1].s;
    }
    if (b < nb) {
        float d0 = half_f16c(w);
        SL_QACC(acc0, q4_sums_avx2(w + 2, &a[b]), d0 * a[b].d);
        off0 += d0 * a[b].s;
    }
    return hsum_avx2(_mm256_add_ps(acc0, acc1)) - 8.0f * (off0 + off1);
}

SL_AVX2 static float dot_q4_1_avx2(const uint8_t *w, const sl_q8a_t *a, int64_t nb)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    float min0 = 0.0f, min1 = 0.0f;
    int64_t b = 0;
    for (; b + 1 < nb; b += 2, w += 2 * SL_Q4_1_BYTES) {
        const uint8_t *w1 = w + SL_Q4_1_BYTES;
        SL_QACC(acc0, q4_sums_avx2(w + 4, &a[b]), half_f16c(w) * a[b].d);
        SL_QACC(acc1, q4_sums_avx2(w1 + 4, &a[b + 1]), half_f16c(w1) * a[b + 1].d);
        min0 += half_f16c(w + 2) * a[b].s;
        min1 += half_f16c(w1 + 2) * a[b + 1].s;
    }
    if (b < nb) {
        SL_QACC(acc0, q4_sums_avx2(w + 4, &a[b]), half_f16c(w) * a[b].d);
        min0 += half_f16c(w + 2) * a[b].s;
    }
    return hsum_avx2(_mm256_add_ps(acc0, acc1)) + (min0 + min1);
}

/* ---- AVX-512 VNNI form: vpdpbusd (u8 x s8, 4 pairs summed into each s32), two blocks per
 * 512-bit step; an odd last block takes the 256-bit instruction. ----------------------------- */
#define SL_VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))

/* two blocks of 32 bytes into one 512-bit register */
SL_VNNI static inline __m512i pair512(__m256i lo, __m256i hi)
{
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

/* the two blocks' scales, one per 256-bit half */
SL_VNNI static inline __m512 scales512(float d0, float d1)
{
    return _mm512_mask_mov_ps(_mm512_set1_ps(d0), (__mmask16)0xff00, _mm512_set1_ps(d1));
}

SL_VNNI static inline __m256i xq256(const sl_q8a_t *a)
{
    return _mm256_loadu_si256((const __m256i *)a->q);
}

SL_VNNI static float dot_q8_0_vnni(const uint8_t *w, const sl_q8a_t *a, int64_t nb)
{
    /* vpdpbusd wants u8 x s8: w + 128 (= w xor 0x80) is unsigned, and the 128 * sum(x) it adds
     * is taken off again with a second vpdpbusd of 128s, so each lane holds the exact sum. */
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    __m512 acc = _mm512_setzero_ps();
    int64_t b = 0;
    for (; b + 1 < nb; b += 2, w += 2 * SL_Q8_0_BYTES) {
        __m512i wq = pair512(_mm256_loadu_si256((const __m256i *)(w + 2)),
                             _mm256_loadu_si256((const __m256i *)(w + SL_Q8_0_BYTES + 2)));
        __m512i xq = pair512(xq256(&a[b]), xq256(&a[b + 1]));
        __m512i p = _mm512_sub_epi32(
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_xor_si512(wq, bias), xq),
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), bias, xq));
        __m512 sc = scales512(half_f16c(w) * a[b].d, half_f16c(w + SL_Q8_0_BYTES) * a[b + 1].d);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), sc, acc);
    }
    float sum = _mm512_reduce_add_ps(acc);
    if (b < nb) {
        const __m256i bias8 = _mm256_set1_epi8((char)0x80);
        __m256i wq = _mm256_loadu_si256((const __m256i *)(w + 2)), xq = xq256(&a[b]);
        __m256i p = _mm256_sub_epi32(
            _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_xor_si256(wq, bias8), xq),
            _mm256_dpbusd_epi32(_mm256_setzero_si256(), bias8, xq));
        sum +=
            hsum_avx2(_mm256_mul_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(half_f16c(w) * a[b].d)));
    }
    return sum;
}

/* Q4_0 and Q4_1: one block per 256-bit vpdpbusd (nibbles are unsigned already), two
 * accumulators as in the AVX2 form. Two blocks per 512-bit step measured slower here: the
 * nibble expansion then needs cross-lane inserts. */
SL_VNNI static inline __m256i q4_sums_vnni(const uint8_t *nib, const sl_q8a_t *a)
{
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), nibbles_avx2(nib), xq256(a));
}

SL_VNNI static float dot_q4_0_vnni(const uint8_t *w, const sl_q8a_t *a, int64_t nb)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    float off0 = 0.0f, off1 = 0.0f;
    int64_t b = 0;
    for (; b + 1 < nb; b += 2, w += 2 * SL_Q4_0_BYTES) {
        const uint8_t *w1 = w + SL_Q4_0_BYTES;
        float d0 = half_f16c(w), d1 = half_f16c(w1);
        SL_QACC(acc0, q4_sums_vnni(w + 2, &a[b]), d0 * a[b].d);
        SL_QACC(acc1, q4_sums_vnni(w1 + 2, &a[b + 1]), d1 * a[b + 1].d);
        off0 += d0 * a[b].s;
        off1 += d1 * a[b + 1].s;
    }
    if (b < nb) {
        float d0 = half_f16c(w);
        SL_QACC(acc0, q4_sums_vnni(w + 2, &a[b]), d0 * a[b].d);
        off0 += d0 * a[b].s;
    }
    return hsum_avx2(_mm256_add_ps(acc0, acc1)) - 8.0f * (off0 + off1);
}

SL_VNNI static float dot_q4_1_vnni(const uint8_t *w, const sl_q8a_t *a, int64_t nb)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    float min0 = 0.0f, min1 = 0.0f;
    int64_t b = 0;
    for (; b + 1 < nb; b += 2, w += 2 * SL_Q4_1_BYTES) {
        const uint8_t *w1 = w + SL_Q4_1_BYTES;
        SL_QACC(acc0, q4_sums_vnni(w + 4, &a[b]), half_f16c(w) * a[b].d);
        SL_QACC(acc1, q4_sums_vnni(w1 + 4, &a[b + 1]), half_f16c(w1) * a[b + 1].d);
        min0 += half_f16c(w + 2) * a[b].s;
        min1 += half_f16c(w1 + 2) * a[b + 1].s;
    }
    if (b < nb) {
        SL_QACC(acc0, q4_sums_vnni(w + 4, &a[b]), half_f16c(w) * a[b].d);
        min0 += half_f16c(w + 2) * a[b].s;
    }
    return hsum_avx2(_mm256_add_ps(acc0, acc1)) + (min0 + min1);
}

/* ---- four activation rows per weight row (batched decode): each weight block is loaded,
 * expanded and its scales converted once for four activation rows, whose sums go to four
 * accumulators. rows < 4 repeats the last row (its extra results are dropped). --------------
 * PREP sets u (the unsigned operand) from the block; XOP(x) gives the signed operand; MUL is the
 * form's u8 x s8 -> s32 step; KIND 0: Q8_0, 1: Q4_0 (- 8 d s), 2: Q4_1 (+ m s). */
#define SL_DOT4_ROW(r)                                                                     \
    do {                                                                                   \
        const sl_q8a_t *ab = ar[r] + b;                                                    \
        __m256i xr = _mm256_loadu_si256((const __m256i *)ab->q);                          \
        SL_QACC(acc[r], MUL(u, XOP(xr)), d * ab->d);                                       \
        ex[r] += e * ab->s;                                                                \
    } while (0)

#define SL_DOT4_BODY(BYTES, KIND)                                                          \
    const sl_q8a_t *ar[4];                                                                 \
    for (int r = 0; r < 4; r++)                                                            \
        ar[r] = a + (r < rows ? r : rows - 1) * nb;                                        \
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),       \
                     _mm256_setzero_ps()};                                                 \
    float ex[4] = {0.0f, 0.0f, 0.0f, 0.0f};                                                \
    for (int64_t b = 0; b < nb; b++, w += (BYTES)) {                                       \
        const float d = half_f16c(w), e = (KIND) == 2 ? half_f16c(w + 2) : d;              \
        PREP;                                                                              \
        SL_DOT4_ROW(0);                                                                    \
        SL_DOT4_ROW(1);                                                                    \
        SL_DOT4_ROW(2);                                                                    \
        SL_DOT4_ROW(3);                                                                    \
    }                                                                                      \
    for (int r = 0; r < rows; r++)                                                         \
        out[r] = hsum_avx2(acc[r]) +                                                       \
                 ((KIND) == 2 ? ex[r] : (KIND) == 1 ? -8.0f * ex[r] : 0.0f);

#define PREP_Q8                                                                            \
    const __m256i wq = _mm256_loadu_si256((const __m256i *)(w + 2));                       \
    const __m256i u = _mm256_sign_epi8(wq, wq)
#define XOP_Q8(x) _mm256_sign_epi8(x, wq)
#define PREP_Q4(hdr) const __m256i u = nibbles_avx2(w + (hdr))
#define XOP_Q4(x) (x)
#define MUL_AVX2(u, x) dot_u8s8_avx2(u, x)
#define MUL_VNNI(u, x) _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, x)

#define SL_DOT4_FN(NAME, ATTR, BYTES, KIND)                                                \
    ATTR static void NAME(const uint8_t *w, const sl_q8a_t *a, int64_t nb, int rows,       \
                          float *out)                                                      \
    {                                                                                      \
        SL_DOT4_BODY(BYTES, KIND)                                                          \
    }

#define PREP PREP_Q8
#define XOP XOP_Q8
#define MUL MUL_AVX2
SL_DOT4_FN(dot4_q8_0_avx2, SL_AVX2, SL_Q8_0_BYTES, 0)
#undef MUL
#define MUL MUL_VNNI
SL_DOT4_FN(dot4_q8_0_vnni, SL_VNNI, SL_Q8_0_BYTES, 0)
#undef MUL
#undef PREP
#undef XOP
#define XOP XOP_Q4
#define PREP PREP_Q4(2)
#define MUL MUL_AVX2
SL_DOT4_FN(dot4_q4_0_avx2, SL_AVX2, SL_Q4_0_BYTES, 1)
#undef MUL
#define MUL MUL_VNNI
SL_DOT4_FN(dot4_q4_0_vnni, SL_VNNI, SL_Q4_0_BYTES, 1)
#undef MUL
#undef PREP
#define PREP PREP_Q4(4)
#define MUL MUL_AVX2
SL_DOT4_FN(dot4_q4_1_avx2, SL_AVX2, SL_Q4_1_BYTES, 2)
#undef MUL
#define MUL MUL_VNNI
SL_DOT4_FN(dot4_q4_1_vnni, SL_VNNI, SL_Q4_1_BYTES, 2)
#undef MUL
#undef PREP
#undef XOP
#endif

/* ---- dispatch ----------------------------------------------------------------------------- */

typedef float (*qdot_fn)(const uint8_t *w, const sl_q8a_t *a, int64_t nb);

static qdot_fn qdot_pick(sl_qform_t f, sl_dtype_t wt)
{
    int i = wt == SL_Q8_0 ? 0 : wt == SL_Q4_0 ? 1 : 2;
#ifdef SL_QUANT_X86
    static const qdot_fn vnni[3] = {dot_q8_0_vnni, dot_q4_0_vnni, dot_q4_1_vnni};
    static const qdot_fn avx2[3] = {dot_q8_0_avx2, dot_q4_0_avx2, dot_q4_1_avx2};
    if (f == SL_QFORM_VNNI)
        return vnni[i];
    if (f == SL_QFORM_AVX2)
        return avx2[i];
#endif
    static const qdot_fn scalar[3] = {dot_q8_0_scalar, dot_q4_0_scalar, dot_q4_1_scalar};
    return scalar[i];
}

float sl_qdot(sl_qform_t f, sl_dtype_t wt, const uint8_t *w, const sl_q8a_t *a, int64_t nb)
{
    return qdot_pick(f, wt)(w, a, nb);
}

/* out[r] = one weight row times activation rows a + r * nb, r < rows <= 4 */
typedef void (*qdot4_fn)(const uint8_t *w, const sl_q8a_t *a, int64_t nb, int rows, float *out);

/* NULL for the scalar form (it takes the rows one at a time) */
static qdot4_fn qdot4_pick(sl_qform_t f, sl_dtype_t wt)
{
    int i = wt == SL_Q8_0 ? 0 : wt == SL_Q4_0 ? 1 : 2;
#ifdef SL_QUANT_X86
    static const qdot4_fn vnni[3] = {dot4_q8_0_vnni, dot4_q4_0_vnni, dot4_q4_1_vnni};
    static const qdot4_fn avx2[3] = {dot4_q8_0_avx2, dot4_q4_0_avx2, dot4_q4_1_avx2};
    if (f == SL_QFORM_VNNI)
        return vnni[i];
    if (f == SL_QFORM_AVX2)
        return avx2[i];
#endif
    (void)i;
    return NULL;
}

void sl_qdot_rows(sl_qform_t f, sl_dtype_t wt, const uint8_t *w, const sl_q8a_t *a, int64_t nb,
                  int rows, float *out)
{
    qdot4_fn fn = qdot4_pick(f, wt);
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
    const int64_t nb = k / SL_QBLOCK;
    const size_t rb = sl_dtype_bytes(wt, k);
    const qdot_fn dot = qdot_pick(f, wt);
    const qdot4_fn dot4 = qdot4_pick(f, wt);
    const int par = threads > 1 && m * n * k >= SL_QPAR_MIN;
#pragma omp parallel for schedule(static) num_threads(threads) if (par && m > 1)
    for (int64_t i = 0; i < m; i++)
        sl_q8a_quantize(x + i * k, k, xq + i * nb);
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
