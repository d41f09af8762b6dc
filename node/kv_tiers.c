/*
 * kv_tiers.c — see kv_tiers.h.
 *
 * One group task per block and operation (store, load, drop): the message carries the key, the
 * parent key and the block's tokens, so every rank's tier indexes and verifies exactly as the
 * leader's. A rank's copy of a block is, per layer, its K heads then its V heads
 * ([n_kv_heads][block_size][head_dim] each, as ts_engine_kv_read lays them out).
 */
#include "node/kv_tiers.h"

#include "common/clock.h"
#include "common/error.h"
#include "common/kv_geometry.h"
#include "common/log.h"
#include "node/kv_tier_disk.h"
#include "node/kv_tier_host.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    TIER_TAG = 0x3154564b, /* "KVT1" */
    OP_STORE = 1,
    OP_LOAD = 2,
    OP_DROP = 3,
    OP_FLUSH = 4, /* the host tier's blocks to the disk tier */
};

typedef struct tier_msg {
    uint32_t tag;
    int32_t op;
    int32_t block;
    int32_t n_tokens;
    uint64_t hash, parent;
    int32_t tokens[]; /* block_size */
} tier_msg;

struct ts_kv_tiers {
    ts_engine *engine;
    ts_kv_tier_host *host;  /* NULL without --kv-host-memory */
    ts_kv_tier_disk *disk;  /* NULL without --kv-disk */
    unsigned char *scratch; /* one block: disk reads and writes without a host tier */
    size_t block_bytes;
    int32_t n_layers, block_size, n_heads;
    size_t part; /* bytes of one layer's K (or V) of this rank's heads of one block */
    tier_msg *msg;
    size_t msg_bytes;
    ts_kv_tiers_stats stats;
    bool warned_size;
};

/* ------------------------------------------------------------------ every rank */

static int read_block(ts_kv_tiers *t, int32_t block, unsigned char *dst) {
    for (int32_t l = 0; l < t->n_layers; l++) {
        unsigned char *k = dst + (size_t)l * 2 * t->part;
        int rc = ts_engine_kv_read(t->engine, l, &block, 1, 0, t->n_heads, k, k + t->part);
        if (rc) return ts_error_wrap(rc, "KV tiers: reading block %d", block);
    }
    return TS_OK;
}

static int write_block(ts_kv_tiers *t, int32_t block, const unsigned char *src) {
    for (int32_t l = 0; l < t->n_layers; l++) {
        const unsigned char *k = src + (size_t)l * 2 * t->part;
        int rc = ts_engine_kv_write(t->engine, l, &block, 1, 0, t->n_heads, k, k + t->part);
        if (rc) return ts_error_wrap(rc, "KV tiers: writing block %d", block);
    }
    return TS_OK;
}

/* A failed disk write leaves the block out; the first one and then every 1000th is logged, so
 * that a full disk does not flood the log. */
static void disk_store(ts_kv_tiers *t, uint64_t hash, uint64_t parent, const int32_t *tokens,
                       const void *data) {
    if (ts_kv_tier_disk_store(t->disk, hash, parent, tokens, data) == TS_OK) return;
    if (t->stats.disk_write_failures++ % 1000 == 0)
        TS_WARN("rank %d: %s (%lld failed writes so far; the blocks are left out)",
                ts_engine_comm(t->engine)->rank, ts_error_message(),
                (long long)t->stats.disk_write_failures);
}

/* The host tier gives a block up: the disk tier keeps it. */
static void on_host_evict(void *user, int32_t slot, uint64_t hash, uint64_t parent,
                          const int32_t *tokens, const void *data) {
    (void)slot;
    disk_store(user, hash, parent, tokens, data);
}

static int op_store(ts_kv_tiers *t, const tier_msg *m) {
    if (!t->host) { /* straight to disk (a held block is only touched) */
        int rc = ts_kv_tier_disk_has(t->disk, m->hash, m->parent, m->tokens)
                     ? TS_OK
                     : read_block(t, m->block, t->scratch);
        if (!rc) disk_store(t, m->hash, m->parent, m->tokens, t->scratch);
        return rc;
    }
    int32_t slot = ts_kv_tier_host_reserve(t->host, m->hash, m->parent, m->tokens);
    if (slot < 0) return TS_OK; /* held already: touched */
    int rc = read_block(t, m->block, ts_kv_tier_host_data(t->host, slot));
    if (rc) {
        ts_kv_tier_host_abort(t->host, slot);
        return rc;
    }
    ts_kv_tier_host_commit(t->host, slot);
    return TS_OK;
}

