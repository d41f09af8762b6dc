/*
 * test_kv_transfer.c — the KV transfer's checksum, wire format, engine KV access, and whole
 * transfers over real TCP on loopback: a prompt prefilled on one engine, its KV shipped layer by
 * layer while the prefill runs, installed into a second engine, which decodes the reference
 * tokens. If a byte landed in the wrong place the greedy text would differ.
 */
#include "common/clock.h"
#include "kvxfer_util.h"
#include "kvx/kv_transfer.h"
#include "kvx/kv_transfer_group.h"
#include "test.h"

/* ------------------------------------------------------------------ checksum, wire format */

static void test_crc32c_known_vectors(void) {
    /* RFC 3720 B.4 and the common check value. */
    uint8_t buf[32];
    CHECK_EQ_INT(ts_crc32c(0, "123456789", 9), 0xe3069283u);
    memset(buf, 0, sizeof buf);
    CHECK_EQ_INT(ts_crc32c(0, buf, 32), 0x8a9136aau);
    memset(buf, 0xff, sizeof buf);
    CHECK_EQ_INT(ts_crc32c(0, buf, 32), 0x62a8ab43u);
    for (int i = 0; i < 32; i++)
        buf[i] = (uint8_t)i;
    CHECK_EQ_INT(ts_crc32c(0, buf, 32), 0x46dd794eu);
    CHECK_EQ_INT(ts_crc32c_portable(0, buf, 32), 0x46dd794eu);
    for (int i = 0; i < 32; i++)
        buf[i] = (uint8_t)(31 - i);
    CHECK_EQ_INT(ts_crc32c(0, buf, 32), 0x113fdb5cu);
    CHECK_EQ_INT(ts_crc32c(0, "", 0), 0u);
    /* Fast and portable paths agree at every length and alignment; continuation works. */
    uint8_t big[1031];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 131 + 7);
    for (size_t off = 0; off < 8; off++)
        for (size_t n = 0; n + off <= sizeof big; n += 97) {
            uint32_t whole = ts_crc32c(0, big + off, n);
            CHECK_EQ_INT(whole, ts_crc32c_portable(0, big + off, n));
            CHECK_EQ_INT(ts_crc32c(ts_crc32c(0, big + off, n / 3), big + off + n / 3, n - n / 3),
                         whole);
        }
}

static void test_header_and_frame_round_trip_and_every_flipped_byte_is_caught(void) {
    ts_kvx_header h = {.request_id = 0x1122334455667788ull,
                       .fingerprint = 0xfeedull,
                       .n_layers = 5,
                       .n_tokens = 37,
                       .block_size = 16,
                       .n_blocks = 3,
                       .head_dim = 8,
                       .dtype = TS_DTYPE_F16,
                       .kv_head0 = 2,
                       .n_kv_heads = 2,
                       .src_rank = 1,
                       .src_size = 2,
                       .dst_rank = 0,
                       .dst_size = 1};
    uint8_t buf[TS_KVX_HEADER_BYTES];
    ts_kvx_header_encode(&h, buf);
    ts_kvx_header back;
    CHECK_OK(ts_kvx_header_decode(buf, &back));
    CHECK(memcmp(&h, &back, sizeof h) == 0);
    CHECK_EQ_INT(ts_kvx_block_payload_bytes(&h), 2 * 2 * 16 * 8 * 2);
    for (int i = 0; i < TS_KVX_HEADER_BYTES; i++) {
        uint8_t bad[TS_KVX_HEADER_BYTES];
        memcpy(bad, buf, sizeof bad);
        bad[i] ^= 0x10;
        CHECK_EQ_INT(ts_kvx_header_decode(bad, &back), TS_E_FORMAT);
    }
    ts_kvx_frame f = {TS_KVX_FRAME_BLOCK, 4, 2, 1024, 0xdeadbeef}, fb;
    uint8_t fbuf[TS_KVX_FRAME_BYTES];
    ts_kvx_frame_encode(&f, fbuf);
    CHECK_OK(ts_kvx_frame_decode(fbuf, &fb));
    CHECK(memcmp(&f, &fb, sizeof f) == 0);
    for (int i = 0; i < TS_KVX_FRAME_BYTES; i++) {
        uint8_t bad[TS_KVX_FRAME_BYTES];
        memcpy(bad, fbuf, sizeof bad);
        bad[i] ^= 0x01;
        CHECK_EQ_INT(ts_kvx_frame_decode(bad, &fb), TS_E_FORMAT);
    }
    f.kind = 9;
    ts_kvx_frame_encode(&f, fbuf);
    CHECK_EQ_INT(ts_kvx_frame_decode(fbuf, &fb), TS_E_FORMAT);
}

