/* quant_k.h — the K-quant types' functions for quant.c's table (quant.h states them). */
#ifndef TS_KERNELS_QUANT_K_H
#define TS_KERNELS_QUANT_K_H

#include "common/dtype.h"

#include <stdint.h>

void ts_kquant_to_float(ts_dtype t, const void *src, float *dst, int64_t n);
float ts_kquant_vec_dot(ts_dtype t, const void *w, const void *a, int64_t n);
void ts_quantize_q8_K_act(const float *x, void *dst, int64_t n);
void ts_q8_K_to_float(const void *src, float *dst, int64_t n);

/* The 256 integer codes of one super-block, the per-16-element scales and mins they are
 * multiplied by (x = d * scale[j / 16] * code - dmin * min[j / 16]), and d, dmin (0 when the
 * type has none). For the reference dot product, dequantization and tests. */
typedef struct {
    int8_t code[TS_QK_K];
    int16_t scale[TS_QK_K / 16];
    int16_t min[TS_QK_K / 16];
    float d, dmin;
} ts_kquant_block;

void ts_kquant_unpack(ts_dtype t, const void *blk, ts_kquant_block *out);

#endif
