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
 */
#include "cli/commands.h"
#include "cli/http_client.h"

#include "common/buf.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/flags.h"
#include "common/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char USAGE[] =
    "tessera batch submit FILE.jsonl [--server URL] [--endpoint E] [--window 24h] [--wait]\n"
    "       tessera batch status ID | list [--limit N] | cancel ID | results ID -o OUT.jsonl "
    "[-e ERRORS.jsonl]";

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

static int submit(const char *server, const char *file, const char *endpoint, const char *window,
                  bool wait) {
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
        ts_jw_object_end(&w);
        rc = ts_jw_finish(&w);
    }
    ts_buf_clear(&raw);
    if (!rc)
        rc = call(server, "POST", "/v1/batches", "application/json", req.data, req.len, &raw, &doc);
    ts_buf_free(&req);
    char id[64] = "";
    if (!rc) snprintf(id, sizeof id, "%s", str(ts_json_root(doc), "id"));
    ts_json_doc_free(doc);
    ts_buf_free(&raw);
    if (rc) return fail(ts_cli_exit_code(rc));
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

int ts_cmd_batch(int argc, char **argv) {
    const char *server = "http://127.0.0.1:8000", *endpoint = NULL, *window = "24h";
    const char *out = NULL, *errors = NULL;
    bool wait = false;
    int limit = 20;
    ts_flag flags[] = {
        {"server", 0, TS_FLAG_STRING, &server, "the cluster's HTTP API (tessera up --http-port)", 0,
         0},
        {"endpoint", 0, TS_FLAG_STRING, &endpoint,
         "submit: /v1/completions or /v1/chat/completions (default: the first line's url)", 0, 0},
        {"window", 0, TS_FLAG_STRING, &window, "submit: completion window (24h, or 90s, 30m, 2d)",
         0, 0},
        {"wait", 0, TS_FLAG_BOOL, &wait, "submit: follow the batch to its end with progress", 0, 0},
        {"output", 'o', TS_FLAG_STRING, &out, "results: where the output lines go", 0, 0},
        {"errors", 'e', TS_FLAG_STRING, &errors, "results: where the error lines go", 0, 0},
        {"limit", 0, TS_FLAG_INT, &limit, "list: how many batches, newest first", 1, 100},
    };
    const char *pos[3];
    ts_flags_result res = {pos, 3, 0};
    int rc =
        ts_flags_parse(USAGE, flags, (int)(sizeof flags / sizeof flags[0]), argc, argv, 1, &res);
    if (rc == TS_FLAGS_HELP) return TS_EXIT_OK;
    if (rc) return fail(TS_EXIT_USAGE);
    const char *verb = res.n_positionals ? pos[0] : "";
    const char *arg = res.n_positionals > 1 ? pos[1] : NULL;
    bool needs_arg = strcmp(verb, "list") != 0;
    if ((needs_arg && res.n_positionals != 2) || (!needs_arg && res.n_positionals != 1)) {
        ts_error_set(TS_E_INVALID, "usage: %s", USAGE);
        return fail(TS_EXIT_USAGE);
    }
    if (!strcmp(verb, "submit")) return submit(server, arg, endpoint, window, wait);
    if (!strcmp(verb, "list")) return list(server, limit);
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
    ts_error_set(TS_E_INVALID, "unknown batch command '%s' (submit, status, list, cancel, results)",
                 verb);
    return fail(TS_EXIT_USAGE);
}
