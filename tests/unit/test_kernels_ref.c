/*
 * test_kernels_ref.c — the scalar reference kernels against the math, and the backend plumbing
 * (factory, ISA names, memory budget, batch validation) on the "cpu-scalar" backend.
 *
 * The fast kernels are tested against these functions (test_kernels_simd.c), so here each
 * operation is checked against values worked out independently: exact small-integer products,
 * closed forms, and direct double-precision formulas.
 */
#include "common/error.h"
#include "common/fp16.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_batch.h"
#include "kernels/cpu/ref.h"
#include "test.h"
#include "test_kernels_util.h"

static const ts_dtype all_types[] = {TS_DTYPE_F32, TS_DTYPE_F16, TS_DTYPE_BF16, TS_DTYPE_Q8_0,
                                     TS_DTYPE_Q4_0};
enum { N_TYPES = 5 };

static void test_embed_copies_rows_and_zeroes_outside_the_shard(void) {
    ts_rng rng;
    ts_rng_seed(&rng, 1);
    for (int t = 0; t < N_TYPES; t++) {
        ts_weight table = tk_weight(&rng, all_types[t], 10, 64, 1.0f);
        float *full = tk_weight_f32(&table);
        /* this rank holds vocabulary rows 20..29 */
        const int32_t tokens[] = {19, 20, 25, 29, 30, 0};
        float x[6 * 64];
        ts_ref_embed(x, &table, 20, tokens, 6);
        for (int i = 0; i < 6; i++) {
            int64_t r = tokens[i] - 20;
            for (int j = 0; j < 64; j++) {
                float want = r >= 0 && r < 10 ? full[r * 64 + j] : 0.0f;
                CHECK(x[i * 64 + j] == want);
            }
        }
        free(full);
        tk_weight_free(&table);
    }
}

static void test_rmsnorm_matches_the_formula(void) {
    const float x[] = {1, 2, 3, 4, -2, 0, 0, 2};
    const float w[] = {1, 1, 2, 0.5f};
    float out[8];
    ts_ref_rmsnorm(out, x, w, 2, 4, 0.0f);
    double s0 = 1.0 / sqrt((1 + 4 + 9 + 16) / 4.0), s1 = 1.0 / sqrt(8 / 4.0);
    for (int j = 0; j < 4; j++) {
        CHECK_NEAR(out[j], x[j] * s0 * w[j], 1e-6);
        CHECK_NEAR(out[4 + j], x[4 + j] * s1 * w[j], 1e-6);
    }
    ts_ref_rmsnorm(out, x, w, 1, 4, 1.0f); /* eps inside the square root */
    CHECK_NEAR(out[3], 4 * 0.5 / sqrt(7.5 + 1.0), 1e-6);
}

/* Integer weights that every type stores exactly: q8_0 blocks whose largest |value| is 127
 * (d = 1), q4_0 blocks whose value of largest magnitude is -8 (d = 1). The activations are
 * integers too, with 127 in every 32-block, so that their Q8_0 quantization (d = 1) is exact
 * as well. */
static float exact_weight_value(ts_dtype type, int64_t r, int64_t k) {
    int v = (int)((r * 31 + k * 17) % 15) - 7; /* -7..7 */
    if (k % 32 == 5) v = type == TS_DTYPE_Q8_0 ? 127 : -8;
    return (float)v;
}

