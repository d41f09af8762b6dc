/*
 * cuda_sample.cu — sampling on the device, following ts_ref_sample (kernels/cpu/ref.h) step by
 * step so that the same logits, parameters and uniform draw give the CPU's token.
 *
 * The steps and how each keeps the reference's floating-point operations:
 *   1 penalty      one thread, the reference's loop (each distinct id once)
 *   2 greedy       argmax by a total order (value, then lower id): exact
 *   3 top-k        a stable descending radix sort of (l, id) (CUB, which documents it stable
 *                  and -0.0 == +0.0): ties stay in id order, the reference's (value desc,
 *                  id asc); the first k are kept
 *   4 softmax      max over kept (exact), e = exp(l / T - max) computed in double and rounded
 *                  (the correctly rounded expf; glibc's expf agrees except in rare cases),
 *                  s = float sum in id order by one thread (the reference's order), p = e / s
 *   5 top-p        stable descending sort of (p, id) over the kept ids, float cumulative sum in
 *                  that order by one thread
 *   6 min-p        p < min(min_p, 1) * max p drops (element-wise)
 *   7 draw         float sum and walk in id order by one thread
 * The log-probability is the reference's: the row max, a double sum of exp (tree order here,
 * which may differ from a sequential double sum only below float resolution), then one log.
 *
 * Cost: the ordered sums are one thread's additions (from shared memory, the block staging
 * chunks), over the whole vocabulary: a dependent float add per id, on the order of a quarter
 * millisecond per row for a 128k vocabulary, rows in parallel. The sorts run only when a row of
 * the call uses top-k or top-p. Greedy rows cost one pass.
 */
#include "kernels/cuda/cuda_internal.h"

#include <cub/cub.cuh>
#include <math.h>
#include <string.h>

namespace {

const int THREADS = 1024;
const int STAGE = 4096; /* floats staged per chunk by the ordered sums */

struct row_params {
    float temperature, top_p, min_p, penalty, uniform;
    int32_t top_k, n_recent, recent0, n_bias, bias0;
};

struct row_state {
    double sum_unmod; /* sum of exp(logit - max) of the unmodified row */
    float max_unmod;
    float max_scaled; /* max of l / T over the kept ids */
    float total;      /* float sum of the kept probabilities (step 4's s) */
    float pmax;       /* largest probability */
    int32_t token;
    float logprob;
};

__device__ inline bool better(float v, int32_t i, float bv, int32_t bi) {
    return v > bv || (v == bv && i < bi);
}

__device__ inline float exp_rounded(float x) {
    return (float)exp((double)x);
}

/* Fixed-tree block reductions over THREADS threads (results in every thread). */
__device__ float block_max(float v, float *sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = THREADS / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) sh[threadIdx.x] = fmaxf(sh[threadIdx.x], sh[threadIdx.x + s]);
        __syncthreads();
    }
    float r = sh[0];
    __syncthreads();
    return r;
}

__device__ double block_sum(double v, double *sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = THREADS / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    double r = sh[0];
    __syncthreads();
    return r;
}

__device__ int32_t block_argmax(const float *row, int32_t V, float *shv, int32_t *shi) {
    float bv = row[0];
    int32_t bi = 0;
    for (int32_t j = threadIdx.x; j < V; j += THREADS)
        if (better(row[j], j, bv, bi)) bv = row[j], bi = j;
    shv[threadIdx.x] = bv;
    shi[threadIdx.x] = bi;
    __syncthreads();
    for (int s = THREADS / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s &&
            better(shv[threadIdx.x + s], shi[threadIdx.x + s], shv[threadIdx.x], shi[threadIdx.x]))
            shv[threadIdx.x] = shv[threadIdx.x + s], shi[threadIdx.x] = shi[threadIdx.x + s];
        __syncthreads();
    }
    int32_t r = shi[0];
    __syncthreads();
    return r;
}

/* The float sum of vals[j] over the kept ids in increasing j — the order of one thread adding
 * them, which is the reference's. A dropped id adds +0.0f instead, which leaves a sum of
 * non-negative terms unchanged, so the block stages chunks in shared memory and thread 0 runs the
 * additions without waiting on global memory. Every thread gets the sum. */
