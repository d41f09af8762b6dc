/*
 * coordinator.h — the state of tessera-coordinator, shared by its modules (internal header).
 *
 * A one-way stack, top to bottom; a module calls only those below it (what happens below is
 * reported up through return codes and, from membership, the co->hooks callbacks):
 *   api.c        the gRPC adapter, tessera.v1.Inference: GenerateRequest → ts_request
 *                (request/request_pb.h) → co_request_admit, outputs → GenerateResponse through
 *                its co_output callbacks; Tokenize, ListModels, Health.
 *   http.c       the HTTP adapter (http.h), the OpenAI-compatible API on its own listener
 *                (--http-listen), of the same shape; http_batch.c its Files and Batches API
 *                over the durable store (batch_store.c, --state-dir).
 *   batch.c      the batch runner, the third adapter: lines of stored batches → the HTTP
 *                mapping → co_request_admit at the lowest priority, results → the store.
 *                Adapters use only request.c's interface (and co_route_spare).
 *   request.c    the adapters' interface (co_request_admit, co_request_client_done, the ticks)
 *                and one request's life: token events → incremental detokenization, stop
 *                strings across token boundaries, usage and timings, the outputs (co_output:
 *                tokens, finish with reason and usage, error with a code); retry policy (a
 *                group's failure before any token, never a node's INVALID_ARGUMENT); the hooks
 *   router.c     which group runs a request (least outstanding tokens among healthy groups with
 *   disagg.c     room), the cluster-wide wait queue; with prefill and decode groups (disagg.c):
 *                a pair per request, decode admission by KV blocks, the hand-over
 *   membership.c tessera.v1.Worker/Attach: groups register (the KV fingerprint check), heartbeat,
 *                stream events; a broken stream or missed heartbeats ends a group
 *   metrics.c    the Prometheus metrics (metrics.h): request.c and membership.c report,
 *                GET /metrics renders
 *   main.c       flags, the server, the timer tick (heartbeat timeouts, deadlines), SIGTERM
 *
 * Threads and the lock. gRPC callbacks run on the process's one completion-queue thread (the
 * rpc loop); the main thread runs a 100 ms tick and the shutdown. Both take co->mu, the one lock
 * of the coordinator, for everything they touch here; it is held only for bookkeeping and
 * non-blocking ts_rpc_call_* sends, never across a wait. Lock order: co->mu, then the rpc
 * wrapper's per-call locks (the wrapper calls back without holding them).
 *
 * Ownership. A request lives until both its adapter is done with it (co_request_client_done)
 * and no group holds it (its node reported the finish, or the group is gone); the request then
 * frees itself (co_request_maybe_free), calling its output's release. A group lives until its
 * Attach call's on_done and holds a reference to that call; the gRPC adapter's requests hold one
 * to theirs.
 */
#ifndef TS_COORDINATOR_H
#define TS_COORDINATOR_H

#include "common/buf.h"
#include "common/secret.h"
#include "coordinator/auth.h"
#include "coordinator/metrics.h"
#include "coordinator/prefix_index.h"
#include "request/request.h"
#include "rpc/rpc_server.h"
#include "tessera/v1/inference.pb-c.h"
#include "tessera/v1/worker.pb-c.h"
#include "tokenizer/tokenizer.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct co_group co_group;
typedef struct co_request co_request;
typedef struct coordinator coordinator;

/* How a request's results leave the coordinator: one front door (an adapter: the gRPC service
 * in api.c; next HTTP, the batch runner) gives each request it admits a table of these and its
 * own pointer (co_request.out_user). Called under co->mu, on whichever thread handles the event;
 * they must not block (queue, don't wait) nor call into the coordinator. */
