/*
 * cmd_topology.c — `tessera topology [--plan SPEC] [--cluster FILE] [-m MODEL] [--json]`.
 *
 * Prints what Tessera finds — this machine's cores, NUMA nodes and GPUs (with the peer-access
 * matrix), the Slurm allocation or a cluster file's hosts, this task's Slurm ranks and
 * CUDA_VISIBLE_DEVICES — and, with --plan, where every rank of the asked pools would run
 * (topology/placement.h). A plan that cannot work is refused with exit code 2 and one line that
 * says what to change; with -m the TP degrees are also checked against the model's heads
 * (node/shard.h gives the same refusal the nodes would). The sbatch scripts run it before they
 * start anything, so a bad request fails in seconds with a readable message, and each rank asks
 * it (--rank) for its device and cores before it starts.
 *
 * --node-command prints the tessera-node command line of one pool's launch (--pool K), each
 * argument followed by a NUL byte (`mapfile -d ''` reads it), built by topology/node_command.h —
 * the code `tessera up` builds its groups' command lines with — from the node settings given here
 * (--coordinator or --coordinator-file, --name, --threads, -m and the engine flags `tessera up`
 * takes), so the Slurm scripts spell no tessera-node flag.
 */
#include "cli/commands.h"
#include "common/buf.h"
#include "common/error.h"
#include "common/flags.h"
#include "common/json.h"
#include "model/gguf.h"
#include "model/hf.h"
#include "model/model.h"
#include "node/shard.h"
#include "topology/cluster.h"
#include "topology/node_command.h"
#include "topology/placement.h"
#include "topology/slurm_env.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define USAGE "tessera topology [--plan SPEC] [--cluster FILE] [-m MODEL] [--json]"

typedef struct {
    const ts_slurm_env *env;
    const ts_cluster *cluster;
    const ts_plan *plan; /* NULL without --plan */
} report;

/* The model's heads must split over every pool's TP degree (the nodes would refuse otherwise). */
static int check_model(const char *path, const ts_plan_request *req) {
    ts_gguf *g = NULL;
    ts_model m = {0};
    int rc = ts_hf_open_model(path, &g);
    if (!rc) rc = ts_model_load(g, &m);
    for (int p = 0; p < req->n_pools && !rc; p++) {
        ts_shard_plan sp;
        rc = ts_shard_plan_make(&m, 0, req->pools[p].tp, &sp);
        if (rc) ts_error_wrap(rc, "pool %s", ts_role_name(req->pools[p].role));
    }
    if (rc) ts_error_wrap(rc, "%s", path);
    ts_model_free(&m);
    ts_gguf_close(g);
    return rc;
}

/* One "key": value pair each, so the JSON below reads as a list of fields. */
static void kv_int(ts_json_writer *w, const char *key, int64_t v) {
    ts_jw_key(w, key);
    ts_jw_int(w, v);
}

static void kv_str(ts_json_writer *w, const char *key, const char *v) {
    ts_jw_key(w, key);
    ts_jw_string(w, v);
}

static void kv_bool(ts_json_writer *w, const char *key, bool v) {
    ts_jw_key(w, key);
    ts_jw_bool(w, v);
}

static void write_host_json(ts_json_writer *w, const ts_host *h, bool self) {
    char cpus[256];
    ts_jw_object_begin(w);
    kv_str(w, "name", h->name);
    kv_bool(w, "this_machine", self);
    kv_bool(w, "measured", h->measured);
    kv_int(w, "cores", h->n_cores);
    kv_int(w, "pus", h->n_pus);
    ts_jw_key(w, "numa_nodes");
    ts_jw_array_begin(w);
    for (int n = 0; n < h->n_numa; n++) {
        int first = -1, count = 0;
        for (int c = 0; c < h->n_cores; c++)
            if (h->core_numa[c] == n) {
                if (first < 0) first = c;
                count++;
            }
        ts_host_cpu_list(h, first < 0 ? 0 : first, count, cpus, sizeof cpus);
        ts_jw_object_begin(w);
        kv_int(w, "cores", count);
        kv_str(w, "cpus", cpus);
        ts_jw_object_end(w);
    }
    ts_jw_array_end(w);
    kv_int(w, "slots", h->slots);
    kv_int(w, "het_group", h->het_group);
    ts_jw_key(w, "gpus");
    ts_jw_array_begin(w);
    for (int i = 0; i < h->n_gpus; i++) {
        ts_jw_object_begin(w);
        kv_int(w, "index", i);
        kv_str(w, "name", h->gpus[i].name);
        kv_int(w, "memory_bytes", (int64_t)h->gpus[i].memory_bytes);
        ts_jw_key(w, "peers");
        if (h->peer) {
            ts_jw_array_begin(w);
            for (int j = 0; j < h->n_gpus; j++)
                if (j != i && h->peer[i * h->n_gpus + j]) ts_jw_int(w, j);
            ts_jw_array_end(w);
        } else {
            ts_jw_null(w);
        }
        ts_jw_object_end(w);
    }
    ts_jw_array_end(w);
    kv_str(w, "gpu_note", h->gpu_note);
    ts_jw_object_end(w);
}

