/*
 * batch.c — the batch runner (see batch.h for the policy).
 *
 * Locks: the runner's thread owns its list of batches (run_batch) and does all store I/O without
 * co->mu. Its requests' items (batch_item) are shared with the co_output callbacks, which run
 * under co->mu and only record what happened (text appended, done set); the thread collects
 * finished items under co->mu and writes them to the store after letting go of it. An item is
 * held by the thread (until it collected or cancelled it) and by its co_request (until release);
 * the count is guarded by co->mu.
 */
#include "coordinator/batch.h"

#include "common/buf.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/json.h"
#include "common/log.h"
#include "coordinator/http_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { POLL_MS = 100, FETCH_MAX = 256 };

typedef struct run_batch {
    char id[40];
    char input_file_id[40]; /* with a line's custom_id: the seed of a line that has none */
    bool chat; /* /v1/chat/completions, else /v1/completions */
    int64_t created_at, expires_at, window_s;
    int64_t cursor; /* lines up to here were fetched (admitted or finished) */
    int n_in_flight;
    bool seen;   /* still active in the store this round */
    bool broken; /* the store refused a write: fail it as soon as it can */
    char broken_why[512];
    struct run_batch *next;
} run_batch;

/* One choice of a line (its body's n: 1 to TS_MAX_SAMPLES), a co_request of its own: the first
 * admitted with co_request_admit, the others as its samples (co_request_admit_sample, sharing
 * the prompt's KV). */
typedef struct batch_choice {
    struct batch_item *it;
    co_request *r; /* NULL once released */
    ts_buf text;
    ts_finish_reason reason;
    ts_request_usage usage;
    bool done;
} batch_choice;

/* A line in flight. Under co->mu; refs: the runner's and one per admitted choice. */
typedef struct batch_item {
    co_batch *runner;
    run_batch *rb;
    int64_t line;
    char *custom_id;
    int refs;
    int32_t n_choices, n_done;
    batch_choice *choices;
    bool done; /* every choice finished, or one failed (err) */
    int err;
    char err_msg[512];
    char request_id[TS_REQUEST_ID_BYTES]; /* the first choice's */
    int64_t created;
    struct batch_item *next; /* the runner's in-flight list */
} batch_item;

struct co_batch {
    coordinator *co;
    co_http *http;
    co_store *store;
    pthread_t thread;
    pthread_mutex_t mu; /* stop and wake */
    pthread_cond_t cond;
    bool stop;
    run_batch *batches;
    batch_item *items; /* under co->mu */
};

/* ---- the co_output callbacks (under co->mu) ---- */

static void item_unref(batch_item *it) {
    if (--it->refs > 0) return;
    for (int32_t i = 0; it->choices && i < it->n_choices; i++)
        ts_buf_free(&it->choices[i].text);
    free(it->choices);
    free(it->custom_id);
    free(it);
}

static void wake(co_batch *b) {
    pthread_mutex_lock(&b->mu);
    pthread_cond_signal(&b->cond);
    pthread_mutex_unlock(&b->mu);
}

static int out_tokens(co_request *r, const char *text, size_t n, int32_t token, float logprob) {
    batch_choice *c = r->out_user;
    (void)token, (void)logprob;
    return ts_buf_append(&c->text, text, n);
}

static int out_finish(co_request *r, const char *text, size_t n, int32_t token, float logprob,
                      ts_finish_reason reason, const ts_request_usage *usage) {
    batch_choice *c = r->out_user;
    batch_item *it = c->it;
    (void)token, (void)logprob;
    int rc = ts_buf_append(&c->text, text, n);
    c->reason = reason;
    c->usage = *usage;
    c->done = true;
    if (++it->n_done == it->n_choices) it->done = true;
    if (it->done) wake(it->runner);
    return rc;
}

/* A choice failed: so does the line (collect cancels its other choices). */
static void out_error(co_request *r, int code, const char *message) {
    batch_item *it = ((batch_choice *)r->out_user)->it;
    if (it->err) return;
    it->err = code;
    snprintf(it->err_msg, sizeof it->err_msg, "%s", message);
    it->done = true;
    wake(it->runner);
}

