/*
 * engine.c — see engine.h for the forward pass and the group protocol.
 *
 * The plan a leader broadcasts is a fixed header followed by int32 words: the batch's tokens,
 * its sequences (6 words each) and the concatenated block tables. Most decode plans fit in the
 * first broadcast of PLAN_INLINE_BYTES; a larger plan sends the rest in a second broadcast.
 */
#include "node/engine.h"

#include "common/error.h"
#include "common/kv_geometry.h"
#include "common/log.h"
#include "kernels/quant.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    PLAN_MAGIC = 0x4c505354, /* "TSPL" */
    PLAN_STEP = 1,
    PLAN_STOP = 2,
    PLAN_TASK = 3, /* a group task: n_tokens holds the message bytes, the words the message */
    PLAN_INLINE_BYTES = 4096,
    SEQ_WORDS = 6,
};

typedef struct plan_header {
    uint32_t magic;
    uint32_t type;
    int32_t n_tokens;
    int32_t n_seqs;
    int32_t n_block_ids;
    int32_t block_size;
    int32_t full_logits; /* gather full logits (sampling / log-probs) instead of argmax pairs */
    int32_t n_words;     /* payload words after the header */
} plan_header;

enum { PLAN_INLINE_WORDS = (PLAN_INLINE_BYTES - (int)sizeof(plan_header)) / 4 };

typedef struct layer_weights {
    float *attn_norm; /* backend memory, f32 [dim] */
    float *ffn_norm;
    float *bq, *bk, *bv; /* this rank's rows of the projection biases, or NULL */
    float *bo;           /* the full output bias (added once, after the all-reduce), or NULL */
    ts_weight wq, wk, wv, wo, w_gate, w_up, w_down;
} layer_weights;

typedef struct argmax_pick {
    float value;
    int32_t index; /* global vocabulary id */
} argmax_pick;

struct ts_engine {
    const ts_model *model;
    ts_model_hparams hp;
    ts_backend *be;
    ts_comm *comm;
    ts_engine_options opts;
    ts_shard_plan shard;

    /* weights (backend form) */
    ts_weight embd;   /* vocabulary shard of token_embd */
    ts_weight output; /* vocabulary shard of the output head (aliases embd when tied) */
    float *output_norm;
    layer_weights *layers;
    ts_rope rope;        /* the model's, with freq_factors pointing at rope_factors */
    float *rope_factors; /* host f32 copy of rope_freqs.weight, or NULL */

    /* KV cache */
    ts_kv_layer *kv; /* [n_layers] */
    int32_t n_blocks;

    /* activations (backend memory) */
    float *x, *xb, *q, *k, *v, *att, *o, *gate, *up, *logits, *logits_full;

    /* host buffers */
    int32_t *plan;   /* header + words */
    size_t plan_capacity_words;
    ts_batch_seq *plan_seqs; /* followers: decoded sequences */
    int32_t *picks_index;    /* [max_batch_seqs] */
    float *picks_value;
    argmax_pick *pairs_local;  /* [max_batch_seqs] */
    argmax_pick *pairs_all;    /* [size][max_batch_seqs] */
    float *host_logits_local;  /* [max_batch_seqs][max_vocab_shard] */
    float *host_logits_all;    /* [size][max_batch_seqs][max_vocab_shard] (leader) */
    float *host_logits_full;   /* [max_batch_seqs][n_vocab] (leader) */
    float *host_row;           /* [n_vocab] (leader of a group of one): top log-probs */

    ts_engine_layer_hook layer_hook; /* see ts_engine_set_layer_hook */
    void *layer_hook_user;
    ts_engine_task_handler task_handler; /* see ts_engine_run_task */
    void *task_user;
    struct {
        uint32_t tag;
        ts_engine_task_handler handler;
        void *user;
    } channels[4]; /* ts_engine_set_task_channel */
};

/* ------------------------------------------------------------------ setup */

static void fill_defaults(const ts_model_hparams *hp, const ts_engine_options *in,
                          ts_engine_options *out) {
    *out = in ? *in : (ts_engine_options){0};
    if (out->max_batch_tokens <= 0) out->max_batch_tokens = 512;
    if (out->max_batch_seqs <= 0) out->max_batch_seqs = 256;
    if (out->max_batch_seqs > out->max_batch_tokens) out->max_batch_seqs = out->max_batch_tokens;
    if (out->block_size <= 0) out->block_size = TS_KV_BLOCK_SIZE_DEFAULT;
    if (out->kv_type != TS_DTYPE_F32) out->kv_type = TS_DTYPE_F16;
    (void)hp; /* kv_memory and max_ctx 0 are sized by size_kv_cache */
}

static void *backend_alloc(ts_engine *e, size_t bytes, const char *what, int *rc) {
    if (*rc) return NULL;
    void *p = e->be->alloc(e->be, bytes ? bytes : 1);
    if (!p) *rc = ts_error_wrap(TS_E_NOMEM, "allocating %s (%zu bytes)", what, bytes);
    return p;
}

static void *host_alloc(size_t bytes, int *rc) {
    if (*rc) return NULL;
    void *p = calloc(1, bytes ? bytes : 1);
    if (!p) *rc = ts_error_set(TS_E_NOMEM, "out of memory (%zu bytes of engine buffers)", bytes);
    return p;
}

/* Elements [first, first + count) of a 1-D tensor in backend memory as f32. */
static float *prepare_slice(ts_engine *e, const ts_model_vector *v, int64_t first, int64_t count,
                            const char *what, int *rc) {
    float *host = host_alloc((size_t)count * sizeof(float), rc);
    float *dev = backend_alloc(e, (size_t)count * sizeof(float), what, rc);
    if (!*rc) {
        size_t elem = ts_dtype_row_bytes(v->type, 1); /* f32, f16 or bf16: one element */
        ts_dequantize_row(v->type, (const char *)v->data + (size_t)first * elem, host, count);
        e->be->upload(e->be, dev, host, (size_t)count * sizeof(float));
    }
    free(host);
    return dev;
}

static float *prepare_vector(ts_engine *e, const ts_model_vector *v, const char *what, int *rc) {
    return prepare_slice(e, v, 0, v->n, what, rc);
}

