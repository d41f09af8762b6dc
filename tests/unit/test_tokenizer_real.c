/*
 * test_tokenizer_real.c — the tokenizers of the real models (SmolLM2-135M-Instruct: byte-level BPE
 * with pre-tokenizer `smollm`; Qwen2.5-Coder-0.5B-Instruct: `qwen2`, 151936 tokens) against
 * llama.cpp's outputs on those files (tests/data/real/): every `tokenize` line with and
 * without special tokens parsed, the prompt ids of every greedy line, the end-of-generation set
 * (llama.cpp stopped a generation exactly where its last id is an EOG token), and special-token
 * text in a chat prompt. The vocabularies are the models' tokenizer metadata (tests/data/vocab-*),
 * so no model download is needed.
 *
 * And a corpus of tricky texts (tests/data/tokenizer_corpus.json: whitespace runs, contractions,
 * digits of several scripts, code, emoji sequences, decomposed accents, controls, special-token
 * text) under those two vocabularies, GPT-2's (also with the "default" and "llama-bpe"
 * pre-tokenizers) and Llama 2's SentencePiece one, both parse_special settings, against
 * llama.cpp's ids and EOG sets for it (tests/data/tokenizer_corpus_llama_cpp.jsonl, written by
 * tools/make_tokenizer_refs.py).
 */
#include "common/buf.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/json.h"
#include "model/gguf.h"
#include "model/gguf_write.h"
#include "tests/unit/test.h"
#include "tests/unit/test_jsonl_util.h"
#include "tests/unit/test_tokenizer_util.h"
#include "tokenizer/tokenizer.h"

#include <stdint.h>

#define DATA TS_SOURCE_DIR "/tests/data/"

typedef struct model {
    const char *vocab, *jsonl;
    ts_gguf *g;
    ts_tokenizer *t;
} model;

static model MODELS[] = {
    {DATA "vocab-smollm2-135m-instruct.gguf", DATA "real/smollm2-135m-instruct-q4_1.jsonl", 0, 0},
    {DATA "vocab-qwen2.5-coder-0.5b-instruct.gguf",
     DATA "real/qwen2.5-coder-0.5b-instruct-q4_k_m.jsonl", 0, 0},
};
enum { N_MODELS = 2 };

static void test_vocabularies_load(void) {
    for (int m = 0; m < N_MODELS; m++) {
        CHECK_OK(ts_gguf_open(MODELS[m].vocab, &MODELS[m].g));
        if (MODELS[m].g) CHECK_OK(ts_tokenizer_from_gguf(MODELS[m].g, &MODELS[m].t));
    }
}

static void unload_models(void) {
    for (int m = 0; m < N_MODELS; m++) {
        ts_tokenizer_destroy(MODELS[m].t);
        ts_gguf_close(MODELS[m].g);
    }
}

static void print_ids(const char *label, const int32_t *ids, size_t n) {
    fprintf(stderr, "    %s:", label);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
}

static bool ids_match(const ts_tokenizer *t, const char *text, size_t len, bool bos,
                      bool parse_special, const ts_json *want) {
    return tok_ids_match_json(t, text, len, bos, parse_special, want, "ids");
}

typedef struct counts {
    const ts_tokenizer *t;
    const char *kind;
    void (*check)(const ts_tokenizer *t, const ts_json *line, struct counts *c);
    int cases, matched;
} counts;

static void dispatch(const ts_json *line, void *ctx) {
    counts *c = ctx;
    const char *kind;
    size_t len;
    CHECK_OK(ts_json_get_string(line, "kind", &kind, &len));
    if (kind && !strcmp(kind, c->kind)) c->check(c->t, line, c);
}

/* Runs check over every line of the model's reference file whose kind is `kind`. */
static counts for_each_line(const model *m, const char *kind,
                            void (*check)(const ts_tokenizer *, const ts_json *, counts *)) {
    counts c = {m->t, kind, check, 0, 0};
    if (m->t) for_each_json_line(m->jsonl, dispatch, &c);
    return c;
}

