/*
 * jinja_builtins.c — what a template can call: filters, tests, string/dict/loop methods and the
 * globals, each as Jinja2 (and the transformers chat environment) defines it.
 *
 * Filters: abs, capitalize, count, d, default, e, escape, first, float, indent, int, items, join,
 *          last, length, list, lower, map, reject, rejectattr, replace, reverse, safe, select,
 *          selectattr, sort, string, title, tojson, trim, unique, upper.
 * Tests:   defined, undefined, none, boolean, true, false, integer, float, number, string,
 *          mapping, iterable, sequence, callable, odd, even, divisibleby, lower, upper, sameas,
 *          in, eq/equalto/==, ne/!=, lt/lessthan/<, le/<=, gt/greaterthan/>, ge/>=.
 * Methods: str.strip/lstrip/rstrip/startswith/endswith/split/upper/lower/title/capitalize/
 *          replace/find/count/join/isdigit/isalpha/isspace; dict.items/keys/values/get;
 *          loop.cycle. Lists and dicts cannot be changed (the sandbox's rule).
 * Globals: range, namespace, dict, raise_exception (the render fails with its message),
 *          strftime_now (the local time, strftime).
 * Undefined values: attributes and items of an undefined value are errors; of none, a number or
 * a missing key they are undefined (printing them gives nothing), as in Jinja2.
 */
#include "chat/jinja_impl.h"
#include "common/error.h"
#include "common/utf8.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MAX_RANGE = 1 << 20 };

/* ---- arguments ---- */

static bool kw_is(const jname *k, const char *name) { return jname_is(*k, name); }

/* Positional argument i, else keyword `name`, else NULL. */
static const jv *arg(const jargs *a, size_t i, const char *name) {
    if (i < a->n_pos) return &a->pos[i];
    for (size_t k = 0; name && k < a->n_kw; k++)
        if (kw_is(&a->kwnames[k], name)) return &a->kw[k];
    return NULL;
}

/* Refuses keyword arguments outside `names` (NULL-terminated) and more than max_pos positional. */
static int check_args(jctx *c, const char *what, const jargs *a, size_t max_pos, const char *const *names) {
    if (a->n_pos > max_pos)
        return jx_fail(c, TS_E_INVALID, "%s takes at most %zu positional argument(s), got %zu", what, max_pos, a->n_pos);
    for (size_t k = 0; k < a->n_kw; k++) {
        bool ok = false;
        for (size_t i = 0; names && names[i] && !ok; i++)
            ok = kw_is(&a->kwnames[k], names[i]);
        if (!ok)
            return jx_fail(c, TS_E_INVALID, "%s got an unexpected keyword argument '%.*s'", what,
                           (int)a->kwnames[k].n, a->kwnames[k].p);
    }
    return TS_OK;
}

static int want_str(jctx *c, const jv *v, const char *what) {
    if (v->type == JV_UNDEF) return jx_fail(c, TS_E_INVALID, "%s", v->u.s.n ? v->u.s.p : "undefined value");
    if (v->type != JV_STR) return jx_fail(c, TS_E_INVALID, "%s: expected a string, got %s", what, jv_type_name(v));
    return TS_OK;
}

static int want_int(jctx *c, const jv *v, const char *what, int64_t *out) {
    if (v->type == JV_INT) *out = v->u.i;
    else if (v->type == JV_BOOL) *out = v->u.b;
    else return jx_fail(c, TS_E_INVALID, "%s: expected an integer, got %s", what, jv_type_name(v));
    return TS_OK;
}

/* ---- string helpers ---- */

static size_t cp_len(const char *s, size_t n) {
    size_t k = 1;
    while (k < n && ((unsigned char)s[k] & 0xc0) == 0x80)
        k++;
    return k;
}

static bool in_chars(const char *s, size_t k, const jv *chars) {
    const char *set = chars->u.s.p;
    for (size_t i = 0; i < chars->u.s.n;) {
        size_t m = cp_len(set + i, chars->u.s.n - i);
        if (m == k && !memcmp(set + i, s, k)) return true;
        i += m;
    }
    return false;
}

/* Python's str.strip/lstrip/rstrip: whitespace, or the characters of `chars`. */
static jv strip(const jv *s, const jv *chars, bool left, bool right) {
    const char *p = s->u.s.p;
    size_t n = s->u.s.n, start = 0, end = n;
    if (left)
        while (start < n) {
            size_t k = chars ? cp_len(p + start, n - start) : ts_jinja_space_len(p + start, n - start);
            if (!k || (chars && !in_chars(p + start, k, chars))) break;
            start += k;
        }
    if (right) { /* scan forward: the end of the last character that is not stripped */
        size_t last = start;
        for (size_t i = start; i < n;) {
            size_t k = chars ? cp_len(p + i, n - i) : ts_jinja_space_len(p + i, n - i);
            bool strip_it = chars ? in_chars(p + i, k, chars) : k > 0;
            if (!k) k = cp_len(p + i, n - i);
            i += k;
            if (!strip_it) last = i;
        }
        end = last;
    }
    return jv_substr(s, start, end - start);
}

static int copy_str(jctx *c, const jv *s, jv *out, char **p) {
    *p = jx_alloc(c, s->u.s.n + 1);
    if (!*p) return TS_E_INVALID;
    memcpy(*p, s->u.s.p, s->u.s.n);
    *out = jv_str(*p, s->u.s.n, s->u.s.taint);
    return TS_OK;
}

static char lower_c(char ch) { return ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch; }
static char upper_c(char ch) { return ch >= 'a' && ch <= 'z' ? (char)(ch - 32) : ch; }
static bool alpha_c(char ch) { return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'); }

/* mode: 'l' lower, 'u' upper, 'c' capitalize, 't' str.title, 'T' Jinja's title filter */
static int case_map(jctx *c, const jv *s, char mode, jv *out) {
    char *p;
    int rc = copy_str(c, s, out, &p);
    for (size_t i = 0; !rc && i < s->u.s.n; i++) {
        char prev = i ? s->u.s.p[i - 1] : ' ';
        bool start;
        switch (mode) {
        case 'l': p[i] = lower_c(p[i]); break;
        case 'u': p[i] = upper_c(p[i]); break;
        case 'c': p[i] = i == 0 ? upper_c(p[i]) : lower_c(p[i]); break;
        case 't': p[i] = alpha_c(prev) ? lower_c(p[i]) : upper_c(p[i]); break;
        default:
            start = i == 0 || strchr("-([{< \t\n\r\f\v", prev) != NULL;
            p[i] = start ? upper_c(p[i]) : lower_c(p[i]);
        }
    }
    return rc;
}

/* Concatenates parts (strings) with sep between them. */
static int join_strs(jctx *c, const jv *parts, size_t n, const jv *sep, jv *out) {
    size_t total = 0;
    bool tainted = sep->u.s.taint != NULL;
    for (size_t i = 0; i < n; i++) {
        total += parts[i].u.s.n + (i ? sep->u.s.n : 0);
        tainted |= parts[i].u.s.taint != NULL;
    }
    char *p = jx_alloc(c, total + 1);
    uint8_t *t = tainted ? jx_alloc(c, total + 1) : NULL;
    if (!p || (tainted && !t)) return TS_E_INVALID;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const jv *pieces[2] = {sep, &parts[i]};
        for (int k = i ? 0 : 1; k < 2; k++) {
            memcpy(p + at, pieces[k]->u.s.p, pieces[k]->u.s.n);
            if (t && pieces[k]->u.s.taint) memcpy(t + at, pieces[k]->u.s.taint, pieces[k]->u.s.n);
            at += pieces[k]->u.s.n;
        }
    }
    *out = jv_str(p, total, t);
    return TS_OK;
}

