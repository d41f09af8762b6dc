/*
 * jinja_value.c — the render arena and the values: constructors, dicts, truth, equality and
 * ordering as Python defines them, str()/repr(), json.dumps, and string taint.
 */
#include "chat/jinja_impl.h"
#include "common/error.h"
#include "common/utf8.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { BLOCK_SIZE = 64 * 1024, MAX_VALUE_DEPTH = 200 };

struct jblock {
    jblock *next;
    size_t size;
    _Alignas(16) char data[];
};

void *ja_alloc(jarena *a, size_t n) {
    n = n ? (n + 15) & ~(size_t)15 : 16;
    if ((size_t)(a->end - a->cur) < n || !a->cur) {
        size_t size = n > BLOCK_SIZE ? n : BLOCK_SIZE;
        if (a->total + size > a->limit) return NULL;
        jblock *b = malloc(sizeof *b + size);
        if (!b) return NULL;
        b->next = a->blocks;
        b->size = size;
        a->blocks = b;
        a->total += size;
        a->cur = b->data;
        a->end = b->data + size;
    }
    void *p = a->cur;
    a->cur += n;
    memset(p, 0, n);
    return p;
}

void ja_free(jarena *a) {
    for (jblock *b = a->blocks, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    a->blocks = NULL;
    a->cur = a->end = NULL;
    a->total = 0;
}

int jx_failv(int code, int line, const char *fmt, va_list ap) {
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    return ts_error_set(code, "line %d: %s", line, msg);
}

int jx_fail(jctx *c, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = jx_failv(code, c->line, fmt, ap);
    va_end(ap);
    return rc;
}

void *jx_alloc(jctx *c, size_t n) {
    void *p = ja_alloc(&c->arena, n);
    if (!p)
        jx_fail(c, TS_E_INVALID, "the template needs more than %zu MiB of memory (limit)",
                c->arena.limit >> 20);
    return p;
}

/* ---- constructors ---- */

jv jv_undef(const char *what) { return (jv){.type = JV_UNDEF, .u.s = {what, NULL, what ? strlen(what) : 0}}; }
jv jv_none(void) { return (jv){.type = JV_NONE}; }
jv jv_bool(bool b) { return (jv){.type = JV_BOOL, .u.b = b}; }
jv jv_int(int64_t i) { return (jv){.type = JV_INT, .u.i = i}; }
jv jv_float(double f) { return (jv){.type = JV_FLOAT, .u.f = f}; }
jv jv_str(const char *p, size_t n, const uint8_t *taint) {
    return (jv){.type = JV_STR, .u.s = {p ? p : "", taint, n}};
}
jv jv_cstr(const char *s) { return jv_str(s, strlen(s), NULL); }

int jv_list_new(jctx *c, size_t n, bool tuple, jv *out) {
    jlist *l = jx_alloc(c, sizeof *l);
    jv *v = l && n ? jx_alloc(c, n * sizeof *v) : NULL;
    if (!l || (n && !v)) return TS_E_INVALID;
    for (size_t i = 0; i < n; i++)
        v[i] = jv_none();
    l->v = v;
    l->n = n;
    l->tuple = tuple;
    *out = (jv){.type = JV_LIST, .u.list = l};
    return TS_OK;
}

int jv_dict_new(jctx *c, jv *out, bool ns) {
    jdict *d = jx_alloc(c, sizeof *d);
    if (!d) return TS_E_INVALID;
    *out = (jv){.type = ns ? JV_NS : JV_DICT, .u.dict = d};
    return TS_OK;
}

static bool key_is(const jv *k, const char *s, size_t n) {
    return k->type == JV_STR && k->u.s.n == n && !memcmp(k->u.s.p, s, n);
}

const jv *jv_dict_get(const jdict *d, const char *key, size_t n) {
    for (size_t i = 0; i < d->n; i++)
        if (key_is(&d->keys[i], key, n)) return &d->vals[i];
    return NULL;
}

const jv *jv_dict_find(const jdict *d, jv key) {
    for (size_t i = 0; i < d->n; i++)
        if (jv_equal(&d->keys[i], &key)) return &d->vals[i];
    return NULL;
}

int jv_dict_set(jctx *c, jdict *d, jv key, jv val) {
    for (size_t i = 0; i < d->n; i++)
        if (jv_equal(&d->keys[i], &key)) {
            d->vals[i] = val;
            return TS_OK;
        }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        jv *k = jx_alloc(c, cap * sizeof *k), *v = jx_alloc(c, cap * sizeof *v);
        if (!k || !v) return TS_E_INVALID;
        if (d->n) {
            memcpy(k, d->keys, d->n * sizeof *k);
            memcpy(v, d->vals, d->n * sizeof *v);
        }
        d->keys = k;
        d->vals = v;
        d->cap = cap;
    }
    d->keys[d->n] = key;
    d->vals[d->n] = val;
    d->n++;
    return TS_OK;
}

