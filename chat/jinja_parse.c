/*
 * jinja_parse.c — tokens to a syntax tree, with Jinja2's grammar and operator precedence
 * (lowest first): `x if c else y`, or, and, not, comparisons (chained; in, not in), + -, ~,
 * * / // %, **, unary - +, then postfix (.attr, [key], [a:b:c], calls) and filters/tests, which
 * bind tighter than every binary operator (`'a' + x | trim` trims x alone).
 * Statements: if/elif/else, for/else, set (= or block), macro, break/continue, generation.
 * Every construct outside that subset is a syntax error naming it.
 */
#include "chat/jinja_impl.h"
#include "common/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

enum { MAX_EXPR_DEPTH = 200, MAX_TAG_DEPTH = 100 };

typedef struct parser {
    jarena *a;
    const jtokens *t;
    size_t i;
    int depth, tag_depth, loop_depth;
} parser;

static int fail(const parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(const parser *p, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = jx_failv(TS_E_INVALID, p->t->v[p->i].line, fmt, ap);
    va_end(ap);
    return rc;
}

static const jtoken *cur(const parser *p) { return &p->t->v[p->i]; }
static const jtoken *ahead(const parser *p, size_t k) {
    size_t j = p->i + k;
    return j < p->t->n ? &p->t->v[j] : &p->t->v[p->t->n - 1];
}
static void advance(parser *p) {
    if (p->t->v[p->i].kind != TK_EOF) p->i++;
}

static bool tok_op(const jtoken *t, const char *op) {
    return t->kind == TK_OP && t->n == strlen(op) && !memcmp(t->p, op, t->n);
}
static bool tok_name(const jtoken *t, const char *name) {
    return t->kind == TK_NAME && t->n == strlen(name) && !memcmp(t->p, name, t->n);
}

bool jname_is(jname a, const char *s) { return a.n == strlen(s) && !memcmp(a.p, s, a.n); }

/* A token as an error message shows it. */
static void describe(const jtoken *t, char *buf, size_t size) {
    switch (t->kind) {
    case TK_EOF: snprintf(buf, size, "end of template"); break;
    case TK_TEXT: snprintf(buf, size, "text"); break;
    case TK_VAR_BEGIN: snprintf(buf, size, "'{{'"); break;
    case TK_VAR_END: snprintf(buf, size, "end of '{{ ... }}'"); break;
    case TK_BLOCK_BEGIN: snprintf(buf, size, "'{%%'"); break;
    case TK_BLOCK_END: snprintf(buf, size, "end of '{%% ... %%}'"); break;
    case TK_STRING: snprintf(buf, size, "a string"); break;
    case TK_INT:
    case TK_FLOAT: snprintf(buf, size, "number %.*s", (int)(t->n > 40 ? 40 : t->n), t->p); break;
    case TK_NAME:
    case TK_OP: snprintf(buf, size, "'%.*s'", (int)(t->n > 40 ? 40 : t->n), t->p); break;
    }
}

static int unexpected(const parser *p, const char *expected) {
    char got[64];
    describe(cur(p), got, sizeof got);
    return fail(p, "expected %s, found %s", expected, got);
}

static jnode *new_node(parser *p, jnode_kind kind) {
    jnode *n = ja_alloc(p->a, sizeof *n);
    if (n) {
        n->kind = kind;
        n->line = cur(p)->line;
    }
    return n;
}

static int nomem(void) { return ts_error_set(TS_E_NOMEM, "template too large (syntax tree)"); }

/* Growable arrays in the arena. */
typedef struct nvec {
    jnode **v;
    jname *names;
    size_t n, cap;
} nvec;

static int nvec_push(parser *p, nvec *v, jnode *node, jname name) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 4;
        jnode **nv = ja_alloc(p->a, cap * sizeof *nv);
        jname *nn = ja_alloc(p->a, cap * sizeof *nn);
        if (!nv || !nn) return nomem();
        if (v->n) {
            memcpy(nv, v->v, v->n * sizeof *nv);
            memcpy(nn, v->names, v->n * sizeof *nn);
        }
        v->v = nv;
        v->names = nn;
        v->cap = cap;
    }
    v->v[v->n] = node;
    v->names[v->n] = name;
    v->n++;
    return TS_OK;
}

