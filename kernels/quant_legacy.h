/* quant_legacy.h — the legacy block types' functions for quant.c's table (quant.h states them). */
#ifndef TS_KERNELS_QUANT_LEGACY_H
#define TS_KERNELS_QUANT_LEGACY_H

#include "common/dtype.h"

#include <stdint.h>

void ts_legacy_to_float(ts_dtype t, const void *src, float *dst, int64_t n);
float ts_legacy_vec_dot(ts_dtype t, const void *w, const void *a, int64_t n);
void ts_quantize_q8_0_weights(const float *x, void *dst, int64_t n);
void ts_quantize_q4_0_weights(const float *x, void *dst, int64_t n);
void ts_quantize_q8_0_act(const float *x, void *dst, int64_t n);
void ts_quantize_q8_1_act(const float *x, void *dst, int64_t n);
void ts_q8_1_to_float(const void *src, float *dst, int64_t n);

#endif
