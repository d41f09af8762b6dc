/*
 * test_gguf_util.h — building small GGUF images for the model tests and the fuzz corpus.
 *
 * fixture_build writes a small but complete Llama model with the GGUF writer into a ts_buf;
 * its options break one thing at a time (skip a tensor or key, reshape or retype a tensor,
 * write a key as a string) so each test causes exactly the error it checks. The patch helpers
 * edit a valid image in place to make files the writer itself refuses to produce.
 */
#ifndef TS_TESTS_TEST_GGUF_UTIL_H
#define TS_TESTS_TEST_GGUF_UTIL_H

#include "common/buf.h"
#include "common/error.h"
#include "model/gguf.h"
#include "model/gguf_write.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct fixture {
    int dim, n_layers, n_heads, n_kv_heads, n_ff, n_vocab;
    ts_dtype type;              /* of the matrices; norms are f32 */
    bool tied;                  /* no output.weight (otherwise one that differs from the embedding) */
    const char *skip_tensor;    /* not written */
    const char *reshape_tensor; /* written with its second (or only) dimension one smaller */
    const char *retype_tensor;  /* written as q8_0 */
    const char *skip_key;       /* not written */
    const char *string_key;     /* written as the string "7" instead of a number */
    const char *arch;           /* general.architecture, default "llama" */
} fixture;

/* dim 64, 2 layers, 4 heads, 2 KV heads, FFN 96, vocab 40, f32, separate output head. */
static inline fixture fixture_default(void) {
    return (fixture){.dim = 64, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .n_ff = 96,
                     .n_vocab = 40, .type = TS_DTYPE_F32};
}

static inline int fixture_add_u32(ts_gguf_writer *w, const fixture *f, const char *key, uint32_t v) {
    if (f->skip_key && !strcmp(key, f->skip_key)) return TS_OK;
    if (f->string_key && !strcmp(key, f->string_key)) return ts_gguf_writer_add_str(w, key, "7");
    return ts_gguf_writer_add_u32(w, key, v);
}

/* Declares one tensor of [d0] (d1 == 0) or [d0, d1] backed by `zeros` (large enough). */
static inline int fixture_tensor(ts_gguf_writer *w, const fixture *f, const char *name,
                                 int64_t d0, int64_t d1, ts_dtype type, const void *zeros) {
    if (f->skip_tensor && !strcmp(name, f->skip_tensor)) return TS_OK;
    if (f->reshape_tensor && !strcmp(name, f->reshape_tensor)) {
        if (d1) d1 -= 1;
        else d0 -= 1;
    }
    if (f->retype_tensor && !strcmp(name, f->retype_tensor)) type = TS_DTYPE_Q8_0;
    int64_t dims[2] = {d0, d1};
    return ts_gguf_writer_add_tensor(w, name, type, d1 ? 2 : 1, dims, zeros);
}

/* Appends the fixture's image to out. */
static inline int fixture_build(const fixture *f, ts_buf *out) {
    ts_gguf_writer *w;
    int rc = ts_gguf_writer_create(&w);
    if (rc) return rc;
    int64_t head_dim = f->dim / f->n_heads, kv_dim = head_dim * f->n_kv_heads;
    int64_t biggest = (int64_t)f->n_vocab * f->dim;
    if ((int64_t)f->n_ff * f->dim > biggest) biggest = (int64_t)f->n_ff * f->dim;
    void *zeros = calloc((size_t)biggest, sizeof(float));
    void *head = malloc((size_t)biggest * sizeof(float)); /* differs from the embedding: untied */
    if (!zeros || !head) rc = ts_error_set(TS_E_NOMEM, "out of memory");
    else memset(head, 0x3c, (size_t)biggest * sizeof(float));
    const char *arch = f->arch ? f->arch : "llama";
    if (!rc && !(f->skip_key && !strcmp(f->skip_key, "general.architecture")))
        rc = ts_gguf_writer_add_str(w, "general.architecture", arch);
    if (!rc) rc = fixture_add_u32(w, f, "llama.context_length", 256);
    if (!rc) rc = fixture_add_u32(w, f, "llama.embedding_length", (uint32_t)f->dim);
    if (!rc) rc = fixture_add_u32(w, f, "llama.block_count", (uint32_t)f->n_layers);
    if (!rc) rc = fixture_add_u32(w, f, "llama.feed_forward_length", (uint32_t)f->n_ff);
    if (!rc) rc = fixture_add_u32(w, f, "llama.attention.head_count", (uint32_t)f->n_heads);
    if (!rc) rc = fixture_add_u32(w, f, "llama.attention.head_count_kv", (uint32_t)f->n_kv_heads);
    if (!rc) rc = fixture_tensor(w, f, "token_embd.weight", f->dim, f->n_vocab, f->type, zeros);
    if (!rc) rc = fixture_tensor(w, f, "output_norm.weight", f->dim, 0, TS_DTYPE_F32, zeros);
    if (!rc && !f->tied)
        rc = fixture_tensor(w, f, "output.weight", f->dim, f->n_vocab, f->type, head);
    for (int i = 0; !rc && i < f->n_layers; i++) {
        char name[64];
#define T(suffix, d0, d1, type)                                                                    \
    (snprintf(name, sizeof name, "blk.%d." suffix ".weight", i),                                  \
     fixture_tensor(w, f, name, d0, d1, type, zeros))
        rc = T("attn_norm", f->dim, 0, TS_DTYPE_F32);
        if (!rc) rc = T("attn_q", f->dim, f->dim, f->type);
        if (!rc) rc = T("attn_k", f->dim, kv_dim, f->type);
        if (!rc) rc = T("attn_v", f->dim, kv_dim, f->type);
        if (!rc) rc = T("attn_output", f->dim, f->dim, f->type);
        if (!rc) rc = T("ffn_norm", f->dim, 0, TS_DTYPE_F32);
        if (!rc) rc = T("ffn_gate", f->dim, f->n_ff, f->type);
        if (!rc) rc = T("ffn_up", f->dim, f->n_ff, f->type);
        if (!rc) rc = T("ffn_down", f->n_ff, f->dim, f->type);
#undef T
    }
    if (!rc) rc = ts_gguf_writer_write_buf(w, out);
    ts_gguf_writer_destroy(w);
    free(zeros);
    free(head);
    return rc;
}

/* Offset of the first occurrence of the NUL-terminated needle in the image, or -1. */
static inline long image_find(const ts_buf *image, const char *needle) {
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= image->len; i++)
        if (memcmp(image->data + i, needle, n) == 0) return (long)i;
    return -1;
}

static inline void image_put_u32(ts_buf *image, long at, uint32_t v) { memcpy(image->data + at, &v, 4); }
static inline void image_put_u64(ts_buf *image, long at, uint64_t v) { memcpy(image->data + at, &v, 8); }

/* Offset of a tensor info's fields, found by its name (which must occur once in the image):
 * n_dims at the result, then the dims, then the type, then the offset. */
static inline long image_tensor_info(const ts_buf *image, const char *name) {
    long at = image_find(image, name);
    return at < 0 ? -1 : at + (long)strlen(name);
}

/* Writes n bytes to path (for tests that go through ts_gguf_open). */
static inline int write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return ts_error_set(TS_E_IO, "%s: cannot create", path);
    size_t written = n ? fwrite(data, 1, n, f) : 0;
    int closed = fclose(f);
    if (written != n || closed != 0) return ts_error_set(TS_E_IO, "%s: write failed", path);
    return TS_OK;
}

#endif