typedef struct co_output {
    /* A piece of the completion: n bytes of text (whole UTF-8 characters, n may be 0; text is not
     * NUL-terminated), and the token that came with it (-1: none) and its log-probability.
     * 0; TS_E_EXHAUSTED when the client does not keep up (the request then fails with it);
     * TS_E_NOMEM; another code when the client is gone (the request is closed). */
    int (*tokens)(co_request *r, const char *text, size_t n, int32_t token, float logprob);
    /* The last piece: as above, with how it ended and the usage. The request is closed after. */
    int (*finish)(co_request *r, const char *text, size_t n, int32_t token, float logprob,
                  ts_finish_reason reason, const ts_request_usage *usage);
    /* The request failed: a TS_E_* code (the adapter maps it to its status: INVALID_ARGUMENT,
     * RESOURCE_EXHAUSTED, UNAVAILABLE, DEADLINE_EXCEEDED ...) and a message. */
    void (*error)(co_request *r, int code, const char *message);
    /* The request is being freed: let go of out_user. */
    void (*release)(co_request *r);
} co_output;

enum { CO_MAX_ATTEMPTS = 3, CO_HASH_BUCKETS = 4096, CO_MAX_REFUSALS = 8 };

struct co_request {
    uint64_t id;         /* coordinator-assigned, the node's request_id */
    char client_id[128]; /* GenerateRequest.request_id or a generated one */
    const co_output *out; /* where its results go (the adapter that admitted it) */
    void *out_user;       /* the adapter's (e.g. its rpc call) */
    /* The request model (request/request.h), validated; its prompt_ids are the tokenized prompt
     * and its params.stop_ids hold the end-of-sequence id unless ignore_eos. */
    ts_request req;

    ts_detok detok;
    /* While an output's tokens/finish runs for a token: that step's most probable ids and their
     * log-probs (params.top_logprobs of them; n_top 0 otherwise), borrowed from the event. */
    int32_t n_top;
    const int32_t *top_ids;
    const float *top_logprobs;
    ts_buf held;         /* decoded text not sent yet: it may begin a stop string */
    int32_t n_generated; /* tokens received from the node */
    int32_t *generated;  /* their ids (a failover replays them), capacity generated_cap */
    int32_t generated_cap;
    /* After a failover: the prompt ids followed by the first n_replay generated ones, which the
     * next group is sent (ts_request_params.replayed); NULL and 0 before. */
    int32_t *replay_ids;
    int32_t n_replay;
    int32_t n_cached;
    bool sent_first; /* the first message (with request_id) went out */
    int64_t t_arrival, t_dispatch, t_first, deadline_ns;
    int64_t t_last;            /* the latest token (inter-token latency) */
    co_metrics_series *series; /* metrics.h: its (group, priority class); NULL until needed */
    bool prompt_counted;       /* its prompt went into the metrics */

    co_group *group; /* the group running it, NULL when queued or released */
    co_group *avoid; /* after a failure there: try another group first */
    int attempts;
    bool queued;
    int64_t t_queued;
    bool closed;                 /* the client got its last output or error (or went away) */
    bool call_done;              /* the adapter is done with it (co_request_client_done) */
    co_request *q_prev, *q_next; /* wait queue */
    co_request *g_prev, *g_next; /* the group's requests */
    co_request *h_next;          /* hash chain */
    /* Another sample of this request's prompt (co_request_admit_sample): it waits until it
     * has its first token; 0 for a request of its own. */
    uint64_t lead_id;

    /* Disaggregated (disagg.c): the decode group that receives the KV (while `group` is the
     * prefill group) or that runs the request (on_decode; then `group` is the same). */
    co_group *decode;
    bool on_decode;
    uint64_t transfer_id; /* this attempt's KV transfer */
    int32_t first_token;  /* from the prefill group */
    int32_t kv_need;      /* blocks reserved on `decode` */
};

