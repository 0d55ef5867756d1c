/*
 * cpu_qgemm.c — packing of block-quantized matrices and the integer GEMM on them (layout and
 * arithmetic in cpu_qgemm.h).
 *
 * The SIMD forms are compiled with function target attributes and picked at run time, as in
 * cpu_quant.c. Each form's tile computes up to 4 activation rows x 16 or 32 outputs; a tile of
 * fewer rows repeats its last row (the extra results are dropped), so every output goes through
 * the same operations whatever its tile holds.
 */
#include "kernels/cpu/cpu_qgemm.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "common/sl_error.h"
#include "kernels/quant.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SL_QGEMM_X86 1
#include <immintrin.h>
#endif

/* kind: 0 Q8_0, 1 Q4_0, 2 Q4_1 */
static int kind_of(sl_dtype_t dt) { return dt == SL_Q8_0 ? 0 : dt == SL_Q4_0 ? 1 : 2; }
/* bytes of the scales ahead of a group-block's values */
static int head_bytes(int kind) { return kind == 2 ? 64 : 32; }
/* the K of idot = sum u q - K S */
static int offset_k(int kind) { return kind == 0 ? 128 : kind == 1 ? 8 : 0; }

int sl_qpack_fits(sl_dtype_t dt, int64_t n, int64_t k)
{
    return sl_dtype_quantized(dt) && n > 0 && n % SL_QPACK_ROWS == 0 && k > 0 && k % SL_QBLOCK == 0;
}

/* ---- packing ------------------------------------------------------------------------------ */

/* The unsigned operand values of one row block (Q8_0: q + 128; Q4: the nibbles), in value
 * order. */
static void block_values(int kind, const uint8_t *blk, uint8_t v[32])
{
    if (kind == 0) {
        for (int j = 0; j < 32; j++)
            v[j] = (uint8_t)(blk[2 + j] ^ 0x80);
        return;
    }
    const uint8_t *nib = blk + (kind == 1 ? 2 : 4);
    for (int j = 0; j < 16; j++) {
        v[j] = nib[j] & 0x0f;
        v[j + 16] = nib[j] >> 4;
    }
}

/* Value j of row c in a group-block's value area (unsigned operand form). */
static int packed_value(int kind, const uint8_t *vals, int c, int j)
{
    const int s = j >> 2, t = j & 3;
    if (kind == 0)
        return vals[(s * 16 + c) * 4 + t];
    const uint8_t byte = vals[((s & 3) * 16 + c) * 4 + t];
    return s < 4 ? byte & 0x0f : byte >> 4;
}

/* 16 rows of nb blocks (row stride rb) -> nb group-blocks at out (gbb bytes each). */
static void pack_group(int kind, size_t bb, size_t rb, int64_t nb, const uint8_t *rows,
                       uint8_t *out)
{
    const size_t gbb = SL_QPACK_ROWS * bb;
    const int hb = head_bytes(kind);
    for (int64_t b = 0; b < nb; b++) {
        uint8_t *gb = out + (size_t)b * gbb, *vals = gb + hb;
        for (int c = 0; c < SL_QPACK_ROWS; c++) {
            const uint8_t *blk = rows + (size_t)c * rb + (size_t)b * bb;
            memcpy(gb + 2 * c, blk, 2);
            if (kind == 2)
                memcpy(gb + 32 + 2 * c, blk + 2, 2);
            uint8_t v[32];
            block_values(kind, blk, v);
            for (int s = 0; s < (kind == 0 ? 8 : 4); s++)
                for (int t = 0; t < 4; t++)
                    vals[(s * 16 + c) * 4 + t] =
                        kind == 0 ? v[4 * s + t]
                                  : (uint8_t)(v[4 * s + t] | v[4 * (s + 4) + t] << 4);
        }
    }
}