static void test_fingerprint_tells_models_and_kv_types_apart(void) {
    ts_gguf *g32 = NULL, *g16 = NULL;
    ts_model m32 = {0}, m16 = {0};
    CHECK_OK(ts_gguf_open(KVX_MODEL, &g32));
    CHECK_OK(ts_gguf_open(TS_SOURCE_DIR "/models/stories260K/stories260K-f16.gguf", &g16));
    CHECK_OK(ts_model_load(g32, &m32));
    CHECK_OK(ts_model_load(g16, &m16));
    uint64_t a = ts_kvx_fingerprint(&m32, TS_DTYPE_F16, 16);
    CHECK(a == ts_kvx_fingerprint(&m32, TS_DTYPE_F16, 16));
    CHECK(a != ts_kvx_fingerprint(&m32, TS_DTYPE_F32, 16));
    CHECK(a != ts_kvx_fingerprint(&m16, TS_DTYPE_F16, 16));
    CHECK(a != ts_kvx_fingerprint(&m32, TS_DTYPE_F16, 32)); /* the block size too */
    ts_model_free(&m32);
    ts_model_free(&m16);
    ts_gguf_close(g32);
    ts_gguf_close(g16);
}

/* ------------------------------------------------------------------ engine KV access */

static void test_engine_kv_read_write_round_trip_by_head_range(void) {
    kvx_rank r;
    CHECK_OK(kvx_rank_open(&r, NULL, TS_DTYPE_F32));
    const ts_model_hparams *hp = ts_engine_hparams(r.engine);
    size_t head = (size_t)KVX_BLOCK * (size_t)hp->head_dim * sizeof(float);
    int32_t blocks[3] = {5, 0, 9};
    size_t all = 3 * (size_t)hp->n_kv_heads * head;
    float *k = malloc(all), *v = malloc(all), *k2 = malloc(all), *v2 = malloc(all);
    for (size_t i = 0; i < all / sizeof(float); i++) {
        k[i] = (float)i;
        v[i] = -(float)i;
    }
    CHECK_OK(ts_engine_kv_write(r.engine, 2, blocks, 3, 0, hp->n_kv_heads, k, v));
    CHECK_OK(ts_engine_kv_read(r.engine, 2, blocks, 3, 0, hp->n_kv_heads, k2, v2));
    CHECK(memcmp(k, k2, all) == 0 && memcmp(v, v2, all) == 0);
    /* Heads [1, 3) of block 0: the second and third head of the second block written above. */
    CHECK_OK(ts_engine_kv_read(r.engine, 2, &blocks[1], 1, 1, 2, k2, v2));
    CHECK(memcmp(k2, (char *)k + (size_t)hp->n_kv_heads * head + head, 2 * head) == 0);
    CHECK(memcmp(v2, (char *)v + (size_t)hp->n_kv_heads * head + head, 2 * head) == 0);
    /* Another layer is untouched by writes to layer 2. */
    memset(k2, 0x5a, all);
    CHECK_OK(ts_engine_kv_write(r.engine, 3, blocks, 1, 0, 1, k2, k2));
    CHECK_OK(ts_engine_kv_read(r.engine, 2, blocks, 3, 0, hp->n_kv_heads, k2, v2));
    CHECK(memcmp(k, k2, all) == 0);
    int32_t bad = ts_engine_n_blocks(r.engine);
    CHECK_EQ_INT(ts_engine_kv_read(r.engine, 0, &bad, 1, 0, 1, k2, v2), TS_E_INVALID);
    CHECK_EQ_INT(ts_engine_kv_read(r.engine, hp->n_layers, blocks, 1, 0, 1, k2, v2), TS_E_INVALID);
    CHECK_EQ_INT(ts_engine_kv_read(r.engine, 0, blocks, 1, 3, 2, k2, v2), TS_E_INVALID);
    free(k);
    free(v);
    free(k2);
    free(v2);
    kvx_rank_close(&r);
}

