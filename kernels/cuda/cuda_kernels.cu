/*
 * cuda_kernels.cu — the CUDA backend's element-wise, row and GEMV kernels (cuda_internal.h).
 *
 * Built with --fmad=false: a multiply followed by an add stays two roundings unless a kernel
 * writes fmaf, as the CPU kernels are built with -ffp-contract=off. Exactness per operation
 * (docs/cuda.md): embed (f32/f16/bf16 tables), rope, kv_store, add, logit_rows and argmax give
 * the reference's bits; rmsnorm sums squares in double (tree order) and differs from the
 * reference's sequential double sum only below float resolution; silu_mul uses the device expf
 * (2 ulp); the GEMV accumulates in float in a fixed order.
 */
#include "kernels/cuda/cuda_internal.h"

namespace {

const int ROW_THREADS = 256;

__device__ inline float load_elem(const float *p, int64_t i) {
    return p[i];
}
__device__ inline float load_elem(const __half *p, int64_t i) {
    return __half2float(p[i]);
}
__device__ inline float load_elem(const __nv_bfloat16 *p, int64_t i) {
    return __bfloat162float(p[i]);
}

int grid_for(int64_t count, int threads) {
    int64_t blocks = (count + threads - 1) / threads;
    return blocks > 65535 * 16 ? 65535 * 16 : (int)blocks;
}

/* ---- embed ---- */

template <typename T>
__global__ void embed_kernel(float *x, const char *table, size_t stride, int64_t rows, int64_t cols,
                             int64_t first_row, const int32_t *tokens) {
    const int64_t r = (int64_t)tokens[blockIdx.x] - first_row;
    float *out = x + (size_t)blockIdx.x * (size_t)cols;
    const T *src = (const T *)(table + (size_t)(r < 0 ? 0 : r) * stride);
    for (int64_t k = threadIdx.x; k < cols; k += blockDim.x)
        out[k] = r < 0 || r >= rows ? 0.0f : load_elem(src, k);
}

/* ---- rmsnorm ---- */

__global__ void rmsnorm_kernel(float *out, const float *x, const float *w, int32_t dim, float eps) {
    __shared__ double part[ROW_THREADS];
    const float *xi = x + (size_t)blockIdx.x * (size_t)dim;
    float *oi = out + (size_t)blockIdx.x * (size_t)dim;
    double sum = 0.0;
    for (int32_t j = threadIdx.x; j < dim; j += ROW_THREADS)
        sum += (double)xi[j] * (double)xi[j];
    part[threadIdx.x] = sum;
    __syncthreads();
    for (int s = ROW_THREADS / 2; s > 0; s >>= 1) { /* fixed tree: same bits for every batch */
        if ((int)threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    const float scale = 1.0f / sqrtf((float)(part[0] / dim) + eps);
    for (int32_t j = threadIdx.x; j < dim; j += ROW_THREADS)
        oi[j] = xi[j] * scale * w[j];
}

/* ---- rope ---- */

/* Pair i of a head: elements (i * stride, i * stride + offset), as ts_ref_rope_row. */
__global__ void rope_kernel(float *x, const int32_t *pos, int32_t n_heads, int32_t head_dim,
                            int32_t pairs, int32_t stride, int32_t offset, const float *cos_t,
                            const float *sin_t) {
    const int32_t r = blockIdx.x, h = blockIdx.y;
    float *xh = x + ((size_t)r * (size_t)n_heads + (size_t)h) * (size_t)head_dim;
    const float *cv = cos_t + (size_t)pos[r] * (size_t)pairs;
    const float *sv = sin_t + (size_t)pos[r] * (size_t)pairs;
    for (int32_t i = threadIdx.x; i < pairs; i += blockDim.x) {
        float *a = xh + (size_t)i * (size_t)stride, *b = a + offset;
        float x0 = *a, x1 = *b;
        *a = x0 * cv[i] - x1 * sv[i];
        *b = x0 * sv[i] + x1 * cv[i];
    }
}

/* ---- add_bias ---- */

__global__ void add_bias_kernel(float *y, const float *bias, int64_t count, int32_t width) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] += bias[i % width];
}

/* ---- kv_store ---- */

__device__ inline void kv_put(float *pool, size_t at, float v) {
    pool[at] = v;
}
__device__ inline void kv_put(__half *pool, size_t at, float v) {
    pool[at] = __float2half_rn(v);
}

template <typename T>
__global__ void kv_store_kernel(T *kpool, T *vpool, const float *k, const float *v,
                                const int32_t *pos, const int32_t *row_block0,
                                const int32_t *block_ids, int32_t block_size, int32_t n_kv_heads,
                                int32_t head_dim) {
    const int32_t r = blockIdx.x, h = blockIdx.y, p = pos[r];
    const int32_t block = block_ids[row_block0[r] + p / block_size];
    const size_t at =
        (((size_t)block * (size_t)n_kv_heads + (size_t)h) * (size_t)block_size +
         (size_t)(p % block_size)) *
        (size_t)head_dim;
    const size_t src = ((size_t)r * (size_t)n_kv_heads + (size_t)h) * (size_t)head_dim;
    for (int32_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
        kv_put(kpool, at + d, k[src + d]);
        kv_put(vpool, at + d, v[src + d]);
    }
}

/* ---- element-wise ---- */

__global__ void silu_mul_kernel(float *gate, const float *up, int64_t count) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count;
         i += (int64_t)gridDim.x * blockDim.x) {
        float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

__global__ void add_kernel(float *y, const float *x, int64_t count) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = y[i] + x[i];
}

