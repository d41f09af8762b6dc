/*
 * test_kernels_util.h — helpers shared by the kernel tests: random data, weights of any type,
 * a paged KV cache with its block tables, and ts_batch construction.
 */
#ifndef TS_TESTS_TEST_KERNELS_UTIL_H
#define TS_TESTS_TEST_KERNELS_UTIL_H

#include "common/dtype.h"
#include "common/fp16.h"
#include "common/rng.h"
#include "kernels/kernels.h"
#include "kernels/quant.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline float *tk_randn(ts_rng *rng, size_t n, float scale) {
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        x[i] = ts_rng_normal(rng) * scale;
    return x;
}

/* Random blocks of a quantized type (every code pattern), finite scales of about `scale`. */
static inline void tk_random_blocks(ts_rng *rng, ts_dtype t, void *dst, int64_t n, float scale) {
    const size_t bytes = ts_dtype_row_bytes(t, n), bb = (size_t)ts_dtype_block_bytes(t);
    uint8_t *row = dst;
    for (size_t i = 0; i < bytes; i++) row[i] = (uint8_t)ts_rng_next(rng);
    const ts_quant_traits *q = ts_quant_traits_of(t);
    for (size_t b = 0; b < bytes / bb; b++)
        for (int j = 0; j < q->n_scales; j++) {
            uint16_t h = ts_f32_to_f16(ts_rng_normal(rng) * scale);
            memcpy(row + b * bb + q->scale_at[j], &h, 2);
        }
}

/* A weight of `type` quantized from random normal values, or (types Tessera has no quantizer
 * for) random blocks with scales chosen so that values are of about that size (host memory,
 * caller frees data). */
static inline ts_weight tk_weight(ts_rng *rng, ts_dtype type, int64_t rows, int64_t cols,
                                  float scale) {
    ts_weight w = {.type = type, .rows = rows, .cols = cols};
    w.row_stride = ts_dtype_row_bytes(type, cols);
    char *data = malloc(w.row_stride * (size_t)rows + 1);
    float *row = malloc((size_t)cols * sizeof(float));
    for (int64_t r = 0; r < rows; r++) {
        if (!ts_quant_traits_of(type)->from_float) {
            tk_random_blocks(rng, type, data + (size_t)r * w.row_stride, cols, scale / 16.0f);
            continue;
        }
        for (int64_t k = 0; k < cols; k++)
            row[k] = ts_rng_normal(rng) * scale;
        ts_quantize_row(type, row, data + (size_t)r * w.row_stride, cols);
    }
    free(row);
    w.data = data;
    return w;
}

static inline void tk_weight_free(ts_weight *w) {
    free((void *)w->data);
}

/* Dequantized copy [rows][cols] (what the weight means). */
static inline float *tk_weight_f32(const ts_weight *w) {
    float *out = malloc((size_t)w->rows * (size_t)w->cols * sizeof(float));
    for (int64_t r = 0; r < w->rows; r++)
        ts_dequantize_row(w->type, (const char *)w->data + (size_t)r * w->row_stride,
                          out + (size_t)r * (size_t)w->cols, w->cols);
    return out;
}

/* A test batch of up to 16 sequences: seq s has n_rows[s] new tokens after pos0[s] cached
 * ones; each sequence gets its own blocks, in the order given by `block_perm` (a permutation of
 * all blocks, or NULL for 0, 1, 2, ...). */
typedef struct {
    ts_batch batch;
    ts_batch_seq seqs[16];
    int32_t tokens[4096];
    int32_t block_ids[1024];
} tk_batch;

static inline void tk_batch_make(tk_batch *tb, int32_t n_seqs, const int32_t *pos0,
                                 const int32_t *n_rows, int32_t block_size,
                                 const int32_t *block_perm) {
    memset(tb, 0, sizeof *tb);
    int32_t row = 0, nb = 0;
    for (int32_t s = 0; s < n_seqs; s++) {
        ts_batch_seq *q = &tb->seqs[s];
        q->row0 = row;
        q->n_rows = n_rows[s];
        q->pos0 = pos0[s];
        q->block0 = nb;
        q->n_blocks = (pos0[s] + n_rows[s] + block_size - 1) / block_size;
        q->want_logits = true;
        for (int32_t b = 0; b < q->n_blocks; b++, nb++)
            tb->block_ids[nb] = block_perm ? block_perm[nb] : nb;
        for (int32_t i = 0; i < n_rows[s]; i++, row++)
            tb->tokens[row] = (row * 7 + s) % 100;
    }
    tb->batch.n_tokens = row;
    tb->batch.n_seqs = n_seqs;
    tb->batch.tokens = tb->tokens;
    tb->batch.seqs = tb->seqs;
    tb->batch.block_ids = tb->block_ids;
    tb->batch.n_block_ids = nb;
    tb->batch.block_size = block_size;
}

/* A KV layer in host memory (zeroed). */
static inline ts_kv_layer tk_kv_make(ts_dtype type, int32_t n_blocks, int32_t block_size,
                                     int32_t n_kv_heads, int32_t head_dim) {
    ts_kv_layer kv = {.type = type,
                      .n_blocks = n_blocks,
                      .block_size = block_size,
                      .n_kv_heads = n_kv_heads,
                      .head_dim = head_dim};
    size_t bytes = (size_t)n_blocks * (size_t)block_size * (size_t)n_kv_heads * (size_t)head_dim *
                   (type == TS_DTYPE_F16 ? 2 : 4);
    kv.k = calloc(1, bytes);
    kv.v = calloc(1, bytes);
    return kv;
}

static inline void tk_kv_free(ts_kv_layer *kv) {
    free(kv->k);
    free(kv->v);
}

/* Bitwise equality of float arrays. */
static inline int tk_same_bits(const float *a, const float *b, size_t n) {
    return memcmp(a, b, n * sizeof(float)) == 0;
}

/* y ≈ x · Wᵀ against the reference: |got - ref| <= rel * sum_k |x_k w_k| for every element
 * (w dequantized); prints the first element out of bounds. */
static inline int tk_matmul_close(const float *got, const float *ref, const float *x,
                                  const ts_weight *w, int32_t n, double rel) {
    float *wf = tk_weight_f32(w);
    int ok = 1;
    for (int32_t i = 0; i < n && ok; i++)
        for (int64_t r = 0; r < w->rows; r++) {
            double mag = 0;
            for (int64_t k = 0; k < w->cols; k++)
                mag += fabs((double)x[i * w->cols + k] * wf[r * w->cols + k]);
            double d = fabs((double)got[i * w->rows + r] - ref[i * w->rows + r]);
            if (!(d <= rel * mag + 1e-30)) {
                fprintf(stderr, "  %s %lldx%lld n=%d: y[%d][%lld] = %.9g, reference %.9g\n",
                        ts_dtype_name(w->type), (long long)w->rows, (long long)w->cols, n, i,
                        (long long)r, got[i * w->rows + r], ref[i * w->rows + r]);
                ok = 0;
                break;
            }
        }
    free(wf);
    return ok;
}

#endif
