/* test_safetensors.c — the safetensors reader (model/safetensors.h) on images written here, one
 * test per way a header can be wrong; and Hugging Face checkpoints (model/hf.h) written here as
 * files, loaded through the one model loader: hyper-parameters, the rotary permutation of llama's
 * q/k rows (and none for qwen2), sharded indexes, and every refusal naming the key or tensor. */
#include "common/buf.h"
#include "common/error.h"
#include "common/json.h"
#include "model/hf.h"
#include "model/model.h"
#include "model/safetensors.h"
#include "tests/unit/test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TMP TS_BINARY_DIR "/tests/test_safetensors.tmp"

static bool contains(const char *haystack, const char *needle) {
    bool found = strstr(haystack, needle) != NULL;
    if (!found) fprintf(stderr, "  message \"%s\" lacks \"%s\"\n", haystack, needle);
    return found;
}

/* An image: the 8-byte length, the header text padded with spaces to 8 bytes, `data_len` data
 * bytes (value i & 0xff at byte i). */
static void image(ts_buf *b, const char *header, size_t data_len) {
    ts_buf_clear(b);
    size_t n = strlen(header), padded = (n + 7) / 8 * 8;
    uint8_t len[8];
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    ts_buf_append(b, len, 8);
    ts_buf_append(b, header, n);
    for (size_t i = n; i < padded; i++) ts_buf_append_char(b, ' ');
    for (size_t i = 0; i < data_len; i++) ts_buf_append_char(b, (char)(i & 0xff));
}

static void expect_fail(const char *header, size_t data_len, int code, const char *needle) {
    ts_buf b = {0};
    image(&b, header, data_len);
    ts_safetensors *st = (ts_safetensors *)1;
    CHECK_EQ_INT(ts_safetensors_open_memory(b.data, b.len, "m.safetensors", &st), code);
    CHECK(st == NULL);
    CHECK(contains(ts_error_message(), "m.safetensors: "));
    CHECK(contains(ts_error_message(), needle));
    ts_buf_free(&b);
}

static void test_reads_tensors(void) {
    ts_buf b = {0};
    image(&b,
          "{\"__metadata__\":{\"format\":\"pt\"},"
          "\"b\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[16,28]},"
          "\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
          "\"s\":{\"dtype\":\"F4\",\"shape\":[3,2],\"data_offsets\":[28,31]},"
          "\"e\":{\"dtype\":\"I64\",\"shape\":[0,5],\"data_offsets\":[31,31]}}",
          32);
    ts_safetensors *st = NULL;
    CHECK_OK(ts_safetensors_open_memory(b.data, b.len, "m.safetensors", &st));
    if (!st) return;
    CHECK_EQ_INT(ts_safetensors_n_tensors(st), 4);
    CHECK_EQ_STR(ts_safetensors_tensor_at(st, 0)->name, "b"); /* header order */
    const ts_st_tensor *a = ts_safetensors_find(st, "a"), *t = ts_safetensors_find(st, "b");
    CHECK(a && t && !ts_safetensors_find(st, "c") && !ts_safetensors_find(st, "__metadata__"));
    if (a && t) {
        CHECK_EQ_INT(a->dtype, TS_ST_F32);
        CHECK_EQ_INT(a->n_dims, 1);
        CHECK_EQ_INT(a->n_elems, 4);
        CHECK_EQ_INT(t->dtype, TS_ST_BF16);
        CHECK_EQ_INT(t->n_dims, 2);
        CHECK_EQ_INT(t->shape[0], 2);
        CHECK_EQ_INT(t->shape[1], 3);
        CHECK_EQ_INT(t->n_bytes, 12);
        size_t header = b.len - 32;
        CHECK_EQ_INT(t->file_offset, header + 16);
        CHECK(t->data == b.data + header + 16);
        CHECK_EQ_INT(((const uint8_t *)t->data)[0], 16);
    }
    CHECK_EQ_INT(ts_safetensors_find(st, "e")->n_elems, 0);
    CHECK_EQ_STR(ts_st_dtype_name(TS_ST_F8_E4M3), "F8_E4M3");
    ts_safetensors_close(st);
    ts_buf_free(&b);
}