typedef struct hook_log {
    int calls[64];
    int n;
} hook_log;

static void log_layer(void *user, const ts_batch *b, int32_t layer) {
    hook_log *h = user;
    if (h->n < 64) h->calls[h->n++] = layer * 1000 + b->n_tokens;
}

static void test_layer_hook_sees_every_layer_and_changes_nothing(void) {
    kvx_rank r;
    CHECK_OK(kvx_rank_open(&r, NULL, TS_DTYPE_F16));
    kvx_case cases[KVX_MAX_CASES];
    CHECK(kvx_load_cases(cases, KVX_MAX_CASES) > 0);
    int32_t table[64], n_blocks = 0, tok_plain = -1, tok_hooked = -1;
    ts_sampling greedy = {.temperature = 0, .top_p = 1, .repetition_penalty = 1};
    CHECK_OK(kvx_grow(&r, table, &n_blocks, cases[0].n_ids));
    ts_batch_seq seq;
    ts_batch b = kvx_batch(cases[0].ids, cases[0].n_ids, 0, table, n_blocks, &seq);
    CHECK_OK(ts_engine_step(r.engine, &b, &greedy, &tok_plain, NULL));
    hook_log log = {0};
    ts_engine_set_layer_hook(r.engine, log_layer, &log);
    CHECK_OK(ts_engine_step(r.engine, &b, &greedy, &tok_hooked, NULL));
    ts_engine_set_layer_hook(r.engine, NULL, NULL);
    CHECK_EQ_INT(tok_plain, tok_hooked);
    CHECK_EQ_INT(log.n, ts_engine_hparams(r.engine)->n_layers);
    for (int i = 0; i < log.n; i++)
        CHECK_EQ_INT(log.calls[i], i * 1000 + cases[0].n_ids);
    kvx_release(&r, table, n_blocks);
    kvx_rank_close(&r);
}

/* ------------------------------------------------------------------ whole transfers */

/* Prefills ids on `pre` in chunks of `chunk` tokens, shipping each chunk's completed blocks
 * (and at the end the last partial block) layer by layer to `endpoint`; returns the first
 * generated token or a negative error. The prefill's blocks are released at the end. */
