/*
 * test_bpe.c — the byte-level BPE tokenizer against Hugging Face's.
 *
 * 1. SmolLM2: the real GGUF (installed by scripts/install-models.sh; its path is read from
 *    $SL_MODELS_DIR/smollm2.path) through sl_gguf_open + sl_bpe_load_gguf. The ids of every text
 *    of tests/reference/goldens/smollm2_tokens.h5 must equal transformers' (add_special_tokens
 *    False), and the decodings of its id sequences (with and without special tokens) must equal
 *    transformers' text byte for byte. transformers prepends BOS with add_special_tokens although
 *    the file says tokenizer.ggml.add_bos_token = false; the loader follows the file, and the
 *    same vocabulary built with add_bos = 1 must reproduce transformers' ids_special exactly.
 * 2. Tiny tokenizers (tests/reference/bpe_tiny/<style>/tokenizer.json, one per pre-tokenizer
 *    style) against the `tokenizers` library's ids, with and without special tokens, and a few
 *    decodings; the same vocabularies as GGUF files (pre-tokenizer by llama.cpp's name) too.
 * 3. SentencePiece-style tokenizers (tests/reference/spm_tiny, made by make_spm_goldens.py from a
 *    SentencePiece BPE model with byte fallback): LLaMA 2's tokenizer.json layout (Prepend +
 *    Replace normalizer), Metaspace "first" with EOS and a non-special added token, the older
 *    Metaspace layout (add_prefix_space, split), the GGUF form (tokenizer.ggml.model "llama",
 *    merges from scores) against transformers' GGUF loader (also with add_space_prefix false,
 *    add_bos_token false and add_eos_token true: EOS after the text), and the tokenizer.json files
 *    transformers writes after loading a GGUF (that one and the byte-level tiny gpt2 GGUF: BPE
 *    with byte_fallback, decoder ByteFallback + Fuse + Replace + ByteLevel/Strip): ids with and
 *    without special tokens, decodings with and without special tokens, all exact.
 * 4. Statuses and messages: empty text, invalid UTF-8, a too-small cap, load errors naming the
 *    file and key (tokenizer.json and GGUF).
 * 5. Throughput on one core (printed): MB/s and tokens/s.
 * Fails (exit 1) when the model is not installed: run scripts/install-models.sh.
 */
#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "models/tokenizers/bpe.h"
#include "models/formats/gguf.h"
#include "sl_test.h"

/* CPU time of this thread: the rate of one core, whatever else the machine runs. */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- HDF5 helpers ---------------------------------------------------------------------------- */

typedef struct {
    int n;
    int32_t *flat, *len;
    long *off;
} seqs_t;

static int read_seqs(hid_t f, const char *ids, const char *lens, seqs_t *q)
{
    size_t nf = 0, nl = 0;
    memset(q, 0, sizeof *q);
    q->flat = sl_test_h5_read(f, ids, H5T_NATIVE_INT32, 4, &nf, NULL, NULL);
    q->len = sl_test_h5_read(f, lens, H5T_NATIVE_INT32, 4, &nl, NULL, NULL);
    if (!q->flat || !q->len) {
        fprintf(stderr, "FAIL: cannot read %s / %s\n", ids, lens);
        return -1;
    }
    q->n = (int)nl;
    q->off = malloc(sizeof(long) * (size_t)(nl + 1));
    q->off[0] = 0;
    for (size_t i = 0; i < nl; i++)
        q->off[i + 1] = q->off[i] + q->len[i];
    if (q->off[nl] != (long)nf) {
        fprintf(stderr, "FAIL: %s: lengths do not add up\n", ids);
        return -1;
    }
    return 0;
}

static void free_seqs(seqs_t *q)
{
    free(q->flat);
    free(q->len);
    free(q->off);
}

static void print_ids(const char *label, const int32_t *ids, int n)
{
    fprintf(stderr, "  %s (%d):", label, n);
    for (int i = 0; i < n && i < 60; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, n > 60 ? " ...\n" : "\n");
}

/* ---- comparisons ----------------------------------------------------------------------------- */

