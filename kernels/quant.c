/* quant.c — see quant.h: the table of every type's reference functions. */
#include "kernels/quant.h"

#include "common/error.h"
#include "common/fp16.h"
#include "kernels/quant_k.h"
#include "kernels/quant_legacy.h"

#include <math.h>
#include <string.h>

static void f32_to_float(const void *src, float *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}
static void f32_from_float(const float *src, void *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}
static void f16_to_float(const void *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = ts_f16_to_f32(((const uint16_t *)src)[i]);
}
static void f16_from_float(const float *src, void *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = ts_f32_to_f16(src[i]);
}
static void bf16_to_float(const void *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = ts_bf16_to_f32(((const uint16_t *)src)[i]);
}
static void bf16_from_float(const float *src, void *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = ts_f32_to_bf16(src[i]);
}

/* One to_float and vec_dot per quantized type, routed to the family's function. */
#define LEGACY(T, t)                                                                               \
    static void T##_to_float(const void *s, float *d, int64_t n) { ts_legacy_to_float(t, s, d, n); } \
    static float T##_dot(const void *w, const void *a, int64_t n) {                                \
        return ts_legacy_vec_dot(t, w, a, n);                                                      \
    }
#define KQUANT(T, t)                                                                               \
    static void T##_to_float(const void *s, float *d, int64_t n) { ts_kquant_to_float(t, s, d, n); } \
    static float T##_dot(const void *w, const void *a, int64_t n) {                                \
        return ts_kquant_vec_dot(t, w, a, n);                                                      \
    }
LEGACY(q4_0, TS_DTYPE_Q4_0)
LEGACY(q4_1, TS_DTYPE_Q4_1)
LEGACY(q5_0, TS_DTYPE_Q5_0)
LEGACY(q5_1, TS_DTYPE_Q5_1)
LEGACY(q8_0, TS_DTYPE_Q8_0)
LEGACY(iq4_nl, TS_DTYPE_IQ4_NL)
KQUANT(q2_K, TS_DTYPE_Q2_K)
KQUANT(q3_K, TS_DTYPE_Q3_K)
KQUANT(q4_K, TS_DTYPE_Q4_K)
KQUANT(q5_K, TS_DTYPE_Q5_K)
KQUANT(q6_K, TS_DTYPE_Q6_K)
#undef LEGACY
#undef KQUANT

static const ts_quant_traits table[TS_DTYPE_COUNT] = {
    [TS_DTYPE_F32] = {f32_to_float, f32_from_float, NULL, NULL, {0}, 0},
    [TS_DTYPE_F16] = {f16_to_float, f16_from_float, NULL, NULL, {0}, 0},
    [TS_DTYPE_BF16] = {bf16_to_float, bf16_from_float, NULL, NULL, {0}, 0},
    [TS_DTYPE_Q4_0] = {q4_0_to_float, ts_quantize_q4_0_weights, NULL, q4_0_dot, {0}, 1},
    [TS_DTYPE_Q4_1] = {q4_1_to_float, NULL, NULL, q4_1_dot, {0, 2}, 2},
    [TS_DTYPE_Q5_0] = {q5_0_to_float, NULL, NULL, q5_0_dot, {0}, 1},
    [TS_DTYPE_Q5_1] = {q5_1_to_float, NULL, NULL, q5_1_dot, {0, 2}, 2},
    [TS_DTYPE_Q8_0] = {q8_0_to_float, ts_quantize_q8_0_weights, ts_quantize_q8_0_act, q8_0_dot,
                      {0}, 1},
    [TS_DTYPE_Q8_1] = {ts_q8_1_to_float, NULL, ts_quantize_q8_1_act, NULL, {0, 2}, 2},
    [TS_DTYPE_IQ4_NL] = {iq4_nl_to_float, NULL, NULL, iq4_nl_dot, {0}, 1},
    [TS_DTYPE_Q2_K] = {q2_K_to_float, NULL, NULL, q2_K_dot, {80, 82}, 2},
    [TS_DTYPE_Q3_K] = {q3_K_to_float, NULL, NULL, q3_K_dot, {108}, 1},
    [TS_DTYPE_Q4_K] = {q4_K_to_float, NULL, NULL, q4_K_dot, {0, 2}, 2},
    [TS_DTYPE_Q5_K] = {q5_K_to_float, NULL, NULL, q5_K_dot, {0, 2}, 2},
    [TS_DTYPE_Q6_K] = {q6_K_to_float, NULL, NULL, q6_K_dot, {208}, 1},
    [TS_DTYPE_Q8_K] = {ts_q8_K_to_float, NULL, ts_quantize_q8_K_act, NULL, {0}, 0},
};

const ts_quant_traits *ts_quant_traits_of(ts_dtype t) {
    if (!ts_dtype_info_of((uint32_t)t)) return NULL;
    return &table[t];
}

void ts_quantize_row(ts_dtype type, const float *src, void *dst, int64_t n) {
    const ts_quant_traits *q = ts_quant_traits_of(type);
    TS_ASSERT(q && q->from_float);
    q->from_float(src, dst, n);
}

void ts_dequantize_row(ts_dtype type, const void *src, float *dst, int64_t n) {
    const ts_quant_traits *q = ts_quant_traits_of(type);
    TS_ASSERT(q && q->to_float);
    q->to_float(src, dst, n);
}

void ts_quantize_act_row(ts_dtype act_type, const float *src, void *dst, int64_t n) {
    const ts_quant_traits *q = ts_quant_traits_of(act_type);
    TS_ASSERT(q && q->quantize_act);
    q->quantize_act(src, dst, n);
}

float ts_quant_vec_dot(ts_dtype w_type, const void *w, const void *a, int64_t n) {
    const ts_quant_traits *q = ts_quant_traits_of(w_type);
    TS_ASSERT(q && q->vec_dot);
    return q->vec_dot(w, a, n);
}

int ts_quant_row_scales_finite(ts_dtype type, const void *row, int64_t n) {
    const ts_quant_traits *q = ts_quant_traits_of(type);
    if (!q || !ts_dtype_is_quantized(type)) return 1;
    const size_t bytes = (size_t)ts_dtype_block_bytes(type);
    for (int64_t b = 0; b < n / ts_dtype_block_elems(type); b++)
        for (int j = 0; j < q->n_scales; j++) {
            uint16_t h;
            memcpy(&h, (const char *)row + (size_t)b * bytes + q->scale_at[j], 2);
            if ((h & 0x7c00) == 0x7c00) return 0; /* f16 infinity or NaN */
        }
    return 1;
}