/* A bias, or NULL when the model has none. */
static float *prepare_bias(ts_engine *e, const ts_model_vector *v, int64_t first, int64_t count,
                           const char *what, int *rc) {
    return v->n > 0 ? prepare_slice(e, v, first, count, what, rc) : NULL;
}

static void prepare_weight(ts_engine *e, const ts_weight *host, ts_weight *dst, const char *what,
                           int *rc) {
    if (*rc) return;
    *rc = e->be->weight_prepare(e->be, host, dst);
    if (*rc) *rc = ts_error_wrap(*rc, "preparing %s", what);
}

static int prepare_layer(ts_engine *e, int l) {
    const ts_model_layer *src = &e->model->layers[l];
    layer_weights *dst = &e->layers[l];
    const ts_shard_plan *s = &e->shard;
    int32_t hd = e->hp.head_dim;
    char what[64];
    int rc = 0;
    ts_weight view;
    snprintf(what, sizeof what, "layer %d attn_norm", l);
    dst->attn_norm = prepare_vector(e, &src->attn_norm, what, &rc);
    snprintf(what, sizeof what, "layer %d ffn_norm", l);
    dst->ffn_norm = prepare_vector(e, &src->ffn_norm, what, &rc);
    snprintf(what, sizeof what, "layer %d attention biases", l);
    dst->bq =
        prepare_bias(e, &src->bq, (int64_t)s->head0 * hd, (int64_t)s->n_heads * hd, what, &rc);
    dst->bk = prepare_bias(e, &src->bk, (int64_t)s->kv_head0 * hd, (int64_t)s->n_kv_heads * hd,
                           what, &rc);
    dst->bv = prepare_bias(e, &src->bv, (int64_t)s->kv_head0 * hd, (int64_t)s->n_kv_heads * hd,
                           what, &rc);
    dst->bo = prepare_bias(e, &src->bo, 0, e->hp.dim, what, &rc);
    if (rc) return rc;
#define SHARD(fn, w, a, b, out, name)                                                              \
    do {                                                                                           \
        snprintf(what, sizeof what, "layer %d %s", l, name);                                       \
        if (!rc && (rc = fn(&src->w, a, b, &view)) != 0) rc = ts_error_wrap(rc, "%s", what);    \
        prepare_weight(e, &view, &dst->out, what, &rc);                                            \
    } while (0)
    SHARD(ts_weight_rows, wq, (int64_t)s->head0 * hd, (int64_t)s->n_heads * hd, wq, "attn_q");
    SHARD(ts_weight_rows, wk, (int64_t)s->kv_head0 * hd, (int64_t)s->n_kv_heads * hd, wk, "attn_k");
    SHARD(ts_weight_rows, wv, (int64_t)s->kv_head0 * hd, (int64_t)s->n_kv_heads * hd, wv, "attn_v");
    SHARD(ts_weight_cols, wo, (int64_t)s->head0 * hd, (int64_t)s->n_heads * hd, wo, "attn_output");
    SHARD(ts_weight_rows, w_gate, s->ff0, s->n_ff, w_gate, "ffn_gate");
    SHARD(ts_weight_rows, w_up, s->ff0, s->n_ff, w_up, "ffn_up");
    SHARD(ts_weight_cols, w_down, s->ff0, s->n_ff, w_down, "ffn_down");
#undef SHARD
    return rc;
}

/* The automatic KV budget (opts.kv_memory == 0): TS_KV_MEMORY_AUTO (engine.h). */
static size_t auto_kv_memory(ts_engine *e, size_t per_block, int32_t ctx) {
    size_t avail = e->be->memory_free ? e->be->memory_free(e->be) : 0;
    size_t kv = avail ? avail / TS_KV_MEMORY_AUTO_DIVISOR : TS_KV_MEMORY_AUTO_UNKNOWN;
    size_t blocks_per_seq = (size_t)(ctx + e->opts.block_size - 1) / (size_t)e->opts.block_size;
    size_t most = (size_t)e->opts.max_batch_seqs * blocks_per_seq * per_block;
    return kv < most ? kv : most;
}

/* Every rank computes how many KV blocks fit its budget; the group uses the smallest count so
 * that block ids mean the same on every rank. Without --ctx the context is the model's, shortened
 * (with a warning) to what the KV memory holds; an explicit --ctx that does not fit is an error. */
static int size_kv_cache(ts_engine *e) {
    ts_engine_options *o = &e->opts;
    size_t per_layer_block =
        ts_kv_block_bytes(o->kv_type, o->block_size, e->hp.head_dim, e->shard.n_kv_heads);
    size_t per_block = 2 * (size_t)e->hp.n_layers * per_layer_block;
    bool auto_ctx = o->max_ctx <= 0;
    int32_t ctx = auto_ctx ? e->hp.n_ctx_train : o->max_ctx;
    if (o->kv_memory == 0) o->kv_memory = auto_kv_memory(e, per_block, ctx);
    int64_t fit = (int64_t)(o->kv_memory / per_block);
    int32_t need = (int32_t)(((int64_t)ctx + o->block_size - 1) / o->block_size);
    int32_t mine = fit > INT32_MAX / 2 ? INT32_MAX / 2 : (int32_t)fit;
    int32_t *all = malloc((size_t)e->comm->size * sizeof *all);
    if (!all) return ts_error_set(TS_E_NOMEM, "out of memory");
    int rc = ts_comm_allgather(e->comm, &mine, all, sizeof mine);
    int32_t n = mine;
    for (int r = 0; !rc && r < e->comm->size; r++)
        if (all[r] < n) n = all[r];
    free(all);
    if (rc) return ts_error_wrap(rc, "agreeing on the KV cache size");
    if (n < need && auto_ctx && n >= 1) {
        TS_WARN("the model's context of %d tokens does not fit the KV cache memory (%zu bytes per "
                "rank, %d blocks of %d tokens): serving a context of %d tokens; raise --kv-memory "
                "for more",
                ctx, o->kv_memory, n, o->block_size, n * o->block_size);
        ctx = n * o->block_size;
        need = n;
    }
    if (n < need)
        return ts_error_set(TS_E_INVALID,
                            "KV cache memory %zu bytes per rank holds %d blocks of %d tokens, but "
                            "one sequence of the context length %d needs %d: raise --kv-memory "
                            "(to at least %zu bytes) or lower --ctx",
                            o->kv_memory, n, o->block_size, ctx, need, (size_t)need * per_block);
    o->max_ctx = ctx;
    e->n_blocks = n;
    return TS_OK;
}

