/*
 * scheduler.c — see scheduler.h for the policy.
 *
 * Every active request is a `seq`. It knows n_tokens token ids (prompt, then generated ones) of
 * which the first n_computed have their KV in the cache; pending = n_tokens - n_computed >= 1
 * tokens remain to run: exactly 1 while decoding, more while prefilling. When a step runs the
 * last pending token, the sequence gets a new token and pending is 1 again. Sequences live in
 * two lists, `running` (admitted, holding KV blocks) and `waiting` (queued or preempted),
 * ordered by (priority desc, arrival asc).
 */
#include "node/scheduler.h"

#include "common/clock.h"
#include "common/kv_hash.h"
#include "common/error.h"
#include "common/log.h"
#include "common/rng.h"
#include "node/kv_pool.h"
#include "node/step_cost.h"

#include <stdlib.h>
#include <string.h>

typedef struct seq {
    uint64_t id;
    uint64_t arrival;
    ts_request_params params;
    ts_rng rng;
    int32_t *tokens; /* [max_ctx] */
    int32_t n_prompt, n_tokens, n_computed, n_generated, n_cached;
    int32_t n_loaded;      /* of n_computed at admission, tokens loaded from a lower tier */
    int32_t n_loaded_disk; /* of those, tokens loaded from the disk tier */
    /* Presence/frequency penalties and logit_bias (all NULL when the request has none): the
     * distinct generated ids, sorted, with their counts ([min(max_ctx, n_vocab)]), and the bias
     * list of the step ([that + n_logit_bias], ts_sampling.bias_ids/bias). Sized at submit. */
    int32_t *gen_ids, *gen_counts, n_gen_ids;
    int32_t *bias_ids;
    float *bias;
    int32_t *blocks; /* [max_blocks] block table */
    int32_t n_blocks;
    int32_t n_published; /* leading full blocks registered in the prefix cache */
    uint64_t root;       /* the prefix chain's root: model fingerprint and cache salt */
    uint64_t last_hash;  /* chain hash of block n_published - 1 (root if none) */
    bool admitted;       /* admitted once: n_cached and the cache counters are final */
    /* set while building a step */
    int32_t step_rows;
    bool step_logits;
} seq;

typedef struct seq_list {
    seq **items;
    int32_t n, cap;
} seq_list;

struct ts_sched {
    ts_engine *engine;
    ts_sched_options opts;
    ts_kv_pool *pool;
    int32_t max_ctx, block_size, max_blocks, n_vocab;
    int32_t max_batch_tokens, max_batch_seqs;
    uint64_t next_arrival;
    seq_list running, waiting;
    ts_sched_stats stats;
    /* step buffers, sized once */
    int32_t *batch_tokens;
    ts_batch_seq *batch_seqs;
    int32_t *batch_block_ids;
    seq **step_seqs;
    ts_sampling *sampling;
    int32_t *picked;
    float *picked_logprobs;
    int32_t *step_n_top; /* [max_batch_seqs] top_logprobs of each output row */
    int32_t *top_ids;    /* [max_batch_seqs][TS_ENGINE_MAX_TOP_LOGPROBS] */
    float *top_logprobs; /* [max_batch_seqs][TS_ENGINE_MAX_TOP_LOGPROBS] */
    ts_sched_event *events;
    int32_t n_events, events_cap;
    ts_sched_release_hook release_hook;
    void *release_user;
    ts_sched_prompt_hook prompt_hook;
    void *prompt_user;
    ts_step_cost step_cost;      /* what steps cost here (filler_budget, prefill_limit) */
    int64_t interactive_seen_ns; /* the last step planned with interactive work; 0: never */
};

/* Interactive traffic counts as live this long after the last step that had interactive work:
 * until then filler steps stay short, so that the next request does not wait long. */
#define FILLER_LIVE_NS (2 * 1000000000LL)

/* ------------------------------------------------------------------ lists */

_Static_assert((int)TS_ENGINE_MAX_TOP_LOGPROBS == (int)TS_MAX_TOP_LOGPROBS,
               "the engine reports as many top log-probs as a request may ask for");

static bool runs_before(const seq *a, const seq *b) {
    if (a->params.priority != b->params.priority) return a->params.priority > b->params.priority;
    return a->arrival < b->arrival;
}

static int list_insert(seq_list *l, seq *s) {
    if (l->n == l->cap) {
        int32_t cap = l->cap ? l->cap * 2 : 64;
        seq **items = realloc(l->items, (size_t)cap * sizeof *items);
        if (!items) return ts_error_set(TS_E_NOMEM, "out of memory");
        l->items = items;
        l->cap = cap;
    }
    int32_t i = l->n;
    while (i > 0 && runs_before(s, l->items[i - 1])) {
        l->items[i] = l->items[i - 1];
        i--;
    }
    l->items[i] = s;
    l->n++;
    return TS_OK;
}

static void list_remove_at(seq_list *l, int32_t i) {
    memmove(&l->items[i], &l->items[i + 1], (size_t)(l->n - i - 1) * sizeof *l->items);
    l->n--;
}

static int32_t list_find(const seq_list *l, uint64_t id) {
    for (int32_t i = 0; i < l->n; i++)
        if (l->items[i]->id == id) return i;
    return -1;
}

