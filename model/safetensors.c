/*
 * safetensors.c — see safetensors.h.
 *
 * The header is parsed by common/json into a tree that the reader keeps (tensor names point into
 * it); each tensor entry is then checked on its own (members, dtype, shape, offsets, byte count),
 * and two sorts over the whole table find duplicate names (by name, which is also the lookup
 * index) and overlapping data (by offset). Sizes are checked before any multiplication can
 * overflow: an element count is bounded by the data buffer's size before it is multiplied.
 */
#include "model/safetensors.h"

#include "common/error.h"
#include "common/json.h"
#include "common/mapfile.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ST_MAX_HEADER_BYTES = 100000000 }; /* the format's limit (safetensors' MAX_HEADER_SIZE) */

struct ts_safetensors {
    char *name;
    ts_mapfile map; /* zero for memory images */
    const uint8_t *base; /* the file's first byte */
    const uint8_t *data_start;
    uint64_t data_size;
    ts_json_doc *header;
    size_t n_tensors;
    ts_st_tensor *tensors;           /* header order */
    const ts_st_tensor **by_name;    /* sorted by name */
};

static const struct {
    const char *name;
    int bits;
} dtypes[] = {
    [TS_ST_BOOL] = {"BOOL", 8},          [TS_ST_U8] = {"U8", 8},
    [TS_ST_I8] = {"I8", 8},              [TS_ST_F8_E5M2] = {"F8_E5M2", 8},
    [TS_ST_F8_E4M3] = {"F8_E4M3", 8},    [TS_ST_I16] = {"I16", 16},
    [TS_ST_U16] = {"U16", 16},           [TS_ST_F16] = {"F16", 16},
    [TS_ST_BF16] = {"BF16", 16},         [TS_ST_I32] = {"I32", 32},
    [TS_ST_U32] = {"U32", 32},           [TS_ST_F32] = {"F32", 32},
    [TS_ST_F64] = {"F64", 64},           [TS_ST_I64] = {"I64", 64},
    [TS_ST_U64] = {"U64", 64},           [TS_ST_F8_E4M3FNUZ] = {"F8_E4M3FNUZ", 8},
    [TS_ST_F8_E5M2FNUZ] = {"F8_E5M2FNUZ", 8}, [TS_ST_F8_E8M0] = {"F8_E8M0", 8},
    [TS_ST_F4] = {"F4", 4},              [TS_ST_C64] = {"C64", 64},
};
enum { N_DTYPES = sizeof dtypes / sizeof dtypes[0] };

const char *ts_st_dtype_name(ts_st_dtype t) {
    return (unsigned)t < N_DTYPES ? dtypes[t].name : "unknown";
}

int ts_st_dtype_bits(ts_st_dtype t) {
    return (unsigned)t < N_DTYPES ? dtypes[t].bits : 0;
}

/* ---- one tensor entry ---- */

