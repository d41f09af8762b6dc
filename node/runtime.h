/*
 * runtime.h — one loaded rank: model file, backend, communicator, engine and (on the group
 * leader) the scheduler. `tessera generate`, `tessera bench-engine` and `tessera-node` all start
 * the same way through here, with the same flags.
 *
 * Group membership comes from the launcher: under mpirun/srun (Open MPI or PMIx environment
 * variables present) the process joins MPI and its world is split into tensor-parallel groups of
 * --tp ranks (default: the whole world); otherwise it is a group of one and MPI is not touched.
 * MPI must be initialised before any thread or gRPC starts (see NOTES.md), so open the runtime
 * first.
 */
#ifndef TS_NODE_RUNTIME_H
#define TS_NODE_RUNTIME_H

#include "common/flags.h"
#include "model/gguf.h"
#include "model/model.h"
#include "node/engine.h"
#include "node/scheduler.h"

#include <stdbool.h>

enum { TS_RUNTIME_MAX_FLAGS = 24 };

typedef struct ts_runtime_options {
    const char *model_path; /* NULL: the bundled model */
    const char *device;     /* "cpu", "cuda", "cuda:N" */
    bool device_per_rank;   /* rank r of the group uses device + r (one GPU per rank) */
    int threads;            /* kernel threads per rank; 0: all cores of this process's share */
    const char *isa;        /* "auto", "scalar", "avx2", "avx512" */
    int ctx;                /* context length; 0: the model's */
    size_t kv_memory;       /* KV cache bytes per rank */
    size_t kv_host_memory;  /* host-memory KV tier bytes per rank (kv_tiers.h); 0: none */
    const char *kv_disk;    /* disk KV tier directory (kv_tier_disk.h); NULL: none */
    size_t kv_disk_size;    /* its bytes per rank (required with kv_disk) */
    size_t device_memory;   /* backend memory budget per rank (weights, KV, scratch); 0: all */
    const char *kv_type;    /* "f16" or "f32" */
    int block_size;
    int batch_tokens;
    int batch_seqs;
    int prefill_chunk;
    double filler_slack; /* ts_sched_options.filler_slack */
    double decode_slack; /* ts_sched_options.decode_slack */
    bool no_prefix_cache;
    int tp;                 /* ranks per tensor-parallel group under MPI; 0: the whole world */
    int comm_timeout_ms;
    const char *log_level;
} ts_runtime_options;

void ts_runtime_options_default(ts_runtime_options *o);

/* Appends the runtime's flags (model, device, threads, ...) to `flags`; returns how many
 * (at most TS_RUNTIME_MAX_FLAGS). */
int ts_runtime_flags(ts_runtime_options *o, ts_flag *flags);

typedef struct ts_runtime ts_runtime;

/* Loads everything. Errors name what failed ("model.gguf: ...", "--kv-type: ..."). */
int ts_runtime_open(const ts_runtime_options *o, ts_runtime **out);
/* Stops the group's followers (leader), frees everything, leaves MPI. Returns the first error
 * seen while stopping. NULL is fine. */
int ts_runtime_close(ts_runtime *rt);

bool ts_runtime_is_leader(const ts_runtime *rt);
/* Followers: serve the leader's steps until it stops the group. */
int ts_runtime_follow(ts_runtime *rt);

const char *ts_runtime_model_path(const ts_runtime *rt);
const ts_gguf *ts_runtime_gguf(const ts_runtime *rt);
const ts_model *ts_runtime_model(const ts_runtime *rt);
ts_backend *ts_runtime_backend(const ts_runtime *rt);
ts_engine *ts_runtime_engine(const ts_runtime *rt);
ts_sched *ts_runtime_scheduler(const ts_runtime *rt); /* NULL on followers */
ts_kv_tiers *ts_runtime_kv_tiers(const ts_runtime *rt); /* NULL when no tier is configured */
ts_comm *ts_runtime_comm(const ts_runtime *rt);

#endif
