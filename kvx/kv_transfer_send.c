/*
 * kv_transfer_send.c — the prefill side of the KV transfer (see kv_transfer.h).
 *
 * send_layer runs on the engine thread: it copies the layer's blocks out of the backend into
 * ready-to-send frames and queues them. One I/O thread per sender writes the queue to the
 * connections in order, so the engine goes on with the next layer while the network works.
 * After the end frames the thread reads each receiver's status. The first error stops the
 * thread, and the connections are closed at destroy, which the receivers see as a broken
 * transfer and clean up after.
 *
 * NCCL (kv_transfer_nccl.h): open joins each connection's communicator after its header; in
 * send_layer the engine thread computes the blocks' checksums on the device, posts their K and
 * V as ncclSend on the connection's stream, and only then queues the frame headers, so a frame
 * header never reaches a receiver before its payload's sends are posted (the receiver posts
 * the matching receives when it reads the header). The I/O thread writes headers and reads
 * statuses only; every NCCL and CUDA call stays on the engine thread.
 */
#include "kvx/kv_transfer.h"

#include "common/clock.h"
#include "common/error.h"
#include "common/kv_geometry.h"
#include "kvx/kv_layout.h"
#include "kvx/kv_transfer_nccl.h"
#include "kvx/kv_transfer_net.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct item {
    struct item *next;
    int conn;     /* index into conns; -1: the finish marker */
    size_t bytes; /* of data */
    uint8_t data[];
} item;

typedef struct conn {
    int fd;
    ts_kv_route route;
    ts_kvx_header header;
    int32_t local_head0; /* route's first head on this rank */
    uint32_t frames;     /* block frames queued */
    char peer[128];
    kvx_link *link; /* NCCL: this connection's communicator */
} conn;

struct ts_kvx_sender {
    ts_engine *engine;
    ts_kvx_sender_options opts;
    conn *conns;
    int n_conns;
    size_t head_bytes; /* one head of one block in one pool */
    uint32_t *sums;    /* NCCL: one send_layer's block checksums */

    pthread_mutex_t lock;
    pthread_cond_t cond;
    item *head, *tail;
    bool thread_started, done, finishing, stop;
    int error;
    char message[512];
    int64_t bytes;
    pthread_t thread;
};

static void fail_locked(ts_kvx_sender *s, int code, const char *message) {
    if (s->error) return;
    s->error = code;
    snprintf(s->message, sizeof s->message, "%s", message);
}

static void *sender_thread(void *arg) {
    ts_kvx_sender *s = arg;
    int timeout = s->opts.timeout_ms;
    for (;;) {
        pthread_mutex_lock(&s->lock);
        while (!s->head && !s->stop)
            pthread_cond_wait(&s->cond, &s->lock);
        if (!s->head) { /* destroyed before finish */
            s->done = true;
            pthread_mutex_unlock(&s->lock);
            return NULL;
        }
        item *it = s->head;
        s->head = it->next;
        if (!s->head) s->tail = NULL;
        int failed = s->error;
        pthread_mutex_unlock(&s->lock);
        if (it->conn < 0) { /* finish marker: collect every receiver's verdict */
            free(it);
            for (int i = 0; !failed && i < s->n_conns; i++) {
                int code = 0;
                char text[TS_KVX_MAX_MESSAGE + 1] = "";
                int rc = kvx_status_read(s->conns[i].fd, timeout, s->conns[i].peer, &code, text,
                                         sizeof text);
                pthread_mutex_lock(&s->lock);
                if (rc)
                    fail_locked(s, rc, ts_error_message());
                else if (code) {
                    char m[512];
                    snprintf(m, sizeof m, "KV receiver %s refused the transfer: %s",
                             s->conns[i].peer, text);
                    fail_locked(s, code, m);
                }
                failed = s->error;
                pthread_mutex_unlock(&s->lock);
            }
            pthread_mutex_lock(&s->lock);
            s->done = true;
            pthread_cond_broadcast(&s->cond);
            pthread_mutex_unlock(&s->lock);
            return NULL;
        }
        if (!failed) {
            conn *c = &s->conns[it->conn];
            int rc = kvx_write_all(c->fd, it->data, it->bytes, timeout, c->peer);
            if (rc) {
                /* The receiver usually says why it hung up: prefer its words. */
                int code = 0;
                char text[TS_KVX_MAX_MESSAGE + 1] = "", m[512];
                snprintf(m, sizeof m, "%s", ts_error_message());
                if (kvx_status_read(c->fd, 200, c->peer, &code, text, sizeof text) == 0 && code) {
                    snprintf(m, sizeof m, "KV receiver %s refused the transfer: %s", c->peer, text);
                    rc = code;
                }
                pthread_mutex_lock(&s->lock);
                fail_locked(s, rc, m);
                pthread_mutex_unlock(&s->lock);
            }
        }
        free(it);
    }
}

