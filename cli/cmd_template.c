/*
 * cmd_template.c — `tessera template [-m MODEL] -f MESSAGES.json [--chat-template NAME|FILE]
 * [--no-generation-prompt] [--ids]`: prints the prompt a chat would give the model.
 *
 * MESSAGES.json is an array of {"role", "content"} messages or {"messages": [...], "tools":
 * [...]}. The template is the model's (`tokenizer.chat_template`, or a Hugging Face directory's
 * tokenizer_config.json / chat_template.jinja) unless --chat-template names a built-in one or a
 * file (chat/chat.h). The prompt is printed byte for byte, nothing added; with --ids, its token
 * ids instead (special tokens parsed only where the template wrote them, BOS as the vocabulary
 * adds it), as `tessera chat` would submit them.
 */
#include "chat/chat.h"
#include "cli/commands.h"
#include "common/buf.h"
#include "common/error.h"
#include "common/flags.h"
#include "common/paths.h"
#include "model/gguf.h"
#include "model/hf.h"
#include "tokenizer/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>

#define USAGE                                                                                      \
    "tessera template -f MESSAGES.json [-m MODEL] [--chat-template NAME|FILE] "                    \
    "[--no-generation-prompt] [--ids]"

int ts_cmd_template(int argc, char **argv) {
    const char *model = NULL, *file = NULL, *override = NULL;
    bool generation_prompt = true, print_ids = false;
    const ts_flag flags[] = {
        {"model", 'm', TS_FLAG_STRING, &model,
         "GGUF file or Hugging Face model directory whose chat template and vocabulary are used; "
         "none: the bundled stories260K (which has no template)",
         0, 0},
        {"file", 'f', TS_FLAG_STRING, &file,
         "JSON messages: [{\"role\": ..., \"content\": ...}, ...] or {\"messages\": [...], "
         "\"tools\": [...]}",
         0, 0},
        {"chat-template", 0, TS_FLAG_STRING, &override,
         "a built-in template (chatml, llama3, llama2, mistral) or a Jinja file, instead of the "
         "model's",
         0, 0},
        {"generation-prompt", 0, TS_FLAG_BOOL, &generation_prompt,
         "end with the assistant's turn header (--no-generation-prompt: do not)", 0, 0},
        {"ids", 0, TS_FLAG_BOOL, &print_ids, "print the prompt's token ids instead of its text", 0,
         0},
    };
    ts_flags_result result = {NULL, 0, 0};
    int rc = ts_flags_parse(USAGE, flags, sizeof flags / sizeof flags[0], argc, argv, 1, &result);
    if (rc == TS_FLAGS_HELP) return TS_EXIT_OK;
    if (rc) return ts_cli_fail("template", TS_EXIT_USAGE);
    if (!file) {
        ts_error_set(TS_E_INVALID, "missing -f MESSAGES.json (usage: " USAGE ")");
        return ts_cli_fail("template", TS_EXIT_USAGE);
    }
    char path[4096];
    if (!model) {
        rc = ts_find_data_file(TS_DEFAULT_MODEL, path, sizeof path);
        if (rc) return ts_cli_fail("template", TS_EXIT_FAILURE);
        model = path;
    }
    ts_json_doc *doc = NULL;
    const ts_json *messages = NULL, *tools = NULL;
    ts_gguf *g = NULL;
    ts_tokenizer *t = NULL;
    ts_chat_template *tmpl = NULL;
    ts_buf text = {0}, out = {0};
    int32_t *ids = NULL;
    size_t n_ids = 0;
    rc = ts_chat_read_messages(file, &doc, &messages, &tools);
    if (!rc && !ts_hf_is_checkpoint(model)) rc = ts_gguf_open(model, &g);
    if (!rc) rc = ts_tokenizer_for_model(model, g, &t);
    if (!rc) rc = ts_chat_template_open(override, ts_tokenizer_chat_template(t), &tmpl);
    if (!rc)
        rc = ts_chat_build_prompt(tmpl, t, messages, tools, generation_prompt, &text,
                                  print_ids ? &ids : NULL, &n_ids);
    for (size_t i = 0; !rc && print_ids && i < n_ids; i++)
        rc = ts_buf_printf(&out, "%s%d", i ? " " : "", ids[i]);
    if (!rc && print_ids) rc = ts_buf_append(&out, "\n", 1);
    const ts_buf *shown = print_ids ? &out : &text;
    if (!rc && shown->len && fwrite(shown->data, 1, shown->len, stdout) != shown->len)
        rc = ts_error_set(TS_E_IO, "writing the prompt to stdout failed");
    int code = rc ? ts_cli_fail("template", ts_cli_exit_code(rc)) : TS_EXIT_OK;
    free(ids);
    ts_buf_free(&text);
    ts_buf_free(&out);
    ts_chat_template_close(tmpl);
    ts_tokenizer_destroy(t);
    ts_gguf_close(g);
    ts_json_doc_free(doc);
    return code;
}
