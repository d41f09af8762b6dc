/*
 * bench_kvxfer.c — what a KV transfer costs a prefill, over TCP on loopback.
 *
 *   tessera-bench-kvxfer [-m MODEL] [--prompt N] [--reps R] [--threads T] [--kv-type f16|f32]
 *
 * Two engines in one process (a prefill rank and a decode rank, each a group of one with its
 * own kernel threads) and a receiver on 127.0.0.1. For a prompt of N random token ids, each
 * repetition measures (medians printed):
 *   prefill      the prompt's prefill step (the baseline);
 *   pipelined    the transfer shipped from the layer hook during the step: the time spent in
 *                the hook (copying each layer out and queueing it) plus the tail from the end
 *                of the step until every receiver accepted — what the prefill node waits for;
 *   after        the transfer started after the step: copy, send and acceptance, all exposed;
 *   install      claim on the decode side: blocks from its pool and the copy into its cache.
 * The transfer costs are measured directly (not as a difference of two prefills), so they hold
 * even when other work on the machine makes the prefill time noisy.
 */
#include "common/clock.h"
#include "common/error.h"
#include "common/flags.h"
#include "kernels/kernels.h"
#include "model/gguf.h"
#include "model/model.h"
#include "node/comm.h"
#include "node/engine.h"
#include "node/kv_pool.h"
#include "kvx/kv_transfer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct side {
    ts_backend *be;
    ts_comm *comm;
    ts_engine *engine;
    ts_kv_pool *pool;
} side;

static int open_side(const ts_model *m, int threads, ts_dtype kv_type, int ctx, side *s) {
    ts_backend_options bo = {.device = "cpu", .n_threads = threads};
    int rc = ts_backend_create(&bo, &s->be);
    if (!rc) rc = ts_comm_create_self(&s->comm);
    ts_engine_options eo = {.kv_type = kv_type,
                            .max_ctx = ctx,
                            .max_batch_tokens = ctx,
                            .kv_memory = (size_t)512 << 20};
    if (!rc) rc = ts_engine_create(m, s->be, s->comm, &eo, &s->engine);
    if (!rc)
        rc = ts_kv_pool_create(ts_engine_n_blocks(s->engine),
                               ts_engine_options_get(s->engine)->block_size, &s->pool);
    return rc;
}

static void close_side(side *s) {
    ts_kv_pool_destroy(s->pool);
    ts_engine_destroy(s->engine);
    ts_comm_destroy(s->comm);
    ts_backend_destroy(s->be);
}

typedef struct ship {
    ts_kvx_sender *tx;
    const int32_t *table;
    int32_t n_blocks;
    int rc;
    int64_t hook_ns; /* time spent inside the hook */
} ship;

