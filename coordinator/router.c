/*
 * router.c — which node group runs a request, and the cluster-wide wait queue.
 *
 * A group can take a request when it is registered and healthy, the prompt fits its context, and
 * it runs fewer requests than its max_batch_seqs ("room": more would only wait in the node's own
 * queue, where no other group could pick them up), or it runs lower-priority requests the new one
 * displaces (the node preempts them: batch work never holds an interactive request back). Among
 * those, routing is cache-aware: the group with the least work ahead of the request wins,
 * counted as its outstanding tokens (prompt tokens not yet processed + tokens still to generate)
 * plus the prompt tokens it would have to compute — the prompt minus the leading blocks its
 * prefix cache holds (prefix_index.h, from its heartbeats). So a request goes where its prefix
 * is, unless that group's queue is longer than the prefill the cache saves: a hot system prompt
 * does not pin one group. A group the request just failed on is taken only when no other fits.
 * When no group has room the request waits here,
 * highest priority first and in arrival order within a priority (retried requests in front); more
 * than --max-queued-requests of its priority waiting gives RESOURCE_EXHAUSTED. With prefill and
 * decode groups live, disagg.c picks instead (a prefill group and a decode group with KV room).
 * A request's further samples (n > 1, co_request_admit_sample) wait until its first has a token,
 * then follow it to its group, whose prefix cache now holds their prompt.
 */
#include "coordinator/coordinator.h"

#include "common/clock.h"
#include "common/error.h"
#include "common/log.h"
#include "request/request_pb.h"

#include <stdlib.h>

static int64_t work_of(const co_request *r) {
    return (int64_t)r->req.n_prompt_ids + r->req.params.max_tokens - r->n_generated;
}

/* A full group still has room for a request that outranks some it runs (interactive over batch
 * filler): its scheduler preempts the lower-priority sequence within a step (node/scheduler.c),
 * so the request never waits behind batch work; one such request per lower-priority one. */
static bool has_room(const co_group *g, const co_request *r) {
    int max_seqs = g->max_seqs > 0 ? g->max_seqs : 256;
    if (!g->registered || g->dead || co_request_sent_prompt(r) >= g->ctx) return false;
    if (g->n_active < max_seqs) return true;
    int lower = 0;
    for (const co_request *o = g->reqs; o; o = o->g_next)
        lower += o->req.params.priority < r->req.params.priority;
    return g->n_active - max_seqs < lower;
}

/* The work a group would have before the request's first token: what it has outstanding and
 * the prompt tokens it does not hold. */
static int64_t work_ahead(const co_group *g, const co_request *r) {
    int32_t cached =
        co_prefix_index_match(g->prefix, g->fingerprint_value, r->req.params.cache_salt,
                              r->req.prompt_ids, r->req.n_prompt_ids, g->block_size);
    return g->outstanding + r->req.n_prompt_ids - cached;
}

/* Another sample of a prompt whose first request has no token yet: it waits, since until then
 * its prompt's KV is in no prefix cache (and running it would compute the prompt again). */
static bool waits_for_lead(coordinator *co, const co_request *r) {
    if (!r->lead_id) return false;
    const co_request *lead = co_request_find(co, r->lead_id);
    return lead && !lead->closed && lead->n_generated == 0;
}

/* --routing round-robin (a baseline to measure cache-aware routing against): the groups with
 * room in turn. */
static co_group *pick_round_robin(coordinator *co, const co_request *r) {
    int n = 0;
    for (co_group *g = co->groups; g; g = g->next)
        n += has_room(g, r);
    if (n == 0) return NULL;
    int k = (int)(co->rr_turn++ % (uint64_t)n);
    for (co_group *g = co->groups; g; g = g->next)
        if (has_room(g, r) && k-- == 0) return g;
    return NULL;
}

static co_group *pick(coordinator *co, const co_request *r) {
    if (co->round_robin) return pick_round_robin(co, r);
    /* A sample goes where its prompt's first request runs: that group's prefix cache holds the
     * prompt, before a heartbeat tells the prefix index so. */
    const co_request *lead = r->lead_id ? co_request_find(co, r->lead_id) : NULL;
    if (lead && lead->group && has_room(lead->group, r)) return lead->group;
    return co_route_least_work(co, r, has_room);
}

