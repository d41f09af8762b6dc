/*
 * kv_layout.h — which prefill rank sends which KV heads to which decode rank.
 *
 * A prefill group of TP degree A and a decode group of TP degree B each hold the KV cache split
 * by heads (shard.h: n_kv_heads / size consecutive heads per rank when size divides
 * n_kv_heads, else one head replicated over size / n_kv_heads ranks). A transfer moves a
 * sequence's KV from the A layout to the B layout without any rank gathering the whole cache:
 * every decode rank d receives each KV head it owns exactly once, from one prefill rank that
 * holds that head. When the prefill group replicates a head over k ranks, decode ranks that
 * want it spread over those k holders (decode rank d takes it from holder d mod k), so no one
 * prefill rank sends more than its share.
 *
 * Legal layouts: A and B each divide n_kv_heads or are divided by it (the same rule as
 * ts_shard_plan_make), e.g. with 4 KV heads 1→1, 2→1, 1→2, 4→2, 8→2, 2→8.
 *
 * Pure functions; thread-safe.
 */
#ifndef TS_NODE_KV_LAYOUT_H
#define TS_NODE_KV_LAYOUT_H

#include <stdint.h>

/* One stream of a transfer: prefill rank src_rank sends global KV heads
 * [kv_head0, kv_head0 + n_kv_heads) to decode rank dst_rank. */
typedef struct ts_kv_route {
    int src_rank;
    int dst_rank;
    int32_t kv_head0;
    int32_t n_kv_heads;
} ts_kv_route;

/* The most routes ts_kv_routes can produce (every decode rank gets every head from a different
 * prefill rank); size a caller's array with it. */
static inline int ts_kv_routes_max(int32_t n_kv_heads, int dst_size) {
    return n_kv_heads * dst_size;
}

/* Fills routes[0 .. *n_routes) for prefill degree src_size and decode degree dst_size, ordered
 * by decode rank then head; consecutive heads from the same prefill rank form one route.
 * TS_E_INVALID (with a message naming the legal degrees) when a degree and n_kv_heads do not
 * divide one another or max_routes is too small. */
int ts_kv_routes(int32_t n_kv_heads, int src_size, int dst_size, ts_kv_route *routes,
                 int max_routes, int *n_routes);

#endif
