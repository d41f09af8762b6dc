/*
 * hf.c — see hf.h.
 *
 * One pass builds the GGUF view: config.json becomes a list of ts_gguf_kv, every tensor of every
 * shard a ts_gguf_tensor pointing into its mapping (or into a permuted copy), and
 * ts_gguf_assemble takes both. Everything the view points to (the config document, the strings
 * of keys and names, the shards, the copies) belongs to one `owner` that ts_gguf_close releases.
 * Nothing here knows the model's maths beyond the Llama-shape tables of model/arch.c: the loader
 * validates the result exactly as it validates a GGUF file.
 */
#include "model/hf.h"

#include "common/error.h"
#include "common/json.h"
#include "model/arch.h"
#include "model/safetensors.h"

#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* What the view points into; freed by release() at ts_gguf_close. */
typedef struct owner {
    ts_json_doc *config;
    ts_json_doc *index;
    ts_safetensors **shards;
    size_t n_shards;
    void **blocks; /* strings and permuted copies */
    size_t n_blocks, cap_blocks;
} owner;

typedef struct hf {
    const char *dir;
    char config_path[PATH_MAX + 16];
    char index_path[PATH_MAX + 32];
    const ts_json *cfg;
    const ts_arch *arch;
    owner *own;
    ts_gguf_kv *kvs;
    size_t n_kv, cap_kv;
    ts_gguf_tensor *tensors;
    size_t n_tensors, cap_tensors;
    int64_t n_heads, n_kv_heads;
} hf;

static void release(void *p) {
    owner *o = p;
    if (!o) return;
    ts_json_doc_free(o->config);
    ts_json_doc_free(o->index);
    for (size_t i = 0; i < o->n_shards; i++) ts_safetensors_close(o->shards[i]);
    free(o->shards);
    for (size_t i = 0; i < o->n_blocks; i++) free(o->blocks[i]);
    free(o->blocks);
    free(o);
}

/* A block of n bytes the view keeps. */
static void *keep(hf *h, size_t n) {
    owner *o = h->own;
    if (o->n_blocks == o->cap_blocks) {
        size_t cap = o->cap_blocks ? 2 * o->cap_blocks : 64;
        void **b = realloc(o->blocks, cap * sizeof *b);
        if (!b) return NULL;
        o->blocks = b;
        o->cap_blocks = cap;
    }
    void *p = malloc(n ? n : 1);
    if (p) o->blocks[o->n_blocks++] = p;
    return p;
}

static int keep_str(hf *h, const char *s, ts_gguf_str *out) {
    size_t n = strlen(s);
    char *p = keep(h, n + 1);
    if (!p) return ts_error_set(TS_E_NOMEM, "out of memory");
    memcpy(p, s, n + 1);
    *out = (ts_gguf_str){p, n};
    return TS_OK;
}

/* ---- config.json → keys ---- */

static ts_gguf_kv *add_kv(hf *h, const char *key) {
    if (h->n_kv == h->cap_kv) {
        size_t cap = h->cap_kv ? 2 * h->cap_kv : 32;
        ts_gguf_kv *k = realloc(h->kvs, cap * sizeof *k);
        if (!k) return NULL;
        h->kvs = k;
        h->cap_kv = cap;
    }
    ts_gguf_kv *kv = &h->kvs[h->n_kv];
    memset(kv, 0, sizeof *kv);
    if (keep_str(h, key, &kv->key)) return NULL;
    h->n_kv++;
    return kv;
}

static int add_string(hf *h, const char *key, const char *value) {
    ts_gguf_kv *kv = add_kv(h, key);
    if (!kv || keep_str(h, value, &kv->value.str))
        return ts_error_set(TS_E_NOMEM, "out of memory");
    kv->type = TS_GGUF_STRING;
    return TS_OK;
}

static int add_arch_key(hf *h, const char *suffix, bool is_float, double value) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", h->arch->name, suffix);
    ts_gguf_kv *kv = add_kv(h, key);
    if (!kv) return ts_error_set(TS_E_NOMEM, "out of memory");
    kv->type = is_float ? TS_GGUF_FLOAT32 : TS_GGUF_UINT32;
    if (is_float) kv->value.f64 = (double)(float)value;
    else kv->value.u64 = (uint64_t)value;
    return TS_OK;
}

