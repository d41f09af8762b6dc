/*
 * spm.c — SentencePiece-style encoding over a GGUF "llama" vocabulary.
 *
 * The text (after the dummy-prefix space, with every ' ' written as U+2581 "▁") is split into
 * characters, and adjacent symbols are merged while their concatenation is a vocabulary token,
 * best score first (merge.h). A symbol that is not a token in the end is emitted as byte tokens
 * <0xXX>. This is llama.cpp's llm_tokenizer_spm, including its way of splitting characters by
 * the first byte alone, so ill-formed UTF-8 gives the same ids too.
 */
#include "common/error.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/unicode.h"

#include <string.h>

static const char SPACE_MARK[] = "\xE2\x96\x81"; /* U+2581 */

typedef struct spm_ctx {
    const ts_tokenizer *t;
    const char *text;
} spm_ctx;

static bool spm_pair(const void *ctx, const ts_symbol *left, const ts_symbol *right,
                     double *priority, int32_t *merged_id) {
    const spm_ctx *c = ctx;
    int32_t id = ts_strtab_find(&c->t->ids_by_text, c->text + left->start, left->n + right->n);
    if (id < 0) return false;
    *priority = -(double)c->t->scores[id]; /* the highest score merges first */
    *merged_id = id;
    return true;
}

int ts_spm_escape(ts_buf *out, const char *text, size_t len, bool space_prefix) {
    ts_buf_clear(out);
    int rc = ts_buf_reserve(out, len + 3);
    if (rc) return rc;
    if (space_prefix) rc = ts_buf_append(out, SPACE_MARK, 3);
    size_t run = 0; /* start of the bytes not yet copied */
    for (size_t i = 0; i < len && !rc; i++) {
        if (text[i] != ' ') continue;
        rc = ts_buf_append(out, text + run, i - run);
        if (!rc) rc = ts_buf_append(out, SPACE_MARK, 3);
        run = i + 1;
    }
    if (!rc) rc = ts_buf_append(out, text + run, len - run);
    return rc;
}

/* A symbol that is not a token: one byte token per byte. */
static int emit_bytes(const ts_tokenizer *t, const char *bytes, size_t n, ts_ids *out) {
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_tokens[(unsigned char)bytes[i]];
        if (id < 0) id = t->unk; /* no <0xXX> token: llama.cpp would stop here; we keep going */
        if (id < 0) continue;
        int rc = ts_ids_push(out, id);
        if (rc) return rc;
    }
    return TS_OK;
}

int ts_spm_encode(const ts_tokenizer *t, const char *text, size_t len, bool space_prefix,
                  ts_encode_scratch *s, ts_ids *out) {
    int rc = ts_spm_escape(&s->text, text, len, space_prefix);
    if (rc) return rc;
    const char *buf = s->text.data;
    size_t n = s->text.len;
    ts_merger *m = &s->merger;
    ts_merger_clear(m);
    for (size_t i = 0; i < n && !rc;) {
        size_t k = ts_unicode_lead_length((unsigned char)buf[i]);
        if (k > n - i) k = n - i;
        rc = ts_merger_push(m, i, (uint32_t)k, -1);
        i += k;
    }
    spm_ctx ctx = {t, buf};
    if (!rc) rc = ts_merger_run(m, spm_pair, &ctx);
    for (int32_t i = m->n_symbols ? 0 : -1; i >= 0 && !rc; i = m->symbols[i].next) {
        const ts_symbol *sym = &m->symbols[i];
        int32_t id =
            sym->id >= 0 ? sym->id : ts_strtab_find(&t->ids_by_text, buf + sym->start, sym->n);
        rc = id >= 0 ? ts_ids_push(out, id) : emit_bytes(t, buf + sym->start, sym->n, out);
    }
    return rc;
}
