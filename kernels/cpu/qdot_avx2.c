/*
 * qdot_avx2.c — the quantized dot products of kernels/quant.h with AVX2 integer arithmetic
 * (compiled with -mavx2 -mfma -mf16c; run only where the CPU has them).
 *
 * The integer sums are formed with pmaddubsw (unsigned x signed byte pairs into int16, never
 * saturating for these ranges: at most 2 * 63 * 127) and pmaddwd (pairs of int16 into int32),
 * so a vector's int32 lane l holds the exact sum of elements 4l .. 4l + 3 of its 32 — the
 * reference's lane partial sums. The float steps are the reference's: lane-wise FMAs for the
 * legacy types, one scalar FMA pair per super-block for the K-quants.
 */
#include "kernels/cpu/qdot.h"

#include "kernels/cpu/qdot_simd.h"
#include "kernels/quant_blocks.h"

#include <immintrin.h>
#include <string.h>

static inline __m256i sum_pairs_i16(__m256i p16) {
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

/* Unsigned codes (< 128) times signed activations. */
static inline __m256i dot_u8(__m256i c, __m256i a) {
    return sum_pairs_i16(_mm256_maddubs_epi16(c, a));
}

static inline __m256 lane_fma(float scale, __m256i p, __m256 acc) {
    return _mm256_fmadd_ps(_mm256_set1_ps(scale), _mm256_cvtepi32_ps(p), acc);
}

/* ---- legacy types (Q8_0 or Q8_1 activations) ----
 * One template for every legacy type and for 1 or 4 activation rows: a block's codes are
 * unpacked once and multiplied with each row; per row the operations are those of the
 * single-row dot, so dot4's outputs are dot's bits. */

/* Block b's 32 codes as bytes: signed for Q4_0/Q5_0/Q8_0/IQ4_NL, unsigned (< 32) for Q4_1/Q5_1. */
TS_AI __m256i legacy_codes(ts_dtype t, const void *w, int64_t b, __m256i iq4_table) {
    switch (t) {
    case TS_DTYPE_Q4_0:
        return _mm256_sub_epi8(ts_qd_nibbles_32(((const ts_block_q4_0 *)w)[b].qs),
                               _mm256_set1_epi8(8));
    case TS_DTYPE_Q4_1: return ts_qd_nibbles_32(((const ts_block_q4_1 *)w)[b].qs);
    case TS_DTYPE_Q5_0: {
        const ts_block_q5_0 *x = (const ts_block_q5_0 *)w + b;
        return _mm256_sub_epi8(_mm256_or_si256(ts_qd_nibbles_32(x->qs), ts_qd_high_bits_32(x->qh)),
                               _mm256_set1_epi8(16));
    }
    case TS_DTYPE_Q5_1: {
        const ts_block_q5_1 *x = (const ts_block_q5_1 *)w + b;
        return _mm256_or_si256(ts_qd_nibbles_32(x->qs), ts_qd_high_bits_32(x->qh));
    }
    case TS_DTYPE_Q8_0: return ts_qd_load(((const ts_block_q8_0 *)w)[b].q);
    default: /* IQ4_NL */
        return _mm256_shuffle_epi8(iq4_table, ts_qd_nibbles_32(((const ts_block_iq4_nl *)w)[b].qs));
    }
}

TS_AI size_t legacy_bytes(ts_dtype t) {
    switch (t) {
    case TS_DTYPE_Q4_0: return sizeof(ts_block_q4_0);
    case TS_DTYPE_Q4_1: return sizeof(ts_block_q4_1);
    case TS_DTYPE_Q5_0: return sizeof(ts_block_q5_0);
    case TS_DTYPE_Q5_1: return sizeof(ts_block_q5_1);
    case TS_DTYPE_Q8_0: return sizeof(ts_block_q8_0);
    default: return sizeof(ts_block_iq4_nl);
    }
}

TS_AI void legacy_dot(ts_dtype t, const void *w, const void *a, size_t a_stride, int64_t n, int nt,
                      float *out) {
    const int with_min = t == TS_DTYPE_Q4_1 || t == TS_DTYPE_Q5_1; /* Q8_1 activations */
    const size_t wb = legacy_bytes(t),
                 ab = with_min ? sizeof(ts_block_q8_1) : sizeof(ts_block_q8_0);
    const __m128i iq4 = _mm_loadu_si128((const __m128i *)ts_iq4nl_values);
    const __m256i iq4_table = _mm256_set_m128i(iq4, iq4);
    __m256 acc[4];
    float accm[4];
    for (int j = 0; j < nt; j++) {
        acc[j] = _mm256_setzero_ps();
        accm[j] = 0.0f;
    }
    for (int64_t b = 0; b < n / TS_QK; b++) {
        const char *blk = (const char *)w + (size_t)b * wb;
        uint16_t dh, mh = 0;
        memcpy(&dh, blk, 2);
        if (with_min) memcpy(&mh, blk + 2, 2);
        const float dw = ts_qd_h2f(dh), mw = with_min ? ts_qd_h2f(mh) : 0.0f;
        const __m256i c = legacy_codes(t, w, b, iq4_table);
        const __m256i c_abs = with_min ? c : _mm256_sign_epi8(c, c);
        for (int j = 0; j < nt; j++) {
            const char *ablk = (const char *)a + (size_t)j * a_stride + (size_t)b * ab;
            uint16_t da;
            memcpy(&da, ablk, 2);
            const __m256i q = ts_qd_load((const int8_t *)(ablk + (with_min ? 4 : 2)));
            const __m256i p =
                with_min ? dot_u8(c, q)
                         : sum_pairs_i16(_mm256_maddubs_epi16(c_abs, _mm256_sign_epi8(q, c)));
            acc[j] = lane_fma(dw * ts_qd_h2f(da), p, acc[j]);
            if (with_min) {
                uint16_t sa;
                memcpy(&sa, ablk + 2, 2);
                accm[j] = __builtin_fmaf(mw, ts_qd_h2f(sa), accm[j]);
            }
        }
    }
    for (int j = 0; j < nt; j++)
        out[j] = ts_qd_lanes_sum(acc[j]) + accm[j];
}

#define LEGACY(name, T)                                                                            \
    static float dot_##name(const void *w, const void *a, int64_t n) {                             \
        float r;                                                                                   \
        legacy_dot(T, w, a, 0, n, 1, &r);                                                          \
        return r;                                                                                  \
    }                                                                                              \
    static void dot4_##name(const void *w, const void *a, size_t s, int64_t n, float out[4]) {     \
        legacy_dot(T, w, a, s, n, 4, out);                                                         \
    }
