/*
 * test_tokenizer.c — the C WordPiece tokenizer against the reference.
 *
 * 1. Goldens: loads the real all-MiniLM-L6-v2 tokenizer.json (installed by
 *    scripts/install-models.sh; its directory is read from $SL_MODELS_DIR/minilm.path) and checks
 *    that the ids of every sentence of tests/reference/goldens/minilm_goldens.h5 are identical to
 *    the reference's input_ids[:lengths] (max length 256, as the goldens were made); prints the
 *    number of mismatching sentences and the first mismatch in full.
 * 2. Hand-written cases: empty text and invalid UTF-8 are row errors with their own statuses,
 *    a word over max_input_chars_per_word is [UNK], the truncation flag, added tokens in the
 *    raw text, whitespace-only text, unsupported tokenizer.json features refused by name; an id
 *    beyond the model's vocabulary refused naming the token and id; an empty added token
 *    refused. `test_tokenizer --load-errors` runs only the load errors (ctest runs that under
 *    valgrind as test_tokenizer_leaks: no definite leak on any refusal).
 * 3. Speed: short sentences per second on one core (printed).
 * Fails (exit 1) when the model is not installed: run scripts/install-models.sh.
 */
#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "models/tokenizers/wordpiece.h"
#include "sl_test.h"

#define MAX_LEN 256

static void print_ids(const char *label, const int32_t *ids, int n)
{
    fprintf(stderr, "  %s (%d):", label, n);
    for (int i = 0; i < n; i++)
        fprintf(stderr, " %d", ids[i]);
    fputc('\n', stderr);
}

static void print_tokens(const sl_tokenizer_t *t, const char *label, const int32_t *ids, int n)
{
    fprintf(stderr, "  %s:", label);
    for (int i = 0; i < n; i++) {
        const char *s = sl_tokenizer_id_to_token(t, ids[i]);
        fprintf(stderr, " %s", s ? s : "?");
    }
    fputc('\n', stderr);
}

typedef struct {
    int n, L;
    char **text; /* [n_text] */
    int n_text;
    int32_t *ids;  /* [n, L] */
    int32_t *lens; /* [n] */
    hid_t file;
} goldens_t;

static int read_goldens(const char *path, goldens_t *g)
{
    memset(g, 0, sizeof *g);
    g->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (g->file < 0) {
        fprintf(stderr, "FAIL: cannot open %s\n", path);
        return -1;
    }
    hid_t d = H5Dopen2(g->file, "input_ids", H5P_DEFAULT);
    hid_t s = H5Dget_space(d);
    hsize_t dims[2];
    H5Sget_simple_extent_dims(s, dims, NULL);
    g->n = (int)dims[0];
    g->L = (int)dims[1];
    g->ids = malloc(sizeof(int32_t) * dims[0] * dims[1]);
    H5Dread(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, g->ids);
    H5Sclose(s);
    H5Dclose(d);

    d = H5Dopen2(g->file, "lengths", H5P_DEFAULT);
    g->lens = malloc(sizeof(int32_t) * (size_t)g->n);
    H5Dread(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, g->lens);
    H5Dclose(d);

    g->text = sl_test_h5_strings(g->file, "text", &g->n_text);
    if (!g->text || g->n_text != g->n) {
        fprintf(stderr, "FAIL: %s: cannot read /text\n", path);
        return -1;
    }
    return 0;
}

static void free_goldens(goldens_t *g)
{
    if (g->file > 0)
        H5Fclose(g->file);
    sl_test_free_strings(g->text, g->n_text);
    free(g->ids);
    free(g->lens);
}

