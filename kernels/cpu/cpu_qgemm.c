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

/* kind: the 32-value formats (KQ8..KQ51), then the K-quants (KQ4K, KQ6K, KQ5K) */
enum { KQ8 = 0, KQ40 = 1, KQ41 = 2, KQ50 = 3, KQ51 = 4, KQ4K = 5, KQ6K = 6, KQ5K = 7, NKINDS = 8 };
static int kind_of(sl_dtype_t dt)
{
    return dt == SL_Q8_0   ? KQ8
           : dt == SL_Q4_0 ? KQ40
           : dt == SL_Q4_1 ? KQ41
           : dt == SL_Q5_0 ? KQ50
           : dt == SL_Q5_1 ? KQ51
           : dt == SL_Q4_K ? KQ4K
           : dt == SL_Q5_K ? KQ5K
                           : KQ6K;
}
/* whether a block has a minimum m beside its scale d (x = u d + m) */
static int has_min(int kind) { return kind == KQ41 || kind == KQ51; }
/* whether a 32-value format keeps a fifth bit per value after its nibbles */
static int has_fifth(int kind) { return kind == KQ50 || kind == KQ51; }
/* bytes of the f16 scales that start a GGUF block of a 32-value format (d, and m) */
static int scale_bytes(int kind) { return has_min(kind) ? 4 : 2; }
/* bytes of the scales ahead of a group-block's values */
static int head_bytes(int kind) { return has_min(kind) ? 64 : 32; }
/* the K of idot = sum u q - K S */
static int offset_k(int kind)
{
    return kind == KQ8 ? 128 : kind == KQ40 ? 8 : kind == KQ50 ? 16 : 0;
}

int sl_qpack_fits(sl_dtype_t dt, int64_t n, int64_t k)
{
    return sl_dtype_quantized(dt) && n > 0 && n % SL_QPACK_ROWS == 0 && k > 0 &&
           k % sl_dtype_block(dt) == 0;
}

/* ---- packing ------------------------------------------------------------------------------ */

/* The unsigned operand values of one row block (Q8_0: q + 128; Q4: the nibbles), in value
 * order. */
static void block_values(int kind, const uint8_t *blk, uint8_t v[32])
{
    if (kind == KQ8) {
        for (int j = 0; j < 32; j++)
            v[j] = (uint8_t)(blk[2 + j] ^ 0x80);
        return;
    }
    if (has_fifth(kind)) {
        sl_q5_values(blk + scale_bytes(kind), v);
        return;
    }
    const uint8_t *nib = blk + scale_bytes(kind);
    for (int j = 0; j < 16; j++) {
        v[j] = nib[j] & 0x0f;
        v[j + 16] = nib[j] >> 4;
    }
}

/* Value j of row c in a group-block's value area (unsigned operand form). The 5-bit formats
 * keep, after the nibbles, u8 fifth[8][8]: bit (4c + t) of the 8 bytes of value-step s (a
 * little-endian u64) is the fifth bit of value 4s + t of row c, the byte of it in the step's
 * 64-byte vector. */
static int packed_value(int kind, const uint8_t *vals, int c, int j)
{
    const int s = j >> 2, t = j & 3;
    if (kind == KQ8)
        return vals[(s * 16 + c) * 4 + t];
    const uint8_t byte = vals[((s & 3) * 16 + c) * 4 + t];
    const int lo = s < 4 ? byte & 0x0f : byte >> 4;
    if (!has_fifth(kind))
        return lo;
    const int bit = 4 * c + t;
    return lo | ((vals[256 + 8 * s + bit / 8] >> (bit % 8)) & 1) << 4;
}

/* Row c's 32 values v (each < 16) into a nibble area nib[4][16][4]: the low nibble of
 * nib[s][c][t] is value 4s + t, the high nibble value 4(s + 4) + t. */
static void put_nibbles(uint8_t *nib, int c, const uint8_t v[32])
{
    for (int s = 0; s < 4; s++)
        for (int t = 0; t < 4; t++)
            nib[(s * 16 + c) * 4 + t] = (uint8_t)(v[4 * s + t] | v[4 * (s + 4) + t] << 4);
}

/* Row c's 32 values v (each < 32) into a nibble area and, when fifth is set, the fifth-bit masks
 * that follow it (packed_value); the masks must start zeroed. */
static void put_values(uint8_t *vals, int c, const uint8_t v[32], int fifth)
{
    uint8_t lo[32];
    for (int j = 0; j < 32; j++) {
        lo[j] = v[j] & 15;
        if (fifth && v[j] >> 4) {
            const int bit = 4 * c + (j & 3);
            vals[256 + 8 * (j >> 2) + bit / 8] |= (uint8_t)(1u << (bit % 8));
        }
    }
    put_nibbles(vals, c, lo);
}