LEGACY(q4_0, TS_DTYPE_Q4_0)
LEGACY(q4_1, TS_DTYPE_Q4_1)
LEGACY(q5_0, TS_DTYPE_Q5_0)
LEGACY(q5_1, TS_DTYPE_Q5_1)
LEGACY(q8_0, TS_DTYPE_Q8_0)
LEGACY(iq4_nl, TS_DTYPE_IQ4_NL)
#undef LEGACY

/* ---- K-quants (Q8_K activations) ---- */

/* The reference's float steps of one super-block. */
static inline float kquant_step(float acc, float d, float dmin, float ad, int32_t isum,
                                int32_t msum) {
    acc = __builtin_fmaf(d * ad, (float)isum, acc);
    return __builtin_fmaf(-dmin * ad, (float)msum, acc);
}

/* Q4_K and Q5_K: 4 pieces of 64 elements, the low nibbles the first 32 with scale 2p, the high
 * nibbles the next 32 with scale 2p + 1; each piece's codes unpacked once for the nt rows. */
TS_AI void q45_K_dot(ts_dtype t, const void *w, const void *a, size_t a_stride, int64_t n, int nt,
                     float *out) {
    const int five = t == TS_DTYPE_Q5_K;
    const size_t wb = five ? sizeof(ts_block_q5_K) : sizeof(ts_block_q4_K);
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int64_t b = 0; b < n / TS_QK_K; b++) {
        const char *blk = (const char *)w + (size_t)b * wb;
        const ts_block_q4_K *k4 = (const ts_block_q4_K *)blk;
        const ts_block_q5_K *k5 = (const ts_block_q5_K *)blk;
        const uint8_t *scales = five ? k5->scales : k4->scales;
        const uint8_t *qs = five ? k5->qs : k4->qs;
        uint8_t sc[8], mn[8];
        for (int j = 0; j < 8; j++)
            ts_q4k_scale_min(j, scales, &sc[j], &mn[j]);
        const ts_block_q8_K *y[4];
        __m256i isum[4];
        for (int j = 0; j < nt; j++) {
            y[j] = (const ts_block_q8_K *)((const char *)a + (size_t)j * a_stride) + b;
            isum[j] = _mm256_setzero_si256();
        }
        const __m256i hbits =
            five ? _mm256_loadu_si256((const __m256i *)k5->qh) : _mm256_setzero_si256();
        for (int p = 0; p < 4; p++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * p));
            __m256i lo = _mm256_and_si256(q, m4),
                    hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            if (five) {
                const __m256i hl = _mm256_and_si256(_mm256_srli_epi16(hbits, 2 * p), one);
                const __m256i hh = _mm256_and_si256(_mm256_srli_epi16(hbits, 2 * p + 1), one);
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(hl, 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(hh, 4));
            }
            const __m256i slo = _mm256_set1_epi16(sc[2 * p]),
                          shi = _mm256_set1_epi16(sc[2 * p + 1]);
            for (int j = 0; j < nt; j++) {
                const __m256i plo = _mm256_maddubs_epi16(lo, ts_qd_load(y[j]->q + 64 * p));
                const __m256i phi = _mm256_maddubs_epi16(hi, ts_qd_load(y[j]->q + 64 * p + 32));
                isum[j] = _mm256_add_epi32(isum[j], _mm256_madd_epi16(plo, slo));
                isum[j] = _mm256_add_epi32(isum[j], _mm256_madd_epi16(phi, shi));
            }
        }
        const float d = ts_qd_h2f(k4->d), dmin = ts_qd_h2f(k4->dmin); /* the same place in Q5_K */
        for (int j = 0; j < nt; j++) {
            int32_t msum = 0;
            for (int s = 0; s < 8; s++)
                msum += (int32_t)mn[s] *
                        ((int32_t)y[j]->bsums[2 * s] + (int32_t)y[j]->bsums[2 * s + 1]);
            acc[j] = kquant_step(acc[j], d, dmin, y[j]->d, ts_qd_hsum_i32(isum[j]), msum);
        }
    }
    for (int j = 0; j < nt; j++)
        out[j] = acc[j];
}

