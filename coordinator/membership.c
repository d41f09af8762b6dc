/*
 * membership.c — node groups: tessera.v1.Worker/Attach.
 *
 * A group leader opens Attach and sends Register; the coordinator checks it (same vocabulary
 * as the coordinator's tokenizer, a name not in use) and answers Welcome with the heartbeat
 * period, or ends the call with FAILED_PRECONDITION / ALREADY_EXISTS and the reason. A Register
 * with the name and host of an attached group is that group redialing: the old stream is ended.
 * Heartbeats carry the scheduler's figures shown by Health; TokenEvents carry every step's tokens.
 *
 * A group ends when its stream ends (the node closed it, died, or the connection broke) or when
 * nothing came from it for --heartbeat-timeout-ms. This is the bottom of the coordinator's stack:
 * events, a lost group (whose requests request.c retries or fails), a group about to be freed and
 * new capacity are reported up through co->hooks, never by calling the layers above.
 */
#include "coordinator/coordinator.h"

#include "common/clock.h"
#include "common/error.h"
#include "common/log.h"
#include "common/secret.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int32_t co_largest_context(const coordinator *co) {
    int32_t ctx = 0;
    for (const co_group *g = co->groups; g; g = g->next)
        if (g->registered && !g->dead && g->ctx > ctx) ctx = g->ctx;
    return ctx > 0 ? ctx : co->ctx_train;
}

int co_live_groups(const coordinator *co) {
    int n = 0;
    for (const co_group *g = co->groups; g; g = g->next)
        n += g->registered && !g->dead;
    return n;
}

int co_group_send(coordinator *co, co_group *g, const Tessera__V1__CoordinatorMessage *m) {
    if (g->dead) return ts_error_set(TS_E_UNAVAILABLE, "node group %s is gone", g->name);
    int rc = ts_rpc_call_send_pb(g->call, &m->base);
    if (rc) {
        char why[512];
        snprintf(why, sizeof why, "sending to the group failed: %s", ts_error_message());
        co_group_fail(co, g, why);
    }
    return rc;
}

void co_group_send_cancel(coordinator *co, co_group *g, uint64_t request_id) {
    co_group_send_cancel_kv(co, g, request_id, 0);
}

void co_group_send_cancel_kv(coordinator *co, co_group *g, uint64_t request_id,
                             uint64_t kv_transfer_id) {
    Tessera__V1__Cancel c = TESSERA__V1__CANCEL__INIT;
    c.request_id = request_id;
    c.kv_transfer_id = kv_transfer_id;
    Tessera__V1__CoordinatorMessage m = TESSERA__V1__COORDINATOR_MESSAGE__INIT;
    m.msg_case = TESSERA__V1__COORDINATOR_MESSAGE__MSG_CANCEL;
    m.cancel = &c;
    co_group_send(co, g, &m);
}

void co_group_fail(coordinator *co, co_group *g, const char *why) {
    if (g->dead) return;
    g->dead = true;
    if (g->registered) TS_WARN("node group %s removed: %s", g->name, why);
    ts_rpc_call_abort(g->call, TS_RPC_UNAVAILABLE, why);
    co->hooks.lost(co, g, why);
}

static co_group *find_group(coordinator *co, const char *name) {
    for (co_group *g = co->groups; g; g = g->next)
        if (g->registered && !g->dead && !strcmp(g->name, name)) return g;
    return NULL;
}

/* Ends an attach with `status` and the message, logged and kept for Health. */
static void refuse(coordinator *co, co_group *g, int status, const char *msg) {
    TS_WARN("node group refused: %s", msg);
    snprintf(co->refusals[co->n_refusals % CO_MAX_REFUSALS], sizeof co->refusals[0], "%s", msg);
    co->n_refusals++;
    ts_rpc_call_finish(g->call, status, msg);
    g->dead = true;
}

/* Prefill and decode groups exchange KV, so all of them must have the same KV fingerprint
 * (kvx/kv_transfer.h: weights, KV type, block size, layout): the first live one sets it. A
 * mixed group exchanges nothing and is not compared. NULL when r may join; else the group it
 * differs from. */
static const co_group *kv_mismatch(const coordinator *co, const Tessera__V1__Register *r) {
    if (strcmp(r->role, "prefill") && strcmp(r->role, "decode")) return NULL;
    for (const co_group *o = co->groups; o; o = o->next)
        if (o->registered && !o->dead && (!strcmp(o->role, "prefill") || !strcmp(o->role, "decode"))
            && strcmp(o->fingerprint, r->model_fingerprint) != 0)
            return o;
    return NULL;
}

