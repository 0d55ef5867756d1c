/*
 * test_weights_finite.c — weights holding NaN or Inf are refused as they are loaded, naming
 * the file, the tensor and the element (a NaN weight used to give every row the same finite
 * answer, since ReLU mapped NaN to 0).
 *
 * 1. GGUF: tests/reference/goldens/mixed_types.gguf (written by gguf-py; its BF16 tensor holds
 *    Inf and NaN on purpose, its F32 tensor Inf): the BF16 tensor's dequantised block is refused,
 *    the quantised tensors and the finite F32 vector load.
 * 2. safetensors written here: an F32 tensor with a NaN at [1, 2] and an F16 tensor with +Inf at
 *    [0, 3] are refused with those coordinates; a block that leaves the bad row out loads (only
 *    what a rank loads is checked); a finite BF16 tensor loads.
 * 3. sl_weights_check_finite on 16-bit blocks (how mlp.c checks weights kept in f16/bf16): a
 *    value that became Inf in f16 is named; long finite blocks pass, and a NaN in the last
 *    element of a long block is found.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/elementwise.h"
#include "models/formats/weights.h"
#include "sl_test.h"

static void test_gguf(void)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/tests/reference/goldens/mixed_types.gguf",
             sl_test_source_dir());
    sl_error_t err = {{0}};
    sl_weights_t *w = sl_weights_open(path, &err);
    CHECKF(w != NULL, "%s", err.msg);
    if (!w)
        return;
    float *b = sl_weights_block(w, "tensor.bf16", 0, 3, 0, 64, &err);
    CHECKF(b == NULL && strstr(err.msg, path) && strstr(err.msg, "'tensor.bf16'") &&
               (strstr(err.msg, "NaN") || strstr(err.msg, "Inf")),
           "GGUF BF16 tensor with Inf/NaN: %s", b ? "loaded" : err.msg);
    free(b);
    const char *fine[] = {"tensor.vec", "tensor.q8_0", "tensor.q4_0.2d", "tensor.q4_1"};
    for (int i = 0; i < 4; i++) {
        b = sl_weights_block(w, fine[i], 0, i ? 3 : 1, 0, 64, &err);
        CHECKF(b != NULL, "%s: %s", fine[i], err.msg);
        free(b);
    }
    sl_weights_close(w);
}

static void put_u64(FILE *f, uint64_t v)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    fwrite(b, 1, 8, f);
}

static void test_safetensors(void)
{
    char dir[512], path[600];
    if (sl_test_tmpdir(dir, sizeof dir, "sl_finite") != 0) {
        sl_test_failed++;
        return;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    float a[3 * 4];
    uint16_t h[2 * 4], g[4];
    for (int i = 0; i < 12; i++)
        a[i] = 0.25f * (float)i - 1.0f;
    a[1 * 4 + 2] = NAN;
    for (int i = 0; i < 8; i++)
        h[i] = sl_f32_to_f16(0.5f * (float)i);
    h[3] = 0x7c00; /* +Inf */
    for (int i = 0; i < 4; i++)
        g[i] = sl_f32_to_bf16(1.0f + (float)i);
    char hdr[512];
    int n = snprintf(hdr, sizeof hdr,
                     "{\"a\": {\"dtype\": \"F32\", \"shape\": [3, 4], \"data_offsets\": [0, 48]}, "
                     "\"h\": {\"dtype\": \"F16\", \"shape\": [2, 4], \"data_offsets\": [48, 64]}, "
                     "\"g\": {\"dtype\": \"BF16\", \"shape\": [4], \"data_offsets\": [64, 72]}}");
    while (n % 8)
        hdr[n++] = ' ';
    FILE *f = fopen(path, "wb");
    put_u64(f, (uint64_t)n);
    fwrite(hdr, 1, (size_t)n, f);
    fwrite(a, 1, sizeof a, f);
    fwrite(h, 1, sizeof h, f);
    fwrite(g, 1, sizeof g, f);
    fclose(f);

    sl_error_t err = {{0}};
    sl_weights_t *w = sl_weights_open(dir, &err);
    CHECKF(w != NULL, "%s", err.msg);
    if (w) {
        float *b = sl_weights_block(w, "a", 0, 3, 0, 4, &err);
        CHECKF(b == NULL && strstr(err.msg, path) && strstr(err.msg, "'a'") &&
                   strstr(err.msg, "NaN") && strstr(err.msg, "[1, 2]"),
               "F32 NaN: %s", b ? "loaded" : err.msg);
        free(b);
        b = sl_weights_block(w, "a", 0, 3, 1, 2, &err); /* columns 1..2 still hold it */
        CHECKF(b == NULL && strstr(err.msg, "[1, 2]"), "F32 NaN, column slice: %s",
               b ? "loaded" : err.msg);
        free(b);
        b = sl_weights_block(w, "a", 2, 1, 0, 4, &err); /* row 2 only: finite */
        CHECKF(b != NULL && b[0] == 1.0f, "row 2 of 'a': %s", err.msg);
        free(b);
        b = sl_weights_block(w, "h", 0, 2, 0, 4, &err);
        CHECKF(b == NULL && strstr(err.msg, "'h'") && strstr(err.msg, "+Inf") &&
                   strstr(err.msg, "[0, 3]"),
               "F16 Inf: %s", b ? "loaded" : err.msg);
        free(b);
        b = sl_weights_block(w, "g", 0, 1, 0, 4, &err);
        CHECKF(b != NULL && b[3] == 4.0f, "finite BF16: %s", err.msg);
        free(b);
        sl_weights_close(w);
    }
    remove(path);
    remove(dir);
}

