/*
 * test_kv_transfer_transport.c — the KV transfer's transport choice, everything of it a machine
 * without a GPU can check: the transport field of the header (round trip, unknown values and
 * the old version refused), the transport names, the NCCL payload checksum's host reference
 * (the definition a CUDA kernel is held to by test_kv_checksum_cuda), and the refusals of NCCL
 * where it cannot run: a sender, a group and a receiver on a CPU engine, each with a clear
 * message and nothing left behind. The NCCL transfer itself is tests/unit/kvxfer_nccl.c (gpu).
 */
#include "common/clock.h"
#include "kvxfer_util.h"
#include "kvx/kv_transfer_group.h"
#include "kvx/kv_transfer_net.h"
#include "test.h"

#include <unistd.h>

static kvx_rank cpu;

static ts_kvx_header sample_header(uint16_t transport) {
    const ts_model_hparams *hp = ts_engine_hparams(cpu.engine);
    ts_kvx_header h;
    memset(&h, 0, sizeof h);
    h.request_id = 77;
    h.fingerprint = cpu.fingerprint;
    h.n_layers = (uint32_t)hp->n_layers;
    h.n_tokens = 10;
    h.block_size = KVX_BLOCK;
    h.n_blocks = 3;
    h.head_dim = (uint32_t)hp->head_dim;
    h.dtype = TS_DTYPE_F16;
    h.kv_head0 = 0;
    h.n_kv_heads = (uint32_t)hp->n_kv_heads;
    h.src_size = 1;
    h.dst_size = 1;
    h.transport = transport;
    return h;
}

