/* test_kv_pool.c — the paged KV block allocator and prefix cache. */
#include "common/error.h"
#include "node/kv_pool.h"
#include "tests/unit/test.h"

static void test_alloc_until_exhausted_then_reuse(void) {
    ts_kv_pool *p = NULL;
    CHECK_OK(ts_kv_pool_create(4, 16, &p));
    int32_t b[5];
    for (int i = 0; i < 4; i++) CHECK_OK(ts_kv_pool_alloc(p, &b[i]));
    CHECK_EQ_INT(b[0], 0); /* low ids first */
    CHECK_EQ_INT(ts_kv_pool_n_free(p), 0);
    CHECK(ts_kv_pool_alloc(p, &b[4]) == TS_E_EXHAUSTED);
    ts_kv_pool_release(p, b[2]);
    CHECK_EQ_INT(ts_kv_pool_n_free(p), 1);
    CHECK_OK(ts_kv_pool_alloc(p, &b[4]));
    CHECK_EQ_INT(b[4], b[2]);
    ts_kv_pool_destroy(p);
}

static void test_refcount_keeps_shared_block(void) {
    ts_kv_pool *p = NULL;
    CHECK_OK(ts_kv_pool_create(2, 4, &p));
    int32_t b;
    CHECK_OK(ts_kv_pool_alloc(p, &b));
    ts_kv_pool_ref(p, b);
    CHECK_EQ_INT(ts_kv_pool_refcount(p, b), 2);
    ts_kv_pool_release(p, b);
    CHECK_EQ_INT(ts_kv_pool_n_free(p), 1);
    ts_kv_pool_release(p, b);
    CHECK_EQ_INT(ts_kv_pool_n_free(p), 2);
    ts_kv_pool_destroy(p);
}

static void test_prefix_lookup_requires_same_chain_and_tokens(void) {
    ts_kv_pool *p = NULL;
    CHECK_OK(ts_kv_pool_create(8, 4, &p));
    int32_t t1[4] = {1, 2, 3, 4}, t2[4] = {5, 6, 7, 8}, other[4] = {1, 2, 3, 5};
    int32_t b1, b2;
    CHECK_OK(ts_kv_pool_alloc(p, &b1));
    CHECK_OK(ts_kv_pool_alloc(p, &b2));
    uint64_t h1 = ts_kv_prefix_hash(0, t1, 4), h2 = ts_kv_prefix_hash(h1, t2, 4);
    ts_kv_pool_publish(p, b1, h1, 0, t1);
    ts_kv_pool_publish(p, b2, h2, h1, t2);
    CHECK_EQ_INT(ts_kv_pool_n_cached(p), 2);
    /* a hit takes a reference */
    CHECK_EQ_INT(ts_kv_pool_lookup(p, h1, 0, t1), b1);
    CHECK_EQ_INT(ts_kv_pool_refcount(p, b1), 2);
    ts_kv_pool_release(p, b1);
    /* other content, or the same block content after another prefix, misses */
    CHECK_EQ_INT(ts_kv_pool_lookup(p, ts_kv_prefix_hash(0, other, 4), 0, other), -1);
    CHECK_EQ_INT(ts_kv_pool_lookup(p, ts_kv_prefix_hash(0, t2, 4), 0, t2), -1);
    /* a forged hash with the wrong tokens cannot alias */
    CHECK_EQ_INT(ts_kv_pool_lookup(p, h1, 0, other), -1);
    ts_kv_pool_destroy(p);
}

static void test_released_cached_blocks_are_evicted_oldest_first(void) {
    ts_kv_pool *p = NULL;
    CHECK_OK(ts_kv_pool_create(3, 2, &p));
    int32_t toks[3][2] = {{1, 1}, {2, 2}, {3, 3}};
    int32_t b[3];
    uint64_t h[3];
    for (int i = 0; i < 3; i++) {
        CHECK_OK(ts_kv_pool_alloc(p, &b[i]));
        h[i] = ts_kv_prefix_hash(0, toks[i], 2);
        ts_kv_pool_publish(p, b[i], h[i], 0, toks[i]);
    }
    ts_kv_pool_release(p, b[1]); /* released first: evicted first */
    ts_kv_pool_release(p, b[0]);
    CHECK_EQ_INT(ts_kv_pool_n_free(p), 2);
    /* a hit revives a released block and takes it off the evictable list */
    CHECK_EQ_INT(ts_kv_pool_lookup(p, h[0], 0, toks[0]), b[0]);
    CHECK_EQ_INT(ts_kv_pool_n_free(p), 1);
    int32_t got;
    CHECK_OK(ts_kv_pool_alloc(p, &got));
    CHECK_EQ_INT(got, b[1]);
    CHECK_EQ_INT(ts_kv_pool_lookup(p, h[1], 0, toks[1]), -1); /* evicted content is gone */
    CHECK_EQ_INT(ts_kv_pool_n_cached(p), 2);
    CHECK(ts_kv_pool_alloc(p, &got) == TS_E_EXHAUSTED);
    ts_kv_pool_destroy(p);
}

static void test_churn_keeps_counts_consistent(void) {
    /* many publish/evict cycles: tombstones are rebuilt, counts stay exact */
    ts_kv_pool *p = NULL;
    CHECK_OK(ts_kv_pool_create(16, 1, &p));
    for (int32_t round = 0; round < 2000; round++) {
        int32_t b;
        CHECK_OK(ts_kv_pool_alloc(p, &b));
        int32_t tok = round;
        ts_kv_pool_publish(p, b, ts_kv_prefix_hash(0, &tok, 1), 0, &tok);
        ts_kv_pool_release(p, b);
        CHECK(ts_kv_pool_n_cached(p) <= 16);
        CHECK_EQ_INT(ts_kv_pool_n_free(p), 16);
    }
    int32_t last = 1999;
    CHECK(ts_kv_pool_lookup(p, ts_kv_prefix_hash(0, &last, 1), 0, &last) >= 0);
    int32_t old = 0;
    CHECK_EQ_INT(ts_kv_pool_lookup(p, ts_kv_prefix_hash(0, &old, 1), 0, &old), -1);
    ts_kv_pool_clear_cache(p);
    CHECK_EQ_INT(ts_kv_pool_n_cached(p), 0);
    CHECK_EQ_INT(ts_kv_pool_n_free(p), 15); /* the looked-up block is still held */
    ts_kv_pool_destroy(p);
}

int main(void) {
    RUN(test_alloc_until_exhausted_then_reuse);
    RUN(test_refcount_keeps_shared_block);
    RUN(test_prefix_lookup_requires_same_chain_and_tokens);
    RUN(test_released_cached_blocks_are_evicted_oldest_first);
    RUN(test_churn_keeps_counts_consistent);
    return test_summary();
}
