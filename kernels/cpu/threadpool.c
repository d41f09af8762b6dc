/*
 * threadpool.c — see threadpool.h.
 *
 * Dispatch protocol. The caller publishes (fn, ctx, nth), sets `pending` to the number of
 * workers and bumps `generation`. Workers wait for `generation` to change: first spinning (a
 * decode step dispatches every few microseconds, and a futex wake costs about as much as the
 * task), then, after SPIN_NS without work, sleeping in FUTEX_WAIT on `generation`. The caller
 * runs its share, then waits for `pending` to reach zero the same way (spin, then FUTEX_WAIT on
 * `pending`; the worker that brings it to zero wakes it).
 *
 * Lost wake-ups are excluded by the usual Dekker pairing, all operations sequentially
 * consistent: a sleeper first announces itself (n_sleeping / caller_sleeping) and then lets the
 * kernel re-check the word it waits on; a waker first changes the word and then reads the
 * announcement. Either the waker sees the sleeper, or the kernel sees the new value.
 */
#include "kernels/cpu/threadpool.h"

#include "common/clock.h"
#include "common/error.h"

#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

enum { SPIN_NS = 200 * 1000 }; /* how long an idle thread spins before it sleeps */

struct ts_threadpool {
    int n_threads;
    pthread_t *threads; /* [n_threads], entry 0 unused (the caller) */

    /* The task; written by the caller before `generation` is bumped. */
    ts_task_fn fn;
    void *ctx;
    int nth;
    int64_t spin_ns; /* 0 when there are more threads than cores: spinning would only delay the
                      * thread that holds the work */

    _Atomic uint32_t generation; /* futex word of the workers */
    _Atomic uint32_t pending;    /* workers still busy; futex word of the caller */
    _Atomic int n_sleeping;      /* workers in (or entering) FUTEX_WAIT */
    _Atomic int caller_sleeping;
    _Atomic int stop;
};

typedef struct {
    ts_threadpool *pool;
    int index;
} worker_arg;

static void futex_wait(_Atomic uint32_t *word, uint32_t expected) {
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *word, int count) {
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, count, NULL, NULL, 0);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Returns once `*word` differs from `seen`, spinning first and then sleeping. */
static uint32_t wait_change(_Atomic uint32_t *word, uint32_t seen, _Atomic int *sleeping,
                            int64_t spin_ns) {
    int64_t spin_until = ts_now_ns() + spin_ns;
    for (unsigned it = 1;; it++) {
        uint32_t now = atomic_load(word);
        if (now != seen) return now;
        if (spin_ns == 0 || ((it & 255) == 0 && ts_now_ns() > spin_until)) {
            atomic_fetch_add(sleeping, 1);
            futex_wait(word, seen);
            atomic_fetch_sub(sleeping, 1);
        } else {
            cpu_relax();
        }
    }
}

static void *worker_main(void *arg) {
    worker_arg *wa = arg;
    ts_threadpool *pool = wa->pool;
    int index = wa->index;
    free(wa);
    uint32_t seen = 0;
    for (;;) {
        seen = wait_change(&pool->generation, seen, &pool->n_sleeping, pool->spin_ns);
        if (atomic_load(&pool->stop)) return NULL;
        if (index < pool->nth) pool->fn(pool->ctx, index, pool->nth);
        if (atomic_fetch_sub(&pool->pending, 1) == 1 && atomic_load(&pool->caller_sleeping))
            futex_wake(&pool->pending, 1);
    }
}

int ts_cpu_count(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int ts_threadpool_create(int n_threads, ts_threadpool **out) {
    *out = NULL;
    if (n_threads <= 0) n_threads = ts_cpu_count();
    ts_threadpool *pool = calloc(1, sizeof *pool);
    if (!pool) return ts_error_set(TS_E_NOMEM, "thread pool: out of memory");
    pool->n_threads = n_threads;
    pool->spin_ns = n_threads <= ts_cpu_count() ? SPIN_NS : 0;
    pool->threads = calloc((size_t)n_threads, sizeof *pool->threads);
    if (!pool->threads) {
        free(pool);
        return ts_error_set(TS_E_NOMEM, "thread pool: out of memory");
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        int rc = wa ? 0 : -1;
        if (wa) {
            wa->pool = pool;
            wa->index = i;
            rc = pthread_create(&pool->threads[i], NULL, worker_main, wa);
            if (rc != 0) free(wa);
        }
        if (rc != 0) {
            pool->n_threads = i; /* join the ones that started */
            ts_threadpool_destroy(pool);
            return ts_error_set(TS_E_INTERNAL, "thread pool: cannot start kernel thread %d of %d",
                                i, n_threads);
        }
    }
    *out = pool;
    return 0;
}

void ts_threadpool_destroy(ts_threadpool *pool) {
    if (!pool) return;
    if (pool->n_threads > 1) {
        atomic_store(&pool->stop, 1);
        atomic_fetch_add(&pool->generation, 1);
        futex_wake(&pool->generation, INT_MAX);
        for (int i = 1; i < pool->n_threads; i++)
            pthread_join(pool->threads[i], NULL);
    }
    free(pool->threads);
    free(pool);
}

int ts_threadpool_size(const ts_threadpool *pool) {
    return pool->n_threads;
}

void ts_threadpool_run(ts_threadpool *pool, int max_threads, ts_task_fn fn, void *ctx) {
    int nth = pool->n_threads;
    if (max_threads > 0 && max_threads < nth) nth = max_threads;
    if (nth == 1) {
        fn(ctx, 0, 1);
        return;
    }
    pool->fn = fn;
    pool->ctx = ctx;
    pool->nth = nth;
    atomic_store(&pool->pending, (uint32_t)(pool->n_threads - 1));
    atomic_fetch_add(&pool->generation, 1);
    if (atomic_load(&pool->n_sleeping) > 0) futex_wake(&pool->generation, INT_MAX);

    fn(ctx, 0, nth);

    int64_t spin_until = ts_now_ns() + pool->spin_ns;
    for (unsigned it = 1;; it++) {
        uint32_t left = atomic_load(&pool->pending);
        if (left == 0) break;
        if (pool->spin_ns == 0 || ((it & 255) == 0 && ts_now_ns() > spin_until)) {
            atomic_store(&pool->caller_sleeping, 1);
            while ((left = atomic_load(&pool->pending)) != 0)
                futex_wait(&pool->pending, left);
            atomic_store(&pool->caller_sleeping, 0);
            break;
        }
        cpu_relax();
    }
}