static int prefill_and_ship(kvx_rank *pre, uint64_t id, const int32_t *ids, int32_t n_ids,
                            int32_t chunk, const char *endpoint) {
    const char *eps[1] = {endpoint};
    ts_kvx_sender_options so = {.request_id = id,
                                .fingerprint = pre->fingerprint,
                                .n_tokens = n_ids,
                                .dst_endpoints = eps,
                                .dst_size = 1,
                                .timeout_ms = 20000};
    ts_kvx_sender *tx = NULL;
    int rc = ts_kvx_sender_open(pre->engine, &so, &tx);
    if (rc) return rc;
    int32_t table[KVX_CTX / KVX_BLOCK], n_blocks = 0, token = -1, shipped = 0;
    ts_sampling greedy = {.temperature = 0, .top_p = 1, .repetition_penalty = 1};
    kvx_ship s = {.tx = tx, .table = table};
    ts_engine_set_layer_hook(pre->engine, kvx_ship_layer, &s);
    for (int32_t pos = 0; !rc && pos < n_ids; pos += chunk) {
        int32_t n = n_ids - pos < chunk ? n_ids - pos : chunk;
        rc = kvx_grow(pre, table, &n_blocks, pos + n);
        /* Blocks whose slots are all written after this chunk; the last chunk ships the rest. */
        int32_t done = pos + n == n_ids ? n_blocks : (pos + n) / KVX_BLOCK;
        s.first = shipped;
        s.n = done - shipped;
        ts_batch_seq seq;
        ts_batch b = kvx_batch(ids + pos, n, pos, table, n_blocks, &seq);
        if (!rc) rc = ts_engine_step(pre->engine, &b, &greedy, &token, NULL);
        if (!rc) rc = s.rc;
        shipped = done;
    }
    ts_engine_set_layer_hook(pre->engine, NULL, NULL);
    if (!rc) rc = ts_kvx_sender_finish(tx);
    ts_kvx_sender_destroy(tx);
    kvx_release(pre, table, n_blocks);
    return rc ? rc : token;
}

static ts_kvx_receiver *open_receiver(kvx_rank *dec, int timeout_ms) {
    ts_kvx_receiver_options ro = {
        .listen = "127.0.0.1:0", .fingerprint = dec->fingerprint, .timeout_ms = timeout_ms};
    ts_kvx_receiver *rx = NULL;
    CHECK_OK(ts_kvx_receiver_open(dec->engine, &ro, &rx));
    return rx;
}

/* Decodes request `id` on `dec` after its KV arrived; returns the generated count. */
static int receive_and_decode(kvx_rank *dec, ts_kvx_receiver *rx, uint64_t id, int32_t n_prompt,
                              int32_t first, int32_t n_predict, int32_t *out) {
    int32_t table[KVX_CTX / KVX_BLOCK], n_blocks = 0;
    int rc = ts_kvx_receiver_wait(rx, id, 20000);
    if (!rc)
        rc = ts_kvx_receiver_claim(rx, dec->engine, dec->pool, id, table, KVX_CTX / KVX_BLOCK,
                                   &n_blocks);
    if (rc) return rc;
    int n = kvx_decode(dec, table, &n_blocks, n_prompt, first, n_predict, out);
    kvx_release(dec, table, n_blocks);
    return n;
}

static void test_disaggregated_greedy_matches_reference(void) {
    kvx_rank pre, dec;
    CHECK_OK(kvx_rank_open(&pre, NULL, TS_DTYPE_F16));
    CHECK_OK(kvx_rank_open(&dec, NULL, TS_DTYPE_F16));
    ts_kvx_receiver *rx = open_receiver(&dec, 20000);
    kvx_case cases[KVX_MAX_CASES];
    int n_cases = kvx_load_cases(cases, KVX_MAX_CASES);
    CHECK(n_cases >= 8);
    int32_t free_pre = ts_kv_pool_n_free(pre.pool), free_dec = ts_kv_pool_n_free(dec.pool);
    for (int i = 0; rx && i < n_cases; i++) {
        kvx_case *c = &cases[i];
        uint64_t id = 100 + (uint64_t)i;
        int first = prefill_and_ship(&pre, id, c->ids, c->n_ids, 512, ts_kvx_receiver_endpoint(rx));
        CHECK(first >= 0);
        if (first < 0) {
            fprintf(stderr, "  case %d: %s\n", i, ts_error_message());
            continue;
        }
        int32_t out[KVX_CTX];
        int n = receive_and_decode(&dec, rx, id, c->n_ids, first, c->n_predict, out);
        CHECK(n > 0);
        ts_buf text = {0};
        ts_buf_append_str(&text, c->prompt);
        if (n > 0) kvx_text(&dec, out, n, &text);
        if (strcmp(text.data, c->expected) != 0)
            fprintf(stderr, "  case %d\n  expected: %s\n  got:      %s\n", i, c->expected,
                    text.data);
        CHECK_EQ_STR(text.data, c->expected);
        ts_buf_free(&text);
    }
    CHECK_EQ_INT(ts_kv_pool_n_free(pre.pool), free_pre);
    CHECK_EQ_INT(ts_kv_pool_n_free(dec.pool), free_dec);
    ts_kvx_receiver_stats st;
    ts_kvx_receiver_get_stats(rx, &st);
    CHECK_EQ_INT(st.staging_bytes, 0);
    CHECK_EQ_INT(st.n_receiving + st.n_complete, 0);
    CHECK_EQ_INT(st.transfers_ok, n_cases);
    CHECK_EQ_INT(st.transfers_failed, 0);
    ts_kvx_receiver_close(rx);
    kvx_rank_close(&pre);
    kvx_rank_close(&dec);
}

