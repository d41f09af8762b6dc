/*
 * bpe.c — byte-level BPE encoding over a GGUF "gpt2" vocabulary (GPT-2, Llama 3, Qwen 2, ...).
 *
 * The pre-tokenizer (pretok.h) splits the text into words. Each byte of a word is one symbol,
 * written in GPT-2's byte-level alphabet (unicode.h), and adjacent symbols are merged by the rank
 * of their pair in `tokenizer.ggml.merges`, lowest rank first (merge.h). The finished symbols are
 * looked up as tokens. This is what llama.cpp's llm_tokenizer_bpe does; to make merging cheap,
 * every string that can take part in a merge is interned at load time and pairs are looked up by
 * their two integer ids, which also gives the merged string's id without building it.
 *
 * The same tables serve the SentencePiece-style BPE of tokenizer.json files (Llama 2, Mistral):
 * there the symbols are the UTF-8 characters of the escaped text (no pre-tokenizer, no byte
 * alphabet), and a character that is no token falls back to its <0xXX> tokens.
 */
#include "common/error.h"
#include "tokenizer/grow.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/unicode.h"

#include <stdlib.h>
#include <string.h>

struct ts_bpe_pair {
    uint64_t key; /* left << 32 | right (interned ids); UINT64_MAX: empty */
    int32_t rank;
    int32_t merged; /* interned id of left+right */
};