/* Q6_K: per half h and quarter s, 32 unsigned 6-bit codes; code - 32 is formed as
 * maddubs(code, a) - maddubs(32, a) in int16, then each 16 elements' scale by pmaddwd. */
TS_AI void q6_K_dot(const void *w, const void *a, size_t a_stride, int64_t n, int nt, float *out) {
    const ts_block_q6_K *x = w;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3), k32 = _mm256_set1_epi8(32);
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int64_t b = 0; b < n / TS_QK_K; b++) {
        const ts_block_q8_K *y[4];
        __m256i isum[4];
        for (int j = 0; j < nt; j++) {
            y[j] = (const ts_block_q8_K *)((const char *)a + (size_t)j * a_stride) + b;
            isum[j] = _mm256_setzero_si256();
        }
        for (int h = 0; h < 2; h++) {
            const __m256i ql0 = _mm256_loadu_si256((const __m256i *)(x[b].ql + 64 * h));
            const __m256i ql1 = _mm256_loadu_si256((const __m256i *)(x[b].ql + 64 * h + 32));
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(x[b].qh + 32 * h));
            for (int s = 0; s < 4; s++) {
                const __m256i ql = s & 1 ? ql1 : ql0;
                const __m256i low = _mm256_and_si256(s < 2 ? ql : _mm256_srli_epi16(ql, 4), m4);
                const __m256i high = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * s), m2);
                const __m256i code = _mm256_or_si256(low, _mm256_slli_epi16(high, 4));
                const int k = 8 * h + 2 * s;
                const __m256i scale = _mm256_set_m128i(_mm_set1_epi16(x[b].scales[k + 1]),
                                                       _mm_set1_epi16(x[b].scales[k]));
                for (int j = 0; j < nt; j++) {
                    const __m256i act = ts_qd_load(y[j]->q + 128 * h + 32 * s);
                    const __m256i p16 = _mm256_sub_epi16(_mm256_maddubs_epi16(code, act),
                                                         _mm256_maddubs_epi16(k32, act));
                    isum[j] = _mm256_add_epi32(isum[j], _mm256_madd_epi16(p16, scale));
                }
            }
        }
        for (int j = 0; j < nt; j++)
            acc[j] =
                kquant_step(acc[j], ts_qd_h2f(x[b].d), 0.0f, y[j]->d, ts_qd_hsum_i32(isum[j]), 0);
    }
    for (int j = 0; j < nt; j++)
        out[j] = acc[j];
}

