/*
 * bench_kernels.c — kernel micro-benchmark: tessera-bench-kernels.
 *
 * Measures, per weight type, on synthetic weights of a 110M-parameter Llama shape (dim 768,
 * FFN 2048, 12 layers, vocabulary 32000):
 *   decode   batch-1 matmul over every weight of the model in forward order (what one decode
 *            step reads), as GB/s of weights and as a fraction of the measured read bandwidth;
 *   prefill  the seven matmuls of one layer for a 512-token prompt, as GFLOP/s and as a fraction
 *            of the measured FMA peak.
 * The baselines come from kernels/cpu/probe.h in the same run.
 *
 *   tessera-bench-kernels [--threads N] [--isa auto|scalar|avx2|avx512|avx512emu]
 *                         [--types f16,q8_0,...] [--reps N] [--tokens N] [--layers N]
 */
#include "common/clock.h"
#include "common/dtype.h"
#include "common/error.h"
#include "common/rng.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/probe.h"
#include "kernels/cpu/threadpool.h"
#include "kernels/kernels.h"
#include "kernels/quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { DIM = 768, FFN = 2048, VOCAB = 32000, MAX_LAYERS = 64 };

typedef struct {
    ts_weight w[7]; /* q, k, v, o, gate, up, down */
} layer;

typedef struct {
    int threads, reps, tokens, layers;
    ts_cpu_impl impl;
    char types[128];
} options;

static void usage(void) {
    fprintf(stderr, "usage: tessera-bench-kernels [--threads N] [--isa auto|scalar|avx2|avx512|"
                    "avx512emu] [--types f16,bf16,f32,q8_0,q4_0] [--reps N] [--tokens N] "
                    "[--layers N]\n");
    exit(2);
}

static int parse(int argc, char **argv, options *o) {
    *o = (options){.threads = 0, .reps = 5, .tokens = 512, .layers = 12};
    strcpy(o->types, "f16,bf16,f32,q8_0,q4_0");
    ts_cpu_isa best = ts_cpu_isa_detect();
    o->impl = best == TS_ISA_AVX512 ? TS_CPU_IMPL_AVX512
              : best == TS_ISA_AVX2 ? TS_CPU_IMPL_AVX2
                                    : TS_CPU_IMPL_SCALAR;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) usage();
        i++;
        if (!strcmp(a, "--threads"))
            o->threads = atoi(v);
        else if (!strcmp(a, "--reps"))
            o->reps = atoi(v);
        else if (!strcmp(a, "--tokens"))
            o->tokens = atoi(v);
        else if (!strcmp(a, "--layers"))
            o->layers = atoi(v);
        else if (!strcmp(a, "--types"))
            snprintf(o->types, sizeof o->types, "%s", v);
        else if (!strcmp(a, "--isa")) {
            int found = !strcmp(v, "auto");
            for (int k = 0; k < TS_CPU_IMPL_COUNT; k++)
                if (!strcmp(v, ts_cpu_impl_name((ts_cpu_impl)k))) {
                    o->impl = (ts_cpu_impl)k;
                    found = 1;
                }
            if (!found) usage();
        } else
            usage();
    }
    if (o->threads <= 0) o->threads = ts_cpu_count();
    if (o->reps < 1 || o->tokens < 1 || o->layers < 1 || o->layers > MAX_LAYERS) usage();
    return 0;
}

/* Random weights quantized row by row (values ~ N(0, 0.02), as in an initialised model), in
 * the backend's form (weight_prepare, as the engine does: packed panels for plain types). */
static ts_weight make_weight(ts_backend *be, ts_rng *rng, ts_dtype type, int64_t rows,
                             int64_t cols) {
    ts_weight w = {.type = type, .rows = rows, .cols = cols};
    w.row_stride = ts_dtype_row_bytes(type, cols);
    char *data = malloc(w.row_stride * (size_t)rows);
    float *row = malloc((size_t)cols * sizeof(float));
    if (!data || !row) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t k = 0; k < cols; k++)
            row[k] = ((float)(ts_rng_next(rng) >> 40) * (1.0f / 16777216.0f) - 0.5f) * 0.04f;
        ts_quantize_row(type, row, data + (size_t)r * w.row_stride, cols);
    }
    free(row);
    w.data = data;
    ts_weight ready;
    if (be->weight_prepare(be, &w, &ready)) {
        fprintf(stderr, "tessera-bench-kernels: %s\n", ts_error_message());
        exit(1);
    }
    return ready;
}

static void free_weight(ts_backend *be, ts_weight *w) {
    free((void *)w->data);
    be->weight_release(be, w);
}

static size_t weight_bytes(const ts_weight *w) {
    return w->row_stride * (size_t)w->rows;
}

