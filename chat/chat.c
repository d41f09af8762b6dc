/*
 * chat.c — the chat layer (chat.h): built-in templates, choosing a model's template, rendering
 * messages and tokenizing the rendered prompt.
 *
 * The built-in templates are the upstream ones of their families, verbatim: ChatML without a
 * default system message (as llama.cpp's "chatml"), Meta Llama 3 Instruct, Llama 2 chat, and
 * Mistral Instruct v0.1/v0.2.
 */
#include "chat/chat.h"
#include "chat/jinja.h"
#include "common/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct builtin {
    const char *name, *source;
} builtin;

static const builtin BUILTINS[] = {
    {"chatml",
     "{%- for message in messages %}"
     "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
     "{%- endfor %}"
     "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"},
    {"llama3",
     "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
     "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | "
     "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
     "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
     "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"},
    {"llama2",
     "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set "
     "system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% "
     "set system_message = false %}{% endif %}{% for message in loop_messages %}{% if "
     "(message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation "
     "roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == "
     "0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
     "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] "
     "%}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() "
     "+ ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + "
     "eos_token }}{% endif %}{% endfor %}"},
    {"mistral",
     "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
     "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
     "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ "
     "'[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ "
     "message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant "
     "roles are supported!') }}{% endif %}{% endfor %}"},
};

enum { N_BUILTINS = sizeof BUILTINS / sizeof BUILTINS[0] };

const char *ts_chat_builtin_names(void) { return "chatml, llama3, llama2, mistral"; }

const char *ts_chat_builtin(const char *name) {
    for (size_t i = 0; name && i < N_BUILTINS; i++)
        if (!strcmp(BUILTINS[i].name, name)) return BUILTINS[i].source;
    return NULL;
}

struct ts_chat_template {
    ts_jinja *jinja;
    char origin[512];
};

#define HINT "; use --chat-template with a file or a built-in template (%s)"

int ts_chat_template_open(const char *override, const char *model_template, ts_chat_template **out) {
    *out = NULL;
    ts_chat_template *t = calloc(1, sizeof *t);
    if (!t) return ts_error_set(TS_E_NOMEM, "out of memory");
    ts_buf file = {0};
    const char *src = NULL;
    size_t len = 0;
    int rc = TS_OK;
    if (override && ts_chat_builtin(override)) {
        src = ts_chat_builtin(override);
        len = strlen(src);
        snprintf(t->origin, sizeof t->origin, "built-in '%s'", override);
    } else if (override) {
        rc = ts_buf_read_file(&file, override);
        if (rc) {
            char why[512];
            snprintf(why, sizeof why, "%s", ts_error_message());
            rc = ts_error_set(TS_E_IO, "--chat-template %s: not a built-in template (%s) and not a "
                                       "readable file (%s)",
                              override, ts_chat_builtin_names(), why);
        } else {
            src = file.data ? file.data : "";
            len = file.len;
            snprintf(t->origin, sizeof t->origin, "file %s", override);
        }
    } else if (model_template) {
        src = model_template;
        len = strlen(src);
        snprintf(t->origin, sizeof t->origin, "the model's chat template");
    } else {
        rc = ts_error_set(TS_E_NOT_FOUND, "the model has no chat template (tokenizer.chat_template)" HINT,
                          ts_chat_builtin_names());
    }
    if (!rc) {
        rc = ts_jinja_compile(src, len, &t->jinja);
        if (rc) rc = ts_error_wrap(rc, "%s cannot be used", t->origin);
        if (rc == TS_E_INVALID) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", ts_error_message());
            rc = ts_error_set(rc, "%s" HINT, msg, ts_chat_builtin_names());
        }
    }
    ts_buf_free(&file);
    if (rc) {
        ts_chat_template_close(t);
        return rc;
    }
    *out = t;
    return TS_OK;
}

void ts_chat_template_close(ts_chat_template *t) {
    if (!t) return;
    ts_jinja_destroy(t->jinja);
    free(t);
}

const char *ts_chat_template_origin(const ts_chat_template *t) { return t->origin; }