static jnodes nvec_nodes(const nvec *v) { return (jnodes){v->v, v->n}; }

static int parse_expr(parser *p, bool condexpr, jnode **out);
static int parse_unary(parser *p, bool with_filter, jnode **out);
static int parse_tuple(parser *p, bool condexpr, jnode **out);

static int expect_op(parser *p, const char *op) {
    if (!tok_op(cur(p), op)) {
        char want[16];
        snprintf(want, sizeof want, "'%s'", op);
        return unexpected(p, want);
    }
    advance(p);
    return TS_OK;
}

/* ( args, name=value ) after the opening parenthesis has been seen (not consumed). */
static int parse_call_args(parser *p, nvec *args, nvec *kw) {
    int rc = expect_op(p, "(");
    while (!rc && !tok_op(cur(p), ")")) {
        if (tok_op(cur(p), "*") || tok_op(cur(p), "**"))
            return fail(p, "*args and **kwargs in calls are not supported");
        jnode *v = NULL;
        if (cur(p)->kind == TK_NAME && tok_op(ahead(p, 1), "=")) {
            jname name = {cur(p)->p, cur(p)->n};
            advance(p);
            advance(p);
            rc = parse_expr(p, true, &v);
            if (!rc) rc = nvec_push(p, kw, v, name);
        } else {
            if (kw->n) return fail(p, "a positional argument follows a keyword argument");
            rc = parse_expr(p, true, &v);
            if (!rc) rc = nvec_push(p, args, v, (jname){0});
        }
        if (!rc && !tok_op(cur(p), ")")) rc = expect_op(p, ",");
    }
    if (!rc) advance(p);
    return rc;
}

static int set_call(parser *p, jnode *n) {
    nvec args = {0}, kw = {0};
    int rc = parse_call_args(p, &args, &kw);
    n->args = nvec_nodes(&args);
    n->kwvals = nvec_nodes(&kw);
    n->kwnames = kw.names;
    return rc;
}

/* node(...): a call of *node. */
static int parse_call(parser *p, jnode **node) {
    jnode *n = new_node(p, E_CALL);
    if (!n) return nomem();
    n->a = *node;
    *node = n;
    return set_call(p, n);
}

static int parse_primary(parser *p, jnode **out) {
    const jtoken *t = cur(p);
    jnode *n = NULL;
    int rc = TS_OK;
    if (t->kind == TK_NAME) {
        n = new_node(p, E_LIT);
        if (!n) return nomem();
        if (tok_name(t, "true") || tok_name(t, "True")) n->lit = jv_bool(true);
        else if (tok_name(t, "false") || tok_name(t, "False")) n->lit = jv_bool(false);
        else if (tok_name(t, "none") || tok_name(t, "None")) n->lit = jv_none();
        else {
            n->kind = E_NAME;
            n->name = (jname){t->p, t->n};
        }
        advance(p);
    } else if (t->kind == TK_STRING) {
        n = new_node(p, E_LIT);
        if (!n) return nomem();
        jstr s = t->s;
        advance(p);
        while (cur(p)->kind == TK_STRING) { /* adjacent literals concatenate */
            jstr b = cur(p)->s;
            char *m = ja_alloc(p->a, s.n + b.n + 1);
            if (!m) return nomem();
            memcpy(m, s.p, s.n);
            memcpy(m + s.n, b.p, b.n);
            s = (jstr){m, NULL, s.n + b.n};
            advance(p);
        }
        n->lit = jv_str(s.p, s.n, NULL);
    } else if (t->kind == TK_INT || t->kind == TK_FLOAT) {
        n = new_node(p, E_LIT);
        if (!n) return nomem();
        n->lit = t->kind == TK_INT ? jv_int(t->i) : jv_float(t->f);
        advance(p);
    } else if (tok_op(t, "(")) {
        advance(p);
        if (tok_op(cur(p), ")")) {
            n = new_node(p, E_TUPLE);
            if (!n) return nomem();
            advance(p);
        } else {
            rc = parse_tuple(p, true, &n);
            if (!rc) rc = expect_op(p, ")");
        }
    } else if (tok_op(t, "[") || tok_op(t, "{")) {
        bool dict = tok_op(t, "{");
        n = new_node(p, dict ? E_DICT : E_LIST);
        if (!n) return nomem();
        advance(p);
        nvec keys = {0}, vals = {0};
        const char *close = dict ? "}" : "]";
        while (!rc && !tok_op(cur(p), close)) {
            jnode *k = NULL, *v = NULL;
            rc = parse_expr(p, true, &k);
            if (!rc) rc = nvec_push(p, &keys, k, (jname){0});
            if (!rc && dict) rc = expect_op(p, ":");
            if (!rc && dict) rc = parse_expr(p, true, &v);
            if (!rc && dict) rc = nvec_push(p, &vals, v, (jname){0});
            if (!rc && !tok_op(cur(p), close)) rc = expect_op(p, ",");
        }
        if (!rc) advance(p);
        n->args = nvec_nodes(&keys);
        n->kwvals = nvec_nodes(&vals);
    } else {
        return unexpected(p, "an expression");
    }
    *out = n;
    return rc;
}