/* Encodes every text and compares with q; returns the number of mismatches (first one shown). */
static int compare_ids(const sl_bpe_t *t, const char *label, char **text, int n_text,
                       const seqs_t *q, int add_special, long *n_ids)
{
    int bad = 0, cap = 1 << 16;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
    *n_ids = 0;
    for (int i = 0; i < n_text && i < q->n; i++) {
        int n = 0;
        sl_error_t err = {{0}};
        int rc = sl_bpe_encode(t, text[i], strlen(text[i]), add_special, ids, cap, &n, &err);
        const int32_t *want = q->flat + q->off[i];
        int same = rc == SL_BPE_OK && n == q->len[i] &&
                   memcmp(ids, want, sizeof(int32_t) * (size_t)n) == 0;
        *n_ids += n;
        if (!same) {
            if (bad == 0) {
                fprintf(stderr, "%s: first mismatch: text %d \"%.200s\" (status %d %s)\n", label, i,
                        text[i], rc, rc ? err.msg : "");
                print_ids("expected", want, q->len[i]);
                print_ids("got     ", ids, rc == SL_BPE_OK ? n : 0);
            }
            bad++;
        }
    }
    free(ids);
    return bad;
}

static int compare_decode(const sl_bpe_t *t, const char *label, const seqs_t *q, char **want,
                          int n_want, int skip)
{
    int bad = 0;
    size_t cap = 1 << 20;
    char *buf = malloc(cap);
    for (int i = 0; i < q->n && i < n_want; i++) {
        size_t need = sl_bpe_decode(t, q->flat + q->off[i], q->len[i], skip, buf, cap);
        if (need != strlen(want[i]) || strcmp(buf, want[i]) != 0) {
            if (bad == 0)
                fprintf(stderr,
                        "%s: first decoding mismatch, sequence %d:\n  expected \"%s\"\n"
                        "  got      \"%s\"\n",
                        label, i, want[i], buf);
            bad++;
        }
    }
    free(buf);
    return bad;
}

/* ---- SmolLM2 --------------------------------------------------------------------------------- */

/* The GGUF vocabulary rebuilt through sl_bpe_from_vocab with BOS added. */
static sl_bpe_t *smollm2_with_bos(const sl_gguf_t *g, sl_error_t *err)
{
    const sl_gguf_kv_t *tk = sl_gguf_find(g, "tokenizer.ggml.tokens");
    const sl_gguf_kv_t *mg = sl_gguf_find(g, "tokenizer.ggml.merges");
    const sl_gguf_kv_t *ty = sl_gguf_find(g, "tokenizer.ggml.token_type");
    if (!tk || !mg || !ty)
        return NULL;
    int nt = (int)tk->n, nm = (int)mg->n;
    const char **toks = malloc(sizeof(char *) * (size_t)nt);
    const char **mgs = malloc(sizeof(char *) * (size_t)nm);
    size_t *tl = malloc(sizeof(size_t) * (size_t)nt), *ml = malloc(sizeof(size_t) * (size_t)nm);
    int32_t *types = malloc(sizeof(int32_t) * (size_t)nt);
    for (int i = 0; i < nt; i++) {
        sl_gguf_arr_str(tk, (uint64_t)i, &toks[i], &tl[i]);
        types[i] = (int32_t)sl_gguf_arr_int(ty, (uint64_t)i);
    }
    for (int i = 0; i < nm; i++)
        sl_gguf_arr_str(mg, (uint64_t)i, &mgs[i], &ml[i]);
    sl_bpe_t *t =
        sl_bpe_from_vocab(toks, tl, nt, mgs, ml, nm, types, "smollm", 1, 2, 1, "smollm2+bos", err);
    free(toks);
    free(mgs);
    free(tl);
    free(ml);
    free(types);
    return t;
}

