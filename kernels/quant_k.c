/*
 * quant_k.c — the K-quants (super-blocks of 256): Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and the
 * activation type Q8_K. Each super-block is unpacked to integer codes with a scale (and a min)
 * per 16 elements (ts_kquant_unpack); dequantization and the reference dot product both read
 * that form, so the bit layouts are spelled once, here.
 *
 * Layouts (GGML's):
 *   Q2_K  scales[16] (low nibble scale, high nibble min, per 16 elements), qs[64]: element
 *         128h + 32s + l (h = 0..1, s = 0..3, l = 0..31) is bits 2s..2s+1 of qs[32h + l].
 *   Q3_K  hmask[32], qs[64], scales[12] (16 6-bit scales, ts_q3k_scales): the low 2 bits as in
 *         Q2_K, the third bit of element 128h + 32s + l is bit 4h + s of hmask[l]; code =
 *         low - (bit ? 0 : 4), scale - 32.
 *   Q4_K  d, dmin, scales[12] (8 x 6-bit scale and min per 32 elements, ts_q4k_scale_min),
 *         qs[128]: element 64p + l is the low nibble of qs[32p + l], 64p + 32 + l its high one.
 *   Q5_K  as Q4_K plus qh[32]: bit 4 of element 64p + l is bit 2p of qh[l], of 64p + 32 + l
 *         bit 2p + 1.
 *   Q6_K  ql[128], qh[64], scales[16] (int8, per 16 elements), d: element 128h + 32s + l has
 *         low 4 bits from ql[64h + 32(s & 1) + l] (low nibble for s < 2, high otherwise) and
 *         high 2 bits from bits 2s..2s+1 of qh[32h + l]; code - 32.
 */
#include "kernels/quant_k.h"

#include "common/fp16.h"
#include "kernels/quant.h"
#include "kernels/quant_blocks.h"

#include <math.h>
#include <string.h>

static float h2f(uint16_t h) { return ts_f16_to_f32(h); }

static void unpack_q2_K(const ts_block_q2_K *b, ts_kquant_block *o) {
    for (int j = 0; j < 16; j++) {
        o->scale[j] = b->scales[j] & 0xF;
        o->min[j] = b->scales[j] >> 4;
    }
    for (int h = 0; h < 2; h++)
        for (int s = 0; s < 4; s++)
            for (int l = 0; l < 32; l++)
                o->code[128 * h + 32 * s + l] = (int8_t)((b->qs[32 * h + l] >> (2 * s)) & 3);
    o->d = h2f(b->d);
    o->dmin = h2f(b->dmin);
}

static void unpack_q3_K(const ts_block_q3_K *b, ts_kquant_block *o) {
    int8_t sc[16];
    ts_q3k_scales(b->scales, sc);
    for (int j = 0; j < 16; j++) {
        o->scale[j] = sc[j];
        o->min[j] = 0;
    }
    for (int h = 0; h < 2; h++)
        for (int s = 0; s < 4; s++)
            for (int l = 0; l < 32; l++) {
                int low = (b->qs[32 * h + l] >> (2 * s)) & 3;
                int high = (b->hmask[l] >> (4 * h + s)) & 1;
                o->code[128 * h + 32 * s + l] = (int8_t)(low - (high ? 0 : 4));
            }
    o->d = h2f(b->d);
    o->dmin = 0.0f;
}

static void unpack_q45_K(const uint8_t scales[12], const uint8_t *qs, const uint8_t *qh,
                         ts_kquant_block *o) {
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        ts_q4k_scale_min(j, scales, &sc, &m);
        o->scale[2 * j] = o->scale[2 * j + 1] = sc;
        o->min[2 * j] = o->min[2 * j + 1] = m;
    }
    for (int p = 0; p < 4; p++)
        for (int l = 0; l < 32; l++) {
            int lo = qs[32 * p + l] & 0xF, hi = qs[32 * p + l] >> 4;
            if (qh) {
                lo |= ((qh[l] >> (2 * p)) & 1) << 4;
                hi |= ((qh[l] >> (2 * p + 1)) & 1) << 4;
            }
            o->code[64 * p + l] = (int8_t)lo;
            o->code[64 * p + 32 + l] = (int8_t)hi;
        }
}

static void unpack_q6_K(const ts_block_q6_K *b, ts_kquant_block *o) {
    for (int j = 0; j < 16; j++) {
        o->scale[j] = b->scales[j];
        o->min[j] = 0;
    }
    for (int h = 0; h < 2; h++)
        for (int s = 0; s < 4; s++)
            for (int l = 0; l < 32; l++) {
                uint8_t ql = b->ql[64 * h + 32 * (s & 1) + l];
                int low = s < 2 ? ql & 0xF : ql >> 4;
                int high = (b->qh[32 * h + l] >> (2 * s)) & 3;
                o->code[128 * h + 32 * s + l] = (int8_t)((low | high << 4) - 32);
            }
    o->d = h2f(b->d);
    o->dmin = 0.0f;
}

