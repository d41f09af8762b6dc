/*
 * simd_ops.c — the SIMD kernels, written once against simd.h and compiled per instruction set
 * (see simd_ops.h for the tables and the batch-invariance rules they keep).
 *
 * Matrix products of plain weights (f32, f16, bf16; quantized ones go to qmatmul.h) read them
 * packed in panels of 16 rows (panels.h, made by weight_prepare): a vector holds L consecutive
 * rows at one k, so the kernels compute outer
 * products of a broadcast activation and a vector of rows. Each output y[t][r] is one FMA chain
 * over k = 0 .. cols-1 in order, starting from zero, on the weight's exact f32 value:
 *     acc = fma(x[t][k], W[r][k], acc)
 * which no batch size, tiling, thread count or instruction set changes (AVX2 and AVX-512 agree
 * bit for bit). Two loops perform it:
 *   - direct (n <= PT, decode): the panels converted in registers as they are read, one cache
 *     line per panel stream at a time, with a software prefetch ahead.
 *   - GEMM (n > PT, prefill): per thread, for a block of tokens whose activations stay in L2,
 *     each tile of PR rows is converted to f32 PKC columns at a time (in L1) and multiplied
 *     with PT tokens at a time; the PT x PV accumulators are kept between pieces.
 * Threads split tiles of rows, never k.
 */
#include "kernels/cpu/simd_ops.h"

#include "common/dtype.h"
#include "common/error.h"
#include "common/fp16.h"
#include "kernels/cpu/panels.h"
#include "kernels/cpu/ref.h"
#include "kernels/cpu/simd.h"

#include <math.h>

#define L TS_SIMD_LANES

#if defined(TS_SIMD_AVX2)
#define TABLE ts_cpu_kernels_avx2
#define ISA_NAME "avx2"
#elif defined(TS_SIMD_AVX512)
#define TABLE ts_cpu_kernels_avx512
#define ISA_NAME "avx512"
#else
#define TABLE ts_cpu_kernels_avx512emu
#define ISA_NAME "avx512emu"
#endif

/* The matmul tile: PT tokens times PV vectors of rows. AVX-512: 6 x 4 accumulators + 4 weight
 * vectors + 1 broadcast of the 32 zmm; per k, 4 weight loads and 6 broadcasts feed 24 FMAs.
 * AVX2: 6 x 2 + 2 + 1 of the 16 ymm. The emulation runs the AVX-512 shape. */
#define PT 6
#if defined(TS_SIMD_AVX2)
#define PV 2
#else
#define PV 4
#endif
#define PR (PV * L) /* rows per tile: 16 (AVX2) or 64, a multiple of TS_PANEL_ROWS */

enum {
    PKC = 128,                 /* columns per f32 piece of a tile: PKC x PR floats stay in L1 */
    MB_MAX = 96,               /* tokens per GEMM block at most (a multiple of PT) */
    X_BLOCK_BYTES = 192 << 10, /* activations of one token block, kept in L2 */
    PANEL_PREFETCH = 1024,     /* bytes ahead on each panel stream (direct loop) */
    PAR_MIN_WORK = 1 << 15,    /* below this many multiply-adds a kernel runs on one thread */
    MAX_HEAD_DIM = 512,
};

/* ---- reading panels as exact f32 ---- */

/* Rows lane0 .. lane0 + L - 1 of a panel at column k, as exact f32. */
TS_INLINE ts_v load_rows(ts_dtype type, const char *panel, int lane0, int64_t k) {
    const size_t e = (size_t)k * TS_PANEL_ROWS + (size_t)lane0;
    switch (type) {
    case TS_DTYPE_F16: return ts_v_load_f16((const uint16_t *)panel + e);
    case TS_DTYPE_BF16: return ts_v_load_bf16((const uint16_t *)panel + e);
    default: return ts_v_load((const float *)panel + e);
    }
}

/* Vector v (0 .. PV) of the tile whose first row is r0: its panel and first lane in it. A vector
 * past the last panel reads the last panel again (its results are dropped). */
