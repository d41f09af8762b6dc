/* runtime.c — see runtime.h. */
#include "node/runtime.h"

#include "common/error.h"
#include "common/kv_geometry.h"
#include "common/log.h"
#include "common/paths.h"
#include "model/hf.h"
#include "node/kv_fingerprint.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ts_runtime {
    char model_path[PATH_MAX];
    char device[32]; /* --device-per-rank: this rank's device */
    bool used_mpi;
    ts_gguf *gguf;
    ts_model model;
    bool model_loaded;
    ts_backend *be;
    ts_comm *comm;
    ts_engine *engine;
    ts_kv_tiers *tiers;
    ts_sched *sched;
};

void ts_runtime_options_default(ts_runtime_options *o) {
    memset(o, 0, sizeof *o);
    o->device = "cpu";
    o->isa = "auto";
    o->kv_memory = 0; /* TS_KV_MEMORY_AUTO: the engine sizes it */
    o->kv_type = "f16";
    o->block_size = TS_KV_BLOCK_SIZE_DEFAULT;
    o->batch_tokens = 512;
    o->batch_seqs = 256;
    o->prefill_chunk = 512;
    o->filler_slack = 0.1;
    o->comm_timeout_ms = 60000;
    o->log_level = "info";
}

int ts_runtime_flags(ts_runtime_options *o, ts_flag *f) {
    int n = 0;
    f[n++] = (ts_flag){"model", 'm', TS_FLAG_STRING, &o->model_path,
                       "model: a GGUF file or a Hugging Face checkpoint directory; default: the "
                       "bundled stories260K", 0, 0};
    f[n++] = (ts_flag){"device", 0, TS_FLAG_STRING, &o->device, "cpu, cuda or cuda:N", 0, 0};
    f[n++] = (ts_flag){"device-per-rank", 0, TS_FLAG_BOOL, &o->device_per_rank,
                       "rank r of the group uses GPU N + r of --device cuda:N (several ranks of a "
                       "group on one host)",
                       0, 0};
    f[n++] = (ts_flag){"threads", 't', TS_FLAG_INT, &o->threads,
                       "kernel threads per rank; 0 = all cores", 0, 1024};
    f[n++] = (ts_flag){"isa", 0, TS_FLAG_STRING, &o->isa, "CPU kernels: auto, scalar, avx2, avx512",
                       0, 0};
    f[n++] = (ts_flag){"ctx", 'c', TS_FLAG_INT, &o->ctx,
                       "context length in tokens; 0 = the model's, shortened to what the KV "
                       "memory holds", 0, 1 << 24};
    f[n++] = (ts_flag){"kv-memory", 0, TS_FLAG_SIZE, &o->kv_memory,
                       "KV cache memory per rank (e.g. 512M, 4G); 0 = " TS_KV_MEMORY_AUTO, 0, 0};
    f[n++] = (ts_flag){"kv-host-memory", 0, TS_FLAG_SIZE, &o->kv_host_memory,
                       "host-memory tier of the KV cache per rank (e.g. 4G): prefix blocks the "
                       "KV memory evicts are kept there and loaded back instead of recomputed; "
                       "0 = none",
                       0, 0};
    f[n++] = (ts_flag){"kv-disk", 0, TS_FLAG_STRING, &o->kv_disk,
                       "directory of the disk tier of the KV cache (below --kv-host-memory; kept "
                       "across restarts, one subdirectory per rank)",
                       0, 0};
    f[n++] = (ts_flag){"kv-disk-size", 0, TS_FLAG_SIZE, &o->kv_disk_size,
                       "bytes the disk tier may use per rank (e.g. 100G); required with --kv-disk",
                       0, 0};
    f[n++] = (ts_flag){"device-memory", 0, TS_FLAG_SIZE, &o->device_memory,
                       "memory the backend may allocate per rank, KV cache included; 0 = all", 0,
                       0};
    f[n++] = (ts_flag){"kv-type", 0, TS_FLAG_STRING, &o->kv_type, "KV cache element type: f16 or f32",
                       0, 0};
    f[n++] = (ts_flag){"block-size", 0, TS_FLAG_INT, &o->block_size, "tokens per KV block", 1, 4096};
    f[n++] = (ts_flag){"batch-tokens", 0, TS_FLAG_INT, &o->batch_tokens, "tokens per engine step",
                       1, 1 << 20};
    f[n++] = (ts_flag){"batch-seqs", 0, TS_FLAG_INT, &o->batch_seqs, "sequences per engine step",
                       1, 1 << 16};
    f[n++] = (ts_flag){"prefill-chunk", 0, TS_FLAG_INT, &o->prefill_chunk,
                       "prompt tokens per sequence per step (chunked prefill)", 1, 1 << 20};
    f[n++] = (ts_flag){"filler-slack",
                       0,
                       TS_FLAG_DOUBLE,
                       &o->filler_slack,
                       "how much batch work may slow interactive work sharing its steps "
                       "(0.1: steps 10% longer; 0: none beside it; 1: no limit)",
                       0,
                       1};
    f[n++] = (ts_flag){"decode-slack",
                       0,
                       TS_FLAG_DOUBLE,
                       &o->decode_slack,
                       "how much prompt chunks may lengthen a step of decoding streams (1: at "
                       "most twice a decode step, sized from measured step times; 0: no limit "
                       "but --prefill-chunk)",
                       0,
                       100};
    f[n++] = (ts_flag){"no-prefix-cache", 0, TS_FLAG_BOOL, &o->no_prefix_cache,
                       "do not reuse the KV cache of shared prompt prefixes", 0, 0};
    f[n++] = (ts_flag){"tp", 0, TS_FLAG_INT, &o->tp,
                       "ranks per tensor-parallel group under mpirun/srun; 0 = all", 0, 1 << 16};
    f[n++] = (ts_flag){"comm-timeout-ms", 0, TS_FLAG_INT, &o->comm_timeout_ms,
                       "a collective that takes longer fails the group", 100, 86400000};
    f[n++] = (ts_flag){"log-level", 0, TS_FLAG_STRING, &o->log_level,
                       "debug, info, warn, error or off", 0, 0};
    return n;
}