int ts_engine_create(const ts_model *m, ts_backend *be, ts_comm *comm,
                     const ts_engine_options *opts, ts_engine **out) {
    *out = NULL;
    ts_engine *e = calloc(1, sizeof *e);
    if (!e) return ts_error_set(TS_E_NOMEM, "out of memory");
    e->model = m;
    e->hp = m->hp;
    e->be = be;
    e->comm = comm;
    fill_defaults(&m->hp, opts, &e->opts);
    ts_engine_options *o = &e->opts;
    int rc = ts_shard_plan_make(m, comm->rank, comm->size, &e->shard);
    if (rc) goto fail;
    if (o->max_ctx > (1 << 24) || (o->max_ctx <= 0 && m->hp.n_ctx_train > (1 << 24))) {
        rc = ts_error_set(TS_E_INVALID, "context length %d out of range (at most %d)",
                          o->max_ctx > 0 ? o->max_ctx : m->hp.n_ctx_train, 1 << 24);
        goto fail;
    }
    const ts_shard_plan *s = &e->shard;
    const ts_model_hparams *hp = &e->hp;

    /* weights */
    e->layers = calloc((size_t)hp->n_layers, sizeof *e->layers);
    if (!e->layers) {
        rc = ts_error_set(TS_E_NOMEM, "out of memory");
        goto fail;
    }
    ts_weight view;
    rc = ts_weight_rows(&m->token_embd, s->vocab0, s->n_vocab, &view);
    prepare_weight(e, &view, &e->embd, "token_embd", &rc);
    if (hp->tied_output) {
        e->output = e->embd;
        e->output.owned = NULL; /* released once, through embd */
    } else {
        if (!rc) rc = ts_weight_rows(&m->output, s->vocab0, s->n_vocab, &view);
        prepare_weight(e, &view, &e->output, "output", &rc);
    }
    e->output_norm = prepare_vector(e, &m->output_norm, "output_norm", &rc);
    if (m->rope_freqs.n > 0) {
        e->rope_factors = host_alloc((size_t)m->rope_freqs.n * sizeof(float), &rc);
        if (!rc)
            ts_dequantize_row(m->rope_freqs.type, m->rope_freqs.data, e->rope_factors,
                              m->rope_freqs.n);
    }
    e->rope = ts_model_rope(m, e->rope_factors);
    for (int l = 0; !rc && l < hp->n_layers; l++) rc = prepare_layer(e, l);
    if (rc) goto fail;

    /* KV cache */
    rc = size_kv_cache(e);
    if (rc) goto fail;
    e->kv = calloc((size_t)hp->n_layers, sizeof *e->kv);
    if (!e->kv) {
        rc = ts_error_set(TS_E_NOMEM, "out of memory");
        goto fail;
    }
    size_t pool_bytes = (size_t)e->n_blocks *
                        ts_kv_block_bytes(o->kv_type, o->block_size, hp->head_dim, s->n_kv_heads);
    for (int l = 0; l < hp->n_layers; l++) {
        ts_kv_layer *kv = &e->kv[l];
        kv->type = o->kv_type;
        kv->n_blocks = e->n_blocks;
        kv->block_size = o->block_size;
        kv->n_kv_heads = s->n_kv_heads;
        kv->head_dim = hp->head_dim;
        kv->k = backend_alloc(e, pool_bytes, "the KV cache", &rc);
        kv->v = backend_alloc(e, pool_bytes, "the KV cache", &rc);
    }

    /* activations */
    size_t T = (size_t)o->max_batch_tokens, S = (size_t)o->max_batch_seqs;
    size_t q_width = (size_t)s->n_heads * (size_t)hp->head_dim;
    size_t kv_width = (size_t)s->n_kv_heads * (size_t)hp->head_dim;
    size_t f = sizeof(float);
    e->x = backend_alloc(e, T * (size_t)hp->dim * f, "activations", &rc);
    e->xb = backend_alloc(e, T * (size_t)hp->dim * f, "activations", &rc);
    e->o = backend_alloc(e, T * (size_t)hp->dim * f, "activations", &rc);
    e->q = backend_alloc(e, T * q_width * f, "activations", &rc);
    e->att = backend_alloc(e, T * q_width * f, "activations", &rc);
    e->k = backend_alloc(e, T * kv_width * f, "activations", &rc);
    e->v = backend_alloc(e, T * kv_width * f, "activations", &rc);
    e->gate = backend_alloc(e, T * (size_t)s->n_ff * f, "activations", &rc);
    e->up = backend_alloc(e, T * (size_t)s->n_ff * f, "activations", &rc);
    e->logits = backend_alloc(e, S * (size_t)s->n_vocab * f, "logits", &rc);
    bool leader = comm->rank == 0;
    if (leader && comm->size == 1) e->host_row = host_alloc((size_t)hp->n_vocab * f, &rc);
    if (leader && comm->size > 1)
        e->logits_full = backend_alloc(e, S * (size_t)hp->n_vocab * f, "logits", &rc);

    /* host buffers */
    int32_t max_blocks_per_seq = (o->max_ctx + o->block_size - 1) / o->block_size;
    e->plan_capacity_words = T + S * SEQ_WORDS + S * (size_t)max_blocks_per_seq;
    e->plan = host_alloc(sizeof(plan_header) + e->plan_capacity_words * 4, &rc);
    e->plan_seqs = host_alloc(S * sizeof *e->plan_seqs, &rc);
    e->picks_index = host_alloc(S * sizeof *e->picks_index, &rc);
    e->picks_value = host_alloc(S * sizeof *e->picks_value, &rc);
    e->pairs_local = host_alloc(S * sizeof *e->pairs_local, &rc);
    e->pairs_all = host_alloc((size_t)comm->size * S * sizeof *e->pairs_all, &rc);
    if (comm->size > 1) {
        size_t shard = (size_t)s->max_vocab_shard;
        e->host_logits_local = host_alloc(S * shard * f, &rc);
        e->host_logits_all = host_alloc((size_t)comm->size * S * shard * f, &rc);
        if (leader) e->host_logits_full = host_alloc(S * (size_t)hp->n_vocab * f, &rc);
    }
    if (rc) goto fail;
    *out = e;
    return TS_OK;
fail:
    ts_engine_destroy(e);
    return rc;
}

