/*
 * jinja_impl.h — the inside of the Jinja interpreter (chat/jinja.h): arena, values, tokens, the
 * syntax tree, and the functions the lexer, parser, evaluator and built-ins share. Not a public
 * header: only chat/jinja*.c include it.
 *
 * Memory: a template's tokens and tree live in the template's arena; every value made while
 * rendering lives in the render's arena, freed in one go when the render ends. Both arenas have a
 * limit, so a hostile template cannot take the machine's memory.
 *
 * Strings are (bytes, length, taint): `taint` is NULL for trusted text (the template's own) or
 * one byte per byte of the string, non-zero where the byte came from untrusted input (message
 * content, tools). The renderer hands the taint of its output to the caller, which tokenizes
 * special-token text only where it is trusted.
 */
#ifndef TS_CHAT_JINJA_IMPL_H
#define TS_CHAT_JINJA_IMPL_H

#include "chat/jinja.h"
#include "common/buf.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- arena ---- */

typedef struct jblock jblock;
typedef struct jarena {
    jblock *blocks;
    char *cur, *end;
    size_t total, limit;
} jarena;

void *ja_alloc(jarena *a, size_t n); /* zeroed, 16-aligned; NULL past the limit or out of memory */
void ja_free(jarena *a);

/* ---- values ---- */

typedef enum {
    JV_UNDEF, /* s: what is undefined, for the error when it is used */
    JV_NONE,
    JV_BOOL,
    JV_INT,
    JV_FLOAT,
    JV_STR,
    JV_LIST, /* list or tuple */
    JV_DICT,
    JV_NS,     /* namespace(): a dict whose attributes `set` may assign */
    JV_LOOP,   /* the `loop` of a for */
    JV_FUNC,   /* a global function (self NULL) or a bound method of self */
    JV_MACRO,  /* a macro */
} jv_type;

typedef struct jv jv;
typedef struct jlist jlist;
typedef struct jdict jdict;
typedef struct jloop jloop;
typedef struct jnode jnode;

typedef struct jstr {
    const char *p;
    const uint8_t *taint; /* NULL: all trusted */
    size_t n;
} jstr;

struct jv {
    jv_type type;
    union {
        bool b;
        int64_t i;
        double f;
        jstr s;
        jlist *list;
        jdict *dict;
        jloop *loop;
        struct {
            const char *name;
            const jv *self;
        } fn;
        const jnode *macro;
    } u;
};

struct jlist {
    jv *v;
    size_t n;
    bool tuple;
};

struct jdict {
    jv *keys, *vals;
    size_t n, cap;
};

struct jloop {
    const jlist *items;
    size_t index, depth;
};

/* ---- tokens ---- */

typedef enum {
    TK_EOF,
    TK_TEXT,
    TK_VAR_BEGIN,
    TK_VAR_END,
    TK_BLOCK_BEGIN,
    TK_BLOCK_END,
    TK_NAME,
    TK_STRING, /* s: decoded */
    TK_INT,
    TK_FLOAT,
    TK_OP, /* p, n: the operator's text */
} tk_kind;

typedef struct jtoken {
    tk_kind kind;
    int line;
    const char *p; /* source text (TEXT: the text after whitespace control) */
    size_t n;
    jstr s;
    int64_t i;
    double f;
} jtoken;

typedef struct jtokens {
    jtoken *v;
    size_t n, cap;
} jtokens;

/* ---- syntax tree ---- */

typedef enum {
    /* statements */
    N_TEXT,      /* lit */
    N_OUTPUT,    /* a */
    N_IF,        /* a: condition, body, orelse (elif: an N_IF alone in orelse) */
    N_FOR,       /* targets, a: iterable, b: filter or NULL, body, orelse */
    N_SET,       /* targets (one name, or several to unpack) or b.name (b: namespace), a */
    N_SET_BLOCK, /* targets[0], body */
    N_MACRO,     /* name, targets: parameters, kwvals[i]: default of parameter i or NULL */
    N_BREAK,
    N_CONTINUE,
    N_BLOCK, /* body (generation blocks) */
    /* expressions */
    E_LIT,     /* lit */
    E_NAME,    /* name */
    E_ATTR,    /* a.name */
    E_ITEM,    /* a[b] */
    E_SLICE,   /* a[args[0]:args[1]:args[2]], NULL where omitted */
    E_CALL,    /* a(args, kwargs) */
    E_FILTER,  /* a | name(args, kwargs) */
    E_TEST,    /* a is [not] name(args); op = negated */
    E_UNARY,   /* op: '-', '+' or 'n' (not) */
    E_AND,     /* a and b */
    E_OR,      /* a or b */
    E_BIN,     /* a op b */
    E_COMPARE, /* args[0] ops[0] args[1] ops[1] args[2] ... */
    E_COND,    /* a if b else c (c NULL: undefined) */
    E_LIST,    /* args */
    E_TUPLE,   /* args */
    E_DICT,    /* args: keys, kwvals: values */
} jnode_kind;

enum {
    OP_ADD = 1, OP_SUB, OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD, OP_POW, OP_CONCAT,
    OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NOTIN,
};