static void test_matmul_is_exact_on_integers_for_every_type(void) {
    enum { ROWS = 5, COLS = 96, N = 3 };
    for (int t = 0; t < N_TYPES; t++) {
        ts_dtype type = all_types[t];
        ts_weight w = {.type = type, .rows = ROWS, .cols = COLS};
        w.row_stride = ts_dtype_row_bytes(type, COLS);
        char *data = malloc(w.row_stride * ROWS);
        float row[COLS], x[N * COLS], y[N * ROWS];
        for (int r = 0; r < ROWS; r++) {
            for (int k = 0; k < COLS; k++)
                row[k] = exact_weight_value(type, r, k);
            ts_quantize_row(type, row, data + (size_t)r * w.row_stride, COLS);
        }
        w.data = data;
        for (int i = 0; i < N * COLS; i++)
            x[i] = i % 32 == 7 ? 127.0f : (float)((i * 5) % 9 - 4);
        ts_ref_matmul(y, x, N, &w);
        for (int i = 0; i < N; i++)
            for (int r = 0; r < ROWS; r++) {
                double want = 0;
                for (int k = 0; k < COLS; k++)
                    want += (double)exact_weight_value(type, r, k) * x[i * COLS + k];
                CHECK(y[i * ROWS + r] == (float)want);
            }
        free(data);
    }
}

static void test_matmul_odd_shapes_and_column_shards(void) {
    ts_rng rng;
    ts_rng_seed(&rng, 2);
    /* cols 300 crosses the reference's 256-element dequantization chunk; a column shard keeps
     * the full row stride of its parent (here: columns 64..191 of a 320-wide f16 weight). */
    ts_weight w = tk_weight(&rng, TS_DTYPE_F32, 7, 300, 1.0f);
    float *wf = tk_weight_f32(&w);
    float *x = tk_randn(&rng, 2 * 300, 1.0f), y[14];
    ts_ref_matmul(y, x, 2, &w);
    for (int i = 0; i < 2; i++)
        for (int r = 0; r < 7; r++) {
            double want = 0;
            for (int k = 0; k < 300; k++)
                want += (double)wf[r * 300 + k] * x[i * 300 + k];
            CHECK_NEAR(y[i * 7 + r], want, 1e-5);
        }
    free(wf);
    tk_weight_free(&w);

    ts_weight parent = tk_weight(&rng, TS_DTYPE_Q8_0, 4, 320, 1.0f);
    float *pf = tk_weight_f32(&parent);
    ts_weight shard = parent;
    shard.cols = 128;
    shard.data = (const char *)parent.data + ts_dtype_row_bytes(TS_DTYPE_Q8_0, 64);
    ts_ref_matmul(y, x, 1, &shard);
    /* a quantized weight multiplies the activations quantized to Q8_0 (kernels/quant.h) */
    ts_block_q8_0 xq[4];
    float xd[128];
    ts_quantize_act_row(TS_DTYPE_Q8_0, x, xq, 128);
    ts_dequantize_row(TS_DTYPE_Q8_0, xq, xd, 128);
    for (int r = 0; r < 4; r++) {
        double want = 0;
        for (int k = 0; k < 128; k++)
            want += (double)pf[r * 320 + 64 + k] * xd[k];
        CHECK_NEAR(y[r], want, 1e-4);
    }
    free(pf);
    free(x);
    tk_weight_free(&parent);
}

static void test_rope_angles_follow_ggml(void) {
    float c[32], s[32];
    ts_rope rope = {
        .mode = TS_ROPE_NORMAL, .n_dims = 64, .theta_base = 10000.0f, .freq_scale = 1.0f};
    ts_ref_rope_angles(7, &rope, c, s);
    float scale = powf(10000.0f, -2.0f / 64.0f), angle = 7.0f;
    for (int i = 0; i < 32; i++) {
        CHECK(c[i] == cosf(angle) && s[i] == sinf(angle));
        angle *= scale; /* repeated float multiplication, not pow per pair */
    }
}

/* GGML's rope_yarn without extrapolation: theta = freq_scale * (t / factor), then cos/sin. */
static void test_rope_angles_apply_factors_and_linear_scale(void) {
    float factors[8], c[8], s[8];
    for (int i = 0; i < 8; i++)
        factors[i] = 1.0f + 0.75f * (float)i;
    ts_rope rope = {.mode = TS_ROPE_NEOX,
                    .n_dims = 16,
                    .theta_base = 500000.0f,
                    .freq_scale = 0.25f,
                    .freq_factors = factors};
    ts_ref_rope_angles(1234, &rope, c, s);
    float scale = powf(500000.0f, -2.0f / 16.0f), t = 1234.0f;
    for (int i = 0; i < 8; i++) {
        float a = 0.25f * (t / factors[i]);
        CHECK(c[i] == cosf(a) && s[i] == sinf(a));
        t *= scale;
    }
}

