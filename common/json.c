/* json.c — see json.h. */
#include "common/json.h"

#include "common/error.h"
#include "common/utf8.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ================================ writer ================================ */

void ts_jw_init(ts_json_writer *w, ts_buf *out) {
    memset(w, 0, sizeof *w);
    w->out = out;
}

static void jw_fail(ts_json_writer *w, int code) {
    if (!w->error) w->error = code;
}

static void jw_raw(ts_json_writer *w, const char *s, size_t n) {
    if (!w->error && ts_buf_append(w->out, s, n) != TS_OK) jw_fail(w, TS_E_NOMEM);
}

/* Emits the separator due before a value and checks that a value is allowed here. */
static void jw_before_value(ts_json_writer *w) {
    if (w->depth > 0 && w->in_object[w->depth - 1]) {
        if (!w->key_pending) jw_fail(w, TS_E_INTERNAL); /* value in an object without a key */
        w->key_pending = false;
        return;
    }
    if (w->depth > 0) {
        if (w->has_items[w->depth - 1]) jw_raw(w, ",", 1);
        w->has_items[w->depth - 1] = true;
    }
}

static void jw_open(ts_json_writer *w, bool object) {
    jw_before_value(w);
    if (w->depth >= TS_JW_MAX_DEPTH) {
        jw_fail(w, TS_E_INTERNAL);
        return;
    }
    jw_raw(w, object ? "{" : "[", 1);
    w->has_items[w->depth] = false;
    w->in_object[w->depth] = object;
    w->depth++;
}

static void jw_close(ts_json_writer *w, bool object) {
    if (w->depth == 0 || w->in_object[w->depth - 1] != object || w->key_pending) {
        jw_fail(w, TS_E_INTERNAL);
        return;
    }
    w->depth--;
    jw_raw(w, object ? "}" : "]", 1);
}

void ts_jw_object_begin(ts_json_writer *w) { jw_open(w, true); }
void ts_jw_object_end(ts_json_writer *w) { jw_close(w, true); }
void ts_jw_array_begin(ts_json_writer *w) { jw_open(w, false); }
void ts_jw_array_end(ts_json_writer *w) { jw_close(w, false); }

/* Length of the valid UTF-8 character at s (1..4), or 0 if the bytes there are not valid UTF-8
 * (then one byte is replaced and the next one looked at). */
static size_t utf8_valid_len(const unsigned char *s, size_t n) {
    uint32_t cp;
    size_t len = ts_utf8_decode((const char *)s, n, &cp);
    return cp == TS_UTF8_INVALID || cp == TS_UTF8_INCOMPLETE ? 0 : len;
}

static void jw_escaped(ts_json_writer *w, const char *s, size_t n) {
    jw_raw(w, "\"", 1);
    const unsigned char *p = (const unsigned char *)s;
    size_t start = 0, i = 0;
    while (i < n) {
        unsigned c = p[i];
        const char *esc = NULL;
        char tmp[8];
        size_t adv = 1;
        if (c == '"') esc = "\\\"";
        else if (c == '\\') esc = "\\\\";
        else if (c == '\n') esc = "\\n";
        else if (c == '\r') esc = "\\r";
        else if (c == '\t') esc = "\\t";
        else if (c < 0x20) {
            snprintf(tmp, sizeof tmp, "\\u%04x", c);
            esc = tmp;
        } else if (c >= 0x80) {
            adv = utf8_valid_len(p + i, n - i);
            if (adv == 0) {
                esc = "\xef\xbf\xbd"; /* U+FFFD for a byte that is not valid UTF-8 */
                adv = 1;
            }
        }
        if (esc) {
            jw_raw(w, s + start, i - start);
            jw_raw(w, esc, strlen(esc));
            start = i + adv;
        }
        i += adv;
    }
    jw_raw(w, s + start, n - start);
    jw_raw(w, "\"", 1);
}

void ts_jw_key(ts_json_writer *w, const char *key) {
    if (w->depth == 0 || !w->in_object[w->depth - 1] || w->key_pending) {
        jw_fail(w, TS_E_INTERNAL);
        return;
    }
    if (w->has_items[w->depth - 1]) jw_raw(w, ",", 1);
    w->has_items[w->depth - 1] = true;
    jw_escaped(w, key, strlen(key));
    jw_raw(w, ":", 1);
    w->key_pending = true;
}

