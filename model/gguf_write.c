/*
 * gguf_write.c — see gguf_write.h.
 *
 * Metadata entries are serialised into one byte buffer as they are added (so the writer never
 * needs to know the lifetime of the caller's strings and arrays); only the key list is kept
 * apart, for the duplicate check. Tensor offsets are assigned at declaration: each tensor starts
 * at the next multiple of the alignment after the previous one, and its data is padded with
 * zeros to that multiple. The same serialisation code feeds a FILE or a ts_buf (a "sink").
 */
#include "model/gguf_write.h"

#include "common/error.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    WRITER_DEFAULT_ALIGNMENT = 32,
    WRITER_MAX_KEY_BYTES = 65535,
    WRITER_MAX_NAME_BYTES = 255, /* what the reader accepts */
};

typedef struct wtensor {
    char *name;
    ts_dtype type;
    uint32_t n_dims;
    int64_t dims[TS_GGUF_MAX_DIMS];
    const void *data; /* borrowed; NULL when streamed */
    size_t n_bytes;
    uint64_t offset; /* relative to the data section */
} wtensor;

struct ts_gguf_writer {
    ts_buf kv_bytes; /* serialised metadata entries */
    char **keys;
    size_t n_keys, cap_keys;
    wtensor *tensors;
    size_t n_tensors, cap_tensors;
    uint32_t alignment;
    uint64_t data_size; /* bytes of the data section, padding included */
    /* streaming state */
    FILE *file;
    char *path, *partial_path;
    size_t cur_tensor;    /* tensor receiving bytes */
    uint64_t cur_written; /* of cur_tensor */
    bool failed;          /* a streaming write failed; the file is abandoned */
};

static uint64_t align_up(uint64_t x, uint32_t a) { return (x + a - 1) / a * a; }

int ts_gguf_writer_create(ts_gguf_writer **out) {
    *out = calloc(1, sizeof **out);
    if (!*out) return ts_error_set(TS_E_NOMEM, "out of memory for a GGUF writer");
    (*out)->alignment = WRITER_DEFAULT_ALIGNMENT;
    return TS_OK;
}

static void abandon_file(ts_gguf_writer *w) {
    if (w->file) {
        fclose(w->file);
        w->file = NULL;
        remove(w->partial_path);
    }
}

void ts_gguf_writer_destroy(ts_gguf_writer *w) {
    if (!w) return;
    abandon_file(w);
    for (size_t i = 0; i < w->n_keys; i++) free(w->keys[i]);
    free(w->keys);
    for (size_t i = 0; i < w->n_tensors; i++) free(w->tensors[i].name);
    free(w->tensors);
    ts_buf_free(&w->kv_bytes);
    free(w->path);
    free(w->partial_path);
    free(w);
}

/* Grows an array of item_size-byte items to hold one more. */
static int grow(void **items, size_t n, size_t *cap, size_t item_size) {
    if (n < *cap) return TS_OK;
    size_t new_cap = *cap ? *cap * 2 : 16;
    void *p = realloc(*items, new_cap * item_size);
    if (!p) return ts_error_set(TS_E_NOMEM, "out of memory in the GGUF writer");
    *items = p;
    *cap = new_cap;
    return TS_OK;
}

/* ---- metadata ---- */

static int append_u32(ts_buf *b, uint32_t v) { return ts_buf_append(b, &v, 4); }
static int append_u64(ts_buf *b, uint64_t v) { return ts_buf_append(b, &v, 8); }

static int append_str(ts_buf *b, const char *s, uint64_t len) {
    int rc = append_u64(b, len);
    return rc ? rc : ts_buf_append(b, s, (size_t)len);
}

/* Forgets the bytes appended since mark (keeping the buffer NUL-terminated like ts_buf does). */
static void truncate_to(ts_buf *b, size_t mark) {
    b->len = mark;
    if (b->data) b->data[mark] = '\0';
}

/* Validates the key and appends it with the value type; the caller appends the value and then
 * calls end_kv with the result, which rolls the entry back on failure. */
