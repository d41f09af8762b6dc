/*
 * disagg.c — prefill/decode disaggregation in the coordinator (issue 5; see coordinator.h and
 * docs/architecture.md, "Disaggregated request path").
 *
 * A request goes to a prefill group with the decode group's KV endpoints and a transfer id
 * (request id * 256 + attempt, so that a retry never reuses an id the receivers may have
 * refused). The prefill group's first token streams to the client at once (request.c, as any
 * token) and hands the request over: it moves to the decode group (a Submit with kv_expect and
 * the first token), which waits for the KV that is on its way from the prefill group, claims it
 * and streams the rest. The hand-over does not wait for the prefill group's verdict on the
 * transfer (its kv_transferred event): that comes only after the prefill group's next step,
 * which may be a long prefill, and the decode group learns the outcome from its own receivers
 * anyway (a broken transfer fails the request there).
 *
 * Only groups that registered the same model fingerprint are paired (the receivers would
 * refuse the KV of other weights anyway). Decode admission: a decode group has room for r when it runs fewer than max_batch_seqs
 * requests (counting those prefilling for it) and its KV blocks cover r's worst case,
 * need = blocks of min(prompt + max_tokens, context): need <= min(kv_free from its last
 * heartbeat - blocks reserved by requests still prefilling for it, kv_total - blocks reserved
 * by every request on or headed to it). Without room the request waits in the coordinator's
 * queue (back-pressure), as it does when no prefill group has room. A reservation ends when
 * the request leaves the decode group (or its prefill ends without a hand-over).
 *
 * Failures: a request that ends on its prefill group without a hand-over (error, cancel, the
 * group gone) gets a Cancel with its transfer id sent to the decode group, which drops the
 * transfer wherever it is; the retry rule is request.c's and membership.c's (retry while
 * nothing was streamed, else UNAVAILABLE). A decode group gone before the hand-over fails the
 * request at the hand-over (the first token was streamed).
 */
#include "coordinator/coordinator.h"

#include "common/clock.h"
#include "common/error.h"
#include "common/kv_geometry.h"
#include "common/log.h"

#include <string.h>

static bool live(const co_group *g, const char *role) {
    return g->registered && !g->dead && !strcmp(g->role, role);
}

bool co_disagg_on(const coordinator *co) {
    bool prefill = false, decode = false;
    for (const co_group *g = co->groups; g; g = g->next) {
        prefill |= live(g, "prefill");
        decode |= live(g, "decode") && g->kv_endpoint[0];
    }
    return prefill && decode;
}

static int32_t kv_need(const co_group *d, const co_request *r) {
    int64_t tokens = (int64_t)r->req.n_prompt_ids + r->req.params.max_tokens;
    if (tokens > d->ctx) tokens = d->ctx;
    int32_t bs = d->block_size > 0 ? d->block_size : TS_KV_BLOCK_SIZE_DEFAULT;
    int64_t need = (tokens + bs - 1) / bs;
    return need > d->kv_total ? d->kv_total : (int32_t)need;
}

static co_group *pick_decode(const coordinator *co, const co_group *p, const co_request *r) {
    co_group *best = NULL;
    int32_t best_free = 0;
    for (co_group *d = co->groups; d; d = d->next) {
        if (!live(d, "decode") || !d->kv_endpoint[0] || co_request_sent_prompt(r) + 1 >= d->ctx ||
            strcmp(d->fingerprint, p->fingerprint) != 0) /* the same weights, or no KV to share */
            continue;
        int max_seqs = d->max_seqs > 0 ? d->max_seqs : 256;
        if (d->n_active + d->n_incoming >= max_seqs) continue;
        int32_t free_hb = d->kv_free - d->kv_incoming;
        int32_t free_total = d->kv_total - d->kv_committed;
        int32_t free = free_hb < free_total ? free_hb : free_total;
        if (free < kv_need(d, r)) continue;
        if (!best || free > best_free) {
            best = d;
            best_free = free;
        }
    }
    return best;
}

/* A prefill group that can take the request now. */
static bool prefill_fits(const co_group *g, const co_request *r) {
    int max_seqs = g->max_seqs > 0 ? g->max_seqs : 256;
    return live(g, "prefill") && g->n_active < max_seqs && co_request_sent_prompt(r) < g->ctx;
}

