/*
 * fuzz_safetensors.c — fuzzing the safetensors header parser (model/safetensors.h).
 *
 * LLVMFuzzerTestOneInput parses the input with ts_safetensors_open_memory and checks the
 * contract:
 *   - on failure, the one message names the file ("fuzz.safetensors: ...");
 *   - on success, every tensor's data lies inside the input's data buffer (touched at both ends,
 *     so ASan reports any that does not), its byte count is its element count times its element
 *     size, no two tensors with data share a byte, and lookup by name finds each tensor.
 * A broken contract calls abort(), which the fuzzer reports as a crash.
 *
 * Built as fuzz_gguf is (tests/model.cmake): a libFuzzer binary with -DTESSERA_FUZZ=ON and clang,
 * and always as a program replaying the seed corpus tests/fuzz/corpus/safetensors/ (written by
 * tests/fuzz/make_safetensors_corpus.py).
 */
#include "common/error.h"
#include "model/safetensors.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NAME "fuzz.safetensors"

static void require(int cond, const char *what) {
    if (!cond) {
        fprintf(stderr, "fuzz_safetensors: contract broken: %s (message: %s)\n", what,
                ts_error_message());
        abort();
    }
}

static volatile uint8_t sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ts_safetensors *st = NULL;
    int rc = ts_safetensors_open_memory(data, size, NAME, &st);
    if (rc) {
        require(st == NULL, "no reader on failure");
        require(strncmp(ts_error_message(), NAME ": ", strlen(NAME) + 2) == 0,
                "the message names the file");
        return 0;
    }
    size_t n = ts_safetensors_n_tensors(st);
    for (size_t i = 0; i < n; i++) {
        const ts_st_tensor *t = ts_safetensors_tensor_at(st, i);
        const uint8_t *p = t->data;
        require(p >= data && t->n_bytes <= (size_t)(data + size - p), "data inside the input");
        require(t->file_offset == (uint64_t)(p - data), "file offset");
        if (t->n_bytes) sink ^= p[0] ^ p[t->n_bytes - 1];
        require((uint64_t)t->n_elems * (uint64_t)ts_st_dtype_bits(t->dtype) == 8 * t->n_bytes,
                "bytes = elements x element size");
        int64_t elems = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) elems *= t->shape[d];
        require(elems == t->n_elems, "element count = product of the shape");
        require(ts_safetensors_find(st, t->name) == t, "lookup by name");
        for (size_t j = i + 1; j < n && n <= 256; j++) {
            const ts_st_tensor *u = ts_safetensors_tensor_at(st, j);
            require(!t->n_bytes || !u->n_bytes || t->end <= u->begin || u->end <= t->begin,
                    "no overlap");
        }
    }
    ts_safetensors_close(st);
    return 0;
}

#ifndef TS_LIBFUZZER
#include "tests/fuzz/fuzz_replay.h"

int main(int argc, char **argv) {
    return ts_fuzz_replay_main("fuzz_safetensors", argc, argv,
                               TS_SOURCE_DIR "/tests/fuzz/corpus/safetensors");
}
#endif
