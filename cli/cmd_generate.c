/*
 * cmd_generate.c — `tessera generate`: stream a completion of one prompt to the terminal.
 *
 * Locally it loads the model, runs the same engine and continuous-batching scheduler a node
 * runs (with one request), and writes each piece of text as soon as its token is decoded. Under
 * `mpirun -np N` it runs one tensor-parallel group of N ranks: rank 0 tokenizes, schedules and
 * prints; the other ranks follow its step plans. With --json it prints one JSON object at the end
 * instead (prompt_ids, completion_ids, completion, finish_reason, usage, timings).
 */
#include "cli/commands.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/flags.h"
#include "common/json.h"
#include "common/log.h"
#include "node/runtime.h"
#include "node/scheduler.h"
#include "tokenizer/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct generate_state {
    const ts_tokenizer *tok;
    bool json;
    ts_detok detok;
    ts_buf piece;      /* text of the current event */
    ts_buf completion; /* all text streamed so far */
    int32_t *ids;
    size_t n_ids, cap_ids;
    ts_finish_reason finish;
    bool done;
    int64_t t_start, t_first_token;
    int n_cached;
    int rc;
} generate_state;

static void on_event(void *user, const ts_sched_event *ev) {
    generate_state *g = user;
    ts_buf_clear(&g->piece);
    if (ev->token >= 0) {
        if (g->t_first_token == 0) g->t_first_token = ts_now_ns();
        if (g->n_ids == g->cap_ids) {
            size_t cap = g->cap_ids ? g->cap_ids * 2 : 64;
            int32_t *ids = realloc(g->ids, cap * sizeof *ids);
            if (!ids) {
                g->rc = ts_error_set(TS_E_NOMEM, "out of memory");
                return;
            }
            g->ids = ids;
            g->cap_ids = cap;
        }
        g->ids[g->n_ids++] = ev->token;
        if (ts_detok_push(&g->detok, g->tok, ev->token, &g->piece)) g->rc = TS_E_NOMEM;
    }
    g->n_cached = ev->n_cached;
    if (ev->finish != TS_FINISH_NONE) {
        g->finish = ev->finish;
        g->done = true;
        if (ts_detok_flush(&g->detok, &g->piece)) g->rc = TS_E_NOMEM;
    }
    if (g->piece.len > 0) {
        if (ts_buf_append(&g->completion, g->piece.data, g->piece.len)) g->rc = TS_E_NOMEM;
        if (!g->json) {
            fwrite(g->piece.data, 1, g->piece.len, stdout);
            fflush(stdout);
        }
    }
}

static void write_ids(ts_json_writer *w, const char *key, const int32_t *ids, size_t n) {
    ts_jw_key(w, key);
    ts_jw_array_begin(w);
    for (size_t i = 0; i < n; i++) ts_jw_int(w, ids[i]);
    ts_jw_array_end(w);
}

static int print_json(const generate_state *g, const int32_t *prompt, size_t n_prompt,
                      const ts_sched_stats *st) {
    ts_buf out = {0};
    ts_json_writer w;
    ts_jw_init(&w, &out);
    ts_jw_object_begin(&w);
    write_ids(&w, "prompt_ids", prompt, n_prompt);
    write_ids(&w, "completion_ids", g->ids, g->n_ids);
    ts_jw_key(&w, "completion");
    ts_jw_string_n(&w, g->completion.data ? g->completion.data : "", g->completion.len);
    ts_jw_key(&w, "finish_reason");
    ts_jw_string(&w, ts_finish_reason_name(g->finish));
    ts_jw_key(&w, "usage");
    ts_jw_object_begin(&w);
    ts_jw_key(&w, "prompt_tokens");
    ts_jw_int(&w, (int64_t)n_prompt);
    ts_jw_key(&w, "completion_tokens");
    ts_jw_int(&w, (int64_t)g->n_ids);
    ts_jw_key(&w, "cached_prompt_tokens");
    ts_jw_int(&w, g->n_cached);
    ts_jw_object_end(&w);
    ts_jw_key(&w, "timings");
    ts_jw_object_begin(&w);
    ts_jw_key(&w, "ttft_ms");
    ts_jw_double(&w, g->t_first_token ? ts_ns_to_ms(g->t_first_token - g->t_start) : 0.0);
    ts_jw_key(&w, "prefill_tokens_per_s");
    ts_jw_double(&w, st->prefill_ns ? (double)st->prefill_tokens / ts_ns_to_s(st->prefill_ns) : 0);
    ts_jw_key(&w, "decode_tokens_per_s");
    ts_jw_double(&w, st->decode_ns ? (double)st->decode_tokens / ts_ns_to_s(st->decode_ns) : 0);
    ts_jw_key(&w, "total_ms");
    ts_jw_double(&w, ts_ns_to_ms(ts_now_ns() - g->t_start));
    ts_jw_object_end(&w);
    ts_jw_object_end(&w);
    int rc = ts_jw_finish(&w);
    if (!rc) printf("%s\n", out.data);
    ts_buf_free(&out);
    return rc;
}

