/* merge.c — priority-queue merging of a symbol chain (see merge.h). */
#include "tokenizer/merge.h"

#include "common/error.h"
#include "tokenizer/grow.h"

#include <stdlib.h>

void ts_merger_clear(ts_merger *m) {
    m->n_symbols = 0;
    m->n_heap = 0;
}

int ts_merger_push(ts_merger *m, size_t start, uint32_t n, int32_t id) {
    if (m->n_symbols >= INT32_MAX)
        return ts_error_set(TS_E_INVALID, "text too long: more than %d characters in one piece",
                            INT32_MAX);
    int rc = ts_grow(&m->symbols, &m->symbols_cap, m->n_symbols + 1, sizeof *m->symbols);
    if (rc) return rc;
    int32_t i = (int32_t)m->n_symbols++;
    m->symbols[i] = (ts_symbol){.start = start, .n = n, .prev = i - 1, .next = -1, .id = id};
    if (i > 0) m->symbols[i - 1].next = i;
    return TS_OK;
}

/* a comes out of the heap before b: better priority, then leftmost. */
static bool before(const ts_candidate *a, const ts_candidate *b) {
    return a->priority < b->priority || (a->priority == b->priority && a->left < b->left);
}

static int heap_push(ts_merger *m, ts_candidate c) {
    int rc = ts_grow(&m->heap, &m->heap_cap, m->n_heap + 1, sizeof *m->heap);
    if (rc) return rc;
    size_t i = m->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(&c, &m->heap[parent])) break;
        m->heap[i] = m->heap[parent];
        i = parent;
    }
    m->heap[i] = c;
    return TS_OK;
}

static ts_candidate heap_pop(ts_merger *m) {
    ts_candidate top = m->heap[0], last = m->heap[--m->n_heap];
    size_t i = 0, n = m->n_heap;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && before(&m->heap[child + 1], &m->heap[child])) child++;
        if (!before(&m->heap[child], &last)) break;
        m->heap[i] = m->heap[child];
        i = child;
    }
    if (n) m->heap[i] = last;
    return top;
}

/* Queues the pair (left, right) if the vocabulary can merge it. */
static int consider(ts_merger *m, int32_t left, int32_t right, ts_merge_pair_fn pair,
                    const void *ctx) {
    if (left < 0 || right < 0) return TS_OK;
    const ts_symbol *l = &m->symbols[left], *r = &m->symbols[right];
    if ((uint64_t)l->n + r->n > UINT32_MAX) return TS_OK;
    ts_candidate c = {.left = left, .right = right, .left_n = l->n, .right_n = r->n};
    if (!pair(ctx, l, r, &c.priority, &c.merged_id)) return TS_OK;
    return heap_push(m, c);
}

int ts_merger_run(ts_merger *m, ts_merge_pair_fn pair, const void *ctx) {
    int rc = TS_OK;
    m->n_heap = 0;
    for (size_t i = 1; i < m->n_symbols && !rc; i++)
        rc = consider(m, (int32_t)i - 1, (int32_t)i, pair, ctx);
    while (m->n_heap > 0 && !rc) {
        ts_candidate c = heap_pop(m);
        ts_symbol *l = &m->symbols[c.left], *r = &m->symbols[c.right];
        /* Lengths only grow (or drop to 0), so equal lengths mean both are unchanged. */
        if (l->n == 0 || r->n == 0 || l->n != c.left_n || r->n != c.right_n) continue;
        l->n += r->n;
        l->id = c.merged_id;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) m->symbols[r->next].prev = c.left;
        rc = consider(m, l->prev, c.left, pair, ctx);
        if (!rc) rc = consider(m, c.left, l->next, pair, ctx);
    }
    return rc;
}

void ts_merger_free(ts_merger *m) {
    if (!m) return;
    free(m->symbols);
    free(m->heap);
    *m = (ts_merger){0};
}
