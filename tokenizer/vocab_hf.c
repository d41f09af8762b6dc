/*
 * vocab_hf.c — reading a ts_tokenizer from a Hugging Face fast tokenizer directory:
 * tokenizer.json, with tokenizer_config.json (special tokens, add_bos_token, chat template),
 * config.json (vocabulary size, special ids) and chat_template.jinja where present.
 *
 * Two layouts of a BPE model are read (anything else is TS_E_UNSUPPORTED, naming what):
 *   byte-level  ByteLevel pre-tokenizer and decoder (GPT-2, SmolLM2, Qwen 2, Llama 3): the
 *               pre-tokenizer must be one tokenizer/pretok.h implements: ByteLevel with its
 *               regex; Digits(individual) then ByteLevel; Split(Llama 3's or Qwen 2's regex,
 *               isolated) then ByteLevel without regex. Normalizer none or NFC.
 *   SentencePiece-style  (Llama 2, Mistral, TinyLlama): spaces written U+2581 by a
 *               Prepend("▁") + Replace(" ", "▁") normalizer or a Metaspace pre-tokenizer,
 *               merged by rank over UTF-8 characters, byte fallback to <0xXX> tokens.
 *
 * The token types are the file's, so that the ids are the `tokenizers` package's: vocabulary
 * tokens are normal (SentencePiece-style <0xXX> ones byte tokens, the model's unk token unknown),
 * special added tokens control (parsed only with parse_special, as the package's
 * encode_special_tokens), the other added tokens user-defined (always parsed). llama.cpp's
 * converter also makes non-special added tokens that look special (<|fim_prefix|> in Qwen 2.5)
 * control tokens, and llama.cpp makes more by their text; vocab.c finds the special ids and the
 * end-of-generation set alike for both. A config.json vocab_size beyond the tokenizer's tokens
 * pads the vocabulary with unused "[PAD<id>]" tokens, as the converter does (Qwen 2's embedding
 * has 151936 rows for 151665 tokens). Added tokens are matched in the raw text (their `normalized`
 * flag is not applied); lstrip, rstrip and single_word are refused.
 */
#include "common/buf.h"
#include "common/error.h"
#include "common/json.h"
#include "model/hf.h"
#include "tokenizer/tokenizer_impl.h"

#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { MAX_TOKENS = 1 << 24 };

