/*
 * wordpiece.c — WordPiece tokenization from a Hugging Face tokenizer.json (see wordpiece.h).
 *
 * The pipeline per row mirrors the `tokenizers` library step by step, because the model only
 * gives the reference's embeddings when the ids are identical:
 *   1. decode and validate UTF-8 into code points;
 *   2. split off added tokens ([CLS], [MASK], ...) found verbatim in the raw text
 *      (leftmost-longest), the rest is processed segment by segment;
 *   3. BertNormalizer, in the library's order: clean_text (drop NUL, U+FFFD and control
 *      characters Cc/Cf/Co except \t \n \r; map whitespace to ' '), handle_chinese_chars (spaces
 *      around CJK ideographs), strip_accents (canonical decomposition, then drop Mn), lowercase;
 *   4. BertPreTokenizer: split on whitespace, every punctuation character is a word by itself;
 *   5. WordPiece: greedy longest-match-first with "##" continuations; a word longer than
 *      max_input_chars_per_word, or one with any piece missing, becomes [UNK];
 *   6. the post-processor's special tokens around the sequence, after truncating it.
 * ASCII takes a table-driven fast path; other code points ask utf8proc.
 *
 * The vocabulary sits in two open-addressing hash tables (FNV-1a): one keyed by the whole token,
 * one keyed by the rest of "##..." tokens, so that continuation lookups need no string copy.
 */
#include "models/tokenizers/wordpiece.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "common/sl_hash.h"
#include "models/tokenizers/tokenizer_json.h"

#define MAX_SPECIAL 8 /* special tokens before / after the sequence */

typedef struct {
    int32_t *slot; /* token id, -1 = empty */
    uint32_t *hash;
    uint32_t mask;
    int key_off; /* the key is token + key_off (0, or strlen("##") for continuations) */
} tok_table_t;

typedef struct {
    int32_t *cps; /* content as code points */
    int n;
    int32_t id;
} added_token_t;

struct sl_tokenizer {
    char *path;
    /* vocabulary */
    int vocab_size; /* largest id + 1 */
    char **tokens;  /* [vocab_size], NULL for holes */
    int *token_len; /* [vocab_size] bytes */
    tok_table_t full, cont;
    int max_full_len, max_cont_len; /* longest key in bytes, bounds the greedy search */
    /* WordPiece */
    int32_t unk_id;
    char *prefix;
    int prefix_len;
    int max_chars;
    /* BertNormalizer */
    int has_normalizer, clean_text, chinese, strip_accents, lowercase;
    int has_pretok;
    /* post-processor */
    int32_t pre[MAX_SPECIAL], post[MAX_SPECIAL];
    int n_pre, n_post;
    /* added tokens */
    added_token_t *added;
    int n_added;
    int32_t added_first[4]; /* distinct first code points of the added tokens */
    int n_first;            /* their count, or -1 when there are more than 4 */
    int32_t pad_id;
    unsigned char ascii[128]; /* ASCII classes, below */
};

enum { A_DROP = 1, A_SPACE = 2, A_PUNCT = 4 };

/* ---- Unicode compatibility ------------------------------------------------------------------
 * The reference decides punctuation, nonspacing marks (Mn) and "other" (Cc, Cf, Co) with the Rust
 * crate unicode_categories 0.1.1, whose tables are older than utf8proc's. These ranges correct
 * utf8proc's answer where the two disagree ("not": utf8proc says yes, the reference no; "also":
 * the reverse): marks and punctuation of characters added to Unicode since, so that the ids stay
 * identical to the reference. Printed by tests/reference/make_tokenizer_compat.py. Characters
 * assigned after utf8proc's own Unicode version are unknown to both and need no entry. */
