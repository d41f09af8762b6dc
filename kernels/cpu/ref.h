/*
 * ref.h — the scalar reference of every backend operation (kernels/kernels.h).
 *
 * Written to be checked against the math in a minute, not to be fast: one loop per formula,
 * dot products and sums accumulated in double, plain weights converted with ts_dequantize_row;
 * quantized weights multiply as llama.cpp's CPU does (activations quantized, integer dot
 * products: kernels/quant.h, cpu/qmatmul.h), the definition their fast versions keep. The
 * SIMD kernels are tested against these functions with stated tolerances, and the "cpu-scalar"
 * backend runs them directly (single-threaded).
 *
 * Functions take their inputs explicitly (the batch layout as a ts_cpu_batch) so tests can call
 * them without a backend. Scratch memory is passed in by the caller; nothing allocates but
 * ts_ref_matmul on a quantized weight (its quantized activations).
 */
#ifndef TS_KERNELS_CPU_REF_H
#define TS_KERNELS_CPU_REF_H

#include "kernels/cpu/cpu_batch.h"
#include "kernels/kernels.h"

#include <stddef.h>
#include <stdint.h>

/* x[i] = row (tokens[i] - first_row) of table as f32, zeros outside the table. */
void ts_ref_embed(float *x, const ts_weight *table, int64_t first_row, const int32_t *tokens,
                  int32_t n);

/* out = x / sqrt(mean(x^2) + eps) * weight, row by row. out may equal x. */
void ts_ref_rmsnorm(float *out, const float *x, const float *weight, int32_t n, int32_t dim,
                    float eps);

/* y[n][w->rows] = x[n][w->cols] · Wᵀ. */
void ts_ref_matmul(float *y, const float *x, int32_t n, const ts_weight *w);

/* cos/sin of the n_dims/2 angles of position pos (kernels.h: ts_rope), computed as GGML's CPU
 * rope does (so that greedy outputs match llama.cpp bit for bit):
 *   theta_scale = powf(theta_base, -2.0f / n_dims); t_0 = (float)pos;
 *   t_{i+1} = t_i * theta_scale (float multiplication);
 *   angle_i = freq_scale * (t_i / factor_i); cos = cosf, sin = sinf.
 * With freq_scale 1 and no factors the angle is t_i exactly. */
void ts_ref_rope_angles(int32_t pos, const ts_rope *rope, float *cos_out, float *sin_out);

/* Rotary embedding in place, row r at position pos[r]: pairs (2i, 2i+1) in TS_ROPE_NORMAL mode,
 * (i, i + n_dims/2) in TS_ROPE_NEOX, of the first n_dims of each head:
 * (x0, x1) -> (x0 cos - x1 sin, x0 sin + x1 cos). */
void ts_ref_rope(float *x, const int32_t *pos, int32_t n, int32_t n_heads, int32_t head_dim,
                 const ts_rope *rope);

/* Rotates one row with precomputed angles (n_dims/2 cos and sin). Shared by every CPU
 * implementation, so rope is bit-identical across ISAs. */
void ts_ref_rope_row(float *x, int32_t n_heads, int32_t head_dim, ts_rope_mode mode, int32_t n_dims,
                     const float *cos_v, const float *sin_v);

/* y[i][j] += bias[j], rows i < n of width `width`. */
void ts_ref_add_bias(float *y, const float *bias, int32_t n, int32_t width);

/* Writes row r's k and v into the slot of its position. */
void ts_ref_kv_store(const ts_kv_layer *kv, const ts_cpu_batch *b, const float *k, const float *v);

/* Causal attention over the paged cache; scratch holds b->max_ctx floats. */
void ts_ref_attention(float *out, const float *q, const ts_kv_layer *kv, const ts_cpu_batch *b,
                      int32_t n_heads, float scale, float *scratch);

/* gate[i] = gate[i] / (1 + exp(-gate[i])) * up[i]. */
void ts_ref_silu_mul(float *gate, const float *up, int64_t count);
void ts_ref_add(float *y, const float *x, int64_t count);
void ts_ref_logit_rows(float *dst, const float *x, const ts_cpu_batch *b, int32_t dim);
void ts_ref_argmax(const float *logits, int32_t n, int32_t n_cols, int32_t *index, float *value);

/* The first index of the largest value (strict comparison: the lowest index wins ties). */
int32_t ts_ref_argmax_row(const float *row, int32_t n_cols);

/* A (value, id) pair and the order sampling sorts by: value descending, then id ascending. */
typedef struct ts_ref_item {
    float v;
    int32_t id;
} ts_ref_item;
int ts_ref_item_cmp(const void *a, const void *b);

/* Sampling of one row. The exact definition every implementation follows (V = n_cols):
 *  1. l = logits; for each distinct id in recent (ids outside 0..V-1 ignored):
 *     l[id] = l[id] > 0 ? l[id] / penalty : l[id] * penalty.
 *  1b. for i in 0 .. n_bias-1 in order (ids outside 0..V-1 ignored): l[bias_ids[i]] += bias[i].
 *  2. temperature <= 0: the token is argmax(l), lowest id on ties. Stop.
 *  3. top-k (0 < k < V): keep the k largest l, ties broken by lower id.
 *  4. l' = l / temperature over the kept ids; m = max l'; e = expf(l' - m);
 *     s = float sum of e in id order; p = e / s.
 *  5. Order the kept ids by p descending, ties by lower id. top-p (< 1): keep the shortest
 *     prefix whose float cumulative sum of p (in that order) is >= top_p; at least one id.
 *  6. min-p (> 0): drop ids with p < min(min_p, 1) * (largest p) (the most probable stays).
 *  7. S = float sum of the remaining p in id order; r = uniform * S; walk the remaining ids in
 *     id order adding p; the token is the first id where the sum exceeds r (the last remaining
 *     id if rounding leaves none).
 * *logprob (if logprob != NULL) = log softmax(logits)[token] of the unmodified row:
 *   (logits[token] - max) - log(sum over all ids of exp(logits - max)), sum in double.
 * scratch holds ts_ref_sample_scratch_bytes(n_cols) bytes. */
int32_t ts_ref_sample(const float *logits, int32_t n_cols, const ts_sampling *params, void *scratch,
                      float *logprob);
size_t ts_ref_sample_scratch_bytes(int32_t n_cols);

/* log softmax(row)[token] as defined above. */
float ts_ref_logprob(const float *row, int32_t n_cols, int32_t token);

#endif
