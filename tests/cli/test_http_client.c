/*
 * test_http_client.c — cli/http_client against a scripted server on loopback: whole answers
 * (Content-Length, chunked, until close), server-sent events cut at every awkward place and
 * delivered in the order and groups they arrived, keep-alive reuse and the one reopen of a kept
 * connection the server closed, deadlines, cut-off answers, and the error-code mapping.
 *
 * The server thread accepts connections one after another; for each request it reads the head
 * and body, then writes the current script's pieces with a pause between them (so the client
 * sees separate reads), and closes the connection when the script says so.
 */
#include "cli/http_client.h"
#include "common/clock.h"
#include "common/error.h"
#include "tests/unit/test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct script {
    const char *pieces[8]; /* written one after another, PAUSE_MS apart */
    bool close_after;      /* close the connection after the answer */
    bool silent;           /* read the request, answer nothing until the client leaves */
} script;

enum { PAUSE_MS = 30, MAX_SCRIPTS = 8 };

static struct {
    int listen_fd, port;
    script scripts[MAX_SCRIPTS]; /* one per request, in order */
    int n_scripts;
    atomic_int requests, connections;
    char last_request[4096];
} srv;

/* Reads one request (head and Content-Length body); false when the client closed. */
static bool read_request(int fd) {
    char buf[4096];
    size_t n = 0;
    for (;;) {
        ssize_t r = recv(fd, buf + n, sizeof buf - 1 - n, 0);
        if (r <= 0) return false;
        n += (size_t)r;
        buf[n] = 0;
        char *end = strstr(buf, "\r\n\r\n");
        if (!end) continue;
        const char *cl = strstr(buf, "Content-Length: ");
        size_t body = cl ? strtoul(cl + 16, NULL, 10) : 0;
        if (n >= (size_t)(end + 4 - buf) + body) break;
    }
    snprintf(srv.last_request, sizeof srv.last_request, "%s", buf);
    return true;
}

static void *server(void *arg) {
    (void)arg;
    for (;;) {
        int fd = accept(srv.listen_fd, NULL, NULL);
        if (fd < 0) return NULL;
        atomic_fetch_add(&srv.connections, 1);
        for (;;) {
            if (!read_request(fd)) break;
            int i = atomic_fetch_add(&srv.requests, 1);
            const script *s = &srv.scripts[i < srv.n_scripts ? i : srv.n_scripts - 1];
            if (s->silent) {
                char c;
                while (recv(fd, &c, 1, 0) > 0) {
                }
                break;
            }
            for (int k = 0; k < 8 && s->pieces[k]; k++) {
                if (k) ts_sleep_ms(PAUSE_MS);
                send(fd, s->pieces[k], strlen(s->pieces[k]), MSG_NOSIGNAL);
            }
            if (s->close_after) break;
        }
        close(fd);
    }
}

static void start_server(void) {
    srv.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (bind(srv.listen_fd, (struct sockaddr *)&a, sizeof a) || listen(srv.listen_fd, 8) ||
        getsockname(srv.listen_fd, (struct sockaddr *)&a, &len))
        test_skip("cannot listen on loopback");
    srv.port = ntohs(a.sin_port);
    pthread_t t;
    pthread_create(&t, NULL, server, NULL);
    pthread_detach(t);
}

static void set_scripts(const script *s, int n) {
    memcpy(srv.scripts, s, (size_t)n * sizeof *s);
    srv.n_scripts = n;
    atomic_store(&srv.requests, 0);
    atomic_store(&srv.connections, 0);
}

static ts_http_conn *conn(int timeout_s) {
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d/v1/", srv.port);
    ts_http_conn *c = NULL;
    CHECK_EQ_INT(ts_http_conn_new(base, timeout_s, &c), TS_OK);
    return c;
}

/* Records events as "data|" and each pause as "#". */
typedef struct events {
    ts_buf log;
    int stop_after; /* >0: return TS_E_CANCELLED at that event */
    int n;
} events;

static int on_event(void *arg, const char *data, size_t n) {
    events *e = arg;
    if (!data) return ts_buf_append_char(&e->log, '#');
    CHECK_EQ_INT(strlen(data), n); /* NUL-terminated */
    ts_buf_append(&e->log, data, n);
    ts_buf_append_char(&e->log, '|');
    if (e->stop_after && ++e->n == e->stop_after) return TS_E_CANCELLED;
    return 0;
}

/* POST /v1/completions {} on c, events to e (NULL: the answer whole to out). */
static int post(ts_http_conn *c, events *e, int *status, ts_buf *out) {
    return ts_http_request(c, "POST", "/v1/completions", "application/json", "{}", 2, 0,
                           e ? on_event : NULL, e, status, out);
}

