/*
 * test_kv_transfer_fault.c — a KV transfer that goes wrong is detected, frees everything it
 * staged on the receiving side, tells the sender, and never reaches the KV cache: a sender
 * killed or closed midway, a flipped byte, a wrong length, a duplicate or missing frame, a
 * foreign model, a stalled sender, a cancel, a full staging area, a pool without room.
 *
 * Most faults are produced by a raw client that speaks the wire format with the module's own
 * encoders and then misbehaves on purpose; the others use the real sender.
 */
#include "common/clock.h"
#include "kvxfer_util.h"
#include "kvx/kv_transfer_net.h"
#include "test.h"

#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static kvx_rank pre, dec;

static ts_kvx_receiver *open_receiver(int timeout_ms, size_t max_staging) {
    ts_kvx_receiver_options ro = {.listen = "127.0.0.1:0",
                                  .fingerprint = dec.fingerprint,
                                  .timeout_ms = timeout_ms,
                                  .max_staging_bytes = max_staging};
    ts_kvx_receiver *rx = NULL;
    CHECK_OK(ts_kvx_receiver_open(dec.engine, &ro, &rx));
    return rx;
}

/* Nothing held: no staging, no transfer in flight or waiting, no connection left open. */
static void check_clean(ts_kvx_receiver *rx) {
    ts_kvx_receiver_stats st;
    kvx_settled_stats(rx, &st);
    CHECK_EQ_INT(st.staging_bytes, 0);
    CHECK_EQ_INT(st.n_receiving, 0);
    CHECK_EQ_INT(st.n_complete, 0);
    CHECK_EQ_INT(st.n_connections, 0);
}

/* ---- a raw client ---- */

typedef struct raw {
    int fd;
    ts_kvx_header h;
    size_t payload_bytes;
    uint8_t *payload;
} raw;

/* A valid header for `n_tokens` tokens carrying decode heads [head0, head0 + n_heads) of
 * request id, and a payload; the caller may spoil the header before raw_connect. */
static void raw_init(raw *c, uint64_t id, uint32_t n_tokens, uint32_t head0, uint32_t n_heads) {
    const ts_model_hparams *hp = ts_engine_hparams(dec.engine);
    c->fd = -1;
    c->h = (ts_kvx_header){.request_id = id,
                           .fingerprint = dec.fingerprint,
                           .n_layers = (uint32_t)hp->n_layers,
                           .n_tokens = n_tokens,
                           .block_size = KVX_BLOCK,
                           .n_blocks = (n_tokens + KVX_BLOCK - 1) / KVX_BLOCK,
                           .head_dim = (uint32_t)hp->head_dim,
                           .dtype = TS_DTYPE_F16,
                           .kv_head0 = head0,
                           .n_kv_heads = n_heads,
                           .src_rank = 0,
                           .src_size = 1,
                           .dst_rank = 0,
                           .dst_size = 1};
    c->payload_bytes = ts_kvx_block_payload_bytes(&c->h);
    c->payload = malloc(c->payload_bytes);
    for (size_t i = 0; i < c->payload_bytes; i++)
        c->payload[i] = (uint8_t)(i * 7 + id);
}

static int raw_connect(raw *c, ts_kvx_receiver *rx) {
    int rc = kvx_connect(ts_kvx_receiver_endpoint(rx), 5000, &c->fd);
    if (rc) return rc;
    uint8_t buf[TS_KVX_HEADER_BYTES];
    ts_kvx_header_encode(&c->h, buf);
    return kvx_write_all(c->fd, buf, sizeof buf, 5000, "receiver");
}

static int raw_open(raw *c, ts_kvx_receiver *rx, uint64_t id, uint32_t n_tokens, uint32_t head0,
                    uint32_t n_heads) {
    raw_init(c, id, n_tokens, head0, n_heads);
    return raw_connect(c, rx);
}

/* Sends frame (layer, block); flip >= 0 flips that payload byte after the checksum is taken;
 * bytes_delta changes the announced (and sent) length. */