static void release_weight(ts_engine *e, ts_weight *w) {
    if (w->owned) e->be->weight_release(e->be, w);
}

void ts_engine_destroy(ts_engine *e) {
    if (!e) return;
    ts_backend *be = e->be;
    if (e->layers) {
        for (int l = 0; l < e->hp.n_layers; l++) {
            layer_weights *w = &e->layers[l];
            be->free(be, w->attn_norm);
            be->free(be, w->ffn_norm);
            be->free(be, w->bq);
            be->free(be, w->bk);
            be->free(be, w->bv);
            be->free(be, w->bo);
            release_weight(e, &w->wq);
            release_weight(e, &w->wk);
            release_weight(e, &w->wv);
            release_weight(e, &w->wo);
            release_weight(e, &w->w_gate);
            release_weight(e, &w->w_up);
            release_weight(e, &w->w_down);
        }
        free(e->layers);
    }
    release_weight(e, &e->embd);
    release_weight(e, &e->output);
    be->free(be, e->output_norm);
    if (e->kv) {
        for (int l = 0; l < e->hp.n_layers; l++) {
            be->free(be, e->kv[l].k);
            be->free(be, e->kv[l].v);
        }
        free(e->kv);
    }
    float *bufs[] = {e->x, e->xb, e->q, e->k, e->v, e->att, e->o, e->gate, e->up, e->logits,
                     e->logits_full};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->free(be, bufs[i]);
    free(e->rope_factors);
    free(e->plan);
    free(e->plan_seqs);
    free(e->picks_index);
    free(e->picks_value);
    free(e->pairs_local);
    free(e->pairs_all);
    free(e->host_logits_local);
    free(e->host_logits_all);
    free(e->host_logits_full);
    free(e->host_row);
    free(e);
}

const ts_model_hparams *ts_engine_hparams(const ts_engine *e) { return &e->hp; }
const ts_shard_plan *ts_engine_shard(const ts_engine *e) { return &e->shard; }
const ts_engine_options *ts_engine_options_get(const ts_engine *e) { return &e->opts; }
int32_t ts_engine_n_blocks(const ts_engine *e) { return e->n_blocks; }
ts_comm *ts_engine_comm(const ts_engine *e) { return e->comm; }
ts_backend *ts_engine_backend(const ts_engine *e) { return e->be; }

/* ------------------------------------------------------------------ validation */

int ts_engine_check_batch(const ts_engine *e, const ts_batch *b) {
    const ts_engine_options *o = &e->opts;
    if (b->n_tokens < 1 || b->n_tokens > o->max_batch_tokens)
        return ts_error_set(TS_E_INVALID, "batch of %d tokens (limit %d)", b->n_tokens,
                            o->max_batch_tokens);
    if (b->n_seqs < 1 || b->n_seqs > o->max_batch_seqs)
        return ts_error_set(TS_E_INVALID, "batch of %d sequences (limit %d)", b->n_seqs,
                            o->max_batch_seqs);
    if (b->block_size != o->block_size)
        return ts_error_set(TS_E_INVALID, "batch block size %d, engine %d", b->block_size,
                            o->block_size);
    int32_t row = 0;
    for (int32_t i = 0; i < b->n_seqs; i++) {
        const ts_batch_seq *s = &b->seqs[i];
        if (s->row0 != row || s->n_rows < 1 || row + s->n_rows > b->n_tokens)
            return ts_error_set(TS_E_INVALID, "batch sequence %d: rows [%d, +%d) out of order", i,
                                s->row0, s->n_rows);
        if (s->pos0 < 0 || (int64_t)s->pos0 + s->n_rows > o->max_ctx)
            return ts_error_set(TS_E_INVALID, "batch sequence %d: positions %d..%d beyond the "
                                "context length %d", i, s->pos0, s->pos0 + s->n_rows - 1,
                                o->max_ctx);
        if (s->block0 < 0 || s->n_blocks < 0 || (int64_t)s->block0 + s->n_blocks > b->n_block_ids ||
            (int64_t)s->n_blocks * b->block_size < (int64_t)s->pos0 + s->n_rows)
            return ts_error_set(TS_E_INVALID, "batch sequence %d: block table too short", i);
        row += s->n_rows;
    }
    if (row != b->n_tokens)
        return ts_error_set(TS_E_INVALID, "batch sequences cover %d of %d tokens", row, b->n_tokens);
    for (int32_t i = 0; i < b->n_block_ids; i++)
        if (b->block_ids[i] < 0 || b->block_ids[i] >= e->n_blocks)
            return ts_error_set(TS_E_INVALID, "block id %d outside the pool of %d", b->block_ids[i],
                                e->n_blocks);
    for (int32_t i = 0; i < b->n_tokens; i++)
        if (b->tokens[i] < 0 || b->tokens[i] >= e->hp.n_vocab)
            return ts_error_set(TS_E_INVALID, "token id %d outside the vocabulary of %d",
                                b->tokens[i], e->hp.n_vocab);
    return TS_OK;
}

/* ------------------------------------------------------------------ forward pass */