static int begin_kv(ts_gguf_writer *w, const char *key, ts_gguf_type type, size_t *mark) {
    size_t key_len = strlen(key);
    if (w->file) return ts_error_set(TS_E_INVALID, "key '%s': the file is already being written", key);
    if (key_len == 0) return ts_error_set(TS_E_INVALID, "empty metadata key");
    if (type != TS_GGUF_UINT32 && strcmp(key, "general.alignment") == 0)
        return ts_error_set(TS_E_INVALID, "key 'general.alignment': must be a uint32, not %s",
                            ts_gguf_type_name(type));
    if (key_len > WRITER_MAX_KEY_BYTES)
        return ts_error_set(TS_E_INVALID, "key '%.64s...': longer than %d bytes", key,
                            WRITER_MAX_KEY_BYTES);
    for (size_t i = 0; i < w->n_keys; i++)
        if (strcmp(w->keys[i], key) == 0)
            return ts_error_set(TS_E_INVALID, "key '%s' added twice", w->keys[i]);
    int rc = grow((void **)&w->keys, w->n_keys, &w->cap_keys, sizeof *w->keys);
    if (rc) return rc;
    char *copy = strdup(key);
    if (!copy) return ts_error_set(TS_E_NOMEM, "out of memory in the GGUF writer");
    *mark = w->kv_bytes.len;
    rc = append_str(&w->kv_bytes, key, key_len);
    if (!rc) rc = append_u32(&w->kv_bytes, (uint32_t)type);
    if (rc) {
        free(copy);
        truncate_to(&w->kv_bytes, *mark);
        return rc;
    }
    w->keys[w->n_keys++] = copy;
    return TS_OK;
}

static int end_kv(ts_gguf_writer *w, size_t mark, int rc) {
    if (rc) {
        truncate_to(&w->kv_bytes, mark);
        free(w->keys[--w->n_keys]);
    }
    return rc;
}

static int add_scalar(ts_gguf_writer *w, const char *key, ts_gguf_type type, const void *v) {
    size_t mark = 0;
    int rc = begin_kv(w, key, type, &mark);
    if (rc) return rc;
    return end_kv(w, mark, ts_buf_append(&w->kv_bytes, v, ts_gguf_type_size(type)));
}

/* The typed adders differ only in the C type and the GGUF type. */
#define SCALAR_ADDER(fn, ctype, gguf_type) \
    int fn(ts_gguf_writer *w, const char *key, ctype v) { return add_scalar(w, key, gguf_type, &v); }
SCALAR_ADDER(ts_gguf_writer_add_u8, uint8_t, TS_GGUF_UINT8)
SCALAR_ADDER(ts_gguf_writer_add_i8, int8_t, TS_GGUF_INT8)
SCALAR_ADDER(ts_gguf_writer_add_u16, uint16_t, TS_GGUF_UINT16)
SCALAR_ADDER(ts_gguf_writer_add_i16, int16_t, TS_GGUF_INT16)
SCALAR_ADDER(ts_gguf_writer_add_i32, int32_t, TS_GGUF_INT32)
SCALAR_ADDER(ts_gguf_writer_add_u64, uint64_t, TS_GGUF_UINT64)
SCALAR_ADDER(ts_gguf_writer_add_i64, int64_t, TS_GGUF_INT64)
SCALAR_ADDER(ts_gguf_writer_add_f32, float, TS_GGUF_FLOAT32)
SCALAR_ADDER(ts_gguf_writer_add_f64, double, TS_GGUF_FLOAT64)
#undef SCALAR_ADDER

int ts_gguf_writer_add_bool(ts_gguf_writer *w, const char *key, bool v) {
    uint8_t b = v ? 1 : 0;
    return add_scalar(w, key, TS_GGUF_BOOL, &b);
}

/* general.alignment decides the tensor offsets, so it is checked and taken here. */
int ts_gguf_writer_add_u32(ts_gguf_writer *w, const char *key, uint32_t v) {
    bool is_alignment = strcmp(key, "general.alignment") == 0;
    if (is_alignment) {
        if (v == 0 || (v & (v - 1)) != 0)
            return ts_error_set(TS_E_INVALID, "key 'general.alignment': %" PRIu32
                                " is not a power of two", v);
        if (w->n_tensors > 0)
            return ts_error_set(TS_E_INVALID, "key 'general.alignment': must be added before "
                                "the first tensor");
    }
    int rc = add_scalar(w, key, TS_GGUF_UINT32, &v);
    if (!rc && is_alignment) w->alignment = v;
    return rc;
}

