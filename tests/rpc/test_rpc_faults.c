/*
 * test_rpc_faults.c — rpc/ under faults: server shutdown with active streams (clean statuses,
 * no hang, no leak), a client that stops reading during shutdown, garbage bytes on the port,
 * dead peers found by keepalive in both directions (a SIGSTOPped server process, a SIGSTOPped
 * client process), and keepalive not killing healthy connections (idle for many periods, or
 * saturated with data).
 *
 * The peer processes are forked at the start of main, before this process initialises gRPC:
 * a process that has run grpc_init must not fork a child that uses gRPC (NOTES.md).
 */
#include "common/clock.h"
#include "common/error.h"
#include "common/log.h"
#include "rpc/rpc_client.h"
#include "rpc/rpc_server.h"
#include "tests/rpc/echo_service.h"
#include "tests/unit/test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define ECHO "/tessera.test.Echo/Echo"
#define COUNT "/tessera.test.Echo/Count"
#define CHAT "/tessera.test.Echo/Chat"

enum { KEEPALIVE_MS = 1000 };

static int open_count(ts_rpc_channel *ch, int id, int count, int interval_us, int payload,
                      ts_rpc_stream **s) {
    ts_buf req = {0};
    int rc = echo_request_pack(&req, "", count, interval_us, payload, id);
    if (rc == 0) rc = ts_rpc_stream_open_request(ch, COUNT, req.data, req.len, 60000, s);
    ts_buf_free(&req);
    return rc;
}

/* A server with the echo service on 127.0.0.1:0 and a channel to it. */
typedef struct fixture {
    ts_rpc_server *srv;
    echo_service *echo;
    ts_rpc_channel *ch;
    int port;
} fixture;

static int fixture_start(fixture *f, int keepalive_ms) {
    memset(f, 0, sizeof *f);
    ts_rpc_server_options o;
    ts_rpc_server_options_default(&o);
    o.address = "127.0.0.1:0";
    if (keepalive_ms) {
        o.keepalive_time_ms = keepalive_ms;
        o.keepalive_timeout_ms = keepalive_ms;
    }
    int rc = ts_rpc_server_create(&o, &f->srv);
    if (rc == 0) rc = echo_service_create(f->srv, &f->echo);
    if (rc == 0) rc = ts_rpc_server_start(f->srv);
    if (rc == 0) {
        f->port = ts_rpc_server_port(f->srv);
        char target[64];
        snprintf(target, sizeof target, "127.0.0.1:%d", f->port);
        rc = ts_rpc_channel_create(target, NULL, &f->ch);
    }
    if (rc != 0) fprintf(stderr, "  fixture: %s\n", ts_error_message());
    return rc;
}

static void fixture_stop(fixture *f) {
    if (f->srv) ts_rpc_server_shutdown(f->srv, 2000);
    if (f->echo) {
        echo_stats st;
        echo_service_stats(f->echo, &st);
        CHECK_EQ_INT(st.double_done, 0);
        CHECK_EQ_INT(st.late_send_other, 0);
        CHECK_EQ_INT(st.started, st.done);
        CHECK_EQ_INT(ts_rpc_server_active_calls(f->srv), 0);
    }
    echo_service_destroy(f->echo);
    ts_rpc_server_destroy(f->srv);
    ts_rpc_channel_destroy(f->ch);
}

/* Reads a stream to its end in a thread; records how it ended. */
typedef struct drain_arg {
    ts_rpc_stream *s;
    pthread_t thread;
    int messages, finish_rc;
    char message[256];
} drain_arg;

static void *drain_main(void *p) {
    drain_arg *a = p;
    ts_buf msg = {0};
    while (ts_rpc_stream_recv(a->s, &msg, 30000) == 1)
        a->messages++;
    a->finish_rc = ts_rpc_stream_finish(a->s, 10000);
    snprintf(a->message, sizeof a->message, "%s", a->finish_rc ? ts_error_message() : "");
    ts_buf_free(&msg);
    return NULL;
}

