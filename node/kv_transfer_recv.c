/*
 * kv_transfer_recv.c — the decode side of the KV transfer (see kv_transfer.h).
 *
 * One I/O thread polls the listening socket and every connection (non-blocking) and runs a
 * small state machine per connection: transfer header, then frame header / payload pairs until
 * the end frame. Verified payloads are copied into the transfer's host staging area, laid out
 * per layer as K then V, each [n_blocks][heads of this rank][block_size][head_dim], which is
 * exactly what ts_engine_kv_write takes, so installing is one call per layer.
 *
 * A transfer is keyed by request id and may be fed by several connections (several prefill
 * ranks, each with a part of this rank's heads). It completes when the connections' head ranges
 * cover this rank's heads and each of them ended with all of its frames; then every connection
 * gets the OK status. Any error fails the whole transfer (staging freed at once, every
 * connection told and closed); the failure stays as a small tombstone until the owner collects
 * it with wait or drop, so that a late connection for the same request is refused too.
 *
 * Locking: one mutex guards the transfer and connection lists. The I/O thread holds it while it
 * processes ready sockets (non-blocking reads and memcpy, never waiting), so the API calls see
 * consistent states. Only the I/O thread touches sockets and frees transfer records; install
 * detaches a complete transfer under the lock and uploads it without the lock.
 */
#include "node/kv_transfer.h"

#include "common/clock.h"
#include "common/error.h"
#include "common/log.h"
#include "node/kv_transfer_net.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { RECEIVING, COMPLETE, FAILED };
enum { MAX_TOMBSTONES = 256, DRAIN_MS = 2000 };

typedef struct transfer {
    struct transfer *next;
    uint64_t id;
    int state;
    int code; /* FAILED: why */
    char message[TS_KVX_MAX_MESSAGE + 1];
    bool collected; /* FAILED and reported (or dropped): free once no connection refers to it */
    uint32_t n_tokens, n_blocks;
    uint8_t *staging;
    size_t staging_bytes;
    bool *head_covered; /* [own heads] */
    int32_t n_covered;
    int n_conns; /* connections attached */
    int n_ended; /* of which sent all their frames */
    int64_t last_ns;
    int64_t bytes;
} transfer;

/* C_DRAIN: told of a failure and shut for writing; what the sender still sends is read and
 * dropped until it closes (or DRAIN_MS pass), because closing a socket with unread data resets
 * the connection, and some TCP stacks drop received data (the status) on a reset. */
typedef enum { C_HEADER, C_FRAME, C_PAYLOAD, C_ENDED, C_DRAIN } conn_phase;

typedef struct conn {
    struct conn *next;
    int fd;
    conn_phase phase;
    uint8_t head[TS_KVX_HEADER_BYTES]; /* header or frame header being read */
    size_t need, got;
    ts_kvx_header h;
    ts_kvx_frame f;
    transfer *t;
    uint8_t *payload;
    size_t payload_bytes;
    uint8_t *seen; /* [n_layers][n_blocks] frames received */
    uint32_t n_frames;
    bool close_now; /* reply (status of t, or reject_*) and close at the next sweep */
    int reject_code;
    char reject_message[TS_KVX_MAX_MESSAGE + 1];
    int64_t last_ns;
    bool peer_closed; /* C_DRAIN: the sender closed its side */
} conn;

struct ts_kvx_receiver {
    /* geometry of this rank (read-only after open) */
    int32_t n_layers, head_dim, block_size, own_head0, own_heads, max_blocks;
    ts_dtype dtype;
    int rank, size;
    size_t head_bytes; /* one head, one block, one pool */
    ts_kvx_receiver_options opts;
    char endpoint[300];
    int listen_fd;

    pthread_mutex_t lock;
    pthread_cond_t cond; /* a transfer changed state */
    pthread_t thread;
    bool thread_started, stop;
    transfer *transfers;
    conn *conns;
    size_t staging_bytes;
    int64_t transfers_ok, transfers_failed, bytes_received;
};

/* ------------------------------------------------------------------ transfers */