static void write_plan_json(ts_json_writer *w, const ts_cluster *c, const ts_plan *plan) {
    char cpus[256];
    ts_jw_object_begin(w);
    kv_str(w, "devices", plan->gpus ? "gpu" : "cpu");
    kv_int(w, "ranks", plan->n_ranks);
    kv_int(w, "idle_tasks", plan->idle_tasks);
    ts_jw_key(w, "pools");
    ts_jw_array_begin(w);
    for (int p = 0; p < plan->n_pools; p++) {
        const ts_pool_place *pp = &plan->pools[p];
        ts_jw_object_begin(w);
        kv_str(w, "role", ts_role_name(pp->spec.role));
        kv_int(w, "tp", pp->spec.tp);
        kv_int(w, "groups", pp->spec.groups);
        ts_jw_key(w, "ranks");
        ts_jw_array_begin(w);
        for (int i = pp->first_rank; i < pp->first_rank + pp->n_ranks; i++) {
            const ts_rank_place *r = &plan->ranks[i];
            const ts_host *h = &c->hosts[r->host];
            ts_host_cpu_list(h, r->core0, r->n_cores, cpus, sizeof cpus);
            ts_jw_object_begin(w);
            kv_int(w, "rank", r->pool_rank);
            kv_int(w, "group", r->group);
            kv_int(w, "group_rank", r->group_rank);
            kv_str(w, "host", h->name);
            kv_int(w, "local_rank", r->local_rank);
            ts_jw_key(w, "device");
            if (r->device >= 0) {
                char dev[32];
                snprintf(dev, sizeof dev, "cuda:%d", r->device);
                ts_jw_string(w, dev);
            } else {
                ts_jw_string(w, "cpu");
            }
            kv_str(w, "cpus", cpus);
            ts_jw_object_end(w);
        }
        ts_jw_array_end(w);
        ts_jw_object_end(w);
    }
    ts_jw_array_end(w);
    ts_jw_key(w, "notes");
    ts_jw_array_begin(w);
    for (const char *n = plan->notes; *n;) {
        size_t len = strcspn(n, "\n");
        ts_jw_string_n(w, n, len);
        n += len + (n[len] == '\n');
    }
    ts_jw_array_end(w);
    ts_jw_object_end(w);
}

static int print_json(const report *r) {
    ts_buf out = {0};
    ts_json_writer w;
    ts_jw_init(&w, &out);
    ts_jw_object_begin(&w);
    kv_str(&w, "source", r->cluster->source);
    kv_int(&w, "tasks", r->cluster->n_tasks);
    ts_jw_key(&w, "slurm");
    ts_jw_object_begin(&w);
    kv_int(&w, "job_id", r->env->job_id);
    kv_int(&w, "procid", r->env->procid);
    kv_int(&w, "localid", r->env->localid);
    kv_int(&w, "nodeid", r->env->nodeid);
    kv_int(&w, "het_size", r->env->het_size);
    ts_jw_object_end(&w);
    ts_jw_key(&w, "cuda_visible_devices");
    if (r->env->visible_set) {
        ts_jw_array_begin(&w);
        for (int i = 0; i < r->env->n_visible; i++)
            ts_jw_int(&w, r->env->visible[i]);
        ts_jw_array_end(&w);
    } else {
        ts_jw_null(&w);
    }
    ts_jw_key(&w, "hosts");
    ts_jw_array_begin(&w);
    for (int i = 0; i < r->cluster->n_hosts; i++)
        write_host_json(&w, &r->cluster->hosts[i], i == r->cluster->self);
    ts_jw_array_end(&w);
    if (r->plan) {
        ts_jw_key(&w, "plan");
        write_plan_json(&w, r->cluster, r->plan);
    }
    ts_jw_object_end(&w);
    int rc = ts_jw_finish(&w);
    if (rc)
        rc = ts_error_set(rc, "out of memory writing JSON");
    else
        printf("%s\n", out.data);
    ts_buf_free(&out);
    return rc;
}