static void check_rope_rotation(ts_rope_mode mode) {
    enum { HEADS = 2, HD = 8, RD = 4 };
    float x[2 * HEADS * HD], orig[2 * HEADS * HD];
    for (int i = 0; i < 2 * HEADS * HD; i++)
        orig[i] = x[i] = (float)(i % 5) - 2.0f;
    const int32_t pos[] = {0, 3};
    ts_rope rope = {.mode = mode, .n_dims = RD, .theta_base = 10000.0f, .freq_scale = 1.0f};
    ts_ref_rope(x, pos, 2, HEADS, HD, &rope);
    for (int i = 0; i < HEADS * HD; i++)
        CHECK(x[i] == orig[i]); /* position 0: identity */
    for (int h = 0; h < HEADS; h++) {
        const float *o = orig + HEADS * HD + h * HD;
        const float *r = x + HEADS * HD + h * HD;
        for (int i = 0; i < RD / 2; i++) {
            /* normal: (2i, 2i+1); neox: (i, i + RD/2) */
            int a_ = mode == TS_ROPE_NEOX ? i : 2 * i,
                b_ = mode == TS_ROPE_NEOX ? i + RD / 2 : 2 * i + 1;
            double a = 3.0 * pow(10000.0, -2.0 * i / RD);
            CHECK_NEAR(r[a_], o[a_] * cos(a) - o[b_] * sin(a), 1e-5);
            CHECK_NEAR(r[b_], o[a_] * sin(a) + o[b_] * cos(a), 1e-5);
        }
        for (int d = RD; d < HD; d++)
            CHECK(r[d] == o[d]); /* beyond rope_dims: untouched */
    }
}

static void test_rope_rotates_adjacent_pairs_of_the_first_rope_dims(void) {
    check_rope_rotation(TS_ROPE_NORMAL);
}

static void test_rope_neox_rotates_the_halves_of_the_first_rope_dims(void) {
    check_rope_rotation(TS_ROPE_NEOX);
}

static void test_add_bias_broadcasts_over_rows(void) {
    float y[3 * 4], bias[4] = {1.0f, -2.0f, 0.5f, 8.0f};
    for (int i = 0; i < 12; i++)
        y[i] = (float)i;
    ts_ref_add_bias(y, bias, 3, 4);
    for (int i = 0; i < 12; i++)
        CHECK(y[i] == (float)i + bias[i % 4]);
}

/* Stores keys/values for positions 0..n-1 of one sequence, then runs attention for all. */
static void run_attention(ts_kv_layer *kv, const int32_t *perm, const float *k, const float *v,
                          const float *q, int32_t n, int32_t n_heads, float *out) {
    tk_batch tb;
    ts_cpu_batch b = {0};
    const int32_t pos0 = 0;
    tk_batch_make(&tb, 1, &pos0, &n, kv->block_size, perm);
    CHECK_OK(ts_cpu_batch_set(&b, &tb.batch));
    ts_ref_kv_store(kv, &b, k, v);
    float *scratch = malloc((size_t)b.max_ctx * sizeof(float));
    ts_ref_attention(out, q, kv, &b, n_heads, 0.5f, scratch);
    free(scratch);
    ts_cpu_batch_free(&b);
}

