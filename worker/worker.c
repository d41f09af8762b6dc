/*
 * worker.c — see worker.h. The engine thread owns the scheduler; the receiver thread fills the
 * inbox and sends heartbeats. Lock: w->mu guards the inbox and the published scheduler figures,
 * and is never held across I/O or an engine step.
 */
#include "worker/worker.h"

#include "common/buf.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/log.h"
#include "common/secret.h"
#include "kvx/kv_transfer.h"
#include "request/request_pb.h"
#include "rpc/rpc_client.h"
#include "rpc/rpc_status.h"
#include "worker/worker_disagg.h"
#include "tessera/v1/worker.pb-c.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ATTACH_METHOD "/tessera.v1.Worker/Attach"
/* The keep-alive request of an idle TP group; the coordinator's ids never reach it. */
#define KEEPALIVE_ID UINT64_MAX

typedef struct pending_event {
    ts_sched_event ev;
    char *error;         /* FINISH_REASON_ERROR text (owned) or NULL */
    int error_status;    /* with it: the gRPC status (INVALID_ARGUMENT: the request is bad) */
    bool kv_transferred; /* prefill role: the request's KV reached its decode group */
    float kv_transfer_ms;
} pending_event;

typedef struct worker {
    ts_runtime *rt;
    ts_sched *sched;
    ts_wdis *dis; /* disaggregated requests (NULL without a KV transfer group) */
    const ts_worker_options *o;
    volatile sig_atomic_t *stop;
    char name[256];
    char host[128];
    int heartbeat_ms;

    ts_rpc_channel *ch;
    ts_rpc_stream *stream;
    pthread_t rx;
    bool rx_running;
    atomic_int rx_stop;
    bool closing; /* our side is closed: no more heartbeats; under mu */

    pthread_mutex_t mu; /* guards the inbox below, `stats` and `closing` */
    pthread_cond_t cv;
    Tessera__V1__CoordinatorMessage **inbox;
    size_t n_inbox, cap_inbox;
    bool broken;
    char broken_msg[512];

    bool send_failed;      /* the current stream is being dropped: send nothing more */
    ts_sched_stats stats;  /* the engine's latest figures, for heartbeats; under mu */
    ts_kv_tiers_stats tier_stats; /* the same of the lower KV tiers (has_tiers); under mu */
    bool has_tiers;
    /* Prefix-cache keys for the next heartbeat (cache-aware routing); under mu. */
    uint64_t *cache_add, *cache_del;
    int32_t n_cache_add, n_cache_del, cache_max;
    bool cache_snapshot;           /* cache_add is the whole cache */
    bool cache_want_snapshot;      /* the next publish sends the whole cache */
    uint64_t *take_add, *take_del; /* the engine thread's scratch */
    pending_event *events; /* produced by the current step */
    size_t n_events, cap_events;
    bool draining;
} worker;

/* ---- the inbox (receiver thread → engine thread) --------------------------------------- */

