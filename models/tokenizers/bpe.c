/*
 * bpe.c — BPE tokenization (see bpe.h), id for id with Hugging Face `tokenizers`.
 *
 * The pipeline per row mirrors the library, because the model only behaves as the reference
 * when its ids are identical:
 *   1. validate UTF-8 (a bad byte is a row error);
 *   2. split off added tokens found verbatim in the raw text (leftmost, then longest);
 *   3. run each remaining segment through the pre-tokenizer steps in order: Split(regex,
 *      Isolated), Digits, and finally ByteLevel (optional " " prefix, optional GPT-2 regex).
 *      Every step splits every piece the previous one produced; a regex sees one piece as its
 *      whole subject, so look-aheads such as \s+(?!\S) stop at the piece's end as in the library.
 *      SentencePiece-style tokenizers have one step instead (STEP_SPM), which stands for either
 *      the normalizer Prepend("▁") + Replace(" ", "▁") with no pre-tokenizer (LLaMA 2: every
 *      segment gets a "▁" in front and stays one piece) or the Metaspace pre-tokenizer (a "▁"
 *      in front of the first or of every segment unless it has one, optionally a piece per "▁");
 *   4. map each piece to its symbols — its bytes' characters in the byte-level alphabet, or its
 *      UTF-8 characters (SentencePiece style), a character missing from the vocabulary becoming
 *      its <0xXX> byte tokens (byte_fallback) or unk — and merge adjacent symbols, always the
 *      pair of lowest rank, leftmost among equals (the library's order);
 *   5. the post-processor's special tokens around the sequence (BOS, ...).
 * Merges are looked up in an open-addressing table keyed by the pair of ids; the vocabulary in
 * one keyed by the token string (FNV-1a). Short pieces merge by a linear scan of cached
 * pair ranks, long ones through a binary heap; both give the same order. Text repeats its words,
 * so the ids of short pieces are remembered in a direct-mapped cache per thread (entries tagged
 * with the tokenizer's serial number): the tokenizer itself stays read-only and shareable.
 * A GGUF SentencePiece vocabulary has scores instead of merges: every split of a token into two
 * tokens becomes a merge, ranked by the token's score (spm_score_merges), which is how
 * SentencePiece and llama.cpp merge and how transformers' GGUF loader builds its tokenizer.
 *
 * Regexes: PCRE2 with UTF and UCP (and JIT when the library has it). The library's regex engine
 * (Oniguruma) takes \s as the Unicode White_Space property; PCRE2's \s also matches U+180E
 * (Mongolian vowel separator, a space before Unicode 6.3), which changes the pieces of a text
 * holding it, so \s and \S are rewritten to the explicit White_Space set before compiling.
 *
 * Decoding runs the decoder's steps in the library's order: ByteFallback turns each run of
 * <0xXX> tokens into its bytes (one U+FFFD per byte when they are not valid UTF-8), Replace
 * turns "▁" back into spaces, ByteLevel turns a token (or with Fuse before it, the whole text)
 * whose characters are all in the byte-level alphabet into those bytes and leaves any other as
 * its own UTF-8, Strip drops leading spaces; the bytes then become text with every maximal
 * invalid subsequence replaced by U+FFFD (Rust's String::from_utf8_lossy).
 */
#include "models/tokenizers/bpe.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "common/sl_hash.h"
#include "common/sl_utf8.h"
#include "models/formats/gguf.h"
#include "models/tokenizers/tokenizer_json.h"

#define MAX_SPECIAL 8 /* post-processor tokens before / after the sequence */
#define MAX_STEPS 8   /* pre-tokenizer steps */
#define LINEAR_MAX 48 /* pieces up to this many symbols merge by linear scan */

/* ---- the regexes of the pre-tokenizers (data, as the model families publish them) ------------ */

/* GPT-2's ByteLevel(use_regex=true); also what transformers builds for SmolLM2 from GGUF. */
static const char RE_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
/* LLaMA-3 (llama.cpp "llama-bpe"). */
static const char RE_LLAMA3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/* Qwen2: LLaMA-3's with single digits. */
static const char RE_QWEN2[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                               "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* Unicode White_Space, as a character-class body. */
static const char WS_CLASS[] = "\\t-\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}"
                               "\\x{2029}\\x{202F}\\x{205F}\\x{3000}";

/* SentencePiece's stand-in for a space, "▁" (U+2581). */
static const char META[3] = {(char)0xE2, (char)0x96, (char)0x81};

/* ---- types ----------------------------------------------------------------------------------- */

enum { STEP_SPLIT, STEP_DIGITS, STEP_BYTELEVEL, STEP_SPM };

/* When STEP_SPM puts a "▁" in front of a segment (the text between added tokens). */
enum {
    PREFIX_NEVER,
    PREFIX_FIRST,  /* Metaspace "first": the text's first segment, unless it starts with ▁ */
    PREFIX_ALWAYS, /* Metaspace "always": every segment that does not start with ▁ */
    PREFIX_EVERY,  /* normalizer Prepend("▁"): every segment, even one that starts with ▁ */
};

typedef struct {
    int kind;
    pcre2_code *re;       /* SPLIT, or BYTELEVEL with use_regex */
    int individual;       /* DIGITS: each digit alone (else runs of digits) */
    int add_prefix_space; /* BYTELEVEL */
    int prefix;           /* SPM: PREFIX_* */
    int split;            /* SPM: a piece starts at every "▁" (Metaspace split = true) */
} step_t;

/* Where the decoder's Replace("▁", " ") sits: on each token before the bytes of <0xXX> tokens
 * are joined (LLaMA 2's tokenizer.json), or on the joined text (transformers' GGUF converter);
 * the two differ only when byte tokens spell "▁" itself. */
enum { REPLACE_NONE, REPLACE_TOKENS, REPLACE_TEXT };

typedef struct {
    const char *s; /* content (points into tok[]) */
    int len;
    int32_t id;
} added_t;

typedef struct {
    uint64_t key; /* (a << 32) | b; UINT64_MAX = empty */
    int32_t rank, id;
} pair_slot_t; /* one slot per 16 bytes: a lookup touches one cache line */

typedef struct {
    pair_slot_t *slot;
    uint32_t mask;
} pair_table_t;

struct sl_bpe {
    char *source;
    uint32_t serial; /* tags this tokenizer's entries in the per-thread piece cache */
    int n_vocab;     /* largest id + 1 */
    char **tok;      /* [n_vocab] NUL-terminated byte-level strings, NULL for holes */
    int *tok_len;    /* [n_vocab] */
    uint8_t *type;   /* [n_vocab] SL_BPE_* */
    /* model vocabulary: byte-level string -> id */
    int32_t *vslot;
    uint32_t *vhash, vmask;
    pair_table_t pairs;
    int32_t byte_id[256]; /* id of the one-byte symbol of each byte, -1 if absent */
    int32_t fb_id[256];   /* id of the byte token "<0xXX>" of each byte, -1 if absent */
    int32_t unk_id;       /* -1 if none */
    int fuse_unk, ignore_merges;
    int spm;           /* symbols are UTF-8 characters ("▁" for spaces), not byte-level ones */
    int byte_fallback; /* a character missing from the vocabulary becomes its <0xXX> tokens */
    /* decoder: Replace("▁", " ") (REPLACE_*), ByteFallback, Fuse, ByteLevel, Strip(" ", n, 0) */
    int dec_replace, dec_bytes, dec_fuse, dec_bytelevel, dec_strip;
    /* pre-tokenizer */
    step_t steps[MAX_STEPS];
    int n_steps;
    /* added tokens, sorted by first byte; first[b] .. first[b + 1] index them */
    added_t *added;
    int n_added;
    int first[257];
    /* post-processor */
    int32_t pre[MAX_SPECIAL], post[MAX_SPECIAL];
    int n_pre, n_post;
    int32_t bos_id, eos_id;
};

/* ---- the byte-level alphabet ----------------------------------------------------------------- */

static int32_t byte_to_cp[256];
static int16_t cp_to_byte[324]; /* code points < 0x144, -1 outside the alphabet */

static void init_alphabet(void)
{
    /* Printable Latin-1 bytes stand for themselves; the others (controls, space, 0x7f-0xa0,
     * 0xad) take 256, 257, ... in byte order. Idempotent, so no lock is needed. */
    int next = 256;
    for (int b = 0; b < 256; b++) {
        int keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        byte_to_cp[b] = keep ? b : next++;
    }
    for (int c = 0; c < 324; c++)
        cp_to_byte[c] = -1;
    for (int b = 0; b < 256; b++)
        cp_to_byte[byte_to_cp[b]] = (int16_t)b;
}

static int put_cp(char *o, int32_t c) /* c < 0x800 */
{
    if (c < 0x80) {
        o[0] = (char)c;
        return 1;
    }
    o[0] = (char)(0xC0 | (c >> 6));
    o[1] = (char)(0x80 | (c & 0x3F));
    return 2;
}

/* The offset of the first byte that is not strict UTF-8 (sl_utf8_check), or -1 when s[0..n) is
 * valid. */
static long utf8_invalid_at(const unsigned char *s, size_t n)
{
    size_t at = sl_utf8_check(s, n);
    return at == n ? -1 : (long)at;
}

/* ---- hash tables ----------------------------------------------------------------------------- */

static uint32_t table_cap(int n)
{
    uint32_t cap = 16;
    while (cap < (uint32_t)n * 2u)
        cap *= 2;
    return cap;
}

/* Inserts id under its string; a string given twice maps to the later id (as a Python dict
 * built from the token list does). */
static void vocab_insert(sl_bpe_t *t, int32_t id)
{
    uint32_t h = sl_hash32(t->tok[id], (size_t)t->tok_len[id]);
    uint32_t i = h & t->vmask;
    for (; t->vslot[i] >= 0; i = (i + 1) & t->vmask) {
        int32_t o = t->vslot[i];
        if (t->vhash[i] == h && t->tok_len[o] == t->tok_len[id] &&
            memcmp(t->tok[o], t->tok[id], (size_t)t->tok_len[id]) == 0) {
            t->vslot[i] = id;
            return;
        }
    }
    t->vslot[i] = id;
    t->vhash[i] = h;
}

static int32_t vocab_find(const sl_bpe_t *t, const char *s, size_t n)
{
    uint32_t h = sl_hash32(s, n);
    for (uint32_t i = h & t->vmask;; i = (i + 1) & t->vmask) {
        int32_t id = t->vslot[i];
        if (id < 0)
            return -1;
        if (t->vhash[i] == h && (size_t)t->tok_len[id] == n && memcmp(t->tok[id], s, n) == 0)
            return id;
    }
}

static inline uint32_t pair_hash(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (uint32_t)k;
}

static void pairs_init(pair_table_t *p, int n)
{
    uint32_t cap = table_cap(n);
    p->slot = sl_xmalloc(cap * sizeof(pair_slot_t));
    for (uint32_t i = 0; i < cap; i++)
        p->slot[i] = (pair_slot_t){UINT64_MAX, 0, 0};
    p->mask = cap - 1;
}

/* A pair given twice keeps the later rank (the library collects merges into a hash map). */
static void pairs_insert(pair_table_t *p, int32_t a, int32_t b, int32_t rank, int32_t id)
{
    uint64_t k = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t i = pair_hash(k) & p->mask;
    while (p->slot[i].key != UINT64_MAX && p->slot[i].key != k)
        i = (i + 1) & p->mask;
    p->slot[i] = (pair_slot_t){k, rank, id};
}

/* Rank of merging (a, b), or INT32_MAX; *id receives the merged token. */
static inline int32_t pair_rank(const pair_table_t *p, int32_t a, int32_t b, int32_t *id)
{
    uint64_t k = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    for (uint32_t i = pair_hash(k) & p->mask;; i = (i + 1) & p->mask) {
        const pair_slot_t *e = &p->slot[i];
        if (e->key == k) {
            *id = e->id;
            return e->rank;
        }
        if (e->key == UINT64_MAX)
            return INT32_MAX;
    }
}

/* ---- building -------------------------------------------------------------------------------- */

static sl_bpe_t *bpe_new(const char *source, int n_vocab)
{
    static int alphabet_ready;
    if (!alphabet_ready) {
        init_alphabet();
        alphabet_ready = 1;
    }
    static atomic_uint next_serial = 1;
    sl_bpe_t *t = sl_xcalloc(1, sizeof(*t));
    t->serial = atomic_fetch_add(&next_serial, 1);
    if (t->serial == 0) /* 0 marks an empty cache entry */
        t->serial = atomic_fetch_add(&next_serial, 1);
    t->source = sl_xstrdup(source ? source : "tokenizer");
    t->n_vocab = n_vocab;
    t->tok = sl_xcalloc((size_t)n_vocab, sizeof(char *));
    t->tok_len = sl_xcalloc((size_t)n_vocab, sizeof(int));
    t->type = sl_xcalloc((size_t)n_vocab, 1);
    t->unk_id = t->bos_id = t->eos_id = -1;
    return t;
}

static void set_token(sl_bpe_t *t, int32_t id, const char *s, size_t n)
{
    free(t->tok[id]);
    t->tok[id] = sl_xmalloc(n + 1);
    memcpy(t->tok[id], s, n);
    t->tok[id][n] = 0;
    t->tok_len[id] = (int)n;
}

/* The vocabulary table over the model's tokens (in_model[id] set), and the one-byte symbols. */
static void build_vocab_table(sl_bpe_t *t, const uint8_t *in_model)
{
    uint32_t cap = table_cap(t->n_vocab);
    t->vslot = sl_xmalloc(cap * sizeof(int32_t));
    t->vhash = sl_xcalloc(cap, sizeof(uint32_t));
    for (uint32_t i = 0; i < cap; i++)
        t->vslot[i] = -1;
    t->vmask = cap - 1;
    for (int32_t id = 0; id < t->n_vocab; id++)
        if (t->tok[id] && in_model[id])
            vocab_insert(t, id);
    for (int b = 0; b < 256; b++) {
        char u[8];
        int n = put_cp(u, byte_to_cp[b]);
        t->byte_id[b] = vocab_find(t, u, (size_t)n);
        snprintf(u, sizeof u, "<0x%02X>", b);
        t->fb_id[b] = vocab_find(t, u, 6);
    }
}

/* Switches t to SentencePiece-style symbols: one per UTF-8 character. byte_id then serves only
 * the one-character shortcut of bpe_piece (ASCII characters). */
static void set_spm(sl_bpe_t *t)
{
    t->spm = 1;
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        t->byte_id[b] = b < 0x80 ? vocab_find(t, &c, 1) : -1;
    }
}

