/*
 * test_rpc_echo.c — rpc/ end to end in one process: server, client and the echo test service.
 * Behaviours: unary answers and error statuses, UNIMPLEMENTED for unknown methods, 256
 * concurrent streams each getting its own messages in order, bidi with concurrent send and
 * receive threads, client cancel, deadlines, back-pressure on a client that does not read,
 * message size limits, call references that outlive the server, bind failures.
 */
#include "common/clock.h"
#include "common/error.h"
#include "common/log.h"
#include "rpc/rpc_client.h"
#include "rpc/rpc_server.h"
#include "tests/rpc/echo_service.h"
#include "tests/unit/test.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define ECHO "/tessera.test.Echo/Echo"
#define COUNT "/tessera.test.Echo/Count"
#define CHAT "/tessera.test.Echo/Chat"

typedef struct fixture {
    ts_rpc_server *srv;
    echo_service *echo;
    ts_rpc_channel *ch;
    char target[64];
} fixture;

static int fixture_start(fixture *f, const ts_rpc_server_options *so,
                         const ts_rpc_channel_options *co) {
    memset(f, 0, sizeof *f);
    ts_rpc_server_options o;
    if (so)
        o = *so;
    else
        ts_rpc_server_options_default(&o);
    o.address = "127.0.0.1:0";
    int rc = ts_rpc_server_create(&o, &f->srv);
    if (rc == 0) rc = echo_service_create(f->srv, &f->echo);
    if (rc == 0) rc = ts_rpc_server_start(f->srv);
    if (rc == 0) {
        snprintf(f->target, sizeof f->target, "127.0.0.1:%d", ts_rpc_server_port(f->srv));
        rc = ts_rpc_channel_create(f->target, co, &f->ch);
    }
    if (rc != 0) fprintf(stderr, "  fixture: %s\n", ts_error_message());
    return rc;
}

/* Shuts the server down (every on_done runs), then checks the service's invariants. */
static void fixture_stop(fixture *f, echo_stats *final) {
    if (f->srv) ts_rpc_server_shutdown(f->srv, 2000);
    echo_stats st = {0};
    if (f->echo) {
        echo_service_stats(f->echo, &st);
        CHECK_EQ_INT(st.double_done, 0);
        CHECK_EQ_INT(st.late_send_other, 0);
        CHECK_EQ_INT(st.started, st.done);
        CHECK_EQ_INT(st.active_streams, 0);
        CHECK_EQ_INT(ts_rpc_server_active_calls(f->srv), 0);
    }
    echo_service_destroy(f->echo);
    ts_rpc_server_destroy(f->srv);
    ts_rpc_channel_destroy(f->ch);
    if (final) *final = st;
}

/* Polls the service's stats until pred holds or timeout_ms passes; returns pred's last value. */
static int wait_stats(fixture *f, int (*pred)(const echo_stats *, int), int arg, int timeout_ms,
                      echo_stats *st) {
    int64_t until = ts_now_ns() + (int64_t)timeout_ms * 1000000;
    for (;;) {
        echo_service_stats(f->echo, st);
        if (pred(st, arg)) return 1;
        if (ts_now_ns() > until) return 0;
        ts_sleep_ms(2);
    }
}

static int done_at_least(const echo_stats *st, int n) {
    return st->done >= n;
}
static int late_sends_at_least(const echo_stats *st, int n) {
    return st->late_send_cancelled >= n;
}

static int open_count(fixture *f, int id, int count, int interval_us, int payload, int timeout_ms,
                      ts_rpc_stream **s) {
    ts_buf req = {0};
    int rc = echo_request_pack(&req, "", count, interval_us, payload, id);
    if (rc == 0) rc = ts_rpc_stream_open_request(f->ch, COUNT, req.data, req.len, timeout_ms, s);
    ts_buf_free(&req);
    return rc;
}

/* ---- unary ------------------------------------------------------------------------------------
 */