/* ---- Python's view of values ---- */

const char *jv_type_name(const jv *v) {
    switch (v->type) {
    case JV_UNDEF: return "Undefined";
    case JV_NONE: return "NoneType";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return "str";
    case JV_LIST: return v->u.list->tuple ? "tuple" : "list";
    case JV_DICT: return "dict";
    case JV_NS: return "Namespace";
    case JV_LOOP: return "LoopContext";
    case JV_FUNC: return "builtin_function_or_method";
    case JV_MACRO: return "Macro";
    }
    return "?";
}

bool jv_truthy(const jv *v) {
    switch (v->type) {
    case JV_UNDEF:
    case JV_NONE: return false;
    case JV_BOOL: return v->u.b;
    case JV_INT: return v->u.i != 0;
    case JV_FLOAT: return v->u.f != 0.0;
    case JV_STR: return v->u.s.n != 0;
    case JV_LIST: return v->u.list->n != 0;
    case JV_DICT: return v->u.dict->n != 0;
    default: return true;
    }
}

static bool is_number(const jv *v) { return v->type == JV_BOOL || v->type == JV_INT || v->type == JV_FLOAT; }
static double as_double(const jv *v) {
    return v->type == JV_FLOAT ? v->u.f : v->type == JV_INT ? (double)v->u.i : (double)v->u.b;
}
static int64_t as_int(const jv *v) { return v->type == JV_INT ? v->u.i : (int64_t)v->u.b; }

static bool equal_depth(const jv *a, const jv *b, int depth) {
    if (depth > MAX_VALUE_DEPTH) return false;
    if (is_number(a) && is_number(b)) {
        if (a->type == JV_FLOAT || b->type == JV_FLOAT) return as_double(a) == as_double(b);
        return as_int(a) == as_int(b);
    }
    if (a->type != b->type) return false;
    switch (a->type) {
    case JV_UNDEF:
    case JV_NONE: return true;
    case JV_STR: return a->u.s.n == b->u.s.n && !memcmp(a->u.s.p, b->u.s.p, a->u.s.n);
    case JV_LIST: {
        const jlist *x = a->u.list, *y = b->u.list;
        if (x->tuple != y->tuple || x->n != y->n) return false;
        for (size_t i = 0; i < x->n; i++)
            if (!equal_depth(&x->v[i], &y->v[i], depth + 1)) return false;
        return true;
    }
    case JV_DICT: {
        const jdict *x = a->u.dict, *y = b->u.dict;
        if (x->n != y->n) return false;
        for (size_t i = 0; i < x->n; i++) {
            const jv *other = NULL;
            for (size_t j = 0; j < y->n && !other; j++)
                if (equal_depth(&x->keys[i], &y->keys[j], depth + 1)) other = &y->vals[j];
            if (!other || !equal_depth(&x->vals[i], other, depth + 1)) return false;
        }
        return true;
    }
    case JV_NS: return a->u.dict == b->u.dict;
    case JV_LOOP: return a->u.loop == b->u.loop;
    case JV_FUNC: return a->u.fn.name == b->u.fn.name && a->u.fn.self == b->u.fn.self;
    case JV_MACRO: return a->u.macro == b->u.macro;
    default: return false;
    }
}

