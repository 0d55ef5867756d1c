/*
 * cpu_quant.h — CPU linear layers that compute straight from block-quantized weights (Q8_0,
 * Q4_0, Q4_1; kernels/quant.h): each 32-value block of an activation row is quantized to int8
 * with one f32 scale, and every weight block meets it in an integer dot product; only the
 * per-block sums are scaled and added in f32.
 *
 *   Q8_0:  d_w * d_x * sum(q_w q_x)
 *   Q4_0:  d_w * (d_x * sum(nib q_x) - 8 * s_x)          s_x = d_x * sum(q_x)
 *   Q4_1:  d_w * d_x * sum(nib q_x) + m_w * s_x
 *
 * The dot products come in three forms, picked once at run time from the CPU's features: AVX-512
 * VNNI (vpdpbusd), AVX2 (vpmaddubsw) and portable C. All three compute the same integer sums per
 * block; only the order of the f32 additions of block results differs. The tests compare each
 * form with the scalar one (tests/unit/test_cpu_quant.c).
 */
#ifndef SL_CPU_QUANT_H
#define SL_CPU_QUANT_H

#include <stdint.h>

#include "kernels/backend.h"

/* One 32-value block of an activation row: x[j] ~ d * q[j]; sum = sum(q), s = d * sum, sum0 =
 * the sum of q[0..15] (Q6_K's scales are per 16 values). q starts 16 bytes in: aligned vector
 * loads within an aligned array. */
typedef struct {
    float d, s;
    int32_t sum, sum0;
    int8_t q[32];
} sl_q8a_t;

typedef enum { SL_QFORM_SCALAR = 0, SL_QFORM_AVX2 = 1, SL_QFORM_VNNI = 2 } sl_qform_t;

const char *sl_qform_name(sl_qform_t f);
/* Whether this CPU runs form f (scalar: always). */
int sl_qform_available(sl_qform_t f);
/* The fastest form this CPU runs; SL_QDOT_FORM=scalar|avx2|vnni in the environment caps it
 * (a form the CPU lacks is never chosen). */
sl_qform_t sl_qform_best(void);

/* Quantizes k values (k a multiple of 32) of x into k / 32 blocks: d = max|x| / 127, q =
 * round-to-nearest(x / d) (all zero for a zero block). */
void sl_q8a_quantize(const float *x, int64_t k, sl_q8a_t *out);

/* sum over nb blocks of one weight row (dtype wt, raw blocks at w) times one quantized
 * activation row, in form f (which must be available). */
float sl_qdot(sl_qform_t f, sl_dtype_t wt, const uint8_t *w, const sl_q8a_t *a, int64_t nb);

/* The same for one weight row and `rows` (1..4) activation rows a + r * nb into out[r]: the
 * SIMD forms read and expand each weight block once for all the rows. */
void sl_qdot_rows(sl_qform_t f, sl_dtype_t wt, const uint8_t *w, const sl_q8a_t *a, int64_t nb,
                  int rows, float *out);

/* y[M,N] = x[M,K] @ w[N,K]^T (+ bias[N]) for a quantized w (row i of w: raw blocks at
 * w + i * sl_dtype_bytes(wt, K)), on `threads` OpenMP threads, in form f. xq: scratch of
 * M * K / 32 blocks. Decode-sized M: the weight rows are split over the threads; larger M:
 * tiles of weight rows x activation rows, so a tile of weights stays in cache while it meets
 * many activation rows. */
void sl_cpu_linear_q(int threads, sl_qform_t f, sl_dtype_t wt, const float *x, int64_t m, int64_t k,
                     const uint8_t *w, int64_t n, const float *bias, float *y, sl_q8a_t *xq);

/* ---- weights quantized at load, static activation scales (--precision int8, w8a8) ----------
 * A float matrix becomes Q8_0 blocks: for each 32 values of a row, d = max|w| / 127 (stored as
 * f16, rounded to nearest), q = round(w / d) clamped to [-127, 127] (all zero when d is 0). The
 * scale is per block of 32 weights, which is finer than one scale per output channel. */
void sl_q8_0_quantize_rows(const float *x, int64_t rows, int64_t k, uint8_t *out);
/* The same in form f (the AVX2 form unless f is the scalar one or the CPU lacks AVX2; both give
 * the same bytes); sl_q8_0_quantize_rows takes the best form. */
void sl_q8_0_quantize_rows_form(sl_qform_t f, const float *x, int64_t rows, int64_t k,
                                uint8_t *out);

/* Quantizes k values of x (k a multiple of 32) with static steps (W8A8 with calibrated
 * scales): block b takes d = max(xmax[b], the block's own max |x|) / 127 and q = round(x / d),
 * so a block within its calibrated range gets the calibrated step and one beyond it its own
 * (nothing saturates: clipping an input the calibration rows did not reach cost far more than
 * the finer step gains); a block with xmax[b] = 0 is quantized from its own max as
 * sl_q8a_quantize does. */
void sl_q8a_quantize_static(const float *x, int64_t k, const float *xmax, sl_q8a_t *out);

/* m rows of x [m, k] into xq [m, k / 32] on `threads` threads: sl_q8a_quantize_static(xmax)
 * when xmax is not NULL, else sl_q8a_quantize; in the AVX2 form unless f is the scalar form
 * or the CPU lacks AVX2 (both give the same bits). */
void sl_q8a_quantize_rows(int threads, sl_qform_t f, const float *x, int64_t m, int64_t k,
                          const float *xmax, sl_q8a_t *xq);

/* sl_cpu_linear_q with the activations quantized by sl_q8a_quantize_static(xmax) when xmax is
 * not NULL (xmax: [k / 32]). */
void sl_cpu_linear_q_ex(int threads, sl_qform_t f, sl_dtype_t wt, const float *x, int64_t m,
                        int64_t k, const uint8_t *w, int64_t n, const float *bias, float *y,
                        sl_q8a_t *xq, const float *xmax);

#endif
