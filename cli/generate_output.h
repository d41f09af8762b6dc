/*
 * generate_output.h — what `tessera generate` prints, the same whether the tokens come from the
 * local scheduler or from a server (--server): the text streamed to stdout as it arrives, or
 * with --json one object at the end:
 *
 *   {"prompt_ids": [...], "completion_ids": [...], "completion": "...", "finish_reason": "stop",
 *    "usage": {"prompt_tokens", "completion_tokens", "cached_prompt_tokens"},
 *    "timings": {"ttft_ms", "prefill_tokens_per_s", "decode_tokens_per_s", "total_ms"}}
 *
 * One owner thread; zero-initialise, set `json`, free with ts_generate_output_free.
 */
#ifndef TS_CLI_GENERATE_OUTPUT_H
#define TS_CLI_GENERATE_OUTPUT_H

#include "common/buf.h"
#include "node/scheduler.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ts_generate_output {
    bool json;         /* true: collect only; false: also write text to stdout as it comes */
    ts_buf completion; /* all completion text so far */
    int32_t *ids;      /* completion token ids so far */
    size_t n_ids, cap_ids;
} ts_generate_output;

/* Appends completion token ids. 0 or TS_E_NOMEM. */
int ts_generate_output_tokens(ts_generate_output *o, const int32_t *ids, size_t n);

/* Appends completion text and, unless json, writes it to stdout at once. 0 or TS_E_NOMEM. */
int ts_generate_output_text(ts_generate_output *o, const char *text, size_t n);

typedef struct ts_generate_summary {
    const int32_t *prompt_ids;
    size_t n_prompt;
    ts_finish_reason finish;
    int64_t prompt_tokens, completion_tokens, cached_prompt_tokens;
    double ttft_ms, prefill_tokens_per_s, decode_tokens_per_s, total_ms;
} ts_generate_summary;

/* Prints the --json object (one line) to stdout. 0 or the JSON writer's error. */
int ts_generate_output_json(const ts_generate_output *o, const ts_generate_summary *s);

void ts_generate_output_free(ts_generate_output *o);

#endif
