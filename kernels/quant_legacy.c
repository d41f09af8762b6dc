/*
 * quant_legacy.c — the legacy block types (32 elements): Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL
 * and the activation types Q8_0/Q8_1: dequantization, quantizers and the reference dot products
 * (quant.h states the arithmetic).
 */
#include "kernels/quant_legacy.h"

#include "common/fp16.h"
#include "kernels/quant.h"
#include "kernels/quant_blocks.h"

#include <math.h>
#include <string.h>

const int8_t ts_iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                    1,    13,   25,  38,  53,  69,  89,  113};

static float h2f(uint16_t h) { return ts_f16_to_f32(h); }

/* The 32 signed integer codes of one block of each type, in element order (the value is
 * d * code (+ m)). */
static void codes_q4_0(const void *blk, int8_t c[32]) {
    const ts_block_q4_0 *b = blk;
    for (int i = 0; i < 16; i++) {
        c[i] = (int8_t)((b->qs[i] & 0xF) - 8);
        c[i + 16] = (int8_t)((b->qs[i] >> 4) - 8);
    }
}

static void codes_q4_1(const void *blk, int8_t c[32]) {
    const ts_block_q4_1 *b = blk;
    for (int i = 0; i < 16; i++) {
        c[i] = (int8_t)(b->qs[i] & 0xF);
        c[i + 16] = (int8_t)(b->qs[i] >> 4);
    }
}

