/*
 * cmd_generate.c — `tessera generate`: stream a completion of one prompt to the terminal.
 *
 * Locally it loads the model, runs the same engine and continuous-batching scheduler a node
 * runs (with one request), and writes each piece of text as soon as its token is decoded. Under
 * `mpirun -np N` it runs one tensor-parallel group of N ranks: rank 0 tokenizes, schedules and
 * prints; the other ranks follow its step plans. With --json it prints one JSON object at the end
 * instead (prompt_ids, completion_ids, completion, finish_reason, usage, timings).
 *
 * With --server HOST:PORT it runs nothing locally: the prompt goes to a cluster's public API
 * (tessera.v1.Inference/Generate, a server stream) and the output is the same — the text as it
 * streams, or the same JSON object (prompt_ids from the server's Tokenize, usage from the last
 * message, timings measured here). A gRPC error status ends it with one line
 * "tessera generate: STATUS: message" and exit 1 (INVALID_ARGUMENT: exit 2).
 */
#include "cli/commands.h"
#include "cli/generate_local.h"
#include "cli/generate_output.h"
#include "cli/remote.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/flags.h"
#include "common/log.h"
#include "node/runtime.h"
#include "node/scheduler.h"
#include "request/request_pb.h"
#include "tessera/v1/inference.pb-c.h"
#include "tokenizer/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int print_json(const ts_local_gen *g, const int32_t *prompt, size_t n_prompt,
                      const ts_sched_stats *st) {
    ts_generate_summary s = {
        .prompt_ids = prompt,
        .n_prompt = n_prompt,
        .finish = g->finish,
        .prompt_tokens = (int64_t)n_prompt,
        .completion_tokens = (int64_t)g->out.n_ids,
        .cached_prompt_tokens = g->n_cached,
        .ttft_ms = g->t_first_token ? ts_ns_to_ms(g->t_first_token - g->t_start) : 0.0,
        .prefill_tokens_per_s =
            st->prefill_ns ? (double)st->prefill_tokens / ts_ns_to_s(st->prefill_ns) : 0,
        .decode_tokens_per_s =
            st->decode_ns ? (double)st->decode_tokens / ts_ns_to_s(st->decode_ns) : 0,
        .total_ms = ts_ns_to_ms(ts_now_ns() - g->t_start),
    };
    return ts_generate_output_json(&g->out, &s);
}

/* ---- --server: the same output, streamed from a cluster's Generate ------------------------- */

typedef struct remote_args {
    const char *server, *tls_ca;
    bool json;
    const ts_request *req; /* validated */
} remote_args;

static int remote_fail(int rc) {
    fprintf(stderr, "tessera generate: %s\n", ts_error_message());
    return ts_remote_exit_code(rc);
}

static int remote_request(const remote_args *a, ts_buf *bytes) {
    Tessera__V1__GenerateRequest req;
    Tessera__V1__SamplingParams sp;
    ts_request_to_generate(a->req, &req, &sp);
    return ts_remote_pack(&req.base, bytes);
}

/* Reads the stream to its end into `out` (the prompt goes to stdout first, in text mode, once
 * the server has answered). The last message (finish reason and usage) goes to *last, which the
 * caller frees with tessera__v1__generate_response__free_unpacked. */
static int remote_read(ts_rpc_stream *s, const char *prompt, ts_generate_output *out,
                       int64_t *t_first, ts_finish_reason *finish,
                       Tessera__V1__GenerateResponse **last) {
    ts_buf msg = {0};
    bool started = false;
    int got, rc = 0;
    while (!rc && (got = ts_rpc_stream_recv(s, &msg, -1)) == 1) {
        Tessera__V1__GenerateResponse *r =
            tessera__v1__generate_response__unpack(NULL, msg.len, (const uint8_t *)msg.data);
        if (!r) {
            rc = ts_error_set(TS_E_FORMAT, "Generate: a message from the server does not parse");
            break;
        }
        if (!started && !out->json) { /* the prompt once the server has accepted the request */
            fputs(prompt, stdout);
            fflush(stdout);
        }
        started = true;
        if (r->n_token_ids && *t_first == 0) *t_first = ts_now_ns();
        rc = ts_generate_output_tokens(out, r->token_ids, r->n_token_ids);
        if (!rc) rc = ts_generate_output_text(out, r->text, strlen(r->text));
        if (r->finish_reason != TESSERA__V1__FINISH_REASON__FINISH_REASON_UNSPECIFIED) {
            *finish = ts_finish_reason_from_pb(r->finish_reason);
            if (*last) tessera__v1__generate_response__free_unpacked(*last, NULL);
            *last = r;
        } else {
            tessera__v1__generate_response__free_unpacked(r, NULL);
        }
    }
    ts_buf_free(&msg);
    if (rc) ts_rpc_stream_cancel(s);
    int status = ts_rpc_stream_finish(s, 10000); /* the status follows the last message */
    if (!rc) rc = status;
    if (!rc && !*last)
        rc = ts_error_set(TS_E_FORMAT, "Generate: the stream ended without a finish reason");
    return rc;
}

