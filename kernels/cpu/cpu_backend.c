/*
 * cpu_backend.c — the ts_backend table of the CPU: memory, the batch, and the operations routed
 * to the scalar reference (ref.c) or to one instruction set's SIMD kernels (simd_ops.c).
 *
 * The SIMD implementations use their own matmul, rmsnorm, attention, silu_mul, add and argmax,
 * the fast sampler (sample.c), and rope from a per-step angle table; embed, kv_store and
 * logit_rows are copies and conversions that are exact anyway, so every implementation shares
 * the reference ones.
 *
 * Memory is host memory from aligned_alloc, 64-byte aligned, with a small header that records
 * the size so that free() can return it to the budget. Weights are used where they are (the
 * mmap'd file); for the SIMD kernels weight_prepare adds a copy of each weight packed in row
 * panels (panels.h).
 *
 * Scratch. Each kernel thread owns one scratch buffer, sized for the larger of the GEMM packing
 * buffers (fixed per ISA) and the attention scores of the longest context of the batch; it only
 * grows (in set_batch, when a longer context shows up), so after warm-up a decode step
 * allocates nothing.
 */
#include "kernels/cpu/cpu_backend.h"

#include "common/error.h"
#include "common/meminfo.h"
#include "kernels/cpu/cpu_batch.h"
#include "kernels/cpu/panels.h"
#include "kernels/cpu/qmatmul.h"
#include "kernels/cpu/ref.h"
#include "kernels/cpu/sample.h"
#include "kernels/cpu/simd_ops.h"
#include "kernels/cpu/threadpool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum { ALIGN = 64 };

typedef struct cpu_backend {
    ts_backend base;
    ts_cpu_impl impl;
    char name[32];
    ts_threadpool *pool;
    size_t budget, used;
    ts_cpu_batch batch;
    const ts_cpu_kernels *k; /* NULL for the scalar reference */
    ts_cpu_exec exec;        /* what the SIMD kernels see */
    float **thread_scratch;  /* [n_threads], each thread_scratch_cap bytes */
    size_t thread_scratch_cap;
    /* reference paths: attention scores; both: sampling scratch */
    float *ref_scores;
    size_t ref_scores_cap;
    void *sample_scratch;
    size_t sample_scratch_cap;
    /* quantized weights: the activations in the vec_dot_type, and each type's dot product */
    void *qact;
    size_t qact_cap;
    ts_cpu_qdot qdot[TS_DTYPE_COUNT];
} cpu_backend;

static cpu_backend *cpu(ts_backend *be) {
    return (cpu_backend *)be;
}

/* ---- memory ---- */

static void *cpu_alloc(ts_backend *be, size_t bytes) {
    cpu_backend *c = cpu(be);
    if (c->budget && (bytes > c->budget || c->used > c->budget - bytes)) {
        ts_error_set(TS_E_NOMEM,
                     "cpu backend: allocating %zu bytes would exceed the memory budget of %zu "
                     "bytes (%zu in use)",
                     bytes, c->budget, c->used);
        return NULL;
    }
    size_t rounded = (bytes + ALIGN - 1) / ALIGN * ALIGN;
    if (rounded < bytes || rounded > SIZE_MAX - ALIGN) {
        ts_error_set(TS_E_NOMEM, "cpu backend: cannot allocate %zu bytes", bytes);
        return NULL;
    }
    char *p = aligned_alloc(ALIGN, rounded + ALIGN);
    if (!p) {
        ts_error_set(TS_E_NOMEM, "cpu backend: out of memory allocating %zu bytes", bytes);
        return NULL;
    }
    memcpy(p, &bytes, sizeof bytes);
    c->used += bytes;
    return p + ALIGN;
}

static void cpu_free(ts_backend *be, void *ptr) {
    if (!ptr) return;
    char *p = (char *)ptr - ALIGN;
    size_t bytes;
    memcpy(&bytes, p, sizeof bytes);
    cpu(be)->used -= bytes;
    free(p);
}

static void cpu_copy(ts_backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes) memcpy(dst, src, bytes);
}

static void cpu_memset_zero(ts_backend *be, void *dst, size_t bytes) {
    if (bytes) memset(dst, 0, bytes);
}

/* The SIMD matrix kernels read every weight as row panels (panels.h): a panel is one contiguous
 * stream, and a k step reads TS_PANEL_ROWS consecutive rows' values, one vector, so the kernels
 * compute outer products (a broadcast activation times a vector of rows) instead of dot products
 * that end in horizontal sums. The reference path reads rows. */
