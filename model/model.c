/*
 * llama.c — see llama.h.
 *
 * Loading is validation: the hyper-parameters are read and checked for consistency first
 * (everything positive, heads divisible, RoPE dims even and within a head, products that fit
 * in 32 bits), then every tensor is looked up by name and its type and shape compared with what
 * the hyper-parameters imply. Shapes compare all four GGML dimensions with unused ones = 1, so a
 * norm stored as [dim] or [dim, 1] is the same thing.
 *
 * The layer array is the only allocation and its length comes from the file: it is allocated
 * only once the file is known to hold at least that many tensors.
 */
#include "model/llama.h"

#include "common/error.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- hyper-parameters ---- */

/* Reads a positive int32 hyper-parameter; `def` is used when absent and not required. */
static int get_count(const ts_gguf *g, const char *key, bool required, int32_t def, int32_t *out) {
    uint32_t v;
    int rc = ts_gguf_get_u32(g, key, &v);
    if (rc == TS_E_NOT_FOUND && !required) {
        *out = def;
        return TS_OK;
    }
    if (rc) return rc;
    if (v == 0 || v > INT32_MAX)
        return ts_error_set(TS_E_FORMAT, "%s: key '%s': %" PRIu32 " is out of range (1 to %d)",
                            ts_gguf_path(g), key, v, INT32_MAX);
    *out = (int32_t)v;
    return TS_OK;
}

static int get_positive_float(const ts_gguf *g, const char *key, float def, float max, float *out) {
    int rc = ts_gguf_get_f32(g, key, out);
    if (rc == TS_E_NOT_FOUND) {
        *out = def;
        return TS_OK;
    }
    if (rc) return rc;
    if (!(*out > 0.0f && *out <= max)) /* also refuses NaN */
        return ts_error_set(TS_E_FORMAT, "%s: key '%s': %g is out of range (must be > 0 and <= %g)",
                            ts_gguf_path(g), key, (double)*out, (double)max);
    return TS_OK;
}

static int check_arch(const ts_gguf *g) {
    ts_gguf_str arch;
    int rc = ts_gguf_get_str(g, "general.architecture", &arch);
    if (rc) return rc;
    if (!ts_gguf_str_eq(arch, "llama"))
        return ts_error_set(TS_E_UNSUPPORTED, "%s: architecture '%.*s' is not supported (only "
                            "'llama')", ts_gguf_path(g), (int)(arch.len < 64 ? arch.len : 64),
                            arch.data);
    return TS_OK;
}

