/*
 * jinja_lex.c — template source to tokens, as Jinja2's lexer with trim_blocks and lstrip_blocks.
 *
 * Text between tags becomes TK_TEXT after whitespace control: `{%-` / `{{-` / `{#-` strip all
 * whitespace before the tag, `-%}` / `-}}` / `-#}` all whitespace after it; trim_blocks removes
 * the newline right after a block or comment tag (not after `+%}`); lstrip_blocks removes the
 * spaces and tabs between the start of a line and a block or comment tag (not before `{%+`).
 * Inside a tag: names, strings (Python escapes), integers, floats and operators; `}}` and `%}`
 * end a tag only where no bracket is open (`{{ {'a': {'b': 1}} }}`). A raw block's text is kept
 * as it is. The source's newlines are normalized to \n and one trailing newline dropped before
 * lexing (ts_jinja_compile), as Jinja2 does.
 */
#include "chat/jinja_impl.h"
#include "common/error.h"
#include "common/utf8.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_BRACKETS = 200 };

typedef struct lexer {
    jarena *a;
    const char *src;
    size_t len, pos;
    int line;
    jtokens *out;
} lexer;

static int lex_fail(const lexer *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int lex_fail(const lexer *l, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = jx_failv(TS_E_INVALID, l->line, fmt, ap);
    va_end(ap);
    return rc;
}

size_t ts_jinja_space_len(const char *s, size_t n) {
    if (n == 0) return 0;
    unsigned char c = (unsigned char)s[0];
    if (c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f)) return 1;
    if (c < 0x80) return 0;
    uint32_t cp = 0;
    size_t k = 0;
    if (c == 0xc2 && n >= 2) {
        cp = (uint32_t)(unsigned char)s[1] & 0x3f;
        cp |= 0x80;
        k = 2;
    } else if ((c == 0xe1 || c == 0xe2 || c == 0xe3) && n >= 3) {
        cp = ((uint32_t)(c & 0x0f) << 12) | ((uint32_t)((unsigned char)s[1] & 0x3f) << 6) |
             ((unsigned char)s[2] & 0x3f);
        k = 3;
    }
    if (k == 0) return 0;
    /* U+0085, U+00A0, U+1680, U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000 */
    bool space = cp == 0x85 || cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) ||
                 cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
    return space ? k : 0;
}

static int push(lexer *l, jtoken t) {
    jtokens *o = l->out;
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 256;
        jtoken *v = ja_alloc(l->a, cap * sizeof *v);
        if (!v) return ts_error_set(TS_E_NOMEM, "template too large (tokens)");
        if (o->n) memcpy(v, o->v, o->n * sizeof *v);
        o->v = v;
        o->cap = cap;
    }
    o->v[o->n++] = t;
    return TS_OK;
}

static void count_lines(lexer *l, size_t from, size_t to) {
    for (size_t i = from; i < to; i++)
        l->line += l->src[i] == '\n';
}

/* Moves pos over whitespace (Python's), counting lines. */
static void skip_space(lexer *l) {
    size_t k;
    while ((k = ts_jinja_space_len(l->src + l->pos, l->len - l->pos)) > 0) {
        l->line += l->src[l->pos] == '\n';
        l->pos += k;
    }
}

static size_t rstrip_end(const char *s, size_t start, size_t end) {
    /* the end of s[start..end) without trailing whitespace: scan forward, remember the last
     * non-space character (multi-byte spaces cannot be found backwards reliably) */
    size_t last = start, i = start;
    while (i < end) {
        size_t k = ts_jinja_space_len(s + i, end - i);
        if (k) {
            i += k;
        } else {
            i++;
            while (i < end && ((unsigned char)s[i] & 0xc0) == 0x80)
                i++;
            last = i;
        }
    }
    return last;
}

static bool all_space(const char *s, size_t start, size_t end) {
    if (start >= end) return false;
    for (size_t i = start; i < end;) {
        size_t k = ts_jinja_space_len(s + i, end - i);
        if (!k) return false;
        i += k;
    }
    return true;
}

/* Emits the text s[start..end) ahead of a tag of kind k ('{', '%', '#') with sign ('-', '+' or
 * 0), after whitespace control. */