static int generate_remote(const remote_args *a) {
    ts_rpc_channel *ch = NULL;
    int rc = ts_remote_connect(a->server, a->tls_ca, &ch);
    if (rc) return remote_fail(rc);
    int32_t *prompt_ids = NULL;
    size_t n_prompt = 0;
    /* --json reports the prompt ids: the server's tokenizer says what they are. */
    const ts_request *q = a->req;
    int timeout_ms = (int)q->timeout_ms;
    if (a->json)
        rc = ts_remote_tokenize(ch, q->model, q->prompt, q->no_bos, timeout_ms, &prompt_ids,
                                &n_prompt);
    ts_buf req = {0};
    if (!rc) rc = remote_request(a, &req);
    ts_rpc_stream *s = NULL;
    int64_t t_start = ts_now_ns(), t_first = 0;
    if (!rc)
        rc = ts_rpc_stream_open_request(ch, TS_REMOTE_GENERATE, req.data, req.len, timeout_ms, &s);
    ts_buf_free(&req);
    ts_generate_output out = {.json = a->json};
    ts_finish_reason finish = TS_FINISH_NONE;
    Tessera__V1__GenerateResponse *last = NULL;
    if (!rc) rc = remote_read(s, q->prompt, &out, &t_first, &finish, &last);
    int64_t t_end = ts_now_ns();
    int exit_code = TS_EXIT_OK;
    if (!rc && a->json) {
        const Tessera__V1__Usage *u = last->usage;
        double ttft = t_first ? ts_ns_to_ms(t_first - t_start) : 0.0;
        double prefill_ms = u ? u->ttft_ms - u->queue_ms : 0.0;
        double decode_s = t_first ? ts_ns_to_s(t_end - t_first) : 0.0;
        ts_generate_summary sum = {
            .prompt_ids = prompt_ids,
            .n_prompt = n_prompt,
            .finish = finish,
            .prompt_tokens = u ? u->prompt_tokens : (int64_t)n_prompt,
            .completion_tokens = u ? u->completion_tokens : (int64_t)out.n_ids,
            .cached_prompt_tokens = u ? u->cached_prompt_tokens : 0,
            .ttft_ms = ttft,
            .prefill_tokens_per_s = prefill_ms > 0 && u ? u->prompt_tokens / (prefill_ms / 1e3) : 0,
            .decode_tokens_per_s =
                out.n_ids > 1 && decode_s > 0 ? (double)(out.n_ids - 1) / decode_s : 0,
            .total_ms = ts_ns_to_ms(t_end - t_start),
        };
        rc = ts_generate_output_json(&out, &sum);
        if (rc) exit_code = ts_cli_fail("generate", TS_EXIT_FAILURE);
    } else if (!rc) {
        putchar('\n');
    } else {
        if (!a->json && out.completion.len) putchar('\n');
        exit_code = remote_fail(rc);
    }
    if (last) tessera__v1__generate_response__free_unpacked(last, NULL);
    ts_generate_output_free(&out);
    ts_rpc_stream_destroy(s);
    ts_rpc_channel_destroy(ch);
    free(prompt_ids);
    return exit_code;
}

/* ---- the local model: the engine and scheduler a node runs, for one request ---------------- */

static int generate_local(const ts_runtime_options *ro, ts_request *req, bool parse_special,
                          bool json) {
    ts_runtime *rt = NULL;
    int rc = ts_runtime_open(ro, &rt);
    if (rc) return ts_cli_fail("generate", ts_cli_exit_code(rc));
    if (!ts_runtime_is_leader(rt)) {
        rc = ts_runtime_follow(rt);
        ts_runtime_close(rt);
        return rc ? ts_cli_fail("generate", TS_EXIT_FAILURE) : TS_EXIT_OK;
    }

    ts_tokenizer *tok = NULL;
    rc = ts_tokenizer_for_model(ts_runtime_model_path(rt), ts_runtime_gguf(rt), &tok);
    if (rc) {
        ts_runtime_close(rt);
        return ts_cli_fail("generate", TS_EXIT_FAILURE);
    }
    int32_t *prompt_ids = NULL;
    size_t n_prompt = 0;
    const char *prompt = req->prompt;
    bool add_bos = !req->no_bos && ts_tokenizer_adds_bos(tok);
    ts_local_gen g = {.tok = tok, .out = {.json = json}};
    rc = ts_tokenizer_encode(tok, prompt, strlen(prompt), add_bos, parse_special, &prompt_ids,
                             &n_prompt);
    size_t n_eog = 0;
    const int32_t *eog = ts_tokenizer_eog_ids(tok, &n_eog);
    if (!rc) rc = ts_request_add_eos_ids(req, eog, n_eog); /* EOS, EOT, <|im_end|>, ... */
    ts_sched *sched = ts_runtime_scheduler(rt);
    if (!rc) rc = ts_local_gen_submit(&g, sched, 1, prompt_ids, n_prompt, &req->params);
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
    rc = ts_local_gen_run(&g, sched);
    ts_sched_stats stats;
    ts_sched_get_stats(sched, &stats);
    if (!rc && json) rc = print_json(&g, prompt_ids, n_prompt, &stats);
    else if (!rc) putchar('\n');
    if (rc) ts_cli_fail("generate", TS_EXIT_FAILURE);
    free(prompt_ids);
    ts_local_gen_free(&g);
    ts_tokenizer_destroy(tok);
    int close_rc = ts_runtime_close(rt);
    if (!rc && close_rc) rc = ts_cli_fail("generate", TS_EXIT_FAILURE);
    return rc ? TS_EXIT_FAILURE : TS_EXIT_OK;
}

