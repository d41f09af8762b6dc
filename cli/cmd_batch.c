/*
 * cmd_batch.c — `tessera batch`: batch jobs on a running cluster through its HTTP API (the
 * Files and Batches API, docs/api.md; the coordinator needs --state-dir).
 *
 *   tessera batch submit FILE.jsonl [--server URL] [--endpoint E] [--window 24h] [--wait]
 *   tessera batch status ID | list [--limit N] | cancel ID | results ID -o OUT.jsonl [-e ERR]
 *
 * submit uploads the file, creates the batch (the endpoint defaults to the first line's url)
 * and prints its id; with --wait it follows it to the end: on a terminal a progress bar
 * (done/total, failed, tokens/s, ETA), otherwise a plain line whenever the counts move. Exit
 * codes: 0 (with --wait: the batch completed), 1 (it failed, expired or was cancelled, or the
 * server refused), 2 (usage, an unreadable file). The API key comes from TESSERA_API_KEY.
 *
 *   tessera batch run FILE.jsonl -o OUT.jsonl [-e ERR] [-m MODEL] [--tp N] [--groups G]
 *
 * run is the offline form (like `vllm run-batch`, but resumable): it starts `tessera up` as a
 * child (the HTTP API on a free port behind a fresh API key, --state-dir), waits until a group
 * serves, submits the file as a batch tagged with the file's checksum (metadata
 * tessera_batch_run), follows it, writes the results and stops the cluster. The state directory
 * (default ~/.cache/tessera/batch-run/CHECKSUM) keeps the batch across crashes: running the same
 * file again, after a kill -9 or a Slurm preemption, finds its batch there and resumes it, and
 * finished lines are not run again. Ctrl-C stops the cluster in order (the batch resumes).
 */
#include "cli/commands.h"
#include "cli/http_client.h"
#include "cli/process.h"

#include "common/buf.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/flags.h"
#include "common/json.h"
#include "common/kv_hash.h"
#include "common/secret.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char USAGE[] =
    "tessera batch submit FILE.jsonl [--server URL] [--endpoint E] [--window 24h] [--wait]\n"
    "       tessera batch status ID | list [--limit N] | cancel ID | results ID -o OUT.jsonl "
    "[-e ERRORS.jsonl]\n"
    "       tessera batch run FILE.jsonl -o OUT.jsonl [-e ERRORS.jsonl] [-m MODEL] [--tp N] "
    "[--groups G] [--threads T] [--state-dir DIR]";

static int fail(int exit_code) {
    return ts_cli_fail("batch", exit_code);
}

/* Calls the API; a non-2xx answer becomes an error with the server's message. *doc: the JSON
 * answer (free it) when want_json. */
static int call(const char *server, const char *method, const char *path, const char *ctype,
                const void *body, size_t n, ts_buf *raw, ts_json_doc **doc) {
    int status = 0;
    int rc = ts_http_call(server, method, path, ctype, body, n, 600, &status, raw);
    if (rc) return rc;
    if (status < 200 || status >= 300) {
        ts_json_doc *e = NULL;
        const char *msg = NULL;
        size_t len;
        if (!ts_json_parse(raw->data ? raw->data : "", raw->len, &e)) {
            const ts_json *err = ts_json_get(ts_json_root(e), "error");
            if (ts_json_get_string(err, "message", &msg, &len)) msg = NULL;
        }
        rc = ts_error_set(status == 400 || status == 404 ? TS_E_INVALID : TS_E_UNAVAILABLE,
                          "%s %s: HTTP %d: %s", method, path, status, msg ? msg : "(no message)");
        ts_json_doc_free(e);
        return rc;
    }
    if (doc && ts_json_parse(raw->data ? raw->data : "", raw->len, doc))
        return ts_error_set(TS_E_IO, "%s %s: the answer is not JSON", method, path);
    return TS_OK;
}

static const char *str(const ts_json *o, const char *key) {
    const ts_json *v = ts_json_get(o, key);
    return v && v->type == TS_JSON_STRING ? v->string : "";
}

static int64_t num(const ts_json *o, const char *key) {
    const ts_json *v = ts_json_get(o, key);
    return v && v->type == TS_JSON_NUMBER ? (int64_t)v->number : 0;
}