static void out_release(co_request *r) {
    batch_choice *c = r->out_user;
    c->r = NULL;
    item_unref(c->it);
}

static const co_output batch_output = {
    .tokens = out_tokens, .finish = out_finish, .error = out_error, .release = out_release};

/* ---- output lines ---- */

static void line_id(const char *batch_id, int64_t line, char *out, size_t size) {
    snprintf(out, size, "batch_req_%s_%lld", batch_id + 6 /* after "batch_" */, (long long)line);
}

/* {"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error": null}: body
 * is a JSON text. */
static int output_line(const char *batch_id, int64_t line, const char *custom_id, unsigned status,
                       const char *request_id, const char *body, ts_buf *out) {
    ts_json_doc *doc = NULL;
    int rc = ts_json_parse(body, strlen(body), &doc);
    if (rc) return rc;
    char id[80];
    line_id(batch_id, line, id, sizeof id);
    ts_json_writer w;
    ts_jw_init(&w, out);
    ts_jw_object_begin(&w);
    ts_jw_key(&w, "id");
    ts_jw_string(&w, id);
    ts_jw_key(&w, "custom_id");
    ts_jw_string(&w, custom_id);
    ts_jw_key(&w, "response");
    ts_jw_object_begin(&w);
    ts_jw_key(&w, "status_code");
    ts_jw_int(&w, status);
    ts_jw_key(&w, "request_id");
    ts_jw_string(&w, request_id);
    ts_jw_key(&w, "body");
    ts_jw_value(&w, ts_json_root(doc));
    ts_jw_object_end(&w);
    ts_jw_key(&w, "error");
    ts_jw_null(&w);
    ts_jw_object_end(&w);
    ts_json_doc_free(doc);
    return ts_jw_finish(&w);
}

/* A line that failed with an HTTP error (the response OpenAI's error object). */
static int error_line(const char *batch_id, int64_t line, const char *custom_id, int code,
                      const char *message, const char *param, const char *request_id, ts_buf *out) {
    ts_buf body = {0};
    unsigned status;
    int rc = co_http_error_body(code, message, param, &body, &status);
    if (!rc) rc = output_line(batch_id, line, custom_id, status, request_id, body.data, out);
    ts_buf_free(&body);
    return rc;
}

/* ---- validating ---- */

/* custom_id → line, open addressing (the ids live in the line documents). */
typedef struct id_set {
    const char **keys;
    int64_t *lines;
    size_t cap;
} id_set;

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* 0 when added, else the line that has it already. */
static int64_t id_set_add(id_set *s, const char *key, int64_t line) {
    for (size_t i = hash_str(key) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (!s->keys[i]) {
            s->keys[i] = key;
            s->lines[i] = line;
            return 0;
        }
        if (!strcmp(s->keys[i], key)) return s->lines[i];
    }
}

typedef struct validation {
    ts_json_writer errors;
    ts_buf errors_buf;
    int n_errors;
} validation;

