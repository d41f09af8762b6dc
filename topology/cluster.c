/* cluster.c — see cluster.h. */
#include "topology/cluster.h"

#include "common/buf.h"
#include "common/error.h"
#include "common/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool ts_host_name_matches(const char *a, const char *b) {
    size_t la = strcspn(a, "."), lb = strcspn(b, ".");
    return la == lb && !strncmp(a, b, la);
}

static int find_name(const ts_cluster *c, const char *name) {
    for (int i = 0; i < c->n_hosts; i++)
        if (!strcmp(c->hosts[i].name, name)) return i;
    return -1;
}

static int grow(ts_cluster *c, int extra) {
    ts_host *h = realloc(c->hosts, ((size_t)c->n_hosts + (size_t)extra) * sizeof *h);
    if (!h) return ts_error_set(TS_E_NOMEM, "out of memory describing the cluster");
    memset(h + c->n_hosts, 0, (size_t)extra * sizeof *h);
    c->hosts = h;
    return TS_OK;
}

/* Appends `name`: this machine (measured) when the name is ours, else the declared shape. */
static int add_host(ts_cluster *c, const char *name, const ts_host *local, int cores, int numa,
                    int gpus, bool all_peer) {
    int rc = grow(c, 1);
    if (rc) return rc;
    ts_host *h = &c->hosts[c->n_hosts];
    if (local && ts_host_name_matches(name, local->name)) {
        rc = ts_host_copy(h, local);
        if (!rc && c->self < 0) c->self = c->n_hosts;
    } else {
        rc = ts_host_declare(h, name, cores, numa < cores ? numa : cores, gpus, all_peer);
    }
    if (rc) return rc;
    snprintf(h->name, sizeof h->name, "%s", name);
    c->n_hosts++;
    return TS_OK;
}

static bool all_peer(const ts_host *h) {
    if (!h->peer) return false;
    for (int i = 0; i < h->n_gpus * h->n_gpus; i++)
        if (!h->peer[i]) return false;
    return true;
}

static int add_group(ts_cluster *c, const ts_slurm_group *g, const int *cpus_per_node,
                     const ts_host *local, int het_group) {
    for (int i = 0; i < g->nodes.n; i++) {
        int cores = cpus_per_node ? cpus_per_node[i] : local->n_cores;
        int rc = add_host(c, g->nodes.names[i], local, cores, local->n_numa, local->n_gpus,
                          all_peer(local));
        if (rc) return rc;
        ts_host *h = &c->hosts[c->n_hosts - 1];
        h->slots = g->tasks_per_node ? g->tasks_per_node[i] : 0;
        h->het_group = het_group;
        h->measured = h->measured && c->self == c->n_hosts - 1;
    }
    return TS_OK;
}

int ts_cluster_from_slurm(const ts_slurm_env *env, const ts_host *local, ts_cluster *out) {
    memset(out, 0, sizeof *out);
    out->self = -1;
    if (!env->in_job || (env->job.nodes.n == 0 && env->het_size == 0))
        return ts_error_set(TS_E_INVALID, "not inside a Slurm job (SLURM_JOB_ID or "
                                          "SLURM_JOB_NODELIST unset): run under sbatch/salloc, or "
                                          "describe the machines with --cluster FILE");
    int rc = TS_OK;
    if (env->het_size > 0) {
        out->het_size = env->het_size;
        for (int h = 0; h < env->het_size && !rc; h++) {
            rc = add_group(out, &env->het[h], NULL, local, h);
            if (env->het[h].ntasks > 0) out->n_tasks += env->het[h].ntasks;
        }
    } else {
        rc = add_group(out, &env->job, env->cpus_per_node, local, 0);
        if (env->job.ntasks > 0) out->n_tasks = env->job.ntasks;
    }
    snprintf(out->source, sizeof out->source, "Slurm job %lld%s", env->job_id,
             env->het_size ? " (heterogeneous)" : "");
    if (rc) ts_cluster_free(out);
    return rc;
}

int ts_cluster_single(const ts_host *local, ts_cluster *out) {
    memset(out, 0, sizeof *out);
    out->self = -1;
    int rc = add_host(out, local->name, local, 1, 1, 0, false);
    if (rc) return rc;
    snprintf(out->source, sizeof out->source, "this machine");
    return TS_OK;
}

static int get_int_in(const ts_json *obj, const char *key, int64_t dflt, int64_t lo, int64_t hi,
                      const char *where, int64_t *out) {
    *out = dflt;
    if (!ts_json_get(obj, key)) return TS_OK;
    int rc = ts_json_get_int(obj, key, out);
    if (rc) return ts_error_wrap(rc, "%s", where);
    if (*out < lo || *out > hi)
        return ts_error_set(TS_E_INVALID, "%s: \"%s\" must be between %lld and %lld, got %lld",
                            where, key, (long long)lo, (long long)hi, (long long)*out);
    return TS_OK;
}

