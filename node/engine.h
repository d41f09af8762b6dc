/*
 * engine.h — the Llama forward pass of one tensor-parallel rank over the paged KV cache.
 *
 * A step runs a batch (kernels.h: ts_batch) of tokens from many sequences at once — decode
 * tokens and prefill chunks together — and picks the next token of every sequence whose last
 * prompt token or last generated token is in the batch. Per layer:
 *
 *   xb = rmsnorm(x)                  q,k,v = xb·Wq,Wk,Wv (this rank's heads)   rope(q, k)
 *   kv_store(k, v)                   att = attention(q, paged KV)               o = att·Wo
 *   all-reduce(o)   x += o           xb = rmsnorm(x)     g,u = xb·Wgate,Wup (this rank's rows)
 *   g = silu(g)·u   d = g·Wdown      all-reduce(d)       x += d
 *
 * so a group of N ranks does two all-reduces per layer and nothing else in the hot path (plus
 * one for the vocab-parallel embedding per step, and one small gather for the next tokens).
 *
 * Group protocol. The group's rank 0 (the leader) owns the work: it calls ts_engine_step with a
 * plan (the batch), which the engine broadcasts to the other ranks (the followers); every rank
 * then runs the same forward pass on its shard. Followers sit in ts_engine_follow, executing
 * plans until the leader calls ts_engine_stop_group. Between steps the leader may also run a
 * group task (ts_engine_run_task) on every rank. Greedy rows are reduced across ranks as
 * (value, index) pairs without gathering the logits; rows that sample or want log-probs gather
 * the full logits on the leader.
 *
 * Memory: the weights stay where the backend prepared them (zero-copy views of the mmap on the
 * CPU); activations are sized for opts.max_batch_tokens; the KV cache takes opts.kv_memory bytes
 * per rank, as many blocks as fit (the same count on every rank). No allocation happens per step.
 * ts_engine_options_get reports the sizes chosen (kv_memory and max_ctx after defaults).
 *
 * Threads: one thread drives an engine. Errors: a failed collective (a dead rank) returns
 * TS_E_UNAVAILABLE/TS_E_TIMEOUT; the group cannot continue after that.
 */
#ifndef TS_NODE_ENGINE_H
#define TS_NODE_ENGINE_H

#include "kernels/kernels.h"
#include "model/model.h"
#include "node/comm.h"
#include "node/shard.h"

#include <stddef.h>
#include <stdint.h>

typedef struct ts_engine ts_engine;

/* The automatic KV budget (kv_memory 0), defined here once, with the text the flags' help shows:
 * a share of what the backend has free once the weights are in place (other ranks on the host
 * and the OS need the rest), a fixed size when that is unknown, and never more than
 * max_batch_seqs sequences of the full context could use. */
enum { TS_KV_MEMORY_AUTO_DIVISOR = 4 };
#define TS_KV_MEMORY_AUTO_UNKNOWN ((size_t)256 << 20)
#define TS_KV_MEMORY_AUTO                                                                          \
    "a quarter of the memory free after the weights (256 MiB when that is unknown), at most "      \
    "what --batch-seqs full contexts need"

typedef struct ts_engine_options {
    int32_t max_batch_tokens; /* tokens per step; <= 0: 512 */
    int32_t max_batch_seqs;   /* sequences per step; <= 0: 256 */
    int32_t block_size;       /* KV slots per block; <= 0: TS_KV_BLOCK_SIZE_DEFAULT */
    size_t kv_memory;         /* KV cache bytes on this rank; 0: TS_KV_MEMORY_AUTO below */
    ts_dtype kv_type;         /* TS_DTYPE_F16 or TS_DTYPE_F32 */
    int32_t max_ctx;          /* longest sequence; <= 0: the model's trained context, shortened
                               * (with a warning) to what the KV memory holds */
} ts_engine_options;

/* Prepares this rank's shard (comm->rank of comm->size) on the backend and allocates the KV
 * cache. Collective: every rank of the group calls it. The model and backend must outlive it. */
int ts_engine_create(const ts_model *m, ts_backend *be, ts_comm *comm,
                     const ts_engine_options *opts, ts_engine **out);
void ts_engine_destroy(ts_engine *e);

const ts_model_hparams *ts_engine_hparams(const ts_engine *e);
const ts_shard_plan *ts_engine_shard(const ts_engine *e);
const ts_engine_options *ts_engine_options_get(const ts_engine *e); /* with defaults filled in */
int32_t ts_engine_n_blocks(const ts_engine *e);
ts_comm *ts_engine_comm(const ts_engine *e);
/* The backend it runs on (for a transport that needs its device and stream: kv_transfer_nccl.h). */
ts_backend *ts_engine_backend(const ts_engine *e);

/* Leader only. Runs one step of the group. For the j-th sequence of the batch with want_logits
 * (in batch order), picks tokens[j] by params[j]; logprobs (may be NULL) receives the log-prob of
 * each picked token (gathering the full logits for every row when non-NULL). */
int ts_engine_step(ts_engine *e, const ts_batch *batch, const ts_sampling *params,
                   int32_t *tokens, float *logprobs);

enum { TS_ENGINE_MAX_TOP_LOGPROBS = 20 };

