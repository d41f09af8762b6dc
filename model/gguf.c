/*
 * gguf.c — see gguf.h.
 *
 * Parsing is one forward pass over the image with a bounds-checked cursor: every read first
 * checks that its bytes are there, and every length or count taken from the file is compared
 * with the bytes that remain before it is used for arithmetic or allocation. The largest
 * allocations are therefore bounded by a small multiple of the file size, whatever the header
 * claims (a metadata entry takes at least 13 bytes, a tensor info at least 32, an element of a
 * string array at least 8).
 *
 * Error messages are built inside out: the low-level readers say what is wrong ("string of N
 * bytes at offset X runs past the end of the file"), the loops add which key or tensor, and
 * the entry point adds the file name, so the user reads one line:
 *   "m.gguf: key 'tokenizer.ggml.tokens': element 7: string of ... runs past the end ..."
 *
 * Lookups by name use an index sorted once at open time (binary search); the same sort finds
 * duplicate keys and tensor names.
 */
#include "model/gguf.h"

#include "common/error.h"
#include "common/mapfile.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the GGUF reader reads little-endian values in place and needs a little-endian host"
#endif

enum {
    GGUF_HEADER_BYTES = 24,       /* magic, version, n_tensors, n_kv */
    GGUF_DEFAULT_ALIGNMENT = 32,
    GGUF_MAX_KEY_BYTES = 65535,   /* the spec's limit for keys */
    GGUF_MIN_KV_BYTES = 13,       /* key length (8) + value type (4) + a 1-byte value */
    GGUF_MIN_TENSOR_BYTES = 32,   /* name length + n_dims + one dim + type + offset */
    GGUF_MAX_NAME_BYTES = 255,    /* what ts_gguf_tensor.name_z can hold */
};

struct ts_gguf {
    char *name; /* the path or the caller's name, for messages */
    const uint8_t *base;
    size_t size;
    ts_mapfile map; /* the mmap'd file (zero for memory images) */
    uint32_t version;
    uint32_t alignment;
    uint64_t data_start;
    size_t n_kv;
    ts_gguf_kv *kvs;
    const ts_gguf_kv **kv_index; /* sorted by key */
    size_t n_tensors;
    ts_gguf_tensor *tensors;
    const ts_gguf_tensor **tensor_index; /* sorted by name */
    void (*release)(void *owner);        /* ts_gguf_assemble's owner of strings and data */
    void *owner;
};

/* ---- bounds-checked reading ---- */

typedef struct cursor {
    const uint8_t *base;
    size_t size;
    size_t pos;
} cursor;

static size_t remaining(const cursor *c) { return c->size - c->pos; }

static int need(const cursor *c, uint64_t n, const char *what) {
    if (n > remaining(c))
        return ts_error_set(TS_E_FORMAT,
                            "truncated: %s needs %" PRIu64 " bytes at offset %zu, file size %zu",
                            what, n, c->pos, c->size);
    return TS_OK;
}

/* Copies n bytes at the cursor into dst (values are little-endian, like the host). */
static int read_raw(cursor *c, void *dst, size_t n, const char *what) {
    int rc = need(c, n, what);
    if (rc) return rc;
    memcpy(dst, c->base + c->pos, n);
    c->pos += n;
    return TS_OK;
}

static int read_u32(cursor *c, uint32_t *v, const char *what) { return read_raw(c, v, 4, what); }
static int read_u64(cursor *c, uint64_t *v, const char *what) { return read_raw(c, v, 8, what); }

static int read_str(cursor *c, ts_gguf_str *s, const char *what) {
    uint64_t len;
    int rc = read_u64(c, &len, what);
    if (rc) return rc;
    if (len > remaining(c))
        return ts_error_set(TS_E_FORMAT,
                            "%s of %" PRIu64 " bytes at offset %zu runs past the end of the file "
                            "(size %zu)",
                            what, len, c->pos, c->size);
    s->data = (const char *)(c->base + c->pos);
    s->len = len;
    c->pos += (size_t)len;
    return TS_OK;
}

/* ---- errors ---- */

