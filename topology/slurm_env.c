/* slurm_env.c — see slurm_env.h. */
#include "topology/slurm_env.h"

#include "common/error.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

static const char *env_get(char *const *envp, const char *key) {
    size_t n = strlen(key);
    for (char *const *e = envp; e && *e; e++)
        if (!strncmp(*e, key, n) && (*e)[n] == '=') return *e + n + 1;
    return NULL;
}

/* Unset → *out = dflt. Set → a decimal number >= 0 or an error naming the variable. */
static int env_number(char *const *envp, const char *key, long long dflt, long long *out) {
    const char *v = env_get(envp, key);
    *out = dflt;
    if (!v) return TS_OK;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || errno || x < 0 || !isdigit((unsigned char)*v))
        return ts_error_set(TS_E_INVALID, "%s: expected a number >= 0, got '%.60s'", key, v);
    *out = x;
    return TS_OK;
}

static int env_int(char *const *envp, const char *key, int *out) {
    long long v;
    int rc = env_number(envp, key, -1, &v);
    if (rc) return rc;
    if (v > 1000000000) return ts_error_set(TS_E_INVALID, "%s: %lld is out of range", key, v);
    *out = (int)v;
    return TS_OK;
}

/* A hostlist variable plus its task-count list (either may be absent). `lenient`: a count list
 * that does not match the hosts is dropped instead of refused (inside a job step Slurm sets
 * SLURM_TASKS_PER_NODE for the step's hosts, not the job's). */
static int read_group(char *const *envp, const char *nodes_key, const char *alt_nodes_key,
                      const char *tasks_key, const char *ntasks_key, bool lenient,
                      ts_slurm_group *g) {
    g->ntasks = -1;
    const char *key = nodes_key;
    const char *nodes = env_get(envp, key);
    if (!nodes && alt_nodes_key) nodes = env_get(envp, key = alt_nodes_key);
    if (nodes) {
        int rc = ts_hostlist_parse(nodes, &g->nodes);
        if (rc) return ts_error_wrap(rc, "%s", key);
    }
    const char *tasks = tasks_key ? env_get(envp, tasks_key) : NULL;
    if (tasks) {
        int n;
        int rc = ts_count_list_parse(tasks, &g->tasks_per_node, &n);
        if (rc) return ts_error_wrap(rc, "%s", tasks_key);
        if (nodes && n != g->nodes.n && lenient) {
            free(g->tasks_per_node);
            g->tasks_per_node = NULL;
        } else if (nodes && n != g->nodes.n)
            return ts_error_set(TS_E_INVALID, "%s has %d entries but %s names %d hosts", tasks_key,
                                n, key, g->nodes.n);
    }
    if (ntasks_key) {
        int rc = env_int(envp, ntasks_key, &g->ntasks);
        if (rc) return rc;
    }
    if (g->ntasks < 0 && g->tasks_per_node) {
        g->ntasks = 0;
        for (int i = 0; i < g->nodes.n; i++)
            g->ntasks += g->tasks_per_node[i];
    }
    return TS_OK;
}

static int read_visible_devices(const char *v, ts_slurm_env *out) {
    out->visible_set = true;
    if (!strcmp(v, "NoDevFiles")) return TS_OK;
    const char *p = v;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 0)
            return ts_error_set(TS_E_INVALID, "CUDA_VISIBLE_DEVICES '%.80s': empty entry", v);
        if (out->n_visible == TS_MAX_VISIBLE_DEVICES)
            return ts_error_set(TS_E_INVALID, "CUDA_VISIBLE_DEVICES: more than %d devices",
                                TS_MAX_VISIBLE_DEVICES);
        int ordinal = -1;
        if (isdigit((unsigned char)*p)) {
            char *num_end;
            long x = strtol(p, &num_end, 10);
            if ((size_t)(num_end - p) != len || x > 1000000)
                return ts_error_set(TS_E_INVALID,
                                    "CUDA_VISIBLE_DEVICES '%.80s': '%.*s' is neither a device "
                                    "number nor a GPU-/MIG- name",
                                    v, (int)len, p);
            ordinal = (int)x;
        } else if (strncmp(p, "GPU-", 4) && strncmp(p, "MIG-", 4)) {
            return ts_error_set(TS_E_INVALID,
                                "CUDA_VISIBLE_DEVICES '%.80s': '%.*s' is neither a device number "
                                "nor a GPU-/MIG- name",
                                v, (int)len, p);
        }
        out->visible[out->n_visible++] = ordinal;
        p += len;
        if (*p == ',') p++;
    }
    return TS_OK;
}

