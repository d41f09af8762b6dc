/*
 * merge.h — the merge loop shared by both tokenizers. Internal to tokenizer/.
 *
 * A text is a chain of symbols (byte ranges, initially one character each). Every adjacent pair
 * that the vocabulary can merge is a candidate with a priority; the best candidate (lowest
 * priority value, ties to the leftmost) is merged, its right symbol leaves the chain, and the
 * pairs the merged symbol now forms with its neighbours become candidates. This repeats until no
 * candidate is left. Candidates live in a binary heap and go stale instead of being removed:
 * one whose symbols changed since it was queued is skipped when it comes out. Each merge queues
 * at most two candidates, so a chain of n symbols costs O(n log n).
 *
 * SentencePiece uses priority = -(score of the merged piece); byte-level BPE uses the merge's
 * rank. The ordering is the same as llama.cpp's, so ties resolve the same way.
 */
#ifndef TS_TOKENIZER_MERGE_H
#define TS_TOKENIZER_MERGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ts_symbol {
    size_t start; /* byte offset in the text being merged */
    uint32_t n;   /* bytes; 0 once merged into its left neighbour */
    int32_t prev; /* index of the previous symbol in the chain, -1 at the start */
    int32_t next; /* index of the next symbol, -1 at the end */
    int32_t id;   /* caller's id of the symbol's text (e.g. interned string), -1 if none */
} ts_symbol;

typedef struct ts_candidate {
    double priority;
    int32_t left, right;
    uint32_t left_n, right_n; /* the symbols' lengths when queued; a change makes it stale */
    int32_t merged_id;        /* id of the merged symbol */
} ts_candidate;

/* Whether symbols `left` and `right` (adjacent) can merge; if so sets the priority and the id of
 * the merged symbol. */
typedef bool (*ts_merge_pair_fn)(const void *ctx, const ts_symbol *left, const ts_symbol *right,
                                 double *priority, int32_t *merged_id);

/* Scratch memory of one merge run: zero-initialise, reuse, free with ts_merger_free. */
typedef struct ts_merger {
    ts_symbol *symbols;
    size_t n_symbols, symbols_cap;
    ts_candidate *heap;
    size_t n_heap, heap_cap;
} ts_merger;

/* Starts a new chain (drops the previous one). */
void ts_merger_clear(ts_merger *m);
/* Appends a symbol of n bytes at `start` to the chain. 0, TS_E_NOMEM, or TS_E_INVALID when the
 * chain would exceed INT32_MAX symbols. */
int ts_merger_push(ts_merger *m, size_t start, uint32_t n, int32_t id);
/* Merges until no candidate is left; afterwards walk the chain from symbol 0 via `next`
 * (symbols with n == 0 are gone). 0 or TS_E_NOMEM. */
int ts_merger_run(ts_merger *m, ts_merge_pair_fn pair, const void *ctx);
void ts_merger_free(ts_merger *m);

#endif
