/*
 * kvxfer_tp.c — KV transfer between tensor-parallel groups of different degrees, under mpirun.
 *
 *   mpirun -np A+B kvxfer_tp A B
 *
 * World ranks 0 .. A-1 form a prefill group (TP A), ranks A .. A+B-1 a decode group (TP B),
 * each rank with its own engine shard and a ts_kvx_group, as tessera-node groups are. The
 * followers of both groups only sit in ts_engine_follow (as ts_runtime_follow does); the two
 * leaders drive everything through group tasks, exactly as a node worker would:
 *   prefill leader: send_open, then send_arm (even cases: every rank ships each layer from the
 *     engine's layer hook during the step) or send_blocks (odd cases: after the step), then
 *     send_finish (or send_end and send_poll until decided, every third case); the first token
 *     goes to the decode leader (MPI here, the coordinator in a cluster);
 *   decode leader: recv_wait (or recv_poll until ready, odd cases), recv_claim (blocks from its
 *     pool, installed on every rank), then greedy decoding, whose text must equal the
 *     reference.
 * A last request is aborted by the prefill side midway: the decode group must report it failed
 * and hold nothing afterwards. Every rank finally checks that its receiver holds no staging and
 * the decode pool has all its blocks back. Exit 0 when all of it held on every rank.
 */
#include "common/clock.h"
#include "common/log.h"
#include "kvxfer_util.h"
#include "kvx/kv_transfer_group.h"

#include <mpi.h>
#include <stdbool.h>

enum { ABORTED_ID = 2000, ENDPOINTS = 2048 };

static void prefill_leader(kvx_rank *r, ts_kvx_group *g, const kvx_case *cases, int n_cases,
                           const char *endpoints, int decode_leader) {
    ts_sampling greedy = {.temperature = 0, .top_p = 1, .repetition_penalty = 1};
    for (int i = 0; i < n_cases; i++) {
        const kvx_case *c = &cases[i];
        uint64_t id = 1000 + (uint64_t)i;
        int32_t table[KVX_CTX / KVX_BLOCK], n_blocks = 0, first = -1;
        KVX_EXPECT(kvx_grow(r, table, &n_blocks, c->n_ids) == 0, "prefill: blocks");
        KVX_EXPECT(ts_kvx_group_send_open(g, id, c->n_ids, endpoints) == 0, "prefill: open %d", i);
        bool pipelined = i % 2 == 0;
        if (pipelined)
            KVX_EXPECT(ts_kvx_group_send_arm(g, id, 0, 0, n_blocks) == 0, "prefill: arm");
        ts_batch_seq seq;
        ts_batch b = kvx_batch(c->ids, c->n_ids, 0, table, n_blocks, &seq);
        KVX_EXPECT(ts_engine_step(r->engine, &b, &greedy, &first, NULL) == 0, "prefill step");
        if (!pipelined)
            KVX_EXPECT(ts_kvx_group_send_blocks(g, id, table, 0, n_blocks) == 0, "prefill: blocks");
        if (i % 3 == 1) { /* the engine loop's way: end, then poll between steps */
            KVX_EXPECT(ts_kvx_group_send_end(g, id) == 0, "prefill: end %d", i);
            int rc, polls = 0;
            while ((rc = ts_kvx_group_send_poll(g, id)) == TS_E_TIMEOUT && polls++ < 60000)
                ts_sleep_ms(1);
            KVX_EXPECT(rc == 0, "prefill: poll %d", i);
        } else {
            KVX_EXPECT(ts_kvx_group_send_finish(g, id) == 0, "prefill: finish %d", i);
        }
        kvx_release(r, table, n_blocks);
        MPI_Send(&first, 1, MPI_INT, decode_leader, 0, MPI_COMM_WORLD);
    }
    /* A transfer abandoned midway: one block of every layer, then abort. */
    int32_t table[KVX_CTX / KVX_BLOCK], n_blocks = 0;
    KVX_EXPECT(kvx_grow(r, table, &n_blocks, 3 * KVX_BLOCK) == 0, "prefill: blocks");
    KVX_EXPECT(ts_kvx_group_send_open(g, ABORTED_ID, 3 * KVX_BLOCK, endpoints) == 0, "open");
    KVX_EXPECT(ts_kvx_group_send_blocks(g, ABORTED_ID, table, 0, 1) == 0, "prefill: partial");
    KVX_EXPECT(ts_kvx_group_send_abort(g, ABORTED_ID) == 0, "prefill: abort");
    kvx_release(r, table, n_blocks);
    /* The abort finishes nothing on the decode side: it must notice on its own. */
    KVX_EXPECT(ts_kvx_group_send_finish(g, ABORTED_ID) == TS_E_NOT_FOUND, "finish after abort");
}

