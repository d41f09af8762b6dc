/*
 * pretok.c — hand-written pre-tokenizer regexes (see pretok.h).
 *
 * The text is first decoded into characters (code point, class, byte offset). Each pass then
 * walks the characters of one word of the previous pass (the whole text for the first pass)
 * and, at each position, applies its regex's alternatives in order. Reading outside the word
 * yields class 0 and code point NONE, which no alternative accepts; that is how the look-ahead
 * (?!\S) sees the end of the word. Each step consumes at least one character, so a pass is
 * linear in the text length, and so is the chain (at most four passes).
 */
#include "tokenizer/pretok.h"

#include "common/error.h"
#include "tokenizer/grow.h"
#include "tokenizer/unicode.h"

#include <stdbool.h>
#include <stdlib.h>

#define NONE 0xFFFFFFFFu

typedef struct scan {
    ts_pretok *p;
    size_t lo, hi;   /* the word being split, in characters */
    size_t prev_end; /* end (in characters) of the last word emitted */
    int error;
} scan;

static unsigned cp_at(const scan *s, size_t i) {
    return i >= s->lo && i < s->hi ? s->p->cps[i] : NONE;
}
static unsigned cls_at(const scan *s, size_t i) {
    return i >= s->lo && i < s->hi ? s->p->cls[i] : 0;
}
static bool is_letter(unsigned cls) {
    return (cls & TS_UC_CATEGORY_MASK) == TS_UC_LETTER;
}
static bool is_number(unsigned cls) {
    return (cls & TS_UC_CATEGORY_MASK) == TS_UC_NUMBER;
}
static bool is_space(unsigned cls) {
    return (cls & TS_UC_WHITESPACE) != 0;
}
/* [^\s\p{L}\p{N}]: any character that is neither (and is a character at all). */
static bool is_other(unsigned cls) {
    return cls != 0 && !is_space(cls) && !is_letter(cls) && !is_number(cls);
}
static bool is_newline(unsigned cp) {
    return cp == '\r' || cp == '\n';
}
static unsigned ascii_lower(unsigned cp) {
    return cp >= 'A' && cp <= 'Z' ? cp + 32 : cp;
}

/* Ends the current word at character `end` (nothing if it would be empty): appended to the
 * pass's output, p->ends (in characters until the last pass is done). */
static void emit(scan *s, size_t end) {
    if (end <= s->prev_end) return;
    ts_pretok *p = s->p;
    if (ts_grow(&p->ends, &p->ends_cap, p->n_ends + 1, sizeof *p->ends)) {
        s->error = TS_E_NOMEM;
        s->prev_end = end;
        return;
    }
    p->ends[p->n_ends++] = end;
    s->prev_end = end;
}

