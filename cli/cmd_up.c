/*
 * cmd_up.c — `tessera up`: a whole local cluster in the foreground.
 *
 * Starts tessera-coordinator and G node groups (`mpirun -np N tessera-node --tp N` when N > 1,
 * plain `tessera-node` when N == 1), all found next to the `tessera` executable. Where each rank
 * runs is the placement module's plan for this machine (topology/placement.h, oversubscribed: a
 * local cluster shares the cores), and each group's command line is the one the Slurm scripts
 * use too (topology/node_command.h). Waits until
 * Health lists every group; logs where it serves (gRPC, and the OpenAI HTTP API with a curl
 * example: on by default, port 8000, or a free one when --port is 0; --no-http turns it off; the
 * coordinator writes the bound HTTP address to the run directory, --http-endpoint-file); then
 * stays until SIGINT/SIGTERM, or until a
 * child dies (logged by name, exit 1). Stopping: SIGTERM to the coordinator, which lets running
 * requests finish and sends Shutdown to the groups; stragglers get SIGTERM, then SIGKILL.
 *
 * Disaggregated (issue 5): --prefill-groups P --decode-groups D start P groups with --role
 * prefill (TP --prefill-tp) and D with --role decode (TP --decode-tp), plus --groups mixed ones
 * (default none then). --cpus-per-group N pins group k to the cores kN .. kN+N-1 (modulo the
 * machine's) so that the pools do not share cores: the affinity is set on this process around
 * each spawn and inherited by the group's processes (mpirun runs with --bind-to none). Without
 * it nothing is pinned, and --threads 0 gives each rank the plan's share of the cores.
 *
 * Every child runs in its own process group, so the terminal's Ctrl-C reaches only this process,
 * which then stops the cluster in order; every child dies with tessera up (cli/process.h), so a
 * `kill -9` of it leaves nothing behind. A child is forked and at once replaced by exec, so a
 * fork after gRPC has started is safe (NOTES.md: a forked process that uses gRPC hangs).
 */
#include "cli/commands.h"
#include "cli/process.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/flags.h"
#include "common/log.h"
#include "common/paths.h"
#include "common/secret.h"
#include "kernels/kernels.h"
#include "kvx/kv_transfer.h"
#include "model/hf.h"
#include "model/model.h"
#include "node/shard.h"
#include "rpc/rpc_client.h"
#include "rpc/rpc_tls.h"
#include "tessera/v1/inference.pb-c.h"
#include "topology/cluster.h"
#include "topology/host.h"
#include "topology/node_command.h"
#include "topology/placement.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

enum { UP_MAX_GROUPS = 64, UP_MAX_ARGS = 160, UP_HTTP_PORT = 8000 };

/* One child's command line, its strings copied (a restart runs it again). */
typedef struct launch {
    char *argv[UP_MAX_ARGS + 1];
    int argc;
    char store[4096];
    size_t used;
} launch;

static int launch_add(launch *l, const char *arg) {
    size_t len = strlen(arg) + 1;
    if (l->argc == UP_MAX_ARGS || len > sizeof l->store - l->used)
        return ts_error_set(TS_E_NOMEM, "tessera up: a command line longer than %d arguments",
                            UP_MAX_ARGS);
    memcpy(l->store + l->used, arg, len);
    l->argv[l->argc++] = l->store + l->used;
    l->argv[l->argc] = NULL;
    l->used += len;
    return TS_OK;
}

static int launch_add_all(launch *l, char *const *argv) {
    int rc = TS_OK;
    for (int i = 0; !rc && argv[i]; i++)
        rc = launch_add(l, argv[i]);
    return rc;
}

typedef struct child {
    char name[64];
    pid_t pid;      /* 0 while not running */
    launch cmd;     /* what it runs, again on a restart */
    cpu_set_t cpus; /* --cpus-per-group: where it runs */
    bool pinned;
    int restarts;       /* restarts that count against the budget */
    int64_t started_ns; /* its last start */
    int64_t due_ns;     /* a crashed child's restart time; 0: none due */
} child;

typedef struct up_state {
    child kids[UP_MAX_GROUPS + 1]; /* [0] the coordinator */
    int n_kids;
    char tmpdirs[UP_MAX_GROUPS][64]; /* mpirun session directories ("" if none) */
} up_state;

/* Starts child c (again): its command line, pinned where --cpus-per-group put it. The affinity
 * is set on this thread around the fork and inherited. */
static int start(child *c) {
    cpu_set_t own;
    if (c->pinned) {
        if (sched_getaffinity(0, sizeof own, &own) != 0 ||
            sched_setaffinity(0, sizeof c->cpus, &c->cpus) != 0)
            return ts_error_set(TS_E_IO, "--cpus-per-group: cannot pin %s: %s", c->name,
                                strerror(errno));
    }
    int rc = ts_cli_spawn(c->name, c->cmd.argv, -1, &c->pid);
    if (c->pinned) sched_setaffinity(0, sizeof own, &own);
    c->started_ns = ts_now_ns();
    c->due_ns = 0;
    return rc;
}

