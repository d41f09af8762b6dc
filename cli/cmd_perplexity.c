/*
 * cmd_perplexity.c — `tessera perplexity -m MODEL -f TEXT [--ctx N] [--chunks K] [--json]`: a
 * model's perplexity on a text, computed as llama.cpp's llama-perplexity computes it, so that
 * the two figures can be compared directly (docs/models.md lists the references).
 *
 * The text is tokenized once (BOS first when the vocabulary adds one; special-token text stays
 * text) and cut into consecutive windows of N tokens; with --chunks K only the first K. Each
 * window is evaluated from an empty cache, its first token replaced by BOS when the vocabulary
 * adds one, and only its second half is scored: for positions j = N/2 .. N-2 the model's
 * log-probability of token j + 1, so every scored token has at least N/2 tokens of context.
 * PPL = exp(mean negative log-likelihood over all scored tokens); the ± is its standard error
 * (llama.cpp's estimate: sqrt(var / (count - 1)) × PPL).
 *
 * The engine runs directly (no scheduler): the first half of a window as one sequence (in steps
 * of at most --batch-tokens), the scored positions as one-row sequences that share the window's
 * block table, so that each row yields its logits (ts_engine_step_logits) with the bits one
 * long sequence would give. Under mpirun the window runs on one tensor-parallel group.
 */
#include "cli/commands.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/flags.h"
#include "common/json.h"
#include "node/runtime.h"
#include "tokenizer/tokenizer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ppl_state {
    double nll, nll2; /* sums of -log p and its square */
    int64_t count;    /* scored tokens */
} ppl_state;

/* Per-window scratch, sized once. */
typedef struct window_bufs {
    int32_t *tokens;    /* the window, first token maybe BOS */
    int32_t *blocks;    /* block ids 0 .. */
    ts_batch_seq *seqs; /* up to max(1, rows per scoring step) */
    float *logits;      /* [rows per scoring step][n_vocab] */
    int32_t rows_per_step;
} window_bufs;

/* -log softmax(row)[target], in double like llama-perplexity. */
static double neg_log_prob(const float *row, int32_t n_vocab, int32_t target) {
    float max = row[0];
    for (int32_t i = 1; i < n_vocab; i++)
        if (row[i] > max) max = row[i];
    double sum = 0.0;
    for (int32_t i = 0; i < n_vocab; i++)
        sum += exp((double)row[i] - (double)max);
    return -((double)row[target] - (double)max - log(sum));
}

/* Prefills window positions [0, n) as one sequence, in steps of at most max_tokens. */
static int prefill(ts_engine *e, window_bufs *w, int32_t n, int32_t max_tokens, int32_t bs) {
    for (int32_t pos = 0; pos < n; pos += max_tokens) {
        int32_t rows = n - pos < max_tokens ? n - pos : max_tokens;
        ts_batch_seq seq = {0, rows, pos, 0, (pos + rows + bs - 1) / bs, false};
        ts_batch b = {rows, 1, w->tokens + pos, &seq, w->blocks, seq.n_blocks, bs};
        int rc = ts_engine_step_logits(e, &b, NULL);
        if (rc) return rc;
    }
    return TS_OK;
}

static int score_window(ts_engine *e, window_bufs *w, int32_t n_ctx, ppl_state *st) {
    const ts_engine_options *eo = ts_engine_options_get(e);
    const int32_t n_vocab = ts_engine_hparams(e)->n_vocab, bs = eo->block_size;
    const int32_t first = n_ctx / 2;
    int rc = prefill(e, w, first, eo->max_batch_tokens, bs);
    for (int32_t pos = first; !rc && pos < n_ctx - 1; pos += w->rows_per_step) {
        int32_t rows = n_ctx - 1 - pos < w->rows_per_step ? n_ctx - 1 - pos : w->rows_per_step;
        int32_t n_blocks = (pos + rows + bs - 1) / bs;
        for (int32_t i = 0; i < rows; i++)
            w->seqs[i] = (ts_batch_seq){i, 1, pos + i, 0, n_blocks, true};
        ts_batch b = {rows, rows, w->tokens + pos, w->seqs, w->blocks, n_blocks, bs};
        rc = ts_engine_step_logits(e, &b, w->logits);
        for (int32_t i = 0; !rc && i < rows; i++) {
            double v = neg_log_prob(w->logits + (size_t)i * (size_t)n_vocab, n_vocab,
                                    w->tokens[pos + i + 1]);
            st->nll += v;
            st->nll2 += v * v;
            st->count++;
        }
    }
    return rc;
}