bool jv_equal(const jv *a, const jv *b) { return equal_depth(a, b, 0); }

static int compare_depth(jctx *c, const jv *a, const jv *b, const char *op, int *cmp, int depth) {
    if (depth > MAX_VALUE_DEPTH) return jx_fail(c, TS_E_INVALID, "values nested too deep to compare");
    if (is_number(a) && is_number(b)) {
        if (a->type == JV_FLOAT || b->type == JV_FLOAT) {
            double x = as_double(a), y = as_double(b);
            *cmp = x < y ? -1 : x > y ? 1 : 0; /* NaN: compares as equal, never less */
        } else {
            int64_t x = as_int(a), y = as_int(b);
            *cmp = x < y ? -1 : x > y ? 1 : 0;
        }
        return TS_OK;
    }
    if (a->type == JV_STR && b->type == JV_STR) {
        size_t n = a->u.s.n < b->u.s.n ? a->u.s.n : b->u.s.n;
        int r = memcmp(a->u.s.p, b->u.s.p, n);
        *cmp = r ? (r < 0 ? -1 : 1) : a->u.s.n < b->u.s.n ? -1 : a->u.s.n > b->u.s.n ? 1 : 0;
        return TS_OK;
    }
    if (a->type == JV_LIST && b->type == JV_LIST && a->u.list->tuple == b->u.list->tuple) {
        const jlist *x = a->u.list, *y = b->u.list;
        for (size_t i = 0; i < x->n && i < y->n; i++) {
            if (equal_depth(&x->v[i], &y->v[i], depth + 1)) continue;
            return compare_depth(c, &x->v[i], &y->v[i], op, cmp, depth + 1);
        }
        *cmp = x->n < y->n ? -1 : x->n > y->n ? 1 : 0;
        return TS_OK;
    }
    return jx_fail(c, TS_E_INVALID, "'%s' not supported between instances of '%s' and '%s'", op,
                   jv_type_name(a), jv_type_name(b));
}

int jv_compare(jctx *c, const jv *a, const jv *b, const char *op, int *cmp) {
    return compare_depth(c, a, b, op, cmp, 0);
}

static bool tainted_depth(const jv *v, int depth) {
    if (depth > MAX_VALUE_DEPTH) return true;
    switch (v->type) {
    case JV_STR:
        for (size_t i = 0; v->u.s.taint && i < v->u.s.n; i++)
            if (v->u.s.taint[i]) return true;
        return false;
    case JV_LIST:
        for (size_t i = 0; i < v->u.list->n; i++)
            if (tainted_depth(&v->u.list->v[i], depth + 1)) return true;
        return false;
    case JV_DICT:
    case JV_NS:
        for (size_t i = 0; i < v->u.dict->n; i++)
            if (tainted_depth(&v->u.dict->keys[i], depth + 1) ||
                tainted_depth(&v->u.dict->vals[i], depth + 1))
                return true;
        return false;
    default: return false;
    }
}

bool jv_is_tainted(const jv *v) { return tainted_depth(v, 0); }

/* ---- strings ---- */

/* A string of the bytes in buf, all tainted or none, in the arena. */
static int buf_to_str(jctx *c, const ts_buf *buf, bool tainted, jv *out) {
    size_t n = buf->len;
    char *p = jx_alloc(c, n + 1);
    uint8_t *t = tainted && n ? jx_alloc(c, n) : NULL;
    if (!p || (tainted && n && !t)) return TS_E_INVALID;
    if (n) memcpy(p, buf->data, n);
    if (t) memset(t, 1, n);
    *out = jv_str(p, n, t);
    return TS_OK;
}

int jv_concat(jctx *c, const jv *a, const jv *b, jv *out) {
    size_t n = a->u.s.n + b->u.s.n;
    char *p = jx_alloc(c, n + 1);
    if (!p) return TS_E_INVALID;
    memcpy(p, a->u.s.p, a->u.s.n);
    memcpy(p + a->u.s.n, b->u.s.p, b->u.s.n);
    uint8_t *t = NULL;
    if (a->u.s.taint || b->u.s.taint) {
        t = jx_alloc(c, n ? n : 1);
        if (!t) return TS_E_INVALID;
        if (a->u.s.taint) memcpy(t, a->u.s.taint, a->u.s.n);
        if (b->u.s.taint) memcpy(t + a->u.s.n, b->u.s.taint, b->u.s.n);
    }
    *out = jv_str(p, n, t);
    return TS_OK;
}