/* A new child: copies its command line and starts it. */
static int spawn(up_state *st, const char *name, char *const argv[], const cpu_set_t *cpus) {
    child *c = &st->kids[st->n_kids];
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    int rc = launch_add_all(&c->cmd, argv);
    if (cpus) {
        c->cpus = *cpus;
        c->pinned = true;
    }
    if (!rc) rc = start(c);
    if (!rc) st->n_kids++;
    return rc;
}

/* Reaps exited children; returns the first one that exited now (or NULL) and its status. */
static child *reap(up_state *st, int *status) {
    child *first = NULL;
    for (int i = 0; i < st->n_kids; i++) {
        child *c = &st->kids[i];
        int s;
        if (c->pid > 0 && waitpid(c->pid, &s, WNOHANG) == c->pid) {
            c->pid = 0;
            if (!first) {
                first = c;
                *status = s;
            }
        }
    }
    return first;
}

static int alive(const up_state *st) {
    int n = 0;
    for (int i = 0; i < st->n_kids; i++)
        n += st->kids[i].pid > 0;
    return n;
}

static void describe_exit(int status, char *out, size_t size) {
    if (WIFEXITED(status))
        snprintf(out, size, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, size, "was killed by signal %d", WTERMSIG(status));
    else
        snprintf(out, size, "ended");
}

/* The coordinator first (it drains and tells the groups), then whatever is left. */
static void stop_all(up_state *st) {
    if (st->kids[0].pid > 0) kill(st->kids[0].pid, SIGTERM);
    int64_t t0 = ts_now_ns();
    bool termed = false;
    int status;
    while (alive(st) > 0) {
        double waited_s = ts_ns_to_s(ts_now_ns() - t0);
        if (!termed && (st->kids[0].pid == 0 || waited_s > 15)) {
            if (st->kids[0].pid == 0) ts_sleep_ms(500); /* let the groups act on Shutdown */
            for (int i = 1; i < st->n_kids; i++)
                if (st->kids[i].pid > 0) kill(st->kids[i].pid, SIGTERM);
            termed = true;
        }
        if (waited_s > 30) {
            for (int i = 0; i < st->n_kids; i++)
                if (st->kids[i].pid > 0) {
                    TS_WARN("tessera up: %s does not stop; killing it", st->kids[i].name);
                    kill(-st->kids[i].pid, SIGKILL);
                    kill(st->kids[i].pid, SIGKILL);
                }
        }
        reap(st, &status);
        ts_sleep_ms(50);
    }
}

/* Health: how many groups are registered. -1 when the call fails. */
static int registered_groups(ts_rpc_channel *ch) {
    ts_buf reply = {0};
    int n = -1;
    if (ts_rpc_unary(ch, "/tessera.v1.Inference/Health", "", 0, 2000, &reply) == TS_OK) {
        Tessera__V1__HealthResponse *h =
            tessera__v1__health_response__unpack(NULL, reply.len, (const uint8_t *)reply.data);
        if (h) {
            n = (int)h->n_groups;
            tessera__v1__health_response__free_unpacked(h, NULL);
        }
    }
    ts_buf_free(&reply);
    return n;
}

static int read_endpoint(const char *path, char *out, size_t size) {
    ts_buf b = {0};
    int ok = ts_buf_read_file(&b, path) == TS_OK && b.len > 0;
    if (ok) snprintf(out, size, "%.*s", (int)strcspn(b.data, "\r\n"), b.data);
    ts_buf_free(&b);
    return ok && out[0];
}

/* Each group's tensor-parallel degree against the model, by the shard plan's own rules
 * (node/shard.h: the query heads divisible by the degree, the KV heads and the degree one a
 * multiple of the other, whole quantized blocks per rank), before any child starts: a bad degree
 * would otherwise show only as children dying. `flag` names the option that set each degree. */
static int check_tp(const char *model, const int *group_tp, const char *const *flag, int n_groups) {
    char path[PATH_MAX];
    int rc = model ? (snprintf(path, sizeof path, "%s", model), TS_OK)
                   : ts_find_data_file(TS_DEFAULT_MODEL, path, sizeof path);
    ts_gguf *g = NULL;
    ts_model m = {0};
    if (!rc) rc = ts_hf_open_model(path, &g);
    if (!rc) rc = ts_model_load(g, &m);
    if (rc) rc = ts_error_wrap(rc, "--model %s", path);
    for (int k = 0; !rc && k < n_groups; k++) {
        if (k > 0 && group_tp[k] == group_tp[k - 1]) continue;
        ts_shard_plan plan;
        for (int rank = 0; !rc && rank < group_tp[k]; rank++)
            rc = ts_shard_plan_make(&m, rank, group_tp[k], &plan);
        if (rc) rc = ts_error_wrap(rc, "--%s %d", flag[k], group_tp[k]);
    }
    ts_model_free(&m);
    ts_gguf_close(g);
    return rc;
}

/* --device cuda[:N] for the whole local cluster: every rank gets its own GPU, counted from N in
 * group order, so that NCCL (all-reduce within a group, the KV transport between groups) never
 * sees one GPU twice. When there are fewer GPUs than ranks and every group has one rank, the
 * groups share GPUs round robin (the plan oversubscribes); otherwise it is a refusal that says
 * what fits. Leaves in `local` the GPUs from N on (plan device d is then GPU N + d). */