__device__ float ordered_sum(const float *vals, const unsigned char *kept, int32_t V, float *stage,
                             float *result) {
    float s = 0.0f;
    for (int32_t c0 = 0; c0 < V; c0 += STAGE) {
        const int32_t n = V - c0 < STAGE ? V - c0 : STAGE;
        for (int32_t j = threadIdx.x; j < n; j += THREADS)
            stage[j] = kept[c0 + j] ? vals[c0 + j] : 0.0f;
        __syncthreads();
        if (threadIdx.x == 0)
            for (int32_t j = 0; j < n; j++)
                s += stage[j];
        __syncthreads();
    }
    if (threadIdx.x == 0) *result = s;
    __syncthreads();
    return *result;
}

/* Step 7's walk: the first kept id (in id order) at which the running float sum of the kept
 * probabilities exceeds target, or the last kept id. Staged like ordered_sum (-1 marks a dropped
 * id); thread 0 walks, the block stops at the chunk where it ends. */
__device__ int32_t ordered_walk(const float *prob, const unsigned char *kept, int32_t V,
                                float target, float *stage, int32_t *token_sh, int *done_sh) {
    float acc = 0.0f;
    int32_t token = -1;
    if (threadIdx.x == 0) *done_sh = 0;
    for (int32_t c0 = 0; c0 < V; c0 += STAGE) {
        const int32_t n = V - c0 < STAGE ? V - c0 : STAGE;
        for (int32_t j = threadIdx.x; j < n; j += THREADS)
            stage[j] = kept[c0 + j] ? prob[c0 + j] : -1.0f;
        __syncthreads();
        if (threadIdx.x == 0)
            for (int32_t j = 0; j < n; j++) {
                if (stage[j] < 0.0f) continue;
                token = c0 + j;
                acc += stage[j];
                if (acc > target) {
                    *done_sh = 1;
                    break;
                }
            }
        __syncthreads();
        if (*done_sh) break;
    }
    if (threadIdx.x == 0) *token_sh = token;
    __syncthreads();
    return *token_sh;
}

/* Steps 1-2 and the log-probability statistics; sets up the ids and keep marks. */
__global__ void __launch_bounds__(THREADS)
    prep_kernel(const float *logits, int32_t V, const row_params *params, const int32_t *recent,
                const int32_t *bias_ids, const float *bias, float *l_all, int32_t *ids_all,
                unsigned char *kept_all, row_state *state) {
    __shared__ double shd[THREADS];
    __shared__ float shf[THREADS];
    __shared__ int32_t shi[THREADS];
    const size_t off = (size_t)blockIdx.x * (size_t)V;
    const float *row = logits + off;
    float *l = l_all + off;
    const row_params p = params[blockIdx.x];
    row_state *st = state + blockIdx.x;
    for (int32_t j = threadIdx.x; j < V; j += THREADS) {
        l[j] = row[j];
        ids_all[off + j] = j;
        kept_all[off + j] = 1;
    }
    __syncthreads();
    if (threadIdx.x == 0 && p.penalty != 1.0f) {
        const int32_t *rec = recent + p.recent0;
        for (int32_t i = 0; i < p.n_recent; i++) {
            int32_t id = rec[i];
            bool seen = false;
            for (int32_t j = 0; j < i; j++)
                seen |= rec[j] == id;
            if (id < 0 || id >= V || seen) continue;
            l[id] = l[id] > 0 ? l[id] / p.penalty : l[id] * p.penalty;
        }
    }
    if (threadIdx.x == 0) /* 1b. additive biases, in order */
        for (int32_t i = p.bias0; i < p.bias0 + p.n_bias; i++)
            if (bias_ids[i] >= 0 && bias_ids[i] < V) l[bias_ids[i]] += bias[i];
    __syncthreads();
    float mx = -INFINITY;
    for (int32_t j = threadIdx.x; j < V; j += THREADS)
        mx = fmaxf(mx, row[j]);
    mx = block_max(mx, shf);
    /* the reference takes row[argmax]; max is the same value */
    double sum = 0.0;
    for (int32_t j = threadIdx.x; j < V; j += THREADS)
        sum += exp((double)row[j] - (double)mx);
    sum = block_sum(sum, shd);
    const int32_t greedy = p.temperature <= 0.0f ? block_argmax(l, V, shf, shi) : -1;
    if (threadIdx.x == 0) {
        st->max_unmod = mx;
        st->sum_unmod = sum;
        st->token = greedy;
    }
}