static uint32_t qh_bits(const uint8_t qh[4]) {
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

static void codes_q5(const uint8_t qs[16], const uint8_t qh[4], int offset, int8_t c[32]) {
    const uint32_t h = qh_bits(qh);
    for (int i = 0; i < 16; i++) {
        c[i] = (int8_t)(((qs[i] & 0xF) | ((h >> i) & 1) << 4) - offset);
        c[i + 16] = (int8_t)(((qs[i] >> 4) | ((h >> (i + 16)) & 1) << 4) - offset);
    }
}

static void codes_q5_0(const void *blk, int8_t c[32]) {
    const ts_block_q5_0 *b = blk;
    codes_q5(b->qs, b->qh, 16, c);
}

static void codes_q5_1(const void *blk, int8_t c[32]) {
    const ts_block_q5_1 *b = blk;
    codes_q5(b->qs, b->qh, 0, c);
}

static void codes_q8_0(const void *blk, int8_t c[32]) {
    memcpy(c, ((const ts_block_q8_0 *)blk)->q, 32);
}

static void codes_iq4_nl(const void *blk, int8_t c[32]) {
    const ts_block_iq4_nl *b = blk;
    for (int i = 0; i < 16; i++) {
        c[i] = ts_iq4nl_values[b->qs[i] & 0xF];
        c[i + 16] = ts_iq4nl_values[b->qs[i] >> 4];
    }
}

/* Per type: its codes, block bytes, and where its f16 d and m (0 = none) are. */
typedef struct {
    void (*codes)(const void *blk, int8_t c[32]);
    int bytes;
    int has_min;
} legacy_type;

static const legacy_type *legacy(ts_dtype t) {
    static const legacy_type q4_0 = {codes_q4_0, 18, 0}, q4_1 = {codes_q4_1, 20, 1},
                             q5_0 = {codes_q5_0, 22, 0}, q5_1 = {codes_q5_1, 24, 1},
                             q8_0 = {codes_q8_0, 34, 0}, iq4 = {codes_iq4_nl, 18, 0};
    switch (t) {
    case TS_DTYPE_Q4_0: return &q4_0;
    case TS_DTYPE_Q4_1: return &q4_1;
    case TS_DTYPE_Q5_0: return &q5_0;
    case TS_DTYPE_Q5_1: return &q5_1;
    case TS_DTYPE_Q8_0: return &q8_0;
    case TS_DTYPE_IQ4_NL: return &iq4;
    default: return NULL;
    }
}

/* Every legacy block starts with its f16 d, then (Q4_1, Q5_1) its f16 m. */
static float block_d(const void *blk) {
    uint16_t d;
    memcpy(&d, blk, 2);
    return h2f(d);
}

static float block_m(const void *blk) {
    uint16_t m;
    memcpy(&m, (const char *)blk + 2, 2);
    return h2f(m);
}

void ts_legacy_to_float(ts_dtype t, const void *src, float *dst, int64_t n) {
    const legacy_type *lt = legacy(t);
    for (int64_t b = 0; b < n / TS_QK; b++) {
        const char *blk = (const char *)src + (size_t)b * (size_t)lt->bytes;
        int8_t c[32];
        lt->codes(blk, c);
        const float d = block_d(blk), m = lt->has_min ? block_m(blk) : 0.0f;
        for (int i = 0; i < TS_QK; i++)
            dst[b * TS_QK + i] = lt->has_min ? d * (float)c[i] + m : d * (float)c[i];
    }
}

float ts_legacy_vec_dot(ts_dtype t, const void *w, const void *a, int64_t n) {
    const legacy_type *lt = legacy(t);
    const int q8_1 = lt->has_min; /* Q4_1/Q5_1 pair with Q8_1 activations */
    const size_t a_bytes = q8_1 ? sizeof(ts_block_q8_1) : sizeof(ts_block_q8_0);
    float acc[8] = {0}, accm = 0.0f;
    for (int64_t b = 0; b < n / TS_QK; b++) {
        const char *wb = (const char *)w + (size_t)b * (size_t)lt->bytes;
        const char *ab = (const char *)a + (size_t)b * a_bytes;
        const int8_t *aq = q8_1 ? ((const ts_block_q8_1 *)ab)->q : ((const ts_block_q8_0 *)ab)->q;
        int8_t c[32];
        lt->codes(wb, c);
        const float scale = block_d(wb) * block_d(ab);
        for (int l = 0; l < 8; l++) {
            int p = 0;
            for (int j = 4 * l; j < 4 * l + 4; j++)
                p += (int)c[j] * (int)aq[j];
            acc[l] = fmaf(scale, (float)p, acc[l]);
        }
        if (q8_1) accm = fmaf(block_m(wb), h2f(((const ts_block_q8_1 *)ab)->s), accm);
    }
    return ts_quant_lanes_sum(acc) + accm;
}

/* ---- quantizers ---- */

void ts_quantize_q8_0_weights(const float *x, void *dst, int64_t n) {
    ts_block_q8_0 *y = dst;
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

void ts_quantize_q4_0_weights(const float *x, void *dst, int64_t n) {
    ts_block_q4_0 *y = dst;
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

/* One activation block as llama.cpp's x86 quantize_row_q8_0/q8_1: codes into q, returns the
 * float d (before its f16 rounding). */
static float act_block(const float *x, int8_t q[32]) {
    float amax = 0.0f;
    for (int i = 0; i < TS_QK; i++) amax = fmaxf(amax, fabsf(x[i]));
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    for (int i = 0; i < TS_QK; i++) q[i] = (int8_t)rintf(x[i] * id);
    return amax / 127.0f;
}

void ts_quantize_q8_0_act(const float *x, void *dst, int64_t n) {
    ts_block_q8_0 *y = dst;
    for (int64_t b = 0; b < n / TS_QK; b++)
        y[b].d = ts_f32_to_f16(act_block(x + b * TS_QK, y[b].q));
}

void ts_quantize_q8_1_act(const float *x, void *dst, int64_t n) {
    ts_block_q8_1 *y = dst;
    for (int64_t b = 0; b < n / TS_QK; b++) {
        const float d = act_block(x + b * TS_QK, y[b].q);
        int sum = 0;
        for (int i = 0; i < TS_QK; i++) sum += y[b].q[i];
        y[b].d = ts_f32_to_f16(d);
        y[b].s = ts_f32_to_f16(d * (float)sum);
    }
}

void ts_q8_1_to_float(const void *src, float *dst, int64_t n) {
    const ts_block_q8_1 *b = src;
    for (int64_t k = 0; k < n / TS_QK; k++)
        for (int i = 0; i < TS_QK; i++) dst[k * TS_QK + i] = h2f(b[k].d) * (float)b[k].q[i];
}