/* Leader only. ts_engine_step, and for each output row j with n_top[j] > 0 the n_top[j]
 * (<= TS_ENGINE_MAX_TOP_LOGPROBS) most probable ids of its unmodified row with their
 * log-probabilities, defined as the logprobs of the picked tokens (log softmax of the raw
 * logits, before penalties and temperature), most probable first, ties by lower id: into
 * top_ids / top_logprobs [j * TS_ENGINE_MAX_TOP_LOGPROBS ...]. logprobs must not be NULL when
 * n_top is given. A greedy pick without penalties or biases is top_ids[0] with the same value. */
int ts_engine_step_top(ts_engine *e, const ts_batch *batch, const ts_sampling *params,
                       int32_t *tokens, float *logprobs, const int32_t *n_top, int32_t *top_ids,
                       float *top_logprobs);

/* Leader only. Runs one step like ts_engine_step but picks nothing: logits receives the full
 * vocabulary row ([n][n_vocab] f32, host memory) of the j-th sequence with want_logits, in batch
 * order (gathered from every rank of a group). For scoring text (tessera perplexity): a prompt
 * given as one-row sequences that share one block table yields the logits of every position, with
 * the bits a single sequence would have (batch invariance). */
int ts_engine_step_logits(ts_engine *e, const ts_batch *batch, float *logits);

/* Leader only: ends ts_engine_follow on the followers. */
int ts_engine_stop_group(ts_engine *e);

/* Followers only: executes the leader's plans until it stops the group (returns 0) or a
 * collective fails (returns the error). */
int ts_engine_follow(ts_engine *e);

/* Checks a batch against the engine's limits and the KV pool (used before every step). */
int ts_engine_check_batch(const ts_engine *e, const ts_batch *batch);

/* ---- KV cache access, for moving a sequence between groups (kvx/kv_transfer.h) ---- */

/* Copies layer `layer`'s K and V of blocks block_ids[0 .. n_blocks) for this rank's KV heads
 * [head0, head0 + n_heads) (local indices, 0 .. shard.n_kv_heads) into host memory laid out
 * [n_blocks][n_heads][block_size][head_dim] of the engine's kv_type, K into k_host and V into
 * v_host. Waits for queued work first. TS_E_INVALID for a layer, block or head out of range. */
int ts_engine_kv_read(ts_engine *e, int32_t layer, const int32_t *block_ids, int32_t n_blocks,
                      int32_t head0, int32_t n_heads, void *k_host, void *v_host);
/* The reverse: writes host K and V (same layout) into those blocks and heads. */
int ts_engine_kv_write(ts_engine *e, int32_t layer, const int32_t *block_ids, int32_t n_blocks,
                       int32_t head0, int32_t n_heads, const void *k_host, const void *v_host);

/* The backend addresses (device memory on CUDA) of layer `layer`'s K and V of block `block_id`
 * for local heads [head0, head0 + n_heads): each one contiguous range of *bytes bytes, laid out
 * [n_heads][block_size][head_dim]. For a transport that moves KV memory between devices without
 * host copies (kvx/kv_transfer_nccl.h); it must order its accesses on the backend's stream.
 * Does not wait for queued work. TS_E_INVALID for a layer, block or head out of range. */
int ts_engine_kv_block_span(ts_engine *e, int32_t layer, int32_t block_id, int32_t head0,
                            int32_t n_heads, void **k, void **v, size_t *bytes);

/* Called on every rank during a step, right after layer `layer`'s kv_store, with the step's
 * batch: the layer's KV of the batch's tokens is then in the cache, so a prefill can ship layer
 * l while it computes l + 1. Runs on the engine's thread; may call ts_engine_kv_read. NULL (the
 * default) turns it off. */
typedef void (*ts_engine_layer_hook)(void *user, const ts_batch *batch, int32_t layer);
void ts_engine_set_layer_hook(ts_engine *e, ts_engine_layer_hook hook, void *user);

/* ---- group tasks ---- */

/* Work outside the forward pass that every rank of a group must do at the same point between
 * steps, each on its own shard: open a KV transfer for a request, install received KV blocks
 * into block ids the leader chose, drop a transfer (kvx/kv_transfer.h). The handler runs on
 * the engine's thread; it returns 0 or a TS_E_* code with the error message set. */
typedef int (*ts_engine_task_handler)(void *user, ts_engine *e, const void *msg, size_t bytes);
void ts_engine_set_task_handler(ts_engine *e, ts_engine_task_handler handler, void *user);

/* Leader only, between steps: runs the handler with msg (copied) on every rank — followers get
 * it through the plan broadcast inside ts_engine_follow — and gathers the results. Returns 0
 * when every rank returned 0; otherwise the leader's own error, or the first failing rank's code
 * with a message naming the rank (that rank logs its reason). A rank without a handler fails
 * with TS_E_UNSUPPORTED. TS_E_INVALID when bytes exceeds ts_engine_task_max_bytes. A failed
 * collective (a dead rank) returns its error as ts_engine_step does. */
int ts_engine_run_task(ts_engine *e, const void *msg, size_t bytes);

/* A channel of group tasks with a handler of its own, so that two subsystems can each run tasks
 * (the KV transfer through the handler above, the KV tiers through a channel: kv_tiers.h): a
 * message whose first 4 bytes are `tag` (host order) goes to this handler on every rank, any
 * other message to the default one. Every rank registers the same tags. NULL removes one. */
void ts_engine_set_task_channel(ts_engine *e, uint32_t tag, ts_engine_task_handler handler,
                                void *user);
size_t ts_engine_task_max_bytes(const ts_engine *e);

#endif