struct co_group {
    char name[128], role[16], host[128], peer[128], model_name[128];
    int32_t vocab, ctx, tp, kv_total, block_size, max_seqs;
    ts_rpc_call *call; /* reference held */
    bool registered, dead;
    int64_t last_seen;
    int32_t running, waiting, kv_free, kv_cached; /* from the last heartbeat */
    int64_t preemptions;                          /* the node's count, from the last one */
    int64_t cache_query_tokens, cache_hit_tokens; /* prefix cache, from the last heartbeat */
    int64_t cache_host_hit_tokens, cache_disk_hit_tokens; /* of the hits, from lower tiers */
    Tessera__V1__KvTierStats kv_tiers; /* the last heartbeat's (has_kv_tiers), for metrics */
    bool has_kv_tiers;
    int n_active;
    int64_t outstanding;    /* tokens still to process: prompts not started + tokens to generate */
    char kv_endpoint[1024]; /* Register.kv_endpoint: where a decode group receives KV */
    char fingerprint[64];   /* Register.model_fingerprint: KV moves only between equal ones */
    uint64_t fingerprint_value; /* the same, parsed: the root of its prefix-cache keys */
    co_prefix_index *prefix;    /* the block keys it holds (heartbeats; router.c) */
    char kv_type[16];       /* Register.kv_type */
    int32_t kv_committed;   /* disagg.c: blocks reserved by requests on or headed to it */
    int n_incoming;         /* disagg.c: requests prefilling elsewhere for it */
    int32_t kv_incoming;    /* disagg.c: the blocks those requests reserved */
    co_request *reqs;
    co_group *next;
};

/* What membership.c reports to the layers above it (set by co_requests_init, request.c), so that
 * membership never calls up the stack. Each runs under co->mu. */
typedef struct co_group_hooks {
    /* One TokenEvents message from group g. */
    void (*events)(coordinator *co, co_group *g, const Tessera__V1__TokenEvents *te);
    /* g has ended (g->dead is set): its requests must leave it (retried or failed). */
    void (*lost)(coordinator *co, co_group *g, const char *why);
    /* g is about to be freed: nothing may point at it any more. */
    void (*forget)(coordinator *co, co_group *g);
    /* A group attached, reported, or left: waiting requests may be dispatched. */
    void (*capacity)(coordinator *co);
} co_group_hooks;

struct coordinator {
    pthread_mutex_t mu;
    int heartbeat_ms, heartbeat_timeout_ms, max_queue; /* max_queue: per priority */
    bool round_robin;     /* --routing round-robin: groups in turn, caches and load ignored */
    uint64_t rr_turn;     /* the next turn of round_robin */
    int64_t t_started;    /* ts_now_ns() at start: groups get heartbeat_timeout_ms to attach */
    co_group_hooks hooks; /* membership.c → request.c (co_requests_init) */
    ts_tokenizer *tok;
    char model_name[256];
    char architecture[64];
    int32_t vocab, ctx_train;
    co_group *groups;
    co_request *buckets[CO_HASH_BUCKETS];
    co_request *q_head, *q_tail;
    int n_queued;
    uint64_t next_id;
    int64_t requests_active, requests_total;
    int64_t requests_retried; /* requests sent again after a group failed them (Health) */
    int64_t requests_failed_over;        /* of those, ones that had streamed tokens (replayed) */
    char refusals[CO_MAX_REFUSALS][512]; /* membership.c: the latest refused attaches (Health) */
    int n_refusals;                      /* ever; the latest are refusals[(n - 1) % MAX] ... */
    int64_t kv_transfers; /* disagg.c: transfers reported done, and their total time */
    double kv_transfer_ms_sum;
    bool shutting_down;
    co_metrics *metrics; /* metrics.h (its own lock) */
    /* What node groups must prove on the Worker listener (common/secret.h); "" when none is
     * configured (then the listener is loopback only). Set before serving, read-only after. */
    char cluster_secret[TS_SECRET_MAX];
    co_auth *auth;       /* auth.h: the API keys of both front doors (immutable) */
    bool protect_metrics; /* the keys guard Health, /health and /metrics too */
};

/* ---- api.c: the gRPC adapter (tessera.v1.Inference) ---- */
/* Every method but launcher_health checks the API keys (co->auth; health only with
 * co->protect_metrics): UNAUTHENTICATED without a valid "authorization: Bearer KEY".
 * launcher_health is Health without keys, for the Worker listener. */
