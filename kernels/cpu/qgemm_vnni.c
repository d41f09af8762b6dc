/*
 * qgemm_vnni.c — tiles of the quantized matrix product (qdot.h: ts_qtile) with AVX-512 VNNI on
 * 256-bit registers (compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni; run only where
 * ts_cpu_has_avx512_vnni()). The prefill path of qmatmul.c.
 *
 * Why tiles: a row-by-row dot spends most of its instructions on per-product overhead (the
 * activation scale converted from f16 and multiplied, the weight codes unpacked, the int16
 * pair sums widened), not on the multiplies. A tile of R weight rows x T tokens unpacks each
 * weight block once for T tokens and loads each activation block once for R rows, and VNNI
 * folds pmaddubsw + pmaddwd + paddd into one vpdpbusd (or pmaddwd + paddd into vpdpwssd). The
 * 32 registers of AVX-512VL hold the R x T accumulators.
 *
 * Bits: every output keeps the reference's arithmetic (quant.h). The integer sums are exact in
 * any order; the float steps are the reference's, in its order, one output per vector lane or
 * one output per vector (lane-wise IEEE operations on the same operands give the same bits):
 *   legacy types — signed codes c are taken as unsigned c + k (k = 8, 16 or 128) and
 *     vpdpbusd starts from -k * (sum of each 4 activations), so each int32 lane l is the exact
 *     partial sum p_b[l]; per (row, token) one vector of 8 lane accumulators gets
 *     fma(dw * da, p, acc) per block; the min terms of Q4_1/Q5_1 go four rows to a vector.
 *   K-quants — per (row, token) the super-block's isum (pmaddubsw, then vpdpwssd with the
 *     sub-block scales) and msum (pmaddwd of the activation's bsums with the mins), eight of
 *     them summed across lanes at once; then the two FMAs of the reference with the eight
 *     (row, token) pairs in the lanes of one vector. Q6_K's codes are taken unsigned (0..63),
 *     and 32 * sum(scale * bsum) is subtracted from isum, which is the same integer.
 */
#include "kernels/cpu/qdot.h"

#include "kernels/cpu/qdot_simd.h"
#include "kernels/quant_blocks.h"

#include <immintrin.h>
#include <string.h>

/* ---- legacy types (blocks of 32; Q8_0 or Q8_1 activations) ---- */

enum { LR = 4, LT = 4 }; /* rows x tokens of a legacy tile: 16 accumulators */

/* What is added to a type's signed codes to make them unsigned bytes (0: already unsigned). */
TS_AI int legacy_offset(ts_dtype t) {
    switch (t) {
    case TS_DTYPE_Q4_0: return 8;
    case TS_DTYPE_Q5_0: return 16;
    case TS_DTYPE_Q8_0:
    case TS_DTYPE_IQ4_NL: return 128;
    default: return 0; /* Q4_1, Q5_1 */
    }
}

/* The 32 codes of the block at blk plus legacy_offset(t), as unsigned bytes. */
TS_AI __m256i legacy_ucodes(ts_dtype t, const char *blk, __m256i iq4u) {
    switch (t) {
    case TS_DTYPE_Q4_0: return ts_qd_nibbles_32(((const ts_block_q4_0 *)blk)->qs);
    case TS_DTYPE_Q4_1: return ts_qd_nibbles_32(((const ts_block_q4_1 *)blk)->qs);
    case TS_DTYPE_Q5_0: {
        const ts_block_q5_0 *x = (const ts_block_q5_0 *)blk;
        return _mm256_or_si256(ts_qd_nibbles_32(x->qs), ts_qd_high_bits_32(x->qh));
    }
    case TS_DTYPE_Q5_1: {
        const ts_block_q5_1 *x = (const ts_block_q5_1 *)blk;
        return _mm256_or_si256(ts_qd_nibbles_32(x->qs), ts_qd_high_bits_32(x->qh));
    }
    case TS_DTYPE_Q8_0:
        return _mm256_xor_si256(ts_qd_load(((const ts_block_q8_0 *)blk)->q),
                                _mm256_set1_epi8((char)0x80));
    default: /* IQ4_NL: the table lookup of the nibbles, table values + 128 */
        return _mm256_shuffle_epi8(iq4u, ts_qd_nibbles_32(((const ts_block_iq4_nl *)blk)->qs));
    }
}

