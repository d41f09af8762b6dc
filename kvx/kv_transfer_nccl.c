/*
 * kv_transfer_nccl.c — the KV transfer's NCCL payload path (see kv_transfer_nccl.h): one
 * 2-rank nonblocking NCCL communicator and one CUDA stream per connection, the frames' K and V
 * ranges as ncclSend/ncclRecv pairs, the device checksum around them, and the receiver's
 * device staging. Built only with CUDA.
 *
 * No call here may wait for the whole device: a link whose peer died leaves receives or sends
 * pending on its stream until it is aborted, and the thread that would abort it may be the one
 * waiting. So device memory is stream-ordered (cudaMallocAsync / cudaFreeAsync, never cudaFree,
 * which synchronizes the device), host copies of the checksums are plain memory filled by a copy
 * on a stream that is known to be idle or is the one to wait for, and no page-locked memory is
 * allocated or freed (cudaFreeHost synchronizes too).
 */
#include "kvx/kv_transfer_nccl.h"

#include "common/clock.h"
#include "common/error.h"
#include "kvx/kv_transfer.h"

#include <cuda_runtime.h>
#include <nccl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(KVX_LINK_ID_BYTES == NCCL_UNIQUE_ID_BYTES, "ncclUniqueId size");

struct kvx_link {
    int device;
    int timeout_ms;
    ncclComm_t comm;
    cudaStream_t stream;
    cudaEvent_t posted_event;   /* recorded after the latest posted work */
    unsigned long long *d_sums; /* [n_slots] device, stream-ordered on `stream` */
    unsigned long long *h_sums; /* [n_slots] host */
    uint32_t *sums;             /* [n_slots] folded */
    uint32_t n_slots;
    uint32_t posted, summed; /* receiver: slots posted, slots whose sums are in `sums` */
    bool ready;
};

static int cuda_fail(cudaError_t e, const char *what) {
    return ts_error_set(TS_E_UNAVAILABLE, "KV transfer (NCCL): %s: %s", what,
                        cudaGetErrorString(e));
}

static int nccl_fail(ncclResult_t r, const char *what) {
    return ts_error_set(TS_E_UNAVAILABLE, "KV transfer (NCCL): %s: %s", what,
                        ncclGetErrorString(r));
}

/* A nonblocking communicator's call may return ncclInProgress: the call is done once the
 * communicator's asynchronous state leaves it (NCCL's rule before the next call). */
static int settle(kvx_link *l, ncclResult_t r, const char *what) {
    int64_t deadline = ts_now_ns() + (int64_t)l->timeout_ms * 1000000;
    while (r == ncclInProgress) {
        if (ts_now_ns() > deadline)
            return ts_error_set(TS_E_TIMEOUT, "KV transfer (NCCL): %s: no progress in %d ms", what,
                                l->timeout_ms);
        sched_yield();
        if (ncclCommGetAsyncError(l->comm, &r) != ncclSuccess) break;
    }
    return r == ncclSuccess ? TS_OK : nccl_fail(r, what);
}

void kvx_link_close(kvx_link *l) {
    if (!l) return;
    cudaSetDevice(l->device);
    /* Abort, never destroy: destroy/finalize may wait on the peer, and both ends close only
     * once the transfer is decided (nothing left to flush) or to stop it (abort ends the
     * pending sends and receives on the GPU, so the stream drains). */
    if (l->comm) ncclCommAbort(l->comm);
    if (l->stream) {
        cudaStreamSynchronize(l->stream); /* this stream only: nothing left on it after abort */
        if (l->d_sums) cudaFreeAsync(l->d_sums, l->stream);
        cudaStreamDestroy(l->stream);
    }
    if (l->posted_event) cudaEventDestroy(l->posted_event);
    free(l->h_sums);
    free(l->sums);
    free(l);
}

