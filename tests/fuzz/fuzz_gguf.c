/*
 * fuzz_gguf.c — fuzzing the GGUF reader and the Llama loader.
 *
 * LLVMFuzzerTestOneInput parses the input with ts_gguf_open_memory and checks the contract:
 *   - on failure, the one message names the file ("fuzz.gguf: ...");
 *   - on success, every pointer the reader hands out lies inside the input (each string, array
 *     and tensor is touched at both ends, so ASan reports any that does not), the typed getters
 *     and lookups agree with the entries, and writing the parsed file back with the GGUF writer
 *     gives a file that parses to the same entries and tensors;
 *   - then ts_model_load either fails with a message naming the file or returns weights whose
 *     rows lie inside the tensors they come from.
 * A broken contract calls abort(), which the fuzzer reports as a crash.
 *
 * Built two ways (tests/model.cmake): with -DTESSERA_FUZZ=ON and clang as a libFuzzer binary,
 * and always as a plain program whose main() replays the seed corpus (tests/fuzz/corpus/gguf/
 * by default, or the files and directories given) so the entry point is compiled and run in
 * every build. The corpus is written by tests/fuzz/make_gguf_corpus.c.
 *
 * Running the real fuzzer (clang 14 with libclang-rt-14-dev):
 *   CC=clang cmake -S . -B build-fuzz -DTESSERA_FUZZ=ON && cmake --build build-fuzz --target
 * fuzz_gguf (cd build-fuzz && ctest -L fuzz)                      # 30 s, as CI would
 *   build-fuzz/tests/fuzz_gguf -max_total_time=600 build-fuzz/tests/fuzz_gguf.work/corpus \
 *       tests/fuzz/corpus/gguf                            # longer; crashes land in the cwd
 */
#include "common/buf.h"
#include "common/error.h"
#include "model/gguf.h"
#include "model/gguf_write.h"
#include "kernels/quant.h"
#include "model/model.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NAME "fuzz.gguf"

static void require(int cond, const char *what) {
    if (!cond) {
        fprintf(stderr, "fuzz_gguf: contract broken: %s (message: %s)\n", what, ts_error_message());
        abort();
    }
}

static volatile uint8_t sink;

/* Reads the first and last byte of [p, p + n): ASan flags it if the range leaves the input. */
static void touch(const void *p, uint64_t n) {
    if (n == 0) return;
    sink ^= ((const uint8_t *)p)[0];
    sink ^= ((const uint8_t *)p)[n - 1];
}

static void require_inside(const uint8_t *data, size_t size, const void *p, uint64_t n, const char *what) {
    const uint8_t *q = p;
    require(n == 0 || (q >= data && q <= data + size && n <= (uint64_t)(data + size - q)), what);
    touch(p, n);
}

static void check_entries(const ts_gguf *g, const uint8_t *data, size_t size) {
    for (size_t i = 0; i < ts_gguf_n_kv(g); i++) {
        const ts_gguf_kv *kv = ts_gguf_kv_at(g, i);
        require_inside(data, size, kv->key.data, kv->key.len, "key inside the input");
        char key[256];
        if (kv->key.len < sizeof key) { /* lookups find every entry by its key */
            memcpy(key, kv->key.data, (size_t)kv->key.len);
            key[kv->key.len] = '\0';
            require(ts_gguf_find_kv(g, key) == kv, "find_kv returns the entry");
            uint32_t u;
            float f;
            bool b;
            ts_gguf_str s;
            (void)ts_gguf_get_u32(g, key, &u);
            (void)ts_gguf_get_f32(g, key, &f);
            (void)ts_gguf_get_bool(g, key, &b);
            if (ts_gguf_get_str(g, key, &s) == TS_OK)
                require_inside(data, size, s.data, s.len, "string value inside the input");
        }
        if (kv->type != TS_GGUF_ARRAY) continue;
        if (kv->elem_type == TS_GGUF_STRING) {
            for (uint64_t e = 0; e < kv->n_elems; e++)
                require_inside(data, size, kv->strs[e].data, kv->strs[e].len, "array string inside");
        } else {
            require_inside(data, size, kv->elems, kv->n_elems * ts_gguf_type_size(kv->elem_type),
                           "array inside the input");
            for (uint64_t e = 0; e < kv->n_elems && e < 64; e++) {
                (void)ts_gguf_array_f32(kv, e);
                (void)ts_gguf_array_i64(kv, e);
            }
        }
    }
    for (size_t i = 0; i < ts_gguf_n_tensors(g); i++) {
        const ts_gguf_tensor *t = ts_gguf_tensor_at(g, i);
        require_inside(data, size, t->data, t->n_bytes, "tensor data inside the input");
        require(ts_gguf_find_tensor(g, t->name_z) == t, "find_tensor returns the tensor");
        require(strlen(t->name_z) == t->name.len, "name_z matches the name");
    }
}

