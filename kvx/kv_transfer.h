/*
 * kv_transfer.h — moving a prefilled sequence's KV cache from a prefill group to a decode group.
 *
 * Roles. Every rank of a prefill group runs a sender per request; every rank of a decode group
 * runs one receiver (a listening TCP endpoint, "host:port", announced as Register.kv_endpoint).
 * kv_layout.h decides which prefill rank sends which KV heads to which decode rank, so each
 * decode rank receives exactly the heads it owns and no rank ever holds the whole cache.
 *
 *   prefill rank p                                   decode rank d
 *   ts_kvx_sender_open(engine, {request, n_tokens,   ts_kvx_receiver_open(engine, ...)
 *                       decode endpoints,              (I/O thread: accept, verify, stage)
 *                       transport})
 *   per layer l as it finishes (engine layer hook):
 *     ts_kvx_sender_send_layer(l, block table) ───▶   block payloads land in staging
 *   ts_kvx_sender_finish() ◀──────── status ───────   ts_kvx_receiver_wait(request)
 *                                                     ts_kvx_receiver_claim(pool) / _install(ids)
 *
 * Transports. One TCP connection per route is the control channel either way: transfer header,
 * frame headers, end frame and status, with every check, timeout, drop and cancel below. Where
 * the block payloads travel is the sender's choice (ts_kvx_sender_options.transport, carried in
 * the header):
 *   TS_KVX_TCP   after each frame header on the same connection, into host staging; works
 *                between any hosts and any backends.
 *   TS_KVX_NCCL  device to device (kv_transfer_nccl.h): the receiver answers the header with a
 *                NCCL unique id, both ends join a 2-rank NCCL communicator for that connection,
 *                and each block's K and V ranges go by ncclSend from the prefill rank's device
 *                KV blocks into the decode rank's DEVICE staging by ncclRecv. Both ends need
 *                their KV cache on a CUDA device and a build with CUDA; a receiver that cannot
 *                serve it refuses the header with TS_E_UNSUPPORTED and says why.
 *
 * Wire format (TCP, little-endian, version 2). Per connection (one per route of kv_layout.h):
 *   transfer header, 72 bytes: magic "TKVX", version u16, header bytes u16, request id u64,
 *     model fingerprint u64, n_layers, n_tokens, block_size, n_blocks, head_dim, dtype,
 *     kv_head0, n_kv_heads (u32 each; the global head range this connection carries),
 *     src_rank, src_size, dst_rank, dst_size, transport (u16 each; 0 TCP, 1 NCCL), 0 u16,
 *     CRC32C of the bytes before it (u32).
 *   NCCL only, receiver to sender right after the header: link message, magic "TKVN", id bytes
 *     u32 (128), CRC32C of the id, 0, then the ncclUniqueId; the receiver is rank 0, the sender
 *     rank 1. A refused header gets the status below instead.
 *   frames, each a 32-byte header: magic "TKVF", kind (1 block, 2 end), layer, block (index in
 *     the sequence's block table), payload bytes, payload checksum, 0, CRC32C of the 28 bytes
 *     before it; a block frame's payload is that block's K then V for the connection's heads,
 *     [n_kv_heads][block_size][head_dim] each, in the header's dtype. Over TCP the payload
 *     follows the frame header and its checksum is its CRC32C; over NCCL the payload is the
 *     frame's two NCCL messages (K, V) and its checksum is ts_kvx_payload_sum, computed on the
 *     device by both ends (the sender over its KV blocks, the receiver over what landed).
 *     Frames may come in any order (a prefill sends layer l while it computes l + 1); each
 *     (layer, block) exactly once. The end frame carries the number of block frames sent in
 *     its block field.
 *   status, receiver to sender once the whole transfer (all of its connections) is decided:
 *     magic "TKVS", code i32 (0 or a TS_E_* code), message bytes u32, CRC32C of the message,
 *     then the message (at most 255 bytes). The sender learns a failure this way, or by the
 *     connection breaking.
 *
 * Integrity. A transfer is accepted only when every connection delivered every (layer, block)
 * frame with the right length and checksum and the connections together cover exactly the
 * decode rank's heads. A bad magic, version, transport, geometry or fingerprint, a wrong
 * length, a checksum mismatch, a duplicate frame, a connection that closes early, a NCCL error,
 * or no progress for timeout_ms fails the whole transfer: its staging memory is freed at once
 * (NCCL: after its communicators are aborted, so nothing still writes into it), its other
 * connections get the error status and are closed, and ts_kvx_receiver_wait reports the error.
 * Nothing reaches the KV cache (or the block pool) before the transfer is complete, so a
 * half-written sequence can never be decoded.
 *
 * Threads. A receiver owns one I/O thread that touches only sockets, staging memory and, for
 * NCCL, its connections' communicators and CUDA streams (it makes the backend's device current
 * for itself; it never uses the backend's stream); the backend and the block pool are touched
 * only by ts_kvx_receiver_install/_claim, called by the engine's thread (device staging is
 * copied into the KV blocks on the backend's stream there). The other receiver functions are
 * thread-safe. A sender owns one I/O thread that writes the queued frames and reads the
 * statuses; its functions are called from one thread (the one that drives the engine, since
 * send_layer reads the backend), which with NCCL also owns the sender's communicators: it joins
 * them in open, posts the sends in send_layer, and ends them in destroy.
 */