static int gpus_from(ts_host *local, const char *device, int base, int ranks, int widest) {
    int n_gpus = local->n_gpus;
    if (base >= n_gpus)
        return ts_error_set(TS_E_INVALID, "--device %s: this machine has %d GPU(s)%s%s", device,
                            n_gpus, local->gpu_note[0] ? ": " : "", local->gpu_note);
    int usable = n_gpus - base;
    if (ranks > usable && widest > 1)
        return ts_error_set(TS_E_INVALID,
                            "--device %s: %d ranks need one GPU each, but %d GPU(s) from cuda:%d "
                            "are here: lower --groups or the TP degrees",
                            device, ranks, usable, base);
    if (ranks > usable)
        TS_WARN("up: %d single-rank groups share %d GPU(s) from cuda:%d", ranks, usable, base);
    memmove(local->gpus, local->gpus + base, (size_t)usable * sizeof *local->gpus);
    if (local->peer)
        for (int i = 0; i < usable; i++)
            for (int j = 0; j < usable; j++)
                local->peer[i * usable + j] = local->peer[(i + base) * n_gpus + j + base];
    local->n_gpus = usable;
    return TS_OK;
}

/* Group g of pool p: the node command line (topology/node_command.h), under mpirun when the
 * group has several ranks — one app context, or one per rank (MPMD, still one MPI world and so
 * one group) when its GPUs are not consecutive. `tmpdir`: the mpirun's own session directory. */
static int group_launch(const ts_node_settings *ns, const ts_plan *plan, int p, int g,
                        const char *tmpdir, launch *l) {
    const ts_group_place *gp = &plan->groups[plan->pools[p].first_group + g];
    ts_node_argv node;
    int rc = TS_OK;
    memset(l, 0, sizeof *l);
    if (gp->tp == 1) {
        rc = ts_node_command(ns, plan, p, g, -1, &node);
        return rc ? rc : launch_add_all(l, node.argv);
    }
    /* mpiruns started together race creating one session directory ("File exists"): each gets
     * its own. --oversubscribe: a local cluster shares the machine's cores. */
    char *const mpirun[] = {"mpirun", "--oversubscribe",  "--bind-to",    "none",
                            "--mca",  "orte_tmpdir_base", (char *)tmpdir, NULL};
    rc = launch_add_all(l, mpirun);
    bool per_rank = !ts_node_group_devices_consecutive(plan, plan->pools[p].first_group + g);
    char np[16];
    snprintf(np, sizeof np, "%d", per_rank ? 1 : gp->tp);
    for (int r = 0; !rc && r < (per_rank ? gp->tp : 1); r++) {
        if (r > 0) rc = launch_add(l, ":");
        if (!rc) rc = launch_add(l, "-np");
        if (!rc) rc = launch_add(l, np);
        if (!rc) rc = ts_node_command(ns, plan, p, g, per_rank ? r : -1, &node);
        if (!rc) rc = launch_add_all(l, node.argv);
    }
    return rc;
}

/* The shape on the serving line: "2 groups x 2 ranks", "1 prefill groups x 2 ranks, 2 decode
 * groups x 1 ranks" (pools in plan order: mixed, prefill, decode). */
static void describe_plan(const ts_plan *plan, char *out, size_t size) {
    size_t len = 0;
    out[0] = '\0';
    for (int p = 0; p < plan->n_pools && len < size; p++) {
        const ts_pool_spec *sp = &plan->pools[p].spec;
        len += (size_t)snprintf(out + len, size - len, "%s%d %s%sgroups x %d ranks", p ? ", " : "",
                                sp->groups, sp->role == TS_ROLE_MIXED ? "" : ts_role_name(sp->role),
                                sp->role == TS_ROLE_MIXED ? "" : " ", sp->tp);
    }
}

typedef struct up_options {
    const char *model, *endpoint_file, *log_level, *api_key_file, *chat_template;
    int http_port; /* -1: no HTTP API; 0: any free port */
    int port, threads, cpus_per_group, startup_ms;
    const char *device;
    int first_gpu;
    int max_restarts;      /* per child, see supervise */
    const char *state_dir; /* the coordinator's --state-dir (batches), or NULL */
    const char *tls_cert, *tls_key; /* checked; passed to the coordinator as paths */
    bool protect_metrics;           /* the coordinator's --protect-metrics */
    const char *http_endpoint_file; /* where the HTTP API's HOST:PORT goes, or NULL (run dir) */
    const char *routing;            /* the coordinator's --routing, or NULL (its default) */
} up_options;

