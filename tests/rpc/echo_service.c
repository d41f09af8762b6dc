/* echo_service.c — the instrumented echo.proto service; see echo_service.h. */
#include "tests/rpc/echo_service.h"

#include "common/clock.h"
#include "common/error.h"
#include "echo.pb-c.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One Count stream, owned by the producer thread's list. */
typedef struct count_job {
    ts_rpc_call *call; /* a reference */
    int id, count, interval_us, payload_bytes;
    char *text;
    int next_seq;
    int64_t next_ns;
    int blocked;  /* waiting for on_writable */
    int finished; /* finish sent or the call ended */
    int n_done;   /* on_done callbacks seen */
    int cancelled;
    struct count_job *next;
} count_job;

struct echo_service {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    pthread_t producer;
    int stop;
    count_job *jobs;
    echo_stats st;
};

static Tessera__Test__EchoRequest *parse_request(ts_rpc_call *call, const uint8_t *data,
                                                 size_t len) {
    Tessera__Test__EchoRequest *req = tessera__test__echo_request__unpack(NULL, len, data);
    if (!req) ts_rpc_call_finish(call, TS_RPC_INVALID_ARGUMENT, "malformed EchoRequest");
    return req;
}

static int reply(ts_rpc_call *call, const char *text, int seq, int id, int payload_bytes) {
    Tessera__Test__EchoReply r = TESSERA__TEST__ECHO_REPLY__INIT;
    r.text = (char *)text;
    r.seq = seq;
    r.id = id;
    uint8_t *payload = NULL;
    if (payload_bytes > 0) {
        payload = malloc((size_t)payload_bytes);
        if (!payload) return ts_error_set(TS_E_NOMEM, "echo: out of memory");
        memset(payload, 'p', (size_t)payload_bytes);
        r.payload.data = payload;
        r.payload.len = (size_t)payload_bytes;
    }
    int rc = ts_rpc_call_send_pb(call, &r.base);
    free(payload);
    return rc;
}

/* ---- Echo (unary) and Stats ----------------------------------------------------------------- */

static void count_started(echo_service *e) {
    pthread_mutex_lock(&e->mu);
    e->st.started++;
    pthread_mutex_unlock(&e->mu);
}

static void on_start(ts_rpc_call *call, void *arg) {
    count_started(arg);
}

static void on_done(ts_rpc_call *call, int cancelled, void *arg) {
    echo_service *e = arg;
    pthread_mutex_lock(&e->mu);
    e->st.done++;
    e->st.cancelled += cancelled;
    /* Calls without a job use the data pointer as their own on_done counter. */
    if (ts_rpc_call_data(call) != NULL) e->st.double_done++;
    ts_rpc_call_set_data(call, call);
    pthread_mutex_unlock(&e->mu);
}

static void echo_on_message(ts_rpc_call *call, const uint8_t *data, size_t len, void *arg) {
    Tessera__Test__EchoRequest *req = parse_request(call, data, len);
    if (!req) return;
    if (strcmp(req->text, "invalid") == 0) {
        ts_error_set(TS_E_INVALID, "echo: the text \"invalid\" is refused");
        ts_rpc_call_fail(call, TS_E_INVALID, NULL);
    } else if (reply(call, req->text, 0, req->id, req->payload_bytes) == 0) {
        ts_rpc_call_finish(call, TS_RPC_OK, NULL);
    } else {
        ts_rpc_call_fail(call, TS_E_INTERNAL, NULL); /* no-op if send already finished it */
    }
    tessera__test__echo_request__free_unpacked(req, NULL);
}

static void stats_on_message(ts_rpc_call *call, const uint8_t *data, size_t len, void *arg) {
    echo_stats st;
    echo_service_stats(arg, &st);
    char text[512];
    echo_stats_format(&st, text, sizeof text);
    reply(call, text, 0, 0, 0);
    ts_rpc_call_finish(call, TS_RPC_OK, NULL);
}

/* ---- Chat (bidi) ------------------------------------------------------------------------------
 */

static void chat_on_message(ts_rpc_call *call, const uint8_t *data, size_t len, void *arg) {
    Tessera__Test__EchoRequest *req = parse_request(call, data, len);
    if (!req) return;
    int rc = reply(call, req->text, 0, req->id, req->payload_bytes);
    if (rc == TS_E_EXHAUSTED) ts_rpc_call_fail(call, rc, NULL);
    tessera__test__echo_request__free_unpacked(req, NULL);
}

static void chat_on_half_close(ts_rpc_call *call, void *arg) {
    ts_rpc_call_finish(call, TS_RPC_OK, NULL);
}

/* ---- Count (server streaming, produced by the engine thread) ----------------------------------
 */