static int raw_frame(raw *c, uint32_t layer, uint32_t block, long flip, int bytes_delta) {
    size_t n = c->payload_bytes + (size_t)bytes_delta;
    ts_kvx_frame f = {TS_KVX_FRAME_BLOCK, layer, block, (uint32_t)n, ts_crc32c(0, c->payload, n)};
    uint8_t head[TS_KVX_FRAME_BYTES];
    ts_kvx_frame_encode(&f, head);
    if (flip >= 0) c->payload[flip] ^= 0x04;
    int rc = kvx_write_all(c->fd, head, sizeof head, 5000, "receiver");
    if (!rc) rc = kvx_write_all(c->fd, c->payload, n, 5000, "receiver");
    if (flip >= 0) c->payload[flip] ^= 0x04;
    return rc;
}

static int raw_all_frames(raw *c) {
    int rc = 0;
    for (uint32_t l = 0; !rc && l < c->h.n_layers; l++)
        for (uint32_t b = 0; !rc && b < c->h.n_blocks; b++)
            rc = raw_frame(c, l, b, -1, 0);
    return rc;
}

static int raw_end(raw *c, uint32_t frames) {
    ts_kvx_frame f = {TS_KVX_FRAME_END, 0, frames, 0, 0};
    uint8_t head[TS_KVX_FRAME_BYTES];
    ts_kvx_frame_encode(&f, head);
    return kvx_write_all(c->fd, head, sizeof head, 5000, "receiver");
}

/* The receiver's verdict on this connection (its code), or the read error. */
static int raw_status(raw *c) {
    int code = 1;
    char text[TS_KVX_MAX_MESSAGE + 1];
    int rc = kvx_status_read(c->fd, 10000, "receiver", &code, text, sizeof text);
    return rc ? rc : code;
}

static void raw_close(raw *c) {
    if (c->fd >= 0) close(c->fd);
    free(c->payload);
    c->fd = -1;
    c->payload = NULL;
}

/* wait() must fail with `code` and a message containing `words`. */
static void check_failed(ts_kvx_receiver *rx, uint64_t id, int code, const char *words) {
    int rc = ts_kvx_receiver_wait(rx, id, 10000);
    CHECK_EQ_INT(rc, code);
    if (!strstr(ts_error_message(), words))
        fprintf(stderr, "  message \"%s\" lacks \"%s\"\n", ts_error_message(), words);
    CHECK(strstr(ts_error_message(), words) != NULL);
}

/* ---- the faults ---- */

static void test_flipped_payload_byte_is_a_checksum_failure(void) {
    ts_kvx_receiver *rx = open_receiver(10000, 0);
    int32_t free_before = ts_kv_pool_n_free(dec.pool);
    raw c;
    CHECK_OK(raw_open(&c, rx, 1, 10, 0, 4));
    CHECK_OK(raw_frame(&c, 0, 0, -1, 0));
    CHECK_OK(raw_frame(&c, 0, 1, 17, 0));
    check_failed(rx, 1, TS_E_FORMAT, "checksum mismatch");
    CHECK_EQ_INT(raw_status(&c), TS_E_FORMAT); /* the sender is told */
    raw_close(&c);
    int32_t ids[8], n = 0;
    CHECK_EQ_INT(ts_kvx_receiver_claim(rx, dec.engine, dec.pool, 1, ids, 8, &n), TS_E_NOT_FOUND);
    CHECK_EQ_INT(ts_kv_pool_n_free(dec.pool), free_before);
    check_clean(rx);
    ts_kvx_receiver_close(rx);
}

static void test_wrong_length_duplicate_and_missing_frames_fail(void) {
    ts_kvx_receiver *rx = open_receiver(10000, 0);
    raw c;
    CHECK_OK(raw_open(&c, rx, 2, 10, 0, 4));
    CHECK_OK(raw_frame(&c, 0, 0, -1, -2));
    check_failed(rx, 2, TS_E_FORMAT, "payload bytes");
    raw_close(&c);
    CHECK_OK(raw_open(&c, rx, 3, 10, 0, 4));
    CHECK_OK(raw_frame(&c, 1, 2, -1, 0));
    CHECK_OK(raw_frame(&c, 1, 2, -1, 0));
    check_failed(rx, 3, TS_E_FORMAT, "sent twice");
    raw_close(&c);
    CHECK_OK(raw_open(&c, rx, 4, 10, 0, 4));
    CHECK_OK(raw_frame(&c, 0, 0, -1, 0));
    CHECK_OK(raw_end(&c, 1));
    check_failed(rx, 4, TS_E_FORMAT, "ended after 1 of");
    CHECK_EQ_INT(raw_status(&c), TS_E_FORMAT);
    raw_close(&c);
    CHECK_OK(raw_open(&c, rx, 5, 10, 0, 4));
    CHECK_OK(raw_frame(&c, 0, 3, -1, 0)); /* 10 tokens are 3 blocks: index 3 is outside */
    check_failed(rx, 5, TS_E_FORMAT, "outside");
    raw_close(&c);
    check_clean(rx);
    ts_kvx_receiver_close(rx);
}

