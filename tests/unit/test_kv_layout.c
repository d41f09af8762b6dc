/* test_kv_layout.c — the prefill→decode KV head routes (kvx/kv_layout.h). */
#include "common/error.h"
#include "kvx/kv_layout.h"
#include "node/shard.h"
#include "test.h"

#include <stdlib.h>

/* Routes of a layout, or -1 routes on error. */
static int routes_of(int32_t n_kv, int a, int b, ts_kv_route *out, int max) {
    int n = -1;
    if (ts_kv_routes(n_kv, a, b, out, max, &n) != TS_OK) return -1;
    return n;
}

static void check_routes(const ts_kv_route *r, int n, const ts_kv_route *want, int n_want) {
    CHECK_EQ_INT(n, n_want);
    for (int i = 0; i < n && i < n_want; i++) {
        CHECK_EQ_INT(r[i].src_rank, want[i].src_rank);
        CHECK_EQ_INT(r[i].dst_rank, want[i].dst_rank);
        CHECK_EQ_INT(r[i].kv_head0, want[i].kv_head0);
        CHECK_EQ_INT(r[i].n_kv_heads, want[i].n_kv_heads);
    }
}

static void test_the_four_serving_layouts_with_four_heads(void) {
    ts_kv_route r[64];
    const ts_kv_route l11[] = {{0, 0, 0, 4}};
    check_routes(r, routes_of(4, 1, 1, r, 64), l11, 1);
    const ts_kv_route l21[] = {{0, 0, 0, 2}, {1, 0, 2, 2}};
    check_routes(r, routes_of(4, 2, 1, r, 64), l21, 2);
    const ts_kv_route l12[] = {{0, 0, 0, 2}, {0, 1, 2, 2}};
    check_routes(r, routes_of(4, 1, 2, r, 64), l12, 2);
    const ts_kv_route l42[] = {{0, 0, 0, 1}, {1, 0, 1, 1}, {2, 1, 2, 1}, {3, 1, 3, 1}};
    check_routes(r, routes_of(4, 4, 2, r, 64), l42, 4);
}

static void test_replicated_layouts_spread_over_holders(void) {
    ts_kv_route r[64];
    /* Prefill TP 8 over 4 heads: rank p holds head p / 2. Decode rank 0 takes heads 0, 1 from
     * the first holder of each, decode rank 1 heads 2, 3 from the second. */
    const ts_kv_route l82[] = {{0, 0, 0, 1}, {2, 0, 1, 1}, {5, 1, 2, 1}, {7, 1, 3, 1}};
    check_routes(r, routes_of(4, 8, 2, r, 64), l82, 4);
    /* Decode TP 8 over 4 heads: decode rank d owns head d / 2, both replicas get it. */
    const ts_kv_route l28[] = {{0, 0, 0, 1}, {0, 1, 0, 1}, {0, 2, 1, 1}, {0, 3, 1, 1},
                               {1, 4, 2, 1}, {1, 5, 2, 1}, {1, 6, 3, 1}, {1, 7, 3, 1}};
    check_routes(r, routes_of(4, 2, 8, r, 64), l28, 8);
    /* 8 → 8 over 4 heads: every decode rank reads from the prefill rank of the same index. */
    int n = routes_of(4, 8, 8, r, 64);
    CHECK_EQ_INT(n, 8);
    for (int i = 0; i < n; i++)
        CHECK_EQ_INT(r[i].src_rank, r[i].dst_rank);
}

/* Every legal layout of several head counts: each decode rank gets exactly its heads, each
 * once, from a prefill rank that holds them; routes are merged and ordered; with replicated
 * prefill heads no prefill rank sends more than its fair share. */