static void print_host(const ts_host *h, bool self) {
    printf("host %s%s: %d cores (%d CPUs), %d NUMA node%s", h->name, self ? " (this machine)" : "",
           h->n_cores, h->n_pus, h->n_numa, h->n_numa == 1 ? "" : "s");
    if (h->slots) printf(", %d task%s", h->slots, h->slots == 1 ? "" : "s");
    if (h->het_group) printf(", component %d", h->het_group);
    printf(", %d GPU%s", h->n_gpus, h->n_gpus == 1 ? "" : "s");
    if (h->n_gpus == 0 && h->gpu_note[0]) printf(" (%s)", h->gpu_note);
    if (!h->measured && !self) printf(" [declared]");
    printf("\n");
    for (int i = 0; i < h->n_gpus; i++) {
        printf("  cuda:%d %s", i, h->gpus[i].name[0] ? h->gpus[i].name : "GPU");
        if (h->gpus[i].memory_bytes)
            printf(", %.1f GiB", (double)h->gpus[i].memory_bytes / (1024.0 * 1024 * 1024));
        if (h->peer) {
            printf(", peer access:");
            int n = 0;
            for (int j = 0; j < h->n_gpus; j++)
                if (j != i && h->peer[i * h->n_gpus + j]) printf("%s%d", n++ ? "," : " ", j);
            if (!n) printf(" none");
        }
        printf("\n");
    }
}

static void print_text(const report *r) {
    const ts_cluster *c = r->cluster;
    printf("source: %s, %d host%s", c->source, c->n_hosts, c->n_hosts == 1 ? "" : "s");
    if (c->n_tasks) printf(", %d tasks", c->n_tasks);
    printf("\n");
    if (r->env->procid >= 0)
        printf("this task: Slurm rank %d, local rank %d, node %d\n", r->env->procid,
               r->env->localid, r->env->nodeid);
    if (r->env->visible_set) {
        printf("CUDA_VISIBLE_DEVICES: %d device%s\n", r->env->n_visible,
               r->env->n_visible == 1 ? "" : "s");
    }
    for (int i = 0; i < c->n_hosts; i++)
        print_host(&c->hosts[i], i == c->self);
    if (!r->plan) return;
    const ts_plan *plan = r->plan;
    printf("plan: %d rank%s on %s\n", plan->n_ranks, plan->n_ranks == 1 ? "" : "s",
           plan->gpus ? "GPUs" : "CPU cores");
    char cpus[256];
    for (int p = 0; p < plan->n_pools; p++) {
        const ts_pool_place *pp = &plan->pools[p];
        printf("pool %s: %d group%s x TP %d\n", ts_role_name(pp->spec.role), pp->spec.groups,
               pp->spec.groups == 1 ? "" : "s", pp->spec.tp);
        for (int i = pp->first_rank; i < pp->first_rank + pp->n_ranks; i++) {
            const ts_rank_place *rk = &plan->ranks[i];
            const ts_host *h = &c->hosts[rk->host];
            ts_host_cpu_list(h, rk->core0, rk->n_cores, cpus, sizeof cpus);
            char dev[32] = "cpu";
            if (rk->device >= 0) snprintf(dev, sizeof dev, "cuda:%d", rk->device);
            printf("  group %d rank %d: %s local %d, %s, cpus %s\n", rk->group, rk->pool_rank,
                   h->name, rk->local_rank, dev, cpus);
        }
    }
    for (const char *n = plan->notes; *n;) {
        size_t len = strcspn(n, "\n");
        printf("note: %.*s\n", (int)len, n);
        n += len + (n[len] == '\n');
    }
}

/* For launchers: the node command line of pool `pool`'s launch, NUL after each argument. */
static int print_node_command(const ts_plan *plan, int pool, ts_node_settings *ns) {
    char node_bin[4096];
    if (!plan) {
        ts_error_set(TS_E_INVALID, "--node-command needs --plan");
        return ts_cli_fail("topology", TS_EXIT_USAGE);
    }
    if (!ns->node_bin) {
        if (ts_cli_sibling_path("tessera-node", node_bin, sizeof node_bin))
            return ts_cli_fail("topology", TS_EXIT_FAILURE);
        ns->node_bin = node_bin;
    }
    ts_node_argv argv;
    if (ts_node_command(ns, plan, pool, -1, -1, &argv))
        return ts_cli_fail("topology", TS_EXIT_USAGE);
    for (int i = 0; i < argv.argc; i++)
        fwrite(argv.argv[i], 1, strlen(argv.argv[i]) + 1, stdout);
    return fflush(stdout) == 0 ? TS_EXIT_OK : TS_EXIT_FAILURE;
}

