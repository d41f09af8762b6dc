/*
 * simd.h — the small vector layer the SIMD kernels (simd_ops.c) are written against.
 *
 * simd_ops.c is compiled once per instruction set, with one of these defined:
 *   TS_SIMD_AVX2    8 lanes: __m256            (-mavx2 -mfma -mf16c)
 *   TS_SIMD_AVX512  16 lanes: __m512           (-mavx512f -mavx512bw -mavx512vl -mavx512dq ...)
 *   TS_SIMD_AVX2X2  16 lanes: two __m256 (lo = lanes 0..7, hi = lanes 8..15), AVX2 flags.
 * The last one exists for the tests: it computes exactly what the real AVX-512 build computes,
 * lane by lane, so the 16-lane kernels (tails, lane order, the reduction tree) are checked bit for
 * bit on CPUs without AVX-512. This is why the ISA-specific part below is kept tiny: every
 * operation is lane-wise IEEE arithmetic or an exact conversion, except ts_v_hsum, whose tree is
 * spelled out once (hsum8) and shared by all builds.
 *
 * Exactness: f16, bf16, int8 and 4-bit values convert to f32 exactly, and so do the products
 * d * q of the quantized formats (an 11-bit scale times an integer of at most 8 bits), so a
 * weight loaded here equals ts_dequantize_row's value bit for bit.
 */
#ifndef TS_KERNELS_CPU_SIMD_H
#define TS_KERNELS_CPU_SIMD_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#define TS_INLINE static inline __attribute__((always_inline))

/* The one horizontal sum tree: ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)). */
TS_INLINE float ts_hsum8(__m256 v) {
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
    return _mm_cvtss_f32(s1);
}

/* Eight horizontal sums at once: lane j of the result is ts_hsum8(v[j]), bit for bit (the same
 * additions of the same pairs, done across registers by shuffles instead of one sum at a time).
 * Stage 1 pairs v[j] with v[j + 4] to add 128-bit halves, stage 2 adds lanes i and i + 2, stage
 * 3 lanes 0 and 1; the pairing is chosen so that the sums land in order. */