/* Step 3: keep the first top_k of the (l desc, id asc) order. */
__global__ void __launch_bounds__(THREADS)
    topk_kernel(int32_t V, const row_params *params, const int32_t *sorted_ids,
                unsigned char *kept_all) {
    const row_params p = params[blockIdx.x];
    if (p.temperature <= 0.0f || p.top_k <= 0 || p.top_k >= V) return;
    const size_t off = (size_t)blockIdx.x * (size_t)V;
    for (int32_t j = p.top_k + threadIdx.x; j < V; j += THREADS)
        kept_all[off + sorted_ids[off + j]] = 0;
}

/* Step 4: probabilities of the kept ids (prob = -1 for the others, so a descending sort puts
 * them last). */
__global__ void __launch_bounds__(THREADS)
    softmax_kernel(int32_t V, const row_params *params, const float *l_all,
                   const unsigned char *kept_all, float *prob_all, row_state *state) {
    __shared__ float shf[THREADS];
    __shared__ float stage[STAGE];
    __shared__ float total;
    const row_params p = params[blockIdx.x];
    if (p.temperature <= 0.0f) return;
    const size_t off = (size_t)blockIdx.x * (size_t)V;
    const float *l = l_all + off;
    const unsigned char *kept = kept_all + off;
    float *prob = prob_all + off;
    const float T = p.temperature;
    float mx = -INFINITY;
    for (int32_t j = threadIdx.x; j < V; j += THREADS)
        if (kept[j] && l[j] / T > mx) mx = l[j] / T;
    mx = block_max(mx, shf);
    for (int32_t j = threadIdx.x; j < V; j += THREADS)
        prob[j] = kept[j] ? exp_rounded(l[j] / T - mx) : -1.0f;
    __syncthreads();
    ordered_sum(prob, kept, V, stage, &total); /* the reference's order: ids ascending */
    float pm = 0.0f;
    for (int32_t j = threadIdx.x; j < V; j += THREADS)
        if (kept[j]) {
            prob[j] = prob[j] / total;
            pm = fmaxf(pm, prob[j]);
        }
    pm = block_max(pm, shf);
    if (threadIdx.x == 0) {
        state[blockIdx.x].max_scaled = mx;
        state[blockIdx.x].pmax = pm;
    }
}

/* Steps 5-7 and the log-probability. sorted_p/sorted_ids: (p, id) in descending order when
 * any row uses top-p (NULL otherwise). */
__global__ void __launch_bounds__(THREADS)
    finish_kernel(const float *logits, int32_t V, const row_params *params,
                  const float *prob_all, const float *sorted_p, const int32_t *sorted_ids,
                  unsigned char *kept_all, row_state *state) {
    __shared__ int32_t keep_n, token_sh;
    __shared__ int done_sh;
    __shared__ float stage[STAGE];
    __shared__ float total_sh;
    const row_params p = params[blockIdx.x];
    const size_t off = (size_t)blockIdx.x * (size_t)V;
    row_state *st = state + blockIdx.x;
    if (p.temperature > 0.0f) {
        const float *prob = prob_all + off;
        unsigned char *kept = kept_all + off;
        if (p.top_p < 1.0f && sorted_p) {
            if (threadIdx.x == 0) {
                const float *sp = sorted_p + off;
                float cum = 0.0f;
                int32_t keep = V;
                for (int32_t j = 0; j < V && sp[j] >= 0.0f; j++) {
                    cum += sp[j];
                    if (cum >= p.top_p) {
                        keep = j + 1;
                        break;
                    }
                }
                keep_n = keep;
            }
            __syncthreads();
            for (int32_t j = keep_n + threadIdx.x; j < V; j += THREADS)
                if (sorted_p[off + j] >= 0.0f) kept[sorted_ids[off + j]] = 0;
            __syncthreads();
        }
        if (p.min_p > 0.0f) {
            const float floor_p = (p.min_p < 1.0f ? p.min_p : 1.0f) * st->pmax;
            for (int32_t j = threadIdx.x; j < V; j += THREADS)
                if (kept[j] && prob[j] < floor_p) kept[j] = 0;
            __syncthreads();
        }
        const float total = ordered_sum(prob, kept, V, stage, &total_sh);
        const int32_t token = ordered_walk(prob, kept, V, p.uniform * total, stage, &token_sh,
                                           &done_sh);
        if (threadIdx.x == 0) st->token = token;
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        const int32_t t = st->token < 0 ? 0 : st->token;
        const float *row = logits + off;
        st->logprob = (float)((double)(row[t] - st->max_unmod) - log(st->sum_unmod));
    }
}

