/*
 * kv_transfer_nccl.c — the NCCL transport of the KV transfer (see kv_transfer_nccl.h): headers,
 * verdicts and the blocks' K and V ranges as NCCL send/recv pairs on the backend's stream.
 */
#include "node/kv_transfer_nccl.h"

#include "common/error.h"
#include "common/log.h"
#include "node/kv_layout.h"
#include "node/kv_transfer.h"

#include <cuda_runtime.h>
#include <nccl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One transfer on one rank: the routes this rank is an end of, and small device buffers for
 * the headers and verdicts (NCCL moves device memory only). */
typedef struct xfer {
    ts_comm *comm;
    ncclComm_t nc;
    cudaStream_t stream;
    ts_kv_route *routes; /* this rank's routes, in ts_kv_routes order */
    int n_routes;
    uint8_t *d_headers;  /* [n_routes][TS_KVX_HEADER_BYTES] */
    int32_t *d_verdicts; /* [n_routes] */
    uint8_t *headers;    /* host copies */
    int32_t *verdicts;
} xfer;

static int cuda_fail(cudaError_t e, const char *what) {
    return ts_error_set(TS_E_UNAVAILABLE, "KV transfer (NCCL): %s: %s", what,
                        cudaGetErrorString(e));
}

static int nccl_fail(ncclResult_t r, const char *what) {
    return ts_error_set(TS_E_UNAVAILABLE, "KV transfer (NCCL): %s: %s", what,
                        ncclGetErrorString(r));
}

static void xfer_free(xfer *x) {
    if (x->d_headers) cudaFree(x->d_headers);
    if (x->d_verdicts) cudaFree(x->d_verdicts);
    free(x->routes);
    free(x->headers);
    free(x->verdicts);
}

/* Routes of kv_layout.h whose sending (src) or receiving (!src) end is `rank`. */
static int xfer_open(xfer *x, ts_comm *nccl, ts_engine *e, const ts_kvx_nccl_peers *p, bool src,
                     int rank) {
    memset(x, 0, sizeof *x);
    x->comm = nccl;
    x->nc = (ncclComm_t)ts_comm_nccl_handle(nccl);
    x->stream = (cudaStream_t)ts_comm_nccl_stream(nccl);
    if (!x->nc)
        return ts_error_set(TS_E_INVALID,
                            "KV transfer (NCCL): the communicator is \"%s\", not "
                            "\"nccl\"",
                            nccl ? nccl->kind : "(none)");
    const ts_shard_plan *sh = ts_engine_shard(e);
    int size = src ? p->src_size : p->dst_size;
    int base = src ? p->src_base : p->dst_base;
    if (sh->size != size || sh->rank != rank || base + size > nccl->size ||
        (src ? p->dst_base + p->dst_size : p->src_base + p->src_size) > nccl->size ||
        base + rank != nccl->rank)
        return ts_error_set(TS_E_INVALID,
                            "KV transfer (NCCL): this rank (%d of %d in its group, %d of %d in "
                            "the communicator) does not match peers src %d+%d, dst %d+%d",
                            sh->rank, sh->size, nccl->rank, nccl->size, p->src_base, p->src_size,
                            p->dst_base, p->dst_size);
    int32_t n_kv = ts_engine_hparams(e)->n_kv_heads;
    int max = ts_kv_routes_max(n_kv, p->dst_size);
    ts_kv_route *all = calloc((size_t)max, sizeof *all);
    x->routes = calloc((size_t)max, sizeof *x->routes);
    int n_all = 0;
    int rc = all && x->routes ? TS_OK : ts_error_set(TS_E_NOMEM, "out of memory");
    if (!rc) rc = ts_kv_routes(n_kv, p->src_size, p->dst_size, all, max, &n_all);
    for (int i = 0; !rc && i < n_all; i++)
        if ((src ? all[i].src_rank : all[i].dst_rank) == rank) x->routes[x->n_routes++] = all[i];
    free(all);
    if (rc || x->n_routes == 0) return rc;
    size_t hb = (size_t)x->n_routes * TS_KVX_HEADER_BYTES, vb = (size_t)x->n_routes * 4;
    x->headers = calloc(1, hb);
    x->verdicts = calloc((size_t)x->n_routes, sizeof *x->verdicts);
    if (!x->headers || !x->verdicts) return ts_error_set(TS_E_NOMEM, "out of memory");
    cudaError_t ce = cudaMalloc((void **)&x->d_headers, hb);
    if (ce == cudaSuccess) ce = cudaMalloc((void **)&x->d_verdicts, vb);
    return ce == cudaSuccess ? TS_OK : cuda_fail(ce, "device buffers");
}