/* Room for `need` values in a malloc'd scratch array. */
static int grow_parts(jctx *c, jv **parts, size_t *cap, size_t need) {
    if (need <= *cap) return TS_OK;
    size_t n = *cap * 2 > need ? *cap * 2 : need;
    jv *g = realloc(*parts, n * sizeof *g);
    if (!g) return jx_fail(c, TS_E_NOMEM, "out of memory");
    *parts = g;
    *cap = n;
    return TS_OK;
}

static int replace(jctx *c, const jv *s, const jv *old, const jv *new_, int64_t count, jv *out) {
    size_t cap = 16, n = 0;
    jv *parts = malloc(cap * sizeof *parts);
    if (!parts) return jx_fail(c, TS_E_NOMEM, "out of memory");
    int rc = TS_OK;
    size_t pos = 0;
    const char *p = s->u.s.p;
    size_t len = s->u.s.n;
    while (!rc && (count < 0 || count-- > 0)) {
        size_t at;
        if (old->u.s.n == 0) { /* Python: the new text between every character */
            if (pos > len) break;
            at = pos;
        } else {
            const char *hit = pos <= len ? memmem(p + pos, len - pos, old->u.s.p, old->u.s.n) : NULL;
            if (!hit) break;
            at = (size_t)(hit - p);
        }
        if ((rc = grow_parts(c, &parts, &cap, n + 3))) break;
        parts[n++] = jv_substr(s, pos, at - pos);
        parts[n++] = *new_;
        if (old->u.s.n == 0) {
            size_t k = at < len ? cp_len(p + at, len - at) : 1;
            if (at < len) parts[n++] = jv_substr(s, at, k);
            pos = at + k;
        } else {
            pos = at + old->u.s.n;
        }
    }
    if (!rc) {
        if (pos < len) parts[n++] = jv_substr(s, pos, len - pos);
        jv empty = jv_str("", 0, NULL);
        rc = join_strs(c, parts, n, &empty, out);
    }
    free(parts);
    return rc;
}

/* Python's str.split(sep=None, maxsplit=-1). */
static int split(jctx *c, const jv *s, const jv *sep, int64_t maxsplit, jv *out) {
    const char *p = s->u.s.p;
    size_t n = s->u.s.n, cap = 8, k = 0;
    jv *parts = malloc(cap * sizeof *parts);
    if (!parts) return jx_fail(c, TS_E_NOMEM, "out of memory");
    int rc = TS_OK;
    size_t i = 0;
    while (!rc) {
        if ((rc = grow_parts(c, &parts, &cap, k + 1))) break;
        if (!sep) {
            while (i < n && ts_jinja_space_len(p + i, n - i))
                i += ts_jinja_space_len(p + i, n - i);
            if (i >= n) break;
            if (maxsplit >= 0 && (int64_t)k >= maxsplit) {
                jv rest = jv_substr(s, i, n - i);
                parts[k++] = strip(&rest, NULL, false, true);
                break;
            }
            size_t j = i;
            while (j < n && !ts_jinja_space_len(p + j, n - j))
                j += cp_len(p + j, n - j);
            parts[k++] = jv_substr(s, i, j - i);
            i = j;
        } else {
            const char *hit = maxsplit >= 0 && (int64_t)k >= maxsplit ? NULL
                              : memmem(p + i, n - i, sep->u.s.p, sep->u.s.n);
            size_t j = hit ? (size_t)(hit - p) : n;
            parts[k++] = jv_substr(s, i, j - i);
            if (!hit) break;
            i = j + sep->u.s.n;
        }
    }
    if (!rc) rc = jv_list_new(c, k, false, out);
    if (!rc && k) memcpy(out->u.list->v, parts, k * sizeof *parts);
    free(parts);
    return rc;
}

/* ---- attributes and items ---- */

static const char *const STR_METHODS[] = {"strip", "lstrip", "rstrip", "startswith", "endswith",
                                          "split", "upper", "lower", "title", "capitalize",
                                          "replace", "find", "count", "join", "isdigit",
                                          "isalpha", "isspace", "format", "rsplit", "splitlines",
                                          "index", "rfind", "removeprefix", "removesuffix",
                                          "swapcase", "casefold", "center", "ljust", "rjust",
                                          "zfill", "partition", "rpartition", "isalnum",
                                          "islower", "isupper", "istitle", "isnumeric",
                                          "isdecimal", "encode", "expandtabs", NULL};
static const char *const DICT_METHODS[] = {"items", "keys", "values", "get", "copy", "pop",
                                           "popitem", "update", "setdefault", "clear",
                                           "fromkeys", NULL};
static const char *const LIST_METHODS[] = {"append", "extend", "insert", "pop", "remove", "clear",
                                           "sort", "reverse", "index", "count", "copy", NULL};

static const char *find_name(const char *const *table, const char *name, size_t n) {
    for (size_t i = 0; table[i]; i++)
        if (strlen(table[i]) == n && !memcmp(table[i], name, n)) return table[i];
    return NULL;
}

static int bound(jctx *c, const jv *self, const char *name, jv *out) {
    jv *copy = jx_alloc(c, sizeof *copy);
    if (!copy) return TS_E_INVALID;
    *copy = *self;
    *out = (jv){.type = JV_FUNC, .u.fn = {name, copy}};
    return TS_OK;
}

static int missing(jctx *c, const jv *obj, const char *name, size_t n, jv *out) {
    const char *type = jv_type_name(obj);
    size_t size = strlen(type) + n + 48;
    char *msg = jx_alloc(c, size);
    if (!msg) return TS_E_INVALID;
    snprintf(msg, size, "'%s object' has no attribute '%.*s'", type, (int)n, name);
    *out = jv_undef(msg);
    return TS_OK;
}

static int loop_attr(jctx *c, const jloop *l, const char *name, size_t n, const jv *self, jv *out) {
    size_t i = l->index, len = l->items->n;
#define IS(s) (n == sizeof(s) - 1 && !memcmp(name, s, n))
    if (IS("index")) *out = jv_int((int64_t)i + 1);
    else if (IS("index0")) *out = jv_int((int64_t)i);
    else if (IS("revindex")) *out = jv_int((int64_t)(len - i));
    else if (IS("revindex0")) *out = jv_int((int64_t)(len - i - 1));
    else if (IS("first")) *out = jv_bool(i == 0);
    else if (IS("last")) *out = jv_bool(i + 1 == len);
    else if (IS("length")) *out = jv_int((int64_t)len);
    else if (IS("depth")) *out = jv_int((int64_t)l->depth);
    else if (IS("depth0")) *out = jv_int((int64_t)l->depth - 1);
    else if (IS("previtem")) *out = i ? l->items->v[i - 1] : jv_undef("there is no previous item");
    else if (IS("nextitem")) *out = i + 1 < len ? l->items->v[i + 1] : jv_undef("there is no next item");
    else if (IS("cycle")) return bound(c, self, "cycle", out);
    else return missing(c, self, name, n, out);
#undef IS
    return TS_OK;
}

