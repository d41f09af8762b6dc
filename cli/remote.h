/*
 * remote.h — what the CLI's client commands (`generate --server`, `bench`) share when they talk
 * to a Tessera cluster's public API (tessera.v1.Inference, rpc/proto/tessera/v1/inference.proto).
 *
 * Errors. Calls return 0 or the TS_E code mapped from the gRPC status (rpc_status.h). The rpc
 * layer's message reads "STATUS_NAME: server's message (METHOD)", so a command prints
 * ts_error_message() as it is: "tessera generate: UNAVAILABLE: ...". A bad
 * request (INVALID_ARGUMENT → TS_E_INVALID) is a usage error: ts_remote_exit_code() → 2, else 1.
 *
 * Threads: every function may be called from any user thread (never the rpc loop thread); the
 * error text is thread-local like every error message.
 */
#ifndef TS_CLI_REMOTE_H
#define TS_CLI_REMOTE_H

#include "common/buf.h"
#include "node/scheduler.h"
#include "rpc/rpc_client.h"

#include <stddef.h>
#include <stdint.h>

#define TS_REMOTE_GENERATE "/tessera.v1.Inference/Generate"
#define TS_REMOTE_TOKENIZE "/tessera.v1.Inference/Tokenize"
#define TS_REMOTE_LIST_MODELS "/tessera.v1.Inference/ListModels"

/* Packs a protobuf-c message into `out` (replacing its content). 0 or TS_E_NOMEM. */
int ts_remote_pack(const struct ProtobufCMessage *msg, ts_buf *out);

/* A channel to HOST:PORT with the defaults of rpc_client.h: calls fail at once with UNAVAILABLE
 * when nothing listens there (no waiting for the server to appear). Every call carries the
 * environment's TESSERA_API_KEY (authorization: Bearer KEY) when it is set. tls_ca: NULL for
 * plaintext, else --tls-ca, a PEM file of the certificates that vouch for the server's (TLS; the
 * host in HOST:PORT must be one the certificate names); a bad --tls-ca file is TS_E_INVALID. */
int ts_remote_connect(const char *target, const char *tls_ca, ts_rpc_channel **out);

/* The --tls-ca flag's help, the same on every remote command. */
#define TS_REMOTE_TLS_CA_HELP                                                                      \
    "with --server: the cluster serves TLS; trust the CA certificates in this PEM file"

/* 2 for TS_E_INVALID (the server said INVALID_ARGUMENT, or a bad flag/target), else 1. */
int ts_remote_exit_code(int rc);

/* Tokenize RPC: the ids the server's tokenizer gives `text` (with BOS unless no_bos). *ids is
 * malloc'd (the caller frees it) and set only on success. */
int ts_remote_tokenize(ts_rpc_channel *ch, const char *model, const char *text, int no_bos,
                       int timeout_ms, int32_t **ids, size_t *n_ids);

typedef struct ts_remote_model {
    int vocab_size;
    int context_length;
} ts_remote_model;

/* ListModels RPC: the entry named `model`, or the first (default) one when model is NULL/"".
 * TS_E_NOT_FOUND when the server lists no such model. */
int ts_remote_model_info(ts_rpc_channel *ch, const char *model, int timeout_ms,
                         ts_remote_model *out);

#endif
