/*
 * cuda_backend.cu — the ts_backend table for NVIDIA GPUs (kernels/kernels.h, docs/cuda.md).
 *
 * One backend = one device and one stream: every operation is queued on that stream, so a NCCL
 * communicator given ts_backend.device_stream runs its collectives in order with the kernels.
 * Host↔device copies happen only in upload/download, set_batch (the step's layout, one copy),
 * weight_prepare and the host results of argmax/sample.
 *
 * Memory. Every device buffer — weights, KV cache, activations and the backend's own scratch —
 * comes from cuda_alloc, which counts bytes against ts_backend_options.memory_budget (the
 * --device-memory flag; 0 = what the device has) and fails with a message naming the budget.
 *
 * Weights. weight_prepare converts a host view into device rows padded to 16 bytes: f32, f16
 * and bf16 are copied as they are; Q8_0 and Q4_0 are uploaded in chunks and dequantized to bf16
 * on the device (exact per block value, rounded once to bf16); every other quantized type is
 * dequantized on the host by its reference (kernels/quant.h) and uploaded as bf16, the same
 * rounding. (Quantized GEMV kernels on the device are future work: docs/cuda.md.)
 *
 * GEMM. n <= TS_CUDA_GEMV_MAX_ROWS: our GEMV kernel (one warp per output feature, a fixed
 * lane-strided order and butterfly, each row of x independent of the others). Larger n:
 * cuBLASLt, inputs in the weight's type (x converted to bf16/f16; f32 weights stay f32 with
 * CUBLAS_COMPUTE_32F, no TF32), fp32 accumulation, and one algorithm per weight shape, chosen
 * once by the heuristic for n = 512 and reused for every n, so that the kernel — and with it the
 * reduction order of an output element — does not change with the batch; split-K algorithms are
 * excluded (docs/cuda.md says what cuBLAS does and does not promise about this).
 */
#include "kernels/cuda/cuda_internal.h"

extern "C" {
#include "common/fp16.h"
#include "kernels/cpu/ref.h"
#include "kernels/quant.h"
}

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    ALIGN = 256,
    WORKSPACE_BYTES = 32 << 20,
    MAX_ALGOS = 64,
    ALGO_REF_ROWS = 512,       /* the n the fixed GEMM algorithm is chosen for */
    DEQUANT_CHUNK = 64 << 20,  /* bytes of quantized rows uploaded at a time */
};

typedef struct alloc_rec {
    void *ptr;
    size_t bytes;
} alloc_rec;

typedef struct gemm_algo {
    ts_dtype type;
    int64_t rows, cols;
    size_t ld;
    cublasLtMatmulAlgo_t algo;
} gemm_algo;

struct cuda_backend {
    ts_backend base;
    char name[32];
    int device;
    cudaStream_t stream;
    cudaEvent_t batch_copied;
    cublasLtHandle_t lt;
    cublasLtMatmulDesc_t desc;
    void *workspace;

    size_t budget, used;
    alloc_rec *allocs;
    size_t n_allocs, cap_allocs;

    int err_rc;
    char err_msg[512];

    ts_cpu_batch hb;       /* the step's batch on the host (validated, per-row arrays) */
    ts_cuda_batch_dev db;  /* its device copy */
    void *batch_dev;
    size_t batch_dev_cap;
    void *batch_pinned;
    size_t batch_pinned_cap;
    ts_cuda_att_tile *tiles_host;
    size_t tiles_cap;

    void *scratch[TS_CUDA_SCRATCH_SLOTS];
    size_t scratch_cap[TS_CUDA_SCRATCH_SLOTS];
    void *pinned[2];
    size_t pinned_cap[2];

    float *rope_cos, *rope_sin; /* [rope_n_pos][rope.n_dims / 2] each */
    ts_rope rope;               /* the table's angle parameters */
    int32_t rope_n_pos;

    gemm_algo algos[MAX_ALGOS];
    int n_algos;
};

static cuda_backend *cu(ts_backend *be) {
    return (cuda_backend *)be;
}

/* ---- errors ---- */

void ts_cuda_fail(cuda_backend *c, const char *what, const char *detail) {
    if (c->err_rc) return; /* the first failure is the one worth reading */
    c->err_rc = TS_E_INTERNAL;
    snprintf(c->err_msg, sizeof c->err_msg, "%s: %s: %s", c->name, what, detail);
}

static void fail_nomem(cuda_backend *c, const char *what) {
    if (c->err_rc) return;
    c->err_rc = TS_E_NOMEM;
    snprintf(c->err_msg, sizeof c->err_msg, "%s: %s: %s", c->name, what, ts_error_message());
}

void ts_cuda_check_launch(cuda_backend *c, const char *what) {
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) ts_cuda_fail(c, what, cudaGetErrorString(e));
}