/* Every line of `kind` in each model's file matches: `want` lines per model. */
static void expect_all_match(const char *kind,
                             void (*check)(const ts_tokenizer *, const ts_json *, counts *),
                             int want) {
    for (int m = 0; m < N_MODELS; m++) {
        counts c = for_each_line(&MODELS[m], kind, check);
        fprintf(stderr, "  %s: %d of %d %s lines match\n", strrchr(MODELS[m].jsonl, '/') + 1,
                c.matched, c.cases, kind);
        CHECK_EQ_INT(c.cases, want);
        CHECK_EQ_INT(c.matched, c.cases);
    }
}

/* `tokenize` lines: text → ids, no BOS, parse_special as recorded. */
static void check_tokenize_line(const ts_tokenizer *t, const ts_json *line, counts *c) {
    const char *text;
    size_t len;
    bool parse_special;
    const ts_json *ids;
    CHECK_OK(ts_json_get_string(line, "text", &text, &len));
    CHECK_OK(ts_json_get_bool(line, "parse_special", &parse_special));
    CHECK_OK(ts_json_get_array(line, "ids", &ids));
    c->cases++;
    c->matched += ids_match(t, text, len, false, parse_special, ids);
}

static void test_tokenize_lines_match_llama_cpp(void) {
    expect_all_match("tokenize", check_tokenize_line, 18);
}

/* `greedy` lines: the prompt with the vocabulary's add-BOS setting, special tokens parsed. */
static void check_greedy_prompt(const ts_tokenizer *t, const ts_json *line, counts *c) {
    const char *text;
    size_t len;
    const ts_json *ids;
    CHECK_OK(ts_json_get_string(line, "prompt", &text, &len));
    CHECK_OK(ts_json_get_array(line, "prompt_ids", &ids));
    c->cases++;
    c->matched += ids_match(t, text, len, ts_tokenizer_adds_bos(t), true, ids);
}

static void test_greedy_prompts_match_llama_cpp(void) {
    expect_all_match("greedy", check_greedy_prompt, 9);
}

/* llama.cpp generated until an EOG token or the limit: no id before the last is EOG, and the
 * last one is EOG exactly when the line says it stopped on one. */
static void check_stop(const ts_tokenizer *t, const ts_json *line, counts *c) {
    const ts_json *ids;
    const char *stop;
    size_t len;
    CHECK_OK(ts_json_get_array(line, "completion_ids", &ids));
    CHECK_OK(ts_json_get_string(line, "stop", &stop, &len));
    bool ok = ids->length > 0;
    for (size_t i = 0; ok && i + 1 < ids->length; i++)
        ok = !ts_tokenizer_is_eog(t, (int32_t)ids->items[i].integer);
    if (ok)
        ok = ts_tokenizer_is_eog(t, (int32_t)ids->items[ids->length - 1].integer) ==
             !strcmp(stop, "eos");
    if (!ok) fprintf(stderr, "  a completion (stop '%s') disagrees with the EOG set\n", stop);
    c->cases++;
    c->matched += ok;
}

static void test_generations_stop_on_the_eog_set(void) {
    int eos_stops = 0;
    for (int m = 0; m < N_MODELS; m++) {
        counts greedy = for_each_line(&MODELS[m], "greedy", check_stop);
        counts chat = for_each_line(&MODELS[m], "chat", check_stop);
        CHECK_EQ_INT(greedy.cases + chat.cases, 13);
        CHECK_EQ_INT(greedy.matched + chat.matched, 13);
        eos_stops += chat.matched;
    }
    CHECK(eos_stops > 0);
}

/* The EOG sets as llama.cpp derives them: EOS, every end-of-turn text, and the FIM repo / pad /
 * file-separator tokens. Qwen's vocabulary has a normal token "</s>", which llama.cpp (for
 * PaddleOCR) makes an EOG control token too. */
static void test_eog_sets(void) {
    static const int32_t smollm[] = {0, 2, 4}; /* <|endoftext|> <|im_end|> <reponame> */
    /* </s> <|endoftext|> <|im_end|> <|fim_pad|> <|repo_name|> <|file_sep|> */
    static const int32_t qwen[] = {128247, 151643, 151645, 151662, 151663, 151664};
    const int32_t *want[N_MODELS] = {smollm, qwen};
    size_t n_want[N_MODELS] = {3, 6};
    for (int m = 0; m < N_MODELS; m++) {
        if (!MODELS[m].t) continue;
        size_t n;
        const int32_t *eog = ts_tokenizer_eog_ids(MODELS[m].t, &n);
        bool same = n == n_want[m] && !memcmp(eog, want[m], n * sizeof *eog);
        if (!same) print_ids("eog", eog, n);
        CHECK(same);
        for (size_t i = 0; i < n; i++)
            CHECK(ts_tokenizer_is_eog(MODELS[m].t, eog[i]));
        CHECK(!ts_tokenizer_is_eog(MODELS[m].t, m == 0 ? 1 : 151644)); /* <|im_start|> */
        CHECK(!ts_tokenizer_is_eog(MODELS[m].t, -1));
    }
}

