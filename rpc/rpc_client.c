/*
 * rpc_client.c — channels, streams and unary calls over the process's completion-queue loop.
 *
 * A stream is a gRPC call with three batches that may be in flight at once, one of each kind:
 *   status  RECV_STATUS_ON_CLIENT, started at open, completes once when the call is over;
 *   recv    RECV_MESSAGE (the first one with RECV_INITIAL_METADATA): the loop thread moves each
 *           message into the stream's inbox and starts the next receive while the inbox holds
 *           fewer than read_ahead messages; a reader that takes one from a full inbox starts it
 *           again. So the inbox is never empty while the stream can still deliver, a fast reader
 *           rarely sleeps, and a slow one stops reading at the socket (HTTP/2 flow control);
 *   send    SEND_INITIAL_METADATA / SEND_MESSAGE / SEND_CLOSE_FROM_CLIENT, fed from a bounded
 *           queue exactly like the server's: the sending thread starts a batch when none is in
 *           flight, the loop starts the next one when a send completes.
 * Every batch on a call is started with the stream's mutex held, which serialises them as gRPC
 * requires; user threads wait on condition variables (recv_cond: a message or the end; send_cond:
 * room in the queue; end_cond: the status, or no batch left in flight).
 *
 * Destroy cancels a call that is still running and waits until every batch has completed, so
 * that no completion can reach freed memory; cancellation makes that prompt.
 */
#include "rpc/rpc_client.h"

#include "common/clock.h"
#include "common/error.h"
#include "common/log.h"
#include "rpc/rpc_loop.h"

#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ts_rpc_channel {
    grpc_channel *channel;
    grpc_completion_queue *cq;
    ts_rpc_channel_options opt;
    char *target;
    atomic_int n_streams;
    grpc_metadata metadata[TS_RPC_MAX_METADATA]; /* opt.metadata's copy, sent on every call */
    size_t n_metadata;
};

struct ts_rpc_stream {
    ts_rpc_op send_op, recv_op, status_op;
    pthread_mutex_t mu;
    pthread_cond_t recv_cond, send_cond, end_cond;
    ts_rpc_channel *ch;
    grpc_call *call;
    char *method;
    int n_ops; /* batches in flight */

    /* Sending. */
    grpc_metadata metadata[TS_RPC_MAX_METADATA]; /* the channel's, per call (gRPC's to touch) */
    ts_rpc_queue sendq;
    grpc_byte_buffer *writing;
    size_t writing_bytes;
    int send_busy, initial_md_sent, close_requested, close_sent, send_failed;

    /* Receiving. */
    grpc_metadata_array initial_md;
    int initial_md_requested;
    grpc_byte_buffer *recv_buf;
    ts_rpc_queue inbox;
    int recv_busy, recv_eof;

    /* The end. */
    grpc_metadata_array trailing_md;
    grpc_status_code status;
    grpc_slice details;
    const char *error_string;
    int finished;
    char *status_message;
};

void ts_rpc_channel_options_default(ts_rpc_channel_options *o) {
    memset(o, 0, sizeof *o);
    o->max_recv_bytes = 4u << 20;
    o->max_send_bytes = 4u << 20;
    o->keepalive_time_ms = 5000;
    o->keepalive_timeout_ms = 5000;
    o->read_ahead = 64;
    o->max_queued_messages = 1024;
    o->max_queued_bytes = 4u << 20;
}