/* 's|'t|'re|'ve|'m|'ll|'d at pos (case-insensitive if asked): the match length, or 0. */
static size_t contraction(const scan *s, size_t pos, bool fold_case) {
    if (cp_at(s, pos) != '\'' || pos + 1 >= s->hi) return 0;
    unsigned a = cp_at(s, pos + 1), b = pos + 2 < s->hi ? cp_at(s, pos + 2) : NONE;
    if (fold_case) {
        a = ascii_lower(a); /* no non-ASCII letter lowercases to one of these */
        b = ascii_lower(b);
    }
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

/* \s+(?!\S)|\s+ at pos, with the number of white-space characters there: where it ends. A run
 * followed by a non-space gives back its last character (it will lead the next word). */
static size_t trailing_space(const scan *s, size_t pos, size_t n_space) {
    if (n_space > 1 && pos + n_space < s->hi) return pos + n_space - 1;
    if (n_space > 0) return pos + n_space;
    return pos + 1; /* nothing matched: the character alone */
}

static void split_gpt2(scan *s) {
    size_t pos = s->lo;
    while (pos < s->hi) {
        size_t len = contraction(s, pos, false);
        if (len) {
            emit(s, pos += len);
            continue;
        }
        unsigned cp = cp_at(s, pos);
        unsigned cls = cp == ' ' ? cls_at(s, pos + 1) : cls_at(s, pos);
        bool (*run)(unsigned) = is_letter(cls)   ? is_letter
                                : is_number(cls) ? is_number
                                : is_other(cls)  ? is_other
                                                 : NULL;
        if (run) { /*  ?\p{L}+ |  ?\p{N}+ |  ?[^\s\p{L}\p{N}]+ */
            pos += cp == ' ';
            while (run(cls_at(s, pos)))
                pos++;
            emit(s, pos);
            continue;
        }
        size_t n_space = 0;
        while (is_space(cls_at(s, pos + n_space)))
            n_space++;
        emit(s, pos = trailing_space(s, pos, n_space));
    }
}

/* LLAMA3 and QWEN2; max_digits is 3 or 1. */
static void split_llama3(scan *s, size_t max_digits) {
    size_t pos = s->lo;
    while (pos < s->hi) {
        size_t len = contraction(s, pos, true);
        if (len) {
            emit(s, pos += len);
            continue;
        }
        unsigned cp = cp_at(s, pos), cls = cls_at(s, pos);
        /* [^\r\n\p{L}\p{N}]?\p{L}+ */
        if (!is_newline(cp) && !is_number(cls) &&
            (is_letter(cls) || is_letter(cls_at(s, pos + 1)))) {
            pos++;
            while (is_letter(cls_at(s, pos)))
                pos++;
            emit(s, pos);
            continue;
        }
        /* \p{N}{1,max_digits} */
        if (is_number(cls)) {
            size_t start = pos;
            while (is_number(cls_at(s, pos))) {
                if (++pos - start >= max_digits) {
                    emit(s, pos);
                    start = pos;
                }
            }
            emit(s, pos);
            continue;
        }
        /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
        unsigned cls2 = cp == ' ' ? cls_at(s, pos + 1) : cls;
        if (is_other(cls2) || (cp == ' ' && cls2 == 0)) {
            /* A lone space at the very end also lands here (and ends up a word by itself, as
             * \s+ would make it). */
            pos += cp == ' ';
            while (is_other(cls_at(s, pos)))
                pos++;
            while (is_newline(cp_at(s, pos)))
                pos++;
            emit(s, pos);
            continue;
        }
        /* \s*[\r\n]+ : the longest white-space run that ends in a newline */
        size_t n_space = 0, newline_end = 0;
        while (is_space(cls_at(s, pos + n_space))) {
            if (is_newline(cp_at(s, pos + n_space))) newline_end = pos + n_space + 1;
            n_space++;
        }
        if (newline_end) {
            emit(s, pos = newline_end);
            continue;
        }
        emit(s, pos = trailing_space(s, pos, n_space));
    }
}

/* ---- passes that isolate what one regex matches, keeping the stretches between ---- */

/* \p{N} */
static size_t one_number(const scan *s, size_t pos) {
    return is_number(cls_at(s, pos));
}

/* \p{N}+ */
static size_t number_run(const scan *s, size_t pos) {
    size_t end = pos;
    while (is_number(cls_at(s, end)))
        end++;
    return end - pos;
}

/* [\p{P}\$\+<=>\^~\|]+ */
static bool is_default_punct(const scan *s, size_t i) {
    switch (cp_at(s, i)) {
    case '$':
    case '+':
    case '<':
    case '=':
    case '>':
    case '^':
    case '~':
    case '|': return true;
    default: return (cls_at(s, i) & TS_UC_CATEGORY_MASK) == TS_UC_PUNCTUATION;
    }
}
static size_t punct_run(const scan *s, size_t pos) {
    size_t end = pos;
    while (is_default_punct(s, end))
        end++;
    return end - pos;
}

/* [0-9][0-9][0-9] */
static size_t three_digits(const scan *s, size_t pos) {
    for (size_t i = pos; i < pos + 3; i++)
        if (cp_at(s, i) < '0' || cp_at(s, i) > '9') return 0;
    return 3;
}

/* Every leftmost match of `match` (a length, 0 for none) is a word, and so is every stretch
 * between matches. */
static void isolate(scan *s, size_t (*match)(const scan *, size_t)) {
    size_t pos = s->lo;
    while (pos < s->hi) {
        size_t len = match(s, pos);
        if (!len) {
            pos++;
            continue;
        }
        emit(s, pos);
        emit(s, pos += len);
    }
    emit(s, s->hi);
}

typedef enum {
    PASS_END = 0,
    PASS_GPT2,
    PASS_LLAMA3,
    PASS_QWEN2,
    PASS_ONE_NUMBER,
    PASS_NUMBER_RUN,
    PASS_PUNCT_RUN,
    PASS_THREE_DIGITS,
} pass;

/* The passes of each kind, in order (see pretok.h). */
static const pass CHAINS[][5] = {
    [TS_PRETOK_GPT2] = {PASS_GPT2},
    [TS_PRETOK_LLAMA3] = {PASS_LLAMA3},
    [TS_PRETOK_QWEN2] = {PASS_QWEN2},
    [TS_PRETOK_SMOLLM] = {PASS_ONE_NUMBER, PASS_GPT2},
    [TS_PRETOK_DEFAULT] = {PASS_PUNCT_RUN, PASS_GPT2, PASS_NUMBER_RUN, PASS_THREE_DIGITS},
};

static void run_pass(scan *s, pass which) {
    switch (which) {
    case PASS_GPT2: split_gpt2(s); break;
    case PASS_LLAMA3: split_llama3(s, 3); break;
    case PASS_QWEN2: split_llama3(s, 1); break;
    case PASS_ONE_NUMBER: isolate(s, one_number); break;
    case PASS_NUMBER_RUN: isolate(s, number_run); break;
    case PASS_PUNCT_RUN: isolate(s, punct_run); break;
    case PASS_THREE_DIGITS: isolate(s, three_digits); break;
    case PASS_END: break;
    }
}

/* Decodes text into p->cps / cls / offsets; returns the character count or (size_t)-1. */
static size_t decode(ts_pretok *p, const char *text, size_t len) {
    /* One capacity for the three arrays: each grows from the same old capacity. */
    size_t cap = p->cap, cap_cls = p->cap, cap_offsets = p->cap;
    if (ts_grow(&p->cps, &cap, len + 1, sizeof *p->cps) ||
        ts_grow(&p->cls, &cap_cls, len + 1, sizeof *p->cls) ||
        ts_grow(&p->offsets, &cap_offsets, len + 1, sizeof *p->offsets))
        return (size_t)-1;
    p->cap = cap; /* all three reached the same doubling of the old capacity */
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t k = ts_utf8_decode(text + i, len - i, &cp);
        if (cp == TS_UTF8_INVALID || cp == TS_UTF8_INCOMPLETE) cp = 0xFFFD;
        p->cps[n] = cp;
        p->cls[n] = (unsigned char)ts_unicode_class(cp);
        p->offsets[n] = i;
        n++;
        i += k;
    }
    p->offsets[n] = len;
    return n;
}

