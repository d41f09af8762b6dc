/*
 * test_kernels_simd.c — every SIMD implementation this CPU can run (avx2, the 16-lane avx512emu,
 * and avx512 when present) against the scalar reference, and batch invariance bit for bit.
 *
 * Tolerances (fast vs reference; the reference accumulates in double):
 *   matmul     |d| <= cols * 2^-23 * sum_k |x_k w_k|  (a rounding-error bound for any order of
 *              the f32 sum, with a factor 2 to spare)
 *   rmsnorm    |d| <= 1e-5 * |ref| + 1e-6
 *   attention  |d| <= 2e-5 * (1 + |ref|)   (values ~ N(0,1); scores and softmax in f32)
 *   silu_mul   |d| <= 4e-6 * |ref| + 1e-7  (the vector exp is within 2 ulp)
 *   rope, add, embed, kv_store, logit_rows, argmax, sample: identical (same operations)
 * Batch invariance: bitwise, for matmul (batch 1, 5, 64; threads 1, 2, 3), rmsnorm, rope and
 * attention (sequences batched vs alone, a prompt in one chunk vs several, shuffled blocks).
 */
#include "common/error.h"
#include "common/fp16.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_batch.h"
#include "kernels/cpu/ref.h"
#include "test.h"
#include "test_kernels_util.h"

static const ts_dtype all_types[] = {
    TS_DTYPE_F32,  TS_DTYPE_F16,    TS_DTYPE_BF16, TS_DTYPE_Q8_0, TS_DTYPE_Q4_0,
    TS_DTYPE_Q4_1, TS_DTYPE_Q5_0,   TS_DTYPE_Q5_1, TS_DTYPE_IQ4_NL, TS_DTYPE_Q2_K,
    TS_DTYPE_Q3_K, TS_DTYPE_Q4_K,   TS_DTYPE_Q5_K, TS_DTYPE_Q6_K};
enum { N_TYPES = sizeof all_types / sizeof all_types[0] };

/* Whether a weight of `type` can have `cols` columns (whole blocks). */
static int fits(ts_dtype type, int64_t cols) {
    return cols % ts_dtype_block_elems(type) == 0;
}

static ts_cpu_impl impls[TS_CPU_IMPL_COUNT];
static int n_impls;

static ts_backend *make_backend(ts_cpu_impl impl, int threads) {
    ts_backend *be = NULL;
    ts_backend_options o = {.n_threads = threads};
    int rc = ts_cpu_backend_create(&o, impl, &be);
    if (rc) fprintf(stderr, "  cannot create %s: %s\n", ts_cpu_impl_name(impl), ts_error_message());
    TS_ASSERT(rc == 0);
    return be;
}

/* ---- matmul ---- */

/* The backend's own form of a host weight (packed in row panels, kernels/cpu/panels.h). */
static ts_weight prepared(ts_backend *be, const ts_weight *host) {
    ts_weight w;
    int rc = be->weight_prepare(be, host, &w);
    if (rc) fprintf(stderr, "  weight_prepare: %s\n", ts_error_message());
    TS_ASSERT(rc == 0);
    return w;
}

/* What the SIMD matmul may get: the prepared weight (its panels), or an unprepared view, which
 * it hands to the scalar reference. */
enum { LAYOUT_UNPREPARED, LAYOUT_PREPARED, N_LAYOUTS };
static ts_weight in_layout(ts_backend *be, const ts_weight *host, int layout) {
    return layout == LAYOUT_PREPARED ? prepared(be, host) : *host;
}

static int matmul_close(const float *fast, const float *ref, const float *x, const ts_weight *w,
                        int32_t n) {
    return tk_matmul_close(fast, ref, x, w, n, (double)w->cols * ldexp(1.0, -23));
}