static void test_truncated(void) {
    ts_buf b = {0};
    ts_safetensors *st = NULL;
    image(&b, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16);
    for (size_t n = 0; n < b.len; n++) { /* every prefix of a valid file */
        int rc = ts_safetensors_open_memory(b.data, n, "m.safetensors", &st);
        CHECK_EQ_INT(rc, TS_E_FORMAT);
        CHECK(st == NULL);
    }
    CHECK_EQ_INT(ts_safetensors_open_memory(b.data, 5, "m.safetensors", &st), TS_E_FORMAT);
    CHECK(contains(ts_error_message(), "too short"));
    CHECK_EQ_INT(ts_safetensors_open_memory(b.data, 20, "m.safetensors", &st), TS_E_FORMAT);
    CHECK(contains(ts_error_message(), "runs past the end of the file"));
    CHECK_EQ_INT(ts_safetensors_open_memory(b.data, b.len - 1, "m.safetensors", &st), TS_E_FORMAT);
    CHECK(contains(ts_error_message(), "tensor 'a': data_offsets [0, 16) beyond the data size 15"));
    ts_buf_free(&b);
}

static void test_bad_headers(void) {
    expect_fail("[1, 2]", 0, TS_E_FORMAT, "not a JSON object");
    expect_fail("{\"a\":", 0, TS_E_FORMAT, "header: line 1");
    expect_fail("{\"a\":{\"dtype\":\"F7\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16, TS_E_FORMAT,
                "tensor 'a': unknown dtype 'F7'");
    expect_fail("{\"a\":{\"shape\":[4],\"data_offsets\":[0,16]}}", 16, TS_E_FORMAT,
                "tensor 'a': 'dtype' missing");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,16]}}", 16, TS_E_FORMAT,
                "'shape' missing");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[4]}}", 16, TS_E_FORMAT,
                "'data_offsets' must be");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}}", 16,
                TS_E_FORMAT, "non-negative integer");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,16]}}", 16,
                TS_E_FORMAT, "non-negative integer");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,4],\"data_offsets\":[0,16]}}",
                16, TS_E_FORMAT, "more than 8 dimensions");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16],\"x\":1}}", 16,
                TS_E_FORMAT, "unknown member 'x'");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,-16]}}", 16,
                TS_E_FORMAT, "'data_offsets' must be");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,0]}}", 16,
                TS_E_FORMAT, "begin after end");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 16,
                TS_E_FORMAT, "data_offsets [8, 24) beyond the data size 16");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,12]}}", 16,
                TS_E_FORMAT, "hold 12 bytes, the F32 shape needs 16");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
                "\"data_offsets\":[0,16]}}",
                16, TS_E_FORMAT, "more elements than");
    expect_fail("{\"a\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", 16, TS_E_FORMAT,
                "do not fill whole bytes");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                "\"b\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[12,20]}}",
                24, TS_E_FORMAT, "tensors 'a' [0, 16) and 'b' [12, 20) overlap");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
                16, TS_E_FORMAT, "tensor 'a' appears twice");
    expect_fail("{\"\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16, TS_E_FORMAT,
                "empty name");
    expect_fail("{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16,
                TS_E_FORMAT, "NUL byte");
    expect_fail("{\"a\":[1]}", 0, TS_E_FORMAT, "tensor 'a': the entry is not an object");
    expect_fail("{\"__metadata__\":{\"n\":1}}", 0, TS_E_FORMAT, "'__metadata__': 'n' is not a "
                "string");
}

static void test_huge_header_length(void) {
    uint8_t b[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{', '}'};
    ts_safetensors *st = NULL;
    CHECK_EQ_INT(ts_safetensors_open_memory(b, sizeof b, "m.safetensors", &st), TS_E_FORMAT);
    CHECK(contains(ts_error_message(), "runs past the end"));
    CHECK_EQ_INT(ts_safetensors_open(TMP "/no-such.safetensors", &st), TS_E_IO);
    CHECK(contains(ts_error_message(), "no-such.safetensors"));
}

/* ---- Hugging Face checkpoints written here ---- */

typedef struct tensor_spec {
    const char *name;
    const char *dtype; /* "F32", "BF16", ... */
    int64_t rows, cols; /* cols == 0: 1-D */
} tensor_spec;

/* Element value of HF row r, column c: distinct per row, so permutations are visible. */
static float value(int64_t r, int64_t c) { return (float)(r * 1000 + c); }

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    CHECK_EQ_INT(fwrite(data, 1, n, f), n);
    fclose(f);
}