int ts_chat_render(const ts_chat_template *t, const ts_chat_input *in, ts_buf *prompt, ts_buf *taint) {
    const ts_json *m = in->messages;
    if (!m || m->type != TS_JSON_ARRAY)
        return ts_error_set(TS_E_INVALID, "messages: expected an array of {\"role\", \"content\"} objects");
    for (size_t i = 0; i < m->length; i++)
        if (m->items[i].type != TS_JSON_OBJECT)
            return ts_error_set(TS_E_INVALID, "messages[%zu]: expected an object", i);
    if (in->tools && in->tools->type != TS_JSON_ARRAY)
        return ts_error_set(TS_E_INVALID, "tools: expected an array");
    ts_jinja_var vars[] = {
        {.name = "messages", .kind = TS_JINJA_JSON, .json = m, .untrusted = true},
        {.name = "tools", .kind = in->tools ? TS_JINJA_JSON : TS_JINJA_NONE, .json = in->tools,
         .untrusted = true},
        {.name = "documents", .kind = TS_JINJA_NONE},
        {.name = "add_generation_prompt", .kind = TS_JINJA_BOOL, .boolean = in->add_generation_prompt},
        {.name = "bos_token", .kind = TS_JINJA_STRING, .string = in->bos_token ? in->bos_token : ""},
        {.name = "eos_token", .kind = TS_JINJA_STRING, .string = in->eos_token ? in->eos_token : ""},
    };
    int rc = ts_jinja_render(t->jinja, vars, sizeof vars / sizeof vars[0], prompt, taint);
    if (rc == TS_E_INVALID) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", ts_error_message());
        rc = ts_error_set(rc, "rendering %s: %s (built-in templates: %s)", t->origin, msg,
                          ts_chat_builtin_names());
    } else if (rc) {
        rc = ts_error_wrap(rc, "rendering %s", t->origin);
    }
    return rc;
}

void ts_chat_special_texts(const ts_tokenizer *tok, const char **bos, const char **eos) {
    int32_t b = ts_tokenizer_bos(tok), e = ts_tokenizer_eos(tok);
    *bos = b >= 0 ? ts_tokenizer_token_text(tok, b) : "";
    *eos = e >= 0 ? ts_tokenizer_token_text(tok, e) : "";
}

int ts_chat_tokenize(const ts_tokenizer *tok, const char *prompt, size_t len, const char *taint,
                     bool add_bos, int32_t **ids, size_t *n_ids) {
    int32_t bos = ts_tokenizer_bos(tok);
    if (add_bos && bos >= 0) { /* the template may have written BOS itself (llama3, mistral) */
        const char *text = ts_tokenizer_token_text(tok, bos);
        size_t n = strlen(text);
        bool written = n && len >= n && !memcmp(prompt, text, n);
        for (size_t i = 0; written && taint && i < n; i++)
            written = !taint[i];
        if (written) add_bos = false;
    }
    return ts_tokenizer_encode_trusted(tok, prompt, len, taint, add_bos && ts_tokenizer_adds_bos(tok),
                                       ids, n_ids);
}

int ts_chat_build_prompt(const ts_chat_template *t, const ts_tokenizer *tok, const ts_json *messages,
                         const ts_json *tools, bool add_generation_prompt, ts_buf *text,
                         int32_t **ids, size_t *n_ids) {
    ts_chat_input in = {messages, tools, add_generation_prompt, NULL, NULL};
    ts_chat_special_texts(tok, &in.bos_token, &in.eos_token);
    ts_buf taint = {0};
    size_t start = text->len;
    int rc = ts_chat_render(t, &in, text, &taint);
    if (!rc && ids)
        rc = ts_chat_tokenize(tok, text->data ? text->data + start : "", text->len - start,
                              taint.data, true, ids, n_ids);
    ts_buf_free(&taint);
    return rc;
}

int ts_chat_read_messages(const char *path, ts_json_doc **doc, const ts_json **messages,
                          const ts_json **tools) {
    *doc = NULL;
    *messages = *tools = NULL;
    ts_buf text = {0};
    int rc = ts_buf_read_file(&text, path);
    if (!rc) rc = ts_json_parse(text.data ? text.data : "", text.len, doc);
    if (rc == TS_E_FORMAT) rc = ts_error_wrap(rc, "%s", path);
    ts_buf_free(&text);
    if (rc) return rc;
    const ts_json *root = ts_json_root(*doc);
    if (root->type == TS_JSON_OBJECT) {
        *messages = ts_json_get(root, "messages");
        *tools = ts_json_get(root, "tools");
        if (*tools && (*tools)->type == TS_JSON_NULL) *tools = NULL;
    } else {
        *messages = root;
    }
    if (!*messages || (*messages)->type != TS_JSON_ARRAY) {
        ts_json_doc_free(*doc);
        *doc = NULL;
        return ts_error_set(TS_E_INVALID, "%s: expected a JSON array of messages, or an object "
                                          "with a \"messages\" array (and optional \"tools\")",
                            path);
    }
    return TS_OK;
}
