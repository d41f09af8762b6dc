/*
 * test_tokenizer_pretok.c — the hand-written pre-tokenizer regexes (tokenizer/pretok.h) against
 * a real regex engine: every expected split below was produced by Python's `regex` module with
 * the GPT-2, Llama 3 and Qwen 2 patterns (\s as \p{White_Space}). A randomised comparison of
 * 16,000 strings per pattern (letters, digits of several scripts, Unicode spaces, contractions in
 * both cases, marks, emoji, controls) found no difference either; these cases keep the contract.
 * The chained kinds (SMOLLM, DEFAULT) are checked the same way: their expected splits come from
 * applying the patterns of the chain one after the other with Python's `regex`, each pass on every
 * word of the one before, keeping unmatched stretches (llama.cpp's unicode_regex_split); the
 * SMOLLM column also equals what the `tokenizers` package's Digits + ByteLevel pre-tokenizer gives.
 * Also: ill-formed UTF-8 keeps every byte, and the splits always cover the input.
 */
#include "common/error.h"
#include "tests/unit/test.h"
#include "tokenizer/pretok.h"
#include "tokenizer/unicode.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct pretok_case {
    const char *text;
    const char *words[3][40]; /* GPT2, LLAMA3, QWEN2; NULL-terminated */
} pretok_case;

