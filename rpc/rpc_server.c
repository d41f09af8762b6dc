/*
 * rpc_server.c — the gRPC server: one completion-queue thread, many concurrent calls.
 *
 * The design in one page
 * ----------------------
 * gRPC C core is an asynchronous library: a program starts "batches" of operations on a call
 * (send a message, receive a message, send the status, ...) and learns of their completion by
 * taking events from a completion queue. Tessera has one such queue per process, drained by one
 * thread (rpc_loop.c). Every event carries a tag, which here is always a ts_rpc_op embedded in
 * the object that started the batch; the loop calls op->complete(op, success) and nothing else.
 * That thread is the process's only event loop, like Redis' ae.c: handler callbacks run on it
 * and must not block, and work that blocks (model steps, tokenization of huge prompts, disk)
 * goes to other threads through queues.
 *
 * A server keeps `accept_depth` grpc_server_request_call operations outstanding; each one is a
 * pre-allocated ts_rpc_call. When a call arrives its accept op completes, the server requests
 * another one, looks the method path up in its table (unknown → UNIMPLEMENTED) and starts two
 * batches on the call: RECV_CLOSE_ON_SERVER, which completes exactly once when the call is over
 * (with cancelled = 1 when the client cancelled, its deadline passed or the connection died),
 * and RECV_MESSAGE for the request. Each completed receive is handed to on_message; for bidi
 * streams the next RECV_MESSAGE is started afterwards, so there is at most one receive
 * outstanding, as gRPC requires.
 *
 * Sending. gRPC also allows only one SEND_MESSAGE outstanding per call, while the coordinator's
 * engine threads produce tokens whenever they like. So each call has a send queue: the thread
 * that calls ts_rpc_call_send appends to it and, if no send batch is in flight, starts one
 * itself (grpc_call_start_batch may be called from any thread as long as batches of one call
 * are serialised, which the per-call mutex does); the completion of a send, on the loop thread,
 * starts the next. The status (ts_rpc_call_finish) waits behind the queued messages and rides in
 * the same batch as the last one. The queue is bounded in messages and bytes; a full queue makes
 * ts_rpc_call_send return TS_E_EXHAUSTED at once and arms on_writable, called when the queue is
 * half empty again. Together with HTTP/2 flow control this bounds what a slow client can make
 * the server hold, and the producer decides what to do (wait, or abort the call).
 *
 * Lifetime. A ts_rpc_call is reference-counted: the server holds one reference from accept until
 * the call is over and every batch on it has completed; then it drops the grpc_call at once
 * ("release") — so a user holding a reference for a long time does not keep gRPC resources or
 * the server's shutdown waiting — and unlinks the call from the server. User references keep
 * only the small wrapper alive; every operation on an ended call returns TS_E_CANCELLED. A call
 * never touches its server after release, which is why the wrapper may outlive the server.
 *
 * Cancellation reaches the handler once: RECV_CLOSE_ON_SERVER completes exactly once per call,
 * and its completion sets `done`, drops unsent messages and calls on_done. Receives or sends that
 * complete later (they fail) deliver nothing to the handler.
 *
 * Shutdown follows NOTES.md: grpc_server_shutdown_and_notify (no new calls; calls in progress go
 * on), a grace period, then every remaining call is finished with UNAVAILABLE by us (a clean,
 * explained status for the client), then grpc_server_cancel_all_calls for clients that do not
 * even let that through, then waiting for the notification and for every call to be released,
 * and only then grpc_server_destroy. The completion queue belongs to the process loop and is
 * shut down when its last user releases it.
 *
 * Locks: server->mu (state, live-call list, counters) may be taken before call->mu, never after.
 * No callback into user code runs with either lock held.
 */
#include "rpc/rpc_server.h"

#include "common/clock.h"
#include "common/error.h"
#include "common/log.h"
#include "rpc/rpc_loop.h"

#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { SERVER_CREATED, SERVER_RUNNING, SERVER_SHUTTING_DOWN, SERVER_STOPPED };

typedef struct method_entry {
    char *path;
    size_t path_len;
    ts_rpc_method m;
} method_entry;

struct ts_rpc_server {
    ts_rpc_server_options opt;
    char *address;
    grpc_completion_queue *cq;
    grpc_server *server;
    grpc_server_credentials *creds; /* insecure, or SSL with the options' certificate */
    method_entry *methods;
    int n_methods;
    int port;

