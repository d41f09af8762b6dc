/*
 * pretok.h — pre-tokenizers of byte-level BPE vocabularies: split text into words before merging.
 * Internal to tokenizer/.
 *
 * A pre-tokenizer is a chain of passes, as in llama.cpp: the first pass splits the whole text,
 * each later pass splits every word of the one before it on its own (a look-ahead never sees
 * past the end of the word it is in). Each pass is one of the regular expressions below,
 * implemented by hand (no regex library) as a left-to-right scan that takes, at each position,
 * what the regex's first matching alternative would take; stretches no alternative matches stay
 * words of their own. They behave like llama.cpp's splitters of the same regexes on every
 * well-formed UTF-8 text (tests/unit/test_tokenizer_pretok.c holds cases checked against a real
 * regex engine). Classes \p{L}, \p{N}, \p{P} and \s come from unicode.h.
 *
 *   GPT2    's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *   LLAMA3  (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *            ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *   QWEN2   as LLAMA3 with \p{N} (one digit per word) instead of \p{N}{1,3}
 *   SMOLLM  \p{N} (each digit a word of its own), then GPT2: the pre-tokenizer of StarCoder's
 *           vocabulary, which SmolLM, Refact, Command-R and others share
 *   DEFAULT [\p{P}\$\+<=>\^~\|]+, then GPT2, then \p{N}+, then [0-9][0-9][0-9]: llama.cpp's
 *           choice for a vocabulary that names no pre-tokenizer (older conversions)
 *
 * Ill-formed UTF-8: each maximal ill-formed subpart counts as one character of class \p{S} (as
 * U+FFFD would), but its bytes are kept, so the words always cover the input exactly. (llama.cpp
 * replaces such bytes with U+FFFD before byte-level encoding, losing them.)
 */
#ifndef TS_TOKENIZER_PRETOK_H
#define TS_TOKENIZER_PRETOK_H

#include <stddef.h>

typedef enum {
    TS_PRETOK_GPT2 = 1,
    TS_PRETOK_LLAMA3 = 2,
    TS_PRETOK_QWEN2 = 3,
    TS_PRETOK_SMOLLM = 4,
    TS_PRETOK_DEFAULT = 5,
} ts_pretok_kind;

/* Reusable scratch memory of a split (zero-initialise; free with ts_pretok_free). Not shared
 * between threads. */
typedef struct ts_pretok {
    unsigned *cps;      /* code point per character */
    unsigned char *cls; /* class per character */
    size_t *offsets;    /* byte offset per character, then the text length */
    size_t cap;         /* characters allocated */
    size_t *words;      /* word ends in characters: one pass's output, the next one's input */
    size_t n_words, words_cap;
    size_t *ends; /* result: byte offset where each word ends, increasing, last == len */
    size_t n_ends;
    size_t ends_cap;
} ts_pretok;

/* Splits text[0..len) into words; the result is p->ends[0..p->n_ends) (no words for len 0).
 * Returns 0 or TS_E_NOMEM. Linear in len. */
int ts_pretok_split(ts_pretok *p, ts_pretok_kind kind, const char *text, size_t len);
void ts_pretok_free(ts_pretok *p);

#endif