/* ------------------------------------------------------------------ setup */

/* The pool gives up a cached block (its KV still intact): the lower tiers keep it. */
static void on_evict(void *user, int32_t block, uint64_t hash, uint64_t parent,
                     const int32_t *tokens) {
    ts_sched *s = user;
    ts_kv_tiers_store(s->opts.tiers, block, hash, parent, tokens);
}

int ts_sched_create(ts_engine *engine, const ts_sched_options *opts, ts_sched **out) {
    *out = NULL;
    ts_sched *s = calloc(1, sizeof *s);
    if (!s) return ts_error_set(TS_E_NOMEM, "out of memory");
    s->engine = engine;
    s->opts = opts ? *opts : (ts_sched_options){0};
    ts_step_cost_init(&s->step_cost);
    if (s->opts.prefill_chunk <= 0) s->opts.prefill_chunk = 512;
    if (s->opts.max_waiting <= 0) s->opts.max_waiting = 4096;
    const ts_engine_options *eo = ts_engine_options_get(engine);
    s->max_ctx = eo->max_ctx;
    s->block_size = eo->block_size;
    s->max_blocks = (s->max_ctx + s->block_size - 1) / s->block_size;
    s->n_vocab = ts_engine_hparams(engine)->n_vocab;
    s->max_batch_tokens = eo->max_batch_tokens;
    s->max_batch_seqs = eo->max_batch_seqs;
    int rc = ts_kv_pool_create(ts_engine_n_blocks(engine), s->block_size, &s->pool);
    if (rc) {
        free(s);
        return rc;
    }
    if (s->opts.tiers && !s->opts.no_prefix_cache) ts_kv_pool_set_evict_hook(s->pool, on_evict, s);
    size_t S = (size_t)s->max_batch_seqs;
    s->batch_tokens = malloc((size_t)s->max_batch_tokens * sizeof *s->batch_tokens);
    s->batch_seqs = malloc(S * sizeof *s->batch_seqs);
    s->batch_block_ids = malloc(S * (size_t)s->max_blocks * sizeof *s->batch_block_ids);
    s->step_seqs = malloc(S * sizeof *s->step_seqs);
    s->sampling = malloc(S * sizeof *s->sampling);
    s->picked = malloc(S * sizeof *s->picked);
    s->picked_logprobs = malloc(S * sizeof *s->picked_logprobs);
    s->step_n_top = malloc(S * sizeof *s->step_n_top);
    s->top_ids = malloc(S * TS_ENGINE_MAX_TOP_LOGPROBS * sizeof *s->top_ids);
    s->top_logprobs = malloc(S * TS_ENGINE_MAX_TOP_LOGPROBS * sizeof *s->top_logprobs);
    s->events_cap = (int32_t)S * 2 + 16;
    s->events = malloc((size_t)s->events_cap * sizeof *s->events);
    if (!s->batch_tokens || !s->batch_seqs || !s->batch_block_ids || !s->step_seqs ||
        !s->sampling || !s->picked || !s->picked_logprobs || !s->events || !s->step_n_top ||
        !s->top_ids || !s->top_logprobs) {
        ts_sched_destroy(s);
        return ts_error_set(TS_E_NOMEM, "out of memory for scheduler buffers");
    }
    *out = s;
    return TS_OK;
}

static void seq_free(seq *q) {
    if (!q) return;
    free(q->tokens);
    free(q->blocks);
    free(q->gen_ids);
    free(q->gen_counts);
    free(q->bias_ids);
    free(q->bias);
    free(q);
}

void ts_sched_destroy(ts_sched *s) {
    if (!s) return;
    for (int32_t i = 0; i < s->running.n; i++) seq_free(s->running.items[i]);
    for (int32_t i = 0; i < s->waiting.n; i++) seq_free(s->waiting.items[i]);
    free(s->running.items);
    free(s->waiting.items);
    ts_kv_pool_destroy(s->pool);
    free(s->batch_tokens);
    free(s->batch_seqs);
    free(s->batch_block_ids);
    free(s->step_seqs);
    free(s->sampling);
    free(s->picked);
    free(s->picked_logprobs);
    free(s->step_n_top);
    free(s->top_ids);
    free(s->top_logprobs);
    free(s->events);
    free(s);
}

/* ------------------------------------------------------------------ submit / cancel */

static void release_blocks(ts_sched *s, seq *q);
static void append_generated(seq *q, int32_t token);
static void count_generated(seq *q, int32_t token);

