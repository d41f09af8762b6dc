/* test_common.c — error convention, buffers, JSON, flags, f16/bf16 conversion, RNG. */
#include "common/buf.h"
#include "common/dtype.h"
#include "common/error.h"
#include "common/flags.h"
#include "common/fp16.h"
#include "common/json.h"
#include "common/log.h"
#include "common/rng.h"
#include "common/utf8.h"
#include "tests/unit/test.h"

#include <immintrin.h>
#include <stdint.h>
#include <unistd.h>

static void test_error_wrap_builds_one_line(void) {
    int rc = ts_error_set(TS_E_FORMAT, "tensor '%s': bad shape", "blk.0.attn_q.weight");
    CHECK_EQ_INT(rc, TS_E_FORMAT);
    rc = ts_error_wrap(rc, "%s", "model.gguf");
    CHECK_EQ_INT(rc, TS_E_FORMAT);
    CHECK_EQ_STR(ts_error_message(), "model.gguf: tensor 'blk.0.attn_q.weight': bad shape");
    ts_error_clear();
    ts_error_wrap(TS_E_IO, "loading");
    CHECK_EQ_STR(ts_error_message(), "loading: I/O error");
    CHECK_EQ_STR(ts_error_name(TS_E_UNAVAILABLE), "unavailable");
}

static void test_buf_appends_and_formats(void) {
    ts_buf b = {0};
    CHECK_OK(ts_buf_append_str(&b, "hello"));
    CHECK_OK(ts_buf_printf(&b, " %d", 42));
    for (int i = 0; i < 100; i++) CHECK_OK(ts_buf_printf(&b, "%s", "0123456789"));
    CHECK_EQ_INT(b.len, 8 + 1000);
    CHECK(strncmp(b.data, "hello 42", 8) == 0);
    CHECK_EQ_INT(b.data[b.len], 0);
    ts_buf_clear(&b);
    CHECK_EQ_INT(b.len, 0);
    ts_buf_free(&b);
    CHECK(ts_buf_read_file(&b, "/nonexistent/file") == TS_E_IO);
    CHECK(strstr(ts_error_message(), "/nonexistent/file") != NULL);
}

static void test_json_parses_nested_document(void) {
    const char *text = "{\"a\": [1, -2.5, 3e2, true, null], \"s\": \"x\\n\\u00e9\\ud83e\\udd99\","
                       " \"o\": {\"k\": 12345678901}}";
    ts_json_doc *doc = NULL;
    CHECK_OK(ts_json_parse(text, strlen(text), &doc));
    if (!doc) return;
    const ts_json *root = ts_json_root(doc);
    const ts_json *a = NULL;
    CHECK_OK(ts_json_get_array(root, "a", &a));
    CHECK_EQ_INT(a->length, 5);
    CHECK(a->items[0].is_integer && a->items[0].integer == 1);
    CHECK(!a->items[1].is_integer);
    CHECK_NEAR(a->items[1].number, -2.5, 0);
    CHECK_NEAR(a->items[2].number, 300, 0);
    CHECK(a->items[3].type == TS_JSON_BOOL && a->items[3].boolean);
    CHECK(a->items[4].type == TS_JSON_NULL);
    const char *s;
    size_t n;
    CHECK_OK(ts_json_get_string(root, "s", &s, &n));
    CHECK_EQ_STR(s, "x\n\xc3\xa9\xf0\x9f\xa6\x99");
    int64_t k = 0;
    CHECK_OK(ts_json_get_int(ts_json_get(root, "o"), "k", &k));
    CHECK_EQ_INT(k, 12345678901LL);
    CHECK(ts_json_get_int(root, "missing", &k) == TS_E_NOT_FOUND);
    CHECK(ts_json_get_int(root, "s", &k) == TS_E_INVALID);
    ts_json_doc_free(doc);
}

static void test_json_rejects_bad_input_with_position(void) {
    const char *bad[] = {"", "{", "[1,]", "{\"a\" 1}", "\"abc", "01", "[1] x", "\"\\ud800\"",
                         "tru", "{\"a\":\"\x01\"}", "-", "1.", "1e"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ts_json_doc *doc = NULL;
        int rc = ts_json_parse(bad[i], strlen(bad[i]), &doc);
        CHECK(rc == TS_E_FORMAT);
        CHECK(doc == NULL);
        CHECK(strstr(ts_error_message(), "line 1, column") != NULL);
    }
    /* deep nesting is refused, not a stack overflow */
    char deep[4096];
    memset(deep, '[', sizeof deep - 1);
    deep[sizeof deep - 1] = '\0';
    ts_json_doc *doc = NULL;
    CHECK(ts_json_parse(deep, strlen(deep), &doc) == TS_E_FORMAT);
    CHECK(strstr(ts_error_message(), "nesting too deep") != NULL);
}

