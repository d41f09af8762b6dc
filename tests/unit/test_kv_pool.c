/* test_kv_pool.c — the paged KV block allocator and prefix cache. */
#include "common/error.h"
#include "common/kv_hash.h"
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

#define ROOT 0x1234u /* a chain root (kv_hash.h: fingerprint and salt) */

static void test_prefix_lookup_requires_same_chain_and_tokens(void) {
    ts_kv_pool *p = NULL;
    CHECK_OK(ts_kv_pool_create(8, 4, &p));
    int32_t t1[4] = {1, 2, 3, 4}, t2[4] = {5, 6, 7, 8}, other[4] = {1, 2, 3, 5};
    int32_t b1, b2;
    CHECK_OK(ts_kv_pool_alloc(p, &b1));
    CHECK_OK(ts_kv_pool_alloc(p, &b2));
    uint64_t h1 = ts_kv_hash_block(ROOT, t1, 4), h2 = ts_kv_hash_block(h1, t2, 4);
    CHECK_EQ_INT(ts_kv_pool_publish(p, b1, h1, ROOT, -1, t1), b1);
    CHECK_EQ_INT(ts_kv_pool_publish(p, b2, h2, h1, b1, t2), b2);
    CHECK_EQ_INT(ts_kv_pool_n_cached(p), 2);
    CHECK_EQ_INT(ts_kv_pool_n_children(p, b1), 1);
    /* a hit takes a reference */
    CHECK_EQ_INT(ts_kv_pool_lookup(p, h1, ROOT, -1, t1), b1);
    CHECK_EQ_INT(ts_kv_pool_refcount(p, b1), 2);
    ts_kv_pool_release(p, b1);
    CHECK_EQ_INT(ts_kv_pool_lookup(p, h2, h1, b1, t2), b2);
    ts_kv_pool_release(p, b2);
    /* other content, or the same block content after another prefix, misses */
    CHECK_EQ_INT(ts_kv_pool_lookup(p, ts_kv_hash_block(ROOT, other, 4), ROOT, -1, other), -1);
    CHECK_EQ_INT(ts_kv_pool_lookup(p, ts_kv_hash_block(ROOT, t2, 4), ROOT, -1, t2), -1);
    /* a forged hash with the wrong tokens, parent key or parent block cannot alias */
    CHECK_EQ_INT(ts_kv_pool_lookup(p, h1, ROOT, -1, other), -1);
    CHECK_EQ_INT(ts_kv_pool_lookup(p, h2, h1, -1, t2), -1);
    CHECK_EQ_INT(ts_kv_pool_lookup(p, h2, h1, b2, t2), -1);
    /* another salt (another root) misses the same tokens */
    uint64_t salted = ts_kv_hash_root(7, ts_kv_salt_digest("tenant-b"));
    CHECK(salted != ts_kv_hash_root(7, 0));
    CHECK_EQ_INT(ts_kv_pool_lookup(p, ts_kv_hash_block(salted, t1, 4), salted, -1, t1), -1);
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
        h[i] = ts_kv_hash_block(ROOT, toks[i], 2);
        ts_kv_pool_publish(p, b[i], h[i], ROOT, -1, toks[i]);
    }
    ts_kv_pool_release(p, b[1]); /* released first: evicted first */
    ts_kv_pool_release(p, b[0]);
    CHECK_EQ_INT(ts_kv_pool_n_free(p), 2);
    /* a hit revives a released block and takes it off the evictable list */
    CHECK_EQ_INT(ts_kv_pool_lookup(p, h[0], ROOT, -1, toks[0]), b[0]);
    CHECK_EQ_INT(ts_kv_pool_n_free(p), 1);
    int32_t got;
    CHECK_OK(ts_kv_pool_alloc(p, &got));
    CHECK_EQ_INT(got, b[1]);
    CHECK_EQ_INT(ts_kv_pool_lookup(p, h[1], ROOT, -1, toks[1]), -1); /* evicted content is gone */
    CHECK_EQ_INT(ts_kv_pool_n_cached(p), 2);
    CHECK(ts_kv_pool_alloc(p, &got) == TS_E_EXHAUSTED);
    ts_kv_pool_destroy(p);
}