/* 16 rows of nb blocks (row stride rb) -> nb group-blocks at out (gbb bytes each). */
static void pack_group(int kind, size_t bb, size_t rb, int64_t nb, const uint8_t *rows,
                       uint8_t *out)
{
    const size_t gbb = SL_QPACK_ROWS * bb;
    const int hb = head_bytes(kind);
    for (int64_t b = 0; b < nb; b++) {
        uint8_t *gb = out + (size_t)b * gbb, *vals = gb + hb;
        if (has_fifth(kind))
            memset(vals + 256, 0, 64);
        for (int c = 0; c < SL_QPACK_ROWS; c++) {
            const uint8_t *blk = rows + (size_t)c * rb + (size_t)b * bb;
            memcpy(gb + 2 * c, blk, 2);
            if (has_min(kind))
                memcpy(gb + 32 + 2 * c, blk + 2, 2);
            uint8_t v[32];
            block_values(kind, blk, v);
            if (kind != KQ8) {
                put_values(vals, c, v, has_fifth(kind));
                continue;
            }
            for (int s = 0; s < 8; s++)
                for (int t = 0; t < 4; t++)
                    vals[(s * 16 + c) * 4 + t] = v[4 * s + t];
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
            if (has_min(kind))
                memcpy(blk + 2, gb + 32 + 2 * c, 2);
            if (kind == KQ8) {
                for (int j = 0; j < 32; j++)
                    blk[2 + j] = (uint8_t)(packed_value(KQ8, vals, c, j) ^ 0x80);
                continue;
            }
            uint8_t *nib = blk + scale_bytes(kind) + (has_fifth(kind) ? 4 : 0);
            uint32_t qh = 0;
            for (int j = 0; j < 16; j++) {
                const int u0 = packed_value(kind, vals, c, j),
                          u1 = packed_value(kind, vals, c, j + 16);
                nib[j] = (uint8_t)((u0 & 15) | (u1 & 15) << 4);
                qh |= (uint32_t)(u0 >> 4) << j | (uint32_t)(u1 >> 4) << (j + 16);
            }
            if (has_fifth(kind))
                for (int i = 0; i < 4; i++)
                    blk[scale_bytes(kind) + i] = (uint8_t)(qh >> (8 * i));
        }
    }
}

/* ---- K-quant group-superblocks -------------------------------------------------------------
 * 16 rows x 256 values, in exactly the bytes those rows' super-blocks held (16 x 144, 176 or 210):
 *   Q4_K: f16 d[16] | f16 dmin[16] | u8 slo[8][16] | u8 shi[4][16] | nib[8][4][16][4]
 *         slo[j][c] = (sc & 15) | (m & 15) << 4 for sub-block j of row c; shi[p][c] holds the
 *         top two bits of sc_2p, m_2p, sc_2p+1, m_2p+1 at bits 0, 2, 4, 6; nib as put_nibbles
 *         for each sub-block j at Q4K_NIB + 256 j
 *   Q5_K: as Q4_K, each sub-block's nibbles followed by its fifth-bit masks (put_values), at
 *         Q4K_NIB + 320 j
 *   Q6_K: f16 d[16] | i8 sc[16][16] (scale of values 16i..16i+15 of row c at [i][c]) | per
 *         sub-block j at Q6K_VAL + 384 j: the low nibbles as put_nibbles (256 bytes), then
 *         u8 hb[2][16][4], where bits 2i..2i+1 of hb[s2][c][t] are the top two bits of value
 *         4(s2 + 2i) + t
 * so a vector load holds 4 values of 16 rows, as in the 32-value formats, and a sub-block's
 * scales for 16 rows are one 16-byte load. */
#define Q4K_DMIN 32
#define Q4K_SLO 64
#define Q4K_SHI 192
#define Q4K_NIB 256
#define Q6K_SC 32
#define Q6K_VAL 288
#define Q6K_VSTRIDE 384

/* Q4_K/Q5_K: bytes of a sub-block's values, and the kind that reads them (packed_value) */
static int kq_stride(int kind) { return kind == KQ5K ? 320 : 256; }
static int kq_vkind(int kind) { return kind == KQ5K ? KQ50 : KQ40; }

/* Q4_K/Q5_K: the 6-bit scale and minimum of sub-block j of row c (slo and shi) */
static void kq_scale_min(const uint8_t *gs, int c, int j, int *sc, int *m)
{
    const uint8_t lo = gs[Q4K_SLO + 16 * j + c];
    const uint8_t hi = (uint8_t)(gs[Q4K_SHI + 16 * (j / 2) + c] >> (4 * (j & 1)));
    *sc = (lo & 15) | (hi & 3) << 4;
    *m = (lo >> 4) | ((hi >> 2) & 3) << 4;
}

/* Row c of sub-block j of the group-superblock gs: its unsigned values u[32] (the Q4_K nibble,
 * the Q5_K 5-bit value, the Q6_K 6-bit value), the scales of its halves dl[2] (Q4_K/Q5_K: one,
 * twice) and the minimum ml (0 for Q6_K); x = dl u - ml, or dl (u - 32). */
static void kq_row(int kind, const uint8_t *gs, int c, int j, uint8_t u[32], float dl[2], float *ml)
{
    if (kind != KQ6K) {
        int sc, m;
        kq_scale_min(gs, c, j, &sc, &m);
        for (int l = 0; l < 32; l++)
            u[l] = (uint8_t)packed_value(kq_vkind(kind), gs + Q4K_NIB + kq_stride(kind) * j, c, l);
        dl[0] = dl[1] = sl_q_half(gs + 2 * c) * (float)sc;
        *ml = sl_q_half(gs + Q4K_DMIN + 2 * c) * (float)m;
        return;
    }
    const uint8_t *v = gs + Q6K_VAL + Q6K_VSTRIDE * j;
    for (int l = 0; l < 32; l++) {
        const int s = l >> 2, t = l & 3;
        const int hi = (v[256 + ((s & 1) * 16 + c) * 4 + t] >> (2 * (s >> 1))) & 3;
        u[l] = (uint8_t)(packed_value(1, v, c, l) | hi << 4);
    }
    for (int h = 0; h < 2; h++)
        dl[h] = sl_q_half(gs + 2 * c) * (float)(int8_t)gs[Q6K_SC + 16 * (2 * j + h) + c];
    *ml = 0.0f;
}

