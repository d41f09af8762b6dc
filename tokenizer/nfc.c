/*
 * nfc.c — NFC normalization (see nfc.h).
 *
 * A text is cut into runs that normalize on their own: a run ends before an ASCII character
 * (which never composes with what precedes it) and around an ill-formed subpart (copied as it
 * is: it blocks composition like a starter that composes with nothing). A run is decoded, every
 * character replaced by its full canonical decomposition, each stretch of non-starters sorted
 * stably by combining class (insertion sort for short stretches, merge sort for long ones, so
 * hostile input stays O(n log n)), then composed left to right: a character joins the last starter
 * when no character between them has class 0 or a class at least its own, and the pair has a
 * primary composite.
 */
#include "tokenizer/nfc.h"

#include "common/error.h"
#include "common/utf8.h"
#include "tokenizer/grow.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

enum {
    HANGUL_S = 0xAC00,
    HANGUL_L = 0x1100,
    HANGUL_V = 0x1161,
    HANGUL_T = 0x11A7,
    HANGUL_L_COUNT = 19,
    HANGUL_V_COUNT = 21,
    HANGUL_T_COUNT = 28,
    HANGUL_N = HANGUL_V_COUNT * HANGUL_T_COUNT, /* 588 */
    HANGUL_S_COUNT = HANGUL_L_COUNT * HANGUL_N, /* 11172 */
    MAX_DECOMPOSITION = 4, /* longest full canonical decomposition (nfc_data.c) */
};

