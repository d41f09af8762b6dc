/* test_gguf.c — the GGUF reader and writer: bundled files, round trips of every value type,
 * streaming, and one test per kind of broken file (each checks the error code and that the
 * message names the file and the key or tensor). */
#include "common/buf.h"
#include "common/error.h"
#include "model/gguf.h"
#include "model/gguf_write.h"
#include "tests/unit/test.h"
#include "tests/unit/test_gguf_util.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#define STORIES_F32 TS_SOURCE_DIR "/models/stories260K/stories260K-f32.gguf"
#define STORIES_F16 TS_SOURCE_DIR "/models/stories260K/stories260K-f16.gguf"
#define TMP_DIR TS_BINARY_DIR "/tests"

static bool contains(const char *haystack, const char *needle) {
    bool found = strstr(haystack, needle) != NULL;
    if (!found) fprintf(stderr, "  message \"%s\" lacks \"%s\"\n", haystack, needle);
    return found;
}

/* Opens an exact-size heap copy of the first n bytes (so ASan sees any over-read) and expects
 * failure with `code` and a message naming "img.gguf" and containing each of the needles. */
static void expect_fail_n(const ts_buf *image, size_t n, int code, const char *needle1,
                          const char *needle2) {
    void *copy = malloc(n ? n : 1);
    memcpy(copy, image->data, n);
    ts_gguf *g = (ts_gguf *)1;
    int rc = ts_gguf_open_memory(copy, n, "img.gguf", &g);
    CHECK_EQ_INT(rc, code);
    CHECK(g == NULL);
    CHECK(contains(ts_error_message(), "img.gguf: "));
    if (needle1) CHECK(contains(ts_error_message(), needle1));
    if (needle2) CHECK(contains(ts_error_message(), needle2));
    ts_gguf_close(g);
    free(copy);
}

static void expect_fail(const ts_buf *image, int code, const char *needle1, const char *needle2) {
    expect_fail_n(image, image->len, code, needle1, needle2);
}

static void build_default(ts_buf *image) {
    fixture f = fixture_default();
    CHECK_OK(fixture_build(&f, image));
}

/* ---- valid files ---- */

static void test_opens_bundled_stories_models(void) {
    const char *paths[] = {STORIES_F32, STORIES_F16};
    for (int p = 0; p < 2; p++) {
        ts_gguf *g = NULL;
        CHECK_OK(ts_gguf_open(paths[p], &g));
        if (!g) continue;
        CHECK_EQ_INT(ts_gguf_version(g), 3);
        CHECK_EQ_INT(ts_gguf_n_tensors(g), 48);
        CHECK_EQ_INT(ts_gguf_alignment(g), 32);
        CHECK_EQ_STR(ts_gguf_path(g), paths[p]);
        const ts_gguf_tensor *t = ts_gguf_find_tensor(g, "token_embd.weight");
        CHECK(t != NULL);
        if (t) {
            CHECK_EQ_INT(t->n_dims, 2);
            CHECK_EQ_INT(t->dims[0], 64);
            CHECK_EQ_INT(t->dims[1], 512);
            CHECK_EQ_INT(t->type, p == 0 ? TS_DTYPE_F32 : TS_DTYPE_F16);
            CHECK_EQ_INT(t->n_bytes, 64 * 512 * (p == 0 ? 4 : 2));
            CHECK_EQ_STR(t->name_z, "token_embd.weight");
            CHECK((uintptr_t)t->data % 32 == 0); /* mapped at a page, offsets aligned */
        }
        CHECK(ts_gguf_find_tensor(g, "blk.4.ffn_down.weight") != NULL);
        CHECK(ts_gguf_find_tensor(g, "blk.5.ffn_down.weight") == NULL);
        uint32_t ctx = 0;
        CHECK_OK(ts_gguf_get_u32(g, "llama.context_length", &ctx));
        CHECK_EQ_INT(ctx, 128);
        float eps = 0;
        CHECK_OK(ts_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &eps));
        CHECK_NEAR(eps, 1e-5, 1e-12);
        ts_gguf_str arch = {0};
        CHECK_OK(ts_gguf_get_str(g, "general.architecture", &arch));
        CHECK(ts_gguf_str_eq(arch, "llama"));
        const ts_gguf_kv *tokens = NULL;
        CHECK_OK(ts_gguf_get_array(g, "tokenizer.ggml.tokens", TS_GGUF_STRING, &tokens));
        if (tokens) {
            CHECK_EQ_INT(tokens->n_elems, 512);
            CHECK(ts_gguf_str_eq(tokens->strs[1], "<s>"));
        }
        const ts_gguf_kv *types = NULL;
        CHECK_OK(ts_gguf_get_array(g, "tokenizer.ggml.token_type", TS_GGUF_INT32, &types));
        if (types) CHECK_EQ_INT(ts_gguf_array_i64(types, 0), 2); /* <unk>: type UNKNOWN */
        ts_gguf_close(g);
    }
}

static void test_opens_vocab_only_files(void) {
    const char *paths[] = {TS_SOURCE_DIR "/tests/data/ggml-vocab-gpt-2.gguf",
                           TS_SOURCE_DIR "/models/vocab/llama-spm-32000.gguf"};
    const uint64_t n_tokens[] = {50257, 32000};
    for (int p = 0; p < 2; p++) {
        ts_gguf *g = NULL;
        CHECK_OK(ts_gguf_open(paths[p], &g));
        if (!g) continue;
        CHECK_EQ_INT(ts_gguf_n_tensors(g), 0);
        const ts_gguf_kv *tokens = NULL;
        CHECK_OK(ts_gguf_get_array(g, "tokenizer.ggml.tokens", TS_GGUF_STRING, &tokens));
        if (tokens) CHECK_EQ_INT(tokens->n_elems, n_tokens[p]);
        ts_gguf_close(g);
    }
}

/* Same key, type and value (strings and arrays compared by content). */
static bool kv_equal(const ts_gguf_kv *x, const ts_gguf_kv *y) {
    if (!y || x->key.len != y->key.len || memcmp(x->key.data, y->key.data, x->key.len) != 0 ||
        x->type != y->type)
        return false;
    if (x->type == TS_GGUF_STRING)
        return x->value.str.len == y->value.str.len &&
               memcmp(x->value.str.data, y->value.str.data, x->value.str.len) == 0;
    if (x->type != TS_GGUF_ARRAY) return x->value.u64 == y->value.u64;
    if (x->elem_type != y->elem_type || x->n_elems != y->n_elems) return false;
    if (x->elem_type != TS_GGUF_STRING)
        return memcmp(x->elems, y->elems, x->n_elems * ts_gguf_type_size(x->elem_type)) == 0;
    for (uint64_t i = 0; i < x->n_elems; i++)
        if (x->strs[i].len != y->strs[i].len ||
            memcmp(x->strs[i].data, y->strs[i].data, x->strs[i].len) != 0)
            return false;
    return true;
}