static int peer_of(const ts_kvx_nccl_peers *p, const ts_kv_route *r, bool src) {
    return src ? p->dst_base + r->dst_rank : p->src_base + r->src_rank;
}

/* Phase 1 or 2: one small message per route, from the sender (headers) or the receiver
 * (verdicts), as one NCCL group; waits for it. */
static int exchange(xfer *x, const ts_kvx_nccl_peers *p, bool src, bool headers) {
    bool sending = src == headers;
    void *dev = headers ? (void *)x->d_headers : (void *)x->d_verdicts;
    void *host = headers ? (void *)x->headers : (void *)x->verdicts;
    size_t each = headers ? TS_KVX_HEADER_BYTES : sizeof(int32_t);
    size_t bytes = each * (size_t)x->n_routes;
    cudaError_t ce = cudaSuccess;
    if (sending) ce = cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, x->stream);
    if (ce != cudaSuccess) return cuda_fail(ce, "copying to the device");
    ncclResult_t r = ncclGroupStart();
    for (int i = 0; r == ncclSuccess && i < x->n_routes; i++) {
        char *at = (char *)dev + each * (size_t)i;
        int peer = peer_of(p, &x->routes[i], src);
        r = sending ? ncclSend(at, each, ncclUint8, peer, x->nc, x->stream)
                    : ncclRecv(at, each, ncclUint8, peer, x->nc, x->stream);
    }
    ncclResult_t end = ncclGroupEnd();
    if (r == ncclSuccess) r = end;
    if (r != ncclSuccess) return nccl_fail(r, headers ? "headers" : "verdicts");
    if (!sending) ce = cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, x->stream);
    if (ce != cudaSuccess) return cuda_fail(ce, "copying to the host");
    return ts_comm_nccl_wait(x->comm, headers ? "KV headers" : "KV verdicts");
}

/* Phase 3: per layer one NCCL group of every accepted route's K and V ranges of every block. */
static int move_blocks(xfer *x, ts_engine *e, const ts_kvx_nccl_peers *p, bool src,
                       const int32_t *block_ids, int32_t n_blocks, int32_t own_head0) {
    int32_t n_layers = ts_engine_hparams(e)->n_layers;
    for (int32_t l = 0; l < n_layers; l++) {
        int rc = TS_OK;
        ncclResult_t r = ncclGroupStart();
        for (int i = 0; !rc && r == ncclSuccess && i < x->n_routes; i++) {
            if (x->verdicts[i] != 0) continue;
            const ts_kv_route *rt = &x->routes[i];
            int peer = peer_of(p, rt, src);
            for (int32_t b = 0; !rc && r == ncclSuccess && b < n_blocks; b++) {
                void *k, *v;
                size_t bytes;
                rc = ts_engine_kv_block_span(e, l, block_ids[b], rt->kv_head0 - own_head0,
                                             rt->n_kv_heads, &k, &v, &bytes);
                if (rc) break;
                r = src ? ncclSend(k, bytes, ncclUint8, peer, x->nc, x->stream)
                        : ncclRecv(k, bytes, ncclUint8, peer, x->nc, x->stream);
                if (r == ncclSuccess)
                    r = src ? ncclSend(v, bytes, ncclUint8, peer, x->nc, x->stream)
                            : ncclRecv(v, bytes, ncclUint8, peer, x->nc, x->stream);
            }
        }
        ncclResult_t end = ncclGroupEnd();
        if (rc) return rc; /* cannot happen after checked headers; the peer then times out */
        if (r == ncclSuccess) r = end;
        if (r != ncclSuccess) return nccl_fail(r, "KV blocks");
    }
    return ts_comm_nccl_wait(x->comm, "KV blocks");
}

