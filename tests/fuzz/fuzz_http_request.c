/*
 * fuzz_http_request.c — libFuzzer entry point for the HTTP API's body → request-model mapping
 * (co_http_map_request, coordinator/http_internal.h: the JSON of POST /v1/completions or
 * /v1/chat/completions, chat template included, into a ts_request), then the one validation
 * (ts_request_validate) as co_request_admit runs it. No server: co_http_mapper_create over a
 * coordinator with the bundled model's tokenizer and the chatml template.
 *
 * Input: the first byte picks the endpoint (bit 0: chat), the rest is the body. The contract:
 * no crash, leak or undefined behaviour; every refusal is a TS_E code with a message (and a
 * param naming a field, when given, that is non-empty); mapping the same body twice gives the
 * same result.
 *
 * Built as fuzz_chat_template is (tests/serving.cmake): a libFuzzer binary with -DTESSERA_FUZZ=ON
 * and clang, and always a plain program whose main() replays tests/fuzz/corpus/http_request/.
 */
#include "common/error.h"
#include "common/json.h"
#include "coordinator/coordinator.h"
#include "coordinator/http.h"
#include "coordinator/http_internal.h"
#include "model/gguf.h"
#include "request/request.h"
#include "tokenizer/tokenizer.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static coordinator *co;
static co_http *mapper;

static void require(bool cond, const char *what) {
    if (!cond) {
        fprintf(stderr, "fuzz_http_request: contract broken: %s (message: %s)\n", what,
                ts_error_message());
        abort();
    }
}

static void setup(void) {
    co = calloc(1, sizeof *co);
    require(co != NULL, "memory");
    pthread_mutex_init(&co->mu, NULL);
    ts_gguf *g = NULL;
    require(ts_gguf_open(TS_SOURCE_DIR "/models/stories260K/stories260K-f32.gguf", &g) == TS_OK,
            "the bundled model opens");
    require(ts_tokenizer_from_gguf(g, &co->tok) == TS_OK, "its tokenizer loads");
    ts_gguf_close(g);
    snprintf(co->model_name, sizeof co->model_name, "llama");
    co->vocab = ts_tokenizer_n_vocab(co->tok);
    co->ctx_train = 512;
    require(co_http_mapper_create(co, "chatml", &mapper) == TS_OK, "the mapper starts");
}

/* One mapping and validation: the result code. */
static int map_once(bool chat, const ts_json *body) {
    ts_request req;
    ts_request_init(&req);
    const char *param = NULL;
    int rc = co_http_map_request(mapper, chat, body, true, &req, &param);
    if (rc) {
        require(rc < 0 && ts_error_message()[0], "a refusal has a code and a message");
        require(!param || param[0], "param, when given, names a field");
    } else {
        ts_request_model model = {.n_vocab = co->vocab, .n_ctx = co->ctx_train};
        rc = ts_request_validate(&req, NULL);
        if (!rc && req.prompt_ids) rc = ts_request_validate(&req, &model);
        require(!rc || (rc == TS_E_INVALID && ts_error_message()[0]),
                "the validation refuses with TS_E_INVALID and a message");
    }
    ts_request_free(&req);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!co) setup();
    if (size < 1) return 0;
    bool chat = data[0] & 1;
    ts_json_doc *doc = NULL;
    if (ts_json_parse((const char *)data + 1, size - 1, &doc)) return 0; /* a 400 before this */
    int a = map_once(chat, ts_json_root(doc));
    int b = map_once(chat, ts_json_root(doc));
    require(a == b, "mapping the same body twice gives the same result");
    ts_json_doc_free(doc);
    return 0;
}

#ifndef TS_LIBFUZZER
#include "tests/fuzz/fuzz_replay.h"

int main(int argc, char **argv) {
    int rc = ts_fuzz_replay_main("fuzz_http_request", argc, argv,
                                 TS_SOURCE_DIR "/tests/fuzz/corpus/http_request");
    co_http_stop(mapper);
    ts_tokenizer_destroy(co->tok);
    pthread_mutex_destroy(&co->mu);
    free(co);
    return rc;
}
#endif
