/*
 * test_kernels_cuda.c — every operation of the CUDA backend against the scalar reference
 * (kernels/cpu/ref.h) on random inputs of many shapes (odd sizes such as 172 and 7 included),
 * batch invariance bit for bit, sampling token for token, the memory budget, and failures
 * reported by the next sync.
 * Without a CUDA device it prints "SKIP: no CUDA device (...)" and exits 77.
 *
 * Tolerances (CUDA vs the reference, which accumulates in double; S = sum_k |x_k w_k|):
 *   matmul, n <= 8 (our GEMV, x in f32)      |d| <= (2 cols 2^-23 + w_round) S
 *   matmul, n > 8 (cuBLASLt, x rounded to the weight's type)
 *                                            |d| <= (2 cols 2^-23 + w_round + x_round) S
 *       w_round = 2^-8 for Q8_0/Q4_0 (dequantized to bf16 on the device), else 0
 *       x_round = 2^-8 bf16, 2^-10 f16, 0 f32 (no TF32)
 *   rmsnorm    |d| <= 1e-6 |ref| + 1e-7 (double sum in tree order instead of sequential)
 *   attention  |d| <= 1e-4 (1 + |ref|)   (f32 scores and softmax, device expf)
 *   silu_mul   |d| <= 4e-6 |ref| + 1e-7  (device expf, 2 ulp)
 *   embed (q8_0/q4_0 tables: 2^-8 relative, bf16)
 *   rope (both modes, factors, linear scaling), add, add_bias, embed (f32/f16/bf16), kv_store,
 * logit_rows, argmax, sample tokens: identical sample log-probabilities: |d| <= 1e-5 (1 + |ref|)
 * Batch invariance (bitwise): matmul rows for n = 1..8 vs alone and for n = 9, 33, 64 vs 64;
 * rmsnorm per row vs batched; attention of sequences alone vs batched with a long prefill
 * (which switches the launch between split-parallel and sequential modes), and a prompt in one
 * chunk vs three.
 */
#include "common/error.h"
#include "common/fp16.h"
#include "kernels/cpu/cpu_batch.h"
#include "kernels/cpu/ref.h"
#include "kernels/kernels.h"
#include "test.h"
#include "test_cuda_util.h"
#include "test_kernels_util.h"

#include <math.h>

static ts_backend *g;

static void *dev_put(const void *host, size_t bytes) {
    void *d = g->alloc(g, bytes ? bytes : 1);
    TS_ASSERT(d != NULL);
    g->upload(g, d, host, bytes);
    return d;
}

static float *dev_zeros(size_t count) {
    float *d = g->alloc(g, count * sizeof(float) + 1);
    TS_ASSERT(d != NULL);
    g->memset_zero(g, d, count * sizeof(float));
    return d;
}

static float *host_get(const void *dev, size_t count) {
    float *h = malloc(count * sizeof(float) + 1);
    g->download(g, h, dev, count * sizeof(float));
    return h;
}

static int synced(void) {
    int rc = g->sync(g);
    if (rc) fprintf(stderr, "  sync: %s\n", ts_error_message());
    return rc == 0;
}

/* ---- matmul ---- */

/* Quantized weights are dequantized to bf16 on the GPU (exact per value, one rounding). */
static double w_round(ts_dtype t) {
    return ts_dtype_is_quantized(t) ? ldexp(1.0, -8) : 0.0;
}

static double x_round(ts_dtype t) {
    return t == TS_DTYPE_F32 ? 0.0 : t == TS_DTYPE_F16 ? ldexp(1.0, -10) : ldexp(1.0, -8);
}

static int matmul_close(const float *got, const float *ref, const float *x, const ts_weight *w,
                        int32_t n) {
    return tk_matmul_close(got, ref, x, w, n,
                           2.0 * (double)w->cols * ldexp(1.0, -23) + w_round(w->type) +
                               (n > 8 ? x_round(w->type) : 0.0));
}