/* Writes n tensors as a safetensors file at path: F32 rows of value(r, c), other dtypes as
 * 2-byte zeros. */
static void write_safetensors(const char *path, const tensor_spec *t, size_t n) {
    ts_buf header = {0}, data = {0};
    ts_json_writer w;
    ts_jw_init(&w, &header);
    ts_jw_object_begin(&w);
    for (size_t i = 0; i < n; i++) {
        int64_t rows = t[i].rows, cols = t[i].cols ? t[i].cols : 1;
        size_t elem = !strcmp(t[i].dtype, "F32") ? 4 : !strcmp(t[i].dtype, "F64") ? 8 : 2;
        size_t begin = data.len;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) {
                float v = value(r, c);
                uint8_t zero[8] = {0};
                ts_buf_append(&data, elem == 4 ? (const void *)&v : zero, elem);
            }
        ts_jw_key(&w, t[i].name);
        ts_jw_object_begin(&w);
        ts_jw_key(&w, "dtype");
        ts_jw_string(&w, t[i].dtype);
        ts_jw_key(&w, "shape");
        ts_jw_array_begin(&w);
        ts_jw_int(&w, rows);
        if (t[i].cols) ts_jw_int(&w, t[i].cols);
        ts_jw_array_end(&w);
        ts_jw_key(&w, "data_offsets");
        ts_jw_array_begin(&w);
        ts_jw_int(&w, (int64_t)begin);
        ts_jw_int(&w, (int64_t)data.len);
        ts_jw_array_end(&w);
        ts_jw_object_end(&w);
    }
    ts_jw_object_end(&w);
    CHECK_OK(ts_jw_finish(&w));
    ts_buf file = {0};
    image(&file, header.data, 0);
    ts_buf_append(&file, data.data, data.len);
    write_file(path, file.data, file.len);
    ts_buf_free(&file);
    ts_buf_free(&header);
    ts_buf_free(&data);
}

/* dim 8, 2 heads of 4 (1 KV head for llama), ff 16, vocab 10, 1 layer. */
enum { DIM = 8, HEADS = 2, HEAD = 4, FF = 16, VOCAB = 10 };

static size_t model_tensors(bool qwen2, tensor_spec *t) {
    int64_t kv = qwen2 ? HEADS * HEAD : HEAD;
    size_t n = 0;
    t[n++] = (tensor_spec){"model.embed_tokens.weight", "F32", VOCAB, DIM};
    t[n++] = (tensor_spec){"model.norm.weight", "F32", DIM, 0};
    t[n++] = (tensor_spec){"model.layers.0.input_layernorm.weight", "F32", DIM, 0};
    t[n++] = (tensor_spec){"model.layers.0.self_attn.q_proj.weight", "F32", HEADS * HEAD, DIM};
    t[n++] = (tensor_spec){"model.layers.0.self_attn.k_proj.weight", "F32", kv, DIM};
    t[n++] = (tensor_spec){"model.layers.0.self_attn.v_proj.weight", "F32", kv, DIM};
    t[n++] = (tensor_spec){"model.layers.0.self_attn.o_proj.weight", "F32", DIM, HEADS * HEAD};
    t[n++] = (tensor_spec){"model.layers.0.post_attention_layernorm.weight", "F32", DIM, 0};
    t[n++] = (tensor_spec){"model.layers.0.mlp.gate_proj.weight", "F32", FF, DIM};
    t[n++] = (tensor_spec){"model.layers.0.mlp.up_proj.weight", "F32", FF, DIM};
    t[n++] = (tensor_spec){"model.layers.0.mlp.down_proj.weight", "F32", DIM, FF};
    if (qwen2) {
        t[n++] = (tensor_spec){"model.layers.0.self_attn.q_proj.bias", "F32", HEADS * HEAD, 0};
        t[n++] = (tensor_spec){"model.layers.0.self_attn.k_proj.bias", "F32", kv, 0};
        t[n++] = (tensor_spec){"model.layers.0.self_attn.v_proj.bias", "F32", kv, 0};
    }
    return n;
}

