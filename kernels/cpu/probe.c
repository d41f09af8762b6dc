/* probe.c — see probe.h. */
#include "kernels/cpu/probe.h"

#include "common/clock.h"
#include "common/error.h"
#include "kernels/cpu/threadpool.h"
#include "kernels/kernels.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TS_PROBE_X86 1
#endif

enum { REPS = 3, FMA_ITERS = 4 << 20, CHAINS = 12 };

/* ---- FMA peak ---- */

typedef struct {
    ts_cpu_isa isa;
    double flops[256]; /* per thread */
    float sink[256];
} fma_args;

/* CHAINS independent accumulators hide the FMA latency (4 cycles × 2 pipes = 8 in flight). */
#ifdef TS_PROBE_X86
__attribute__((target("avx2,fma"))) static float fma_loop_avx2(double *flops) {
    __m256 acc[CHAINS];
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    for (int c = 0; c < CHAINS; c++)
        acc[c] = _mm256_set1_ps((float)c);
    for (int i = 0; i < FMA_ITERS; i++)
        for (int c = 0; c < CHAINS; c++)
            acc[c] = _mm256_fmadd_ps(acc[c], a, b);
    __m256 s = acc[0];
    for (int c = 1; c < CHAINS; c++)
        s = _mm256_add_ps(s, acc[c]);
    *flops = (double)FMA_ITERS * CHAINS * 8 * 2;
    return _mm256_cvtss_f32(s);
}

__attribute__((target("avx512f"))) static float fma_loop_avx512(double *flops) {
    __m512 acc[CHAINS];
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    for (int c = 0; c < CHAINS; c++)
        acc[c] = _mm512_set1_ps((float)c);
    for (int i = 0; i < FMA_ITERS; i++)
        for (int c = 0; c < CHAINS; c++)
            acc[c] = _mm512_fmadd_ps(acc[c], a, b);
    __m512 s = acc[0];
    for (int c = 1; c < CHAINS; c++)
        s = _mm512_add_ps(s, acc[c]);
    *flops = (double)FMA_ITERS * CHAINS * 16 * 2;
    return _mm512_reduce_add_ps(s);
}
#endif

static float fma_loop_scalar(double *flops) {
    float acc[CHAINS];
    for (int c = 0; c < CHAINS; c++)
        acc[c] = (float)c;
    for (int i = 0; i < FMA_ITERS / 8; i++)
        for (int c = 0; c < CHAINS; c++)
            acc[c] = acc[c] * 0.999999f + 1e-7f;
    float s = 0;
    for (int c = 0; c < CHAINS; c++)
        s += acc[c];
    *flops = (double)(FMA_ITERS / 8) * CHAINS * 2;
    return s;
}

static void fma_task(void *ctx, int ith, int nth) {
    fma_args *a = ctx;
#ifdef TS_PROBE_X86
    if (a->isa == TS_ISA_AVX512) {
        a->sink[ith] = fma_loop_avx512(&a->flops[ith]);
        return;
    }
    if (a->isa == TS_ISA_AVX2) {
        a->sink[ith] = fma_loop_avx2(&a->flops[ith]);
        return;
    }
#endif
    a->sink[ith] = fma_loop_scalar(&a->flops[ith]);
}

double ts_probe_fma_peak_gflops(int n_threads) {
    ts_threadpool *pool;
    if (ts_threadpool_create(n_threads, &pool)) return 0.0;
    int nth = ts_threadpool_size(pool);
    if (nth > 256) nth = 256;
    fma_args *a = calloc(1, sizeof *a);
    if (!a) {
        ts_threadpool_destroy(pool);
        ts_error_set(TS_E_NOMEM, "fma probe: out of memory");
        return 0.0;
    }
    a->isa = ts_cpu_isa_detect();
    double best = 0.0;
    for (int rep = 0; rep < REPS; rep++) {
        int64_t t0 = ts_now_ns();
        ts_threadpool_run(pool, nth, fma_task, a);
        double secs = ts_ns_to_s(ts_now_ns() - t0), flops = 0;
        for (int i = 0; i < nth; i++)
            flops += a->flops[i];
        if (flops / secs > best) best = flops / secs;
    }
    free(a);
    ts_threadpool_destroy(pool);
    return best / 1e9;
}