static transfer *find(ts_kvx_receiver *r, uint64_t id) {
    for (transfer *t = r->transfers; t; t = t->next)
        if (t->id == id) return t;
    return NULL;
}

static void free_staging(ts_kvx_receiver *r, transfer *t) {
    r->staging_bytes -= t->staging_bytes;
    free(t->staging);
    t->staging = NULL;
    t->staging_bytes = 0;
    free(t->head_covered);
    t->head_covered = NULL;
}

static void fail(ts_kvx_receiver *r, transfer *t, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Fails t: staging freed now; its connections are told and closed at the next sweep. */
static void fail(ts_kvx_receiver *r, transfer *t, int code, const char *fmt, ...) {
    if (t->state == FAILED) return;
    va_list ap;
    va_start(ap, fmt);
    char text[TS_KVX_MAX_MESSAGE + 1];
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    snprintf(t->message, sizeof t->message, "request %llu: %s", (unsigned long long)t->id, text);
    t->state = FAILED;
    t->code = code;
    free_staging(r, t);
    r->transfers_failed++;
    for (conn *c = r->conns; c; c = c->next)
        if (c->t == t) c->close_now = true;
    ts_log(TS_LOG_WARN, NULL, "KV transfer failed: %s", t->message);
    pthread_cond_broadcast(&r->cond);
}

static void maybe_complete(ts_kvx_receiver *r, transfer *t) {
    if (t->state != RECEIVING || t->n_covered != r->own_heads || t->n_ended != t->n_conns) return;
    t->state = COMPLETE;
    r->transfers_ok++;
    for (conn *c = r->conns; c; c = c->next)
        if (c->t == t) c->close_now = true;
    pthread_cond_broadcast(&r->cond);
}

/* Keeps the tombstone list bounded: the oldest collected-or-not failures go first. */
static void prune_tombstones(ts_kvx_receiver *r) {
    int n = 0;
    for (transfer *t = r->transfers; t; t = t->next)
        n += t->state == FAILED;
    for (transfer **pp = &r->transfers; *pp && n > MAX_TOMBSTONES;) {
        transfer *t = *pp;
        if (t->state == FAILED && t->n_conns == 0) {
            *pp = t->next;
            free(t);
            n--;
        } else {
            pp = &t->next;
        }
    }
}

/* ------------------------------------------------------------------ connections */

static void reject(conn *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void reject(conn *c, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->reject_message, sizeof c->reject_message, fmt, ap);
    va_end(ap);
    c->reject_code = code;
    c->close_now = true;
}

/* A new transfer in the table, with `bytes` of staging (0: none, it is about to fail). */
static transfer *new_transfer(ts_kvx_receiver *r, const ts_kvx_header *h, size_t bytes) {
    transfer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    if (bytes) {
        t->staging = malloc(bytes);
        t->head_covered = calloc((size_t)r->own_heads, sizeof *t->head_covered);
        if (!t->staging || !t->head_covered) {
            free(t->staging);
            free(t->head_covered);
            free(t);
            return NULL;
        }
    }
    t->id = h->request_id;
    t->state = RECEIVING;
    t->n_tokens = h->n_tokens;
    t->n_blocks = h->n_blocks;
    t->staging_bytes = bytes;
    t->last_ns = ts_now_ns();
    r->staging_bytes += bytes;
    t->next = r->transfers;
    r->transfers = t;
    return t;
}

/* Checks a transfer header against this rank and attaches the connection to its transfer. */
static void on_header(ts_kvx_receiver *r, conn *c) {
    ts_kvx_header *h = &c->h;
    if (ts_kvx_header_decode(c->head, h) != TS_OK) {
        reject(c, TS_E_FORMAT, "%s", ts_error_message());
        return;
    }
    transfer *t = find(r, h->request_id);
    char why[200] = "";
    /* 64-bit: the fields are untrusted and must not wrap around the range checks. */
    uint64_t want_blocks =
        ((uint64_t)h->n_tokens + (uint64_t)r->block_size - 1) / (uint64_t)r->block_size;
    uint64_t heads_end = (uint64_t)h->kv_head0 + h->n_kv_heads;
    if (h->fingerprint != r->opts.fingerprint)
        snprintf(why, sizeof why,
                 "model fingerprint %016llx differs from this node's %016llx "
                 "(prefill and decode must load the same model and KV type)",
                 (unsigned long long)h->fingerprint, (unsigned long long)r->opts.fingerprint);
    else if (h->n_layers != (uint32_t)r->n_layers || h->head_dim != (uint32_t)r->head_dim ||
             h->block_size != (uint32_t)r->block_size || h->dtype != (uint32_t)r->dtype)
        snprintf(why, sizeof why,
                 "geometry %u layers, head_dim %u, block size %u, dtype %u; "
                 "this node has %d, %d, %d, %d",
                 h->n_layers, h->head_dim, h->block_size, h->dtype, r->n_layers, r->head_dim,
                 r->block_size, (int)r->dtype);
    else if (h->dst_rank != (uint32_t)r->rank || h->dst_size != (uint32_t)r->size)
        snprintf(why, sizeof why, "addressed to decode rank %u of %u, this is rank %d of %d",
                 h->dst_rank, h->dst_size, r->rank, r->size);
    else if (h->n_tokens < 1 || h->n_blocks != want_blocks || h->n_blocks > (uint32_t)r->max_blocks)
        snprintf(why, sizeof why, "%u tokens in %u blocks (pool of %d)", h->n_tokens, h->n_blocks,
                 r->max_blocks);
    else if (h->n_kv_heads < 1 || h->kv_head0 < (uint32_t)r->own_head0 ||
             heads_end > (uint64_t)(r->own_head0 + r->own_heads))
        snprintf(why, sizeof why, "KV heads [%u, %llu) are not this rank's [%d, %d)", h->kv_head0,
                 (unsigned long long)heads_end, r->own_head0, r->own_head0 + r->own_heads);
    else if (t && t->state != RECEIVING)
        snprintf(why, sizeof why, "transfer already %s",
                 t->state == COMPLETE ? "complete" : "failed");
    else if (t && t->n_tokens != h->n_tokens)
        snprintf(why, sizeof why, "%u tokens, another prefill rank announced %u", h->n_tokens,
                 t->n_tokens);
    size_t bytes =
        (size_t)r->n_layers * 2 * (size_t)h->n_blocks * (size_t)r->own_heads * r->head_bytes;
    int code = TS_E_INVALID;
    if (!why[0] && !t && r->staging_bytes + bytes > r->opts.max_staging_bytes) {
        snprintf(why, sizeof why, "KV staging full (%zu + %zu bytes > %zu)", r->staging_bytes,
                 bytes, r->opts.max_staging_bytes);
        code = TS_E_EXHAUSTED;
    }
    if (!t) {
        t = new_transfer(r, h, why[0] ? 0 : bytes);
        if (!t) {
            reject(c, TS_E_NOMEM, "request %llu: out of memory for %zu bytes of KV staging",
                   (unsigned long long)h->request_id, bytes);
            return;
        }
    }
    if (why[0]) {
        /* A bad part spoils a transfer in progress, and a refused new one is remembered as
         * failed so that its owner learns why; a finished one is left alone. */
        if (t->state == RECEIVING) fail(r, t, code, "%s", why);
        reject(c, t->state == FAILED ? t->code : code, "request %llu: %s",
               (unsigned long long)h->request_id, why);
        return;
    }
    for (uint32_t k = 0; k < h->n_kv_heads; k++)
        if (t->head_covered[h->kv_head0 - (uint32_t)r->own_head0 + k]) {
            fail(r, t, TS_E_INVALID, "KV head %u sent twice", h->kv_head0 + k);
            reject(c, TS_E_INVALID, "%s", t->message);
            return;
        }
    c->payload_bytes = ts_kvx_block_payload_bytes(h);
    c->payload = malloc(c->payload_bytes);
    c->seen = calloc((size_t)h->n_layers * h->n_blocks, 1);
    if (!c->payload || !c->seen) {
        fail(r, t, TS_E_NOMEM, "out of memory");
        reject(c, TS_E_NOMEM, "%s", t->message);
        return;
    }
    for (uint32_t k = 0; k < h->n_kv_heads; k++)
        t->head_covered[h->kv_head0 - (uint32_t)r->own_head0 + k] = true;
    t->n_covered += (int32_t)h->n_kv_heads;
    t->n_conns++;
    t->last_ns = ts_now_ns();
    c->t = t;
    c->phase = C_FRAME;
    c->need = TS_KVX_FRAME_BYTES;
    c->got = 0;
}

static void on_frame(ts_kvx_receiver *r, conn *c) {
    transfer *t = c->t;
    ts_kvx_frame *f = &c->f;
    if (ts_kvx_frame_decode(c->head, f) != TS_OK) {
        fail(r, t, TS_E_FORMAT, "from prefill rank %u: %s", c->h.src_rank, ts_error_message());
        return;
    }
    uint32_t total = c->h.n_layers * c->h.n_blocks;
    if (f->kind == TS_KVX_FRAME_END) {
        if (f->block != c->n_frames || c->n_frames != total) {
            fail(r, t, TS_E_FORMAT, "prefill rank %u ended after %u of %u blocks (it says %u)",
                 c->h.src_rank, c->n_frames, total, f->block);
            return;
        }
        c->phase = C_ENDED;
        t->n_ended++;
        maybe_complete(r, t);
        return;
    }
    if (f->layer >= c->h.n_layers || f->block >= c->h.n_blocks) {
        fail(r, t, TS_E_FORMAT, "frame for layer %u block %u outside %u x %u", f->layer, f->block,
             c->h.n_layers, c->h.n_blocks);
        return;
    }
    if (f->payload_bytes != c->payload_bytes) {
        fail(r, t, TS_E_FORMAT, "layer %u block %u: %u payload bytes, expected %zu", f->layer,
             f->block, f->payload_bytes, c->payload_bytes);
        return;
    }
    if (c->seen[(size_t)f->layer * c->h.n_blocks + f->block]) {
        fail(r, t, TS_E_FORMAT, "layer %u block %u sent twice", f->layer, f->block);
        return;
    }
    c->phase = C_PAYLOAD;
    c->need = c->payload_bytes;
    c->got = 0;
}

static void on_payload(ts_kvx_receiver *r, conn *c) {
    transfer *t = c->t;
    const ts_kvx_frame *f = &c->f;
    if (ts_crc32c(0, c->payload, c->payload_bytes) != f->payload_crc) {
        fail(r, t, TS_E_FORMAT, "layer %u block %u from prefill rank %u: checksum mismatch",
             f->layer, f->block, c->h.src_rank);
        return;
    }
    size_t part = c->payload_bytes / 2; /* K, then V */
    size_t pool = (size_t)t->n_blocks * (size_t)r->own_heads * r->head_bytes;
    size_t off = (size_t)f->block * (size_t)r->own_heads * r->head_bytes +
                 (size_t)(c->h.kv_head0 - (uint32_t)r->own_head0) * r->head_bytes;
    uint8_t *layer = t->staging + (size_t)f->layer * 2 * pool;
    memcpy(layer + off, c->payload, part);
    memcpy(layer + pool + off, c->payload + part, part);
    c->seen[(size_t)f->layer * c->h.n_blocks + f->block] = 1;
    c->n_frames++;
    t->bytes += (int64_t)c->payload_bytes;
    c->phase = C_FRAME;
    c->need = TS_KVX_FRAME_BYTES;
    c->got = 0;
}

/* Reads what the socket has; runs the state machine on every complete piece. */
static void on_readable(ts_kvx_receiver *r, conn *c) {
    if (c->phase == C_DRAIN) {
        uint8_t sink[4096];
        ssize_t n;
        while ((n = recv(c->fd, sink, sizeof sink, MSG_DONTWAIT)) > 0) {
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            c->peer_closed = true;
        return;
    }
    while (!c->close_now && c->phase != C_ENDED) {
        uint8_t *dst = c->phase == C_PAYLOAD ? c->payload : c->head;
        ssize_t n = recv(c->fd, dst + c->got, c->need - c->got, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n <= 0) {
            c->peer_closed = true;
            /* "closed" either way (an orderly close or a reset), the reason in brackets. */
            const char *why = n == 0 ? "by the sender" : strerror(errno);
            if (c->t)
                fail(r, c->t, TS_E_UNAVAILABLE,
                     "connection from prefill rank %u closed (%s) after %u of %u blocks",
                     c->h.src_rank, why, c->n_frames, c->h.n_layers * c->h.n_blocks);
            else
                reject(c, TS_E_UNAVAILABLE, "connection closed (%s) before its header", why);
            c->close_now = true;
            return;
        }
        c->last_ns = ts_now_ns();
        if (c->t) c->t->last_ns = c->last_ns;
        r->bytes_received += n;
        c->got += (size_t)n;
        if (c->got < c->need) continue;
        if (c->phase == C_HEADER)
            on_header(r, c);
        else if (c->phase == C_FRAME)
            on_frame(r, c);
        else
            on_payload(r, c);
    }
}

static void send_status(conn *c, int code, const char *message) {
    uint8_t buf[TS_KVX_STATUS_BYTES + TS_KVX_MAX_MESSAGE];
    size_t n = kvx_status_encode(code, message, buf, sizeof buf);
    /* Best effort: a small message into an idle socket buffer; a vanished sender is fine. */
    ssize_t w = send(c->fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)w;
}

/* Replies to and closes the connections marked close_now; times out idle transfers; frees
 * collected tombstones. */
static void sweep(ts_kvx_receiver *r) {
    int64_t now = ts_now_ns(), timeout = (int64_t)r->opts.timeout_ms * 1000000;
    for (conn *c = r->conns; c; c = c->next) {
        if (c->close_now || c->phase >= C_ENDED || now - c->last_ns <= timeout) continue;
        if (c->t)
            fail(r, c->t, TS_E_TIMEOUT, "no data from prefill rank %u for %d ms", c->h.src_rank,
                 r->opts.timeout_ms);
        else
            reject(c, TS_E_TIMEOUT, "no transfer header in %d ms", r->opts.timeout_ms);
    }
    for (transfer *t = r->transfers; t; t = t->next)
        if (t->state == RECEIVING && now - t->last_ns > timeout)
            fail(r, t, TS_E_TIMEOUT, "%d of %d KV heads arrived in time (%d ms)", t->n_covered,
                 r->own_heads, r->opts.timeout_ms);
    for (conn **pp = &r->conns; *pp;) {
        conn *c = *pp;
        bool done = false;
        if (c->close_now) {
            bool ok = c->t && c->t->state == COMPLETE;
            if (c->t)
                send_status(c, ok ? TS_OK : c->t->code, c->t->message);
            else
                send_status(c, c->reject_code ? c->reject_code : TS_E_INVALID, c->reject_message);
            if (c->t) c->t->n_conns--;
            c->t = NULL;
            c->close_now = false;
            done = ok;
            if (!ok) { /* the sender may still be sending: drain before closing */
                shutdown(c->fd, SHUT_WR);
                c->phase = C_DRAIN;
                c->last_ns = now;
            }
        }
        if (c->phase == C_DRAIN &&
            (c->peer_closed || now - c->last_ns > (int64_t)DRAIN_MS * 1000000))
            done = true;
        if (!done) {
            pp = &c->next;
            continue;
        }
        close(c->fd);
        free(c->payload);
        free(c->seen);
        *pp = c->next;
        free(c);
    }
    for (transfer **pp = &r->transfers; *pp;) {
        transfer *t = *pp;
        if (t->state == FAILED && t->collected && t->n_conns == 0) {
            *pp = t->next;
            free(t);
        } else {
            pp = &t->next;
        }
    }
    prune_tombstones(r);
}

static void accept_all(ts_kvx_receiver *r) {
    for (;;) {
        int fd = accept4(r->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return; /* EAGAIN, or a transient error: poll again later */
        conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            return;
        }
        c->fd = fd;
        c->phase = C_HEADER;
        c->need = TS_KVX_HEADER_BYTES;
        c->last_ns = ts_now_ns();
        c->next = r->conns;
        r->conns = c;
    }
}

static void *receiver_thread(void *arg) {
    ts_kvx_receiver *r = arg;
    struct pollfd *fds = NULL;
    conn **owners = NULL;
    size_t cap = 0;
    for (;;) {
        pthread_mutex_lock(&r->lock);
        if (r->stop) {
            pthread_mutex_unlock(&r->lock);
            break;
        }
        size_t n = 1;
        for (conn *c = r->conns; c; c = c->next)
            n++;
        if (n > cap) {
            struct pollfd *nf = realloc(fds, n * 2 * sizeof *fds);
            conn **no = realloc(owners, n * 2 * sizeof *owners);
            if (nf) fds = nf;
            if (no) owners = no;
            if (nf && no) cap = n * 2;
        }
        size_t k = 0;
        if (cap > 0) {
            fds[k++] = (struct pollfd){.fd = r->listen_fd, .events = POLLIN};
            for (conn *c = r->conns; c && k < cap; c = c->next) {
                owners[k] = c;
                /* An ended connection is watched too: its sender closing early is fine. */
                fds[k++] = (struct pollfd){.fd = c->fd, .events = c->phase == C_ENDED ? 0 : POLLIN};
            }
        }
        pthread_mutex_unlock(&r->lock);
        /* Only this thread adds or frees connections, so the snapshot stays valid. */
        int ready = k ? poll(fds, k, 50) : (ts_sleep_ms(50), 0);
        pthread_mutex_lock(&r->lock);
        if (ready > 0) {
            if (fds[0].revents & POLLIN) accept_all(r);
            for (size_t i = 1; i < k; i++)
                if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) on_readable(r, owners[i]);
        }
        sweep(r);
        pthread_mutex_unlock(&r->lock);
    }
    free(fds);
    free(owners);
    return NULL;
}

/* ------------------------------------------------------------------ API */

int ts_kvx_receiver_open(const ts_engine *e, const ts_kvx_receiver_options *opts,
                         ts_kvx_receiver **out) {
    *out = NULL;
    ts_kvx_receiver *r = calloc(1, sizeof *r);
    if (!r) return ts_error_set(TS_E_NOMEM, "out of memory");
    const ts_llama_hparams *hp = ts_engine_hparams(e);
    const ts_shard_plan *sh = ts_engine_shard(e);
    const ts_engine_options *eo = ts_engine_options_get(e);
    r->n_layers = hp->n_layers;
    r->head_dim = hp->head_dim;
    r->block_size = eo->block_size;
    r->dtype = eo->kv_type;
    r->own_head0 = sh->kv_head0;
    r->own_heads = sh->n_kv_heads;
    r->max_blocks = ts_engine_n_blocks(e);
    r->rank = sh->rank;
    r->size = sh->size;
    r->head_bytes =
        (size_t)r->block_size * (size_t)r->head_dim * (size_t)ts_dtype_block_bytes(r->dtype);
    r->opts = *opts;
    r->opts.listen = NULL;
    r->opts.advertise_host = NULL;
    if (r->opts.timeout_ms <= 0) r->opts.timeout_ms = 30000;
    if (r->opts.max_staging_bytes == 0) r->opts.max_staging_bytes = (size_t)1 << 30;
    r->listen_fd = -1;
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    char host[256];
    int port;
    int rc = kvx_listen(opts->listen ? opts->listen : "0.0.0.0:0", &r->listen_fd, host, sizeof host,
                        &port);
    if (!rc) {
        if (opts->advertise_host)
            snprintf(host, sizeof host, "%s", opts->advertise_host);
        else if (!strcmp(host, "0.0.0.0") || !strcmp(host, "::"))
            gethostname(host, sizeof host);
        host[sizeof host - 1] = 0;
        snprintf(r->endpoint, sizeof r->endpoint, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host,
                 port);
        if (pthread_create(&r->thread, NULL, receiver_thread, r) != 0)
            rc = ts_error_set(TS_E_INTERNAL, "cannot start the KV receiver thread");
        else
            r->thread_started = true;
    }
    if (rc) {
        ts_kvx_receiver_close(r);
        return rc;
    }
    *out = r;
    return TS_OK;
}

void ts_kvx_receiver_close(ts_kvx_receiver *r) {
    if (!r) return;
    if (r->thread_started) {
        pthread_mutex_lock(&r->lock);
        r->stop = true;
        pthread_mutex_unlock(&r->lock);
        pthread_join(r->thread, NULL);
    }
    while (r->conns) {
        conn *c = r->conns;
        r->conns = c->next;
        close(c->fd);
        free(c->payload);
        free(c->seen);
        free(c);
    }
    while (r->transfers) {
        transfer *t = r->transfers;
        r->transfers = t->next;
        free(t->staging);
        free(t->head_covered);
        free(t);
    }
    if (r->listen_fd >= 0) close(r->listen_fd);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->cond);
    free(r);
}

