/*
 * test_comm_nccl.c — the NCCL communicator (node/comm_nccl.c) in a group of one rank, on the CUDA
 * backend's stream: creation over a "self" control communicator, all-reduce of device buffers
 * in order with the backend's kernels (an add queued before the collective is seen by it, a
 * download after it sees its result), the host collectives through the control communicator,
 * and destruction. Without a CUDA device it prints "SKIP: no CUDA device (...)" and exits 77.
 * Multi-rank NCCL runs in the GPU integration tests (docs/cuda.md).
 */
#include "common/error.h"
#include "kernels/kernels.h"
#include "node/comm.h"
#include "test.h"
#include "test_cuda_util.h"

static ts_backend *g;

static void test_one_rank_group(void) {
    ts_comm *control = NULL, *c = NULL;
    CHECK_OK(ts_comm_create_self(&control));
    ts_comm_options o = {.timeout_ms = 30000};
    int rc = ts_comm_create_nccl(control, g->device_stream, g->device_index, &o, &c);
    CHECK_OK(rc);
    if (rc) {
        ts_comm_destroy(control);
        return;
    }
    CHECK_EQ_STR(c->kind, "nccl");
    CHECK_EQ_INT(c->rank, 0);
    CHECK_EQ_INT(c->size, 1);

    /* the collective itself (the inline wrapper skips groups of one) */
    static const size_t counts[] = {1, 1000, (size_t)1 << 22};
    for (size_t k = 0; k < 3; k++) {
        const size_t n = counts[k];
        float *h = malloc(n * sizeof(float)), *ones = malloc(n * sizeof(float));
        for (size_t i = 0; i < n; i++) {
            h[i] = (float)(i % 1000) * 0.5f - 7.0f;
            ones[i] = 1.0f;
        }
        float *d = g->alloc(g, n * sizeof(float)), *d1 = g->alloc(g, n * sizeof(float));
        g->upload(g, d, h, n * sizeof(float));
        g->upload(g, d1, ones, n * sizeof(float));
        g->add(g, d, d1, (int64_t)n); /* queued on the stream, not waited for */
        CHECK_OK(c->allreduce_sum_f32(c, d, n));
        float *back = malloc(n * sizeof(float));
        g->download(g, back, d, n * sizeof(float));
        CHECK_OK(g->sync(g));
        size_t bad = 0;
        for (size_t i = 0; i < n; i++)
            bad += back[i] != h[i] + 1.0f;
        CHECK_EQ_INT(bad, 0);
        free(back);
        g->free(g, d);
        g->free(g, d1);
        free(h);
        free(ones);
    }

    int32_t mine = 42, all = 0;
    CHECK_OK(ts_comm_allgather(c, &mine, &all, sizeof mine));
    CHECK_EQ_INT(all, 42);
    CHECK_OK(c->barrier(c));
    CHECK_OK(c->broadcast(c, &mine, sizeof mine, 0));
    ts_comm_destroy(c); /* with its control communicator */
}

int main(void) {
    g = tc_cuda_backend_or_skip();
    RUN(test_one_rank_group);
    ts_backend_destroy(g);
    return test_summary();
}
