/* strtab.c — string → int32 hash table (see strtab.h). */
#include "tokenizer/strtab.h"

#include "common/error.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct ts_strtab_slot {
    uint64_t hash;
    size_t key; /* offset in keys */
    size_t len;
    int32_t value;
    bool used;
};

/* FNV-1a, then a final mix so that the low bits (the slot index) depend on every byte. */
static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

/* The slot holding the key, or the empty slot where it would go. */
static ts_strtab_slot *probe(const ts_strtab *t, const char *s, size_t n, uint64_t h) {
    size_t mask = t->n_slots - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        ts_strtab_slot *slot = &t->slots[i];
        if (!slot->used) return slot;
        if (slot->hash == h && slot->len == n &&
            (n == 0 || !memcmp(t->keys.data + slot->key, s, n)))
            return slot;
    }
}

static int grow(ts_strtab *t) {
    size_t n_slots = t->n_slots ? t->n_slots * 2 : 64;
    ts_strtab_slot *slots = calloc(n_slots, sizeof *slots);
    if (!slots)
        return ts_error_set(TS_E_NOMEM, "out of memory for a table of %zu strings", t->count);
    ts_strtab_slot *old = t->slots;
    size_t old_n = t->n_slots;
    t->slots = slots;
    t->n_slots = n_slots;
    for (size_t i = 0; i < old_n; i++) {
        if (!old[i].used) continue;
        size_t mask = n_slots - 1, j = (size_t)old[i].hash & mask;
        while (slots[j].used)
            j = (j + 1) & mask;
        slots[j] = old[i];
    }
    free(old);
    return TS_OK;
}

int32_t ts_strtab_find(const ts_strtab *t, const char *s, size_t n) {
    if (!t->n_slots) return -1;
    const ts_strtab_slot *slot = probe(t, s, n, hash_bytes(s, n));
    return slot->used ? slot->value : -1;
}

/* Inserts an absent key into `slot` (found by probe). */
static int insert(ts_strtab *t, ts_strtab_slot *slot, const char *s, size_t n, uint64_t h,
                  int32_t value) {
    size_t key = t->keys.len;
    int rc = ts_buf_append(&t->keys, s, n);
    if (rc) return rc;
    *slot = (ts_strtab_slot){.hash = h, .key = key, .len = n, .value = value, .used = true};
    t->count++;
    return TS_OK;
}

static int lookup_or_insert(ts_strtab *t, const char *s, size_t n, int32_t value, bool replace,
                            int32_t *out) {
    if ((t->count + 1) * 2 > t->n_slots) {
        int rc = grow(t);
        if (rc) return rc;
    }
    uint64_t h = hash_bytes(s, n);
    ts_strtab_slot *slot = probe(t, s, n, h);
    if (slot->used) {
        if (replace) slot->value = value;
        *out = slot->value;
        return TS_OK;
    }
    *out = value;
    return insert(t, slot, s, n, h, value);
}

int ts_strtab_put(ts_strtab *t, const char *s, size_t n, int32_t value) {
    TS_ASSERT(value >= 0);
    int32_t ignored;
    return lookup_or_insert(t, s, n, value, true, &ignored);
}

int ts_strtab_intern(ts_strtab *t, const char *s, size_t n, int32_t *value) {
    TS_ASSERT(t->count < INT32_MAX);
    return lookup_or_insert(t, s, n, (int32_t)t->count, false, value);
}

void ts_strtab_free(ts_strtab *t) {
    if (!t) return;
    ts_buf_free(&t->keys);
    free(t->slots);
    *t = (ts_strtab){0};
}
