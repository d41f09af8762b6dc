/*
 * node_main.c — `tessera-node`: one rank of a serving node group.
 *
 * Run alone it is a group of one; under `mpirun -np N tessera-node --tp T` the world splits into
 * N/T groups. Each group's leader (rank 0) attaches to the coordinator and serves
 * (worker/worker.h); the other ranks follow the leader's step plans. The runtime (and MPI) is
 * opened before any gRPC thread starts (NOTES.md). SIGTERM/SIGINT: the leader finishes or fails
 * its requests and exits 0; closing the runtime releases the followers.
 */
#include "common/error.h"
#include "common/flags.h"
#include "common/log.h"
#include "common/secret.h"
#include "kvx/kv_transfer_group.h"
#include "node/runtime.h"
#include "worker/worker.h"

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static int fail(int code) {
    fprintf(stderr, "tessera-node: %s\n", ts_error_message());
    return code;
}

int main(int argc, char **argv) {
    pid_t launcher = getppid(); /* before anything: see --die-with-parent */
    ts_runtime_options ro;
    ts_runtime_options_default(&ro);
    ts_worker_options wo = {.role = "mixed", .connect_timeout_ms = 60000, .drain_ms = 10000};
    const char *kv_transport = "tcp", *cluster_secret_file = NULL;
    bool die_with_parent = false;
    ts_flag flags[TS_RUNTIME_MAX_FLAGS + 10];
    int n = ts_runtime_flags(&ro, flags);
    flags[n++] = (ts_flag){"coordinator",
                           0,
                           TS_FLAG_STRING,
                           &wo.coordinator,
                           "coordinator HOST:PORT (default: env TESSERA_COORDINATOR)",
                           0,
                           0};
    flags[n++] = (ts_flag){"coordinator-file",
                           0,
                           TS_FLAG_STRING,
                           &wo.coordinator_file,
                           "file holding the coordinator's HOST:PORT (waited for)",
                           0,
                           0};
    flags[n++] = (ts_flag){"cluster-secret-file",
                           0,
                           TS_FLAG_STRING,
                           &cluster_secret_file,
                           "the cluster secret to attach with (a file of mode 0600; default: env "
                           "TESSERA_CLUSTER_SECRET, else none)",
                           0,
                           0};
    flags[n++] = (ts_flag){"connect-timeout-ms",
                           0,
                           TS_FLAG_INT,
                           &wo.connect_timeout_ms,
                           "how long to try to reach the coordinator",
                           1,
                           86400000};
    flags[n++] = (ts_flag){"name",
                           0,
                           TS_FLAG_STRING,
                           &wo.name,
                           "group name (default HOST-PID, with -gK for several groups)",
                           0,
                           0};
    flags[n++] = (ts_flag){"role", 0, TS_FLAG_STRING, &wo.role, "mixed, prefill or decode", 0, 0};
    flags[n++] = (ts_flag){"drain-ms",
                           0,
                           TS_FLAG_INT,
                           &wo.drain_ms,
                           "on SIGTERM, time running requests get to finish",
                           0,
                           86400000};
    flags[n++] = (ts_flag){"kv-transport",
                           0,
                           TS_FLAG_STRING,
                           &kv_transport,
                           "how a prefill group sends KV blocks: tcp, or nccl (GPU to GPU; needs "
                           "--device cuda here and at the decode groups)",
                           0,
                           0};
    flags[n++] = (ts_flag){"die-with-parent",
                           0,
                           TS_FLAG_BOOL,
                           &die_with_parent,
                           "end at once when the process that started this one ends (tessera up "
                           "sets it: mpirun's ranks otherwise notice their mpirun's end only "
                           "about a second later)",
                           0,
                           0};
    ts_flags_result res = {NULL, 0, 0};
    int rc = ts_flags_parse("tessera-node [-m MODEL] --coordinator HOST:PORT [flags]", flags, n,
                            argc, argv, 1, &res);
    if (rc == TS_FLAGS_HELP) return 0;
    if (rc) return fail(2);
    /* The launcher may have ended before the signal was armed: then its pid is gone as parent. */
    if (die_with_parent && (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != launcher)) {
        ts_error_set(TS_E_UNAVAILABLE, "--die-with-parent: the process that started this one "
                                       "has ended");
        return fail(1);
    }
    if (!wo.coordinator && !wo.coordinator_file) {
        const char *env = getenv("TESSERA_COORDINATOR");
        if (env && env[0]) wo.coordinator = env;
    }
    if (!wo.coordinator && !wo.coordinator_file) {
        ts_error_set(TS_E_INVALID, "no coordinator: give --coordinator HOST:PORT, "
                                   "--coordinator-file PATH or TESSERA_COORDINATOR");
        return fail(2);
    }
    if (strcmp(wo.role, "mixed") && strcmp(wo.role, "prefill") && strcmp(wo.role, "decode")) {
        ts_error_set(TS_E_INVALID, "--role: expected mixed, prefill or decode, got '%s'", wo.role);
        return fail(2);
    }
    ts_kvx_transport transport;
    if (ts_kvx_transport_from_flags(kv_transport, ro.device, &transport)) return fail(2);
    char secret[TS_SECRET_MAX];
    if (ts_secret_load("--cluster-secret-file", cluster_secret_file, TS_CLUSTER_SECRET_ENV, secret,
                       sizeof secret))
        return fail(2);
    wo.cluster_secret = secret;
    wo.comm_timeout_ms = ro.comm_timeout_ms;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    ts_runtime *rt = NULL;
    rc = ts_runtime_open(&ro, &rt);
    if (rc) return fail(rc == TS_E_INVALID || rc == TS_E_IO ? 2 : 1);
    char component[64];
    snprintf(component, sizeof component, "node r%d", ts_runtime_comm(rt)->rank);
    ts_log_init(component);
    /* KV transfer (disaggregation): every rank sends or receives its own KV heads, so every
     * rank opens its part before the followers start following. A prefill group only sends. */
    ts_kvx_group *kvx = NULL;
    ts_kvx_group_options ko = {.receive = strcmp(wo.role, "prefill") != 0,
                               .receiver = {.listen = "0.0.0.0:0"},
                               .transport = transport};
    rc = ts_kvx_group_create(ts_runtime_engine(rt), ts_runtime_model(rt), &ko, &kvx);
    if (rc) {
        int code = fail(rc == TS_E_UNSUPPORTED ? 2 : 1);
        ts_runtime_close(rt);
        return code;
    }
    wo.kvx = kvx;
    if (!ts_runtime_is_leader(rt)) {
        rc = ts_runtime_follow(rt);
        if (rc) fail(1);
        ts_kvx_group_destroy(kvx);
        ts_runtime_close(rt);
        return rc ? 1 : 0;
    }
    rc = ts_worker_run(rt, &wo, &g_stop);
    if (rc) fail(1);
    ts_kvx_group_destroy(kvx);
    int close_rc = ts_runtime_close(rt);
    if (!rc && close_rc) rc = fail(1);
    return rc ? 1 : 0;
}
