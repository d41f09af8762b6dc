/* kv_transfer_tcp.c — TCP plumbing of the KV transfer (see kv_transfer_net.h). */
#include "kvx/kv_transfer_net.h"

#include "common/clock.h"
#include "common/error.h"
#include "kvx/kv_transfer.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { STATUS_MAGIC = 0x53564b54 /* "TKVS" */, LINK_MAGIC = 0x4e564b54 /* "TKVN" */ };

int kvx_split_endpoint(const char *text, char *host, size_t host_size, int *port) {
    const char *colon = text ? strrchr(text, ':') : NULL;
    if (!colon || colon == text)
        return ts_error_set(TS_E_INVALID, "KV endpoint \"%s\": expected HOST:PORT",
                            text ? text : "(null)");
    const char *h = text;
    size_t n = (size_t)(colon - text);
    if (h[0] == '[' && n >= 2 && h[n - 1] == ']') {
        h++;
        n -= 2;
    }
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (n == 0 || n >= host_size || *end || end == colon + 1 || p < 0 || p > 65535)
        return ts_error_set(TS_E_INVALID, "KV endpoint \"%s\": expected HOST:PORT", text);
    memcpy(host, h, n);
    host[n] = 0;
    *port = (int)p;
    return TS_OK;
}

static int resolve(const char *endpoint, bool passive, struct addrinfo **out) {
    char host[256], service[16];
    int port = 0;
    int rc = kvx_split_endpoint(endpoint, host, sizeof host, &port);
    if (rc) return rc;
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = passive ? AI_PASSIVE : 0};
    int err = getaddrinfo(host, service, &hints, out);
    if (err) return ts_error_set(TS_E_INVALID, "KV endpoint %s: %s", endpoint, gai_strerror(err));
    return TS_OK;
}

int kvx_listen(const char *endpoint, int *fd_out, char *host, size_t host_size, int *port) {
    struct addrinfo *ai;
    int rc = resolve(endpoint, true, &ai);
    if (rc) return rc;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 128) != 0) {
        rc = ts_error_set(TS_E_IO, "KV receiver: cannot listen on %s: %s", endpoint,
                          strerror(errno));
        if (fd >= 0) close(fd);
        freeaddrinfo(ai);
        return rc;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage sa;
    socklen_t len = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &len);
    char service[16];
    getnameinfo((struct sockaddr *)&sa, len, host, (socklen_t)host_size, service, sizeof service,
                NI_NUMERICHOST | NI_NUMERICSERV);
    *port = atoi(service);
    *fd_out = fd;
    return TS_OK;
}

static int wait_fd(int fd, short events, int64_t deadline_ns) {
    for (;;) {
        int64_t left = (deadline_ns - ts_now_ns()) / 1000000;
        if (left <= 0) return TS_E_TIMEOUT;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, left > 1000 ? 1000 : (int)left);
        if (n > 0) return TS_OK;
        if (n < 0 && errno != EINTR) return TS_E_IO;
    }
}

int kvx_connect(const char *endpoint, int timeout_ms, int *fd_out) {
    struct addrinfo *ai;
    int rc = resolve(endpoint, false, &ai);
    if (rc) return rc;
    int64_t deadline = ts_now_ns() + (int64_t)timeout_ms * 1000000;
    int fd = -1, err = 0;
    for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = errno;
            continue;
        }
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            err = errno;
            if (err == EINPROGRESS && wait_fd(fd, POLLOUT, deadline) == TS_OK) {
                socklen_t len = sizeof err;
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
            } else if (err == EINPROGRESS) {
                err = ETIMEDOUT;
            }
            if (err) {
                close(fd);
                fd = -1;
            }
        }
    }
    freeaddrinfo(ai);
    if (fd < 0)
        return ts_error_set(err == ETIMEDOUT ? TS_E_TIMEOUT : TS_E_UNAVAILABLE,
                            "KV receiver %s unreachable: %s", endpoint, strerror(err));
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    *fd_out = fd;
    return TS_OK;
}

int kvx_write_all(int fd, const void *buf, size_t n, int timeout_ms, const char *peer) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rc = wait_fd(fd, POLLOUT, ts_now_ns() + (int64_t)timeout_ms * 1000000);
            if (rc == TS_E_TIMEOUT)
                return ts_error_set(TS_E_TIMEOUT, "KV receiver %s accepted no data for %d ms", peer,
                                    timeout_ms);
            continue;
        }
        return ts_error_set(TS_E_UNAVAILABLE, "KV connection to %s broke: %s", peer,
                            strerror(errno));
    }
    return TS_OK;
}

