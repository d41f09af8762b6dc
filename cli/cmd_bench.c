/*
 * cmd_bench.c — `tessera bench --server HOST:PORT`: load a cluster with concurrent streams and
 * measure what its clients see.
 *
 * C client threads share one channel (one HTTP/2 connection; the rpc loop thread does the I/O)
 * and each runs one Generate stream at a time until R requests are done. Every request is a
 * synthetic prompt of exactly L token ids (prompt_ids, so no tokenizer is involved), different
 * per request — the first --shared-prefix ids are common to all, the rest drawn from a seeded
 * generator — so the prefix cache helps only as much as asked. ignore_eos makes every request
 * stream exactly N tokens.
 *
 * It reports time to first token and inter-token latency (p50/p90/p99; a message carrying k
 * tokens counts as k gaps of 1/k its distance from the previous message), requests/s and
 * streamed tokens/s over the wall time of the run, and failed requests by gRPC status. A
 * progress bar goes to stderr when stderr is a terminal.
 *
 * --overhead measures the serving path rather than the model: on a tiny model (the bundled
 * stories260K) a token costs the engine little, so many streams put the weight on the node's
 * scheduling and streaming, the coordinator and the RPC layer. It only changes the defaults
 * (64 streams, 512 requests, 4-token prompts, 120 tokens each: the bundled model's context is
 * 128). Every run reports the client's own CPU time, so a reader can see whether the client was
 * the bottleneck; --coordinator-pid PID (a coordinator on this machine) adds that process's CPU
 * time per streamed token: the coordinator's own cost, apart from the node's.
 *
 * --verify checks that batching does not change results: it first runs every request alone
 * (concurrency 1), then all of them at concurrency C, and compares the token ids request by
 * request (prompt lengths vary between L/2 and L so that prefills of different lengths share
 * steps with decodes). Exit 1 on any difference. Figures are those of the concurrent pass.
 *
 * --long-prompt-every K mixes in long prompts (the disaggregation workload, issue 5): every K-th
 * request has a prompt of --long-prompt-tokens ids (default 1000) and streams --long-max-tokens
 * tokens (default 8); the others are the streams. Inter-token latency is then measured over the
 * streams only (what a long prefill does to running streams), and TTFT is reported for both kinds.
 *
 * --http URL runs the workload a second time over the OpenAI HTTP API (streaming /v1/completions
 * with the same prompt ids, greedy, ignore_eos, the usage in a last chunk), after the gRPC pass
 * and with prompts of its own so that neither pass finds the other's in the prefix cache. Each
 * client thread keeps one HTTP/1.1 connection, as the openai client's pool does. A chunk carries
 * one token; the chunks that arrive in one read count as one gRPC message of that many tokens,
 * so both protocols' latencies are measured alike. Both reports are printed, then HTTP's
 * throughput over gRPC's and what HTTP adds to TTFT, ITL and the coordinator's CPU per token.
 *
 * --rate R opens the loop: requests arrive as a Poisson process of R per second (the gaps drawn
 * from --seed, so every run has the same schedule) instead of each client thread starting its
 * next request when the last one ended; --concurrency is then the most requests in flight. A
 * request's TTFT counts from its scheduled arrival, so time spent waiting for a free client
 * thread is the server's delay as a user would see it; requests that started more than 10 ms
 * late are counted ("late") so a reader can see when --concurrency was too small to keep the
 * loop open. --prompt-base K gives request i synthetic prompt i + K: runs on one arrival
 * schedule (one --seed) whose prompts must not meet in the prefix cache.
 *
 * Exit: 0 when every request succeeded (and --verify found no difference), 1 otherwise, 2 for
 * bad flags or a request the server refused as INVALID_ARGUMENT before the run.
 */
#include "cli/commands.h"
#include "cli/http_client.h"
#include "cli/remote.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/flags.h"
#include "common/json.h"
#include "common/rng.h"
#include "request/request_pb.h"
#include "rpc/rpc_status.h"
#include "tessera/v1/inference.pb-c.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

enum {
    FIRST_ORDINARY_ID = 3, /* 0..2 are unk/bos/eos in llama vocabularies */
    N_STATUS = 17
};

typedef struct bench_opts {
    const char *server, *model_name, *tls_ca;
    const char *http; /* --http URL: the same workload over the OpenAI HTTP API as well */
    int concurrency, requests, prompt_tokens, max_tokens, shared_prefix, timeout_ms;
    int64_t seed;
    int coordinator_pid;
    int long_every, long_tokens, long_max_tokens; /* --long-prompt-every ... */
    double rate;     /* --rate: Poisson arrivals per second; 0: a closed loop */
    int prompt_base; /* --prompt-base: request idx sends synthetic prompt idx + this */
    bool json, verify, overhead;
    int vocab_size;
} bench_opts;

typedef struct request_result {
    int status; /* TS_RPC_* */
    double ttft_ms;
    int n_tokens;
    int32_t *ids; /* with keep_ids */
    char *error;  /* the server's message when status != OK */
} request_result;

typedef struct samples {
    double *v;
    size_t n, cap;
} samples;

typedef struct bench_run {
    const bench_opts *o;
    ts_rpc_channel *ch;
    bool over_http;  /* this pass streams from o->http */
    int prompt_base; /* request idx has the prompt of idx + prompt_base (each pass its own) */
    bool keep_ids;
    atomic_int next, done, running;
    atomic_llong tokens;
    request_result *results; /* one per request */
    int64_t *arrival_ns;     /* --rate: request idx's arrival after the pass's start */
    int64_t t0;              /* the pass's start */
    atomic_int late;         /* --rate: requests started > 10 ms after their arrival */
    pthread_mutex_t mu;      /* guards itl */
    samples itl;
    int rc;                   /* a local failure (out of memory); under mu */
    double cpu_s;             /* client CPU seconds of the last pass */
    double coordinator_cpu_s; /* --coordinator-pid's CPU seconds in it; -1: not measured */
} bench_run;