__attribute__((format(printf, 2, 3))) static int bad(const ts_st_tensor *t, const char *fmt,
                                                     ...) {
    char what[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return ts_error_set(TS_E_FORMAT, "tensor '%.200s': %s", t->name, what);
}

static int parse_dtype(const ts_json *v, ts_st_tensor *t) {
    if (!v || v->type != TS_JSON_STRING) return bad(t, "'dtype' missing or not a string");
    for (int i = 0; i < N_DTYPES; i++) {
        if (!strcmp(v->string, dtypes[i].name) && strlen(dtypes[i].name) == v->length) {
            t->dtype = (ts_st_dtype)i;
            return TS_OK;
        }
    }
    return bad(t, "unknown dtype '%.32s'", v->string);
}

/* A non-negative integer no larger than `max`. */
static bool is_count(const ts_json *v, uint64_t max) {
    return v->type == TS_JSON_NUMBER && v->is_integer && v->integer >= 0 &&
           (uint64_t)v->integer <= max;
}

static int parse_shape(const ts_json *v, uint64_t data_size, ts_st_tensor *t) {
    if (!v || v->type != TS_JSON_ARRAY) return bad(t, "'shape' missing or not an array");
    if (v->length > TS_ST_MAX_DIMS) return bad(t, "'shape' has more than 8 dimensions");
    t->n_dims = (uint32_t)v->length;
    uint64_t limit = 2 * data_size; /* every element takes at least half a byte (F4) */
    uint64_t n = 1;                 /* saturates above limit */
    bool empty = false;
    for (size_t i = 0; i < v->length; i++) {
        if (!is_count(&v->items[i], INT64_MAX))
            return bad(t, "'shape' holds something other than a non-negative integer");
        uint64_t d = (uint64_t)v->items[i].integer;
        t->shape[i] = (int64_t)d;
        if (d == 0) empty = true;
        else n = n > limit / d ? limit + 1 : n * d;
    }
    if (empty) n = 0;
    if (n > limit)
        return bad(t, "the shape holds more elements than the data buffer's %" PRIu64 " bytes can",
                   data_size);
    t->n_elems = (int64_t)n;
    return TS_OK;
}

static int parse_offsets(const ts_json *v, uint64_t data_size, ts_st_tensor *t) {
    if (!v || v->type != TS_JSON_ARRAY || v->length != 2 || !is_count(&v->items[0], INT64_MAX) ||
        !is_count(&v->items[1], INT64_MAX))
        return bad(t, "'data_offsets' must be [BEGIN, END], two non-negative integers");
    t->begin = (uint64_t)v->items[0].integer;
    t->end = (uint64_t)v->items[1].integer;
    if (t->begin > t->end)
        return bad(t, "data_offsets [%" PRIu64 ", %" PRIu64 "): begin after end", t->begin, t->end);
    if (t->end > data_size)
        return bad(t, "data_offsets [%" PRIu64 ", %" PRIu64 ") beyond the data size %" PRIu64,
                   t->begin, t->end, data_size);
    uint64_t bits = (uint64_t)t->n_elems * (uint64_t)ts_st_dtype_bits(t->dtype);
    uint64_t want = bits / 8;
    if (bits % 8 != 0)
        return bad(t, "%" PRId64 " %s elements do not fill whole bytes", t->n_elems,
                   ts_st_dtype_name(t->dtype));
    if (t->end - t->begin != want)
        return bad(t, "data_offsets [%" PRIu64 ", %" PRIu64 ") hold %" PRIu64 " bytes, the %s "
                   "shape needs %" PRIu64, t->begin, t->end, t->end - t->begin,
                   ts_st_dtype_name(t->dtype), want);
    return TS_OK;
}

static int parse_tensor(ts_safetensors *st, const ts_json_member *m, ts_st_tensor *t) {
    t->name = m->key;
    if (m->key_length == 0) return ts_error_set(TS_E_FORMAT, "a tensor has an empty name");
    if (strlen(m->key) != m->key_length) return bad(t, "the name holds a NUL byte");
    const ts_json *v = &m->value;
    if (v->type != TS_JSON_OBJECT) return bad(t, "the entry is not an object");
    for (size_t i = 0; i < v->length; i++) {
        const char *k = v->members[i].key;
        if (strcmp(k, "dtype") && strcmp(k, "shape") && strcmp(k, "data_offsets")) {
            return bad(t, "unknown member '%.32s'", k);
        }
    }
    int rc = parse_dtype(ts_json_get(v, "dtype"), t);
    if (!rc) rc = parse_shape(ts_json_get(v, "shape"), st->data_size, t);
    if (!rc) rc = parse_offsets(ts_json_get(v, "data_offsets"), st->data_size, t);
    if (rc) return rc;
    t->data = st->data_start + t->begin;
    t->n_bytes = (size_t)(t->end - t->begin);
    t->file_offset = (uint64_t)(st->data_start - st->base) + t->begin;
    return TS_OK;
}

static int parse_metadata(const ts_json *v) {
    if (v->type != TS_JSON_OBJECT)
        return ts_error_set(TS_E_FORMAT, "'__metadata__' is not an object");
    for (size_t i = 0; i < v->length; i++)
        if (v->members[i].value.type != TS_JSON_STRING)
            return ts_error_set(TS_E_FORMAT, "'__metadata__': '%.64s' is not a string",
                                v->members[i].key);
    return TS_OK;
}

/* ---- the table ---- */

static int by_name_cmp(const void *a, const void *b) {
    return strcmp((*(const ts_st_tensor *const *)a)->name, (*(const ts_st_tensor *const *)b)->name);
}

static int by_offset_cmp(const void *a, const void *b) {
    const ts_st_tensor *x = *(const ts_st_tensor *const *)a, *y = *(const ts_st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Sorts the name index (finding duplicates), then checks that no two tensors with data share a
 * byte (reusing the index array, sorted by offset, then sorting it back by name). */
static int check_table(ts_safetensors *st) {
    const ts_st_tensor **idx = st->by_name;
    for (size_t i = 0; i < st->n_tensors; i++) idx[i] = &st->tensors[i];
    qsort(idx, st->n_tensors, sizeof *idx, by_offset_cmp);
    const ts_st_tensor *prev = NULL;
    for (size_t i = 0; i < st->n_tensors; i++) {
        if (idx[i]->n_bytes == 0) continue;
        if (prev && idx[i]->begin < prev->end)
            return ts_error_set(TS_E_FORMAT,
                                "tensors '%.200s' [%" PRIu64 ", %" PRIu64 ") and '%.200s' [%" PRIu64
                                ", %" PRIu64 ") overlap",
                                prev->name, prev->begin, prev->end, idx[i]->name, idx[i]->begin,
                                idx[i]->end);
        prev = idx[i];
    }
    qsort(idx, st->n_tensors, sizeof *idx, by_name_cmp);
    for (size_t i = 1; i < st->n_tensors; i++)
        if (!strcmp(idx[i - 1]->name, idx[i]->name))
            return ts_error_set(TS_E_FORMAT, "tensor '%.200s' appears twice", idx[i]->name);
    return TS_OK;
}

static int parse(ts_safetensors *st, const uint8_t *base, size_t size) {
    if (size < 8)
        return ts_error_set(TS_E_FORMAT, "%zu bytes is too short for a safetensors file (the "
                            "8-byte header size is missing)", size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | base[i];
    if (n > size - 8)
        return ts_error_set(TS_E_FORMAT,
                            "header of %" PRIu64 " bytes runs past the end of the file "
                            "(%zu bytes)", n, size);
    if (n > ST_MAX_HEADER_BYTES)
        return ts_error_set(TS_E_FORMAT, "header of %" PRIu64 " bytes is larger than the "
                            "format's limit of %d", n, ST_MAX_HEADER_BYTES);
    if (n < 2) return ts_error_set(TS_E_FORMAT, "header of %" PRIu64 " bytes is not a JSON object", n);
    st->data_start = base + 8 + n;
    st->data_size = size - 8 - n;
    int rc = ts_json_parse((const char *)base + 8, (size_t)n, &st->header);
    if (rc) return ts_error_wrap(rc, "header");
    const ts_json *root = ts_json_root(st->header);
    if (root->type != TS_JSON_OBJECT)
        return ts_error_set(TS_E_FORMAT, "the header is not a JSON object");
    st->tensors = calloc(root->length + 1, sizeof *st->tensors);
    st->by_name = calloc(root->length + 1, sizeof *st->by_name);
    if (!st->tensors || !st->by_name) return ts_error_set(TS_E_NOMEM, "out of memory");
    for (size_t i = 0; i < root->length; i++) {
        const ts_json_member *m = &root->members[i];
        if (!strcmp(m->key, "__metadata__") && m->key_length == 12) {
            rc = parse_metadata(&m->value);
        } else {
            rc = parse_tensor(st, m, &st->tensors[st->n_tensors]);
            st->n_tensors++;
        }
        if (rc) return rc;
    }
    return check_table(st);
}

static int open_image(const void *data, size_t size, const char *name, ts_mapfile *map,
                      ts_safetensors **out) {
    *out = NULL;
    ts_safetensors *st = calloc(1, sizeof *st);
    char *name_copy = strdup(name ? name : "(memory)");
    if (!st || !name_copy) {
        free(st);
        free(name_copy);
        ts_mapfile_close(map);
        return ts_error_set(TS_E_NOMEM, "%s: out of memory", name ? name : "(memory)");
    }
    st->name = name_copy;
    if (map) st->map = *map;
    static const uint8_t empty[1];
    st->base = data ? data : empty;
    int rc = parse(st, st->base, data ? size : 0);
    if (rc) {
        rc = ts_error_wrap(rc, "%s", st->name);
        ts_safetensors_close(st);
        return rc;
    }
    *out = st;
    return TS_OK;
}

int ts_safetensors_open_memory(const void *data, size_t size, const char *name,
                               ts_safetensors **out) {
    return open_image(data, size, name, NULL, out);
}

int ts_safetensors_open(const char *path, ts_safetensors **out) {
    *out = NULL;
    ts_mapfile map;
    int rc = ts_mapfile_open(path, &map);
    if (rc) return rc;
    return open_image(map.data, map.size, path, &map, out);
}

void ts_safetensors_close(ts_safetensors *st) {
    if (!st) return;
    ts_json_doc_free(st->header);
    free(st->tensors);
    free(st->by_name);
    ts_mapfile_close(&st->map);
    free(st->name);
    free(st);
}

const char *ts_safetensors_path(const ts_safetensors *st) { return st->name; }
size_t ts_safetensors_n_tensors(const ts_safetensors *st) { return st->n_tensors; }

const ts_st_tensor *ts_safetensors_tensor_at(const ts_safetensors *st, size_t i) {
    return i < st->n_tensors ? &st->tensors[i] : NULL;
}

const ts_st_tensor *ts_safetensors_find(const ts_safetensors *st, const char *name) {
    ts_st_tensor key = {.name = name};
    const ts_st_tensor *k = &key;
    const ts_st_tensor **hit = bsearch(&k, st->by_name, st->n_tensors, sizeof *st->by_name,
                                       by_name_cmp);
    return hit ? *hit : NULL;
}