static void test_unary_echo_and_error_status(void) {
    fixture f;
    if (fixture_start(&f, NULL, NULL) != 0) {
        CHECK(0);
        return;
    }
    ts_buf req = {0}, reply = {0};
    char text[64];
    CHECK_OK(echo_request_pack(&req, "hello", 0, 0, 0, 3));
    CHECK_OK(ts_rpc_unary(f.ch, ECHO, req.data, req.len, 5000, &reply));
    int id = -1;
    CHECK_OK(echo_reply_parse(&reply, text, sizeof text, NULL, &id, NULL));
    CHECK_EQ_STR(text, "hello");
    CHECK_EQ_INT(id, 3);

    /* A handler's TS_E_INVALID crosses the wire as INVALID_ARGUMENT with its message. */
    CHECK_OK(echo_request_pack(&req, "invalid", 0, 0, 0, 0));
    CHECK_EQ_INT(ts_rpc_unary(f.ch, ECHO, req.data, req.len, 5000, &reply), TS_E_INVALID);
    CHECK(strstr(ts_error_message(), "INVALID_ARGUMENT") != NULL);
    CHECK(strstr(ts_error_message(), "\"invalid\" is refused") != NULL);

    /* An empty message (all defaults) is a valid request. */
    CHECK_OK(ts_rpc_unary(f.ch, ECHO, "", 0, 5000, &reply));
    ts_buf_free(&req);
    ts_buf_free(&reply);
    fixture_stop(&f, NULL);
}

static void test_unknown_method_is_unimplemented(void) {
    fixture f;
    if (fixture_start(&f, NULL, NULL) != 0) {
        CHECK(0);
        return;
    }
    ts_buf reply = {0};
    CHECK_EQ_INT(ts_rpc_unary(f.ch, "/tessera.test.Echo/Nope", "", 0, 5000, &reply),
                 TS_E_UNSUPPORTED);
    CHECK(strstr(ts_error_message(), "UNIMPLEMENTED") != NULL);
    CHECK(strstr(ts_error_message(), "/tessera.test.Echo/Nope") != NULL);
    CHECK_EQ_INT(ts_rpc_unary(f.ch, "/no.Such/Service", "", 0, 5000, &reply), TS_E_UNSUPPORTED);
    /* A stream to an unknown method ends at once with the same status. */
    ts_rpc_stream *s = NULL;
    CHECK_OK(ts_rpc_stream_open(f.ch, "/tessera.test.Echo/Missing", 5000, &s));
    CHECK_EQ_INT(ts_rpc_stream_recv(s, &reply, 5000), 0);
    CHECK_EQ_INT(ts_rpc_stream_finish(s, 5000), TS_E_UNSUPPORTED);
    ts_rpc_stream_destroy(s);
    ts_buf_free(&reply);
    fixture_stop(&f, NULL);
}

/* ---- many concurrent streams --------------------------------------------------------------------
 */

enum { N_STREAMS = 256, N_READERS = 8, N_MESSAGES = 200 };

typedef struct reader_arg {
    ts_rpc_stream **streams;
    int first, n;
    int errors;
    long long received;
} reader_arg;

/* Reads its streams round-robin, one message per stream per pass, checking id and order. */
static void *reader_main(void *p) {
    reader_arg *a = p;
    ts_buf msg = {0};
    int next_seq[N_STREAMS] = {0};
    int ended[N_STREAMS] = {0};
    int left = a->n;
    while (left > 0) {
        for (int i = a->first; i < a->first + a->n; i++) {
            if (ended[i]) continue;
            int rc = ts_rpc_stream_recv(a->streams[i], &msg, 10000);
            if (rc == 1) {
                char text[64], want[64];
                int seq = -1, id = -1;
                snprintf(want, sizeof want, "%d:%d", i, next_seq[i]);
                if (echo_reply_parse(&msg, text, sizeof text, &seq, &id, NULL) != 0 || id != i ||
                    seq != next_seq[i] || strcmp(text, want) != 0) {
                    if (a->errors++ < 5)
                        fprintf(stderr, "  stream %d: got id %d seq %d \"%s\", want %d %d\n", i, id,
                                seq, text, i, next_seq[i]);
                }
                next_seq[i]++;
                a->received++;
            } else {
                ended[i] = 1;
                left--;
                if (rc != 0 || next_seq[i] != N_MESSAGES ||
                    ts_rpc_stream_finish(a->streams[i], 5000) != 0) {
                    a->errors++;
                    fprintf(stderr, "  stream %d ended rc %d after %d messages: %s\n", i, rc,
                            next_seq[i], ts_error_message());
                }
            }
        }
    }
    ts_buf_free(&msg);
    return NULL;
}

