/* rpc_loop.c — the process's completion-queue loop and small gRPC helpers; see rpc_loop.h. */
#include "rpc/rpc_loop.h"

#include "common/clock.h"
#include "common/error.h"
#include "common/log.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>
#include <protobuf-c/protobuf-c.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static pthread_mutex_t loop_mu = PTHREAD_MUTEX_INITIALIZER;
static int loop_refs;
static grpc_completion_queue *loop_cq;
static pthread_t loop_thread;
static _Thread_local int loop_is_this_thread;

static void *loop_main(void *arg) {
    grpc_completion_queue *cq = arg;
    loop_is_this_thread = 1;
    pthread_setname_np(pthread_self(), "ts-rpc-loop");
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue; /* GRPC_QUEUE_TIMEOUT cannot happen */
        ts_rpc_op *op = ev.tag;
        op->complete(op, ev.success);
    }
    return NULL;
}

int ts_rpc_loop_acquire(grpc_completion_queue **cq) {
    TS_ASSERT(!loop_is_this_thread);
    pthread_mutex_lock(&loop_mu);
    if (loop_refs == 0) {
        grpc_init();
        loop_cq = grpc_completion_queue_create_for_next(NULL);
        int rc = pthread_create(&loop_thread, NULL, loop_main, loop_cq);
        if (rc != 0) {
            grpc_completion_queue_shutdown(loop_cq);
            grpc_completion_queue_destroy(loop_cq);
            loop_cq = NULL;
            grpc_shutdown();
            pthread_mutex_unlock(&loop_mu);
            return ts_error_set(TS_E_INTERNAL, "rpc: cannot start the completion-queue thread: %s",
                                strerror(rc));
        }
    }
    loop_refs++;
    *cq = loop_cq;
    pthread_mutex_unlock(&loop_mu);
    return 0;
}

void ts_rpc_loop_release(void) {
    TS_ASSERT(!loop_is_this_thread);
    pthread_mutex_lock(&loop_mu);
    TS_ASSERT(loop_refs > 0);
    if (--loop_refs == 0) {
        /* The order of NOTES.md: shut the queue down, drain it (the thread does), destroy it,
         * then release gRPC. */
        grpc_completion_queue_shutdown(loop_cq);
        pthread_join(loop_thread, NULL);
        grpc_completion_queue_destroy(loop_cq);
        loop_cq = NULL;
        grpc_shutdown();
    }
    pthread_mutex_unlock(&loop_mu);
}

int ts_rpc_loop_on_thread(void) {
    return loop_is_this_thread;
}

grpc_byte_buffer *ts_rpc_buffer_from_bytes(const void *data, size_t len) {
    grpc_slice slice = grpc_slice_malloc(len);
    if (len) memcpy(GRPC_SLICE_START_PTR(slice), data, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    return bb;
}

grpc_byte_buffer *ts_rpc_buffer_from_pb(const struct ProtobufCMessage *msg, size_t *len) {
    size_t n = protobuf_c_message_get_packed_size(msg);
    grpc_slice slice = grpc_slice_malloc(n);
    size_t packed = protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(slice));
    TS_ASSERT(packed == n);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    *len = n;
    return bb;
}

grpc_slice ts_rpc_buffer_to_slice(grpc_byte_buffer *bb) {
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, bb)) return grpc_empty_slice();
    grpc_slice s = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    return s;
}

gpr_timespec ts_rpc_deadline_after_ms(int64_t timeout_ms) {
    if (timeout_ms <= 0) return gpr_inf_future(GPR_CLOCK_MONOTONIC);
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                        gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
}

void ts_rpc_args_init(ts_rpc_args *a) {
    memset(a, 0, sizeof *a);
    a->set.args = a->arg;
}

void ts_rpc_args_int(ts_rpc_args *a, const char *key, int value) {
    TS_ASSERT(a->set.num_args < TS_RPC_MAX_ARGS);
    grpc_arg *g = &a->arg[a->set.num_args++];
    g->type = GRPC_ARG_INTEGER;
    g->key = (char *)key;
    g->value.integer = value;
}

