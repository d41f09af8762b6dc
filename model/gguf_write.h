/*
 * gguf_write.h — writing GGUF v3 files: metadata of every type, tensors, alignment.
 *
 * A ts_gguf_writer is a builder. Add metadata (scalars, strings, arrays of numbers or strings,
 * or copies of another file's entries) and declare tensors, then either
 *   - write everything at once: ts_gguf_writer_write_file / ts_gguf_writer_write_buf, which need
 *     every tensor's data given at declaration, or
 *   - stream: ts_gguf_writer_begin writes the header, metadata and tensor infos, then
 *     ts_gguf_writer_write_data appends tensor bytes in declaration order (any chunk sizes; the
 *     writer pads between tensors), and ts_gguf_writer_finish checks that every byte came.
 *     Only the current chunk is in memory, so files larger than RAM can be written.
 * Files are written to "PATH.partial" and renamed to PATH only when complete, so a failed or
 * interrupted write never leaves a truncated model under the real name.
 *
 * Metadata is serialised when added, so the writer owns copies of every key, string and array;
 * tensor data passed at declaration is borrowed and must stay valid until the write. The
 * alignment is 32 unless a `general.alignment` uint32 entry (a power of two) is added, which
 * must happen before the first tensor is declared. The writer refuses what the reader would
 * refuse: duplicate keys or tensor names, empty or over-long names, arrays of arrays, bad
 * shapes (TS_E_INVALID, naming the key or tensor). Tests that need broken files patch the bytes
 * of a valid image from ts_gguf_writer_write_buf.
 *
 * Not thread-safe (one owner). Errors follow common/error.h.
 */
#ifndef TS_MODEL_GGUF_WRITE_H
#define TS_MODEL_GGUF_WRITE_H

#include "common/buf.h"
#include "model/gguf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ts_gguf_writer ts_gguf_writer;

int ts_gguf_writer_create(ts_gguf_writer **out);
/* Frees the writer; an unfinished streamed file is removed. NULL is fine. */
void ts_gguf_writer_destroy(ts_gguf_writer *w);

/* ---- metadata (keys are copied; each key at most once) ---- */
int ts_gguf_writer_add_u8(ts_gguf_writer *w, const char *key, uint8_t v);
int ts_gguf_writer_add_i8(ts_gguf_writer *w, const char *key, int8_t v);
int ts_gguf_writer_add_u16(ts_gguf_writer *w, const char *key, uint16_t v);
int ts_gguf_writer_add_i16(ts_gguf_writer *w, const char *key, int16_t v);
int ts_gguf_writer_add_u32(ts_gguf_writer *w, const char *key, uint32_t v);
int ts_gguf_writer_add_i32(ts_gguf_writer *w, const char *key, int32_t v);
int ts_gguf_writer_add_u64(ts_gguf_writer *w, const char *key, uint64_t v);
int ts_gguf_writer_add_i64(ts_gguf_writer *w, const char *key, int64_t v);
int ts_gguf_writer_add_f32(ts_gguf_writer *w, const char *key, float v);
int ts_gguf_writer_add_f64(ts_gguf_writer *w, const char *key, double v);
int ts_gguf_writer_add_bool(ts_gguf_writer *w, const char *key, bool v);
int ts_gguf_writer_add_str(ts_gguf_writer *w, const char *key, const char *v);
int ts_gguf_writer_add_str_n(ts_gguf_writer *w, const char *key, const char *v, size_t len);
/* An array of n packed numbers or bools (elem_type not STRING or ARRAY), little-endian. */
int ts_gguf_writer_add_array(ts_gguf_writer *w, const char *key, ts_gguf_type elem_type,
                             const void *elems, uint64_t n);
/* An array of n NUL-terminated strings. */
int ts_gguf_writer_add_str_array(ts_gguf_writer *w, const char *key, const char *const *strs,
                                 uint64_t n);
/* An entry read from another file, under the same key. */
int ts_gguf_writer_add_kv(ts_gguf_writer *w, const ts_gguf_kv *kv);
/* Every entry of src whose key starts with prefix ("" or NULL: all), in file order. The source's
 * general.alignment is never copied (it describes the source's layout, not ours). Returns the
 * number copied through *n_copied (may be NULL). */
int ts_gguf_writer_copy_kvs(ts_gguf_writer *w, const ts_gguf *src, const char *prefix,
                            size_t *n_copied);

/* ---- tensors ---- */
/* Declares a tensor of n_dims (1..4) dims, fastest first (GGML ne0). dims[0] must be a multiple
 * of the type's block size. data (ts_dtype_row_bytes(type, dims[0]) * rows bytes) is borrowed
 * until the write; pass NULL to stream it later with ts_gguf_writer_write_data. */
int ts_gguf_writer_add_tensor(ts_gguf_writer *w, const char *name, ts_dtype type, uint32_t n_dims,
                              const int64_t *dims, const void *data);

/* ---- output ---- */
/* Writes the whole file (every tensor must have data). */
int ts_gguf_writer_write_file(ts_gguf_writer *w, const char *path);
/* Appends the whole image to out (every tensor must have data). */
int ts_gguf_writer_write_buf(ts_gguf_writer *w, ts_buf *out);

/* Streaming: header, metadata and tensor infos go out now; then the tensors' bytes. */
int ts_gguf_writer_begin(ts_gguf_writer *w, const char *path);
/* Appends n bytes of tensor data; chunks may cross tensor boundaries. TS_E_INVALID if more
 * bytes come than the tensors need. */
int ts_gguf_writer_write_data(ts_gguf_writer *w, const void *data, size_t n);
/* Checks that all tensor bytes were written, flushes and renames the file into place. */
int ts_gguf_writer_finish(ts_gguf_writer *w);

/* Size in bytes of the file the writer would produce now. */
uint64_t ts_gguf_writer_file_size(const ts_gguf_writer *w);

#endif