/* After packing, the matrix kernels never read the row layout again (only the embedding lookup
 * reads a few rows of the token table), so the pages the source occupies are handed back: with
 * the weights mmap'd from the model file (the engine's case) they are clean file pages that the
 * kernel drops and reads again if ever touched, so a node holds one copy of the weights, not
 * two. MADV_PAGEOUT keeps the contents of any memory (heap memory of tests is merely swapped or
 * left alone), and a kernel without it refuses the hint, which changes nothing. */
static void release_source_pages(const ts_weight *w) {
#ifdef MADV_PAGEOUT
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t begin = ((uintptr_t)w->data + page - 1) / page * page;
    const uintptr_t end =
        ((uintptr_t)w->data + (size_t)(w->rows - 1) * w->row_stride +
         ts_dtype_row_bytes(w->type, w->cols)) / page * page;
    if (w->rows > 0 && end > begin) (void)madvise((void *)begin, end - begin, MADV_PAGEOUT);
#else
    (void)w;
#endif
}

static int cpu_weight_prepare(ts_backend *be, const ts_weight *host, ts_weight *dst) {
    *dst = *host;
    dst->owned = NULL;
    dst->panels = NULL;
    if (ts_dtype_is_quantized(host->type)) { /* read in place by qmatmul: one copy */
        if (host->cols % ts_dtype_block_elems(host->type))
            return ts_error_set(TS_E_UNSUPPORTED, "%s: a %lld x %lld weight of type %s",
                                cpu(be)->name, (long long)host->rows, (long long)host->cols,
                                ts_dtype_name(host->type));
        return 0;
    }
    if (!cpu(be)->k) return 0;
    const size_t panel_bytes = ts_panel_bytes(host->type, host->cols);
    const int64_t n_panels = (host->rows + TS_PANEL_ROWS - 1) / TS_PANEL_ROWS;
    if (!panel_bytes || host->cols % ts_dtype_block_elems(host->type))
        return ts_error_set(TS_E_UNSUPPORTED, "%s: a %lld x %lld weight of type %s", cpu(be)->name,
                            (long long)host->rows, (long long)host->cols,
                            ts_dtype_name(host->type));
    void *panels = cpu_alloc(be, (size_t)n_panels * panel_bytes);
    if (!panels)
        return ts_error_wrap(TS_E_NOMEM, "packing a %lld x %lld weight", (long long)host->rows,
                             (long long)host->cols);
    ts_panels_pack(host, panels);
    dst->panels = panels;
    dst->owned = panels;
    release_source_pages(host);
    return 0;
}

static void cpu_weight_release(ts_backend *be, ts_weight *w) {
    cpu_free(be, w->owned);
    w->owned = NULL;
}

static int cpu_sync(ts_backend *be) {
    return 0;
}

static size_t cpu_memory_free(ts_backend *be) {
    cpu_backend *c = cpu(be);
    uint64_t host = ts_mem_available_bytes();
    if (host > SIZE_MAX) host = SIZE_MAX;
    if (!c->budget) return (size_t)host;
    size_t rest = c->budget - c->used;
    return host && host < rest ? (size_t)host : rest;
}

/* Grows a zeroed scratch buffer (not counted in the budget: it is the backend's own). Sizes at
 * least double, so a context that grows by one token per step reallocates O(log n) times. */
static int grow_scratch(void **p, size_t *cap, size_t bytes) {
    if (bytes <= *cap) return 0;
    if (bytes < 2 * *cap) bytes = 2 * *cap;
    size_t rounded = (bytes + ALIGN - 1) / ALIGN * ALIGN;
    void *q = aligned_alloc(ALIGN, rounded);
    if (!q)
        return ts_error_set(TS_E_NOMEM, "cpu backend: out of memory for %zu bytes of scratch",
                            bytes);
    memset(q, 0, rounded);
    free(*p);
    *p = q;
    *cap = bytes;
    return 0;
}

/* Per-thread scratch of the SIMD kernels for contexts up to max_ctx. */
static int grow_thread_scratch(cpu_backend *c, int32_t max_ctx) {
    size_t want = c->k->scratch_bytes(max_ctx);
    if (want <= c->thread_scratch_cap) return 0;
    size_t cap = c->thread_scratch_cap;
    for (int i = 0; i < ts_threadpool_size(c->pool); i++) {
        cap = c->thread_scratch_cap;
        int rc = grow_scratch((void **)&c->thread_scratch[i], &cap, want);
        if (rc) return rc;
    }
    c->thread_scratch_cap = cap;
    return 0;
}

