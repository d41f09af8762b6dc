/*
 * test_tokenize_cli.c — `tessera tokenize` run as a user would: the ids printed for the bundled
 * model are llama.cpp's (tests/data/tokenizer_stories260K.jsonl), --json prints {"ids":[...]}
 * (parsed back with the JSON parser), -m picks another vocabulary, --parse-special turns special-
 * token text into the token (tests/data/real), bad flags or paths exit 2 and
 * other failures exit 1, each with one line "tessera tokenize: ..." on stderr.
 *
 * The binary is run with execv (no shell), so texts with tabs, newlines and UTF-8 pass verbatim.
 */
#include "common/buf.h"
#include "common/error.h"
#include "common/json.h"
#include "tests/unit/test.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define TESSERA TS_BINARY_DIR "/bin/tessera"
#define WORK TS_BINARY_DIR "/tests/tokenize_cli"

typedef struct run_result {
    int code; /* exit code, or -1 if it did not exit normally */
    ts_buf out, err;
} run_result;

/* Runs `tessera tokenize ARGS...` (NULL-terminated) with stdout and stderr captured. */
static run_result run_tokenize(const char *const *args) {
    run_result r = {.code = -1};
    char *argv[32] = {(char *)TESSERA, (char *)"tokenize"};
    int argc = 2;
    for (const char *const *a = args; *a && argc < 31; a++)
        argv[argc++] = (char *)*a;
    argv[argc] = NULL;
    mkdir(WORK, 0755);
    pid_t pid = fork();
    if (pid == 0) {
        int out = open(WORK "/out", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int err = open(WORK "/err", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (out < 0 || err < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0) _exit(126);
        execv(TESSERA, argv);
        _exit(127);
    }
    int status;
    if (pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status))
        r.code = WEXITSTATUS(status);
    ts_buf_read_file(&r.out, WORK "/out");
    ts_buf_read_file(&r.err, WORK "/err");
    return r;
}

static void free_result(run_result *r) {
    ts_buf_free(&r->out);
    ts_buf_free(&r->err);
}

static const char *text_of(const ts_buf *b) {
    return b->data ? b->data : "";
}

/* Runs and expects exit 0 and stdout == want + "\n". */
static void expect_output(const char *const *args, const char *want) {
    run_result r = run_tokenize(args);
    CHECK_EQ_INT(r.code, 0);
    size_t n = strlen(want);
    bool ok = r.out.len == n + 1 && !memcmp(r.out.data, want, n) && r.out.data[n] == '\n';
    if (!ok)
        fprintf(stderr, "  printed '%s' (stderr '%s'), want '%s'\n", text_of(&r.out),
                text_of(&r.err), want);
    CHECK(ok);
    free_result(&r);
}

/* Runs and expects `code` with nothing on stdout and one line "tessera tokenize: " on stderr. */
static void expect_failure(const char *const *args, int code) {
    run_result r = run_tokenize(args);
    CHECK_EQ_INT(r.code, code);
    const char *err = text_of(&r.err);
    char *newline = strchr(err, '\n');
    bool one_line = newline && newline[1] == '\0' && !strncmp(err, "tessera tokenize: ", 18);
    if (!one_line || r.out.len)
        fprintf(stderr, "  stderr '%s', stdout '%s'\n", err, text_of(&r.out));
    CHECK(one_line);
    CHECK_EQ_INT(r.out.len, 0);
    free_result(&r);
}

static void test_prints_llama_cpp_ids_for_the_bundled_model(void) {
    const char *hello[] = {"-p", "Hello world", "--json", NULL};
    expect_output(hello, "{\"ids\":[1,346,306,414,263,304,341]}");
    const char *no_bos[] = {"-p", "Hello world", "--no-bos", NULL};
    expect_output(no_bos, "346 306 414 263 304 341");
    const char *cjk[] = {"--json", "-p", "CJK 你好世界", NULL};
    expect_output(cjk, "{\"ids\":[1,410,457,454,462,410,231,192,163,232,168,192,231,187,153,234,"
                       "152,143]}");
    const char *tabs[] = {"--no-bos", "--prompt", "Tabs\tand\nnewlines\n\n", NULL};
    expect_output(tabs, "274 412 430 419 12 412 264 13 416 411 424 421 271 406 13 13");
    const char *empty[] = {"-p", "", NULL};
    expect_output(empty, "1");
}

static void test_model_flag_picks_the_vocabulary(void) {
    const char *f16[] = {"-m", TS_SOURCE_DIR "/models/stories260K/stories260K-f16.gguf", "-p",
                         "Hello world", NULL};
    expect_output(f16, "1 346 306 414 263 304 341");
    const char *gpt2[] = {"--model", TS_SOURCE_DIR "/tests/data/ggml-vocab-gpt-2.gguf", "-p",
                          "Hello world", NULL};
    expect_output(gpt2, "15496 995"); /* GPT-2 adds no BOS */
}

/* llama.cpp's ids for SmolLM2 (tests/data/real): special-token text stays text unless asked. */
static void test_parse_special(void) {
    const char *vocab = TS_SOURCE_DIR "/tests/data/vocab-smollm2-135m-instruct.gguf";
    const char *plain[] = {"-m", vocab, "-p", "<|im_start|>user", NULL};
    expect_output(plain, "44 108 306 79 3738 108 46 4093");
    const char *parsed[] = {"-m", vocab, "--parse-special", "-p", "<|im_start|>user", NULL};
    expect_output(parsed, "1 4093");
}

/* --json is a JSON document {"ids": [integers]}. */
static void test_json_output_parses(void) {
    const char *args[] = {"--json", "-p", "Once upon a time, there was a llama 🦙.", NULL};
    run_result r = run_tokenize(args);
    CHECK_EQ_INT(r.code, 0);
    ts_json_doc *doc = NULL;
    CHECK_OK(ts_json_parse(text_of(&r.out), r.out.len, &doc));
    const ts_json *ids = NULL;
    if (doc) CHECK_OK(ts_json_get_array(ts_json_root(doc), "ids", &ids));
    if (ids) {
        CHECK_EQ_INT(ts_json_root(doc)->length, 1);
        CHECK(ids->length > 10);
        CHECK_EQ_INT(ids->items[0].integer, 1);
        for (size_t i = 0; i < ids->length; i++)
            CHECK(ids->items[i].is_integer && ids->items[i].integer >= 0 &&
                  ids->items[i].integer < 512);
    }
    ts_json_doc_free(doc);
    free_result(&r);
}

static void test_usage_errors_exit_2(void) {
    const char *bad_flag[] = {"--bogus", "-p", "x", NULL};
    expect_failure(bad_flag, 2);
    const char *no_text[] = {NULL};
    expect_failure(no_text, 2);
    const char *missing_value[] = {"-p", NULL};
    expect_failure(missing_value, 2);
    const char *extra[] = {"-p", "x", "extra", NULL};
    expect_failure(extra, 2);
    const char *no_file[] = {"-p", "x", "-m", WORK "/no-such-model.gguf", NULL};
    expect_failure(no_file, 2);
    const char *directory[] = {"-p", "x", "-m", WORK, NULL};
    expect_failure(directory, 2);
}

static void test_a_file_that_is_not_gguf_exits_1(void) {
    mkdir(WORK, 0755);
    FILE *f = fopen(WORK "/not.gguf", "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs("not a model\n", f);
    fclose(f);
    const char *args[] = {"-p", "x", "-m", WORK "/not.gguf", NULL};
    expect_failure(args, 1);
}

static void test_help_exits_0(void) {
    const char *args[] = {"--help", NULL};
    run_result r = run_tokenize(args);
    CHECK_EQ_INT(r.code, 0);
    CHECK(strstr(text_of(&r.out), "--no-bos") || strstr(text_of(&r.out), "--bos"));
    free_result(&r);
}

int main(void) {
    if (access(TESSERA, X_OK) != 0) {
        fprintf(stderr, "%s is not built\n", TESSERA);
        return 1;
    }
    RUN(test_prints_llama_cpp_ids_for_the_bundled_model);
    RUN(test_model_flag_picks_the_vocabulary);
    RUN(test_parse_special);
    RUN(test_json_output_parses);
    RUN(test_usage_errors_exit_2);
    RUN(test_a_file_that_is_not_gguf_exits_1);
    RUN(test_help_exits_0);
    return test_summary();
}
