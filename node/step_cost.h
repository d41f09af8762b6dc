/*
 * step_cost.h — what an engine step costs, learned from the steps that ran: a line
 * time(n) = fixed + per_token * n over the step's token rows n, fitted by least squares with
 * exponential forgetting (recent steps weigh more, so a machine whose load changes is followed).
 *
 * The scheduler uses it to keep batch filler from slowing interactive work (scheduler.h): the
 * fixed part (reading the weights once per step: large on a GPU or at batch 1 on a CPU) is what
 * extra tokens share for free, the per-token part is what each one adds. The ratio
 * fixed / per_token — the "free tokens" of a step — is all the budgets need, and is unitless, so
 * no clock or machine constant appears in the scheduler.
 *
 * Until the steps seen vary enough in size to separate the two parts, the model says a step's
 * time is proportional to its tokens (free tokens 0): the cautious answer, since it gives batch
 * filler the least room beside interactive work.
 *
 * Threads: a plain struct owned by one thread (the scheduler's).
 */
#ifndef TS_NODE_STEP_COST_H
#define TS_NODE_STEP_COST_H

#include <stdint.h>

typedef struct ts_step_cost {
    double w, x, y, xx, xy; /* decayed sums: weight, tokens, ns, tokens^2, tokens * ns */
} ts_step_cost;

void ts_step_cost_init(ts_step_cost *c);

/* One step of n_tokens rows that took ns nanoseconds. */
void ts_step_cost_add(ts_step_cost *c, int32_t n_tokens, int64_t ns);

/* The fitted line; both 0 before any step. per_token_ns > 0 once a step was seen, fixed_ns >= 0. */
void ts_step_cost_fit(const ts_step_cost *c, double *fixed_ns, double *per_token_ns);

/* fixed / per_token: how many tokens cost as much as a step's fixed part (0 until known). */
double ts_step_cost_free_tokens(const ts_step_cost *c);

#endif
