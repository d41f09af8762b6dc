/*
 * request.c — one Generate request's life in the coordinator (see coordinator.h).
 *
 * Text. Nodes send token ids; each token's bytes go through the streaming detokenizer (whole
 * UTF-8 characters only) into `held`. Stop strings can span tokens, so text that could still be
 * the beginning of a stop string is held back: after each token the earliest complete stop
 * string ends the request (text before it is sent, the match and the rest are not); otherwise
 * everything but the longest suffix that is a prefix of some stop string is sent. A stop string
 * starts with a lead byte, so the cut is always on a character boundary.
 *
 * Messages. One GenerateResponse per token (token id, its releasable text, log-prob when asked);
 * the first also carries request_id; the last carries finish_reason, usage and request_id. A
 * client that does not read (its send queue full) is ended with RESOURCE_EXHAUSTED.
 */
#include "coordinator/coordinator.h"

#include "common/clock.h"
#include "common/error.h"
#include "common/log.h"
#include "request/request_pb.h"
#include "rpc/rpc_status.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the id → request table ---- */

co_request *co_request_find(coordinator *co, uint64_t id) {
    for (co_request *r = co->buckets[id % CO_HASH_BUCKETS]; r; r = r->h_next)
        if (r->id == id) return r;
    return NULL;
}

void co_request_insert(coordinator *co, co_request *r) {
    co_request **b = &co->buckets[r->id % CO_HASH_BUCKETS];
    r->h_next = *b;
    *b = r;
}

static void table_remove(coordinator *co, co_request *r) {
    for (co_request **p = &co->buckets[r->id % CO_HASH_BUCKETS]; *p; p = &(*p)->h_next)
        if (*p == r) {
            *p = r->h_next;
            return;
        }
}

void co_request_destroy(co_request *r) {
    if (!r) return;
    if (r->out && r->out->release) r->out->release(r);
    ts_request_free(&r->req);
    ts_buf_free(&r->held);
    free(r->generated);
    free(r->replay_ids);
    free(r);
}

void co_request_maybe_free(coordinator *co, co_request *r) {
    if (!r->call_done || r->group || r->queued) return;
    table_remove(co, r);
    co_request_destroy(r);
}

/* The request's metrics series: that of the group it last heard from, or of no group. */
static co_metrics_series *series_of(coordinator *co, co_request *r) {
    if (!r->series) r->series = co_metrics_series_of(co->metrics, "", r->req.params.priority);
    return r->series;
}

/* The client's call is over from our side: count it, stop its work on the node. */
static void close_request(coordinator *co, co_request *r) {
    if (r->closed) return;
    r->closed = true;
    co->requests_active--;
    if (r->queued) co_queue_remove(co, r);
    if (r->group) co_group_send_cancel(co, r->group, r->id);
}

void co_request_fail(coordinator *co, co_request *r, int code, const char *fmt, ...) {
    if (r->closed) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ts_log(TS_LOG_INFO, r->client_id, "request failed: %s: %s", ts_error_name(code), msg);
    co_metrics_failed(co->metrics, series_of(co, r), code);
    r->out->error(r, code, msg);
    close_request(co, r);
}

/* ---- admission (the adapters' entry) ---- */

bool co_serves_model(const coordinator *co, const char *name) {
    return !name || !name[0] || !strcmp(name, co->model_name);
}