int jx_getattr(jctx *c, const jv *obj, const char *name, size_t n, jv *out) {
    const char *m;
    switch (obj->type) {
    case JV_UNDEF: return jx_fail(c, TS_E_INVALID, "%s", obj->u.s.n ? obj->u.s.p : "undefined value");
    case JV_DICT:
        if ((m = find_name(DICT_METHODS, name, n))) return bound(c, obj, m, out);
        {
            const jv *v = jv_dict_get(obj->u.dict, name, n);
            if (v) {
                *out = *v;
                return TS_OK;
            }
        }
        return missing(c, obj, name, n, out);
    case JV_NS: {
        const jv *v = jv_dict_get(obj->u.dict, name, n);
        if (v) {
            *out = *v;
            return TS_OK;
        }
        return missing(c, obj, name, n, out);
    }
    case JV_STR:
        if ((m = find_name(STR_METHODS, name, n))) return bound(c, obj, m, out);
        return missing(c, obj, name, n, out);
    case JV_LIST:
        if ((m = find_name(LIST_METHODS, name, n))) return bound(c, obj, m, out);
        return missing(c, obj, name, n, out);
    case JV_LOOP: return loop_attr(c, obj->u.loop, name, n, obj, out);
    default: return missing(c, obj, name, n, out);
    }
}

static int index_of(jctx *c, const jv *key, int64_t len, int64_t *i) {
    int64_t k = key->type == JV_BOOL ? key->u.b : key->u.i;
    if (k < 0) k += len;
    *i = k;
    (void)c;
    return k >= 0 && k < len;
}

int jx_getitem(jctx *c, const jv *obj, const jv *key, jv *out) {
    if (obj->type == JV_UNDEF) return jx_fail(c, TS_E_INVALID, "%s", obj->u.s.n ? obj->u.s.p : "undefined value");
    if (obj->type == JV_DICT) {
        const jv *v = jv_dict_find(obj->u.dict, *key);
        if (v) {
            *out = *v;
            return TS_OK;
        }
    }
    bool int_key = key->type == JV_INT || key->type == JV_BOOL;
    if (int_key && (obj->type == JV_LIST || obj->type == JV_STR)) {
        jlist *items = NULL;
        int rc = obj->type == JV_LIST ? (items = obj->u.list, TS_OK) : jv_iterate(c, obj, &items);
        if (rc) return rc;
        int64_t i;
        if (index_of(c, key, (int64_t)items->n, &i)) {
            *out = items->v[i];
            return TS_OK;
        }
        char *msg = jx_alloc(c, 64);
        if (!msg) return TS_E_INVALID;
        snprintf(msg, 64, "%s object has no element %lld", jv_type_name(obj),
                 (long long)(key->type == JV_BOOL ? key->u.b : key->u.i));
        *out = jv_undef(msg);
        return TS_OK;
    }
    if (key->type == JV_STR) return jx_getattr(c, obj, key->u.s.p, key->u.s.n, out);
    *out = jv_undef("no such item");
    return TS_OK;
}

/* ---- methods ---- */

static int str_method(jctx *c, const char *name, const jv *s, const jargs *a, jv *out) {
    const jv *a0 = arg(a, 0, NULL), *a1 = arg(a, 1, NULL);
    int rc = TS_OK;
    if (a->n_kw && strcmp(name, "split") && strcmp(name, "rsplit"))
        return jx_fail(c, TS_E_INVALID, "str.%s() takes no keyword arguments", name);
    if (!strcmp(name, "strip") || !strcmp(name, "lstrip") || !strcmp(name, "rstrip")) {
        if (a0 && a0->type != JV_NONE && (rc = want_str(c, a0, name))) return rc;
        *out = strip(s, a0 && a0->type == JV_STR ? a0 : NULL, name[0] != 'r', name[0] != 'l');
        return TS_OK;
    }
    if (!strcmp(name, "startswith") || !strcmp(name, "endswith")) {
        if (!a0) return jx_fail(c, TS_E_INVALID, "str.%s() takes at least 1 argument", name);
        const jv *opts = a0;
        size_t n_opts = 1;
        if (a0->type == JV_LIST && a0->u.list->tuple) {
            opts = a0->u.list->v;
            n_opts = a0->u.list->n;
        }
        bool hit = false;
        for (size_t i = 0; i < n_opts && !hit; i++) {
            if ((rc = want_str(c, &opts[i], name))) return rc;
            size_t k = opts[i].u.s.n;
            if (k > s->u.s.n) continue;
            const char *at = name[0] == 's' ? s->u.s.p : s->u.s.p + s->u.s.n - k;
            hit = !memcmp(at, opts[i].u.s.p, k);
        }
        *out = jv_bool(hit);
        return TS_OK;
    }
    if (!strcmp(name, "split")) {
        const jv *sep = arg(a, 0, "sep"), *maxs = arg(a, 1, "maxsplit");
        static const char *const names[] = {"sep", "maxsplit", NULL};
        if ((rc = check_args(c, "str.split()", a, 2, names))) return rc;
        int64_t m = -1;
        if (maxs && (rc = want_int(c, maxs, "str.split() maxsplit", &m))) return rc;
        if (sep && sep->type == JV_NONE) sep = NULL;
        if (sep && (rc = want_str(c, sep, "str.split() separator"))) return rc;
        if (sep && sep->u.s.n == 0) return jx_fail(c, TS_E_INVALID, "empty separator");
        return split(c, s, sep, m, out);
    }
    if (!strcmp(name, "upper")) return case_map(c, s, 'u', out);
    if (!strcmp(name, "lower")) return case_map(c, s, 'l', out);
    if (!strcmp(name, "title")) return case_map(c, s, 't', out);
    if (!strcmp(name, "capitalize")) return case_map(c, s, 'c', out);
    if (!strcmp(name, "replace")) {
        if (!a0 || !a1) return jx_fail(c, TS_E_INVALID, "str.replace() takes at least 2 arguments");
        if ((rc = want_str(c, a0, "str.replace()")) || (rc = want_str(c, a1, "str.replace()"))) return rc;
        int64_t count = -1;
        const jv *a2 = arg(a, 2, NULL);
        if (a2 && (rc = want_int(c, a2, "str.replace() count", &count))) return rc;
        return replace(c, s, a0, a1, count, out);
    }
    if (!strcmp(name, "find") || !strcmp(name, "count")) {
        if (!a0 || (rc = want_str(c, a0, name))) return rc ? rc : jx_fail(c, TS_E_INVALID, "str.%s() takes 1 argument", name);
        if (!strcmp(name, "find")) {
            const char *hit = memmem(s->u.s.p, s->u.s.n, a0->u.s.p, a0->u.s.n);
            int64_t cps = -1;
            if (hit) {
                cps = 0;
                for (const char *q = s->u.s.p; q < hit; q++)
                    cps += ((unsigned char)*q & 0xc0) != 0x80;
            }
            *out = jv_int(cps);
            return TS_OK;
        }
        int64_t n = 0;
        if (a0->u.s.n == 0) {
            jv_length(c, s, &n);
            n++;
        } else {
            for (size_t i = 0; i + a0->u.s.n <= s->u.s.n;) {
                const char *hit = memmem(s->u.s.p + i, s->u.s.n - i, a0->u.s.p, a0->u.s.n);
                if (!hit) break;
                n++;
                i = (size_t)(hit - s->u.s.p) + a0->u.s.n;
            }
        }
        *out = jv_int(n);
        return TS_OK;
    }
    if (!strcmp(name, "join")) {
        if (!a0) return jx_fail(c, TS_E_INVALID, "str.join() takes exactly one argument");
        jlist *items = NULL;
        if ((rc = jv_iterate(c, a0, &items))) return rc;
        for (size_t i = 0; i < items->n; i++)
            if (items->v[i].type != JV_STR)
                return jx_fail(c, TS_E_INVALID, "sequence item %zu: expected str instance, %s found",
                               i, jv_type_name(&items->v[i]));
        return join_strs(c, items->v, items->n, s, out);
    }
    if (!strcmp(name, "isdigit") || !strcmp(name, "isalpha") || !strcmp(name, "isspace")) {
        bool all = s->u.s.n > 0;
        for (size_t i = 0; i < s->u.s.n && all; i++) {
            char ch = s->u.s.p[i];
            all = name[2] == 'd' ? (ch >= '0' && ch <= '9')
                  : name[2] == 'a' ? alpha_c(ch)
                                   : ts_jinja_space_len(s->u.s.p + i, s->u.s.n - i) > 0;
        }
        *out = jv_bool(all);
        return TS_OK;
    }
    return jx_fail(c, TS_E_INVALID, "the string method '%s' is not supported", name);
}

