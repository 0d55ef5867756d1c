/*
 * wordpiece.h — the WordPiece tokenizer of BERT-family models, loaded from a Hugging Face
 * tokenizer.json, producing the same token ids as the `tokenizers` library.
 *
 * Supported tokenizer.json features (anything else is refused at load time with an error that
 * names the file and the key):
 *   model          WordPiece: vocab, unk_token, continuing_subword_prefix, max_input_chars_per_word
 *   normalizer     BertNormalizer (clean_text, handle_chinese_chars, strip_accents, lowercase) or
 * null pre_tokenizer  BertPreTokenizer (split on whitespace, every punctuation character alone) or
 * null post_processor TemplateProcessing (special tokens around $A) or BertProcessing or null
 *   added_tokens   matched in the raw text before normalisation (normalized=false, no
 *                  lstrip/rstrip/single_word), as the library does for [CLS], [SEP], [MASK], ...
 * Unicode data (categories, canonical decomposition, lower case) come from utf8proc.
 *
 * Encoding a row: sl_tokenizer_encode() writes at most max_len ids ([CLS] and [SEP] included),
 * truncating the text's tokens at the end (like truncation=True, max_length=max_len) and saying so
 * in *truncated. A row the tokenizer cannot encode returns a negative status that the caller
 * records as a row error: SL_TOK_EMPTY (zero bytes) or SL_TOK_BAD_UTF8 (invalid UTF-8; the message
 * gives the byte offset). Text that normalises to nothing (only spaces or control characters)
 * gives [CLS] [SEP], as in the reference. A loaded tokenizer is read-only: one may be shared by
 * threads.
 */
#ifndef SL_WORDPIECE_H
#define SL_WORDPIECE_H

#include <stddef.h>
#include <stdint.h>

#include "common/sl_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_tokenizer sl_tokenizer_t;

/* Statuses of sl_tokenizer_encode. */
enum {
    SL_TOK_OK = 0,
    SL_TOK_ERROR = -1,    /* bad arguments (e.g. max_len too small for the special tokens) */
    SL_TOK_EMPTY = -2,    /* empty text (row error) */
    SL_TOK_BAD_UTF8 = -3, /* invalid UTF-8 (row error) */
};

/* Loads path (a tokenizer.json). NULL and a message naming the file and key on failure. */
sl_tokenizer_t *sl_tokenizer_load(const char *path, sl_error_t *err);
void sl_tokenizer_free(sl_tokenizer_t *t); /* NULL is fine */

/* Encodes text[0..len) into ids (room for max_len ids): special tokens + word pieces.
 * *n_ids receives the count (<= max_len), *truncated 1 when tokens were dropped (may be NULL).
 * Returns SL_TOK_OK or a negative SL_TOK_* status with err filled. */
int sl_tokenizer_encode(const sl_tokenizer_t *t, const char *text, size_t len, int max_len,
                        int32_t *ids, int *n_ids, int *truncated, sl_error_t *err);

int sl_tokenizer_vocab_size(const sl_tokenizer_t *t); /* largest id + 1 */
/* Fails naming the file, the token and its id when an id is >= vocab (the model's embedding
 * rows). */
int sl_tokenizer_check_vocab(const sl_tokenizer_t *t, int64_t vocab, sl_error_t *err);
int32_t sl_tokenizer_pad_id(const sl_tokenizer_t *t); /* [PAD] (padding.pad_id), else 0 */
int32_t sl_tokenizer_unk_id(const sl_tokenizer_t *t);
/* Number of special tokens the post-processor adds to one sequence ([CLS] + [SEP] = 2). */
int sl_tokenizer_num_special(const sl_tokenizer_t *t);
/* The token string of id, or NULL when id is not in the vocabulary (for debugging output). */
const char *sl_tokenizer_id_to_token(const sl_tokenizer_t *t, int32_t id);
/* The id of a token string, or -1. */
int32_t sl_tokenizer_token_to_id(const sl_tokenizer_t *t, const char *token);

#ifdef __cplusplus
}
#endif

#endif