/* Every scalar type, arrays of every element type, and tensors of every type survive a
 * write and a read unchanged. */
static void test_round_trip_every_value_type(void) {
    ts_gguf_writer *w;
    CHECK_OK(ts_gguf_writer_create(&w));
    CHECK_OK(ts_gguf_writer_add_u8(w, "t.u8", 200));
    CHECK_OK(ts_gguf_writer_add_i8(w, "t.i8", -100));
    CHECK_OK(ts_gguf_writer_add_u16(w, "t.u16", 60000));
    CHECK_OK(ts_gguf_writer_add_i16(w, "t.i16", -30000));
    CHECK_OK(ts_gguf_writer_add_u32(w, "t.u32", 4000000000u));
    CHECK_OK(ts_gguf_writer_add_i32(w, "t.i32", -2000000000));
    CHECK_OK(ts_gguf_writer_add_u64(w, "t.u64", UINT64_MAX));
    CHECK_OK(ts_gguf_writer_add_i64(w, "t.i64", INT64_MIN));
    CHECK_OK(ts_gguf_writer_add_f32(w, "t.f32", 1.5f));
    CHECK_OK(ts_gguf_writer_add_f64(w, "t.f64", -2.25e300));
    CHECK_OK(ts_gguf_writer_add_bool(w, "t.bool", true));
    CHECK_OK(ts_gguf_writer_add_str(w, "t.str", "héllo"));
    CHECK_OK(ts_gguf_writer_add_str_n(w, "t.str0", "a\0b", 3));
    const uint8_t u8s[] = {1, 2, 255};
    const int8_t i8s[] = {-1, 0, 127};
    const uint16_t u16s[] = {1, 65535};
    const int16_t i16s[] = {-32768, 5};
    const uint32_t u32s[] = {7, 4294967295u};
    const int32_t i32s[] = {-7, 2147483647};
    const uint64_t u64s[] = {1ull << 60};
    const int64_t i64s[] = {-(1ll << 60), 3};
    const float f32s[] = {0.5f, -1e30f, 3.0f};
    const double f64s[] = {1e-300};
    const uint8_t bools[] = {1, 0, 1};
    CHECK_OK(ts_gguf_writer_add_array(w, "a.u8", TS_GGUF_UINT8, u8s, 3));
    CHECK_OK(ts_gguf_writer_add_array(w, "a.i8", TS_GGUF_INT8, i8s, 3));
    CHECK_OK(ts_gguf_writer_add_array(w, "a.u16", TS_GGUF_UINT16, u16s, 2));
    CHECK_OK(ts_gguf_writer_add_array(w, "a.i16", TS_GGUF_INT16, i16s, 2));
    CHECK_OK(ts_gguf_writer_add_array(w, "a.u32", TS_GGUF_UINT32, u32s, 2));
    CHECK_OK(ts_gguf_writer_add_array(w, "a.i32", TS_GGUF_INT32, i32s, 2));
    CHECK_OK(ts_gguf_writer_add_array(w, "a.u64", TS_GGUF_UINT64, u64s, 1));
    CHECK_OK(ts_gguf_writer_add_array(w, "a.i64", TS_GGUF_INT64, i64s, 2));
    CHECK_OK(ts_gguf_writer_add_array(w, "a.f32", TS_GGUF_FLOAT32, f32s, 3));
    CHECK_OK(ts_gguf_writer_add_array(w, "a.f64", TS_GGUF_FLOAT64, f64s, 1));
    CHECK_OK(ts_gguf_writer_add_array(w, "a.bool", TS_GGUF_BOOL, bools, 3));
    CHECK_OK(ts_gguf_writer_add_array(w, "a.empty", TS_GGUF_INT32, NULL, 0));
    const char *strs[] = {"x", "", "long string"};
    CHECK_OK(ts_gguf_writer_add_str_array(w, "a.str", strs, 3));

    float f32_data[64];
    uint16_t half_data[32 * 3];
    ts_block_q8_0 q8[2];
    ts_block_q4_0 q4[4];
    for (int i = 0; i < 64; i++) f32_data[i] = (float)i;
    for (int i = 0; i < 96; i++) half_data[i] = (uint16_t)(i * 7);
    memset(q8, 0x11, sizeof q8);
    memset(q4, 0x22, sizeof q4);
    const int64_t d_f32[] = {16, 4}, d_f16[] = {32, 3}, d_q8[] = {64}, d_q4[] = {32, 2, 2};
    CHECK_OK(ts_gguf_writer_add_tensor(w, "f32", TS_DTYPE_F32, 2, d_f32, f32_data));
    CHECK_OK(ts_gguf_writer_add_tensor(w, "f16", TS_DTYPE_F16, 2, d_f16, half_data));
    CHECK_OK(ts_gguf_writer_add_tensor(w, "bf16", TS_DTYPE_BF16, 2, d_f16, half_data));
    CHECK_OK(ts_gguf_writer_add_tensor(w, "q8", TS_DTYPE_Q8_0, 1, d_q8, q8));
    CHECK_OK(ts_gguf_writer_add_tensor(w, "q4", TS_DTYPE_Q4_0, 3, d_q4, q4));

    ts_buf image = {0};
    CHECK_OK(ts_gguf_writer_write_buf(w, &image));
    CHECK_EQ_INT(image.len, ts_gguf_writer_file_size(w));
    ts_gguf *g = NULL;
    CHECK_OK(ts_gguf_open_memory(image.data, image.len, "rt.gguf", &g));
    if (g) {
        CHECK_EQ_INT(ts_gguf_n_kv(g), 26);
        CHECK_EQ_INT(ts_gguf_version(g), 3);
        const ts_gguf_kv *kv;
        kv = ts_gguf_find_kv(g, "t.u8");
        CHECK(kv && kv->type == TS_GGUF_UINT8 && kv->value.u64 == 200);
        kv = ts_gguf_find_kv(g, "t.i8");
        CHECK(kv && kv->type == TS_GGUF_INT8 && kv->value.i64 == -100);
        kv = ts_gguf_find_kv(g, "t.u16");
        CHECK(kv && kv->type == TS_GGUF_UINT16 && kv->value.u64 == 60000);
        kv = ts_gguf_find_kv(g, "t.i16");
        CHECK(kv && kv->type == TS_GGUF_INT16 && kv->value.i64 == -30000);
        kv = ts_gguf_find_kv(g, "t.u32");
        CHECK(kv && kv->type == TS_GGUF_UINT32 && kv->value.u64 == 4000000000u);
        kv = ts_gguf_find_kv(g, "t.i32");
        CHECK(kv && kv->type == TS_GGUF_INT32 && kv->value.i64 == -2000000000);
        kv = ts_gguf_find_kv(g, "t.u64");
        CHECK(kv && kv->type == TS_GGUF_UINT64 && kv->value.u64 == UINT64_MAX);
        kv = ts_gguf_find_kv(g, "t.i64");
        CHECK(kv && kv->type == TS_GGUF_INT64 && kv->value.i64 == INT64_MIN);
        kv = ts_gguf_find_kv(g, "t.f32");
        CHECK(kv && kv->type == TS_GGUF_FLOAT32 && kv->value.f64 == 1.5);
        kv = ts_gguf_find_kv(g, "t.f64");
        CHECK(kv && kv->type == TS_GGUF_FLOAT64 && kv->value.f64 == -2.25e300);
        bool b = false;
        CHECK_OK(ts_gguf_get_bool(g, "t.bool", &b));
        CHECK(b);
        ts_gguf_str s = {0};
        CHECK_OK(ts_gguf_get_str(g, "t.str", &s));
        CHECK(ts_gguf_str_eq(s, "héllo"));
        CHECK_OK(ts_gguf_get_str(g, "t.str0", &s));
        CHECK(s.len == 3 && memcmp(s.data, "a\0b", 3) == 0);

        const ts_gguf_kv *a = NULL;
        CHECK_OK(ts_gguf_get_array(g, "a.u8", TS_GGUF_UINT8, &a));
        if (a) CHECK(a->n_elems == 3 && ts_gguf_array_i64(a, 2) == 255);
        CHECK_OK(ts_gguf_get_array(g, "a.i8", TS_GGUF_INT8, &a));
        if (a) CHECK(ts_gguf_array_i64(a, 0) == -1 && ts_gguf_array_f32(a, 2) == 127.0f);
        CHECK_OK(ts_gguf_get_array(g, "a.u16", TS_GGUF_UINT16, &a));
        if (a) CHECK(ts_gguf_array_i64(a, 1) == 65535);
        CHECK_OK(ts_gguf_get_array(g, "a.i16", TS_GGUF_INT16, &a));
        if (a) CHECK(ts_gguf_array_i64(a, 0) == -32768);
        CHECK_OK(ts_gguf_get_array(g, "a.u32", TS_GGUF_UINT32, &a));
        if (a) CHECK(ts_gguf_array_i64(a, 1) == 4294967295ll);
        CHECK_OK(ts_gguf_get_array(g, "a.i32", TS_GGUF_INT32, &a));
        if (a) CHECK(ts_gguf_array_i64(a, 0) == -7 && ts_gguf_array_i64(a, 1) == 2147483647);
        CHECK_OK(ts_gguf_get_array(g, "a.u64", TS_GGUF_UINT64, &a));
        if (a) CHECK(ts_gguf_array_i64(a, 0) == (1ll << 60));
        CHECK_OK(ts_gguf_get_array(g, "a.i64", TS_GGUF_INT64, &a));
        if (a) CHECK(ts_gguf_array_i64(a, 0) == -(1ll << 60));
        CHECK_OK(ts_gguf_get_array(g, "a.f32", TS_GGUF_FLOAT32, &a));
        if (a) CHECK(ts_gguf_array_f32(a, 1) == -1e30f && ts_gguf_array_i64(a, 2) == 3);
        CHECK_OK(ts_gguf_get_array(g, "a.f64", TS_GGUF_FLOAT64, &a));
        if (a) CHECK(ts_gguf_array_f32(a, 0) == (float)1e-300);
        CHECK_OK(ts_gguf_get_array(g, "a.bool", TS_GGUF_BOOL, &a));
        if (a) CHECK(ts_gguf_array_i64(a, 0) == 1 && ts_gguf_array_i64(a, 1) == 0);
        CHECK_OK(ts_gguf_get_array(g, "a.empty", TS_GGUF_INT32, &a));
        if (a) CHECK_EQ_INT(a->n_elems, 0);
        CHECK_OK(ts_gguf_get_array(g, "a.str", TS_GGUF_STRING, &a));
        if (a) {
            CHECK_EQ_INT(a->n_elems, 3);
            CHECK(ts_gguf_str_eq(a->strs[0], "x") && ts_gguf_str_eq(a->strs[1], ""));
            CHECK(ts_gguf_str_eq(a->strs[2], "long string"));
        }

        const ts_gguf_tensor *t = ts_gguf_find_tensor(g, "f32");
        CHECK(t && t->n_elems == 64 && memcmp(t->data, f32_data, sizeof f32_data) == 0);
        t = ts_gguf_find_tensor(g, "f16");
        CHECK(t && t->type == TS_DTYPE_F16 && memcmp(t->data, half_data, sizeof half_data) == 0);
        t = ts_gguf_find_tensor(g, "bf16");
        CHECK(t && t->type == TS_DTYPE_BF16 && t->n_bytes == sizeof half_data);
        t = ts_gguf_find_tensor(g, "q8");
        CHECK(t && t->type == TS_DTYPE_Q8_0 && t->n_bytes == sizeof q8 && memcmp(t->data, q8, sizeof q8) == 0);
        t = ts_gguf_find_tensor(g, "q4");
        CHECK(t && t->n_dims == 3 && t->dims[2] == 2 && t->dims[3] == 1 && t->n_bytes == sizeof q4);
        for (size_t i = 0; i < ts_gguf_n_tensors(g); i++)
            CHECK(ts_gguf_tensor_at(g, i)->offset % 32 == 0);
    }

    /* The same through a file. */
    const char *path = TMP_DIR "/test_gguf_rt.gguf";
    CHECK_OK(ts_gguf_writer_write_file(w, path));
    ts_gguf *from_file = NULL;
    CHECK_OK(ts_gguf_open(path, &from_file));
    if (from_file && g) {
        CHECK_EQ_INT(ts_gguf_file_size(from_file), image.len);
        CHECK_EQ_INT(ts_gguf_n_kv(from_file), ts_gguf_n_kv(g));
        CHECK_EQ_INT(ts_gguf_data_offset(from_file), ts_gguf_data_offset(g));
    }
    ts_gguf_close(from_file);
    remove(path);

    /* Copying with a prefix filter keeps types and values. */
    ts_gguf_writer *w2;
    CHECK_OK(ts_gguf_writer_create(&w2));
    size_t copied = 0;
    if (g) CHECK_OK(ts_gguf_writer_copy_kvs(w2, g, "a.", &copied));
    CHECK_EQ_INT(copied, 13);
    ts_buf image2 = {0};
    CHECK_OK(ts_gguf_writer_write_buf(w2, &image2));
    ts_gguf *g2 = NULL;
    CHECK_OK(ts_gguf_open_memory(image2.data, image2.len, "copy.gguf", &g2));
    if (g2) {
        CHECK_EQ_INT(ts_gguf_n_kv(g2), 13);
        CHECK(ts_gguf_find_kv(g2, "t.u8") == NULL);
        const ts_gguf_kv *a = NULL;
        CHECK_OK(ts_gguf_get_array(g2, "a.str", TS_GGUF_STRING, &a));
        if (a) CHECK(ts_gguf_str_eq(a->strs[2], "long string"));
        CHECK_OK(ts_gguf_get_array(g2, "a.i64", TS_GGUF_INT64, &a));
        if (a) CHECK(ts_gguf_array_i64(a, 1) == 3);
    }
    /* And every scalar type copies too. */
    ts_gguf_writer *w3;
    CHECK_OK(ts_gguf_writer_create(&w3));
    if (g) CHECK_OK(ts_gguf_writer_copy_kvs(w3, g, NULL, &copied));
    CHECK_EQ_INT(copied, 26);
    ts_buf image3 = {0};
    CHECK_OK(ts_gguf_writer_write_buf(w3, &image3));
    ts_gguf *g3 = NULL;
    CHECK_OK(ts_gguf_open_memory(image3.data, image3.len, "copy3.gguf", &g3));
    if (g3 && g) {
        for (size_t i = 0; i < ts_gguf_n_kv(g); i++) CHECK(kv_equal(ts_gguf_kv_at(g, i), ts_gguf_kv_at(g3, i)));
    }
    ts_gguf_close(g3);
    ts_gguf_close(g2);
    ts_gguf_close(g);
    ts_gguf_writer_destroy(w3);
    ts_gguf_writer_destroy(w2);
    ts_gguf_writer_destroy(w);
    ts_buf_free(&image3);
    ts_buf_free(&image2);
    ts_buf_free(&image);
}