int ts_gguf_writer_add_str_n(ts_gguf_writer *w, const char *key, const char *v, size_t len) {
    size_t mark = 0;
    int rc = begin_kv(w, key, TS_GGUF_STRING, &mark);
    if (rc) return rc;
    return end_kv(w, mark, append_str(&w->kv_bytes, v, len));
}

int ts_gguf_writer_add_str(ts_gguf_writer *w, const char *key, const char *v) {
    return ts_gguf_writer_add_str_n(w, key, v, strlen(v));
}

/* Appends an array header; arrays of arrays are refused like the reader does. */
static int begin_array(ts_gguf_writer *w, const char *key, ts_gguf_type elem_type, uint64_t n,
                       size_t *mark) {
    if (elem_type != TS_GGUF_STRING && ts_gguf_type_size(elem_type) == 0)
        return ts_error_set(TS_E_INVALID, "key '%s': arrays of %s are not supported", key,
                            ts_gguf_type_name(elem_type));
    int rc = begin_kv(w, key, TS_GGUF_ARRAY, mark);
    if (rc) return rc;
    rc = append_u32(&w->kv_bytes, (uint32_t)elem_type);
    if (!rc) rc = append_u64(&w->kv_bytes, n);
    return rc ? end_kv(w, *mark, rc) : TS_OK;
}

int ts_gguf_writer_add_array(ts_gguf_writer *w, const char *key, ts_gguf_type elem_type,
                             const void *elems, uint64_t n) {
    size_t mark = 0;
    int rc = begin_array(w, key, elem_type, n, &mark);
    if (rc) return rc;
    if (elem_type == TS_GGUF_STRING)
        return end_kv(w, mark, ts_error_set(TS_E_INVALID, "key '%s': use the string-array call", key));
    size_t size = ts_gguf_type_size(elem_type);
    if (n > SIZE_MAX / size)
        return end_kv(w, mark, ts_error_set(TS_E_INVALID, "key '%s': array too large", key));
    return end_kv(w, mark, ts_buf_append(&w->kv_bytes, elems, (size_t)n * size));
}

int ts_gguf_writer_add_str_array(ts_gguf_writer *w, const char *key, const char *const *strs,
                                 uint64_t n) {
    size_t mark = 0;
    int rc = begin_array(w, key, TS_GGUF_STRING, n, &mark);
    for (uint64_t i = 0; !rc && i < n; i++) rc = append_str(&w->kv_bytes, strs[i], strlen(strs[i]));
    return rc ? end_kv(w, mark, rc) : TS_OK;
}

/* Appends the value of a scalar entry read from a file (the key and type are already out). */
static int append_scalar_value(ts_buf *b, const ts_gguf_kv *kv) {
    /* Values are little-endian, so the low bytes of the 64-bit union member are the value. */
    switch (kv->type) {
    case TS_GGUF_STRING: return append_str(b, kv->value.str.data, kv->value.str.len);
    case TS_GGUF_FLOAT32: {
        float f = (float)kv->value.f64;
        return ts_buf_append(b, &f, 4);
    }
    case TS_GGUF_FLOAT64: return ts_buf_append(b, &kv->value.f64, 8);
    case TS_GGUF_INT8: case TS_GGUF_INT16: case TS_GGUF_INT32: case TS_GGUF_INT64:
        return ts_buf_append(b, &kv->value.i64, ts_gguf_type_size(kv->type));
    case TS_GGUF_UINT8: case TS_GGUF_UINT16: case TS_GGUF_UINT32: case TS_GGUF_UINT64:
    case TS_GGUF_BOOL:
        return ts_buf_append(b, &kv->value.u64, ts_gguf_type_size(kv->type));
    case TS_GGUF_ARRAY: break;
    }
    return ts_error_set(TS_E_INVALID, "unknown value type %d", (int)kv->type);
}