__global__ void logit_rows_kernel(float *dst, const float *x, const int32_t *rows, int32_t dim) {
    const float *src = x + (size_t)rows[blockIdx.x] * (size_t)dim;
    float *out = dst + (size_t)blockIdx.x * (size_t)dim;
    for (int32_t j = threadIdx.x; j < dim; j += blockDim.x)
        out[j] = src[j];
}

/* ---- argmax ---- */

/* (value, index) order: larger value first, then lower index — a total order, so the result
 * does not depend on how the row is split among threads. */
__device__ inline bool better(float v, int32_t i, float bv, int32_t bi) {
    return v > bv || (v == bv && i < bi);
}

__global__ void argmax_kernel(const float *logits, int32_t n_cols, int32_t *index, float *value) {
    __shared__ float sv[ROW_THREADS];
    __shared__ int32_t si[ROW_THREADS];
    const float *row = logits + (size_t)blockIdx.x * (size_t)n_cols;
    float bv = row[0];
    int32_t bi = 0;
    for (int32_t j = threadIdx.x; j < n_cols; j += ROW_THREADS)
        if (better(row[j], j, bv, bi)) {
            bv = row[j];
            bi = j;
        }
    sv[threadIdx.x] = bv;
    si[threadIdx.x] = bi;
    __syncthreads();
    for (int s = ROW_THREADS / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s &&
            better(sv[threadIdx.x + s], si[threadIdx.x + s], sv[threadIdx.x], si[threadIdx.x])) {
            sv[threadIdx.x] = sv[threadIdx.x + s];
            si[threadIdx.x] = si[threadIdx.x + s];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        index[blockIdx.x] = si[0];
        value[blockIdx.x] = sv[0];
    }
}

/* ---- GEMV (decode) ---- */

const int GEMV_WARPS = 8; /* output features per block, one warp each */

/* Eight consecutive weights from a 16-byte aligned address. */
__device__ inline void load8(const float *p, float *w) {
    float4 a = *(const float4 *)p, b = *(const float4 *)(p + 4);
    w[0] = a.x, w[1] = a.y, w[2] = a.z, w[3] = a.w, w[4] = b.x, w[5] = b.y, w[6] = b.z, w[7] = b.w;
}
__device__ inline void load8(const __half *p, float *w) {
    uint4 u = *(const uint4 *)p;
    const __half2 *h = (const __half2 *)&u;
    for (int i = 0; i < 4; i++) {
        float2 f = __half22float2(h[i]);
        w[2 * i] = f.x;
        w[2 * i + 1] = f.y;
    }
}
__device__ inline void load8(const __nv_bfloat16 *p, float *w) {
    uint4 u = *(const uint4 *)p;
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
    for (int i = 0; i < 4; i++) {
        float2 f = __bfloat1622float2(h[i]);
        w[2 * i] = f.x;
        w[2 * i + 1] = f.y;
    }
}