/* Splits "a b" (exactly one space, as the library demands) and adds the merge of rank `rank`.
 * 0, or -1 with a message naming `where`. */
static int add_merge(sl_bpe_t *t, const char *a, size_t na, const char *b, size_t nb, int32_t rank,
                     const char *where, sl_error_t *err)
{
    int32_t ia = vocab_find(t, a, na), ib = vocab_find(t, b, nb);
    if (ia < 0 || ib < 0)
        return sl_errorf(err, "%s: %s: \"%.*s\" is not in the vocabulary", t->source, where,
                         (int)(ia < 0 ? na : nb), ia < 0 ? a : b);
    char stack[256];
    char *ab = na + nb <= sizeof stack ? stack : sl_xmalloc(na + nb);
    memcpy(ab, a, na);
    memcpy(ab + na, b, nb);
    int32_t id = vocab_find(t, ab, na + nb);
    if (id < 0) {
        sl_errorf(err, "%s: %s: the merged token \"%.*s\" is not in the vocabulary", t->source,
                  where, (int)(na + nb), ab);
        if (ab != stack)
            free(ab);
        return -1;
    }
    if (ab != stack)
        free(ab);
    pairs_insert(&t->pairs, ia, ib, rank, id);
    return 0;
}

static int add_merge_str(sl_bpe_t *t, const char *m, size_t n, int32_t rank, const char *where,
                         sl_error_t *err)
{
    const char *sp = memchr(m, ' ', n);
    if (!sp || sp == m || sp == m + n - 1 || memchr(sp + 1, ' ', (size_t)(m + n - sp - 1)))
        return sl_errorf(err, "%s: %s: \"%.*s\" is not two tokens separated by one space",
                         t->source, where, (int)n, m);
    return add_merge(t, m, (size_t)(sp - m), sp + 1, (size_t)(m + n - sp - 1), rank, where, err);
}

static int cmp_added(const void *x, const void *y)
{
    const added_t *a = x, *b = y;
    int fa = (unsigned char)a->s[0], fb = (unsigned char)b->s[0];
    if (fa != fb)
        return fa - fb;
    return a->id - b->id;
}

/* Added tokens: every id of type CONTROL or USER_DEFINED with a non-empty string. */
static int build_added(sl_bpe_t *t, sl_error_t *err)
{
    int n = 0;
    for (int32_t id = 0; id < t->n_vocab; id++)
        if (t->tok[id] && t->tok_len[id] > 0 &&
            (t->type[id] == SL_BPE_CONTROL || t->type[id] == SL_BPE_USER_DEFINED))
            n++;
    t->added = sl_xcalloc((size_t)(n > 0 ? n : 1), sizeof(added_t));
    for (int32_t id = 0; id < t->n_vocab; id++) {
        if (!(t->tok[id] && t->tok_len[id] > 0 &&
              (t->type[id] == SL_BPE_CONTROL || t->type[id] == SL_BPE_USER_DEFINED)))
            continue;
        long bad = utf8_invalid_at((const unsigned char *)t->tok[id], (size_t)t->tok_len[id]);
        if (bad >= 0)
            return sl_errorf(err, "%s: added token %d is not valid UTF-8 (byte %ld)", t->source, id,
                             bad);
        t->added[t->n_added++] = (added_t){t->tok[id], t->tok_len[id], id};
    }
    qsort(t->added, (size_t)t->n_added, sizeof(added_t), cmp_added);
    int k = 0;
    for (int b = 0; b <= 256; b++) {
        while (k < t->n_added && (unsigned char)t->added[k].s[0] < b)
            k++;
        t->first[b] = k;
    }
    return 0;
}

/* \s and \S as Unicode White_Space (see the top of the file); everything else verbatim. */
static char *rewrite_regex(const char *re)
{
    size_t n = strlen(re), cap = n * 8 + sizeof WS_CLASS * 8 + 16, o = 0;
    char *out = sl_xmalloc(cap);
    int in_class = 0;
    for (size_t i = 0; i < n; i++) {
        if (o + sizeof WS_CLASS + 8 > cap) {
            cap *= 2;
            out = sl_xrealloc(out, cap);
        }
        char c = re[i];
        if (c == '\\' && i + 1 < n) {
            char d = re[i + 1];
            if (d == 's' || (d == 'S' && !in_class)) {
                if (!in_class)
                    o += (size_t)sprintf(out + o, "[%s%s]", d == 'S' ? "^" : "", WS_CLASS);
                else
                    o += (size_t)sprintf(out + o, "%s", WS_CLASS);
                i++;
                continue;
            }
            out[o++] = c;
            out[o++] = d;
            i++;
            continue;
        }
        if (c == '[' && !in_class) {
            in_class = 1;
            out[o++] = c;
            /* a ']' right after '[' or '[^' is a literal */
            if (i + 1 < n && re[i + 1] == '^')
                out[o++] = re[++i];
            if (i + 1 < n && re[i + 1] == ']')
                out[o++] = re[++i];
            continue;
        }
        if (c == ']' && in_class)
            in_class = 0;
        out[o++] = c;
    }
    out[o] = 0;
    return out;
}

static pcre2_code *compile_regex(const char *re, int literal, const char *source, const char *where,
                                 sl_error_t *err)
{
    char *pat = literal ? sl_xstrdup(re) : rewrite_regex(re);
    int code;
    PCRE2_SIZE off;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
    pcre2_code *c = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, opts, &code, &off, NULL);
    free(pat);
    if (!c) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        sl_errorf(err, "%s: %s: regex does not compile: %s", source, where, (const char *)msg);
        return NULL;
    }
    pcre2_jit_compile(c, PCRE2_JIT_COMPLETE); /* falls back on the interpreter without JIT */
    return c;
}

/* The steps of a named pre-tokenizer (llama.cpp's tokenizer.ggml.pre values). */
static int set_named_pretok(sl_bpe_t *t, const char *pre, sl_error_t *err)
{
    const char *re = NULL;
    int split = 0;
    /* "smollm": transformers (the reference) builds ByteLevel with the GPT-2 regex for a GGUF
     * of a llama-architecture model with a gpt2 tokenizer. SmolLM2's own tokenizer.json splits
     * digits first; its merges contain no digit pairs, so the two agree. */
    if (strcmp(pre, "gpt2") == 0 || strcmp(pre, "smollm") == 0) {
        re = RE_GPT2;
    } else if (strcmp(pre, "llama-bpe") == 0 || strcmp(pre, "llama3") == 0) {
        re = RE_LLAMA3;
        split = 1;
        t->ignore_merges = 1; /* as LLaMA-3's tokenizer.json says (and llama.cpp does) */
    } else if (strcmp(pre, "qwen2") == 0) {
        re = RE_QWEN2;
        split = 1;
    } else {
        return sl_errorf(err,
                         "%s: tokenizer.ggml.pre \"%s\" is not supported (gpt2, smollm, "
                         "llama-bpe, qwen2)",
                         t->source, pre);
    }
    pcre2_code *c = compile_regex(re, 0, t->source, "tokenizer.ggml.pre", err);
    if (!c)
        return -1;
    if (split) {
        t->steps[t->n_steps++] = (step_t){.kind = STEP_SPLIT, .re = c};
        t->steps[t->n_steps++] = (step_t){.kind = STEP_BYTELEVEL};
    } else {
        t->steps[t->n_steps++] = (step_t){.kind = STEP_BYTELEVEL, .re = c};
    }
    return 0;
}