/* Model name, tokenizing, the one validation (request/request.h). */
static int prepare(coordinator *co, ts_request *rq) {
    if (!co_serves_model(co, rq->model))
        return ts_error_set(TS_E_INVALID, "unknown model '%s' (this cluster serves '%s')",
                            rq->model, co->model_name);
    ts_request_pick_seed(rq); /* none given: a fresh one, so unseeded requests differ */
    int rc = ts_request_validate(rq, NULL); /* the fields, before any tokenizing work */
    if (!rc && rq->prompt) {
        bool add_bos = !rq->no_bos && ts_tokenizer_adds_bos(co->tok);
        int32_t *ids = NULL;
        size_t n = 0;
        rc = ts_tokenizer_encode(co->tok, rq->prompt, strlen(rq->prompt), add_bos, false, &ids,
                                 &n);
        if (rc) return ts_error_wrap(rc, "tokenizing the prompt");
        if (n > INT32_MAX) {
            free(ids);
            return ts_error_set(TS_E_INVALID, "the prompt is too long");
        }
        ts_request_take_ids(rq, ids, (int32_t)n);
    }
    size_t n_eog = 0;
    const int32_t *eog = ts_tokenizer_eog_ids(co->tok, &n_eog);
    if (!rc) rc = ts_request_add_eos_ids(rq, eog, n_eog);
    ts_request_model model = {.n_vocab = co->vocab, .n_ctx = co_largest_context(co)};
    if (!rc) rc = ts_request_validate(rq, &model);
    return rc;
}

static int admit(coordinator *co, uint64_t lead_id, ts_request *req, int64_t deadline_ns,
                 const co_output *out, void *out_user, co_request **r_out) {
    *r_out = NULL;
    co_request *r = calloc(1, sizeof *r);
    if (!r) {
        ts_request_free(req);
        return ts_error_set(TS_E_NOMEM, "coordinator out of memory");
    }
    r->req = *req;
    memset(req, 0, sizeof *req);
    r->t_arrival = ts_now_ns();
    r->deadline_ns = deadline_ns;
    if (r->req.timeout_ms > 0 && r->t_arrival + r->req.timeout_ms * 1000000 < deadline_ns)
        r->deadline_ns = r->t_arrival + r->req.timeout_ms * 1000000;
    r->id = ++co->next_id;
    if (r->req.request_id && r->req.request_id[0])
        snprintf(r->client_id, sizeof r->client_id, "%s", r->req.request_id);
    else
        snprintf(r->client_id, sizeof r->client_id, "req-%llx-%llu",
                 (unsigned long long)(r->t_arrival & 0xffffffffffULL), (unsigned long long)r->id);
    int rc = co->shutting_down ? ts_error_set(TS_E_UNAVAILABLE, "the coordinator is shutting down")
                               : prepare(co, &r->req);
    if (rc) {
        co_metrics_failed(co->metrics, series_of(co, r), rc);
        co_request_destroy(r); /* no output yet: nothing to release */
        return rc;
    }
    co_request_insert(co, r);
    co->requests_active++;
    co->requests_total++;
    /* Outputs first: a failed send to the chosen group may already end the request. */
    r->out = out;
    r->out_user = out_user;
    r->lead_id = lead_id;
    rc = co_route(co, r, false);
    if (rc) {
        /* Not admitted (nothing was sent): the adapter reports rc and keeps its out_user. */
        co_metrics_failed(co->metrics, series_of(co, r), rc);
        r->out = NULL;
        r->closed = true;
        r->call_done = true;
        co->requests_active--;
        co_request_maybe_free(co, r);
        return rc;
    }
    ts_log(TS_LOG_DEBUG, r->client_id, "admitted: %d prompt tokens, max %d", r->req.n_prompt_ids,
           r->req.params.max_tokens);
    *r_out = r;
    return TS_OK;
}

int co_request_admit(coordinator *co, ts_request *req, int64_t deadline_ns, const co_output *out,
                     void *out_user, co_request **r_out) {
    return admit(co, 0, req, deadline_ns, out, out_user, r_out);
}

int co_request_admit_sample(coordinator *co, const co_request *lead, ts_request *req,
                            int64_t deadline_ns, const co_output *out, void *out_user,
                            co_request **r_out) {
    return admit(co, lead->id, req, deadline_ns, out, out_user, r_out);
}