/* Publishes a chain of n one-token blocks with tokens base, base+1, ... into chain[]. */
static void make_chain(ts_kv_pool *p, int32_t base, int n, int32_t *chain, uint64_t *keys) {
    uint64_t parent = ROOT;
    for (int i = 0; i < n; i++) {
        int32_t tok = base + i;
        CHECK_OK(ts_kv_pool_alloc(p, &chain[i]));
        keys[i] = ts_kv_hash_block(parent, &tok, 1);
        CHECK_EQ_INT(ts_kv_pool_publish(p, chain[i], keys[i], parent, i ? chain[i - 1] : -1, &tok),
                     chain[i]);
        parent = keys[i];
    }
}

typedef struct evicted {
    int32_t blocks[16];
    int n;
} evicted;

static void on_evict(void *user, int32_t block, uint64_t hash, uint64_t parent,
                     const int32_t *tokens) {
    (void)hash, (void)parent, (void)tokens;
    evicted *e = user;
    e->blocks[e->n++] = block;
}

static void test_chain_released_back_to_front_is_evicted_from_its_leaf(void) {
    ts_kv_pool *p = NULL;
    CHECK_OK(ts_kv_pool_create(4, 1, &p));
    evicted ev = {0};
    ts_kv_pool_set_evict_hook(p, on_evict, &ev);
    int32_t chain[4];
    uint64_t keys[4];
    make_chain(p, 100, 4, chain, keys);
    ts_kv_pool_release_seq(p, chain, 4);
    /* each allocation takes the chain's current end: the rest stays reachable */
    for (int k = 0; k < 4; k++) {
        int32_t got;
        CHECK_OK(ts_kv_pool_alloc(p, &got));
        CHECK_EQ_INT(got, chain[3 - k]);
        CHECK_EQ_INT(ev.n, k + 1);
        CHECK_EQ_INT(ev.blocks[k], chain[3 - k]);
        if (k < 3) { /* the remaining prefix still hits, from its first block */
            int32_t tok = 100;
            CHECK_EQ_INT(ts_kv_pool_lookup(p, keys[0], ROOT, -1, &tok), chain[0]);
            ts_kv_pool_release(p, chain[0]);
        }
    }
    ts_kv_pool_destroy(p);
}

/* A shutdown's evict_all: every free cached block through the hook, leaves first; blocks in use
 * stay, and the pool is then all free but those. */
static void test_evict_all_hands_over_free_blocks_leaves_first(void) {
    ts_kv_pool *p = NULL;
    CHECK_OK(ts_kv_pool_create(6, 1, &p));
    evicted ev = {0};
    ts_kv_pool_set_evict_hook(p, on_evict, &ev);
    int32_t chain[4], busy[2];
    uint64_t keys[4], busy_keys[2];
    make_chain(p, 100, 4, chain, keys);
    make_chain(p, 200, 2, busy, busy_keys);
    ts_kv_pool_release_seq(p, chain, 4);
    ts_kv_pool_evict_all(p);
    CHECK_EQ_INT(ev.n, 4);
    for (int k = 0; k < 4; k++)
        CHECK_EQ_INT(ev.blocks[k], chain[3 - k]);
    CHECK_EQ_INT(ts_kv_pool_n_cached(p), 2); /* the busy chain is still cached, in use */
    CHECK_EQ_INT(ts_kv_pool_n_free(p), 4);
    ts_kv_pool_destroy(p);
}

