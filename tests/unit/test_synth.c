/* test_synth.c — synthetic models: every weight type loads as a valid Llama model, weights have
 * the promised statistics, output is deterministic in the seed, and bad shapes or vocabularies
 * give clear errors. */
#include "common/buf.h"
#include "common/error.h"
#include "kernels/quant.h"
#include "model/gguf.h"
#include "model/model.h"
#include "model/synth.h"
#include "tests/unit/test.h"

#include <unistd.h>

#define TMP TS_BINARY_DIR "/tests/test_synth"
#define STORIES_F32 TS_SOURCE_DIR "/models/stories260K/stories260K-f32.gguf"

static bool contains(const char *haystack, const char *needle) {
    bool found = strstr(haystack, needle) != NULL;
    if (!found) fprintf(stderr, "  message \"%s\" lacks \"%s\"\n", haystack, needle);
    return found;
}

static ts_synth_options tiny_options(ts_dtype type) {
    ts_synth_options o = {.type = type, .seed = 42};
    CHECK_OK(ts_synth_shape_by_name("tiny", &o.shape));
    return o;
}

/* Mean and standard deviation of a weight, dequantized row by row. */
static void weight_stats(const ts_weight *w, double *mean, double *std) {
    float *row = malloc((size_t)w->cols * sizeof(float));
    double sum = 0, sum2 = 0;
    for (int64_t r = 0; r < w->rows; r++) {
        ts_dequantize_row(w->type, (const char *)w->data + r * w->row_stride, row, w->cols);
        for (int64_t c = 0; c < w->cols; c++) {
            sum += row[c];
            sum2 += (double)row[c] * row[c];
        }
    }
    double n = (double)w->rows * (double)w->cols;
    *mean = sum / n;
    *std = sqrt(sum2 / n - *mean * *mean);
    free(row);
}

static void test_every_type_writes_a_loadable_model(void) {
    const ts_dtype types[] = {TS_DTYPE_F32, TS_DTYPE_F16, TS_DTYPE_BF16, TS_DTYPE_Q8_0, TS_DTYPE_Q4_0};
    for (size_t t = 0; t < 5; t++) {
        ts_synth_options o = tiny_options(types[t]);
        const char *path = TMP "-types.gguf";
        CHECK_OK(ts_synth_write(&o, path));
        ts_gguf *g = NULL;
        CHECK_OK(ts_gguf_open(path, &g));
        if (!g) continue;
        ts_model m;
        CHECK_OK(ts_model_load(g, &m));
        CHECK_EQ_INT(m.hp.dim, 64);
        CHECK_EQ_INT(m.hp.n_layers, 2);
        CHECK_EQ_INT(m.hp.n_heads, 4);
        CHECK_EQ_INT(m.hp.n_kv_heads, 2);
        CHECK_EQ_INT(m.hp.n_ff, 128);
        CHECK_EQ_INT(m.hp.n_vocab, 32000);
        CHECK_EQ_INT(m.hp.n_ctx_train, 512);
        CHECK(m.hp.tied_output);
        CHECK_EQ_INT(m.token_embd.type, types[t]);
        CHECK_EQ_INT(m.layers[1].w_down.type, types[t]);
        CHECK_EQ_INT(m.layers[0].attn_norm.type, TS_DTYPE_F32);
        const float *norm = m.layers[1].ffn_norm.data;
        CHECK(norm[0] == 1.0f && norm[63] == 1.0f);
        /* the tokenizer came from the bundled vocab */
        const ts_gguf_kv *tokens = NULL;
        CHECK_OK(ts_gguf_get_array(g, "tokenizer.ggml.tokens", TS_GGUF_STRING, &tokens));
        if (tokens) CHECK(tokens->n_elems == 32000 && ts_gguf_str_eq(tokens->strs[1], "<s>"));
        ts_gguf_str model_kind = {0};
        CHECK_OK(ts_gguf_get_str(g, "tokenizer.ggml.model", &model_kind));
        CHECK(ts_gguf_str_eq(model_kind, "llama"));
        uint32_t file_type = 99;
        CHECK_OK(ts_gguf_get_u32(g, "general.file_type", &file_type));
        const uint32_t expected_ftype[] = {0, 1, 32, 7, 2};
        CHECK_EQ_INT(file_type, expected_ftype[t]);
        /* ~N(0, 0.02) weights; the residual projections scaled by 1/sqrt(2 * layers) */
        double mean, std;
        weight_stats(&m.token_embd, &mean, &std);
        CHECK_NEAR(mean, 0, 0.001);
        CHECK_NEAR(std, 0.02, 0.002);
        weight_stats(&m.layers[0].w_gate, &mean, &std);
        CHECK_NEAR(std, 0.02, 0.002);
        weight_stats(&m.layers[1].w_down, &mean, &std);
        CHECK_NEAR(std, 0.01, 0.001);
        ts_model_free(&m);
        ts_gguf_close(g);
        remove(path);
    }
}