const char *ts_kvx_receiver_endpoint(const ts_kvx_receiver *r) {
    return r->endpoint;
}

int ts_kvx_receiver_wait(ts_kvx_receiver *r, uint64_t request_id, int timeout_ms) {
    int64_t deadline = ts_now_ns() + (int64_t)timeout_ms * 1000000;
    pthread_mutex_lock(&r->lock);
    for (;;) {
        transfer *t = find(r, request_id);
        if (t && t->state == COMPLETE) {
            pthread_mutex_unlock(&r->lock);
            return TS_OK;
        }
        if (t && t->state == FAILED && !t->collected) {
            t->collected = true;
            int rc = ts_error_set(t->code, "%s", t->message);
            pthread_mutex_unlock(&r->lock);
            return rc;
        }
        int64_t now = ts_now_ns();
        if (timeout_ms >= 0 && now >= deadline) {
            int rc =
                ts_error_set(TS_E_TIMEOUT, "request %llu: KV transfer not complete after %d ms",
                             (unsigned long long)request_id, timeout_ms);
            pthread_mutex_unlock(&r->lock);
            return rc;
        }
        /* Wake at least every 100 ms: simple, and immune to clock questions. */
        int64_t wait_ns =
            timeout_ms >= 0 && deadline - now < 100000000 ? deadline - now : 100000000;
        struct timespec ts;
        kvx_timespec_after(wait_ns, &ts);
        pthread_cond_timedwait(&r->cond, &r->lock, &ts);
    }
}