cudaStream_t ts_cuda_stream(cuda_backend *c) {
    return c->stream;
}

const ts_cuda_batch_dev *ts_cuda_batch(cuda_backend *c) {
    return &c->db;
}

const ts_cpu_batch *ts_cuda_host_batch(cuda_backend *c) {
    return &c->hb;
}

/* ---- memory ---- */

static size_t cuda_memory_free(ts_backend *be) {
    cuda_backend *c = cu(be);
    cudaSetDevice(c->device);
    size_t free_bytes = 0, total = 0;
    if (cudaMemGetInfo(&free_bytes, &total) != cudaSuccess) {
        cudaGetLastError(); /* clear it: this is a query, not a failure of the backend */
        free_bytes = 0;
    }
    if (!c->budget) return free_bytes;
    size_t rest = c->budget - c->used;
    return free_bytes && free_bytes < rest ? free_bytes : rest;
}

static void *cuda_alloc(ts_backend *be, size_t bytes) {
    cuda_backend *c = cu(be);
    cudaSetDevice(c->device); /* the calling thread may not have made it current */
    if (c->budget && (bytes > c->budget || c->used > c->budget - bytes)) {
        ts_error_set(TS_E_NOMEM,
                     "%s: allocating %zu bytes would exceed the device memory budget of %zu "
                     "bytes (%zu in use; raise --device-memory)",
                     c->name, bytes, c->budget, c->used);
        return NULL;
    }
    if (c->n_allocs == c->cap_allocs) {
        size_t cap = c->cap_allocs ? 2 * c->cap_allocs : 256;
        alloc_rec *a = (alloc_rec *)realloc(c->allocs, cap * sizeof *a);
        if (!a) {
            ts_error_set(TS_E_NOMEM, "%s: out of host memory", c->name);
            return NULL;
        }
        c->allocs = a;
        c->cap_allocs = cap;
    }
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? (bytes + ALIGN - 1) / ALIGN * ALIGN : (size_t)ALIGN);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* an allocation failure is not sticky: clear it */
        ts_error_set(TS_E_NOMEM, "%s: cudaMalloc of %zu bytes failed: %s (%zu bytes in use here)",
                     c->name, bytes, cudaGetErrorString(e), c->used);
        return NULL;
    }
    c->allocs[c->n_allocs++] = (alloc_rec){p, bytes};
    c->used += bytes;
    return p;
}

static void cuda_free(ts_backend *be, void *ptr) {
    cuda_backend *c = cu(be);
    if (!ptr) return;
    for (size_t i = c->n_allocs; i-- > 0;) {
        if (c->allocs[i].ptr != ptr) continue;
        c->used -= c->allocs[i].bytes;
        c->allocs[i] = c->allocs[--c->n_allocs];
        cudaFree(ptr); /* waits for queued work that may still read it */
        return;
    }
    ts_cuda_fail(c, "free", "pointer not allocated by this backend");
}

static void cuda_upload(ts_backend *be, void *dst, const void *src_host, size_t bytes) {
    cuda_backend *c = cu(be);
    if (!bytes) return;
    cudaSetDevice(c->device);
    /* Synchronous for the caller: the host buffer may be reused as soon as this returns. */
    cudaError_t e = cudaMemcpyAsync(dst, src_host, bytes, cudaMemcpyHostToDevice, c->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) ts_cuda_fail(c, "upload", cudaGetErrorString(e));
}

static void cuda_download(ts_backend *be, void *dst_host, const void *src, size_t bytes) {
    cuda_backend *c = cu(be);
    if (!bytes) return;
    cudaSetDevice(c->device);
    cudaError_t e = cudaMemcpyAsync(dst_host, src, bytes, cudaMemcpyDeviceToHost, c->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) ts_cuda_fail(c, "download", cudaGetErrorString(e));
}

static void cuda_memset_zero(ts_backend *be, void *dst, size_t bytes) {
    cuda_backend *c = cu(be);
    if (!bytes) return;
    cudaError_t e = cudaMemsetAsync(dst, 0, bytes, c->stream);
    if (e != cudaSuccess) ts_cuda_fail(c, "memset", cudaGetErrorString(e));
}

void *ts_cuda_scratch(cuda_backend *c, int slot, size_t bytes) {
    if (bytes <= c->scratch_cap[slot]) return c->scratch[slot];
    size_t want = c->scratch_cap[slot] ? 2 * c->scratch_cap[slot] : 1 << 16;
    while (want < bytes)
        want *= 2;
    cudaStreamSynchronize(c->stream); /* queued kernels may still use the old buffer */
    cuda_free(&c->base, c->scratch[slot]);
    c->scratch[slot] = NULL;
    c->scratch_cap[slot] = 0;
    void *p = cuda_alloc(&c->base, want);
    if (!p) { /* the doubling may be what exceeded the budget */
        want = bytes;
        p = cuda_alloc(&c->base, want);
    }
    if (!p) {
        fail_nomem(c, "scratch");
        return NULL;
    }
    c->scratch[slot] = p;
    c->scratch_cap[slot] = want;
    return p;
}

