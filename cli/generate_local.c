/*
 * generate_local.c — one request through the local scheduler (generate_local.h).
 */
#include "cli/generate_local.h"
#include "common/clock.h"
#include "common/error.h"

static void on_event(void *user, const ts_sched_event *ev) {
    ts_local_gen *g = user;
    ts_buf_clear(&g->piece);
    if (ev->token >= 0) {
        if (g->t_first_token == 0) g->t_first_token = ts_now_ns();
        if (ts_generate_output_tokens(&g->out, &ev->token, 1)) g->rc = TS_E_NOMEM;
        if (ts_detok_push(&g->detok, g->tok, ev->token, &g->piece)) g->rc = TS_E_NOMEM;
    }
    g->n_cached = ev->n_cached;
    if (ev->finish != TS_FINISH_NONE) {
        g->finish = ev->finish;
        g->done = true;
        if (ts_detok_flush(&g->detok, &g->piece)) g->rc = TS_E_NOMEM;
    }
    if (ts_generate_output_text(&g->out, g->piece.data, g->piece.len)) g->rc = TS_E_NOMEM;
}

int ts_local_gen_submit(ts_local_gen *g, ts_sched *sched, uint64_t id, const int32_t *prompt,
                        size_t n_prompt, const ts_request_params *params) {
    g->t_start = ts_now_ns();
    return ts_sched_submit(sched, id, prompt, (int32_t)n_prompt, params);
}

int ts_local_gen_run(ts_local_gen *g, ts_sched *sched) {
    int rc = TS_OK;
    while (!rc && !g->done && ts_sched_has_work(sched)) {
        rc = ts_sched_step(sched, on_event, g);
        if (!rc) rc = g->rc;
    }
    return rc;
}

void ts_local_gen_free(ts_local_gen *g) {
    ts_generate_output_free(&g->out);
    ts_buf_free(&g->piece);
}

int ts_sampling_flags_add(ts_sampling_flags *s, ts_request_params *p, const char *max_tokens_help,
                          ts_flag *flags) {
    *s = (ts_sampling_flags){p->temperature, p->top_p, p->min_p, p->repetition_penalty,
                             (int64_t)p->seed};
    int n = 0;
    flags[n++] = (ts_flag){"max-tokens", 'n', TS_FLAG_INT, &p->max_tokens, max_tokens_help, 0, 0};
    flags[n++] = (ts_flag){"temperature", 0, TS_FLAG_DOUBLE, &s->temperature,
                           "sampling temperature; 0 = greedy", 0, 0};
    flags[n++] = (ts_flag){"top-k", 0, TS_FLAG_INT, &p->top_k,
                           "keep the k most likely tokens; 0 = off", 0, 0};
    flags[n++] = (ts_flag){"top-p", 0, TS_FLAG_DOUBLE, &s->top_p,
                           "nucleus sampling mass; 1 = off", 0, 0};
    flags[n++] = (ts_flag){"min-p", 0, TS_FLAG_DOUBLE, &s->min_p,
                           "drop tokens below min-p times the top probability; 0 = off", 0, 0};
    flags[n++] = (ts_flag){"repeat-penalty", 0, TS_FLAG_DOUBLE, &s->repeat_penalty,
                           "penalty for recently seen tokens; 1 = off", 0, 0};
    flags[n++] = (ts_flag){"repeat-last-n", 0, TS_FLAG_INT, &p->repetition_last_n,
                           "tokens the repeat penalty looks back over", 0, 0};
    flags[n++] = (ts_flag){"seed", 0, TS_FLAG_INT64, &s->seed, "random seed for sampling", 0, 0};
    return n;
}

void ts_sampling_flags_apply(const ts_sampling_flags *s, ts_request_params *p) {
    p->temperature = (float)s->temperature;
    p->top_p = (float)s->top_p;
    p->min_p = (float)s->min_p;
    p->repetition_penalty = (float)s->repeat_penalty;
    p->seed = (uint64_t)s->seed;
}
