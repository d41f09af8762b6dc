/*
 * vocab.c — building a ts_tokenizer, whatever file it comes from: the token table, then what
 * llama.cpp derives from it (llama_vocab::impl::load), so that a vocabulary gives the same ids,
 * the same special tokens and the same end-of-generation set here and there:
 *
 *   - special tokens found by their text when no id names them: EOT (<|eot_id|>, <|im_end|>, ...),
 *     EOM (<|eom_id|>) and the six fill-in-the-middle tokens. The first text of each list that
 *     the vocabulary has is taken (llama.cpp takes whichever its hash map yields first, which
 *     only matters for a vocabulary holding two of them); a token found this way becomes a
 *     control token;
 *   - end of generation: the FIM pad, repo and file-separator tokens, every token whose text is
 *     in EOG_TEXTS (made control tokens too), and EOS, EOT and EOM. Two of llama.cpp's
 *     workarounds apply: <|end|> is no EOG token where <|return|> and <|call|> (or <|calls|> and
 *     <|flush|>) are (gpt-oss, solar-open), and </s> is none where <|tool_response> is (gemma4);
 *   - the gpt-oss tokens <|channel|>, <|message|>, <|start|>, <|constrain|> become user-defined
 *     (written in the text even when special tokens are not parsed, shown in the output);
 *   - the tokens matched in the text before splitting: control, user-defined and unknown ones,
 *     longest first (ties: lower id first).
 * The type changes are llama.cpp's and apply to GGUF vocabularies; a tokenizer.json keeps the
 * types its file gives (so that it tokenizes as the `tokenizers` package does: Qwen 2's normal
 * token "</s>", which llama.cpp makes a control token, stays text there), while the special ids
 * and the end-of-generation set are found the same way for both.
 */
#include "common/error.h"
#include "tokenizer/grow.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/unicode.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ts_vocab_alloc(ts_tokenizer *t, int32_t n, size_t text_bytes) {
    t->n_vocab = n;
    t->texts = malloc(text_bytes ? text_bytes : 1);
    t->pieces = malloc(text_bytes ? text_bytes : 1); /* a piece is never longer than its text */
    t->text_off = malloc((size_t)n * sizeof *t->text_off);
    t->text_len = malloc((size_t)n * sizeof *t->text_len);
    t->piece_off = malloc((size_t)n * sizeof *t->piece_off);
    t->piece_len = malloc((size_t)n * sizeof *t->piece_len);
    t->scores = malloc((size_t)n * sizeof *t->scores);
    t->types = malloc((size_t)n);
    if (!t->texts || !t->pieces || !t->text_off || !t->text_len || !t->piece_off || !t->piece_len ||
        !t->scores || !t->types)
        return ts_error_set(TS_E_NOMEM, "out of memory for a vocabulary of %" PRId32 " tokens", n);
    t->bos = t->eos = t->unk = t->eot = t->eom = -1;
    if (ts_strtab_reserve(&t->ids_by_text, (size_t)n))
        return ts_error_set(TS_E_NOMEM, "out of memory for a vocabulary of %" PRId32 " tokens", n);
    t->fim_pre = t->fim_suf = t->fim_mid = t->fim_pad = t->fim_rep = t->fim_sep = -1;
    return TS_OK;
}