/* The coordinator's command line, into args (UP_MAX_ARGS). */
static void coordinator_args(const up_options *o, char *bin, char *listen, char *http_listen,
                             const char *endpoint_file, const char *worker_ep, const char *http_ep,
                             const char *secret_file, char **args) {
    int a = 0;
    args[a++] = bin;
    args[a++] = "--listen";
    args[a++] = listen;
    args[a++] = "--endpoint-file";
    args[a++] = (char *)endpoint_file;
    args[a++] = "--worker-listen"; /* nodes attach on loopback, never on the API's port */
    args[a++] = "127.0.0.1:0";
    args[a++] = "--worker-endpoint-file";
    args[a++] = (char *)worker_ep;
    args[a++] = "--cluster-secret-file";
    args[a++] = (char *)secret_file;
    args[a++] = "--log-level";
    args[a++] = (char *)o->log_level;
    if (o->model) {
        args[a++] = "-m";
        args[a++] = (char *)o->model;
    }
    if (o->http_port >= 0) {
        args[a++] = "--http-listen";
        args[a++] = http_listen;
        args[a++] = "--http-endpoint-file";
        args[a++] = (char *)http_ep;
    }
    if (o->api_key_file) {
        args[a++] = "--api-key-file";
        args[a++] = (char *)o->api_key_file;
    }
    if (o->chat_template) {
        args[a++] = "--chat-template";
        args[a++] = (char *)o->chat_template;
    }
    if (o->protect_metrics) args[a++] = "--protect-metrics";
    if (o->routing) {
        args[a++] = "--routing";
        args[a++] = (char *)o->routing;
    }
    if (o->state_dir) {
        args[a++] = "--state-dir";
        args[a++] = (char *)o->state_dir;
    }
    if (o->tls_cert) {
        args[a++] = "--tls-cert";
        args[a++] = (char *)o->tls_cert;
        args[a++] = "--tls-key";
        args[a++] = (char *)o->tls_key;
    }
    args[a] = NULL;
}

/* Replaces the value of `flag` in c's command line by 127.0.0.1:PORT or 0.0.0.0:PORT (host), PORT
 * the one in the endpoint file `path` wrote by the coordinator that crashed. */
static int same_port(child *c, const char *flag, const char *host, const char *path) {
    char ep[300];
    const char *colon = read_endpoint(path, ep, sizeof ep) ? strrchr(ep, ':') : NULL;
    if (!colon) return ts_error_set(TS_E_INTERNAL, "no port in %s to listen on again", path);
    char listen[64], *argv[UP_MAX_ARGS + 1];
    snprintf(listen, sizeof listen, "%s:%s", host, colon + 1);
    int n = 0;
    for (; c->cmd.argv[n]; n++)
        argv[n] = c->cmd.argv[n];
    argv[n] = NULL;
    for (int i = 0; i + 1 < n; i++)
        if (!strcmp(argv[i], flag)) argv[i + 1] = listen;
    static launch copy; /* large; its argv points into its own store, so copy it string by string */
    memset(&copy, 0, sizeof copy);
    int rc = launch_add_all(&copy, argv);
    if (!rc) {
        memset(&c->cmd, 0, sizeof c->cmd);
        rc = launch_add_all(&c->cmd, copy.argv);
    }
    return rc;
}

/* A restarted coordinator listens where the first one did: clients keep their address, and the
 * groups redial the Worker listener's (worker.h), so both ports stay. */
static int coordinator_same_ports(child *c, const up_options *o, const char *endpoint_file,
                                  const char *worker_ep, const char *http_ep) {
    int rc = same_port(c, "--listen", "0.0.0.0", endpoint_file);
    if (!rc) rc = same_port(c, "--worker-listen", "127.0.0.1", worker_ep);
    if (!rc && o->http_port >= 0) rc = same_port(c, "--http-listen", "0.0.0.0", http_ep);
    return rc;
}

/* Supervision (issue 18). A child that crashes (killed by a signal, or an exit status other than
 * 0 and 2: a runtime failure such as a node that lost its coordinator for --connect-timeout-ms,
 * or an mpirun whose rank died) once the cluster
 * serves is started again with the same command line after a backoff (UP_BACKOFF_FIRST_MS,
 * doubling up to UP_BACKOFF_MAX_MS), at most o->max_restarts times; a child that then ran for
 * UP_HEALTHY_S gets its budget back. Node groups re-attach to the coordinator by themselves, a
 * restarted coordinator listens on the same ports and the groups redial it (worker.h). What does
 * not restart stops the cluster (exit 1): a child that ends before the cluster first served
 * (a bad flag, a model the node refuses: running it again would not help), one that exits 0 or 2
 * (stopped on purpose, usage error), one whose budget is spent, or one that cannot be started.
 * Every death, restart and refusal is logged naming the child. Returns TS_OK to go on. */
enum { UP_BACKOFF_FIRST_MS = 500, UP_BACKOFF_MAX_MS = 15000, UP_HEALTHY_S = 60 };

