/*
 * secret.h — shared secrets: the cluster secret that node groups prove to the coordinator.
 *
 * A secret is one line of printable ASCII without spaces, at most TS_SECRET_MAX - 1 bytes (the
 * generated ones: 64 hex digits, 256 bits from getrandom). It travels in files of mode 0600 or
 * in the environment, never on a command line (argv is world-readable in ps), and never in a
 * log or error message: messages name the file or variable, not the value.
 *
 * All functions are thread-safe (no shared state).
 */
#ifndef TS_COMMON_SECRET_H
#define TS_COMMON_SECRET_H

#include <stdbool.h>
#include <stddef.h>

enum { TS_SECRET_MAX = 256 };

/* The cluster secret: the gRPC metadata key node groups send it under, and the environment
 * variable launchers may hand it in (else a file: --cluster-secret-file). */
#define TS_CLUSTER_SECRET_KEY "tessera-cluster-secret"
#define TS_CLUSTER_SECRET_ENV "TESSERA_CLUSTER_SECRET"

/* Creates `path` (which must not exist: O_EXCL, no symlink followed) with mode 0600, holding a
 * fresh random secret and a newline. 0, or TS_E_IO with the path and errno's text. */
int ts_secret_create_file(const char *path);

/* The secret from `path` when it is not NULL (a regular file no one but its owner may read or
 * write: else TS_E_INVALID saying to chmod 600 it), else from the environment variable
 * `env_name` when it is set and not empty; out[0] = '\0' when neither gives one. Surrounding
 * whitespace (the newline) is dropped. 0, TS_E_IO (unreadable file) or TS_E_INVALID (empty,
 * too long, or not printable); the message names `flag` (e.g. "--cluster-secret-file") or the
 * variable. size >= TS_SECRET_MAX. */
int ts_secret_load(const char *flag, const char *path, const char *env_name, char *out,
                   size_t size);

/* a[0..a_len) == b[0..b_len), in time that depends on the lengths only, not on where the bytes
 * differ (no early exit). */
bool ts_secret_equal(const char *a, size_t a_len, const char *b, size_t b_len);

#endif