    pthread_mutex_t mu;
    pthread_cond_t cond;
    int state;
    int n_accepting;       /* request_call operations outstanding */
    int n_live;            /* accepted calls not yet released */
    ts_rpc_call *live;     /* list of those calls */
    ts_rpc_op shutdown_op; /* grpc_server_shutdown_and_notify's tag */
    int shutdown_notified;
};

struct ts_rpc_call {
    ts_rpc_op accept_op, recv_op, send_op, close_op;
    atomic_int refs;
    pthread_mutex_t mu;

    /* Fixed once dispatched. */
    ts_rpc_server *server; /* NULL after release */
    const method_entry *method;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array request_md;
    char *method_name;
    char *peer;
    int64_t deadline_ns;
    size_t max_send_bytes;
    int max_queued_messages;
    size_t max_queued_bytes;
    void *data;

    /* Receiving (loop thread only). */
    grpc_byte_buffer *recv_buf;
    int n_received;

    /* Sending (under mu). */
    ts_rpc_queue queue;        /* messages not yet handed to gRPC */
    grpc_byte_buffer *writing; /* the message of the batch in flight */
    size_t writing_bytes;
    int send_busy; /* a send batch (message and/or status) is in flight */
    int n_sent;
    int initial_md_sent;
    int finish_requested, status_sent, status_code;
    grpc_slice status_details;
    int want_writable;

    /* State (under mu). */
    int client_cancelled; /* RECV_CLOSE_ON_SERVER's out-argument */
    int dispatched, started, done, released;
    int n_ops; /* batches in flight */
    ts_rpc_call *prev, *next;
};

static void on_accept_complete(ts_rpc_op *op, int success);
static void on_recv_complete(ts_rpc_op *op, int success);
static void on_send_complete(ts_rpc_op *op, int success);
static void on_close_complete(ts_rpc_op *op, int success);
static void on_shutdown_complete(ts_rpc_op *op, int success);

/* ---- call objects ------------------------------------------------------------------------ */

static ts_rpc_call *call_new(ts_rpc_server *s) {
    ts_rpc_call *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    atomic_init(&c->refs, 1); /* the server's reference */
    pthread_mutex_init(&c->mu, NULL);
    c->accept_op.complete = on_accept_complete;
    c->recv_op.complete = on_recv_complete;
    c->send_op.complete = on_send_complete;
    c->close_op.complete = on_close_complete;
    c->server = s;
    c->max_send_bytes = s->opt.max_send_bytes;
    c->max_queued_messages = s->opt.max_queued_messages;
    c->max_queued_bytes = s->opt.max_queued_bytes;
    c->deadline_ns = INT64_MAX;
    c->status_details = grpc_empty_slice();
    grpc_call_details_init(&c->details);
    grpc_metadata_array_init(&c->request_md);
    return c;
}

static void call_free(ts_rpc_call *c) {
    if (c->call) grpc_call_unref(c->call);
    grpc_call_details_destroy(&c->details);
    grpc_metadata_array_destroy(&c->request_md);
    if (c->recv_buf) grpc_byte_buffer_destroy(c->recv_buf);
    if (c->writing) grpc_byte_buffer_destroy(c->writing);
    ts_rpc_queue_free(&c->queue);
    grpc_slice_unref(c->status_details);
    pthread_mutex_destroy(&c->mu);
    free(c->method_name);
    free(c->peer);
    free(c);
}

void ts_rpc_call_ref(ts_rpc_call *c) {
    atomic_fetch_add(&c->refs, 1);
}

void ts_rpc_call_unref(ts_rpc_call *c) {
    if (c && atomic_fetch_sub(&c->refs, 1) == 1) call_free(c);
}

/* A batch failed to start: a broken invariant in this file or a gRPC misuse. Log it and make
 * the call end, so that its close op completes and the handler hears of it. */
static void call_batch_failed(ts_rpc_call *c, const char *what, grpc_call_error e) {
    TS_ERROR("rpc: %s: cannot start %s batch (grpc_call_error %d)",
             c->method_name ? c->method_name : "?", what, (int)e);
    grpc_call_cancel_with_status(c->call, GRPC_STATUS_INTERNAL, "server error", NULL);
}

