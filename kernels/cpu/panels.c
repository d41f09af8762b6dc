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
    default: return 0;
    }
}

void ts_panels_pack(const ts_weight *w, void *out) {
    const int64_t n_panels = (w->rows + TS_PANEL_ROWS - 1) / TS_PANEL_ROWS;
    const size_t panel_bytes = ts_panel_bytes(w->type, w->cols);
    memset(out, 0, (size_t)n_panels * panel_bytes);
    const size_t elem = (size_t)ts_dtype_block_bytes(w->type);
    for (int64_t r = 0; r < w->rows; r++) {
        const char *row = (const char *)w->data + (size_t)r * w->row_stride;
        char *panel = (char *)out + (size_t)(r / TS_PANEL_ROWS) * panel_bytes;
        const int j = (int)(r % TS_PANEL_ROWS);
        for (int64_t k = 0; k < w->cols; k++)
            memcpy(panel + ((size_t)k * TS_PANEL_ROWS + (size_t)j) * elem, row + (size_t)k * elem,
                   elem);
    }
}
