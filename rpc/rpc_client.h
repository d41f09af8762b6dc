/*
 * rpc_client.h — gRPC client side: channels, unary calls and streams with blocking, timed calls.
 *
 *   ts_rpc_channel *ch; ts_rpc_channel_create("127.0.0.1:7070", NULL, &ch);
 *   // unary
 *   ts_buf reply = {0};
 *   int rc = ts_rpc_unary(ch, "/tessera.v1.Inference/Tokenize", req, req_len, 5000, &reply);
 *   // server streaming
 *   ts_rpc_stream *s; ts_rpc_stream_open_request(ch, "/tessera.v1.Inference/Generate",
 *                                                req, req_len, 60000, &s);
 *   while ((rc = ts_rpc_stream_recv(s, &msg, 10000)) == 1) { ... }
 *   rc = ts_rpc_stream_finish(s, 1000);   // 0, or the server's status as a TS_E code + message
 *   ts_rpc_stream_destroy(s);
 *   ts_rpc_channel_destroy(ch);
 *
 * Threads. The process's completion-queue loop (rpc_loop.h) does the I/O; these functions are
 * called from user threads, never on the loop thread (the blocking ones assert it). A stream may
 * be used by several threads at once: one may block in recv while another sends, a third may
 * cancel. Destroy is the exception: nobody else may use the stream during or after it.
 *
 * Timeouts. Every blocking function takes timeout_ms: < 0 waits without limit, 0 does not wait,
 * > 0 waits up to that long. A call's own deadline (timeout_ms of open) is enforced by gRPC and
 * ends the call with DEADLINE_EXCEEDED. Channels send keepalive pings, so a dead server ends the
 * call with UNAVAILABLE within keepalive_time + keepalive_timeout even without a deadline.
 *
 * Flow control. Received messages are read ahead into a bounded per-stream queue (read_ahead
 * messages); when it is full the stream stops reading and HTTP/2 flow control slows the server.
 * Sends are queued (bounded like the server's) and written one at a time.
 *
 * Errors carry the status: a failed call returns the TS_E code mapped from the gRPC status
 * (rpc_status.h), and ts_error_message() reads "STATUS_NAME: server's message (METHOD)".
 */
#ifndef TS_RPC_CLIENT_H
#define TS_RPC_CLIENT_H

#include "common/buf.h"
#include "rpc/rpc_status.h"

#include <stddef.h>

struct ProtobufCMessage;

typedef struct ts_rpc_channel ts_rpc_channel;
typedef struct ts_rpc_stream ts_rpc_stream;

/* Request metadata sent with every call of a channel (credentials: "authorization",
 * "tessera-cluster-secret"). Keys lowercase; values printable ASCII. */
typedef struct ts_rpc_metadata {
    const char *key, *value;
} ts_rpc_metadata;

enum { TS_RPC_MAX_METADATA = 4 };

typedef struct ts_rpc_channel_options {
    size_t max_recv_bytes;    /* largest message accepted; larger → RESOURCE_EXHAUSTED. 4 MiB */
    size_t max_send_bytes;    /* largest message sent. 4 MiB */
    int keepalive_time_ms;    /* ping this often. 5000 */
    int keepalive_timeout_ms; /* the connection is dead when a ping is unanswered this long. 5000 */
    int read_ahead;           /* messages received ahead of ts_rpc_stream_recv. 64 */
    int max_queued_messages;  /* per-stream send queue bound. 1024 */
    size_t max_queued_bytes;  /* per-stream send queue bound, bytes. 4 MiB */
    int wait_for_ready;       /* 1: calls wait for the server to be reachable (up to their
                                 deadline) instead of failing UNAVAILABLE at once. 0 */
    int own_connection;       /* 1: do not share the TCP connection with other channels to the
                                 same target (spreads load over connections). 0 */
    const ts_rpc_metadata *metadata; /* n_metadata pairs sent with every call (copied at create;
                                        at most TS_RPC_MAX_METADATA). None */
    int n_metadata;
    const char *tls_ca_pem; /* TLS to a server whose certificate these PEM certificates vouch
                               for (ts_tls_ca_load); NULL: plaintext */
} ts_rpc_channel_options;