static void test_foreign_model_and_bad_headers_are_refused(void) {
    ts_kvx_receiver *rx = open_receiver(10000, 0);
    /* The real sender with another model's fingerprint. */
    const char *eps[1] = {ts_kvx_receiver_endpoint(rx)};
    ts_kvx_sender_options so = {.request_id = 6,
                                .fingerprint = pre.fingerprint ^ 1,
                                .n_tokens = 120,
                                .dst_endpoints = eps,
                                .dst_size = 1,
                                .timeout_ms = 10000};
    ts_kvx_sender *tx = NULL;
    int32_t table[30];
    for (int i = 0; i < 30; i++)
        table[i] = i;
    CHECK_OK(ts_kvx_sender_open(pre.engine, &so, &tx));
    /* Many frames keep coming after the refusal: the receiver drains them, so its reason still
     * reaches the sender instead of a reset connection. */
    int rc = 0;
    for (int32_t l = 0; !rc && tx && l < ts_engine_hparams(pre.engine)->n_layers; l++)
        rc = ts_kvx_sender_send_layer(tx, l, table, 0, 30);
    rc = tx ? ts_kvx_sender_finish(tx) : -1;
    CHECK(rc != 0);
    CHECK(strstr(ts_error_message(), "fingerprint") != NULL);
    ts_kvx_sender_destroy(tx);
    check_failed(rx, 6, TS_E_INVALID, "fingerprint");
    /* A valid header, then gone. */
    raw c;
    CHECK_OK(raw_open(&c, rx, 7, 10, 0, 4));
    raw_close(&c);
    check_failed(rx, 7, TS_E_UNAVAILABLE, "after 0 of");
    /* Wrong block size; wrong decode rank; heads this rank does not own; sizes that would wrap
     * around 32 bits: refused, and the decode side learns why. */
    struct {
        uint32_t block_size;
        uint16_t dst_rank;
        uint32_t head0, n_tokens, n_blocks;
        const char *words;
    } bad[] = {{8, 0, 0, 10, 2, "geometry"},
               {KVX_BLOCK, 1, 0, 10, 3, "decode rank 1"},
               {KVX_BLOCK, 0, 2, 10, 3, "not this rank's"},
               {KVX_BLOCK, 0, 0xffffffffu, 10, 3, "not this rank's"},
               {KVX_BLOCK, 0, 0, 0xfffffffeu, 0, "tokens in 0 blocks"}};
    for (int i = 0; i < (int)(sizeof bad / sizeof bad[0]); i++) {
        uint64_t id = 20 + (uint64_t)i;
        raw_init(&c, id, 10, 0, 4);
        c.h.block_size = bad[i].block_size;
        c.h.n_tokens = bad[i].n_tokens;
        c.h.n_blocks = bad[i].n_blocks;
        c.h.dst_rank = bad[i].dst_rank;
        c.h.kv_head0 = bad[i].head0;
        CHECK_OK(raw_connect(&c, rx));
        CHECK_EQ_INT(raw_status(&c), TS_E_INVALID);
        check_failed(rx, id, TS_E_INVALID, bad[i].words);
        raw_close(&c);
    }
    /* Not the protocol at all. */
    const char *ep = ts_kvx_receiver_endpoint(rx);
    uint8_t buf[TS_KVX_HEADER_BYTES];
    int fd;
    CHECK_OK(kvx_connect(ep, 5000, &fd));
    memset(buf, 'x', sizeof buf);
    CHECK_OK(kvx_write_all(fd, buf, sizeof buf, 5000, "receiver"));
    raw g = {.fd = fd};
    CHECK_EQ_INT(raw_status(&g), TS_E_FORMAT);
    raw_close(&g);
    check_clean(rx);
    ts_kvx_receiver_close(rx);
}