co_group *co_route_least_work(coordinator *co, const co_request *r,
                              bool (*fits)(const co_group *g, const co_request *r)) {
    co_group *best = NULL;
    int64_t best_work = 0;
    for (int pass = 0; pass < 2 && !best; pass++)
        for (co_group *g = co->groups; g; g = g->next) {
            if (!fits(g, r) || (pass == 0 && g == r->avoid)) continue;
            int64_t work = work_ahead(g, r);
            if (!best || work < best_work || (work == best_work && g->n_active < best->n_active)) {
                best = g;
                best_work = work;
            }
        }
    return best;
}

static void queue_push(coordinator *co, co_request *r, bool front) {
    r->queued = true;
    r->t_queued = ts_now_ns();
    if (front) {
        r->q_prev = NULL;
        r->q_next = co->q_head;
        if (co->q_head)
            co->q_head->q_prev = r;
        else
            co->q_tail = r;
        co->q_head = r;
    } else {
        /* Behind every request of the same or a higher priority (FIFO within a priority). */
        co_request *after = co->q_tail;
        while (after && after->req.params.priority < r->req.params.priority)
            after = after->q_prev;
        r->q_prev = after;
        r->q_next = after ? after->q_next : co->q_head;
        if (r->q_next)
            r->q_next->q_prev = r;
        else
            co->q_tail = r;
        if (after)
            after->q_next = r;
        else
            co->q_head = r;
    }
    co->n_queued++;
}

void co_queue_remove(coordinator *co, co_request *r) {
    if (!r->queued) return;
    if (r->q_prev)
        r->q_prev->q_next = r->q_next;
    else
        co->q_head = r->q_next;
    if (r->q_next)
        r->q_next->q_prev = r->q_prev;
    else
        co->q_tail = r->q_prev;
    r->q_prev = r->q_next = NULL;
    r->queued = false;
    co->n_queued--;
}

void co_group_release(co_group *g, co_request *r) {
    if (r->group != g) return;
    if (r->g_prev)
        r->g_prev->g_next = r->g_next;
    else
        g->reqs = r->g_next;
    if (r->g_next) r->g_next->g_prev = r->g_prev;
    r->g_prev = r->g_next = NULL;
    g->n_active--;
    g->outstanding -= work_of(r);
    if (g->outstanding < 0 || g->n_active == 0) g->outstanding = 0;
    r->group = NULL;
}

/* Sends the Submit; on failure the group has been ended (and r is not on it). */
static int submit_to(coordinator *co, co_group *g, co_request *r) {
    Tessera__V1__Submit s = TESSERA__V1__SUBMIT__INIT;
    Tessera__V1__SamplingParams sp;
    ts_request_params_to_submit(&r->req.params, &s, &sp);
    s.request_id = r->id;
    s.n_prompt_ids = (size_t)r->req.n_prompt_ids;
    s.prompt_ids = r->req.prompt_ids;
    if (r->n_replay > 0) { /* a failover: the prompt and what was streamed, then the rest */
        s.prompt_ids = r->replay_ids;
        s.n_prompt_ids = (size_t)co_request_sent_prompt(r);
        s.max_tokens = r->req.params.max_tokens - r->n_replay;
        s.replayed_tokens = r->n_replay;
    }
    if (r->decode) { /* disaggregated (disagg.c): prefill and ship, or decode from the KV */
        s.kv_transfer_id = r->transfer_id;
        if (r->on_decode) {
            s.kv_expect = true;
            s.first_token = r->first_token;
        } else {
            s.kv_endpoints = r->decode->kv_endpoint;
        }
    }
    Tessera__V1__CoordinatorMessage m = TESSERA__V1__COORDINATOR_MESSAGE__INIT;
    m.msg_case = TESSERA__V1__COORDINATOR_MESSAGE__MSG_SUBMIT;
    m.submit = &s;
    /* Attach first: if the send fails, co_group_fail finds it and queues it again. */
    r->group = g;
    r->g_prev = NULL;
    r->g_next = g->reqs;
    if (g->reqs) g->reqs->g_prev = r;
    g->reqs = r;
    g->n_active++;
    g->outstanding += work_of(r);
    if (!r->on_decode) { /* a disaggregated hand-over is not a new attempt */
        r->attempts++;
        r->t_dispatch = ts_now_ns();
    }
    return co_group_send(co, g, &m);
}