void co_request_client_done(coordinator *co, co_request *r) {
    if (!r->closed) {
        ts_log(TS_LOG_INFO, r->client_id, "client went away (cancel, deadline or disconnect)");
        co_metrics_finished(co->metrics, series_of(co, r), TS_FINISH_CANCELLED,
                            ts_now_ns() - r->t_arrival);
        close_request(co, r);
    }
    r->call_done = true;
    co_request_maybe_free(co, r);
}

void co_request_tick(coordinator *co, int64_t now) {
    /* Collect first: failing a request may end a group (a failed Cancel send), which frees its
     * finished requests, so the table must not be walked meanwhile. Expired requests are not
     * closed, hence not freed by that. */
    co_request *expired[64];
    int n = 0;
    for (int b = 0; b < CO_HASH_BUCKETS && n < 64; b++)
        for (co_request *r = co->buckets[b]; r && n < 64; r = r->h_next)
            if (!r->closed && now > r->deadline_ns) expired[n++] = r;
    for (int i = 0; i < n; i++)
        co_request_fail(co, expired[i], TS_E_TIMEOUT, "the deadline passed");
    if (co_live_groups(co) > 0) return;
    /* No group at all for longer than a group gets to report: waiting would not help. */
    for (co_request *r = co->q_head, *next; r; r = next) {
        next = r->q_next;
        if (now - r->t_queued > (int64_t)co->heartbeat_timeout_ms * 1000000) {
            co_queue_remove(co, r);
            co_request_fail(co, r, TS_E_UNAVAILABLE, "no node group is serving");
            co_request_maybe_free(co, r);
        }
    }
}

/* ---- stop strings ---- */

/* Earliest complete stop string in text[0..len): its offset, or -1. */
static long find_stop(const co_request *r, const char *text, size_t len) {
    long best = -1;
    if (!text || len == 0) return best;
    for (int i = 0; i < r->req.n_stops; i++) {
        const char *hit = memmem(text, len, r->req.stops[i], strlen(r->req.stops[i]));
        if (hit && (best < 0 || hit - text < best)) best = hit - text;
    }
    return best;
}

/* Longest suffix of text[0..len) that is a proper prefix of some stop string. */
static size_t stop_holdback(const co_request *r, const char *text, size_t len) {
    size_t keep = 0;
    for (int i = 0; i < r->req.n_stops; i++) {
        size_t sl = strlen(r->req.stops[i]);
        for (size_t k = sl - 1 < len ? sl - 1 : len; k > keep; k--)
            if (!memcmp(text + len - k, r->req.stops[i], k)) {
                keep = k;
                break;
            }
    }
    return keep;
}

/* ---- messages ---- */

static void fill_usage(const co_request *r, ts_request_usage *u) {
    int64_t now = ts_now_ns();
    u->prompt_tokens = r->req.n_prompt_ids;
    u->completion_tokens = r->n_generated;
    u->cached_prompt_tokens = r->n_cached;
    u->queue_ms = r->t_dispatch ? ts_ns_to_ms(r->t_dispatch - r->t_arrival) : 0.0;
    u->ttft_ms = r->t_first ? ts_ns_to_ms(r->t_first - r->t_arrival) : 0.0;
    u->total_ms = ts_ns_to_ms(now - r->t_arrival);
}

/* Hands one output to the adapter: `n_text` bytes of held text, an optional token, an optional
 * finish. The text is removed from `held`. */
