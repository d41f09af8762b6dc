/*
 * api.c — tessera.v1.Inference: the public API (see rpc/proto/tessera/v1/inference.proto), the
 * gRPC adapter of the coordinator. A new front door (HTTP, the batch runner) is another file like
 * the Generate part of this one: its wire format → ts_request (request/request_pb.h here), then
 * co_request_admit with its co_output callbacks, co_request_client_done when the client is gone.
 *
 * Generate is validated completely before it is admitted (co_request_admit: the model name, then
 * every field by ts_request_validate, request/request.h), so that a bad request gets
 * INVALID_ARGUMENT with a message naming the field and its limits, never a node error later and
 * never a retry. Then: no group serving → UNAVAILABLE; must wait but the queue is full →
 * RESOURCE_EXHAUSTED; otherwise it runs (router.c) and streams (request.c → the callbacks below,
 * one GenerateResponse per output). A client that cancels, goes away, or passes its deadline
 * ends the call; on_done then cancels the request on its node, which frees its KV blocks at once.
 * A call with n samples runs n requests (co_request_admit_sample: they share the prompt's KV) whose
 * messages carry their index; it ends OK when all n have finished, or with the first error.
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

/* The API keys (auth.h): false, with the call finished UNAUTHENTICATED, without a valid one. */
static bool authorized(coordinator *co, ts_rpc_call *call) {
    size_t n = 0;
    const char *v = ts_rpc_call_metadata(call, "authorization", &n);
    if (co_auth_check(co->auth, v, n)) return true;
    ts_rpc_call_finish(call, TS_RPC_UNAUTHENTICATED,
                       "missing or wrong API key (metadata authorization: Bearer KEY; the CLI "
                       "sends TESSERA_API_KEY)");
    return false;
}

/* ---- Generate: the request model in, its outputs as GenerateResponse messages out ---- */

/* One call's samples (GenerateRequest.n): each runs as a co_request of its own, the first
 * admitted with co_request_admit, the others as its samples (co_request_admit_sample), and all
 * stream into the one call. The call's data. Under co->mu: refs (the call's, until
 * generate_done, and one per admitted sample, until its release), n_done, over. */
typedef struct grpc_gen grpc_gen;
typedef struct grpc_sample {
    grpc_gen *gen;
    int32_t index;
    co_request *r; /* NULL before admission and after its release */
} grpc_sample;

struct grpc_gen {
    ts_rpc_call *call; /* a reference, dropped with the last of refs */
    int refs;
    int32_t n, n_done;
    bool over; /* failed or finished: the samples still running are cancelled at their output */
    char id[TS_REQUEST_ID_BYTES]; /* request_id: the first sample's, for all of them */
    grpc_sample samples[];
};

static void gen_unref(grpc_gen *gen) {
    if (--gen->refs > 0) return;
    ts_rpc_call_unref(gen->call);
    free(gen);
}

static int grpc_send(co_request *r, const char *text, size_t n, int32_t token, float logprob,
                     ts_finish_reason finish, const ts_request_usage *u) {
    grpc_sample *s = r->out_user;
    grpc_gen *gen = s->gen;
    if (gen->over) return TS_E_CANCELLED; /* another sample failed: this one ends */
    Tessera__V1__GenerateResponse m = TESSERA__V1__GENERATE_RESPONSE__INIT;
    Tessera__V1__Usage usage;
    char *copy = malloc(n + 1); /* protobuf-c wants a NUL-terminated string */
    if (!copy) return TS_E_NOMEM;
    if (n) memcpy(copy, text, n);
    copy[n] = '\0';
    m.text = copy;
    m.index = s->index;
    Tessera__V1__TopLogprobs top = TESSERA__V1__TOP_LOGPROBS__INIT, *tops = &top;
    if (token >= 0) {
        m.n_token_ids = 1;
        m.token_ids = &token;
        if (r->req.params.logprobs) {
            m.n_logprobs = 1;
            m.logprobs = &logprob;
        }
        if (r->n_top > 0) {
            top.n_ids = top.n_logprobs = (size_t)r->n_top;
            top.ids = (int32_t *)r->top_ids;
            top.logprobs = (float *)r->top_logprobs;
            m.n_top_logprobs = 1;
            m.top_logprobs = &tops;
        }
    }
    /* request_id on each sample's first and last message */
    if (!r->sent_first || finish != TS_FINISH_NONE) m.request_id = gen->id;
    if (finish != TS_FINISH_NONE) {
        m.finish_reason = ts_finish_reason_to_pb(finish);
        ts_request_usage_to_pb(u, &usage);
        m.usage = &usage;
    }
    int rc = ts_rpc_call_send_pb(gen->call, &m.base);
    free(copy);
    if (!rc && finish != TS_FINISH_NONE && ++gen->n_done == gen->n) {
        gen->over = true;
        ts_rpc_call_finish(gen->call, TS_RPC_OK, NULL);
    }
    return rc;
}

