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
#include "model/arch.h"
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
    {"tiny", 64, 2, 4, 2, 128, 32000, 512, 10000.0f, true, NULL},
    {"qwen2-tiny", 64, 2, 4, 2, 128, 32000, 512, 1e6f, true, "qwen2"},
    {"110m", 768, 12, 12, 12, 2048, 32000, 2048, 10000.0f, true, NULL},
    {"qwen2.5-0.5b", 896, 24, 14, 2, 4864, 151936, 32768, 1e6f, false, "qwen2"},
    {"qwen2.5-1.5b", 1536, 28, 12, 2, 8960, 151936, 32768, 1e6f, false, "qwen2"},
    {"llama3-8b", 4096, 32, 32, 8, 14336, 128256, 8192, 500000.0f, false, NULL},
};

const char *ts_synth_shape_names(void) {
    return "tiny, qwen2-tiny, 110m, qwen2.5-0.5b, qwen2.5-1.5b, llama3-8b";
}

static const char *shape_arch(const ts_synth_shape *s) {
    return s->arch ? s->arch : "llama";
}

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
        return ts_error_set(TS_E_INVALID,
                            "shape: head size %" PRId32 " (dim / heads) must be even "
                            "for RoPE",
                            s->dim / s->n_heads);
    if (s->arch && strcmp(s->arch, "llama") != 0 && strcmp(s->arch, "qwen2") != 0)
        return ts_error_set(TS_E_INVALID, "shape: architecture '%s' (llama or qwen2)", s->arch);
    const ts_quant_traits *q = ts_quant_traits_of(type);
    if (!q || !q->from_float || !ts_dtype_is_known((uint32_t)type))
        return ts_error_set(TS_E_INVALID,
                            "synth writes weights of type f32, f16, bf16, q8_0 or q4_0, not %s",
                            ts_dtype_name(type));
    int block = ts_dtype_block_elems(type);
    if (block == 0) return ts_error_set(TS_E_INVALID, "shape: unknown weight type %d", (int)type);
    if (s->dim % block != 0 || s->n_ff % block != 0)
        return ts_error_set(TS_E_INVALID, "shape: dim %" PRId32 " and ff %" PRId32 " must be "
                            "multiples of %d for %s", s->dim, s->n_ff, block, ts_dtype_name(type));
    return TS_OK;
}

/* ---- the tensor table ---- */

typedef enum {
    SPEC_MATRIX,     /* rows x cols of the requested type, random */
    SPEC_ONES,       /* a 1-D f32 norm of cols ones */
    SPEC_BIAS,       /* a 1-D f32 vector of cols random values */
    SPEC_ROPE_FREQS, /* rope_freqs.weight: cols Llama 3.1 divisors */
} spec_kind;

typedef struct spec {
    char name[48];
    spec_kind kind;
    int64_t rows, cols; /* rows == 0 for the 1-D kinds */
    float std;
} spec;

static int build_specs(const ts_synth_options *o, spec **out, size_t *n_out) {
    const ts_synth_shape *s = &o->shape;
    bool biases = strcmp(shape_arch(s), "qwen2") == 0;
    size_t n = 2 + (s->tied_output ? 0 : 1) + (o->rope.llama3_freqs ? 1 : 0) +
               (9 + (biases ? 3 : 0)) * (size_t)s->n_layers,
           k = 0;
    spec *sp = calloc(n, sizeof *sp);
    if (!sp) return ts_error_set(TS_E_NOMEM, "out of memory");
    int64_t dim = s->dim, head_dim = s->dim / s->n_heads, kv_dim = head_dim * s->n_kv_heads;
    const float std = o->std > 0.0f ? o->std : SYNTH_STD;
    float out_std = std / sqrtf(2.0f * (float)s->n_layers);
#define ADD(kd, r, c, sd, ...)                                                                     \
    (snprintf(sp[k].name, sizeof sp[k].name, __VA_ARGS__), sp[k].kind = (kd), sp[k].rows = (r),    \
     sp[k].cols = (c), sp[k].std = (sd), k++)
    ADD(SPEC_MATRIX, s->n_vocab, dim, std, "token_embd.weight");
    ADD(SPEC_ONES, 0, dim, 0, "output_norm.weight");
    if (!s->tied_output) ADD(SPEC_MATRIX, s->n_vocab, dim, std, "output.weight");
    if (o->rope.llama3_freqs) ADD(SPEC_ROPE_FREQS, 0, head_dim / 2, 0, "rope_freqs.weight");
    for (int32_t i = 0; i < s->n_layers; i++) {
        ADD(SPEC_ONES, 0, dim, 0, "blk.%" PRId32 ".attn_norm.weight", i);
        ADD(SPEC_MATRIX, dim, dim, std, "blk.%" PRId32 ".attn_q.weight", i);
        ADD(SPEC_MATRIX, kv_dim, dim, std, "blk.%" PRId32 ".attn_k.weight", i);
        ADD(SPEC_MATRIX, kv_dim, dim, std, "blk.%" PRId32 ".attn_v.weight", i);
        if (biases) { /* biases of order one, as trained Qwen2 checkpoints have on q and k */
            ADD(SPEC_BIAS, 0, dim, 0.5f, "blk.%" PRId32 ".attn_q.bias", i);
            ADD(SPEC_BIAS, 0, kv_dim, 0.5f, "blk.%" PRId32 ".attn_k.bias", i);
            ADD(SPEC_BIAS, 0, kv_dim, std, "blk.%" PRId32 ".attn_v.bias", i);
        }
        ADD(SPEC_MATRIX, dim, dim, out_std, "blk.%" PRId32 ".attn_output.weight", i);
        ADD(SPEC_ONES, 0, dim, 0, "blk.%" PRId32 ".ffn_norm.weight", i);
        ADD(SPEC_MATRIX, s->n_ff, dim, std, "blk.%" PRId32 ".ffn_gate.weight", i);
        ADD(SPEC_MATRIX, s->n_ff, dim, std, "blk.%" PRId32 ".ffn_up.weight", i);
        ADD(SPEC_MATRIX, dim, s->n_ff, out_std, "blk.%" PRId32 ".ffn_down.weight", i);
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
    default: return 0; /* synth writes no other type (ts_synth_shape_check) */
    }
}