static void throughput(const sl_bpe_t *t, char **text, int n, const char *label)
{
    int cap = 1 << 16;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
    size_t *lens = malloc(sizeof(size_t) * (size_t)n);
    double bytes = 0;
    for (int i = 0; i < n; i++)
        bytes += (double)(lens[i] = strlen(text[i]));
    long toks = 0;
    int reps = 0;
    double t0 = now_s(), dt;
    do {
        for (int i = 0; i < n; i++) {
            int k = 0;
            sl_bpe_encode(t, text[i], lens[i], 0, ids, cap, &k, NULL);
            toks += k;
        }
        reps++;
        dt = now_s() - t0;
    } while (dt < 1.0);
    printf("throughput, %s: %.1f MB/s, %.2f M tokens/s, %.0f rows/s (%d rows x %d, one core, CPU "
           "time)\n",
           label, bytes * reps / dt / 1e6, (double)toks / dt / 1e6, (double)n * reps / dt, n, reps);
    free(ids);
    free(lens);
}

static char **g_text; /* the corpus, shared with the tiny tokenizers' checks */
static int g_n_text;

static void test_smollm2(void)
{
    char path[4096], gpath[4096];
    if (sl_test_model_path("smollm2", "SmolLM2", path, sizeof path)) {
        sl_test_failed++;
        return;
    }
    sl_error_t err = {{0}};
    sl_gguf_t *g = sl_gguf_open(path, &err);
    CHECKF(g != NULL, "%s", err.msg);
    if (!g)
        return;
    sl_bpe_t *t = sl_bpe_load_gguf(g, &err);
    CHECKF(t != NULL, "%s", err.msg);
    sl_bpe_t *tb = smollm2_with_bos(g, &err);
    CHECKF(tb != NULL, "%s", err.msg);
    if (!t || !tb) {
        sl_bpe_free(t);
        sl_gguf_close(g);
        return;
    }
    CHECK(sl_bpe_vocab_size(t) == 49152);
    CHECK(sl_bpe_bos_id(t) == 1 && sl_bpe_eos_id(t) == 2);
    CHECK(sl_bpe_token_to_id(t, "<|im_start|>", 12) == 1);
    CHECK(sl_bpe_id_to_token(t, 2) && strcmp(sl_bpe_id_to_token(t, 2), "<|im_end|>") == 0);
    CHECK(sl_bpe_id_to_token(t, 49152) == NULL && sl_bpe_id_to_token(t, -1) == NULL);

    snprintf(gpath, sizeof gpath, "%s/tests/reference/goldens/smollm2_tokens.h5",
             sl_test_source_dir());
    hid_t f = H5Fopen(gpath, H5F_ACC_RDONLY, H5P_DEFAULT);
    CHECKF(f >= 0, "cannot open %s", gpath);
    if (f < 0)
        goto out;
    int nd = 0, nds = 0;
    g_text = sl_test_h5_strings(f, "text", &g_n_text);
    char **dec = sl_test_h5_strings(f, "decoded", &nd);
    char **dec_skip = sl_test_h5_strings(f, "decoded_skip", &nds);
    seqs_t ids, ids_sp, dids;
    if (!g_text || !dec || !dec_skip || read_seqs(f, "ids", "lengths", &ids) ||
        read_seqs(f, "ids_special", "lengths_special", &ids_sp) ||
        read_seqs(f, "decode_ids", "decode_lengths", &dids)) {
        sl_test_failed++;
        H5Fclose(f);
        goto out;
    }
    H5Fclose(f);
    CHECKF(g_n_text >= 400 && ids.n == g_n_text, "%d texts", g_n_text);

    long n_ids = 0, n_sp = 0, n_bos = 0;
    int bad = compare_ids(t, "smollm2", g_text, g_n_text, &ids, 0, &n_ids);
    /* add_bos_token is false in the file: add_special gives the plain ids */
    int bad_sp_file = compare_ids(t, "smollm2 add_special", g_text, g_n_text, &ids, 1, &n_sp);
    int bad_sp = compare_ids(tb, "smollm2+bos add_special", g_text, g_n_text, &ids_sp, 1, &n_bos);
    int bos_only = 1; /* the reference's one difference: a leading BOS */
    for (int i = 0; i < ids.n; i++)
        bos_only &= ids_sp.len[i] == ids.len[i] + 1 && ids_sp.flat[ids_sp.off[i]] == 1 &&
                    memcmp(ids_sp.flat + ids_sp.off[i] + 1, ids.flat + ids.off[i],
                           sizeof(int32_t) * (size_t)ids.len[i]) == 0;
    int bad_dec = compare_decode(t, "smollm2", &dids, dec, nd, 0);
    int bad_dec_skip = compare_decode(t, "smollm2 skip_special", &dids, dec_skip, nds, 1);
    printf("smollm2 (GGUF): %d texts, %ld ids: %d mismatching; add_special: %d mismatching; "
           "with BOS: %d mismatching; %d decodings: %d + %d (skip_special) mismatching\n",
           g_n_text, n_ids, bad, bad_sp_file, bad_sp, dids.n, bad_dec, bad_dec_skip);
    CHECK(bad == 0);
    CHECK(bad_sp_file == 0);
    CHECK(bad_sp == 0);
    CHECK(bos_only);
    CHECK(bad_dec == 0 && bad_dec_skip == 0);
    CHECK(dids.n >= 300);

    /* a lone byte of a multi-byte character decodes to U+FFFD, as the reference */
    int32_t id_e9 = sl_bpe_token_to_id(t, "\xc3\x83", 2); /* byte 0xC3 */
    char buf[64];
    CHECK(id_e9 >= 0 && sl_bpe_decode(t, &id_e9, 1, 0, buf, sizeof buf) == 3 &&
          strcmp(buf, "\xef\xbf\xbd") == 0);
    /* snprintf semantics: the full length, a NUL-terminated prefix */
    int32_t hello[8];
    int nh = 0;
    CHECK(sl_bpe_encode(t, "Hello world", 11, 0, hello, 8, &nh, &err) == SL_BPE_OK && nh == 2);
    CHECK(sl_bpe_decode(t, hello, nh, 0, buf, 4) == 11 && strcmp(buf, "Hel") == 0);

    throughput(t, g_text, g_n_text, "smollm2, golden corpus");
    int n_en = g_n_text < 270 ? g_n_text : 270; /* sentences.txt: mostly English prose */
    throughput(t, g_text, n_en, "smollm2, sentences");
    free_seqs(&ids);
    free_seqs(&ids_sp);
    free_seqs(&dids);
    sl_test_free_strings(dec, nd);
    sl_test_free_strings(dec_skip, nds);
out:
    sl_bpe_free(t);
    sl_bpe_free(tb);
    sl_gguf_close(g);
}

