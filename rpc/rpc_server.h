/*
 * rpc_server.h — the gRPC server of a Tessera process: methods registered by full path, served
 * from the process's one completion-queue thread (the "loop"), answered from any thread.
 *
 * Usage:
 *   ts_rpc_server_options o; ts_rpc_server_options_default(&o); o.address = "0.0.0.0:0";
 *   ts_rpc_server *srv; ts_rpc_server_create(&o, &srv);
 *   ts_rpc_server_add_method(srv, "/tessera.v1.Inference/Generate", &generate_method);
 *   ts_rpc_server_start(srv);            → ts_rpc_server_port(srv) is the bound port
 *   ...
 *   ts_rpc_server_shutdown(srv, 5000);   stop accepting, 5 s grace, then end what is left
 *   ts_rpc_server_destroy(srv);
 *
 * Threads. Every callback of a ts_rpc_method runs on the loop thread and must not block (hand
 * work to a queue). The ts_rpc_call_* functions may be called from any thread; they never block
 * (they take a short per-call lock and may start a gRPC batch). Server lifecycle functions
 * (create/add_method/start/shutdown/destroy) are called by the owner thread, never on the loop.
 *
 * Life of a call (see docs/rpc.md):
 *   on_start → on_message (once for unary and server-streaming; per client message for bidi)
 *   → [on_half_close, bidi: the client closed its side] → [on_writable …] → on_done.
 * on_done runs exactly once for every call whose on_start ran, and is the last callback: with
 * cancelled = 1 when the call ended without the server's status reaching the client (client
 * cancel, deadline, connection lost, server hard stop), 0 when the status set by
 * ts_rpc_call_finish was sent. It is the place to free the call's resources (KV blocks).
 * For unary and server-streaming methods on_start runs when the request message has arrived,
 * right before on_message; a call cancelled before that never reaches the handler.
 *
 * Ownership. A ts_rpc_call is valid during each callback. To use it later or from another
 * thread, take a reference (ts_rpc_call_ref) and drop it with ts_rpc_call_unref. The object
 * stays valid while references are held, even after on_done and after the server is destroyed:
 * sends then fail with TS_E_CANCELLED; nothing crashes.
 *
 * Back-pressure. Each call has a bounded send queue (max_queued_messages, max_queued_bytes,
 * counting the message being written). ts_rpc_call_send never blocks: when the queue is full it
 * returns TS_E_EXHAUSTED and arms on_writable, which then runs once on the loop thread when the
 * queue has drained to half. A producer either waits for on_writable or gives up on the call
 * (ts_rpc_call_abort). So a slow client costs at most the queue bound plus gRPC's flow-control
 * window, never unbounded memory.
 */
#ifndef TS_RPC_SERVER_H
#define TS_RPC_SERVER_H

#include "rpc/rpc_status.h"

#include <stddef.h>
#include <stdint.h>

struct ProtobufCMessage;

typedef struct ts_rpc_server ts_rpc_server;
typedef struct ts_rpc_call ts_rpc_call;

typedef enum {
    TS_RPC_UNARY = 0,         /* one request, one response */
    TS_RPC_SERVER_STREAM = 1, /* one request, many responses */
    TS_RPC_BIDI_STREAM = 2,   /* many requests, many responses (also serves client streaming) */
} ts_rpc_kind;

typedef struct ts_rpc_method {
    ts_rpc_kind kind;
    /* Optional. The call arrived (see the life of a call above). */
    void (*on_start)(ts_rpc_call *call, void *arg);
    /* Required. A request message; data is valid during the callback only. */
    void (*on_message)(ts_rpc_call *call, const uint8_t *data, size_t len, void *arg);
    /* Optional, bidi only: the client will send no more messages. */
    void (*on_half_close)(ts_rpc_call *call, void *arg);
    /* Optional: the send queue has room again after a send returned TS_E_EXHAUSTED. */
    void (*on_writable)(ts_rpc_call *call, void *arg);
    /* Optional but nearly always needed: the call has ended; runs exactly once, last. */
    void (*on_done)(ts_rpc_call *call, int cancelled, void *arg);
    void *arg; /* passed to every callback */
} ts_rpc_method;

typedef struct ts_rpc_server_options {
    const char *address;        /* "host:port"; port 0 picks a free port. Default "0.0.0.0:0" */
    size_t max_recv_bytes;      /* largest request message; larger → RESOURCE_EXHAUSTED. 4 MiB */
    size_t max_send_bytes;      /* largest response message. 4 MiB */
    int max_queued_messages;    /* per-call send queue bound, messages. 1024 */
    size_t max_queued_bytes;    /* per-call send queue bound, bytes. 4 MiB */
    int keepalive_time_ms;      /* ping an idle connection this often. 5000 */
    int keepalive_timeout_ms;   /* close it when a ping is not answered in time. 5000 */
    int max_concurrent_streams; /* per connection; 0 = gRPC's default (unlimited) */
    int accept_depth;           /* calls requested from gRPC ahead of arrival. 32 */
    /* Optional: checks every call's credentials when it arrives, on the loop thread, before
     * any callback of its method (the metadata, ts_rpc_call_metadata, and the peer are there;
     * the request message is not). 0 admits it; a TS_E code (message set, naming no secret)
     * ends it with that code's status (TS_E_UNAUTHENTICATED → UNAUTHENTICATED) and the
     * message, and the method never sees the call. Must not block. */
    int (*authorize)(ts_rpc_call *call, void *arg);
    void *authorize_arg;
    /* TLS (rpc_tls.h loads and checks the files): PEM text of the certificate chain and its
     * private key, copied at create; NULL: plaintext. No client certificates are asked for. */
    const char *tls_cert_pem, *tls_key_pem;
} ts_rpc_server_options;

