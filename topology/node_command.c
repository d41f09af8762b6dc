/* node_command.c — see node_command.h. */
#include "topology/node_command.h"

#include "common/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* The pass-through flags: name and help, in the order of the TS_NODE_PASS_* enum. */
static const struct {
    const char *name;
    const char *help;
} pass_flags[TS_NODE_PASS_COUNT] = {
    [TS_NODE_PASS_CTX] = {"ctx", "context length per group; default: the model's"},
    [TS_NODE_PASS_KV_MEMORY] = {"kv-memory", "KV cache memory per rank (e.g. 512M); default: "
                                             "the node's automatic budget"},
    [TS_NODE_PASS_ISA] = {"isa", "CPU kernels: auto, scalar, avx2, avx512"},
    [TS_NODE_PASS_DEVICE_MEMORY] = {"device-memory",
                                    "memory the backend may allocate per rank (e.g. 8G)"},
    [TS_NODE_PASS_KV_TYPE] = {"kv-type", "KV cache element type: f16 or f32"},
    [TS_NODE_PASS_BLOCK_SIZE] = {"block-size", "tokens per KV block"},
    [TS_NODE_PASS_BATCH_TOKENS] = {"batch-tokens", "tokens per engine step"},
    [TS_NODE_PASS_BATCH_SEQS] = {"batch-seqs", "sequences per engine step"},
    [TS_NODE_PASS_PREFILL_CHUNK] = {"prefill-chunk",
                                    "prompt tokens per sequence per step (chunked prefill)"},
    [TS_NODE_PASS_COMM_TIMEOUT_MS] = {"comm-timeout-ms",
                                      "a collective that takes longer fails the group"},
    [TS_NODE_PASS_CONNECT_TIMEOUT_MS] = {"connect-timeout-ms",
                                         "how long a node tries to reach the coordinator"},
    [TS_NODE_PASS_DRAIN_MS] = {"drain-ms", "on SIGTERM, time a node's running requests get"},
    [TS_NODE_PASS_KV_HOST_MEMORY] = {"kv-host-memory",
                                     "host-memory tier of the KV cache per rank (e.g. 4G)"},
    [TS_NODE_PASS_KV_DISK] = {"kv-disk", "directory of the disk tier of the KV cache"},
    [TS_NODE_PASS_KV_DISK_SIZE] = {"kv-disk-size", "bytes of the disk tier per rank (e.g. 100G)"},
    [TS_NODE_PASS_FILLER_SLACK] = {"filler-slack",
                                   "how much batch work may slow interactive work (0.1: 10%)"},
    [TS_NODE_PASS_DECODE_SLACK] = {"decode-slack",
                                   "how much prompt chunks may lengthen a decode step (1: 2x)"},
};

int ts_node_settings_flags(ts_node_settings *s, ts_flag *flags) {
    int n = 0;
    for (int i = 0; i < TS_NODE_PASS_COUNT; i++)
        flags[n++] =
            (ts_flag){pass_flags[i].name, 0, TS_FLAG_STRING, &s->pass[i], pass_flags[i].help, 0, 0};
    flags[n++] = (ts_flag){"no-prefix-cache",
                           0,
                           TS_FLAG_BOOL,
                           &s->no_prefix_cache,
                           "do not reuse the KV cache of shared prompt prefixes",
                           0,
                           0};
    flags[n++] = (ts_flag){"kv-transport",
                           0,
                           TS_FLAG_STRING,
                           &s->kv_transport,
                           "how prefill groups send KV blocks to decode groups: tcp, or nccl (GPU "
                           "to GPU; needs --device cuda)",
                           0,
                           0};
    return n;
}

static int add(ts_node_argv *a, const char *arg) {
    if (a->argc == TS_NODE_ARGV_MAX)
        return ts_error_set(TS_E_NOMEM, "tessera-node command line: more than %d arguments",
                            TS_NODE_ARGV_MAX);
    a->argv[a->argc++] = (char *)arg;
    a->argv[a->argc] = NULL;
    return TS_OK;
}