static bool final_status(const char *s) {
    return !strcmp(s, "completed") || !strcmp(s, "failed") || !strcmp(s, "expired") ||
           !strcmp(s, "cancelled");
}

static int get_batch(const char *server, const char *id, ts_buf *raw, ts_json_doc **doc) {
    char path[200];
    snprintf(path, sizeof path, "/v1/batches/%s", id);
    ts_buf_clear(raw);
    return call(server, "GET", path, NULL, NULL, 0, raw, doc);
}

/* The errors of a failed batch, one line each. */
static void print_errors(const ts_json *b) {
    const ts_json *errs = ts_json_get(ts_json_get(b, "errors"), "data");
    for (size_t i = 0; errs && errs->type == TS_JSON_ARRAY && i < errs->length; i++) {
        const ts_json *e = &errs->items[i];
        int64_t line = num(e, "line");
        if (line)
            fprintf(stderr, "  line %lld: %s (%s)\n", (long long)line, str(e, "message"),
                    str(e, "code"));
        else
            fprintf(stderr, "  %s (%s)\n", str(e, "message"), str(e, "code"));
    }
}

/* Follows a batch to its end; returns the exit code. */
static int wait_batch(const char *server, const char *id) {
    bool tty = isatty(STDERR_FILENO);
    int64_t t0 = ts_now_ns(), last_done = -1, last_failed = -1;
    int64_t last_print = 0;
    ts_buf raw = {0};
    for (;;) {
        ts_json_doc *doc = NULL;
        int rc = get_batch(server, id, &raw, &doc);
        if (rc) {
            ts_buf_free(&raw);
            return fail(ts_cli_exit_code(rc));
        }
        const ts_json *b = ts_json_root(doc);
        const ts_json *counts = ts_json_get(b, "request_counts");
        int64_t total = num(counts, "total"), done = num(counts, "completed"),
                failed = num(counts, "failed");
        int64_t tokens = num(ts_json_get(b, "usage"), "output_tokens");
        char status[32];
        snprintf(status, sizeof status, "%s", str(b, "status"));
        double secs = (double)(ts_now_ns() - t0) / 1e9;
        double rate = secs > 0 ? (double)tokens / secs : 0;
        double per_req = done + failed > 0 ? secs / (double)(done + failed) : 0;
        double eta = per_req * (double)(total - done - failed);
        bool end = final_status(status);
        if (tty) {
            int width = 30, fill = total ? (int)((done + failed) * width / total) : 0;
            fprintf(stderr, "\r%s [%.*s%*s] %lld/%lld done, %lld failed, %.0f tok/s, ETA %.0fs   ",
                    status, fill, "##############################", width - fill, "",
                    (long long)done, (long long)total, (long long)failed, rate, eta);
            if (end) fputc('\n', stderr);
        } else if (end || done != last_done || failed != last_failed) {
            if (end || ts_now_ns() - last_print > 2000000000LL) {
                fprintf(stderr, "%s: %s %lld/%lld done, %lld failed, %.0f tok/s\n", id, status,
                        (long long)done, (long long)total, (long long)failed, rate);
                last_print = ts_now_ns();
                last_done = done, last_failed = failed;
            }
        }
        if (end) {
            int code = strcmp(status, "completed") ? TS_EXIT_FAILURE : TS_EXIT_OK;
            if (!strcmp(status, "failed")) print_errors(b);
            ts_json_doc_free(doc);
            ts_buf_free(&raw);
            return code;
        }
        ts_json_doc_free(doc);
        ts_sleep_ms(500);
    }
}

/* The url of the first request line (what the batch's endpoint is, unless given). */
static void first_url(const ts_buf *file, char *out, size_t size) {
    out[0] = '\0';
    const char *p = file->data ? file->data : "";
    const char *nl = strchr(p, '\n');
    ts_json_doc *doc = NULL;
    if (!ts_json_parse(p, nl ? (size_t)(nl - p) : strlen(p), &doc))
        snprintf(out, size, "%s", str(ts_json_root(doc), "url"));
    ts_json_doc_free(doc);
}

/* Uploads the file and creates its batch: 0 and its id, or the failure's exit code (printed).
 * run_key: the batch's metadata "tessera_batch_run" (batch run finds its batch by it), or NULL. */