static void test_same_seed_same_bytes(void) {
    ts_synth_options o = tiny_options(TS_DTYPE_Q4_0);
    ts_buf a = {0}, b = {0}, c = {0};
    CHECK_OK(ts_synth_write(&o, TMP "-a.gguf"));
    CHECK_OK(ts_synth_write(&o, TMP "-b.gguf"));
    o.seed = 43;
    CHECK_OK(ts_synth_write(&o, TMP "-c.gguf"));
    CHECK_OK(ts_buf_read_file(&a, TMP "-a.gguf"));
    CHECK_OK(ts_buf_read_file(&b, TMP "-b.gguf"));
    CHECK_OK(ts_buf_read_file(&c, TMP "-c.gguf"));
    CHECK(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
    CHECK(a.len == c.len && memcmp(a.data, c.data, a.len) != 0);
    remove(TMP "-a.gguf");
    remove(TMP "-b.gguf");
    remove(TMP "-c.gguf");
    ts_buf_free(&a);
    ts_buf_free(&b);
    ts_buf_free(&c);
}

static void test_vocab_must_match_the_shape(void) {
    ts_synth_options o = tiny_options(TS_DTYPE_F16);
    o.shape.n_vocab = 512;
    CHECK_EQ_INT(ts_synth_write(&o, TMP "-v.gguf"), TS_E_INVALID);
    CHECK(contains(ts_error_message(), "llama-spm-32000.gguf: vocabulary has 32000 tokens, but shape 'tiny' needs 512"));
    CHECK(access(TMP "-v.gguf", F_OK) != 0);
    /* the stories260K tokenizer has 512 tokens */
    o.vocab_path = STORIES_F32;
    CHECK_OK(ts_synth_write(&o, TMP "-v.gguf"));
    ts_gguf *g = NULL;
    CHECK_OK(ts_gguf_open(TMP "-v.gguf", &g));
    ts_model m;
    if (g) CHECK_OK(ts_model_load(g, &m));
    if (g) CHECK_EQ_INT(m.hp.n_vocab, 512);
    if (g) ts_model_free(&m);
    /* only tokenizer.* keys are copied from the vocab file */
    if (g) CHECK(ts_gguf_find_kv(g, "general.name") != NULL);
    if (g) CHECK(ts_gguf_find_kv(g, "tokenizer.ggml.scores") != NULL);
    ts_gguf_str name = {0};
    if (g) CHECK_OK(ts_gguf_get_str(g, "general.name", &name));
    CHECK(ts_gguf_str_eq(name, "tessera-synth-tiny-f16"));
    ts_gguf_close(g);
    /* "none" writes no tokenizer at all */
    o.vocab_path = "none";
    o.shape.n_vocab = 1000;
    CHECK_OK(ts_synth_write(&o, TMP "-v.gguf"));
    CHECK_OK(ts_gguf_open(TMP "-v.gguf", &g));
    if (g) CHECK(ts_gguf_find_kv(g, "tokenizer.ggml.tokens") == NULL);
    ts_gguf_close(g);
    remove(TMP "-v.gguf");
    /* a vocab file that is not there */
    o.vocab_path = TMP "-missing.gguf";
    CHECK_EQ_INT(ts_synth_write(&o, TMP "-v.gguf"), TS_E_IO);
    CHECK(contains(ts_error_message(), "test_synth-missing.gguf"));
}

static void test_refuses_bad_shapes(void) {
    ts_synth_shape s;
    CHECK_EQ_INT(ts_synth_shape_by_name("7b", &s), TS_E_INVALID);
    CHECK(contains(ts_error_message(), "unknown shape '7b' (known: tiny, qwen2-tiny, 110m, "
                                       "qwen2.5-0.5b, qwen2.5-1.5b, llama3-8b)"));
    CHECK_OK(ts_synth_shape_by_name("110m", &s));
    CHECK(s.dim == 768 && s.n_ff == 2048 && s.n_layers == 12 && s.n_heads == 12 &&
          s.n_kv_heads == 12 && s.n_vocab == 32000 && s.n_ctx == 2048);
    CHECK_OK(ts_synth_shape_check(&s, TS_DTYPE_Q4_0));
    CHECK_OK(ts_synth_shape_by_name("llama3-8b", &s));
    CHECK(s.dim == 4096 && s.n_layers == 32 && s.n_heads == 32 && s.n_kv_heads == 8 &&
          s.n_ff == 14336 && s.n_vocab == 128256 && s.n_ctx == 8192 && !s.tied_output);
    CHECK_OK(ts_synth_shape_check(&s, TS_DTYPE_Q8_0));

    CHECK_OK(ts_synth_shape_by_name("tiny", &s));
    ts_synth_shape bad = s;
    bad.n_heads = 3;
    CHECK_EQ_INT(ts_synth_shape_check(&bad, TS_DTYPE_F32), TS_E_INVALID);
    CHECK(contains(ts_error_message(), "dim 64 is not a multiple of heads 3"));
    bad = s;
    bad.n_kv_heads = 3;
    CHECK_EQ_INT(ts_synth_shape_check(&bad, TS_DTYPE_F32), TS_E_INVALID);
    CHECK(contains(ts_error_message(), "heads 4 is not a multiple of kv-heads 3"));
    bad = s;
    bad.n_ff = 100;
    CHECK_OK(ts_synth_shape_check(&bad, TS_DTYPE_F16));
    CHECK_EQ_INT(ts_synth_shape_check(&bad, TS_DTYPE_Q8_0), TS_E_INVALID);
    CHECK(contains(ts_error_message(), "multiples of 32 for q8_0"));
    bad = s;
    bad.n_layers = 0;
    CHECK_EQ_INT(ts_synth_shape_check(&bad, TS_DTYPE_F32), TS_E_INVALID);
    CHECK(contains(ts_error_message(), "layers must be between 1 and 1024, got 0"));
    bad = s;
    bad.dim = 1 << 20;
    CHECK_EQ_INT(ts_synth_shape_check(&bad, TS_DTYPE_F32), TS_E_INVALID);
    CHECK(contains(ts_error_message(), "dim must be between 1 and 65536"));
    bad = s;
    bad.dim = 36; /* head size 9 */
    bad.n_heads = 4;
    CHECK_EQ_INT(ts_synth_shape_check(&bad, TS_DTYPE_F32), TS_E_INVALID);
    CHECK(contains(ts_error_message(), "head size 9"));
    ts_synth_options o = {.shape = bad, .type = TS_DTYPE_F32};
    CHECK_EQ_INT(ts_synth_write(&o, TMP "-bad.gguf"), TS_E_INVALID);
    CHECK(access(TMP "-bad.gguf", F_OK) != 0);
}

static void test_unwritable_output_is_an_io_error(void) {
    ts_synth_options o = tiny_options(TS_DTYPE_F16);
    CHECK_EQ_INT(ts_synth_write(&o, TS_BINARY_DIR "/no-such-dir/x.gguf"), TS_E_IO);
    CHECK(contains(ts_error_message(), "no-such-dir/x.gguf"));
}

int main(void) {
    RUN(test_every_type_writes_a_loadable_model);
    RUN(test_same_seed_same_bytes);
    RUN(test_vocab_must_match_the_shape);
    RUN(test_refuses_bad_shapes);
    RUN(test_unwritable_output_is_an_io_error);
    return test_summary();
}
