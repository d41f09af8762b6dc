/*
 * test_sched_priority.c — batch work as filler on the real engine and scheduler (bundled model):
 * an interactive request (priority 0) arriving while batch sequences (priority -1000) hold every
 * sequence slot, or the KV blocks it needs, preempts them within the step and gets its first
 * token at once; the preempted batch sequences resume later and every request's tokens equal, bit
 * for bit, those of a run alone. Equal priorities never preempt each other.
 * And the filler limit (--filler-slack, scheduler.h "Batch filler"): with slack 0, no step that
 * serves the interactive request carries a batch token (the batch sequences keep their slots and
 * continue after it, one token per step while interactive traffic is live); with the limit off
 * (slack 1) they share its steps. Either way every request's tokens equal those of a run alone.
 */
#include "common/error.h"
#include "node/runtime.h"
#include "tests/unit/test.h"

#include <string.h>

enum { BS = 4, MAX_OUT = 64, N_LOW = 2 };

typedef struct run {
    int32_t tokens[MAX_OUT];
    float logprobs[MAX_OUT];
    int n;
    bool done;
} run;

typedef struct runs {
    run r[N_LOW + 1];
} runs;

static void on_event(void *user, const ts_sched_event *ev) {
    runs *rs = user;
    run *r = &rs->r[ev->request_id - 1];
    if (ev->token >= 0 && r->n < MAX_OUT) {
        r->tokens[r->n] = ev->token;
        r->logprobs[r->n++] = ev->logprob;
    }
    if (ev->finish != TS_FINISH_NONE) r->done = true;
}

static double filler_slack = 0.1; /* the default */

static ts_runtime *open_rt(int batch_seqs, size_t kv_memory) {
    ts_runtime_options o;
    ts_runtime_options_default(&o);
    o.filler_slack = filler_slack;
    o.threads = 1;
    o.block_size = BS;
    o.ctx = 32;
    o.batch_seqs = batch_seqs;
    o.kv_memory = kv_memory;
    o.no_prefix_cache = true; /* recomputation, not reuse, is what is tested */
    o.log_level = "error";
    ts_runtime *rt = NULL;
    int rc = ts_runtime_open(&o, &rt);
    if (rc) fprintf(stderr, "runtime: %s\n", ts_error_message());
    CHECK_OK(rc);
    return rt;
}

static ts_request_params params(int32_t priority, int32_t max_tokens) {
    ts_request_params p = ts_request_params_default();
    p.max_tokens = max_tokens;
    p.logprobs = true;
    p.priority = priority;
    p.temperature = 0.8f; /* sampled: the seed, not only the logits, must survive preemption */
    p.seed = 42;
    return p;
}

static const int32_t prompts[N_LOW + 1][6] = {
    {1, 100, 101, 102, 103, 104}, {1, 200, 201, 202, 203, 204}, {1, 300, 301, 302, 303, 304}};

static const int32_t max_tokens[N_LOW + 1] = {20, 20, 8};

static int32_t priority_of(int i) {
    return i < N_LOW ? -1000 : 0;
}

/* Each request alone. */
static void alone(runs *ref) {
    ts_runtime *rt = open_rt(8, 0);
    ts_sched *s = ts_runtime_scheduler(rt);
    memset(ref, 0, sizeof *ref);
    for (int i = 0; i <= N_LOW; i++) {
        ts_request_params p = params(priority_of(i), max_tokens[i]);
        CHECK_OK(ts_sched_submit(s, (uint64_t)i + 1, prompts[i], 6, &p));
        while (!ref->r[i].done && ts_sched_has_work(s))
            CHECK_OK(ts_sched_step(s, on_event, ref));
    }
    ts_runtime_close(rt);
}

/* Two batch sequences run a few steps; then the interactive one arrives. */
static void contend(ts_runtime *rt, const runs *ref, int32_t high_priority) {
    ts_sched *s = ts_runtime_scheduler(rt);
    runs got = {0};
    for (int i = 0; i < N_LOW; i++) {
        ts_request_params p = params(priority_of(i), max_tokens[i]);
        CHECK_OK(ts_sched_submit(s, (uint64_t)i + 1, prompts[i], 6, &p));
    }
    for (int k = 0; k < 10; k++) /* each holds 16 tokens: 4 blocks */
        CHECK_OK(ts_sched_step(s, on_event, &got));
    ts_sched_stats before, after;
    ts_sched_get_stats(s, &before);
    ts_request_params p = params(high_priority, max_tokens[N_LOW]);
    CHECK_OK(ts_sched_submit(s, N_LOW + 1, prompts[N_LOW], 6, &p));
    CHECK_OK(ts_sched_step(s, on_event, &got));
    ts_sched_get_stats(s, &after);
    if (high_priority > -1000) {
        CHECK_EQ_INT(got.r[N_LOW].n, 1); /* its first token in the step it arrived */
        CHECK(after.preemptions > before.preemptions);
    } else {
        CHECK_EQ_INT(got.r[N_LOW].n, 0); /* an equal priority waits its turn */
        CHECK(after.preemptions == before.preemptions);
    }
    while (ts_sched_has_work(s))
        CHECK_OK(ts_sched_step(s, on_event, &got));
    for (int i = 0; i <= N_LOW; i++) {
        CHECK(got.r[i].done);
        CHECK_EQ_INT(got.r[i].n, ref->r[i].n);
        CHECK(!memcmp(got.r[i].tokens, ref->r[i].tokens, sizeof got.r[i].tokens));
        CHECK(!memcmp(got.r[i].logprobs, ref->r[i].logprobs, (size_t)got.r[i].n * sizeof(float)));
    }
}