/* Checks a new request and builds its sequence (not queued yet). */
static int new_seq(ts_sched *s, uint64_t id, const int32_t *prompt, int32_t n_prompt,
                   const ts_request_params *params, seq **out) {
    *out = NULL;
    /* Borrowed storage: validated, never freed. */
    ts_request view = {.prompt_ids = (int32_t *)prompt, .n_prompt_ids = n_prompt, .params = *params};
    ts_request_model model = {.n_vocab = s->n_vocab, .n_ctx = s->max_ctx};
    int rc = ts_request_validate(&view, &model);
    if (rc) return rc;
    if (list_find(&s->running, id) >= 0 || list_find(&s->waiting, id) >= 0)
        return ts_error_set(TS_E_INVALID, "request id %llu is already active",
                            (unsigned long long)id);
    if (s->waiting.n >= s->opts.max_waiting)
        return ts_error_set(TS_E_EXHAUSTED, "the queue is full (%d waiting requests)",
                            s->waiting.n);
    seq *q = calloc(1, sizeof *q);
    if (!q) return ts_error_set(TS_E_NOMEM, "out of memory");
    q->tokens = malloc((size_t)s->max_ctx * sizeof *q->tokens);
    q->blocks = malloc((size_t)s->max_blocks * sizeof *q->blocks);
    bool biased = params->presence_penalty != 0.0f || params->frequency_penalty != 0.0f ||
                  params->n_logit_bias > 0;
    if (biased) {
        size_t distinct = (size_t)(s->max_ctx < s->n_vocab ? s->max_ctx : s->n_vocab);
        size_t n_bias = distinct + (size_t)params->n_logit_bias;
        q->gen_ids = malloc(distinct * sizeof *q->gen_ids);
        q->gen_counts = malloc(distinct * sizeof *q->gen_counts);
        q->bias_ids = malloc(n_bias * sizeof *q->bias_ids);
        q->bias = malloc(n_bias * sizeof *q->bias);
    }
    if (!q->tokens || !q->blocks ||
        (biased && (!q->gen_ids || !q->gen_counts || !q->bias_ids || !q->bias))) {
        seq_free(q);
        return ts_error_set(TS_E_NOMEM, "out of memory");
    }
    q->id = id;
    q->arrival = s->next_arrival++;
    q->params = *params;
    ts_rng_seed(&q->rng, params->seed);
    /* A failover replay: the tokens generated before took one draw each when sampling. */
    for (int32_t i = 0; params->temperature > 0.0f && i < params->replayed; i++)
        (void)ts_rng_uniform(&q->rng);
    memcpy(q->tokens, prompt, (size_t)n_prompt * sizeof *prompt);
    q->n_prompt = q->n_tokens = n_prompt;
    /* ... and they are generated tokens to the penalties, which the failed group counted. */
    for (int32_t i = n_prompt - params->replayed; params->replayed > 0 && i < n_prompt; i++)
        count_generated(q, prompt[i]);
    q->root = ts_kv_hash_root(s->opts.cache_namespace, params->cache_salt);
    q->last_hash = q->root;
    *out = q;
    return TS_OK;
}

int ts_sched_submit(ts_sched *s, uint64_t id, const int32_t *prompt, int32_t n_prompt,
                    const ts_request_params *params) {
    seq *q = NULL;
    int rc = new_seq(s, id, prompt, n_prompt, params, &q);
    if (rc) return rc;
    rc = list_insert(&s->waiting, q);
    if (rc) seq_free(q);
    return rc;
}

static int submit_prefilled(ts_sched *s, uint64_t id, const int32_t *prompt, int32_t n_prompt,
                            int32_t first_token, int32_t n_blocks,
                            const ts_request_params *params, seq **out) {
    int rc = new_seq(s, id, prompt, n_prompt, params, out);
    if (rc) return rc;
    if (first_token < 0 || first_token >= s->n_vocab)
        return ts_error_set(TS_E_INVALID, "first token %d outside the vocabulary of %d",
                            first_token, s->n_vocab);
    if (n_blocks != (n_prompt + s->block_size - 1) / s->block_size)
        return ts_error_set(TS_E_INVALID, "%d KV blocks for a prompt of %d tokens (blocks of %d)",
                            n_blocks, n_prompt, s->block_size);
    if (params->max_tokens < 2 || n_prompt + 1 >= s->max_ctx)
        return ts_error_set(TS_E_INVALID, "nothing left to generate after the first token");
    return TS_OK;
}

int ts_sched_submit_prefilled(ts_sched *s, uint64_t id, const int32_t *prompt, int32_t n_prompt,
                              int32_t first_token, const int32_t *blocks, int32_t n_blocks,
                              const ts_request_params *params) {
    seq *q = NULL;
    int rc = submit_prefilled(s, id, prompt, n_prompt, first_token, n_blocks, params, &q);
    if (rc) {
        ts_kv_pool_release_seq(s->pool, blocks, n_blocks);
        seq_free(q);
        return rc;
    }
    memcpy(q->blocks, blocks, (size_t)n_blocks * sizeof *blocks);
    q->n_blocks = n_blocks;
    q->n_computed = n_prompt;
    q->admitted = true; /* its prompt was computed elsewhere: no prefix-cache query here */
    append_generated(q, first_token); /* n_generated = 1 */
    /* The prefill group drew one uniform for the first token (scheduler step: only when
     * sampling); skip it so that the rest of the sequence draws what a mixed group would. */
    if (params->temperature > 0.0f) (void)ts_rng_uniform(&q->rng);
    rc = list_insert(&s->running, q);
    if (rc) {
        release_blocks(s, q);
        seq_free(q);
    }
    return rc;
}

void ts_sched_set_release_hook(ts_sched *s, ts_sched_release_hook hook, void *user) {
    s->release_hook = hook;
    s->release_user = user;
}

void ts_sched_set_prompt_hook(ts_sched *s, ts_sched_prompt_hook hook, void *user) {
    s->prompt_hook = hook;
    s->prompt_user = user;
}