int ts_cmd_generate(int argc, char **argv) {
    ts_runtime_options ro;
    ts_runtime_options_default(&ro);
    ts_request_params params = ts_request_params_default();
    const char *prompt = NULL;
    bool json = false, no_bos = false, ignore_eos = false, parse_special = false;
    const char *server = NULL, *model_name = NULL, *tls_ca = NULL;
    int timeout_ms = 0;
    /* The request's fields have no ranges here: their limits are request/request.h's table,
     * checked by ts_request_validate below (as at every other front door). */
    ts_flag flags[TS_RUNTIME_MAX_FLAGS + 20];
    int n = ts_runtime_flags(&ro, flags);
    flags[n++] = (ts_flag){"prompt", 'p', TS_FLAG_STRING, &prompt, "prompt text", 0, 0};
    ts_sampling_flags sampling;
    n += ts_sampling_flags_add(&sampling, &params, "tokens to generate", flags + n);
    flags[n++] = (ts_flag){"no-bos", 0, TS_FLAG_BOOL, &no_bos, "do not add the BOS token", 0, 0};
    flags[n++] = (ts_flag){"parse-special", 0, TS_FLAG_BOOL, &parse_special,
                           "the prompt is trusted: special-token text in it (<|im_start|>, ...) "
                           "becomes the token (local model only)",
                           0, 0};
    flags[n++] = (ts_flag){"ignore-eos", 0, TS_FLAG_BOOL, &ignore_eos,
                           "keep generating after the end-of-sequence token", 0, 0};
    flags[n++] = (ts_flag){"json", 0, TS_FLAG_BOOL, &json, "print one JSON object at the end", 0, 0};
    flags[n++] = (ts_flag){"server", 0, TS_FLAG_STRING, &server,
                           "HOST:PORT of a cluster (tessera up): generate there; the runtime flags "
                           "(-m, --threads, ...) are then not used",
                           0, 0};
    flags[n++] = (ts_flag){"tls-ca", 0, TS_FLAG_STRING, &tls_ca, TS_REMOTE_TLS_CA_HELP, 0, 0};
    flags[n++] = (ts_flag){"model-name", 0, TS_FLAG_STRING, &model_name,
                           "with --server: the served model to use; default: the server's", 0, 0};
    flags[n++] = (ts_flag){"timeout-ms", 0, TS_FLAG_INT, &timeout_ms,
                           "with --server: deadline of the request; 0 = none", 0, 0};
    ts_flags_result res = {NULL, 0, 0};
    int rc = ts_flags_parse("tessera generate [-m MODEL] -p PROMPT [flags]", flags, n, argc, argv,
                            1, &res);
    if (rc == TS_FLAGS_HELP) return TS_EXIT_OK;
    if (rc) return ts_cli_fail("generate", TS_EXIT_USAGE);
    if (!prompt) {
        ts_error_set(TS_E_INVALID, "missing --prompt (-p)");
        return ts_cli_fail("generate", TS_EXIT_USAGE);
    }
    if (server && parse_special) {
        ts_error_set(TS_E_INVALID, "--parse-special needs a local model (the server tokenizes "
                                   "prompts as untrusted text)");
        return ts_cli_fail("generate", TS_EXIT_USAGE);
    }
    ts_sampling_flags_apply(&sampling, &params);
    ts_request req;
    ts_request_init(&req);
    req.params = params;
    req.no_bos = no_bos;
    req.ignore_eos = ignore_eos;
    req.timeout_ms = timeout_ms;
    req.has_seed = true; /* --seed (0 by default): the same command, the same text */
    rc = ts_request_set_text(&req, prompt);
    if (!rc && model_name) rc = ts_request_set_model(&req, model_name);
    if (!rc) rc = ts_request_validate(&req, NULL); /* the model's limits: the scheduler's */
    int exit_code;
    if (rc)
        exit_code = ts_cli_fail("generate", ts_cli_exit_code(rc));
    else if (server)
        exit_code = generate_remote(&(remote_args){server, tls_ca, json, &req});
    else
        exit_code = generate_local(&ro, &req, parse_special, json);
    ts_request_free(&req);
    return exit_code;
}