static void test_custom_alignment_is_honoured(void) {
    ts_gguf_writer *w;
    CHECK_OK(ts_gguf_writer_create(&w));
    CHECK_OK(ts_gguf_writer_add_u32(w, "general.alignment", 64));
    float data[48] = {0};
    const int64_t d1[] = {3}, d2[] = {48};
    CHECK_OK(ts_gguf_writer_add_tensor(w, "a", TS_DTYPE_F32, 1, d1, data));
    CHECK_OK(ts_gguf_writer_add_tensor(w, "b", TS_DTYPE_F32, 1, d2, data));
    ts_buf image = {0};
    CHECK_OK(ts_gguf_writer_write_buf(w, &image));
    ts_gguf *g = NULL;
    CHECK_OK(ts_gguf_open_memory(image.data, image.len, "al.gguf", &g));
    if (g) {
        CHECK_EQ_INT(ts_gguf_alignment(g), 64);
        CHECK_EQ_INT(ts_gguf_data_offset(g) % 64, 0);
        CHECK_EQ_INT(ts_gguf_find_tensor(g, "b")->offset, 64);
    }
    /* copy_kvs never copies the source's alignment */
    ts_gguf_writer *w2;
    CHECK_OK(ts_gguf_writer_create(&w2));
    size_t copied = 9;
    if (g) CHECK_OK(ts_gguf_writer_copy_kvs(w2, g, "", &copied));
    CHECK_EQ_INT(copied, 0);
    ts_gguf_close(g);
    ts_gguf_writer_destroy(w2);
    ts_gguf_writer_destroy(w);
    ts_buf_free(&image);
}