static void test_stalled_sender_times_out(void) {
    ts_kvx_receiver *rx = open_receiver(300, 0);
    raw c;
    CHECK_OK(raw_open(&c, rx, 30, 10, 0, 4));
    CHECK_OK(raw_frame(&c, 0, 0, -1, 0));
    check_failed(rx, 30, TS_E_TIMEOUT, "no data from prefill rank 0");
    CHECK_EQ_INT(raw_status(&c), TS_E_TIMEOUT);
    raw_close(&c);
    /* A connection that never sends its header is closed too. */
    int fd;
    CHECK_OK(kvx_connect(ts_kvx_receiver_endpoint(rx), 5000, &fd));
    raw h = {.fd = fd};
    CHECK_EQ_INT(raw_status(&h), TS_E_TIMEOUT);
    raw_close(&h);
    check_clean(rx);
    ts_kvx_receiver_close(rx);
}

/* The real sender, `layers` layers of a 10-token sequence. */
static ts_kvx_sender *send_some(ts_kvx_receiver *rx, uint64_t id, int layers) {
    const char *eps[1] = {ts_kvx_receiver_endpoint(rx)};
    ts_kvx_sender_options so = {.request_id = id,
                                .fingerprint = pre.fingerprint,
                                .n_tokens = 10,
                                .dst_endpoints = eps,
                                .dst_size = 1,
                                .timeout_ms = 10000};
    ts_kvx_sender *tx = NULL;
    int32_t table[3] = {4, 5, 6};
    CHECK_OK(ts_kvx_sender_open(pre.engine, &so, &tx));
    for (int l = 0; tx && l < layers; l++)
        CHECK_OK(ts_kvx_sender_send_layer(tx, l, table, 0, 3));
    return tx;
}

static void test_sender_closed_midway_frees_everything(void) {
    ts_kvx_receiver *rx = open_receiver(10000, 0);
    ts_kvx_sender *tx = send_some(rx, 40, 2);
    ts_sleep_ms(100);
    ts_kvx_sender_destroy(tx); /* no finish: an abort */
    check_failed(rx, 40, TS_E_UNAVAILABLE, "closed (");
    check_clean(rx);
    ts_kvx_receiver_close(rx);
}

static void test_killed_sender_process_frees_everything_and_the_receiver_goes_on(void) {
    ts_kvx_receiver *rx = open_receiver(10000, 0);
    int32_t free_before = ts_kv_pool_n_free(dec.pool);
    fflush(NULL);
    pid_t child = fork();
    if (child == 0) {
        ts_kvx_sender *tx = send_some(rx, 50, 3);
        ts_sleep_ms(200); /* let the I/O thread put the frames on the wire */
        (void)tx;
        raise(SIGKILL);
        _exit(3);
    }
    int status = 0;
    CHECK(waitpid(child, &status, 0) == child);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    check_failed(rx, 50, TS_E_UNAVAILABLE, "closed (");
    check_clean(rx);
    CHECK_EQ_INT(ts_kv_pool_n_free(dec.pool), free_before);
    /* The next transfer on the same receiver completes and installs. */
    ts_kvx_sender *tx = send_some(rx, 51, ts_engine_hparams(pre.engine)->n_layers);
    CHECK_OK(ts_kvx_sender_finish(tx));
    ts_kvx_sender_destroy(tx);
    CHECK_OK(ts_kvx_receiver_wait(rx, 51, 10000));
    int32_t ids[8], n = 0;
    CHECK_OK(ts_kvx_receiver_claim(rx, dec.engine, dec.pool, 51, ids, 8, &n));
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_INT(ts_kv_pool_n_free(dec.pool), free_before - 3);
    kvx_release(&dec, ids, n);
    check_clean(rx);
    ts_kvx_receiver_close(rx);
}