/* utf8proc 15.0.0 vs unicode_categories 0.1.1 */
static const int32_t compat_not_mn[][2] = {
    {0x7FD, 0x7FD},     {0x898, 0x89F},     {0x8CA, 0x8E1},     {0x9FE, 0x9FE},
    {0xAFA, 0xAFF},     {0xB55, 0xB55},     {0xC04, 0xC04},     {0xC3C, 0xC3C},
    {0xD00, 0xD00},     {0xD3B, 0xD3C},     {0xD81, 0xD81},     {0xEBA, 0xEBA},
    {0xECE, 0xECE},     {0x180F, 0x180F},   {0x1885, 0x1886},   {0x1ABF, 0x1ACE},
    {0x1DF6, 0x1DFB},   {0xA82C, 0xA82C},   {0xA8C5, 0xA8C5},   {0xA8FF, 0xA8FF},
    {0xA9BD, 0xA9BD},   {0x10D24, 0x10D27}, {0x10EAB, 0x10EAC}, {0x10EFD, 0x10EFF},
    {0x10F46, 0x10F50}, {0x10F82, 0x10F85}, {0x11070, 0x11070}, {0x11073, 0x11074},
    {0x110C2, 0x110C2}, {0x111C9, 0x111C9}, {0x111CF, 0x111CF}, {0x1123E, 0x1123E},
    {0x11241, 0x11241}, {0x1133B, 0x1133B}, {0x11438, 0x1143F}, {0x11442, 0x11444},
    {0x11446, 0x11446}, {0x1145E, 0x1145E}, {0x1182F, 0x11837}, {0x11839, 0x1183A},
    {0x1193B, 0x1193C}, {0x1193E, 0x1193E}, {0x11943, 0x11943}, {0x119D4, 0x119D7},
    {0x119DA, 0x119DB}, {0x119E0, 0x119E0}, {0x11A01, 0x11A0A}, {0x11A33, 0x11A38},
    {0x11A3B, 0x11A3E}, {0x11A47, 0x11A47}, {0x11A51, 0x11A56}, {0x11A59, 0x11A5B},
    {0x11A8A, 0x11A96}, {0x11A98, 0x11A99}, {0x11C30, 0x11C36}, {0x11C38, 0x11C3D},
    {0x11C3F, 0x11C3F}, {0x11C92, 0x11CA7}, {0x11CAA, 0x11CB0}, {0x11CB2, 0x11CB3},
    {0x11CB5, 0x11CB6}, {0x11D31, 0x11D36}, {0x11D3A, 0x11D3A}, {0x11D3C, 0x11D3D},
    {0x11D3F, 0x11D45}, {0x11D47, 0x11D47}, {0x11D90, 0x11D91}, {0x11D95, 0x11D95},
    {0x11D97, 0x11D97}, {0x11EF3, 0x11EF4}, {0x11F00, 0x11F01}, {0x11F36, 0x11F3A},
    {0x11F40, 0x11F40}, {0x11F42, 0x11F42}, {0x13440, 0x13440}, {0x13447, 0x13455},
    {0x16F4F, 0x16F4F}, {0x16FE4, 0x16FE4}, {0x1CF00, 0x1CF2D}, {0x1CF30, 0x1CF46},
    {0x1E000, 0x1E006}, {0x1E008, 0x1E018}, {0x1E01B, 0x1E021}, {0x1E023, 0x1E024},
    {0x1E026, 0x1E02A}, {0x1E08F, 0x1E08F}, {0x1E130, 0x1E136}, {0x1E2AE, 0x1E2AE},
    {0x1E2EC, 0x1E2EF}, {0x1E4EC, 0x1E4EF}, {0x1E944, 0x1E94A},
};
static const int32_t compat_also_mn[][2] = {
    {0x1734, 0x1734},
};
static const int32_t compat_not_punct[][2] = {
    {0x61D, 0x61D},     {0x9FD, 0x9FD},     {0xA76, 0xA76},     {0xC77, 0xC77},
    {0xC84, 0xC84},     {0x1B7D, 0x1B7E},   {0x2E43, 0x2E4F},   {0x2E52, 0x2E5D},
    {0x10EAD, 0x10EAD}, {0x10F55, 0x10F59}, {0x10F86, 0x10F89}, {0x1144B, 0x1144F},
    {0x1145A, 0x1145B}, {0x1145D, 0x1145D}, {0x11660, 0x1166C}, {0x116B9, 0x116B9},
    {0x1183B, 0x1183B}, {0x11944, 0x11946}, {0x119E2, 0x119E2}, {0x11A3F, 0x11A46},
    {0x11A9A, 0x11A9C}, {0x11A9E, 0x11AA2}, {0x11B00, 0x11B09}, {0x11C41, 0x11C45},
    {0x11C70, 0x11C71}, {0x11EF7, 0x11EF8}, {0x11F43, 0x11F4F}, {0x11FFF, 0x11FFF},
    {0x12FF1, 0x12FF2}, {0x16E97, 0x16E9A}, {0x16FE2, 0x16FE2}, {0x1E95E, 0x1E95F},
};
static const int32_t compat_also_punct[][2] = {
    {0x166D, 0x166D},
    {0x111C9, 0x111C9},
};
static const int32_t compat_not_other[][2] = {
    {0x890, 0x891},
    {0x8E2, 0x8E2},
    {0x110CD, 0x110CD},
    {0x13430, 0x1343F},
};
static const int32_t compat_also_other[][2] = {{-1, -1}};

/* A JSON number that is a whole number in [lo, hi] (so converting it to int is defined). */
static int whole_in(double v, double lo, double hi)
{
    return v >= lo && v <= hi && v == (double)(long long)v;
}

static int in_ranges(const int32_t (*r)[2], size_t n, int32_t c)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < r[mid][0])
            hi = mid;
        else if (c > r[mid][1])
            lo = mid + 1;
        else
            return 1;
    }
    return 0;
}
#define IN_RANGES(tab, c) in_ranges(tab, sizeof tab / sizeof tab[0], c)

/* ---- Unicode classes (the definitions of the tokenizers library) ---------------------------- */

static int cat_of(int32_t c) { return utf8proc_category(c); }