/* Under an MPI launcher the world is split into groups of --tp consecutive ranks. */
static int open_comm(const ts_runtime_options *o, ts_comm **out, bool *used_mpi) {
    *used_mpi = false;
    if (!ts_mpi_launched()) {
        if (o->tp > 1)
            return ts_error_set(TS_E_INVALID, "--tp %d needs a launch under mpirun or srun", o->tp);
        return ts_comm_create_self(out);
    }
    int rc = ts_mpi_init();
    if (rc) return rc;
    *used_mpi = true;
    int world = ts_mpi_world_size(), rank = ts_mpi_world_rank();
    int tp = o->tp > 0 ? o->tp : world;
    if (world % tp != 0)
        return ts_error_set(TS_E_INVALID,
                            "%d MPI ranks cannot form groups of --tp %d: launch a multiple of %d "
                            "ranks",
                            world, tp, tp);
    ts_comm_options co = {.timeout_ms = o->comm_timeout_ms};
    return ts_comm_create_mpi(rank / tp, rank, &co, out);
}

int ts_runtime_open(const ts_runtime_options *o, ts_runtime **out) {
    *out = NULL;
    ts_log_level level;
    int rc = ts_log_parse_level(o->log_level, &level);
    if (rc) return ts_error_wrap(rc, "--log-level");
    ts_log_set_level(level);
    ts_engine_options eo = {0};
    ts_dtype kv_type;
    rc = ts_dtype_parse(o->kv_type, &kv_type);
    if (rc || (kv_type != TS_DTYPE_F16 && kv_type != TS_DTYPE_F32))
        return ts_error_set(TS_E_INVALID, "--kv-type: expected f16 or f32, got '%s'", o->kv_type);
    ts_backend_options bo = {.device = o->device, .n_threads = o->threads,
                             .memory_budget = o->device_memory};
    rc = ts_cpu_isa_parse(o->isa, &bo.isa);
    if (rc) return ts_error_wrap(rc, "--isa");

    ts_runtime *rt = calloc(1, sizeof *rt);
    if (!rt) return ts_error_set(TS_E_NOMEM, "out of memory");
    if (o->model_path) {
        snprintf(rt->model_path, sizeof rt->model_path, "%s", o->model_path);
    } else {
        rc = ts_find_data_file(TS_DEFAULT_MODEL, rt->model_path, sizeof rt->model_path);
        if (rc) {
            rc = ts_error_wrap(TS_E_IO, "the bundled model (give one with --model)");
            goto fail;
        }
    }
    rc = open_comm(o, &rt->comm, &rt->used_mpi);
    if (rc) goto fail;
    rc = ts_hf_open_model(rt->model_path, &rt->gguf);
    if (rc) goto fail;
    rc = ts_model_load(rt->gguf, &rt->model);
    if (rc) goto fail;
    rt->model_loaded = true;
    if (rt->comm->rank != 0) ts_log_set_level(level > TS_LOG_WARN ? level : TS_LOG_WARN);
    if (o->device_per_rank) {
        rc = ts_backend_device_offset(o->device, rt->comm->rank, rt->device, sizeof rt->device);
        if (rc) goto fail;
        bo.device = rt->device;
    }
    rc = ts_backend_create(&bo, &rt->be);
    if (rc) goto fail;
#ifdef TESSERA_HAVE_CUDA
    /* A GPU group all-reduces device buffers: NCCL on the backend's stream, with the MPI
     * communicator kept for the host collectives (node/comm.h). */
    if (rt->be->device_stream && rt->comm->size > 1) {
        ts_comm *nccl = NULL;
        ts_comm_options co = {.timeout_ms = o->comm_timeout_ms};
        rc = ts_comm_create_nccl(rt->comm, rt->be->device_stream, rt->be->device_index, &co,
                                 &nccl);
        if (rc) goto fail;
        rt->comm = nccl; /* owns the MPI communicator now */
    }
#endif
    eo.max_batch_tokens = o->batch_tokens;
    eo.max_batch_seqs = o->batch_seqs;
    eo.block_size = o->block_size;
    eo.kv_memory = o->kv_memory;
    eo.kv_type = kv_type;
    eo.max_ctx = o->ctx;
    rc = ts_engine_create(&rt->model, rt->be, rt->comm, &eo, &rt->engine);
    if (rc) goto fail;
    uint64_t fingerprint =
        ts_kvx_fingerprint(&rt->model, kv_type, ts_engine_options_get(rt->engine)->block_size);
    if (o->kv_disk && !o->kv_disk_size) {
        rc = ts_error_set(TS_E_INVALID, "--kv-disk %s needs --kv-disk-size (bytes per rank)",
                          o->kv_disk);
        goto fail;
    }
    ts_kv_tiers_options to = {.host_bytes = o->kv_host_memory,
                              .disk_dir = o->kv_disk && o->kv_disk[0] ? o->kv_disk : NULL,
                              .disk_bytes = o->kv_disk_size,
                              .fingerprint = fingerprint};
    rc = ts_kv_tiers_create(rt->engine, &to, &rt->tiers);
    if (rc) goto fail;
    if (rt->comm->rank == 0) {
        ts_sched_options so = {.prefill_chunk = o->prefill_chunk,
                               .filler_slack = o->filler_slack,
                               .decode_slack = o->decode_slack,
                               .no_prefix_cache = o->no_prefix_cache,
                               .tiers = rt->tiers,
                               .cache_namespace = fingerprint};
        rc = ts_sched_create(rt->engine, &so, &rt->sched);
        if (rc) goto fail;
    }
    TS_DEBUG("loaded %s on %s (rank %d of %d, %d KV blocks)", rt->model_path, rt->be->name,
             rt->comm->rank, rt->comm->size, ts_engine_n_blocks(rt->engine));
    *out = rt;
    return TS_OK;
fail:
    ts_runtime_close(rt);
    return rc;
}