static int create_batch(const char *server, const char *file, const char *endpoint,
                        const char *window, const char *run_key, char id[64]) {
    ts_buf content = {0}, body = {0}, raw = {0};
    int rc = ts_buf_read_file(&content, file);
    if (rc) return fail(TS_EXIT_USAGE);
    char ep[128];
    if (endpoint)
        snprintf(ep, sizeof ep, "%s", endpoint);
    else
        first_url(&content, ep, sizeof ep);
    if (!ep[0]) {
        ts_buf_free(&content);
        ts_error_set(TS_E_INVALID, "%s: the first line names no url; give --endpoint", file);
        return fail(TS_EXIT_USAGE);
    }
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    static const char boundary[] = "tessera-batch-7d4f1c2a9b";
    rc = ts_buf_printf(&body,
                       "--%s\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
                       "--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"%s\"\r\n"
                       "Content-Type: application/jsonl\r\n\r\n",
                       boundary, boundary, base);
    if (!rc) rc = ts_buf_append(&body, content.data ? content.data : "", content.len);
    if (!rc) rc = ts_buf_printf(&body, "\r\n--%s--\r\n", boundary);
    ts_buf_free(&content);
    char ctype[100];
    snprintf(ctype, sizeof ctype, "multipart/form-data; boundary=%s", boundary);
    ts_json_doc *doc = NULL;
    if (rc) rc = ts_error_set(TS_E_NOMEM, "out of memory");
    if (!rc) rc = call(server, "POST", "/v1/files", ctype, body.data, body.len, &raw, &doc);
    ts_buf_free(&body);
    char file_id[64] = "";
    if (!rc) snprintf(file_id, sizeof file_id, "%s", str(ts_json_root(doc), "id"));
    ts_json_doc_free(doc);
    doc = NULL;
    ts_buf req = {0};
    if (!rc) {
        ts_json_writer w;
        ts_jw_init(&w, &req);
        ts_jw_object_begin(&w);
        ts_jw_key(&w, "input_file_id");
        ts_jw_string(&w, file_id);
        ts_jw_key(&w, "endpoint");
        ts_jw_string(&w, ep);
        ts_jw_key(&w, "completion_window");
        ts_jw_string(&w, window);
        if (run_key) {
            ts_jw_key(&w, "metadata");
            ts_jw_object_begin(&w);
            ts_jw_key(&w, "tessera_batch_run");
            ts_jw_string(&w, run_key);
            ts_jw_object_end(&w);
        }
        ts_jw_object_end(&w);
        rc = ts_jw_finish(&w);
    }
    ts_buf_clear(&raw);
    if (!rc)
        rc = call(server, "POST", "/v1/batches", "application/json", req.data, req.len, &raw, &doc);
    ts_buf_free(&req);
    id[0] = '\0';
    if (!rc) snprintf(id, 64, "%s", str(ts_json_root(doc), "id"));
    ts_json_doc_free(doc);
    ts_buf_free(&raw);
    return rc ? fail(ts_cli_exit_code(rc)) : TS_EXIT_OK;
}

static int submit(const char *server, const char *file, const char *endpoint, const char *window,
                  bool wait) {
    char id[64];
    int code = create_batch(server, file, endpoint, window, NULL, id);
    if (code) return code;
    printf("%s\n", id);
    fflush(stdout);
    return wait ? wait_batch(server, id) : TS_EXIT_OK;
}

static int download(const char *server, const char *file_id, const char *out_path) {
    char path[200];
    snprintf(path, sizeof path, "/v1/files/%s/content", file_id);
    ts_buf raw = {0};
    int rc = call(server, "GET", path, NULL, NULL, 0, &raw, NULL);
    FILE *f = rc ? NULL : fopen(out_path, "wb");
    if (!rc && !f) rc = ts_error_set(TS_E_IO, "%s: cannot write it", out_path);
    if (f) {
        bool bad = raw.len && fwrite(raw.data, 1, raw.len, f) != raw.len;
        if (fclose(f) || bad) rc = ts_error_set(TS_E_IO, "%s: cannot write it", out_path);
    }
    ts_buf_free(&raw);
    return rc;
}