/* The inverse of pack_group. */
static void unpack_group(int kind, size_t bb, size_t rb, int64_t nb, const uint8_t *in,
                         uint8_t *rows)
{
    const size_t gbb = SL_QPACK_ROWS * bb;
    const int hb = head_bytes(kind);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *gb = in + (size_t)b * gbb, *vals = gb + hb;
        for (int c = 0; c < SL_QPACK_ROWS; c++) {
            uint8_t *blk = rows + (size_t)c * rb + (size_t)b * bb;
            memcpy(blk, gb + 2 * c, 2);
            if (kind == 2)
                memcpy(blk + 2, gb + 32 + 2 * c, 2);
            if (kind == 0) {
                for (int j = 0; j < 32; j++)
                    blk[2 + j] = (uint8_t)(packed_value(0, vals, c, j) ^ 0x80);
                continue;
            }
            uint8_t *nib = blk + (kind == 1 ? 2 : 4);
            for (int j = 0; j < 16; j++)
                nib[j] = (uint8_t)(packed_value(kind, vals, c, j) |
                                   packed_value(kind, vals, c, j + 16) << 4);
        }
    }
}

static void repack(int threads, sl_dtype_t dt, uint8_t *w, int64_t n, int64_t k, int pack)
{
    const int kind = kind_of(dt);
    const size_t bb = sl_dtype_size(dt), rb = sl_dtype_bytes(dt, k);
    const size_t gbytes = SL_QPACK_ROWS * rb;
    const int64_t nb = k / SL_QBLOCK, groups = n / SL_QPACK_ROWS;
#pragma omp parallel num_threads(threads > 0 ? threads : 1) if (groups > 1)
    {
        uint8_t *tmp = sl_xmalloc(gbytes); /* the group's bytes, read while they are rewritten */
#pragma omp for schedule(static)
        for (int64_t g = 0; g < groups; g++) {
            uint8_t *at = w + (size_t)g * gbytes;
            memcpy(tmp, at, gbytes);
            if (pack)
                pack_group(kind, bb, rb, nb, tmp, at);
            else
                unpack_group(kind, bb, rb, nb, tmp, at);
        }
        free(tmp);
    }
}

void sl_qpack(int threads, sl_dtype_t dt, uint8_t *w, int64_t n, int64_t k)
{
    repack(threads, dt, w, n, k, 1);
}

void sl_qunpack(int threads, sl_dtype_t dt, uint8_t *w, int64_t n, int64_t k)
{
    repack(threads, dt, w, n, k, 0);
}

/* ---- dequantisation ----------------------------------------------------------------------- */

/* Row c of group-block gb, dequantised into y[32] with sl_q_dequant_block's expressions. */
static void dequant_gb_row(int kind, const uint8_t *gb, int c, float *y)
{
    const uint8_t *vals = gb + head_bytes(kind);
    const float d = sl_q_half(gb + 2 * c);
    if (kind == 0) {
        for (int j = 0; j < 32; j++)
            y[j] = (float)(int8_t)(packed_value(0, vals, c, j) ^ 0x80) * d;
    } else if (kind == 1) {
        for (int j = 0; j < 32; j++)
            y[j] = (float)(packed_value(1, vals, c, j) - 8) * d;
    } else {
        const float m = sl_q_half(gb + 32 + 2 * c);
        for (int j = 0; j < 32; j++)
            y[j] = (float)packed_value(2, vals, c, j) * d + m;
    }
}

void sl_qpack_dequant_row(sl_dtype_t dt, const uint8_t *w, int64_t k, int64_t r, float *y)
{
    const int kind = kind_of(dt);
    const size_t gbb = SL_QPACK_ROWS * sl_dtype_size(dt);
    const uint8_t *g = w + (size_t)(r / SL_QPACK_ROWS) * SL_QPACK_ROWS * sl_dtype_bytes(dt, k);
    for (int64_t b = 0; b < k / SL_QBLOCK; b++)
        dequant_gb_row(kind, g + (size_t)b * gbb, (int)(r % SL_QPACK_ROWS), y + b * SL_QBLOCK);
}

void sl_qpack_dequant_rows(int threads, sl_dtype_t dt, const uint8_t *w, int64_t k, int64_t r0,
                           int64_t nr, float *y)
{
    const int kind = kind_of(dt);
    const size_t gbb = SL_QPACK_ROWS * sl_dtype_size(dt), gbytes = (size_t)k / SL_QBLOCK * gbb;
    const int64_t nb = k / SL_QBLOCK, g0 = r0 / SL_QPACK_ROWS, ng = nr / SL_QPACK_ROWS;
#pragma omp parallel for schedule(static) num_threads(threads > 0 ? threads : 1) if (ng > 1)
    for (int64_t t = 0; t < ng * nb; t++) {
        const int64_t g = t / nb, b = t % nb;
        const uint8_t *gb = w + (size_t)(g0 + g) * gbytes + (size_t)b * gbb;
        for (int c = 0; c < SL_QPACK_ROWS; c++)
            dequant_gb_row(kind, gb, c, y + (g * SL_QPACK_ROWS + c) * k + b * SL_QBLOCK);
    }
}

