/*
 * chat_template.c — recognising and rendering the chat templates of the shipped model families
 * (see chat_template.h).
 *
 * Recognition works on the template's text with its string-literal escapes (\n, \t, \', \", \\)
 * decoded, because the same template arrives with real newlines (GGUF, most tokenizer_config.json
 * files) or with "\n" escapes inside the Jinja string literals (LLaMA-2's). A form is accepted
 * only when every literal piece the renderer writes is present in the template and none of the
 * features the renderer does not reproduce is; anything else is refused rather than guessed.
 */
#include "models/tokenizers/chat_template.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/sl_fs.h"
#include "common/sl_json.h"
#include "models/formats/gguf.h"

#define SL_CHAT_MAX_BYTES (16u << 20) /* tokenizer_config.json / chat_template.jinja */

static const char *const form_names[] = {"none", "chatml", "llama3", "llama2", "mistral"};

const char *sl_chat_form_name(sl_chat_form_t form) { return form_names[form]; }

int sl_chat_name_valid(const char *name)
{
    if (!strcmp(name, "auto"))
        return 1;
    for (size_t i = 0; i < sizeof form_names / sizeof form_names[0]; i++)
        if (!strcmp(name, form_names[i]))
            return 1;
    return 0;
}

void sl_chat_free(sl_chat_t *c)
{
    if (!c)
        return;
    free(c->default_system);
    free(c->bos_text);
    memset(c, 0, sizeof *c);
}

/* ---- a growing string ------------------------------------------------------------------- */

typedef struct {
    char *s;
    size_t n, cap;
} sbuf_t;

static void put(sbuf_t *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->s = sl_xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
}

static void puts_(sbuf_t *b, const char *s) { put(b, s, strlen(s)); }

/* ---- recognition ------------------------------------------------------------------------ */

/* The template with the escapes of Jinja string literals decoded (applied everywhere: outside
 * literals a backslash does not occur in the templates concerned). */
static char *unescape(const char *t, size_t len)
{
    char *o = sl_xmalloc(len + 1);
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (t[i] == '\\' && i + 1 < len) {
            char c = t[++i];
            o[k++] = c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c;
            if (c != 'n' && c != 't' && c != 'r' && c != '\\' && c != '\'' && c != '"') {
                o[k - 1] = '\\'; /* not an escape we know: keep both characters */
                o[k++] = c;
            }
        } else {
            o[k++] = t[i];
        }
    }
    o[k] = '\0';
    return o;
}

static int has(const char *t, const char *piece) { return strstr(t, piece) != NULL; }

/* A ChatML template's default system message: the text of a literal
 * '<|im_start|>system\nTEXT<|im_end|>' (TEXT without quotes, braces or '+', so it is not an
 * expression such as messages[0]['content']). NULL when there is none. */
static char *chatml_default_system(const char *t)
{
    static const char head[] = "<|im_start|>system\n";
    for (const char *p = strstr(t, head); p; p = strstr(p + 1, head)) {
        const char *s = p + sizeof head - 1, *e = strstr(s, "<|im_end|>");
        if (!e || e == s)
            continue;
        int literal = 1;
        for (const char *q = s; q < e && literal; q++)
            literal = !strchr("'\"{}+", *q);
        if (literal) {
            char *d = sl_xmalloc((size_t)(e - s) + 1);
            memcpy(d, s, (size_t)(e - s));
            d[e - s] = '\0';
            return d;
        }
    }
    return NULL;
}

static int refuse(sl_error_t *err, const char *source, const char *why)
{
    return sl_errorf(err,
                     "%s: %s; shardline renders ChatML (SmolLM2, Qwen2), LLaMA-3.0, LLaMA-2 "
                     "and Mistral [INST] chat templates: use --chat-template none, or name "
                     "a form explicitly (chatml, llama3, llama2, mistral)",
                     source, why);
}

