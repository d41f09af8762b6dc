/*
 * scheduler.h — continuous batching over the paged KV cache: the group leader's work loop.
 *
 * Requests (token ids in, token ids out) join and leave the running batch at every step:
 *   1. every running sequence that is decoding contributes its one new token;
 *   2. sequences still prefilling contribute the next chunk of their prompt (chunked prefill,
 *      at most opts.prefill_chunk tokens each), within the step's token budget;
 *   3. waiting requests are admitted, highest priority first then oldest, while the budget,
 *      the sequence limit and free KV blocks allow. A new request first reuses cached full
 *      blocks of a shared prompt prefix (kv_pool.h) and prefills only the rest.
 * Before that, a waiting request of a higher priority than the lowest running one (interactive
 * work over batch filler) that could not start for want of a sequence slot or KV blocks preempts
 * running lower-priority sequences, lowest first, within the step.
 *
 * Batch filler: sequences of the batch class (ts_priority_is_batch: priority < 0) fill what
 * interactive work leaves of a step, and no more than keeps interactive latency where it would
 * be without them. The step's cost is learned from the steps run (step_cost.h: a fixed part,
 * weights read once, and a part per token), and with opts.filler_slack = s:
 *   - a step with interactive work gets at most the batch tokens that lengthen it by s (on a
 *     GPU, whose steps are memory-bound, many; on a compute-bound CPU, few);
 *   - between interactive requests (interactive work within the last 2 s, none now) a step of
 *     batch work alone holds just enough tokens to reach (1 - s) of the peak token rate, so a
 *     request that arrives waits for a short step only;
 *   - with no interactive traffic for 2 s, batch work gets the whole step.
 * s >= 1 turns the limits off (batch work shares every step as interactive work does).
 *
 * Smooth decode (opts.decode_slack = d > 0): a step that carries decoding sequences takes at most
 * (1 + d) times the time of those decode rows alone, by the same learned cost: the step's prompt
 * chunks together hold at most d × (fixed cost in tokens + decode rows) tokens, so a long prompt
 * arriving stretches no decoding stream's inter-token gap beyond that (its own first token comes
 * later instead; the prefill/decode split avoids both). Without decoding sequences prompts get
 * the whole step.
 * When a decoding sequence needs a KV block and none is free, the lowest-priority, most recently
 * admitted other sequence is preempted: its blocks are released and it goes back to the front of
 * the queue to be recomputed later (prompt + tokens generated so far). Kernels are
 * batch-invariant, so neither batching, chunking, prefix reuse nor preemption changes any
 * sequence's tokens: the same request and seed give the same tokens whatever else runs.
 *
 * A sequence finishes when it samples one of its stop ids (finish STOP; the stop token is not
 * emitted), reaches max_tokens or the context length (finish LENGTH), is cancelled (CANCELLED),
 * and its KV blocks are released at once.
 *
 * Threads: not thread-safe; one thread (the node's engine thread, or the CLI) owns it. Events
 * are delivered through the callback during ts_sched_step / ts_sched_cancel on that thread.
 */
#ifndef TS_NODE_SCHEDULER_H
#define TS_NODE_SCHEDULER_H

#include "node/engine.h"
#include "node/kv_pool.h"
#include "node/kv_tiers.h"
#include "request/request.h"

#include <stdbool.h>
#include <stdint.h>

/* ts_finish_reason (how a request ended): request/request.h. */

/* ts_request_params (what a request runs with) and its limits: request/request.h. */

typedef struct ts_sched_event {
    uint64_t request_id;
    int32_t token;           /* the new token, or -1 when the event only finishes */
    float logprob;           /* when the request asked for log-probs */
    ts_finish_reason finish; /* TS_FINISH_NONE while the sequence goes on */
    int32_t n_prompt;        /* prompt tokens */
    int32_t n_cached;        /* prompt tokens whose KV came from the prefix cache (fixed at
                              * the request's first admission; 0 before it) */
    int32_t n_generated;     /* tokens emitted so far, this one included */
    /* with params.top_logprobs: the most probable ids of the step and their log-probs
     * (ts_engine_step_top), n_top of them */
    int32_t n_top;
    int32_t top_ids[TS_ENGINE_MAX_TOP_LOGPROBS];
    float top_logprobs[TS_ENGINE_MAX_TOP_LOGPROBS];
} ts_sched_event;

typedef void (*ts_sched_emit)(void *user, const ts_sched_event *ev);

typedef struct ts_sched_options {
    int32_t prefill_chunk;    /* prompt tokens per sequence per step; <= 0: 512 */
    int32_t max_waiting;      /* queued requests before submit says EXHAUSTED; <= 0: 4096 */
    bool no_prefix_cache;     /* do not reuse KV blocks of shared prompt prefixes */
    uint64_t cache_namespace; /* the model's KV fingerprint (ts_kvx_fingerprint): the prefix
                               * chains' root with each request's cache salt (kv_hash.h) */
    ts_kv_tiers *tiers;       /* the group's lower KV tiers (kv_tiers.h; NULL: none): blocks the
                               * pool evicts go there, and prefixes found there are loaded */
    double filler_slack;      /* how much batch filler may slow interactive work ("Batch
                               * filler" above); 0: none beside it; >= 1: no limit */
    double decode_slack;      /* prefill beside decoding sequences ("Smooth decode" above);
                               * 0: no limit but prefill_chunk */
} ts_sched_options;

typedef struct ts_sched ts_sched;