int ts_runtime_close(ts_runtime *rt) {
    if (!rt) return TS_OK;
    int rc = TS_OK;
    if (rt->sched) ts_sched_flush_cache(rt->sched); /* the group still runs: tasks work */
    if (rt->engine && rt->comm && rt->comm->rank == 0) rc = ts_engine_stop_group(rt->engine);
    ts_sched_destroy(rt->sched);
    ts_kv_tiers_destroy(rt->tiers);
    ts_engine_destroy(rt->engine);
    ts_backend_destroy(rt->be);
    if (rt->model_loaded) ts_model_free(&rt->model);
    ts_gguf_close(rt->gguf);
    ts_comm_destroy(rt->comm);
    if (rt->used_mpi) ts_mpi_finalize();
    free(rt);
    return rc;
}

bool ts_runtime_is_leader(const ts_runtime *rt) { return rt->comm->rank == 0; }
int ts_runtime_follow(ts_runtime *rt) { return ts_engine_follow(rt->engine); }
const char *ts_runtime_model_path(const ts_runtime *rt) { return rt->model_path; }
const ts_gguf *ts_runtime_gguf(const ts_runtime *rt) { return rt->gguf; }
const ts_model *ts_runtime_model(const ts_runtime *rt) { return &rt->model; }
ts_backend *ts_runtime_backend(const ts_runtime *rt) { return rt->be; }
ts_engine *ts_runtime_engine(const ts_runtime *rt) { return rt->engine; }
ts_sched *ts_runtime_scheduler(const ts_runtime *rt) { return rt->sched; }
ts_kv_tiers *ts_runtime_kv_tiers(const ts_runtime *rt) { return rt->tiers; }
ts_comm *ts_runtime_comm(const ts_runtime *rt) { return rt->comm; }