/* Copies s into buf for a message: non-printable bytes become '?', long strings are cut. */
static const char *printable(ts_gguf_str s, char *buf, size_t n) {
    size_t limit = n - 4, i = 0;
    for (; i < s.len && i < limit; i++) {
        unsigned char ch = (unsigned char)s.data[i];
        buf[i] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    if (i < s.len) memcpy(buf + i, "...", 3), i += 3;
    buf[i] = '\0';
    return buf;
}

/* Prefixes the current message with the file name. */
static int fail(const ts_gguf *g, int code) { return ts_error_wrap(code, "%s", g->name); }

/* ---- types ---- */

const char *ts_gguf_type_name(ts_gguf_type t) {
    switch (t) {
    case TS_GGUF_UINT8: return "uint8";
    case TS_GGUF_INT8: return "int8";
    case TS_GGUF_UINT16: return "uint16";
    case TS_GGUF_INT16: return "int16";
    case TS_GGUF_UINT32: return "uint32";
    case TS_GGUF_INT32: return "int32";
    case TS_GGUF_FLOAT32: return "float32";
    case TS_GGUF_BOOL: return "bool";
    case TS_GGUF_STRING: return "string";
    case TS_GGUF_ARRAY: return "array";
    case TS_GGUF_UINT64: return "uint64";
    case TS_GGUF_INT64: return "int64";
    case TS_GGUF_FLOAT64: return "float64";
    }
    return "unknown";
}

size_t ts_gguf_type_size(ts_gguf_type t) {
    switch (t) {
    case TS_GGUF_UINT8: case TS_GGUF_INT8: case TS_GGUF_BOOL: return 1;
    case TS_GGUF_UINT16: case TS_GGUF_INT16: return 2;
    case TS_GGUF_UINT32: case TS_GGUF_INT32: case TS_GGUF_FLOAT32: return 4;
    case TS_GGUF_UINT64: case TS_GGUF_INT64: case TS_GGUF_FLOAT64: return 8;
    case TS_GGUF_STRING: case TS_GGUF_ARRAY: return 0;
    }
    return 0;
}

static bool is_unsigned(ts_gguf_type t) {
    return t == TS_GGUF_UINT8 || t == TS_GGUF_UINT16 || t == TS_GGUF_UINT32 || t == TS_GGUF_UINT64;
}

static bool is_signed(ts_gguf_type t) {
    return t == TS_GGUF_INT8 || t == TS_GGUF_INT16 || t == TS_GGUF_INT32 || t == TS_GGUF_INT64;
}

/* Decodes one packed scalar (p holds ts_gguf_type_size(t) bytes) into the value union. */
static void decode_scalar(ts_gguf_type t, const uint8_t *p, ts_gguf_kv *kv) {
    switch (t) {
    case TS_GGUF_UINT8: case TS_GGUF_BOOL: kv->value.u64 = p[0]; break;
    case TS_GGUF_INT8: kv->value.i64 = (int8_t)p[0]; break;
    case TS_GGUF_UINT16: { uint16_t v; memcpy(&v, p, 2); kv->value.u64 = v; break; }
    case TS_GGUF_INT16: { int16_t v; memcpy(&v, p, 2); kv->value.i64 = v; break; }
    case TS_GGUF_UINT32: { uint32_t v; memcpy(&v, p, 4); kv->value.u64 = v; break; }
    case TS_GGUF_INT32: { int32_t v; memcpy(&v, p, 4); kv->value.i64 = v; break; }
    case TS_GGUF_UINT64: memcpy(&kv->value.u64, p, 8); break;
    case TS_GGUF_INT64: memcpy(&kv->value.i64, p, 8); break;
    case TS_GGUF_FLOAT32: { float v; memcpy(&v, p, 4); kv->value.f64 = v; break; }
    case TS_GGUF_FLOAT64: memcpy(&kv->value.f64, p, 8); break;
    case TS_GGUF_STRING: case TS_GGUF_ARRAY: break;
    }
}

/* ---- metadata ---- */

static int parse_array(cursor *c, ts_gguf_kv *kv) {
    uint32_t elem_type;
    uint64_t n;
    int rc = read_u32(c, &elem_type, "array element type");
    if (!rc) rc = read_u64(c, &n, "array length");
    if (rc) return rc;
    if (elem_type == TS_GGUF_ARRAY)
        return ts_error_set(TS_E_UNSUPPORTED, "arrays of arrays are not supported");
    if (elem_type != TS_GGUF_STRING && ts_gguf_type_size((ts_gguf_type)elem_type) == 0)
        return ts_error_set(TS_E_FORMAT, "unknown array element type %" PRIu32, elem_type);
    kv->elem_type = (ts_gguf_type)elem_type;
    kv->n_elems = n;
    kv->elems = c->base + c->pos;
    if (elem_type != TS_GGUF_STRING) {
        size_t size = ts_gguf_type_size((ts_gguf_type)elem_type);
        if (n > remaining(c) / size)
            return ts_error_set(TS_E_FORMAT,
                                "array of %" PRIu64 " %s values at offset %zu runs past the end "
                                "of the file (size %zu)",
                                n, ts_gguf_type_name(kv->elem_type), c->pos, c->size);
        if (elem_type == TS_GGUF_BOOL) {
            for (uint64_t i = 0; i < n; i++)
                if (c->base[c->pos + i] > 1)
                    return ts_error_set(TS_E_FORMAT, "element %" PRIu64 ": bool value %u is not 0 or 1",
                                        i, c->base[c->pos + i]);
        }
        c->pos += (size_t)(n * size);
        return TS_OK;
    }
    /* Every string takes at least its 8-byte length, so n is bounded before we allocate. */
    if (n > remaining(c) / 8)
        return ts_error_set(TS_E_FORMAT,
                            "array of %" PRIu64 " strings at offset %zu cannot fit in the rest of "
                            "the file (%zu bytes)",
                            n, c->pos, remaining(c));
    ts_gguf_str *strs = malloc((size_t)(n ? n : 1) * sizeof *strs);
    if (!strs) return ts_error_set(TS_E_NOMEM, "out of memory for an array of %" PRIu64 " strings", n);
    kv->strs = strs;
    for (uint64_t i = 0; i < n; i++) {
        rc = read_str(c, &strs[i], "string");
        if (rc) return ts_error_wrap(rc, "element %" PRIu64, i);
    }
    return TS_OK;
}

static int parse_value(cursor *c, ts_gguf_kv *kv) {
    uint32_t type;
    int rc = read_u32(c, &type, "value type");
    if (rc) return rc;
    kv->type = (ts_gguf_type)type;
    if (type == TS_GGUF_ARRAY) return parse_array(c, kv);
    if (type == TS_GGUF_STRING) return read_str(c, &kv->value.str, "string value");
    size_t size = ts_gguf_type_size((ts_gguf_type)type);
    if (size == 0) return ts_error_set(TS_E_FORMAT, "unknown value type %" PRIu32, type);
    rc = need(c, size, ts_gguf_type_name(kv->type));
    if (rc) return rc;
    const uint8_t *p = c->base + c->pos;
    if (type == TS_GGUF_BOOL && p[0] > 1)
        return ts_error_set(TS_E_FORMAT, "bool value %u is not 0 or 1", p[0]);
    decode_scalar(kv->type, p, kv);
    c->pos += size;
    return TS_OK;
}

/* Keys and tensor names are looked up as C strings: non-empty, bounded, without NUL bytes. */
static int check_name(ts_gguf_str s, const char *kind, size_t index, uint64_t max) {
    char shown[128];
    printable(s, shown, sizeof shown);
    if (s.len == 0) return ts_error_set(TS_E_FORMAT, "%s #%zu: empty name", kind, index);
    if (s.len > max)
        return ts_error_set(TS_E_FORMAT, "%s #%zu ('%s'): %" PRIu64 " bytes long, the limit is %"
                            PRIu64, kind, index, shown, s.len, max);
    if (memchr(s.data, '\0', (size_t)s.len))
        return ts_error_set(TS_E_FORMAT, "%s #%zu ('%s') contains a NUL byte", kind, index, shown);
    return TS_OK;
}

static int parse_kv(cursor *c, size_t index, ts_gguf_kv *kv) {
    int rc = read_str(c, &kv->key, "string");
    if (rc) return ts_error_wrap(rc, "key #%zu", index);
    rc = check_name(kv->key, "key", index, GGUF_MAX_KEY_BYTES);
    if (rc) return rc;
    rc = parse_value(c, kv);
    if (rc) {
        char shown[128];
        return ts_error_wrap(rc, "key '%s'", printable(kv->key, shown, sizeof shown));
    }
    return TS_OK;
}

/* ---- tensor infos ---- */

static int parse_tensor_info(cursor *c, size_t index, ts_gguf_tensor *t) {
    int rc = read_str(c, &t->name, "name");
    if (rc) return ts_error_wrap(rc, "tensor #%zu", index);
    rc = check_name(t->name, "tensor", index, GGUF_MAX_NAME_BYTES);
    if (rc) return rc;
    char shown[128];
    printable(t->name, shown, sizeof shown);
    memcpy(t->name_z, t->name.data, (size_t)t->name.len);
    t->name_z[t->name.len] = '\0';

    uint32_t n_dims, type;
    rc = read_u32(c, &n_dims, "n_dims");
    if (rc) return ts_error_wrap(rc, "tensor '%s'", shown);
    if (n_dims < 1 || n_dims > TS_GGUF_MAX_DIMS)
        return ts_error_set(TS_E_FORMAT, "tensor '%s': %" PRIu32 " dimensions (expected 1 to %d)",
                            shown, n_dims, TS_GGUF_MAX_DIMS);
    t->n_dims = n_dims;
    int64_t n_elems = 1;
    for (int d = 0; d < TS_GGUF_MAX_DIMS; d++) t->dims[d] = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        uint64_t dim;
        rc = read_u64(c, &dim, "dimension");
        if (rc) return ts_error_wrap(rc, "tensor '%s'", shown);
        if (dim == 0 || dim > INT64_MAX)
            return ts_error_set(TS_E_FORMAT, "tensor '%s': dimension %" PRIu32 " is %" PRIu64
                                " (must be between 1 and 2^63-1)", shown, d, dim);
        t->dims[d] = (int64_t)dim;
        if (__builtin_mul_overflow(n_elems, t->dims[d], &n_elems))
            return ts_error_set(TS_E_FORMAT, "tensor '%s': the element count overflows 64 bits",
                                shown);
    }
    t->n_elems = n_elems;
    rc = read_u32(c, &type, "tensor type");
    if (!rc) rc = read_u64(c, &t->offset, "tensor offset");
    if (rc) return ts_error_wrap(rc, "tensor '%s'", shown);
    if (!ts_dtype_is_known(type)) {
        char names[256];
        const char *ggml = ts_dtype_ggml_name(type);
        ts_dtype_list_names(names, sizeof names);
        return ts_error_set(TS_E_UNSUPPORTED,
                            "tensor '%s': type id %" PRIu32 "%s%s%s is not supported (these are: %s)",
                            shown, type, ggml ? " (" : "", ggml ? ggml : "", ggml ? ")" : "", names);
    }
    t->type = (ts_dtype)type;
    int block = ts_dtype_block_elems(t->type);
    if (t->dims[0] % block != 0)
        return ts_error_set(TS_E_FORMAT, "tensor '%s': first dimension %" PRId64
                            " is not a multiple of the %s block size %d",
                            shown, t->dims[0], ts_dtype_name(t->type), block);
    uint64_t blocks = (uint64_t)(n_elems / block), n_bytes;
    if (__builtin_mul_overflow(blocks, (uint64_t)ts_dtype_block_bytes(t->type), &n_bytes) ||
        n_bytes > SIZE_MAX)
        return ts_error_set(TS_E_FORMAT, "tensor '%s': the byte size overflows", shown);
    t->n_bytes = (size_t)n_bytes;
    return TS_OK;
}

