/*
 * test_step_cost.c — the step cost model (node/step_cost.h): steps on an exact line give back its
 * fixed and per-token parts; steps of one size, or a fit with a negative fixed part, fall back to
 * time proportional to tokens (no free tokens); the fit follows a machine whose cost changes.
 */
#include "node/step_cost.h"
#include "tests/unit/test.h"

#include <math.h>

static void test_nothing_seen(void) {
    ts_step_cost c;
    ts_step_cost_init(&c);
    double a, b;
    ts_step_cost_fit(&c, &a, &b);
    CHECK(a == 0.0 && b == 0.0);
    CHECK(ts_step_cost_free_tokens(&c) == 0.0);
}

static void test_exact_line(void) {
    ts_step_cost c;
    ts_step_cost_init(&c);
    for (int i = 0; i < 300; i++) {
        int n = 1 + (i * 7) % 64;
        ts_step_cost_add(&c, n, 10000000 + (int64_t)n * 1000000); /* 10 ms + 1 ms per token */
    }
    double a, b;
    ts_step_cost_fit(&c, &a, &b);
    CHECK(fabs(a - 1e7) < 1e3);
    CHECK(fabs(b - 1e6) < 1e1);
    CHECK(fabs(ts_step_cost_free_tokens(&c) - 10.0) < 1e-3);
}

static void test_one_size_is_proportional(void) {
    ts_step_cost c;
    ts_step_cost_init(&c);
    for (int i = 0; i < 50; i++)
        ts_step_cost_add(&c, 8, 16000000);
    double a, b;
    ts_step_cost_fit(&c, &a, &b);
    CHECK(a == 0.0 && fabs(b - 2e6) < 1.0);
    CHECK(ts_step_cost_free_tokens(&c) == 0.0);
}

static void test_negative_fixed_part_is_proportional(void) {
    ts_step_cost c;
    ts_step_cost_init(&c);
    for (int i = 0; i < 50; i++) { /* a line through (1, 1 ms) and (9, 17 ms): fixed -1 ms */
        ts_step_cost_add(&c, 1, 1000000);
        ts_step_cost_add(&c, 9, 17000000);
    }
    double a, b;
    ts_step_cost_fit(&c, &a, &b);
    CHECK(a == 0.0 && fabs(b - 1.8e6) < 1e3); /* (decay weighs the later point a little more) */
}

static void test_ignores_empty_steps(void) {
    ts_step_cost c;
    ts_step_cost_init(&c);
    ts_step_cost_add(&c, 0, 5000);
    ts_step_cost_add(&c, 4, 0);
    double a, b;
    ts_step_cost_fit(&c, &a, &b);
    CHECK(a == 0.0 && b == 0.0);
}

static void test_follows_a_change(void) {
    ts_step_cost c;
    ts_step_cost_init(&c);
    for (int i = 0; i < 500; i++) {
        int n = 1 + i % 32;
        ts_step_cost_add(&c, n, 10000000 + (int64_t)n * 1000000);
    }
    for (int i = 0; i < 3000; i++) { /* the machine got busy: no free tokens, 2 ms each */
        int n = 1 + i % 32;
        ts_step_cost_add(&c, n, (int64_t)n * 2000000);
    }
    CHECK(ts_step_cost_free_tokens(&c) < 0.01);
    double a, b;
    ts_step_cost_fit(&c, &a, &b);
    CHECK(fabs(b - 2e6) < 2e3);
}

int main(void) {
    RUN(test_nothing_seen);
    RUN(test_exact_line);
    RUN(test_one_size_is_proportional);
    RUN(test_negative_fixed_part_is_proportional);
    RUN(test_ignores_empty_steps);
    RUN(test_follows_a_change);
    return test_summary();
}