int ts_rpc_channel_create(const char *target, const ts_rpc_channel_options *o,
                          ts_rpc_channel **out) {
    *out = NULL;
    ts_rpc_channel_options defaults;
    if (!o) {
        ts_rpc_channel_options_default(&defaults);
        o = &defaults;
    }
    if (!target || !target[0]) return ts_error_set(TS_E_INVALID, "rpc channel: empty target");
    if (o->max_recv_bytes == 0 || o->max_recv_bytes > INT32_MAX || o->max_send_bytes == 0 ||
        o->max_send_bytes > INT32_MAX || o->keepalive_time_ms < 1 || o->keepalive_timeout_ms < 1 ||
        o->read_ahead < 1 || o->max_queued_messages < 1 || o->max_queued_bytes == 0)
        return ts_error_set(TS_E_INVALID,
                            "rpc channel %s: sizes, queue and keepalive options "
                            "must be positive",
                            target);
    if (o->n_metadata < 0 || o->n_metadata > TS_RPC_MAX_METADATA || (o->n_metadata && !o->metadata))
        return ts_error_set(TS_E_INVALID, "rpc channel %s: 0 .. %d metadata pairs", target,
                            TS_RPC_MAX_METADATA);
    for (int i = 0; i < o->n_metadata; i++)
        if (!o->metadata[i].key || !o->metadata[i].value ||
            !grpc_header_key_is_legal(grpc_slice_from_static_string(o->metadata[i].key)) ||
            !grpc_header_nonbin_value_is_legal(grpc_slice_from_static_string(o->metadata[i].value)))
            return ts_error_set(TS_E_INVALID,
                                "rpc channel %s: metadata key %s: not a legal "
                                "header key or value",
                                target, o->metadata[i].key ? o->metadata[i].key : "(null)");
    ts_rpc_channel *ch = calloc(1, sizeof *ch);
    if (!ch || !(ch->target = strdup(target))) {
        free(ch);
        return ts_error_set(TS_E_NOMEM, "rpc channel %s: out of memory", target);
    }
    ch->opt = *o;
    ch->opt.metadata = NULL;
    ch->opt.tls_ca_pem = NULL; /* gRPC copied it */
    atomic_init(&ch->n_streams, 0);
    for (int i = 0; i < o->n_metadata; i++) {
        ch->metadata[i].key = grpc_slice_from_copied_string(o->metadata[i].key);
        ch->metadata[i].value = grpc_slice_from_copied_string(o->metadata[i].value);
    }
    ch->n_metadata = (size_t)o->n_metadata;
    int rc = ts_rpc_loop_acquire(&ch->cq);
    if (rc != 0) {
        free(ch->target);
        free(ch);
        return rc;
    }
    ts_rpc_args args;
    ts_rpc_args_init(&args);
    ts_rpc_args_common(&args, o->max_recv_bytes, o->max_send_bytes, o->keepalive_time_ms,
                       o->keepalive_timeout_ms);
    /* Streams are not replayable requests: no transparent retries (and no retry buffering). */
    ts_rpc_args_int(&args, GRPC_ARG_ENABLE_RETRIES, 0);
    if (o->own_connection) ts_rpc_args_int(&args, GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    grpc_channel_credentials *creds =
        o->tls_ca_pem ? grpc_ssl_credentials_create(o->tls_ca_pem, NULL, NULL, NULL)
                      : grpc_insecure_credentials_create();
    ch->channel = grpc_channel_create(target, creds, &args.set);
    grpc_channel_credentials_release(creds);
    *out = ch;
    return 0;
}

void ts_rpc_channel_destroy(ts_rpc_channel *ch) {
    if (!ch) return;
    TS_ASSERT(atomic_load(&ch->n_streams) == 0); /* destroy the streams first */
    grpc_channel_destroy(ch->channel);
    for (size_t i = 0; i < ch->n_metadata; i++) {
        grpc_slice_unref(ch->metadata[i].key);
        grpc_slice_unref(ch->metadata[i].value);
    }
    ts_rpc_loop_release();
    free(ch->target);
    free(ch);
}

/* ---- batches (caller holds s->mu) ------------------------------------------------------------ */

static void stream_batch(ts_rpc_stream *s, const grpc_op *ops, size_t n, ts_rpc_op *tag,
                         const char *what) {
    s->n_ops++;
    grpc_call_error e = grpc_call_start_batch(s->call, ops, n, tag, NULL);
    if (e != GRPC_CALL_OK) { /* a bug here; end the call rather than hang */
        s->n_ops--;
        TS_ERROR("rpc: %s: cannot start %s batch (grpc_call_error %d)", s->method, what, (int)e);
        grpc_call_cancel_with_status(s->call, GRPC_STATUS_INTERNAL, "client error", NULL);
    }
}

static void stream_start_send_locked(ts_rpc_stream *s) {
    if (s->send_busy || s->send_failed) return;
    size_t size = 0;
    grpc_byte_buffer *bb = ts_rpc_queue_pop(&s->sendq, &size);
    int with_close = s->close_requested && !s->close_sent && s->sendq.count == 0;
    if (!bb && !with_close && s->initial_md_sent) return;

    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (!s->initial_md_sent) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        memcpy(s->metadata, s->ch->metadata, s->ch->n_metadata * sizeof s->metadata[0]);
        ops[n].data.send_initial_metadata.count = s->ch->n_metadata;
        ops[n].data.send_initial_metadata.metadata = s->metadata;
        if (s->ch->opt.wait_for_ready)
            ops[n].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY |
                           GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET;
        n++;
        s->initial_md_sent = 1;
    }
    if (bb) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = bb;
        s->writing = bb;
        s->writing_bytes = size;
    }
    if (with_close) {
        ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        s->close_sent = 1;
    }
    s->send_busy = 1;
    stream_batch(s, ops, n, &s->send_op, "send");
}