/* Checks a tensor's data range against the alignment and the file and sets its data pointer. */
static int place_tensor(const ts_gguf *g, ts_gguf_tensor *t) {
    char shown[128];
    printable(t->name, shown, sizeof shown);
    if (t->offset % g->alignment != 0)
        return ts_error_set(TS_E_FORMAT, "tensor '%s': data offset %" PRIu64
                            " is not a multiple of the alignment %" PRIu32,
                            shown, t->offset, g->alignment);
    uint64_t start, end;
    if (__builtin_add_overflow(g->data_start, t->offset, &start) ||
        __builtin_add_overflow(start, (uint64_t)t->n_bytes, &end))
        return ts_error_set(TS_E_FORMAT, "tensor '%s': data offset %" PRIu64
                            " + %zu bytes beyond file size %zu", shown, t->offset, t->n_bytes, g->size);
    if (end > g->size)
        return ts_error_set(TS_E_FORMAT, "tensor '%s': data [%" PRIu64 ", %" PRIu64
                            ") beyond file size %zu", shown, start, end, g->size);
    t->data = g->base + start;
    return TS_OK;
}

/* ---- name index ---- */

static int str_cmp(ts_gguf_str a, const char *b, size_t b_len) {
    size_t n = a.len < b_len ? (size_t)a.len : b_len;
    int r = n ? memcmp(a.data, b, n) : 0;
    if (r) return r;
    return a.len < b_len ? -1 : a.len > b_len ? 1 : 0;
}

