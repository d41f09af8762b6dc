/*
 * jinja_eval.c — compiling (ts_jinja_compile) and rendering (ts_jinja_render) a template: the
 * statements and the expressions over the values of jinja_value.c.
 *
 * Scopes as Jinja2 has them: the template's top level; each iteration of a for loop (a `set`
 * inside a loop is gone at the next iteration and after the loop: that is what namespace() is
 * for); each macro call (which sees its parameters and the top level). `if` opens no scope.
 * Every node evaluated counts one step; recursion depth, steps, memory and output are bounded
 * (jinja.h), so that a hostile template ends in an error instead of a hang or a crash.
 */
#include "chat/jinja_impl.h"
#include "common/error.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    MAX_STEPS = 10 * 1000 * 1000,
    MAX_DEPTH = 1500,
    JX_BREAK = 1,
    JX_CONTINUE = 2,
};
static const size_t MAX_VALUES = (size_t)256 << 20, MAX_OUTPUT = (size_t)64 << 20,
                    MAX_TEMPLATE = (size_t)1 << 20;

struct jscope {
    jscope *parent;
    jname *names;
    jv *vals;
    size_t n, cap;
};

static void scope_free(jscope *s) {
    free(s->names);
    free(s->vals);
}

static int scope_set(jctx *c, jscope *s, jname name, jv v) {
    for (size_t i = 0; i < s->n; i++)
        if (s->names[i].n == name.n && !memcmp(s->names[i].p, name.p, name.n)) {
            s->vals[i] = v;
            return TS_OK;
        }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        jname *nn = realloc(s->names, cap * sizeof *nn);
        if (nn) s->names = nn;
        jv *nv = nn ? realloc(s->vals, cap * sizeof *nv) : NULL;
        if (!nv) return jx_fail(c, TS_E_NOMEM, "out of memory");
        s->vals = nv;
        s->cap = cap;
    }
    s->names[s->n] = name;
    s->vals[s->n] = v;
    s->n++;
    return TS_OK;
}

static const jv *scope_get(const jscope *s, const char *p, size_t n) {
    for (; s; s = s->parent)
        for (size_t i = s->n; i-- > 0;)
            if (s->names[i].n == n && !memcmp(s->names[i].p, p, n)) return &s->vals[i];
    return NULL;
}

static int step(jctx *c, const jnode *n) {
    c->line = n->line;
    if (++c->steps > MAX_STEPS)
        return jx_fail(c, TS_E_INVALID, "the template takes more than %d evaluation steps (limit)",
                       MAX_STEPS);
    return TS_OK;
}

/* An error for using an undefined value. */
static int undefined_error(jctx *c, const jv *v) {
    return jx_fail(c, TS_E_INVALID, "%s", v->u.s.n ? v->u.s.p : "undefined value");
}

static int emit(jctx *c, const jv *s) {
    if (!s->u.s.n) return TS_OK;
    if (c->out->len + s->u.s.n > MAX_OUTPUT)
        return jx_fail(c, TS_E_INVALID, "the rendered text would exceed %zu MiB (limit)", MAX_OUTPUT >> 20);
    int rc = ts_buf_append(c->out, s->u.s.p, s->u.s.n);
    if (!rc && c->taint) {
        size_t at = c->taint->len;
        rc = ts_buf_reserve(c->taint, s->u.s.n);
        if (!rc) {
            if (s->u.s.taint) memcpy(c->taint->data + at, s->u.s.taint, s->u.s.n);
            else memset(c->taint->data + at, 0, s->u.s.n);
            c->taint->len = at + s->u.s.n;
        }
    }
    return rc ? jx_fail(c, TS_E_NOMEM, "out of memory for the rendered text") : TS_OK;
}

static int eval(jctx *c, const jnode *n, jv *out);
static int exec_body(jctx *c, const jnodes *body);

/* ---- expressions ---- */

static int eval_args(jctx *c, const jnode *n, jv **pos, jv **kw) {
    *pos = n->args.n ? jx_alloc(c, n->args.n * sizeof **pos) : NULL;
    *kw = n->kwvals.n ? jx_alloc(c, n->kwvals.n * sizeof **kw) : NULL;
    if ((n->args.n && !*pos) || (n->kwvals.n && !*kw)) return TS_E_INVALID;
    int rc = TS_OK;
    for (size_t i = 0; i < n->args.n && !rc; i++)
        rc = eval(c, n->args.v[i], &(*pos)[i]);
    for (size_t i = 0; i < n->kwvals.n && !rc; i++)
        rc = eval(c, n->kwvals.v[i], &(*kw)[i]);
    return rc;
}

