/*
 * kv_tier_host.c — see kv_tier_host.h.
 *
 * Slots live in one allocation; a slot's entry knows its key, parent key, tokens, checksum, its
 * place on the LRU list (committed entries, oldest at head) and how many committed entries name
 * it as their parent. The index is an open-addressing table from key to slot with tombstones,
 * twice the slot count, as kv_pool.c's. A child can arrive before its parent (the device evicts
 * leaves first), so a new entry counts the children already present; a removed entry unlinks
 * its children, which then count as leaves of their own chains.
 */
#include "node/kv_tier_host.h"

#include "common/error.h"
#include "common/kv_hash.h"

#include <stdlib.h>
#include <string.h>

enum { SLOT_EMPTY = -1, SLOT_TOMBSTONE = -2 };

typedef struct entry {
    bool used;      /* reserved or committed */
    bool committed; /* findable, on the LRU list */
    bool linked;    /* its parent is an entry here (counted in that entry's n_children) */
    uint64_t hash, parent, checksum;
    int32_t n_children;
    int32_t prev, next; /* LRU */
} entry;

struct ts_kv_tier_host {
    int32_t capacity, block_size, n_used;
    size_t block_bytes;
    unsigned char *data;
    int32_t *tokens; /* [capacity][block_size] */
    entry *entries;
    int32_t *free_slots, n_free;
    int32_t head, tail;
    int32_t *table, table_size, n_tombstones;
    ts_kv_tier_host_evict_hook evict_hook;
    void *evict_user;
};

static int create(size_t n, size_t block_bytes, int32_t block_size, ts_kv_tier_host **out) {
    ts_kv_tier_host *t = calloc(1, sizeof *t);
    if (!t) return ts_error_set(TS_E_NOMEM, "out of memory");
    t->capacity = (int32_t)n;
    t->block_size = block_size;
    t->block_bytes = block_bytes;
    t->table_size = 16;
    while (t->table_size < 2 * t->capacity)
        t->table_size *= 2;
    t->data = block_bytes ? malloc(n * block_bytes) : NULL;
    t->tokens = malloc(n * (size_t)block_size * sizeof *t->tokens);
    t->entries = calloc(n, sizeof *t->entries);
    t->free_slots = malloc(n * sizeof *t->free_slots);
    t->table = malloc((size_t)t->table_size * sizeof *t->table);
    if ((block_bytes && !t->data) || !t->tokens || !t->entries || !t->free_slots || !t->table) {
        ts_kv_tier_host_destroy(t);
        return ts_error_set(TS_E_NOMEM, "--kv-host-memory: cannot allocate %zu bytes",
                            n * block_bytes);
    }
    for (int32_t i = 0; i < t->table_size; i++)
        t->table[i] = SLOT_EMPTY;
    for (int32_t i = 0; i < t->capacity; i++)
        t->free_slots[i] = t->capacity - 1 - i;
    t->n_free = t->capacity;
    t->head = t->tail = -1;
    *out = t;
    return TS_OK;
}

int ts_kv_tier_host_create(size_t capacity_bytes, size_t block_bytes, int32_t block_size,
                           ts_kv_tier_host **out) {
    *out = NULL;
    if (block_bytes == 0 || block_size < 1)
        return ts_error_set(TS_E_INVALID, "host KV tier: empty blocks");
    size_t n = capacity_bytes / block_bytes;
    if (n < 1)
        return ts_error_set(TS_E_INVALID,
                            "--kv-host-memory %zu holds no KV block (one block is %zu bytes on "
                            "this rank)",
                            capacity_bytes, block_bytes);
    return create(n > (1u << 28) ? 1u << 28 : n, block_bytes, block_size, out);
}

int ts_kv_tier_host_create_index(int32_t n_slots, int32_t block_size, ts_kv_tier_host **out) {
    *out = NULL;
    if (n_slots < 1 || block_size < 1) return ts_error_set(TS_E_INVALID, "KV tier index: no slots");
    return create((size_t)n_slots, 0, block_size, out);
}

void ts_kv_tier_host_set_evict_hook(ts_kv_tier_host *t, ts_kv_tier_host_evict_hook hook,
                                    void *user) {
    t->evict_hook = hook;
    t->evict_user = user;
}

void ts_kv_tier_host_destroy(ts_kv_tier_host *t) {
    if (!t) return;
    free(t->data);
    free(t->tokens);
    free(t->entries);
    free(t->free_slots);
    free(t->table);
    free(t);
}

