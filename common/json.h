/*
 * json.h — JSON writing (streaming, into a ts_buf) and parsing (a read-only document tree).
 *
 * Writer: call the ts_jw_* functions in document order; commas and escaping are handled. Errors
 * (out of memory, misuse such as a value where a key is due) are sticky: check ts_jw_error() or
 * the return of ts_jw_finish() once at the end.
 *
 * Parser: ts_json_parse builds a tree owned by a ts_json_doc (one allocation arena; free it with
 * ts_json_doc_free). Strings are decoded to UTF-8 (\uXXXX and surrogate pairs included) and
 * NUL-terminated; they may contain NUL bytes, so use the length when that matters. Input that is
 * not valid JSON gives TS_E_FORMAT with "line L, column C: what was expected". Nesting deeper than
 * 128 levels is refused, so hostile input cannot exhaust the stack.
 */
#ifndef TS_COMMON_JSON_H
#define TS_COMMON_JSON_H

#include "common/buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- writer ---- */

enum { TS_JW_MAX_DEPTH = 64 };

typedef struct ts_json_writer {
    ts_buf *out;
    int depth;
    int error;                           /* first error code, sticky */
    bool has_items[TS_JW_MAX_DEPTH];     /* per level: a value was written (comma due) */
    bool in_object[TS_JW_MAX_DEPTH];     /* per level: object (keys) or array */
    bool key_pending;                    /* a key was written, its value is due */
} ts_json_writer;

void ts_jw_init(ts_json_writer *w, ts_buf *out);
void ts_jw_object_begin(ts_json_writer *w);
void ts_jw_object_end(ts_json_writer *w);
void ts_jw_array_begin(ts_json_writer *w);
void ts_jw_array_end(ts_json_writer *w);
void ts_jw_key(ts_json_writer *w, const char *key);
void ts_jw_string(ts_json_writer *w, const char *s);
/* Writes n bytes as a JSON string; invalid UTF-8 bytes become U+FFFD so output stays valid JSON. */
void ts_jw_string_n(ts_json_writer *w, const char *s, size_t n);
void ts_jw_int(ts_json_writer *w, int64_t v);
/* Non-finite values are written as null (JSON has no NaN). */
void ts_jw_double(ts_json_writer *w, double v);
void ts_jw_bool(ts_json_writer *w, bool v);
void ts_jw_null(ts_json_writer *w);
/* Writes a parsed value (ts_json, below) as it is: what a stored JSON text re-emits through. */
struct ts_json;
void ts_jw_value(ts_json_writer *w, const struct ts_json *v);
/* Returns 0 if the document is complete and no error happened, else the error code. */
int ts_jw_finish(ts_json_writer *w);

/* ---- parser ---- */

typedef enum {
    TS_JSON_NULL,
    TS_JSON_BOOL,
    TS_JSON_NUMBER,
    TS_JSON_STRING,
    TS_JSON_ARRAY,
    TS_JSON_OBJECT,
} ts_json_type;

typedef struct ts_json ts_json;
typedef struct ts_json_member ts_json_member;

struct ts_json {
    ts_json_type type;
    bool boolean;
    bool is_integer; /* number written without fraction/exponent and fits int64 */
    double number;
    int64_t integer;
    const char *string; /* TS_JSON_STRING: decoded, NUL-terminated */
    size_t length;      /* string bytes, or number of array items / object members */
    const ts_json *items;         /* TS_JSON_ARRAY */
    const ts_json_member *members; /* TS_JSON_OBJECT, in document order */
};

struct ts_json_member {
    const char *key;
    size_t key_length;
    ts_json value;
};

typedef struct ts_json_doc ts_json_doc;

int ts_json_parse(const char *text, size_t length, ts_json_doc **out);
/* Reads and parses a whole file. TS_E_IO ("PATH: No such file or directory") when it cannot be
 * read, TS_E_FORMAT ("PATH: line L, column C: ...") when it is not JSON. */
int ts_json_parse_file(const char *path, ts_json_doc **out);
const ts_json *ts_json_root(const ts_json_doc *doc);
void ts_json_doc_free(ts_json_doc *doc);

/* Member lookup in an object (first match); NULL if absent or `obj` is not an object. */
const ts_json *ts_json_get(const ts_json *obj, const char *key);

/* Typed getters: TS_E_NOT_FOUND if the key is absent, TS_E_INVALID if it has another type or
 * (for ints) is not an integer; the message names the key. */
int ts_json_get_int(const ts_json *obj, const char *key, int64_t *out);
int ts_json_get_double(const ts_json *obj, const char *key, double *out);
int ts_json_get_bool(const ts_json *obj, const char *key, bool *out);
int ts_json_get_string(const ts_json *obj, const char *key, const char **out, size_t *length);
int ts_json_get_array(const ts_json *obj, const char *key, const ts_json **out);

#endif
