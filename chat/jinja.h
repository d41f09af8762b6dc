/*
 * jinja.h — a Jinja2 subset interpreter for chat templates.
 *
 * Renders the chat templates models ship (`tokenizer.chat_template` in a GGUF, tokenizer_config.json
 * or chat_template.jinja of a Hugging Face directory) byte for byte as Hugging Face transformers
 * renders them: Jinja2's ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks and the
 * loop controls, its `tojson` (json.dumps, ensure_ascii off, keys in order), `raise_exception` and
 * `strftime_now`. Held to Python's jinja2 by tests/integration/test_chat_jinja.py.
 *
 * Supported: text, {{ }}, {% %}, {# #}, whitespace control (-, +), raw; if/elif/else, for (tuple
 * targets, `if` filter, else, loop.index/index0/revindex/revindex0/first/last/length/previtem/
 * nextitem/depth/cycle), set (names, tuples, namespace attributes, set blocks), macro and calls,
 * break/continue, generation blocks; literals, lists, tuples, dicts, attributes, subscripts and
 * slices, calls with keyword arguments, filters, tests, every Jinja operator; the filters, tests,
 * string/dict methods and globals listed in jinja_builtins.c. Values: undefined, none, bool, int
 * (64-bit, overflow refused), float, string, list/tuple, dict, namespace.
 *
 * Not supported (each an error naming it, never a crash): template inheritance and inclusion
 * (extends, block, include, import), call blocks, filter blocks, `with`, recursive loops, Python
 * %-formatting, big integers, Unicode case mapping (upper/lower/title change ASCII letters only),
 * and any filter, test, method or global not listed.
 *
 * Limits (a template is untrusted input): nesting 100 tags / 200 expression levels, 100 macro
 * calls deep, 10^7 evaluation steps, 256 MiB of values, 64 MiB of output; past them the render
 * fails with TS_E_INVALID naming the limit.
 *
 * Thread safety: a compiled template is immutable; several threads may render it at once.
 */
#ifndef TS_CHAT_JINJA_H
#define TS_CHAT_JINJA_H

#include "common/buf.h"
#include "common/json.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct ts_jinja ts_jinja;

/* Compiles len bytes of template source. TS_E_INVALID for a syntax error or an unsupported
 * construct ("line N: unknown tag 'extends' (not supported)"), TS_E_NOMEM. */
int ts_jinja_compile(const char *src, size_t len, ts_jinja **out);
void ts_jinja_destroy(ts_jinja *t);

typedef enum {
    TS_JINJA_JSON,   /* json: a parsed JSON value (messages, tools) */
    TS_JINJA_STRING, /* string */
    TS_JINJA_BOOL,   /* boolean */
    TS_JINJA_NONE,   /* Python's None */
} ts_jinja_var_kind;

/* One variable of the render. Strings of an `untrusted` variable are marked in the taint. */
typedef struct ts_jinja_var {
    const char *name;
    ts_jinja_var_kind kind;
    const ts_json *json;
    const char *string;
    bool boolean;
    bool untrusted;
} ts_jinja_var;

/* Renders the template with the variables, appending to *out. When `taint` is not NULL, one byte
 * per output byte is appended to it: 1 where the byte came from an untrusted string, else 0.
 * Errors (TS_E_INVALID, message "line N: ..."): an undefined value used, a type error, an unknown
 * filter/test/method, raise_exception (its message), a limit reached. On error *out and *taint
 * hold what was rendered so far. */
int ts_jinja_render(const ts_jinja *t, const ts_jinja_var *vars, size_t n_vars, ts_buf *out,
                    ts_buf *taint);

#endif