static void append_locked(ts_kvx_sender *s, item *it) {
    it->next = NULL;
    if (s->tail)
        s->tail->next = it;
    else
        s->head = it;
    s->tail = it;
    s->bytes += (int64_t)it->bytes;
    pthread_cond_signal(&s->cond);
}

static int enqueue(ts_kvx_sender *s, item *it) {
    pthread_mutex_lock(&s->lock);
    int rc = s->error;
    if (!rc) append_locked(s, it);
    pthread_mutex_unlock(&s->lock);
    if (rc) {
        free(it);
        pthread_mutex_lock(&s->lock);
        rc = ts_error_set(s->error, "%s", s->message);
        pthread_mutex_unlock(&s->lock);
    }
    return rc;
}

/* NCCL: the receiver's answer to the header (its unique id, or a refusal), then the join. */
static int join_link(ts_kvx_sender *s, conn *c, int32_t n_blocks) {
    uint8_t id[KVX_LINK_ID_BYTES];
    int code = 0;
    char text[TS_KVX_MAX_MESSAGE + 1] = "";
    int rc = kvx_link_message_read(c->fd, s->opts.timeout_ms, c->peer, id, sizeof id, &code, text,
                                   sizeof text);
    if (!rc && code)
        return ts_error_set(code, "KV receiver %s refused the transfer: %s", c->peer, text);
    if (!rc)
        rc = kvx_link_connect(ts_engine_backend(s->engine)->device_index, id, (uint32_t)n_blocks,
                              s->opts.timeout_ms, &c->link);
    return rc ? ts_error_wrap(rc, "KV receiver %s", c->peer) : TS_OK;
}

