/*
 * tokenizer_json.h — the parts of a Hugging Face tokenizer.json that the WordPiece (wordpiece.c)
 * and byte-level BPE (bpe.c) loaders read alike: the file itself, optional booleans, the ids of
 * model.vocab, the flags of added_tokens they both refuse, and a TemplateProcessing's "single"
 * template. Every error names the file (`path`) and the key at fault; which keys and types each
 * loader supports beyond these stays in its own file.
 */
#ifndef SL_TOKENIZER_JSON_H
#define SL_TOKENIZER_JSON_H

#include <cjson/cJSON.h>

#include "common/sl_error.h"

/* Reads and parses path (no size limit: the vocabularies of large models run to tens of MB).
 * NULL with the file's name in err when it cannot be read or is not valid JSON. */
cJSON *sl_tokjson_load(const char *path, sl_error_t *err);

/* Optional boolean o[key]: absent or null -> dflt; otherwise it must be a boolean (the message
 * names it "<where>.<key>"). */
int sl_tokjson_get_bool(const cJSON *o, const char *key, int dflt, int *out, const char *path,
                        const char *where, sl_error_t *err);

/* Checks that every value of model.vocab is an id (a whole number in [0, 1e8]); *max_id is the
 * largest (-1 for an empty object), *max_key its token (NULL when given NULL). */
int sl_tokjson_vocab_max_id(const cJSON *vocab, const char *path, int *max_id, const char **max_key,
                            sl_error_t *err);

/* The loaders index tables by id, max_id + 1 entries long. Real files number their tokens
 * densely; a file that names n_named tokens may leave gaps, but not more than
 * SL_TOKJSON_MAX_ID_GAP unused ids, so a small malformed file cannot make a loader allocate
 * gigabytes. `where` names the key holding max_id (e.g. "added_tokens[3]"). */
#define SL_TOKJSON_MAX_ID_GAP (1 << 20)
int sl_tokjson_check_id_span(int max_id, int n_named, const char *where, const char *path,
                             sl_error_t *err);

/* Refuses added_tokens[index] (content `content`) when single_word, lstrip, rstrip or normalized
 * is true: neither loader implements them. */
int sl_tokjson_added_flags(const cJSON *a, int index, const char *content, const char *path,
                           sl_error_t *err);

/* Appends the ids of the special token `name` to the tokens before (after = 0) or after
 * (after = 1) the sequence; ctx is the loader's tokenizer. */
typedef int (*sl_tokjson_special_fn)(void *ctx, const cJSON *specials, const char *name, int after,
                                     sl_error_t *err);

/* The "single" template of the TemplateProcessing object pp (at key `where`): exactly one
 * Sequence, and SpecialToken pieces before and after it, each handed to `special` with pp's
 * special_tokens. */
int sl_tokjson_template(const cJSON *pp, const char *path, const char *where,
                        sl_tokjson_special_fn special, void *ctx, sl_error_t *err);

#endif