static int kv_ptr_cmp(const void *a, const void *b) {
    const ts_gguf_kv *x = *(const ts_gguf_kv *const *)a, *y = *(const ts_gguf_kv *const *)b;
    return str_cmp(x->key, y->key.data, (size_t)y->key.len);
}

static int tensor_ptr_cmp(const void *a, const void *b) {
    const ts_gguf_tensor *x = *(const ts_gguf_tensor *const *)a;
    const ts_gguf_tensor *y = *(const ts_gguf_tensor *const *)b;
    return str_cmp(x->name, y->name.data, (size_t)y->name.len);
}

/* Sorts pointers to n items of item_size bytes by their name; returns the index or NULL. */
static const void **build_index(const void *items, size_t n, size_t item_size,
                                int (*cmp)(const void *, const void *)) {
    const void **index = malloc((n ? n : 1) * sizeof *index);
    if (!index) return NULL;
    for (size_t i = 0; i < n; i++) index[i] = (const char *)items + i * item_size;
    if (n > 1) qsort(index, n, sizeof *index, cmp);
    return index;
}

static int build_indexes(ts_gguf *g) {
    char shown[128];
    g->kv_index = (const ts_gguf_kv **)build_index(g->kvs, g->n_kv, sizeof *g->kvs, kv_ptr_cmp);
    g->tensor_index = (const ts_gguf_tensor **)build_index(g->tensors, g->n_tensors,
                                                            sizeof *g->tensors, tensor_ptr_cmp);
    if (!g->kv_index || !g->tensor_index) return ts_error_set(TS_E_NOMEM, "out of memory");
    for (size_t i = 1; i < g->n_kv; i++)
        if (kv_ptr_cmp(&g->kv_index[i - 1], &g->kv_index[i]) == 0)
            return ts_error_set(TS_E_FORMAT, "duplicate key '%s'",
                                printable(g->kv_index[i]->key, shown, sizeof shown));
    for (size_t i = 1; i < g->n_tensors; i++)
        if (tensor_ptr_cmp(&g->tensor_index[i - 1], &g->tensor_index[i]) == 0)
            return ts_error_set(TS_E_FORMAT, "duplicate tensor name '%s'",
                                printable(g->tensor_index[i]->name, shown, sizeof shown));
    return TS_OK;
}

