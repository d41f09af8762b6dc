/*
 * panels.h — the packed weight layout the SIMD matrix kernels read (kernels.h: ts_weight.panels),
 * made once per weight by the CPU backend's weight_prepare.
 *
 * A weight W[rows][cols] becomes ceil(rows / 16) panels of TS_PANEL_ROWS = 16 rows, one after
 * the other; rows past the last are zero. Within a panel, k runs outermost, so that one k step
 * of 16 rows is one contiguous run (a vector load on AVX-512, two on AVX2) and a panel is one
 * stream of memory:
 *   f32, f16, bf16  cols x 16 elements: element (k, j) = W[16p + j][k] at k * 16 + j.
 *   Q8_0, Q4_0      cols / 32 block panels, one per 32-column block b:
 *                     16 f16 scales, scale j = the scale of row 16p + j's block b, then
 *                     Q8_0: 32 x 16 int8, (kk, j) = row 16p + j's q[kk]          (512 bytes)
 *                     Q4_0: 16 x 16 bytes, byte (i, j) = code(j, 2i) | code(j, 2i + 1) << 4,
 *                           code = row 16p + j's 4-bit value at kk (value d (code - 8))
 *                   544 and 288 bytes, the same size as 16 rows' blocks.
 * Every value converts to f32 exactly (a scale times a small integer), so reading the panels or
 * the rows gives the same numbers.
 */
#ifndef TS_KERNELS_CPU_PANELS_H
#define TS_KERNELS_CPU_PANELS_H

#include "kernels/kernels.h"

#include <stddef.h>
#include <stdint.h>

enum {
    TS_PANEL_Q_SCALES = TS_PANEL_ROWS * 2,                       /* bytes of a block's scales */
    TS_PANEL_Q8_BLOCK = TS_PANEL_Q_SCALES + 32 * TS_PANEL_ROWS,     /* 544 */
    TS_PANEL_Q4_BLOCK = TS_PANEL_Q_SCALES + 16 * TS_PANEL_ROWS,     /* 288 */
};

/* Bytes of one panel of `type` over `cols` columns (0 for a type without a panel form). */
size_t ts_panel_bytes(ts_dtype type, int64_t cols);

/* Writes the panels of the row-layout weight w (type, rows, cols, row_stride, data) into out,
 * ceil(rows / 16) * ts_panel_bytes(w->type, w->cols) bytes. */
void ts_panels_pack(const ts_weight *w, void *out);

#endif
