/* test_prefix_index.c — the coordinator's set of a group's prefix-cache keys: heartbeat deltas
 * and snapshots against a plain array, churn with deletions (backward shift), and the prompt
 * match computing the node's chain keys. */
#include "common/error.h"
#include "common/kv_hash.h"
#include "coordinator/prefix_index.h"
#include "tests/unit/test.h"

#include <stdlib.h>

static void test_deltas_and_snapshots_match_a_reference(void) {
    enum { N = 3000 };
    static bool ref[N];
    co_prefix_index *ix = NULL;
    uint64_t rng = 12345;
    for (int round = 0; round < 200; round++) {
        uint64_t add[40], del[40];
        size_t na = 0, nd = 0;
        for (int k = 0; k < 40; k++) {
            rng = ts_kv_hash_mix(rng);
            uint64_t key = 1 + rng % N;
            if (ref[key - 1] && rng % 3 == 0) {
                del[nd++] = key;
                ref[key - 1] = false;
                for (size_t j = 0; j < na; j++) /* as the node sends it: removals apply first */
                    if (add[j] == key) add[j] = add[--na];
            } else if (!ref[key - 1]) {
                add[na++] = key;
                ref[key - 1] = true;
            }
        }
        CHECK_OK(co_prefix_index_apply(&ix, add, na, del, nd, false));
    }
    size_t n = 0;
    bool same = true;
    for (uint64_t k = 1; k <= N; k++) {
        n += ref[k - 1];
        same = same && co_prefix_index_has(ix, k) == ref[k - 1];
    }
    CHECK(same);
    CHECK_EQ_INT((int)co_prefix_index_size(ix), (int)n);
    uint64_t snap[2] = {7, 9};
    CHECK_OK(co_prefix_index_apply(&ix, snap, 2, NULL, 0, true));
    CHECK_EQ_INT((int)co_prefix_index_size(ix), 2);
    CHECK(co_prefix_index_has(ix, 7) && co_prefix_index_has(ix, 9) && !co_prefix_index_has(ix, 8));
    co_prefix_index_free(ix);
}

static void test_match_counts_leading_blocks_as_the_node_keys_them(void) {
    int32_t ids[13];
    for (int i = 0; i < 13; i++)
        ids[i] = 100 + i;
    uint64_t fp = 0xfeed, salt = ts_kv_salt_digest("t");
    uint64_t k0 = ts_kv_hash_block(ts_kv_hash_root(fp, salt), ids, 4);
    uint64_t k1 = ts_kv_hash_block(k0, ids + 4, 4);
    uint64_t k2 = ts_kv_hash_block(k1, ids + 8, 4);
    uint64_t keys[3] = {k0, k1, k2};
    co_prefix_index *ix = NULL;
    CHECK_OK(co_prefix_index_apply(&ix, keys, 3, NULL, 0, true));
    CHECK_EQ_INT(co_prefix_index_match(ix, fp, salt, ids, 13, 4), 12);
    CHECK_EQ_INT(co_prefix_index_match(ix, fp, salt, ids, 12, 4), 8);     /* not the last token's */
    CHECK_EQ_INT(co_prefix_index_match(ix, fp, 0, ids, 13, 4), 0);        /* another salt */
    CHECK_EQ_INT(co_prefix_index_match(ix, fp + 1, salt, ids, 13, 4), 0); /* another model */
    CHECK_OK(co_prefix_index_apply(&ix, NULL, 0, &k1, 1, false));
    CHECK_EQ_INT(co_prefix_index_match(ix, fp, salt, ids, 13, 4), 4); /* the chain stops */
    CHECK_EQ_INT(co_prefix_index_match(NULL, fp, salt, ids, 13, 4), 0);
    co_prefix_index_free(ix);
}

int main(void) {
    RUN(test_deltas_and_snapshots_match_a_reference);
    RUN(test_match_counts_leading_blocks_as_the_node_keys_them);
    return test_summary();
}