static void test_matmul_matches_reference(void) {
    static const ts_dtype types[] = {TS_DTYPE_F32,  TS_DTYPE_F16,  TS_DTYPE_BF16, TS_DTYPE_Q8_0,
                                     TS_DTYPE_Q4_0, TS_DTYPE_Q4_1, TS_DTYPE_Q5_0, TS_DTYPE_Q4_K,
                                     TS_DTYPE_Q6_K};
    static const int64_t shapes[][2] = {{1, 32}, {172, 96}, {61, 416}, {300, 2048}, {7, 172},
                                        {33, 65}};
    static const int32_t ns[] = {1, 2, 7, 8, 9, 31, 64};
    ts_rng rng;
    ts_rng_seed(&rng, 7);
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            const int64_t rows = shapes[s][0], cols = shapes[s][1];
            if (cols % ts_dtype_block_elems(types[t])) continue;
            ts_weight hw = tk_weight(&rng, types[t], rows, cols, 0.5f);
            ts_weight dw;
            CHECK_OK(g->weight_prepare(g, &hw, &dw));
            float *x = tk_randn(&rng, 64 * (size_t)cols, 1.0f);
            float *dx = dev_put(x, 64 * (size_t)cols * sizeof(float));
            float *dy = dev_zeros(64 * (size_t)rows);
            float *ref = malloc(64 * (size_t)rows * sizeof(float));
            /* the exact product of the weight's values (the CPU multiplies quantized weights
             * with quantized activations, as llama.cpp; the GPU with bf16 weights) */
            float *wf = tk_weight_f32(&hw);
            const ts_weight exact = {.type = TS_DTYPE_F32, .rows = rows, .cols = cols,
                                     .row_stride = (size_t)cols * 4, .data = wf};
            ts_ref_matmul(ref, x, 64, &exact);
            free(wf);
            for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
                g->matmul(g, dy, dx, ns[k], &dw);
                float *y = host_get(dy, (size_t)ns[k] * (size_t)rows);
                CHECK(synced());
                CHECK(matmul_close(y, ref, x, &hw, ns[k]));
                free(y);
            }
            free(ref);
            g->free(g, dy);
            g->free(g, dx);
            free(x);
            g->weight_release(g, &dw);
            tk_weight_free(&hw);
        }
}

/* Row i of a batch of n equals row i computed alone (GEMV sizes) or in a batch of 64 (cuBLASLt
 * sizes, one fixed algorithm per weight). */
static void test_matmul_batch_invariant(void) {
    static const ts_dtype types[] = {TS_DTYPE_F32, TS_DTYPE_BF16, TS_DTYPE_Q8_0};
    ts_rng rng;
    ts_rng_seed(&rng, 11);
    for (size_t t = 0; t < 3; t++) {
        const int64_t rows = 200, cols = 416;
        ts_weight hw = tk_weight(&rng, types[t], rows, cols, 0.5f);
        ts_weight dw;
        CHECK_OK(g->weight_prepare(g, &hw, &dw));
        float *x = tk_randn(&rng, 64 * (size_t)cols, 1.0f);
        float *dx = dev_put(x, 64 * (size_t)cols * sizeof(float));
        float *dy = dev_zeros(64 * (size_t)rows);
        float *alone = malloc(8 * (size_t)rows * sizeof(float));
        for (int i = 0; i < 8; i++) {
            g->matmul(g, dy, dx + (size_t)i * (size_t)cols, 1, &dw);
            float *y = host_get(dy, (size_t)rows);
            memcpy(alone + (size_t)i * (size_t)rows, y, (size_t)rows * sizeof(float));
            free(y);
        }
        for (int n = 2; n <= 8; n++) {
            g->matmul(g, dy, dx, n, &dw);
            float *y = host_get(dy, (size_t)n * (size_t)rows);
            if (!tk_same_bits(y, alone, (size_t)n * (size_t)rows)) {
                fprintf(stderr, "  %s: GEMV rows differ between n=1 and n=%d\n",
                        ts_dtype_name(types[t]), n);
                CHECK(0);
            }
            free(y);
        }
        g->matmul(g, dy, dx, 64, &dw);
        float *full = host_get(dy, 64 * (size_t)rows);
        static const int ns[] = {9, 33, 63};
        for (int k = 0; k < 3; k++) {
            g->matmul(g, dy, dx, ns[k], &dw);
            float *y = host_get(dy, (size_t)ns[k] * (size_t)rows);
            if (!tk_same_bits(y, full, (size_t)ns[k] * (size_t)rows)) {
                fprintf(stderr, "  %s: cuBLASLt rows differ between n=%d and n=64\n",
                        ts_dtype_name(types[t]), ns[k]);
                CHECK(0);
            }
            free(y);
        }
        CHECK(synced());
        free(full);
        free(alone);
        g->free(g, dy);
        g->free(g, dx);
        free(x);
        g->weight_release(g, &dw);
        tk_weight_free(&hw);
    }
}

