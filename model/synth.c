/*
 * synth.c — see synth.h.
 *
 * One table of tensor specs drives both the declarations (header) and the data stream, so the
 * two can never disagree about order or size. Each tensor has its own random stream seeded from
 * (seed, tensor index): a tensor's values do not depend on the ones before it.
 *
 * Speed: Box–Muller costs a log, a sqrt and a cosine per value, which is minutes for an 8B
 * model. A sum of four 16-bit uniforms (Irwin–Hall) from one 64-bit draw is close enough to a
 * normal for benchmark weights and costs a few instructions.
 */
#include "model/synth.h"

#include "common/error.h"
#include "common/paths.h"
#include "common/rng.h"
#include "kernels/quant.h"
#include "model/gguf.h"
#include "model/gguf_write.h"

#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SYNTH_DEFAULT_VOCAB "models/vocab/llama-spm-32000.gguf"
#define SYNTH_STD 0.02f

enum { SYNTH_CHUNK_ELEMS = 1 << 20 }; /* f32 values generated per write (4 MiB) */

static const ts_synth_shape shapes[] = {
    {"tiny", 64, 2, 4, 2, 128, 32000, 512, 10000.0f, true},
    {"110m", 768, 12, 12, 12, 2048, 32000, 2048, 10000.0f, true},
    {"llama3-8b", 4096, 32, 32, 8, 14336, 128256, 8192, 500000.0f, false},
};

const char *ts_synth_shape_names(void) { return "tiny, 110m, llama3-8b"; }

int ts_synth_shape_by_name(const char *name, ts_synth_shape *out) {
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        if (strcmp(name, shapes[i].name) == 0) {
            *out = shapes[i];
            return TS_OK;
        }
    }
    return ts_error_set(TS_E_INVALID, "unknown shape '%s' (known: %s)", name, ts_synth_shape_names());
}