/* Drops the gRPC side of a call that has ended and whose batches have all completed. */
static void call_maybe_release(ts_rpc_call *c) {
    pthread_mutex_lock(&c->mu);
    int release = c->done && c->n_ops == 0 && !c->released;
    grpc_call *gc = NULL;
    ts_rpc_server *s = c->server;
    if (release) {
        c->released = 1;
        gc = c->call;
        c->call = NULL;
        c->server = NULL;
        ts_rpc_queue_clear(&c->queue);
    }
    pthread_mutex_unlock(&c->mu);
    if (!release) return;
    grpc_call_unref(gc);

    pthread_mutex_lock(&s->mu);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->live = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
    s->n_live--;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu); /* s may be destroyed from here on */
    ts_rpc_call_unref(c);
}

/* Starts the next send batch if there is something to send. Caller holds c->mu, !send_busy. */
static void call_start_send_locked(ts_rpc_call *c) {
    if (c->done || c->send_busy) return;
    size_t size = 0;
    grpc_byte_buffer *bb = ts_rpc_queue_pop(&c->queue, &size);
    int with_status = c->finish_requested && !c->status_sent && c->queue.count == 0;
    if (!bb && !with_status) return;

    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (!c->initial_md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->initial_md_sent = 1;
    }
    if (bb) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = bb;
        c->writing = bb;
        c->writing_bytes = size;
    }
    if (with_status) {
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = (grpc_status_code)c->status_code;
        ops[n++].data.send_status_from_server.status_details = &c->status_details;
        c->status_sent = 1;
    }
    c->send_busy = 1;
    c->n_ops++;
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, &c->send_op, NULL);
    if (e != GRPC_CALL_OK) {
        c->send_busy = 0;
        c->n_ops--;
        call_batch_failed(c, "send", e);
    }
}

static void call_start_recv_locked(ts_rpc_call *c) {
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_buf;
    c->n_ops++;
    grpc_call_error e = grpc_call_start_batch(c->call, &op, 1, &c->recv_op, NULL);
    if (e != GRPC_CALL_OK) {
        c->n_ops--;
        call_batch_failed(c, "receive", e);
    }
}

static int call_below_low_water(const ts_rpc_call *c) {
    int n = c->queue.count + (c->writing != NULL);
    size_t bytes = c->queue.bytes + c->writing_bytes;
    return n <= c->max_queued_messages / 2 && bytes <= c->max_queued_bytes / 2;
}

/* ---- loop-thread events of a call ------------------------------------------------------------ */

static void on_recv_complete(ts_rpc_op *op, int success) {
    ts_rpc_call *c = TS_RPC_CONTAINER_OF(op, ts_rpc_call, recv_op);
    pthread_mutex_lock(&c->mu);
    c->n_ops--;
    grpc_byte_buffer *bb = c->recv_buf;
    c->recv_buf = NULL;
    int deliver = !c->done && success;
    pthread_mutex_unlock(&c->mu);

    const ts_rpc_method *m = &c->method->m;
    if (deliver && bb) {
        grpc_slice slice = ts_rpc_buffer_to_slice(bb);
        grpc_byte_buffer_destroy(bb);
        bb = NULL;
        if (c->n_received++ == 0 && m->kind != TS_RPC_BIDI_STREAM) {
            pthread_mutex_lock(&c->mu);
            c->started = 1;
            pthread_mutex_unlock(&c->mu);
            if (m->on_start) m->on_start(c, m->arg);
        }
        m->on_message(c, GRPC_SLICE_START_PTR(slice), GRPC_SLICE_LENGTH(slice), m->arg);
        grpc_slice_unref(slice);
        if (m->kind == TS_RPC_BIDI_STREAM) {
            pthread_mutex_lock(&c->mu);
            if (!c->done && !c->finish_requested) call_start_recv_locked(c);
            pthread_mutex_unlock(&c->mu);
        }
    } else if (deliver) { /* the client closed its side */
        if (m->kind != TS_RPC_BIDI_STREAM && c->n_received == 0)
            ts_rpc_call_finish(c, TS_RPC_INVALID_ARGUMENT, "the request message is missing");
        else if (m->kind == TS_RPC_BIDI_STREAM && m->on_half_close)
            m->on_half_close(c, m->arg);
    }
    if (bb) grpc_byte_buffer_destroy(bb);
    call_maybe_release(c);
}