/* y[i][row] for i < n: each lane accumulates chunks of 8 inputs (chunk lane, lane + 32, ...) with
 * one fmaf per input in increasing k, then the inputs past the last full chunk (one per lane),
 * then a butterfly over the 32 lanes. Row i of x meets the same operations whatever n is. */
template <typename T>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_kernel(float *y, const float *x, const char *wdata, size_t stride, int64_t rows,
                int64_t cols, int n, bool x_vec4) {
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (row >= rows) return;
    const T *w = (const T *)(wdata + (size_t)row * stride);
    float acc[TS_CUDA_GEMV_MAX_ROWS];
#pragma unroll
    for (int i = 0; i < TS_CUDA_GEMV_MAX_ROWS; i++)
        acc[i] = 0.0f;
    const int64_t chunks = cols / 8;
#pragma unroll 4
    for (int64_t ch = lane; ch < chunks; ch += 32) {
        float wv[8];
        load8(w + ch * 8, wv);
#pragma unroll
        for (int i = 0; i < TS_CUDA_GEMV_MAX_ROWS; i++) {
            if (i >= n) break;
            const float *xp = x + (size_t)i * (size_t)cols + (size_t)ch * 8;
            float xv[8];
            if (x_vec4) {
                load8(xp, xv);
            } else {
#pragma unroll
                for (int e = 0; e < 8; e++)
                    xv[e] = xp[e];
            }
#pragma unroll
            for (int e = 0; e < 8; e++)
                acc[i] = fmaf(wv[e], xv[e], acc[i]);
        }
    }
    const int64_t k = chunks * 8 + lane;
    if (k < cols) {
        const float wk = load_elem(w, k);
#pragma unroll
        for (int i = 0; i < TS_CUDA_GEMV_MAX_ROWS; i++)
            if (i < n) acc[i] = fmaf(wk, x[(size_t)i * (size_t)cols + (size_t)k], acc[i]);
    }
#pragma unroll
    for (int i = 0; i < TS_CUDA_GEMV_MAX_ROWS; i++) {
        if (i >= n) break;
        float a = acc[i];
        for (int off = 16; off > 0; off >>= 1)
            a += __shfl_xor_sync(0xffffffffu, a, off); /* a + b == b + a: every lane agrees */
        if (lane == 0) y[(size_t)i * (size_t)rows + (size_t)row] = a;
    }
}

/* ---- conversions ---- */

__global__ void convert_half_kernel(__half *dst, const float *src, int64_t count) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count;
         i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = __float2half_rn(src[i]);
}

__global__ void convert_bf16_kernel(__nv_bfloat16 *dst, const float *src, int64_t count) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count;
         i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}

/* One thread per 32-element block; the value is ts_dequantize_row's d * q in float, then
 * rounded once to bf16. */
__global__ void dequant_kernel(__nv_bfloat16 *dst, size_t dst_stride, const unsigned char *src,
                               size_t src_stride, bool q4, int64_t rows, int64_t blocks_per_row) {
    const int64_t total = rows * blocks_per_row;
    for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < total;
         t += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = t / blocks_per_row, b = t % blocks_per_row;
        const unsigned char *blk = src + (size_t)r * src_stride + (size_t)b * (q4 ? 18 : 34);
        const float d = __half2float(__ushort_as_half(*(const unsigned short *)blk));
        __nv_bfloat16 *out =
            (__nv_bfloat16 *)((char *)dst + (size_t)r * dst_stride) + (size_t)b * TS_QK;
        if (q4) {
            for (int i = 0; i < TS_QK / 2; i++) {
                out[i] = __float2bfloat16_rn(d * (float)((blk[2 + i] & 0x0f) - 8));
                out[i + TS_QK / 2] = __float2bfloat16_rn(d * (float)((blk[2 + i] >> 4) - 8));
            }
        } else {
            for (int i = 0; i < TS_QK; i++)
                out[i] = __float2bfloat16_rn(d * (float)(signed char)blk[2 + i]);
        }
    }
}

} // namespace

/* ---- launchers ---- */