void ts_rpc_channel_options_default(ts_rpc_channel_options *o);

/* A channel to "host:port" (options may be NULL for the defaults). Connects lazily. Starts the
 * process loop (grpc_init) if needed. 0, TS_E_INVALID or TS_E_NOMEM. */
int ts_rpc_channel_create(const char *target, const ts_rpc_channel_options *o,
                          ts_rpc_channel **out);

/* Every stream of the channel must have been destroyed. Safe on NULL. */
void ts_rpc_channel_destroy(ts_rpc_channel *ch);

/* One request, one response. timeout_ms is the call's deadline (<= 0: none). On success the
 * response replaces reply's content and 0 is returned; otherwise the status's TS_E code with
 * the message set. */
int ts_rpc_unary(ts_rpc_channel *ch, const char *method, const void *req, size_t req_len,
                 int timeout_ms, ts_buf *reply);

/* Opens a bidirectional stream: the call starts at once (its headers are sent). timeout_ms is
 * its deadline (<= 0: none). Fails only for bad arguments or out-of-memory; a server that cannot
 * be reached shows as the stream's final status. */
int ts_rpc_stream_open(ts_rpc_channel *ch, const char *method, int timeout_ms, ts_rpc_stream **out);

/* Opens a server-streaming call: sends `req` as the only message and closes the sending side,
 * in one batch. */
int ts_rpc_stream_open_request(ts_rpc_channel *ch, const char *method, const void *req,
                               size_t req_len, int timeout_ms, ts_rpc_stream **out);

/* Queues a message (copied). Waits up to timeout_ms while the send queue is full.
 * 0; TS_E_EXHAUSTED (still full after the wait); TS_E_CANCELLED (the stream has ended: see
 * ts_rpc_stream_finish for why); TS_E_INVALID (after close_send, or larger than
 * max_send_bytes). A return of 0 means queued, not delivered. */
int ts_rpc_stream_send(ts_rpc_stream *s, const void *data, size_t len, int timeout_ms);
int ts_rpc_stream_send_pb(ts_rpc_stream *s, const struct ProtobufCMessage *msg, int timeout_ms);

/* Half-closes: the server sees the end of the client's messages after the queued ones.
 * Idempotent; 0 or TS_E_CANCELLED when the stream has ended. */
int ts_rpc_stream_close_send(ts_rpc_stream *s);

/* Waits up to timeout_ms for the next message.
 *   1             a message, which replaces out's content;
 *   0             the end of the stream: no more messages (call ts_rpc_stream_finish for the
 *                 status — end of stream is not success);
 *   TS_E_TIMEOUT  nothing arrived within timeout_ms; the stream goes on. */
int ts_rpc_stream_recv(ts_rpc_stream *s, ts_buf *out, int timeout_ms);

/* Cancels the call (CANCELLED). Any thread, any time before destroy; idempotent. The server's
 * on_done runs with cancelled = 1. */
void ts_rpc_stream_cancel(ts_rpc_stream *s);

/* Waits up to timeout_ms for the final status; if it does not come, cancels the call and
 * reports CANCELLED. Returns 0 for OK, else the status's TS_E code with the message set. Read
 * the messages first (recv until 0): unread messages can hold the status back. */
int ts_rpc_stream_finish(ts_rpc_stream *s, int timeout_ms);

/* The final status if the call has ended: returns 1 and fills *code (TS_RPC_*) and *message
 * (owned by the stream; either pointer may be NULL); 0 while the call is still running. */
int ts_rpc_stream_status(ts_rpc_stream *s, int *code, const char **message);

/* Cancels the call if still running, waits for gRPC to let go of it, frees everything.
 * Safe on NULL. */
void ts_rpc_stream_destroy(ts_rpc_stream *s);

#endif