static void stream_start_recv_locked(ts_rpc_stream *s) {
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (!s->initial_md_requested) {
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n++].data.recv_initial_metadata.recv_initial_metadata = &s->initial_md;
        s->initial_md_requested = 1;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n++].data.recv_message.recv_message = &s->recv_buf;
    s->recv_busy = 1;
    stream_batch(s, ops, n, &s->recv_op, "receive");
}

/* ---- loop-thread events ------------------------------------------------------------------------
 */

static void stream_op_done_locked(ts_rpc_stream *s) {
    if (--s->n_ops == 0) pthread_cond_broadcast(&s->end_cond);
}

static void on_send_complete(ts_rpc_op *op, int success) {
    ts_rpc_stream *s = TS_RPC_CONTAINER_OF(op, ts_rpc_stream, send_op);
    pthread_mutex_lock(&s->mu);
    s->send_busy = 0;
    if (s->writing) grpc_byte_buffer_destroy(s->writing);
    s->writing = NULL;
    s->writing_bytes = 0;
    if (!success) {
        s->send_failed = 1; /* the call is over; the status says why */
        ts_rpc_queue_clear(&s->sendq);
    } else {
        stream_start_send_locked(s);
    }
    pthread_cond_broadcast(&s->send_cond);
    stream_op_done_locked(s);
    pthread_mutex_unlock(&s->mu);
}

static void on_recv_complete(ts_rpc_op *op, int success) {
    ts_rpc_stream *s = TS_RPC_CONTAINER_OF(op, ts_rpc_stream, recv_op);
    pthread_mutex_lock(&s->mu);
    s->recv_busy = 0;
    grpc_byte_buffer *bb = s->recv_buf;
    s->recv_buf = NULL;
    if (success && bb) {
        size_t len = grpc_byte_buffer_length(bb);
        if (ts_rpc_queue_push(&s->inbox, bb, len) != 0) {
            grpc_byte_buffer_destroy(bb);
            grpc_call_cancel_with_status(s->call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                         "client out of memory", NULL);
            s->recv_eof = 1;
        } else if (s->inbox.count < s->ch->opt.read_ahead) {
            stream_start_recv_locked(s);
        }
    } else {
        if (bb) grpc_byte_buffer_destroy(bb);
        s->recv_eof = 1;
    }
    pthread_cond_broadcast(&s->recv_cond);
    stream_op_done_locked(s);
    pthread_mutex_unlock(&s->mu);
}

static void on_status_complete(ts_rpc_op *op, int success) {
    ts_rpc_stream *s = TS_RPC_CONTAINER_OF(op, ts_rpc_stream, status_op);
    char *message = grpc_slice_to_c_string(s->details);
    pthread_mutex_lock(&s->mu);
    s->finished = 1;
    s->status_message = message;
    if (!success) { /* does not happen for this op; keep the contract anyway */
        s->status = GRPC_STATUS_INTERNAL;
    }
    ts_rpc_queue_clear(&s->sendq);
    pthread_cond_broadcast(&s->send_cond);
    pthread_cond_broadcast(&s->recv_cond);
    pthread_cond_broadcast(&s->end_cond);
    stream_op_done_locked(s);
    pthread_mutex_unlock(&s->mu);
}

/* ---- streams -------------------------------------------------------------------------------- */

