/*
 * tokenizer_hf_check.c — the comparison half of tests/integration/test_tokenizer_hf.py (which
 * makes Hugging Face tokenizer directories from the test vocabularies with the `tokenizers`
 * package and records the package's ids for a corpus):
 *
 *   tokenizer_hf_check DIR VOCAB.gguf CASES.jsonl
 *
 * loads DIR with ts_tokenizer_from_hf and the GGUF it was made from with ts_tokenizer_from_gguf,
 * and checks that
 *   - the tokenizer.json tokenizer gives the package's ids for every case (CASES: one object per
 *     line with text, parse_special, add_bos and ids; parse_special false is the package's
 *     encode_special_tokens, add_bos its add_special_tokens, which adds a BOS where the
 *     vocabulary does);
 *   - the GGUF tokenizer gives them too, except where the line says "nfc_changes" (the text is not
 *     in NFC and the tokenizer.json normalizes it, which llama.cpp's GGUF tokenizer does not) and
 *     where the text holds a token that llama.cpp makes a control token by its text while the
 *     tokenizer.json has it normal (Qwen's "</s>");
 *   - both have the same vocabulary size, BOS, EOS, add-BOS setting, end-of-generation set, chat
 *     template and pieces, but for those retyped tokens (no piece in the GGUF, their text in the
 *     tokenizer.json), at most a handful of them.
 * Exit 0 when everything holds, 1 otherwise (each mismatch printed).
 */
#include "common/buf.h"
#include "common/error.h"
#include "common/json.h"
#include "model/gguf.h"
#include "tests/unit/test.h"
#include "tests/unit/test_jsonl_util.h"
#include "tests/unit/test_tokenizer_util.h"
#include "tokenizer/tokenizer.h"

#include <stdint.h>

enum { MAX_RETYPED = 8 };

typedef struct pair {
    ts_tokenizer *hf, *gguf;
    int32_t retyped[MAX_RETYPED]; /* made control tokens by llama.cpp only */
    int n_retyped;
    int cases, hf_matched, gguf_checked, gguf_matched;
} pair;

static bool same_ids(const ts_tokenizer *t, const char *text, size_t len, bool bos, bool special,
                     const ts_json *want, const char *which) {
    return tok_ids_match_json(t, text, len, bos && ts_tokenizer_adds_bos(t), special, want, which);
}

static void check_case(const ts_json *line, void *ctx) {
    pair *p = ctx;
    const char *text;
    size_t len;
    bool parse_special, add_bos;
    const ts_json *ids;
    CHECK_OK(ts_json_get_string(line, "text", &text, &len));
    CHECK_OK(ts_json_get_bool(line, "parse_special", &parse_special));
    CHECK_OK(ts_json_get_bool(line, "add_bos", &add_bos));
    CHECK_OK(ts_json_get_array(line, "ids", &ids));
    const ts_json *nfc_changes = ts_json_get(line, "nfc_changes");
    p->cases++;
    p->hf_matched += same_ids(p->hf, text, len, add_bos, parse_special, ids, "tokenizer.json");
    if (nfc_changes && nfc_changes->type == TS_JSON_BOOL && nfc_changes->boolean) return;
    for (int i = 0; i < p->n_retyped; i++) {
        const char *s = ts_tokenizer_token_text(p->gguf, p->retyped[i]);
        if (memmem(text, len, s, strlen(s))) return;
    }
    p->gguf_checked++;
    p->gguf_matched += same_ids(p->gguf, text, len, add_bos, parse_special, ids, "gguf");
}

static void test_same_vocabulary(pair *p) {
    CHECK_EQ_INT(ts_tokenizer_n_vocab(p->hf), ts_tokenizer_n_vocab(p->gguf));
    CHECK_EQ_INT(ts_tokenizer_get_kind(p->hf), ts_tokenizer_get_kind(p->gguf));
    CHECK_EQ_INT(ts_tokenizer_adds_bos(p->hf), ts_tokenizer_adds_bos(p->gguf));
    if (ts_tokenizer_adds_bos(p->gguf))
        CHECK_EQ_INT(ts_tokenizer_bos(p->hf), ts_tokenizer_bos(p->gguf));
    CHECK_EQ_INT(ts_tokenizer_eos(p->hf), ts_tokenizer_eos(p->gguf));
    size_t n_hf, n_gguf;
    const int32_t *eog_hf = ts_tokenizer_eog_ids(p->hf, &n_hf);
    const int32_t *eog_gguf = ts_tokenizer_eog_ids(p->gguf, &n_gguf);
    CHECK(n_hf == n_gguf && !memcmp(eog_hf, eog_gguf, n_hf * sizeof *eog_hf));
    const char *a = ts_tokenizer_chat_template(p->hf), *b = ts_tokenizer_chat_template(p->gguf);
    CHECK((!a && !b) || (a && b && !strcmp(a, b)));
    int differ = 0;
    for (int32_t id = 0; id < ts_tokenizer_n_vocab(p->gguf); id++) {
        size_t la, lb;
        const char *pa = ts_tokenizer_piece(p->hf, id, &la),
                   *pb = ts_tokenizer_piece(p->gguf, id, &lb);
        if (la == lb && !memcmp(pa, pb, la)) continue;
        const char *text = ts_tokenizer_token_text(p->gguf, id);
        bool retyped = lb == 0 && la == strlen(text) && !memcmp(pa, text, la) &&
                       ts_tokenizer_is_eog(p->gguf, id) && p->n_retyped < MAX_RETYPED;
        if (retyped) {
            fprintf(stderr, "  token %d '%s': a control token in the GGUF only (llama.cpp)\n", id,
                    text);
            p->retyped[p->n_retyped++] = id;
        } else if (differ++ < 5) {
            fprintf(stderr, "  token %d: piece '%.*s' from tokenizer.json, '%.*s' from GGUF\n", id,
                    (int)la, pa, (int)lb, pb);
        }
    }
    CHECK_EQ_INT(differ, 0);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: tokenizer_hf_check DIR VOCAB.gguf CASES.jsonl\n");
        return 2;
    }
    pair p = {0};
    ts_gguf *g = NULL;
    CHECK_OK(ts_tokenizer_from_hf(argv[1], &p.hf));
    CHECK_OK(ts_gguf_open(argv[2], &g));
    if (g) CHECK_OK(ts_tokenizer_from_gguf(g, &p.gguf));
    if (p.hf && p.gguf) {
        test_same_vocabulary(&p);
        for_each_json_line(argv[3], check_case, &p);
        fprintf(stderr, "  %s: %d of %d cases match the tokenizers package; GGUF: %d of %d\n",
                argv[1], p.hf_matched, p.cases, p.gguf_matched, p.gguf_checked);
        CHECK(p.cases > 0);
        CHECK_EQ_INT(p.hf_matched, p.cases);
        CHECK_EQ_INT(p.gguf_matched, p.gguf_checked);
    }
    ts_tokenizer_destroy(p.hf);
    ts_tokenizer_destroy(p.gguf);
    ts_gguf_close(g);
    return test_failed_checks ? 1 : 0;
}
