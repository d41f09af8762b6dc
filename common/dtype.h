/*
 * dtype.h — element types of weights and buffers, with their block layouts.
 *
 * The numeric values equal GGML's type ids, so a GGUF tensor type maps to ts_dtype directly.
 * Quantized types store rows as a sequence of blocks; a row of n elements (n a multiple of the
 * block size) takes n / block_elems * block_bytes bytes.
 *
 *   Q8_0 block (34 bytes, 32 elements): uint16 d (f16 scale), int8 q[32];  x[i] = d * q[i]
 *   Q4_0 block (18 bytes, 32 elements): uint16 d (f16 scale), uint8 qs[16];
 *        x[i]      = d * ((qs[i] & 0x0f) - 8)   for i in 0..15
 *        x[i + 16] = d * ((qs[i] >> 4)  - 8)    for i in 0..15
 */
#ifndef TS_COMMON_DTYPE_H
#define TS_COMMON_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    TS_DTYPE_F32 = 0,
    TS_DTYPE_F16 = 1,
    TS_DTYPE_Q4_0 = 2,
    TS_DTYPE_Q8_0 = 8,
    TS_DTYPE_BF16 = 30,
} ts_dtype;

enum { TS_QK = 32 }; /* elements per Q8_0 / Q4_0 block */

typedef struct {
    uint16_t d;
    int8_t q[TS_QK];
} ts_block_q8_0;

typedef struct {
    uint16_t d;
    uint8_t qs[TS_QK / 2];
} ts_block_q4_0;

_Static_assert(sizeof(ts_block_q8_0) == 34, "Q8_0 block layout");
_Static_assert(sizeof(ts_block_q4_0) == 18, "Q4_0 block layout");

/* 1 for plain types, 32 for Q8_0/Q4_0, 0 for an unknown type. */
int ts_dtype_block_elems(ts_dtype t);
/* Bytes per block (per element for plain types), 0 for an unknown type. */
int ts_dtype_block_bytes(ts_dtype t);
/* Whether t is one of the types above. */
int ts_dtype_is_known(uint32_t t);
/* "f32", "f16", "bf16", "q8_0", "q4_0" or "unknown". */
const char *ts_dtype_name(ts_dtype t);
/* Parses a name as above (case-insensitive). Returns 0 or TS_E_INVALID with a message. */
int ts_dtype_parse(const char *name, ts_dtype *out);
/* Bytes of a row of n elements; 0 if n is not a multiple of the block size or t is unknown. */
size_t ts_dtype_row_bytes(ts_dtype t, int64_t n);

#endif