TS_AI void legacy_tile(ts_dtype t, const char *w, size_t w_stride, const char *a, size_t a_stride,
                       int64_t n, float *y, size_t y_stride) {
    const int with_min = t == TS_DTYPE_Q4_1 || t == TS_DTYPE_Q5_1; /* Q8_1 activations */
    const size_t wb = (size_t)ts_dtype_block_bytes(t);
    const size_t ab = with_min ? sizeof(ts_block_q8_1) : sizeof(ts_block_q8_0);
    const int offset = legacy_offset(t);
    const __m256i voff = _mm256_set1_epi8((char)offset), zero = _mm256_setzero_si256();
    const __m128i iq4 =
        _mm_add_epi8(_mm_loadu_si128((const __m128i *)ts_iq4nl_values), _mm_set1_epi8((char)0x80));
    const __m256i iq4u = _mm256_set_m128i(iq4, iq4);
    __m256 acc[LR][LT];
    __m128 accm[LT];
    for (int j = 0; j < LT; j++) {
        for (int r = 0; r < LR; r++)
            acc[r][j] = _mm256_setzero_ps();
        accm[j] = _mm_setzero_ps();
    }
    for (int64_t b = 0; b < n / TS_QK; b++) {
        __m256i c[LR];
        __m256 dw[LR];
        float mw[LR] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int r = 0; r < LR; r++) {
            const char *blk = w + (size_t)r * w_stride + (size_t)b * wb;
            dw[r] = _mm256_set1_ps(ts_qd_f16_at(blk));
            if (with_min) mw[r] = ts_qd_f16_at(blk + 2);
            c[r] = legacy_ucodes(t, blk, iq4u);
        }
        const __m128 vmw = _mm_loadu_ps(mw);
        for (int j = 0; j < LT; j++) {
            const char *ablk = a + (size_t)j * a_stride + (size_t)b * ab;
            const __m256i q = ts_qd_load(ablk + (with_min ? 4 : 2));
            const __m256 da = _mm256_set1_ps(ts_qd_f16_at(ablk));
            /* -offset * (each 4 activations' sum): the start that makes the sums signed */
            const __m256i base =
                offset ? _mm256_sub_epi32(zero, _mm256_dpbusd_epi32(zero, voff, q)) : zero;
            for (int r = 0; r < LR; r++) {
                const __m256i p = _mm256_dpbusd_epi32(base, c[r], q);
                acc[r][j] =
                    _mm256_fmadd_ps(_mm256_mul_ps(dw[r], da), _mm256_cvtepi32_ps(p), acc[r][j]);
            }
            if (with_min) accm[j] = _mm_fmadd_ps(vmw, _mm_set1_ps(ts_qd_f16_at(ablk + 2)), accm[j]);
        }
    }
    for (int j = 0; j < LT; j++) {
        float m[4];
        _mm_storeu_ps(m, accm[j]);
        for (int r = 0; r < LR; r++)
            y[(size_t)j * y_stride + (size_t)r] = ts_qd_lanes_sum(acc[r][j]) + m[r];
    }
}

#define LEGACY(name, T)                                                                            \
    static void tile_##name(const void *w, size_t ws, const void *a, size_t as, int64_t n,         \
                            float *y, size_t ys) {                                                 \
        legacy_tile(T, w, ws, a, as, n, y, ys);                                                    \
    }
LEGACY(q4_0, TS_DTYPE_Q4_0)
LEGACY(q4_1, TS_DTYPE_Q4_1)
LEGACY(q5_0, TS_DTYPE_Q5_0)
LEGACY(q5_1, TS_DTYPE_Q5_1)
LEGACY(q8_0, TS_DTYPE_Q8_0)
LEGACY(iq4_nl, TS_DTYPE_IQ4_NL)
#undef LEGACY