/* Special-token text parses only when asked; user-defined tokens (Qwen's <tool_call>) always. */
static void test_special_text_in_a_chat_prompt(void) {
    static const char prompt[] =
        "<|im_start|>user\nHi <tool_call><|im_end|>\n<|im_start|>assistant\n";
    for (int m = 0; m < N_MODELS; m++) {
        const ts_tokenizer *t = MODELS[m].t;
        if (!t) continue;
        int32_t start = m == 0 ? 1 : 151644, end = m == 0 ? 2 : 151645;
        for (int parse = 0; parse < 2; parse++) {
            int32_t *ids = NULL;
            size_t n = 0, starts = 0, ends = 0, tool_calls = 0;
            CHECK_OK(ts_tokenizer_encode(t, prompt, sizeof prompt - 1, false, parse, &ids, &n));
            for (size_t i = 0; i < n; i++) {
                starts += ids[i] == start;
                ends += ids[i] == end;
                tool_calls += m == 1 && ids[i] == 151657;
            }
            CHECK_EQ_INT(starts, parse ? 2 : 0);
            CHECK_EQ_INT(ends, parse ? 1 : 0);
            if (m == 1) CHECK_EQ_INT(tool_calls, 1);
            if (parse) CHECK_EQ_INT(ids[0], start);
            free(ids);
        }
    }
}

/* The chat template is carried over from the file. */
static void test_chat_template(void) {
    for (int m = 0; m < N_MODELS; m++) {
        const char *tmpl = MODELS[m].t ? ts_tokenizer_chat_template(MODELS[m].t) : NULL;
        CHECK(tmpl && strstr(tmpl, "<|im_start|>") && strstr(tmpl, "add_generation_prompt"));
    }
}

/* Loading the 151936-token vocabulary with its 151387 merges, and tokenizing a long text, take
 * well under a second each (measured and printed; asserted only against a generous bound that a
 * quadratic path would miss by orders of magnitude). */
static void test_large_vocabulary_is_fast(void) {
    const model *m = &MODELS[1];
    if (!m->g) return;
    int64_t t0 = ts_now_ns();
    ts_tokenizer *t = NULL;
    CHECK_OK(ts_tokenizer_from_gguf(m->g, &t));
    int64_t t1 = ts_now_ns();
    size_t n = 4 << 20;
    char *text = malloc(n);
    static const char words[] = "def f(x):\n    return x * 12345 + 'don''t' # 你好 🦙\n";
    for (size_t i = 0; text && i < n; i++)
        text[i] = words[i % (sizeof words - 1)];
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (t && text) CHECK_OK(ts_tokenizer_encode(t, text, n, false, true, &ids, &n_ids));
    int64_t t2 = ts_now_ns();
    fprintf(stderr, "  qwen2 vocabulary: loaded in %.0f ms; 4 MiB tokenized in %.0f ms (%zu ids)\n",
            ts_ns_to_ms(t1 - t0), ts_ns_to_ms(t2 - t1), n_ids);
    CHECK(ts_ns_to_ms(t1 - t0) < 5000);
    CHECK(ts_ns_to_ms(t2 - t1) < 30000);
    free(ids);
    free(text);
    ts_tokenizer_destroy(t);
}

/* ---- the corpus against llama.cpp ---- */

typedef struct corpus_check {
    const ts_json *texts;
    int lines, cases, matched;
} corpus_check;

/* The vocabulary `name` with tokenizer.ggml.pre replaced by `pre` (NULL: as it is), as an
 * in-memory GGUF in *image. */