/* ---- tiny tokenizers ------------------------------------------------------------------------- */

static void test_tiny(void)
{
    static const char *styles[] = {"gpt2", "llama3", "qwen2", "smollm"};
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/reference/bpe_tiny/goldens.h5", sl_test_source_dir());
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    CHECKF(f >= 0, "cannot open %s", path);
    if (f < 0 || !g_text)
        return;
    for (int s = 0; s < 4; s++) {
        char tpath[4096], name[128];
        snprintf(tpath, sizeof tpath, "%s/tests/reference/bpe_tiny/%s/tokenizer.json",
                 sl_test_source_dir(), styles[s]);
        sl_error_t err = {{0}};
        sl_bpe_t *t = sl_bpe_load_json(tpath, &err);
        CHECKF(t != NULL, "%s", err.msg);
        seqs_t ids, ids_sp;
        int nd = 0;
        snprintf(name, sizeof name, "%s/decoded", styles[s]);
        char **dec = sl_test_h5_strings(f, name, &nd);
        char ni[128], nl[128], nis[128], nls[128];
        snprintf(ni, sizeof ni, "%s/ids", styles[s]);
        snprintf(nl, sizeof nl, "%s/lengths", styles[s]);
        snprintf(nis, sizeof nis, "%s/ids_special", styles[s]);
        snprintf(nls, sizeof nls, "%s/lengths_special", styles[s]);
        if (!t || !dec || read_seqs(f, ni, nl, &ids) || read_seqs(f, nis, nls, &ids_sp)) {
            sl_test_failed++;
            sl_bpe_free(t);
            continue;
        }
        long n0 = 0, n1 = 0;
        int bad0 = compare_ids(t, styles[s], g_text, g_n_text, &ids, 0, &n0);
        int bad1 = compare_ids(t, styles[s], g_text, g_n_text, &ids_sp, 1, &n1);
        int badd = compare_decode(t, styles[s], &ids_sp, dec, nd, 0);
        printf("tiny %-6s (tokenizer.json): %d texts, %ld ids: %d mismatching; add_special: %d "
               "mismatching; %d decodings: %d mismatching\n",
               styles[s], ids.n, n0, bad0, bad1, nd, badd);
        CHECK(ids.n == g_n_text && bad0 == 0 && bad1 == 0 && badd == 0 && nd > 0);
        /* the same vocabulary as GGUF, pre-tokenizer by name */
        snprintf(tpath, sizeof tpath, "%s/tests/reference/bpe_tiny/%s/tokenizer.gguf",
                 sl_test_source_dir(), styles[s]);
        if (strcmp(styles[s], "smollm") != 0) {
            sl_gguf_t *g = sl_gguf_open(tpath, &err);
            sl_bpe_t *tg = g ? sl_bpe_load_gguf(g, &err) : NULL;
            CHECKF(tg != NULL, "%s", err.msg);
            if (tg) {
                bad0 = compare_ids(tg, tpath, g_text, g_n_text, &ids, 0, &n0);
                bad1 = compare_ids(tg, tpath, g_text, g_n_text, &ids_sp, 1, &n1);
                badd = compare_decode(tg, tpath, &ids_sp, dec, nd, 0);
                printf("tiny %-6s (GGUF, pre \"%s\"): %d mismatching; add_special: %d "
                       "mismatching; decodings: %d mismatching\n",
                       styles[s], styles[s][0] == 'l' ? "llama-bpe" : styles[s], bad0, bad1, badd);
                CHECK(bad0 == 0 && bad1 == 0 && badd == 0);
            }
            sl_bpe_free(tg);
            sl_gguf_close(g);
        }
        free_seqs(&ids);
        free_seqs(&ids_sp);
        sl_test_free_strings(dec, nd);
        sl_bpe_free(t);
    }
    H5Fclose(f);
}