/* 16 rows of nsb super-blocks (row stride rb) -> nsb group-superblocks at out. */
static void pack_group_k(int kind, size_t bb, size_t rb, int64_t nsb, const uint8_t *rows,
                         uint8_t *out)
{
    const size_t gbb = SL_QPACK_ROWS * bb;
    for (int64_t b = 0; b < nsb; b++) {
        uint8_t *gs = out + (size_t)b * gbb;
        memset(gs, 0, gbb);
        for (int c = 0; c < SL_QPACK_ROWS; c++) {
            const uint8_t *blk = rows + (size_t)c * rb + (size_t)b * bb;
            uint8_t u[32];
            if (kind != KQ6K) {
                memcpy(gs + 2 * c, blk, 2);
                memcpy(gs + Q4K_DMIN + 2 * c, blk + 2, 2);
                for (int j = 0; j < 8; j++) {
                    int sc, m;
                    sl_q45_k_sub(blk, kind == KQ5K, j, u, &sc, &m);
                    put_values(gs + Q4K_NIB + kq_stride(kind) * j, c, u, kind == KQ5K);
                    gs[Q4K_SLO + 16 * j + c] = (uint8_t)((sc & 15) | (m & 15) << 4);
                    gs[Q4K_SHI + 16 * (j / 2) + c] |=
                        (uint8_t)(((sc >> 4) | (m >> 4) << 2) << (4 * (j & 1)));
                }
                continue;
            }
            memcpy(gs + 2 * c, blk + 208, 2);
            for (int j = 0; j < 8; j++) {
                int sc[2];
                uint8_t lo[32];
                sl_q6_k_sub(blk, j, u, sc);
                uint8_t *v = gs + Q6K_VAL + Q6K_VSTRIDE * j;
                for (int l = 0; l < 32; l++)
                    lo[l] = u[l] & 15;
                put_nibbles(v, c, lo);
                for (int l = 0; l < 32; l++) {
                    const int s = l >> 2, t = l & 3;
                    v[256 + ((s & 1) * 16 + c) * 4 + t] |= (uint8_t)((u[l] >> 4) << (2 * (s >> 1)));
                }
                for (int h = 0; h < 2; h++)
                    gs[Q6K_SC + 16 * (2 * j + h) + c] = (uint8_t)(int8_t)sc[h];
            }
        }
    }
}

/* The inverse of pack_group_k: GGUF's super-blocks again, byte for byte. */
static void unpack_group_k(int kind, size_t bb, size_t rb, int64_t nsb, const uint8_t *in,
                           uint8_t *rows)
{
    const size_t gbb = SL_QPACK_ROWS * bb;
    for (int64_t b = 0; b < nsb; b++) {
        const uint8_t *gs = in + (size_t)b * gbb;
        for (int c = 0; c < SL_QPACK_ROWS; c++) {
            uint8_t *blk = rows + (size_t)c * rb + (size_t)b * bb, u[32];
            memset(blk, 0, bb);
            if (kind != KQ6K) {
                memcpy(blk, gs + 2 * c, 2);
                memcpy(blk + 2, gs + Q4K_DMIN + 2 * c, 2);
                uint8_t *q = blk + 4; /* the twelve scale bytes (sl_q4_k_scale_min) */
                for (int j = 0; j < 8; j++) {
                    int sc, m;
                    kq_scale_min(gs, c, j, &sc, &m);
                    if (j < 4) {
                        q[j] |= (uint8_t)sc;
                        q[j + 4] |= (uint8_t)m;
                    } else {
                        q[j + 4] = (uint8_t)((sc & 15) | (m & 15) << 4);
                        q[j - 4] |= (uint8_t)((sc >> 4) << 6);
                        q[j] |= (uint8_t)((m >> 4) << 6);
                    }
                    /* Q5_K: qh[32] (bit j of qh[l]) before the nibbles */
                    uint8_t *qh = blk + 16, *nib = blk + (kind == KQ5K ? 48 : 16) + (j / 2) * 32;
                    for (int l = 0; l < 32; l++) {
                        const int v =
                            packed_value(kq_vkind(kind), gs + Q4K_NIB + kq_stride(kind) * j, c, l);
                        nib[l] |= (uint8_t)((v & 15) << (4 * (j & 1)));
                        if (kind == KQ5K)
                            qh[l] |= (uint8_t)((v >> 4) << j);
                    }
                }
                continue;
            }
            memcpy(blk + 208, gs + 2 * c, 2);
            for (int j = 0; j < 8; j++) {
                float dl[2], ml;
                kq_row(kind, gs, c, j, u, dl, &ml);
                const int h = j / 4, k = j % 4;
                uint8_t *ql = blk + h * 64 + (k % 2) * 32, *qh = blk + 128 + h * 32;
                for (int l = 0; l < 32; l++) {
                    ql[l] |= (uint8_t)((u[l] & 15) << (k < 2 ? 0 : 4));
                    qh[l] |= (uint8_t)((u[l] >> 4) << (2 * k));
                }
                for (int hh = 0; hh < 2; hh++)
                    blk[192 + 2 * j + hh] = gs[Q6K_SC + 16 * (2 * j + hh) + c];
            }
        }
    }
}