static int forward_layers(ts_engine *e, const ts_batch *b) {
    ts_backend *be = e->be;
    const ts_model_hparams *hp = &e->hp;
    const ts_shard_plan *s = &e->shard;
    int32_t n = b->n_tokens;
    size_t n_x = (size_t)n * (size_t)hp->dim;
    float scale = 1.0f / sqrtf((float)hp->head_dim);
    int rc = be->set_batch(be, b);
    if (rc) return rc;
    be->embed(be, e->x, &e->embd, s->vocab0);
    rc = ts_comm_allreduce_sum_f32(e->comm, e->x, n_x);
    for (int l = 0; !rc && l < hp->n_layers; l++) {
        const layer_weights *w = &e->layers[l];
        be->rmsnorm(be, e->xb, e->x, w->attn_norm, n, hp->dim, hp->rms_eps);
        be->matmul(be, e->q, e->xb, n, &w->wq);
        be->matmul(be, e->k, e->xb, n, &w->wk);
        be->matmul(be, e->v, e->xb, n, &w->wv);
        if (w->bq) {
            be->add_bias(be, e->q, w->bq, n, s->n_heads * hp->head_dim);
            be->add_bias(be, e->k, w->bk, n, s->n_kv_heads * hp->head_dim);
            be->add_bias(be, e->v, w->bv, n, s->n_kv_heads * hp->head_dim);
        }
        be->rope(be, e->q, s->n_heads, hp->head_dim, &e->rope);
        be->rope(be, e->k, s->n_kv_heads, hp->head_dim, &e->rope);
        be->kv_store(be, &e->kv[l], e->k, e->v);
        if (e->layer_hook) e->layer_hook(e->layer_hook_user, b, l);
        be->attention(be, e->att, e->q, &e->kv[l], s->n_heads, scale);
        be->matmul(be, e->o, e->att, n, &w->wo);
        rc = ts_comm_allreduce_sum_f32(e->comm, e->o, n_x);
        if (rc) break;
        if (w->bo) be->add_bias(be, e->o, w->bo, n, hp->dim);
        be->add(be, e->x, e->o, (int64_t)n_x);
        be->rmsnorm(be, e->xb, e->x, w->ffn_norm, n, hp->dim, hp->rms_eps);
        be->matmul(be, e->gate, e->xb, n, &w->w_gate);
        be->matmul(be, e->up, e->xb, n, &w->w_up);
        be->silu_mul(be, e->gate, e->up, (int64_t)n * s->n_ff);
        be->matmul(be, e->o, e->gate, n, &w->w_down);
        rc = ts_comm_allreduce_sum_f32(e->comm, e->o, n_x);
        if (rc) break;
        be->add(be, e->x, e->o, (int64_t)n_x);
    }
    if (rc) return ts_error_wrap(rc, "forward pass");
    return TS_OK;
}

static int32_t count_outputs(const ts_batch *b) {
    int32_t n = 0;
    for (int32_t i = 0; i < b->n_seqs; i++) n += b->seqs[i].want_logits;
    return n;
}

/* Greedy rows across ranks: each rank's best (value, id) of its vocabulary shard, gathered;
 * the leader keeps the largest value, the lowest id on ties (ranks hold increasing ids). */
static int pick_greedy_group(ts_engine *e, int32_t n_out, int32_t *tokens) {
    ts_comm *c = e->comm;
    e->be->argmax(e->be, e->logits, n_out, e->shard.n_vocab, e->picks_index, e->picks_value);
    for (int32_t j = 0; j < n_out; j++) {
        e->pairs_local[j].value = e->picks_value[j];
        e->pairs_local[j].index = e->picks_index[j] + e->shard.vocab0;
    }
    size_t bytes = (size_t)n_out * sizeof(argmax_pick);
    int rc = ts_comm_allgather(c, e->pairs_local, e->pairs_all, bytes);
    if (rc || c->rank != 0) return rc;
    for (int32_t j = 0; j < n_out; j++) {
        argmax_pick best = e->pairs_all[j];
        for (int r = 1; r < c->size; r++) {
            argmax_pick p = e->pairs_all[(size_t)r * (size_t)n_out + (size_t)j];
            if (p.value > best.value) best = p;
        }
        tokens[j] = best.index;
    }
    return TS_OK;
}

/* Sampled rows across ranks: gather every rank's logits shard (padded to the largest shard) on
 * the host, reassemble full rows on the leader and sample there. */
static int pick_sampled_group(ts_engine *e, int32_t n_out, const ts_sampling *params,
                              int32_t *tokens, float *logprobs, float *logits_out) {
    ts_comm *c = e->comm;
    const ts_shard_plan *s = &e->shard;
    size_t shard = (size_t)s->max_vocab_shard;
    size_t vocab_local = (size_t)s->n_vocab;
    for (int32_t j = 0; j < n_out; j++)
        e->be->download(e->be, e->host_logits_local + (size_t)j * shard,
                        e->logits + (size_t)j * vocab_local, vocab_local * sizeof(float));
    int rc = ts_comm_allgather(c, e->host_logits_local, e->host_logits_all,
                               (size_t)n_out * shard * sizeof(float));
    if (rc || c->rank != 0) return rc;
    size_t vocab = (size_t)e->hp.n_vocab;
    for (int r = 0; r < c->size; r++) {
        int64_t v0, v1;
        ts_shard_split(e->hp.n_vocab, c->size, r, 1, &v0, &v1);
        for (int32_t j = 0; j < n_out; j++)
            memcpy(e->host_logits_full + (size_t)j * vocab + (size_t)v0,
                   e->host_logits_all + ((size_t)r * (size_t)n_out + (size_t)j) * shard,
                   (size_t)(v1 - v0) * sizeof(float));
    }
    if (logits_out) {
        memcpy(logits_out, e->host_logits_full, (size_t)n_out * vocab * sizeof(float));
        return TS_OK;
    }
    e->be->upload(e->be, e->logits_full, e->host_logits_full, (size_t)n_out * vocab * sizeof(float));
    e->be->sample(e->be, e->logits_full, n_out, e->hp.n_vocab, params, tokens, logprobs);
    return TS_OK;
}

/* One step. full_logits gathers whole rows (sampling, log-probs, logits_out); logits_out
 * (leader, may be NULL) then receives them instead of tokens being picked. */