/* Rust's char::is_whitespace (the White_Space property) plus \t \n \r: Zs, Zl, Zp, 9-13, 0x85. */
static int is_ws(int32_t c)
{
    if (c == ' ' || (c >= 9 && c <= 13) || c == 0x85)
        return 1;
    int k = cat_of(c);
    return k == UTF8PROC_CATEGORY_ZS || k == UTF8PROC_CATEGORY_ZL || k == UTF8PROC_CATEGORY_ZP;
}

/* "Other" = Cc, Cf, Co, except \t \n \r (Cn, unassigned, is kept by the reference). */
static int is_control(int32_t c)
{
    if (c == '\t' || c == '\n' || c == '\r')
        return 0;
    int k = cat_of(c);
    if (k == UTF8PROC_CATEGORY_CC || k == UTF8PROC_CATEGORY_CF || k == UTF8PROC_CATEGORY_CO)
        return !IN_RANGES(compat_not_other, c);
    return IN_RANGES(compat_also_other, c);
}

static int is_mn(int32_t c)
{
    if (utf8proc_category(c) == UTF8PROC_CATEGORY_MN)
        return !IN_RANGES(compat_not_mn, c);
    return IN_RANGES(compat_also_mn, c);
}

/* ASCII 33-47, 58-64, 91-96, 123-126 (so $ + < = > ^ ` | ~ count) or any P* category. */
static int is_punct(int32_t c)
{
    if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
        (c >= 123 && c <= 126))
        return 1;
    if (c < 128)
        return 0;
    int k = cat_of(c);
    if (k >= UTF8PROC_CATEGORY_PC && k <= UTF8PROC_CATEGORY_PO)
        return !IN_RANGES(compat_not_punct, c);
    return IN_RANGES(compat_also_punct, c);
}

/* The CJK blocks of handle_chinese_chars, as the tokenizers library spells them (note 0x2B920:
 * the library's range, not Python BERT's 0x2B820). */
static int is_cjk(int32_t c)
{
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
           (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
           (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/* ---- growable code-point buffer -------------------------------------------------------------- */

typedef struct {
    int32_t *v;
    int n, cap;
} cpbuf_t;

static void cp_reserve(cpbuf_t *b, int need)
{
    if (need <= b->cap)
        return;
    int cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    b->v = sl_xrealloc(b->v, (size_t)cap * sizeof(int32_t));
    b->cap = cap;
}

static inline void cp_push(cpbuf_t *b, int32_t c)
{
    if (b->n == b->cap)
        cp_reserve(b, b->n + 1);
    b->v[b->n++] = c;
}

/* ---- hash tables ----------------------------------------------------------------------------- */

static void table_init(tok_table_t *t, int n, int key_off)
{
    uint32_t cap = 16;
    while (cap < (uint32_t)n * 2u)
        cap *= 2;
    t->slot = sl_xmalloc(cap * sizeof(int32_t));
    t->hash = sl_xcalloc(cap, sizeof(uint32_t));
    for (uint32_t i = 0; i < cap; i++)
        t->slot[i] = -1;
    t->mask = cap - 1;
    t->key_off = key_off;
}

static void table_insert(tok_table_t *t, const sl_tokenizer_t *tk, int32_t id)
{
    const char *k = tk->tokens[id] + t->key_off;
    size_t n = (size_t)tk->token_len[id] - (size_t)t->key_off;
    uint32_t h = sl_hash32(k, n);
    uint32_t i = h & t->mask;
    while (t->slot[i] >= 0)
        i = (i + 1) & t->mask;
    t->slot[i] = id;
    t->hash[i] = h;
}

static int32_t table_find(const tok_table_t *t, const sl_tokenizer_t *tk, const char *k, size_t n)
{
    uint32_t h = sl_hash32(k, n);
    for (uint32_t i = h & t->mask;; i = (i + 1) & t->mask) {
        int32_t id = t->slot[i];
        if (id < 0)
            return -1;
        if (t->hash[i] == h && (size_t)tk->token_len[id] - (size_t)t->key_off == n &&
            memcmp(tk->tokens[id] + t->key_off, k, n) == 0)
            return id;
    }
}

static void table_free(tok_table_t *t)
{
    free(t->slot);
    free(t->hash);
}

/* ---- loading --------------------------------------------------------------------------------- */

static int utf8_to_cps(const char *s, int32_t **out, int *n)
{
    size_t len = strlen(s);
    int32_t *v = sl_xmalloc((len + 1) * sizeof(int32_t));
    int k = 0;
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)s;
    for (size_t i = 0; i < len;) {
        utf8proc_int32_t c;
        utf8proc_ssize_t r = utf8proc_iterate(p + i, (utf8proc_ssize_t)(len - i), &c);
        if (r <= 0) {
            free(v);
            return -1;
        }
        v[k++] = c;
        i += (size_t)r;
    }
    *out = v;
    *n = k;
    return 0;
}

/* sl_tokjson_special_fn: appends special token `name` before (after = 0) or after the sequence. */
static int lookup_special(void *ctx, const cJSON *specials, const char *name, int after,
                          sl_error_t *err)
{
    sl_tokenizer_t *t = ctx;
    const char *path = t->path;
    int32_t *ids = after ? t->post : t->pre;
    int *n = after ? &t->n_post : &t->n_pre;
    /* TemplateProcessing: special_tokens[name].ids; fall back on the vocabulary. */
    const cJSON *st = specials ? cJSON_GetObjectItemCaseSensitive(specials, name) : NULL;
    const cJSON *arr = st ? cJSON_GetObjectItemCaseSensitive(st, "ids") : NULL;
    if (cJSON_IsArray(arr)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, arr)
        {
            if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= t->vocab_size)
                return sl_errorf(err, "%s: post_processor.special_tokens.%s.ids: bad id", path,
                                 name);
            if (*n >= MAX_SPECIAL)
                return sl_errorf(err, "%s: post_processor: more than %d special tokens", path,
                                 MAX_SPECIAL);
            ids[(*n)++] = (int32_t)e->valuedouble;
        }
        return 0;
    }
    int32_t id = sl_tokenizer_token_to_id(t, name);
    if (id < 0)
        return sl_errorf(err, "%s: post_processor: special token '%s' is not in the vocabulary",
                         path, name);
    if (*n >= MAX_SPECIAL)
        return sl_errorf(err, "%s: post_processor: more than %d special tokens", path, MAX_SPECIAL);
    ids[(*n)++] = id;
    return 0;
}