/* SentencePiece-style BPE from GGUF (tokenizer.ggml.model "llama"): what from_vocab needs
 * beyond a byte-level vocabulary. */
typedef struct {
    const float *scores; /* [n_tokens]; the merges come from them when the file has none */
    int32_t unk_id;      /* -1 if none */
    int add_eos, add_space_prefix;
} spm_args_t;

typedef struct {
    int32_t a, b;     /* the two pieces */
    float score;      /* of the merged piece */
    float sa, sb;     /* of the pieces */
    int32_t pos, cut; /* first position of the merged piece in the token list; byte of the cut */
} cand_t;

/* Score order, then the order transformers' converter lists the candidates in. */
static int cmp_cand(const void *x, const void *y)
{
    const cand_t *a = x, *b = y;
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    if (a->pos != b->pos)
        return a->pos < b->pos ? -1 : 1;
    if (a->sa != b->sa)
        return a->sa > b->sa ? -1 : 1;
    if (a->sb != b->sb)
        return a->sb > b->sb ? -1 : 1;
    return a->cut - b->cut;
}

/* The merges of a SentencePiece BPE vocabulary without a merge list: every split of every
 * token into two tokens, ranked by the score of the token they make (highest first; SentencePiece
 * and llama.cpp merge by that score). Ties are ordered as transformers' GGUF converter orders
 * them (first position of the token, then the pieces' scores, highest first, then the cut), so
 * that the ids are transformers' own. A token string given twice counts once, with the score
 * and id of its last copy. */
static int spm_score_merges(sl_bpe_t *t, const float *scores, const char *key, sl_error_t *err)
{
    size_t n_cand = 0, cap = (size_t)t->n_vocab * 2 + 16;
    cand_t *c = sl_xmalloc(cap * sizeof *c);
    uint8_t *done = sl_xcalloc((size_t)t->n_vocab, 1);
    for (int32_t i = 0; i < t->n_vocab; i++) {
        if (scores[i] != scores[i]) {
            free(c);
            free(done);
            return sl_errorf(err, "%s: %sscores[%d] is not a number", t->source, key, i);
        }
        const char *s = t->tok[i];
        int len = t->tok_len[i];
        int32_t last = vocab_find(t, s, (size_t)len);
        if (done[last])
            continue;
        done[last] = 1;
        for (int k = 1; k < len; k++) {
            if (((unsigned char)s[k] & 0xC0) == 0x80) /* cut between characters only */
                continue;
            int32_t a = vocab_find(t, s, (size_t)k), b = vocab_find(t, s + k, (size_t)(len - k));
            if (a < 0 || b < 0)
                continue;
            if (n_cand == cap) {
                cap *= 2;
                c = sl_xrealloc(c, cap * sizeof *c);
            }
            c[n_cand++] = (cand_t){a, b, scores[last], scores[a], scores[b], i, k};
        }
    }
    qsort(c, n_cand, sizeof *c, cmp_cand);
    pairs_init(&t->pairs, (int)n_cand);
    for (size_t j = 0; j < n_cand; j++) {
        const cand_t *m = &c[j];
        pairs_insert(&t->pairs, m->a, m->b, (int32_t)j,
                     vocab_find(t, t->tok[c[j].pos], (size_t)t->tok_len[c[j].pos]));
    }
    free(c);
    free(done);
    return 0;
}

/* sl_bpe_from_vocab, and with spm the SentencePiece-style form (pre is then unused); `key`
 * prefixes the names of the arrays in messages ("tokenizer.ggml."). */
static sl_bpe_t *from_vocab(const char *const *tokens, const size_t *tok_len, int n_tokens,
                            const char *const *merges, const size_t *merge_len, int n_merges,
                            const int32_t *token_type, const char *pre, int32_t bos_id,
                            int32_t eos_id, int add_bos, const spm_args_t *spm, const char *source,
                            const char *key, sl_error_t *err)
{
    if (!source)
        source = "tokenizer";
    if (!tokens || !tok_len || n_tokens <= 0 || n_merges < 0 || (n_merges > 0 && !merges) ||
        (!pre && !spm) || (spm && !spm->scores && n_merges == 0)) {
        sl_errorf(err, "%s: empty vocabulary or missing arguments", source);
        return NULL;
    }
    if (bos_id >= n_tokens || eos_id >= n_tokens || bos_id < -1 || eos_id < -1 ||
        (spm && (spm->unk_id < -1 || spm->unk_id >= n_tokens))) {
        sl_errorf(err, "%s: BOS/EOS/unknown id (%d, %d, %d) outside the vocabulary of %d", source,
                  bos_id, eos_id, spm ? spm->unk_id : -1, n_tokens);
        return NULL;
    }
    if ((add_bos && bos_id < 0) || (spm && spm->add_eos && eos_id < 0)) {
        sl_errorf(err, "%s: adds %s but has no %s id", source, add_bos ? "BOS" : "EOS",
                  add_bos ? "BOS" : "EOS");
        return NULL;
    }
    sl_bpe_t *t = bpe_new(source, n_tokens);
    uint8_t *in_model = sl_xmalloc((size_t)n_tokens);
    for (int i = 0; i < n_tokens; i++) {
        if (!tokens[i]) {
            sl_errorf(err, "%s: %stokens[%d] is missing", source, key, i);
            goto fail;
        }
        set_token(t, i, tokens[i], tok_len[i]);
        int ty = token_type ? token_type[i] : SL_BPE_NORMAL;
        if (ty < SL_BPE_NORMAL || ty > SL_BPE_BYTE) {
            sl_errorf(err, "%s: %stoken_type[%d] = %d is not a known type", source, key, i, ty);
            goto fail;
        }
        t->type[i] = (uint8_t)ty;
        in_model[i] = 1; /* the converter puts every token in the model's vocabulary */
    }
    build_vocab_table(t, in_model);
    if (spm && n_merges == 0) {
        if (spm_score_merges(t, spm->scores, key, err))
            goto fail;
    } else {
        pairs_init(&t->pairs, n_merges);
    }
    for (int j = 0; j < n_merges; j++) {
        char where[64];
        snprintf(where, sizeof where, "%smerges[%d]", key, j);
        if (!merges[j] || add_merge_str(t, merges[j], merge_len[j], j, where, err))
            goto fail;
    }
    /* transformers makes the unknown token a special one (its unk_token), llama.cpp every
     * token of type UNKNOWN: matched in the text, skipped when decoding without specials */
    for (int i = 0; spm && i < n_tokens; i++)
        if (t->type[i] == SL_BPE_UNKNOWN)
            t->type[i] = SL_BPE_CONTROL;
    if (build_added(t, err) || (!spm && set_named_pretok(t, pre, err)))
        goto fail;
    if (spm) {
        /* as transformers' GGUF converter builds it: Prepend("▁") + Replace(" ", "▁"), BPE with
         * byte fallback and fused unknowns, decoder ByteFallback, Fuse, Replace, Strip */
        int prefix = spm->add_space_prefix ? PREFIX_EVERY : PREFIX_NEVER;
        t->steps[t->n_steps++] = (step_t){.kind = STEP_SPM, .prefix = prefix};
        set_spm(t);
        t->byte_fallback = t->fuse_unk = 1;
        t->unk_id = spm->unk_id;
        t->dec_bytes = 1;
        t->dec_replace = REPLACE_TEXT;
        t->dec_strip = spm->add_space_prefix ? 1 : 0;
        if (spm->add_eos)
            t->post[t->n_post++] = eos_id;
    } else {
        t->dec_bytelevel = 1;
    }
    t->bos_id = bos_id;
    t->eos_id = eos_id;
    if (add_bos)
        t->pre[t->n_pre++] = bos_id;
    free(in_model);
    return t;
fail:
    free(in_model);
    sl_bpe_free(t);
    return NULL;
}

sl_bpe_t *sl_bpe_from_vocab(const char *const *tokens, const size_t *tok_len, int n_tokens,
                            const char *const *merges, const size_t *merge_len, int n_merges,
                            const int32_t *token_type, const char *pre, int32_t bos_id,
                            int32_t eos_id, int add_bos, const char *source, sl_error_t *err)
{
    return from_vocab(tokens, tok_len, n_tokens, merges, merge_len, n_merges, token_type, pre,
                      bos_id, eos_id, add_bos, NULL, source, "", err);
}

/* ---- GGUF ------------------------------------------------------------------------------------ */

/* An optional key: absent -> dflt; otherwise an integer (is_bool 0) or a boolean. */
static int gguf_opt(const struct sl_gguf *g, const char *key, int is_bool, int64_t dflt,
                    int64_t *out, sl_error_t *err)
{
    *out = dflt;
    if (!sl_gguf_find(g, key))
        return 0;
    if (!is_bool)
        return sl_gguf_get_int(g, key, out, err);
    int b;
    if (sl_gguf_get_bool(g, key, &b, err))
        return -1;
    *out = b;
    return 0;
}