static void test_256_streams_each_get_their_own_messages_in_order(void) {
    fixture f;
    if (fixture_start(&f, NULL, NULL) != 0) {
        CHECK(0);
        return;
    }
    static ts_rpc_stream *streams[N_STREAMS];
    for (int i = 0; i < N_STREAMS; i++)
        CHECK_OK(open_count(&f, i, N_MESSAGES, 0, 0, 60000, &streams[i]));
    pthread_t threads[N_READERS];
    reader_arg args[N_READERS];
    for (int t = 0; t < N_READERS; t++) {
        args[t] = (reader_arg){
            .streams = streams, .first = t * (N_STREAMS / N_READERS), .n = N_STREAMS / N_READERS};
        pthread_create(&threads[t], NULL, reader_main, &args[t]);
    }
    long long received = 0;
    for (int t = 0; t < N_READERS; t++) {
        pthread_join(threads[t], NULL);
        CHECK_EQ_INT(args[t].errors, 0);
        received += args[t].received;
    }
    CHECK_EQ_INT(received, (long long)N_STREAMS * N_MESSAGES);
    for (int i = 0; i < N_STREAMS; i++)
        ts_rpc_stream_destroy(streams[i]);
    echo_stats st;
    fixture_stop(&f, &st);
    CHECK_EQ_INT(st.started, N_STREAMS);
    CHECK_EQ_INT(st.done, N_STREAMS);
    CHECK_EQ_INT(st.cancelled, 0);
    CHECK_EQ_INT(st.sent, (long long)N_STREAMS * N_MESSAGES);
}

/* ---- bidi -------------------------------------------------------------------------------------
 */

enum { CHAT_MESSAGES = 2000 };

typedef struct sender_arg {
    ts_rpc_stream *s;
    int errors;
} sender_arg;

static void *chat_sender_main(void *p) {
    sender_arg *a = p;
    ts_buf req = {0};
    for (int i = 0; i < CHAT_MESSAGES; i++) {
        char text[32];
        snprintf(text, sizeof text, "m%d", i);
        if (echo_request_pack(&req, text, 0, 0, 0, i) != 0 ||
            ts_rpc_stream_send(a->s, req.data, req.len, 5000) != 0)
            a->errors++;
    }
    if (ts_rpc_stream_close_send(a->s) != 0) a->errors++;
    ts_buf_free(&req);
    return NULL;
}

static void test_bidi_send_and_receive_from_two_threads(void) {
    fixture f;
    if (fixture_start(&f, NULL, NULL) != 0) {
        CHECK(0);
        return;
    }
    ts_rpc_stream *s = NULL;
    CHECK_OK(ts_rpc_stream_open(f.ch, CHAT, 60000, &s));
    sender_arg a = {.s = s};
    pthread_t sender;
    pthread_create(&sender, NULL, chat_sender_main, &a);
    ts_buf msg = {0};
    int n = 0, bad = 0, rc;
    while ((rc = ts_rpc_stream_recv(s, &msg, 10000)) == 1) {
        char text[32], want[32];
        int id = -1;
        snprintf(want, sizeof want, "m%d", n);
        if (echo_reply_parse(&msg, text, sizeof text, NULL, &id, NULL) != 0 || id != n ||
            strcmp(text, want) != 0)
            bad++;
        n++;
    }
    pthread_join(sender, NULL);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(a.errors, 0);
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(n, CHAT_MESSAGES);
    CHECK_OK(ts_rpc_stream_finish(s, 5000));
    int code = -1;
    const char *message = NULL;
    CHECK_EQ_INT(ts_rpc_stream_status(s, &code, &message), 1);
    CHECK_EQ_INT(code, TS_RPC_OK);
    /* The sending side is closed: a further send is refused, not crashed. */
    CHECK(ts_rpc_stream_send(s, "x", 1, 0) < 0);
    ts_rpc_stream_destroy(s);
    ts_buf_free(&msg);
    fixture_stop(&f, NULL);
}

/* ---- cancellation and deadlines
 * ------------------------------------------------------------------ */