static void test_attention_closed_forms_gqa_and_paging(void) {
    enum { HD = 4, KVH = 2, HEADS = 4, N = 11, BS = 4 };
    ts_rng rng;
    ts_rng_seed(&rng, 3);
    float *k = tk_randn(&rng, N * KVH * HD, 1.0f), *v = tk_randn(&rng, N * KVH * HD, 1.0f);
    float *q = tk_randn(&rng, N * HEADS * HD, 1.0f);
    float out[N * HEADS * HD], out2[N * HEADS * HD];
    ts_kv_layer kv = tk_kv_make(TS_DTYPE_F32, 8, BS, KVH, HD);
    run_attention(&kv, NULL, k, v, q, N, HEADS, out);
    /* position 0 sees only itself: the output is v_0 of the head's KV head (h / 2) */
    for (int h = 0; h < HEADS; h++)
        for (int d = 0; d < HD; d++)
            CHECK_NEAR(out[h * HD + d], v[(h / 2) * HD + d], 1e-6);
    /* every position against the direct formula */
    for (int t = 0; t < N; t++)
        for (int h = 0; h < HEADS; h++) {
            double w[N], sum = 0, mx = -1e30;
            for (int u = 0; u <= t; u++) {
                double dot = 0;
                for (int d = 0; d < HD; d++)
                    dot += (double)q[(t * HEADS + h) * HD + d] * k[(u * KVH + h / 2) * HD + d];
                w[u] = 0.5 * dot;
                if (w[u] > mx) mx = w[u];
            }
            for (int u = 0; u <= t; u++)
                sum += (w[u] = exp(w[u] - mx));
            for (int d = 0; d < HD; d++) {
                double acc = 0;
                for (int u = 0; u <= t; u++)
                    acc += w[u] * v[(u * KVH + h / 2) * HD + d];
                CHECK_NEAR(out[(t * HEADS + h) * HD + d], acc / sum, 1e-5);
            }
        }
    /* blocks scattered over the pool give the same bits */
    const int32_t perm[] = {6, 1, 7};
    ts_kv_layer kv2 = tk_kv_make(TS_DTYPE_F32, 8, BS, KVH, HD);
    run_attention(&kv2, perm, k, v, q, N, HEADS, out2);
    CHECK(tk_same_bits(out, out2, N * HEADS * HD));
    /* f16 KV: values rounded to f16, otherwise the same computation */
    ts_kv_layer kv16 = tk_kv_make(TS_DTYPE_F16, 8, BS, KVH, HD);
    run_attention(&kv16, NULL, k, v, q, N, HEADS, out2);
    for (int i = 0; i < N * HEADS * HD; i++)
        CHECK_NEAR(out2[i], out[i], 5e-3);
    CHECK(((uint16_t *)kv16.k)[1] == ts_f32_to_f16(k[1]));
    tk_kv_free(&kv);
    tk_kv_free(&kv2);
    tk_kv_free(&kv16);
    free(k);
    free(v);
    free(q);
}

static void test_elementwise_ops(void) {
    float g[] = {0.0f, 1.0f, -3.0f, 20.0f}, up[] = {2.0f, 2.0f, 1.0f, 0.5f};
    ts_ref_silu_mul(g, up, 4);
    CHECK(g[0] == 0.0f);
    CHECK_NEAR(g[1], 2.0 / (1.0 + exp(-1.0)), 1e-6);
    CHECK_NEAR(g[2], -3.0 / (1.0 + exp(3.0)), 1e-6);
    CHECK_NEAR(g[3], 10.0, 1e-5);
    float y[] = {1, 2, 3}, x[] = {0.5f, -2, 4};
    ts_ref_add(y, x, 3);
    CHECK(y[0] == 1.5f && y[1] == 0.0f && y[2] == 7.0f);
}

static void test_argmax_takes_the_lowest_index_on_ties(void) {
    const float l[] = {1, 5, 5, 2, -1, -1, -1, -1};
    int32_t idx[2];
    float val[2];
    ts_ref_argmax(l, 2, 4, idx, val);
    CHECK_EQ_INT(idx[0], 1);
    CHECK(val[0] == 5.0f);
    CHECK_EQ_INT(idx[1], 0);
}

