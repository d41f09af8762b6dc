/*
 * kv_transfer_nccl.h — the KV transfer's second transport: NCCL send/recv from the prefill
 * ranks' device KV cache straight into the decode ranks' device KV cache, for GPU groups that
 * share one MPI world (one mpirun/srun job, e.g. a Slurm heterogeneous job). The TCP transport
 * (kv_transfer.h) works between any hosts; this one needs a NCCL communicator over the union of
 * both groups' ranks and CUDA backends on both sides.
 *
 * Setup (collective over the world): ts_comm_create_nccl(world MPI comm, be->device_stream,
 * be->device_index, ...) — its unique id is made on world rank 0 and broadcast over MPI — gives
 * the communicator `nccl`; prefill rank p is its rank src_base + p, decode rank d its rank
 * dst_base + d (ts_kvx_nccl_peers).
 *
 * Protocol, per transfer, between the two ends of every route of kv_layout.h (the same routes,
 * so each decode rank receives exactly the KV heads it owns). Both ends derive the routes and
 * post their calls in the same order: route order of ts_kv_routes, then layer, block, K, V.
 *   1. header: the sender sends the 72-byte TCP transfer header (kv_transfer.h: magic, version,
 *      request, model fingerprint, geometry, head range, ranks, CRC32C) per route; one NCCL group.
 *   2. verdict: the receiver checks every header (decode, CRC, fingerprint, geometry, addressed
 *      to it, the expected head range of its route, the same token count on all its routes),
 *      claims the blocks (from its pool, or checks the count of the caller's block ids) and
 *      answers one i32 per route: 0, or the TS_E_* code refusing the whole transfer (its
 *      message is logged on the decode side). One NCCL group.
 *   3. data, only on accepted routes: per layer one ncclGroupStart/End holding, per block, the
 *      route's K range then V range of that block (ts_engine_kv_block_span: contiguous device
 *      memory), posted on the communicator's stream (the backend's), so the sends follow the
 *      prefill kernels and the receives precede the decode kernels without a host sync.
 *   Each phase is awaited with ts_comm_nccl_wait (deadline, NCCL error polling, abort).
 *
 * Integrity — what is checked and what not. Checked: the header (CRC32C, fingerprint,
 * geometry, route), the payload lengths (both ends compute every range from the same checked
 * header; NCCL fails a send/recv pair whose sizes differ), completion (NCCL errors and a peer
 * that dies or hangs end the wait with TS_E_UNAVAILABLE or TS_E_TIMEOUT). NOT checked: a
 * per-block checksum of the payload — NCCL's transports carry no end-to-end checksum, and a
 * device-side CRC kernel is not written yet — so payload integrity rests on the interconnect
 * (NVLink/PCIe/IB link-level CRC). All or nothing: the receiver writes into blocks claimed for
 * this transfer only, and on any failure releases them (pool mode) or reports the failure so
 * the caller releases its ids; nothing is visible to decoding before ts_kvx_nccl_recv returns 0.
 * A failure that aborted the communicator (a timeout) makes every later call fail: the world
 * must build a new one (collective).
 *
 * Verified here (no GPU): compiles and links only. tests/unit/kvxfer_nccl.c (label gpu) runs it
 * on two GPUs (docs/architecture.md "KV transfer").
 *
 * Threads: the engine's thread on each side (it posts work on the backend's stream). Built only
 * with CUDA (TESSERA_HAVE_CUDA).
 */
#ifndef TS_NODE_KV_TRANSFER_NCCL_H
#define TS_NODE_KV_TRANSFER_NCCL_H

#include "node/comm.h"
#include "node/engine.h"
#include "node/kv_pool.h"

#include <stdint.h>

typedef struct ts_kvx_nccl_peers {
    int src_base, src_size; /* prefill rank p is rank src_base + p of the NCCL communicator */
    int dst_base, dst_size; /* decode rank d is rank dst_base + d */
} ts_kvx_nccl_peers;

/* Prefill rank (its engine's shard rank of src_size): sends layers 0 .. n_layers of
 * block_table[0 .. n_blocks) (the sequence's blocks, n_tokens tokens) on its routes. Returns
 * once its sends completed: 0 when every decode rank it feeds accepted, else the refusal's code
 * (TS_E_EXHAUSTED: no room, retry later) or the NCCL failure. */
int ts_kvx_nccl_send(ts_comm *nccl, ts_engine *e, const ts_kvx_nccl_peers *peers,
                     uint64_t request_id, uint64_t fingerprint, int32_t n_tokens,
                     const int32_t *block_table, int32_t n_blocks);

/* Decode rank (its engine's shard rank of dst_size): receives transfer `request_id` (the same
 * one its senders send; a different id is refused) into device KV blocks.
 * pool != NULL: claims the transfer's blocks from it (reference count 1 each, written to
 *   block_ids[0 .. *n_blocks), at most max_blocks; the caller owns them on success; on any
 *   failure they are released, the pool exactly as before).
 * pool == NULL: block_ids[0 .. max_blocks) are the ids to fill, chosen by the group leader; the
 *   transfer must have exactly max_blocks blocks; on failure the caller releases them.
 * *n_tokens receives the sequence's token count. */
int ts_kvx_nccl_recv(ts_comm *nccl, ts_engine *e, const ts_kvx_nccl_peers *peers,
                     uint64_t request_id, uint64_t fingerprint, ts_kv_pool *pool,
                     int32_t *block_ids, int32_t max_blocks, int32_t *n_blocks, int32_t *n_tokens);

#endif
