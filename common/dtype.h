/*
 * dtype.h — element types of weights and buffers, with their block layouts: the type table.
 *
 * The numeric values equal GGML's type ids, so a GGUF tensor type maps to ts_dtype directly, and
 * the layouts are GGML's byte for byte (every multi-byte field little-endian). Quantized types
 * store rows as a sequence of blocks; a row of n elements (n a multiple of the block size) takes
 * n / block_elems * block_bytes bytes. "f16" below is an IEEE half scale.
 *
 * Legacy blocks, 32 elements; qs[i] holds element i in its low nibble and i + 16 in its high one:
 *   Q4_0   18 B  f16 d, qs[16]              x = d (q - 8)
 *   Q4_1   20 B  f16 d, f16 m, qs[16]       x = d q + m
 *   Q5_0   22 B  f16 d, qh[4], qs[16]       x = d (q - 16), bit 4 of element j is bit j of qh
 *   Q5_1   24 B  f16 d, f16 m, qh[4], qs[16] x = d q + m
 *   Q8_0   34 B  f16 d, int8 q[32]          x = d q
 *   Q8_1   36 B  f16 d, f16 s, int8 q[32]   x = d q, s = d * sum(q) (activations only)
 *   IQ4_NL 18 B  f16 d, qs[16]              x = d kvalues[q] (a fixed non-linear 16-entry table)
 * K-quants, super-blocks of 256 elements in sub-blocks of 16 or 32, each with a small integer
 * scale (and min) under the super-block's f16 d (and dmin); kernels/quant_k.c has the exact bit
 * layout of each:
 *   Q2_K   84 B  16 x (4-bit scale, 4-bit min), 2-bit q     x = d sc q - dmin m
 *   Q3_K  110 B  16 x 6-bit scale, 3-bit q (2 + a high bit) x = d (sc - 32) (q - 4)
 *   Q4_K  144 B   8 x (6-bit scale, 6-bit min), 4-bit q     x = d sc q - dmin m
 *   Q5_K  176 B   8 x (6-bit scale, 6-bit min), 5-bit q     x = d sc q - dmin m
 *   Q6_K  210 B  16 x int8 scale, 6-bit q                   x = d sc (q - 32)
 *   Q8_K  292 B  f32 d, int8 q[256], int16 sums of 16       x = d q (activations only)
 *
 * Each weight type has a vec_dot_type: the type activations are quantized to before a dot
 * product with it (GGML's CPU rule, which Tessera follows so that quantized models give the
 * tokens llama.cpp gives; docs/kernels.md): Q8_0 for Q4_0/Q5_0/Q8_0/IQ4_NL, Q8_1 for Q4_1/Q5_1,
 * Q8_K for the K-quants; plain types have none (the activations stay f32).
 */
#ifndef TS_COMMON_DTYPE_H
#define TS_COMMON_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    TS_DTYPE_F32 = 0,
    TS_DTYPE_F16 = 1,
    TS_DTYPE_Q4_0 = 2,
    TS_DTYPE_Q4_1 = 3,
    TS_DTYPE_Q5_0 = 6,
    TS_DTYPE_Q5_1 = 7,
    TS_DTYPE_Q8_0 = 8,
    TS_DTYPE_Q8_1 = 9,
    TS_DTYPE_Q2_K = 10,
    TS_DTYPE_Q3_K = 11,
    TS_DTYPE_Q4_K = 12,
    TS_DTYPE_Q5_K = 13,
    TS_DTYPE_Q6_K = 14,
    TS_DTYPE_Q8_K = 15,
    TS_DTYPE_IQ4_NL = 20,
    TS_DTYPE_BF16 = 30,
    TS_DTYPE_COUNT = 31, /* one past the largest id; not a type */
} ts_dtype;

enum {
    TS_QK = 32,   /* elements per legacy block */
    TS_QK_K = 256 /* elements per K-quant super-block */
};

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

/* One row of the type table. */
typedef struct ts_dtype_info {
    const char *name;     /* "f32", "q4_K", ...: GGML's spelling */
    int block_elems;      /* 1 for plain types */
    int block_bytes;      /* bytes per block (per element for plain types) */
    ts_dtype vec_dot_type; /* activations' type for a dot with this weight type (itself if plain) */
    int weight;           /* 1 if tensors of a model may have this type (Q8_1/Q8_K may not) */
} ts_dtype_info;

/* The table row of t, or NULL for an id that is not a type above. */
const ts_dtype_info *ts_dtype_info_of(uint32_t t);
/* 1 for plain types, 32 for legacy blocks, 256 for K-quants, 0 for an unknown type. */
int ts_dtype_block_elems(ts_dtype t);
/* Bytes per block (per element for plain types), 0 for an unknown type. */
int ts_dtype_block_bytes(ts_dtype t);
/* Whether t is a type a weight may have (every type above but the activation-only ones). */
int ts_dtype_is_known(uint32_t t);
/* Whether t is a block-quantized type. */
int ts_dtype_is_quantized(ts_dtype t);
/* The type's name as above, or "unknown". */
const char *ts_dtype_name(ts_dtype t);
/* Writes the names of the weight types, comma-separated, into buf (for error messages). */
void ts_dtype_list_names(char *buf, size_t size);
/* GGML's name of a type id, also for ids Tessera does not support ("iq2_xxs"), or NULL. */
const char *ts_dtype_ggml_name(uint32_t id);
/* Parses a weight type's name (case-insensitive). Returns 0 or TS_E_INVALID with a message
 * listing the names. */
int ts_dtype_parse(const char *name, ts_dtype *out);
/* Bytes of a row of n elements; 0 if n is not a multiple of the block size or t is unknown. */
size_t ts_dtype_row_bytes(ts_dtype t, int64_t n);

#endif