static int cpu_set_batch(ts_backend *be, const ts_batch *batch) {
    cpu_backend *c = cpu(be);
    int rc = ts_cpu_batch_set(&c->batch, batch);
    if (rc) return rc;
    if (c->k) return grow_thread_scratch(c, c->batch.max_ctx);
    return grow_scratch((void **)&c->ref_scores, &c->ref_scores_cap,
                        (size_t)c->batch.max_ctx * sizeof(float));
}

/* ---- operations: the scalar reference ---- */

static void ref_embed(ts_backend *be, float *x, const ts_weight *table, int64_t first_row) {
    const ts_cpu_batch *b = &cpu(be)->batch;
    ts_ref_embed(x, table, first_row, b->tokens, b->n_tokens);
}

static void ref_rmsnorm(ts_backend *be, float *out, const float *x, const float *weight, int32_t n,
                        int32_t dim, float eps) {
    ts_ref_rmsnorm(out, x, weight, n, dim, eps);
}

/* A quantized weight, on every implementation: activations quantized, then dot products (the
 * reference ones on the scalar implementation, the ISA's otherwise: the same bits). */
static void quant_matmul(cpu_backend *c, float *y, const float *x, int32_t n, const ts_weight *w) {
    /* grown once per shape; failure means memory is already exhausted (operations don't fail) */
    TS_ASSERT(grow_scratch(&c->qact, &c->qact_cap, ts_cpu_qmatmul_act_bytes(w, n)) == 0);
    ts_cpu_qmatmul(c->pool, y, x, n, w, c->qact, c->qdot[w->type]);
}

static void ref_matmul(ts_backend *be, float *y, const float *x, int32_t n, const ts_weight *w) {
    if (ts_dtype_is_quantized(w->type)) quant_matmul(cpu(be), y, x, n, w);
    else ts_ref_matmul(y, x, n, w);
}

static void ref_rope(ts_backend *be, float *x, int32_t n_heads, int32_t head_dim,
                     const ts_rope *rope) {
    const ts_cpu_batch *b = &cpu(be)->batch;
    ts_ref_rope(x, b->pos, b->n_tokens, n_heads, head_dim, rope);
}

/* Both CPU backends: a broadcast add that the compiler vectorizes is already at memory speed. */
static void ref_add_bias(ts_backend *be, float *y, const float *bias, int32_t n, int32_t width) {
    (void)be;
    ts_ref_add_bias(y, bias, n, width);
}

static void ref_kv_store(ts_backend *be, const ts_kv_layer *kv, const float *k, const float *v) {
    ts_ref_kv_store(kv, &cpu(be)->batch, k, v);
}

static void ref_attention(ts_backend *be, float *out, const float *q, const ts_kv_layer *kv,
                          int32_t n_heads, float scale) {
    cpu_backend *c = cpu(be);
    ts_ref_attention(out, q, kv, &c->batch, n_heads, scale, c->ref_scores);
}

static void ref_silu_mul(ts_backend *be, float *gate, const float *up, int64_t count) {
    ts_ref_silu_mul(gate, up, count);
}

static void ref_add(ts_backend *be, float *y, const float *x, int64_t count) {
    ts_ref_add(y, x, count);
}

static void ref_logit_rows(ts_backend *be, float *dst, const float *x, int32_t dim) {
    ts_ref_logit_rows(dst, x, &cpu(be)->batch, dim);
}

static void ref_argmax(ts_backend *be, const float *logits, int32_t n, int32_t n_cols,
                       int32_t *index_host, float *value_host) {
    ts_ref_argmax(logits, n, n_cols, index_host, value_host);
}

static void ref_sample(ts_backend *be, const float *logits, int32_t n, int32_t n_cols,
                       const ts_sampling *params, int32_t *token_host, float *logprob_host) {
    cpu_backend *c = cpu(be);
    /* Allocation failure here cannot be reported (operations do not fail); the scratch is
     * grown once per vocabulary size, so it only happens when memory is already exhausted. */
    TS_ASSERT(grow_scratch(&c->sample_scratch, &c->sample_scratch_cap,
                           ts_ref_sample_scratch_bytes(n_cols)) == 0);
    for (int32_t i = 0; i < n; i++)
        token_host[i] = ts_ref_sample(logits + (size_t)i * (size_t)n_cols, n_cols, &params[i],
                                      c->sample_scratch, logprob_host ? &logprob_host[i] : NULL);
}

/* ---- operations: the SIMD kernels ---- */

