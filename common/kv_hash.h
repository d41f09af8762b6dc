/*
 * kv_hash.h — the prefix cache's block keys, defined once for the node (kv_pool.h, the host and
 * disk tiers) and the coordinator (cache-aware routing computes the same keys from a prompt).
 *
 * vLLM's scheme: a full KV block is keyed by a hash of its token ids chained with the key of the
 * block before it, so a key names the whole prefix up to the block's end, not just its content.
 * The chain starts at a root that mixes the model's KV fingerprint (ts_kvx_fingerprint: the
 * weights, KV type, block size and layout) with the request's cache salt, so blocks of another
 * model never match, and tenants that pass different salts never share a block.
 *
 * Keys are 64-bit and not secret: every user of a key verifies it against what it stands for
 * (kv_pool.c compares the block's tokens and its parent block; the tiers compare tokens and the
 * parent key), so a collision can make a lookup miss but never return another prefix's KV in
 * the device pool. The mixing is splitmix64's finalizer per token, which spreads every input
 * bit over the whole key. 0 is never a key (it stands for "none").
 *
 * Pure functions; thread-safe.
 */
#ifndef TS_COMMON_KV_HASH_H
#define TS_COMMON_KV_HASH_H

#include <stddef.h>
#include <stdint.h>

static inline uint64_t ts_kv_hash_mix(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The 64-bit digest of a cache salt string (NULL or "" = no salt = 0). */
static inline uint64_t ts_kv_salt_digest(const char *salt) {
    if (!salt || !salt[0]) return 0;
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)salt; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    h = ts_kv_hash_mix(h);
    return h ? h : 1;
}

/* The chain's root: the parent key of a sequence's first block. */
static inline uint64_t ts_kv_hash_root(uint64_t fingerprint, uint64_t salt_digest) {
    uint64_t h = ts_kv_hash_mix(ts_kv_hash_mix(fingerprint ^ 0x6b76726f6f74ull) ^ salt_digest);
    return h ? h : 1;
}

/* The key of a block of n tokens after the block keyed `parent` (the root for the first). */
static inline uint64_t ts_kv_hash_block(uint64_t parent, const int32_t *tokens, int32_t n) {
    uint64_t h = ts_kv_hash_mix(parent ^ (uint64_t)(uint32_t)n);
    for (int32_t i = 0; i < n; i++)
        h = ts_kv_hash_mix(h ^ (uint64_t)(uint32_t)tokens[i]);
    return h ? h : 1;
}

/* The checksum of a stored block's bytes (the host and disk tiers keep one per block and check
 * it before a block goes back into the KV cache): 8 bytes at a time through the mixer, the
 * position folded in so that moved words count, the tail zero-padded. Not cryptographic: it
 * catches torn writes, bit rot and stray writes, not an adversary with write access. */
static inline uint64_t ts_kv_block_checksum(const void *data, size_t n) {
    const unsigned char *p = (const unsigned char *)data;
    uint64_t h = ts_kv_hash_mix(0x636865636bull ^ (uint64_t)n);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        __builtin_memcpy(&w, p + i, 8);
        h = ts_kv_hash_mix(h ^ w) + i;
    }
    uint64_t w = 0;
    for (size_t k = 0; i + k < n; k++)
        w |= (uint64_t)p[i + k] << (8 * k);
    return ts_kv_hash_mix(h ^ w);
}

#endif
