/*
 * batch.h — the batch runner: the coordinator's third front door (after gRPC and HTTP), which
 * runs the requests of stored batches (batch_store.h) through the one request path.
 *
 * A thread of its own (it does the store's disk I/O, which must not happen under co->mu):
 *   validating   reads the input file, checks every line (JSON, custom_id unique, method POST,
 *                url = the batch's endpoint, the body through the HTTP API's own mapping and the
 *                model name); any bad line fails the batch with each error and its line number,
 *                else the lines are stored and the batch is in_progress;
 *   in_progress  keeps as many requests admitted (co_request_admit, priority CO_BATCH_PRIORITY,
 *                below every interactive request) as the groups have free sequence slots beyond
 *                a reserve kept for interactive traffic (co_route_spare), and no more, so batch
 *                work never waits in the coordinator's queue ahead of a client; results are
 *                recorded in the store as they come; near the end of its window (the last
 *                tenth) a batch is raised to CO_BATCH_PRIORITY_URGENT, still below interactive;
 *   finalizing → completed when no request is left; expired at expires_at and cancelled after a
 *                cancel (the running requests cancelled, finished results kept; unfinished lines
 *                go to the error file as batch_expired / batch_cancelled).
 * A line without a seed gets one derived from the input file and its custom_id (not a fresh
 * random one), so a sampled request run again after a crash gives the text the first run would
 * have given, and so does another batch over the same file.
 * A request that fails for a transient reason (no group, a group lost, the queue full) stays
 * pending and runs again; one the validation refuses is a failed line (status 400). After a
 * crash, restarting on the same --state-dir continues every batch: finished lines are not run
 * again (their results are in the store), the others are.
 */
#ifndef TS_COORDINATOR_BATCH_H
#define TS_COORDINATOR_BATCH_H

#include "coordinator/batch_store.h"
#include "coordinator/coordinator.h"
#include "coordinator/http.h"

enum {
    CO_BATCH_PRIORITY = -1000,     /* interactive requests default to 0 */
    CO_BATCH_PRIORITY_URGENT = -1, /* a batch in the last tenth of its window */
    CO_BATCH_MAX_ERRORS = 1000,    /* validation errors listed in errors.data */
};

typedef struct co_batch co_batch;

/* Starts the runner over `store` (the HTTP front door's: the same mapping of bodies). Not under
 * co->mu. 0 or TS_E_NOMEM. */
int co_batch_start(coordinator *co, co_http *http, co_store *store, co_batch **out);
/* Stops it: its running requests are cancelled (they stay pending in the store and run again
 * after the next start). Not under co->mu. NULL is a no-op. */
void co_batch_stop(co_batch *b);

#endif
