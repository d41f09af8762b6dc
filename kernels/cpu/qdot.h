/*
 * qdot.h — fast versions of the quantized dot products (kernels/quant.h), per instruction set.
 * Each returns the same bits as ts_quant_vec_dot for every input: the integer parts are exact
 * whatever the order, and the float steps are the reference's, in its order. tests/unit
 * test_kernels_simd holds them together.
 */
#ifndef TS_KERNELS_CPU_QDOT_H
#define TS_KERNELS_CPU_QDOT_H

#include "kernels/quant.h"

#include <stddef.h>

/* Four dot products of one weight row w with the activation rows a, a + a_stride,
 * a + 2 a_stride, a + 3 a_stride (bytes): out[j] has the bits of the single dot with row j; the
 * weight's blocks are unpacked once for the four (prefill). */
typedef void (*ts_vec_dot4_fn)(const void *w, const void *a, size_t a_stride, int64_t n,
                               float out[4]);

/* AVX2 + FMA + F16C (qdot_avx2.c): the dot (and the 4-row dot) for `type`, or NULL when it has
 * no AVX2 version. Only to be called on a CPU with AVX2. */
ts_vec_dot_fn ts_qdot_avx2(ts_dtype type);
ts_vec_dot4_fn ts_qdot4_avx2(ts_dtype type);

/* A tile of a matrix product (prefill): `rows` weight rows w, w + w_stride, ... (bytes) times
 * `tokens` activation rows a, a + a_stride, ...; output (row r, token t) goes to
 * y[t * y_stride + r] with the bits of the single dot of that row and token. Each weight block
 * is unpacked once for all the tile's tokens and each activation block loaded once for all its
 * rows, so the tile does far fewer instructions per product than row-by-row dots. */
typedef void (*ts_qtile_fn)(const void *w, size_t w_stride, const void *a, size_t a_stride,
                            int64_t n, float *y, size_t y_stride);
typedef struct ts_qtile {
    ts_qtile_fn fn; /* NULL: no tile for the type */
    int rows, tokens;
} ts_qtile;

/* AVX-512 VNNI with VL and BW (qgemm_vnni.c: vpdpbusd, vpdpwssd on 256-bit registers, 32 of
 * them): the tile for `type`, or {NULL}. Only to be called where ts_cpu_has_avx512_vnni(). */
ts_qtile ts_qtile_vnni(ts_dtype type);

#endif