void ts_cuda_embed(cuda_backend *c, float *x, const ts_weight *table, int64_t first_row) {
    const ts_cpu_batch *hb = ts_cuda_host_batch(c);
    const ts_cuda_batch_dev *b = ts_cuda_batch(c);
    cudaStream_t s = ts_cuda_stream(c);
    const char *data = (const char *)table->data;
    switch (table->type) {
    case TS_DTYPE_F32:
        embed_kernel<float><<<hb->n_tokens, ROW_THREADS, 0, s>>>(
            x, data, table->row_stride, table->rows, table->cols, first_row, b->tokens);
        break;
    case TS_DTYPE_F16:
        embed_kernel<__half><<<hb->n_tokens, ROW_THREADS, 0, s>>>(
            x, data, table->row_stride, table->rows, table->cols, first_row, b->tokens);
        break;
    case TS_DTYPE_BF16:
        embed_kernel<__nv_bfloat16><<<hb->n_tokens, ROW_THREADS, 0, s>>>(
            x, data, table->row_stride, table->rows, table->cols, first_row, b->tokens);
        break;
    default: ts_cuda_fail(c, "embed", "table not prepared by this backend"); return;
    }
    ts_cuda_check_launch(c, "embed");
}

void ts_cuda_rmsnorm(cuda_backend *c, float *out, const float *x, const float *w, int32_t n,
                     int32_t dim, float eps) {
    if (n <= 0) return;
    rmsnorm_kernel<<<n, ROW_THREADS, 0, ts_cuda_stream(c)>>>(out, x, w, dim, eps);
    ts_cuda_check_launch(c, "rmsnorm");
}

void ts_cuda_rope(cuda_backend *c, float *x, int32_t n_heads, int32_t head_dim, ts_rope_mode mode,
                  int32_t n_dims, const float *cos_table, const float *sin_table) {
    const ts_cpu_batch *hb = ts_cuda_host_batch(c);
    const int32_t pairs = n_dims / 2;
    if (pairs <= 0 || n_heads <= 0) return;
    const int32_t stride = mode == TS_ROPE_NEOX ? 1 : 2, offset = mode == TS_ROPE_NEOX ? pairs : 1;
    dim3 grid((unsigned)hb->n_tokens, (unsigned)n_heads);
    const unsigned threads = pairs < 128 ? (unsigned)(pairs + 31) / 32 * 32 : 128;
    rope_kernel<<<grid, threads, 0, ts_cuda_stream(c)>>>(x, ts_cuda_batch(c)->pos, n_heads,
                                                         head_dim, pairs, stride, offset,
                                                         cos_table, sin_table);
    ts_cuda_check_launch(c, "rope");
}

void ts_cuda_add_bias(cuda_backend *c, float *y, const float *bias, int32_t n, int32_t width) {
    const int64_t count = (int64_t)n * width;
    if (count <= 0) return;
    add_bias_kernel<<<grid_for(count, ROW_THREADS), ROW_THREADS, 0, ts_cuda_stream(c)>>>(
        y, bias, count, width);
    ts_cuda_check_launch(c, "add_bias");
}

void ts_cuda_kv_store(cuda_backend *c, const ts_kv_layer *kv, const float *k, const float *v) {
    const ts_cpu_batch *hb = ts_cuda_host_batch(c);
    const ts_cuda_batch_dev *b = ts_cuda_batch(c);
    dim3 grid((unsigned)hb->n_tokens, (unsigned)kv->n_kv_heads);
    int threads = kv->head_dim < 128 ? (kv->head_dim + 31) / 32 * 32 : 128;
    if (kv->type == TS_DTYPE_F16)
        kv_store_kernel<__half><<<grid, threads, 0, ts_cuda_stream(c)>>>(
            (__half *)kv->k, (__half *)kv->v, k, v, b->pos, b->row_block0, b->block_ids,
            kv->block_size, kv->n_kv_heads, kv->head_dim);
    else
        kv_store_kernel<float><<<grid, threads, 0, ts_cuda_stream(c)>>>(
            (float *)kv->k, (float *)kv->v, k, v, b->pos, b->row_block0, b->block_ids,
            kv->block_size, kv->n_kv_heads, kv->head_dim);
    ts_cuda_check_launch(c, "kv_store");
}