/* ---- K-quants (super-blocks of 256; Q8_K activations) ---- */

enum { KR = 2, KT = 4 }; /* rows x tokens of a K-quant tile: the 8 lanes of one vector */

/* The reference's two FMAs of one super-block for the 8 (row, token) pairs, lane r * KT + j:
 * acc = fma(d * ad, isum, acc); acc = fma(-dmin * ad, msum, acc). */
TS_AI __m256 kquant_steps(__m256 acc, __m256 d, __m256 neg_dmin, __m256 ad, __m256i isum,
                          __m256i msum) {
    acc = _mm256_fmadd_ps(_mm256_mul_ps(d, ad), _mm256_cvtepi32_ps(isum), acc);
    return _mm256_fmadd_ps(_mm256_mul_ps(neg_dmin, ad), _mm256_cvtepi32_ps(msum), acc);
}

/* The activation scales of the KT tokens' super-block b, twice (for the KR rows). */
TS_AI __m256 kquant_ad(const char *a, size_t a_stride, int64_t b) {
    float ad[KT];
    for (int j = 0; j < KT; j++)
        ad[j] = ((const ts_block_q8_K *)(a + (size_t)j * a_stride))[b].d;
    const __m128 v = _mm_loadu_ps(ad);
    return _mm256_set_m128(v, v);
}

TS_AI void kquant_store(__m256 acc, float *y, size_t y_stride) {
    float out[KR * KT];
    _mm256_storeu_ps(out, acc);
    for (int r = 0; r < KR; r++)
        for (int j = 0; j < KT; j++)
            y[(size_t)j * y_stride + (size_t)r] = out[r * KT + j];
}

/* Q4_K and Q5_K: 4 pieces of 64 elements, the low nibbles the first 32 with scale 2p, the high
 * nibbles the next 32 with scale 2p + 1. */