static bool is_off(const ts_json *v) {
    return v->type == TS_JSON_NULL || (v->type == TS_JSON_BOOL && !v->boolean) ||
           (v->type == TS_JSON_NUMBER && v->number == 0.0);
}

static int refuse_keys(hf *h, const char *const *keys) {
    for (size_t i = 0; keys && keys[i]; i++) {
        const ts_json *v = ts_json_get(h->cfg, keys[i]);
        if (v && !is_off(v))
            return ts_error_set(TS_E_UNSUPPORTED,
                                "%s: key '%s' changes the model in a way Tessera does not "
                                "compute for architecture '%s' (not supported)",
                                h->config_path, keys[i], h->arch->name);
    }
    return TS_OK;
}

static ts_gguf_tensor *add_tensor(hf *h);

/* A positive number of rope_scaling, or `def` when absent. */
static int scaling_param(hf *h, const ts_json *rs, const char *key, double def, double *out) {
    const ts_json *v = ts_json_get(rs, key);
    *out = def;
    if (!v) return TS_OK;
    if (v->type != TS_JSON_NUMBER || !(v->number > 0.0 && v->number <= 1e9))
        return ts_error_set(TS_E_FORMAT, "%s: key 'rope_scaling': '%s' must be a positive number",
                            h->config_path, key);
    *out = v->number;
    return TS_OK;
}

/* Llama 3.1/3.2: the divisors llama.cpp's converter writes as rope_freqs.weight, computed here
 * from the same parameters and defaults (convert_hf_to_gguf.py LlamaModel). */
static int add_llama3_rope_freqs(hf *h, const ts_json *rs) {
    double factor, low, high, original, theta = h->arch->rope_theta;
    int rc = scaling_param(h, rs, "factor", 8.0, &factor);
    if (!rc) rc = scaling_param(h, rs, "low_freq_factor", 1.0, &low);
    if (!rc) rc = scaling_param(h, rs, "high_freq_factor", 4.0, &high);
    if (!rc) rc = scaling_param(h, rs, "original_max_position_embeddings", 8192.0, &original);
    if (!rc) rc = scaling_param(h, h->cfg, "rope_theta", theta, &theta);
    if (rc) return rc;
    if (!(high > low))
        return ts_error_set(TS_E_FORMAT, "%s: key 'rope_scaling': high_freq_factor must exceed "
                            "low_freq_factor", h->config_path);
    int64_t hidden = 0, head_dim = 0;
    const ts_json *hd = ts_json_get(h->cfg, "head_dim");
    if (hd && hd->type == TS_JSON_NUMBER && hd->is_integer) head_dim = hd->integer;
    else if (!ts_json_get_int(h->cfg, "hidden_size", &hidden) && h->n_heads > 0)
        head_dim = hidden / h->n_heads;
    if (head_dim <= 0 || head_dim % 2 != 0 || head_dim > 65536)
        return ts_error_set(TS_E_FORMAT, "%s: llama3 RoPE scaling needs an even head size (got "
                            "%" PRId64 ")", h->config_path, head_dim);
    float *freqs = keep(h, (size_t)head_dim / 2 * sizeof *freqs);
    ts_gguf_tensor *t = freqs ? add_tensor(h) : NULL;
    if (!t) return ts_error_set(TS_E_NOMEM, "out of memory");
    ts_arch_llama3_rope_factors(theta, head_dim, factor, low, high, original, freqs);
    snprintf(t->name_z, sizeof t->name_z, "rope_freqs.weight");
    t->n_dims = 1;
    t->dims[0] = head_dim / 2;
    t->dims[1] = t->dims[2] = t->dims[3] = 1;
    t->type = TS_DTYPE_F32;
    t->data = freqs;
    t->n_elems = head_dim / 2;
    t->n_bytes = (size_t)t->n_elems * sizeof *freqs;
    return TS_OK;
}

