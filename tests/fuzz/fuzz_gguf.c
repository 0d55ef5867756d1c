/*
 * fuzz_gguf.c — libFuzzer target for the GGUF reader (models/formats/gguf.c) and what reads its
 * metadata: the input is a whole GGUF file. After sl_gguf_open accepts it, every key is read
 * back through the typed getters and every array's first and last elements, every tensor's
 * byte range is checked against the file and its last row dequantised, and the file then goes
 * through the two consumers of GGUF metadata the runner uses: the LLaMA configuration
 * (sl_llama_config_load) and the tokenizer (sl_bpe_load_gguf, then encoding a sentence).
 */
#include "fuzz_common.h"
#include "models/tokenizers/bpe.h"
#include "models/formats/gguf.h"
#include "models/llama.h"

static void read_kv(const sl_gguf_t *g, const sl_gguf_kv_t *kv)
{
    sl_error_t err;
    int64_t i64;
    double f64;
    int b;
    const char *s;
    size_t len;
    if (sl_gguf_find(g, kv->key) == NULL)
        abort();
    sl_gguf_get_int(g, kv->key, &i64, &err);
    sl_gguf_get_float(g, kv->key, &f64, &err);
    sl_gguf_get_bool(g, kv->key, &b, &err);
    if (sl_gguf_get_str(g, kv->key, &s, &len, &err) == 0 && len > 0) {
        volatile char c = s[len - 1];
        (void)c;
    }
    if (kv->type != SL_GGUF_ARRAY || kv->n == 0)
        return;
    uint64_t idx[2] = {0, kv->n - 1};
    for (int k = 0; k < 2; k++) {
        if (kv->elem == SL_GGUF_STRING) {
            if (sl_gguf_arr_str(kv, idx[k], &s, &len) == 0 && len > 0) {
                volatile char c = s[len - 1];
                (void)c;
            }
        } else if (kv->elem != SL_GGUF_ARRAY) {
            volatile int64_t x = sl_gguf_arr_int(kv, idx[k]);
            volatile double y = sl_gguf_arr_float(kv, idx[k]);
            (void)x;
            (void)y;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[256];
    sl_fuzz_write("model.gguf", data, size, path, sizeof path);
    sl_error_t err;
    sl_gguf_t *g = sl_gguf_open(path, &err);
    if (!g) {
        if (!strstr(err.msg, "model.gguf"))
            abort(); /* every refusal names the file */
        return 0;
    }
    for (int i = 0; i < sl_gguf_kv_count(g); i++)
        read_kv(g, sl_gguf_kv_at(g, i));
    for (int i = 0; i < sl_gguf_tensor_count(g); i++) {
        const sl_gguf_tensor_t *t = sl_gguf_tensor_at(g, i);
        if (sl_gguf_tensor_find(g, t->name) == NULL || t->offset > size || t->nbytes > size)
            abort();
        (void)sl_ggml_type_name(t->type);
        int64_t rows = sl_gguf_rows(t);
        if (!t->supported || rows <= 0 || t->ne[0] <= 0 || t->ne[0] > (1 << 20))
            continue;
        float *row = malloc((size_t)t->ne[0] * sizeof(float));
        sl_gguf_dequant_rows(t, rows - 1, 1, row, &err);
        free(row);
    }
    sl_gguf_close(g);

    sl_llama_config_t cfg;
    sl_llama_config_load(path, &cfg, &err);

    g = sl_gguf_open(path, &err);
    sl_bpe_t *tok = g ? sl_bpe_load_gguf(g, &err) : NULL;
    if (tok) {
        static const char text[] = "Hello, world! 123 \xc3\xa9t\xc3\xa9 <|im_start|>user\n";
        int32_t ids[256];
        int n = 0;
        if (sl_bpe_encode(tok, text, sizeof text - 1, 1, ids, 256, &n, &err) == SL_BPE_OK) {
            char out[1024];
            sl_bpe_decode(tok, ids, n, 0, out, sizeof out);
        }
        sl_bpe_free(tok);
    }
    sl_gguf_close(g);
    return 0;
}
