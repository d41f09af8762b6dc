/*
 * kv_transfer_nccl.h — private to the KV transfer: its NCCL payload path (kv_transfer.h,
 * "Transports"). Built only with CUDA (TESSERA_HAVE_CUDA); the sender and receiver call it only
 * for a transfer whose header says TS_KVX_NCCL, which ts_kvx_nccl_supported guards.
 *
 * A link is one connection's (one route's) 2-rank NCCL communicator with its own CUDA stream:
 * rank 0 the decode rank (it made the unique id), rank 1 the prefill rank. One stream per link
 * on both ends keeps every link's sends and receives in the one order both ends agree on (the
 * frame order of its TCP connection), so links never wait on each other. The communicators are
 * nonblocking (ncclConfig_t.blocking = 0): a call that is still in progress is polled against a
 * deadline, and a link that fails or times out is aborted (ncclCommAbort), which also ends its
 * pending sends or receives on the GPU.
 *
 * Checksums: kvx_sum_launch (kv_checksum.cu) adds the 64-bit sum of ts_kvx_payload_sum's terms
 * over a frame's K and V ranges into a device counter; the host folds it (ts_kvx_sum_fold).
 *
 * Threads: a link is used by one thread at a time — the receiver's I/O thread for its links (or
 * the engine thread inside a receiver call that holds the receiver's lock), the engine thread
 * for a sender's. Every function makes the link's device current for its thread first.
 */
#ifndef TS_NODE_KV_TRANSFER_NCCL_H
#define TS_NODE_KV_TRANSFER_NCCL_H

#include "common/error.h"
#include "node/engine.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { KVX_LINK_ID_BYTES = 128 }; /* NCCL_UNIQUE_ID_BYTES */

typedef struct kvx_link kvx_link;

#if defined(TESSERA_HAVE_CUDA)

/* Receiver: makes the unique id (id_out, to send to the sender) and starts this end's join as
 * rank 0 without waiting (kvx_link_poll_init tells when it is done). n_slots: the block frames
 * the link will receive (checksum slots). */
int kvx_link_accept(int device, uint32_t n_slots, uint8_t id_out[KVX_LINK_ID_BYTES],
                    kvx_link **out);
/* Sender: joins as rank 1 and waits up to timeout_ms for both ends to be in. n_slots: the most
 * block frames one kvx_link_send_blocks call sends. */
int kvx_link_connect(int device, const uint8_t id[KVX_LINK_ID_BYTES], uint32_t n_slots,
                     int timeout_ms, kvx_link **out);
/* 0 when the communicator is ready, 1 while the join is in progress, else the error. */
int kvx_link_poll_init(kvx_link *l);

/* Sender, engine thread: for the sequence blocks block_ids[0 .. n) of layer `layer`, local
 * heads [head0, head0 + n_heads): computes each block's checksum on the backend's stream
 * (after the kernels that wrote the KV), waits for it (sums[i] receives block i's), then posts
 * each block's K and V range as two ncclSend on the link's stream. */
int kvx_link_send_blocks(kvx_link *l, ts_engine *e, int32_t layer, const int32_t *block_ids,
                         int32_t n, int32_t head0, int32_t n_heads, uint32_t *sums);
/* Sender: waits until everything posted on the link is done (the receiver posts its receives as
 * the frame headers arrive), at most timeout_ms, and stops early when failed(user) says the
 * transfer failed meanwhile (TS_E_CANCELLED). */
int kvx_link_drain(kvx_link *l, int timeout_ms, bool (*failed)(void *user), void *user);

/* Receiver: posts the receive of one block frame, `part` bytes into k then `part` into v
 * (device staging), then its checksum into slot `slot` (< n_slots, each used once). */
int kvx_link_recv(kvx_link *l, void *k, void *v, size_t part, uint32_t slot);
/* Receiver, never blocks: 1 when the slots posted so far have landed and been summed (sums
 * then holds every posted slot's folded checksum), 0 while some are in flight, or the link's
 * error (a NCCL failure reported asynchronously). */
int kvx_link_poll_sums(kvx_link *l, const uint32_t **sums);

/* Ends the link: waits for nothing; aborts the communicator (both ends close only after the
 * TCP status decided the transfer, or to stop it) and frees its stream and buffers. NULL is
 * fine. */
void kvx_link_close(kvx_link *l);

/* Device staging of the receiver: allocation on `device`, freeing (after the links that wrote
 * into it are closed), and the install of a complete transfer into the engine's KV blocks on
 * the backend's stream (device to device, all layers, then waits). The staging layout is the
 * receiver's (kv_transfer_recv.c): per layer K then V, each [n_blocks][own heads][block]. */
int kvx_device_alloc(int device, size_t bytes, void **out);
void kvx_device_free(int device, void *p);
int kvx_device_install(ts_engine *e, const void *staging, const int32_t *block_ids,
                       int32_t n_blocks, int32_t n_heads);

/* kv_checksum.cu: adds the sum of ts_kvx_sum_term over k's words (positions 0 ..) and v's
 * (after k's) into *sum (device memory) on `stream`. Returns 0 or the launch's cudaError_t. */
int kvx_sum_launch(const void *k, const void *v, size_t part, unsigned long long *sum,
                   void *stream);

#else
/* A build without CUDA: ts_kvx_nccl_supported refuses every NCCL transfer before any of these
 * could be reached; they exist so that the sender and receiver compile the same code. */
static inline int kvx_nccl_unbuilt(void) {
    return ts_error_set(TS_E_UNSUPPORTED, "the NCCL KV transport is not in this build (no CUDA)");
}
static inline int kvx_link_accept(int device, uint32_t n_slots, uint8_t *id_out, kvx_link **out) {
    *out = NULL;
    return kvx_nccl_unbuilt();
}
static inline int kvx_link_connect(int device, const uint8_t *id, uint32_t n_slots, int timeout_ms,
                                   kvx_link **out) {
    *out = NULL;
    return kvx_nccl_unbuilt();
}
static inline int kvx_link_poll_init(kvx_link *l) {
    return kvx_nccl_unbuilt();
}
static inline int kvx_link_send_blocks(kvx_link *l, ts_engine *e, int32_t layer,
                                       const int32_t *block_ids, int32_t n, int32_t head0,
                                       int32_t n_heads, uint32_t *sums) {
    return kvx_nccl_unbuilt();
}
static inline int kvx_link_drain(kvx_link *l, int timeout_ms, bool (*failed)(void *user),
                                 void *user) {
    return kvx_nccl_unbuilt();
}
static inline int kvx_link_recv(kvx_link *l, void *k, void *v, size_t part, uint32_t slot) {
    return kvx_nccl_unbuilt();
}
static inline int kvx_link_poll_sums(kvx_link *l, const uint32_t **sums) {
    *sums = NULL;
    return kvx_nccl_unbuilt();
}
static inline void kvx_link_close(kvx_link *l) {}
static inline int kvx_device_alloc(int device, size_t bytes, void **out) {
    *out = NULL;
    return kvx_nccl_unbuilt();
}
static inline void kvx_device_free(int device, void *p) {}
static inline int kvx_device_install(ts_engine *e, const void *staging, const int32_t *block_ids,
                                     int32_t n_blocks, int32_t n_heads) {
    return kvx_nccl_unbuilt();
}
#endif

#endif