static int supervise(up_state *st, const up_options *o, bool serving, const char *endpoint_file,
                     const char *worker_ep, const char *http_ep) {
    int status;
    for (child *dead; (dead = reap(st, &status));) {
        char how[64];
        describe_exit(status, how, sizeof how);
        int64_t now = ts_now_ns();
        if (now - dead->started_ns > (int64_t)UP_HEALTHY_S * 1000000000) dead->restarts = 0;
        /* mpirun reports a rank killed by signal S as exit status 128 + S */
        bool crashed = WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) != 0 &&
                                               WEXITSTATUS(status) != TS_EXIT_USAGE);
        if (!serving || !crashed) {
            TS_ERROR("tessera up: %s %s; stopping the cluster", dead->name, how);
            return TS_E_UNAVAILABLE;
        }
        if (dead->restarts >= o->max_restarts) {
            TS_ERROR("tessera up: %s %s, and its %d restart(s) are spent (--max-restarts); "
                     "stopping the cluster",
                     dead->name, how, o->max_restarts);
            return TS_E_UNAVAILABLE;
        }
        int shift = dead->restarts < 8 ? dead->restarts : 8;
        int delay_ms = UP_BACKOFF_FIRST_MS << shift;
        if (delay_ms > UP_BACKOFF_MAX_MS) delay_ms = UP_BACKOFF_MAX_MS;
        dead->restarts++;
        dead->due_ns = now + (int64_t)delay_ms * 1000000;
        TS_WARN("tessera up: %s %s; restarting it in %d ms (restart %d of %d)", dead->name, how,
                delay_ms, dead->restarts, o->max_restarts);
    }
    for (int i = 0; i < st->n_kids; i++) {
        child *c = &st->kids[i];
        if (!c->due_ns || ts_now_ns() < c->due_ns) continue;
        int rc = i == 0 ? coordinator_same_ports(c, o, endpoint_file, worker_ep, http_ep) : TS_OK;
        if (!rc) rc = start(c);
        if (rc) {
            TS_ERROR("tessera up: cannot restart %s: %s; stopping the cluster", c->name,
                     ts_error_message());
            return rc;
        }
        TS_INFO("tessera up: restarted %s (pid %d)", c->name, (int)c->pid);
    }
    return TS_OK;
}

/* Starts the coordinator and the plan's groups, serves until a signal or a child's death, and
 * stops everything. Returns the exit code. */