/* A streamed file has the same bytes as a one-shot one, whatever the chunking. */
static void test_streamed_write_equals_one_shot(void) {
    static float a[100], b[64];
    for (int i = 0; i < 100; i++) a[i] = (float)i * 0.25f;
    for (int i = 0; i < 64; i++) b[i] = -(float)i;
    const int64_t da[] = {10, 10}, db[] = {64};
    ts_gguf_writer *one, *streamed;
    CHECK_OK(ts_gguf_writer_create(&one));
    CHECK_OK(ts_gguf_writer_create(&streamed));
    CHECK_OK(ts_gguf_writer_add_str(one, "k", "v"));
    CHECK_OK(ts_gguf_writer_add_str(streamed, "k", "v"));
    CHECK_OK(ts_gguf_writer_add_tensor(one, "a", TS_DTYPE_F32, 2, da, a));
    CHECK_OK(ts_gguf_writer_add_tensor(one, "b", TS_DTYPE_F32, 1, db, b));
    CHECK_OK(ts_gguf_writer_add_tensor(streamed, "a", TS_DTYPE_F32, 2, da, NULL));
    CHECK_OK(ts_gguf_writer_add_tensor(streamed, "b", TS_DTYPE_F32, 1, db, NULL));
    ts_buf expected = {0};
    CHECK_OK(ts_gguf_writer_write_buf(one, &expected));
    /* write_buf refuses tensors that have no data */
    ts_buf refused = {0};
    CHECK_EQ_INT(ts_gguf_writer_write_buf(streamed, &refused), TS_E_INVALID);
    ts_buf_free(&refused);

    const char *path = TMP_DIR "/test_gguf_stream.gguf";
    CHECK_OK(ts_gguf_writer_begin(streamed, path));
    /* chunks of 7 floats, crossing the tensor boundary */
    float all[164];
    memcpy(all, a, sizeof a);
    memcpy(all + 100, b, sizeof b);
    for (int i = 0; i < 164; i += 7)
        CHECK_OK(ts_gguf_writer_write_data(streamed, all + i, (size_t)(164 - i < 7 ? 164 - i : 7) * 4));
    CHECK(access(path, F_OK) != 0); /* not under its name before finish */
    CHECK_EQ_INT(ts_gguf_writer_write_data(streamed, all, 4), TS_E_INVALID); /* one too many */
    CHECK_EQ_INT(ts_gguf_writer_finish(streamed), TS_E_INVALID);
    CHECK(access(path, F_OK) != 0);

    CHECK_OK(ts_gguf_writer_begin(streamed, path));
    CHECK_OK(ts_gguf_writer_write_data(streamed, all, sizeof all));
    CHECK_OK(ts_gguf_writer_finish(streamed));
    ts_buf got = {0};
    CHECK_OK(ts_buf_read_file(&got, path));
    CHECK_EQ_INT(got.len, expected.len);
    CHECK(got.len == expected.len && memcmp(got.data, expected.data, got.len) == 0);
    remove(path);

    /* finishing early names the incomplete tensor and leaves no file */
    CHECK_OK(ts_gguf_writer_begin(streamed, path));
    CHECK_OK(ts_gguf_writer_write_data(streamed, all, 40));
    CHECK_EQ_INT(ts_gguf_writer_finish(streamed), TS_E_INVALID);
    CHECK(contains(ts_error_message(), "tensor 'a' got 40 of 400 bytes"));
    CHECK(access(path, F_OK) != 0);
    char partial[512];
    snprintf(partial, sizeof partial, "%s.partial", path);
    CHECK(access(partial, F_OK) != 0);

    /* destroying a writer mid-stream removes the partial file */
    CHECK_OK(ts_gguf_writer_begin(streamed, path));
    CHECK(access(partial, F_OK) == 0);
    ts_gguf_writer_destroy(streamed);
    CHECK(access(partial, F_OK) != 0);
    CHECK(access(path, F_OK) != 0);

    ts_gguf_writer_destroy(one);
    ts_buf_free(&expected);
    ts_buf_free(&got);
}