static int forward(ts_engine *e, const ts_batch *b, bool full_logits, const ts_sampling *params,
                   int32_t *tokens, float *logprobs, float *logits_out) {
    int rc = forward_layers(e, b);
    if (rc) return rc;
    int32_t n_out = count_outputs(b);
    if (n_out == 0) return e->be->sync(e->be);
    ts_backend *be = e->be;
    be->logit_rows(be, e->o, e->x, e->hp.dim);
    be->rmsnorm(be, e->xb, e->o, e->output_norm, n_out, e->hp.dim, e->hp.rms_eps);
    be->matmul(be, e->logits, e->xb, n_out, &e->output);
    if (e->comm->size == 1) {
        if (logits_out)
            be->download(be, logits_out, e->logits, (size_t)n_out * e->hp.n_vocab * sizeof(float));
        else if (full_logits)
            be->sample(be, e->logits, n_out, e->hp.n_vocab, params, tokens, logprobs);
        else be->argmax(be, e->logits, n_out, e->hp.n_vocab, tokens, e->picks_value);
        return be->sync(be);
    }
    rc = full_logits ? pick_sampled_group(e, n_out, params, tokens, logprobs, logits_out)
                     : pick_greedy_group(e, n_out, tokens);
    if (rc) return ts_error_wrap(rc, "picking tokens");
    return be->sync(be);
}

/* ------------------------------------------------------------------ group protocol */

static bool needs_full_logits(const ts_sampling *params, int32_t n_out, const float *logprobs) {
    if (logprobs) return true;
    for (int32_t j = 0; j < n_out; j++)
        if (params[j].temperature > 0.0f || params[j].repetition_penalty != 1.0f ||
            params[j].n_bias > 0)
            return true;
    return false;
}

/* Broadcasts the plan from the leader: the header and the first words in one message, the rest
 * (large prefill plans) in a second. */
static int broadcast_plan(ts_engine *e) {
    int rc = ts_comm_broadcast(e->comm, e->plan, PLAN_INLINE_BYTES, 0);
    if (rc) return rc;
    const plan_header *h = (const plan_header *)e->plan;
    if (h->magic != PLAN_MAGIC)
        return ts_error_set(TS_E_INTERNAL, "corrupt step plan from the group leader");
    if (h->n_words > PLAN_INLINE_WORDS) {
        if ((size_t)h->n_words > e->plan_capacity_words)
            return ts_error_set(TS_E_INTERNAL, "step plan of %d words exceeds %zu", h->n_words,
                                e->plan_capacity_words);
        int32_t *words = (int32_t *)((plan_header *)e->plan + 1);
        rc = ts_comm_broadcast(e->comm, words + PLAN_INLINE_WORDS,
                               (size_t)(h->n_words - PLAN_INLINE_WORDS) * 4, 0);
    }
    return rc;
}

static int step(ts_engine *e, const ts_batch *b, bool full, const ts_sampling *params,
                int32_t *tokens, float *logprobs, float *logits_out) {
    TS_ASSERT(e->comm->rank == 0);
    int rc = ts_engine_check_batch(e, b);
    if (rc) return rc;
    if (e->comm->size > 1) {
        plan_header *h = (plan_header *)e->plan;
        int32_t *w = (int32_t *)(h + 1);
        size_t n_words = (size_t)b->n_tokens + (size_t)b->n_seqs * SEQ_WORDS + (size_t)b->n_block_ids;
        if (n_words > e->plan_capacity_words)
            return ts_error_set(TS_E_INVALID, "step plan too large");
        *h = (plan_header){PLAN_MAGIC, PLAN_STEP, b->n_tokens, b->n_seqs, b->n_block_ids,
                           b->block_size, full, (int32_t)n_words};
        memcpy(w, b->tokens, (size_t)b->n_tokens * 4);
        w += b->n_tokens;
        for (int32_t i = 0; i < b->n_seqs; i++, w += SEQ_WORDS) {
            const ts_batch_seq *s = &b->seqs[i];
            w[0] = s->row0;
            w[1] = s->n_rows;
            w[2] = s->pos0;
            w[3] = s->block0;
            w[4] = s->n_blocks;
            w[5] = s->want_logits;
        }
        memcpy(w, b->block_ids, (size_t)b->n_block_ids * 4);
        rc = broadcast_plan(e);
        if (rc) return ts_error_wrap(rc, "sending the step to the group");
    }
    return forward(e, b, full, params, tokens, logprobs, logits_out);
}

int ts_engine_step(ts_engine *e, const ts_batch *b, const ts_sampling *params, int32_t *tokens,
                   float *logprobs) {
    bool full = needs_full_logits(params, count_outputs(b), logprobs);
    return step(e, b, full, params, tokens, logprobs, NULL);
}

/* The n most probable ids of row and their log softmax, computed as ts_ref_logprob does (the
 * value the sampler reports for a picked token): most probable first, ties by lower id. */
static void top_of_row(const float *row, int32_t V, int32_t n, int32_t *ids, float *lps) {
    int32_t arg = 0;
    for (int32_t j = 1; j < V; j++)
        if (row[j] > row[arg]) arg = j;
    float max = row[arg];
    double sum = 0.0;
    for (int32_t j = 0; j < V; j++)
        sum += exp((double)row[j] - (double)max);
    int32_t k = 0; /* ids[0 .. k) sorted by row value, descending */
    for (int32_t j = 0; j < V; j++) {
        if (k == n && !(row[j] > row[ids[n - 1]])) continue;
        int32_t i = k < n ? k++ : n - 1;
        while (i > 0 && row[j] > row[ids[i - 1]]) {
            ids[i] = ids[i - 1];
            i--;
        }
        ids[i] = j;
    }
    for (int32_t i = 0; i < k; i++)
        lps[i] = (float)((double)(row[ids[i]] - max) - log(sum));
}

int ts_engine_step_top(ts_engine *e, const ts_batch *b, const ts_sampling *params, int32_t *tokens,
                       float *logprobs, const int32_t *n_top, int32_t *top_ids,
                       float *top_logprobs) {
    TS_ASSERT(!n_top || logprobs);
    bool full = needs_full_logits(params, count_outputs(b), logprobs);
    int rc = step(e, b, full, params, tokens, logprobs, NULL);
    if (rc || !n_top) return rc;
    const int32_t V = e->hp.n_vocab, n_out = count_outputs(b);
    for (int32_t j = 0; j < n_out; j++) {
        int32_t n = n_top[j] < TS_ENGINE_MAX_TOP_LOGPROBS ? n_top[j] : TS_ENGINE_MAX_TOP_LOGPROBS;
        if (n <= 0) continue;
        const float *row = e->host_logits_full + (size_t)j * (size_t)V; /* gathered: a group */
        if (e->comm->size == 1) {
            e->be->download(e->be, e->host_row, e->logits + (size_t)j * (size_t)V,
                            (size_t)V * sizeof(float));
            row = e->host_row;
        }
        top_of_row(row, V, n, top_ids + (size_t)j * TS_ENGINE_MAX_TOP_LOGPROBS,
                   top_logprobs + (size_t)j * TS_ENGINE_MAX_TOP_LOGPROBS);
    }
    return TS_OK;
}

