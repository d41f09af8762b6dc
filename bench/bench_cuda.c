/*
 * bench_cuda.c — tessera-bench-cuda: the CUDA backend's kernels against the device's limits, on
 * the shapes of Llama-3-8B in bf16 (dim 4096, 32 heads, 8 KV heads of 128, FFN 14336). A command,
 * not a test (docs/cuda.md, "Benchmark plan"); scripts/gpu-check.sh runs it.
 *
 *   bandwidth  device-to-device copy of 1 GiB, (read + write bytes) / time, best of 5: the HBM
 *              roofline the decode figures are measured against
 *   decode     the seven matrix products of a layer for n = 1, 16, 64 rows, over 4 layers'
 *              worth of distinct weights (1.7 GB, so nothing stays in L2): weight bytes / time
 *   prefill    the same products for n = 2048: TFLOP/s against --peak-tflops (bf16 dense)
 *   attention  decode of n sequences at a 2048-token context (f16 KV cache), and the causal
 *              prefill of a 2048-token prompt
 * Every figure is the best of --reps timed runs after one warm-up.
 */
#include "common/clock.h"
#include "common/error.h"
#include "common/flags.h"
#include "common/kv_geometry.h"
#include "kernels/kernels.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { DIM = 4096, HEADS = 32, KV_HEADS = 8, HEAD_DIM = 128, FFN = 14336, LAYERS = 4 };
enum { N_MATS = 7 };

static const int64_t mat_rows[N_MATS] = {HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM,
                                         KV_HEADS * HEAD_DIM, DIM, FFN, FFN, DIM};
static const int64_t mat_cols[N_MATS] = {DIM, DIM, DIM, HEADS * HEAD_DIM, DIM, DIM, FFN};

static void die(const char *what) {
    fprintf(stderr, "tessera-bench-cuda: %s: %s\n", what, ts_error_message());
    exit(1);
}

static double now_s(void) {
    return (double)ts_now_ns() / 1e9;
}

static void sync_or_die(ts_backend *be) {
    if (be->sync(be)) die("device");
}

static double copy_bandwidth_gbs(void) {
    const size_t bytes = (size_t)1 << 30;
    void *a = NULL, *b = NULL;
    if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) {
        fprintf(stderr, "tessera-bench-cuda: cannot allocate 2 GiB for the bandwidth probe\n");
        exit(1);
    }
    double best = 1e30;
    for (int i = 0; i < 6; i++) {
        double t0 = now_s();
        cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
        cudaDeviceSynchronize();
        if (i > 0 && now_s() - t0 < best) best = now_s() - t0;
    }
    cudaFree(a);
    cudaFree(b);
    return 2.0 * (double)bytes / best / 1e9;
}

/* Random bf16 weights (uniform in [-1/64, 1/64]), prepared LAYERS times. */
static void make_weights(ts_backend *be, ts_weight w[LAYERS][N_MATS]) {
    uint64_t state = 88172645463325252ull;
    for (int m = 0; m < N_MATS; m++) {
        ts_weight h = {.type = TS_DTYPE_BF16, .rows = mat_rows[m], .cols = mat_cols[m]};
        h.row_stride = (size_t)h.cols * 2;
        size_t count = (size_t)h.rows * (size_t)h.cols;
        uint16_t *data = malloc(count * 2);
        if (!data) die("host memory");
        for (size_t i = 0; i < count; i++) {
            state ^= state << 13, state ^= state >> 7, state ^= state << 17;
            /* exponent of 2^-7..2^-6, random mantissa and sign */
            data[i] = (uint16_t)(((state >> 40) & 0x807f) | 0x3c00);
        }
        h.data = data;
        for (int l = 0; l < LAYERS; l++)
            if (be->weight_prepare(be, &h, &w[l][m])) die("preparing weights");
        free(data);
    }
}

static double layer_params(void) {
    double p = 0;
    for (int m = 0; m < N_MATS; m++)
        p += (double)mat_rows[m] * (double)mat_cols[m];
    return p;
}

/* Seconds for the seven products of `layers` layers at n rows (best of reps). */
static double time_matmuls(ts_backend *be, ts_weight w[LAYERS][N_MATS], int layers, int n,
                           float *x, float *y, int reps) {
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {
        sync_or_die(be);
        double t0 = now_s();
        for (int l = 0; l < layers; l++)
            for (int m = 0; m < N_MATS; m++)
                be->matmul(be, y, x, n, &w[l][m]);
        sync_or_die(be);
        if (r > 0 && now_s() - t0 < best) best = now_s() - t0;
    }
    return best;
}

/* One batch: n sequences of `rows` new tokens each, after `ctx` cached, blocks laid out in
 * order; block ids beyond the pool wrap (timing only reads them). */
static void attention_batch(ts_backend *be, int n_seqs, int rows, int ctx, int block_size,
                            int n_blocks) {
    int per_seq = (ctx + rows + block_size - 1) / block_size;
    ts_batch_seq *seqs = calloc((size_t)n_seqs, sizeof *seqs);
    int32_t *tokens = calloc((size_t)n_seqs * (size_t)rows, sizeof *tokens);
    int32_t *blocks = malloc((size_t)n_seqs * (size_t)per_seq * sizeof *blocks);
    for (int s = 0; s < n_seqs; s++) {
        seqs[s] = (ts_batch_seq){s * rows, rows, ctx, s * per_seq, per_seq, true};
        for (int b = 0; b < per_seq; b++)
            blocks[s * per_seq + b] = (s * per_seq + b) % n_blocks;
    }
    ts_batch b = {n_seqs * rows, n_seqs, tokens, seqs, blocks, n_seqs * per_seq, block_size};
    if (be->set_batch(be, &b)) die("set_batch");
    free(seqs);
    free(tokens);
    free(blocks);
}

