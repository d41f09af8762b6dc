/* shard.c — see shard.h. */
#include "node/shard.h"

#include "common/error.h"

#include <stdio.h>

void ts_shard_split(int64_t n, int size, int rank, int64_t align, int64_t *begin, int64_t *end) {
    int64_t units = (n + align - 1) / align;
    int64_t b = units * rank / size * align;
    int64_t e = units * (rank + 1) / size * align;
    *begin = b < n ? b : n;
    *end = e < n ? e : n;
}

void ts_shard_kv_heads(int32_t n_kv_heads, int size, int rank, int32_t *head0, int32_t *n) {
    if (n_kv_heads % size == 0) {
        *n = n_kv_heads / size;
        *head0 = *n * rank;
    } else {
        *n = 1;
        *head0 = rank / (size / n_kv_heads);
    }
}

int ts_weight_rows(const ts_weight *w, int64_t row0, int64_t n_rows, ts_weight *out) {
    if (row0 < 0 || n_rows < 0 || row0 + n_rows > w->rows)
        return ts_error_set(TS_E_INTERNAL, "row shard [%lld, %lld) outside %lld rows",
                            (long long)row0, (long long)(row0 + n_rows), (long long)w->rows);
    *out = *w;
    out->rows = n_rows;
    out->data = (const char *)w->data + (size_t)row0 * w->row_stride;
    out->owned = NULL;
    return TS_OK;
}

int ts_weight_cols(const ts_weight *w, int64_t col0, int64_t n_cols, ts_weight *out) {
    int block = ts_dtype_block_elems(w->type);
    if (col0 < 0 || n_cols < 0 || col0 + n_cols > w->cols)
        return ts_error_set(TS_E_INTERNAL, "column shard outside the weight");
    if (col0 % block != 0 || n_cols % block != 0)
        return ts_error_set(TS_E_INVALID,
                            "a %s weight can only be split at multiples of %d columns "
                            "(asked for [%lld, %lld)); use another tensor-parallel degree or an "
                            "unquantized model",
                            ts_dtype_name(w->type), block, (long long)col0,
                            (long long)(col0 + n_cols));
    *out = *w;
    out->cols = n_cols;
    out->data = (const char *)w->data + ts_dtype_row_bytes(w->type, col0);
    out->owned = NULL;
    return TS_OK;
}

int ts_shard_plan_make(const ts_model *m, int rank, int size, ts_shard_plan *out) {
    const ts_model_hparams *hp = &m->hp;
    if (size < 1 || rank < 0 || rank >= size)
        return ts_error_set(TS_E_INVALID, "rank %d of a group of %d", rank, size);
    if (hp->n_heads % size != 0) {
        char options[128] = "";
        int n = 0;
        for (int d = 1; d <= hp->n_heads && n < (int)sizeof options - 8; d++)
            if (hp->n_heads % d == 0)
                n += snprintf(options + n, sizeof options - (size_t)n, "%s%d", n ? ", " : "", d);
        return ts_error_set(TS_E_INVALID,
                            "tensor parallelism %d does not divide the model's %d query heads: "
                            "use one of %s",
                            size, hp->n_heads, options);
    }
    if (hp->n_kv_heads % size != 0 && size % hp->n_kv_heads != 0)
        return ts_error_set(TS_E_INVALID,
                            "tensor parallelism %d and the model's %d KV heads: one must divide "
                            "the other",
                            size, hp->n_kv_heads);
    out->rank = rank;
    out->size = size;
    out->n_heads = hp->n_heads / size;
    out->head0 = out->n_heads * rank;
    /* With replication the head is the one this rank's query heads attend with:
     * head0 / (n_heads / n_kv_heads) == rank / (size / n_kv_heads) since size divides n_heads. */
    ts_shard_kv_heads(hp->n_kv_heads, size, rank, &out->kv_head0, &out->n_kv_heads);
    /* Column shards must hold whole blocks of every layer's quantized weights: W_down's FFN
     * columns (the FFN split is aligned to the largest block; block sizes are powers of two)
     * and Wo's head columns (fixed by the head split, so only checked). */
    int64_t ff_align = 1;
    for (int32_t l = 0; m->layers && l < hp->n_layers; l++) {
        int64_t down = ts_dtype_block_elems(m->layers[l].w_down.type);
        int64_t wo = ts_dtype_block_elems(m->layers[l].wo.type);
        if (down > ff_align) ff_align = down;
        int64_t head_cols = (int64_t)out->n_heads * hp->head_dim;
        if (wo > 1 && head_cols % wo != 0)
            return ts_error_set(TS_E_INVALID,
                                "tensor parallelism %d gives each rank %lld columns of layer %d's "
                                "attn_output (%s), which is stored in blocks of %lld columns: use "
                                "a degree whose heads per rank fill whole blocks",
                                size, (long long)head_cols, l, ts_dtype_name(m->layers[l].wo.type),
                                (long long)wo);
    }
    int64_t b, e;
    ts_shard_split(hp->n_ff, size, rank, ff_align, &b, &e);
    out->ff0 = (int32_t)b;
    out->n_ff = (int32_t)(e - b);
    ts_shard_split(hp->n_vocab, size, rank, 1, &b, &e);
    out->vocab0 = (int32_t)b;
    out->n_vocab = (int32_t)(e - b);
    out->max_vocab_shard = 0;
    for (int r = 0; r < size; r++) {
        ts_shard_split(hp->n_vocab, size, r, 1, &b, &e);
        if (e - b > out->max_vocab_shard) out->max_vocab_shard = (int32_t)(e - b);
    }
    if (out->n_ff == 0)
        return ts_error_set(TS_E_INVALID,
                            "tensor parallelism %d leaves a rank without FFN rows (%d rows in "
                            "blocks of %lld)",
                            size, hp->n_ff, (long long)ff_align);
    return TS_OK;
}