/* A prompt of many blocks prefilled in chunks (blocks shipped as each chunk completes them,
 * so frames of a layer come in several batches): the decode side continues exactly as the
 * prefill engine itself would have (a "mixed" run), here with f32 KV. */
static void test_chunked_long_prompt_decodes_like_a_local_run(void) {
    kvx_rank pre, dec;
    CHECK_OK(kvx_rank_open(&pre, NULL, TS_DTYPE_F32));
    CHECK_OK(kvx_rank_open(&dec, NULL, TS_DTYPE_F32));
    ts_kvx_receiver *rx = open_receiver(&dec, 20000);
    kvx_case cases[KVX_MAX_CASES];
    int n_cases = kvx_load_cases(cases, KVX_MAX_CASES);
    int32_t prompt[KVX_CTX], n_prompt = 0;
    for (int rep = 0; rep < 3; rep++) /* the reference prompts one after another, BOS once */
        for (int i = 0; i < n_cases; i++)
            for (int32_t j = n_prompt ? 1 : 0; j < cases[i].n_ids && n_prompt < 70; j++)
                prompt[n_prompt++] = cases[i].ids[j];
    CHECK_EQ_INT(n_prompt, 70);
    enum { PREDICT = 40 };
    /* Local reference: prefill and decode on one engine. */
    int32_t table[KVX_CTX / KVX_BLOCK], n_blocks = 0, first = -1, local[PREDICT], remote[PREDICT];
    ts_sampling greedy = {.temperature = 0, .top_p = 1, .repetition_penalty = 1};
    CHECK_OK(kvx_grow(&pre, table, &n_blocks, n_prompt));
    ts_batch_seq seq;
    ts_batch b = kvx_batch(prompt, n_prompt, 0, table, n_blocks, &seq);
    CHECK_OK(ts_engine_step(pre.engine, &b, &greedy, &first, NULL));
    int n_local = kvx_decode(&pre, table, &n_blocks, n_prompt, first, PREDICT, local);
    kvx_release(&pre, table, n_blocks);
    /* Disaggregated, prefilled in chunks of 23 tokens (not a multiple of the block size). */
    int first_remote = prefill_and_ship(&pre, 7, prompt, n_prompt, 23,
                                        rx ? ts_kvx_receiver_endpoint(rx) : "127.0.0.1:1");
    CHECK_EQ_INT(first_remote, first);
    int n_remote = first_remote < 0
                       ? -1
                       : receive_and_decode(&dec, rx, 7, n_prompt, first_remote, PREDICT, remote);
    CHECK_EQ_INT(n_remote, n_local);
    CHECK(n_local > 10);
    for (int i = 0; i < n_local && i < n_remote; i++)
        CHECK_EQ_INT(remote[i], local[i]);
    ts_kvx_receiver_close(rx);
    kvx_rank_close(&pre);
    kvx_rank_close(&dec);
}