void ts_jw_string_n(ts_json_writer *w, const char *s, size_t n) {
    jw_before_value(w);
    jw_escaped(w, s, n);
}

void ts_jw_string(ts_json_writer *w, const char *s) { ts_jw_string_n(w, s, strlen(s)); }

void ts_jw_int(ts_json_writer *w, int64_t v) {
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%lld", (long long)v);
    jw_before_value(w);
    jw_raw(w, tmp, (size_t)n);
}

void ts_jw_double(ts_json_writer *w, double v) {
    if (!isfinite(v)) {
        ts_jw_null(w);
        return;
    }
    char tmp[40];
    int n = snprintf(tmp, sizeof tmp, "%.9g", v);
    jw_before_value(w);
    jw_raw(w, tmp, (size_t)n);
}

void ts_jw_bool(ts_json_writer *w, bool v) {
    jw_before_value(w);
    jw_raw(w, v ? "true" : "false", v ? 4 : 5);
}

void ts_jw_null(ts_json_writer *w) {
    jw_before_value(w);
    jw_raw(w, "null", 4);
}

void ts_jw_value(ts_json_writer *w, const ts_json *v) {
    switch (v->type) {
    case TS_JSON_NULL: ts_jw_null(w); break;
    case TS_JSON_BOOL: ts_jw_bool(w, v->boolean); break;
    case TS_JSON_NUMBER:
        if (v->is_integer)
            ts_jw_int(w, v->integer);
        else
            ts_jw_double(w, v->number);
        break;
    case TS_JSON_STRING: ts_jw_string_n(w, v->string, v->length); break;
    case TS_JSON_ARRAY:
        ts_jw_array_begin(w);
        for (size_t i = 0; i < v->length; i++)
            ts_jw_value(w, &v->items[i]);
        ts_jw_array_end(w);
        break;
    case TS_JSON_OBJECT:
        ts_jw_object_begin(w);
        for (size_t i = 0; i < v->length; i++) {
            ts_jw_key(w, v->members[i].key);
            ts_jw_value(w, &v->members[i].value);
        }
        ts_jw_object_end(w);
        break;
    }
}

int ts_jw_finish(ts_json_writer *w) {
    if (w->error) return ts_error_set(w->error, "JSON writer: %s", ts_error_name(w->error));
    if (w->depth != 0 || w->key_pending)
        return ts_error_set(TS_E_INTERNAL, "JSON writer: document not complete");
    return TS_OK;
}

/* ================================ parser ================================ */

enum { JSON_MAX_DEPTH = 128 };

typedef struct arena_chunk {
    struct arena_chunk *next;
    size_t used, cap;
    max_align_t data[];
} arena_chunk;

struct ts_json_doc {
    arena_chunk *chunks;
    ts_json root;
};

typedef struct {
    const char *text;
    size_t length;
    size_t pos;
    ts_json_doc *doc;
    int depth;
} parser;

static void *arena_alloc(ts_json_doc *doc, size_t n) {
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    arena_chunk *c = doc->chunks;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        c = malloc(sizeof *c + cap);
        if (!c) return NULL;
        c->used = 0;
        c->cap = cap;
        c->next = doc->chunks;
        doc->chunks = c;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    return p;
}

