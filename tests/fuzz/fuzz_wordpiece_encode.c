/*
 * fuzz_wordpiece_encode.c — libFuzzer target for encoding arbitrary bytes with a real WordPiece
 * tokenizer (tests/reference/tiny_bert_cls/tokenizer.json, BERT's uncased vocabulary), as a
 * text row of an input file is encoded: the first byte picks max_len (1 .. 256 tokens after the
 * special ones), the rest is the row. Invalid UTF-8 and empty rows must come back as row errors,
 * never a crash.
 */
#include "fuzz_common.h"
#include "models/tokenizers/wordpiece.h"

static sl_tokenizer_t *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char path[4096];
    sl_error_t err;
    tok = sl_tokenizer_load(
        sl_fuzz_source("tests/reference/tiny_bert_cls/tokenizer.json", path, sizeof path), &err);
    if (!tok) {
        fprintf(stderr, "fuzz: %s\n", err.msg);
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int max_len = sl_tokenizer_num_special(tok) + 1 + data[0];
    int32_t ids[300];
    int n = 0, trunc = 0;
    sl_error_t err;
    int rc =
        sl_tokenizer_encode(tok, (const char *)data + 1, size - 1, max_len, ids, &n, &trunc, &err);
    if (rc == SL_TOK_OK) {
        if (n < 2 || n > max_len)
            abort();
        for (int k = 0; k < n; k++)
            if (ids[k] < 0 || ids[k] >= sl_tokenizer_vocab_size(tok))
                abort();
    } else if (rc != SL_TOK_EMPTY && rc != SL_TOK_BAD_UTF8) {
        abort();
    }
    return 0;
}