static int checked(jctx *c, bool overflow, int64_t v, jv *out) {
    if (overflow) return jx_fail(c, TS_E_INVALID, "integer overflow (integers beyond 64 bits are not supported)");
    *out = jv_int(v);
    return TS_OK;
}

static int repeat(jctx *c, const jv *seq, int64_t times, jv *out) {
    if (times < 0) times = 0;
    if (seq->type == JV_STR) {
        size_t n = seq->u.s.n;
        if (n && (uint64_t)times > MAX_VALUES / n)
            return jx_fail(c, TS_E_INVALID, "string repetition too large");
        jv acc = jv_str("", 0, NULL);
        char *p = jx_alloc(c, n * (size_t)times + 1);
        uint8_t *t = seq->u.s.taint ? jx_alloc(c, n * (size_t)times + 1) : NULL;
        if (!p || (seq->u.s.taint && !t)) return TS_E_INVALID;
        for (int64_t i = 0; i < times; i++) {
            memcpy(p + (size_t)i * n, seq->u.s.p, n);
            if (t) memcpy(t + (size_t)i * n, seq->u.s.taint, n);
        }
        acc = jv_str(p, n * (size_t)times, t);
        *out = acc;
        return TS_OK;
    }
    const jlist *l = seq->u.list;
    if (l->n && (uint64_t)times > MAX_VALUES / (l->n * sizeof(jv)))
        return jx_fail(c, TS_E_INVALID, "list repetition too large");
    int rc = jv_list_new(c, l->n * (size_t)times, l->tuple, out);
    for (int64_t i = 0; !rc && l->n && i < times; i++)
        memcpy(out->u.list->v + (size_t)i * l->n, l->v, l->n * sizeof *l->v);
    return rc;
}

static int arith(jctx *c, int op, const jv *a, const jv *b, jv *out) {
    static const char *const names[] = {"", "+", "-", "*", "/", "//", "%", "**", "~"};
    if (a->type == JV_UNDEF) return undefined_error(c, a);
    if (b->type == JV_UNDEF) return undefined_error(c, b);
    bool an = a->type == JV_INT || a->type == JV_BOOL || a->type == JV_FLOAT;
    bool bn = b->type == JV_INT || b->type == JV_BOOL || b->type == JV_FLOAT;
    if (an && bn) {
        bool fl = a->type == JV_FLOAT || b->type == JV_FLOAT;
        double x = a->type == JV_FLOAT ? a->u.f : a->type == JV_INT ? (double)a->u.i : a->u.b;
        double y = b->type == JV_FLOAT ? b->u.f : b->type == JV_INT ? (double)b->u.i : b->u.b;
        int64_t i = a->type == JV_INT ? a->u.i : a->type == JV_BOOL ? a->u.b : 0;
        int64_t j = b->type == JV_INT ? b->u.i : b->type == JV_BOOL ? b->u.b : 0;
        int64_t r = 0;
        switch (op) {
        case OP_ADD:
            if (fl) break;
            {
                bool over = __builtin_add_overflow(i, j, &r);
                return checked(c, over, r, out);
            }
        case OP_SUB:
            if (fl) break;
            {
                bool over = __builtin_sub_overflow(i, j, &r);
                return checked(c, over, r, out);
            }
        case OP_MUL:
            if (fl) break;
            {
                bool over = __builtin_mul_overflow(i, j, &r);
                return checked(c, over, r, out);
            }
        case OP_DIV:
            if (y == 0) return jx_fail(c, TS_E_INVALID, "division by zero");
            *out = jv_float(x / y);
            return TS_OK;
        case OP_FLOORDIV:
        case OP_MOD:
            if (y == 0) return jx_fail(c, TS_E_INVALID, "%s by zero", op == OP_MOD ? "modulo" : "integer division");
            if (!fl) {
                if (i == INT64_MIN && j == -1) return checked(c, true, 0, out);
                int64_t q = i / j, m = i % j;
                if (m && ((m < 0) != (j < 0))) {
                    q--;
                    m += j;
                }
                *out = jv_int(op == OP_MOD ? m : q);
                return TS_OK;
            } else {
                double m = fmod(x, y);
                if (m && ((m < 0) != (y < 0))) m += y;
                *out = jv_float(op == OP_MOD ? m : floor(x / y));
                return TS_OK;
            }
        case OP_POW:
            if (!fl && j >= 0) {
                int64_t acc = 1, base = i;
                bool over = false;
                for (int64_t e = j; e > 0 && !over; e >>= 1) {
                    if (e & 1) over |= __builtin_mul_overflow(acc, base, &acc);
                    if (e > 1) over |= __builtin_mul_overflow(base, base, &base);
                }
                return checked(c, over, acc, out);
            }
            if (x == 0 && y < 0) return jx_fail(c, TS_E_INVALID, "0.0 cannot be raised to a negative power");
            *out = jv_float(pow(x, y));
            return TS_OK;
        }
        if (op == OP_ADD) *out = jv_float(x + y);
        else if (op == OP_SUB) *out = jv_float(x - y);
        else *out = jv_float(x * y);
        return TS_OK;
    }
    if (op == OP_ADD && a->type == JV_STR && b->type == JV_STR) return jv_concat(c, a, b, out);
    if (op == OP_ADD && a->type == JV_LIST && b->type == JV_LIST &&
        a->u.list->tuple == b->u.list->tuple) {
        const jlist *x = a->u.list, *y = b->u.list;
        int rc = jv_list_new(c, x->n + y->n, x->tuple, out);
        if (rc) return rc;
        if (x->n) memcpy(out->u.list->v, x->v, x->n * sizeof *x->v);
        if (y->n) memcpy(out->u.list->v + x->n, y->v, y->n * sizeof *y->v);
        return TS_OK;
    }
    if (op == OP_MUL && (a->type == JV_STR || a->type == JV_LIST) && (b->type == JV_INT || b->type == JV_BOOL))
        return repeat(c, a, b->type == JV_INT ? b->u.i : b->u.b, out);
    if (op == OP_MUL && (b->type == JV_STR || b->type == JV_LIST) && (a->type == JV_INT || a->type == JV_BOOL))
        return repeat(c, b, a->type == JV_INT ? a->u.i : a->u.b, out);
    if (op == OP_MOD && a->type == JV_STR)
        return jx_fail(c, TS_E_INVALID, "%%-formatting of strings is not supported");
    return jx_fail(c, TS_E_INVALID, "unsupported operand type(s) for %s: '%s' and '%s'", names[op],
                   jv_type_name(a), jv_type_name(b));
}

