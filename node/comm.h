/*
 * comm.h — the communicator of a tensor-parallel group: the one interface for collectives.
 *
 * A group is N ranks, one process per device, that hold 1/N of every layer and run the forward
 * pass in lock-step. The engine calls these collectives on buffers in its backend's memory:
 *   - "self": a group of one; every collective is a no-op (no MPI needed).
 *   - "mpi":  Open MPI over host buffers (CPU backend). A group is an MPI sub-communicator made
 *             with MPI_Comm_split, so one mpirun/srun world can hold several groups (several TP
 *             groups; prefill and decode pools).
 *   - "nccl": NCCL over device buffers (CUDA backend); its unique id is created on the group's
 *             rank 0 and broadcast over the group's MPI communicator.
 *
 * Failure. A collective never waits forever: every backend watches a timeout (ts_comm_options)
 * and polls for a dead peer. On failure it returns TS_E_UNAVAILABLE or TS_E_TIMEOUT with a message
 * naming the group and the operation; the caller ends the group (the process exits with an error)
 * because a group that lost a rank cannot continue in lock-step. All ranks must call the same
 * collectives in the same order with the same sizes. A ts_comm is used by one thread at a time.
 */
#ifndef TS_NODE_COMM_H
#define TS_NODE_COMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ts_comm ts_comm;

struct ts_comm {
    const char *kind; /* "self", "mpi", "nccl" */
    int rank;         /* rank in the group */
    int size;         /* ranks in the group */
    /* In place: buf[i] = sum over ranks of buf[i]. The backend's memory (device memory for
     * NCCL). Every rank gets the same bits. */
    int (*allreduce_sum_f32)(ts_comm *c, float *buf, size_t count);
    /* Host memory: buf (bytes) of rank `root` is copied to every rank. */
    int (*broadcast)(ts_comm *c, void *buf, size_t bytes, int root);
    /* Host memory: recv[r * bytes .. (r+1) * bytes) = send of rank r (recv holds size * bytes).
     * Broadcast and all-gather carry control data (plans, token picks) and go through MPI even
     * in a NCCL group. */
    int (*allgather)(ts_comm *c, const void *send, void *recv, size_t bytes);
    int (*barrier)(ts_comm *c);
    void (*destroy)(ts_comm *c);
};

typedef struct ts_comm_options {
    int timeout_ms; /* a collective that does not complete in this time fails; <= 0: 60000 */
} ts_comm_options;

/* A group of one. Never fails. */
int ts_comm_create_self(ts_comm **out);

/* ---- MPI (node/comm_mpi.c) ---- */

/* True when this process was started by an MPI launcher (mpirun, or srun with PMIx/PMI). */
bool ts_mpi_launched(void);
/* Initialises MPI once per process (thread level SERIALIZED: one thread at a time calls MPI,
 * not necessarily the main one). Call before starting any thread or gRPC. */
int ts_mpi_init(void);
int ts_mpi_world_rank(void);
int ts_mpi_world_size(void);
/* Splits MPI_COMM_WORLD: ranks with the same color form a group, ordered by key. */
int ts_comm_create_mpi(int color, int key, const ts_comm_options *opts, ts_comm **out);
/* Ends MPI at exit. After a failed collective (a dead or hung peer) it aborts the MPI job
 * instead, since MPI_Finalize would wait for the lost rank. */
void ts_mpi_finalize(void);

/* ---- NCCL (node/comm_nccl.c, built with CUDA) ---- */

/* A NCCL group over the ranks of `control` (MPI or self), running collectives on the backend's
 * stream (ts_backend.device_stream) of CUDA device `device`. On success the new communicator owns
 * `control`; on failure the caller still does. Only in builds with CUDA (TESSERA_HAVE_CUDA). */
int ts_comm_create_nccl(ts_comm *control, void *cuda_stream, int device,
                        const ts_comm_options *opts, ts_comm **out);

void ts_comm_destroy(ts_comm *c); /* NULL is fine */

static inline int ts_comm_allreduce_sum_f32(ts_comm *c, float *buf, size_t count) {
    return c->size == 1 ? 0 : c->allreduce_sum_f32(c, buf, count);
}
static inline int ts_comm_broadcast(ts_comm *c, void *buf, size_t bytes, int root) {
    return c->size == 1 ? 0 : c->broadcast(c, buf, bytes, root);
}
static inline int ts_comm_allgather(ts_comm *c, const void *send, void *recv, size_t bytes) {
    return c->allgather(c, send, recv, bytes);
}
static inline int ts_comm_barrier(ts_comm *c) { return c->size == 1 ? 0 : c->barrier(c); }

#endif