static int grpc_tokens(co_request *r, const char *text, size_t n, int32_t token, float logprob) {
    return grpc_send(r, text, n, token, logprob, TS_FINISH_NONE, NULL);
}

static int grpc_finish(co_request *r, const char *text, size_t n, int32_t token, float logprob,
                       ts_finish_reason reason, const ts_request_usage *usage) {
    return grpc_send(r, text, n, token, logprob, reason, usage);
}

/* A sample failed: so does the call (its other samples are cancelled by generate_done, or at
 * their next output). */
static void grpc_error(co_request *r, int code, const char *message) {
    grpc_gen *gen = ((grpc_sample *)r->out_user)->gen;
    if (gen->over) return;
    gen->over = true;
    ts_rpc_call_abort(gen->call, ts_rpc_status_from_error(code), message);
}

static void grpc_release(co_request *r) {
    grpc_sample *s = r->out_user;
    s->r = NULL;
    gen_unref(s->gen);
}

static const co_output grpc_output = {
    .tokens = grpc_tokens, .finish = grpc_finish, .error = grpc_error, .release = grpc_release};

/* Admits sample i (under co->mu): a copy of the first's request, seed + i when seeded. */
static int admit_sample(coordinator *co, grpc_gen *gen, const ts_request *first, int32_t i,
                        int64_t deadline) {
    ts_request req;
    if (ts_request_copy(&req, first)) return TS_E_NOMEM;
    if (req.has_seed) req.params.seed += (uint64_t)i;
    grpc_sample *s = &gen->samples[i];
    const co_request *lead = gen->samples[0].r;
    int rc = co_request_admit_sample(co, lead, &req, deadline, &grpc_output, s, &s->r);
    if (!rc) gen->refs++; /* the sample's (grpc_release) */
    return rc;
}

static void generate_message(ts_rpc_call *call, const uint8_t *data, size_t len, void *arg) {
    coordinator *co = arg;
    if (!authorized(co, call)) return;
    Tessera__V1__GenerateRequest *q = tessera__v1__generate_request__unpack(NULL, len, data);
    if (!q) {
        ts_rpc_call_finish(call, TS_RPC_INVALID_ARGUMENT, "malformed GenerateRequest");
        return;
    }
    ts_request req;
    int rc = ts_request_from_generate(q, &req); /* the one mapping (request/request_pb.h) */
    tessera__v1__generate_request__free_unpacked(q, NULL);
    if (!rc) rc = ts_request_validate(&req, NULL); /* n within its limits before allocating */
    int32_t n = req.n > 0 ? req.n : 1;
    grpc_gen *gen = rc ? NULL : calloc(1, sizeof *gen + (size_t)n * sizeof *gen->samples);
    if (!rc && !gen) rc = ts_error_set(TS_E_NOMEM, "coordinator out of memory");
    ts_request rest; /* the other samples' request: the first's before admission moves it */
    ts_request_init(&rest);
    if (!rc && n > 1 && ts_request_copy(&rest, &req))
        rc = ts_error_set(TS_E_NOMEM, "coordinator out of memory");
    if (rc) {
        free(gen);
        ts_request_free(&req);
        ts_rpc_call_fail(call, rc, NULL);
        return;
    }
    ts_rpc_call_ref(call); /* the samples' (gen_unref) */
    gen->call = call;
    gen->refs = 1; /* the call's (generate_done) */
    gen->n = n;
    for (int32_t i = 0; i < n; i++) {
        gen->samples[i].gen = gen;
        gen->samples[i].index = i;
    }
    ts_rpc_call_set_data(call, gen); /* generate_done ends every admitted sample */
    int64_t deadline = ts_rpc_call_deadline_ns(call);
    pthread_mutex_lock(&co->mu);
    grpc_sample *s0 = &gen->samples[0];
    rc = co_request_admit(co, &req, deadline, &grpc_output, s0, &s0->r);
    if (!rc) {
        gen->refs++;
        snprintf(gen->id, sizeof gen->id, "%s", s0->r->client_id);
    }
    for (int32_t i = 1; !rc && i < n; i++)
        rc = admit_sample(co, gen, &rest, i, deadline);
    if (rc) { /* the samples admitted are cancelled by generate_done */
        gen->over = true;
        ts_rpc_call_fail(call, rc, NULL);
    }
    pthread_mutex_unlock(&co->mu);
    ts_request_free(&rest);
}

