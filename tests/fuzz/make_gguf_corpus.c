/*
 * make_gguf_corpus.c — writes the seed corpus of fuzz_gguf (tests/fuzz/corpus/gguf/).
 *
 *   build/tests/make_gguf_corpus tests/fuzz/corpus/gguf
 *
 * A few small valid files (a Llama model in every weight type, tied and untied, every metadata
 * value type, a custom alignment, a version 2 header) and broken ones (truncated, data beyond
 * the file, an unknown tensor type, a huge count, a wrong shape, a missing key), so the fuzzer
 * starts from inputs that reach every part of the parser and the loader. Kept small: the whole
 * corpus is a few tens of kilobytes.
 */
#include "common/buf.h"
#include "common/error.h"
#include "model/gguf.h"
#include "model/gguf_write.h"
#include "tests/unit/test_gguf_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *out_dir;

static void die(const char *what) {
    fprintf(stderr, "make_gguf_corpus: %s: %s\n", what, ts_error_message());
    exit(1);
}

static void save(const char *name, const ts_buf *image, size_t n) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", out_dir, name);
    if (write_bytes(path, image->data, n)) die(name);
}

static fixture small(ts_dtype type) {
    fixture f = fixture_default();
    f.dim = 32;
    f.n_layers = 1;
    f.n_heads = 2;
    f.n_kv_heads = 1;
    f.n_ff = 32;
    f.n_vocab = 8;
    f.type = type;
    return f;
}

static void llama_files(void) {
    const ts_dtype types[] = {TS_DTYPE_F32,  TS_DTYPE_F16,  TS_DTYPE_BF16, TS_DTYPE_Q8_0,
                              TS_DTYPE_Q4_0, TS_DTYPE_Q4_1, TS_DTYPE_Q5_0, TS_DTYPE_Q5_1,
                              TS_DTYPE_IQ4_NL, TS_DTYPE_Q2_K, TS_DTYPE_Q3_K, TS_DTYPE_Q4_K,
                              TS_DTYPE_Q5_K, TS_DTYPE_Q6_K};
    for (int t = 0; t < (int)(sizeof types / sizeof types[0]); t++) {
        fixture f = small(types[t]);
        if (ts_dtype_block_elems(types[t]) > f.dim) /* K-quants: rows of whole super-blocks */
            f.dim = f.n_ff = ts_dtype_block_elems(types[t]);
        f.tied = t % 2 == 1;
        ts_buf image = {0};
        if (fixture_build(&f, &image)) die("llama");
        char name[64];
        snprintf(name, sizeof name, "llama-%s%s.gguf", ts_dtype_name(types[t]), f.tied ? "-tied" : "");
        save(name, &image, image.len);
        if (types[t] == TS_DTYPE_Q4_0) {
            /* broken copies of the smallest model */
            ts_buf b = {0};
            ts_buf_append(&b, image.data, image.len);
            save("broken-truncated-infos.gguf", &b, (size_t)image_find(&b, "blk.0.ffn_up.weight"));
            save("broken-truncated-data.gguf", &b, b.len - 100);
            long info = image_tensor_info(&b, "blk.0.ffn_gate.weight");
            image_put_u64(&b, info + 24, 1ull << 40);
            save("broken-offset.gguf", &b, b.len);
            image_put_u64(&b, info + 24, 0);
            image_put_u32(&b, info + 20, 16); /* iq2_xxs: not supported */
            save("broken-type.gguf", &b, b.len);
            image_put_u32(&b, info + 20, TS_DTYPE_Q4_0);
            image_put_u64(&b, 16, 1ull << 50);
            save("broken-count.gguf", &b, b.len);
            ts_buf_free(&b);
        }
        ts_buf_free(&image);
    }
    fixture f = small(TS_DTYPE_Q4_0);
    f.reshape_tensor = "blk.0.ffn_down.weight";
    ts_buf image = {0};
    if (fixture_build(&f, &image)) die("shape");
    save("broken-shape.gguf", &image, image.len);
    ts_buf_clear(&image);
    f = small(TS_DTYPE_Q4_0);
    f.skip_key = "llama.feed_forward_length";
    if (fixture_build(&f, &image)) die("key");
    save("broken-missing-key.gguf", &image, image.len);
    ts_buf_free(&image);
}

