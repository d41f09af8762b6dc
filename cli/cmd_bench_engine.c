/*
 * cmd_bench_engine.c — `tessera bench-engine`: how close the engine runs to the machine's limits.
 *
 * In one run it measures the machine (fp32 FMA peak, memory read bandwidth, with the same thread
 * count) and then the engine on one sequence: prefill of a --prompt-tokens prompt in one step,
 * then --decode-tokens single-token decode steps. It reports
 *   prefill: tokens/s, GFLOP/s of the matrix products, and their fraction of the FMA peak;
 *   decode:  tokens/s, bytes read per token (weights + KV cache), and the fraction of the
 *            bandwidth roofline = bytes per token × tokens/s ÷ measured bandwidth.
 * Under mpirun it benchmarks one tensor-parallel group (rank 0 reports) and also times the
 * all-reduce of one hidden vector and of a prompt-sized activation.
 *
 * It drives the engine directly (no scheduler) so that only the forward pass is timed.
 */
#include "cli/commands.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/flags.h"
#include "common/json.h"
#include "common/kv_geometry.h"
#include "common/meminfo.h"
#include "common/rng.h"
#include "kernels/cpu/probe.h"
#include "kernels/cpu/threadpool.h"
#include "node/runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct bench_result {
    double fma_peak_gflops, bandwidth_gbs;
    double prefill_s, prefill_tok_s, prefill_gflops;
    double decode_tok_s, decode_bytes_per_token;
    double allreduce_vector_us, allreduce_prompt_us;
} bench_result;

/* FLOPs of one prefill pass: 2 per weight per token for every matrix product, plus attention
 * (q·k and p·v over the causal triangle). */
static double prefill_flops(const ts_model_hparams *hp, int n) {
    double d = hp->dim, q = (double)hp->n_heads * hp->head_dim,
           kv = (double)hp->n_kv_heads * hp->head_dim, f = hp->n_ff;
    double per_token_layer = 2.0 * (d * q + 2 * d * kv + q * d + 3 * d * f);
    double attention_layer = 2.0 * 2.0 * q * ((double)n * (n + 1) / 2.0);
    return hp->n_layers * (per_token_layer * n + attention_layer) + 2.0 * d * hp->n_vocab;
}

static int time_allreduce(ts_comm *comm, size_t count, int reps, double *us) {
    float *buf = calloc(count, sizeof *buf);
    if (!buf) return ts_error_set(TS_E_NOMEM, "out of memory");
    int rc = ts_comm_allreduce_sum_f32(comm, buf, count); /* warm-up */
    int64_t t0 = ts_now_ns();
    for (int i = 0; !rc && i < reps; i++) rc = ts_comm_allreduce_sum_f32(comm, buf, count);
    *us = (double)(ts_now_ns() - t0) / 1e3 / reps;
    free(buf);
    return rc;
}

/* One sequence in blocks 0, 1, 2, ... */
static void fill_batch(ts_batch *b, ts_batch_seq *seq, int32_t *tokens, int32_t *blocks, int32_t pos0,
                       int32_t n, int32_t block_size) {
    *seq = (ts_batch_seq){0, n, pos0, 0, (pos0 + n + block_size - 1) / block_size, true};
    for (int32_t i = 0; i < seq->n_blocks; i++) blocks[i] = i;
    *b = (ts_batch){n, 1, tokens, seq, blocks, seq->n_blocks, block_size};
}