static void repack(int threads, sl_dtype_t dt, uint8_t *w, int64_t n, int64_t k, int pack)
{
    const int kind = kind_of(dt);
    const size_t bb = sl_dtype_size(dt), rb = sl_dtype_bytes(dt, k);
    const size_t gbytes = SL_QPACK_ROWS * rb;
    const int64_t nb = k / sl_dtype_block(dt), groups = n / SL_QPACK_ROWS;
#pragma omp parallel num_threads(threads > 0 ? threads : 1) if (groups > 1)
    {
        uint8_t *tmp = sl_xmalloc(gbytes); /* the group's bytes, read while they are rewritten */
#pragma omp for schedule(static)
        for (int64_t g = 0; g < groups; g++) {
            uint8_t *at = w + (size_t)g * gbytes;
            memcpy(tmp, at, gbytes);
            if (kind >= KQ4K)
                (pack ? pack_group_k : unpack_group_k)(kind, bb, rb, nb, tmp, at);
            else
                (pack ? pack_group : unpack_group)(kind, bb, rb, nb, tmp, at);
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

/* Row c of group-block gb, dequantised into y[32] with sl_q_dequant_block's and gguf.c's
 * expressions: (u - K) d, or u d + m for a format with a minimum (each one rounded product). */
static void dequant_gb_row(int kind, const uint8_t *gb, int c, float *y)
{
    const uint8_t *vals = gb + head_bytes(kind);
    const float d = sl_q_half(gb + 2 * c);
    if (kind == KQ8) {
        for (int j = 0; j < 32; j++)
            y[j] = (float)(int8_t)(packed_value(KQ8, vals, c, j) ^ 0x80) * d;
    } else if (has_min(kind)) {
        const float m = sl_q_half(gb + 32 + 2 * c);
        for (int j = 0; j < 32; j++)
            y[j] = (float)packed_value(kind, vals, c, j) * d + m;
    } else {
        const int kk = offset_k(kind);
        for (int j = 0; j < 32; j++)
            y[j] = (float)(packed_value(kind, vals, c, j) - kk) * d;
    }
}

/* Row c of one unit of a group (a group-block, or a K-quant group-superblock) into y[32] or
 * y[256]: the values GGUF's row blocks dequantise to (kernels/quant.h, models/formats/gguf.c). */
static void dequant_unit_row(int kind, const uint8_t *gu, int c, float *y)
{
    if (kind < KQ4K) {
        dequant_gb_row(kind, gu, c, y);
        return;
    }
    for (int j = 0; j < 8; j++) {
        uint8_t u[32];
        float dl[2], ml;
        kq_row(kind, gu, c, j, u, dl, &ml);
        for (int l = 0; l < 32; l++)
            y[32 * j + l] =
                kind != KQ6K ? dl[0] * (float)u[l] - ml : dl[l / 16] * (float)((int)u[l] - 32);
    }
}

void sl_qpack_dequant_row(sl_dtype_t dt, const uint8_t *w, int64_t k, int64_t r, float *y)
{
    const int kind = kind_of(dt);
    const int64_t ub = sl_dtype_block(dt);
    const size_t gbb = SL_QPACK_ROWS * sl_dtype_size(dt);
    const uint8_t *g = w + (size_t)(r / SL_QPACK_ROWS) * SL_QPACK_ROWS * sl_dtype_bytes(dt, k);
    for (int64_t b = 0; b < k / ub; b++)
        dequant_unit_row(kind, g + (size_t)b * gbb, (int)(r % SL_QPACK_ROWS), y + b * ub);
}

void sl_qpack_dequant_rows(int threads, sl_dtype_t dt, const uint8_t *w, int64_t k, int64_t r0,
                           int64_t nr, float *y)
{
    const int kind = kind_of(dt);
    const int64_t ub = sl_dtype_block(dt);
    const size_t gbb = SL_QPACK_ROWS * sl_dtype_size(dt), gbytes = (size_t)(k / ub) * gbb;
    const int64_t nb = k / ub, g0 = r0 / SL_QPACK_ROWS, ng = nr / SL_QPACK_ROWS;
#pragma omp parallel for schedule(static) num_threads(threads > 0 ? threads : 1) if (ng > 1)
    for (int64_t t = 0; t < ng * nb; t++) {
        const int64_t g = t / nb, b = t % nb;
        const uint8_t *gu = w + (size_t)(g0 + g) * gbytes + (size_t)b * gbb;
        for (int c = 0; c < SL_QPACK_ROWS; c++)
            dequant_unit_row(kind, gu, c, y + (g * SL_QPACK_ROWS + c) * k + b * ub);
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

/* The K-quant tiles' arithmetic, per output and sub-block j of 32 values, in order:
 *   Q4_K, Q5_K: acc = fmaf((float)sum_l u_l q_l, dl * d_x, acc); acc = fmaf(-ml, s_x, acc)
 *   Q6_K: for each half h (16 values): acc = fmaf((float)(sum u q - 32 S_h), dl_h * d_x, acc)
 * with dl, ml from kq_row (exact products) and S_h the half's sum of q_x (sum0, sum - sum0). */
static void tile_scalar_k(int kind, int mr, int ng, const uint8_t *w, size_t gstride, size_t gbb,
                          const sl_q8a_t *const *xr, int64_t nb, float *out)
{
    for (int r = 0; r < mr; r++)
        for (int g = 0; g < ng; g++)
            for (int c = 0; c < SL_QPACK_ROWS; c++) {
                float acc = 0.0f;
                for (int64_t b = 0; b < nb; b++) {
                    const uint8_t *gs = w + (size_t)g * gstride + (size_t)(b / 8) * gbb;
                    const sl_q8a_t *a = xr[r] + b;
                    uint8_t u[32];
                    float dl[2], ml;
                    kq_row(kind, gs, c, (int)(b % 8), u, dl, &ml);
                    int32_t raw[2] = {0, 0};
                    for (int j = 0; j < 32; j++)
                        raw[j / 16] += u[j] * a->q[j];
                    if (kind != KQ6K) {
                        acc = fmaf((float)(raw[0] + raw[1]), dl[0] * a->d, acc);
                        acc = fmaf(-ml, a->s, acc);
                    } else {
                        acc = fmaf((float)(raw[0] - 32 * a->sum0), dl[0] * a->d, acc);
                        acc = fmaf((float)(raw[1] - 32 * (a->sum - a->sum0)), dl[1] * a->d, acc);
                    }
                }
                out[r * 32 + g * 16 + c] = acc;
            }
}

static void tile_scalar(int kind, int mr, int ng, const uint8_t *w, size_t gstride, size_t gbb,
                        const sl_q8a_t *const *xr, int64_t nb, float *out)
{
    if (kind >= KQ4K) {
        tile_scalar_k(kind, mr, ng, w, gstride, gbb, xr, nb, out);
        return;
    }
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
                    if (has_min(kind))
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

/* One 32-value block of nibbles (put_nibbles' layout at nib[g]; with fifth, the 5-bit formats'
 * fifth bits follow them, packed_value) times activation blocks a[r]: ia[r][g] += sum_j u_j q_j
 * for each output, for mr rows and ng groups. */
SL_VNNI SL_INLINE void nib_block_vnni(const int mr, const int ng, const int fifth,
                                      const uint8_t *const nib[2], const sl_q8a_t *const a[4],
                                      __m512i ia[4][2])
{
    const __m512i m4 = _mm512_set1_epi8(0x0f), b4 = _mm512_set1_epi8(0x10);
    for (int s = 0; s < 4; s++) {
        __m512i lo[2], hi[2];
        for (int g = 0; g < ng; g++) {
            const __m512i raw = _mm512_loadu_si512((const void *)(nib[g] + 64 * s));
            lo[g] = _mm512_and_si512(raw, m4);
            hi[g] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);
            if (fifth) { /* a mask bit per byte: vmovdqu8 {k}{z} of 0x10 */
                uint64_t kl, kh;
                memcpy(&kl, nib[g] + 256 + 8 * s, 8);
                memcpy(&kh, nib[g] + 256 + 8 * (s + 4), 8);
                lo[g] = _mm512_or_si512(lo[g], _mm512_maskz_mov_epi8((__mmask64)kl, b4));
                hi[g] = _mm512_or_si512(hi[g], _mm512_maskz_mov_epi8((__mmask64)kh, b4));
            }
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

/* AVX-512 VNNI: a group's 16 outputs are one 512-bit register; per step, one 64-byte load of
 * weights serves every row, each row broadcasting 4 activation bytes (vpdpbusd: u8 weights x s8
 * activations, 4 pairs into each int32 lane). */
SL_VNNI SL_INLINE void tile_vnni(const int kind, const int mr, const int ng, const uint8_t *w,
                                 size_t gstride, size_t gbb, const sl_q8a_t *const *xr, int64_t nb,
                                 float *out)
{
    const int hb = head_bytes(kind), kk = offset_k(kind);
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
        if (kind == KQ8) {
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
            const uint8_t *nib[2] = {gb[0] + hb, ng > 1 ? gb[1] + hb : NULL};
            nib_block_vnni(mr, ng, has_fifth(kind), nib, a, ia);
        }
        __m512 dv[2], mv[2];
        for (int g = 0; g < ng; g++) {
            dv[g] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)gb[g]));
            if (has_min(kind))
                mv[g] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(gb[g] + 32)));
        }
        for (int r = 0; r < mr; r++) {
            const __m512 dx = _mm512_set1_ps(a[r]->d);
            const __m512i corr = _mm512_set1_epi32(kk * a[r]->sum);
            for (int g = 0; g < ng; g++) {
                const __m512i id = kk ? _mm512_sub_epi32(ia[r][g], corr) : ia[r][g];
                acc[r][g] =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(id), _mm512_mul_ps(dv[g], dx), acc[r][g]);
                if (has_min(kind))
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

/* 32 fifth bits (a little-endian u32 at p) as 32 bytes of 0x10 or 0 */
SL_AVX2 SL_INLINE __m256i fifth_bytes_avx2(const uint8_t *p)
{
    uint32_t m;
    memcpy(&m, p, 4);
    const __m256i sel = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    const __m256i spread =
        _mm256_shuffle_epi8(_mm256_set1_epi32((int)m),
                            _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2,
                                             2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, sel), sel);
    return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

/* nib_block_vnni in AVX2, for one group: ia[r][h] holds outputs 8h..8h+7. */
SL_AVX2 SL_INLINE void nib_block_avx2(const int mr, const int fifth, const uint8_t *nib,
                                      const sl_q8a_t *const a[4], __m256i ia[4][2])
{
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int s = 0; s < 4; s++) {
        __m256i lo[2], hi[2];
        for (int h = 0; h < 2; h++) {
            const __m256i raw = _mm256_loadu_si256((const __m256i *)(nib + 64 * s + 32 * h));
            lo[h] = _mm256_and_si256(raw, m4);
            hi[h] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
            if (fifth) {
                lo[h] = _mm256_or_si256(lo[h], fifth_bytes_avx2(nib + 256 + 8 * s + 4 * h));
                hi[h] = _mm256_or_si256(hi[h], fifth_bytes_avx2(nib + 256 + 8 * (s + 4) + 4 * h));
            }
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

SL_AVX2 SL_INLINE void tile_avx2(const int kind, const int mr, const uint8_t *w, size_t gbb,
                                 const sl_q8a_t *const *xr, int64_t nb, float *out)
{
    const int hb = head_bytes(kind), kk = kind == KQ8 ? 0 : offset_k(kind);
    const __m256i flip = _mm256_set1_epi8((char)0x80);
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
        if (kind == KQ8) {
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
            nib_block_avx2(mr, has_fifth(kind), gb + hb, a, ia);
        }
        __m256 dv[2], mv[2];
        for (int h = 0; h < 2; h++) {
            dv[h] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(gb + 16 * h)));
            if (has_min(kind))
                mv[h] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(gb + 32 + 16 * h)));
        }
        for (int r = 0; r < mr; r++) {
            const __m256 dx = _mm256_set1_ps(a[r]->d);
            const __m256i corr = _mm256_set1_epi32(kk * a[r]->sum);
            for (int h = 0; h < 2; h++) {
                const __m256i id = kk ? _mm256_sub_epi32(ia[r][h], corr) : ia[r][h];
                acc[r][h] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(id), _mm256_mul_ps(dv[h], dx), acc[r][h]);
                if (has_min(kind))
                    acc[r][h] = _mm256_fmadd_ps(mv[h], _mm256_set1_ps(a[r]->s), acc[r][h]);
            }
        }
    }
    for (int r = 0; r < mr; r++)
        for (int h = 0; h < 2; h++)
            _mm256_storeu_ps(out + r * 32 + h * 8, acc[r][h]);
}

/* The K-quant tile in AVX-512 VNNI (arithmetic as tile_scalar_k). A sub-block's scales for the
 * group's 16 rows come from one 16-byte load (Q4_K: slo and the shifted shi; Q6_K: a half's
 * signed scales), widened to 16 int32 lanes. */
SL_VNNI SL_INLINE __m512 widen_u8(__m128i v) { return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(v)); }
SL_VNNI SL_INLINE __m512 widen_i8(__m128i v) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v)); }