void co_api_methods(coordinator *co, ts_rpc_method *generate, ts_rpc_method *tokenize,
                    ts_rpc_method *list_models, ts_rpc_method *health,
                    ts_rpc_method *launcher_health);

/* ---- membership.c: the bottom of the stack (node groups; reports up through co->hooks) ---- */
void co_membership_method(coordinator *co, ts_rpc_method *attach);
/* The Worker listener's ts_rpc_server_options.authorize (arg: the coordinator): a call must
 * carry co->cluster_secret as its "tessera-cluster-secret" metadata, else TS_E_UNAUTHENTICATED
 * (logged with the peer, never the secret) and the call never reaches a method. */
int co_membership_authorize(ts_rpc_call *call, void *arg);
/* Tick: ends groups that missed heartbeats. Under co->mu. */
void co_membership_tick(coordinator *co, int64_t now);
/* Ends a group (co->hooks.lost then takes its requests off it). Under co->mu. */
void co_group_fail(coordinator *co, co_group *g, const char *why);
/* Asks every group to shut down. Under co->mu. */
void co_membership_shutdown(coordinator *co, const char *reason);
int co_live_groups(const coordinator *co);
/* The largest context among the live groups (the model's when none): what a prompt must fit. */
int32_t co_largest_context(const coordinator *co);
/* The prompt a group is sent for r: the client's, plus the replayed tokens after a failover. */
static inline int32_t co_request_sent_prompt(const co_request *r) {
    return r->req.n_prompt_ids + r->n_replay;
}
/* Sends a message to a group; a failure ends the group. Under co->mu. Returns 0 or the error. */
int co_group_send(coordinator *co, co_group *g, const Tessera__V1__CoordinatorMessage *m);
void co_group_send_cancel(coordinator *co, co_group *g, uint64_t request_id);
/* The same, also dropping an incoming KV transfer on a decode group (disagg.c). */
void co_group_send_cancel_kv(coordinator *co, co_group *g, uint64_t request_id,
                             uint64_t kv_transfer_id);

/* ---- router.c and disagg.c: routing, below request.c, above membership.c ---- */
/* Sends the request to the best group, or queues it. 0; TS_E_EXHAUSTED when it would have to
 * wait and the queue is full; TS_E_UNAVAILABLE when no group serves. Under co->mu. */
int co_route(coordinator *co, co_request *r, bool front);
/* Dispatches queued requests while groups have room (nothing when no group is live). Under
 * co->mu. */
void co_route_queue(coordinator *co, int64_t now);
void co_queue_remove(coordinator *co, co_request *r);
/* How many more requests the live groups could start at once, keeping an eighth of each group's
 * sequence slots (at least one) free for interactive requests and counting the requests already
 * waiting: what the batch runner fills, so that its work never waits in the queue. Under
 * co->mu. */
int co_route_spare(const coordinator *co);
/* Of the groups `fits` accepts, the one with the least work ahead of the request: its
 * outstanding tokens plus the prompt tokens it does not hold in its prefix cache (from its
 * heartbeats); fewer active requests break a tie; the group the request just failed on only when
 * no other fits. NULL when none fits. The one choice of the router and of disagg.c's prefill
 * group. Under co->mu. */
co_group *co_route_least_work(coordinator *co, const co_request *r,
                              bool (*fits)(const co_group *g, const co_request *r));
/* Detaches a request from its group (accounting). */
void co_group_release(co_group *g, co_request *r);

/* Sends the request to group g (router.c's dispatch, for disagg.c's hand-over). */
int co_submit_to(coordinator *co, co_group *g, co_request *r);

/* ---- disagg.c ---- */
/* Disaggregated serving is on while at least one prefill and one decode group are live; then
 * requests go prefill group → decode group, else (fallback) any group runs them whole. */