static void test_matmul_every_type_and_odd_shape_against_reference(void) {
    static const int64_t plain_cols[] = {1, 3, 8, 15, 16, 17, 33, 172, 768, 2048};
    static const int64_t quant_cols[] = {32, 64, 96, 160, 256, 768, 2048};
    static const int64_t rows_list[] = {1, 3, 5, 33, 172};
    static const int32_t n_list[] = {1, 2, 3, 4, 6, 7, 13};
    ts_rng rng;
    ts_rng_seed(&rng, 11);
    for (int e = 0; e < n_impls; e++) {
        ts_backend *be = make_backend(impls[e], 2);
        for (int t = 0; t < N_TYPES; t++) {
            ts_dtype type = all_types[t];
            int quant = ts_dtype_is_quantized(type);
            const int64_t *cols_list = quant ? quant_cols : plain_cols;
            int n_cols = quant ? 7 : 10;
            for (int c = 0; c < n_cols; c++)
                for (int r = 0; r < 5; r++) {
                    int64_t cols = cols_list[c], rows = rows_list[r];
                    if (!fits(type, cols)) continue;
                    if (cols * rows > 200000 && r != 2) continue; /* keep the big ones few */
                    ts_weight host = tk_weight(&rng, type, rows, cols, 1.0f);
                    for (int layout = 0; layout < N_LAYOUTS; layout++) {
                        ts_weight w = in_layout(be, &host, layout);
                        for (int ni = 0; ni < 7; ni++) {
                            int32_t n = n_list[ni];
                            float *x = tk_randn(&rng, (size_t)n * cols, 1.0f);
                            float *y = malloc((size_t)n * rows * sizeof(float));
                            float *yr = malloc((size_t)n * rows * sizeof(float));
                            be->matmul(be, y, x, n, &w);
                            ts_ref_matmul(yr, x, n, &host);
                            CHECK(matmul_close(y, yr, x, &host, n));
                            free(x);
                            free(y);
                            free(yr);
                        }
                        if (layout == LAYOUT_PREPARED) be->weight_release(be, &w);
                    }
                    tk_weight_free(&host);
                }
        }
        ts_backend_destroy(be);
    }
}

/* A row's result must not depend on the batch it is in or on the thread count. */
static void test_matmul_is_batch_and_thread_invariant_bitwise(void) {
    enum { N = 64 };
    static const int64_t shapes[][2] = {{172, 64}, {37, 768}, {64, 172}, {33, 2048}};
    ts_rng rng;
    ts_rng_seed(&rng, 12);
    for (int e = 0; e < n_impls; e++) {
        ts_backend *be[3];
        for (int t = 0; t < 3; t++)
            be[t] = make_backend(impls[e], t + 1);
        for (int t = 0; t < N_TYPES; t++)
            for (int s = 0; s < 4; s++) {
                int64_t rows = shapes[s][0], cols = shapes[s][1];
                if (!fits(all_types[t], cols)) continue;
                ts_weight host = tk_weight(&rng, all_types[t], rows, cols, 1.0f);
                float *x = tk_randn(&rng, (size_t)N * cols, 1.0f);
                float *full = malloc((size_t)N * rows * sizeof(float));
                float *part = malloc((size_t)N * rows * sizeof(float));
                for (int layout = 0; layout < N_LAYOUTS; layout++) {
                    ts_weight w0 = in_layout(be[0], &host, layout);
                    be[0]->matmul(be[0], full, x, N, &w0); /* batch 64, one thread */
                    for (int th = 0; th < 3; th++) {
                        ts_weight w = in_layout(be[th], &host, layout);
                        be[th]->matmul(be[th], part, x, N, &w); /* batch 64 */
                        CHECK(tk_same_bits(full, part, (size_t)N * rows));
                        for (int i = 0; i < N; i++) /* batch 1 */
                            be[th]->matmul(be[th], part + i * rows, x + i * cols, 1, &w);
                        CHECK(tk_same_bits(full, part, (size_t)N * rows));
                        for (int i = 0; i < N; i += 5) /* batches of 5 (the last one of 4) */
                            be[th]->matmul(be[th], part + i * rows, x + i * cols,
                                           i + 5 <= N ? 5 : N - i, &w);
                        CHECK(tk_same_bits(full, part, (size_t)N * rows));
                        for (int i = 0; i < N; i += 7) /* batches of 7: one panel tile and one */
                            be[th]->matmul(be[th], part + i * rows, x + i * cols,
                                           i + 7 <= N ? 7 : N - i, &w);
                        CHECK(tk_same_bits(full, part, (size_t)N * rows));
                        if (layout == LAYOUT_PREPARED) be[th]->weight_release(be[th], &w);
                    }
                    if (layout == LAYOUT_PREPARED) be[0]->weight_release(be[0], &w0);
                }
                free(x);
                free(full);
                free(part);
                tk_weight_free(&host);
            }
        for (int t = 0; t < 3; t++)
            ts_backend_destroy(be[t]);
    }
}

/* Quantized weights: every implementation (the AVX2 dots, the VNNI tiles and their edges: rows
 * past the last whole tile, tokens past the last whole tile) gives the reference's bits, for
 * batches 1..64 and 1..3 threads. */
