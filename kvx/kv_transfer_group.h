/*
 * kv_transfer_group.h — the KV transfer of a whole tensor-parallel group, driven by its leader.
 *
 * In a group of N ranks every rank holds some KV heads, so every rank sends (prefill) or
 * receives (decode) its own part, while only the leader talks to the coordinator and owns the
 * block pool. A ts_kvx_group on every rank holds that rank's receiver and senders; the leader
 * calls the functions below, each of which runs one group task (engine.h: ts_engine_run_task)
 * so that the followers, sitting in ts_engine_follow / ts_runtime_follow, do their part at the
 * same point between steps and report back. In a group of one the same calls work directly.
 *
 * Prefill leader, per request R (blocks: R's block table, n_tokens: its prompt):
 *   ts_kvx_group_send_open(g, R, n_tokens, decode_endpoints)   every rank connects
 *   either ts_kvx_group_send_arm(g, R, seq_index, first, n)    before the step that completes
 *          the blocks [first, first + n): every rank ships each layer from the engine's layer
 *          hook as soon as the layer is computed (the batch's seq_index-th sequence is R)
 *   or     ts_kvx_group_send_blocks(g, R, blocks, first, n)    after the step: all layers now
 *   ts_kvx_group_send_finish(g, R)     0 once every decode rank accepted; else the error, and
 *                                      the request should be retried under a new transfer id
 *   (or, not to block the engine loop: send_end once, then send_poll between steps until it
 *    stops answering TS_E_TIMEOUT)
 *   (ts_kvx_group_send_abort(g, R) on cancel or failure; the decode side frees its part.)
 *
 * Decode leader, per request R:
 *   ts_kvx_group_recv_wait(g, R, timeout)         every rank's part complete (or the error);
 *                                                  or recv_poll between steps, not blocking
 *   ts_kvx_group_recv_claim(g, pool, R, ids, ...)  blocks from the leader's pool, installed on
 *                                                  every rank; then decode R from n_tokens on
 *   ts_kvx_group_recv_drop(g, R)                   on cancel or failure: every rank forgets R
 *
 * Register.kv_endpoint: ts_kvx_group_endpoints on the decode leader, every rank's
 * "host:port" joined with commas in rank order; senders take that string as it is.
 *
 * Threads: the engine's thread. Transfer ids are request ids; a retry after a failure must use
 * a new id (the receivers remember failed ids to refuse late parts of the old attempt).
 */
#ifndef TS_NODE_KV_TRANSFER_GROUP_H
#define TS_NODE_KV_TRANSFER_GROUP_H

#include "kvx/kv_transfer.h"

#include <stdbool.h>

typedef struct ts_kvx_group ts_kvx_group;

typedef struct ts_kvx_group_options {
    bool receive;                     /* decode or mixed role: a receiver on every rank */
    ts_kvx_receiver_options receiver; /* its options; fingerprint is filled in */
    int timeout_ms;                   /* senders' timeout; <= 0: 30000 */
    ts_kvx_transport transport;       /* how this group's senders move block payloads (the
                                         receivers serve what each header asks for) */
} ts_kvx_group_options;

/* Collective: every rank of the engine's group calls it (before the followers start
 * following). Registers the group's task handler and layer hook on the engine; the group must
 * be destroyed before the engine. TS_E_UNSUPPORTED (on every rank) when opts->transport is
 * TS_KVX_NCCL and this engine cannot send over NCCL (ts_kvx_nccl_supported). */
int ts_kvx_group_create(ts_engine *e, const ts_model *m, const ts_kvx_group_options *opts,
                        ts_kvx_group **out);
/* Aborts every open sender, closes the receiver, unhooks the engine. Not collective. */
void ts_kvx_group_destroy(ts_kvx_group *g);

/* Leader: every rank's receiver endpoint, comma-separated in rank order ("" without receive). */
const char *ts_kvx_group_endpoints(const ts_kvx_group *g);
/* This rank's receiver (NULL without receive), e.g. for its statistics. */
ts_kvx_receiver *ts_kvx_group_receiver(const ts_kvx_group *g);

/* A task handler for the engine (user = the group) in case the caller installs its own handler
 * and forwards these messages: TS_E_NOT_FOUND for a message that is not the group's. */
int ts_kvx_group_task(void *group, ts_engine *e, const void *msg, size_t bytes);

/* ---- leader only (each runs one group task) ---- */

int ts_kvx_group_send_open(ts_kvx_group *g, uint64_t request_id, int32_t n_tokens,
                           const char *dst_endpoints);
int ts_kvx_group_send_arm(ts_kvx_group *g, uint64_t request_id, int32_t seq_index, int32_t first,
                          int32_t n);
int ts_kvx_group_send_blocks(ts_kvx_group *g, uint64_t request_id, const int32_t *block_table,
                             int32_t first, int32_t n);
int ts_kvx_group_send_finish(ts_kvx_group *g, uint64_t request_id);
/* The same without blocking the group: send_end queues the end frames on every rank and
 * returns; send_poll then answers TS_E_TIMEOUT while any rank's part is in flight, or the
 * verdict (0 or the error), after which the transfer is closed on every rank. */
int ts_kvx_group_send_end(ts_kvx_group *g, uint64_t request_id);
int ts_kvx_group_send_poll(ts_kvx_group *g, uint64_t request_id);
int ts_kvx_group_send_abort(ts_kvx_group *g, uint64_t request_id);

int ts_kvx_group_recv_wait(ts_kvx_group *g, uint64_t request_id, int timeout_ms);
/* Without blocking: TS_E_TIMEOUT while any rank's part is in flight (no group task runs until
 * the leader's own part is complete), 0 when every part is complete, or the failure (then
 * recv_drop it). */
int ts_kvx_group_recv_poll(ts_kvx_group *g, uint64_t request_id);
/* Takes the transfer's blocks from `pool` and installs them on every rank; *n_blocks and
 * *n_tokens describe the sequence. TS_E_EXHAUSTED when the pool lacks room (nothing taken; the
 * transfer stays, retry later). On any other failure the blocks go back to the pool and the
 * transfer is dropped on every rank. */
int ts_kvx_group_recv_claim(ts_kvx_group *g, ts_kv_pool *pool, uint64_t request_id,
                            int32_t *block_ids, int32_t max_blocks, int32_t *n_blocks,
                            int32_t *n_tokens);
int ts_kvx_group_recv_drop(ts_kvx_group *g, uint64_t request_id);

#endif
