/*
 * shard.h — which part of each weight a tensor-parallel rank holds (Megatron-style).
 *
 * For a group of `size` ranks, rank r holds:
 *   - query heads [r*hq, (r+1)*hq) with hq = n_heads / size (size must divide n_heads);
 *   - KV heads: n_kv_heads / size of them when size divides n_kv_heads, else (when n_kv_heads
 *     divides size) one KV head replicated across size / n_kv_heads ranks — the head its query
 *     heads attend with, as the common servers do;
 *   - column splits (by output rows of W[rows][cols]): Wq, Wk, Wv by heads, W_gate and W_up by
 *     FFN rows [split(n_ff)), the embedding and output head by vocabulary rows;
 *   - row splits (by input columns): Wo by its query heads' columns, W_down by its FFN columns;
 *     a partial product is summed by one all-reduce after each of these two matmuls.
 * Uneven splits (FFN 172 over 3 ranks, a vocabulary not divisible by size) are fine; column
 * offsets of quantized row splits must fall on block boundaries (32 or 256 elements).
 *
 * The shard views point into the full host views (the mmap), so each rank touches only the
 * pages of its shard. ts_shard_plan checks everything up front and fails with a message that
 * says what to change ("8 query heads cannot be split over 3 ranks: use 1, 2, 4 or 8").
 */
#ifndef TS_NODE_SHARD_H
#define TS_NODE_SHARD_H

#include "model/model.h"

#include <stdint.h>

typedef struct ts_shard_plan {
    int rank, size;
    int32_t n_heads;      /* query heads on this rank */
    int32_t head0;        /* first query head (global index) */
    int32_t n_kv_heads;   /* KV heads on this rank */
    int32_t kv_head0;     /* first KV head (global index) */
    int32_t ff0, n_ff;    /* FFN rows [ff0, ff0 + n_ff) */
    int32_t vocab0, n_vocab; /* vocabulary rows [vocab0, vocab0 + n_vocab) */
    int32_t max_vocab_shard; /* the largest n_vocab over all ranks (all-gather padding) */
} ts_shard_plan;

/* The FFN split is aligned to the largest block size of the layers' W_down types (256 for
 * K-quants), so its column shards stay whole and may be uneven (Qwen2.5-0.5B's 4864 FFN rows
 * are 19 blocks: 9 and 10 over 2 ranks); W_up and W_gate are split at the same rows. A degree
 * whose heads per rank do not fill whole blocks of Wo's type is refused. Biases are split with
 * their weights by the engine (q/k/v by rows; the output bias is added after the all-reduce). */
int ts_shard_plan_make(const ts_model *m, int rank, int size, ts_shard_plan *out);

/* The KV heads [*head0, *head0 + *n) that rank `rank` of a group of `size` holds, by the rule
 * above: n_kv_heads / size consecutive heads when size divides n_kv_heads, else (n_kv_heads
 * divides size) the one head rank / (size / n_kv_heads), replicated. The caller has checked that
 * one of the two divides the other. */
void ts_shard_kv_heads(int32_t n_kv_heads, int size, int rank, int32_t *head0, int32_t *n);

/* Rank r's slice [begin, end) of n items in units of `align` (n need not divide evenly). */
void ts_shard_split(int64_t n, int size, int rank, int64_t align, int64_t *begin, int64_t *end);

/* Views of part of a host weight: output rows [row0, row0 + n_rows), or input columns
 * [col0, col0 + n_cols) (keeping the full row stride). TS_E_INVALID if a quantized column
 * offset is not block-aligned. */
int ts_weight_rows(const ts_weight *w, int64_t row0, int64_t n_rows, ts_weight *out);
int ts_weight_cols(const ts_weight *w, int64_t col0, int64_t n_cols, ts_weight *out);

#endif