void *ts_cuda_pinned(cuda_backend *c, int slot, size_t bytes) {
    if (bytes <= c->pinned_cap[slot]) return c->pinned[slot];
    size_t want = c->pinned_cap[slot] ? 2 * c->pinned_cap[slot] : 1 << 14;
    while (want < bytes)
        want *= 2;
    cudaStreamSynchronize(c->stream);
    cudaFreeHost(c->pinned[slot]);
    c->pinned[slot] = NULL;
    c->pinned_cap[slot] = 0;
    cudaError_t e = cudaMallocHost(&c->pinned[slot], want);
    if (e != cudaSuccess) {
        c->pinned[slot] = NULL;
        ts_cuda_fail(c, "pinned host buffer", cudaGetErrorString(e));
        return NULL;
    }
    c->pinned_cap[slot] = want;
    return c->pinned[slot];
}

/* ---- weights ---- */

static int sync_error(cuda_backend *c, const char *what) {
    cudaError_t e = cudaStreamSynchronize(c->stream);
    if (e == cudaSuccess) e = cudaGetLastError();
    if (e != cudaSuccess) ts_cuda_fail(c, what, cudaGetErrorString(e));
    if (!c->err_rc) return TS_OK;
    int rc = ts_error_set(c->err_rc, "%s", c->err_msg);
    c->err_rc = 0;
    return rc;
}

/* A quantized weight of a type without a device kernel: each row dequantized on the host by the
 * reference (exact), rounded to bf16 and uploaded, DEQUANT_CHUNK bytes of bf16 rows at a time. */
static int upload_host_dequantized(cuda_backend *c, const ts_weight *host, void *data,
                                   size_t stride) {
    const size_t rows = (size_t)host->rows, cols = (size_t)host->cols;
    size_t chunk_rows = DEQUANT_CHUNK / stride ? DEQUANT_CHUNK / stride : 1;
    if (chunk_rows > rows) chunk_rows = rows;
    float *row = (float *)malloc(cols * sizeof(float));
    uint16_t *bf = (uint16_t *)calloc(chunk_rows, stride);
    if (!row || !bf) {
        free(row);
        free(bf);
        return ts_error_set(TS_E_NOMEM, "%s: staging a %s weight", c->name,
                            ts_dtype_name(host->type));
    }
    for (size_t r0 = 0; r0 < rows && !c->err_rc; r0 += chunk_rows) {
        const size_t nr = rows - r0 < chunk_rows ? rows - r0 : chunk_rows;
        for (size_t r = 0; r < nr; r++) {
            ts_dequantize_row(host->type, (const char *)host->data + (r0 + r) * host->row_stride,
                              row, (int64_t)cols);
            uint16_t *out = (uint16_t *)((char *)bf + r * stride);
            for (size_t k = 0; k < cols; k++) out[k] = ts_f32_to_bf16(row[k]);
        }
        cudaError_t e = cudaMemcpyAsync((char *)data + r0 * stride, bf, nr * stride,
                                        cudaMemcpyHostToDevice, c->stream);
        if (e != cudaSuccess) ts_cuda_fail(c, "uploading a weight", cudaGetErrorString(e));
        cudaStreamSynchronize(c->stream); /* bf is reused for the next chunk */
    }
    free(row);
    free(bf);
    return TS_OK;
}

