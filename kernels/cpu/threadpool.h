/*
 * threadpool.h — the persistent kernel thread pool of the CPU backend.
 *
 * A pool of n threads runs one task at a time: ts_threadpool_run(pool, fn, ctx) calls
 * fn(ctx, ith, nth) once for every ith in 0..nth-1 and returns when all calls have returned.
 * The calling thread is worker 0 and does its share, so a pool of size 1 has no extra thread
 * and runs fn inline.
 *
 * Dispatch is meant for kernels that last microseconds (one decode matmul is ~20 µs): idle
 * workers spin for a short while on the task counter, then sleep on a futex so that a pool
 * nobody uses burns no CPU. No allocation happens per dispatch.
 *
 * Partitioning is the task's business. The kernels split their *outputs* (rows, columns,
 * heads) between the nth calls and never a reduction, so the result does not depend on nth
 * (see the determinism contract in kernels/kernels.h).
 *
 * Thread-safety: one thread dispatches at a time (the backend's caller). fn must not dispatch.
 */
#ifndef TS_KERNELS_CPU_THREADPOOL_H
#define TS_KERNELS_CPU_THREADPOOL_H

typedef struct ts_threadpool ts_threadpool;

typedef void (*ts_task_fn)(void *ctx, int ith, int nth);

/* n_threads <= 0: all online cores. Returns TS_E_NOMEM / TS_E_INTERNAL with a message. */
int ts_threadpool_create(int n_threads, ts_threadpool **out);
void ts_threadpool_destroy(ts_threadpool *pool); /* NULL is fine; joins the threads */

int ts_threadpool_size(const ts_threadpool *pool);

/* Runs fn on min(max_threads, size) workers (max_threads <= 0: all of them); the caller is
 * worker 0. Small tasks pass max_threads = 1 to avoid waking anybody. */
void ts_threadpool_run(ts_threadpool *pool, int max_threads, ts_task_fn fn, void *ctx);

/* The online core count (at least 1). */
int ts_cpu_count(void);

#endif