static void inbox_push(worker *w, Tessera__V1__CoordinatorMessage *m, const char *broken) {
    pthread_mutex_lock(&w->mu);
    if (m) {
        if (w->n_inbox == w->cap_inbox) {
            size_t cap = w->cap_inbox ? w->cap_inbox * 2 : 64;
            void *p = realloc(w->inbox, cap * sizeof *w->inbox);
            if (!p) {
                tessera__v1__coordinator_message__free_unpacked(m, NULL);
                m = NULL;
                broken = "out of memory queueing a coordinator message";
            } else {
                w->inbox = p;
                w->cap_inbox = cap;
            }
        }
        if (m) w->inbox[w->n_inbox++] = m;
    }
    if (broken && !w->broken) {
        w->broken = true;
        snprintf(w->broken_msg, sizeof w->broken_msg, "%s", broken);
    }
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Heartbeats go out from the receiver thread with the engine's latest figures, so that a long
 * engine step (a big prefill on a slow device) is not mistaken for a dead group; a hung engine
 * is caught by the group's collective timeouts instead, and a stopped or dead process sends
 * nothing at all. */
static void send_heartbeat(worker *w) {
    /* Under mu, so that it cannot slip in after finish_run closed our side (the send does not
     * wait: it only queues). */
    pthread_mutex_lock(&w->mu);
    if (w->closing) {
        pthread_mutex_unlock(&w->mu);
        return;
    }
    ts_sched_stats st = w->stats;
    Tessera__V1__Heartbeat hb = TESSERA__V1__HEARTBEAT__INIT;
    hb.running = st.n_running;
    hb.waiting = st.n_waiting;
    hb.kv_blocks_free = st.blocks_free;
    hb.kv_blocks_cached = st.blocks_cached;
    hb.steps = st.steps;
    hb.prefill_tokens = st.prefill_tokens;
    hb.decode_tokens = st.decode_tokens;
    hb.preemptions = st.preemptions;
    hb.n_cache_added = (size_t)w->n_cache_add;
    hb.cache_added = w->cache_add;
    hb.n_cache_removed = (size_t)w->n_cache_del;
    hb.cache_removed = w->cache_del;
    hb.cache_snapshot = w->cache_snapshot;
    hb.prefix_cache_query_tokens = st.cache_query_tokens;
    hb.prefix_cache_hit_tokens = st.cache_hit_tokens;
    hb.prefix_cache_host_hit_tokens = st.cache_host_hit_tokens;
    hb.prefix_cache_disk_hit_tokens = st.cache_disk_hit_tokens;
    Tessera__V1__KvTierStats kt = TESSERA__V1__KV_TIER_STATS__INIT;
    if (w->has_tiers) {
        const ts_kv_tiers_stats *t = &w->tier_stats;
        kt.host_blocks_total = t->host_blocks_total;
        kt.host_blocks_used = t->host_blocks_used;
        kt.disk_blocks_total = t->disk_blocks_total;
        kt.disk_blocks_used = t->disk_blocks_used;
        kt.stored_blocks = t->stored_blocks;
        kt.stored_bytes = t->stored_bytes;
        kt.store_ns = t->store_ns;
        kt.loaded_blocks = t->loaded_blocks;
        kt.loaded_bytes = t->loaded_bytes;
        kt.load_ns = t->load_ns;
        kt.disk_loaded_blocks = t->disk_loaded_blocks;
        kt.checksum_failures = t->checksum_failures;
        kt.disk_write_failures = t->disk_write_failures;
        hb.kv_tiers = &kt;
    }
    Tessera__V1__NodeMessage nm = TESSERA__V1__NODE_MESSAGE__INIT;
    nm.msg_case = TESSERA__V1__NODE_MESSAGE__MSG_HEARTBEAT;
    nm.heartbeat = &hb;
    int rc = ts_rpc_stream_send_pb(w->stream, &nm.base, 0);
    if (!rc) {
        w->n_cache_add = w->n_cache_del = 0;
        w->cache_snapshot = false;
    } else {
        w->cache_want_snapshot = true; /* the coordinator's view is lost with the stream */
    }
    pthread_mutex_unlock(&w->mu);
    if (rc) {
        TS_WARN("sending a heartbeat failed (%s): dropping the connection", ts_error_message());
        ts_rpc_stream_cancel(w->stream);
    }
}

/* Engine thread: makes the scheduler's figures available to the heartbeats. */
static void publish_stats(worker *w) {
    ts_sched_stats st;
    ts_sched_get_stats(w->sched, &st);
    ts_kv_tiers *tiers = ts_runtime_kv_tiers(w->rt);
    ts_kv_tiers_stats ts = {0};
    if (tiers) ts_kv_tiers_get_stats(tiers, &ts);
    ts_kv_pool *pool = ts_sched_pool(w->sched);
    int32_t na = 0, nd = 0;
    bool snapshot = !w->take_add ||
                    ts_kv_pool_journal_take(pool, w->take_add, &na, w->take_del, &nd, w->cache_max);
    pthread_mutex_lock(&w->mu);
    w->stats = st;
    w->tier_stats = ts;
    w->has_tiers = tiers != NULL;
    if (w->take_add) {
        /* Deltas accumulate until a heartbeat takes them; when they outgrow what one should
         * carry, or a snapshot is due, the whole cache goes instead. */
        snapshot = snapshot || w->cache_want_snapshot || w->cache_snapshot ||
                   w->n_cache_add + na > w->cache_max || w->n_cache_del + nd > w->cache_max;
        if (snapshot) {
            w->n_cache_add = ts_kv_pool_cached_keys(pool, w->cache_add, w->cache_max);
            w->n_cache_del = 0;
            w->cache_snapshot = true;
            w->cache_want_snapshot = false;
        } else {
            /* the coordinator applies removals first: a key removed now is no longer added */
            for (int32_t i = 0; i < nd; i++)
                for (int32_t k = 0; k < w->n_cache_add; k++)
                    if (w->cache_add[k] == w->take_del[i]) {
                        w->cache_add[k] = w->cache_add[--w->n_cache_add];
                        break;
                    }
            memcpy(w->cache_add + w->n_cache_add, w->take_add, (size_t)na * sizeof *w->cache_add);
            memcpy(w->cache_del + w->n_cache_del, w->take_del, (size_t)nd * sizeof *w->cache_del);
            w->n_cache_add += na;
            w->n_cache_del += nd;
        }
    }
    pthread_mutex_unlock(&w->mu);
}

static void *rx_main(void *arg) {
    worker *w = arg;
    ts_buf buf = {0};
    int64_t period_ns = (int64_t)w->heartbeat_ms * 1000000LL;
    int64_t next_heartbeat = ts_now_ns();
    while (!atomic_load(&w->rx_stop)) {
        int64_t now = ts_now_ns();
        if (now >= next_heartbeat) {
            send_heartbeat(w);
            next_heartbeat += period_ns;
            if (next_heartbeat <= now) next_heartbeat = now + period_ns; /* fell behind: skip */
        }
        /* Wait only until the next heartbeat is due, so that heartbeats keep their period
         * whatever arrives: sent at a message's arrival instead, they would sample the engine
         * at the one moment it has not taken the new request yet (an idle group, always, under
         * requests that each run shorter than a period). */
        int64_t wait_ms = (next_heartbeat - now + 999999) / 1000000;
        int poll_ms = (int)(wait_ms < 1 ? 1 : wait_ms > 200 ? 200 : wait_ms);
        int rc = ts_rpc_stream_recv(w->stream, &buf, poll_ms);
        if (rc == TS_E_TIMEOUT) continue;
        if (rc == 1) {
            Tessera__V1__CoordinatorMessage *m =
                tessera__v1__coordinator_message__unpack(NULL, buf.len, (const uint8_t *)buf.data);
            if (!m) {
                inbox_push(w, NULL, "malformed message from the coordinator");
                ts_rpc_stream_cancel(w->stream);
                break;
            }
            inbox_push(w, m, NULL);
            continue;
        }
        rc = ts_rpc_stream_finish(w->stream, 1000);
        inbox_push(w, NULL, rc ? ts_error_message() : "the coordinator closed the stream");
        break;
    }
    ts_buf_free(&buf);
    return NULL;
}

/* ---- events ------------------------------------------------------------------------------ */

static pending_event *add_event(worker *w, const ts_sched_event *ev, const char *error) {
    if (ev->request_id == KEEPALIVE_ID) return NULL;
    if (w->n_events == w->cap_events) {
        size_t cap = w->cap_events ? w->cap_events * 2 : 256;
        void *p = realloc(w->events, cap * sizeof *w->events);
        if (!p) {
            TS_ERROR("out of memory: dropping an event of request %llu",
                     (unsigned long long)ev->request_id);
            return NULL;
        }
        w->events = p;
        w->cap_events = cap;
    }
    pending_event *pe = &w->events[w->n_events++];
    pe->ev = *ev;
    pe->error = error ? strdup(error) : NULL;
    pe->error_status = 0;
    pe->kv_transferred = false;
    pe->kv_transfer_ms = 0.0f;
    return pe;
}

static void on_sched_event(void *user, const ts_sched_event *ev) {
    worker *w = user;
    ts_sched_event e = *ev;
    const char *error = ev->finish == TS_FINISH_ERROR ? "the node group failed" : NULL;
    if (w->dis) ts_wdis_filter(w->dis, &e, &error);
    add_event(w, &e, error);
}

static void on_disagg_event(void *user, const ts_sched_event *ev, const char *error,
                            bool kv_transferred, float kv_transfer_ms) {
    pending_event *pe = add_event(user, ev, error);
    if (!pe) return;
    pe->kv_transferred = kv_transferred;
    pe->kv_transfer_ms = kv_transfer_ms;
}

/* `code`: the TS_E_* code of the failure, sent as its gRPC status. */
static void fail_request(worker *w, uint64_t id, int32_t n_prompt, int code, const char *why) {
    ts_sched_event ev = {
        .request_id = id, .token = -1, .finish = TS_FINISH_ERROR, .n_prompt = n_prompt};
    pending_event *pe = add_event(w, &ev, why);
    if (pe) pe->error_status = ts_rpc_status_from_error(code);
}

/* Sends without waiting: a full queue means the coordinator stopped reading, which is handled
 * like a broken stream (the receiver thread reports the end). */
static void send_or_break(worker *w, const ProtobufCMessage *msg) {
    if (!w->stream || w->send_failed) return;
    int rc = ts_rpc_stream_send_pb(w->stream, msg, 0);
    if (rc) {
        TS_WARN("sending to the coordinator failed (%s): dropping the connection",
                ts_error_message());
        w->send_failed = true;
        ts_rpc_stream_cancel(w->stream);
    }
}

static void clear_events(worker *w) {
    for (size_t i = 0; i < w->n_events; i++)
        free(w->events[i].error);
    w->n_events = 0;
}

static void flush_events(worker *w) {
    if (w->n_events == 0) return;
    Tessera__V1__TokenEvent *evs = calloc(w->n_events, sizeof *evs);
    Tessera__V1__TokenEvent **ptrs = calloc(w->n_events, sizeof *ptrs);
    if (!evs || !ptrs) {
        TS_ERROR("out of memory sending %zu events: dropping the connection", w->n_events);
        if (w->stream) ts_rpc_stream_cancel(w->stream);
    } else {
        for (size_t i = 0; i < w->n_events; i++) {
            const pending_event *pe = &w->events[i];
            tessera__v1__token_event__init(&evs[i]);
            evs[i].request_id = pe->ev.request_id;
            evs[i].token = pe->ev.token;
            evs[i].logprob = pe->ev.logprob;
            evs[i].n_top_ids = evs[i].n_top_logprobs = (size_t)pe->ev.n_top;
            evs[i].top_ids = (int32_t *)pe->ev.top_ids;
            evs[i].top_logprobs = (float *)pe->ev.top_logprobs;
            evs[i].finish_reason = ts_finish_reason_to_pb(pe->ev.finish);
            evs[i].prompt_tokens = pe->ev.n_prompt;
            evs[i].cached_prompt_tokens = pe->ev.n_cached;
            if (pe->error) evs[i].error = pe->error;
            evs[i].error_status = pe->error_status;
            evs[i].kv_transferred = pe->kv_transferred;
            evs[i].kv_transfer_ms = pe->kv_transfer_ms;
            ptrs[i] = &evs[i];
        }
        Tessera__V1__TokenEvents te = TESSERA__V1__TOKEN_EVENTS__INIT;
        te.n_events = w->n_events;
        te.events = ptrs;
        Tessera__V1__NodeMessage nm = TESSERA__V1__NODE_MESSAGE__INIT;
        nm.msg_case = TESSERA__V1__NODE_MESSAGE__MSG_EVENTS;
        nm.events = &te;
        send_or_break(w, &nm.base);
    }
    free(evs);
    free(ptrs);
    clear_events(w);
}

/* ---- requests from the coordinator -------------------------------------------------------- */

/* Submit → scheduler parameters, checked by the one validation (request/request.h) against this
 * group's vocabulary and context before anything runs, whichever path the request takes. */
static int submit_params(worker *w, const Tessera__V1__Submit *m, int32_t n_prompt,
                         ts_request_params *p) {
    ts_request_params_from_submit(m, p);
    ts_engine *e = ts_runtime_engine(w->rt);
    ts_request view = {.prompt_ids = m->prompt_ids, .n_prompt_ids = n_prompt, .params = *p};
    ts_request_model model = {.n_vocab = ts_engine_hparams(e)->n_vocab,
                              .n_ctx = ts_engine_options_get(e)->max_ctx};
    return ts_request_validate(&view, &model); /* borrowed storage: not freed */
}

static void handle_submit(worker *w, const Tessera__V1__Submit *m) {
    int32_t n_prompt = m->n_prompt_ids > INT32_MAX ? INT32_MAX : (int32_t)m->n_prompt_ids;
    if (m->request_id == KEEPALIVE_ID) {
        fail_request(w, m->request_id, n_prompt, TS_E_INVALID, "request id reserved");
        return;
    }
    if (w->draining) {
        char why[300];
        snprintf(why, sizeof why, "node group %s is shutting down", w->name);
        fail_request(w, m->request_id, n_prompt, TS_E_UNAVAILABLE, why);
        return;
    }
    ts_request_params p;
    int rc = submit_params(w, m, n_prompt, &p);
    if (!rc && (m->kv_expect || m->kv_endpoints[0])) {
        /* Disaggregated (issue 5): worker_disagg.c reports its own failures. */
        if (!w->dis)
            rc = ts_error_set(TS_E_UNSUPPORTED, "this node group has no KV transfer");
        else if (m->kv_expect)
            ts_wdis_submit_decode(w->dis, m->request_id, m->kv_transfer_id, m->first_token,
                                  m->prompt_ids, n_prompt, &p);
        else
            ts_wdis_submit_prefill(w->dis, m->request_id, m->kv_transfer_id, m->kv_endpoints,
                                   m->prompt_ids, n_prompt, &p);
        if (!rc) return;
    }
    if (!rc) rc = ts_sched_submit(w->sched, m->request_id, m->prompt_ids, n_prompt, &p);
    if (rc) {
        TS_DEBUG("request %llu refused: %s", (unsigned long long)m->request_id, ts_error_message());
        fail_request(w, m->request_id, n_prompt, rc, ts_error_message());
    }
}

/* Returns 1 when the coordinator asked the node to shut down. */
static int handle_inbox(worker *w, Tessera__V1__CoordinatorMessage **msgs, size_t n) {
    int shutdown = 0;
    for (size_t i = 0; i < n; i++) {
        Tessera__V1__CoordinatorMessage *m = msgs[i];
        switch (m->msg_case) {
        case TESSERA__V1__COORDINATOR_MESSAGE__MSG_SUBMIT: handle_submit(w, m->submit); break;
        case TESSERA__V1__COORDINATOR_MESSAGE__MSG_CANCEL:
            /* Not found is fine: the request finished while the Cancel was on its way. */
            if (m->cancel->request_id != KEEPALIVE_ID) {
                bool found =
                    ts_sched_cancel(w->sched, m->cancel->request_id, on_sched_event, w) == TS_OK;
                if (w->dis)
                    ts_wdis_cancel(w->dis, m->cancel->request_id, m->cancel->kv_transfer_id, found);
            }
            break;
        case TESSERA__V1__COORDINATOR_MESSAGE__MSG_SHUTDOWN:
            TS_INFO("the coordinator asked to shut down: %s", m->shutdown->reason);
            shutdown = 1;
            break;
        default: break; /* a second Welcome or an unknown message: nothing to do */
        }
        tessera__v1__coordinator_message__free_unpacked(m, NULL);
    }
    return shutdown;
}

/* ---- the connection ------------------------------------------------------------------------ */

static void disconnect(worker *w) {
    if (w->stream) ts_rpc_stream_cancel(w->stream);
    if (w->rx_running) {
        atomic_store(&w->rx_stop, 1);
        pthread_join(w->rx, NULL);
        w->rx_running = false;
    }
    ts_rpc_stream_destroy(w->stream);
    w->stream = NULL;
    w->send_failed = false;
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < w->n_inbox; i++)
        tessera__v1__coordinator_message__free_unpacked(w->inbox[i], NULL);
    w->n_inbox = 0;
    w->broken = false;
    pthread_mutex_unlock(&w->mu);
}

