/* test_model.c — the model loader: the bundled models, defaults, the architectures (llama,
 * qwen2), RoPE scaling, and one test per way a model file can be inconsistent or ask for maths
 * we do not compute (each checks the code and that the message names the file and the key or
 * tensor). */
#include "common/buf.h"
#include "common/error.h"
#include "model/gguf.h"
#include "model/gguf_write.h"
#include "model/model.h"
#include "model/synth.h"
#include "tests/unit/test.h"
#include "tests/unit/test_gguf_util.h"

#include <unistd.h>

#define STORIES_F32 TS_SOURCE_DIR "/models/stories260K/stories260K-f32.gguf"
#define STORIES_F16 TS_SOURCE_DIR "/models/stories260K/stories260K-f16.gguf"

static bool contains(const char *haystack, const char *needle) {
    bool found = strstr(haystack, needle) != NULL;
    if (!found) fprintf(stderr, "  message \"%s\" lacks \"%s\"\n", haystack, needle);
    return found;
}

/* Builds the fixture as "m.gguf" and loads it: returns the code, *out filled on success. */
static int load_fixture(const fixture *f, ts_buf *image, ts_gguf **g, ts_model *m) {
    *g = NULL;
    memset(m, 0xab, sizeof *m); /* the loader must clear it even on failure */
    int rc = fixture_build(f, image);
    if (!rc) rc = ts_gguf_open_memory(image->data, image->len, "m.gguf", g);
    if (!rc) rc = ts_model_load(*g, m);
    return rc;
}

/* Loads the fixture and expects failure with `code` and a message containing `needle`. */
static void expect_load_fail(const fixture *f, int code, const char *needle) {
    ts_buf image = {0};
    ts_gguf *g;
    ts_model m;
    int rc = load_fixture(f, &image, &g, &m);
    CHECK_EQ_INT(rc, code);
    CHECK(g != NULL); /* the GGUF itself is valid */
    CHECK(m.layers == NULL);
    CHECK(contains(ts_error_message(), needle));
    ts_model_free(&m);
    ts_gguf_close(g);
    ts_buf_free(&image);
}

static void check_stories(const char *path, ts_dtype type) {
    ts_gguf *g = NULL;
    CHECK_OK(ts_gguf_open(path, &g));
    if (!g) return;
    ts_model m;
    CHECK_OK(ts_model_load(g, &m));
    const ts_model_hparams *hp = &m.hp;
    CHECK_EQ_INT(hp->dim, 64);
    CHECK_EQ_INT(hp->n_layers, 5);
    CHECK_EQ_INT(hp->n_heads, 8);
    CHECK_EQ_INT(hp->n_kv_heads, 4);
    CHECK_EQ_INT(hp->head_dim, 8);
    CHECK_EQ_INT(hp->rope_dims, 8);
    CHECK_EQ_INT(hp->n_vocab, 512);
    CHECK_EQ_INT(hp->n_ff, 172);
    CHECK_EQ_INT(hp->n_ctx_train, 128);
    CHECK_NEAR(hp->rope_theta, 10000, 0);
    CHECK_NEAR(hp->rms_eps, 1e-5, 1e-12);
    /* The model's weights are tied; the converter stored the embedding twice, and an identical
     * output.weight counts as tied. */
    CHECK(hp->tied_output);
    CHECK(m.output.data == m.token_embd.data);
    CHECK(ts_gguf_find_tensor(g, "output.weight") != NULL);
    CHECK_EQ_INT(m.token_embd.type, type);
    CHECK_EQ_INT(m.token_embd.rows, 512);
    CHECK_EQ_INT(m.token_embd.cols, 64);
    CHECK_EQ_INT(m.output_norm.type, TS_DTYPE_F32);
    CHECK_EQ_INT(m.output_norm.n, 64);
    for (int i = 0; i < 5; i++) {
        const ts_model_layer *l = &m.layers[i];
        CHECK(l->wq.rows == 64 && l->wq.cols == 64 && l->wq.type == type);
        CHECK(l->wk.rows == 32 && l->wk.cols == 64);
        CHECK(l->wv.rows == 32 && l->wv.cols == 64);
        CHECK(l->wo.rows == 64 && l->wo.cols == 64);
        CHECK(l->w_gate.rows == 172 && l->w_gate.cols == 64);
        CHECK(l->w_up.rows == 172 && l->w_up.cols == 64);
        CHECK(l->w_down.rows == 64 && l->w_down.cols == 172);
        CHECK_EQ_INT(l->w_down.row_stride, 172 * (type == TS_DTYPE_F32 ? 4 : 2));
        CHECK(l->attn_norm.n == 64 && l->attn_norm.type == TS_DTYPE_F32);
        char name[64];
        snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", i);
        CHECK(l->ffn_norm.data == ts_gguf_find_tensor(g, name)->data);
    }
    /* every matrix, both norms per layer, the final norm, the head and one embedding row */
    int es = type == TS_DTYPE_F32 ? 4 : 2;
    uint64_t layer = (uint64_t)(64 * 64 * 2 + 32 * 64 * 2 + 172 * 64 * 3) * es + 2 * 64 * 4;
    uint64_t expected = 5 * layer + 64 * 4 + 512 * 64 * es + 64 * es;
    CHECK_EQ_INT(ts_model_bytes_per_token(&m), expected);
    ts_model_free(&m);
    CHECK(m.layers == NULL);
    ts_model_free(&m); /* twice is fine */
    ts_gguf_close(g);
}