/* ---- shutdown
 * ------------------------------------------------------------------------------------ */

static void *shutdown_main(void *p) {
    ts_rpc_server_shutdown(p, 500);
    return NULL;
}

static void test_shutdown_with_active_streams_gives_clean_statuses(void) {
    fixture f;
    if (fixture_start(&f, 0) != 0) {
        CHECK(0);
        return;
    }
    enum { N = 8 };
    drain_arg endless[N], finite = {0}, chat = {0};
    for (int i = 0; i < N; i++) {
        memset(&endless[i], 0, sizeof endless[i]);
        CHECK_OK(open_count(f.ch, i, 1000000, 2000, 0, &endless[i].s));
        pthread_create(&endless[i].thread, NULL, drain_main, &endless[i]);
    }
    CHECK_OK(open_count(f.ch, 100, 20, 10000, 0, &finite.s)); /* done in 200 ms: within grace */
    pthread_create(&finite.thread, NULL, drain_main, &finite);
    CHECK_OK(ts_rpc_stream_open(f.ch, CHAT, 60000, &chat.s)); /* idle bidi stream */
    pthread_create(&chat.thread, NULL, drain_main, &chat);
    ts_sleep_ms(100);

    int64_t t0 = ts_now_ns();
    pthread_t stopper;
    pthread_create(&stopper, NULL, shutdown_main, f.srv);
    ts_sleep_ms(100);
    /* During the grace period no new call is accepted. */
    ts_buf reply = {0};
    int rc = ts_rpc_unary(f.ch, "/tessera.test.Echo/Echo", "", 0, 2000, &reply);
    CHECK(rc == TS_E_UNAVAILABLE || rc == TS_E_CANCELLED);
    pthread_join(stopper, NULL);
    double ms = ts_ns_to_ms(ts_now_ns() - t0);
    fprintf(stderr, "  shutdown with %d open streams took %.0f ms (grace 500 ms)\n", N + 2, ms);
    CHECK(ms >= 450 && ms < 2500);

    for (int i = 0; i < N; i++) {
        pthread_join(endless[i].thread, NULL);
        CHECK(endless[i].messages > 10);
        CHECK_EQ_INT(endless[i].finish_rc, TS_E_UNAVAILABLE);
        CHECK(strstr(endless[i].message, "server shutting down") != NULL);
        ts_rpc_stream_destroy(endless[i].s);
    }
    pthread_join(finite.thread, NULL);
    CHECK_EQ_INT(finite.messages, 20);
    CHECK_EQ_INT(finite.finish_rc, 0);
    ts_rpc_stream_destroy(finite.s);
    pthread_join(chat.thread, NULL);
    CHECK_EQ_INT(chat.finish_rc, TS_E_UNAVAILABLE);
    ts_rpc_stream_destroy(chat.s);

    echo_stats st;
    echo_service_stats(f.echo, &st);
    CHECK_EQ_INT(st.started, N + 2);
    CHECK_EQ_INT(st.done, N + 2);
    ts_buf_free(&reply);
    fixture_stop(&f);
}

static void test_shutdown_does_not_hang_on_a_client_that_stopped_reading(void) {
    fixture f;
    if (fixture_start(&f, 0) != 0) {
        CHECK(0);
        return;
    }
    ts_rpc_stream *s = NULL;
    CHECK_OK(open_count(f.ch, 1, 1000000, 0, 16 << 10, &s)); /* flow control blocks it soon */
    ts_sleep_ms(300);
    int64_t t0 = ts_now_ns();
    ts_rpc_server_shutdown(f.srv, 200);
    double ms = ts_ns_to_ms(ts_now_ns() - t0);
    fprintf(stderr, "  shutdown past a stuck client took %.0f ms\n", ms);
    CHECK(ms < 3000);
    echo_stats st;
    echo_service_stats(f.echo, &st);
    CHECK_EQ_INT(st.done, 1);
    /* The client ends too, with an error status, without hanging. */
    ts_buf msg = {0};
    int rc;
    while ((rc = ts_rpc_stream_recv(s, &msg, 10000)) == 1) {
    }
    CHECK_EQ_INT(rc, 0);
    rc = ts_rpc_stream_finish(s, 10000);
    CHECK(rc == TS_E_UNAVAILABLE || rc == TS_E_CANCELLED || rc == TS_E_INTERNAL);
    ts_rpc_stream_destroy(s);
    ts_buf_free(&msg);
    fixture_stop(&f);
}

