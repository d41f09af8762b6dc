/* ref.c — see ref.h. Plain loops; the fast kernels are held to these. */
#include "kernels/cpu/ref.h"

#include "common/error.h"
#include "common/fp16.h"
#include "kernels/cpu/qmatmul.h"
#include "kernels/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { CHUNK = 256 }; /* weights are dequantized this many elements at a time (a multiple of 32) */

void ts_ref_embed(float *x, const ts_weight *table, int64_t first_row, const int32_t *tokens,
                  int32_t n) {
    for (int32_t i = 0; i < n; i++) {
        float *row = x + (size_t)i * (size_t)table->cols;
        int64_t r = (int64_t)tokens[i] - first_row;
        if (r < 0 || r >= table->rows) {
            memset(row, 0, (size_t)table->cols * sizeof(float));
            continue;
        }
        const char *src = (const char *)table->data + (size_t)r * table->row_stride;
        ts_dequantize_row(table->type, src, row, table->cols);
    }
}

void ts_ref_rmsnorm(float *out, const float *x, const float *weight, int32_t n, int32_t dim,
                    float eps) {
    for (int32_t i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * (size_t)dim;
        float *oi = out + (size_t)i * (size_t)dim;
        double sum = 0.0;
        for (int32_t j = 0; j < dim; j++)
            sum += (double)xi[j] * (double)xi[j];
        float scale = 1.0f / sqrtf((float)(sum / dim) + eps);
        for (int32_t j = 0; j < dim; j++)
            oi[j] = xi[j] * scale * weight[j];
    }
}

void ts_ref_matmul(float *y, const float *x, int32_t n, const ts_weight *w) {
    if (ts_dtype_is_quantized(w->type)) { /* as llama.cpp: quantized activations (qmatmul.h) */
        void *act = malloc(ts_cpu_qmatmul_act_bytes(w, n) + 1);
        TS_ASSERT(act);
        ts_cpu_qmatmul(NULL, y, x, n, w, act, (ts_cpu_qdot){.dot = NULL});
        free(act);
        return;
    }
    float wbuf[CHUNK];
    for (int64_t r = 0; r < w->rows; r++) {
        const char *row = (const char *)w->data + (size_t)r * w->row_stride;
        for (int32_t i = 0; i < n; i++) {
            const float *xi = x + (size_t)i * (size_t)w->cols;
            double sum = 0.0;
            for (int64_t k0 = 0; k0 < w->cols; k0 += CHUNK) {
                int64_t len = w->cols - k0 < CHUNK ? w->cols - k0 : CHUNK;
                ts_dequantize_row(w->type, row + ts_dtype_row_bytes(w->type, k0), wbuf, len);
                for (int64_t k = 0; k < len; k++)
                    sum += (double)wbuf[k] * (double)xi[k0 + k];
            }
            y[(size_t)i * (size_t)w->rows + (size_t)r] = (float)sum;
        }
    }
}

void ts_ref_rope_angles(int32_t pos, const ts_rope *rope, float *cos_out, float *sin_out) {
    const float theta_scale = powf(rope->theta_base, -2.0f / (float)rope->n_dims);
    float t = (float)pos;
    for (int32_t i = 0; i < rope->n_dims / 2; i++) {
        float factor = rope->freq_factors ? rope->freq_factors[i] : 1.0f;
        float angle = rope->freq_scale * (t / factor);
        cos_out[i] = cosf(angle);
        sin_out[i] = sinf(angle);
        t *= theta_scale;
    }
}

void ts_ref_rope_row(float *x, int32_t n_heads, int32_t head_dim, ts_rope_mode mode, int32_t n_dims,
                     const float *cos_v, const float *sin_v) {
    const int32_t pairs = n_dims / 2;
    /* element i of a pair and its partner: adjacent (normal) or half the rotated dims apart */
    const int32_t stride = mode == TS_ROPE_NEOX ? 1 : 2, offset = mode == TS_ROPE_NEOX ? pairs : 1;
    for (int32_t h = 0; h < n_heads; h++) {
        float *xh = x + (size_t)h * (size_t)head_dim;
        for (int32_t i = 0; i < pairs; i++) {
            float *a = xh + (size_t)i * (size_t)stride, *b = a + offset;
            float x0 = *a, x1 = *b;
            *a = x0 * cos_v[i] - x1 * sin_v[i];
            *b = x0 * sin_v[i] + x1 * cos_v[i];
        }
    }
}

void ts_ref_rope(float *x, const int32_t *pos, int32_t n, int32_t n_heads, int32_t head_dim,
                 const ts_rope *rope) {
    float cos_v[512], sin_v[512];
    TS_ASSERT(rope->n_dims <= 1024); /* the model loader checks n_dims <= head_dim */
    for (int32_t r = 0; r < n; r++) {
        ts_ref_rope_angles(pos[r], rope, cos_v, sin_v);
        ts_ref_rope_row(x + (size_t)r * (size_t)n_heads * (size_t)head_dim, n_heads, head_dim,
                        rope->mode, rope->n_dims, cos_v, sin_v);
    }
}

