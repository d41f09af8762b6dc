/*
 * kv_pool.h — the paged KV cache's block allocator and prefix cache (bookkeeping only).
 *
 * The KV memory itself lives in the backend (one K and one V pool per layer, see kernels.h);
 * this module hands out block ids 0 .. n_blocks-1 and tracks who uses them. It runs on the
 * group leader only: followers use the block ids the leader puts in each step's plan.
 *
 * Reference counts let sequences share blocks. A block is "full" once all block_size slots hold
 * KV; a full block never changes again, so it can be shared. The prefix cache maps the token
 * content of a full block and of everything before it (a chained hash, verified against the
 * stored token ids, so a hash collision cannot alias two prefixes) to the block. A new request
 * whose prompt starts with cached blocks reuses them and prefills only the rest. Because the
 * kernels are batch-invariant, a cached block holds exactly the bits the request would have
 * computed itself: reuse never changes outputs.
 *
 * Released blocks that are in the prefix cache are kept (least recently released first out)
 * until their memory is needed: ts_kv_pool_alloc takes a never-cached free block first, then
 * evicts the oldest cached one. n_free counts both kinds: they are all available.
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
int32_t ts_kv_pool_refcount(const ts_kv_pool *p, int32_t block);

/* The chain hash of a block given the previous block's hash (0 for the first block). */
uint64_t ts_kv_prefix_hash(uint64_t parent, const int32_t *tokens, int32_t n);

/* Registers a full block: its chain hash and its tokens (block_size of them). A block already
 * registered, or content already cached in another block, is left as it is. */
void ts_kv_pool_publish(ts_kv_pool *p, int32_t block, uint64_t hash, uint64_t parent,
                        const int32_t *tokens);

/* Looks up cached content (hash, parent and tokens must all match). On a hit the block gets one
 * more reference (taking it off the evictable list) and is returned; -1 on a miss. */
int32_t ts_kv_pool_lookup(ts_kv_pool *p, uint64_t hash, uint64_t parent, const int32_t *tokens);

/* Drops the whole prefix cache (blocks in use stay in use). */
void ts_kv_pool_clear_cache(ts_kv_pool *p);

#endif