static void test_logit_rows_copies_last_rows_of_wanting_sequences(void) {
    tk_batch tb;
    const int32_t pos0[] = {0, 4, 0}, n_rows[] = {3, 1, 2};
    tk_batch_make(&tb, 3, pos0, n_rows, 4, NULL);
    tb.seqs[1].want_logits = false;
    ts_cpu_batch b = {0};
    CHECK_OK(ts_cpu_batch_set(&b, &tb.batch));
    float x[6 * 2], dst[4];
    for (int i = 0; i < 12; i++)
        x[i] = (float)i;
    ts_ref_logit_rows(dst, x, &b, 2);
    CHECK_EQ_INT(b.n_logit_rows, 2);
    CHECK(dst[0] == 4 && dst[1] == 5 && dst[2] == 10 && dst[3] == 11);
    CHECK_EQ_INT(b.pos[3], 4);
    CHECK_EQ_INT(b.max_ctx, 5);
    ts_cpu_batch_free(&b);
}

static void test_batch_layout_errors_are_reported(void) {
    tk_batch tb;
    const int32_t pos0[] = {0, 0}, n_rows[] = {2, 2};
    tk_batch_make(&tb, 2, pos0, n_rows, 4, NULL);
    ts_cpu_batch b = {0};
    tb.seqs[1].row0 = 3;
    CHECK_EQ_INT(ts_cpu_batch_set(&b, &tb.batch), TS_E_INVALID);
    tb.seqs[1].row0 = 2;
    tb.seqs[1].pos0 = 4; /* needs a second block it does not have */
    CHECK_EQ_INT(ts_cpu_batch_set(&b, &tb.batch), TS_E_INVALID);
    CHECK(strstr(ts_error_message(), "blocks") != NULL);
    ts_cpu_batch_free(&b);
}

/* ---- sampling ---- */

static int32_t sample(const float *row, int32_t V, ts_sampling p, float *logprob) {
    void *scratch = malloc(ts_ref_sample_scratch_bytes(V));
    int32_t t = ts_ref_sample(row, V, &p, scratch, logprob);
    free(scratch);
    return t;
}

static const ts_sampling plain = {.temperature = 1.0f, .top_p = 1.0f, .repetition_penalty = 1.0f};

static void test_sample_greedy_top_k_1_and_tiny_top_p_pick_the_argmax(void) {
    const float row[] = {0.5f, 3.0f, -1.0f, 3.0f, 2.9f};
    ts_sampling p = plain;
    p.temperature = 0.0f;
    CHECK_EQ_INT(sample(row, 5, p, NULL), 1);
    for (float u = 0.0f; u < 1.0f; u += 0.1f) {
        p = plain;
        p.top_k = 1;
        p.uniform = u;
        CHECK_EQ_INT(sample(row, 5, p, NULL), 1);
        p = plain;
        p.top_p = 1e-6f;
        p.uniform = u;
        CHECK_EQ_INT(sample(row, 5, p, NULL), 1);
    }
}

static void test_sample_biases_add_in_order_after_the_penalty(void) {
    const float row[] = {2.0f, 1.0f, -1.0f, 0.5f};
    const int32_t ids[] = {0, 2, 2, 9, -1};
    const float bias[] = {-1.5f, 1.0f, 2.0f, 50.0f, 50.0f}; /* 9 and -1: outside, ignored */
    ts_sampling p = plain;
    p.temperature = 0.0f;
    p.bias_ids = ids;
    p.bias = bias;
    p.n_bias = 5; /* l = {0.5, 1, 2, 0.5}: id 2 wins */
    CHECK_EQ_INT(sample(row, 4, p, NULL), 2);
    p.n_bias = 1; /* l = {0.5, 1, -1, 0.5} */
    CHECK_EQ_INT(sample(row, 4, p, NULL), 1);
    /* after the penalty: id 0's 2 / 4 = 0.5, then -1.5 */
    const int32_t recent[] = {0, 1};
    p.recent = recent;
    p.n_recent = 2;
    p.repetition_penalty = 4.0f;
    p.n_bias = 1; /* l = {-1, 0.25, -1, 0.5} */
    CHECK_EQ_INT(sample(row, 4, p, NULL), 3);
    /* sampled: a bias of -100 bans the best token for any draw, +100 forces one */
    const int32_t force[] = {2};
    const float plus[] = {100.0f}, minus[] = {-100.0f};
    for (float u = 0.0625f; u < 1.0f; u += 0.125f) { /* (u = 0 takes the first id with p > 0) */
        ts_sampling q = plain;
        q.uniform = u;
        q.bias_ids = force;
        q.n_bias = 1;
        q.bias = plus;
        CHECK_EQ_INT(sample(row, 4, q, NULL), 2);
        q.bias = minus;
        CHECK(sample(row, 4, q, NULL) != 2);
    }
}

