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
 */
#ifndef SL_QUANT_H
#define SL_QUANT_H

#include <stdint.h>

#include "kernels/elementwise.h"

#define SL_QBLOCK 32
#define SL_Q8_0_BYTES 34
#define SL_Q4_0_BYTES 18
#define SL_Q4_1_BYTES 20

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

#endif