sl_bpe_t *sl_bpe_load_gguf(const struct sl_gguf *g, sl_error_t *err)
{
    const char *path = sl_gguf_path(g);
    const char *s;
    size_t n;
    if (sl_gguf_get_str(g, "tokenizer.ggml.model", &s, &n, err))
        return NULL;
    int spm = n == 5 && memcmp(s, "llama", 5) == 0;
    if (!spm && (n != 4 || memcmp(s, "gpt2", 4) != 0)) {
        sl_errorf(err,
                  "%s: tokenizer.ggml.model is \"%.*s\"; only gpt2 (byte-level BPE) and llama "
                  "(SentencePiece-style BPE) are supported",
                  path, (int)n, s);
        return NULL;
    }
    const sl_gguf_kv_t *tk = sl_gguf_find(g, "tokenizer.ggml.tokens");
    const sl_gguf_kv_t *mg = sl_gguf_find(g, "tokenizer.ggml.merges");
    const sl_gguf_kv_t *ty = sl_gguf_find(g, "tokenizer.ggml.token_type");
    const sl_gguf_kv_t *sc = sl_gguf_find(g, "tokenizer.ggml.scores");
    if (!tk || tk->type != SL_GGUF_ARRAY || tk->elem != SL_GGUF_STRING || tk->n == 0 ||
        tk->n > INT32_MAX) {
        sl_errorf(err, "%s: tokenizer.ggml.tokens is %s", path,
                  tk ? "not a non-empty array of strings" : "missing");
        return NULL;
    }
    if ((!spm || mg) &&
        (!mg || mg->type != SL_GGUF_ARRAY || mg->elem != SL_GGUF_STRING || mg->n > INT32_MAX)) {
        sl_errorf(err, "%s: tokenizer.ggml.merges is %s", path,
                  mg ? "not an array of strings" : "missing");
        return NULL;
    }
    if (ty && (ty->type != SL_GGUF_ARRAY || ty->elem == SL_GGUF_STRING ||
               ty->elem == SL_GGUF_ARRAY || ty->n != tk->n)) {
        sl_errorf(err, "%s: tokenizer.ggml.token_type is not an integer array of %llu entries",
                  path, (unsigned long long)tk->n);
        return NULL;
    }
    /* SentencePiece merges by score when the file lists no merges */
    if (spm && (!mg || mg->n == 0) &&
        (!sc || sc->type != SL_GGUF_ARRAY || sc->elem == SL_GGUF_STRING ||
         sc->elem == SL_GGUF_ARRAY || sc->n != tk->n)) {
        sl_errorf(err, "%s: tokenizer.ggml.scores is %s", path,
                  sc ? "not a numeric array with one entry per token" : "missing (and no merges)");
        return NULL;
    }
    char pre[64] = "";
    if (!spm) {
        if (!sl_gguf_find(g, "tokenizer.ggml.pre")) {
            sl_errorf(err, "%s: tokenizer.ggml.pre is missing (the pre-tokenizer is unknown)",
                      path);
            return NULL;
        }
        if (sl_gguf_get_str(g, "tokenizer.ggml.pre", &s, &n, err))
            return NULL;
        snprintf(pre, sizeof pre, "%.*s", (int)(n < 63 ? n : 63), s);
    }
    /* llama.cpp adds BOS to SentencePiece vocabularies unless the file says otherwise */
    int64_t bos, eos, unk, add_bos, add_eos, add_space;
    if (gguf_opt(g, "tokenizer.ggml.bos_token_id", 0, -1, &bos, err) ||
        gguf_opt(g, "tokenizer.ggml.eos_token_id", 0, -1, &eos, err) ||
        gguf_opt(g, "tokenizer.ggml.unknown_token_id", 0, -1, &unk, err) ||
        gguf_opt(g, "tokenizer.ggml.add_bos_token", 1, spm, &add_bos, err) ||
        gguf_opt(g, "tokenizer.ggml.add_eos_token", 1, 0, &add_eos, err) ||
        gguf_opt(g, "tokenizer.ggml.add_space_prefix", 1, 1, &add_space, err))
        return NULL;
    int nt = (int)tk->n, nm = mg ? (int)mg->n : 0;
    const char *bad = bos < -1 || bos >= nt   ? "bos"
                      : eos < -1 || eos >= nt ? "eos"
                      : unk < -1 || unk >= nt ? "unknown"
                                              : NULL;
    if (bad) {
        sl_errorf(err, "%s: tokenizer.ggml.%s_token_id %lld is outside the vocabulary of %d", path,
                  bad,
                  (long long)(bad[0] == 'b'   ? bos
                              : bad[0] == 'e' ? eos
                                              : unk),
                  nt);
        return NULL;
    }
    const char **toks = sl_xmalloc((size_t)nt * sizeof(char *));
    size_t *tlen = sl_xmalloc((size_t)nt * sizeof(size_t));
    const char **mgs = sl_xmalloc((size_t)(nm > 0 ? nm : 1) * sizeof(char *));
    size_t *mlen = sl_xmalloc((size_t)(nm > 0 ? nm : 1) * sizeof(size_t));
    int32_t *types = ty ? sl_xmalloc((size_t)nt * sizeof(int32_t)) : NULL;
    float *scores = spm && nm == 0 ? sl_xmalloc((size_t)nt * sizeof(float)) : NULL;
    sl_bpe_t *t = NULL;
    for (int i = 0; i < nt; i++)
        if (sl_gguf_arr_str(tk, (uint64_t)i, &toks[i], &tlen[i])) {
            sl_errorf(err, "%s: tokenizer.ggml.tokens[%d] cannot be read", path, i);
            goto done;
        }
    for (int i = 0; i < nm; i++)
        if (sl_gguf_arr_str(mg, (uint64_t)i, &mgs[i], &mlen[i])) {
            sl_errorf(err, "%s: tokenizer.ggml.merges[%d] cannot be read", path, i);
            goto done;
        }
    for (int i = 0; ty && i < nt; i++) {
        int64_t v = sl_gguf_arr_int(ty, (uint64_t)i);
        types[i] = (v < SL_BPE_NORMAL || v > SL_BPE_BYTE) ? 0 : (int32_t)v;
        if (!types[i]) {
            sl_errorf(err, "%s: tokenizer.ggml.token_type[%d] = %lld is not a known type", path, i,
                      (long long)v);
            goto done;
        }
    }
    for (int i = 0; scores && i < nt; i++)
        scores[i] = (float)sl_gguf_arr_float(sc, (uint64_t)i);
    spm_args_t sa = {scores, (int32_t)unk, (int)add_eos, (int)add_space};
    t = from_vocab(toks, tlen, nt, mgs, mlen, nm, types, pre, (int32_t)bos, (int32_t)eos,
                   (int)add_bos, spm ? &sa : NULL, path, "tokenizer.ggml.", err);
done:
    free(toks);
    free(tlen);
    free(mgs);
    free(mlen);
    free(types);
    free(scores);
    return t;
}

/* ---- tokenizer.json -------------------------------------------------------------------------- */

static const char *type_of(const cJSON *o)
{
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(ty) ? ty->valuestring : "(missing)";
}

static int load_step(sl_bpe_t *t, const cJSON *p, const char *where, int last, sl_error_t *err)
{
    const char *path = t->source, *ty = type_of(p);
    if (t->n_steps == MAX_STEPS)
        return sl_errorf(err, "%s: %s: more than %d pre-tokenizers", path, where, MAX_STEPS);
    step_t *s = &t->steps[t->n_steps];
    memset(s, 0, sizeof *s);
    if (strcmp(ty, "ByteLevel") == 0) {
        int use_regex = 1;
        if (sl_tokjson_get_bool(p, "add_prefix_space", 1, &s->add_prefix_space, path, where, err) ||
            sl_tokjson_get_bool(p, "use_regex", 1, &use_regex, path, where, err))
            return -1;
        if (!last) /* the pieces are byte-level text after it: nothing may split them further */
            return sl_errorf(err, "%s: %s: ByteLevel must be the last pre-tokenizer", path, where);
        s->kind = STEP_BYTELEVEL;
        if (use_regex && !(s->re = compile_regex(RE_GPT2, 0, path, where, err)))
            return -1;
    } else if (strcmp(ty, "Split") == 0) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
        const cJSON *rx = pat ? cJSON_GetObjectItemCaseSensitive(pat, "Regex") : NULL;
        const cJSON *str = pat ? cJSON_GetObjectItemCaseSensitive(pat, "String") : NULL;
        const cJSON *beh = cJSON_GetObjectItemCaseSensitive(p, "behavior");
        int invert = 0;
        if (sl_tokjson_get_bool(p, "invert", 0, &invert, path, where, err))
            return -1;
        if (!cJSON_IsString(rx) && !cJSON_IsString(str))
            return sl_errorf(err,
                             "%s: %s.pattern is neither {\"Regex\": ...} nor {\"String\": "
                             "...}",
                             path, where);
        if (!cJSON_IsString(beh) || strcmp(beh->valuestring, "Isolated") != 0 || invert)
            return sl_errorf(err,
                             "%s: %s: only behavior \"Isolated\" with invert false is supported "
                             "(behavior \"%s\")",
                             path, where, cJSON_IsString(beh) ? beh->valuestring : "(missing)");
        s->kind = STEP_SPLIT;
        s->re = compile_regex(cJSON_IsString(rx) ? rx->valuestring : str->valuestring,
                              !cJSON_IsString(rx), path, where, err);
        if (!s->re)
            return -1;
    } else if (strcmp(ty, "Digits") == 0) {
        s->kind = STEP_DIGITS;
        if (sl_tokjson_get_bool(p, "individual_digits", 0, &s->individual, path, where, err))
            return -1;
    } else {
        return sl_errorf(err,
                         "%s: %s.type \"%s\" is not supported (ByteLevel, Split, Digits, "
                         "Sequence)",
                         path, where, ty);
    }
    t->n_steps++;
    return 0;
}

/* Metaspace (SentencePiece style): spaces become "▁", one is put in front per prepend_scheme
 * (or the older add_prefix_space), and with split each "▁" starts a piece. */
static int load_metaspace(sl_bpe_t *t, const cJSON *p, sl_error_t *err)
{
    const char *path = t->source;
    const cJSON *rep = cJSON_GetObjectItemCaseSensitive(p, "replacement");
    const cJSON *scheme = cJSON_GetObjectItemCaseSensitive(p, "prepend_scheme");
    step_t *st = &t->steps[t->n_steps];
    memset(st, 0, sizeof *st);
    st->kind = STEP_SPM;
    if (!cJSON_IsString(rep) || strcmp(rep->valuestring, "\u2581") != 0)
        return sl_errorf(err, "%s: pre_tokenizer.replacement must be \"\u2581\"", path);
    if (sl_tokjson_get_bool(p, "split", 1, &st->split, path, "pre_tokenizer", err))
        return -1;
    if (cJSON_IsString(scheme)) {
        const char *v = scheme->valuestring;
        st->prefix = strcmp(v, "first") == 0    ? PREFIX_FIRST
                     : strcmp(v, "always") == 0 ? PREFIX_ALWAYS
                     : strcmp(v, "never") == 0  ? PREFIX_NEVER
                                                : -1;
        if (st->prefix < 0)
            return sl_errorf(err,
                             "%s: pre_tokenizer.prepend_scheme \"%s\" is not supported (first, "
                             "always, never)",
                             path, v);
    } else {
        int add = 1;
        if (sl_tokjson_get_bool(p, "add_prefix_space", 1, &add, path, "pre_tokenizer", err))
            return -1;
        st->prefix = add ? PREFIX_ALWAYS : PREFIX_NEVER;
    }
    t->n_steps++;
    return 0;
}