static int parse_fail(parser *p, const char *what) {
    size_t line = 1, col = 1;
    for (size_t i = 0; i < p->pos && i < p->length; i++) {
        if (p->text[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    return ts_error_set(TS_E_FORMAT, "line %zu, column %zu: %s", line, col, what);
}

static void skip_ws(parser *p) {
    while (p->pos < p->length) {
        char c = p->text[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static int parse_value(parser *p, ts_json *out);

static int hex4(parser *p, unsigned *out) {
    if (p->length - p->pos < 4) return parse_fail(p, "truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p->text[p->pos + (size_t)i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return parse_fail(p, "bad hex digit in \\u escape");
    }
    p->pos += 4;
    *out = v;
    return TS_OK;
}

/* Parses a string at p->pos (which is at the opening quote). Decoded bytes go to the arena. */
static int parse_string(parser *p, const char **out, size_t *out_len) {
    p->pos++; /* opening quote */
    size_t start = p->pos;
    size_t end = start;
    while (end < p->length && p->text[end] != '"') end += (p->text[end] == '\\') ? 2 : 1;
    if (end >= p->length) return parse_fail(p, "unterminated string");
    /* the decoded string is never longer than the raw text */
    char *dst = arena_alloc(p->doc, end - start + 1);
    if (!dst) return ts_error_set(TS_E_NOMEM, "out of memory parsing JSON");
    size_t n = 0;
    while (p->pos < end) {
        unsigned char c = (unsigned char)p->text[p->pos];
        if (c < 0x20) return parse_fail(p, "control character in string");
        if (c != '\\') {
            dst[n++] = (char)c;
            p->pos++;
            continue;
        }
        p->pos++;
        char e = p->text[p->pos++];
        switch (e) {
        case '"': dst[n++] = '"'; break;
        case '\\': dst[n++] = '\\'; break;
        case '/': dst[n++] = '/'; break;
        case 'b': dst[n++] = '\b'; break;
        case 'f': dst[n++] = '\f'; break;
        case 'n': dst[n++] = '\n'; break;
        case 'r': dst[n++] = '\r'; break;
        case 't': dst[n++] = '\t'; break;
        case 'u': {
            unsigned cp;
            int rc = hex4(p, &cp);
            if (rc) return rc;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                unsigned lo;
                if (p->pos + 6 > end || p->text[p->pos] != '\\' || p->text[p->pos + 1] != 'u')
                    return parse_fail(p, "unpaired surrogate in \\u escape");
                p->pos += 2;
                rc = hex4(p, &lo);
                if (rc) return rc;
                if (lo < 0xdc00 || lo > 0xdfff) return parse_fail(p, "bad low surrogate");
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                return parse_fail(p, "unpaired surrogate in \\u escape");
            }
            n += ts_utf8_encode(cp, dst + n);
            break;
        }
        default: return parse_fail(p, "bad escape in string");
        }
    }
    dst[n] = '\0';
    p->pos = end + 1;
    *out = dst;
    *out_len = n;
    return TS_OK;
}

static int parse_number(parser *p, ts_json *out) {
    size_t start = p->pos;
    bool integral = true;
    if (p->text[p->pos] == '-') p->pos++;
    if (p->pos >= p->length || p->text[p->pos] < '0' || p->text[p->pos] > '9')
        return parse_fail(p, "bad number");
    if (p->text[p->pos] == '0') {
        p->pos++;
    } else {
        while (p->pos < p->length && p->text[p->pos] >= '0' && p->text[p->pos] <= '9') p->pos++;
    }
    if (p->pos < p->length && p->text[p->pos] == '.') {
        integral = false;
        p->pos++;
        if (p->pos >= p->length || p->text[p->pos] < '0' || p->text[p->pos] > '9')
            return parse_fail(p, "bad number: digit expected after '.'");
        while (p->pos < p->length && p->text[p->pos] >= '0' && p->text[p->pos] <= '9') p->pos++;
    }
    if (p->pos < p->length && (p->text[p->pos] == 'e' || p->text[p->pos] == 'E')) {
        integral = false;
        p->pos++;
        if (p->pos < p->length && (p->text[p->pos] == '+' || p->text[p->pos] == '-')) p->pos++;
        if (p->pos >= p->length || p->text[p->pos] < '0' || p->text[p->pos] > '9')
            return parse_fail(p, "bad number: digit expected in exponent");
        while (p->pos < p->length && p->text[p->pos] >= '0' && p->text[p->pos] <= '9') p->pos++;
    }
    char tmp[64];
    size_t n = p->pos - start;
    if (n >= sizeof tmp) {
        integral = false; /* very long literal: parse as double from a heap copy */
    }
    char *copy = n < sizeof tmp ? tmp : arena_alloc(p->doc, n + 1);
    if (!copy) return ts_error_set(TS_E_NOMEM, "out of memory parsing JSON");
    memcpy(copy, p->text + start, n);
    copy[n] = '\0';
    out->type = TS_JSON_NUMBER;
    out->number = strtod(copy, NULL);
    if (integral) {
        errno = 0;
        long long v = strtoll(copy, NULL, 10);
        if (errno == 0) {
            out->is_integer = true;
            out->integer = v;
        }
    }
    return TS_OK;
}

static int parse_literal(parser *p, const char *word, ts_json *out, ts_json_type type, bool b) {
    size_t n = strlen(word);
    if (p->length - p->pos < n || memcmp(p->text + p->pos, word, n) != 0)
        return parse_fail(p, "unexpected character");
    p->pos += n;
    out->type = type;
    out->boolean = b;
    return TS_OK;
}

/* Growable temporary vector used while an array/object is being parsed. */
typedef struct {
    void *data;
    size_t n, cap, elem;
} tmpvec;

static void *tmpvec_push(tmpvec *v) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 8;
        void *d = realloc(v->data, cap * v->elem);
        if (!d) return NULL;
        v->data = d;
        v->cap = cap;
    }
    void *slot = (char *)v->data + v->n * v->elem;
    memset(slot, 0, v->elem);
    v->n++;
    return slot;
}

static int finish_vec(parser *p, tmpvec *v, const void **out) {
    *out = NULL;
    if (v->n == 0) return TS_OK;
    void *dst = arena_alloc(p->doc, v->n * v->elem);
    if (!dst) return ts_error_set(TS_E_NOMEM, "out of memory parsing JSON");
    memcpy(dst, v->data, v->n * v->elem);
    *out = dst;
    return TS_OK;
}

static int parse_array(parser *p, ts_json *out) {
    p->pos++;
    tmpvec v = {NULL, 0, 0, sizeof(ts_json)};
    int rc = TS_OK;
    skip_ws(p);
    if (p->pos < p->length && p->text[p->pos] == ']') {
        p->pos++;
    } else {
        for (;;) {
            ts_json *slot = tmpvec_push(&v);
            if (!slot) { rc = ts_error_set(TS_E_NOMEM, "out of memory parsing JSON"); break; }
            rc = parse_value(p, slot);
            if (rc) break;
            skip_ws(p);
            if (p->pos < p->length && p->text[p->pos] == ',') { p->pos++; continue; }
            if (p->pos < p->length && p->text[p->pos] == ']') { p->pos++; break; }
            rc = parse_fail(p, "',' or ']' expected in array");
            break;
        }
    }
    if (!rc) {
        const void *items;
        rc = finish_vec(p, &v, &items);
        out->type = TS_JSON_ARRAY;
        out->items = items;
        out->length = v.n;
    }
    free(v.data);
    return rc;
}

static int parse_object(parser *p, ts_json *out) {
    p->pos++;
    tmpvec v = {NULL, 0, 0, sizeof(ts_json_member)};
    int rc = TS_OK;
    skip_ws(p);
    if (p->pos < p->length && p->text[p->pos] == '}') {
        p->pos++;
    } else {
        for (;;) {
            skip_ws(p);
            if (p->pos >= p->length || p->text[p->pos] != '"') {
                rc = parse_fail(p, "string key expected in object");
                break;
            }
            ts_json_member *m = tmpvec_push(&v);
            if (!m) { rc = ts_error_set(TS_E_NOMEM, "out of memory parsing JSON"); break; }
            rc = parse_string(p, &m->key, &m->key_length);
            if (rc) break;
            skip_ws(p);
            if (p->pos >= p->length || p->text[p->pos] != ':') {
                rc = parse_fail(p, "':' expected after object key");
                break;
            }
            p->pos++;
            rc = parse_value(p, &m->value);
            if (rc) break;
            skip_ws(p);
            if (p->pos < p->length && p->text[p->pos] == ',') { p->pos++; continue; }
            if (p->pos < p->length && p->text[p->pos] == '}') { p->pos++; break; }
            rc = parse_fail(p, "',' or '}' expected in object");
            break;
        }
    }
    if (!rc) {
        const void *members;
        rc = finish_vec(p, &v, &members);
        out->type = TS_JSON_OBJECT;
        out->members = members;
        out->length = v.n;
    }
    free(v.data);
    return rc;
}

static int parse_value(parser *p, ts_json *out) {
    memset(out, 0, sizeof *out);
    skip_ws(p);
    if (p->pos >= p->length) return parse_fail(p, "value expected");
    if (++p->depth > JSON_MAX_DEPTH) return parse_fail(p, "nesting too deep");
    int rc;
    char c = p->text[p->pos];
    switch (c) {
    case '{': rc = parse_object(p, out); break;
    case '[': rc = parse_array(p, out); break;
    case '"':
        out->type = TS_JSON_STRING;
        rc = parse_string(p, &out->string, &out->length);
        break;
    case 't': rc = parse_literal(p, "true", out, TS_JSON_BOOL, true); break;
    case 'f': rc = parse_literal(p, "false", out, TS_JSON_BOOL, false); break;
    case 'n': rc = parse_literal(p, "null", out, TS_JSON_NULL, false); break;
    default:
        if (c == '-' || (c >= '0' && c <= '9')) rc = parse_number(p, out);
        else rc = parse_fail(p, "unexpected character");
    }
    p->depth--;
    return rc;
}

void ts_json_doc_free(ts_json_doc *doc) {
    if (!doc) return;
    arena_chunk *c = doc->chunks;
    while (c) {
        arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    free(doc);
}

int ts_json_parse(const char *text, size_t length, ts_json_doc **out) {
    *out = NULL;
    ts_json_doc *doc = calloc(1, sizeof *doc);
    if (!doc) return ts_error_set(TS_E_NOMEM, "out of memory parsing JSON");
    parser p = {text, length, 0, doc, 0};
    int rc = parse_value(&p, &doc->root);
    if (!rc) {
        skip_ws(&p);
        if (p.pos != p.length) rc = parse_fail(&p, "trailing characters after JSON value");
    }
    if (rc) {
        ts_json_doc_free(doc);
        return rc;
    }
    *out = doc;
    return TS_OK;
}

const ts_json *ts_json_root(const ts_json_doc *doc) { return &doc->root; }

int ts_json_parse_file(const char *path, ts_json_doc **out) {
    *out = NULL;
    ts_buf text = {0};
    int rc = ts_buf_read_file(&text, path);
    if (rc) return rc;
    rc = ts_json_parse(text.data ? text.data : "", text.len, out);
    ts_buf_free(&text);
    return rc ? ts_error_wrap(rc, "%s", path) : TS_OK;
}

const ts_json *ts_json_get(const ts_json *obj, const char *key) {
    if (!obj || obj->type != TS_JSON_OBJECT) return NULL;
    size_t klen = strlen(key);
    for (size_t i = 0; i < obj->length; i++) {
        const ts_json_member *m = &obj->members[i];
        if (m->key_length == klen && memcmp(m->key, key, klen) == 0) return &m->value;
    }
    return NULL;
}

static int get_typed(const ts_json *obj, const char *key, ts_json_type type, const char *what,
                     const ts_json **out) {
    const ts_json *v = ts_json_get(obj, key);
    if (!v) return ts_error_set(TS_E_NOT_FOUND, "missing key \"%s\"", key);
    if (v->type != type) return ts_error_set(TS_E_INVALID, "key \"%s\": %s expected", key, what);
    *out = v;
    return TS_OK;
}

int ts_json_get_int(const ts_json *obj, const char *key, int64_t *out) {
    const ts_json *v;
    int rc = get_typed(obj, key, TS_JSON_NUMBER, "integer", &v);
    if (rc) return rc;
    if (!v->is_integer) return ts_error_set(TS_E_INVALID, "key \"%s\": integer expected", key);
    *out = v->integer;
    return TS_OK;
}

int ts_json_get_double(const ts_json *obj, const char *key, double *out) {
    const ts_json *v;
    int rc = get_typed(obj, key, TS_JSON_NUMBER, "number", &v);
    if (!rc) *out = v->number;
    return rc;
}

int ts_json_get_bool(const ts_json *obj, const char *key, bool *out) {
    const ts_json *v;
    int rc = get_typed(obj, key, TS_JSON_BOOL, "true or false", &v);
    if (!rc) *out = v->boolean;
    return rc;
}

int ts_json_get_string(const ts_json *obj, const char *key, const char **out, size_t *length) {
    const ts_json *v;
    int rc = get_typed(obj, key, TS_JSON_STRING, "string", &v);
    if (!rc) {
        *out = v->string;
        if (length) *length = v->length;
    }
    return rc;
}

int ts_json_get_array(const ts_json *obj, const char *key, const ts_json **out) {
    return get_typed(obj, key, TS_JSON_ARRAY, "array", out);
}
