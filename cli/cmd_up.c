/*
 * cmd_up.c — `tessera up`: a whole local cluster in the foreground.
 *
 * Starts tessera-coordinator and G node groups (`mpirun -np N tessera-node --tp N` when N > 1,
 * plain `tessera-node` when N == 1), all found next to the `tessera` executable; waits until
 * Health lists every group; logs where it serves; then stays until SIGINT/SIGTERM, or until a
 * child dies (logged by name, exit 1). Stopping: SIGTERM to the coordinator, which lets running
 * requests finish and sends Shutdown to the groups; stragglers get SIGTERM, then SIGKILL.
 *
 * Disaggregated (issue 5): --prefill-groups P --decode-groups D start P groups with --role
 * prefill (TP --prefill-tp) and D with --role decode (TP --decode-tp), plus --groups mixed ones
 * (default none then). --cpus-per-group N pins group k to the cores kN .. kN+N-1 (modulo the
 * machine's) so that the pools do not share cores: the affinity is set on this process around
 * each spawn and inherited by the group's processes (mpirun runs with --bind-to none).
 *
 * Every child runs in its own process group, so the terminal's Ctrl-C reaches only this process,
 * which then stops the cluster in order (and a SIGKILL of an mpirun's group takes its ranks).
 * Children are spawned before the first gRPC channel exists (a forked gRPC process hangs).
 */
#include "cli/commands.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/flags.h"
#include "common/log.h"
#include "common/paths.h"
#include "kernels/kernels.h"
#include "kvx/kv_transfer.h"
#include "model/hf.h"
#include "model/model.h"
#include "node/shard.h"
#include "rpc/rpc_client.h"
#include "tessera/v1/inference.pb-c.h"
#include "topology/host.h"

#include <errno.h>
#include <sched.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

enum { UP_MAX_GROUPS = 64, UP_MAX_ARGS = 64 };

typedef struct child {
    char name[64];
    pid_t pid; /* 0 once reaped */
} child;

typedef struct up_state {
    child kids[UP_MAX_GROUPS + 1]; /* [0] the coordinator */
    int n_kids;
    char tmpdirs[UP_MAX_GROUPS][64]; /* mpirun session directories ("" if none) */
} up_state;

