/*
 * chat_template.h — a model's chat template applied to one conversation (an optional system
 * message, one user message, the assistant's generation prompt), for the decoder tasks'
 * `--chat-template`.
 *
 * Hugging Face chat templates are Jinja programs. There is no Jinja engine in C that the
 * project can depend on, so the templates of the families shardline runs are recognised by
 * their text and rendered here, character for character as transformers' jinja2 renders them
 * with add_generation_prompt=True:
 *   chatml   <|im_start|>ROLE\nCONTENT<|im_end|>\n ... <|im_start|>assistant\n  (SmolLM2, Qwen2;
 *            a template that writes a default system message when none is given, as SmolLM2's
 *            and Qwen2's do, has it extracted and used the same way)
 *   llama3   BOS <|start_header_id|>ROLE<|end_header_id|>\n\nTRIM(CONTENT)<|eot_id|> ...
 *            <|start_header_id|>assistant<|end_header_id|>\n\n  (LLaMA-3.0)
 *   llama2   BOS [INST] STRIP(<<SYS>>\nSYSTEM\n<</SYS>>\n\nUSER) [/INST]  (LLaMA-2 chat)
 *   mistral  BOS [INST] USER [/INST]  (Mistral-Instruct v0.1/v0.2: no system role)
 * Any other template (LLaMA-3.1's dated system block, tool-calling templates, templates that
 * think, Gemma, ...) is refused with a message naming the file and the forms supported, so a
 * prompt is never silently rendered in a form the model was not trained on.
 *
 * Where the template comes from: a GGUF file's `tokenizer.chat_template`; a model directory's
 * tokenizer_config.json `chat_template` (a string, or a list of {name, template}: "default"),
 * or its chat_template.jinja. The bos_token the template writes is tokenizer_config.json's, else
 * the tokenizer's BOS token.
 */
#ifndef SL_CHAT_TEMPLATE_H
#define SL_CHAT_TEMPLATE_H

#include <stddef.h>

#include "common/sl_error.h"
#include "models/tokenizers/bpe.h"

typedef enum {
    SL_CHAT_NONE = 0, /* no template: the row is the text */
    SL_CHAT_CHATML,
    SL_CHAT_LLAMA3,
    SL_CHAT_LLAMA2,
    SL_CHAT_MISTRAL,
} sl_chat_form_t;

typedef struct {
    sl_chat_form_t form;
    char *default_system; /* written when no system message is given; NULL: none */
    char *bos_text;       /* the template's bos_token; NULL: the tokenizer's BOS token */
} sl_chat_t;

/* The values --chat-template accepts, for messages and --help. */
#define SL_CHAT_CHOICES "none|auto|chatml|llama3|llama2|mistral"

/* Whether name is one of SL_CHAT_CHOICES. */
int sl_chat_name_valid(const char *name);
const char *sl_chat_form_name(sl_chat_form_t form);

/* Recognises a template's text (len bytes; `source` names it in messages, e.g.
 * "m.gguf: tokenizer.chat_template"). 0 and *out filled, or -1 with a message saying which
 * forms are supported. */
int sl_chat_recognise(const char *text, size_t len, const char *source, sl_chat_t *out,
                      sl_error_t *err);

/* Resolves --chat-template `name` for the model at `model` (a .gguf file or a directory):
 * "none" gives SL_CHAT_NONE; "auto" reads and recognises the model's template (a model without
 * one is an error naming where it was looked for); an explicit form is used as is, without a
 * default system message (tokenizer_config.json's bos_token is still read when there is one). */
int sl_chat_load(const char *model, const char *name, sl_chat_t *out, sl_error_t *err);
void sl_chat_free(sl_chat_t *c);

/* The conversation as text: system (NULL or "": none, then the template's default if it has
 * one), user, then the generation prompt. tok supplies the BOS token when the template has no
 * bos_text. malloc'd, or NULL with err filled (a system message for the mistral form). */
char *sl_chat_render(const sl_chat_t *c, const sl_bpe_t *tok, const char *system, const char *user,
                     sl_error_t *err);

#endif