static void bench_type(ts_backend *be, const options *o, ts_dtype type, double bw, double peak) {
    ts_rng rng;
    ts_rng_seed(&rng, 7);
    static const int64_t shape[7][2] = {{DIM, DIM}, {DIM, DIM}, {DIM, DIM}, {DIM, DIM},
                                        {FFN, DIM}, {FFN, DIM}, {DIM, FFN}};
    layer *layers = calloc((size_t)o->layers, sizeof *layers);
    size_t bytes = 0;
    for (int l = 0; l < o->layers; l++)
        for (int m = 0; m < 7; m++) {
            layers[l].w[m] = make_weight(be, &rng, type, shape[m][0], shape[m][1]);
            bytes += weight_bytes(&layers[l].w[m]);
        }
    ts_weight out = make_weight(be, &rng, type, VOCAB, DIM);
    bytes += weight_bytes(&out);

    const int n = o->tokens;
    /* 64-byte aligned like the backend's activation buffers, so vector loads never split */
    float *x = aligned_alloc(64, ((size_t)n * FFN * sizeof(float) + 63) / 64 * 64),
          *y = aligned_alloc(64, ((size_t)n * VOCAB * sizeof(float) + 63) / 64 * 64);
    for (size_t i = 0; i < (size_t)n * FFN; i++)
        x[i] = (float)(i % 13) * 0.1f - 0.6f;

    /* decode: one pass over all weights, batch 1 */
    double best = 1e30;
    for (int rep = 0; rep < o->reps + 1; rep++) {
        int64_t t0 = ts_now_ns();
        for (int l = 0; l < o->layers; l++)
            for (int m = 0; m < 7; m++)
                be->matmul(be, y, x, 1, &layers[l].w[m]);
        be->matmul(be, y, x, 1, &out);
        double s = ts_ns_to_s(ts_now_ns() - t0);
        if (rep > 0 && s < best) best = s; /* the first pass warms up */
    }
    double gbs = (double)bytes / best / 1e9;
    printf("decode  %-5s %7.1f MB/token  %7.3f ms  %6.1f GB/s  %5.1f%% of bandwidth\n",
           ts_dtype_name(type), (double)bytes / 1e6, best * 1e3, gbs, 100.0 * gbs / bw);

    /* prefill: the seven matmuls of one layer for n tokens */
    double flop = 0;
    for (int m = 0; m < 7; m++)
        flop += 2.0 * n * (double)shape[m][0] * (double)shape[m][1];
    best = 1e30;
    int reps = o->reps < 3 ? o->reps : 3;
    for (int rep = 0; rep < reps + 1; rep++) {
        int64_t t0 = ts_now_ns();
        for (int m = 0; m < 7; m++)
            be->matmul(be, y, x, n, &layers[rep % o->layers].w[m]);
        double s = ts_ns_to_s(ts_now_ns() - t0);
        if (rep > 0 && s < best) best = s;
    }
    double gflops = flop / best / 1e9;
    printf("prefill %-5s %4d tokens  %8.2f ms  %6.1f GFLOP/s  %5.1f%% of FMA peak\n",
           ts_dtype_name(type), n, best * 1e3, gflops, 100.0 * gflops / peak);
    fflush(stdout);

    for (int l = 0; l < o->layers; l++)
        for (int m = 0; m < 7; m++)
            free_weight(be, &layers[l].w[m]);
    free_weight(be, &out);
    free(layers);
    free(x);
    free(y);
}

static void noop_task(void *ctx, int ith, int nth) {}

/* Round trip of an empty task on all threads: the fixed cost each threaded kernel pays. */
static void print_dispatch_latency(int threads) {
    ts_threadpool *pool;
    if (ts_threadpool_create(threads, &pool)) return;
    enum { N = 20000 };
    for (int i = 0; i < 1000; i++) ts_threadpool_run(pool, 0, noop_task, NULL);
    int64_t t0 = ts_now_ns();
    for (int i = 0; i < N; i++) ts_threadpool_run(pool, 0, noop_task, NULL);
    printf("dispatch: %.2f us per empty task on %d threads\n",
           ts_ns_to_s(ts_now_ns() - t0) * 1e6 / N, threads);
    ts_threadpool_destroy(pool);
}

int main(int argc, char **argv) {
    options o;
    parse(argc, argv, &o);
    ts_backend *be;
    ts_backend_options bo = {.n_threads = o.threads};
    if (ts_cpu_backend_create(&bo, o.impl, &be)) {
        fprintf(stderr, "tessera-bench-kernels: %s\n", ts_error_message());
        return 1;
    }
    double bw = ts_probe_read_bandwidth_gbs(o.threads, (size_t)1 << 30);
    double peak = ts_probe_fma_peak_gflops(o.threads);
    printf("backend %s, %d threads; probes: read bandwidth %.1f GB/s, FMA peak %.1f GFLOP/s\n",
           be->name, o.threads, bw, peak);
    print_dispatch_latency(o.threads);
    char types[128];
    snprintf(types, sizeof types, "%s", o.types);
    for (char *save = NULL, *t = strtok_r(types, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        ts_dtype type;
        if (ts_dtype_parse(t, &type)) {
            fprintf(stderr, "tessera-bench-kernels: %s\n", ts_error_message());
            return 2;
        }
        bench_type(be, &o, type, bw, peak);
    }
    ts_backend_destroy(be);
    return 0;
}