static void model_name(const ts_runtime *rt, char *out, size_t size) {
    ts_gguf_str s;
    if (ts_gguf_get_str(ts_runtime_gguf(rt), "general.name", &s) == TS_OK && s.len > 0) {
        snprintf(out, size, "%.*s", (int)s.len, s.data);
        return;
    }
    const char *path = ts_runtime_model_path(rt);
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 5 && !strcmp(base + n - 5, ".gguf")) n -= 5;
    snprintf(out, size, "%.*s", (int)n, base);
}

static int send_register(worker *w) {
    ts_engine *e = ts_runtime_engine(w->rt);
    const ts_engine_options *eo = ts_engine_options_get(e);
    char name[256], fp[64];
    model_name(w->rt, name, sizeof name);
    /* The one KV-compatibility fingerprint (kvx/kv_transfer.h): the coordinator pairs only groups
     * whose KV blocks mean the same thing. */
    snprintf(fp, sizeof fp, "%016llx",
             (unsigned long long)ts_kvx_fingerprint(ts_runtime_model(w->rt), eo->kv_type,
                                                     eo->block_size));
    Tessera__V1__Register r = TESSERA__V1__REGISTER__INIT;
    r.group_name = w->name;
    r.role = (char *)w->o->role;
    r.model_name = name;
    r.vocab_size = ts_engine_hparams(e)->n_vocab;
    r.context_length = eo->max_ctx;
    r.tp = ts_runtime_comm(w->rt)->size;
    r.kv_blocks_total = ts_engine_n_blocks(e);
    r.block_size = eo->block_size;
    r.max_batch_seqs = eo->max_batch_seqs;
    r.host = w->host;
    r.model_fingerprint = fp;
    r.kv_type = (char *)ts_dtype_name(eo->kv_type);
    r.kv_endpoint = w->o->kvx ? (char *)ts_kvx_group_endpoints(w->o->kvx) : "";
    Tessera__V1__NodeMessage nm = TESSERA__V1__NODE_MESSAGE__INIT;
    nm.msg_case = TESSERA__V1__NODE_MESSAGE__MSG_REGISTER;
    nm.register_ = &r;
    return ts_rpc_stream_send_pb(w->stream, &nm.base, 5000);
}