int sl_chat_recognise(const char *text, size_t len, const char *source, sl_chat_t *out,
                      sl_error_t *err)
{
    memset(out, 0, sizeof *out);
    char *t = unescape(text, len);
    int rc = 0;
    if (has(t, "<think>") || has(t, "tools") || has(t, "date_string") ||
        has(t, "Cutting Knowledge Date") || has(t, "[AVAILABLE_TOOLS]")) {
        /* tool calling, reasoning switches, dated system blocks: not reproduced here */
        rc = refuse(err, source, "the chat template uses tools, dates or reasoning blocks");
    } else if (has(t, "<|im_start|>")) {
        if (has(t, "<|im_end|>") && has(t, "<|im_start|>assistant\n") &&
            has(t, "add_generation_prompt") && !has(t, "trim") && !has(t, "strip")) {
            out->form = SL_CHAT_CHATML;
            out->default_system = chatml_default_system(t);
        } else {
            rc = refuse(err, source, "a ChatML-like chat template of an unknown variant");
        }
    } else if (has(t, "<|start_header_id|>")) {
        if (has(t, "<|end_header_id|>\n\n") && has(t, "<|eot_id|>") &&
            has(t, "<|start_header_id|>assistant<|end_header_id|>\n\n") &&
            has(t, "add_generation_prompt") && has(t, "bos_token") && has(t, "| trim"))
            out->form = SL_CHAT_LLAMA3;
        else
            rc = refuse(err, source, "a LLaMA-3-like chat template of an unknown variant");
    } else if (has(t, "[INST]")) {
        int common = has(t, "'[INST] '") && has(t, "' [/INST]'") && has(t, "bos_token");
        if (common && has(t, "<<SYS>>\n") && has(t, "\n<</SYS>>\n\n") &&
            (has(t, ".strip()") || has(t, "| trim")))
            out->form = SL_CHAT_LLAMA2;
        else if (common && !has(t, "<<SYS>>") && !has(t, "system_message") && !has(t, "strip") &&
                 !has(t, "trim"))
            out->form = SL_CHAT_MISTRAL;
        else
            rc = refuse(err, source, "an [INST] chat template of an unknown variant");
    } else {
        rc = refuse(err, source, "the chat template is not one of the known forms");
    }
    free(t);
    return rc;
}

/* ---- where the template lives ----------------------------------------------------------- */

/* tokenizer_config.json's chat_template (string, or [{name, template}] with "default") and
 * bos_token (string or {content}). *tmpl NULL when the key is absent. */
static int read_config(const char *path, char **tmpl, char **bos, sl_error_t *err)
{
    *tmpl = *bos = NULL;
    cJSON *root = sl_json_read(path, SL_CHAT_MAX_BYTES, 0, err);
    if (!root)
        return -1;
    int rc = 0;
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(root, "chat_template");
    if (cJSON_IsString(ct)) {
        *tmpl = sl_xstrdup(ct->valuestring);
    } else if (cJSON_IsArray(ct)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, ct)
        {
            const cJSON *n = cJSON_GetObjectItemCaseSensitive(e, "name");
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, "template");
            if (cJSON_IsString(n) && !strcmp(n->valuestring, "default") && cJSON_IsString(v))
                *tmpl = sl_xstrdup(v->valuestring);
        }
        if (!*tmpl)
            rc = sl_errorf(err, "%s: key 'chat_template': a list without a \"default\" template",
                           path);
    } else if (ct && !cJSON_IsNull(ct)) {
        rc = sl_errorf(err, "%s: key 'chat_template': expected a string or a list", path);
    }
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(root, "bos_token");
    if (cJSON_IsObject(b))
        b = cJSON_GetObjectItemCaseSensitive(b, "content");
    if (cJSON_IsString(b))
        *bos = sl_xstrdup(b->valuestring);
    cJSON_Delete(root);
    if (rc != 0) {
        free(*tmpl);
        free(*bos);
        *tmpl = *bos = NULL;
    }
    return rc;
}