static int parse_subscript(parser *p, jnode *obj, jnode **out) {
    advance(p); /* [ */
    jnode *parts[3] = {NULL, NULL, NULL};
    int rc = TS_OK;
    bool slice = false;
    for (int k = 0; k < 3 && !rc; k++) {
        if (!tok_op(cur(p), ":") && !tok_op(cur(p), "]")) rc = parse_expr(p, true, &parts[k]);
        if (rc || !tok_op(cur(p), ":") || k == 2) break;
        slice = true;
        advance(p);
    }
    if (!rc) rc = expect_op(p, "]");
    if (rc) return rc;
    if (!slice && !parts[0]) return fail(p, "empty subscript");
    jnode *n = new_node(p, slice ? E_SLICE : E_ITEM);
    if (!n) return nomem();
    n->a = obj;
    if (slice) {
        jnode **v = ja_alloc(p->a, 3 * sizeof *v);
        if (!v) return nomem();
        memcpy(v, parts, sizeof parts);
        n->args = (jnodes){v, 3};
    } else {
        n->b = parts[0];
    }
    *out = n;
    return TS_OK;
}

static int parse_postfix(parser *p, jnode **node) {
    for (;;) {
        const jtoken *t = cur(p);
        int rc = TS_OK;
        if (tok_op(t, ".")) {
            advance(p);
            const jtoken *name = cur(p);
            if (name->kind == TK_INT) {
                jnode *n = new_node(p, E_ITEM), *k = new_node(p, E_LIT);
                if (!n || !k) return nomem();
                k->lit = jv_int(name->i);
                n->a = *node;
                n->b = k;
                *node = n;
            } else if (name->kind == TK_NAME) {
                jnode *n = new_node(p, E_ATTR);
                if (!n) return nomem();
                n->a = *node;
                n->name = (jname){name->p, name->n};
                *node = n;
            } else {
                return unexpected(p, "an attribute name after '.'");
            }
            advance(p);
        } else if (tok_op(t, "[")) {
            rc = parse_subscript(p, *node, node);
        } else if (tok_op(t, "(")) {
            rc = parse_call(p, node);
        } else {
            return TS_OK;
        }
        if (rc) return rc;
    }
}