static float dot_q4_K(const void *w, const void *a, int64_t n) {
    float r;
    q45_K_dot(TS_DTYPE_Q4_K, w, a, 0, n, 1, &r);
    return r;
}
static void dot4_q4_K(const void *w, const void *a, size_t s, int64_t n, float out[4]) {
    q45_K_dot(TS_DTYPE_Q4_K, w, a, s, n, 4, out);
}
static float dot_q5_K(const void *w, const void *a, int64_t n) {
    float r;
    q45_K_dot(TS_DTYPE_Q5_K, w, a, 0, n, 1, &r);
    return r;
}
static void dot4_q5_K(const void *w, const void *a, size_t s, int64_t n, float out[4]) {
    q45_K_dot(TS_DTYPE_Q5_K, w, a, s, n, 4, out);
}
static float dot_q6_K(const void *w, const void *a, int64_t n) {
    float r;
    q6_K_dot(w, a, 0, n, 1, &r);
    return r;
}
static void dot4_q6_K(const void *w, const void *a, size_t s, int64_t n, float out[4]) {
    q6_K_dot(w, a, s, n, 4, out);
}

ts_vec_dot_fn ts_qdot_avx2(ts_dtype type) {
    switch (type) {
    case TS_DTYPE_Q4_0: return dot_q4_0;
    case TS_DTYPE_Q4_1: return dot_q4_1;
    case TS_DTYPE_Q5_0: return dot_q5_0;
    case TS_DTYPE_Q5_1: return dot_q5_1;
    case TS_DTYPE_Q8_0: return dot_q8_0;
    case TS_DTYPE_IQ4_NL: return dot_iq4_nl;
    case TS_DTYPE_Q4_K: return dot_q4_K;
    case TS_DTYPE_Q5_K: return dot_q5_K;
    case TS_DTYPE_Q6_K: return dot_q6_K;
    default: return NULL;
    }
}

ts_vec_dot4_fn ts_qdot4_avx2(ts_dtype type) {
    switch (type) {
    case TS_DTYPE_Q4_0: return dot4_q4_0;
    case TS_DTYPE_Q4_1: return dot4_q4_1;
    case TS_DTYPE_Q5_0: return dot4_q5_0;
    case TS_DTYPE_Q5_1: return dot4_q5_1;
    case TS_DTYPE_Q8_0: return dot4_q8_0;
    case TS_DTYPE_IQ4_NL: return dot4_iq4_nl;
    case TS_DTYPE_Q4_K: return dot4_q4_K;
    case TS_DTYPE_Q5_K: return dot4_q5_K;
    case TS_DTYPE_Q6_K: return dot4_q6_K;
    default: return NULL;
    }
}