static int stream_create(ts_rpc_channel *ch, const char *method, int timeout_ms,
                         ts_rpc_stream **out) {
    TS_ASSERT(!ts_rpc_loop_on_thread());
    *out = NULL;
    if (!method || method[0] != '/')
        return ts_error_set(TS_E_INVALID,
                            "rpc: method \"%s\" is not a path "
                            "\"/package.Service/Method\"",
                            method ? method : "");
    ts_rpc_stream *s = calloc(1, sizeof *s);
    if (!s || !(s->method = strdup(method))) {
        free(s);
        return ts_error_set(TS_E_NOMEM, "rpc: %s: out of memory", method);
    }
    s->send_op.complete = on_send_complete;
    s->recv_op.complete = on_recv_complete;
    s->status_op.complete = on_status_complete;
    pthread_mutex_init(&s->mu, NULL);
    ts_rpc_cond_init(&s->recv_cond);
    ts_rpc_cond_init(&s->send_cond);
    ts_rpc_cond_init(&s->end_cond);
    s->ch = ch;
    grpc_metadata_array_init(&s->initial_md);
    grpc_metadata_array_init(&s->trailing_md);
    s->details = grpc_empty_slice();
    /* A copied (refcounted) slice: gRPC's header compressor may keep the path beyond the
     * call, so a static slice pointing into this stream would dangle. */
    grpc_slice path = grpc_slice_from_copied_string(s->method);
    s->call = grpc_channel_create_call(ch->channel, NULL, GRPC_PROPAGATE_DEFAULTS, ch->cq, path,
                                       NULL, ts_rpc_deadline_after_ms(timeout_ms), NULL);
    grpc_slice_unref(path);
    atomic_fetch_add(&ch->n_streams, 1);

    pthread_mutex_lock(&s->mu);
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &s->trailing_md;
    op.data.recv_status_on_client.status = &s->status;
    op.data.recv_status_on_client.status_details = &s->details;
    op.data.recv_status_on_client.error_string = &s->error_string;
    stream_batch(s, &op, 1, &s->status_op, "status");
    stream_start_recv_locked(s);
    pthread_mutex_unlock(&s->mu);
    *out = s;
    return 0;
}

int ts_rpc_stream_open(ts_rpc_channel *ch, const char *method, int timeout_ms,
                       ts_rpc_stream **out) {
    int rc = stream_create(ch, method, timeout_ms, out);
    ts_rpc_stream *s = *out;
    if (!s) return rc; /* no stream: rc says why */
    pthread_mutex_lock(&s->mu);
    stream_start_send_locked(s); /* the headers: the server sees the call now */
    pthread_mutex_unlock(&s->mu);
    return 0;
}

int ts_rpc_stream_open_request(ts_rpc_channel *ch, const char *method, const void *req,
                               size_t req_len, int timeout_ms, ts_rpc_stream **out) {
    if (req_len > ch->opt.max_send_bytes) {
        *out = NULL;
        return ts_error_set(TS_E_INVALID,
                            "rpc: %s: request of %zu bytes exceeds the limit of "
                            "%zu bytes",
                            method, req_len, ch->opt.max_send_bytes);
    }
    int rc = stream_create(ch, method, timeout_ms, out);
    ts_rpc_stream *s = *out;
    if (!s) return rc; /* no stream: rc says why */
    grpc_byte_buffer *bb = ts_rpc_buffer_from_bytes(req, req_len);
    pthread_mutex_lock(&s->mu);
    rc = ts_rpc_queue_push(&s->sendq, bb, req_len);
    if (rc == 0) s->close_requested = 1;
    stream_start_send_locked(s); /* headers + request + half-close in one batch */
    pthread_mutex_unlock(&s->mu);
    if (rc != 0) {
        grpc_byte_buffer_destroy(bb);
        ts_rpc_stream_destroy(s);
        *out = NULL;
    }
    return rc;
}