static int cuda_weight_prepare(ts_backend *be, const ts_weight *host, ts_weight *dst) {
    cuda_backend *c = cu(be);
    const ts_dtype t = host->type;
    if (!ts_dtype_is_known((uint32_t)t))
        return ts_error_set(TS_E_UNSUPPORTED, "%s: weights of type %s", c->name, ts_dtype_name(t));
    if (host->rows < 0 || host->cols < 1 || host->cols % ts_dtype_block_elems(t) != 0)
        return ts_error_set(TS_E_INVALID, "%s: weight of %lld x %lld %s", c->name,
                            (long long)host->rows, (long long)host->cols, ts_dtype_name(t));
    const bool quant = ts_dtype_is_quantized(t);
    const bool device_dequant = t == TS_DTYPE_Q8_0 || t == TS_DTYPE_Q4_0;
    const ts_dtype dt = quant ? TS_DTYPE_BF16 : t;
    const size_t src_row = ts_dtype_row_bytes(t, host->cols);
    const size_t stride = (ts_dtype_row_bytes(dt, host->cols) + 15) / 16 * 16;
    const size_t rows = (size_t)host->rows;
    cudaSetDevice(c->device);
    void *data = cuda_alloc(be, rows * stride);
    if (!data) return ts_error_wrap(TS_E_NOMEM, "weight of %zu x %lld", rows, (long long)host->cols);
    cudaMemsetAsync(data, 0, rows * stride, c->stream); /* the row padding reads as zeros */
    if (!quant && rows > 0) {
        cudaError_t e = cudaMemcpy2DAsync(data, stride, host->data, host->row_stride, src_row, rows,
                                          cudaMemcpyHostToDevice, c->stream);
        if (e != cudaSuccess) ts_cuda_fail(c, "uploading a weight", cudaGetErrorString(e));
    } else if (rows > 0 && !device_dequant) {
        int rc = upload_host_dequantized(c, host, data, stride);
        if (rc) {
            cuda_free(be, data);
            return rc;
        }
    } else if (rows > 0) {
        size_t chunk_rows = DEQUANT_CHUNK / src_row ? DEQUANT_CHUNK / src_row : 1;
        if (chunk_rows > rows) chunk_rows = rows;
        void *tmp = cuda_alloc(be, chunk_rows * src_row);
        if (!tmp) {
            cuda_free(be, data);
            return ts_error_wrap(TS_E_NOMEM, "staging a %s weight", ts_dtype_name(t));
        }
        for (size_t r0 = 0; r0 < rows && !c->err_rc; r0 += chunk_rows) {
            size_t nr = rows - r0 < chunk_rows ? rows - r0 : chunk_rows;
            cudaError_t e = cudaMemcpy2DAsync(tmp, src_row,
                                              (const char *)host->data + r0 * host->row_stride,
                                              host->row_stride, src_row, nr,
                                              cudaMemcpyHostToDevice, c->stream);
            if (e != cudaSuccess) ts_cuda_fail(c, "uploading a weight", cudaGetErrorString(e));
            ts_cuda_dequant_bf16(c, (char *)data + r0 * stride, stride, tmp, src_row, t,
                                 (int64_t)nr, host->cols);
        }
        cudaStreamSynchronize(c->stream); /* the last dequantization still reads tmp */
        cuda_free(be, tmp);
    }
    int rc = sync_error(c, "preparing a weight");
    if (rc) {
        cuda_free(be, data);
        return rc;
    }
    *dst = (ts_weight){.type = dt, .rows = host->rows, .cols = host->cols, .row_stride = stride,
                       .data = data, .owned = data, .panels = NULL};
    return TS_OK;
}

static void cuda_weight_release(ts_backend *be, ts_weight *w) {
    cuda_free(be, w->owned);
    w->owned = NULL;
}

static int cuda_sync(ts_backend *be) {
    return sync_error(cu(be), "sync");
}

/* ---- batch ---- */

static size_t align16(size_t n) {
    return (n + 15) / 16 * 16;
}

/* Attention tiles: consecutive rows of one sequence, TS_CUDA_ATT_ROWS at a time. */
static int build_tiles(cuda_backend *c) {
    const ts_cpu_batch *b = &c->hb;
    size_t n = 0;
    for (int32_t s = 0; s < b->n_seqs; s++)
        n += (size_t)(b->seqs[s].n_rows + TS_CUDA_ATT_ROWS - 1) / TS_CUDA_ATT_ROWS;
    if (n > c->tiles_cap) {
        ts_cuda_att_tile *t = (ts_cuda_att_tile *)realloc(c->tiles_host, 2 * n * sizeof *t);
        if (!t) return ts_error_set(TS_E_NOMEM, "%s: out of host memory", c->name);
        c->tiles_host = t;
        c->tiles_cap = 2 * n;
    }
    int32_t k = 0, max_splits = 1;
    for (int32_t s = 0; s < b->n_seqs; s++) {
        const ts_batch_seq *q = &b->seqs[s];
        for (int32_t r = 0; r < q->n_rows; r += TS_CUDA_ATT_ROWS) {
            int32_t nr = q->n_rows - r < TS_CUDA_ATT_ROWS ? q->n_rows - r : TS_CUDA_ATT_ROWS;
            int32_t last_pos = q->pos0 + r + nr - 1;
            int32_t splits = last_pos / TS_CUDA_ATT_SPLIT + 1;
            c->tiles_host[k++] = (ts_cuda_att_tile){q->row0 + r, nr, splits, 0};
            if (splits > max_splits) max_splits = splits;
        }
    }
    c->db.n_tiles = k;
    c->db.max_tile_splits = max_splits;
    return TS_OK;
}