static int dict_method(jctx *c, const char *name, const jv *d, const jargs *a, jv *out) {
    const jdict *m = d->u.dict;
    int rc;
    if (!strcmp(name, "get")) {
        const jv *key = arg(a, 0, NULL), *def = arg(a, 1, NULL);
        if (!key || a->n_kw) return jx_fail(c, TS_E_INVALID, "dict.get() takes a key and an optional default");
        const jv *v = jv_dict_find(m, *key);
        *out = v ? *v : def ? *def : jv_none();
        return TS_OK;
    }
    if (!strcmp(name, "items") || !strcmp(name, "keys") || !strcmp(name, "values")) {
        if ((rc = jv_list_new(c, m->n, false, out))) return rc;
        for (size_t i = 0; i < m->n && !rc; i++) {
            if (name[0] == 'k') out->u.list->v[i] = m->keys[i];
            else if (name[0] == 'v') out->u.list->v[i] = m->vals[i];
            else {
                jv pair;
                rc = jv_list_new(c, 2, true, &pair);
                if (!rc) {
                    pair.u.list->v[0] = m->keys[i];
                    pair.u.list->v[1] = m->vals[i];
                    out->u.list->v[i] = pair;
                }
            }
        }
        return rc;
    }
    return jx_fail(c, TS_E_INVALID, "dict.%s() is not supported (templates cannot change a dict)", name);
}

/* ---- globals ---- */

static const char *const GLOBALS[] = {"range", "namespace", "dict", "raise_exception", "strftime_now", NULL};

bool jx_global_function(const char *name, size_t n, jv *out) {
    const char *g = find_name(GLOBALS, name, n);
    if (!g) return false;
    *out = (jv){.type = JV_FUNC, .u.fn = {g, NULL}};
    return true;
}

static int call_global(jctx *c, const char *name, const jargs *a, jv *out) {
    int rc;
    if (!strcmp(name, "range")) {
        int64_t v[3] = {0, 0, 1};
        if (a->n_pos < 1 || a->n_pos > 3 || a->n_kw)
            return jx_fail(c, TS_E_INVALID, "range() takes 1 to 3 integer arguments");
        for (size_t i = 0; i < a->n_pos; i++)
            if ((rc = want_int(c, &a->pos[i], "range()", &v[a->n_pos == 1 ? 1 : i]))) return rc;
        if (v[2] == 0) return jx_fail(c, TS_E_INVALID, "range() arg 3 must not be zero");
        double count = v[2] > 0 ? ceil(((double)v[1] - (double)v[0]) / (double)v[2])
                                : ceil(((double)v[0] - (double)v[1]) / -(double)v[2]);
        if (count < 0) count = 0;
        if (count > MAX_RANGE)
            return jx_fail(c, TS_E_INVALID, "range() of more than %d items (limit)", MAX_RANGE);
        if ((rc = jv_list_new(c, (size_t)count, false, out))) return rc;
        for (size_t i = 0; i < (size_t)count; i++)
            out->u.list->v[i] = jv_int(v[0] + (int64_t)i * v[2]);
        return TS_OK;
    }
    if (!strcmp(name, "namespace") || !strcmp(name, "dict")) {
        bool ns = name[0] == 'n';
        if ((rc = jv_dict_new(c, out, ns))) return rc;
        if (a->n_pos > 1 || (a->n_pos == 1 && a->pos[0].type != JV_DICT))
            return jx_fail(c, TS_E_INVALID, "%s() takes keyword arguments or one dict", name);
        if (a->n_pos == 1)
            for (size_t i = 0; i < a->pos[0].u.dict->n && !rc; i++)
                rc = jv_dict_set(c, out->u.dict, a->pos[0].u.dict->keys[i], a->pos[0].u.dict->vals[i]);
        for (size_t i = 0; i < a->n_kw && !rc; i++)
            rc = jv_dict_set(c, out->u.dict, jv_str(a->kwnames[i].p, a->kwnames[i].n, NULL), a->kw[i]);
        return rc;
    }
    if (!strcmp(name, "raise_exception")) {
        jv msg = jv_cstr("raise_exception() was called");
        if (a->n_pos && (rc = jv_to_str(c, &a->pos[0], &msg))) return rc;
        return jx_fail(c, TS_E_INVALID, "the template raised an error: %.*s", (int)msg.u.s.n, msg.u.s.p);
    }
    /* strftime_now(format) */
    const jv *fmt = arg(a, 0, "format");
    if (!fmt || (rc = want_str(c, fmt, "strftime_now()"))) return fmt ? rc : jx_fail(c, TS_E_INVALID, "strftime_now() takes a format");
    char f[256], buf[512];
    if (fmt->u.s.n >= sizeof f) return jx_fail(c, TS_E_INVALID, "strftime_now(): format too long");
    memcpy(f, fmt->u.s.p, fmt->u.s.n);
    f[fmt->u.s.n] = '\0';
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    size_t n = strftime(buf, sizeof buf, f, &tm); /* the template's format, as Python's strftime */
#pragma GCC diagnostic pop
    char *p = jx_alloc(c, n + 1);
    if (!p) return TS_E_INVALID;
    memcpy(p, buf, n);
    *out = jv_str(p, n, NULL);
    return TS_OK;
}

