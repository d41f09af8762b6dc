/*
 * test_kv_checksum_cuda.c — the NCCL KV transport's device checksum (kvx/kv_checksum.cu,
 * kvx_sum_launch) equals its host reference ts_kvx_payload_sum bit for bit: random K and V
 * ranges of many lengths (word multiples and not, one byte to several MiB, past one grid of
 * thread blocks) at every byte misalignment, and sums added into a shared counter by several
 * launches. Label gpu; one GPU is enough; "SKIP: no CUDA device (...)" (77) without one.
 */
#include "kvx/kv_transfer.h"
#include "kvx/kv_transfer_nccl.h"
#include "test.h"
#include "test_cuda_util.h"

#include <cuda_runtime.h>

static uint8_t *host_k, *host_v;
static uint8_t *dev_k, *dev_v;
static unsigned long long *dev_sum;
enum { MAX_PART = (3 << 20) + 7 };

static uint32_t device_sum(size_t k_off, size_t v_off, size_t part) {
    unsigned long long sum = 0;
    CHECK(cudaMemset(dev_sum, 0, sizeof sum) == cudaSuccess);
    CHECK_EQ_INT(kvx_sum_launch(dev_k + k_off, dev_v + v_off, part, dev_sum, NULL), 0);
    CHECK(cudaMemcpy(&sum, dev_sum, sizeof sum, cudaMemcpyDeviceToHost) == cudaSuccess);
    return ts_kvx_sum_fold(sum);
}

static void test_device_sum_equals_the_host_reference(void) {
    const size_t parts[] = {1, 3, 4, 5, 63, 1000, 4099, 65536, 1 << 20, MAX_PART - 3};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        for (size_t k_off = 0; k_off < 4; k_off++) {
            size_t v_off = (k_off * 3) % 4, part = parts[i];
            uint32_t want = ts_kvx_payload_sum(host_k + k_off, host_v + v_off, part);
            uint32_t got = device_sum(k_off, v_off, part);
            if (got != want)
                fprintf(stderr, "  part %zu, offsets %zu/%zu: device %08x, host %08x\n", part,
                        k_off, v_off, got, want);
            CHECK_EQ_INT(got, want);
        }
}

static void test_launches_add_into_one_counter(void) {
    /* Two launches into one counter give the sum of both (the receiver's slots rely on the
     * counter starting at zero; the sender zeroes a batch of them). */
    unsigned long long a = 0, b = 0, both = 0;
    CHECK(cudaMemset(dev_sum, 0, sizeof both) == cudaSuccess);
    CHECK_EQ_INT(kvx_sum_launch(dev_k, dev_v, 4096, dev_sum, NULL), 0);
    CHECK(cudaMemcpy(&a, dev_sum, sizeof a, cudaMemcpyDeviceToHost) == cudaSuccess);
    CHECK(cudaMemset(dev_sum, 0, sizeof both) == cudaSuccess);
    CHECK_EQ_INT(kvx_sum_launch(dev_k + 4096, dev_v + 4096, 4096, dev_sum, NULL), 0);
    CHECK(cudaMemcpy(&b, dev_sum, sizeof b, cudaMemcpyDeviceToHost) == cudaSuccess);
    CHECK_EQ_INT(kvx_sum_launch(dev_k, dev_v, 4096, dev_sum, NULL), 0);
    CHECK(cudaMemcpy(&both, dev_sum, sizeof both, cudaMemcpyDeviceToHost) == cudaSuccess);
    CHECK(both == a + b);
}

int main(void) {
    tc_cuda_devices_or_skip(1, "");
    host_k = malloc(MAX_PART + 8);
    host_v = malloc(MAX_PART + 8);
    if (!host_k || !host_v || cudaMalloc((void **)&dev_k, MAX_PART + 8) != cudaSuccess ||
        cudaMalloc((void **)&dev_v, MAX_PART + 8) != cudaSuccess ||
        cudaMalloc((void **)&dev_sum, sizeof *dev_sum) != cudaSuccess) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    uint32_t seed = 99;
    for (size_t i = 0; i < MAX_PART + 8; i++) {
        seed = seed * 1664525u + 1013904223u;
        host_k[i] = (uint8_t)(seed >> 24);
        host_v[i] = (uint8_t)(seed >> 16);
    }
    cudaMemcpy(dev_k, host_k, MAX_PART + 8, cudaMemcpyHostToDevice);
    cudaMemcpy(dev_v, host_v, MAX_PART + 8, cudaMemcpyHostToDevice);
    RUN(test_device_sum_equals_the_host_reference);
    RUN(test_launches_add_into_one_counter);
    cudaFree(dev_k);
    cudaFree(dev_v);
    cudaFree(dev_sum);
    free(host_k);
    free(host_v);
    return test_summary();
}