static int read_hparams(const ts_gguf *g, ts_llama_hparams *hp) {
    const char *file = ts_gguf_path(g);
    int rc = get_count(g, "llama.context_length", true, 0, &hp->n_ctx_train);
    if (!rc) rc = get_count(g, "llama.embedding_length", true, 0, &hp->dim);
    if (!rc) rc = get_count(g, "llama.block_count", true, 0, &hp->n_layers);
    if (!rc) rc = get_count(g, "llama.feed_forward_length", true, 0, &hp->n_ff);
    if (!rc) rc = get_count(g, "llama.attention.head_count", true, 0, &hp->n_heads);
    if (!rc) rc = get_count(g, "llama.attention.head_count_kv", false, hp->n_heads, &hp->n_kv_heads);
    if (rc) return rc;
    if (!ts_gguf_find_kv(g, "llama.attention.key_length") && hp->dim % hp->n_heads != 0)
        return ts_error_set(TS_E_FORMAT, "%s: embedding_length %" PRId32 " is not a multiple of "
                            "head_count %" PRId32 " (and no llama.attention.key_length is given)",
                            file, hp->dim, hp->n_heads);
    rc = get_count(g, "llama.attention.key_length", false, hp->dim / hp->n_heads, &hp->head_dim);
    if (rc) return rc;
    int32_t value_length = 0;
    rc = get_count(g, "llama.attention.value_length", false, hp->head_dim, &value_length);
    if (rc) return rc;
    if (value_length != hp->head_dim)
        return ts_error_set(TS_E_UNSUPPORTED, "%s: value_length %" PRId32 " differs from key_length "
                            "%" PRId32 " (not supported)", file, value_length, hp->head_dim);
    rc = get_count(g, "llama.rope.dimension_count", false, hp->head_dim, &hp->rope_dims);
    if (!rc) rc = get_positive_float(g, "llama.rope.freq_base", 10000.0f, 1e30f, &hp->rope_theta);
    if (!rc) rc = get_positive_float(g, "llama.attention.layer_norm_rms_epsilon", 1e-5f, 1.0f,
                                     &hp->rms_eps);
    if (rc) return rc;

    if (hp->n_kv_heads > hp->n_heads || hp->n_heads % hp->n_kv_heads != 0)
        return ts_error_set(TS_E_FORMAT, "%s: head_count %" PRId32 " is not a multiple of "
                            "head_count_kv %" PRId32, file, hp->n_heads, hp->n_kv_heads);
    if ((int64_t)hp->n_heads * hp->head_dim > INT32_MAX)
        return ts_error_set(TS_E_FORMAT, "%s: head_count %" PRId32 " x key_length %" PRId32
                            " is too large", file, hp->n_heads, hp->head_dim);
    if (hp->rope_dims > hp->head_dim || hp->rope_dims % 2 != 0)
        return ts_error_set(TS_E_FORMAT, "%s: rope.dimension_count %" PRId32 " must be even and at "
                            "most the head size %" PRId32, file, hp->rope_dims, hp->head_dim);
    return TS_OK;
}

/* ---- tensors ---- */

static void format_shape(char *buf, size_t n, const int64_t *dims, uint32_t n_dims) {
    size_t len = (size_t)snprintf(buf, n, "[");
    for (uint32_t i = 0; i < n_dims && len < n; i++)
        len += (size_t)snprintf(buf + len, n - len, "%s%" PRId64, i ? ", " : "", dims[i]);
    if (len < n) snprintf(buf + len, n - len, "]");
}

/* Finds `name` and checks its shape against [d0] (d1 == 0) or [d0, d1]. */
static int find_tensor(const ts_gguf *g, const char *name, int64_t d0, int64_t d1,
                       const ts_gguf_tensor **out) {
    const ts_gguf_tensor *t = ts_gguf_find_tensor(g, name);
    if (!t) return ts_error_set(TS_E_NOT_FOUND, "%s: missing tensor '%s'", ts_gguf_path(g), name);
    int64_t want[TS_GGUF_MAX_DIMS] = {d0, d1 ? d1 : 1, 1, 1};
    for (int i = 0; i < TS_GGUF_MAX_DIMS; i++) {
        if (t->dims[i] != want[i]) {
            char have_s[96], want_s[64];
            format_shape(have_s, sizeof have_s, t->dims, t->n_dims);
            format_shape(want_s, sizeof want_s, want, d1 ? 2 : 1);
            return ts_error_set(TS_E_FORMAT, "%s: tensor '%s': shape %s, expected %s",
                                ts_gguf_path(g), name, have_s, want_s);
        }
    }
    *out = t;
    return TS_OK;
}

/* A weight of `rows` outputs and `cols` inputs: GGML shape [cols, rows]. */
static int find_weight(const ts_gguf *g, const char *name, int64_t rows, int64_t cols,
                       ts_weight *out) {
    const ts_gguf_tensor *t = NULL;
    int rc = find_tensor(g, name, cols, rows, &t);
    if (rc) return rc;
    *out = (ts_weight){.type = t->type, .rows = rows, .cols = cols,
                       .row_stride = ts_dtype_row_bytes(t->type, cols), .data = t->data};
    return TS_OK;
}