int32_t ts_kv_tier_host_capacity(const ts_kv_tier_host *t) {
    return t->capacity;
}
int32_t ts_kv_tier_host_n_used(const ts_kv_tier_host *t) {
    return t->n_used;
}
size_t ts_kv_tier_host_block_bytes(const ts_kv_tier_host *t) {
    return t->block_bytes;
}
int32_t ts_kv_tier_host_n_children(const ts_kv_tier_host *t, int32_t slot) {
    return t->entries[slot].n_children;
}
void *ts_kv_tier_host_data(ts_kv_tier_host *t, int32_t slot) {
    return t->data ? t->data + (size_t)slot * t->block_bytes : NULL;
}
uint64_t ts_kv_tier_host_checksum(const ts_kv_tier_host *t, int32_t slot) {
    return t->entries[slot].checksum;
}

static int32_t *slot_tokens(const ts_kv_tier_host *t, int32_t slot) {
    return t->tokens + (size_t)slot * (size_t)t->block_size;
}
const int32_t *ts_kv_tier_host_tokens(const ts_kv_tier_host *t, int32_t slot) {
    return slot_tokens(t, slot);
}

/* ---- LRU ---- */

static void lru_unlink(ts_kv_tier_host *t, int32_t s) {
    entry *e = &t->entries[s];
    if (e->prev >= 0)
        t->entries[e->prev].next = e->next;
    else
        t->head = e->next;
    if (e->next >= 0)
        t->entries[e->next].prev = e->prev;
    else
        t->tail = e->prev;
}

static void lru_push(ts_kv_tier_host *t, int32_t s) {
    entry *e = &t->entries[s];
    e->prev = t->tail;
    e->next = -1;
    if (t->tail >= 0)
        t->entries[t->tail].next = s;
    else
        t->head = s;
    t->tail = s;
}

/* ---- index ---- */

/* The table slot of a committed entry with this key (or of a key alone when tokens is NULL). */
static int32_t table_find(const ts_kv_tier_host *t, uint64_t hash, uint64_t parent,
                          const int32_t *tokens) {
    int32_t mask = t->table_size - 1;
    for (int32_t i = (int32_t)(hash & (uint64_t)mask), probes = 0; probes < t->table_size;
         i = (i + 1) & mask, probes++) {
        int32_t s = t->table[i];
        if (s == SLOT_EMPTY) return -1;
        if (s == SLOT_TOMBSTONE) continue;
        const entry *e = &t->entries[s];
        if (e->hash != hash) continue;
        if (!tokens) return i;
        if (e->parent == parent &&
            memcmp(slot_tokens(t, s), tokens, (size_t)t->block_size * sizeof *tokens) == 0)
            return i;
    }
    return -1;
}

static void table_rebuild(ts_kv_tier_host *t) {
    int32_t mask = t->table_size - 1;
    for (int32_t i = 0; i < t->table_size; i++)
        t->table[i] = SLOT_EMPTY;
    for (int32_t s = 0; s < t->capacity; s++) {
        if (!t->entries[s].committed) continue;
        int32_t i = (int32_t)(t->entries[s].hash & (uint64_t)mask);
        while (t->table[i] != SLOT_EMPTY)
            i = (i + 1) & mask;
        t->table[i] = s;
    }
    t->n_tombstones = 0;
}

static void table_insert(ts_kv_tier_host *t, int32_t s) {
    if (t->n_tombstones > t->table_size / 4) table_rebuild(t);
    int32_t mask = t->table_size - 1;
    int32_t i = (int32_t)(t->entries[s].hash & (uint64_t)mask);
    while (t->table[i] >= 0)
        i = (i + 1) & mask;
    if (t->table[i] == SLOT_TOMBSTONE) t->n_tombstones--;
    t->table[i] = s;
}

static void table_erase(ts_kv_tier_host *t, int32_t s) {
    int32_t mask = t->table_size - 1;
    for (int32_t i = (int32_t)(t->entries[s].hash & (uint64_t)mask), probes = 0;
         probes < t->table_size; i = (i + 1) & mask, probes++) {
        if (t->table[i] == SLOT_EMPTY) return;
        if (t->table[i] == s) {
            t->table[i] = SLOT_TOMBSTONE;
            t->n_tombstones++;
            return;
        }
    }
}

/* The committed entry whose key is `hash` (any tokens), or -1: a child's parent. */
static int32_t entry_with_key(const ts_kv_tier_host *t, uint64_t hash) {
    int32_t i = table_find(t, hash, 0, NULL);
    return i < 0 ? -1 : t->table[i];
}

/* ---- entries ---- */

int32_t ts_kv_tier_host_find(const ts_kv_tier_host *t, uint64_t hash, uint64_t parent,
                             const int32_t *tokens) {
    int32_t i = table_find(t, hash, parent, tokens);
    return i < 0 ? -1 : t->table[i];
}

