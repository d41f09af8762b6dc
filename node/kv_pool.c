/*
 * kv_pool.c — see kv_pool.h.
 *
 * Free blocks that were never cached (or were evicted) sit on a stack. Released cached blocks
 * sit on a doubly-linked LRU list so a hit can take one out in O(1). The prefix cache is an
 * open-addressing table from chain hash to block, with tombstones, sized to twice n_blocks.
 *
 * Each cached block knows its parent block and how many cached children it has. Eviction walks
 * the LRU list from its oldest end to the first block without cached children. Blocks released
 * back to front keep a chain's descendants ahead of it on the list, so the walk normally stops
 * at the head; the child count makes "never a block whose children are kept" hold whatever
 * order callers release in.
 */
#include "node/kv_pool.h"

#include "common/error.h"

#include <stdlib.h>
#include <string.h>

enum { SLOT_EMPTY = -1, SLOT_TOMBSTONE = -2 };

typedef struct {
    int32_t refcount;
    bool cached;      /* registered in the prefix table */
    int32_t lru_prev; /* on the evictable list when cached && refcount == 0 */
    int32_t lru_next;
    uint64_t hash;
    uint64_t parent;
    int32_t parent_block; /* cached parent block, -1 for a chain's first block */
    int32_t n_children;   /* cached blocks whose parent_block is this one */
} block_meta;

struct ts_kv_pool {
    int32_t n_blocks, block_size;
    block_meta *meta;
    int32_t *tokens;     /* [n_blocks][block_size] content of cached blocks */
    int32_t *free_stack; /* never-cached free blocks */
    int32_t n_free_stack;
    int32_t lru_head, lru_tail; /* evictable cached blocks, oldest at head */
    int32_t n_evictable;
    int32_t n_cached;
    int32_t *table; /* hash slots → block id */
    int32_t table_size;
    int32_t n_tombstones;
    ts_kv_pool_evict_hook evict_hook;
    void *evict_user;
    /* The journal (NULL: not enabled): keys in [0, journal_cap), and in the second half whether
     * each was removed (1) or added (0). */
    uint64_t *journal;
    int32_t n_journal, journal_cap;
    bool journal_overflow;
};

static void journal(ts_kv_pool *p, uint64_t key, bool removed) {
    if (!p->journal || p->journal_overflow) return;
    if (p->n_journal == p->journal_cap) {
        p->journal_overflow = true;
        return;
    }
    p->journal[p->journal_cap + p->n_journal] = removed;
    p->journal[p->n_journal++] = key;
}

int ts_kv_pool_create(int32_t n_blocks, int32_t block_size, ts_kv_pool **out) {
    *out = NULL;
    if (n_blocks < 1 || block_size < 1)
        return ts_error_set(TS_E_INVALID, "KV pool needs at least one block of at least one slot");
    ts_kv_pool *p = calloc(1, sizeof *p);
    if (!p) return ts_error_set(TS_E_NOMEM, "out of memory");
    p->n_blocks = n_blocks;
    p->block_size = block_size;
    p->table_size = 16;
    while (p->table_size < 2 * n_blocks) p->table_size *= 2;
    p->meta = calloc((size_t)n_blocks, sizeof *p->meta);
    p->tokens = malloc((size_t)n_blocks * (size_t)block_size * sizeof *p->tokens);
    p->free_stack = malloc((size_t)n_blocks * sizeof *p->free_stack);
    p->table = malloc((size_t)p->table_size * sizeof *p->table);
    if (!p->meta || !p->tokens || !p->free_stack || !p->table) {
        ts_kv_pool_destroy(p);
        return ts_error_set(TS_E_NOMEM, "out of memory for a KV pool of %d blocks", n_blocks);
    }
    for (int32_t i = 0; i < p->table_size; i++) p->table[i] = SLOT_EMPTY;
    /* hand out low ids first */
    for (int32_t i = 0; i < n_blocks; i++) p->free_stack[i] = n_blocks - 1 - i;
    p->n_free_stack = n_blocks;
    p->lru_head = p->lru_tail = -1;
    *out = p;
    return TS_OK;
}

void ts_kv_pool_destroy(ts_kv_pool *p) {
    if (!p) return;
    free(p->meta);
    free(p->tokens);
    free(p->free_stack);
    free(p->table);
    free(p->journal);
    free(p);
}

int32_t ts_kv_pool_n_blocks(const ts_kv_pool *p) {
    return p->n_blocks;
}
int32_t ts_kv_pool_block_size(const ts_kv_pool *p) {
    return p->block_size;
}
int32_t ts_kv_pool_n_free(const ts_kv_pool *p) {
    return p->n_free_stack + p->n_evictable;
}
int32_t ts_kv_pool_n_cached(const ts_kv_pool *p) {
    return p->n_cached;
}
int32_t ts_kv_pool_refcount(const ts_kv_pool *p, int32_t block) {
    return p->meta[block].refcount;
}
int32_t ts_kv_pool_n_children(const ts_kv_pool *p, int32_t block) {
    return p->meta[block].n_children;
}
bool ts_kv_pool_is_cached(const ts_kv_pool *p, int32_t block) {
    return p->meta[block].cached;
}

