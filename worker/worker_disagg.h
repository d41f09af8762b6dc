/*
 * worker_disagg.h — the prefill/decode disaggregation part of a node group's leader (internal
 * to tessera-node; worker.c drives it). Issue 5; the transfer itself is kv_transfer_group.h.
 *
 * Prefill role, a Submit with kv_transfer_id and kv_endpoints (request R, transfer T):
 *   submit   every rank connects to the decode ranks (ts_kvx_group_send_open), then R runs in
 *            the scheduler with max_tokens 1;
 *   arm      before the step that computes R's last prompt tokens, the scheduler's prompt hook
 *            arms the transfer (send_arm): every rank ships each layer of R's blocks from the
 *            engine's layer hook as soon as that layer is computed, overlapping the step;
 *   release  when R's first token finishes it, the scheduler's release hook queues the end
 *            frames (send_end; if arming failed, send_blocks first copies every layer out before
 *            the blocks go back to the pool); the first token's event goes out with no finish
 *            (the request goes on at the decode group) unless that token ends the request (a
 *            stop id, max_tokens 1, the context full), in which case the transfer is aborted;
 *   poll     between steps send_poll until decided: then one event, kv_transferred (the decode
 *            group holds the KV; this group holds nothing of R) or a finish ERROR.
 *   A transfer that fails before the first token's event left (open or ship) turns that event
 *   into an ERROR finish with no token, so the coordinator may still retry the request.
 *
 * Decode role, a Submit with kv_expect (R, T, first token F):
 *   poll     recv_poll(T) between steps; once complete, recv_claim takes the blocks from the
 *            scheduler's pool and installs them on every rank (no room: retried at the next
 *            poll, the request waits), then ts_sched_submit_prefilled continues R from F.
 *            A failed transfer, or one not complete within timeout_ms of the Submit, finishes
 *            R with ERROR (and is dropped on every rank).
 *
 * Cancel: a request still in the scheduler is cancelled there by worker.c (its CANCELLED event
 * comes from the scheduler); here its sender is aborted or its incoming transfer dropped, and a
 * request only this module still holds gets its CANCELLED event from here. Cancel's
 * kv_transfer_id drops an incoming transfer that no Submit announced yet.
 *
 * Threads: the engine thread only, like the scheduler.
 */
#ifndef TS_NODE_WORKER_DISAGG_H
#define TS_NODE_WORKER_DISAGG_H

#include "kvx/kv_transfer_group.h"
#include "node/scheduler.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct ts_wdis ts_wdis;

/* An event for the coordinator: a scheduler-style event plus, for the prefill role, the
 * transfer's outcome (kv_transferred with its time) and an error text for ERROR finishes. */
typedef void (*ts_wdis_emit)(void *user, const ts_sched_event *ev, const char *error,
                             bool kv_transferred, float kv_transfer_ms);

/* Installs the scheduler's release hook. timeout_ms: how long a decode Submit waits for its
 * transfer (<= 0: 30000). */
int ts_wdis_create(ts_kvx_group *g, ts_sched *sched, int32_t max_ctx, int32_t block_size,
                   int timeout_ms, ts_wdis_emit emit, void *user, ts_wdis **out);
/* Aborts what is left (ts_wdis_abort_all without events) and removes the hook. */
void ts_wdis_destroy(ts_wdis *d);

/* A disaggregated Submit (kv_endpoints or kv_expect set; p from its fields). Failures finish the
 * request with an ERROR event. */
void ts_wdis_submit_prefill(ts_wdis *d, uint64_t id, uint64_t transfer_id, const char *endpoints,
                            const int32_t *prompt, int32_t n_prompt, const ts_request_params *p);
void ts_wdis_submit_decode(ts_wdis *d, uint64_t id, uint64_t transfer_id, int32_t first_token,
                           const int32_t *prompt, int32_t n_prompt, const ts_request_params *p);

/* After ts_sched_cancel (in_sched: it found the request). */
void ts_wdis_cancel(ts_wdis *d, uint64_t id, uint64_t transfer_id, bool in_sched);

/* The scheduler's events pass through here before they go out: a prefill request's first
 * token loses its finish while its KV is on the way. */
void ts_wdis_filter(ts_wdis *d, ts_sched_event *ev, const char **error);

/* Between steps: transfers' progress (and the events that result). */
void ts_wdis_poll(ts_wdis *d);
/* Transfers in flight or waiting to be claimed: the engine loop must keep polling. */
bool ts_wdis_busy(const ts_wdis *d);
/* Ends every transfer (stream lost, shutdown) with `reason` events for the requests that only
 * this module holds. */
void ts_wdis_abort_all(ts_wdis *d, ts_finish_reason reason);

#endif