static void test_client_cancel_reaches_the_server_once(void) {
    fixture f;
    if (fixture_start(&f, NULL, NULL) != 0) {
        CHECK(0);
        return;
    }
    ts_rpc_stream *s = NULL;
    CHECK_OK(open_count(&f, 1, 1000000, 1000, 0, 60000, &s)); /* 1000 messages/s, "forever" */
    ts_buf msg = {0};
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(ts_rpc_stream_recv(s, &msg, 5000), 1);
    int64_t t0 = ts_now_ns();
    ts_rpc_stream_cancel(s);
    int rc;
    while ((rc = ts_rpc_stream_recv(s, &msg, 5000)) == 1) {
    }
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(ts_rpc_stream_finish(s, 5000), TS_E_CANCELLED);
    CHECK(strstr(ts_error_message(), "CANCELLED") != NULL);
    ts_rpc_stream_cancel(s); /* idempotent */

    echo_stats st;
    CHECK(wait_stats(&f, done_at_least, 1, 5000, &st));
    double ms = ts_ns_to_ms(ts_now_ns() - t0);
    fprintf(stderr, "  server on_done %.1f ms after the client's cancel\n", ms);
    CHECK(ms < 1000);
    CHECK_EQ_INT(st.done, 1);
    CHECK_EQ_INT(st.cancelled, 1);
    /* The producer's send after on_done failed cleanly with TS_E_CANCELLED. */
    CHECK(wait_stats(&f, late_sends_at_least, 1, 5000, &st));
    ts_rpc_stream_destroy(s);
    ts_buf_free(&msg);

    /* A bidi stream cancelled by the client refuses further sends. */
    CHECK_OK(ts_rpc_stream_open(f.ch, CHAT, 60000, &s));
    CHECK_OK(ts_rpc_stream_send(s, "", 0, 1000));
    CHECK_EQ_INT(ts_rpc_stream_recv(s, &msg, 5000), 1);
    ts_rpc_stream_cancel(s);
    CHECK_EQ_INT(ts_rpc_stream_finish(s, 5000), TS_E_CANCELLED);
    CHECK_EQ_INT(ts_rpc_stream_send(s, "", 0, 1000), TS_E_CANCELLED);
    CHECK_EQ_INT(ts_rpc_stream_close_send(s), TS_E_CANCELLED);
    ts_rpc_stream_destroy(s);
    CHECK(wait_stats(&f, done_at_least, 2, 5000, &st));
    CHECK_EQ_INT(st.cancelled, 2);
    ts_buf_free(&msg);
    fixture_stop(&f, NULL);
}

static void test_destroying_an_open_stream_cancels_it(void) {
    fixture f;
    if (fixture_start(&f, NULL, NULL) != 0) {
        CHECK(0);
        return;
    }
    ts_rpc_stream *s = NULL;
    CHECK_OK(open_count(&f, 1, 1000000, 0, 0, 60000, &s));
    ts_buf msg = {0};
    CHECK_EQ_INT(ts_rpc_stream_recv(s, &msg, 5000), 1);
    ts_rpc_stream_destroy(s); /* unread messages and all */
    echo_stats st;
    CHECK(wait_stats(&f, done_at_least, 1, 5000, &st));
    CHECK_EQ_INT(st.cancelled, 1);
    ts_buf_free(&msg);
    fixture_stop(&f, NULL);
}

static void test_deadline_exceeded_reaches_both_sides(void) {
    fixture f;
    if (fixture_start(&f, NULL, NULL) != 0) {
        CHECK(0);
        return;
    }
    ts_rpc_stream *s = NULL;
    int64_t t0 = ts_now_ns();
    CHECK_OK(open_count(&f, 2, 1000, 10000, 0, 300, &s)); /* 10 s of messages, 300 ms deadline */
    ts_buf msg = {0};
    int n = 0, rc;
    while ((rc = ts_rpc_stream_recv(s, &msg, 5000)) == 1)
        n++;
    double ms = ts_ns_to_ms(ts_now_ns() - t0);
    CHECK_EQ_INT(rc, 0);
    CHECK(n > 3 && n < 100);
    CHECK(ms >= 250 && ms < 2000);
    CHECK_EQ_INT(ts_rpc_stream_finish(s, 5000), TS_E_TIMEOUT);
    CHECK(strstr(ts_error_message(), "DEADLINE_EXCEEDED") != NULL);
    echo_stats st;
    CHECK(wait_stats(&f, done_at_least, 1, 2000, &st));
    CHECK_EQ_INT(st.cancelled, 1);
    ts_rpc_stream_destroy(s);

    /* A unary call with a deadline on a stream-producing method ends at the deadline too. */
    ts_buf req = {0};
    CHECK_OK(echo_request_pack(&req, "", 1000, 10000, 0, 0));
    t0 = ts_now_ns();
    CHECK_EQ_INT(ts_rpc_unary(f.ch, COUNT, req.data, req.len, 200, &msg), TS_E_TIMEOUT);
    CHECK(ts_ns_to_ms(ts_now_ns() - t0) < 2000);
    ts_buf_free(&req);
    ts_buf_free(&msg);
    fixture_stop(&f, NULL);
}