/* ---- row operations ---- */

static void test_rmsnorm(void) {
    static const int32_t dims[] = {1, 7, 172, 4096};
    ts_rng rng;
    ts_rng_seed(&rng, 3);
    for (size_t k = 0; k < 4; k++) {
        const int32_t n = 5, dim = dims[k];
        float *x = tk_randn(&rng, (size_t)n * dim, 2.0f), *w = tk_randn(&rng, (size_t)dim, 1.0f);
        float *ref = malloc((size_t)n * dim * sizeof(float));
        ts_ref_rmsnorm(ref, x, w, n, dim, 1e-5f);
        float *dx = dev_put(x, (size_t)n * dim * 4), *dw = dev_put(w, (size_t)dim * 4);
        float *dout = dev_zeros((size_t)n * dim);
        g->rmsnorm(g, dout, dx, dw, n, dim, 1e-5f);
        float *got = host_get(dout, (size_t)n * dim);
        for (int32_t i = 0; i < n * dim; i++)
            CHECK_NEAR(got[i], ref[i], 1e-6 * fabs(ref[i]) + 1e-7);
        /* one row alone gives the batched row's bits */
        g->rmsnorm(g, dout, dx + (size_t)3 * dim, dw, 1, dim, 1e-5f);
        float *one = host_get(dout, (size_t)dim);
        CHECK(tk_same_bits(one, got + (size_t)3 * dim, (size_t)dim));
        /* in place */
        g->rmsnorm(g, dx, dx, dw, n, dim, 1e-5f);
        float *inplace = host_get(dx, (size_t)n * dim);
        CHECK(tk_same_bits(inplace, got, (size_t)n * dim));
        CHECK(synced());
        free(one);
        free(inplace);
        free(got);
        g->free(g, dout);
        g->free(g, dw);
        g->free(g, dx);
        free(ref);
        free(x);
        free(w);
    }
}

static void test_elementwise(void) {
    ts_rng rng;
    ts_rng_seed(&rng, 5);
    static const int64_t counts[] = {1, 7, 172, 100003};
    for (size_t k = 0; k < 4; k++) {
        const int64_t n = counts[k];
        float *a = tk_randn(&rng, (size_t)n, 4.0f), *b = tk_randn(&rng, (size_t)n, 1.0f);
        float *da = dev_put(a, (size_t)n * 4), *db = dev_put(b, (size_t)n * 4);
        g->silu_mul(g, da, db, n);
        float *got = host_get(da, (size_t)n);
        float *ref = malloc((size_t)n * 4);
        memcpy(ref, a, (size_t)n * 4);
        ts_ref_silu_mul(ref, b, n);
        for (int64_t i = 0; i < n; i++)
            CHECK_NEAR(got[i], ref[i], 4e-6 * fabs(ref[i]) + 1e-7);
        g->upload(g, da, a, (size_t)n * 4);
        g->add(g, da, db, n);
        free(got);
        got = host_get(da, (size_t)n);
        memcpy(ref, a, (size_t)n * 4);
        ts_ref_add(ref, b, n);
        CHECK(tk_same_bits(got, ref, (size_t)n));
        CHECK(synced());
        /* add_bias: the first up-to-64 values of b as the bias of rows of that width */
        const int32_t width = n < 64 ? (int32_t)n : 64, n_rows = (int32_t)(n / width);
        g->upload(g, da, a, (size_t)n * 4);
        g->add_bias(g, da, db, n_rows, width);
        free(got);
        got = host_get(da, (size_t)n);
        memcpy(ref, a, (size_t)n * 4);
        ts_ref_add_bias(ref, b, n_rows, width);
        CHECK(tk_same_bits(got, ref, (size_t)n));
        CHECK(synced());
        free(got);
        free(ref);
        g->free(g, da);
        g->free(g, db);
        free(a);
        free(b);
    }
}

/* ---- batch-dependent operations ---- */

static void cpu_batch_of(ts_cpu_batch *cb, const ts_batch *b) {
    memset(cb, 0, sizeof *cb);
    TS_ASSERT(ts_cpu_batch_set(cb, b) == 0);
}