jv jv_substr(const jv *s, size_t at, size_t n) {
    return jv_str(s->u.s.p + at, n, s->u.s.taint ? s->u.s.taint + at : NULL);
}

void jv_format_float(double f, char *buf, size_t size) {
    if (isnan(f)) {
        snprintf(buf, size, "nan");
        return;
    }
    if (isinf(f)) {
        snprintf(buf, size, f < 0 ? "-inf" : "inf");
        return;
    }
    char tmp[48];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, f);
        if (strtod(tmp, NULL) == f) break;
    }
    /* tmp: [-]D[.DDD]e[+-]XX */
    const char *p = tmp;
    bool neg = *p == '-';
    if (neg) p++;
    char digits[24];
    size_t nd = 0;
    for (; *p && *p != 'e'; p++)
        if (*p != '.' && nd < sizeof digits - 1) digits[nd++] = *p;
    digits[nd] = '\0';
    int exp10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        digits[--nd] = '\0';
    int decpt = exp10 + 1;
    char *o = buf;
    size_t left = size;
#define PUT(...)                                                                                   \
    do {                                                                                           \
        int w = snprintf(o, left, __VA_ARGS__);                                                    \
        if (w < 0 || (size_t)w >= left) return;                                                    \
        o += w;                                                                                    \
        left -= (size_t)w;                                                                         \
    } while (0)
    if (neg) PUT("-");
    if (decpt > 16 || decpt < -3) {
        PUT("%c", digits[0]);
        if (nd > 1) PUT(".%s", digits + 1);
        PUT("e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
    } else if (decpt <= 0) {
        PUT("0.");
        for (int i = 0; i < -decpt; i++)
            PUT("0");
        PUT("%s", digits);
    } else if ((size_t)decpt >= nd) {
        PUT("%s", digits);
        for (size_t i = nd; i < (size_t)decpt; i++)
            PUT("0");
        PUT(".0");
    } else {
        PUT("%.*s.%s", decpt, digits, digits + decpt);
    }
#undef PUT
}

static int repr_string(ts_buf *out, const jv *v) {
    const char *s = v->u.s.p;
    size_t n = v->u.s.n;
    bool sq = memchr(s, '\'', n) != NULL, dq = memchr(s, '"', n) != NULL;
    char q = sq && !dq ? '"' : '\'';
    int rc = ts_buf_append(out, &q, 1);
    for (size_t i = 0; i < n && !rc; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '\\' || ch == (unsigned char)q) rc = ts_buf_printf(out, "\\%c", ch);
        else if (ch == '\n') rc = ts_buf_append(out, "\\n", 2);
        else if (ch == '\r') rc = ts_buf_append(out, "\\r", 2);
        else if (ch == '\t') rc = ts_buf_append(out, "\\t", 2);
        else if (ch < 0x20 || ch == 0x7f) rc = ts_buf_printf(out, "\\x%02x", ch);
        else rc = ts_buf_append(out, s + i, 1);
    }
    if (!rc) rc = ts_buf_append(out, &q, 1);
    return rc;
}

