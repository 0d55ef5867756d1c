/*
 * quant.h — the block-quantized weight formats (as GGUF stores them, ggml's layout) and their
 * per-block dequantisation, shared by the CPU backend, the CUDA kernels and the GGUF reader so
 * that every path decodes a block with the same formula. Marked host+device under nvcc.
 *
 * A block holds 32 consecutive values of a row (row length a multiple of 32):
 *   Q8_0 (34 bytes): f16 scale d, 32 signed bytes q;              x[j] = q[j] * d
 *   Q4_0 (18 bytes): f16 scale d, 16 bytes of nibbles;            x[j] = (nib[j] - 8) * d
 *   Q4_1 (20 bytes): f16 scale d, f16 minimum m, 16 bytes;        x[j] = nib[j] * d + m
 * where byte i of the nibbles holds value i in its low four bits and value i + 16 in its high
 * four. Scales are little-endian f16 at the start of the block (byte offsets 0 and 2).
 *
 * Three K-quants keep super-blocks of 256 values, eight 32-value sub-blocks j with integer
 * scales quantized against the super-block's f16 scale(s) (ggml's dequantize_row_q*_K order):
 *   Q4_K (144 bytes): f16 d, f16 dmin, 12 bytes of 6-bit scales sc_j and minimums m_j
 *                     (sl_q4_k_scale_min), 128 bytes of nibbles (sub-blocks 2i and 2i + 1 in
 *                     the low and high nibbles of bytes 32i..32i+31);
 *                     x = (d sc_j) u - (dmin m_j), u the nibble
 *   Q5_K (176 bytes): as Q4_K, with 32 bytes of fifth bits qh before the nibbles (bit j of
 *                     qh[l]: the fifth bit of value l of sub-block j); x as Q4_K's
 *   Q6_K (210 bytes): 128 bytes of low nibbles, 64 bytes of high bit pairs, 16 signed 8-bit
 *                     scales (one per 16 values), f16 d at byte 208;
 *                     x = (d sc) (u - 32), u the 6-bit value
 * Every product d sc, dmin m is exact in f32 (11 significant bits times at most 8).
 *
 * Two 5-bit formats keep 32-value blocks, with the fifth bit of value j in bit j of a
 * little-endian u32 qh after the scales, then nibbles as Q4_0's (sl_q5_values):
 *   Q5_0 (22 bytes): f16 d, qh, 16 bytes;                        x = (u - 16) d
 *   Q5_1 (24 bytes): f16 d, f16 m, qh, 16 bytes;                 x = u d + m
 */
#ifndef SL_QUANT_H
#define SL_QUANT_H

#include <stdint.h>

#include "kernels/elementwise.h"

#define SL_QBLOCK 32
#define SL_Q8_0_BYTES 34
#define SL_Q4_0_BYTES 18
#define SL_Q4_1_BYTES 20
#define SL_QK 256 /* values of a K-quant super-block */
#define SL_Q4_K_BYTES 144
#define SL_Q6_K_BYTES 210
#define SL_Q5_K_BYTES 176
#define SL_Q5_0_BYTES 22
#define SL_Q5_1_BYTES 24

/* The little-endian f16 at p (blocks are only 2-byte aligned, so no wider loads). */
SL_HD float sl_q_half(const uint8_t *p) { return sl_f16_to_f32((uint16_t)(p[0] | (p[1] << 8))); }

/* The 32 values of one block of dtype dt (an sl_dtype_t: 5 Q8_0, 6 Q4_0, 7 Q4_1) into y. */
SL_HD void sl_q_dequant_block(int dt, const uint8_t *blk, float *y)
{
    float d = sl_q_half(blk);
    if (dt == 5) {
        for (int j = 0; j < 32; j++)
            y[j] = (float)(int8_t)blk[2 + j] * d;
    } else if (dt == 6) {
        for (int j = 0; j < 16; j++) {
            y[j] = (float)((blk[2 + j] & 0x0f) - 8) * d;
            y[j + 16] = (float)((blk[2 + j] >> 4) - 8) * d;
        }
    } else {
        float m = sl_q_half(blk + 2);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)(blk[4 + j] & 0x0f) * d + m;
            y[j + 16] = (float)(blk[4 + j] >> 4) * d + m;
        }
    }
}

/* The 32 5-bit values u of a Q5_0/Q5_1 block whose qh starts at h (nibbles 4 bytes on). */
SL_HD void sl_q5_values(const uint8_t *h, uint8_t *u)
{
    const uint32_t qh =
        (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 24;
    for (int j = 0; j < 16; j++) {
        u[j] = (uint8_t)((h[4 + j] & 0x0f) | ((qh >> j) & 1) << 4);
        u[j + 16] = (uint8_t)((h[4 + j] >> 4) | ((qh >> (j + 16)) & 1) << 4);
    }
}

/* Q4_K's sub-block j scale and minimum from the 12 bytes q: j < 4 keeps both in the low six bits
 * of bytes j and j + 4; j >= 4 has its low four bits in byte j + 4 and its top two in the high
 * bits of bytes j - 4 (scale) and j (minimum). */
SL_HD void sl_q4_k_scale_min(int j, const uint8_t *q, int *sc, int *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Q4_K (five = 0) or Q5_K (five = 1) super-block blk's sub-block j: its 32 values u (the nibble,
 * with Q5_K's fifth bit), scale and minimum. */
SL_HD void sl_q45_k_sub(const uint8_t *blk, int five, int j, uint8_t *u, int *sc, int *m)
{
    const uint8_t *qh = blk + 16, *q = blk + (five ? 48 : 16) + (j / 2) * 32;
    for (int l = 0; l < 32; l++)
        u[l] = (uint8_t)((j % 2 ? q[l] >> 4 : q[l] & 0x0f) | (five ? ((qh[l] >> j) & 1) << 4 : 0));
    sl_q4_k_scale_min(j, blk + 4, sc, m);
}

/* Q6_K super-block blk's sub-block j (values 32j..32j+31): its 6-bit values u (value order)
 * and the scales of its two halves. Half h = j / 4 of the super-block keeps value l + 32k
 * (k = j % 4) in byte l + 32 (k % 2) of its 64 low bytes (low nibble for k < 2) and in bits
 * 2k..2k+1 of byte l of its 32 high bytes. */
SL_HD void sl_q6_k_sub(const uint8_t *blk, int j, uint8_t *u, int *sc)
{
    const int h = j / 4, k = j % 4;
    const uint8_t *ql = blk + h * 64 + (k % 2) * 32, *qh = blk + 128 + h * 32;
    for (int l = 0; l < 32; l++)
        u[l] = (uint8_t)((k < 2 ? ql[l] & 0x0f : ql[l] >> 4) | (((qh[l] >> (2 * k)) & 3) << 4));
    sc[0] = (int8_t)blk[192 + 2 * j];
    sc[1] = (int8_t)blk[192 + 2 * j + 1];
}

#endif