static int cuda_set_batch(ts_backend *be, const ts_batch *batch) {
    cuda_backend *c = cu(be);
    cudaSetDevice(c->device);
    int rc = ts_cpu_batch_set(&c->hb, batch);
    if (!rc) rc = build_tiles(c);
    if (rc) return rc;
    const ts_cpu_batch *b = &c->hb;
    const size_t nt = (size_t)b->n_tokens * 4;
    const size_t off_pos = align16(nt), off_block0 = off_pos + align16(nt),
                 off_logit = off_block0 + align16(nt),
                 off_blocks = off_logit + align16((size_t)b->n_logit_rows * 4),
                 off_tiles = off_blocks + align16((size_t)b->n_block_ids * 4),
                 total = off_tiles + (size_t)c->db.n_tiles * sizeof(ts_cuda_att_tile);
    /* The staging buffer is reused every step: wait until the previous step's copy left it. */
    cudaEventSynchronize(c->batch_copied);
    if (total > c->batch_pinned_cap) {
        cudaFreeHost(c->batch_pinned);
        c->batch_pinned = NULL;
        c->batch_pinned_cap = 0;
        if (cudaMallocHost(&c->batch_pinned, 2 * total) != cudaSuccess) {
            c->batch_pinned = NULL;
            return ts_error_set(TS_E_NOMEM, "%s: pinned memory for a batch of %d tokens", c->name,
                                b->n_tokens);
        }
        c->batch_pinned_cap = 2 * total;
    }
    if (total > c->batch_dev_cap) {
        cudaStreamSynchronize(c->stream); /* the previous step may still read the old copy */
        cuda_free(be, c->batch_dev);
        c->batch_dev = cuda_alloc(be, 2 * total);
        c->batch_dev_cap = c->batch_dev ? 2 * total : 0;
        if (!c->batch_dev) return ts_error_wrap(TS_E_NOMEM, "the batch of %d tokens", b->n_tokens);
    }
    char *h = (char *)c->batch_pinned, *d = (char *)c->batch_dev;
    int32_t *block0 = (int32_t *)(h + off_block0);
    memcpy(h, b->tokens, nt);
    memcpy(h + off_pos, b->pos, nt);
    for (int32_t r = 0; r < b->n_tokens; r++)
        block0[r] = b->seqs[b->row_seq[r]].block0;
    memcpy(h + off_logit, b->logit_rows, (size_t)b->n_logit_rows * 4);
    memcpy(h + off_blocks, b->block_ids, (size_t)b->n_block_ids * 4);
    memcpy(h + off_tiles, c->tiles_host, (size_t)c->db.n_tiles * sizeof(ts_cuda_att_tile));
    cudaError_t e = cudaMemcpyAsync(d, h, total, cudaMemcpyHostToDevice, c->stream);
    if (e == cudaSuccess) e = cudaEventRecord(c->batch_copied, c->stream);
    if (e != cudaSuccess)
        return ts_error_set(TS_E_INTERNAL, "%s: copying the batch: %s", c->name,
                            cudaGetErrorString(e));
    c->db.tokens = (int32_t *)d;
    c->db.pos = (int32_t *)(d + off_pos);
    c->db.row_block0 = (int32_t *)(d + off_block0);
    c->db.logit_rows = (int32_t *)(d + off_logit);
    c->db.block_ids = (int32_t *)(d + off_blocks);
    c->db.tiles = (ts_cuda_att_tile *)(d + off_tiles);
    return TS_OK;
}

/* ---- operations ---- */

static void cuda_embed(ts_backend *be, float *x, const ts_weight *table, int64_t first_row) {
    ts_cuda_embed(cu(be), x, table, first_row);
}

static void cuda_rmsnorm(ts_backend *be, float *out, const float *x, const float *weight, int32_t n,
                         int32_t dim, float eps) {
    ts_cuda_rmsnorm(cu(be), out, x, weight, n, dim, eps);
}

/* The rope angles of positions 0 .. n_pos-1, computed on the host by the reference function
 * (ts_ref_rope_angles: GGML's recurrence, the C library's cosf/sinf) and kept on the device, so
 * rope is bit-identical to the CPU backends. Grown (doubling) when a longer context appears. */
static bool same_angles(const ts_rope *a, const ts_rope *b) {
    return a->n_dims == b->n_dims && a->theta_base == b->theta_base &&
           a->freq_scale == b->freq_scale && a->freq_factors == b->freq_factors;
}