static void add_error(validation *v, int64_t line, const char *code, const char *param,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void add_error(validation *v, int64_t line, const char *code, const char *param,
                      const char *fmt, ...) {
    if (v->n_errors++ >= CO_BATCH_MAX_ERRORS) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ts_json_writer *w = &v->errors;
    ts_jw_object_begin(w);
    ts_jw_key(w, "code");
    ts_jw_string(w, code);
    ts_jw_key(w, "message");
    ts_jw_string(w, msg);
    ts_jw_key(w, "param");
    if (param)
        ts_jw_string(w, param);
    else
        ts_jw_null(w);
    ts_jw_key(w, "line");
    if (line > 0)
        ts_jw_int(w, line);
    else
        ts_jw_null(w);
    ts_jw_object_end(w);
}

/* Checks one parsed line; on success fills *out (custom_id borrowed from the document, body a
 * fresh JSON text in bodies). */
static void check_line(co_batch *b, const co_batch_info *bi, validation *v, id_set *ids,
                       int64_t line, const ts_json *root, co_store_line *out, ts_buf *body,
                       bool *ok) {
    *ok = false;
    if (root->type != TS_JSON_OBJECT) {
        add_error(v, line, "invalid_request", NULL, "line %lld: must be a JSON object",
                  (long long)line);
        return;
    }
    const ts_json *cid = ts_json_get(root, "custom_id"), *method = ts_json_get(root, "method"),
                  *url = ts_json_get(root, "url"), *bd = ts_json_get(root, "body");
    if (!cid || cid->type != TS_JSON_STRING || !cid->length || cid->length > 512) {
        add_error(v, line, "missing_required_parameter", "custom_id",
                  "line %lld: custom_id must be a non-empty string (at most 512 bytes)",
                  (long long)line);
        return;
    }
    int64_t first = id_set_add(ids, cid->string, line);
    if (first) {
        add_error(v, line, "duplicate_custom_id", "custom_id",
                  "line %lld: custom_id '%.200s' is already used on line %lld (each must be "
                  "unique in the batch)",
                  (long long)line, cid->string, (long long)first);
        return;
    }
    if (!method || method->type != TS_JSON_STRING || strcmp(method->string, "POST")) {
        add_error(v, line, "invalid_method", "method", "line %lld: method must be \"POST\"",
                  (long long)line);
        return;
    }
    if (!url || url->type != TS_JSON_STRING || strcmp(url->string, bi->endpoint)) {
        add_error(v, line, "invalid_url", "url",
                  "line %lld: url must be the batch's endpoint %s%s%.200s%s", (long long)line,
                  bi->endpoint, url && url->type == TS_JSON_STRING ? ", got '" : "",
                  url && url->type == TS_JSON_STRING ? url->string : "",
                  url && url->type == TS_JSON_STRING ? "'" : "");
        return;
    }
    if (!bd || bd->type != TS_JSON_OBJECT) {
        add_error(v, line, "invalid_request", "body", "line %lld: body must be a JSON object",
                  (long long)line);
        return;
    }
    /* the body as the endpoint itself would map it (types, chat messages, stream) */
    ts_request req;
    ts_request_init(&req);
    const char *param = NULL;
    int rc = co_http_map_request(b->http, !strcmp(bi->endpoint, "/v1/chat/completions"), bd, false,
                                 &req, &param);
    if (rc) {
        char p[80];
        snprintf(p, sizeof p, "body.%s", param ? param : "");
        add_error(v, line, "invalid_request", param ? p : "body", "line %lld: %s", (long long)line,
                  ts_error_message());
        ts_request_free(&req);
        return;
    }
    pthread_mutex_lock(&b->co->mu);
    bool model_ok = co_serves_model(b->co, req.model);
    char served[256];
    snprintf(served, sizeof served, "%s", b->co->model_name);
    pthread_mutex_unlock(&b->co->mu);
    if (!model_ok) {
        add_error(v, line, "model_not_found", "body.model",
                  "line %lld: the model '%.200s' does not exist (this cluster serves '%s')",
                  (long long)line, req.model, served);
        ts_request_free(&req);
        return;
    }
    ts_request_free(&req);
    ts_json_writer w;
    ts_jw_init(&w, body);
    ts_jw_value(&w, bd);
    if (ts_jw_finish(&w)) {
        add_error(v, line, "server_error", NULL, "line %lld: out of memory", (long long)line);
        return;
    }
    out->line = line;
    out->custom_id = cid->string;
    *ok = true;
}

/* validating → in_progress or failed. The result is decided by the file alone, so a validation
 * interrupted by a crash is simply done again. */
static int validate(co_batch *b, const co_batch_info *bi) {
    ts_buf content = {0};
    int rc = co_store_file_content(b->store, bi->input_file_id, &content);
    if (rc == TS_E_NOT_FOUND)
        return co_store_batch_abort(b->store, bi->id, "file_not_found", ts_error_message());
    if (rc) return rc;
    /* lines: count and split (NUL-terminated in place) */
    size_t n_lines = 0;
    for (size_t i = 0; i < content.len; i++)
        n_lines += content.data[i] == '\n';
    n_lines++;
    co_store_line *lines = calloc(n_lines, sizeof *lines);
    ts_json_doc **docs = calloc(n_lines, sizeof *docs);
    ts_buf *bodies = calloc(n_lines, sizeof *bodies);
    id_set ids = {0};
    ids.cap = 1;
    while (ids.cap < 2 * n_lines + 2)
        ids.cap <<= 1;
    ids.keys = calloc(ids.cap, sizeof *ids.keys);
    ids.lines = calloc(ids.cap, sizeof *ids.lines);
    validation v = {0};
    ts_jw_init(&v.errors, &v.errors_buf);
    ts_jw_array_begin(&v.errors);
    size_t n_ok = 0, n_requests = 0;
    if (!lines || !docs || !bodies || !ids.keys || !ids.lines) {
        rc = ts_error_set(TS_E_NOMEM, "out of memory");
        goto out;
    }
    char *p = content.data ? content.data : "";
    char *end = p + content.len;
    for (int64_t line = 1; p <= end && p; line++) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *le = nl ? nl : end;
        size_t len = (size_t)(le - p);
        if (len && p[len - 1] == '\r') len--;
        bool blank = true;
        for (size_t i = 0; i < len && blank; i++)
            blank = p[i] == ' ' || p[i] == '\t';
        if (!blank) {
            n_requests++;
            ts_json_doc *doc = NULL;
            if (ts_json_parse(p, len, &doc)) {
                add_error(&v, line, "invalid_json_line", NULL, "line %lld is not valid JSON: %s",
                          (long long)line, ts_error_message());
            } else {
                bool ok;
                docs[n_ok] = doc;
                check_line(b, bi, &v, &ids, line, ts_json_root(doc), &lines[n_ok], &bodies[n_ok],
                           &ok);
                if (ok) {
                    lines[n_ok].body = bodies[n_ok].data;
                    n_ok++;
                } else {
                    ts_buf_free(&bodies[n_ok]);
                    ts_json_doc_free(doc);
                    docs[n_ok] = NULL;
                }
            }
        }
        p = nl ? nl + 1 : NULL;
    }
    if (n_requests == 0) add_error(&v, 0, "empty_file", NULL, "the input file has no requests");
    if (v.n_errors > CO_BATCH_MAX_ERRORS)
        add_error(&v, 0, "too_many_errors", NULL, "%d lines are bad; the first %d are listed",
                  v.n_errors - 1, CO_BATCH_MAX_ERRORS);
    ts_jw_array_end(&v.errors);
    if (v.n_errors) {
        rc = ts_jw_finish(&v.errors);
        if (!rc) rc = co_store_batch_fail(b->store, bi->id, v.errors_buf.data);
        if (!rc) TS_INFO("batch %s: failed validation (%d bad lines)", bi->id, v.n_errors);
    } else {
        rc = co_store_batch_validated(b->store, bi->id, lines, n_ok);
        if (!rc) TS_INFO("batch %s: %zu requests, in progress", bi->id, n_ok);
    }
    if (rc == TS_E_IO || rc == TS_E_FORMAT) { /* the state cannot take it: fail with the reason */
        char why[512];
        snprintf(why, sizeof why, "%s", ts_error_message());
        TS_ERROR("batch %s: %s", bi->id, why);
        rc = co_store_batch_abort(b->store, bi->id, "state_write_failed", why);
    }
out:
    for (size_t i = 0; docs && i < n_ok; i++) {
        ts_json_doc_free(docs[i]);
        ts_buf_free(&bodies[i]);
    }
    free(lines);
    free(docs);
    free(bodies);
    free(ids.keys);
    free(ids.lines);
    ts_buf_free(&v.errors_buf);
    ts_buf_free(&content);
    return rc;
}