static void on_register(coordinator *co, co_group *g, const Tessera__V1__Register *r) {
    if (!r->group_name[0]) {
        refuse(co, g, TS_RPC_INVALID_ARGUMENT, "Register without a group_name");
        return;
    }
    char msg[512];
    co_group *old = find_group(co, r->group_name);
    if (old && !strcmp(old->host, r->host)) {
        /* The same node again (it redialed before we saw its old stream break). */
        co_group_fail(co, old, "replaced by a new connection of the same group");
    } else if (old) {
        snprintf(msg, sizeof msg, "a node group named %s is already attached (from host %s)",
                 r->group_name, old->host);
        refuse(co, g, TS_RPC_ALREADY_EXISTS, msg);
        return;
    }
    if (r->vocab_size != co->vocab || r->context_length < 2 || r->tp < 1) {
        snprintf(msg, sizeof msg,
                 "group %s serves %s (vocabulary %d, context %d, tp %d); this coordinator "
                 "serves %s (vocabulary %d)",
                 r->group_name, r->model_name, r->vocab_size, r->context_length, r->tp,
                 co->model_name, co->vocab);
        refuse(co, g, TS_RPC_FAILED_PRECONDITION, msg);
        return;
    }
    const co_group *other = kv_mismatch(co, r);
    if (other) {
        snprintf(msg, sizeof msg,
                 "%s group %s cannot exchange KV with %s group %s: KV type %s vs %s, block size "
                 "%d vs %d, KV fingerprint %s vs %s (prefill and decode groups need the same "
                 "model, --kv-type and --block-size)",
                 r->role, r->group_name, other->role, other->name, r->kv_type[0] ? r->kv_type : "?",
                 other->kv_type[0] ? other->kv_type : "?", r->block_size, other->block_size,
                 r->model_fingerprint, other->fingerprint);
        refuse(co, g, TS_RPC_FAILED_PRECONDITION, msg);
        return;
    }
    snprintf(g->name, sizeof g->name, "%s", r->group_name);
    snprintf(g->role, sizeof g->role, "%s", r->role[0] ? r->role : "mixed");
    snprintf(g->host, sizeof g->host, "%s", r->host);
    snprintf(g->model_name, sizeof g->model_name, "%s", r->model_name);
    g->vocab = r->vocab_size;
    g->ctx = r->context_length;
    g->tp = r->tp;
    g->kv_total = r->kv_blocks_total;
    g->kv_free = r->kv_blocks_total;
    g->block_size = r->block_size;
    g->max_seqs = r->max_batch_seqs;
    snprintf(g->kv_endpoint, sizeof g->kv_endpoint, "%s", r->kv_endpoint);
    snprintf(g->fingerprint, sizeof g->fingerprint, "%s", r->model_fingerprint);
    g->fingerprint_value = strtoull(r->model_fingerprint, NULL, 16);
    snprintf(g->kv_type, sizeof g->kv_type, "%s", r->kv_type);
    Tessera__V1__Welcome w = TESSERA__V1__WELCOME__INIT;
    w.cluster = co->model_name;
    w.heartbeat_ms = co->heartbeat_ms;
    Tessera__V1__CoordinatorMessage m = TESSERA__V1__COORDINATOR_MESSAGE__INIT;
    m.msg_case = TESSERA__V1__COORDINATOR_MESSAGE__MSG_WELCOME;
    m.welcome = &w;
    if (ts_rpc_call_send_pb(g->call, &m.base)) {
        g->dead = true;
        return;
    }
    g->registered = true;
    TS_INFO("node group %s attached from %s (tp %d, %d KV blocks of %d, context %d)", g->name,
            g->peer, g->tp, g->kv_total, g->block_size, g->ctx);
    co->hooks.capacity(co);
}

static void attach_start(ts_rpc_call *call, void *arg) {
    coordinator *co = arg;
    co_group *g = calloc(1, sizeof *g);
    if (!g) {
        ts_rpc_call_finish(call, TS_RPC_RESOURCE_EXHAUSTED, "coordinator out of memory");
        return;
    }
    ts_rpc_call_ref(call);
    g->call = call;
    snprintf(g->name, sizeof g->name, "(unregistered)");
    snprintf(g->peer, sizeof g->peer, "%s", ts_rpc_call_peer(call));
    ts_rpc_call_set_data(call, g);
    pthread_mutex_lock(&co->mu);
    g->last_seen = ts_now_ns();
    g->next = co->groups;
    co->groups = g;
    pthread_mutex_unlock(&co->mu);
}

