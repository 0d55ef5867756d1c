/*
 * fuzz_bpe_json.c — libFuzzer target for loading a BPE tokenizer.json (models/tokenizers/bpe.c,
 * byte-level and SentencePiece-style, models/tokenizers/tokenizer_json.c): the input is the file.
 * A tokenizer that loads then encodes a few fixed sentences (with and without special tokens, and
 * once into too small a buffer) and decodes the ids back.
 */
#include "fuzz_common.h"
#include "models/tokenizers/bpe.h"

static const char *const texts[] = {
    "Hello, World! caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 don't 12345 <|endoftext|>",
    "  \t\n  <s> </s> <|im_start|>user\nhi<|im_end|>",
    "\xf0\x9f\x98\x80 \xe2\x96\x81x  y",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[256];
    sl_fuzz_write("tokenizer.json", data, size, path, sizeof path);
    sl_error_t err;
    sl_bpe_t *t = sl_bpe_load_json(path, &err);
    if (!t) {
        if (!strstr(err.msg, "tokenizer.json"))
            abort(); /* every refusal names the file */
        return 0;
    }
    int32_t ids[256];
    char out[1024];
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        for (int special = 0; special < 2; special++) {
            int n = 0;
            if (sl_bpe_encode(t, texts[i], strlen(texts[i]), special, ids, 256, &n, &err) ==
                SL_BPE_OK) {
                if (n < 0 || n > 256)
                    abort();
                sl_bpe_decode(t, ids, n, special, out, sizeof out);
            }
        }
        int n = 0;
        sl_bpe_encode(t, texts[i], strlen(texts[i]), 1, ids, 1, &n, &err);
    }
    (void)sl_bpe_vocab_size(t);
    (void)sl_bpe_bos_id(t);
    (void)sl_bpe_eos_id(t);
    (void)sl_bpe_token_to_id(t, "a", 1);
    (void)sl_bpe_id_to_token(t, 0);
    sl_bpe_free(t);
    return 0;
}
