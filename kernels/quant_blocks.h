/*
 * quant_blocks.h — the block structs of the quantized types beyond Q8_0/Q4_0 (common/dtype.h
 * describes every layout; these are GGML's, byte for byte). For the type files and the fast dot
 * kernels; the rest of the tree sees rows of bytes.
 */
#ifndef TS_KERNELS_QUANT_BLOCKS_H
#define TS_KERNELS_QUANT_BLOCKS_H

#include "common/dtype.h"

#include <stdint.h>

typedef struct {
    uint16_t d, m;
    uint8_t qs[TS_QK / 2];
} ts_block_q4_1;

typedef struct {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[TS_QK / 2];
} ts_block_q5_0;

typedef struct {
    uint16_t d, m;
    uint8_t qh[4];
    uint8_t qs[TS_QK / 2];
} ts_block_q5_1;

typedef struct {
    uint16_t d, s;
    int8_t q[TS_QK];
} ts_block_q8_1;

typedef struct {
    uint16_t d;
    uint8_t qs[TS_QK / 2];
} ts_block_iq4_nl;

typedef struct {
    uint8_t scales[TS_QK_K / 16]; /* low 4 bits scale, high 4 bits min */
    uint8_t qs[TS_QK_K / 4];
    uint16_t d, dmin;
} ts_block_q2_K;

typedef struct {
    uint8_t hmask[TS_QK_K / 8];
    uint8_t qs[TS_QK_K / 4];
    uint8_t scales[12]; /* 16 6-bit scales */
    uint16_t d;
} ts_block_q3_K;

typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12]; /* 8 6-bit scales and 8 6-bit mins */
    uint8_t qs[TS_QK_K / 2];
} ts_block_q4_K;

typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qh[TS_QK_K / 8];
    uint8_t qs[TS_QK_K / 2];
} ts_block_q5_K;

typedef struct {
    uint8_t ql[TS_QK_K / 2];
    uint8_t qh[TS_QK_K / 4];
    int8_t scales[TS_QK_K / 16];
    uint16_t d;
} ts_block_q6_K;

typedef struct {
    float d;
    int8_t q[TS_QK_K];
    int16_t bsums[TS_QK_K / 16];
} ts_block_q8_K;

_Static_assert(sizeof(ts_block_q4_1) == 20, "Q4_1 block layout");
_Static_assert(sizeof(ts_block_q5_0) == 22, "Q5_0 block layout");
_Static_assert(sizeof(ts_block_q5_1) == 24, "Q5_1 block layout");
_Static_assert(sizeof(ts_block_q8_1) == 36, "Q8_1 block layout");
_Static_assert(sizeof(ts_block_iq4_nl) == 18, "IQ4_NL block layout");
_Static_assert(sizeof(ts_block_q2_K) == 84, "Q2_K block layout");
_Static_assert(sizeof(ts_block_q3_K) == 110, "Q3_K block layout");
_Static_assert(sizeof(ts_block_q4_K) == 144, "Q4_K block layout");
_Static_assert(sizeof(ts_block_q5_K) == 176, "Q5_K block layout");
_Static_assert(sizeof(ts_block_q6_K) == 210, "Q6_K block layout");
_Static_assert(sizeof(ts_block_q8_K) == 292, "Q8_K block layout");

/* Sub-block j (0..7) of a Q4_K/Q5_K super-block: its 6-bit scale and min. */
static inline void ts_q4k_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* The 16 6-bit scales of a Q3_K super-block, as signed values (scale - 32). */
static inline void ts_q3k_scales(const uint8_t packed[12], int8_t out[16]) {
    for (int j = 0; j < 16; j++) {
        int low = j < 8 ? packed[j] & 0xF : packed[j - 8] >> 4;
        int high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
        out[j] = (int8_t)((low | high << 4) - 32);
    }
}

#endif