static double time_attention(ts_backend *be, const ts_kv_layer *kv, float *q, float *out,
                             int reps) {
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {
        sync_or_die(be);
        double t0 = now_s();
        be->attention(be, out, q, kv, HEADS, 1.0f / sqrtf((float)HEAD_DIM));
        sync_or_die(be);
        if (r > 0 && now_s() - t0 < best) best = now_s() - t0;
    }
    return best;
}

int main(int argc, char **argv) {
    const char *device = "cuda";
    double peak = 989.0;
    int reps = 5;
    ts_flag flags[] = {
        {"device", 0, TS_FLAG_STRING, &device, "cuda or cuda:N", 0, 0},
        {"peak-tflops", 0, TS_FLAG_DOUBLE, &peak,
         "the device's dense bf16 peak (H100/H200 SXM: 989)", 1, 1e6},
        {"reps", 0, TS_FLAG_INT, &reps, "timed runs per figure (the best counts)", 1, 1000},
    };
    ts_flags_result res = {NULL, 0, 0};
    int rc = ts_flags_parse("tessera-bench-cuda [flags]", flags, 3, argc, argv, 1, &res);
    if (rc == TS_FLAGS_HELP) return 0;
    if (rc) {
        fprintf(stderr, "tessera-bench-cuda: %s\n", ts_error_message());
        return 2;
    }
    ts_backend *be = NULL;
    ts_backend_options bo = {.device = device};
    if (ts_backend_create(&bo, &be)) die("backend");
    struct cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, be->device_index);
    const double bw = copy_bandwidth_gbs();
    printf("device %s (%s), %d SMs; device-to-device copy bandwidth %.0f GB/s\n", be->name,
           prop.name, prop.multiProcessorCount, bw);

    static ts_weight w[LAYERS][N_MATS];
    make_weights(be, w);
    const double params = layer_params();
    const int max_n = 2048;
    float *x = be->alloc(be, (size_t)max_n * FFN * sizeof(float));
    float *y = be->alloc(be, (size_t)max_n * FFN * sizeof(float));
    if (!x || !y) die("activations");
    be->memset_zero(be, x, (size_t)max_n * FFN * sizeof(float));

    static const int decode_n[] = {1, 16, 64};
    for (int i = 0; i < 3; i++) {
        double t = time_matmuls(be, w, LAYERS, decode_n[i], x, y, reps);
        double gbs = LAYERS * params * 2.0 / t / 1e9;
        printf("decode GEMM  n=%-4d %7.3f ms per layer  %6.0f GB/s of weights  %5.1f%% of "
               "bandwidth\n",
               decode_n[i], t / LAYERS * 1e3, gbs, 100.0 * gbs / bw);
    }
    double t = time_matmuls(be, w, 1, max_n, x, y, reps);
    double tflops = 2.0 * params * max_n / t / 1e12;
    printf("prefill GEMM n=%-4d %7.3f ms per layer  %6.1f TFLOP/s  %5.1f%% of %.0f TFLOP/s\n",
           max_n, t * 1e3, tflops, 100.0 * tflops / peak, peak);

    /* attention: f16 KV pool for 64 sequences of 2048 + 2048 tokens */
    const int block_size = TS_KV_BLOCK_SIZE_DEFAULT, ctx = 2048;
    const int n_blocks = 64 * (ctx + block_size) / block_size + 2 * (ctx / block_size) + 8;
    ts_kv_layer kv = {.type = TS_DTYPE_F16, .n_blocks = n_blocks, .block_size = block_size,
                      .n_kv_heads = KV_HEADS, .head_dim = HEAD_DIM};
    size_t pool =
        (size_t)n_blocks * ts_kv_block_bytes(TS_DTYPE_F16, block_size, HEAD_DIM, KV_HEADS);
    kv.k = be->alloc(be, pool);
    kv.v = be->alloc(be, pool);
    if (!kv.k || !kv.v) die("KV cache");
    be->memset_zero(be, kv.k, pool);
    be->memset_zero(be, kv.v, pool);
    for (int i = 0; i < 3; i++) {
        attention_batch(be, decode_n[i], 1, ctx - 1, block_size, n_blocks);
        double ta = time_attention(be, &kv, x, y, reps);
        double bytes = (double)decode_n[i] * ctx * KV_HEADS * HEAD_DIM * 2 * 2;
        printf("decode attention n=%-3d ctx %d  %7.3f ms  %6.0f GB/s of KV  %5.1f%% of bandwidth\n",
               decode_n[i], ctx, ta * 1e3, bytes / ta / 1e9, 100.0 * bytes / ta / 1e9 / bw);
    }
    attention_batch(be, 1, max_n, 0, block_size, n_blocks);
    double ta = time_attention(be, &kv, x, y, reps);
    double aflops = 4.0 * HEADS * HEAD_DIM * ((double)max_n * (max_n + 1) / 2.0);
    printf("prefill attention %d tokens  %7.3f ms  %6.1f TFLOP/s (f32 CUDA cores)\n", max_n,
           ta * 1e3, aflops / ta / 1e12);

    be->free(be, kv.k);
    be->free(be, kv.v);
    be->free(be, x);
    be->free(be, y);
    for (int l = 0; l < LAYERS; l++)
        for (int m = 0; m < N_MATS; m++)
            be->weight_release(be, &w[l][m]);
    ts_backend_destroy(be);
    return 0;
}