/* Q4_K sub-block j's scales sc and minimums m of 16 rows, as bytes */
SL_AVX2 SL_INLINE void q4k_scales(const uint8_t *gs, int j, int off, __m128i *sc, __m128i *m)
{
    const __m128i m4 = _mm_set1_epi8(0x0f), m2 = _mm_set1_epi8(3);
    const __m128i lo = _mm_loadu_si128((const __m128i *)(gs + Q4K_SLO + 16 * j + off));
    const __m128i hi =
        _mm_srl_epi16(_mm_loadu_si128((const __m128i *)(gs + Q4K_SHI + 16 * (j / 2) + off)),
                      _mm_cvtsi32_si128(4 * (j & 1)));
    *sc = _mm_or_si128(_mm_and_si128(lo, m4), _mm_slli_epi16(_mm_and_si128(hi, m2), 4));
    *m = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(lo, 4), m4),
                      _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(hi, 2), m2), 4));
}

SL_VNNI SL_INLINE void tile_vnni_k(const int kind, const int mr, const int ng, const uint8_t *w,
                                   size_t gstride, size_t gbb, const sl_q8a_t *const *xr,
                                   int64_t nb, float *out)
{
    const __m512i m4 = _mm512_set1_epi8(0x0f), m2 = _mm512_set1_epi8(3);
    __m512 acc[4][2];
    for (int r = 0; r < mr; r++)
        for (int g = 0; g < ng; g++)
            acc[r][g] = _mm512_setzero_ps();
    for (int64_t sb = 0; sb < nb / 8; sb++) {
        const uint8_t *gs[2];
        __m512 dv[2], mv[2];
        for (int g = 0; g < ng; g++) {
            gs[g] = w + (size_t)g * gstride + (size_t)sb * gbb;
            dv[g] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)gs[g]));
            if (kind != KQ6K)
                mv[g] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(gs[g] + Q4K_DMIN)));
        }
        for (int j = 0; j < 8; j++) {
            const sl_q8a_t *a[4];
            __m512i ia[4][2];
            for (int r = 0; r < mr; r++)
                a[r] = xr[r] + sb * 8 + j;
            if (kind != KQ6K) {
                for (int r = 0; r < mr; r++)
                    for (int g = 0; g < ng; g++)
                        ia[r][g] = _mm512_setzero_si512();
                const int at = Q4K_NIB + kq_stride(kind) * j;
                const uint8_t *nib[2] = {gs[0] + at, ng > 1 ? gs[1] + at : NULL};
                nib_block_vnni(mr, ng, kind == KQ5K, nib, a, ia);
                __m512 dl[2], ml[2];
                for (int g = 0; g < ng; g++) {
                    __m128i sc, m;
                    q4k_scales(gs[g], j, 0, &sc, &m);
                    dl[g] = _mm512_mul_ps(dv[g], widen_u8(sc));
                    ml[g] = _mm512_mul_ps(mv[g], widen_u8(m));
                }
                for (int r = 0; r < mr; r++) {
                    const __m512 dx = _mm512_set1_ps(a[r]->d);
                    for (int g = 0; g < ng; g++) {
                        acc[r][g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia[r][g]),
                                                    _mm512_mul_ps(dl[g], dx), acc[r][g]);
                        acc[r][g] = _mm512_fnmadd_ps(ml[g], _mm512_set1_ps(a[r]->s), acc[r][g]);
                    }
                }
                continue;
            }
            /* Q6_K: one half (16 values, steps 4h..4h+3) at a time */
            for (int h = 0; h < 2; h++) {
                for (int r = 0; r < mr; r++)
                    for (int g = 0; g < ng; g++)
                        ia[r][g] = _mm512_setzero_si512();
                for (int s = 4 * h; s < 4 * h + 4; s++) {
                    __m512i u[2];
                    for (int g = 0; g < ng; g++) {
                        const uint8_t *v = gs[g] + Q6K_VAL + Q6K_VSTRIDE * j;
                        __m512i lo = _mm512_loadu_si512((const void *)(v + 64 * (s & 3)));
                        lo = _mm512_and_si512(h == 0 ? lo : _mm512_srli_epi16(lo, 4), m4);
                        __m512i hi = _mm512_loadu_si512((const void *)(v + 256 + 64 * (s & 1)));
                        hi = _mm512_and_si512(_mm512_srl_epi16(hi, _mm_cvtsi32_si128(2 * (s >> 1))),
                                              m2);
                        u[g] = _mm512_or_si512(lo, _mm512_slli_epi16(hi, 4));
                    }
                    for (int r = 0; r < mr; r++) {
                        const __m512i xb = _mm512_set1_epi32(load_i32(a[r]->q + 4 * s));
                        for (int g = 0; g < ng; g++)
                            ia[r][g] = _mm512_dpbusd_epi32(ia[r][g], u[g], xb);
                    }
                }
                __m512 dl[2];
                for (int g = 0; g < ng; g++)
                    dl[g] = _mm512_mul_ps(
                        dv[g], widen_i8(_mm_loadu_si128(
                                   (const __m128i *)(gs[g] + Q6K_SC + 16 * (2 * j + h)))));
                for (int r = 0; r < mr; r++) {
                    const __m512 dx = _mm512_set1_ps(a[r]->d);
                    const __m512i corr =
                        _mm512_set1_epi32(32 * (h ? a[r]->sum - a[r]->sum0 : a[r]->sum0));
                    for (int g = 0; g < ng; g++)
                        acc[r][g] =
                            _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(ia[r][g], corr)),
                                            _mm512_mul_ps(dl[g], dx), acc[r][g]);
                }
            }
        }
    }
    for (int r = 0; r < mr; r++)
        for (int g = 0; g < ng; g++)
            _mm512_storeu_ps(out + r * 32 + g * 16, acc[r][g]);
}

