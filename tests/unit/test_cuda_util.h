/*
 * test_cuda_util.h — the CUDA tests' start: the backend on device "cuda", or a skip (exit 77,
 * "SKIP: no CUDA device (why)") on a machine without one; any other failure ends the test.
 */
#ifndef TS_TESTS_TEST_CUDA_UTIL_H
#define TS_TESTS_TEST_CUDA_UTIL_H

#include "common/error.h"
#include "kernels/kernels.h"
#include "test.h"

#include <cuda_runtime.h>

/* The number of CUDA devices; skips (77) when there is none, or fewer than `need` (`why` says
 * what needs them). For tests that use CUDA directly, without a backend. */
static inline int tc_cuda_devices_or_skip(int need, const char *why) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    char text[512];
    if (e != cudaSuccess || n < 1) {
        snprintf(text, sizeof text, "no CUDA device (%s)",
                 e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount found none");
        test_skip(text);
    }
    if (n < need) {
        snprintf(text, sizeof text, "needs %d CUDA devices, found %d (%s)", need, n, why);
        test_skip(text);
    }
    return n;
}

static inline ts_backend *tc_cuda_backend_or_skip(void) {
    ts_backend_options o = {.device = "cuda"};
    ts_backend *be = NULL;
    int rc = ts_backend_create(&o, &be);
    if (rc == TS_E_UNSUPPORTED) {
        char why[512];
        const char *msg = ts_error_message();
        if (strncmp(msg, "no CUDA device: ", 16) == 0) msg += 16;
        snprintf(why, sizeof why, "no CUDA device (%s)", msg);
        test_skip(why);
    }
    if (rc) {
        fprintf(stderr, "cannot create the CUDA backend: %s\n", ts_error_message());
        exit(1);
    }
    fprintf(stderr, "backend %s\n", be->name);
    return be;
}

#endif