static int run_engine(ts_runtime *rt, int prompt_tokens, int decode_tokens, bench_result *r) {
    ts_engine *e = ts_runtime_engine(rt);
    const ts_model_hparams *hp = ts_engine_hparams(e);
    const ts_engine_options *eo = ts_engine_options_get(e);
    if (prompt_tokens + decode_tokens > eo->max_ctx)
        return ts_error_set(TS_E_INVALID, "--prompt-tokens + --decode-tokens = %d exceeds the "
                            "context length %d (raise --ctx)", prompt_tokens + decode_tokens,
                            eo->max_ctx);
    if (prompt_tokens > eo->max_batch_tokens)
        return ts_error_set(TS_E_INVALID, "--prompt-tokens %d exceeds --batch-tokens %d",
                            prompt_tokens, eo->max_batch_tokens);
    int32_t *tokens = malloc((size_t)prompt_tokens * sizeof *tokens);
    int32_t *blocks = malloc((size_t)(eo->max_ctx / eo->block_size + 1) * sizeof *blocks);
    if (!tokens || !blocks) {
        free(tokens);
        free(blocks);
        return ts_error_set(TS_E_NOMEM, "out of memory");
    }
    ts_rng rng;
    ts_rng_seed(&rng, 42);
    for (int i = 0; i < prompt_tokens; i++) tokens[i] = (int32_t)(ts_rng_next(&rng) % (uint64_t)hp->n_vocab);
    ts_sampling greedy = {.temperature = 0, .top_p = 1, .repetition_penalty = 1};
    ts_batch b;
    ts_batch_seq seq;
    int32_t next = 0;
    int rc = TS_OK;
    /* prefill: warm up once, then the best of three */
    double best = 1e30;
    for (int rep = 0; !rc && rep < 4; rep++) {
        fill_batch(&b, &seq, tokens, blocks, 0, prompt_tokens, eo->block_size);
        int64_t t0 = ts_now_ns();
        rc = ts_engine_step(e, &b, &greedy, &next, NULL);
        double s = ts_ns_to_s(ts_now_ns() - t0);
        if (rep > 0 && s < best) best = s;
    }
    r->prefill_s = best;
    r->prefill_tok_s = prompt_tokens / best;
    r->prefill_gflops = prefill_flops(hp, prompt_tokens) / best / 1e9;
    /* decode: one token per step after the prompt */
    int64_t t0 = ts_now_ns();
    for (int i = 0; !rc && i < decode_tokens; i++) {
        int32_t tok = next;
        fill_batch(&b, &seq, &tok, blocks, prompt_tokens + i, 1, eo->block_size);
        rc = ts_engine_step(e, &b, &greedy, &next, NULL);
    }
    double decode_s = ts_ns_to_s(ts_now_ns() - t0);
    r->decode_tok_s = decode_tokens / decode_s;
    /* bytes per token: this rank's weights scaled to the group, plus the KV cache read */
    double kv_token = (double)ts_kv_block_bytes(eo->kv_type, 1, hp->head_dim, hp->n_kv_heads);
    double ctx_mean = prompt_tokens + decode_tokens / 2.0;
    r->decode_bytes_per_token = (double)ts_model_bytes_per_token(ts_runtime_model(rt)) +
                                2.0 * hp->n_layers * kv_token * ctx_mean;
    free(tokens);
    free(blocks);
    return rc;
}