int ts_engine_step_logits(ts_engine *e, const ts_batch *b, float *logits) {
    return step(e, b, true, NULL, NULL, NULL, logits);
}

int ts_engine_stop_group(ts_engine *e) {
    if (e->comm->size == 1) return TS_OK;
    plan_header *h = (plan_header *)e->plan;
    *h = (plan_header){PLAN_MAGIC, PLAN_STOP, 0, 0, 0, 0, 0, 0};
    return broadcast_plan(e);
}

/* ------------------------------------------------------------------ group tasks */

void ts_engine_set_task_handler(ts_engine *e, ts_engine_task_handler handler, void *user) {
    e->task_handler = handler;
    e->task_user = user;
}

size_t ts_engine_task_max_bytes(const ts_engine *e) { return e->plan_capacity_words * 4; }

void ts_engine_set_task_channel(ts_engine *e, uint32_t tag, ts_engine_task_handler handler,
                                void *user) {
    int free_i = -1;
    for (int i = 0; i < 4; i++) {
        if (e->channels[i].handler && e->channels[i].tag == tag)
            free_i = i;
        else if (!e->channels[i].handler && free_i < 0)
            free_i = i;
    }
    TS_ASSERT(free_i >= 0); /* a handful of subsystems, known at build time */
    e->channels[free_i].tag = tag;
    e->channels[free_i].handler = handler;
    e->channels[free_i].user = user;
}

static int32_t run_handler(ts_engine *e, const void *msg, size_t bytes) {
    if (bytes >= 4) {
        uint32_t tag;
        memcpy(&tag, msg, 4);
        for (int i = 0; i < 4; i++)
            if (e->channels[i].handler && e->channels[i].tag == tag)
                return e->channels[i].handler(e->channels[i].user, e, msg, bytes);
    }
    if (!e->task_handler)
        return ts_error_set(TS_E_UNSUPPORTED, "rank %d has no group task handler", e->comm->rank);
    return e->task_handler(e->task_user, e, msg, bytes);
}

/* Every rank's result to every rank: *first_code is the first failing rank's code (0 when
 * all succeeded) and *failed_rank that rank. Returns the collective's own error only. */
static int gather_task_results(ts_engine *e, int32_t mine, int32_t *first_code, int *failed_rank) {
    int32_t *all = malloc((size_t)e->comm->size * sizeof *all);
    if (!all) return ts_error_set(TS_E_NOMEM, "out of memory");
    int rc = ts_comm_allgather(e->comm, &mine, all, sizeof mine);
    *first_code = 0;
    *failed_rank = -1;
    for (int r = 0; !rc && r < e->comm->size && !*first_code; r++)
        if (all[r]) {
            *first_code = all[r];
            *failed_rank = r;
        }
    free(all);
    return rc ? ts_error_wrap(rc, "gathering a group task's results") : TS_OK;
}

int ts_engine_run_task(ts_engine *e, const void *msg, size_t bytes) {
    TS_ASSERT(e->comm->rank == 0);
    if (bytes > ts_engine_task_max_bytes(e))
        return ts_error_set(TS_E_INVALID, "group task of %zu bytes (limit %zu)", bytes,
                            ts_engine_task_max_bytes(e));
    if (e->comm->size > 1) {
        plan_header *h = (plan_header *)e->plan;
        int32_t n_words = (int32_t)((bytes + 3) / 4);
        *h = (plan_header){PLAN_MAGIC, PLAN_TASK, (int32_t)bytes, 0, 0, 0, 0, n_words};
        if (bytes) memcpy(h + 1, msg, bytes);
        int rc = broadcast_plan(e);
        if (rc) return ts_error_wrap(rc, "sending a group task");
    }
    int32_t mine = run_handler(e, msg, bytes);
    if (e->comm->size == 1) return mine;
    char message[512];
    snprintf(message, sizeof message, "%s", mine ? ts_error_message() : "");
    int32_t first;
    int failed_rank;
    int rc = gather_task_results(e, mine, &first, &failed_rank);
    if (rc) return rc;
    if (mine) return ts_error_set(mine, "%s", message);
    if (first)
        return ts_error_set(first, "group task failed on rank %d (%s; its log says why)",
                            failed_rank, ts_error_name(first));
    return TS_OK;
}

/* A follower's side of ts_engine_run_task. A task that failed is the leader's to handle; only a
 * broken collective ends the group. */
static int follow_task(ts_engine *e, const plan_header *h) {
    if (h->n_tokens < 0 || (size_t)h->n_tokens > (size_t)h->n_words * 4)
        return ts_error_set(TS_E_INTERNAL, "malformed group task from the group leader");
    int32_t mine = run_handler(e, h + 1, (size_t)h->n_tokens);
    if (mine)
        ts_log(TS_LOG_ERROR, NULL, "group task failed on rank %d: %s", e->comm->rank,
               ts_error_message());
    int32_t first;
    int failed_rank;
    return gather_task_results(e, mine, &first, &failed_rank);
}

