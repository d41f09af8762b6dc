/* kv_fingerprint.c — see kv_fingerprint.h. */
#include "node/kv_fingerprint.h"

#include "common/kv_geometry.h"

#include <stddef.h>

static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const uint8_t *p = data;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t fnv_u64(uint64_t h, uint64_t v) {
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    return fnv1a(h, b, sizeof b);
}

/* The first few KiB of a weight: enough to tell two checkpoints apart, cheap to read. */
static uint64_t fnv_weight(uint64_t h, const ts_weight *w) {
    size_t bytes = w->row_stride * (size_t)w->rows;
    h = fnv_u64(h, (uint64_t)w->type);
    h = fnv_u64(h, (uint64_t)w->rows);
    h = fnv_u64(h, (uint64_t)w->cols);
    return w->data ? fnv1a(h, w->data, bytes < 4096 ? bytes : 4096) : h;
}

static uint64_t fnv_vector(uint64_t h, const ts_model_vector *v) {
    size_t bytes = ts_dtype_row_bytes(v->type, v->n);
    return v->data ? fnv1a(h, v->data, bytes < 4096 ? bytes : 4096) : h;
}

uint64_t ts_kvx_fingerprint(const ts_model *m, ts_dtype kv_type, int32_t block_size) {
    const ts_model_hparams *hp = &m->hp;
    uint64_t h = 0xcbf29ce484222325ull;
    int64_t shape[] = {
        hp->n_vocab,  hp->dim,       hp->n_layers,     hp->n_heads, hp->n_kv_heads,
        hp->head_dim, hp->rope_dims, (int64_t)kv_type, block_size,  TS_KV_LAYOUT_VERSION};
    for (size_t i = 0; i < sizeof shape / sizeof shape[0]; i++)
        h = fnv_u64(h, (uint64_t)shape[i]);
    h = fnv1a(h, &hp->rope_theta, sizeof hp->rope_theta);
    h = fnv1a(h, &hp->rms_eps, sizeof hp->rms_eps);
    h = fnv_weight(h, &m->token_embd);
    for (int32_t l = 0; m->layers && l < hp->n_layers; l++) {
        h = fnv_vector(h, &m->layers[l].attn_norm);
        h = fnv_weight(h, &m->layers[l].wk);
        h = fnv_weight(h, &m->layers[l].wv);
    }
    return h;
}