static int emit_text(lexer *l, size_t start, size_t end, char k, char sign, bool line_starting) {
    size_t stop = end;
    if (sign == '-') {
        stop = rstrip_end(l->src, start, end);
    } else if (sign != '+' && k != '{') {
        size_t l_pos = start;
        for (size_t i = end; i > start; i--)
            if (l->src[i - 1] == '\n') {
                l_pos = i;
                break;
            }
        if ((l_pos > start || line_starting) && all_space(l->src, l_pos, end)) stop = l_pos;
    }
    int line = l->line;
    count_lines(l, start, end);
    if (stop == start) return TS_OK;
    return push(l, (jtoken){.kind = TK_TEXT, .line = line, .p = l->src + start, .n = stop - start});
}

/* After a tag's end: `-` strips the whitespace that follows, a block or comment end (not `+`)
 * drops one newline. */
static void after_tag(lexer *l, char end_sign, bool block) {
    if (end_sign == '-') {
        skip_space(l);
    } else if (end_sign != '+' && block && l->pos < l->len && l->src[l->pos] == '\n') {
        l->pos++;
        l->line++;
    }
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int put_cp(char *dst, size_t *n, uint32_t cp) {
    if (cp > 0x10ffff) return -1;
    size_t k = ts_utf8_encode(cp, dst + *n);
    *n += k;
    return 0;
}

/* Decodes the string literal body s[0..n) (Python's escapes) into the arena. */
static int decode_string(lexer *l, const char *s, size_t n, jstr *out) {
    char *dst = ja_alloc(l->a, n + 1);
    if (!dst) return ts_error_set(TS_E_NOMEM, "template too large (strings)");
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\' || i + 1 == n) {
            dst[o++] = s[i];
            continue;
        }
        char e = s[++i];
        switch (e) {
        case '\\': dst[o++] = '\\'; break;
        case '\'': dst[o++] = '\''; break;
        case '"': dst[o++] = '"'; break;
        case 'a': dst[o++] = '\a'; break;
        case 'b': dst[o++] = '\b'; break;
        case 'f': dst[o++] = '\f'; break;
        case 'n': dst[o++] = '\n'; break;
        case 'r': dst[o++] = '\r'; break;
        case 't': dst[o++] = '\t'; break;
        case 'v': dst[o++] = '\v'; break;
        case '\n': break;
        case 'x':
        case 'u':
        case 'U': {
            int digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            uint32_t cp = 0;
            for (int d = 0; d < digits; d++) {
                int h = i + 1 + (size_t)d < n ? hexval(s[i + 1 + d]) : -1;
                if (h < 0) return lex_fail(l, "truncated \\%c escape in a string", e);
                cp = cp * 16 + (uint32_t)h;
            }
            i += (size_t)digits;
            /* 4 hex digits may not exceed the room decoded text takes: \uXXXX is 6 bytes, its
             * UTF-8 at most 3; \xXX 4 bytes, at most 2; \UXXXXXXXX 10, at most 4. */
            if (put_cp(dst, &o, cp)) return lex_fail(l, "\\U escape out of range in a string");
            break;
        }
        case 'N': return lex_fail(l, "\\N{...} escapes in strings are not supported");
        default:
            if (e >= '0' && e <= '7') {
                uint32_t cp = (uint32_t)(e - '0');
                for (int d = 0; d < 2 && i + 1 < n && s[i + 1] >= '0' && s[i + 1] <= '7'; d++)
                    cp = cp * 8 + (uint32_t)(s[++i] - '0');
                put_cp(dst, &o, cp);
            } else {
                dst[o++] = '\\';
                dst[o++] = e;
            }
        }
    }
    dst[o] = '\0';
    *out = (jstr){dst, NULL, o};
    return TS_OK;
}

