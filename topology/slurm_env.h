/*
 * slurm_env.h — what Slurm (and CUDA_VISIBLE_DEVICES) tell a process about its job.
 *
 * Read from an environment block ("KEY=VALUE" strings, as `environ`), so tests pass their own.
 * Variables (all optional; a field is -1 / empty when its variable is unset):
 *   SLURM_JOB_ID, SLURM_JOB_NODELIST (or the older SLURM_NODELIST), SLURM_TASKS_PER_NODE,
 *   SLURM_JOB_CPUS_PER_NODE, SLURM_NTASKS (or SLURM_NPROCS), SLURM_PROCID, SLURM_LOCALID,
 *   SLURM_NODEID, SLURM_STEP_ID, SLURM_STEP_NODELIST, SLURM_STEP_NUM_TASKS,
 *   SLURM_STEP_NUM_NODES, SLURM_STEP_TASKS_PER_NODE, SLURM_HET_SIZE,
 *   SLURM_JOB_NODELIST_HET_GROUP_<n>, SLURM_NTASKS_HET_GROUP_<n>,
 *   SLURM_TASKS_PER_NODE_HET_GROUP_<n>, SLURM_GPUS_ON_NODE, CUDA_VISIBLE_DEVICES.
 * Inside a heterogeneous job's batch script the plain variables describe component 0; the
 * *_HET_GROUP_<n> ones describe every component. Inside a job step (srun, or mpirun's daemons)
 * SLURM_TASKS_PER_NODE and SLURM_NTASKS describe the step; a SLURM_TASKS_PER_NODE that does not
 * match SLURM_JOB_NODELIST there is dropped (job.tasks_per_node NULL) rather than refused.
 *
 * Errors: TS_E_INVALID naming the variable and what is wrong ("SLURM_PROCID: expected a number
 * >= 0, got 'x'", "SLURM_JOB_NODELIST: hostlist ...: position 5: ...", "SLURM_TASKS_PER_NODE has
 * 3 entries but SLURM_JOB_NODELIST names 2 hosts").
 */
#ifndef TS_TOPOLOGY_SLURM_ENV_H
#define TS_TOPOLOGY_SLURM_ENV_H

#include "topology/hostlist.h"

#include <stdbool.h>

enum { TS_SLURM_MAX_HET = 16, TS_MAX_VISIBLE_DEVICES = 64 };

typedef struct ts_slurm_group {
    ts_hostlist nodes;   /* the component's (or job's) hosts */
    int *tasks_per_node; /* nodes.n entries, or NULL when Slurm did not say */
    int ntasks;          /* -1 if unknown */
} ts_slurm_group;

typedef struct ts_slurm_env {
    bool in_job;                 /* SLURM_JOB_ID is set */
    long long job_id;            /* -1 */
    ts_slurm_group job;          /* the allocation (component 0 in a heterogeneous job) */
    int *cpus_per_node;          /* SLURM_JOB_CPUS_PER_NODE, job.nodes.n entries, or NULL */
    int procid, localid, nodeid; /* this task, -1 outside a step */
    bool in_step;                /* SLURM_STEP_ID is set */
    long long step_id;
    ts_slurm_group step; /* the step's hosts and tasks */
    int het_size;        /* 0 when the job is not heterogeneous */
    ts_slurm_group het[TS_SLURM_MAX_HET];
    int gpus_on_node; /* SLURM_GPUS_ON_NODE, -1 */
    /* CUDA_VISIBLE_DEVICES: unset → visible_set false (all devices). Entries are ordinals, or -1
     * for a UUID/MIG name. "NoDevFiles" (Slurm, no GPU allocated) and "" mean no device. */
    bool visible_set;
    int n_visible;
    int visible[TS_MAX_VISIBLE_DEVICES];
} ts_slurm_env;

/* Parses `envp` (NULL-terminated). On error `out` is left empty (safe to free). */
int ts_slurm_env_parse(char *const *envp, ts_slurm_env *out);
/* The same on this process's environment. */
int ts_slurm_env_read(ts_slurm_env *out);
void ts_slurm_env_free(ts_slurm_env *env); /* safe on a zeroed or freed struct */

#endif
