/*
 * kv_transfer_recv.c — the decode side of the KV transfer (see kv_transfer.h).
 *
 * One I/O thread polls the listening socket and every connection (non-blocking) and runs a
 * small state machine per connection: transfer header, then frame header / payload pairs until
 * the end frame. Verified payloads are copied into the transfer's host staging area, laid out
 * per layer as K then V, each [n_blocks][heads of this rank][block_size][head_dim], which is
 * exactly what ts_engine_kv_write takes, so installing is one call per layer. A NCCL transfer
 * (kv_transfer_nccl.h) has the same layout in device memory: its frames' payloads land there by
 * ncclRecv on the connection's own stream, are checked by the device checksum before they
 * count, and install copies device to device on the engine's thread.
 *
 * A transfer is keyed by request id and may be fed by several connections (several prefill
 * ranks, each with a part of this rank's heads). It completes when the connections' head ranges
 * cover this rank's heads and each of them ended with all of its frames; then every connection
 * gets the OK status. Any error fails the whole transfer (staging freed at once, every
 * connection told and closed); the failure stays as a small tombstone until the owner collects
 * it with wait or drop, so that a late connection for the same request is refused too.
 *
 * This file holds the public API and the I/O thread's loop; the transfers and the connection
 * state machine are in kv_transfer_conn.c, the shared state in kv_transfer_recv_impl.h.
 *
 * Locking: one mutex guards the transfer and connection lists. The I/O thread holds it while it
 * processes ready sockets (non-blocking reads and memcpy, never waiting), so the API calls see
 * consistent states. Only the I/O thread touches sockets and frees transfer records; install
 * detaches a complete transfer under the lock and uploads it without the lock.
 */
#include "kvx/kv_transfer_recv_impl.h"

#include "common/clock.h"
#include "common/error.h"
#include "common/kv_geometry.h"
#include "common/log.h"
#include "kvx/kv_transfer_net.h"

#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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
        bool landing = false; /* NCCL frames in flight: look at them often */
        if (cap > 0) {
            fds[k++] = (struct pollfd){.fd = r->listen_fd, .events = POLLIN};
            for (conn *c = r->conns; c && k < cap; c = c->next) {
                owners[k] = c;
                landing |= c->link && (c->n_frames < c->n_posted || c->end_seen);
                /* An ended connection is watched too: its sender closing early is fine. */
                fds[k++] = (struct pollfd){.fd = c->fd, .events = c->phase == C_ENDED ? 0 : POLLIN};
            }
        }
        pthread_mutex_unlock(&r->lock);
        /* Only this thread adds or frees connections, so the snapshot stays valid. */
        int ready = k ? poll(fds, k, landing ? 1 : 50) : (ts_sleep_ms(50), 0);
        pthread_mutex_lock(&r->lock);
        if (ready > 0) {
            if (fds[0].revents & POLLIN) kvx_accept_all(r);
            for (size_t i = 1; i < k; i++)
                if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) kvx_on_readable(r, owners[i]);
        }
        kvx_sweep(r);
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
    const ts_model_hparams *hp = ts_engine_hparams(e);
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
    r->head_bytes = ts_kv_block_bytes(r->dtype, r->block_size, r->head_dim, 1);
    r->device = ts_engine_backend(e)->device_index;
    r->nccl = ts_kvx_nccl_supported(e) == TS_OK;
    if (!r->nccl) snprintf(r->nccl_why, sizeof r->nccl_why, "%s", ts_error_message());
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
    while (r->transfers) { /* their links first, inside kvx_free_staging */
        transfer *t = r->transfers;
        r->transfers = t->next;
        kvx_free_staging(r, t);
        free(t);
    }
    while (r->conns) {
        conn *c = r->conns;
        r->conns = c->next;
        kvx_conn_free(c);
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
        transfer *t = kvx_find(r, request_id);
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
    transfer *t = kvx_find(r, request_id);
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
    if (t->transport == TS_KVX_NCCL) /* device staging: device-to-device on the backend's stream */
        rc = kvx_device_install(e, t->staging, block_ids, n_blocks, r->own_heads);
    for (int32_t l = 0; t->transport == TS_KVX_TCP && !rc && l < r->n_layers; l++) {
        const uint8_t *k = t->staging + (size_t)l * 2 * pool;
        rc = ts_engine_kv_write(e, l, block_ids, n_blocks, 0, r->own_heads, k, k + pool);
    }
    if (rc) { /* a bad block id fails before anything is written (NCCL: or a device fault) */
        reattach(r, t);
        return ts_error_wrap(rc, "request %llu: installing the KV cache",
                             (unsigned long long)request_id);
    }
    pthread_mutex_lock(&r->lock);
    kvx_free_staging(r, t);
    pthread_mutex_unlock(&r->lock);
    free(t);
    return TS_OK;
}

int ts_kvx_receiver_geometry(ts_kvx_receiver *r, uint64_t request_id, int32_t *n_tokens,
                             int32_t *n_blocks) {
    pthread_mutex_lock(&r->lock);
    transfer *t = kvx_find(r, request_id);
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
    transfer *t = kvx_find(r, request_id);
    int rc = TS_OK;
    if (!t) {
        rc = ts_error_set(TS_E_NOT_FOUND, "request %llu: no KV transfer",
                          (unsigned long long)request_id);
    } else if (t->state == FAILED) {
        t->collected = true;
    } else {
        kvx_fail(r, t, TS_E_CANCELLED, "cancelled on the decode side");
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