/* ---- tiles -------------------------------------------------------------------------------
 * A tile: activation rows xr[0..3] (repeats allowed) x ng (1 or 2) groups starting at w (the
 * next group gstride bytes on), over nb blocks of gbb bytes; out[r * 32 + g * 16 + c]. */
typedef void (*qtile_fn)(const uint8_t *w, size_t gstride, size_t gbb, const sl_q8a_t *const *xr,
                         int64_t nb, float *out);

static inline int32_t load_i32(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static void tile_scalar(int kind, int mr, int ng, const uint8_t *w, size_t gstride, size_t gbb,
                        const sl_q8a_t *const *xr, int64_t nb, float *out)
{
    const int hb = head_bytes(kind), kk = offset_k(kind);
    for (int r = 0; r < mr; r++)
        for (int g = 0; g < ng; g++)
            for (int c = 0; c < SL_QPACK_ROWS; c++) {
                float acc = 0.0f;
                for (int64_t b = 0; b < nb; b++) {
                    const uint8_t *gb = w + (size_t)g * gstride + (size_t)b * gbb;
                    const sl_q8a_t *a = xr[r] + b;
                    int32_t raw = 0;
                    for (int j = 0; j < 32; j++)
                        raw += packed_value(kind, gb + hb, c, j) * a->q[j];
                    const float dc = sl_q_half(gb + 2 * c);
                    acc = fmaf((float)(raw - kk * a->sum), dc * a->d, acc);
                    if (kind == 2)
                        acc = fmaf(sl_q_half(gb + 32 + 2 * c), a->s, acc);
                }
                out[r * 32 + g * 16 + c] = acc;
            }
}

#define SCALAR_TILE(KIND, MR, NG)                                                                  \
    static void tile_scalar_##KIND##_##MR##_##NG(const uint8_t *w, size_t gstride, size_t gbb,     \
                                                 const sl_q8a_t *const *xr, int64_t nb,            \
                                                 float *out)                                       \
    {                                                                                              \
        tile_scalar(KIND, MR, NG, w, gstride, gbb, xr, nb, out);                                   \
    }

#ifdef SL_QGEMM_X86
#define SL_AVX2 __attribute__((target("avx2,fma,f16c")))
#define SL_VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define SL_INLINE static inline __attribute__((always_inline))

/* AVX-512 VNNI: a group's 16 outputs are one 512-bit register; per step, one 64-byte load of
 * weights serves every row, each row broadcasting 4 activation bytes (vpdpbusd: u8 weights x s8
 * activations, 4 pairs into each int32 lane). */
