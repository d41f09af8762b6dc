/*
 * cmd_tokenize.c — `tessera tokenize [-m MODEL] -p TEXT [--no-bos] [--parse-special] [--json]`.
 *
 * Prints the token ids of TEXT (taken verbatim: no escape processing) under the model's
 * tokenizer, space-separated, or as {"ids":[...]} with --json. MODEL is a GGUF file or a Hugging
 * Face model directory (its tokenizer.json); it defaults to the bundled stories260K. BOS comes
 * first when the vocabulary asks for it (tokenizer.ggml.add_bos_token or its default), unless
 * --no-bos. Special-token text (<|im_start|>) becomes the token only with
 * --parse-special. The same ids as `llama-tokenize -m MODEL -p TEXT --ids` (which parses special
 * tokens unless given --no-parse-special).
 */
#include "cli/commands.h"
#include "common/buf.h"
#include "common/error.h"
#include "common/flags.h"
#include "common/json.h"
#include "common/paths.h"
#include "model/gguf.h"
#include "model/hf.h"
#include "tokenizer/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define USAGE "tessera tokenize -p TEXT [-m MODEL] [--no-bos] [--parse-special] [--json]"

static int usage_error(const char *what) {
    ts_error_set(TS_E_INVALID, "%s (usage: " USAGE ")", what);
    return ts_cli_fail("tokenize", TS_EXIT_USAGE);
}

static int print_ids(const int32_t *ids, size_t n, bool json) {
    ts_buf out = {0};
    int rc = TS_OK;
    if (json) {
        ts_json_writer w;
        ts_jw_init(&w, &out);
        ts_jw_object_begin(&w);
        ts_jw_key(&w, "ids");
        ts_jw_array_begin(&w);
        for (size_t i = 0; i < n; i++)
            ts_jw_int(&w, ids[i]);
        ts_jw_array_end(&w);
        ts_jw_object_end(&w);
        rc = ts_jw_finish(&w);
    } else {
        for (size_t i = 0; i < n && !rc; i++)
            rc = ts_buf_printf(&out, "%s%d", i ? " " : "", ids[i]);
    }
    if (rc)
        rc = ts_error_set(rc, "out of memory writing %zu ids", n);
    else
        printf("%s\n", out.data ? out.data : "");
    ts_buf_free(&out);
    return rc;
}

int ts_cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *prompt = NULL;
    bool bos = true, json = false, parse_special = false;
    const ts_flag flags[] = {
        {"model", 'm', TS_FLAG_STRING, &model,
         "GGUF file with a tokenizer, or a Hugging Face model directory (tokenizer.json); none: "
         "the bundled stories260K",
         0, 0},
        {"prompt", 'p', TS_FLAG_STRING, &prompt, "the text to tokenize (verbatim)", 0, 0},
        {"bos", 0, TS_FLAG_BOOL, &bos, "start with BOS if the vocabulary adds it (--no-bos: never)",
         0, 0},
        {"parse-special", 0, TS_FLAG_BOOL, &parse_special,
         "special-token text (<|im_start|>, ...) becomes the token instead of staying text", 0, 0},
        {"json", 0, TS_FLAG_BOOL, &json, "print {\"ids\":[...]} instead of plain ids", 0, 0},
    };
    const char *positionals[1];
    ts_flags_result result = {positionals, 1, 0};
    int rc = ts_flags_parse(USAGE, flags, sizeof flags / sizeof flags[0], argc, argv, 1, &result);
    if (rc == TS_FLAGS_HELP) return TS_EXIT_OK;
    if (rc) return ts_cli_fail("tokenize", TS_EXIT_USAGE);
    if (result.n_positionals) return usage_error("unexpected argument (give the text with -p)");
    if (!prompt) return usage_error("missing -p TEXT");

    char path[4096];
    if (!model) {
        rc = ts_find_data_file(TS_DEFAULT_MODEL, path, sizeof path);
        if (rc) return ts_cli_fail("tokenize", TS_EXIT_FAILURE);
        model = path;
    }
    ts_gguf *g = NULL;
    ts_tokenizer *t = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    if (!ts_hf_is_checkpoint(model)) rc = ts_gguf_open(model, &g);
    if (!rc) rc = ts_tokenizer_for_model(model, g, &t);
    if (!rc)
        rc = ts_tokenizer_encode(t, prompt, strlen(prompt), bos && ts_tokenizer_adds_bos(t),
                                 parse_special, &ids, &n);
    if (!rc) rc = print_ids(ids, n, json);
    int code = rc ? ts_cli_fail("tokenize", ts_cli_exit_code(rc)) : TS_EXIT_OK;
    free(ids);
    ts_tokenizer_destroy(t);
    ts_gguf_close(g);
    return code;
}
