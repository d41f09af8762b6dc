/*
 * test_quant.c — the quantized types (kernels/quant.h): what each type's bytes mean and how its
 * dot product computes.
 *  - dequantization of every weight type bit for bit against the gguf Python package on the
 *    same random blocks (tests/data/quant_reference.jsonl, tools/make_quant_reference.py);
 *  - the reference dot product against the double-precision dot of the dequantized weights and
 *    dequantized activations (so the dot reads the same layout as dequantization);
 *  - the fast (AVX2) dot products and the VNNI tiles bit for bit against the reference;
 *  - the activation quantizers' rounding and sums; non-finite scales are found.
 */
#include "common/error.h"
#include "common/fp16.h"
#include "common/rng.h"
#include "kernels/cpu/qdot.h"
#include "kernels/kernels.h"
#include "kernels/quant.h"
#include "kernels/quant_blocks.h"
#include "tests/unit/test.h"
#include "tests/unit/test_jsonl_util.h"
#include "tests/unit/test_kernels_util.h"

#include <stdint.h>

#define DATA TS_SOURCE_DIR "/tests/data/"

static const ts_dtype weight_types[] = {TS_DTYPE_Q4_0, TS_DTYPE_Q4_1, TS_DTYPE_Q5_0,
                                        TS_DTYPE_Q5_1, TS_DTYPE_Q8_0, TS_DTYPE_IQ4_NL,
                                        TS_DTYPE_Q2_K, TS_DTYPE_Q3_K, TS_DTYPE_Q4_K,
                                        TS_DTYPE_Q5_K, TS_DTYPE_Q6_K};
enum { N_WEIGHT_TYPES = sizeof weight_types / sizeof weight_types[0] };

static int hex_decode(const char *hex, size_t len, uint8_t *out) {
    for (size_t i = 0; i + 1 < len; i += 2) {
        unsigned v;
        if (sscanf(hex + i, "%2x", &v) != 1) return -1;
        out[i / 2] = (uint8_t)v;
    }
    return 0;
}

static int reference_lines;

static void check_reference_line(const ts_json *root, void *ctx) {
    (void)ctx;
    const char *name, *data_hex, *values_hex;
    size_t name_len, data_len, values_len;
    int64_t blocks;
    CHECK_OK(ts_json_get_string(root, "type", &name, &name_len));
    CHECK_OK(ts_json_get_int(root, "blocks", &blocks));
    CHECK_OK(ts_json_get_string(root, "data", &data_hex, &data_len));
    CHECK_OK(ts_json_get_string(root, "values", &values_hex, &values_len));
    char type_name[16] = {0};
    memcpy(type_name, name, name_len < 15 ? name_len : 15);
    ts_dtype type;
    CHECK_OK(ts_dtype_parse(type_name, &type));
    const int64_t n = blocks * ts_dtype_block_elems(type);
    CHECK_EQ_INT(data_len / 2, ts_dtype_row_bytes(type, n));
    CHECK_EQ_INT(values_len / 2, n * 4);
    uint8_t *data = malloc(data_len / 2 + 1);
    float *expected = malloc((size_t)n * sizeof(float)), *got = malloc((size_t)n * sizeof(float));
    CHECK(hex_decode(data_hex, data_len, data) == 0);
    CHECK(hex_decode(values_hex, values_len, (uint8_t *)expected) == 0);
    ts_dequantize_row(type, data, got, n);
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++)
        if (ts_f32_to_bits(got[i]) != ts_f32_to_bits(expected[i])) {
            if (bad++ < 3)
                fprintf(stderr, "  %s element %lld: %.9g, gguf says %.9g\n", type_name,
                        (long long)i, got[i], expected[i]);
        }
    CHECK_EQ_INT(bad, 0);
    free(data);
    free(expected);
    free(got);
    reference_lines++;
}

static void test_dequantize_matches_the_gguf_package_bit_for_bit(void) {
    reference_lines = 0;
    for_each_json_line(DATA "quant_reference.jsonl", check_reference_line, NULL);
    CHECK_EQ_INT(reference_lines, N_WEIGHT_TYPES);
}

