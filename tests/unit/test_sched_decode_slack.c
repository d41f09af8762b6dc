/*
 * test_sched_decode_slack.c — smooth decode (node/scheduler.h, opts.decode_slack) on the real
 * engine and scheduler (bundled model): with decoding streams running, a long prompt that
 * arrives is prefilled a few tokens per step instead of in one 512-token chunk, so no step of
 * the streams carries more prompt tokens than the limit; without decoding streams, or with the
 * option off, prompts get the whole step. Every request's tokens equal those of a run alone.
 */
#include "common/error.h"
#include "node/runtime.h"
#include "tests/unit/test.h"

#include <string.h>

enum { MAX_OUT = 100, N_REQ = 3, LONG = 60 };

typedef struct run {
    int32_t tokens[MAX_OUT];
    int n;
    bool done;
} run;

static void on_event(void *user, const ts_sched_event *ev) {
    run *r = &((run *)user)[ev->request_id - 1];
    if (ev->token >= 0 && r->n < MAX_OUT) r->tokens[r->n++] = ev->token;
    if (ev->finish != TS_FINISH_NONE) r->done = true;
}

static ts_runtime *open_rt(double decode_slack) {
    ts_runtime_options o;
    ts_runtime_options_default(&o);
    o.threads = 1;
    o.ctx = 128;
    o.decode_slack = decode_slack;
    o.log_level = "error";
    ts_runtime *rt = NULL;
    int rc = ts_runtime_open(&o, &rt);
    if (rc) fprintf(stderr, "runtime: %s\n", ts_error_message());
    CHECK_OK(rc);
    return rt;
}

static int32_t prompt_of(int i, int32_t *out) {
    int32_t n = i == N_REQ - 1 ? LONG : 5;
    out[0] = 1;
    for (int32_t k = 1; k < n; k++)
        out[k] = 10 + (i * 131 + k * 17) % 400;
    return n;
}

/* The streams outlast the long prompt's prefill even at one token a step. */
static ts_request_params params(int i) {
    ts_request_params p = ts_request_params_default();
    p.max_tokens = i == N_REQ - 1 ? 40 : 100;
    return p;
}

static run ref[N_REQ];

static void alone(void) {
    ts_runtime *rt = open_rt(0);
    ts_sched *s = ts_runtime_scheduler(rt);
    for (int i = 0; i < N_REQ; i++) {
        int32_t prompt[LONG];
        int32_t n = prompt_of(i, prompt);
        ts_request_params p = params(i);
        CHECK_OK(ts_sched_submit(s, (uint64_t)i + 1, prompt, n, &p));
        while (!ref[i].done && ts_sched_has_work(s))
            CHECK_OK(ts_sched_step(s, on_event, ref));
    }
    ts_runtime_close(rt);
}

/* Two streams decode; then the long prompt arrives. Returns the most prompt tokens one step
 * carried while the streams decoded, and the steps the long prompt took to its first token. */
static void long_prompt_beside_streams(double decode_slack, int64_t *most, int *steps) {
    ts_runtime *rt = open_rt(decode_slack);
    ts_sched *s = ts_runtime_scheduler(rt);
    run got[N_REQ];
    memset(got, 0, sizeof got);
    int32_t prompt[LONG];
    for (int i = 0; i < N_REQ - 1; i++) {
        int32_t n = prompt_of(i, prompt);
        ts_request_params p = params(i);
        CHECK_OK(ts_sched_submit(s, (uint64_t)i + 1, prompt, n, &p));
    }
    for (int k = 0; k < 3; k++)
        CHECK_OK(ts_sched_step(s, on_event, got));
    int32_t n = prompt_of(N_REQ - 1, prompt);
    ts_request_params p = params(N_REQ - 1);
    CHECK_OK(ts_sched_submit(s, N_REQ, prompt, n, &p));
    *most = 0;
    *steps = 0;
    while (ts_sched_has_work(s)) {
        ts_sched_stats before, after;
        ts_sched_get_stats(s, &before);
        bool streams = !got[0].done || !got[1].done;
        CHECK_OK(ts_sched_step(s, on_event, got));
        ts_sched_get_stats(s, &after);
        if (streams && after.prefill_tokens - before.prefill_tokens > *most)
            *most = after.prefill_tokens - before.prefill_tokens;
        if (got[N_REQ - 1].n == 0) (*steps)++;
    }
    for (int i = 0; i < N_REQ; i++) {
        CHECK(got[i].done);
        CHECK_EQ_INT(got[i].n, ref[i].n);
        CHECK(!memcmp(got[i].tokens, ref[i].tokens, sizeof got[i].tokens));
    }
    ts_runtime_close(rt);
}

static void test_off_prefills_the_prompt_at_once(void) {
    int64_t most;
    int steps;
    long_prompt_beside_streams(0, &most, &steps);
    CHECK_EQ_INT(most, LONG); /* the whole prompt beside the streams, in one step */
    CHECK_EQ_INT(steps, 0);
}

static void test_a_tiny_slack_spreads_the_prompt_over_steps(void) {
    int64_t most;
    int steps;
    /* 1e-9 × (fixed cost in tokens + 2 streams) rounds to the minimum: one token a step */
    long_prompt_beside_streams(1e-9, &most, &steps);
    CHECK_EQ_INT(most, 1);
    CHECK(steps >= LONG - 1);
}

int main(void) {
    alone();
    RUN(test_off_prefills_the_prompt_at_once);
    RUN(test_a_tiny_slack_spreads_the_prompt_over_steps);
    return test_summary();
}