static const pretok_case CASES[] = {
    {"Hello world",
     {{"Hello", " world", NULL}, {"Hello", " world", NULL}, {"Hello", " world", NULL}}},
    {"I've been 'told he's there, 'RE you sure\077 'M not sure I'll",
     {{"I",    "'ve",   " been", " '", "told", " he",  "'s",    " there", ",",   " '", "RE",
       " you", " sure", "\077",  " '", "M",    " not", " sure", " I",     "'ll", NULL},
      {"I",    "'ve",   " been", " '", "told", " he",  "'s",    " there", ",",   " '", "RE",
       " you", " sure", "\077",  " '", "M",    " not", " sure", " I",     "'ll", NULL},
      {"I",    "'ve",   " been", " '", "told", " he",  "'s",    " there", ",",   " '", "RE",
       " you", " sure", "\077",  " '", "M",    " not", " sure", " I",     "'ll", NULL}}},
    {"  leading and trailing  ",
     {{" ", " leading", " and", " trailing", "  ", NULL},
      {" ", " leading", " and", " trailing", "  ", NULL},
      {" ", " leading", " and", " trailing", "  ", NULL}}},
    {"a   b\t\tc",
     {{"a", "  ", " b", "\t", "\t", "c", NULL},
      {"a", "  ", " b", "\t", "\tc", NULL},
      {"a", "  ", " b", "\t", "\tc", NULL}}},
    {"line\r\n\r\nnext\n",
     {{"line", "\r\n\r", "\n", "next", "\n", NULL},
      {"line", "\r\n\r\n", "next", "\n", NULL},
      {"line", "\r\n\r\n", "next", "\n", NULL}}},
    {"12345 3.14 \331\243\331\244\331\245 \302\262\302\275",
     {{"12345", " 3", ".", "14", " \331\243\331\244\331\245", " \302\262\302\275", NULL},
      {"123", "45", " ", "3", ".", "14", " ", "\331\243\331\244\331\245", " ", "\302\262\302\275",
       NULL},
      {"1", "2", "3", "4", "5", " ", "3", ".", "1", "4", " ", "\331\243", "\331\244", "\331\245",
       " ", "\302\262", "\302\275", NULL}}},
    {"!!!\077\077\077 ...\n\n",
     {{"!!!\077\077\077", " ...", "\n\n", NULL},
      {"!!!\077\077\077", " ...\n\n", NULL},
      {"!!!\077\077\077", " ...\n\n", NULL}}},
    {" (x) [y]",
     {{" (", "x", ")", " [", "y", "]", NULL},
      {" (", "x", ")", " [", "y", "]", NULL},
      {" (", "x", ")", " [", "y", "]", NULL}}},
    {"na\303\257ve caf\303\251 \316\251\316\274\316\255\316\263\316\261",
     {{"na\303\257ve", " caf\303\251", " \316\251\316\274\316\255\316\263\316\261", NULL},
      {"na\303\257ve", " caf\303\251", " \316\251\316\274\316\255\316\263\316\261", NULL},
      {"na\303\257ve", " caf\303\251", " \316\251\316\274\316\255\316\263\316\261", NULL}}},
    {"\344\275\240\345\245\275\344\270\226\347\225\214\357\274\214\345\206\215\350\247\201",
     {{"\344\275\240\345\245\275\344\270\226\347\225\214", "\357\274\214",
       "\345\206\215\350\247\201", NULL},
      {"\344\275\240\345\245\275\344\270\226\347\225\214", "\357\274\214\345\206\215\350\247\201",
       NULL},
      {"\344\275\240\345\245\275\344\270\226\347\225\214", "\357\274\214\345\206\215\350\247\201",
       NULL}}},
    {"emoji \360\237\246\231\360\237\246\231 x",
     {{"emoji", " \360\237\246\231\360\237\246\231", " x", NULL},
      {"emoji", " \360\237\246\231\360\237\246\231", " x", NULL},
      {"emoji", " \360\237\246\231\360\237\246\231", " x", NULL}}},
    {"e\314\201t\303\251",
     {{"e", "\314\201", "t\303\251", NULL},
      {"e", "\314\201t\303\251", NULL},
      {"e", "\314\201t\303\251", NULL}}},
    {"a\302\240b\343\200\200c",
     {{"a", "\302\240", "b", "\343\200\200", "c", NULL},
      {"a", "\302\240b", "\343\200\200c", NULL},
      {"a", "\302\240b", "\343\200\200c", NULL}}},
    {"x \342\200\250y",
     {{"x", " ", "\342\200\250", "y", NULL},
      {"x", " ", "\342\200\250y", NULL},
      {"x", " ", "\342\200\250y", NULL}}},
    {"'", {{"'", NULL}, {"'", NULL}, {"'", NULL}}},
    {"' s", {{"'", " s", NULL}, {"'", " s", NULL}, {"'", " s", NULL}}},
    {"don't", {{"don", "'t", NULL}, {"don", "'t", NULL}, {"don", "'t", NULL}}},
    {"DON'T", {{"DON", "'", "T", NULL}, {"DON", "'T", NULL}, {"DON", "'T", NULL}}},
    {"a'LL", {{"a", "'", "LL", NULL}, {"a", "'LL", NULL}, {"a", "'LL", NULL}}},
    {"\t", {{"\t", NULL}, {"\t", NULL}, {"\t", NULL}}},
    {"\n", {{"\n", NULL}, {"\n", NULL}, {"\n", NULL}}},
    {" ", {{" ", NULL}, {" ", NULL}, {" ", NULL}}},
    {"  \n  x", {{"  \n ", " x", NULL}, {"  \n", " ", " x", NULL}, {"  \n", " ", " x", NULL}}},
    {"$+<=>^~|", {{"$+<=>^~|", NULL}, {"$+<=>^~|", NULL}, {"$+<=>^~|", NULL}}},
    {"3333333",
     {{"3333333", NULL}, {"333", "333", "3", NULL}, {"3", "3", "3", "3", "3", "3", "3", NULL}}},
    {"tab\tend\t",
     {{"tab", "\t", "end", "\t", NULL},
      {"tab", "\tend", "\t", NULL},
      {"tab", "\tend", "\t", NULL}}},
    {"\001ctl\342\200\213zw",
     {{"\001", "ctl", "\342\200\213", "zw", NULL},
      {"\001ctl", "\342\200\213zw", NULL},
      {"\001ctl", "\342\200\213zw", NULL}}},
};

typedef struct chain_case {
    const char *text;
    const char *words[2][40]; /* SMOLLM, DEFAULT; NULL-terminated */
} chain_case;

