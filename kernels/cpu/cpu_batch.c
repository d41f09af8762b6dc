/* cpu_batch.c — see cpu_batch.h. */
#include "kernels/cpu/cpu_batch.h"

#include "common/error.h"
#include "kernels/cpu/ref.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Grows *p to hold n elements of size elem (keeping nothing: callers overwrite everything);
 * capacities double, so a batch that grows a little each step rarely reallocates. */
static int grow(void **p, size_t *cap, size_t n, size_t elem) {
    if (n <= *cap) return 0;
    size_t want = *cap ? *cap : 16;
    while (want < n)
        want *= 2;
    void *q = malloc(want * elem);
    if (!q) return ts_error_set(TS_E_NOMEM, "cpu backend: out of memory for a batch of %zu", n);
    free(*p);
    *p = q;
    *cap = want;
    return 0;
}

/* The four per-row arrays live in one allocation starting at b->tokens. */
static int grow_rows(ts_cpu_batch *b, size_t n) {
    size_t cap = b->cap_tokens;
    int rc = grow((void **)&b->tokens, &cap, n, 4 * sizeof(int32_t));
    if (rc) return rc;
    b->cap_tokens = cap;
    b->pos = b->tokens + cap;
    b->row_seq = b->tokens + 2 * cap;
    b->logit_rows = b->tokens + 3 * cap;
    return 0;
}

static int check_layout(const ts_batch *src) {
    if (src->n_tokens < 1 || src->n_seqs < 1 || src->n_seqs > src->n_tokens)
        return ts_error_set(TS_E_INVALID, "batch: %d tokens in %d sequences", src->n_tokens,
                            src->n_seqs);
    if (src->block_size < 1)
        return ts_error_set(TS_E_INVALID, "batch: block size %d", src->block_size);
    int32_t row = 0;
    for (int32_t s = 0; s < src->n_seqs; s++) {
        const ts_batch_seq *q = &src->seqs[s];
        if (q->row0 != row || q->n_rows < 1 || q->n_rows > src->n_tokens - row)
            return ts_error_set(TS_E_INVALID,
                                "batch: sequence %d has rows %d..+%d, expected to start at row %d "
                                "and stay within %d tokens",
                                s, q->row0, q->n_rows, row, src->n_tokens);
        if (q->pos0 < 0 || q->n_blocks < 0 || q->block0 < 0 ||
            q->block0 > src->n_block_ids - q->n_blocks ||
            (int64_t)q->n_blocks * src->block_size < (int64_t)q->pos0 + q->n_rows)
            return ts_error_set(TS_E_INVALID,
                                "batch: sequence %d: positions %d..%d need more than its %d "
                                "blocks at %d (of %d block ids, block size %d)",
                                s, q->pos0, q->pos0 + q->n_rows - 1, q->n_blocks, q->block0,
                                src->n_block_ids, src->block_size);
        row += q->n_rows;
    }
    if (row != src->n_tokens)
        return ts_error_set(TS_E_INVALID, "batch: sequences cover %d of %d tokens", row,
                            src->n_tokens);
    return 0;
}

int ts_cpu_batch_set(ts_cpu_batch *b, const ts_batch *src) {
    b->n_tokens = 0;
    b->n_seqs = 0;
    b->rope_valid = 0;
    int rc = check_layout(src);
    size_t nt = (size_t)src->n_tokens, ns = (size_t)src->n_seqs;
    if (!rc) rc = grow_rows(b, nt);
    if (!rc) rc = grow((void **)&b->seqs, &b->cap_seqs, ns, sizeof(ts_batch_seq));
    if (!rc)
        rc = grow((void **)&b->block_ids, &b->cap_block_ids, (size_t)src->n_block_ids,
                  sizeof(int32_t));
    if (rc) return rc;

    memcpy(b->tokens, src->tokens, nt * sizeof(int32_t));
    memcpy(b->seqs, src->seqs, ns * sizeof(ts_batch_seq));
    if (src->n_block_ids > 0)
        memcpy(b->block_ids, src->block_ids, (size_t)src->n_block_ids * sizeof(int32_t));
    b->n_block_ids = src->n_block_ids;
    b->block_size = src->block_size;
    b->max_ctx = 0;
    b->n_logit_rows = 0;
    for (int32_t s = 0; s < src->n_seqs; s++) {
        const ts_batch_seq *q = &src->seqs[s];
        for (int32_t i = 0; i < q->n_rows; i++) {
            b->pos[q->row0 + i] = q->pos0 + i;
            b->row_seq[q->row0 + i] = s;
        }
        if (q->pos0 + q->n_rows > b->max_ctx) b->max_ctx = q->pos0 + q->n_rows;
        if (q->want_logits) b->logit_rows[b->n_logit_rows++] = q->row0 + q->n_rows - 1;
    }
    b->n_tokens = src->n_tokens;
    b->n_seqs = src->n_seqs;
    return 0;
}

static bool same_angles(const ts_rope *a, const ts_rope *b) {
    return a->n_dims == b->n_dims && a->theta_base == b->theta_base &&
           a->freq_scale == b->freq_scale && a->freq_factors == b->freq_factors;
}

int ts_cpu_batch_rope_table(ts_cpu_batch *b, const ts_rope *rope) {
    if (b->rope_valid && same_angles(&b->rope, rope)) return 0;
    size_t pairs = (size_t)(rope->n_dims / 2);
    size_t n = (size_t)b->n_tokens * pairs;
    int rc = grow((void **)&b->rope_cos, &b->cap_rope, n, 2 * sizeof(float));
    if (rc) return rc;
    b->rope_sin = b->rope_cos + b->cap_rope; /* one allocation: cos, then sin */
    for (int32_t r = 0; r < b->n_tokens; r++)
        ts_ref_rope_angles(b->pos[r], rope, b->rope_cos + (size_t)r * pairs,
                           b->rope_sin + (size_t)r * pairs);
    b->rope_valid = 1;
    b->rope = *rope;
    return 0;
}

void ts_cpu_batch_free(ts_cpu_batch *b) {
    free(b->tokens); /* with pos, row_seq and logit_rows */
    free(b->seqs);
    free(b->block_ids);
    free(b->rope_cos); /* with rope_sin */
    memset(b, 0, sizeof *b);
}