static int repr_depth(jctx *c, const jv *v, ts_buf *out, int depth) {
    if (depth > MAX_VALUE_DEPTH) return jx_fail(c, TS_E_INVALID, "values nested too deep to print");
    char num[48];
    int rc = TS_OK;
    switch (v->type) {
    case JV_UNDEF: return TS_OK;
    case JV_NONE: return ts_buf_append(out, "None", 4);
    case JV_BOOL: return ts_buf_printf(out, "%s", v->u.b ? "True" : "False");
    case JV_INT: return ts_buf_printf(out, "%lld", (long long)v->u.i);
    case JV_FLOAT: jv_format_float(v->u.f, num, sizeof num); return ts_buf_printf(out, "%s", num);
    case JV_STR: return repr_string(out, v);
    case JV_LIST: {
        const jlist *l = v->u.list;
        rc = ts_buf_append(out, l->tuple ? "(" : "[", 1);
        for (size_t i = 0; i < l->n && !rc; i++) {
            if (i) rc = ts_buf_append(out, ", ", 2);
            if (!rc) rc = repr_depth(c, &l->v[i], out, depth + 1);
        }
        if (!rc && l->tuple && l->n == 1) rc = ts_buf_append(out, ",", 1);
        if (!rc) rc = ts_buf_append(out, l->tuple ? ")" : "]", 1);
        return rc;
    }
    case JV_DICT:
    case JV_NS: {
        const jdict *d = v->u.dict;
        if (v->type == JV_NS) rc = ts_buf_append(out, "<Namespace ", 11);
        if (!rc) rc = ts_buf_append(out, "{", 1);
        for (size_t i = 0; i < d->n && !rc; i++) {
            if (i) rc = ts_buf_append(out, ", ", 2);
            if (!rc) rc = repr_depth(c, &d->keys[i], out, depth + 1);
            if (!rc) rc = ts_buf_append(out, ": ", 2);
            if (!rc) rc = repr_depth(c, &d->vals[i], out, depth + 1);
        }
        if (!rc) rc = ts_buf_append(out, v->type == JV_NS ? "}>" : "}", v->type == JV_NS ? 2 : 1);
        return rc;
    }
    case JV_LOOP:
        return ts_buf_printf(out, "<LoopContext %zu/%zu>", v->u.loop->index + 1, v->u.loop->items->n);
    case JV_FUNC: return ts_buf_printf(out, "<built-in function %s>", v->u.fn.name);
    case JV_MACRO:
        return ts_buf_printf(out, "<Macro '%.*s'>", (int)v->u.macro->name.n, v->u.macro->name.p);
    }
    return rc;
}

int jv_repr(jctx *c, const jv *v, ts_buf *out) {
    int rc = repr_depth(c, v, out, 0);
    if (rc && rc != TS_E_INVALID) rc = jx_fail(c, TS_E_NOMEM, "out of memory");
    return rc;
}

int jv_to_str(jctx *c, const jv *v, jv *out) {
    if (v->type == JV_STR) {
        *out = *v;
        return TS_OK;
    }
    if (v->type == JV_UNDEF) {
        *out = jv_str("", 0, NULL);
        return TS_OK;
    }
    ts_buf buf = {0};
    int rc = jv_repr(c, v, &buf);
    if (!rc) rc = buf_to_str(c, &buf, jv_is_tainted(v), out);
    ts_buf_free(&buf);
    return rc;
}

/* ---- JSON (Python's json.dumps) ---- */

typedef struct json_opts {
    const char *indent, *item_sep, *key_sep;
    bool sort_keys, ensure_ascii;
} json_opts;

static int json_string(ts_buf *out, const char *s, size_t n, bool ensure_ascii) {
    int rc = ts_buf_append(out, "\"", 1);
    for (size_t i = 0; i < n && !rc;) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"') rc = ts_buf_append(out, "\\\"", 2);
        else if (ch == '\\') rc = ts_buf_append(out, "\\\\", 2);
        else if (ch == '\n') rc = ts_buf_append(out, "\\n", 2);
        else if (ch == '\r') rc = ts_buf_append(out, "\\r", 2);
        else if (ch == '\t') rc = ts_buf_append(out, "\\t", 2);
        else if (ch == '\b') rc = ts_buf_append(out, "\\b", 2);
        else if (ch == '\f') rc = ts_buf_append(out, "\\f", 2);
        else if (ch < 0x20 || (ensure_ascii && ch == 0x7f)) rc = ts_buf_printf(out, "\\u%04x", ch);
        else if (ch >= 0x80 && ensure_ascii) {
            uint32_t cp = 0xfffd;
            size_t k = ts_utf8_decode(s + i, n - i, &cp);
            if (k == 0) k = 1;
            if (cp >= 0x10000) {
                cp -= 0x10000;
                rc = ts_buf_printf(out, "\\u%04x\\u%04x", 0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));
            } else {
                rc = ts_buf_printf(out, "\\u%04x", cp);
            }
            i += k;
            continue;
        } else rc = ts_buf_append(out, s + i, 1);
        i++;
    }
    if (!rc) rc = ts_buf_append(out, "\"", 1);
    return rc;
}

