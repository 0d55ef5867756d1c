/*
 * bench_qgemm.c — one linear layer y = x @ w^T on the CPU backend, timed four ways for the same
 * shape and threads, so each quantized path is read as a ratio to f32 weights in the same run:
 *
 *   f32       f32 w through the BLAS GEMM (the peer)
 *   bulk      Q8_0/Q4_0/Q4_1/Q5_0/Q5_1/Q4_K/Q5_K/Q6_K w, f32 rows against dequantised chunks in
 *             the BLAS (bulk rows)
 *   int8      the same w in GGUF's row layout, int8 rows in per-row dot products (not for the
 *             types held only packed: Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)
 *   packed    the same w packed (sl_tensor_pack), int8 rows in the integer GEMM (cpu_qgemm.c)
 *
 * Prints one line per path: best seconds over R repetitions after a warm-up, GFLOP/s (2 M N K /
 * s) and the ratio to f32.
 *
 * Build: cmake --build build --target bench_qgemm
 * Run:   build/bench_qgemm M N K [q8_0|q4_0|q4_1|q5_0|q5_1|q4_k|q5_k|q6_k] [threads] [reps]
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_quant.h"
#include "kernels/quant.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double best_of(int reps, const sl_tensor_t *x, const sl_tensor_t *w, sl_tensor_t *y)
{
    double best = 1e30;
    for (int r = 0; r <= reps; r++) { /* r = 0: warm-up */
        double t0 = now();
        sl_linear(x, w, NULL, y);
        double dt = now() - t0;
        if (r > 0 && dt < best)
            best = dt;
    }
    return best;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr,
                "usage: %s M N K [q8_0|q4_0|q4_1|q5_0|q5_1|q4_k|q5_k|q6_k] [threads] [reps]\n",
                argv[0]);
        return 2;
    }
    const int64_t m = atoll(argv[1]), n = atoll(argv[2]), k = atoll(argv[3]);
    const char *qt = argc > 4 ? argv[4] : "q8_0";
    const int threads = argc > 5 ? atoi(argv[5]) : 0, reps = argc > 6 ? atoi(argv[6]) : 10;
    const sl_dtype_t dt = !strcmp(qt, "q4_0")   ? SL_Q4_0
                          : !strcmp(qt, "q4_1") ? SL_Q4_1
                          : !strcmp(qt, "q4_k") ? SL_Q4_K
                          : !strcmp(qt, "q6_k") ? SL_Q6_K
                          : !strcmp(qt, "q5_0") ? SL_Q5_0
                          : !strcmp(qt, "q5_1") ? SL_Q5_1
                          : !strcmp(qt, "q5_k") ? SL_Q5_K
                                                : SL_Q8_0;
    const int only = sl_dtype_packed_only(dt);
    if (m < 1 || n < 16 || n % 16 || k % sl_dtype_block(dt) || k < 32) {
        fprintf(stderr, "bench_qgemm: M >= 1, N a multiple of 16, K of %lld\n",
                (long long)sl_dtype_block(dt));
        return 2;
    }
    sl_error_t err;
    sl_backend_t *be = sl_backend_create(SL_BACKEND_CPU, 0, threads, &err);
    if (!be) {
        fprintf(stderr, "bench_qgemm: %s\n", err.msg);
        return 1;
    }
    float *hx = malloc(sizeof(float) * (size_t)(m * k)),
          *hw = malloc(sizeof(float) * (size_t)(n * k));
    unsigned s = 12345;
    for (int64_t i = 0; i < m * k; i++)
        hx[i] = (float)((s = s * 1103515245u + 12345u) >> 9) / 8388608.0f - 1.0f;
    for (int64_t i = 0; i < n * k; i++)
        hw[i] = ((float)((s = s * 1103515245u + 12345u) >> 9) / 8388608.0f - 1.0f) * 0.05f;
    /* the quantized weight: Q8_0 from sl_q8_0_quantize_rows; the others random blocks with
     * small finite f16 scales */
    const size_t qbytes = sl_dtype_bytes(dt, n * k);
    uint8_t *hq = malloc(qbytes);
    if (dt == SL_Q8_0) {
        sl_q8_0_quantize_rows(hw, n, k, hq);
    } else {
        const size_t bb = sl_dtype_size(dt);
        for (size_t b = 0; b < qbytes / bb; b++) {
            uint8_t *blk = hq + b * bb;
            for (size_t j = 0; j < bb; j++)
                blk[j] = (uint8_t)((s = s * 1103515245u + 12345u) >> 16);
            blk[0] = 0x00, blk[1] = 0x24; /* f16 scale 2^-6 */
            if (dt == SL_Q4_1 || dt == SL_Q5_1)
                blk[2] = 0x00, blk[3] = 0xa8; /* f16 minimum -2^-5 */
            if (dt == SL_Q4_K || dt == SL_Q5_K)
                blk[0] = 0x00, blk[1] = 0x14, blk[2] = 0x00, blk[3] = 0x18; /* 2^-10, 2^-9 */
            if (dt == SL_Q6_K)
                blk[208] = 0x00, blk[209] = 0x0c; /* 2^-12 */
        }
    }
    sl_tensor_t *x = sl_tensor_new2(be, SL_F32, m, k), *y = sl_tensor_new2(be, SL_F32, m, n);
    sl_tensor_t *wf = sl_tensor_new2(be, SL_F32, n, k), *wq = sl_tensor_new2(be, dt, n, k),
                *wp = sl_tensor_new2(be, dt, n, k);
    sl_copy_h2d(x, hx, sl_tensor_bytes(x));
    sl_copy_h2d(wf, hw, sl_tensor_bytes(wf));
    sl_copy_h2d(wq, hq, qbytes);
    sl_copy_h2d(wp, hq, qbytes);
    sl_tensor_pack(wp);
    const double flop = 2.0 * (double)m * (double)n * (double)k;
    double t[4];
    t[0] = best_of(reps, x, wf, y);
    t[1] = best_of(reps, x, only ? wp : wq, y); /* bulk rows: the default */
    sl_backend_set_bulk_rows(be, 0);
    t[2] = only ? 0.0 : best_of(reps, x, wq, y);
    t[3] = best_of(reps, x, wp, y);
    sl_backend_set_bulk_rows(be, SL_BULK_ALL);
    const char *names[4] = {"f32", "bulk", "int8", "packed"};
    printf("# M %lld N %lld K %lld %s, %s, best of %d\n", (long long)m, (long long)n, (long long)k,
           sl_dtype_name(dt), sl_backend_describe(be), reps);
    for (int i = 0; i < 4; i++)
        if (t[i] > 0.0)
            printf("%-7s %10.6f s %9.1f GFLOP/s %6.2fx f32\n", names[i], t[i], flop / t[i] / 1e9,
                   t[0] / t[i]);
    sl_tensor_free(x);
    sl_tensor_free(y);
    sl_tensor_free(wf);
    sl_tensor_free(wq);
    sl_tensor_free(wp);
    sl_backend_free(be);
    free(hx);
    free(hw);
    free(hq);
    return 0;
}