/* prepend / replace: the normalizer's Prepend("▁") and Replace(" ", "▁") (load_normalizer). */
static int load_pretok(sl_bpe_t *t, const cJSON *pre, int prepend, int replace, sl_error_t *err)
{
    if (!pre || cJSON_IsNull(pre)) {
        /* LLaMA 2's layout: the normalizer made the "▁"s; the whole segment is one piece */
        if (!replace)
            return sl_errorf(err,
                             "%s: pre_tokenizer is null; BPE needs ByteLevel, Metaspace or the "
                             "normalizer Replace(\" \", \"\u2581\")",
                             t->source);
        t->steps[t->n_steps++] =
            (step_t){.kind = STEP_SPM, .prefix = prepend ? PREFIX_EVERY : PREFIX_NEVER};
        set_spm(t);
        return 0;
    }
    if (prepend || replace)
        return sl_errorf(err,
                         "%s: normalizer Prepend/Replace goes with a null pre_tokenizer, not "
                         "\"%s\"",
                         t->source, type_of(pre));
    if (strcmp(type_of(pre), "Metaspace") == 0) {
        if (load_metaspace(t, pre, err))
            return -1;
        set_spm(t);
        return 0;
    }
    if (strcmp(type_of(pre), "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(pre, "pretokenizers");
        if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) == 0)
            return sl_errorf(err, "%s: pre_tokenizer.pretokenizers is not a non-empty array",
                             t->source);
        int n = cJSON_GetArraySize(list), i = 0;
        const cJSON *p;
        cJSON_ArrayForEach(p, list)
        {
            char where[64];
            snprintf(where, sizeof where, "pre_tokenizer.pretokenizers[%d]", i);
            if (load_step(t, p, where, i == n - 1, err))
                return -1;
            i++;
        }
    } else if (load_step(t, pre, "pre_tokenizer", 1, err)) {
        return -1;
    }
    if (t->steps[t->n_steps - 1].kind != STEP_BYTELEVEL)
        return sl_errorf(err, "%s: pre_tokenizer: no ByteLevel step (byte-level BPE needs one)",
                         t->source);
    return 0;
}

/* normalizer: null, an empty Sequence, or SentencePiece's Prepend("▁") and/or
 * Replace(" ", "▁"), alone or in a Sequence (either order gives the same text). */
static int load_normalizer(const char *path, const cJSON *norm, int *prepend, int *replace,
                           sl_error_t *err)
{
    *prepend = *replace = 0;
    if (!norm || cJSON_IsNull(norm))
        return 0;
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(norm, "normalizers");
    int seq = strcmp(type_of(norm), "Sequence") == 0;
    if (seq && !cJSON_IsArray(list))
        return sl_errorf(err, "%s: normalizer.normalizers is not an array", path);
    const cJSON *n = seq ? list->child : norm;
    for (int i = 0; n; i++, n = seq ? n->next : NULL) {
        const char *ty = type_of(n);
        const cJSON *pre = cJSON_GetObjectItemCaseSensitive(n, "prepend");
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(n, "pattern");
        const cJSON *str = pat ? cJSON_GetObjectItemCaseSensitive(pat, "String") : NULL;
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(n, "content");
        if (strcmp(ty, "Prepend") == 0 && cJSON_IsString(pre) &&
            strcmp(pre->valuestring, "\u2581") == 0) {
            *prepend = 1;
        } else if (strcmp(ty, "Replace") == 0 && cJSON_IsString(str) &&
                   strcmp(str->valuestring, " ") == 0 && cJSON_IsString(content) &&
                   strcmp(content->valuestring, "\u2581") == 0) {
            *replace = 1;
        } else {
            char where[64];
            snprintf(where, sizeof where, seq ? "normalizer.normalizers[%d]" : "normalizer", i);
            return sl_errorf(err,
                             "%s: %s.type \"%s\" is not supported (null, or SentencePiece's "
                             "Prepend(\"\u2581\") and Replace(\" \", \"\u2581\"))",
                             path, where, ty);
        }
    }
    return 0;
}

/* decoder: ByteLevel, or a Sequence of ByteFallback, Fuse, Replace("▁", " "), ByteLevel and
 * Strip(" ", n, 0) (SentencePiece style: LLaMA 2, Mistral, transformers' GGUF converter). */
static int load_decoder(sl_bpe_t *t, const cJSON *dec, sl_error_t *err)
{
    const char *path = t->source;
    if (!dec || cJSON_IsNull(dec))
        return sl_errorf(err, "%s: decoder is null (ByteLevel or a Sequence is needed)", path);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(dec, "decoders");
    int seq = strcmp(type_of(dec), "Sequence") == 0;
    if (seq && !cJSON_IsArray(list))
        return sl_errorf(err, "%s: decoder.decoders is not an array", path);
    int fused = 0, stripped = 0;
    const cJSON *d = seq ? list->child : dec;
    for (int i = 0; d; i++, d = seq ? d->next : NULL) {
        char where[64];
        snprintf(where, sizeof where, seq ? "decoder.decoders[%d]" : "decoder", i);
        const char *ty = type_of(d);
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(d, "pattern");
        const cJSON *str = pat ? cJSON_GetObjectItemCaseSensitive(pat, "String") : NULL;
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(d, "content");
        const cJSON *start = cJSON_GetObjectItemCaseSensitive(d, "start");
        const cJSON *stop = cJSON_GetObjectItemCaseSensitive(d, "stop");
        if (stripped)
            return sl_errorf(err, "%s: %s: nothing may follow Strip", path, where);
        if (strcmp(ty, "ByteLevel") == 0 && !t->dec_bytelevel &&
            (fused || t->dec_replace != REPLACE_TEXT)) {
            t->dec_bytelevel = 1;
            t->dec_fuse = fused; /* ByteLevel on the whole text, or token by token */
        } else if (strcmp(ty, "ByteFallback") == 0 && !fused) {
            t->dec_bytes = 1;
        } else if (strcmp(ty, "Fuse") == 0) {
            fused = 1;
        } else if (strcmp(ty, "Replace") == 0 && cJSON_IsString(str) &&
                   strcmp(str->valuestring, "\u2581") == 0 && cJSON_IsString(content) &&
                   strcmp(content->valuestring, " ") == 0 && !t->dec_bytelevel) {
            /* after ByteFallback or Fuse it also sees the text of byte tokens */
            t->dec_replace = t->dec_bytes || fused ? REPLACE_TEXT : REPLACE_TOKENS;
        } else if (strcmp(ty, "Strip") == 0 && cJSON_IsString(content) &&
                   strcmp(content->valuestring, " ") == 0 && cJSON_IsNumber(start) &&
                   start->valuedouble >= 0 && start->valuedouble <= 64 && cJSON_IsNumber(stop) &&
                   stop->valuedouble == 0 && fused) {
            t->dec_strip = (int)start->valuedouble;
            stripped = 1;
        } else {
            return sl_errorf(err,
                             "%s: %s.type \"%s\" is not supported here (ByteLevel, or a Sequence "
                             "of ByteFallback, Fuse, Replace(\"\u2581\", \" \"), ByteLevel and "
                             "Strip(\" \", n, 0) after Fuse)",
                             path, where, ty);
        }
    }
    return 0;
}

/* sl_tokjson_special_fn: the ids of special token `name` from special_tokens[name].ids, else
 * the vocabulary, appended before (after = 0) or after the sequence. */
static int template_special(void *ctx, const cJSON *specials, const char *name, int after,
                            sl_error_t *err)
{
    sl_bpe_t *t = ctx;
    int32_t *ids = after ? t->post : t->pre;
    int *n = after ? &t->n_post : &t->n_pre;
    const cJSON *st = specials ? cJSON_GetObjectItemCaseSensitive(specials, name) : NULL;
    const cJSON *arr = st ? cJSON_GetObjectItemCaseSensitive(st, "ids") : NULL;
    int32_t one[1] = {-1}; /* read only when set (gcc -O1 cannot tell) */
    int n_one = 0;
    if (!cJSON_IsArray(arr)) {
        one[0] = sl_bpe_token_to_id(t, name, strlen(name));
        if (one[0] < 0)
            return sl_errorf(err,
                             "%s: post_processor: special token \"%s\" is not in the "
                             "vocabulary",
                             t->source, name);
        n_one = 1;
    }
    const cJSON *e = cJSON_IsArray(arr) ? arr->child : NULL;
    for (int k = 0; e || k < n_one; k++) {
        int32_t id;
        if (e) {
            if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= t->n_vocab)
                return sl_errorf(err, "%s: post_processor.special_tokens[\"%s\"].ids: bad id",
                                 t->source, name);
            id = (int32_t)e->valuedouble;
            e = e->next;
        } else {
            id = one[k];
        }
        if (*n >= MAX_SPECIAL)
            return sl_errorf(err, "%s: post_processor: more than %d special tokens", t->source,
                             MAX_SPECIAL);
        ids[(*n)++] = id;
        if (!e && k + 1 >= n_one)
            break;
    }
    return 0;
}

