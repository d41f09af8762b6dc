/*
 * simd_ops.h — the SIMD kernels of the CPU backend: one table per instruction set.
 *
 * simd_ops.c is compiled three times (kernels/CMakeLists.txt), with the vector layer of
 * simd.h set to AVX2 (8 lanes), AVX-512 (16 lanes) or AVX2 register pairs (16 lanes, tests
 * only), giving ts_cpu_kernels_avx2, ts_cpu_kernels_avx512 and ts_cpu_kernels_avx512emu. A table
 * may only be used when the CPU supports its instruction set (ts_cpu_isa_detect).
 *
 * Batch invariance, the design rule of every kernel here (kernels.h, determinism):
 *  - matmul: weights come packed in row panels (panels.h, from weight_prepare); each output
 *    y[i][r] is one FMA chain over k in order from zero on the weight's exact f32 values, in
 *    the batch-1 loop (converting in registers) and the blocked GEMM (converting tiles to f32
 *    pieces, accumulators saved between pieces) alike, so y[i] does not depend on n, on the
 *    other rows, on the tile shape or on the instruction set. Threads split rows of W, never k.
 *    A weight without panels falls back to the scalar reference.
 *  - attention: each (query row, head) is computed alone over keys 0..pos in order.
 *  - rmsnorm, silu_mul, add, argmax: row- or element-wise.
 */
#ifndef TS_KERNELS_CPU_SIMD_OPS_H
#define TS_KERNELS_CPU_SIMD_OPS_H

#include "kernels/cpu/cpu_batch.h"
#include "kernels/cpu/threadpool.h"
#include "kernels/kernels.h"

#include <stddef.h>
#include <stdint.h>

/* What a kernel call gets from the backend. */
typedef struct ts_cpu_exec {
    ts_threadpool *pool;
    const ts_cpu_batch *batch;
    /* per thread, 64-byte aligned, at least scratch_bytes(batch->max_ctx) bytes each */
    float *const *scratch;
} ts_cpu_exec;

typedef struct ts_cpu_kernels {
    const char *isa; /* "avx2", "avx512", "avx512emu" */
    int lanes;
    size_t (*scratch_bytes)(int32_t max_ctx);
    void (*matmul)(const ts_cpu_exec *ex, float *y, const float *x, int32_t n, const ts_weight *w);
    void (*rmsnorm)(const ts_cpu_exec *ex, float *out, const float *x, const float *weight,
                    int32_t n, int32_t dim, float eps);
    void (*attention)(const ts_cpu_exec *ex, float *out, const float *q, const ts_kv_layer *kv,
                      int32_t n_heads, float scale);
    void (*silu_mul)(const ts_cpu_exec *ex, float *gate, const float *up, int64_t count);
    void (*add)(const ts_cpu_exec *ex, float *y, const float *x, int64_t count);
    /* row maximum (exact); the lowest index holding it */
    void (*argmax)(const ts_cpu_exec *ex, const float *logits, int32_t n, int32_t n_cols,
                   int32_t *index, float *value);
} ts_cpu_kernels;

extern const ts_cpu_kernels ts_cpu_kernels_avx2;
extern const ts_cpu_kernels ts_cpu_kernels_avx512;
extern const ts_cpu_kernels ts_cpu_kernels_avx512emu;

#endif