static void attach_message(ts_rpc_call *call, const uint8_t *data, size_t len, void *arg) {
    coordinator *co = arg;
    co_group *g = ts_rpc_call_data(call);
    if (!g) return;
    Tessera__V1__NodeMessage *m = tessera__v1__node_message__unpack(NULL, len, data);
    pthread_mutex_lock(&co->mu);
    g->last_seen = ts_now_ns();
    if (g->dead) {
        /* ended already: ignore the rest */
    } else if (!m) {
        co_group_fail(co, g, "malformed message from the node");
    } else if (!g->registered) {
        if (m->msg_case == TESSERA__V1__NODE_MESSAGE__MSG_REGISTER) {
            if (co->shutting_down) {
                ts_rpc_call_finish(call, TS_RPC_UNAVAILABLE, "the coordinator is shutting down");
                g->dead = true;
            } else {
                on_register(co, g, m->register_);
            }
        } else {
            ts_rpc_call_finish(call, TS_RPC_FAILED_PRECONDITION,
                               "the first message on Attach must be Register");
            g->dead = true;
        }
    } else if (m->msg_case == TESSERA__V1__NODE_MESSAGE__MSG_HEARTBEAT) {
        const Tessera__V1__Heartbeat *hb = m->heartbeat;
        g->running = hb->running;
        g->waiting = hb->waiting;
        g->kv_free = hb->kv_blocks_free;
        g->kv_cached = hb->kv_blocks_cached;
        if (hb->preemptions > g->preemptions)
            co_metrics_preemptions(co->metrics, g->name, hb->preemptions - g->preemptions);
        g->preemptions = hb->preemptions;
        if (co_prefix_index_apply(&g->prefix, hb->cache_added, hb->n_cache_added, hb->cache_removed,
                                  hb->n_cache_removed, hb->cache_snapshot))
            TS_WARN("group %s: %s (routed without its cache)", g->name, ts_error_message());
        g->cache_query_tokens = hb->prefix_cache_query_tokens;
        g->cache_hit_tokens = hb->prefix_cache_hit_tokens;
        g->cache_host_hit_tokens = hb->prefix_cache_host_hit_tokens;
        g->cache_disk_hit_tokens = hb->prefix_cache_disk_hit_tokens;
        g->has_kv_tiers = hb->kv_tiers != NULL;
        if (hb->kv_tiers) g->kv_tiers = *hb->kv_tiers; /* scalars only: a plain copy */
    } else if (m->msg_case == TESSERA__V1__NODE_MESSAGE__MSG_EVENTS) {
        co->hooks.events(co, g, m->events);
    }
    pthread_mutex_unlock(&co->mu);
    if (m) tessera__v1__node_message__free_unpacked(m, NULL);
}

static void attach_half_close(ts_rpc_call *call, void *arg) {
    coordinator *co = arg;
    co_group *g = ts_rpc_call_data(call);
    if (!g) return;
    pthread_mutex_lock(&co->mu);
    co_group_fail(co, g, "the node closed its stream (it left or died)");
    pthread_mutex_unlock(&co->mu);
    ts_rpc_call_finish(call, TS_RPC_OK, NULL);
}

static void attach_done(ts_rpc_call *call, int cancelled, void *arg) {
    coordinator *co = arg;
    co_group *g = ts_rpc_call_data(call);
    if (!g) return;
    pthread_mutex_lock(&co->mu);
    co_group_fail(co, g, cancelled ? "the connection to the node was lost" : "the stream ended");
    for (co_group **p = &co->groups; *p; p = &(*p)->next)
        if (*p == g) {
            *p = g->next;
            break;
        }
    co->hooks.forget(co, g);
    co->hooks.capacity(co);
    pthread_mutex_unlock(&co->mu);
    ts_rpc_call_set_data(call, NULL);
    ts_rpc_call_unref(g->call);
    co_prefix_index_free(g->prefix);
    free(g);
}

int co_membership_authorize(ts_rpc_call *call, void *arg) {
    const coordinator *co = arg;
    if (!co->cluster_secret[0]) return TS_OK;
    size_t len = 0;
    const char *got = ts_rpc_call_metadata(call, TS_CLUSTER_SECRET_KEY, &len);
    if (got && ts_secret_equal(got, len, co->cluster_secret, strlen(co->cluster_secret)))
        return TS_OK;
    const char *why = got ? "a wrong cluster secret" : "no cluster secret";
    TS_WARN("refused %s from %s: %s", ts_rpc_call_method(call), ts_rpc_call_peer(call), why);
    return ts_error_set(TS_E_UNAUTHENTICATED,
                        "%s: this coordinator admits node groups with its cluster secret only "
                        "(tessera-node --cluster-secret-file or TESSERA_CLUSTER_SECRET)",
                        why);
}

void co_membership_method(coordinator *co, ts_rpc_method *attach) {
    *attach = (ts_rpc_method){.kind = TS_RPC_BIDI_STREAM,
                              .on_start = attach_start,
                              .on_message = attach_message,
                              .on_half_close = attach_half_close,
                              .on_done = attach_done,
                              .arg = co};
}

void co_membership_tick(coordinator *co, int64_t now) {
    for (co_group *g = co->groups; g; g = g->next) {
        if (g->dead) continue;
        int64_t quiet_ms = (now - g->last_seen) / 1000000;
        if (quiet_ms > co->heartbeat_timeout_ms) {
            char why[128];
            snprintf(why, sizeof why, "no heartbeat for %lld ms (--heartbeat-timeout-ms %d)",
                     (long long)quiet_ms, co->heartbeat_timeout_ms);
            co_group_fail(co, g, why);
        }
    }
}

void co_membership_shutdown(coordinator *co, const char *reason) {
    Tessera__V1__Shutdown s = TESSERA__V1__SHUTDOWN__INIT;
    s.reason = (char *)reason;
    Tessera__V1__CoordinatorMessage m = TESSERA__V1__COORDINATOR_MESSAGE__INIT;
    m.msg_case = TESSERA__V1__COORDINATOR_MESSAGE__MSG_SHUTDOWN;
    m.shutdown = &s;
    for (co_group *g = co->groups; g; g = g->next)
        if (g->registered && !g->dead) ts_rpc_call_send_pb(g->call, &m.base);
}