int jx_call_builtin(jctx *c, const jv *fn, const jargs *a, jv *out) {
    const jv *self = fn->u.fn.self;
    const char *name = fn->u.fn.name;
    if (!self) return call_global(c, name, a, out);
    switch (self->type) {
    case JV_STR: return str_method(c, name, self, a, out);
    case JV_DICT: return dict_method(c, name, self, a, out);
    case JV_LOOP: {
        if (a->n_pos == 0) return jx_fail(c, TS_E_INVALID, "loop.cycle() needs at least one value");
        *out = a->pos[self->u.loop->index % a->n_pos];
        return TS_OK;
    }
    default:
        return jx_fail(c, TS_E_INVALID, "%s.%s() is not supported (templates cannot change a list)",
                       jv_type_name(self), name);
    }
}

/* ---- tests ---- */

static const char *const TESTS[] = {"defined", "undefined", "none", "boolean", "true", "false",
                                    "integer", "float", "number", "string", "mapping", "iterable",
                                    "sequence", "callable", "odd", "even", "divisibleby", "lower",
                                    "upper", "sameas", "in", "eq", "equalto", "==", "ne", "!=",
                                    "lt", "lessthan", "<", "le", "<=", "gt", "greaterthan", ">",
                                    "ge", ">=", NULL};

bool jx_test_known(const char *name, size_t n) { return find_name(TESTS, name, n) != NULL; }

static int test_named(jctx *c, const char *t, const jv *v, const jargs *a, bool *out) {
    const jv *other = arg(a, 0, NULL);
    jv_type ty = v->type;
    if (!strcmp(t, "defined")) *out = ty != JV_UNDEF;
    else if (!strcmp(t, "undefined")) *out = ty == JV_UNDEF;
    else if (!strcmp(t, "none")) *out = ty == JV_NONE;
    else if (!strcmp(t, "boolean")) *out = ty == JV_BOOL;
    else if (!strcmp(t, "true")) *out = ty == JV_BOOL && v->u.b;
    else if (!strcmp(t, "false")) *out = ty == JV_BOOL && !v->u.b;
    else if (!strcmp(t, "integer")) *out = ty == JV_INT;
    else if (!strcmp(t, "float")) *out = ty == JV_FLOAT;
    else if (!strcmp(t, "number")) *out = ty == JV_INT || ty == JV_FLOAT || ty == JV_BOOL;
    else if (!strcmp(t, "string")) *out = ty == JV_STR;
    else if (!strcmp(t, "mapping")) *out = ty == JV_DICT;
    else if (!strcmp(t, "iterable")) *out = ty == JV_STR || ty == JV_LIST || ty == JV_DICT || ty == JV_UNDEF;
    else if (!strcmp(t, "sequence")) *out = ty == JV_STR || ty == JV_LIST || ty == JV_DICT || ty == JV_UNDEF;
    else if (!strcmp(t, "callable")) *out = ty == JV_FUNC || ty == JV_MACRO;
    else if (!strcmp(t, "lower") || !strcmp(t, "upper")) {
        if (ty != JV_STR) return jx_fail(c, TS_E_INVALID, "the %s test needs a string", t);
        bool cased = false, ok = true;
        for (size_t i = 0; i < v->u.s.n; i++) {
            char ch = v->u.s.p[i];
            if (!alpha_c(ch)) continue;
            cased = true;
            ok &= t[0] == 'l' ? ch >= 'a' : ch <= 'Z';
        }
        *out = cased && ok;
    } else if (!strcmp(t, "odd") || !strcmp(t, "even") || !strcmp(t, "divisibleby")) {
        int64_t x = 0, d = 2;
        int rc = want_int(c, v, t, &x);
        if (!rc && t[0] == 'd') rc = other ? want_int(c, other, t, &d) : jx_fail(c, TS_E_INVALID, "divisibleby needs a number");
        if (rc) return rc;
        if (d == 0) return jx_fail(c, TS_E_INVALID, "integer modulo by zero");
        int64_t m = (d == -1) ? 0 : x % d;
        *out = t[0] == 'o' ? m != 0 : m == 0;
    } else {
        if (!other) return jx_fail(c, TS_E_INVALID, "the '%s' test needs an argument", t);
        if (!strcmp(t, "sameas")) { /* identity: the same singleton, number, or object */
            if (v->type != other->type) *out = false;
            else if (v->type == JV_LIST || v->type == JV_DICT || v->type == JV_NS)
                *out = v->type == JV_LIST ? v->u.list == other->u.list : v->u.dict == other->u.dict;
            else if (v->type == JV_STR) *out = v->u.s.p == other->u.s.p && v->u.s.n == other->u.s.n;
            else *out = jv_equal(v, other);
            return TS_OK;
        }
        if (!strcmp(t, "in")) {
            if (other->type == JV_STR && v->type == JV_STR) *out = v->u.s.n == 0 || memmem(other->u.s.p, other->u.s.n, v->u.s.p, v->u.s.n);
            else if (other->type == JV_LIST) {
                *out = false;
                for (size_t i = 0; i < other->u.list->n && !*out; i++)
                    *out = jv_equal(&other->u.list->v[i], v);
            } else if (other->type == JV_DICT) *out = jv_dict_find(other->u.dict, *v) != NULL;
            else return jx_fail(c, TS_E_INVALID, "the 'in' test needs a string, list or dict");
            return TS_OK;
        }
        if (!strcmp(t, "eq") || !strcmp(t, "equalto") || !strcmp(t, "==")) *out = jv_equal(v, other);
        else if (!strcmp(t, "ne") || !strcmp(t, "!=")) *out = !jv_equal(v, other);
        else {
            int cmp = 0;
            if (v->type == JV_UNDEF || other->type == JV_UNDEF)
                return jx_fail(c, TS_E_INVALID, "an undefined value cannot be compared");
            int rc = jv_compare(c, v, other, t, &cmp);
            if (rc) return rc;
            bool lt = !strcmp(t, "lt") || !strcmp(t, "lessthan") || !strcmp(t, "<");
            bool le = !strcmp(t, "le") || !strcmp(t, "<=");
            bool gt = !strcmp(t, "gt") || !strcmp(t, "greaterthan") || !strcmp(t, ">");
            *out = lt ? cmp < 0 : le ? cmp <= 0 : gt ? cmp > 0 : cmp >= 0;
        }
    }
    return TS_OK;
}

int jx_test(jctx *c, const char *name, size_t n, const jv *v, const jargs *a, bool *out) {
    const char *t = find_name(TESTS, name, n);
    if (!t) return jx_fail(c, TS_E_INVALID, "unknown test '%.*s'", (int)n, name);
    return test_named(c, t, v, a, out);
}

/* ---- filters ---- */

static const char *const FILTERS[] = {"abs", "capitalize", "count", "d", "default", "e", "escape",
                                      "first", "float", "indent", "int", "items", "join", "last",
                                      "length", "list", "lower", "map", "reject", "rejectattr",
                                      "replace", "reverse", "safe", "select", "selectattr",
                                      "sort", "string", "title", "tojson", "trim", "unique",
                                      "upper", NULL};