/* The K-quant tile in AVX2: a group's 16 outputs in two halves of 8 (arithmetic as
 * tile_scalar_k; Q6_K's values are at most 63, so vpmaddubsw's int16 pairs cannot saturate). */
SL_AVX2 SL_INLINE void tile_avx2_k(const int kind, const int mr, const uint8_t *w, size_t gbb,
                                   const sl_q8a_t *const *xr, int64_t nb, float *out)
{
    const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(3);
    __m256 acc[4][2];
    for (int r = 0; r < mr; r++)
        acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int64_t sb = 0; sb < nb / 8; sb++) {
        const uint8_t *gs = w + (size_t)sb * gbb;
        __m256 dv[2], mv[2];
        for (int o = 0; o < 2; o++) {
            dv[o] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(gs + 16 * o)));
            if (kind != KQ6K)
                mv[o] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(gs + Q4K_DMIN + 16 * o)));
        }
        for (int j = 0; j < 8; j++) {
            const sl_q8a_t *a[4];
            __m256i ia[4][2]; /* [row][half of the outputs, o] */
            for (int r = 0; r < mr; r++)
                a[r] = xr[r] + sb * 8 + j;
            if (kind != KQ6K) {
                for (int r = 0; r < mr; r++)
                    ia[r][0] = ia[r][1] = _mm256_setzero_si256();
                nib_block_avx2(mr, kind == KQ5K, gs + Q4K_NIB + kq_stride(kind) * j, a, ia);
                __m256 dl[2], ml[2];
                for (int o = 0; o < 2; o++) {
                    __m128i sc, m;
                    q4k_scales(gs, j, 8 * o, &sc, &m);
                    dl[o] = _mm256_mul_ps(dv[o], _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(sc)));
                    ml[o] = _mm256_mul_ps(mv[o], _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(m)));
                }
                for (int r = 0; r < mr; r++) {
                    const __m256 dx = _mm256_set1_ps(a[r]->d);
                    for (int o = 0; o < 2; o++) {
                        acc[r][o] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ia[r][o]),
                                                    _mm256_mul_ps(dl[o], dx), acc[r][o]);
                        acc[r][o] = _mm256_fnmadd_ps(ml[o], _mm256_set1_ps(a[r]->s), acc[r][o]);
                    }
                }
                continue;
            }
            const uint8_t *v = gs + Q6K_VAL + Q6K_VSTRIDE * j;
            for (int h = 0; h < 2; h++) { /* Q6_K: one half of the values at a time */
                for (int r = 0; r < mr; r++)
                    ia[r][0] = ia[r][1] = _mm256_setzero_si256();
                for (int s = 4 * h; s < 4 * h + 4; s++) {
                    __m256i u[2];
                    for (int o = 0; o < 2; o++) {
                        __m256i lo =
                            _mm256_loadu_si256((const __m256i *)(v + 64 * (s & 3) + 32 * o));
                        lo = _mm256_and_si256(h == 0 ? lo : _mm256_srli_epi16(lo, 4), m4);
                        __m256i hi =
                            _mm256_loadu_si256((const __m256i *)(v + 256 + 64 * (s & 1) + 32 * o));
                        hi = _mm256_and_si256(_mm256_srl_epi16(hi, _mm_cvtsi32_si128(2 * (s >> 1))),
                                              m2);
                        u[o] = _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));
                    }
                    for (int r = 0; r < mr; r++) {
                        const __m256i xb = _mm256_set1_epi32(load_i32(a[r]->q + 4 * s));
                        for (int o = 0; o < 2; o++)
                            ia[r][o] = _mm256_add_epi32(ia[r][o], madd_u8s8(u[o], xb));
                    }
                }
                __m256 dl[2];
                for (int o = 0; o < 2; o++)
                    dl[o] = _mm256_mul_ps(
                        dv[o], _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
                                   (const __m128i *)(gs + Q6K_SC + 16 * (2 * j + h) + 8 * o)))));
                for (int r = 0; r < mr; r++) {
                    const __m256 dx = _mm256_set1_ps(a[r]->d);
                    const __m256i corr =
                        _mm256_set1_epi32(32 * (h ? a[r]->sum - a[r]->sum0 : a[r]->sum0));
                    for (int o = 0; o < 2; o++)
                        acc[r][o] =
                            _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(ia[r][o], corr)),
                                            _mm256_mul_ps(dl[o], dx), acc[r][o]);
                }
            }
        }
    }
    for (int r = 0; r < mr; r++)
        for (int o = 0; o < 2; o++)
            _mm256_storeu_ps(out + r * 32 + o * 8, acc[r][o]);
}