/* ---- garbage on the port
 * ------------------------------------------------------------------------- */

static int raw_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        if (fd >= 0) close(fd);
        return -1;
    }
    return fd;
}

static void raw_send(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n <= 0) return; /* the server closed the connection: fine */
        p += n;
        len -= (size_t)n;
    }
}

static void test_garbage_bytes_do_not_disturb_other_clients(void) {
    fixture f;
    if (fixture_start(&f, 0) != 0) {
        CHECK(0);
        return;
    }
    drain_arg busy = {0};
    CHECK_OK(open_count(f.ch, 7, 300, 2000, 0, &busy.s)); /* 600 ms of messages meanwhile */
    pthread_create(&busy.thread, NULL, drain_main, &busy);

    static unsigned char junk[64 << 10];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof junk; i++) {
        x = x * 1103515245u + 12345u;
        junk[i] = (unsigned char)(x >> 16);
    }
    static const char http1[] = "GET / HTTP/1.1\r\nHost: tessera\r\n\r\n";
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    int idle[3];
    for (int round = 0; round < 3; round++) {
        int fd = raw_connect(f.port);
        CHECK(fd >= 0);
        raw_send(fd, junk, sizeof junk); /* random bytes */
        close(fd);
        fd = raw_connect(f.port);
        raw_send(fd, http1, sizeof http1 - 1); /* HTTP/1.1 */
        close(fd);
        fd = raw_connect(f.port);
        raw_send(fd, preface, sizeof preface - 1); /* a valid preface, then garbage frames */
        raw_send(fd, junk, 4096);
        close(fd);
        idle[round] = raw_connect(f.port); /* half a preface, then silence, kept open */
        raw_send(idle[round], preface, 10);
    }

    ts_buf req = {0}, reply = {0};
    CHECK_OK(echo_request_pack(&req, "still here", 0, 0, 0, 1));
    for (int i = 0; i < 20; i++)
        CHECK_OK(ts_rpc_unary(f.ch, ECHO, req.data, req.len, 5000, &reply));
    char text[32];
    CHECK_OK(echo_reply_parse(&reply, text, sizeof text, NULL, NULL, NULL));
    CHECK_EQ_STR(text, "still here");
    /* A fresh channel (new connection) is served too. */
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", f.port);
    ts_rpc_channel *other = NULL;
    CHECK_OK(ts_rpc_channel_create(target, NULL, &other));
    CHECK_OK(ts_rpc_unary(other, ECHO, req.data, req.len, 5000, &reply));
    ts_rpc_channel_destroy(other);

    pthread_join(busy.thread, NULL);
    CHECK_EQ_INT(busy.messages, 300);
    CHECK_EQ_INT(busy.finish_rc, 0);
    ts_rpc_stream_destroy(busy.s);
    for (int i = 0; i < 3; i++)
        close(idle[i]);
    ts_buf_free(&req);
    ts_buf_free(&reply);
    fixture_stop(&f);
}

/* A channel to 127.0.0.1:port with the tests' short keepalive. */
static int keepalive_channel(int port, int own_connection, ts_rpc_channel **out) {
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    ts_rpc_channel_options co;
    ts_rpc_channel_options_default(&co);
    co.keepalive_time_ms = KEEPALIVE_MS;
    co.keepalive_timeout_ms = KEEPALIVE_MS;
    co.own_connection = own_connection;
    return ts_rpc_channel_create(target, &co, out);
}