/* ---- read bandwidth ---- */

typedef struct {
    const float *buf;
    size_t n_floats;
    ts_cpu_isa isa;
    int prefetch;
    float sink[256];
} bw_args;

#ifdef TS_PROBE_X86
/* 8 independent sums, with or without a software prefetch 1 KiB ahead: which of the two reads
 * faster depends on the machine (here, without), so the probe runs both and keeps the best. */
__attribute__((target("avx2"))) static float sum_avx2(const float *p, size_t n, int prefetch) {
    __m256 s[8];
    for (int j = 0; j < 8; j++)
        s[j] = _mm256_setzero_ps();
    for (size_t i = 0; i + 64 <= n; i += 64) {
        if (prefetch)
            for (int j = 0; j < 4; j++)
                _mm_prefetch((const char *)(p + i) + 1024 + 64 * j, _MM_HINT_T0);
        for (int j = 0; j < 8; j++)
            s[j] = _mm256_add_ps(s[j], _mm256_load_ps(p + i + 8 * j));
    }
    for (int j = 1; j < 8; j++)
        s[0] = _mm256_add_ps(s[0], s[j]);
    float out[8];
    _mm256_storeu_ps(out, s[0]);
    return out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
}
#endif

static float sum_scalar(const float *p, size_t n) {
    float s[4] = {0};
    for (size_t i = 0; i + 4 <= n; i += 4)
        for (int j = 0; j < 4; j++)
            s[j] += p[i + j];
    return s[0] + s[1] + s[2] + s[3];
}

static void bw_task(void *ctx, int ith, int nth) {
    bw_args *a = ctx;
    size_t per = a->n_floats / (size_t)nth / 64 * 64; /* 256-byte aligned shares */
    const float *p = a->buf + per * (size_t)ith;
#ifdef TS_PROBE_X86
    if (a->isa >= TS_ISA_AVX2) {
        a->sink[ith] = sum_avx2(p, per, a->prefetch);
        return;
    }
#endif
    a->sink[ith] = sum_scalar(p, per);
}

double ts_probe_read_bandwidth_gbs(int n_threads, size_t bytes) {
    ts_threadpool *pool;
    if (ts_threadpool_create(n_threads, &pool)) return 0.0;
    int nth = ts_threadpool_size(pool);
    if (nth > 256) nth = 256;
    bw_args *a = calloc(1, sizeof *a);
    float *buf = aligned_alloc(4096, (bytes + 4095) / 4096 * 4096);
    if (!a || !buf) {
        free(a);
        free(buf);
        ts_threadpool_destroy(pool);
        ts_error_set(TS_E_NOMEM, "bandwidth probe: cannot allocate %zu bytes", bytes);
        return 0.0;
    }
    memset(buf, 1, bytes); /* fault the pages in */
    a->buf = buf;
    a->n_floats = bytes / sizeof(float);
    a->isa = ts_cpu_isa_detect();
    double best = 0.0;
    size_t read = a->n_floats / (size_t)nth / 64 * 64 * (size_t)nth * sizeof(float);
    for (int rep = 0; rep < 2 * REPS; rep++) {
        a->prefetch = rep % 2;
        int64_t t0 = ts_now_ns();
        ts_threadpool_run(pool, nth, bw_task, a);
        double gbs = (double)read / ts_ns_to_s(ts_now_ns() - t0) / 1e9;
        if (gbs > best) best = gbs;
    }
    free(buf);
    free(a);
    ts_threadpool_destroy(pool);
    return best;
}