int ts_kvx_sender_open(ts_engine *e, const ts_kvx_sender_options *opts, ts_kvx_sender **out) {
    *out = NULL;
    const ts_model_hparams *hp = ts_engine_hparams(e);
    const ts_shard_plan *sh = ts_engine_shard(e);
    const ts_engine_options *eo = ts_engine_options_get(e);
    int32_t max_blocks = ts_engine_n_blocks(e);
    if (opts->n_tokens < 1 || opts->n_tokens > eo->max_ctx)
        return ts_error_set(TS_E_INVALID, "KV transfer of %d tokens (context %d)", opts->n_tokens,
                            eo->max_ctx);
    if (opts->dst_size < 1 || opts->dst_size > 65535 || !opts->dst_endpoints)
        return ts_error_set(TS_E_INVALID, "KV transfer to a decode group of %d ranks",
                            opts->dst_size);
    if (opts->transport != TS_KVX_TCP && opts->transport != TS_KVX_NCCL)
        return ts_error_set(TS_E_INVALID, "KV transport %d", (int)opts->transport);
    if (opts->transport == TS_KVX_NCCL) {
        int rc = ts_kvx_nccl_supported(e);
        if (rc) return rc;
    }
    int max_routes = ts_kv_routes_max(hp->n_kv_heads, opts->dst_size);
    ts_kv_route *routes = calloc((size_t)max_routes, sizeof *routes);
    ts_kvx_sender *s = calloc(1, sizeof *s);
    if (!routes || !s) {
        free(routes);
        free(s);
        return ts_error_set(TS_E_NOMEM, "out of memory");
    }
    s->engine = e;
    s->opts = *opts;
    s->opts.dst_endpoints = NULL; /* not kept: only used here */
    if (s->opts.timeout_ms <= 0) s->opts.timeout_ms = 30000;
    s->head_bytes = ts_kv_block_bytes(eo->kv_type, eo->block_size, hp->head_dim, 1);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    int n_routes = 0;
    int rc = ts_kv_routes(hp->n_kv_heads, sh->size, opts->dst_size, routes, max_routes, &n_routes);
    if (!rc) s->conns = calloc((size_t)n_routes + 1, sizeof *s->conns);
    if (!rc && !s->conns) rc = ts_error_set(TS_E_NOMEM, "out of memory");
    int32_t n_blocks = (opts->n_tokens + eo->block_size - 1) / eo->block_size;
    if (!rc && n_blocks > max_blocks)
        rc = ts_error_set(TS_E_INVALID, "KV transfer of %d blocks, pool of %d", n_blocks,
                          max_blocks);
    if (!rc && opts->transport == TS_KVX_NCCL) {
        s->sums = calloc((size_t)n_blocks, sizeof *s->sums);
        if (!s->sums) rc = ts_error_set(TS_E_NOMEM, "out of memory");
    }
    for (int i = 0; !rc && i < n_routes; i++) {
        if (routes[i].src_rank != sh->rank) continue;
        conn *c = &s->conns[s->n_conns];
        c->fd = -1;
        c->route = routes[i];
        c->local_head0 = routes[i].kv_head0 - sh->kv_head0;
        const char *ep = opts->dst_endpoints[routes[i].dst_rank];
        snprintf(c->peer, sizeof c->peer, "%s", ep ? ep : "(none)");
        c->header = (ts_kvx_header){.request_id = opts->request_id,
                                    .fingerprint = opts->fingerprint,
                                    .n_layers = (uint32_t)hp->n_layers,
                                    .n_tokens = (uint32_t)opts->n_tokens,
                                    .block_size = (uint32_t)eo->block_size,
                                    .n_blocks = (uint32_t)n_blocks,
                                    .head_dim = (uint32_t)hp->head_dim,
                                    .dtype = (uint32_t)eo->kv_type,
                                    .kv_head0 = (uint32_t)routes[i].kv_head0,
                                    .n_kv_heads = (uint32_t)routes[i].n_kv_heads,
                                    .src_rank = (uint16_t)sh->rank,
                                    .src_size = (uint16_t)sh->size,
                                    .dst_rank = (uint16_t)routes[i].dst_rank,
                                    .dst_size = (uint16_t)opts->dst_size,
                                    .transport = (uint16_t)opts->transport};
        s->n_conns++;
        rc = kvx_connect(c->peer, s->opts.timeout_ms, &c->fd);
        if (!rc) {
            uint8_t buf[TS_KVX_HEADER_BYTES];
            ts_kvx_header_encode(&c->header, buf);
            rc = kvx_write_all(c->fd, buf, sizeof buf, s->opts.timeout_ms, c->peer);
        }
        if (!rc && opts->transport == TS_KVX_NCCL) rc = join_link(s, c, n_blocks);
        if (rc) rc = ts_error_wrap(rc, "request %llu", (unsigned long long)opts->request_id);
    }
    free(routes);
    if (!rc) {
        if (pthread_create(&s->thread, NULL, sender_thread, s) != 0)
            rc = ts_error_set(TS_E_INTERNAL, "cannot start the KV sender thread");
        else
            s->thread_started = true;
    }
    if (rc) {
        ts_kvx_sender_destroy(s);
        return rc;
    }
    *out = s;
    return TS_OK;
}

static bool sender_failed(void *user) {
    ts_kvx_sender *s = user;
    pthread_mutex_lock(&s->lock);
    bool failed = s->error != 0;
    pthread_mutex_unlock(&s->lock);
    return failed;
}