void ts_kv_tier_host_remove(ts_kv_tier_host *t, int32_t s) {
    entry *e = &t->entries[s];
    TS_ASSERT(e->used);
    if (e->committed) {
        lru_unlink(t, s);
        table_erase(t, s);
        if (e->linked) {
            int32_t p = entry_with_key(t, e->parent);
            if (p >= 0) t->entries[p].n_children--;
        }
        if (e->n_children > 0) /* only when a corrupt block is dropped: unlink its children */
            for (int32_t c = 0; c < t->capacity; c++)
                if (t->entries[c].committed && t->entries[c].linked &&
                    t->entries[c].parent == e->hash) {
                    t->entries[c].linked = false;
                    e->n_children--;
                }
    }
    memset(e, 0, sizeof *e);
    t->free_slots[t->n_free++] = s;
    t->n_used--;
}

/* The oldest committed entry without children (a finite forest always has a leaf). */
static int32_t lru_leaf(const ts_kv_tier_host *t) {
    for (int32_t s = t->head; s >= 0; s = t->entries[s].next)
        if (t->entries[s].n_children == 0) return s;
    return -1;
}

/* Hands the oldest leaf to the evict hook and removes it; false when none is committed. */
static bool evict_one(ts_kv_tier_host *t) {
    int32_t victim = lru_leaf(t);
    if (victim < 0) return false;
    if (t->evict_hook) {
        const entry *v = &t->entries[victim];
        t->evict_hook(t->evict_user, victim, v->hash, v->parent, slot_tokens(t, victim),
                      ts_kv_tier_host_data(t, victim));
    }
    ts_kv_tier_host_remove(t, victim);
    return true;
}

void ts_kv_tier_host_evict_all(ts_kv_tier_host *t) {
    while (evict_one(t))
        ;
}

int32_t ts_kv_tier_host_reserve(ts_kv_tier_host *t, uint64_t hash, uint64_t parent,
                                const int32_t *tokens) {
    int32_t have = ts_kv_tier_host_find(t, hash, parent, tokens);
    if (have >= 0) {
        lru_unlink(t, have);
        lru_push(t, have);
        return -1;
    }
    if (t->n_free == 0 && !evict_one(t))
        return -1; /* every slot reserved: cannot happen with one owner */
    int32_t s = t->free_slots[--t->n_free];
    entry *e = &t->entries[s];
    memset(e, 0, sizeof *e);
    e->used = true;
    e->hash = hash;
    e->parent = parent;
    e->prev = e->next = -1;
    memcpy(slot_tokens(t, s), tokens, (size_t)t->block_size * sizeof *tokens);
    t->n_used++;
    return s;
}

void ts_kv_tier_host_commit(ts_kv_tier_host *t, int32_t s) {
    TS_ASSERT(t->data);
    ts_kv_tier_host_commit_sum(t, s,
                               ts_kv_block_checksum(ts_kv_tier_host_data(t, s), t->block_bytes));
}

void ts_kv_tier_host_commit_sum(ts_kv_tier_host *t, int32_t s, uint64_t checksum) {
    entry *e = &t->entries[s];
    TS_ASSERT(e->used && !e->committed);
    e->checksum = checksum;
    int32_t p = entry_with_key(t, e->parent);
    if (p >= 0) {
        e->linked = true;
        t->entries[p].n_children++;
    }
    /* children that arrived first (the device pool evicts leaves first) */
    for (int32_t c = 0; c < t->capacity; c++) {
        entry *ce = &t->entries[c];
        if (ce->committed && !ce->linked && ce->parent == e->hash) {
            ce->linked = true;
            e->n_children++;
        }
    }
    e->committed = true;
    table_insert(t, s);
    lru_push(t, s);
}

void ts_kv_tier_host_abort(ts_kv_tier_host *t, int32_t s) {
    TS_ASSERT(t->entries[s].used && !t->entries[s].committed);
    ts_kv_tier_host_remove(t, s);
}

int ts_kv_tier_host_verify(ts_kv_tier_host *t, int32_t s) {
    entry *e = &t->entries[s];
    TS_ASSERT(e->committed);
    uint64_t sum = ts_kv_block_checksum(ts_kv_tier_host_data(t, s), t->block_bytes);
    if (sum == e->checksum) return TS_OK;
    uint64_t hash = e->hash, stored = e->checksum;
    ts_kv_tier_host_remove(t, s);
    return ts_error_set(TS_E_FORMAT,
                        "host KV tier: block %016llx fails its checksum (%016llx, stored "
                        "%016llx): discarded, it will be recomputed",
                        (unsigned long long)hash, (unsigned long long)sum,
                        (unsigned long long)stored);
}
