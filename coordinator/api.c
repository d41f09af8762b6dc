/*
 * api.c — tessera.v1.Inference: the public API (see rpc/proto/tessera/v1/inference.proto).
 *
 * Generate is validated completely before it is admitted, so that a bad request gets
 * INVALID_ARGUMENT with a message naming the field and its limits, never a node error later and
 * never a retry: the model name here, every other field by ts_request_validate (request/request.h:
 * the limits, the prompt against the vocabulary and the largest context among the groups). Then:
 * no group serving →
 * UNAVAILABLE; must wait but the queue is full → RESOURCE_EXHAUSTED; otherwise it runs (router.c)
 * and streams (request.c). A client that cancels, goes away, or passes its deadline ends the
 * call; on_done then cancels the request on its node, which frees its KV blocks at once.
 *
 * Tokenizing runs on the rpc loop thread: it is pure CPU work of O(n log n) in the prompt and
 * takes microseconds for typical prompts; the loop never waits on I/O or a lock held across I/O.
 */
#include "coordinator/coordinator.h"

#include "common/clock.h"
#include "common/error.h"
#include "common/log.h"
#include "request/request_pb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int bad(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int bad(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    ts_error_setv(TS_E_INVALID, fmt, ap);
    va_end(ap);
    return TS_E_INVALID;
}

static bool model_matches(const coordinator *co, const char *name) {
    return !name[0] || !strcmp(name, co->model_name);
}

static int32_t largest_context(const coordinator *co) {
    int32_t ctx = 0;
    for (const co_group *g = co->groups; g; g = g->next)
        if (g->registered && !g->dead && g->ctx > ctx) ctx = g->ctx;
    return ctx > 0 ? ctx : co->ctx_train;
}

/* Builds the request from the message (the one mapping, request_pb.h), tokenizes a text prompt
 * and validates it (the one validation, request.h) against the vocabulary and the largest
 * context among the groups. Under co->mu (for the context). */
static int make_request(coordinator *co, const Tessera__V1__GenerateRequest *q, co_request *r) {
    if (!model_matches(co, q->model))
        return bad("unknown model '%s' (this cluster serves '%s')", q->model, co->model_name);
    ts_request *rq = &r->req;
    int rc = ts_request_from_generate(q, rq);
    ts_request_model model = {.n_vocab = co->vocab, .n_ctx = largest_context(co)};
    if (!rc) rc = ts_request_validate(rq, NULL); /* the fields, before any tokenizing work */
    if (!rc && rq->prompt) {
        bool add_bos = !rq->no_bos && ts_tokenizer_adds_bos(co->tok);
        int32_t *ids = NULL;
        size_t n = 0;
        rc = ts_tokenizer_encode(co->tok, rq->prompt, strlen(rq->prompt), add_bos, false, &ids,
                                 &n);
        if (rc) return ts_error_wrap(rc, "tokenizing the prompt");
        if (n > INT32_MAX) {
            free(ids);
            return bad("the prompt is too long");
        }
        ts_request_take_ids(rq, ids, (int32_t)n);
    }
    if (!rc) rc = ts_request_add_eos(rq, ts_tokenizer_eos(co->tok));
    if (!rc) rc = ts_request_validate(rq, &model);
    return rc;
}

