/*
 * kvxfer_tp.c — KV transfer between tensor-parallel groups of different degrees, under mpirun.
 *
 *   mpirun -np A+B kvxfer_tp A B
 *
 * World ranks 0 .. A-1 form a prefill group (TP A), ranks A .. A+B-1 a decode group (TP B),
 * each with its own engine shard, exactly as tessera-node groups do. For every reference case the
 * prefill group prefills the prompt, and every prefill rank ships its KV heads per layer from the
 * engine's layer hook (kv_layout.h decides to which decode rank) over TCP; every decode rank
 * receives exactly the heads it owns, the decode leader takes blocks from its pool
 * (ts_kvx_receiver_claim) and broadcasts their ids, the followers install into the same ids, and
 * the decode group decodes greedily. The text must equal the reference, and no block or staging
 * byte may be left over. Prints "ok"/"FAIL" lines; exit 0 when everything passed on every rank.
 */
#include "common/log.h"
#include "kvxfer_util.h"

#include <stdbool.h>

static int failures;

#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            failures++;                                                                            \
            fprintf(stderr, "FAIL rank %d: ", ts_mpi_world_rank());                                \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, " (%s)\n", ts_error_message());                                        \
        }                                                                                          \
    } while (0)

typedef struct ship {
    ts_kvx_sender *tx;
    int rc;
} ship;

/* Every prefill rank, inside the step: the layer's KV of the prompt's blocks is final. */
static void ship_layer(void *user, const ts_batch *b, int32_t layer) {
    ship *s = user;
    if (!s->rc)
        s->rc = ts_kvx_sender_send_layer(s->tx, layer, b->block_ids + b->seqs[0].block0, 0,
                                         b->seqs[0].n_blocks);
}

static void prefill_case(kvx_rank *r, const kvx_case *c, uint64_t id, const char *const *eps,
                         int dst_size, int32_t *first) {
    bool leader = r->comm->rank == 0;
    ts_kvx_sender_options so = {.request_id = id, .fingerprint = r->fingerprint,
                                .n_tokens = c->n_ids, .dst_endpoints = eps,
                                .dst_size = dst_size, .timeout_ms = 60000};
    ship s = {0};
    int rc = ts_kvx_sender_open(r->engine, &so, &s.tx);
    EXPECT(rc == 0, "prefill: opening the sender of request %llu", (unsigned long long)id);
    ts_engine_set_layer_hook(r->engine, ship_layer, &s);
    if (leader) {
        int32_t table[KVX_CTX / KVX_BLOCK], n_blocks = 0;
        ts_sampling greedy = {.temperature = 0, .top_p = 1, .repetition_penalty = 1};
        EXPECT(kvx_grow(r, table, &n_blocks, c->n_ids) == 0, "prefill: blocks");
        ts_batch_seq seq;
        ts_batch b = kvx_batch(c->ids, c->n_ids, 0, table, n_blocks, &seq);
        EXPECT(ts_engine_step(r->engine, &b, &greedy, first, NULL) == 0, "prefill step");
        EXPECT(ts_engine_stop_group(r->engine) == 0, "prefill: stopping the followers");
        kvx_release(r, table, n_blocks);
    } else {
        EXPECT(ts_engine_follow(r->engine) == 0, "prefill: following the leader");
    }
    ts_engine_set_layer_hook(r->engine, NULL, NULL);
    EXPECT(s.rc == 0, "prefill: shipping layers");
    if (s.tx) EXPECT(ts_kvx_sender_finish(s.tx) == 0, "prefill: finishing the transfer");
    ts_kvx_sender_destroy(s.tx);
}

