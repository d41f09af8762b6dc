/*
 * kvxfer_nccl.c — the KV transfer over its NCCL transport, driven through the same interface as
 * the TCP tests (ts_kvx_sender / ts_kvx_receiver, kv_transfer.h): a prefill engine on cuda:0
 * sends every reference prompt's KV blocks device to device, layer by layer from the engine's
 * layer hook while the prompt runs, to a receiver whose engine is on cuda:1; the receiver
 * claims blocks from its pool (device-to-device install) and decodes greedily; the text must
 * equal the reference. Then: a wrong model fingerprint is refused at the header on both ends;
 * a frame whose payload checksum does not match what landed (a sender that lies, made from the
 * transport's own pieces) fails the transfer as a checksum mismatch; and afterwards both pools
 * hold all their blocks and the receiver holds no staging and no connection.
 *
 * Label gpu. One process, two GPUs: NCCL refuses two ranks of one communicator on one GPU
 * ("Duplicate GPU detected"), and each NCCL link is a 2-rank communicator between the prefill
 * and the decode rank's GPUs, so with fewer than 2 devices it prints "SKIP: ..." and exits 77.
 * (The device checksum alone runs on one GPU: test_kv_checksum_cuda.)
 */
#include "common/clock.h"
#include "kvxfer_util.h"
#include "kvx/kv_transfer_nccl.h"
#include "kvx/kv_transfer_net.h"
#include "test.h"
#include "test_cuda_util.h"

#include <cuda_runtime.h>
#include <unistd.h>

static kvx_rank pre, dec;
static ts_kvx_receiver *rx;
static kvx_case cases[KVX_MAX_CASES];
static int n_cases;

/* Prefills ids on `pre`, shipping every layer over NCCL as it is computed; returns the first
 * generated token or a negative error. */
static int prefill_and_ship(uint64_t id, const int32_t *ids, int32_t n_ids, uint64_t fingerprint) {
    const char *eps[1] = {ts_kvx_receiver_endpoint(rx)};
    ts_kvx_sender_options so = {.request_id = id,
                                .fingerprint = fingerprint,
                                .n_tokens = n_ids,
                                .dst_endpoints = eps,
                                .dst_size = 1,
                                .timeout_ms = 60000,
                                .transport = TS_KVX_NCCL};
    ts_kvx_sender *tx = NULL;
    int rc = ts_kvx_sender_open(pre.engine, &so, &tx);
    if (rc) return rc;
    int32_t table[KVX_CTX / KVX_BLOCK], n_blocks = 0, token = -1;
    rc = kvx_grow(&pre, table, &n_blocks, n_ids);
    kvx_ship s = {.tx = tx, .table = table, .n = n_blocks};
    ts_engine_set_layer_hook(pre.engine, kvx_ship_layer, &s);
    ts_sampling greedy = {.temperature = 0, .top_p = 1, .repetition_penalty = 1};
    ts_batch_seq seq;
    ts_batch b = kvx_batch(ids, n_ids, 0, table, n_blocks, &seq);
    if (!rc) rc = ts_engine_step(pre.engine, &b, &greedy, &token, NULL);
    ts_engine_set_layer_hook(pre.engine, NULL, NULL);
    if (!rc) rc = s.rc;
    /* The blocks go back at once: end() ordered the sends before any later kernel. */
    if (!rc) rc = ts_kvx_sender_end(tx);
    kvx_release(&pre, table, n_blocks);
    if (!rc) rc = ts_kvx_sender_wait(tx, -1);
    ts_kvx_sender_destroy(tx);
    return rc ? rc : token;
}

static void test_every_reference_case_decodes_after_a_nccl_transfer(void) {
    for (int i = 0; i < n_cases; i++) {
        const kvx_case *c = &cases[i];
        uint64_t id = 100 + (uint64_t)i;
        int first = prefill_and_ship(id, c->ids, c->n_ids, pre.fingerprint);
        CHECK(first >= 0);
        if (first < 0) {
            fprintf(stderr, "  request %llu: %s\n", (unsigned long long)id, ts_error_message());
            continue;
        }
        int32_t ids[KVX_CTX / KVX_BLOCK], n = 0;
        CHECK_OK(ts_kvx_receiver_wait(rx, id, 60000));
        CHECK_OK(ts_kvx_receiver_claim(rx, dec.engine, dec.pool, id, ids, KVX_CTX / KVX_BLOCK, &n));
        CHECK_EQ_INT(n, (c->n_ids + KVX_BLOCK - 1) / KVX_BLOCK);
        CHECK(kvx_decode_matches(&dec, c, id, ids, n, first));
    }
}

static void test_wrong_fingerprint_is_refused_on_both_ends(void) {
    int32_t free_before = ts_kv_pool_n_free(dec.pool);
    int rc = prefill_and_ship(900, cases[0].ids, cases[0].n_ids, pre.fingerprint ^ 1);
    CHECK_EQ_INT(rc, TS_E_INVALID);
    CHECK(strstr(ts_error_message(), "fingerprint") != NULL);
    CHECK_EQ_INT(ts_kvx_receiver_wait(rx, 900, 10000), TS_E_INVALID);
    CHECK_EQ_INT(ts_kv_pool_n_free(dec.pool), free_before);
}

/* A sender made of the transport's pieces that sends layer 0 block 0 for real but announces a
 * checksum one bit off: the receiver's device checksum of what landed must not match. */