static bool rope_table(cuda_backend *c, const ts_rope *rope, int32_t max_ctx) {
    bool same = c->rope_cos && same_angles(&c->rope, rope);
    if (same && c->rope_n_pos >= max_ctx) return true;
    int32_t n_pos = same ? c->rope_n_pos : 0;
    if (n_pos < 1024) n_pos = 1024;
    while (n_pos < max_ctx)
        n_pos *= 2;
    const size_t pairs = (size_t)(rope->n_dims / 2), count = (size_t)n_pos * pairs;
    float *host = (float *)malloc(2 * count * sizeof(float) + 1);
    if (!host) {
        ts_cuda_fail(c, "rope", "out of host memory for the angle table");
        return false;
    }
    for (int32_t p = 0; p < n_pos; p++)
        ts_ref_rope_angles(p, rope, host + (size_t)p * pairs, host + count + (size_t)p * pairs);
    cudaStreamSynchronize(c->stream);
    cuda_free(&c->base, c->rope_cos);
    c->rope_cos = c->rope_sin = NULL;
    c->rope_n_pos = 0;
    float *dev = (float *)cuda_alloc(&c->base, 2 * count * sizeof(float) + 1);
    if (!dev) {
        free(host);
        fail_nomem(c, "rope angle table");
        return false;
    }
    cudaMemcpy(dev, host, 2 * count * sizeof(float), cudaMemcpyHostToDevice);
    free(host);
    c->rope_cos = dev;
    c->rope_sin = dev + count;
    c->rope = *rope;
    c->rope_n_pos = n_pos;
    return true;
}

static void cuda_rope(ts_backend *be, float *x, int32_t n_heads, int32_t head_dim,
                      const ts_rope *rope) {
    cuda_backend *c = cu(be);
    if (!rope_table(c, rope, c->hb.max_ctx)) return;
    ts_cuda_rope(c, x, n_heads, head_dim, rope->mode, rope->n_dims, c->rope_cos, c->rope_sin);
}

static void cuda_add_bias(ts_backend *be, float *y, const float *bias, int32_t n, int32_t width) {
    ts_cuda_add_bias(cu(be), y, bias, n, width);
}

static void cuda_kv_store(ts_backend *be, const ts_kv_layer *kv, const float *k, const float *v) {
    ts_cuda_kv_store(cu(be), kv, k, v);
}

static void cuda_attention(ts_backend *be, float *out, const float *q, const ts_kv_layer *kv,
                           int32_t n_heads, float scale) {
    ts_cuda_attention(cu(be), out, q, kv, n_heads, scale);
}

static void cuda_silu_mul(ts_backend *be, float *gate, const float *up, int64_t count) {
    ts_cuda_silu_mul(cu(be), gate, up, count);
}

static void cuda_add(ts_backend *be, float *y, const float *x, int64_t count) {
    ts_cuda_add(cu(be), y, x, count);
}

static void cuda_logit_rows(ts_backend *be, float *dst, const float *x, int32_t dim) {
    ts_cuda_logit_rows(cu(be), dst, x, dim);
}

static void cuda_argmax(ts_backend *be, const float *logits, int32_t n, int32_t n_cols,
                        int32_t *index_host, float *value_host) {
    cuda_backend *c = cu(be);
    char *dev = (char *)ts_cuda_scratch(c, 7, (size_t)n * 8);
    char *host = (char *)ts_cuda_pinned(c, 0, (size_t)n * 8);
    if (!dev || !host) return;
    ts_cuda_argmax_dev(c, logits, n, n_cols, (int32_t *)dev, (float *)(dev + (size_t)n * 4));
    cudaError_t e = cudaMemcpyAsync(host, dev, (size_t)n * 8, cudaMemcpyDeviceToHost, c->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) {
        ts_cuda_fail(c, "argmax", cudaGetErrorString(e));
        return;
    }
    memcpy(index_host, host, (size_t)n * 4);
    if (value_host) memcpy(value_host, host + (size_t)n * 4, (size_t)n * 4);
}

static void cuda_sample(ts_backend *be, const float *logits, int32_t n, int32_t n_cols,
                        const ts_sampling *params, int32_t *token_host, float *logprob_host) {
    ts_cuda_sample(cu(be), logits, n, n_cols, params, token_host, logprob_host);
}

/* ---- GEMM ---- */

static cudaDataType_t cuda_type(ts_dtype t) {
    return t == TS_DTYPE_F32 ? CUDA_R_32F : t == TS_DTYPE_F16 ? CUDA_R_16F : CUDA_R_16BF;
}

/* y[n][N] = x[n][K] · Wᵀ as column-major D (N x n) = op(A)ᵀ B with A = W seen as K x N
 * (lda = row stride in elements) and B = x seen as K x n. */
static bool lt_layouts(const ts_weight *w, int64_t n, cublasLtMatrixLayout_t *a,
                       cublasLtMatrixLayout_t *b, cublasLtMatrixLayout_t *d) {
    const size_t elem = (size_t)ts_dtype_block_bytes(w->type);
    *a = *b = *d = NULL;
    bool ok = cublasLtMatrixLayoutCreate(a, cuda_type(w->type), (uint64_t)w->cols,
                                         (uint64_t)w->rows, (int64_t)(w->row_stride / elem)) ==
                  CUBLAS_STATUS_SUCCESS &&
              cublasLtMatrixLayoutCreate(b, cuda_type(w->type), (uint64_t)w->cols, (uint64_t)n,
                                         w->cols) == CUBLAS_STATUS_SUCCESS &&
              cublasLtMatrixLayoutCreate(d, CUDA_R_32F, (uint64_t)w->rows, (uint64_t)n,
                                         w->rows) == CUBLAS_STATUS_SUCCESS;
    return ok;
}

