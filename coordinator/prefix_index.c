/*
 * prefix_index.c — see prefix_index.h.
 *
 * Open addressing with linear probing and backward-shift deletion (no tombstones, so a set that
 * churns all day keeps short probes); it doubles at half full. 0 marks an empty slot: no key is
 * 0 (kv_hash.h).
 */
#include "coordinator/prefix_index.h"

#include "common/error.h"
#include "common/kv_hash.h"

#include <stdlib.h>
#include <string.h>

struct co_prefix_index {
    uint64_t *slots;
    size_t cap, n; /* cap: a power of two */
};

static size_t home(const co_prefix_index *ix, uint64_t key) {
    return (size_t)ts_kv_hash_mix(key) & (ix->cap - 1);
}

static bool insert(co_prefix_index *ix, uint64_t key);

static int grow(co_prefix_index *ix, size_t want) {
    size_t cap = ix->cap ? ix->cap : 64;
    while (cap < 2 * want)
        cap *= 2;
    if (cap == ix->cap) return TS_OK;
    uint64_t *old = ix->slots;
    size_t old_cap = ix->cap;
    ix->slots = calloc(cap, sizeof *ix->slots);
    if (!ix->slots) {
        ix->slots = old;
        return ts_error_set(TS_E_NOMEM, "out of memory for a group's prefix index");
    }
    ix->cap = cap;
    ix->n = 0;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i]) insert(ix, old[i]);
    free(old);
    return TS_OK;
}

static bool insert(co_prefix_index *ix, uint64_t key) {
    for (size_t i = home(ix, key);; i = (i + 1) & (ix->cap - 1)) {
        if (ix->slots[i] == key) return false;
        if (!ix->slots[i]) {
            ix->slots[i] = key;
            ix->n++;
            return true;
        }
    }
}

static void erase(co_prefix_index *ix, uint64_t key) {
    size_t mask = ix->cap - 1, i = home(ix, key);
    while (ix->slots[i] != key) {
        if (!ix->slots[i]) return;
        i = (i + 1) & mask;
    }
    /* backward shift: pull later entries of the run into the hole when that keeps them
     * reachable from their home slot */
    for (size_t j = (i + 1) & mask; ix->slots[j]; j = (j + 1) & mask) {
        size_t h = home(ix, ix->slots[j]);
        if (((j - h) & mask) >= ((j - i) & mask)) {
            ix->slots[i] = ix->slots[j];
            i = j;
        }
    }
    ix->slots[i] = 0;
    ix->n--;
}

int co_prefix_index_apply(co_prefix_index **ixp, const uint64_t *added, size_t n_added,
                          const uint64_t *removed, size_t n_removed, bool snapshot) {
    if (!*ixp) {
        *ixp = calloc(1, sizeof **ixp);
        if (!*ixp) return ts_error_set(TS_E_NOMEM, "out of memory for a group's prefix index");
    }
    co_prefix_index *ix = *ixp;
    if (snapshot && ix->slots) memset(ix->slots, 0, ix->cap * sizeof *ix->slots), ix->n = 0;
    int rc = grow(ix, ix->n + n_added);
    if (rc) {
        if (ix->slots) memset(ix->slots, 0, ix->cap * sizeof *ix->slots);
        ix->n = 0;
        return rc;
    }
    for (size_t i = 0; ix->n && i < n_removed; i++)
        erase(ix, removed[i]);
    for (size_t i = 0; i < n_added; i++)
        if (added[i]) insert(ix, added[i]);
    return TS_OK;
}

void co_prefix_index_free(co_prefix_index *ix) {
    if (!ix) return;
    free(ix->slots);
    free(ix);
}

size_t co_prefix_index_size(const co_prefix_index *ix) {
    return ix ? ix->n : 0;
}

bool co_prefix_index_has(const co_prefix_index *ix, uint64_t key) {
    if (!ix || !ix->n) return false;
    for (size_t i = home(ix, key);; i = (i + 1) & (ix->cap - 1)) {
        if (ix->slots[i] == key) return true;
        if (!ix->slots[i]) return false;
    }
}

int32_t co_prefix_index_match(const co_prefix_index *ix, uint64_t fingerprint, uint64_t salt_digest,
                              const int32_t *ids, int32_t n, int32_t block_size) {
    if (!ix || !ix->n || block_size < 1 || n < 1) return 0;
    uint64_t key = ts_kv_hash_root(fingerprint, salt_digest);
    int32_t blocks = (n - 1) / block_size, i = 0;
    for (; i < blocks; i++) {
        key = ts_kv_hash_block(key, ids + (size_t)i * (size_t)block_size, block_size);
        if (!co_prefix_index_has(ix, key)) break;
    }
    return i * block_size;
}
