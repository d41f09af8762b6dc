/*
 * http_client.c — see http_client.h.
 *
 * An answer is read in three layers: the status line and headers; the body as its framing says
 * (Content-Length, chunked, or until the server closes), decoded piece by piece as bytes arrive;
 * and, for an event stream, the server-sent events cut from those pieces. Everything received
 * waits in conn->in until a layer has used it.
 */
#include "cli/http_client.h"

#include "common/clock.h"
#include "common/error.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

enum {
    MAX_HEADER_BYTES = 64 << 10,
    READ_BYTES = 64 << 10,
};

struct ts_http_conn {
    char base[512], host[256], port[16], prefix[256];
    int fd; /* -1: not connected */
    int timeout_s;
    bool kept; /* fd has carried an answer before: the server may have closed it since */
    ts_buf in; /* bytes received and not yet used, from in.data + off */
    size_t off;
};

static int parse_base(ts_http_conn *c, const char *base) {
    if (strncmp(base, "http://", 7))
        return ts_error_set(TS_E_INVALID, "want an http://HOST:PORT URL, got '%s'", base);
    const char *h = base + 7, *slash = strchr(h, '/');
    size_t hn = slash ? (size_t)(slash - h) : strlen(h);
    const char *colon = memrchr(h, ':', hn);
    if (!colon || colon == h || (size_t)(colon - h) >= sizeof c->host ||
        hn - (size_t)(colon - h) - 1 >= sizeof c->port || colon + 1 == h + hn ||
        strlen(base) >= sizeof c->base)
        return ts_error_set(TS_E_INVALID, "want an http://HOST:PORT URL, got '%s'", base);
    snprintf(c->base, sizeof c->base, "%s", base);
    snprintf(c->host, sizeof c->host, "%.*s", (int)(colon - h), h);
    snprintf(c->port, sizeof c->port, "%.*s", (int)(hn - (size_t)(colon - h) - 1), colon + 1);
    snprintf(c->prefix, sizeof c->prefix, "%s", slash ? slash : "");
    size_t pl = strlen(c->prefix);
    while (pl && c->prefix[pl - 1] == '/')
        c->prefix[--pl] = '\0';
    if (pl >= 3 && !strcmp(c->prefix + pl - 3, "/v1")) c->prefix[pl - 3] = '\0';
    return TS_OK;
}

int ts_http_conn_new(const char *base, int timeout_s, ts_http_conn **out) {
    ts_http_conn *c = calloc(1, sizeof *c);
    if (!c) return ts_error_set(TS_E_NOMEM, "out of memory");
    c->fd = -1;
    c->timeout_s = timeout_s;
    int rc = parse_base(c, base);
    if (rc) {
        free(c);
        return rc;
    }
    *out = c;
    return TS_OK;
}

static void disconnect(ts_http_conn *c) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->kept = false;
    ts_buf_clear(&c->in);
    c->off = 0;
}

void ts_http_conn_free(ts_http_conn *c) {
    if (!c) return;
    disconnect(c);
    ts_buf_free(&c->in);
    free(c);
}

static int connect_server(ts_http_conn *c) {
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    int gai = getaddrinfo(c->host, c->port, &hints, &ai);
    if (gai) return ts_error_set(TS_E_UNAVAILABLE, "%s: %s", c->base, gai_strerror(gai));
    int fd = -1, err = 0;
    for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        struct timeval tv = {.tv_sec = c->timeout_s};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        int one = 1; /* a request is one write: nothing to gain from Nagle, only delay */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, a->ai_addr, a->ai_addrlen)) {
            err = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(ai);
    if (fd < 0)
        return ts_error_set(TS_E_UNAVAILABLE,
                            "cannot connect to %s (%s): is the cluster up with an HTTP port?",
                            c->base, strerror(err));
    c->fd = fd;
    c->kept = false;
    return TS_OK;
}

static int send_all(ts_http_conn *c, const void *data, size_t n) {
    const char *p = data;
    while (n) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return ts_error_set(TS_E_IO, "%s: sending: %s", c->base, strerror(errno));
        p += w, n -= (size_t)w;
    }
    return TS_OK;
}

/* Reads what the server has sent (waiting for it): 1 with more bytes in c->in, 0 at the end of
 * the stream, or an error. Bytes that come after the deadline are its miss, also when they were
 * there at once (a loaded client reads a whole answer in one go). */
