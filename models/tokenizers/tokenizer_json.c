/*
 * tokenizer_json.c — reading the tokenizer.json sections shared by the WordPiece and BPE
 * loaders (see tokenizer_json.h).
 */
#include "models/tokenizers/tokenizer_json.h"

#include <stdint.h>
#include <stdlib.h>

#include "common/sl_fs.h"

cJSON *sl_tokjson_load(const char *path, sl_error_t *err)
{
    char *buf;
    size_t len;
    if (sl_read_file(path, SIZE_MAX, &buf, &len, err) != 0)
        return NULL;
    cJSON *root = cJSON_ParseWithLength(buf, len);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        long off = (at && at >= buf && at <= buf + len) ? (long)(at - buf) : -1;
        sl_errorf(err, "%s: not valid JSON (near byte %ld)", path, off);
    }
    free(buf);
    return root;
}

int sl_tokjson_get_bool(const cJSON *o, const char *key, int dflt, int *out, const char *path,
                        const char *where, sl_error_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) {
        *out = dflt;
        return 0;
    }
    if (!cJSON_IsBool(v))
        return sl_errorf(err, "%s: %s.%s is not a boolean", path, where, key);
    *out = cJSON_IsTrue(v);
    return 0;
}

int sl_tokjson_vocab_max_id(const cJSON *vocab, const char *path, int *max_id, const char **max_key,
                            sl_error_t *err)
{
    *max_id = -1;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab)
    {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > 1e8 ||
            e->valuedouble != (double)(int32_t)e->valuedouble)
            return sl_errorf(err, "%s: model.vocab[\"%s\"] is not a valid id", path, e->string);
        if ((int)e->valuedouble > *max_id) {
            *max_id = (int)e->valuedouble;
            if (max_key)
                *max_key = e->string;
        }
    }
    return 0;
}

int sl_tokjson_check_id_span(int max_id, int n_named, const char *where, const char *path,
                             sl_error_t *err)
{
    if ((int64_t)max_id >= (int64_t)n_named + SL_TOKJSON_MAX_ID_GAP)
        return sl_errorf(err,
                         "%s: %s: id %d leaves more than %d ids unused (the file names %d "
                         "tokens)",
                         path, where, max_id, SL_TOKJSON_MAX_ID_GAP, n_named);
    return 0;
}

int sl_tokjson_added_flags(const cJSON *a, int index, const char *content, const char *path,
                           sl_error_t *err)
{
    static const char *flags[] = {"single_word", "lstrip", "rstrip", "normalized"};
    for (int f = 0; f < 4; f++) {
        int v = 0;
        if (sl_tokjson_get_bool(a, flags[f], 0, &v, path, "added_tokens[]", err))
            return -1;
        if (v)
            return sl_errorf(err, "%s: added_tokens[%d] (\"%s\"): %s=true is not supported", path,
                             index, content, flags[f]);
    }
    return 0;
}

int sl_tokjson_template(const cJSON *pp, const char *path, const char *where,
                        sl_tokjson_special_fn special, void *ctx, sl_error_t *err)
{
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(pp, "single");
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(pp, "special_tokens");
    if (!cJSON_IsArray(single))
        return sl_errorf(err, "%s: %s.single is not an array", path, where);
    int seen_seq = 0;
    const cJSON *piece;
    cJSON_ArrayForEach(piece, single)
    {
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(piece, "SpecialToken");
        if (cJSON_GetObjectItemCaseSensitive(piece, "Sequence")) {
            if (seen_seq)
                return sl_errorf(err, "%s: %s.single: two sequences", path, where);
            seen_seq = 1;
        } else if (sp) {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(sp, "id");
            if (!cJSON_IsString(id))
                return sl_errorf(err, "%s: %s.single: SpecialToken without id", path, where);
            if (special(ctx, specials, id->valuestring, seen_seq, err))
                return -1;
        } else {
            return sl_errorf(err, "%s: %s.single: unknown piece", path, where);
        }
    }
    if (!seen_seq)
        return sl_errorf(err, "%s: %s.single has no Sequence", path, where);
    return 0;
}