/* Many transfers at once on one receiver, their frames interleaved: each installs exactly the
 * bytes its source blocks hold (compared layer by layer through ts_engine_kv_read). */
static void test_many_concurrent_transfers_install_exact_bytes(void) {
    enum { N = 16, TOKENS = 10, BLOCKS = 3 };
    kvx_rank pre, dec;
    CHECK_OK(kvx_rank_open(&pre, NULL, TS_DTYPE_F16));
    CHECK_OK(kvx_rank_open(&dec, NULL, TS_DTYPE_F16));
    ts_kvx_receiver *rx = open_receiver(&dec, 20000);
    const ts_model_hparams *hp = ts_engine_hparams(pre.engine);
    size_t bytes = (size_t)BLOCKS * (size_t)hp->n_kv_heads * KVX_BLOCK * (size_t)hp->head_dim * 2;
    uint8_t *k = malloc(bytes), *v = malloc(bytes), *k2 = malloc(bytes), *v2 = malloc(bytes);
    /* Distinct contents for every source block of every layer. */
    int32_t src[N][BLOCKS];
    for (int i = 0; i < N; i++)
        for (int32_t j = 0; j < BLOCKS; j++)
            src[i][j] = i * BLOCKS + j;
    for (int32_t l = 0; l < hp->n_layers; l++)
        for (int i = 0; i < N; i++) {
            for (size_t x = 0; x < bytes; x++) {
                k[x] = (uint8_t)(x * 31 + (size_t)i * 7 + (size_t)l);
                v[x] = (uint8_t)(x * 17 + (size_t)i * 3 + (size_t)l * 5);
            }
            CHECK_OK(ts_engine_kv_write(pre.engine, l, src[i], BLOCKS, 0, hp->n_kv_heads, k, v));
        }
    const char *eps[1] = {rx ? ts_kvx_receiver_endpoint(rx) : "127.0.0.1:1"};
    ts_kvx_sender *tx[N] = {0};
    for (int i = 0; i < N; i++) {
        ts_kvx_sender_options so = {.request_id = 500 + (uint64_t)i,
                                    .fingerprint = pre.fingerprint,
                                    .n_tokens = TOKENS,
                                    .dst_endpoints = eps,
                                    .dst_size = 1,
                                    .timeout_ms = 20000};
        CHECK_OK(ts_kvx_sender_open(pre.engine, &so, &tx[i]));
    }
    for (int32_t l = hp->n_layers - 1; l >= 0; l--) /* layers in reverse, blocks one by one */
        for (int32_t j = 0; j < BLOCKS; j++)
            for (int i = 0; i < N; i++)
                if (tx[i]) CHECK_OK(ts_kvx_sender_send_layer(tx[i], l, src[i], j, 1));
    for (int i = 0; i < N; i++) {
        if (tx[i]) CHECK_OK(ts_kvx_sender_finish(tx[i]));
        ts_kvx_sender_destroy(tx[i]);
    }
    int32_t free_dec = ts_kv_pool_n_free(dec.pool);
    for (int i = 0; rx && i < N; i++) {
        uint64_t id = 500 + (uint64_t)i;
        int32_t ids[BLOCKS], n = 0;
        CHECK_OK(ts_kvx_receiver_wait(rx, id, 20000));
        CHECK_OK(ts_kvx_receiver_claim(rx, dec.engine, dec.pool, id, ids, BLOCKS, &n));
        CHECK_EQ_INT(n, BLOCKS);
        for (int32_t l = 0; n == BLOCKS && l < hp->n_layers; l++) {
            CHECK_OK(ts_engine_kv_read(pre.engine, l, src[i], BLOCKS, 0, hp->n_kv_heads, k, v));
            CHECK_OK(ts_engine_kv_read(dec.engine, l, ids, BLOCKS, 0, hp->n_kv_heads, k2, v2));
            CHECK(memcmp(k, k2, bytes) == 0 && memcmp(v, v2, bytes) == 0);
        }
        kvx_release(&dec, ids, n);
    }
    CHECK_EQ_INT(ts_kv_pool_n_free(dec.pool), free_dec);
    free(k);
    free(v);
    free(k2);
    free(v2);
    ts_kvx_receiver_close(rx);
    kvx_rank_close(&pre);
    kvx_rank_close(&dec);
}