static int parse_host_entry(ts_cluster *c, const ts_json *e, int index, const ts_host *local) {
    static const char *const known[] = {"name",   "cores", "numa", "gpus",
                                        "nvlink", "slots", "group"};
    char where[48];
    snprintf(where, sizeof where, "hosts[%d]", index);
    if (e->type != TS_JSON_OBJECT)
        return ts_error_set(TS_E_INVALID, "%s: expected an object", where);
    for (size_t m = 0; m < e->length; m++) {
        bool ok = false;
        for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
            ok = ok || !strcmp(e->members[m].key, known[k]);
        if (!ok)
            return ts_error_set(TS_E_INVALID,
                                "%s: unknown key \"%s\" (known: name, cores, numa, gpus, nvlink, "
                                "slots, group)",
                                where, e->members[m].key);
    }
    const char *names;
    int rc = ts_json_get_string(e, "name", &names, NULL);
    if (rc) return ts_error_wrap(rc, "%s", where);
    int64_t cores, numa, gpus, slots, group;
    bool nvlink = false;
    if (!ts_json_get(e, "cores"))
        return ts_error_set(TS_E_INVALID, "%s (%s): \"cores\" is required", where, names);
    if ((rc = get_int_in(e, "cores", 0, 1, 1 << 20, where, &cores)) ||
        (rc = get_int_in(e, "numa", 1, 1, cores, where, &numa)) ||
        (rc = get_int_in(e, "gpus", 0, 0, TS_HOST_MAX_GPUS, where, &gpus)) ||
        (rc = get_int_in(e, "slots", 0, 0, 1 << 20, where, &slots)) ||
        (rc = get_int_in(e, "group", 0, 0, TS_SLURM_MAX_HET - 1, where, &group)))
        return rc;
    if (ts_json_get(e, "nvlink") && (rc = ts_json_get_bool(e, "nvlink", &nvlink)))
        return ts_error_wrap(rc, "%s", where);
    ts_hostlist hl = {0};
    rc = ts_hostlist_parse(names, &hl);
    if (rc) return ts_error_wrap(rc, "%s: \"name\"", where);
    for (int i = 0; i < hl.n && !rc; i++) {
        if (find_name(c, hl.names[i]) >= 0) {
            rc = ts_error_set(TS_E_INVALID, "%s: host %s is listed twice", where, hl.names[i]);
            break;
        }
        rc = add_host(c, hl.names[i], local, (int)cores, (int)numa, (int)gpus, nvlink);
        if (rc) break;
        ts_host *h = &c->hosts[c->n_hosts - 1];
        h->slots = (int)slots;
        h->het_group = (int)group;
        if (group + 1 > c->het_size && group > 0) c->het_size = (int)group + 1;
    }
    ts_hostlist_free(&hl);
    return rc;
}

int ts_cluster_from_json(const char *text, size_t length, const char *name, const ts_host *local,
                         ts_cluster *out) {
    memset(out, 0, sizeof *out);
    out->self = -1;
    ts_json_doc *doc = NULL;
    int rc = ts_json_parse(text, length, &doc);
    if (rc) return ts_error_wrap(rc, "%s", name);
    const ts_json *root = ts_json_root(doc), *hosts = NULL;
    int64_t tasks = 0;
    if (root->type != TS_JSON_OBJECT) {
        rc = ts_error_set(TS_E_INVALID, "expected an object with \"hosts\"");
        goto done;
    }
    for (size_t m = 0; m < root->length; m++)
        if (strcmp(root->members[m].key, "hosts") && strcmp(root->members[m].key, "tasks")) {
            rc = ts_error_set(TS_E_INVALID, "unknown key \"%s\" (known: hosts, tasks)",
                              root->members[m].key);
            goto done;
        }
    if ((rc = ts_json_get_array(root, "hosts", &hosts))) goto done;
    if (hosts->length == 0) {
        rc = ts_error_set(TS_E_INVALID, "\"hosts\" is empty");
        goto done;
    }
    if ((rc = get_int_in(root, "tasks", 0, 0, 1 << 24, "cluster", &tasks))) goto done;
    out->n_tasks = (int)tasks;
    for (size_t i = 0; i < hosts->length && !rc; i++)
        rc = parse_host_entry(out, &hosts->items[i], (int)i, local);
    if (!rc && out->het_size > 0)
        for (int g = 0; g < out->het_size && !rc; g++) {
            bool any = false;
            for (int i = 0; i < out->n_hosts; i++)
                any = any || out->hosts[i].het_group == g;
            if (!any) rc = ts_error_set(TS_E_INVALID, "group %d has no hosts", g);
        }
    snprintf(out->source, sizeof out->source, "cluster file %s", name);
done:
    ts_json_doc_free(doc);
    if (rc) {
        ts_error_wrap(rc, "%s", name);
        ts_cluster_free(out);
    }
    return rc;
}

int ts_cluster_from_file(const char *path, const ts_host *local, ts_cluster *out) {
    ts_buf b = {0};
    memset(out, 0, sizeof *out);
    out->self = -1;
    int rc = ts_buf_read_file(&b, path);
    if (!rc) rc = ts_cluster_from_json(b.data ? b.data : "", b.len, path, local, out);
    ts_buf_free(&b);
    return rc;
}

void ts_cluster_free(ts_cluster *c) {
    if (!c) return;
    for (int i = 0; i < c->n_hosts; i++)
        ts_host_free(&c->hosts[i]);
    free(c->hosts);
    memset(c, 0, sizeof *c);
    c->self = -1;
}
