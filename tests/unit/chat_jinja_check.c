/*
 * chat_jinja_check.c — the C half of tests/integration/test_chat_jinja.py (no test of its own).
 *
 * Usage: chat_jinja_check CASES.jsonl | chat_jinja_check --builtin NAME (prints its source)
 * Each line of CASES is {"template": SOURCE, "vars": {NAME: JSON value, ...}}; for each, one line
 * goes to stdout: {"ok": true, "output": RENDERED} or {"ok": false, "error": MESSAGE}. The script
 * renders the same cases with Python's jinja2 (the transformers environment) and compares.
 */
#include "chat/chat.h"
#include "chat/jinja.h"
#include "common/buf.h"
#include "common/error.h"
#include "common/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int run_case(const ts_json *c, ts_buf *line) {
    const ts_json *tmpl = ts_json_get(c, "template"), *vars = ts_json_get(c, "vars");
    if (!tmpl || tmpl->type != TS_JSON_STRING || (vars && vars->type != TS_JSON_OBJECT)) {
        fprintf(stderr, "chat_jinja_check: a case needs \"template\" and \"vars\"\n");
        return 1;
    }
    size_t n = vars ? vars->length : 0;
    ts_jinja_var *v = calloc(n ? n : 1, sizeof *v);
    if (!v) return 1;
    for (size_t i = 0; i < n; i++)
        v[i] = (ts_jinja_var){.name = vars->members[i].key, .kind = TS_JINJA_JSON,
                              .json = &vars->members[i].value};
    ts_jinja *t = NULL;
    ts_buf out = {0};
    int rc = ts_jinja_compile(tmpl->string, tmpl->length, &t);
    if (!rc) rc = ts_jinja_render(t, v, n, &out, NULL);
    ts_json_writer w;
    ts_jw_init(&w, line);
    ts_jw_object_begin(&w);
    ts_jw_key(&w, "ok");
    ts_jw_bool(&w, rc == 0);
    ts_jw_key(&w, rc ? "error" : "output");
    if (rc) ts_jw_string(&w, ts_error_message());
    else ts_jw_string_n(&w, out.data ? out.data : "", out.len);
    ts_jw_object_end(&w);
    int wrc = ts_jw_finish(&w);
    ts_buf_free(&out);
    ts_jinja_destroy(t);
    free(v);
    return wrc ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--builtin")) {
        const char *src = ts_chat_builtin(argv[2]);
        if (src) fputs(src, stdout);
        return src ? 0 : 1;
    }
    if (argc != 2) {
        fprintf(stderr, "usage: chat_jinja_check CASES.jsonl\n");
        return 2;
    }
    ts_buf text = {0};
    if (ts_buf_read_file(&text, argv[1])) {
        fprintf(stderr, "chat_jinja_check: %s\n", ts_error_message());
        return 1;
    }
    int failed = 0;
    for (char *p = text.data, *end = text.data + text.len; p && p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (len) {
            ts_json_doc *doc = NULL;
            if (ts_json_parse(p, len, &doc)) {
                fprintf(stderr, "chat_jinja_check: %s\n", ts_error_message());
                failed = 1;
                break;
            }
            ts_buf line = {0};
            failed |= run_case(ts_json_root(doc), &line);
            printf("%s\n", line.data ? line.data : "");
            ts_buf_free(&line);
            ts_json_doc_free(doc);
        }
        p = nl ? nl + 1 : end;
    }
    ts_buf_free(&text);
    return failed;
}
