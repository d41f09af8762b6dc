/*
 * kvxfer_nccl.c — the KV transfer's NCCL transport (node/kv_transfer_nccl.h) between two GPUs.
 *
 *   kvxfer_nccl --probe       exit 77 with "SKIP: ..." unless this machine has 2 CUDA devices
 *   mpirun -np 2 kvxfer_nccl  world rank 0 = prefill group (TP 1) on cuda:0,
 *                             world rank 1 = decode group (TP 1) on cuda:1
 *
 * NCCL cannot put two ranks of one communicator on the same GPU, hence two devices. For every
 * reference case of tests/data/greedy_stories260K_f32.jsonl the prefill rank runs the prompt,
 * sends its KV blocks device to device with ts_kvx_nccl_send, and passes the first token over
 * MPI; the decode rank receives into blocks claimed from its pool (ts_kvx_nccl_recv) and decodes
 * greedily; the text must equal the reference. Then a transfer with a wrong model fingerprint
 * must be refused on both sides with TS_E_INVALID and leave the decode pool untouched. Finally
 * both pools must hold all their blocks. Exit 0 when all of it held on both ranks.
 */
#include "common/log.h"
#include "kvxfer_util.h"
#include "node/kv_transfer_nccl.h"

#include <cuda_runtime.h>
#include <mpi.h>
#include <stdbool.h>

static const ts_kvx_nccl_peers PEERS = {.src_base = 0, .src_size = 1, .dst_base = 1, .dst_size = 1};

/* The skip line of the CUDA tests (tests/unit/test_cuda_util.h), plus the two-device need. */
static int probe(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n < 1) {
        printf("SKIP: no CUDA device (%s)\n",
               e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount found none");
        return 77;
    }
    if (n < 2) {
        printf("SKIP: needs 2 CUDA devices, found %d (NCCL does not put two ranks of one "
               "communicator on one GPU)\n",
               n);
        return 77;
    }
    printf("%d CUDA devices\n", n);
    return 0;
}

static void prefill(kvx_rank *r, ts_comm *nccl, const kvx_case *cases, int n_cases) {
    ts_sampling greedy = {.temperature = 0, .top_p = 1, .repetition_penalty = 1};
    for (int i = 0; i <= n_cases; i++) {
        bool refused = i == n_cases; /* the last one carries a wrong fingerprint */
        const kvx_case *c = &cases[refused ? 0 : i];
        int32_t table[KVX_CTX / KVX_BLOCK], n_blocks = 0, first = -1;
        KVX_EXPECT(kvx_grow(r, table, &n_blocks, c->n_ids) == 0, "prefill: blocks");
        ts_batch_seq seq;
        ts_batch b = kvx_batch(c->ids, c->n_ids, 0, table, n_blocks, &seq);
        KVX_EXPECT(ts_engine_step(r->engine, &b, &greedy, &first, NULL) == 0, "prefill step");
        MPI_Send(&first, 1, MPI_INT, 1, 0, MPI_COMM_WORLD);
        uint64_t fp = refused ? ~r->fingerprint : r->fingerprint;
        int rc = ts_kvx_nccl_send(nccl, r->engine, &PEERS, 1000 + (uint64_t)i, fp, c->n_ids, table,
                                  n_blocks);
        if (refused)
            KVX_EXPECT(rc == TS_E_INVALID, "prefill: the wrong fingerprint is refused (rc %d)", rc);
        else
            KVX_EXPECT(rc == 0, "prefill: send %d", i);
        kvx_release(r, table, n_blocks);
    }
}

static void decode(kvx_rank *r, ts_comm *nccl, const kvx_case *cases, int n_cases) {
    for (int i = 0; i <= n_cases; i++) {
        bool refused = i == n_cases;
        const kvx_case *c = &cases[refused ? 0 : i];
        uint64_t id = 1000 + (uint64_t)i;
        int32_t first = -1, ids[KVX_CTX / KVX_BLOCK], n_blocks = 0, n_tokens = 0;
        MPI_Recv(&first, 1, MPI_INT, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        int32_t free_before = ts_kv_pool_n_free(r->pool);
        int rc = ts_kvx_nccl_recv(nccl, r->engine, &PEERS, id, r->fingerprint, r->pool, ids,
                                  KVX_CTX / KVX_BLOCK, &n_blocks, &n_tokens);
        if (refused) {
            KVX_EXPECT(rc == TS_E_INVALID, "decode: the wrong fingerprint is refused (rc %d)", rc);
            KVX_EXPECT(ts_kv_pool_n_free(r->pool) == free_before, "decode: refused blocks kept");
            continue;
        }
        KVX_EXPECT(rc == 0 && n_tokens == c->n_ids, "decode: receive %d", i);
        if (rc) continue;
        KVX_EXPECT(kvx_decode_matches(r, c, id, ids, n_blocks, first), "decode: request %llu",
                   (unsigned long long)id);
    }
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--probe") == 0) return probe();
    if (argc != 1) {
        fprintf(stderr, "usage: kvxfer_nccl --probe | mpirun -np 2 kvxfer_nccl\n");
        return 2;
    }
    ts_log_init("kvxfer_nccl");
    if (ts_mpi_init()) {
        fprintf(stderr, "MPI: %s\n", ts_error_message());
        return 1;
    }
    int w = ts_mpi_world_rank();
    if (ts_mpi_world_size() != 2) {
        fprintf(stderr, "kvxfer_nccl needs exactly 2 ranks, got %d\n", ts_mpi_world_size());
        ts_mpi_finalize();
        return 2;
    }
    char device[16];
    snprintf(device, sizeof device, "cuda:%d", w);
    ts_comm_options co = {.timeout_ms = 120000};
    ts_comm *world = NULL, *nccl = NULL;
    kvx_rank r;
    int rc = kvx_rank_open_on(&r, NULL, TS_DTYPE_F32, device);
    if (!rc) rc = ts_comm_create_mpi(0, w, &co, &world);
    if (!rc) rc = ts_comm_create_nccl(world, r.be->device_stream, r.be->device_index, &co, &nccl);
    if (rc) {
        fprintf(stderr, "rank %d: %s\n", w, ts_error_message());
        return 1;
    }
    kvx_case cases[KVX_MAX_CASES];
    int n_cases = kvx_load_cases(cases, KVX_MAX_CASES);
    KVX_EXPECT(n_cases >= 8, "reading the reference cases");
    int32_t free_before = ts_kv_pool_n_free(r.pool);
    if (w == 0)
        prefill(&r, nccl, cases, n_cases);
    else
        decode(&r, nccl, cases, n_cases);
    KVX_EXPECT(ts_kv_pool_n_free(r.pool) == free_before, "blocks left over");
    int32_t mine = kvx_failures, all[2] = {0, 0};
    ts_comm_allgather(nccl, &mine, all, sizeof mine);
    int total = all[0] + all[1];
    if (w == 0)
        printf("%s: NCCL KV transfer, %d cases and a refused one, %d failure(s)\n",
               total ? "FAIL" : "ok", n_cases, total);
    ts_comm_destroy(nccl); /* and `world`, which it owns */
    kvx_rank_close(&r);
    ts_mpi_finalize();
    return total ? 1 : 0;
}
