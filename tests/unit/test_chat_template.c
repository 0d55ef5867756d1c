/*
 * test_chat_template.c — models/tokenizers/chat_template.c against transformers'
 * apply_chat_template (jinja2), from tests/reference/goldens/chat_goldens.h5 (made by
 * tests/reference/make_chat_goldens.py):
 *  1. each tiny tokenizer of tests/reference/chat_tiny (LLaMA-3, LLaMA-2, Mistral, Qwen2 ChatML
 *     templates in tokenizer_config.json): `auto` recognises the form; every conversation
 *     (with and without a system message; leading/trailing ASCII and Unicode spaces, special
 *     tokens and [INST] inside the user text) renders to the same string and, tokenized without
 *     added special tokens, to the same ids (the BOS text from tokenizer_config.json, and
 *     where the tokenizer has a BOS of its own, from the tokenizer as for a GGUF file);
 *  2. the real SmolLM2-135M-Instruct GGUF: its template (with its default system message) from
 *     tokenizer.chat_template, rendered and tokenized by the GGUF tokenizer, equals the goldens;
 *  3. naming a form explicitly renders as the template does (no default system message);
 *  4. refusals: an unknown (Gemma-style) and a LLaMA-3.1-style template, a directory without a
 *     template, a bad --chat-template name, a system message for Mistral: each an error naming
 *     the file or option.
 */
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/tokenizers/bpe.h"
#include "models/tokenizers/chat_template.h"
#include "models/formats/gguf.h"
#include "sl_test.h"

/* Renders and tokenizes every case of group `grp` with chat c and tokenizer tok. */
static void check_group(hid_t f, const char *grp, const sl_chat_t *c, const sl_bpe_t *tok)
{
    char name[256];
    int ns = 0, nu = 0, nr = 0;
    snprintf(name, sizeof name, "%s/system", grp);
    char **sys = sl_test_h5_strings(f, name, &ns);
    snprintf(name, sizeof name, "%s/user", grp);
    char **user = sl_test_h5_strings(f, name, &nu);
    snprintf(name, sizeof name, "%s/rendered", grp);
    char **want = sl_test_h5_strings(f, name, &nr);
    size_t n_ids = 0, n_len = 0;
    hsize_t dims[2];
    snprintf(name, sizeof name, "%s/ids", grp);
    int32_t *ids = sl_test_h5_read(f, name, H5T_NATIVE_INT32, 4, &n_ids, NULL, dims);
    snprintf(name, sizeof name, "%s/lengths", grp);
    int32_t *lens = sl_test_h5_read(f, name, H5T_NATIVE_INT32, 4, &n_len, NULL, NULL);
    CHECKF(sys && user && want && ids && lens && ns == nu && nu == nr && (int)n_len == nr &&
               nr >= 5,
           "group %s unreadable", grp);
    int bad_text = 0, bad_ids = 0;
    for (int i = 0; sys && user && want && ids && lens && i < nr; i++) {
        sl_error_t err = {{0}};
        char *got = sl_chat_render(c, tok, sys[i], user[i], &err);
        if (!got || strcmp(got, want[i]) != 0) {
            bad_text++;
            fprintf(stderr, "%s case %d: rendered\n  got  [%s]\n  want [%s] %s\n", grp, i,
                    got ? got : "(null)", want[i], err.msg);
            free(got);
            continue;
        }
        int32_t out[512];
        int n = 0;
        int rc = sl_bpe_encode(tok, got, strlen(got), 0, out, 512, &n, &err);
        int same = rc == SL_BPE_OK && n == lens[i] &&
                   memcmp(out, ids + (size_t)i * dims[1], sizeof(int32_t) * (size_t)n) == 0;
        if (!same) {
            bad_ids++;
            fprintf(stderr, "%s case %d: %d ids, want %d (%s)\n", grp, i, n, lens[i], err.msg);
        }
        free(got);
    }
    printf("%s (%s): %d conversations, %d rendered differently, %d tokenized differently\n", grp,
           sl_chat_form_name(c->form), nr, bad_text, bad_ids);
    CHECK(bad_text == 0);
    CHECK(bad_ids == 0);
    sl_test_free_strings(sys, ns);
    sl_test_free_strings(user, nu);
    sl_test_free_strings(want, nr);
    free(ids);
    free(lens);
}