/* ---- back-pressure
 * -------------------------------------------------------------------------------- */

static void test_slow_client_hits_back_pressure_not_unbounded_memory(void) {
    ts_rpc_server_options so;
    ts_rpc_server_options_default(&so);
    so.max_queued_messages = 32;
    so.max_queued_bytes = 256 << 10;
    ts_rpc_channel_options co;
    ts_rpc_channel_options_default(&co);
    co.read_ahead = 4;
    fixture f;
    if (fixture_start(&f, &so, &co) != 0) {
        CHECK(0);
        return;
    }
    /* One million 16 KiB messages (16 GB) that the client does not read. */
    enum { PAYLOAD = 16 << 10 };
    ts_rpc_stream *s = NULL;
    CHECK_OK(open_count(&f, 5, 1000000, 0, PAYLOAD, 60000, &s));
    ts_sleep_ms(1000);
    echo_stats st1, st2;
    echo_service_stats(f.echo, &st1);
    ts_sleep_ms(500);
    echo_service_stats(f.echo, &st2);
    fprintf(stderr, "  not reading: %lld messages accepted (%.1f MiB), queue max %d, %d refusals\n",
            st2.sent, st2.sent * (double)PAYLOAD / (1 << 20), st2.max_queued, st2.exhausted);
    CHECK(st2.exhausted >= 1);
    CHECK(st2.max_queued <= 32);
    CHECK_EQ_INT(st2.sent, st1.sent); /* stalled, not growing */
    /* The bound: the queue plus what HTTP/2 windows and socket buffers hold, far below 16 GB. */
    CHECK(st2.sent * (long long)PAYLOAD < 64LL << 20);

    /* Reading resumes the stream (on_writable). */
    ts_buf msg = {0};
    int seq = -1;
    for (int i = 0; i < 2000; i++) {
        if (ts_rpc_stream_recv(s, &msg, 5000) != 1) {
            CHECK(0);
            break;
        }
        CHECK_OK(echo_reply_parse(&msg, NULL, 0, &seq, NULL, NULL));
        if (seq != i) {
            CHECK_EQ_INT(seq, i);
            break;
        }
    }
    echo_service_stats(f.echo, &st2);
    CHECK(st2.writable >= 1);
    CHECK(st2.sent > st1.sent);
    ts_rpc_stream_cancel(s);
    CHECK(wait_stats(&f, done_at_least, 1, 5000, &st2));
    CHECK_EQ_INT(st2.cancelled, 1);
    ts_rpc_stream_destroy(s);
    ts_buf_free(&msg);
    fixture_stop(&f, NULL);
}

/* ---- message size limits
 * --------------------------------------------------------------------------- */