static void test_quant_matmul_equals_reference_bitwise(void) {
    static const int64_t shapes[][2] = {{16, 256}, {37, 512}, {64, 768}, {21, 96}};
    static const int32_t n_list[] = {1, 2, 3, 4, 5, 7, 8, 9, 13, 16, 31, 33, 64};
    enum { N_MAX = 64 };
    ts_rng rng;
    ts_rng_seed(&rng, 13);
    for (int e = 0; e < n_impls; e++)
        for (int th = 1; th <= 3; th++) {
            ts_backend *be = make_backend(impls[e], th);
            for (int t = 0; t < N_TYPES; t++)
                for (int s = 0; s < 4; s++) {
                    const int64_t rows = shapes[s][0], cols = shapes[s][1];
                    if (!ts_dtype_is_quantized(all_types[t]) || !fits(all_types[t], cols)) continue;
                    ts_weight host = tk_weight(&rng, all_types[t], rows, cols, 1.0f);
                    ts_weight w = prepared(be, &host);
                    float *x = tk_randn(&rng, (size_t)N_MAX * cols, 1.0f);
                    float *y = malloc((size_t)N_MAX * rows * sizeof(float));
                    float *yr = malloc((size_t)N_MAX * rows * sizeof(float));
                    for (int ni = 0; ni < (int)(sizeof n_list / sizeof n_list[0]); ni++) {
                        const int32_t n = n_list[ni];
                        be->matmul(be, y, x, n, &w);
                        ts_ref_matmul(yr, x, n, &host);
                        if (!tk_same_bits(y, yr, (size_t)n * rows)) {
                            fprintf(stderr, "  %s %s %lld x %lld, batch %d, %d threads\n",
                                    ts_cpu_impl_name(impls[e]), ts_dtype_name(all_types[t]),
                                    (long long)rows, (long long)cols, n, th);
                            CHECK(0);
                        }
                    }
                    be->weight_release(be, &w);
                    free(x), free(y), free(yr);
                    tk_weight_free(&host);
                }
            ts_backend_destroy(be);
        }
}

/* Prepared weights: one FMA chain per output in k order, so every instruction set gives the
 * same bits, prefill and decode alike, for every weight type. */
static void test_matmul_panels_agree_across_instruction_sets(void) {
    enum { ROWS = 83, COLS = 320, N = 100 };
    ts_rng rng;
    ts_rng_seed(&rng, 14);
    static const int32_t ns[] = {1, 6, 7, N};
    for (int t = 0; t < N_TYPES; t++) {
        if (!fits(all_types[t], COLS)) continue;
        ts_weight host = tk_weight(&rng, all_types[t], ROWS, COLS, 1.0f);
        float *x = tk_randn(&rng, (size_t)N * COLS, 1.0f);
        float *first = malloc((size_t)N * ROWS * sizeof(float));
        float *y = malloc((size_t)N * ROWS * sizeof(float));
        for (int e = 0; e < n_impls; e++) {
            ts_backend *be = make_backend(impls[e], 2);
            ts_weight w = prepared(be, &host);
            for (int i = 0; i < 4; i++) {
                be->matmul(be, y, x, ns[i], &w);
                if (e == 0 && i == 3) memcpy(first, y, (size_t)N * ROWS * sizeof(float));
            }
            if (e > 0) CHECK(tk_same_bits(first, y, (size_t)N * ROWS));
            be->weight_release(be, &w);
            ts_backend_destroy(be);
        }
        free(x);
        free(first);
        free(y);
        tk_weight_free(&host);
    }
}

/* The 16-lane emulation is only worth something if it equals real AVX-512 bit for bit. */
static void test_avx512_emulation_equals_real_avx512(void) {
    if (!ts_cpu_impl_supported(TS_CPU_IMPL_AVX512)) {
        printf("no AVX-512 on this CPU: emulation vs real AVX-512 not compared\n");
        fflush(stdout);
        return;
    }
    ts_rng rng;
    ts_rng_seed(&rng, 13);
    ts_backend *emu = make_backend(TS_CPU_IMPL_AVX512_EMU, 2),
               *real = make_backend(TS_CPU_IMPL_AVX512, 2);
    for (int t = 0; t < N_TYPES; t++) {
        if (!fits(all_types[t], 224)) continue;
        ts_weight w = tk_weight(&rng, all_types[t], 45, 224, 1.0f);
        float *x = tk_randn(&rng, 9 * 224, 1.0f), a[9 * 45], b[9 * 45];
        for (int layout = 0; layout < N_LAYOUTS; layout++) {
            ts_weight we = in_layout(emu, &w, layout), wr = in_layout(real, &w, layout);
            for (int n = 1; n <= 9; n += 8) {
                emu->matmul(emu, a, x, n, &we);
                real->matmul(real, b, x, n, &wr);
                CHECK(tk_same_bits(a, b, (size_t)n * 45));
            }
            if (layout == LAYOUT_PREPARED) {
                emu->weight_release(emu, &we);
                real->weight_release(real, &wr);
            }
        }
        float ga[9 * 224], gb[9 * 224];
        memcpy(ga, x, sizeof ga);
        memcpy(gb, x, sizeof gb);
        emu->silu_mul(emu, ga, x, 9 * 224 - 3);
        real->silu_mul(real, gb, x, 9 * 224 - 3);
        CHECK(tk_same_bits(ga, gb, 9 * 224));
        emu->rmsnorm(emu, ga, x, x + 100, 3, 100, 1e-5f);
        real->rmsnorm(real, gb, x, x + 100, 3, 100, 1e-5f);
        CHECK(tk_same_bits(ga, gb, 300));
        free(x);
        tk_weight_free(&w);
    }
    ts_backend_destroy(emu);
    ts_backend_destroy(real);
}