/* n elements of random blocks of type t with finite scales around `scale`. */
static void *random_row(ts_rng *rng, ts_dtype t, int64_t n, float scale) {
    void *row = malloc(ts_dtype_row_bytes(t, n));
    tk_random_blocks(rng, t, row, n, scale);
    return row;
}

/* Activations: normal, with a few large outliers and one all-zero block. */
static float *random_activations(ts_rng *rng, int64_t n) {
    float *x = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) x[i] = ts_rng_normal(rng);
    for (int64_t i = 0; i < n; i += 97) x[i] *= 40.0f;
    if (n >= 512)
        for (int64_t i = 256; i < 288; i++) x[i] = 0.0f;
    return x;
}

static void test_reference_dot_is_the_dot_of_the_dequantized_rows(void) {
    ts_rng rng;
    ts_rng_seed(&rng, 1);
    for (int ti = 0; ti < N_WEIGHT_TYPES; ti++) {
        const ts_dtype t = weight_types[ti];
        const ts_dtype at = ts_dtype_info_of(t)->vec_dot_type;
        for (int trial = 0; trial < 20; trial++) {
            const int64_t n = 256 * (1 + trial % 4);
            void *w = random_row(&rng, t, n, 0.02f);
            float *x = random_activations(&rng, n);
            void *a = malloc(ts_dtype_row_bytes(at, n));
            ts_quantize_act_row(at, x, a, n);
            float *wf = malloc((size_t)n * 4), *af = malloc((size_t)n * 4);
            ts_dequantize_row(t, w, wf, n);
            ts_dequantize_row(at, a, af, n);
            double exact = 0.0, mag = 0.0;
            for (int64_t i = 0; i < n; i++) {
                exact += (double)wf[i] * (double)af[i];
                mag += fabs((double)wf[i] * (double)af[i]);
            }
            /* Q8_1's s is the f16 of d * sum(q): its rounding is part of the definition */
            double tol = mag * 1e-5 + 1e-6;
            if (at == TS_DTYPE_Q8_1) tol += mag * 2e-3;
            CHECK_NEAR(ts_quant_vec_dot(t, w, a, n), exact, tol);
            free(w), free(x), free(a), free(wf), free(af);
        }
    }
}

static void test_fast_dots_equal_the_reference_bitwise(void) {
#if defined(__x86_64__)
    if (ts_cpu_isa_detect() < TS_ISA_AVX2) {
        printf("  (no AVX2 on this CPU: the fast dots are not run)\n");
        return;
    }
    ts_rng rng;
    ts_rng_seed(&rng, 2);
    int checked = 0;
    for (int ti = 0; ti < N_WEIGHT_TYPES; ti++) {
        const ts_dtype t = weight_types[ti];
        ts_vec_dot_fn fast = ts_qdot_avx2(t);
        if (!fast) continue;
        const ts_dtype at = ts_dtype_info_of(t)->vec_dot_type;
        for (int trial = 0; trial < 300; trial++) {
            const int64_t n = 256 * (1 + trial % 5);
            void *w = random_row(&rng, t, n, trial % 7 == 0 ? 30.0f : 0.02f);
            float *x = random_activations(&rng, n);
            if (trial % 11 == 0) /* saturated codes: every activation at +-127 */
                for (int64_t i = 0; i < n; i++) x[i] = i % 3 ? 1.0f : -1.0f;
            void *a = malloc(ts_dtype_row_bytes(at, n));
            ts_quantize_act_row(at, x, a, n);
            const float ref = ts_quant_vec_dot(t, w, a, n), got = fast(w, a, n);
            if (ts_f32_to_bits(ref) != ts_f32_to_bits(got)) {
                fprintf(stderr, "  %s n=%lld: fast %.9g, reference %.9g\n", ts_dtype_name(t),
                        (long long)n, got, ref);
                CHECK(0);
            }
            /* the 4-row dot: row j of four (this one and three more) has the single dot's bits */
            ts_vec_dot4_fn fast4 = ts_qdot4_avx2(t);
            CHECK(fast4 != NULL);
            if (fast4) {
                const size_t row = ts_dtype_row_bytes(at, n);
                char *a4 = malloc(4 * row);
                float *x4 = random_activations(&rng, 4 * n), out[4];
                for (int j = 0; j < 4; j++)
                    ts_quantize_act_row(at, x4 + j * n, a4 + j * row, n);
                memcpy(a4 + 2 * row, a, row);
                fast4(w, a4, row, n, out);
                for (int j = 0; j < 4; j++)
                    CHECK(ts_f32_to_bits(out[j]) ==
                          ts_f32_to_bits(ts_quant_vec_dot(t, w, a4 + j * row, n)));
                free(a4), free(x4);
            }
            checked++;
            free(w), free(x), free(a);
        }
    }
    CHECK(checked >= 9 * 300);
#endif
}

