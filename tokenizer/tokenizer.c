/*
 * tokenizer.c — the public API of tokenizer.h: encoding (special-token partition, then the
 * vocabulary's algorithm in spm.c or bpe.c), pieces, decoding and the streaming detokenizer.
 * Loading lives in vocab.c.
 */
#include "common/error.h"
#include "tokenizer/grow.h"
#include "tokenizer/nfc.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/unicode.h"

#include <stdlib.h>
#include <string.h>

int ts_ids_push(ts_ids *ids, int32_t id) {
    int rc = ts_grow(&ids->v, &ids->cap, ids->n + 1, sizeof *ids->v);
    if (rc) return rc;
    ids->v[ids->n++] = id;
    return TS_OK;
}

ts_tokenizer_kind ts_tokenizer_get_kind(const ts_tokenizer *t) {
    return t->kind;
}
int32_t ts_tokenizer_n_vocab(const ts_tokenizer *t) {
    return t->n_vocab;
}
int32_t ts_tokenizer_bos(const ts_tokenizer *t) {
    return t->bos;
}
int32_t ts_tokenizer_eos(const ts_tokenizer *t) {
    return t->eos;
}
bool ts_tokenizer_adds_bos(const ts_tokenizer *t) {
    return t->add_bos && t->bos >= 0;
}