static void report(const bench_result *r, const ts_runtime *rt, int threads, int prompt_tokens,
                   int decode_tokens, bool json) {
    const ts_comm *comm = ts_runtime_comm(rt);
    const char *model = ts_runtime_model_path(rt);
    double prefill_frac = r->fma_peak_gflops > 0 ? r->prefill_gflops / r->fma_peak_gflops : 0;
    double achieved_gbs = r->decode_bytes_per_token * r->decode_tok_s / 1e9;
    double decode_frac = r->bandwidth_gbs > 0 ? achieved_gbs / r->bandwidth_gbs : 0;
    /* this rank's memory after the run: weights (packed copies and mapped file pages), KV
     * pages touched, activations */
    uint64_t rss = ts_mem_resident_bytes(), rss_peak = ts_mem_resident_peak_bytes();
    size_t kv_memory = ts_engine_options_get(ts_runtime_engine(rt))->kv_memory;
    if (!json) {
        printf("model            %s\n", model);
        printf("ranks x threads  %d x %d\n", comm->size, threads);
        printf("machine          FMA peak %.1f GFLOP/s, read bandwidth %.1f GB/s\n",
               r->fma_peak_gflops, r->bandwidth_gbs);
        printf("prefill          %d tokens in %.3f s: %.1f tokens/s, %.1f GFLOP/s = %.0f%% of "
               "peak\n",
               prompt_tokens, r->prefill_s, r->prefill_tok_s, r->prefill_gflops,
               100 * prefill_frac);
        printf("decode           %d tokens: %.1f tokens/s, %.1f MB/token, %.1f GB/s = %.0f%% of "
               "the bandwidth roofline\n",
               decode_tokens, r->decode_tok_s, r->decode_bytes_per_token / 1e6, achieved_gbs,
               100 * decode_frac);
        if (comm->size > 1)
            printf("all-reduce       hidden vector %.1f us, %d-token activation %.1f us\n",
                   r->allreduce_vector_us, prompt_tokens, r->allreduce_prompt_us);
        printf("memory           resident %.1f MiB (peak %.1f MiB), KV cache budget %.1f MiB\n",
               (double)rss / 1048576.0, (double)rss_peak / 1048576.0,
               (double)kv_memory / 1048576.0);
        return;
    }
    ts_buf out = {0};
    ts_json_writer w;
    ts_jw_init(&w, &out);
    ts_jw_object_begin(&w);
    ts_jw_key(&w, "model");
    ts_jw_string(&w, model);
    ts_jw_key(&w, "ranks");
    ts_jw_int(&w, comm->size);
    ts_jw_key(&w, "threads");
    ts_jw_int(&w, threads);
    ts_jw_key(&w, "fma_peak_gflops");
    ts_jw_double(&w, r->fma_peak_gflops);
    ts_jw_key(&w, "bandwidth_gbs");
    ts_jw_double(&w, r->bandwidth_gbs);
    ts_jw_key(&w, "prefill_tokens_per_s");
    ts_jw_double(&w, r->prefill_tok_s);
    ts_jw_key(&w, "prefill_gflops");
    ts_jw_double(&w, r->prefill_gflops);
    ts_jw_key(&w, "prefill_fraction_of_peak");
    ts_jw_double(&w, prefill_frac);
    ts_jw_key(&w, "decode_tokens_per_s");
    ts_jw_double(&w, r->decode_tok_s);
    ts_jw_key(&w, "decode_bytes_per_token");
    ts_jw_double(&w, r->decode_bytes_per_token);
    ts_jw_key(&w, "decode_fraction_of_roofline");
    ts_jw_double(&w, decode_frac);
    ts_jw_key(&w, "resident_bytes");
    ts_jw_int(&w, (int64_t)rss);
    ts_jw_key(&w, "resident_peak_bytes");
    ts_jw_int(&w, (int64_t)rss_peak);
    ts_jw_key(&w, "kv_memory_bytes");
    ts_jw_int(&w, (int64_t)kv_memory);
    if (comm->size > 1) {
        ts_jw_key(&w, "allreduce_vector_us");
        ts_jw_double(&w, r->allreduce_vector_us);
        ts_jw_key(&w, "allreduce_prompt_us");
        ts_jw_double(&w, r->allreduce_prompt_us);
    }
    ts_jw_object_end(&w);
    if (!ts_jw_finish(&w)) printf("%s\n", out.data);
    ts_buf_free(&out);
}

/* Runs both probes on every rank at once and gives the leader the sums over the group. */
static int probe_group(ts_comm *comm, int threads, size_t probe_bytes, bench_result *r) {
    double mine[2], all[2 * 64];
    if (comm->size > 64) return ts_error_set(TS_E_INVALID, "probes: at most 64 ranks");
    mine[0] = ts_probe_fma_peak_gflops(threads);
    int rc = ts_comm_barrier(comm); /* the bandwidth probes also start together */
    if (rc) return rc;
    mine[1] = ts_probe_read_bandwidth_gbs(threads, probe_bytes);
    rc = ts_comm_allgather(comm, mine, all, sizeof mine);
    if (rc) return rc;
    r->fma_peak_gflops = r->bandwidth_gbs = 0;
    for (int i = 0; i < comm->size; i++) {
        r->fma_peak_gflops += all[2 * i];
        r->bandwidth_gbs += all[2 * i + 1];
    }
    return 0;
}