static int spawn(up_state *st, const char *name, char *const argv[]) {
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGINT);
    sigaddset(&defaults, SIGTERM);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                        POSIX_SPAWN_SETPGROUP);
    pid_t pid;
    int err = posix_spawnp(&pid, argv[0], NULL, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    if (err) return ts_error_set(TS_E_IO, "cannot start %s (%s): %s", name, argv[0], strerror(err));
    child *c = &st->kids[st->n_kids++];
    snprintf(c->name, sizeof c->name, "%s", name);
    c->pid = pid;
    return TS_OK;
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

/* --device cuda[:N] for the whole local cluster: every rank gets its own GPU, counted from N in
 * group order (group g's ranks are GPUs first_gpu[g] ..), so that NCCL (all-reduce within a
 * group, the KV transport between groups) never sees one GPU twice. When there are fewer GPUs
 * than ranks and every group has one rank, the groups share GPUs round robin; otherwise it is a
 * refusal that says what fits. Sets first_gpu[0 .. n_groups). */
static int assign_gpus(const char *device, int base, const int *group_tp, int n_groups,
                       int *first_gpu) {
    int ranks = 0, widest = 1;
    for (int g = 0; g < n_groups; g++) {
        ranks += group_tp[g];
        if (group_tp[g] > widest) widest = group_tp[g];
    }
    ts_host host;
    int rc = ts_host_discover(&host);
    if (rc) return ts_error_wrap(rc, "--device %s: looking for GPUs", device);
    int n_gpus = host.n_gpus;
    char note[sizeof host.gpu_note];
    snprintf(note, sizeof note, "%s", host.gpu_note);
    ts_host_free(&host);
    if (base >= n_gpus)
        return ts_error_set(TS_E_INVALID, "--device %s: this machine has %d GPU(s)%s%s", device,
                            n_gpus, note[0] ? ": " : "", note);
    int usable = n_gpus - base;
    if (ranks > usable && widest > 1)
        return ts_error_set(TS_E_INVALID,
                            "--device %s: %d ranks need one GPU each, but %d GPU(s) from cuda:%d "
                            "are here: lower --groups or the TP degrees",
                            device, ranks, usable, base);
    for (int g = 0, next = 0; g < n_groups; g++) {
        first_gpu[g] = base + next % usable;
        next += group_tp[g];
    }
    if (ranks > usable)
        TS_WARN("up: %d single-rank groups share %d GPU(s) from cuda:%d", n_groups, usable, base);
    return TS_OK;
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

int ts_cmd_up(int argc, char **argv) {
    const char *model = NULL, *endpoint_file = NULL, *log_level = "info", *api_key_file = NULL;
    const char *chat_template = NULL;
    int http_port = 0;
    int port = 50051, tp = 1, groups = -1, threads = 0, ctx = 0, startup_ms = 120000;
    int prefill_groups = 0, decode_groups = 0, prefill_tp = 0, decode_tp = 0, cpus_per_group = 0;
    const char *kv_memory = NULL, *device = NULL, *kv_transport = "tcp";
    /* Engine flags handed to every tessera-node as given (the node validates them, with the
     * messages `tessera generate` gives). */
    static const char *const engine_flags[] = {"isa",        "device-memory", "kv-type",
                                               "block-size", "batch-tokens",  "batch-seqs",
                                               "prefill-chunk"};
    enum { N_ENGINE_FLAGS = sizeof engine_flags / sizeof engine_flags[0] };
    const char *engine_values[N_ENGINE_FLAGS] = {NULL};
    bool no_prefix_cache = false;
    ts_flag flags[] = {
        {"model", 'm', TS_FLAG_STRING, &model, "model file (GGUF); default: the bundled model", 0,
         0},
        {"port", 0, TS_FLAG_INT, &port, "port of the cluster's API (0: any free port)", 0, 65535},
        {"http-port", 0, TS_FLAG_INT, &http_port,
         "port of the OpenAI-compatible HTTP API on all interfaces (0: off)", 0, 65535},
        {"api-key-file", 0, TS_FLAG_STRING, &api_key_file,
         "HTTP API keys, one per line (default: no authentication)", 0, 0},
        {"chat-template", 0, TS_FLAG_STRING, &chat_template,
         "HTTP chat completions: a built-in template or a Jinja file (default: the model's)", 0,
         0},
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
        {"ctx", 'c', TS_FLAG_INT, &ctx, "context length per group; 0 = the model's", 0, 1 << 24},
        {"kv-memory", 0, TS_FLAG_STRING, &kv_memory, "KV cache memory per rank (e.g. 512M)", 0, 0},
        {"isa", 0, TS_FLAG_STRING, &engine_values[0], "CPU kernels: auto, scalar, avx2, avx512", 0,
         0},
        {"device-memory", 0, TS_FLAG_STRING, &engine_values[1],
         "memory the backend may allocate per rank (e.g. 8G)", 0, 0},
        {"kv-type", 0, TS_FLAG_STRING, &engine_values[2], "KV cache element type: f16 or f32", 0,
         0},
        {"block-size", 0, TS_FLAG_STRING, &engine_values[3], "tokens per KV block", 0, 0},
        {"batch-tokens", 0, TS_FLAG_STRING, &engine_values[4], "tokens per engine step", 0, 0},
        {"batch-seqs", 0, TS_FLAG_STRING, &engine_values[5], "sequences per engine step", 0, 0},
        {"prefill-chunk", 0, TS_FLAG_STRING, &engine_values[6],
         "prompt tokens per sequence per step (chunked prefill)", 0, 0},
        {"no-prefix-cache", 0, TS_FLAG_BOOL, &no_prefix_cache,
         "do not reuse the KV cache of shared prompt prefixes", 0, 0},
        {"device", 0, TS_FLAG_STRING, &device,
         "cpu (default), or cuda / cuda:N: one GPU per rank, from GPU N on, group by group", 0, 0},
        {"kv-transport", 0, TS_FLAG_STRING, &kv_transport,
         "how prefill groups send KV blocks to decode groups: tcp, or nccl (GPU to GPU; needs "
         "--device cuda)",
         0, 0},
        {"endpoint-file", 0, TS_FLAG_STRING, &endpoint_file,
         "write the API's HOST:PORT there once serving", 0, 0},
        {"startup-timeout-ms", 0, TS_FLAG_INT, &startup_ms, "how long the groups get to register",
         1000, 86400000},
        {"log-level", 0, TS_FLAG_STRING, &log_level, "debug, info, warn, error or off", 0, 0},
    };
    ts_flags_result res = {NULL, 0, 0};
    int rc = ts_flags_parse("tessera up [-m MODEL] [--port 50051] [--tp N] [--groups G] "
                            "[--prefill-groups P --decode-groups D [--prefill-tp A] "
                            "[--decode-tp B]] [--cpus-per-group N]",
                            flags, (int)(sizeof flags / sizeof flags[0]), argc, argv, 1, &res);
    if (rc == TS_FLAGS_HELP) return TS_EXIT_OK;
    if (rc) return ts_cli_fail("up", TS_EXIT_USAGE);
    ts_log_level level;
    if (ts_log_parse_level(log_level, &level)) return ts_cli_fail("up", TS_EXIT_USAGE);
    ts_log_set_level(level);
    if (groups < 0) groups = prefill_groups + decode_groups > 0 ? 0 : 1;
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
    if (ts_kvx_transport_from_flags(kv_transport, device, &transport))
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
    int group_tp[UP_MAX_GROUPS], first_gpu[UP_MAX_GROUPS];
    const char *tp_flag[UP_MAX_GROUPS];
    for (int g = 0; g < n_groups; g++) {
        group_tp[g] = g < groups ? tp : g < groups + prefill_groups ? prefill_tp : decode_tp;
        tp_flag[g] = g < groups ? "tp" : g < groups + prefill_groups ? "prefill-tp" : "decode-tp";
    }
    rc = check_tp(model, group_tp, tp_flag, n_groups);
    if (rc) return ts_cli_fail("up", ts_cli_exit_code(rc));
    long first_index = 0;
    const int gpus = device ? ts_backend_cuda_index(device, &first_index) : 0;
    if (gpus < 0) return ts_cli_fail("up", TS_EXIT_USAGE);
    if (device && !gpus && strcmp(device, "cpu") != 0) {
        ts_error_set(TS_E_INVALID, "--device '%s': expected cpu, cuda or cuda:N", device);
        return ts_cli_fail("up", TS_EXIT_USAGE);
    }
    if (gpus && assign_gpus(device, (int)first_index, group_tp, n_groups, first_gpu))
        return ts_cli_fail("up", TS_EXIT_USAGE);

    char self[PATH_MAX], coord_bin[PATH_MAX + 32], node_bin[PATH_MAX + 32];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        ts_error_set(TS_E_IO, "cannot find the tessera executable's directory");
        return ts_cli_fail("up", TS_EXIT_FAILURE);
    }
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (slash) *slash = '\0';
    snprintf(coord_bin, sizeof coord_bin, "%s/tessera-coordinator", self);
    snprintf(node_bin, sizeof node_bin, "%s/tessera-node", self);
    if (access(coord_bin, X_OK) || access(node_bin, X_OK)) {
        ts_error_set(TS_E_IO, "tessera-coordinator and tessera-node must be next to tessera in %s",
                     self);
        return ts_cli_fail("up", TS_EXIT_FAILURE);
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (threads == 0 && !cpus_per_group) {
        int ranks = groups * tp + prefill_groups * prefill_tp + decode_groups * decode_tp;
        threads = (int)(cores / ranks);
        if (threads < 1) threads = 1;
    }
    cpu_set_t own_cpus;
    if (cpus_per_group && sched_getaffinity(0, sizeof own_cpus, &own_cpus) != 0) {
        ts_error_set(TS_E_IO, "--cpus-per-group: cannot read this process's CPUs: %s",
                     strerror(errno));
        return ts_cli_fail("up", TS_EXIT_FAILURE);
    }

    /* The cluster's private files (mode 0700): the Worker listener's endpoint. */
    char run_dir[64] = "/tmp/tessera-up-XXXXXX", worker_ep[96];
    if (!mkdtemp(run_dir)) {
        ts_error_set(TS_E_IO, "cannot make a directory in /tmp: %s", strerror(errno));
        return ts_cli_fail("up", TS_EXIT_FAILURE);
    }
    snprintf(worker_ep, sizeof worker_ep, "%s/worker.endpoint", run_dir);
    char tmp_ep[64] = "", listen[64], http_listen[64], ctx_s[16];
    if (!endpoint_file) {
        snprintf(tmp_ep, sizeof tmp_ep, "/tmp/tessera-up-%d.endpoint", (int)getpid());
        endpoint_file = tmp_ep;
    }
    remove(endpoint_file);
    snprintf(listen, sizeof listen, "0.0.0.0:%d", port);
    snprintf(http_listen, sizeof http_listen, "0.0.0.0:%d", http_port);
    snprintf(ctx_s, sizeof ctx_s, "%d", ctx);

    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    up_state st = {0};
    {
        char *args[UP_MAX_ARGS];
        int a = 0;
        args[a++] = coord_bin;
        args[a++] = "--listen";
        args[a++] = listen;
        args[a++] = "--endpoint-file";
        args[a++] = (char *)endpoint_file;
        args[a++] = "--worker-listen"; /* nodes attach on loopback, never on the API's port */
        args[a++] = "127.0.0.1:0";
        args[a++] = "--worker-endpoint-file";
        args[a++] = worker_ep;
        args[a++] = "--log-level";
        args[a++] = (char *)log_level;
        if (model) {
            args[a++] = "-m";
            args[a++] = (char *)model;
        }
        if (http_port) {
            args[a++] = "--http-listen";
            args[a++] = http_listen;
        }
        if (api_key_file) {
            args[a++] = "--api-key-file";
            args[a++] = (char *)api_key_file;
        }
        if (chat_template) {
            args[a++] = "--chat-template";
            args[a++] = (char *)chat_template;
        }
        args[a] = NULL;
        rc = spawn(&st, "tessera-coordinator", args);
    }
    for (int g = 0; !rc && g < n_groups; g++) {
        char *args[UP_MAX_ARGS], name[32], np_s[16], threads_s[16];
        int a = 0;
        /* mixed groups first, then prefill, then decode */
        const char *role = g < groups                    ? "mixed"
                           : g < groups + prefill_groups ? "prefill"
                                                         : "decode";
        int gtp = group_tp[g];
        int k = g < groups                    ? g
                : g < groups + prefill_groups ? g - groups
                                              : g - groups - prefill_groups;
        snprintf(name, sizeof name, "%s-%d", g < groups ? "group" : role, k);
        snprintf(np_s, sizeof np_s, "%d", gtp);
        char device_s[32];
        int gthreads = threads ? threads : cpus_per_group / gtp > 0 ? cpus_per_group / gtp : 1;
        snprintf(threads_s, sizeof threads_s, "%d", gthreads);
        if (cpus_per_group) {
            cpu_set_t set;
            CPU_ZERO(&set);
            for (int c = 0; c < cpus_per_group; c++)
                CPU_SET((g * cpus_per_group + c) % cores, &set);
            if (sched_setaffinity(0, sizeof set, &set) != 0) {
                rc = ts_error_set(TS_E_IO, "--cpus-per-group: cannot pin group %s: %s", name,
                                  strerror(errno));
                break;
            }
        }
        if (gtp > 1) {
            /* mpiruns started together race creating one session directory ("File exists"):
             * each gets its own. */
            snprintf(st.tmpdirs[g], sizeof st.tmpdirs[g], "/tmp/tessera-up-%d-g%d", (int)getpid(),
                     g);
            mkdir(st.tmpdirs[g], 0700);
            args[a++] = "mpirun";
            args[a++] = "--oversubscribe"; /* a local cluster shares the machine's cores */
            args[a++] = "--bind-to";
            args[a++] = "none";
            args[a++] = "--mca";
            args[a++] = "orte_tmpdir_base";
            args[a++] = st.tmpdirs[g];
            args[a++] = "-np";
            args[a++] = np_s;
        }
        args[a++] = node_bin;
        args[a++] = "--coordinator-file";
        args[a++] = worker_ep;
        args[a++] = "--name";
        args[a++] = name;
        args[a++] = "--threads";
        args[a++] = threads_s;
        args[a++] = "--ctx";
        args[a++] = ctx_s;
        args[a++] = "--log-level";
        args[a++] = (char *)log_level;
        args[a++] = "--role";
        args[a++] = (char *)role;
        if (gtp > 1) {
            args[a++] = "--tp";
            args[a++] = np_s;
        }
        if (model) {
            args[a++] = "-m";
            args[a++] = (char *)model;
        }
        if (kv_memory) {
            args[a++] = "--kv-memory";
            args[a++] = (char *)kv_memory;
        }
        char engine_names[N_ENGINE_FLAGS][24];
        for (int f = 0; f < N_ENGINE_FLAGS; f++) {
            if (!engine_values[f]) continue;
            snprintf(engine_names[f], sizeof engine_names[f], "--%s", engine_flags[f]);
            args[a++] = engine_names[f];
            args[a++] = (char *)engine_values[f];
        }
        if (no_prefix_cache) args[a++] = "--no-prefix-cache";
        if (gpus) { /* this group's GPUs: device_s and the next gtp - 1 */
            snprintf(device_s, sizeof device_s, "cuda:%d", first_gpu[g]);
            args[a++] = "--device";
            args[a++] = device_s;
            args[a++] = "--device-per-rank";
        } else if (device) {
            args[a++] = "--device";
            args[a++] = (char *)device;
        }
        args[a++] = "--kv-transport";
        args[a++] = (char *)kv_transport;
        args[a] = NULL;
        char what[64];
        snprintf(what, sizeof what, "node %s", name);
        rc = spawn(&st, what, args);
    }
    if (cpus_per_group) sched_setaffinity(0, sizeof own_cpus, &own_cpus);
    if (rc) {
        ts_cli_fail("up", TS_EXIT_FAILURE);
        stop_all(&st);
        remove(worker_ep);
        rmdir(run_dir);
        return TS_EXIT_FAILURE;
    }

    /* Wait for the endpoint and for every group to register, watching the children. */
    int exit_code = TS_EXIT_OK, status = 0;
    char ep[300] = "";
    ts_rpc_channel *ch = NULL;
    int64_t deadline = ts_now_ns() + (int64_t)startup_ms * 1000000;
    bool serving = false, stop = false;
    while (!stop) {
        struct timespec ts = {0, 200 * 1000000L};
        if (sigtimedwait(&sigs, NULL, &ts) > 0) break;
        child *dead = reap(&st, &status);
        if (dead) {
            char how[64];
            describe_exit(status, how, sizeof how);
            TS_ERROR("tessera up: %s %s; stopping the cluster", dead->name, how);
            exit_code = TS_EXIT_FAILURE;
            break;
        }
        if (serving) continue;
        if (!ch && read_endpoint(endpoint_file, ep, sizeof ep) &&
            ts_rpc_channel_create(ep, NULL, &ch) != TS_OK) {
            ts_cli_fail("up", TS_EXIT_FAILURE);
            exit_code = TS_EXIT_FAILURE;
            break;
        }
        if (ch && registered_groups(ch) >= n_groups) {
            if (prefill_groups)
                TS_INFO("tessera up: serving %s on %s (%d prefill groups x %d ranks, %d decode "
                        "groups x %d ranks, %d mixed groups x %d ranks)",
                        model ? model : "the bundled model", ep, prefill_groups, prefill_tp,
                        decode_groups, decode_tp, groups, tp);
            else
                TS_INFO("tessera up: serving %s on %s (%d groups x %d ranks)",
                        model ? model : "the bundled model", ep, groups, tp);
            serving = true;
            if (http_port)
                TS_INFO("tessera up: HTTP API on http://127.0.0.1:%d/v1 (try: curl "
                        "http://127.0.0.1:%d/v1/completions -d '{\"prompt\": \"Once upon a "
                        "time\", \"max_tokens\": 16}'%s)",
                        http_port, http_port,
                        api_key_file ? " -H 'Authorization: Bearer KEY'" : "");
        } else if (ts_now_ns() > deadline) {
            TS_ERROR("tessera up: the groups did not all register within %d ms; stopping",
                     startup_ms);
            exit_code = TS_EXIT_FAILURE;
            stop = true;
        }
    }
    TS_INFO("tessera up: stopping the cluster");
    ts_rpc_channel_destroy(ch);
    stop_all(&st);
    if (tmp_ep[0]) remove(tmp_ep);
    remove(worker_ep);
    rmdir(run_dir);
    for (int g = 0; g < n_groups; g++)
        if (st.tmpdirs[g][0]) rmdir(st.tmpdirs[g]); /* Open MPI removed what it made inside */
    TS_INFO("tessera up: stopped");
    return exit_code;
}
