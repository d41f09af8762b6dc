/* test_kv_tier_host.c — the host-memory KV tier's store: capacity, LRU leaves first, checksums. */
#include "common/error.h"
#include "common/kv_hash.h"
#include "node/kv_tier_host.h"
#include "tests/unit/test.h"

#include <string.h>

enum { BYTES = 64 };

/* Stores a one-token block with its bytes all `fill`; returns whether it was stored anew. */
static bool put(ts_kv_tier_host *t, uint64_t hash, uint64_t parent, int32_t tok,
                unsigned char fill) {
    int32_t s = ts_kv_tier_host_reserve(t, hash, parent, &tok);
    if (s < 0) return false;
    memset(ts_kv_tier_host_data(t, s), fill, BYTES);
    ts_kv_tier_host_commit(t, s);
    return true;
}

static bool has(const ts_kv_tier_host *t, uint64_t hash, uint64_t parent, int32_t tok) {
    return ts_kv_tier_host_find(t, hash, parent, &tok) >= 0;
}

static void test_capacity_comes_from_bytes_and_is_never_exceeded(void) {
    ts_kv_tier_host *t = NULL;
    CHECK_EQ_INT(ts_kv_tier_host_create(BYTES - 1, BYTES, 1, &t), TS_E_INVALID);
    CHECK(strstr(ts_error_message(), "--kv-host-memory") != NULL);
    CHECK_OK(ts_kv_tier_host_create(3 * BYTES + 10, BYTES, 1, &t));
    CHECK_EQ_INT(ts_kv_tier_host_capacity(t), 3);
    for (int32_t i = 0; i < 20; i++) {
        CHECK(put(t, 100 + (uint64_t)i, 1, i, (unsigned char)i));
        CHECK(ts_kv_tier_host_n_used(t) <= 3);
    }
    /* the last three remain; a second put of a held block only touches it */
    CHECK(has(t, 119, 1, 19) && has(t, 118, 1, 18) && has(t, 117, 1, 17) && !has(t, 116, 1, 16));
    CHECK(!put(t, 117, 1, 17, 0));
    CHECK(put(t, 200, 1, 0, 0)); /* evicts 118, now the oldest */
    CHECK(has(t, 117, 1, 17) && !has(t, 118, 1, 18));
    /* the key alone does not match: tokens and parent must too */
    CHECK(!has(t, 117, 1, 99) && !has(t, 117, 2, 17));
    ts_kv_tier_host_destroy(t);
}

static void test_a_parent_with_kept_children_outlives_them(void) {
    ts_kv_tier_host *t = NULL;
    CHECK_OK(ts_kv_tier_host_create(3 * BYTES, BYTES, 1, &t));
    /* the chain 10 → 11 arrives leaf first (as the device pool evicts), then its parent: the
     * parent is the most recent, but first of all a lone older block goes, then the leaf */
    CHECK(put(t, 11, 10, 1, 1)); /* child of 10 */
    CHECK(put(t, 50, 5, 9, 9));  /* unrelated */
    CHECK(put(t, 10, 7, 0, 0));  /* the parent, stored last */
    CHECK_EQ_INT(ts_kv_tier_host_n_children(t, ts_kv_tier_host_find(t, 10, 7, &(int32_t){0})), 1);
    /* touch the child so that the parent is the oldest: still it stays while its child does */
    CHECK(!put(t, 11, 10, 1, 1));
    CHECK(!put(t, 50, 5, 9, 9));
    CHECK(put(t, 60, 6, 3, 3));
    CHECK(has(t, 10, 7, 0) && !has(t, 11, 10, 1) && has(t, 50, 5, 9));
    CHECK_EQ_INT(ts_kv_tier_host_n_children(t, ts_kv_tier_host_find(t, 10, 7, &(int32_t){0})), 0);
    CHECK(put(t, 70, 6, 4, 4)); /* now the parent is a leaf and the oldest */
    CHECK(!has(t, 10, 7, 0));
    ts_kv_tier_host_destroy(t);
}

typedef struct given {
    uint64_t hashes[8];
    int n;
} given;

static void on_give(void *user, int32_t slot, uint64_t hash, uint64_t parent, const int32_t *tokens,
                    const void *data) {
    (void)slot, (void)parent, (void)tokens, (void)data;
    given *g = user;
    g->hashes[g->n++] = hash;
}

/* A shutdown's evict_all: every block through the hook, leaves first, oldest first; then empty. */
static void test_evict_all_gives_up_every_block_leaves_first(void) {
    ts_kv_tier_host *t = NULL;
    CHECK_OK(ts_kv_tier_host_create(4 * BYTES, BYTES, 1, &t));
    given g = {0};
    ts_kv_tier_host_set_evict_hook(t, on_give, &g);
    CHECK(put(t, 11, 10, 1, 1)); /* child of 10, stored first */
    CHECK(put(t, 50, 5, 9, 9));
    CHECK(put(t, 10, 7, 0, 0));
    ts_kv_tier_host_evict_all(t);
    CHECK_EQ_INT(g.n, 3);
    CHECK(g.hashes[0] == 11 && g.hashes[1] == 50 && g.hashes[2] == 10);
    CHECK_EQ_INT(ts_kv_tier_host_n_used(t), 0);
    ts_kv_tier_host_destroy(t);
}

static void test_checksum_mismatch_discards_the_block(void) {
    ts_kv_tier_host *t = NULL;
    CHECK_OK(ts_kv_tier_host_create(2 * BYTES, BYTES, 1, &t));
    CHECK(put(t, 1, 0, 5, 0xab));
    int32_t tok = 5, s = ts_kv_tier_host_find(t, 1, 0, &tok);
    CHECK_OK(ts_kv_tier_host_verify(t, s));
    ((unsigned char *)ts_kv_tier_host_data(t, s))[17] ^= 1;
    CHECK_EQ_INT(ts_kv_tier_host_verify(t, s), TS_E_FORMAT);
    CHECK(strstr(ts_error_message(), "checksum") != NULL);
    CHECK(!has(t, 1, 0, 5));
    CHECK_EQ_INT(ts_kv_tier_host_n_used(t), 0);
    /* an aborted reservation leaves nothing behind */
    s = ts_kv_tier_host_reserve(t, 2, 0, &tok);
    CHECK(s >= 0 && !has(t, 2, 0, 5));
    ts_kv_tier_host_abort(t, s);
    CHECK_EQ_INT(ts_kv_tier_host_n_used(t), 0);
    ts_kv_tier_host_destroy(t);
}

static void test_block_checksum_sees_every_word(void) {
    unsigned char d[37] = {0};
    uint64_t base = ts_kv_block_checksum(d, sizeof d);
    for (size_t i = 0; i < sizeof d; i++) {
        d[i] ^= 0x10;
        CHECK(ts_kv_block_checksum(d, sizeof d) != base);
        d[i] ^= 0x10;
    }
    CHECK(ts_kv_block_checksum(d, 36) != base); /* the length counts */
}

int main(void) {
    RUN(test_evict_all_gives_up_every_block_leaves_first);
    RUN(test_capacity_comes_from_bytes_and_is_never_exceeded);
    RUN(test_a_parent_with_kept_children_outlives_them);
    RUN(test_checksum_mismatch_discards_the_block);
    RUN(test_block_checksum_sees_every_word);
    return test_summary();
}