static int read_rope_scaling(hf *h) {
    const ts_json *rs = ts_json_get(h->cfg, "rope_scaling");
    if (!rs || rs->type == TS_JSON_NULL) return TS_OK;
    const ts_json *type = ts_json_get(rs, "rope_type");
    if (!type) type = ts_json_get(rs, "type");
    if (rs->type != TS_JSON_OBJECT || !type || type->type != TS_JSON_STRING)
        return ts_error_set(TS_E_FORMAT, "%s: key 'rope_scaling': an object with a 'rope_type' "
                            "expected", h->config_path);
    if (!strcmp(type->string, "default")) return TS_OK;
    if (!strcmp(type->string, "llama3") && h->arch->rope_freqs != TS_TENSOR_ABSENT)
        return add_llama3_rope_freqs(h, rs);
    if (strcmp(type->string, "linear"))
        return ts_error_set(TS_E_UNSUPPORTED,
                            "%s: key 'rope_scaling': RoPE scaling '%.32s' is not supported for "
                            "'%s' (none, linear%s are)",
                            h->config_path, type->string, h->arch->name,
                            h->arch->rope_freqs != TS_TENSOR_ABSENT ? " and llama3" : "");
    double factor = 0.0;
    if (ts_json_get_double(rs, "factor", &factor) || !(factor > 0.0 && factor <= 1e6))
        return ts_error_set(TS_E_FORMAT, "%s: key 'rope_scaling': linear scaling needs a "
                            "'factor' > 0", h->config_path);
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", h->arch->name);
    int rc = add_string(h, key, "linear");
    return rc ? rc : add_arch_key(h, "rope.scaling.factor", true, factor);
}

/* One config.json number as a hyper-parameter, checked as the loader would check it. */
static int read_key(hf *h, const ts_arch_hf_key *k, int64_t *count) {
    const ts_json *v = ts_json_get(h->cfg, k->config);
    if (!v || v->type == TS_JSON_NULL) {
        if (k->required)
            return ts_error_set(TS_E_NOT_FOUND, "%s: missing key '%s'", h->config_path,
                                k->config);
        return TS_OK;
    }
    if (k->is_float) {
        if (v->type != TS_JSON_NUMBER || !isfinite(v->number))
            return ts_error_set(TS_E_FORMAT, "%s: key '%s': a number expected", h->config_path,
                                k->config);
        return add_arch_key(h, k->gguf, true, v->number);
    }
    if (v->type != TS_JSON_NUMBER || !v->is_integer || v->integer <= 0 ||
        v->integer > INT32_MAX)
        return ts_error_set(TS_E_FORMAT, "%s: key '%s': a positive integer expected (at most "
                            "%d)", h->config_path, k->config, INT32_MAX);
    if (count) *count = v->integer;
    return add_arch_key(h, k->gguf, false, (double)v->integer);
}

static int read_config(hf *h) {
    int rc = ts_json_parse_file(h->config_path, &h->own->config);
    if (rc) return rc;
    h->cfg = ts_json_root(h->own->config);
    const char *model_type = NULL;
    size_t len = 0;
    if (h->cfg->type != TS_JSON_OBJECT)
        return ts_error_set(TS_E_FORMAT, "%s: not a JSON object", h->config_path);
    if (ts_json_get_string(h->cfg, "model_type", &model_type, &len))
        return ts_error_set(TS_E_FORMAT, "%s: key 'model_type' missing or not a string",
                            h->config_path);
    h->arch = ts_arch_find_hf(model_type);
    if (!h->arch)
        return ts_error_set(TS_E_UNSUPPORTED, "%s: model_type '%.64s' is not supported "
                            "(supported: %s)", h->config_path, model_type, ts_arch_names());
    rc = refuse_keys(h, ts_arch_hf_refused_keys);
    if (!rc) rc = refuse_keys(h, h->arch->hf.refused_keys);
    if (rc) return rc;
    const ts_json *act = ts_json_get(h->cfg, "hidden_act");
    if (act && (act->type != TS_JSON_STRING || strcmp(act->string, "silu")))
        return ts_error_set(TS_E_UNSUPPORTED, "%s: key 'hidden_act': only \"silu\" (SwiGLU) is "
                            "computed (not supported)", h->config_path);
    rc = add_string(h, "general.architecture", h->arch->name);
    if (rc) return rc;
    for (const ts_arch_hf_key *k = ts_arch_hf_keys; k->config && !rc; k++) {
        int64_t *count = !strcmp(k->config, "num_attention_heads")   ? &h->n_heads
                         : !strcmp(k->config, "num_key_value_heads") ? &h->n_kv_heads
                                                                     : NULL;
        rc = read_key(h, k, count);
    }
    if (!rc && h->n_kv_heads == 0) h->n_kv_heads = h->n_heads;
    return rc ? rc : read_rope_scaling(h);
}