static void test_embed_and_logit_rows(void) {
    static const ts_dtype types[] = {TS_DTYPE_F32, TS_DTYPE_F16, TS_DTYPE_BF16, TS_DTYPE_Q8_0,
                                     TS_DTYPE_Q4_0};
    ts_rng rng;
    ts_rng_seed(&rng, 9);
    const int32_t pos0[] = {0, 5, 17}, rows[] = {3, 1, 6};
    tk_batch tb;
    tk_batch_make(&tb, 3, pos0, rows, 4, NULL);
    ts_cpu_batch cb;
    cpu_batch_of(&cb, &tb.batch);
    CHECK_OK(g->set_batch(g, &tb.batch));
    for (size_t t = 0; t < 5; t++) {
        const int64_t cols = 96, table_rows = 60, first_row = 30; /* tokens < 30 are zeros */
        ts_weight hw = tk_weight(&rng, types[t], table_rows, cols, 1.0f);
        ts_weight dw;
        CHECK_OK(g->weight_prepare(g, &hw, &dw));
        float *dx = dev_zeros((size_t)cb.n_tokens * cols);
        g->embed(g, dx, &dw, first_row);
        float *got = host_get(dx, (size_t)cb.n_tokens * cols);
        float *ref = malloc((size_t)cb.n_tokens * cols * 4);
        ts_ref_embed(ref, &hw, first_row, cb.tokens, cb.n_tokens);
        const double rel = w_round(types[t]);
        for (int64_t i = 0; i < cb.n_tokens * cols; i++)
            CHECK_NEAR(got[i], ref[i], rel * fabs(ref[i]));
        if (rel == 0.0) CHECK(tk_same_bits(got, ref, (size_t)cb.n_tokens * cols));
        float *dl = dev_zeros((size_t)cb.n_logit_rows * cols);
        g->logit_rows(g, dl, dx, (int32_t)cols);
        float *gl = host_get(dl, (size_t)cb.n_logit_rows * cols);
        float *rl = malloc((size_t)cb.n_logit_rows * cols * 4);
        ts_ref_logit_rows(rl, got, &cb, (int32_t)cols);
        CHECK(tk_same_bits(gl, rl, (size_t)cb.n_logit_rows * cols));
        CHECK(synced());
        free(gl);
        free(rl);
        g->free(g, dl);
        free(got);
        free(ref);
        g->free(g, dx);
        g->weight_release(g, &dw);
        tk_weight_free(&hw);
    }
    ts_cpu_batch_free(&cb);
}

static void test_rope(void) {
    static const int32_t dims[][2] = {{8, 8}, {40, 40}, {128, 128}, {64, 32}, {6, 6}};
    float factors[64];
    for (int i = 0; i < 64; i++)
        factors[i] = 1.0f + 0.5f * (float)(i % 9);
    ts_rng rng;
    ts_rng_seed(&rng, 13);
    const int32_t pos0[] = {0, 1000, 3}, rows[] = {9, 2, 1};
    tk_batch tb;
    tk_batch_make(&tb, 3, pos0, rows, 16, NULL);
    ts_cpu_batch cb;
    cpu_batch_of(&cb, &tb.batch);
    CHECK_OK(g->set_batch(g, &tb.batch));
    for (size_t k = 0; k < 5; k++)
        for (size_t t = 0; t < 4; t++) {
            const int32_t heads = 3, hd = dims[k][0], rd = dims[k][1];
            const ts_rope ropes[] = {
                {TS_ROPE_NORMAL, rd, 10000.0f, 1.0f, NULL},
                {TS_ROPE_NORMAL, rd, 500000.0f, 1.0f, factors},
                {TS_ROPE_NEOX, rd, 1e6f, 1.0f, NULL},
                {TS_ROPE_NEOX, rd, 10000.0f, 0.5f, NULL},
            };
            const size_t count = (size_t)cb.n_tokens * heads * hd;
            float *x = tk_randn(&rng, count, 1.0f);
            float *dx = dev_put(x, count * 4);
            g->rope(g, dx, heads, hd, &ropes[t]);
            float *got = host_get(dx, count);
            ts_ref_rope(x, cb.pos, cb.n_tokens, heads, hd, &ropes[t]);
            CHECK(tk_same_bits(got, x, count));
            CHECK(synced());
            free(got);
            g->free(g, dx);
            free(x);
        }
    ts_cpu_batch_free(&cb);
}