static int json_newline(ts_buf *out, const json_opts *o, int level) {
    int rc = ts_buf_append(out, "\n", 1);
    for (int i = 0; i < level && !rc; i++)
        rc = ts_buf_append(out, o->indent, strlen(o->indent));
    return rc;
}

static int json_value(jctx *c, const jv *v, const json_opts *o, ts_buf *out, int level);

/* A dict key as json.dumps writes it: strings as they are, numbers, booleans and None as text. */
static int json_key(jctx *c, const jv *k, ts_buf *out, const json_opts *o) {
    char num[48];
    switch (k->type) {
    case JV_STR: return json_string(out, k->u.s.p, k->u.s.n, o->ensure_ascii);
    case JV_INT: return ts_buf_printf(out, "\"%lld\"", (long long)k->u.i);
    case JV_FLOAT: jv_format_float(k->u.f, num, sizeof num); return ts_buf_printf(out, "\"%s\"", num);
    case JV_BOOL: return ts_buf_printf(out, "\"%s\"", k->u.b ? "true" : "false");
    case JV_NONE: return ts_buf_printf(out, "\"null\"");
    default:
        return jx_fail(c, TS_E_INVALID, "keys must be str, int, float, bool or None, not %s",
                       jv_type_name(k));
    }
}

static int json_dict(jctx *c, const jdict *d, const json_opts *o, ts_buf *out, int level) {
    if (d->n == 0) return ts_buf_append(out, "{}", 2);
    size_t *order = malloc(d->n * sizeof *order);
    if (!order) return TS_E_NOMEM;
    for (size_t i = 0; i < d->n; i++)
        order[i] = i;
    int rc = TS_OK;
    if (o->sort_keys) /* insertion sort: dicts of templates are small */
        for (size_t i = 1; i < d->n && !rc; i++)
            for (size_t j = i; j > 0 && !rc; j--) {
                int cmp = 0;
                rc = jv_compare(c, &d->keys[order[j - 1]], &d->keys[order[j]], "<", &cmp);
                if (cmp <= 0) break;
                size_t t = order[j];
                order[j] = order[j - 1];
                order[j - 1] = t;
            }
    if (!rc) rc = ts_buf_append(out, "{", 1);
    for (size_t i = 0; i < d->n && !rc; i++) {
        if (i) rc = ts_buf_append(out, o->item_sep, strlen(o->item_sep));
        if (!rc && o->indent) rc = json_newline(out, o, level + 1);
        if (!rc) rc = json_key(c, &d->keys[order[i]], out, o);
        if (!rc) rc = ts_buf_append(out, o->key_sep, strlen(o->key_sep));
        if (!rc) rc = json_value(c, &d->vals[order[i]], o, out, level + 1);
    }
    if (!rc && o->indent) rc = json_newline(out, o, level);
    if (!rc) rc = ts_buf_append(out, "}", 1);
    free(order);
    return rc;
}