/* general.name: the directory's last component. */
static int add_name(hf *h) {
    char name[256];
    size_t n = strlen(h->dir);
    while (n > 1 && h->dir[n - 1] == '/') n--;
    size_t start = n;
    while (start > 0 && h->dir[start - 1] != '/') start--;
    snprintf(name, sizeof name, "%.*s", (int)(n - start), h->dir + start);
    return add_string(h, "general.name", name);
}

/* ---- tensors ---- */

/* The GGUF name of an HF tensor in `out`, or "" for one to skip. Unknown names stay as they are. */
static const ts_arch_hf_tensor *map_name(const char *name, char *out, size_t cap) {
    static const char prefix[] = "model.layers.";
    const size_t plen = sizeof prefix - 1;
    long layer = -1;
    const char *suffix = NULL;
    if (!strncmp(name, prefix, plen) && name[plen] >= '0' && name[plen] <= '9') {
        char *end = NULL;
        layer = strtol(name + plen, &end, 10);
        if (*end == '.' && layer >= 0 && layer < INT32_MAX && (end - (name + plen) == 1 ||
                                                               name[plen] != '0'))
            suffix = end + 1;
    }
    for (const ts_arch_hf_tensor *t = ts_arch_hf_tensors; t->hf; t++) {
        bool hit = t->per_layer ? suffix && !strcmp(suffix, t->hf) : !strcmp(name, t->hf);
        if (!hit) continue;
        if (!t->gguf) snprintf(out, cap, "%s", "");
        else if (t->per_layer) snprintf(out, cap, "blk.%ld.%s", layer, t->gguf);
        else snprintf(out, cap, "%s", t->gguf);
        return t;
    }
    snprintf(out, cap, "%s", name);
    return NULL;
}

/* Rows of one head: GGUF row (h, i, j) = HF row (h, j, i) for i < head_dim / 2, j < 2
 * (convert_hf_to_gguf.py: reshape(n_head, 2, head_dim / 2, ...).swapaxes(1, 2)). */
static int permute_rows(hf *h, const ts_st_tensor *st, int64_t heads, ts_gguf_tensor *t) {
    int64_t rows = st->shape[0];
    if (heads <= 0 || rows % heads != 0 || (rows / heads) % 2 != 0)
        return ts_error_set(TS_E_FORMAT, "%s: tensor '%s': %" PRId64 " rows do not split into "
                            "%" PRId64 " heads of an even size", h->dir, st->name, rows, heads);
    size_t row_bytes = st->n_bytes / (size_t)rows, head_dim = (size_t)(rows / heads);
    uint8_t *copy = keep(h, st->n_bytes);
    if (!copy) return ts_error_set(TS_E_NOMEM, "out of memory copying '%s'", st->name);
    const uint8_t *src = st->data;
    for (size_t hd = 0; hd < (size_t)heads; hd++)
        for (size_t i = 0; i < head_dim / 2; i++)
            for (size_t j = 0; j < 2; j++)
                memcpy(copy + (hd * head_dim + 2 * i + j) * row_bytes,
                       src + (hd * head_dim + j * head_dim / 2 + i) * row_bytes, row_bytes);
    t->data = copy;
    return TS_OK;
}

static ts_gguf_tensor *add_tensor(hf *h) {
    if (h->n_tensors == h->cap_tensors) {
        size_t cap = h->cap_tensors ? 2 * h->cap_tensors : 64;
        ts_gguf_tensor *t = realloc(h->tensors, cap * sizeof *t);
        if (!t) return NULL;
        h->tensors = t;
        h->cap_tensors = cap;
    }
    ts_gguf_tensor *t = &h->tensors[h->n_tensors++];
    memset(t, 0, sizeof *t);
    return t;
}

