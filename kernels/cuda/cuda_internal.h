/*
 * cuda_internal.h — shared by the .cu files of the CUDA backend (kernels/cuda/), nothing else.
 *
 * cuda_backend.cu owns the ts_backend table (memory, batch, weights, GEMM routing, errors);
 * cuda_kernels.cu, cuda_attention.cu and cuda_sample.cu hold the device kernels and the host
 * functions that launch them on the backend's one stream. docs/cuda.md explains the design.
 *
 * Errors. Operations do not return errors (kernels.h); a failed launch or library call records
 * the first failure in the backend (ts_cuda_fail) and sync() reports it, so a fault surfaces at
 * the step's end with the name of the operation that failed.
 */
#ifndef TS_KERNELS_CUDA_CUDA_INTERNAL_H
#define TS_KERNELS_CUDA_CUDA_INTERNAL_H

/* The project's headers are C11; these two keywords have other spellings in C++. */
#ifndef _Noreturn
#define _Noreturn [[noreturn]]
#endif
#ifndef _Static_assert
#define _Static_assert static_assert
#endif
extern "C" {
#include "common/error.h"
#include "kernels/cpu/cpu_batch.h"
#include "kernels/kernels.h"
}

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

/* Numerical constants: part of what each output means (changing one changes the bits). */
enum {
    TS_CUDA_GEMV_MAX_ROWS = 8, /* matmul with n <= this runs our GEMV, larger n cuBLASLt */
    TS_CUDA_ATT_SPLIT = 256,   /* attention keys per split (split s holds keys [256 s, 256 s+256)) */
    TS_CUDA_ATT_KEYS = 32,     /* keys per shared-memory tile (one per lane) */
    TS_CUDA_ATT_ROWS = 4,      /* query rows per attention block */
    TS_CUDA_ATT_HEADS = 4,     /* query heads per attention block (of one KV head) */
    TS_CUDA_MAX_HEAD_DIM = 256,
};

/* One attention tile: up to TS_CUDA_ATT_ROWS consecutive rows of one sequence. */
typedef struct ts_cuda_att_tile {
    int32_t row0;
    int32_t n_rows;
    int32_t n_splits; /* splits of its last (longest) row */
    int32_t pad;
} ts_cuda_att_tile;

/* The step's batch in device memory (one allocation, uploaded by set_batch). */
typedef struct ts_cuda_batch_dev {
    int32_t *tokens;     /* [n_tokens] */
    int32_t *pos;        /* [n_tokens] */
    int32_t *row_block0; /* [n_tokens] index in block_ids of the row's block table */
    int32_t *logit_rows; /* [n_logit_rows] */
    int32_t *block_ids;  /* [n_block_ids] */
    ts_cuda_att_tile *tiles;
    int32_t n_tiles;
    int32_t max_tile_splits;
} ts_cuda_batch_dev;

typedef struct cuda_backend cuda_backend;

/* Records the first failure of an operation (what + CUDA's text); sync() returns it. */
void ts_cuda_fail(cuda_backend *c, const char *what, const char *detail);
/* Checks cudaGetLastError after a launch; records a failure. */
void ts_cuda_check_launch(cuda_backend *c, const char *what);
cudaStream_t ts_cuda_stream(cuda_backend *c);
const ts_cuda_batch_dev *ts_cuda_batch(cuda_backend *c);
const ts_cpu_batch *ts_cuda_host_batch(cuda_backend *c);
/* Scratch in device memory that only grows (slot 0..TS_CUDA_SCRATCH_SLOTS-1); NULL with a
 * failure recorded when the budget or the device is exhausted. */
enum { TS_CUDA_SCRATCH_SLOTS = 8 };
void *ts_cuda_scratch(cuda_backend *c, int slot, size_t bytes);
/* Pinned host staging (slot 0: results of argmax/sample; slot 1: sampling parameters). */
void *ts_cuda_pinned(cuda_backend *c, int slot, size_t bytes);

/* ---- cuda_kernels.cu ---- */
void ts_cuda_embed(cuda_backend *c, float *x, const ts_weight *table, int64_t first_row);
void ts_cuda_rmsnorm(cuda_backend *c, float *out, const float *x, const float *w, int32_t n,
                     int32_t dim, float eps);
/* cos/sin table [n_pos][pairs] in device memory, rows by position (see cuda_backend.cu). */
void ts_cuda_rope(cuda_backend *c, float *x, int32_t n_heads, int32_t head_dim, ts_rope_mode mode,
                  int32_t n_dims, const float *cos_table, const float *sin_table);
/* y[i][j] += bias[j] for rows i < n of width `width`. */
void ts_cuda_add_bias(cuda_backend *c, float *y, const float *bias, int32_t n, int32_t width);
void ts_cuda_kv_store(cuda_backend *c, const ts_kv_layer *kv, const float *k, const float *v);
void ts_cuda_silu_mul(cuda_backend *c, float *gate, const float *up, int64_t count);
void ts_cuda_add(cuda_backend *c, float *y, const float *x, int64_t count);
void ts_cuda_logit_rows(cuda_backend *c, float *dst, const float *x, int32_t dim);
/* Row argmax into device arrays index[n], value[n] (lowest index on ties). */
void ts_cuda_argmax_dev(cuda_backend *c, const float *logits, int32_t n, int32_t n_cols,
                        int32_t *index, float *value);
/* y[n][rows] = x · Wᵀ for n <= TS_CUDA_GEMV_MAX_ROWS, W f32/f16/bf16 in device form. */
void ts_cuda_gemv(cuda_backend *c, float *y, const float *x, int32_t n, const ts_weight *w);
/* dst[i] = (half or bf16) src[i] for the cuBLASLt inputs. */
void ts_cuda_convert_f32(cuda_backend *c, void *dst, ts_dtype type, const float *src, int64_t count);
/* Dequantizes rows of Q8_0/Q4_0 blocks (packed, src_stride bytes apart) into bf16 rows of
 * dst_stride bytes. */
void ts_cuda_dequant_bf16(cuda_backend *c, void *dst, size_t dst_stride, const void *src,
                          size_t src_stride, ts_dtype type, int64_t rows, int64_t cols);

/* ---- cuda_attention.cu ---- */
void ts_cuda_attention(cuda_backend *c, float *out, const float *q, const ts_kv_layer *kv,
                       int32_t n_heads, float scale);
/* Allows the attention kernel its shared memory (once per backend). */
int ts_cuda_attention_init(void);

/* ---- cuda_sample.cu ---- */
void ts_cuda_sample(cuda_backend *c, const float *logits, int32_t n, int32_t n_cols,
                    const ts_sampling *params, int32_t *token_host, float *logprob_host);

#endif