static void test_writer_refuses_what_the_reader_refuses(void) {
    ts_gguf_writer *w;
    CHECK_OK(ts_gguf_writer_create(&w));
    CHECK_OK(ts_gguf_writer_add_u32(w, "k", 1));
    CHECK_EQ_INT(ts_gguf_writer_add_str(w, "k", "again"), TS_E_INVALID);
    CHECK(contains(ts_error_message(), "'k'"));
    CHECK_EQ_INT(ts_gguf_writer_add_u32(w, "", 1), TS_E_INVALID);
    CHECK_EQ_INT(ts_gguf_writer_add_u32(w, "general.alignment", 48), TS_E_INVALID);
    CHECK_EQ_INT(ts_gguf_writer_add_u64(w, "general.alignment", 64), TS_E_INVALID);
    CHECK_EQ_INT(ts_gguf_writer_add_array(w, "nested", TS_GGUF_ARRAY, NULL, 0), TS_E_INVALID);
    CHECK_EQ_INT(ts_gguf_writer_add_array(w, "strs", TS_GGUF_STRING, NULL, 0), TS_E_INVALID);
    float data[64] = {0};
    const int64_t ok[] = {32, 2}, zero[] = {0, 2}, odd[] = {33};
    CHECK_OK(ts_gguf_writer_add_tensor(w, "t", TS_DTYPE_F32, 2, ok, data));
    CHECK_EQ_INT(ts_gguf_writer_add_tensor(w, "t", TS_DTYPE_F32, 2, ok, data), TS_E_INVALID);
    CHECK(contains(ts_error_message(), "'t' added twice"));
    CHECK_EQ_INT(ts_gguf_writer_add_tensor(w, "", TS_DTYPE_F32, 2, ok, data), TS_E_INVALID);
    CHECK_EQ_INT(ts_gguf_writer_add_tensor(w, "z", TS_DTYPE_F32, 2, zero, data), TS_E_INVALID);
    CHECK_EQ_INT(ts_gguf_writer_add_tensor(w, "d", TS_DTYPE_F32, 5, ok, data), TS_E_INVALID);
    CHECK_EQ_INT(ts_gguf_writer_add_tensor(w, "q", TS_DTYPE_Q8_0, 1, odd, data), TS_E_INVALID);
    CHECK(contains(ts_error_message(), "block size 32"));
    CHECK_EQ_INT(ts_gguf_writer_add_tensor(w, "u", (ts_dtype)99, 1, odd, data), TS_E_INVALID);
    CHECK_EQ_INT(ts_gguf_writer_add_u32(w, "general.alignment", 64), TS_E_INVALID); /* too late */
    CHECK_EQ_INT(ts_gguf_writer_write_file(w, "/nonexistent-dir/x.gguf"), TS_E_IO);
    CHECK(contains(ts_error_message(), "/nonexistent-dir/x.gguf"));
    /* the writer is still usable after refusals */
    ts_buf image = {0};
    CHECK_OK(ts_gguf_writer_write_buf(w, &image));
    ts_gguf *g = NULL;
    CHECK_OK(ts_gguf_open_memory(image.data, image.len, "w.gguf", &g));
    if (g) CHECK_EQ_INT(ts_gguf_n_kv(g), 1);
    ts_gguf_close(g);
    ts_gguf_writer_destroy(w);
    ts_buf_free(&image);
}

