/*
 * safetensors.h — reading .safetensors files (Hugging Face), zero-copy.
 *
 * Layout: u64 little-endian N, then N bytes of a JSON object, then the data buffer. Each member
 * of the object but "__metadata__" is a tensor:
 *   "model.layers.0.self_attn.q_proj.weight": {"dtype": "BF16", "shape": [576, 576],
 *                                              "data_offsets": [BEGIN, END]}
 * with offsets relative to the start of the data buffer; "__metadata__", when present, is an
 * object of strings (ignored). Shapes are row-major: shape[0] varies slowest (the opposite of
 * GGUF's dims).
 *
 * ts_safetensors_open maps the file read-only and validates the whole header strictly: N within
 * the file and at most 100 MB (the format's own limit), the header valid JSON, an object whose
 * tensor entries have exactly those three members, a dtype the format defines, at most
 * TS_ST_MAX_DIMS non-negative dimensions, 0 <= BEGIN <= END <= data size, END - BEGIN equal to the
 * element count times the element size (a whole number of bytes), no two tensors overlapping, no duplicate or empty names,
 * no NUL in a name. A violation is TS_E_FORMAT naming the file and the tensor:
 *   "model.safetensors: tensor 'lm_head.weight': data_offsets [0, 4096) beyond the data size 100"
 * A path that cannot be read is TS_E_IO. Every defined dtype is accepted here (deciding which
 * ones a model may use is the caller's business); the parser is fuzzed (tests/fuzz/).
 *
 * Names and data point into the reader and stay valid until ts_safetensors_close; the reader is
 * immutable after open and may be read from several threads.
 */
#ifndef TS_MODEL_SAFETENSORS_H
#define TS_MODEL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

enum { TS_ST_MAX_DIMS = 8 };

/* The dtypes of the format. */
typedef enum {
    TS_ST_BOOL,
    TS_ST_U8,
    TS_ST_I8,
    TS_ST_F8_E5M2,
    TS_ST_F8_E4M3,
    TS_ST_I16,
    TS_ST_U16,
    TS_ST_F16,
    TS_ST_BF16,
    TS_ST_I32,
    TS_ST_U32,
    TS_ST_F32,
    TS_ST_F64,
    TS_ST_I64,
    TS_ST_U64,
    TS_ST_F8_E4M3FNUZ,
    TS_ST_F8_E5M2FNUZ,
    TS_ST_F8_E8M0,
    TS_ST_F4, /* two elements per byte */
    TS_ST_C64,
} ts_st_dtype;

typedef struct ts_st_tensor {
    const char *name;   /* NUL-terminated */
    ts_st_dtype dtype;
    uint32_t n_dims;    /* 0 for a scalar */
    int64_t shape[TS_ST_MAX_DIMS]; /* row-major: shape[n_dims - 1] is contiguous */
    int64_t n_elems;
    uint64_t begin;     /* offsets in the data buffer */
    uint64_t end;
    const void *data;   /* in the mapping */
    size_t n_bytes;
    uint64_t file_offset; /* of the first byte, from the start of the file */
} ts_st_tensor;

typedef struct ts_safetensors ts_safetensors;

/* Maps and validates `path`. On failure *out is NULL and the message names the file. */
int ts_safetensors_open(const char *path, ts_safetensors **out);
/* Parses an in-memory image (not copied; must outlive the result); `name` is used in messages.
 * What the fuzzer drives. */
int ts_safetensors_open_memory(const void *data, size_t size, const char *name,
                               ts_safetensors **out);
void ts_safetensors_close(ts_safetensors *st); /* NULL is fine */

const char *ts_safetensors_path(const ts_safetensors *st);
/* Tensors in the order of the header. */
size_t ts_safetensors_n_tensors(const ts_safetensors *st);
const ts_st_tensor *ts_safetensors_tensor_at(const ts_safetensors *st, size_t i);
const ts_st_tensor *ts_safetensors_find(const ts_safetensors *st, const char *name); /* or NULL */

/* "F32", "BF16", ... as the format spells them. */
const char *ts_st_dtype_name(ts_st_dtype t);
/* Bits per element (4 for F4, else a multiple of 8). */
int ts_st_dtype_bits(ts_st_dtype t);

#endif