static int fill(ts_http_conn *c, int64_t deadline_ns) {
    for (;;) {
        if (deadline_ns > 0 && ts_now_ns() > deadline_ns)
            return ts_error_set(TS_E_TIMEOUT, "%s: no answer within the deadline", c->base);
        int wait_ms = c->timeout_s > 0 ? c->timeout_s * 1000 : -1;
        bool by_deadline = false;
        if (deadline_ns > 0) {
            int64_t left = (deadline_ns - ts_now_ns() + 999999) / 1000000;
            if (left < 0) left = 0;
            if (wait_ms < 0 || left < wait_ms) wait_ms = (int)left, by_deadline = true;
        }
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int ready = poll(&p, 1, wait_ms);
        if (ready < 0 && errno == EINTR) continue;
        if (ready < 0) return ts_error_set(TS_E_IO, "%s: poll: %s", c->base, strerror(errno));
        if (ready == 0)
            return ts_error_set(TS_E_TIMEOUT, "%s: no answer within %s", c->base,
                                by_deadline ? "the deadline" : "the client's timeout");
        if (c->off) { /* keep only what is not used yet */
            memmove(c->in.data, c->in.data + c->off, c->in.len - c->off);
            c->in.len -= c->off;
            c->off = 0;
        }
        if (ts_buf_reserve(&c->in, READ_BYTES + 1))
            return ts_error_set(TS_E_NOMEM, "out of memory");
        ssize_t r = recv(c->fd, c->in.data + c->in.len, READ_BYTES, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return ts_error_set(TS_E_IO, "%s: reading: %s", c->base, strerror(errno));
        c->in.len += (size_t)r;
        c->in.data[c->in.len] = '\0'; /* the header parsing reads C strings */
        return r > 0;
    }
}

/* ---- the body's consumer: whole, or as server-sent events ---- */

typedef struct body_sink {
    ts_http_event_fn on_event; /* NULL: the body goes whole to out */
    void *arg;
    ts_buf *out;
    ts_buf line, data; /* the event stream's unfinished line, the current event's data */
    bool has_data;
    bool delivered; /* events went out since the last pause */
} body_sink;

/* One line of the event stream (without its end of line). */
static int sse_line(body_sink *s, const char *l, size_t n) {
    if (n && l[n - 1] == '\r') n--;
    if (n == 0) { /* the end of an event */
        if (!s->has_data) return TS_OK;
        s->has_data = false;
        s->delivered = true;
        int rc = s->on_event(s->arg, s->data.data ? s->data.data : "", s->data.len);
        ts_buf_clear(&s->data);
        return rc;
    }
    if (n < 5 || memcmp(l, "data:", 5)) return TS_OK; /* comments, id:, event:, retry: */
    l += 5, n -= 5;
    if (n && *l == ' ') l++, n--;
    int rc = s->has_data ? ts_buf_append_char(&s->data, '\n') : 0;
    if (!rc) rc = ts_buf_append(&s->data, l, n); /* a ts_buf stays NUL-terminated */
    if (rc) return ts_error_set(TS_E_NOMEM, "out of memory");
    s->has_data = true;
    return TS_OK;
}

static int sink_bytes(body_sink *s, const char *p, size_t n) {
    if (!s->on_event)
        return ts_buf_append(s->out, p, n) ? ts_error_set(TS_E_NOMEM, "out of memory") : TS_OK;
    while (n) {
        const char *nl = memchr(p, '\n', n);
        if (!nl)
            return ts_buf_append(&s->line, p, n) ? ts_error_set(TS_E_NOMEM, "out of memory")
                                                 : TS_OK;
        size_t k = (size_t)(nl - p);
        int rc;
        if (s->line.len) {
            rc = ts_buf_append(&s->line, p, k) ? ts_error_set(TS_E_NOMEM, "out of memory") : 0;
            if (!rc) rc = sse_line(s, s->line.data, s->line.len);
            ts_buf_clear(&s->line);
        } else {
            rc = sse_line(s, p, k);
        }
        if (rc) return rc;
        p += k + 1, n -= k + 1;
    }
    return TS_OK;
}

/* Everything received so far has been consumed: the events of this read are all out. */
static int sink_pause(body_sink *s) {
    if (!s->delivered) return TS_OK;
    s->delivered = false;
    return s->on_event(s->arg, NULL, 0);
}

/* ---- the answer ---- */

typedef struct answer {
    int status;
    bool chunked, close, events;
    int64_t length; /* Content-Length; -1: none */
} answer;

static bool header_is(const char *l, size_t n, const char *name, const char **value) {
    size_t k = strlen(name);
    if (n <= k || strncasecmp(l, name, k) || l[k] != ':') return false;
    const char *v = l + k + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    *value = v;
    return true;
}

/* Reads the status line and headers. *fresh: nothing of the answer had come when the stream
 * ended (a kept connection the server closed). */
static int read_head(ts_http_conn *c, int64_t deadline_ns, answer *a, bool *fresh) {
    *fresh = false;
    char *end;
    for (;;) {
        end = c->in.len > c->off ? memmem(c->in.data + c->off, c->in.len - c->off, "\r\n\r\n", 4)
                                 : NULL;
        if (end) break;
        if (c->in.len - c->off > MAX_HEADER_BYTES)
            return ts_error_set(TS_E_IO, "%s: headers beyond %d bytes", c->base, MAX_HEADER_BYTES);
        bool nothing_yet = c->in.len == c->off;
        int r = fill(c, deadline_ns);
        if (r == TS_E_IO && nothing_yet && c->kept) *fresh = true; /* a reset */
        if (r < 0) return r;
        if (r == 0) {
            *fresh = nothing_yet;
            return ts_error_set(TS_E_IO, "%s: the server closed the connection%s", c->base,
                                nothing_yet ? " before answering" : " inside the headers");
        }
    }
    const char *head = c->in.data + c->off;
    size_t head_len = (size_t)(end - head) + 2; /* each line ends in \r\n */
    *a = (answer){.length = -1};
    int minor = 0;
    if (sscanf(head, "HTTP/1.%d %d", &minor, &a->status) != 2 || a->status < 100 || a->status > 999)
        return ts_error_set(TS_E_IO, "%s: not an HTTP answer", c->base);
    a->close = minor == 0;
    for (const char *l = (const char *)memchr(head, '\n', head_len) + 1; l < head + head_len;) {
        const char *nl = memchr(l, '\n', (size_t)(head + head_len - l));
        size_t n = (size_t)(nl - l);
        const char *v;
        if (header_is(l, n, "Content-Length", &v)) {
            char *e;
            long long len = strtoll(v, &e, 10);
            if (e == v || len < 0) return ts_error_set(TS_E_IO, "%s: bad Content-Length", c->base);
            a->length = len;
        } else if (header_is(l, n, "Transfer-Encoding", &v)) {
            a->chunked = !strncasecmp(v, "chunked", 7);
        } else if (header_is(l, n, "Connection", &v)) {
            if (!strncasecmp(v, "close", 5)) a->close = true;
            if (!strncasecmp(v, "keep-alive", 10)) a->close = false;
        } else if (header_is(l, n, "Content-Type", &v)) {
            a->events = !strncasecmp(v, "text/event-stream", 17);
        }
        l = nl + 1;
    }
    c->off += head_len + 2;
    if (!a->chunked && a->length < 0) a->close = true; /* the body ends with the connection */
    return TS_OK;
}

/* Hands the body to s as it arrives: its bytes (a chunked body's decoded), and a pause each time
 * what has arrived is used up. */
static int read_body(ts_http_conn *c, int64_t deadline_ns, const answer *a, body_sink *s) {
    enum { DATA, SIZE_LINE, DATA_END, TRAILER, DONE } st;
    int64_t left = a->length; /* bytes to come of the body or the chunk; -1: until the end */
    st = a->chunked ? SIZE_LINE : a->length == 0 ? DONE : DATA;
    int rc = 0;
    while (st != DONE) {
        const char *p = c->in.data + c->off;
        size_t avail = c->in.len - c->off;
        if (st == DATA && avail) {
            size_t k = left >= 0 && (uint64_t)left < avail ? (size_t)left : avail;
            if ((rc = sink_bytes(s, p, k))) return rc;
            c->off += k;
            if (left >= 0 && (left -= (int64_t)k) == 0) st = a->chunked ? DATA_END : DONE;
            continue;
        }
        const char *nl = st != DATA && avail ? memchr(p, '\n', avail) : NULL;
        if (nl) { /* a line of the chunked framing */
            size_t len = (size_t)(nl - p) + 1;
            bool empty = len == 1 || (len == 2 && p[0] == '\r');
            c->off += len;
            if (st == DATA_END && !empty)
                return ts_error_set(TS_E_IO, "%s: a malformed chunked answer", c->base);
            if (st == DATA_END) {
                st = SIZE_LINE;
            } else if (st == SIZE_LINE) {
                char *e;
                unsigned long long size = strtoull(p, &e, 16);
                if (e == p || size > INT64_MAX)
                    return ts_error_set(TS_E_IO, "%s: a malformed chunked answer", c->base);
                left = (int64_t)size;
                st = size ? DATA : TRAILER;
            } else if (empty) { /* the end of the trailers */
                st = DONE;
            }
            continue;
        }
        if ((rc = sink_pause(s))) return rc;
        int r = fill(c, deadline_ns);
        if (r < 0) return r;
        if (r == 0 && st == DATA && left < 0) break; /* the body ends with the connection */
        if (r == 0) return ts_error_set(TS_E_IO, "%s: the answer was cut off", c->base);
    }
    if (s->on_event && s->line.len) rc = sse_line(s, s->line.data, s->line.len);
    if (!rc && s->on_event) rc = sse_line(s, "", 0); /* an event the stream ended without "\n\n" */
    if (!rc) rc = sink_pause(s);
    return rc;
}

static int send_request(ts_http_conn *c, const char *method, const char *path,
                        const char *content_type, const void *body, size_t n, bool close_after) {
    ts_buf req = {0};
    const char *key = getenv("TESSERA_API_KEY");
    int rc = ts_buf_printf(&req, "%s %s%s HTTP/1.1\r\nHost: %s:%s\r\n%s", method, c->prefix, path,
                           c->host, c->port, close_after ? "Connection: close\r\n" : "");
    if (!rc && key && key[0]) rc = ts_buf_printf(&req, "Authorization: Bearer %s\r\n", key);
    if (!rc && content_type) rc = ts_buf_printf(&req, "Content-Type: %s\r\n", content_type);
    if (!rc) rc = ts_buf_printf(&req, "Content-Length: %zu\r\n\r\n", body ? n : 0);
    /* One send of head and body: two small writes would wait out Nagle and the server's
     * delayed ACK (40 ms on Linux) before the second. */
    if (!rc && body && n) rc = ts_buf_append(&req, body, n);
    if (rc) rc = ts_error_set(TS_E_NOMEM, "out of memory");
    if (!rc) rc = send_all(c, req.data, req.len);
    if (req.data) explicit_bzero(req.data, req.len);
    ts_buf_free(&req);
    return rc;
}

static int request(ts_http_conn *c, const char *method, const char *path, const char *content_type,
                   const void *body, size_t n, int64_t deadline_ns, bool close_after,
                   ts_http_event_fn on_event, void *arg, int *status, ts_buf *out) {
    answer a;
    int rc = 0;
    for (int attempt = 0;; attempt++) {
        if (c->fd < 0 && (rc = connect_server(c))) return rc;
        bool kept = c->kept;
        rc = send_request(c, method, path, content_type, body, n, close_after);
        bool fresh = kept && rc == TS_E_IO;
        if (!rc) rc = read_head(c, deadline_ns, &a, &fresh);
        if (!rc) break;
        disconnect(c);
        /* The server may close a kept connection between two calls (its idle timeout): nothing
         * of this call reached it, so one retry on a new connection is safe. */
        if (!(fresh && kept && attempt == 0)) return rc;
    }
    *status = a.status;
    body_sink s = {
        .on_event = a.events && a.status / 100 == 2 ? on_event : NULL, .arg = arg, .out = out};
    rc = read_body(c, deadline_ns, &a, &s);
    ts_buf_free(&s.line);
    ts_buf_free(&s.data);
    if (rc || a.close || close_after)
        disconnect(c);
    else
        c->kept = true;
    return rc;
}

int ts_http_request(ts_http_conn *c, const char *method, const char *path, const char *content_type,
                    const void *body, size_t n, int64_t deadline_ns, ts_http_event_fn on_event,
                    void *arg, int *status, ts_buf *out) {
    return request(c, method, path, content_type, body, n, deadline_ns, false, on_event, arg,
                   status, out);
}

int ts_http_call(const char *base, const char *method, const char *path, const char *content_type,
                 const void *body, size_t n, int timeout_s, int *status, ts_buf *out) {
    ts_http_conn *c = NULL;
    int rc = ts_http_conn_new(base, timeout_s, &c);
    if (!rc) rc = request(c, method, path, content_type, body, n, 0, true, NULL, NULL, status, out);
    ts_http_conn_free(c);
    return rc;
}

int ts_http_error_code(int status, const char *type, const char *code) {
    static const struct {
        const char *name;
        int code;
    } codes[] = {
        {"timeout", TS_E_TIMEOUT},
        {"service_unavailable", TS_E_UNAVAILABLE},
        {"rate_limit_exceeded", TS_E_EXHAUSTED},
        {"invalid_api_key", TS_E_UNAUTHENTICATED},
        {"not_found", TS_E_NOT_FOUND},
    };
    for (size_t i = 0; code && i < sizeof codes / sizeof codes[0]; i++)
        if (!strcmp(code, codes[i].name)) return codes[i].code;
    if (type && !strcmp(type, "invalid_request_error")) return TS_E_INVALID;
    switch (status) {
    case 400:
    case 413: return TS_E_INVALID;
    case 401: return TS_E_UNAUTHENTICATED;
    case 404: return TS_E_NOT_FOUND;
    case 429: return TS_E_EXHAUSTED;
    case 503: return TS_E_UNAVAILABLE;
    case 504: return TS_E_TIMEOUT;
    default: return status / 100 == 2 && !type && !code ? TS_OK : TS_E_INTERNAL;
    }
}
