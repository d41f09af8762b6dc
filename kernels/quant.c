/* quant.c — see quant.h. */
#include "kernels/quant.h"

#include "common/error.h"
#include "common/fp16.h"

#include <math.h>
#include <string.h>

static void quantize_q8_0(const float *x, ts_block_q8_0 *y, int64_t n) {
    for (int64_t b = 0; b < n / TS_QK; b++) {
        const float *xb = x + b * TS_QK;
        float amax = 0.0f;
        for (int i = 0; i < TS_QK; i++) amax = fmaxf(amax, fabsf(xb[i]));
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = ts_f32_to_f16(d);
        for (int i = 0; i < TS_QK; i++) y[b].q[i] = (int8_t)roundf(xb[i] * id);
    }
}

static void quantize_q4_0(const float *x, ts_block_q4_0 *y, int64_t n) {
    for (int64_t b = 0; b < n / TS_QK; b++) {
        const float *xb = x + b * TS_QK;
        float amax = 0.0f, max = 0.0f;
        for (int i = 0; i < TS_QK; i++) {
            if (fabsf(xb[i]) > amax) {
                amax = fabsf(xb[i]);
                max = xb[i];
            }
        }
        float d = max / -8.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = ts_f32_to_f16(d);
        for (int i = 0; i < TS_QK / 2; i++) {
            int q0 = (int)(xb[i] * id + 8.5f);
            int q1 = (int)(xb[i + TS_QK / 2] * id + 8.5f);
            if (q0 > 15) q0 = 15;
            if (q1 > 15) q1 = 15;
            y[b].qs[i] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

void ts_quantize_row(ts_dtype type, const float *src, void *dst, int64_t n) {
    switch (type) {
    case TS_DTYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); return;
    case TS_DTYPE_F16:
        for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = ts_f32_to_f16(src[i]);
        return;
    case TS_DTYPE_BF16:
        for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = ts_f32_to_bf16(src[i]);
        return;
    case TS_DTYPE_Q8_0: quantize_q8_0(src, dst, n); return;
    case TS_DTYPE_Q4_0: quantize_q4_0(src, dst, n); return;
    }
    TS_ASSERT(!"ts_quantize_row: unknown type");
}

void ts_dequantize_row(ts_dtype type, const void *src, float *dst, int64_t n) {
    switch (type) {
    case TS_DTYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); return;
    case TS_DTYPE_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = ts_f16_to_f32(((const uint16_t *)src)[i]);
        return;
    case TS_DTYPE_BF16:
        for (int64_t i = 0; i < n; i++) dst[i] = ts_bf16_to_f32(((const uint16_t *)src)[i]);
        return;
    case TS_DTYPE_Q8_0: {
        const ts_block_q8_0 *b = src;
        for (int64_t k = 0; k < n / TS_QK; k++) {
            float d = ts_f16_to_f32(b[k].d);
            for (int i = 0; i < TS_QK; i++) dst[k * TS_QK + i] = d * (float)b[k].q[i];
        }
        return;
    }
    case TS_DTYPE_Q4_0: {
        const ts_block_q4_0 *b = src;
        for (int64_t k = 0; k < n / TS_QK; k++) {
            float d = ts_f16_to_f32(b[k].d);
            for (int i = 0; i < TS_QK / 2; i++) {
                dst[k * TS_QK + i] = d * (float)((b[k].qs[i] & 0x0f) - 8);
                dst[k * TS_QK + i + TS_QK / 2] = d * (float)((b[k].qs[i] >> 4) - 8);
            }
        }
        return;
    }
    }
    TS_ASSERT(!"ts_dequantize_row: unknown type");
}