/* NCCL: checksums and sends of the blocks (posted before their frame headers are queued). */
static int send_layer_nccl(ts_kvx_sender *s, conn *c, int32_t layer, const int32_t *block_table,
                           int32_t first, int32_t n, size_t part) {
    if (sender_failed(s)) { /* nothing more goes out on a failed transfer's links */
        pthread_mutex_lock(&s->lock);
        int code = ts_error_set(s->error, "%s", s->message);
        pthread_mutex_unlock(&s->lock);
        return code;
    }
    int rc = kvx_link_send_blocks(c->link, s->engine, layer, block_table + first, n, c->local_head0,
                                  (int32_t)c->header.n_kv_heads, s->sums);
    if (rc) { /* the sends are in an unknown state: the transfer is over */
        pthread_mutex_lock(&s->lock);
        fail_locked(s, rc, ts_error_message());
        pthread_mutex_unlock(&s->lock);
        return rc;
    }
    for (int32_t b = 0; !rc && b < n; b++) {
        item *it = malloc(sizeof *it + TS_KVX_FRAME_BYTES);
        if (!it) return ts_error_set(TS_E_NOMEM, "out of memory");
        it->conn = (int)(c - s->conns);
        it->bytes = TS_KVX_FRAME_BYTES;
        ts_kvx_frame f = {TS_KVX_FRAME_BLOCK, (uint32_t)layer, (uint32_t)(first + b),
                          (uint32_t)(2 * part), s->sums[b]};
        ts_kvx_frame_encode(&f, it->data);
        rc = enqueue(s, it);
        if (!rc) {
            c->frames++;
            pthread_mutex_lock(&s->lock);
            s->bytes += (int64_t)(2 * part);
            pthread_mutex_unlock(&s->lock);
        }
    }
    return rc;
}

int ts_kvx_sender_send_layer(ts_kvx_sender *s, int32_t layer, const int32_t *block_table,
                             int32_t first, int32_t n) {
    if (s->finishing) return ts_error_set(TS_E_INVALID, "KV sender already ended");
    for (int i = 0; i < s->n_conns; i++) {
        conn *c = &s->conns[i];
        if (first < 0 || n < 0 || (uint32_t)first + (uint32_t)n > c->header.n_blocks || layer < 0 ||
            (uint32_t)layer >= c->header.n_layers)
            return ts_error_set(TS_E_INVALID, "KV layer %d blocks [%d, %d) outside the transfer",
                                layer, first, first + n);
        size_t part = s->head_bytes * c->header.n_kv_heads; /* one block, one pool */
        if (c->link) {
            int rc = send_layer_nccl(s, c, layer, block_table, first, n, part);
            if (rc) return rc;
            continue;
        }
        int rc = TS_OK;
        for (int32_t b = 0; !rc && b < n; b++) {
            item *it = malloc(sizeof *it + TS_KVX_FRAME_BYTES + 2 * part);
            if (!it) {
                rc = ts_error_set(TS_E_NOMEM, "out of memory");
                break;
            }
            it->conn = i;
            it->bytes = TS_KVX_FRAME_BYTES + 2 * part;
            /* Straight from the cache into the frame's payload: K, then V. */
            uint8_t *payload = it->data + TS_KVX_FRAME_BYTES;
            rc = ts_engine_kv_read(s->engine, layer, block_table + first + b, 1, c->local_head0,
                                   (int32_t)c->header.n_kv_heads, payload, payload + part);
            if (rc) {
                free(it);
                break;
            }
            ts_kvx_frame f = {TS_KVX_FRAME_BLOCK, (uint32_t)layer, (uint32_t)(first + b),
                              (uint32_t)(2 * part), ts_crc32c(0, payload, 2 * part)};
            ts_kvx_frame_encode(&f, it->data);
            rc = enqueue(s, it);
            if (!rc) c->frames++;
        }
        if (rc) return rc;
    }
    return TS_OK;
}

/* NCCL, at the end: the caller releases the blocks as soon as end() returns, so the sends must
 * have read them by then. The end frames are queued already, so the receiver posts its last
 * receives meanwhile; a failure the I/O thread learns (a status, a broken connection) or the
 * deadline ends the wait, and the links are aborted at once: nothing may keep sending. */