/* ---- rmsnorm, rope, elementwise ---- */

static void test_rmsnorm_against_reference_and_invariant(void) {
    static const int32_t dims[] = {1, 3, 33, 64, 172, 768, 2048};
    ts_rng rng;
    ts_rng_seed(&rng, 14);
    for (int e = 0; e < n_impls; e++) {
        ts_backend *be1 = make_backend(impls[e], 1), *be3 = make_backend(impls[e], 3);
        for (int d = 0; d < 7; d++) {
            int32_t dim = dims[d], n = 40;
            float *x = tk_randn(&rng, (size_t)n * dim, 3.0f), *w = tk_randn(&rng, dim, 1.0f);
            float *a = malloc((size_t)n * dim * sizeof(float)),
                  *b = malloc((size_t)n * dim * sizeof(float));
            be1->rmsnorm(be1, a, x, w, n, dim, 1e-5f);
            ts_ref_rmsnorm(b, x, w, n, dim, 1e-5f);
            for (int32_t i = 0; i < n * dim; i++)
                CHECK_NEAR(a[i], b[i], 1e-5 * fabs(b[i]) + 1e-6);
            be3->rmsnorm(be3, b, x, w, n, dim, 1e-5f);
            CHECK(tk_same_bits(a, b, (size_t)n * dim));
            be3->rmsnorm(be3, b + dim, x + dim, w, 1, dim, 1e-5f); /* one row alone */
            CHECK(tk_same_bits(a, b, (size_t)n * dim));
            free(x);
            free(w);
            free(a);
            free(b);
        }
        ts_backend_destroy(be1);
        ts_backend_destroy(be3);
    }
}

static void test_rope_equals_reference_bitwise(void) {
    enum { HEADS = 6, HD = 64, N = 37 };
    ts_rng rng;
    ts_rng_seed(&rng, 15);
    for (int e = 0; e < n_impls; e++) {
        ts_backend *be = make_backend(impls[e], 2);
        for (int rd = 32; rd <= HD; rd += 32) {
            tk_batch tb;
            const int32_t pos0[] = {0, 900}, rows[] = {N - 1, 1};
            tk_batch_make(&tb, 2, pos0, rows, 16, NULL);
            CHECK_OK(be->set_batch(be, &tb.batch));
            float *x = tk_randn(&rng, N * HEADS * HD, 1.0f), y[N * HEADS * HD];
            memcpy(y, x, sizeof y);
            ts_cpu_batch b = {0};
            CHECK_OK(ts_cpu_batch_set(&b, &tb.batch));
            float factors[HD / 2];
            for (int i = 0; i < HD / 2; i++)
                factors[i] = 1.0f + (float)(i % 7);
            const ts_rope ropes[] = {
                {TS_ROPE_NORMAL, rd, 10000.0f, 1.0f, NULL},
                {TS_ROPE_NORMAL, rd, 500000.0f, 1.0f, NULL}, /* another theta in the same step */
                {TS_ROPE_NEOX, rd, 1e6f, 1.0f, NULL},
                {TS_ROPE_NORMAL, rd, 500000.0f, 1.0f, factors}, /* Llama 3.1 divisors */
                {TS_ROPE_NEOX, rd, 10000.0f, 0.25f, NULL},      /* linear scaling */
            };
            for (size_t k = 0; k < sizeof ropes / sizeof ropes[0]; k++) {
                be->rope(be, x, HEADS, HD, &ropes[k]);
                ts_ref_rope(y, b.pos, N, HEADS, HD, &ropes[k]);
                CHECK(tk_same_bits(x, y, N * HEADS * HD));
            }
            ts_cpu_batch_free(&b);
            free(x);
        }
        ts_backend_destroy(be);
    }
}

