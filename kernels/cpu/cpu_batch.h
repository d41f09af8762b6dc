/*
 * cpu_batch.h — the CPU backend's copy of one step's batch (what set_batch keeps).
 *
 * set_batch copies the layout of ts_batch and derives per-row facts the kernels need: the
 * position and sequence of every row, the rows whose logits are wanted, and the longest context
 * of the step (attention scratch is sized from it). Storage only grows, so once the largest
 * batch has been seen a step allocates nothing.
 *
 * The rope cos/sin table of a step lives here too: rope is called twice per layer (q and k) with
 * the same parameters, so the angles are computed once per step, on first use.
 */
#ifndef TS_KERNELS_CPU_CPU_BATCH_H
#define TS_KERNELS_CPU_CPU_BATCH_H

#include "kernels/kernels.h"

#include <stddef.h>
#include <stdint.h>

typedef struct ts_cpu_batch {
    int32_t n_tokens;
    int32_t n_seqs;
    int32_t block_size;
    int32_t max_ctx;      /* max over rows of pos + 1 */
    int32_t n_logit_rows; /* sequences with want_logits */
    int32_t *tokens;      /* [n_tokens] */
    int32_t *pos;         /* [n_tokens] position of each row */
    int32_t *row_seq;     /* [n_tokens] index of each row's sequence */
    int32_t *logit_rows;  /* [n_logit_rows] the row logit_rows copies, in sequence order */
    ts_batch_seq *seqs;   /* [n_seqs] */
    int32_t *block_ids;   /* all block tables */
    int32_t n_block_ids;

    /* rope table of this step: cos/sin of row r, pair i at [r * rope_pairs + i] */
    int rope_valid;
    ts_rope rope; /* the angles' parameters (the mode does not change them) */
    float *rope_cos;
    float *rope_sin;

    size_t cap_tokens, cap_seqs, cap_block_ids, cap_rope;
} ts_cpu_batch;

/* Checks the layout (rows contiguous and in order, block tables long enough and inside
 * block_ids) and copies it. TS_E_INVALID or TS_E_NOMEM with a message; on error the previous
 * batch is gone (n_tokens = 0). */
int ts_cpu_batch_set(ts_cpu_batch *b, const ts_batch *src);
void ts_cpu_batch_free(ts_cpu_batch *b); /* back to all zeros */

/* Makes sure b->rope_cos/sin hold this step's angles for `rope`, computed with
 * ts_ref_rope_angles. TS_E_NOMEM on allocation failure (first use of a larger batch only). */
int ts_cpu_batch_rope_table(ts_cpu_batch *b, const ts_rope *rope);

/* The KV block id holding position p of row r's sequence, and the slot within it. */
static inline int32_t ts_cpu_batch_block(const ts_cpu_batch *b, int32_t row, int32_t p) {
    const ts_batch_seq *s = &b->seqs[b->row_seq[row]];
    return b->block_ids[s->block0 + p / b->block_size];
}

#endif