static void test_claim_without_room_leaves_the_pool_as_it_was(void) {
    ts_kvx_receiver *rx = open_receiver(10000, 0);
    ts_kvx_sender *tx = send_some(rx, 60, ts_engine_hparams(pre.engine)->n_layers);
    CHECK_OK(ts_kvx_sender_finish(tx));
    ts_kvx_sender_destroy(tx);
    CHECK_OK(ts_kvx_receiver_wait(rx, 60, 10000));
    int32_t *held = malloc((size_t)ts_kv_pool_n_free(dec.pool) * sizeof *held), n_held = 0;
    while (ts_kv_pool_n_free(dec.pool) > 2)
        CHECK_OK(ts_kv_pool_alloc(dec.pool, &held[n_held++]));
    int32_t ids[8], n = 0;
    CHECK_EQ_INT(ts_kvx_receiver_claim(rx, dec.engine, dec.pool, 60, ids, 8, &n), TS_E_EXHAUSTED);
    CHECK_EQ_INT(ts_kv_pool_n_free(dec.pool), 2);
    CHECK_EQ_INT(ts_kvx_receiver_claim(rx, dec.engine, dec.pool, 60, ids, 2, &n), TS_E_INVALID);
    kvx_release(&dec, held, n_held);
    free(held);
    int32_t free_before = ts_kv_pool_n_free(dec.pool);
    CHECK_OK(ts_kvx_receiver_claim(rx, dec.engine, dec.pool, 60, ids, 8, &n));
    CHECK_EQ_INT(ts_kv_pool_n_free(dec.pool), free_before - 3);
    kvx_release(&dec, ids, n);
    check_clean(rx);
    ts_kvx_receiver_close(rx);
}

static void test_drop_cancels_and_refuses_late_parts(void) {
    ts_kvx_receiver *rx = open_receiver(10000, 0);
    raw c;
    CHECK_OK(raw_open(&c, rx, 70, 10, 0, 4));
    CHECK_OK(raw_frame(&c, 0, 0, -1, 0));
    ts_kvx_receiver_stats st = {0};
    for (int i = 0; i < 1000 && st.n_receiving == 0; i++) { /* the header has arrived */
        ts_sleep_ms(10);
        ts_kvx_receiver_get_stats(rx, &st);
    }
    CHECK_OK(ts_kvx_receiver_drop(rx, 70));
    CHECK_EQ_INT(raw_status(&c), TS_E_CANCELLED);
    raw_close(&c);
    CHECK_OK(raw_open(&c, rx, 70, 10, 0, 4));
    CHECK_EQ_INT(raw_status(&c), TS_E_CANCELLED);
    raw_close(&c);
    check_failed(rx, 70, TS_E_CANCELLED, "cancelled");
    CHECK_EQ_INT(ts_kvx_receiver_drop(rx, 71), TS_E_NOT_FOUND);
    check_clean(rx);
    ts_kvx_receiver_close(rx);
}

/* Two prefill ranks feed one decode rank; the second breaks: the first is told, all freed. */
static void test_one_broken_part_fails_the_whole_transfer(void) {
    ts_kvx_receiver *rx = open_receiver(10000, 0);
    raw a, b;
    CHECK_OK(raw_open(&a, rx, 80, 10, 0, 2));
    CHECK_OK(raw_open(&b, rx, 80, 10, 2, 2));
    CHECK_OK(raw_all_frames(&a));
    CHECK_OK(raw_end(&a, a.h.n_layers * a.h.n_blocks));
    CHECK_OK(raw_frame(&b, 0, 0, -1, 0));
    raw_close(&b);
    check_failed(rx, 80, TS_E_UNAVAILABLE, "after 1 of");
    CHECK_EQ_INT(raw_status(&a), TS_E_UNAVAILABLE);
    raw_close(&a);
    /* Overlapping parts are refused too. */
    CHECK_OK(raw_open(&a, rx, 81, 10, 0, 3));
    CHECK_OK(raw_open(&b, rx, 81, 10, 2, 2));
    check_failed(rx, 81, TS_E_INVALID, "sent twice");
    raw_close(&a);
    raw_close(&b);
    /* Both parts whole: complete. */
    CHECK_OK(raw_open(&a, rx, 82, 10, 0, 2));
    CHECK_OK(raw_open(&b, rx, 82, 10, 2, 2));
    CHECK_OK(raw_all_frames(&b));
    CHECK_OK(raw_all_frames(&a));
    CHECK_OK(raw_end(&a, a.h.n_layers * a.h.n_blocks));
    CHECK_OK(raw_end(&b, b.h.n_layers * b.h.n_blocks));
    CHECK_OK(ts_kvx_receiver_wait(rx, 82, 10000));
    CHECK_EQ_INT(raw_status(&a), TS_OK);
    CHECK_EQ_INT(raw_status(&b), TS_OK);
    raw_close(&a);
    raw_close(&b);
    CHECK_OK(ts_kvx_receiver_drop(rx, 82));
    check_clean(rx);
    ts_kvx_receiver_close(rx);
}