static int parse_filter_expr(parser *p, jnode **node) {
    for (;;) {
        const jtoken *t = cur(p);
        int rc = TS_OK;
        if (tok_op(t, "|")) {
            advance(p);
            if (cur(p)->kind != TK_NAME) return unexpected(p, "a filter name after '|'");
            jnode *n = new_node(p, E_FILTER);
            if (!n) return nomem();
            n->a = *node;
            n->name = (jname){cur(p)->p, cur(p)->n};
            if (!jx_filter_known(n->name.p, n->name.n))
                return fail(p, "unknown filter '%.*s'", (int)(n->name.n > 40 ? 40 : n->name.n), n->name.p);
            advance(p);
            if (tok_op(cur(p), "(")) rc = set_call(p, n);
            *node = n;
        } else if (tok_name(t, "is")) {
            advance(p);
            jnode *n = new_node(p, E_TEST);
            if (!n) return nomem();
            if (tok_name(cur(p), "not")) {
                n->op = 1;
                advance(p);
            }
            if (cur(p)->kind != TK_NAME) return unexpected(p, "a test name after 'is'");
            n->a = *node;
            n->name = (jname){cur(p)->p, cur(p)->n};
            if (!jx_test_known(n->name.p, n->name.n))
                return fail(p, "unknown test '%.*s'", (int)(n->name.n > 40 ? 40 : n->name.n), n->name.p);
            advance(p);
            const jtoken *a = cur(p);
            if (tok_op(a, "(")) {
                rc = set_call(p, n);
            } else if ((a->kind == TK_NAME || a->kind == TK_STRING || a->kind == TK_INT ||
                        a->kind == TK_FLOAT || tok_op(a, "[") || tok_op(a, "{")) &&
                       !tok_name(a, "else") && !tok_name(a, "or") && !tok_name(a, "and")) {
                if (tok_name(a, "is")) return fail(p, "tests cannot be chained with 'is'");
                jnode *arg = NULL;
                rc = parse_primary(p, &arg);
                if (!rc) rc = parse_postfix(p, &arg);
                jnode **v = ja_alloc(p->a, sizeof *v);
                if (!v) return nomem();
                v[0] = arg;
                n->args = (jnodes){v, 1};
            }
            *node = n;
        } else if (tok_op(t, "(")) {
            rc = parse_call(p, node);
        } else {
            return TS_OK;
        }
        if (rc) return rc;
    }
}

static int parse_unary(parser *p, bool with_filter, jnode **out) {
    if (++p->depth > MAX_EXPR_DEPTH) return fail(p, "expression nested too deep (more than %d levels)", MAX_EXPR_DEPTH);
    int rc;
    if (tok_op(cur(p), "-") || tok_op(cur(p), "+")) {
        jnode *n = new_node(p, E_UNARY);
        if (!n) return nomem();
        n->op = *cur(p)->p;
        advance(p);
        rc = parse_unary(p, false, &n->a);
        *out = n;
    } else {
        rc = parse_primary(p, out);
    }
    if (!rc) rc = parse_postfix(p, out);
    if (!rc && with_filter) rc = parse_filter_expr(p, out);
    p->depth--;
    return rc;
}

static int binary(parser *p, int op, jnode *a, jnode *b, jnode **out) {
    jnode *n = new_node(p, E_BIN);
    if (!n) return nomem();
    n->op = op;
    n->a = a;
    n->b = b;
    *out = n;
    return TS_OK;
}

static int parse_pow(parser *p, jnode **out) {
    int rc = parse_unary(p, true, out);
    while (!rc && tok_op(cur(p), "**")) {
        advance(p);
        jnode *b = NULL;
        rc = parse_unary(p, true, &b);
        if (!rc) rc = binary(p, OP_POW, *out, b, out);
    }
    return rc;
}

static int parse_math2(parser *p, jnode **out) {
    int rc = parse_pow(p, out);
    for (;;) {
        const jtoken *t = cur(p);
        int op = tok_op(t, "*") ? OP_MUL : tok_op(t, "/") ? OP_DIV : tok_op(t, "//") ? OP_FLOORDIV
               : tok_op(t, "%") ? OP_MOD : 0;
        if (rc || !op) return rc;
        advance(p);
        jnode *b = NULL;
        rc = parse_pow(p, &b);
        if (!rc) rc = binary(p, op, *out, b, out);
    }
}

