/*
 * quant.h — reference conversion of rows between f32 and the stored weight types.
 *
 * These scalar functions define what each type means (see common/dtype.h for block layouts);
 * the kernels' reference implementations use ts_dequantize_row, and writers of model files use
 * ts_quantize_row. Quantization follows GGML's reference rounding so that files we write load the
 * same in other GGUF readers:
 *   Q8_0: d = max|x| / 127, q = round(x / d)                 (round half away from zero)
 *   Q4_0: m = the x of largest |x| (sign kept), d = m / -8, q = min(15, trunc(x / d + 8.5))
 * n must be a multiple of 32 for Q8_0/Q4_0. Thread-safe, no allocation.
 */
#ifndef TS_KERNELS_QUANT_H
#define TS_KERNELS_QUANT_H

#include "common/dtype.h"

#include <stdint.h>

/* dst receives ts_dtype_row_bytes(type, n) bytes. */
void ts_quantize_row(ts_dtype type, const float *src, void *dst, int64_t n);
void ts_dequantize_row(ts_dtype type, const void *src, float *dst, int64_t n);

#endif