TS_INLINE const char *tile_panel(const ts_weight *w, size_t panel_bytes, int64_t r0, int v,
                                 int *lane0) {
    int64_t n_panels = (w->rows + TS_PANEL_ROWS - 1) / TS_PANEL_ROWS;
    int64_t row = r0 + (int64_t)v * L, p = row / TS_PANEL_ROWS;
    *lane0 = (int)(row % TS_PANEL_ROWS);
    if (p >= n_panels) p = n_panels - 1;
    return (const char *)w->panels + (size_t)p * panel_bytes;
}

/* Calls CALL(m) with the constant m equal to the runtime pt (1..PT). */
#define FOR_PT(pt, CALL)                                                                           \
    switch (pt) {                                                                                  \
    case 1: CALL(1); break;                                                                        \
    case 2: CALL(2); break;                                                                        \
    case 3: CALL(3); break;                                                                        \
    case 4: CALL(4); break;                                                                        \
    case 5: CALL(5); break;                                                                        \
    case 6: CALL(6); break;                                                                        \
    }

/* Calls CALL(t) with the constant t equal to the runtime weight type, so that the always-inline
 * kernels below are specialised per type. */
#define WITH_CONST_TYPE(type, CALL)                                                                \
    switch (type) {                                                                                \
    case TS_DTYPE_F32: CALL(TS_DTYPE_F32); break;                                                  \
    case TS_DTYPE_F16: CALL(TS_DTYPE_F16); break;                                                  \
    case TS_DTYPE_BF16: CALL(TS_DTYPE_BF16); break;                                                \
    default: break;                                                                                \
    }

typedef struct {
    float *y;
    const float *x;
    int32_t n;
    const ts_weight *w;
    float *const *scratch;
} mm_args;

/* Writes acc[t][v] (rows r0 + v L ..) into y for the rows that exist. */
TS_INLINE void tile_store(int pt, const ts_weight *w, float *y, int64_t t0, int64_t r0,
                          ts_v acc[][PV]) {
    for (int t = 0; t < pt; t++)
        for (int v = 0; v < PV; v++) {
            int64_t r = r0 + (int64_t)v * L;
            float *dst = y + (size_t)(t0 + t) * (size_t)w->rows + (size_t)r;
            if (r + L <= w->rows) ts_v_store(dst, acc[t][v]);
            else if (r < w->rows) ts_v_store_partial(dst, acc[t][v], (int)(w->rows - r));
        }
}

/* ---- direct: n <= PT tokens, panels converted in registers (decode) ---- */

/* Tokens 0 .. pt, rows r0 .. r0 + PR, over every column; each panel stream is prefetched
 * PANEL_PREFETCH bytes ahead, one cache line at a time (the hardware prefetchers stop at page
 * boundaries). */
TS_INLINE void direct_tile(ts_dtype type, int pt, const mm_args *a, int64_t r0) {
    const ts_weight *w = a->w;
    const size_t panel_bytes = ts_panel_bytes(type, w->cols);
    const size_t col_bytes = type == TS_DTYPE_F32 ? 64 : 32; /* one column of a panel */
    const char *panel[PV];
    int lane0[PV];
    for (int v = 0; v < PV; v++)
        panel[v] = tile_panel(w, panel_bytes, r0, v, &lane0[v]);
    const float *x[PT];
    for (int t = 0; t < pt; t++)
        x[t] = a->x + (size_t)t * (size_t)w->cols;
    ts_v acc[PT][PV];
    for (int t = 0; t < pt; t++)
        for (int v = 0; v < PV; v++)
            acc[t][v] = ts_v_zero();
    for (int64_t k = 0; k < w->cols; k++) {
        if ((size_t)k * col_bytes % 64 == 0)
            for (int v = 0; v < PV; v++)
                if (lane0[v] == 0) __builtin_prefetch(panel[v] + k * col_bytes + PANEL_PREFETCH);
        ts_v wv[PV];
        for (int v = 0; v < PV; v++)
            wv[v] = load_rows(type, panel[v], lane0[v], k);
        for (int t = 0; t < pt; t++) {
            ts_v xb = ts_v_set1(x[t][k]);
            for (int v = 0; v < PV; v++)
                acc[t][v] = ts_v_fma(xb, wv[v], acc[t][v]);
        }
    }
    tile_store(pt, w, a->y, 0, r0, acc);
}