static int add_metadata(ts_gguf_writer *w, const ts_synth_options *o) {
    const ts_synth_shape *s = &o->shape;
    const char *arch = shape_arch(s);
    char name[96], key[96];
    snprintf(name, sizeof name, "tessera-synth-%s-%s", s->name ? s->name : "custom",
             ts_dtype_name(o->type));
#define KEY(suffix) (snprintf(key, sizeof key, "%s." suffix, arch), key)
    int rc = ts_gguf_writer_add_str(w, "general.architecture", arch);
    if (!rc) rc = ts_gguf_writer_add_str(w, "general.name", name);
    if (!rc) rc = ts_gguf_writer_add_u32(w, "general.file_type", file_type(o->type));
    if (!rc) rc = ts_gguf_writer_add_u32(w, "general.quantization_version", 2);
    if (!rc) rc = ts_gguf_writer_add_u64(w, "tessera.synth.seed", o->seed);
    if (!rc) rc = ts_gguf_writer_add_u32(w, KEY("vocab_size"), (uint32_t)s->n_vocab);
    if (!rc) rc = ts_gguf_writer_add_u32(w, KEY("context_length"), (uint32_t)s->n_ctx);
    if (!rc) rc = ts_gguf_writer_add_u32(w, KEY("embedding_length"), (uint32_t)s->dim);
    if (!rc) rc = ts_gguf_writer_add_u32(w, KEY("block_count"), (uint32_t)s->n_layers);
    if (!rc) rc = ts_gguf_writer_add_u32(w, KEY("feed_forward_length"), (uint32_t)s->n_ff);
    if (!rc) rc = ts_gguf_writer_add_u32(w, KEY("attention.head_count"), (uint32_t)s->n_heads);
    if (!rc)
        rc = ts_gguf_writer_add_u32(w, KEY("attention.head_count_kv"), (uint32_t)s->n_kv_heads);
    if (!rc)
        rc =
            ts_gguf_writer_add_u32(w, KEY("rope.dimension_count"), (uint32_t)(s->dim / s->n_heads));
    if (!rc) rc = ts_gguf_writer_add_f32(w, KEY("rope.freq_base"), s->rope_theta);
    if (!rc) rc = ts_gguf_writer_add_f32(w, KEY("attention.layer_norm_rms_epsilon"), 1e-5f);
    if (!rc && o->rope.linear_factor > 0.0f) {
        rc = ts_gguf_writer_add_str(w, KEY("rope.scaling.type"), "linear");
        if (!rc) rc = ts_gguf_writer_add_f32(w, KEY("rope.scaling.factor"), o->rope.linear_factor);
    }
#undef KEY
    return rc;
}

/* Llama 3.1's frequency divisors with its published parameters (factor 8, low 1, high 4) and
 * the shape's context as the original one. */
static void llama3_rope_factors(const ts_synth_shape *s, float *out, int64_t n) {
    ts_arch_llama3_rope_factors((double)s->rope_theta, 2 * n, 8.0, 1.0, 4.0, (double)s->n_ctx, out);
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

static int write_tensor(stream *st, const ts_synth_options *o, const spec *sp, size_t index) {
    ts_rng rng;
    ts_rng_seed(&rng, o->seed ^ (0x9e3779b97f4a7c15ULL * (index + 1)));
    if (sp->kind != SPEC_MATRIX) { /* 1-D, f32 */
        for (int64_t i = 0; i < sp->cols; i++)
            st->values[i] = sp->kind == SPEC_ONES ? 1.0f : fast_normal(&rng) * sp->std;
        if (sp->kind == SPEC_ROPE_FREQS) llama3_rope_factors(&o->shape, st->values, sp->cols);
        return ts_gguf_writer_write_data(st->w, st->values, (size_t)sp->cols * sizeof(float));
    }
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

/* 1-D tensors are f32; matrices have the requested type. */
static ts_dtype spec_type(const spec *sp, ts_dtype weights) {
    return sp->kind == SPEC_MATRIX ? weights : TS_DTYPE_F32;
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
        rc = write_tensor(&st, o, &specs[i], i);
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
    if (!rc) rc = build_specs(o, &specs, &n_specs);
    if (!rc) rc = write_model(w, o, specs, n_specs, path);
    ts_gguf_writer_destroy(w);
    free(specs);
    return rc;
}