static void test_typed_getters_convert_and_refuse(void) {
    ts_gguf_writer *w;
    CHECK_OK(ts_gguf_writer_create(&w));
    CHECK_OK(ts_gguf_writer_add_i32(w, "neg", -1));
    CHECK_OK(ts_gguf_writer_add_u8(w, "small", 9));
    CHECK_OK(ts_gguf_writer_add_u64(w, "big", 1ull << 40));
    CHECK_OK(ts_gguf_writer_add_u64(w, "huge", UINT64_MAX));
    CHECK_OK(ts_gguf_writer_add_str(w, "s", "text"));
    CHECK_OK(ts_gguf_writer_add_f64(w, "d", 0.125));
    const int32_t xs[] = {1};
    CHECK_OK(ts_gguf_writer_add_array(w, "arr", TS_GGUF_INT32, xs, 1));
    ts_buf image = {0};
    CHECK_OK(ts_gguf_writer_write_buf(w, &image));
    ts_gguf *g = NULL;
    CHECK_OK(ts_gguf_open_memory(image.data, image.len, "get.gguf", &g));
    if (g) {
        uint32_t u = 0;
        int64_t i = 0;
        float f = 0;
        bool b;
        ts_gguf_str s;
        const ts_gguf_kv *a;
        CHECK_OK(ts_gguf_get_u32(g, "small", &u));
        CHECK_EQ_INT(u, 9);
        CHECK_OK(ts_gguf_get_i64(g, "neg", &i));
        CHECK_EQ_INT(i, -1);
        CHECK_OK(ts_gguf_get_i64(g, "big", &i));
        CHECK_EQ_INT(i, 1ll << 40);
        CHECK_OK(ts_gguf_get_f32(g, "d", &f));
        CHECK_NEAR(f, 0.125, 0);
        CHECK_EQ_INT(ts_gguf_get_u32(g, "neg", &u), TS_E_FORMAT);
        CHECK(contains(ts_error_message(), "get.gguf: key 'neg': value -1 out of range for uint32"));
        CHECK_EQ_INT(ts_gguf_get_u32(g, "big", &u), TS_E_FORMAT);
        CHECK_EQ_INT(ts_gguf_get_i64(g, "huge", &i), TS_E_FORMAT);
        CHECK_EQ_INT(ts_gguf_get_u32(g, "s", &u), TS_E_FORMAT);
        CHECK(contains(ts_error_message(), "get.gguf: key 's': expected uint32, found string"));
        CHECK_EQ_INT(ts_gguf_get_u32(g, "arr", &u), TS_E_FORMAT);
        CHECK(contains(ts_error_message(), "found array of int32"));
        CHECK_EQ_INT(ts_gguf_get_f32(g, "small", &f), TS_E_FORMAT);
        CHECK_EQ_INT(ts_gguf_get_bool(g, "small", &b), TS_E_FORMAT);
        CHECK_EQ_INT(ts_gguf_get_str(g, "d", &s), TS_E_FORMAT);
        CHECK_EQ_INT(ts_gguf_get_array(g, "arr", TS_GGUF_FLOAT32, &a), TS_E_FORMAT);
        CHECK(contains(ts_error_message(), "expected array of float32, found array of int32"));
        CHECK_EQ_INT(ts_gguf_get_array(g, "s", TS_GGUF_INT32, &a), TS_E_FORMAT);
        CHECK_EQ_INT(ts_gguf_get_u32(g, "absent", &u), TS_E_NOT_FOUND);
        CHECK_EQ_STR(ts_error_message(), "get.gguf: missing key 'absent'");
        CHECK(ts_gguf_find_kv(g, "absent") == NULL);
        CHECK(ts_gguf_kv_at(g, 99) == NULL && ts_gguf_tensor_at(g, 0) == NULL);
    }
    ts_gguf_close(g);
    ts_gguf_writer_destroy(w);
    ts_buf_free(&image);
}

/* ---- broken files ---- */

static void test_refuses_bad_magic_and_versions(void) {
    ts_buf image = {0};
    build_default(&image);
    image.data[0] = 'X';
    expect_fail(&image, TS_E_FORMAT, "not a GGUF file", NULL);
    image.data[0] = 'G';
    image_put_u32(&image, 4, 1);
    expect_fail(&image, TS_E_UNSUPPORTED, "version 1 is not supported", NULL);
    image_put_u32(&image, 4, 4);
    expect_fail(&image, TS_E_UNSUPPORTED, "unknown GGUF version 4", NULL);
    image_put_u32(&image, 4, 0x03000000u);
    expect_fail(&image, TS_E_UNSUPPORTED, "big-endian", NULL);
    image_put_u32(&image, 4, 2); /* v2 has the same layout as v3 */
    ts_gguf *g = NULL;
    CHECK_OK(ts_gguf_open_memory(image.data, image.len, "v2.gguf", &g));
    if (g) CHECK_EQ_INT(ts_gguf_version(g), 2);
    ts_gguf_close(g);
    ts_buf_free(&image);
}

/* Every proper prefix of a file that ends in tensor data fails cleanly; the message says which
 * part was cut (key, tensor or data). Cuts in the trailing padding leave a valid file. */
static void test_refuses_truncation_at_every_byte(void) {
    ts_buf image = {0};
    fixture f = fixture_default();
    f.n_layers = 1;
    f.n_vocab = 4;
    f.dim = 8;
    f.n_heads = 2;
    f.n_kv_heads = 1;
    f.n_ff = 8;
    CHECK_OK(fixture_build(&f, &image));
    ts_gguf *g = NULL;
    CHECK_OK(ts_gguf_open_memory(image.data, image.len, "full.gguf", &g));
    if (!g) return;
    size_t data_end = 0, infos_end = (size_t)ts_gguf_data_offset(g);
    for (size_t i = 0; i < ts_gguf_n_tensors(g); i++) {
        const ts_gguf_tensor *t = ts_gguf_tensor_at(g, i);
        size_t end = (size_t)(ts_gguf_data_offset(g) + t->offset) + t->n_bytes;
        if (end > data_end) data_end = end;
    }
    long first_tensor = image_find(&image, "token_embd.weight") - 8;
    ts_gguf_close(g);
    for (size_t n = 0; n < data_end; n++) {
        void *copy = malloc(n ? n : 1);
        memcpy(copy, image.data, n);
        g = (ts_gguf *)1;
        CHECK_EQ_INT(ts_gguf_open_memory(copy, n, "cut.gguf", &g), TS_E_FORMAT);
        CHECK(g == NULL);
        const char *m = ts_error_message();
        bool named = strncmp(m, "cut.gguf: ", 10) == 0;
        if (n >= infos_end) /* cut in the data: the tensor is named */
            named = named && strstr(m, "tensor '") && strstr(m, "beyond file size");
        else if (n >= (size_t)first_tensor) /* cut in the tensor infos */
            named = named && strstr(m, "tensor");
        else if (n >= 24) /* cut in the metadata (or too short for the counts) */
            named = named && (strstr(m, "key") || strstr(m, "tensors cannot fit"));
        if (!named) fprintf(stderr, "  cut at %zu: %s\n", n, m);
        CHECK(named);
        free(copy);
    }
    for (size_t n = data_end; n <= image.len; n++) {
        void *copy = malloc(n);
        memcpy(copy, image.data, n);
        CHECK_OK(ts_gguf_open_memory(copy, n, "padded.gguf", &g));
        ts_gguf_close(g);
        free(copy);
    }
    ts_buf_free(&image);
}