void ts_ref_add_bias(float *y, const float *bias, int32_t n, int32_t width) {
    for (int32_t i = 0; i < n; i++) {
        float *row = y + (size_t)i * (size_t)width;
        for (int32_t j = 0; j < width; j++)
            row[j] += bias[j];
    }
}

/* Element offset of (block, kv head, slot) in a K or V pool. */
static size_t kv_offset(const ts_kv_layer *kv, int32_t block, int32_t head, int32_t slot) {
    return (((size_t)block * (size_t)kv->n_kv_heads + (size_t)head) * (size_t)kv->block_size +
            (size_t)slot) *
           (size_t)kv->head_dim;
}

static float kv_get(const ts_kv_layer *kv, const void *pool, size_t at) {
    if (kv->type == TS_DTYPE_F16) return ts_f16_to_f32(((const uint16_t *)pool)[at]);
    return ((const float *)pool)[at];
}

static void kv_put(const ts_kv_layer *kv, void *pool, size_t at, float v) {
    if (kv->type == TS_DTYPE_F16)
        ((uint16_t *)pool)[at] = ts_f32_to_f16(v);
    else
        ((float *)pool)[at] = v;
}

void ts_ref_kv_store(const ts_kv_layer *kv, const ts_cpu_batch *b, const float *k, const float *v) {
    size_t width = (size_t)kv->n_kv_heads * (size_t)kv->head_dim;
    for (int32_t r = 0; r < b->n_tokens; r++) {
        int32_t p = b->pos[r];
        int32_t block = ts_cpu_batch_block(b, r, p), slot = p % b->block_size;
        for (int32_t h = 0; h < kv->n_kv_heads; h++) {
            size_t at = kv_offset(kv, block, h, slot);
            for (int32_t d = 0; d < kv->head_dim; d++) {
                size_t src = (size_t)r * width + (size_t)h * (size_t)kv->head_dim + (size_t)d;
                kv_put(kv, kv->k, at + (size_t)d, k[src]);
                kv_put(kv, kv->v, at + (size_t)d, v[src]);
            }
        }
    }
}

void ts_ref_attention(float *out, const float *q, const ts_kv_layer *kv, const ts_cpu_batch *b,
                      int32_t n_heads, float scale, float *scratch) {
    const int32_t hd = kv->head_dim, group = n_heads / kv->n_kv_heads;
    for (int32_t r = 0; r < b->n_tokens; r++) {
        const int32_t pos = b->pos[r];
        for (int32_t h = 0; h < n_heads; h++) {
            const float *qh = q + ((size_t)r * (size_t)n_heads + (size_t)h) * (size_t)hd;
            float *oh = out + ((size_t)r * (size_t)n_heads + (size_t)h) * (size_t)hd;
            const int32_t kvh = h / group;
            float max = -INFINITY;
            for (int32_t t = 0; t <= pos; t++) { /* scores */
                size_t at = kv_offset(kv, ts_cpu_batch_block(b, r, t), kvh, t % b->block_size);
                double dot = 0.0;
                for (int32_t d = 0; d < hd; d++)
                    dot += (double)qh[d] * kv_get(kv, kv->k, at + d);
                scratch[t] = (float)dot * scale;
                if (scratch[t] > max) max = scratch[t];
            }
            double sum = 0.0;
            for (int32_t t = 0; t <= pos; t++) { /* softmax numerators */
                scratch[t] = expf(scratch[t] - max);
                sum += scratch[t];
            }
            for (int32_t d = 0; d < hd; d++) { /* weighted sum of values */
                double acc = 0.0;
                for (int32_t t = 0; t <= pos; t++) {
                    size_t at = kv_offset(kv, ts_cpu_batch_block(b, r, t), kvh, t % b->block_size);
                    acc += (double)scratch[t] * kv_get(kv, kv->v, at + d);
                }
                oh[d] = (float)(acc / sum);
            }
        }
    }
}