/* A quantized weight with a NaN block scale is refused at load, naming the tensor and row. */
static void test_refuses_non_finite_block_scales(void) {
    fixture f = fixture_default();
    f.type = TS_DTYPE_Q8_0;
    ts_buf image = {0};
    ts_gguf *g = NULL;
    CHECK_OK(fixture_build(&f, &image));
    CHECK_OK(ts_gguf_open_memory(image.data, image.len, "m.gguf", &g));
    const ts_gguf_tensor *t = g ? ts_gguf_find_tensor(g, "blk.1.ffn_up.weight") : NULL;
    CHECK(t != NULL);
    if (t) {
        /* row 2 (of 96 x 64 q8_0: 68 bytes a row), its second block's d */
        uint8_t *d = (uint8_t *)t->data + 2 * 68 + 34;
        d[0] = 0x00, d[1] = 0x7e; /* f16 NaN */
        ts_model m;
        CHECK_EQ_INT(ts_model_load(g, &m), TS_E_FORMAT);
        CHECK(contains(ts_error_message(),
                       "m.gguf: tensor 'blk.1.ffn_up.weight': row 2 has a non-finite q8_0 block scale"));
        ts_model_free(&m);
    }
    ts_gguf_close(g);
    ts_buf_free(&image);
}

static void test_loads_bundled_stories_f32(void) { check_stories(STORIES_F32, TS_DTYPE_F32); }
static void test_loads_bundled_stories_f16(void) { check_stories(STORIES_F16, TS_DTYPE_F16); }

static void test_defaults_and_tied_output(void) {
    fixture f = fixture_default();
    f.tied = true;
    f.type = TS_DTYPE_Q8_0;
    ts_buf image = {0};
    ts_gguf *g;
    ts_model m;
    CHECK_OK(load_fixture(&f, &image, &g, &m));
    if (m.layers) {
        CHECK(m.hp.tied_output);
        CHECK(m.output.data == m.token_embd.data && m.output.rows == 40);
        CHECK_EQ_INT(m.hp.head_dim, 16);   /* dim / heads */
        CHECK_EQ_INT(m.hp.rope_dims, 16);  /* head_dim */
        CHECK_NEAR(m.hp.rope_theta, 10000, 0);
        CHECK_NEAR(m.hp.rms_eps, 1e-5, 1e-12);
        CHECK_EQ_INT(m.layers[1].wk.rows, 32); /* 2 KV heads of 16 */
        CHECK_EQ_INT(m.layers[1].wk.type, TS_DTYPE_Q8_0);
        CHECK_EQ_INT(m.layers[1].wk.row_stride, 2 * 34);
    }
    ts_model_free(&m);
    ts_gguf_close(g);
    ts_buf_free(&image);
    /* an output head that differs from the embedding is separate */
    f = fixture_default();
    CHECK_OK(load_fixture(&f, &image, &g, &m));
    CHECK(!m.hp.tied_output);
    CHECK(m.output.data != m.token_embd.data && m.output.data == ts_gguf_find_tensor(g, "output.weight")->data);
    ts_model_free(&m);
    ts_gguf_close(g);
    ts_buf_free(&image);
    /* head_count_kv defaults to head_count */
    f = fixture_default();
    f.n_kv_heads = f.n_heads;
    f.skip_key = "llama.attention.head_count_kv";
    CHECK_OK(load_fixture(&f, &image, &g, &m));
    CHECK_EQ_INT(m.hp.n_kv_heads, 4);
    ts_model_free(&m);
    ts_gguf_close(g);
    ts_buf_free(&image);
}