#ifndef TS_NODE_KV_TRANSFER_H
#define TS_NODE_KV_TRANSFER_H

#include "node/engine.h"
#include "kvx/kv_checksum.h"
#include "node/kv_fingerprint.h"
#include "node/kv_pool.h"

#include <stddef.h>
#include <stdint.h>

enum {
    TS_KVX_VERSION = 2,
    TS_KVX_HEADER_BYTES = 72,
    TS_KVX_FRAME_BYTES = 32,
    TS_KVX_STATUS_BYTES = 16,
    TS_KVX_MAX_MESSAGE = 255,
    TS_KVX_FRAME_BLOCK = 1,
    TS_KVX_FRAME_END = 2,
};

/* Where block payloads travel (see the top of this file). */
typedef enum ts_kvx_transport { TS_KVX_TCP = 0, TS_KVX_NCCL = 1 } ts_kvx_transport;

/* "tcp" / "nccl". */
const char *ts_kvx_transport_name(ts_kvx_transport t);
/* Parses "tcp" or "nccl"; TS_E_INVALID (message names the text) otherwise. */
int ts_kvx_transport_parse(const char *text, ts_kvx_transport *out);
/* A command line's --kv-transport with its --device (NULL: the default, cpu): parses `text`,
 * then refuses nccl with TS_E_INVALID for a device that is not cuda[:N], or with
 * TS_E_UNSUPPORTED in a build without CUDA. Before any model is loaded;
 * ts_kvx_nccl_supported(engine) checks the engine itself later. */
int ts_kvx_transport_from_flags(const char *text, const char *device, ts_kvx_transport *out);
/* Whether this engine's KV cache can be an end of a NCCL transfer: 0 when this build has CUDA
 * and the engine's backend is a CUDA device, TS_E_UNSUPPORTED saying which is missing. With
 * e == NULL only the build is checked (for a command line, before any model is loaded). */
int ts_kvx_nccl_supported(const ts_engine *e);

/* ---- checksum and identity ---- */

/* CRC32C (Castagnoli, reflected, as iSCSI/ext4): crc = ts_crc32c(0, data, n) for one buffer;
 * pass the previous value to continue over more bytes. Uses the SSE4.2 instruction when the CPU
 * has it, a table otherwise (both give the same value). */
uint32_t ts_crc32c(uint32_t crc, const void *data, size_t n);
/* The table version, always (tests hold the fast path to it). */
uint32_t ts_crc32c_portable(uint32_t crc, const void *data, size_t n);

/* The NCCL transport's payload checksum of one block frame, K then V (`part` bytes each): the
 * sum modulo 2^64 of a 64-bit mix of every little-endian 32-bit word with its position (each
 * part's last word zero-padded; V's words numbered after K's), folded to 32 bits. A sum of
 * independent terms, so a CUDA kernel computes it in parallel (kv_transfer_nccl.h); this is its
 * host reference, and ts_kvx_sum_fold turns the device's 64-bit sum into the same value. */
uint32_t ts_kvx_payload_sum(const void *k, const void *v, size_t part);
uint32_t ts_kvx_sum_fold(uint64_t sum);
/* (One term of that sum: ts_kvx_sum_term in kv_checksum.h.) */

/* The KV-compatibility fingerprint, ts_kvx_fingerprint: node/kv_fingerprint.h. */

/* ---- wire format (exposed for tests and tools) ---- */

typedef struct ts_kvx_header {
    uint64_t request_id;
    uint64_t fingerprint;
    uint32_t n_layers, n_tokens, block_size, n_blocks, head_dim, dtype;
    uint32_t kv_head0, n_kv_heads; /* global heads carried by this connection */
    uint16_t src_rank, src_size, dst_rank, dst_size;
    uint16_t transport; /* ts_kvx_transport of the block payloads */
} ts_kvx_header;