static void count_on_message(ts_rpc_call *call, const uint8_t *data, size_t len, void *arg) {
    echo_service *e = arg;
    Tessera__Test__EchoRequest *req = parse_request(call, data, len);
    if (!req) return;
    if (strcmp(req->text, "invalid") == 0 || req->count < 0) {
        ts_rpc_call_finish(call, TS_RPC_INVALID_ARGUMENT, "count: negative count or invalid text");
        tessera__test__echo_request__free_unpacked(req, NULL);
        return;
    }
    count_job *job = calloc(1, sizeof *job);
    if (!job || !(job->text = strdup(req->text))) {
        free(job);
        ts_rpc_call_finish(call, TS_RPC_RESOURCE_EXHAUSTED, "echo: out of memory");
        tessera__test__echo_request__free_unpacked(req, NULL);
        return;
    }
    job->id = req->id;
    job->count = req->count;
    job->interval_us = req->interval_us;
    job->payload_bytes = req->payload_bytes;
    job->next_ns = ts_now_ns();
    tessera__test__echo_request__free_unpacked(req, NULL);
    ts_rpc_call_ref(call);
    job->call = call;
    ts_rpc_call_set_data(call, job);
    pthread_mutex_lock(&e->mu);
    job->next = e->jobs;
    e->jobs = job;
    e->st.active_streams++;
    pthread_cond_signal(&e->cond);
    pthread_mutex_unlock(&e->mu);
}

static void count_on_writable(ts_rpc_call *call, void *arg) {
    echo_service *e = arg;
    pthread_mutex_lock(&e->mu);
    e->st.writable++;
    count_job *job = ts_rpc_call_data(call);
    job->blocked = 0;
    pthread_cond_signal(&e->cond);
    pthread_mutex_unlock(&e->mu);
}

static void count_on_done(ts_rpc_call *call, int cancelled, void *arg) {
    echo_service *e = arg;
    pthread_mutex_lock(&e->mu);
    count_job *job = ts_rpc_call_data(call);
    e->st.done++;
    e->st.cancelled += cancelled;
    if (!job) { /* the request was refused before a job existed */
        pthread_mutex_unlock(&e->mu);
        return;
    }
    if (job->n_done++ > 0)
        e->st.double_done++;
    else
        e->st.active_streams--;
    job->cancelled = cancelled;
    pthread_cond_signal(&e->cond);
    pthread_mutex_unlock(&e->mu);
}

/* Sends what job may send now. Caller holds e->mu. Returns when blocked, paced or finished. */
static void produce(echo_service *e, count_job *job, int64_t now) {
    char text[64];
    for (int burst = 0; burst < 64 && !job->finished && !job->blocked; burst++) {
        if (job->next_seq == job->count) {
            ts_rpc_call_finish(job->call, TS_RPC_OK, NULL);
            job->finished = 1;
            break;
        }
        if (job->interval_us > 0 && now < job->next_ns) break;
        snprintf(text, sizeof text, "%d:%d", job->id, job->next_seq);
        int rc = reply(job->call, text, job->next_seq, job->id, job->payload_bytes);
        if (rc == 0) {
            job->next_seq++;
            job->next_ns += (int64_t)job->interval_us * 1000;
            e->st.sent++;
            int q = ts_rpc_call_queued(job->call);
            if (q > e->st.max_queued) e->st.max_queued = q;
        } else if (rc == TS_E_EXHAUSTED) {
            e->st.exhausted++;
            job->blocked = 1; /* on_writable, which needs e->mu, clears it */
        } else {
            job->finished = 1; /* the call ended; on_done comes (or came) */
        }
    }
}

