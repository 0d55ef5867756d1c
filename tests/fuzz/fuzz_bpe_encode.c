/*
 * fuzz_bpe_encode.c — libFuzzer target for encoding arbitrary bytes with real BPE tokenizers:
 * the byte-level ones of tests/reference/bpe_tiny (gpt2, llama3, qwen2, smollm pre-tokenizers)
 * and the SentencePiece-style ones of tests/reference/spm_tiny (legacy, metaspace, always). The
 * first byte picks the tokenizer and whether special tokens are added, the rest is the row.
 * Encoded ids are decoded back (the `generate` path), and decoding the raw input bytes read as
 * ids must not fail either.
 */
#include "fuzz_common.h"
#include "models/tokenizers/bpe.h"

static const char *const files[] = {
    "tests/reference/bpe_tiny/gpt2/tokenizer.json",
    "tests/reference/bpe_tiny/llama3/tokenizer.json",
    "tests/reference/bpe_tiny/qwen2/tokenizer.json",
    "tests/reference/bpe_tiny/smollm/tokenizer.json",
    "tests/reference/spm_tiny/legacy/tokenizer.json",
    "tests/reference/spm_tiny/metaspace/tokenizer.json",
    "tests/reference/spm_tiny/always/tokenizer.json",
};
#define N_TOK ((int)(sizeof files / sizeof files[0]))
static sl_bpe_t *toks[N_TOK];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    for (int i = 0; i < N_TOK; i++) {
        char path[4096];
        sl_error_t err;
        toks[i] = sl_bpe_load_json(sl_fuzz_source(files[i], path, sizeof path), &err);
        if (!toks[i]) {
            fprintf(stderr, "fuzz: %s\n", err.msg);
            abort();
        }
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const sl_bpe_t *t = toks[(data[0] & 0x7f) % N_TOK];
    int special = data[0] >> 7;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    int cap = (int)len + 8;
    int32_t *ids = malloc((size_t)cap * sizeof(int32_t));
    int n = 0;
    sl_error_t err;
    int rc = sl_bpe_encode(t, text, len, special, ids, cap, &n, &err);
    if (rc == SL_BPE_ERROR && n > cap) {
        /* more ids than bytes happen (a prefix space per span between added tokens): grow,
         * as the runner does (runner/decoder_task.c) */
        cap = n;
        ids = realloc(ids, (size_t)cap * sizeof(int32_t));
        rc = sl_bpe_encode(t, text, len, special, ids, cap, &n, &err);
    }
    if (rc == SL_BPE_OK) {
        if (n < 0 || n > cap)
            abort();
        for (int k = 0; k < n; k++)
            if (ids[k] < 0 || ids[k] >= sl_bpe_vocab_size(t))
                abort();
        size_t need = sl_bpe_decode(t, ids, n, !special, NULL, 0);
        char *out = malloc(need + 1);
        if (sl_bpe_decode(t, ids, n, !special, out, need + 1) != need)
            abort();
        free(out);
    } else if (rc != SL_BPE_EMPTY && rc != SL_BPE_BAD_UTF8) {
        abort();
    }
    free(ids);
    /* the input as ids (ids out of the vocabulary are skipped) */
    int nid = (int)(len / 4);
    if (nid > 0) {
        int32_t *raw = malloc((size_t)nid * sizeof(int32_t));
        memcpy(raw, text, (size_t)nid * sizeof(int32_t));
        char out[256];
        sl_bpe_decode(t, raw, nid, special, out, sizeof out);
        free(raw);
    }
    return 0;
}