static int results(const char *server, const char *id, const char *out, const char *errors) {
    ts_buf raw = {0};
    ts_json_doc *doc = NULL;
    int rc = get_batch(server, id, &raw, &doc);
    ts_buf_free(&raw);
    if (rc) return fail(ts_cli_exit_code(rc));
    const ts_json *b = ts_json_root(doc);
    const char *status = str(b, "status");
    if (!final_status(status)) {
        ts_error_set(TS_E_INVALID, "batch %s is %s: its results come when it ends (--wait)", id,
                     status);
        ts_json_doc_free(doc);
        return fail(TS_EXIT_FAILURE);
    }
    const char *ofile = str(b, "output_file_id"), *efile = str(b, "error_file_id");
    if (!*ofile) {
        ts_error_set(TS_E_INVALID, "batch %s is %s and has no output", id, status);
        print_errors(b);
        rc = TS_E_INVALID;
    }
    if (!rc) rc = download(server, ofile, out);
    if (!rc && errors && *efile) rc = download(server, efile, errors);
    if (!rc && errors && !*efile) {
        FILE *f = fopen(errors, "wb"); /* no failed line: an empty error file */
        if (!f || fclose(f)) rc = ts_error_set(TS_E_IO, "%s: cannot write it", errors);
    }
    if (!rc && !errors && *efile)
        fprintf(stderr,
                "tessera batch: %lld requests failed or did not run (-e FILE to get them)\n",
                (long long)(num(ts_json_get(b, "request_counts"), "total") -
                            num(ts_json_get(b, "request_counts"), "completed")));
    ts_json_doc_free(doc);
    return rc ? fail(ts_cli_exit_code(rc)) : TS_EXIT_OK;
}

static int list(const char *server, int limit) {
    char path[64];
    snprintf(path, sizeof path, "/v1/batches?limit=%d", limit);
    ts_buf raw = {0};
    ts_json_doc *doc = NULL;
    int rc = call(server, "GET", path, NULL, NULL, 0, &raw, &doc);
    ts_buf_free(&raw);
    if (rc) return fail(ts_cli_exit_code(rc));
    const ts_json *data = ts_json_get(ts_json_root(doc), "data");
    for (size_t i = 0; data && data->type == TS_JSON_ARRAY && i < data->length; i++) {
        const ts_json *b = &data->items[i], *counts = ts_json_get(b, "request_counts");
        printf("%s  %-11s %lld/%lld done  %lld failed  %s\n", str(b, "id"), str(b, "status"),
               (long long)num(counts, "completed"), (long long)num(counts, "total"),
               (long long)num(counts, "failed"), str(b, "endpoint"));
    }
    ts_json_doc_free(doc);
    return TS_EXIT_OK;
}

/* ---- batch run: the file through a local cluster of its own, resumable ---- */

/* The local cluster, for the signal handler: a Ctrl-C or SIGTERM stops it in order (the batch
 * is durable in the state directory: the next run resumes it). */
static volatile pid_t run_cluster;

static void run_on_signal(int sig) {
    (void)sig;
    pid_t pid = run_cluster;
    if (pid > 0) {
        kill(pid, SIGTERM);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
    }
    _exit(130);
}

/* mkdir -p with mode 0700 (the state holds the prompts). */
static int make_dirs(const char *path) {
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s", path);
    for (char *c = p + 1;; c++) {
        bool end = *c == '\0';
        if (*c == '/' || end) {
            *c = '\0';
            if (mkdir(p, 0700) && errno != EEXIST)
                return ts_error_set(TS_E_IO, "%s: cannot make it: %s", p, strerror(errno));
            if (end) break;
            *c = '/';
        }
    }
    return TS_OK;
}

/* The state directory of an input by default: $XDG_CACHE_HOME (or ~/.cache)/tessera/batch-run/
 * KEY, so that running the same file again resumes its batch. */
static int default_state_dir(const char *key, char *out, size_t size) {
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (xdg && xdg[0])
        snprintf(out, size, "%s/tessera/batch-run/%s", xdg, key);
    else if (home && home[0])
        snprintf(out, size, "%s/.cache/tessera/batch-run/%s", home, key);
    else
        return ts_error_set(TS_E_INVALID, "neither HOME nor XDG_CACHE_HOME is set: give "
                                          "--state-dir");
    return TS_OK;
}