/* One attention configuration: a KV cache with random history, this step's kv_store, then
 * attention; the device pool must equal the reference pool bit for bit, the output be close. */
typedef struct att_case {
    ts_dtype kv_type;
    int32_t n_heads, n_kv_heads, head_dim, block_size;
} att_case;

typedef struct att_run {
    float *out;      /* host copy of the device output */
    float *ref;      /* reference output */
    int32_t n_tokens;
} att_run;

static att_run run_attention(const att_case *ac, const ts_batch *b, const float *q, const float *k,
                             const float *v, ts_kv_layer *host_kv, void *dev_k, void *dev_v,
                             int want_ref) {
    ts_cpu_batch cb;
    cpu_batch_of(&cb, b);
    const size_t qw = (size_t)ac->n_heads * ac->head_dim, kw = (size_t)ac->n_kv_heads * ac->head_dim;
    const size_t elem = ac->kv_type == TS_DTYPE_F16 ? 2 : 4;
    const size_t pool = (size_t)host_kv->n_blocks * ac->n_kv_heads * ac->block_size * ac->head_dim;
    ts_kv_layer dkv = *host_kv;
    dkv.k = dev_k;
    dkv.v = dev_v;
    CHECK_OK(g->set_batch(g, b));
    float *dq = dev_put(q, (size_t)cb.n_tokens * qw * 4);
    float *dk = dev_put(k, (size_t)cb.n_tokens * kw * 4), *dv = dev_put(v, (size_t)cb.n_tokens * kw * 4);
    float *dout = dev_zeros((size_t)cb.n_tokens * qw);
    g->kv_store(g, &dkv, dk, dv);
    g->attention(g, dout, dq, &dkv, ac->n_heads, 1.0f / sqrtf((float)ac->head_dim));
    att_run r = {host_get(dout, (size_t)cb.n_tokens * qw), NULL, cb.n_tokens};
    ts_ref_kv_store(host_kv, &cb, k, v);
    if (want_ref) {
        float *scratch = malloc((size_t)cb.max_ctx * 4);
        r.ref = malloc((size_t)cb.n_tokens * qw * 4);
        ts_ref_attention(r.ref, q, host_kv, &cb, ac->n_heads, 1.0f / sqrtf((float)ac->head_dim),
                         scratch);
        free(scratch);
    }
    void *pk = malloc(pool * elem), *pv = malloc(pool * elem);
    g->download(g, pk, dev_k, pool * elem);
    g->download(g, pv, dev_v, pool * elem);
    CHECK(synced());
    CHECK(memcmp(pk, host_kv->k, pool * elem) == 0);
    CHECK(memcmp(pv, host_kv->v, pool * elem) == 0);
    free(pk);
    free(pv);
    g->free(g, dq);
    g->free(g, dk);
    g->free(g, dv);
    g->free(g, dout);
    ts_cpu_batch_free(&cb);
    return r;
}