static void test_elementwise_against_reference(void) {
    static const int64_t counts[] = {1, 3, 7, 8, 15, 16, 17, 33, 172, 100000};
    ts_rng rng;
    ts_rng_seed(&rng, 16);
    for (int e = 0; e < n_impls; e++) {
        ts_backend *be = make_backend(impls[e], 2);
        for (int c = 0; c < 10; c++) {
            int64_t n = counts[c];
            float *g = tk_randn(&rng, n + 1, 6.0f), *u = tk_randn(&rng, n + 1, 1.0f);
            float *a = malloc((n + 1) * sizeof(float)), *b = malloc((n + 1) * sizeof(float));
            g[0] = -100.0f; /* far into the saturated range: silu ~ 0 */
            memcpy(a, g, (n + 1) * sizeof(float));
            memcpy(b, g, (n + 1) * sizeof(float));
            be->silu_mul(be, a, u, n);
            ts_ref_silu_mul(b, u, n);
            for (int64_t i = 0; i < n; i++)
                CHECK_NEAR(a[i], b[i], 4e-6 * fabs(b[i]) + 1e-7);
            CHECK(a[n] == g[n]); /* past count: untouched */
            free(g);
            free(u);
            free(a);
            free(b);
        }
        /* add is exact: equal inputs give equal bits */
        float y[19], y2[19], x[19];
        for (int i = 0; i < 19; i++)
            y[i] = y2[i] = 0.1f * i, x[i] = 0.37f * i - 2;
        be->add(be, y, x, 19);
        ts_ref_add(y2, x, 19);
        CHECK(tk_same_bits(y, y2, 19));
        /* add_bias too: rows of 19 with one bias vector */
        float rows[3 * 19], rows2[3 * 19];
        for (int i = 0; i < 3 * 19; i++)
            rows[i] = rows2[i] = 0.01f * i - 0.2f;
        be->add_bias(be, rows, x, 3, 19);
        ts_ref_add_bias(rows2, x, 3, 19);
        CHECK(tk_same_bits(rows, rows2, 3 * 19));
        ts_backend_destroy(be);
    }
}

static void test_argmax_ties_and_tails(void) {
    for (int e = 0; e < n_impls; e++) {
        ts_backend *be = make_backend(impls[e], 2);
        enum { V = 37 };
        float l[3 * V];
        for (int i = 0; i < 3 * V; i++)
            l[i] = -1.0f - (float)(i % 5);
        l[5] = l[20] = 3.0f; /* row 0: tie, lowest wins */
        l[V + 36] = 0.5f;    /* row 1: max in the tail */
        for (int i = 0; i < V; i++)
            l[2 * V + i] = -5.0f; /* row 2: all equal */
        int32_t idx[3], ref_idx[3];
        float val[3], ref_val[3];
        be->argmax(be, l, 3, V, idx, val);
        ts_ref_argmax(l, 3, V, ref_idx, ref_val);
        for (int i = 0; i < 3; i++)
            CHECK(idx[i] == ref_idx[i] && val[i] == ref_val[i]);
        CHECK_EQ_INT(idx[0], 5);
        CHECK_EQ_INT(idx[1], 36);
        CHECK_EQ_INT(idx[2], 0);
        ts_backend_destroy(be);
    }
}

/* ---- attention ---- */

enum { A_HEADS = 8, A_KVH = 2, A_BS = 16, A_POOL = 64, A_SEQS = 3, A_MAXPOS = 160 };

typedef struct {
    int32_t table[A_SEQS][A_POOL];
    int32_t n_blocks[A_SEQS];
} seq_tables;

/* q, k, v of (seq, position, head, d): fixed by their indices, whatever the batch. */
static float qkv_value(int which, int s, int p, int h, int d) {
    uint64_t z = ((((uint64_t)which * 31 + s) * 1009 + p) * 131 + h) * 257 + d;
    z = (z ^ (z >> 29)) * 0xbf58476d1ce4e5b9ULL;
    z ^= z >> 32;
    return (float)(z % 20001) / 10000.0f - 1.0f;
}

/* One step over parts (seq s, rows [pos0, pos0 + n)): set_batch, optionally kv_store, attention.
 * out receives the rows in part order. */