/* Waits until the cluster's HTTP API answers /health with 200 (a group serves), watching the
 * cluster process. */
static int wait_cluster(pid_t pid, const char *ep_file, const char *log, char *server,
                        size_t size) {
    for (;;) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            run_cluster = 0;
            return ts_error_set(TS_E_UNAVAILABLE, "the local cluster stopped (%s %d): see %s",
                                WIFEXITED(status) ? "exit" : "signal",
                                WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), log);
        }
        ts_buf ep = {0}, raw = {0};
        if (!ts_buf_read_file(&ep, ep_file) && ep.len) {
            snprintf(server, size, "http://%.*s", (int)strcspn(ep.data, "\r\n"), ep.data);
            int code = 0;
            if (!ts_http_call(server, "GET", "/health", NULL, NULL, 0, 10, &code, &raw) &&
                code == 200) {
                ts_buf_free(&ep);
                ts_buf_free(&raw);
                return TS_OK;
            }
        }
        ts_error_clear();
        ts_buf_free(&ep);
        ts_buf_free(&raw);
        ts_sleep_ms(100);
    }
}

/* The newest batch made for this input (metadata tessera_batch_run = key): 0 with its id, or
 * id "" when there is none. */
static int find_run_batch(const char *server, const char *key, char id[64]) {
    ts_buf raw = {0};
    ts_json_doc *doc = NULL;
    id[0] = '\0';
    int rc = call(server, "GET", "/v1/batches?limit=100", NULL, NULL, 0, &raw, &doc);
    ts_buf_free(&raw);
    const ts_json *data = rc ? NULL : ts_json_get(ts_json_root(doc), "data");
    for (size_t i = 0; data && data->type == TS_JSON_ARRAY && i < data->length; i++) {
        const ts_json *b = &data->items[i];
        if (!strcmp(str(ts_json_get(b, "metadata"), "tessera_batch_run"), key)) {
            snprintf(id, 64, "%s", str(b, "id"));
            break;
        }
    }
    ts_json_doc_free(doc);
    return rc;
}

/* Runs the file on the cluster at server: finds or creates its batch, follows it, writes the
 * results. The exit code. */
static int run_on(const char *server, const char *file, const char *endpoint, const char *window,
                  const char *key, const char *state_dir, const char *hint, const char *out,
                  const char *errors) {
    char id[64];
    int rc = find_run_batch(server, key, id);
    if (rc) return fail(ts_cli_exit_code(rc));
    if (id[0]) {
        fprintf(stderr, "tessera batch run: resuming batch %s (state in %s)\n", id, state_dir);
    } else {
        int code = create_batch(server, file, endpoint, window, key, id);
        if (code) return code;
    }
    printf("%s\n", id);
    fflush(stdout);
    int code = wait_batch(server, id);
    ts_buf raw = {0};
    ts_json_doc *doc = NULL;
    rc = get_batch(server, id, &raw, &doc);
    ts_buf_free(&raw);
    if (rc) return fail(ts_cli_exit_code(rc));
    const ts_json *b = ts_json_root(doc);
    bool has_output = *str(b, "output_file_id") != '\0';
    if (code)
        fprintf(stderr, "tessera batch run: batch %s is %s; its state is in %s (%s)\n", id,
                str(b, "status"), state_dir, hint);
    ts_json_doc_free(doc);
    if (has_output) {
        int written = results(server, id, out, errors);
        if (!code) code = written;
    }
    return code;
}

/* tessera batch run: starts `tessera up` (its HTTP API on a free port, behind a fresh API key,
 * its state in the state directory), runs the file through it, stops it. */
/* The input's key: its content's checksum (the same file finds its batch again). */
static int file_key(const char *file, char key[17]) {
    ts_buf content = {0};
    if (ts_buf_read_file(&content, file)) return fail(TS_EXIT_USAGE);
    snprintf(key, 17, "%016llx",
             (unsigned long long)ts_kv_block_checksum(content.data, content.len));
    ts_buf_free(&content);
    return TS_EXIT_OK;
}

/* tessera batch run --server URL: on a running cluster (a Slurm job's), found again the same
 * way (a requeued job resumes its batch). */