static const char LLAMA3_REGEX[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char QWEN2_REGEX[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char SPACE_MARK[] = "\xE2\x96\x81"; /* U+2581 */

typedef struct hf {
    char path[4096]; /* DIR/tokenizer.json, for messages */
    char config_path[4096];
    ts_json_doc *doc, *config_doc, *model_config_doc;
    const ts_json *root, *model, *config, *model_config; /* the last two may be NULL */
} hf;

/* "DIR/tokenizer.json: <what>" as `code`. */
static int fail(const hf *h, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(const hf *h, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = ts_error_setv(code, fmt, ap);
    va_end(ap);
    return ts_error_wrap(rc, "%s", h->path);
}

/* Reads and parses DIR/NAME. An absent file is TS_E_NOT_FOUND (and *doc NULL). */
static int read_json(const char *dir, const char *name, char *path, size_t cap, ts_json_doc **doc) {
    *doc = NULL;
    snprintf(path, cap, "%s/%s", dir, name);
    struct stat st;
    if (stat(path, &st) != 0 && errno == ENOENT)
        return ts_error_set(TS_E_NOT_FOUND, "%s: no such file", path);
    ts_buf text = {0};
    int rc = ts_buf_read_file(&text, path);
    if (!rc) rc = ts_json_parse(text.data ? text.data : "", text.len, doc);
    ts_buf_free(&text);
    return rc ? ts_error_wrap(rc, "%s", path) : TS_OK;
}

static bool is_type(const ts_json *v, const char *type) {
    const ts_json *t = ts_json_get(v, "type");
    return t && t->type == TS_JSON_STRING && !strcmp(t->string, type);
}

static const char *type_of(const ts_json *v) {
    const ts_json *t = ts_json_get(v, "type");
    return t && t->type == TS_JSON_STRING ? t->string : "(no type)";
}

static bool is_null(const ts_json *v) {
    return !v || v->type == TS_JSON_NULL;
}

/* A boolean member, `dflt` when absent. */
static bool flag(const ts_json *obj, const char *key, bool dflt) {
    const ts_json *v = ts_json_get(obj, key);
    return v && v->type == TS_JSON_BOOL ? v->boolean : dflt;
}

static bool string_is(const ts_json *v, const char *s) {
    return v && v->type == TS_JSON_STRING && !strcmp(v->string, s);
}

/* {"String": s} or {"Regex": s} patterns of Replace and Split. */
static const char *pattern(const ts_json *v, const char *kind) {
    const ts_json *p = ts_json_get(ts_json_get(v, "pattern"), kind);
    return p && p->type == TS_JSON_STRING ? p->string : NULL;
}

/* Item i of a Sequence's list `key`, NULL past the end. */
static const ts_json *item(const ts_json *seq, const char *key, size_t i) {
    const ts_json *list = ts_json_get(seq, key);
    return list && list->type == TS_JSON_ARRAY && i < list->length ? &list->items[i] : NULL;
}

static size_t n_items(const ts_json *seq, const char *key) {
    const ts_json *list = ts_json_get(seq, key);
    return list && list->type == TS_JSON_ARRAY ? list->length : 0;
}

/* ---- the layout: normalizer, pre-tokenizer, decoder ---- */

typedef enum { NORM_NONE, NORM_NFC, NORM_SPM } normalizer;

static int read_normalizer(const hf *h, normalizer *out) {
    const ts_json *n = ts_json_get(h->root, "normalizer");
    if (is_null(n)) {
        *out = NORM_NONE;
        return TS_OK;
    }
    if (is_type(n, "NFC")) {
        *out = NORM_NFC;
        return TS_OK;
    }
    const ts_json *a = item(n, "normalizers", 0), *b = item(n, "normalizers", 1);
    if (is_type(n, "Sequence") && n_items(n, "normalizers") == 2 && is_type(a, "Prepend") &&
        string_is(ts_json_get(a, "prepend"), SPACE_MARK) && is_type(b, "Replace") &&
        pattern(b, "String") && !strcmp(pattern(b, "String"), " ") &&
        string_is(ts_json_get(b, "content"), SPACE_MARK)) {
        *out = NORM_SPM;
        return TS_OK;
    }
    return fail(
        h, TS_E_UNSUPPORTED,
        "normalizer %s is not supported (supported: none, NFC, and Prepend(\"\xE2\x96\x81\") + "
        "Replace(\" \", \"\xE2\x96\x81\"))",
        type_of(n));
}

typedef enum { PRE_NONE, PRE_BYTE_LEVEL, PRE_METASPACE } pre_family;

static bool byte_level_pre(const ts_json *v, bool use_regex) {
    return is_type(v, "ByteLevel") && !flag(v, "add_prefix_space", true) &&
           flag(v, "use_regex", true) == use_regex;
}

/* The pre-tokenizer: none, Metaspace, or one of the byte-level chains of pretok.h. */
static int read_pre_tokenizer(const hf *h, ts_tokenizer *t, pre_family *out) {
    const ts_json *p = ts_json_get(h->root, "pre_tokenizer");
    *out = PRE_BYTE_LEVEL;
    if (is_null(p)) {
        *out = PRE_NONE;
        return TS_OK;
    }
    if (byte_level_pre(p, true)) {
        t->bpe.pretok = TS_PRETOK_GPT2;
        return TS_OK;
    }
    if (is_type(p, "Metaspace")) {
        const ts_json *scheme = ts_json_get(p, "prepend_scheme");
        if (string_is(ts_json_get(p, "replacement"), SPACE_MARK) && !flag(p, "split", true) &&
            (string_is(scheme, "first") || string_is(scheme, "always") ||
             string_is(scheme, "never"))) {
            t->spm_prefix = string_is(scheme, "first")    ? TS_SPM_PREFIX_FIRST_UNLESS_SPACE
                            : string_is(scheme, "always") ? TS_SPM_PREFIX_UNLESS_SPACE
                                                          : TS_SPM_PREFIX_NONE;
            *out = PRE_METASPACE;
            return TS_OK;
        }
        return fail(h, TS_E_UNSUPPORTED,
                    "pre_tokenizer Metaspace is supported with replacement \"\xE2\x96\x81\", split "
                    "false and prepend_scheme first, always or never only");
    }
    const ts_json *a = item(p, "pretokenizers", 0), *b = item(p, "pretokenizers", 1);
    if (is_type(p, "Sequence") && n_items(p, "pretokenizers") == 2) {
        if (is_type(a, "Digits") && flag(a, "individual_digits", false) &&
            byte_level_pre(b, true)) {
            t->bpe.pretok = TS_PRETOK_SMOLLM;
            return TS_OK;
        }
        const char *regex = pattern(a, "Regex");
        if (is_type(a, "Split") && regex && string_is(ts_json_get(a, "behavior"), "Isolated") &&
            !flag(a, "invert", false) && byte_level_pre(b, false)) {
            if (!strcmp(regex, LLAMA3_REGEX)) t->bpe.pretok = TS_PRETOK_LLAMA3;
            if (!strcmp(regex, QWEN2_REGEX)) t->bpe.pretok = TS_PRETOK_QWEN2;
            if (t->bpe.pretok) return TS_OK;
            return fail(h, TS_E_UNSUPPORTED,
                        "pre_tokenizer: Split with regex '%.200s' is not supported (supported: "
                        "the regexes of Llama 3 and Qwen 2)",
                        regex);
        }
    }
    char what[256];
    if (is_type(p, "Sequence")) {
        size_t used = (size_t)snprintf(what, sizeof what, "Sequence[");
        for (size_t i = 0; i < n_items(p, "pretokenizers") && used < sizeof what; i++)
            used += (size_t)snprintf(what + used, sizeof what - used, "%s%s", i ? ", " : "",
                                     type_of(item(p, "pretokenizers", i)));
        if (used < sizeof what) snprintf(what + used, sizeof what - used, "]");
    } else {
        snprintf(what, sizeof what, "%s", type_of(p));
    }
    return fail(h, TS_E_UNSUPPORTED,
                "pre_tokenizer %s is not supported (supported: ByteLevel; Sequence[Digits, "
                "ByteLevel]; Sequence[Split(Llama 3 or Qwen 2 regex), ByteLevel]; Metaspace; none)",
                what);
}

/* The decoder must undo what the layout does: ByteLevel, or SentencePiece's ▁ and bytes. */
static int check_decoder(const hf *h, bool byte_level) {
    const ts_json *d = ts_json_get(h->root, "decoder");
    if (byte_level && is_type(d, "ByteLevel")) return TS_OK;
    if (!byte_level && is_type(d, "Metaspace")) return TS_OK;
    const ts_json *a = item(d, "decoders", 0);
    if (!byte_level && is_type(d, "Sequence") && is_type(a, "Replace") && pattern(a, "String") &&
        !strcmp(pattern(a, "String"), SPACE_MARK) && string_is(ts_json_get(a, "content"), " ")) {
        bool ok = true;
        for (size_t i = 1; ok && i < n_items(d, "decoders"); i++) {
            const ts_json *x = item(d, "decoders", i);
            ok = is_type(x, "ByteFallback") || is_type(x, "Fuse") || is_type(x, "Strip");
        }
        if (ok) return TS_OK;
    }
    return fail(h, TS_E_UNSUPPORTED, "decoder %s does not match the %s layout of the tokenizer",
                is_null(d) ? "null" : type_of(d),
                byte_level ? "byte-level (expected ByteLevel)"
                           : "SentencePiece-style (expected Replace(\"\xE2\x96\x81\", \" \"), "
                             "ByteFallback, Fuse, Strip or Metaspace)");
}

/* ---- the tokens ---- */

typedef struct entry {
    const char *text;
    size_t len;
    uint8_t type;
} entry;

/* Puts (text, id) into the entries; the same id twice must be the same text. */
static int place(const hf *h, entry *e, int64_t id, const char *text, size_t len, uint8_t type,
                 const char *where) {
    if (e[id].text && (e[id].len != len || memcmp(e[id].text, text, len)))
        return fail(h, TS_E_FORMAT, "%s: id %" PRId64 " is both '%.*s' and '%.*s'", where, id,
                    (int)(e[id].len > 40 ? 40 : e[id].len), e[id].text, (int)(len > 40 ? 40 : len),
                    text);
    e[id] = (entry){text, len, type};
    return TS_OK;
}

static int64_t member_id(const ts_json *v) {
    return v->type == TS_JSON_NUMBER && v->is_integer ? v->integer : -1;
}

/* The number of tokens: the largest id + 1, or config.json's vocab_size if larger. */
static int count_tokens(const hf *h, const ts_json *vocab, const ts_json *added, int64_t *n) {
    int64_t top = -1;
    for (size_t i = 0; i < vocab->length; i++) {
        int64_t id = member_id(&vocab->members[i].value);
        if (id < 0 || id >= MAX_TOKENS)
            return fail(h, TS_E_FORMAT, "model.vocab: token '%.40s' has id %s",
                        vocab->members[i].key,
                        id < 0 ? "that is no non-negative integer" : "beyond 2^24");
        if (id > top) top = id;
    }
    for (size_t i = 0; added && i < added->length; i++) {
        const ts_json *id = ts_json_get(&added->items[i], "id");
        int64_t v = id ? member_id(id) : -1;
        if (v < 0 || v >= MAX_TOKENS)
            return fail(h, TS_E_FORMAT, "added_tokens[%zu]: no valid \"id\"", i);
        if (v > top) top = v;
    }
    *n = top + 1;
    const ts_json *size = ts_json_get(h->model_config, "vocab_size");
    if (size && size->type == TS_JSON_NUMBER && size->is_integer && size->integer > *n &&
        size->integer < MAX_TOKENS)
        *n = size->integer;
    if (*n == 0) return fail(h, TS_E_FORMAT, "model.vocab: the vocabulary is empty");
    return TS_OK;
}

static int read_tokens(const hf *h, ts_tokenizer *t, bool spm, const char **unk_text) {
    const ts_json *vocab = ts_json_get(h->model, "vocab");
    const ts_json *added = ts_json_get(h->root, "added_tokens");
    if (!vocab || vocab->type != TS_JSON_OBJECT)
        return fail(h, TS_E_FORMAT, "model.vocab: missing or not an object");
    if (added && added->type != TS_JSON_ARRAY) added = NULL;
    int64_t n;
    int rc = count_tokens(h, vocab, added, &n);
    if (rc) return rc;
    entry *e = calloc((size_t)n, sizeof *e);
    char *pads = NULL;
    if (!e) return ts_error_set(TS_E_NOMEM, "out of memory for %" PRId64 " tokens", n);
    const ts_json *unk = ts_json_get(h->model, "unk_token");
    *unk_text = unk && unk->type == TS_JSON_STRING ? unk->string : NULL;
    for (size_t i = 0; i < vocab->length && !rc; i++) {
        const ts_json_member *m = &vocab->members[i];
        uint8_t type = TS_TOKEN_NORMAL;
        if (spm && ts_vocab_byte_token_value(m->key, m->key_length) >= 0) type = TS_TOKEN_BYTE;
        if (*unk_text && !strcmp(m->key, *unk_text)) type = TS_TOKEN_UNKNOWN;
        rc = place(h, e, member_id(&m->value), m->key, m->key_length, type, "model.vocab");
    }
    for (size_t i = 0; added && i < added->length && !rc; i++) {
        const ts_json *a = &added->items[i], *content = ts_json_get(a, "content");
        if (!content || content->type != TS_JSON_STRING || content->length == 0) {
            rc = fail(h, TS_E_FORMAT, "added_tokens[%zu]: no \"content\"", i);
            break;
        }
        static const char *const unsupported[] = {"lstrip", "rstrip", "single_word"};
        for (size_t k = 0; k < 3 && !rc; k++)
            if (flag(a, unsupported[k], false))
                rc = fail(h, TS_E_UNSUPPORTED, "added token '%.40s': %s is not supported",
                          content->string, unsupported[k]);
        uint8_t type = flag(a, "special", false) ? TS_TOKEN_CONTROL : TS_TOKEN_USER_DEFINED;
        if (*unk_text && !strcmp(content->string, *unk_text)) type = TS_TOKEN_UNKNOWN;
        if (!rc)
            rc = place(h, e, member_id(ts_json_get(a, "id")), content->string, content->length,
                       type, "added_tokens");
    }
    /* Ids past the tokenizer's (config.json's vocab_size): unused "[PAD<id>]" tokens. */
    int64_t first_pad = n;
    while (first_pad > 0 && !e[first_pad - 1].text)
        first_pad--;
    size_t total = 0;
    for (int64_t i = 0; i < n && !rc; i++) {
        if (i < first_pad && !e[i].text)
            rc = fail(h, TS_E_FORMAT, "no token has id %" PRId64 " (of %" PRId64 ")", i, first_pad);
        total += (i < first_pad ? e[i].len : 20) + 1;
    }
    if (!rc && first_pad < n && !(pads = malloc((size_t)(n - first_pad) * 20)))
        rc = ts_error_set(TS_E_NOMEM, "out of memory");
    for (int64_t i = first_pad; i < n && !rc; i++) {
        char *p = pads + (i - first_pad) * 20;
        e[i] = (entry){p, (size_t)snprintf(p, 20, "[PAD%" PRId64 "]", i), TS_TOKEN_UNUSED};
    }
    if (!rc) rc = ts_vocab_alloc(t, (int32_t)n, total);
    for (int64_t i = 0; i < n && !rc; i++)
        rc = ts_vocab_set(t, (int32_t)i, e[i].text, e[i].len, 0.0f, e[i].type);
    free(e);
    free(pads);
    return rc;
}

/* ---- merges ---- */

typedef struct merges_ctx {
    const ts_json *list;
} merges_ctx;

/* "LEFT RIGHT" (one space) or ["LEFT", "RIGHT"]; anything else gives empty halves. */
static void hf_merge(const void *ctx, size_t i, const char **left, size_t *n_left,
                     const char **right, size_t *n_right) {
    const ts_json *m = &((const merges_ctx *)ctx)->list->items[i];
    *left = *right = "";
    *n_left = *n_right = 0;
    if (m->type == TS_JSON_ARRAY && m->length == 2 && m->items[0].type == TS_JSON_STRING &&
        m->items[1].type == TS_JSON_STRING) {
        *left = m->items[0].string;
        *n_left = m->items[0].length;
        *right = m->items[1].string;
        *n_right = m->items[1].length;
    } else if (m->type == TS_JSON_STRING) {
        const char *sep = memchr(m->string, ' ', m->length);
        if (!sep || memchr(sep + 1, ' ', m->length - (size_t)(sep - m->string) - 1)) return;
        *left = m->string;
        *n_left = (size_t)(sep - m->string);
        *right = sep + 1;
        *n_right = m->length - *n_left - 1;
    }
}

/* Every merge's halves and result are tokens (the `tokenizers` package refuses others). */
static int check_merges(const hf *h, const ts_tokenizer *t, const ts_merge_list *merges) {
    ts_buf joined = {0};
    int rc = TS_OK;
    for (size_t i = 0; i < merges->n && !rc; i++) {
        const char *l, *r;
        size_t nl, nr;
        merges->merge(merges->ctx, i, &l, &nl, &r, &nr);
        if (!nl || !nr) break; /* ts_bpe_load names it */
        ts_buf_clear(&joined);
        rc = ts_buf_append(&joined, l, nl);
        if (!rc) rc = ts_buf_append(&joined, r, nr);
        if (rc) break;
        const char *missing = ts_strtab_find(&t->ids_by_text, l, nl) < 0   ? l
                              : ts_strtab_find(&t->ids_by_text, r, nr) < 0 ? r
                              : ts_strtab_find(&t->ids_by_text, joined.data, joined.len) < 0
                                  ? joined.data
                                  : NULL;
        size_t n_missing = missing == l ? nl : missing == r ? nr : joined.len;
        if (missing)
            rc = fail(h, TS_E_FORMAT, "model.merges[%zu]: '%.*s' is not in the vocabulary", i,
                      (int)(n_missing > 40 ? 40 : n_missing), missing);
    }
    ts_buf_free(&joined);
    return rc;
}

/* ---- special tokens, BOS, chat template ---- */

/* A token named in tokenizer_config.json: "text", {"content": "text"} or null / absent. */
static int config_token(const hf *h, const ts_tokenizer *t, const char *key, int32_t *id) {
    const ts_json *v = ts_json_get(h->config, key);
    if (v && v->type == TS_JSON_OBJECT) v = ts_json_get(v, "content");
    if (is_null(v)) return TS_OK;
    if (v->type != TS_JSON_STRING)
        return ts_error_set(TS_E_FORMAT, "%s: %s: a token text expected", h->config_path, key);
    *id = ts_strtab_find(&t->ids_by_text, v->string, v->length);
    if (*id < 0)
        return ts_error_set(TS_E_FORMAT, "%s: %s '%.40s' is not in the vocabulary", h->config_path,
                            key, v->string);
    return TS_OK;
}

/* config.json's bos_token_id / eos_token_id (an integer or a list: its first), if in range. */
static void model_config_id(const hf *h, const ts_tokenizer *t, const char *key, int32_t *id) {
    const ts_json *v = ts_json_get(h->model_config, key);
    if (v && v->type == TS_JSON_ARRAY) v = v->length ? &v->items[0] : NULL;
    if (*id < 0 && v && member_id(v) >= 0 && member_id(v) < t->n_vocab) *id = (int32_t)member_id(v);
}

/* BOS from a TemplateProcessing post-processor: "single" is [SpecialToken BOS, Sequence A] or
 * [Sequence A]; other post-processors but ByteLevel (offsets only) are refused. */
static int read_post_processor(const hf *h, ts_tokenizer *t, bool *template_bos) {
    const ts_json *p = ts_json_get(h->root, "post_processor");
    *template_bos = false;
    if (is_null(p) || is_type(p, "ByteLevel")) return TS_OK;
    const ts_json *single = ts_json_get(p, "single");
    if (is_type(p, "TemplateProcessing") && single && single->type == TS_JSON_ARRAY) {
        size_t n = single->length;
        const ts_json *first = n ? ts_json_get(&single->items[0], "SpecialToken") : NULL;
        const ts_json *last = n ? ts_json_get(&single->items[n - 1], "Sequence") : NULL;
        const ts_json *text = ts_json_get(first, "id");
        if (last && n == 1) return TS_OK;
        if (last && n == 2 && text && text->type == TS_JSON_STRING) {
            int32_t id = ts_strtab_find(&t->ids_by_text, text->string, text->length);
            if (id < 0)
                return fail(h, TS_E_FORMAT,
                            "post_processor: token '%.40s' is not in the vocabulary", text->string);
            t->bos = id;
            *template_bos = true;
            return TS_OK;
        }
        return fail(h, TS_E_UNSUPPORTED,
                    "post_processor: a TemplateProcessing that adds tokens after the text is not "
                    "supported (only a BOS before it)");
    }
    return fail(h, TS_E_UNSUPPORTED, "post_processor %s is not supported", type_of(p));
}

static int read_specials(const hf *h, ts_tokenizer *t, const char *unk_text) {
    bool template_bos;
    int rc = read_post_processor(h, t, &template_bos);
    if (!rc) rc = config_token(h, t, "bos_token", &t->bos);
    if (!rc) rc = config_token(h, t, "eos_token", &t->eos);
    if (!rc) rc = config_token(h, t, "unk_token", &t->unk);
    if (rc) return rc;
    model_config_id(h, t, "bos_token_id", &t->bos);
    model_config_id(h, t, "eos_token_id", &t->eos);
    if (t->unk < 0 && unk_text)
        t->unk = ts_strtab_find(&t->ids_by_text, unk_text, strlen(unk_text));
    const ts_json *add_bos = ts_json_get(h->config, "add_bos_token");
    t->add_bos = add_bos && add_bos->type == TS_JSON_BOOL ? add_bos->boolean : template_bos;
    if (flag(h->config, "add_eos_token", false))
        return ts_error_set(TS_E_UNSUPPORTED, "%s: add_eos_token is not supported", h->config_path);
    return TS_OK;
}

static int copy_string(char **dst, const char *s, size_t n) {
    *dst = malloc(n + 1);
    if (!*dst) return ts_error_set(TS_E_NOMEM, "out of memory");
    memcpy(*dst, s, n);
    (*dst)[n] = '\0';
    return TS_OK;
}

/* tokenizer_config.json's chat_template (a string, or a list of {name, template}: "default"),
 * else DIR/chat_template.jinja. */
static int read_chat_template(const hf *h, ts_tokenizer *t, const char *dir) {
    const ts_json *v = ts_json_get(h->config, "chat_template");
    for (size_t i = 0; v && v->type == TS_JSON_ARRAY && i < v->length; i++)
        if (string_is(ts_json_get(&v->items[i], "name"), "default"))
            v = ts_json_get(&v->items[i], "template");
    if (v && v->type == TS_JSON_STRING) return copy_string(&t->chat_template, v->string, v->length);
    char path[4096];
    snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
    struct stat st;
    if (stat(path, &st) != 0) return TS_OK;
    ts_buf text = {0};
    int rc = ts_buf_read_file(&text, path);
    if (!rc) rc = copy_string(&t->chat_template, text.data ? text.data : "", text.len);
    ts_buf_free(&text);
    return rc;
}

/* ---- putting it together ---- */

static int read_model(const hf *h, ts_tokenizer *t) {
    if (!is_type(h->model, "BPE"))
        return fail(h, TS_E_UNSUPPORTED, "model type %s is not supported (supported: BPE)",
                    type_of(h->model));
    const ts_json *dropout = ts_json_get(h->model, "dropout");
    if (!is_null(dropout))
        return fail(h, TS_E_UNSUPPORTED, "model.dropout is not supported (null expected)");
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (size_t i = 0; i < 2; i++) {
        const ts_json *v = ts_json_get(h->model, affixes[i]);
        if (!is_null(v) && !(v->type == TS_JSON_STRING && v->length == 0))
            return fail(h, TS_E_UNSUPPORTED, "model.%s is not supported", affixes[i]);
    }
    t->bpe.ignore_merges = flag(h->model, "ignore_merges", false);
    t->bpe.byte_fallback = flag(h->model, "byte_fallback", false);
    t->bpe.fuse_unk = flag(h->model, "fuse_unk", false);
    return TS_OK;
}

/* Classifies the layout (see the top of the file) and sets the tokenizer's kind and flags. */
static int read_layout(const hf *h, ts_tokenizer *t) {
    normalizer norm = NORM_NONE;
    pre_family pre = PRE_NONE;
    int rc = read_normalizer(h, &norm);
    if (!rc) rc = read_pre_tokenizer(h, t, &pre);
    if (rc) return rc;
    if (pre == PRE_BYTE_LEVEL && norm != NORM_SPM) {
        t->kind = TS_TOKENIZER_BPE;
        t->nfc = norm == NORM_NFC;
    } else if ((pre == PRE_NONE && norm == NORM_SPM) ||
               (pre == PRE_METASPACE && norm == NORM_NONE)) {
        t->kind = TS_TOKENIZER_SPM;
        t->spm_merges = true;
        if (pre == PRE_NONE) t->spm_prefix = TS_SPM_PREFIX_ALWAYS;
        t->add_space_prefix = t->spm_prefix != TS_SPM_PREFIX_NONE;
    } else {
        return fail(
            h, TS_E_UNSUPPORTED,
            "this combination of normalizer and pre_tokenizer is not supported (byte-level: "
            "a ByteLevel pre-tokenizer with no normalizer or NFC; SentencePiece-style: "
            "Prepend + Replace normalizer and no pre-tokenizer, or Metaspace alone)");
    }
    return check_decoder(h, t->kind == TS_TOKENIZER_BPE);
}

static int load(hf *h, const char *dir, ts_tokenizer *t) {
    int rc = read_json(dir, "tokenizer.json", h->path, sizeof h->path, &h->doc);
    if (rc == TS_E_NOT_FOUND)
        return ts_error_set(TS_E_IO, "%s: no tokenizer.json in the directory", dir);
    if (rc) return rc;
    h->root = ts_json_root(h->doc);
    h->model = ts_json_get(h->root, "model");
    char model_config_path[4096];
    rc = read_json(dir, "tokenizer_config.json", h->config_path, sizeof h->config_path,
                   &h->config_doc);
    if (rc == TS_E_NOT_FOUND) rc = TS_OK;
    if (!rc)
        rc = read_json(dir, "config.json", model_config_path, sizeof model_config_path,
                       &h->model_config_doc);
    if (rc == TS_E_NOT_FOUND) rc = TS_OK;
    if (rc) return rc;
    h->config = h->config_doc ? ts_json_root(h->config_doc) : NULL;
    h->model_config = h->model_config_doc ? ts_json_root(h->model_config_doc) : NULL;
    const char *unk_text = NULL;
    const ts_json *merges = ts_json_get(h->model, "merges");
    rc = read_model(h, t);
    if (!rc) rc = read_layout(h, t);
    if (!rc && (!merges || merges->type != TS_JSON_ARRAY))
        rc = fail(h, TS_E_FORMAT, "model.merges: missing or not an array");
    if (!rc) rc = read_tokens(h, t, t->kind == TS_TOKENIZER_SPM, &unk_text);
    if (!rc) rc = read_specials(h, t, unk_text);
    if (!rc) rc = read_chat_template(h, t, dir);
    if (!rc) rc = ts_vocab_finish(t, h->path, false);
    if (rc) return rc;
    char source[4200];
    snprintf(source, sizeof source, "%s: model.merges", h->path);
    merges_ctx ctx = {merges};
    ts_merge_list list = {merges->length, hf_merge, &ctx, source};
    rc = check_merges(h, t, &list);
    return rc ? rc : ts_bpe_load(t, &list);
}

int ts_tokenizer_from_hf(const char *dir, ts_tokenizer **out) {
    *out = NULL;
    ts_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return ts_error_set(TS_E_NOMEM, "out of memory");
    hf h = {0};
    int rc = load(&h, dir, t);
    ts_json_doc_free(h.doc);
    ts_json_doc_free(h.config_doc);
    ts_json_doc_free(h.model_config_doc);
    if (rc) {
        ts_tokenizer_destroy(t);
        return rc;
    }
    *out = t;
    return TS_OK;
}

int ts_tokenizer_for_model(const char *model_path, const ts_gguf *g, ts_tokenizer **out) {
    if (ts_hf_is_checkpoint(model_path)) return ts_tokenizer_from_hf(model_path, out);
    return ts_tokenizer_from_gguf(g, out);
}