static int op_load(ts_kv_tiers *t, const tier_msg *m) {
    int rank = ts_engine_comm(t->engine)->rank;
    int32_t slot = t->host ? ts_kv_tier_host_find(t->host, m->hash, m->parent, m->tokens) : -1;
    if (slot >= 0) {
        int rc = ts_kv_tier_host_verify(t->host, slot);
        if (rc) {
            TS_WARN("rank %d: %s", rank, ts_error_message());
            return rc;
        }
        return write_block(t, m->block, ts_kv_tier_host_data(t->host, slot));
    }
    if (!t->disk || !ts_kv_tier_disk_has(t->disk, m->hash, m->parent, m->tokens))
        return ts_error_set(TS_E_NOT_FOUND, "KV tiers: block %016llx is not held on rank %d",
                            (unsigned long long)m->hash, rank);
    int rc = ts_kv_tier_disk_load(t->disk, m->hash, m->parent, m->tokens, t->scratch);
    if (rc) {
        TS_WARN("rank %d: %s", rank, ts_error_message());
        return rc == TS_E_IO ? TS_E_FORMAT : rc; /* either way: dropped and recomputed */
    }
    return write_block(t, m->block, t->scratch);
}

static bool held(const ts_kv_tiers *t, uint64_t hash, uint64_t parent, const int32_t *tokens) {
    return (t->host && ts_kv_tier_host_find(t->host, hash, parent, tokens) >= 0) ||
           (t->disk && ts_kv_tier_disk_has(t->disk, hash, parent, tokens));
}

static int on_task(void *user, ts_engine *e, const void *msg, size_t bytes) {
    (void)e;
    ts_kv_tiers *t = user;
    const tier_msg *m = msg;
    if (bytes != t->msg_bytes || m->n_tokens != t->block_size)
        return ts_error_set(TS_E_INTERNAL, "KV tier task of %zu bytes, expected %zu", bytes,
                            t->msg_bytes);
    switch (m->op) {
    case OP_STORE: return op_store(t, m);
    case OP_LOAD: return op_load(t, m);
    case OP_FLUSH:
        if (t->host && t->disk) ts_kv_tier_host_evict_all(t->host); /* via on_host_evict */
        return TS_OK;
    case OP_DROP: {
        int32_t slot = t->host ? ts_kv_tier_host_find(t->host, m->hash, m->parent, m->tokens) : -1;
        if (slot >= 0) ts_kv_tier_host_remove(t->host, slot);
        if (t->disk) ts_kv_tier_disk_drop(t->disk, m->hash, m->parent, m->tokens);
        return TS_OK;
    }
    default: return ts_error_set(TS_E_INTERNAL, "unknown KV tier task %d", m->op);
    }
}

int ts_kv_tiers_create(ts_engine *e, const ts_kv_tiers_options *o, ts_kv_tiers **out) {
    *out = NULL;
    if (!o || (o->host_bytes == 0 && !o->disk_dir)) return TS_OK;
    const ts_engine_options *eo = ts_engine_options_get(e);
    const ts_model_hparams *hp = ts_engine_hparams(e);
    ts_kv_tiers *t = calloc(1, sizeof *t);
    if (!t) return ts_error_set(TS_E_NOMEM, "out of memory");
    t->engine = e;
    t->n_layers = hp->n_layers;
    t->block_size = eo->block_size;
    t->n_heads = ts_engine_shard(e)->n_kv_heads;
    t->part = ts_kv_block_bytes(eo->kv_type, eo->block_size, hp->head_dim, t->n_heads);
    t->msg_bytes = sizeof(tier_msg) + (size_t)t->block_size * sizeof(int32_t);
    t->msg = calloc(1, t->msg_bytes);
    t->block_bytes = (size_t)t->n_layers * 2 * t->part;
    t->scratch = malloc(t->block_bytes);
    int rc = t->msg && t->scratch ? TS_OK : ts_error_set(TS_E_NOMEM, "out of memory");
    if (!rc && o->host_bytes)
        rc = ts_kv_tier_host_create(o->host_bytes, t->block_bytes, t->block_size, &t->host);
    if (!rc && o->disk_dir) {
        ts_comm *comm = ts_engine_comm(e);
        ts_kv_tier_disk_options d = {o->disk_dir, o->disk_bytes, o->fingerprint, comm->rank,
                                     comm->size,  t->block_size, t->block_bytes};
        rc = ts_kv_tier_disk_open(&d, &t->disk);
    }
    if (rc) {
        ts_kv_tiers_destroy(t);
        return rc;
    }
    if (t->host && t->disk) ts_kv_tier_host_set_evict_hook(t->host, on_host_evict, t);
    if (t->host) t->stats.host_blocks_total = ts_kv_tier_host_capacity(t->host);
    if (t->disk) t->stats.disk_blocks_total = ts_kv_tier_disk_capacity(t->disk);
    ts_engine_set_task_channel(e, TIER_TAG, on_task, t);
    *out = t;
    return TS_OK;
}

void ts_kv_tiers_destroy(ts_kv_tiers *t) {
    if (!t) return;
    ts_engine_set_task_channel(t->engine, TIER_TAG, NULL, NULL);
    ts_kv_tier_host_destroy(t->host);
    ts_kv_tier_disk_close(t->disk);
    free(t->scratch);
    free(t->msg);
    free(t);
}

/* ------------------------------------------------------------------ the leader */