static void on_send_complete(ts_rpc_op *op, int success) {
    ts_rpc_call *c = TS_RPC_CONTAINER_OF(op, ts_rpc_call, send_op);
    pthread_mutex_lock(&c->mu);
    c->n_ops--;
    c->send_busy = 0;
    if (c->writing) grpc_byte_buffer_destroy(c->writing);
    c->writing = NULL;
    c->writing_bytes = 0;
    if (!success)
        ts_rpc_queue_clear(&c->queue); /* the call is broken; its close op follows */
    else
        call_start_send_locked(c);
    int writable =
        c->want_writable && !c->done && !c->finish_requested && success && call_below_low_water(c);
    if (writable) c->want_writable = 0;
    pthread_mutex_unlock(&c->mu);
    if (writable && c->method->m.on_writable) c->method->m.on_writable(c, c->method->m.arg);
    call_maybe_release(c);
}

static void on_close_complete(ts_rpc_op *op, int success) {
    ts_rpc_call *c = TS_RPC_CONTAINER_OF(op, ts_rpc_call, close_op);
    pthread_mutex_lock(&c->mu);
    c->n_ops--;
    c->done = 1;
    c->want_writable = 0;
    ts_rpc_queue_clear(&c->queue);
    int cancelled = c->client_cancelled || !success;
    int started = c->started;
    pthread_mutex_unlock(&c->mu);
    if (started && c->method->m.on_done) c->method->m.on_done(c, cancelled, c->method->m.arg);
    call_maybe_release(c);
}

/* ---- accepting calls --------------------------------------------------------------------- */

static const method_entry *server_find(const ts_rpc_server *s, grpc_slice path) {
    size_t len = GRPC_SLICE_LENGTH(path);
    for (int i = 0; i < s->n_methods; i++)
        if (s->methods[i].path_len == len &&
            memcmp(s->methods[i].path, GRPC_SLICE_START_PTR(path), len) == 0)
            return &s->methods[i];
    return NULL;
}

/* Requests one more call from gRPC. Caller holds s->mu. */
static int server_request_call_locked(ts_rpc_server *s) {
    ts_rpc_call *c = call_new(s);
    if (!c) return ts_error_set(TS_E_NOMEM, "rpc: out of memory for a call");
    grpc_call_error e = grpc_server_request_call(s->server, &c->call, &c->details, &c->request_md,
                                                 s->cq, s->cq, &c->accept_op);
    if (e != GRPC_CALL_OK) {
        call_free(c);
        return ts_error_set(TS_E_INTERNAL, "rpc: grpc_server_request_call failed (%d)", (int)e);
    }
    s->n_accepting++;
    return 0;
}

static int64_t deadline_to_ns(gpr_timespec deadline) {
    gpr_timespec d = gpr_convert_clock_type(deadline, GPR_CLOCK_MONOTONIC);
    if (gpr_time_cmp(d, gpr_inf_future(GPR_CLOCK_MONOTONIC)) >= 0) return INT64_MAX;
    gpr_timespec left = gpr_time_sub(d, gpr_now(GPR_CLOCK_MONOTONIC));
    return ts_now_ns() + (int64_t)left.tv_sec * 1000000000 + left.tv_nsec;
}

/* The method of calls to unknown paths: no callbacks. */
static const method_entry no_method;