/* ---- SentencePiece-style tokenizers ------------------------------------------------------- */

/* tests/reference/spm_tiny: every form against transformers' ids (with and without special
 * tokens) and decodings (keeping and skipping special tokens). */
static void test_spm(void)
{
    static const char *forms[][2] = {
        {"legacy", "legacy/tokenizer.json"},
        {"metaspace", "metaspace/tokenizer.json"},
        {"always", "always/tokenizer.json"},
        {"gguf", "tokenizer.gguf"},
        {"from_gguf", "from_gguf/tokenizer.json"},
        {"gpt2_from_gguf", "gpt2_from_gguf/tokenizer.json"},
        {"gguf_noprefix", "tokenizer_noprefix.gguf"},
    };
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/reference/spm_tiny/goldens.h5", sl_test_source_dir());
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    CHECKF(f >= 0, "cannot open %s", path);
    if (f < 0)
        return;
    int n_text = 0;
    char **text = sl_test_h5_strings(f, "text", &n_text);
    CHECK(text && n_text > 500);
    for (size_t k = 0; text && k < sizeof forms / sizeof forms[0]; k++) {
        const char *form = forms[k][0];
        char tpath[4096], ni[128], nl[128], nis[128], nls[128], nd[128], ndl[128], nde[128],
            nds[128];
        snprintf(tpath, sizeof tpath, "%s/tests/reference/spm_tiny/%s", sl_test_source_dir(),
                 forms[k][1]);
        sl_error_t err = {{0}};
        sl_gguf_t *g = NULL;
        sl_bpe_t *t;
        if (strstr(tpath, ".gguf")) {
            g = sl_gguf_open(tpath, &err);
            t = g ? sl_bpe_load_gguf(g, &err) : NULL;
        } else {
            t = sl_bpe_load_json(tpath, &err);
        }
        CHECKF(t != NULL, "%s: %s", form, err.msg);
        snprintf(ni, sizeof ni, "%s/ids", form);
        snprintf(nl, sizeof nl, "%s/lengths", form);
        snprintf(nis, sizeof nis, "%s/ids_special", form);
        snprintf(nls, sizeof nls, "%s/lengths_special", form);
        snprintf(nd, sizeof nd, "%s/decode_ids", form);
        snprintf(ndl, sizeof ndl, "%s/decode_lengths", form);
        snprintf(nde, sizeof nde, "%s/decoded", form);
        snprintf(nds, sizeof nds, "%s/decoded_skip", form);
        seqs_t ids, ids_sp, dec;
        int n_dec = 0, n_skip = 0;
        char **decoded = sl_test_h5_strings(f, nde, &n_dec);
        char **skipped = sl_test_h5_strings(f, nds, &n_skip);
        if (!t || !decoded || !skipped || read_seqs(f, ni, nl, &ids) ||
            read_seqs(f, nis, nls, &ids_sp) || read_seqs(f, nd, ndl, &dec)) {
            sl_test_failed++;
        } else {
            long n0 = 0, n1 = 0;
            int bad0 = compare_ids(t, form, text, n_text, &ids, 0, &n0);
            int bad1 = compare_ids(t, form, text, n_text, &ids_sp, 1, &n1);
            int badd = compare_decode(t, form, &dec, decoded, n_dec, 0);
            int bads = compare_decode(t, form, &dec, skipped, n_skip, 1);
            printf("spm %-14s: %d texts, %ld ids: %d mismatching; add_special: %d mismatching; "
                   "%d decodings: %d / %d (skip special) mismatching\n",
                   form, ids.n, n0, bad0, bad1, dec.n, badd, bads);
            CHECK(ids.n == n_text && ids_sp.n == n_text && dec.n == n_dec && n_dec == n_skip &&
                  n_dec > 200 && bad0 == 0 && bad1 == 0 && badd == 0 && bads == 0);
            if (k == 0)
                throughput(t, text, n_text, "spm legacy");
            free_seqs(&ids);
            free_seqs(&ids_sp);
            free_seqs(&dec);
        }
        sl_test_free_strings(decoded, n_dec);
        sl_test_free_strings(skipped, n_skip);
        sl_bpe_free(t);
        sl_gguf_close(g);
    }
    sl_test_free_strings(text, n_text);
    H5Fclose(f);
}

