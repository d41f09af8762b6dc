/*
 * kv_tier_host.h — the host-memory tier of the KV cache: prefix-cache blocks that left the
 * engine's pool, kept in this process's memory (--kv-host-memory bytes per rank) so that a later
 * request with the same prefix loads them instead of recomputing them.
 *
 * A store of fixed-size slots, each the bytes of one block on this rank (every layer's K and V
 * of this rank's KV heads; kv_tiers.h decides the layout), keyed like the device pool (kv_hash.h:
 * the chain key, verified against the parent key and the block's tokens) and holding a checksum
 * of its bytes, checked before a block goes back (ts_kv_tier_host_verify): a block that does not
 * match is discarded and recomputed, never used.
 *
 * LRU, leaves first: when full, a put evicts the least recently stored entry that has no child
 * entry (an entry whose parent key is its key): a block whose children are kept is never evicted
 * first, as in the device pool. Finding an entry does not touch it: an entry's age is the time
 * the device pool last gave it up, which is leaves first already, and a block loaded back into
 * the device comes back here (touched) when the device evicts it again.
 *
 * The same store without the bytes (ts_kv_tier_host_create_index) is the disk tier's index
 * (kv_tier_disk.h): keys, LRU and leaves first are the same; the bytes live in files.
 *
 * Not thread-safe: one owner (the rank's engine thread, kv_tiers.c).
 */
#ifndef TS_NODE_KV_TIER_HOST_H
#define TS_NODE_KV_TIER_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ts_kv_tier_host ts_kv_tier_host;

/* As many slots of block_bytes as capacity_bytes holds. TS_E_INVALID (naming --kv-host-memory)
 * when that is none; TS_E_NOMEM when the memory cannot be had. */
int ts_kv_tier_host_create(size_t capacity_bytes, size_t block_bytes, int32_t block_size,
                           ts_kv_tier_host **out);
/* The index alone: n_slots entries, no bytes (ts_kv_tier_host_data returns NULL; commit with
 * ts_kv_tier_host_commit_sum; verify is the owner's business). */
int ts_kv_tier_host_create_index(int32_t n_slots, int32_t block_size, ts_kv_tier_host **out);
void ts_kv_tier_host_destroy(ts_kv_tier_host *t);

/* Called for every committed entry a reserve evicts, before its slot is reused (data valid
 * during the call; NULL for an index): a lower tier may keep it. Not for remove(). */
typedef void (*ts_kv_tier_host_evict_hook)(void *user, int32_t slot, uint64_t hash, uint64_t parent,
                                           const int32_t *tokens, const void *data);
void ts_kv_tier_host_set_evict_hook(ts_kv_tier_host *t, ts_kv_tier_host_evict_hook hook,
                                    void *user);

int32_t ts_kv_tier_host_capacity(const ts_kv_tier_host *t); /* slots */
int32_t ts_kv_tier_host_n_used(const ts_kv_tier_host *t);
size_t ts_kv_tier_host_block_bytes(const ts_kv_tier_host *t);

/* The slot holding (hash, parent, tokens), or -1. */
int32_t ts_kv_tier_host_find(const ts_kv_tier_host *t, uint64_t hash, uint64_t parent,
                             const int32_t *tokens);

/* Starts storing a block: when it is held already, touches it (most recent) and returns -1;
 * otherwise takes a slot (evicting, leaves first, when full) and returns it for the caller to
 * fill (ts_kv_tier_host_data) and then commit or abort. Nothing finds a slot before its commit. */
int32_t ts_kv_tier_host_reserve(ts_kv_tier_host *t, uint64_t hash, uint64_t parent,
                                const int32_t *tokens);
void ts_kv_tier_host_commit(ts_kv_tier_host *t, int32_t slot); /* checksums the bytes */
void ts_kv_tier_host_commit_sum(ts_kv_tier_host *t, int32_t slot, uint64_t checksum);
uint64_t ts_kv_tier_host_checksum(const ts_kv_tier_host *t, int32_t slot);
/* The slot's tokens and keys (block_size tokens). */
const int32_t *ts_kv_tier_host_tokens(const ts_kv_tier_host *t, int32_t slot);
void ts_kv_tier_host_abort(ts_kv_tier_host *t, int32_t slot);

/* The slot's bytes (block_bytes of them). */
void *ts_kv_tier_host_data(ts_kv_tier_host *t, int32_t slot);

/* TS_OK when the slot's bytes match the checksum stored with them; otherwise TS_E_FORMAT with a
 * message, and the entry is removed. */
int ts_kv_tier_host_verify(ts_kv_tier_host *t, int32_t slot);

/* Removes an entry (slot from find). */
void ts_kv_tier_host_remove(ts_kv_tier_host *t, int32_t slot);
/* Gives up every committed block through the evict hook, in eviction order (leaves first,
 * oldest first), and removes it: a shutdown hands the tier to the disk so. */
void ts_kv_tier_host_evict_all(ts_kv_tier_host *t);

/* Entries whose parent key is the slot's key (tests; the leaves-first rule). */
int32_t ts_kv_tier_host_n_children(const ts_kv_tier_host *t, int32_t slot);

#endif