static void test_blocks(void)
{
    enum { N = 100003 };
    uint16_t *h = calloc(N, sizeof *h);
    float *x = calloc(N, sizeof *x);
    sl_error_t err;
    CHECK(sl_weights_check_finite("f", "t", h, SL_F16, 0, 1, 0, N, &err) == 0);
    CHECK(sl_weights_check_finite("f", "t", h, SL_BF16, 0, 1, 0, N, &err) == 0);
    CHECK(sl_weights_check_finite("f", "t", x, SL_F32, 0, 1, 0, N, &err) == 0);
    h[N - 1] = sl_f32_to_f16(1e6f); /* too large for f16: Inf */
    CHECKF(sl_weights_check_finite("f.safetensors", "layers.0.weight", h, SL_F16, 10, 1, 5, N,
                                   &err) == -1 &&
               strstr(err.msg, "f.safetensors") && strstr(err.msg, "layers.0.weight") &&
               strstr(err.msg, "+Inf") && strstr(err.msg, "[10, 100007]"),
           "f16 overflow: %s", err.msg);
    x[N - 1] = -INFINITY;
    x[N - 2] = NAN;
    CHECKF(sl_weights_check_finite("f", "t", x, SL_F32, 0, 1, 0, N, &err) == -1 &&
               strstr(err.msg, "NaN"),
           "f32 NaN near the end: %s", err.msg);
    free(h);
    free(x);
}

/* 4. Quantized blocks kept as stored: a NaN or Inf scale (or Q4_1's minimum, Q4_K's dmin; Q6_K's
 *    scale ends its block) is refused, naming the row and the block's columns; finite blocks
 *    pass. */
static void test_qscales(void)
{
    sl_error_t err = {{0}};
    const sl_dtype_t types[] = {SL_Q8_0, SL_Q4_0, SL_Q4_1, SL_Q4_K,
                                SL_Q6_K, SL_Q5_0, SL_Q5_1, SL_Q5_K};
    for (int k = 0; k < 8; k++) {
        sl_dtype_t dt = types[k];
        const int two =
            dt == SL_Q4_1 || dt == SL_Q4_K || dt == SL_Q5_1 || dt == SL_Q5_K; /* a minimum */
        const size_t bytes = sl_dtype_size(dt), at = dt == SL_Q6_K ? 208 : 0;
        const int64_t blk = sl_dtype_block(dt);
        unsigned char *buf = calloc(2 * 3, bytes); /* 2 rows x 3 blocks */
        for (int b = 0; b < 6; b++) {
            uint16_t one = sl_f32_to_f16(0.5f);
            memcpy(buf + (size_t)b * bytes + at, &one, 2);
            if (two)
                memcpy(buf + (size_t)b * bytes + 2, &one, 2);
        }
        CHECKF(sl_weights_check_qscales("m.gguf", "w", buf, dt, 4, 2, blk, 3 * blk, &err) == 0,
               "%s", err.msg);
        /* row 1, block 2: a NaN scale (or an Inf minimum) */
        uint16_t bad = two ? 0x7c00u : 0x7e00u;
        memcpy(buf + (size_t)5 * bytes + at + (two ? 2 : 0), &bad, 2);
        int rc = sl_weights_check_qscales("m.gguf", "w", buf, dt, 4, 2, blk, 3 * blk, &err);
        char cols[64];
        snprintf(cols, sizeof cols, "columns %lld..%lld", (long long)(3 * blk),
                 (long long)(4 * blk));
        CHECKF(rc != 0 && strstr(err.msg, "m.gguf") && strstr(err.msg, "'w'") &&
                   strstr(err.msg, two ? "Inf minimum" : "NaN scale") && strstr(err.msg, "row 5") &&
                   strstr(err.msg, cols),
               "%s: %s", sl_dtype_name(dt), rc ? err.msg : "accepted");
        free(buf);
    }
}

int main(void)
{
    test_gguf();
    test_safetensors();
    test_blocks();
    test_qscales();
    return sl_test_finish("test_weights_finite");
}