static void test_goldens(const sl_tokenizer_t *t, const char *gpath)
{
    goldens_t g;
    if (read_goldens(gpath, &g)) {
        sl_test_failed++;
        free_goldens(&g);
        return;
    }
    int32_t ids[MAX_LEN];
    int mismatches = 0, truncated_rows = 0;
    for (int i = 0; i < g.n; i++) {
        int n = 0, trunc = 0;
        sl_error_t err = {{0}};
        int rc =
            sl_tokenizer_encode(t, g.text[i], strlen(g.text[i]), MAX_LEN, ids, &n, &trunc, &err);
        const int32_t *want = g.ids + (size_t)i * (size_t)g.L;
        int same = rc == SL_TOK_OK && n == g.lens[i] &&
                   memcmp(ids, want, sizeof(int32_t) * (size_t)n) == 0;
        truncated_rows += trunc;
        if (!same) {
            if (mismatches == 0) {
                fprintf(stderr, "first mismatch: sentence %d: \"%s\" (status %d%s%s)\n", i,
                        g.text[i], rc, rc ? ": " : "", rc ? err.msg : "");
                print_ids("expected", want, g.lens[i]);
                print_ids("got     ", ids, rc == SL_TOK_OK ? n : 0);
                print_tokens(t, "expected", want, g.lens[i]);
                print_tokens(t, "got     ", ids, rc == SL_TOK_OK ? n : 0);
            }
            mismatches++;
        }
    }
    printf("goldens: %d sentences, %d mismatching, %d truncated to %d tokens\n", g.n, mismatches,
           truncated_rows, MAX_LEN);
    CHECKF(g.n >= 300, "only %d golden sentences", g.n);
    CHECKF(mismatches == 0, "%d of %d sentences tokenized differently from the reference",
           mismatches, g.n);
    CHECK(truncated_rows > 0);

    /* speed over the golden set (mixed lengths, some beyond 256 tokens) */
    double t0 = sl_test_now_s();
    long toks = 0;
    int reps = 20;
    for (int r = 0; r < reps; r++)
        for (int i = 0; i < g.n; i++) {
            int n, trunc;
            sl_tokenizer_encode(t, g.text[i], strlen(g.text[i]), MAX_LEN, ids, &n, &trunc, NULL);
            toks += n;
        }
    double dt = sl_test_now_s() - t0;
    printf("speed, golden set: %.0f sentences/s, %.2f M tokens/s\n", reps * g.n / dt,
           (double)toks / dt / 1e6);
    free_goldens(&g);
}

static int encode(const sl_tokenizer_t *t, const char *s, size_t len, int max_len, int32_t *ids,
                  int *n, int *trunc, sl_error_t *err)
{
    return sl_tokenizer_encode(t, s, len, max_len, ids, n, trunc, err);
}

static void test_cases(const sl_tokenizer_t *t)
{
    int32_t ids[MAX_LEN];
    int n = -1, trunc = -1;
    sl_error_t err = {{0}};

    CHECK(sl_tokenizer_vocab_size(t) == 30522);
    CHECK(sl_tokenizer_pad_id(t) == 0);
    CHECK(sl_tokenizer_unk_id(t) == 100);
    CHECK(sl_tokenizer_num_special(t) == 2);
    CHECK(sl_tokenizer_id_to_token(t, 101) &&
          strcmp(sl_tokenizer_id_to_token(t, 101), "[CLS]") == 0);
    CHECK(sl_tokenizer_id_to_token(t, 30522) == NULL && sl_tokenizer_id_to_token(t, -1) == NULL);
    CHECK(sl_tokenizer_token_to_id(t, "##ing") == 2075);

    /* a plain sentence */
    CHECK(encode(t, "Hello, world!", 13, MAX_LEN, ids, &n, &trunc, &err) == SL_TOK_OK);
    int32_t hello[] = {101, 7592, 1010, 2088, 999, 102};
    CHECK(n == 6 && memcmp(ids, hello, sizeof hello) == 0 && trunc == 0);

    /* empty text: its own row error */
    CHECK(encode(t, "", 0, MAX_LEN, ids, &n, &trunc, &err) == SL_TOK_EMPTY);
    CHECK(n == 0);

    /* invalid UTF-8: lone continuation, cut sequence, overlong, surrogate, beyond U+10FFFF */
    const char *bad[] = {"abc \xff",       "caf\xc3",          "\xc0\xaf",
                         "x\xed\xa0\x80y", "\xf4\x90\x80\x80", "\x80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err.msg[0] = 0;
        int rc = encode(t, bad[i], strlen(bad[i]), MAX_LEN, ids, &n, &trunc, &err);
        CHECKF(rc == SL_TOK_BAD_UTF8, "case %zu: status %d", i, rc);
        CHECK(strstr(err.msg, "UTF-8") != NULL);
    }

    /* whitespace and control characters only: [CLS] [SEP], as the reference */
    CHECK(encode(t, " \t\r\n\x01 ", 6, MAX_LEN, ids, &n, &trunc, &err) == SL_TOK_OK);
    CHECK(n == 2 && ids[0] == 101 && ids[1] == 102);

    /* words over max_input_chars_per_word (100) are [UNK]; 100 characters are not */
    char word[200];
    memset(word, 'a', 101);
    CHECK(encode(t, word, 101, MAX_LEN, ids, &n, &trunc, &err) == SL_TOK_OK);
    CHECK(n == 3 && ids[1] == 100);
    CHECK(encode(t, word, 100, MAX_LEN, ids, &n, &trunc, &err) == SL_TOK_OK);
    CHECK(n > 3 && ids[1] != 100);
    /* 101 accented letters: stripped to 101 plain ones, still [UNK] */
    char acc[2 * 101];
    for (int i = 0; i < 101; i++)
        acc[2 * i] = (char)0xc3, acc[2 * i + 1] = (char)0xa9; /* é */
    CHECK(encode(t, acc, sizeof acc, MAX_LEN, ids, &n, &trunc, &err) == SL_TOK_OK);
    CHECK(n == 3 && ids[1] == 100);

    /* truncation: max_len counts [CLS] and [SEP] */
    const char *six = "one two three four five six"; /* 6 word pieces */
    CHECK(encode(t, six, strlen(six), 8, ids, &n, &trunc, &err) == SL_TOK_OK);
    CHECK(n == 8 && trunc == 0 && ids[7] == 102);
    CHECK(encode(t, six, strlen(six), 7, ids, &n, &trunc, &err) == SL_TOK_OK);
    CHECK(n == 7 && trunc == 1 && ids[0] == 101 && ids[6] == 102);
    CHECK(encode(t, six, strlen(six), 3, ids, &n, &trunc, &err) == SL_TOK_OK);
    CHECK(n == 3 && trunc == 1);
    CHECK(encode(t, six, strlen(six), 2, ids, &n, &trunc, &err) == SL_TOK_ERROR);

    /* added tokens are matched in the raw text, before lowercasing */
    const char *mask = "a[MASK]b [mask]";
    CHECK(encode(t, mask, strlen(mask), MAX_LEN, ids, &n, &trunc, &err) == SL_TOK_OK);
    int32_t mask_ids[] = {101, 1037, 103, 1038, 1031, 7308, 1033, 102};
    CHECK(n == 8 && memcmp(ids, mask_ids, sizeof mask_ids) == 0);

    /* text with a NUL inside (len is explicit): NUL is dropped like other control characters */
    CHECK(encode(t, "ab\0cd", 5, MAX_LEN, ids, &n, &trunc, &err) == SL_TOK_OK);
    CHECK(n >= 3);
}