/* The prefill group with the least work ahead of the request, its cached prefix counted as done
 * (the router's choice: a prompt whose prefix a prefill group holds is not computed again). */
static co_group *pick_prefill(coordinator *co, const co_request *r) {
    return co_route_least_work(co, r, prefill_fits);
}

co_group *co_disagg_pick(coordinator *co, co_request *r) {
    co_group *p = pick_prefill(co, r);
    co_group *d = p ? pick_decode(co, p, r) : NULL;
    if (!d) return NULL;
    r->decode = d;
    r->on_decode = false;
    r->kv_need = kv_need(d, r);
    r->transfer_id = r->id * 256 + (uint64_t)((r->attempts + 1) & 255);
    d->kv_committed += r->kv_need;
    d->kv_incoming += r->kv_need;
    d->n_incoming++;
    ts_log(TS_LOG_DEBUG, r->client_id, "prefill on %s, decode on %s (%d blocks reserved)", p->name,
           d->name, r->kv_need);
    return p;
}

/* Ends r's reservation on its decode group. */
static co_group *untarget(co_request *r) {
    co_group *d = r->decode;
    if (!d) return NULL;
    d->kv_committed -= r->kv_need;
    if (d->kv_committed < 0) d->kv_committed = 0;
    if (!r->on_decode) {
        if (d->n_incoming > 0) d->n_incoming--;
        d->kv_incoming -= r->kv_need;
        if (d->kv_incoming < 0) d->kv_incoming = 0;
    }
    r->decode = NULL;
    r->on_decode = false;
    r->kv_need = 0;
    return d;
}

void co_disagg_left(coordinator *co, co_group *g, co_request *r) {
    if (!r->decode) return;
    if (r->on_decode) {
        if (g == r->decode) untarget(r);
        return;
    }
    /* Left the prefill group without a hand-over: the decode side may hold the transfer. */
    uint64_t transfer_id = r->transfer_id;
    co_group *d = untarget(r);
    if (!d->dead) co_group_send_cancel_kv(co, d, r->id, transfer_id);
}

int co_disagg_handover(coordinator *co, co_group *g, co_request *r) {
    if (!r->decode || r->on_decode || r->group != g) return TS_OK;
    co_group_release(g, r);
    co_group *d = r->decode;
    if (r->closed || !d || d->dead || r->n_generated < 1) {
        co_disagg_left(co, g, r);
        return ts_error_set(TS_E_UNAVAILABLE,
                            "the decode group for the request is gone (after the first token)");
    }
    ts_log(TS_LOG_DEBUG, r->client_id, "first token from %s: decoding on %s (%d prompt tokens)",
           g->name, d->name, r->req.n_prompt_ids);
    d->n_incoming--;
    d->kv_incoming -= r->kv_need;
    if (d->kv_incoming < 0) d->kv_incoming = 0;
    r->on_decode = true;
    /* A failed send ends d, which fails r (tokens were streamed) and may free it: r is not
     * touched after this. */
    co_submit_to(co, d, r);
    return TS_OK;
}

int co_disagg_transferred(coordinator *co, co_group *g, co_request *r,
                          const Tessera__V1__TokenEvent *ev) {
    co->kv_transfers++;
    co->kv_transfer_ms_sum += ev->kv_transfer_ms;
    if (co->kv_transfers % 100 == 0)
        TS_INFO("%lld KV transfers, %.2f ms on average from the end of prefill to the decode "
                "group's acceptance (as the prefill group saw it between its steps)",
                (long long)co->kv_transfers, co->kv_transfer_ms_sum / (double)co->kv_transfers);
    return co_disagg_handover(co, g, r); /* normally done at the first token already */
}

void co_disagg_forget_group(coordinator *co, co_group *g) {
    for (int b = 0; b < CO_HASH_BUCKETS; b++)
        for (co_request *r = co->buckets[b]; r; r = r->h_next)
            if (r->decode == g) {
                r->decode = NULL;
                r->on_decode = false;
                r->kv_need = 0;
            }
}
