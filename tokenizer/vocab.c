/*
 * vocab.c — building a ts_tokenizer from GGUF metadata: reading and checking every key the
 * tokenizers use, copying the vocabulary, and precomputing what encoding and decoding look up.
 *
 * Defaults follow llama.cpp's for the same file, so that a file gives the same ids here and there:
 * SentencePiece ("llama") vocabularies default to BOS 1, EOS 2, UNK 0, add BOS, add the dummy
 * prefix; byte-level BPE ("gpt2") ones have no default special ids and add BOS only for the
 * Llama 3 pre-tokenizer. Keys present in the file override the defaults. A special id of -1
 * (or 0xFFFFFFFF, how converters write "none") means none; any other id outside the vocabulary
 * is TS_E_FORMAT.
 */
#include "common/error.h"
#include "common/log.h"
#include "tokenizer/grow.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/unicode.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "FILE: key 'KEY': <what>" as TS_E_FORMAT. */
static int bad_key(const ts_gguf *g, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int bad_key(const ts_gguf *g, const char *key, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = ts_error_setv(TS_E_FORMAT, fmt, ap);
    va_end(ap);
    return ts_error_wrap(rc, "%s: key '%s'", ts_gguf_path(g), key);
}

/* A required array: absent is TS_E_FORMAT too (the file has a tokenizer, but a broken one). */
static int required_array(const ts_gguf *g, const char *key, ts_gguf_type type,
                          const ts_gguf_kv **out) {
    int rc = ts_gguf_get_array(g, key, type, out);
    if (rc == TS_E_NOT_FOUND)
        return ts_error_set(TS_E_FORMAT, "%s: missing key '%s'", ts_gguf_path(g), key);
    return rc;
}

/* An optional per-token array (scores, token types): NULL if absent; else it must hold numbers
 * of the wanted kind, one per token. */
static int per_token_array(const ts_gguf *g, const char *key, bool floats, int32_t n_vocab,
                           const ts_gguf_kv **out) {
    *out = ts_gguf_find_kv(g, key);
    if (!*out) return TS_OK;
    const ts_gguf_kv *kv = *out;
    bool is_float = kv->elem_type == TS_GGUF_FLOAT32 || kv->elem_type == TS_GGUF_FLOAT64;
    bool is_int = kv->elem_type <= TS_GGUF_INT32 || kv->elem_type == TS_GGUF_UINT64 ||
                  kv->elem_type == TS_GGUF_INT64;
    if (kv->type != TS_GGUF_ARRAY || (floats ? !is_float : !is_int))
        return bad_key(g, key, "expected an array of %s, found %s%s", floats ? "float32" : "int32",
                       kv->type == TS_GGUF_ARRAY ? "array of " : "",
                       ts_gguf_type_name(kv->type == TS_GGUF_ARRAY ? kv->elem_type : kv->type));
    if (kv->n_elems != (uint64_t)n_vocab)
        return bad_key(g, key, "%" PRIu64 " entries for %" PRId32 " tokens", kv->n_elems, n_vocab);
    return TS_OK;
}

/* A special token id: *id keeps its default when the key is absent. */
static int special_id(const ts_gguf *g, const char *key, int32_t n_vocab, int32_t *id) {
    if (!ts_gguf_find_kv(g, key)) {
        if (*id >= n_vocab) *id = -1; /* a default that this (tiny) vocabulary lacks */
        return TS_OK;
    }
    int64_t v;
    int rc = ts_gguf_get_i64(g, key, &v);
    if (rc) return rc;
    if (v == -1 || v == (int64_t)UINT32_MAX) {
        *id = -1;
        return TS_OK;
    }
    if (v < 0 || v >= n_vocab)
        return bad_key(g, key,
                       "token id %" PRId64 " is outside the vocabulary of %" PRId32 " tokens", v,
                       n_vocab);
    *id = (int32_t)v;
    return TS_OK;
}

static int optional_bool(const ts_gguf *g, const char *key, bool *value) {
    if (!ts_gguf_find_kv(g, key)) return TS_OK;
    return ts_gguf_get_bool(g, key, value);
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* The byte of a "<0xXX>" token, or -1. */
static int byte_token_value(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int hi = hex_digit(s[3]), lo = hex_digit(s[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

/* Copies the token texts, scores and types; fills ids_by_text. */
static int load_tokens(ts_tokenizer *t, const ts_gguf *g) {
    const char *tokens_key = "tokenizer.ggml.tokens";
    const ts_gguf_kv *tokens, *scores, *types;
    int rc = required_array(g, tokens_key, TS_GGUF_STRING, &tokens);
    if (rc) return rc;
    if (tokens->n_elems == 0) return bad_key(g, tokens_key, "the vocabulary is empty");
    if (tokens->n_elems > INT32_MAX)
        return bad_key(g, tokens_key, "%" PRIu64 " tokens, too many", tokens->n_elems);
    int32_t n = t->n_vocab = (int32_t)tokens->n_elems;
    rc = per_token_array(g, "tokenizer.ggml.scores", true, n, &scores);
    if (!rc) rc = per_token_array(g, "tokenizer.ggml.token_type", false, n, &types);
    if (rc) return rc;

    size_t total = 0;
    for (int32_t i = 0; i < n; i++) {
        if (tokens->strs[i].len > UINT32_MAX)
            return bad_key(g, tokens_key, "token %" PRId32 " is %" PRIu64 " bytes long", i,
                           tokens->strs[i].len);
        total += tokens->strs[i].len + 1;
    }
    t->texts = malloc(total);
    t->pieces = malloc(total); /* a piece is never longer than its text */
    t->text_off = malloc(n * sizeof *t->text_off);
    t->text_len = malloc(n * sizeof *t->text_len);
    t->piece_off = malloc(n * sizeof *t->piece_off);
    t->piece_len = malloc(n * sizeof *t->piece_len);
    t->scores = malloc(n * sizeof *t->scores);
    t->types = malloc(n);
    if (!t->texts || !t->pieces || !t->text_off || !t->text_len || !t->piece_off || !t->piece_len ||
        !t->scores || !t->types)
        return ts_error_set(TS_E_NOMEM, "out of memory for a vocabulary of %" PRId32 " tokens", n);
    size_t off = 0;
    for (int32_t i = 0; i < n && !rc; i++) {
        ts_gguf_str s = tokens->strs[i];
        memcpy(t->texts + off, s.data, s.len);
        t->texts[off + s.len] = '\0';
        t->text_off[i] = off;
        t->text_len[i] = (uint32_t)s.len;
        off += s.len + 1;
        float score = scores ? ts_gguf_array_f32(scores, (uint64_t)i) : 0.0f;
        t->scores[i] = isnan(score) ? -INFINITY : score; /* NaN would break the merge order */
        int64_t type = types ? ts_gguf_array_i64(types, (uint64_t)i) : TS_TOKEN_NORMAL;
        if (type < TS_TOKEN_UNDEFINED || type > TS_TOKEN_BYTE)
            return bad_key(g, "tokenizer.ggml.token_type",
                           "token %" PRId32 " ('%.40s') has type %" PRId64 ", expected 0..6", i,
                           t->texts + t->text_off[i], type);
        t->types[i] = (uint8_t)type;
        /* Empty texts are never looked up (llama.cpp renames them). */
        if (s.len) rc = ts_strtab_put(&t->ids_by_text, s.data, s.len, i);
    }
    return rc;
}

/* What ts_tokenizer_piece returns for token i (see tokenizer.h), written to dst; its length. */
static size_t make_piece(const ts_tokenizer *t, int32_t i, char *dst) {
    const char *s = t->texts + t->text_off[i];
    size_t n = t->text_len[i], len = 0;
    switch (t->types[i]) {
    case TS_TOKEN_USER_DEFINED: memcpy(dst, s, n); return n;
    case TS_TOKEN_BYTE:
        if (t->kind != TS_TOKENIZER_SPM) return 0; /* llama.cpp shows them only for SPM */
        dst[0] = (char)byte_token_value(s, n);
        return 1;
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

static int load_pieces(ts_tokenizer *t, const ts_gguf *g) {
    size_t off = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        if (t->kind == TS_TOKENIZER_SPM && t->types[i] == TS_TOKEN_BYTE &&
            byte_token_value(t->texts + t->text_off[i], t->text_len[i]) < 0)
            return bad_key(g, "tokenizer.ggml.tokens",
                           "token %" PRId32 " ('%.40s') has type byte but is not <0xXX>", i,
                           t->texts + t->text_off[i]);
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
    return TS_OK;
}

/* Texts that llama.cpp treats as end of generation wherever they are in a vocabulary (many
 * files do not set eot_token_id); it also makes them control tokens. */
static const char *const EOG_TEXTS[] = {
    "<|eot_id|>",    "<|im_end|>", "<|end|>", "<end_of_turn>",
    "<|endoftext|>", "<|eom_id|>", "<EOT>",   "<|end_of_text|>",
};

static int add_eog(ts_tokenizer *t, int32_t id) {
    if (id < 0) return TS_OK;
    for (size_t i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return TS_OK;
    int rc = ts_grow(&t->eog, &t->eog_cap, t->n_eog + 1, sizeof *t->eog);
    if (!rc) t->eog[t->n_eog++] = id;
    return rc;
}

static int load_specials(ts_tokenizer *t, const ts_gguf *g) {
    bool spm = t->kind == TS_TOKENIZER_SPM;
    t->bos = spm ? 1 : -1;
    t->eos = spm ? 2 : -1;
    t->unk = spm ? 0 : -1;
    t->eot = t->eom = -1;
    int rc = special_id(g, "tokenizer.ggml.bos_token_id", t->n_vocab, &t->bos);
    if (!rc) rc = special_id(g, "tokenizer.ggml.eos_token_id", t->n_vocab, &t->eos);
    if (!rc) rc = special_id(g, "tokenizer.ggml.unknown_token_id", t->n_vocab, &t->unk);
    if (!rc) rc = special_id(g, "tokenizer.ggml.eot_token_id", t->n_vocab, &t->eot);
    if (!rc) rc = special_id(g, "tokenizer.ggml.eom_token_id", t->n_vocab, &t->eom);
    if (!rc) rc = optional_bool(g, "tokenizer.ggml.add_bos_token", &t->add_bos);
    if (!rc) rc = optional_bool(g, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix);
    if (!rc) rc = add_eog(t, t->eos);
    if (!rc) rc = add_eog(t, t->eot);
    if (!rc) rc = add_eog(t, t->eom);
    for (size_t i = 0; i < sizeof EOG_TEXTS / sizeof EOG_TEXTS[0] && !rc; i++) {
        int32_t id = ts_strtab_find(&t->ids_by_text, EOG_TEXTS[i], strlen(EOG_TEXTS[i]));
        if (id < 0) continue;
        t->types[id] = TS_TOKEN_CONTROL;
        rc = add_eog(t, id);
    }
    return rc;
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

/* User-defined tokens are matched in the text before splitting, longest first (llama.cpp's
 * order; it skips control tokens there unless asked to parse specials, and so do we). */
static int load_user_defined(ts_tokenizer *t) {
    size_t n = 0;
    for (int32_t i = 0; i < t->n_vocab; i++)
        n += t->types[i] == TS_TOKEN_USER_DEFINED && t->text_len[i] > 0;
    if (!n) return TS_OK;
    sized_id *sorted = malloc(n * sizeof *sorted);
    t->user_defined = malloc(n * sizeof *t->user_defined);
    if (!sorted || !t->user_defined) {
        free(sorted);
        return ts_error_set(TS_E_NOMEM, "out of memory");
    }
    for (int32_t i = 0, k = 0; i < t->n_vocab; i++)
        if (t->types[i] == TS_TOKEN_USER_DEFINED && t->text_len[i] > 0)
            sorted[k++] = (sized_id){t->text_len[i], i};
    qsort(sorted, n, sizeof *sorted, longer_first);
    for (size_t i = 0; i < n; i++)
        t->user_defined[i] = sorted[i].id;
    t->n_user_defined = n;
    free(sorted);
    return TS_OK;
}

/* Pre-tokenizer of a gpt2 vocabulary from `tokenizer.ggml.pre`. */
static int load_pretok(ts_tokenizer *t, const ts_gguf *g) {
    const char *key = "tokenizer.ggml.pre";
    ts_gguf_str pre = {"", 0};
    if (ts_gguf_find_kv(g, key)) {
        int rc = ts_gguf_get_str(g, key, &pre);
        if (rc) return rc;
    }
    static const struct {
        const char *name;
        ts_pretok_kind kind;
    } known[] = {
        {"gpt-2", TS_PRETOK_GPT2},      {"llama3", TS_PRETOK_LLAMA3},
        {"llama-v3", TS_PRETOK_LLAMA3}, {"llama-bpe", TS_PRETOK_LLAMA3},
        {"qwen2", TS_PRETOK_QWEN2},     {"deepseek-r1-qwen", TS_PRETOK_QWEN2},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        if (!ts_gguf_str_eq(pre, known[i].name)) continue;
        t->bpe.pretok = known[i].kind;
        if (known[i].kind == TS_PRETOK_LLAMA3) {
            t->bpe.ignore_merges = true;
            t->add_bos = true; /* the file's add_bos_token, read later, still wins */
        }
        return TS_OK;
    }
    if (pre.len == 0 || ts_gguf_str_eq(pre, "default")) {
        /* Older conversions carry no pre-tokenizer name. llama.cpp then splits digits and some
         * punctuation apart before the GPT-2 regex; we use the GPT-2 regex alone. */
        TS_WARN("%s: %s '%.*s': using the GPT-2 pre-tokenizer; ids of texts with digits or "
                "punctuation may differ from llama.cpp's",
                ts_gguf_path(g), key, (int)pre.len, pre.data);
        t->bpe.pretok = TS_PRETOK_GPT2;
        return TS_OK;
    }
    return ts_error_set(TS_E_UNSUPPORTED,
                        "%s: key '%s': pre-tokenizer '%.*s' is not supported (supported: gpt-2, "
                        "llama-bpe / llama3 / llama-v3, qwen2 / deepseek-r1-qwen)",
                        ts_gguf_path(g), key, (int)(pre.len > 60 ? 60 : pre.len), pre.data);
}

int ts_tokenizer_from_gguf(const ts_gguf *g, ts_tokenizer **out) {
    *out = NULL;
    const char *model_key = "tokenizer.ggml.model";
    ts_gguf_str model;
    int rc = ts_gguf_get_str(g, model_key, &model);
    if (rc == TS_E_NOT_FOUND)
        return ts_error_set(TS_E_NOT_FOUND, "%s: no tokenizer in the file (missing key '%s')",
                            ts_gguf_path(g), model_key);
    if (rc) return rc;
    ts_tokenizer_kind kind;
    if (ts_gguf_str_eq(model, "llama"))
        kind = TS_TOKENIZER_SPM;
    else if (ts_gguf_str_eq(model, "gpt2"))
        kind = TS_TOKENIZER_BPE;
    else
        return ts_error_set(TS_E_UNSUPPORTED,
                            "%s: key '%s': tokenizer '%.*s' is not supported (supported: llama, "
                            "gpt2)",
                            ts_gguf_path(g), model_key, (int)(model.len > 60 ? 60 : model.len),
                            model.data);
    ts_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return ts_error_set(TS_E_NOMEM, "out of memory");
    t->kind = kind;
    t->add_bos = kind == TS_TOKENIZER_SPM;
    t->add_space_prefix = kind == TS_TOKENIZER_SPM;
    rc = load_tokens(t, g);
    if (!rc && kind == TS_TOKENIZER_BPE) rc = load_pretok(t, g);
    if (!rc) rc = load_specials(t, g);
    if (!rc) rc = load_pieces(t, g);
    if (!rc) rc = load_user_defined(t);
    if (!rc && kind == TS_TOKENIZER_BPE) rc = ts_bpe_load(t, g);
    if (rc) {
        ts_tokenizer_destroy(t);
        return rc;
    }
    *out = t;
    return TS_OK;
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
    free(t->user_defined);
    ts_bpe_free(&t->bpe);
    free(t);
}