int ts_kvx_receiver_status(ts_kvx_receiver *r, uint64_t request_id) {
    pthread_mutex_lock(&r->lock);
    transfer *t = find(r, request_id);
    int rc = !t || t->state == RECEIVING
                 ? ts_error_set(TS_E_TIMEOUT, "request %llu: KV transfer not complete yet",
                                (unsigned long long)request_id)
             : t->state == FAILED ? ts_error_set(t->code, "%s", t->message)
                                  : TS_OK;
    pthread_mutex_unlock(&r->lock);
    return rc;
}

/* Takes a complete transfer out of the table (the caller owns it), or fails. */
static int detach_complete(ts_kvx_receiver *r, uint64_t id, transfer **out) {
    for (transfer **pp = &r->transfers; *pp; pp = &(*pp)->next) {
        transfer *t = *pp;
        if (t->id != id) continue;
        if (t->state != COMPLETE) break;
        *pp = t->next;
        *out = t;
        return TS_OK;
    }
    return ts_error_set(TS_E_NOT_FOUND, "request %llu: no complete KV transfer",
                        (unsigned long long)id);
}

static void reattach(ts_kvx_receiver *r, transfer *t) {
    pthread_mutex_lock(&r->lock);
    t->next = r->transfers;
    r->transfers = t;
    pthread_mutex_unlock(&r->lock);
}