SL_VNNI SL_INLINE void tile_vnni(const int kind, const int mr, const int ng, const uint8_t *w,
                                 size_t gstride, size_t gbb, const sl_q8a_t *const *xr, int64_t nb,
                                 float *out)
{
    const int hb = head_bytes(kind), kk = offset_k(kind);
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    __m512 acc[4][2];
    for (int r = 0; r < mr; r++)
        for (int g = 0; g < ng; g++)
            acc[r][g] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *gb[2];
        const sl_q8a_t *a[4];
        __m512i ia[4][2];
        for (int g = 0; g < ng; g++)
            gb[g] = w + (size_t)g * gstride + (size_t)b * gbb;
        for (int r = 0; r < mr; r++) {
            a[r] = xr[r] + b;
            for (int g = 0; g < ng; g++)
                ia[r][g] = _mm512_setzero_si512();
        }
        if (kind == 0) {
            for (int s = 0; s < 8; s++) {
                __m512i wv[2];
                for (int g = 0; g < ng; g++)
                    wv[g] = _mm512_loadu_si512((const void *)(gb[g] + hb + 64 * s));
                for (int r = 0; r < mr; r++) {
                    const __m512i xb = _mm512_set1_epi32(load_i32(a[r]->q + 4 * s));
                    for (int g = 0; g < ng; g++)
                        ia[r][g] = _mm512_dpbusd_epi32(ia[r][g], wv[g], xb);
                }
            }
        } else {
            for (int s = 0; s < 4; s++) {
                __m512i lo[2], hi[2];
                for (int g = 0; g < ng; g++) {
                    const __m512i raw = _mm512_loadu_si512((const void *)(gb[g] + hb + 64 * s));
                    lo[g] = _mm512_and_si512(raw, m4);
                    hi[g] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);
                }
                for (int r = 0; r < mr; r++) {
                    const __m512i xl = _mm512_set1_epi32(load_i32(a[r]->q + 4 * s));
                    const __m512i xh = _mm512_set1_epi32(load_i32(a[r]->q + 4 * s + 16));
                    for (int g = 0; g < ng; g++) {
                        ia[r][g] = _mm512_dpbusd_epi32(ia[r][g], lo[g], xl);
                        ia[r][g] = _mm512_dpbusd_epi32(ia[r][g], hi[g], xh);
                    }
                }
            }
        }
        __m512 dv[2], mv[2];
        for (int g = 0; g < ng; g++) {
            dv[g] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)gb[g]));
            if (kind == 2)
                mv[g] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(gb[g] + 32)));
        }
        for (int r = 0; r < mr; r++) {
            const __m512 dx = _mm512_set1_ps(a[r]->d);
            const __m512i corr = _mm512_set1_epi32(kk * a[r]->sum);
            for (int g = 0; g < ng; g++) {
                const __m512i id = kind == 2 ? ia[r][g] : _mm512_sub_epi32(ia[r][g], corr);
                acc[r][g] =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(id), _mm512_mul_ps(dv[g], dx), acc[r][g]);
                if (kind == 2)
                    acc[r][g] = _mm512_fmadd_ps(mv[g], _mm512_set1_ps(a[r]->s), acc[r][g]);
            }
        }
    }
    for (int r = 0; r < mr; r++)
        for (int g = 0; g < ng; g++)
            _mm512_storeu_ps(out + r * 32 + g * 16, acc[r][g]);
}

/* AVX2: a group's 16 outputs are two 256-bit halves; u8 x s8 by vpmaddubsw + vpmaddwd. Q8_0
 * takes the signed weights (u ^ 0x80) with the sign trick (|w| x (x with w's sign)), since
 * u8 values up to 255 could saturate vpmaddubsw's int16 pairs; that gives sum w q directly, the
 * same integer as sum u q - 128 S. Tiles take one group (ng = 1). */
SL_AVX2 SL_INLINE __m256i madd_u8s8(__m256i u, __m256i s)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

