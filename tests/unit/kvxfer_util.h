/*
 * kvxfer_util.h — what the KV transfer tests share: one engine rank on the bundled model, the
 * greedy reference cases, and greedy generation driven directly through the engine (prefill on
 * one engine, decode on another) so that a test can put a KV transfer in between.
 */
#ifndef TS_TESTS_KVXFER_UTIL_H
#define TS_TESTS_KVXFER_UTIL_H

#include "common/buf.h"
#include "common/error.h"
#include "kernels/kernels.h"
#include "model/gguf.h"
#include "model/model.h"
#include "node/comm.h"
#include "node/engine.h"
#include "node/kv_pool.h"
#include "kvx/kv_transfer.h"
#include "tokenizer/tokenizer.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define KVX_MODEL TS_SOURCE_DIR "/models/stories260K/stories260K-f32.gguf"
#define KVX_CASES TS_SOURCE_DIR "/tests/data/greedy_stories260K_f32.jsonl"

enum { KVX_BLOCK = 4, KVX_CTX = 128, KVX_MAX_CASES = 16, KVX_MAX_IDS = 256 };

/* The mpirun test programs' check (kvxfer_tp.c, kvxfer_nccl.c): counts a failure in
 * kvx_failures and says which world rank failed and why; the program goes on. */
#define kvx_failures (*kvx_failure_count())
static inline int *kvx_failure_count(void) {
    static int n;
    return &n;
}
#define KVX_EXPECT(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            kvx_failures++;                                                                        \
            fprintf(stderr, "FAIL rank %d: ", ts_mpi_world_rank());                                \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, " (%s)\n", ts_error_message());                                        \
        }                                                                                          \
    } while (0)

typedef struct kvx_rank {
    ts_gguf *gguf;
    ts_model model;
    ts_backend *be;
    ts_comm *comm;
    ts_engine *engine;
    ts_kv_pool *pool; /* leader only */
    ts_tokenizer *tok;
    uint64_t fingerprint;
} kvx_rank;

/* Opens the bundled model on one rank of `comm` (taken over; NULL: a group of one) on backend
 * device `device` ("cpu", "cuda:N"). Small blocks so that even the short reference prompts
 * span several blocks. */
static inline int kvx_rank_open_on(kvx_rank *r, ts_comm *comm, ts_dtype kv_type,
                                   const char *device) {
    memset(r, 0, sizeof *r);
    int rc = ts_gguf_open(KVX_MODEL, &r->gguf);
    if (!rc) rc = ts_model_load(r->gguf, &r->model);
    if (!rc) rc = ts_tokenizer_from_gguf(r->gguf, &r->tok);
    ts_backend_options bo = {.device = device, .n_threads = 1};
    if (!rc) rc = ts_backend_create(&bo, &r->be);
    if (!rc && !comm) rc = ts_comm_create_self(&comm);
    r->comm = comm;
    ts_engine_options eo = {.block_size = KVX_BLOCK,
                            .kv_memory = (size_t)4 << 20,
                            .kv_type = kv_type,
                            .max_ctx = KVX_CTX};
    if (!rc) rc = ts_engine_create(&r->model, r->be, r->comm, &eo, &r->engine);
    if (!rc && comm->rank == 0)
        rc = ts_kv_pool_create(ts_engine_n_blocks(r->engine), KVX_BLOCK, &r->pool);
    if (!rc) r->fingerprint = ts_kvx_fingerprint(&r->model, kv_type, KVX_BLOCK);
    return rc;
}

/* The same on the CPU (one kernel thread). */
static inline int kvx_rank_open(kvx_rank *r, ts_comm *comm, ts_dtype kv_type) {
    return kvx_rank_open_on(r, comm, kv_type, "cpu");
}

static inline void kvx_rank_close(kvx_rank *r) {
    ts_kv_pool_destroy(r->pool);
    ts_engine_destroy(r->engine);
    ts_comm_destroy(r->comm);
    ts_backend_destroy(r->be);
    ts_tokenizer_destroy(r->tok);
    ts_model_free(&r->model);
    ts_gguf_close(r->gguf);
    memset(r, 0, sizeof *r);
}

