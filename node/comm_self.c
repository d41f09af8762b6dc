/* comm_self.c — the communicator of a group of one (see comm.h). */
#include "node/comm.h"

#include "common/error.h"

#include <stdlib.h>
#include <string.h>

static int self_allreduce(ts_comm *c, float *buf, size_t count) { return 0; }
static int self_broadcast(ts_comm *c, void *buf, size_t bytes, int root) { return 0; }
static int self_allgather(ts_comm *c, const void *send, void *recv, size_t bytes) {
    if (send != recv) memmove(recv, send, bytes);
    return 0;
}
static int self_barrier(ts_comm *c) { return 0; }
static void self_destroy(ts_comm *c) { free(c); }

int ts_comm_create_self(ts_comm **out) {
    ts_comm *c = calloc(1, sizeof *c);
    if (!c) return ts_error_set(TS_E_NOMEM, "out of memory");
    c->kind = "self";
    c->rank = 0;
    c->size = 1;
    c->allreduce_sum_f32 = self_allreduce;
    c->broadcast = self_broadcast;
    c->allgather = self_allgather;
    c->barrier = self_barrier;
    c->destroy = self_destroy;
    *out = c;
    return TS_OK;
}

void ts_comm_destroy(ts_comm *c) {
    if (c) c->destroy(c);
}
