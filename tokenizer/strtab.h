/*
 * strtab.h — a hash table from byte strings to non-negative int32 values (token text → id).
 * Internal to tokenizer/.
 *
 * Keys are arbitrary bytes (NUL included) and are copied into the table. Open addressing with
 * linear probing, grown at 1/2 load, so lookups stay O(key length). Zero-initialise, free with
 * ts_strtab_free. Lookups on a table nobody modifies are thread-safe.
 */
#ifndef TS_TOKENIZER_STRTAB_H
#define TS_TOKENIZER_STRTAB_H

#include "common/buf.h"

#include <stddef.h>
#include <stdint.h>

typedef struct ts_strtab_slot ts_strtab_slot;

typedef struct ts_strtab {
    ts_buf keys; /* key bytes, one after another */
    ts_strtab_slot *slots;
    size_t n_slots; /* 0 or a power of two */
    size_t count;
} ts_strtab;

/* The value of key s[0..n), or -1 if absent. */
int32_t ts_strtab_find(const ts_strtab *t, const char *s, size_t n);
/* Sets the value of a key (inserting it or replacing its value). value >= 0. 0 or TS_E_NOMEM. */
int ts_strtab_put(ts_strtab *t, const char *s, size_t n, int32_t value);
/* The value of a key; an absent key is inserted with value = the number of keys before it, so
 * that interning strings numbers them 0, 1, 2, ... 0 or TS_E_NOMEM. */
int ts_strtab_intern(ts_strtab *t, const char *s, size_t n, int32_t *value);
/* Makes room for n keys in all, so that inserting them does not rehash. 0 or TS_E_NOMEM. */
int ts_strtab_reserve(ts_strtab *t, size_t n);
void ts_strtab_free(ts_strtab *t);

#endif