static void put_le(uint8_t *p, uint32_t v, int bytes) {
    for (int i = 0; i < bytes; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Re-seals a header whose bytes a test changed (the CRC32C of the first 68 bytes). */
static void reseal(uint8_t *buf) {
    put_le(buf + 68, ts_crc32c(0, buf, 68), 4);
}

static void test_header_carries_the_transport_and_refuses_unknown_ones(void) {
    for (uint16_t t = TS_KVX_TCP; t <= TS_KVX_NCCL; t++) {
        ts_kvx_header h = sample_header(t), back;
        uint8_t buf[TS_KVX_HEADER_BYTES];
        ts_kvx_header_encode(&h, buf);
        CHECK_OK(ts_kvx_header_decode(buf, &back));
        CHECK_EQ_INT(back.transport, t);
        CHECK(back.request_id == h.request_id && back.fingerprint == h.fingerprint);
        CHECK_EQ_INT(back.n_tokens, h.n_tokens);
        CHECK_EQ_INT(back.n_kv_heads, h.n_kv_heads);
        CHECK_EQ_INT(back.dst_size, h.dst_size);
    }
    ts_kvx_header h = sample_header(TS_KVX_NCCL), back;
    uint8_t buf[TS_KVX_HEADER_BYTES];
    ts_kvx_header_encode(&h, buf);
    put_le(buf + 64, 7, 2); /* a transport this build does not know */
    reseal(buf);
    CHECK_EQ_INT(ts_kvx_header_decode(buf, &back), TS_E_FORMAT);
    CHECK(strstr(ts_error_message(), "unknown transport 7") != NULL);
    ts_kvx_header_encode(&h, buf);
    put_le(buf + 4, 1, 2); /* version 1 had no transport field */
    reseal(buf);
    CHECK_EQ_INT(ts_kvx_header_decode(buf, &back), TS_E_FORMAT);
    CHECK(strstr(ts_error_message(), "version 1") != NULL);
}

static void test_transport_names_parse_both_ways(void) {
    ts_kvx_transport t = TS_KVX_NCCL;
    CHECK_OK(ts_kvx_transport_parse("tcp", &t));
    CHECK_EQ_INT(t, TS_KVX_TCP);
    CHECK_OK(ts_kvx_transport_parse("NCCL", &t));
    CHECK_EQ_INT(t, TS_KVX_NCCL);
    CHECK_EQ_STR(ts_kvx_transport_name(TS_KVX_TCP), "tcp");
    CHECK_EQ_STR(ts_kvx_transport_name(TS_KVX_NCCL), "nccl");
    CHECK_EQ_INT(ts_kvx_transport_parse("rdma", &t), TS_E_INVALID);
    CHECK(strstr(ts_error_message(), "'rdma'") != NULL);
    CHECK_EQ_INT(ts_kvx_transport_parse(NULL, &t), TS_E_INVALID);
}

/* The definition written out a second way: bytes to words by hand, then the sum of terms. */
static uint32_t sum_by_definition(const uint8_t *k, const uint8_t *v, size_t part) {
    uint64_t words = (part + 3) / 4, sum = 0;
    for (uint64_t i = 0; i < 2 * words; i++) {
        const uint8_t *p = i < words ? k : v;
        size_t at = (size_t)(i < words ? i : i - words) * 4;
        uint8_t w[4] = {0, 0, 0, 0};
        memcpy(w, p + at, part - at < 4 ? part - at : 4);
        sum += ts_kvx_sum_term(i, (uint32_t)w[0] | (uint32_t)w[1] << 8 | (uint32_t)w[2] << 16 |
                                      (uint32_t)w[3] << 24);
    }
    return (uint32_t)sum ^ (uint32_t)(sum >> 32);
}

static void test_payload_checksum_reference_catches_flips_swaps_and_moves(void) {
    enum { MAX = 1027 };
    static uint8_t k[MAX], v[MAX];
    uint32_t seed = 12345;
    for (int i = 0; i < MAX; i++) {
        seed = seed * 1664525u + 1013904223u;
        k[i] = (uint8_t)(seed >> 24);
        seed = seed * 1664525u + 1013904223u;
        v[i] = (uint8_t)(seed >> 24);
    }
    const size_t sizes[] = {0, 1, 3, 4, 5, 64, 1000, 1027};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        CHECK_EQ_INT(ts_kvx_payload_sum(k, v, sizes[s]), sum_by_definition(k, v, sizes[s]));
    const size_t part = 1000;
    uint32_t base = ts_kvx_payload_sum(k, v, part);
    int missed = 0;
    for (size_t i = 0; i < part; i += 7)
        for (int bit = 0; bit < 8; bit += 3) {
            k[i] ^= (uint8_t)(1u << bit);
            missed += ts_kvx_payload_sum(k, v, part) == base;
            k[i] ^= (uint8_t)(1u << bit);
            v[i] ^= (uint8_t)(1u << bit);
            missed += ts_kvx_payload_sum(k, v, part) == base;
            v[i] ^= (uint8_t)(1u << bit);
        }
    CHECK_EQ_INT(missed, 0);
    /* Two different words swapped, K and V swapped, a word moved into a zero tail. */
    uint8_t word[4];
    memcpy(word, k + 8, 4);
    memcpy(k + 8, k + 400, 4);
    memcpy(k + 400, word, 4);
    CHECK(ts_kvx_payload_sum(k, v, part) != base);
    memcpy(k + 400, k + 8, 4);
    memcpy(k + 8, word, 4);
    CHECK_EQ_INT(ts_kvx_payload_sum(k, v, part), base);
    CHECK(ts_kvx_payload_sum(v, k, part) != base);
    static uint8_t zk[64], zv[64];
    uint32_t zeros = ts_kvx_payload_sum(zk, zv, 64);
    zk[0] = 1;
    uint32_t first = ts_kvx_payload_sum(zk, zv, 64);
    zk[0] = 0;
    zk[60] = 1;
    CHECK(first != zeros && ts_kvx_payload_sum(zk, zv, 64) != first);
}

static void test_nccl_is_refused_where_it_cannot_run(void) {
#if defined(TESSERA_HAVE_CUDA)
    CHECK_OK(ts_kvx_nccl_supported(NULL)); /* the build can */
#else
    CHECK_EQ_INT(ts_kvx_nccl_supported(NULL), TS_E_UNSUPPORTED);
    CHECK(strstr(ts_error_message(), "CUDA") != NULL);
#endif
    CHECK_EQ_INT(ts_kvx_nccl_supported(cpu.engine), TS_E_UNSUPPORTED);
    CHECK(strstr(ts_error_message(), "CUDA") != NULL);

    ts_kvx_receiver_options ro = {
        .listen = "127.0.0.1:0", .fingerprint = cpu.fingerprint, .timeout_ms = 10000};
    ts_kvx_receiver *rx = NULL;
    CHECK_OK(ts_kvx_receiver_open(cpu.engine, &ro, &rx));
    if (!rx) return;
    /* A sender on the CPU cannot send over NCCL: refused before it connects. */
    const char *eps[1] = {ts_kvx_receiver_endpoint(rx)};
    ts_kvx_sender_options so = {.request_id = 1,
                                .fingerprint = cpu.fingerprint,
                                .n_tokens = 10,
                                .dst_endpoints = eps,
                                .dst_size = 1,
                                .timeout_ms = 10000,
                                .transport = TS_KVX_NCCL};
    ts_kvx_sender *tx = NULL;
    CHECK_EQ_INT(ts_kvx_sender_open(cpu.engine, &so, &tx), TS_E_UNSUPPORTED);
    CHECK(tx == NULL);
    so.transport = (ts_kvx_transport)5;
    CHECK_EQ_INT(ts_kvx_sender_open(cpu.engine, &so, &tx), TS_E_INVALID);
    /* Neither does a group. */
    ts_kvx_group_options go = {.receive = false, .transport = TS_KVX_NCCL};
    ts_kvx_group *g = NULL;
    CHECK_EQ_INT(ts_kvx_group_create(cpu.engine, &cpu.model, &go, &g), TS_E_UNSUPPORTED);
    CHECK(g == NULL);
    /* A receiver on the CPU answers a NCCL header with TS_E_UNSUPPORTED and its reason, where a
     * NCCL receiver would send its link message, and its owner learns the same. */
    ts_kvx_header h = sample_header(TS_KVX_NCCL);
    h.request_id = 2;
    uint8_t buf[TS_KVX_HEADER_BYTES], id[128];
    ts_kvx_header_encode(&h, buf);
    int fd = -1, code = 0;
    char text[TS_KVX_MAX_MESSAGE + 1] = "";
    CHECK_OK(kvx_connect(ts_kvx_receiver_endpoint(rx), 5000, &fd));
    CHECK_OK(kvx_write_all(fd, buf, sizeof buf, 5000, "receiver"));
    CHECK_OK(kvx_link_message_read(fd, 10000, "receiver", id, sizeof id, &code, text, sizeof text));
    CHECK_EQ_INT(code, TS_E_UNSUPPORTED);
    CHECK(strstr(text, "CUDA") != NULL);
    close(fd);
    CHECK_EQ_INT(ts_kvx_receiver_wait(rx, 2, 10000), TS_E_UNSUPPORTED);
    /* Nothing held afterwards. */
    ts_kvx_receiver_stats st;
    kvx_settled_stats(rx, &st);
    CHECK_EQ_INT(st.staging_bytes, 0);
    CHECK_EQ_INT(st.n_receiving + st.n_complete + st.n_connections, 0);
    ts_kvx_receiver_close(rx);
}

int main(void) {
    if (kvx_rank_open(&cpu, NULL, TS_DTYPE_F16)) {
        fprintf(stderr, "opening the bundled model: %s\n", ts_error_message());
        return 1;
    }
    RUN(test_header_carries_the_transport_and_refuses_unknown_ones);
    RUN(test_transport_names_parse_both_ways);
    RUN(test_payload_checksum_reference_catches_flips_swaps_and_moves);
    RUN(test_nccl_is_refused_where_it_cannot_run);
    kvx_rank_close(&cpu);
    return test_summary();
}
