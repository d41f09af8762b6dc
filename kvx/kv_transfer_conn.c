/*
 * kv_transfer_conn.c — the KV receiver's transfers and per-connection state machine (transfer
 * header, then frame header / payload pairs until the end frame), run by the receiver's I/O
 * thread with the lock held. See kv_transfer_recv.c for the design.
 *
 * NCCL connections (kv_transfer_nccl.h): the header is answered with the link message and the
 * link starts joining; a block frame header posts the frame's two receives into the device
 * staging, then its checksum, on the link's stream, and the connection reads on (no payload
 * on the socket). kvx_nccl_progress, run at every sweep, compares the landed frames' checksums
 * with the frame headers' and counts the end frame once every frame before it checked out.
 */
#include "kvx/kv_transfer_recv_impl.h"

#include "common/clock.h"
#include "common/error.h"
#include "common/log.h"
#include "kvx/kv_transfer_net.h"

#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ------------------------------------------------------------------ transfers */

transfer *kvx_find(ts_kvx_receiver *r, uint64_t id) {
    for (transfer *t = r->transfers; t; t = t->next)
        if (t->id == id) return t;
    return NULL;
}

void kvx_free_staging(ts_kvx_receiver *r, transfer *t) {
    r->staging_bytes -= t->staging_bytes;
    if (t->transport == TS_KVX_NCCL) {
        /* Nothing may still land in it: end the links that receive into it first. */
        for (conn *c = r->conns; c; c = c->next)
            if (c->t == t && c->link) {
                kvx_link_close(c->link);
                c->link = NULL;
            }
        kvx_device_free(r->device, t->staging);
    } else {
        free(t->staging);
    }
    t->staging = NULL;
    t->staging_bytes = 0;
    free(t->head_covered);
    t->head_covered = NULL;
}

