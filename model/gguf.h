/*
 * gguf.h — reading GGUF files (versions 2 and 3), zero-copy.
 *
 * ts_gguf_open maps the file read-only (mmap) and parses the header, every metadata key/value
 * and every tensor info, validating as it goes: magic, version, counts, string lengths, array
 * sizes, value types, tensor dimensions, tensor types, alignment and that every tensor's data
 * lies inside the file. Any violation gives TS_E_FORMAT (TS_E_UNSUPPORTED for what is well-formed
 * but not supported: GGUF v1, big-endian files, arrays of arrays, a tensor type other than f32,
 * f16, bf16, q8_0 and q4_0) with one message naming the file and the key or tensor, e.g.
 *   "model.gguf: tensor 'blk.3.attn_q.weight': data [123456, 789012) beyond file size 1000".
 * The parser never reads outside the mapping, whatever the bytes (it is fuzzed: tests/fuzz/), and
 * allocates only in proportion to the bytes the file actually has, whatever counts it claims.
 * Opening a path that cannot be read gives TS_E_IO ("PATH: No such file or directory").
 * Keys are 1 to 65535 bytes and tensor names 1 to 255 bytes, neither with a NUL byte.
 *
 * Strings and tensor data point into the mapping and stay valid until ts_gguf_close. Strings in
 * GGUF are not NUL-terminated: use ts_gguf_str's length. The structure is immutable after open
 * and may be read from several threads.
 *
 * Layout reminder (little-endian): magic "GGUF", u32 version, u64 n_tensors, u64 n_kv
 * (v2 and v3 use u64 counts and string lengths; v1 is refused), then n_kv × {string key,
 * u32 value type, value}, then n_tensors × {string name, u32 n_dims, u64 dims[n_dims],
 * u32 type, u64 offset}, then padding to `general.alignment` (default 32), then tensor data;
 * each tensor's offset is relative to the data start and a multiple of the alignment.
 */
#ifndef TS_MODEL_GGUF_H
#define TS_MODEL_GGUF_H

#include "common/dtype.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    TS_GGUF_UINT8 = 0,
    TS_GGUF_INT8 = 1,
    TS_GGUF_UINT16 = 2,
    TS_GGUF_INT16 = 3,
    TS_GGUF_UINT32 = 4,
    TS_GGUF_INT32 = 5,
    TS_GGUF_FLOAT32 = 6,
    TS_GGUF_BOOL = 7,
    TS_GGUF_STRING = 8,
    TS_GGUF_ARRAY = 9,
    TS_GGUF_UINT64 = 10,
    TS_GGUF_INT64 = 11,
    TS_GGUF_FLOAT64 = 12,
} ts_gguf_type;

typedef struct ts_gguf_str {
    const char *data; /* not NUL-terminated */
    uint64_t len;
} ts_gguf_str;

enum { TS_GGUF_MAX_DIMS = 4 };

typedef struct ts_gguf_kv {
    ts_gguf_str key;
    ts_gguf_type type;
    /* scalars (for TS_GGUF_ARRAY: unused) */
    union {
        uint64_t u64; /* every unsigned integer type and BOOL (0/1) */
        int64_t i64;  /* every signed integer type */
        double f64;   /* FLOAT32 and FLOAT64 */
        ts_gguf_str str;
    } value;
    /* arrays */
    ts_gguf_type elem_type; /* type of the elements; arrays of arrays are refused */
    uint64_t n_elems;
    const void *elems;      /* packed elements in the mapping (numbers and bools) */
    const ts_gguf_str *strs; /* for arrays of strings: n_elems entries (owned by ts_gguf) */
} ts_gguf_kv;

typedef struct ts_gguf_tensor {
    ts_gguf_str name;
    char name_z[256];  /* the same name, NUL-terminated (GGUF names are at most 64 bytes) */
    uint32_t n_dims;
    int64_t dims[TS_GGUF_MAX_DIMS]; /* dims[0] is the fastest-varying (GGML ne0); unused = 1 */
    ts_dtype type;
    uint64_t offset;   /* relative to the data section */
    const void *data;  /* in the mapping */
    size_t n_bytes;
    int64_t n_elems;
} ts_gguf_tensor;