static int contains(jctx *c, const jv *item, const jv *seq, bool *out) {
    switch (seq->type) {
    case JV_STR:
        if (item->type != JV_STR)
            return jx_fail(c, TS_E_INVALID, "'in <string>' requires string as left operand, not %s",
                           jv_type_name(item));
        *out = item->u.s.n == 0 || memmem(seq->u.s.p, seq->u.s.n, item->u.s.p, item->u.s.n);
        return TS_OK;
    case JV_LIST:
        *out = false;
        for (size_t i = 0; i < seq->u.list->n && !*out; i++)
            *out = jv_equal(&seq->u.list->v[i], item);
        return TS_OK;
    case JV_DICT:
    case JV_NS: *out = jv_dict_find(seq->u.dict, *item) != NULL; return TS_OK;
    case JV_UNDEF: *out = false; return TS_OK;
    default:
        return jx_fail(c, TS_E_INVALID, "argument of type '%s' is not iterable", jv_type_name(seq));
    }
}

static int compare(jctx *c, int op, const jv *a, const jv *b, bool *out) {
    static const char *const names[] = {"==", "!=", "<", "<=", ">", ">="};
    if (op == OP_EQ || op == OP_NE) {
        *out = jv_equal(a, b) == (op == OP_EQ);
        return TS_OK;
    }
    if (op == OP_IN || op == OP_NOTIN) {
        int rc = contains(c, a, b, out);
        if (op == OP_NOTIN) *out = !*out;
        return rc;
    }
    if (a->type == JV_UNDEF) return undefined_error(c, a);
    if (b->type == JV_UNDEF) return undefined_error(c, b);
    int cmp = 0;
    int rc = jv_compare(c, a, b, names[op - OP_EQ], &cmp);
    if (rc) return rc;
    *out = op == OP_LT ? cmp < 0 : op == OP_LE ? cmp <= 0 : op == OP_GT ? cmp > 0 : cmp >= 0;
    return TS_OK;
}

