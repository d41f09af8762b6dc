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
    ts_rpc_call_unref(r->call);
    ts_request_free(&r->req);
    ts_buf_free(&r->held);
    free(r);
}

void co_request_maybe_free(coordinator *co, co_request *r) {
    if (!r->call_done || r->group || r->queued) return;
    table_remove(co, r);
    co_request_destroy(r);
}

/* The client's call is over from our side: count it, stop its work on the node. */
static void close_request(coordinator *co, co_request *r) {
    if (r->closed) return;
    r->closed = true;
    co->requests_active--;
    if (r->queued) co_queue_remove(co, r);
    if (r->group) co_group_send_cancel(co, r->group, r->id);
}

void co_request_fail(coordinator *co, co_request *r, int status, const char *fmt, ...) {
    if (r->closed) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ts_log(TS_LOG_INFO, r->client_id, "request failed: %s: %s", ts_rpc_status_name(status), msg);
    ts_rpc_call_abort(r->call, status, msg);
    close_request(co, r);
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

static void fill_usage(const co_request *r, Tessera__V1__Usage *u) {
    int64_t now = ts_now_ns();
    u->prompt_tokens = r->req.n_prompt_ids;
    u->completion_tokens = r->n_generated;
    u->cached_prompt_tokens = r->n_cached;
    u->queue_ms = r->t_dispatch ? ts_ns_to_ms(r->t_dispatch - r->t_arrival) : 0.0;
    u->ttft_ms = r->t_first ? ts_ns_to_ms(r->t_first - r->t_arrival) : 0.0;
    u->total_ms = ts_ns_to_ms(now - r->t_arrival);
}

/* Sends one message: `n_text` bytes of held text, an optional token, an optional finish. The
 * sent text is removed from `held`. */
static void send_message(coordinator *co, co_request *r, size_t n_text, int32_t token,
                         float logprob, Tessera__V1__FinishReason finish) {
    Tessera__V1__GenerateResponse m = TESSERA__V1__GENERATE_RESPONSE__INIT;
    Tessera__V1__Usage usage = TESSERA__V1__USAGE__INIT;
    char *text = malloc(n_text + 1);
    if (!text) {
        co_request_fail(co, r, TS_RPC_RESOURCE_EXHAUSTED, "coordinator out of memory");
        return;
    }
    if (n_text) memcpy(text, r->held.data, n_text);
    text[n_text] = '\0';
    m.text = text;
    if (token >= 0) {
        m.n_token_ids = 1;
        m.token_ids = &token;
        if (r->req.params.logprobs) {
            m.n_logprobs = 1;
            m.logprobs = &logprob;
        }
    }
    if (!r->sent_first || finish != TESSERA__V1__FINISH_REASON__FINISH_REASON_UNSPECIFIED)
        m.request_id = r->client_id;
    if (finish != TESSERA__V1__FINISH_REASON__FINISH_REASON_UNSPECIFIED) {
        m.finish_reason = finish;
        fill_usage(r, &usage);
        m.usage = &usage;
    }
    int rc = ts_rpc_call_send_pb(r->call, &m.base);
    free(text);
    if (n_text) {
        memmove(r->held.data, r->held.data + n_text, r->held.len - n_text);
        r->held.len -= n_text;
    }
    r->sent_first = true;
    if (rc == TS_E_EXHAUSTED) {
        co_request_fail(co, r, TS_RPC_RESOURCE_EXHAUSTED,
                        "the client does not read its stream fast enough");
    } else if (rc) {
        close_request(co, r); /* the call has ended; on_done follows */
    } else if (finish != TESSERA__V1__FINISH_REASON__FINISH_REASON_UNSPECIFIED) {
        ts_rpc_call_finish(r->call, TS_RPC_OK, NULL);
        ts_log(TS_LOG_DEBUG, r->client_id, "finished (%d prompt + %d tokens)", r->req.n_prompt_ids,
               r->n_generated);
        close_request(co, r);
    }
}

static void on_token(coordinator *co, co_request *r, int32_t token, float logprob) {
    if (ts_detok_push(&r->detok, co->tok, token, &r->held)) {
        co_request_fail(co, r, TS_RPC_RESOURCE_EXHAUSTED, "coordinator out of memory");
        return;
    }
    long stop = find_stop(r, r->held.data, r->held.len);
    if (stop >= 0) {
        r->held.len = (size_t)stop;
        send_message(co, r, r->held.len, token, logprob,
                     TESSERA__V1__FINISH_REASON__FINISH_REASON_STOP);
        return;
    }
    size_t keep = stop_holdback(r, r->held.data, r->held.len);
    send_message(co, r, r->held.len - keep, token, logprob,
                 TESSERA__V1__FINISH_REASON__FINISH_REASON_UNSPECIFIED);
}

static void on_finish(coordinator *co, co_group *g, co_request *r,
                      const Tessera__V1__TokenEvent *ev) {
    Tessera__V1__FinishReason reason = ev->finish_reason;
    bool failed = reason == TESSERA__V1__FINISH_REASON__FINISH_REASON_ERROR ||
                  reason == TESSERA__V1__FINISH_REASON__FINISH_REASON_CANCELLED;
    if (failed && ev->error_status == TS_RPC_INVALID_ARGUMENT) {
        /* The request itself is bad (the node's validation is the coordinator's, so only a
         * group that differs from what it registered gets here): no other group would take
         * it, and the group did not fail. */
        co_request_fail(co, r, TS_RPC_INVALID_ARGUMENT, "%s",
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
            co_request_fail(co, r, TS_RPC_UNAVAILABLE, "node group %s: %s; no other group: %s",
                            g->name, ev->error && ev->error[0] ? ev->error : "cancelled",
                            ts_error_message());
        return;
    }
    if (failed) {
        co_request_fail(co, r, TS_RPC_UNAVAILABLE, "node group %s: %s", g->name,
                        ev->error && ev->error[0] ? ev->error
                        : co->shutting_down
                            ? "the coordinator is shutting down (its grace period is over)"
                            : "the request was cancelled");
        return;
    }
    if (ts_detok_flush(&r->detok, &r->held)) {
        co_request_fail(co, r, TS_RPC_RESOURCE_EXHAUSTED, "coordinator out of memory");
        return;
    }
    long stop = find_stop(r, r->held.data, r->held.len);
    if (stop >= 0) {
        r->held.len = (size_t)stop;
        reason = TESSERA__V1__FINISH_REASON__FINISH_REASON_STOP;
    }
    send_message(co, r, r->held.len, -1, 0.0f, reason);
}

void co_request_on_event(coordinator *co, co_group *g, co_request *r,
                         const Tessera__V1__TokenEvent *ev) {
    if (ev->kv_transferred) { /* disaggregated: the prefill group handed over to decode */
        co_disagg_transferred(co, g, r, ev);
        return;
    }
    if (r->decode && !r->on_decode && ev->token >= 0) r->first_token = ev->token;
    if (ev->prompt_tokens > 0) r->n_cached = ev->cached_prompt_tokens;
    if (ev->token >= 0) {
        r->n_generated++;
        if (!r->t_first) r->t_first = ts_now_ns();
        g->outstanding--;
        if (!r->closed) on_token(co, r, ev->token, ev->logprob);
    }
    if (ev->finish_reason == TESSERA__V1__FINISH_REASON__FINISH_REASON_UNSPECIFIED) {
        if (ev->token >= 0) co_disagg_handover(co, g, r); /* disaggregated: on to decode */
        return;
    }
    co_group_release(g, r);
    co_disagg_left(co, g, r);
    if (!r->closed) on_finish(co, g, r, ev);
    co_request_maybe_free(co, r);
}
