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

#include "kernels/quant_blocks.h"

#include <immintrin.h>
#include <string.h>

static inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

/* 32 codes from 16 bytes of nibbles: element i from the low nibble of byte i, i + 16 from the
 * high nibble. */
static inline __m256i nibbles_32(const uint8_t *qs) {
    const __m128i x = _mm_loadu_si128((const __m128i *)qs);
    const __m128i m = _mm_set1_epi8(0x0F);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(x, 4), m), _mm_and_si128(x, m));
}

/* 0x10 in byte j where bit j of the 32-bit little-endian qh is set. */
static inline __m256i high_bits_32(const uint8_t qh[4]) {
    uint32_t bits;
    memcpy(&bits, qh, 4);
    const __m256i which = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                            0x0101010101010101, 0x0000000000000000);
    const __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), which);
    const __m256i mask = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, mask), mask);
    return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

static inline __m256i sum_pairs_i16(__m256i p16) {
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

/* Signed codes c times signed activations a: int32 lane l = sum of elements 4l .. 4l + 3. */
static inline __m256i dot_i8(__m256i c, __m256i a) {
    return sum_pairs_i16(_mm256_maddubs_epi16(_mm256_sign_epi8(c, c), _mm256_sign_epi8(a, c)));
}

/* Unsigned codes (< 128) times signed activations. */
static inline __m256i dot_u8(__m256i c, __m256i a) {
    return sum_pairs_i16(_mm256_maddubs_epi16(c, a));
}

/* The reference's reduction of the 8 lane accumulators (quant.h). */
static inline float lanes_sum(__m256 acc) {
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}

static inline __m256 lane_fma(float scale, __m256i p, __m256 acc) {
    return _mm256_fmadd_ps(_mm256_set1_ps(scale), _mm256_cvtepi32_ps(p), acc);
}

static inline __m256i load_i8(const int8_t *q) { return _mm256_loadu_si256((const __m256i *)q); }

/* ---- legacy types (Q8_0 or Q8_1 activations) ---- */

static float dot_q4_0(const void *vw, const void *va, int64_t n) {
    const ts_block_q4_0 *w = vw;
    const ts_block_q8_0 *a = va;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / TS_QK; b++) {
        const __m256i c = _mm256_sub_epi8(nibbles_32(w[b].qs), _mm256_set1_epi8(8));
        acc = lane_fma(h2f(w[b].d) * h2f(a[b].d), dot_i8(c, load_i8(a[b].q)), acc);
    }
    return lanes_sum(acc) + 0.0f;
}

static float dot_q8_0(const void *vw, const void *va, int64_t n) {
    const ts_block_q8_0 *w = vw;
    const ts_block_q8_0 *a = va;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / TS_QK; b++)
        acc = lane_fma(h2f(w[b].d) * h2f(a[b].d), dot_i8(load_i8(w[b].q), load_i8(a[b].q)), acc);
    return lanes_sum(acc) + 0.0f;
}

static float dot_q5_0(const void *vw, const void *va, int64_t n) {
    const ts_block_q5_0 *w = vw;
    const ts_block_q8_0 *a = va;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / TS_QK; b++) {
        const __m256i c = _mm256_sub_epi8(_mm256_or_si256(nibbles_32(w[b].qs), high_bits_32(w[b].qh)),
                                          _mm256_set1_epi8(16));
        acc = lane_fma(h2f(w[b].d) * h2f(a[b].d), dot_i8(c, load_i8(a[b].q)), acc);
    }
    return lanes_sum(acc) + 0.0f;
}

static float dot_iq4_nl(const void *vw, const void *va, int64_t n) {
    const ts_block_iq4_nl *w = vw;
    const ts_block_q8_0 *a = va;
    const __m128i t = _mm_loadu_si128((const __m128i *)ts_iq4nl_values);
    const __m256i table = _mm256_set_m128i(t, t);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / TS_QK; b++) {
        const __m256i c = _mm256_shuffle_epi8(table, nibbles_32(w[b].qs));
        acc = lane_fma(h2f(w[b].d) * h2f(a[b].d), dot_i8(c, load_i8(a[b].q)), acc);
    }
    return lanes_sum(acc) + 0.0f;
}

static float dot_q4_1(const void *vw, const void *va, int64_t n) {
    const ts_block_q4_1 *w = vw;
    const ts_block_q8_1 *a = va;
    __m256 acc = _mm256_setzero_ps();
    float accm = 0.0f;
    for (int64_t b = 0; b < n / TS_QK; b++) {
        acc = lane_fma(h2f(w[b].d) * h2f(a[b].d), dot_u8(nibbles_32(w[b].qs), load_i8(a[b].q)),
                       acc);
        accm = __builtin_fmaf(h2f(w[b].m), h2f(a[b].s), accm);
    }
    return lanes_sum(acc) + accm;
}

static float dot_q5_1(const void *vw, const void *va, int64_t n) {
    const ts_block_q5_1 *w = vw;
    const ts_block_q8_1 *a = va;
    __m256 acc = _mm256_setzero_ps();
    float accm = 0.0f;
    for (int64_t b = 0; b < n / TS_QK; b++) {
        const __m256i c = _mm256_or_si256(nibbles_32(w[b].qs), high_bits_32(w[b].qh));
        acc = lane_fma(h2f(w[b].d) * h2f(a[b].d), dot_u8(c, load_i8(a[b].q)), acc);
        accm = __builtin_fmaf(h2f(w[b].m), h2f(a[b].s), accm);
    }
    return lanes_sum(acc) + accm;
}