static void simd_matmul(ts_backend *be, float *y, const float *x, int32_t n, const ts_weight *w) {
    cpu_backend *c = cpu(be);
    if (ts_dtype_is_quantized(w->type)) quant_matmul(c, y, x, n, w);
    else c->k->matmul(&c->exec, y, x, n, w);
}

static void simd_rmsnorm(ts_backend *be, float *out, const float *x, const float *weight, int32_t n,
                         int32_t dim, float eps) {
    cpu_backend *c = cpu(be);
    c->k->rmsnorm(&c->exec, out, x, weight, n, dim, eps);
}

typedef struct {
    float *x;
    const ts_cpu_batch *b;
    int32_t n_heads, head_dim;
    ts_rope_mode mode;
    int32_t n_dims;
} rope_args;

static void rope_task(void *ctx, int ith, int nth) {
    const rope_args *a = ctx;
    const int32_t n = a->b->n_tokens, pairs = a->n_dims / 2;
    for (int32_t r = (int32_t)((int64_t)n * ith / nth); r < (int64_t)n * (ith + 1) / nth; r++)
        ts_ref_rope_row(a->x + (size_t)r * (size_t)a->n_heads * (size_t)a->head_dim, a->n_heads,
                        a->head_dim, a->mode, a->n_dims, a->b->rope_cos + (size_t)r * (size_t)pairs,
                        a->b->rope_sin + (size_t)r * (size_t)pairs);
}

/* Angles from the step's table (computed once per step by the reference function), the rotation
 * by the reference row function: rope is bit-identical to the reference on every ISA. */
static void simd_rope(ts_backend *be, float *x, int32_t n_heads, int32_t head_dim,
                      const ts_rope *rope) {
    cpu_backend *c = cpu(be);
    /* The table only grows with the batch; failure means memory is already exhausted. */
    TS_ASSERT(ts_cpu_batch_rope_table(&c->batch, rope) == 0);
    rope_args a = {x, &c->batch, n_heads, head_dim, rope->mode, rope->n_dims};
    int work = c->batch.n_tokens * n_heads * rope->n_dims;
    ts_threadpool_run(c->pool, work < (1 << 14) ? 1 : 0, rope_task, &a);
}

static void simd_attention(ts_backend *be, float *out, const float *q, const ts_kv_layer *kv,
                           int32_t n_heads, float scale) {
    cpu_backend *c = cpu(be);
    c->k->attention(&c->exec, out, q, kv, n_heads, scale);
}

static void simd_silu_mul(ts_backend *be, float *gate, const float *up, int64_t count) {
    cpu_backend *c = cpu(be);
    c->k->silu_mul(&c->exec, gate, up, count);
}

static void simd_add(ts_backend *be, float *y, const float *x, int64_t count) {
    cpu_backend *c = cpu(be);
    c->k->add(&c->exec, y, x, count);
}

static void simd_argmax(ts_backend *be, const float *logits, int32_t n, int32_t n_cols,
                        int32_t *index_host, float *value_host) {
    cpu_backend *c = cpu(be);
    c->k->argmax(&c->exec, logits, n, n_cols, index_host, value_host);
}

static void fast_sample(ts_backend *be, const float *logits, int32_t n, int32_t n_cols,
                        const ts_sampling *params, int32_t *token_host, float *logprob_host) {
    cpu_backend *c = cpu(be);
    TS_ASSERT(grow_scratch(&c->sample_scratch, &c->sample_scratch_cap,
                           ts_cpu_sample_scratch_bytes(n_cols)) == 0);
    for (int32_t i = 0; i < n; i++)
        token_host[i] = ts_cpu_sample(logits + (size_t)i * (size_t)n_cols, n_cols, &params[i],
                                      c->sample_scratch, logprob_host ? &logprob_host[i] : NULL);
}

/* ---- lifetime ---- */

static void cpu_destroy(ts_backend *be) {
    if (!be) return;
    cpu_backend *c = cpu(be);
    if (c->thread_scratch)
        for (int i = 0; i < ts_threadpool_size(c->pool); i++)
            free(c->thread_scratch[i]);
    free(c->thread_scratch);
    ts_threadpool_destroy(c->pool);
    ts_cpu_batch_free(&c->batch);
    free(c->ref_scores);
    free(c->sample_scratch);
    free(c->qact);
    free(c);
}

const char *ts_cpu_impl_name(ts_cpu_impl impl) {
    switch (impl) {
    case TS_CPU_IMPL_SCALAR: return "scalar";
    case TS_CPU_IMPL_AVX2: return "avx2";
    case TS_CPU_IMPL_AVX512: return "avx512";
    case TS_CPU_IMPL_AVX512_EMU: return "avx512emu";
    case TS_CPU_IMPL_COUNT: break;
    }
    return "unknown";
}

