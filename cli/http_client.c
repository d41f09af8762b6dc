/*
 * http_client.c — see http_client.h.
 */
#include "cli/http_client.h"

#include "common/error.h"

#include <errno.h>
#include <stdbool.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static int parse_base(const char *base, char *host, size_t hsize, char *port, size_t psize,
                      char *prefix, size_t xsize) {
    if (strncmp(base, "http://", 7))
        return ts_error_set(TS_E_INVALID, "--server: want http://HOST:PORT, got '%s'", base);
    const char *h = base + 7, *slash = strchr(h, '/');
    size_t hn = slash ? (size_t)(slash - h) : strlen(h);
    const char *colon = memrchr(h, ':', hn);
    if (!colon || colon == h || (size_t)(colon - h) >= hsize ||
        hn - (size_t)(colon - h) - 1 >= psize)
        return ts_error_set(TS_E_INVALID, "--server: want http://HOST:PORT, got '%s'", base);
    snprintf(host, hsize, "%.*s", (int)(colon - h), h);
    snprintf(port, psize, "%.*s", (int)(hn - (size_t)(colon - h) - 1), colon + 1);
    snprintf(prefix, xsize, "%s", slash ? slash : "");
    size_t pl = strlen(prefix);
    while (pl && prefix[pl - 1] == '/')
        prefix[--pl] = '\0';
    if (pl >= 3 && !strcmp(prefix + pl - 3, "/v1")) prefix[pl - 3] = '\0'; /* paths carry /v1 */
    return TS_OK;
}

static int send_all(int fd, const void *data, size_t n) {
    const char *p = data;
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return ts_error_set(TS_E_IO, "sending the request: %s", strerror(errno));
        p += w, n -= (size_t)w;
    }
    return TS_OK;
}

/* Decodes a chunked body in place. */
static int dechunk(ts_buf *raw, size_t start, ts_buf *out) {
    const char *p = raw->data + start, *end = raw->data + raw->len;
    for (;;) {
        char *e;
        unsigned long long sz = strtoull(p, &e, 16);
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (e == p || !nl) return ts_error_set(TS_E_IO, "a malformed chunked answer");
        p = nl + 1;
        if (sz == 0) return TS_OK;
        if (sz > (unsigned long long)(end - p)) return ts_error_set(TS_E_IO, "a truncated answer");
        if (ts_buf_append(out, p, (size_t)sz)) return ts_error_set(TS_E_NOMEM, "out of memory");
        p += sz;
        if (end - p >= 2 && p[0] == '\r') p += 2;
    }
}

int ts_http_call(const char *base, const char *method, const char *path, const char *content_type,
                 const void *body, size_t n, int timeout_s, int *status, ts_buf *out) {
    char host[256], port[16], prefix[256];
    int rc = parse_base(base, host, sizeof host, port, sizeof port, prefix, sizeof prefix);
    if (rc) return rc;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai) return ts_error_set(TS_E_UNAVAILABLE, "%s: %s", base, gai_strerror(gai));
    int fd = -1;
    for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        struct timeval tv = {.tv_sec = timeout_s};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, a->ai_addr, a->ai_addrlen)) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(ai);
    if (fd < 0)
        return ts_error_set(TS_E_UNAVAILABLE,
                            "cannot connect to %s (%s): is the cluster up with "
                            "an HTTP port?",
                            base, strerror(errno));
    ts_buf req = {0};
    const char *key = getenv("TESSERA_API_KEY");
    rc = ts_buf_printf(&req, "%s %s%s HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n", method,
                       prefix, path, host, port);
    if (!rc && key && key[0]) rc = ts_buf_printf(&req, "Authorization: Bearer %s\r\n", key);
    if (!rc && content_type) rc = ts_buf_printf(&req, "Content-Type: %s\r\n", content_type);
    if (!rc) rc = ts_buf_printf(&req, "Content-Length: %zu\r\n\r\n", body ? n : 0);
    if (rc) rc = ts_error_set(TS_E_NOMEM, "out of memory");
    if (!rc) rc = send_all(fd, req.data, req.len);
    if (!rc && body && n) rc = send_all(fd, body, n);
    if (req.data) explicit_bzero(req.data, req.len);
    ts_buf_free(&req);
    ts_buf raw = {0};
    char chunk[65536];
    while (!rc) {
        ssize_t r = recv(fd, chunk, sizeof chunk, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) rc = ts_error_set(TS_E_IO, "%s: reading the answer: %s", base, strerror(errno));
        if (r <= 0) break;
        if (ts_buf_append(&raw, chunk, (size_t)r)) rc = ts_error_set(TS_E_NOMEM, "out of memory");
    }
    close(fd);
    const char *hend = raw.data ? strstr(raw.data, "\r\n\r\n") : NULL;
    if (!rc && (!hend || sscanf(raw.data, "HTTP/1.%*d %d", status) != 1))
        rc = ts_error_set(TS_E_IO, "%s: not an HTTP answer", base);
    if (!rc) {
        size_t start = (size_t)(hend + 4 - raw.data);
        bool chunked = false;
        for (const char *l = raw.data; l < hend; l = strchr(l, '\n') + 1)
            if (!strncasecmp(l, "Transfer-Encoding: chunked", 26)) chunked = true;
        if (chunked)
            rc = dechunk(&raw, start, out);
        else if (ts_buf_append(out, raw.data + start, raw.len - start))
            rc = ts_error_set(TS_E_NOMEM, "out of memory");
    }
    ts_buf_free(&raw);
    return rc;
}