/* The template text of a model directory and the source naming it; *tmpl NULL when none. */
static int dir_template(const char *dir, char **tmpl, char **bos, char *source, size_t cap,
                        sl_error_t *err)
{
    struct stat sb;
    char *cfg = sl_path_join(dir, "tokenizer_config.json");
    int rc = 0;
    *tmpl = *bos = NULL;
    if (stat(cfg, &sb) == 0) {
        rc = read_config(cfg, tmpl, bos, err);
        snprintf(source, cap, "%s: key 'chat_template'", cfg);
    }
    free(cfg);
    if (rc == 0 && !*tmpl) {
        char *jinja = sl_path_join(dir, "chat_template.jinja");
        if (stat(jinja, &sb) == 0) {
            rc = sl_read_file(jinja, SL_CHAT_MAX_BYTES, tmpl, NULL, err);
            snprintf(source, cap, "%s", jinja);
        }
        free(jinja);
    }
    return rc;
}

int sl_chat_load(const char *model, const char *name, sl_chat_t *out, sl_error_t *err)
{
    memset(out, 0, sizeof *out);
    if (!sl_chat_name_valid(name))
        return sl_errorf(err, "--chat-template '%s': expected %s", name, SL_CHAT_CHOICES);
    if (!strcmp(name, "none"))
        return 0;
    struct stat sb;
    if (stat(model, &sb) != 0)
        return sl_errorf(err, "--model %s: not found", model);
    char source[4200];
    char *tmpl = NULL, *bos = NULL;
    size_t len = 0;
    int rc = 0;
    if (S_ISDIR(sb.st_mode)) {
        rc = dir_template(model, &tmpl, &bos, source, sizeof source, err);
        if (rc == 0 && !tmpl && !strcmp(name, "auto"))
            rc = sl_errorf(err,
                           "%s: no chat template (neither tokenizer_config.json's "
                           "'chat_template' nor chat_template.jinja); use --chat-template "
                           "none, or name a form (chatml, llama3, llama2, mistral)",
                           model);
        len = tmpl ? strlen(tmpl) : 0;
    } else if (!strcmp(name, "auto")) {
        sl_gguf_t *g = sl_gguf_open(model, err);
        if (!g)
            return -1;
        const char *s;
        snprintf(source, sizeof source, "%s: key 'tokenizer.chat_template'", model);
        if (!sl_gguf_find(g, "tokenizer.chat_template"))
            rc = sl_errorf(err,
                           "%s: no chat template (key 'tokenizer.chat_template'); use "
                           "--chat-template none, or name a form (chatml, llama3, llama2, "
                           "mistral)",
                           model);
        else if (sl_gguf_get_str(g, "tokenizer.chat_template", &s, &len, err) == 0) {
            tmpl = sl_xmalloc(len + 1);
            memcpy(tmpl, s, len);
            tmpl[len] = '\0';
        } else {
            rc = -1;
        }
        sl_gguf_close(g);
    }
    if (rc == 0 && !strcmp(name, "auto")) {
        rc = sl_chat_recognise(tmpl, len, source, out, err);
    } else if (rc == 0) {
        for (int f = SL_CHAT_CHATML; f <= SL_CHAT_MISTRAL; f++)
            if (!strcmp(name, form_names[f]))
                out->form = (sl_chat_form_t)f;
    }
    if (rc == 0)
        out->bos_text = bos;
    else
        free(bos);
    free(tmpl);
    return rc;
}

/* ---- rendering -------------------------------------------------------------------------- */

/* Whether code point c is whitespace to Python's str.strip() (jinja2's trim filter and
 * .strip() both call it): Unicode Zs, the bidi classes B, S, WS and \x1c-\x1f. */