/* Every value type, a tokenizer-like set of arrays, alignment 64, saved as v3 and as v2. */
static void value_files(void) {
    ts_gguf_writer *w;
    if (ts_gguf_writer_create(&w)) die("writer");
    int rc = ts_gguf_writer_add_u32(w, "general.alignment", 64);
    if (!rc) rc = ts_gguf_writer_add_u8(w, "t.u8", 1);
    if (!rc) rc = ts_gguf_writer_add_i8(w, "t.i8", -1);
    if (!rc) rc = ts_gguf_writer_add_u16(w, "t.u16", 2);
    if (!rc) rc = ts_gguf_writer_add_i16(w, "t.i16", -2);
    if (!rc) rc = ts_gguf_writer_add_i32(w, "t.i32", -3);
    if (!rc) rc = ts_gguf_writer_add_u64(w, "t.u64", 4);
    if (!rc) rc = ts_gguf_writer_add_i64(w, "t.i64", -4);
    if (!rc) rc = ts_gguf_writer_add_f32(w, "t.f32", 0.5f);
    if (!rc) rc = ts_gguf_writer_add_f64(w, "t.f64", 0.25);
    if (!rc) rc = ts_gguf_writer_add_bool(w, "t.bool", true);
    if (!rc) rc = ts_gguf_writer_add_str(w, "tokenizer.ggml.model", "llama");
    const char *tokens[] = {"<unk>", "<s>", "</s>", "a", "b"};
    const float scores[] = {0, 0, 0, -1, -2};
    const int32_t token_types[] = {2, 3, 3, 1, 1};
    const uint8_t flags[] = {1, 0};
    const uint16_t u16s[] = {1, 2};
    const double f64s[] = {1.0};
    if (!rc) rc = ts_gguf_writer_add_str_array(w, "tokenizer.ggml.tokens", tokens, 5);
    if (!rc) rc = ts_gguf_writer_add_array(w, "tokenizer.ggml.scores", TS_GGUF_FLOAT32, scores, 5);
    if (!rc) rc = ts_gguf_writer_add_array(w, "tokenizer.ggml.token_type", TS_GGUF_INT32, token_types, 5);
    if (!rc) rc = ts_gguf_writer_add_array(w, "a.bool", TS_GGUF_BOOL, flags, 2);
    if (!rc) rc = ts_gguf_writer_add_array(w, "a.u16", TS_GGUF_UINT16, u16s, 2);
    if (!rc) rc = ts_gguf_writer_add_array(w, "a.f64", TS_GGUF_FLOAT64, f64s, 1);
    if (!rc) rc = ts_gguf_writer_add_array(w, "a.empty", TS_GGUF_UINT8, NULL, 0);
    static float data[64];
    const int64_t d1[] = {3}, d2[] = {32, 2};
    if (!rc) rc = ts_gguf_writer_add_tensor(w, "small", TS_DTYPE_F32, 1, d1, data);
    if (!rc) rc = ts_gguf_writer_add_tensor(w, "q", TS_DTYPE_Q8_0, 2, d2, data);
    ts_buf image = {0};
    if (!rc) rc = ts_gguf_writer_write_buf(w, &image);
    if (rc) die("values");
    save("values-align64.gguf", &image, image.len);
    image_put_u32(&image, 4, 2);
    save("values-v2.gguf", &image, image.len);
    ts_buf_free(&image);
    ts_gguf_writer_destroy(w);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: make_gguf_corpus OUT_DIR\n");
        return 2;
    }
    out_dir = argv[1];
    llama_files();
    value_files();
    return 0;
}
