/*
 * metrics.c — the coordinator's Prometheus metrics (see metrics.h for what is counted and how).
 *
 * Storage: a list of series, one per (group, priority class), each with its counters and four
 * histograms; a list of per-group counters (preemptions). There are few groups, so lookups walk
 * the list. Buckets are vLLM's, with finer low buckets for the inter-token and queue times
 * (a CPU group decodes a token in milliseconds).
 */
#include "coordinator/metrics.h"

#include "common/error.h"
#include "coordinator/coordinator.h"

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { HIST_MAX_BUCKETS = 32, CLASS_INTERACTIVE = 0, CLASS_BATCH = 1 };

static const char *const class_names[] = {"interactive", "batch"};

static const double ttft_bounds[] = {0.001, 0.005, 0.01, 0.02,  0.04,  0.06,  0.08, 0.1,
                                     0.25,  0.5,   0.75, 1.0,   2.5,   5.0,   7.5,  10.0,
                                     20.0,  40.0,  80.0, 160.0, 640.0, 2560.0};
static const double itl_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1,
                                    0.15,  0.2,    0.3,   0.4,  0.5,   0.75, 1.0,   2.5,
                                    5.0,   7.5,    10.0,  20.0, 40.0,  80.0};
static const double e2e_bounds[] = {0.3,  0.5,   0.8,   1.0,   1.5,   2.0,    2.5,
                                    5.0,  10.0,  15.0,  20.0,  30.0,  40.0,   50.0,
                                    60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
static const double queue_bounds[] = {0.001, 0.005, 0.01, 0.05, 0.1,  0.25,  0.5,   1.0,
                                      2.5,   5.0,   10.0, 30.0, 60.0, 120.0, 300.0, 600.0};

/* The TS_E codes a request can fail with, as the `error` label says them. */
static const struct {
    int code;
    const char *name;
} errors[] = {
    {TS_E_INVALID, "invalid_request"}, {TS_E_EXHAUSTED, "queue_full"},
    {TS_E_UNAVAILABLE, "unavailable"}, {TS_E_TIMEOUT, "timeout"},
    {TS_E_NOMEM, "out_of_memory"},     {0, "other"}, /* the last: every other code */
};
enum { N_ERRORS = sizeof errors / sizeof errors[0] };

typedef struct histogram {
    const double *bounds;
    int n_bounds;
    uint64_t counts[HIST_MAX_BUCKETS]; /* counts[i]: observations <= bounds[i] (not cumulative) */
    uint64_t count;
    double sum;
} histogram;

enum { H_TTFT, H_ITL, H_E2E, H_QUEUE, N_HIST };

static const struct {
    const char *name, *help;
    const double *bounds;
    int n_bounds;
} hist_info[N_HIST] = {
    [H_TTFT] = {"tessera:time_to_first_token_seconds",
                "Time from a request's arrival at the coordinator to its first token.", ttft_bounds,
                (int)(sizeof ttft_bounds / sizeof ttft_bounds[0])},
    [H_ITL] = {"tessera:inter_token_latency_seconds",
               "Time between two consecutive tokens of a request, at the coordinator.", itl_bounds,
               (int)(sizeof itl_bounds / sizeof itl_bounds[0])},
    [H_E2E] = {"tessera:e2e_request_latency_seconds",
               "Time from a request's arrival to its last output.", e2e_bounds,
               (int)(sizeof e2e_bounds / sizeof e2e_bounds[0])},
    [H_QUEUE] = {"tessera:request_queue_time_seconds",
                 "Time from a request's arrival to its dispatch to a node group.", queue_bounds,
                 (int)(sizeof queue_bounds / sizeof queue_bounds[0])},
};

struct co_metrics_series {
    char group[128];
    int cls;
    uint64_t prompt_tokens, generation_tokens, prefix_queries, prefix_hits;
    uint64_t finished[3]; /* stop, length, abort */
    uint64_t failed[N_ERRORS];
    histogram hist[N_HIST];
    co_metrics_series *next;
};

typedef struct group_counter {
    char group[128];
    uint64_t preemptions;
    struct group_counter *next;
} group_counter;

struct co_metrics {
    pthread_mutex_t mu;
    co_metrics_series *series, **tail; /* in creation order */
    group_counter *groups;
};

int co_metrics_create(co_metrics **out) {
    co_metrics *m = calloc(1, sizeof *m);
    *out = m;
    if (!m) return ts_error_set(TS_E_NOMEM, "out of memory");
    pthread_mutex_init(&m->mu, NULL);
    m->tail = &m->series;
    return TS_OK;
}

void co_metrics_destroy(co_metrics *m) {
    if (!m) return;
    for (co_metrics_series *s = m->series, *next; s; s = next) {
        next = s->next;
        free(s);
    }
    for (group_counter *g = m->groups, *next; g; g = next) {
        next = g->next;
        free(g);
    }
    pthread_mutex_destroy(&m->mu);
    free(m);
}

co_metrics_series *co_metrics_series_of(co_metrics *m, const char *group, int32_t priority) {
    if (!m) return NULL;
    int cls = ts_priority_is_batch(priority) ? CLASS_BATCH : CLASS_INTERACTIVE;
    if (!group) group = "";
    pthread_mutex_lock(&m->mu);
    co_metrics_series *s = m->series;
    while (s && (s->cls != cls || strncmp(s->group, group, sizeof s->group - 1)))
        s = s->next;
    if (!s && (s = calloc(1, sizeof *s))) {
        snprintf(s->group, sizeof s->group, "%s", group);
        s->cls = cls;
        for (int h = 0; h < N_HIST; h++) {
            s->hist[h].bounds = hist_info[h].bounds;
            s->hist[h].n_bounds = hist_info[h].n_bounds;
        }
        *m->tail = s;
        m->tail = &s->next;
    }
    pthread_mutex_unlock(&m->mu);
    return s;
}

const char *co_metrics_series_group(const co_metrics_series *s) {
    return s->group; /* fixed at creation: no lock */
}

static void observe(histogram *h, int64_t ns) {
    double v = ns > 0 ? (double)ns / 1e9 : 0.0;
    int i = 0;
    while (i < h->n_bounds && v > h->bounds[i])
        i++;
    if (i < h->n_bounds) h->counts[i]++;
    h->count++;
    h->sum += v;
}

void co_metrics_prompt(co_metrics *m, co_metrics_series *s, int32_t n_prompt, int32_t n_cached) {
    if (!m || !s) return;
    pthread_mutex_lock(&m->mu);
    s->prompt_tokens += n_prompt > 0 ? (uint64_t)n_prompt : 0;
    s->prefix_queries += n_prompt > 0 ? (uint64_t)n_prompt : 0;
    s->prefix_hits += n_cached > 0 ? (uint64_t)n_cached : 0;
    pthread_mutex_unlock(&m->mu);
}

void co_metrics_first_token(co_metrics *m, co_metrics_series *s, int64_t queue_ns,
                            int64_t ttft_ns) {
    if (!m || !s) return;
    pthread_mutex_lock(&m->mu);
    s->generation_tokens++;
    observe(&s->hist[H_QUEUE], queue_ns);
    observe(&s->hist[H_TTFT], ttft_ns);
    pthread_mutex_unlock(&m->mu);
}

void co_metrics_next_token(co_metrics *m, co_metrics_series *s, int64_t itl_ns) {
    if (!m || !s) return;
    pthread_mutex_lock(&m->mu);
    s->generation_tokens++;
    observe(&s->hist[H_ITL], itl_ns);
    pthread_mutex_unlock(&m->mu);
}

void co_metrics_finished(co_metrics *m, co_metrics_series *s, ts_finish_reason reason,
                         int64_t e2e_ns) {
    if (!m || !s) return;
    int i = reason == TS_FINISH_STOP ? 0 : reason == TS_FINISH_LENGTH ? 1 : 2;
    pthread_mutex_lock(&m->mu);
    s->finished[i]++;
    observe(&s->hist[H_E2E], e2e_ns);
    pthread_mutex_unlock(&m->mu);
}

void co_metrics_failed(co_metrics *m, co_metrics_series *s, int code) {
    if (!m || !s) return;
    int i = 0;
    while (i < N_ERRORS - 1 && errors[i].code != code)
        i++;
    pthread_mutex_lock(&m->mu);
    s->failed[i]++;
    pthread_mutex_unlock(&m->mu);
}

void co_metrics_preemptions(co_metrics *m, const char *group, int64_t n) {
    if (!m || n <= 0) return;
    pthread_mutex_lock(&m->mu);
    group_counter *g = m->groups;
    while (g && strncmp(g->group, group, sizeof g->group - 1))
        g = g->next;
    if (!g && (g = calloc(1, sizeof *g))) {
        snprintf(g->group, sizeof g->group, "%s", group);
        g->next = m->groups;
        m->groups = g;
    }
    if (g) g->preemptions += (uint64_t)n;
    pthread_mutex_unlock(&m->mu);
}

/* ---- the text format ---- */

/* The text being written; rc keeps the first failure (ts_buf appends report, not record). */
typedef struct text {
    ts_buf *b;
    int rc;
} text;

static void put(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text *t, const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line) {
        t->rc = TS_E_INTERNAL; /* every line here is short: names, numbers, labels */
        return;
    }
    if (!t->rc) t->rc = ts_buf_append(t->b, line, (size_t)n);
}