static void test_json_writer_escapes_and_round_trips(void) {
    ts_buf b = {0};
    ts_json_writer w;
    ts_jw_init(&w, &b);
    ts_jw_object_begin(&w);
    ts_jw_key(&w, "text");
    ts_jw_string_n(&w, "a\"b\\c\n\x01\xff", 8);
    ts_jw_key(&w, "ids");
    ts_jw_array_begin(&w);
    ts_jw_int(&w, 1);
    ts_jw_int(&w, -2);
    ts_jw_array_end(&w);
    ts_jw_key(&w, "x");
    ts_jw_double(&w, 0.5);
    ts_jw_key(&w, "nan");
    ts_jw_double(&w, NAN);
    ts_jw_key(&w, "ok");
    ts_jw_bool(&w, true);
    ts_jw_object_end(&w);
    CHECK_OK(ts_jw_finish(&w));
    CHECK_EQ_STR(b.data, "{\"text\":\"a\\\"b\\\\c\\n\\u0001\xef\xbf\xbd\",\"ids\":[1,-2],\"x\":0.5,"
                         "\"nan\":null,\"ok\":true}");
    ts_json_doc *doc = NULL;
    CHECK_OK(ts_json_parse(b.data, b.len, &doc));
    ts_json_doc_free(doc);
    ts_buf_free(&b);

    /* misuse is reported, not silently written */
    ts_buf b2 = {0};
    ts_jw_init(&w, &b2);
    ts_jw_object_begin(&w);
    ts_jw_int(&w, 1); /* value without key */
    ts_jw_object_end(&w);
    CHECK(ts_jw_finish(&w) != 0);
    ts_buf_free(&b2);
}

static void test_flags_parse_forms_ranges_and_errors(void) {
    const char *model = "default.gguf";
    int n = 16;
    double top_p = 1.0;
    bool json = false, stream = true;
    size_t mem = 1024;
    ts_flag flags[] = {
        {"model", 'm', TS_FLAG_STRING, &model, "model file", 0, 0},
        {"max-tokens", 'n', TS_FLAG_INT, &n, "tokens", 0, 1e6},
        {"top-p", 0, TS_FLAG_DOUBLE, &top_p, "nucleus", 0, 1},
        {"json", 0, TS_FLAG_BOOL, &json, "json out", 0, 0},
        {"stream", 0, TS_FLAG_BOOL, &stream, "stream", 0, 0},
        {"kv-memory", 0, TS_FLAG_SIZE, &mem, "kv", 0, 0},
    };
    const char *pos[4];
    ts_flags_result res = {pos, 4, 0};
    char *argv1[] = {"x", "gen", "-m", "a.gguf", "--max-tokens=7", "--top-p", "0.9", "--json",
                     "--no-stream", "--kv-memory", "2G", "rest"};
    CHECK_OK(ts_flags_parse("x", flags, 6, 12, argv1, 1, &res));
    CHECK_EQ_STR(model, "a.gguf");
    CHECK_EQ_INT(n, 7);
    CHECK_NEAR(top_p, 0.9, 1e-12);
    CHECK(json && !stream);
    CHECK_EQ_INT(mem, 2LL << 30);
    CHECK_EQ_INT(res.n_positionals, 2);
    CHECK_EQ_STR(pos[0], "gen");
    CHECK_EQ_STR(pos[1], "rest");

    char *bad_range[] = {"x", "--top-p", "3"};
    CHECK(ts_flags_parse("x", flags, 6, 3, bad_range, 1, &res) == TS_E_INVALID);
    CHECK_EQ_STR(ts_error_message(), "--top-p: must be between 0 and 1, got 3");
    char *unknown[] = {"x", "--frobnicate"};
    CHECK(ts_flags_parse("x", flags, 6, 2, unknown, 1, &res) == TS_E_INVALID);
    CHECK_EQ_STR(ts_error_message(), "unknown flag '--frobnicate' (see --help)");
    char *missing[] = {"x", "-n"};
    CHECK(ts_flags_parse("x", flags, 6, 2, missing, 1, &res) == TS_E_INVALID);
    char *not_int[] = {"x", "-n", "12abc"};
    CHECK(ts_flags_parse("x", flags, 6, 3, not_int, 1, &res) == TS_E_INVALID);
    CHECK(strstr(ts_error_message(), "expected an integer") != NULL);
    char *neg[] = {"x", "-n", "-5"};
    CHECK(ts_flags_parse("x", flags, 6, 3, neg, 1, &res) == TS_E_INVALID);
}

