/*
 * kv_checksum.h — one term of the NCCL KV transport's payload checksum (kv_transfer.h:
 * ts_kvx_payload_sum), shared by the host reference (kv_transfer.c) and the CUDA kernel
 * (kv_checksum.cu) so that both compute the same function from one definition.
 *
 * The checksum is a sum modulo 2^64 of terms, one per 32-bit word: a splitmix64 finalizer of
 * (position << 32 | word). A changed word changes its term to an unrelated value, moved or
 * swapped words change their positions' terms, and a sum has no order, so a kernel may add
 * the terms in any order (atomics, tree reductions) and still give the host's exact value.
 */
#ifndef TS_NODE_KV_CHECKSUM_H
#define TS_NODE_KV_CHECKSUM_H

#include <stdint.h>

#if defined(__CUDACC__)
#define TS_KVX_HOST_DEVICE __host__ __device__
#else
#define TS_KVX_HOST_DEVICE
#endif

TS_KVX_HOST_DEVICE static inline uint64_t ts_kvx_sum_term(uint64_t index, uint32_t w) {
    uint64_t z = (index << 32 | w) + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

#endif
