/*
 * worker.h — the group leader of a serving node: attaches to the coordinator and runs the
 * engine for it.
 *
 * The leader dials the coordinator (rpc/rpc_client.h), opens one bidirectional
 * /tessera.v1.Worker/Attach stream, sends Register (model, vocabulary, context, TP degree, KV
 * blocks) and waits for Welcome. Then two threads share the work:
 *   - a receiver thread blocks on the stream and puts Submit / Cancel / Shutdown messages (and
 *     "the stream ended") into an inbox;
 *   - the engine thread (the caller of ts_worker_run) drains the inbox, calls
 *     ts_sched_submit / ts_sched_cancel / ts_sched_step, and sends every step's events as one
 *     TokenEvents message.
 * The receiver thread also sends a Heartbeat every Welcome.heartbeat_ms with the figures the
 * engine thread published after its last step, so a long step is not taken for a dead group (a
 * hung engine is caught by the group's collective timeouts; a dead process sends nothing).
 * The engine never waits on the network: sends go into the stream's bounded queue without
 * waiting; a queue that stays full means the coordinator stopped reading, and the connection is
 * treated as broken.
 *
 * A bad Submit (ids outside the vocabulary, a prompt that does not fit the context, max_tokens
 * < 1, bad sampling values) finishes that request with FINISH_REASON_ERROR and the reason.
 *
 * When the stream breaks, every active request is aborted (their KV blocks freed; the
 * coordinator fails or retries them) and the leader dials again for up to connect_timeout_ms;
 * after that it gives up with TS_E_UNAVAILABLE. Shutdown from the coordinator ends the run with
 * 0. *stop (set by a SIGTERM handler) drains: new Submits are refused with an error, running
 * requests get up to drain_ms to finish, the rest are aborted, and the run ends with 0.
 *
 * Disaggregation (issue 5): with o->kvx, a Submit with kv_endpoints (prefill role) or kv_expect
 * (decode role) goes to worker_disagg.h, which ships or claims the request's KV between steps;
 * Register.kv_endpoint announces the group's receivers.
 *
 * With a TP group of several ranks the followers time out waiting for a step plan after
 * --comm-timeout-ms; an idle leader therefore runs a one-token keep-alive request (its events are
 * not reported) every quarter of that time.
 */
#ifndef TS_NODE_WORKER_H
#define TS_NODE_WORKER_H

#include "node/runtime.h"

#include <signal.h>

typedef struct ts_worker_options {
    const char *coordinator;      /* "host:port", or NULL to read coordinator_file */
    const char *coordinator_file; /* a file holding "host:port", waited for */
    const char *cluster_secret;   /* sent with Attach (common/secret.h); NULL or "": none */
    int connect_timeout_ms;       /* how long to try to reach the coordinator; <= 0: 60000 */
    const char *name;             /* group name; NULL: HOST-PID; "-gK" is appended when one
                                     MPI world holds several groups */
    const char *role;             /* "mixed", "prefill" or "decode" */
    int comm_timeout_ms;          /* the runtime's collective timeout (for the keep-alive) */
    int drain_ms;                 /* on *stop, time given to running requests; <= 0: 10000 */
    struct ts_kvx_group *kvx;     /* the group's KV transfer (kv_transfer_group.h), or NULL:
                                     no disaggregated requests */
} ts_worker_options;

/* Serves until Shutdown, *stop, or the coordinator is unreachable for connect_timeout_ms.
 * Leader only; the runtime stays open (the caller closes it, which releases the followers).
 * Returns 0 on an orderly end, else the error (message set). */
int ts_worker_run(ts_runtime *rt, const ts_worker_options *o, volatile sig_atomic_t *stop);

#endif