/* The receiver's statistics once its I/O thread closed every connection it was told to close
 * (it does at its next sweep), waiting up to 5 s: for "nothing held" checks. */
static inline void kvx_settled_stats(ts_kvx_receiver *rx, ts_kvx_receiver_stats *st) {
    for (int i = 0; i < 500; i++) {
        ts_kvx_receiver_get_stats(rx, st);
        if (st->n_connections == 0) return;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* ---- the reference cases (a tiny reader for this one file's shape) ---- */

typedef struct kvx_case {
    char prompt[256];
    int32_t ids[KVX_MAX_IDS];
    int32_t n_ids;
    int32_t n_predict;
    char expected[2048]; /* greedy_text without its leading "<s> " */
} kvx_case;

static inline const char *kvx_json_string(const char *p, char *out, size_t size) {
    size_t n = 0;
    for (p++; *p && *p != '"'; p++) {
        char c = *p;
        if (c == '\\') {
            c = *++p;
            if (c == 'n')
                c = '\n';
            else if (c == 't')
                c = '\t';
            else if (c == 'u') {
                c = (char)strtol((char[5]){p[1], p[2], p[3], p[4], 0}, NULL, 16);
                p += 4;
            }
        }
        if (n + 1 < size) out[n++] = c;
    }
    out[n] = 0;
    return p;
}

static inline int kvx_load_cases(kvx_case *cases, int max) {
    ts_buf text = {0};
    if (ts_buf_read_file(&text, KVX_CASES)) return -1;
    ts_buf_append_char(&text, 0);
    int n = 0;
    for (char *line = text.data; line && *line && n < max; n++) {
        kvx_case *c = &cases[n];
        memset(c, 0, sizeof *c);
        char *p = strstr(line, "\"prompt\": ");
        kvx_json_string(p + 10, c->prompt, sizeof c->prompt);
        p = strstr(line, "\"prompt_ids\": [") + 15;
        while (*p != ']' && c->n_ids < KVX_MAX_IDS) {
            c->ids[c->n_ids++] = (int32_t)strtol(p, &p, 10);
            while (*p == ',' || *p == ' ')
                p++;
        }
        c->n_predict = (int32_t)strtol(strstr(line, "\"n_predict\": ") + 13, NULL, 10);
        char full[2048];
        kvx_json_string(strstr(line, "\"greedy_text\": ") + 15, full, sizeof full);
        snprintf(c->expected, sizeof c->expected, "%s", strncmp(full, "<s> ", 4) ? full : full + 4);
        line = strchr(line, '\n');
        if (line) line++;
    }
    ts_buf_free(&text);
    return n;
}

/* ---- generation through the engine ---- */

/* A one-sequence batch of n tokens at positions pos0.. over block_table[0 .. n_blocks). */
static inline ts_batch kvx_batch(const int32_t *tokens, int32_t n, int32_t pos0,
                                 const int32_t *block_table, int32_t n_blocks, ts_batch_seq *seq) {
    *seq = (ts_batch_seq){.row0 = 0,
                          .n_rows = n,
                          .pos0 = pos0,
                          .block0 = 0,
                          .n_blocks = n_blocks,
                          .want_logits = true};
    return (ts_batch){.n_tokens = n,
                      .n_seqs = 1,
                      .tokens = tokens,
                      .seqs = seq,
                      .block_ids = block_table,
                      .n_block_ids = n_blocks,
                      .block_size = KVX_BLOCK};
}

/* Leader: takes blocks from the pool until the table covers n_tokens. */
static inline int kvx_grow(kvx_rank *r, int32_t *table, int32_t *n_blocks, int32_t n_tokens) {
    while (*n_blocks * KVX_BLOCK < n_tokens) {
        int rc = ts_kv_pool_alloc(r->pool, &table[*n_blocks]);
        if (rc) return rc;
        (*n_blocks)++;
    }
    return TS_OK;
}

static inline void kvx_release(kvx_rank *r, int32_t *table, int32_t n_blocks) {
    for (int32_t i = 0; i < n_blocks; i++)
        ts_kv_pool_release(r->pool, table[i]);
}

/* Leader: greedy decode after a prefill of n_prompt tokens whose KV is in table, starting from
 * the first generated token `first`; appends tokens to out (first included) until n_predict
 * tokens or EOS. The table grows from r->pool. Returns the count or a negative error. */
static inline int kvx_decode(kvx_rank *r, int32_t *table, int32_t *n_blocks, int32_t n_prompt,
                             int32_t first, int32_t n_predict, int32_t *out) {
    ts_sampling greedy = {.temperature = 0, .top_p = 1, .repetition_penalty = 1};
    int32_t eos = ts_tokenizer_eos(r->tok), n = 0, token = first;
    while (n < n_predict && token != eos) {
        out[n++] = token;
        if (n == n_predict) break;
        int32_t pos = n_prompt + n - 1;
        int rc = kvx_grow(r, table, n_blocks, pos + 1);
        if (rc) return rc;
        ts_batch_seq seq;
        ts_batch b = kvx_batch(&token, 1, pos, table, *n_blocks, &seq);
        rc = ts_engine_step(r->engine, &b, &greedy, &token, NULL);
        if (rc) return rc;
    }
    return n;
}

/* The text of generated ids, as `tessera generate` streams it. */
static inline void kvx_text(const kvx_rank *r, const int32_t *ids, int n, ts_buf *out) {
    ts_detok d = {0};
    for (int i = 0; i < n; i++)
        ts_detok_push(&d, r->tok, ids[i], out);
    ts_detok_flush(&d, out);
    ts_buf_append_char(out, 0);
}

/* Leader: greedy decode of case c (request `id`) whose prompt's KV is in ids[0 .. n_blocks)
 * (room for KVX_CTX / KVX_BLOCK ids), from the first token `first`; releases the blocks and
 * compares prompt + generated text with the reference: prints "ok   request ID: prompt" when
 * equal, both texts to stderr otherwise. True when equal. */
static inline bool kvx_decode_matches(kvx_rank *r, const kvx_case *c, uint64_t id, int32_t *ids,
                                      int32_t n_blocks, int32_t first) {
    int32_t out[KVX_CTX];
    int n = kvx_decode(r, ids, &n_blocks, c->n_ids, first, c->n_predict, out);
    kvx_release(r, ids, n_blocks);
    if (n <= 0) {
        fprintf(stderr, "request %llu: decoding failed: %s\n", (unsigned long long)id,
                ts_error_message());
        return false;
    }
    ts_buf text = {0};
    ts_buf_append_str(&text, c->prompt);
    kvx_text(r, out, n, &text);
    bool same = strcmp(text.data, c->expected) == 0;
    if (same)
        printf("ok   request %llu: %s\n", (unsigned long long)id, c->prompt);
    else
        fprintf(stderr, "request %llu: text\n  expected: %s\n  got:      %s\n",
                (unsigned long long)id, c->expected, text.data);
    ts_buf_free(&text);
    return same;
}

/* A prefill's layer hook (ts_engine_set_layer_hook(engine, kvx_ship_layer, &ship)) that ships
 * the sequence blocks table[first .. first + n) of every layer as it is computed; the first
 * error stays in rc. */
typedef struct kvx_ship {
    ts_kvx_sender *tx;
    const int32_t *table;
    int32_t first, n;
    int rc;
} kvx_ship;

static inline void kvx_ship_layer(void *user, const ts_batch *b, int32_t layer) {
    kvx_ship *s = user;
    (void)b;
    if (!s->rc && s->n > 0)
        s->rc = ts_kvx_sender_send_layer(s->tx, layer, s->table, s->first, s->n);
}

#endif