static void attention_step(ts_backend *be, const ts_kv_layer *kv, const seq_tables *st,
                           const int32_t (*parts)[3], int n_parts, int store, float *out) {
    static ts_batch_seq seqs[8];
    static int32_t tokens[1024], block_ids[1024];
    int hd = kv->head_dim, row = 0, nb = 0;
    for (int i = 0; i < n_parts; i++) {
        int s = parts[i][0];
        seqs[i] = (ts_batch_seq){.row0 = row,
                                 .n_rows = parts[i][2],
                                 .pos0 = parts[i][1],
                                 .block0 = nb,
                                 .n_blocks = st->n_blocks[s]};
        for (int b = 0; b < st->n_blocks[s]; b++)
            block_ids[nb++] = st->table[s][b];
        for (int r = 0; r < parts[i][2]; r++)
            tokens[row++] = 1;
    }
    ts_batch batch = {.n_tokens = row,
                      .n_seqs = n_parts,
                      .tokens = tokens,
                      .seqs = seqs,
                      .block_ids = block_ids,
                      .n_block_ids = nb,
                      .block_size = A_BS};
    CHECK_OK(be->set_batch(be, &batch));
    float *q = malloc((size_t)row * A_HEADS * hd * sizeof(float));
    float *k = malloc((size_t)row * A_KVH * hd * sizeof(float));
    float *v = malloc((size_t)row * A_KVH * hd * sizeof(float));
    row = 0;
    for (int i = 0; i < n_parts; i++)
        for (int r = 0; r < parts[i][2]; r++, row++) {
            int s = parts[i][0], p = parts[i][1] + r;
            for (int h = 0; h < A_HEADS; h++)
                for (int d = 0; d < hd; d++)
                    q[(row * A_HEADS + h) * hd + d] = qkv_value(0, s, p, h, d) * 2.0f;
            for (int h = 0; h < A_KVH; h++)
                for (int d = 0; d < hd; d++) {
                    k[(row * A_KVH + h) * hd + d] = qkv_value(1, s, p, h, d) * 2.0f;
                    v[(row * A_KVH + h) * hd + d] = qkv_value(2, s, p, h, d);
                }
        }
    if (store) be->kv_store(be, kv, k, v);
    be->attention(be, out, q, kv, A_HEADS, 1.0f / sqrtf((float)hd));
    free(q);
    free(k);
    free(v);
}

static void test_attention_against_reference_and_batch_invariant(void) {
    static const int32_t head_dims[] = {5, 8, 13, 40, 64}; /* tails of every parity */
    /* seq 0: a 150-token prompt; seq 1: 90 cached + 1 decode token; seq 2: 20 cached + 13 */
    static const int32_t lens[A_SEQS] = {150, 91, 33};
    for (int e = 0; e < n_impls; e++)
        for (int kt = 0; kt < 2; kt++)
            for (int hi = 0; hi < 5; hi++) {
                const int hd = head_dims[hi];
                const ts_dtype kv_type = kt ? TS_DTYPE_F16 : TS_DTYPE_F32;
                ts_backend *be = make_backend(impls[e], 2), *be3 = make_backend(impls[e], 3);
                ts_backend *ref = make_backend(TS_CPU_IMPL_SCALAR, 1);
                ts_kv_layer kv = tk_kv_make(kv_type, A_POOL, A_BS, A_KVH, hd);
                /* shuffled block tables: sequence s gets blocks s, s+3, s+6, ... reversed */
                seq_tables st;
                for (int s = 0; s < A_SEQS; s++) {
                    st.n_blocks[s] = (lens[s] + A_BS - 1) / A_BS;
                    for (int b = 0; b < st.n_blocks[s]; b++)
                        st.table[s][b] = (st.n_blocks[s] - 1 - b) * A_SEQS + s;
                }
                const int32_t fill[3][3] = {{0, 0, 150}, {1, 0, 91}, {2, 0, 33}};
                size_t w = (size_t)A_HEADS * hd;
                float *tmp = malloc(300 * w * sizeof(float));
                attention_step(be, &kv, &st, fill, 3, 1, tmp); /* fills the cache */

                /* the step under test: seq 0 rows 100..149, seq 1 decode at 90, seq 2 rows 20..32
                 */
                const int32_t step[3][3] = {{0, 100, 50}, {1, 90, 1}, {2, 20, 13}};
                float *all = malloc(64 * w * sizeof(float)), *part = malloc(64 * w * sizeof(float));
                float *want = malloc(64 * w * sizeof(float));
                attention_step(be, &kv, &st, step, 3, 0, all);
                attention_step(ref, &kv, &st, step, 3, 0, want);
                for (size_t i = 0; i < 64 * w; i++)
                    CHECK_NEAR(all[i], want[i], 2e-5 * (1.0 + fabs(want[i])));
                /* the 16-lane emulation equals real AVX-512 (same KV cache, same step) */
                if (impls[e] == TS_CPU_IMPL_AVX512_EMU &&
                    ts_cpu_impl_supported(TS_CPU_IMPL_AVX512)) {
                    ts_backend *real = make_backend(TS_CPU_IMPL_AVX512, 2);
                    attention_step(real, &kv, &st, step, 3, 0, part);
                    CHECK(tk_same_bits(all, part, 64 * w));
                    ts_backend_destroy(real);
                }
                /* each sequence alone */
                int row = 0;
                for (int i = 0; i < 3; i++) {
                    attention_step(be3, &kv, &st, &step[i], 1, 0, part);
                    CHECK(tk_same_bits(all + row * w, part, (size_t)step[i][2] * w));
                    row += step[i][2];
                }
                /* seq 0's chunk of 50 as chunks of 7, 30, 13, storing KV as a prefill would */
                const int32_t chunks[3][3] = {{0, 100, 7}, {0, 107, 30}, {0, 137, 13}};
                row = 0;
                for (int c = 0; c < 3; c++) {
                    attention_step(be, &kv, &st, &chunks[c], 1, 1, part);
                    CHECK(tk_same_bits(all + row * w, part, (size_t)chunks[c][2] * w));
                    row += chunks[c][2];
                }
                /* the same data in contiguous blocks gives the same bits */
                seq_tables contig = st;
                ts_kv_layer kv2 = tk_kv_make(kv_type, A_POOL, A_BS, A_KVH, hd);
                for (int s = 0, next = 0; s < A_SEQS; s++)
                    for (int b = 0; b < st.n_blocks[s]; b++)
                        contig.table[s][b] = next++;
                attention_step(be, &kv2, &contig, fill, 3, 1, tmp);
                attention_step(be, &kv2, &contig, step, 3, 0, part);
                CHECK(tk_same_bits(all, part, 64 * w));
                tk_kv_free(&kv);
                tk_kv_free(&kv2);
                free(tmp);
                free(all);
                free(part);
                free(want);
                ts_backend_destroy(be);
                ts_backend_destroy(be3);
                ts_backend_destroy(ref);
            }
}