static int parse_concat(parser *p, jnode **out) {
    int rc = parse_math2(p, out);
    while (!rc && tok_op(cur(p), "~")) {
        advance(p);
        jnode *b = NULL;
        rc = parse_math2(p, &b);
        if (!rc) rc = binary(p, OP_CONCAT, *out, b, out);
    }
    return rc;
}

static int parse_math1(parser *p, jnode **out) {
    int rc = parse_concat(p, out);
    for (;;) {
        int op = tok_op(cur(p), "+") ? OP_ADD : tok_op(cur(p), "-") ? OP_SUB : 0;
        if (rc || !op) return rc;
        advance(p);
        jnode *b = NULL;
        rc = parse_concat(p, &b);
        if (!rc) rc = binary(p, op, *out, b, out);
    }
}

static int parse_compare(parser *p, jnode **out) {
    jnode *first = NULL;
    int rc = parse_math1(p, &first);
    nvec operands = {0};
    int ops[64];
    size_t n_ops = 0;
    if (!rc) rc = nvec_push(p, &operands, first, (jname){0});
    for (;;) {
        const jtoken *t = cur(p);
        int op = tok_op(t, "==") ? OP_EQ : tok_op(t, "!=") ? OP_NE : tok_op(t, "<") ? OP_LT
               : tok_op(t, "<=") ? OP_LE : tok_op(t, ">") ? OP_GT : tok_op(t, ">=") ? OP_GE
               : tok_name(t, "in") ? OP_IN : 0;
        if (!op && tok_name(t, "not") && tok_name(ahead(p, 1), "in")) {
            op = OP_NOTIN;
            advance(p);
        }
        if (rc || !op) break;
        if (n_ops == sizeof ops / sizeof *ops) return fail(p, "more than 64 chained comparisons");
        advance(p);
        jnode *b = NULL;
        rc = parse_math1(p, &b);
        if (!rc) rc = nvec_push(p, &operands, b, (jname){0});
        ops[n_ops++] = op;
    }
    if (rc || n_ops == 0) {
        *out = first;
        return rc;
    }
    jnode *n = new_node(p, E_COMPARE);
    int *o = ja_alloc(p->a, n_ops * sizeof *o);
    if (!n || !o) return nomem();
    memcpy(o, ops, n_ops * sizeof *o);
    n->ops = o;
    n->args = nvec_nodes(&operands);
    *out = n;
    return TS_OK;
}

static int parse_not(parser *p, jnode **out) {
    if (tok_name(cur(p), "not")) {
        if (++p->depth > MAX_EXPR_DEPTH) return fail(p, "expression nested too deep (more than %d levels)", MAX_EXPR_DEPTH);
        jnode *n = new_node(p, E_UNARY);
        if (!n) return nomem();
        n->op = 'n';
        advance(p);
        int rc = parse_not(p, &n->a);
        *out = n;
        p->depth--;
        return rc;
    }
    return parse_compare(p, out);
}

static int logical(parser *p, jnode_kind kind, const char *word, int (*operand)(parser *, jnode **),
                   jnode **out) {
    int rc = operand(p, out);
    while (!rc && tok_name(cur(p), word)) {
        advance(p);
        jnode *n = new_node(p, kind);
        if (!n) return nomem();
        n->a = *out;
        rc = operand(p, &n->b);
        *out = n;
    }
    return rc;
}

static int parse_and(parser *p, jnode **out) { return logical(p, E_AND, "and", parse_not, out); }
static int parse_or(parser *p, jnode **out) { return logical(p, E_OR, "or", parse_and, out); }

static int parse_expr(parser *p, bool condexpr, jnode **out) {
    if (++p->depth > MAX_EXPR_DEPTH) return fail(p, "expression nested too deep (more than %d levels)", MAX_EXPR_DEPTH);
    int rc = parse_or(p, out);
    while (!rc && condexpr && tok_name(cur(p), "if")) {
        advance(p);
        jnode *n = new_node(p, E_COND);
        if (!n) return nomem();
        n->a = *out;
        rc = parse_or(p, &n->b);
        if (!rc && tok_name(cur(p), "else")) {
            advance(p);
            rc = parse_expr(p, true, &n->c);
        }
        *out = n;
    }
    p->depth--;
    return rc;
}

