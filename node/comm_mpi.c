/*
 * comm_mpi.c — the MPI communicator (see comm.h): Open MPI collectives over host buffers.
 *
 * Every collective is started non-blocking (MPI_I*) and completed by polling MPI_Test against a
 * deadline, so a rank that died or hangs turns into TS_E_TIMEOUT with a message instead of a
 * process that waits forever. (When a rank dies, mpirun usually terminates the job within a
 * second anyway; the deadline covers launchers that do not, and ranks that hang.) The polling
 * yields the core after a short spin: groups often run oversubscribed (more ranks than cores).
 * Errors are returned, not fatal (MPI_ERRORS_RETURN); once a collective failed the group is
 * unusable and ts_mpi_finalize aborts the job.
 */
#include "node/comm.h"

#include "common/clock.h"
#include "common/error.h"
#include "common/log.h"

#include <mpi.h>
#include <sched.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct mpi_comm {
    ts_comm base;
    MPI_Comm comm;
    int timeout_ms;
    int color;
} mpi_comm;

static bool mpi_initialised_here;
static bool mpi_failed;

bool ts_mpi_launched(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_SIZE");
}

int ts_mpi_init(void) {
    int initialised = 0;
    MPI_Initialized(&initialised);
    if (initialised) return TS_OK;
    int provided = 0;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS)
        return ts_error_set(TS_E_UNAVAILABLE, "MPI_Init_thread failed");
    mpi_initialised_here = true;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    if (provided < MPI_THREAD_SERIALIZED)
        TS_WARN("MPI provides thread level %d only; collectives stay on one thread", provided);
    return TS_OK;
}

int ts_mpi_world_rank(void) {
    int r = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
}

int ts_mpi_world_size(void) {
    int n = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    return n;
}

void ts_mpi_finalize(void) {
    if (!mpi_initialised_here) return;
    mpi_initialised_here = false;
    if (mpi_failed) {
        fflush(stdout);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Finalize();
}

static int mpi_error(mpi_comm *c, const char *op, int code) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(code, text, &len);
    mpi_failed = true;
    return ts_error_set(TS_E_UNAVAILABLE, "%s in tensor-parallel group %d (rank %d of %d): %s", op,
                        c->color, c->base.rank, c->base.size, text);
}

/* Completes a started collective, or fails after the deadline. */
static int wait_request(mpi_comm *c, MPI_Request *req, const char *op) {
    int64_t deadline = ts_now_ns() + (int64_t)c->timeout_ms * 1000000;
    for (int spins = 0;; spins++) {
        int done = 0;
        int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return mpi_error(c, op, rc);
        if (done) return TS_OK;
        if (spins > 1000) {
            sched_yield();
            if ((spins & 63) == 0 && ts_now_ns() > deadline) {
                mpi_failed = true;
                return ts_error_set(TS_E_TIMEOUT,
                                    "%s in tensor-parallel group %d (rank %d of %d): no answer "
                                    "from the group within %d ms (a rank died or hangs)",
                                    op, c->color, c->base.rank, c->base.size, c->timeout_ms);
            }
        }
    }
}

static int mpi_allreduce(ts_comm *base, float *buf, size_t count) {
    mpi_comm *c = (mpi_comm *)base;
    MPI_Request req;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, buf, (int)count, MPI_FLOAT, MPI_SUM, c->comm, &req);
    if (rc != MPI_SUCCESS) return mpi_error(c, "all-reduce", rc);
    return wait_request(c, &req, "all-reduce");
}

static int mpi_broadcast(ts_comm *base, void *buf, size_t bytes, int root) {
    mpi_comm *c = (mpi_comm *)base;
    MPI_Request req;
    int rc = MPI_Ibcast(buf, (int)bytes, MPI_BYTE, root, c->comm, &req);
    if (rc != MPI_SUCCESS) return mpi_error(c, "broadcast", rc);
    return wait_request(c, &req, "broadcast");
}

static int mpi_allgather(ts_comm *base, const void *send, void *recv, size_t bytes) {
    mpi_comm *c = (mpi_comm *)base;
    MPI_Request req;
    int rc = MPI_Iallgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, c->comm, &req);
    if (rc != MPI_SUCCESS) return mpi_error(c, "all-gather", rc);
    return wait_request(c, &req, "all-gather");
}

static int mpi_barrier(ts_comm *base) {
    mpi_comm *c = (mpi_comm *)base;
    MPI_Request req;
    int rc = MPI_Ibarrier(c->comm, &req);
    if (rc != MPI_SUCCESS) return mpi_error(c, "barrier", rc);
    return wait_request(c, &req, "barrier");
}

static void mpi_destroy(ts_comm *base) {
    mpi_comm *c = (mpi_comm *)base;
    if (!mpi_failed && c->comm != MPI_COMM_NULL) MPI_Comm_free(&c->comm);
    free(c);
}

int ts_comm_create_mpi(int color, int key, const ts_comm_options *opts, ts_comm **out) {
    *out = NULL;
    mpi_comm *c = calloc(1, sizeof *c);
    if (!c) return ts_error_set(TS_E_NOMEM, "out of memory");
    c->color = color;
    c->timeout_ms = opts && opts->timeout_ms > 0 ? opts->timeout_ms : 60000;
    int rc = MPI_Comm_split(MPI_COMM_WORLD, color, key, &c->comm);
    if (rc != MPI_SUCCESS) {
        free(c);
        return ts_error_set(TS_E_UNAVAILABLE, "MPI_Comm_split failed");
    }
    MPI_Comm_set_errhandler(c->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(c->comm, &c->base.rank);
    MPI_Comm_size(c->comm, &c->base.size);
    c->base.kind = "mpi";
    c->base.allreduce_sum_f32 = mpi_allreduce;
    c->base.broadcast = mpi_broadcast;
    c->base.allgather = mpi_allgather;
    c->base.barrier = mpi_barrier;
    c->base.destroy = mpi_destroy;
    *out = &c->base;
    return TS_OK;
}