TS_AI void q45_K_tile(ts_dtype t, const char *w, size_t w_stride, const char *a, size_t a_stride,
                      int64_t n, float *y, size_t y_stride) {
    const int five = t == TS_DTYPE_Q5_K;
    const size_t wb = five ? sizeof(ts_block_q5_K) : sizeof(ts_block_q4_K);
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / TS_QK_K; b++) {
        const ts_block_q4_K *k4[KR];
        const ts_block_q5_K *k5[KR];
        const uint8_t *qs[KR];
        uint8_t sc[KR][8];
        __m256i mins[KR], hbits[KR], isum[KR * KT], msum[KR * KT];
        float d[KR * KT], neg_dmin[KR * KT];
        for (int r = 0; r < KR; r++) {
            const char *blk = w + (size_t)r * w_stride + (size_t)b * wb;
            k4[r] = (const ts_block_q4_K *)blk;
            k5[r] = (const ts_block_q5_K *)blk;
            const uint8_t *scales = five ? k5[r]->scales : k4[r]->scales;
            qs[r] = five ? k5[r]->qs : k4[r]->qs;
            int16_t m16[16];
            for (int s = 0; s < 8; s++) {
                uint8_t m;
                ts_q4k_scale_min(s, scales, &sc[r][s], &m);
                m16[2 * s] = m16[2 * s + 1] = m; /* the min of bsums 2s and 2s + 1 */
            }
            mins[r] = ts_qd_load(m16);
            hbits[r] = five ? ts_qd_load(k5[r]->qh) : _mm256_setzero_si256();
            for (int j = 0; j < KT; j++) { /* the same place in Q5_K */
                d[r * KT + j] = ts_qd_h2f(k4[r]->d);
                neg_dmin[r * KT + j] = -ts_qd_h2f(k4[r]->dmin);
                isum[r * KT + j] = _mm256_setzero_si256();
            }
        }
        const ts_block_q8_K *act[KT];
        for (int j = 0; j < KT; j++)
            act[j] = (const ts_block_q8_K *)(a + (size_t)j * a_stride) + b;
        for (int p = 0; p < 4; p++) {
            __m256i lo[KR], hi[KR], slo[KR], shi[KR];
            for (int r = 0; r < KR; r++) {
                const __m256i q = ts_qd_load(qs[r] + 32 * p);
                lo[r] = _mm256_and_si256(q, m4);
                hi[r] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                if (five) {
                    const __m256i hl = _mm256_and_si256(_mm256_srli_epi16(hbits[r], 2 * p), one);
                    const __m256i hh =
                        _mm256_and_si256(_mm256_srli_epi16(hbits[r], 2 * p + 1), one);
                    lo[r] = _mm256_or_si256(lo[r], _mm256_slli_epi16(hl, 4));
                    hi[r] = _mm256_or_si256(hi[r], _mm256_slli_epi16(hh, 4));
                }
                slo[r] = _mm256_set1_epi16(sc[r][2 * p]);
                shi[r] = _mm256_set1_epi16(sc[r][2 * p + 1]);
            }
            for (int j = 0; j < KT; j++) {
                const __m256i alo = ts_qd_load(act[j]->q + 64 * p);
                const __m256i ahi = ts_qd_load(act[j]->q + 64 * p + 32);
                for (int r = 0; r < KR; r++) {
                    __m256i s = isum[r * KT + j];
                    s = _mm256_dpwssd_epi32(s, _mm256_maddubs_epi16(lo[r], alo), slo[r]);
                    s = _mm256_dpwssd_epi32(s, _mm256_maddubs_epi16(hi[r], ahi), shi[r]);
                    isum[r * KT + j] = s;
                }
            }
        }
        for (int j = 0; j < KT; j++) {
            const __m256i bsums = ts_qd_load(act[j]->bsums);
            for (int r = 0; r < KR; r++)
                msum[r * KT + j] = _mm256_madd_epi16(bsums, mins[r]);
        }
        acc = kquant_steps(acc, _mm256_loadu_ps(d), _mm256_loadu_ps(neg_dmin),
                           kquant_ad(a, a_stride, b), ts_qd_hsum8_i32(isum), ts_qd_hsum8_i32(msum));
    }
    kquant_store(acc, y, y_stride);
}

/* Q6_K: per half h and quarter s, 32 unsigned 6-bit codes times the activations (pmaddubsw),
 * each 16 elements' scale by vpdpwssd; minus 32 * sum(scale * bsum) per super-block. */
