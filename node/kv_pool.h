/*
 * kv_pool.h — the paged KV cache's block allocator and prefix cache (bookkeeping only).
 *
 * The KV memory itself lives in the backend (one K and one V pool per layer, see kernels.h);
 * this module hands out block ids 0 .. n_blocks-1 and tracks who uses them. It runs on the
 * group leader only: followers use the block ids the leader puts in each step's plan.
 *
 * Reference counts let sequences share blocks. A block is "full" once all block_size slots hold
 * KV; a full block never changes again, so it can be shared. The prefix cache keys a full block
 * by its chained hash (common/kv_hash.h: the block's tokens chained with its parent's key, from a
 * root of the model fingerprint and the request's cache salt) and verifies every hit exactly:
 * the block's tokens, its parent key and its parent *block* must all match, so the chain a hit
 * stands for is the one the caller walked, block by block, and a hash collision can only miss.
 * A new request whose prompt starts with cached blocks reuses them and prefills only the rest.
 * Because the kernels are batch-invariant, a cached block holds exactly the bits the request
 * would have computed itself: reuse never changes outputs.
 *
 * Eviction is leaves first. Released cached blocks are kept on an LRU list until their memory
 * is needed; ts_kv_pool_alloc takes a never-cached free block first, then evicts the least
 * recently released cached block that has no cached child (a block whose children are kept is
 * never evicted: they would become unreachable). Callers release a sequence's blocks back to
 * front (ts_kv_pool_release_seq) so that a chain's tail is older on the list than its head and
 * eviction eats chains from their ends. Every holder of a cached block also holds its parent
 * (a sequence holds its whole prefix), so every released block is evictable in the end and
 * n_free counts both kinds: they are all available. An eviction hook sees each evicted block
 * while its KV is still intact, so that a lower tier (kv_tier_host.h) can keep it.
 *
 * Not thread-safe: one owner (the scheduler).
 */
#ifndef TS_NODE_KV_POOL_H
#define TS_NODE_KV_POOL_H

#include <stdbool.h>
#include <stdint.h>

typedef struct ts_kv_pool ts_kv_pool;

int ts_kv_pool_create(int32_t n_blocks, int32_t block_size, ts_kv_pool **out);
void ts_kv_pool_destroy(ts_kv_pool *p);

int32_t ts_kv_pool_n_blocks(const ts_kv_pool *p);
int32_t ts_kv_pool_block_size(const ts_kv_pool *p);
/* Blocks available to ts_kv_pool_alloc (free plus evictable cached ones). */
int32_t ts_kv_pool_n_free(const ts_kv_pool *p);
/* Blocks currently held in the prefix cache (in use or evictable). */
int32_t ts_kv_pool_n_cached(const ts_kv_pool *p);

/* Takes a block with reference count 1. TS_E_EXHAUSTED (no message: a normal condition the
 * scheduler handles) when none is available. */
int ts_kv_pool_alloc(ts_kv_pool *p, int32_t *block);
void ts_kv_pool_ref(ts_kv_pool *p, int32_t block);
/* Drops one reference; at zero the block becomes available again. */
void ts_kv_pool_release(ts_kv_pool *p, int32_t block);
/* Releases a sequence's block table blocks[0 .. n) back to front (see above). */
void ts_kv_pool_release_seq(ts_kv_pool *p, const int32_t *blocks, int32_t n);
int32_t ts_kv_pool_refcount(const ts_kv_pool *p, int32_t block);

/* Registers a full block that the caller holds: its key `hash`, its parent's key `parent` (the
 * chain root for a first block), its parent block (-1 for a first block; it must be cached) and
 * its tokens (block_size of them). Returns the block that holds this content from now on:
 * `block` itself, or — when another block already holds the same content after the same parent
 * — that block, with one reference taken for the caller, who should put it in its block table
 * in place of `block` and release `block` (the two hold the same bits). A block already
 * registered is left as it is and returned. */
int32_t ts_kv_pool_publish(ts_kv_pool *p, int32_t block, uint64_t hash, uint64_t parent,
                           int32_t parent_block, const int32_t *tokens);

/* Looks up cached content (key, parent key, parent block and tokens must all match). On a hit
 * the block gets one more reference (taking it off the evictable list) and is returned; -1 on
 * a miss. */
int32_t ts_kv_pool_lookup(ts_kv_pool *p, uint64_t hash, uint64_t parent, int32_t parent_block,
                          const int32_t *tokens);

/* Cached blocks whose parent is `block` (tests, and the leaves-first invariant). */
int32_t ts_kv_pool_n_children(const ts_kv_pool *p, int32_t block);
bool ts_kv_pool_is_cached(const ts_kv_pool *p, int32_t block);

/* Called by ts_kv_pool_alloc for a cached block it evicts, before the block is handed out:
 * its KV is still intact. tokens (block_size ids) is valid during the call only. The hook must
 * not call back into the pool. NULL removes it. */
typedef void (*ts_kv_pool_evict_hook)(void *user, int32_t block, uint64_t hash, uint64_t parent,
                                      const int32_t *tokens);
void ts_kv_pool_set_evict_hook(ts_kv_pool *p, ts_kv_pool_evict_hook hook, void *user);

/* ---- the journal: what the cache gained and lost, for cache-aware routing ----
 * Once enabled, every key published and every key evicted or cleared is recorded until taken.
 * ts_kv_pool_journal_take copies the keys added and removed since the last take (at most `max`
 * of each) and empties the journal, so that applying the removals first and then the additions
 * gives the cache's keys (a key added and then removed is only in `removed`); it returns true when
 * the journal overflowed (more than 4 × n_blocks changes, or more than `max`): the caller should
 * send a snapshot instead (ts_kv_pool_cached_keys). */
void ts_kv_pool_journal_enable(ts_kv_pool *p);
bool ts_kv_pool_journal_take(ts_kv_pool *p, uint64_t *added, int32_t *n_added, uint64_t *removed,
                             int32_t *n_removed, int32_t max);
/* Every cached block's key (at most max); returns the count. */
int32_t ts_kv_pool_cached_keys(const ts_kv_pool *p, uint64_t *out, int32_t max);

/* Drops the whole prefix cache (blocks in use stay in use; nothing goes to the hook). */
void ts_kv_pool_clear_cache(ts_kv_pool *p);

/* Evicts every cached block that is not in use, through the evict hook, in the order
 * ts_kv_pool_alloc would (leaves first, least recently released first): what a shutdown does
 * to hand the cache to the lower tiers. */
void ts_kv_pool_evict_all(ts_kv_pool *p);

#endif
