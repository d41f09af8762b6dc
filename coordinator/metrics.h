/*
 * metrics.h — the coordinator's Prometheus metrics (GET /metrics, docs/api.md), measured at the
 * coordinator from monotonic clocks (common/clock.h), named in parallel to vLLM's so that its
 * dashboards work with the prefix changed from vllm: to tessera:.
 *
 * Per request (request.c reports, under co->mu): counters of prompt and generated tokens,
 * prefix-cache queries and hits (the prompt and cached tokens its group reported), finished
 * requests by finished_reason (stop, length, abort: the client went away first) and failed ones by
 * error, and the histograms of time to first token, inter-token latency, end-to-end latency and
 * queue time. Their labels: model, group (the node group that ran it; "" when none did), and
 * priority_class ("interactive": priority >= 0, "batch": below). Per group (membership.c
 * reports): preemptions, from the nodes' heartbeats. Retries and failovers (request.c's
 * co->requests_retried and co->requests_failed_over, Health's counters) are read, like the
 * gauges, from the coordinator's state when the text is rendered. Gauges (requests running and waiting, KV
 * cache usage) are read from the coordinator's state when the text is rendered.
 *
 * Series live as long as the co_metrics (a group that leaves keeps its counters; Prometheus
 * counters never go back). Thread-safety: every function takes the metrics' own lock, a leaf
 * lock (it may be taken under co->mu, never the other way round).
 */
#ifndef TS_COORDINATOR_METRICS_H
#define TS_COORDINATOR_METRICS_H

#include "common/buf.h"
#include "request/request.h"

#include <stdint.h>

typedef struct co_metrics co_metrics;
typedef struct co_metrics_series co_metrics_series; /* one (group, priority class) */
struct coordinator;

/* 0 or TS_E_NOMEM. */
int co_metrics_create(co_metrics **out);
void co_metrics_destroy(co_metrics *m); /* NULL: no-op */

/* The series of (group, priority): found or made. NULL only when out of memory (every
 * co_metrics_* call below then does nothing). The pointer stays valid until destroy. */
co_metrics_series *co_metrics_series_of(co_metrics *m, const char *group, int32_t priority);

/* The group a series is of. */
const char *co_metrics_series_group(const co_metrics_series *s);

/* A request's prompt as its group reported it: n_prompt tokens of which n_cached came from
 * the prefix cache. Once per request. */
void co_metrics_prompt(co_metrics *m, co_metrics_series *s, int32_t n_prompt, int32_t n_cached);
/* Its first generated token: queue_ns from arrival to dispatch, ttft_ns to this token. */
void co_metrics_first_token(co_metrics *m, co_metrics_series *s, int64_t queue_ns, int64_t ttft_ns);
/* A later token, itl_ns after the one before. */
void co_metrics_next_token(co_metrics *m, co_metrics_series *s, int64_t itl_ns);
/* The request ended: stop or length (its client got the last output) or cancelled (the client
 * went away first: "abort"), e2e_ns after its arrival. */
void co_metrics_finished(co_metrics *m, co_metrics_series *s, ts_finish_reason reason,
                         int64_t e2e_ns);
/* The request failed with a TS_E_* code (refused at admission or ended with an error). */
void co_metrics_failed(co_metrics *m, co_metrics_series *s, int code);
/* Group `group` reported n more preemptions. */
void co_metrics_preemptions(co_metrics *m, const char *group, int64_t n);

/* Appends the Prometheus text exposition format (version 0.0.4) of everything, the gauges from
 * co's state (takes co->mu; the caller must not hold it). 0 or TS_E_NOMEM. */
int co_metrics_render(struct coordinator *co, ts_buf *out);

#endif