/* The link without its communicator: stream, event, checksum slots. */
static int link_new(int device, uint32_t n_slots, int timeout_ms, kvx_link **out) {
    *out = NULL;
    kvx_link *l = calloc(1, sizeof *l);
    if (!l) return ts_error_set(TS_E_NOMEM, "out of memory");
    l->device = device;
    l->timeout_ms = timeout_ms > 0 ? timeout_ms : 30000;
    l->n_slots = n_slots ? n_slots : 1;
    l->sums = calloc(l->n_slots, sizeof *l->sums);
    l->h_sums = calloc(l->n_slots, sizeof *l->h_sums);
    cudaError_t e = cudaSetDevice(device);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&l->stream, cudaStreamNonBlocking);
    if (e == cudaSuccess) e = cudaEventCreateWithFlags(&l->posted_event, cudaEventDisableTiming);
    if (e == cudaSuccess)
        e = cudaMallocAsync((void **)&l->d_sums, l->n_slots * sizeof *l->d_sums, l->stream);
    /* Ready before other streams (the sender's backend stream) use it. */
    if (e == cudaSuccess) e = cudaStreamSynchronize(l->stream);
    int rc = !l->sums || !l->h_sums ? ts_error_set(TS_E_NOMEM, "out of memory")
             : e != cudaSuccess     ? cuda_fail(e, "link buffers")
                                    : TS_OK;
    if (rc) {
        cudaGetLastError(); /* an allocation failure is not sticky */
        kvx_link_close(l);
        return rc;
    }
    *out = l;
    return TS_OK;
}

static ncclResult_t join(kvx_link *l, const ncclUniqueId *id, int rank) {
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    return ncclCommInitRankConfig(&l->comm, 2, *id, rank, &config);
}

int kvx_link_accept(int device, uint32_t n_slots, uint8_t id_out[KVX_LINK_ID_BYTES],
                    kvx_link **out) {
    kvx_link *l = NULL;
    int rc = link_new(device, n_slots, 0, &l);
    if (rc) return rc;
    ncclUniqueId id;
    ncclResult_t r = ncclGetUniqueId(&id);
    if (r == ncclSuccess) r = join(l, &id, 0);
    if (r != ncclSuccess && r != ncclInProgress) {
        rc = nccl_fail(r, "starting the communicator");
        kvx_link_close(l);
        return rc;
    }
    memcpy(id_out, &id, KVX_LINK_ID_BYTES);
    *out = l;
    return TS_OK;
}

int kvx_link_connect(int device, const uint8_t id[KVX_LINK_ID_BYTES], uint32_t n_slots,
                     int timeout_ms, kvx_link **out) {
    kvx_link *l = NULL;
    int rc = link_new(device, n_slots, timeout_ms, &l);
    if (rc) return rc;
    ncclUniqueId uid;
    memcpy(&uid, id, sizeof uid);
    rc = settle(l, join(l, &uid, 1), "joining the receiver's communicator");
    if (rc) {
        kvx_link_close(l);
        return rc;
    }
    l->ready = true;
    *out = l;
    return TS_OK;
}

int kvx_link_poll_init(kvx_link *l) {
    if (l->ready) return 0;
    ncclResult_t r = ncclInProgress;
    cudaSetDevice(l->device);
    ncclResult_t q = ncclCommGetAsyncError(l->comm, &r);
    if (q != ncclSuccess) r = q;
    if (r == ncclInProgress) return 1;
    if (r != ncclSuccess) return nccl_fail(r, "joining the communicator");
    l->ready = true;
    return 0;
}

/* ------------------------------------------------------------------ sender */