static const chain_case CHAIN_CASES[] = {
    {"Hello world", {{"Hello", " world", NULL}, {"Hello", " world", NULL}}},
    {"numbers 1234567890 and 3.14159 and 2026-12-02",
     {{"numbers", " ", "1", "2", "3", "4", "5", "6", "7", "8",    "9", "0",
       " and",    " ", "3", ".", "1", "4", "1", "5", "9", " and", " ", "2",
       "0",       "2", "6", "-", "1", "2", "-", "0", "2", NULL},
      {"numbers", " ",    "123", "456", "789", "0", " and", " ", "3",  ".", "141",
       "59",      " and", " ",   "202", "6",   "-", "12",   "-", "02", NULL}}},
    {"  leading and trailing  ",
     {{" ", " leading", " and", " trailing", "  ", NULL},
      {" ", " leading", " and", " trailing", "  ", NULL}}},
    {"a   b\t\tc",
     {{"a", "  ", " b", "\t", "\t", "c", NULL}, {"a", "  ", " b", "\t", "\t", "c", NULL}}},
    {"line\r\n\r\nnext\n",
     {{"line", "\r\n\r", "\n", "next", "\n", NULL}, {"line", "\r\n\r", "\n", "next", "\n", NULL}}},
    {"12345 3.14 \331\243\331\244\331\245 \302\262\302\275",
     {{"1", "2", "3", "4", "5", " ", "3", ".", "1", "4", " ", "\331\243", "\331\244", "\331\245",
       " ", "\302\262", "\302\275", NULL},
      {"123", "45", " ", "3", ".", "14", " ", "\331\243\331\244\331\245", " ", "\302\262\302\275",
       NULL}}},
    {"!!!\077\077\077 ...\n\n",
     {{"!!!\077\077\077", " ...", "\n\n", NULL}, {"!!!\077\077\077", " ", "...", "\n\n", NULL}}},
    {" (x) [y]",
     {{" (", "x", ")", " [", "y", "]", NULL}, {" ", "(", "x", ")", " ", "[", "y", "]", NULL}}},
    {"x=1;y=2;print(x+y)",
     {{"x", "=", "1", ";", "y", "=", "2", ";", "print", "(", "x", "+", "y", ")", NULL},
      {"x", "=", "1", ";", "y", "=", "2", ";", "print", "(", "x", "+", "y", ")", NULL}}},
    {"$+<=>^~|`", {{"$+<=>^~|`", NULL}, {"$+<=>^~|", "`", NULL}}},
    {"don't DON'T 'll",
     {{"don", "'t", " DON", "'", "T", " '", "ll", NULL},
      {"don", "'", "t", " DON", "'", "T", " ", "'", "ll", NULL}}},
    {"3333333", {{"3", "3", "3", "3", "3", "3", "3", NULL}, {"333", "333", "3", NULL}}},
    {"a1b22c333d4444",
     {{"a", "1", "b", "2", "2", "c", "3", "3", "3", "d", "4", "4", "4", "4", NULL},
      {"a", "1", "b", "22", "c", "333", "d", "444", "4", NULL}}},
    {" 12  34", {{" ", "1", "2", "  ", "3", "4", NULL}, {" ", "12", " ", " ", "34", NULL}}},
    {"caf\303\251 \342\200\224 \302\253quote\302\273 \343\200\201\343\200\202",
     {{"caf\303\251", " \342\200\224", " \302\253", "quote", "\302\273",
       " \343\200\201\343\200\202", NULL},
      {"caf\303\251", " ", "\342\200\224", " ", "\302\253", "quote", "\302\273", " ",
       "\343\200\201\343\200\202", NULL}}},
    {"emoji \360\237\232\200\360\237\224\245 and 7\357\270\217\342\203\243",
     {{"emoji", " \360\237\232\200\360\237\224\245", " and", " ", "7", "\357\270\217\342\203\243",
       NULL},
      {"emoji", " \360\237\232\200\360\237\224\245", " and", " ", "7", "\357\270\217\342\203\243",
       NULL}}},
    {"tab\tend\t", {{"tab", "\t", "end", "\t", NULL}, {"tab", "\t", "end", "\t", NULL}}},
    {"$100,000.00!!",
     {{"$", "1", "0", "0", ",", "0", "0", "0", ".", "0", "0", "!!", NULL},
      {"$", "100", ",", "000", ".", "00", "!!", NULL}}},
    {"x <|im_start|> y",
     {{"x", " <|", "im", "_", "start", "|>", " y", NULL},
      {"x", " ", "<|", "im", "_", "start", "|>", " y", NULL}}},
    {"\342\205\240\342\205\241 roman",
     {{"\342\205\240", "\342\205\241", " roman", NULL},
      {"\342\205\240\342\205\241", " roman", NULL}}},
};

enum { N_KINDS = 5 };
static const ts_pretok_kind KINDS[N_KINDS] = {TS_PRETOK_GPT2, TS_PRETOK_LLAMA3, TS_PRETOK_QWEN2,
                                              TS_PRETOK_SMOLLM, TS_PRETOK_DEFAULT};
static const char *const KIND_NAMES[N_KINDS] = {"gpt2", "llama3", "qwen2", "smollm", "default"};