/* Fails t: staging freed now; its connections are told and closed at the next sweep. */
void kvx_fail(ts_kvx_receiver *r, transfer *t, int code, const char *fmt, ...) {
    if (t->state == FAILED) return;
    va_list ap;
    va_start(ap, fmt);
    char text[TS_KVX_MAX_MESSAGE + 1];
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    snprintf(t->message, sizeof t->message, "request %llu: %s", (unsigned long long)t->id, text);
    t->state = FAILED;
    t->code = code;
    kvx_free_staging(r, t);
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
    t->transport = h->transport;
    if (bytes) {
        if (h->transport == TS_KVX_NCCL) {
            void *dev = NULL;
            if (kvx_device_alloc(r->device, bytes, &dev) == TS_OK) t->staging = dev;
        } else {
            t->staging = malloc(bytes);
        }
        t->head_covered = calloc((size_t)r->own_heads, sizeof *t->head_covered);
        if (!t->staging || !t->head_covered) {
            if (h->transport == TS_KVX_NCCL)
                kvx_device_free(r->device, t->staging);
            else
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

/* NCCL: the link for this connection; its unique id goes back to the sender at once (a small
 * message into the idle socket's buffer), and the join goes on without waiting. */
static int start_link(ts_kvx_receiver *r, conn *c, uint32_t n_frames) {
    uint8_t id[KVX_LINK_ID_BYTES], msg[TS_KVX_STATUS_BYTES + KVX_LINK_ID_BYTES];
    int rc = kvx_link_accept(r->device, n_frames, id, &c->link);
    if (rc) return rc;
    size_t n = kvx_link_message_encode(id, sizeof id, msg);
    ssize_t w = send(c->fd, msg, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w != (ssize_t)n)
        return ts_error_set(TS_E_UNAVAILABLE, "could not send the NCCL link message (%s)",
                            w < 0 ? strerror(errno) : "short write");
    return TS_OK;
}

/* Checks a transfer header against this rank and attaches the connection to its transfer. */
static void on_header(ts_kvx_receiver *r, conn *c) {
    ts_kvx_header *h = &c->h;
    if (ts_kvx_header_decode(c->head, h) != TS_OK) {
        reject(c, TS_E_FORMAT, "%s", ts_error_message());
        return;
    }
    transfer *t = kvx_find(r, h->request_id);
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
    else if (t && t->transport != h->transport)
        snprintf(why, sizeof why, "over %s, another prefill rank sends over %s",
                 ts_kvx_transport_name(h->transport), ts_kvx_transport_name(t->transport));
    size_t bytes =
        (size_t)r->n_layers * 2 * (size_t)h->n_blocks * (size_t)r->own_heads * r->head_bytes;
    int code = TS_E_INVALID;
    if (!why[0] && h->transport == TS_KVX_NCCL && !r->nccl) {
        snprintf(why, sizeof why, "%s", r->nccl_why);
        code = TS_E_UNSUPPORTED;
    }
    if (!why[0] && !t && r->staging_bytes + bytes > r->opts.max_staging_bytes) {
        snprintf(why, sizeof why, "KV staging full (%zu + %zu bytes > %zu)", r->staging_bytes,
                 bytes, r->opts.max_staging_bytes);
        code = TS_E_EXHAUSTED;
    }
    if (!t) {
        t = new_transfer(r, h, why[0] ? 0 : bytes);
        if (!t) {
            reject(c, TS_E_NOMEM, "request %llu: out of %s memory for %zu bytes of KV staging",
                   (unsigned long long)h->request_id,
                   h->transport == TS_KVX_NCCL ? "device" : "host", bytes);
            return;
        }
    }
    if (why[0]) {
        /* A bad part spoils a transfer in progress, and a refused new one is remembered as
         * failed so that its owner learns why; a finished one is left alone. */
        if (t->state == RECEIVING) kvx_fail(r, t, code, "%s", why);
        reject(c, t->state == FAILED ? t->code : code, "request %llu: %s",
               (unsigned long long)h->request_id, why);
        return;
    }
    for (uint32_t k = 0; k < h->n_kv_heads; k++)
        if (t->head_covered[h->kv_head0 - (uint32_t)r->own_head0 + k]) {
            kvx_fail(r, t, TS_E_INVALID, "KV head %u sent twice", h->kv_head0 + k);
            reject(c, TS_E_INVALID, "%s", t->message);
            return;
        }
    c->payload_bytes = ts_kvx_block_payload_bytes(h);
    size_t total = (size_t)h->n_layers * h->n_blocks;
    c->seen = calloc(total, 1);
    if (h->transport == TS_KVX_NCCL) {
        c->expect = calloc(total, sizeof *c->expect);
        c->slot_frame = calloc(total, sizeof *c->slot_frame);
    } else {
        c->payload = malloc(c->payload_bytes);
    }
    if (!c->seen || (h->transport == TS_KVX_NCCL ? !c->expect || !c->slot_frame : !c->payload)) {
        kvx_fail(r, t, TS_E_NOMEM, "out of memory");
        reject(c, TS_E_NOMEM, "%s", t->message);
        return;
    }
    int lrc = h->transport == TS_KVX_NCCL ? start_link(r, c, (uint32_t)total) : TS_OK;
    if (lrc) {
        kvx_fail(r, t, lrc, "NCCL link: %s", ts_error_message());
        reject(c, lrc, "%s", t->message);
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

/* Where a frame's K and V go in the staging: per layer K then V, each
 * [n_blocks][own heads][block_size][head_dim]; the connection's heads inside a block. */
static void staging_dst(ts_kvx_receiver *r, conn *c, uint8_t **k, uint8_t **v) {
    transfer *t = c->t;
    size_t pool = (size_t)t->n_blocks * (size_t)r->own_heads * r->head_bytes;
    size_t off = (size_t)c->f.block * (size_t)r->own_heads * r->head_bytes +
                 (size_t)(c->h.kv_head0 - (uint32_t)r->own_head0) * r->head_bytes;
    *k = t->staging + (size_t)c->f.layer * 2 * pool + off;
    *v = *k + pool;
}

/* NCCL: the frame's receives into the device staging and its checksum, on the link's stream.
 * The sender posted the matching sends before it wrote this header. */
static void post_nccl_frame(ts_kvx_receiver *r, conn *c) {
    transfer *t = c->t;
    const ts_kvx_frame *f = &c->f;
    int64_t deadline = ts_now_ns() + (int64_t)r->opts.timeout_ms * 1000000;
    int rc;
    /* A sender writes frames only after its own join completed, so ours is done or nearly. */
    while ((rc = kvx_link_poll_init(c->link)) == 1 && ts_now_ns() < deadline)
        sched_yield();
    uint8_t *k, *v;
    staging_dst(r, c, &k, &v);
    if (!rc) rc = kvx_link_recv(c->link, k, v, c->payload_bytes / 2, c->n_posted);
    if (rc) {
        kvx_fail(r, t, rc == 1 ? TS_E_TIMEOUT : rc, "NCCL link to prefill rank %u: %s",
                 c->h.src_rank, rc == 1 ? "not joined in time" : ts_error_message());
        return;
    }
    c->expect[c->n_posted] = f->payload_crc;
    c->slot_frame[c->n_posted] = f->layer * c->h.n_blocks + f->block;
    c->n_posted++;
    c->seen[(size_t)f->layer * c->h.n_blocks + f->block] = 1;
    c->need = TS_KVX_FRAME_BYTES;
    c->got = 0;
}

void kvx_nccl_progress(ts_kvx_receiver *r) {
    for (conn *c = r->conns; c; c = c->next) {
        transfer *t = c->t;
        if (!c->link || !t || t->state != RECEIVING || c->close_now) continue;
        bool end_pending = c->end_seen && c->phase == C_ENDED;
        if (c->n_frames == c->n_posted && !end_pending) continue;
        const uint32_t *sums = NULL;
        int st = kvx_link_poll_sums(c->link, &sums);
        if (st < 0) {
            kvx_fail(r, t, st, "NCCL link to prefill rank %u: %s", c->h.src_rank,
                     ts_error_message());
            continue;
        }
        if (st == 0) continue;
        for (; c->n_frames < c->n_posted; c->n_frames++) {
            uint32_t fr = c->slot_frame[c->n_frames];
            if (sums[c->n_frames] != c->expect[c->n_frames]) {
                kvx_fail(r, t, TS_E_FORMAT,
                         "layer %u block %u from prefill rank %u: checksum mismatch (NCCL)",
                         fr / c->h.n_blocks, fr % c->h.n_blocks, c->h.src_rank);
                break;
            }
            t->bytes += (int64_t)c->payload_bytes;
        }
        if (t->state != RECEIVING) continue;
        if (end_pending && c->n_frames == c->h.n_layers * c->h.n_blocks) {
            c->end_seen = false; /* counted */
            t->n_ended++;
            maybe_complete(r, t);
        }
    }
}

static void on_frame(ts_kvx_receiver *r, conn *c) {
    transfer *t = c->t;
    ts_kvx_frame *f = &c->f;
    if (ts_kvx_frame_decode(c->head, f) != TS_OK) {
        kvx_fail(r, t, TS_E_FORMAT, "from prefill rank %u: %s", c->h.src_rank, ts_error_message());
        return;
    }
    uint32_t total = c->h.n_layers * c->h.n_blocks;
    if (f->kind == TS_KVX_FRAME_END) {
        uint32_t got = c->link ? c->n_posted : c->n_frames;
        if (f->block != got || got != total) {
            kvx_fail(r, t, TS_E_FORMAT, "prefill rank %u ended after %u of %u blocks (it says %u)",
                     c->h.src_rank, got, total, f->block);
            return;
        }
        c->phase = C_ENDED;
        if (c->link) { /* counted once its frames' checksums are in (kvx_nccl_progress) */
            c->end_seen = true;
            return;
        }
        t->n_ended++;
        maybe_complete(r, t);
        return;
    }
    if (f->layer >= c->h.n_layers || f->block >= c->h.n_blocks) {
        kvx_fail(r, t, TS_E_FORMAT, "frame for layer %u block %u outside %u x %u", f->layer,
                 f->block, c->h.n_layers, c->h.n_blocks);
        return;
    }
    if (f->payload_bytes != c->payload_bytes) {
        kvx_fail(r, t, TS_E_FORMAT, "layer %u block %u: %u payload bytes, expected %zu", f->layer,
                 f->block, f->payload_bytes, c->payload_bytes);
        return;
    }
    if (c->seen[(size_t)f->layer * c->h.n_blocks + f->block]) {
        kvx_fail(r, t, TS_E_FORMAT, "layer %u block %u sent twice", f->layer, f->block);
        return;
    }
    if (c->link) {
        post_nccl_frame(r, c);
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
        kvx_fail(r, t, TS_E_FORMAT, "layer %u block %u from prefill rank %u: checksum mismatch",
                 f->layer, f->block, c->h.src_rank);
        return;
    }
    size_t part = c->payload_bytes / 2; /* K, then V */
    uint8_t *k, *v;
    staging_dst(r, c, &k, &v);
    memcpy(k, c->payload, part);
    memcpy(v, c->payload + part, part);
    c->seen[(size_t)f->layer * c->h.n_blocks + f->block] = 1;
    c->n_frames++;
    t->bytes += (int64_t)c->payload_bytes;
    c->phase = C_FRAME;
    c->need = TS_KVX_FRAME_BYTES;
    c->got = 0;
}

/* Reads what the socket has; runs the state machine on every complete piece. */
void kvx_on_readable(ts_kvx_receiver *r, conn *c) {
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
                kvx_fail(r, c->t, TS_E_UNAVAILABLE,
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
void kvx_sweep(ts_kvx_receiver *r) {
    kvx_nccl_progress(r);
    int64_t now = ts_now_ns(), timeout = (int64_t)r->opts.timeout_ms * 1000000;
    for (conn *c = r->conns; c; c = c->next) {
        if (c->close_now || c->phase >= C_ENDED || now - c->last_ns <= timeout) continue;
        if (c->t)
            kvx_fail(r, c->t, TS_E_TIMEOUT, "no data from prefill rank %u for %d ms", c->h.src_rank,
                     r->opts.timeout_ms);
        else
            reject(c, TS_E_TIMEOUT, "no transfer header in %d ms", r->opts.timeout_ms);
    }
    for (transfer *t = r->transfers; t; t = t->next)
        if (t->state == RECEIVING && now - t->last_ns > timeout)
            kvx_fail(r, t, TS_E_TIMEOUT, "%d of %d KV heads arrived in time (%d ms)", t->n_covered,
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
            /* A failed transfer's link is aborted already (or now, for a connection refused
             * before it attached). An accepted one keeps its link until the sender closes
             * (the drain below; the link goes in kvx_conn_free): every frame landed here, but
             * the sender's last sends may complete a moment later, and an abort before that
             * could leave them hanging. */
            if (!ok) {
                kvx_link_close(c->link);
                c->link = NULL;
            }
            if (c->t) c->t->n_conns--;
            c->t = NULL;
            c->close_now = false;
            done = ok && !c->link;
            if (!done) { /* the sender may still be sending: drain before closing */
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
        *pp = c->next;
        kvx_conn_free(c);
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

void kvx_conn_free(conn *c) {
    kvx_link_close(c->link);
    close(c->fd);
    free(c->payload);
    free(c->seen);
    free(c->expect);
    free(c->slot_frame);
    free(c);
}

void kvx_accept_all(ts_kvx_receiver *r) {
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