static int samples_add(samples *s, double v, size_t times) {
    if (s->n + times > s->cap) {
        size_t cap = s->cap ? s->cap : 1024;
        while (cap < s->n + times)
            cap *= 2;
        double *grown = realloc(s->v, cap * sizeof *grown);
        if (!grown) return ts_error_set(TS_E_NOMEM, "out of memory");
        s->v = grown;
        s->cap = cap;
    }
    for (size_t i = 0; i < times; i++)
        s->v[s->n++] = v;
    return 0;
}

static int samples_append(samples *dst, const samples *src) {
    if (src->n == 0) return 0;
    if (samples_add(dst, 0, src->n)) return TS_E_NOMEM; /* makes room */
    memcpy(dst->v + dst->n - src->n, src->v, src->n * sizeof *src->v);
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted values; 0 when there are none. */
/* qsort must not see a NULL array, even an empty one (every request may have failed). */
static void sort_samples(samples *s) {
    if (s->n > 0) qsort(s->v, s->n, sizeof(double), cmp_double);
}

static double percentile(const double *sorted, size_t n, double q) {
    if (n == 0) return 0.0;
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return sorted[i < n ? i : n - 1];
}

static bool is_long(const bench_opts *o, int idx) {
    return o->long_every > 0 && idx % o->long_every == o->long_every - 1;
}

static int prompt_length(const bench_opts *o, int idx) {
    if (is_long(o, idx)) return o->long_tokens;
    if (!o->verify) return o->prompt_tokens;
    int spread = o->prompt_tokens / 2 + 1;
    return o->prompt_tokens - idx % spread;
}

/* The synthetic prompt number idx: the shared prefix from the seed alone, the rest from the seed
 * and idx. */
static void make_prompt(const bench_opts *o, int idx, int32_t *ids, int n) {
    int range = o->vocab_size - FIRST_ORDINARY_ID;
    ts_rng rng;
    ts_rng_seed(&rng, (uint64_t)o->seed);
    int shared = o->shared_prefix < n ? o->shared_prefix : n;
    for (int i = 0; i < shared; i++)
        ids[i] = FIRST_ORDINARY_ID + (int32_t)(ts_rng_next(&rng) % (uint64_t)range);
    ts_rng_seed(&rng, (uint64_t)o->seed * 0x9E3779B97F4A7C15ull + (uint64_t)idx + 1);
    for (int i = shared; i < n; i++)
        ids[i] = FIRST_ORDINARY_ID + (int32_t)(ts_rng_next(&rng) % (uint64_t)range);
}

/* Request idx's prompt (malloc'd, *n ids; NULL when out of memory) and tokens to generate. */
static int32_t *request_prompt(const bench_run *run, int idx, int *n) {
    *n = prompt_length(run->o, idx);
    int32_t *ids = malloc((size_t)*n * sizeof *ids);
    if (ids) make_prompt(run->o, idx + run->prompt_base, ids, *n);
    return ids;
}

static int request_max_tokens(const bench_opts *o, int idx) {
    return is_long(o, idx) ? o->long_max_tokens : o->max_tokens;
}

static int pack_request(const bench_run *run, int idx, ts_buf *bytes) {
    const bench_opts *o = run->o;
    int n;
    int32_t *ids = request_prompt(run, idx, &n);
    if (!ids) return ts_error_set(TS_E_NOMEM, "out of memory");
    ts_request q; /* greedy */
    ts_request_init(&q);
    ts_request_take_ids(&q, ids, n);
    q.model = (char *)o->model_name; /* borrowed: not freed below */
    q.params.max_tokens = request_max_tokens(o, idx);
    q.ignore_eos = true;
    Tessera__V1__GenerateRequest req;
    Tessera__V1__SamplingParams sp;
    ts_request_to_generate(&q, &req, &sp);
    int rc = ts_remote_pack(&req.base, bytes);
    q.model = NULL;
    ts_request_free(&q);
    return rc;
}

/* One request, start to end; fills r and adds its inter-token gaps to itl. Returns a local
 * failure only (out of memory); the call's own status goes to r->status. */
static int run_request(bench_run *run, int idx, int64_t t_open, request_result *r, samples *itl) {
    ts_buf req = {0}, msg = {0};
    int rc = pack_request(run, idx, &req);
    ts_rpc_stream *s = NULL;
    int64_t t_prev = 0;
    if (!rc)
        rc = ts_rpc_stream_open_request(run->ch, TS_REMOTE_GENERATE, req.data, req.len,
                                        run->o->timeout_ms, &s);
    ts_buf_free(&req);
    size_t cap_ids = 0;
    while (!rc && ts_rpc_stream_recv(s, &msg, -1) == 1) {
        int64_t now = ts_now_ns();
        Tessera__V1__GenerateResponse *m =
            tessera__v1__generate_response__unpack(NULL, msg.len, (const uint8_t *)msg.data);
        if (!m) {
            rc = ts_error_set(TS_E_FORMAT, "Generate: a message from the server does not parse");
            break;
        }
        size_t k = m->n_token_ids;
        if (k > 0) {
            if (t_prev == 0)
                r->ttft_ms = ts_ns_to_ms(now - t_open);
            else if (!is_long(run->o, idx)) /* with long prompts: the streams' latency */
                rc = samples_add(itl, ts_ns_to_ms(now - t_prev) / (double)k, k);
            t_prev = now;
            if (!rc && run->keep_ids && (size_t)r->n_tokens + k > cap_ids) {
                cap_ids = ((size_t)r->n_tokens + k) * 2;
                int32_t *grown = realloc(r->ids, cap_ids * sizeof *grown);
                if (!grown)
                    rc = ts_error_set(TS_E_NOMEM, "out of memory");
                else
                    r->ids = grown;
            }
            if (!rc && run->keep_ids)
                memcpy(r->ids + r->n_tokens, m->token_ids, k * sizeof(int32_t));
            r->n_tokens += (int)k;
            atomic_fetch_add(&run->tokens, (long long)k);
        }
        tessera__v1__generate_response__free_unpacked(m, NULL);
    }
    ts_buf_free(&msg);
    if (s) {
        if (rc) ts_rpc_stream_cancel(s);
        ts_rpc_stream_finish(s, 10000);
        const char *message = NULL;
        if (ts_rpc_stream_status(s, &r->status, &message) && r->status != TS_RPC_OK)
            r->error = strdup(message ? message : "");
        ts_rpc_stream_destroy(s);
    }
    return rc;
}

/* ---- the same request over the OpenAI HTTP API ---- */

/* The body of request idx as a streaming /v1/completions call: the same prompt ids, greedy,
 * every token to max_tokens (ignore_eos is the server's extension, as vLLM's), the usage last. */
static int http_body(const bench_run *run, int idx, ts_buf *out) {
    const bench_opts *o = run->o;
    int n;
    int32_t *ids = request_prompt(run, idx, &n);
    if (!ids) return ts_error_set(TS_E_NOMEM, "out of memory");
    ts_json_writer w;
    ts_jw_init(&w, out);
    ts_jw_object_begin(&w);
    if (o->model_name) {
        ts_jw_key(&w, "model");
        ts_jw_string(&w, o->model_name);
    }
    ts_jw_key(&w, "prompt");
    ts_jw_array_begin(&w);
    for (int i = 0; i < n; i++)
        ts_jw_int(&w, ids[i]);
    ts_jw_array_end(&w);
    free(ids);
    ts_jw_key(&w, "max_tokens");
    ts_jw_int(&w, request_max_tokens(o, idx));
    ts_jw_key(&w, "temperature");
    ts_jw_int(&w, 0);
    ts_jw_key(&w, "ignore_eos");
    ts_jw_bool(&w, true);
    ts_jw_key(&w, "stream");
    ts_jw_bool(&w, true);
    ts_jw_key(&w, "stream_options");
    ts_jw_object_begin(&w);
    ts_jw_key(&w, "include_usage");
    ts_jw_bool(&w, true);
    ts_jw_object_end(&w);
    ts_jw_object_end(&w);
    return ts_jw_finish(&w);
}

/* One HTTP stream's progress. Each chunk with a choice carries one token (the server sends a
 * chunk per token with text; a token whose text it holds back, such as part of a UTF-8
 * character, comes with the next). The chunks of one read count as the tokens of one gRPC
 * message: k gaps of 1/k the distance from the previous read. */
typedef struct http_stream {
    bench_run *run;
    int idx;
    request_result *r;
    samples *itl;
    int64_t t_open, t_prev;
    int pending;      /* token chunks of the current read */
    int usage_tokens; /* the final usage's completion_tokens; -1: none came */
    bool done;        /* data: [DONE] */
    int error;        /* TS_E code of an error event, 0 when none */
} http_stream;

static int stream_event(void *arg, const char *data, size_t n) {
    http_stream *s = arg;
    if (!data) { /* every chunk of this read is in: time them */
        if (!s->pending) return TS_OK;
        int64_t now = ts_now_ns();
        int rc = 0;
        if (s->t_prev == 0)
            s->r->ttft_ms = ts_ns_to_ms(now - s->t_open);
        else if (!is_long(s->run->o, s->idx))
            rc = samples_add(s->itl, ts_ns_to_ms(now - s->t_prev) / s->pending, (size_t)s->pending);
        s->t_prev = now;
        s->r->n_tokens += s->pending;
        atomic_fetch_add(&s->run->tokens, (long long)s->pending);
        s->pending = 0;
        return rc;
    }
    if (n == 6 && !memcmp(data, "[DONE]", 6)) {
        s->done = true;
        return TS_OK;
    }
    ts_json_doc *doc = NULL;
    if (ts_json_parse(data, n, &doc))
        return ts_error_set(TS_E_FORMAT, "an event of the stream is not JSON: %.100s", data);
    const ts_json *root = ts_json_root(doc), *err = ts_json_get(root, "error");
    const ts_json *choices = ts_json_get(root, "choices"), *usage = ts_json_get(root, "usage");
    int64_t tokens;
    if (err) {
        const char *type = NULL, *code = NULL, *message = NULL;
        size_t len;
        (void)ts_json_get_string(err, "type", &type, &len);
        (void)ts_json_get_string(err, "code", &code, &len);
        (void)ts_json_get_string(err, "message", &message, &len);
        s->error = ts_http_error_code(200, type ? type : "server_error", code);
        free(s->r->error);
        s->r->error = strdup(message ? message : "(an error event without a message)");
    } else if (choices && choices->type == TS_JSON_ARRAY && choices->length > 0) {
        s->pending++;
    }
    if (usage && !ts_json_get_int(usage, "completion_tokens", &tokens))
        s->usage_tokens = (int)tokens;
    ts_json_doc_free(doc);
    return TS_OK;
}

/* The message of an HTTP error answer's {"error": {...}}, its type and code; the body itself
 * when it is not one. */
static void http_error(int status, const ts_buf *body, request_result *r) {
    ts_json_doc *doc = NULL;
    const char *type = NULL, *code = NULL, *message = NULL;
    size_t len;
    if (!ts_json_parse(body->data ? body->data : "", body->len, &doc)) {
        const ts_json *err = ts_json_get(ts_json_root(doc), "error");
        (void)ts_json_get_string(err, "type", &type, &len);
        (void)ts_json_get_string(err, "code", &code, &len);
        (void)ts_json_get_string(err, "message", &message, &len);
    }
    r->status = ts_rpc_status_from_error(ts_http_error_code(status, type, code));
    char text[400];
    snprintf(text, sizeof text, "HTTP %d: %s", status,
             message      ? message
             : body->data ? body->data
                          : "");
    r->error = strdup(text);
    ts_json_doc_free(doc);
}

/* run_request over HTTP on the worker's kept connection. A failure of the call (cannot connect,
 * a broken stream, the deadline) is the request's status, as a gRPC call's would be. */
static int run_http_request(bench_run *run, ts_http_conn *conn, int idx, int64_t t_open,
                            request_result *r, samples *itl) {
    ts_buf body = {0}, answer = {0};
    int rc = http_body(run, idx, &body);
    http_stream s = {.run = run, .idx = idx, .r = r, .itl = itl, .usage_tokens = -1};
    s.t_open = t_open;
    int64_t deadline = run->o->timeout_ms ? s.t_open + (int64_t)run->o->timeout_ms * 1000000 : 0;
    int status = 0;
    if (!rc)
        rc = ts_http_request(conn, "POST", "/v1/completions", "application/json", body.data,
                             body.len, deadline, stream_event, &s, &status, &answer);
    ts_buf_free(&body);
    if (rc == TS_E_NOMEM) {
        ts_buf_free(&answer);
        return rc;
    }
    r->status = TS_RPC_OK;
    if (rc) {
        r->status = ts_rpc_status_from_error(rc);
        r->error = strdup(ts_error_message());
    } else if (status / 100 != 2) {
        http_error(status, &answer, r);
    } else if (s.error) {
        r->status = ts_rpc_status_from_error(s.error);
    } else if (!s.done) {
        r->status = TS_RPC_INTERNAL;
        r->error = strdup("the stream ended without data: [DONE]");
    } else if (s.usage_tokens >= 0 && s.usage_tokens != r->n_tokens) {
        /* Chunks and tokens differ (held-back text): count what the server generated. */
        atomic_fetch_add(&run->tokens, (long long)(s.usage_tokens - r->n_tokens));
        r->n_tokens = s.usage_tokens;
    }
    ts_buf_free(&answer);
    return TS_OK;
}

static void *worker(void *arg) {
    bench_run *run = arg;
    samples itl = {0};
    ts_http_conn *conn = NULL; /* over HTTP: one kept connection per client thread */
    int rc = run->over_http ? ts_http_conn_new(run->o->http, 600, &conn) : 0;
    int idx;
    while (!rc && (idx = atomic_fetch_add(&run->next, 1)) < run->o->requests) {
        int64_t t_open = ts_now_ns();
        if (run->arrival_ns) { /* an open loop: the request starts at its arrival */
            int64_t arrival = run->t0 + run->arrival_ns[idx];
            if (arrival > t_open) ts_sleep_ms((int)((arrival - t_open + 999999) / 1000000));
            if (ts_now_ns() - arrival > 10 * 1000000LL) atomic_fetch_add(&run->late, 1);
            t_open = arrival;
        }
        rc = run->over_http ? run_http_request(run, conn, idx, t_open, &run->results[idx], &itl)
                            : run_request(run, idx, t_open, &run->results[idx], &itl);
        atomic_fetch_add(&run->done, 1);
    }
    ts_http_conn_free(conn);
    pthread_mutex_lock(&run->mu);
    if (!rc) rc = samples_append(&run->itl, &itl);
    if (rc && !run->rc) run->rc = rc;
    pthread_mutex_unlock(&run->mu);
    free(itl.v);
    atomic_fetch_sub(&run->running, 1);
    return NULL;
}

static void progress(const bench_run *run, int64_t t0, bool final) {
    int done = atomic_load(&run->done), total = run->o->requests;
    long long tokens = atomic_load(&run->tokens);
    double s = ts_ns_to_s(ts_now_ns() - t0);
    int width = 30, filled = total ? done * width / total : width;
    char bar[32];
    for (int i = 0; i < width; i++)
        bar[i] = i < filled ? '#' : '-';
    bar[width] = 0;
    fprintf(stderr, "\r[%s] %d/%d requests  %lld tokens  %.0f tok/s ", bar, done, total, tokens,
            s > 0 ? (double)tokens / s : 0.0);
    if (final) fputc('\n', stderr);
    fflush(stderr);
}

/* User + system CPU seconds of this process so far. */
static double process_cpu_s(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru)) return 0.0;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
           ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
}