#define VNNI_TILE(KIND, MR, NG)                                                                    \
    SL_VNNI static void tile_vnni_##KIND##_##MR##_##NG(const uint8_t *w, size_t gstride,           \
                                                       size_t gbb, const sl_q8a_t *const *xr,      \
                                                       int64_t nb, float *out)                     \
    {                                                                                              \
        if (KIND >= KQ4K)                                                                          \
            tile_vnni_k(KIND, MR, NG, w, gstride, gbb, xr, nb, out);                               \
        else                                                                                       \
            tile_vnni(KIND, MR, NG, w, gstride, gbb, xr, nb, out);                                 \
    }
#define AVX2_TILE(KIND, MR)                                                                        \
    SL_AVX2 static void tile_avx2_##KIND##_##MR(const uint8_t *w, size_t gstride, size_t gbb,      \
                                                const sl_q8a_t *const *xr, int64_t nb, float *out) \
    {                                                                                              \
        (void)gstride;                                                                             \
        if (KIND >= KQ4K)                                                                          \
            tile_avx2_k(KIND, MR, w, gbb, xr, nb, out);                                            \
        else                                                                                       \
            tile_avx2(KIND, MR, w, gbb, xr, nb, out);                                              \
    }
#define FORM_TILES(KIND)                                                                           \
    VNNI_TILE(KIND, 1, 1)                                                                          \
    VNNI_TILE(KIND, 1, 2)                                                                          \
    VNNI_TILE(KIND, 4, 1) VNNI_TILE(KIND, 4, 2) AVX2_TILE(KIND, 1) AVX2_TILE(KIND, 4)
