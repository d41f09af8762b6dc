/* strtab.c — string → int32 hash table (see strtab.h). */
#include "tokenizer/strtab.h"

#include "common/error.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct ts_strtab_slot {
    uint64_t hash;
    size_t key;    /* offset in keys */
    uint32_t len;  /* keys are shorter than 4 GiB */
    int32_t value; /* -1: the slot is empty */
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
        if (slot->value < 0) return slot;
        if (slot->hash == h && slot->len == n &&
            (n == 0 || !memcmp(t->keys.data + slot->key, s, n)))
            return slot;
    }
}

/* Rehashes into n_slots slots (a power of two, more than twice the count). */
static int rehash(ts_strtab *t, size_t n_slots) {
    ts_strtab_slot *slots = malloc(n_slots * sizeof *slots);
    if (!slots)
        return ts_error_set(TS_E_NOMEM, "out of memory for a table of %zu strings", t->count);
    for (size_t i = 0; i < n_slots; i++)
        slots[i].value = -1;
    ts_strtab_slot *old = t->slots;
    size_t old_n = t->n_slots;
    t->slots = slots;
    t->n_slots = n_slots;
    for (size_t i = 0; i < old_n; i++) {
        if (old[i].value < 0) continue;
        size_t mask = n_slots - 1, j = (size_t)old[i].hash & mask;
        while (slots[j].value >= 0)
            j = (j + 1) & mask;
        slots[j] = old[i];
    }
    free(old);
    return TS_OK;
}

int ts_strtab_reserve(ts_strtab *t, size_t n) {
    size_t n_slots = t->n_slots ? t->n_slots : 64;
    while (n_slots < 2 * n + 2)
        n_slots *= 2;
    return n_slots > t->n_slots ? rehash(t, n_slots) : TS_OK;
}

int32_t ts_strtab_find(const ts_strtab *t, const char *s, size_t n) {
    if (!t->n_slots) return -1;
    const ts_strtab_slot *slot = probe(t, s, n, hash_bytes(s, n));
    return slot->value;
}

/* Inserts an absent key into `slot` (found by probe). */
static int insert(ts_strtab *t, ts_strtab_slot *slot, const char *s, size_t n, uint64_t h,
                  int32_t value) {
    if (n > UINT32_MAX) return ts_error_set(TS_E_INVALID, "a key of %zu bytes is too long", n);
    size_t key = t->keys.len;
    int rc = ts_buf_append(&t->keys, s, n);
    if (rc) return rc;
    *slot = (ts_strtab_slot){.hash = h, .key = key, .len = (uint32_t)n, .value = value};
    t->count++;
    return TS_OK;
}

static int lookup_or_insert(ts_strtab *t, const char *s, size_t n, int32_t value, bool replace,
                            int32_t *out) {
    if ((t->count + 1) * 2 > t->n_slots) {
        int rc = rehash(t, t->n_slots ? t->n_slots * 2 : 64);
        if (rc) return rc;
    }
    uint64_t h = hash_bytes(s, n);
    ts_strtab_slot *slot = probe(t, s, n, h);
    if (slot->value >= 0) {
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