/* ---- embed, kv_store, logit_rows through the backend ---- */

static void test_shared_ops_equal_reference(void) {
    ts_rng rng;
    ts_rng_seed(&rng, 17);
    for (int e = 0; e < n_impls; e++) {
        ts_backend *be = make_backend(impls[e], 2);
        tk_batch tb;
        const int32_t pos0[] = {3, 0}, rows[] = {4, 5};
        tk_batch_make(&tb, 2, pos0, rows, 4, NULL);
        for (int i = 0; i < 9; i++)
            tb.tokens[i] = 95 + i; /* crosses the shard end at 100 */
        CHECK_OK(be->set_batch(be, &tb.batch));
        ts_cpu_batch b = {0};
        CHECK_OK(ts_cpu_batch_set(&b, &tb.batch));
        for (int t = 0; t < N_TYPES; t++) {
            if (!fits(all_types[t], 64)) continue;
            ts_weight table = tk_weight(&rng, all_types[t], 50, 64, 1.0f);
            float x[9 * 64], y[9 * 64];
            be->embed(be, x, &table, 50);
            ts_ref_embed(y, &table, 50, b.tokens, 9);
            CHECK(tk_same_bits(x, y, 9 * 64));
            float in = 0, out = 0; /* token 99 is the shard's last row, 100 is outside */
            for (int j = 0; j < 64; j++)
                in += fabsf(x[4 * 64 + j]), out += fabsf(x[5 * 64 + j]);
            CHECK(in > 0.0f && out == 0.0f);
            tk_weight_free(&table);
        }
        float lx[9 * 3], ld[2 * 3];
        for (int i = 0; i < 27; i++)
            lx[i] = (float)i;
        be->logit_rows(be, ld, lx, 3);
        CHECK(ld[0] == 9.0f && ld[3] == 24.0f);
        ts_cpu_batch_free(&b);
        ts_backend_destroy(be);
    }
}

/* ---- sampling ---- */

static void test_fast_sampler_picks_the_reference_token(void) {
    enum { V = 3000, ROWS = 400 };
    ts_rng rng;
    ts_rng_seed(&rng, 18);
    void *scratch = malloc(ts_ref_sample_scratch_bytes(V));
    float *logits = malloc((size_t)V * sizeof(float));
    int32_t recent[32], bias_ids[8];
    float bias[8];
    for (int e = 0; e < n_impls; e++) {
        ts_backend *be = make_backend(impls[e], 2);
        int mismatches = 0;
        for (int r = 0; r < ROWS; r++) {
            float spread = 0.5f + (float)(r % 7);
            for (int j = 0; j < V; j++)
                logits[j] = ts_rng_normal(&rng) * spread;
            if (r % 5 == 0) logits[17] = logits[1234]; /* a tie */
            for (int i = 0; i < 32; i++)
                recent[i] = (int32_t)(ts_rng_next(&rng) % (V + 10)) - 5;
            for (int i = 0; i < 8; i++) { /* penalties and logit_bias, some ids out of range */
                bias_ids[i] = i == 3 ? bias_ids[0] : (int32_t)(ts_rng_next(&rng) % (V + 10)) - 5;
                bias[i] = ts_rng_normal(&rng) * (i == 5 ? 100.0f : 2.0f);
            }
            ts_sampling p = {.temperature = r % 11 == 0 ? 0.0f : 0.3f + 0.2f * (float)(r % 6),
                             .top_k = r % 3 == 0 ? 0 : (int32_t)(1 + r % 97),
                             .top_p = r % 4 == 0 ? 1.0f : 0.05f + 0.15f * (float)(r % 7),
                             .min_p = r % 5 == 1    ? 0.05f * (float)(r % 4)
                                      : r % 13 == 2 ? 1.5f
                                                    : 0.0f,
                             .repetition_penalty = r % 2 ? 1.3f : 1.0f,
                             .recent = recent,
                             .n_recent = 32,
                             .bias_ids = bias_ids,
                             .bias = bias,
                             .n_bias = r % 3 == 1 ? 8 : 0,
                             .uniform = ts_rng_uniform(&rng)};
            int32_t tok;
            float lp, ref_lp;
            be->sample(be, logits, 1, V, &p, &tok, &lp);
            int32_t ref_tok = ts_ref_sample(logits, V, &p, scratch, &ref_lp);
            mismatches += tok != ref_tok || lp != ref_lp;
        }
        CHECK_EQ_INT(mismatches, 0);
        ts_backend_destroy(be);
    }
    free(scratch);
    free(logits);
}