static void test_refuses_string_length_beyond_file(void) {
    ts_buf image = {0};
    build_default(&image);
    long at = image_find(&image, "general.architecture") - 8; /* its length field */
    image_put_u64(&image, at, 1ull << 62);
    expect_fail(&image, TS_E_FORMAT, "key #0", "runs past the end of the file");
    ts_buf_free(&image);

    build_default(&image);
    at = image_find(&image, "general.architecture") + 20 + 4; /* the value string's length */
    image_put_u64(&image, at, image.len);
    expect_fail(&image, TS_E_FORMAT, "key 'general.architecture'", "string value of");
    ts_buf_free(&image);

    build_default(&image);
    at = image_find(&image, "blk.0.attn_q.weight") - 8;
    image_put_u64(&image, at, UINT64_MAX);
    expect_fail(&image, TS_E_FORMAT, "tensor #", "runs past the end of the file");
    ts_buf_free(&image);
}

static void test_refuses_huge_counts_without_allocating(void) {
    ts_buf image = {0};
    build_default(&image);
    image_put_u64(&image, 16, UINT64_MAX / 2); /* n_kv */
    expect_fail(&image, TS_E_FORMAT, "metadata keys cannot fit", NULL);
    image_put_u64(&image, 16, 7);
    image_put_u64(&image, 8, 1ull << 59); /* n_tensors */
    expect_fail(&image, TS_E_FORMAT, "tensors cannot fit", NULL);
    ts_buf_free(&image);

    /* an array claiming 2^61 strings or numbers */
    ts_gguf_writer *w;
    CHECK_OK(ts_gguf_writer_create(&w));
    const char *strs[] = {"a", "b"};
    CHECK_OK(ts_gguf_writer_add_str_array(w, "tokens", strs, 2));
    const int32_t nums[] = {1, 2};
    CHECK_OK(ts_gguf_writer_add_array(w, "nums", TS_GGUF_INT32, nums, 2));
    CHECK_OK(ts_gguf_writer_write_buf(w, &image));
    ts_gguf_writer_destroy(w);
    long strs_len = image_find(&image, "tokens") + 6 + 4 + 4; /* key, ARRAY, elem type */
    long nums_len = image_find(&image, "nums") + 4 + 4 + 4;
    image_put_u64(&image, strs_len, 1ull << 61);
    expect_fail(&image, TS_E_FORMAT, "key 'tokens'", "strings");
    image_put_u64(&image, strs_len, 2);
    image_put_u64(&image, strs_len + 8 + 8 + 1, 1000); /* the second string's length */
    expect_fail(&image, TS_E_FORMAT, "key 'tokens': element 1: string of 1000 bytes", NULL);
    image_put_u64(&image, strs_len + 8 + 8 + 1, 1);
    image_put_u64(&image, nums_len, 1ull << 61);
    expect_fail(&image, TS_E_FORMAT, "key 'nums'", "int32 values");
    ts_buf_free(&image);
}

static void test_refuses_bad_tensor_infos(void) {
    ts_buf image = {0};
    build_default(&image);
    long info = image_tensor_info(&image, "blk.1.ffn_up.weight");
    /* n_dims, dims[0], dims[1], type, offset */
    image_put_u32(&image, info, 5);
    expect_fail(&image, TS_E_FORMAT, "tensor 'blk.1.ffn_up.weight'", "5 dimensions");
    image_put_u32(&image, info, 0);
    expect_fail(&image, TS_E_FORMAT, "tensor 'blk.1.ffn_up.weight'", "0 dimensions");
    image_put_u32(&image, info, 2);
    image_put_u64(&image, info + 4, 0);
    expect_fail(&image, TS_E_FORMAT, "tensor 'blk.1.ffn_up.weight'", "dimension 0 is 0");
    image_put_u64(&image, info + 4, 1ull << 40);
    image_put_u64(&image, info + 12, 1ull << 40);
    expect_fail(&image, TS_E_FORMAT, "tensor 'blk.1.ffn_up.weight'", "overflows");
    image_put_u64(&image, info + 4, 1ull << 63);
    expect_fail(&image, TS_E_FORMAT, "tensor 'blk.1.ffn_up.weight'", "must be between 1");
    image_put_u64(&image, info + 4, 64);
    image_put_u64(&image, info + 12, 96);
    image_put_u32(&image, info + 20, 99);
    expect_fail(&image, TS_E_UNSUPPORTED, "tensor 'blk.1.ffn_up.weight'", "type id 99");
    image_put_u32(&image, info + 20, 16); /* iq2_xxs: a real GGML type we do not support */
    expect_fail(&image, TS_E_UNSUPPORTED, "tensor 'blk.1.ffn_up.weight'", "type id 16");
    image_put_u32(&image, info + 20, 15); /* q8_K: activations only, never a tensor */
    expect_fail(&image, TS_E_UNSUPPORTED, "tensor 'blk.1.ffn_up.weight'", "type id 15");
    image_put_u32(&image, info + 20, TS_DTYPE_Q8_0);
    image_put_u64(&image, info + 4, 48);
    expect_fail(&image, TS_E_FORMAT, "tensor 'blk.1.ffn_up.weight'", "block size 32");
    image_put_u64(&image, info + 4, 64);
    image_put_u32(&image, info + 20, TS_DTYPE_F32);
    ts_gguf *g = NULL;
    CHECK_OK(ts_gguf_open_memory(image.data, image.len, "restored.gguf", &g)); /* restored */
    uint64_t offset = g ? ts_gguf_find_tensor(g, "blk.1.ffn_up.weight")->offset : 0;
    ts_gguf_close(g);
    image_put_u64(&image, info + 24, offset + 4);
    expect_fail(&image, TS_E_FORMAT, "tensor 'blk.1.ffn_up.weight'", "not a multiple of the alignment 32");
    image_put_u64(&image, info + 24, (uint64_t)image.len);
    expect_fail(&image, TS_E_FORMAT, "tensor 'blk.1.ffn_up.weight': data [", "beyond file size");
    image_put_u64(&image, info + 24, UINT64_MAX - 31);
    expect_fail(&image, TS_E_FORMAT, "tensor 'blk.1.ffn_up.weight'", "beyond file size");
    ts_buf_free(&image);

    /* a name longer than a tensor name may be, an empty one, one with a NUL byte */
    build_default(&image);
    long len_at = image_find(&image, "output.weight") - 8;
    image_put_u64(&image, len_at, 0);
    expect_fail(&image, TS_E_FORMAT, "tensor #", NULL);
    image_put_u64(&image, len_at, 13);
    image.data[len_at + 8 + 3] = '\0';
    expect_fail(&image, TS_E_FORMAT, "NUL byte", NULL);
    ts_buf_free(&image);
}