/* ---- running ---- */

static run_batch *find_batch(co_batch *b, const char *id) {
    for (run_batch *rb = b->batches; rb; rb = rb->next)
        if (!strcmp(rb->id, id)) return rb;
    return NULL;
}

static bool in_flight(co_batch *b, const run_batch *rb, int64_t line) {
    for (batch_item *it = b->items; it; it = it->next)
        if (it->rb == rb && it->line == line) return true;
    return false;
}

/* The runner is done with the line's requests: those still running are cancelled. Under co->mu. */
static void item_done(coordinator *co, batch_item *it) {
    for (int32_t i = 0; i < it->n_choices; i++)
        if (it->choices[i].r) co_request_client_done(co, it->choices[i].r);
}

/* Cancels the batch's running requests (all of them when rb is NULL). Under co->mu. */
static void cancel_items(co_batch *b, run_batch *rb) {
    for (batch_item **pp = &b->items; *pp;) {
        batch_item *it = *pp;
        if (rb && it->rb != rb) {
            pp = &it->next;
            continue;
        }
        *pp = it->next;
        it->rb->n_in_flight--;
        item_done(b->co, it);
        item_unref(it);
    }
}

static void mark_broken(run_batch *rb, const char *why) {
    if (rb->broken) return;
    rb->broken = true;
    snprintf(rb->broken_why, sizeof rb->broken_why, "%s", why);
    TS_ERROR("batch %s: %s", rb->id, why);
}