static int add_kv_named(ts_gguf_writer *w, const char *key, const ts_gguf_kv *kv) {
    size_t mark = 0;
    int rc;
    if (kv->type == TS_GGUF_ARRAY && kv->elem_type == TS_GGUF_STRING) {
        rc = begin_array(w, key, TS_GGUF_STRING, kv->n_elems, &mark);
        if (rc) return rc;
        for (uint64_t i = 0; !rc && i < kv->n_elems; i++)
            rc = append_str(&w->kv_bytes, kv->strs[i].data, kv->strs[i].len);
        return end_kv(w, mark, rc);
    }
    if (kv->type == TS_GGUF_ARRAY)
        return ts_gguf_writer_add_array(w, key, kv->elem_type, kv->elems, kv->n_elems);
    if (kv->type == TS_GGUF_UINT32) return ts_gguf_writer_add_u32(w, key, (uint32_t)kv->value.u64);
    rc = begin_kv(w, key, kv->type, &mark);
    if (rc) return rc;
    rc = append_scalar_value(&w->kv_bytes, kv);
    return end_kv(w, mark, rc ? ts_error_wrap(rc, "key '%s'", key) : TS_OK);
}

int ts_gguf_writer_add_kv(ts_gguf_writer *w, const ts_gguf_kv *kv) {
    /* Keys from the reader hold no NUL byte, so a C-string copy is the same key. */
    char *key = strndup(kv->key.data, (size_t)kv->key.len);
    if (!key) return ts_error_set(TS_E_NOMEM, "out of memory in the GGUF writer");
    int rc = add_kv_named(w, key, kv);
    free(key);
    return rc;
}

int ts_gguf_writer_copy_kvs(ts_gguf_writer *w, const ts_gguf *src, const char *prefix,
                            size_t *n_copied) {
    size_t plen = prefix ? strlen(prefix) : 0, count = 0;
    for (size_t i = 0; i < ts_gguf_n_kv(src); i++) {
        const ts_gguf_kv *kv = ts_gguf_kv_at(src, i);
        if (plen && (kv->key.len < plen || memcmp(kv->key.data, prefix, plen) != 0)) continue;
        if (ts_gguf_str_eq(kv->key, "general.alignment")) continue;
        int rc = ts_gguf_writer_add_kv(w, kv);
        if (rc) return ts_error_wrap(rc, "copying metadata from %s", ts_gguf_path(src));
        count++;
    }
    if (n_copied) *n_copied = count;
    return TS_OK;
}

/* ---- tensors ---- */

int ts_gguf_writer_add_tensor(ts_gguf_writer *w, const char *name, ts_dtype type, uint32_t n_dims,
                              const int64_t *dims, const void *data) {
    size_t len = strlen(name);
    if (w->file) return ts_error_set(TS_E_INVALID, "tensor '%s': the file is already being written", name);
    if (len == 0 || len > WRITER_MAX_NAME_BYTES)
        return ts_error_set(TS_E_INVALID, "tensor '%.64s': name must be 1 to %d bytes", name,
                            WRITER_MAX_NAME_BYTES);
    if (!ts_dtype_is_known(type))
        return ts_error_set(TS_E_INVALID, "tensor '%s': unknown type id %d", name, (int)type);
    if (n_dims < 1 || n_dims > TS_GGUF_MAX_DIMS)
        return ts_error_set(TS_E_INVALID, "tensor '%s': %" PRIu32 " dimensions (1 to %d allowed)",
                            name, n_dims, TS_GGUF_MAX_DIMS);
    for (size_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return ts_error_set(TS_E_INVALID, "tensor '%s' added twice", name);
    wtensor t = {.type = type, .n_dims = n_dims, .data = data, .offset = w->data_size};
    int64_t rows = 1;
    for (uint32_t d = 0; d < TS_GGUF_MAX_DIMS; d++) {
        t.dims[d] = d < n_dims ? dims[d] : 1;
        if (t.dims[d] < 1)
            return ts_error_set(TS_E_INVALID, "tensor '%s': dimension %" PRIu32 " is %" PRId64,
                                name, d, t.dims[d]);
        if (d > 0 && __builtin_mul_overflow(rows, t.dims[d], &rows))
            return ts_error_set(TS_E_INVALID, "tensor '%s': too many elements", name);
    }
    size_t row_bytes = ts_dtype_row_bytes(type, t.dims[0]);
    if (row_bytes == 0)
        return ts_error_set(TS_E_INVALID, "tensor '%s': first dimension %" PRId64
                            " is not a multiple of the %s block size %d", name, t.dims[0],
                            ts_dtype_name(type), ts_dtype_block_elems(type));
    if (__builtin_mul_overflow(row_bytes, (size_t)rows, &t.n_bytes))
        return ts_error_set(TS_E_INVALID, "tensor '%s': too large", name);
    int rc = grow((void **)&w->tensors, w->n_tensors, &w->cap_tensors, sizeof *w->tensors);
    if (rc) return rc;
    t.name = strdup(name);
    if (!t.name) return ts_error_set(TS_E_NOMEM, "out of memory in the GGUF writer");
    w->tensors[w->n_tensors++] = t;
    w->data_size = align_up(t.offset + t.n_bytes, w->alignment);
    return TS_OK;
}

/* ---- output ---- */

typedef struct sink {
    FILE *file;
    const char *path; /* for messages */
    ts_buf *buf;
} sink;

static int sink_write(sink *s, const void *p, size_t n) {
    if (s->buf) return ts_buf_append(s->buf, p, n);
    if (n && fwrite(p, 1, n, s->file) != n)
        return ts_error_set(TS_E_IO, "%s: write failed: %s", s->path, strerror(errno));
    return TS_OK;
}

static int sink_zeros(sink *s, uint64_t n) {
    static const uint8_t zeros[256];
    while (n > 0) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        int rc = sink_write(s, zeros, k);
        if (rc) return rc;
        n -= k;
    }
    return TS_OK;
}