int kvx_read_all(int fd, void *buf, size_t n, int timeout_ms, const char *peer) {
    char *p = buf;
    while (n > 0) {
        ssize_t r = recv(fd, p, n, MSG_DONTWAIT);
        if (r > 0) {
            p += r;
            n -= (size_t)r;
            continue;
        }
        if (r == 0) return ts_error_set(TS_E_UNAVAILABLE, "KV connection to %s closed", peer);
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int rc = wait_fd(fd, POLLIN, ts_now_ns() + (int64_t)timeout_ms * 1000000);
            if (rc == TS_E_TIMEOUT)
                return ts_error_set(TS_E_TIMEOUT, "no answer from KV receiver %s in %d ms", peer,
                                    timeout_ms);
            continue;
        }
        return ts_error_set(TS_E_UNAVAILABLE, "KV connection to %s broke: %s", peer,
                            strerror(errno));
    }
    return TS_OK;
}

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

size_t kvx_status_encode(int code, const char *message, uint8_t *out, size_t out_size) {
    size_t n = message ? strlen(message) : 0;
    if (n > TS_KVX_MAX_MESSAGE) n = TS_KVX_MAX_MESSAGE;
    if (n > out_size - TS_KVX_STATUS_BYTES) n = out_size - TS_KVX_STATUS_BYTES;
    put32(out, STATUS_MAGIC);
    put32(out + 4, (uint32_t)code);
    put32(out + 8, (uint32_t)n);
    if (n) memcpy(out + TS_KVX_STATUS_BYTES, message, n);
    put32(out + 12, ts_crc32c(0, out + TS_KVX_STATUS_BYTES, n));
    return TS_KVX_STATUS_BYTES + n;
}

/* The rest of a status whose first TS_KVX_STATUS_BYTES are in head. */
static int status_finish(int fd, const uint8_t *head, int timeout_ms, const char *peer, int *code,
                         char *message, size_t message_size) {
    uint8_t text[TS_KVX_MAX_MESSAGE + 1];
    uint32_t n = get32(head + 8);
    int32_t c = (int32_t)get32(head + 4);
    if (get32(head) != STATUS_MAGIC || n > TS_KVX_MAX_MESSAGE || c > 0 || c < TS_E_INTERNAL)
        return ts_error_set(TS_E_FORMAT, "malformed status from KV receiver %s", peer);
    int rc = kvx_read_all(fd, text, n, timeout_ms, peer);
    if (rc) return rc;
    if (get32(head + 12) != ts_crc32c(0, text, n))
        return ts_error_set(TS_E_FORMAT, "status from KV receiver %s: checksum mismatch", peer);
    text[n] = 0;
    snprintf(message, message_size, "%s", (const char *)text);
    *code = c;
    return TS_OK;
}

int kvx_status_read(int fd, int timeout_ms, const char *peer, int *code, char *message,
                    size_t message_size) {
    uint8_t head[TS_KVX_STATUS_BYTES];
    int rc = kvx_read_all(fd, head, sizeof head, timeout_ms, peer);
    return rc ? rc : status_finish(fd, head, timeout_ms, peer, code, message, message_size);
}

size_t kvx_link_message_encode(const uint8_t *id, size_t id_bytes, uint8_t *out) {
    put32(out, LINK_MAGIC);
    put32(out + 4, (uint32_t)id_bytes);
    put32(out + 8, ts_crc32c(0, id, id_bytes));
    put32(out + 12, 0);
    memcpy(out + TS_KVX_STATUS_BYTES, id, id_bytes);
    return TS_KVX_STATUS_BYTES + id_bytes;
}

int kvx_link_message_read(int fd, int timeout_ms, const char *peer, uint8_t *id, size_t id_bytes,
                          int *code, char *message, size_t message_size) {
    uint8_t head[TS_KVX_STATUS_BYTES];
    *code = 0;
    int rc = kvx_read_all(fd, head, sizeof head, timeout_ms, peer);
    if (rc) return rc;
    if (get32(head) == STATUS_MAGIC) /* refused: the status instead */
        return status_finish(fd, head, timeout_ms, peer, code, message, message_size);
    if (get32(head) != LINK_MAGIC || get32(head + 4) != id_bytes)
        return ts_error_set(TS_E_FORMAT, "malformed NCCL link message from KV receiver %s", peer);
    rc = kvx_read_all(fd, id, id_bytes, timeout_ms, peer);
    if (!rc && get32(head + 8) != ts_crc32c(0, id, id_bytes))
        rc = ts_error_set(TS_E_FORMAT, "NCCL link message from KV receiver %s: checksum mismatch",
                          peer);
    return rc;
}

void kvx_timespec_after(int64_t wait_ns, struct timespec *out) {
    clock_gettime(CLOCK_REALTIME, out);
    out->tv_sec += (time_t)(wait_ns / 1000000000);
    out->tv_nsec += (long)(wait_ns % 1000000000);
    if (out->tv_nsec >= 1000000000) {
        out->tv_sec++;
        out->tv_nsec -= 1000000000;
    }
}
