/*
 * model.c — see model.h; the per-architecture facts are in model/arch_*.c.
 *
 * Loading is validation: the hyper-parameters are read and checked for consistency first
 * (everything positive, heads divisible, RoPE dims even and within a head, products that fit
 * in 32 bits, no key that changes the maths beyond what we compute), then every tensor is looked up
 * by name and its type and shape compared with what the hyper-parameters imply. Shapes compare all
 * four GGML dimensions with unused ones = 1, so a norm stored as [dim] or [dim, 1] is the same
 * thing.
 *
 * The layer array is the only allocation and its length comes from the file: it is allocated
 * only once the file is known to hold at least that many tensors.
 */
#include "model/model.h"

#include "common/error.h"
#include "kernels/quant.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What one load needs: the file, its architecture, and which tensors have been used (every
 * tensor must be, see model.h). */
typedef struct loader {
    const ts_gguf *g;
    const ts_arch *arch;
    const char *file;
    bool *used; /* [ts_gguf_n_tensors] */
    char key[192];
} loader;

/* "<arch>.<suffix>" in ld->key. */
static const char *arch_key(loader *ld, const char *suffix) {
    snprintf(ld->key, sizeof ld->key, "%s.%s", ld->arch->name, suffix);
    return ld->key;
}

/* ---- hyper-parameters ---- */

/* Reads a positive int32 hyper-parameter; `def` is used when absent and not required. */
static int get_count(loader *ld, const char *suffix, bool required, int32_t def, int32_t *out) {
    const char *key = arch_key(ld, suffix);
    uint32_t v;
    int rc = ts_gguf_get_u32(ld->g, key, &v);
    if (rc == TS_E_NOT_FOUND && !required) {
        *out = def;
        return TS_OK;
    }
    if (rc) return rc;
    if (v == 0 || v > INT32_MAX)
        return ts_error_set(TS_E_FORMAT, "%s: key '%s': %" PRIu32 " is out of range (1 to %d)",
                            ld->file, key, v, INT32_MAX);
    *out = (int32_t)v;
    return TS_OK;
}

static int get_positive_float(loader *ld, const char *suffix, float def, float max, float *out) {
    const char *key = arch_key(ld, suffix);
    int rc = ts_gguf_get_f32(ld->g, key, out);
    if (rc == TS_E_NOT_FOUND) {
        *out = def;
        return TS_OK;
    }
    if (rc) return rc;
    if (!(*out > 0.0f && *out <= max)) /* also refuses NaN */
        return ts_error_set(TS_E_FORMAT, "%s: key '%s': %g is out of range (must be > 0 and <= %g)",
                            ld->file, key, (double)*out, (double)max);
    return TS_OK;
}

static int find_arch(loader *ld) {
    ts_gguf_str name;
    int rc = ts_gguf_get_str(ld->g, "general.architecture", &name);
    if (rc) return rc;
    ld->arch = ts_arch_find(name.data, (size_t)name.len);
    if (!ld->arch)
        return ts_error_set(TS_E_UNSUPPORTED,
                            "%s: architecture '%.*s' is not supported (supported: "
                            "%s)",
                            ld->file, (int)(name.len < 64 ? name.len : 64), name.data,
                            ts_arch_names());
    return TS_OK;
}

/* Keys that change the forward pass in ways no architecture here computes. A numeric zero (or
 * false) means the feature is off and is accepted; anything else is refused by name. */
static const char *const common_refused_keys[] = {
    "attention.sliding_window",
    "attn_logit_softcapping",
    "final_logit_softcapping",
    "expert_count",
    "expert_used_count",
    "attention.layer_norm_epsilon",
    "attention.clamp_kqv",
    "attention.max_alibi_bias",
    "embedding_scale",
    "residual_scale",
    "logit_scale",
    "attention.scale",
    "attention.q_lora_rank",
    "attention.kv_lora_rank",
    "rope.scaling.attn_factor",
    NULL,
};