/* The line's response body, and in *usage the usage of all its choices. */
static int item_body(co_http *http, bool chat, const char *id, const batch_item *it,
                     ts_request_usage *usage, ts_buf *body) {
    co_http_choice_result *res = calloc((size_t)it->n_choices, sizeof *res);
    if (!res) return ts_error_set(TS_E_NOMEM, "out of memory");
    for (int32_t i = 0; i < it->n_choices; i++) {
        const batch_choice *c = &it->choices[i];
        res[i] = (co_http_choice_result){c->text.data ? c->text.data : "", c->text.len, c->reason,
                                         c->usage};
    }
    int rc = co_http_completion_body(http, chat, id, it->created, res, it->n_choices, usage, body);
    free(res);
    return rc;
}

/* Finished items → results in the store (transient failures go back to pending). */
static void collect(co_batch *b) {
    coordinator *co = b->co;
    batch_item *done = NULL;
    pthread_mutex_lock(&co->mu);
    for (batch_item **pp = &b->items; *pp;) {
        batch_item *it = *pp;
        if (!it->done) {
            pp = &it->next;
            continue;
        }
        *pp = it->next;
        it->rb->n_in_flight--;
        item_done(co, it);
        it->next = done;
        done = it;
    }
    pthread_mutex_unlock(&co->mu);
    if (!done) return;

    size_t n = 0, cap = 0;
    co_store_result *res = NULL;
    ts_buf *lines = NULL;
    for (batch_item *it = done; it; it = it->next)
        cap++;
    res = calloc(cap, sizeof *res);
    lines = calloc(cap, sizeof *lines);
    for (batch_item *it = done; it && res && lines; it = it->next) {
        run_batch *rb = it->rb;
        bool transient = it->err && it->err != TS_E_INVALID && it->err != TS_E_NOMEM;
        if (transient) { /* runs again: pending in the store, fetched again from its line */
            if (rb->cursor >= it->line) rb->cursor = it->line - 1;
            continue;
        }
        int rc;
        char id[160];
        ts_request_usage usage = {0};
        if (it->err) {
            rc = error_line(rb->id, it->line, it->custom_id, it->err, it->err_msg, NULL,
                            it->request_id, &lines[n]);
        } else {
            ts_buf body = {0};
            snprintf(id, sizeof id, "%s-%s", rb->chat ? "chatcmpl" : "cmpl", it->request_id);
            rc = item_body(b->http, rb->chat, id, it, &usage, &body);
            if (!rc)
                rc = output_line(rb->id, it->line, it->custom_id, 200, it->request_id, body.data,
                                 &lines[n]);
            ts_buf_free(&body);
        }
        if (rc) {
            mark_broken(rb, "out of memory writing a result");
            continue;
        }
        res[n] = (co_store_result){.batch_id = rb->id,
                                   .line = it->line,
                                   .ok = !it->err,
                                   .line_json = lines[n].data,
                                   .prompt_tokens = usage.prompt_tokens,
                                   .completion_tokens = usage.completion_tokens,
                                   .cached_tokens = usage.cached_prompt_tokens};
        n++;
    }
    int rc = res && lines ? co_store_results(b->store, res, n)
                          : ts_error_set(TS_E_NOMEM, "out of memory");
    if (rc) { /* not recorded: those batches cannot go on truthfully */
        char why[512];
        snprintf(why, sizeof why, "%s", ts_error_message());
        for (batch_item *it = done; it; it = it->next)
            mark_broken(it->rb, why);
    }
    for (size_t i = 0; lines && i < cap; i++)
        ts_buf_free(&lines[i]);
    free(lines);
    free(res);
    pthread_mutex_lock(&co->mu);
    while (done) {
        batch_item *next = done->next;
        item_unref(done);
        done = next;
    }
    pthread_mutex_unlock(&co->mu);
}