static int load_post_processor(sl_tokenizer_t *t, const cJSON *pp, const char *path,
                               sl_error_t *err)
{
    if (!pp || cJSON_IsNull(pp))
        return 0;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(pp, "type");
    if (!cJSON_IsString(type))
        return sl_errorf(err, "%s: post_processor.type is missing", path);
    if (strcmp(type->valuestring, "BertProcessing") == 0) {
        const char *keys[2] = {"cls", "sep"};
        for (int k = 0; k < 2; k++) {
            const cJSON *a = cJSON_GetObjectItemCaseSensitive(pp, keys[k]);
            const cJSON *id = cJSON_IsArray(a) ? cJSON_GetArrayItem(a, 1) : NULL;
            if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= t->vocab_size)
                return sl_errorf(err, "%s: post_processor.%s is not [token, id]", path, keys[k]);
            if (k == 0)
                t->pre[t->n_pre++] = (int32_t)id->valuedouble;
            else
                t->post[t->n_post++] = (int32_t)id->valuedouble;
        }
        return 0;
    }
    if (strcmp(type->valuestring, "TemplateProcessing") != 0)
        return sl_errorf(err,
                         "%s: post_processor.type \"%s\" is not supported (TemplateProcessing, "
                         "BertProcessing or null)",
                         path, type->valuestring);
    return sl_tokjson_template(pp, path, "post_processor", lookup_special, t, err);
}

static int load_added(sl_tokenizer_t *t, const cJSON *added, const char *path, sl_error_t *err)
{
    if (!added || cJSON_IsNull(added))
        return 0;
    if (!cJSON_IsArray(added))
        return sl_errorf(err, "%s: added_tokens is not an array", path);
    int n = cJSON_GetArraySize(added);
    t->added = sl_xcalloc((size_t)(n > 0 ? n : 1), sizeof(added_token_t));
    const cJSON *a;
    cJSON_ArrayForEach(a, added)
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(a, "content");
        if (!cJSON_IsNumber(id) || !cJSON_IsString(content) || id->valuedouble < 0 ||
            id->valuedouble >= t->vocab_size)
            return sl_errorf(err,
                             "%s: added_tokens[%d]: needs \"id\" (in the vocabulary) and "
                             "\"content\"",
                             path, t->n_added);
        if (sl_tokjson_added_flags(a, t->n_added, content->valuestring, path, err))
            return -1;
        added_token_t *x = &t->added[t->n_added];
        if (utf8_to_cps(content->valuestring, &x->cps, &x->n) || x->n == 0) {
            /* Empty content converts fine to zero code points: free them, since only the
             * first n_added entries are freed later. */
            free(x->cps);
            x->cps = NULL;
            return sl_errorf(err, "%s: added_tokens[%d]: bad content", path, t->n_added);
        }
        x->id = (int32_t)id->valuedouble;
        t->n_added++;
        int known = 0;
        for (int k = 0; k < t->n_first; k++)
            known |= t->added_first[k] == x->cps[0];
        if (!known && t->n_first >= 0)
            t->n_first = t->n_first < 4 ? t->n_first + 1 : -1;
        if (!known && t->n_first > 0)
            t->added_first[t->n_first - 1] = x->cps[0];
    }
    return 0;
}