static int up_run(ts_node_settings *ns, const ts_plan *plan, const up_options *o) {
    char coord_bin[PATH_MAX], node_bin[PATH_MAX];
    if (ts_cli_sibling_path("tessera-coordinator", coord_bin, sizeof coord_bin) ||
        ts_cli_sibling_path("tessera-node", node_bin, sizeof node_bin))
        return ts_cli_fail("up", TS_EXIT_FAILURE);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);

    /* The cluster's private files (mode 0700): the Worker listener's endpoint and the cluster
     * secret (a new one per cluster, mode 0600), handed to the children by path, never argv. */
    char run_dir[64] = "/tmp/tessera-up-XXXXXX", worker_ep[96], http_ep[PATH_MAX], secret_file[96];
    char secret[TS_SECRET_MAX];
    if (!mkdtemp(run_dir)) {
        ts_error_set(TS_E_IO, "cannot make a directory in /tmp: %s", strerror(errno));
        return ts_cli_fail("up", TS_EXIT_FAILURE);
    }
    snprintf(worker_ep, sizeof worker_ep, "%s/worker.endpoint", run_dir);
    if (o->http_endpoint_file)
        snprintf(http_ep, sizeof http_ep, "%s", o->http_endpoint_file);
    else
        snprintf(http_ep, sizeof http_ep, "%s/http.endpoint", run_dir);
    remove(http_ep); /* a previous cluster's: the coordinator writes it when it listens */
    snprintf(secret_file, sizeof secret_file, "%s/cluster.secret", run_dir);
    int rc = ts_secret_create_file(secret_file);
    if (!rc) rc = ts_secret_load("cluster secret", secret_file, NULL, secret, sizeof secret);
    if (rc) {
        remove(secret_file);
        rmdir(run_dir);
        return ts_cli_fail("up", TS_EXIT_FAILURE);
    }
    const char *endpoint_file = o->endpoint_file;
    char tmp_ep[64] = "", listen[64], http_listen[64];
    if (!endpoint_file) {
        snprintf(tmp_ep, sizeof tmp_ep, "/tmp/tessera-up-%d.endpoint", (int)getpid());
        endpoint_file = tmp_ep;
    }
    remove(endpoint_file);
    snprintf(listen, sizeof listen, "0.0.0.0:%d", o->port);
    snprintf(http_listen, sizeof http_listen, "0.0.0.0:%d", o->http_port);
    ns->node_bin = node_bin;
    ns->coordinator_file = worker_ep;
    ns->cluster_secret_file = secret_file;
    ns->die_with_parent = true; /* see cli/process.h */
    ns->model = o->model;
    ns->log_level = o->log_level;
    ns->device = o->device;
    ns->device_base = o->first_gpu;

    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    up_state *st = calloc(1, sizeof *st);
    if (!st) {
        ts_error_set(TS_E_NOMEM, "out of memory");
        remove(secret_file);
        rmdir(run_dir);
        return ts_cli_fail("up", TS_EXIT_FAILURE);
    }
    char *cargs[UP_MAX_ARGS];
    coordinator_args(o, coord_bin, listen, http_listen, endpoint_file, worker_ep, http_ep,
                     secret_file, cargs);
    rc = spawn(st, "tessera-coordinator", cargs, NULL);
    for (int g = 0; !rc && g < plan->n_groups; g++) {
        const ts_group_place *gp = &plan->groups[g];
        const ts_pool_place *pp = &plan->pools[gp->pool];
        char name[32];
        snprintf(name, sizeof name, "%s-%d",
                 pp->spec.role == TS_ROLE_MIXED ? "group" : ts_role_name(pp->spec.role), gp->index);
        ns->threads = o->threads;
        cpu_set_t set;
        if (o->cpus_per_group) {
            if (!ns->threads)
                ns->threads = o->cpus_per_group / gp->tp > 0 ? o->cpus_per_group / gp->tp : 1;
            CPU_ZERO(&set);
            for (int c = 0; c < o->cpus_per_group; c++)
                CPU_SET((g * o->cpus_per_group + c) % cores, &set);
        }
        if (gp->tp > 1) {
            snprintf(st->tmpdirs[g], sizeof st->tmpdirs[g], "/tmp/tessera-up-%d-g%d", (int)getpid(),
                     g);
            mkdir(st->tmpdirs[g], 0700);
        }
        static launch l; /* large; one at a time */
        rc = group_launch(ns, plan, gp->pool, gp->index, st->tmpdirs[g], &l);
        char what[64];
        snprintf(what, sizeof what, "node %s", name);
        if (!rc) rc = spawn(st, what, l.argv, o->cpus_per_group ? &set : NULL);
    }
    if (rc) {
        ts_cli_fail("up", TS_EXIT_FAILURE);
        stop_all(st);
        free(st);
        remove(worker_ep);
        remove(secret_file);
        rmdir(run_dir);
        return TS_EXIT_FAILURE;
    }

    /* Wait for the endpoint and for every group to register, then serve; watch the children
     * all along (supervise). */
    int exit_code = TS_EXIT_OK;
    char ep[300] = "";
    ts_rpc_channel *ch = NULL;
    int64_t deadline = ts_now_ns() + (int64_t)o->startup_ms * 1000000;
    bool serving = false, stop = false;
    while (!stop) {
        struct timespec ts = {0, 200 * 1000000L};
        if (sigtimedwait(&sigs, NULL, &ts) > 0) break;
        if (supervise(st, o, serving, endpoint_file, worker_ep, http_ep)) {
            exit_code = TS_EXIT_FAILURE;
            break;
        }
        if (serving) continue;
        /* Health through the Worker listener, with the secret: no API key or TLS in the way.
         * The coordinator writes the API's endpoint file last. */
        char wep[300];
        ts_rpc_channel_options co;
        ts_rpc_channel_options_default(&co);
        ts_rpc_metadata md = {TS_CLUSTER_SECRET_KEY, secret};
        co.metadata = &md;
        co.n_metadata = 1;
        if (!ch && read_endpoint(endpoint_file, ep, sizeof ep) &&
            read_endpoint(worker_ep, wep, sizeof wep) &&
            ts_rpc_channel_create(wep, &co, &ch) != TS_OK) {
            ts_cli_fail("up", TS_EXIT_FAILURE);
            exit_code = TS_EXIT_FAILURE;
            break;
        }
        if (ch && registered_groups(ch) >= plan->n_groups) {
            char shape[256];
            describe_plan(plan, shape, sizeof shape);
            TS_INFO("tessera up: serving %s on %s%s (%s)",
                    o->model ? o->model : "the bundled model", ep, o->tls_cert ? " with TLS" : "",
                    shape);
            serving = true;
            const char *scheme = o->tls_cert ? "https" : "http";
            char hep[300]; /* the coordinator wrote it before the API's endpoint file */
            if (o->http_port >= 0 && read_endpoint(http_ep, hep, sizeof hep))
                TS_INFO("tessera up: HTTP API on %s://%s/v1 (try: curl%s "
                        "%s://%s/v1/completions -d '{\"prompt\": \"Once upon a "
                        "time\", \"max_tokens\": 16}'%s)",
                        scheme, hep, o->tls_cert ? " --cacert CA.pem" : "", scheme, hep,
                        o->api_key_file ? " -H 'Authorization: Bearer KEY'" : "");
        } else if (ts_now_ns() > deadline) {
            TS_ERROR("tessera up: the groups did not all register within %d ms; stopping",
                     o->startup_ms);
            exit_code = TS_EXIT_FAILURE;
            stop = true;
        }
    }
    TS_INFO("tessera up: stopping the cluster");
    ts_rpc_channel_destroy(ch);
    stop_all(st);
    if (tmp_ep[0]) remove(tmp_ep);
    remove(worker_ep);
    remove(http_ep);
    remove(secret_file);
    rmdir(run_dir);
    for (int g = 0; g < plan->n_groups; g++)
        if (st->tmpdirs[g][0]) rmdir(st->tmpdirs[g]); /* Open MPI removed what it made inside */
    free(st);
    TS_INFO("tessera up: stopped");
    return exit_code;
}

