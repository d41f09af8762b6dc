/*
 * fuzz_tokenizer.c — fuzzing the tokenizers' entry points that take user text.
 *
 * The first byte of an input picks a vocabulary (SmolLM2, Qwen2.5-Coder, GPT-2, Llama 2's
 * SentencePiece, stories260K: tests/data, loaded once) and the flags (parse_special, add_bos);
 * the rest is the text, any bytes at all. LLVMFuzzerTestOneInput checks the contract:
 *   - encoding succeeds, and every id is inside the vocabulary;
 *   - without parse_special, decoding a well-formed UTF-8 text gives it back byte for byte, once
 *     the dummy prefix is stripped, when the vocabulary can write each of its bytes (SmolLM2's
 *     has no token for some control characters and for 0xF5..0xFF, and drops them as llama.cpp
 *     does; which bytes a vocabulary writes is found by encoding each alone);
 *   - streaming the ids through ts_detok emits only well-formed UTF-8;
 *   - NFC (tokenizer.json's normalizer) of the text is a fixed point of NFC.
 * A broken contract calls abort(), which the fuzzer reports as a crash.
 *
 * Built as fuzz_gguf is (tests/tokenizer.cmake): a libFuzzer binary with -DTESSERA_FUZZ=ON and
 * clang, and always a plain program whose main() replays tests/fuzz/corpus/tokenizer/ (or the
 * files given) so the entry point runs in every build.
 */
#include "common/buf.h"
#include "common/error.h"
#include "common/utf8.h"
#include "model/gguf.h"
#include "tokenizer/nfc.h"
#include "tokenizer/tokenizer.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const VOCABS[] = {
    TS_SOURCE_DIR "/tests/data/vocab-smollm2-135m-instruct.gguf",
    TS_SOURCE_DIR "/tests/data/vocab-qwen2.5-coder-0.5b-instruct.gguf",
    TS_SOURCE_DIR "/tests/data/ggml-vocab-gpt-2.gguf",
    TS_SOURCE_DIR "/tests/data/ggml-vocab-llama-spm.gguf",
    TS_SOURCE_DIR "/models/stories260K/stories260K-f32.gguf",
};
enum { N_VOCABS = sizeof VOCABS / sizeof VOCABS[0] };

static ts_tokenizer *tokenizers[N_VOCABS];
static bool writes_byte[N_VOCABS][256];

static void require(bool cond, const char *what) {
    if (!cond) {
        fprintf(stderr, "fuzz_tokenizer: contract broken: %s (message: %s)\n", what,
                ts_error_message());
        abort();
    }
}

static const ts_tokenizer *tokenizer(unsigned i) {
    if (tokenizers[i]) return tokenizers[i];
    ts_gguf *g = NULL;
    require(ts_gguf_open(VOCABS[i], &g) == 0, "the test vocabulary opens");
    require(ts_tokenizer_from_gguf(g, &tokenizers[i]) == 0, "the test vocabulary loads");
    ts_gguf_close(g);
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        int32_t *ids = NULL;
        size_t n = 0;
        ts_buf out = {0};
        require(ts_tokenizer_encode(tokenizers[i], &c, 1, false, false, &ids, &n) == 0 &&
                    ts_tokenizer_decode(tokenizers[i], ids, n, true, &out) == 0,
                "a byte encodes");
        writes_byte[i][b] = out.len == 1 && out.data[0] == c;
        free(ids);
        ts_buf_free(&out);
    }
    return tokenizers[i];
}

static bool well_formed(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += ts_utf8_decode(s + i, n - i, &cp);
        if (cp == TS_UTF8_INVALID || cp == TS_UTF8_INCOMPLETE) return false;
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    unsigned selector = data[0];
    const ts_tokenizer *t = tokenizer(selector % N_VOCABS);
    bool parse_special = selector & 0x40, add_bos = selector & 0x80;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;

    int32_t *ids = NULL;
    size_t n = 0;
    require(ts_tokenizer_encode(t, text, len, add_bos, parse_special, &ids, &n) == 0,
            "encoding succeeds");
    for (size_t i = 0; i < n; i++)
        require(ids[i] >= 0 && ids[i] < ts_tokenizer_n_vocab(t), "ids are in the vocabulary");
    ts_buf out = {0}, piece = {0};
    bool writable = well_formed(text, len);
    for (size_t i = 0; writable && i < len; i++)
        writable = writes_byte[selector % N_VOCABS][(unsigned char)text[i]];
    if (!parse_special && writable) {
        require(ts_tokenizer_decode(t, ids, n, true, &out) == 0, "decoding succeeds");
        require(out.len == len && (len == 0 || !memcmp(out.data, text, len)),
                "decode(encode(text)) == text");
    }
    ts_detok d = {0};
    for (size_t i = 0; i < n; i++) {
        ts_buf_clear(&piece);
        require(ts_detok_push(&d, t, ids[i], &piece) == 0, "streaming succeeds");
        require(well_formed(piece.data, piece.len), "streamed text is well-formed UTF-8");
    }
    ts_buf_clear(&piece);
    require(ts_detok_flush(&d, &piece) == 0 && well_formed(piece.data, piece.len),
            "the stream ends well-formed");

    ts_buf once = {0}, twice = {0};
    require(ts_nfc(text, len, &once) == 0 && ts_nfc(once.data, once.len, &twice) == 0,
            "NFC succeeds");
    require(once.len == twice.len && (once.len == 0 || !memcmp(once.data, twice.data, once.len)),
            "NFC is a fixed point of NFC");
    ts_buf_free(&once);
    ts_buf_free(&twice);
    ts_buf_free(&out);
    ts_buf_free(&piece);
    free(ids);
    return 0;
}

#ifndef TS_LIBFUZZER
#include "tests/fuzz/fuzz_replay.h"

int main(int argc, char **argv) {
    int rc = ts_fuzz_replay_main("fuzz_tokenizer", argc, argv,
                                 TS_SOURCE_DIR "/tests/fuzz/corpus/tokenizer");
    for (int i = 0; i < N_VOCABS; i++)
        ts_tokenizer_destroy(tokenizers[i]);
    return rc;
}
#endif
