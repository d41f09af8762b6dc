/*
 * kv_fingerprint.h — the one KV-compatibility fingerprint of a model, in node/ so that every
 * user of KV blocks can reach it: the KV transfer (kvx/), the prefix cache's chain root
 * (scheduler.h: cache_namespace) and the host and disk tiers, whose blocks must never be read
 * back into another model.
 */
#ifndef TS_NODE_KV_FINGERPRINT_H
#define TS_NODE_KV_FINGERPRINT_H

#include "common/dtype.h"
#include "model/model.h"

#include <stdint.h>

/* The one KV-compatibility fingerprint: a 64-bit identity of everything two groups must share to
 * exchange KV blocks — the weights (the shape, and the bytes of the embedding and of every
 * layer's K and V projection, sampled), the KV type, the block size and the cache layout
 * (TS_KV_LAYOUT_VERSION) — but not the TP degree (heads are re-split on the way). Two processes
 * agree only when their KV blocks mean the same thing. The transfer header carries it, and
 * groups register it (Register.model_fingerprint, in hex) so that the coordinator pairs only
 * equal ones. Cheap (reads a few KiB per layer). */
uint64_t ts_kvx_fingerprint(const ts_model *m, ts_dtype kv_type, int32_t block_size);

#endif