int ts_rpc_queue_push(ts_rpc_queue *q, grpc_byte_buffer *bb, size_t size) {
    if (q->count == q->cap) {
        int cap = q->cap ? 2 * q->cap : 8;
        grpc_byte_buffer **items = malloc((size_t)cap * sizeof *items);
        size_t *sizes = malloc((size_t)cap * sizeof *sizes);
        if (!items || !sizes) {
            free(items);
            free(sizes);
            return ts_error_set(TS_E_NOMEM, "rpc: out of memory for a queue of %d messages", cap);
        }
        for (int i = 0; i < q->count; i++) {
            items[i] = q->items[(q->head + i) % q->cap];
            sizes[i] = q->sizes[(q->head + i) % q->cap];
        }
        free(q->items);
        free(q->sizes);
        q->items = items;
        q->sizes = sizes;
        q->cap = cap;
        q->head = 0;
    }
    int tail = (q->head + q->count) % q->cap;
    q->items[tail] = bb;
    q->sizes[tail] = size;
    q->count++;
    q->bytes += size;
    return 0;
}

grpc_byte_buffer *ts_rpc_queue_pop(ts_rpc_queue *q, size_t *size) {
    if (q->count == 0) return NULL;
    grpc_byte_buffer *bb = q->items[q->head];
    if (size) *size = q->sizes[q->head];
    q->bytes -= q->sizes[q->head];
    q->head = (q->head + 1) % q->cap;
    q->count--;
    return bb;
}

void ts_rpc_queue_clear(ts_rpc_queue *q) {
    grpc_byte_buffer *bb;
    while ((bb = ts_rpc_queue_pop(q, NULL)) != NULL)
        grpc_byte_buffer_destroy(bb);
}

void ts_rpc_queue_free(ts_rpc_queue *q) {
    ts_rpc_queue_clear(q);
    free(q->items);
    free(q->sizes);
    memset(q, 0, sizeof *q);
}

void ts_rpc_args_common(ts_rpc_args *a, size_t max_recv_bytes, size_t max_send_bytes,
                        int keepalive_time_ms, int keepalive_timeout_ms) {
    ts_rpc_args_int(a, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, (int)max_recv_bytes);
    ts_rpc_args_int(a, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, (int)max_send_bytes);
    ts_rpc_args_int(a, GRPC_ARG_KEEPALIVE_TIME_MS, keepalive_time_ms);
    ts_rpc_args_int(a, GRPC_ARG_KEEPALIVE_TIMEOUT_MS, keepalive_timeout_ms);
    ts_rpc_args_int(a, GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    ts_rpc_args_int(a, GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    /* No BDP probing: on a busy connection it grows the flow-control windows until seconds of
     * data queue ahead of every ping ack, and keepalive then kills healthy connections
     * (test_saturated_connections_survive_keepalive). Fixed 64 KiB stream windows still move
     * hundreds of MB/s on a LAN-sized delay. */
    ts_rpc_args_int(a, GRPC_ARG_HTTP2_BDP_PROBE, 0);
}

void ts_rpc_cond_init(pthread_cond_t *cond) {
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
}

int ts_rpc_cond_wait_until(pthread_cond_t *cond, pthread_mutex_t *mu, int64_t until_ns) {
    if (until_ns == INT64_MAX) {
        pthread_cond_wait(cond, mu);
        return 0;
    }
    /* ts_now_ns() reads CLOCK_MONOTONIC too, so the absolute time converts directly. */
    if (ts_now_ns() >= until_ns) return 1;
    struct timespec ts = {.tv_sec = (time_t)(until_ns / 1000000000),
                          .tv_nsec = (long)(until_ns % 1000000000)};
    return pthread_cond_timedwait(cond, mu, &ts) != 0;
}

int64_t ts_rpc_until_ns(int timeout_ms) {
    if (timeout_ms < 0) return INT64_MAX;
    return ts_now_ns() + (int64_t)timeout_ms * 1000000;
}