static int stream_enqueue(ts_rpc_stream *s, grpc_byte_buffer *bb, size_t len, int timeout_ms) {
    if (len > s->ch->opt.max_send_bytes) {
        grpc_byte_buffer_destroy(bb);
        return ts_error_set(TS_E_INVALID,
                            "rpc: %s: message of %zu bytes exceeds the limit of "
                            "%zu bytes",
                            s->method, len, s->ch->opt.max_send_bytes);
    }
    int64_t until = ts_rpc_until_ns(timeout_ms);
    const ts_rpc_channel_options *o = &s->ch->opt;
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    for (;;) {
        int n = s->sendq.count + (s->writing != NULL);
        size_t bytes = s->sendq.bytes + s->writing_bytes;
        if (s->finished || s->send_failed) {
            rc = TS_E_CANCELLED;
            break;
        }
        if (s->close_requested) {
            rc = TS_E_INVALID;
            break;
        }
        if (n < o->max_queued_messages && (n == 0 || bytes + len <= o->max_queued_bytes)) {
            rc = ts_rpc_queue_push(&s->sendq, bb, len);
            if (rc == 0) {
                bb = NULL;
                stream_start_send_locked(s);
            }
            break;
        }
        if (ts_rpc_cond_wait_until(&s->send_cond, &s->mu, until)) {
            rc = TS_E_EXHAUSTED;
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (bb) grpc_byte_buffer_destroy(bb);
    switch (rc) {
    case 0: return 0;
    case TS_E_CANCELLED: return ts_error_set(rc, "rpc: %s: the stream has ended", s->method);
    case TS_E_INVALID: return ts_error_set(rc, "rpc: %s: send after close_send", s->method);
    case TS_E_EXHAUSTED:
        return ts_error_set(rc,
                            "rpc: %s: send queue still full after %d ms (the server reads "
                            "too slowly)",
                            s->method, timeout_ms);
    default: return rc;
    }
}

int ts_rpc_stream_send(ts_rpc_stream *s, const void *data, size_t len, int timeout_ms) {
    TS_ASSERT(!ts_rpc_loop_on_thread() || timeout_ms == 0);
    return stream_enqueue(s, ts_rpc_buffer_from_bytes(data, len), len, timeout_ms);
}

int ts_rpc_stream_send_pb(ts_rpc_stream *s, const struct ProtobufCMessage *msg, int timeout_ms) {
    TS_ASSERT(!ts_rpc_loop_on_thread() || timeout_ms == 0);
    size_t len;
    grpc_byte_buffer *bb = ts_rpc_buffer_from_pb(msg, &len);
    return stream_enqueue(s, bb, len, timeout_ms);
}

int ts_rpc_stream_close_send(ts_rpc_stream *s) {
    pthread_mutex_lock(&s->mu);
    int ended = s->finished || s->send_failed;
    if (!ended && !s->close_requested) {
        s->close_requested = 1;
        stream_start_send_locked(s);
    }
    pthread_mutex_unlock(&s->mu);
    if (ended) return ts_error_set(TS_E_CANCELLED, "rpc: %s: the stream has ended", s->method);
    return 0;
}

int ts_rpc_stream_recv(ts_rpc_stream *s, ts_buf *out, int timeout_ms) {
    TS_ASSERT(!ts_rpc_loop_on_thread() || timeout_ms == 0);
    int64_t until = ts_rpc_until_ns(timeout_ms);
    pthread_mutex_lock(&s->mu);
    while (s->inbox.count == 0 && !s->recv_eof) {
        if (ts_rpc_cond_wait_until(&s->recv_cond, &s->mu, until) && s->inbox.count == 0 &&
            !s->recv_eof) {
            pthread_mutex_unlock(&s->mu);
            return ts_error_set(TS_E_TIMEOUT, "rpc: %s: no message within %d ms", s->method,
                                timeout_ms);
        }
    }
    grpc_byte_buffer *bb = ts_rpc_queue_pop(&s->inbox, NULL);
    if (bb && !s->recv_busy && !s->recv_eof) stream_start_recv_locked(s);
    pthread_mutex_unlock(&s->mu);
    if (!bb) return 0;

    grpc_slice slice = ts_rpc_buffer_to_slice(bb);
    grpc_byte_buffer_destroy(bb);
    ts_buf_clear(out);
    int rc = ts_buf_append(out, GRPC_SLICE_START_PTR(slice), GRPC_SLICE_LENGTH(slice));
    grpc_slice_unref(slice);
    if (rc != 0) return ts_error_wrap(rc, "rpc: %s: receiving a message", s->method);
    return 1;
}

void ts_rpc_stream_cancel(ts_rpc_stream *s) {
    grpc_call_cancel_with_status(s->call, GRPC_STATUS_CANCELLED, "cancelled by the client", NULL);
}

int ts_rpc_stream_status(ts_rpc_stream *s, int *code, const char **message) {
    pthread_mutex_lock(&s->mu);
    int finished = s->finished;
    if (finished) {
        if (code) *code = (int)s->status;
        if (message) *message = s->status_message ? s->status_message : "";
    }
    pthread_mutex_unlock(&s->mu);
    return finished;
}

int ts_rpc_stream_finish(ts_rpc_stream *s, int timeout_ms) {
    TS_ASSERT(!ts_rpc_loop_on_thread());
    int64_t until = ts_rpc_until_ns(timeout_ms);
    pthread_mutex_lock(&s->mu);
    while (!s->finished)
        if (ts_rpc_cond_wait_until(&s->end_cond, &s->mu, until) && !s->finished) break;
    if (!s->finished) {
        pthread_mutex_unlock(&s->mu);
        char why[96];
        snprintf(why, sizeof why, "the client stopped waiting for the status after %d ms",
                 timeout_ms);
        grpc_call_cancel_with_status(s->call, GRPC_STATUS_CANCELLED, why, NULL);
        pthread_mutex_lock(&s->mu);
        while (!s->finished)
            pthread_cond_wait(&s->end_cond, &s->mu);
    }
    int code = (int)s->status;
    const char *message = s->status_message ? s->status_message : "";
    pthread_mutex_unlock(&s->mu);
    if (code == TS_RPC_OK) return 0;
    /* Status first, so that a command can print the message as it is (cli/remote.h). */
    return ts_error_set(ts_rpc_error_from_status(code), "%s: %s (%s)", ts_rpc_status_name(code),
                        message, s->method);
}

void ts_rpc_stream_destroy(ts_rpc_stream *s) {
    if (!s) return;
    TS_ASSERT(!ts_rpc_loop_on_thread());
    pthread_mutex_lock(&s->mu);
    if (s->n_ops > 0) {
        pthread_mutex_unlock(&s->mu);
        grpc_call_cancel_with_status(s->call, GRPC_STATUS_CANCELLED, "stream destroyed", NULL);
        pthread_mutex_lock(&s->mu);
        while (s->n_ops > 0)
            pthread_cond_wait(&s->end_cond, &s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    grpc_call_unref(s->call);
    if (s->writing) grpc_byte_buffer_destroy(s->writing);
    if (s->recv_buf) grpc_byte_buffer_destroy(s->recv_buf);
    ts_rpc_queue_free(&s->sendq);
    ts_rpc_queue_free(&s->inbox);
    grpc_metadata_array_destroy(&s->initial_md);
    grpc_metadata_array_destroy(&s->trailing_md);
    grpc_slice_unref(s->details);
    gpr_free((void *)s->error_string);
    free(s->status_message);
    pthread_cond_destroy(&s->recv_cond);
    pthread_cond_destroy(&s->send_cond);
    pthread_cond_destroy(&s->end_cond);
    pthread_mutex_destroy(&s->mu);
    atomic_fetch_sub(&s->ch->n_streams, 1);
    free(s->method);
    free(s);
}

/* ---- unary --------------------------------------------------------------------------------- */

int ts_rpc_unary(ts_rpc_channel *ch, const char *method, const void *req, size_t req_len,
                 int timeout_ms, ts_buf *reply) {
    ts_rpc_stream *s = NULL;
    int rc = ts_rpc_stream_open_request(ch, method, req, req_len, timeout_ms, &s);
    if (!s) return rc;
    int got = ts_rpc_stream_recv(s, reply, -1); /* the deadline bounds the wait */
    rc = ts_rpc_stream_finish(s, -1);
    if (rc == 0 && got < 0) rc = got;
    if (rc == 0 && got == 0)
        rc = ts_error_set(TS_E_INTERNAL, "%s: the server sent OK without a response", method);
    ts_rpc_stream_destroy(s);
    return rc;
}