static int addf(ts_node_argv *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A formatted argument, kept in the argv's own storage. */
static int addf(ts_node_argv *a, const char *fmt, ...) {
    size_t room = sizeof a->store - a->used;
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(a->store + a->used, room, fmt, ap);
    va_end(ap);
    if (len < 0 || (size_t)len >= room)
        return ts_error_set(TS_E_NOMEM, "tessera-node command line: arguments too long");
    char *arg = a->store + a->used;
    a->used += (size_t)len + 1;
    return add(a, arg);
}

static int add_pair(ts_node_argv *a, const char *flag, const char *value) {
    int rc = add(a, flag);
    return rc ? rc : add(a, value);
}

bool ts_node_group_devices_consecutive(const ts_plan *plan, int group) {
    const ts_group_place *g = &plan->groups[group];
    for (int k = 1; k < g->tp; k++)
        if (plan->ranks[g->first_rank + k].device != plan->ranks[g->first_rank].device + k)
            return false;
    return true;
}

int ts_node_command(const ts_node_settings *s, const ts_plan *plan, int pool, int group, int rank,
                    ts_node_argv *out) {
    memset(out, 0, sizeof *out);
    if (pool < 0 || pool >= plan->n_pools)
        return ts_error_set(TS_E_INVALID, "pool %d: the plan has %d pool(s)", pool, plan->n_pools);
    const ts_pool_place *pp = &plan->pools[pool];
    const char *role = ts_role_name(pp->spec.role);
    if (group >= pp->spec.groups)
        return ts_error_set(TS_E_INVALID, "pool %s: group %d of %d", role, group, pp->spec.groups);
    const ts_group_place *g = group >= 0 ? &plan->groups[pp->first_group + group] : NULL;
    if (rank >= 0 && (!g || rank >= g->tp))
        return ts_error_set(TS_E_INVALID, "pool %s: rank %d of group %d", role, rank, group);
    if (!s->coordinator && !s->coordinator_file)
        return ts_error_set(TS_E_INVALID, "no coordinator: a node needs its address or file");
    int rc = add(out, s->node_bin);
    if (!rc && s->coordinator) rc = add_pair(out, "--coordinator", s->coordinator);
    if (!rc && !s->coordinator) rc = add_pair(out, "--coordinator-file", s->coordinator_file);
    if (!rc && s->cluster_secret_file)
        rc = add_pair(out, "--cluster-secret-file", s->cluster_secret_file);
    if (!rc) rc = add(out, "--name");
    if (!rc && g)
        rc = addf(out, "%s-%d", pp->spec.role == TS_ROLE_MIXED ? "group" : role, group);
    else if (!rc)
        rc = add(out, s->name ? s->name : role);
    if (!rc) rc = add_pair(out, "--role", role);
    if (!rc) rc = add(out, "--tp");
    if (!rc) rc = addf(out, "%d", pp->spec.tp); /* a rank alone still joins its group */
    int threads = s->threads;
    if (threads == 0 && g) {
        threads = plan->ranks[g->first_rank].n_cores;
        if (threads < 1) threads = 1;
    }
    if (!rc) rc = add(out, "--threads");
    if (!rc) rc = addf(out, "%d", threads);
    if (!rc && s->model) rc = add_pair(out, "-m", s->model);
    if (!rc && s->log_level) rc = add_pair(out, "--log-level", s->log_level);
    for (int i = 0; !rc && i < TS_NODE_PASS_COUNT; i++)
        if (s->pass[i]) {
            rc = addf(out, "--%s", pass_flags[i].name);
            if (!rc) rc = add(out, s->pass[i]);
        }
    if (!rc && s->no_prefix_cache) rc = add(out, "--no-prefix-cache");
    if (!rc && plan->gpus && g) {
        const ts_rank_place *r = &plan->ranks[g->first_rank + (rank >= 0 ? rank : 0)];
        if (rank < 0 && g->tp > 1 &&
            !ts_node_group_devices_consecutive(plan, pp->first_group + group))
            return ts_error_set(TS_E_INVALID,
                                "pool %s group %d: its GPUs are not consecutive, so one launch "
                                "with --device-per-rank cannot give them: launch it rank by rank",
                                role, group);
        rc = add(out, "--device");
        if (!rc) rc = addf(out, "cuda:%d", s->device_base + r->device);
        if (!rc && rank < 0 && g->tp > 1) rc = add(out, "--device-per-rank");
    } else if (!rc && !plan->gpus && s->device) {
        rc = add_pair(out, "--device", s->device);
    }
    if (!rc && s->kv_transport) rc = add_pair(out, "--kv-transport", s->kv_transport);
    if (!rc && s->die_with_parent) rc = add(out, "--die-with-parent");
    return rc;
}