int ts_cmd_bench_engine(int argc, char **argv) {
    ts_runtime_options ro;
    ts_runtime_options_default(&ro);
    ro.threads = 0;
    int prompt_tokens = 512, decode_tokens = 128;
    size_t probe_bytes = (size_t)512 << 20;
    bool json = false, no_probe = false;
    ts_flag flags[TS_RUNTIME_MAX_FLAGS + 8];
    int n = ts_runtime_flags(&ro, flags);
    flags[n++] = (ts_flag){"prompt-tokens", 0, TS_FLAG_INT, &prompt_tokens,
                           "prompt length of the prefill measurement", 1, 1 << 20};
    flags[n++] = (ts_flag){"decode-tokens", 0, TS_FLAG_INT, &decode_tokens,
                           "decode steps to time", 1, 1 << 20};
    flags[n++] = (ts_flag){"probe-bytes", 0, TS_FLAG_SIZE, &probe_bytes,
                           "buffer size of the bandwidth probe", 1 << 20, 0};
    flags[n++] = (ts_flag){"no-probe", 0, TS_FLAG_BOOL, &no_probe,
                           "skip the machine probes (report no fractions)", 0, 0};
    flags[n++] = (ts_flag){"json", 0, TS_FLAG_BOOL, &json, "print one JSON object", 0, 0};
    ts_flags_result res = {NULL, 0, 0};
    int rc = ts_flags_parse("tessera bench-engine [-m MODEL] [flags]", flags, n, argc, argv, 1,
                            &res);
    if (rc == TS_FLAGS_HELP) return TS_EXIT_OK;
    if (rc) return ts_cli_fail("bench-engine", TS_EXIT_USAGE);
    if (ro.ctx == 0) ro.ctx = prompt_tokens + decode_tokens;
    if (ro.batch_tokens < prompt_tokens) ro.batch_tokens = prompt_tokens;

    bench_result r = {0};
    ts_runtime *rt = NULL;
    rc = ts_runtime_open(&ro, &rt);
    if (rc) return ts_cli_fail("bench-engine", ts_cli_exit_code(rc));
    ts_comm *comm = ts_runtime_comm(rt);
    int threads = ro.threads > 0 ? ro.threads : 0;
    if (threads == 0) threads = ts_cpu_count();
    /* The machine figures are those of the cores the group uses: every rank probes with its own
     * threads at the same time (an idle rank would otherwise spin in a collective on a core the
     * probe wants), and the leader sums them. */
    rc = ts_comm_barrier(comm);
    if (!rc && !no_probe) rc = probe_group(comm, threads, probe_bytes, &r);
    if (!rc && comm->size > 1) {
        const ts_model_hparams *hp = ts_engine_hparams(ts_runtime_engine(rt));
        rc = time_allreduce(comm, (size_t)hp->dim, 1000, &r.allreduce_vector_us);
        if (!rc)
            rc = time_allreduce(comm, (size_t)hp->dim * (size_t)prompt_tokens, 20,
                                &r.allreduce_prompt_us);
    }
    if (!rc) {
        if (comm->rank == 0) rc = run_engine(rt, prompt_tokens, decode_tokens, &r);
        else rc = ts_runtime_follow(rt);
    }
    if (!rc && comm->rank == 0) report(&r, rt, threads, prompt_tokens, decode_tokens, json);
    if (rc) ts_cli_fail("bench-engine", ts_cli_exit_code(rc));
    int close_rc = ts_runtime_close(rt);
    return rc || close_rc ? TS_EXIT_FAILURE : TS_EXIT_OK;
}