/* Reads "host:port" from the coordinator file, waiting for it until the deadline. */
static int read_endpoint_file(const char *path, int64_t deadline, char *out, size_t size) {
    for (;;) {
        ts_buf b = {0};
        if (ts_buf_read_file(&b, path) == TS_OK && b.len > 0) {
            size_t n = strcspn(b.data, "\r\n \t");
            snprintf(out, size, "%.*s", (int)n, b.data);
            ts_buf_free(&b);
            if (n > 0) return TS_OK;
        }
        ts_buf_free(&b);
        if (ts_now_ns() > deadline)
            return ts_error_set(TS_E_UNAVAILABLE, "--coordinator-file %s: no endpoint appeared",
                                path);
        ts_sleep_ms(100);
    }
}

/* Dials, registers, waits for Welcome; retries until the deadline. A refusal (the coordinator
 * answered the Register with an error other than UNAVAILABLE) is not retried. */
static int connect_coordinator(worker *w, int64_t deadline) {
    char target[512];
    int rc = TS_OK;
    if (w->o->coordinator)
        snprintf(target, sizeof target, "%s", w->o->coordinator);
    else
        rc = read_endpoint_file(w->o->coordinator_file, deadline, target, sizeof target);
    if (rc) return rc;
    if (!w->ch) {
        ts_rpc_channel_options co;
        ts_rpc_channel_options_default(&co);
        ts_rpc_metadata secret = {TS_CLUSTER_SECRET_KEY, w->o->cluster_secret};
        if (w->o->cluster_secret && w->o->cluster_secret[0]) {
            co.metadata = &secret;
            co.n_metadata = 1;
        }
        rc = ts_rpc_channel_create(target, &co, &w->ch);
        if (rc) return ts_error_wrap(rc, "--coordinator %s", target);
    }
    ts_buf buf = {0};
    char last[512] = "no answer";
    for (int attempt = 0;; attempt++) {
        if (*w->stop) {
            rc = ts_error_set(TS_E_CANCELLED, "stopped while connecting");
            break;
        }
        atomic_store(&w->rx_stop, 0);
        w->closing = false; /* no receiver thread runs here */
        rc = ts_rpc_stream_open(w->ch, ATTACH_METHOD, 0, &w->stream);
        if (rc) break;
        rc = send_register(w);
        int got = rc ? rc : ts_rpc_stream_recv(w->stream, &buf, 5000);
        if (got == 1) {
            Tessera__V1__CoordinatorMessage *m =
                tessera__v1__coordinator_message__unpack(NULL, buf.len, (const uint8_t *)buf.data);
            if (m && m->msg_case == TESSERA__V1__COORDINATOR_MESSAGE__MSG_WELCOME) {
                w->heartbeat_ms = m->welcome->heartbeat_ms > 0 ? m->welcome->heartbeat_ms : 500;
                tessera__v1__coordinator_message__free_unpacked(m, NULL);
                pthread_mutex_lock(&w->mu);
                w->cache_want_snapshot = true; /* a new connection knows nothing yet */
                pthread_mutex_unlock(&w->mu);
                publish_stats(w);
                if (pthread_create(&w->rx, NULL, rx_main, w) != 0) {
                    rc = ts_error_set(TS_E_INTERNAL, "cannot start the receiver thread");
                    break;
                }
                w->rx_running = true;
                TS_INFO("attached to the coordinator at %s as group %s", target, w->name);
                rc = TS_OK;
                break;
            }
            if (m) tessera__v1__coordinator_message__free_unpacked(m, NULL);
            snprintf(last, sizeof last, "the coordinator did not answer Register with Welcome");
            ts_rpc_stream_cancel(w->stream);
        } else if (got == 0 || got == TS_E_CANCELLED) {
            rc = ts_rpc_stream_finish(w->stream, 1000);
            snprintf(last, sizeof last, "%s", ts_error_message());
            if (rc && rc != TS_E_UNAVAILABLE && rc != TS_E_CANCELLED && rc != TS_E_TIMEOUT) {
                ts_error_set(rc, "the coordinator at %s refused group %s: %s", target, w->name,
                             last);
                break; /* refused: retrying would not help */
            }
        } else {
            snprintf(last, sizeof last, "%s", ts_error_message());
        }
        ts_rpc_stream_destroy(w->stream);
        w->stream = NULL;
        if (ts_now_ns() > deadline) {
            rc = ts_error_set(TS_E_UNAVAILABLE, "cannot reach the coordinator at %s: %s", target,
                              last);
            break;
        }
        if (attempt == 0) TS_INFO("waiting for the coordinator at %s (%s)", target, last);
        ts_sleep_ms(200);
    }
    ts_buf_free(&buf);
    if (rc && w->stream) {
        ts_rpc_stream_destroy(w->stream);
        w->stream = NULL;
    }
    return rc;
}

