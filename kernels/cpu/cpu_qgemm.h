/*
 * cpu_qgemm.h — block-quantized weight matrices packed for integer GEMMs on the CPU, and the
 * GEMM itself: many int8 activation rows against a packed Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K,
 * Q5_K or Q6_K matrix.
 *
 * Why a packed layout: in GGUF's row-major blocks (kernels/quant.h) each output needs its own
 * horizontal sum and per-block scaling, about seven instructions per 32 multiply-adds. Packed,
 * one 64-byte load holds 4 consecutive values of 16 rows, so one vpdpbusd with 4 broadcast
 * activation bytes does 64 multiply-adds for 16 outputs at once, and the scaling is paid once
 * per 32 values of 16 outputs.
 *
 * Layout. A matrix w [N, K] (N a multiple of 16, K of 32) is packed in place, 16 rows (a
 * "group") at a time, into exactly the bytes those rows held. Group g's 32-value blocks b =
 * 0..K/32-1 follow one another from byte g * 16 * row_bytes; group-block (g, b), for row c of
 * the group (0..15) and value j = 4s + t of the block (s: 0..7, t: 0..3):
 *   Q8_0 (544 bytes): f16 d[16]; u8 q[8][16][4]:   q[s][c][t] = q_ct + 128
 *   Q4_0 (288 bytes): f16 d[16]; u8 nib[4][16][4]: low nibble of nib[s][c][t] is value 4s+t,
 *   Q4_1 (320 bytes): f16 d[16]; f16 m[16]; nib    high nibble value 4(s+4)+t (s: 0..3)
 *   Q5_0 (352 bytes), Q5_1 (384 bytes): as Q4_0, Q4_1, then u8 fifth[8][8], the fifth bits of
 *                     value-step s as a 64-bit mask over the step's 64 bytes (bit 4c + t)
 * so every weight operand is unsigned (u8 x s8 is what vpdpbusd and vpmaddubsw multiply).
 * The K-quants (K a multiple of 256) are packed the same way per 256-value super-block: the
 * nibbles of each 32-value sub-block as Q4's (Q5_K's fifth bits as Q5's), Q6_K's top two bits
 * beside them, and every
 * sub-block's integer scales for the 16 rows side by side (layout in cpu_qgemm.c).
 *
 * Arithmetic. Activation row i is quantized per 32-value block (cpu_quant.h: d_x, q_x, and the
 * int sum S of q_x). Output (i, c), block by block in order:
 *   idot = sum_j u_cj q_xj - K S             (exact int32; K: 128 Q8_0, 8 Q4_0, 16 Q5_0,
 *                                             0 Q4_1 and Q5_1)
 *   acc  = fmaf((float)idot, d_c * d_x, acc)  (d_c * d_x rounded to f32 first)
 *   acc  = fmaf(m_c, s_x, acc)                (Q4_1, Q5_1; s_x = d_x S)
 * and y = acc + bias_c; for the K-quants, per sub-block j with its exact f32 scale dl = d sc_j
 * (and Q4_K's minimum ml = dmin m_j):
 *   Q4_K, Q5_K:  acc = fmaf((float)sum u q_x, dl * d_x, acc); acc = fmaf(-ml, s_x, acc)
 *   Q6_K:  per 16 values h: acc = fmaf((float)(sum u q_x - 32 S_h), dl_h * d_x, acc)
 * Every form (scalar, AVX2, AVX-512 VNNI) does exactly these operations,
 * so all give the same bits, and an output does not depend on which rows or columns share its
 * tile: results do not depend on the batch.
 */
#ifndef SL_CPU_QGEMM_H
#define SL_CPU_QGEMM_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_quant.h"

#define SL_QPACK_ROWS SL_PACK_ROWS

/* Whether a [n, k] matrix of dtype dt can be packed: Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 (k a multiple of 32)
 * or Q4_K/Q6_K (k a multiple of 256), n a multiple of SL_QPACK_ROWS. */
int sl_qpack_fits(sl_dtype_t dt, int64_t n, int64_t k);

/* Packs (or unpacks) the n rows of w in place (sl_qpack_fits must hold), on `threads` threads. */
void sl_qpack(int threads, sl_dtype_t dt, uint8_t *w, int64_t n, int64_t k);
void sl_qunpack(int threads, sl_dtype_t dt, uint8_t *w, int64_t n, int64_t k);

/* Row r of a packed matrix, dequantised into y[k]: the same values sl_q_dequant_block gives
 * for the row's blocks before packing. */
void sl_qpack_dequant_row(sl_dtype_t dt, const uint8_t *w, int64_t k, int64_t r, float *y);

/* Rows [r0, r0 + nr) of a packed matrix (r0 and nr multiples of 16), dequantised into
 * y [nr, k] row-major, on `threads` threads; the same values as sl_qpack_dequant_row. */
void sl_qpack_dequant_rows(int threads, sl_dtype_t dt, const uint8_t *w, int64_t k, int64_t r0,
                           int64_t nr, float *y);

/* Quantized activation bytes of one row block of sl_qgemm: every group of weights meets a
 * block of rows before the next block starts, so those rows come from the caches (about an L2)
 * rather than from memory once per group (a 12288 x 1536 x 576 Q8_0 product: 0.043 s against
 * 0.057 s when each group met all rows), and the weights are read once per block. */
#define SL_QGEMM_BLOCK_BYTES (1 << 20)

/* y[m, n] = x @ w^T (+ bias[n]) for activation rows xq [m, k / 32] (quantized by
 * sl_q8a_quantize or sl_q8a_quantize_static) and a packed w [n, k], in form f, on `threads`
 * OpenMP threads. */
void sl_qgemm(int threads, sl_qform_t f, sl_dtype_t dt, const sl_q8a_t *xq, int64_t m, int64_t k,
              const uint8_t *w, int64_t n, const float *bias, float *y);

#endif