ts_kv_pool *ts_sched_pool(ts_sched *s) { return s->pool; }

/* Counts a generated token for the presence/frequency penalties. */
static void count_generated(seq *q, int32_t token) {
    if (!q->gen_ids) return;
    int32_t lo = 0, hi = q->n_gen_ids;
    while (lo < hi) {
        int32_t mid = (lo + hi) / 2;
        if (q->gen_ids[mid] < token)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < q->n_gen_ids && q->gen_ids[lo] == token) {
        q->gen_counts[lo]++;
        return;
    }
    memmove(q->gen_ids + lo + 1, q->gen_ids + lo, (size_t)(q->n_gen_ids - lo) * sizeof(int32_t));
    memmove(q->gen_counts + lo + 1, q->gen_counts + lo,
            (size_t)(q->n_gen_ids - lo) * sizeof(int32_t));
    q->gen_ids[lo] = token;
    q->gen_counts[lo] = 1;
    q->n_gen_ids++;
}

/* Appends a generated token, counting it for the penalties. */
static void append_generated(seq *q, int32_t token) {
    q->tokens[q->n_tokens++] = token;
    q->n_generated++;
    count_generated(q, token);
}

/* The step's additive biases (ts_sampling.bias_ids/bias): the penalties of the generated ids in
 * id order, then logit_bias in the request's order. */
static int32_t build_bias(seq *q) {
    const ts_request_params *p = &q->params;
    int32_t n = 0;
    if (!q->gen_ids) return 0;
    if (p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f)
        for (int32_t i = 0; i < q->n_gen_ids; i++, n++) {
            q->bias_ids[n] = q->gen_ids[i];
            q->bias[n] = -(p->frequency_penalty * (float)q->gen_counts[i] + p->presence_penalty);
        }
    for (int32_t i = 0; i < p->n_logit_bias; i++, n++) {
        q->bias_ids[n] = p->logit_bias_ids[i];
        q->bias[n] = p->logit_bias[i];
    }
    return n;
}

/* Back to front: the chain's tail goes onto the LRU list first and is evicted first. */
static void release_blocks(ts_sched *s, seq *q) {
    ts_kv_pool_release_seq(s->pool, q->blocks, q->n_blocks);
    q->n_blocks = 0;
    q->n_computed = 0;
    q->n_published = 0;
    q->last_hash = q->root;
}

static void push_event(ts_sched *s, const seq *q, int32_t token, float logprob,
                       ts_finish_reason finish) {
    TS_ASSERT(s->n_events < s->events_cap);
    ts_sched_event *ev = &s->events[s->n_events++];
    memset(ev, 0, sizeof *ev);
    ev->request_id = q->id;
    ev->token = token;
    ev->logprob = logprob;
    ev->finish = finish;
    ev->n_prompt = q->n_prompt;
    ev->n_cached = q->n_cached;
    ev->n_generated = q->n_generated;
}

static void flush_events(ts_sched *s, ts_sched_emit emit, void *user) {
    for (int32_t i = 0; i < s->n_events; i++)
        if (emit) emit(user, &s->events[i]);
    s->n_events = 0;
}

int ts_sched_cancel(ts_sched *s, uint64_t id, ts_sched_emit emit, void *user) {
    seq_list *lists[] = {&s->running, &s->waiting};
    for (int l = 0; l < 2; l++) {
        int32_t i = list_find(lists[l], id);
        if (i < 0) continue;
        seq *q = lists[l]->items[i];
        list_remove_at(lists[l], i);
        release_blocks(s, q);
        push_event(s, q, -1, 0.0f, TS_FINISH_CANCELLED);
        flush_events(s, emit, user);
        seq_free(q);
        return TS_OK;
    }
    return ts_error_set(TS_E_NOT_FOUND, "no active request %llu", (unsigned long long)id);
}

void ts_sched_abort_all(ts_sched *s, ts_finish_reason reason, ts_sched_emit emit, void *user) {
    seq_list *lists[] = {&s->running, &s->waiting};
    for (int l = 0; l < 2; l++) {
        while (lists[l]->n > 0) {
            seq *q = lists[l]->items[0];
            list_remove_at(lists[l], 0);
            release_blocks(s, q);
            push_event(s, q, -1, 0.0f, reason);
            flush_events(s, emit, user);
            seq_free(q);
        }
    }
}

void ts_sched_flush_cache(ts_sched *s) {
    if (!ts_kv_tiers_has_disk(s->opts.tiers) || s->opts.no_prefix_cache) return;
    ts_kv_pool_evict_all(s->pool); /* each through on_evict into the tiers */
    ts_kv_tiers_flush(s->opts.tiers);
}

bool ts_sched_has_work(const ts_sched *s) { return s->running.n > 0 || s->waiting.n > 0; }

void ts_sched_get_stats(const ts_sched *s, ts_sched_stats *out) {
    *out = s->stats;
    out->n_running = s->running.n;
    out->n_waiting = s->waiting.n;
    out->blocks_total = ts_kv_pool_n_blocks(s->pool);
    out->blocks_free = ts_kv_pool_n_free(s->pool);
    out->blocks_cached = ts_kv_pool_n_cached(s->pool);
}