static void report(const ppl_state *st, const char *model, const char *file, int32_t n_ctx,
                   int32_t n_chunks, size_t n_tokens, double seconds, bool json) {
    double mean = st->nll / (double)st->count, ppl = exp(mean);
    double var = st->nll2 / (double)st->count - mean * mean;
    double err = st->count > 1 && var > 0 ? sqrt(var / (double)(st->count - 1)) * ppl : 0.0;
    if (!json) {
        printf("Final estimate: PPL = %.4f +/- %.5f (%d chunks of %d tokens, %lld scored, "
               "%.1f s)\n",
               ppl, err, n_chunks, n_ctx, (long long)st->count, seconds);
        return;
    }
    ts_buf out = {0};
    ts_json_writer j;
    ts_jw_init(&j, &out);
    ts_jw_object_begin(&j);
    ts_jw_key(&j, "model");
    ts_jw_string(&j, model);
    ts_jw_key(&j, "file");
    ts_jw_string(&j, file);
    ts_jw_key(&j, "ctx");
    ts_jw_int(&j, n_ctx);
    ts_jw_key(&j, "chunks");
    ts_jw_int(&j, n_chunks);
    ts_jw_key(&j, "text_tokens");
    ts_jw_int(&j, (int64_t)n_tokens);
    ts_jw_key(&j, "scored_tokens");
    ts_jw_int(&j, st->count);
    ts_jw_key(&j, "ppl");
    ts_jw_double(&j, ppl);
    ts_jw_key(&j, "ppl_stderr");
    ts_jw_double(&j, err);
    ts_jw_key(&j, "seconds");
    ts_jw_double(&j, seconds);
    ts_jw_object_end(&j);
    if (!ts_jw_finish(&j)) printf("%s\n", out.data);
    ts_buf_free(&out);
}

static int run(ts_runtime *rt, const char *file, int32_t n_ctx, int32_t chunks, bool json) {
    ts_engine *e = ts_runtime_engine(rt);
    const ts_engine_options *eo = ts_engine_options_get(e);
    const int32_t n_vocab = ts_engine_hparams(e)->n_vocab;
    ts_buf text = {0};
    int rc = ts_buf_read_file(&text, file);
    if (rc) return rc;
    ts_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    rc = ts_tokenizer_for_model(ts_runtime_model_path(rt), ts_runtime_gguf(rt), &tok);
    bool add_bos = !rc && ts_tokenizer_adds_bos(tok);
    if (!rc) rc = ts_tokenizer_encode(tok, text.data, text.len, add_bos, false, &ids, &n_ids);
    int32_t bos = tok ? ts_tokenizer_bos(tok) : -1;
    ts_tokenizer_destroy(tok);
    ts_buf_free(&text);
    if (!rc && n_ids < 2 * (size_t)n_ctx)
        rc = ts_error_set(TS_E_INVALID,
                          "%s tokenizes to %zu tokens; a context of %d needs at "
                          "least %d (two windows)",
                          file, n_ids, n_ctx, 2 * n_ctx);
    if (rc) {
        free(ids);
        return rc;
    }
    int32_t n_chunks = (int32_t)(n_ids / (size_t)n_ctx);
    if (chunks > 0 && chunks < n_chunks) n_chunks = chunks;
    window_bufs w = {0};
    w.rows_per_step =
        eo->max_batch_seqs < eo->max_batch_tokens ? eo->max_batch_seqs : eo->max_batch_tokens;
    w.tokens = malloc((size_t)n_ctx * sizeof *w.tokens);
    w.blocks = malloc(((size_t)n_ctx / (size_t)eo->block_size + 1) * sizeof *w.blocks);
    w.seqs = malloc((size_t)w.rows_per_step * sizeof *w.seqs);
    w.logits = malloc((size_t)w.rows_per_step * (size_t)n_vocab * sizeof *w.logits);
    if (!w.tokens || !w.blocks || !w.seqs || !w.logits)
        rc = ts_error_set(TS_E_NOMEM, "out of memory for %d rows of %d logits", w.rows_per_step,
                          n_vocab);
    for (int32_t i = 0; !rc && i <= n_ctx / eo->block_size; i++)
        w.blocks[i] = i;
    ppl_state st = {0};
    int64_t t0 = ts_now_ns();
    for (int32_t c = 0; !rc && c < n_chunks; c++) {
        memcpy(w.tokens, ids + (size_t)c * (size_t)n_ctx, (size_t)n_ctx * sizeof *w.tokens);
        if (add_bos && bos >= 0) w.tokens[0] = bos;
        rc = score_window(e, &w, n_ctx, &st);
        if (!rc && !json)
            fprintf(stderr, "[%d]%.4f%s", c + 1, exp(st.nll / (double)st.count),
                    c + 1 == n_chunks ? "\n" : ",");
    }
    if (!rc)
        report(&st, ts_runtime_model_path(rt), file, n_ctx, n_chunks, n_ids,
               ts_ns_to_s(ts_now_ns() - t0), json);
    free(w.tokens);
    free(w.blocks);
    free(w.seqs);
    free(w.logits);
    free(ids);
    return rc;
}

