/*
 * kernels.h — the compute backend interface: one table of operations, many implementations.
 *
 * The engine (node/) runs the Llama forward pass by calling the operations of a ts_backend and
 * never asks which device it runs on. kernels/cpu/ fills the table with a scalar reference and
 * SIMD versions (AVX2, AVX-512, chosen at run time) on a persistent thread pool; kernels/cuda/
 * fills it for NVIDIA GPUs. node/ includes only this header.
 *
 * Memory. Every pointer passed to an operation lives in the backend's memory: host memory for
 * the CPU backend, device memory for CUDA. Buffers come from be->alloc; host data crosses with
 * upload/download. Weights are described by ts_weight; weight_prepare turns a host view of a
 * weight (usually a zero-copy view into an mmap'd GGUF file) into the backend's form: on the CPU
 * the same view, plus (SIMD backends) a copy packed in row panels for the matrix kernels; on
 * CUDA a converted copy in device memory.
 *
 * Activations are f32, row-major: a batch of n tokens with width d is float[n][d].
 *
 * The batch. A step processes tokens of several sequences at once (continuous batching): decode
 * sequences contribute one token, prefilling sequences a chunk of their prompt. set_batch() tells
 * the backend the layout once per step; embed, rope, kv_store, attention and logit_rows use it.
 * The rows of one sequence are contiguous, sequences are ordered by row.
 *
 * The paged KV cache. Each layer has K and V pools of fixed-size blocks, laid out
 *   [n_blocks][n_kv_heads][block_size][head_dim]   (element type f32 or f16)
 * so that one head's keys of one block are contiguous. A sequence's block table lists its block
 * ids in position order: position p lives in block table[p / block_size], slot p % block_size.
 *
 * Determinism (a contract every implementation keeps). Each output element is computed by the
 * same sequence of floating-point operations whatever the batch size, the other sequences in the
 * batch, the chunking of a prompt, or the number of threads: reductions run over the reduction
 * axis in a fixed order and are never split across threads. So a sequence gets bit-identical
 * results alone or batched with 63 others, and the same seed gives the same tokens. Different
 * implementations (scalar vs AVX2 vs AVX-512 vs CUDA) may differ within stated tolerances.
 *
 * Errors. Operations are called in a hot loop and do not fail on valid input; their arguments
 * are checked by the caller (the engine validates shapes once at load). Functions returning int
 * follow common/error.h. All functions of one backend are called from one thread at a time.
 */
#ifndef TS_KERNELS_KERNELS_H
#define TS_KERNELS_KERNELS_H

#include "common/dtype.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ts_backend ts_backend;

/* A 2-D weight W[rows][cols]: y = x·Wᵀ maps cols inputs to rows outputs (GGUF ne0 = cols). */
typedef struct ts_weight {
    ts_dtype type;
    int64_t rows;      /* output features */
    int64_t cols;      /* input features; a multiple of the block size for quantized types */
    size_t row_stride; /* bytes from one row to the next (a column shard keeps the full stride) */
    const void *data;  /* backend memory */
    void *owned;       /* backend allocation behind data or panels, if weight_prepare made one */
    /* NULL, or the CPU SIMD backends' packed copy for matmul, made by weight_prepare: panels
     * of TS_PANEL_ROWS rows with k outermost (kernels/cpu/panels.h has the layout of each
     * type). data keeps the row layout (the embedding lookup reads rows). */
    const void *panels;
} ts_weight;

/* Rows per panel of ts_weight.panels: one AVX-512 vector of f32, two AVX2 vectors. */
enum { TS_PANEL_ROWS = 16 };

/* One layer's paged KV pools; see the layout above. */
typedef struct ts_kv_layer {
    void *k;
    void *v;
    ts_dtype type; /* TS_DTYPE_F32 or TS_DTYPE_F16 */
    int32_t n_blocks;
    int32_t block_size;
    int32_t n_kv_heads; /* KV heads held by this rank */
    int32_t head_dim;
} ts_kv_layer;

typedef struct ts_batch_seq {
    int32_t row0;     /* first row of this sequence's tokens in the batch */
    int32_t n_rows;   /* its new tokens in this step, >= 1 */
    int32_t pos0;     /* position of its first new token = tokens already in its KV cache */
    int32_t block0;   /* index of its block table in ts_batch.block_ids */
    int32_t n_blocks; /* n_blocks * block_size >= pos0 + n_rows */
    bool want_logits; /* logit_rows copies its last row */
} ts_batch_seq;

/* Host memory; the backend copies what it needs in set_batch. */
typedef struct ts_batch {
    int32_t n_tokens;
    int32_t n_seqs;
    const int32_t *tokens; /* [n_tokens] token ids */
    const ts_batch_seq *seqs;
    const int32_t *block_ids; /* all block tables, concatenated */
    int32_t n_block_ids;
    int32_t block_size;
} ts_batch;