/* ---- the engine loop ------------------------------------------------------------------------- */

static int connect_timeout_ms(const worker *w) {
    return w->o->connect_timeout_ms > 0 ? w->o->connect_timeout_ms : 60000;
}

static void keepalive_step(worker *w) {
    ts_request_params p = ts_request_params_default();
    p.max_tokens = 1;
    int32_t token = 0;
    if (ts_sched_submit(w->sched, KEEPALIVE_ID, &token, 1, &p) == TS_OK)
        TS_DEBUG("keep-alive step for the group's followers");
}

/* Ends the run: every request left is finished with `reason` and the stream closed. */
static void finish_run(worker *w, ts_finish_reason reason) {
    ts_sched_abort_all(w->sched, reason, on_sched_event, w);
    if (w->dis) ts_wdis_abort_all(w->dis, reason);
    flush_events(w);
    if (w->stream) {
        pthread_mutex_lock(&w->mu);
        w->closing = true;
        ts_rpc_stream_close_send(w->stream);
        pthread_mutex_unlock(&w->mu);
        /* Let the coordinator read what is queued (it ends the call on our half-close). */
        int64_t end = ts_now_ns() + 2000 * 1000000LL;
        while (w->rx_running && ts_now_ns() < end) {
            pthread_mutex_lock(&w->mu);
            bool done = w->broken;
            pthread_mutex_unlock(&w->mu);
            if (done) break;
            ts_sleep_ms(20);
        }
    }
    disconnect(w);
}