typedef struct jnodes {
    jnode **v;
    size_t n;
} jnodes;

typedef struct jname {
    const char *p;
    size_t n;
} jname;

struct jnode {
    jnode_kind kind;
    int line;
    int op;
    jname name;
    jv lit;
    jnode *a, *b, *c;
    jnodes args;
    jnodes kwvals;
    jname *kwnames; /* one per kwvals entry (E_CALL, E_FILTER, E_TEST) */
    jnodes body, orelse;
    jname *targets;
    size_t n_targets;
    int *ops;
};

struct ts_jinja {
    jarena arena;
    char *source; /* normalized newlines, owned */
    jnodes body;
};

/* ---- shared functions ---- */

int ts_jinja_lex(jarena *a, const char *src, size_t len, jtokens *out);
int ts_jinja_parse_tokens(jarena *a, const jtokens *toks, jnodes *body);

/* Python's whitespace (str.isspace) at s[i..n): the length of the character if it is one, else 0. */
size_t ts_jinja_space_len(const char *s, size_t n);

bool jname_is(jname a, const char *s);

/* The render's state, shared by the evaluator and the built-ins. */
typedef struct jscope jscope;
typedef struct jctx {
    jarena arena;
    ts_buf *out;
    ts_buf *taint;  /* one byte per byte of out */
    jscope *scope;  /* innermost */
    jscope *global; /* the template's top level */
    size_t steps, depth;
    int line; /* of the node being evaluated, for messages */
} jctx;

/* Records "line N: <message>" and returns code (lexer, parser and evaluator alike). */
int jx_failv(int code, int line, const char *fmt, va_list ap) __attribute__((format(printf, 3, 0)));
int jx_fail(jctx *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void *jx_alloc(jctx *c, size_t n); /* sets the error on failure */

/* values */
jv jv_undef(const char *what);
jv jv_none(void);
jv jv_bool(bool b);
jv jv_int(int64_t i);
jv jv_float(double f);
jv jv_str(const char *p, size_t n, const uint8_t *taint);
jv jv_cstr(const char *s);
int jv_list_new(jctx *c, size_t n, bool tuple, jv *out); /* n items, all JV_NONE */
int jv_dict_new(jctx *c, jv *out, bool ns);
int jv_dict_set(jctx *c, jdict *d, jv key, jv val);
const jv *jv_dict_get(const jdict *d, const char *key, size_t n);
const jv *jv_dict_find(const jdict *d, jv key);
const char *jv_type_name(const jv *v);
bool jv_truthy(const jv *v);
bool jv_equal(const jv *a, const jv *b);
/* -1, 0, 1 into *cmp; TS_E_INVALID (message set) where Python would raise TypeError. */
int jv_compare(jctx *c, const jv *a, const jv *b, const char *op, int *cmp);
bool jv_is_tainted(const jv *v);
/* str(v), repr(v) as Python writes them; json.dumps(v, ...) as the transformers tojson filter. */
int jv_to_str(jctx *c, const jv *v, jv *out);
int jv_repr(jctx *c, const jv *v, ts_buf *out);
int jv_to_json(jctx *c, const jv *v, const char *indent, bool sort_keys, bool ensure_ascii,
               const char *item_sep, const char *key_sep, jv *out);
/* a + b of two strings (taints kept byte for byte). */
int jv_concat(jctx *c, const jv *a, const jv *b, jv *out);
/* A substring of s, taint kept. */
jv jv_substr(const jv *s, size_t at, size_t n);
/* Python's repr of a float into buf (size >= 32). */
void jv_format_float(double f, char *buf, size_t size);
/* Iteration: the items of a list, the characters of a string, the keys of a dict, nothing for
 * undefined. TS_E_INVALID for what is not iterable. */
int jv_iterate(jctx *c, const jv *v, jlist **out);
int jv_length(jctx *c, const jv *v, int64_t *n);

/* built-ins (jinja_builtins.c) */
typedef struct jargs {
    const jv *pos;
    size_t n_pos;
    const jname *kwnames;
    const jv *kw;
    size_t n_kw;
} jargs;
int jx_filter(jctx *c, const char *name, size_t name_len, const jv *v, const jargs *args, jv *out);
int jx_test(jctx *c, const char *name, size_t name_len, const jv *v, const jargs *args, bool *out);
int jx_call_builtin(jctx *c, const jv *fn, const jargs *args, jv *out);
/* obj.name and obj[key] as Jinja's sandbox resolves them. */
int jx_getattr(jctx *c, const jv *obj, const char *name, size_t n, jv *out);
int jx_getitem(jctx *c, const jv *obj, const jv *key, jv *out);
/* Whether a filter or test of that name exists (the parser refuses unknown ones, as Jinja2's
 * compiler does). */
bool jx_filter_known(const char *name, size_t n);
bool jx_test_known(const char *name, size_t n);
/* A global of the render (range, namespace, raise_exception, ...) or NULL. */
bool jx_global_function(const char *name, size_t n, jv *out);
/* Calls a macro (jinja_eval.c). */
int jx_call_macro(jctx *c, const jnode *macro, const jargs *args, jv *out);

#endif