int kvx_link_send_blocks(kvx_link *l, ts_engine *e, int32_t layer, const int32_t *block_ids,
                         int32_t n, int32_t head0, int32_t n_heads, uint32_t *sums) {
    if (n < 0 || (uint32_t)n > l->n_slots)
        return ts_error_set(TS_E_INVALID, "KV transfer (NCCL): %d blocks in one call (room %u)", n,
                            l->n_slots);
    if (n == 0) return TS_OK;
    ts_backend *be = ts_engine_backend(e);
    cudaStream_t compute = (cudaStream_t)be->device_stream;
    cudaSetDevice(l->device);
    /* The checksums run on the backend's stream, after the kernels that wrote this KV; once
     * they are on the host (the copy into plain memory returns when it is done, and the stream
     * wait makes that explicit) the KV is final, so the sends on the link's stream need no
     * event. */
    cudaError_t ce = cudaMemsetAsync(l->d_sums, 0, (size_t)n * sizeof *l->d_sums, compute);
    size_t part = 0;
    for (int32_t b = 0; ce == cudaSuccess && b < n; b++) {
        void *k, *v;
        int rc = ts_engine_kv_block_span(e, layer, block_ids[b], head0, n_heads, &k, &v, &part);
        if (rc) return rc;
        ce = (cudaError_t)kvx_sum_launch(k, v, part, &l->d_sums[b], compute);
    }
    if (ce == cudaSuccess)
        ce = cudaMemcpyAsync(l->h_sums, l->d_sums, (size_t)n * sizeof *l->h_sums,
                             cudaMemcpyDeviceToHost, compute);
    if (ce == cudaSuccess) ce = cudaStreamSynchronize(compute);
    if (ce != cudaSuccess) return cuda_fail(ce, "checksums of the KV blocks");
    for (int32_t b = 0; b < n; b++)
        sums[b] = ts_kvx_sum_fold(l->h_sums[b]);
    ncclResult_t r = ncclGroupStart();
    for (int32_t b = 0; r == ncclSuccess && b < n; b++) {
        void *k, *v;
        ts_engine_kv_block_span(e, layer, block_ids[b], head0, n_heads, &k, &v, &part);
        r = ncclSend(k, part, ncclUint8, 0, l->comm, l->stream);
        if (r == ncclSuccess || r == ncclInProgress)
            r = ncclSend(v, part, ncclUint8, 0, l->comm, l->stream);
    }
    ncclResult_t end = ncclGroupEnd();
    if (r == ncclSuccess || r == ncclInProgress) r = end;
    return settle(l, r, "posting the KV sends");
}

int kvx_link_drain(kvx_link *l, int timeout_ms, bool (*failed)(void *user), void *user) {
    cudaSetDevice(l->device);
    int64_t deadline = ts_now_ns() + (int64_t)timeout_ms * 1000000;
    for (;;) {
        cudaError_t e = cudaStreamQuery(l->stream);
        if (e == cudaSuccess) return TS_OK;
        if (e != cudaErrorNotReady) return cuda_fail(e, "the KV sends");
        ncclResult_t r = ncclSuccess;
        ncclCommGetAsyncError(l->comm, &r);
        if (r != ncclSuccess && r != ncclInProgress) return nccl_fail(r, "the KV sends");
        if (failed && failed(user))
            return ts_error_set(TS_E_CANCELLED, "KV transfer (NCCL): failed while sending");
        if (ts_now_ns() > deadline)
            return ts_error_set(TS_E_TIMEOUT, "KV transfer (NCCL): sends not done in %d ms",
                                timeout_ms);
        sched_yield();
    }
}

/* ------------------------------------------------------------------ receiver */

int kvx_link_recv(kvx_link *l, void *k, void *v, size_t part, uint32_t slot) {
    if (slot != l->posted || slot >= l->n_slots)
        return ts_error_set(TS_E_INTERNAL, "KV transfer (NCCL): slot %u posted out of order", slot);
    cudaSetDevice(l->device);
    cudaError_t ce = cudaMemsetAsync(&l->d_sums[slot], 0, sizeof *l->d_sums, l->stream);
    if (ce != cudaSuccess) return cuda_fail(ce, "receive slot");
    ncclResult_t r = ncclGroupStart();
    if (r == ncclSuccess) r = ncclRecv(k, part, ncclUint8, 1, l->comm, l->stream);
    if (r == ncclSuccess || r == ncclInProgress)
        r = ncclRecv(v, part, ncclUint8, 1, l->comm, l->stream);
    ncclResult_t end = ncclGroupEnd();
    if (r == ncclSuccess || r == ncclInProgress) r = end;
    int rc = settle(l, r, "posting the KV receives");
    if (rc) return rc;
    /* The checksum of what landed, behind the receives on the same stream. */
    ce = (cudaError_t)kvx_sum_launch(k, v, part, &l->d_sums[slot], l->stream);
    if (ce == cudaSuccess) ce = cudaEventRecord(l->posted_event, l->stream);
    if (ce != cudaSuccess) return cuda_fail(ce, "checksum of a received block");
    l->posted++;
    return TS_OK;
}