static runs ref;

/* Every sequence slot is held by batch work (batch_seqs 2). */
static void test_interactive_preempts_batch_for_a_slot(void) {
    ts_runtime *rt = open_rt(N_LOW, 0);
    contend(rt, &ref, 0);
    ts_runtime_close(rt);
}

/* Slots are free but the KV blocks are not: of 9 blocks of 4 the two batch sequences hold 8 when
 * the newcomer, which needs 2, arrives. */
static void test_interactive_preempts_batch_for_blocks(void) {
    ts_runtime *probe = open_rt(8, (size_t)1 << 20);
    ts_sched_stats st;
    ts_sched_get_stats(ts_runtime_scheduler(probe), &st);
    ts_runtime_close(probe);
    size_t per_block = ((size_t)1 << 20) / (size_t)st.blocks_total;
    ts_runtime *rt = open_rt(8, per_block * 9 + per_block / 2);
    ts_sched_get_stats(ts_runtime_scheduler(rt), &st);
    CHECK_EQ_INT(st.blocks_total, 9);
    contend(rt, &ref, 0);
    ts_runtime_close(rt);
}

static void test_equal_priorities_do_not_preempt(void) {
    ts_runtime *rt = open_rt(N_LOW, 0);
    contend(rt, &ref, -1000);
    ts_runtime_close(rt);
}

/* Steps the batch sequences alone a few times, then the interactive one with them; counts the
 * steps that gave the interactive request a token and, of those, the ones that also gave a batch
 * sequence one. */
static void filler_beside(double slack, int *interactive_steps, int *shared_steps) {
    filler_slack = slack;
    ts_runtime *rt = open_rt(8, 0);
    filler_slack = 0.1;
    ts_sched *s = ts_runtime_scheduler(rt);
    runs got = {0};
    for (int i = 0; i < N_LOW; i++) {
        ts_request_params p = params(priority_of(i), max_tokens[i]);
        CHECK_OK(ts_sched_submit(s, (uint64_t)i + 1, prompts[i], 6, &p));
    }
    for (int k = 0; k < 4; k++)
        CHECK_OK(ts_sched_step(s, on_event, &got));
    ts_request_params p = params(0, max_tokens[N_LOW]);
    CHECK_OK(ts_sched_submit(s, N_LOW + 1, prompts[N_LOW], 6, &p));
    *interactive_steps = *shared_steps = 0;
    while (ts_sched_has_work(s)) {
        int before[N_LOW + 1];
        for (int i = 0; i <= N_LOW; i++)
            before[i] = got.r[i].n;
        CHECK_OK(ts_sched_step(s, on_event, &got));
        if (got.r[N_LOW].n == before[N_LOW]) continue;
        (*interactive_steps)++;
        bool batch_moved = false;
        for (int i = 0; i < N_LOW; i++)
            batch_moved |= got.r[i].n > before[i];
        *shared_steps += batch_moved;
    }
    for (int i = 0; i <= N_LOW; i++) {
        CHECK(got.r[i].done);
        CHECK_EQ_INT(got.r[i].n, ref.r[i].n);
        CHECK(!memcmp(got.r[i].tokens, ref.r[i].tokens, sizeof got.r[i].tokens));
    }
    ts_runtime_close(rt);
}

static void test_no_filler_beside_interactive_with_slack_0(void) {
    int steps, shared;
    filler_beside(0.0, &steps, &shared);
    CHECK_EQ_INT(steps, max_tokens[N_LOW]);
    CHECK_EQ_INT(shared, 0);
}

static void test_filler_shares_steps_without_a_limit(void) {
    int steps, shared;
    filler_beside(1.0, &steps, &shared);
    CHECK_EQ_INT(steps, max_tokens[N_LOW]);
    CHECK(shared >= steps - 1); /* every step but maybe the first (its prefill) */
}

int main(void) {
    alone(&ref);
    RUN(test_interactive_preempts_batch_for_a_slot);
    RUN(test_interactive_preempts_batch_for_blocks);
    RUN(test_equal_priorities_do_not_preempt);
    RUN(test_no_filler_beside_interactive_with_slack_0);
    RUN(test_filler_shares_steps_without_a_limit);
    return test_summary();
}