static int engine_loop(worker *w) {
    int64_t last_step = ts_now_ns(), drain_end = 0;
    ts_comm *comm = ts_runtime_comm(w->rt);
    int64_t keepalive_ns =
        (int64_t)(w->o->comm_timeout_ms > 0 ? w->o->comm_timeout_ms : 60000) * 1000000LL / 4;
    Tessera__V1__CoordinatorMessage **batch = NULL;
    size_t cap_batch = 0;
    int rc = TS_OK;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        if (w->n_inbox == 0 && !w->broken && !ts_sched_has_work(w->sched) && !*w->stop) {
            /* KV transfers in flight are polled every millisecond */
            int64_t wait_ns = w->dis && ts_wdis_busy(w->dis) ? 1000000LL : 50000000LL;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += wait_ns;
            ts.tv_sec += ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&w->cv, &w->mu, &ts);
        }
        size_t n = w->n_inbox;
        if (n > cap_batch) {
            void *p = realloc(batch, n * sizeof *batch);
            if (p) {
                batch = p;
                cap_batch = n;
            } else {
                n = cap_batch;
            }
        }
        if (n > 0) {
            memcpy(batch, w->inbox, n * sizeof *batch);
            memmove(w->inbox, w->inbox + n, (w->n_inbox - n) * sizeof *batch);
            w->n_inbox -= n;
        }
        bool broken = w->broken && w->n_inbox == 0;
        char why[512];
        snprintf(why, sizeof why, "%s", w->broken_msg);
        pthread_mutex_unlock(&w->mu);

        if (handle_inbox(w, batch, n)) {
            finish_run(w, TS_FINISH_CANCELLED);
            break;
        }
        if (broken) {
            /* The coordinator fails or retries these requests itself: free their blocks now. */
            ts_sched_abort_all(w->sched, TS_FINISH_ERROR, on_sched_event, w);
            if (w->dis) ts_wdis_abort_all(w->dis, TS_FINISH_ERROR);
            clear_events(w);
            disconnect(w);
            if (*w->stop) break;
            TS_WARN("lost the coordinator (%s); reconnecting for up to %d ms", why,
                    connect_timeout_ms(w));
            rc = connect_coordinator(w, ts_now_ns() + (int64_t)connect_timeout_ms(w) * 1000000);
            if (rc) {
                if (rc == TS_E_CANCELLED) rc = TS_OK; /* stopped by a signal meanwhile */
                break;
            }
            continue;
        }
        if (*w->stop && !w->draining) {
            w->draining = true;
            drain_end =
                ts_now_ns() + (int64_t)(w->o->drain_ms > 0 ? w->o->drain_ms : 10000) * 1000000LL;
            TS_INFO("stopping: finishing running requests (up to %d ms)",
                    w->o->drain_ms > 0 ? w->o->drain_ms : 10000);
        }
        if (w->draining && ((!ts_sched_has_work(w->sched) && !(w->dis && ts_wdis_busy(w->dis))) ||
                            ts_now_ns() > drain_end)) {
            finish_run(w, TS_FINISH_ERROR);
            break;
        }
        if (ts_sched_has_work(w->sched)) {
            rc = ts_sched_step(w->sched, on_sched_event, w);
            last_step = ts_now_ns();
            if (rc) {
                ts_error_wrap(rc, "engine step");
                TS_ERROR("%s: the group cannot continue", ts_error_message());
                flush_events(w);
                disconnect(w);
                break;
            }
        } else if (comm->size > 1 && ts_now_ns() - last_step > keepalive_ns) {
            keepalive_step(w);
            last_step = ts_now_ns();
        }
        if (w->dis) ts_wdis_poll(w->dis);
        flush_events(w);
        publish_stats(w);
    }
    free(batch);
    return rc;
}