int co_submit_to(coordinator *co, co_group *g, co_request *r) {
    return submit_to(co, g, r);
}

/* Requests of this priority in the wait queue: each priority has its own bound, so that a flood
 * of batch work (or of one class) never keeps interactive requests out. The queue is short (its
 * bound times the priorities in use), so it is counted, not indexed. A request's further samples
 * (n > 1) are not counted: they belong to an admitted request, bounded by its n. */
static int queued_at(const coordinator *co, int32_t priority) {
    int n = 0;
    for (const co_request *q = co->q_head; q; q = q->q_next)
        n += q->req.params.priority == priority && !q->lead_id;
    return n;
}

int co_route(coordinator *co, co_request *r, bool front) {
    if (waits_for_lead(co, r)) { /* part of an admitted request: its bound is its n */
        queue_push(co, r, front);
        return TS_OK;
    }
    co_group *g = co_disagg_on(co) ? co_disagg_pick(co, r) : pick(co, r);
    if (g) {
        ts_log(TS_LOG_DEBUG, r->client_id, "to group %s (%d active, %lld outstanding tokens)",
               g->name, g->n_active, (long long)g->outstanding);
        submit_to(co, g, r); /* a failed send ended g and queued r again */
        return TS_OK;
    }
    /* No group at all: UNAVAILABLE at once, except in a coordinator's first heartbeat timeout,
     * when its groups may still be attaching (it was just started or restarted, and the nodes
     * redial it): then the request waits, and request.c's tick ends it if none comes. */
    if (co_live_groups(co) == 0 &&
        ts_now_ns() - co->t_started > (int64_t)co->heartbeat_timeout_ms * 1000000)
        return ts_error_set(TS_E_UNAVAILABLE, "no node group is serving");
    int waiting = front ? 0 : queued_at(co, r->req.params.priority);
    if (!front && !r->lead_id && waiting >= co->max_queue)
        return ts_error_set(TS_E_EXHAUSTED,
                            "%d requests of priority %d are waiting (--max-queued-requests %d); "
                            "retry later",
                            waiting, r->req.params.priority, co->max_queue);
    queue_push(co, r, front);
    return TS_OK;
}

void co_route_queue(coordinator *co, int64_t now) {
    (void)now;
    if (co_live_groups(co) == 0) return; /* request.c's tick ends those that waited too long */
    co_request *r = co->q_head;
    while (r) {
        co_request *next = r->q_next;
        co_group *g = waits_for_lead(co, r) ? NULL
                      : co_disagg_on(co)    ? co_disagg_pick(co, r)
                                            : pick(co, r);
        if (!g) {
            r = next;
            continue; /* keep arrival order for this one; smaller ones may still fit */
        }
        co_queue_remove(co, r);
        submit_to(co, g, r);
        next = co->q_head; /* a failed send may have reshaped the queue */
        if (next == r) break;
        r = next;
    }
}

int co_route_spare(const coordinator *co) {
    int spare = 0;
    for (const co_group *g = co->groups; g; g = g->next) {
        if (!g->registered || g->dead) continue;
        int max_seqs = g->max_seqs > 0 ? g->max_seqs : 256;
        int keep = max_seqs >= 16 ? max_seqs / 8 : 1; /* an interactive request starts at once */
        if (g->n_active < max_seqs - keep) spare += max_seqs - keep - g->n_active;
    }
    spare -= co->n_queued; /* waiting requests take free slots first */
    return spare > 0 ? spare : 0;
}