static void send_message(coordinator *co, co_request *r, size_t n_text, int32_t token,
                         float logprob, ts_finish_reason finish) {
    int rc;
    if (finish == TS_FINISH_NONE) {
        rc = r->out->tokens(r, r->held.data, n_text, token, logprob);
    } else {
        ts_request_usage usage;
        fill_usage(r, &usage);
        rc = r->out->finish(r, r->held.data, n_text, token, logprob, finish, &usage);
    }
    if (n_text) {
        memmove(r->held.data, r->held.data + n_text, r->held.len - n_text);
        r->held.len -= n_text;
    }
    r->sent_first = true;
    if (rc == TS_E_EXHAUSTED) {
        co_request_fail(co, r, TS_E_EXHAUSTED, "the client does not read its stream fast enough");
    } else if (rc == TS_E_NOMEM) {
        co_request_fail(co, r, TS_E_NOMEM, "coordinator out of memory");
    } else if (rc) {
        co_metrics_finished(co->metrics, series_of(co, r), TS_FINISH_CANCELLED,
                            ts_now_ns() - r->t_arrival);
        close_request(co, r); /* the client has gone; the adapter's done follows */
    } else if (finish != TS_FINISH_NONE) {
        co_metrics_finished(co->metrics, series_of(co, r), finish, ts_now_ns() - r->t_arrival);
        ts_log(TS_LOG_DEBUG, r->client_id, "finished (%d prompt + %d tokens)", r->req.n_prompt_ids,
               r->n_generated);
        close_request(co, r);
    }
}

static void on_token(coordinator *co, co_request *r, int32_t token, float logprob) {
    if (ts_detok_push(&r->detok, co->tok, token, &r->held)) {
        co_request_fail(co, r, TS_E_NOMEM, "coordinator out of memory");
        return;
    }
    long stop = find_stop(r, r->held.data, r->held.len);
    if (stop >= 0) {
        r->held.len = (size_t)stop;
        send_message(co, r, r->held.len, token, logprob, TS_FINISH_STOP);
        return;
    }
    size_t keep = stop_holdback(r, r->held.data, r->held.len);
    send_message(co, r, r->held.len - keep, token, logprob, TS_FINISH_NONE);
}

/* Group g failed r after it streamed tokens. Outputs are deterministic (the same seed, prompt
 * and tokens give the same next token on any group, tests/integration/test_failover.py), so r
 * goes on elsewhere: the prompt plus every token streamed so far is sent as a replay
 * (ts_request_params.replayed), and the client's stream continues with no gap and no repeat.
 * 0 when r was routed again (run or queued); otherwise r has been failed with UNAVAILABLE. */
static int fail_over(coordinator *co, co_group *g, co_request *r, const char *why) {
    int32_t n_prompt = r->req.n_prompt_ids, n = r->n_generated;
    const char *no = co->shutting_down                        ? "the coordinator is shutting down"
                     : r->attempts >= CO_MAX_ATTEMPTS         ? "it failed on too many groups"
                     : n >= r->req.params.max_tokens          ? "nothing is left to generate"
                     : co_live_groups(co) == 0                ? "no other node group is serving"
                     : n_prompt + n >= co_largest_context(co) ? "no group's context holds it"
                                                              : NULL;
    if (!no) {
        int32_t *ids = realloc(r->replay_ids, (size_t)(n_prompt + n) * sizeof *ids);
        if (!ids) {
            no = "coordinator out of memory";
        } else {
            memcpy(ids, r->req.prompt_ids, (size_t)n_prompt * sizeof *ids);
            memcpy(ids + n_prompt, r->generated, (size_t)n * sizeof *ids);
            r->replay_ids = ids;
            r->n_replay = n;
        }
    }
    if (no) {
        co_request_fail(co, r, TS_E_UNAVAILABLE,
                        "node group %s failed after %d tokens were streamed (%s); not continued "
                        "elsewhere: %s",
                        g->name, n, why, no);
        return TS_E_UNAVAILABLE;
    }
    ts_log(TS_LOG_INFO, r->client_id,
           "group %s failed after %d tokens were streamed (%s): continuing on another group",
           g->name, n, why);
    co->requests_retried++;
    co->requests_failed_over++;
    r->avoid = g;
    if (co_route(co, r, true)) {
        co_request_fail(
            co, r, TS_E_UNAVAILABLE,
            "node group %s failed after %d tokens were streamed (%s); no other group: %s", g->name,
            n, why, ts_error_message());
        return TS_E_UNAVAILABLE;
    }
    return TS_OK;
}