SL_AVX2 SL_INLINE void tile_avx2(const int kind, const int mr, const uint8_t *w, size_t gbb,
                                 const sl_q8a_t *const *xr, int64_t nb, float *out)
{
    const int hb = head_bytes(kind), kk = kind == 0 ? 0 : offset_k(kind);
    const __m256i m4 = _mm256_set1_epi8(0x0f), flip = _mm256_set1_epi8((char)0x80);
    __m256 acc[4][2];
    for (int r = 0; r < mr; r++)
        for (int h = 0; h < 2; h++)
            acc[r][h] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *gb = w + (size_t)b * gbb;
        const sl_q8a_t *a[4];
        __m256i ia[4][2];
        for (int r = 0; r < mr; r++) {
            a[r] = xr[r] + b;
            ia[r][0] = ia[r][1] = _mm256_setzero_si256();
        }
        if (kind == 0) {
            for (int s = 0; s < 8; s++) {
                __m256i ws[2], wa[2];
                for (int h = 0; h < 2; h++) {
                    ws[h] = _mm256_xor_si256(
                        _mm256_loadu_si256((const __m256i *)(gb + hb + 64 * s + 32 * h)), flip);
                    wa[h] = _mm256_abs_epi8(ws[h]);
                }
                for (int r = 0; r < mr; r++) {
                    const __m256i xb = _mm256_set1_epi32(load_i32(a[r]->q + 4 * s));
                    for (int h = 0; h < 2; h++)
                        ia[r][h] = _mm256_add_epi32(ia[r][h],
                                                    madd_u8s8(wa[h], _mm256_sign_epi8(xb, ws[h])));
                }
            }
        } else {
            for (int s = 0; s < 4; s++) {
                __m256i lo[2], hi[2];
                for (int h = 0; h < 2; h++) {
                    const __m256i raw =
                        _mm256_loadu_si256((const __m256i *)(gb + hb + 64 * s + 32 * h));
                    lo[h] = _mm256_and_si256(raw, m4);
                    hi[h] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
                }
                for (int r = 0; r < mr; r++) {
                    const __m256i xl = _mm256_set1_epi32(load_i32(a[r]->q + 4 * s));
                    const __m256i xh = _mm256_set1_epi32(load_i32(a[r]->q + 4 * s + 16));
                    for (int h = 0; h < 2; h++)
                        ia[r][h] = _mm256_add_epi32(
                            ia[r][h], _mm256_add_epi32(madd_u8s8(lo[h], xl), madd_u8s8(hi[h], xh)));
                }
            }
        }
        __m256 dv[2], mv[2];
        for (int h = 0; h < 2; h++) {
            dv[h] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(gb + 16 * h)));
            if (kind == 2)
                mv[h] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(gb + 32 + 16 * h)));
        }
        for (int r = 0; r < mr; r++) {
            const __m256 dx = _mm256_set1_ps(a[r]->d);
            const __m256i corr = _mm256_set1_epi32(kk * a[r]->sum);
            for (int h = 0; h < 2; h++) {
                const __m256i id = kk ? _mm256_sub_epi32(ia[r][h], corr) : ia[r][h];
                acc[r][h] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(id), _mm256_mul_ps(dv[h], dx), acc[r][h]);
                if (kind == 2)
                    acc[r][h] = _mm256_fmadd_ps(mv[h], _mm256_set1_ps(a[r]->s), acc[r][h]);
            }
        }
    }
    for (int r = 0; r < mr; r++)
        for (int h = 0; h < 2; h++)
            _mm256_storeu_ps(out + r * 32 + h * 8, acc[r][h]);
}

#define VNNI_TILE(KIND, MR, NG)                                                                    \
    SL_VNNI static void tile_vnni_##KIND##_##MR##_##NG(const uint8_t *w, size_t gstride,           \
                                                       size_t gbb, const sl_q8a_t *const *xr,      \
                                                       int64_t nb, float *out)                     \
    {                                                                                              \
        tile_vnni(KIND, MR, NG, w, gstride, gbb, xr, nb, out);                                     \
    }
#define AVX2_TILE(KIND, MR)                                                                        \
    SL_AVX2 static void tile_avx2_##KIND##_##MR(const uint8_t *w, size_t gstride, size_t gbb,      \
                                                const sl_q8a_t *const *xr, int64_t nb, float *out) \
    {                                                                                              \
        (void)gstride;                                                                             \
        tile_avx2(KIND, MR, w, gbb, xr, nb, out);                                                  \
    }
#define FORM_TILES(KIND)                                                                           \
    VNNI_TILE(KIND, 1, 1)                                                                          \
    VNNI_TILE(KIND, 1, 2)                                                                          \
    VNNI_TILE(KIND, 4, 1) VNNI_TILE(KIND, 4, 2) AVX2_TILE(KIND, 1) AVX2_TILE(KIND, 4)
FORM_TILES(0)
FORM_TILES(1)
FORM_TILES(2)
#endif

#define SCALAR_TILES(KIND)                                                                         \
    SCALAR_TILE(KIND, 1, 1) SCALAR_TILE(KIND, 1, 2) SCALAR_TILE(KIND, 4, 1) SCALAR_TILE(KIND, 4, 2)
SCALAR_TILES(0)
SCALAR_TILES(1)
SCALAR_TILES(2)

/* The tile of form f for weight kind, mr (1 or 4) rows and ng (1 or 2) groups (the AVX2 form
 * has one-group tiles only). */