void ts_kquant_unpack(ts_dtype t, const void *blk, ts_kquant_block *o) {
    switch (t) {
    case TS_DTYPE_Q2_K: unpack_q2_K(blk, o); return;
    case TS_DTYPE_Q3_K: unpack_q3_K(blk, o); return;
    case TS_DTYPE_Q4_K: {
        const ts_block_q4_K *b = blk;
        unpack_q45_K(b->scales, b->qs, NULL, o);
        o->d = h2f(b->d);
        o->dmin = h2f(b->dmin);
        return;
    }
    case TS_DTYPE_Q5_K: {
        const ts_block_q5_K *b = blk;
        unpack_q45_K(b->scales, b->qs, b->qh, o);
        o->d = h2f(b->d);
        o->dmin = h2f(b->dmin);
        return;
    }
    case TS_DTYPE_Q6_K: unpack_q6_K(blk, o); return;
    default: memset(o, 0, sizeof *o); return;
    }
}

/* GGML computes each sub-block's factors d1 = d * scale, m1 = dmin * min (both exact) and then
 * x = d1 * code - m1: one rounding, which these reproduce. */
void ts_kquant_to_float(ts_dtype t, const void *src, float *dst, int64_t n) {
    const size_t bytes = (size_t)ts_dtype_block_bytes(t);
    for (int64_t b = 0; b < n / TS_QK_K; b++) {
        ts_kquant_block u;
        ts_kquant_unpack(t, (const char *)src + (size_t)b * bytes, &u);
        for (int j = 0; j < TS_QK_K; j++) {
            const float d1 = u.d * (float)u.scale[j / 16], m1 = u.dmin * (float)u.min[j / 16];
            dst[b * TS_QK_K + j] = d1 * (float)u.code[j] - m1;
        }
    }
}

float ts_kquant_vec_dot(ts_dtype t, const void *w, const void *a, int64_t n) {
    const size_t bytes = (size_t)ts_dtype_block_bytes(t);
    const ts_block_q8_K *y = a;
    float acc = 0.0f;
    for (int64_t b = 0; b < n / TS_QK_K; b++) {
        ts_kquant_block u;
        ts_kquant_unpack(t, (const char *)w + (size_t)b * bytes, &u);
        int32_t isum = 0, msum = 0;
        for (int j = 0; j < TS_QK_K / 16; j++) {
            int32_t s = 0;
            for (int l = 0; l < 16; l++)
                s += (int32_t)u.code[16 * j + l] * (int32_t)y[b].q[16 * j + l];
            isum += s * u.scale[j];
            msum += (int32_t)y[b].bsums[j] * u.min[j];
        }
        acc = fmaf(u.d * y[b].d, (float)isum, acc);
        acc = fmaf(-u.dmin * y[b].d, (float)msum, acc);
    }
    return acc;
}

/* GGML's nearest_int: round to nearest, ties to even, for |x| < 2^22. */
static int nearest_int(float f) {
    return (int)rintf(f);
}

void ts_quantize_q8_K_act(const float *x, void *dst, int64_t n) {
    ts_block_q8_K *y = dst;
    for (int64_t b = 0; b < n / TS_QK_K; b++) {
        const float *xb = x + b * TS_QK_K;
        float max = 0.0f, amax = 0.0f;
        for (int j = 0; j < TS_QK_K; j++) {
            float ax = fabsf(xb[j]);
            if (ax > amax) {
                amax = ax;
                max = xb[j];
            }
        }
        memset(&y[b], 0, sizeof y[b]);
        if (amax == 0.0f) continue;
        const float iscale = -127.0f / max;
        for (int j = 0; j < TS_QK_K; j++) {
            int v = nearest_int(iscale * xb[j]);
            y[b].q[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int j = 0; j < TS_QK_K / 16; j++) {
            int sum = 0;
            for (int l = 0; l < 16; l++) sum += y[b].q[16 * j + l];
            y[b].bsums[j] = (int16_t)sum;
        }
        y[b].d = 1.0f / iscale;
    }
}

void ts_q8_K_to_float(const void *src, float *dst, int64_t n) {
    const ts_block_q8_K *b = src;
    for (int64_t k = 0; k < n / TS_QK_K; k++)
        for (int i = 0; i < TS_QK_K; i++) dst[k * TS_QK_K + i] = b[k].d * (float)b[k].q[i];
}