static void test_tiny(hid_t f, const char *form, sl_chat_form_t want_form, int has_default)
{
    char dir[4096], tj[4200];
    snprintf(dir, sizeof dir, "%s/tests/reference/chat_tiny/%s", sl_test_source_dir(), form);
    snprintf(tj, sizeof tj, "%s/tokenizer.json", dir);
    sl_error_t err = {{0}};
    sl_bpe_t *tok = sl_bpe_load_json(tj, &err);
    CHECKF(tok != NULL, "%s", err.msg);
    sl_chat_t c;
    int rc = sl_chat_load(dir, "auto", &c, &err);
    CHECKF(rc == 0, "%s", err.msg);
    if (rc == 0 && tok) {
        CHECKF(c.form == want_form, "%s: form %s", form, sl_chat_form_name(c.form));
        CHECKF((c.default_system != NULL) == has_default, "%s: default system %s", form,
               c.default_system ? c.default_system : "(none)");
        check_group(f, form, &c, tok);
        if (c.bos_text && sl_bpe_bos_id(tok) >= 0) {
            /* without tokenizer_config.json's bos_token (as from a GGUF): the tokenizer's BOS */
            sl_chat_t nobos = {c.form, NULL, NULL};
            check_group(f, form, &nobos, tok);
        }
    }
    sl_chat_free(&c);
    /* the form named explicitly renders the same (tokenizer_config.json's bos_token too) */
    if (!has_default && tok) {
        rc = sl_chat_load(dir, form, &c, &err);
        CHECKF(rc == 0 && c.form == want_form, "%s explicit: %s", form, err.msg);
        if (rc == 0)
            check_group(f, form, &c, tok);
        sl_chat_free(&c);
    }
    sl_bpe_free(tok);
}

