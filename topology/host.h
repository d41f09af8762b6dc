/*
 * host.h — one machine as placement sees it: CPU cores grouped by NUMA node, and GPUs with their
 * peer-access matrix.
 *
 * ts_host_discover measures this machine: hwloc for cores, PUs (OS indices, as taskset and
 * sched_setaffinity use them) and NUMA nodes, restricted to what this process may use (cgroups,
 * Slurm's task binding); the CUDA runtime, when the build has it, for the devices this process
 * sees (CUDA_VISIBLE_DEVICES applied) and which pairs can access each other's memory directly
 * (NVLink or PCIe P2P). A build without CUDA, or a machine where cudaGetDeviceCount fails (no
 * driver, no device), has zero GPUs and says why in `gpu_note`.
 *
 * ts_host_declare describes a machine that is not this one (from a cluster file or from the
 * Slurm allocation), with cores numbered 0..n-1 split evenly over its NUMA nodes.
 */
#ifndef TS_TOPOLOGY_HOST_H
#define TS_TOPOLOGY_HOST_H

#include "topology/hostlist.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { TS_HOST_MAX_GPUS = 64 };

typedef struct ts_gpu {
    char name[64];
    uint64_t memory_bytes; /* 0 when unknown */
    int pci_bus;           /* -1 when unknown */
} ts_gpu;

typedef struct ts_host {
    char name[TS_HOSTNAME_MAX + 1];
    bool measured; /* discovered on this machine (else declared or assumed) */
    int slots;     /* ranks the launcher starts here (Slurm tasks); 0: no launcher limit */
    int het_group; /* heterogeneous-job component; 0 otherwise */
    int n_cores, n_pus, n_numa;
    int *core_numa;     /* n_cores: NUMA node of each core */
    int *core_pu_begin; /* n_cores + 1: core c's PUs are pus[core_pu_begin[c] .. [c+1]) */
    int *pus;           /* n_pus OS indices, core by core */
    int n_gpus;
    ts_gpu *gpus;        /* n_gpus */
    unsigned char *peer; /* n_gpus * n_gpus: peer[i*n+j] = i can access j; NULL: unknown */
    char gpu_note[160];  /* why there are no GPUs, or "" */
} ts_host;

int ts_host_discover(ts_host *out);

/* cores >= 1, numa in [1, cores], gpus in [0, TS_HOST_MAX_GPUS]; all_peer: every GPU pair has
 * peer access (one NVLink/NVSwitch domain). */
int ts_host_declare(ts_host *out, const char *name, int cores, int numa, int gpus, bool all_peer);

/* Deep copy (name and slots included). */
int ts_host_copy(ts_host *out, const ts_host *src);

/* Appends the OS indices of the PUs of cores [core0, core0 + n) as a list such as "0-3,8-11"
 * (the form taskset -c and --cpu-bind=map_cpu understand) to `out` (size bytes). */
void ts_host_cpu_list(const ts_host *h, int core0, int n, char *out, size_t size);

void ts_host_free(ts_host *h); /* safe on a zeroed host */

#endif