/* For launchers: one rank as "pool=decode group=1 host=n2 device=cuda:1 cpus=8-15", or (all)
 * every rank of the pool as "HOST/DEVICE/CPUS" joined by ';', in rank order. */
static int print_rank(const ts_cluster *c, const ts_plan *plan, int pool, int rank, bool all) {
    if (!plan) {
        ts_error_set(TS_E_INVALID, "--rank and --bindings need --plan");
        return ts_cli_fail("topology", TS_EXIT_USAGE);
    }
    if (pool >= plan->n_pools || rank >= plan->pools[pool].n_ranks) {
        ts_error_set(TS_E_INVALID, "--pool %d --rank %d: the plan has %d pool(s)%s%d rank(s)", pool,
                     rank, plan->n_pools, pool < plan->n_pools ? ", that one " : "",
                     pool < plan->n_pools ? plan->pools[pool].n_ranks : 0);
        return ts_cli_fail("topology", TS_EXIT_USAGE);
    }
    const ts_pool_place *pp = &plan->pools[pool];
    for (int i = all ? 0 : rank; i < (all ? pp->n_ranks : rank + 1); i++) {
        const ts_rank_place *r = &plan->ranks[pp->first_rank + i];
        char cpus[256], dev[32] = "cpu";
        ts_host_cpu_list(&c->hosts[r->host], r->core0, r->n_cores, cpus, sizeof cpus);
        if (r->device >= 0) snprintf(dev, sizeof dev, "cuda:%d", r->device);
        if (all)
            printf("%s%s/%s/%s", i ? ";" : "", c->hosts[r->host].name, dev, cpus);
        else
            printf("pool=%s group=%d host=%s device=%s cpus=%s", ts_role_name(pp->spec.role),
                   r->group, c->hosts[r->host].name, dev, cpus);
    }
    printf("\n");
    return TS_EXIT_OK;
}