static bool tuple_end(const jtoken *t) {
    return t->kind == TK_VAR_END || t->kind == TK_BLOCK_END || tok_op(t, ")") ||
           tok_name(t, "if") || tok_name(t, "recursive");
}

/* An expression, or several separated by commas: a tuple. */
static int parse_tuple(parser *p, bool condexpr, jnode **out) {
    jnode *first = NULL;
    int rc = parse_expr(p, condexpr, &first);
    if (rc || !tok_op(cur(p), ",")) {
        *out = first;
        return rc;
    }
    nvec items = {0};
    rc = nvec_push(p, &items, first, (jname){0});
    while (!rc && tok_op(cur(p), ",")) {
        advance(p);
        if (tuple_end(cur(p))) break;
        jnode *v = NULL;
        rc = parse_expr(p, condexpr, &v);
        if (!rc) rc = nvec_push(p, &items, v, (jname){0});
    }
    jnode *n = new_node(p, E_TUPLE);
    if (!n) return nomem();
    n->args = nvec_nodes(&items);
    *out = n;
    return rc;
}

/* ---- statements ---- */

static int parse_body(parser *p, const char *const *ends, jnodes *body, const char *opened,
                      int open_line);

static int expect_block_end(parser *p) {
    if (cur(p)->kind != TK_BLOCK_END) return unexpected(p, "end of '{% ... %}'");
    advance(p);
    return TS_OK;
}

/* Consumes `{% name %}` (the block start was seen by parse_body and not consumed). */
static int end_tag(parser *p) {
    advance(p); /* the name */
    return expect_block_end(p);
}

/* Names for `for` and `set`: a, or a, b, or (a, b). */
static int parse_targets(parser *p, jnode *n) {
    bool paren = tok_op(cur(p), "(");
    if (paren) advance(p);
    jname names[16];
    size_t k = 0;
    for (;;) {
        if (cur(p)->kind != TK_NAME) return unexpected(p, "a variable name");
        if (k == 16) return fail(p, "more than 16 names to unpack");
        names[k++] = (jname){cur(p)->p, cur(p)->n};
        advance(p);
        if (!tok_op(cur(p), ",")) break;
        advance(p);
        if (!paren && (tok_name(cur(p), "in") || tok_op(cur(p), "="))) break;
        if (paren && tok_op(cur(p), ")")) break;
    }
    if (paren) {
        int rc = expect_op(p, ")");
        if (rc) return rc;
    }
    n->targets = ja_alloc(p->a, k * sizeof *n->targets);
    if (!n->targets) return nomem();
    memcpy(n->targets, names, k * sizeof *names);
    n->n_targets = k;
    return TS_OK;
}

static int parse_if(parser *p, jnode *n, int open_line) {
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    n->kind = N_IF;
    int rc = parse_expr(p, false, &n->a);
    if (!rc) rc = expect_block_end(p);
    if (!rc) rc = parse_body(p, ends, &n->body, "if", open_line);
    if (rc) return rc;
    if (tok_name(cur(p), "elif")) {
        advance(p);
        jnode *e = new_node(p, N_IF);
        jnode **v = ja_alloc(p->a, sizeof *v);
        if (!e || !v) return nomem();
        v[0] = e;
        n->orelse = (jnodes){v, 1};
        return parse_if(p, e, open_line);
    }
    if (tok_name(cur(p), "else")) {
        static const char *const endif[] = {"endif", NULL};
        rc = end_tag(p);
        if (!rc) rc = parse_body(p, endif, &n->orelse, "if", open_line);
        if (rc) return rc;
    }
    return end_tag(p);
}