static void generate_message(ts_rpc_call *call, const uint8_t *data, size_t len, void *arg) {
    coordinator *co = arg;
    Tessera__V1__GenerateRequest *q = tessera__v1__generate_request__unpack(NULL, len, data);
    if (!q) {
        ts_rpc_call_finish(call, TS_RPC_INVALID_ARGUMENT, "malformed GenerateRequest");
        return;
    }
    co_request *r = calloc(1, sizeof *r);
    if (!r) {
        tessera__v1__generate_request__free_unpacked(q, NULL);
        ts_rpc_call_finish(call, TS_RPC_RESOURCE_EXHAUSTED, "coordinator out of memory");
        return;
    }
    r->t_arrival = ts_now_ns();
    r->deadline_ns = ts_rpc_call_deadline_ns(call);
    pthread_mutex_lock(&co->mu);
    r->id = ++co->next_id;
    if (q->request_id[0])
        snprintf(r->client_id, sizeof r->client_id, "%s", q->request_id);
    else
        snprintf(r->client_id, sizeof r->client_id, "req-%llx-%llu",
                 (unsigned long long)(r->t_arrival & 0xffffffffffULL), (unsigned long long)r->id);
    int rc = co->shutting_down ? ts_error_set(TS_E_UNAVAILABLE, "the coordinator is shutting down")
                               : make_request(co, q, r);
    if (!rc) {
        ts_rpc_call_ref(call);
        r->call = call;
        ts_rpc_call_set_data(call, r);
        co_request_insert(co, r);
        co->requests_active++;
        co->requests_total++;
        rc = co_route(co, r, false);
        if (rc) {
            /* Not admitted: the client gets the status; on_done frees the request. */
            ts_rpc_call_fail(call, rc, NULL);
            r->closed = true;
            co->requests_active--;
        } else {
            ts_log(TS_LOG_DEBUG, r->client_id, "admitted: %d prompt tokens, max %d",
                   r->req.n_prompt_ids, r->req.params.max_tokens);
        }
        r = NULL;
    } else {
        ts_rpc_call_fail(call, rc, NULL);
    }
    pthread_mutex_unlock(&co->mu);
    co_request_destroy(r);
    tessera__v1__generate_request__free_unpacked(q, NULL);
}

static void generate_done(ts_rpc_call *call, int cancelled, void *arg) {
    coordinator *co = arg;
    co_request *r = ts_rpc_call_data(call);
    if (!r) return;
    pthread_mutex_lock(&co->mu);
    if (!r->closed) {
        ts_log(TS_LOG_INFO, r->client_id, "client went away (cancel, deadline or disconnect)");
        r->closed = true;
        co->requests_active--;
        if (r->queued) co_queue_remove(co, r);
        if (r->group) co_group_send_cancel(co, r->group, r->id);
    }
    r->call_done = true;
    co_request_maybe_free(co, r);
    pthread_mutex_unlock(&co->mu);
}

void co_api_tick(coordinator *co, int64_t now) {
    /* Collect first: failing a request may end a group (a failed Cancel send), which frees its
     * finished requests, so the table must not be walked meanwhile. Expired requests are not
     * closed, hence not freed by that. */
    co_request *expired[64];
    int n = 0;
    for (int b = 0; b < CO_HASH_BUCKETS && n < 64; b++)
        for (co_request *r = co->buckets[b]; r && n < 64; r = r->h_next)
            if (!r->closed && now > r->deadline_ns) expired[n++] = r;
    for (int i = 0; i < n; i++)
        co_request_fail(co, expired[i], TS_RPC_DEADLINE_EXCEEDED, "the deadline passed");
}

/* ---- unary methods ---- */