static int load_json(sl_tokenizer_t *t, const cJSON *root, const char *path, sl_error_t *err)
{
    /* model */
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model))
        return sl_errorf(err, "%s: no \"model\" object", path);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "WordPiece") != 0)
        return sl_errorf(err, "%s: model.type is \"%s\"; only WordPiece is supported", path,
                         cJSON_IsString(type) ? type->valuestring : "(missing)");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    if (!cJSON_IsObject(vocab) || !vocab->child)
        return sl_errorf(err, "%s: model.vocab is not a non-empty object", path);

    int max_id;
    const char *max_key = "";
    if (sl_tokjson_vocab_max_id(vocab, path, &max_id, &max_key, err))
        return -1;
    int n = cJSON_GetArraySize(vocab);
    const cJSON *e;
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    char max_where[80];
    snprintf(max_where, sizeof max_where, "model.vocab[\"%.40s\"]", max_key);
    int n_added = 0;
    cJSON_ArrayForEach(e, added)
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        if (cJSON_IsNumber(id) && id->valuedouble > max_id && id->valuedouble < 1e8) {
            max_id = (int)id->valuedouble;
            snprintf(max_where, sizeof max_where, "added_tokens[%d]", n_added);
        }
        n_added++;
    }
    if (sl_tokjson_check_id_span(max_id, n + n_added, max_where, path, err))
        return -1;
    t->vocab_size = max_id + 1;
    t->tokens = sl_xcalloc((size_t)t->vocab_size, sizeof(char *));
    t->token_len = sl_xcalloc((size_t)t->vocab_size, sizeof(int));
    cJSON_ArrayForEach(e, vocab)
    {
        int id = (int)e->valuedouble;
        if (t->tokens[id])
            return sl_errorf(err, "%s: model.vocab: id %d is given twice (\"%s\", \"%s\")", path,
                             id, t->tokens[id], e->string);
        t->tokens[id] = sl_xstrdup(e->string);
        t->token_len[id] = (int)strlen(e->string);
    }
    /* Added tokens outside the vocabulary still need an id -> string entry. */
    cJSON_ArrayForEach(e, added)
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (cJSON_IsNumber(id) && cJSON_IsString(content) && id->valuedouble >= 0 &&
            id->valuedouble < t->vocab_size && !t->tokens[(int)id->valuedouble]) {
            t->tokens[(int)id->valuedouble] = sl_xstrdup(content->valuestring);
            t->token_len[(int)id->valuedouble] = (int)strlen(content->valuestring);
        }
    }

    const cJSON *pfx = cJSON_GetObjectItemCaseSensitive(model, "continuing_subword_prefix");
    t->prefix = sl_xstrdup(cJSON_IsString(pfx) ? pfx->valuestring : "##");
    t->prefix_len = (int)strlen(t->prefix);
    const cJSON *mc = cJSON_GetObjectItemCaseSensitive(model, "max_input_chars_per_word");
    t->max_chars = 100;
    if (cJSON_IsNumber(mc) && whole_in(mc->valuedouble, 1, INT_MAX))
        t->max_chars = (int)mc->valuedouble;
    else if (cJSON_IsNumber(mc))
        return sl_errorf(err,
                         "%s: model.max_input_chars_per_word must be a whole number from 1 to %d",
                         path, INT_MAX);
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    if (!cJSON_IsString(unk))
        return sl_errorf(err, "%s: model.unk_token is missing", path);

    /* hash tables (only vocabulary entries, as WordPiece looks up) */
    int n_cont = 0;
    table_init(&t->full, n, 0);
    cJSON_ArrayForEach(e, vocab)
    {
        int id = (int)e->valuedouble;
        table_insert(&t->full, t, id);
        if (t->token_len[id] > t->max_full_len)
            t->max_full_len = t->token_len[id];
        if (t->prefix_len > 0 && strncmp(t->tokens[id], t->prefix, (size_t)t->prefix_len) == 0)
            n_cont++;
    }
    table_init(&t->cont, n_cont, t->prefix_len);
    cJSON_ArrayForEach(e, vocab)
    {
        int id = (int)e->valuedouble;
        if (t->prefix_len > 0 && strncmp(t->tokens[id], t->prefix, (size_t)t->prefix_len) == 0) {
            table_insert(&t->cont, t, id);
            if (t->token_len[id] - t->prefix_len > t->max_cont_len)
                t->max_cont_len = t->token_len[id] - t->prefix_len;
        }
    }
    t->unk_id = table_find(&t->full, t, unk->valuestring, strlen(unk->valuestring));
    if (t->unk_id < 0)
        return sl_errorf(err, "%s: model.unk_token \"%s\" is not in model.vocab", path,
                         unk->valuestring);

    /* normalizer */
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    if (norm && !cJSON_IsNull(norm)) {
        const cJSON *nt = cJSON_GetObjectItemCaseSensitive(norm, "type");
        if (!cJSON_IsString(nt) || strcmp(nt->valuestring, "BertNormalizer") != 0)
            return sl_errorf(err,
                             "%s: normalizer.type \"%s\" is not supported (BertNormalizer or null)",
                             path, cJSON_IsString(nt) ? nt->valuestring : "(missing)");
        t->has_normalizer = 1;
        int sa = -1;
        if (sl_tokjson_get_bool(norm, "clean_text", 1, &t->clean_text, path, "normalizer", err) ||
            sl_tokjson_get_bool(norm, "handle_chinese_chars", 1, &t->chinese, path, "normalizer",
                                err) ||
            sl_tokjson_get_bool(norm, "lowercase", 1, &t->lowercase, path, "normalizer", err) ||
            sl_tokjson_get_bool(norm, "strip_accents", -1, &sa, path, "normalizer", err))
            return -1;
        t->strip_accents = sa < 0 ? t->lowercase : sa; /* null follows lowercase */
    }

    /* pre-tokenizer */
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    if (pre && !cJSON_IsNull(pre)) {
        const cJSON *pt = cJSON_GetObjectItemCaseSensitive(pre, "type");
        if (!cJSON_IsString(pt) || strcmp(pt->valuestring, "BertPreTokenizer") != 0)
            return sl_errorf(
                err, "%s: pre_tokenizer.type \"%s\" is not supported (BertPreTokenizer or null)",
                path, cJSON_IsString(pt) ? pt->valuestring : "(missing)");
        t->has_pretok = 1;
    }

    if (load_post_processor(t, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), path, err))
        return -1;
    if (load_added(t, added, path, err))
        return -1;

    const cJSON *pad = cJSON_GetObjectItemCaseSensitive(root, "padding");
    const cJSON *pad_id = pad ? cJSON_GetObjectItemCaseSensitive(pad, "pad_id") : NULL;
    if (cJSON_IsNumber(pad_id)) {
        if (!whole_in(pad_id->valuedouble, 0, t->vocab_size - 1))
            return sl_errorf(err, "%s: padding.pad_id %g is not an id of the vocabulary (0 .. %d)",
                             path, pad_id->valuedouble, t->vocab_size - 1);
        t->pad_id = (int32_t)pad_id->valuedouble;
    } else {
        int32_t p = sl_tokenizer_token_to_id(t, "[PAD]");
        t->pad_id = p >= 0 ? p : 0;
    }

    /* ASCII classes, from the same definitions as the slow path */
    for (int c = 0; c < 128; c++) {
        /* independent flags: with clean_text off, \v is kept but still splits words */
        t->ascii[c] = (unsigned char)(((c == 0 || is_control(c)) ? A_DROP : 0) |
                                      (is_ws(c) ? A_SPACE : 0) | (is_punct(c) ? A_PUNCT : 0));
    }
    return 0;
}