int ts_cmd_generate(int argc, char **argv) {
    ts_runtime_options ro;
    ts_runtime_options_default(&ro);
    ts_request_params params = ts_request_params_default();
    const char *prompt = NULL;
    bool json = false, no_bos = false, ignore_eos = false;
    double temperature = 0.0, top_p = 1.0, min_p = 0.0, repeat_penalty = 1.0;
    int64_t seed = 0;
    ts_flag flags[TS_RUNTIME_MAX_FLAGS + 16];
    int n = ts_runtime_flags(&ro, flags);
    flags[n++] = (ts_flag){"prompt", 'p', TS_FLAG_STRING, &prompt, "prompt text", 0, 0};
    flags[n++] = (ts_flag){"max-tokens", 'n', TS_FLAG_INT, &params.max_tokens,
                           "tokens to generate", 1, 1 << 24};
    flags[n++] = (ts_flag){"temperature", 0, TS_FLAG_DOUBLE, &temperature,
                           "sampling temperature; 0 = greedy", 0, 100};
    flags[n++] = (ts_flag){"top-k", 0, TS_FLAG_INT, &params.top_k, "keep the k most likely tokens; 0 = off",
                           0, 1 << 30};
    flags[n++] = (ts_flag){"top-p", 0, TS_FLAG_DOUBLE, &top_p, "nucleus sampling mass; 1 = off",
                           1e-9, 1};
    flags[n++] = (ts_flag){"min-p", 0, TS_FLAG_DOUBLE, &min_p,
                           "drop tokens below min-p times the top probability; 0 = off", 0, 1};
    flags[n++] = (ts_flag){"repeat-penalty", 0, TS_FLAG_DOUBLE, &repeat_penalty,
                           "penalty for recently seen tokens; 1 = off", 1e-3, 10};
    flags[n++] = (ts_flag){"repeat-last-n", 0, TS_FLAG_INT, &params.repetition_last_n,
                           "tokens the repeat penalty looks back over", 0, 1 << 24};
    flags[n++] = (ts_flag){"seed", 0, TS_FLAG_INT64, &seed, "random seed for sampling", 0, 0};
    flags[n++] = (ts_flag){"no-bos", 0, TS_FLAG_BOOL, &no_bos, "do not add the BOS token", 0, 0};
    flags[n++] = (ts_flag){"ignore-eos", 0, TS_FLAG_BOOL, &ignore_eos,
                           "keep generating after the end-of-sequence token", 0, 0};
    flags[n++] = (ts_flag){"json", 0, TS_FLAG_BOOL, &json, "print one JSON object at the end", 0, 0};
    ts_flags_result res = {NULL, 0, 0};
    int rc = ts_flags_parse("tessera generate [-m MODEL] -p PROMPT [flags]", flags, n, argc, argv,
                            1, &res);
    if (rc == TS_FLAGS_HELP) return TS_EXIT_OK;
    if (rc) return ts_cli_fail("generate", TS_EXIT_USAGE);
    if (!prompt) {
        ts_error_set(TS_E_INVALID, "missing --prompt (-p)");
        return ts_cli_fail("generate", TS_EXIT_USAGE);
    }
    params.temperature = (float)temperature;
    params.top_p = (float)top_p;
    params.min_p = (float)min_p;
    params.repetition_penalty = (float)repeat_penalty;
    params.seed = (uint64_t)seed;

    ts_runtime *rt = NULL;
    rc = ts_runtime_open(&ro, &rt);
    if (rc) return ts_cli_fail("generate", ts_cli_exit_code(rc));
    if (!ts_runtime_is_leader(rt)) {
        rc = ts_runtime_follow(rt);
        ts_runtime_close(rt);
        return rc ? ts_cli_fail("generate", TS_EXIT_FAILURE) : TS_EXIT_OK;
    }

    ts_tokenizer *tok = NULL;
    rc = ts_tokenizer_from_gguf(ts_runtime_gguf(rt), &tok);
    if (rc) {
        ts_runtime_close(rt);
        return ts_cli_fail("generate", TS_EXIT_FAILURE);
    }
    int32_t *prompt_ids = NULL;
    size_t n_prompt = 0;
    bool add_bos = !no_bos && ts_tokenizer_adds_bos(tok);
    generate_state g = {.tok = tok, .json = json};
    rc = ts_tokenizer_encode(tok, prompt, strlen(prompt), add_bos, &prompt_ids, &n_prompt);
    if (!rc && !ignore_eos) {
        int32_t eos = ts_tokenizer_eos(tok);
        if (eos >= 0) params.stop_ids[params.n_stop_ids++] = eos;
    }
    ts_sched *sched = ts_runtime_scheduler(rt);
    g.t_start = ts_now_ns();
    if (!rc) rc = ts_sched_submit(sched, 1, prompt_ids, (int32_t)n_prompt, &params);
    if (rc) {
        int code = ts_cli_exit_code(rc);
        ts_cli_fail("generate", code);
        free(prompt_ids);
        ts_tokenizer_destroy(tok);
        ts_runtime_close(rt);
        return code;
    }
    if (!json) {
        fputs(prompt, stdout);
        fflush(stdout);
    }
    while (!rc && !g.done && ts_sched_has_work(sched)) {
        rc = ts_sched_step(sched, on_event, &g);
        if (!rc) rc = g.rc;
    }
    ts_sched_stats stats;
    ts_sched_get_stats(sched, &stats);
    if (!rc && json) rc = print_json(&g, prompt_ids, n_prompt, &stats);
    else if (!rc) putchar('\n');
    if (rc) ts_cli_fail("generate", TS_EXIT_FAILURE);
    free(prompt_ids);
    free(g.ids);
    ts_buf_free(&g.piece);
    ts_buf_free(&g.completion);
    ts_tokenizer_destroy(tok);
    int close_rc = ts_runtime_close(rt);
    if (!rc && close_rc) rc = ts_cli_fail("generate", TS_EXIT_FAILURE);
    return rc ? TS_EXIT_FAILURE : TS_EXIT_OK;
}
