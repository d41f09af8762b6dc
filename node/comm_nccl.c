/*
 * comm_nccl.c — the NCCL communicator (see comm.h): all-reduce of device buffers on the
 * backend's CUDA stream, so the collective runs in order with the kernels around it.
 *
 * The group's control communicator (MPI, or "self" for a group of one) carries the NCCL unique
 * id from rank 0 to the others and all host-memory collectives (broadcast, all-gather, barrier).
 * A collective is enqueued, then its completion is polled on the stream against a deadline; on
 * timeout the NCCL communicator is aborted (ncclCommAbort), which is the documented way to get
 * out of a collective a dead peer will never join, and the group fails with TS_E_TIMEOUT.
 */
#include "node/comm.h"

#include "common/clock.h"
#include "common/error.h"

#include <cuda_runtime.h>
#include <nccl.h>
#include <sched.h>
#include <stdbool.h>
#include <stdlib.h>

typedef struct nccl_comm {
    ts_comm base;
    ts_comm *control;
    ncclComm_t comm;
    cudaStream_t stream;
    int timeout_ms;
    bool aborted;
} nccl_comm;

static int nccl_error(nccl_comm *c, const char *op, ncclResult_t r) {
    return ts_error_set(TS_E_UNAVAILABLE, "NCCL %s (rank %d of %d): %s", op, c->base.rank,
                        c->base.size, ncclGetErrorString(r));
}

/* Waits for the stream, checking NCCL's asynchronous error state, until the deadline. */
static int wait_stream(nccl_comm *c, const char *op) {
    int64_t deadline = ts_now_ns() + (int64_t)c->timeout_ms * 1000000;
    for (;;) {
        cudaError_t e = cudaStreamQuery(c->stream);
        if (e == cudaSuccess) return TS_OK;
        if (e != cudaErrorNotReady)
            return ts_error_set(TS_E_UNAVAILABLE, "NCCL %s: CUDA error: %s", op,
                                cudaGetErrorString(e));
        ncclResult_t async = ncclSuccess;
        ncclCommGetAsyncError(c->comm, &async);
        if (async != ncclSuccess && async != ncclInProgress) return nccl_error(c, op, async);
        if (ts_now_ns() > deadline) {
            ncclCommAbort(c->comm);
            c->aborted = true;
            return ts_error_set(TS_E_TIMEOUT,
                                "NCCL %s (rank %d of %d): no answer from the group within %d ms "
                                "(a rank died or hangs)",
                                op, c->base.rank, c->base.size, c->timeout_ms);
        }
        sched_yield();
    }
}

static int nccl_allreduce(ts_comm *base, float *buf, size_t count) {
    nccl_comm *c = (nccl_comm *)base;
    if (c->aborted) return ts_error_set(TS_E_UNAVAILABLE, "NCCL group already failed");
    ncclResult_t r = ncclAllReduce(buf, buf, count, ncclFloat, ncclSum, c->comm, c->stream);
    if (r != ncclSuccess) return nccl_error(c, "all-reduce", r);
    return wait_stream(c, "all-reduce");
}

static int nccl_broadcast(ts_comm *base, void *buf, size_t bytes, int root) {
    nccl_comm *c = (nccl_comm *)base;
    return ts_comm_broadcast(c->control, buf, bytes, root);
}

static int nccl_allgather(ts_comm *base, const void *send, void *recv, size_t bytes) {
    nccl_comm *c = (nccl_comm *)base;
    return ts_comm_allgather(c->control, send, recv, bytes);
}

static int nccl_barrier(ts_comm *base) {
    nccl_comm *c = (nccl_comm *)base;
    return ts_comm_barrier(c->control);
}

static void nccl_destroy(ts_comm *base) {
    nccl_comm *c = (nccl_comm *)base;
    if (!c->aborted) ncclCommDestroy(c->comm);
    ts_comm_destroy(c->control);
    free(c);
}

int ts_comm_create_nccl(ts_comm *control, void *cuda_stream, int device,
                        const ts_comm_options *opts, ts_comm **out) {
    *out = NULL;
    nccl_comm *c = calloc(1, sizeof *c);
    if (!c) return ts_error_set(TS_E_NOMEM, "out of memory");
    c->control = control;
    c->stream = (cudaStream_t)cuda_stream;
    c->timeout_ms = opts && opts->timeout_ms > 0 ? opts->timeout_ms : 60000;
    c->base.rank = control->rank;
    c->base.size = control->size;
    ncclUniqueId id;
    int rc = TS_OK;
    if (control->rank == 0) {
        ncclResult_t r = ncclGetUniqueId(&id);
        if (r != ncclSuccess) rc = nccl_error(c, "unique id", r);
    }
    /* every rank takes part in the broadcast, even if rank 0 failed: it then sends garbage and
     * reports the error itself; the others fail in ncclCommInitRank or time out */
    int brc = ts_comm_broadcast(control, &id, sizeof id, 0);
    if (!rc) rc = brc;
    if (!rc && cudaSetDevice(device) != cudaSuccess)
        rc = ts_error_set(TS_E_UNAVAILABLE, "cudaSetDevice(%d) failed", device);
    if (!rc) {
        ncclResult_t r = ncclCommInitRank(&c->comm, control->size, id, control->rank);
        if (r != ncclSuccess) rc = nccl_error(c, "init", r);
    }
    if (rc) {
        free(c); /* the caller still owns `control` on failure */
        return rc;
    }
    c->base.kind = "nccl";
    c->base.allreduce_sum_f32 = nccl_allreduce;
    c->base.broadcast = nccl_broadcast;
    c->base.allgather = nccl_allgather;
    c->base.barrier = nccl_barrier;
    c->base.destroy = nccl_destroy;
    *out = &c->base;
    return TS_OK;
}