void ts_kv_pool_set_evict_hook(ts_kv_pool *p, ts_kv_pool_evict_hook hook, void *user) {
    p->evict_hook = hook;
    p->evict_user = user;
}

static void lru_remove(ts_kv_pool *p, int32_t b) {
    block_meta *m = &p->meta[b];
    if (m->lru_prev >= 0) p->meta[m->lru_prev].lru_next = m->lru_next;
    else p->lru_head = m->lru_next;
    if (m->lru_next >= 0) p->meta[m->lru_next].lru_prev = m->lru_prev;
    else p->lru_tail = m->lru_prev;
    p->n_evictable--;
}

static void lru_push_tail(ts_kv_pool *p, int32_t b) {
    block_meta *m = &p->meta[b];
    m->lru_prev = p->lru_tail;
    m->lru_next = -1;
    if (p->lru_tail >= 0) p->meta[p->lru_tail].lru_next = b;
    else p->lru_head = b;
    p->lru_tail = b;
    p->n_evictable++;
}

static int32_t table_find_slot(const ts_kv_pool *p, uint64_t hash, uint64_t parent,
                               int32_t parent_block, const int32_t *tokens) {
    int32_t mask = p->table_size - 1;
    for (int32_t i = (int32_t)(hash & (uint64_t)mask), probes = 0; probes < p->table_size;
         i = (i + 1) & mask, probes++) {
        int32_t b = p->table[i];
        if (b == SLOT_EMPTY) return -1;
        if (b == SLOT_TOMBSTONE) continue;
        const block_meta *m = &p->meta[b];
        if (m->hash == hash && m->parent == parent && m->parent_block == parent_block &&
            memcmp(p->tokens + (size_t)b * (size_t)p->block_size, tokens,
                   (size_t)p->block_size * sizeof *tokens) == 0)
            return i;
    }
    return -1;
}

static void table_remove_block(ts_kv_pool *p, int32_t b) {
    int32_t mask = p->table_size - 1;
    for (int32_t i = (int32_t)(p->meta[b].hash & (uint64_t)mask), probes = 0;
         probes < p->table_size; i = (i + 1) & mask, probes++) {
        if (p->table[i] == SLOT_EMPTY) break;
        if (p->table[i] == b) {
            p->table[i] = SLOT_TOMBSTONE;
            p->n_tombstones++;
            break;
        }
    }
    block_meta *m = &p->meta[b];
    TS_ASSERT(m->n_children == 0); /* leaves first */
    journal(p, m->hash, true);
    if (m->parent_block >= 0) p->meta[m->parent_block].n_children--;
    m->cached = false;
    m->parent_block = -1;
    p->n_cached--;
}

/* Re-inserts every cached block so that misses stop probing through tombstones. */
static void table_rebuild(ts_kv_pool *p) {
    int32_t mask = p->table_size - 1;
    for (int32_t i = 0; i < p->table_size; i++) p->table[i] = SLOT_EMPTY;
    for (int32_t b = 0; b < p->n_blocks; b++) {
        if (!p->meta[b].cached) continue;
        int32_t i = (int32_t)(p->meta[b].hash & (uint64_t)mask);
        while (p->table[i] != SLOT_EMPTY) i = (i + 1) & mask;
        p->table[i] = b;
    }
    p->n_tombstones = 0;
}

/* Takes the least recently released cached block without cached children out of the cache,
 * through the evict hook; -1 when no cached block is free. */
static int32_t evict_one(ts_kv_pool *p) {
    if (p->lru_head < 0) return -1;
    int32_t b = p->lru_head;
    while (b >= 0 && p->meta[b].n_children > 0)
        b = p->meta[b].lru_next;
    TS_ASSERT(b >= 0); /* a released chain always has a released leaf */
    lru_remove(p, b);
    if (p->evict_hook)
        p->evict_hook(p->evict_user, b, p->meta[b].hash, p->meta[b].parent,
                      p->tokens + (size_t)b * (size_t)p->block_size);
    table_remove_block(p, b);
    return b;
}

void ts_kv_pool_evict_all(ts_kv_pool *p) {
    int32_t b;
    while ((b = evict_one(p)) >= 0)
        p->free_stack[p->n_free_stack++] = b;
}

int ts_kv_pool_alloc(ts_kv_pool *p, int32_t *block) {
    int32_t b;
    if (p->n_free_stack > 0) {
        b = p->free_stack[--p->n_free_stack];
    } else if ((b = evict_one(p)) < 0) {
        return TS_E_EXHAUSTED;
    }
    p->meta[b].refcount = 1;
    *block = b;
    return TS_OK;
}

void ts_kv_pool_ref(ts_kv_pool *p, int32_t block) {
    block_meta *m = &p->meta[block];
    TS_ASSERT(m->refcount > 0);
    m->refcount++;
}