static int batch_run_on(const char *server, const char *file, const char *out, const char *errors,
                        const char *endpoint, const char *window) {
    char key[17], where[400];
    int code = file_key(file, key);
    if (code) return code;
    snprintf(where, sizeof where, "the cluster at %s", server);
    return run_on(server, file, endpoint, window, key, where,
                  "the same file finds this batch there again", out, errors);
}

static int batch_run(const char *file, const char *out, const char *errors, const char *endpoint,
                     const char *window, const char *state_dir_flag, char *const up_extra[],
                     int n_extra) {
    char key[17];
    int code0 = file_key(file, key);
    if (code0) return code0;
    char state_dir[PATH_MAX - 64], ep_file[PATH_MAX], key_file[PATH_MAX], log[PATH_MAX];
    int rc = TS_OK;
    if (state_dir_flag)
        snprintf(state_dir, sizeof state_dir, "%s", state_dir_flag);
    else
        rc = default_state_dir(key, state_dir, sizeof state_dir);
    if (!rc) rc = make_dirs(state_dir);
    if (rc) return fail(TS_EXIT_USAGE);
    snprintf(ep_file, sizeof ep_file, "%s/http.endpoint", state_dir);
    snprintf(key_file, sizeof key_file, "%s/api.key", state_dir);
    snprintf(log, sizeof log, "%s/up.log", state_dir);
    remove(ep_file); /* a killed run's */
    /* The API listens on every interface (tessera up's): a key of this run's keeps others out. */
    remove(key_file);
    char api_key[TS_SECRET_MAX];
    rc = ts_secret_create_file(key_file);
    if (!rc) rc = ts_secret_load("--api-key-file", key_file, NULL, api_key, sizeof api_key);
    if (!rc && setenv("TESSERA_API_KEY", api_key, 1))
        rc = ts_error_set(TS_E_NOMEM, "out of memory");
    char self[PATH_MAX];
    if (!rc) rc = ts_cli_sibling_path("tessera", self, sizeof self);
    if (rc) return fail(TS_EXIT_FAILURE);

    char *argv[48];
    int a = 0;
    char *fixed[] = {
        self,          "up",      "--port",         "0",      "--http-port",          "0",
        "--state-dir", state_dir, "--api-key-file", key_file, "--http-endpoint-file", ep_file};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        argv[a++] = fixed[i];
    for (int i = 0; i < n_extra; i++)
        argv[a++] = up_extra[i];
    argv[a] = NULL;
    int log_fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd < 0) {
        ts_error_set(TS_E_IO, "%s: cannot write it: %s", log, strerror(errno));
        return fail(TS_EXIT_FAILURE);
    }
    struct sigaction sa = {.sa_handler = run_on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    pid_t pid = 0;
    rc = ts_cli_spawn("tessera up", argv, log_fd, &pid);
    close(log_fd);
    if (rc) return fail(TS_EXIT_FAILURE);
    run_cluster = pid;
    fprintf(stderr, "tessera batch run: starting a local cluster (log: %s)\n", log);
    char server[320];
    rc = wait_cluster(pid, ep_file, log, server, sizeof server);
    int code = rc ? fail(TS_EXIT_FAILURE)
                  : run_on(server, file, endpoint, window, key, state_dir,
                           "remove it to run the file again from the start", out, errors);
    if (run_cluster) {
        run_cluster = 0;
        ts_cli_stop_child(pid, 30000);
    }
    return code;
}