static bool is_off(const ts_gguf_kv *kv) {
    switch (kv->type) {
    case TS_GGUF_UINT8:
    case TS_GGUF_UINT16:
    case TS_GGUF_UINT32:
    case TS_GGUF_UINT64:
    case TS_GGUF_BOOL: return kv->value.u64 == 0;
    case TS_GGUF_INT8:
    case TS_GGUF_INT16:
    case TS_GGUF_INT32:
    case TS_GGUF_INT64: return kv->value.i64 == 0;
    case TS_GGUF_FLOAT32:
    case TS_GGUF_FLOAT64: return kv->value.f64 == 0.0;
    default: return false;
    }
}

static int refuse_keys(loader *ld, const char *const *suffixes) {
    for (size_t i = 0; suffixes && suffixes[i]; i++) {
        const ts_gguf_kv *kv = ts_gguf_find_kv(ld->g, arch_key(ld, suffixes[i]));
        if (kv && !is_off(kv))
            return ts_error_set(TS_E_UNSUPPORTED,
                                "%s: key '%s' changes the model in a way "
                                "Tessera does not compute for architecture '%s' (not supported)",
                                ld->file, ld->key, ld->arch->name);
    }
    return TS_OK;
}

/* RoPE scaling: none, or linear position interpolation (angle / factor). Llama 3.1's "llama3"
 * scaling reaches us as rope_freqs.weight (converters turn it into per-dimension divisors), not
 * as a type. YaRN, LongRoPE and anything else are refused. */
static int read_rope_scaling(loader *ld, ts_model_hparams *hp) {
    hp->rope_freq_scale = 1.0f;
    float factor = 0.0f;
    const ts_gguf_kv *type_kv = ts_gguf_find_kv(ld->g, arch_key(ld, "rope.scaling.type"));
    bool linear = false;
    if (type_kv) {
        ts_gguf_str type;
        int rc = ts_gguf_get_str(ld->g, ld->key, &type);
        if (rc) return rc;
        if (ts_gguf_str_eq(type, "linear")) {
            linear = true;
        } else if (!ts_gguf_str_eq(type, "none")) {
            return ts_error_set(TS_E_UNSUPPORTED,
                                "%s: key '%s': RoPE scaling '%.*s' is not "
                                "supported (none, linear, and Llama 3's rope_freqs are)",
                                ld->file, ld->key, (int)(type.len < 32 ? type.len : 32), type.data);
        }
    }
    int rc = get_positive_float(ld, "rope.scaling.factor", 0.0f, 1e6f, &factor);
    if (rc) return rc;
    if (factor == 0.0f) { /* the older key, linear by definition */
        rc = get_positive_float(ld, "rope.scale_linear", 0.0f, 1e6f, &factor);
        if (rc) return rc;
        if (factor != 0.0f) linear = true;
    }
    if (linear && factor == 0.0f)
        return ts_error_set(TS_E_FORMAT, "%s: linear RoPE scaling without '%s.rope.scaling.factor'",
                            ld->file, ld->arch->name);
    if (linear) hp->rope_freq_scale = 1.0f / factor;
    return TS_OK;
}

