/*
 * generate_local.h — one request through the local scheduler (the engine a node runs), its text
 * decoded as the tokens come and passed to a ts_generate_output (which streams it to stdout
 * unless json): what `tessera generate` and each turn of `tessera chat` do.
 *
 *   ts_local_gen g = {.tok = tok, .out = {.json = json}};
 *   rc = ts_local_gen_submit(&g, sched, id, ids, n, &params);   // refused: nothing ran
 *   if (!rc) rc = ts_local_gen_run(&g, sched);                  // until the request finishes
 *   ... g.out.completion, g.out.ids, g.finish ...
 *   ts_local_gen_free(&g);
 */
#ifndef TS_CLI_GENERATE_LOCAL_H
#define TS_CLI_GENERATE_LOCAL_H

#include "cli/generate_output.h"
#include "common/buf.h"
#include "common/flags.h"
#include "node/scheduler.h"
#include "tokenizer/tokenizer.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct ts_local_gen {
    const ts_tokenizer *tok;
    ts_detok detok;
    ts_buf piece; /* text of the current event */
    ts_generate_output out;
    ts_finish_reason finish;
    bool done;
    int64_t t_start, t_first_token;
    int n_cached;
    int rc;
} ts_local_gen;

/* Records the start time and submits the prompt (ts_sched_submit's errors). */
int ts_local_gen_submit(ts_local_gen *g, ts_sched *sched, uint64_t id, const int32_t *prompt,
                        size_t n_prompt, const ts_request_params *params);
/* Steps the scheduler until the request finishes. 0, TS_E_NOMEM or the step's error. */
int ts_local_gen_run(ts_local_gen *g, ts_sched *sched);
void ts_local_gen_free(ts_local_gen *g);

/* The sampling flags of generate and chat: -n/--max-tokens, --temperature, --top-k, --top-p,
 * --min-p, --repeat-penalty, --repeat-last-n, --seed. Without ranges: request/request.h's table
 * checks the values (ts_request_validate), as at every front door. */
enum { TS_SAMPLING_FLAGS = 8 };
typedef struct ts_sampling_flags {
    double temperature, top_p, min_p, repeat_penalty;
    int64_t seed;
} ts_sampling_flags;

/* Appends the flags, bound to s and to p's integer fields, starting from p's values; returns how
 * many (TS_SAMPLING_FLAGS). */
int ts_sampling_flags_add(ts_sampling_flags *s, ts_request_params *p, const char *max_tokens_help,
                          ts_flag *flags);
/* Copies the parsed values into p. */
void ts_sampling_flags_apply(const ts_sampling_flags *s, ts_request_params *p);

#endif