static void test_sample_draw_walks_ids_in_order(void) {
    const float row[] = {0.0f, 0.0f, 0.0f, 0.0f}; /* uniform: each id has 1/4 */
    ts_sampling p = plain;
    p.uniform = 0.1f;
    CHECK_EQ_INT(sample(row, 4, p, NULL), 0);
    p.uniform = 0.3f;
    CHECK_EQ_INT(sample(row, 4, p, NULL), 1);
    p.uniform = 0.99f;
    CHECK_EQ_INT(sample(row, 4, p, NULL), 3);
    /* top_k 2 keeps ids 0 and 1 (ties go to lower ids): 0.6 of the mass is past id 0 */
    p.top_k = 2;
    p.uniform = 0.6f;
    CHECK_EQ_INT(sample(row, 4, p, NULL), 1);
}

static void test_sample_top_p_and_min_p_cut_the_tail(void) {
    /* probabilities ~ 0.64, 0.24, 0.09, 0.03 */
    const float row[] = {3.0f, 2.0f, 1.0f, 0.0f};
    ts_sampling p = plain;
    p.top_p = 0.8f; /* keeps 0 and 1 */
    p.uniform = 0.99f;
    CHECK_EQ_INT(sample(row, 4, p, NULL), 1);
    p.top_p = 0.9f; /* 0.64 + 0.24 = 0.88 < 0.9: keeps 0, 1, 2 */
    CHECK_EQ_INT(sample(row, 4, p, NULL), 2);
    p = plain;
    p.min_p = 0.2f; /* 0.09 < 0.2 * 0.64: keeps 0 and 1 */
    p.uniform = 0.99f;
    CHECK_EQ_INT(sample(row, 4, p, NULL), 1);
    p.min_p = 5.0f; /* more than 1 acts as 1: only the most probable id stays */
    CHECK_EQ_INT(sample(row, 4, p, NULL), 0);
    p.min_p = 0.0f;
    p.uniform = 1.0f; /* a draw at the upper end picks the last kept id */
    CHECK_EQ_INT(sample(row, 4, p, NULL), 3);
}

static void test_sample_repetition_penalty(void) {
    const float row[] = {2.0f, 1.9f, -1.0f, -1.2f};
    ts_sampling p = plain;
    p.temperature = 0.0f;
    p.repetition_penalty = 1.5f;
    const int32_t recent[] = {0, 0, 7, -3}; /* duplicates and out-of-range ids are ignored */
    p.recent = recent;
    p.n_recent = 4;
    CHECK_EQ_INT(sample(row, 4, p, NULL), 1); /* 2.0 / 1.5 < 1.9 */
    /* negative logits are multiplied: -1.0 * 1.5 = -1.5 < -1.2 */
    const float neg[] = {-1.0f, -1.2f};
    CHECK_EQ_INT(sample(neg, 2, p, NULL), 1);
    /* applied once per distinct id: 2.0 / 1.5 = 1.33 > 1.3 (twice would give 0.89) */
    const float once[] = {2.0f, 1.3f};
    CHECK_EQ_INT(sample(once, 2, p, NULL), 0);
}

static void test_sample_logprob_is_of_the_unmodified_row(void) {
    const float row[] = {1.0f, 2.0f, 3.0f};
    double lse = log(exp(1.0) + exp(2.0) + exp(3.0));
    ts_sampling p = plain;
    p.temperature = 0.0f;
    p.repetition_penalty = 10.0f;
    const int32_t recent[] = {2};
    p.recent = recent;
    p.n_recent = 1;
    float lp;
    CHECK_EQ_INT(sample(row, 3, p, &lp), 1);
    CHECK_NEAR(lp, 2.0 - lse, 1e-6);
}

