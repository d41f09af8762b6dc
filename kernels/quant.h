/*
 * quant.h — what each stored type means: reference conversions between f32 and every type of
 * common/dtype.h, and the reference dot product of a quantized weight row with activations
 * quantized to its vec_dot_type. One table, ts_quant_traits_of(type), holds them, as GGML's
 * type traits do; adding a type is a row there plus the type's functions (quant_legacy.c,
 * quant_k.c).
 *
 * Dequantization is bit-exact with GGML's (and the gguf Python package's) for the same bytes.
 * Activation quantizers (Q8_0, Q8_1, Q8_K) round as llama.cpp's x86 CPU path does, so that a
 * product gives the integers llama.cpp's gives:
 *   Q8_0, Q8_1 (32): a = max|x|, d = a / 127 (stored f16), q = rint(x * (127 / a)) (ties to
 *                    even); Q8_1 also s = f16(d * sum(q)).
 *   Q8_K (256):      m = the x of largest |x| (sign kept), q = min(127, rint(x * (-127 / m))),
 *                    d = 1 / (-127 / m) (stored f32), sums of 16 q.
 * Weight quantizers (Q8_0, Q4_0; synthetic models and tests) follow GGML's reference rounding:
 *   Q8_0: d = max|x| / 127, q = round(x / d)                 (round half away from zero)
 *   Q4_0: m = the x of largest |x| (sign kept), d = m / -8, q = min(15, trunc(x / d + 8.5))
 *
 * The quantized dot product (ts_quant_vec_dot; the CPU's fast versions give the same bits):
 * integer products of the codes summed exactly per block, then scaled in f32 in a fixed order.
 *   Legacy types (blocks of 32): block b's exact partial sums p_b[l] of elements 4l .. 4l + 3
 *     (l = 0..7) go to 8 lane accumulators, acc[l] = fma(dw_b * da_b, p_b[l], acc[l]); Q4_1 and
 *     Q5_1 add their min terms to one more, accm = fma(m_b, s_b, accm), in block order. Result:
 *     ((acc0 + acc4) + (acc2 + acc6)) + ((acc1 + acc5) + (acc3 + acc7)) + accm.
 *   K-quants (super-blocks of 256): per super-block the exact integer sums isum (codes times
 *     activations, times the sub-block scales) and msum (mins times the activation sums), then
 *     acc = fma(dw * da, isum, acc); acc = fma(-dmin * da, msum, acc), in super-block order.
 * Every function is thread-safe and allocates nothing.
 */
#ifndef TS_KERNELS_QUANT_H
#define TS_KERNELS_QUANT_H

#include "common/dtype.h"

#include <stdint.h>

/* Converts n elements (a multiple of the block size) of a row. */
typedef void (*ts_to_float_fn)(const void *src, float *dst, int64_t n);
typedef void (*ts_from_float_fn)(const float *src, void *dst, int64_t n);
/* sum over n elements of w (a weight row) times a (the activations in the vec_dot_type). */
typedef float (*ts_vec_dot_fn)(const void *w, const void *a, int64_t n);

typedef struct ts_quant_traits {
    ts_to_float_fn to_float;     /* every type */
    ts_from_float_fn from_float; /* weights, GGML's reference rounding; NULL where Tessera
                                  * writes no such tensors */
    ts_from_float_fn quantize_act; /* activation types (Q8_0, Q8_1, Q8_K): llama.cpp's CPU
                                    * rounding, above */
    ts_vec_dot_fn vec_dot;       /* quantized weight types: the reference dot product */
    /* byte offsets within a block of its f16 scales (d, then m or dmin); n_scales of them */
    uint8_t scale_at[2];
    uint8_t n_scales;
} ts_quant_traits;

/* The row of type t (zeroed functions for a type without them; NULL for an unknown id). */
const ts_quant_traits *ts_quant_traits_of(ts_dtype t);

/* dst receives ts_dtype_row_bytes(type, n) bytes. Aborts if the type has no quantizer. */
void ts_quantize_row(ts_dtype type, const float *src, void *dst, int64_t n);
void ts_dequantize_row(ts_dtype type, const void *src, float *dst, int64_t n);

/* Quantizes n activations (a multiple of its block size) to an activation type. */
void ts_quantize_act_row(ts_dtype act_type, const float *src, void *dst, int64_t n);

/* The reference dot product of a weight row of type w_type (n elements) with activations in
 * its vec_dot_type (see above). */
float ts_quant_vec_dot(ts_dtype w_type, const void *w, const void *a, int64_t n);

/* Whether a row's scales are finite (NaN or infinite scales make a weight unusable: the model
 * loader refuses it). Plain types: 1. */
int ts_quant_row_scales_finite(ts_dtype type, const void *row, int64_t n);

/* The 16 values of IQ4_NL's codes. */
extern const int8_t ts_iq4nl_values[16];

/* ---- helpers shared by the type files (not for callers) ---- */
/* The 8 lane accumulators of the legacy types' dot product, reduced in the fixed order. */
static inline float ts_quant_lanes_sum(const float acc[8]) {
    return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

#endif