int kvx_link_poll_sums(kvx_link *l, const uint32_t **sums) {
    *sums = l->sums;
    if (l->summed == l->posted) return 1;
    cudaSetDevice(l->device);
    cudaError_t e = cudaEventQuery(l->posted_event);
    if (e == cudaErrorNotReady) {
        ncclResult_t r = ncclSuccess;
        ncclCommGetAsyncError(l->comm, &r);
        return r == ncclSuccess || r == ncclInProgress ? 0 : nccl_fail(r, "receiving KV blocks");
    }
    if (e != cudaSuccess) return cuda_fail(e, "receiving KV blocks");
    /* The event is the latest record: every slot posted so far is summed, and the stream is
     * idle, so this copy waits for nothing else. */
    size_t n = l->posted - l->summed;
    e = cudaMemcpyAsync(&l->h_sums[l->summed], &l->d_sums[l->summed], n * sizeof *l->h_sums,
                        cudaMemcpyDeviceToHost, l->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(l->stream);
    if (e != cudaSuccess) return cuda_fail(e, "reading the checksums");
    for (; l->summed < l->posted; l->summed++)
        l->sums[l->summed] = ts_kvx_sum_fold(l->h_sums[l->summed]);
    return 1;
}

/* ------------------------------------------------------------------ device staging */

int kvx_device_alloc(int device, size_t bytes, void **out) {
    *out = NULL;
    cudaSetDevice(device);
    /* Stream-ordered on this thread's default stream, which waits for none of the links' or the
     * backend's streams; ready before any of them uses it. */
    cudaError_t e = cudaMallocAsync(out, bytes, cudaStreamPerThread);
    if (e == cudaSuccess) e = cudaStreamSynchronize(cudaStreamPerThread);
    if (e != cudaSuccess) {
        cudaGetLastError();
        *out = NULL;
        return ts_error_set(TS_E_NOMEM, "KV staging: cudaMallocAsync of %zu bytes on cuda:%d: %s",
                            bytes, device, cudaGetErrorString(e));
    }
    return TS_OK;
}

void kvx_device_free(int device, void *p) {
    if (!p) return;
    cudaSetDevice(device);
    /* Its users are done: the links that received into it are closed (their streams drained)
     * and an install waited for its copies. cudaFree would wait for the whole device. */
    cudaFreeAsync(p, cudaStreamPerThread);
}

int kvx_device_install(ts_engine *e, const void *staging, const int32_t *block_ids,
                       int32_t n_blocks, int32_t n_heads) {
    ts_backend *be = ts_engine_backend(e);
    int32_t n_layers = ts_engine_hparams(e)->n_layers;
    void *k, *v;
    size_t part = 0;
    /* Every block id checked before anything is written. */
    for (int32_t b = 0; b < n_blocks; b++) {
        int rc = ts_engine_kv_block_span(e, 0, block_ids[b], 0, n_heads, &k, &v, &part);
        if (rc) return rc;
    }
    size_t pool = (size_t)n_blocks * part;
    cudaStream_t stream = (cudaStream_t)be->device_stream;
    cudaSetDevice(be->device_index);
    cudaError_t ce = cudaSuccess;
    for (int32_t l = 0; ce == cudaSuccess && l < n_layers; l++) {
        const uint8_t *src = (const uint8_t *)staging + (size_t)l * 2 * pool;
        for (int32_t b = 0; ce == cudaSuccess && b < n_blocks; b++) {
            ts_engine_kv_block_span(e, l, block_ids[b], 0, n_heads, &k, &v, &part);
            ce = cudaMemcpyAsync(k, src + (size_t)b * part, part, cudaMemcpyDeviceToDevice, stream);
            if (ce == cudaSuccess)
                ce = cudaMemcpyAsync(v, src + pool + (size_t)b * part, part,
                                     cudaMemcpyDeviceToDevice, stream);
        }
    }
    if (ce == cudaSuccess) ce = cudaStreamSynchronize(stream);
    return ce == cudaSuccess ? TS_OK : cuda_fail(ce, "installing the KV cache");
}