static int find_vector(const ts_gguf *g, const char *name, int64_t n, ts_llama_vector *out) {
    const ts_gguf_tensor *t = NULL;
    int rc = find_tensor(g, name, n, 0, &t);
    if (rc) return rc;
    if (t->type != TS_DTYPE_F32 && t->type != TS_DTYPE_F16 && t->type != TS_DTYPE_BF16)
        return ts_error_set(TS_E_UNSUPPORTED, "%s: tensor '%s': type %s is not supported for a "
                            "norm weight (f32, f16 or bf16)", ts_gguf_path(g), name,
                            ts_dtype_name(t->type));
    *out = (ts_llama_vector){.type = t->type, .n = n, .data = t->data};
    return TS_OK;
}

static int load_layer(const ts_gguf *g, const ts_llama_hparams *hp, int32_t i, ts_llama_layer *l) {
    int64_t dim = hp->dim, q_dim = (int64_t)hp->n_heads * hp->head_dim;
    int64_t kv_dim = (int64_t)hp->n_kv_heads * hp->head_dim;
    char name[64];
#define NAME(suffix) (snprintf(name, sizeof name, "blk.%" PRId32 "." suffix ".weight", i), name)
    int rc = find_vector(g, NAME("attn_norm"), dim, &l->attn_norm);
    if (!rc) rc = find_weight(g, NAME("attn_q"), q_dim, dim, &l->wq);
    if (!rc) rc = find_weight(g, NAME("attn_k"), kv_dim, dim, &l->wk);
    if (!rc) rc = find_weight(g, NAME("attn_v"), kv_dim, dim, &l->wv);
    if (!rc) rc = find_weight(g, NAME("attn_output"), dim, q_dim, &l->wo);
    if (!rc) rc = find_vector(g, NAME("ffn_norm"), dim, &l->ffn_norm);
    if (!rc) rc = find_weight(g, NAME("ffn_gate"), hp->n_ff, dim, &l->w_gate);
    if (!rc) rc = find_weight(g, NAME("ffn_up"), hp->n_ff, dim, &l->w_up);
    if (!rc) rc = find_weight(g, NAME("ffn_down"), dim, hp->n_ff, &l->w_down);
#undef NAME
    return rc;
}

/* Converters of tied models often store the embedding twice (stories260K does). Treating an
 * identical copy as tied saves a copy in device memory and in the bytes read per token. The
 * comparison costs nothing for real untied heads: memcmp stops at the first differing byte. */
static bool same_weight(const ts_weight *a, const ts_weight *b) {
    return a->type == b->type && a->rows == b->rows && a->cols == b->cols &&
           memcmp(a->data, b->data, (size_t)a->rows * a->row_stride) == 0;
}

/* The vocabulary size comes from the embedding; every other statement of it must agree. */
static int check_vocab(const ts_gguf *g, ts_llama_hparams *hp) {
    const ts_gguf_tensor *t = ts_gguf_find_tensor(g, "token_embd.weight");
    if (!t) return ts_error_set(TS_E_NOT_FOUND, "%s: missing tensor 'token_embd.weight'", ts_gguf_path(g));
    if (t->dims[1] > INT32_MAX)
        return ts_error_set(TS_E_FORMAT, "%s: tensor 'token_embd.weight': %" PRId64 " rows is too "
                            "many for a vocabulary", ts_gguf_path(g), t->dims[1]);
    hp->n_vocab = (int32_t)t->dims[1];
    int32_t stated = 0;
    int rc = get_count(g, "llama.vocab_size", false, hp->n_vocab, &stated);
    if (rc) return rc;
    if (stated != hp->n_vocab)
        return ts_error_set(TS_E_FORMAT, "%s: key 'llama.vocab_size': %" PRId32 " but tensor "
                            "'token_embd.weight' has %" PRId32 " rows", ts_gguf_path(g), stated,
                            hp->n_vocab);
    const ts_gguf_kv *tokens = ts_gguf_find_kv(g, "tokenizer.ggml.tokens");
    if (tokens && tokens->type == TS_GGUF_ARRAY && tokens->n_elems != (uint64_t)hp->n_vocab)
        return ts_error_set(TS_E_FORMAT, "%s: key 'tokenizer.ggml.tokens': %" PRIu64 " tokens but "
                            "tensor 'token_embd.weight' has %" PRId32 " rows", ts_gguf_path(g),
                            tokens->n_elems, hp->n_vocab);
    return TS_OK;
}