static bool is_name_start(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* Digits with single underscores between them, from *i; false if none. */
static bool scan_digits(const char *s, size_t n, size_t *i) {
    size_t j = *i;
    if (j >= n || !is_digit(s[j])) return false;
    while (j < n && (is_digit(s[j]) || (s[j] == '_' && j + 1 < n && is_digit(s[j + 1]))))
        j++;
    *i = j;
    return true;
}

static int lex_number(lexer *l) {
    const char *s = l->src;
    size_t start = l->pos, i = start;
    scan_digits(s, l->len, &i);
    bool is_float = false;
    size_t j = i;
    if (j + 1 < l->len && s[j] == '.' && is_digit(s[j + 1])) {
        j++;
        scan_digits(s, l->len, &j);
        i = j;
        is_float = true;
    }
    j = i;
    if (j < l->len && (s[j] == 'e' || s[j] == 'E')) {
        j++;
        if (j < l->len && (s[j] == '+' || s[j] == '-')) j++;
        if (scan_digits(s, l->len, &j)) {
            i = j;
            is_float = true;
        }
    }
    char buf[128];
    size_t o = 0;
    for (size_t k = start; k < i && o + 1 < sizeof buf; k++)
        if (s[k] != '_') buf[o++] = s[k];
    buf[o] = '\0';
    if (i - start >= sizeof buf) return lex_fail(l, "number too long (more than 127 characters)");
    jtoken t = {.kind = is_float ? TK_FLOAT : TK_INT, .line = l->line, .p = s + start, .n = i - start};
    if (is_float) {
        t.f = strtod(buf, NULL);
    } else {
        char *end;
        errno = 0;
        long long v = strtoll(buf, &end, 10);
        if (errno) return lex_fail(l, "integer %s does not fit 64 bits (not supported)", buf);
        t.i = v;
    }
    l->pos = i;
    return push(l, t);
}

static const char *const OPERATORS[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/",
                                        "%",  "~",  "<",  ">",  "=",  ".",  ",", ":", "|", "(",
                                        ")",  "[",  "]",  "{",  "}"};

/* The tokens of one tag, up to and including its end. */
static int lex_tag(lexer *l, char k, int open_line) {
    char brackets[MAX_BRACKETS];
    size_t depth = 0;
    const char *s = l->src;
    for (;;) {
        skip_space(l);
        if (l->pos >= l->len) {
            return lex_fail(l, "unterminated tag: '%s' opened on line %d", k == '{' ? "{{" : "{%",
                            open_line);
        }
        size_t rest = l->len - l->pos;
        const char *p = s + l->pos;
        char close = k == '{' ? '}' : '%';
        if (depth == 0) {
            char sign = 0;
            size_t m = 0;
            if (rest >= 3 && (p[0] == '-' || (p[0] == '+' && k == '%')) && p[1] == close &&
                p[2] == '}') {
                sign = p[0];
                m = 3;
            } else if (rest >= 2 && p[0] == close && p[1] == '}') {
                m = 2;
            }
            if (m) {
                int rc = push(l, (jtoken){.kind = k == '{' ? TK_VAR_END : TK_BLOCK_END, .line = l->line});
                l->pos += m;
                after_tag(l, sign, k == '%');
                return rc;
            }
        }
        int rc;
        if (is_name_start(*p)) {
            size_t n = 1;
            while (n < rest && (is_name_start(p[n]) || is_digit(p[n])))
                n++;
            rc = push(l, (jtoken){.kind = TK_NAME, .line = l->line, .p = p, .n = n});
            l->pos += n;
        } else if (is_digit(*p)) {
            rc = lex_number(l);
        } else if (*p == '\'' || *p == '"') {
            size_t n = 1;
            while (n < rest && p[n] != *p)
                n += p[n] == '\\' ? 2 : 1;
            if (n >= rest) return lex_fail(l, "unterminated string literal");
            jtoken t = {.kind = TK_STRING, .line = l->line, .p = p, .n = n + 1};
            rc = decode_string(l, p + 1, n - 1, &t.s);
            if (!rc) rc = push(l, t);
            count_lines(l, l->pos, l->pos + n + 1);
            l->pos += n + 1;
        } else {
            size_t n = 0;
            for (size_t o = 0; o < sizeof OPERATORS / sizeof *OPERATORS && !n; o++) {
                size_t on = strlen(OPERATORS[o]);
                if (on <= rest && !memcmp(p, OPERATORS[o], on)) n = on;
            }
            if (!n) {
                if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
                    return lex_fail(l, "unexpected byte 0x%02x in a tag", (unsigned char)*p);
                return lex_fail(l, "unexpected character '%c' in a tag", *p);
            }
            if (n == 1 && (*p == '(' || *p == '[' || *p == '{')) {
                if (depth == MAX_BRACKETS) return lex_fail(l, "brackets nested too deep (more than %d)", MAX_BRACKETS);
                brackets[depth++] = *p;
            } else if (n == 1 && (*p == ')' || *p == ']' || *p == '}')) {
                char want = *p == ')' ? '(' : *p == ']' ? '[' : '{';
                if (depth == 0 || brackets[depth - 1] != want) {
                    return lex_fail(l, "unexpected '%c'", *p);
                }
                depth--;
            }
            rc = push(l, (jtoken){.kind = TK_OP, .line = l->line, .p = p, .n = n});
            l->pos += n;
        }
        if (rc) return rc;
    }
}

/* `{% raw %}` at pos (just after `{%` and its sign): the length of the tag up to its end, or 0. */
static size_t raw_begin(const lexer *l, size_t pos, char *end_sign) {
    const char *s = l->src;
    size_t i = pos;
    while (i < l->len && ts_jinja_space_len(s + i, l->len - i))
        i += ts_jinja_space_len(s + i, l->len - i);
    if (l->len - i < 3 || memcmp(s + i, "raw", 3)) return 0;
    i += 3;
    while (i < l->len && ts_jinja_space_len(s + i, l->len - i))
        i += ts_jinja_space_len(s + i, l->len - i);
    *end_sign = 0;
    if (i < l->len && s[i] == '-') {
        *end_sign = '-';
        i++;
    }
    if (l->len - i < 2 || s[i] != '%' || s[i + 1] != '}') return 0;
    return i + 2 - pos;
}

/* The raw block's text up to `{% endraw %}`, which it consumes. */
static int lex_raw(lexer *l, int open_line) {
    const char *s = l->src;
    for (size_t q = l->pos; q + 1 < l->len; q++) {
        if (s[q] != '{' || s[q + 1] != '%') continue;
        size_t i = q + 2;
        char sign = 0;
        if (i < l->len && (s[i] == '-' || s[i] == '+')) sign = s[i++];
        while (i < l->len && ts_jinja_space_len(s + i, l->len - i))
            i += ts_jinja_space_len(s + i, l->len - i);
        if (l->len - i < 6 || memcmp(s + i, "endraw", 6)) continue;
        i += 6;
        while (i < l->len && ts_jinja_space_len(s + i, l->len - i))
            i += ts_jinja_space_len(s + i, l->len - i);
        char end_sign = 0;
        if (i < l->len && (s[i] == '-' || s[i] == '+')) end_sign = s[i++];
        if (l->len - i < 2 || s[i] != '%' || s[i + 1] != '}') continue;
        bool line_starting = l->pos == 0 || s[l->pos - 1] == '\n';
        int rc = emit_text(l, l->pos, q, '%', sign, line_starting);
        count_lines(l, q, i + 2);
        l->pos = i + 2;
        after_tag(l, end_sign, true);
        return rc;
    }
    return lex_fail(l, "unterminated raw block: '{%% raw %%}' opened on line %d", open_line);
}

int ts_jinja_lex(jarena *a, const char *src, size_t len, jtokens *out) {
    lexer l = {a, src, len, 0, 1, out};
    const char *s = src;
    while (l.pos < len) {
        bool line_starting = l.pos == 0 || s[l.pos - 1] == '\n';
        size_t q = l.pos;
        while (q + 1 < len && !(s[q] == '{' && (s[q + 1] == '{' || s[q + 1] == '%' || s[q + 1] == '#')))
            q++;
        if (q + 1 >= len) {
            int rc = emit_text(&l, l.pos, len, '{', '+', false);
            if (rc) return rc;
            l.pos = len;
            break;
        }
        char k = s[q + 1];
        char sign = q + 2 < len && (s[q + 2] == '-' || s[q + 2] == '+') ? s[q + 2] : 0;
        int rc = emit_text(&l, l.pos, q, k, sign, line_starting);
        if (rc) return rc;
        int open_line = l.line;
        l.pos = q + 2 + (sign != 0);
        if (k == '#') {
            const char *end = NULL;
            for (size_t i = l.pos; i + 1 < len; i++)
                if (s[i] == '#' && s[i + 1] == '}') {
                    end = s + i;
                    break;
                }
            if (!end) {
                return lex_fail(&l, "unterminated comment: '{#' opened on line %d", open_line);
            }
            size_t e = (size_t)(end - s);
            char end_sign = e > l.pos && (s[e - 1] == '-' || s[e - 1] == '+') ? s[e - 1] : 0;
            count_lines(&l, l.pos, e + 2);
            l.pos = e + 2;
            after_tag(&l, end_sign, true);
            continue;
        }
        char raw_sign = 0;
        size_t raw = k == '%' ? raw_begin(&l, l.pos, &raw_sign) : 0;
        if (raw) {
            count_lines(&l, l.pos, l.pos + raw);
            l.pos += raw;
            if (raw_sign == '-') skip_space(&l);
            rc = lex_raw(&l, open_line);
            if (rc) return rc;
            continue;
        }
        rc = push(&l, (jtoken){.kind = k == '{' ? TK_VAR_BEGIN : TK_BLOCK_BEGIN, .line = open_line});
        if (!rc) rc = lex_tag(&l, k, open_line);
        if (rc) return rc;
    }
    return push(&l, (jtoken){.kind = TK_EOF, .line = l.line});
}