sl_tokenizer_t *sl_tokenizer_load(const char *path, sl_error_t *err)
{
    cJSON *root = sl_tokjson_load(path, err);
    if (!root)
        return NULL;
    sl_tokenizer_t *t = sl_xcalloc(1, sizeof(*t));
    t->path = sl_xstrdup(path);
    int rc = load_json(t, root, path, err);
    cJSON_Delete(root);
    if (rc) {
        sl_tokenizer_free(t);
        return NULL;
    }
    return t;
}

void sl_tokenizer_free(sl_tokenizer_t *t)
{
    if (!t)
        return;
    if (t->tokens)
        for (int i = 0; i < t->vocab_size; i++)
            free(t->tokens[i]);
    free(t->tokens);
    free(t->token_len);
    table_free(&t->full);
    table_free(&t->cont);
    for (int i = 0; i < t->n_added; i++)
        free(t->added[i].cps);
    free(t->added);
    free(t->prefix);
    free(t->path);
    free(t);
}

int sl_tokenizer_vocab_size(const sl_tokenizer_t *t) { return t->vocab_size; }
int32_t sl_tokenizer_pad_id(const sl_tokenizer_t *t) { return t->pad_id; }
int32_t sl_tokenizer_unk_id(const sl_tokenizer_t *t) { return t->unk_id; }
int sl_tokenizer_num_special(const sl_tokenizer_t *t) { return t->n_pre + t->n_post; }

int sl_tokenizer_check_vocab(const sl_tokenizer_t *t, int64_t vocab, sl_error_t *err)
{
    /* Every id comes from the vocabulary or added_tokens; vocab_size is the largest + 1. An id
     * past the embedding would abort the whole job at the first row that uses it. */
    if (t->vocab_size <= vocab)
        return 0;
    int32_t id = t->vocab_size - 1;
    const char *tok = sl_tokenizer_id_to_token(t, id);
    return sl_errorf(err, "%s: token '%.64s' has id %d, beyond the model's vocabulary of %lld ids",
                     t->path, tok ? tok : "?", id, (long long)vocab);
}

const char *sl_tokenizer_id_to_token(const sl_tokenizer_t *t, int32_t id)
{
    return (id >= 0 && id < t->vocab_size) ? t->tokens[id] : NULL;
}

int32_t sl_tokenizer_token_to_id(const sl_tokenizer_t *t, const char *token)
{
    int32_t id = table_find(&t->full, t, token, strlen(token));
    if (id >= 0)
        return id;
    for (int i = 0; i < t->n_added; i++) /* added tokens outside the vocabulary */
        if (t->tokens[t->added[i].id] && strcmp(t->tokens[t->added[i].id], token) == 0)
            return t->added[i].id;
    return -1;
}

/* ---- encoding -------------------------------------------------------------------------------- */