static void on_finish(coordinator *co, co_group *g, co_request *r,
                      const Tessera__V1__TokenEvent *ev) {
    ts_finish_reason reason = ts_finish_reason_from_pb(ev->finish_reason);
    bool failed = reason == TS_FINISH_ERROR || reason == TS_FINISH_CANCELLED;
    if (failed && ts_rpc_error_from_status(ev->error_status) == TS_E_INVALID) {
        /* The request itself is bad (the node's validation is the coordinator's, so only a
         * group that differs from what it registered gets here): no other group would take
         * it, and the group did not fail. */
        co_request_fail(co, r, TS_E_INVALID, "%s",
                        ev->error && ev->error[0] ? ev->error : "the node refused the request");
        return;
    }
    if (failed && r->n_generated == 0 && r->attempts < CO_MAX_ATTEMPTS && !co->shutting_down) {
        /* Nothing reached the client: run it elsewhere. */
        ts_log(TS_LOG_INFO, r->client_id, "group %s could not run the request (%s); retrying",
               g->name, ev->error && ev->error[0] ? ev->error : "cancelled");
        co->requests_retried++;
        r->avoid = g;
        int rc = co_route(co, r, true);
        if (rc)
            co_request_fail(co, r, TS_E_UNAVAILABLE, "node group %s: %s; no other group: %s",
                            g->name, ev->error && ev->error[0] ? ev->error : "cancelled",
                            ts_error_message());
        return;
    }
    if (failed && co->shutting_down) {
        co_request_fail(co, r, TS_E_UNAVAILABLE, "node group %s: %s", g->name,
                        ev->error && ev->error[0]
                            ? ev->error
                            : "the coordinator is shutting down (its grace period is over)");
        return;
    }
    if (failed) {
        (void)fail_over(co, g, r, ev->error && ev->error[0] ? ev->error : "cancelled");
        return;
    }
    if (ts_detok_flush(&r->detok, &r->held)) {
        co_request_fail(co, r, TS_E_NOMEM, "coordinator out of memory");
        return;
    }
    long stop = find_stop(r, r->held.data, r->held.len);
    if (stop >= 0) {
        r->held.len = (size_t)stop;
        reason = TS_FINISH_STOP;
    }
    send_message(co, r, r->held.len, -1, 0.0f, reason);
}

/* The disaggregated hand-over found no decode group (co_disagg_handover's error): r is off both
 * groups. */
static void handover_failed(coordinator *co, co_request *r) {
    char why[512];
    snprintf(why, sizeof why, "%s", ts_error_message());
    co_request_fail(co, r, TS_E_UNAVAILABLE, "%s", why);
    co_request_maybe_free(co, r);
}