static qtile_fn tile_pick(sl_qform_t f, int kind, int mr, int ng)
{
    const int i = (mr == 4) * 2 + (ng == 2);
#define TABLE4(P, K)                                                                               \
    {                                                                                              \
        P##_##K##_1_1, P##_##K##_1_2, P##_##K##_4_1, P##_##K##_4_2                                 \
    }
#ifdef SL_QGEMM_X86
    static const qtile_fn vnni[3][4] = {TABLE4(tile_vnni, 0), TABLE4(tile_vnni, 1),
                                        TABLE4(tile_vnni, 2)};
    static const qtile_fn avx2[3][2] = {{tile_avx2_0_1, tile_avx2_0_4},
                                        {tile_avx2_1_1, tile_avx2_1_4},
                                        {tile_avx2_2_1, tile_avx2_2_4}};
    if (f == SL_QFORM_VNNI)
        return vnni[kind][i];
    if (f == SL_QFORM_AVX2)
        return avx2[kind][mr == 4];
#endif
    static const qtile_fn scalar[3][4] = {TABLE4(tile_scalar, 0), TABLE4(tile_scalar, 1),
                                          TABLE4(tile_scalar, 2)};
#undef TABLE4
    return scalar[kind][i];
}

/* ---- the GEMM ----------------------------------------------------------------------------- */

/* Work below this many multiply-adds runs on the calling thread. */
#define SL_QGEMM_PAR_MIN 65536
/* Rows of a task for many rows: 64 rows of quantized activations of a 1536-wide layer are
 * 144 KiB (L2), met by one or two groups of weights at a time (26 KiB a group, L1/L2). */
#define SL_QGEMM_TASK_ROWS 64

void sl_qgemm(int threads, sl_qform_t f, sl_dtype_t dt, const sl_q8a_t *xq, int64_t m, int64_t k,
              const uint8_t *w, int64_t n, const float *bias, float *y)
{
    const int kind = kind_of(dt);
    const int64_t nb = k / SL_QBLOCK, groups = n / SL_QPACK_ROWS;
    const size_t gbb = SL_QPACK_ROWS * sl_dtype_size(dt), gstride = (size_t)nb * gbb;
    /* why one group at a time for decode steps: their weights stream from memory, and one
     * sequential stream per thread is read faster than two interleaved ones (a 1 x 49152 x 576
     * Q8_0 product: 0.41-0.47 ms against 0.50-0.72 ms); many rows reuse the weights from cache,
     * where two groups share each activation broadcast. */
    const int ng_max = f == SL_QFORM_AVX2 || m <= 4 ? 1 : 2;
    /* Tasks: groups x rows. Decode steps (a few rows) split only the groups, about four tasks
     * per thread, taken dynamically (a thread that loses its core delays only its task). */
    int64_t tg = ng_max, tm = SL_QGEMM_TASK_ROWS;
    if (m <= 4) {
        tm = m;
        tg = (groups + 4 * threads - 1) / (4 * (int64_t)threads);
        tg = tg < 1 ? 1 : tg;
    }
    const int64_t ntg = (groups + tg - 1) / tg, ntm = (m + tm - 1) / tm;
    const int par = threads > 1 && m * n * k >= SL_QGEMM_PAR_MIN;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads > 0 ? threads : 1) if (par)
    for (int64_t t = 0; t < ntg * ntm; t++) {
        const int64_t g0 = (t / ntm) * tg, i0 = (t % ntm) * tm;
        const int64_t g1 = g0 + tg < groups ? g0 + tg : groups, i1 = i0 + tm < m ? i0 + tm : m;
        float out[4 * 32];
        for (int64_t g = g0; g < g1; g += ng_max) {
            const int ng = g + 1 < g1 && ng_max == 2 ? 2 : 1;
            for (int64_t i = i0; i < i1; i += 4) {
                const int rows = i1 - i < 4 ? (int)(i1 - i) : 4, mr = rows == 1 ? 1 : 4;
                const sl_q8a_t *xr[4];
                for (int r = 0; r < 4; r++)
                    xr[r] = xq + (i + (r < rows ? r : rows - 1)) * nb;
                tile_pick(f, kind, mr, ng)(w + (size_t)g * gstride, gstride, gbb, xr, nb, out);
                for (int r = 0; r < rows; r++) {
                    float *yr = y + (i + r) * n + g * SL_QPACK_ROWS;
                    const float *o = out + r * 32;
                    for (int c = 0; c < ng * SL_QPACK_ROWS; c++)
                        yr[c] = bias ? o[c] + bias[g * SL_QPACK_ROWS + c] : o[c];
                }
            }
        }
    }
}