static void test_payload_that_does_not_match_its_checksum_fails(void) {
    const kvx_case *c = &cases[0];
    int32_t table[KVX_CTX / KVX_BLOCK], n_blocks = 0, token = -1;
    CHECK_OK(kvx_grow(&pre, table, &n_blocks, c->n_ids));
    ts_sampling greedy = {.temperature = 0, .top_p = 1, .repetition_penalty = 1};
    ts_batch_seq seq;
    ts_batch b = kvx_batch(c->ids, c->n_ids, 0, table, n_blocks, &seq);
    CHECK_OK(ts_engine_step(pre.engine, &b, &greedy, &token, NULL));
    const ts_model_hparams *hp = ts_engine_hparams(pre.engine);
    ts_kvx_header h = {.request_id = 901,
                       .fingerprint = pre.fingerprint,
                       .n_layers = (uint32_t)hp->n_layers,
                       .n_tokens = (uint32_t)c->n_ids,
                       .block_size = KVX_BLOCK,
                       .n_blocks = (uint32_t)n_blocks,
                       .head_dim = (uint32_t)hp->head_dim,
                       .dtype = TS_DTYPE_F32,
                       .kv_head0 = 0,
                       .n_kv_heads = (uint32_t)hp->n_kv_heads,
                       .src_size = 1,
                       .dst_size = 1,
                       .transport = TS_KVX_NCCL};
    uint8_t buf[TS_KVX_HEADER_BYTES], id[KVX_LINK_ID_BYTES];
    ts_kvx_header_encode(&h, buf);
    int fd = -1, code = 0;
    char text[TS_KVX_MAX_MESSAGE + 1] = "";
    kvx_link *link = NULL;
    CHECK_OK(kvx_connect(ts_kvx_receiver_endpoint(rx), 10000, &fd));
    CHECK_OK(kvx_write_all(fd, buf, sizeof buf, 10000, "receiver"));
    CHECK_OK(kvx_link_message_read(fd, 30000, "receiver", id, sizeof id, &code, text, sizeof text));
    CHECK_EQ_INT(code, 0);
    CHECK_OK(kvx_link_connect(ts_engine_backend(pre.engine)->device_index, id, 1, 60000, &link));
    uint32_t sum = 0;
    if (link)
        CHECK_OK(
            kvx_link_send_blocks(link, pre.engine, 0, table, 1, 0, (int32_t)hp->n_kv_heads, &sum));
    /* The device's sum of the block, held to the host reference on the same bytes. */
    size_t part = ts_kvx_block_payload_bytes(&h) / 2;
    uint8_t *k = malloc(part), *v = malloc(part);
    CHECK_OK(ts_engine_kv_read(pre.engine, 0, table, 1, 0, (int32_t)hp->n_kv_heads, k, v));
    CHECK_EQ_INT(sum, ts_kvx_payload_sum(k, v, part));
    free(k);
    free(v);
    ts_kvx_frame f = {TS_KVX_FRAME_BLOCK, 0, 0, (uint32_t)(2 * part), sum ^ 1};
    uint8_t fh[TS_KVX_FRAME_BYTES];
    ts_kvx_frame_encode(&f, fh);
    CHECK_OK(kvx_write_all(fd, fh, sizeof fh, 10000, "receiver"));
    int rc = ts_kvx_receiver_wait(rx, 901, 60000);
    CHECK_EQ_INT(rc, TS_E_FORMAT);
    CHECK(strstr(ts_error_message(), "checksum mismatch") != NULL);
    int status = 0;
    CHECK_OK(kvx_status_read(fd, 10000, "receiver", &status, text, sizeof text));
    CHECK_EQ_INT(status, TS_E_FORMAT);
    kvx_link_close(link);
    close(fd);
    kvx_release(&pre, table, n_blocks);
}

int main(void) {
    tc_cuda_devices_or_skip(2, "a NCCL link is a 2-rank communicator between the prefill and "
                               "the decode GPU; NCCL refuses two ranks on one GPU");
    if (kvx_rank_open_on(&pre, NULL, TS_DTYPE_F32, "cuda:0") ||
        kvx_rank_open_on(&dec, NULL, TS_DTYPE_F32, "cuda:1")) {
        fprintf(stderr, "opening the engines: %s\n", ts_error_message());
        return 1;
    }
    n_cases = kvx_load_cases(cases, KVX_MAX_CASES);
    if (n_cases < 8) {
        fprintf(stderr, "reading the reference cases\n");
        return 1;
    }
    int32_t pre_free = ts_kv_pool_n_free(pre.pool), dec_free = ts_kv_pool_n_free(dec.pool);
    ts_kvx_receiver_options ro = {
        .listen = "127.0.0.1:0", .fingerprint = dec.fingerprint, .timeout_ms = 60000};
    if (ts_kvx_receiver_open(dec.engine, &ro, &rx)) {
        fprintf(stderr, "receiver: %s\n", ts_error_message());
        return 1;
    }
    RUN(test_every_reference_case_decodes_after_a_nccl_transfer);
    RUN(test_wrong_fingerprint_is_refused_on_both_ends);
    RUN(test_payload_that_does_not_match_its_checksum_fails);
    /* Pools whole, nothing staged, every connection closed. */
    CHECK_EQ_INT(ts_kv_pool_n_free(pre.pool), pre_free);
    CHECK_EQ_INT(ts_kv_pool_n_free(dec.pool), dec_free);
    ts_kvx_receiver_stats st;
    kvx_settled_stats(rx, &st);
    CHECK_EQ_INT(st.staging_bytes, 0);
    CHECK_EQ_INT(st.n_receiving + st.n_complete + st.n_connections, 0);
    CHECK_EQ_INT(st.transfers_ok, n_cases);
    ts_kvx_receiver_close(rx);
    kvx_rank_close(&pre);
    kvx_rank_close(&dec);
    return test_summary();
}
