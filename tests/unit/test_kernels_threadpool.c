/*
 * test_kernels_threadpool.c — the kernel thread pool: every worker index runs exactly once per
 * dispatch, across many back-to-back dispatches, with fewer workers than the pool, and after the
 * workers have gone to sleep on the futex.
 */
#include "common/clock.h"
#include "common/error.h"
#include "kernels/cpu/threadpool.h"
#include "test.h"

#include <stdatomic.h>

typedef struct {
    _Atomic int calls[16];
    _Atomic int nth_seen;
    long sum[16];
    int round;
} ctx;

static void task(void *arg, int ith, int nth) {
    ctx *c = arg;
    atomic_fetch_add(&c->calls[ith], 1);
    atomic_store(&c->nth_seen, nth);
    c->sum[ith] += c->round; /* each index is written by one thread at a time */
}

static void test_each_worker_runs_once_per_dispatch(void) {
    for (int size = 1; size <= 4; size++) {
        ts_threadpool *pool;
        CHECK_OK(ts_threadpool_create(size, &pool));
        CHECK_EQ_INT(ts_threadpool_size(pool), size);
        ctx c = {0};
        /* more threads than cores sleep between dispatches (no spinning): fewer rounds */
        const int ROUNDS = size <= ts_cpu_count() ? 20000 : 2000;
        for (c.round = 1; c.round <= ROUNDS; c.round++)
            ts_threadpool_run(pool, 0, task, &c);
        for (int i = 0; i < size; i++) {
            CHECK_EQ_INT(atomic_load(&c.calls[i]), ROUNDS);
            CHECK(c.sum[i] == (long)ROUNDS * (ROUNDS + 1) / 2);
        }
        CHECK_EQ_INT(atomic_load(&c.nth_seen), size);
        ts_threadpool_destroy(pool);
    }
    ts_threadpool_destroy(NULL);
}

static void test_max_threads_limits_the_workers(void) {
    ts_threadpool *pool;
    CHECK_OK(ts_threadpool_create(3, &pool));
    ctx c = {0};
    ts_threadpool_run(pool, 1, task, &c);
    CHECK_EQ_INT(atomic_load(&c.nth_seen), 1);
    ts_threadpool_run(pool, 2, task, &c);
    CHECK_EQ_INT(atomic_load(&c.nth_seen), 2);
    CHECK_EQ_INT(atomic_load(&c.calls[0]), 2);
    CHECK_EQ_INT(atomic_load(&c.calls[1]), 1);
    CHECK_EQ_INT(atomic_load(&c.calls[2]), 0);
    ts_threadpool_destroy(pool);
}

static void test_sleeping_workers_wake_up(void) {
    ts_threadpool *pool;
    CHECK_OK(ts_threadpool_create(3, &pool));
    ctx c = {0};
    for (int i = 0; i < 5; i++) {
        ts_sleep_ms(30); /* longer than the spin: the workers are in FUTEX_WAIT */
        c.round = 1;
        ts_threadpool_run(pool, 0, task, &c);
    }
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(atomic_load(&c.calls[i]), 5);
    ts_threadpool_destroy(pool);
}

int main(void) {
    printf("cores: %d\n", ts_cpu_count());
    RUN(test_each_worker_runs_once_per_dispatch);
    RUN(test_max_threads_limits_the_workers);
    RUN(test_sleeping_workers_wake_up);
    return test_summary();
}