TS_INLINE void direct_range(ts_dtype type, const mm_args *a, int64_t tile0, int64_t tile1) {
    for (int64_t tile = tile0; tile < tile1; tile++) {
#define CALL(m) direct_tile(type, m, a, tile * PR)
        FOR_PT(a->n, CALL)
#undef CALL
    }
}

static void direct_task(void *ctx, int ith, int nth) {
    const mm_args *a = ctx;
    int64_t tiles = (a->w->rows + PR - 1) / PR;
    int64_t g0 = tiles * ith / nth, g1 = tiles * (ith + 1) / nth;
#define CALL(type) direct_range(type, a, g0, g1)
    WITH_CONST_TYPE(a->w->type, CALL)
#undef CALL
}

/* ---- GEMM: n > PT tokens, tiles converted to f32 pieces (prefill) ---- */

/* Rows r0 .. r0 + PR, columns [k0, k0 + kc) as f32 into wp[k - k0][PR] (exact). */
TS_INLINE void tile_convert(ts_dtype type, const ts_weight *w, int64_t r0, int64_t k0, int64_t kc,
                            float *wp) {
    const size_t panel_bytes = ts_panel_bytes(type, w->cols);
    for (int v = 0; v < PV; v++) {
        int lane0;
        const char *panel = tile_panel(w, panel_bytes, r0, v, &lane0);
        for (int64_t k = 0; k < kc; k++)
            ts_v_store(wp + (size_t)k * PR + (size_t)v * L, load_rows(type, panel, lane0, k0 + k));
    }
}

/* pt tokens from t against the converted piece wp (kc columns from k0): the chains continue
 * from accbuf (zero on the first piece) and end in y after the last. */
TS_INLINE void gemm_tile(int pt, const mm_args *a, int64_t t, int64_t r0, int64_t k0, int64_t kc,
                         const float *wp, float *accbuf) {
    const ts_weight *w = a->w;
    const int first = k0 == 0, last = k0 + kc == w->cols;
    ts_v acc[PT][PV];
    for (int i = 0; i < pt; i++)
        for (int v = 0; v < PV; v++)
            acc[i][v] = first ? ts_v_zero() : ts_v_load(accbuf + (size_t)(i * PV + v) * L);
    const float *x[PT];
    for (int i = 0; i < pt; i++)
        x[i] = a->x + (size_t)(t + i) * (size_t)w->cols + (size_t)k0;
    for (int64_t k = 0; k < kc; k++) {
        ts_v wv[PV];
        for (int v = 0; v < PV; v++)
            wv[v] = ts_v_load(wp + (size_t)k * PR + (size_t)v * L);
        for (int i = 0; i < pt; i++) {
            ts_v xb = ts_v_set1(x[i][k]);
            for (int v = 0; v < PV; v++)
                acc[i][v] = ts_v_fma(xb, wv[v], acc[i][v]);
        }
    }
    if (last) {
        tile_store(pt, w, a->y, t, r0, acc);
        return;
    }
    for (int i = 0; i < pt; i++)
        for (int v = 0; v < PV; v++)
            ts_v_store(accbuf + (size_t)(i * PV + v) * L, acc[i][v]);
}

/* Per thread a range of row tiles; per block of tokens whose activations stay in L2, per tile,
 * per piece of PKC columns: the piece converted once, then every group of PT tokens over it. */
TS_INLINE void gemm_typed(const mm_args *a, ts_dtype type, int ith, int nth) {
    const ts_weight *w = a->w;
    int64_t tiles = (w->rows + PR - 1) / PR;
    int64_t g0 = tiles * ith / nth, g1 = tiles * (ith + 1) / nth;
    float *wp = a->scratch[ith];
    float *accbuf = wp + (size_t)PKC * PR;
    int64_t mb_max = (X_BLOCK_BYTES / ((int64_t)w->cols * 4)) / PT * PT;
    if (mb_max < PT) mb_max = PT;
    if (mb_max > MB_MAX) mb_max = MB_MAX;
    for (int64_t t0 = 0; t0 < a->n; t0 += mb_max) {
        int64_t mb = a->n - t0 < mb_max ? a->n - t0 : mb_max;
        for (int64_t g = g0; g < g1; g++)
            for (int64_t k0 = 0; k0 < w->cols; k0 += PKC) {
                int64_t kc = w->cols - k0 < PKC ? w->cols - k0 : PKC;
                tile_convert(type, w, g * PR, k0, kc, wp);
                for (int64_t i = 0; i < mb; i += PT) {
                    int pt = (int)(mb - i < PT ? mb - i : PT);
                    float *acc_i = accbuf + (size_t)i * PV * L;
#define CALL(m) gemm_tile(m, a, t0 + i, g * PR, k0, kc, wp, acc_i)
                    FOR_PT(pt, CALL)
#undef CALL
                }
            }
    }
}