int ts_kvx_receiver_install(ts_kvx_receiver *r, ts_engine *e, uint64_t request_id,
                            const int32_t *block_ids, int32_t n_blocks) {
    transfer *t = NULL;
    pthread_mutex_lock(&r->lock);
    int rc = detach_complete(r, request_id, &t);
    pthread_mutex_unlock(&r->lock);
    if (rc) return rc;
    if ((uint32_t)n_blocks != t->n_blocks) {
        reattach(r, t);
        return ts_error_set(TS_E_INVALID, "request %llu: %d block ids for a transfer of %u blocks",
                            (unsigned long long)request_id, n_blocks, t->n_blocks);
    }
    size_t pool = (size_t)t->n_blocks * (size_t)r->own_heads * r->head_bytes;
    for (int32_t l = 0; !rc && l < r->n_layers; l++) {
        const uint8_t *k = t->staging + (size_t)l * 2 * pool;
        rc = ts_engine_kv_write(e, l, block_ids, n_blocks, 0, r->own_heads, k, k + pool);
    }
    if (rc) { /* only a bad block id fails, and then before writing anything */
        reattach(r, t);
        return ts_error_wrap(rc, "request %llu: installing the KV cache",
                             (unsigned long long)request_id);
    }
    pthread_mutex_lock(&r->lock);
    free_staging(r, t);
    pthread_mutex_unlock(&r->lock);
    free(t);
    return TS_OK;
}

