/*
 * test_tokenizer_hf.c — reading Hugging Face tokenizer directories (ts_tokenizer_from_hf) on small
 * hand-written tokenizer.json files: both layouts (byte-level; SentencePiece-style with byte
 * fallback, Prepend or Metaspace), merges written both ways, tokenizer_config.json (special tokens,
 * add_bos_token, chat templates), config.json (padding to vocab_size), and every refusal: each
 * unsupported feature and each broken file gives its error code and names what. The real
 * tokenizers are held to the `tokenizers` package by tokenizer_json_matches_tokenizers_package.
 */
#include "common/buf.h"
#include "common/error.h"
#include "tests/unit/test.h"
#include "tokenizer/tokenizer.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#define WORK TS_BINARY_DIR "/tests/tokenizer_hf"

/* GPT-2-like: "a" "b" "ab" "Ġ" "Ġab", added tokens 5 and 6, "Ã" "¡" (the bytes of "á"), merges
 * "a b" then "Ġ ab" (the second as a pair). */
static const char BYTE_LEVEL[] =
    "{\"version\":\"1.0\",\"added_tokens\":[{\"id\":5,\"content\":\"<|endoftext|>\","
    "\"special\":true,\"lstrip\":false,\"rstrip\":false,\"single_word\":false,\"normalized\":false}"
    ","
    "{\"id\":6,\"content\":\"<tool>\",\"special\":false}],"
    "\"normalizer\":NORMALIZER,"
    "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,"
    "\"use_regex\":true},"
    "\"post_processor\":POST,"
    "\"decoder\":{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":true},"
    "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,"
    "\"continuing_subword_prefix\":null,\"end_of_word_suffix\":null,\"fuse_unk\":false,"
    "\"byte_fallback\":false,\"ignore_merges\":false,"
    "\"vocab\":{\"a\":0,\"b\":1,\"ab\":2,\"\\u0120\":3,\"\\u0120ab\":4,\"\\u00c3\":7,"
    "\"\\u00a1\":8},"
    "\"merges\":[\"a b\",[\"\\u0120\",\"ab\"]]}}";

/* Llama-2-like: <unk> <s> </s> <0x5A> ▁ a ▁a, merge "▁ a". */
static const char SPM[] =
    "{\"version\":\"1.0\",\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},"
    "{\"id\":1,\"content\":\"<s>\",\"special\":true},{\"id\":2,\"content\":\"</"
    "s>\",\"special\":true}],"
    "\"normalizer\":NORMALIZER,\"pre_tokenizer\":PRE,"
    "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<"
    "s>\","
    "\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"pair\":[],\"special_tokens\":{}"
    "},"
    "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{"
    "\"String\":"
    "\"\\u2581\"},\"content\":\" "
    "\"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\","
    "\"content\":\" \",\"start\":1,\"stop\":0}]},"
    "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":\"<unk>\",\"fuse_unk\":true,"
    "\"byte_fallback\":true,\"vocab\":{\"<unk>\":0,\"<s>\":1,\"</s>\":2,\"<0x5A>\":3,\"\\u2581\":4,"
    "\"a\":5,\"\\u2581a\":6},\"merges\":[\"\\u2581 a\"]}}";

static const char PREPEND[] =
    "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\\u2581\"},"
    "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\\u2581\"}]}";
static const char METASPACE_FIRST[] = "{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\","
                                      "\"prepend_scheme\":\"first\",\"split\":false}";

/* `base` with each "KEY" replaced by its value (pairs, NULL-terminated). */
static char *fill(const char *base, ...) {
    ts_buf b = {0};
    ts_buf_append_str(&b, base);
    va_list ap;
    va_start(ap, base);
    for (const char *key; (key = va_arg(ap, const char *));) {
        const char *value = va_arg(ap, const char *);
        char *at = strstr(b.data, key);
        if (!at) continue;
        ts_buf next = {0};
        ts_buf_append(&next, b.data, (size_t)(at - b.data));
        ts_buf_append_str(&next, value);
        ts_buf_append_str(&next, at + strlen(key));
        ts_buf_free(&b);
        b = next;
    }
    va_end(ap);
    return b.data;
}