/* ---- the whole file ---- */

static int parse_header(ts_gguf *g, cursor *c, uint64_t *n_tensors, uint64_t *n_kv) {
    if (g->size < 4 || memcmp(g->base, "GGUF", 4) != 0) {
        if (g->size < 4)
            return ts_error_set(TS_E_FORMAT, "not a GGUF file (only %zu bytes)", g->size);
        return ts_error_set(TS_E_FORMAT, "not a GGUF file (magic bytes %02x %02x %02x %02x, "
                            "expected 'GGUF')", g->base[0], g->base[1], g->base[2], g->base[3]);
    }
    c->pos = 4;
    int rc = read_u32(c, &g->version, "header version");
    if (rc) return rc;
    if (g->version == 1)
        return ts_error_set(TS_E_UNSUPPORTED, "GGUF version 1 is not supported (versions 2 and 3 "
                            "are; re-convert the model with a current converter)");
    if (g->version == 0x02000000u || g->version == 0x03000000u)
        return ts_error_set(TS_E_UNSUPPORTED, "big-endian GGUF files are not supported");
    if (g->version != 2 && g->version != 3)
        return ts_error_set(TS_E_UNSUPPORTED, "unknown GGUF version %" PRIu32
                            " (versions 2 and 3 are supported)", g->version);
    rc = read_u64(c, n_tensors, "header tensor count");
    if (!rc) rc = read_u64(c, n_kv, "header key count");
    if (rc) return rc;
    if (*n_kv > remaining(c) / GGUF_MIN_KV_BYTES)
        return ts_error_set(TS_E_FORMAT, "header: %" PRIu64 " metadata keys cannot fit in the "
                            "remaining %zu bytes", *n_kv, remaining(c));
    if (*n_tensors > remaining(c) / GGUF_MIN_TENSOR_BYTES)
        return ts_error_set(TS_E_FORMAT, "header: %" PRIu64 " tensors cannot fit in the "
                            "remaining %zu bytes", *n_tensors, remaining(c));
    return TS_OK;
}

