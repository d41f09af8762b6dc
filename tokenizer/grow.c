/* grow.c — doubling growth of arrays (see grow.h). */
#include "tokenizer/grow.h"

#include "common/error.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int ts_grow(void *items, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return TS_OK;
    size_t n = *cap ? *cap : 16;
    while (n < need && n <= SIZE_MAX / 2 / size)
        n *= 2;
    if (n < need) return ts_error_set(TS_E_NOMEM, "an array of %zu elements is too large", need);
    void *old; /* the caller's pointer has its own type: copy it, do not cast the pointer */
    memcpy(&old, items, sizeof old);
    void *grown = realloc(old, n * size);
    if (!grown)
        return ts_error_set(TS_E_NOMEM, "out of memory for %zu elements of %zu bytes", n, size);
    memcpy(items, &grown, sizeof grown);
    *cap = n;
    return TS_OK;
}