typedef struct {
    cpbuf_t cps;  /* decoded input */
    cpbuf_t norm; /* one normalised segment */
    char *bytes;  /* one word in UTF-8 */
    int *off;     /* byte offset of each char of the word, plus the end */
    int word_cap;
    /* output */
    int32_t *ids; /* after the prefix special tokens */
    int count, budget;
} enc_t;

static inline int emit(enc_t *e, int32_t id)
{
    if (e->count < e->budget)
        e->ids[e->count] = id;
    e->count++;
    return e->count > e->budget; /* 1 = full: stop */
}

/* Canonical decomposition of c, accents (Mn) dropped, into b. */
static void push_stripped(cpbuf_t *b, int32_t c)
{
    utf8proc_int32_t tmp[32];
    int last_boundclass = 0;
    utf8proc_ssize_t n = utf8proc_decompose_char(c, tmp, 32, UTF8PROC_DECOMPOSE, &last_boundclass);
    if (n < 0 || n > 32) {
        cp_push(b, c);
        return;
    }
    for (utf8proc_ssize_t i = 0; i < n; i++)
        if (!is_mn(tmp[i]))
            cp_push(b, tmp[i]);
}

static inline void push_lower(cpbuf_t *b, int from)
{
    /* lowercase b->v[from..] in place (single code point mappings; İ is the one character whose
     * full lowercase is two code points: i + U+0307) */
    for (int i = from; i < b->n; i++) {
        int32_t c = b->v[i];
        if (c < 128) {
            if (c >= 'A' && c <= 'Z')
                b->v[i] = c + 32;
        } else if (c == 0x130) {
            b->v[i] = 'i';
            cp_reserve(b, b->n + 1);
            memmove(b->v + i + 2, b->v + i + 1, (size_t)(b->n - i - 1) * sizeof(int32_t));
            b->v[i + 1] = 0x307;
            b->n++;
            i++;
        } else {
            b->v[i] = utf8proc_tolower(c);
        }
    }
}

/* BertNormalizer on cps[0, n) into e->norm. */
static void normalize(const sl_tokenizer_t *t, enc_t *e, const int32_t *cps, int n)
{
    cpbuf_t *b = &e->norm;
    b->n = 0;
    cp_reserve(b, 3 * n + 8);
    if (!t->has_normalizer) {
        memcpy(b->v, cps, (size_t)n * sizeof(int32_t));
        b->n = n;
        return;
    }
    for (int i = 0; i < n; i++) {
        int32_t c = cps[i];
        if (c < 128) {
            unsigned char k = t->ascii[c];
            if (t->clean_text && (k & A_DROP))
                continue;
            if (t->clean_text && (k & A_SPACE))
                c = ' ';
            else if (t->lowercase && c >= 'A' && c <= 'Z')
                c += 32;
            cp_push(b, c);
            continue;
        }
        if (t->clean_text) {
            if (c == 0xFFFD || is_control(c))
                continue;
            if (is_ws(c)) {
                cp_push(b, ' ');
                continue;
            }
        }
        int cjk = t->chinese && is_cjk(c);
        if (cjk)
            cp_push(b, ' ');
        int from = b->n;
        if (t->strip_accents)
            push_stripped(b, c);
        else
            cp_push(b, c);
        if (t->lowercase)
            push_lower(b, from);
        if (cjk)
            cp_push(b, ' ');
    }
}

/* WordPiece on one word w[0..n) (code points). Returns 1 when the output is full. */
static int wordpiece(const sl_tokenizer_t *t, enc_t *e, const int32_t *w, int n)
{
    if (n > t->max_chars)
        return emit(e, t->unk_id);
    if (n + 1 > e->word_cap) {
        e->word_cap = 2 * (n + 1);
        e->bytes = sl_xrealloc(e->bytes, (size_t)e->word_cap * 4);
        e->off = sl_xrealloc(e->off, (size_t)(e->word_cap + 1) * sizeof(int));
    }
    int nb = 0;
    for (int i = 0; i < n; i++) {
        e->off[i] = nb;
        if (w[i] < 128)
            e->bytes[nb++] = (char)w[i];
        else
            nb += (int)utf8proc_encode_char(w[i], (utf8proc_uint8_t *)e->bytes + nb);
    }
    e->off[n] = nb;

    /* Pieces are found before any is emitted: a word with a missing piece is one [UNK]. */
    int32_t local[64];
    int32_t *pieces = n <= 64 ? local : sl_xmalloc((size_t)n * sizeof(int32_t));
    int np = 0, bad = 0;
    for (int start = 0; start < n;) {
        const tok_table_t *tab = start == 0 ? &t->full : &t->cont;
        int maxb = start == 0 ? t->max_full_len : t->max_cont_len;
        int end = n;
        while (end > start && e->off[end] - e->off[start] > maxb)
            end--;
        int32_t id = -1;
        for (; end > start; end--) {
            id =
                table_find(tab, t, e->bytes + e->off[start], (size_t)(e->off[end] - e->off[start]));
            if (id >= 0)
                break;
        }
        if (id < 0) {
            bad = 1;
            break;
        }
        pieces[np++] = id;
        start = end;
    }
    int full = 0;
    if (bad)
        full = emit(e, t->unk_id);
    else
        for (int i = 0; i < np && !full; i++)
            full = emit(e, pieces[i]);
    if (pieces != local)
        free(pieces);
    return full;
}