int ts_cmd_up(int argc, char **argv) {
    const char *model = NULL, *endpoint_file = NULL, *log_level = "info", *api_key_file = NULL;
    const char *chat_template = NULL, *state_dir = NULL, *tls_cert = NULL, *tls_key = NULL;
    const char *routing = NULL;
    const char *http_endpoint_file = NULL;
    int http_port = -1;
    bool no_http = false, protect_metrics = false;
    int port = 50051, tp = 1, groups = -1, threads = 0, startup_ms = 120000, max_restarts = 3;
    int prefill_groups = 0, decode_groups = 0, prefill_tp = 0, decode_tp = 0, cpus_per_group = 0;
    const char *device = NULL;
    /* What every node gets the same (topology/node_command.h): the engine flags as given (the
     * node validates them, with the messages `tessera generate` gives). */
    ts_node_settings ns = {.kv_transport = "tcp"};
    ts_flag flags[64] = {
        {"model", 'm', TS_FLAG_STRING, &model, "model file (GGUF); default: the bundled model", 0,
         0},
        {"port", 0, TS_FLAG_INT, &port, "port of the cluster's API (0: any free port)", 0, 65535},
        {"http-port", 0, TS_FLAG_INT, &http_port,
         "port of the OpenAI-compatible HTTP API on all interfaces (-1: 8000, or any free port "
         "when --port is 0; 0: any free port)",
         -1, 65535},
        {"no-http", 0, TS_FLAG_BOOL, &no_http, "serve no HTTP API (gRPC only)", 0, 0},
        {"protect-metrics", 0, TS_FLAG_BOOL, &protect_metrics,
         "/health, /metrics and gRPC Health need an API key too (needs --api-key-file or "
         "TESSERA_API_KEY)",
         0, 0},
        {"api-key-file", 0, TS_FLAG_STRING, &api_key_file,
         "API keys, one per line, for HTTP and gRPC (also TESSERA_API_KEY, which the "
         "coordinator inherits); default: no authentication",
         0, 0},
        {"tls-cert", 0, TS_FLAG_STRING, &tls_cert,
         "PEM certificate: the API and HTTP over TLS (with --tls-key)", 0, 0},
        {"tls-key", 0, TS_FLAG_STRING, &tls_key, "PEM private key of --tls-cert", 0, 0},
        {"chat-template", 0, TS_FLAG_STRING, &chat_template,
         "HTTP chat completions: a built-in template or a Jinja file (default: the model's)", 0, 0},
        {"state-dir", 0, TS_FLAG_STRING, &state_dir,
         "durable state of the HTTP Files and Batches API; batches continue after a restart on "
         "the same directory (not with --no-http)",
         0, 0},
        {"routing", 0, TS_FLAG_STRING, &routing,
         "how the coordinator picks a request's group: cache (default: least work ahead, cached "
         "prefixes counted) or round-robin (a baseline)",
         0, 0},
        {"tp", 0, TS_FLAG_INT, &tp, "ranks per group (tensor-parallel degree)", 1, 64},
        {"groups", 0, TS_FLAG_INT, &groups,
         "mixed node groups (default 1, or 0 with prefill/decode groups)", 0, UP_MAX_GROUPS},
        {"prefill-groups", 0, TS_FLAG_INT, &prefill_groups, "groups with --role prefill", 0,
         UP_MAX_GROUPS},
        {"decode-groups", 0, TS_FLAG_INT, &decode_groups, "groups with --role decode", 0,
         UP_MAX_GROUPS},
        {"prefill-tp", 0, TS_FLAG_INT, &prefill_tp, "ranks per prefill group (default --tp)", 0,
         64},
        {"decode-tp", 0, TS_FLAG_INT, &decode_tp, "ranks per decode group (default --tp)", 0, 64},
        {"cpus-per-group", 0, TS_FLAG_INT, &cpus_per_group,
         "pin each group to its own N cores (0: no pinning)", 0, 4096},
        {"threads", 't', TS_FLAG_INT, &threads,
         "kernel threads per rank; 0 = the cores divided among all ranks", 0, 1024},
        {"device", 0, TS_FLAG_STRING, &device,
         "cpu (default), or cuda / cuda:N: one GPU per rank, from GPU N on, group by group", 0, 0},
        {"endpoint-file", 0, TS_FLAG_STRING, &endpoint_file,
         "write the API's HOST:PORT there once serving", 0, 0},
        {"http-endpoint-file", 0, TS_FLAG_STRING, &http_endpoint_file,
         "write the HTTP API's HOST:PORT there once it listens (the groups may still attach)", 0,
         0},
        {"startup-timeout-ms", 0, TS_FLAG_INT, &startup_ms, "how long the groups get to register",
         1000, 86400000},
        {"log-level", 0, TS_FLAG_STRING, &log_level, "debug, info, warn, error or off", 0, 0},
        {"max-restarts", 0, TS_FLAG_INT, &max_restarts,
         "restarts of a crashed node group or coordinator, each (0: a crash stops the cluster)", 0,
         1000},
    };
    int n_flags = 0; /* the entries above; the rest of the table is zeroed */
    while (flags[n_flags].name)
        n_flags++;
    n_flags += ts_node_settings_flags(&ns, flags + n_flags);
    ts_flags_result res = {NULL, 0, 0};
    int rc = ts_flags_parse("tessera up [-m MODEL] [--port 50051] [--tp N] [--groups G] "
                            "[--prefill-groups P --decode-groups D [--prefill-tp A] "
                            "[--decode-tp B]] [--cpus-per-group N]",
                            flags, n_flags, argc, argv, 1, &res);
    if (rc == TS_FLAGS_HELP) return TS_EXIT_OK;
    if (rc) return ts_cli_fail("up", TS_EXIT_USAGE);
    ts_log_level level;
    if (ts_log_parse_level(log_level, &level)) return ts_cli_fail("up", TS_EXIT_USAGE);
    ts_log_set_level(level);
    if (groups < 0) groups = prefill_groups + decode_groups > 0 ? 0 : 1;
    /* The HTTP API is on unless --no-http: 8000, or a free port beside a free gRPC port. */
    if (no_http && (state_dir || http_endpoint_file)) {
        ts_error_set(TS_E_INVALID, "--%s needs the HTTP API (drop --no-http)",
                     state_dir ? "state-dir" : "http-endpoint-file");
        return ts_cli_fail("up", TS_EXIT_USAGE);
    }
    http_port = no_http ? -1 : http_port >= 0 ? http_port : port == 0 ? 0 : UP_HTTP_PORT;
    if (!prefill_tp) prefill_tp = tp;
    if (!decode_tp) decode_tp = tp;
    if ((prefill_groups > 0) != (decode_groups > 0)) {
        ts_error_set(TS_E_INVALID,
                     "--prefill-groups and --decode-groups go together (got %d "
                     "and %d)",
                     prefill_groups, decode_groups);
        return ts_cli_fail("up", TS_EXIT_USAGE);
    }
    ts_kvx_transport transport;
    if (ts_kvx_transport_from_flags(ns.kv_transport, device, &transport))
        return ts_cli_fail("up", TS_EXIT_USAGE);
    int n_groups = groups + prefill_groups + decode_groups;
    if (n_groups < 1 || n_groups > UP_MAX_GROUPS) {
        ts_error_set(TS_E_INVALID, "%d node groups in all (1 .. %d)", n_groups, UP_MAX_GROUPS);
        return ts_cli_fail("up", TS_EXIT_USAGE);
    }
    if (model && access(model, R_OK) != 0) {
        ts_error_set(TS_E_IO, "--model %s: %s", model, strerror(errno));
        return ts_cli_fail("up", TS_EXIT_USAGE);
    }
    /* The pools, mixed groups first, then prefill, then decode (the plan numbers groups so). */
    ts_plan_request req = {.oversubscribe = true};
    const struct {
        ts_role role;
        int groups, tp;
        const char *flag;
    } pools[] = {{TS_ROLE_MIXED, groups, tp, "tp"},
                 {TS_ROLE_PREFILL, prefill_groups, prefill_tp, "prefill-tp"},
                 {TS_ROLE_DECODE, decode_groups, decode_tp, "decode-tp"}};
    int group_tp[UP_MAX_GROUPS], ranks = 0, widest = 1;
    const char *group_flag[UP_MAX_GROUPS];
    for (int p = 0, g = 0; p < 3; p++) {
        if (!pools[p].groups) continue;
        req.pools[req.n_pools++] = (ts_pool_spec){pools[p].role, pools[p].groups, pools[p].tp};
        for (int k = 0; k < pools[p].groups; k++, g++) {
            group_tp[g] = pools[p].tp;
            group_flag[g] = pools[p].flag;
        }
        ranks += pools[p].groups * pools[p].tp;
        if (pools[p].tp > widest) widest = pools[p].tp;
    }
    ts_tls_server tls; /* checked here: a bad file is a usage error before anything starts */
    rc = ts_tls_server_load(tls_cert, tls_key, &tls);
    ts_tls_server_free(&tls);
    if (rc) return ts_cli_fail("up", TS_EXIT_USAGE);
    rc = check_tp(model, group_tp, group_flag, n_groups);
    if (rc) return ts_cli_fail("up", ts_cli_exit_code(rc));
    long first_index = 0;
    const int gpus = device ? ts_backend_cuda_index(device, &first_index) : 0;
    if (gpus < 0) return ts_cli_fail("up", TS_EXIT_USAGE);
    if (device && !gpus && strcmp(device, "cpu") != 0) {
        ts_error_set(TS_E_INVALID, "--device '%s': expected cpu, cuda or cuda:N", device);
        return ts_cli_fail("up", TS_EXIT_USAGE);
    }
    req.devices = gpus ? TS_DEVICES_GPU : TS_DEVICES_CPU;
    ts_host local = {0};
    ts_cluster cluster = {0};
    ts_plan plan = {0};
    rc = ts_host_discover(&local);
    if (rc) {
        ts_error_wrap(rc, "looking at this machine's cores%s", gpus ? " and GPUs" : "");
    } else if (gpus) {
        rc = gpus_from(&local, device, (int)first_index, ranks, widest);
    }
    if (!rc) rc = ts_cluster_single(&local, &cluster);
    if (!rc) rc = ts_plan_make(&cluster, &req, &plan);
    ts_cluster_free(&cluster);
    ts_host_free(&local);
    if (rc) return ts_cli_fail("up", ts_cli_exit_code(rc));
    int exit_code = up_run(
        &ns, &plan,
        &(up_options){model, endpoint_file, log_level, api_key_file, chat_template, http_port, port,
                      threads, cpus_per_group, startup_ms, device, (int)first_index, max_restarts,
                      state_dir, tls_cert, tls_key, protect_metrics, http_endpoint_file, routing});
    ts_plan_free(&plan);
    return exit_code;
}