static void test_refuses_missing_tensors(void) {
    const char *names[] = {"blk.1.ffn_up.weight", "token_embd.weight", "output_norm.weight",
                           "blk.0.attn_norm.weight"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        fixture f = fixture_default();
        f.skip_tensor = names[i];
        char expected[128];
        snprintf(expected, sizeof expected, "m.gguf: missing tensor '%s'", names[i]);
        expect_load_fail(&f, TS_E_NOT_FOUND, expected);
    }
}

static void test_refuses_shape_mismatches(void) {
    const struct { const char *name, *message; } cases[] = {
        {"blk.1.ffn_up.weight", "m.gguf: tensor 'blk.1.ffn_up.weight': shape [64, 95], expected [64, 96]"},
        {"blk.0.attn_k.weight", "m.gguf: tensor 'blk.0.attn_k.weight': shape [64, 31], expected [64, 32]"},
        {"output.weight", "m.gguf: tensor 'output.weight': shape [64, 39], expected [64, 40]"},
        {"blk.1.ffn_norm.weight", "m.gguf: tensor 'blk.1.ffn_norm.weight': shape [63], expected [64]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fixture f = fixture_default();
        f.reshape_tensor = cases[i].name;
        expect_load_fail(&f, TS_E_FORMAT, cases[i].message);
    }
}

static void test_refuses_quantized_norms(void) {
    fixture f = fixture_default();
    f.retype_tensor = "blk.0.attn_norm.weight";
    expect_load_fail(&f, TS_E_UNSUPPORTED, "m.gguf: tensor 'blk.0.attn_norm.weight': type q8_0 is not supported for a norm");
}

static void test_refuses_missing_and_mistyped_keys(void) {
    fixture f = fixture_default();
    f.skip_key = "llama.block_count";
    expect_load_fail(&f, TS_E_NOT_FOUND, "m.gguf: missing key 'llama.block_count'");
    f.skip_key = "llama.embedding_length";
    expect_load_fail(&f, TS_E_NOT_FOUND, "m.gguf: missing key 'llama.embedding_length'");
    f.skip_key = "general.architecture";
    expect_load_fail(&f, TS_E_NOT_FOUND, "m.gguf: missing key 'general.architecture'");
    f.skip_key = NULL;
    f.string_key = "llama.block_count";
    expect_load_fail(&f, TS_E_FORMAT, "m.gguf: key 'llama.block_count': expected uint32, found string");
    f.string_key = "llama.attention.head_count_kv";
    expect_load_fail(&f, TS_E_FORMAT, "m.gguf: key 'llama.attention.head_count_kv': expected uint32, found string");
    f.string_key = NULL;
    f.arch = "gpt2";
    expect_load_fail(&f, TS_E_UNSUPPORTED, "m.gguf: architecture 'gpt2' is not supported");
}

static void test_refuses_inconsistent_hparams(void) {
    fixture f = fixture_default();
    f.n_kv_heads = 3;
    expect_load_fail(&f, TS_E_FORMAT, "m.gguf: head_count 4 is not a multiple of head_count_kv 3");
    f = fixture_default();
    f.n_heads = 3; /* 64 / 3 */
    f.n_kv_heads = 1;
    expect_load_fail(&f, TS_E_FORMAT, "m.gguf: embedding_length 64 is not a multiple of head_count 3");
    f = fixture_default();
    f.n_layers = 0;
    expect_load_fail(&f, TS_E_FORMAT, "m.gguf: key 'llama.block_count': 0 is out of range");
}

/* Loads the fixture with one more key (a uint32, or float32 bits) and expects failure. */
static void expect_patched_fail(const char *key, ts_gguf_type type, uint32_t bits, int code,
                                const char *needle) {
    ts_buf image = {0};
    fixture f = fixture_default();
    CHECK_OK(fixture_build(&f, &image));
    ts_gguf_writer *w;
    ts_gguf *src = NULL;
    CHECK_OK(ts_gguf_open_memory(image.data, image.len, "src.gguf", &src));
    CHECK_OK(ts_gguf_writer_create(&w));
    CHECK_OK(ts_gguf_writer_copy_kvs(w, src, NULL, NULL));
    CHECK_OK(ts_gguf_writer_add_u32(w, key, bits));
    for (size_t i = 0; src && i < ts_gguf_n_tensors(src); i++) {
        const ts_gguf_tensor *t = ts_gguf_tensor_at(src, i);
        CHECK_OK(ts_gguf_writer_add_tensor(w, t->name_z, t->type, t->n_dims, t->dims, t->data));
    }
    ts_buf patched = {0};
    CHECK_OK(ts_gguf_writer_write_buf(w, &patched));
    long at = image_find(&patched, key) + (long)strlen(key);
    image_put_u32(&patched, at, type); /* float32 bits are written as a uint32 first */
    ts_gguf *g = NULL;
    CHECK_OK(ts_gguf_open_memory(patched.data, patched.len, "m.gguf", &g));
    ts_model m;
    if (g) {
        CHECK_EQ_INT(ts_model_load(g, &m), code);
        CHECK(contains(ts_error_message(), needle));
        ts_model_free(&m);
    }
    ts_gguf_close(g);
    ts_gguf_close(src);
    ts_gguf_writer_destroy(w);
    ts_buf_free(&patched);
    ts_buf_free(&image);
}

static void test_refuses_bad_optional_hparams(void) {
    expect_patched_fail("llama.rope.dimension_count", TS_GGUF_UINT32, 18, TS_E_FORMAT,
                        "m.gguf: rope.dimension_count 18 must be even and at most the head size 16");
    expect_patched_fail("llama.rope.dimension_count", TS_GGUF_UINT32, 7, TS_E_FORMAT, "rope.dimension_count 7");
    expect_patched_fail("llama.attention.value_length", TS_GGUF_UINT32, 8, TS_E_UNSUPPORTED,
                        "m.gguf: value_length 8 differs from key_length 16");
    expect_patched_fail("llama.attention.key_length", TS_GGUF_UINT32, 8, TS_E_FORMAT,
                        "m.gguf: tensor 'blk.0.attn_q.weight': shape [64, 64], expected [64, 32]");
    expect_patched_fail("llama.vocab_size", TS_GGUF_UINT32, 41, TS_E_FORMAT,
                        "m.gguf: key 'llama.vocab_size': 41 but tensor 'token_embd.weight' has 40 rows");
    expect_patched_fail("llama.rope.freq_base", TS_GGUF_FLOAT32, 0x7fc00000u /* NaN */, TS_E_FORMAT,
                        "m.gguf: key 'llama.rope.freq_base': nan is out of range");
    expect_patched_fail("llama.attention.layer_norm_rms_epsilon", TS_GGUF_FLOAT32, 0xbf800000u /* -1 */, TS_E_FORMAT,
                        "key 'llama.attention.layer_norm_rms_epsilon': -1 is out of range");
    /* a vocabulary that disagrees with the embedding */
    ts_buf image = {0};
    fixture f = fixture_default();
    CHECK_OK(fixture_build(&f, &image));
    ts_gguf *src = NULL, *g = NULL;
    CHECK_OK(ts_gguf_open_memory(image.data, image.len, "src.gguf", &src));
    ts_gguf_writer *w;
    CHECK_OK(ts_gguf_writer_create(&w));
    CHECK_OK(ts_gguf_writer_copy_kvs(w, src, NULL, NULL));
    const char *tokens[] = {"a", "b", "c"};
    CHECK_OK(ts_gguf_writer_add_str_array(w, "tokenizer.ggml.tokens", tokens, 3));
    for (size_t i = 0; src && i < ts_gguf_n_tensors(src); i++) {
        const ts_gguf_tensor *t = ts_gguf_tensor_at(src, i);
        CHECK_OK(ts_gguf_writer_add_tensor(w, t->name_z, t->type, t->n_dims, t->dims, t->data));
    }
    ts_buf out = {0};
    CHECK_OK(ts_gguf_writer_write_buf(w, &out));
    CHECK_OK(ts_gguf_open_memory(out.data, out.len, "m.gguf", &g));
    ts_model m;
    if (g) CHECK_EQ_INT(ts_model_load(g, &m), TS_E_FORMAT);
    CHECK(contains(ts_error_message(), "m.gguf: key 'tokenizer.ggml.tokens': 3 tokens but tensor "
                                       "'token_embd.weight' has 40 rows"));
    ts_gguf_close(g);
    ts_gguf_close(src);
    ts_gguf_writer_destroy(w);
    ts_buf_free(&out);
    ts_buf_free(&image);
}

/* block_count far beyond the tensors in the file names the first missing block instead of
 * allocating a layer array for it. */
static void test_refuses_huge_block_count_without_allocating(void) {
    ts_buf image = {0};
    fixture f = fixture_default();
    CHECK_OK(fixture_build(&f, &image));
    long at = image_find(&image, "llama.block_count") + (long)strlen("llama.block_count") + 4;
    image_put_u32(&image, at, 2000000000u);
    ts_gguf *g = NULL;
    CHECK_OK(ts_gguf_open_memory(image.data, image.len, "m.gguf", &g));
    ts_model m;
    if (g) CHECK_EQ_INT(ts_model_load(g, &m), TS_E_NOT_FOUND);
    CHECK(contains(ts_error_message(), "m.gguf: missing tensor 'blk.2.attn_norm.weight' (block_count is 2000000000)"));
    image_put_u32(&image, at, 3); /* just one more than there is: found per tensor */
    ts_gguf_close(g);
    CHECK_OK(ts_gguf_open_memory(image.data, image.len, "m.gguf", &g));
    if (g) CHECK_EQ_INT(ts_model_load(g, &m), TS_E_NOT_FOUND);
    CHECK(contains(ts_error_message(), "m.gguf: missing tensor 'blk.2.attn_norm.weight'"));
    ts_gguf_close(g);
    ts_buf_free(&image);
}

/* The default fixture rewritten with extra keys and an extra tensor (any may be NULL). */
typedef struct extras {
    const char *u32_key;
    uint32_t u32_value;
    const char *str_key, *str_value;
    const char *f32_key;
    float f32_value;
    const char *tensor; /* a 1-D f32 tensor of 64 zeros */
    const char *arch;   /* general.architecture replaced (the keys keep the llama. prefix) */
} extras;

static int load_with(const extras *x, ts_buf *out, ts_gguf **g, ts_model *m) {
    ts_buf image = {0};
    fixture f = fixture_default();
    if (x->arch) f.arch = x->arch;
    int rc = fixture_build(&f, &image);
    ts_gguf *src = NULL;
    ts_gguf_writer *w = NULL;
    static const float zeros[64];
    if (!rc) rc = ts_gguf_open_memory(image.data, image.len, "src.gguf", &src);
    if (!rc) rc = ts_gguf_writer_create(&w);
    if (!rc) rc = ts_gguf_writer_copy_kvs(w, src, NULL, NULL);
    if (!rc && x->u32_key) rc = ts_gguf_writer_add_u32(w, x->u32_key, x->u32_value);
    if (!rc && x->str_key) rc = ts_gguf_writer_add_str(w, x->str_key, x->str_value);
    if (!rc && x->f32_key) rc = ts_gguf_writer_add_f32(w, x->f32_key, x->f32_value);
    for (size_t i = 0; !rc && i < ts_gguf_n_tensors(src); i++) {
        const ts_gguf_tensor *t = ts_gguf_tensor_at(src, i);
        rc = ts_gguf_writer_add_tensor(w, t->name_z, t->type, t->n_dims, t->dims, t->data);
    }
    int64_t dims[1] = {64};
    if (!rc && x->tensor)
        rc = ts_gguf_writer_add_tensor(w, x->tensor, TS_DTYPE_F32, 1, dims, zeros);
    if (!rc) rc = ts_gguf_writer_write_buf(w, out);
    ts_gguf_writer_destroy(w);
    ts_gguf_close(src);
    ts_buf_free(&image);
    *g = NULL;
    if (!rc) rc = ts_gguf_open_memory(out->data, out->len, "m.gguf", g);
    if (!rc) rc = ts_model_load(*g, m);
    return rc;
}

static void expect_extras_fail(const extras *x, int code, const char *needle) {
    ts_buf buf = {0};
    ts_gguf *g = NULL;
    ts_model m = {0};
    CHECK_EQ_INT(load_with(x, &buf, &g, &m), code);
    CHECK(contains(ts_error_message(), needle));
    ts_model_free(&m);
    ts_gguf_close(g);
    ts_buf_free(&buf);
}

static void test_refuses_keys_that_change_the_maths(void) {
    extras sliding = {.u32_key = "llama.attention.sliding_window", .u32_value = 4096};
    expect_extras_fail(&sliding, TS_E_UNSUPPORTED,
                       "m.gguf: key 'llama.attention.sliding_window' "
                       "changes the model");
    extras experts = {.u32_key = "llama.expert_count", .u32_value = 8};
    expect_extras_fail(&experts, TS_E_UNSUPPORTED, "key 'llama.expert_count'");
    extras softcap = {.f32_key = "llama.final_logit_softcapping", .f32_value = 30.0f};
    expect_extras_fail(&softcap, TS_E_UNSUPPORTED, "key 'llama.final_logit_softcapping'");
    extras yarn = {.str_key = "llama.rope.scaling.type", .str_value = "yarn"};
    expect_extras_fail(&yarn, TS_E_UNSUPPORTED, "RoPE scaling 'yarn' is not supported");
    extras linear_no_factor = {.str_key = "llama.rope.scaling.type", .str_value = "linear"};
    expect_extras_fail(&linear_no_factor, TS_E_FORMAT, "linear RoPE scaling without");
    /* a feature switched off (zero) is no feature */
    ts_buf buf = {0};
    ts_gguf *g = NULL;
    ts_model m;
    extras off = {.u32_key = "llama.expert_count", .u32_value = 0};
    CHECK_OK(load_with(&off, &buf, &g, &m));
    ts_model_free(&m);
    ts_gguf_close(g);
    ts_buf_free(&buf);
}

static void test_refuses_tensors_it_does_not_use(void) {
    extras qk_norm = {.tensor = "blk.0.attn_q_norm.weight"};
    expect_extras_fail(&qk_norm, TS_E_UNSUPPORTED,
                       "m.gguf: tensor 'blk.0.attn_q_norm.weight' is "
                       "not used by architecture 'llama'");
    /* qwen2 requires its biases; the llama fixture has none */
    extras qwen = {.arch = "qwen2"};
    expect_extras_fail(&qwen, TS_E_NOT_FOUND, "missing key 'qwen2.context_length'");
}

static void test_linear_rope_scaling(void) {
    ts_buf buf = {0};
    ts_gguf *g = NULL;
    ts_model m;
    extras linear = {.str_key = "llama.rope.scaling.type",
                     .str_value = "linear",
                     .f32_key = "llama.rope.scaling.factor",
                     .f32_value = 4.0f};
    CHECK_OK(load_with(&linear, &buf, &g, &m));
    CHECK(m.hp.rope_freq_scale == 0.25f);
    ts_rope r = ts_model_rope(&m, NULL);
    CHECK(r.freq_scale == 0.25f && r.mode == TS_ROPE_NORMAL && r.freq_factors == NULL);
    ts_model_free(&m);
    ts_gguf_close(g);
    ts_buf_free(&buf);
    /* the older key means linear too */
    extras old = {.f32_key = "llama.rope.scale_linear", .f32_value = 2.0f};
    CHECK_OK(load_with(&old, &buf, &g, &m));
    CHECK(m.hp.rope_freq_scale == 0.5f);
    ts_model_free(&m);
    ts_gguf_close(g);
    ts_buf_free(&buf);
}

/* Writes a synthetic model to a temporary file and loads it. */
static int load_synth(const char *shape, const ts_synth_rope *rope, char *path, ts_gguf **g,
                      ts_model *m) {
    ts_synth_options o = {.vocab_path = "none", .type = TS_DTYPE_F32, .seed = 3};
    if (rope) o.rope = *rope;
    int rc = ts_synth_shape_by_name(shape, &o.shape);
    o.shape.n_vocab = 100;
    snprintf(path, 64, "/tmp/ts_test_model_%d.gguf", (int)getpid());
    if (!rc) rc = ts_synth_write(&o, path);
    *g = NULL;
    if (!rc) rc = ts_gguf_open(path, g);
    if (!rc) rc = ts_model_load(*g, m);
    return rc;
}

static void test_qwen2_has_biases_and_neox_rope(void) {
    char path[64];
    ts_gguf *g;
    ts_model m;
    CHECK_OK(load_synth("qwen2-tiny", NULL, path, &g, &m));
    if (m.layers) {
        CHECK(strcmp(m.arch->name, "qwen2") == 0);
        CHECK(m.hp.rope_mode == TS_ROPE_NEOX);
        CHECK(m.hp.rope_theta == 1e6f);
        for (int l = 0; l < m.hp.n_layers; l++) {
            CHECK_EQ_INT(m.layers[l].bq.n, 64);
            CHECK_EQ_INT(m.layers[l].bk.n, 32);
            CHECK_EQ_INT(m.layers[l].bv.n, 32);
            CHECK_EQ_INT(m.layers[l].bo.n, 0);
        }
        CHECK(ts_model_bytes_per_token(&m) > 0);
    }
    ts_model_free(&m);
    ts_gguf_close(g);
    unlink(path);
    /* llama keeps adjacent pairs and has no biases */
    CHECK_OK(load_synth("tiny", NULL, path, &g, &m));
    CHECK(m.hp.rope_mode == TS_ROPE_NORMAL && m.layers && m.layers[0].bq.n == 0);
    ts_model_free(&m);
    ts_gguf_close(g);
    unlink(path);
}

static void test_llama3_rope_freqs(void) {
    char path[64];
    ts_gguf *g;
    ts_model m;
    ts_synth_rope rope = {.llama3_freqs = true};
    CHECK_OK(load_synth("tiny", &rope, path, &g, &m));
    CHECK_EQ_INT(m.rope_freqs.n, 8); /* head_dim 16 / 2 */
    if (m.rope_freqs.n == 8) {
        const float *f = m.rope_freqs.data;
        /* theta 10000, head 16, original context 512: the fastest pair keeps its frequency,
         * the slowest is divided by 8, the band between blends */
        CHECK(f[0] == 1.0f);
        CHECK(f[7] == 8.0f);
        bool blended = false;
        for (int i = 0; i < 8; i++)
            blended |= f[i] > 1.0f && f[i] < 8.0f;
        CHECK(blended);
        float host[8];
        memcpy(host, f, sizeof host);
        ts_rope r = ts_model_rope(&m, host);
        CHECK(r.freq_factors == host && r.n_dims == 16);
    }
    ts_model_free(&m);
    ts_gguf_close(g);
    unlink(path);
    /* qwen2 has no place for them */
    CHECK_EQ_INT(load_synth("qwen2-tiny", &rope, path, &g, &m), TS_E_UNSUPPORTED);
    CHECK(contains(ts_error_message(),
                   "tensor 'rope_freqs.weight' is not used by architecture 'qwen2'"));
    ts_model_free(&m);
    ts_gguf_close(g);
    unlink(path);
}

int main(void) {
    RUN(test_refuses_non_finite_block_scales);
    RUN(test_loads_bundled_stories_f32);
    RUN(test_loads_bundled_stories_f16);
    RUN(test_defaults_and_tied_output);
    RUN(test_refuses_missing_tensors);
    RUN(test_refuses_shape_mismatches);
    RUN(test_refuses_quantized_norms);
    RUN(test_refuses_missing_and_mistyped_keys);
    RUN(test_refuses_inconsistent_hparams);
    RUN(test_refuses_bad_optional_hparams);
    RUN(test_refuses_huge_block_count_without_allocating);
    RUN(test_refuses_keys_that_change_the_maths);
    RUN(test_refuses_tensors_it_does_not_use);
    RUN(test_linear_rope_scaling);
    RUN(test_qwen2_has_biases_and_neox_rope);
    RUN(test_llama3_rope_freqs);
    return test_summary();
}