static void test_attention(void) {
    static const att_case cases[] = {
        {TS_DTYPE_F32, 8, 4, 8, 16},  {TS_DTYPE_F16, 8, 2, 40, 16}, {TS_DTYPE_F16, 4, 4, 64, 32},
        {TS_DTYPE_F32, 6, 2, 128, 16}, {TS_DTYPE_F16, 32, 4, 128, 16}, {TS_DTYPE_F32, 2, 1, 256, 8},
    };
    ts_rng rng;
    ts_rng_seed(&rng, 17);
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const att_case *ac = &cases[ci];
        /* sequences: decode at 700 (3 splits), decode at 5, a prompt chunk at 250..289 (across
         * a split boundary), a long prefill of 520 from 0 */
        const int32_t pos0[] = {700, 5, 250, 0}, rows[] = {1, 1, 40, 520};
        const int32_t n_blocks = 200;
        int32_t perm[200];
        for (int32_t i = 0; i < n_blocks; i++)
            perm[i] = i;
        for (int32_t i = n_blocks - 1; i > 0; i--) { /* shuffled block tables */
            int32_t j = (int32_t)(ts_rng_next(&rng) % (uint64_t)(i + 1)), t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        tk_batch tb;
        tk_batch_make(&tb, 4, pos0, rows, ac->block_size, perm);
        TS_ASSERT(tb.batch.n_block_ids <= n_blocks);
        ts_kv_layer hkv = tk_kv_make(ac->kv_type, n_blocks, ac->block_size, ac->n_kv_heads,
                                     ac->head_dim);
        const size_t pool = (size_t)n_blocks * ac->n_kv_heads * ac->block_size * ac->head_dim;
        const size_t elem = ac->kv_type == TS_DTYPE_F16 ? 2 : 4;
        { /* history: random values in every slot (as if earlier steps had stored them) */
            float *hist = tk_randn(&rng, 2 * pool, 1.0f);
            for (size_t i = 0; i < pool; i++) {
                if (ac->kv_type == TS_DTYPE_F16) {
                    ((uint16_t *)hkv.k)[i] = ts_f32_to_f16(hist[i]);
                    ((uint16_t *)hkv.v)[i] = ts_f32_to_f16(hist[pool + i]);
                } else {
                    ((float *)hkv.k)[i] = hist[i];
                    ((float *)hkv.v)[i] = hist[pool + i];
                }
            }
            free(hist);
        }
        void *dev_k = dev_put(hkv.k, pool * elem), *dev_v = dev_put(hkv.v, pool * elem);
        const int32_t nt = tb.batch.n_tokens;
        const size_t qw = (size_t)ac->n_heads * ac->head_dim, kw = (size_t)ac->n_kv_heads * ac->head_dim;
        float *q = tk_randn(&rng, (size_t)nt * qw, 1.0f), *k = tk_randn(&rng, (size_t)nt * kw, 1.0f),
              *v = tk_randn(&rng, (size_t)nt * kw, 1.0f);
        att_run all = run_attention(ac, &tb.batch, q, k, v, &hkv, dev_k, dev_v, 1);
        for (size_t i = 0; i < (size_t)nt * qw; i++)
            if (!(fabs(all.out[i] - all.ref[i]) <= 1e-4 * (1 + fabs(all.ref[i])))) {
                fprintf(stderr, "  case %zu: out[%zu] = %.9g, reference %.9g\n", ci, i,
                        all.out[i], all.ref[i]);
                CHECK(0);
                break;
            }
        /* each sequence alone (the KV history now holds this step's k/v too: storing again
         * writes the same values) gives the same bits */
        for (int32_t s = 0; s < 4; s++) {
            tk_batch one = tb;
            one.seqs[0] = tb.seqs[s];
            one.seqs[0].row0 = 0;
            one.batch.seqs = one.seqs;
            one.batch.n_seqs = 1;
            one.batch.n_tokens = rows[s];
            one.batch.tokens = one.tokens + tb.seqs[s].row0;
            one.batch.block_ids = one.block_ids;
            const size_t r0 = (size_t)tb.seqs[s].row0;
            att_run alone = run_attention(ac, &one.batch, q + r0 * qw, k + r0 * kw, v + r0 * kw,
                                          &hkv, dev_k, dev_v, 0);
            if (!tk_same_bits(alone.out, all.out + r0 * qw, (size_t)rows[s] * qw)) {
                fprintf(stderr, "  case %zu: sequence %d alone differs from batched\n", ci, s);
                CHECK(0);
            }
            free(alone.out);
            free(alone.ref);
        }
        /* the 40-row chunk as 13 + 27 rows */
        {
            const size_t r0 = (size_t)tb.seqs[2].row0;
            const int32_t parts[] = {13, 27};
            int32_t done = 0;
            for (int p = 0; p < 2; p++) {
                tk_batch one = tb;
                one.seqs[0] = tb.seqs[2];
                one.seqs[0].row0 = 0;
                one.seqs[0].pos0 = pos0[2] + done;
                one.seqs[0].n_rows = parts[p];
                one.batch.seqs = one.seqs;
                one.batch.n_seqs = 1;
                one.batch.n_tokens = parts[p];
                one.batch.block_ids = one.block_ids;
                const size_t rr = r0 + (size_t)done;
                att_run part = run_attention(ac, &one.batch, q + rr * qw, k + rr * kw, v + rr * kw,
                                             &hkv, dev_k, dev_v, 0);
                if (!tk_same_bits(part.out, all.out + rr * qw, (size_t)parts[p] * qw)) {
                    fprintf(stderr, "  case %zu: chunk %d of the prompt differs\n", ci, p);
                    CHECK(0);
                }
                free(part.out);
                free(part.ref);
                done += parts[p];
            }
        }
        free(all.out);
        free(all.ref);
        free(q);
        free(k);
        free(v);
        g->free(g, dev_k);
        g->free(g, dev_v);
        tk_kv_free(&hkv);
    }
}