static void gemm_task(void *ctx, int ith, int nth) {
    const mm_args *a = ctx;
#define CALL(type) gemm_typed(a, type, ith, nth)
    WITH_CONST_TYPE(a->w->type, CALL)
#undef CALL
}

static int threads_for(int64_t work) {
    return work < PAR_MIN_WORK ? 1 : 0;
}

static void simd_matmul(const ts_cpu_exec *ex, float *y, const float *x, int32_t n,
                        const ts_weight *w) {
    if (!w->panels) { /* not from weight_prepare (the engine always prepares): correct, slow */
        ts_ref_matmul(y, x, n, w);
        return;
    }
    mm_args a = {y, x, n, w, ex->scratch};
    int max_threads = threads_for((int64_t)n * w->rows * w->cols);
    ts_threadpool_run(ex->pool, max_threads, n <= PT ? direct_task : gemm_task, &a);
}

static size_t simd_scratch_bytes(int32_t max_ctx) {
    size_t gemm = ((size_t)PKC * PR + (size_t)MB_MAX * PV * L) * sizeof(float);
    size_t attn = (size_t)max_ctx * sizeof(float) + L * sizeof(float);
    return gemm > attn ? gemm : attn;
}

/* ---- attention ---- */

typedef struct {
    float *out;
    const float *q;
    const ts_kv_layer *kv;
    int32_t n_heads;
    float scale;
    const ts_cpu_batch *b;
    float *const *scratch;
} attn_args;

TS_INLINE ts_v load_kv(int f16, const void *base, size_t at) {
    return f16 ? ts_v_load_f16((const uint16_t *)base + at) : ts_v_load((const float *)base + at);
}

TS_INLINE ts_v load_kv_partial(int f16, const void *base, size_t at, int n) {
    if (!f16) return ts_v_load_partial((const float *)base + at, n);
    /* A masked load and one vector conversion (exact, like the scalar one): this runs for every
     * key when the head is narrower than a vector, e.g. head_dim 8 in 16 lanes. */
    return ts_v_load_f16_partial((const uint16_t *)base + at, n);
}

/* One (row, head): scores q·k_t * scale for t = 0..pos, softmax, weighted sum of v_t. Every
 * loop runs over t in increasing order and over d in chunks of L, whatever else is in the batch. */
/* n_full, rem: head_dim / L and head_dim % L, passed in so that the common head sizes get a
 * copy with constant loop counts (unrolled, accumulators in registers; see attend_typed). */