static uint64_t head_size(const ts_gguf_writer *w) {
    uint64_t n = 24 + w->kv_bytes.len;
    for (size_t i = 0; i < w->n_tensors; i++)
        n += 8 + strlen(w->tensors[i].name) + 4 + 8ull * w->tensors[i].n_dims + 4 + 8;
    return align_up(n, w->alignment);
}

uint64_t ts_gguf_writer_file_size(const ts_gguf_writer *w) { return head_size(w) + w->data_size; }

/* Header, metadata, tensor infos and the padding up to the data section. */
static int write_head(const ts_gguf_writer *w, sink *s) {
    ts_buf b = {0};
    int rc = ts_buf_append(&b, "GGUF", 4);
    if (!rc) rc = append_u32(&b, 3);
    if (!rc) rc = append_u64(&b, w->n_tensors);
    if (!rc) rc = append_u64(&b, w->n_keys);
    if (!rc) rc = ts_buf_append(&b, w->kv_bytes.data, w->kv_bytes.len);
    for (size_t i = 0; !rc && i < w->n_tensors; i++) {
        const wtensor *t = &w->tensors[i];
        rc = append_str(&b, t->name, strlen(t->name));
        if (!rc) rc = append_u32(&b, t->n_dims);
        for (uint32_t d = 0; !rc && d < t->n_dims; d++) rc = append_u64(&b, (uint64_t)t->dims[d]);
        if (!rc) rc = append_u32(&b, (uint32_t)t->type);
        if (!rc) rc = append_u64(&b, t->offset);
    }
    if (!rc) rc = sink_write(s, b.data, b.len);
    if (!rc) rc = sink_zeros(s, head_size(w) - b.len);
    ts_buf_free(&b);
    return rc;
}

static int write_all(const ts_gguf_writer *w, sink *s) {
    for (size_t i = 0; i < w->n_tensors; i++)
        if (!w->tensors[i].data)
            return ts_error_set(TS_E_INVALID, "tensor '%s' has no data (declared for streaming)",
                                w->tensors[i].name);
    int rc = write_head(w, s);
    for (size_t i = 0; !rc && i < w->n_tensors; i++) {
        const wtensor *t = &w->tensors[i];
        rc = sink_write(s, t->data, t->n_bytes);
        if (!rc) rc = sink_zeros(s, align_up(t->n_bytes, w->alignment) - t->n_bytes);
    }
    return rc;
}

int ts_gguf_writer_write_buf(ts_gguf_writer *w, ts_buf *out) {
    sink s = {.buf = out};
    return write_all(w, &s);
}