bool ts_tokenizer_is_eog(const ts_tokenizer *t, int32_t id) {
    size_t lo = 0, hi = t->n_eog; /* t->eog is ascending */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (t->eog[mid] == id) return true;
        if (t->eog[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

const int32_t *ts_tokenizer_eog_ids(const ts_tokenizer *t, size_t *n) {
    *n = t->n_eog;
    return t->eog;
}

const char *ts_tokenizer_chat_template(const ts_tokenizer *t) {
    return t->chat_template;
}

const char *ts_tokenizer_piece(const ts_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_vocab) {
        *len = 0;
        return "";
    }
    *len = t->piece_len[id];
    return t->pieces + t->piece_off[id];
}

const char *ts_tokenizer_token_text(const ts_tokenizer *t, int32_t id) {
    return id < 0 || id >= t->n_vocab ? "" : t->texts + t->text_off[id];
}

/* ---- encoding ---- */

/* A stretch of the input: plain text, or a special token found in it. */
typedef struct fragment {
    int32_t token; /* -1 for text */
    size_t start, len;
} fragment;

typedef struct fragments {
    fragment *v;
    size_t n, cap;
} fragments;

static int fragments_push(fragments *f, fragment x) {
    int rc = ts_grow(&f->v, &f->cap, f->n + 1, sizeof *f->v);
    if (rc) return rc;
    f->v[f->n++] = x;
    return TS_OK;
}

/* Whether no byte of text[at..at+n) is marked untrusted (mask NULL: none is). */
static bool trusted(const char *untrusted, size_t at, size_t n) {
    for (size_t i = 0; untrusted && i < n; i++)
        if (untrusted[at + i]) return false;
    return true;
}

/* Splits the text fragments of `in` around every occurrence of token `id`, into `out`; a control
 * or unknown token touching an untrusted byte stays text. */
static int split_on_token(const ts_tokenizer *t, const char *text, const char *untrusted,
                          int32_t id, const fragments *in, fragments *out) {
    const char *needle = t->texts + t->text_off[id];
    size_t n_needle = t->text_len[id];
    out->n = 0;
    int rc = TS_OK;
    for (size_t i = 0; i < in->n && !rc; i++) {
        fragment f = in->v[i];
        if (f.token >= 0) {
            rc = fragments_push(out, f);
            continue;
        }
        size_t pos = f.start, end = f.start + f.len, from = pos;
        bool check = untrusted && t->types[id] != TS_TOKEN_USER_DEFINED;
        while (!rc && from < end) {
            const char *hit = memmem(text + from, end - from, needle, n_needle);
            if (!hit) break;
            size_t at = (size_t)(hit - text);
            if (check && !trusted(untrusted, at, n_needle)) {
                from = at + 1;
                continue;
            }
            if (at > pos) rc = fragments_push(out, (fragment){-1, pos, at - pos});
            if (!rc) rc = fragments_push(out, (fragment){id, at, n_needle});
            pos = from = at + n_needle;
        }
        if (!rc && pos < end) rc = fragments_push(out, (fragment){-1, pos, end - pos});
    }
    return rc;
}

/* The input as fragments: special tokens are taken out first, longest token first over the
 * whole text, then the next one in what is left (llama.cpp's tokenizer_st_partition). Control
 * and unknown tokens only with parse_special; user-defined ones always. *f is one of the
 * buffers. */
static int partition(const ts_tokenizer *t, const char *text, size_t len, bool parse_special,
                     const char *untrusted, fragments buf[2], fragments **f) {
    int cur = 0;
    int rc = fragments_push(&buf[0], (fragment){-1, 0, len});
    for (size_t k = 0; k < t->n_specials && !rc; k++) {
        int32_t id = t->specials[k];
        if (!parse_special && t->types[id] != TS_TOKEN_USER_DEFINED) continue;
        if (!memmem(text, len, t->texts + t->text_off[id], t->text_len[id])) continue;
        rc = split_on_token(t, text, untrusted, id, &buf[cur], &buf[1 - cur]);
        cur = 1 - cur;
    }
    *f = &buf[cur];
    return rc;
}

/* Whether a SentencePiece text fragment gets the dummy-prefix space (see ts_spm_prefix). */
static bool spm_prefix(const ts_tokenizer *t, const char *text, size_t len, bool at_start,
                       bool after_token) {
    if (!t->add_space_prefix) return false;
    switch (t->spm_prefix) {
    case TS_SPM_PREFIX_ALWAYS: return after_token;
    case TS_SPM_PREFIX_UNLESS_SPACE: return len == 0 || text[0] != ' ';
    case TS_SPM_PREFIX_FIRST_UNLESS_SPACE: return at_start && (len == 0 || text[0] != ' ');
    case TS_SPM_PREFIX_NONE: break;
    }
    return false;
}

static int encode(const ts_tokenizer *t, const char *text, size_t len, bool add_bos,
                  bool parse_special, const char *untrusted, int32_t **ids, size_t *n_ids) {
    ts_ids out = {0};
    ts_encode_scratch scratch = {0};
    fragments buf[2] = {{0}, {0}}, *frags = NULL;
    int rc = TS_OK;
    if (add_bos && t->bos >= 0) rc = ts_ids_push(&out, t->bos);
    if (!rc && len > 0) rc = partition(t, text, len, parse_special, untrusted, buf, &frags);
    /* SPM puts the dummy-prefix space before text that starts the input or follows a token. */
    bool after_token = true;
    for (size_t i = 0; frags && i < frags->n && !rc; i++) {
        fragment f = frags->v[i];
        if (f.token >= 0) {
            rc = ts_ids_push(&out, f.token);
            after_token = true;
            continue;
        }
        const char *piece = text + f.start;
        size_t n = f.len;
        if (t->nfc) {
            ts_buf_clear(&scratch.normalized);
            rc = ts_nfc(piece, n, &scratch.normalized);
            piece = scratch.normalized.data;
            n = scratch.normalized.len;
        }
        if (!rc && t->kind == TS_TOKENIZER_SPM) {
            bool prefix = spm_prefix(t, piece, n, f.start == 0, after_token);
            rc = t->spm_merges ? ts_bpe_encode_spm(t, piece, n, prefix, &scratch, &out)
                               : ts_spm_encode(t, piece, n, prefix, &scratch, &out);
        } else if (!rc) {
            rc = ts_bpe_encode(t, piece, n, &scratch, &out);
        }
        after_token = false;
    }
    if (!rc && out.n > 0) {
        int32_t *grown = realloc(*ids, (*n_ids + out.n) * sizeof *grown);
        if (!grown) {
            rc = ts_error_set(TS_E_NOMEM, "out of memory for %zu token ids", *n_ids + out.n);
        } else {
            memcpy(grown + *n_ids, out.v, out.n * sizeof *grown);
            *ids = grown;
            *n_ids += out.n;
        }
    }
    free(out.v);
    free(buf[0].v);
    free(buf[1].v);
    ts_merger_free(&scratch.merger);
    ts_pretok_free(&scratch.pretok);
    ts_buf_free(&scratch.text);
    ts_buf_free(&scratch.normalized);
    return rc;
}

int ts_tokenizer_encode(const ts_tokenizer *t, const char *text, size_t len, bool add_bos,
                        bool parse_special, int32_t **ids, size_t *n_ids) {
    return encode(t, text, len, add_bos, parse_special, NULL, ids, n_ids);
}

int ts_tokenizer_encode_trusted(const ts_tokenizer *t, const char *text, size_t len,
                                const char *untrusted, bool add_bos, int32_t **ids,
                                size_t *n_ids) {
    return encode(t, text, len, add_bos, true, untrusted, ids, n_ids);
}

/* ---- decoding ---- */

int ts_tokenizer_decode(const ts_tokenizer *t, const int32_t *ids, size_t n, bool strip_prefix,
                        ts_buf *out) {
    size_t first = 0;
    if (strip_prefix && n > 0 && ids[0] == t->bos && t->bos >= 0) first = 1;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *piece = ts_tokenizer_piece(t, ids[i], &len);
        if (i == first && strip_prefix && t->add_space_prefix && t->kind == TS_TOKENIZER_SPM &&
            len > 0 && piece[0] == ' ') {
            piece++;
            len--;
        }
        int rc = ts_buf_append(out, piece, len);
        if (rc) return rc;
    }
    return TS_OK;
}

static const char REPLACEMENT[] = "\xEF\xBF\xBD"; /* U+FFFD */

/* Appends bytes[0..n) to the stream: complete characters go to out, an incomplete one at the end
 * waits in d->pending, ill-formed bytes become U+FFFD (one per maximal ill-formed subpart, so the
 * result does not depend on how the bytes were cut into tokens). */
static int detok_feed(ts_detok *d, const char *bytes, size_t n, ts_buf *out) {
    size_t i = 0;
    int rc = TS_OK;
    /* First complete (or reject) the pending character. It is a valid prefix, so the decoder
     * decides at the byte just added. */
    while (d->n_pending > 0 && i < n && !rc) {
        d->pending[d->n_pending++] = bytes[i++];
        uint32_t cp;
        size_t k = ts_utf8_decode(d->pending, (size_t)d->n_pending, &cp);
        if (cp == TS_UTF8_INCOMPLETE) continue;
        if (cp == TS_UTF8_INVALID) {
            rc = ts_buf_append(out, REPLACEMENT, 3);
            i -= (size_t)d->n_pending - k; /* the rejected byte starts afresh */
        } else {
            rc = ts_buf_append(out, d->pending, k);
        }
        d->n_pending = 0;
    }
    size_t run = i; /* start of well-formed bytes not yet copied */
    while (i < n && !rc) {
        uint32_t cp;
        size_t k = ts_utf8_decode(bytes + i, n - i, &cp);
        if (cp == TS_UTF8_INCOMPLETE) {
            memcpy(d->pending, bytes + i, k); /* k <= 3 */
            d->n_pending = (int)k;
            break;
        }
        if (cp == TS_UTF8_INVALID) {
            rc = ts_buf_append(out, bytes + run, i - run);
            if (!rc) rc = ts_buf_append(out, REPLACEMENT, 3);
            run = i + k;
        }
        i += k;
    }
    if (!rc) rc = ts_buf_append(out, bytes + run, i - run);
    return rc;
}

int ts_detok_push(ts_detok *d, const ts_tokenizer *t, int32_t id, ts_buf *out) {
    size_t len;
    const char *piece = ts_tokenizer_piece(t, id, &len);
    return detok_feed(d, piece, len, out);
}

int ts_detok_flush(ts_detok *d, ts_buf *out) {
    if (d->n_pending == 0) return TS_OK;
    d->n_pending = 0;
    return ts_buf_append(out, REPLACEMENT, 3);
}