static int py_space(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

/* The code point at s (UTF-8, validated by the tokenizer later; a bad byte is not a space) and
 * its length in *n. */
static uint32_t utf8_at(const unsigned char *s, size_t avail, size_t *n)
{
    int len = s[0] < 0x80         ? 1
              : (s[0] >> 5) == 6  ? 2
              : (s[0] >> 4) == 14 ? 3
              : (s[0] >> 3) == 30 ? 4
                                  : 0;
    if (len == 0 || (size_t)len > avail) {
        *n = 1;
        return 0xFFFFFFFFu;
    }
    uint32_t c = len == 1 ? s[0] : (uint32_t)(s[0] & (0x7F >> len));
    for (int i = 1; i < len; i++)
        c = (c << 6) | (s[i] & 0x3F);
    *n = (size_t)len;
    return c;
}

/* Appends s with leading and trailing whitespace removed (Python's str.strip()). */
static void put_stripped(sbuf_t *b, const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t len = strlen(s), i = 0, end = len, n;
    while (i < len && py_space(utf8_at(u + i, len - i, &n)))
        i += n;
    while (end > i) {
        size_t k = end - 1; /* the start of the last character */
        while (k > i && (u[k] & 0xC0) == 0x80)
            k--;
        if (!py_space(utf8_at(u + k, end - k, &n)) || k + n != end)
            break;
        end = k;
    }
    put(b, s + i, end - i);
}

char *sl_chat_render(const sl_chat_t *c, const sl_bpe_t *tok, const char *system, const char *user,
                     sl_error_t *err)
{
    if (system && !*system)
        system = NULL;
    char bos[256] = "";
    if (c->bos_text) {
        snprintf(bos, sizeof bos, "%s", c->bos_text);
    } else if (tok && sl_bpe_bos_id(tok) >= 0) {
        int32_t id = sl_bpe_bos_id(tok);
        size_t n = sl_bpe_decode(tok, &id, 1, 0, bos, sizeof bos);
        if (n >= sizeof bos)
            bos[0] = '\0';
    }
    sbuf_t b = {0};
    puts_(&b, "");
    switch (c->form) {
    case SL_CHAT_NONE: puts_(&b, user); break;
    case SL_CHAT_CHATML:
        if (system || c->default_system) {
            puts_(&b, "<|im_start|>system\n");
            puts_(&b, system ? system : c->default_system);
            puts_(&b, "<|im_end|>\n");
        }
        puts_(&b, "<|im_start|>user\n");
        puts_(&b, user);
        puts_(&b, "<|im_end|>\n<|im_start|>assistant\n");
        break;
    case SL_CHAT_LLAMA3:
        puts_(&b, bos); /* before the first message only */
        if (system) {
            puts_(&b, "<|start_header_id|>system<|end_header_id|>\n\n");
            put_stripped(&b, system);
            puts_(&b, "<|eot_id|>");
        }
        puts_(&b, "<|start_header_id|>user<|end_header_id|>\n\n");
        put_stripped(&b, user);
        puts_(&b, "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
        break;
    case SL_CHAT_LLAMA2: {
        /* the system block joins the first user message, and the whole is stripped */
        sbuf_t content = {0};
        puts_(&content, "");
        if (system) {
            puts_(&content, "<<SYS>>\n");
            puts_(&content, system);
            puts_(&content, "\n<</SYS>>\n\n");
        }
        puts_(&content, user);
        puts_(&b, bos);
        puts_(&b, "[INST] ");
        put_stripped(&b, content.s);
        puts_(&b, " [/INST]");
        free(content.s);
        break;
    }
    case SL_CHAT_MISTRAL:
        if (system) {
            free(b.s);
            sl_errorf(err, "--system: the mistral chat template has no system role (its "
                           "template refuses one)");
            return NULL;
        }
        puts_(&b, bos);
        puts_(&b, "[INST] ");
        puts_(&b, user);
        puts_(&b, " [/INST]");
        break;
    }
    return b.s;
}