int ts_kvx_receiver_geometry(ts_kvx_receiver *r, uint64_t request_id, int32_t *n_tokens,
                             int32_t *n_blocks) {
    pthread_mutex_lock(&r->lock);
    transfer *t = find(r, request_id);
    int rc = TS_OK;
    if (t && t->state == COMPLETE) {
        *n_tokens = (int32_t)t->n_tokens;
        *n_blocks = (int32_t)t->n_blocks;
    } else {
        rc = ts_error_set(TS_E_NOT_FOUND, "request %llu: no complete KV transfer",
                          (unsigned long long)request_id);
    }
    pthread_mutex_unlock(&r->lock);
    return rc;
}

int ts_kvx_receiver_claim(ts_kvx_receiver *r, ts_engine *e, ts_kv_pool *pool, uint64_t request_id,
                          int32_t *block_ids, int32_t max_blocks, int32_t *n_blocks) {
    int32_t n_tokens = 0, n = 0;
    int rc = ts_kvx_receiver_geometry(r, request_id, &n_tokens, &n);
    if (rc) return rc;
    if (n > max_blocks)
        return ts_error_set(TS_E_INVALID, "request %llu: %d blocks, room for %d ids",
                            (unsigned long long)request_id, n, max_blocks);
    if (ts_kv_pool_n_free(pool) < n) return TS_E_EXHAUSTED;
    for (int32_t i = 0; i < n; i++) {
        rc = ts_kv_pool_alloc(pool, &block_ids[i]);
        if (rc) {
            while (i-- > 0)
                ts_kv_pool_release(pool, block_ids[i]);
            return rc;
        }
    }
    rc = ts_kvx_receiver_install(r, e, request_id, block_ids, n);
    if (rc) {
        for (int32_t i = 0; i < n; i++)
            ts_kv_pool_release(pool, block_ids[i]);
        return rc;
    }
    *n_blocks = n;
    return TS_OK;
}