/* Python's slice of n items: start, count and step. */
static void slice_indices(const jv *parts, int64_t n, int64_t *start, int64_t *stop, int64_t *stride) {
    *stride = parts[2].type == JV_INT ? parts[2].u.i : 1;
    bool neg = *stride < 0;
    int64_t lo = neg ? -1 : 0, hi = neg ? n - 1 : n;
    for (int k = 0; k < 2; k++) {
        int64_t *dst = k ? stop : start;
        if (parts[k].type != JV_INT) {
            *dst = k ? (neg ? lo : hi) : (neg ? hi : lo);
            continue;
        }
        int64_t v = parts[k].u.i;
        if (v < 0) v = v + n < lo ? lo : v + n;
        else if (v > hi) v = hi;
        *dst = v;
    }
}

static int eval_slice(jctx *c, const jnode *n, jv *out) {
    jv obj, parts[3] = {jv_none(), jv_none(), jv_none()};
    int rc = eval(c, n->a, &obj);
    for (int k = 0; k < 3 && !rc; k++) {
        if (!n->args.v[k]) continue;
        rc = eval(c, n->args.v[k], &parts[k]);
        if (!rc && parts[k].type == JV_BOOL) parts[k] = jv_int(parts[k].u.b);
        if (!rc && parts[k].type != JV_INT && parts[k].type != JV_NONE)
            rc = jx_fail(c, TS_E_INVALID, "slice indices must be integers or None");
    }
    if (rc) return rc;
    if (parts[2].type == JV_INT && parts[2].u.i == 0) return jx_fail(c, TS_E_INVALID, "slice step cannot be zero");
    if (obj.type == JV_UNDEF) return undefined_error(c, &obj);
    jlist *items = NULL;
    if (obj.type == JV_STR || obj.type == JV_LIST) rc = jv_iterate(c, &obj, &items);
    else return jx_fail(c, TS_E_INVALID, "'%s' object is not subscriptable", jv_type_name(&obj));
    if (rc) return rc;
    int64_t start, stop, stride, len = (int64_t)items->n;
    slice_indices(parts, len, &start, &stop, &stride);
    size_t count = 0;
    for (int64_t i = start; stride > 0 ? i < stop : i > stop; i += stride)
        count++;
    jv res;
    rc = jv_list_new(c, count, obj.type == JV_LIST && obj.u.list->tuple, &res);
    size_t k = 0;
    for (int64_t i = start; !rc && (stride > 0 ? i < stop : i > stop); i += stride)
        res.u.list->v[k++] = items->v[i];
    if (rc || obj.type == JV_LIST) {
        *out = res;
        return rc;
    }
    /* a string: join the characters back */
    jv acc = jv_str("", 0, NULL);
    size_t total = 0;
    for (size_t i = 0; i < count; i++)
        total += res.u.list->v[i].u.s.n;
    char *p = jx_alloc(c, total + 1);
    uint8_t *t = obj.u.s.taint ? jx_alloc(c, total + 1) : NULL;
    if (!p || (obj.u.s.taint && !t)) return TS_E_INVALID;
    size_t at = 0;
    for (size_t i = 0; i < count; i++) {
        const jv *ch = &res.u.list->v[i];
        memcpy(p + at, ch->u.s.p, ch->u.s.n);
        if (t) memcpy(t + at, ch->u.s.taint, ch->u.s.n);
        at += ch->u.s.n;
    }
    acc = jv_str(p, total, t);
    *out = acc;
    return TS_OK;
}

static int eval_call(jctx *c, const jnode *n, jv *out) {
    jv fn;
    int rc = eval(c, n->a, &fn);
    if (rc) return rc;
    jv *pos = NULL, *kw = NULL;
    rc = eval_args(c, n, &pos, &kw);
    if (rc) return rc;
    jargs args = {pos, n->args.n, n->kwnames, kw, n->kwvals.n};
    c->line = n->line;
    switch (fn.type) {
    case JV_FUNC: return jx_call_builtin(c, &fn, &args, out);
    case JV_MACRO: return jx_call_macro(c, fn.u.macro, &args, out);
    case JV_UNDEF: return undefined_error(c, &fn);
    default: return jx_fail(c, TS_E_INVALID, "'%s' object is not callable", jv_type_name(&fn));
    }
}