static void test_oversized_messages_are_resource_exhausted(void) {
    ts_rpc_server_options so;
    ts_rpc_server_options_default(&so);
    so.max_recv_bytes = 4096;
    so.max_send_bytes = 4096;
    fixture f;
    if (fixture_start(&f, &so, NULL) != 0) {
        CHECK(0);
        return;
    }
    static char big[8000];
    memset(big, 'a', sizeof big - 1);
    ts_buf req = {0}, reply = {0};

    /* Request larger than the server accepts. */
    CHECK_OK(echo_request_pack(&req, big, 0, 0, 0, 0));
    CHECK_EQ_INT(ts_rpc_unary(f.ch, ECHO, req.data, req.len, 5000, &reply), TS_E_EXHAUSTED);
    CHECK(strstr(ts_error_message(), "RESOURCE_EXHAUSTED") != NULL);

    /* Response larger than the server may send: the handler's send fails and the client learns
     * why. */
    CHECK_OK(echo_request_pack(&req, "", 0, 0, 8000, 0));
    CHECK_EQ_INT(ts_rpc_unary(f.ch, ECHO, req.data, req.len, 5000, &reply), TS_E_EXHAUSTED);
    CHECK(strstr(ts_error_message(), "exceeds the limit of 4096 bytes") != NULL);

    /* Within the limits all is well. */
    CHECK_OK(echo_request_pack(&req, "", 0, 0, 3000, 0));
    CHECK_OK(ts_rpc_unary(f.ch, ECHO, req.data, req.len, 5000, &reply));

    /* Response larger than the client accepts. */
    ts_rpc_channel_options co;
    ts_rpc_channel_options_default(&co);
    co.max_recv_bytes = 1024;
    co.max_send_bytes = 1024;
    ts_rpc_channel *small = NULL;
    CHECK_OK(ts_rpc_channel_create(f.target, &co, &small));
    CHECK_EQ_INT(ts_rpc_unary(small, ECHO, req.data, req.len, 5000, &reply), TS_E_EXHAUSTED);
    CHECK(strstr(ts_error_message(), "RESOURCE_EXHAUSTED") != NULL);
    /* Request larger than the client may send: refused locally. */
    CHECK_OK(echo_request_pack(&req, big, 0, 0, 0, 0));
    CHECK_EQ_INT(ts_rpc_unary(small, ECHO, req.data, req.len, 5000, &reply), TS_E_INVALID);
    ts_rpc_stream *s = NULL;
    CHECK_OK(ts_rpc_stream_open(small, CHAT, 5000, &s));
    CHECK_EQ_INT(ts_rpc_stream_send(s, big, sizeof big, 0), TS_E_INVALID);
    ts_rpc_stream_destroy(s);
    ts_rpc_channel_destroy(small);

    ts_buf_free(&req);
    ts_buf_free(&reply);
    fixture_stop(&f, NULL);
}

/* ---- call references outlive the server
 * ---------------------------------------------------------- */

static ts_rpc_call *kept_call;
static int kept_done;

static void keep_on_message(ts_rpc_call *call, const uint8_t *data, size_t len, void *arg) {
    ts_rpc_call_ref(call);
    kept_call = call;
    ts_rpc_call_send(call, "x", 1);
}

static void keep_on_done(ts_rpc_call *call, int cancelled, void *arg) {
    kept_done++;
}

static void test_call_reference_outlives_the_server(void) {
    ts_rpc_server_options so;
    ts_rpc_server_options_default(&so);
    so.address = "127.0.0.1:0";
    ts_rpc_server *srv;
    CHECK_OK(ts_rpc_server_create(&so, &srv));
    ts_rpc_method m = {.kind = TS_RPC_SERVER_STREAM,
                       .on_message = keep_on_message,
                       .on_start = NULL,
                       .on_done = keep_on_done};
    CHECK_OK(ts_rpc_server_add_method(srv, "/t.Keep/Keep", &m));
    CHECK_EQ_INT(ts_rpc_server_add_method(srv, "/t.Keep/Keep", &m), TS_E_INVALID);
    CHECK_EQ_INT(ts_rpc_server_add_method(srv, "nopath", &m), TS_E_INVALID);
    CHECK_OK(ts_rpc_server_start(srv));
    CHECK_EQ_INT(ts_rpc_server_add_method(srv, "/t.Keep/Late", &m), TS_E_INVALID);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", ts_rpc_server_port(srv));
    ts_rpc_channel *ch = NULL;
    CHECK_OK(ts_rpc_channel_create(target, NULL, &ch));
    ts_rpc_stream *s = NULL;
    CHECK_OK(ts_rpc_stream_open_request(ch, "/t.Keep/Keep", "", 0, 10000, &s));
    ts_buf msg = {0};
    CHECK_EQ_INT(ts_rpc_stream_recv(s, &msg, 5000), 1);
    if (!kept_call) {
        CHECK(kept_call != NULL);
        return;
    }
    CHECK_EQ_STR(ts_rpc_call_method(kept_call), "/t.Keep/Keep");
    CHECK(strstr(ts_rpc_call_peer(kept_call), "127.0.0.1") != NULL);
    int64_t left_ms = (ts_rpc_call_deadline_ns(kept_call) - ts_now_ns()) / 1000000;
    /* The wire format (grpc-timeout) rounds the timeout up a little. */
    CHECK(left_ms > 5000 && left_ms <= 10500);

    /* The handler never finishes: shutdown's grace ends it with UNAVAILABLE. */
    int64_t t0 = ts_now_ns();
    ts_rpc_server_shutdown(srv, 100);
    CHECK(ts_ns_to_ms(ts_now_ns() - t0) < 3000);
    CHECK_EQ_INT(kept_done, 1);
    CHECK_EQ_INT(ts_rpc_stream_recv(s, &msg, 5000), 0);
    CHECK_EQ_INT(ts_rpc_stream_finish(s, 5000), TS_E_UNAVAILABLE);
    CHECK(strstr(ts_error_message(), "server shutting down") != NULL);
    ts_rpc_server_destroy(srv);

    CHECK(ts_rpc_call_is_done(kept_call));
    CHECK_EQ_INT(ts_rpc_call_send(kept_call, "y", 1), TS_E_CANCELLED);
    CHECK_EQ_INT(ts_rpc_call_finish(kept_call, TS_RPC_OK, NULL), TS_E_CANCELLED);
    ts_rpc_call_abort(kept_call, TS_RPC_INTERNAL, "no-op");
    CHECK_EQ_INT(ts_rpc_call_queued(kept_call), 0);
    ts_rpc_call_unref(kept_call);
    ts_rpc_stream_destroy(s);
    ts_rpc_channel_destroy(ch);
    ts_buf_free(&msg);
}

