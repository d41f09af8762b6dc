/*
 * cuda_attention.cu — causal attention over the paged KV cache, prefill and decode alike.
 *
 * The numbers. For a query row at position p and query head h, the keys 0..p are cut into
 * splits of TS_CUDA_ATT_SPLIT keys (split s: keys [256 s, 256 s + 256) ∩ [0, p]). One warp
 * computes a split: tiles of 32 keys in increasing order, lane j scoring key t0 + j (a float
 * fmaf chain over the head dimension, then * scale), an online softmax (max by butterfly,
 * rescale by expf(m_old - m_new), probabilities summed by butterfly) and the value accumulation
 * (each lane owns dimensions lane, lane + 32, ...; keys added in order j = 0..31). Splits are
 * then merged in increasing s: M = max, L = L a + l b, ACC = ACC a + acc b with a, b the
 * expf of the max differences; the output is ACC / L. Nothing in this sequence depends on the
 * other rows of the batch, on how a prompt was chunked, or on which launch mode ran it, so a row
 * gets the same bits alone or batched (kernels.h). No score matrix is ever stored: scores live in
 * registers, one tile at a time (flash-attention style).
 *
 * The launch. A block takes up to TS_CUDA_ATT_ROWS consecutive rows of one sequence and up to
 * TS_CUDA_ATT_HEADS query heads of one KV head (one warp per (row, head)): each K/V tile is read
 * from the paged pool once into shared memory (as f32) and used by all of them.
 *   - sequential mode (prefill, or many rows): one block walks all splits of its rows and
 *     merges them in registers;
 *   - parallel mode (decode with long contexts and few blocks otherwise): one block per split,
 *     rows with more than one split write (m, l, acc) partials, and a combine kernel merges
 *     them in split order with the same arithmetic.
 */
#include "kernels/cuda/cuda_internal.h"

#include <math.h>