static void test_sample_empirical_distribution_matches_softmax(void) {
    /* 20000 draws with a fixed seed; each frequency within 0.015 of its probability (about 4.5
     * standard deviations at p = 0.5, so the check cannot flake for this seed or any other). */
    enum { V = 6, DRAWS = 20000 };
    const float row[V] = {1.0f, 0.5f, 0.0f, -0.5f, 2.0f, 1.0f};
    ts_sampling p = plain;
    p.temperature = 0.8f;
    void *scratch = malloc(ts_ref_sample_scratch_bytes(V));
    int count[V] = {0};
    ts_rng rng;
    ts_rng_seed(&rng, 42);
    for (int i = 0; i < DRAWS; i++) {
        p.uniform = ts_rng_uniform(&rng);
        count[ts_ref_sample(row, V, &p, scratch, NULL)]++;
    }
    double z = 0, prob[V];
    for (int j = 0; j < V; j++)
        z += (prob[j] = exp(row[j] / 0.8));
    for (int j = 0; j < V; j++)
        CHECK_NEAR((double)count[j] / DRAWS, prob[j] / z, 0.015);
    free(scratch);
}

/* ---- the backend ---- */

static void test_factory_devices_and_isa_names(void) {
    ts_backend *be = NULL;
    /* a device index no machine has: without CUDA in the build, or without a GPU, the device
     * is unsupported; with GPUs the index is out of range */
    ts_backend_options o = {.device = "cuda:1000"};
    int rc = ts_backend_create(&o, &be);
    CHECK(rc == TS_E_UNSUPPORTED || rc == TS_E_INVALID);
    CHECK(strstr(ts_error_message(), rc == TS_E_INVALID ? "CUDA device" : "no CUDA") != NULL);
    o.device = "tpu";
    CHECK_EQ_INT(ts_backend_create(&o, &be), TS_E_INVALID);
    o.device = "cuda:x";
    CHECK_EQ_INT(ts_backend_create(&o, &be), TS_E_INVALID);
    CHECK(be == NULL);

    /* the one reading of a CUDA device name */
    long index = -1;
    CHECK_EQ_INT(ts_backend_cuda_index("cuda", &index), 1);
    CHECK(index == 0);
    CHECK_EQ_INT(ts_backend_cuda_index("cuda:3", &index), 1);
    CHECK(index == 3);
    CHECK_EQ_INT(ts_backend_cuda_index("cpu", &index), 0);
    CHECK_EQ_INT(ts_backend_cuda_index("cudax", &index), 0);
    CHECK_EQ_INT(ts_backend_cuda_index("cuda:x", &index), TS_E_INVALID);
    CHECK(strstr(ts_error_message(), "expected cuda or cuda:N") != NULL);
    CHECK_EQ_INT(ts_backend_cuda_index("cuda:", &index), TS_E_INVALID);

    /* one GPU per rank: rank r of a group on one host uses device + r */
    char dev[32];
    CHECK_OK(ts_backend_device_offset("cuda", 0, dev, sizeof dev));
    CHECK_EQ_STR(dev, "cuda:0");
    CHECK_OK(ts_backend_device_offset("cuda", 3, dev, sizeof dev));
    CHECK_EQ_STR(dev, "cuda:3");
    CHECK_OK(ts_backend_device_offset("cuda:2", 5, dev, sizeof dev));
    CHECK_EQ_STR(dev, "cuda:7");
    CHECK_EQ_INT(ts_backend_device_offset("cpu", 1, dev, sizeof dev), TS_E_INVALID);
    CHECK(strstr(ts_error_message(), "one GPU per rank") != NULL);
    CHECK_EQ_INT(ts_backend_device_offset(NULL, 0, dev, sizeof dev), TS_E_INVALID);
    CHECK_EQ_INT(ts_backend_device_offset("cuda:-1", 0, dev, sizeof dev), TS_E_INVALID);
    CHECK_EQ_INT(ts_backend_device_offset("cuda:1020", 5, dev, sizeof dev), TS_E_INVALID);
    CHECK_EQ_INT(ts_backend_device_offset("cuda:1", -1, dev, sizeof dev), TS_E_INVALID);
    o.device = NULL;
    o.isa = TS_ISA_SCALAR;
    CHECK_OK(ts_backend_create(&o, &be));
    CHECK_EQ_STR(be->name, "cpu-scalar");
    ts_backend_destroy(be);
    ts_backend_destroy(NULL);

    ts_cpu_isa isa;
    CHECK_OK(ts_cpu_isa_parse("AVX2", &isa));
    CHECK_EQ_INT(isa, TS_ISA_AVX2);
    CHECK_EQ_INT(ts_cpu_isa_parse("sse9", &isa), TS_E_INVALID);
    CHECK_EQ_STR(ts_cpu_isa_name(TS_ISA_AVX512), "avx512");
    printf("this CPU: %s\n", ts_cpu_isa_name(ts_cpu_isa_detect()));
    if (ts_cpu_isa_detect() != TS_ISA_AVX512) {
        o.isa = TS_ISA_AVX512;
        CHECK_EQ_INT(ts_backend_create(&o, &be), TS_E_UNSUPPORTED);
        CHECK(strstr(ts_error_message(), "avx512") != NULL);
    }
}

