/*
 * fuzz_safetensors.c — libFuzzer target for the safetensors reader (models/formats/safetensors.c):
 * the input is a whole .safetensors file (8-byte header length, JSON header, data). A file the
 * reader accepts must keep its promises: every tensor's byte range inside the data buffer,
 * matching its dtype and shape; each float tensor's last row is then read as the TP slicing does
 * (sl_st_host_block), so a range the validation let through is touched.
 */
#include "fuzz_common.h"
#include "models/formats/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[256];
    sl_fuzz_write("model.safetensors", data, size, path, sizeof path);
    sl_safetensors_t st;
    sl_error_t err;
    memset(&st, 0, sizeof st);
    if (sl_st_open(&st, path, &err) != 0) {
        if (!err.msg[0] || !strstr(err.msg, "model.safetensors"))
            abort(); /* every refusal names the file */
        sl_st_close(&st);
        return 0;
    }
    for (int i = 0; i < st.n_tensors; i++) {
        const sl_st_tensor_t *t = &st.tensors[i];
        if (sl_st_find(&st, t->name) == NULL || t->end < t->begin || t->end > st.buffer_len ||
            t->data != st.buffer + t->begin || t->ndim < 0 || t->ndim > SL_ST_MAX_DIMS)
            abort();
        int64_t n = sl_st_numel(t);
        if (n < 0)
            abort();
        if (!t->mapped)
            continue;
        if ((uint64_t)n * sl_dtype_size(t->dtype) != t->end - t->begin)
            abort();
        char shape[128];
        sl_st_fmt_shape(shape, sizeof shape, t->ndim, t->shape);
        if (!sl_st_is_float(t->dtype) || n == 0)
            continue;
        int64_t ld = t->ndim > 0 ? t->shape[t->ndim - 1] : 1;
        int64_t rows = n / ld;
        int64_t nc = ld < 64 ? ld : 64;
        float *blk = sl_st_host_block(t, ld, rows - 1, 1, ld - nc, nc, SL_F32);
        volatile float sink = blk[nc - 1];
        (void)sink;
        free(blk);
    }
    sl_st_close(&st);
    return 0;
}
