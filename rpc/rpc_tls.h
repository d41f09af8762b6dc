/*
 * rpc_tls.h — TLS material of a Tessera process: the server's certificate and key (the
 * coordinator's gRPC API and HTTP listener) and a client's trusted CA, read from PEM files and
 * checked before anything listens or dials, so a bad file is a clear startup error rather than
 * a failed handshake later.
 *
 * Checks (OpenSSL, the library gRPC itself uses): the certificate file holds at least one PEM
 * certificate (a chain: the server's first); the key file an unencrypted PEM private key that
 * belongs to that certificate. An expired or not yet valid certificate is a warning (clients
 * will refuse it; the operator may be rotating it). Messages name the flag and the path, never
 * key material.
 *
 * Thread-safe (no shared state).
 */
#ifndef TS_RPC_TLS_H
#define TS_RPC_TLS_H

#include "common/buf.h"

typedef struct ts_tls_server {
    ts_buf cert; /* PEM text, NUL-terminated */
    ts_buf key;
} ts_tls_server;

/* Loads --tls-cert / --tls-key. Both NULL: 0 with *out empty (no TLS: ts_tls_server_on false).
 * One without the other, an unreadable file, no certificate / key in it, or a key that is not
 * the certificate's: TS_E_INVALID (TS_E_IO for unreadable), message set. */
int ts_tls_server_load(const char *cert_path, const char *key_path, ts_tls_server *out);
int ts_tls_server_on(const ts_tls_server *t);
void ts_tls_server_free(ts_tls_server *t); /* wipes the key; safe on an empty one */

/* Loads --tls-ca: PEM certificates a client trusts. 0, TS_E_IO or TS_E_INVALID. */
int ts_tls_ca_load(const char *ca_path, ts_buf *out);

#endif