static int add_shard_tensor(hf *h, const ts_safetensors *file, const ts_st_tensor *st) {
    const char *path = ts_safetensors_path(file);
    char name[512];
    const ts_arch_hf_tensor *role = map_name(st->name, name, sizeof name);
    if (!name[0]) return TS_OK; /* derived data */
    ts_dtype type;
    switch (st->dtype) {
    case TS_ST_F32: type = TS_DTYPE_F32; break;
    case TS_ST_F16: type = TS_DTYPE_F16; break;
    case TS_ST_BF16: type = TS_DTYPE_BF16; break;
    default:
        return ts_error_set(TS_E_UNSUPPORTED, "%s: tensor '%s': dtype %s is not supported (F32, "
                            "F16 and BF16 are)", path, st->name, ts_st_dtype_name(st->dtype));
    }
    if (st->n_dims > TS_GGUF_MAX_DIMS)
        return ts_error_set(TS_E_UNSUPPORTED, "%s: tensor '%s': %" PRIu32 " dimensions (at most "
                            "%d)", path, st->name, st->n_dims, TS_GGUF_MAX_DIMS);
    if (strlen(name) >= sizeof h->tensors->name_z)
        return ts_error_set(TS_E_UNSUPPORTED, "%s: tensor '%.64s...': name longer than %zu bytes",
                            path, st->name, sizeof h->tensors->name_z - 1);
    if (st->file_offset % (uint64_t)(ts_st_dtype_bits(st->dtype) / 8) != 0)
        return ts_error_set(TS_E_UNSUPPORTED, "%s: tensor '%s': data at file offset %" PRIu64
                            " is not aligned to its %d-byte elements", path, st->name,
                            st->file_offset, (ts_st_dtype_bits(st->dtype) / 8));
    ts_gguf_tensor *t = add_tensor(h);
    if (!t) return ts_error_set(TS_E_NOMEM, "out of memory");
    snprintf(t->name_z, sizeof t->name_z, "%s", name); /* t->name is set once h->tensors stays */
    t->n_dims = st->n_dims ? st->n_dims : 1;
    for (int i = 0; i < TS_GGUF_MAX_DIMS; i++) t->dims[i] = 1;
    for (uint32_t i = 0; i < st->n_dims; i++) t->dims[i] = st->shape[st->n_dims - 1 - i];
    t->type = type;
    t->data = st->data;
    t->n_bytes = st->n_bytes;
    t->n_elems = st->n_elems;
    if (role && role->permute != TS_HF_PERMUTE_NONE && h->arch->hf.permute_qk && st->n_elems)
        return permute_rows(h, st, role->permute == TS_HF_PERMUTE_Q ? h->n_heads : h->n_kv_heads,
                            t);
    return TS_OK;
}

/* A shard's name from the index: a plain file name in the directory. */
static bool plain_name(const char *s) {
    return s[0] && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..");
}

static int open_shard(hf *h, const char *file, ts_safetensors **out) {
    for (size_t i = 0; i < h->own->n_shards; i++) {
        const char *p = ts_safetensors_path(h->own->shards[i]);
        const char *base = strrchr(p, '/');
        if (!strcmp(base ? base + 1 : p, file)) {
            *out = h->own->shards[i];
            return TS_OK;
        }
    }
    ts_safetensors **s = realloc(h->own->shards, (h->own->n_shards + 1) * sizeof *s);
    if (!s) return ts_error_set(TS_E_NOMEM, "out of memory");
    h->own->shards = s;
    char path[PATH_MAX + 300];
    snprintf(path, sizeof path, "%s/%s", h->dir, file);
    int rc = ts_safetensors_open(path, out);
    if (!rc) h->own->shards[h->own->n_shards++] = *out;
    return rc;
}