namespace {

const int MAX_THREADS = TS_CUDA_ATT_ROWS * TS_CUDA_ATT_HEADS * 32;
const int PER_LANE = TS_CUDA_MAX_HEAD_DIM / 32;
const int KEYS = TS_CUDA_ATT_KEYS;

__device__ inline float kv_load(const float *p, size_t i) {
    return p[i];
}
__device__ inline float kv_load(const __half *p, size_t i) {
    return __half2float(p[i]);
}

__device__ inline float warp_max(float v) {
    for (int off = 16; off > 0; off >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    return v;
}

__device__ inline float warp_sum(float v) {
    for (int off = 16; off > 0; off >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

struct att_args {
    float *out;
    const float *q;
    float *partial; /* [n_tokens][n_heads][max_splits][head_dim + 2] (parallel mode) */
    const ts_cuda_att_tile *tiles;
    const int32_t *pos, *row_block0, *block_ids;
    int32_t n_heads, n_kv_heads, group, hpb, head_chunks, head_dim, block_size, max_splits;
    float scale;
    int parallel;
};

template <typename T>
__global__ void __launch_bounds__(MAX_THREADS)
    attention_kernel(att_args a, const T *kpool, const T *vpool) {
    extern __shared__ float smem[];
    const int hd = a.head_dim;
    float *ks = smem;                 /* [KEYS][hd + 1] */
    float *vs = ks + KEYS * (hd + 1); /* [KEYS][hd] */
    const ts_cuda_att_tile tile = a.tiles[blockIdx.x];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float *qs = vs + KEYS * hd + warp * hd;
    const int rt = warp / a.hpb, hc = warp % a.hpb;
    const int kvh = blockIdx.z / a.head_chunks, chunk = blockIdx.z % a.head_chunks;
    const int hig = chunk * a.hpb + hc;
    const bool active = rt < tile.n_rows && hig < a.group;
    const int row = tile.row0 + rt, h = kvh * a.group + hig;
    const int my_pos = active ? a.pos[row] : -1;
    const int my_splits = active ? my_pos / TS_CUDA_ATT_SPLIT + 1 : 0;
    const int last_pos = a.pos[tile.row0 + tile.n_rows - 1];
    const int32_t *table = a.block_ids + a.row_block0[tile.row0];

    int s_begin = 0, s_end = tile.n_splits;
    if (a.parallel) {
        s_begin = blockIdx.y;
        s_end = s_begin + 1;
        if (s_begin >= tile.n_splits) return; /* the whole block: no barrier is skipped */
    }
    if (active)
        for (int d = lane; d < hd; d += 32)
            qs[d] = a.q[((size_t)row * a.n_heads + h) * hd + d];

    float M = -INFINITY, L = 0.0f, ACC[PER_LANE];
#pragma unroll
    for (int i = 0; i < PER_LANE; i++)
        ACC[i] = 0.0f;

    for (int s = s_begin; s < s_end; s++) {
        float m = -INFINITY, l = 0.0f, acc[PER_LANE];
#pragma unroll
        for (int i = 0; i < PER_LANE; i++)
            acc[i] = 0.0f;
        const int key0 = s * TS_CUDA_ATT_SPLIT;
        const int block_end = min(key0 + TS_CUDA_ATT_SPLIT, last_pos + 1);
        const int my_end = active ? min(key0 + TS_CUDA_ATT_SPLIT, my_pos + 1) : key0;
        for (int t0 = key0; t0 < block_end; t0 += KEYS) {
            __syncthreads(); /* the previous tile has been used by every warp */
            for (int idx = threadIdx.x; idx < KEYS * hd; idx += blockDim.x) {
                const int j = idx / hd, d = idx % hd, t = t0 + j;
                float kv = 0.0f, vv = 0.0f;
                if (t < block_end) {
                    const size_t at = (((size_t)table[t / a.block_size] * a.n_kv_heads + kvh) *
                                           a.block_size +
                                       (size_t)(t % a.block_size)) *
                                          hd +
                                      d;
                    kv = kv_load(kpool, at);
                    vv = kv_load(vpool, at);
                }
                ks[j * (hd + 1) + d] = kv;
                vs[j * hd + d] = vv;
            }
            __syncthreads();
            if (t0 >= my_end) continue; /* warp-uniform: this row's keys ended */
            const bool valid = t0 + lane < my_end;
            float sc = -INFINITY;
            if (valid) {
                float dot = 0.0f;
                const float *kr = ks + lane * (hd + 1);
                for (int d = 0; d < hd; d++)
                    dot = fmaf(qs[d], kr[d], dot);
                sc = dot * a.scale;
            }
            const float m_new = fmaxf(m, warp_max(sc)); /* finite: lane 0 is valid */
            const float alpha = expf(m - m_new);
            const float p = valid ? expf(sc - m_new) : 0.0f;
            l = l * alpha + warp_sum(p);
#pragma unroll
            for (int i = 0; i < PER_LANE; i++)
                acc[i] = acc[i] * alpha;
            for (int j = 0; j < KEYS; j++) {
                const float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
                for (int i = 0; i < PER_LANE; i++) {
                    const int d = lane + 32 * i;
                    if (d < hd) acc[i] = fmaf(pj, vs[j * hd + d], acc[i]);
                }
            }
            m = m_new;
        }
        if (!active || s >= my_splits) continue;
        if (a.parallel && my_splits > 1) {
            float *part = a.partial + (((size_t)row * a.n_heads + h) * a.max_splits + s) * (hd + 2);
            if (lane == 0) {
                part[0] = m;
                part[1] = l;
            }
#pragma unroll
            for (int i = 0; i < PER_LANE; i++)
                if (lane + 32 * i < hd) part[2 + lane + 32 * i] = acc[i];
        } else if (s == 0) {
            M = m;
            L = l;
#pragma unroll
            for (int i = 0; i < PER_LANE; i++)
                ACC[i] = acc[i];
        } else {
            const float mn = fmaxf(M, m), ea = expf(M - mn), eb = expf(m - mn);
            L = L * ea + l * eb;
#pragma unroll
            for (int i = 0; i < PER_LANE; i++)
                ACC[i] = ACC[i] * ea + acc[i] * eb;
            M = mn;
        }
    }
    /* parallel mode: rows with several splits are finished by combine_kernel, rows with one
     * by the block of split 0 */
    if (!active || (a.parallel && (my_splits > 1 || s_begin != 0))) return;
    float *o = a.out + ((size_t)row * a.n_heads + h) * hd;
#pragma unroll
    for (int i = 0; i < PER_LANE; i++)
        if (lane + 32 * i < hd) o[lane + 32 * i] = ACC[i] / L;
}

/* Merges the partials of rows with more than one split, in split order (same arithmetic as the
 * sequential mode). Block (row, head); thread d owns one output dimension. */
__global__ void combine_kernel(att_args a) {
    const int row = blockIdx.x, h = blockIdx.y, hd = a.head_dim;
    const int splits = a.pos[row] / TS_CUDA_ATT_SPLIT + 1;
    if (splits <= 1) return;
    const float *part = a.partial + ((size_t)row * a.n_heads + h) * a.max_splits * (hd + 2);
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float M = part[0], L = part[1], ACC = part[2 + d];
        for (int s = 1; s < splits; s++) {
            const float *ps = part + (size_t)s * (hd + 2);
            const float m = ps[0], mn = fmaxf(M, m), ea = expf(M - mn), eb = expf(m - mn);
            L = L * ea + ps[1] * eb;
            ACC = ACC * ea + ps[2 + d] * eb;
            M = mn;
        }
        a.out[((size_t)row * a.n_heads + h) * hd + d] = ACC / L;
    }
}

size_t smem_bytes(int hd, int warps) {
    return ((size_t)KEYS * (hd + 1) + (size_t)KEYS * hd + (size_t)warps * hd) * sizeof(float);
}

} // namespace

int ts_cuda_attention_init(void) {
    int bytes = (int)smem_bytes(TS_CUDA_MAX_HEAD_DIM, MAX_THREADS / 32);
    if (cudaFuncSetAttribute(attention_kernel<float>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             bytes) != cudaSuccess ||
        cudaFuncSetAttribute(attention_kernel<__half>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             bytes) != cudaSuccess)
        return -1;
    return 0;
}

void ts_cuda_attention(cuda_backend *c, float *out, const float *q, const ts_kv_layer *kv,
                       int32_t n_heads, float scale) {
    const ts_cpu_batch *hb = ts_cuda_host_batch(c);
    const ts_cuda_batch_dev *b = ts_cuda_batch(c);
    const int hd = kv->head_dim;
    if (hd < 1 || hd > TS_CUDA_MAX_HEAD_DIM || kv->n_kv_heads < 1 || n_heads % kv->n_kv_heads) {
        ts_cuda_fail(c, "attention", "head_dim above 256 or heads not a multiple of KV heads");
        return;
    }
    att_args a;
    a.out = out;
    a.q = q;
    a.partial = NULL;
    a.tiles = b->tiles;
    a.pos = b->pos;
    a.row_block0 = b->row_block0;
    a.block_ids = b->block_ids;
    a.n_heads = n_heads;
    a.n_kv_heads = kv->n_kv_heads;
    a.group = n_heads / kv->n_kv_heads;
    a.hpb = a.group < TS_CUDA_ATT_HEADS ? a.group : TS_CUDA_ATT_HEADS;
    a.head_chunks = (a.group + a.hpb - 1) / a.hpb;
    a.head_dim = hd;
    a.block_size = kv->block_size;
    a.max_splits = b->max_tile_splits;
    a.scale = scale;
    a.parallel = 0;

    /* Parallel splits when the rows alone would leave most multiprocessors idle. Either mode
     * gives the same bits (file comment), so this choice may depend on the batch. */
    int device = 0, sms = 0;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    const size_t blocks = (size_t)b->n_tiles * (size_t)kv->n_kv_heads * (size_t)a.head_chunks;
    const size_t part_bytes = (size_t)hb->n_tokens * (size_t)n_heads * (size_t)a.max_splits *
                              (size_t)(hd + 2) * sizeof(float);
    if (a.max_splits > 1 && blocks < (size_t)(2 * sms) && part_bytes <= ((size_t)256 << 20)) {
        a.partial = (float *)ts_cuda_scratch(c, 1, part_bytes);
        a.parallel = a.partial != NULL;
    }
    const int warps = TS_CUDA_ATT_ROWS * a.hpb;
    dim3 grid((unsigned)b->n_tiles, a.parallel ? (unsigned)a.max_splits : 1u,
              (unsigned)(kv->n_kv_heads * a.head_chunks));
    const size_t smem = smem_bytes(hd, warps);
    cudaStream_t s = ts_cuda_stream(c);
    if (kv->type == TS_DTYPE_F16)
        attention_kernel<__half><<<grid, warps * 32, smem, s>>>(a, (const __half *)kv->k,
                                                                 (const __half *)kv->v);
    else
        attention_kernel<float><<<grid, warps * 32, smem, s>>>(a, (const float *)kv->k,
                                                                (const float *)kv->v);
    ts_cuda_check_launch(c, "attention");
    if (a.parallel) {
        combine_kernel<<<dim3((unsigned)hb->n_tokens, (unsigned)n_heads), hd < 128 ? 32 : 128, 0,
                         s>>>(a);
        ts_cuda_check_launch(c, "attention (combine)");
    }
}