static void generate_done(ts_rpc_call *call, int cancelled, void *arg) {
    coordinator *co = arg;
    grpc_gen *gen = ts_rpc_call_data(call);
    if (!gen) return;
    pthread_mutex_lock(&co->mu);
    gen->over = true;
    for (int32_t i = 0; i < gen->n; i++) /* each may release: its r is then NULL */
        if (gen->samples[i].r) co_request_client_done(co, gen->samples[i].r);
    gen_unref(gen); /* the call's: it held gen through the loop */
    pthread_mutex_unlock(&co->mu);
}

/* ---- unary methods ---- */

static void tokenize_message(ts_rpc_call *call, const uint8_t *data, size_t len, void *arg) {
    coordinator *co = arg;
    if (!authorized(co, call)) return;
    Tessera__V1__TokenizeRequest *q = tessera__v1__tokenize_request__unpack(NULL, len, data);
    if (!q) {
        ts_rpc_call_finish(call, TS_RPC_INVALID_ARGUMENT, "malformed TokenizeRequest");
        return;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = co_serves_model(co, q->model)
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
    if (!authorized(co, call)) return;
    Tessera__V1__ModelInfo info = TESSERA__V1__MODEL_INFO__INIT;
    Tessera__V1__ModelInfo *infos[1] = {&info};
    pthread_mutex_lock(&co->mu);
    info.name = co->model_name;
    info.architecture = co->architecture;
    info.vocab_size = co->vocab;
    info.context_length = co_largest_context(co);
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
            gi->kv_blocks_cached = g->kv_cached;
            gi->prefix_cache_query_tokens = g->cache_query_tokens;
            gi->prefix_cache_hit_tokens = g->cache_hit_tokens;
            ptrs[i++] = gi;
        }
        m.n_groups = (size_t)i;
        m.groups = ptrs;
        m.serving = i > 0 && !co->shutting_down;
        m.requests_active = co->requests_active;
        m.requests_total = co->requests_total;
        m.requests_retried = co->requests_retried;
        m.requests_failed_over = co->requests_failed_over;
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

static void public_health_message(ts_rpc_call *call, const uint8_t *data, size_t len, void *arg) {
    coordinator *co = arg;
    if (co->protect_metrics && !authorized(co, call)) return;
    health_message(call, data, len, arg);
}

void co_api_methods(coordinator *co, ts_rpc_method *generate, ts_rpc_method *tokenize,
                    ts_rpc_method *list_models, ts_rpc_method *health,
                    ts_rpc_method *launcher_health) {
    *generate = (ts_rpc_method){.kind = TS_RPC_SERVER_STREAM,
                                .on_message = generate_message,
                                .on_done = generate_done,
                                .arg = co};
    *tokenize = (ts_rpc_method){.kind = TS_RPC_UNARY, .on_message = tokenize_message, .arg = co};
    *list_models =
        (ts_rpc_method){.kind = TS_RPC_UNARY, .on_message = list_models_message, .arg = co};
    *health = (ts_rpc_method){.kind = TS_RPC_UNARY, .on_message = public_health_message, .arg = co};
    *launcher_health =
        (ts_rpc_method){.kind = TS_RPC_UNARY, .on_message = health_message, .arg = co};
}