TS_INLINE void attend_one(int f16, const attn_args *a, int32_t r, int32_t h, float *scores,
                          const int32_t n_full, const int32_t rem) {
    const ts_kv_layer *kv = a->kv;
    const ts_cpu_batch *b = a->b;
    const int32_t hd = kv->head_dim, bs = kv->block_size, pos = b->pos[r];
    const int32_t kvh = h / (a->n_heads / kv->n_kv_heads);
    const float *qh = a->q + ((size_t)r * (size_t)a->n_heads + (size_t)h) * (size_t)hd;
    float *oh = a->out + ((size_t)r * (size_t)a->n_heads + (size_t)h) * (size_t)hd;
    const ts_batch_seq *seq = &b->seqs[b->row_seq[r]];
    const int32_t *table = b->block_ids + seq->block0;
#define SLOT_AT(t)                                                                                 \
    ((((size_t)table[(t) / bs] * (size_t)kv->n_kv_heads + (size_t)kvh) * (size_t)bs +              \
      (size_t)((t) % bs)) *                                                                        \
     (size_t)hd)

    /* scores: per key one vector accumulator over d, then ts_v_hsum; L keys at a time share the
     * horizontal sums (ts_v_hsum_lanes, the same bits), the last keys go one by one */
    const ts_v q_tail = rem ? ts_v_load_partial(qh + n_full * L, rem) : ts_v_zero();
#define KEY_DOT(t, acc)                                                                            \
    do {                                                                                           \
        size_t at_ = SLOT_AT(t);                                                                   \
        acc = ts_v_zero();                                                                         \
        for (int32_t c = 0; c < n_full; c++)                                                       \
            acc = ts_v_fma(load_kv(f16, kv->k, at_ + (size_t)c * L), ts_v_load(qh + c * L), acc); \
        if (rem)                                                                                   \
            acc = ts_v_fma(load_kv_partial(f16, kv->k, at_ + (size_t)n_full * L, rem), q_tail,    \
                           acc);                                                                   \
    } while (0)
    const ts_v vscale = ts_v_set1(a->scale);
    ts_v score_max = ts_v_set1(-INFINITY);
    int32_t t0 = 0;
    for (; t0 + L <= pos + 1; t0 += L) {
        ts_v acc[L];
        for (int j = 0; j < L; j++)
            KEY_DOT(t0 + j, acc[j]);
        ts_v sc = ts_v_mul(ts_v_hsum_lanes(acc), vscale);
        ts_v_store(scores + t0, sc);
        score_max = ts_v_max(score_max, sc);
    }
    float max = ts_v_hmax(score_max);
    for (int32_t t = t0; t <= pos; t++) {
        ts_v acc;
        KEY_DOT(t, acc);
        scores[t] = ts_v_hsum(acc) * a->scale;
        if (scores[t] > max) max = scores[t];
    }
#undef KEY_DOT

    const int32_t n = pos + 1;
    const ts_v vmax = ts_v_set1(max);
    ts_v vsum = ts_v_zero();
    int32_t t = 0;
    for (; t + L <= n; t += L) {
        ts_v e = ts_v_exp(ts_v_sub(ts_v_load(scores + t), vmax));
        ts_v_store(scores + t, e);
        vsum = ts_v_add(vsum, e);
    }
    if (t < n) { /* store the tail, then reload it zero-padded so padding adds nothing */
        ts_v e = ts_v_exp(ts_v_sub(ts_v_load_partial(scores + t, n - t), vmax));
        ts_v_store_partial(scores + t, e, n - t);
        vsum = ts_v_add(vsum, ts_v_load_partial(scores + t, n - t));
    }
    const ts_v total = ts_v_set1(ts_v_hsum(vsum));

    if (n_full + (rem != 0) == 1) { /* one vector per head (head_dim <= L): keep the sum in a
                                        * register; the array form below lives on the stack */
        ts_v acc1 = ts_v_zero();
        for (int32_t u = 0; u < n; u++) {
            size_t at = SLOT_AT(u);
            ts_v vv = rem ? load_kv_partial(f16, kv->v, at, rem) : load_kv(f16, kv->v, at);
            acc1 = ts_v_fma(ts_v_set1(scores[u]), vv, acc1);
        }
        if (rem) ts_v_store_partial(oh, ts_v_div(acc1, total), rem);
        else ts_v_store(oh, ts_v_div(acc1, total));
        return;
    }
    ts_v acc[MAX_HEAD_DIM / L];
    const int32_t n_chunks = n_full + (rem != 0);
    for (int32_t c = 0; c < n_chunks; c++)
        acc[c] = ts_v_zero();
    for (int32_t u = 0; u < n; u++) {
        size_t at = SLOT_AT(u);
        ts_v p = ts_v_set1(scores[u]);
        for (int32_t c = 0; c < n_full; c++)
            acc[c] = ts_v_fma(p, load_kv(f16, kv->v, at + (size_t)c * L), acc[c]);
        if (rem)
            acc[n_full] =
                ts_v_fma(p, load_kv_partial(f16, kv->v, at + (size_t)n_full * L, rem), acc[n_full]);
    }
    for (int32_t c = 0; c < n_full; c++)
        ts_v_store(oh + c * L, ts_v_div(acc[c], total));
    if (rem) ts_v_store_partial(oh + n_full * L, ts_v_div(acc[n_full], total), rem);
#undef SLOT_AT
}