static int read_alignment(ts_gguf *g) {
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const ts_gguf_kv *kv = ts_gguf_find_kv(g, "general.alignment");
    if (!kv) return TS_OK;
    uint32_t a;
    int rc = ts_gguf_get_u32(g, "general.alignment", &a);
    if (rc) return rc; /* the message already names the file */
    if (a == 0 || (a & (a - 1)) != 0)
        return fail(g, ts_error_set(TS_E_FORMAT, "key 'general.alignment': %" PRIu32
                                    " is not a power of two", a));
    g->alignment = a;
    return TS_OK;
}

static int parse(ts_gguf *g) {
    cursor c = {g->base, g->size, 0};
    uint64_t n_tensors = 0, n_kv = 0;
    int rc = parse_header(g, &c, &n_tensors, &n_kv);
    if (rc) return fail(g, rc);

    /* Both counts were checked against the file size above, so these allocations are bounded. */
    g->kvs = calloc((size_t)(n_kv ? n_kv : 1), sizeof *g->kvs);
    g->tensors = calloc((size_t)(n_tensors ? n_tensors : 1), sizeof *g->tensors);
    if (!g->kvs || !g->tensors) return fail(g, ts_error_set(TS_E_NOMEM, "out of memory"));
    for (size_t i = 0; i < n_kv; i++) {
        g->n_kv = i + 1; /* counts the entry being parsed, so close() frees its string array */
        rc = parse_kv(&c, i, &g->kvs[i]);
        if (rc) return fail(g, rc);
    }
    if (n_tensors > remaining(&c) / GGUF_MIN_TENSOR_BYTES)
        return fail(g, ts_error_set(TS_E_FORMAT, "header: %" PRIu64 " tensors cannot fit in the "
                                    "%zu bytes after the metadata", n_tensors, remaining(&c)));
    for (size_t i = 0; i < n_tensors; i++) {
        rc = parse_tensor_info(&c, i, &g->tensors[i]);
        if (rc) return fail(g, rc);
        g->n_tensors = i + 1;
    }
    rc = build_indexes(g);
    if (rc) return fail(g, rc);
    rc = read_alignment(g);
    if (rc) return rc;
    /* c.pos <= size and alignment < 2^32, so this cannot overflow. */
    g->data_start = ((uint64_t)c.pos + g->alignment - 1) / g->alignment * g->alignment;
    for (size_t i = 0; i < g->n_tensors; i++) {
        rc = place_tensor(g, &g->tensors[i]);
        if (rc) return fail(g, rc);
    }
    return TS_OK;
}

static int open_image(const void *data, size_t size, const char *name, ts_mapfile *map,
                      ts_gguf **out) {
    ts_gguf *g = calloc(1, sizeof *g);
    char *name_copy = strdup(name ? name : "(memory)");
    if (!g || !name_copy) {
        free(g);
        free(name_copy);
        ts_mapfile_close(map);
        return ts_error_set(TS_E_NOMEM, "%s: out of memory", name ? name : "(memory)");
    }
    static const uint8_t empty[1];
    g->name = name_copy;
    g->base = data ? data : empty;
    g->size = data ? size : 0;
    if (map) g->map = *map;
    int rc = parse(g);
    if (rc) {
        ts_gguf_close(g);
        return rc;
    }
    *out = g;
    return TS_OK;
}

int ts_gguf_open_memory(const void *data, size_t size, const char *name, ts_gguf **out) {
    *out = NULL;
    return open_image(data, size, name, NULL, out);
}

int ts_gguf_open(const char *path, ts_gguf **out) {
    *out = NULL;
    ts_mapfile map;
    int rc = ts_mapfile_open(path, &map);
    if (rc) return rc;
    return open_image(map.data, map.size, path, &map, out);
}

int ts_gguf_assemble(const char *name, ts_gguf_kv *kvs, size_t n_kv, ts_gguf_tensor *tensors,
                     size_t n_tensors, void (*release)(void *owner), void *owner, ts_gguf **out) {
    *out = NULL;
    ts_gguf *g = calloc(1, sizeof *g);
    char *name_copy = strdup(name);
    if (!g || !name_copy) {
        free(g);
        free(name_copy);
        for (size_t i = 0; i < n_kv; i++) free((void *)kvs[i].strs);
        free(kvs);
        free(tensors);
        if (release) release(owner);
        return ts_error_set(TS_E_NOMEM, "%s: out of memory", name);
    }
    static const uint8_t empty[1];
    *g = (ts_gguf){.name = name_copy, .base = empty, .alignment = GGUF_DEFAULT_ALIGNMENT,
                   .n_kv = n_kv, .kvs = kvs, .n_tensors = n_tensors, .tensors = tensors,
                   .release = release, .owner = owner};
    int rc = build_indexes(g);
    if (rc) {
        rc = fail(g, rc);
        ts_gguf_close(g);
        return rc;
    }
    *out = g;
    return TS_OK;
}