int ts_synth_shape_check(const ts_synth_shape *s, ts_dtype type) {
    /* The upper limits are far beyond any real model and keep every buffer and count sane. */
    const struct { const char *what; int32_t v, max; } sizes[] = {
        {"dim", s->dim, 1 << 16},       {"layers", s->n_layers, 1 << 10},
        {"heads", s->n_heads, 1 << 10}, {"kv-heads", s->n_kv_heads, 1 << 10},
        {"ff", s->n_ff, 1 << 18},       {"vocab", s->n_vocab, 1 << 22},
        {"ctx", s->n_ctx, 1 << 24},
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (sizes[i].v <= 0 || sizes[i].v > sizes[i].max)
            return ts_error_set(TS_E_INVALID, "shape: %s must be between 1 and %" PRId32 ", got %"
                                PRId32, sizes[i].what, sizes[i].max, sizes[i].v);
    if (s->dim % s->n_heads != 0)
        return ts_error_set(TS_E_INVALID, "shape: dim %" PRId32 " is not a multiple of heads %" PRId32,
                            s->dim, s->n_heads);
    if (s->n_kv_heads > s->n_heads || s->n_heads % s->n_kv_heads != 0)
        return ts_error_set(TS_E_INVALID, "shape: heads %" PRId32 " is not a multiple of kv-heads "
                            "%" PRId32, s->n_heads, s->n_kv_heads);
    if ((s->dim / s->n_heads) % 2 != 0)
        return ts_error_set(TS_E_INVALID, "shape: head size %" PRId32 " (dim / heads) must be even "
                            "for RoPE", s->dim / s->n_heads);
    int block = ts_dtype_block_elems(type);
    if (block == 0) return ts_error_set(TS_E_INVALID, "shape: unknown weight type %d", (int)type);
    if (s->dim % block != 0 || s->n_ff % block != 0)
        return ts_error_set(TS_E_INVALID, "shape: dim %" PRId32 " and ff %" PRId32 " must be "
                            "multiples of %d for %s", s->dim, s->n_ff, block, ts_dtype_name(type));
    return TS_OK;
}

/* ---- the tensor table ---- */

typedef struct spec {
    char name[48];
    int64_t rows, cols; /* rows == 0: a 1-D norm of cols ones */
    float std;
} spec;

static int build_specs(const ts_synth_shape *s, spec **out, size_t *n_out) {
    size_t n = 2 + (s->tied_output ? 0 : 1) + 9 * (size_t)s->n_layers, k = 0;
    spec *sp = calloc(n, sizeof *sp);
    if (!sp) return ts_error_set(TS_E_NOMEM, "out of memory");
    int64_t dim = s->dim, head_dim = s->dim / s->n_heads, kv_dim = head_dim * s->n_kv_heads;
    float out_std = SYNTH_STD / sqrtf(2.0f * (float)s->n_layers);
#define ADD(r, c, sd, ...) \
    (snprintf(sp[k].name, sizeof sp[k].name, __VA_ARGS__), sp[k].rows = (r), sp[k].cols = (c), \
     sp[k].std = (sd), k++)
    ADD(s->n_vocab, dim, SYNTH_STD, "token_embd.weight");
    ADD(0, dim, 0, "output_norm.weight");
    if (!s->tied_output) ADD(s->n_vocab, dim, SYNTH_STD, "output.weight");
    for (int32_t i = 0; i < s->n_layers; i++) {
        ADD(0, dim, 0, "blk.%" PRId32 ".attn_norm.weight", i);
        ADD(dim, dim, SYNTH_STD, "blk.%" PRId32 ".attn_q.weight", i);
        ADD(kv_dim, dim, SYNTH_STD, "blk.%" PRId32 ".attn_k.weight", i);
        ADD(kv_dim, dim, SYNTH_STD, "blk.%" PRId32 ".attn_v.weight", i);
        ADD(dim, dim, out_std, "blk.%" PRId32 ".attn_output.weight", i);
        ADD(0, dim, 0, "blk.%" PRId32 ".ffn_norm.weight", i);
        ADD(s->n_ff, dim, SYNTH_STD, "blk.%" PRId32 ".ffn_gate.weight", i);
        ADD(s->n_ff, dim, SYNTH_STD, "blk.%" PRId32 ".ffn_up.weight", i);
        ADD(dim, s->n_ff, out_std, "blk.%" PRId32 ".ffn_down.weight", i);
    }
#undef ADD
    TS_ASSERT(k == n);
    *out = sp;
    *n_out = n;
    return TS_OK;
}

/* ---- metadata ---- */

/* llama.cpp's general.file_type values, so other GGUF tools describe our files correctly. */
static uint32_t file_type(ts_dtype t) {
    switch (t) {
    case TS_DTYPE_F32: return 0;
    case TS_DTYPE_F16: return 1;
    case TS_DTYPE_Q4_0: return 2;
    case TS_DTYPE_Q8_0: return 7;
    case TS_DTYPE_BF16: return 32;
    }
    return 0;
}

static int add_metadata(ts_gguf_writer *w, const ts_synth_options *o) {
    const ts_synth_shape *s = &o->shape;
    char name[96];
    snprintf(name, sizeof name, "tessera-synth-%s-%s", s->name ? s->name : "custom",
             ts_dtype_name(o->type));
    int rc = ts_gguf_writer_add_str(w, "general.architecture", "llama");
    if (!rc) rc = ts_gguf_writer_add_str(w, "general.name", name);
    if (!rc) rc = ts_gguf_writer_add_u32(w, "general.file_type", file_type(o->type));
    if (!rc) rc = ts_gguf_writer_add_u32(w, "general.quantization_version", 2);
    if (!rc) rc = ts_gguf_writer_add_u64(w, "tessera.synth.seed", o->seed);
    if (!rc) rc = ts_gguf_writer_add_u32(w, "llama.vocab_size", (uint32_t)s->n_vocab);
    if (!rc) rc = ts_gguf_writer_add_u32(w, "llama.context_length", (uint32_t)s->n_ctx);
    if (!rc) rc = ts_gguf_writer_add_u32(w, "llama.embedding_length", (uint32_t)s->dim);
    if (!rc) rc = ts_gguf_writer_add_u32(w, "llama.block_count", (uint32_t)s->n_layers);
    if (!rc) rc = ts_gguf_writer_add_u32(w, "llama.feed_forward_length", (uint32_t)s->n_ff);
    if (!rc) rc = ts_gguf_writer_add_u32(w, "llama.attention.head_count", (uint32_t)s->n_heads);
    if (!rc) rc = ts_gguf_writer_add_u32(w, "llama.attention.head_count_kv", (uint32_t)s->n_kv_heads);
    if (!rc) rc = ts_gguf_writer_add_u32(w, "llama.rope.dimension_count", (uint32_t)(s->dim / s->n_heads));
    if (!rc) rc = ts_gguf_writer_add_f32(w, "llama.rope.freq_base", s->rope_theta);
    if (!rc) rc = ts_gguf_writer_add_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    return rc;
}

static int add_tokenizer(ts_gguf_writer *w, const ts_synth_options *o) {
    if (o->vocab_path && strcmp(o->vocab_path, "none") == 0) return TS_OK;
    char found[PATH_MAX];
    const char *path = o->vocab_path;
    if (!path) {
        int rc = ts_find_data_file(SYNTH_DEFAULT_VOCAB, found, sizeof found);
        if (rc) return ts_error_wrap(rc, "default vocabulary");
        path = found;
    }
    ts_gguf *vocab;
    int rc = ts_gguf_open(path, &vocab);
    if (rc) return rc;
    const ts_gguf_kv *tokens;
    rc = ts_gguf_get_array(vocab, "tokenizer.ggml.tokens", TS_GGUF_STRING, &tokens);
    if (!rc && tokens->n_elems != (uint64_t)o->shape.n_vocab)
        rc = ts_error_set(TS_E_INVALID, "%s: vocabulary has %" PRIu64 " tokens, but shape '%s' "
                          "needs %" PRId32 " (give a matching vocab GGUF, or 'none')", path,
                          tokens->n_elems, o->shape.name ? o->shape.name : "custom",
                          o->shape.n_vocab);
    if (!rc) rc = ts_gguf_writer_copy_kvs(w, vocab, "tokenizer.", NULL);
    ts_gguf_close(vocab);
    return rc;
}

/* ---- weights ---- */

/* Approximately N(0, 1): the sum of four uniform 16-bit values has mean 2 and variance 4/12. */
static float fast_normal(ts_rng *rng) {
    uint64_t r = ts_rng_next(rng);
    uint32_t sum = (uint32_t)(r & 0xffff) + (uint32_t)((r >> 16) & 0xffff) +
                   (uint32_t)((r >> 32) & 0xffff) + (uint32_t)(r >> 48);
    const float scale = 1.7320508f / 65536.0f; /* sqrt(3) / 2^16: unit variance */
    return ((float)sum - 2.0f * 65535.0f) * scale;
}

typedef struct stream {
    ts_gguf_writer *w;
    ts_dtype type;
    float *values;  /* SYNTH_CHUNK_ELEMS (or one row, if longer) */
    uint8_t *bytes; /* the same rows converted */
    size_t capacity;
} stream;

static int write_tensor(stream *st, const spec *sp, uint64_t seed, size_t index) {
    if (sp->rows == 0) { /* a norm: f32 ones */
        for (int64_t i = 0; i < sp->cols; i++) st->values[i] = 1.0f;
        return ts_gguf_writer_write_data(st->w, st->values, (size_t)sp->cols * sizeof(float));
    }
    ts_rng rng;
    ts_rng_seed(&rng, seed ^ (0x9e3779b97f4a7c15ULL * (index + 1)));
    size_t row_bytes = ts_dtype_row_bytes(st->type, sp->cols);
    int64_t rows_per_chunk = (int64_t)(st->capacity / (size_t)sp->cols);
    for (int64_t r0 = 0; r0 < sp->rows; r0 += rows_per_chunk) {
        int64_t n_rows = sp->rows - r0 < rows_per_chunk ? sp->rows - r0 : rows_per_chunk;
        size_t n = (size_t)(n_rows * sp->cols);
        for (size_t i = 0; i < n; i++) st->values[i] = fast_normal(&rng) * sp->std;
        for (int64_t r = 0; r < n_rows; r++)
            ts_quantize_row(st->type, st->values + r * sp->cols, st->bytes + (size_t)r * row_bytes,
                            sp->cols);
        int rc = ts_gguf_writer_write_data(st->w, st->bytes, (size_t)n_rows * row_bytes);
        if (rc) return rc;
    }
    return TS_OK;
}

/* Norms are f32; everything else has the requested type. */
static ts_dtype spec_type(const spec *sp, ts_dtype weights) {
    return sp->rows ? weights : TS_DTYPE_F32;
}

static uint64_t spec_bytes(const spec *sp, ts_dtype weights) {
    return ts_dtype_row_bytes(spec_type(sp, weights), sp->cols) * (uint64_t)(sp->rows ? sp->rows : 1);
}

static int write_model(ts_gguf_writer *w, const ts_synth_options *o, const spec *specs,
                       size_t n_specs, const char *path) {
    int64_t max_cols = 0;
    uint64_t total = 0, done = 0;
    for (size_t i = 0; i < n_specs; i++) {
        const spec *sp = &specs[i];
        int64_t dims[2] = {sp->cols, sp->rows};
        int rc = ts_gguf_writer_add_tensor(w, sp->name, spec_type(sp, o->type), sp->rows ? 2 : 1,
                                           dims, NULL);
        if (rc) return rc;
        if (sp->cols > max_cols) max_cols = sp->cols;
        total += spec_bytes(sp, o->type);
    }
    stream st = {.w = w, .type = o->type};
    st.capacity = (size_t)max_cols > SYNTH_CHUNK_ELEMS ? (size_t)max_cols : SYNTH_CHUNK_ELEMS;
    st.values = malloc(st.capacity * sizeof(float));
    st.bytes = malloc(st.capacity * sizeof(float)); /* no stored type is wider than f32 */
    int rc = (st.values && st.bytes) ? TS_OK : ts_error_set(TS_E_NOMEM, "out of memory");
    if (!rc) rc = ts_gguf_writer_begin(w, path);
    for (size_t i = 0; !rc && i < n_specs; i++) {
        rc = write_tensor(&st, &specs[i], o->seed, i);
        done += spec_bytes(&specs[i], o->type);
        if (!rc && o->progress) o->progress(o->progress_ctx, done, total);
    }
    if (!rc) rc = ts_gguf_writer_finish(w);
    free(st.values);
    free(st.bytes);
    return rc;
}

int ts_synth_write(const ts_synth_options *o, const char *path) {
    int rc = ts_synth_shape_check(&o->shape, o->type);
    if (rc) return rc;
    ts_gguf_writer *w = NULL;
    spec *specs = NULL;
    size_t n_specs = 0;
    rc = ts_gguf_writer_create(&w);
    if (!rc) rc = add_metadata(w, o);
    if (!rc) rc = add_tokenizer(w, o);
    if (!rc) rc = build_specs(&o->shape, &specs, &n_specs);
    if (!rc) rc = write_model(w, o, specs, n_specs, path);
    ts_gguf_writer_destroy(w);
    free(specs);
    return rc;
}
