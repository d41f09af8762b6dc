/* qmatmul.c — see qmatmul.h. */
#include "kernels/cpu/qmatmul.h"

#include "kernels/kernels.h"

typedef struct {
    float *y;
    const float *x;
    int32_t n;
    const ts_weight *w;
    char *act;
    size_t act_row;
    ts_vec_dot_fn dot;
    ts_vec_dot4_fn dot4;
    ts_qtile tile;
    ts_dtype act_type;
} qmm_args;

enum { ROW_BLOCK = 16 }; /* rows whose data stays in L1 while every token passes over them */

size_t ts_cpu_qmatmul_act_bytes(const ts_weight *w, int32_t n) {
    const ts_dtype_info *info = ts_dtype_info_of((uint32_t)w->type);
    return ts_dtype_row_bytes(info->vec_dot_type, w->cols) * (size_t)n;
}

static void quantize_task(void *ctx, int ith, int nth) {
    const qmm_args *a = ctx;
    for (int32_t t = (int32_t)((int64_t)a->n * ith / nth); t < (int64_t)a->n * (ith + 1) / nth; t++)
        ts_quantize_act_row(a->act_type, a->x + (size_t)t * (size_t)a->w->cols,
                            a->act + (size_t)t * a->act_row, a->w->cols);
}

/* Rows r0..r1 - 1 of W times tokens t0..t1 - 1 by dots, four tokens at a time where there is a
 * 4-row dot. */
static void dot_rows(const qmm_args *a, int64_t r0, int64_t r1, int32_t t0, int32_t t1) {
    const ts_weight *w = a->w;
    int32_t t = t0;
    if (a->dot4) /* four tokens per pass over a row: its blocks unpacked once for four */
        for (; t + 4 <= t1; t += 4) {
            const char *act = a->act + (size_t)t * a->act_row;
            for (int64_t r = r0; r < r1; r++) {
                float out[4];
                a->dot4((const char *)w->data + (size_t)r * w->row_stride, act, a->act_row, w->cols,
                        out);
                for (int j = 0; j < 4; j++)
                    a->y[(size_t)(t + j) * (size_t)w->rows + (size_t)r] = out[j];
            }
        }
    for (; t < t1; t++) {
        const char *act = a->act + (size_t)t * a->act_row;
        float *yt = a->y + (size_t)t * (size_t)w->rows;
        for (int64_t r = r0; r < r1; r++)
            yt[r] = a->dot((const char *)w->data + (size_t)r * w->row_stride, act, w->cols);
    }
}

static void dot_task(void *ctx, int ith, int nth) {
    const qmm_args *a = ctx;
    const ts_weight *w = a->w;
    const ts_qtile tile = a->tile;
    const int64_t blocks = (w->rows + ROW_BLOCK - 1) / ROW_BLOCK;
    const int64_t b0 = blocks * ith / nth, b1 = blocks * (ith + 1) / nth;
    for (int64_t b = b0; b < b1; b++) {
        const int64_t r0 = b * ROW_BLOCK, r1 = r0 + ROW_BLOCK < w->rows ? r0 + ROW_BLOCK : w->rows;
        int32_t t = 0;
        if (tile.fn) /* whole tiles; the rows of the block past the last tile by dots */
            for (; t + tile.tokens <= a->n; t += tile.tokens) {
                int64_t r = r0;
                for (; r + tile.rows <= r1; r += tile.rows)
                    tile.fn((const char *)w->data + (size_t)r * w->row_stride, w->row_stride,
                            a->act + (size_t)t * a->act_row, a->act_row, w->cols,
                            a->y + (size_t)t * (size_t)w->rows + (size_t)r, (size_t)w->rows);
                dot_rows(a, r, r1, t, t + tile.tokens);
            }
        dot_rows(a, r0, r1, t, a->n);
    }
}

static void run(ts_threadpool *pool, int max_threads, ts_task_fn fn, qmm_args *a) {
    if (pool)
        ts_threadpool_run(pool, max_threads, fn, a);
    else
        fn(a, 0, 1);
}

void ts_cpu_qmatmul(ts_threadpool *pool, float *y, const float *x, int32_t n, const ts_weight *w,
                    void *act, ts_cpu_qdot q) {
    const ts_dtype act_type = ts_dtype_info_of((uint32_t)w->type)->vec_dot_type;
    qmm_args a = {y,
                  x,
                  n,
                  w,
                  act,
                  ts_dtype_row_bytes(act_type, w->cols),
                  q.dot ? q.dot : ts_quant_traits_of(w->type)->vec_dot,
                  q.dot4,
                  q.tile,
                  act_type};
    const int64_t work = (int64_t)n * w->rows * w->cols;
    run(pool, (int64_t)n * w->cols < (1 << 14) ? 1 : 0, quantize_task, &a);
    run(pool, work < (1 << 15) ? 1 : 0, dot_task, &a);
}

ts_cpu_qdot ts_cpu_qdot_for(ts_dtype type, ts_cpu_isa isa) {
    ts_cpu_qdot q = {NULL, NULL, {NULL, 0, 0}};
#ifdef TS_CPU_SIMD
    if (isa >= TS_ISA_AVX2 && ts_cpu_isa_detect() >= TS_ISA_AVX2) {
        q.dot = ts_qdot_avx2(type);
        q.dot4 = ts_qdot4_avx2(type);
    }
    if (isa >= TS_ISA_AVX512 && ts_cpu_has_avx512_vnni()) q.tile = ts_qtile_vnni(type);
#else
    (void)type, (void)isa;
#endif
    return q;
}