/* The VNNI tiles: every output of a tile (rows x tokens, each row and token its own random data,
 * a shared activation row reused at two places) has the bits of the reference dot. */
static void test_vnni_tiles_equal_the_reference_bitwise(void) {
#if defined(__x86_64__)
    if (!ts_cpu_has_avx512_vnni()) {
        printf("  (no AVX-512 VNNI on this CPU: the tiles are not run)\n");
        return;
    }
    ts_rng rng;
    ts_rng_seed(&rng, 5);
    int checked = 0;
    for (int ti = 0; ti < N_WEIGHT_TYPES; ti++) {
        const ts_dtype t = weight_types[ti];
        const ts_qtile tile = ts_qtile_vnni(t);
        if (!tile.fn) continue;
        CHECK(tile.rows > 0 && tile.tokens > 0 && tile.rows <= 8 && tile.tokens <= 8);
        const ts_dtype at = ts_dtype_info_of(t)->vec_dot_type;
        for (int trial = 0; trial < 60; trial++) {
            const int64_t n = 256 * (1 + trial % 5);
            const size_t wrow = ts_dtype_row_bytes(t, n) + 8 * (trial % 3); /* odd strides too */
            const size_t arow = ts_dtype_row_bytes(at, n) + 4 * (trial % 2);
            char *w = calloc((size_t)tile.rows, wrow), *a = calloc((size_t)tile.tokens, arow);
            for (int r = 0; r < tile.rows; r++)
                tk_random_blocks(&rng, t, w + (size_t)r * wrow, n, trial % 7 == 0 ? 30.0f : 0.02f);
            for (int j = 0; j < tile.tokens; j++) {
                float *x = random_activations(&rng, n);
                if ((trial + j) % 11 == 0) /* saturated codes: every activation at +-127 */
                    for (int64_t i = 0; i < n; i++)
                        x[i] = i % 3 ? 1.0f : -1.0f;
                ts_quantize_act_row(at, x, a + (size_t)j * arow, n);
                free(x);
            }
            if (tile.tokens > 2) memcpy(a + 2 * arow, a, arow);
            const size_t ystride = (size_t)tile.rows + 3;
            float *y = calloc((size_t)tile.tokens * ystride, sizeof(float));
            tile.fn(w, wrow, a, arow, n, y, ystride);
            for (int j = 0; j < tile.tokens; j++)
                for (int r = 0; r < tile.rows; r++) {
                    const float ref =
                        ts_quant_vec_dot(t, w + (size_t)r * wrow, a + (size_t)j * arow, n);
                    const float got = y[(size_t)j * ystride + (size_t)r];
                    if (ts_f32_to_bits(ref) != ts_f32_to_bits(got)) {
                        fprintf(stderr, "  %s n=%lld row %d token %d: tile %.9g, reference %.9g\n",
                                ts_dtype_name(t), (long long)n, r, j, got, ref);
                        CHECK(0);
                    }
                }
            checked++;
            free(w), free(a), free(y);
        }
    }
    CHECK(checked >= 9 * 60);
#endif
}

