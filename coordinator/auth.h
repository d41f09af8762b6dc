/*
 * auth.h — the coordinator's API keys: one set for both front doors (the HTTP API's
 * Authorization header, the gRPC Inference service's "authorization" metadata), each
 * "Bearer KEY".
 *
 * Keys come from the environment (TESSERA_API_KEY, one key) and a file (--api-key-file, one key
 * per line; blank lines and lines starting with '#' are skipped, surrounding blanks trimmed),
 * never from the command line, so that no key shows in `ps`. A key is printable ASCII without
 * spaces (what an HTTP header carries). Checking compares against every key over its whole
 * length, so the time does not depend on where a guess differs.
 *
 * Immutable after co_auth_load: thread-safe.
 */
#ifndef TS_COORDINATOR_AUTH_H
#define TS_COORDINATOR_AUTH_H

#include <stdbool.h>
#include <stddef.h>

typedef struct co_auth co_auth;

/* Loads the keys of `env_key` (NULL or "": none) and `key_file` (NULL: none). With neither,
 * *out has no keys and lets everything through. 0, or TS_E_INVALID (the file cannot be read,
 * holds no key, too many, or a key with spaces or control bytes; the message names the file
 * and line, never a key), TS_E_NOMEM. */
int co_auth_load(const char *env_key, const char *key_file, co_auth **out);
/* The keys are wiped. NULL: no-op. */
void co_auth_destroy(co_auth *a);

/* True when keys were given (requests must carry one). */
bool co_auth_required(const co_auth *a);
/* True when no keys are required, or `value` (n bytes, not NUL-terminated; NULL: absent) is
 * "Bearer KEY" (the scheme in any case) with one of the keys. */
bool co_auth_check(const co_auth *a, const char *value, size_t n);

#endif
