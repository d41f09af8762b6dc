/*
 * panels.h — the packed weight layout the SIMD matrix kernels read (kernels.h: ts_weight.panels),
 * made once per weight by the CPU backend's weight_prepare.
 *
 * A weight W[rows][cols] becomes ceil(rows / 16) panels of TS_PANEL_ROWS = 16 rows, one after
 * the other; rows past the last are zero. Within a panel, k runs outermost, so that one k step
 * of 16 rows is one contiguous run (a vector load on AVX-512, two on AVX2) and a panel is one
 * stream of memory:
 *   f32, f16, bf16  cols x 16 elements: element (k, j) = W[16p + j][k] at k * 16 + j.
 * Quantized weights have no panels: the CPU multiplies them in their file layout (qmatmul.h).
 */
#ifndef TS_KERNELS_CPU_PANELS_H
#define TS_KERNELS_CPU_PANELS_H

#include "kernels/kernels.h"

#include <stddef.h>
#include <stdint.h>

/* Bytes of one panel of `type` over `cols` columns (0 for a type without a panel form). */
size_t ts_panel_bytes(ts_dtype type, int64_t cols);

/* Writes the panels of the row-layout weight w (type, rows, cols, row_stride, data) into out,
 * ceil(rows / 16) * ts_panel_bytes(w->type, w->cols) bytes. */
void ts_panels_pack(const ts_weight *w, void *out);

#endif
