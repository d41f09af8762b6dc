/*
 * test_tokenizer_util.h — comparing a tokenizer's ids with expected ones in tests, printing both
 * on a mismatch (at most 20 mismatches per program, so that a broken tokenizer stays readable).
 */
#ifndef TS_TESTS_TEST_TOKENIZER_UTIL_H
#define TS_TESTS_TEST_TOKENIZER_UTIL_H

#include "common/json.h"
#include "tokenizer/tokenizer.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int tok_mismatches_printed;

/* Encodes text (add_bos, parse_special as given) and compares with want[0..n_want). */
static inline bool tok_ids_match(const ts_tokenizer *t, const char *text, size_t len, bool bos,
                                 bool parse_special, const int32_t *want, size_t n_want,
                                 const char *label) {
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = ts_tokenizer_encode(t, text, len, bos, parse_special, &ids, &n);
    bool ok = rc == 0 && n == n_want && (n == 0 || memcmp(ids, want, n * sizeof *ids) == 0);
    if (!ok && tok_mismatches_printed++ < 20) {
        fprintf(stderr, "  %s: '%.*s' (bos %d, parse_special %d): rc %d\n    got: ", label,
                (int)len, text ? text : "", bos, parse_special, rc);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n    want:");
        for (size_t i = 0; i < n_want; i++)
            fprintf(stderr, " %d", want[i]);
        fprintf(stderr, "\n");
    }
    free(ids);
    return ok;
}

/* The same against a JSON array of ids. */
static inline bool tok_ids_match_json(const ts_tokenizer *t, const char *text, size_t len, bool bos,
                                      bool parse_special, const ts_json *want, const char *label) {
    int32_t *v = malloc((want->length ? want->length : 1) * sizeof *v);
    if (!v) return false;
    for (size_t i = 0; i < want->length; i++)
        v[i] = (int32_t)want->items[i].integer;
    bool ok = tok_ids_match(t, text, len, bos, parse_special, v, want->length, label);
    free(v);
    return ok;
}

#endif