/* ---- statuses and load errors ---------------------------------------------------------------- */

static char *write_tmp(const char *body)
{
    static int k;
    char *p = malloc(256);
    snprintf(p, 256, "/tmp/test_bpe_%d_%d.json", (int)getpid(), k++);
    sl_test_write_file(p, body, strlen(body));
    return p;
}

/* Loads body as a tokenizer.json; must fail with a message holding the file name and `key`. */
static void expect_load_error(const char *body, const char *key)
{
    char *p = write_tmp(body);
    sl_error_t err = {{0}};
    sl_bpe_t *t = sl_bpe_load_json(p, &err);
    CHECKF(t == NULL && strstr(err.msg, p) && strstr(err.msg, key), "want \"%s\", got \"%s\"", key,
           err.msg);
    sl_bpe_free(t);
    unlink(p);
    free(p);
}

#define TINY_MODEL(type, merges)                                                                   \
    "{\"model\": {\"type\": \"" type "\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, "            \
    "\"merges\": " merges "}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}, "                      \
    "\"decoder\": {\"type\": \"ByteLevel\"}}"

static void test_cases(void)
{
    char tpath[4096];
    snprintf(tpath, sizeof tpath, "%s/tests/reference/bpe_tiny/gpt2/tokenizer.json",
             sl_test_source_dir());
    sl_error_t err = {{0}};
    sl_bpe_t *t = sl_bpe_load_json(tpath, &err);
    CHECKF(t != NULL, "%s", err.msg);
    if (!t)
        return;
    int32_t ids[64];
    int n = -1;
    CHECK(sl_bpe_encode(t, "", 0, 1, ids, 64, &n, &err) == SL_BPE_EMPTY && n == 0);
    const char *bad[] = {"abc \xff",       "caf\xc3",          "\xc0\xaf",
                         "x\xed\xa0\x80y", "\xf4\x90\x80\x80", "\x80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err.msg[0] = 0;
        int rc = sl_bpe_encode(t, bad[i], strlen(bad[i]), 0, ids, 64, &n, &err);
        CHECKF(rc == SL_BPE_BAD_UTF8 && strstr(err.msg, "UTF-8"), "case %zu: %d %s", i, rc,
               err.msg);
    }
    CHECK(strstr(err.msg, "byte 0") != NULL); /* the offset is given */
    /* cap too small: an error, and the count needed */
    const char *s = "the quick brown fox jumps over the lazy dog";
    int need = 0;
    CHECK(sl_bpe_encode(t, s, strlen(s), 0, ids, 64, &need, &err) == SL_BPE_OK && need > 3);
    err.msg[0] = 0;
    CHECK(sl_bpe_encode(t, s, strlen(s), 0, ids, 3, &n, &err) == SL_BPE_ERROR && n == need &&
          err.msg[0]);
    CHECK(sl_bpe_encode(t, s, strlen(s), 0, NULL, 0, &n, &err) == SL_BPE_ERROR && n == need);
    CHECK(sl_bpe_encode(t, s, strlen(s), 0, NULL, 5, &n, &err) == SL_BPE_ERROR);
    sl_bpe_free(t);

    /* load errors: file and key named */
    err.msg[0] = 0;
    CHECK(sl_bpe_load_json("/nonexistent/tokenizer.json", &err) == NULL &&
          strstr(err.msg, "/nonexistent/tokenizer.json"));
    expect_load_error(TINY_MODEL("Unigram", "[]"), "model.type");
    expect_load_error(TINY_MODEL("BPE", "[\"a c\"]"), "model.merges[0]");
    expect_load_error(TINY_MODEL("BPE", "[\"a b\", \"b a\"]"), "model.merges[1]");
    expect_load_error(TINY_MODEL("BPE", "[\"ab\"]"), "model.merges[0]");
    expect_load_error(TINY_MODEL("BPE", "[[\"a\", \"b\", \"c\"]]"), "model.merges[0]");
    /* SentencePiece-style layouts that are not supported */
#define SPM_MODEL(rest)                                                                            \
    "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"\u2581\": 1}, \"merges\": [], "       \
    "\"byte_fallback\": true}, " rest "}"
#define META_PRE "\"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"\u2581\"}"
#define SPM_DEC "\"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Fuse\"}]}"
    expect_load_error(SPM_MODEL("\"normalizer\": {\"type\": \"NFKC\"}, " META_PRE ", " SPM_DEC),
                      "normalizer.type \"NFKC\"");
    expect_load_error(SPM_MODEL("\"normalizer\": null, \"pre_tokenizer\": null, " SPM_DEC),
                      "pre_tokenizer is null");
    expect_load_error(SPM_MODEL("\"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": "
                                "\"\u2581\", \"prepend_scheme\": \"sometimes\"}, " SPM_DEC),
                      "prepend_scheme");
    expect_load_error(SPM_MODEL("\"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": "
                                "\"_\"}, " SPM_DEC),
                      "pre_tokenizer.replacement");
    expect_load_error(SPM_MODEL(META_PRE ", \"decoder\": {\"type\": \"Sequence\", \"decoders\": "
                                         "[{\"type\": \"Strip\", \"content\": \" \", \"start\": 1, "
                                         "\"stop\": 0}, {\"type\": \"Fuse\"}]}"),
                      "decoder.decoders[0]");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, "
                      "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"decoder\": {\"type\": "
                      "\"Sequence\", \"decoders\": [{\"type\": \"ByteFallback\"}, {\"type\": "
                      "\"Replace\", \"pattern\": {\"String\": \"\u2581\"}, \"content\": \" \"}, "
                      "{\"type\": \"ByteLevel\"}]}}",
                      "decoder.decoders[2]");
    expect_load_error(SPM_MODEL(META_PRE ", \"decoder\": {\"type\": \"ByteLevel\"}"),
                      "ByteLevel does not go with");
    expect_load_error(SPM_MODEL(META_PRE ", \"decoder\": {\"type\": \"Metaspace\"}"),
                      "decoder.type \"Metaspace\"");
    expect_load_error(SPM_MODEL("\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": "
                                "[{\"type\": \"Prepend\", \"prepend\": \"\u2581\"}, {\"type\": "
                                "\"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": "
                                "\"\u2581\"}]}, " META_PRE ", " SPM_DEC),
                      "normalizer Prepend/Replace goes with a null pre_tokenizer");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, "
                      "\"pre_tokenizer\": {\"type\": \"Whitespace\"}, "
                      "\"decoder\": {\"type\": \"ByteLevel\"}}",
                      "pre_tokenizer.type");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, "
                      "\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": "
                      "\"Split\", \"pattern\": {\"Regex\": \"(\"}, \"behavior\": \"Isolated\"}, "
                      "{\"type\": \"ByteLevel\"}]}, \"decoder\": {\"type\": \"ByteLevel\"}}",
                      "pre_tokenizer.pretokenizers[0]");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, "
                      "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, "
                      "\"decoder\": {\"type\": \"WordPiece\"}}",
                      "decoder.type");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, "
                      "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"decoder\": {\"type\": "
                      "\"ByteLevel\"}, \"added_tokens\": [{\"id\": 1, \"content\": \"<x>\", "
                      "\"lstrip\": true}]}",
                      "lstrip");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, "
                      "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"decoder\": {\"type\": "
                      "\"ByteLevel\"}, \"post_processor\": {\"type\": \"RobertaProcessing\"}}",
                      "post_processor.type");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}",
                      "JSON");

    /* GGUF files the loader refuses, naming the file and key */
    static const char *bad_gguf[][2] = {{"bad_merge.gguf", "tokenizer.ggml.merges[1]"},
                                        {"spm.gguf", "tokenizer.ggml.scores"},
                                        {"bad_pre.gguf", "tokenizer.ggml.pre"}};
    for (int i = 0; i < 3; i++) {
        char gp[4096];
        snprintf(gp, sizeof gp, "%s/tests/reference/bpe_tiny/bad/%s", sl_test_source_dir(),
                 bad_gguf[i][0]);
        err.msg[0] = 0;
        sl_gguf_t *g = sl_gguf_open(gp, &err);
        CHECKF(g != NULL, "%s", err.msg);
        sl_bpe_t *b = g ? sl_bpe_load_gguf(g, &err) : NULL;
        CHECKF(g && !b && strstr(err.msg, gp) && strstr(err.msg, bad_gguf[i][1]),
               "want \"%s\", got \"%s\"", bad_gguf[i][1], err.msg);
        sl_bpe_free(b);
        sl_gguf_close(g);
    }

    /* from vocabulary arrays: unknown pre-tokenizer, bad merge */
    const char *toks[] = {"a", "b", "ab"};
    size_t tl[] = {1, 1, 2};
    const char *mg[] = {"a b"}, *mg_bad[] = {"a x"};
    size_t ml[] = {3};
    err.msg[0] = 0;
    CHECK(sl_bpe_from_vocab(toks, tl, 3, mg, ml, 1, NULL, "foo", -1, -1, 0, "src.gguf", &err) ==
              NULL &&
          strstr(err.msg, "src.gguf") && strstr(err.msg, "\"foo\""));
    err.msg[0] = 0;
    CHECK(sl_bpe_from_vocab(toks, tl, 3, mg_bad, ml, 1, NULL, "gpt2", -1, -1, 0, "src.gguf",
                            &err) == NULL &&
          strstr(err.msg, "src.gguf") && strstr(err.msg, "merges[0]"));
    sl_bpe_t *v =
        sl_bpe_from_vocab(toks, tl, 3, mg, ml, 1, NULL, "llama-bpe", -1, -1, 0, "src.gguf", &err);
    CHECKF(v != NULL, "%s", err.msg);
    if (v) { /* "aab": a + ab; the missing bytes (none here) would be dropped without unk */
        CHECK(sl_bpe_encode(v, "aab", 3, 1, ids, 64, &n, &err) == SL_BPE_OK && n == 2 &&
              ids[0] == 0 && ids[1] == 2);
        CHECK(sl_bpe_bos_id(v) == -1);
    }
    sl_bpe_free(v);
}

int main(void)
{
    test_smollm2();
    test_tiny();
    test_spm();
    test_cases();
    sl_test_free_strings(g_text, g_n_text);
    return sl_test_finish("test_bpe");
}