static void decode_case(kvx_rank *r, ts_kvx_receiver *rx, const kvx_case *c, uint64_t id,
                        int32_t first) {
    ts_comm *g = r->comm;
    bool leader = g->rank == 0;
    int32_t ok = ts_kvx_receiver_wait(rx, id, 60000) == 0;
    EXPECT(ok, "decode: receiving request %llu", (unsigned long long)id);
    int32_t all_ok[64];
    EXPECT(ts_comm_allgather(g, &ok, all_ok, sizeof ok) == 0, "decode: allgather");
    for (int i = 0; i < g->size; i++) ok &= all_ok[i];
    /* The leader takes the blocks and installs its share; the followers install theirs into
     * the same block ids. */
    int32_t table[1 + KVX_CTX / KVX_BLOCK] = {0}, *ids = table + 1;
    if (leader && ok)
        EXPECT(ts_kvx_receiver_claim(rx, r->engine, r->pool, id, ids, KVX_CTX / KVX_BLOCK,
                                     &table[0]) == 0, "decode: claim");
    EXPECT(ts_comm_broadcast(g, table, sizeof table, 0) == 0, "decode: block table");
    if (!leader && table[0] > 0)
        EXPECT(ts_kvx_receiver_install(rx, r->engine, id, ids, table[0]) == 0, "decode: install");
    if (table[0] == 0) { /* nothing to decode: the whole group skips the case */
        ts_kvx_receiver_drop(rx, id);
        return;
    }
    if (!leader) {
        EXPECT(ts_engine_follow(r->engine) == 0, "decode: following the leader");
        return;
    }
    int32_t out[KVX_CTX], n_blocks = table[0];
    int n = kvx_decode(r, ids, &n_blocks, c->n_ids, first, c->n_predict, out);
    EXPECT(n > 0, "decode: generating");
    EXPECT(ts_engine_stop_group(r->engine) == 0, "decode: stopping the followers");
    kvx_release(r, ids, n_blocks);
    ts_buf text = {0};
    ts_buf_append_str(&text, c->prompt);
    if (n > 0) kvx_text(r, out, n, &text);
    bool same = strcmp(text.data, c->expected) == 0;
    EXPECT(same, "request %llu: text\n  expected: %s\n  got:      %s", (unsigned long long)id,
           c->expected, text.data);
    if (same) printf("ok   request %llu: %s\n", (unsigned long long)id, c->prompt);
    ts_buf_free(&text);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: mpirun -np A+B kvxfer_tp A B\n");
        return 2;
    }
    ts_log_init("kvxfer_tp");
    int a = atoi(argv[1]), b = atoi(argv[2]);
    if (ts_mpi_init()) {
        fprintf(stderr, "MPI: %s\n", ts_error_message());
        return 1;
    }
    int w = ts_mpi_world_rank(), world_size = ts_mpi_world_size();
    if (a < 1 || b < 1 || a + b != world_size || b > 64) {
        fprintf(stderr, "kvxfer_tp %d %d needs exactly %d ranks, got %d\n", a, b, a + b,
                world_size);
        ts_mpi_finalize();
        return 2;
    }
    bool prefill = w < a;
    ts_comm_options co = {.timeout_ms = 120000};
    ts_comm *world = NULL, *group = NULL;
    int rc = ts_comm_create_mpi(0, w, &co, &world);
    if (!rc) rc = ts_comm_create_mpi(prefill ? 1 : 2, prefill ? w : w - a, &co, &group);
    kvx_rank r;
    if (!rc) rc = kvx_rank_open(&r, group, TS_DTYPE_F16);
    if (rc) {
        fprintf(stderr, "rank %d: %s\n", w, ts_error_message());
        return 1;
    }
    /* Every decode rank's endpoint, to every rank. */
    ts_kvx_receiver *rx = NULL;
    char mine[64] = "", all[64 * 128];
    if (!prefill) {
        ts_kvx_receiver_options ro = {.listen = "127.0.0.1:0", .fingerprint = r.fingerprint,
                                      .timeout_ms = 60000};
        EXPECT(ts_kvx_receiver_open(r.engine, &ro, &rx) == 0, "opening the receiver");
        if (rx) snprintf(mine, sizeof mine, "%s", ts_kvx_receiver_endpoint(rx));
    }
    EXPECT(ts_comm_allgather(world, mine, all, sizeof mine) == 0, "exchanging endpoints");
    const char *eps[64];
    for (int d = 0; d < b; d++) eps[d] = all + (size_t)(a + d) * sizeof mine;

    kvx_case cases[KVX_MAX_CASES];
    int n_cases = kvx_load_cases(cases, KVX_MAX_CASES);
    EXPECT(n_cases >= 8, "reading the reference cases");
    int32_t free_before = r.pool ? ts_kv_pool_n_free(r.pool) : 0;
    for (int i = 0; i < n_cases; i++) {
        uint64_t id = 1000 + (uint64_t)i;
        int32_t first = -1;
        if (prefill) prefill_case(&r, &cases[i], id, eps, b, &first);
        /* The first token goes from the prefill leader to the decode leader (in a cluster the
         * coordinator carries it). */
        EXPECT(ts_comm_broadcast(world, &first, sizeof first, 0) == 0, "first token");
        if (!prefill) decode_case(&r, rx, &cases[i], id, first);
    }
    if (r.pool) EXPECT(ts_kv_pool_n_free(r.pool) == free_before, "blocks left over");
    if (rx) {
        ts_kvx_receiver_stats st;
        ts_kvx_receiver_get_stats(rx, &st);
        EXPECT(st.staging_bytes == 0 && st.n_receiving == 0 && st.n_complete == 0,
               "staging left over");
        EXPECT(st.transfers_ok == n_cases, "%lld of %d transfers ok", (long long)st.transfers_ok,
               n_cases);
    }
    int32_t mine_failed = failures, failed[128];
    ts_comm_allgather(world, &mine_failed, failed, sizeof mine_failed);
    int total = 0;
    for (int i = 0; i < world_size; i++) total += failed[i];
    if (w == 0) printf("%s: layout %d -> %d, %d cases, %d failure(s)\n", total ? "FAIL" : "ok", a,
                       b, n_cases, total);
    ts_kvx_receiver_close(rx);
    kvx_rank_close(&r);
    ts_comm_destroy(world);
    ts_mpi_finalize();
    return total ? 1 : 0;
}