static void on_event(coordinator *co, co_group *g, co_request *r,
                     const Tessera__V1__TokenEvent *ev) {
    if (ev->kv_transferred) { /* disaggregated: the prefill group handed over to decode */
        if (co_disagg_transferred(co, g, r, ev)) handover_failed(co, r);
        return;
    }
    if (r->decode && !r->on_decode && ev->token >= 0) r->first_token = ev->token;
    /* The prompt's cache hits are the prefill's: a decode group took the KV over (none cached) */
    if (ev->prompt_tokens > 0 && !r->on_decode && r->n_replay == 0)
        r->n_cached = ev->cached_prompt_tokens;
    if ((ev->prompt_tokens > 0 || ev->token >= 0) &&
        (!r->series || strcmp(co_metrics_series_group(r->series), g->name)))
        r->series = co_metrics_series_of(co->metrics, g->name, r->req.params.priority);
    if (ev->prompt_tokens > 0 && !r->prompt_counted) {
        r->prompt_counted = true;
        co_metrics_prompt(co->metrics, r->series, ev->prompt_tokens, ev->cached_prompt_tokens);
    }
    if (ev->token >= 0) {
        if (r->n_generated == r->generated_cap) { /* kept for a failover's replay */
            int32_t cap = r->generated_cap ? 2 * r->generated_cap : 64;
            int32_t *ids = realloc(r->generated, (size_t)cap * sizeof *ids);
            if (!ids) {
                co_request_fail(co, r, TS_E_NOMEM, "coordinator out of memory");
                return;
            }
            r->generated = ids;
            r->generated_cap = cap;
        }
        r->generated[r->n_generated] = ev->token;
        int64_t now = ts_now_ns();
        r->n_generated++;
        if (!r->t_first) {
            r->t_first = now;
            co_metrics_first_token(co->metrics, r->series, r->t_dispatch - r->t_arrival,
                                   now - r->t_arrival);
        } else {
            co_metrics_next_token(co->metrics, r->series, now - r->t_last);
        }
        r->t_last = now;
        g->outstanding--;
        if (!r->closed) {
            size_t n_top = ev->n_top_ids < ev->n_top_logprobs ? ev->n_top_ids : ev->n_top_logprobs;
            r->n_top = (int32_t)(n_top <= TS_MAX_TOP_LOGPROBS ? n_top : 0);
            r->top_ids = ev->top_ids;
            r->top_logprobs = ev->top_logprobs;
            on_token(co, r, ev->token, ev->logprob);
            r->n_top = 0; /* r may be closed, not freed: the adapter's done is still to come */
        }
    }
    if (ev->finish_reason == TESSERA__V1__FINISH_REASON__FINISH_REASON_UNSPECIFIED) {
        /* disaggregated: on to decode */
        if (ev->token >= 0 && co_disagg_handover(co, g, r)) handover_failed(co, r);
        return;
    }
    co_group_release(g, r);
    co_disagg_left(co, g, r);
    if (!r->closed) on_finish(co, g, r, ev);
    co_request_maybe_free(co, r);
}

/* ---- what membership reports (co->hooks) ---- */

static void hook_events(coordinator *co, co_group *g, const Tessera__V1__TokenEvents *te) {
    for (size_t i = 0; i < te->n_events && !g->dead; i++) {
        const Tessera__V1__TokenEvent *ev = te->events[i];
        co_request *r = co_request_find(co, ev->request_id);
        if (r && r->group == g) on_event(co, g, r, ev);
    }
    co_route_queue(co, ts_now_ns());
}

/* Requests of an ended group go back to the front of the queue (another group runs them): those
 * that streamed nothing as they were, the others as a replay of what they streamed (fail_over). */
static void hook_lost(coordinator *co, co_group *g, const char *why) {
    while (g->reqs) {
        co_request *r = g->reqs;
        co_group_release(g, r);
        co_disagg_left(co, g, r);
        if (r->closed) {
            co_request_maybe_free(co, r);
        } else if (r->n_generated == 0 && !co->shutting_down) {
            ts_log(TS_LOG_INFO, r->client_id, "group %s failed before any token: retrying",
                   g->name);
            co->requests_retried++;
            r->avoid = g;
            if (co_route(co, r, true))
                co_request_fail(co, r, TS_E_UNAVAILABLE, "node group %s failed (%s): %s", g->name,
                                why, ts_error_message());
            co_request_maybe_free(co, r);
        } else {
            (void)fail_over(co, g, r, why);
            co_request_maybe_free(co, r);
        }
    }
}

static void hook_forget(coordinator *co, co_group *g) {
    /* Requests that tried g first must not compare against a freed pointer later. */
    for (int b = 0; b < CO_HASH_BUCKETS; b++)
        for (co_request *r = co->buckets[b]; r; r = r->h_next)
            if (r->avoid == g) r->avoid = NULL;
    co_disagg_forget_group(co, g);
}

static void hook_capacity(coordinator *co) {
    co_route_queue(co, ts_now_ns());
}

void co_requests_init(coordinator *co) {
    co->hooks = (co_group_hooks){.events = hook_events,
                                 .lost = hook_lost,
                                 .forget = hook_forget,
                                 .capacity = hook_capacity};
}