typedef struct ts_gguf ts_gguf;

/* Maps and validates `path`. On failure *out is NULL and the message names the file. */
int ts_gguf_open(const char *path, ts_gguf **out);
/* Parses an in-memory image (not copied; must outlive the result). `name` is used in messages.
 * Tensor data is aligned in memory only as far as the image itself is (files are mapped at a
 * page boundary). This is what the fuzzer drives. */
int ts_gguf_open_memory(const void *data, size_t size, const char *name, ts_gguf **out);
void ts_gguf_close(ts_gguf *g); /* NULL is fine */
/* The same view of a model stored in another format (model/hf.c: a Hugging Face checkpoint's
 * config.json and safetensors as GGUF keys and tensors), so that everything reading a ts_gguf
 * reads it too. Takes over `kvs` and `tensors` (malloc'd; freed by ts_gguf_close, as are
 * kvs[i].strs); the strings and tensor data they point to belong to `owner`, which
 * `release(owner)` frees at ts_gguf_close (also when this fails). Duplicate keys or tensor names
 * are TS_E_FORMAT. The result reports version 0, file size 0 and data offset 0. */
int ts_gguf_assemble(const char *name, ts_gguf_kv *kvs, size_t n_kv, ts_gguf_tensor *tensors,
                     size_t n_tensors, void (*release)(void *owner), void *owner, ts_gguf **out);

const char *ts_gguf_path(const ts_gguf *g);
uint32_t ts_gguf_version(const ts_gguf *g);
size_t ts_gguf_file_size(const ts_gguf *g);
uint32_t ts_gguf_alignment(const ts_gguf *g);
/* File offset of the data section (tensor offsets are relative to it). */
uint64_t ts_gguf_data_offset(const ts_gguf *g);

size_t ts_gguf_n_kv(const ts_gguf *g);
const ts_gguf_kv *ts_gguf_kv_at(const ts_gguf *g, size_t i);
const ts_gguf_kv *ts_gguf_find_kv(const ts_gguf *g, const char *key); /* NULL if absent */

size_t ts_gguf_n_tensors(const ts_gguf *g);
const ts_gguf_tensor *ts_gguf_tensor_at(const ts_gguf *g, size_t i);
const ts_gguf_tensor *ts_gguf_find_tensor(const ts_gguf *g, const char *name); /* NULL if absent */

/* Typed metadata getters. Integers convert between integer types when the value fits; a float
 * getter accepts FLOAT32/FLOAT64. TS_E_NOT_FOUND if absent ("FILE: missing key 'K'"),
 * TS_E_FORMAT if of another type or out of range ("FILE: key 'K': expected u32, found string"). */
int ts_gguf_get_u32(const ts_gguf *g, const char *key, uint32_t *out);
int ts_gguf_get_i64(const ts_gguf *g, const char *key, int64_t *out);
int ts_gguf_get_f32(const ts_gguf *g, const char *key, float *out);
int ts_gguf_get_bool(const ts_gguf *g, const char *key, bool *out);
int ts_gguf_get_str(const ts_gguf *g, const char *key, ts_gguf_str *out);
/* An array whose elements have type elem_type (TS_E_FORMAT otherwise). */
int ts_gguf_get_array(const ts_gguf *g, const char *key, ts_gguf_type elem_type,
                      const ts_gguf_kv **out);

/* Element i of a numeric array, converted; i must be < n_elems. */
float ts_gguf_array_f32(const ts_gguf_kv *kv, uint64_t i);
int64_t ts_gguf_array_i64(const ts_gguf_kv *kv, uint64_t i);

/* "uint32", "string", ... */
const char *ts_gguf_type_name(ts_gguf_type t);
/* Bytes of one packed value of type t; 0 for STRING, ARRAY and unknown types. */
size_t ts_gguf_type_size(ts_gguf_type t);

/* True if the string equals the NUL-terminated s. */
bool ts_gguf_str_eq(ts_gguf_str a, const char *s);

#endif