static void test_activation_quantizers(void) {
    ts_rng rng;
    ts_rng_seed(&rng, 3);
    float x[512];
    for (int i = 0; i < 512; i++) x[i] = ts_rng_normal(&rng);
    for (int i = 256; i < 512; i++) x[i] = 0.0f; /* the second Q8_K block is all zero */
    ts_block_q8_K k[2];
    ts_quantize_act_row(TS_DTYPE_Q8_K, x, k, 512);
    float back[512];
    ts_dequantize_row(TS_DTYPE_Q8_K, k, back, 512);
    for (int i = 0; i < 256; i++) CHECK(fabsf(back[i] - x[i]) <= fabsf(k[0].d) * 0.5001f);
    for (int j = 0; j < 16; j++) {
        int sum = 0;
        for (int l = 0; l < 16; l++) sum += k[0].q[16 * j + l];
        CHECK_EQ_INT(k[0].bsums[j], sum);
        CHECK_EQ_INT(k[1].bsums[j], 0);
    }
    CHECK(k[1].d == 0.0f);
    /* Q8_0/Q8_1: ties go to even (rint), as llama.cpp's x86 path does */
    float y[32] = {0};
    y[0] = 127.0f, y[1] = 2.5f, y[2] = -3.5f, y[3] = 0.5f;
    ts_block_q8_0 q0;
    ts_block_q8_1 q1;
    ts_quantize_act_row(TS_DTYPE_Q8_0, y, &q0, 32);
    ts_quantize_act_row(TS_DTYPE_Q8_1, y, &q1, 32);
    CHECK_EQ_INT(q0.q[0], 127);
    CHECK_EQ_INT(q0.q[1], 2);
    CHECK_EQ_INT(q0.q[2], -4);
    CHECK_EQ_INT(q0.q[3], 0);
    CHECK(memcmp(q0.q, q1.q, 32) == 0);
    CHECK(ts_f16_to_f32(q1.s) == ts_f16_to_f32(q1.d) * 125.0f);
}

static void test_non_finite_scales_are_found(void) {
    ts_rng rng;
    ts_rng_seed(&rng, 4);
    for (int ti = 0; ti < N_WEIGHT_TYPES; ti++) {
        const ts_dtype t = weight_types[ti];
        uint8_t *row = random_row(&rng, t, 512, 1.0f);
        CHECK(ts_quant_row_scales_finite(t, row, 512));
        const uint16_t nan = 0x7e00;
        memcpy(row + ts_dtype_block_bytes(t) + ts_quant_traits_of(t)->scale_at[0], &nan, 2);
        CHECK(!ts_quant_row_scales_finite(t, row, 512));
        free(row);
    }
}

static void test_type_table(void) {
    for (int ti = 0; ti < N_WEIGHT_TYPES; ti++) {
        const ts_dtype t = weight_types[ti];
        const ts_quant_traits *q = ts_quant_traits_of(t);
        CHECK(q && q->to_float && q->vec_dot);
        CHECK(ts_dtype_is_known(t) && ts_dtype_is_quantized(t));
        const ts_dtype at = ts_dtype_info_of(t)->vec_dot_type;
        CHECK(ts_quant_traits_of(at)->quantize_act != NULL);
        CHECK_EQ_INT(ts_dtype_block_elems(at), ts_dtype_block_elems(t));
    }
    CHECK(!ts_dtype_is_known(TS_DTYPE_Q8_K)); /* activations only */
    CHECK(!ts_dtype_is_known(16));            /* IQ2_XXS: not supported */
    CHECK(ts_dtype_info_of(16) == NULL);
    ts_dtype t;
    CHECK(ts_dtype_parse("Q6_K", &t) == 0 && t == TS_DTYPE_Q6_K);
    CHECK(ts_dtype_parse("q8_K", &t) == TS_E_INVALID);
}

int main(void) {
    RUN(test_type_table);
    RUN(test_dequantize_matches_the_gguf_package_bit_for_bit);
    RUN(test_reference_dot_is_the_dot_of_the_dequantized_rows);
    RUN(test_fast_dots_equal_the_reference_bitwise);
    RUN(test_vnni_tiles_equal_the_reference_bitwise);
    RUN(test_activation_quantizers);
    RUN(test_non_finite_scales_are_found);
    return test_summary();
}