static void decode_leader(kvx_rank *r, ts_kvx_group *g, const kvx_case *cases, int n_cases) {
    for (int i = 0; i < n_cases; i++) {
        const kvx_case *c = &cases[i];
        uint64_t id = 1000 + (uint64_t)i;
        int32_t first = -1, ids[KVX_CTX / KVX_BLOCK], n_blocks = 0, n_tokens = 0;
        MPI_Recv(&first, 1, MPI_INT, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        int rc, polls = 0;
        if (i % 2) { /* the engine loop's way: poll between steps */
            while ((rc = ts_kvx_group_recv_poll(g, id)) == TS_E_TIMEOUT && polls++ < 60000)
                ts_sleep_ms(1);
        } else {
            rc = ts_kvx_group_recv_wait(g, id, 60000);
        }
        KVX_EXPECT(rc == 0, "decode: waiting for request %llu", (unsigned long long)id);
        if (!rc)
            rc = ts_kvx_group_recv_claim(g, r->pool, id, ids, KVX_CTX / KVX_BLOCK, &n_blocks,
                                         &n_tokens);
        KVX_EXPECT(rc == 0 && n_tokens == c->n_ids, "decode: claim");
        if (rc) {
            ts_kvx_group_recv_drop(g, id);
            continue;
        }
        KVX_EXPECT(kvx_decode_matches(r, c, id, ids, n_blocks, first), "decode: request %llu",
                   (unsigned long long)id);
    }
    int rc = ts_kvx_group_recv_wait(g, ABORTED_ID, 60000);
    KVX_EXPECT(rc == TS_E_UNAVAILABLE, "decode: the aborted transfer fails (rc %d)", rc);
    KVX_EXPECT(ts_kvx_group_recv_drop(g, ABORTED_ID) == 0, "decode: drop");
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
    if (a < 1 || b < 1 || a + b != world_size || world_size > 128) {
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
    ts_kvx_group *g = NULL;
    ts_kvx_group_options go = {.receive = !prefill,
                               .timeout_ms = 60000,
                               .receiver = {.listen = "127.0.0.1:0", .timeout_ms = 60000}};
    if (!rc) rc = ts_kvx_group_create(r.engine, &r.model, &go, &g);
    if (rc) {
        fprintf(stderr, "rank %d: %s\n", w, ts_error_message());
        return 1;
    }
    /* The decode group's endpoint list (what its leader would register) to every rank. */
    char mine[ENDPOINTS] = "";
    char *all = calloc((size_t)world_size, ENDPOINTS);
    if (!prefill && r.comm->rank == 0) snprintf(mine, sizeof mine, "%s", ts_kvx_group_endpoints(g));
    KVX_EXPECT(ts_comm_allgather(world, mine, all, ENDPOINTS) == 0, "exchanging endpoints");
    const char *endpoints = all + (size_t)a * ENDPOINTS;
    if (w == 0) printf("decode endpoints: %s\n", endpoints);

    kvx_case cases[KVX_MAX_CASES];
    int n_cases = kvx_load_cases(cases, KVX_MAX_CASES);
    KVX_EXPECT(n_cases >= 8, "reading the reference cases");
    int32_t free_before = r.pool ? ts_kv_pool_n_free(r.pool) : 0;
    if (r.comm->rank != 0) {
        KVX_EXPECT(ts_engine_follow(r.engine) == 0, "following the leader");
    } else {
        if (prefill)
            prefill_leader(&r, g, cases, n_cases, endpoints, a);
        else
            decode_leader(&r, g, cases, n_cases);
        KVX_EXPECT(ts_engine_stop_group(r.engine) == 0, "stopping the followers");
    }
    if (r.pool) KVX_EXPECT(ts_kv_pool_n_free(r.pool) == free_before, "blocks left over");
    ts_kvx_receiver *rx = ts_kvx_group_receiver(g);
    if (rx) {
        ts_kvx_receiver_stats st;
        ts_kvx_receiver_get_stats(rx, &st);
        KVX_EXPECT(st.staging_bytes == 0 && st.n_receiving == 0 && st.n_complete == 0,
                   "staging left over");
        KVX_EXPECT(st.transfers_ok == n_cases && st.transfers_failed == 1,
                   "%lld transfers ok and %lld failed, expected %d and 1",
                   (long long)st.transfers_ok, (long long)st.transfers_failed, n_cases);
    }
    int32_t mine_failed = kvx_failures, failed[128];
    ts_comm_allgather(world, &mine_failed, failed, sizeof mine_failed);
    int total = 0;
    for (int i = 0; i < world_size; i++)
        total += failed[i];
    if (w == 0)
        printf("%s: layout %d -> %d, %d cases and an aborted transfer, %d failure(s)\n",
               total ? "FAIL" : "ok", a, b, n_cases, total);
    free(all);
    ts_kvx_group_destroy(g);
    kvx_rank_close(&r);
    ts_comm_destroy(world);
    ts_mpi_finalize();
    return total ? 1 : 0;
}