bool co_disagg_on(const coordinator *co);
/* The prefill group for r with a decode group reserved for it (r->decode, r->transfer_id set),
 * or NULL when either pool has no room (r waits: back-pressure). Under co->mu. */
co_group *co_disagg_pick(coordinator *co, co_request *r);
/* r's first token came from its prefill group g (and does not end r): r moves to its decode
 * group, which waits for the KV itself. No-op unless r is on g in its prefill phase. 0, or
 * TS_E_UNAVAILABLE when the decode group is gone: r is then off both groups and the caller
 * fails it. */
int co_disagg_handover(coordinator *co, co_group *g, co_request *r);
/* The prefill group g reported r's KV delivered (statistics; hands over if not done yet, with
 * co_disagg_handover's result). */
int co_disagg_transferred(coordinator *co, co_group *g, co_request *r,
                          const Tessera__V1__TokenEvent *ev);
/* r has left group g (finished, failed, or g is gone): frees its reservation and, when it
 * left the prefill group without a hand-over, tells the decode group to drop the transfer. */
void co_disagg_left(coordinator *co, co_group *g, co_request *r);
/* g is being freed: no request may point at it. */
void co_disagg_forget_group(coordinator *co, co_group *g);

/* ---- request.c: the front doors' interface (every adapter uses only these) ---- */
/* Admits a request: checks the model name, tokenizes a text prompt, validates the whole request
 * (ts_request_validate against the vocabulary and the largest context), and routes it. *req is
 * moved into the request (emptied here, also on failure). deadline_ns: when the client stops
 * waiting (INT64_MAX: never; req->timeout_ms shortens it). On success *out is the request, whose
 * results go to `out` / `out_user`; the adapter calls co_request_client_done when its side is
 * over. On failure nothing was admitted and nothing will be called: TS_E_INVALID (the message
 * names the field), TS_E_UNAVAILABLE (no group serves, shutting down), TS_E_EXHAUSTED (the queue
 * is full), TS_E_NOMEM. Under co->mu. */
int co_request_admit(coordinator *co, ts_request *req, int64_t deadline_ns, const co_output *out,
                     void *out_user, co_request **r_out);
/* The same for another sample of lead's prompt (a request's n > 1 choices): admitted, validated
 * and refused like any request, it then waits in the queue (outside --max-queued-requests:
 * its bound is n) until lead has its first token or is over, and goes to lead's group when that
 * has room, so that it reads the prompt's KV from the prefix cache instead of computing it again.
 * Under co->mu, with lead admitted by co_request_admit (or this) under the same hold. */
int co_request_admit_sample(coordinator *co, const co_request *lead, ts_request *req,
                            int64_t deadline_ns, const co_output *out, void *out_user,
                            co_request **r_out);
/* The adapter's side is over (the client finished, cancelled or went away): a request still
 * running is cancelled on its group (which frees its KV blocks at once); the request is freed
 * when no group holds it. Under co->mu. */
void co_request_client_done(coordinator *co, co_request *r);
/* Tick: ends requests whose deadline passed (TS_E_TIMEOUT), and requests that waited longer
 * than the heartbeat timeout with no group at all (TS_E_UNAVAILABLE). Under co->mu. */
void co_request_tick(coordinator *co, int64_t now);
/* Sets co->hooks: how membership's reports reach the requests. Once, before serving. */
void co_requests_init(coordinator *co);
/* True when `name` is "" / NULL (the default) or the served model's name. */
bool co_serves_model(const coordinator *co, const char *name);

co_request *co_request_find(coordinator *co, uint64_t id);
void co_request_insert(coordinator *co, co_request *r);
/* Ends the request with an error (a TS_E_* code; its output's error callback; no-op when
 * already closed). Under co->mu. */
void co_request_fail(coordinator *co, co_request *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Frees the request when nothing holds it any more. Under co->mu. */
void co_request_maybe_free(coordinator *co, co_request *r);
void co_request_destroy(co_request *r);

#endif