/* How rotary pairs are formed (GGML's mode values): TS_ROPE_NORMAL rotates adjacent elements
 * (2i, 2i+1) of a head (Llama); TS_ROPE_NEOX rotates (i, i + n_dims/2) (Qwen2, GPT-NeoX). */
typedef enum { TS_ROPE_NORMAL = 0, TS_ROPE_NEOX = 2 } ts_rope_mode;

/* The rotary embedding of a model. Pair i (0 <= i < n_dims / 2) of a head at position p turns
 * by the angle
 *     freq_scale * ((p * theta_base^(-2i / n_dims)) / factor_i),   factor_i = freq_factors[i]
 * (1 when freq_factors is NULL), the first factor computed by GGML's recurrence (the exact
 * definition is ts_ref_rope_angles, kernels/cpu/ref.h). freq_scale < 1 is linear position
 * interpolation; freq_factors are Llama 3.1's per-dimension divisors (`rope_freqs.weight`).
 * Dimensions past n_dims are left as they are. */
typedef struct ts_rope {
    ts_rope_mode mode;
    int32_t n_dims;            /* even, <= head_dim */
    float theta_base;          /* > 0 */
    float freq_scale;          /* > 0; 1 = no scaling */
    const float *freq_factors; /* host memory, n_dims / 2 values > 0, or NULL; lives as long as
                                * the backend uses it (backends cache angles by this pointer) */
} ts_rope;

/* Per-row sampling parameters (host memory). */
typedef struct ts_sampling {
    float temperature;   /* <= 0: greedy (argmax, lowest id on ties) */
    int32_t top_k;       /* <= 0: off */
    float top_p;         /* >= 1: off */
    float min_p;         /* <= 0: off */
    float repetition_penalty; /* 1: off; logit > 0 is divided by it, otherwise multiplied */
    const int32_t *recent;    /* tokens the penalty applies to (each distinct id once) */
    int32_t n_recent;
    /* Additive biases after the penalty: logit[bias_ids[i]] += bias[i] for i < n_bias, in that
     * order (an id may repeat; ids outside the vocabulary are ignored). The scheduler puts
     * presence/frequency penalties and logit_bias here as one list. */
    const int32_t *bias_ids;
    const float *bias;
    int32_t n_bias;
    float uniform;       /* the draw in [0, 1) that picks the token; ignored when greedy */
} ts_sampling;

struct ts_backend {
    const char *name; /* "cpu-avx2", "cpu-scalar", "cuda:0", ... */
    /* CUDA: the cudaStream_t every operation is queued on, so that a NCCL communicator can run
     * its collectives in order with the kernels; NULL for the CPU. */
    void *device_stream;
    int device_index; /* CUDA device ordinal (unused on the CPU) */

    /* ---- memory ---- */
    /* Returns NULL with the error message set when out of memory or over the budget. */
    void *(*alloc)(ts_backend *be, size_t bytes);
    void (*free)(ts_backend *be, void *ptr); /* NULL is fine */
    void (*upload)(ts_backend *be, void *dst, const void *src_host, size_t bytes);
    void (*download)(ts_backend *be, void *dst_host, const void *src, size_t bytes);
    void (*memset_zero)(ts_backend *be, void *dst, size_t bytes);
    /* Bytes this backend could still allocate now: the rest of its memory budget when it has
     * one, else what the device has free (CPU: the host's available memory). 0 when unknown.
     * For sizing defaults (the KV cache); an allocation may still fail. */
    size_t (*memory_free)(ts_backend *be);
    /* Makes a weight usable by this backend from a host view; dst may alias nothing in src. */
    int (*weight_prepare)(ts_backend *be, const ts_weight *host, ts_weight *dst);
    void (*weight_release)(ts_backend *be, ts_weight *w);
    /* Waits for queued work; reports an asynchronous failure (device fault) as an error. */
    int (*sync)(ts_backend *be);

    /* ---- batch ---- */
    int (*set_batch)(ts_backend *be, const ts_batch *batch);

