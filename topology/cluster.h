/*
 * cluster.h — the hosts a plan may use, from one of three sources:
 *
 *   - the Slurm allocation (ts_cluster_from_slurm): the job's hosts in Slurm's order, or every
 *     component's hosts in a heterogeneous job (each host tagged with its component), with the
 *     tasks Slurm starts on each (SLURM_TASKS_PER_NODE) as its slots. This machine is measured;
 *     the others are assumed to look like it (Slurm allocations are normally of one node type),
 *     except for their CPU count when SLURM_JOB_CPUS_PER_NODE gives it. A cluster of mixed node
 *     types describes itself with a cluster file instead.
 *   - a cluster file (ts_cluster_from_file), JSON, for machines without Slurm:
 *       { "tasks": 16,                                   optional: launcher task count
 *         "hosts": [ { "name": "gpu[01-02]",             a hostlist expression
 *                      "cores": 64, "numa": 2,           numa optional (1)
 *                      "gpus": 4, "nvlink": true,        optional (0 GPUs; nvlink: all pairs peer)
 *                      "slots": 4,                       optional: ranks the launcher starts there
 *                      "group": 0 } ] }                  optional: heterogeneous component
 *     An entry naming this machine is measured instead of declared. Unknown keys are refused
 *     (typos must not silently change a plan).
 *   - this machine alone (ts_cluster_single).
 *
 * Errors: TS_E_INVALID / TS_E_FORMAT naming the file, the host entry and the key.
 */
#ifndef TS_TOPOLOGY_CLUSTER_H
#define TS_TOPOLOGY_CLUSTER_H

#include "topology/host.h"
#include "topology/slurm_env.h"

#include <stddef.h>

typedef struct ts_cluster {
    ts_host *hosts;
    int n_hosts;
    int n_tasks;  /* tasks the launcher starts in all; 0: not limited */
    int het_size; /* heterogeneous components; 0: one homogeneous allocation */
    int self;     /* index of this machine among hosts, -1 if absent */
    char source[160];
} ts_cluster;

int ts_cluster_from_slurm(const ts_slurm_env *env, const ts_host *local, ts_cluster *out);
int ts_cluster_from_json(const char *text, size_t length, const char *name, const ts_host *local,
                         ts_cluster *out);
int ts_cluster_from_file(const char *path, const ts_host *local, ts_cluster *out);
int ts_cluster_single(const ts_host *local, ts_cluster *out);
void ts_cluster_free(ts_cluster *c); /* safe on a zeroed cluster */

/* Host names equal up to the first '.', so "gpu01" matches "gpu01.cluster.example". */
bool ts_host_name_matches(const char *a, const char *b);

#endif