static int eval_inner(jctx *c, const jnode *n, jv *out) {
    jv a, b;
    int rc;
    switch (n->kind) {
    case E_LIT: *out = n->lit; return TS_OK;
    case E_NAME: {
        const jv *v = scope_get(c->scope, n->name.p, n->name.n);
        if (v) {
            *out = *v;
            return TS_OK;
        }
        if (jx_global_function(n->name.p, n->name.n, out)) return TS_OK;
        char *msg = jx_alloc(c, n->name.n + 20);
        if (!msg) return TS_E_INVALID;
        snprintf(msg, n->name.n + 20, "'%.*s' is undefined", (int)n->name.n, n->name.p);
        *out = jv_undef(msg);
        return TS_OK;
    }
    case E_ATTR:
        rc = eval(c, n->a, &a);
        return rc ? rc : jx_getattr(c, &a, n->name.p, n->name.n, out);
    case E_ITEM:
        rc = eval(c, n->a, &a);
        if (!rc) rc = eval(c, n->b, &b);
        return rc ? rc : jx_getitem(c, &a, &b, out);
    case E_SLICE: return eval_slice(c, n, out);
    case E_CALL: return eval_call(c, n, out);
    case E_FILTER:
    case E_TEST: {
        rc = eval(c, n->a, &a);
        jv *pos = NULL, *kw = NULL;
        if (!rc) rc = eval_args(c, n, &pos, &kw);
        if (rc) return rc;
        jargs args = {pos, n->args.n, n->kwnames, kw, n->kwvals.n};
        c->line = n->line;
        if (n->kind == E_FILTER) return jx_filter(c, n->name.p, n->name.n, &a, &args, out);
        bool r = false;
        rc = jx_test(c, n->name.p, n->name.n, &a, &args, &r);
        *out = jv_bool(n->op ? !r : r);
        return rc;
    }
    case E_UNARY:
        rc = eval(c, n->a, &a);
        if (rc) return rc;
        if (n->op == 'n') {
            *out = jv_bool(!jv_truthy(&a));
            return TS_OK;
        }
        if (a.type == JV_UNDEF) return undefined_error(c, &a);
        if (a.type == JV_BOOL) a = jv_int(a.u.b);
        if (a.type == JV_INT) {
            if (n->op == '-' && a.u.i == INT64_MIN) return checked(c, true, 0, out);
            *out = jv_int(n->op == '-' ? -a.u.i : a.u.i);
        } else if (a.type == JV_FLOAT) {
            *out = jv_float(n->op == '-' ? -a.u.f : a.u.f);
        } else {
            return jx_fail(c, TS_E_INVALID, "bad operand type for unary %c: '%s'", n->op, jv_type_name(&a));
        }
        return TS_OK;
    case E_AND:
    case E_OR:
        rc = eval(c, n->a, &a);
        if (rc) return rc;
        if (jv_truthy(&a) == (n->kind == E_OR)) {
            *out = a;
            return TS_OK;
        }
        return eval(c, n->b, out);
    case E_BIN:
        rc = eval(c, n->a, &a);
        if (!rc) rc = eval(c, n->b, &b);
        if (rc) return rc;
        c->line = n->line;
        if (n->op == OP_CONCAT) {
            jv sa, sb;
            rc = jv_to_str(c, &a, &sa);
            if (!rc) rc = jv_to_str(c, &b, &sb);
            return rc ? rc : jv_concat(c, &sa, &sb, out);
        }
        return arith(c, n->op, &a, &b, out);
    case E_COMPARE: {
        rc = eval(c, n->args.v[0], &a);
        bool r = true;
        for (size_t i = 1; !rc && r && i < n->args.n; i++) {
            rc = eval(c, n->args.v[i], &b);
            if (!rc) rc = compare(c, n->ops[i - 1], &a, &b, &r);
            a = b;
        }
        *out = jv_bool(r);
        return rc;
    }
    case E_COND:
        rc = eval(c, n->b, &a);
        if (rc) return rc;
        if (jv_truthy(&a)) return eval(c, n->a, out);
        if (n->c) return eval(c, n->c, out);
        *out = jv_undef("the condition of an inline if was false and it has no else");
        return TS_OK;
    case E_LIST:
    case E_TUPLE:
        rc = jv_list_new(c, n->args.n, n->kind == E_TUPLE, out);
        for (size_t i = 0; !rc && i < n->args.n; i++)
            rc = eval(c, n->args.v[i], &out->u.list->v[i]);
        return rc;
    case E_DICT:
        rc = jv_dict_new(c, out, false);
        for (size_t i = 0; !rc && i < n->args.n; i++) {
            rc = eval(c, n->args.v[i], &a);
            if (!rc) rc = eval(c, n->kwvals.v[i], &b);
            if (!rc && (a.type == JV_LIST && !a.u.list->tuple))
                rc = jx_fail(c, TS_E_INVALID, "unhashable type: 'list'");
            if (!rc && (a.type == JV_DICT || a.type == JV_UNDEF))
                rc = jx_fail(c, TS_E_INVALID, "unhashable type: '%s'", jv_type_name(&a));
            if (!rc) rc = jv_dict_set(c, out->u.dict, a, b);
        }
        return rc;
    default: return jx_fail(c, TS_E_INTERNAL, "statement node %d in an expression", (int)n->kind);
    }
}