/* ---- an idle stream survives keepalive ---------------------------------------------------------
 */

/* Like a node leader's Attach stream between steps: nothing flows for many keepalive periods;
 * the pings must keep the connection, not get it closed as ping abuse. */
static void test_idle_stream_survives_many_keepalive_periods(void) {
    fixture f;
    if (fixture_start(&f, KEEPALIVE_MS) != 0) {
        CHECK(0);
        return;
    }
    ts_rpc_channel *ch = NULL;
    CHECK_OK(keepalive_channel(f.port, 0, &ch));
    ts_rpc_stream *s = NULL;
    CHECK_OK(ts_rpc_stream_open(ch, CHAT, 0, &s));
    ts_buf req = {0}, msg = {0};
    CHECK_OK(echo_request_pack(&req, "before", 0, 0, 0, 1));
    CHECK_OK(ts_rpc_stream_send(s, req.data, req.len, 1000));
    CHECK_EQ_INT(ts_rpc_stream_recv(s, &msg, 5000), 1);
    ts_sleep_ms(6 * KEEPALIVE_MS);
    CHECK_OK(echo_request_pack(&req, "after", 0, 0, 0, 2));
    CHECK_OK(ts_rpc_stream_send(s, req.data, req.len, 1000));
    CHECK_EQ_INT(ts_rpc_stream_recv(s, &msg, 5000), 1);
    char text[32];
    CHECK_OK(echo_reply_parse(&msg, text, sizeof text, NULL, NULL, NULL));
    CHECK_EQ_STR(text, "after");
    CHECK_OK(ts_rpc_stream_close_send(s));
    CHECK_EQ_INT(ts_rpc_stream_recv(s, &msg, 5000), 0);
    CHECK_OK(ts_rpc_stream_finish(s, 5000));
    ts_rpc_stream_destroy(s);
    ts_rpc_channel_destroy(ch);
    ts_buf_free(&req);
    ts_buf_free(&msg);
    fixture_stop(&f);
}

/* ---- saturated connections keep their keepalive -------------------------------------------------
 */

enum { SAT_STREAMS = 32, SAT_CHANNELS = 4, SAT_READERS = 8, SAT_MESSAGES = 10000 };

typedef struct sat_reader {
    ts_rpc_stream **streams;
    pthread_t thread;
    long long received;
    int first;
    int failed;
} sat_reader;

static void *sat_reader_main(void *p) {
    sat_reader *r = p;
    ts_buf msg = {0};
    for (int i = r->first; i < SAT_STREAMS; i += SAT_READERS) {
        int rc;
        while ((rc = ts_rpc_stream_recv(r->streams[i], &msg, 30000)) == 1)
            r->received++;
        if (rc != 0 || ts_rpc_stream_finish(r->streams[i], 10000) != 0) {
            if (r->failed++ == 0) fprintf(stderr, "  stream %d: %s\n", i, ts_error_message());
        }
    }
    ts_buf_free(&msg);
    return NULL;
}

/* Consumers slower than the producer keep every connection's buffers full for seconds. Ping
 * acks queue behind that data, so this is where over-grown flow-control windows make keepalive
 * kill healthy connections; with 1 s keepalive it must not happen. */