void ts_gguf_close(ts_gguf *g) {
    if (!g) return;
    if (g->release) g->release(g->owner);
    for (size_t i = 0; i < g->n_kv; i++) free((void *)g->kvs[i].strs);
    free(g->kvs);
    free(g->tensors);
    free(g->kv_index);
    free(g->tensor_index);
    ts_mapfile_close(&g->map);
    free(g->name);
    free(g);
}

/* ---- accessors ---- */

const char *ts_gguf_path(const ts_gguf *g) { return g->name; }
uint32_t ts_gguf_version(const ts_gguf *g) { return g->version; }
size_t ts_gguf_file_size(const ts_gguf *g) { return g->size; }
uint32_t ts_gguf_alignment(const ts_gguf *g) { return g->alignment; }
uint64_t ts_gguf_data_offset(const ts_gguf *g) { return g->data_start; }
size_t ts_gguf_n_kv(const ts_gguf *g) { return g->n_kv; }
size_t ts_gguf_n_tensors(const ts_gguf *g) { return g->n_tensors; }

const ts_gguf_kv *ts_gguf_kv_at(const ts_gguf *g, size_t i) {
    return i < g->n_kv ? &g->kvs[i] : NULL;
}

const ts_gguf_tensor *ts_gguf_tensor_at(const ts_gguf *g, size_t i) {
    return i < g->n_tensors ? &g->tensors[i] : NULL;
}