static int load_post(sl_bpe_t *t, const cJSON *pp, const char *where, sl_error_t *err)
{
    if (!pp || cJSON_IsNull(pp))
        return 0;
    const char *ty = type_of(pp);
    if (strcmp(ty, "ByteLevel") == 0) /* offsets only */
        return 0;
    if (strcmp(ty, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(pp, "processors");
        const cJSON *p;
        int i = 0;
        cJSON_ArrayForEach(p, list)
        {
            char w[80];
            snprintf(w, sizeof w, "%s.processors[%d]", where, i++);
            if (load_post(t, p, w, err))
                return -1;
        }
        return 0;
    }
    if (strcmp(ty, "TemplateProcessing") != 0)
        return sl_errorf(err,
                         "%s: %s.type \"%s\" is not supported (TemplateProcessing, ByteLevel, "
                         "Sequence or null)",
                         t->source, where, ty);
    return sl_tokjson_template(pp, t->source, where, template_special, t, err);
}

static int load_json(sl_bpe_t **out, const cJSON *root, const char *path, sl_error_t *err)
{
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model))
        return sl_errorf(err, "%s: no \"model\" object", path);
    const char *mt = type_of(model);
    if (strcmp(mt, "BPE") != 0)
        return sl_errorf(err, "%s: model.type is \"%s\"; only BPE is supported", path, mt);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsObject(vocab) || !vocab->child)
        return sl_errorf(err, "%s: model.vocab is not a non-empty object", path);
    if (!cJSON_IsArray(merges))
        return sl_errorf(err, "%s: model.merges is not an array", path);
    int byte_fallback = 0;
    if (sl_tokjson_get_bool(model, "byte_fallback", 0, &byte_fallback, path, "model", err))
        return -1;
    static const char *nulls[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int k = 0; k < 2; k++) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(model, nulls[k]);
        if (x && !cJSON_IsNull(x) && !(cJSON_IsString(x) && !*x->valuestring))
            return sl_errorf(err, "%s: model.%s is not supported", path, nulls[k]);
    }
    const cJSON *drop = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (drop && !cJSON_IsNull(drop) && !(cJSON_IsNumber(drop) && drop->valuedouble == 0))
        return sl_errorf(err, "%s: model.dropout is not supported", path);
    int prepend, replace;
    if (load_normalizer(path, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), &prepend,
                        &replace, err))
        return -1;

    /* ids: the vocabulary's and the added tokens' */
    int max_id;
    const char *max_key = "";
    if (sl_tokjson_vocab_max_id(vocab, path, &max_id, &max_key, err))
        return -1;
    char max_where[80];
    snprintf(max_where, sizeof max_where, "model.vocab[\"%.40s\"]", max_key);
    const cJSON *e;
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (added && !cJSON_IsNull(added) && !cJSON_IsArray(added))
        return sl_errorf(err, "%s: added_tokens is not an array", path);
    int ai = 0;
    cJSON_ArrayForEach(e, added)
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (!cJSON_IsNumber(id) || !cJSON_IsString(content) || !*content->valuestring ||
            id->valuedouble < 0 || id->valuedouble > 1e8)
            return sl_errorf(err, "%s: added_tokens[%d]: needs \"id\" and non-empty \"content\"",
                             path, ai);
        if (sl_tokjson_added_flags(e, ai, content->valuestring, path, err))
            return -1;
        if ((int)id->valuedouble > max_id) {
            max_id = (int)id->valuedouble;
            snprintf(max_where, sizeof max_where, "added_tokens[%d]", ai);
        }
        ai++;
    }
    if (sl_tokjson_check_id_span(max_id, cJSON_GetArraySize(vocab) + ai, max_where, path, err))
        return -1;
    sl_bpe_t *t = *out = bpe_new(path, max_id + 1);
    t->byte_fallback = byte_fallback;
    uint8_t *in_model = sl_xcalloc((size_t)t->n_vocab, 1);
    cJSON_ArrayForEach(e, vocab)
    {
        int id = (int)e->valuedouble;
        if (t->tok[id]) {
            free(in_model);
            return sl_errorf(err, "%s: model.vocab: id %d is given twice (\"%s\", \"%s\")", path,
                             id, t->tok[id], e->string);
        }
        set_token(t, id, e->string, strlen(e->string));
        t->type[id] = SL_BPE_NORMAL;
        in_model[id] = 1;
    }
    cJSON_ArrayForEach(e, added)
    {
        int id = (int)cJSON_GetObjectItemCaseSensitive(e, "id")->valuedouble;
        const char *content = cJSON_GetObjectItemCaseSensitive(e, "content")->valuestring;
        int special = 0;
        if (sl_tokjson_get_bool(e, "special", 0, &special, path, "added_tokens[]", err)) {
            free(in_model);
            return -1;
        }
        if (t->tok[id] && strcmp(t->tok[id], content) != 0 && !in_model[id]) {
            free(in_model);
            return sl_errorf(err, "%s: added_tokens: id %d is given twice", path, id);
        }
        set_token(t, id, content, strlen(content));
        t->type[id] = special ? SL_BPE_CONTROL : SL_BPE_USER_DEFINED;
    }
    build_vocab_table(t, in_model);
    free(in_model);

    int rc;
    if (sl_tokjson_get_bool(model, "fuse_unk", 0, &t->fuse_unk, path, "model", err) ||
        sl_tokjson_get_bool(model, "ignore_merges", 0, &t->ignore_merges, path, "model", err))
        return -1;
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    if (cJSON_IsString(unk)) {
        t->unk_id = sl_bpe_token_to_id(t, unk->valuestring, strlen(unk->valuestring));
        if (t->unk_id < 0)
            return sl_errorf(err, "%s: model.unk_token \"%s\" is not in the vocabulary", path,
                             unk->valuestring);
    }
    pairs_init(&t->pairs, cJSON_GetArraySize(merges));
    int j = 0;
    cJSON_ArrayForEach(e, merges)
    {
        char where[64];
        snprintf(where, sizeof where, "model.merges[%d]", j);
        if (cJSON_IsString(e)) {
            rc = add_merge_str(t, e->valuestring, strlen(e->valuestring), j, where, err);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
                   cJSON_IsString(e->child->next)) {
            const char *a = e->child->valuestring, *b = e->child->next->valuestring;
            rc = add_merge(t, a, strlen(a), b, strlen(b), j, where, err);
        } else {
            rc = sl_errorf(err, "%s: %s is neither \"a b\" nor [\"a\", \"b\"]", path, where);
        }
        if (rc)
            return -1;
        j++;
    }
    if (build_added(t, err) ||
        load_pretok(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), prepend, replace,
                    err) ||
        load_decoder(t, cJSON_GetObjectItemCaseSensitive(root, "decoder"), err) ||
        load_post(t, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), "post_processor",
                  err))
        return -1;
    /* the decoder must undo what the pre-tokenizer made of the text */
    if (t->spm == t->dec_bytelevel)
        return sl_errorf(err, "%s: decoder: %s", path,
                         t->spm ? "ByteLevel does not go with a SentencePiece-style (Metaspace) "
                                  "tokenizer"
                                : "byte-level BPE needs a ByteLevel decoder");
    /* BOS: the template's first token before the sequence; EOS: its first one after */
    t->bos_id = t->n_pre ? t->pre[0] : -1;
    t->eos_id = t->n_post ? t->post[0] : -1;
    return 0;
}

sl_bpe_t *sl_bpe_load_json(const char *path, sl_error_t *err)
{
    cJSON *root = sl_tokjson_load(path, err);
    if (!root)
        return NULL;
    sl_bpe_t *t = NULL;
    int rc = load_json(&t, root, path, err);
    cJSON_Delete(root);
    if (rc) {
        sl_bpe_free(t);
        return NULL;
    }
    return t;
}

void sl_bpe_free(sl_bpe_t *t)
{
    if (!t)
        return;
    for (int i = 0; t->tok && i < t->n_vocab; i++)
        free(t->tok[i]);
    free(t->tok);
    free(t->tok_len);
    free(t->type);
    free(t->vslot);
    free(t->vhash);
    free(t->pairs.slot);
    for (int i = 0; i < t->n_steps; i++)
        pcre2_code_free(t->steps[i].re);
    free(t->added);
    free(t->source);
    free(t);
}

int sl_bpe_vocab_size(const sl_bpe_t *t) { return t->n_vocab; }
int32_t sl_bpe_bos_id(const sl_bpe_t *t) { return t->bos_id; }
int32_t sl_bpe_eos_id(const sl_bpe_t *t) { return t->eos_id; }

const char *sl_bpe_id_to_token(const sl_bpe_t *t, int32_t id)
{
    return (id >= 0 && id < t->n_vocab) ? t->tok[id] : NULL;
}

int32_t sl_bpe_token_to_id(const sl_bpe_t *t, const char *token, size_t len)
{
    /* added tokens first, as the library looks them up */
    if (len > 0 && t->added)
        for (int k = t->first[(unsigned char)token[0]]; k < t->first[(unsigned char)token[0] + 1];
             k++)
            if ((size_t)t->added[k].len == len && memcmp(t->added[k].s, token, len) == 0)
                return t->added[k].id;
    return t->vslot ? vocab_find(t, token, len) : -1;
}

/* ---- encoding -------------------------------------------------------------------------------- */

typedef struct {
    const sl_bpe_t *t;
    int32_t *ids;
    int cap, count;
    pcre2_match_data *md;
    char *scratch; /* a piece with its " " prefix; a byte-level word */
    size_t scratch_cap;
    /* merge work, sized for the longest piece so far */
    int32_t *sym, *rank;
    int *prev, *next;
    uint64_t *heap;
    int work_cap;
    struct cache_entry *cache;
    int at_start; /* the segment being split starts the text (Metaspace "first") */
} enc_t;

static inline void emit(enc_t *e, int32_t id)
{
    if (e->count < e->cap)
        e->ids[e->count] = id;
    e->count++;
}

static void reserve_scratch(enc_t *e, size_t n)
{
    if (n > e->scratch_cap) {
        e->scratch_cap = n * 2;
        e->scratch = sl_xrealloc(e->scratch, e->scratch_cap);
    }
}

static void reserve_work(enc_t *e, int n)
{
    if (n <= e->work_cap)
        return;
    int cap = n * 2;
    e->sym = sl_xrealloc(e->sym, (size_t)cap * sizeof(int32_t));
    e->rank = sl_xrealloc(e->rank, (size_t)cap * sizeof(int32_t));
    e->prev = sl_xrealloc(e->prev, (size_t)cap * sizeof(int));
    e->next = sl_xrealloc(e->next, (size_t)cap * sizeof(int));
    e->heap = sl_xrealloc(e->heap, (size_t)cap * 3 * sizeof(uint64_t));
    e->work_cap = cap;
}

static void heap_push(uint64_t *h, int *n, uint64_t v)
{
    int i = (*n)++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (h[p] <= v)
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = v;
}

static uint64_t heap_pop(uint64_t *h, int *n)
{
    uint64_t top = h[0], v = h[--(*n)];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && h[c + 1] < h[c])
            c++;
        if (v <= h[c])
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = v;
    return top;
}

/* ---- the per-thread piece cache -------------------------------------------------------------- */

#define CACHE_BITS 12
#define CACHE_KEY 22 /* longest piece cached, bytes */
#define CACHE_IDS 8  /* most ids of a cached piece */

typedef struct cache_entry {
    uint32_t serial, hash;
    uint8_t len, n_ids;
    char key[CACHE_KEY];
    int32_t ids[CACHE_IDS];
} cache_entry_t; /* 64 bytes */

static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;

static void cache_make_key(void)
{
    if (pthread_key_create(&cache_key, free)) /* freed when its thread exits */
        SL_FATAL("pthread_key_create failed");
}

static cache_entry_t *thread_cache(void)
{
    pthread_once(&cache_once, cache_make_key);
    cache_entry_t *c = pthread_getspecific(cache_key);
    if (!c) {
        c = sl_xcalloc((size_t)1 << CACHE_BITS, sizeof(cache_entry_t));
        if (pthread_setspecific(cache_key, c))
            SL_FATAL("pthread_setspecific failed");
    }
    return c;
}

static void merge_piece(enc_t *e, const unsigned char *b, int n);