static void test_flags_config_file_is_overridden_by_command_line(void) {
    char path[] = "/tmp/ts_flags_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    const char *cfg = "# comment\nmodel = cfg.gguf\nmax-tokens=9  # trailing\n\ntop-p 0.5\n";
    CHECK(write(fd, cfg, strlen(cfg)) == (ssize_t)strlen(cfg));
    close(fd);
    const char *model = "default.gguf";
    int n = 16;
    double top_p = 1.0;
    ts_flag flags[] = {
        {"model", 'm', TS_FLAG_STRING, &model, "model file", 0, 0},
        {"max-tokens", 'n', TS_FLAG_INT, &n, "tokens", 0, 0},
        {"top-p", 0, TS_FLAG_DOUBLE, &top_p, "nucleus", 0, 1},
    };
    ts_flags_result res = {NULL, 0, 0};
    char *argv[] = {"x", "-n", "3", "--config", path};
    CHECK_OK(ts_flags_parse("x", flags, 3, 5, argv, 1, &res));
    CHECK_EQ_STR(model, "cfg.gguf");
    CHECK_EQ_INT(n, 3);
    CHECK_NEAR(top_p, 0.5, 1e-12);

    FILE *f = fopen(path, "w");
    fputs("bogus = 1\n", f);
    fclose(f);
    char *argv2[] = {"x", "--config", path};
    CHECK(ts_flags_parse("x", flags, 3, 3, argv2, 1, &res) == TS_E_INVALID);
    CHECK(strstr(ts_error_message(), ":1: unknown key 'bogus'") != NULL);
    unlink(path);
}

__attribute__((target("f16c"))) static void check_f16_against_f16c(void) {
    for (uint32_t h = 0; h < 65536; h++) {
        float ref = _cvtsh_ss((unsigned short)h);
        float got = ts_f16_to_f32((uint16_t)h);
        if (isnan(ref)) {
            CHECK(isnan(got));
        } else if (memcmp(&ref, &got, 4) != 0) {
            CHECK(!"f16 -> f32 differs from F16C");
            fprintf(stderr, "  h=%04x\n", h);
            return;
        }
    }
    ts_rng rng;
    ts_rng_seed(&rng, 7);
    for (int i = 0; i < 2000000; i++) {
        uint32_t bits = (uint32_t)ts_rng_next(&rng);
        float f = ts_bits_to_f32(bits);
        if (isnan(f)) continue;
        uint16_t ref = _cvtss_sh(f, 0);
        uint16_t got = ts_f32_to_f16(f);
        if (ref != got) {
            fprintf(stderr, "  f=%a (bits %08x): F16C %04x, ours %04x\n", (double)f, bits, ref, got);
            CHECK(!"f32 -> f16 differs from F16C");
            return;
        }
    }
}

static void test_f16_conversions_match_hardware(void) {
    if (!__builtin_cpu_supports("f16c")) {
        fprintf(stderr, "  (no F16C on this CPU; checking fixed values only)\n");
    } else {
        check_f16_against_f16c();
    }
    CHECK_EQ_INT(ts_f32_to_f16(1.0f), 0x3c00);
    CHECK_EQ_INT(ts_f32_to_f16(65504.0f), 0x7bff);
    CHECK_EQ_INT(ts_f32_to_f16(65520.0f), 0x7c00);
    CHECK_EQ_INT(ts_f32_to_f16(5.9604645e-8f), 0x0001);
    CHECK_NEAR(ts_f16_to_f32(0x3555), 0.333251953125, 0);
}

static void test_bf16_conversion_rounds_to_nearest_even(void) {
    CHECK_EQ_INT(ts_f32_to_bf16(1.0f), 0x3f80);
    CHECK_EQ_INT(ts_f32_to_bf16(ts_bits_to_f32(0x3f808000u)), 0x3f80); /* tie → even */
    CHECK_EQ_INT(ts_f32_to_bf16(ts_bits_to_f32(0x3f818000u)), 0x3f82); /* tie → even */
    CHECK_EQ_INT(ts_f32_to_bf16(ts_bits_to_f32(0x3f808001u)), 0x3f81);
    CHECK_NEAR(ts_bf16_to_f32(0x4049), 3.140625, 0);
    CHECK(isnan(ts_bf16_to_f32(ts_f32_to_bf16(NAN))));
}

static void test_rng_is_deterministic(void) {
    ts_rng a, b;
    ts_rng_seed(&a, 1234);
    ts_rng_seed(&b, 1234);
    for (int i = 0; i < 1000; i++) CHECK(ts_rng_next(&a) == ts_rng_next(&b));
    double sum = 0;
    for (int i = 0; i < 100000; i++) {
        float u = ts_rng_uniform(&a);
        CHECK(u >= 0.0f && u < 1.0f);
        sum += u;
    }
    CHECK_NEAR(sum / 100000, 0.5, 0.01);
}