/* config.json of that model; `rope_scaling` NULL: null; `extra` members appended. */
static const char *config_full(bool qwen2, const char *act, const char *rope_scaling,
                               const char *extra) {
    static char text[2048];
    snprintf(text, sizeof text,
             "{\"model_type\": \"%s\", \"hidden_size\": 8, \"num_hidden_layers\": 1, "
             "\"intermediate_size\": 16, \"num_attention_heads\": 2, \"num_key_value_heads\": %d, "
             "\"max_position_embeddings\": 64, \"rms_norm_eps\": 1e-06, \"rope_theta\": %s, "
             "\"vocab_size\": 10, \"hidden_act\": \"%s\", \"tie_word_embeddings\": true, "
             "\"rope_scaling\": %s%s%s}",
             qwen2 ? "qwen2" : "llama", qwen2 ? 2 : 1, qwen2 ? "1000000.0" : "10000.0", act,
             rope_scaling ? rope_scaling : "null", extra ? ", " : "", extra ? extra : "");
    return text;
}

static const char *config_text(bool qwen2, const char *extra) {
    return config_full(qwen2, "silu", NULL, extra);
}

/* A fresh checkpoint directory TMP/NAME with config.json and model.safetensors. */
static const char *checkpoint(const char *name, const char *config, const tensor_spec *t,
                              size_t n) {
    static char dir[512];
    char path[600];
    snprintf(dir, sizeof dir, "%s/%s", TMP, name);
    mkdir(TMP, 0755);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (config) write_file(path, config, strlen(config));
    else unlink(path);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (t) write_safetensors(path, t, n);
    else unlink(path);
    return dir;
}

static int load(const char *dir, ts_gguf **g, ts_model *m) {
    *g = NULL;
    memset(m, 0, sizeof *m);
    int rc = ts_hf_open(dir, g);
    if (!rc) rc = ts_model_load(*g, m);
    return rc;
}

static void expect_hf_fail(const char *dir, int code, const char *needle) {
    ts_gguf *g;
    ts_model m;
    CHECK_EQ_INT(load(dir, &g, &m), code);
    CHECK(contains(ts_error_message(), needle));
    ts_model_free(&m);
    ts_gguf_close(g);
}

static float row_value(const ts_weight *w, int64_t row) {
    return ((const float *)((const uint8_t *)w->data + row * w->row_stride))[0];
}

static void test_hf_llama_permutes_q_and_k(void) {
    tensor_spec t[16];
    size_t n = model_tensors(false, t);
    const char *dir = checkpoint("llama", config_text(false, NULL), t, n);
    ts_gguf *g;
    ts_model m;
    CHECK_OK(load(dir, &g, &m));
    if (!m.layers) return;
    CHECK_EQ_INT(m.hp.dim, DIM);
    CHECK_EQ_INT(m.hp.n_heads, HEADS);
    CHECK_EQ_INT(m.hp.n_kv_heads, 1);
    CHECK_EQ_INT(m.hp.head_dim, HEAD);
    CHECK_EQ_INT(m.hp.n_ctx_train, 64);
    CHECK_EQ_INT(m.hp.n_vocab, VOCAB);
    CHECK_NEAR(m.hp.rms_eps, 1e-6f, 1e-12f);
    CHECK_NEAR(m.hp.rope_theta, 10000.0f, 0.0f);
    CHECK(m.hp.tied_output);
    CHECK_EQ_INT(m.hp.rope_mode, TS_ROPE_NORMAL);
    /* GGUF row h*4 + 2i + j holds HF row h*4 + 2j + i: rows 0 2 1 3 | 4 6 5 7 */
    static const int order[] = {0, 2, 1, 3, 4, 6, 5, 7};
    for (int r = 0; r < HEADS * HEAD; r++) CHECK_NEAR(row_value(&m.layers[0].wq, r), value(order[r], 0), 0);
    for (int r = 0; r < HEAD; r++) CHECK_NEAR(row_value(&m.layers[0].wk, r), value(order[r], 0), 0);
    for (int r = 0; r < HEAD; r++) CHECK_NEAR(row_value(&m.layers[0].wv, r), value(r, 0), 0);
    CHECK_NEAR(((const float *)m.layers[0].wq.data)[1], value(0, 1), 0);
    ts_gguf_str name;
    CHECK_OK(ts_gguf_get_str(g, "general.name", &name));
    CHECK(ts_gguf_str_eq(name, "llama"));
    ts_model_free(&m);
    ts_gguf_close(g);
}

