/*
 * vocab_gguf.c — reading a ts_tokenizer from GGUF metadata: every key the tokenizers use, checked,
 * then handed to vocab.c, which finishes the vocabulary.
 *
 * Defaults follow llama.cpp's for the same file, so that a file gives the same ids here and there:
 * SentencePiece ("llama") vocabularies default to BOS 1, EOS 2, UNK 0, add BOS, add the dummy
 * prefix; byte-level BPE ("gpt2") ones have no default special ids (llama.cpp's placeholder 11
 * would make ',' of a GPT-2 vocabulary end generation) and add BOS as their pre-tokenizer says
 * (PRE_NAMES below). Keys present in the file override the defaults. A special id of -1 (or
 * 0xFFFFFFFF, how converters write "none") means none; any other id outside the vocabulary is
 * TS_E_FORMAT.
 */
#include "common/error.h"
#include "common/log.h"
#include "tokenizer/tokenizer_impl.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
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

/* Copies the token texts, scores and types. */
static int load_tokens(ts_tokenizer *t, const ts_gguf *g) {
    const char *tokens_key = "tokenizer.ggml.tokens";
    const ts_gguf_kv *tokens, *scores, *types;
    int rc = required_array(g, tokens_key, TS_GGUF_STRING, &tokens);
    if (rc) return rc;
    if (tokens->n_elems == 0) return bad_key(g, tokens_key, "the vocabulary is empty");
    if (tokens->n_elems > INT32_MAX)
        return bad_key(g, tokens_key, "%" PRIu64 " tokens, too many", tokens->n_elems);
    int32_t n = (int32_t)tokens->n_elems;
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
    rc = ts_vocab_alloc(t, n, total);
    for (int32_t i = 0; i < n && !rc; i++) {
        ts_gguf_str s = tokens->strs[i];
        float score = scores ? ts_gguf_array_f32(scores, (uint64_t)i) : 0.0f;
        int64_t type = types ? ts_gguf_array_i64(types, (uint64_t)i) : TS_TOKEN_NORMAL;
        if (type < TS_TOKEN_UNDEFINED || type > TS_TOKEN_BYTE)
            return bad_key(g, "tokenizer.ggml.token_type",
                           "token %" PRId32 " ('%.*s') has type %" PRId64 ", expected 0..6", i,
                           (int)(s.len > 40 ? 40 : s.len), s.data, type);
        if (t->kind == TS_TOKENIZER_SPM && type == TS_TOKEN_BYTE &&
            ts_vocab_byte_token_value(s.data, (size_t)s.len) < 0)
            return bad_key(g, tokens_key,
                           "token %" PRId32 " ('%.*s') has type byte but is not <0xXX>", i,
                           (int)(s.len > 40 ? 40 : s.len), s.data);
        rc = ts_vocab_set(t, i, s.data, (size_t)s.len, isnan(score) ? -INFINITY : score,
                          (uint8_t)type); /* NaN would break the merge order */
    }
    return rc;
}

static int load_specials(ts_tokenizer *t, const ts_gguf *g) {
    bool spm = t->kind == TS_TOKENIZER_SPM;
    t->bos = spm ? 1 : -1;
    t->eos = spm ? 2 : -1;
    t->unk = spm ? 0 : -1;
    static const struct {
        const char *key;
        size_t field;
    } keys[] = {
        {"bos_token_id", offsetof(ts_tokenizer, bos)},
        {"eos_token_id", offsetof(ts_tokenizer, eos)},
        {"unknown_token_id", offsetof(ts_tokenizer, unk)},
        {"eot_token_id", offsetof(ts_tokenizer, eot)},
        {"eom_token_id", offsetof(ts_tokenizer, eom)},
        {"fim_pre_token_id", offsetof(ts_tokenizer, fim_pre)},
        {"fim_suf_token_id", offsetof(ts_tokenizer, fim_suf)},
        {"fim_mid_token_id", offsetof(ts_tokenizer, fim_mid)},
        {"fim_pad_token_id", offsetof(ts_tokenizer, fim_pad)},
        {"fim_rep_token_id", offsetof(ts_tokenizer, fim_rep)},
        {"fim_sep_token_id", offsetof(ts_tokenizer, fim_sep)},
        /* older names of the first three FIM keys; they win when both are there, as in llama.cpp */
        {"prefix_token_id", offsetof(ts_tokenizer, fim_pre)},
        {"suffix_token_id", offsetof(ts_tokenizer, fim_suf)},
        {"middle_token_id", offsetof(ts_tokenizer, fim_mid)},
    };
    int rc = TS_OK;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0] && !rc; i++) {
        char key[64];
        snprintf(key, sizeof key, "tokenizer.ggml.%s", keys[i].key);
        rc = special_id(g, key, t->n_vocab, (int32_t *)((char *)t + keys[i].field));
    }
    if (!rc) rc = optional_bool(g, "tokenizer.ggml.add_bos_token", &t->add_bos);
    if (!rc) rc = optional_bool(g, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix);
    bool add_eos = false;
    if (!rc) rc = optional_bool(g, "tokenizer.ggml.add_eos_token", &add_eos);
    if (!rc && add_eos)
        rc = ts_error_set(TS_E_UNSUPPORTED,
                          "%s: key 'tokenizer.ggml.add_eos_token': appending EOS to every text is "
                          "not supported",
                          ts_gguf_path(g));
    return rc;
}