typedef struct ts_kvx_frame {
    uint32_t kind; /* TS_KVX_FRAME_BLOCK or TS_KVX_FRAME_END */
    uint32_t layer;
    uint32_t block; /* block index in the sequence; for END: block frames sent */
    uint32_t payload_bytes;
    uint32_t payload_crc; /* CRC32C (TCP) or ts_kvx_payload_sum (NCCL) of the payload */
} ts_kvx_frame;

void ts_kvx_header_encode(const ts_kvx_header *h, uint8_t out[TS_KVX_HEADER_BYTES]);
/* TS_E_FORMAT (message says what) for a bad magic, version, checksum or unknown transport. */
int ts_kvx_header_decode(const uint8_t in[TS_KVX_HEADER_BYTES], ts_kvx_header *h);
void ts_kvx_frame_encode(const ts_kvx_frame *f, uint8_t out[TS_KVX_FRAME_BYTES]);
int ts_kvx_frame_decode(const uint8_t in[TS_KVX_FRAME_BYTES], ts_kvx_frame *f);
/* Payload bytes of one block frame: 2 * n_kv_heads * block_size * head_dim elements. */
size_t ts_kvx_block_payload_bytes(const ts_kvx_header *h);

/* ---- receiver (decode side) ---- */

typedef struct ts_kvx_receiver ts_kvx_receiver;

typedef struct ts_kvx_receiver_options {
    const char *listen;         /* "host:port" to bind; NULL: "0.0.0.0:0" (port 0 = any free) */
    const char *advertise_host; /* host in ts_kvx_receiver_endpoint; NULL: the bound address,
                                   or this machine's hostname when bound to 0.0.0.0 */
    uint64_t fingerprint;       /* required: ts_kvx_fingerprint of the decode model */
    int timeout_ms;             /* a transfer with no progress this long fails; <= 0: 30000 */
    size_t max_staging_bytes;   /* transfers held at once; beyond it a new one is refused
                                   with TS_E_EXHAUSTED; 0: 1 GiB */
} ts_kvx_receiver_options;

/* Binds, listens and starts the I/O thread. The engine gives this rank's geometry (layers,
 * head_dim, block size, KV dtype, its KV heads and TP rank/size); it must outlive the receiver,
 * and is used from the I/O thread only for that read-only geometry. */
int ts_kvx_receiver_open(const ts_engine *e, const ts_kvx_receiver_options *opts,
                         ts_kvx_receiver **out);
/* Stops the thread, closes every connection (their senders see the connection close) and frees
 * all staging. NULL is fine. */
void ts_kvx_receiver_close(ts_kvx_receiver *r);

/* "host:port" where senders reach this receiver. Valid for the receiver's lifetime. */
const char *ts_kvx_receiver_endpoint(const ts_kvx_receiver *r);

/* Waits up to timeout_ms (< 0: forever) until transfer `request_id` is complete (returns 0) or
 * has failed (returns its error, with the receiver's message; the failure is then forgotten).
 * TS_E_TIMEOUT when neither happened in time (the transfer goes on). */
int ts_kvx_receiver_wait(ts_kvx_receiver *r, uint64_t request_id, int timeout_ms);

/* Never blocks and forgets nothing: 0 when transfer `request_id` is complete, TS_E_TIMEOUT
 * while it is in flight or not seen yet, its error (message set) when it failed. For an engine
 * loop that must not wait. */
int ts_kvx_receiver_status(ts_kvx_receiver *r, uint64_t request_id);

/* Engine thread. Writes a complete transfer into the engine's KV cache at block_ids[0 .. n)
 * (n must equal the transfer's block count) and forgets it (frees its staging). Every rank of a
 * decode group calls it with the same block ids, chosen by the group leader. */
int ts_kvx_receiver_install(ts_kvx_receiver *r, ts_engine *e, uint64_t request_id,
                            const int32_t *block_ids, int32_t n_blocks);

/* Engine thread, a decode group of one rank (or a leader that installs its own share): takes
 * the transfer's blocks from `pool` (reference count 1 each; the caller owns them afterwards)
 * and installs into them. block_ids must hold at least the transfer's block count; *n_blocks
 * receives it. TS_E_EXHAUSTED when the pool lacks room (nothing taken, the transfer stays
 * complete so the caller may retry after freeing blocks). On any failure the pool is exactly as
 * before. */