/* ------------------------------------------------------------------ building a step */

/* Makes q's block table cover `upto` tokens. Returns false (and keeps what it got) when the pool
 * runs dry. */
static bool grow_blocks(ts_sched *s, seq *q, int32_t upto) {
    int32_t need = (upto + s->block_size - 1) / s->block_size;
    while (q->n_blocks < need) {
        int32_t b;
        if (ts_kv_pool_alloc(s->pool, &b) != TS_OK) return false;
        q->blocks[q->n_blocks++] = b;
    }
    return true;
}

/* Moves a running sequence back to the waiting queue, releasing its KV (recomputed later). */
static void preempt(ts_sched *s, int32_t running_index) {
    seq *q = s->running.items[running_index];
    list_remove_at(&s->running, running_index);
    release_blocks(s, q);
    s->stats.preemptions++;
    TS_DEBUG("preempted request %llu (%d tokens to recompute)", (unsigned long long)q->id,
             q->n_tokens);
    if (list_insert(&s->waiting, q) != TS_OK) TS_ASSERT(!"queue insert failed after removal");
}

/* The last running sequence in scheduling order other than `keep`, not in this step and not of
 * a higher priority than keep, or -1. */
static int32_t preemption_victim(const ts_sched *s, const seq *keep) {
    for (int32_t i = s->running.n - 1; i >= 0; i--) {
        const seq *q = s->running.items[i];
        if (q != keep && q->step_rows == 0 && q->params.priority <= keep->params.priority) return i;
    }
    return -1;
}

/* Reuses cached blocks of q's prompt prefix; at least one token is left to compute so that the
 * step produces the logits of the last known token. */
static void attach_prefix(ts_sched *s, seq *q) {
    if (s->opts.no_prefix_cache) return;
    int32_t bs = s->block_size;
    int32_t max_blocks = (q->n_tokens - 1) / bs;
    uint64_t parent = q->root;
    for (int32_t i = 0; i < max_blocks; i++) {
        const int32_t *toks = q->tokens + (size_t)i * (size_t)bs;
        uint64_t h = ts_kv_hash_block(parent, toks, bs);
        int32_t b = ts_kv_pool_lookup(s->pool, h, parent, i > 0 ? q->blocks[i - 1] : -1, toks);
        if (b < 0) break;
        q->blocks[q->n_blocks++] = b;
        parent = h;
    }
    q->n_loaded = q->n_loaded_disk = 0;
    /* The prefix may go on in a lower tier: load those blocks while that is cheaper than
     * recomputing them (measured; kv_tiers.h). */
    double prefill_ns_per_token =
        s->stats.prefill_tokens > 0 ? (double)s->stats.prefill_ns / (double)s->stats.prefill_tokens
                                    : 0.0;
    for (int32_t i = q->n_blocks; s->opts.tiers && i < max_blocks; i++) {
        const int32_t *toks = q->tokens + (size_t)i * (size_t)bs;
        uint64_t h = ts_kv_hash_block(parent, toks, bs);
        if (!ts_kv_tiers_has(s->opts.tiers, h, parent, toks) ||
            !ts_kv_tiers_load_pays(s->opts.tiers, prefill_ns_per_token, bs))
            break;
        int32_t b;
        if (ts_kv_pool_alloc(s->pool, &b) != TS_OK) break; /* (may store an evicted block) */
        bool from_disk = false;
        int rc = ts_kv_tiers_has(s->opts.tiers, h, parent, toks)
                     ? ts_kv_tiers_load(s->opts.tiers, b, h, parent, toks, &from_disk)
                     : TS_E_NOT_FOUND; /* the store just made room by evicting it */
        if (rc) {
            if (rc != TS_E_NOT_FOUND)
                TS_WARN("request %llu: %s", (unsigned long long)q->id, ts_error_message());
            ts_kv_pool_release(s->pool, b);
            break;
        }
        int32_t parent_block = i > 0 ? q->blocks[i - 1] : -1;
        int32_t kept = ts_kv_pool_publish(s->pool, b, h, parent, parent_block, toks);
        if (kept != b) ts_kv_pool_release(s->pool, b);
        q->blocks[q->n_blocks++] = kept;
        q->n_loaded += bs;
        if (from_disk) q->n_loaded_disk += bs;
        parent = h;
    }
    q->n_computed = q->n_blocks * bs;
    q->n_published = q->n_blocks;
    q->last_hash = parent;
}

/* A request's first admission fixes how many of its prompt tokens came from the cache (what
 * usage.cached_prompt_tokens reports); a preempted sequence that re-attaches its own blocks
 * later does not count again. */
static void count_admission(ts_sched *s, seq *q) {
    s->stats.cached_tokens += q->n_computed;
    if (q->admitted) return;
    q->admitted = true;
    q->n_cached = q->n_computed < q->n_prompt ? q->n_computed : q->n_prompt;
    if (s->opts.no_prefix_cache) return;
    s->stats.cache_query_tokens += q->n_prompt;
    s->stats.cache_hit_tokens += q->n_cached;
    int32_t loaded = q->n_loaded < q->n_cached ? q->n_loaded : q->n_cached;
    int32_t disk = q->n_loaded_disk < loaded ? q->n_loaded_disk : loaded;
    s->stats.cache_host_hit_tokens += loaded - disk;
    s->stats.cache_disk_hit_tokens += disk;
}