static void test_full_staging_and_unreachable_receiver_fail_cleanly(void) {
    ts_kvx_receiver *rx = open_receiver(10000, 1024);
    ts_kvx_sender *tx = send_some(rx, 90, 1);
    int rc = tx ? ts_kvx_sender_finish(tx) : -1;
    CHECK_EQ_INT(rc, TS_E_EXHAUSTED);
    CHECK(strstr(ts_error_message(), "staging full") != NULL);
    ts_kvx_sender_destroy(tx);
    check_clean(rx);
    ts_kvx_receiver_close(rx);
    const char *eps[1] = {"127.0.0.1:1"};
    ts_kvx_sender_options so = {.request_id = 91,
                                .fingerprint = pre.fingerprint,
                                .n_tokens = 10,
                                .dst_endpoints = eps,
                                .dst_size = 1,
                                .timeout_ms = 2000};
    tx = NULL;
    CHECK_EQ_INT(ts_kvx_sender_open(pre.engine, &so, &tx), TS_E_UNAVAILABLE);
    CHECK(tx == NULL);
    eps[0] = "no-port";
    CHECK_EQ_INT(ts_kvx_sender_open(pre.engine, &so, &tx), TS_E_INVALID);
    so.dst_size = 3; /* 3 decode ranks cannot split 4 KV heads */
    const char *three[3] = {"127.0.0.1:1", "127.0.0.1:1", "127.0.0.1:1"};
    so.dst_endpoints = three;
    CHECK_EQ_INT(ts_kvx_sender_open(pre.engine, &so, &tx), TS_E_INVALID);
}

/* Random bytes after a valid header, or a valid frame header followed by a random payload
 * length: every transfer fails cleanly and the receiver holds nothing afterwards. */
static void test_random_garbage_fails_cleanly(void) {
    ts_kvx_receiver *rx = open_receiver(10000, 0);
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < 100; i++) {
        raw c;
        uint64_t id = 1000 + (uint64_t)i;
        CHECK_OK(raw_open(&c, rx, id, 10, 0, 4));
        if (i % 2) CHECK_OK(raw_frame(&c, 0, 0, -1, 0)); /* some valid progress first */
        uint8_t junk[2048];
        size_t n = 1 + (size_t)(seed % sizeof junk);
        for (size_t j = 0; j < n; j++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            junk[j] = (uint8_t)(seed >> 56);
        }
        kvx_write_all(c.fd, junk, n, 5000, "receiver"); /* may fail: the receiver hung up */
        raw_close(&c);
        int rc = ts_kvx_receiver_wait(rx, id, 10000);
        CHECK(rc == TS_E_FORMAT || rc == TS_E_UNAVAILABLE);
    }
    check_clean(rx);
    ts_kvx_receiver_close(rx);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN); /* the raw client writes to sockets the receiver may close */
    if (kvx_rank_open(&pre, NULL, TS_DTYPE_F16) || kvx_rank_open(&dec, NULL, TS_DTYPE_F16)) {
        fprintf(stderr, "opening the model: %s\n", ts_error_message());
        return 1;
    }
    RUN(test_flipped_payload_byte_is_a_checksum_failure);
    RUN(test_wrong_length_duplicate_and_missing_frames_fail);
    RUN(test_foreign_model_and_bad_headers_are_refused);
    RUN(test_stalled_sender_times_out);
    RUN(test_sender_closed_midway_frees_everything);
    RUN(test_killed_sender_process_frees_everything_and_the_receiver_goes_on);
    RUN(test_claim_without_room_leaves_the_pool_as_it_was);
    RUN(test_drop_cancels_and_refuses_late_parts);
    RUN(test_one_broken_part_fails_the_whole_transfer);
    RUN(test_full_staging_and_unreachable_receiver_fail_cleanly);
    RUN(test_random_garbage_fails_cleanly);
    kvx_rank_close(&pre);
    kvx_rank_close(&dec);
    return test_summary();
}