static void drain_links(ts_kvx_sender *s) {
    for (int i = 0; i < s->n_conns; i++) {
        conn *c = &s->conns[i];
        if (!c->link) continue;
        int rc = kvx_link_drain(c->link, s->opts.timeout_ms, sender_failed, s);
        if (!rc) continue;
        pthread_mutex_lock(&s->lock);
        if (rc != TS_E_CANCELLED) fail_locked(s, rc, ts_error_message());
        pthread_mutex_unlock(&s->lock);
        for (int j = 0; j < s->n_conns; j++) {
            kvx_link_close(s->conns[j].link);
            s->conns[j].link = NULL;
        }
        return;
    }
}

int ts_kvx_sender_end(ts_kvx_sender *s) {
    if (s->finishing) return ts_error_set(TS_E_INVALID, "KV sender already ended");
    s->finishing = true;
    for (int i = 0; i < s->n_conns; i++) {
        item *it = malloc(sizeof *it + TS_KVX_FRAME_BYTES);
        if (!it) {
            pthread_mutex_lock(&s->lock);
            fail_locked(s, TS_E_NOMEM, "out of memory");
            pthread_mutex_unlock(&s->lock);
            break;
        }
        it->conn = i;
        it->bytes = TS_KVX_FRAME_BYTES;
        ts_kvx_frame f = {TS_KVX_FRAME_END, 0, s->conns[i].frames, 0, 0};
        ts_kvx_frame_encode(&f, it->data);
        if (enqueue(s, it)) break; /* failed already: the marker below still ends the thread */
    }
    item *marker = malloc(sizeof *marker);
    pthread_mutex_lock(&s->lock);
    if (marker) {
        marker->conn = -1;
        marker->bytes = 0;
        append_locked(s, marker);
    } else { /* no marker: stop the thread instead, with the error */
        fail_locked(s, TS_E_NOMEM, "out of memory");
        s->stop = true;
    }
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    drain_links(s);
    return TS_OK;
}

int ts_kvx_sender_wait(ts_kvx_sender *s, int timeout_ms) {
    if (!s->finishing) return ts_error_set(TS_E_INVALID, "KV sender not ended yet");
    int64_t deadline = ts_now_ns() + (int64_t)timeout_ms * 1000000;
    pthread_mutex_lock(&s->lock);
    while (!s->done) {
        int64_t left = deadline - ts_now_ns();
        if (timeout_ms >= 0 && left <= 0) break;
        struct timespec ts;
        kvx_timespec_after(timeout_ms < 0 || left > 100000000 ? 100000000 : left, &ts);
        pthread_cond_timedwait(&s->cond, &s->lock, &ts);
    }
    int rc = !s->done   ? ts_error_set(TS_E_TIMEOUT, "request %llu: KV transfer still in flight",
                                       (unsigned long long)s->opts.request_id)
             : s->error ? ts_error_set(s->error, "%s", s->message)
                        : TS_OK;
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int ts_kvx_sender_finish(ts_kvx_sender *s) {
    int rc = ts_kvx_sender_end(s);
    return rc ? rc : ts_kvx_sender_wait(s, -1);
}

void ts_kvx_sender_destroy(ts_kvx_sender *s) {
    if (!s) return;
    if (s->thread_started) {
        pthread_mutex_lock(&s->lock);
        if (!s->done) {
            /* Abort: the thread drops what is queued (error set) and ends; shutting the
             * sockets down unblocks a write in progress. */
            fail_locked(s, TS_E_CANCELLED, "KV transfer aborted by the sender");
            for (int i = 0; i < s->n_conns; i++)
                if (s->conns[i].fd >= 0) shutdown(s->conns[i].fd, SHUT_RDWR);
            s->stop = true;
            pthread_cond_signal(&s->cond);
        }
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->thread, NULL);
    }
    while (s->head) {
        item *next = s->head->next;
        free(s->head);
        s->head = next;
    }
    /* NCCL: end() drained the sends of a finished transfer; an unfinished one is aborted, which
     * ends sends no one will receive. */
    for (int i = 0; i < s->n_conns; i++)
        kvx_link_close(s->conns[i].link);
    for (int i = 0; i < s->n_conns; i++)
        if (s->conns[i].fd >= 0) close(s->conns[i].fd);
    free(s->conns);
    free(s->sums);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    free(s);
}

int64_t ts_kvx_sender_bytes(const ts_kvx_sender *s) {
    return s->bytes;
}