int ts_cmd_perplexity(int argc, char **argv) {
    ts_runtime_options ro;
    ts_runtime_options_default(&ro);
    const char *file = NULL;
    int n_ctx = 512, chunks = 0;
    bool json = false;
    ts_flag flags[TS_RUNTIME_MAX_FLAGS + 4];
    int n = ts_runtime_flags(&ro, flags);
    /* --ctx is the runtime's flag: it is the window length here (llama-perplexity's -c) */
    flags[n++] = (ts_flag){"file", 'f', TS_FLAG_STRING, &file, "the text to score", 0, 0};
    flags[n++] = (ts_flag){
        "chunks", 0, TS_FLAG_INT, &chunks, "score only the first K windows; 0 = all", 0, 1 << 24};
    flags[n++] = (ts_flag){"json", 0, TS_FLAG_BOOL, &json, "print one JSON object", 0, 0};
    ts_flags_result res = {NULL, 0, 0};
    int rc = ts_flags_parse("tessera perplexity -m MODEL -f TEXT [--ctx N] [--chunks K] [flags]",
                            flags, n, argc, argv, 1, &res);
    if (rc == TS_FLAGS_HELP) return TS_EXIT_OK;
    if (rc) return ts_cli_fail("perplexity", TS_EXIT_USAGE);
    if (!file) {
        ts_error_set(TS_E_INVALID, "missing -f TEXT (the file to score)");
        return ts_cli_fail("perplexity", TS_EXIT_USAGE);
    }
    if (ro.ctx == 0) ro.ctx = n_ctx;
    n_ctx = ro.ctx;
    if (n_ctx < 4) {
        ts_error_set(TS_E_INVALID, "--ctx %d: a window needs at least 4 tokens", n_ctx);
        return ts_cli_fail("perplexity", TS_EXIT_USAGE);
    }
    ts_runtime *rt = NULL;
    rc = ts_runtime_open(&ro, &rt);
    if (rc) return ts_cli_fail("perplexity", ts_cli_exit_code(rc));
    if (ts_runtime_is_leader(rt)) {
        rc = run(rt, file, n_ctx, chunks, json);
        if (rc) ts_cli_fail("perplexity", ts_cli_exit_code(rc));
    } else {
        rc = ts_runtime_follow(rt);
        if (rc) ts_cli_fail("perplexity", TS_EXIT_FAILURE);
    }
    int close_rc = ts_runtime_close(rt);
    if (rc) return ts_cli_exit_code(rc);
    return close_rc ? TS_EXIT_FAILURE : TS_EXIT_OK;
}