/* A line's item for n_choices choices, holding the runner's reference; NULL when out of
 * memory. */
static batch_item *item_new(const char *custom_id, int32_t n_choices) {
    batch_item *it = calloc(1, sizeof *it);
    if (!it) return NULL;
    it->custom_id = strdup(custom_id);
    it->choices = calloc((size_t)n_choices, sizeof *it->choices);
    it->n_choices = n_choices;
    it->refs = 1; /* the runner's; each admitted choice adds its own */
    for (int32_t i = 0; it->choices && i < n_choices; i++)
        it->choices[i].it = it;
    if (it->custom_id && it->choices) return it;
    item_unref(it);
    return NULL;
}

/* Admits a line's choices (it->n_choices of them, seeds seed + i) and puts it on the runner's
 * list; on a failure the choices admitted are cancelled and the item dropped. Takes co->mu. */
static int admit_line(co_batch *b, batch_item *it, run_batch *rb, int64_t line, const char *rid,
                      int64_t now_s, ts_request *req) {
    coordinator *co = b->co;
    int32_t n_choices = it->n_choices;
    it->runner = b;
    it->rb = rb;
    it->line = line;
    it->created = now_s;
    snprintf(it->request_id, sizeof it->request_id, "%s", rid);
    ts_request rest; /* the samples' copy: admission takes req */
    ts_request_init(&rest);
    int rc = n_choices > 1 && ts_request_copy(&rest, req) ? TS_E_NOMEM : 0;
    pthread_mutex_lock(&co->mu);
    if (!rc)
        rc =
            co_request_admit(co, req, INT64_MAX, &batch_output, &it->choices[0], &it->choices[0].r);
    if (!rc) it->refs++;
    for (int32_t i = 1; !rc && i < n_choices; i++) {
        ts_request sample;
        if (ts_request_copy(&sample, &rest)) {
            rc = ts_error_set(TS_E_NOMEM, "out of memory");
            break;
        }
        sample.params.seed += (uint64_t)i; /* every line has a seed (the runner gives one) */
        rc = co_request_admit_sample(co, it->choices[0].r, &sample, INT64_MAX, &batch_output,
                                     &it->choices[i], &it->choices[i].r);
        ts_request_free(&sample);
        if (!rc) it->refs++;
    }
    if (!rc) {
        it->next = b->items;
        b->items = it;
        rb->n_in_flight++;
    } else {
        item_done(co, it); /* cancels the choices admitted; their releases drop their refs */
        item_unref(it);
    }
    pthread_mutex_unlock(&co->mu);
    ts_request_free(&rest);
    return rc;
}

