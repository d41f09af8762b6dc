/*
 * grow.h — growing a heap-allocated array by doubling. Internal to tokenizer/.
 */
#ifndef TS_TOKENIZER_GROW_H
#define TS_TOKENIZER_GROW_H

#include <stddef.h>

/* `items` points to an array pointer (NULL or realloc'able) with room for *cap elements of
 * `size` bytes; makes room for at least `need` elements. 0, or TS_E_NOMEM with the array and
 * *cap unchanged. Use: ts_grow(&v, &cap, n + 1, sizeof *v). */
int ts_grow(void *items, size_t *cap, size_t need, size_t size);

#endif