static void test_fast_sampler_distribution_and_greedy(void) {
    enum { V = 6, DRAWS = 20000 };
    const float row[V] = {1.0f, 0.5f, 0.0f, -0.5f, 2.0f, 1.0f};
    for (int e = 0; e < n_impls; e++) {
        ts_backend *be = make_backend(impls[e], 1);
        ts_sampling p = {.temperature = 0.8f, .top_p = 1.0f, .repetition_penalty = 1.0f};
        int count[V] = {0};
        ts_rng rng;
        ts_rng_seed(&rng, 42);
        for (int i = 0; i < DRAWS; i++) {
            int32_t tok;
            p.uniform = ts_rng_uniform(&rng);
            be->sample(be, row, 1, V, &p, &tok, NULL);
            count[tok]++;
        }
        double z = 0, prob[V];
        for (int j = 0; j < V; j++)
            z += (prob[j] = exp(row[j] / 0.8));
        for (int j = 0; j < V; j++)
            CHECK_NEAR((double)count[j] / DRAWS, prob[j] / z, 0.015);
        /* greedy, top_k 1 and a tiny top_p agree on a tie between ids 1 and 3 */
        const float tie[] = {0.0f, 4.0f, 1.0f, 4.0f};
        ts_sampling g[3] = {
            {.temperature = 0.0f, .top_p = 1, .repetition_penalty = 1},
            {.temperature = 1.0f, .top_k = 1, .top_p = 1, .repetition_penalty = 1, .uniform = 0.9f},
            {.temperature = 1.0f, .top_p = 1e-6f, .repetition_penalty = 1, .uniform = 0.9f}};
        for (int i = 0; i < 3; i++) {
            int32_t tok;
            float lp;
            be->sample(be, tie, 1, 4, &g[i], &tok, &lp);
            CHECK_EQ_INT(tok, 1);
            CHECK_NEAR(lp, 4.0 - log(2 * exp(4.0) + 1 + exp(1.0)), 1e-6);
        }
        ts_backend_destroy(be);
    }
}

int main(void) {
    for (int i = 1; i < TS_CPU_IMPL_COUNT; i++)
        if (ts_cpu_impl_supported((ts_cpu_impl)i)) impls[n_impls++] = (ts_cpu_impl)i;
    printf("implementations tested:");
    for (int i = 0; i < n_impls; i++)
        printf(" %s", ts_cpu_impl_name(impls[i]));
    printf(" (this CPU: %s)\n", ts_cpu_isa_name(ts_cpu_isa_detect()));
    fflush(stdout);
    if (n_impls == 0) test_skip("this CPU has no AVX2: only the scalar reference runs here");
    RUN(test_matmul_every_type_and_odd_shape_against_reference);
    RUN(test_matmul_is_batch_and_thread_invariant_bitwise);
    RUN(test_quant_matmul_equals_reference_bitwise);
    RUN(test_matmul_panels_agree_across_instruction_sets);
    RUN(test_avx512_emulation_equals_real_avx512);
    RUN(test_rmsnorm_against_reference_and_invariant);
    RUN(test_rope_equals_reference_bitwise);
    RUN(test_elementwise_against_reference);
    RUN(test_argmax_ties_and_tails);
    RUN(test_attention_against_reference_and_batch_invariant);
    RUN(test_shared_ops_equal_reference);
    RUN(test_fast_sampler_picks_the_reference_token);
    RUN(test_fast_sampler_distribution_and_greedy);
    return test_summary();
}