static int eval(jctx *c, const jnode *n, jv *out) {
    int rc = step(c, n);
    if (rc) return rc;
    if (++c->depth > MAX_DEPTH) return jx_fail(c, TS_E_INVALID, "the template recurses too deep (more than %d levels)", MAX_DEPTH);
    rc = eval_inner(c, n, out);
    c->depth--;
    return rc;
}

/* ---- statements ---- */

static int unpack(jctx *c, jscope *s, const jname *names, size_t n, const jv *v) {
    if (n == 1) return scope_set(c, s, names[0], *v);
    if (v->type != JV_LIST && v->type != JV_STR && v->type != JV_DICT)
        return jx_fail(c, TS_E_INVALID, "cannot unpack non-iterable %s object", jv_type_name(v));
    jlist *items = NULL;
    int rc = jv_iterate(c, v, &items);
    if (rc) return rc;
    if (items->n != n)
        return jx_fail(c, TS_E_INVALID, "%s values to unpack (expected %zu, got %zu)",
                       items->n > n ? "too many" : "not enough", n, items->n);
    for (size_t i = 0; i < n && !rc; i++)
        rc = scope_set(c, s, names[i], items->v[i]);
    return rc;
}

/* Runs body with output going to a string of its own (set blocks, macro calls). */
static int capture(jctx *c, const jnodes *body, jv *out) {
    ts_buf text = {0}, taint = {0};
    ts_buf *saved_out = c->out, *saved_taint = c->taint;
    c->out = &text;
    c->taint = &taint;
    int rc = exec_body(c, body);
    c->out = saved_out;
    c->taint = saved_taint;
    if (rc == JX_BREAK || rc == JX_CONTINUE) rc = TS_OK;
    bool tainted = false;
    for (size_t i = 0; i < taint.len && !tainted; i++)
        tainted = taint.data[i] != 0;
    char *p = rc ? NULL : jx_alloc(c, text.len + 1);
    uint8_t *t = !rc && tainted ? jx_alloc(c, text.len) : NULL;
    if (!rc && (!p || (tainted && !t))) rc = TS_E_INVALID;
    if (!rc) {
        if (text.len) memcpy(p, text.data, text.len);
        if (t) memcpy(t, taint.data, text.len);
        *out = jv_str(p, text.len, t);
    }
    ts_buf_free(&text);
    ts_buf_free(&taint);
    return rc;
}

static int exec_for(jctx *c, const jnode *n) {
    jv iter;
    int rc = eval(c, n->a, &iter);
    if (rc) return rc;
    jlist *items = NULL;
    rc = jv_iterate(c, &iter, &items);
    if (rc) return rc;
    jscope *outer = c->scope;
    if (n->b) { /* the loop's filter, before the loop: loop.length counts what passes */
        jv kept;
        rc = jv_list_new(c, items->n, false, &kept);
        size_t k = 0;
        for (size_t i = 0; !rc && i < items->n; i++) {
            jscope s = {.parent = outer};
            c->scope = &s;
            jv ok;
            rc = unpack(c, &s, n->targets, n->n_targets, &items->v[i]);
            if (!rc) rc = eval(c, n->b, &ok);
            if (!rc && jv_truthy(&ok)) kept.u.list->v[k++] = items->v[i];
            c->scope = outer;
            scope_free(&s);
        }
        if (rc) return rc;
        kept.u.list->n = k;
        items = kept.u.list;
    }
    jloop *loop = jx_alloc(c, sizeof *loop);
    if (!loop) return TS_E_INVALID;
    loop->items = items;
    loop->depth = 1;
    for (size_t i = 0; !rc && i < items->n; i++) {
        jscope s = {.parent = outer};
        c->scope = &s;
        loop->index = i;
        rc = unpack(c, &s, n->targets, n->n_targets, &items->v[i]);
        if (!rc) rc = scope_set(c, &s, (jname){"loop", 4}, (jv){.type = JV_LOOP, .u.loop = loop});
        if (!rc) rc = exec_body(c, &n->body);
        c->scope = outer;
        scope_free(&s);
        if (rc == JX_CONTINUE) rc = TS_OK;
        if (rc == JX_BREAK) return TS_OK;
        if (!rc) rc = step(c, n);
    }
    if (!rc && items->n == 0) rc = exec_body(c, &n->orelse);
    return rc;
}