/* attend_one with constant KV type and, for head sizes that are 1, 2, 4, 8 or 16 whole vectors
 * (64 and 128 are the usual ones), constant chunk counts; the same operations either way. */
TS_INLINE void attend_typed(int f16, const attn_args *a, int32_t r, int32_t h, float *scores) {
    const int32_t hd = a->kv->head_dim, n_full = hd / L, rem = hd % L;
    if (rem) {
        attend_one(f16, a, r, h, scores, n_full, rem);
        return;
    }
    switch (n_full) {
    case 1: attend_one(f16, a, r, h, scores, 1, 0); break;
    case 2: attend_one(f16, a, r, h, scores, 2, 0); break;
    case 4: attend_one(f16, a, r, h, scores, 4, 0); break;
    case 8: attend_one(f16, a, r, h, scores, 8, 0); break;
    case 16: attend_one(f16, a, r, h, scores, 16, 0); break;
    default: attend_one(f16, a, r, h, scores, n_full, 0); break;
    }
}

static void attn_task(void *ctx, int ith, int nth) {
    const attn_args *a = ctx;
    const int f16 = a->kv->type == TS_DTYPE_F16;
    const int64_t total = (int64_t)a->b->n_tokens * a->n_heads;
    /* interleaved, so the long-context rows of a prompt are spread over the threads */
    for (int64_t it = ith; it < total; it += nth) {
        int32_t r = (int32_t)(it / a->n_heads), h = (int32_t)(it % a->n_heads);
        if (f16)
            attend_typed(1, a, r, h, a->scratch[ith]);
        else
            attend_typed(0, a, r, h, a->scratch[ith]);
    }
}

static void simd_attention(const ts_cpu_exec *ex, float *out, const float *q, const ts_kv_layer *kv,
                           int32_t n_heads, float scale) {
    TS_ASSERT(kv->head_dim <= MAX_HEAD_DIM);
    attn_args a = {out, q, kv, n_heads, scale, ex->batch, ex->scratch};
    int64_t work = (int64_t)ex->batch->n_tokens * ex->batch->max_ctx * n_heads * kv->head_dim;
    ts_threadpool_run(ex->pool, threads_for(work), attn_task, &a);
}

/* ---- row- and element-wise ---- */

typedef struct {
    float *out;
    const float *x;
    const float *w;
    int32_t n, dim;
    float eps;
} norm_args;

static void rmsnorm_task(void *ctx, int ith, int nth) {
    const norm_args *a = ctx;
    const int32_t dim = a->dim;
    for (int32_t i = (int32_t)((int64_t)a->n * ith / nth); i < (int64_t)a->n * (ith + 1) / nth;
         i++) {
        const float *x = a->x + (size_t)i * (size_t)dim;
        float *o = a->out + (size_t)i * (size_t)dim;
        ts_v acc = ts_v_zero();
        int32_t k = 0;
        for (; k + L <= dim; k += L)
            acc = ts_v_fma(ts_v_load(x + k), ts_v_load(x + k), acc);
        if (k < dim) {
            ts_v t = ts_v_load_partial(x + k, dim - k);
            acc = ts_v_fma(t, t, acc);
        }
        const ts_v scale = ts_v_set1(1.0f / sqrtf(ts_v_hsum(acc) / (float)dim + a->eps));
        for (k = 0; k + L <= dim; k += L)
            ts_v_store(o + k, ts_v_mul(ts_v_mul(ts_v_load(x + k), scale), ts_v_load(a->w + k)));
        if (k < dim)
            ts_v_store_partial(o + k,
                               ts_v_mul(ts_v_mul(ts_v_load_partial(x + k, dim - k), scale),
                                        ts_v_load_partial(a->w + k, dim - k)),
                               dim - k);
    }
}