bool jx_filter_known(const char *name, size_t n) { return find_name(FILTERS, name, n) != NULL; }

/* A dotted attribute path ("a.b", "0") of an item, as Jinja's attribute getters read it. */
static int attr_path(jctx *c, const jv *item, const jv *path, jv *out) {
    *out = *item;
    const char *p = path->u.s.p;
    size_t n = path->u.s.n;
    for (size_t i = 0; i <= n;) {
        size_t j = i;
        while (j < n && p[j] != '.')
            j++;
        bool digits = j > i;
        for (size_t k = i; k < j && digits; k++)
            digits = p[k] >= '0' && p[k] <= '9';
        jv key = digits ? jv_int(strtoll(p + i, NULL, 10)) : jv_str(p + i, j - i, NULL);
        jv next;
        int rc = out->type == JV_UNDEF ? TS_OK : jx_getitem(c, out, &key, &next);
        if (rc) return rc;
        if (out->type == JV_UNDEF) break;
        *out = next;
        i = j + 1;
    }
    return TS_OK;
}

static int sort_key(jctx *c, const jv *item, const jv *attribute, bool case_sensitive, jv *out) {
    int rc = TS_OK;
    *out = *item;
    if (attribute) rc = attr_path(c, item, attribute, out);
    if (!rc && !case_sensitive && out->type == JV_STR) rc = case_map(c, out, 'l', out);
    return rc;
}

static int f_select(jctx *c, const char *f, const jv *v, const jargs *a, jv *out) {
    bool attr = strstr(f, "attr") != NULL, reject = f[0] == 'r';
    jlist *items = NULL;
    int rc = jv_iterate(c, v, &items);
    if (rc) return rc;
    const jv *attribute = NULL;
    size_t first_test = 0;
    if (attr) {
        attribute = arg(a, 0, NULL);
        if (!attribute || (rc = want_str(c, attribute, f))) return attribute ? rc : jx_fail(c, TS_E_INVALID, "%s needs an attribute", f);
        first_test = 1;
    }
    const jv *test = first_test < a->n_pos ? &a->pos[first_test] : NULL;
    if (test && (rc = want_str(c, test, f))) return rc;
    if (test && !jx_test_known(test->u.s.p, test->u.s.n))
        return jx_fail(c, TS_E_INVALID, "unknown test '%.*s'", (int)test->u.s.n, test->u.s.p);
    jargs rest = {test ? a->pos + first_test + 1 : NULL, test ? a->n_pos - first_test - 1 : 0,
                  NULL, NULL, 0};
    if ((rc = jv_list_new(c, items->n, false, out))) return rc;
    size_t k = 0;
    for (size_t i = 0; i < items->n && !rc; i++) {
        jv subject = items->v[i];
        if (attribute) rc = attr_path(c, &items->v[i], attribute, &subject);
        bool ok = false;
        if (!rc && test) rc = jx_test(c, test->u.s.p, test->u.s.n, &subject, &rest, &ok);
        else ok = jv_truthy(&subject);
        if (!rc && ok != reject) out->u.list->v[k++] = items->v[i];
    }
    out->u.list->n = k;
    return rc;
}

static int f_map(jctx *c, const jv *v, const jargs *a, jv *out) {
    jlist *items = NULL;
    int rc = jv_iterate(c, v, &items);
    if (rc) return rc;
    const jv *attribute = NULL, *def = NULL;
    for (size_t k = 0; k < a->n_kw; k++) {
        if (kw_is(&a->kwnames[k], "attribute")) attribute = &a->kw[k];
        else if (kw_is(&a->kwnames[k], "default")) def = &a->kw[k];
    }
    if (attribute && (rc = want_str(c, attribute, "map"))) return rc;
    const jv *filter = !attribute && a->n_pos ? &a->pos[0] : NULL;
    if (!attribute && !filter) return jx_fail(c, TS_E_INVALID, "map needs a filter name or attribute=");
    if (filter && (rc = want_str(c, filter, "map"))) return rc;
    if (filter && !jx_filter_known(filter->u.s.p, filter->u.s.n))
        return jx_fail(c, TS_E_INVALID, "unknown filter '%.*s'", (int)filter->u.s.n, filter->u.s.p);
    jargs rest = {filter ? a->pos + 1 : NULL, filter ? a->n_pos - 1 : 0, filter ? a->kwnames : NULL,
                  filter ? a->kw : NULL, filter ? a->n_kw : 0};
    if ((rc = jv_list_new(c, items->n, false, out))) return rc;
    for (size_t i = 0; i < items->n && !rc; i++) {
        jv *dst = &out->u.list->v[i];
        if (attribute) {
            rc = attr_path(c, &items->v[i], attribute, dst);
            if (!rc && dst->type == JV_UNDEF && def) *dst = *def;
        } else {
            rc = jx_filter(c, filter->u.s.p, filter->u.s.n, &items->v[i], &rest, dst);
        }
    }
    return rc;
}

static int f_sort(jctx *c, const jv *v, const jargs *a, jv *out, bool unique) {
    static const char *const sort_names[] = {"reverse", "case_sensitive", "attribute", NULL};
    static const char *const unique_names[] = {"case_sensitive", "attribute", NULL};
    int rc = check_args(c, unique ? "unique" : "sort", a, unique ? 2 : 3, unique ? unique_names : sort_names);
    if (rc) return rc;
    const jv *rev = unique ? NULL : arg(a, 0, "reverse");
    const jv *cs = arg(a, unique ? 0 : 1, "case_sensitive"), *attribute = arg(a, unique ? 1 : 2, "attribute");
    bool reverse = rev && jv_truthy(rev), case_sensitive = cs && jv_truthy(cs);
    if (attribute && attribute->type == JV_NONE) attribute = NULL;
    if (attribute && (rc = want_str(c, attribute, "sort"))) return rc;
    jlist *items = NULL;
    if ((rc = jv_iterate(c, v, &items))) return rc;
    size_t n = items->n;
    jv *keys = n ? jx_alloc(c, n * sizeof *keys) : NULL;
    if (n && !keys) return TS_E_INVALID;
    for (size_t i = 0; i < n && !rc; i++)
        rc = sort_key(c, &items->v[i], attribute, case_sensitive, &keys[i]);
    if (!rc) rc = jv_list_new(c, n, false, out);
    if (rc) return rc;
    jv *vals = out->u.list->v;
    size_t k = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        if (unique) {
            bool seen = false;
            for (size_t j = 0; j < k && !seen; j++)
                seen = jv_equal(&keys[j], &keys[i]);
            if (!seen) {
                keys[k] = keys[i];
                vals[k++] = items->v[i];
            }
            continue;
        }
        /* insertion sort, stable */
        jv key = keys[i], val = items->v[i];
        size_t j = k;
        while (j > 0 && !rc) {
            int cmp = 0;
            rc = jv_compare(c, &keys[j - 1], &key, "<", &cmp);
            if (reverse ? cmp >= 0 : cmp <= 0) break;
            keys[j] = keys[j - 1];
            vals[j] = vals[j - 1];
            j--;
        }
        keys[j] = key;
        vals[j] = val;
        k++;
    }
    out->u.list->n = k;
    return rc;
}