/* BPE on one piece of raw bytes: byte-level symbols, merged by rank, emitted. */
static void bpe_piece(enc_t *e, const unsigned char *b, int n)
{
    const sl_bpe_t *t = e->t;
    if (n == 1 && t->byte_id[b[0]] >= 0) {
        emit(e, t->byte_id[b[0]]);
        return;
    }
    if (n > CACHE_KEY) {
        merge_piece(e, b, n);
        return;
    }
    uint32_t h = sl_hash32((const char *)b, (size_t)n);
    cache_entry_t *c = &e->cache[(h ^ (t->serial * 0x9E3779B1u)) & ((1u << CACHE_BITS) - 1)];
    if (c->serial == t->serial && c->hash == h && c->len == n &&
        memcmp(c->key, b, (size_t)n) == 0) {
        for (int i = 0; i < c->n_ids; i++)
            emit(e, c->ids[i]);
        return;
    }
    int before = e->count;
    merge_piece(e, b, n);
    int k = e->count - before;
    if (k <= CACHE_IDS && e->count <= e->cap) { /* all of them were stored */
        c->serial = t->serial;
        c->hash = h;
        c->len = (uint8_t)n;
        c->n_ids = (uint8_t)k;
        memcpy(c->key, b, (size_t)n);
        memcpy(c->ids, e->ids + before, (size_t)k * sizeof(int32_t));
    }
}

/* The initial symbols of piece b[0..n) into s (room for 2n): one per byte-level character, or
 * per UTF-8 character for SentencePiece-style BPE. A character missing from the vocabulary
 * becomes the <0xXX> tokens of its UTF-8 bytes (byte_fallback, when all exist), else unk, else
 * nothing. As in the library, an unk waits until the next character found in the vocabulary
 * (or the end): runs of unknown characters share one unk with fuse_unk, and byte tokens that
 * come meanwhile go before it. Returns the count. */
static int initial_symbols(const sl_bpe_t *t, const unsigned char *b, int n, int32_t *s)
{
    int m = 0, pending_unk = 0;
    for (int i = 0; i < n;) {
        char u[2];
        const char *c;
        int len, step;
        int32_t id;
        if (t->spm) {
            step = 1;
            while (i + step < n && (b[i + step] & 0xC0) == 0x80)
                step++;
            c = (const char *)b + i;
            len = step;
            id = len == 1 ? t->byte_id[b[i]] : vocab_find(t, c, (size_t)len);
        } else {
            step = 1;
            len = put_cp(u, byte_to_cp[b[i]]);
            c = u;
            id = t->byte_id[b[i]];
        }
        i += step;
        if (id >= 0) {
            if (pending_unk)
                s[m++] = t->unk_id;
            pending_unk = 0;
            s[m++] = id;
            continue;
        }
        int fallback = t->byte_fallback;
        for (int k = 0; fallback && k < len; k++)
            fallback = t->fb_id[(unsigned char)c[k]] >= 0;
        if (fallback) {
            for (int k = 0; k < len; k++)
                s[m++] = t->fb_id[(unsigned char)c[k]];
        } else if (t->unk_id >= 0) {
            if (pending_unk && !t->fuse_unk)
                s[m++] = t->unk_id;
            pending_unk = 1;
        }
    }
    if (pending_unk)
        s[m++] = t->unk_id;
    return m;
}

static void merge_piece(enc_t *e, const unsigned char *b, int n)
{
    const sl_bpe_t *t = e->t;
    if (t->ignore_merges) {
        int32_t id;
        if (t->spm) {
            id = vocab_find(t, (const char *)b, (size_t)n);
        } else {
            reserve_scratch(e, (size_t)n * 2);
            int m = 0;
            for (int i = 0; i < n; i++)
                m += put_cp(e->scratch + m, byte_to_cp[b[i]]);
            id = vocab_find(t, e->scratch, (size_t)m);
        }
        if (id >= 0) {
            emit(e, id);
            return;
        }
    }
    reserve_work(e, 2 * n + 1);
    int32_t *s = e->sym;
    int m = initial_symbols(t, b, n, s);
    if (m <= LINEAR_MAX) {
        /* rank[i] is the rank of (s[i], s[i + 1]) */
        int32_t *r = e->rank, nid[LINEAR_MAX];
        for (int i = 0; i + 1 < m; i++)
            r[i] = pair_rank(&t->pairs, s[i], s[i + 1], &nid[i]);
        while (m > 1) {
            int best = 0;
            for (int i = 1; i + 1 < m; i++)
                if (r[i] < r[best])
                    best = i;
            if (r[best] == INT32_MAX)
                break;
            s[best] = nid[best];
            m--;
            memmove(s + best + 1, s + best + 2, (size_t)(m - best - 1) * sizeof(int32_t));
            memmove(r + best + 1, r + best + 2,
                    (size_t)(m > best + 2 ? m - best - 2 : 0) * sizeof(int32_t));
            memmove(nid + best + 1, nid + best + 2,
                    (size_t)(m > best + 2 ? m - best - 2 : 0) * sizeof(int32_t));
            if (best > 0)
                r[best - 1] = pair_rank(&t->pairs, s[best - 1], s[best], &nid[best - 1]);
            if (best + 1 < m)
                r[best] = pair_rank(&t->pairs, s[best], s[best + 1], &nid[best]);
        }
        for (int i = 0; i < m; i++)
            emit(e, s[i]);
        return;
    }
    /* long piece: linked symbols and a heap of (rank, position); stale entries are skipped */
    int *prv = e->prev, *nxt = e->next, hn = 0;
    uint64_t *h = e->heap;
    int32_t id = -1; /* set by pair_rank whenever it returns a rank (gcc -O1 cannot tell) */
    for (int i = 0; i < m; i++) {
        prv[i] = i - 1;
        nxt[i] = i + 1 < m ? i + 1 : -1;
    }
    for (int i = 0; i + 1 < m; i++) {
        int32_t rk = pair_rank(&t->pairs, s[i], s[i + 1], &id);
        if (rk != INT32_MAX)
            heap_push(h, &hn, ((uint64_t)(uint32_t)rk << 32) | (uint32_t)i);
    }
    while (hn > 0) {
        uint64_t top = heap_pop(h, &hn);
        int pos = (int)(uint32_t)top, rk = (int)(top >> 32);
        if (s[pos] < 0 || nxt[pos] < 0)
            continue;
        int q = nxt[pos];
        if (pair_rank(&t->pairs, s[pos], s[q], &id) != rk)
            continue;
        s[pos] = id;
        s[q] = -1;
        nxt[pos] = nxt[q];
        if (nxt[q] >= 0)
            prv[nxt[q]] = pos;
        int32_t id2;
        if (prv[pos] >= 0) {
            int32_t r2 = pair_rank(&t->pairs, s[prv[pos]], s[pos], &id2);
            if (r2 != INT32_MAX)
                heap_push(h, &hn, ((uint64_t)(uint32_t)r2 << 32) | (uint32_t)prv[pos]);
        }
        if (nxt[pos] >= 0) {
            int32_t r2 = pair_rank(&t->pairs, s[pos], s[nxt[pos]], &id2);
            if (r2 != INT32_MAX)
                heap_push(h, &hn, ((uint64_t)(uint32_t)r2 << 32) | (uint32_t)pos);
        }
    }
    for (int i = 0; i >= 0; i = nxt[i])
        emit(e, s[i]);
}

static int is_numeric_at(const unsigned char *s, size_t n, size_t i, int *len)
{
    if (s[i] < 0x80) {
        *len = 1;
        return s[i] >= '0' && s[i] <= '9';
    }
    utf8proc_int32_t c;
    utf8proc_ssize_t r = utf8proc_iterate(s + i, (utf8proc_ssize_t)(n - i), &c);
    *len = r > 0 ? (int)r : 1;
    int k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

static void pretok(enc_t *e, int step, const char *s, size_t n);

/* Isolated split by a regex: every match and every gap between matches is a piece. */
static void split_regex(enc_t *e, const pcre2_code *re, int step, const char *s, size_t n, int bpe)
{
    size_t at = 0, gap = 0;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
    while (at < n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, at, PCRE2_NO_UTF_CHECK, e->md, NULL);
        if (rc < 0)
            break;
        size_t ms = ov[0], me = ov[1];
        if (me == ms) { /* an empty match splits nothing: step over one character */
            at = ms + 1;
            while (at < n && ((unsigned char)s[at] & 0xC0) == 0x80)
                at++;
            continue;
        }
        if (ms > gap)
            bpe ? bpe_piece(e, (const unsigned char *)s + gap, (int)(ms - gap))
                : pretok(e, step + 1, s + gap, ms - gap);
        bpe ? bpe_piece(e, (const unsigned char *)s + ms, (int)(me - ms))
            : pretok(e, step + 1, s + ms, me - ms);
        gap = at = me;
    }
    if (n > gap)
        bpe ? bpe_piece(e, (const unsigned char *)s + gap, (int)(n - gap))
            : pretok(e, step + 1, s + gap, n - gap);
}

/* Runs pre-tokenizer step `step` (and those after it) over the piece s[0..n). */
static void pretok(enc_t *e, int step, const char *s, size_t n)
{
    const step_t *st = &e->t->steps[step];
    if (n == 0)
        return;
    switch (st->kind) {
    case STEP_SPLIT: split_regex(e, st->re, step, s, n, 0); return;
    case STEP_DIGITS: {
        const unsigned char *u = (const unsigned char *)s;
        size_t piece = 0, i = 0;
        int in_digits = 0;
        while (i < n) {
            int len, d = is_numeric_at(u, n, i, &len);
            /* a piece ends where digits start or stop, and between single digits */
            if (i > piece && (d != in_digits || (d && st->individual))) {
                pretok(e, step + 1, s + piece, i - piece);
                piece = i;
            }
            in_digits = d;
            i += (size_t)len;
        }
        pretok(e, step + 1, s + piece, n - piece);
        return;
    }
    case STEP_SPM: {
        /* spaces become "▁" (3 bytes), and one goes in front as the step says */
        reserve_scratch(e, 3 * n + 3);
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
            if (s[i] == ' ') {
                memcpy(e->scratch + o, META, 3);
                o += 3;
            } else {
                e->scratch[o++] = s[i];
            }
        }
        int starts_meta = o >= 3 && memcmp(e->scratch, META, 3) == 0;
        if (st->prefix == PREFIX_EVERY || (st->prefix == PREFIX_ALWAYS && !starts_meta) ||
            (st->prefix == PREFIX_FIRST && !starts_meta && e->at_start)) {
            memmove(e->scratch + 3, e->scratch, o);
            memcpy(e->scratch, META, 3);
            o += 3;
        }
        /* (merging SentencePiece-style symbols never writes scratch) */
        const unsigned char *u = (const unsigned char *)e->scratch;
        size_t from = 0;
        for (size_t j = 1; st->split && j + 3 <= o; j++)
            if (memcmp(u + j, META, 3) == 0) {
                bpe_piece(e, u + from, (int)(j - from));
                from = j;
                j += 2;
            }
        bpe_piece(e, u + from, (int)(o - from));
        return;
    }
    default: /* STEP_BYTELEVEL */
        if (st->add_prefix_space && s[0] != ' ') {
            /* a copy with the space in front: the regex must see it as part of its subject */
            char *p = sl_xmalloc(n + 1);
            p[0] = ' ';
            memcpy(p + 1, s, n);
            if (st->re)
                split_regex(e, st->re, step, p, n + 1, 1);
            else
                bpe_piece(e, (const unsigned char *)p, (int)n + 1);
            free(p);
            return;
        }
        if (st->re)
            split_regex(e, st->re, step, s, n, 1);
        else
            bpe_piece(e, (const unsigned char *)s, (int)n);
        return;
    }
}