static void test_parent_with_kept_child_is_never_evicted(void) {
    /* Released front to back (the old order), the first block is oldest on the LRU list; it
     * still must not go while its child is cached. */
    ts_kv_pool *p = NULL;
    CHECK_OK(ts_kv_pool_create(3, 1, &p));
    int32_t chain[2], lone;
    uint64_t keys[2];
    make_chain(p, 10, 2, chain, keys);
    int32_t tok = 50;
    CHECK_OK(ts_kv_pool_alloc(p, &lone));
    ts_kv_pool_publish(p, lone, ts_kv_hash_block(ROOT, &tok, 1), ROOT, -1, &tok);
    ts_kv_pool_release(p, chain[0]);
    ts_kv_pool_release(p, chain[1]);
    ts_kv_pool_release(p, lone);
    int32_t got;
    CHECK_OK(ts_kv_pool_alloc(p, &got));
    CHECK_EQ_INT(got, chain[1]); /* the leaf, though its parent is older */
    CHECK_EQ_INT(ts_kv_pool_n_children(p, chain[0]), 0);
    CHECK_OK(ts_kv_pool_alloc(p, &got));
    CHECK_EQ_INT(got, chain[0]); /* now a leaf, and older than `lone` */
    CHECK_OK(ts_kv_pool_alloc(p, &got));
    CHECK_EQ_INT(got, lone);
    ts_kv_pool_destroy(p);
}

static void test_shared_prefix_outlives_its_branches(void) {
    /* a0 with two children: both branches go before a0 does */
    ts_kv_pool *p = NULL;
    CHECK_OK(ts_kv_pool_create(3, 1, &p));
    int32_t a0, b1, c1, t0 = 1, tb = 2, tc = 3;
    uint64_t h0 = ts_kv_hash_block(ROOT, &t0, 1);
    CHECK_OK(ts_kv_pool_alloc(p, &a0));
    ts_kv_pool_publish(p, a0, h0, ROOT, -1, &t0);
    CHECK_OK(ts_kv_pool_alloc(p, &b1));
    ts_kv_pool_publish(p, b1, ts_kv_hash_block(h0, &tb, 1), h0, a0, &tb);
    CHECK_OK(ts_kv_pool_alloc(p, &c1));
    ts_kv_pool_publish(p, c1, ts_kv_hash_block(h0, &tc, 1), h0, a0, &tc);
    CHECK_EQ_INT(ts_kv_pool_n_children(p, a0), 2);
    ts_kv_pool_release(p, a0); /* a0 first: oldest */
    ts_kv_pool_release(p, b1);
    ts_kv_pool_release(p, c1);
    int32_t got[3];
    for (int i = 0; i < 3; i++)
        CHECK_OK(ts_kv_pool_alloc(p, &got[i]));
    CHECK_EQ_INT(got[0], b1);
    CHECK_EQ_INT(got[1], c1);
    CHECK_EQ_INT(got[2], a0);
    ts_kv_pool_destroy(p);
}