static void test_saturated_connections_survive_keepalive(void) {
    fixture f;
    if (fixture_start(&f, KEEPALIVE_MS) != 0) {
        CHECK(0);
        return;
    }
    ts_rpc_channel *ch[SAT_CHANNELS];
    static ts_rpc_stream *streams[SAT_STREAMS];
    for (int c = 0; c < SAT_CHANNELS; c++)
        CHECK_OK(keepalive_channel(f.port, 1, &ch[c]));
    int64_t t0 = ts_now_ns();
    for (int i = 0; i < SAT_STREAMS; i++)
        CHECK_OK(open_count(ch[i % SAT_CHANNELS], i, SAT_MESSAGES, 0, 0, &streams[i]));
    sat_reader readers[SAT_READERS];
    for (int t = 0; t < SAT_READERS; t++) {
        readers[t] = (sat_reader){.streams = streams, .first = t};
        pthread_create(&readers[t].thread, NULL, sat_reader_main, &readers[t]);
    }
    long long received = 0;
    int failed = 0;
    for (int t = 0; t < SAT_READERS; t++) {
        pthread_join(readers[t].thread, NULL);
        received += readers[t].received;
        failed += readers[t].failed;
    }
    double secs = ts_ns_to_s(ts_now_ns() - t0);
    fprintf(stderr, "  %d saturated streams over %d connections: %.1f s, %d failed\n", SAT_STREAMS,
            SAT_CHANNELS, secs, failed);
    CHECK_EQ_INT(failed, 0);
    CHECK_EQ_INT(received, (long long)SAT_STREAMS * SAT_MESSAGES);
    for (int i = 0; i < SAT_STREAMS; i++)
        ts_rpc_stream_destroy(streams[i]);
    for (int c = 0; c < SAT_CHANNELS; c++)
        ts_rpc_channel_destroy(ch[c]);
    fixture_stop(&f);
}

/* ---- dead peers (forked processes)
 * ---------------------------------------------------------------- */

/* Child: a server with keepalive, port written to `port_fd`; serves until killed. */
static void child_server(int port_fd) {
    fixture f;
    if (fixture_start(&f, KEEPALIVE_MS) != 0) _exit(1);
    if (write(port_fd, &f.port, sizeof f.port) != (ssize_t)sizeof f.port) _exit(1);
    for (;;)
        pause();
}

/* Child: reads a port from `in_fd`, opens an endless stream there, writes one byte to `out_fd`
 * once messages flow, then keeps reading until stopped or killed. */
static void child_client(int in_fd, int out_fd) {
    int port;
    if (read(in_fd, &port, sizeof port) != (ssize_t)sizeof port) _exit(0); /* test skipped */
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    ts_rpc_channel *ch = NULL;
    ts_rpc_stream *s = NULL;
    if (ts_rpc_channel_create(target, NULL, &ch) != 0 || open_count(ch, 9, 1000000, 1000, 0, &s))
        _exit(1);
    ts_buf msg = {0};
    for (int i = 0; i < 3; i++)
        if (ts_rpc_stream_recv(s, &msg, 10000) != 1) _exit(1);
    if (write(out_fd, "x", 1) != 1) _exit(1);
    while (ts_rpc_stream_recv(s, &msg, 10000) >= 0) {
    }
    _exit(0);
}

typedef struct peers {
    pid_t server_pid, client_pid;
    int server_port_fd;  /* the child server's port arrives here */
    int client_port_fd;  /* we send our server's port to the child client here */
    int client_ready_fd; /* the child client says "streaming" here */
} peers;

static int fork_peers(peers *p) {
    int a[2], b[2], c[2];
    if (pipe(a) || pipe(b) || pipe(c)) return -1;
    fflush(NULL);
    p->server_pid = fork();
    if (p->server_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
        close(a[0]);
        child_server(a[1]);
    }
    close(a[1]);
    p->server_port_fd = a[0];
    p->client_pid = fork();
    if (p->client_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(a[0]);
        close(b[1]);
        close(c[0]);
        child_client(b[0], c[1]);
    }
    close(b[0]);
    close(c[1]);
    p->client_port_fd = b[1];
    p->client_ready_fd = c[0];
    return p->server_pid > 0 && p->client_pid > 0 ? 0 : -1;
}