static void test_refuses_duplicates(void) {
    ts_gguf_writer *w;
    ts_buf image = {0};
    CHECK_OK(ts_gguf_writer_create(&w));
    CHECK_OK(ts_gguf_writer_add_u32(w, "dup.a", 1));
    CHECK_OK(ts_gguf_writer_add_u32(w, "dup.b", 2));
    float data[4] = {0};
    const int64_t d[] = {4};
    CHECK_OK(ts_gguf_writer_add_tensor(w, "tensor.a", TS_DTYPE_F32, 1, d, data));
    CHECK_OK(ts_gguf_writer_add_tensor(w, "tensor.b", TS_DTYPE_F32, 1, d, data));
    CHECK_OK(ts_gguf_writer_write_buf(w, &image));
    ts_gguf_writer_destroy(w);
    long key_b = image_find(&image, "dup.b"), tensor_b = image_find(&image, "tensor.b");
    image.data[key_b + 4] = 'a';
    expect_fail(&image, TS_E_FORMAT, "duplicate key 'dup.a'", NULL);
    image.data[key_b + 4] = 'b';
    image.data[tensor_b + 7] = 'a';
    expect_fail(&image, TS_E_FORMAT, "duplicate tensor name 'tensor.a'", NULL);
    ts_buf_free(&image);
}

static void test_refuses_bad_values(void) {
    ts_gguf_writer *w;
    ts_buf image = {0};
    CHECK_OK(ts_gguf_writer_create(&w));
    CHECK_OK(ts_gguf_writer_add_bool(w, "flag", true));
    CHECK_OK(ts_gguf_writer_add_u32(w, "weird", 1));
    const uint8_t bytes[] = {1, 2};
    CHECK_OK(ts_gguf_writer_add_array(w, "nested", TS_GGUF_UINT8, bytes, 2));
    const uint8_t bools[] = {0, 1};
    CHECK_OK(ts_gguf_writer_add_array(w, "bools", TS_GGUF_BOOL, bools, 2));
    CHECK_OK(ts_gguf_writer_add_u32(w, "general.alignmenX", 48));
    CHECK_OK(ts_gguf_writer_add_str(w, "general.alignmenY", "64"));
    CHECK_OK(ts_gguf_writer_write_buf(w, &image));
    ts_gguf_writer_destroy(w);
    ts_gguf *g = NULL;
    CHECK_OK(ts_gguf_open_memory(image.data, image.len, "ok.gguf", &g));
    ts_gguf_close(g);

    long flag = image_find(&image, "flag") + 4 + 4;
    image.data[flag] = 2;
    expect_fail(&image, TS_E_FORMAT, "key 'flag'", "bool value 2");
    image.data[flag] = 1;
    long weird = image_find(&image, "weird") + 5;
    image_put_u32(&image, weird, 13);
    expect_fail(&image, TS_E_FORMAT, "key 'weird'", "unknown value type 13");
    image_put_u32(&image, weird, TS_GGUF_UINT32);
    long nested = image_find(&image, "nested") + 6 + 4;
    image_put_u32(&image, nested, TS_GGUF_ARRAY);
    expect_fail(&image, TS_E_UNSUPPORTED, "key 'nested'", "arrays of arrays");
    image_put_u32(&image, nested, 77);
    expect_fail(&image, TS_E_FORMAT, "key 'nested'", "unknown array element type 77");
    image_put_u32(&image, nested, TS_GGUF_UINT8);
    long bools_at = image_find(&image, "bools") + 5 + 4 + 4 + 8;
    image.data[bools_at + 1] = 7;
    expect_fail(&image, TS_E_FORMAT, "key 'bools'", "element 1: bool value 7");
    image.data[bools_at + 1] = 1;
    long align_x = image_find(&image, "general.alignmenX") + 16;
    image.data[align_x] = 't';
    expect_fail(&image, TS_E_FORMAT, "key 'general.alignment'", "48 is not a power of two");
    image.data[align_x] = 'X';
    long align_y = image_find(&image, "general.alignmenY") + 16;
    image.data[align_y] = 't';
    expect_fail(&image, TS_E_FORMAT, "key 'general.alignment'", "expected uint32, found string");
    image.data[align_y] = 'Y';
    long key_len = image_find(&image, "weird") - 8;
    image.data[key_len + 8 + 2] = '\0';
    expect_fail(&image, TS_E_FORMAT, "key #", "NUL byte");
    ts_buf_free(&image);
}

static void test_open_reports_io_errors_and_empty_files(void) {
    ts_gguf *g = (ts_gguf *)1;
    CHECK_EQ_INT(ts_gguf_open(TMP_DIR "/no-such-file.gguf", &g), TS_E_IO);
    CHECK(g == NULL);
    CHECK(contains(ts_error_message(), "no-such-file.gguf: No such file or directory"));
    CHECK_EQ_INT(ts_gguf_open(TMP_DIR, &g), TS_E_IO);
    CHECK(contains(ts_error_message(), "not a regular file"));
    const char *empty = TMP_DIR "/test_gguf_empty.gguf";
    CHECK_OK(write_bytes(empty, "", 0));
    CHECK_EQ_INT(ts_gguf_open(empty, &g), TS_E_FORMAT);
    CHECK(contains(ts_error_message(), "test_gguf_empty.gguf: not a GGUF file"));
    remove(empty);
    CHECK_EQ_INT(ts_gguf_open_memory(NULL, 0, "null.gguf", &g), TS_E_FORMAT);
    ts_gguf_close(NULL);
}

int main(void) {
    RUN(test_opens_bundled_stories_models);
    RUN(test_opens_vocab_only_files);
    RUN(test_round_trip_every_value_type);
    RUN(test_custom_alignment_is_honoured);
    RUN(test_streamed_write_equals_one_shot);
    RUN(test_writer_refuses_what_the_reader_refuses);
    RUN(test_typed_getters_convert_and_refuse);
    RUN(test_refuses_bad_magic_and_versions);
    RUN(test_refuses_truncation_at_every_byte);
    RUN(test_refuses_string_length_beyond_file);
    RUN(test_refuses_huge_counts_without_allocating);
    RUN(test_refuses_bad_tensor_infos);
    RUN(test_refuses_duplicates);
    RUN(test_refuses_bad_values);
    RUN(test_open_reports_io_errors_and_empty_files);
    return test_summary();
}