static void write_file(const char *dir, const char *name, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (!text) {
        unlink(path);
        return;
    }
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

/* A fresh directory with tokenizer.json and, where given, the other two files. */
static const char *make_dir(const char *tokenizer, const char *config, const char *model_config) {
    static const char *dir = WORK "/model";
    mkdir(WORK, 0755);
    mkdir(dir, 0755);
    write_file(dir, "tokenizer.json", tokenizer);
    write_file(dir, "tokenizer_config.json", config);
    write_file(dir, "config.json", model_config);
    write_file(dir, "chat_template.jinja", NULL);
    return dir;
}

static ts_tokenizer *load(const char *tokenizer, const char *config, const char *model_config) {
    ts_tokenizer *t = NULL;
    CHECK_OK(ts_tokenizer_from_hf(make_dir(tokenizer, config, model_config), &t));
    return t;
}

static char *byte_level(const char *normalizer, const char *post) {
    return fill(BYTE_LEVEL, "NORMALIZER", normalizer, "POST", post, NULL);
}

static bool ids_are(const ts_tokenizer *t, const char *text, bool bos, bool special,
                    const int32_t *want, size_t n_want) {
    int32_t *ids = NULL;
    size_t n = 0;
    bool ok = ts_tokenizer_encode(t, text, strlen(text), bos, special, &ids, &n) == 0 &&
              n == n_want && (!n || !memcmp(ids, want, n * sizeof *ids));
    if (!ok) {
        fprintf(stderr, "  '%s':", text);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n");
    }
    free(ids);
    return ok;
}

static void test_byte_level(void) {
    char *json = byte_level("null", "null");
    ts_tokenizer *t = load(json, NULL, NULL);
    if (t) {
        CHECK_EQ_INT(ts_tokenizer_get_kind(t), TS_TOKENIZER_BPE);
        CHECK_EQ_INT(ts_tokenizer_n_vocab(t), 9);
        CHECK(!ts_tokenizer_adds_bos(t));
        CHECK(ts_tokenizer_is_eog(t, 5)); /* <|endoftext|> by its text */
        int32_t ab_ab[] = {2, 4};
        CHECK(ids_are(t, "ab ab", false, false, ab_ab, 2));
        int32_t special[] = {2, 5, 6}, plain[] = {2, 6}; /* <tool> is not special: always */
        CHECK(ids_are(t, "ab<|endoftext|><tool>", false, true, special, 3));
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK_OK(ts_tokenizer_encode(t, "ab<tool>", 8, false, false, &ids, &n));
        CHECK(n == 2 && !memcmp(ids, plain, sizeof plain));
        free(ids);
        size_t len;
        const char *p = ts_tokenizer_piece(t, 4, &len);
        CHECK(len == 3 && !memcmp(p, " ab", 3));
        CHECK(ts_tokenizer_chat_template(t) == NULL);
    }
    ts_tokenizer_destroy(t);
    free(json);
}

/* NFC normalizes text fragments: a + combining acute is the same as á would be. */
static void test_nfc_normalizer(void) {
    char *json = byte_level("{\"type\":\"NFC\"}", "{\"type\":\"ByteLevel\"}");
    ts_tokenizer *t = load(json, NULL, NULL);
    if (t) {
        int32_t *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        CHECK_OK(ts_tokenizer_encode(t, "a\xCC\x81", 3, false, false, &a, &na));
        CHECK_OK(ts_tokenizer_encode(t, "\xC3\xA1", 2, false, false, &b, &nb));
        CHECK(na == 2 && nb == 2 && !memcmp(a, b, na * sizeof *a));
        free(a);
        free(b);
    }
    ts_tokenizer_destroy(t);
    free(json);
}

/* tokenizer_config.json names the specials and the template; config.json pads the vocabulary. */
static void test_configs(void) {
    char *json = byte_level("null", "null");
    const char *config =
        "{\"bos_token\":{\"content\":\"<|endoftext|>\"},\"eos_token\":\"<|endoftext|>\","
        "\"add_bos_token\":true,\"chat_template\":[{\"name\":\"tool_use\",\"template\":\"T\"},"
        "{\"name\":\"default\",\"template\":\"{{ messages }}\"}]}";
    ts_tokenizer *t = load(json, config, "{\"vocab_size\":10,\"eos_token_id\":[6,5]}");
    if (t) {
        CHECK_EQ_INT(ts_tokenizer_n_vocab(t), 10);
        CHECK_EQ_STR(ts_tokenizer_token_text(t, 8), "\xC2\xA1");
        CHECK_EQ_INT(ts_tokenizer_bos(t), 5);
        CHECK_EQ_INT(ts_tokenizer_eos(t), 5); /* tokenizer_config.json wins over config.json */
        CHECK(ts_tokenizer_adds_bos(t));
        CHECK_EQ_STR(ts_tokenizer_chat_template(t), "{{ messages }}");
        CHECK_EQ_STR(ts_tokenizer_token_text(t, 9), "[PAD9]");
        size_t len;
        ts_tokenizer_piece(t, 9, &len);
        CHECK_EQ_INT(len, 0);
        int32_t want[] = {5, 2};
        CHECK(ids_are(t, "ab", true, false, want, 2));
    }
    ts_tokenizer_destroy(t);
    /* config.json's ids where tokenizer_config.json has none; chat_template.jinja */
    const char *dir = make_dir(json, "{}", "{\"eos_token_id\":[6,5]}");
    write_file(dir, "chat_template.jinja", "{% for m in messages %}{{ m }}{% endfor %}");
    t = NULL;
    CHECK_OK(ts_tokenizer_from_hf(dir, &t));
    if (t) {
        CHECK_EQ_INT(ts_tokenizer_eos(t), 6);
        CHECK_EQ_STR(ts_tokenizer_chat_template(t), "{% for m in messages %}{{ m }}{% endfor %}");
    }
    ts_tokenizer_destroy(t);
    free(json);
}

static void test_sentencepiece_style(void) {
    char *json = fill(SPM, "NORMALIZER", PREPEND, "PRE", "null", NULL);
    ts_tokenizer *t = load(json, NULL, NULL);
    if (t) {
        CHECK_EQ_INT(ts_tokenizer_get_kind(t), TS_TOKENIZER_SPM);
        CHECK(ts_tokenizer_adds_bos(t)); /* from the TemplateProcessing post-processor */
        CHECK_EQ_INT(ts_tokenizer_bos(t), 1);
        CHECK(ts_tokenizer_is_eog(t, 2));
        int32_t aa[] = {1, 6, 6};
        CHECK(ids_are(t, "a a", true, false, aa, 3));
        int32_t z[] = {6, 3};       /* Z: byte fallback to <0x5A> */
        int32_t q[] = {6, 0};       /* QQ: no byte tokens: one unknown token for the run */
        int32_t space_a[] = {4, 6}; /* Prepend always adds ▁, even before a space */
        CHECK(ids_are(t, "aZ", false, false, z, 2));
        CHECK(ids_are(t, "aQQ", false, false, q, 2));
        CHECK(ids_are(t, " a", false, false, space_a, 2));
        int32_t after[] = {1, 6}; /* and after a special token */
        CHECK(ids_are(t, "<s>a", false, true, after, 2));
        ts_buf out = {0};
        CHECK_OK(ts_tokenizer_decode(t, aa, 3, true, &out));
        CHECK_EQ_STR(out.data, "a a");
        ts_buf_free(&out);
    }
    ts_tokenizer_destroy(t);
    free(json);
    /* Metaspace, prepend_scheme first: a leading space is the ▁, and no ▁ after a token */
    json = fill(SPM, "NORMALIZER", "null", "PRE", METASPACE_FIRST, NULL);
    t = load(json, NULL, NULL);
    if (t) {
        int32_t space_a[] = {6}, after[] = {1, 5}, aa[] = {6, 6};
        CHECK(ids_are(t, " a", false, false, space_a, 1));
        CHECK(ids_are(t, "<s>a", false, true, after, 2));
        CHECK(ids_are(t, "a a", false, false, aa, 2));
    }
    ts_tokenizer_destroy(t);
    free(json);
}

/* Refused with `code`, the message naming `what`. */
static void expect_refused(const char *tokenizer, const char *config, int code, const char *what) {
    ts_tokenizer *t = (ts_tokenizer *)1;
    int rc = ts_tokenizer_from_hf(make_dir(tokenizer, config, NULL), &t);
    CHECK_EQ_INT(rc, code);
    CHECK(t == NULL);
    const char *msg = ts_error_message();
    if (!strstr(msg, what)) {
        fprintf(stderr, "  message '%s' does not name '%s'\n", msg, what);
        CHECK(0);
    }
}

static void expect_json_refused(const char *from, const char *to, int code, const char *what) {
    char *json = byte_level("null", "null");
    char *bad = fill(json, from, to, NULL);
    CHECK(strcmp(json, bad) != 0); /* the replacement applied */
    expect_refused(bad, NULL, code, what);
    free(bad);
    free(json);
}

static void test_refusals(void) {
    ts_tokenizer *t = (ts_tokenizer *)1;
    mkdir(WORK "/empty", 0755);
    CHECK_EQ_INT(ts_tokenizer_from_hf(WORK "/empty", &t), TS_E_IO);
    CHECK(t == NULL && strstr(ts_error_message(), "tokenizer.json"));
    expect_refused("{\"model\": [1, 2", NULL, TS_E_FORMAT, "tokenizer.json: line 1");
    expect_json_refused("\"type\":\"BPE\"", "\"type\":\"Unigram\"", TS_E_UNSUPPORTED, "Unigram");
    expect_json_refused("\"type\":\"BPE\"", "\"type\":\"WordPiece\"", TS_E_UNSUPPORTED,
                        "WordPiece");
    expect_json_refused("\"normalizer\":null", "\"normalizer\":{\"type\":\"Lowercase\"}",
                        TS_E_UNSUPPORTED, "Lowercase");
    expect_json_refused("\"pre_tokenizer\":{\"type\":\"ByteLevel\"",
                        "\"pre_tokenizer\":{\"type\":\"Whitespace\"", TS_E_UNSUPPORTED,
                        "Whitespace");
    expect_json_refused("\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true",
                        "\"add_prefix_space\":true,\"trim_offsets\":true,\"use_regex\":true",
                        TS_E_UNSUPPORTED, "ByteLevel");
    expect_json_refused(
        "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":"
        "true,\"use_regex\":true}",
        "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\","
        "\"pattern\":{\"Regex\":\"\\\\s+\"},\"behavior\":\"Isolated\",\"invert\":false},"
        "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]}",
        TS_E_UNSUPPORTED, "\\s+");
    expect_json_refused("\"decoder\":{\"type\":\"ByteLevel\"",
                        "\"decoder\":{\"type\":\"WordPiece\"", TS_E_UNSUPPORTED, "WordPiece");
    expect_json_refused("\"post_processor\":null",
                        "\"post_processor\":{\"type\":\"RobertaProcessing\"}", TS_E_UNSUPPORTED,
                        "RobertaProcessing");
    expect_json_refused("\"dropout\":null", "\"dropout\":0.1", TS_E_UNSUPPORTED, "dropout");
    expect_json_refused("\"continuing_subword_prefix\":null",
                        "\"continuing_subword_prefix\":\"##\"", TS_E_UNSUPPORTED,
                        "continuing_subword_prefix");
    expect_json_refused("\"lstrip\":false", "\"lstrip\":true", TS_E_UNSUPPORTED, "lstrip");
    expect_json_refused("\"single_word\":false", "\"single_word\":true", TS_E_UNSUPPORTED,
                        "single_word");
    expect_json_refused("\"ab\":2", "\"ab\":4", TS_E_FORMAT, "id 4");               /* two texts */
    expect_json_refused("\"ab\":2", "\"ab\":12", TS_E_FORMAT, "no token has id 2"); /* a gap */
    expect_json_refused("\"ab\":2", "\"ab\":-1", TS_E_FORMAT, "'ab'");
    expect_json_refused("\"a b\"", "\"a c\"", TS_E_FORMAT, "'c' is not in the vocabulary");
    expect_json_refused("\"a b\"", "\"a b c\"", TS_E_FORMAT, "model.merges");
    expect_json_refused("\"merges\":[", "\"merged\":[", TS_E_FORMAT, "model.merges");
    expect_json_refused("\"vocab\":{", "\"vocab\":[],\"x\":{", TS_E_FORMAT, "model.vocab");
    char *json = byte_level("null", "null");
    expect_refused(json, "{\"bos_token\":\"<nope>\"}", TS_E_FORMAT, "bos_token '<nope>'");
    expect_refused(json, "{\"add_eos_token\":true}", TS_E_UNSUPPORTED, "add_eos_token");
    free(json);
    json = fill(SPM, "NORMALIZER", PREPEND, "PRE", METASPACE_FIRST, NULL);
    expect_refused(json, NULL, TS_E_UNSUPPORTED, "combination");
    free(json);
    json = fill(SPM, "NORMALIZER", "null", "PRE",
                "{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"split\":true}", NULL);
    expect_refused(json, NULL, TS_E_UNSUPPORTED, "Metaspace");
    free(json);
}

int main(void) {
    RUN(test_byte_level);
    RUN(test_nfc_normalizer);
    RUN(test_configs);
    RUN(test_sentencepiece_style);
    RUN(test_refusals);
    return test_summary();
}