static int json_value(jctx *c, const jv *v, const json_opts *o, ts_buf *out, int level) {
    if (level > MAX_VALUE_DEPTH) return jx_fail(c, TS_E_INVALID, "values nested too deep for tojson");
    char num[48];
    switch (v->type) {
    case JV_NONE: return ts_buf_append(out, "null", 4);
    case JV_BOOL: return ts_buf_printf(out, "%s", v->u.b ? "true" : "false");
    case JV_INT: return ts_buf_printf(out, "%lld", (long long)v->u.i);
    case JV_FLOAT:
        if (isnan(v->u.f)) return ts_buf_append(out, "NaN", 3);
        if (isinf(v->u.f)) return ts_buf_printf(out, "%s", v->u.f < 0 ? "-Infinity" : "Infinity");
        jv_format_float(v->u.f, num, sizeof num);
        return ts_buf_printf(out, "%s", num);
    case JV_STR: return json_string(out, v->u.s.p, v->u.s.n, o->ensure_ascii);
    case JV_LIST: {
        const jlist *l = v->u.list;
        if (l->n == 0) return ts_buf_append(out, "[]", 2);
        int rc = ts_buf_append(out, "[", 1);
        for (size_t i = 0; i < l->n && !rc; i++) {
            if (i) rc = ts_buf_append(out, o->item_sep, strlen(o->item_sep));
            if (!rc && o->indent) rc = json_newline(out, o, level + 1);
            if (!rc) rc = json_value(c, &l->v[i], o, out, level + 1);
        }
        if (!rc && o->indent) rc = json_newline(out, o, level);
        if (!rc) rc = ts_buf_append(out, "]", 1);
        return rc;
    }
    case JV_DICT: return json_dict(c, v->u.dict, o, out, level);
    default:
        return jx_fail(c, TS_E_INVALID, "Object of type %s is not JSON serializable", jv_type_name(v));
    }
}

int jv_to_json(jctx *c, const jv *v, const char *indent, bool sort_keys, bool ensure_ascii,
               const char *item_sep, const char *key_sep, jv *out) {
    json_opts o = {indent, item_sep ? item_sep : indent ? "," : ", ", key_sep ? key_sep : ": ",
                   sort_keys, ensure_ascii};
    ts_buf buf = {0};
    int rc = json_value(c, v, &o, &buf, 0);
    if (rc == TS_E_NOMEM) rc = jx_fail(c, TS_E_NOMEM, "out of memory");
    if (!rc) rc = buf_to_str(c, &buf, jv_is_tainted(v), out);
    ts_buf_free(&buf);
    return rc;
}

/* ---- iteration ---- */

int jv_iterate(jctx *c, const jv *v, jlist **out) {
    jv l;
    int rc = TS_OK;
    switch (v->type) {
    case JV_LIST: *out = v->u.list; return TS_OK;
    case JV_UNDEF: rc = jv_list_new(c, 0, false, &l); break;
    case JV_DICT:
    case JV_NS:
        rc = jv_list_new(c, v->u.dict->n, false, &l);
        for (size_t i = 0; !rc && i < v->u.dict->n; i++)
            l.u.list->v[i] = v->u.dict->keys[i];
        break;
    case JV_STR: {
        size_t n = 0;
        for (size_t i = 0; i < v->u.s.n; i++)
            n += ((unsigned char)v->u.s.p[i] & 0xc0) != 0x80;
        rc = jv_list_new(c, n, false, &l);
        size_t k = 0;
        for (size_t i = 0; !rc && i < v->u.s.n;) {
            size_t j = i + 1;
            while (j < v->u.s.n && ((unsigned char)v->u.s.p[j] & 0xc0) == 0x80)
                j++;
            if (k < n) l.u.list->v[k++] = jv_substr(v, i, j - i);
            i = j;
        }
        break;
    }
    default: return jx_fail(c, TS_E_INVALID, "'%s' object is not iterable", jv_type_name(v));
    }
    if (!rc) *out = l.u.list;
    return rc;
}

int jv_length(jctx *c, const jv *v, int64_t *n) {
    switch (v->type) {
    case JV_UNDEF: *n = 0; return TS_OK;
    case JV_LIST: *n = (int64_t)v->u.list->n; return TS_OK;
    case JV_DICT:
    case JV_NS: *n = (int64_t)v->u.dict->n; return TS_OK;
    case JV_STR: {
        int64_t k = 0;
        for (size_t i = 0; i < v->u.s.n; i++)
            k += ((unsigned char)v->u.s.p[i] & 0xc0) != 0x80;
        *n = k;
        return TS_OK;
    }
    default: return jx_fail(c, TS_E_INVALID, "object of type '%s' has no len()", jv_type_name(v));
    }
}
