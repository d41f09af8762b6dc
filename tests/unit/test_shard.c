/* test_shard.c — tensor-parallel split plans (node/shard.h): heads, KV heads replicated or split,
 * FFN rows aligned to the blocks of quantized W_down (uneven where the blocks are odd), and the
 * degrees refused with a message naming the constraint. Models are built in memory: only the
 * hyper-parameters and the weight types matter to a plan. */
#include "common/error.h"
#include "node/shard.h"
#include "tests/unit/test.h"

typedef struct toy {
    ts_model m;
    ts_model_layer layers[2];
} toy;

static void toy_make(toy *t, int32_t n_heads, int32_t n_kv_heads, int32_t head_dim, int32_t n_ff,
                     ts_dtype wo_type, ts_dtype down_type) {
    memset(t, 0, sizeof *t);
    t->m.hp = (ts_model_hparams){.n_vocab = 1000,
                                 .dim = n_heads * head_dim,
                                 .n_layers = 2,
                                 .n_ff = n_ff,
                                 .n_heads = n_heads,
                                 .n_kv_heads = n_kv_heads,
                                 .head_dim = head_dim};
    for (int l = 0; l < 2; l++) {
        t->layers[l].wo.type = wo_type;
        t->layers[l].w_down.type = down_type;
    }
    t->m.layers = t->layers;
}

static bool contains(const char *haystack, const char *needle) {
    bool found = strstr(haystack, needle) != NULL;
    if (!found) fprintf(stderr, "  message \"%s\" lacks \"%s\"\n", haystack, needle);
    return found;
}

/* Every rank's FFN rows, which must tile [0, n_ff) in order. */
static void check_ffn_tiles(const ts_model *m, int size, const int32_t *expected_rows) {
    int32_t next = 0;
    for (int r = 0; r < size; r++) {
        ts_shard_plan p;
        CHECK_OK(ts_shard_plan_make(m, r, size, &p));
        CHECK_EQ_INT(p.ff0, next);
        CHECK_EQ_INT(p.n_ff, expected_rows[r]);
        next = p.ff0 + p.n_ff;
    }
    CHECK_EQ_INT(next, m->hp.n_ff);
}

static void test_qwen_shape_splits_heads_and_replicates_kv(void) {
    toy t; /* Qwen2.5-Coder-0.5B: 14 heads of 64, 2 KV heads, FFN 4864 */
    toy_make(&t, 14, 2, 64, 4864, TS_DTYPE_Q8_0, TS_DTYPE_Q8_0);
    ts_shard_plan p;
    CHECK_OK(ts_shard_plan_make(&t.m, 1, 2, &p));
    CHECK_EQ_INT(p.n_heads, 7);
    CHECK_EQ_INT(p.head0, 7);
    CHECK_EQ_INT(p.n_kv_heads, 1);
    CHECK_EQ_INT(p.kv_head0, 1);
    const int32_t two[] = {2432, 2432}; /* 152 blocks of 32 */
    check_ffn_tiles(&t.m, 2, two);
    /* TP 7: 2 heads per rank, each KV head replicated... 7 and 2 divide neither way */
    CHECK_EQ_INT(ts_shard_plan_make(&t.m, 0, 7, &p), TS_E_INVALID);
    CHECK(contains(ts_error_message(), "tensor parallelism 7 and the model's 2 KV heads"));
}

static void test_ffn_split_follows_the_largest_block_of_any_layer(void) {
    toy t; /* 12 heads, 6 KV heads: TP 3 is legal */
    toy_make(&t, 12, 6, 64, 4864, TS_DTYPE_Q8_0, TS_DTYPE_Q8_0);
    t.layers[1].w_down.type = TS_DTYPE_F32;     /* mixed types: the largest block rules */
    const int32_t three[] = {1600, 1632, 1632}; /* 152 blocks: 50, 51, 51 */
    check_ffn_tiles(&t.m, 3, three);
    t.layers[0].w_down.type = TS_DTYPE_F16;
    t.layers[1].w_down.type = TS_DTYPE_F16;
    const int32_t three_plain[] = {1621, 1621, 1622};
    check_ffn_tiles(&t.m, 3, three_plain);
}

static void test_smollm_shape_refuses_two_ranks_naming_the_degrees(void) {
    toy t; /* SmolLM2-135M: 9 heads of 64, 3 KV heads */
    toy_make(&t, 9, 3, 64, 1536, TS_DTYPE_F16, TS_DTYPE_F16);
    ts_shard_plan p;
    CHECK_EQ_INT(ts_shard_plan_make(&t.m, 0, 2, &p), TS_E_INVALID);
    CHECK(contains(ts_error_message(),
                   "does not divide the model's 9 query heads: use one of 1, 3, 9"));
    CHECK_OK(ts_shard_plan_make(&t.m, 2, 3, &p));
    CHECK_EQ_INT(p.n_kv_heads, 1);
    CHECK_EQ_INT(p.kv_head0, 2);
    CHECK_OK(ts_shard_plan_make(&t.m, 8, 9, &p)); /* 9 ranks: each KV head on 3 ranks */
    CHECK_EQ_INT(p.kv_head0, 2);
}

static void test_wo_columns_must_hold_whole_blocks(void) {
    toy t; /* 8 heads of 8 (stories260K) with a quantized Wo: 8 columns per rank at TP 8 */
    toy_make(&t, 8, 4, 8, 192, TS_DTYPE_Q8_0, TS_DTYPE_F32);
    ts_shard_plan p;
    CHECK_OK(ts_shard_plan_make(&t.m, 0, 2, &p)); /* 32 columns: one block */
    CHECK_EQ_INT(ts_shard_plan_make(&t.m, 0, 8, &p), TS_E_INVALID);
    CHECK(
        contains(ts_error_message(), "gives each rank 8 columns of layer 0's attn_output (q8_0)"));
}

static void test_weight_views(void) {
    static char bytes[4 * 2 * 34];
    ts_weight w = {.type = TS_DTYPE_Q8_0, .rows = 4, .cols = 64, .row_stride = 68, .data = bytes};
    ts_weight v;
    CHECK_OK(ts_weight_rows(&w, 1, 2, &v));
    CHECK(v.data == bytes + 68 && v.rows == 2 && v.cols == 64);
    CHECK_OK(ts_weight_cols(&w, 32, 32, &v));
    CHECK(v.data == bytes + 34 && v.cols == 32 && v.row_stride == 68);
    CHECK_EQ_INT(ts_weight_cols(&w, 16, 32, &v), TS_E_INVALID);
    CHECK(
        contains(ts_error_message(), "a q8_0 weight can only be split at multiples of 32 columns"));
}

int main(void) {
    RUN(test_qwen_shape_splits_heads_and_replicates_kv);
    RUN(test_ffn_split_follows_the_largest_block_of_any_layer);
    RUN(test_smollm_shape_refuses_two_ranks_naming_the_degrees);
    RUN(test_wo_columns_must_hold_whole_blocks);
    RUN(test_weight_views);
    return test_summary();
}