static void lt_layouts_destroy(cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                               cublasLtMatrixLayout_t d) {
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (d) cublasLtMatrixLayoutDestroy(d);
}

/* The one algorithm used for every n with this weight shape (see the file comment). */
static const cublasLtMatmulAlgo_t *gemm_algo_for(cuda_backend *c, const ts_weight *w) {
    for (int i = 0; i < c->n_algos; i++) {
        const gemm_algo *g = &c->algos[i];
        if (g->type == w->type && g->rows == w->rows && g->cols == w->cols &&
            g->ld == w->row_stride)
            return &g->algo;
    }
    if (c->n_algos == MAX_ALGOS) {
        ts_cuda_fail(c, "matmul", "more distinct weight shapes than the algorithm table holds");
        return NULL;
    }
    cublasLtMatrixLayout_t a, b, d;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t res[16];
    int found = 0;
    uint64_t ws = WORKSPACE_BYTES;
    /* No split-K: each output element is reduced by one thread block walking k in order. */
    uint32_t schemes = CUBLASLT_REDUCTION_SCHEME_NONE;
    bool ok = lt_layouts(w, ALGO_REF_ROWS, &a, &b, &d) &&
              cublasLtMatmulPreferenceCreate(&pref) == CUBLAS_STATUS_SUCCESS &&
              cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                   &ws, sizeof ws) == CUBLAS_STATUS_SUCCESS &&
              cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                                   &schemes,
                                                   sizeof schemes) == CUBLAS_STATUS_SUCCESS &&
              cublasLtMatmulAlgoGetHeuristic(c->lt, c->desc, a, b, d, d, pref, 16, res, &found) ==
                  CUBLAS_STATUS_SUCCESS;
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    lt_layouts_destroy(a, b, d);
    int pick = -1;
    for (int i = 0; ok && i < found && pick < 0; i++) {
        int32_t splits = 1;
        size_t written = 0;
        if (res[i].state != CUBLAS_STATUS_SUCCESS) continue;
        if (cublasLtMatmulAlgoConfigGetAttribute(&res[i].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM,
                                                 &splits, sizeof splits,
                                                 &written) == CUBLAS_STATUS_SUCCESS &&
            splits > 1)
            continue;
        pick = i;
    }
    if (pick < 0) {
        char detail[160];
        snprintf(detail, sizeof detail,
                 "cuBLASLt has no algorithm without split-K for a %s weight of %lld x %lld",
                 ts_dtype_name(w->type), (long long)w->rows, (long long)w->cols);
        ts_cuda_fail(c, "matmul", detail);
        return NULL;
    }
    gemm_algo *g = &c->algos[c->n_algos++];
    *g = (gemm_algo){w->type, w->rows, w->cols, w->row_stride, res[pick].algo};
    return &g->algo;
}

static void cuda_matmul(ts_backend *be, float *y, const float *x, int32_t n, const ts_weight *w) {
    cuda_backend *c = cu(be);
    if (n <= 0 || w->rows == 0) return;
    if (n <= TS_CUDA_GEMV_MAX_ROWS) {
        ts_cuda_gemv(c, y, x, n, w);
        return;
    }
    const cublasLtMatmulAlgo_t *algo = gemm_algo_for(c, w);
    if (!algo) return;
    const void *bmat = x;
    if (w->type != TS_DTYPE_F32) {
        size_t count = (size_t)n * (size_t)w->cols;
        void *xs = ts_cuda_scratch(c, 0, count * 2);
        if (!xs) return;
        ts_cuda_convert_f32(c, xs, w->type, x, (int64_t)count);
        bmat = xs;
    }
    cublasLtMatrixLayout_t a, b, d;
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t st = CUBLAS_STATUS_INTERNAL_ERROR;
    if (lt_layouts(w, n, &a, &b, &d))
        st = cublasLtMatmul(c->lt, c->desc, &one, w->data, a, bmat, b, &zero, y, d, y, d, algo,
                            c->workspace, WORKSPACE_BYTES, c->stream);
    lt_layouts_destroy(a, b, d);
    if (st != CUBLAS_STATUS_SUCCESS) {
        char detail[160];
        snprintf(detail, sizeof detail, "cublasLtMatmul (%s, %d x %lld x %lld): %s",
                 ts_dtype_name(w->type), n, (long long)w->rows, (long long)w->cols,
                 cublasLtGetStatusString(st));
        ts_cuda_fail(c, "matmul", detail);
    }
}

/* ---- lifetime ---- */

