/*
 * fuzz_wordpiece_json.c — libFuzzer target for loading a WordPiece tokenizer.json
 * (models/tokenizers/wordpiece.c, models/tokenizers/tokenizer_json.c): the input is the file. A
 * tokenizer that loads then encodes a few fixed sentences (accents, CJK, punctuation, added
 * tokens, a long word) at two lengths, one that truncates, and answers its lookups.
 */
#include "fuzz_common.h"
#include "models/tokenizers/wordpiece.h"

static const char *const texts[] = {
    "Hello, World! [CLS] caf\xc3\xa9 na\xc3\xafve \xe4\xb8\xad\xe6\x96\x87 don't",
    "   \t\n ",
    "unaffable supercalifragilisticexpialidocious [MASK] [SEP] [PAD] 3.14",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[256];
    sl_fuzz_write("tokenizer.json", data, size, path, sizeof path);
    sl_error_t err;
    sl_tokenizer_t *t = sl_tokenizer_load(path, &err);
    if (!t) {
        if (!strstr(err.msg, "tokenizer.json"))
            abort(); /* every refusal names the file */
        return 0;
    }
    int32_t ids[64];
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        for (int max_len = 4; max_len <= 64; max_len += 60) {
            int n = 0, trunc = 0;
            if (sl_tokenizer_encode(t, texts[i], strlen(texts[i]), max_len, ids, &n, &trunc,
                                    &err) == SL_TOK_OK) {
                if (n < 0 || n > max_len)
                    abort();
                for (int k = 0; k < n; k++)
                    (void)sl_tokenizer_id_to_token(t, ids[k]);
            }
        }
    }
    int v = sl_tokenizer_vocab_size(t);
    sl_tokenizer_check_vocab(t, v, &err);
    (void)sl_tokenizer_pad_id(t);
    (void)sl_tokenizer_unk_id(t);
    (void)sl_tokenizer_num_special(t);
    (void)sl_tokenizer_token_to_id(t, "[UNK]");
    sl_tokenizer_free(t);
    return 0;
}