static void test_hf_qwen2_keeps_rows(void) {
    tensor_spec t[16];
    size_t n = model_tensors(true, t);
    const char *dir = checkpoint("qwen2", config_text(true, "\"use_sliding_window\": false, "
                                                           "\"sliding_window\": 4096"), t, n);
    ts_gguf *g;
    ts_model m;
    CHECK_OK(load(dir, &g, &m));
    if (!m.layers) return;
    CHECK_EQ_INT(m.hp.rope_mode, TS_ROPE_NEOX);
    CHECK_NEAR(m.hp.rope_theta, 1e6f, 0.0f);
    for (int r = 0; r < HEADS * HEAD; r++) {
        CHECK_NEAR(row_value(&m.layers[0].wq, r), value(r, 0), 0);
        CHECK_NEAR(row_value(&m.layers[0].wk, r), value(r, 0), 0);
        CHECK_NEAR(((const float *)m.layers[0].bq.data)[r], value(r, 0), 0);
    }
    ts_model_free(&m);
    ts_gguf_close(g);
}

static void test_hf_linear_rope_scaling(void) {
    tensor_spec t[16];
    size_t n = model_tensors(false, t);
    const char *dir = checkpoint("linear", config_full(false, "silu", "{\"type\": \"linear\", "
                                                       "\"factor\": 2.0}", NULL), t, n);
    ts_gguf *g;
    ts_model m;
    CHECK_OK(load(dir, &g, &m));
    CHECK_NEAR(m.hp.rope_freq_scale, 0.5f, 0.0f);
    ts_model_free(&m);
    ts_gguf_close(g);
    dir = checkpoint("linear", config_full(false, "silu", "{\"rope_type\": \"default\"}", NULL),
                     t, n);
    CHECK_OK(load(dir, &g, &m));
    CHECK_NEAR(m.hp.rope_freq_scale, 1.0f, 0.0f);
    ts_model_free(&m);
    ts_gguf_close(g);
}

static void test_hf_llama3_rope_scaling(void) {
    tensor_spec t[16];
    size_t n = model_tensors(false, t);
    const char *dir = checkpoint("llama3", config_full(false, "silu",
                                                       "{\"rope_type\": \"llama3\", \"factor\": "
                                                       "8.0, \"low_freq_factor\": 1.0, "
                                                       "\"high_freq_factor\": 4.0, "
                                                       "\"original_max_position_embeddings\": 64}",
                                                       NULL),
                                 t, n);
    ts_gguf *g;
    ts_model m;
    CHECK_OK(load(dir, &g, &m));
    CHECK_EQ_INT(m.rope_freqs.n, HEAD / 2);
    if (m.rope_freqs.n == HEAD / 2) {
        /* wavelengths 2 pi and 200 pi against 64 / 4 and 64: kept, then divided by 8 */
        CHECK_NEAR(((const float *)m.rope_freqs.data)[0], 1.0f, 0.0f);
        CHECK_NEAR(((const float *)m.rope_freqs.data)[1], 8.0f, 0.0f);
    }
    ts_model_free(&m);
    ts_gguf_close(g);
    dir = checkpoint("llama3", config_full(false, "silu", "{\"rope_type\": \"llama3\", "
                                           "\"low_freq_factor\": 4.0, \"high_freq_factor\": 1.0}",
                                           NULL), t, n);
    expect_hf_fail(dir, TS_E_FORMAT, "high_freq_factor must exceed low_freq_factor");
}