static int f_indent(jctx *c, const jv *v, const jargs *a, jv *out) {
    static const char *const names[] = {"width", "first", "blank", NULL};
    int rc = check_args(c, "indent", a, 3, names);
    if (!rc) rc = want_str(c, v, "indent");
    if (rc) return rc;
    const jv *w = arg(a, 0, "width"), *first = arg(a, 1, "first"), *blank = arg(a, 2, "blank");
    jv pad = jv_cstr("    ");
    if (w && w->type == JV_STR) pad = *w;
    else if (w) {
        int64_t n = 0;
        if ((rc = want_int(c, w, "indent width", &n))) return rc;
        if (n < 0) n = 0;
        if (n > 4096) return jx_fail(c, TS_E_INVALID, "indent width too large");
        char *p = jx_alloc(c, (size_t)n + 1);
        if (!p) return TS_E_INVALID;
        memset(p, ' ', (size_t)n);
        pad = jv_str(p, (size_t)n, NULL);
    }
    /* Jinja's do_indent: the lines (split on \n; the rarer line breaks of splitlines are not
     * split on), every one after the first prefixed by the pad when it is not empty (always with
     * blank=True), the first one too with first=True. */
    jv lines, nl = jv_cstr("\n");
    if ((rc = split(c, v, &nl, -1, &lines))) return rc;
    const jlist *l = lines.u.list;
    jv *parts = jx_alloc(c, (3 * l->n + 1) * sizeof *parts);
    if (!parts) return TS_E_INVALID;
    size_t k = 0;
    if (first && jv_truthy(first)) parts[k++] = pad;
    for (size_t i = 0; i < l->n; i++) {
        if (i > 0) {
            parts[k++] = nl;
            if ((blank && jv_truthy(blank)) || l->v[i].u.s.n > 0) parts[k++] = pad;
        }
        parts[k++] = l->v[i];
    }
    jv empty = jv_str("", 0, NULL);
    return join_strs(c, parts, k, &empty, out);
}

static int f_tojson(jctx *c, const jv *v, const jargs *a, jv *out) {
    static const char *const names[] = {"ensure_ascii", "indent", "separators", "sort_keys", NULL};
    int rc = check_args(c, "tojson", a, 4, names);
    if (rc) return rc;
    const jv *ascii = arg(a, 0, "ensure_ascii"), *indent = arg(a, 1, "indent");
    const jv *seps = arg(a, 2, "separators"), *sort = arg(a, 3, "sort_keys");
    char pad[257];
    const char *ind = NULL;
    if (indent && indent->type == JV_STR) {
        if (indent->u.s.n >= sizeof pad) return jx_fail(c, TS_E_INVALID, "tojson indent too long");
        memcpy(pad, indent->u.s.p, indent->u.s.n);
        pad[indent->u.s.n] = '\0';
        ind = pad;
    } else if (indent && indent->type != JV_NONE) {
        int64_t n = 0;
        if ((rc = want_int(c, indent, "tojson indent", &n))) return rc;
        if (n < 0) n = 0;
        if (n > 256) return jx_fail(c, TS_E_INVALID, "tojson indent too large");
        memset(pad, ' ', (size_t)n);
        pad[n] = '\0';
        ind = pad;
    }
    char sep_item[64], sep_key[64];
    const char *item_sep = NULL, *key_sep = NULL;
    if (seps && seps->type != JV_NONE) {
        if (seps->type != JV_LIST || seps->u.list->n != 2 || seps->u.list->v[0].type != JV_STR ||
            seps->u.list->v[1].type != JV_STR || seps->u.list->v[0].u.s.n >= 64 ||
            seps->u.list->v[1].u.s.n >= 64)
            return jx_fail(c, TS_E_INVALID, "tojson separators must be two short strings");
        snprintf(sep_item, sizeof sep_item, "%.*s", (int)seps->u.list->v[0].u.s.n, seps->u.list->v[0].u.s.p);
        snprintf(sep_key, sizeof sep_key, "%.*s", (int)seps->u.list->v[1].u.s.n, seps->u.list->v[1].u.s.p);
        item_sep = sep_item;
        key_sep = sep_key;
    }
    return jv_to_json(c, v, ind, sort && jv_truthy(sort), ascii && jv_truthy(ascii), item_sep, key_sep, out);
}

static int f_number(jctx *c, const jv *v, const jargs *a, bool want_float, jv *out) {
    const jv *def = arg(a, 0, "default");
    jv fallback = def ? *def : want_float ? jv_float(0.0) : jv_int(0);
    switch (v->type) {
    case JV_INT:
    case JV_BOOL: {
        int64_t i = v->type == JV_INT ? v->u.i : v->u.b;
        *out = want_float ? jv_float((double)i) : jv_int(i);
        return TS_OK;
    }
    case JV_FLOAT:
        if (want_float) *out = *v;
        else if (isnan(v->u.f) || isinf(v->u.f) || fabs(v->u.f) >= 9.2e18) *out = fallback;
        else *out = jv_int((int64_t)v->u.f);
        return TS_OK;
    case JV_STR: {
        jv t = strip(v, NULL, true, true);
        char buf[128];
        size_t n = 0;
        for (size_t i = 0; i < t.u.s.n && n + 1 < sizeof buf; i++)
            if (t.u.s.p[i] != '_') buf[n++] = t.u.s.p[i];
        buf[n] = '\0';
        if (n == 0 || t.u.s.n >= sizeof buf) {
            *out = fallback;
            return TS_OK;
        }
        char *end;
        if (!want_float) {
            long long i = strtoll(buf, &end, 10);
            if (*end == '\0') {
                *out = jv_int(i);
                return TS_OK;
            }
        }
        bool hex = strchr(buf, 'x') || strchr(buf, 'X');
        double f = hex ? 0 : strtod(buf, &end);
        if (hex || *end != '\0') *out = fallback;
        else if (want_float) *out = jv_float(f);
        else if (isnan(f) || isinf(f) || fabs(f) >= 9.2e18) *out = fallback;
        else *out = jv_int((int64_t)f);
        return TS_OK;
    }
    default: *out = fallback; return TS_OK;
    }
}

static int f_escape(jctx *c, const jv *v, jv *out) {
    jv s;
    int rc = jv_to_str(c, v, &s);
    if (rc) return rc;
    ts_buf b = {0};
    for (size_t i = 0; i < s.u.s.n && !rc; i++) {
        char ch = s.u.s.p[i];
        const char *r = ch == '&' ? "&amp;" : ch == '<' ? "&lt;" : ch == '>' ? "&gt;"
                      : ch == '"' ? "&#34;" : ch == '\'' ? "&#39;" : NULL;
        rc = r ? ts_buf_append(&b, r, strlen(r)) : ts_buf_append(&b, &ch, 1);
    }
    char *p = rc ? NULL : jx_alloc(c, b.len + 1);
    uint8_t *t = p && jv_is_tainted(&s) ? jx_alloc(c, b.len + 1) : NULL;
    if (p) {
        if (b.len) memcpy(p, b.data, b.len);
        if (t) memset(t, 1, b.len);
        *out = jv_str(p, b.len, t);
    }
    ts_buf_free(&b);
    return p ? TS_OK : rc ? jx_fail(c, TS_E_NOMEM, "out of memory") : TS_E_INVALID;
}