static void tokenize_message(ts_rpc_call *call, const uint8_t *data, size_t len, void *arg) {
    coordinator *co = arg;
    Tessera__V1__TokenizeRequest *q = tessera__v1__tokenize_request__unpack(NULL, len, data);
    if (!q) {
        ts_rpc_call_finish(call, TS_RPC_INVALID_ARGUMENT, "malformed TokenizeRequest");
        return;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = model_matches(co, q->model)
                 ? ts_tokenizer_encode(co->tok, q->text, strlen(q->text),
                                       !q->no_bos && ts_tokenizer_adds_bos(co->tok), false, &ids,
                                       &n)
                 : bad("unknown model '%s' (this cluster serves '%s')", q->model, co->model_name);
    char **pieces = rc ? NULL : calloc(n ? n : 1, sizeof *pieces);
    if (!rc && !pieces) rc = ts_error_set(TS_E_NOMEM, "out of memory");
    if (rc) {
        ts_rpc_call_fail(call, rc, NULL);
    } else {
        for (size_t i = 0; i < n; i++)
            pieces[i] = (char *)ts_tokenizer_token_text(co->tok, ids[i]);
        Tessera__V1__TokenizeResponse m = TESSERA__V1__TOKENIZE_RESPONSE__INIT;
        m.n_ids = n;
        m.ids = ids;
        m.n_pieces = n;
        m.pieces = pieces;
        if (!ts_rpc_call_send_pb(call, &m.base)) ts_rpc_call_finish(call, TS_RPC_OK, NULL);
    }
    free(pieces);
    free(ids);
    tessera__v1__tokenize_request__free_unpacked(q, NULL);
}

static void list_models_message(ts_rpc_call *call, const uint8_t *data, size_t len, void *arg) {
    coordinator *co = arg;
    Tessera__V1__ModelInfo info = TESSERA__V1__MODEL_INFO__INIT;
    Tessera__V1__ModelInfo *infos[1] = {&info};
    pthread_mutex_lock(&co->mu);
    info.name = co->model_name;
    info.architecture = co->architecture;
    info.vocab_size = co->vocab;
    info.context_length = largest_context(co);
    info.node_groups = co_live_groups(co);
    pthread_mutex_unlock(&co->mu);
    Tessera__V1__ListModelsResponse m = TESSERA__V1__LIST_MODELS_RESPONSE__INIT;
    m.n_models = 1;
    m.models = infos;
    if (!ts_rpc_call_send_pb(call, &m.base)) ts_rpc_call_finish(call, TS_RPC_OK, NULL);
}

static void health_message(ts_rpc_call *call, const uint8_t *data, size_t len, void *arg) {
    coordinator *co = arg;
    pthread_mutex_lock(&co->mu);
    int n = co_live_groups(co);
    Tessera__V1__NodeGroupInfo *infos = calloc(n ? (size_t)n : 1, sizeof *infos);
    Tessera__V1__NodeGroupInfo **ptrs = calloc(n ? (size_t)n : 1, sizeof *ptrs);
    Tessera__V1__HealthResponse m = TESSERA__V1__HEALTH_RESPONSE__INIT;
    if (infos && ptrs) {
        int i = 0;
        for (co_group *g = co->groups; g; g = g->next) {
            if (!g->registered || g->dead) continue;
            Tessera__V1__NodeGroupInfo *gi = &infos[i];
            tessera__v1__node_group_info__init(gi);
            gi->name = g->name;
            gi->role = g->role;
            gi->tp = g->tp;
            gi->running = g->running;
            gi->waiting = g->waiting;
            gi->kv_blocks_total = g->kv_total;
            gi->kv_blocks_free = g->kv_free;
            gi->endpoint = g->peer;
            ptrs[i++] = gi;
        }
        m.n_groups = (size_t)i;
        m.groups = ptrs;
        m.serving = i > 0 && !co->shutting_down;
        m.requests_active = co->requests_active;
        m.requests_total = co->requests_total;
        m.requests_retried = co->requests_retried;
        char *refused[CO_MAX_REFUSALS];
        int n_refused = co->n_refusals < CO_MAX_REFUSALS ? co->n_refusals : CO_MAX_REFUSALS;
        for (int k = 0; k < n_refused; k++)
            refused[k] = co->refusals[(co->n_refusals - n_refused + k) % CO_MAX_REFUSALS];
        m.n_refused_groups = (size_t)n_refused;
        m.refused_groups = refused;
        /* Packed under the lock: the strings belong to the groups. */
        if (!ts_rpc_call_send_pb(call, &m.base)) ts_rpc_call_finish(call, TS_RPC_OK, NULL);
    } else {
        ts_rpc_call_finish(call, TS_RPC_RESOURCE_EXHAUSTED, "coordinator out of memory");
    }
    pthread_mutex_unlock(&co->mu);
    free(infos);
    free(ptrs);
}

void co_api_methods(coordinator *co, ts_rpc_method *generate, ts_rpc_method *tokenize,
                    ts_rpc_method *list_models, ts_rpc_method *health) {
    *generate = (ts_rpc_method){.kind = TS_RPC_SERVER_STREAM,
                                .on_message = generate_message,
                                .on_done = generate_done,
                                .arg = co};
    *tokenize = (ts_rpc_method){.kind = TS_RPC_UNARY, .on_message = tokenize_message, .arg = co};
    *list_models =
        (ts_rpc_method){.kind = TS_RPC_UNARY, .on_message = list_models_message, .arg = co};
    *health = (ts_rpc_method){.kind = TS_RPC_UNARY, .on_message = health_message, .arg = co};
}