static int read_index(hf *h) {
    int rc = ts_json_parse_file(h->index_path, &h->own->index);
    if (rc) return rc;
    const ts_json *map = ts_json_get(ts_json_root(h->own->index), "weight_map");
    if (!map || map->type != TS_JSON_OBJECT || map->length == 0)
        return ts_error_set(TS_E_FORMAT, "%s: 'weight_map' missing, empty or not an object",
                            h->index_path);
    for (size_t i = 0; i < map->length; i++) {
        const ts_json_member *m = &map->members[i];
        if (m->value.type != TS_JSON_STRING || !plain_name(m->value.string))
            return ts_error_set(TS_E_FORMAT, "%s: weight_map: tensor '%.200s': the shard must "
                                "be a file name in the directory", h->index_path, m->key);
        ts_safetensors *shard = NULL;
        rc = open_shard(h, m->value.string, &shard);
        if (rc) return rc;
        const ts_st_tensor *st = ts_safetensors_find(shard, m->key);
        if (!st)
            return ts_error_set(TS_E_NOT_FOUND, "%s: tensor '%.200s' is not in shard '%s'",
                                h->index_path, m->key, m->value.string);
        if (ts_json_get(map, m->key) != &m->value)
            return ts_error_set(TS_E_FORMAT, "%s: weight_map lists tensor '%.200s' twice",
                                h->index_path, m->key);
        rc = add_shard_tensor(h, shard, st);
        if (rc) return rc;
    }
    for (size_t i = 0; i < h->own->n_shards; i++) {
        const ts_safetensors *s = h->own->shards[i];
        for (size_t j = 0; j < ts_safetensors_n_tensors(s); j++) {
            const char *name = ts_safetensors_tensor_at(s, j)->name;
            const ts_json *v = ts_json_get(map, name);
            const char *base = strrchr(ts_safetensors_path(s), '/');
            if (!v || strcmp(v->string, base ? base + 1 : ts_safetensors_path(s)))
                return ts_error_set(TS_E_FORMAT, "%s: tensor '%.200s' is not listed for this "
                                    "shard in %s", ts_safetensors_path(s), name, h->index_path);
        }
    }
    return TS_OK;
}

static int read_tensors(hf *h) {
    struct stat st;
    if (stat(h->index_path, &st) == 0) return read_index(h);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/model.safetensors", h->dir);
    if (stat(path, &st) != 0)
        return ts_error_set(TS_E_IO, "%s: no model.safetensors or model.safetensors.index.json "
                            "in the directory", h->dir);
    ts_safetensors *file = NULL;
    int rc = open_shard(h, "model.safetensors", &file);
    for (size_t i = 0; !rc && i < ts_safetensors_n_tensors(file); i++)
        rc = add_shard_tensor(h, file, ts_safetensors_tensor_at(file, i));
    return rc;
}

int ts_hf_open(const char *dir, ts_gguf **out) {
    *out = NULL;
    hf h = {.dir = dir};
    snprintf(h.config_path, sizeof h.config_path, "%s/config.json", dir);
    snprintf(h.index_path, sizeof h.index_path, "%s/model.safetensors.index.json", dir);
    struct stat st;
    if (stat(h.config_path, &st) != 0)
        return ts_error_set(TS_E_IO, "%s: no config.json in the directory (a Hugging Face "
                            "checkpoint has config.json and model.safetensors)", dir);
    h.own = calloc(1, sizeof *h.own);
    if (!h.own) return ts_error_set(TS_E_NOMEM, "out of memory");
    int rc = read_config(&h);
    if (!rc) rc = add_name(&h);
    if (!rc) rc = read_tensors(&h);
    if (rc) {
        for (size_t i = 0; i < h.n_kv; i++) free((void *)h.kvs[i].strs);
        free(h.kvs);
        free(h.tensors);
        release(h.own);
        return rc;
    }
    for (size_t i = 0; i < h.n_tensors; i++)
        h.tensors[i].name = (ts_gguf_str){h.tensors[i].name_z, strlen(h.tensors[i].name_z)};
    return ts_gguf_assemble(dir, h.kvs, h.n_kv, h.tensors, h.n_tensors, release, h.own, out);
}

bool ts_hf_is_checkpoint(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int ts_hf_open_model(const char *path, ts_gguf **out) {
    return ts_hf_is_checkpoint(path) ? ts_hf_open(path, out) : ts_gguf_open(path, out);
}