/* A label value: backslash, double quote and newline escaped. */
static void label_value(text *t, const char *v) {
    for (; *v && !t->rc; v++) {
        if (*v == '\\' || *v == '"' || *v == '\n') t->rc = ts_buf_append_char(t->b, '\\');
        if (!t->rc) t->rc = ts_buf_append_char(t->b, *v == '\n' ? 'n' : *v);
    }
}

static void family(text *b, const char *name, const char *type, const char *help) {
    put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* `name{model="…",group="…"` (no closing brace: the caller may add labels). */
static void labels_open(text *b, const char *name, const char *model, const char *group) {
    put(b, "%s{model=\"", name);
    label_value(b, model);
    put(b, "\",group=\"");
    label_value(b, group);
    put(b, "\"");
}

static void series_open(text *b, const char *name, const char *model, const co_metrics_series *s) {
    labels_open(b, name, model, s->group);
    put(b, ",priority_class=\"%s\"", class_names[s->cls]);
}

typedef struct gauge_row {
    char group[128];
    int32_t running, waiting;
    double kv_usage;
    int64_t hit_tokens, host_hit_tokens, disk_hit_tokens;
    bool has_tiers;
    Tessera__V1__KvTierStats tiers;
} gauge_row;

/* One value of a group's lower KV tiers (gauge_row.tiers). */
typedef double (*tier_value)(const gauge_row *r, const char *tier);

static void tier_family(text *b, const char *model, const gauge_row *rows, int n, const char *name,
                        const char *type, const char *help, const char *const *tiers,
                        tier_value value) {
    family(b, name, type, help);
    for (int i = 0; i < n; i++) {
        if (!rows[i].has_tiers) continue;
        for (const char *const *t = tiers; *t; t++) {
            labels_open(b, name, model, rows[i].group);
            put(b, ",tier=\"%s\"", *t);
            put(b, "} %.9g\n", value(&rows[i], *t));
        }
    }
}

static double tier_usage(const gauge_row *r, const char *tier) {
    bool host = !strcmp(tier, "host");
    double total = host ? r->tiers.host_blocks_total : r->tiers.disk_blocks_total;
    double used = host ? r->tiers.host_blocks_used : r->tiers.disk_blocks_used;
    return total > 0 ? used / total : 0.0;
}
static double tier_hits(const gauge_row *r, const char *tier) {
    if (!strcmp(tier, "host")) return (double)r->host_hit_tokens;
    if (!strcmp(tier, "disk")) return (double)r->disk_hit_tokens;
    return (double)(r->hit_tokens - r->host_hit_tokens - r->disk_hit_tokens); /* device */
}
static double tier_loaded_blocks(const gauge_row *r, const char *tier) {
    int64_t disk = r->tiers.disk_loaded_blocks;
    return (double)(!strcmp(tier, "disk") ? disk : r->tiers.loaded_blocks - disk);
}
static double tier_loaded_bytes(const gauge_row *r, const char *tier) {
    double per_block = r->tiers.loaded_blocks > 0
                           ? (double)r->tiers.loaded_bytes / (double)r->tiers.loaded_blocks
                           : 0.0;
    return tier_loaded_blocks(r, tier) * per_block;
}
/* The families of one counter of the whole tiers (no tier label): a field of the heartbeat's
 * KvTierStats (int64), times scale. */
typedef struct tier_counter {
    const char *name, *help;
    size_t offset;
    double scale;
} tier_counter;

static const tier_counter tier_counters[] = {
    {"tessera:kv_tier_stored_blocks_total",
     "KV blocks copied into the lower tiers (evicted from the device pool).",
     offsetof(Tessera__V1__KvTierStats, stored_blocks), 1.0},
    {"tessera:kv_tier_stored_bytes_total", "Bytes of KV copied into the lower tiers.",
     offsetof(Tessera__V1__KvTierStats, stored_bytes), 1.0},
    {"tessera:kv_tier_store_seconds_total", "Time spent copying KV blocks into the lower tiers.",
     offsetof(Tessera__V1__KvTierStats, store_ns), 1e-9},
    {"tessera:kv_tier_load_seconds_total",
     "Time spent loading KV blocks back into the device pool.",
     offsetof(Tessera__V1__KvTierStats, load_ns), 1e-9},
    {"tessera:kv_tier_checksum_failures_total",
     "Lower-tier blocks whose checksum failed: discarded and recomputed, never used.",
     offsetof(Tessera__V1__KvTierStats, checksum_failures), 1.0},
    {"tessera:kv_tier_disk_write_failures_total",
     "Blocks the disk tier could not write (full or failing disk): kept out of it.",
     offsetof(Tessera__V1__KvTierStats, disk_write_failures), 1.0},
};

/* The lower KV tiers of the groups that have them (--kv-host-memory, --kv-disk), from their
 * heartbeats: the node's counts since it started (a restarted node starts again from 0, as
 * Prometheus counters may). Hits are prompt tokens at a request's first admission, as
 * tessera:prefix_cache_hits_total counts them, split by the tier their KV came from; the
 * average load or store latency is the seconds over the blocks. */
static void render_tiers(text *b, const char *model, const gauge_row *rows, int n) {
    static const char *const both[] = {"host", "disk", NULL}, *const all[] = {"device", "host",
                                                                              "disk", NULL};
    bool any = false;
    for (int i = 0; i < n; i++)
        any |= rows[i].has_tiers;
    if (!any) return; /* no group has a lower tier: no tier families at all */
    tier_family(b, model, rows, n, "tessera:kv_tier_usage_perc", "gauge",
                "Fraction of a lower KV tier's blocks in use (1 = full).", both, tier_usage);
    tier_family(b, model, rows, n, "tessera:kv_tier_hits_total", "counter",
                "Prompt tokens whose KV came from the prefix cache, by the tier that held it "
                "(the sum is tessera:prefix_cache_hits_total's).",
                all, tier_hits);
    tier_family(b, model, rows, n, "tessera:kv_tier_loaded_blocks_total", "counter",
                "KV blocks loaded back into the device pool instead of recomputed, by tier.", both,
                tier_loaded_blocks);
    tier_family(b, model, rows, n, "tessera:kv_tier_loaded_bytes_total", "counter",
                "Bytes of KV loaded back into the device pool, by tier.", both, tier_loaded_bytes);
    for (size_t c = 0; c < sizeof tier_counters / sizeof tier_counters[0]; c++) {
        const tier_counter *tc = &tier_counters[c];
        family(b, tc->name, "counter", tc->help);
        for (int i = 0; i < n; i++) {
            if (!rows[i].has_tiers) continue;
            int64_t v = *(const int64_t *)((const char *)&rows[i].tiers + tc->offset);
            labels_open(b, tc->name, model, rows[i].group);
            put(b, "} %.9g\n", (double)v * tc->scale);
        }
    }
}

typedef struct counter_info {
    const char *name, *help;
    size_t offset;
} counter_info;

static const counter_info counters[] = {
    {"tessera:prompt_tokens_total", "Prompt tokens of the requests the node groups ran.",
     offsetof(co_metrics_series, prompt_tokens)},
    {"tessera:generation_tokens_total", "Tokens generated.",
     offsetof(co_metrics_series, generation_tokens)},
    {"tessera:prefix_cache_queries_total",
     "Prompt tokens looked up in the node groups' prefix caches.",
     offsetof(co_metrics_series, prefix_queries)},
    {"tessera:prefix_cache_hits_total", "Prompt tokens whose KV came from a prefix cache.",
     offsetof(co_metrics_series, prefix_hits)},
};

static void render_counters(text *b, const co_metrics *m, const char *model) {
    for (size_t c = 0; c < sizeof counters / sizeof counters[0]; c++) {
        family(b, counters[c].name, "counter", counters[c].help);
        for (const co_metrics_series *s = m->series; s; s = s->next) {
            series_open(b, counters[c].name, model, s);
            put(b, "} %llu\n",
                (unsigned long long)*(const uint64_t *)((const char *)s + counters[c].offset));
        }
    }
    static const char *const reasons[] = {"stop", "length", "abort"};
    family(b, "tessera:request_success_total", "counter",
           "Requests finished, by finished_reason (abort: the client went away first).");
    for (const co_metrics_series *s = m->series; s; s = s->next)
        for (int i = 0; i < 3; i++) {
            series_open(b, "tessera:request_success_total", model, s);
            put(b, ",finished_reason=\"%s\"} %llu\n", reasons[i],
                (unsigned long long)s->finished[i]);
        }
    family(b, "tessera:request_failure_total", "counter",
           "Requests refused or ended by an error, by error (queue_full is HTTP 429).");
    for (const co_metrics_series *s = m->series; s; s = s->next)
        for (int i = 0; i < N_ERRORS; i++) {
            series_open(b, "tessera:request_failure_total", model, s);
            put(b, ",error=\"%s\"} %llu\n", errors[i].name, (unsigned long long)s->failed[i]);
        }
    family(b, "tessera:num_preemptions_total", "counter",
           "Sequences a node group preempted (KV blocks ran out); their prompts run again.");
    for (const group_counter *g = m->groups; g; g = g->next) {
        labels_open(b, "tessera:num_preemptions_total", model, g->group);
        put(b, "} %llu\n", (unsigned long long)g->preemptions);
    }
}

static void render_histograms(text *b, const co_metrics *m, const char *model) {
    for (int h = 0; h < N_HIST; h++) {
        char bucket[128], sum[128], count[128];
        snprintf(bucket, sizeof bucket, "%s_bucket", hist_info[h].name);
        snprintf(sum, sizeof sum, "%s_sum", hist_info[h].name);
        snprintf(count, sizeof count, "%s_count", hist_info[h].name);
        family(b, hist_info[h].name, "histogram", hist_info[h].help);
        for (const co_metrics_series *s = m->series; s; s = s->next) {
            const histogram *hi = &s->hist[h];
            uint64_t cum = 0;
            for (int i = 0; i < hi->n_bounds; i++) {
                cum += hi->counts[i];
                series_open(b, bucket, model, s);
                put(b, ",le=\"%g\"} %llu\n", hi->bounds[i], (unsigned long long)cum);
            }
            series_open(b, bucket, model, s);
            put(b, ",le=\"+Inf\"} %llu\n", (unsigned long long)hi->count);
            series_open(b, sum, model, s);
            put(b, "} %.9g\n", hi->sum);
            series_open(b, count, model, s);
            put(b, "} %llu\n", (unsigned long long)hi->count);
        }
    }
}

int co_metrics_render(coordinator *co, ts_buf *out) {
    /* The gauges: a snapshot under co->mu, so that no formatting happens under it. */
    char model[256];
    int n = 0, queued = 0;
    int64_t retried, failed_over;
    pthread_mutex_lock(&co->mu);
    for (const co_group *g = co->groups; g; g = g->next)
        n += g->registered && !g->dead;
    gauge_row *rows = calloc(n ? (size_t)n : 1, sizeof *rows);
    int k = 0;
    for (const co_group *g = co->groups; rows && g; g = g->next) {
        if (!g->registered || g->dead) continue;
        gauge_row *r = &rows[k++];
        snprintf(r->group, sizeof r->group, "%s", g->name);
        r->running = g->running;
        r->waiting = g->waiting;
        r->kv_usage = g->kv_total > 0 ? 1.0 - (double)g->kv_free / g->kv_total : 0.0;
        r->hit_tokens = g->cache_hit_tokens;
        r->host_hit_tokens = g->cache_host_hit_tokens;
        r->disk_hit_tokens = g->cache_disk_hit_tokens;
        r->has_tiers = g->has_kv_tiers;
        r->tiers = g->kv_tiers;
    }
    queued = co->n_queued;
    retried = co->requests_retried;
    failed_over = co->requests_failed_over;
    snprintf(model, sizeof model, "%s", co->model_name);
    pthread_mutex_unlock(&co->mu);
    if (!rows) return ts_error_set(TS_E_NOMEM, "out of memory");

    text b = {out, TS_OK};
    family(&b, "tessera:num_requests_running", "gauge",
           "Sequences in the node groups' batches (from their heartbeats).");
    for (int i = 0; i < k; i++) {
        labels_open(&b, "tessera:num_requests_running", model, rows[i].group);
        put(&b, "} %d\n", rows[i].running);
    }
    family(&b, "tessera:num_requests_waiting", "gauge",
           "Requests waiting: in a node group's queue, or (group \"\") in the coordinator's.");
    labels_open(&b, "tessera:num_requests_waiting", model, "");
    put(&b, "} %d\n", queued);
    for (int i = 0; i < k; i++) {
        labels_open(&b, "tessera:num_requests_waiting", model, rows[i].group);
        put(&b, "} %d\n", rows[i].waiting);
    }
    family(&b, "tessera:kv_cache_usage_perc", "gauge",
           "Fraction of a node group's KV cache blocks in use (1 = full; from its heartbeats).");
    for (int i = 0; i < k; i++) {
        labels_open(&b, "tessera:kv_cache_usage_perc", model, rows[i].group);
        put(&b, "} %.6g\n", rows[i].kv_usage);
    }
    render_tiers(&b, model, rows, k);
    free(rows);
    /* Counted by request.c in co's state (as Health reports them), not per series: a retried
     * request changes group, and its series is that of the group that finishes it. */
    family(&b, "tessera:request_retries_total", "counter",
           "Requests sent again to another node group after theirs failed or left.");
    put(&b, "tessera:request_retries_total{model=\"");
    label_value(&b, model);
    put(&b, "\"} %lld\n", (long long)retried);
    family(&b, "tessera:request_failovers_total", "counter",
           "Of the retried requests, those that had streamed tokens and went on by a replay "
           "(mid-stream failover).");
    put(&b, "tessera:request_failovers_total{model=\"");
    label_value(&b, model);
    put(&b, "\"} %lld\n", (long long)failed_over);

    co_metrics *m = co->metrics;
    pthread_mutex_lock(&m->mu);
    render_counters(&b, m, model);
    render_histograms(&b, m, model);
    pthread_mutex_unlock(&m->mu);
    return b.rc ? ts_error_set(b.rc, "rendering the metrics: out of memory") : TS_OK;
}