/* Registers the blocks q has completed since the last step. */
static void publish_full_blocks(ts_sched *s, seq *q) {
    if (s->opts.no_prefix_cache) return;
    int32_t bs = s->block_size;
    while ((q->n_published + 1) * bs <= q->n_computed) {
        int32_t i = q->n_published;
        const int32_t *toks = q->tokens + (size_t)i * (size_t)bs;
        uint64_t h = ts_kv_hash_block(q->last_hash, toks, bs);
        int32_t b = ts_kv_pool_publish(s->pool, q->blocks[i], h, q->last_hash,
                                       i > 0 ? q->blocks[i - 1] : -1, toks);
        if (b != q->blocks[i]) { /* another sequence cached the same content first: share it */
            ts_kv_pool_release(s->pool, q->blocks[i]);
            q->blocks[i] = b;
        }
        q->last_hash = h;
        q->n_published++;
    }
}

/* 0. Interactive work first: while the first waiting sequence outranks the lowest-priority
 * running one (batch filler) and could not start this step without it (no sequence slot left, or
 * too few free KV blocks for its first chunk and the admission reserve), the running one is
 * preempted, within this step. It waits behind the newcomer and is recomputed from its tokens
 * when there is room again: by batch invariance its results do not change. Equal priorities
 * never preempt each other here, so nothing thrashes. */
static void make_room(ts_sched *s) {
    while (s->waiting.n > 0 && s->running.n > 0) {
        const seq *w = s->waiting.items[0];
        const seq *low = s->running.items[s->running.n - 1];
        if (low->params.priority >= w->params.priority) return;
        int32_t pending = w->n_tokens - w->n_computed;
        int32_t chunk = pending < s->opts.prefill_chunk ? pending : s->opts.prefill_chunk;
        if (chunk > s->max_batch_tokens) chunk = s->max_batch_tokens;
        int32_t need = (chunk + s->block_size - 1) / s->block_size + s->running.n / 4;
        bool no_slot = s->running.n >= s->max_batch_seqs;
        bool no_blocks = ts_kv_pool_n_free(s->pool) < need;
        if (!no_slot && !no_blocks) return;
        preempt(s, s->running.n - 1);
    }
}

/* What the step being planned may still take: rows in all (the class's budget), and of them
 * prompt rows (prefill_limit). */
typedef struct step_room {
    int32_t tokens, prompt_tokens;
} step_room;

/* Chooses, among the sequences of one class (interactive, or batch filler), this step's rows
 * within room, in three phases:
 *   1. decoding sequences, in priority order; preempt from the back when blocks run out;
 *   2. running sequences still prefilling, a chunk each;
 *   3. waiting requests, admitted while there is room — never one of this class ahead of a
 *      waiting request of a higher class that could not start. */
static void plan_class(ts_sched *s, bool batch, step_room *room, int32_t *n_chosen) {
    for (int32_t i = 0; i < s->running.n && *n_chosen < s->max_batch_seqs && room->tokens > 0;
         i++) {
        seq *q = s->running.items[i];
        if (ts_priority_is_batch(q->params.priority) != batch) continue;
        if (q->n_tokens - q->n_computed != 1) continue;
        while (!grow_blocks(s, q, q->n_computed + 1)) {
            int32_t victim = preemption_victim(s, q);
            if (victim < 0) break;
            if (victim < i) i--; /* a prefilling sequence ahead of q: q moves up one */
            preempt(s, victim);
        }
        if (q->n_blocks * s->block_size < q->n_computed + 1) continue; /* wait for blocks */
        q->step_rows = 1;
        room->tokens--;
        s->step_seqs[(*n_chosen)++] = q;
    }

    for (int32_t i = 0; i < s->running.n && *n_chosen < s->max_batch_seqs && room->tokens > 0;
         i++) {
        seq *q = s->running.items[i];
        if (ts_priority_is_batch(q->params.priority) != batch) continue;
        int32_t pending = q->n_tokens - q->n_computed;
        if (pending <= 1) continue; /* decoding: handled above */
        int32_t chunk = pending < s->opts.prefill_chunk ? pending : s->opts.prefill_chunk;
        if (chunk > room->tokens) chunk = room->tokens;
        if (chunk > room->prompt_tokens) chunk = room->prompt_tokens;
        if (chunk <= 0) continue;
        grow_blocks(s, q, q->n_computed + chunk);
        int32_t space = q->n_blocks * s->block_size - q->n_computed;
        if (chunk > space) chunk = space;
        if (chunk <= 0) continue;
        q->step_rows = chunk;
        room->tokens -= chunk;
        room->prompt_tokens -= chunk;
        s->step_seqs[(*n_chosen)++] = q;
    }

    while (s->waiting.n > 0 && *n_chosen < s->max_batch_seqs && room->tokens > 0 &&
           room->prompt_tokens > 0) {
        seq *q = s->waiting.items[0]; /* in priority order: the other class first, or after */
        if (ts_priority_is_batch(q->params.priority) != batch) break;
        attach_prefix(s, q);
        int32_t pending = q->n_tokens - q->n_computed;
        int32_t chunk = pending < s->opts.prefill_chunk ? pending : s->opts.prefill_chunk;
        if (chunk > room->tokens) chunk = room->tokens;
        if (chunk > room->prompt_tokens) chunk = room->prompt_tokens;
        /* keep a few blocks free for the running sequences' next tokens */
        int32_t reserve = s->running.n / 4;
        int32_t need = (q->n_computed + chunk + s->block_size - 1) / s->block_size - q->n_blocks;
        if (ts_kv_pool_n_free(s->pool) - need < reserve && s->running.n > 0) {
            release_blocks(s, q); /* give back the prefix blocks; try again next step */
            break;
        }
        grow_blocks(s, q, q->n_computed + chunk);
        int32_t space = q->n_blocks * s->block_size - q->n_computed;
        if (chunk > space) chunk = space;
        if (chunk <= 0) {
            release_blocks(s, q);
            break;
        }
        list_remove_at(&s->waiting, 0);
        if (list_insert(&s->running, q) != TS_OK) TS_ASSERT(!"running list insert failed");
        count_admission(s, q);
        q->step_rows = chunk;
        room->tokens -= chunk;
        room->prompt_tokens -= chunk;
        s->step_seqs[(*n_chosen)++] = q;
    }
}