int ts_kvx_receiver_drop(ts_kvx_receiver *r, uint64_t request_id) {
    pthread_mutex_lock(&r->lock);
    transfer *t = find(r, request_id);
    int rc = TS_OK;
    if (!t) {
        rc = ts_error_set(TS_E_NOT_FOUND, "request %llu: no KV transfer",
                          (unsigned long long)request_id);
    } else if (t->state == FAILED) {
        t->collected = true;
    } else {
        fail(r, t, TS_E_CANCELLED, "cancelled on the decode side");
        /* Keep the tombstone (not collected): a late sender for this id is refused. */
    }
    pthread_mutex_unlock(&r->lock);
    return rc;
}

void ts_kvx_receiver_get_stats(ts_kvx_receiver *r, ts_kvx_receiver_stats *out) {
    *out = (ts_kvx_receiver_stats){0};
    pthread_mutex_lock(&r->lock);
    for (transfer *t = r->transfers; t; t = t->next) {
        out->n_receiving += t->state == RECEIVING;
        out->n_complete += t->state == COMPLETE;
    }
    for (conn *c = r->conns; c; c = c->next)
        out->n_connections++;
    out->staging_bytes = r->staging_bytes;
    out->transfers_ok = r->transfers_ok;
    out->transfers_failed = r->transfers_failed;
    out->bytes_received = r->bytes_received;
    pthread_mutex_unlock(&r->lock);
}