static void expect_load_error(const char *json, const char *key)
{
    char path[] = "/tmp/sl_tok_test_XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    fputs(json, f);
    fclose(f);
    sl_error_t err = {{0}};
    sl_tokenizer_t *t = sl_tokenizer_load(path, &err);
    CHECKF(t == NULL && strstr(err.msg, key) && strstr(err.msg, path), "message: %s", err.msg);
    sl_tokenizer_free(t);
    remove(path);
}

static void test_unsupported(void)
{
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}",
                      "model.type");
    expect_load_error("{\"normalizer\": {\"type\": \"NFKC\"}, \"model\": {\"type\": \"WordPiece\", "
                      "\"unk_token\": \"[UNK]\", \"vocab\": {\"[UNK]\": 0, \"a\": 1}}}",
                      "normalizer.type");
    expect_load_error("{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": "
                      "\"WordPiece\", \"unk_token\": \"[UNK]\", \"vocab\": {\"[UNK]\": 0}}}",
                      "pre_tokenizer.type");
    expect_load_error(
        "{\"post_processor\": {\"type\": \"RobertaProcessing\"}, \"model\": {\"type\": "
        "\"WordPiece\", \"unk_token\": \"[UNK]\", \"vocab\": {\"[UNK]\": 0}}}",
        "post_processor.type");
    expect_load_error("{\"model\": {\"type\": \"WordPiece\", \"unk_token\": \"<unk>\", \"vocab\": "
                      "{\"[UNK]\": 0}}}",
                      "unk_token");
    expect_load_error("{\"model\": ", "JSON");
    sl_error_t err = {{0}};
    CHECK(sl_tokenizer_load("/nonexistent/tokenizer.json", &err) == NULL);
    CHECK(strstr(err.msg, "/nonexistent/tokenizer.json") != NULL);
}

static void write_tmp(char *path, const char *json)
{
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    fputs(json, f);
    fclose(f);
}

/* An id beyond the model's vocabulary ("hello": 99999 with a 30522-row embedding) is refused
 * at load, naming the file, the token and the id, instead of aborting the job at the first row
 * that uses it. */