static int run(ts_kv_tiers *t, int32_t op, int32_t block, uint64_t hash, uint64_t parent,
               const int32_t *tokens) {
    if (t->msg_bytes > ts_engine_task_max_bytes(t->engine)) {
        if (!t->warned_size)
            TS_WARN("KV tiers off: a block's task (%zu bytes) exceeds the group's plan (%zu)",
                    t->msg_bytes, ts_engine_task_max_bytes(t->engine));
        t->warned_size = true;
        return ts_error_set(TS_E_UNSUPPORTED, "KV tier tasks do not fit the group's plan");
    }
    t->msg->tag = TIER_TAG;
    t->msg->op = op;
    t->msg->block = block;
    t->msg->n_tokens = t->block_size;
    t->msg->hash = hash;
    t->msg->parent = parent;
    memcpy(t->msg->tokens, tokens, (size_t)t->block_size * sizeof *tokens);
    return ts_engine_run_task(t->engine, t->msg, t->msg_bytes);
}

void ts_kv_tiers_store(ts_kv_tiers *t, int32_t block, uint64_t hash, uint64_t parent,
                       const int32_t *tokens) {
    bool had = held(t, hash, parent, tokens);
    int64_t t0 = ts_now_ns();
    int rc = run(t, OP_STORE, block, hash, parent, tokens);
    if (rc) {
        TS_WARN("KV tiers: block %016llx not stored (%s)", (unsigned long long)hash,
                ts_error_message());
        (void)run(t, OP_DROP, block, hash, parent, tokens); /* keep the ranks' indexes equal */
        return;
    }
    if (had) return;
    t->stats.stored_blocks++;
    t->stats.stored_bytes += (int64_t)t->block_bytes;
    t->stats.store_ns += ts_now_ns() - t0;
}

bool ts_kv_tiers_has(const ts_kv_tiers *t, uint64_t hash, uint64_t parent, const int32_t *tokens) {
    return held(t, hash, parent, tokens);
}

bool ts_kv_tiers_load_pays(const ts_kv_tiers *t, double prefill_ns_per_token, int32_t block_size) {
    if (t->stats.loaded_blocks == 0 || prefill_ns_per_token <= 0) return true; /* measure it */
    double load = (double)t->stats.load_ns / (double)t->stats.loaded_blocks;
    return load < prefill_ns_per_token * block_size;
}

int ts_kv_tiers_load(ts_kv_tiers *t, int32_t block, uint64_t hash, uint64_t parent,
                     const int32_t *tokens, bool *from_disk_out) {
    if (from_disk_out) *from_disk_out = false;
    if (!ts_kv_tiers_has(t, hash, parent, tokens))
        return ts_error_set(TS_E_NOT_FOUND, "KV tiers: block %016llx is not held",
                            (unsigned long long)hash);
    bool from_disk = !(t->host && ts_kv_tier_host_find(t->host, hash, parent, tokens) >= 0);
    int64_t t0 = ts_now_ns();
    int rc = run(t, OP_LOAD, block, hash, parent, tokens);
    if (rc) {
        char why[512];
        snprintf(why, sizeof why, "%s", ts_error_message());
        if (rc == TS_E_FORMAT) t->stats.checksum_failures++;
        (void)run(t, OP_DROP, block, hash, parent, tokens); /* every rank forgets it */
        return ts_error_set(rc, "%s", why);
    }
    t->stats.loaded_blocks++;
    if (from_disk) t->stats.disk_loaded_blocks++;
    t->stats.loaded_bytes += (int64_t)t->block_bytes;
    t->stats.load_ns += ts_now_ns() - t0;
    if (from_disk_out) *from_disk_out = from_disk;
    return TS_OK;
}

bool ts_kv_tiers_has_disk(const ts_kv_tiers *t) {
    return t && t->disk;
}

void ts_kv_tiers_flush(ts_kv_tiers *t) {
    if (!t || !t->disk || !t->host) return;
    int64_t failed = t->stats.disk_write_failures;
    int32_t n = ts_kv_tier_host_n_used(t->host);
    int rc = run(t, OP_FLUSH, -1, 0, 0, t->msg->tokens);
    if (rc)
        TS_WARN("KV tiers: the host tier was not written to disk (%s)", ts_error_message());
    else
        TS_INFO("KV tiers: %d host-tier blocks written to the disk tier (%lld failed)", n,
                (long long)(t->stats.disk_write_failures - failed));
}

void ts_kv_tiers_get_stats(const ts_kv_tiers *t, ts_kv_tiers_stats *out) {
    *out = t->stats;
    out->host_blocks_used = t->host ? ts_kv_tier_host_n_used(t->host) : 0;
    out->disk_blocks_used = t->disk ? ts_kv_tier_disk_n_used(t->disk) : 0;
}

int ts_kv_tiers_damage_for_test(ts_kv_tiers *t, uint64_t hash, uint64_t parent,
                                const int32_t *tokens) {
    int32_t slot = t->host ? ts_kv_tier_host_find(t->host, hash, parent, tokens) : -1;
    if (slot < 0) return TS_E_NOT_FOUND;
    unsigned char *d = ts_kv_tier_host_data(t->host, slot);
    d[ts_kv_tier_host_block_bytes(t->host) / 2] ^= 0x40;
    return TS_OK;
}