void ts_rpc_server_options_default(ts_rpc_server_options *o);

/* Creates a server (not yet listening). Starts the process loop (grpc_init) if needed: fork or
 * spawn helper processes before. Returns 0, TS_E_INVALID (bad option) or TS_E_NOMEM. */
int ts_rpc_server_create(const ts_rpc_server_options *o, ts_rpc_server **out);

/* Registers a method by full path ("/tessera.v1.Inference/Generate"); path and *m are copied.
 * Before start only. TS_E_INVALID for a malformed or duplicate path. Calls to a path that is not
 * registered are answered UNIMPLEMENTED. */
int ts_rpc_server_add_method(ts_rpc_server *s, const char *path, const ts_rpc_method *m);

/* Binds and starts serving. TS_E_UNAVAILABLE with "cannot bind ADDRESS" when binding fails. */
int ts_rpc_server_start(ts_rpc_server *s);

/* The bound port after a successful start, else 0. */
int ts_rpc_server_port(const ts_rpc_server *s);

/* Calls in progress (accepted and not yet fully released). Thread-safe. */
int ts_rpc_server_active_calls(ts_rpc_server *s);

/* Graceful shutdown, blocking the caller: stop accepting new calls; let calls in progress run
 * for up to grace_ms; then finish the rest with UNAVAILABLE "server shutting down" (queued
 * messages dropped; their on_done follows); and if a client still does not let go within a
 * second, cancel everything at the transport. Returns when every call has ended and released.
 * Idempotent. Not on the loop thread. */
void ts_rpc_server_shutdown(ts_rpc_server *s, int grace_ms);

/* Shuts down (grace 0) if still running, then frees the server. Safe on NULL. Outstanding call
 * references stay valid (see Ownership). */
void ts_rpc_server_destroy(ts_rpc_server *s);

/* --- calls: any thread ------------------------------------------------------------------- */

/* Queues a response message (copied) and starts writing it if nothing is being written.
 * Returns 0;
 *   TS_E_EXHAUSTED  the send queue is full (back-pressure): retry after on_writable;
 *   TS_E_CANCELLED  the call has ended (cancelled, deadline, disconnect, shut down, finished
 *                   and done);
 *   TS_E_INVALID    after ts_rpc_call_finish, a second response to a unary call, or a message
 *                   larger than max_send_bytes — in that last case the call is also finished
 *                   with RESOURCE_EXHAUSTED so the client learns why.
 * The message is set in every case. */
int ts_rpc_call_send(ts_rpc_call *call, const void *data, size_t len);

/* Same, packing a protobuf-c message straight into the outgoing buffer. */
int ts_rpc_call_send_pb(ts_rpc_call *call, const struct ProtobufCMessage *msg);

/* Ends the call with a status (TS_RPC_*) and message (may be NULL), sent after every queued
 * message. 0, TS_E_CANCELLED (already ended) or TS_E_INVALID (already finished). */
int ts_rpc_call_finish(ts_rpc_call *call, int status_code, const char *message);

/* ts_rpc_call_finish with the status mapped from a TS_E_* code (rpc_status.h); message NULL
 * uses the calling thread's ts_error_message(). */
int ts_rpc_call_fail(ts_rpc_call *call, int ts_code, const char *message);

/* Ends the call now: drops queued messages not yet written and sends the status as soon as the
 * message being written (if any) completes. Overrides an earlier finish whose status has not
 * been sent. No-op if the call has ended. */
void ts_rpc_call_abort(ts_rpc_call *call, int status_code, const char *message);

void ts_rpc_call_ref(ts_rpc_call *call);
void ts_rpc_call_unref(ts_rpc_call *call); /* safe on NULL */

/* The value of the client's request metadata `key` (lowercase, as gRPC keeps keys), not
 * NUL-terminated, *len bytes; NULL (and *len 0) when the client sent none. Valid until on_done
 * has returned (gRPC owns the bytes). The first value when a key is repeated. */
const char *ts_rpc_call_metadata(const ts_rpc_call *call, const char *key, size_t *len);

/* The method path, the peer ("ipv4:127.0.0.1:5555") — valid as long as the call object. */
const char *ts_rpc_call_method(const ts_rpc_call *call);
const char *ts_rpc_call_peer(const ts_rpc_call *call);

/* The client's deadline on ts_now_ns()'s clock; INT64_MAX when it set none. */
int64_t ts_rpc_call_deadline_ns(const ts_rpc_call *call);

/* Per-call user pointer (NULL at first); the owner of the call's state sets and reads it. */
void ts_rpc_call_set_data(ts_rpc_call *call, void *data);
void *ts_rpc_call_data(const ts_rpc_call *call);

/* 1 once the call has ended (on_done has run or is running), else 0. */
int ts_rpc_call_is_done(ts_rpc_call *call);

/* Messages in the send queue, including the one being written. */
int ts_rpc_call_queued(ts_rpc_call *call);

#endif