static int parse_for(parser *p, jnode *n, int open_line) {
    static const char *const ends[] = {"else", "endfor", NULL};
    static const char *const endfor[] = {"endfor", NULL};
    n->kind = N_FOR;
    int rc = parse_targets(p, n);
    if (!rc && !tok_name(cur(p), "in")) rc = unexpected(p, "'in'");
    if (rc) return rc;
    advance(p);
    rc = parse_tuple(p, false, &n->a);
    if (!rc && tok_name(cur(p), "if")) {
        advance(p);
        rc = parse_expr(p, true, &n->b);
    }
    if (!rc && tok_name(cur(p), "recursive")) return fail(p, "recursive loops are not supported");
    if (!rc) rc = expect_block_end(p);
    p->loop_depth++;
    if (!rc) rc = parse_body(p, ends, &n->body, "for", open_line);
    p->loop_depth--;
    if (!rc && tok_name(cur(p), "else")) {
        rc = end_tag(p);
        if (!rc) rc = parse_body(p, endfor, &n->orelse, "for", open_line);
    }
    return rc ? rc : end_tag(p);
}

static int parse_set(parser *p, jnode *n, int open_line) {
    static const char *const endset[] = {"endset", NULL};
    n->kind = N_SET;
    int rc;
    if (cur(p)->kind == TK_NAME && tok_op(ahead(p, 1), ".")) {
        jnode *ns = new_node(p, E_NAME);
        if (!ns) return nomem();
        ns->name = (jname){cur(p)->p, cur(p)->n};
        advance(p);
        advance(p);
        if (cur(p)->kind != TK_NAME) return unexpected(p, "an attribute name");
        ns->kind = E_ATTR;
        jnode *base = new_node(p, E_NAME);
        if (!base) return nomem();
        base->name = ns->name;
        ns->a = base;
        ns->name = (jname){cur(p)->p, cur(p)->n};
        advance(p);
        n->b = ns;
    } else {
        rc = parse_targets(p, n);
        if (rc) return rc;
    }
    if (tok_op(cur(p), "=")) {
        advance(p);
        rc = parse_tuple(p, true, &n->a);
        return rc ? rc : expect_block_end(p);
    }
    if (n->b || n->n_targets != 1) return unexpected(p, "'='");
    if (tok_op(cur(p), "|")) return fail(p, "filters on a set block are not supported");
    n->kind = N_SET_BLOCK;
    rc = expect_block_end(p);
    if (!rc) rc = parse_body(p, endset, &n->body, "set", open_line);
    return rc ? rc : end_tag(p);
}

static int parse_macro(parser *p, jnode *n, int open_line) {
    static const char *const endmacro[] = {"endmacro", NULL};
    n->kind = N_MACRO;
    if (cur(p)->kind != TK_NAME) return unexpected(p, "a macro name");
    n->name = (jname){cur(p)->p, cur(p)->n};
    advance(p);
    int rc = expect_op(p, "(");
    nvec params = {0};
    while (!rc && !tok_op(cur(p), ")")) {
        if (cur(p)->kind != TK_NAME) return unexpected(p, "a parameter name");
        jname name = {cur(p)->p, cur(p)->n};
        advance(p);
        jnode *def = NULL;
        if (tok_op(cur(p), "=")) {
            advance(p);
            rc = parse_expr(p, true, &def);
        } else if (params.n && params.v[params.n - 1]) {
            return fail(p, "a macro parameter without a default follows one with a default");
        }
        if (!rc) rc = nvec_push(p, &params, def, name);
        if (!rc && !tok_op(cur(p), ")")) rc = expect_op(p, ",");
    }
    if (rc) return rc;
    advance(p);
    n->targets = params.names;
    n->n_targets = params.n;
    n->kwvals = nvec_nodes(&params);
    rc = expect_block_end(p);
    int loops = p->loop_depth;
    p->loop_depth = 0;
    if (!rc) rc = parse_body(p, endmacro, &n->body, "macro", open_line);
    p->loop_depth = loops;
    return rc ? rc : end_tag(p);
}

static const char *const UNSUPPORTED_TAGS[] = {"extends", "block", "include", "import", "from",
                                               "call", "filter", "with", "autoescape", "trans",
                                               "do", "print", NULL};