static const char JSON_OK[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                              "Content-Length: 11\r\n\r\n{\"ok\":true}";

static void test_keep_alive_reuses_one_connection(void) {
    script s[] = {{.pieces = {JSON_OK}}};
    set_scripts(s, 1);
    ts_http_conn *c = conn(5);
    for (int i = 0; i < 3; i++) {
        ts_buf out = {0};
        int status = 0;
        CHECK_EQ_INT(post(c, NULL, &status, &out), TS_OK);
        CHECK_EQ_INT(status, 200);
        CHECK_EQ_STR(out.data, "{\"ok\":true}");
        ts_buf_free(&out);
    }
    CHECK_EQ_INT(atomic_load(&srv.connections), 1);
    CHECK(strstr(srv.last_request, "POST /v1/completions HTTP/1.1\r\n") != NULL);
    CHECK(strstr(srv.last_request, "Connection: close") == NULL);
    ts_http_conn_free(c);
}

static void test_events_cut_anywhere_arrive_in_groups(void) {
    /* Chunk boundaries inside "data:", inside a chunk-size line and inside the \r\n after a
     * chunk; an event ending in \r\n\r\n; a comment; a two-line event; the final chunk apart. */
    script s[] = {{.pieces = {"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n"
                              "d\r\ndata: {\"a\":1}\r\n",
                              "4\r\n\n\nda\r\n1", "4\r\nta: two\n\n: comment\n\n\r",
                              "\n11\r\ndata: x\ndata: y\n\n\r\n", "10\r\ndata: [DONE]\r\n\r\n\r\n",
                              "0\r\n\r\n"}}};
    set_scripts(s, 1);
    ts_http_conn *c = conn(5);
    events e = {0};
    ts_buf out = {0};
    int status = 0;
    CHECK_EQ_INT(post(c, &e, &status, &out), TS_OK);
    CHECK_EQ_INT(status, 200);
    CHECK_EQ_INT(out.len, 0);
    /* Events arrive with the read that completes them; a pause (#) follows the events of
     * each read (a read that completes none has none). */
    CHECK_EQ_STR(e.log.data, "{\"a\":1}|#two|#x\ny|#[DONE]|#");
    ts_buf_free(&e.log);
    ts_buf_free(&out);
    /* The connection is still good after a chunked stream. */
    script s2[] = {{.pieces = {JSON_OK}}};
    memcpy(&srv.scripts[1], s2, sizeof s2);
    srv.n_scripts = 2;
    CHECK_EQ_INT(
        ts_http_request(c, "GET", "/v1/models", NULL, NULL, 0, 0, NULL, NULL, &status, &out),
        TS_OK);
    CHECK_EQ_STR(out.data, "{\"ok\":true}");
    CHECK_EQ_INT(atomic_load(&srv.connections), 1);
    ts_buf_free(&out);
    ts_http_conn_free(c);
}

static void test_an_error_answer_is_read_whole(void) {
    script s[] = {{.pieces = {"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
                              "Retry-After: 1\r\nContent-Length: 53\r\n\r\n",
                              "{\"error\":{\"message\":\"full\",\"type\":\"rate_limit_error\"}}"}}};
    set_scripts(s, 1);
    ts_http_conn *c = conn(5);
    events e = {0};
    ts_buf out = {0};
    int status = 0;
    CHECK_EQ_INT(post(c, &e, &status, &out), TS_OK);
    CHECK_EQ_INT(status, 429);
    CHECK(out.data && strstr(out.data, "rate_limit_error"));
    CHECK_EQ_INT(e.log.len, 0); /* not an event stream: no events, no pauses */
    ts_buf_free(&out);
    ts_http_conn_free(c);
}

static void test_a_kept_connection_closed_by_the_server_is_reopened_once(void) {
    script s[] = {{.pieces = {JSON_OK}, .close_after = true}};
    set_scripts(s, 1);
    ts_http_conn *c = conn(5);
    for (int i = 0; i < 2; i++) {
        ts_buf out = {0};
        int status = 0;
        CHECK_EQ_INT(
            ts_http_request(c, "GET", "/health", NULL, NULL, 0, 0, NULL, NULL, &status, &out),
            TS_OK);
        CHECK_EQ_STR(out.data, "{\"ok\":true}");
        ts_buf_free(&out);
        ts_sleep_ms(20); /* the server's close has arrived before the next call */
    }
    CHECK_EQ_INT(atomic_load(&srv.requests), 2);
    CHECK_EQ_INT(atomic_load(&srv.connections), 2);
    ts_http_conn_free(c);
}

static void test_close_delimited_and_http10_bodies(void) {
    script s[] = {{.pieces = {"HTTP/1.0 200 OK\r\n\r\nhello ", "world"}, .close_after = true}};
    set_scripts(s, 1);
    ts_buf out = {0};
    int status = 0;
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d", srv.port);
    CHECK_EQ_INT(ts_http_call(base, "GET", "/x", NULL, NULL, 0, 5, &status, &out), TS_OK);
    CHECK_EQ_INT(status, 200);
    CHECK_EQ_STR(out.data, "hello world");
    CHECK(strstr(srv.last_request, "Connection: close\r\n") != NULL); /* ts_http_call's own */
    ts_buf_free(&out);
}

static void test_a_cut_off_answer_is_an_error(void) {
    script s[] = {{.pieces = {"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n",
                              "8\r\ndata:"},
                   .close_after = true}};
    set_scripts(s, 1);
    ts_http_conn *c = conn(5);
    events e = {0};
    ts_buf out = {0};
    int status = 0;
    CHECK_EQ_INT(post(c, &e, &status, &out), TS_E_IO);
    CHECK(strstr(ts_error_message(), "cut off") != NULL);
    CHECK_EQ_STR(e.log.data, "1|#"); /* what came before the cut was delivered */
    ts_buf_free(&e.log);
    ts_buf_free(&out);
    ts_http_conn_free(c);
}

static void test_the_event_callback_can_stop_a_stream(void) {
    script s[] = {{.pieces = {"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                              "Content-Length: 27\r\n\r\ndata: 1\n\ndata: 2\n\ndata: 3\n\n"}}};
    set_scripts(s, 1);
    ts_http_conn *c = conn(5);
    events e = {.stop_after = 2};
    ts_buf out = {0};
    int status = 0;
    CHECK_EQ_INT(post(c, &e, &status, &out), TS_E_CANCELLED);
    CHECK_EQ_STR(e.log.data, "1|2|");
    ts_buf_free(&e.log);
    ts_http_conn_free(c);
}

static void test_a_deadline_ends_a_silent_call(void) {
    script s[] = {{.silent = true}};
    set_scripts(s, 1);
    ts_http_conn *c = conn(30);
    ts_buf out = {0};
    int status = 0;
    int64_t t0 = ts_now_ns();
    CHECK_EQ_INT(ts_http_request(c, "POST", "/v1/completions", "application/json", "{}", 2,
                                 t0 + 200 * 1000000LL, NULL, NULL, &status, &out),
                 TS_E_TIMEOUT);
    double waited_ms = (double)(ts_now_ns() - t0) / 1e6;
    CHECK(waited_ms >= 150 && waited_ms < 5000);
    CHECK(strstr(ts_error_message(), "deadline") != NULL);
    ts_http_conn_free(c); /* closes: the server's reader ends */
}

static void test_bad_urls_and_refused_connections(void) {
    ts_http_conn *c = NULL;
    CHECK_EQ_INT(ts_http_conn_new("127.0.0.1:8000", 5, &c), TS_E_INVALID);
    CHECK_EQ_INT(ts_http_conn_new("http://127.0.0.1", 5, &c), TS_E_INVALID);
    CHECK_EQ_INT(ts_http_conn_new("http://127.0.0.1:", 5, &c), TS_E_INVALID);
    /* A port nothing listens on: bind one, close it, connect to it. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    bind(fd, (struct sockaddr *)&a, sizeof a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d", ntohs(a.sin_port));
    ts_buf out = {0};
    int status = 0;
    CHECK_EQ_INT(ts_http_call(base, "GET", "/health", NULL, NULL, 0, 5, &status, &out),
                 TS_E_UNAVAILABLE);
    CHECK(strstr(ts_error_message(), base) != NULL);
}

static void test_error_codes_invert_the_servers_mapping(void) {
    CHECK_EQ_INT(ts_http_error_code(200, NULL, NULL), TS_OK);
    CHECK_EQ_INT(ts_http_error_code(400, "invalid_request_error", NULL), TS_E_INVALID);
    CHECK_EQ_INT(ts_http_error_code(413, NULL, NULL), TS_E_INVALID);
    CHECK_EQ_INT(ts_http_error_code(401, "authentication_error", "invalid_api_key"),
                 TS_E_UNAUTHENTICATED);
    CHECK_EQ_INT(ts_http_error_code(404, "invalid_request_error", "not_found"), TS_E_NOT_FOUND);
    CHECK_EQ_INT(ts_http_error_code(429, "rate_limit_error", "rate_limit_exceeded"),
                 TS_E_EXHAUSTED);
    CHECK_EQ_INT(ts_http_error_code(503, NULL, NULL), TS_E_UNAVAILABLE);
    CHECK_EQ_INT(ts_http_error_code(504, NULL, NULL), TS_E_TIMEOUT);
    CHECK_EQ_INT(ts_http_error_code(500, "server_error", NULL), TS_E_INTERNAL);
    /* An error event inside a 200 stream: its code decides. */
    CHECK_EQ_INT(ts_http_error_code(200, "server_error", "timeout"), TS_E_TIMEOUT);
    CHECK_EQ_INT(ts_http_error_code(200, "server_error", "service_unavailable"), TS_E_UNAVAILABLE);
    CHECK_EQ_INT(ts_http_error_code(200, "server_error", NULL), TS_E_INTERNAL);
}

int main(void) {
    start_server();
    RUN(test_keep_alive_reuses_one_connection);
    RUN(test_events_cut_anywhere_arrive_in_groups);
    RUN(test_an_error_answer_is_read_whole);
    RUN(test_a_kept_connection_closed_by_the_server_is_reopened_once);
    RUN(test_close_delimited_and_http10_bodies);
    RUN(test_a_cut_off_answer_is_an_error);
    RUN(test_the_event_callback_can_stop_a_stream);
    RUN(test_a_deadline_ends_a_silent_call);
    RUN(test_bad_urls_and_refused_connections);
    RUN(test_error_codes_invert_the_servers_mapping);
    return test_summary();
}