/* The split of text by kind equals `words`; prints both on a mismatch. */
static bool split_is(ts_pretok *p, int kind, const char *text, const char *const *words) {
    size_t len = strlen(text);
    if (ts_pretok_split(p, KINDS[kind], text, len) != 0) return false;
    bool ok = true;
    size_t start = 0, i = 0;
    for (; ok && i < p->n_ends; i++) {
        size_t end = p->ends[i];
        ok = words[i] && strlen(words[i]) == end - start &&
             !memcmp(words[i], text + start, end - start);
        start = end;
    }
    ok = ok && words[i] == NULL;
    if (!ok) {
        fprintf(stderr, "  %s: '%s' split as:", KIND_NAMES[kind], text);
        for (size_t k = 0, s = 0; k < p->n_ends; s = p->ends[k++])
            fprintf(stderr, " [%.*s]", (int)(p->ends[k] - s), text + s);
        fprintf(stderr, "\n");
    }
    return ok;
}

static void test_splits_match_the_regexes(void) {
    ts_pretok p = {0};
    for (size_t c = 0; c < sizeof CASES / sizeof CASES[0]; c++)
        for (int k = 0; k < 3; k++)
            CHECK(split_is(&p, k, CASES[c].text, CASES[c].words[k]));
    ts_pretok_free(&p);
}

static void test_chained_splits_match_the_regexes(void) {
    ts_pretok p = {0};
    for (size_t c = 0; c < sizeof CHAIN_CASES / sizeof CHAIN_CASES[0]; c++)
        for (int k = 0; k < 2; k++)
            CHECK(split_is(&p, 3 + k, CHAIN_CASES[c].text, CHAIN_CASES[c].words[k]));
    ts_pretok_free(&p);
}

static void test_empty_text_has_no_words(void) {
    ts_pretok p = {0};
    for (int k = 0; k < N_KINDS; k++) {
        CHECK_OK(ts_pretok_split(&p, KINDS[k], "", 0));
        CHECK_EQ_INT(p.n_ends, 0);
    }
    ts_pretok_free(&p);
}

/* Ill-formed bytes count as one symbol each (like U+FFFD) and stay in the words. */
static void test_ill_formed_utf8_is_kept(void) {
    ts_pretok p = {0};
    static const char text[] = "ab\xFF\xFE cd\xE4\xBD x\xC3";
    static const char *const words[] = {"ab", "\xFF\xFE", " cd", "\xE4\xBD", " x", "\xC3", NULL};
    for (int k = 0; k < N_KINDS; k++)
        CHECK(split_is(&p, k, text, words));
    ts_pretok_free(&p);
}

/* Every byte string splits into words that cover it exactly, in order, none empty. */
static void test_random_bytes_are_covered(void) {
    ts_pretok p = {0};
    uint32_t seed = 12345;
    char text[64];
    for (int round = 0; round < 3000; round++) {
        size_t len = 1 + round % 63;
        for (size_t i = 0; i < len; i++) {
            seed = seed * 1664525u + 1013904223u;
            text[i] = (char)(seed >> 24);
        }
        for (int k = 0; k < N_KINDS; k++) {
            CHECK_OK(ts_pretok_split(&p, KINDS[k], text, len));
            size_t prev = 0;
            for (size_t i = 0; i < p.n_ends; i++) {
                CHECK(p.ends[i] > prev);
                prev = p.ends[i];
            }
            CHECK_EQ_INT(prev, len);
        }
    }
    ts_pretok_free(&p);
}

/* GPT-2's byte alphabet: printable Latin-1 bytes stand for themselves, the other 68 take
 * U+0100..U+0143 in byte order, and the inverse undoes it (nothing else maps to a byte). */
static void test_gpt2_alphabet_is_a_bijection(void) {
    uint32_t next = 0x100;
    for (int b = 0; b < 256; b++) {
        uint32_t cp = ts_gpt2_byte_to_cp((uint8_t)b);
        bool kept = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        CHECK_EQ_INT(cp, kept ? (uint32_t)b : next);
        if (!kept) next++;
        CHECK_EQ_INT(ts_gpt2_cp_to_byte(cp), b);
    }
    CHECK_EQ_INT(next, 0x144);
    int mapped = 0;
    for (uint32_t cp = 0; cp < 0x200; cp++)
        mapped += ts_gpt2_cp_to_byte(cp) >= 0;
    CHECK_EQ_INT(mapped, 256);
}

int main(void) {
    RUN(test_splits_match_the_regexes);
    RUN(test_chained_splits_match_the_regexes);
    RUN(test_empty_text_has_no_words);
    RUN(test_ill_formed_utf8_is_kept);
    RUN(test_random_bytes_are_covered);
    RUN(test_gpt2_alphabet_is_a_bijection);
    return test_summary();
}