void ts_kv_pool_release(ts_kv_pool *p, int32_t block) {
    block_meta *m = &p->meta[block];
    TS_ASSERT(m->refcount > 0);
    if (--m->refcount > 0) return;
    if (m->cached) lru_push_tail(p, block);
    else p->free_stack[p->n_free_stack++] = block;
}

void ts_kv_pool_release_seq(ts_kv_pool *p, const int32_t *blocks, int32_t n) {
    for (int32_t i = n - 1; i >= 0; i--)
        ts_kv_pool_release(p, blocks[i]);
}

int32_t ts_kv_pool_publish(ts_kv_pool *p, int32_t block, uint64_t hash, uint64_t parent,
                           int32_t parent_block, const int32_t *tokens) {
    block_meta *m = &p->meta[block];
    TS_ASSERT(m->refcount > 0);
    if (m->cached) return block;
    TS_ASSERT(parent_block < 0 ||
              (p->meta[parent_block].cached && p->meta[parent_block].hash == parent));
    int32_t slot = table_find_slot(p, hash, parent, parent_block, tokens);
    if (slot >= 0) { /* the same content computed twice: one copy stays cached */
        int32_t other = p->table[slot];
        block_meta *o = &p->meta[other];
        if (o->refcount == 0) lru_remove(p, other);
        o->refcount++;
        return other;
    }
    if (p->n_tombstones > p->table_size / 4) table_rebuild(p);
    /* Live entries never exceed n_blocks = half the table, so a free slot always exists. */
    int32_t mask = p->table_size - 1;
    int32_t i = (int32_t)(hash & (uint64_t)mask);
    while (p->table[i] >= 0) i = (i + 1) & mask; /* first empty or tombstone slot */
    if (p->table[i] == SLOT_TOMBSTONE) p->n_tombstones--;
    p->table[i] = block;
    m->cached = true;
    m->hash = hash;
    m->parent = parent;
    m->parent_block = parent_block;
    m->n_children = 0;
    if (parent_block >= 0) p->meta[parent_block].n_children++;
    journal(p, hash, false);
    memcpy(p->tokens + (size_t)block * (size_t)p->block_size, tokens,
           (size_t)p->block_size * sizeof *tokens);
    p->n_cached++;
    return block;
}

int32_t ts_kv_pool_lookup(ts_kv_pool *p, uint64_t hash, uint64_t parent, int32_t parent_block,
                          const int32_t *tokens) {
    int32_t slot = table_find_slot(p, hash, parent, parent_block, tokens);
    if (slot < 0) return -1;
    int32_t b = p->table[slot];
    block_meta *m = &p->meta[b];
    if (m->refcount == 0) lru_remove(p, b);
    m->refcount++;
    return b;
}

void ts_kv_pool_clear_cache(ts_kv_pool *p) {
    for (int32_t b = 0; b < p->n_blocks; b++) {
        if (!p->meta[b].cached) continue;
        if (p->meta[b].refcount == 0) {
            lru_remove(p, b);
            p->free_stack[p->n_free_stack++] = b;
        }
        journal(p, p->meta[b].hash, true);
        p->meta[b].cached = false;
        p->meta[b].parent_block = -1;
        p->meta[b].n_children = 0;
    }
    for (int32_t i = 0; i < p->table_size; i++) p->table[i] = SLOT_EMPTY;
    p->n_cached = 0;
    p->n_tombstones = 0;
}

void ts_kv_pool_journal_enable(ts_kv_pool *p) {
    if (p->journal) return;
    p->journal_cap = 4 * p->n_blocks;
    p->journal = malloc(2 * (size_t)p->journal_cap * sizeof *p->journal);
    if (!p->journal) p->journal_cap = 0; /* no memory: no journal, routing only loses hints */
    p->n_journal = 0;
    p->journal_overflow = true; /* the first take is a snapshot */
}

bool ts_kv_pool_journal_take(ts_kv_pool *p, uint64_t *added, int32_t *n_added, uint64_t *removed,
                             int32_t *n_removed, int32_t max) {
    *n_added = *n_removed = 0;
    bool overflow = p->journal_overflow || !p->journal;
    for (int32_t i = 0; !overflow && i < p->n_journal; i++) {
        bool gone = p->journal[p->journal_cap + i] != 0;
        int32_t *n = gone ? n_removed : n_added;
        if (*n == max) {
            overflow = true;
            break;
        }
        uint64_t key = p->journal[i];
        if (gone) /* an add earlier in this batch is void: removals apply first (kv_pool.h) */
            for (int32_t k = 0; k < *n_added; k++)
                if (added[k] == key) {
                    added[k] = added[--*n_added];
                    break;
                }
        (gone ? removed : added)[(*n)++] = key;
    }
    p->n_journal = 0;
    p->journal_overflow = false;
    return overflow;
}

int32_t ts_kv_pool_cached_keys(const ts_kv_pool *p, uint64_t *out, int32_t max) {
    int32_t n = 0;
    for (int32_t b = 0; b < p->n_blocks && n < max; b++)
        if (p->meta[b].cached) out[n++] = p->meta[b].hash;
    return n;
}
