/*
 * panels.c — packing a weight into the panel layout of panels.h (once, at weight_prepare).
 */
#include "kernels/cpu/panels.h"

#include "common/dtype.h"

#include <string.h>

size_t ts_panel_bytes(ts_dtype type, int64_t cols) {
    switch (type) {
    case TS_DTYPE_F32: return (size_t)cols * TS_PANEL_ROWS * 4;
    case TS_DTYPE_F16:
    case TS_DTYPE_BF16: return (size_t)cols * TS_PANEL_ROWS * 2;
    case TS_DTYPE_Q8_0: return (size_t)(cols / TS_QK) * TS_PANEL_Q8_BLOCK;
    case TS_DTYPE_Q4_0: return (size_t)(cols / TS_QK) * TS_PANEL_Q4_BLOCK;
    default: return 0;
    }
}

/* Row r's 4-bit code at kk of a Q4_0 block: elements 0..15 in the low nibbles, 16..31 high. */
static uint8_t q4_code(const ts_block_q4_0 *b, int kk) {
    return kk < 16 ? b->qs[kk] & 15 : b->qs[kk - 16] >> 4;
}

void ts_panels_pack(const ts_weight *w, void *out) {
    const int64_t n_panels = (w->rows + TS_PANEL_ROWS - 1) / TS_PANEL_ROWS;
    const size_t panel_bytes = ts_panel_bytes(w->type, w->cols);
    memset(out, 0, (size_t)n_panels * panel_bytes);
    const int quant = w->type == TS_DTYPE_Q8_0 || w->type == TS_DTYPE_Q4_0;
    const size_t elem = quant ? 0 : (size_t)ts_dtype_block_bytes(w->type);
    const size_t block_panel = w->type == TS_DTYPE_Q8_0 ? TS_PANEL_Q8_BLOCK : TS_PANEL_Q4_BLOCK;
    for (int64_t r = 0; r < w->rows; r++) {
        const char *row = (const char *)w->data + (size_t)r * w->row_stride;
        char *panel = (char *)out + (size_t)(r / TS_PANEL_ROWS) * panel_bytes;
        const int j = (int)(r % TS_PANEL_ROWS);
        if (!quant) {
            for (int64_t k = 0; k < w->cols; k++)
                memcpy(panel + ((size_t)k * TS_PANEL_ROWS + (size_t)j) * elem,
                       row + (size_t)k * elem, elem);
            continue;
        }
        for (int64_t b = 0; b < w->cols / TS_QK; b++) {
            uint8_t *dst = (uint8_t *)panel + (size_t)b * block_panel;
            if (w->type == TS_DTYPE_Q8_0) {
                const ts_block_q8_0 *src = (const ts_block_q8_0 *)row + b;
                memcpy(dst + 2 * j, &src->d, 2);
                for (int kk = 0; kk < TS_QK; kk++)
                    dst[TS_PANEL_Q_SCALES + kk * TS_PANEL_ROWS + j] = (uint8_t)src->q[kk];
            } else {
                const ts_block_q4_0 *src = (const ts_block_q4_0 *)row + b;
                memcpy(dst + 2 * j, &src->d, 2);
                for (int i = 0; i < TS_QK / 2; i++)
                    dst[TS_PANEL_Q_SCALES + i * TS_PANEL_ROWS + j] =
                        (uint8_t)(q4_code(src, 2 * i) | q4_code(src, 2 * i + 1) << 4);
            }
        }
    }
}