FORM_TILES(0)
FORM_TILES(1)
FORM_TILES(2)
FORM_TILES(3)
FORM_TILES(4)
FORM_TILES(5)
FORM_TILES(6)
FORM_TILES(7)
#endif

#define SCALAR_TILES(KIND)                                                                         \
    SCALAR_TILE(KIND, 1, 1) SCALAR_TILE(KIND, 1, 2) SCALAR_TILE(KIND, 4, 1) SCALAR_TILE(KIND, 4, 2)
SCALAR_TILES(0)
SCALAR_TILES(1)
SCALAR_TILES(2)
SCALAR_TILES(3)
SCALAR_TILES(4)
SCALAR_TILES(5)
SCALAR_TILES(6)
SCALAR_TILES(7)

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
    static const qtile_fn vnni[NKINDS][4] = {
        TABLE4(tile_vnni, 0), TABLE4(tile_vnni, 1), TABLE4(tile_vnni, 2), TABLE4(tile_vnni, 3),
        TABLE4(tile_vnni, 4), TABLE4(tile_vnni, 5), TABLE4(tile_vnni, 6), TABLE4(tile_vnni, 7)};
#define PAIR2(K)                                                                                   \
    {                                                                                              \
        tile_avx2_##K##_1, tile_avx2_##K##_4                                                       \
    }
    static const qtile_fn avx2[NKINDS][2] = {PAIR2(0), PAIR2(1), PAIR2(2), PAIR2(3),
                                             PAIR2(4), PAIR2(5), PAIR2(6), PAIR2(7)};
#undef PAIR2
    if (f == SL_QFORM_VNNI)
        return vnni[kind][i];
    if (f == SL_QFORM_AVX2)
        return avx2[kind][mr == 4];
#endif
    static const qtile_fn scalar[NKINDS][4] = {TABLE4(tile_scalar, 0), TABLE4(tile_scalar, 1),
                                               TABLE4(tile_scalar, 2), TABLE4(tile_scalar, 3),
                                               TABLE4(tile_scalar, 4), TABLE4(tile_scalar, 5),
                                               TABLE4(tile_scalar, 6), TABLE4(tile_scalar, 7)};
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
    /* gbb: a group-block, or a K-quant group-superblock (8 activation blocks) */
    const size_t gbb = SL_QPACK_ROWS * sl_dtype_size(dt);
    const size_t gstride = SL_QPACK_ROWS * sl_dtype_bytes(dt, k);
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
    /* Tasks in row blocks of ntm tiles of tm rows: block, then groups, then row tiles (a
     * block's tasks run one after the other, so both threads share the block's rows). */
    const int64_t row_bytes = nb * (int64_t)sizeof *xq, ntg = (groups + tg - 1) / tg;
    int64_t ntm = SL_QGEMM_BLOCK_BYTES / (row_bytes * tm);
    ntm = ntm < 1 ? 1 : ntm;
    ntm = ntm < (m + tm - 1) / tm ? ntm : (m + tm - 1) / tm;
    const int64_t nblk = (m + ntm * tm - 1) / (ntm * tm);
    const int par = threads > 1 && m * n * k >= SL_QGEMM_PAR_MIN;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads > 0 ? threads : 1) if (par)
    for (int64_t t = 0; t < nblk * ntg * ntm; t++) {
        const int64_t blk = t / (ntg * ntm), u = t % (ntg * ntm);
        const int64_t g0 = (u / ntm) * tg, i0 = (blk * ntm + u % ntm) * tm;
        if (i0 >= m)
            continue; /* the last block's tiles past the last row */
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