static void ship_layer(void *user, const ts_batch *b, int32_t layer) {
    ship *s = user;
    (void)b;
    int64_t t0 = ts_now_ns();
    if (!s->rc) s->rc = ts_kvx_sender_send_layer(s->tx, layer, s->table, 0, s->n_blocks);
    s->hook_ns += ts_now_ns() - t0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

enum { MODE_PREFILL, MODE_PIPELINED, MODE_AFTER, MODE_INSTALL, N_MODES };

int main(int argc, char **argv) {
    const char *model_path = NULL, *kv_type_name = "f16";
    int prompt = 1000, reps = 5, threads = 1;
    ts_flag flags[] = {
        {"model", 'm', TS_FLAG_STRING, &model_path, "GGUF model (default: the bundled one)", 0, 0},
        {"prompt", 0, TS_FLAG_INT, &prompt, "prompt tokens", 1, 1 << 20},
        {"reps", 0, TS_FLAG_INT, &reps, "repetitions (medians are printed)", 1, 1000},
        {"threads", 0, TS_FLAG_INT, &threads, "kernel threads of each engine", 1, 1024},
        {"kv-type", 0, TS_FLAG_STRING, &kv_type_name, "KV cache type: f16 or f32", 0, 0},
    };
    const char *usage = "tessera-bench-kvxfer [flags]";
    ts_flags_result fr = {0};
    int rc =
        ts_flags_parse(usage, flags, (int)(sizeof flags / sizeof flags[0]), argc, argv, 1, &fr);
    if (rc == TS_FLAGS_HELP) return 0;
    if (rc) {
        fprintf(stderr, "%s\n", ts_error_message());
        return 2;
    }
    ts_dtype kv_type = strcmp(kv_type_name, "f32") == 0 ? TS_DTYPE_F32 : TS_DTYPE_F16;
    if (!model_path) model_path = TS_SOURCE_DIR "/models/stories260K/stories260K-f32.gguf";
    ts_gguf *g = NULL;
    ts_model m = {0};
    side pre = {0}, dec = {0};
    ts_kvx_receiver *rx = NULL;
    rc = ts_gguf_open(model_path, &g);
    if (!rc) rc = ts_model_load(g, &m);
    if (!rc && prompt > m.hp.n_ctx_train)
        rc = ts_error_set(TS_E_INVALID, "--prompt %d exceeds the model's context %d", prompt,
                          m.hp.n_ctx_train);
    if (!rc) rc = open_side(&m, threads, kv_type, m.hp.n_ctx_train, &pre);
    if (!rc) rc = open_side(&m, threads, kv_type, m.hp.n_ctx_train, &dec);
    uint64_t fingerprint =
        rc ? 0 : ts_kvx_fingerprint(&m, kv_type, ts_engine_options_get(dec.engine)->block_size);
    ts_kvx_receiver_options ro = {.listen = "127.0.0.1:0", .fingerprint = fingerprint};
    if (!rc) rc = ts_kvx_receiver_open(dec.engine, &ro, &rx);
    if (rc) {
        fprintf(stderr, "tessera-bench-kvxfer: %s\n", ts_error_message());
        return 1;
    }
    int32_t block_size = ts_engine_options_get(pre.engine)->block_size;
    int32_t n_blocks = (prompt + block_size - 1) / block_size;
    int32_t *tokens = malloc((size_t)prompt * sizeof *tokens);
    int32_t *table = malloc((size_t)n_blocks * sizeof *table);
    int32_t *ids = malloc((size_t)n_blocks * sizeof *ids);
    double *t[N_MODES];
    for (int k = 0; k < N_MODES; k++)
        t[k] = calloc((size_t)reps, sizeof(double));
    for (int i = 0; i < prompt; i++)
        tokens[i] = 1 + (int32_t)((i * 7919u) % (unsigned)(m.hp.n_vocab - 1));
    for (int32_t i = 0; i < n_blocks; i++)
        ts_kv_pool_alloc(pre.pool, &table[i]);
    ts_sampling greedy = {.temperature = 0, .top_p = 1, .repetition_penalty = 1};
    ts_batch_seq seq = {.row0 = 0,
                        .n_rows = prompt,
                        .pos0 = 0,
                        .block0 = 0,
                        .n_blocks = n_blocks,
                        .want_logits = true};
    ts_batch batch = {.n_tokens = prompt,
                      .n_seqs = 1,
                      .tokens = tokens,
                      .seqs = &seq,
                      .block_ids = table,
                      .n_block_ids = n_blocks,
                      .block_size = block_size};
    const char *eps[1] = {ts_kvx_receiver_endpoint(rx)};
    int64_t kv_bytes = 0;
    for (int r = 0; !rc && r < reps + 1; r++) { /* repetition 0 warms up */
        double times[N_MODES] = {0};
        int32_t token;
        int64_t t0 = ts_now_ns();
        rc = ts_engine_step(pre.engine, &batch, &greedy, &token, NULL);
        times[MODE_PREFILL] = ts_ns_to_ms(ts_now_ns() - t0);
        for (int mode = MODE_PIPELINED; !rc && mode <= MODE_AFTER; mode++) {
            uint64_t id = (uint64_t)(r * 2 + mode);
            ts_kvx_sender_options so = {.request_id = id,
                                        .fingerprint = fingerprint,
                                        .n_tokens = prompt,
                                        .dst_endpoints = eps,
                                        .dst_size = 1};
            ship s = {.table = table, .n_blocks = n_blocks};
            rc = ts_kvx_sender_open(pre.engine, &so, &s.tx);
            if (!rc && mode == MODE_PIPELINED) ts_engine_set_layer_hook(pre.engine, ship_layer, &s);
            if (!rc) rc = ts_engine_step(pre.engine, &batch, &greedy, &token, NULL);
            ts_engine_set_layer_hook(pre.engine, NULL, NULL);
            t0 = ts_now_ns(); /* the step is over: from here on everything is exposed */
            for (int32_t l = 0; !rc && mode == MODE_AFTER && l < m.hp.n_layers; l++)
                rc = ts_kvx_sender_send_layer(s.tx, l, table, 0, n_blocks);
            if (!rc) rc = s.rc;
            if (!rc) rc = ts_kvx_sender_finish(s.tx);
            times[mode] = ts_ns_to_ms(ts_now_ns() - t0 + s.hook_ns);
            kv_bytes = ts_kvx_sender_bytes(s.tx);
            ts_kvx_sender_destroy(s.tx);
            int32_t n = 0;
            if (!rc) rc = ts_kvx_receiver_wait(rx, id, 60000);
            t0 = ts_now_ns();
            if (!rc) rc = ts_kvx_receiver_claim(rx, dec.engine, dec.pool, id, ids, n_blocks, &n);
            times[MODE_INSTALL] = ts_ns_to_ms(ts_now_ns() - t0);
            for (int32_t i = 0; i < n; i++)
                ts_kv_pool_release(dec.pool, ids[i]);
        }
        if (r > 0)
            for (int k = 0; k < N_MODES; k++)
                t[k][r - 1] = times[k];
    }
    if (rc) {
        fprintf(stderr, "tessera-bench-kvxfer: %s\n", ts_error_message());
        return 1;
    }
    double pf = median(t[MODE_PREFILL], reps), pipe = median(t[MODE_PIPELINED], reps);
    double after = median(t[MODE_AFTER], reps), inst = median(t[MODE_INSTALL], reps);
    printf("model %s, %d prompt tokens, %d blocks of %d, KV %s, %d thread(s) per engine, "
           "%d repetitions (medians)\n",
           model_path, prompt, n_blocks, block_size, kv_type_name, threads, reps);
    printf("KV shipped per request: %.2f MiB (frames included)\n", (double)kv_bytes / 1048576.0);
    printf("prefill step:                        %9.2f ms\n", pf);
    printf("transfer exposed, pipelined:         %9.2f ms  (%.1f%% of the prefill)\n", pipe,
           100.0 * pipe / pf);
    printf("transfer exposed, after the step:    %9.2f ms  (%.1f%% of the prefill, %.2f GB/s)\n",
           after, 100.0 * after / pf, (double)kv_bytes / (after * 1e6));
    printf("install on the decode side:          %9.2f ms\n", inst);
    for (int k = 0; k < N_MODES; k++)
        free(t[k]);
    free(tokens);
    free(table);
    free(ids);
    ts_kvx_receiver_close(rx);
    close_side(&pre);
    close_side(&dec);
    ts_model_free(&m);
    ts_gguf_close(g);
    return 0;
}