/* Normalise, pre-tokenise and WordPiece one segment (no added tokens inside). 1 = full. */
static int encode_segment(const sl_tokenizer_t *t, enc_t *e, const int32_t *cps, int n)
{
    normalize(t, e, cps, n);
    const int32_t *v = e->norm.v;
    int m = e->norm.n;
    if (!t->has_pretok)
        return m > 0 ? wordpiece(t, e, v, m) : 0;
    int ws = -1; /* start of the current word */
    for (int i = 0; i < m; i++) {
        int32_t c = v[i];
        int space, punct;
        if (c < 128) {
            space = (t->ascii[c] & A_SPACE) != 0;
            punct = (t->ascii[c] & A_PUNCT) != 0;
        } else {
            space = is_ws(c);
            punct = !space && is_punct(c);
        }
        if (space || punct) {
            if (ws >= 0 && wordpiece(t, e, v + ws, i - ws))
                return 1;
            ws = -1;
            if (punct && wordpiece(t, e, v + i, 1))
                return 1;
        } else if (ws < 0) {
            ws = i;
        }
    }
    if (ws >= 0 && wordpiece(t, e, v + ws, m - ws))
        return 1;
    return 0;
}

/* The longest added token starting at cps[i], or -1. */
static int match_added(const sl_tokenizer_t *t, const int32_t *cps, int n, int i)
{
    int best = -1, best_len = 0;
    for (int k = 0; k < t->n_added; k++) {
        const added_token_t *a = &t->added[k];
        if (a->n > best_len && a->n <= n - i && a->cps[0] == cps[i] &&
            memcmp(a->cps, cps + i, (size_t)a->n * sizeof(int32_t)) == 0) {
            best = k;
            best_len = a->n;
        }
    }
    return best;
}

int sl_tokenizer_encode(const sl_tokenizer_t *t, const char *text, size_t len, int max_len,
                        int32_t *ids, int *n_ids, int *truncated, sl_error_t *err)
{
    *n_ids = 0;
    if (truncated)
        *truncated = 0;
    int n_special = t->n_pre + t->n_post;
    if (max_len < n_special + 1 || !ids) {
        sl_errorf(err, "tokenizer: max_len %d leaves no room for text after %d special tokens",
                  max_len, n_special);
        return SL_TOK_ERROR;
    }
    if (len == 0) {
        sl_errorf(err, "empty text");
        return SL_TOK_EMPTY;
    }
    if (len > (size_t)1 << 30) {
        sl_errorf(err, "text of %zu bytes is too long", len);
        return SL_TOK_ERROR;
    }

    enc_t e = {0};
    cp_reserve(&e.cps, (int)len + 1);
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)text;
    int32_t *cv = e.cps.v;
    int nc = 0;
    /* Scan for added tokens only where the text holds a first character of one. */
    int any_added_first = t->n_first < 0;
    for (size_t i = 0; i < len;) {
        if (p[i] < 0x80) {
            cv[nc++] = p[i++];
        } else {
            utf8proc_int32_t c;
            utf8proc_ssize_t r = utf8proc_iterate(p + i, (utf8proc_ssize_t)(len - i), &c);
            if (r <= 0) {
                free(e.cps.v);
                sl_errorf(err, "invalid UTF-8 at byte %zu (0x%02x)", i, p[i]);
                return SL_TOK_BAD_UTF8;
            }
            cv[nc++] = c;
            i += (size_t)r;
        }
        for (int k = 0; k < t->n_first; k++)
            any_added_first |= cv[nc - 1] == t->added_first[k];
    }

    e.ids = ids + t->n_pre;
    e.budget = max_len - n_special;
    int full = 0;
    if (!any_added_first) {
        full = encode_segment(t, &e, cv, nc);
    } else {
        int seg = 0;
        for (int i = 0; i < nc && !full;) {
            int k = match_added(t, cv, nc, i);
            if (k < 0) {
                i++;
                continue;
            }
            if (i > seg)
                full = encode_segment(t, &e, cv + seg, i - seg);
            if (!full)
                full = emit(&e, t->added[k].id);
            i += t->added[k].n;
            seg = i;
        }
        if (!full && seg < nc)
            full = encode_segment(t, &e, cv + seg, nc - seg);
    }
    int count = e.count;
    if (count > e.budget) {
        count = e.budget;
        if (truncated)
            *truncated = 1;
    }
    memcpy(ids, t->pre, (size_t)t->n_pre * sizeof(int32_t));
    memcpy(ids + t->n_pre + count, t->post, (size_t)t->n_post * sizeof(int32_t));
    *n_ids = t->n_pre + count + t->n_post;
    free(e.cps.v);
    free(e.norm.v);
    free(e.bytes);
    free(e.off);
    return SL_TOK_OK;
}