/* A call arrived: start its close and first receive batches and hand it to its handler. */
static void call_dispatch(ts_rpc_call *c) {
    ts_rpc_server *s = c->server;
    const method_entry *method = server_find(s, c->details.method);
    c->method = method ? method : &no_method;
    size_t len = GRPC_SLICE_LENGTH(c->details.method);
    c->method_name = malloc(len + 1);
    if (c->method_name) {
        memcpy(c->method_name, GRPC_SLICE_START_PTR(c->details.method), len);
        c->method_name[len] = '\0';
    }
    char *peer = grpc_call_get_peer(c->call);
    c->peer = peer ? strdup(peer) : NULL;
    gpr_free(peer);
    c->deadline_ns = deadline_to_ns(c->details.deadline);
    /* Credentials before anything else: a refused call never reaches its handler. */
    int refused = 0;
    char why[300] = "";
    if (method && c->method_name && c->peer && s->opt.authorize) {
        int rc = s->opt.authorize(c, s->opt.authorize_arg);
        if (rc) {
            refused = ts_rpc_status_from_error(rc);
            snprintf(why, sizeof why, "%s", ts_error_message());
        }
    }

    pthread_mutex_lock(&c->mu);
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->client_cancelled;
    c->n_ops++;
    grpc_call_error e = grpc_call_start_batch(c->call, &op, 1, &c->close_op, NULL);
    TS_ASSERT(e == GRPC_CALL_OK); /* the first batch on a fresh call */
    c->dispatched = 1;
    if (!method || !c->method_name || !c->peer || refused) {
        char msg[300];
        if (!c->method_name || !c->peer)
            snprintf(msg, sizeof msg, "server out of memory");
        else if (refused)
            snprintf(msg, sizeof msg, "%s", why);
        else
            snprintf(msg, sizeof msg, "method %.200s is not implemented by this server",
                     c->method_name);
        c->finish_requested = 1;
        c->status_code = !c->method_name || !c->peer ? GRPC_STATUS_RESOURCE_EXHAUSTED
                         : refused                   ? refused
                                                     : GRPC_STATUS_UNIMPLEMENTED;
        c->status_details = grpc_slice_from_copied_string(msg);
        call_start_send_locked(c);
        pthread_mutex_unlock(&c->mu);
        return;
    }
    call_start_recv_locked(c);
    int bidi = c->method->m.kind == TS_RPC_BIDI_STREAM;
    if (bidi) c->started = 1;
    pthread_mutex_unlock(&c->mu);
    if (bidi && c->method->m.on_start) c->method->m.on_start(c, c->method->m.arg);
}

static void on_accept_complete(ts_rpc_op *op, int success) {
    ts_rpc_call *c = TS_RPC_CONTAINER_OF(op, ts_rpc_call, accept_op);
    ts_rpc_server *s = c->server;
    pthread_mutex_lock(&s->mu);
    s->n_accepting--;
    if (!success) { /* the server is shutting down */
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->mu);
        call_free(c);
        return;
    }
    if (s->state == SERVER_RUNNING && server_request_call_locked(s) != 0)
        TS_ERROR("rpc: cannot accept more calls: %s", ts_error_message());
    c->next = s->live;
    if (s->live) s->live->prev = c;
    s->live = c;
    s->n_live++;
    pthread_mutex_unlock(&s->mu);
    call_dispatch(c);
}