/* The layer array is allocated from block_count, which the file states: when it exceeds the
 * number of tensors, some block's norm is missing among the first n_tensors + 1 blocks, and we
 * name it instead of allocating. */
static int check_layer_count(const ts_gguf *g, int32_t n_layers) {
    for (int32_t i = 0; (uint64_t)n_layers > ts_gguf_n_tensors(g) && i < n_layers; i++) {
        char name[64];
        snprintf(name, sizeof name, "blk.%" PRId32 ".attn_norm.weight", i);
        if (!ts_gguf_find_tensor(g, name))
            return ts_error_set(TS_E_NOT_FOUND, "%s: missing tensor '%s' (block_count is %" PRId32
                                ")", ts_gguf_path(g), name, n_layers);
    }
    return TS_OK;
}

int ts_llama_load(const ts_gguf *g, ts_llama_model *out) {
    memset(out, 0, sizeof *out);
    ts_llama_hparams hp = {0};
    int rc = check_arch(g);
    if (!rc) rc = read_hparams(g, &hp);
    if (!rc) rc = check_vocab(g, &hp);
    if (!rc) rc = check_layer_count(g, hp.n_layers);
    if (rc) return rc;
    ts_llama_model m = {.gguf = g};
    rc = find_weight(g, "token_embd.weight", hp.n_vocab, hp.dim, &m.token_embd);
    if (!rc) rc = find_vector(g, "output_norm.weight", hp.dim, &m.output_norm);
    if (rc) return rc;
    if (ts_gguf_find_tensor(g, "output.weight")) {
        rc = find_weight(g, "output.weight", hp.n_vocab, hp.dim, &m.output);
        if (rc) return rc;
        hp.tied_output = same_weight(&m.output, &m.token_embd);
    } else {
        hp.tied_output = true;
    }
    if (hp.tied_output) m.output = m.token_embd;
    m.layers = calloc((size_t)hp.n_layers, sizeof *m.layers);
    if (!m.layers) return ts_error_set(TS_E_NOMEM, "%s: out of memory for %" PRId32 " layers",
                                       ts_gguf_path(g), hp.n_layers);
    for (int32_t i = 0; i < hp.n_layers && !rc; i++) rc = load_layer(g, &hp, i, &m.layers[i]);
    if (rc) {
        free(m.layers);
        return rc;
    }
    m.hp = hp;
    *out = m;
    return TS_OK;
}

void ts_llama_free(ts_llama_model *m) {
    if (!m) return;
    free(m->layers);
    m->layers = NULL;
}

static uint64_t weight_bytes(const ts_weight *w) { return (uint64_t)w->rows * w->row_stride; }

static uint64_t vector_bytes(const ts_llama_vector *v) {
    return ts_dtype_row_bytes(v->type, v->n);
}

uint64_t ts_llama_bytes_per_token(const ts_llama_model *m) {
    uint64_t total = m->token_embd.row_stride + vector_bytes(&m->output_norm) +
                     weight_bytes(&m->output);
    for (int32_t i = 0; i < m->hp.n_layers; i++) {
        const ts_llama_layer *l = &m->layers[i];
        total += vector_bytes(&l->attn_norm) + vector_bytes(&l->ffn_norm);
        total += weight_bytes(&l->wq) + weight_bytes(&l->wk) + weight_bytes(&l->wv) +
                 weight_bytes(&l->wo) + weight_bytes(&l->w_gate) + weight_bytes(&l->w_up) +
                 weight_bytes(&l->w_down);
    }
    return total;
}
