/*
 * placement.h — which rank runs where: pools of tensor-parallel groups placed on a cluster's
 * hosts, each rank bound to a device and pinned to a set of cores.
 *
 * A request names pools: role (mixed, prefill, decode), TP degree and number of groups (0: as
 * many as fit). Written as text (ts_plan_spec_parse): comma-separated pools "[ROLE:][GROUPSx]TP",
 * e.g. "4" (mixed groups of TP 4, as many as fit), "2x4", "prefill:1x2,decode:2x1".
 *
 * Rules, in this order:
 *   - In a heterogeneous allocation with one pool per component, pool k uses component k's hosts
 *     (the disaggregated job: component 0 prefill, component 1 decode); any other pool count
 *     against a heterogeneous allocation is refused.
 *   - Devices: GPUs when every usable host has one (one rank per GPU), else CPU "devices" (one
 *     rank per Slurm task, or per core without a launcher limit).
 *   - A host's capacity is its devices, capped by the tasks the launcher starts there (slots);
 *     with oversubscribe it is unlimited, and rank k beyond the devices gets device k modulo
 *     their count.
 *   - Each group goes, whole, to the first host with room for it (groups of a pool therefore sit
 *     in host order, which matches Slurm's block distribution of ranks). On a GPU host the group's
 *     devices are chosen so that every pair has peer access (NVLink) when the matrix allows it.
 *   - A group larger than any host's capacity is refused unless allow_cross_host_tp, in which case
 *     it takes the free devices of consecutive hosts.
 *   - Cores: the ranks on a host share its cores evenly, in core order (NUMA nodes are
 *     contiguous in that order); with more ranks than cores, ranks share single cores.
 *   - The plan's rank count must fit the launcher's task count.
 * Pool ranks are numbered 0.. in placement order: that is the rank a tessera-node step of the
 * pool sees, and rank r belongs to group r / TP.
 *
 * Refusals are TS_E_INVALID with a message that says what to change, e.g.
 *   "pool mixed: TP 8 needs 8 GPUs on one host, but no host has more than 4 (gpu01): use a TP of
 *    at most 4, or let groups span hosts with --allow-cross-host-tp (all-reduce then crosses the
 *    network)"
 * The model's head count is checked by the caller (node/shard.h), not here.
 */
#ifndef TS_TOPOLOGY_PLACEMENT_H
#define TS_TOPOLOGY_PLACEMENT_H

#include "topology/cluster.h"

#include <stdbool.h>

typedef enum { TS_ROLE_MIXED = 0, TS_ROLE_PREFILL = 1, TS_ROLE_DECODE = 2 } ts_role;

const char *ts_role_name(ts_role role);
int ts_role_parse(const char *text, ts_role *out); /* TS_E_INVALID naming the choices */

enum { TS_PLAN_MAX_POOLS = 8 };

typedef enum { TS_DEVICES_AUTO = 0, TS_DEVICES_GPU, TS_DEVICES_CPU } ts_device_choice;

typedef struct ts_pool_spec {
    ts_role role;
    int groups; /* 0: as many as fit */
    int tp;     /* >= 1 */
} ts_pool_spec;

typedef struct ts_plan_request {
    ts_pool_spec pools[TS_PLAN_MAX_POOLS];
    int n_pools;
    bool allow_cross_host_tp;
    ts_device_choice devices;
    /* A local cluster (tessera up) shares the machine: a host takes any number of ranks, and the
     * ranks beyond its devices share them round robin (CPU ranks then share cores, see below).
     * Every pool must then name its group count. */
    bool oversubscribe;
} ts_plan_request;

/* Parses pool specs into req->pools (other fields untouched). TS_E_INVALID with the pool text. */
int ts_plan_spec_parse(const char *text, ts_plan_request *req);

typedef struct ts_rank_place {
    int pool, group, group_rank;
    int pool_rank;      /* rank in the pool's launch */
    int host;           /* index into the cluster's hosts */
    int local_rank;     /* index among the pool's ranks on that host */
    int device;         /* CUDA ordinal on the host, -1 for a CPU rank */
    int core0, n_cores; /* pinned cores (host core indices) */
} ts_rank_place;

typedef struct ts_group_place {
    int pool;
    int index;      /* group number within the pool */
    int first_rank; /* index into plan.ranks; the group's ranks follow */
    int tp;
    bool cross_host;
    bool peer_ok; /* GPU group whose devices all have peer access (or a CPU group) */
} ts_group_place;

typedef struct ts_pool_place {
    ts_pool_spec spec; /* groups: as placed */
    int first_group, n_ranks;
    int first_rank; /* index into plan.ranks */
} ts_pool_place;

typedef struct ts_plan {
    bool gpus; /* ranks are bound to GPUs */
    ts_pool_place pools[TS_PLAN_MAX_POOLS];
    int n_pools;
    ts_group_place *groups;
    int n_groups;
    ts_rank_place *ranks;
    int n_ranks;
    int idle_tasks;   /* launcher tasks the plan leaves unused (> 0 is allowed) */
    char notes[1024]; /* warnings, one per line, "" when none */
} ts_plan;

int ts_plan_make(const ts_cluster *c, const ts_plan_request *req, ts_plan *out);
void ts_plan_free(ts_plan *p); /* safe on a zeroed plan */

#endif