static void test_hf_refusals(void) {
    tensor_spec t[16];
    size_t n = model_tensors(true, t);
    const char *dir;
    dir = checkpoint("refused", config_text(true, "\"use_sliding_window\": true"), t, n);
    expect_hf_fail(dir, TS_E_UNSUPPORTED, "config.json: key 'use_sliding_window' changes the model");
    dir = checkpoint("refused", config_text(true, "\"num_local_experts\": 8"), t, n);
    expect_hf_fail(dir, TS_E_UNSUPPORTED, "key 'num_local_experts'");
    dir = checkpoint("refused", config_text(true, "\"mlp_bias\": false, \"attn_logit_softcapping\": "
                                                  "null"), t, n);
    expect_hf_fail(dir, TS_OK, "");
    dir = checkpoint("refused", config_full(true, "gelu", NULL, NULL), t, n);
    expect_hf_fail(dir, TS_E_UNSUPPORTED, "key 'hidden_act'");
    dir = checkpoint("refused", config_full(true, "silu", "{\"rope_type\": \"yarn\", "
                                            "\"factor\": 4.0}", NULL), t, n);
    expect_hf_fail(dir, TS_E_UNSUPPORTED, "key 'rope_scaling': RoPE scaling 'yarn' is not supported");
    dir = checkpoint("refused", config_full(true, "silu", "{\"rope_type\": \"llama3\", "
                                            "\"factor\": 8.0}", NULL), t, n);
    expect_hf_fail(dir, TS_E_UNSUPPORTED, "RoPE scaling 'llama3'");
    char config[2048];
    snprintf(config, sizeof config, "%s", config_text(true, NULL));
    memcpy(strstr(config, "qwen2"), "gemma", 5);
    dir = checkpoint("refused", config, t, n);
    expect_hf_fail(dir, TS_E_UNSUPPORTED, "model_type 'gemma' is not supported (supported: llama, "
                                          "qwen2)");
    snprintf(config, sizeof config, "%s", config_text(true, NULL));
    memcpy(strstr(config, "hidden_size"), "hidden_sizX", 11);
    dir = checkpoint("refused", config, t, n);
    expect_hf_fail(dir, TS_E_NOT_FOUND, "config.json: missing key 'hidden_size'");
    snprintf(config, sizeof config, "%s", config_text(true, NULL));
    memcpy(strstr(config, "\"num_hidden_layers\": 1"), "\"num_hidden_layers\":-1", 22);
    dir = checkpoint("refused", config, t, n);
    expect_hf_fail(dir, TS_E_FORMAT, "key 'num_hidden_layers': a positive integer expected");
    dir = checkpoint("refused", "{\"model_type\": ", t, n);
    expect_hf_fail(dir, TS_E_FORMAT, "config.json: line 1");
}

static void test_hf_bad_tensors(void) {
    tensor_spec t[16];
    size_t n = model_tensors(true, t);
    const char *dir = checkpoint("tensors", config_text(true, NULL), t, n - 1); /* no v bias */
    expect_hf_fail(dir, TS_E_NOT_FOUND, "missing tensor 'blk.0.attn_v.bias'");
    tensor_spec u[16];
    memcpy(u, t, sizeof u);
    u[9].dtype = "F64";
    dir = checkpoint("tensors", config_text(true, NULL), u, n);
    expect_hf_fail(dir, TS_E_UNSUPPORTED, "model.safetensors: tensor "
                                          "'model.layers.0.mlp.up_proj.weight': dtype F64 is not "
                                          "supported");
    memcpy(u, t, sizeof u);
    u[n] = (tensor_spec){"model.layers.0.mlp.extra.weight", "F32", 2, 0};
    dir = checkpoint("tensors", config_text(true, NULL), u, n + 1);
    expect_hf_fail(dir, TS_E_UNSUPPORTED, "tensor 'model.layers.0.mlp.extra.weight' is not used");
    memcpy(u, t, sizeof u);
    u[9].rows = FF - 1;
    dir = checkpoint("tensors", config_text(true, NULL), u, n);
    expect_hf_fail(dir, TS_E_FORMAT, "tensor 'blk.0.ffn_up.weight': shape [8, 15], expected [8, 16]");
    memcpy(u, t, sizeof u);
    u[0].dtype = "BF16"; /* one BF16 tensor first: the F32 ones after it are still aligned */
    dir = checkpoint("tensors", config_text(true, NULL), u, n);
    expect_hf_fail(dir, TS_OK, "");
    u[1].dtype = "BF16";
    u[1].rows = 7; /* 14 bytes: every F32 tensor after it is misaligned */
    u[2].rows = 7;
    dir = checkpoint("tensors", config_text(true, NULL), u, n);
    expect_hf_fail(dir, TS_E_UNSUPPORTED, "is not aligned to its 4-byte elements");
    dir = checkpoint("tensors", NULL, t, n);
    expect_hf_fail(dir, TS_E_IO, "no config.json");
    dir = checkpoint("tensors", config_text(true, NULL), NULL, 0);
    expect_hf_fail(dir, TS_E_IO, "no model.safetensors or model.safetensors.index.json");
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    write_file(path, "\x10\0\0\0\0\0\0\0{", 9);
    expect_hf_fail(dir, TS_E_FORMAT, "model.safetensors: header of 16 bytes runs past the end");
}

