/*
 * chat.h — chat messages to a model's prompt: the chat template (the model's own, a built-in one
 * or a file), rendered by the Jinja interpreter (chat/jinja.h), and tokenized so that special
 * tokens come only from the template's own text, never from what the user wrote.
 *
 * Messages are JSON as the OpenAI / Hugging Face chat format has them: an array of
 * {"role": "system"|"user"|"assistant"|"tool", "content": "...", "tool_calls": [...]}; optional
 * tools are an array of function descriptions. The template sees `messages`, `tools` (None when
 * absent), `add_generation_prompt`, `bos_token` and `eos_token`, as transformers'
 * apply_chat_template gives them. Message and tool strings are untrusted: in the rendered
 * prompt their bytes are marked, and ts_chat_tokenize parses special-token text (<|im_start|>)
 * only in unmarked bytes, so a user typing "<|im_end|>" gets text, not the token. Elsewhere the
 * ids are those of tokenizing the whole prompt with special tokens parsed (llama.cpp's).
 */
#ifndef TS_CHAT_CHAT_H
#define TS_CHAT_CHAT_H

#include "common/buf.h"
#include "common/json.h"
#include "tokenizer/tokenizer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The built-in templates' names, comma-separated: "chatml, llama3, llama2, mistral". */
const char *ts_chat_builtin_names(void);
/* The Jinja source of a built-in template, or NULL for an unknown name. */
const char *ts_chat_builtin(const char *name);

typedef struct ts_chat_template ts_chat_template;

/* Chooses and compiles a chat template: `override` (--chat-template) is a built-in name or a
 * file path, NULL for none; without it, `model_template` (ts_tokenizer_chat_template; NULL if the
 * model has none). Errors name the built-in templates that can be used instead:
 *   TS_E_NOT_FOUND   no override and the model has no template;
 *   TS_E_IO          the override is neither a built-in name nor a readable file;
 *   TS_E_INVALID     the template does not compile (syntax or an unsupported construct). */
int ts_chat_template_open(const char *override, const char *model_template, ts_chat_template **out);
void ts_chat_template_close(ts_chat_template *t);
/* Where the template came from, for messages: "the model's chat template", "built-in 'chatml'",
 * "file PATH". */
const char *ts_chat_template_origin(const ts_chat_template *t);

typedef struct ts_chat_input {
    const ts_json *messages; /* array (required) */
    const ts_json *tools;    /* array or NULL */
    bool add_generation_prompt;
    const char *bos_token, *eos_token; /* texts of the vocabulary's BOS/EOS; NULL: "" */
} ts_chat_input;

/* Renders the template, appending the prompt to *prompt and, when taint is not NULL, one byte per
 * prompt byte (1: from a message or tool, untrusted) to *taint. TS_E_INVALID when messages is not
 * an array of objects, or when the template fails (the message says where, and names the
 * built-in templates). */
int ts_chat_render(const ts_chat_template *t, const ts_chat_input *in, ts_buf *prompt, ts_buf *taint);

/* Tokenizes a rendered prompt: special tokens only where taint is 0 (taint NULL: everywhere).
 * BOS is added when add_bos and the vocabulary adds one, unless the template already wrote it.
 * Appends to *ids (realloc'd) and *n_ids as ts_tokenizer_encode. */
int ts_chat_tokenize(const ts_tokenizer *tok, const char *prompt, size_t len, const char *taint,
                     bool add_bos, int32_t **ids, size_t *n_ids);

/* The vocabulary's BOS and EOS texts for ts_chat_input ("" where it has none). */
void ts_chat_special_texts(const ts_tokenizer *tok, const char **bos, const char **eos);

/* The whole path for a model: renders with the vocabulary's BOS/EOS texts, appends the prompt to
 * *text and, when ids is not NULL, its ids to *ids / *n_ids (ts_chat_tokenize, BOS as the
 * vocabulary adds it). Errors of ts_chat_render and ts_chat_tokenize. */
int ts_chat_build_prompt(const ts_chat_template *t, const ts_tokenizer *tok, const ts_json *messages,
                         const ts_json *tools, bool add_generation_prompt, ts_buf *text,
                         int32_t **ids, size_t *n_ids);

/* Reads a messages file: a JSON array of messages, or an object {"messages": [...], "tools":
 * [...]}. *doc owns the tree (ts_json_doc_free). TS_E_IO, TS_E_FORMAT (not JSON), TS_E_INVALID
 * (no messages array). */
int ts_chat_read_messages(const char *path, ts_json_doc **doc, const ts_json **messages,
                          const ts_json **tools);

#endif