static void *producer_main(void *arg) {
    echo_service *e = arg;
    pthread_mutex_lock(&e->mu);
    while (!e->stop) {
        int64_t now = ts_now_ns();
        int64_t wake = now + 50 * 1000000LL;
        count_job **link = &e->jobs;
        while (*link) {
            count_job *job = *link;
            if (job->n_done > 0) {
                /* The call has ended: a late send must fail cleanly, not crash. */
                int rc = reply(job->call, "late", -1, job->id, 0);
                if (rc == TS_E_CANCELLED)
                    e->st.late_send_cancelled++;
                else
                    e->st.late_send_other++;
                *link = job->next;
                ts_rpc_call_unref(job->call);
                free(job->text);
                free(job);
                continue;
            }
            produce(e, job, now);
            if (!job->finished && !job->blocked && job->next_ns < wake) wake = job->next_ns;
            link = &job->next;
        }
        if (wake > now) {
            struct timespec ts = {.tv_sec = (time_t)(wake / 1000000000),
                                  .tv_nsec = (long)(wake % 1000000000)};
            pthread_cond_timedwait(&e->cond, &e->mu, &ts);
        }
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

/* ---- setup ------------------------------------------------------------------------------------
 */

int echo_service_create(ts_rpc_server *srv, echo_service **out) {
    echo_service *e = calloc(1, sizeof *e);
    if (!e) return ts_error_set(TS_E_NOMEM, "echo: out of memory");
    pthread_mutex_init(&e->mu, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&e->cond, &attr);
    pthread_condattr_destroy(&attr);

    ts_rpc_method echo = {.kind = TS_RPC_UNARY,
                          .on_start = on_start,
                          .on_message = echo_on_message,
                          .on_done = on_done,
                          .arg = e};
    ts_rpc_method stats = {.kind = TS_RPC_UNARY, .on_message = stats_on_message, .arg = e};
    ts_rpc_method chat = {.kind = TS_RPC_BIDI_STREAM,
                          .on_start = on_start,
                          .on_message = chat_on_message,
                          .on_half_close = chat_on_half_close,
                          .on_done = on_done,
                          .arg = e};
    ts_rpc_method count = {.kind = TS_RPC_SERVER_STREAM,
                           .on_start = on_start,
                           .on_message = count_on_message,
                           .on_writable = count_on_writable,
                           .on_done = count_on_done,
                           .arg = e};
    int rc = ts_rpc_server_add_method(srv, "/tessera.test.Echo/Echo", &echo);
    if (rc == 0) rc = ts_rpc_server_add_method(srv, "/tessera.test.Echo/Stats", &stats);
    if (rc == 0) rc = ts_rpc_server_add_method(srv, "/tessera.test.Echo/Chat", &chat);
    if (rc == 0) rc = ts_rpc_server_add_method(srv, "/tessera.test.Echo/Count", &count);
    if (rc == 0 && pthread_create(&e->producer, NULL, producer_main, e) != 0)
        rc = ts_error_set(TS_E_INTERNAL, "echo: cannot start the producer thread");
    if (rc != 0) {
        pthread_cond_destroy(&e->cond);
        pthread_mutex_destroy(&e->mu);
        free(e);
        return rc;
    }
    *out = e;
    return 0;
}

void echo_service_stats(echo_service *e, echo_stats *out) {
    pthread_mutex_lock(&e->mu);
    *out = e->st;
    pthread_mutex_unlock(&e->mu);
}

void echo_stats_format(const echo_stats *st, char *buf, size_t size) {
    snprintf(buf, size,
             "started=%d done=%d cancelled=%d double_done=%d active_streams=%d exhausted=%d "
             "writable=%d late_send_cancelled=%d late_send_other=%d max_queued=%d sent=%lld",
             st->started, st->done, st->cancelled, st->double_done, st->active_streams,
             st->exhausted, st->writable, st->late_send_cancelled, st->late_send_other,
             st->max_queued, st->sent);
}

void echo_service_destroy(echo_service *e) {
    if (!e) return;
    pthread_mutex_lock(&e->mu);
    e->stop = 1;
    pthread_cond_signal(&e->cond);
    pthread_mutex_unlock(&e->mu);
    pthread_join(e->producer, NULL);
    while (e->jobs) {
        count_job *job = e->jobs;
        e->jobs = job->next;
        ts_rpc_call_unref(job->call);
        free(job->text);
        free(job);
    }
    pthread_cond_destroy(&e->cond);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

/* ---- client helpers ---------------------------------------------------------------------------
 */

int echo_request_pack(ts_buf *out, const char *text, int count, int interval_us, int payload_bytes,
                      int id) {
    Tessera__Test__EchoRequest r = TESSERA__TEST__ECHO_REQUEST__INIT;
    r.text = (char *)text;
    r.count = count;
    r.interval_us = interval_us;
    r.payload_bytes = payload_bytes;
    r.id = id;
    size_t n = tessera__test__echo_request__get_packed_size(&r);
    ts_buf_clear(out);
    int rc = ts_buf_reserve(out, n + 1);
    if (rc != 0) return rc;
    out->len = tessera__test__echo_request__pack(&r, (uint8_t *)out->data);
    out->data[out->len] = '\0';
    return 0;
}

int echo_reply_parse(const ts_buf *msg, char *text, size_t text_size, int *seq, int *id,
                     size_t *payload_len) {
    Tessera__Test__EchoReply *r =
        tessera__test__echo_reply__unpack(NULL, msg->len, (const uint8_t *)msg->data);
    if (!r) return ts_error_set(TS_E_FORMAT, "malformed EchoReply (%zu bytes)", msg->len);
    if (text) snprintf(text, text_size, "%s", r->text);
    if (seq) *seq = r->seq;
    if (id) *id = r->id;
    if (payload_len) *payload_len = r->payload.len;
    tessera__test__echo_reply__free_unpacked(r, NULL);
    return 0;
}