TS_INLINE __m256 ts_hsum8_lanes(const __m256 v[8]) {
    __m256 p[4];
    for (int j = 0; j < 4; j++) /* [s4(v[j]) | s4(v[j + 4])], s4[i] = l[i] + l[i + 4] */
        p[j] = _mm256_add_ps(_mm256_permute2f128_ps(v[j], v[j + 4], 0x20),
                             _mm256_permute2f128_ps(v[j], v[j + 4], 0x31));
    __m256 t01 = _mm256_add_ps(_mm256_shuffle_ps(p[0], p[1], _MM_SHUFFLE(1, 0, 1, 0)),
                               _mm256_shuffle_ps(p[0], p[1], _MM_SHUFFLE(3, 2, 3, 2)));
    __m256 t23 = _mm256_add_ps(_mm256_shuffle_ps(p[2], p[3], _MM_SHUFFLE(1, 0, 1, 0)),
                               _mm256_shuffle_ps(p[2], p[3], _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm256_add_ps(_mm256_shuffle_ps(t01, t23, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm256_shuffle_ps(t01, t23, _MM_SHUFFLE(3, 1, 3, 1)));
}

/* The 8 halves (f16 bits) at p with lanes n..7 = 0, without reading past p[n - 1]: pairs through
 * a masked 32-bit load, an odd last half inserted (narrow stores followed by a wide load would
 * stall on store forwarding). Every build has AVX2; the 8-lane builds use it for partial f16. */
TS_INLINE __m128i ts_load_u16x8_partial(const uint16_t *p, int n) {
    const __m128i idx = _mm_setr_epi32(0, 1, 2, 3);
    __m128i u = _mm_maskload_epi32((const int *)p, _mm_cmplt_epi32(idx, _mm_set1_epi32(n / 2)));
    if (n & 1) {
        switch (n) { /* _mm_insert_epi16 takes a constant index */
        case 1: u = _mm_insert_epi16(u, p[0], 0); break;
        case 3: u = _mm_insert_epi16(u, p[2], 2); break;
        case 5: u = _mm_insert_epi16(u, p[4], 4); break;
        default: u = _mm_insert_epi16(u, p[6], 6); break;
        }
    }
    return u;
}

TS_INLINE float ts_f16_scalar(uint16_t h) {
    return _cvtsh_ss(h);
}

/* ---------------------------------------------------------------------------------------- */
#if defined(TS_SIMD_AVX2)
#define TS_SIMD_LANES 8
typedef __m256 ts_v;

TS_INLINE ts_v ts_v_zero(void) {
    return _mm256_setzero_ps();
}
TS_INLINE ts_v ts_v_set1(float a) {
    return _mm256_set1_ps(a);
}
TS_INLINE ts_v ts_v_load(const float *p) {
    return _mm256_loadu_ps(p);
}
TS_INLINE void ts_v_store(float *p, ts_v v) {
    _mm256_storeu_ps(p, v);
}
TS_INLINE ts_v ts_v_add(ts_v a, ts_v b) {
    return _mm256_add_ps(a, b);
}
TS_INLINE ts_v ts_v_sub(ts_v a, ts_v b) {
    return _mm256_sub_ps(a, b);
}
TS_INLINE ts_v ts_v_mul(ts_v a, ts_v b) {
    return _mm256_mul_ps(a, b);
}
TS_INLINE ts_v ts_v_div(ts_v a, ts_v b) {
    return _mm256_div_ps(a, b);
}
TS_INLINE ts_v ts_v_max(ts_v a, ts_v b) {
    return _mm256_max_ps(a, b);
}
TS_INLINE ts_v ts_v_min(ts_v a, ts_v b) {
    return _mm256_min_ps(a, b);
}
/* a * b + c with one rounding */
TS_INLINE ts_v ts_v_fma(ts_v a, ts_v b, ts_v c) {
    return _mm256_fmadd_ps(a, b, c);
}
/* to the nearest integer, ties to even */
TS_INLINE ts_v ts_v_round(ts_v a) {
    return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
/* 2^n for integral n in [-126, 127] */
TS_INLINE ts_v ts_v_pow2i(ts_v n) {
    __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
}
TS_INLINE ts_v ts_v_load_f16(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}
TS_INLINE ts_v ts_v_load_f16_partial(const uint16_t *p, int n) {
    return _mm256_cvtph_ps(ts_load_u16x8_partial(p, n));
}
TS_INLINE ts_v ts_v_load_bf16(const uint16_t *p) {
    __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
}
/* 8 int8 as f32 */
TS_INLINE ts_v ts_v_load_i8(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}
/* The low (p[i] & 15) or high (p[i] >> 4) nibbles of 8 bytes as f32 */
TS_INLINE ts_v ts_v_load_u4_lo(const uint8_t *p) {
    __m256i u = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
    return _mm256_cvtepi32_ps(_mm256_and_si256(u, _mm256_set1_epi32(15)));
}
TS_INLINE ts_v ts_v_load_u4_hi(const uint8_t *p) {
    __m256i u = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
    return _mm256_cvtepi32_ps(_mm256_srli_epi32(u, 4));
}
TS_INLINE float ts_v_hsum(ts_v v) {
    return ts_hsum8(v);
}
/* lane j = ts_v_hsum(v[j]) */
TS_INLINE ts_v ts_v_hsum_lanes(const ts_v v[8]) {
    return ts_hsum8_lanes(v);
}
/* max is exact, so its order does not matter */
TS_INLINE float ts_v_hmax(ts_v v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
}

/* ---------------------------------------------------------------------------------------- */
#elif defined(TS_SIMD_AVX512)
#define TS_SIMD_LANES 16
typedef __m512 ts_v;

TS_INLINE ts_v ts_v_zero(void) {
    return _mm512_setzero_ps();
}
TS_INLINE ts_v ts_v_set1(float a) {
    return _mm512_set1_ps(a);
}
TS_INLINE ts_v ts_v_load(const float *p) {
    return _mm512_loadu_ps(p);
}
TS_INLINE void ts_v_store(float *p, ts_v v) {
    _mm512_storeu_ps(p, v);
}
TS_INLINE ts_v ts_v_add(ts_v a, ts_v b) {
    return _mm512_add_ps(a, b);
}
TS_INLINE ts_v ts_v_sub(ts_v a, ts_v b) {
    return _mm512_sub_ps(a, b);
}
TS_INLINE ts_v ts_v_mul(ts_v a, ts_v b) {
    return _mm512_mul_ps(a, b);
}
TS_INLINE ts_v ts_v_div(ts_v a, ts_v b) {
    return _mm512_div_ps(a, b);
}
TS_INLINE ts_v ts_v_max(ts_v a, ts_v b) {
    return _mm512_max_ps(a, b);
}
TS_INLINE ts_v ts_v_min(ts_v a, ts_v b) {
    return _mm512_min_ps(a, b);
}
TS_INLINE ts_v ts_v_fma(ts_v a, ts_v b, ts_v c) {
    return _mm512_fmadd_ps(a, b, c);
}
TS_INLINE ts_v ts_v_round(ts_v a) {
    return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
TS_INLINE ts_v ts_v_pow2i(ts_v n) {
    __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
}
TS_INLINE ts_v ts_v_load_f16(const uint16_t *p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}
/* The first n (< 16) halves; the other lanes 0, not read */
TS_INLINE ts_v ts_v_load_f16_partial(const uint16_t *p, int n) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16((__mmask16)((1u << n) - 1u), p));
}
TS_INLINE ts_v ts_v_load_bf16(const uint16_t *p) {
    __m512i u = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
}
TS_INLINE ts_v ts_v_load_i8(const int8_t *p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}
TS_INLINE ts_v ts_v_load_u4_lo(const uint8_t *p) {
    __m512i u = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm512_cvtepi32_ps(_mm512_and_si512(u, _mm512_set1_epi32(15)));
}
TS_INLINE ts_v ts_v_load_u4_hi(const uint8_t *p) {
    __m512i u = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm512_cvtepi32_ps(_mm512_srli_epi32(u, 4));
}
/* lanes i + (i + 8) first, then the 8-lane tree: the same as the AVX2X2 build */
TS_INLINE float ts_v_hsum(ts_v v) {
    return ts_hsum8(_mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1)));
}
/* lane j = ts_v_hsum(v[j]): the 256-bit halves of v[j] and v[j + 8] added in one register,
 * then ts_hsum8_lanes' stages on four 128-bit chunks at a time. */
TS_INLINE ts_v ts_v_hsum_lanes(const ts_v v[16]) {
    __m512 q[8];
    for (int j = 0; j < 8; j++) /* [u(v[j]) | u(v[j + 8])], u = low half + high half */
        q[j] = _mm512_add_ps(_mm512_shuffle_f32x4(v[j], v[j + 8], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_f32x4(v[j], v[j + 8], _MM_SHUFFLE(3, 2, 3, 2)));
    __m512 p[4];
    for (int j = 0; j < 4; j++) /* chunks: s4 of keys j, j + 8, j + 4, j + 12 */
        p[j] = _mm512_add_ps(_mm512_shuffle_f32x4(q[j], q[j + 4], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(q[j], q[j + 4], _MM_SHUFFLE(3, 1, 3, 1)));
    __m512 t01 = _mm512_add_ps(_mm512_shuffle_ps(p[0], p[1], _MM_SHUFFLE(1, 0, 1, 0)),
                               _mm512_shuffle_ps(p[0], p[1], _MM_SHUFFLE(3, 2, 3, 2)));
    __m512 t23 = _mm512_add_ps(_mm512_shuffle_ps(p[2], p[3], _MM_SHUFFLE(1, 0, 1, 0)),
                               _mm512_shuffle_ps(p[2], p[3], _MM_SHUFFLE(3, 2, 3, 2)));
    __m512 r = _mm512_add_ps(_mm512_shuffle_ps(t01, t23, _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_ps(t01, t23, _MM_SHUFFLE(3, 1, 3, 1)));
    /* chunks now hold keys 0-3, 8-11, 4-7, 12-15 */
    return _mm512_shuffle_f32x4(r, r, _MM_SHUFFLE(3, 1, 2, 0));
}
TS_INLINE float ts_v_hmax(ts_v v) {
    return _mm512_reduce_max_ps(v);
}

/* ---------------------------------------------------------------------------------------- */
#elif defined(TS_SIMD_AVX2X2)
#define TS_SIMD_LANES 16
typedef struct {
    __m256 lo, hi;
} ts_v;

#define TS_V2(expr_lo, expr_hi) ((ts_v){expr_lo, expr_hi})
TS_INLINE ts_v ts_v_zero(void) {
    return TS_V2(_mm256_setzero_ps(), _mm256_setzero_ps());
}
TS_INLINE ts_v ts_v_set1(float a) {
    return TS_V2(_mm256_set1_ps(a), _mm256_set1_ps(a));
}
TS_INLINE ts_v ts_v_load(const float *p) {
    return TS_V2(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8));
}
TS_INLINE void ts_v_store(float *p, ts_v v) {
    _mm256_storeu_ps(p, v.lo);
    _mm256_storeu_ps(p + 8, v.hi);
}
TS_INLINE ts_v ts_v_add(ts_v a, ts_v b) {
    return TS_V2(_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi));
}
TS_INLINE ts_v ts_v_sub(ts_v a, ts_v b) {
    return TS_V2(_mm256_sub_ps(a.lo, b.lo), _mm256_sub_ps(a.hi, b.hi));
}
TS_INLINE ts_v ts_v_mul(ts_v a, ts_v b) {
    return TS_V2(_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi));
}
TS_INLINE ts_v ts_v_div(ts_v a, ts_v b) {
    return TS_V2(_mm256_div_ps(a.lo, b.lo), _mm256_div_ps(a.hi, b.hi));
}
TS_INLINE ts_v ts_v_max(ts_v a, ts_v b) {
    return TS_V2(_mm256_max_ps(a.lo, b.lo), _mm256_max_ps(a.hi, b.hi));
}
TS_INLINE ts_v ts_v_min(ts_v a, ts_v b) {
    return TS_V2(_mm256_min_ps(a.lo, b.lo), _mm256_min_ps(a.hi, b.hi));
}
TS_INLINE ts_v ts_v_fma(ts_v a, ts_v b, ts_v c) {
    return TS_V2(_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi));
}
TS_INLINE __m256 round8(__m256 a) {
    return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
TS_INLINE ts_v ts_v_round(ts_v a) {
    return TS_V2(round8(a.lo), round8(a.hi));
}
TS_INLINE __m256 pow2i8(__m256 n) {
    __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
}
TS_INLINE ts_v ts_v_pow2i(ts_v n) {
    return TS_V2(pow2i8(n.lo), pow2i8(n.hi));
}
TS_INLINE ts_v ts_v_load_f16(const uint16_t *p) {
    return TS_V2(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)),
                 _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 8))));
}
/* The first n (< 16) halves; the other lanes 0, not read */
TS_INLINE ts_v ts_v_load_f16_partial(const uint16_t *p, int n) {
    if (n >= 8)
        return TS_V2(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)),
                     _mm256_cvtph_ps(ts_load_u16x8_partial(p + 8, n - 8)));
    return TS_V2(_mm256_cvtph_ps(ts_load_u16x8_partial(p, n)), _mm256_setzero_ps());
}
TS_INLINE __m256 bf16x8(const uint16_t *p) {
    __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
}
TS_INLINE ts_v ts_v_load_bf16(const uint16_t *p) {
    return TS_V2(bf16x8(p), bf16x8(p + 8));
}
TS_INLINE __m256 i8x8(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}
TS_INLINE ts_v ts_v_load_i8(const int8_t *p) {
    return TS_V2(i8x8(p), i8x8(p + 8));
}
TS_INLINE __m256 u4lo8(const uint8_t *p) {
    __m256i u = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
    return _mm256_cvtepi32_ps(_mm256_and_si256(u, _mm256_set1_epi32(15)));
}
TS_INLINE __m256 u4hi8(const uint8_t *p) {
    __m256i u = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
    return _mm256_cvtepi32_ps(_mm256_srli_epi32(u, 4));
}
TS_INLINE ts_v ts_v_load_u4_lo(const uint8_t *p) {
    return TS_V2(u4lo8(p), u4lo8(p + 8));
}
TS_INLINE ts_v ts_v_load_u4_hi(const uint8_t *p) {
    return TS_V2(u4hi8(p), u4hi8(p + 8));
}
TS_INLINE float ts_v_hsum(ts_v v) {
    return ts_hsum8(_mm256_add_ps(v.lo, v.hi));
}
/* lane j = ts_v_hsum(v[j]) */
TS_INLINE ts_v ts_v_hsum_lanes(const ts_v v[16]) {
    __m256 u[16];
    for (int j = 0; j < 16; j++)
        u[j] = _mm256_add_ps(v[j].lo, v[j].hi);
    return TS_V2(ts_hsum8_lanes(u), ts_hsum8_lanes(u + 8));
}
TS_INLINE float ts_v_hmax(ts_v v) {
    __m256 m = _mm256_max_ps(v.lo, v.hi);
    __m128 q = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    q = _mm_max_ps(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(_mm_max_ss(q, _mm_shuffle_ps(q, q, 1)));
}

#else
#error "define one of TS_SIMD_AVX2, TS_SIMD_AVX512, TS_SIMD_AVX2X2"
#endif

/* ---- built on the operations above, identical in every build ---- */

/* The first n (< TS_SIMD_LANES) floats of p; the other lanes hold `fill`. Tails go through a
 * small buffer: slower than a masked load, but plainly the same in every build. */
TS_INLINE ts_v ts_v_load_partial_fill(const float *p, int n, float fill) {
    float buf[TS_SIMD_LANES];
    for (int i = 0; i < TS_SIMD_LANES; i++)
        buf[i] = i < n ? p[i] : fill;
    return ts_v_load(buf);
}

TS_INLINE ts_v ts_v_load_partial(const float *p, int n) {
    return ts_v_load_partial_fill(p, n, 0.0f);
}

TS_INLINE void ts_v_store_partial(float *p, ts_v v, int n) {
    float buf[TS_SIMD_LANES];
    ts_v_store(buf, v);
    memcpy(p, buf, (size_t)n * sizeof(float));
}

/* e^x, within 2 ulp for x in [-87, 88]; inputs are clamped to that range, so e^x of a very
 * negative x is about 1.7e-38 instead of 0 (harmless in softmax sums of magnitude >= 1).
 * Cephes' method: x = n ln2 + r with |r| <= ln2 / 2, e^r by a degree-6 polynomial. */
TS_INLINE ts_v ts_v_exp(ts_v x) {
    x = ts_v_min(ts_v_max(x, ts_v_set1(-87.0f)), ts_v_set1(88.0f));
    ts_v n = ts_v_round(ts_v_mul(x, ts_v_set1(1.44269504088896341f)));
    ts_v r = ts_v_fma(n, ts_v_set1(-0.693359375f), x); /* ln2 in two parts: exact first step */
    r = ts_v_fma(n, ts_v_set1(2.12194440e-4f), r);
    ts_v p = ts_v_set1(1.9875691500e-4f);
    p = ts_v_fma(p, r, ts_v_set1(1.3981999507e-3f));
    p = ts_v_fma(p, r, ts_v_set1(8.3334519073e-3f));
    p = ts_v_fma(p, r, ts_v_set1(4.1665795894e-2f));
    p = ts_v_fma(p, r, ts_v_set1(1.6666665459e-1f));
    p = ts_v_fma(p, r, ts_v_set1(5.0000001201e-1f));
    p = ts_v_fma(p, ts_v_mul(r, r), ts_v_add(r, ts_v_set1(1.0f)));
    return ts_v_mul(p, ts_v_pow2i(n));
}

#endif