int ts_pretok_split(ts_pretok *p, ts_pretok_kind kind, const char *text, size_t len) {
    p->n_ends = 0;
    if (len == 0) return TS_OK;
    size_t n = decode(p, text, len);
    if (n == (size_t)-1) return ts_error_set(TS_E_NOMEM, "out of memory splitting %zu bytes", len);
    TS_ASSERT(kind >= TS_PRETOK_GPT2 && kind <= TS_PRETOK_DEFAULT);
    /* The input of the first pass is one word, the whole text. */
    if (ts_grow(&p->ends, &p->ends_cap, 1, sizeof *p->ends))
        return ts_error_set(TS_E_NOMEM, "out of memory splitting %zu bytes", len);
    p->ends[0] = n;
    p->n_ends = 1;
    scan s = {.p = p};
    for (const pass *step = CHAINS[kind]; *step != PASS_END && !s.error; step++) {
        /* The last pass's words become the input; the output starts empty. */
        size_t *in = p->ends, n_in = p->n_ends, in_cap = p->ends_cap;
        p->ends = p->words;
        p->ends_cap = p->words_cap;
        p->n_ends = 0;
        p->words = in;
        p->words_cap = in_cap;
        p->n_words = n_in;
        for (size_t w = 0, start = 0; w < n_in && !s.error; start = in[w++]) {
            s.lo = s.prev_end = start;
            s.hi = in[w];
            run_pass(&s, *step);
        }
    }
    if (s.error) return ts_error_set(s.error, "out of memory splitting %zu bytes", len);
    for (size_t w = 0; w < p->n_ends; w++)
        p->ends[w] = p->offsets[p->ends[w]];
    TS_ASSERT(p->n_ends > 0 && p->ends[p->n_ends - 1] == len);
    return TS_OK;
}

void ts_pretok_free(ts_pretok *p) {
    if (!p) return;
    free(p->cps);
    free(p->cls);
    free(p->offsets);
    free(p->words);
    free(p->ends);
    *p = (ts_pretok){0};
}