/* Lists are in priority order (runs_before): interactive work is first when there is any. */
static bool has_interactive(const seq_list *l) {
    return l->n > 0 && !ts_priority_is_batch(l->items[0]->params.priority);
}

/* The tokens batch filler may add to a step whose interactive rows are `interactive_rows`
 * (scheduler.h, "Batch filler"): with interactive work active, as many as lengthen the step by
 * at most opts.filler_slack; while interactive traffic is live (work seen in the last
 * FILLER_LIVE_NS) but none is active, enough for (1 - slack) of the peak token rate; otherwise
 * no limit. free = the step's fixed cost in tokens (step_cost.h). */
static int32_t filler_budget(ts_sched *s, bool interactive_active, int32_t interactive_rows) {
    int64_t now = ts_now_ns();
    if (interactive_active) s->interactive_seen_ns = now;
    bool live = s->interactive_seen_ns && now - s->interactive_seen_ns < FILLER_LIVE_NS;
    double slack = s->opts.filler_slack;
    if (!live || slack >= 1.0) return s->max_batch_tokens;
    double free = ts_step_cost_free_tokens(&s->step_cost);
    double limit = interactive_active ? slack * (free + interactive_rows)
                                      : (slack > 0.0 ? free * (1.0 - slack) / slack : 0.0);
    if (!interactive_active && limit < 1.0) limit = 1.0; /* always progress between requests */
    return limit < (double)s->max_batch_tokens ? (int32_t)limit : s->max_batch_tokens;
}

/* The prompt tokens a step may take beside its decoding sequences (scheduler.h, "Smooth
 * decode"): opts.decode_slack × (the step's fixed cost in tokens + the decode rows), at least
 * one so that prompts always advance; no limit without the option or without decoding. */
static int32_t prefill_limit(const ts_sched *s) {
    if (s->opts.decode_slack <= 0.0) return INT32_MAX;
    int32_t decoding = 0;
    for (int32_t i = 0; i < s->running.n; i++)
        decoding += s->running.items[i]->n_tokens - s->running.items[i]->n_computed == 1;
    if (decoding == 0) return INT32_MAX;
    double limit = s->opts.decode_slack * (ts_step_cost_free_tokens(&s->step_cost) + decoding);
    if (limit < 1.0) return 1;
    return limit < (double)s->max_batch_tokens ? (int32_t)limit : s->max_batch_tokens;
}

/* Chooses this step's sequences and their rows (seq.step_rows); returns the number chosen.
 * Interactive work first, then batch filler within what filler_budget leaves it. */
static int32_t plan_step(ts_sched *s) {
    int32_t n_chosen = 0;
    for (int32_t i = 0; i < s->running.n; i++)
        s->running.items[i]->step_rows = 0;
    make_room(s);
    step_room room = {s->max_batch_tokens, prefill_limit(s)};
    bool interactive = has_interactive(&s->running) || has_interactive(&s->waiting);
    plan_class(s, false, &room, &n_chosen);
    int32_t filler = filler_budget(s, interactive, s->max_batch_tokens - room.tokens);
    if (filler < room.tokens) room.tokens = filler;
    plan_class(s, true, &room, &n_chosen);
    return n_chosen;
}

/* ------------------------------------------------------------------ running a step */

static bool is_stop_id(const seq *q, int32_t token) {
    for (int32_t i = 0; i < q->params.n_stop_ids; i++)
        if (q->params.stop_ids[i] == token) return true;
    return false;
}

static void finish_seq(ts_sched *s, seq *q, ts_finish_reason finish) {
    int32_t i = list_find(&s->running, q->id);
    TS_ASSERT(i >= 0);
    list_remove_at(&s->running, i);
    if (s->release_hook)
        s->release_hook(s->release_user, q->id, finish, q->blocks, q->n_blocks, q->n_computed);
    release_blocks(s, q);
    seq_free(q);
}