int ts_vocab_set(ts_tokenizer *t, int32_t i, const char *text, size_t len, float score,
                 uint8_t type) {
    size_t off = i == 0 ? 0 : t->text_off[i - 1] + t->text_len[i - 1] + 1;
    memcpy(t->texts + off, text, len);
    t->texts[off + len] = '\0';
    t->text_off[i] = off;
    t->text_len[i] = (uint32_t)len;
    t->scores[i] = score;
    t->types[i] = type;
    /* Empty texts are never looked up (llama.cpp renames them); for duplicate texts the last id
     * wins, as in llama.cpp. */
    return len ? ts_strtab_put(&t->ids_by_text, text, len, i) : TS_OK;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

int ts_vocab_byte_token_value(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int hi = hex_digit(s[3]), lo = hex_digit(s[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

static int32_t find_text(const ts_tokenizer *t, const char *text) {
    return ts_strtab_find(&t->ids_by_text, text, strlen(text));
}

/* ---- special tokens found by their text ---- */

/* DeepSeek's texts, with U+FF5C (fullwidth vertical line) and U+2581 (lower one eighth block). */
#define DS_BAR "\xEF\xBD\x9C"
#define DS_SPACE "\xE2\x96\x81"
#define DS_END_OF_SENTENCE "<" DS_BAR "end" DS_SPACE "of" DS_SPACE "sentence" DS_BAR ">"
#define DS_FIM_BEGIN "<" DS_BAR "fim" DS_SPACE "begin" DS_BAR ">"
#define DS_FIM_HOLE "<" DS_BAR "fim" DS_SPACE "hole" DS_BAR ">"
#define DS_FIM_END "<" DS_BAR "fim" DS_SPACE "end" DS_BAR ">"

static const char *const EOT_TEXTS[] = {
    "<|eot_id|>",         "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
    "<|end_of_text|>",    "<EOT>",      "_<EOT>",  "[EOT]",         DS_END_OF_SENTENCE,
    "<end_of_utterance>", NULL};
static const char *const EOM_TEXTS[] = {"<|eom_id|>", NULL};
static const char *const FIM_PRE_TEXTS[] = {"<|fim_prefix|>",  "<fim-prefix>", "<fim_prefix>",
                                            DS_FIM_BEGIN,      "<PRE>",        DS_SPACE "<PRE>",
                                            "<|code_prefix|>", "<|prefix|>",   NULL};
static const char *const FIM_SUF_TEXTS[] = {"<|fim_suffix|>",  "<fim-suffix>", "<fim_suffix>",
                                            DS_FIM_HOLE,       "<SUF>",        DS_SPACE "<SUF>",
                                            "<|code_suffix|>", "<|suffix|>",   NULL};
static const char *const FIM_MID_TEXTS[] = {"<|fim_middle|>",  "<fim-middle>", "<fim_middle>",
                                            DS_FIM_END,        "<MID>",        DS_SPACE "<MID>",
                                            "<|code_middle|>", "<|middle|>",   NULL};
static const char *const FIM_PAD_TEXTS[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>",
                                            "<PAD>",       "[PAD]",     NULL};
static const char *const FIM_REP_TEXTS[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>",
                                            "<REPO>",       "<reponame>",    NULL};
static const char *const FIM_SEP_TEXTS[] = {"<|file_sep|>", NULL};

/* Texts that end generation wherever they are in a vocabulary. */
static const char *const EOG_TEXTS[] = {"<|eot_id|>",
                                        "<|im_end|>",
                                        "<|end|>",
                                        "<|return|>",
                                        "<|call|>",
                                        "<|flush|>",
                                        "<|calls|>",
                                        "<end_of_turn>",
                                        "<|endoftext|>",
                                        "</s>",
                                        "<|eom_id|>",
                                        "<EOT>",
                                        "_<EOT>",
                                        "[EOT]",
                                        "[EOS]",
                                        "<|end_of_text|>",
                                        "<end_of_utterance>",
                                        "<eos>",
                                        "<turn|>",
                                        "<|tool_response>",
                                        DS_END_OF_SENTENCE,
                                        "[e~[",
                                        NULL};

/* gpt-oss tokens that llama.cpp always renders. */
static const char *const USER_DEFINED_TEXTS[] = {"<|channel|>", "<|message|>", "<|start|>",
                                                 "<|constrain|>", NULL};

/* Changes a token's type where llama.cpp does (GGUF vocabularies only, see ts_vocab_finish). */
static void retype(ts_tokenizer *t, bool llama_cpp_types, int32_t id, uint8_t type) {
    if (llama_cpp_types && id >= 0) t->types[id] = type;
}

/* *id, when no key set it: the first of `texts` in the vocabulary, made a control token. */
static void detect(ts_tokenizer *t, bool llama_cpp_types, int32_t *id, const char *const *texts) {
    if (*id >= 0) return;
    for (; *texts; texts++) {
        int32_t found = find_text(t, *texts);
        if (found < 0) continue;
        *id = found;
        retype(t, llama_cpp_types, found, TS_TOKEN_CONTROL);
        return;
    }
}

static int add_eog(ts_tokenizer *t, int32_t id) {
    if (id < 0) return TS_OK;
    size_t at = 0;
    while (at < t->n_eog && t->eog[at] < id)
        at++;
    if (at < t->n_eog && t->eog[at] == id) return TS_OK;
    int rc = ts_grow(&t->eog, &t->eog_cap, t->n_eog + 1, sizeof *t->eog);
    if (rc) return rc;
    memmove(t->eog + at + 1, t->eog + at, (t->n_eog - at) * sizeof *t->eog);
    t->eog[at] = id;
    t->n_eog++;
    return TS_OK;
}

static bool remove_eog(ts_tokenizer *t, int32_t id) {
    for (size_t i = 0; i < t->n_eog; i++) {
        if (t->eog[i] != id) continue;
        memmove(t->eog + i, t->eog + i + 1, (t->n_eog - i - 1) * sizeof *t->eog);
        t->n_eog--;
        return true;
    }
    return false;
}

static bool eog_has_text(const ts_tokenizer *t, const char *text) {
    int32_t id = find_text(t, text);
    for (size_t i = 0; id >= 0 && i < t->n_eog; i++)
        if (t->eog[i] == id) return true;
    return false;
}

static int find_specials(ts_tokenizer *t, bool types) {
    detect(t, types, &t->eot, EOT_TEXTS);
    detect(t, types, &t->eom, EOM_TEXTS);
    detect(t, types, &t->fim_pre, FIM_PRE_TEXTS);
    detect(t, types, &t->fim_suf, FIM_SUF_TEXTS);
    detect(t, types, &t->fim_mid, FIM_MID_TEXTS);
    detect(t, types, &t->fim_pad, FIM_PAD_TEXTS);
    detect(t, types, &t->fim_rep, FIM_REP_TEXTS);
    detect(t, types, &t->fim_sep, FIM_SEP_TEXTS);
    int rc = add_eog(t, t->fim_pad);
    if (!rc) rc = add_eog(t, t->fim_rep);
    if (!rc) rc = add_eog(t, t->fim_sep);
    for (const char *const *text = EOG_TEXTS; *text && !rc; text++) {
        int32_t id = find_text(t, *text);
        if (id < 0) continue;
        retype(t, types, id, TS_TOKEN_CONTROL);
        rc = add_eog(t, id);
    }
    for (const char *const *text = USER_DEFINED_TEXTS; *text; text++)
        retype(t, types, find_text(t, *text), TS_TOKEN_USER_DEFINED);
    if (!rc) rc = add_eog(t, t->eos);
    if (!rc) rc = add_eog(t, t->eot);
    if (!rc) rc = add_eog(t, t->eom);
    if (rc) return rc;
    bool has_call = eog_has_text(t, "<|call|>") || eog_has_text(t, "<|calls|>");
    if (has_call && (eog_has_text(t, "<|return|>") || eog_has_text(t, "<|flush|>"))) {
        int32_t end = find_text(t, "<|end|>");
        if (end >= 0 && remove_eog(t, end)) retype(t, types, end, TS_TOKEN_USER_DEFINED);
    }
    if (eog_has_text(t, "<|tool_response>")) {
        int32_t s = find_text(t, "</s>");
        if (s >= 0 && remove_eog(t, s)) retype(t, types, s, TS_TOKEN_NORMAL);
    }
    return TS_OK;
}

/* ---- pieces and special-token matching ---- */

/* What ts_tokenizer_piece returns for token i (see tokenizer.h), written to dst; its length. */
static size_t make_piece(const ts_tokenizer *t, int32_t i, char *dst) {
    const char *s = t->texts + t->text_off[i];
    size_t n = t->text_len[i], len = 0;
    switch (t->types[i]) {
    case TS_TOKEN_USER_DEFINED: memcpy(dst, s, n); return n;
    case TS_TOKEN_BYTE: { /* <0xXX>; a byte token of another form shows nothing */
        int byte = ts_vocab_byte_token_value(s, n);
        if (byte < 0) return 0;
        dst[0] = (char)byte;
        return 1;
    }
    case TS_TOKEN_NORMAL: break;
    default: return 0; /* control, unknown, unused, undefined: nothing */
    }
    for (size_t j = 0; j < n;) {
        uint32_t cp;
        size_t k = ts_utf8_decode(s + j, n - j, &cp);
        int byte = -1;
        if (t->kind == TS_TOKENIZER_SPM && cp == 0x2581) byte = ' ';
        if (t->kind == TS_TOKENIZER_BPE && cp < 0x110000) byte = ts_gpt2_cp_to_byte(cp);
        if (byte >= 0) {
            dst[len++] = (char)byte;
        } else { /* outside the alphabet: kept as written */
            memcpy(dst + len, s + j, k);
            len += k;
        }
        j += k;
    }
    return len;
}

static void make_pieces(ts_tokenizer *t) {
    size_t off = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        t->piece_off[i] = off;
        t->piece_len[i] = (uint32_t)make_piece(t, i, t->pieces + off);
        off += t->piece_len[i];
    }
    for (int c = 0; c < 256; c++) { /* SPM byte fallback, as llama.cpp's byte_to_token */
        char name[7];
        snprintf(name, sizeof name, "<0x%02X>", c);
        int32_t id = ts_strtab_find(&t->ids_by_text, name, 6);
        char one = (char)c;
        t->byte_tokens[c] = id >= 0 ? id : ts_strtab_find(&t->ids_by_text, &one, 1);
    }
}

typedef struct {
    uint32_t len;
    int32_t id;
} sized_id;

/* Longest first; ties by id, so that the order does not depend on the sort. */
static int longer_first(const void *a, const void *b) {
    const sized_id *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static bool matched_before_splitting(const ts_tokenizer *t, int32_t i) {
    uint8_t type = t->types[i];
    return t->text_len[i] > 0 &&
           (type == TS_TOKEN_CONTROL || type == TS_TOKEN_USER_DEFINED || type == TS_TOKEN_UNKNOWN);
}

static int sort_specials(ts_tokenizer *t) {
    size_t n = 0;
    for (int32_t i = 0; i < t->n_vocab; i++)
        n += matched_before_splitting(t, i);
    if (!n) return TS_OK;
    sized_id *sorted = malloc(n * sizeof *sorted);
    t->specials = malloc(n * sizeof *t->specials);
    if (!sorted || !t->specials) {
        free(sorted);
        return ts_error_set(TS_E_NOMEM, "out of memory");
    }
    for (int32_t i = 0, k = 0; i < t->n_vocab; i++)
        if (matched_before_splitting(t, i)) sorted[k++] = (sized_id){t->text_len[i], i};
    qsort(sorted, n, sizeof *sorted, longer_first);
    for (size_t i = 0; i < n; i++)
        t->specials[i] = sorted[i].id;
    t->n_specials = n;
    free(sorted);
    return TS_OK;
}

int ts_vocab_finish(ts_tokenizer *t, const char *source, bool llama_cpp_types) {
    int rc = find_specials(t, llama_cpp_types);
    if (rc) return ts_error_wrap(rc, "%s", source);
    make_pieces(t);
    rc = sort_specials(t);
    return rc ? ts_error_wrap(rc, "%s", source) : TS_OK;
}

void ts_tokenizer_destroy(ts_tokenizer *t) {
    if (!t) return;
    free(t->texts);
    free(t->text_off);
    free(t->text_len);
    free(t->scores);
    free(t->types);
    free(t->pieces);
    free(t->piece_off);
    free(t->piece_len);
    ts_strtab_free(&t->ids_by_text);
    free(t->eog);
    free(t->specials);
    free(t->chat_template);
    ts_bpe_free(&t->bpe);
    free(t);
}