int ts_engine_follow(ts_engine *e) {
    TS_ASSERT(e->comm->rank != 0);
    for (;;) {
        int rc = broadcast_plan(e);
        if (rc) return ts_error_wrap(rc, "waiting for the group leader");
        const plan_header *h = (const plan_header *)e->plan;
        if (h->type == PLAN_STOP) return TS_OK;
        if (h->type == PLAN_TASK) {
            rc = follow_task(e, h);
            if (rc) return rc;
            continue;
        }
        const int32_t *w = (const int32_t *)(h + 1);
        if (h->n_seqs < 0 || h->n_seqs > e->opts.max_batch_seqs || h->n_tokens < 0 ||
            h->n_block_ids < 0 ||
            (int64_t)h->n_tokens + (int64_t)h->n_seqs * SEQ_WORDS + h->n_block_ids != h->n_words)
            return ts_error_set(TS_E_INTERNAL, "malformed step plan from the group leader");
        ts_batch b = {.n_tokens = h->n_tokens, .n_seqs = h->n_seqs, .tokens = w,
                      .seqs = e->plan_seqs, .n_block_ids = h->n_block_ids,
                      .block_size = h->block_size};
        w += h->n_tokens;
        for (int32_t i = 0; i < h->n_seqs; i++, w += SEQ_WORDS)
            e->plan_seqs[i] = (ts_batch_seq){w[0], w[1], w[2], w[3], w[4], w[5] != 0};
        b.block_ids = w;
        rc = ts_engine_check_batch(e, &b);
        if (rc) return ts_error_wrap(rc, "step plan from the group leader");
        rc = forward(e, &b, h->full_logits != 0, NULL, e->picks_index, NULL, NULL);
        if (rc) return rc;
    }
}

/* ------------------------------------------------------------------ KV cache access */

void ts_engine_set_layer_hook(ts_engine *e, ts_engine_layer_hook hook, void *user) {
    e->layer_hook = hook;
    e->layer_hook_user = user;
}

/* One head range of one block is contiguous in a pool ([block][kv_head][slot][head_dim]), so a
 * block moves in one copy per pool. Checks a (layer, blocks, heads) range of this rank's KV cache
 * and gives its geometry: the bytes of one block (all heads) and of the range's heads in it. */
static int kv_geometry(const ts_engine *e, int32_t layer, const int32_t *block_ids,
                       int32_t n_blocks, int32_t head0, int32_t n_heads, size_t *block_bytes,
                       size_t *part) {
    if (layer < 0 || layer >= e->hp.n_layers)
        return ts_error_set(TS_E_INVALID, "KV layer %d of %d", layer, e->hp.n_layers);
    if (head0 < 0 || n_heads < 1 || head0 + n_heads > e->shard.n_kv_heads)
        return ts_error_set(TS_E_INVALID, "KV heads [%d, %d) outside this rank's %d", head0,
                            head0 + n_heads, e->shard.n_kv_heads);
    for (int32_t i = 0; i < n_blocks; i++)
        if (block_ids[i] < 0 || block_ids[i] >= e->n_blocks)
            return ts_error_set(TS_E_INVALID, "block id %d outside the pool of %d", block_ids[i],
                                e->n_blocks);
    const ts_kv_layer *kv = &e->kv[layer];
    size_t head_bytes = ts_kv_block_bytes(kv->type, kv->block_size, kv->head_dim, 1);
    *block_bytes = head_bytes * (size_t)kv->n_kv_heads;
    *part = head_bytes * (size_t)n_heads;
    return TS_OK;
}

/* kv_geometry, then waits for the backend so that host copies see finished KV stores. */
static int kv_range(const ts_engine *e, int32_t layer, const int32_t *block_ids, int32_t n_blocks,
                    int32_t head0, int32_t n_heads, size_t *block_bytes, size_t *part) {
    int rc = kv_geometry(e, layer, block_ids, n_blocks, head0, n_heads, block_bytes, part);
    return rc ? rc : e->be->sync(e->be);
}

/* Where heads [head0, ..) of block block_id start in a layer's K (or V) pool, given
 * kv_geometry's sizes: part bytes hold n_heads heads. */
static size_t kv_offset(size_t block_bytes, size_t part, int32_t n_heads, int32_t head0,
                        int32_t block_id) {
    return (size_t)block_id * block_bytes + part / (size_t)n_heads * (size_t)head0;
}

int ts_engine_kv_block_span(ts_engine *e, int32_t layer, int32_t block_id, int32_t head0,
                            int32_t n_heads, void **k, void **v, size_t *bytes) {
    size_t block_bytes = 0, part = 0;
    int rc = kv_geometry(e, layer, &block_id, 1, head0, n_heads, &block_bytes, &part);
    if (rc) return rc;
    const ts_kv_layer *kv = &e->kv[layer];
    size_t off = kv_offset(block_bytes, part, n_heads, head0, block_id);
    *k = (char *)kv->k + off;
    *v = (char *)kv->v + off;
    *bytes = part;
    return TS_OK;
}

int ts_engine_kv_read(ts_engine *e, int32_t layer, const int32_t *block_ids, int32_t n_blocks,
                      int32_t head0, int32_t n_heads, void *k_host, void *v_host) {
    size_t block_bytes, part;
    int rc = kv_range(e, layer, block_ids, n_blocks, head0, n_heads, &block_bytes, &part);
    if (rc) return rc;
    const ts_kv_layer *kv = &e->kv[layer];
    for (int32_t i = 0; i < n_blocks; i++) {
        size_t off = kv_offset(block_bytes, part, n_heads, head0, block_ids[i]);
        e->be->download(e->be, (char *)k_host + (size_t)i * part, (const char *)kv->k + off, part);
        e->be->download(e->be, (char *)v_host + (size_t)i * part, (const char *)kv->v + off, part);
    }
    return TS_OK;
}

int ts_engine_kv_write(ts_engine *e, int32_t layer, const int32_t *block_ids, int32_t n_blocks,
                       int32_t head0, int32_t n_heads, const void *k_host, const void *v_host) {
    size_t block_bytes, part;
    int rc = kv_range(e, layer, block_ids, n_blocks, head0, n_heads, &block_bytes, &part);
    if (rc) return rc;
    const ts_kv_layer *kv = &e->kv[layer];
    for (int32_t i = 0; i < n_blocks; i++) {
        size_t off = kv_offset(block_bytes, part, n_heads, head0, block_ids[i]);
        e->be->upload(e->be, (char *)kv->k + off, (const char *)k_host + (size_t)i * part, part);
        e->be->upload(e->be, (char *)kv->v + off, (const char *)v_host + (size_t)i * part, part);
    }
    return e->be->sync(e->be);
}