TS_AI void q6_K_tile(const char *w, size_t w_stride, const char *a, size_t a_stride, int64_t n,
                     float *y, size_t y_stride) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3);
    __m256 acc = _mm256_setzero_ps();
    const __m256 neg_zero = _mm256_set1_ps(-0.0f); /* -dmin with dmin = 0, as the reference */
    for (int64_t b = 0; b < n / TS_QK_K; b++) {
        const ts_block_q6_K *x[KR];
        __m256i scales[KR], isum[KR * KT], corr[KR * KT];
        float d[KR * KT];
        for (int r = 0; r < KR; r++) {
            x[r] = (const ts_block_q6_K *)(w + (size_t)r * w_stride) + b;
            scales[r] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x[r]->scales));
            for (int j = 0; j < KT; j++) {
                d[r * KT + j] = ts_qd_h2f(x[r]->d);
                isum[r * KT + j] = _mm256_setzero_si256();
            }
        }
        const ts_block_q8_K *act[KT];
        for (int j = 0; j < KT; j++)
            act[j] = (const ts_block_q8_K *)(a + (size_t)j * a_stride) + b;
        for (int h = 0; h < 2; h++) {
            __m256i ql0[KR], ql1[KR], qh[KR];
            for (int r = 0; r < KR; r++) {
                ql0[r] = ts_qd_load(x[r]->ql + 64 * h);
                ql1[r] = ts_qd_load(x[r]->ql + 64 * h + 32);
                qh[r] = ts_qd_load(x[r]->qh + 32 * h);
            }
            for (int s = 0; s < 4; s++) {
                const int k = 8 * h + 2 * s; /* the scales of the 2 x 16 elements */
                const __m256i pick =
                    _mm256_set_m128i(_mm_set1_epi16((short)(k + 1)), _mm_set1_epi16((short)k));
                __m256i code[KR], scale[KR];
                for (int r = 0; r < KR; r++) {
                    const __m256i ql = s & 1 ? ql1[r] : ql0[r];
                    const __m256i low = _mm256_and_si256(s < 2 ? ql : _mm256_srli_epi16(ql, 4), m4);
                    const __m256i high = _mm256_and_si256(_mm256_srli_epi16(qh[r], 2 * s), m2);
                    code[r] = _mm256_or_si256(low, _mm256_slli_epi16(high, 4));
                    scale[r] = _mm256_permutexvar_epi16(pick, scales[r]);
                }
                for (int j = 0; j < KT; j++) {
                    const __m256i q = ts_qd_load(act[j]->q + 128 * h + 32 * s);
                    for (int r = 0; r < KR; r++)
                        isum[r * KT + j] = _mm256_dpwssd_epi32(
                            isum[r * KT + j], _mm256_maddubs_epi16(code[r], q), scale[r]);
                }
            }
        }
        for (int j = 0; j < KT; j++) {
            const __m256i bsums = ts_qd_load(act[j]->bsums);
            for (int r = 0; r < KR; r++)
                corr[r * KT + j] = _mm256_madd_epi16(bsums, scales[r]);
        }
        const __m256i isum8 =
            _mm256_sub_epi32(ts_qd_hsum8_i32(isum), _mm256_slli_epi32(ts_qd_hsum8_i32(corr), 5));
        acc = kquant_steps(acc, _mm256_loadu_ps(d), neg_zero, kquant_ad(a, a_stride, b), isum8,
                           _mm256_setzero_si256());
    }
    kquant_store(acc, y, y_stride);
}

static void tile_q4_K(const void *w, size_t ws, const void *a, size_t as, int64_t n, float *y,
                      size_t ys) {
    q45_K_tile(TS_DTYPE_Q4_K, w, ws, a, as, n, y, ys);
}
static void tile_q5_K(const void *w, size_t ws, const void *a, size_t as, int64_t n, float *y,
                      size_t ys) {
    q45_K_tile(TS_DTYPE_Q5_K, w, ws, a, as, n, y, ys);
}
static void tile_q6_K(const void *w, size_t ws, const void *a, size_t as, int64_t n, float *y,
                      size_t ys) {
    q6_K_tile(w, ws, a, as, n, y, ys);
}

ts_qtile ts_qtile_vnni(ts_dtype type) {
    const ts_qtile legacy = {NULL, LR, LT}, kquant = {NULL, KR, KT};
    ts_qtile q = {NULL, 0, 0};
    switch (type) {
    case TS_DTYPE_Q4_0: q = legacy, q.fn = tile_q4_0; break;
    case TS_DTYPE_Q4_1: q = legacy, q.fn = tile_q4_1; break;
    case TS_DTYPE_Q5_0: q = legacy, q.fn = tile_q5_0; break;
    case TS_DTYPE_Q5_1: q = legacy, q.fn = tile_q5_1; break;
    case TS_DTYPE_Q8_0: q = legacy, q.fn = tile_q8_0; break;
    case TS_DTYPE_IQ4_NL: q = legacy, q.fn = tile_iq4_nl; break;
    case TS_DTYPE_Q4_K: q = kquant, q.fn = tile_q4_K; break;
    case TS_DTYPE_Q5_K: q = kquant, q.fn = tile_q5_K; break;
    case TS_DTYPE_Q6_K: q = kquant, q.fn = tile_q6_K; break;
    default: break;
    }
    return q;
}