void ts_ref_silu_mul(float *gate, const float *up, int64_t count) {
    for (int64_t i = 0; i < count; i++)
        gate[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

void ts_ref_add(float *y, const float *x, int64_t count) {
    for (int64_t i = 0; i < count; i++)
        y[i] += x[i];
}

void ts_ref_logit_rows(float *dst, const float *x, const ts_cpu_batch *b, int32_t dim) {
    for (int32_t j = 0; j < b->n_logit_rows; j++)
        memcpy(dst + (size_t)j * (size_t)dim, x + (size_t)b->logit_rows[j] * (size_t)dim,
               (size_t)dim * sizeof(float));
}

int32_t ts_ref_argmax_row(const float *row, int32_t n_cols) {
    int32_t best = 0;
    for (int32_t j = 1; j < n_cols; j++)
        if (row[j] > row[best]) best = j; /* strict: the lowest index wins ties */
    return best;
}

void ts_ref_argmax(const float *logits, int32_t n, int32_t n_cols, int32_t *index, float *value) {
    for (int32_t i = 0; i < n; i++) {
        const float *row = logits + (size_t)i * (size_t)n_cols;
        index[i] = ts_ref_argmax_row(row, n_cols);
        if (value) value[i] = row[index[i]];
    }
}

/* ---- sampling ---- */

typedef ts_ref_item item;

int ts_ref_item_cmp(const void *a, const void *b) {
    const item *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

size_t ts_ref_sample_scratch_bytes(int32_t n_cols) {
    return (size_t)n_cols * (2 * sizeof(float) + sizeof(item) + 1);
}

float ts_ref_logprob(const float *row, int32_t n_cols, int32_t token) {
    float max = row[ts_ref_argmax_row(row, n_cols)];
    double sum = 0.0;
    for (int32_t j = 0; j < n_cols; j++)
        sum += exp((double)row[j] - (double)max);
    return (float)((double)(row[token] - max) - log(sum));
}

int32_t ts_ref_sample(const float *logits, int32_t n_cols, const ts_sampling *p, void *scratch,
                      float *logprob) {
    const int32_t V = n_cols;
    float *l = scratch;               /* penalised logits */
    float *prob = l + V;              /* probabilities of kept ids */
    item *items = (item *)(prob + V); /* for sorting */
    unsigned char *kept = (unsigned char *)(items + V);
    int32_t token;

    /* 1. repetition penalty, once per distinct id */
    memcpy(l, logits, (size_t)V * sizeof(float));
    for (int32_t i = 0; i < p->n_recent && p->repetition_penalty != 1.0f; i++) {
        int32_t id = p->recent[i];
        int seen = 0;
        for (int32_t j = 0; j < i; j++)
            seen |= p->recent[j] == id;
        if (id < 0 || id >= V || seen) continue;
        l[id] = l[id] > 0 ? l[id] / p->repetition_penalty : l[id] * p->repetition_penalty;
    }

    /* 1b. additive biases, in order */
    for (int32_t i = 0; i < p->n_bias; i++)
        if (p->bias_ids[i] >= 0 && p->bias_ids[i] < V) l[p->bias_ids[i]] += p->bias[i];

    /* 2. greedy */
    if (p->temperature <= 0.0f) {
        token = ts_ref_argmax_row(l, V);
        goto done;
    }

    /* 3. top-k */
    memset(kept, 1, (size_t)V);
    if (p->top_k > 0 && p->top_k < V) {
        for (int32_t j = 0; j < V; j++)
            items[j] = (item){l[j], j};
        qsort(items, (size_t)V, sizeof(item), ts_ref_item_cmp);
        for (int32_t j = p->top_k; j < V; j++)
            kept[items[j].id] = 0;
    }

    /* 4. temperature and softmax over the kept ids (sum in id order) */
    float max = -INFINITY;
    for (int32_t j = 0; j < V; j++)
        if (kept[j] && l[j] / p->temperature > max) max = l[j] / p->temperature;
    float s = 0.0f;
    for (int32_t j = 0; j < V; j++) {
        if (!kept[j]) continue;
        prob[j] = expf(l[j] / p->temperature - max);
        s += prob[j];
    }
    for (int32_t j = 0; j < V; j++)
        if (kept[j]) prob[j] = prob[j] / s;

    /* 5. top-p over the kept ids by probability (descending, lower id first) */
    int32_t n_kept = 0;
    for (int32_t j = 0; j < V; j++)
        if (kept[j]) items[n_kept++] = (item){prob[j], j};
    qsort(items, (size_t)n_kept, sizeof(item), ts_ref_item_cmp);
    if (p->top_p < 1.0f) {
        float cum = 0.0f;
        int32_t keep = n_kept;
        for (int32_t j = 0; j < n_kept; j++) {
            cum += items[j].v;
            if (cum >= p->top_p) {
                keep = j + 1;
                break;
            }
        }
        for (int32_t j = keep; j < n_kept; j++)
            kept[items[j].id] = 0;
    }

    /* 6. min-p relative to the largest probability */
    if (p->min_p > 0.0f) {
        float floor_p = (p->min_p < 1.0f ? p->min_p : 1.0f) * items[0].v;
        for (int32_t j = 0; j < V; j++)
            if (kept[j] && prob[j] < floor_p) kept[j] = 0;
    }

    /* 7. renormalise and draw, in id order */
    float total = 0.0f;
    for (int32_t j = 0; j < V; j++)
        if (kept[j]) total += prob[j];
    float target = p->uniform * total, acc = 0.0f;
    token = -1;
    for (int32_t j = 0; j < V; j++) {
        if (!kept[j]) continue;
        token = j;
        acc += prob[j];
        if (acc > target) break;
    }

done:
    if (logprob) *logprob = ts_ref_logprob(logits, V, token);
    return token;
}