/* ---- K-quants (Q8_K activations) ---- */

static inline int32_t hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

/* The reference's float steps of one super-block. */
static inline float kquant_step(float acc, float d, float dmin, float ad, int32_t isum,
                                int32_t msum) {
    acc = __builtin_fmaf(d * ad, (float)isum, acc);
    return __builtin_fmaf(-dmin * ad, (float)msum, acc);
}

/* Q4_K and Q5_K (qh NULL for Q4_K): 4 pieces of 64 elements, the low nibbles the first 32 with
 * scale 2p, the high nibbles the next 32 with scale 2p + 1. */
static inline float dot_q45_K(const uint16_t *dd, const uint8_t *scales, const uint8_t *qs,
                              const uint8_t *qh, const ts_block_q8_K *a, float acc) {
    uint8_t sc[8], mn[8];
    for (int j = 0; j < 8; j++)
        ts_q4k_scale_min(j, scales, &sc[j], &mn[j]);
    int32_t msum = 0;
    for (int j = 0; j < 8; j++)
        msum += (int32_t)mn[j] * ((int32_t)a->bsums[2 * j] + (int32_t)a->bsums[2 * j + 1]);
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    const __m256i hbits = qh ? _mm256_loadu_si256((const __m256i *)qh) : _mm256_setzero_si256();
    __m256i isum = _mm256_setzero_si256();
    for (int p = 0; p < 4; p++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * p));
        __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        if (qh) {
            const __m256i hl = _mm256_and_si256(_mm256_srli_epi16(hbits, 2 * p), one);
            const __m256i hh = _mm256_and_si256(_mm256_srli_epi16(hbits, 2 * p + 1), one);
            lo = _mm256_or_si256(lo, _mm256_slli_epi16(hl, 4));
            hi = _mm256_or_si256(hi, _mm256_slli_epi16(hh, 4));
        }
        const __m256i plo = _mm256_maddubs_epi16(lo, load_i8(a->q + 64 * p));
        const __m256i phi = _mm256_maddubs_epi16(hi, load_i8(a->q + 64 * p + 32));
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(plo, _mm256_set1_epi16(sc[2 * p])));
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(phi, _mm256_set1_epi16(sc[2 * p + 1])));
    }
    return kquant_step(acc, h2f(dd[0]), h2f(dd[1]), a->d, hsum_i32(isum), msum);
}

static float dot_q4_K(const void *vw, const void *va, int64_t n) {
    const ts_block_q4_K *w = vw;
    const ts_block_q8_K *a = va;
    float acc = 0.0f;
    for (int64_t b = 0; b < n / TS_QK_K; b++) {
        const uint16_t dd[2] = {w[b].d, w[b].dmin};
        acc = dot_q45_K(dd, w[b].scales, w[b].qs, NULL, &a[b], acc);
    }
    return acc;
}

static float dot_q5_K(const void *vw, const void *va, int64_t n) {
    const ts_block_q5_K *w = vw;
    const ts_block_q8_K *a = va;
    float acc = 0.0f;
    for (int64_t b = 0; b < n / TS_QK_K; b++) {
        const uint16_t dd[2] = {w[b].d, w[b].dmin};
        acc = dot_q45_K(dd, w[b].scales, w[b].qs, w[b].qh, &a[b], acc);
    }
    return acc;
}

/* Q6_K: per half h and quarter s, 32 unsigned 6-bit codes; code - 32 is formed as
 * maddubs(code, a) - maddubs(32, a) in int16, then each 16 elements' scale by pmaddwd. */
static float dot_q6_K(const void *vw, const void *va, int64_t n) {
    const ts_block_q6_K *w = vw;
    const ts_block_q8_K *a = va;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3),
                  k32 = _mm256_set1_epi8(32);
    float acc = 0.0f;
    for (int64_t b = 0; b < n / TS_QK_K; b++) {
        __m256i isum = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i ql0 = _mm256_loadu_si256((const __m256i *)(w[b].ql + 64 * h));
            const __m256i ql1 = _mm256_loadu_si256((const __m256i *)(w[b].ql + 64 * h + 32));
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(w[b].qh + 32 * h));
            for (int s = 0; s < 4; s++) {
                const __m256i ql = s & 1 ? ql1 : ql0;
                const __m256i low =
                    _mm256_and_si256(s < 2 ? ql : _mm256_srli_epi16(ql, 4), m4);
                const __m256i high =
                    _mm256_and_si256(_mm256_srli_epi16(qh, 2 * s), m2);
                const __m256i code = _mm256_or_si256(low, _mm256_slli_epi16(high, 4));
                const __m256i act = load_i8(a[b].q + 128 * h + 32 * s);
                const __m256i p16 = _mm256_sub_epi16(_mm256_maddubs_epi16(code, act),
                                                     _mm256_maddubs_epi16(k32, act));
                const int j = 8 * h + 2 * s;
                const __m256i scale = _mm256_set_m128i(_mm_set1_epi16(w[b].scales[j + 1]),
                                                       _mm_set1_epi16(w[b].scales[j]));
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p16, scale));
            }
        }
        acc = kquant_step(acc, h2f(w[b].d), 0.0f, a[b].d, hsum_i32(isum), 0);
    }
    return acc;
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