/* ---- argmax and sampling ---- */

static float *random_logits(ts_rng *rng, int32_t n, int32_t V, int ties) {
    float *l = tk_randn(rng, (size_t)n * V, 3.0f);
    if (ties) /* coarse values: many equal logits, so the id order of ties matters */
        for (size_t i = 0; i < (size_t)n * V; i++)
            l[i] = roundf(l[i] * 2.0f) / 2.0f;
    return l;
}

static void test_argmax(void) {
    static const int32_t vs[] = {1, 172, 32000};
    ts_rng rng;
    ts_rng_seed(&rng, 19);
    for (size_t k = 0; k < 3; k++)
        for (int ties = 0; ties < 2; ties++) {
            const int32_t n = 7, V = vs[k];
            float *l = random_logits(&rng, n, V, ties);
            float *dl = dev_put(l, (size_t)n * V * 4);
            int32_t idx[7], ridx[7];
            float val[7], rval[7];
            g->argmax(g, dl, n, V, idx, val);
            ts_ref_argmax(l, n, V, ridx, rval);
            CHECK(synced());
            for (int i = 0; i < n; i++) {
                CHECK_EQ_INT(idx[i], ridx[i]);
                CHECK(val[i] == rval[i]);
            }
            g->free(g, dl);
            free(l);
        }
}

static void test_sample_matches_reference(void) {
    static const int32_t vs[] = {172, 32000};
    const int32_t recent[] = {5, 9, 5, -3, 171, 100000, 12};
    ts_sampling ps[12];
    memset(ps, 0, sizeof ps);
    for (int i = 0; i < 12; i++) {
        ps[i].top_p = 1.0f;
        ps[i].repetition_penalty = 1.0f;
    }
    ps[0].temperature = 0.0f;                                         /* greedy */
    ps[1].temperature = 0.8f;                                         /* plain */
    ps[2].temperature = 1.0f, ps[2].top_k = 40;                       /* top-k */
    ps[3].temperature = 1.0f, ps[3].top_p = 0.9f;                     /* top-p */
    ps[4].temperature = 0.7f, ps[4].min_p = 0.05f;                    /* min-p */
    ps[5].temperature = 0.9f, ps[5].top_k = 50, ps[5].top_p = 0.95f, ps[5].min_p = 0.02f;
    ps[6] = ps[5], ps[6].repetition_penalty = 1.3f;                   /* with a penalty */
    ps[7] = ps[0], ps[7].repetition_penalty = 1.5f;                   /* greedy with a penalty */
    ps[8].temperature = 2.0f, ps[8].top_k = 1;                        /* k = 1 */
    ps[9].temperature = 1.0f, ps[9].top_p = 0.0f;                     /* top-p keeps one */
    ps[10].temperature = 1.5f, ps[10].min_p = 1.0f;                   /* min-p keeps the best */
    ps[11].temperature = 0.5f, ps[11].top_k = 100000, ps[11].top_p = 0.5f;
    /* additive biases (penalties, logit_bias): an id twice, one outside the vocabulary */
    const int32_t bias_ids[] = {7, 3, 7, -1, 150, 100000};
    const float bias[] = {-2.0f, 100.0f, -0.5f, 5.0f, 3.0f, 1.0f};
    for (int i = 0; i < 12; i++) {
        ps[i].recent = recent;
        ps[i].n_recent = 7;
        if (i % 3 == 1 || i == 0) ps[i].bias_ids = bias_ids, ps[i].bias = bias, ps[i].n_bias = 6;
    }
    static const float draws[] = {0.0f, 0.37f, 0.999f};
    ts_rng rng;
    ts_rng_seed(&rng, 23);
    for (size_t k = 0; k < 2; k++)
        for (int ties = 0; ties < 2; ties++)
            for (int d = 0; d < 3; d++) {
                const int32_t n = 12, V = vs[k];
                float *l = random_logits(&rng, n, V, ties);
                float *dl = dev_put(l, (size_t)n * V * 4);
                for (int i = 0; i < n; i++)
                    ps[i].uniform = draws[d];
                int32_t tok[12];
                float lp[12];
                g->sample(g, dl, n, V, ps, tok, lp);
                CHECK(synced());
                void *scratch = malloc(ts_ref_sample_scratch_bytes(V));
                for (int i = 0; i < n; i++) {
                    float rlp;
                    int32_t rt = ts_ref_sample(l + (size_t)i * V, V, &ps[i], scratch, &rlp);
                    if (tok[i] != rt) {
                        fprintf(stderr, "  V=%d ties=%d draw=%g params %d: token %d, reference %d\n",
                                V, ties, draws[d], i, tok[i], rt);
                        CHECK(0);
                    }
                    CHECK_NEAR(lp[i], rlp, 1e-5 * (1 + fabs(rlp)));
                }
                /* the logits are not modified */
                float *after = host_get(dl, (size_t)n * V);
                CHECK(tk_same_bits(after, l, (size_t)n * V));
                free(after);
                free(scratch);
                g->free(g, dl);
                free(l);
            }
}