static void test_bind_failure_is_reported(void) {
    ts_rpc_server_options so;
    ts_rpc_server_options_default(&so);
    so.address = "127.0.0.1:0";
    ts_rpc_server *a, *b;
    CHECK_OK(ts_rpc_server_create(&so, &a));
    CHECK_OK(ts_rpc_server_start(a));
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ts_rpc_server_port(a));
    so.address = addr;
    CHECK_OK(ts_rpc_server_create(&so, &b));
    CHECK_EQ_INT(ts_rpc_server_start(b), TS_E_UNAVAILABLE);
    CHECK(strstr(ts_error_message(), addr) != NULL);
    CHECK_EQ_INT(ts_rpc_server_port(b), 0);
    ts_rpc_server_destroy(b);
    ts_rpc_server_destroy(a);

    so.address = "";
    CHECK_EQ_INT(ts_rpc_server_create(&so, &b), TS_E_INVALID);
    ts_rpc_channel *ch = NULL;
    CHECK_EQ_INT(ts_rpc_channel_create("", NULL, &ch), TS_E_INVALID);
}

static void test_unreachable_server_is_unavailable(void) {
    /* Bind a port, then free it: nothing listens there. */
    ts_rpc_server_options so;
    ts_rpc_server_options_default(&so);
    so.address = "127.0.0.1:0";
    ts_rpc_server *srv;
    CHECK_OK(ts_rpc_server_create(&so, &srv));
    CHECK_OK(ts_rpc_server_start(srv));
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", ts_rpc_server_port(srv));
    ts_rpc_server_destroy(srv);

    ts_rpc_channel *ch = NULL;
    CHECK_OK(ts_rpc_channel_create(target, NULL, &ch));
    ts_buf reply = {0};
    int64_t t0 = ts_now_ns();
    CHECK_EQ_INT(ts_rpc_unary(ch, ECHO, "", 0, 5000, &reply), TS_E_UNAVAILABLE);
    CHECK(ts_ns_to_ms(ts_now_ns() - t0) < 3000);
    ts_rpc_channel_destroy(ch);
    ts_buf_free(&reply);
}

int main(void) {
    ts_log_set_level(TS_LOG_WARN);
    RUN(test_unary_echo_and_error_status);
    RUN(test_unknown_method_is_unimplemented);
    RUN(test_256_streams_each_get_their_own_messages_in_order);
    RUN(test_bidi_send_and_receive_from_two_threads);
    RUN(test_client_cancel_reaches_the_server_once);
    RUN(test_destroying_an_open_stream_cancels_it);
    RUN(test_deadline_exceeded_reaches_both_sides);
    RUN(test_slow_client_hits_back_pressure_not_unbounded_memory);
    RUN(test_oversized_messages_are_resource_exhausted);
    RUN(test_call_reference_outlives_the_server);
    RUN(test_bind_failure_is_reported);
    RUN(test_unreachable_server_is_unavailable);
    return test_summary();
}