static int exec_node(jctx *c, const jnode *n) {
    int rc = step(c, n);
    if (rc) return rc;
    jv v;
    switch (n->kind) {
    case N_TEXT: return emit(c, &n->lit);
    case N_OUTPUT:
        rc = eval(c, n->a, &v);
        if (!rc) rc = jv_to_str(c, &v, &v);
        return rc ? rc : emit(c, &v);
    case N_IF:
        rc = eval(c, n->a, &v);
        if (rc) return rc;
        return exec_body(c, jv_truthy(&v) ? &n->body : &n->orelse);
    case N_FOR: return exec_for(c, n);
    case N_SET:
        rc = eval(c, n->a, &v);
        if (rc) return rc;
        if (n->b) {
            jv ns;
            rc = eval(c, n->b->a, &ns);
            if (rc) return rc;
            c->line = n->line;
            if (ns.type != JV_NS)
                return jx_fail(c, TS_E_INVALID, "cannot assign attribute on non-namespace object");
            return jv_dict_set(c, ns.u.dict, jv_str(n->b->name.p, n->b->name.n, NULL), v);
        }
        return unpack(c, c->scope, n->targets, n->n_targets, &v);
    case N_SET_BLOCK:
        rc = capture(c, &n->body, &v);
        return rc ? rc : scope_set(c, c->scope, n->targets[0], v);
    case N_MACRO: return scope_set(c, c->scope, n->name, (jv){.type = JV_MACRO, .u.macro = n});
    case N_BREAK: return JX_BREAK;
    case N_CONTINUE: return JX_CONTINUE;
    case N_BLOCK: return exec_body(c, &n->body);
    default: return eval(c, n, &v);
    }
}

static int exec_body(jctx *c, const jnodes *body) {
    if (++c->depth > MAX_DEPTH) return jx_fail(c, TS_E_INVALID, "the template recurses too deep (more than %d levels)", MAX_DEPTH);
    int rc = TS_OK;
    for (size_t i = 0; i < body->n && !rc; i++)
        rc = exec_node(c, body->v[i]);
    c->depth--;
    return rc;
}

int jx_call_macro(jctx *c, const jnode *m, const jargs *args, jv *out) {
    if (args->n_pos > m->n_targets)
        return jx_fail(c, TS_E_INVALID, "macro '%.*s' takes not more than %zu argument(s)",
                       (int)m->name.n, m->name.p, m->n_targets);
    jscope s = {.parent = c->global};
    jscope *saved = c->scope;
    int rc = TS_OK;
    for (size_t k = 0; k < args->n_kw && !rc; k++) {
        bool known = false;
        for (size_t i = 0; i < m->n_targets && !known; i++)
            known = m->targets[i].n == args->kwnames[k].n &&
                    !memcmp(m->targets[i].p, args->kwnames[k].p, args->kwnames[k].n);
        if (!known)
            rc = jx_fail(c, TS_E_INVALID, "macro '%.*s' has no parameter '%.*s'", (int)m->name.n,
                         m->name.p, (int)args->kwnames[k].n, args->kwnames[k].p);
    }
    c->scope = &s;
    for (size_t i = 0; i < m->n_targets && !rc; i++) {
        jv v = jv_undef("a macro parameter was not provided");
        bool given = i < args->n_pos;
        if (given) v = args->pos[i];
        for (size_t k = 0; k < args->n_kw && !given; k++)
            if (args->kwnames[k].n == m->targets[i].n &&
                !memcmp(args->kwnames[k].p, m->targets[i].p, m->targets[i].n)) {
                v = args->kw[k];
                given = true;
            }
        if (!given && m->kwvals.v[i]) rc = eval(c, m->kwvals.v[i], &v);
        if (!rc) rc = scope_set(c, &s, m->targets[i], v);
    }
    if (!rc && c->depth + 10 > MAX_DEPTH) rc = jx_fail(c, TS_E_INVALID, "macros call each other too deep");
    if (!rc) rc = capture(c, &m->body, out);
    c->scope = saved;
    scope_free(&s);
    return rc;
}