static unsigned ccc_of(uint32_t cp) {
    if (cp < 0x300) return 0;
    unsigned lo = 0, hi = ts_nfc_n_ccc;
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;
        if (ts_nfc_ccc[mid].cp == cp) return ts_nfc_ccc[mid].ccc;
        if (ts_nfc_ccc[mid].cp < cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

/* Writes the full canonical decomposition of cp to out; its length. */
static size_t decompose(uint32_t cp, uint32_t out[MAX_DECOMPOSITION]) {
    if (cp >= HANGUL_S && cp < HANGUL_S + HANGUL_S_COUNT) {
        uint32_t s = cp - HANGUL_S;
        out[0] = HANGUL_L + s / HANGUL_N;
        out[1] = HANGUL_V + s % HANGUL_N / HANGUL_T_COUNT;
        if (s % HANGUL_T_COUNT == 0) return 2;
        out[2] = HANGUL_T + s % HANGUL_T_COUNT;
        return 3;
    }
    unsigned lo = 0, hi = cp < 0xC0 ? 0 : ts_nfc_n_decomp;
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;
        const ts_nfc_decomposition *d = &ts_nfc_decomp[mid];
        if (d->cp == cp) {
            memcpy(out, ts_nfc_pool + d->offset, d->length * sizeof *out);
            return d->length;
        }
        if (d->cp < cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    out[0] = cp;
    return 1;
}

/* The primary composite of (a, b), or 0. */
static uint32_t compose(uint32_t a, uint32_t b) {
    if (a >= HANGUL_L && a < HANGUL_L + HANGUL_L_COUNT && b >= HANGUL_V &&
        b < HANGUL_V + HANGUL_V_COUNT)
        return HANGUL_S + ((a - HANGUL_L) * HANGUL_V_COUNT + (b - HANGUL_V)) * HANGUL_T_COUNT;
    if (a >= HANGUL_S && a < HANGUL_S + HANGUL_S_COUNT && (a - HANGUL_S) % HANGUL_T_COUNT == 0 &&
        b > HANGUL_T && b < HANGUL_T + HANGUL_T_COUNT)
        return a + (b - HANGUL_T);
    unsigned lo = 0, hi = ts_nfc_n_comp;
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;
        const ts_nfc_composition *c = &ts_nfc_comp[mid];
        if (c->first == a && c->second == b) return c->composite;
        if (c->first < a || (c->first == a && c->second < b))
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

typedef struct mark {
    uint32_t cp;
    unsigned ccc;
} mark;

typedef struct scratch {
    mark *chars, *tmp;
    size_t cap, tmp_cap;
} scratch;

/* Stable sort of v[0..n) by ccc. */
static int sort_marks(scratch *s, mark *v, size_t n) {
    if (n <= 16) {
        for (size_t i = 1; i < n; i++) {
            mark m = v[i];
            size_t j = i;
            for (; j > 0 && v[j - 1].ccc > m.ccc; j--)
                v[j] = v[j - 1];
            v[j] = m;
        }
        return TS_OK;
    }
    int rc = ts_grow(&s->tmp, &s->tmp_cap, n, sizeof *s->tmp);
    if (rc) return rc;
    for (size_t width = 1; width < n; width *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * width) {
            size_t mid = lo + width < n ? lo + width : n,
                   hi = lo + 2 * width < n ? lo + 2 * width : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi)
                s->tmp[k++] = v[j].ccc < v[i].ccc ? v[j++] : v[i++];
            while (i < mid)
                s->tmp[k++] = v[i++];
            while (j < hi)
                s->tmp[k++] = v[j++];
        }
        memcpy(v, s->tmp, n * sizeof *v);
    }
    return TS_OK;
}

/* Normalizes one well-formed run and appends it. */
static int normalize_run(scratch *s, const char *text, size_t len, ts_buf *out) {
    int rc = TS_OK;
    size_t n = 0;
    for (size_t i = 0; i < len && !rc;) {
        uint32_t cp, parts[MAX_DECOMPOSITION];
        i += ts_utf8_decode(text + i, len - i, &cp);
        size_t k = decompose(cp, parts);
        rc = ts_grow(&s->chars, &s->cap, n + k, sizeof *s->chars);
        if (rc) break;
        for (size_t j = 0; j < k; j++)
            s->chars[n++] = (mark){parts[j], ccc_of(parts[j])};
    }
    for (size_t i = 0; i < n && !rc;) { /* canonical ordering */
        if (s->chars[i].ccc == 0) {
            i++;
            continue;
        }
        size_t end = i;
        while (end < n && s->chars[end].ccc != 0)
            end++;
        rc = sort_marks(s, s->chars + i, end - i);
        i = end;
    }
    if (rc) return rc;
    size_t m = 0;      /* composed characters, in place */
    long starter = -1; /* index of the last starter among them */
    int last_ccc = -1; /* class of the last character after that starter; -1: none */
    for (size_t i = 0; i < n; i++) {
        mark c = s->chars[i];
        bool blocked = last_ccc == 0 || (last_ccc > 0 && (unsigned)last_ccc >= c.ccc);
        if (starter >= 0 && !blocked) {
            uint32_t p = compose(s->chars[starter].cp, c.cp);
            if (p) {
                s->chars[starter].cp = p;
                continue;
            }
        }
        if (c.ccc == 0) {
            starter = (long)m;
            last_ccc = -1;
        } else {
            last_ccc = (int)c.ccc;
        }
        s->chars[m++] = c;
    }
    rc = ts_buf_reserve(out, 4 * m);
    for (size_t i = 0; i < m && !rc; i++) {
        char bytes[4];
        rc = ts_buf_append(out, bytes, ts_utf8_encode(s->chars[i].cp, bytes));
    }
    return rc;
}

int ts_nfc(const char *text, size_t len, ts_buf *out) {
    size_t i = 0;
    while (i < len && (unsigned char)text[i] < 0xCC) /* below U+0300: already NFC */
        i++;
    if (i == len) return ts_buf_append(out, text, len);
    scratch s = {0};
    int rc = TS_OK;
    size_t run = 0; /* start of the run being collected */
    for (i = 0; i <= len && !rc;) {
        uint32_t cp = 0;
        size_t k = i < len ? ts_utf8_decode(text + i, len - i, &cp) : 0;
        bool bad = i < len && (cp == TS_UTF8_INVALID || cp == TS_UTF8_INCOMPLETE);
        if (i == len || bad || cp < 0x80) {
            if (i > run) rc = normalize_run(&s, text + run, i - run, out);
            if (!rc && bad) rc = ts_buf_append(out, text + i, k);
            if (i == len) break;
            run = bad ? i + k : i;
        }
        i += k;
    }
    free(s.chars);
    free(s.tmp);
    return rc ? ts_error_set(TS_E_NOMEM, "out of memory normalizing %zu bytes", len) : TS_OK;
}
