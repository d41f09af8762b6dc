/* kv_layout.c — see kv_layout.h. */
#include "kvx/kv_layout.h"

#include "common/error.h"
#include "node/shard.h"

#include <stdio.h>

static int check_degree(int32_t n_kv_heads, int size, const char *side) {
    if (size >= 1 && (n_kv_heads % size == 0 || size % n_kv_heads == 0)) return TS_OK;
    char options[128] = "";
    int n = 0;
    for (int d = 1; d <= n_kv_heads && n < (int)sizeof options - 16; d++)
        if (n_kv_heads % d == 0)
            n += snprintf(options + n, sizeof options - (size_t)n, "%s%d", n ? ", " : "", d);
    return ts_error_set(TS_E_INVALID,
                        "%s tensor parallelism %d and %d KV heads: one must divide the other "
                        "(use one of %s, or a multiple of %d)",
                        side, size, n_kv_heads, options, n_kv_heads);
}

/* The prefill rank that sends global head h to decode rank d. */
static int source_of(int32_t n_kv_heads, int src_size, int32_t h, int d) {
    if (n_kv_heads % src_size == 0) return h / (n_kv_heads / src_size);
    int holders = src_size / n_kv_heads; /* ranks h*holders .. (h+1)*holders-1 hold h */
    return h * holders + d % holders;
}

int ts_kv_routes(int32_t n_kv_heads, int src_size, int dst_size, ts_kv_route *routes,
                 int max_routes, int *n_routes) {
    *n_routes = 0;
    if (n_kv_heads < 1) return ts_error_set(TS_E_INVALID, "%d KV heads", n_kv_heads);
    int rc = check_degree(n_kv_heads, src_size, "prefill");
    if (!rc) rc = check_degree(n_kv_heads, dst_size, "decode");
    if (rc) return rc;
    int n = 0;
    for (int d = 0; d < dst_size; d++) {
        int32_t h0, nh;
        ts_shard_kv_heads(n_kv_heads, dst_size, d, &h0, &nh);
        for (int32_t h = h0; h < h0 + nh; h++) {
            int src = source_of(n_kv_heads, src_size, h, d);
            ts_kv_route *last = n > 0 ? &routes[n - 1] : NULL;
            if (last && last->dst_rank == d && last->src_rank == src &&
                last->kv_head0 + last->n_kv_heads == h) {
                last->n_kv_heads++;
                continue;
            }
            if (n == max_routes)
                return ts_error_set(TS_E_INVALID, "more than %d KV transfer routes", max_routes);
            routes[n++] = (ts_kv_route){src, d, h, 1};
        }
    }
    *n_routes = n;
    return TS_OK;
}