static void reap(pid_t pid) {
    if (pid <= 0) return;
    kill(pid, SIGCONT);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static peers the_peers;

static void test_client_detects_a_dead_server_by_keepalive(void) {
    int port = 0;
    struct pollfd pfd = {.fd = the_peers.server_port_fd, .events = POLLIN};
    if (poll(&pfd, 1, 10000) != 1 ||
        read(the_peers.server_port_fd, &port, sizeof port) != (ssize_t)sizeof port) {
        CHECK(0);
        return;
    }
    ts_rpc_channel *ch = NULL;
    CHECK_OK(keepalive_channel(port, 0, &ch));
    ts_rpc_stream *s = NULL;
    CHECK_OK(open_count(ch, 1, 1000000, 1000, 0, &s)); /* no deadline */
    ts_buf msg = {0};
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(ts_rpc_stream_recv(s, &msg, 10000), 1);
    int64_t tq = ts_now_ns() + 2500000000LL; /* the peer dies after a few keepalive periods */
    while (ts_now_ns() < tq)
        ts_rpc_stream_recv(s, &msg, 1000);

    kill(the_peers.server_pid, SIGSTOP); /* alive to TCP, dead to HTTP/2 */
    int64_t t0 = ts_now_ns();
    int rc;
    while ((rc = ts_rpc_stream_recv(s, &msg, 20000)) == 1) {
    }
    double s_elapsed = ts_ns_to_s(ts_now_ns() - t0);
    fprintf(stderr, "  stopped server detected after %.1f s (keepalive %d ms + %d ms)\n", s_elapsed,
            KEEPALIVE_MS, KEEPALIVE_MS);
    CHECK_EQ_INT(rc, 0);
    CHECK(s_elapsed < 8);
    CHECK_EQ_INT(ts_rpc_stream_finish(s, 5000), TS_E_UNAVAILABLE);
    ts_rpc_stream_destroy(s);
    ts_rpc_channel_destroy(ch);
    ts_buf_free(&msg);
    reap(the_peers.server_pid);
    the_peers.server_pid = 0;
}

static void test_server_detects_a_dead_client_by_keepalive(void) {
    fixture f;
    if (fixture_start(&f, KEEPALIVE_MS) != 0) {
        CHECK(0);
        return;
    }
    CHECK_EQ_INT(write(the_peers.client_port_fd, &f.port, sizeof f.port), sizeof f.port);
    char ready;
    struct pollfd pfd = {.fd = the_peers.client_ready_fd, .events = POLLIN};
    if (poll(&pfd, 1, 10000) != 1 || read(the_peers.client_ready_fd, &ready, 1) != 1) {
        CHECK(0);
        fixture_stop(&f);
        return;
    }
    ts_sleep_ms(2500); /* the peer dies after a few keepalive periods */
    kill(the_peers.client_pid, SIGSTOP);
    int64_t t0 = ts_now_ns();
    echo_stats st;
    do {
        ts_sleep_ms(10);
        echo_service_stats(f.echo, &st);
    } while (st.done == 0 && ts_now_ns() - t0 < 20000000000LL);
    double s_elapsed = ts_ns_to_s(ts_now_ns() - t0);
    fprintf(stderr, "  stopped client detected after %.1f s\n", s_elapsed);
    CHECK_EQ_INT(st.done, 1);
    CHECK_EQ_INT(st.cancelled, 1);
    CHECK(s_elapsed < 8);
    reap(the_peers.client_pid);
    the_peers.client_pid = 0;
    fixture_stop(&f);
}

int main(void) {
    /* Before anything initialises gRPC in this process. */
    if (fork_peers(&the_peers) != 0) {
        reap(the_peers.server_pid);
        reap(the_peers.client_pid);
        test_skip("cannot fork the peer processes");
    }
    ts_log_set_level(TS_LOG_WARN);
    RUN(test_shutdown_with_active_streams_gives_clean_statuses);
    RUN(test_shutdown_does_not_hang_on_a_client_that_stopped_reading);
    RUN(test_garbage_bytes_do_not_disturb_other_clients);
    RUN(test_idle_stream_survives_many_keepalive_periods);
    RUN(test_saturated_connections_survive_keepalive);
    RUN(test_client_detects_a_dead_server_by_keepalive);
    RUN(test_server_detects_a_dead_client_by_keepalive);
    close(the_peers.client_port_fd);
    reap(the_peers.server_pid);
    reap(the_peers.client_pid);
    return test_summary();
}