static void test_smollm2(hid_t f)
{
    char path[4096];
    if (sl_test_model_path("smollm2", "SmolLM2", path, sizeof path)) {
        sl_test_failed++;
        return;
    }
    sl_error_t err = {{0}};
    sl_gguf_t *g = sl_gguf_open(path, &err);
    CHECKF(g != NULL, "%s", err.msg);
    if (!g)
        return;
    sl_bpe_t *tok = sl_bpe_load_gguf(g, &err);
    CHECKF(tok != NULL, "%s", err.msg);
    sl_chat_t c;
    int rc = sl_chat_load(path, "auto", &c, &err);
    CHECKF(rc == 0, "%s", err.msg);
    if (rc == 0 && tok) {
        CHECK(c.form == SL_CHAT_CHATML);
        CHECKF(c.default_system &&
                   !strcmp(c.default_system, "You are a helpful AI assistant "
                                             "named SmolLM, trained by Hugging Face"),
               "default system [%s]", c.default_system ? c.default_system : "(none)");
        check_group(f, "smollm2", &c, tok);
    }
    sl_chat_free(&c);
    /* explicit chatml: no default system message */
    rc = sl_chat_load(path, "chatml", &c, &err);
    CHECK(rc == 0 && c.form == SL_CHAT_CHATML && c.default_system == NULL);
    char *s = rc == 0 ? sl_chat_render(&c, tok, NULL, "hi", &err) : NULL;
    CHECKF(s && !strcmp(s, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"), "[%s]",
           s ? s : "(null)");
    free(s);
    sl_chat_free(&c);
    sl_bpe_free(tok);
    sl_gguf_close(g);
}

static void test_refusals(void)
{
    char dir[4096];
    sl_error_t err = {{0}};
    sl_chat_t c;
    const char *bad[] = {"unknown", "llama31"};
    for (int i = 0; i < 2; i++) {
        snprintf(dir, sizeof dir, "%s/tests/reference/chat_tiny/%s", sl_test_source_dir(), bad[i]);
        err.msg[0] = '\0';
        int rc = sl_chat_load(dir, "auto", &c, &err);
        printf("%s: %s\n", bad[i], err.msg);
        CHECKF(rc != 0 && strstr(err.msg, "tokenizer_config.json") && strstr(err.msg, bad[i]) &&
                   strstr(err.msg, "--chat-template none") && strstr(err.msg, "chatml"),
               "%s: [%s]", bad[i], err.msg);
        sl_chat_free(&c);
        /* an explicit form still works for such a model */
        rc = sl_chat_load(dir, "chatml", &c, &err);
        CHECK(rc == 0 && c.form == SL_CHAT_CHATML);
        sl_chat_free(&c);
    }
    /* no template at all */
    snprintf(dir, sizeof dir, "%s/tests/reference/bpe_tiny/gpt2", sl_test_source_dir());
    int rc = sl_chat_load(dir, "auto", &c, &err);
    CHECKF(rc != 0 && strstr(err.msg, "no chat template") && strstr(err.msg, "gpt2"), "[%s]",
           err.msg);
    rc = sl_chat_load(dir, "none", &c, &err);
    CHECK(rc == 0 && c.form == SL_CHAT_NONE);
    rc = sl_chat_load(dir, "jinja", &c, &err);
    CHECKF(rc != 0 && strstr(err.msg, "--chat-template 'jinja'") && strstr(err.msg, "llama3"),
           "[%s]", err.msg);
    CHECK(!sl_chat_name_valid("Auto") && sl_chat_name_valid("auto") &&
          sl_chat_name_valid("mistral"));
    /* Mistral has no system role (transformers' template raises) */
    sl_chat_t m = {SL_CHAT_MISTRAL, NULL, NULL};
    char *s = sl_chat_render(&m, NULL, "be nice", "hi", &err);
    CHECKF(s == NULL && strstr(err.msg, "--system") && strstr(err.msg, "mistral"), "[%s]", err.msg);
    free(s);
    /* recognition of the text alone: a ChatML variant that strips content is not guessed at */
    const char *strip = "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + "
                        "m['content'].strip() + '<|im_end|>\\n'}}{% endfor %}{% if "
                        "add_generation_prompt %}{{'<|im_start|>assistant\\n'}}{% endif %}";
    rc = sl_chat_recognise(strip, strlen(strip), "x.json: key 'chat_template'", &c, &err);
    CHECKF(rc != 0 && strstr(err.msg, "x.json"), "[%s]", err.msg);
    /* the same without strip() is ChatML without a default system message */
    const char *plain = "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + "
                        "m['content'] + '<|im_end|>\\n'}}{% endfor %}{% if "
                        "add_generation_prompt %}{{'<|im_start|>assistant\\n'}}{% endif %}";
    rc = sl_chat_recognise(plain, strlen(plain), "x", &c, &err);
    CHECK(rc == 0 && c.form == SL_CHAT_CHATML && c.default_system == NULL);
    sl_chat_free(&c);
}

int main(void)
{
    char gpath[4096];
    snprintf(gpath, sizeof gpath, "%s/tests/reference/goldens/chat_goldens.h5",
             sl_test_source_dir());
    hid_t f = H5Fopen(gpath, H5F_ACC_RDONLY, H5P_DEFAULT);
    CHECKF(f >= 0, "cannot open %s", gpath);
    if (f >= 0) {
        test_tiny(f, "llama3", SL_CHAT_LLAMA3, 0);
        test_tiny(f, "llama2", SL_CHAT_LLAMA2, 0);
        test_tiny(f, "mistral", SL_CHAT_MISTRAL, 0);
        test_tiny(f, "qwen2", SL_CHAT_CHATML, 1);
        test_smollm2(f);
        H5Fclose(f);
    }
    test_refusals();
    return sl_test_finish("test_chat_template");
}
