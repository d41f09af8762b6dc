/* step_cost.c — see step_cost.h. */
#include "node/step_cost.h"

#include <string.h>

/* Each step's weight decays by this per later step: about the last 200 steps count. */
#define DECAY 0.995

void ts_step_cost_init(ts_step_cost *c) {
    memset(c, 0, sizeof *c);
}

void ts_step_cost_add(ts_step_cost *c, int32_t n_tokens, int64_t ns) {
    if (n_tokens <= 0 || ns <= 0) return;
    double x = n_tokens, y = (double)ns;
    c->w = c->w * DECAY + 1.0;
    c->x = c->x * DECAY + x;
    c->y = c->y * DECAY + y;
    c->xx = c->xx * DECAY + x * x;
    c->xy = c->xy * DECAY + x * y;
}

void ts_step_cost_fit(const ts_step_cost *c, double *fixed_ns, double *per_token_ns) {
    *fixed_ns = *per_token_ns = 0.0;
    if (c->w <= 0.0 || c->x <= 0.0) return;
    double mx = c->x / c->w, my = c->y / c->w;
    double var = c->xx / c->w - mx * mx, cov = c->xy / c->w - mx * my;
    /* Sizes that hardly vary (var below a quarter token squared) or a fit that makes tokens free
     * or the fixed part negative (noise): proportional to the tokens. */
    if (var > 0.25 && cov > 0.0) {
        double b = cov / var, a = my - b * mx;
        if (a >= 0.0) {
            *fixed_ns = a;
            *per_token_ns = b;
            return;
        }
    }
    *per_token_ns = my / mx;
}

double ts_step_cost_free_tokens(const ts_step_cost *c) {
    double a, b;
    ts_step_cost_fit(c, &a, &b);
    return b > 0.0 ? a / b : 0.0;
}