static const ts_cpu_kernels *impl_kernels(ts_cpu_impl impl) {
#ifndef TS_CPU_SIMD
    return NULL; /* not an x86-64 build: the reference only */
#endif
    switch (impl) {
    case TS_CPU_IMPL_AVX2: return &ts_cpu_kernels_avx2;
    case TS_CPU_IMPL_AVX512: return &ts_cpu_kernels_avx512;
    case TS_CPU_IMPL_AVX512_EMU: return &ts_cpu_kernels_avx512emu;
    default: return NULL;
    }
}

bool ts_cpu_impl_supported(ts_cpu_impl impl) {
    ts_cpu_isa best = ts_cpu_isa_detect();
    if (impl != TS_CPU_IMPL_SCALAR && !impl_kernels(impl)) return false;
    switch (impl) {
    case TS_CPU_IMPL_SCALAR: return true;
    case TS_CPU_IMPL_AVX2:
    case TS_CPU_IMPL_AVX512_EMU: return best >= TS_ISA_AVX2;
    case TS_CPU_IMPL_AVX512: return best == TS_ISA_AVX512;
    case TS_CPU_IMPL_COUNT: break;
    }
    return false;
}

int ts_cpu_backend_create(const ts_backend_options *opts, ts_cpu_impl impl, ts_backend **out) {
    *out = NULL;
    if ((unsigned)impl >= TS_CPU_IMPL_COUNT || !ts_cpu_impl_supported(impl))
        return ts_error_set(TS_E_UNSUPPORTED, "cpu backend: the %s kernels cannot run on this CPU",
                            ts_cpu_impl_name(impl));
    cpu_backend *c = calloc(1, sizeof *c);
    if (!c) return ts_error_set(TS_E_NOMEM, "cpu backend: out of memory");
    c->impl = impl;
    c->budget = opts ? opts->memory_budget : 0;
    snprintf(c->name, sizeof c->name, "cpu-%s", ts_cpu_impl_name(impl));
    int n_threads = impl == TS_CPU_IMPL_SCALAR ? 1 : (opts ? opts->n_threads : 0);
    int rc = ts_threadpool_create(n_threads, &c->pool);
    if (rc) {
        free(c);
        return rc;
    }
    c->k = impl_kernels(impl);
    for (int t = 0; t < TS_DTYPE_COUNT; t++)
        c->qdot[t] = ts_cpu_qdot_for((ts_dtype)t, !c->k                        ? TS_ISA_SCALAR
                                                  : impl == TS_CPU_IMPL_AVX512 ? TS_ISA_AVX512
                                                                               : TS_ISA_AVX2);
    if (c->k) {
        c->thread_scratch = calloc((size_t)ts_threadpool_size(c->pool), sizeof(float *));
        rc = c->thread_scratch ? grow_thread_scratch(c, 0)
                               : ts_error_set(TS_E_NOMEM, "cpu backend: out of memory");
        if (rc) {
            cpu_destroy(&c->base);
            return rc;
        }
        c->exec.pool = c->pool;
        c->exec.batch = &c->batch;
        c->exec.scratch = c->thread_scratch;
    }

    ts_backend *be = &c->base;
    be->name = c->name;
    be->alloc = cpu_alloc;
    be->free = cpu_free;
    be->upload = cpu_copy;
    be->download = cpu_copy;
    be->memset_zero = cpu_memset_zero;
    be->memory_free = cpu_memory_free;
    be->weight_prepare = cpu_weight_prepare;
    be->weight_release = cpu_weight_release;
    be->sync = cpu_sync;
    be->set_batch = cpu_set_batch;
    be->embed = ref_embed;
    be->rmsnorm = ref_rmsnorm;
    be->matmul = ref_matmul;
    be->rope = ref_rope;
    be->add_bias = ref_add_bias;
    be->kv_store = ref_kv_store;
    be->attention = ref_attention;
    be->silu_mul = ref_silu_mul;
    be->add = ref_add;
    be->logit_rows = ref_logit_rows;
    be->argmax = ref_argmax;
    be->sample = ref_sample;
    be->destroy = cpu_destroy;
    if (c->k) {
        be->matmul = simd_matmul;
        be->rmsnorm = simd_rmsnorm;
        be->rope = simd_rope;
        be->attention = simd_attention;
        be->silu_mul = simd_silu_mul;
        be->add = simd_add;
        be->argmax = simd_argmax;
        be->sample = fast_sample;
    }
    *out = be;
    return 0;
}