static void cuda_destroy(ts_backend *be) {
    if (!be) return;
    cuda_backend *c = cu(be);
    cudaSetDevice(c->device);
    if (c->stream) cudaStreamSynchronize(c->stream);
    for (size_t i = 0; i < c->n_allocs; i++)
        cudaFree(c->allocs[i].ptr); /* scratch, batch, rope, workspace and anything leaked */
    for (int i = 0; i < 2; i++)
        cudaFreeHost(c->pinned[i]);
    cudaFreeHost(c->batch_pinned);
    if (c->desc) cublasLtMatmulDescDestroy(c->desc);
    if (c->lt) cublasLtDestroy(c->lt);
    if (c->batch_copied) cudaEventDestroy(c->batch_copied);
    if (c->stream) cudaStreamDestroy(c->stream);
    ts_cpu_batch_free(&c->hb);
    free(c->tiles_host);
    free(c->allocs);
    free(c);
}

static int create_fail(cuda_backend *c, const char *what, const char *detail) {
    int rc = ts_error_set(TS_E_UNAVAILABLE, "%s: %s: %s", c->name, what, detail);
    cuda_destroy(&c->base);
    return rc;
}

extern "C" int ts_cuda_backend_create(const ts_backend_options *opts, int device,
                                      ts_backend **out) {
    *out = NULL;
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        cudaGetLastError();
        return ts_error_set(TS_E_UNSUPPORTED, "no CUDA device: cudaGetDeviceCount returned %d (%s)",
                            (int)e, e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    }
    if (device >= count)
        return ts_error_set(TS_E_INVALID, "device cuda:%d: this machine has %d CUDA device%s",
                            device, count, count == 1 ? "" : "s");
    cudaDeviceProp prop;
    e = cudaGetDeviceProperties(&prop, device);
    if (e != cudaSuccess)
        return ts_error_set(TS_E_UNAVAILABLE, "cuda:%d: %s", device, cudaGetErrorString(e));
    if (prop.major < 8)
        return ts_error_set(TS_E_UNSUPPORTED,
                            "cuda:%d (%s) has compute capability %d.%d; the CUDA backend needs "
                            "8.0 or newer (bf16)",
                            device, prop.name, prop.major, prop.minor);
    cuda_backend *c = (cuda_backend *)calloc(1, sizeof *c);
    if (!c) return ts_error_set(TS_E_NOMEM, "out of memory");
    c->device = device;
    c->budget = opts ? opts->memory_budget : 0;
    snprintf(c->name, sizeof c->name, "cuda:%d", device);
    if ((e = cudaSetDevice(device)) != cudaSuccess)
        return create_fail(c, "cudaSetDevice", cudaGetErrorString(e));
    if ((e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess)
        return create_fail(c, "creating the stream", cudaGetErrorString(e));
    if ((e = cudaEventCreateWithFlags(&c->batch_copied, cudaEventDisableTiming)) != cudaSuccess)
        return create_fail(c, "creating an event", cudaGetErrorString(e));
    cublasStatus_t st = cublasLtCreate(&c->lt);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescCreate(&c->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    cublasOperation_t ta = CUBLAS_OP_T;
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescSetAttribute(c->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    if (st != CUBLAS_STATUS_SUCCESS)
        return create_fail(c, "cuBLASLt", cublasLtGetStatusString(st));
    if (ts_cuda_attention_init() != 0)
        return create_fail(c, "attention kernel", cudaGetErrorString(cudaGetLastError()));
    c->workspace = cuda_alloc(&c->base, WORKSPACE_BYTES);
    if (!c->workspace) {
        int rc = ts_error_wrap(TS_E_NOMEM, "the cuBLASLt workspace");
        cuda_destroy(&c->base);
        return rc;
    }

    ts_backend *be = &c->base;
    be->name = c->name;
    be->device_stream = (void *)c->stream;
    be->device_index = device;
    be->alloc = cuda_alloc;
    be->free = cuda_free;
    be->upload = cuda_upload;
    be->download = cuda_download;
    be->memset_zero = cuda_memset_zero;
    be->weight_prepare = cuda_weight_prepare;
    be->weight_release = cuda_weight_release;
    be->sync = cuda_sync;
    be->set_batch = cuda_set_batch;
    be->embed = cuda_embed;
    be->rmsnorm = cuda_rmsnorm;
    be->matmul = cuda_matmul;
    be->rope = cuda_rope;
    be->memory_free = cuda_memory_free;
    be->add_bias = cuda_add_bias;
    be->kv_store = cuda_kv_store;
    be->attention = cuda_attention;
    be->silu_mul = cuda_silu_mul;
    be->add = cuda_add;
    be->logit_rows = cuda_logit_rows;
    be->argmax = cuda_argmax;
    be->sample = cuda_sample;
    be->destroy = cuda_destroy;
    *out = be;
    return TS_OK;
}