/* ---- compile and render ---- */

int ts_jinja_compile(const char *src, size_t len, ts_jinja **out) {
    *out = NULL;
    if (len > MAX_TEMPLATE) return ts_error_set(TS_E_INVALID, "template larger than %zu MiB", MAX_TEMPLATE >> 20);
    ts_jinja *t = calloc(1, sizeof *t);
    char *s = t ? malloc(len + 1) : NULL;
    if (!s) {
        free(t);
        return ts_error_set(TS_E_NOMEM, "out of memory for a template of %zu bytes", len);
    }
    /* Jinja2: \r\n and \r become \n; one trailing newline is dropped. */
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            s[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else {
            s[n++] = src[i];
        }
    }
    if (n && s[n - 1] == '\n') n--;
    s[n] = '\0';
    t->source = s;
    t->arena.limit = 512 * len + ((size_t)8 << 20); /* tokens and nodes: well under this */
    jtokens toks = {0};
    int rc = ts_jinja_lex(&t->arena, s, n, &toks);
    if (!rc) rc = ts_jinja_parse_tokens(&t->arena, &toks, &t->body);
    if (rc) {
        ts_jinja_destroy(t);
        return rc;
    }
    *out = t;
    return TS_OK;
}

void ts_jinja_destroy(ts_jinja *t) {
    if (!t) return;
    ja_free(&t->arena);
    free(t->source);
    free(t);
}

static int from_json(jctx *c, const ts_json *j, bool untrusted, jv *out) {
    int rc = TS_OK;
    switch (j->type) {
    case TS_JSON_NULL: *out = jv_none(); return TS_OK;
    case TS_JSON_BOOL: *out = jv_bool(j->boolean); return TS_OK;
    case TS_JSON_NUMBER: *out = j->is_integer ? jv_int(j->integer) : jv_float(j->number); return TS_OK;
    case TS_JSON_STRING: {
        uint8_t *t = NULL;
        if (untrusted && j->length) {
            t = jx_alloc(c, j->length);
            if (!t) return TS_E_INVALID;
            memset(t, 1, j->length);
        }
        *out = jv_str(j->string, j->length, t);
        return TS_OK;
    }
    case TS_JSON_ARRAY:
        rc = jv_list_new(c, j->length, false, out);
        for (size_t i = 0; !rc && i < j->length; i++)
            rc = from_json(c, &j->items[i], untrusted, &out->u.list->v[i]);
        return rc;
    case TS_JSON_OBJECT:
        rc = jv_dict_new(c, out, false);
        for (size_t i = 0; !rc && i < j->length; i++) {
            const ts_json_member *m = &j->members[i];
            ts_json key = {.type = TS_JSON_STRING, .string = m->key, .length = m->key_length};
            jv k, v;
            rc = from_json(c, &key, untrusted, &k);
            if (!rc) rc = from_json(c, &m->value, untrusted, &v);
            if (!rc) rc = jv_dict_set(c, out->u.dict, k, v);
        }
        return rc;
    }
    return TS_OK;
}

int ts_jinja_render(const ts_jinja *t, const ts_jinja_var *vars, size_t n_vars, ts_buf *out,
                    ts_buf *taint) {
    jscope global = {0};
    jctx c = {.out = out, .taint = taint, .scope = &global, .global = &global, .line = 0};
    c.arena.limit = MAX_VALUES;
    int rc = TS_OK;
    for (size_t i = 0; i < n_vars && !rc; i++) {
        const ts_jinja_var *var = &vars[i];
        jv v = jv_none();
        switch (var->kind) {
        case TS_JINJA_JSON: rc = var->json ? from_json(&c, var->json, var->untrusted, &v) : TS_OK; break;
        case TS_JINJA_STRING: {
            const char *s = var->string ? var->string : "";
            ts_json j = {.type = TS_JSON_STRING, .string = s, .length = strlen(s)};
            rc = from_json(&c, &j, var->untrusted, &v);
            break;
        }
        case TS_JINJA_BOOL: v = jv_bool(var->boolean); break;
        case TS_JINJA_NONE: break;
        }
        if (!rc) rc = scope_set(&c, &global, (jname){var->name, strlen(var->name)}, v);
    }
    if (!rc) rc = exec_body(&c, &t->body);
    scope_free(&global);
    ja_free(&c.arena);
    return rc;
}