/* The `tokenizer.ggml.pre` values llama.cpp knows whose splitting is implemented here (its
 * llama_vocab::impl::load), with the flags that change ids: `ignore_merges` (a word that is a
 * token as a whole is not merged) and `add_bos`. Embedding-model names that llama.cpp gives
 * per-token strip rules are left out. */
static const struct pre_name {
    const char *name;
    ts_pretok_kind kind;
    bool ignore_merges, add_bos;
} PRE_NAMES[] = {
    {"default", TS_PRETOK_DEFAULT, false, false},
    {"gpt-2", TS_PRETOK_GPT2, false, false},
    {"phi-2", TS_PRETOK_GPT2, false, false},
    {"gigachat", TS_PRETOK_GPT2, false, false},
    {"a.x-4.0", TS_PRETOK_GPT2, false, false},
    {"mellum", TS_PRETOK_GPT2, false, false},
    {"exaone4", TS_PRETOK_GPT2, false, false},
    {"mpt", TS_PRETOK_GPT2, false, false},
    {"olmo", TS_PRETOK_GPT2, false, false},
    {"jais", TS_PRETOK_GPT2, false, false},
    {"trillion", TS_PRETOK_GPT2, false, false},
    {"granite-docling", TS_PRETOK_GPT2, false, false},
    {"llama3", TS_PRETOK_LLAMA3, true, true},
    {"llama-v3", TS_PRETOK_LLAMA3, true, true},
    {"llama-bpe", TS_PRETOK_LLAMA3, true, true},
    {"falcon3", TS_PRETOK_LLAMA3, true, true},
    {"falcon-h1", TS_PRETOK_LLAMA3, true, true},
    {"pixtral", TS_PRETOK_LLAMA3, true, true},
    {"midm-2.0", TS_PRETOK_LLAMA3, true, true},
    {"lfm2", TS_PRETOK_LLAMA3, true, true},
    {"dbrx", TS_PRETOK_LLAMA3, false, false},
    {"smaug-bpe", TS_PRETOK_LLAMA3, false, false},
    {"qwen2", TS_PRETOK_QWEN2, false, false},
    {"deepseek-r1-qwen", TS_PRETOK_QWEN2, false, false},
    {"kormo", TS_PRETOK_QWEN2, false, false},
    {"f2llmv2", TS_PRETOK_QWEN2, false, false},
    {"megrez", TS_PRETOK_QWEN2, false, false},
    {"stablelm2", TS_PRETOK_QWEN2, false, false},
    {"hunyuan", TS_PRETOK_QWEN2, false, false},
    {"solar-open", TS_PRETOK_QWEN2, false, false},
    {"grok-2", TS_PRETOK_QWEN2, false, false},
    {"smollm", TS_PRETOK_SMOLLM, false, false},
    {"starcoder", TS_PRETOK_SMOLLM, false, false},
    {"refact", TS_PRETOK_SMOLLM, false, false},
    {"command-r", TS_PRETOK_SMOLLM, false, false},
    {"codeshell", TS_PRETOK_SMOLLM, false, false},
    {"exaone", TS_PRETOK_SMOLLM, false, false},
    {"minerva-7b", TS_PRETOK_SMOLLM, false, false},
    {"mellum2", TS_PRETOK_SMOLLM, false, false},
};

