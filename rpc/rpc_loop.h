/*
 * rpc_loop.h — the completion-queue loop of a process (internal to rpc/; users include
 * rpc_server.h and rpc_client.h).
 *
 * One completion queue and one thread per process serve every server and channel: the loop is
 * started by the first ts_rpc_loop_acquire (grpc_init, queue, thread) and stopped by the last
 * ts_rpc_loop_release (queue shutdown, drain, join, grpc_shutdown). Every tag handed to gRPC is a
 * ts_rpc_op embedded in the object that owns the operation; the loop calls op->complete(op,
 * success) on the loop thread, and that function is the only code that runs for the event.
 *
 * gRPC starts threads in grpc_init and forked children that use gRPC hang (see NOTES.md), so a
 * process forks or spawns its helpers before the first acquire.
 */
#ifndef TS_RPC_LOOP_H
#define TS_RPC_LOOP_H

#include <grpc/grpc.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

struct ProtobufCMessage;

typedef struct ts_rpc_op ts_rpc_op;
struct ts_rpc_op {
    /* Runs on the loop thread when the batch tagged with this op completes. */
    void (*complete)(ts_rpc_op *op, int success);
};

#define TS_RPC_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Takes a reference on the process loop, starting it on first use; *cq is its queue.
 * Returns 0 or TS_E_INTERNAL (message set) when gRPC cannot start. Not on the loop thread. */
int ts_rpc_loop_acquire(grpc_completion_queue **cq);

/* Drops a reference; the last one stops the loop. Every operation started on the queue must
 * have completed by then. Must not be called on the loop thread. */
void ts_rpc_loop_release(void);

/* 1 on the loop thread, else 0. Blocking rpc/ calls assert they are not on it. */
int ts_rpc_loop_on_thread(void);

/* A byte buffer holding a copy of data[0..len). Never NULL (gRPC aborts on out-of-memory). */
grpc_byte_buffer *ts_rpc_buffer_from_bytes(const void *data, size_t len);

/* A byte buffer holding the packed message; *len gets its size. */
grpc_byte_buffer *ts_rpc_buffer_from_pb(const struct ProtobufCMessage *msg, size_t *len);

/* The whole content of a received buffer as one slice (unref it when done). */
grpc_slice ts_rpc_buffer_to_slice(grpc_byte_buffer *bb);

/* Absolute deadline `timeout_ms` from now on the monotonic clock; <= 0 means none. */
gpr_timespec ts_rpc_deadline_after_ms(int64_t timeout_ms);

/* A FIFO of byte buffers (send queues, receive read-ahead); zero-initialise it. It grows on
 * demand: the owner enforces its bound before pushing. Not thread-safe: the owner holds its own
 * lock. ts_rpc_queue_free destroys the buffers still queued. */
typedef struct ts_rpc_queue {
    grpc_byte_buffer **items;
    size_t *sizes;
    int cap, head, count;
    size_t bytes; /* sum of the sizes queued */
} ts_rpc_queue;

int ts_rpc_queue_push(ts_rpc_queue *q, grpc_byte_buffer *bb, size_t size); /* 0 or TS_E_NOMEM */
grpc_byte_buffer *ts_rpc_queue_pop(ts_rpc_queue *q, size_t *size);         /* NULL if empty */
void ts_rpc_queue_clear(ts_rpc_queue *q); /* destroys the queued buffers, keeps the memory */
void ts_rpc_queue_free(ts_rpc_queue *q);

/* Condition variables on the monotonic clock, and a wait until an absolute ts_now_ns() time
 * (INT64_MAX: no limit). The wait returns 0 when woken, 1 when the time has passed. */
void ts_rpc_cond_init(pthread_cond_t *cond);
int ts_rpc_cond_wait_until(pthread_cond_t *cond, pthread_mutex_t *mu, int64_t until_ns);

/* The absolute ts_now_ns() time `timeout_ms` from now: < 0 → INT64_MAX, 0 → now. */
int64_t ts_rpc_until_ns(int timeout_ms);

/* Channel arguments: a fixed array filled with integer arguments. */
enum { TS_RPC_MAX_ARGS = 16 };
typedef struct ts_rpc_args {
    grpc_arg arg[TS_RPC_MAX_ARGS];
    grpc_channel_args set;
} ts_rpc_args;

void ts_rpc_args_init(ts_rpc_args *a);
void ts_rpc_args_int(ts_rpc_args *a, const char *key, int value);

/* The arguments every Tessera server and channel sets: message size limits, keepalive (pings on
 * idle connections too, and without waiting for data in between, so a dead peer is found within
 * keepalive_time + keepalive_timeout even on a quiet stream), and fixed flow-control windows
 * (no BDP probing), which keep ping acks from queueing behind seconds of data. */
void ts_rpc_args_common(ts_rpc_args *a, size_t max_recv_bytes, size_t max_send_bytes,
                        int keepalive_time_ms, int keepalive_timeout_ms);

#endif