static void on_shutdown_complete(ts_rpc_op *op, int success) {
    ts_rpc_server *s = TS_RPC_CONTAINER_OF(op, ts_rpc_server, shutdown_op);
    pthread_mutex_lock(&s->mu);
    s->shutdown_notified = 1;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

/* ---- server lifecycle ---------------------------------------------------------------------- */

void ts_rpc_server_options_default(ts_rpc_server_options *o) {
    memset(o, 0, sizeof *o);
    o->address = "0.0.0.0:0";
    o->max_recv_bytes = 4u << 20;
    o->max_send_bytes = 4u << 20;
    o->max_queued_messages = 1024;
    o->max_queued_bytes = 4u << 20;
    o->keepalive_time_ms = 5000;
    o->keepalive_timeout_ms = 5000;
    o->accept_depth = 32;
}

int ts_rpc_server_create(const ts_rpc_server_options *o, ts_rpc_server **out) {
    *out = NULL;
    if (!o->address || !o->address[0])
        return ts_error_set(TS_E_INVALID, "rpc server: no listen address");
    if (o->max_recv_bytes == 0 || o->max_recv_bytes > INT32_MAX || o->max_send_bytes == 0 ||
        o->max_send_bytes > INT32_MAX)
        return ts_error_set(TS_E_INVALID, "rpc server: message size limits must be 1..%d bytes",
                            INT32_MAX);
    if (o->max_queued_messages < 1 || o->max_queued_bytes == 0 || o->accept_depth < 1 ||
        o->keepalive_time_ms < 1 || o->keepalive_timeout_ms < 1 || o->max_concurrent_streams < 0)
        return ts_error_set(TS_E_INVALID, "rpc server: queue, accept and keepalive options must "
                                          "be positive");
    ts_rpc_server *s = calloc(1, sizeof *s);
    if (!s) return ts_error_set(TS_E_NOMEM, "rpc server: out of memory");
    s->opt = *o;
    s->address = strdup(o->address);
    s->opt.address = s->address;
    if (!s->address) {
        free(s);
        return ts_error_set(TS_E_NOMEM, "rpc server: out of memory");
    }
    int rc = ts_rpc_loop_acquire(&s->cq);
    if (rc != 0) {
        free(s->address);
        free(s);
        return rc;
    }
    if (o->tls_cert_pem) { /* gRPC copies the PEM text */
        grpc_ssl_pem_key_cert_pair pair = {o->tls_key_pem, o->tls_cert_pem};
        s->creds = grpc_ssl_server_credentials_create_ex(
            NULL, &pair, 1, GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE, NULL);
    } else {
        s->creds = grpc_insecure_server_credentials_create();
    }
    s->opt.tls_cert_pem = s->opt.tls_key_pem = NULL;
    pthread_mutex_init(&s->mu, NULL);
    ts_rpc_cond_init(&s->cond);
    s->shutdown_op.complete = on_shutdown_complete;
    s->state = SERVER_CREATED;
    *out = s;
    return 0;
}

int ts_rpc_server_add_method(ts_rpc_server *s, const char *path, const ts_rpc_method *m) {
    if (s->state != SERVER_CREATED)
        return ts_error_set(TS_E_INVALID, "rpc server: %s: methods are added before start", path);
    if (!path || path[0] != '/' || !strchr(path + 1, '/') || !m->on_message ||
        (unsigned)m->kind > TS_RPC_BIDI_STREAM)
        return ts_error_set(TS_E_INVALID,
                            "rpc server: %s: a method needs a path "
                            "\"/package.Service/Method\", a kind and on_message",
                            path ? path : "(null)");
    for (int i = 0; i < s->n_methods; i++)
        if (strcmp(s->methods[i].path, path) == 0)
            return ts_error_set(TS_E_INVALID, "rpc server: %s registered twice", path);
    method_entry *grown = realloc(s->methods, (size_t)(s->n_methods + 1) * sizeof *grown);
    if (!grown) return ts_error_set(TS_E_NOMEM, "rpc server: out of memory");
    s->methods = grown;
    method_entry *e = &s->methods[s->n_methods];
    e->path = strdup(path);
    if (!e->path) return ts_error_set(TS_E_NOMEM, "rpc server: out of memory");
    e->path_len = strlen(path);
    e->m = *m;
    s->n_methods++;
    return 0;
}

int ts_rpc_server_start(ts_rpc_server *s) {
    if (s->state != SERVER_CREATED)
        return ts_error_set(TS_E_INVALID, "rpc server: already started");
    const ts_rpc_server_options *o = &s->opt;
    ts_rpc_args args;
    ts_rpc_args_init(&args);
    ts_rpc_args_common(&args, o->max_recv_bytes, o->max_send_bytes, o->keepalive_time_ms,
                       o->keepalive_timeout_ms);
    /* Our clients send keepalive pings every few seconds also on quiet connections; gRPC's
     * ping-abuse policy (by default at most one ping per 5 minutes while the server sends no
     * data) would answer GOAWAY "too_many_pings" and fail their newer streams. Pings are
     * cheap: tolerate them. */
    ts_rpc_args_int(&args, GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
    ts_rpc_args_int(&args, GRPC_ARG_ALLOW_REUSEPORT, 0); /* a busy port is an error */
    if (o->max_concurrent_streams > 0)
        ts_rpc_args_int(&args, GRPC_ARG_MAX_CONCURRENT_STREAMS, o->max_concurrent_streams);

    s->server = grpc_server_create(&args.set, NULL);
    grpc_server_register_completion_queue(s->server, s->cq, NULL);
    s->port = grpc_server_add_http2_port(s->server, s->address, s->creds);
    if (s->port == 0) {
        grpc_server_destroy(s->server); /* never started and no listener: allowed */
        s->server = NULL;
        return ts_error_set(TS_E_UNAVAILABLE,
                            "rpc server: cannot bind %s (address in use or "
                            "not local?)",
                            s->address);
    }
    grpc_server_start(s->server);
    pthread_mutex_lock(&s->mu);
    s->state = SERVER_RUNNING;
    int rc = 0;
    for (int i = 0; i < o->accept_depth && rc == 0; i++)
        rc = server_request_call_locked(s);
    pthread_mutex_unlock(&s->mu);
    if (rc != 0 && s->n_accepting == 0) {
        ts_rpc_server_shutdown(s, 0);
        return ts_error_wrap(rc, "rpc server: %s", s->address);
    }
    return 0;
}

int ts_rpc_server_port(const ts_rpc_server *s) {
    return s->state == SERVER_CREATED ? 0 : s->port;
}

int ts_rpc_server_active_calls(ts_rpc_server *s) {
    pthread_mutex_lock(&s->mu);
    int n = s->n_live;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static int server_drained_locked(const ts_rpc_server *s) {
    return s->shutdown_notified && s->n_live == 0 && s->n_accepting == 0;
}

/* Waits on s->cond until drained or `until_ns` (INT64_MAX: no limit). Caller holds s->mu. */
static int server_wait_drained_locked(ts_rpc_server *s, int64_t until_ns) {
    while (!server_drained_locked(s))
        if (ts_rpc_cond_wait_until(&s->cond, &s->mu, until_ns) && !server_drained_locked(s))
            return 0;
    return 1;
}

void ts_rpc_server_shutdown(ts_rpc_server *s, int grace_ms) {
    TS_ASSERT(!ts_rpc_loop_on_thread());
    pthread_mutex_lock(&s->mu);
    if (s->state == SERVER_CREATED || s->state == SERVER_STOPPED) {
        s->state = SERVER_STOPPED;
        pthread_mutex_unlock(&s->mu);
        return;
    }
    if (s->state == SERVER_RUNNING) {
        s->state = SERVER_SHUTTING_DOWN;
        grpc_server_shutdown_and_notify(s->server, s->cq, &s->shutdown_op);
    }
    int64_t start = ts_now_ns();
    if (!server_wait_drained_locked(s, start + (int64_t)(grace_ms > 0 ? grace_ms : 0) * 1000000)) {
        TS_INFO("rpc server: grace period over, ending %d call(s) with UNAVAILABLE", s->n_live);
        for (ts_rpc_call *c = s->live; c; c = c->next)
            if (c->dispatched) ts_rpc_call_abort(c, TS_RPC_UNAVAILABLE, "server shutting down");
        if (!server_wait_drained_locked(s, ts_now_ns() + 1000000000LL)) {
            TS_WARN("rpc server: %d call(s) still open, cancelling them", s->n_live);
            grpc_server_cancel_all_calls(s->server);
            while (!server_wait_drained_locked(s, ts_now_ns() + 5000000000LL))
                TS_WARN("rpc server: still waiting for %d call(s) to end", s->n_live);
        }
    }
    grpc_server_destroy(s->server);
    s->server = NULL;
    s->state = SERVER_STOPPED;
    pthread_mutex_unlock(&s->mu);
}

void ts_rpc_server_destroy(ts_rpc_server *s) {
    if (!s) return;
    ts_rpc_server_shutdown(s, 0);
    grpc_server_credentials_release(s->creds);
    ts_rpc_loop_release();
    for (int i = 0; i < s->n_methods; i++)
        free(s->methods[i].path);
    free(s->methods);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cond);
    free(s->address);
    free(s);
}

/* ---- calls: any thread ---------------------------------------------------------------------- */

static int call_enqueue(ts_rpc_call *c, grpc_byte_buffer *bb, size_t len) {
    if (len > c->max_send_bytes) {
        grpc_byte_buffer_destroy(bb);
        char msg[160];
        snprintf(msg, sizeof msg, "response message of %zu bytes exceeds the limit of %zu bytes",
                 len, c->max_send_bytes);
        ts_rpc_call_finish(c, TS_RPC_RESOURCE_EXHAUSTED, msg);
        return ts_error_set(TS_E_INVALID, "%s: %s", c->method_name, msg);
    }
    pthread_mutex_lock(&c->mu);
    int rc = 0;
    int n = c->queue.count + (c->writing != NULL);
    size_t bytes = c->queue.bytes + c->writing_bytes;
    if (c->done)
        rc = TS_E_CANCELLED;
    else if (c->finish_requested || (c->method->m.kind == TS_RPC_UNARY && c->n_sent > 0))
        rc = TS_E_INVALID;
    else if (n >= c->max_queued_messages || (n > 0 && bytes + len > c->max_queued_bytes)) {
        c->want_writable = 1;
        rc = TS_E_EXHAUSTED;
    } else if ((rc = ts_rpc_queue_push(&c->queue, bb, len)) == 0) {
        bb = NULL;
        c->n_sent++;
        call_start_send_locked(c);
    }
    pthread_mutex_unlock(&c->mu);
    if (bb) grpc_byte_buffer_destroy(bb);
    switch (rc) {
    case 0: return 0;
    case TS_E_CANCELLED:
        return ts_error_set(rc,
                            "%s: the call has ended (cancelled, deadline passed, client gone "
                            "or finished)",
                            c->method_name);
    case TS_E_INVALID:
        return ts_error_set(rc,
                            "%s: send after the call was finished (or a second response to "
                            "a unary call)",
                            c->method_name);
    case TS_E_EXHAUSTED:
        return ts_error_set(rc,
                            "%s: send queue full (%d messages, %zu bytes): the client reads "
                            "too slowly",
                            c->method_name, n, bytes);
    default: return rc;
    }
}

int ts_rpc_call_send(ts_rpc_call *c, const void *data, size_t len) {
    return call_enqueue(c, ts_rpc_buffer_from_bytes(data, len), len);
}

int ts_rpc_call_send_pb(ts_rpc_call *c, const struct ProtobufCMessage *msg) {
    size_t len;
    grpc_byte_buffer *bb = ts_rpc_buffer_from_pb(msg, &len);
    return call_enqueue(c, bb, len);
}

int ts_rpc_call_finish(ts_rpc_call *c, int status_code, const char *message) {
    pthread_mutex_lock(&c->mu);
    int rc = 0;
    if (c->done)
        rc = TS_E_CANCELLED;
    else if (c->finish_requested)
        rc = TS_E_INVALID;
    else {
        c->finish_requested = 1;
        c->want_writable = 0;
        c->status_code = status_code;
        grpc_slice_unref(c->status_details);
        c->status_details = grpc_slice_from_copied_string(message ? message : "");
        call_start_send_locked(c);
    }
    pthread_mutex_unlock(&c->mu);
    if (rc == TS_E_CANCELLED) return ts_error_set(rc, "%s: the call has ended", c->method_name);
    if (rc == TS_E_INVALID) return ts_error_set(rc, "%s: finished twice", c->method_name);
    return 0;
}

int ts_rpc_call_fail(ts_rpc_call *c, int ts_code, const char *message) {
    return ts_rpc_call_finish(c, ts_rpc_status_from_error(ts_code),
                              message ? message : ts_error_message());
}

void ts_rpc_call_abort(ts_rpc_call *c, int status_code, const char *message) {
    pthread_mutex_lock(&c->mu);
    if (!c->done && !c->status_sent) {
        ts_rpc_queue_clear(&c->queue);
        c->finish_requested = 1;
        c->want_writable = 0;
        c->status_code = status_code;
        grpc_slice_unref(c->status_details);
        c->status_details = grpc_slice_from_copied_string(message ? message : "");
        call_start_send_locked(c);
    }
    pthread_mutex_unlock(&c->mu);
}

const char *ts_rpc_call_metadata(const ts_rpc_call *c, const char *key, size_t *len) {
    size_t key_len = strlen(key);
    for (size_t i = 0; i < c->request_md.count; i++) {
        const grpc_metadata *md = &c->request_md.metadata[i];
        if (GRPC_SLICE_LENGTH(md->key) == key_len &&
            !memcmp(GRPC_SLICE_START_PTR(md->key), key, key_len)) {
            *len = GRPC_SLICE_LENGTH(md->value);
            return (const char *)GRPC_SLICE_START_PTR(md->value);
        }
    }
    *len = 0;
    return NULL;
}

const char *ts_rpc_call_method(const ts_rpc_call *c) {
    return c->method_name;
}
const char *ts_rpc_call_peer(const ts_rpc_call *c) {
    return c->peer;
}
int64_t ts_rpc_call_deadline_ns(const ts_rpc_call *c) {
    return c->deadline_ns;
}
void ts_rpc_call_set_data(ts_rpc_call *c, void *data) {
    c->data = data;
}
void *ts_rpc_call_data(const ts_rpc_call *c) {
    return c->data;
}

int ts_rpc_call_is_done(ts_rpc_call *c) {
    pthread_mutex_lock(&c->mu);
    int done = c->done;
    pthread_mutex_unlock(&c->mu);
    return done;
}

int ts_rpc_call_queued(ts_rpc_call *c) {
    pthread_mutex_lock(&c->mu);
    int n = c->queue.count + (c->writing != NULL);
    pthread_mutex_unlock(&c->mu);
    return n;
}