/* Pre-tokenizer of a gpt2 vocabulary from `tokenizer.ggml.pre`. */
static int load_pretok(ts_tokenizer *t, const ts_gguf *g) {
    const char *key = "tokenizer.ggml.pre";
    ts_gguf_str pre = {"", 0};
    if (ts_gguf_find_kv(g, key)) {
        int rc = ts_gguf_get_str(g, key, &pre);
        if (rc) return rc;
    }
    if (pre.len == 0) {
        /* Older conversions name none; llama.cpp then uses its default chain too. */
        TS_WARN("%s: no '%s' in the file: using llama.cpp's default pre-tokenizer (the model's "
                "own tokenizer may split some texts differently)",
                ts_gguf_path(g), key);
        pre = (ts_gguf_str){"default", 7};
    }
    for (size_t i = 0; i < sizeof PRE_NAMES / sizeof PRE_NAMES[0]; i++) {
        if (!ts_gguf_str_eq(pre, PRE_NAMES[i].name)) continue;
        t->bpe.pretok = PRE_NAMES[i].kind;
        t->bpe.ignore_merges = PRE_NAMES[i].ignore_merges;
        if (PRE_NAMES[i].add_bos)
            t->add_bos = true; /* the file's add_bos_token, read later, wins */
        return TS_OK;
    }
    char names[1024];
    size_t used = 0;
    for (size_t i = 0; i < sizeof PRE_NAMES / sizeof PRE_NAMES[0] && used < sizeof names; i++)
        used += (size_t)snprintf(names + used, sizeof names - used, "%s%s", i ? ", " : "",
                                 PRE_NAMES[i].name);
    return ts_error_set(TS_E_UNSUPPORTED,
                        "%s: key '%s': pre-tokenizer '%.*s' is not supported (supported: %s)",
                        ts_gguf_path(g), key, (int)(pre.len > 60 ? 60 : pre.len), pre.data, names);
}

static int load_chat_template(ts_tokenizer *t, const ts_gguf *g) {
    const char *key = "tokenizer.chat_template";
    if (!ts_gguf_find_kv(g, key)) return TS_OK;
    ts_gguf_str s;
    int rc = ts_gguf_get_str(g, key, &s);
    if (rc) return rc;
    t->chat_template = malloc((size_t)s.len + 1);
    if (!t->chat_template) return ts_error_set(TS_E_NOMEM, "out of memory");
    memcpy(t->chat_template, s.data, (size_t)s.len);
    t->chat_template[s.len] = '\0';
    return TS_OK;
}

/* GGUF merges are "LEFT RIGHT": the first space after the first byte separates the halves (so a
 * left half may itself start with a space, as llama.cpp reads it). A line without one gives an
 * empty right half, which ts_bpe_load refuses. */
static void gguf_merge(const void *ctx, size_t i, const char **left, size_t *n_left,
                       const char **right, size_t *n_right) {
    ts_gguf_str line = ((const ts_gguf_kv *)ctx)->strs[i];
    const char *sep = line.len > 1 ? memchr(line.data + 1, ' ', (size_t)line.len - 1) : NULL;
    *left = line.data;
    *n_left = sep ? (size_t)(sep - line.data) : (size_t)line.len;
    *right = sep ? sep + 1 : line.data + line.len;
    *n_right = (size_t)line.len - *n_left - (sep != NULL);
}

static int load_merges(ts_tokenizer *t, const ts_gguf *g) {
    const char *key = "tokenizer.ggml.merges";
    const ts_gguf_kv *kv;
    int rc = ts_gguf_get_array(g, key, TS_GGUF_STRING, &kv);
    if (rc == TS_E_NOT_FOUND)
        return ts_error_set(TS_E_FORMAT, "%s: missing key '%s' (a gpt2 tokenizer needs its merges)",
                            ts_gguf_path(g), key);
    if (rc) return rc;
    if (kv->n_elems > INT32_MAX)
        return ts_error_set(TS_E_FORMAT, "%s: key '%s': %" PRIu64 " merges, too many",
                            ts_gguf_path(g), key, kv->n_elems);
    char source[512];
    snprintf(source, sizeof source, "%s: key '%s'", ts_gguf_path(g), key);
    ts_merge_list merges = {(size_t)kv->n_elems, gguf_merge, kv, source};
    return ts_bpe_load(t, &merges);
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
    if (!rc) rc = load_chat_template(t, g);
    if (!rc) rc = ts_vocab_finish(t, ts_gguf_path(g), true);
    if (!rc && kind == TS_TOKENIZER_BPE) rc = load_merges(t, g);
    if (rc) {
        ts_tokenizer_destroy(t);
        return rc;
    }
    *out = t;
    return TS_OK;
}