int ts_kvx_receiver_claim(ts_kvx_receiver *r, ts_engine *e, ts_kv_pool *pool, uint64_t request_id,
                          int32_t *block_ids, int32_t max_blocks, int32_t *n_blocks);

/* The block count and token count of a complete transfer (for the caller's block table).
 * TS_E_NOT_FOUND if no complete transfer has that id. */
int ts_kvx_receiver_geometry(ts_kvx_receiver *r, uint64_t request_id, int32_t *n_tokens,
                             int32_t *n_blocks);

/* Forgets a transfer wherever it is (cancel): frees its staging; its open connections get a
 * TS_E_CANCELLED status and are closed. TS_E_NOT_FOUND if unknown. */
int ts_kvx_receiver_drop(ts_kvx_receiver *r, uint64_t request_id);

typedef struct ts_kvx_receiver_stats {
    int32_t n_receiving; /* transfers in flight */
    int32_t n_complete;  /* complete, not yet installed or dropped */
    int32_t n_connections;
    size_t staging_bytes;
    int64_t transfers_ok, transfers_failed;
    int64_t bytes_received;
} ts_kvx_receiver_stats;

void ts_kvx_receiver_get_stats(ts_kvx_receiver *r, ts_kvx_receiver_stats *out);

/* ---- sender (prefill side) ---- */

typedef struct ts_kvx_sender ts_kvx_sender;

typedef struct ts_kvx_sender_options {
    uint64_t request_id;
    uint64_t fingerprint;             /* ts_kvx_fingerprint of the prefill model */
    int32_t n_tokens;                 /* tokens whose KV is sent (the prompt) */
    const char *const *dst_endpoints; /* [dst_size]: decode rank r's receiver endpoint */
    int dst_size;                     /* decode group's TP degree */
    int timeout_ms;                   /* connect, each write, and the final status;
                                         <= 0: 30000 */
    ts_kvx_transport transport;       /* how block payloads travel; TS_KVX_NCCL needs
                                         ts_kvx_nccl_supported(engine) on both ends */
} ts_kvx_sender_options;

/* Connects to the decode ranks this rank feeds (kv_layout.h; a replicated prefill rank may feed
 * none) and sends the transfer headers. Every prefill rank of the group calls it. With NCCL it
 * also joins each connection's communicator (waiting up to timeout_ms): TS_E_UNSUPPORTED when
 * this engine cannot (ts_kvx_nccl_supported), the receiver's code and words when it refuses. */
int ts_kvx_sender_open(ts_engine *e, const ts_kvx_sender_options *opts, ts_kvx_sender **out);

/* Engine thread. Reads layer `layer` of the sequence's blocks block_table[first .. first + n)
 * (sequence block indices first ..) from the engine and queues them for sending; returns without
 * waiting for the network (NCCL: waits for the layer's device work, then posts the sends on the
 * connections' streams). Call it once per (layer, block), as soon as the layer's KV of those
 * blocks is final (e.g. from the engine's layer hook during the last prefill step). Returns the
 * sender's error once the transfer has failed. */
int ts_kvx_sender_send_layer(ts_kvx_sender *s, int32_t layer, const int32_t *block_table,
                             int32_t first, int32_t n);

/* Queues the end frames and returns at once; the I/O thread then collects every receiver's
 * status. Call it once, after the last send_layer. NCCL: returns once the posted sends have
 * read the blocks (the receivers post their receives as the frame headers arrive; at most
 * timeout_ms, less when the transfer fails meanwhile, which aborts the sends), so the caller
 * may release the blocks at once either way. */
int ts_kvx_sender_end(ts_kvx_sender *s);

/* After ts_kvx_sender_end: waits up to timeout_ms (0: just look; < 0: until decided). 0 when
 * every decode rank this rank feeds accepted the transfer; TS_E_TIMEOUT while it is still in
 * flight; otherwise the error (the receiver's own message when it sent one, TS_E_UNAVAILABLE
 * when a connection broke, TS_E_TIMEOUT with "no answer" when a receiver went silent). */
int ts_kvx_sender_wait(ts_kvx_sender *s, int timeout_ms);

/* ts_kvx_sender_end, then ts_kvx_sender_wait until decided. */
int ts_kvx_sender_finish(ts_kvx_sender *s);

/* Closes everything; an unfinished transfer is aborted (the receivers see the connections close
 * and free what they staged). NULL is fine. */
void ts_kvx_sender_destroy(ts_kvx_sender *s);

/* Bytes queued or sent so far (for metrics). */
int64_t ts_kvx_sender_bytes(const ts_kvx_sender *s);

#endif