/* Writing the parsed file back gives the same entries and tensors. */
static void check_rewrite(const ts_gguf *g) {
    ts_gguf_writer *w = NULL;
    ts_buf image = {0};
    require(ts_gguf_writer_create(&w) == TS_OK, "writer created");
    require(ts_gguf_writer_copy_kvs(w, g, NULL, NULL) == TS_OK, "every entry can be written");
    for (size_t i = 0; i < ts_gguf_n_tensors(g); i++) {
        const ts_gguf_tensor *t = ts_gguf_tensor_at(g, i);
        require(ts_gguf_writer_add_tensor(w, t->name_z, t->type, t->n_dims, t->dims, t->data) == TS_OK,
                "every tensor can be written");
    }
    require(ts_gguf_writer_write_buf(w, &image) == TS_OK, "the rewrite is written");
    ts_gguf *again = NULL;
    require(ts_gguf_open_memory(image.data, image.len, "rewrite.gguf", &again) == TS_OK,
            "the rewrite parses");
    size_t expected_kv = ts_gguf_n_kv(g) - (ts_gguf_find_kv(g, "general.alignment") ? 1 : 0);
    require(ts_gguf_n_kv(again) == expected_kv, "the rewrite has the same entries");
    require(ts_gguf_n_tensors(again) == ts_gguf_n_tensors(g), "the rewrite has the same tensors");
    for (size_t i = 0; i < ts_gguf_n_tensors(g); i++) {
        const ts_gguf_tensor *a = ts_gguf_tensor_at(g, i), *b = ts_gguf_tensor_at(again, i);
        require(a->n_bytes == b->n_bytes && a->type == b->type &&
                    memcmp(a->dims, b->dims, sizeof a->dims) == 0 &&
                    memcmp(a->data, b->data, a->n_bytes) == 0,
                "tensors survive the rewrite");
    }
    ts_gguf_close(again);
    ts_buf_free(&image);
    ts_gguf_writer_destroy(w);
}

/* Rows lie inside their tensor; the first and last rows dequantize and (quantized types) dot
 * with quantized activations, so every type's bit layout runs on fuzzed bytes. */
static void check_weight(const ts_weight *w, const char *what) {
    require(w->rows > 0 && w->cols > 0 && w->row_stride == ts_dtype_row_bytes(w->type, w->cols), what);
    touch(w->data, (uint64_t)w->rows * w->row_stride);
    if (w->cols > 4096) return; /* keep each input fast */
    float row[4096], x[4096];
    uint8_t act[4096 * 2];
    const ts_dtype at = ts_dtype_info_of((uint32_t)w->type)->vec_dot_type;
    for (int64_t i = 0; i < w->cols; i++) x[i] = (float)(i % 7) - 3.0f;
    for (int64_t r = 0; r < w->rows; r += w->rows - 1 > 0 ? w->rows - 1 : 1) {
        const char *src = (const char *)w->data + (size_t)r * w->row_stride;
        ts_dequantize_row(w->type, src, row, w->cols);
        if (ts_dtype_is_quantized(w->type)) {
            ts_quantize_act_row(at, x, act, w->cols);
            sink ^= (uint8_t)(ts_quant_vec_dot(w->type, src, act, w->cols) != 0.0f);
        }
        sink ^= (uint8_t)(row[0] != 0.0f);
    }
}

static void check_llama(const ts_gguf *g) {
    ts_model m;
    int rc = ts_model_load(g, &m);
    if (rc) {
        require(strncmp(ts_error_message(), NAME ": ", strlen(NAME) + 2) == 0,
                "llama errors name the file");
        require(m.layers == NULL, "a failed load leaves no layers");
        return;
    }
    check_weight(&m.token_embd, "embedding");
    check_weight(&m.output, "output");
    for (int32_t i = 0; i < m.hp.n_layers; i++) {
        const ts_model_layer *l = &m.layers[i];
        check_weight(&l->wq, "wq");
        check_weight(&l->wk, "wk");
        check_weight(&l->wv, "wv");
        check_weight(&l->wo, "wo");
        check_weight(&l->w_gate, "w_gate");
        check_weight(&l->w_up, "w_up");
        check_weight(&l->w_down, "w_down");
        touch(l->attn_norm.data, ts_dtype_row_bytes(l->attn_norm.type, l->attn_norm.n));
        touch(l->ffn_norm.data, ts_dtype_row_bytes(l->ffn_norm.type, l->ffn_norm.n));
    }
    (void)ts_model_bytes_per_token(&m);
    ts_model_free(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ts_gguf *g = NULL;
    int rc = ts_gguf_open_memory(data, size, NAME, &g);
    if (rc) {
        require(g == NULL, "no result on failure");
        require(rc == TS_E_FORMAT || rc == TS_E_UNSUPPORTED || rc == TS_E_NOMEM, "error code");
        require(strncmp(ts_error_message(), NAME ": ", strlen(NAME) + 2) == 0,
                "errors name the file");
        return 0;
    }
    check_entries(g, data, size);
    check_rewrite(g);
    check_llama(g);
    ts_gguf_close(g);
    return 0;
}

#ifndef TS_LIBFUZZER
#include "tests/fuzz/fuzz_replay.h"

int main(int argc, char **argv) {
    return ts_fuzz_replay_main("fuzz_gguf", argc, argv, TS_SOURCE_DIR "/tests/fuzz/corpus/gguf");
}
#endif
