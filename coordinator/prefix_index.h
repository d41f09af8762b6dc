/*
 * prefix_index.h — the coordinator's picture of what a node group holds in its prefix cache, for
 * cache-aware routing (router.c).
 *
 * A set of block keys (common/kv_hash.h) kept up to date from the group's heartbeats, which
 * carry the keys its pool gained and lost since the previous one, or the whole set
 * (Heartbeat.cache_added/cache_removed/cache_snapshot). The coordinator computes the same chain
 * keys from a request's prompt, the group's model fingerprint and the request's cache salt, so
 * co_prefix_index_match says how many leading prompt tokens the group would find cached. It is a
 * hint: a heartbeat old, and a key the group evicted since only costs a recomputation there.
 *
 * Not thread-safe: under the coordinator's lock, as the group it belongs to.
 */
#ifndef TS_COORDINATOR_PREFIX_INDEX_H
#define TS_COORDINATOR_PREFIX_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct co_prefix_index co_prefix_index;

/* Applies one heartbeat's changes, removals first (snapshot: `added` replaces everything). *ix may
 * be NULL (an empty set, created here). 0 or TS_E_NOMEM (the set is then emptied: no hints, no
 * harm). */
int co_prefix_index_apply(co_prefix_index **ix, const uint64_t *added, size_t n_added,
                          const uint64_t *removed, size_t n_removed, bool snapshot);
void co_prefix_index_free(co_prefix_index *ix);
size_t co_prefix_index_size(const co_prefix_index *ix);
bool co_prefix_index_has(const co_prefix_index *ix, uint64_t key);

/* Prompt tokens of ids[0 .. n) in leading full blocks the group holds, as its scheduler would
 * reuse them (never the block of the last token). NULL ix: 0. */
int32_t co_prefix_index_match(const co_prefix_index *ix, uint64_t fingerprint, uint64_t salt_digest,
                              const int32_t *ids, int32_t n, int32_t block_size);

#endif