int jx_filter(jctx *c, const char *name, size_t n, const jv *v, const jargs *a, jv *out) {
    const char *f = find_name(FILTERS, name, n);
    if (!f) return jx_fail(c, TS_E_INVALID, "unknown filter '%.*s'", (int)n, name);
    int rc = TS_OK;
    /* filters that accept undefined */
    if (!strcmp(f, "default") || !strcmp(f, "d")) {
        const jv *def = arg(a, 0, "default_value"), *boolean = arg(a, 1, "boolean");
        bool use = v->type == JV_UNDEF || (boolean && jv_truthy(boolean) && !jv_truthy(v));
        *out = use ? (def ? *def : jv_str("", 0, NULL)) : *v;
        return TS_OK;
    }
    if (!strcmp(f, "length") || !strcmp(f, "count")) {
        int64_t len;
        rc = jv_length(c, v, &len);
        *out = jv_int(len);
        return rc;
    }
    if (!strcmp(f, "string")) return jv_to_str(c, v, out);
    if (!strcmp(f, "safe")) {
        *out = *v;
        return TS_OK;
    }
    if (!strcmp(f, "int") || !strcmp(f, "float")) return f_number(c, v, a, f[0] == 'f', out);
    if (!strcmp(f, "list") || !strcmp(f, "first") || !strcmp(f, "last")) {
        jlist *items = NULL;
        if ((rc = jv_iterate(c, v, &items))) return rc;
        if (f[0] == 'l' && f[1] == 'i') {
            if ((rc = jv_list_new(c, items->n, false, out))) return rc;
            if (items->n) memcpy(out->u.list->v, items->v, items->n * sizeof *items->v);
            return TS_OK;
        }
        if (items->n == 0) *out = jv_undef("No first item, sequence was empty.");
        else *out = items->v[f[0] == 'f' ? 0 : items->n - 1];
        return TS_OK;
    }
    if (!strcmp(f, "items")) {
        if (v->type == JV_UNDEF) return jv_list_new(c, 0, false, out);
        if (v->type != JV_DICT) return jx_fail(c, TS_E_INVALID, "can only get item pairs from a mapping");
        jargs none = {0};
        return dict_method(c, "items", v, &none, out);
    }
    if (!strcmp(f, "join")) {
        jlist *items = NULL;
        if ((rc = jv_iterate(c, v, &items))) return rc;
        const jv *sep = arg(a, 0, "d"), *attribute = arg(a, 1, "attribute");
        jv empty = jv_str("", 0, NULL);
        if (!sep) sep = &empty;
        jv s;
        if ((rc = jv_to_str(c, sep, &s))) return rc;
        jv *parts = items->n ? jx_alloc(c, items->n * sizeof *parts) : NULL;
        if (items->n && !parts) return TS_E_INVALID;
        for (size_t i = 0; i < items->n && !rc; i++) {
            jv item = items->v[i];
            if (attribute && attribute->type == JV_STR) rc = attr_path(c, &items->v[i], attribute, &item);
            if (!rc) rc = jv_to_str(c, &item, &parts[i]);
        }
        return rc ? rc : join_strs(c, parts, items->n, &s, out);
    }
    if (!strcmp(f, "map")) return f_map(c, v, a, out);
    if (!strcmp(f, "select") || !strcmp(f, "reject") || !strcmp(f, "selectattr") || !strcmp(f, "rejectattr"))
        return f_select(c, f, v, a, out);
    if (!strcmp(f, "sort")) return f_sort(c, v, a, out, false);
    if (!strcmp(f, "unique")) return f_sort(c, v, a, out, true);
    if (!strcmp(f, "tojson")) return f_tojson(c, v, a, out);
    if (!strcmp(f, "e") || !strcmp(f, "escape")) return f_escape(c, v, out);
    if (!strcmp(f, "reverse")) {
        if (v->type == JV_STR) {
            jlist *chars = NULL;
            if ((rc = jv_iterate(c, v, &chars))) return rc;
            jv *rev = chars->n ? jx_alloc(c, chars->n * sizeof *rev) : NULL;
            if (chars->n && !rev) return TS_E_INVALID;
            for (size_t i = 0; i < chars->n; i++)
                rev[i] = chars->v[chars->n - 1 - i];
            jv empty = jv_str("", 0, NULL);
            return join_strs(c, rev, chars->n, &empty, out);
        }
        jlist *items = NULL;
        if ((rc = jv_iterate(c, v, &items))) return rc;
        if ((rc = jv_list_new(c, items->n, false, out))) return rc;
        for (size_t i = 0; i < items->n; i++)
            out->u.list->v[i] = items->v[items->n - 1 - i];
        return TS_OK;
    }
    if (!strcmp(f, "abs")) {
        if (v->type == JV_INT) {
            if (v->u.i == INT64_MIN) return jx_fail(c, TS_E_INVALID, "integer overflow");
            *out = jv_int(v->u.i < 0 ? -v->u.i : v->u.i);
        } else if (v->type == JV_FLOAT) *out = jv_float(fabs(v->u.f));
        else if (v->type == JV_BOOL) *out = jv_int(v->u.b);
        else return jx_fail(c, TS_E_INVALID, "bad operand type for abs(): '%s'", jv_type_name(v));
        return TS_OK;
    }
    /* string filters: the value is made a string first (Jinja's soft_str) */
    jv s;
    if ((rc = jv_to_str(c, v, &s))) return rc;
    if (!strcmp(f, "trim")) {
        const jv *chars = arg(a, 0, "chars");
        if (chars && chars->type != JV_NONE && (rc = want_str(c, chars, "trim"))) return rc;
        *out = strip(&s, chars && chars->type == JV_STR ? chars : NULL, true, true);
        return TS_OK;
    }
    if (!strcmp(f, "lower")) return case_map(c, &s, 'l', out);
    if (!strcmp(f, "upper")) return case_map(c, &s, 'u', out);
    if (!strcmp(f, "capitalize")) return case_map(c, &s, 'c', out);
    if (!strcmp(f, "title")) return case_map(c, &s, 'T', out);
    if (!strcmp(f, "replace")) {
        const jv *old = arg(a, 0, "old"), *new_ = arg(a, 1, "new"), *count = arg(a, 2, "count");
        if (!old || !new_) return jx_fail(c, TS_E_INVALID, "replace needs the old and the new text");
        jv os, ns;
        if ((rc = jv_to_str(c, old, &os)) || (rc = jv_to_str(c, new_, &ns))) return rc;
        int64_t k = -1;
        if (count && count->type != JV_NONE && (rc = want_int(c, count, "replace count", &k))) return rc;
        return replace(c, &s, &os, &ns, k, out);
    }
    if (!strcmp(f, "indent")) return f_indent(c, &s, a, out);
    return jx_fail(c, TS_E_INTERNAL, "filter '%s' has no implementation", f);
}