static void test_memory_budget_is_enforced(void) {
    ts_backend *be;
    ts_backend_options o = {.isa = TS_ISA_SCALAR, .memory_budget = 1000};
    CHECK_OK(ts_backend_create(&o, &be));
    void *a = be->alloc(be, 600);
    CHECK(a != NULL);
    CHECK(((uintptr_t)a & 63) == 0);
    ts_error_clear();
    CHECK(be->alloc(be, 600) == NULL);
    CHECK(strstr(ts_error_message(), "memory budget") != NULL);
    be->free(be, a);
    void *b = be->alloc(be, 1000); /* freed memory returns to the budget */
    CHECK(b != NULL);
    be->memset_zero(be, b, 1000);
    CHECK(((char *)b)[999] == 0);
    be->free(be, b);
    be->free(be, NULL);
    ts_backend_destroy(be);
}

int main(void) {
    RUN(test_embed_copies_rows_and_zeroes_outside_the_shard);
    RUN(test_rmsnorm_matches_the_formula);
    RUN(test_matmul_is_exact_on_integers_for_every_type);
    RUN(test_matmul_odd_shapes_and_column_shards);
    RUN(test_rope_angles_follow_ggml);
    RUN(test_rope_angles_apply_factors_and_linear_scale);
    RUN(test_rope_rotates_adjacent_pairs_of_the_first_rope_dims);
    RUN(test_rope_neox_rotates_the_halves_of_the_first_rope_dims);
    RUN(test_add_bias_broadcasts_over_rows);
    RUN(test_attention_closed_forms_gqa_and_paging);
    RUN(test_elementwise_ops);
    RUN(test_argmax_takes_the_lowest_index_on_ties);
    RUN(test_logit_rows_copies_last_rows_of_wanting_sequences);
    RUN(test_batch_layout_errors_are_reported);
    RUN(test_sample_greedy_top_k_1_and_tiny_top_p_pick_the_argmax);
    RUN(test_sample_draw_walks_ids_in_order);
    RUN(test_sample_top_p_and_min_p_cut_the_tail);
    RUN(test_sample_repetition_penalty);
    RUN(test_sample_biases_add_in_order_after_the_penalty);
    RUN(test_sample_logprob_is_of_the_unmodified_row);
    RUN(test_sample_empirical_distribution_matches_softmax);
    RUN(test_factory_devices_and_isa_names);
    RUN(test_memory_budget_is_enforced);
    return test_summary();
}
