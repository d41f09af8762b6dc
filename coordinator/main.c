/*
 * main.c — `tessera-coordinator`: the public API (--listen, and --http-listen) and the node
 * groups' Worker service on its own listener (--worker-listen, loopback by default), so that
 * the public port never serves Attach (see coordinator.h for the modules and the lock).
 *
 * The main thread blocks SIGTERM/SIGINT before any thread starts (so gRPC's threads inherit the
 * mask) and then waits for them with a 100 ms timeout: each timeout is the coordinator's tick
 * (heartbeat timeouts, client deadlines, queued requests with no group). On a signal: new
 * requests get UNAVAILABLE, running ones get up to --grace-ms to finish, then every group is sent
 * Shutdown and the server stops (what is still running ends with UNAVAILABLE); exit 0.
 */
#include "coordinator/coordinator.h"
#include "coordinator/batch.h"
#include "coordinator/batch_store.h"
#include "coordinator/http.h"

#include "common/clock.h"
#include "common/error.h"
#include "common/flags.h"
#include "common/log.h"
#include "common/paths.h"
#include "model/gguf.h"
#include "model/model.h"
#include "rpc/rpc_tls.h"

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int fail(int code) {
    fprintf(stderr, "tessera-coordinator: %s\n", ts_error_message());
    return code;
}

/* After fail(): frees what a start that got as far as the state store and the coordinator made
 * (either may be NULL), so that a refused flag leaves nothing behind (LeakSanitizer runs the
 * refusal tests). Returns code. */
static int free_started(int code, coordinator *co, co_store *store) {
    co_store_close(store);
    if (co) {
        ts_tokenizer_destroy(co->tok);
        co_metrics_destroy(co->metrics);
        co_auth_destroy(co->auth);
        pthread_mutex_destroy(&co->mu);
        free(co);
    }
    return code;
}

/* The model's name: general.name, else the file name without ".gguf". */
static void name_model(const ts_gguf *g, const char *path, char *out, size_t size) {
    ts_gguf_str s;
    if (ts_gguf_get_str(g, "general.name", &s) == TS_OK && s.len > 0) {
        snprintf(out, size, "%.*s", (int)s.len, s.data);
        return;
    }
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 5 && !strcmp(base + n - 5, ".gguf")) n -= 5;
    snprintf(out, size, "%.*s", (int)n, base);
}

static int load_model(coordinator *co, const char *path) {
    char found[PATH_MAX];
    if (!path) {
        if (ts_find_data_file(TS_DEFAULT_MODEL, found, sizeof found))
            return ts_error_wrap(TS_E_IO, "the bundled model (give one with --model)");
        path = found;
    }
    ts_gguf *g = NULL;
    int rc = ts_gguf_open(path, &g);
    ts_model m;
    bool loaded = false;
    if (!rc) rc = ts_model_load(g, &m);
    if (!rc) {
        loaded = true;
        rc = ts_tokenizer_from_gguf(g, &co->tok);
    }
    if (!rc) {
        name_model(g, path, co->model_name, sizeof co->model_name);
        co->vocab = ts_tokenizer_n_vocab(co->tok);
        co->ctx_train = m.hp.n_ctx_train;
        ts_gguf_str arch;
        if (ts_gguf_get_str(g, "general.architecture", &arch) == TS_OK)
            snprintf(co->architecture, sizeof co->architecture, "%.*s", (int)arch.len, arch.data);
    }
    if (loaded) ts_model_free(&m);
    ts_gguf_close(g);
    return rc;
}

/* "HOST:PORT" of the bound server; a wildcard host becomes 127.0.0.1 for the endpoint file,
 * which local clients dial. */
static void endpoint(const char *listen, int port, bool dialable, char *out, size_t size) {
    const char *colon = strrchr(listen, ':');
    size_t hn = colon ? (size_t)(colon - listen) : strlen(listen);
    char host[256];
    snprintf(host, sizeof host, "%.*s", (int)hn, listen);
    if (dialable &&
        (!host[0] || !strcmp(host, "0.0.0.0") || !strcmp(host, "[::]") || !strcmp(host, "::")))
        snprintf(host, sizeof host, "127.0.0.1");
    snprintf(out, size, "%s:%d", host, port);
}