static int parse(char *const *envp, ts_slurm_env *out) {
    long long v;
    int rc = env_number(envp, "SLURM_JOB_ID", -1, &out->job_id);
    if (rc) return rc;
    out->in_job = out->job_id >= 0;
    bool in_step = env_get(envp, "SLURM_STEP_ID") != NULL;
    rc = read_group(envp, "SLURM_JOB_NODELIST", "SLURM_NODELIST", "SLURM_TASKS_PER_NODE",
                    env_get(envp, "SLURM_NTASKS") ? "SLURM_NTASKS" : "SLURM_NPROCS", in_step,
                    &out->job);
    if (rc) return rc;
    const char *cpus = env_get(envp, "SLURM_JOB_CPUS_PER_NODE");
    if (cpus) {
        int n;
        rc = ts_count_list_parse(cpus, &out->cpus_per_node, &n);
        if (rc) return ts_error_wrap(rc, "SLURM_JOB_CPUS_PER_NODE");
        if (out->job.nodes.n && n != out->job.nodes.n)
            return ts_error_set(TS_E_INVALID,
                                "SLURM_JOB_CPUS_PER_NODE has %d entries but SLURM_JOB_NODELIST "
                                "names %d hosts",
                                n, out->job.nodes.n);
    }
    if ((rc = env_int(envp, "SLURM_PROCID", &out->procid)) ||
        (rc = env_int(envp, "SLURM_LOCALID", &out->localid)) ||
        (rc = env_int(envp, "SLURM_NODEID", &out->nodeid)))
        return rc;
    rc = env_number(envp, "SLURM_STEP_ID", -1, &out->step_id);
    if (rc) return rc;
    out->in_step = out->step_id >= 0;
    rc = read_group(envp, "SLURM_STEP_NODELIST", NULL, "SLURM_STEP_TASKS_PER_NODE",
                    "SLURM_STEP_NUM_TASKS", false, &out->step);
    if (rc) return rc;
    int step_nodes = -1;
    if ((rc = env_int(envp, "SLURM_STEP_NUM_NODES", &step_nodes))) return rc;
    if (step_nodes >= 0 && out->step.nodes.n && step_nodes != out->step.nodes.n)
        return ts_error_set(TS_E_INVALID,
                            "SLURM_STEP_NUM_NODES is %d but SLURM_STEP_NODELIST names %d hosts",
                            step_nodes, out->step.nodes.n);
    int ntasks = out->in_step && out->step.ntasks >= 0 ? out->step.ntasks : out->job.ntasks;
    if (out->procid >= 0 && ntasks >= 0 && out->procid >= ntasks)
        return ts_error_set(TS_E_INVALID, "SLURM_PROCID %d is not below the task count %d",
                            out->procid, ntasks);

    rc = env_number(envp, "SLURM_HET_SIZE", 0, &v);
    if (rc) return rc;
    if (v > TS_SLURM_MAX_HET)
        return ts_error_set(TS_E_INVALID, "SLURM_HET_SIZE %lld: at most %d components supported", v,
                            TS_SLURM_MAX_HET);
    out->het_size = (int)v;
    for (int h = 0; h < out->het_size; h++) {
        char nodes_key[64], tasks_key[64], ntasks_key[64];
        snprintf(nodes_key, sizeof nodes_key, "SLURM_JOB_NODELIST_HET_GROUP_%d", h);
        snprintf(tasks_key, sizeof tasks_key, "SLURM_TASKS_PER_NODE_HET_GROUP_%d", h);
        snprintf(ntasks_key, sizeof ntasks_key, "SLURM_NTASKS_HET_GROUP_%d", h);
        if (!env_get(envp, nodes_key))
            return ts_error_set(TS_E_INVALID, "SLURM_HET_SIZE is %d but %s is not set",
                                out->het_size, nodes_key);
        rc = read_group(envp, nodes_key, NULL, tasks_key, ntasks_key, false, &out->het[h]);
        if (rc) return rc;
    }
    if ((rc = env_int(envp, "SLURM_GPUS_ON_NODE", &out->gpus_on_node))) return rc;
    const char *visible = env_get(envp, "CUDA_VISIBLE_DEVICES");
    if (visible) return read_visible_devices(visible, out);
    return TS_OK;
}

static void group_free(ts_slurm_group *g) {
    ts_hostlist_free(&g->nodes);
    free(g->tasks_per_node);
    g->tasks_per_node = NULL;
}

int ts_slurm_env_parse(char *const *envp, ts_slurm_env *out) {
    memset(out, 0, sizeof *out);
    int rc = parse(envp, out);
    if (rc) ts_slurm_env_free(out);
    return rc;
}

int ts_slurm_env_read(ts_slurm_env *out) {
    return ts_slurm_env_parse(environ, out);
}

void ts_slurm_env_free(ts_slurm_env *env) {
    if (!env) return;
    group_free(&env->job);
    group_free(&env->step);
    for (int h = 0; h < TS_SLURM_MAX_HET; h++)
        group_free(&env->het[h]);
    free(env->cpus_per_node);
    memset(env, 0, sizeof *env);
    env->job_id = env->step_id = -1;
    env->procid = env->localid = env->nodeid = env->gpus_on_node = -1;
}
