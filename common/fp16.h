/*
 * fp16.h — exact scalar conversions between f32 and the 16-bit float formats.
 *
 * f16 (IEEE binary16) and bf16 (bfloat16). f16/bf16 → f32 is exact. f32 → f16/bf16 rounds to
 * nearest, ties to even, like the F16C instruction VCVTPS2PH with rounding mode 0, so SIMD and
 * scalar conversions agree bit for bit. NaN stays NaN; overflow becomes infinity.
 */
#ifndef TS_COMMON_FP16_H
#define TS_COMMON_FP16_H

#include <stdint.h>
#include <string.h>

static inline float ts_bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint32_t ts_f32_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float ts_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0x1f) return ts_bits_to_f32(sign | 0x7f800000u | (mant << 13)); /* inf / nan */
    if (exp == 0) {
        if (mant == 0) return ts_bits_to_f32(sign); /* signed zero */
        /* subnormal: value = mant * 2^-24, exact in f32 */
        float v = (float)mant * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return ts_bits_to_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

static inline uint16_t ts_f32_to_f16(float f) {
    uint32_t x = ts_f32_to_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t abs = x & 0x7fffffffu;
    if (abs >= 0x7f800000u) /* inf or nan (keep nan quiet and non-zero) */
        return (uint16_t)(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u | ((abs >> 13) & 0x3ffu) : 0));
    if (abs >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to >= 65520: inf */
    if (abs < 0x38800000u) {                                     /* below the f16 normal range */
        /* subnormal or zero: scale to units of 2^-24 and round to nearest even */
        uint32_t e = abs >> 23;
        if (e < 102) return (uint16_t)sign; /* below half of the smallest subnormal */
        uint32_t m = (abs & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t q = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u); /* round to nearest even at bit 13 */
    return (uint16_t)(sign | ((rounded - 0x38000000u) >> 13));
}

static inline float ts_bf16_to_f32(uint16_t h) { return ts_bits_to_f32((uint32_t)h << 16); }

static inline uint16_t ts_f32_to_bf16(float f) {
    uint32_t x = ts_f32_to_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet nan */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

#endif