int ts_cmd_topology(int argc, char **argv) {
    const char *plan_text = NULL, *cluster_file = NULL, *model = NULL, *devices = "auto";
    bool json = false, allow_cross = false, local_only = false;
    int rank = -1, pool = 0;
    bool bindings = false, node_command = false;
    ts_node_settings ns = {0};
    ts_flag flags[48] = {
        {"plan", 0, TS_FLAG_STRING, &plan_text,
         "pools to place: [ROLE:][GROUPSx]TP, comma-separated (mixed:2x4, prefill:1x2,decode:2x1; "
         "no GROUPS: as many as fit)",
         0, 0},
        {"cluster", 0, TS_FLAG_STRING, &cluster_file,
         "JSON file describing the hosts (instead of the Slurm allocation)", 0, 0},
        {"local", 0, TS_FLAG_BOOL, &local_only, "plan on this machine only, even inside Slurm", 0,
         0},
        {"model", 'm', TS_FLAG_STRING, &model, "check the TP degrees against this model's heads", 0,
         0},
        {"devices", 0, TS_FLAG_STRING, &devices, "auto, gpu or cpu", 0, 0},
        {"allow-cross-host-tp", 0, TS_FLAG_BOOL, &allow_cross,
         "let a TP group span hosts when no host has room for it", 0, 0},
        {"json", 0, TS_FLAG_BOOL, &json, "print JSON", 0, 0},
        {"rank", 0, TS_FLAG_INT, &rank,
         "print only this rank's placement (of --pool) as one line of KEY=VALUE, for launchers", -1,
         1 << 24},
        {"pool", 0, TS_FLAG_INT, &pool, "with --rank/--bindings: which pool (0 = the first)", 0,
         TS_PLAN_MAX_POOLS - 1},
        {"bindings", 0, TS_FLAG_BOOL, &bindings,
         "print the pool's ranks as HOST/DEVICE/CPUS;... in rank order (for tessera-bind.sh)", 0,
         0},
        {"node-command", 0, TS_FLAG_BOOL, &node_command,
         "print the tessera-node command line of the pool's launch (NUL after each argument)", 0,
         0},
        {"coordinator", 0, TS_FLAG_STRING, &ns.coordinator,
         "with --node-command: the nodes dial this HOST:PORT", 0, 0},
        {"coordinator-file", 0, TS_FLAG_STRING, &ns.coordinator_file,
         "with --node-command: the nodes read the coordinator's HOST:PORT from this file", 0, 0},
        {"name", 0, TS_FLAG_STRING, &ns.name,
         "with --node-command: the pool's group names (NAME-gK; default the role)", 0, 0},
        {"threads", 't', TS_FLAG_INT, &ns.threads,
         "with --node-command: kernel threads per rank (0: the cores the launcher gives it)", 0,
         1024},
        {"node-bin", 0, TS_FLAG_STRING, &ns.node_bin,
         "with --node-command: the tessera-node to run (default: the one next to tessera)", 0, 0},
        {"log-level", 0, TS_FLAG_STRING, &ns.log_level, "with --node-command: the nodes' log level",
         0, 0},
    };
    int n_flags = 0; /* the entries above; the rest of the table is zeroed */
    while (flags[n_flags].name)
        n_flags++;
    n_flags += ts_node_settings_flags(&ns, flags + n_flags);
    const char *positionals[1];
    ts_flags_result result = {positionals, 1, 0};
    int rc = ts_flags_parse(USAGE, flags, n_flags, argc, argv, 1, &result);
    if (rc == TS_FLAGS_HELP) return TS_EXIT_OK;
    if (rc) return ts_cli_fail("topology", TS_EXIT_USAGE);
    if (result.n_positionals) {
        ts_error_set(TS_E_INVALID, "unexpected argument '%s' (usage: " USAGE ")", positionals[0]);
        return ts_cli_fail("topology", TS_EXIT_USAGE);
    }
    ts_plan_request req = {.allow_cross_host_tp = allow_cross};
    if (!strcmp(devices, "gpu"))
        req.devices = TS_DEVICES_GPU;
    else if (!strcmp(devices, "cpu"))
        req.devices = TS_DEVICES_CPU;
    else if (strcmp(devices, "auto")) {
        ts_error_set(TS_E_INVALID, "--devices: choose auto, gpu or cpu, not '%s'", devices);
        return ts_cli_fail("topology", TS_EXIT_USAGE);
    }
    if (plan_text && ts_plan_spec_parse(plan_text, &req) != TS_OK)
        return ts_cli_fail("topology", TS_EXIT_USAGE);
    if (model && !plan_text) {
        ts_error_set(TS_E_INVALID, "-m checks a plan's TP degrees: give --plan too");
        return ts_cli_fail("topology", TS_EXIT_USAGE);
    }

    ts_host local = {0};
    ts_slurm_env env = {0};
    ts_cluster cluster = {0};
    ts_plan plan = {0};
    int exit_code = TS_EXIT_OK;
    if ((rc = ts_host_discover(&local)) || (rc = ts_slurm_env_read(&env))) {
        exit_code = ts_cli_fail("topology", ts_cli_exit_code(rc));
        goto done;
    }
    if (cluster_file)
        rc = ts_cluster_from_file(cluster_file, &local, &cluster);
    else if (env.in_job && !local_only)
        rc = ts_cluster_from_slurm(&env, &local, &cluster);
    else
        rc = ts_cluster_single(&local, &cluster);
    if (rc) {
        exit_code = ts_cli_fail("topology", TS_EXIT_USAGE);
        goto done;
    }
    if (plan_text) {
        if ((model && (rc = check_model(model, &req))) ||
            (rc = ts_plan_make(&cluster, &req, &plan))) {
            exit_code = ts_cli_fail("topology", ts_cli_exit_code(rc));
            goto done;
        }
    }
    if (node_command) {
        ns.model = model;
        exit_code = print_node_command(plan_text ? &plan : NULL, pool, &ns);
        goto done;
    }
    if (rank >= 0 || bindings) {
        exit_code = print_rank(&cluster, plan_text ? &plan : NULL, pool, rank, bindings);
        goto done;
    }
    report r = {&env, &cluster, plan_text ? &plan : NULL};
    if (json) {
        if (print_json(&r)) exit_code = ts_cli_fail("topology", TS_EXIT_FAILURE);
    } else {
        print_text(&r);
    }
done:
    ts_plan_free(&plan);
    ts_cluster_free(&cluster);
    ts_slurm_env_free(&env);
    ts_host_free(&local);
    return exit_code;
}