const ts_gguf_kv *ts_gguf_find_kv(const ts_gguf *g, const char *key) {
    size_t len = strlen(key), lo = 0, hi = g->n_kv;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = str_cmp(g->kv_index[mid]->key, key, len);
        if (r == 0) return g->kv_index[mid];
        if (r < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const ts_gguf_tensor *ts_gguf_find_tensor(const ts_gguf *g, const char *name) {
    size_t len = strlen(name), lo = 0, hi = g->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = str_cmp(g->tensor_index[mid]->name, name, len);
        if (r == 0) return g->tensor_index[mid];
        if (r < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

bool ts_gguf_str_eq(ts_gguf_str a, const char *s) { return str_cmp(a, s, strlen(s)) == 0; }

/* ---- typed getters ---- */

static int lookup(const ts_gguf *g, const char *key, const ts_gguf_kv **out) {
    *out = ts_gguf_find_kv(g, key);
    if (!*out) return ts_error_set(TS_E_NOT_FOUND, "%s: missing key '%s'", g->name, key);
    return TS_OK;
}

static int wrong_type(const ts_gguf *g, const ts_gguf_kv *kv, const char *key, const char *expected) {
    if (kv->type == TS_GGUF_ARRAY)
        return ts_error_set(TS_E_FORMAT, "%s: key '%s': expected %s, found array of %s", g->name,
                            key, expected, ts_gguf_type_name(kv->elem_type));
    return ts_error_set(TS_E_FORMAT, "%s: key '%s': expected %s, found %s", g->name, key, expected,
                        ts_gguf_type_name(kv->type));
}

/* Reads an integer value into [min, max]; `expected` names the wanted type in messages. */
static int get_int(const ts_gguf *g, const char *key, int64_t min, uint64_t max,
                   const char *expected, const ts_gguf_kv **kv_out) {
    const ts_gguf_kv *kv;
    int rc = lookup(g, key, &kv);
    if (rc) return rc;
    *kv_out = kv;
    if (is_unsigned(kv->type)) {
        if (kv->value.u64 > max)
            return ts_error_set(TS_E_FORMAT, "%s: key '%s': value %" PRIu64 " out of range for %s",
                                g->name, key, kv->value.u64, expected);
        return TS_OK;
    }
    if (is_signed(kv->type)) {
        if (kv->value.i64 < min || (kv->value.i64 > 0 && (uint64_t)kv->value.i64 > max))
            return ts_error_set(TS_E_FORMAT, "%s: key '%s': value %" PRId64 " out of range for %s",
                                g->name, key, kv->value.i64, expected);
        return TS_OK;
    }
    return wrong_type(g, kv, key, expected);
}

int ts_gguf_get_u32(const ts_gguf *g, const char *key, uint32_t *out) {
    const ts_gguf_kv *kv;
    int rc = get_int(g, key, 0, UINT32_MAX, "uint32", &kv);
    if (rc) return rc;
    *out = is_unsigned(kv->type) ? (uint32_t)kv->value.u64 : (uint32_t)kv->value.i64;
    return TS_OK;
}

int ts_gguf_get_i64(const ts_gguf *g, const char *key, int64_t *out) {
    const ts_gguf_kv *kv;
    int rc = get_int(g, key, INT64_MIN, INT64_MAX, "int64", &kv);
    if (rc) return rc;
    *out = is_unsigned(kv->type) ? (int64_t)kv->value.u64 : kv->value.i64;
    return TS_OK;
}

int ts_gguf_get_f32(const ts_gguf *g, const char *key, float *out) {
    const ts_gguf_kv *kv;
    int rc = lookup(g, key, &kv);
    if (rc) return rc;
    if (kv->type != TS_GGUF_FLOAT32 && kv->type != TS_GGUF_FLOAT64)
        return wrong_type(g, kv, key, "float32");
    *out = (float)kv->value.f64;
    return TS_OK;
}

int ts_gguf_get_bool(const ts_gguf *g, const char *key, bool *out) {
    const ts_gguf_kv *kv;
    int rc = lookup(g, key, &kv);
    if (rc) return rc;
    if (kv->type != TS_GGUF_BOOL) return wrong_type(g, kv, key, "bool");
    *out = kv->value.u64 != 0;
    return TS_OK;
}

int ts_gguf_get_str(const ts_gguf *g, const char *key, ts_gguf_str *out) {
    const ts_gguf_kv *kv;
    int rc = lookup(g, key, &kv);
    if (rc) return rc;
    if (kv->type != TS_GGUF_STRING) return wrong_type(g, kv, key, "string");
    *out = kv->value.str;
    return TS_OK;
}

int ts_gguf_get_array(const ts_gguf *g, const char *key, ts_gguf_type elem_type,
                      const ts_gguf_kv **out) {
    const ts_gguf_kv *kv;
    int rc = lookup(g, key, &kv);
    if (rc) return rc;
    if (kv->type != TS_GGUF_ARRAY || kv->elem_type != elem_type) {
        char expected[48];
        snprintf(expected, sizeof expected, "array of %s", ts_gguf_type_name(elem_type));
        return wrong_type(g, kv, key, expected);
    }
    *out = kv;
    return TS_OK;
}

/* Element i of a numeric array as the value union (the caller checked i < n_elems). */
static ts_gguf_kv array_elem(const ts_gguf_kv *kv, uint64_t i) {
    ts_gguf_kv e = {0};
    size_t size = ts_gguf_type_size(kv->elem_type);
    if (size) decode_scalar(kv->elem_type, (const uint8_t *)kv->elems + i * size, &e);
    return e;
}

float ts_gguf_array_f32(const ts_gguf_kv *kv, uint64_t i) {
    ts_gguf_kv e = array_elem(kv, i);
    if (kv->elem_type == TS_GGUF_FLOAT32 || kv->elem_type == TS_GGUF_FLOAT64) return (float)e.value.f64;
    if (is_signed(kv->elem_type)) return (float)e.value.i64;
    return (float)e.value.u64; /* unsigned and bool; 0 for strings */
}

int64_t ts_gguf_array_i64(const ts_gguf_kv *kv, uint64_t i) {
    ts_gguf_kv e = array_elem(kv, i);
    if (kv->elem_type == TS_GGUF_FLOAT32 || kv->elem_type == TS_GGUF_FLOAT64) {
        double v = e.value.f64; /* truncated toward zero, saturated (float→int is UB outside) */
        if (!(v > -9.2e18)) return v != v ? 0 : INT64_MIN;
        if (v >= 9.2e18) return INT64_MAX;
        return (int64_t)v;
    }
    if (is_signed(kv->elem_type)) return e.value.i64;
    return e.value.u64 > INT64_MAX ? INT64_MAX : (int64_t)e.value.u64;
}