/* ---- memory ---- */

static void test_memory_budget(void) {
    ts_backend *b = NULL;
    ts_backend_options o = {.device = "cuda", .memory_budget = (size_t)40 << 20};
    CHECK_OK(ts_backend_create(&o, &b));
    if (!b) return;
    void *p = b->alloc(b, (size_t)4 << 20);
    CHECK(p != NULL);
    void *q = b->alloc(b, (size_t)16 << 20); /* the 32 MiB GEMM workspace is counted too */
    CHECK(q == NULL);
    CHECK(strstr(ts_error_message(), "budget") != NULL);
    b->free(b, p);
    p = b->alloc(b, (size_t)8 << 20);
    CHECK(p != NULL);
    b->free(b, p);
    CHECK_OK(b->sync(b));
    ts_backend_destroy(b);
}

/* A failing operation does not return an error; the next sync does, naming the operation. */
static void test_errors_reported_at_sync(void) {
    const int32_t pos0[] = {0}, rows[] = {2};
    tk_batch tb;
    tk_batch_make(&tb, 1, pos0, rows, 16, NULL);
    CHECK_OK(g->set_batch(g, &tb.batch));
    ts_kv_layer kv = {.type = TS_DTYPE_F32, .n_blocks = 1, .block_size = 16, .n_kv_heads = 1,
                      .head_dim = 300}; /* above the kernel's 256 */
    kv.k = dev_zeros(16 * 300);
    kv.v = dev_zeros(16 * 300);
    float *q = dev_zeros(2 * 300), *out = dev_zeros(2 * 300);
    g->attention(g, out, q, &kv, 1, 1.0f);
    int rc = g->sync(g);
    CHECK(rc != 0);
    CHECK(strstr(ts_error_message(), "attention") != NULL);
    CHECK_OK(g->sync(g)); /* reported once; the backend goes on */
    g->free(g, kv.k);
    g->free(g, kv.v);
    g->free(g, q);
    g->free(g, out);
    ts_weight bad = {.type = (ts_dtype)7, .rows = 1, .cols = 32, .row_stride = 64, .data = q};
    ts_weight dst;
    CHECK(g->weight_prepare(g, &bad, &dst) == TS_E_UNSUPPORTED);
}

static void test_bad_device_index(void) {
    ts_backend *b = NULL;
    ts_backend_options o = {.device = "cuda:1023"};
    CHECK(ts_backend_create(&o, &b) == TS_E_INVALID);
    CHECK(strstr(ts_error_message(), "CUDA device") != NULL);
    CHECK(b == NULL);
}

int main(void) {
    g = tc_cuda_backend_or_skip();
    RUN(test_matmul_matches_reference);
    RUN(test_matmul_batch_invariant);
    RUN(test_rmsnorm);
    RUN(test_elementwise);
    RUN(test_embed_and_logit_rows);
    RUN(test_rope);
    RUN(test_attention);
    RUN(test_argmax);
    RUN(test_sample_matches_reference);
    RUN(test_memory_budget);
    RUN(test_errors_reported_at_sync);
    RUN(test_bad_device_index);
    ts_backend_destroy(g);
    return test_summary();
}