static void test_vocab_check(void)
{
    char path[] = "/tmp/sl_tok_vocab_XXXXXX";
    write_tmp(path, "{\"model\": {\"type\": \"WordPiece\", \"unk_token\": \"[UNK]\", "
                    "\"vocab\": {\"[UNK]\": 0, \"a\": 1, \"hello\": 99999}}}");
    sl_error_t err = {{0}};
    sl_tokenizer_t *t = sl_tokenizer_load(path, &err);
    CHECKF(t != NULL, "%s", err.msg);
    if (t) {
        CHECK(sl_tokenizer_check_vocab(t, 100000, &err) == 0);
        int rc = sl_tokenizer_check_vocab(t, 30522, &err);
        CHECKF(rc == -1 && strstr(err.msg, path) && strstr(err.msg, "hello") &&
                   strstr(err.msg, "99999") && strstr(err.msg, "30522"),
               "id beyond the vocabulary: %s", rc ? err.msg : "accepted");
    }
    sl_tokenizer_free(t);
    remove(path);
}

/* An added token with empty content is refused, naming the entry; the refusal frees what it
 * allocated (its code points leaked, 4 bytes per load): ctest's test_tokenizer_leaks runs these
 * load errors under valgrind, where a definite leak fails the test. */
static void test_added_empty(void)
{
    char path[] = "/tmp/sl_tok_added_XXXXXX";
    write_tmp(path, "{\"model\": {\"type\": \"WordPiece\", \"unk_token\": \"[UNK]\", "
                    "\"vocab\": {\"[UNK]\": 0, \"a\": 1}}, \"added_tokens\": [{\"id\": 1, "
                    "\"content\": \"a\"}, {\"id\": 0, \"content\": \"\"}]}");
    sl_error_t err = {{0}};
    CHECKF(sl_tokenizer_load(path, &err) == NULL && strstr(err.msg, "added_tokens[1]") &&
               strstr(err.msg, path),
           "empty added token: %s", err.msg);
    remove(path);
}

static void test_speed(const sl_tokenizer_t *t)
{
    static const char *s[] = {
        "A man is eating food.",
        "The quick brown fox jumps over the lazy dog.",
        "Researchers found that regular exercise lowers the risk of heart disease.",
        "Please reset your password using the link we sent to your email address.",
        "Le café est à côté de l'hôtel de ville.",
        "The stock market fell sharply after the central bank raised interest rates.",
        "How much wood would a woodchuck chuck if a woodchuck could chuck wood?",
        "Our quarterly revenue grew 12% year over year, driven by cloud services.",
    };
    int ns = (int)(sizeof s / sizeof s[0]);
    size_t lens[8];
    for (int i = 0; i < ns; i++)
        lens[i] = strlen(s[i]);
    int32_t ids[MAX_LEN];
    int n, trunc;
    long iters = 200000;
    double t0 = sl_test_now_s();
    long toks = 0;
    for (long k = 0; k < iters; k++) {
        sl_tokenizer_encode(t, s[k % ns], lens[k % ns], MAX_LEN, ids, &n, &trunc, NULL);
        toks += n;
    }
    double dt = sl_test_now_s() - t0;
    printf("speed, short sentences: %.0f sentences/s, %.2f M tokens/s (one core)\n", iters / dt,
           (double)toks / dt / 1e6);
}

int main(int argc, char **argv)
{
    char dir[4096], tpath[4200], gpath[4200];
    snprintf(gpath, sizeof gpath, "%s/tests/reference/goldens/minilm_goldens.h5",
             sl_test_source_dir());

    test_unsupported();
    test_vocab_check();
    test_added_empty();
    if (argc > 1 && !strcmp(argv[1], "--load-errors")) /* only these (for valgrind) */
        return sl_test_finish("test_tokenizer --load-errors");
    if (sl_test_model_path("minilm", "the all-MiniLM-L6-v2 model", dir, sizeof dir)) {
        sl_test_failed++;
        return sl_test_finish("test_tokenizer");
    }
    snprintf(tpath, sizeof tpath, "%s/tokenizer.json", dir);
    sl_error_t err = {{0}};
    double t0 = sl_test_now_s();
    sl_tokenizer_t *t = sl_tokenizer_load(tpath, &err);
    CHECKF(t != NULL, "%s", err.msg);
    if (!t)
        return sl_test_finish("test_tokenizer");
    printf("loaded %s in %.1f ms\n", tpath, 1e3 * (sl_test_now_s() - t0));

    test_cases(t);
    test_goldens(t, gpath);
    test_speed(t);
    sl_tokenizer_free(t);
    return sl_test_finish("test_tokenizer");
}