static void test_publishing_cached_content_shares_the_first_copy(void) {
    ts_kv_pool *p = NULL;
    CHECK_OK(ts_kv_pool_create(4, 2, &p));
    int32_t t[2] = {4, 5}, first, second;
    uint64_t h = ts_kv_hash_block(ROOT, t, 2);
    CHECK_OK(ts_kv_pool_alloc(p, &first));
    CHECK_OK(ts_kv_pool_alloc(p, &second));
    CHECK_EQ_INT(ts_kv_pool_publish(p, first, h, ROOT, -1, t), first);
    /* the same content computed by another sequence: it gets the first copy, referenced */
    CHECK_EQ_INT(ts_kv_pool_publish(p, second, h, ROOT, -1, t), first);
    CHECK_EQ_INT(ts_kv_pool_refcount(p, first), 2);
    CHECK(!ts_kv_pool_is_cached(p, second));
    ts_kv_pool_release(p, second);
    ts_kv_pool_release(p, first);
    ts_kv_pool_release(p, first);
    CHECK_EQ_INT(ts_kv_pool_n_free(p), 4);
    CHECK_EQ_INT(ts_kv_pool_n_cached(p), 1);
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
        ts_kv_pool_publish(p, b, ts_kv_hash_block(ROOT, &tok, 1), ROOT, -1, &tok);
        ts_kv_pool_release(p, b);
        CHECK(ts_kv_pool_n_cached(p) <= 16);
        CHECK_EQ_INT(ts_kv_pool_n_free(p), 16);
    }
    int32_t last = 1999;
    CHECK(ts_kv_pool_lookup(p, ts_kv_hash_block(ROOT, &last, 1), ROOT, -1, &last) >= 0);
    int32_t old = 0;
    CHECK_EQ_INT(ts_kv_pool_lookup(p, ts_kv_hash_block(ROOT, &old, 1), ROOT, -1, &old), -1);
    ts_kv_pool_clear_cache(p);
    CHECK_EQ_INT(ts_kv_pool_n_cached(p), 0);
    CHECK_EQ_INT(ts_kv_pool_n_free(p), 15); /* the looked-up block is still held */
    ts_kv_pool_destroy(p);
}

static void test_journal_reports_what_the_cache_gained_and_lost(void) {
    ts_kv_pool *p = NULL;
    CHECK_OK(ts_kv_pool_create(2, 1, &p));
    ts_kv_pool_journal_enable(p);
    uint64_t add[8], del[8];
    int32_t na, nd;
    CHECK(ts_kv_pool_journal_take(p, add, &na, del, &nd, 8)); /* the first take: a snapshot */
    int32_t b[3], t[3] = {1, 2, 3};
    uint64_t h[3];
    for (int i = 0; i < 2; i++) {
        CHECK_OK(ts_kv_pool_alloc(p, &b[i]));
        h[i] = ts_kv_hash_block(ROOT, &t[i], 1);
        ts_kv_pool_publish(p, b[i], h[i], ROOT, -1, &t[i]);
        ts_kv_pool_release(p, b[i]);
    }
    CHECK(!ts_kv_pool_journal_take(p, add, &na, del, &nd, 8));
    CHECK(na == 2 && nd == 0 && add[0] == h[0] && add[1] == h[1]);
    /* a third block evicts h[0]; two more allocations evict h[1] and h[2], which was added within
     * this take and so shows only as removed */
    CHECK_OK(ts_kv_pool_alloc(p, &b[2]));
    h[2] = ts_kv_hash_block(ROOT, &t[2], 1);
    ts_kv_pool_publish(p, b[2], h[2], ROOT, -1, &t[2]);
    ts_kv_pool_release(p, b[2]);
    int32_t again;
    CHECK_OK(ts_kv_pool_alloc(p, &again));
    CHECK_OK(ts_kv_pool_alloc(p, &again));
    CHECK(!ts_kv_pool_journal_take(p, add, &na, del, &nd, 8));
    CHECK(na == 0 && nd == 3);
    uint64_t snap[4];
    CHECK_EQ_INT(ts_kv_pool_cached_keys(p, snap, 4), 0);
    ts_kv_pool_destroy(p);
}

int main(void) {
    RUN(test_evict_all_hands_over_free_blocks_leaves_first);
    RUN(test_alloc_until_exhausted_then_reuse);
    RUN(test_refcount_keeps_shared_block);
    RUN(test_prefix_lookup_requires_same_chain_and_tokens);
    RUN(test_released_cached_blocks_are_evicted_oldest_first);
    RUN(test_chain_released_back_to_front_is_evicted_from_its_leaf);
    RUN(test_parent_with_kept_child_is_never_evicted);
    RUN(test_shared_prefix_outlives_its_branches);
    RUN(test_publishing_cached_content_shares_the_first_copy);
    RUN(test_churn_keeps_counts_consistent);
    RUN(test_journal_reports_what_the_cache_gained_and_lost);
    return test_summary();
}
