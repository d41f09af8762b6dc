/*
 * kv_checksum.cu — the NCCL KV transport's payload checksum on the device (kv_transfer_nccl.h:
 * kvx_sum_launch; the function is ts_kvx_payload_sum in kv_transfer.h, its term in
 * kv_checksum.h). Memory-bound: every thread sums the terms of a strided set of words, a warp
 * and then the thread block reduce, and one atomic add per thread block lands in the 64-bit
 * counter. Unsigned addition wraps and commutes, so the result is exact and independent of
 * the order, equal to the host reference bit for bit.
 */
#include "kvx/kv_checksum.h"

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 1024;

/* Word `i` (0-based) of a range of `bytes` bytes, the last one zero-padded. */
__device__ uint32_t load_word(const uint8_t *p, size_t bytes, size_t i) {
    size_t at = i * 4;
    if (at + 4 <= bytes && ((uintptr_t)(p + at) & 3) == 0) return *(const uint32_t *)(p + at);
    uint32_t w = 0;
    for (size_t b = 0; b < 4 && at + b < bytes; b++)
        w |= (uint32_t)p[at + b] << (8 * b);
    return w;
}

__global__ void sum_kernel(const uint8_t *k, const uint8_t *v, size_t part, size_t words,
                           unsigned long long *out) {
    unsigned long long acc = 0;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < 2 * words; i += stride) {
        bool in_v = i >= words;
        size_t w = in_v ? i - words : i;
        acc += ts_kvx_sum_term(i, load_word(in_v ? v : k, part, w));
    }
    for (int off = 16; off > 0; off >>= 1)
        acc += __shfl_down_sync(0xffffffffu, acc, off);
    __shared__ unsigned long long warp_sums[kThreads / 32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) warp_sums[warp] = acc;
    __syncthreads();
    if (warp == 0) {
        acc = lane < kThreads / 32 ? warp_sums[lane] : 0;
        for (int off = 16; off > 0; off >>= 1)
            acc += __shfl_down_sync(0xffffffffu, acc, off);
        if (lane == 0) atomicAdd(out, acc);
    }
}

} // namespace

extern "C" int kvx_sum_launch(const void *k, const void *v, size_t part, unsigned long long *sum,
                              void *stream) {
    size_t words = (part + 3) / 4;
    if (words == 0) return 0;
    size_t blocks = (2 * words + kThreads - 1) / kThreads;
    if (blocks > kMaxBlocks) blocks = kMaxBlocks;
    sum_kernel<<<(unsigned)blocks, kThreads, 0, (cudaStream_t)stream>>>(
        (const uint8_t *)k, (const uint8_t *)v, part, words, sum);
    return (int)cudaGetLastError();
}