static uint64_t pair_key(int32_t left, int32_t right) {
    return (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
}

static size_t pair_slot(const ts_bpe *b, uint64_t key) {
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    size_t mask = b->n_pair_slots - 1;
    size_t i = (size_t)(h >> 20) & mask;
    while (b->pairs[i].key != UINT64_MAX && b->pairs[i].key != key)
        i = (i + 1) & mask;
    return i;
}

/* Interns s and records which token (if any) has that text. */
static int intern(ts_bpe *b, const char *s, size_t n, int32_t token, int32_t *id) {
    int rc = ts_strtab_intern(&b->strings, s, n, id);
    if (rc) return rc;
    size_t old_cap = b->string_token_cap;
    rc = ts_grow(&b->string_token, &b->string_token_cap, (size_t)*id + 1, sizeof *b->string_token);
    if (rc) return rc;
    for (size_t i = old_cap; i < b->string_token_cap; i++)
        b->string_token[i] = -1;
    if (token >= 0) b->string_token[*id] = token; /* a later duplicate text wins, as in llama.cpp */
    return TS_OK;
}

int ts_bpe_load(ts_tokenizer *t, const ts_merge_list *merges) {
    ts_bpe *b = &t->bpe;
    int rc = ts_strtab_reserve(&b->strings, (size_t)t->n_vocab + merges->n / 4);
    if (!rc)
        rc = ts_grow(&b->string_token, &b->string_token_cap, (size_t)t->n_vocab,
                     sizeof *b->string_token);
    for (size_t i = 0; i < b->string_token_cap && !rc; i++)
        b->string_token[i] = -1;
    for (int32_t i = 0; i < t->n_vocab && !rc; i++) {
        int32_t id;
        if (t->text_len[i]) rc = intern(b, t->texts + t->text_off[i], t->text_len[i], i, &id);
    }
    if (rc) return rc;
    size_t n_slots = 64;
    while (n_slots < 2 * merges->n + 2)
        n_slots *= 2;
    b->pairs = malloc(n_slots * sizeof *b->pairs);
    if (!b->pairs) return ts_error_set(TS_E_NOMEM, "out of memory for %zu merges", merges->n);
    b->n_pair_slots = n_slots;
    for (size_t i = 0; i < n_slots; i++)
        b->pairs[i].key = UINT64_MAX;

    ts_buf joined = {0};
    for (size_t i = 0; i < merges->n && !rc; i++) {
        const char *l, *r;
        size_t n_left, n_right;
        merges->merge(merges->ctx, i, &l, &n_left, &r, &n_right);
        if (n_left == 0 || n_right == 0) {
            rc = ts_error_set(TS_E_FORMAT,
                              "%s: merge %zu ('%.*s' + '%.*s') is not two non-empty pieces",
                              merges->source, i, (int)(n_left > 40 ? 40 : n_left), l,
                              (int)(n_right > 40 ? 40 : n_right), r);
            break;
        }
        int32_t left, right, merged;
        ts_buf_clear(&joined);
        rc = intern(b, l, n_left, -1, &left);
        if (!rc) rc = intern(b, r, n_right, -1, &right);
        if (!rc) rc = ts_buf_append(&joined, l, n_left);
        if (!rc) rc = ts_buf_append(&joined, r, n_right);
        if (!rc) rc = intern(b, joined.data, joined.len, -1, &merged);
        if (rc) break;
        size_t slot = pair_slot(b, pair_key(left, right));
        if (b->pairs[slot].key == UINT64_MAX) /* a repeated pair keeps its first rank */
            b->pairs[slot] = (ts_bpe_pair){pair_key(left, right), (int32_t)i, merged};
    }
    ts_buf_free(&joined);
    for (int c = 0; c < 256 && !rc; c++) {
        char s[4];
        size_t n = ts_utf8_encode(ts_gpt2_byte_to_cp((uint8_t)c), s);
        b->byte_string[c] = ts_strtab_find(&b->strings, s, n);
        s[0] = (char)c;
        b->single_byte_token[c] = ts_strtab_find(&t->ids_by_text, s, 1);
    }
    return rc;
}

void ts_bpe_free(ts_bpe *b) {
    if (!b) return;
    ts_strtab_free(&b->strings);
    free(b->string_token);
    free(b->pairs);
}

static bool bpe_pair(const void *ctx, const ts_symbol *left, const ts_symbol *right,
                     double *priority, int32_t *merged_id) {
    const ts_bpe *b = ctx;
    if (left->id < 0 || right->id < 0) return false;
    const ts_bpe_pair *p = &b->pairs[pair_slot(b, pair_key(left->id, right->id))];
    if (p->key == UINT64_MAX) return false;
    *priority = p->rank;
    *merged_id = p->merged;
    return true;
}

/* word[0..n) in the byte-level alphabet, into out. */
static int to_alphabet(ts_buf *out, const char *word, size_t n) {
    ts_buf_clear(out);
    int rc = ts_buf_reserve(out, 2 * n);
    for (size_t i = 0; i < n && !rc; i++) {
        char s[4];
        rc = ts_buf_append(out, s, ts_utf8_encode(ts_gpt2_byte_to_cp((uint8_t)word[i]), s));
    }
    return rc;
}

/* A finished symbol whose text is no token: llama.cpp looks each byte of its alphabet form up
 * as a one-byte token and drops those that are not. */
static int emit_unknown(const ts_tokenizer *t, const char *bytes, size_t n, ts_buf *tmp,
                        ts_ids *out) {
    int rc = to_alphabet(tmp, bytes, n);
    for (size_t i = 0; i < tmp->len && !rc; i++) {
        int32_t id = t->bpe.single_byte_token[(unsigned char)tmp->data[i]];
        if (id >= 0) rc = ts_ids_push(out, id);
    }
    return rc;
}

static int encode_word(const ts_tokenizer *t, const char *word, size_t n, ts_encode_scratch *s,
                       ts_ids *out) {
    const ts_bpe *b = &t->bpe;
    int rc;
    if (b->ignore_merges) {
        rc = to_alphabet(&s->text, word, n);
        if (rc) return rc;
        int32_t id = ts_strtab_find(&t->ids_by_text, s->text.data, s->text.len);
        if (id >= 0) return ts_ids_push(out, id);
    }
    ts_merger *m = &s->merger;
    ts_merger_clear(m);
    rc = TS_OK;
    for (size_t i = 0; i < n && !rc; i++)
        rc = ts_merger_push(m, i, 1, b->byte_string[(unsigned char)word[i]]);
    if (!rc) rc = ts_merger_run(m, bpe_pair, b);
    for (int32_t i = m->n_symbols ? 0 : -1; i >= 0 && !rc; i = m->symbols[i].next) {
        const ts_symbol *sym = &m->symbols[i];
        int32_t id = sym->id >= 0 ? b->string_token[sym->id] : -1;
        rc = id >= 0 ? ts_ids_push(out, id)
                     : emit_unknown(t, word + sym->start, sym->n, &s->text, out);
    }
    return rc;
}

int ts_bpe_encode(const ts_tokenizer *t, const char *text, size_t len, ts_encode_scratch *s,
                  ts_ids *out) {
    int rc = ts_pretok_split(&s->pretok, t->bpe.pretok, text, len);
    size_t start = 0;
    for (size_t w = 0; w < s->pretok.n_ends && !rc; w++) {
        size_t end = s->pretok.ends[w];
        rc = encode_word(t, text + start, end - start, s, out);
        start = end;
    }
    return rc;
}

/* ---- SentencePiece-style BPE (tokenizer.json): merges over UTF-8 characters ---- */

/* A finished symbol that is no token: its <0xXX> tokens with byte fallback (all of them, or
 * else the unknown token, as the `tokenizers` package does), else the unknown token (a run of
 * them fused into one with fuse_unk), else nothing. */
static int emit_fallback(const ts_tokenizer *t, const char *bytes, size_t n, bool *after_unk,
                         ts_ids *out) {
    const ts_bpe *b = &t->bpe;
    bool all_bytes = b->byte_fallback;
    for (size_t i = 0; all_bytes && i < n; i++)
        all_bytes = t->byte_tokens[(unsigned char)bytes[i]] >= 0 &&
                    t->types[t->byte_tokens[(unsigned char)bytes[i]]] == TS_TOKEN_BYTE;
    int rc = TS_OK;
    for (size_t i = 0; all_bytes && i < n && !rc; i++)
        rc = ts_ids_push(out, t->byte_tokens[(unsigned char)bytes[i]]);
    if (all_bytes || rc) {
        *after_unk = false;
        return rc;
    }
    if (t->unk < 0 || (b->fuse_unk && *after_unk)) return TS_OK;
    *after_unk = true;
    return ts_ids_push(out, t->unk);
}

int ts_bpe_encode_spm(const ts_tokenizer *t, const char *text, size_t len, bool space_prefix,
                      ts_encode_scratch *s, ts_ids *out) {
    const ts_bpe *b = &t->bpe;
    int rc = ts_spm_escape(&s->text, text, len, space_prefix);
    if (rc) return rc;
    const char *buf = s->text.data;
    size_t n = s->text.len;
    if (n == 0) return TS_OK;
    if (b->ignore_merges) {
        int32_t id = ts_strtab_find(&t->ids_by_text, buf, n);
        if (id >= 0) return ts_ids_push(out, id);
    }
    ts_merger *m = &s->merger;
    ts_merger_clear(m);
    for (size_t i = 0; i < n && !rc;) {
        uint32_t cp;
        size_t k = ts_utf8_decode(buf + i, n - i, &cp); /* an ill-formed subpart is one symbol */
        rc = ts_merger_push(m, i, (uint32_t)k, ts_strtab_find(&b->strings, buf + i, k));
        i += k;
    }
    if (!rc) rc = ts_merger_run(m, bpe_pair, b);
    bool after_unk = false;
    for (int32_t i = m->n_symbols ? 0 : -1; i >= 0 && !rc; i = m->symbols[i].next) {
        const ts_symbol *sym = &m->symbols[i];
        int32_t id = sym->id >= 0 ? b->string_token[sym->id] : -1;
        if (id >= 0) {
            after_unk = false;
            rc = ts_ids_push(out, id);
        } else {
            rc = emit_fallback(t, buf + sym->start, sym->n, &after_unk, out);
        }
    }
    return rc;
}