/* Admits up to *spare pending requests of rb. */
static void fill(co_batch *b, run_batch *rb, int *spare) {
    coordinator *co = b->co;
    while (*spare > 0 && !rb->broken) {
        co_store_pending *p;
        int n;
        int want = *spare < FETCH_MAX ? *spare : FETCH_MAX;
        if (co_store_batch_pending(b->store, rb->id, rb->cursor, want + rb->n_in_flight, &p, &n)) {
            TS_WARN("batch %s: %s", rb->id, ts_error_message());
            return;
        }
        if (n == 0) {
            co_store_pending_free(p, n);
            return;
        }
        int64_t now_s = (int64_t)time(NULL);
        bool urgent = rb->expires_at - now_s < rb->window_s / 10;
        bool stop = false;
        for (int i = 0; i < n && !stop && *spare > 0; i++) {
            pthread_mutex_lock(&co->mu);
            bool busy = in_flight(b, rb, p[i].line);
            pthread_mutex_unlock(&co->mu);
            if (busy) {
                rb->cursor = p[i].line;
                continue;
            }
            ts_json_doc *doc = NULL;
            ts_request req;
            ts_request_init(&req);
            const char *param = NULL;
            int rc = ts_json_parse(p[i].body, strlen(p[i].body), &doc);
            if (!rc)
                rc = co_http_map_request(b->http, rb->chat, ts_json_root(doc), false, &req, &param);
            ts_json_doc_free(doc);
            char rid[TS_REQUEST_ID_BYTES];
            snprintf(rid, sizeof rid, "%s-%lld", rb->id, (long long)p[i].line);
            if (!rc) rc = ts_request_set_id(&req, rid);
            req.params.priority = urgent ? CO_BATCH_PRIORITY_URGENT : CO_BATCH_PRIORITY;
            if (!req.has_seed) { /* a rerun after a crash samples what the first run would */
                req.params.seed = hash_str(rb->input_file_id) * 31 + hash_str(p[i].custom_id);
                req.has_seed = true;
            }
            int32_t n_choices = req.n > 1 ? req.n : 1;
            batch_item *it = rc ? NULL : item_new(p[i].custom_id, n_choices);
            if (!rc && !it) rc = ts_error_set(TS_E_NOMEM, "out of memory");
            if (it) rc = admit_line(b, it, rb, p[i].line, rid, now_s, &req); /* takes it */
            ts_request_free(&req);
            if (!rc) {
                rb->cursor = p[i].line;
                *spare -= n_choices;
                continue;
            }
            if (rc == TS_E_INVALID) { /* the one validation refused it: a failed line */
                ts_buf l = {0};
                char msg[600];
                snprintf(msg, sizeof msg, "%s", ts_error_message());
                int wrc = error_line(rb->id, p[i].line, p[i].custom_id, TS_E_INVALID, msg, param,
                                     rid, &l);
                co_store_result res = {
                    .batch_id = rb->id, .line = p[i].line, .ok = false, .line_json = l.data};
                if (!wrc) wrc = co_store_results(b->store, &res, 1);
                if (wrc) mark_broken(rb, ts_error_message());
                ts_buf_free(&l);
                rb->cursor = p[i].line;
                continue;
            }
            stop = true; /* no group, queue full, out of memory: try again next round */
            *spare = 0;
        }
        co_store_pending_free(p, n);
        if (stop) return;
    }
}

/* Ends a batch (its in-flight requests cancelled) in `final`. */
static void finish(co_batch *b, run_batch *rb, co_batch_status final, const char *code,
                   const char *message) {
    pthread_mutex_lock(&b->co->mu);
    cancel_items(b, rb);
    pthread_mutex_unlock(&b->co->mu);
    collect(b);
    int rc = co_store_batch_finish(b->store, rb->id, final, code, message);
    if (rc) {
        mark_broken(rb, ts_error_message());
        return;
    }
    TS_INFO("batch %s: %s", rb->id, co_batch_status_name(final));
}