int ts_kvx_nccl_send(ts_comm *nccl, ts_engine *e, const ts_kvx_nccl_peers *peers,
                     uint64_t request_id, uint64_t fingerprint, int32_t n_tokens,
                     const int32_t *block_table, int32_t n_blocks) {
    const ts_shard_plan *sh = ts_engine_shard(e);
    const ts_llama_hparams *hp = ts_engine_hparams(e);
    const ts_engine_options *eo = ts_engine_options_get(e);
    if (n_tokens < 1 || n_blocks != (n_tokens + eo->block_size - 1) / eo->block_size)
        return ts_error_set(TS_E_INVALID, "KV transfer (NCCL): %d tokens in %d blocks of %d",
                            n_tokens, n_blocks, eo->block_size);
    xfer x;
    int rc = xfer_open(&x, nccl, e, peers, true, sh->rank);
    if (rc || x.n_routes == 0) { /* a replicated prefill rank may feed no one */
        xfer_free(&x);
        return rc;
    }
    for (int i = 0; i < x.n_routes; i++) {
        ts_kvx_header h = {.request_id = request_id,
                           .fingerprint = fingerprint,
                           .n_layers = (uint32_t)hp->n_layers,
                           .n_tokens = (uint32_t)n_tokens,
                           .block_size = (uint32_t)eo->block_size,
                           .n_blocks = (uint32_t)n_blocks,
                           .head_dim = (uint32_t)hp->head_dim,
                           .dtype = (uint32_t)eo->kv_type,
                           .kv_head0 = (uint32_t)x.routes[i].kv_head0,
                           .n_kv_heads = (uint32_t)x.routes[i].n_kv_heads,
                           .src_rank = (uint16_t)sh->rank,
                           .src_size = (uint16_t)sh->size,
                           .dst_rank = (uint16_t)x.routes[i].dst_rank,
                           .dst_size = (uint16_t)peers->dst_size};
        ts_kvx_header_encode(&h, x.headers + (size_t)i * TS_KVX_HEADER_BYTES);
    }
    rc = exchange(&x, peers, true, true);
    if (!rc) rc = exchange(&x, peers, true, false);
    if (!rc) rc = move_blocks(&x, e, peers, true, block_table, n_blocks, sh->kv_head0);
    for (int i = 0; !rc && i < x.n_routes; i++)
        if (x.verdicts[i] != 0)
            rc = ts_error_set(
                x.verdicts[i] < 0 && x.verdicts[i] >= TS_E_INTERNAL ? x.verdicts[i]
                                                                    : TS_E_UNAVAILABLE,
                "KV transfer (NCCL) of request %llu: decode rank %d refused it (%s; "
                "its log says why)",
                (unsigned long long)request_id, x.routes[i].dst_rank, ts_error_name(x.verdicts[i]));
    xfer_free(&x);
    return rc;
}

/* The receiver's checks of one route's header; 0 or the code, with `why` filled. */
static int check_header(const ts_kvx_header *h, const ts_kv_route *rt, ts_engine *e,
                        const ts_kvx_nccl_peers *p, uint64_t request_id, uint64_t fingerprint,
                        int32_t n_tokens0, char *why, size_t size) {
    const ts_llama_hparams *hp = ts_engine_hparams(e);
    const ts_engine_options *eo = ts_engine_options_get(e);
    uint64_t want_blocks =
        ((uint64_t)h->n_tokens + (uint64_t)eo->block_size - 1) / (uint64_t)eo->block_size;
    if (h->request_id != request_id)
        snprintf(why, size, "request %llu, expected %llu", (unsigned long long)h->request_id,
                 (unsigned long long)request_id);
    else if (h->fingerprint != fingerprint)
        snprintf(why, size, "model fingerprint %016llx differs from this node's %016llx",
                 (unsigned long long)h->fingerprint, (unsigned long long)fingerprint);
    else if (h->n_layers != (uint32_t)hp->n_layers || h->head_dim != (uint32_t)hp->head_dim ||
             h->block_size != (uint32_t)eo->block_size || h->dtype != (uint32_t)eo->kv_type)
        snprintf(why, size, "geometry %u layers, head_dim %u, block size %u, dtype %u differs",
                 h->n_layers, h->head_dim, h->block_size, h->dtype);
    else if (h->src_rank != (uint32_t)rt->src_rank || h->src_size != (uint32_t)p->src_size ||
             h->dst_rank != (uint32_t)rt->dst_rank || h->dst_size != (uint32_t)p->dst_size ||
             h->kv_head0 != (uint32_t)rt->kv_head0 || h->n_kv_heads != (uint32_t)rt->n_kv_heads)
        snprintf(why, size, "route %u/%u -> %u/%u heads [%u, +%u) is not the expected one",
                 h->src_rank, h->src_size, h->dst_rank, h->dst_size, h->kv_head0, h->n_kv_heads);
    else if (h->n_tokens < 1 || h->n_blocks != want_blocks ||
             h->n_blocks > (uint32_t)ts_engine_n_blocks(e))
        snprintf(why, size, "%u tokens in %u blocks", h->n_tokens, h->n_blocks);
    else if (n_tokens0 >= 0 && h->n_tokens != (uint32_t)n_tokens0)
        snprintf(why, size, "%u tokens, another prefill rank announced %d", h->n_tokens, n_tokens0);
    else
        return TS_OK;
    return TS_E_INVALID;
}