int ts_sched_step(ts_sched *s, ts_sched_emit emit, void *user) {
    if (!ts_sched_has_work(s)) return TS_OK;
    int32_t n_chosen = plan_step(s);
    if (n_chosen == 0) return TS_OK; /* waiting for blocks: nothing runnable */

    /* The batch: chosen sequences in order, their pending tokens and block tables. */
    int32_t row = 0, n_block_ids = 0, n_out = 0, n_prefill_rows = 0;
    bool want_logprobs = false, want_top = false;
    for (int32_t j = 0; j < n_chosen; j++) {
        seq *q = s->step_seqs[j];
        int32_t rows = q->step_rows;
        memcpy(s->batch_tokens + row, q->tokens + q->n_computed, (size_t)rows * sizeof(int32_t));
        q->step_logits = q->n_computed + rows == q->n_tokens;
        s->batch_seqs[j] = (ts_batch_seq){row, rows, q->n_computed, n_block_ids, q->n_blocks,
                                          q->step_logits};
        memcpy(s->batch_block_ids + n_block_ids, q->blocks, (size_t)q->n_blocks * sizeof(int32_t));
        n_block_ids += q->n_blocks;
        row += rows;
        if (rows > 1 || !q->step_logits) n_prefill_rows += rows;
        if (q->step_logits) {
            const ts_request_params *p = &q->params;
            int32_t lookback = p->repetition_last_n < q->n_tokens ? p->repetition_last_n : q->n_tokens;
            s->sampling[n_out] = (ts_sampling){
                .temperature = p->temperature,
                .top_k = p->top_k,
                .top_p = p->top_p,
                .min_p = p->min_p,
                .repetition_penalty = p->repetition_penalty,
                .recent = q->tokens + q->n_tokens - lookback,
                .n_recent = lookback,
                .bias_ids = q->bias_ids,
                .bias = q->bias,
                .n_bias = build_bias(q),
                .uniform = p->temperature > 0.0f ? ts_rng_uniform(&q->rng) : 0.0f,
            };
            want_logprobs |= p->logprobs || p->top_logprobs > 0;
            s->step_n_top[n_out] = p->top_logprobs;
            want_top |= p->top_logprobs > 0;
            n_out++;
        }
    }
    ts_batch batch = {row, n_chosen, s->batch_tokens, s->batch_seqs, s->batch_block_ids,
                      n_block_ids, s->block_size};
    for (int32_t j = 0; s->prompt_hook && j < n_chosen; j++) {
        const seq *q = s->step_seqs[j];
        if (q->step_logits && q->n_generated == 0)
            s->prompt_hook(s->prompt_user, q->id, j, q->n_blocks);
    }
    int64_t t0 = ts_now_ns();
    int rc = ts_engine_step_top(s->engine, &batch, s->sampling, s->picked,
                                want_logprobs ? s->picked_logprobs : NULL,
                                want_top ? s->step_n_top : NULL, s->top_ids, s->top_logprobs);
    int64_t dt = ts_now_ns() - t0;
    if (rc) {
        ts_sched_abort_all(s, TS_FINISH_ERROR, emit, user);
        return rc;
    }
    ts_step_cost_add(&s->step_cost, row, dt);
    s->stats.steps++;
    s->stats.prefill_tokens += n_prefill_rows;
    s->stats.decode_tokens += row - n_prefill_rows;
    if (n_prefill_rows > 0) s->stats.prefill_ns += dt;
    else s->stats.decode_ns += dt;

    /* Advance every chosen sequence; sample results go to those that asked for logits. */
    int32_t out = 0;
    for (int32_t j = 0; j < n_chosen; j++) {
        seq *q = s->step_seqs[j];
        q->n_computed += q->step_rows;
        publish_full_blocks(s, q);
        if (!q->step_logits) continue;
        int32_t token = s->picked[out];
        float logprob = want_logprobs ? s->picked_logprobs[out] : 0.0f;
        int32_t row_out = out++;
        if (is_stop_id(q, token)) {
            push_event(s, q, -1, 0.0f, TS_FINISH_STOP);
            finish_seq(s, q, TS_FINISH_STOP);
            continue;
        }
        append_generated(q, token);
        ts_finish_reason finish = TS_FINISH_NONE;
        if (q->n_generated >= q->params.max_tokens || q->n_tokens >= s->max_ctx)
            finish = TS_FINISH_LENGTH;
        push_event(s, q, token, logprob, finish);
        if (want_top && s->step_n_top[row_out] > 0) {
            ts_sched_event *ev = &s->events[s->n_events - 1];
            ev->n_top = s->step_n_top[row_out];
            memcpy(ev->top_ids, s->top_ids + (size_t)row_out * TS_ENGINE_MAX_TOP_LOGPROBS,
                   (size_t)ev->n_top * sizeof *ev->top_ids);
            memcpy(ev->top_logprobs, s->top_logprobs + (size_t)row_out * TS_ENGINE_MAX_TOP_LOGPROBS,
                   (size_t)ev->n_top * sizeof *ev->top_logprobs);
        }
        if (finish != TS_FINISH_NONE) finish_seq(s, q, finish);
    }
    flush_events(s, emit, user);
    return TS_OK;
}