/* User + system CPU seconds of another process on this machine (/proc/PID/stat fields 14 and
 * 15); -1 when it cannot be read. */
static double other_cpu_s(int pid) {
    char path[64], line[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1.0;
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = 0;
    const char *p = strrchr(line, ')'); /* the command name may hold spaces */
    unsigned long long utime = 0, stime = 0;
    if (!p ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        return -1.0;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* Runs every request at `concurrency`; *wall_s is the run's wall time, run->cpu_s the client's
 * CPU time in it. */
static int run_pass(bench_run *run, int concurrency, bool show_progress, double *wall_s) {
    int n_threads = concurrency < run->o->requests ? concurrency : run->o->requests;
    pthread_t *threads = calloc((size_t)n_threads, sizeof *threads);
    if (!threads) return ts_error_set(TS_E_NOMEM, "out of memory");
    atomic_store(&run->next, 0);
    atomic_store(&run->done, 0);
    atomic_store(&run->tokens, 0);
    atomic_store(&run->late, 0);
    int64_t t0 = ts_now_ns();
    run->t0 = t0;
    double cpu0 = process_cpu_s();
    double server0 = run->o->coordinator_pid ? other_cpu_s(run->o->coordinator_pid) : -1.0;
    int started = 0, rc = 0;
    atomic_store(&run->running, n_threads);
    for (; started < n_threads; started++)
        if (pthread_create(&threads[started], NULL, worker, run)) {
            rc = ts_error_set(TS_E_NOMEM, "cannot start client thread %d", started);
            atomic_store(&run->next, run->o->requests); /* the others stop after their request */
            break;
        }
    while (show_progress && !rc && atomic_load(&run->running) > 0) {
        progress(run, t0, false);
        ts_sleep_ms(100);
    }
    for (int i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    *wall_s = ts_ns_to_s(ts_now_ns() - t0);
    run->cpu_s = process_cpu_s() - cpu0;
    double server1 = server0 >= 0 ? other_cpu_s(run->o->coordinator_pid) : -1.0;
    run->coordinator_cpu_s = server1 >= 0 ? server1 - server0 : -1.0;
    if (show_progress) progress(run, t0, true);
    free(threads);
    return rc ? rc : run->rc;
}

static void clear_results(bench_run *run) {
    for (int i = 0; i < run->o->requests; i++) {
        free(run->results[i].ids);
        free(run->results[i].error);
        memset(&run->results[i], 0, sizeof run->results[i]);
    }
    run->itl.n = 0;
}

/* Frees a pass's results kept aside (run->results stays). */
static void free_results(bench_run *run, request_result *results) {
    if (!results) return;
    request_result *current = run->results;
    run->results = results;
    clear_results(run);
    free(results);
    run->results = current;
}

typedef struct report {
    int ok, failed;
    int by_status[N_STATUS];
    const char *first_error[N_STATUS];
    long long tokens;
    double wall_s, ttft[3], itl[3], cpu_s, coordinator_cpu_s;
    double ttft_long[3]; /* --long-prompt-every: the long prompts' TTFT (ttft: the streams') */
    int late;            /* --rate: requests that started late */
} report;

static int summarize(bench_run *run, double wall_s, report *rep) {
    const double q[3] = {0.50, 0.90, 0.99};
    memset(rep, 0, sizeof *rep);
    rep->wall_s = wall_s;
    samples ttft = {0}, ttft_long = {0};
    for (int i = 0; i < run->o->requests; i++) {
        const request_result *r = &run->results[i];
        rep->tokens += r->n_tokens;
        int st = r->status >= 0 && r->status < N_STATUS ? r->status : TS_RPC_UNKNOWN;
        if (st != TS_RPC_OK) {
            rep->failed++;
            if (!rep->by_status[st]++) rep->first_error[st] = r->error;
            continue;
        }
        rep->ok++;
        if (samples_add(is_long(run->o, i) ? &ttft_long : &ttft, r->ttft_ms, 1)) {
            free(ttft.v);
            free(ttft_long.v);
            return TS_E_NOMEM;
        }
    }
    sort_samples(&ttft);
    sort_samples(&ttft_long);
    sort_samples(&run->itl);
    for (int i = 0; i < 3; i++) {
        rep->ttft[i] = percentile(ttft.v, ttft.n, q[i]);
        rep->itl[i] = percentile(run->itl.v, run->itl.n, q[i]);
        rep->ttft_long[i] = percentile(ttft_long.v, ttft_long.n, q[i]);
    }
    free(ttft.v);
    free(ttft_long.v);
    rep->cpu_s = run->cpu_s;
    rep->coordinator_cpu_s = run->coordinator_cpu_s;
    rep->late = atomic_load(&run->late);
    return 0;
}

static void write_percentiles(ts_json_writer *w, const char *key, const double p[3]) {
    static const char *names[3] = {"p50", "p90", "p99"};
    ts_jw_key(w, key);
    ts_jw_object_begin(w);
    for (int i = 0; i < 3; i++) {
        ts_jw_key(w, names[i]);
        ts_jw_double(w, p[i]);
    }
    ts_jw_object_end(w);
}

/* One pass's figures as a JSON object. */
static void write_report(ts_json_writer *w, const bench_opts *o, const char *server,
                         const report *rep, int mismatches) {
    ts_jw_object_begin(w);
    ts_jw_key(w, "server");
    ts_jw_string(w, server);
    const char *ints[] = {"concurrency",   "requests", "prompt_tokens", "max_tokens",
                          "shared_prefix", "ok",       "failed"};
    const int64_t vals[] = {o->concurrency,   o->requests, o->prompt_tokens, o->max_tokens,
                            o->shared_prefix, rep->ok,     rep->failed};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        ts_jw_key(w, ints[i]);
        ts_jw_int(w, vals[i]);
    }
    ts_jw_key(w, "tokens");
    ts_jw_int(w, rep->tokens);
    ts_jw_key(w, "wall_s");
    ts_jw_double(w, rep->wall_s);
    ts_jw_key(w, "requests_per_s");
    ts_jw_double(w, rep->wall_s > 0 ? rep->ok / rep->wall_s : 0);
    ts_jw_key(w, "tokens_per_s");
    ts_jw_double(w, rep->wall_s > 0 ? (double)rep->tokens / rep->wall_s : 0);
    write_percentiles(w, "ttft_ms", rep->ttft);
    write_percentiles(w, "itl_ms", rep->itl);
    if (o->long_every > 0) {
        const char *keys[] = {"long_prompt_every", "long_prompt_tokens", "long_max_tokens"};
        const int64_t lv[] = {o->long_every, o->long_tokens, o->long_max_tokens};
        for (int i = 0; i < 3; i++) {
            ts_jw_key(w, keys[i]);
            ts_jw_int(w, lv[i]);
        }
        write_percentiles(w, "long_ttft_ms", rep->ttft_long);
    }
    if (o->rate > 0) {
        ts_jw_key(w, "rate");
        ts_jw_double(w, o->rate);
        ts_jw_key(w, "late");
        ts_jw_int(w, rep->late);
    }
    ts_jw_key(w, "client_cpu_s");
    ts_jw_double(w, rep->cpu_s);
    if (rep->coordinator_cpu_s >= 0) {
        ts_jw_key(w, "coordinator_cpu_s");
        ts_jw_double(w, rep->coordinator_cpu_s);
    }
    ts_jw_key(w, "errors");
    ts_jw_object_begin(w);
    for (int st = 0; st < N_STATUS; st++)
        if (rep->by_status[st]) {
            ts_jw_key(w, ts_rpc_status_name(st));
            ts_jw_int(w, rep->by_status[st]);
        }
    ts_jw_object_end(w);
    if (o->verify) {
        ts_jw_key(w, "verify_mismatches");
        ts_jw_int(w, mismatches);
    }
    ts_jw_object_end(w);
}

/* The ratios a reader of --http wants: HTTP's throughput over gRPC's, and what HTTP adds to the
 * latencies (ms) and to the coordinator's CPU per token (us). */
typedef struct comparison {
    double tokens_per_s_ratio, ttft_p50_added_ms, ttft_p99_added_ms, itl_p50_added_ms,
        itl_p99_added_ms, coordinator_us_per_token_added;
    bool has_coordinator;
} comparison;

static double tokens_per_s(const report *r) {
    return r->wall_s > 0 ? (double)r->tokens / r->wall_s : 0.0;
}

static comparison compare_reports(const report *grpc, const report *http) {
    comparison c = {
        .tokens_per_s_ratio = tokens_per_s(grpc) > 0 ? tokens_per_s(http) / tokens_per_s(grpc) : 0,
        .ttft_p50_added_ms = http->ttft[0] - grpc->ttft[0],
        .ttft_p99_added_ms = http->ttft[2] - grpc->ttft[2],
        .itl_p50_added_ms = http->itl[0] - grpc->itl[0],
        .itl_p99_added_ms = http->itl[2] - grpc->itl[2],
    };
    if (grpc->coordinator_cpu_s >= 0 && http->coordinator_cpu_s >= 0 && grpc->tokens &&
        http->tokens) {
        c.has_coordinator = true;
        c.coordinator_us_per_token_added = http->coordinator_cpu_s * 1e6 / (double)http->tokens -
                                           grpc->coordinator_cpu_s * 1e6 / (double)grpc->tokens;
    }
    return c;
}

/* One JSON object: the pass's figures, or with --http {"grpc": {...}, "http": {...},
 * "http_vs_grpc": {...}}. */
static int print_json(const bench_opts *o, const report *grpc, const report *http, int mismatches) {
    ts_buf out = {0};
    ts_json_writer w;
    ts_jw_init(&w, &out);
    if (!http) {
        write_report(&w, o, o->server, grpc, mismatches);
    } else {
        comparison c = compare_reports(grpc, http);
        ts_jw_object_begin(&w);
        ts_jw_key(&w, "grpc");
        write_report(&w, o, o->server, grpc, mismatches);
        ts_jw_key(&w, "http");
        write_report(&w, o, o->http, http, mismatches);
        ts_jw_key(&w, "http_vs_grpc");
        ts_jw_object_begin(&w);
        const char *keys[] = {"tokens_per_s_ratio", "ttft_p50_added_ms", "ttft_p99_added_ms",
                              "itl_p50_added_ms", "itl_p99_added_ms"};
        const double vals[] = {c.tokens_per_s_ratio, c.ttft_p50_added_ms, c.ttft_p99_added_ms,
                               c.itl_p50_added_ms, c.itl_p99_added_ms};
        for (int i = 0; i < 5; i++) {
            ts_jw_key(&w, keys[i]);
            ts_jw_double(&w, vals[i]);
        }
        if (c.has_coordinator) {
            ts_jw_key(&w, "coordinator_us_per_token_added");
            ts_jw_double(&w, c.coordinator_us_per_token_added);
        }
        ts_jw_object_end(&w);
        ts_jw_object_end(&w);
    }
    int rc = ts_jw_finish(&w);
    if (!rc) printf("%s\n", out.data);
    ts_buf_free(&out);
    return rc;
}

static void print_text(const bench_opts *o, const char *server, const report *rep) {
    printf("tessera bench: %s, concurrency %d, %d requests, prompt %d tokens%s, %d tokens each\n",
           server, o->concurrency, o->requests, o->prompt_tokens,
           o->verify ? " (L/2..L with --verify)" : "", o->max_tokens);
    printf("  requests   %d ok, %d failed in %.2f s  (%.2f req/s)\n", rep->ok, rep->failed,
           rep->wall_s, rep->wall_s > 0 ? rep->ok / rep->wall_s : 0.0);
    printf("  tokens     %lld streamed  (%.1f tok/s)\n", rep->tokens,
           rep->wall_s > 0 ? (double)rep->tokens / rep->wall_s : 0.0);
    printf("  TTFT ms    p50 %.2f  p90 %.2f  p99 %.2f\n", rep->ttft[0], rep->ttft[1], rep->ttft[2]);
    printf("  ITL ms     p50 %.3f  p90 %.3f  p99 %.3f\n", rep->itl[0], rep->itl[1], rep->itl[2]);
    if (o->long_every > 0)
        printf("  long prompts: every %d requests, %d tokens, %d generated; their TTFT ms p50 %.2f  "
               "p90 %.2f  p99 %.2f (TTFT and ITL above: the other requests)\n",
               o->long_every, o->long_tokens, o->long_max_tokens, rep->ttft_long[0],
               rep->ttft_long[1], rep->ttft_long[2]);
    if (o->rate > 0)
        printf("  arrivals   Poisson, %.2f requests/s offered; %d started > 10 ms late%s\n",
               o->rate, rep->late,
               rep->late ? " (all client threads busy: raise --concurrency)" : "");
    printf("  client CPU %.2f s (%.0f%% of one core; %.2f us per token)\n", rep->cpu_s,
           rep->wall_s > 0 ? 100.0 * rep->cpu_s / rep->wall_s : 0.0,
           rep->tokens ? rep->cpu_s * 1e6 / (double)rep->tokens : 0.0);
    if (rep->coordinator_cpu_s > 0 && rep->tokens)
        printf("  coordinator CPU %.2f s (%.0f%% of one core; %.2f us per token: one core would "
               "stream %.0f tok/s)\n",
               rep->coordinator_cpu_s,
               rep->wall_s > 0 ? 100.0 * rep->coordinator_cpu_s / rep->wall_s : 0.0,
               rep->coordinator_cpu_s * 1e6 / (double)rep->tokens,
               (double)rep->tokens / rep->coordinator_cpu_s);
    for (int st = 0; st < N_STATUS; st++)
        if (rep->by_status[st])
            printf("  error      %s x%d: %s\n", ts_rpc_status_name(st), rep->by_status[st],
                   rep->first_error[st] ? rep->first_error[st] : "");
}

/* Compares the ids of the concurrent pass with those kept from the lone pass. */
static int compare(const bench_run *run, const request_result *alone) {
    int mismatches = 0;
    for (int i = 0; i < run->o->requests; i++) {
        const request_result *a = &alone[i], *b = &run->results[i];
        if (a->status != TS_RPC_OK || b->status != TS_RPC_OK) continue; /* counted as failures */
        int pos = 0;
        while (pos < a->n_tokens && pos < b->n_tokens && a->ids[pos] == b->ids[pos])
            pos++;
        if (pos == a->n_tokens && pos == b->n_tokens) continue;
        if (mismatches++ < 8)
            fprintf(stderr,
                    "tessera bench: verify: request %d (prompt %d tokens) differs at token %d: "
                    "%d alone, %d concurrently (%d vs %d tokens)\n",
                    i, prompt_length(run->o, i), pos, pos < a->n_tokens ? a->ids[pos] : -1,
                    pos < b->n_tokens ? b->ids[pos] : -1, a->n_tokens, b->n_tokens);
    }
    return mismatches;
}

/* --rate: the arrival time of every request after the pass's start, a Poisson process (gaps
 * exponential with mean 1/rate) drawn from the seed, so runs and passes share one schedule. */
static int poisson_arrivals(const bench_opts *o, int64_t **out) {
    int64_t *at = malloc((size_t)o->requests * sizeof *at);
    if (!at) return ts_error_set(TS_E_NOMEM, "out of memory");
    ts_rng rng;
    ts_rng_seed(&rng, (uint64_t)o->seed ^ 0xA5A5A5A5u);
    double t = 0;
    for (int i = 0; i < o->requests; i++) {
        at[i] = (int64_t)(t * 1e9);
        t += -log(1.0 - (double)ts_rng_uniform(&rng)) / o->rate;
    }
    *out = at;
    return 0;
}

static int bench(bench_opts *o) {
    ts_rpc_channel *ch = NULL;
    int rc = ts_remote_connect(o->server, o->tls_ca, &ch);
    ts_remote_model model = {0};
    if (!rc) rc = ts_remote_model_info(ch, o->model_name, 30000, &model);
    if (!rc && model.vocab_size <= FIRST_ORDINARY_ID)
        rc = ts_error_set(TS_E_INVALID, "the server reports vocabulary size %d", model.vocab_size);
    if (!rc && model.context_length > 0 && o->prompt_tokens + o->max_tokens > model.context_length)
        rc = ts_error_set(TS_E_INVALID,
                          "--prompt-tokens %d + --max-tokens %d exceed the model's context (%d)",
                          o->prompt_tokens, o->max_tokens, model.context_length);
    if (!rc && o->long_every > 0 && model.context_length > 0 &&
        o->long_tokens + o->long_max_tokens > model.context_length)
        rc = ts_error_set(TS_E_INVALID,
                          "--long-prompt-tokens %d + --long-max-tokens %d exceed the model's "
                          "context (%d)",
                          o->long_tokens, o->long_max_tokens, model.context_length);
    if (rc) {
        fprintf(stderr, "tessera bench: %s\n", ts_error_message());
        ts_rpc_channel_destroy(ch);
        return ts_remote_exit_code(rc);
    }
    o->vocab_size = model.vocab_size;
    bench_run run = {.o = o, .ch = ch, .keep_ids = o->verify, .prompt_base = o->prompt_base};
    pthread_mutex_init(&run.mu, NULL);
    run.results = calloc((size_t)o->requests, sizeof *run.results);
    if (o->rate > 0) rc = poisson_arrivals(o, &run.arrival_ns);
    request_result *alone = NULL;
    bool show_progress = isatty(STDERR_FILENO);
    double wall_s = 0;
    if (!rc && !run.results) rc = ts_error_set(TS_E_NOMEM, "out of memory");
    if (!rc && o->verify) {
        if (show_progress) fprintf(stderr, "each request alone:\n");
        rc = run_pass(&run, 1, show_progress, &wall_s);
        alone = run.results;
        run.results = calloc((size_t)o->requests, sizeof *run.results);
        if (!rc && !run.results) rc = ts_error_set(TS_E_NOMEM, "out of memory");
        if (!rc) run.itl.n = 0;
        if (!rc && show_progress) fprintf(stderr, "all at concurrency %d:\n", o->concurrency);
    }
    if (!rc && o->http && show_progress) fprintf(stderr, "over gRPC (%s):\n", o->server);
    if (!rc) rc = run_pass(&run, o->concurrency, show_progress, &wall_s);
    report rep, rep_http;
    int mismatches = 0;
    if (!rc) rc = summarize(&run, wall_s, &rep);
    if (!rc && alone) {
        mismatches = compare(&run, alone);
        for (int i = 0; i < o->requests; i++)
            if (alone[i].status != TS_RPC_OK) {
                int st = alone[i].status < N_STATUS ? alone[i].status : TS_RPC_UNKNOWN;
                rep.failed++;
                if (!rep.by_status[st]++) rep.first_error[st] = alone[i].error;
            }
    }
    /* --http: the same workload over the OpenAI HTTP API, with prompts of its own (the prefix
     * cache would otherwise serve it what the gRPC pass computed). */
    request_result *grpc_results = NULL;
    if (!rc && o->http) {
        grpc_results = run.results; /* rep points into them */
        run.results = calloc((size_t)o->requests, sizeof *run.results);
        if (!run.results) rc = ts_error_set(TS_E_NOMEM, "out of memory");
        run.over_http = true;
        run.prompt_base = o->prompt_base + o->requests;
        run.itl.n = 0;
        if (!rc && show_progress) fprintf(stderr, "over HTTP (%s):\n", o->http);
        if (!rc) rc = run_pass(&run, o->concurrency, show_progress, &wall_s);
        if (!rc) rc = summarize(&run, wall_s, &rep_http);
    }
    if (!rc && o->json) {
        rc = print_json(o, &rep, o->http ? &rep_http : NULL, mismatches);
    } else if (!rc) {
        print_text(o, o->server, &rep);
        if (o->http) print_text(o, o->http, &rep_http);
        if (o->http && rep.ok && rep_http.ok) { /* (a pass where nothing ran compares to nothing) */
            comparison c = compare_reports(&rep, &rep_http);
            printf("HTTP vs gRPC: %.3fx the tokens/s; adds TTFT p50 %+.2f ms, p99 %+.2f ms; ITL "
                   "p50 %+.3f ms, p99 %+.3f ms",
                   c.tokens_per_s_ratio, c.ttft_p50_added_ms, c.ttft_p99_added_ms,
                   c.itl_p50_added_ms, c.itl_p99_added_ms);
            if (c.has_coordinator)
                printf("; coordinator CPU %+.2f us per token", c.coordinator_us_per_token_added);
            printf("\n");
        }
    }
    if (!rc && o->verify && !o->json)
        printf("  verify     %d of %d requests identical alone and at concurrency %d\n",
               o->requests - mismatches - rep.failed, o->requests, o->concurrency);
    int exit_code = TS_EXIT_OK;
    if (rc)
        exit_code = ts_cli_fail("bench", TS_EXIT_FAILURE);
    else if (rep.failed || mismatches || (o->http && rep_http.failed))
        exit_code = TS_EXIT_FAILURE;
    free_results(&run, grpc_results);
    free_results(&run, alone);
    if (run.results) clear_results(&run);
    free(run.results);
    free(run.arrival_ns);
    free(run.itl.v);
    pthread_mutex_destroy(&run.mu);
    ts_rpc_channel_destroy(ch);
    return exit_code;
}

int ts_cmd_bench(int argc, char **argv) {
    bench_opts o = {.seed = 1};
    ts_flag flags[] = {
        {"server", 0, TS_FLAG_STRING, &o.server, "HOST:PORT of the cluster (tessera up)", 0, 0},
        {"tls-ca", 0, TS_FLAG_STRING, &o.tls_ca, TS_REMOTE_TLS_CA_HELP, 0, 0},
        {"http", 0, TS_FLAG_STRING, &o.http,
         "http://HOST:PORT of the cluster's OpenAI API: run the same workload over it too, after "
         "gRPC, and compare",
         0, 0},
        {"model-name", 0, TS_FLAG_STRING, &o.model_name, "served model; default: the server's", 0,
         0},
        {"concurrency", 'c', TS_FLAG_INT, &o.concurrency,
         "streams at once; 0 = 1 (64 with --overhead)", 0, 4096},
        {"requests", 'r', TS_FLAG_INT, &o.requests,
         "requests in all; 0 = 4 x concurrency (512 with --overhead)", 0, 1 << 24},
        {"prompt-tokens", 'l', TS_FLAG_INT, &o.prompt_tokens,
         "prompt length in tokens; 0 = 32 (4 with --overhead)", 0, 1 << 24},
        {"max-tokens", 'n', TS_FLAG_INT, &o.max_tokens,
         "tokens generated per request; 0 = 64 (120 with --overhead)", 0, 1 << 24},
        {"shared-prefix", 0, TS_FLAG_INT, &o.shared_prefix,
         "prompt tokens common to every request (the prefix cache may reuse them)", 0, 1 << 24},
        {"seed", 0, TS_FLAG_INT64, &o.seed, "seed of the synthetic prompts", 0, 0},
        {"timeout-ms", 0, TS_FLAG_INT, &o.timeout_ms, "deadline per request; 0 = none", 0, 1 << 30},
        {"overhead", 0, TS_FLAG_BOOL, &o.overhead,
         "measure the serving path: many streams of a tiny model (see the defaults)", 0, 0},
        {"verify", 0, TS_FLAG_BOOL, &o.verify,
         "run every request alone first, then check the concurrent run gives the same tokens", 0,
         0},
        {"coordinator-pid", 0, TS_FLAG_INT, &o.coordinator_pid,
         "also report the CPU time of this local process (the coordinator) per streamed token", 0,
         1 << 30},
        {"json", 0, TS_FLAG_BOOL, &o.json, "print one JSON object", 0, 0},
        {"long-prompt-every", 0, TS_FLAG_INT, &o.long_every,
         "every K-th request has a long prompt (0: none); latency is then the others'", 0, 1 << 24},
        {"long-prompt-tokens", 0, TS_FLAG_INT, &o.long_tokens,
         "length of the long prompts; 0 = 1000", 0, 1 << 24},
        {"long-max-tokens", 0, TS_FLAG_INT, &o.long_max_tokens,
         "tokens generated for a long prompt; 0 = 8", 0, 1 << 24},
        {"prompt-base", 0, TS_FLAG_INT, &o.prompt_base,
         "request i sends synthetic prompt i + K (runs of one --seed that share no prompt)", 0,
         1 << 30},
        {"rate", 0, TS_FLAG_DOUBLE, &o.rate,
         "an open loop: Poisson arrivals of R requests per second (0: each client thread starts "
         "its next request when the last ended); --concurrency = the most in flight",
         0, 1e6},
    };
    ts_flags_result res = {NULL, 0, 0};
    int rc = ts_flags_parse("tessera bench --server HOST:PORT [--concurrency C] [--requests R] "
                            "[--prompt-tokens L] [--max-tokens N] [flags]",
                            flags, (int)(sizeof flags / sizeof flags[0]), argc, argv, 1, &res);
    if (rc == TS_FLAGS_HELP) return TS_EXIT_OK;
    if (rc) return ts_cli_fail("bench", TS_EXIT_USAGE);
    if (!o.server) {
        ts_error_set(TS_E_INVALID, "missing --server HOST:PORT");
        return ts_cli_fail("bench", TS_EXIT_USAGE);
    }
    if (o.http && o.verify) {
        ts_error_set(TS_E_INVALID, "--verify compares token ids, which HTTP streams do not carry: "
                                   "use one or the other");
        return ts_cli_fail("bench", TS_EXIT_USAGE);
    }
    ts_http_conn *probe = NULL; /* the URL's form, before any request runs */
    if (o.http && ts_http_conn_new(o.http, 0, &probe)) return ts_cli_fail("bench", TS_EXIT_USAGE);
    ts_http_conn_free(probe);
    if (!o.concurrency) o.concurrency = o.overhead ? 64 : 1;
    if (!o.requests) o.requests = o.overhead ? 512 : 4 * o.concurrency;
    if (!o.prompt_tokens) o.prompt_tokens = o.overhead ? 4 : 32;
    if (!o.max_tokens) o.max_tokens = o.overhead ? 120 : 64;
    if (!o.long_tokens) o.long_tokens = 1000;
    if (!o.long_max_tokens) o.long_max_tokens = 8;
    return bench(&o);
}