static int open_partial(ts_gguf_writer *w, const char *path) {
    if (w->file) return ts_error_set(TS_E_INVALID, "%s: a file is already being written", path);
    free(w->path);
    free(w->partial_path);
    w->path = strdup(path);
    w->partial_path = malloc(strlen(path) + sizeof ".partial");
    if (!w->path || !w->partial_path) return ts_error_set(TS_E_NOMEM, "out of memory");
    snprintf(w->partial_path, strlen(path) + sizeof ".partial", "%s.partial", path);
    w->file = fopen(w->partial_path, "wb");
    if (!w->file) return ts_error_set(TS_E_IO, "%s: %s", w->partial_path, strerror(errno));
    w->failed = false;
    w->cur_tensor = 0;
    w->cur_written = 0;
    return TS_OK;
}

static int close_and_rename(ts_gguf_writer *w) {
    FILE *f = w->file;
    w->file = NULL;
    if (fclose(f) != 0) {
        int err = errno;
        remove(w->partial_path);
        return ts_error_set(TS_E_IO, "%s: write failed: %s", w->partial_path, strerror(err));
    }
    if (rename(w->partial_path, w->path) != 0) {
        int err = errno;
        remove(w->partial_path);
        return ts_error_set(TS_E_IO, "%s: cannot rename into place: %s", w->path, strerror(err));
    }
    return TS_OK;
}

int ts_gguf_writer_write_file(ts_gguf_writer *w, const char *path) {
    int rc = open_partial(w, path);
    if (rc) return rc;
    sink s = {.file = w->file, .path = w->partial_path};
    rc = write_all(w, &s);
    if (rc) {
        abandon_file(w);
        return rc;
    }
    return close_and_rename(w);
}

int ts_gguf_writer_begin(ts_gguf_writer *w, const char *path) {
    for (size_t i = 0; i < w->n_tensors; i++)
        if (w->tensors[i].data)
            return ts_error_set(TS_E_INVALID, "tensor '%s': streamed files take every tensor's "
                                "data through ts_gguf_writer_write_data", w->tensors[i].name);
    int rc = open_partial(w, path);
    if (rc) return rc;
    sink s = {.file = w->file, .path = w->partial_path};
    rc = write_head(w, &s);
    if (rc) abandon_file(w);
    return rc;
}

int ts_gguf_writer_write_data(ts_gguf_writer *w, const void *data, size_t n) {
    if (!w->file || w->failed)
        return ts_error_set(TS_E_INVALID, "GGUF writer: write_data without a successful begin");
    sink s = {.file = w->file, .path = w->partial_path};
    const uint8_t *p = data;
    while (n > 0) {
        if (w->cur_tensor >= w->n_tensors) {
            w->failed = true;
            return ts_error_set(TS_E_INVALID, "%s: %zu bytes of data beyond the last tensor",
                                w->path, n);
        }
        const wtensor *t = &w->tensors[w->cur_tensor];
        uint64_t left = t->n_bytes - w->cur_written;
        size_t k = n < left ? n : (size_t)left;
        int rc = sink_write(&s, p, k);
        if (!rc && k == left) rc = sink_zeros(&s, align_up(t->n_bytes, w->alignment) - t->n_bytes);
        if (rc) {
            w->failed = true;
            return rc;
        }
        p += k;
        n -= k;
        w->cur_written += k;
        if (w->cur_written == t->n_bytes) {
            w->cur_tensor++;
            w->cur_written = 0;
        }
    }
    return TS_OK;
}

int ts_gguf_writer_finish(ts_gguf_writer *w) {
    if (!w->file) return ts_error_set(TS_E_INVALID, "GGUF writer: finish without begin");
    if (w->failed) {
        abandon_file(w);
        return ts_error_set(TS_E_INVALID, "%s: an earlier write failed; file removed", w->path);
    }
    if (w->cur_tensor < w->n_tensors) {
        int rc = ts_error_set(TS_E_INVALID, "%s: tensor '%s' got %" PRIu64 " of %zu bytes",
                              w->path, w->tensors[w->cur_tensor].name, w->cur_written,
                              w->tensors[w->cur_tensor].n_bytes);
        abandon_file(w);
        return rc;
    }
    return close_and_rename(w);
}