static void test_dtype_rows_and_names(void) {
    CHECK_EQ_INT(ts_dtype_row_bytes(TS_DTYPE_Q8_0, 64), 68);
    CHECK_EQ_INT(ts_dtype_row_bytes(TS_DTYPE_Q4_0, 64), 36);
    CHECK_EQ_INT(ts_dtype_row_bytes(TS_DTYPE_Q8_0, 63), 0);
    CHECK_EQ_INT(ts_dtype_row_bytes(TS_DTYPE_F16, 172), 344);
    ts_dtype t;
    CHECK_OK(ts_dtype_parse("Q8_0", &t));
    CHECK(t == TS_DTYPE_Q8_0);
    CHECK_OK(ts_dtype_parse("q5_k", &t));
    CHECK(t == TS_DTYPE_Q5_K);
    CHECK_EQ_INT(ts_dtype_row_bytes(TS_DTYPE_Q4_K, 512), 288);
    CHECK_EQ_INT(ts_dtype_row_bytes(TS_DTYPE_Q6_K, 128), 0); /* not whole super-blocks */
    CHECK(ts_dtype_parse("q3_0", &t) == TS_E_INVALID);
    CHECK(ts_dtype_is_known(14));  /* Q6_K */
    CHECK(!ts_dtype_is_known(16)); /* IQ2_XXS: not supported */
    CHECK(!ts_dtype_is_known(15)); /* Q8_K: activations only, never a tensor */
}

static void test_log_levels_parse(void) {
    ts_log_level l;
    CHECK_OK(ts_log_parse_level("WARN", &l));
    CHECK(l == TS_LOG_WARN);
    CHECK(ts_log_parse_level("loud", &l) == TS_E_INVALID);
}

/* Strict decoding: maximal ill-formed subparts, incomplete tails, and every code point round
 * trips through encode/decode. */
static void test_utf8_decodes_strictly(void) {
    static const struct {
        const char *bytes;
        size_t len, want_len;
        uint32_t want_cp;
    } cases[] = {
        {"A", 1, 1, 'A'},
        {"\xC3\xA9", 2, 2, 0xE9},
        {"\xE4\xBD\xA0", 3, 3, 0x4F60},
        {"\xF0\x9F\xA6\x99", 4, 4, 0x1F999},
        {"\xC3", 1, 1, TS_UTF8_INCOMPLETE},
        {"\xF0\x9F\xA6", 3, 3, TS_UTF8_INCOMPLETE},
        {"\xE4(", 2, 1, TS_UTF8_INVALID},
        {"\xF0\x9F(", 3, 2, TS_UTF8_INVALID},
        {"\xF0\x9F\xA6(", 4, 3, TS_UTF8_INVALID},
        {"\x80", 1, 1, TS_UTF8_INVALID},
        {"\xC0\xAF", 2, 1, TS_UTF8_INVALID},     /* overlong */
        {"\xE0\x80\x80", 3, 1, TS_UTF8_INVALID}, /* overlong */
        {"\xED\xA0\x80", 3, 1, TS_UTF8_INVALID}, /* surrogate */
        {"\xF4\x90\x80\x80", 4, 1, TS_UTF8_INVALID}, /* above U+10FFFF */
        {"\xFF", 1, 1, TS_UTF8_INVALID},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint32_t cp = 0;
        CHECK_EQ_INT(ts_utf8_decode(cases[i].bytes, cases[i].len, &cp), cases[i].want_len);
        CHECK_EQ_INT(cp, cases[i].want_cp);
    }
    for (uint32_t cp = 0; cp < 0x110000; cp++) {
        if (cp >= 0xD800 && cp <= 0xDFFF) continue;
        char buf[4];
        size_t n = ts_utf8_encode(cp, buf);
        uint32_t back = 0;
        if (ts_utf8_decode(buf, n, &back) != n || back != cp) {
            CHECK_EQ_INT(back, cp);
            break;
        }
    }
}

int main(void) {
    RUN(test_error_wrap_builds_one_line);
    RUN(test_buf_appends_and_formats);
    RUN(test_json_parses_nested_document);
    RUN(test_json_rejects_bad_input_with_position);
    RUN(test_json_writer_escapes_and_round_trips);
    RUN(test_flags_parse_forms_ranges_and_errors);
    RUN(test_flags_config_file_is_overridden_by_command_line);
    RUN(test_f16_conversions_match_hardware);
    RUN(test_bf16_conversion_rounds_to_nearest_even);
    RUN(test_rng_is_deterministic);
    RUN(test_dtype_rows_and_names);
    RUN(test_log_levels_parse);
    RUN(test_utf8_decodes_strictly);
    return test_summary();
}