/* The longest added token starting at text[i], or -1. */
static int match_added(const sl_bpe_t *t, const char *text, size_t len, size_t i)
{
    unsigned char b = (unsigned char)text[i];
    int best = -1, best_len = 0;
    for (int k = t->first[b]; k < t->first[b + 1]; k++) {
        const added_t *a = &t->added[k];
        if (a->len > best_len && (size_t)a->len <= len - i &&
            memcmp(a->s, text + i, (size_t)a->len) == 0) {
            best = k;
            best_len = a->len;
        }
    }
    return best;
}

int sl_bpe_encode(const sl_bpe_t *t, const char *text, size_t len, int add_special, int32_t *ids,
                  int cap, int *n_ids, sl_error_t *err)
{
    if (n_ids)
        *n_ids = 0;
    if (!t || !n_ids || cap < 0 || (cap > 0 && !ids) || (len > 0 && !text)) {
        sl_errorf(err, "bpe: bad arguments");
        return SL_BPE_ERROR;
    }
    if (len == 0) {
        sl_errorf(err, "empty text");
        return SL_BPE_EMPTY;
    }
    if (len > (size_t)1 << 30) {
        sl_errorf(err, "text of %zu bytes is too long", len);
        return SL_BPE_ERROR;
    }
    long bad = utf8_invalid_at((const unsigned char *)text, len);
    if (bad >= 0) {
        sl_errorf(err, "invalid UTF-8 at byte %ld (0x%02x)", bad, (unsigned char)text[bad]);
        return SL_BPE_BAD_UTF8;
    }
    enc_t e = {0};
    e.t = t;
    e.ids = ids;
    e.cap = cap;
    e.cache = thread_cache();
    e.md = pcre2_match_data_create(1, NULL);
    if (!e.md)
        SL_FATAL("pcre2_match_data_create: out of memory");
    if (add_special)
        for (int i = 0; i < t->n_pre; i++)
            emit(&e, t->pre[i]);
    size_t seg = 0;
    if (t->n_added > 0) {
        for (size_t i = 0; i < len;) {
            int k = t->first[(unsigned char)text[i]] < t->first[(unsigned char)text[i] + 1]
                        ? match_added(t, text, len, i)
                        : -1;
            if (k < 0) {
                i++;
                continue;
            }
            e.at_start = seg == 0;
            pretok(&e, 0, text + seg, i - seg);
            emit(&e, t->added[k].id);
            i += (size_t)t->added[k].len;
            seg = i;
        }
    }
    e.at_start = seg == 0;
    pretok(&e, 0, text + seg, len - seg);
    if (add_special)
        for (int i = 0; i < t->n_post; i++)
            emit(&e, t->post[i]);
    pcre2_match_data_free(e.md);
    free(e.scratch);
    free(e.sym);
    free(e.rank);
    free(e.prev);
    free(e.next);
    free(e.heap);
    *n_ids = e.count;
    if (e.count > cap) {
        sl_errorf(err, "bpe: %d ids do not fit in %d", e.count, cap);
        return SL_BPE_ERROR;
    }
    return SL_BPE_OK;
}

/* ---- decoding -------------------------------------------------------------------------------- */

/* Appends bytes to buf within cap (keeping room for the NUL); returns the new full length. */
static size_t put(char *buf, size_t cap, size_t at, const char *s, size_t n)
{
    if (cap > 0 && at < cap - 1) {
        size_t k = n < cap - 1 - at ? n : cap - 1 - at;
        memcpy(buf + at, s, k);
    }
    return at + n;
}

typedef struct {
    unsigned char *p;
    size_t n, cap;
} bytes_t;

static void bytes_add(bytes_t *b, const void *s, size_t n)
{
    if (n == 0) /* an empty piece (e.g. a token that decodes to nothing) on a still-empty
                   buffer: b->p is NULL, and NULL + 0 is undefined behaviour */
        return;
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = sl_xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

/* The byte of a token spelled "<0xXX>" (the ByteFallback decoder's test), else -1. */
static int byte_token(const char *s, int len)
{
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return -1;
    int v = 0;
    for (int k = 3; k < 5; k++) {
        char c = s[k];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* ByteFallback: a run of byte tokens becomes its bytes when they are valid UTF-8, else one
 * U+FFFD per byte. */
static void flush_run(bytes_t *out, bytes_t *run)
{
    static const char fffd[3] = {(char)0xEF, (char)0xBF, (char)0xBD};
    if (utf8_invalid_at(run->p, run->n) < 0)
        bytes_add(out, run->p, run->n);
    else
        for (size_t k = 0; k < run->n; k++)
            bytes_add(out, fffd, 3);
    run->n = 0;
}

/* Appends s[0..len), with every "▁" turned into a space when replace is set. */
static void add_replaced(bytes_t *out, const char *s, size_t len, int replace)
{
    size_t from = 0;
    for (size_t j = 0; replace && j + 3 <= len; j++)
        if (memcmp(s + j, META, 3) == 0) {
            bytes_add(out, s + from, j - from);
            bytes_add(out, " ", 1);
            from = j + 3;
            j += 2;
        }
    bytes_add(out, s + from, len - from);
}

/* The ByteLevel decoder on one unit (a token, or the fused text) in place: when all its
 * characters are in the byte-level alphabet they become their bytes, otherwise the unit stays
 * as it is. Returns the new length (never longer). */
static size_t bytelevel_unit(unsigned char *s, size_t len)
{
    for (int pass = 0; pass < 2; pass++) { /* check, then write */
        size_t o = 0, j = 0;
        while (j < len) {
            int32_t c;
            if (s[j] < 0x80) {
                c = s[j++];
            } else if ((s[j] & 0xE0) == 0xC0 && j + 1 < len && (s[j + 1] & 0xC0) == 0x80) {
                c = ((s[j] & 0x1F) << 6) | (s[j + 1] & 0x3F);
                j += 2;
            } else {
                return len;
            }
            if (c >= 324 || cp_to_byte[c] < 0)
                return len;
            if (pass)
                s[o++] = (unsigned char)cp_to_byte[c];
        }
        if (pass)
            return o;
    }
    return len;
}

size_t sl_bpe_decode(const sl_bpe_t *t, const int32_t *ids, int n, int skip_special, char *buf,
                     size_t cap)
{
    /* 1. the decoder's steps in the library's order: ByteFallback (runs of <0xXX> tokens),
     *    Replace("▁", " ") per token or on the fused text, ByteLevel per token or on the fused
     *    text, then Strip of leading spaces */
    bytes_t text = {0}, run = {0};
    size_t *unit = sl_xmalloc(((size_t)n + 2) * sizeof(size_t)); /* unit starts in text */
    int n_units = 0;
    for (int i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_vocab || !t->tok[id])
            continue;
        if (skip_special && t->type[id] == SL_BPE_CONTROL)
            continue;
        int byte = t->dec_bytes ? byte_token(t->tok[id], t->tok_len[id]) : -1;
        if (byte >= 0) {
            unsigned char c = (unsigned char)byte;
            if (run.n == 0)
                unit[n_units++] = text.n;
            bytes_add(&run, &c, 1);
            continue;
        }
        if (run.n)
            flush_run(&text, &run);
        unit[n_units++] = text.n;
        add_replaced(&text, t->tok[id], (size_t)t->tok_len[id], t->dec_replace == REPLACE_TOKENS);
    }
    if (run.n)
        flush_run(&text, &run);
    if (t->dec_replace == REPLACE_TEXT && text.n) {
        bytes_t r = {0};
        add_replaced(&r, (const char *)text.p, text.n, 1);
        free(text.p);
        text = r;
        n_units = 1; /* (a later ByteLevel sees the fused text: load_decoder checks it) */
        unit[0] = 0;
    }
    size_t nb = text.n;
    unsigned char *bytes = text.p ? text.p : (unsigned char *)"";
    if (t->dec_bytelevel) {
        if (t->dec_fuse)
            n_units = text.n ? 1 : 0;
        unit[n_units] = text.n;
        nb = 0;
        for (int u = 0; u < n_units; u++) {
            size_t len = bytelevel_unit(bytes + unit[u], unit[u + 1] - unit[u]);
            memmove(bytes + nb, bytes + unit[u], len);
            nb += len;
        }
    }
    size_t i = 0;
    for (int k = 0; k < t->dec_strip && i < nb && bytes[i] == ' '; k++)
        i++;
    /* 2. lossy UTF-8: each maximal invalid subsequence becomes one U+FFFD */
    static const char fffd[3] = {(char)0xEF, (char)0xBF, (char)0xBD};
    size_t out = 0;
    while (i < nb) {
        unsigned c = bytes[i];
        if (c < 0x80) {
            size_t j = i;
            while (j < nb && bytes[j] < 0x80)
                j++;
            out = put(buf, cap, out, (const char *)bytes + i, j - i);
            i = j;
            continue;
        }
        int need = 0;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            need = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            lo = c == 0xE0 ? 0xA0 : 0x80;
            hi = c == 0xED ? 0x9F : 0xBF;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            lo = c == 0xF0 ? 0x90 : 0x80;
            hi = c == 0xF4 ? 0x8F : 0xBF;
        }
        size_t k = 1; /* bytes of a valid prefix consumed */
        int ok = need > 0;
        for (int q = 1; ok && q <= need; q++) {
            unsigned lo_q = q == 1 ? lo : 0x80, hi_q = q == 1 ? hi : 0xBF;
            if (i + (size_t)q >= nb || bytes[i + (size_t)q] < lo_q || bytes[i + (size_t)q] > hi_q)
                ok = 0;
            else
                k++;
        }
        if (ok)
            out = put(buf, cap, out, (const char *)bytes + i, k);
        else
            out = put(buf, cap, out, fffd, 3);
        i += k;
    }
    if (cap > 0)
        buf[out < cap - 1 ? out : cap - 1] = 0;
    free(text.p);
    free(run.p);
    free(unit);
    return out;
}
