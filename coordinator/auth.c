/*
 * auth.c — API keys (see auth.h).
 */
#include "coordinator/auth.h"

#include "common/error.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { AUTH_MAX_KEYS = 256, AUTH_MAX_KEY = 4096 };

struct co_auth {
    char *keys[AUTH_MAX_KEYS];
    size_t lens[AUTH_MAX_KEYS];
    int n_keys;
};

static int add_key(co_auth *a, const char *k, size_t n, const char *where) {
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)k[i] <= ' ' || (unsigned char)k[i] >= 0x7f)
            return ts_error_set(TS_E_INVALID,
                                "%s: a key must be printable ASCII without spaces (byte %zu)",
                                where, i + 1);
    if (a->n_keys == AUTH_MAX_KEYS)
        return ts_error_set(TS_E_INVALID, "%s: more than %d keys", where, AUTH_MAX_KEYS);
    char *copy = malloc(n + 1);
    if (!copy) return ts_error_set(TS_E_NOMEM, "out of memory");
    memcpy(copy, k, n);
    copy[n] = '\0';
    a->keys[a->n_keys] = copy;
    a->lens[a->n_keys++] = n;
    return TS_OK;
}

static int load_file(co_auth *a, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return ts_error_set(TS_E_INVALID, "--api-key-file %s: %s", path, strerror(errno));
    char line[AUTH_MAX_KEY + 2], where[600];
    int rc = TS_OK, n_line = 0, before = a->n_keys;
    while (!rc && fgets(line, sizeof line, f)) {
        n_line++;
        snprintf(where, sizeof where, "--api-key-file %s line %d", path, n_line);
        size_t n = strcspn(line, "\r\n");
        if (!line[n] && !feof(f)) {
            rc = ts_error_set(TS_E_INVALID, "%s: longer than %d bytes", where, AUTH_MAX_KEY);
            break;
        }
        const char *k = line;
        while (n && (*k == ' ' || *k == '\t'))
            k++, n--;
        while (n && (k[n - 1] == ' ' || k[n - 1] == '\t'))
            n--;
        if (n && *k != '#') rc = add_key(a, k, n, where);
    }
    explicit_bzero(line, sizeof line);
    fclose(f);
    if (!rc && a->n_keys == before)
        rc = ts_error_set(TS_E_INVALID, "--api-key-file %s: no keys", path);
    return rc;
}

int co_auth_load(const char *env_key, const char *key_file, co_auth **out) {
    co_auth *a = calloc(1, sizeof *a);
    *out = NULL;
    if (!a) return ts_error_set(TS_E_NOMEM, "out of memory");
    int rc = TS_OK;
    if (env_key && env_key[0]) rc = add_key(a, env_key, strlen(env_key), "TESSERA_API_KEY");
    if (!rc && key_file) rc = load_file(a, key_file);
    if (rc) {
        co_auth_destroy(a);
        return rc;
    }
    *out = a;
    return TS_OK;
}

void co_auth_destroy(co_auth *a) {
    if (!a) return;
    for (int i = 0; i < a->n_keys; i++) {
        explicit_bzero(a->keys[i], a->lens[i]);
        free(a->keys[i]);
    }
    free(a);
}

bool co_auth_required(const co_auth *a) {
    return a && a->n_keys > 0;
}

bool co_auth_check(const co_auth *a, const char *value, size_t n) {
    if (!co_auth_required(a)) return true;
    if (!value || n < 7 || strncasecmp(value, "Bearer ", 7)) return false;
    const unsigned char *key = (const unsigned char *)value + 7;
    n -= 7;
    /* Every key, over its whole length: the work does not depend on the guess's content. */
    unsigned ok = 0;
    for (int i = 0; i < a->n_keys; i++) {
        const unsigned char *k = (const unsigned char *)a->keys[i];
        size_t kn = a->lens[i];
        unsigned diff = kn != n;
        for (size_t j = 0; j < kn; j++)
            diff |= k[j] ^ (j < n ? key[j] : 0u);
        ok |= diff == 0;
    }
    return ok != 0;
}