static void test_every_legal_layout_delivers_each_owned_head_once(void) {
    const int32_t head_counts[] = {1, 2, 3, 4, 6, 8, 12, 32};
    int layouts = 0;
    for (size_t hc = 0; hc < sizeof head_counts / sizeof head_counts[0]; hc++) {
        int32_t n_kv = head_counts[hc];
        for (int a = 1; a <= 64; a++) {
            if (n_kv % a != 0 && a % n_kv != 0) continue;
            for (int b = 1; b <= 64; b++) {
                if (n_kv % b != 0 && b % n_kv != 0) continue;
                int max = ts_kv_routes_max(n_kv, b);
                ts_kv_route *r = malloc((size_t)max * sizeof *r);
                int n = routes_of(n_kv, a, b, r, max);
                CHECK(n >= b);
                int *got = calloc((size_t)b * (size_t)n_kv, sizeof *got);
                int *sent = calloc((size_t)a, sizeof *sent);
                for (int i = 0; i < n; i++) {
                    CHECK(r[i].src_rank >= 0 && r[i].src_rank < a);
                    CHECK(r[i].dst_rank >= 0 && r[i].dst_rank < b);
                    CHECK(r[i].n_kv_heads >= 1);
                    int32_t sh0, sn;
                    ts_shard_kv_heads(n_kv, a, r[i].src_rank, &sh0, &sn);
                    CHECK(r[i].kv_head0 >= sh0 && r[i].kv_head0 + r[i].n_kv_heads <= sh0 + sn);
                    for (int32_t h = r[i].kv_head0; h < r[i].kv_head0 + r[i].n_kv_heads; h++)
                        got[(size_t)r[i].dst_rank * (size_t)n_kv + (size_t)h]++;
                    sent[r[i].src_rank] += r[i].n_kv_heads;
                    if (i > 0) {
                        const ts_kv_route *p = &r[i - 1];
                        CHECK(p->dst_rank < r[i].dst_rank ||
                              (p->dst_rank == r[i].dst_rank &&
                               p->kv_head0 + p->n_kv_heads <= r[i].kv_head0));
                        CHECK(!(p->dst_rank == r[i].dst_rank && p->src_rank == r[i].src_rank &&
                                p->kv_head0 + p->n_kv_heads == r[i].kv_head0));
                    }
                }
                int total = 0;
                for (int d = 0; d < b; d++) {
                    int32_t h0, nh;
                    ts_shard_kv_heads(n_kv, b, d, &h0, &nh);
                    total += nh;
                    for (int32_t h = 0; h < n_kv; h++)
                        CHECK_EQ_INT(got[(size_t)d * (size_t)n_kv + (size_t)h],
                                     h >= h0 && h < h0 + nh ? 1 : 0);
                }
                /* Fair share: a head is sent (b replicas) times in all; over a holders. */
                int per_rank_max = (total + a - 1) / a;
                int holders_per_head = a > n_kv ? a / n_kv : 1;
                int dst_per_head = b > n_kv ? b / n_kv : 1;
                int bound = a > n_kv ? (dst_per_head + holders_per_head - 1) / holders_per_head
                                     : per_rank_max;
                for (int p = 0; p < a; p++)
                    CHECK(sent[p] <= bound);
                free(got);
                free(sent);
                free(r);
                layouts++;
            }
        }
    }
    CHECK(layouts > 50);
}

static void test_illegal_layouts_are_refused_with_a_useful_message(void) {
    ts_kv_route r[64];
    int n = 7;
    CHECK_EQ_INT(ts_kv_routes(4, 3, 1, r, 64, &n), TS_E_INVALID);
    CHECK(strstr(ts_error_message(), "prefill tensor parallelism 3") != NULL);
    CHECK(strstr(ts_error_message(), "1, 2, 4") != NULL);
    CHECK_EQ_INT(n, 0);
    CHECK_EQ_INT(ts_kv_routes(4, 1, 6, r, 64, &n), TS_E_INVALID);
    CHECK(strstr(ts_error_message(), "decode tensor parallelism 6") != NULL);
    CHECK_EQ_INT(ts_kv_routes(4, 0, 1, r, 64, &n), TS_E_INVALID);
    CHECK_EQ_INT(ts_kv_routes(0, 1, 1, r, 64, &n), TS_E_INVALID);
    CHECK_EQ_INT(ts_kv_routes(4, 4, 2, r, 3, &n), TS_E_INVALID); /* array too small */
}

static void test_shard_kv_heads_matches_the_shard_plan_rule(void) {
    int32_t h0, n;
    ts_shard_kv_heads(4, 2, 1, &h0, &n);
    CHECK_EQ_INT(h0, 2);
    CHECK_EQ_INT(n, 2);
    ts_shard_kv_heads(4, 8, 5, &h0, &n);
    CHECK_EQ_INT(h0, 2);
    CHECK_EQ_INT(n, 1);
    ts_shard_kv_heads(4, 1, 0, &h0, &n);
    CHECK_EQ_INT(h0, 0);
    CHECK_EQ_INT(n, 4);
}

int main(void) {
    RUN(test_the_four_serving_layouts_with_four_heads);
    RUN(test_replicated_layouts_spread_over_holders);
    RUN(test_every_legal_layout_delivers_each_owned_head_once);
    RUN(test_illegal_layouts_are_refused_with_a_useful_message);
    RUN(test_shard_kv_heads_matches_the_shard_plan_rule);
    return test_summary();
}