static int parse_statement(parser *p, jnode **out) {
    int open_line = cur(p)->line;
    advance(p); /* {% */
    const jtoken *t = cur(p);
    if (t->kind != TK_NAME) return unexpected(p, "a tag name");
    jnode *n = new_node(p, N_BLOCK);
    if (!n) return nomem();
    *out = n;
    if (tok_name(t, "if")) return advance(p), parse_if(p, n, open_line);
    if (tok_name(t, "for")) return advance(p), parse_for(p, n, open_line);
    if (tok_name(t, "set")) return advance(p), parse_set(p, n, open_line);
    if (tok_name(t, "macro")) return advance(p), parse_macro(p, n, open_line);
    if (tok_name(t, "break") || tok_name(t, "continue")) {
        if (!p->loop_depth) return fail(p, "'%.*s' outside a loop", (int)t->n, t->p);
        n->kind = tok_name(t, "break") ? N_BREAK : N_CONTINUE;
        advance(p);
        return expect_block_end(p);
    }
    if (tok_name(t, "generation")) {
        static const char *const end[] = {"endgeneration", NULL};
        advance(p);
        int rc = expect_block_end(p);
        if (!rc) rc = parse_body(p, end, &n->body, "generation", open_line);
        return rc ? rc : end_tag(p);
    }
    for (size_t i = 0; UNSUPPORTED_TAGS[i]; i++)
        if (tok_name(t, UNSUPPORTED_TAGS[i]))
            return fail(p, "'{%% %s %%}' is not supported", UNSUPPORTED_TAGS[i]);
    if (t->n > 3 && !memcmp(t->p, "end", 3))
        return fail(p, "unexpected '{%% %.*s %%}' (nothing to close)", (int)(t->n > 40 ? 40 : t->n), t->p);
    return fail(p, "unknown tag '%.*s'", (int)(t->n > 40 ? 40 : t->n), t->p);
}

/* Statements up to `{% E %}` for E in ends (that tag left unconsumed, cur() at its name), or to
 * the end of the template when ends is NULL. */
static int parse_body(parser *p, const char *const *ends, jnodes *body, const char *opened,
                      int open_line) {
    if (++p->tag_depth > MAX_TAG_DEPTH) return fail(p, "tags nested too deep (more than %d)", MAX_TAG_DEPTH);
    nvec v = {0};
    int rc = TS_OK;
    for (;;) {
        const jtoken *t = cur(p);
        jnode *n = NULL;
        if (t->kind == TK_EOF) {
            if (ends) {
                size_t last = 0;
                while (ends[last + 1])
                    last++;
                rc = fail(p, "unexpected end of template: '{%% %s %%}' of line %d is not closed "
                             "(expected '{%% %s %%}')",
                          opened, open_line, ends[last]);
            }
            break;
        }
        if (t->kind == TK_TEXT) {
            n = new_node(p, N_TEXT);
            if (!n) return nomem();
            n->lit = jv_str(t->p, t->n, NULL);
            advance(p);
        } else if (t->kind == TK_VAR_BEGIN) {
            n = new_node(p, N_OUTPUT);
            if (!n) return nomem();
            advance(p);
            rc = parse_tuple(p, true, &n->a);
            if (!rc && cur(p)->kind != TK_VAR_END) rc = unexpected(p, "end of '{{ ... }}'");
            if (!rc) advance(p);
        } else if (t->kind == TK_BLOCK_BEGIN) {
            const jtoken *name = ahead(p, 1);
            bool stop = false;
            for (size_t i = 0; ends && ends[i] && !stop; i++)
                stop = tok_name(name, ends[i]);
            if (stop) {
                advance(p);
                break;
            }
            rc = parse_statement(p, &n);
        } else {
            rc = unexpected(p, "text or a tag");
        }
        if (!rc) rc = nvec_push(p, &v, n, (jname){0});
        if (rc) break;
    }
    *body = nvec_nodes(&v);
    p->tag_depth--;
    return rc;
}

int ts_jinja_parse_tokens(jarena *a, const jtokens *toks, jnodes *body) {
    parser p = {a, toks, 0, 0, 0, 0};
    return parse_body(&p, NULL, body, NULL, 0);
}
