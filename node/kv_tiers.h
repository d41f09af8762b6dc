/*
 * kv_tiers.h — the KV cache's lower tiers as one group: every rank of a tensor-parallel group
 * keeps its own shard of each block (its KV heads, every layer) in its own host tier
 * (kv_tier_host.h), and the group leader drives them all in lock-step through group tasks
 * (engine.h: ts_engine_set_task_channel), so that every rank's tier holds the same keys in the
 * same LRU order and the leader's index speaks for the group. Below the host tier sits the disk
 * tier (kv_tier_disk.h): blocks the host tier evicts (or, without a host tier, those the device
 * pool evicts) are written there, and a prefix found there is loaded from it.
 *
 * The flow (scheduler.c):
 *   - a cached block the device pool evicts (kv_pool.h's evict hook) is stored: every rank copies
 *     its shard of the block's KV into its tier, with a checksum (a block already held is only
 *     touched);
 *   - a request whose prefix continues in the tier past the device pool's last hit loads the
 *     blocks back into fresh device blocks instead of recomputing them — when the measured load
 *     time per block is below the measured prefill time of as many tokens — and they join the
 *     device pool's prefix cache again;
 *   - a preempted sequence's full blocks stay in the device pool's cache and reach the tier when
 *     evicted, so preemption drops at most its last, partial block.
 * A block whose checksum fails on any rank is dropped on every rank and recomputed, never used.
 * The kernels are batch-invariant and a tier keeps the exact bytes, so a loaded block holds the
 * bits a recomputation would give: no output changes.
 *
 * Threads: the engine's thread of each rank (tasks run there; the leader's calls are between
 * steps). Errors: TS_E_* with a message; a failed store or load costs only recomputation.
 */
#ifndef TS_NODE_KV_TIERS_H
#define TS_NODE_KV_TIERS_H

#include "node/engine.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ts_kv_tiers ts_kv_tiers;

typedef struct ts_kv_tiers_options {
    size_t host_bytes;    /* --kv-host-memory: host tier bytes per rank (0: no host tier) */
    const char *disk_dir; /* --kv-disk: the disk tier's directory (NULL: no disk tier) */
    size_t disk_bytes;    /* --kv-disk-size: the disk tier's bytes per rank */
    uint64_t fingerprint; /* ts_kvx_fingerprint: the disk tier's files of another model are
                           * never read */
} ts_kv_tiers_options;

typedef struct ts_kv_tiers_stats {
    int32_t host_blocks_total, host_blocks_used;
    int64_t stored_blocks, stored_bytes, store_ns; /* copies into the tier */
    int64_t loaded_blocks, loaded_bytes, load_ns;  /* copies back into the device pool */
    int64_t checksum_failures;                     /* blocks discarded and recomputed */
    int32_t disk_blocks_total, disk_blocks_used;
    int64_t disk_loaded_blocks, disk_write_failures;
} ts_kv_tiers_stats;

/* Collective: every rank of the engine's group calls it with the same options (the tier of
 * each rank holds as many blocks). *out stays NULL (and TS_OK) when no tier is configured. */
int ts_kv_tiers_create(ts_engine *e, const ts_kv_tiers_options *o, ts_kv_tiers **out);
void ts_kv_tiers_destroy(ts_kv_tiers *t);

/* Leader only, between steps. Stores the KV of device block `block` under its prefix-cache key
 * on every rank. Failures are logged and leave the block out of the tier. */
void ts_kv_tiers_store(ts_kv_tiers *t, int32_t block, uint64_t hash, uint64_t parent,
                       const int32_t *tokens);
/* Leader only: whether the group's tiers hold this block. */
bool ts_kv_tiers_has(const ts_kv_tiers *t, uint64_t hash, uint64_t parent, const int32_t *tokens);
/* Leader only, between steps: whether loading one block is expected to be cheaper than
 * recomputing it, given the measured prefill time per token (0: not measured yet). */
bool ts_kv_tiers_load_pays(const ts_kv_tiers *t, double prefill_ns_per_token, int32_t block_size);
/* Leader only, between steps: writes the block held under this key into device block `block`
 * on every rank; *from_disk (when not NULL) says whether the disk tier, not the host tier, held
 * it. TS_E_NOT_FOUND when it is not held; TS_E_FORMAT when a rank's copy fails its checksum
 * (then it is dropped on every rank); the message says which. */
int ts_kv_tiers_load(ts_kv_tiers *t, int32_t block, uint64_t hash, uint64_t parent,
                     const int32_t *tokens, bool *from_disk);

/* Whether the tiers reach a disk (NULL: none), so that what they hold outlives the process. */
bool ts_kv_tiers_has_disk(const ts_kv_tiers *t);
/* Leader only, between steps, at shutdown: every rank writes its host tier's blocks to its disk
 * tier (oldest first), so that a restart finds them there. No-op without both tiers. */
void ts_kv_tiers_flush(ts_kv_tiers *t);

void ts_kv_tiers_get_stats(const ts_kv_tiers *t, ts_kv_tiers_stats *out);

/* For tests of the checksum path: flips one byte of this rank's copy of a held block. TS_OK, or
 * TS_E_NOT_FOUND. */
int ts_kv_tiers_damage_for_test(ts_kv_tiers *t, uint64_t hash, uint64_t parent,
                                const int32_t *tokens);

#endif