int ts_kvx_nccl_recv(ts_comm *nccl, ts_engine *e, const ts_kvx_nccl_peers *peers,
                     uint64_t request_id, uint64_t fingerprint, ts_kv_pool *pool,
                     int32_t *block_ids, int32_t max_blocks, int32_t *n_blocks, int32_t *n_tokens) {
    *n_blocks = 0;
    *n_tokens = 0;
    const ts_shard_plan *sh = ts_engine_shard(e);
    xfer x;
    int rc = xfer_open(&x, nccl, e, peers, false, sh->rank);
    if (!rc && x.n_routes == 0)
        rc = ts_error_set(TS_E_INTERNAL, "KV transfer (NCCL): decode rank %d has no routes",
                          sh->rank);
    if (!rc) rc = exchange(&x, peers, false, true);
    if (rc) {
        xfer_free(&x);
        return rc;
    }
    /* verdict: every header checked; one refusal refuses the whole transfer on every route */
    int verdict = TS_OK;
    char why[256] = "";
    int32_t tokens = -1;
    for (int i = 0; !verdict && i < x.n_routes; i++) {
        ts_kvx_header h;
        if (ts_kvx_header_decode(x.headers + (size_t)i * TS_KVX_HEADER_BYTES, &h) != TS_OK) {
            verdict = TS_E_FORMAT;
            snprintf(why, sizeof why, "%s", ts_error_message());
        } else {
            verdict = check_header(&h, &x.routes[i], e, peers, request_id, fingerprint, tokens, why,
                                   sizeof why);
            tokens = (int32_t)h.n_tokens;
        }
    }
    int32_t want = verdict ? 0
                           : (tokens + ts_engine_options_get(e)->block_size - 1) /
                                 ts_engine_options_get(e)->block_size;
    int32_t claimed = 0;
    if (!verdict && pool) {
        if (want > max_blocks) {
            verdict = TS_E_INVALID;
            snprintf(why, sizeof why, "%d blocks, room for %d ids", want, max_blocks);
        } else if (ts_kv_pool_n_free(pool) < want) {
            verdict = TS_E_EXHAUSTED;
            snprintf(why, sizeof why, "%d free KV blocks, %d needed", ts_kv_pool_n_free(pool),
                     want);
        }
        while (!verdict && claimed < want) {
            if (ts_kv_pool_alloc(pool, &block_ids[claimed]) != TS_OK) {
                verdict = TS_E_EXHAUSTED;
                snprintf(why, sizeof why, "%s", ts_error_message());
                break;
            }
            claimed++;
        }
    } else if (!verdict && want != max_blocks) {
        verdict = TS_E_INVALID;
        snprintf(why, sizeof why, "%d blocks, the leader chose %d", want, max_blocks);
    }
    for (int i = 0; i < x.n_routes; i++)
        x.verdicts[i] = verdict;
    rc = exchange(&x, peers, false, false);
    if (!rc && verdict) {
        TS_WARN("KV transfer (NCCL) of request %llu refused: %s", (unsigned long long)request_id,
                why);
        rc = ts_error_set(verdict, "KV transfer (NCCL) of request %llu refused: %s",
                          (unsigned long long)request_id, why);
    }
    if (!rc) rc = move_blocks(&x, e, peers, false, block_ids, want, sh->kv_head0);
    if (rc && pool) /* all or nothing: the blocks written so far are nobody's */
        for (int32_t i = 0; i < claimed; i++)
            ts_kv_pool_release(pool, block_ids[i]);
    if (!rc) {
        *n_blocks = want;
        *n_tokens = tokens;
    }
    xfer_free(&x);
    return rc;
}
