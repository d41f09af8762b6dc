/*
 * kv_transfer_recv_impl.h — private to the KV receiver: its state, shared by the API and I/O
 * thread (kv_transfer_recv.c) and the per-connection state machine (kv_transfer_conn.c). See
 * kv_transfer_recv.c for the design and the locking rule: every function here is called with
 * r->lock held, and only the I/O thread touches sockets.
 */
#ifndef TS_NODE_KV_TRANSFER_RECV_IMPL_H
#define TS_NODE_KV_TRANSFER_RECV_IMPL_H

#include "kvx/kv_transfer.h"
#include "kvx/kv_transfer_nccl.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { RECEIVING, COMPLETE, FAILED };
enum { MAX_TOMBSTONES = 256, DRAIN_MS = 2000 };

typedef struct transfer {
    struct transfer *next;
    uint64_t id;
    int state;
    int code; /* FAILED: why */
    char message[TS_KVX_MAX_MESSAGE + 1];
    bool collected; /* FAILED and reported (or dropped): free once no connection refers to it */
    uint32_t n_tokens, n_blocks;
    uint8_t *staging; /* host memory (TCP) or device memory of the receiver's GPU (NCCL) */
    size_t staging_bytes;
    uint16_t transport; /* of its first connection; every other one must match */
    bool *head_covered; /* [own heads] */
    int32_t n_covered;
    int n_conns; /* connections attached */
    int n_ended; /* of which sent all their frames */
    int64_t last_ns;
    int64_t bytes;
} transfer;

/* C_DRAIN: told of a failure and shut for writing; what the sender still sends is read and
 * dropped until it closes (or DRAIN_MS pass), because closing a socket with unread data resets
 * the connection, and some TCP stacks drop received data (the status) on a reset. An accepted
 * NCCL connection drains too, keeping its link until then (kv_transfer_conn.c: kvx_sweep). */
typedef enum { C_HEADER, C_FRAME, C_PAYLOAD, C_ENDED, C_DRAIN } conn_phase;

typedef struct conn {
    struct conn *next;
    int fd;
    conn_phase phase;
    uint8_t head[TS_KVX_HEADER_BYTES]; /* header or frame header being read */
    size_t need, got;
    ts_kvx_header h;
    ts_kvx_frame f;
    transfer *t;
    uint8_t *payload;
    size_t payload_bytes;
    uint8_t *seen;     /* [n_layers][n_blocks] frames received */
    uint32_t n_frames; /* verified block frames */
    /* NCCL: the connection's link; frames whose receives are posted (their checksum slots, in
     * posting order), the sender's checksum and (layer, block) of each; the end frame seen */
    kvx_link *link;
    uint32_t n_posted;
    uint32_t *expect, *slot_frame;
    bool end_seen;
    bool close_now; /* reply (status of t, or reject_*) and close at the next sweep */
    int reject_code;
    char reject_message[TS_KVX_MAX_MESSAGE + 1];
    int64_t last_ns;
    bool peer_closed; /* C_DRAIN: the sender closed its side */
} conn;

struct ts_kvx_receiver {
    /* geometry of this rank (read-only after open) */
    int32_t n_layers, head_dim, block_size, own_head0, own_heads, max_blocks;
    ts_dtype dtype;
    int rank, size;
    size_t head_bytes; /* one head, one block, one pool */
    bool nccl;         /* can serve NCCL transfers (ts_kvx_nccl_supported); if not, why */
    char nccl_why[TS_KVX_MAX_MESSAGE + 1];
    int device; /* the engine's CUDA device */
    ts_kvx_receiver_options opts;
    char endpoint[300];
    int listen_fd;

    pthread_mutex_t lock;
    pthread_cond_t cond; /* a transfer changed state */
    pthread_t thread;
    bool thread_started, stop;
    transfer *transfers;
    conn *conns;
    size_t staging_bytes;
    int64_t transfers_ok, transfers_failed, bytes_received;
};

transfer *kvx_find(ts_kvx_receiver *r, uint64_t id);
/* Frees t's staging; device staging only after closing the links that receive into it. */
void kvx_free_staging(ts_kvx_receiver *r, transfer *t);
/* Frees a connection and what it holds (closes its socket and link). */
void kvx_conn_free(conn *c);
/* NCCL: collects the checksums of landed frames, completes ended connections, fails
 * transfers whose frames arrived corrupted or whose link failed. */
void kvx_nccl_progress(ts_kvx_receiver *r);
/* Fails t: staging freed now; its connections are told and closed at the next sweep. */
void kvx_fail(ts_kvx_receiver *r, transfer *t, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Reads what the socket has; runs the state machine on every complete piece. */
void kvx_on_readable(ts_kvx_receiver *r, conn *c);
/* Replies to and closes the connections that are done; times out idle transfers; frees
 * collected tombstones. */
void kvx_sweep(ts_kvx_receiver *r);
void kvx_accept_all(ts_kvx_receiver *r);

#endif