/* One round: new and changed batches from the store, their transitions, then filling. */
static void round_once(co_batch *b) {
    collect(b);
    char(*ids)[40] = NULL;
    int n = 0;
    if (co_store_batch_active(b->store, &ids, &n)) {
        TS_WARN("batch runner: %s", ts_error_message());
        return;
    }
    for (run_batch *rb = b->batches; rb; rb = rb->next)
        rb->seen = false;
    int64_t now = (int64_t)time(NULL);
    pthread_mutex_lock(&b->co->mu);
    int spare = co_route_spare(b->co);
    pthread_mutex_unlock(&b->co->mu);
    for (int i = 0; i < n; i++) {
        co_batch_info bi;
        if (co_store_batch_get(b->store, ids[i], &bi)) continue;
        run_batch *rb = find_batch(b, bi.id);
        if (!rb && (rb = calloc(1, sizeof *rb))) {
            snprintf(rb->id, sizeof rb->id, "%s", bi.id);
            rb->chat = !strcmp(bi.endpoint, "/v1/chat/completions");
            snprintf(rb->input_file_id, sizeof rb->input_file_id, "%s", bi.input_file_id);
            rb->created_at = bi.created_at;
            rb->expires_at = bi.expires_at;
            rb->window_s = bi.window_s;
            run_batch **tail = &b->batches; /* oldest first */
            while (*tail)
                tail = &(*tail)->next;
            *tail = rb;
        }
        if (!rb) {
            co_batch_info_free(&bi);
            continue;
        }
        rb->seen = true;
        if (rb->broken) { /* no wrong output: the batch fails with the reason */
            pthread_mutex_lock(&b->co->mu);
            cancel_items(b, rb);
            pthread_mutex_unlock(&b->co->mu);
            if (!co_store_batch_abort(b->store, rb->id, "state_write_failed", rb->broken_why))
                TS_INFO("batch %s: failed (%s)", rb->id, rb->broken_why);
        } else if (bi.status == CO_BATCH_VALIDATING) {
            if (now >= bi.expires_at)
                finish(b, rb, CO_BATCH_EXPIRED, "batch_expired", "the window ended first");
            else if (validate(b, &bi))
                TS_WARN("batch %s: validation: %s", rb->id, ts_error_message());
        } else if (bi.status == CO_BATCH_CANCELLING) {
            finish(b, rb, CO_BATCH_CANCELLED, "batch_cancelled",
                   "the batch was cancelled before this request finished");
        } else if (bi.status == CO_BATCH_FINALIZING) {
            finish(b, rb, CO_BATCH_COMPLETED, "batch_incomplete", "no result");
        } else if (now >= bi.expires_at) {
            finish(b, rb, CO_BATCH_EXPIRED, "batch_expired",
                   "the batch's completion window ended before this request ran");
        } else {
            fill(b, rb, &spare);
            int64_t left = 1;
            if (rb->n_in_flight == 0 && !co_store_batch_n_pending(b->store, rb->id, &left) &&
                left == 0 && !co_store_batch_finalizing(b->store, rb->id))
                finish(b, rb, CO_BATCH_COMPLETED, "batch_incomplete", "no result");
        }
        co_batch_info_free(&bi);
    }
    free(ids);
    /* forget batches that ended */
    for (run_batch **pp = &b->batches; *pp;) {
        run_batch *rb = *pp;
        if (rb->seen || rb->n_in_flight > 0) {
            pp = &rb->next;
            continue;
        }
        *pp = rb->next;
        free(rb);
    }
}

static void *runner_main(void *arg) {
    co_batch *b = arg;
    for (;;) {
        pthread_mutex_lock(&b->mu);
        bool stop = b->stop;
        pthread_mutex_unlock(&b->mu);
        if (stop) break;
        round_once(b);
        pthread_mutex_lock(&b->mu);
        if (!b->stop) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += POLL_MS * 1000000L;
            if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
            pthread_cond_timedwait(&b->cond, &b->mu, &ts);
        }
        pthread_mutex_unlock(&b->mu);
    }
    collect(b); /* what finished is recorded; the rest runs again after a restart */
    pthread_mutex_lock(&b->co->mu);
    cancel_items(b, NULL);
    pthread_mutex_unlock(&b->co->mu);
    return NULL;
}

int co_batch_start(coordinator *co, co_http *http, co_store *store, co_batch **out) {
    *out = NULL;
    co_batch *b = calloc(1, sizeof *b);
    if (!b) return ts_error_set(TS_E_NOMEM, "out of memory");
    b->co = co;
    b->http = http;
    b->store = store;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cond, NULL);
    if (pthread_create(&b->thread, NULL, runner_main, b)) {
        pthread_mutex_destroy(&b->mu);
        pthread_cond_destroy(&b->cond);
        free(b);
        return ts_error_set(TS_E_NOMEM, "cannot start the batch runner's thread");
    }
    *out = b;
    return TS_OK;
}

void co_batch_stop(co_batch *b) {
    if (!b) return;
    pthread_mutex_lock(&b->mu);
    b->stop = true;
    pthread_cond_signal(&b->cond);
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->thread, NULL);
    while (b->batches) {
        run_batch *next = b->batches->next;
        free(b->batches);
        b->batches = next;
    }
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cond);
    free(b);
}