typedef struct ts_sched_stats {
    int32_t n_running, n_waiting;
    int32_t blocks_total, blocks_free, blocks_cached;
    int64_t steps;
    int64_t prefill_tokens, decode_tokens, preemptions;
    int64_t cached_tokens; /* tokens whose KV a sequence reused at admission (re-admissions of a
                            * preempted sequence included) */
    /* Prefix cache, as vLLM counts it: prompt tokens looked up at each request's first
     * admission, and those found (what usage.cached_prompt_tokens reports). */
    int64_t cache_query_tokens, cache_hit_tokens;
    int64_t cache_host_hit_tokens; /* of the hits, prompt tokens loaded from the host tier */
    int64_t cache_disk_hit_tokens; /* and from the disk tier */
    int64_t prefill_ns, decode_ns; /* time in steps that held prefill / only decode tokens */
} ts_sched_stats;

/* The engine must be the group leader's and outlive the scheduler. */
int ts_sched_create(ts_engine *engine, const ts_sched_options *opts, ts_sched **out);
void ts_sched_destroy(ts_sched *s);

/* Queues a request (the prompt is copied). TS_E_INVALID for what ts_request_validate refuses
 * (an empty prompt, a prompt that leaves no room in the context, ids outside the vocabulary,
 * parameters outside their limits) or a duplicate id; TS_E_EXHAUSTED when the queue is full.
 * The message says what is wrong. */
int ts_sched_submit(ts_sched *s, uint64_t id, const int32_t *prompt, int32_t n_prompt,
                    const ts_request_params *params);

/* Cancels a request wherever it is, releasing its KV blocks now, and emits its CANCELLED
 * finish event. TS_E_NOT_FOUND if no such request is active. */
int ts_sched_cancel(ts_sched *s, uint64_t id, ts_sched_emit emit, void *user);

bool ts_sched_has_work(const ts_sched *s);

/* Runs one engine step (if there is work) and emits the events it produced. An engine failure
 * finishes every active request with TS_FINISH_ERROR and returns the error. */
int ts_sched_step(ts_sched *s, ts_sched_emit emit, void *user);

/* Ends every active request with `reason` (e.g. at shutdown), releasing their blocks. */
void ts_sched_abort_all(ts_sched *s, ts_finish_reason reason, ts_sched_emit emit, void *user);

void ts_sched_get_stats(const ts_sched *s, ts_sched_stats *out);

/* At shutdown, with a disk tier (kv_tiers.h): the prefix cache's free blocks go down the tiers
 * (device pool → host tier → disk, leaves and oldest first), so a restarted node finds every
 * cached prefix on disk, not only what was evicted before. Blocks still in use stay. No-op
 * without a disk tier. */
void ts_sched_flush_cache(ts_sched *s);

/* ---- prefill/decode disaggregation (issue 5) ----
 *
 * A prefill group runs a request with max_tokens = 1 and ships its prompt's KV before the blocks
 * go back to the pool; a decode group takes those blocks (installed by the KV transfer, from
 * ts_sched_pool) and continues the sequence from its first token. */

/* Called when a sequence finishes by STOP or LENGTH in ts_sched_step, after its finish event is
 * queued and just before its KV blocks are released: blocks[0 .. n_blocks) hold the KV of its
 * first n_computed tokens (the prompt and all generated tokens but the last). The hook may run
 * group tasks (the engine is between steps) and must not call back into the scheduler. Not
 * called for cancel, abort or preemption. NULL removes it. */
typedef void (*ts_sched_release_hook)(void *user, uint64_t id, ts_finish_reason finish,
                                      const int32_t *blocks, int32_t n_blocks,
                                      int32_t n_computed);
void ts_sched_set_release_hook(ts_sched *s, ts_sched_release_hook hook, void *user);

/* Called in ts_sched_step before the engine runs a step that computes the last prompt tokens of
 * a sequence (the step that samples its first token): seq_index is its position in that step's
 * batch (ts_batch.seqs order, as the engine's layer hook sees it) and its first n_blocks blocks
 * hold the whole prompt once the step's layers are done — so a KV transfer can ship each layer
 * as soon as it is computed. May run group tasks (the step's plan is not sent yet); must not
 * call back into the scheduler. NULL removes it. */
typedef void (*ts_sched_prompt_hook)(void *user, uint64_t id, int32_t seq_index,
                                     int32_t n_blocks);
void ts_sched_set_prompt_hook(ts_sched *s, ts_sched_prompt_hook hook, void *user);

/* The scheduler's block pool, for a caller that takes blocks to hand back through
 * ts_sched_submit_prefilled (a KV transfer's claim). Owned by the scheduler. */
ts_kv_pool *ts_sched_pool(ts_sched *s);

/* Adds a request whose prompt's KV is already in the cache: blocks[0 .. n_blocks) (taken from
 * ts_sched_pool, covering exactly n_prompt tokens) pass to the scheduler, also when it fails
 * (then they are released). first_token is its first generated token (sampled elsewhere); the
 * request joins the running batch at position n_prompt with that token as input, counts it as
 * generated (n_generated = 1, no event for it) and continues exactly as if it had prefilled
 * here: a seeded sampler skips the draw the first token used. No prefix-cache lookup; its full
 * blocks are published as usual. TS_E_INVALID for the cases ts_sched_submit refuses, a bad
 * first_token or block count, max_tokens < 2 or no room left in the context (nothing left to
 * generate). */
int ts_sched_submit_prefilled(ts_sched *s, uint64_t id, const int32_t *prompt, int32_t n_prompt,
                              int32_t first_token, const int32_t *blocks, int32_t n_blocks,
                              const ts_request_params *params);

#endif
