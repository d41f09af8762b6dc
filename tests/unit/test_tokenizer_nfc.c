/*
 * test_tokenizer_nfc.c — NFC normalization (tokenizer/nfc.h) against Python's unicodedata:
 * 4232 texts of tests/data/nfc_cases.tsv (tools/gen_nfc_cases.py: random mixes of combining marks,
 * decomposable letters, composition exclusions, Hangul, and every decomposable code point as it
 * is and in NFD), plus the cases that need no data file: text below U+0300 passes unchanged,
 * ill-formed bytes are kept and block composition, and a long hostile run of alternating
 * combining classes normalizes in O(n log n).
 */
#include "common/buf.h"
#include "common/clock.h"
#include "common/error.h"
#include "tests/unit/test.h"
#include "tokenizer/nfc.h"

#include <stdbool.h>
#include <stdint.h>

static bool nfc_is(const char *text, size_t len, const char *want, size_t want_len) {
    ts_buf out = {0};
    int rc = ts_nfc(text, len, &out);
    bool ok =
        rc == 0 && out.len == want_len && (want_len == 0 || !memcmp(out.data, want, want_len));
    if (!ok) {
        fprintf(stderr, "  NFC of '%.*s': got", (int)len, text);
        for (size_t i = 0; i < out.len; i++)
            fprintf(stderr, " %02X", (unsigned char)out.data[i]);
        fprintf(stderr, ", want");
        for (size_t i = 0; i < want_len; i++)
            fprintf(stderr, " %02X", (unsigned char)want[i]);
        fprintf(stderr, "\n");
    }
    ts_buf_free(&out);
    return ok;
}

static void test_matches_python_unicodedata(void) {
    ts_buf file = {0};
    CHECK_OK(ts_buf_read_file(&file, TS_SOURCE_DIR "/tests/data/nfc_cases.tsv"));
    int cases = 0, matched = 0;
    for (char *line = file.data, *end; line && *line; line = end + 1) {
        end = strchr(line, '\n');
        char *tab = end ? memchr(line, '\t', (size_t)(end - line)) : NULL;
        CHECK(tab != NULL);
        if (!tab) break;
        cases++;
        matched += nfc_is(line, (size_t)(tab - line), tab + 1, (size_t)(end - tab - 1));
    }
    fprintf(stderr, "  %d of %d texts match\n", matched, cases);
    CHECK_EQ_INT(cases, 4232);
    CHECK_EQ_INT(matched, cases);
    ts_buf_free(&file);
}

/* String literals, lengths from sizeof (they may hold NUL-free bytes of any value). */
#define NFC_IS(text, want) nfc_is(text, sizeof text - 1, want, sizeof want - 1)

static void test_simple_cases(void) {
    CHECK(NFC_IS("", ""));
    CHECK(NFC_IS("plain ASCII, caf\xC3\xA9", "plain ASCII, caf\xC3\xA9"));
    CHECK(NFC_IS("cafe\xCC\x81", "caf\xC3\xA9"));                          /* e + acute */
    CHECK(NFC_IS("\xE2\x84\xAB", "\xC3\x85"));                             /* Angstrom sign */
    CHECK(NFC_IS("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8", "\xEA\xB0\x81")); /* jamo */
    /* a + dot above + dot below: reordered, then the dot below composes first */
    CHECK(NFC_IS("a\xCC\x87\xCC\xA3", "\xE1\xBA\xA1\xCC\x87"));
    /* U+0958 is a composition exclusion: it stays decomposed */
    CHECK(NFC_IS("\xE0\xA5\x98", "\xE0\xA4\x95\xE0\xA4\xBC"));
}

/* Ill-formed bytes stay as they are and nothing composes across them. */
static void test_ill_formed_bytes_are_kept(void) {
    CHECK(NFC_IS("e\xFF\xCC\x81", "e\xFF\xCC\x81"));
    CHECK(NFC_IS("e\xCC\x81\xC3", "\xC3\xA9\xC3"));
    CHECK(NFC_IS("\xE0\xA5", "\xE0\xA5"));
}

/* 1 MiB of combining marks whose classes alternate (230, 220, ...) after one letter: one run to
 * reorder, which a quadratic sort would take minutes over. */
static void test_long_mark_run_is_fast(void) {
    size_t n = 1 << 20;
    char *text = malloc(n + 1);
    if (!text) return;
    text[0] = 'a';
    for (size_t i = 1; i + 1 < n; i += 2) {
        bool above = (i / 2) % 2 == 0;
        text[i] = '\xCC';
        text[i + 1] = above ? '\x81' : '\xA3'; /* U+0301 (230) or U+0323 (220) */
    }
    size_t len = n - ((n - 1) % 2);
    ts_buf out = {0};
    int64_t t0 = ts_now_ns();
    CHECK_OK(ts_nfc(text, len, &out));
    double ms = ts_ns_to_ms(ts_now_ns() - t0);
    fprintf(stderr, "  %zu bytes of alternating marks: %.0f ms\n", len, ms);
    CHECK(ms < 10000);
    /* a + dot below composes to U+1EA1 (as long as the two); the other dots below, then every
     * acute, follow */
    CHECK(out.len == len && !memcmp(out.data, "\xE1\xBA\xA1\xCC\xA3", 5));
    CHECK(!memcmp(out.data + len - 2, "\xCC\x81", 2));
    ts_buf_free(&out);
    free(text);
}

int main(void) {
    RUN(test_matches_python_unicodedata);
    RUN(test_simple_cases);
    RUN(test_ill_formed_bytes_are_kept);
    RUN(test_long_mark_run_is_fast);
    return test_summary();
}