/* Writes the index and two shards holding t[0..k) and t[k..n) into a fresh dir. */
static const char *sharded(const char *config, const tensor_spec *t, size_t n, size_t k,
                           const char *weight_map) {
    const char *dir = checkpoint("sharded", config, NULL, 0);
    char path[700];
    snprintf(path, sizeof path, "%s/a.safetensors", dir);
    write_safetensors(path, t, k);
    snprintf(path, sizeof path, "%s/b.safetensors", dir);
    write_safetensors(path, t + k, n - k);
    ts_buf index = {0};
    ts_buf_append_str(&index, "{\"metadata\": {}, \"weight_map\": {");
    if (weight_map) {
        ts_buf_append_str(&index, weight_map);
    } else {
        for (size_t i = 0; i < n; i++)
            ts_buf_printf(&index, "%s\"%s\": \"%s\"", i ? ", " : "", t[i].name,
                          i < k ? "a.safetensors" : "b.safetensors");
    }
    ts_buf_append_str(&index, "}}");
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    write_file(path, index.data, index.len);
    ts_buf_free(&index);
    return dir;
}

static void test_hf_sharded(void) {
    tensor_spec t[16];
    size_t n = model_tensors(false, t);
    const char *config = config_text(false, NULL);
    ts_gguf *g;
    ts_model m;
    CHECK_OK(load(sharded(config, t, n, 5, NULL), &g, &m));
    CHECK_EQ_INT(ts_gguf_n_tensors(g), n);
    if (m.layers) CHECK_NEAR(row_value(&m.layers[0].wq, 1), value(2, 0), 0);
    ts_model_free(&m);
    ts_gguf_close(g);
    char map[4096];
    snprintf(map, sizeof map, "\"%s\": \"b.safetensors\"", t[0].name);
    expect_hf_fail(sharded(config, t, n, 5, map), TS_E_NOT_FOUND,
                   "index.json: tensor 'model.embed_tokens.weight' is not in shard "
                   "'b.safetensors'");
    snprintf(map, sizeof map, "\"%s\": \"a.safetensors\"", t[0].name);
    expect_hf_fail(sharded(config, t, n, 5, map), TS_E_FORMAT,
                   "a.safetensors: tensor 'model.norm.weight' is not listed for this shard");
    snprintf(map, sizeof map, "\"%s\": \"../a.safetensors\"", t[0].name);
    expect_hf_fail(sharded(config, t, n, 5, map), TS_E_FORMAT,
                   "the shard must be a file name in the directory");
    snprintf(map, sizeof map, "\"%s\": \"c.safetensors\"", t[0].name);
    expect_hf_fail(sharded(config, t, n, 5, map), TS_E_IO, "c.safetensors: No such file");
    expect_hf_fail(sharded(config, t, n, 5, ""), TS_E_FORMAT, "'weight_map' missing, empty");
}

int main(void) {
    RUN(test_reads_tensors);
    RUN(test_truncated);
    RUN(test_bad_headers);
    RUN(test_huge_header_length);
    RUN(test_hf_llama_permutes_q_and_k);
    RUN(test_hf_qwen2_keeps_rows);
    RUN(test_hf_linear_rope_scaling);
    RUN(test_hf_llama3_rope_scaling);
    RUN(test_hf_refusals);
    RUN(test_hf_bad_tensors);
    RUN(test_hf_sharded);
    return test_summary();
}
