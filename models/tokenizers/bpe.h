/*
 * bpe.h — BPE tokenizers producing the same token ids as Hugging Face `tokenizers` (and
 * transformers), and decoding ids back to UTF-8, in two flavours that share the merge machinery:
 *   - byte-level BPE (GPT-2 style, as LLaMA-3, Qwen2, SmolLM2 use);
 *   - SentencePiece-style BPE (LLaMA 2, Mistral): spaces become "▁", symbols are UTF-8
 *     characters, a character missing from the vocabulary becomes its <0xXX> byte tokens.
 *
 * Built from a tokenizer.json (model.type "BPE", byte_fallback either way, merges as "a b"
 * strings or as ["a", "b"] pairs; pre_tokenizer ByteLevel, or Sequence of Split(regex) + Digits
 * + ByteLevel, or Metaspace (prepend_scheme first / always / never, split or not), or null with
 * the normalizer Prepend("▁") + Replace(" ", "▁"); decoder ByteLevel, or a Sequence of
 * ByteFallback, Fuse, Replace("▁", " "), ByteLevel, Strip; added_tokens) or from GGUF metadata:
 * tokenizer.ggml.model "gpt2" (tokens / merges / token_type and the pre-tokenizer name
 * tokenizer.ggml.pre: "gpt2", "llama-bpe" (LLaMA-3), "qwen2", "smollm", ...) or "llama"
 * (tokens / scores / token_type, merges ranked by score, as transformers' GGUF loader builds
 * them; add_bos_token (default true), add_eos_token, add_space_prefix, unknown_token_id).
 * Anything else is refused at load time with an error naming the file and key.
 *
 * Encoding: added/special tokens are matched first in the raw text (longest match, in the
 * library's order); the other spans are split by the pre-tokenizer regexes (PCRE2 with
 * PCRE2_UTF | PCRE2_UCP, so \p{L} and friends are Unicode properties) or given their "▁"s, each
 * piece is mapped to its symbols and merged by rank. BOS (and EOS) are added when the file asks
 * for them (post_processor TemplateProcessing, or tokenizer.ggml.add_bos_token / add_eos_token)
 * and add_special says so. A loaded tokenizer is read-only and may be shared by threads.
 */
#ifndef SL_BPE_H
#define SL_BPE_H

#include <stddef.h>
#include <stdint.h>

#include "common/sl_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_bpe sl_bpe_t;

/* Statuses of sl_bpe_encode (the same numbers as wordpiece.h's SL_TOK_*). */
enum {
    SL_BPE_OK = 0,
    SL_BPE_ERROR = -1,    /* bad arguments, or ids did not fit in cap */
    SL_BPE_EMPTY = -2,    /* empty text (row error) */
    SL_BPE_BAD_UTF8 = -3, /* invalid UTF-8 (row error; the message gives the byte offset) */
};

/* GGUF token types (tokenizer.ggml.token_type). */
enum {
    SL_BPE_NORMAL = 1,
    SL_BPE_UNKNOWN = 2,
    SL_BPE_CONTROL = 3,
    SL_BPE_USER_DEFINED = 4,
    SL_BPE_UNUSED = 5,
    SL_BPE_BYTE = 6
};

/* From a tokenizer.json. NULL and a message naming the file and key on failure. */
sl_bpe_t *sl_bpe_load_json(const char *path, sl_error_t *err);

/* From vocabulary arrays (how GGUF stores a tokenizer). tokens[i] (lengths tok_len[i]) is the
 * byte-level string of id i; merges[j] (lengths merge_len[j]) are "a b" strings in rank order;
 * token_type[i] is a SL_BPE_* type or NULL (all normal): CONTROL and USER_DEFINED tokens are
 * matched as added tokens. pre: the pre-tokenizer name (see above); bos_id/eos_id: -1 if none;
 * add_bos: prepend BOS when encoding with add_special. `source` names the origin in messages. */
sl_bpe_t *sl_bpe_from_vocab(const char *const *tokens, const size_t *tok_len, int n_tokens,
                            const char *const *merges, const size_t *merge_len, int n_merges,
                            const int32_t *token_type, const char *pre, int32_t bos_id,
                            int32_t eos_id, int add_bos, const char *source, sl_error_t *err);
/* From an open GGUF file's tokenizer.ggml.* metadata (model "gpt2" or "llama"); errors name
 * the file and key. */
struct sl_gguf;
sl_bpe_t *sl_bpe_load_gguf(const struct sl_gguf *g, sl_error_t *err);
void sl_bpe_free(sl_bpe_t *t); /* NULL is fine */

/* Encodes text[0..len) into at most cap ids (BOS first when add_special and the tokenizer adds
 * one). *n_ids receives the count. SL_BPE_ERROR with err filled when cap is too small
 * (*n_ids then holds the count needed). */
int sl_bpe_encode(const sl_bpe_t *t, const char *text, size_t len, int add_special, int32_t *ids,
                  int cap, int *n_ids, sl_error_t *err);

/* Decodes ids to UTF-8 into buf (cap bytes, NUL-terminated); returns the length the full text
 * needs (excluding NUL) like snprintf. skip_special drops CONTROL tokens (BOS, EOS, ...).
 * Byte sequences that are not valid UTF-8 (a token split inside a character) become U+FFFD,
 * as Hugging Face's decoders do (ByteLevel: one per maximal invalid subsequence; ByteFallback:
 * one per byte of an invalid run of <0xXX> tokens); the decoder's Strip drops leading spaces. */
size_t sl_bpe_decode(const sl_bpe_t *t, const int32_t *ids, int n, int skip_special, char *buf,
                     size_t cap);

int sl_bpe_vocab_size(const sl_bpe_t *t);
int32_t sl_bpe_bos_id(const sl_bpe_t *t);                                     /* -1 if none */
int32_t sl_bpe_eos_id(const sl_bpe_t *t);                                     /* -1 if none */
int32_t sl_bpe_token_to_id(const sl_bpe_t *t, const char *token, size_t len); /* -1 if none */
/* The byte-level token string of id (not decoded), or NULL. */
const char *sl_bpe_id_to_token(const sl_bpe_t *t, int32_t id);

#ifdef __cplusplus
}
#endif

#endif