void ts_cuda_silu_mul(cuda_backend *c, float *gate, const float *up, int64_t count) {
    if (count <= 0) return;
    silu_mul_kernel<<<grid_for(count, 256), 256, 0, ts_cuda_stream(c)>>>(gate, up, count);
    ts_cuda_check_launch(c, "silu_mul");
}

void ts_cuda_add(cuda_backend *c, float *y, const float *x, int64_t count) {
    if (count <= 0) return;
    add_kernel<<<grid_for(count, 256), 256, 0, ts_cuda_stream(c)>>>(y, x, count);
    ts_cuda_check_launch(c, "add");
}

void ts_cuda_logit_rows(cuda_backend *c, float *dst, const float *x, int32_t dim) {
    const ts_cpu_batch *hb = ts_cuda_host_batch(c);
    if (hb->n_logit_rows <= 0) return;
    logit_rows_kernel<<<hb->n_logit_rows, ROW_THREADS, 0, ts_cuda_stream(c)>>>(
        dst, x, ts_cuda_batch(c)->logit_rows, dim);
    ts_cuda_check_launch(c, "logit_rows");
}

void ts_cuda_argmax_dev(cuda_backend *c, const float *logits, int32_t n, int32_t n_cols,
                        int32_t *index, float *value) {
    if (n <= 0) return;
    argmax_kernel<<<n, ROW_THREADS, 0, ts_cuda_stream(c)>>>(logits, n_cols, index, value);
    ts_cuda_check_launch(c, "argmax");
}

void ts_cuda_gemv(cuda_backend *c, float *y, const float *x, int32_t n, const ts_weight *w) {
    const unsigned blocks = (unsigned)((w->rows + GEMV_WARPS - 1) / GEMV_WARPS);
    const bool vec4 = w->cols % 4 == 0; /* rows of x 16-byte aligned: vector loads, same math */
    cudaStream_t s = ts_cuda_stream(c);
    const char *data = (const char *)w->data;
    switch (w->type) {
    case TS_DTYPE_F32:
        gemv_kernel<float><<<blocks, GEMV_WARPS * 32, 0, s>>>(y, x, data, w->row_stride, w->rows,
                                                               w->cols, n, vec4);
        break;
    case TS_DTYPE_F16:
        gemv_kernel<__half><<<blocks, GEMV_WARPS * 32, 0, s>>>(y, x, data, w->row_stride, w->rows,
                                                                w->cols, n, vec4);
        break;
    case TS_DTYPE_BF16:
        gemv_kernel<__nv_bfloat16><<<blocks, GEMV_WARPS * 32, 0, s>>>(
            y, x, data, w->row_stride, w->rows, w->cols, n, vec4);
        break;
    default: ts_cuda_fail(c, "matmul", "weight not prepared by this backend"); return;
    }
    ts_cuda_check_launch(c, "matmul (gemv)");
}

void ts_cuda_convert_f32(cuda_backend *c, void *dst, ts_dtype type, const float *src,
                         int64_t count) {
    if (count <= 0) return;
    if (type == TS_DTYPE_F16)
        convert_half_kernel<<<grid_for(count, 256), 256, 0, ts_cuda_stream(c)>>>((__half *)dst, src,
                                                                                 count);
    else
        convert_bf16_kernel<<<grid_for(count, 256), 256, 0, ts_cuda_stream(c)>>>(
            (__nv_bfloat16 *)dst, src, count);
    ts_cuda_check_launch(c, "matmul (input conversion)");
}

void ts_cuda_dequant_bf16(cuda_backend *c, void *dst, size_t dst_stride, const void *src,
                          size_t src_stride, ts_dtype type, int64_t rows, int64_t cols) {
    const int64_t bpr = cols / TS_QK;
    if (rows <= 0 || bpr <= 0) return;
    dequant_kernel<<<grid_for(rows * bpr, 256), 256, 0, ts_cuda_stream(c)>>>(
        (__nv_bfloat16 *)dst, dst_stride, (const unsigned char *)src, src_stride,
        type == TS_DTYPE_Q4_0, rows, bpr);
    ts_cuda_check_launch(c, "dequantizing a weight");
}