int ts_cmd_batch(int argc, char **argv) {
    const char *server_flag = NULL, *endpoint = NULL, *window = "24h";
    const char *out = NULL, *errors = NULL, *model = NULL, *state_dir = NULL;
    bool wait = false;
    int limit = 20, tp = 0, groups = 0, threads = 0;
    ts_flag flags[] = {
        {"server", 0, TS_FLAG_STRING, &server_flag,
         "the cluster's HTTP API (tessera up --http-port; default http://127.0.0.1:8000; run: "
         "this cluster instead of a local one of its own)",
         0, 0},
        {"endpoint", 0, TS_FLAG_STRING, &endpoint,
         "submit: /v1/completions or /v1/chat/completions (default: the first line's url)", 0, 0},
        {"window", 0, TS_FLAG_STRING, &window, "submit: completion window (24h, or 90s, 30m, 2d)",
         0, 0},
        {"wait", 0, TS_FLAG_BOOL, &wait, "submit: follow the batch to its end with progress", 0, 0},
        {"output", 'o', TS_FLAG_STRING, &out, "results: where the output lines go", 0, 0},
        {"errors", 'e', TS_FLAG_STRING, &errors, "results: where the error lines go", 0, 0},
        {"limit", 0, TS_FLAG_INT, &limit, "list: how many batches, newest first", 1, 100},
        {"model", 'm', TS_FLAG_STRING, &model, "run: model file (default: the bundled model)", 0,
         0},
        {"tp", 0, TS_FLAG_INT, &tp, "run: ranks per group (tessera up --tp)", 0, 64},
        {"groups", 0, TS_FLAG_INT, &groups, "run: node groups (tessera up --groups)", 0, 64},
        {"threads", 't', TS_FLAG_INT, &threads, "run: threads per rank (tessera up --threads)", 0,
         1024},
        {"state-dir", 0, TS_FLAG_STRING, &state_dir,
         "run: the durable state (default: ~/.cache/tessera/batch-run/<the file's checksum>; "
         "the same file resumes its batch)",
         0, 0},
    };
    const char *pos[3];
    ts_flags_result res = {pos, 3, 0};
    int rc =
        ts_flags_parse(USAGE, flags, (int)(sizeof flags / sizeof flags[0]), argc, argv, 1, &res);
    if (rc == TS_FLAGS_HELP) return TS_EXIT_OK;
    if (rc) return fail(TS_EXIT_USAGE);
    const char *server = server_flag ? server_flag : "http://127.0.0.1:8000";
    const char *verb = res.n_positionals ? pos[0] : "";
    const char *arg = res.n_positionals > 1 ? pos[1] : NULL;
    bool needs_arg = strcmp(verb, "list") != 0;
    if ((needs_arg && res.n_positionals != 2) || (!needs_arg && res.n_positionals != 1)) {
        ts_error_set(TS_E_INVALID, "usage: %s", USAGE);
        return fail(TS_EXIT_USAGE);
    }
    if (!strcmp(verb, "submit")) return submit(server, arg, endpoint, window, wait);
    if (!strcmp(verb, "list")) return list(server, limit);
    if (!strcmp(verb, "run")) {
        if (!out) {
            ts_error_set(TS_E_INVALID, "run needs -o OUT.jsonl");
            return fail(TS_EXIT_USAGE);
        }
        char tp_s[16], groups_s[16], threads_s[16];
        char *extra[8];
        int n = 0;
        if (model) extra[n++] = "-m", extra[n++] = (char *)model;
        if (tp) snprintf(tp_s, sizeof tp_s, "%d", tp), extra[n++] = "--tp", extra[n++] = tp_s;
        if (groups)
            snprintf(groups_s, sizeof groups_s, "%d", groups), extra[n++] = "--groups",
                                                               extra[n++] = groups_s;
        if (threads)
            snprintf(threads_s, sizeof threads_s, "%d", threads), extra[n++] = "--threads",
                                                                  extra[n++] = threads_s;
        if (server_flag) return batch_run_on(server_flag, arg, out, errors, endpoint, window);
        return batch_run(arg, out, errors, endpoint, window, state_dir, extra, n);
    }
    if (!strcmp(verb, "results")) {
        if (!out) {
            ts_error_set(TS_E_INVALID, "results needs -o OUT.jsonl");
            return fail(TS_EXIT_USAGE);
        }
        return results(server, arg, out, errors);
    }
    if (!strcmp(verb, "status") || !strcmp(verb, "cancel")) {
        char path[200];
        snprintf(path, sizeof path, "/v1/batches/%s%s", arg, verb[0] == 'c' ? "/cancel" : "");
        ts_buf raw = {0};
        rc = call(server, verb[0] == 'c' ? "POST" : "GET", path, NULL, NULL, 0, &raw, NULL);
        if (!rc) printf("%.*s\n", (int)raw.len, raw.data ? raw.data : "");
        ts_buf_free(&raw);
        return rc ? fail(ts_cli_exit_code(rc)) : TS_EXIT_OK;
    }
    ts_error_set(TS_E_INVALID,
                 "unknown batch command '%s' (submit, status, list, cancel, results, run)", verb);
    return fail(TS_EXIT_USAGE);
}
