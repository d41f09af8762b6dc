/*
 * kv_geometry.h — the paged KV cache's geometry, defined once for every process (the engine,
 * the KV transfer, the coordinator's block accounting, the CLI's estimates).
 *
 * A layer's K (and its V) cache is [n_blocks][n_kv_heads][block_size][head_dim] elements of the
 * KV type (kernels/kernels.h). One "head part" of a block is block_size × head_dim elements;
 * a block of a layer holds n_kv_heads of them for K and as many for V.
 */
#ifndef TS_COMMON_KV_GEOMETRY_H
#define TS_COMMON_KV_GEOMETRY_H

#include "common/dtype.h"

#include <stddef.h>
#include <stdint.h>

enum {
    TS_KV_BLOCK_SIZE_DEFAULT = 16, /* tokens per KV block (--block-size) */
    TS_KV_LAYOUT_VERSION = 1,      /* the layout above; change it when the layout changes */
};

/* Bytes of n_heads heads of one block of one layer's K (or V) cache. */
static inline size_t ts_kv_block_bytes(ts_dtype kv_type, int32_t block_size, int32_t head_dim,
                                       int32_t n_heads) {
    return (size_t)n_heads * (size_t)block_size * (size_t)head_dim *
           (size_t)ts_dtype_block_bytes(kv_type);
}

#endif