/* Sorts every row of keys (descending, stable: equal keys keep id order) with their ids. */
bool sort_rows(cuda_backend *c, const float *keys_in, float *keys_out, const int32_t *ids_in,
               int32_t *ids_out, int32_t n, int32_t V, const int32_t *offsets) {
    size_t temp_bytes = 0;
    cudaStream_t s = ts_cuda_stream(c);
    const int items = n * V;
    if (cub::DeviceSegmentedRadixSort::SortPairsDescending(NULL, temp_bytes, keys_in, keys_out,
                                                            ids_in, ids_out, items, n, offsets,
                                                            offsets + 1, 0, 32, s) != cudaSuccess)
        return false;
    void *temp = ts_cuda_scratch(c, 7, temp_bytes);
    if (!temp) return false;
    return cub::DeviceSegmentedRadixSort::SortPairsDescending(temp, temp_bytes, keys_in, keys_out,
                                                               ids_in, ids_out, items, n, offsets,
                                                               offsets + 1, 0, 32,
                                                               s) == cudaSuccess;
}

} // namespace

void ts_cuda_sample(cuda_backend *c, const float *logits, int32_t n, int32_t n_cols,
                    const ts_sampling *params, int32_t *token_host, float *logprob_host) {
    if (n <= 0) return;
    const int32_t V = n_cols;
    if ((int64_t)n * V > INT32_MAX) {
        ts_cuda_fail(c, "sample", "more than 2^31 logits in one call");
        return;
    }
    bool any_sampled = false, any_topk = false, any_topp = false;
    int64_t n_recent = 0, n_bias = 0;
    for (int32_t i = 0; i < n; i++) {
        const ts_sampling *p = &params[i];
        if (p->repetition_penalty != 1.0f && p->n_recent > 0) n_recent += p->n_recent;
        if (p->n_bias > 0) n_bias += p->n_bias;
        if (p->temperature <= 0.0f) continue;
        any_sampled = true;
        any_topk |= p->top_k > 0 && p->top_k < V;
        any_topp |= p->top_p < 1.0f;
    }
    /* parameters, recent ids and segment offsets: one upload */
    const size_t b_params = (size_t)n * sizeof(row_params),
                 b_offsets = (size_t)(n + 1) * sizeof(int32_t),
                 b_recent = (size_t)n_recent * sizeof(int32_t),
                 b_bias = (size_t)n_bias * sizeof(int32_t), /* the ids; as many floats */
                 b_state = (size_t)n * sizeof(row_state);
    const size_t o_offsets = (b_params + 15) / 16 * 16, o_recent = o_offsets + (b_offsets + 15) / 16 * 16,
                 o_bias_ids = o_recent + (b_recent + 15) / 16 * 16,
                 o_bias = o_bias_ids + (b_bias + 15) / 16 * 16,
                 o_state = o_bias + (b_bias + 15) / 16 * 16, total = o_state + b_state;
    char *host = (char *)ts_cuda_pinned(c, 1, total);
    char *dev = (char *)ts_cuda_scratch(c, 6, total);
    const size_t plane = (size_t)n * (size_t)V;
    float *l = (float *)ts_cuda_scratch(c, 2, plane * sizeof(float));
    float *prob = (float *)ts_cuda_scratch(c, 3, plane * sizeof(float));
    char *sorted = (char *)ts_cuda_scratch(c, 4, plane * (sizeof(float) + sizeof(int32_t)));
    char *idk = (char *)ts_cuda_scratch(c, 5, plane * (sizeof(int32_t) + 1));
    if (!host || !dev || !l || !prob || !sorted || !idk) return;
    float *sorted_keys = (float *)sorted;
    int32_t *sorted_ids = (int32_t *)(sorted + plane * sizeof(float));
    int32_t *ids = (int32_t *)idk;
    unsigned char *kept = (unsigned char *)(idk + plane * sizeof(int32_t));

    row_params *hp = (row_params *)host;
    int32_t *hoff = (int32_t *)(host + o_offsets), *hrec = (int32_t *)(host + o_recent);
    int32_t *hbid = (int32_t *)(host + o_bias_ids);
    float *hbias = (float *)(host + o_bias);
    int32_t r0 = 0, b0 = 0;
    for (int32_t i = 0; i < n; i++) {
        const ts_sampling *p = &params[i];
        int32_t nr = p->repetition_penalty != 1.0f && p->n_recent > 0 ? p->n_recent : 0;
        int32_t nb = p->n_bias > 0 ? p->n_bias : 0;
        hp[i] = (row_params){p->temperature, p->top_p, p->min_p, p->repetition_penalty,
                             p->uniform, p->top_k, nr, r0, nb, b0};
        if (nr) memcpy(hrec + r0, p->recent, (size_t)nr * sizeof(int32_t));
        if (nb) memcpy(hbid + b0, p->bias_ids, (size_t)nb * sizeof(int32_t));
        if (nb) memcpy(hbias + b0, p->bias, (size_t)nb * sizeof(float));
        r0 += nr;
        b0 += nb;
    }
    for (int32_t i = 0; i <= n; i++)
        hoff[i] = i * V;
    cudaStream_t s = ts_cuda_stream(c);
    cudaError_t e = cudaMemcpyAsync(dev, host, o_state, cudaMemcpyHostToDevice, s);
    if (e != cudaSuccess) {
        ts_cuda_fail(c, "sample", cudaGetErrorString(e));
        return;
    }
    const row_params *dp = (const row_params *)dev;
    const int32_t *doff = (const int32_t *)(dev + o_offsets), *drec = (const int32_t *)(dev + o_recent);
    const int32_t *dbid = (const int32_t *)(dev + o_bias_ids);
    const float *dbias = (const float *)(dev + o_bias);
    row_state *dstate = (row_state *)(dev + o_state);

    prep_kernel<<<n, THREADS, 0, s>>>(logits, V, dp, drec, dbid, dbias, l, ids, kept, dstate);
    ts_cuda_check_launch(c, "sample (prepare)");
    if (any_sampled) {
        if (any_topk) {
            if (!sort_rows(c, l, sorted_keys, ids, sorted_ids, n, V, doff)) {
                ts_cuda_fail(c, "sample", "sorting for top-k failed");
                return;
            }
            topk_kernel<<<n, THREADS, 0, s>>>(V, dp, sorted_ids, kept);
            ts_cuda_check_launch(c, "sample (top-k)");
        }
        softmax_kernel<<<n, THREADS, 0, s>>>(V, dp, l, kept, prob, dstate);
        ts_cuda_check_launch(c, "sample (softmax)");
        if (any_topp && !sort_rows(c, prob, sorted_keys, ids, sorted_ids, n, V, doff)) {
            ts_cuda_fail(c, "sample", "sorting for top-p failed");
            return;
        }
    }
    finish_kernel<<<n, THREADS, 0, s>>>(logits, V, dp, prob, any_topp ? sorted_keys : NULL,
                                        sorted_ids, kept, dstate);
    ts_cuda_check_launch(c, "sample (draw)");

    e = cudaMemcpyAsync(host + o_state, dstate, b_state, cudaMemcpyDeviceToHost, s);
    if (e == cudaSuccess) e = cudaStreamSynchronize(s);
    if (e != cudaSuccess) {
        ts_cuda_fail(c, "sample", cudaGetErrorString(e));
        return;
    }
    const row_state *hs = (const row_state *)(host + o_state);
    for (int32_t i = 0; i < n; i++) {
        token_host[i] = hs[i].token;
        if (logprob_host) logprob_host[i] = hs[i].logprob;
    }
}