/* The group API in groups of one (the multi-rank case runs under mpirun: kvxfer_tp.c), and the
 * engine's group tasks it rides on. */
static void test_group_api_in_groups_of_one(void) {
    kvx_rank pre, dec;
    CHECK_OK(kvx_rank_open(&pre, NULL, TS_DTYPE_F16));
    CHECK_OK(kvx_rank_open(&dec, NULL, TS_DTYPE_F16));
    CHECK_EQ_INT(ts_engine_run_task(pre.engine, "x", 1), TS_E_UNSUPPORTED); /* no handler yet */
    ts_kvx_group *gp = NULL, *gd = NULL;
    ts_kvx_group_options po = {0}, dopt = {.receive = true, .receiver = {.listen = "127.0.0.1:0"}};
    CHECK_OK(ts_kvx_group_create(pre.engine, &pre.model, &po, &gp));
    CHECK_OK(ts_kvx_group_create(dec.engine, &dec.model, &dopt, &gd));
    CHECK_EQ_STR(ts_kvx_group_endpoints(gp), "");
    CHECK(strncmp(ts_kvx_group_endpoints(gd), "127.0.0.1:", 10) == 0);
    CHECK_EQ_INT(ts_engine_run_task(pre.engine, "not ours", 8), TS_E_NOT_FOUND);
    CHECK_EQ_INT(ts_engine_run_task(pre.engine, "x", ts_engine_task_max_bytes(pre.engine) + 1),
                 TS_E_INVALID);
    kvx_case cases[KVX_MAX_CASES];
    CHECK(kvx_load_cases(cases, KVX_MAX_CASES) > 0);
    const kvx_case *c = &cases[3];
    int32_t table[KVX_CTX / KVX_BLOCK], n_blocks = 0, first = -1;
    ts_sampling greedy = {.temperature = 0, .top_p = 1, .repetition_penalty = 1};
    CHECK_OK(kvx_grow(&pre, table, &n_blocks, c->n_ids));
    CHECK_OK(ts_kvx_group_send_open(gp, 5, c->n_ids, ts_kvx_group_endpoints(gd)));
    CHECK_EQ_INT(ts_kvx_group_send_open(gp, 5, c->n_ids, ts_kvx_group_endpoints(gd)),
                 TS_E_INVALID); /* already open */
    CHECK_OK(ts_kvx_group_send_arm(gp, 5, 0, 0, n_blocks));
    ts_batch_seq seq;
    ts_batch b = kvx_batch(c->ids, c->n_ids, 0, table, n_blocks, &seq);
    CHECK_OK(ts_engine_step(pre.engine, &b, &greedy, &first, NULL));
    CHECK_OK(ts_kvx_group_send_finish(gp, 5));
    CHECK_EQ_INT(ts_kvx_group_send_finish(gp, 5), TS_E_NOT_FOUND);
    kvx_release(&pre, table, n_blocks);
    CHECK_OK(ts_kvx_group_recv_wait(gd, 5, 20000));
    int32_t ids[KVX_CTX / KVX_BLOCK], n = 0, n_tokens = 0, out[KVX_CTX];
    int32_t free_dec = ts_kv_pool_n_free(dec.pool);
    CHECK_OK(ts_kvx_group_recv_claim(gd, dec.pool, 5, ids, KVX_CTX / KVX_BLOCK, &n, &n_tokens));
    CHECK_EQ_INT(n_tokens, c->n_ids);
    int got = kvx_decode(&dec, ids, &n, c->n_ids, first, c->n_predict, out);
    kvx_release(&dec, ids, n);
    CHECK_EQ_INT(ts_kv_pool_n_free(dec.pool), free_dec);
    ts_buf text = {0};
    ts_buf_append_str(&text, c->prompt);
    if (got > 0) kvx_text(&dec, out, got, &text);
    CHECK_EQ_STR(text.data, c->expected);
    ts_buf_free(&text);
    /* The non-blocking forms: end + poll on the prefill side, poll on the decode side. */
    n_blocks = 0;
    CHECK_OK(kvx_grow(&pre, table, &n_blocks, c->n_ids));
    CHECK_EQ_INT(ts_kvx_group_recv_poll(gd, 8), TS_E_TIMEOUT);
    CHECK_OK(ts_kvx_group_send_open(gp, 8, c->n_ids, ts_kvx_group_endpoints(gd)));
    CHECK_OK(ts_kvx_group_send_blocks(gp, 8, table, 0, n_blocks));
    CHECK_OK(ts_kvx_group_send_end(gp, 8));
    int rc, polls = 0;
    while ((rc = ts_kvx_group_send_poll(gp, 8)) == TS_E_TIMEOUT && polls++ < 20000)
        ts_sleep_ms(1);
    CHECK_OK(rc);
    CHECK_EQ_INT(ts_kvx_group_send_poll(gp, 8), TS_E_NOT_FOUND); /* decided and closed */
    kvx_release(&pre, table, n_blocks);
    polls = 0;
    while ((rc = ts_kvx_group_recv_poll(gd, 8)) == TS_E_TIMEOUT && polls++ < 20000)
        ts_sleep_ms(1);
    CHECK_OK(rc);
    CHECK_OK(ts_kvx_group_recv_claim(gd, dec.pool, 8, ids, KVX_CTX / KVX_BLOCK, &n, &n_tokens));
    kvx_release(&dec, ids, n);
    CHECK_EQ_INT(ts_kv_pool_n_free(dec.pool), free_dec);
    /* Opened, then aborted: the decode side fails it and drops it. */
    CHECK_OK(ts_kvx_group_send_open(gp, 6, 9, ts_kvx_group_endpoints(gd)));
    CHECK_OK(ts_kvx_group_send_abort(gp, 6));
    polls = 0;
    while ((rc = ts_kvx_group_recv_poll(gd, 6)) == TS_E_TIMEOUT && polls++ < 20000)
        ts_sleep_ms(1);
    CHECK_EQ_INT(rc, TS_E_UNAVAILABLE);
    CHECK_EQ_INT(ts_kvx_group_recv_wait(gd, 6, 20000), TS_E_UNAVAILABLE);
    CHECK_OK(ts_kvx_group_recv_drop(gd, 6));
    CHECK_EQ_INT(ts_kvx_group_recv_drop(gd, 99), TS_OK); /* never seen: already dropped */
    ts_kvx_group_destroy(gp);
    ts_kvx_group_destroy(gd);
    CHECK_EQ_INT(ts_engine_run_task(pre.engine, "x", 1), TS_E_UNSUPPORTED); /* unhooked */
    kvx_rank_close(&pre);
    kvx_rank_close(&dec);
}

int main(void) {
    RUN(test_crc32c_known_vectors);
    RUN(test_header_and_frame_round_trip_and_every_flipped_byte_is_caught);
    RUN(test_fingerprint_tells_models_and_kv_types_apart);
    RUN(test_engine_kv_read_write_round_trip_by_head_range);
    RUN(test_layer_hook_sees_every_layer_and_changes_nothing);
    RUN(test_disaggregated_greedy_matches_reference);
    RUN(test_chunked_long_prompt_decodes_like_a_local_run);
    RUN(test_many_concurrent_transfers_install_exact_bytes);
    RUN(test_group_api_in_groups_of_one);
    return test_summary();
}