/* Writes the dialable endpoint of a bound listener to `path` atomically (`flag` names it). */
/* Whether a listen address binds loopback only. */
static bool is_loopback(const char *listen) {
    return !strncmp(listen, "127.", 4) || !strncmp(listen, "localhost:", 10) ||
           !strncmp(listen, "[::1]:", 6);
}

static int write_endpoint_file(const char *flag, const char *path, const char *listen, int port) {
    char ep[300], tmp[PATH_MAX];
    endpoint(listen, port, true, ep, sizeof ep);
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return ts_error_set(TS_E_IO, "--%s %s: cannot write %s", flag, path, tmp);
    int bad = fprintf(f, "%s\n", ep) < 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        remove(tmp);
        return ts_error_set(TS_E_IO, "--%s %s: cannot write it", flag, path);
    }
    return TS_OK;
}

static void tick(coordinator *co) {
    int64_t now = ts_now_ns();
    pthread_mutex_lock(&co->mu);
    co_membership_tick(co, now);
    co_request_tick(co, now);
    co_route_queue(co, now);
    pthread_mutex_unlock(&co->mu);
}

/* Waits up to ms for a signal in `set`, ticking every 100 ms. Returns the signal or 0. */
static int wait_signal(coordinator *co, const sigset_t *set, int ms) {
    int64_t end = ts_now_ns() + (int64_t)ms * 1000000;
    do {
        struct timespec ts = {0, 100 * 1000000L};
        int sig = sigtimedwait(set, NULL, &ts);
        if (sig > 0) return sig;
        tick(co);
    } while (ms < 0 || ts_now_ns() < end);
    return 0;
}

