/*
 * qmatmul.h — the matrix product of a quantized weight on the CPU, computed as llama.cpp's CPU
 * path computes it: the activations are quantized once to the weight type's vec_dot_type
 * (common/dtype.h), then each output is one dot product of a weight row with a quantized
 * activation row (kernels/quant.h defines its arithmetic exactly). Weights stay in their file
 * layout: nothing is packed or copied.
 *
 * The dot function is the reference ts_quant_vec_dot or an instruction set's fast version of it
 * (qdot_avx2.c), which gives the same bits; each output depends only on its row and token, so
 * results do not depend on the batch, the thread count or the instruction set (kernels.h).
 * Threads split rows of W, in blocks of 16; within a block, tiles of rows x tokens where the
 * instruction set has them (prefill), else one row with four tokens, else one with one.
 */
#ifndef TS_KERNELS_CPU_QMATMUL_H
#define TS_KERNELS_CPU_QMATMUL_H

#include "kernels/cpu/qdot.h"
#include "kernels/cpu/threadpool.h"
#include "kernels/kernels.h"
#include "kernels/quant.h"

#include <stddef.h>
#include <stdint.h>

/* Bytes of the quantized activations of n rows for weight w. */
size_t ts_cpu_qmatmul_act_bytes(const ts_weight *w, int32_t n);

/* The dot products of one weight type: one row with one activation row (NULL: the reference),
 * optionally with four at once (NULL: none), and optionally tiles of rows x tokens (prefill;
 * fn NULL: none), all with the reference's bits. */
typedef struct ts_cpu_qdot {
    ts_vec_dot_fn dot;
    ts_vec_dot4_fn dot4;
    ts_qtile tile;
} ts_cpu_qdot;

/* y[n][w->rows] = x[n][w->cols] · Wᵀ; act holds ts_cpu_qmatmul_act_bytes(w, n) bytes; q the
 * dot products for w->type. pool may be NULL (the calling thread). */
void ts_cpu_qmatmul(ts_threadpool *pool, float *y, const float *x, int32_t n, const ts_weight *w,
                    void *act, ts_cpu_qdot q);

/* The fastest dot products for `type` that this CPU runs bit-identically to the reference,
 * using at most the instruction set `isa` (the backend's: TS_ISA_SCALAR the reference alone,
 * TS_ISA_AVX2 the AVX2 dots, TS_ISA_AVX512 also the VNNI tiles where the CPU has AVX-512 VNNI). */
ts_cpu_qdot ts_cpu_qdot_for(ts_dtype type, ts_cpu_isa isa);

#endif