static void default_name(worker *w) {
    if (w->o->name && w->o->name[0])
        snprintf(w->name, sizeof w->name, "%s", w->o->name);
    else
        snprintf(w->name, sizeof w->name, "%s-%d", w->host, (int)getpid());
    /* Several groups in one MPI world share the flags: tell them apart. */
    ts_comm *comm = ts_runtime_comm(w->rt);
    if (ts_mpi_launched() && comm->size > 0 && ts_mpi_world_size() > comm->size) {
        size_t len = strlen(w->name);
        snprintf(w->name + len, sizeof w->name - len, "-g%d", ts_mpi_world_rank() / comm->size);
    }
}

int ts_worker_run(ts_runtime *rt, const ts_worker_options *o, volatile sig_atomic_t *stop) {
    if (!ts_runtime_is_leader(rt))
        return ts_error_set(TS_E_INVALID, "ts_worker_run: not the group leader");
    if (!o->coordinator && !o->coordinator_file)
        return ts_error_set(TS_E_INVALID, "no coordinator: give --coordinator HOST:PORT, "
                                          "--coordinator-file PATH or TESSERA_COORDINATOR");
    worker *w = calloc(1, sizeof *w);
    if (!w) return ts_error_set(TS_E_NOMEM, "out of memory");
    w->rt = rt;
    w->sched = ts_runtime_scheduler(rt);
    w->o = o;
    w->stop = stop;
    if (gethostname(w->host, sizeof w->host) != 0) snprintf(w->host, sizeof w->host, "node");
    w->host[sizeof w->host - 1] = '\0';
    default_name(w);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    int rc = TS_OK;
    /* Cache-aware routing: the pool records its changes for the heartbeats (without memory for
     * them the group is routed without its cache, nothing worse). */
    w->cache_max = 4 * ts_kv_pool_n_blocks(ts_sched_pool(w->sched));
    w->cache_add = malloc((size_t)w->cache_max * sizeof(uint64_t));
    w->cache_del = malloc((size_t)w->cache_max * sizeof(uint64_t));
    w->take_add = malloc((size_t)w->cache_max * sizeof(uint64_t));
    w->take_del = malloc((size_t)w->cache_max * sizeof(uint64_t));
    if (w->cache_add && w->cache_del && w->take_add && w->take_del) {
        ts_kv_pool_journal_enable(ts_sched_pool(w->sched));
    } else {
        free(w->take_add);
        w->take_add = NULL;
    }
    if (o->kvx) {
        const ts_engine_options *eo = ts_engine_options_get(ts_runtime_engine(rt));
        rc = ts_wdis_create(o->kvx, w->sched, eo->max_ctx, eo->block_size, 0, on_disagg_event, w,
                            &w->dis);
    }
    if (!rc) rc = connect_coordinator(w, ts_now_ns() + (int64_t)connect_timeout_ms(w) * 1000000);
    if (rc == TS_E_CANCELLED && *stop)
        rc = TS_OK;
    else if (!rc)
        rc = engine_loop(w);
    disconnect(w);
    ts_wdis_destroy(w->dis);
    ts_rpc_channel_destroy(w->ch);
    clear_events(w);
    free(w->events);
    free(w->inbox);
    free(w->cache_add);
    free(w->cache_del);
    free(w->take_add);
    free(w->take_del);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
    return rc;
}
