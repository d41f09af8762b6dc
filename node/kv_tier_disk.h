/*
 * kv_tier_disk.h — the disk tier of the KV cache: prefix-cache blocks kept as files under
 * --kv-disk DIR (at most --kv-disk-size bytes per rank), below the host tier, so that they
 * survive eviction from memory and a node restart.
 *
 * Each rank keeps its own shard of a block in DIR/rank-R-of-N/ (R of a group of N; when another
 * process holds that one, as several groups on one host sharing DIR do, the first free of
 * rank-R-of-N.1, .2, ...), one file per block: a header (magic, format version, the model's KV
 * fingerprint, rank and group size, block geometry, the block's key, parent key and tokens, a
 * checksum of the data and one of the header) and the block's bytes as the host tier holds them.
 * Files are written to a temporary name and renamed, so a crash leaves at most an unfinished
 * temporary file.
 *
 * At open the index is rebuilt from the directory, oldest file first: unfinished files and files
 * whose header is damaged are removed; files of another model, another TP layout or another
 * format version are skipped and left alone (they are not ours to delete); one warning says how
 * many of each. A block's data is checked against its checksum when it is loaded: a mismatch
 * removes the file and the block is recomputed, never used. The index holds as many blocks as
 * the size allows (every file has the same size) and evicts leaves first, deleting the file, so
 * the directory never holds more than --kv-disk-size bytes of this rank's blocks. A directory
 * that cannot be created or written is an error at open; a write that fails later (a full disk)
 * leaves that block out and is reported by the caller.
 *
 * Not thread-safe: one owner (the rank's engine thread, kv_tiers.c). Blocking file I/O on that
 * thread, between steps.
 */
#ifndef TS_NODE_KV_TIER_DISK_H
#define TS_NODE_KV_TIER_DISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ts_kv_tier_disk ts_kv_tier_disk;

typedef struct ts_kv_tier_disk_options {
    const char *dir;      /* --kv-disk */
    size_t size_bytes;    /* --kv-disk-size: this rank's files at most */
    uint64_t fingerprint; /* ts_kvx_fingerprint of the model, KV type and block size */
    int rank, group_size;
    int32_t block_size;
    size_t block_bytes; /* this rank's bytes of one block */
} ts_kv_tier_disk_options;

typedef struct ts_kv_tier_disk_scan {
    int32_t indexed;         /* blocks found usable at open */
    int32_t foreign;         /* another model, layout or version: skipped, kept */
    int32_t removed_corrupt; /* damaged headers, wrong sizes */
    int32_t removed_partial; /* unfinished writes */
    int32_t removed_over;    /* beyond --kv-disk-size (oldest first) */
} ts_kv_tier_disk_scan;

/* Creates the rank's directory if needed, checks that it can write there, and rebuilds the
 * index. TS_E_INVALID for a size that holds no block; TS_E_IO (naming --kv-disk and the path)
 * when the directory cannot be made, read or written. */
int ts_kv_tier_disk_open(const ts_kv_tier_disk_options *o, ts_kv_tier_disk **out);
void ts_kv_tier_disk_close(ts_kv_tier_disk *d);

const ts_kv_tier_disk_scan *ts_kv_tier_disk_scan_result(const ts_kv_tier_disk *d);
int32_t ts_kv_tier_disk_capacity(const ts_kv_tier_disk *d);
int32_t ts_kv_tier_disk_n_used(const ts_kv_tier_disk *d);
size_t ts_kv_tier_disk_file_bytes(const ts_kv_tier_disk *d);
/* The rank's directory (DIR/rank-R-of-N). */
const char *ts_kv_tier_disk_path(const ts_kv_tier_disk *d);

bool ts_kv_tier_disk_has(const ts_kv_tier_disk *d, uint64_t hash, uint64_t parent,
                         const int32_t *tokens);

/* Stores a block (block_bytes of data): touches it when held, else writes its file (evicting
 * leaves first when full). TS_E_IO with the reason when the write fails (the block is left out). */
int ts_kv_tier_disk_store(ts_kv_tier_disk *d, uint64_t hash, uint64_t parent, const int32_t *tokens,
                          const void *data);

/* Reads a held block's data into out (block_bytes). TS_E_NOT_FOUND when not held; TS_E_FORMAT
 * when the file does not match its header or checksum, TS_E_IO when it cannot be read (both
 * remove the block). */
int ts_kv_tier_disk_load(ts_kv_tier_disk *d, uint64_t hash, uint64_t parent, const int32_t *tokens,
                         void *out);

/* Forgets a block and deletes its file (nothing when not held). */
void ts_kv_tier_disk_drop(ts_kv_tier_disk *d, uint64_t hash, uint64_t parent,
                          const int32_t *tokens);

#endif