    /* ---- operations (n = rows of the current batch unless stated) ---- */
    /* x[i] = table row (tokens[i] - first_row), or zeros when that row is outside the table
     * (vocab-parallel embedding: each rank holds rows [first_row, first_row + table->rows)). */
    void (*embed)(ts_backend *be, float *x, const ts_weight *table, int64_t first_row);
    /* out[i] = x[i] / sqrt(mean(x[i]^2) + eps) * weight, over rows of width dim; n explicit. */
    void (*rmsnorm)(ts_backend *be, float *out, const float *x, const float *weight, int32_t n,
                    int32_t dim, float eps);
    /* y[n][w->rows] = x[n][w->cols] · Wᵀ; n explicit (the logits use fewer rows than the batch). */
    void (*matmul)(ts_backend *be, float *y, const float *x, int32_t n, const ts_weight *w);
    /* Rotary embedding (see ts_rope) in place on x[n_tokens][n_heads * head_dim], each row at
     * its position from the batch. */
    void (*rope)(ts_backend *be, float *x, int32_t n_heads, int32_t head_dim, const ts_rope *rope);
    /* y[i][j] += bias[j] for rows i < n of width `width` (projection biases, e.g. Qwen2's). */
    void (*add_bias)(ts_backend *be, float *y, const float *bias, int32_t n, int32_t width);
    /* Writes k and v ([n_tokens][n_kv_heads * head_dim]) into the slots of the batch's tokens. */
    void (*kv_store)(ts_backend *be, const ts_kv_layer *kv, const float *k, const float *v);
    /* Causal attention of q ([n_tokens][n_heads * head_dim]) over each sequence's cache,
     * positions 0 .. pos of the query token (kv_store of the step must come first). Query head h
     * uses KV head h / (n_heads / n_kv_heads). softmax(q·k * scale)·v into out (same shape). */
    void (*attention)(ts_backend *be, float *out, const float *q, const ts_kv_layer *kv,
                      int32_t n_heads, float scale);
    /* gate[i] = silu(gate[i]) * up[i] for i < count. */
    void (*silu_mul)(ts_backend *be, float *gate, const float *up, int64_t count);
    /* y[i] += x[i] for i < count. */
    void (*add)(ts_backend *be, float *y, const float *x, int64_t count);
    /* dst[j] = x[last row of the j-th sequence with want_logits], rows of width dim. */
    void (*logit_rows)(ts_backend *be, float *dst, const float *x, int32_t dim);
    /* Row-wise argmax of logits[n][n_cols] into host arrays (lowest index on ties). */
    void (*argmax)(ts_backend *be, const float *logits, int32_t n, int32_t n_cols,
                   int32_t *index_host, float *value_host);
    /* Picks one token per row of logits[n][n_cols] (full vocabulary) by params[row] (see
     * ts_sampling; the exact definition, which every backend follows, is at ts_ref_sample in
     * kernels/cpu/ref.h: penalty, biases, top-k, temperature, softmax, top-p, min-p, draw).
     * logprob_host (may be NULL) receives log softmax(logits)[token] of the unmodified row.
     * Logits are not modified. */
    void (*sample)(ts_backend *be, const float *logits, int32_t n, int32_t n_cols,
                   const ts_sampling *params, int32_t *token_host, float *logprob_host);

    void (*destroy)(ts_backend *be);
};

typedef enum {
    TS_ISA_AUTO = 0,   /* the best the CPU supports */
    TS_ISA_SCALAR = 1, /* the plain reference kernels */
    TS_ISA_AVX2 = 2,
    TS_ISA_AVX512 = 3,
} ts_cpu_isa;

typedef struct ts_backend_options {
    const char *device;  /* "cpu" (default when NULL), "cuda" or "cuda:N" */
    int n_threads;       /* CPU: kernel threads including the caller; <= 0: all online cores */
    ts_cpu_isa isa;      /* CPU only */
    size_t memory_budget; /* bytes this backend may allocate for buffers; 0: unlimited */
} ts_backend_options;

/* Creates a backend. TS_E_UNSUPPORTED when the device or ISA is not available here
 * (e.g. "cuda" in a build without CUDA, or AVX-512 on a CPU without it). */
int ts_backend_create(const ts_backend_options *opts, ts_backend **out);
void ts_backend_destroy(ts_backend *be); /* NULL is fine */

enum { TS_MAX_CUDA_DEVICE = 1024 };
/* The one reading of a CUDA device name: "cuda" (device 0) or "cuda:N" gives 1 with *index set;
 * any other name gives 0; a malformed index TS_E_INVALID ("device 'cuda:x': expected cuda or
 * cuda:N"). */
int ts_backend_cuda_index(const char *device, long *index);
/* The device `offset` places after a CUDA device name ("cuda" is cuda:0): "cuda:2" + 3 gives
 * "cuda:5" in out. For one GPU per rank of a group on one host (rank r: offset r).
 * TS_E_INVALID for a device that is not CUDA or an index past TS_MAX_CUDA_DEVICE. */
int ts_backend_device_offset(const char *device, int offset, char *out, size_t out_bytes);

/* Parses "auto", "scalar", "avx2" or "avx512". */
int ts_cpu_isa_parse(const char *text, ts_cpu_isa *out);
/* The best ISA of this CPU (AVX-512 needs F, BW, VL, DQ and F16C/FMA; AVX2 needs FMA, F16C). */
ts_cpu_isa ts_cpu_isa_detect(void);
/* Whether the CPU runs AVX-512 VNNI on 256-bit registers: ts_cpu_isa_detect() is AVX-512 and
 * CPUID lists AVX512_VNNI (the quantized prefill tiles, kernels/cpu/qdot.h). */
int ts_cpu_has_avx512_vnni(void);
const char *ts_cpu_isa_name(ts_cpu_isa isa);

#endif
