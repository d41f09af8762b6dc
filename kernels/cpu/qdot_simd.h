/*
 * qdot_simd.h — the small AVX2 pieces shared by the quantized dot kernels (qdot_avx2.c and
 * qgemm_vnni.c): unpacking codes from their bytes and the reference's reductions. Only for
 * files compiled with at least -mavx2 -mfma -mf16c.
 */
#ifndef TS_KERNELS_CPU_QDOT_SIMD_H
#define TS_KERNELS_CPU_QDOT_SIMD_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#define TS_AI static inline __attribute__((always_inline))

TS_AI float ts_qd_h2f(uint16_t h) {
    return _cvtsh_ss(h);
}

/* The f16 at p (unaligned). */
TS_AI float ts_qd_f16_at(const void *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* 32 codes from 16 bytes of nibbles: element i from the low nibble of byte i, i + 16 from the
 * high nibble. */
TS_AI __m256i ts_qd_nibbles_32(const uint8_t *qs) {
    const __m128i x = _mm_loadu_si128((const __m128i *)qs);
    const __m128i m = _mm_set1_epi8(0x0F);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(x, 4), m), _mm_and_si128(x, m));
}

/* 0x10 in byte j where bit j of the 32-bit little-endian qh is set. */
TS_AI __m256i ts_qd_high_bits_32(const uint8_t qh[4]) {
    uint32_t bits;
    memcpy(&bits, qh, 4);
    const __m256i which = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                            0x0101010101010101, 0x0000000000000000);
    const __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), which);
    const __m256i mask = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, mask), mask);
    return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

TS_AI __m256i ts_qd_load(const void *p) {
    return _mm256_loadu_si256((const __m256i *)p);
}

/* The reference's reduction of the 8 lane accumulators (quant.h): ((l0 + l4) + (l2 + l6)) +
 * ((l1 + l5) + (l3 + l7)). */
TS_AI float ts_qd_lanes_sum(__m256 acc) {
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}

/* The sum of the 8 int32 lanes (exact: any order). */
TS_AI int32_t ts_qd_hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

/* Eight sums at once: lane i is the sum of v[i]'s int32 lanes. */
TS_AI __m256i ts_qd_hsum8_i32(const __m256i v[8]) {
    const __m256i h0 =
        _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    const __m256i h1 =
        _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(h0, h1, 0x20),
                            _mm256_permute2x128_si256(h0, h1, 0x31));
}

#endif