static int read_hparams(loader *ld, ts_model_hparams *hp) {
    const char *file = ld->file;
    int rc = refuse_keys(ld, common_refused_keys);
    if (!rc) rc = refuse_keys(ld, ld->arch->refused_keys);
    if (!rc) rc = get_count(ld, "context_length", true, 0, &hp->n_ctx_train);
    if (!rc) rc = get_count(ld, "embedding_length", true, 0, &hp->dim);
    if (!rc) rc = get_count(ld, "block_count", true, 0, &hp->n_layers);
    if (!rc) rc = get_count(ld, "feed_forward_length", true, 0, &hp->n_ff);
    if (!rc) rc = get_count(ld, "attention.head_count", true, 0, &hp->n_heads);
    if (!rc) rc = get_count(ld, "attention.head_count_kv", false, hp->n_heads, &hp->n_kv_heads);
    if (rc) return rc;
    if (!ts_gguf_find_kv(ld->g, arch_key(ld, "attention.key_length")) && hp->dim % hp->n_heads != 0)
        return ts_error_set(TS_E_FORMAT,
                            "%s: embedding_length %" PRId32 " is not a multiple of "
                            "head_count %" PRId32 " (and no %s is given)",
                            file, hp->dim, hp->n_heads, ld->key);
    rc = get_count(ld, "attention.key_length", false, hp->dim / hp->n_heads, &hp->head_dim);
    if (rc) return rc;
    int32_t value_length = 0;
    rc = get_count(ld, "attention.value_length", false, hp->head_dim, &value_length);
    if (rc) return rc;
    if (value_length != hp->head_dim)
        return ts_error_set(TS_E_UNSUPPORTED,
                            "%s: value_length %" PRId32 " differs from key_length "
                            "%" PRId32 " (not supported)",
                            file, value_length, hp->head_dim);
    rc = get_count(ld, "rope.dimension_count", false, hp->head_dim, &hp->rope_dims);
    if (!rc)
        rc = get_positive_float(ld, "rope.freq_base", ld->arch->rope_theta, 1e30f, &hp->rope_theta);
    if (!rc)
        rc = get_positive_float(ld, "attention.layer_norm_rms_epsilon", 1e-5f, 1.0f, &hp->rms_eps);
    if (!rc) rc = read_rope_scaling(ld, hp);
    if (rc) return rc;
    hp->rope_mode = ld->arch->rope_mode;

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

static void mark_used(loader *ld, const ts_gguf_tensor *t) {
    ld->used[t - ts_gguf_tensor_at(ld->g, 0)] = true;
}

/* Finds `name` and checks its shape against [d0] (d1 == 0) or [d0, d1]. */
static int find_tensor(loader *ld, const char *name, int64_t d0, int64_t d1,
                       const ts_gguf_tensor **out) {
    const ts_gguf_tensor *t = ts_gguf_find_tensor(ld->g, name);
    if (!t) return ts_error_set(TS_E_NOT_FOUND, "%s: missing tensor '%s'", ld->file, name);
    int64_t want[TS_GGUF_MAX_DIMS] = {d0, d1 ? d1 : 1, 1, 1};
    for (int i = 0; i < TS_GGUF_MAX_DIMS; i++) {
        if (t->dims[i] != want[i]) {
            char have_s[96], want_s[64];
            format_shape(have_s, sizeof have_s, t->dims, t->n_dims);
            format_shape(want_s, sizeof want_s, want, d1 ? 2 : 1);
            return ts_error_set(TS_E_FORMAT, "%s: tensor '%s': shape %s, expected %s", ld->file,
                                name, have_s, want_s);
        }
    }
    mark_used(ld, t);
    *out = t;
    return TS_OK;
}

/* A weight of `rows` outputs and `cols` inputs: GGML shape [cols, rows]. */
static int find_weight(loader *ld, const char *name, int64_t rows, int64_t cols, ts_weight *out) {
    const ts_gguf_tensor *t = NULL;
    int rc = find_tensor(ld, name, cols, rows, &t);
    if (rc) return rc;
    *out = (ts_weight){.type = t->type, .rows = rows, .cols = cols,
                       .row_stride = ts_dtype_row_bytes(t->type, cols), .data = t->data};
    for (int64_t r = 0; r < rows; r++) /* a NaN or infinite scale poisons every output */
        if (!ts_quant_row_scales_finite(t->type, (const char *)t->data + (size_t)r * out->row_stride,
                                        cols))
            return ts_error_set(TS_E_FORMAT,
                                "%s: tensor '%s': row %" PRId64 " has a non-finite %s block scale",
                                ld->file, name, r, ts_dtype_name(t->type));
    return TS_OK;
}

static int find_vector(loader *ld, const char *name, int64_t n, ts_model_vector *out) {
    const ts_gguf_tensor *t = NULL;
    int rc = find_tensor(ld, name, n, 0, &t);
    if (rc) return rc;
    if (t->type != TS_DTYPE_F32 && t->type != TS_DTYPE_F16 && t->type != TS_DTYPE_BF16)
        return ts_error_set(TS_E_UNSUPPORTED,
                            "%s: tensor '%s': type %s is not supported for a "
                            "norm, bias or other 1-D tensor (f32, f16 or bf16)",
                            ld->file, name, ts_dtype_name(t->type));
    *out = (ts_model_vector){.type = t->type, .n = n, .data = t->data};
    return TS_OK;
}

/* A vector the architecture requires, allows or refuses; absent leaves *out zeroed. */
static int find_vector_by_rule(loader *ld, const char *name, int64_t n, ts_tensor_rule rule,
                               ts_model_vector *out) {
    *out = (ts_model_vector){0};
    if (rule == TS_TENSOR_REQUIRED ||
        (rule == TS_TENSOR_OPTIONAL && ts_gguf_find_tensor(ld->g, name)))
        return find_vector(ld, name, n, out);
    return TS_OK; /* a refused one present is reported by check_all_used */
}

static int load_layer(loader *ld, const ts_model_hparams *hp, int32_t i, ts_model_layer *l) {
    int64_t dim = hp->dim, q_dim = (int64_t)hp->n_heads * hp->head_dim;
    int64_t kv_dim = (int64_t)hp->n_kv_heads * hp->head_dim;
    const ts_arch *a = ld->arch;
    char name[64];
#define NAME(suffix) (snprintf(name, sizeof name, "blk.%" PRId32 "." suffix, i), name)
    int rc = find_vector(ld, NAME("attn_norm.weight"), dim, &l->attn_norm);
    if (!rc) rc = find_weight(ld, NAME("attn_q.weight"), q_dim, dim, &l->wq);
    if (!rc) rc = find_weight(ld, NAME("attn_k.weight"), kv_dim, dim, &l->wk);
    if (!rc) rc = find_weight(ld, NAME("attn_v.weight"), kv_dim, dim, &l->wv);
    if (!rc) rc = find_weight(ld, NAME("attn_output.weight"), dim, q_dim, &l->wo);
    if (!rc) rc = find_vector_by_rule(ld, NAME("attn_q.bias"), q_dim, a->qkv_bias, &l->bq);
    if (!rc) rc = find_vector_by_rule(ld, NAME("attn_k.bias"), kv_dim, a->qkv_bias, &l->bk);
    if (!rc) rc = find_vector_by_rule(ld, NAME("attn_v.bias"), kv_dim, a->qkv_bias, &l->bv);
    if (!rc) rc = find_vector_by_rule(ld, NAME("attn_output.bias"), dim, a->out_bias, &l->bo);
    if (!rc) rc = find_vector(ld, NAME("ffn_norm.weight"), dim, &l->ffn_norm);
    if (!rc) rc = find_weight(ld, NAME("ffn_gate.weight"), hp->n_ff, dim, &l->w_gate);
    if (!rc) rc = find_weight(ld, NAME("ffn_up.weight"), hp->n_ff, dim, &l->w_up);
    if (!rc) rc = find_weight(ld, NAME("ffn_down.weight"), dim, hp->n_ff, &l->w_down);
#undef NAME
    /* q, k and v are biased together or not at all (a half-biased layer is a broken file) */
    if (!rc && ((l->bq.n > 0) != (l->bk.n > 0) || (l->bq.n > 0) != (l->bv.n > 0)))
        rc = ts_error_set(TS_E_FORMAT,
                          "%s: block %" PRId32 " has biases for some of attn_q, "
                          "attn_k and attn_v but not all",
                          ld->file, i);
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
static int check_vocab(loader *ld, ts_model_hparams *hp) {
    const ts_gguf_tensor *t = ts_gguf_find_tensor(ld->g, "token_embd.weight");
    if (!t) return ts_error_set(TS_E_NOT_FOUND, "%s: missing tensor 'token_embd.weight'", ld->file);
    if (t->dims[1] > INT32_MAX)
        return ts_error_set(TS_E_FORMAT,
                            "%s: tensor 'token_embd.weight': %" PRId64 " rows is too "
                            "many for a vocabulary",
                            ld->file, t->dims[1]);
    hp->n_vocab = (int32_t)t->dims[1];
    int32_t stated = 0;
    int rc = get_count(ld, "vocab_size", false, hp->n_vocab, &stated);
    if (rc) return rc;
    if (stated != hp->n_vocab)
        return ts_error_set(TS_E_FORMAT,
                            "%s: key '%s': %" PRId32 " but tensor "
                            "'token_embd.weight' has %" PRId32 " rows",
                            ld->file, ld->key, stated, hp->n_vocab);
    const ts_gguf_kv *tokens = ts_gguf_find_kv(ld->g, "tokenizer.ggml.tokens");
    if (tokens && tokens->type == TS_GGUF_ARRAY && tokens->n_elems != (uint64_t)hp->n_vocab)
        return ts_error_set(TS_E_FORMAT,
                            "%s: key 'tokenizer.ggml.tokens': %" PRIu64 " tokens but "
                            "tensor 'token_embd.weight' has %" PRId32 " rows",
                            ld->file, tokens->n_elems, hp->n_vocab);
    return TS_OK;
}

/* The layer array is allocated from block_count, which the file states: when it exceeds the
 * number of tensors, some block's norm is missing among the first n_tensors + 1 blocks, and we
 * name it instead of allocating. */
static int check_layer_count(loader *ld, int32_t n_layers) {
    for (int32_t i = 0; (uint64_t)n_layers > ts_gguf_n_tensors(ld->g) && i < n_layers; i++) {
        char name[64];
        snprintf(name, sizeof name, "blk.%" PRId32 ".attn_norm.weight", i);
        if (!ts_gguf_find_tensor(ld->g, name))
            return ts_error_set(TS_E_NOT_FOUND,
                                "%s: missing tensor '%s' (block_count is %" PRId32 ")", ld->file,
                                name, n_layers);
    }
    return TS_OK;
}

/* Every tensor of the file must mean something to the forward pass. */
static int check_all_used(loader *ld) {
    for (size_t i = 0; i < ts_gguf_n_tensors(ld->g); i++) {
        if (ld->used[i]) continue;
        const ts_gguf_tensor *t = ts_gguf_tensor_at(ld->g, i);
        return ts_error_set(TS_E_UNSUPPORTED,
                            "%s: tensor '%s' is not used by architecture '%s' "
                            "as Tessera implements it (a feature it does not compute)",
                            ld->file, t->name_z, ld->arch->name);
    }
    return TS_OK;
}

static int load_tensors(loader *ld, ts_model *m) {
    const ts_model_hparams *hp = &m->hp;
    int rc = find_weight(ld, "token_embd.weight", hp->n_vocab, hp->dim, &m->token_embd);
    if (!rc) rc = find_vector(ld, "output_norm.weight", hp->dim, &m->output_norm);
    if (rc) return rc;
    if (ts_gguf_find_tensor(ld->g, "output.weight")) {
        rc = find_weight(ld, "output.weight", hp->n_vocab, hp->dim, &m->output);
        if (rc) return rc;
        m->hp.tied_output = same_weight(&m->output, &m->token_embd);
    } else {
        m->hp.tied_output = true;
    }
    if (m->hp.tied_output) m->output = m->token_embd;
    rc = find_vector_by_rule(ld, "rope_freqs.weight", hp->rope_dims / 2, ld->arch->rope_freqs,
                             &m->rope_freqs);
    if (rc) return rc;
    if (m->rope_freqs.n > 0 && m->rope_freqs.type != TS_DTYPE_F32)
        return ts_error_set(TS_E_UNSUPPORTED,
                            "%s: tensor 'rope_freqs.weight': type %s (f32 "
                            "expected)",
                            ld->file, ts_dtype_name(m->rope_freqs.type));
    for (int64_t i = 0; i < m->rope_freqs.n; i++) {
        float f = ((const float *)m->rope_freqs.data)[i];
        if (!(f > 0.0f && f < 1e30f))
            return ts_error_set(TS_E_FORMAT,
                                "%s: tensor 'rope_freqs.weight': element %" PRId64
                                " is %g (frequency factors must be positive and finite)",
                                ld->file, i, (double)f);
    }
    m->layers = calloc((size_t)hp->n_layers, sizeof *m->layers);
    if (!m->layers)
        return ts_error_set(TS_E_NOMEM, "%s: out of memory for %" PRId32 " layers", ld->file,
                            hp->n_layers);
    for (int32_t i = 0; i < hp->n_layers && !rc; i++)
        rc = load_layer(ld, hp, i, &m->layers[i]);
    if (!rc) rc = check_all_used(ld);
    return rc;
}

int ts_model_load(const ts_gguf *g, ts_model *out) {
    memset(out, 0, sizeof *out);
    loader ld = {.g = g, .file = ts_gguf_path(g)};
    ts_model m = {.gguf = g};
    int rc = find_arch(&ld);
    if (!rc) rc = read_hparams(&ld, &m.hp);
    if (!rc) rc = check_vocab(&ld, &m.hp);
    if (!rc) rc = check_layer_count(&ld, m.hp.n_layers);
    if (rc) return rc;
    m.arch = ld.arch;
    ld.used = calloc(ts_gguf_n_tensors(g) + 1, sizeof *ld.used);
    if (!ld.used) return ts_error_set(TS_E_NOMEM, "%s: out of memory", ld.file);
    rc = load_tensors(&ld, &m);
    free(ld.used);
    if (rc) {
        free(m.layers);
        return rc;
    }
    *out = m;
    return TS_OK;
}

void ts_model_free(ts_model *m) {
    if (!m) return;
    free(m->layers);
    m->layers = NULL;
}

ts_rope ts_model_rope(const ts_model *m, const float *freq_factors) {
    return (ts_rope){.mode = m->hp.rope_mode,
                     .n_dims = m->hp.rope_dims,
                     .theta_base = m->hp.rope_theta,
                     .freq_scale = m->hp.rope_freq_scale,
                     .freq_factors = m->rope_freqs.n > 0 ? freq_factors : NULL};
}

static uint64_t weight_bytes(const ts_weight *w) {
    return (uint64_t)w->rows * w->row_stride;
}

static uint64_t vector_bytes(const ts_model_vector *v) {
    return ts_dtype_row_bytes(v->type, v->n);
}

uint64_t ts_model_bytes_per_token(const ts_model *m) {
    uint64_t total = m->token_embd.row_stride + vector_bytes(&m->output_norm) +
                     weight_bytes(&m->output);
    for (int32_t i = 0; i < m->hp.n_layers; i++) {
        const ts_model_layer *l = &m->layers[i];
        total += vector_bytes(&l->attn_norm) + vector_bytes(&l->ffn_norm);
        total += vector_bytes(&l->bq) + vector_bytes(&l->bk) + vector_bytes(&l->bv) +
                 vector_bytes(&l->bo);
        total += weight_bytes(&l->wq) + weight_bytes(&l->wk) + weight_bytes(&l->wv) +
                 weight_bytes(&l->wo) + weight_bytes(&l->w_gate) + weight_bytes(&l->w_up) +
                 weight_bytes(&l->w_down);
    }
    return total;
}
