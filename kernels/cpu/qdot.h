/*
 * qdot.h — fast versions of the quantized dot products (kernels/quant.h), per instruction set.
 * Each returns the same bits as ts_quant_vec_dot for every input: the integer parts are exact
 * whatever the order, and the float steps are the reference's, in its order. tests/unit
 * test_kernels_simd holds them together.
 */
#ifndef TS_KERNELS_CPU_QDOT_H
#define TS_KERNELS_CPU_QDOT_H

#include "kernels/quant.h"

/* AVX2 + FMA + F16C (qdot_avx2.c): the dot for `type`, or NULL when it has no AVX2 version.
 * Only to be called on a CPU with AVX2. */
ts_vec_dot_fn ts_qdot_avx2(ts_dtype type);

#endif