int main(int argc, char **argv) {
    ts_log_init("coordinator");
    const char *listen = "0.0.0.0:50051", *model_path = NULL, *endpoint_file = NULL;
    const char *log_level = "info", *http_listen = NULL, *api_key_file = NULL;
    const char *chat_template = NULL, *worker_listen = "127.0.0.1:50052";
    const char *worker_endpoint_file = NULL, *cluster_secret_file = NULL;
    const char *http_endpoint_file = NULL;
    bool protect_metrics = false;
    int http_max_per_ip = 0, http_idle_s = 60;
    size_t http_max_header = 32u << 10;
    const char *tls_cert = NULL, *tls_key = NULL;
    const char *state_dir = NULL, *routing = "cache";
    size_t state_max_size = 0;
    size_t http_max_body = 32u << 20;
    int http_max_connections = 256;
    int heartbeat_ms = 500, heartbeat_timeout_ms = 3000, max_queue = 1024, grace_ms = 10000;
    ts_flag flags[] = {
        {"listen", 0, TS_FLAG_STRING, &listen,
         "HOST:PORT for the gRPC Inference API (port 0: any free port)", 0, 0},
        {"worker-listen", 0, TS_FLAG_STRING, &worker_listen,
         "HOST:PORT where node groups attach (the Worker service; port 0: any free port)", 0, 0},
        {"model", 'm', TS_FLAG_STRING, &model_path,
         "GGUF whose tokenizer and metadata the coordinator uses (default: the bundled model)", 0,
         0},
        {"endpoint-file", 0, TS_FLAG_STRING, &endpoint_file,
         "once listening, write the API's HOST:PORT there (atomically)", 0, 0},
        {"cluster-secret-file", 0, TS_FLAG_STRING, &cluster_secret_file,
         "node groups must send the secret in this file (mode 0600); default: env "
         "TESSERA_CLUSTER_SECRET, else none (then --worker-listen must be loopback)",
         0, 0},
        {"worker-endpoint-file", 0, TS_FLAG_STRING, &worker_endpoint_file,
         "once listening, write the Worker listener's HOST:PORT there (atomically)", 0, 0},
        {"http-endpoint-file", 0, TS_FLAG_STRING, &http_endpoint_file,
         "once listening, write the HTTP listener's HOST:PORT there (atomically; needs "
         "--http-listen)",
         0, 0},
        {"heartbeat-ms", 0, TS_FLAG_INT, &heartbeat_ms, "how often groups send heartbeats", 10,
         600000},
        {"heartbeat-timeout-ms", 0, TS_FLAG_INT, &heartbeat_timeout_ms,
         "a group silent this long is removed", 50, 3600000},
        {"routing", 0, TS_FLAG_STRING, &routing,
         "how a request's group is chosen: cache (the least work ahead, its cached prefix counted "
         "as done) or round-robin (in turn; a baseline)",
         0, 0},
        {"max-queued-requests", 0, TS_FLAG_INT, &max_queue,
         "requests of one priority that may wait for a group; one more gets RESOURCE_EXHAUSTED "
         "(HTTP 429)",
         0, 1 << 24},
        {"grace-ms", 0, TS_FLAG_INT, &grace_ms, "on SIGTERM, time running requests get to finish",
         0, 3600000},
        {"http-listen", 0, TS_FLAG_STRING, &http_listen,
         "HOST:PORT for the OpenAI-compatible HTTP API (default: off; port 0: any free port)", 0,
         0},
        {"api-key-file", 0, TS_FLAG_STRING, &api_key_file,
         "API keys, one per line, for HTTP (Authorization: Bearer KEY) and gRPC (authorization "
         "metadata); also the environment's TESSERA_API_KEY; default: no authentication",
         0, 0},
        {"protect-metrics", 0, TS_FLAG_BOOL, &protect_metrics,
         "the API keys guard /health, /metrics and gRPC Health too", 0, 0},
        {"chat-template", 0, TS_FLAG_STRING, &chat_template,
         "HTTP chat completions: a built-in template (chatml, llama3, llama2, mistral) or a Jinja "
         "file; default: the model's",
         0, 0},
        {"http-max-body", 0, TS_FLAG_SIZE, &http_max_body, "larger HTTP request bodies get 413", 0,
         0},
        {"http-max-connections", 0, TS_FLAG_INT, &http_max_connections, "HTTP connections at once",
         1, 65536},
        {"http-max-connections-per-ip", 0, TS_FLAG_INT, &http_max_per_ip,
         "HTTP connections at once from one address (0: no limit but --http-max-connections)", 0,
         65536},
        {"http-max-header", 0, TS_FLAG_SIZE, &http_max_header,
         "bytes of an HTTP request line and headers; more gets 431 (or 414 for the URL)", 0, 0},
        {"http-idle-timeout-s", 0, TS_FLAG_INT, &http_idle_s,
         "an HTTP connection that sends nothing this long is closed (keep-alive, slow clients)", 1,
         86400},
        {"state-dir", 0, TS_FLAG_STRING, &state_dir,
         "durable state (SQLite) of the Files and Batches API; batches continue after a restart "
         "on the same directory (default: off; needs --http-listen)",
         0, 0},
        {"state-max-size", 0, TS_FLAG_SIZE, &state_max_size,
         "cap of the state database; beyond it uploads and batches fail as on a full disk (0: "
         "none)",
         0, 0},
        {"tls-cert", 0, TS_FLAG_STRING, &tls_cert,
         "PEM certificate (chain): serve the gRPC API and HTTP over TLS (with --tls-key)", 0, 0},
        {"tls-key", 0, TS_FLAG_STRING, &tls_key, "PEM private key of --tls-cert", 0, 0},
        {"log-level", 0, TS_FLAG_STRING, &log_level, "debug, info, warn, error or off", 0, 0},
    };
    ts_flags_result res = {NULL, 0, 0};
    int rc = ts_flags_parse("tessera-coordinator [--listen HOST:PORT] [-m MODEL] [flags]", flags,
                            (int)(sizeof flags / sizeof flags[0]), argc, argv, 1, &res);
    if (rc == TS_FLAGS_HELP) return 0;
    if (rc) return fail(2);
    ts_log_level level;
    if (ts_log_parse_level(log_level, &level)) return fail(2);
    ts_log_set_level(level);
    if (http_endpoint_file && !http_listen) {
        ts_error_set(TS_E_INVALID, "--http-endpoint-file needs --http-listen");
        return fail(2);
    }
    if (state_dir && !http_listen) {
        ts_error_set(TS_E_INVALID, "--state-dir needs --http-listen (the Files and Batches API)");
        return fail(2);
    }
    if (strcmp(routing, "cache") && strcmp(routing, "round-robin")) {
        ts_error_set(TS_E_INVALID, "--routing: cache or round-robin, got '%s'", routing);
        return fail(2);
    }
    /* Before any thread: a corrupt or foreign database stops the coordinator with the reason. */
    co_store *store = NULL;
    if (state_dir && (rc = co_store_open(state_dir, (int64_t)state_max_size, &store)))
        return fail(rc == TS_E_NOMEM ? 1 : 2);

    ts_tls_server tls; /* lives until exit: the HTTP listener reads its text */
    if (ts_tls_server_load(tls_cert, tls_key, &tls)) return fail(2);
    char secret[TS_SECRET_MAX];
    if (ts_secret_load("--cluster-secret-file", cluster_secret_file, TS_CLUSTER_SECRET_ENV, secret,
                       sizeof secret))
        return free_started(fail(2), NULL, store);
    if (!secret[0] && !is_loopback(worker_listen)) {
        ts_error_set(TS_E_INVALID,
                     "--worker-listen %s: a Worker listener others can reach needs a cluster "
                     "secret (--cluster-secret-file or TESSERA_CLUSTER_SECRET)",
                     worker_listen);
        return free_started(fail(2), NULL, store);
    }

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    coordinator *co = calloc(1, sizeof *co);
    if (!co) return free_started(fail(1), NULL, store);
    pthread_mutex_init(&co->mu, NULL);
    co->heartbeat_ms = heartbeat_ms;
    co->heartbeat_timeout_ms = heartbeat_timeout_ms;
    co->max_queue = max_queue;
    co->round_robin = !strcmp(routing, "round-robin");
    co->t_started = ts_now_ns();
    memcpy(co->cluster_secret, secret, sizeof secret);
    memset(secret, 0, sizeof secret);
    if (co_metrics_create(&co->metrics)) return free_started(fail(1), co, store);
    /* Keys from the environment and a file, never argv (ps shows argv). */
    rc = co_auth_load(getenv("TESSERA_API_KEY"), api_key_file, &co->auth);
    if (rc) return free_started(fail(rc == TS_E_INVALID ? 2 : 1), co, store);
    co->protect_metrics = protect_metrics;
    if (protect_metrics && !co_auth_required(co->auth)) {
        ts_error_set(TS_E_INVALID, "--protect-metrics needs API keys (--api-key-file or "
                                   "TESSERA_API_KEY)");
        return free_started(fail(2), co, store);
    }
    rc = load_model(co, model_path);
    if (rc) return free_started(fail(rc == TS_E_IO || rc == TS_E_INVALID ? 2 : 1), co, store);

    /* Two gRPC listeners on the process's one loop: the public API, and the Worker service. */
    ts_rpc_server_options so;
    ts_rpc_server_options_default(&so);
    so.address = listen;
    if (ts_tls_server_on(&tls)) {
        so.tls_cert_pem = tls.cert.data;
        so.tls_key_pem = tls.key.data;
    }
    ts_rpc_server_options wso;
    ts_rpc_server_options_default(&wso);
    wso.address = worker_listen;
    wso.authorize = co_membership_authorize;
    wso.authorize_arg = co;
    ts_rpc_server *srv = NULL, *wsrv = NULL;
    ts_rpc_method generate, tokenize, list_models, health, launcher_health, attach;
    co_requests_init(co);
    co_api_methods(co, &generate, &tokenize, &list_models, &health, &launcher_health);
    co_membership_method(co, &attach);
    rc = ts_rpc_server_create(&so, &srv);
    if (!rc) rc = ts_rpc_server_add_method(srv, "/tessera.v1.Inference/Generate", &generate);
    if (!rc) rc = ts_rpc_server_add_method(srv, "/tessera.v1.Inference/Tokenize", &tokenize);
    if (!rc) rc = ts_rpc_server_add_method(srv, "/tessera.v1.Inference/ListModels", &list_models);
    if (!rc) rc = ts_rpc_server_add_method(srv, "/tessera.v1.Inference/Health", &health);
    if (!rc) rc = ts_rpc_server_create(&wso, &wsrv);
    if (!rc) rc = ts_rpc_server_add_method(wsrv, "/tessera.v1.Worker/Attach", &attach);
    /* Launchers (tessera up) watch the groups register through the Worker listener. */
    if (!rc) rc = ts_rpc_server_add_method(wsrv, "/tessera.v1.Inference/Health", &launcher_health);
    if (!rc) {
        rc = ts_rpc_server_start(srv);
        if (rc) rc = ts_error_wrap(rc, "--listen");
    }
    if (!rc) {
        rc = ts_rpc_server_start(wsrv);
        if (rc) rc = ts_error_wrap(rc, "--worker-listen");
    }
    co_http *http = NULL;
    co_batch *batch = NULL;
    if (!rc && http_listen) {
        co_http_options ho = {.listen = http_listen,
                              .chat_template = chat_template,
                              .max_body = http_max_body,
                              .store = store,
                              .max_connections = http_max_connections,
                              .max_connections_per_ip = http_max_per_ip,
                              .max_header = http_max_header,
                              .idle_timeout_s = http_idle_s,
                              .tls_cert_pem = so.tls_cert_pem,
                              .tls_key_pem = so.tls_key_pem};
        rc = co_http_start(co, &ho, &http);
    }
    if (!rc && store) rc = co_batch_start(co, http, store, &batch);
    /* The worker and HTTP endpoints first: whoever waits for the API's file finds them all. */
    if (!rc && http_endpoint_file)
        rc = write_endpoint_file("http-endpoint-file", http_endpoint_file, http_listen,
                                 co_http_port(http));
    if (!rc && worker_endpoint_file)
        rc = write_endpoint_file("worker-endpoint-file", worker_endpoint_file, worker_listen,
                                 ts_rpc_server_port(wsrv));
    if (!rc && endpoint_file)
        rc = write_endpoint_file("endpoint-file", endpoint_file, listen, ts_rpc_server_port(srv));
    if (rc) {
        int code = fail(rc == TS_E_INVALID ? 2 : 1);
        co_batch_stop(batch);
        co_http_stop(http);
        ts_rpc_server_destroy(srv);
        ts_rpc_server_destroy(wsrv);
        return free_started(code, co, store);
    }
    char ep[300], wep[300];
    endpoint(listen, ts_rpc_server_port(srv), false, ep, sizeof ep);
    endpoint(worker_listen, ts_rpc_server_port(wsrv), false, wep, sizeof wep);
    TS_INFO("tessera-coordinator: listening on %s%s (model %s); node groups attach on %s (%s)", ep,
            ts_tls_server_on(&tls) ? " with TLS" : "", co->model_name, wep,
            co->cluster_secret[0] ? "with the cluster secret" : "loopback, no cluster secret");
    if (http) {
        endpoint(http_listen, co_http_port(http), false, ep, sizeof ep);
        TS_INFO("tessera-coordinator: HTTP API on http%s://%s/v1%s",
                ts_tls_server_on(&tls) ? "s" : "", ep,
                co_auth_required(co->auth) ? " (API keys required)" : "");
    }

    int sig = wait_signal(co, &set, -1);
    TS_INFO("%s: stopping (running requests get up to %d ms)", sig == SIGINT ? "SIGINT" : "SIGTERM",
            grace_ms);
    /* Batch work is durable: its running requests stop now and run again after a restart. */
    co_batch_stop(batch);
    pthread_mutex_lock(&co->mu);
    co->shutting_down = true;
    pthread_mutex_unlock(&co->mu);
    int64_t end = ts_now_ns() + (int64_t)grace_ms * 1000000;
    for (;;) {
        pthread_mutex_lock(&co->mu);
        int64_t active = co->requests_active;
        pthread_mutex_unlock(&co->mu);
        if (active == 0 || ts_now_ns() > end) break;
        if (wait_signal(co, &set, 100)) break; /* a second signal: stop now */
    }
    pthread_mutex_lock(&co->mu);
    co_membership_shutdown(co, "the coordinator is shutting down");
    pthread_mutex_unlock(&co->mu);
    /* Give the nodes a moment to read Shutdown and leave by themselves. */
    for (int i = 0; i < 20; i++) {
        pthread_mutex_lock(&co->mu);
        int live = co_live_groups(co);
        pthread_mutex_unlock(&co->mu);
        if (live == 0) break;
        ts_sleep_ms(50);
    }
    co_http_stop(http); /* its waiting clients are told; the requests end below */
    ts_rpc_server_shutdown(srv, 1000);
    ts_rpc_server_shutdown(wsrv, 1000);
    ts_rpc_server_destroy(srv);
    ts_rpc_server_destroy(wsrv);
    co_store_close(store);
    /* Every call has ended: on_done freed each request and group. */
    ts_tokenizer_destroy(co->tok);
    ts_tls_server_free(&tls);
    co_metrics_destroy(co->metrics);
    co_auth_destroy(co->auth);
    pthread_mutex_destroy(&co->mu);
    free(co);
    TS_INFO("stopped");
    return 0;
}