static int open_vocab(const char *name, const char *pre, ts_buf *image, ts_gguf **g) {
    char path[512];
    snprintf(path, sizeof path, DATA "%s", name);
    int rc = ts_gguf_open(path, g);
    if (rc || !pre) return rc;
    ts_gguf_writer *w;
    rc = ts_gguf_writer_create(&w);
    for (size_t i = 0; !rc && i < ts_gguf_n_kv(*g); i++) {
        const ts_gguf_kv *kv = ts_gguf_kv_at(*g, i);
        if (!ts_gguf_str_eq(kv->key, "tokenizer.ggml.pre")) rc = ts_gguf_writer_add_kv(w, kv);
    }
    if (!rc) rc = ts_gguf_writer_add_str(w, "tokenizer.ggml.pre", pre);
    if (!rc) rc = ts_gguf_writer_write_buf(w, image);
    ts_gguf_writer_destroy(w);
    ts_gguf_close(*g);
    *g = NULL;
    return rc ? rc : ts_gguf_open_memory(image->data, image->len, name, g);
}

static void check_corpus_line(const ts_json *line, void *ctx) {
    corpus_check *c = ctx;
    const char *name, *pre = NULL;
    size_t len;
    bool parse_special;
    const ts_json *ids, *eog, *pre_v = ts_json_get(line, "pre");
    CHECK_OK(ts_json_get_string(line, "vocab", &name, &len));
    CHECK_OK(ts_json_get_bool(line, "parse_special", &parse_special));
    CHECK_OK(ts_json_get_array(line, "ids", &ids));
    CHECK_OK(ts_json_get_array(line, "eog", &eog));
    if (pre_v && pre_v->type == TS_JSON_STRING) pre = pre_v->string;
    ts_buf image = {0};
    ts_gguf *g = NULL;
    ts_tokenizer *t = NULL;
    CHECK_OK(open_vocab(name, pre, &image, &g));
    if (g) CHECK_OK(ts_tokenizer_from_gguf(g, &t));
    c->lines++;
    if (t && ids && c->texts) {
        CHECK_EQ_INT(ids->length, c->texts->length);
        int matched = 0;
        for (size_t i = 0; i < ids->length && i < c->texts->length; i++) {
            const ts_json *text = &c->texts->items[i];
            matched +=
                ids_match(t, text->string, text->length, false, parse_special, &ids->items[i]);
        }
        fprintf(stderr, "  %s (pre %s, parse_special %d): %d of %zu texts match\n", name,
                pre ? pre : "as in the file", parse_special, matched, ids->length);
        c->cases += (int)ids->length;
        c->matched += matched;
        size_t n;
        const int32_t *ours = ts_tokenizer_eog_ids(t, &n);
        bool same = n == eog->length;
        for (size_t i = 0; same && i < n; i++)
            same = ours[i] == eog->items[i].integer;
        if (!same) print_ids("our EOG set", ours, n);
        CHECK(same);
    }
    ts_tokenizer_destroy(t);
    ts_gguf_close(g);
    ts_buf_free(&image);
}

static void test_corpus_matches_llama_cpp(void) {
    ts_buf file = {0};
    ts_json_doc *doc = NULL;
    CHECK_OK(ts_buf_read_file(&file, DATA "tokenizer_corpus.json"));
    if (file.data) CHECK_OK(ts_json_parse(file.data, file.len, &doc));
    corpus_check c = {doc ? ts_json_root(doc) : NULL, 0, 0, 0};
    if (c.texts) for_each_json_line(DATA "tokenizer_corpus_llama_cpp.jsonl", check_corpus_line, &c);
    CHECK_EQ_INT(c.lines, 12);
    CHECK(c.cases >= 12 * 90);
    CHECK_EQ_INT(c.matched, c.cases);
    ts_json_doc_free(doc);
    ts_buf_free(&file);
}

int main(void) {
    RUN(test_vocabularies_load);
    RUN(test_tokenize_lines_match_llama_cpp);
    RUN(test_greedy_prompts_match_llama_cpp);
    RUN(test_generations_stop_on_the_eog_set);
    RUN(test_eog_sets);
    RUN(test_special_text_in_a_chat_prompt);
    RUN(test_chat_template);
    RUN(test_corpus_matches_llama_cpp);
    RUN(test_large_vocabulary_is_fast);
    unload_models();
    return test_summary();
}