static void simd_rmsnorm(const ts_cpu_exec *ex, float *out, const float *x, const float *weight,
                         int32_t n, int32_t dim, float eps) {
    norm_args a = {out, x, weight, n, dim, eps};
    ts_threadpool_run(ex->pool, threads_for((int64_t)n * dim * 4), rmsnorm_task, &a);
}

typedef struct {
    float *y;
    const float *x;
    int64_t count;
} ew_args;

/* [begin, end) of thread ith, cut at multiples of L */
static void ew_range(int64_t count, int ith, int nth, int64_t *begin, int64_t *end) {
    int64_t chunks = (count + L - 1) / L;
    *begin = chunks * ith / nth * L;
    *end = chunks * (ith + 1) / nth * L;
    if (*end > count) *end = count;
}

TS_INLINE ts_v silu_mul_v(ts_v g, ts_v u) {
    ts_v one = ts_v_set1(1.0f);
    return ts_v_mul(ts_v_div(g, ts_v_add(one, ts_v_exp(ts_v_sub(ts_v_zero(), g)))), u);
}

static void silu_mul_task(void *ctx, int ith, int nth) {
    const ew_args *a = ctx;
    int64_t i, end;
    ew_range(a->count, ith, nth, &i, &end);
    for (; i + L <= end; i += L)
        ts_v_store(a->y + i, silu_mul_v(ts_v_load(a->y + i), ts_v_load(a->x + i)));
    if (i < end) {
        int n = (int)(end - i);
        ts_v_store_partial(
            a->y + i, silu_mul_v(ts_v_load_partial(a->y + i, n), ts_v_load_partial(a->x + i, n)),
            n);
    }
}

static void add_task(void *ctx, int ith, int nth) {
    const ew_args *a = ctx;
    int64_t i, end;
    ew_range(a->count, ith, nth, &i, &end);
    for (; i + L <= end; i += L)
        ts_v_store(a->y + i, ts_v_add(ts_v_load(a->y + i), ts_v_load(a->x + i)));
    for (; i < end; i++)
        a->y[i] += a->x[i];
}

static void simd_silu_mul(const ts_cpu_exec *ex, float *gate, const float *up, int64_t count) {
    ew_args a = {gate, up, count};
    ts_threadpool_run(ex->pool, threads_for(count * 16), silu_mul_task, &a);
}

static void simd_add(const ts_cpu_exec *ex, float *y, const float *x, int64_t count) {
    ew_args a = {y, x, count};
    ts_threadpool_run(ex->pool, threads_for(count), add_task, &a);
}

typedef struct {
    const float *logits;
    int32_t n, n_cols;
    int32_t *index;
    float *value;
} argmax_args;

static void argmax_task(void *ctx, int ith, int nth) {
    const argmax_args *a = ctx;
    for (int32_t i = (int32_t)((int64_t)a->n * ith / nth); i < (int64_t)a->n * (ith + 1) / nth;
         i++) {
        const float *row = a->logits + (size_t)i * (size_t)a->n_cols;
        ts_v m = ts_v_set1(-INFINITY);
        int32_t k = 0;
        for (; k + L <= a->n_cols; k += L)
            m = ts_v_max(m, ts_v_load(row + k));
        if (k < a->n_cols)
            m = ts_v_max(m, ts_v_load_partial_fill(row + k, a->n_cols - k, -INFINITY));
        float best = ts_v_hmax(m);
        int32_t at = 0;
        while (at < a->n_cols - 1 && row[at] != best)
            at++; /* first index holding the max */
        a->index[i] = at;
        if (a->value) a->value[i] = row[at];
    }
}

static void simd_argmax(const ts_cpu_exec *ex, const float *logits, int32_t n, int32_t n_cols,
                        int32_t *index, float *value) {
    argmax_args a = {logits, n, n_cols, index, value};
    ts_threadpool_run(ex->pool, threads_for((int64_t)n * n_cols), argmax_task, &a);
}

const ts_cpu_kernels TABLE = {
    .isa = ISA_NAME,
    .lanes = L,
    .scratch_bytes = simd_scratch_bytes,
    .matmul = simd_matmul,
    .rmsnorm = simd_rmsnorm,
    .attention = simd_attention,
    .silu_mul = simd_silu_mul,
    .add = simd_add,
    .argmax = simd_argmax,
};
