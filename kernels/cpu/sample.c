/* sample.c — see sample.h; the step numbers are those of ts_ref_sample in ref.h. */
#include "kernels/cpu/sample.h"

#include "kernels/cpu/ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef ts_ref_item item;

typedef struct {
    float *l;     /* penalised logits */
    float *prob;  /* probabilities of kept ids */
    int32_t *ids; /* kept ids in increasing order (when not all are kept) */
    item *items;  /* heap / sort space */
    unsigned char *mark;
} scratch_view;

static scratch_view view(void *scratch, int32_t V) {
    scratch_view s;
    s.l = scratch;
    s.prob = s.l + V;
    s.ids = (int32_t *)(s.prob + V);
    s.items = (item *)(s.ids + V);
    s.mark = (unsigned char *)(s.items + V);
    return s;
}

size_t ts_cpu_sample_scratch_bytes(int32_t n_cols) {
    return (size_t)n_cols * (2 * sizeof(float) + sizeof(int32_t) + sizeof(item) + 1);
}

/* Whether a ranks before b in the sampling order. */
static int before(item a, item b) {
    return a.v > b.v || (a.v == b.v && a.id < b.id);
}

/* Heap with the entry that ranks last at the root. */
static void sift_down(item *h, int32_t n, int32_t i) {
    for (;;) {
        int32_t c = 2 * i + 1;
        if (c >= n) return;
        if (c + 1 < n && before(h[c], h[c + 1])) c++;
        if (!before(h[i], h[c])) return;
        item t = h[i];
        h[i] = h[c];
        h[c] = t;
        i = c;
    }
}

static void sift_up(item *h, int32_t i) {
    while (i > 0) {
        int32_t p = (i - 1) / 2;
        if (!before(h[p], h[i])) return;
        item t = h[i];
        h[i] = h[p];
        h[p] = t;
        i = p;
    }
}

static int cmp_id(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* 3. the k best ids by (l desc, id asc), into s->ids in increasing order */
static int32_t top_k(const scratch_view *s, int32_t V, int32_t k) {
    int32_t n = 0;
    for (int32_t j = 0; j < V; j++) {
        item it = {s->l[j], j};
        if (n < k) {
            s->items[n] = it;
            sift_up(s->items, n++);
        } else if (before(it, s->items[0])) {
            s->items[0] = it;
            sift_down(s->items, n, 0);
        }
    }
    for (int32_t i = 0; i < n; i++)
        s->ids[i] = s->items[i].id;
    qsort(s->ids, (size_t)n, sizeof(int32_t), cmp_id);
    return n;
}

/* 5. top-p: replaces the kept ids (all of 0..V-1 when all_kept) with the reference's prefix.
 * Candidates with p >= thr are exactly the first ones of the full order (p descending), so if
 * their cumulative sum reaches top_p the cut lies among them; otherwise lower thr. */
static int32_t top_p(const scratch_view *s, int32_t V, int all_kept, int32_t n_kept, float pmax,
                     float p_cut) {
    float thr = pmax;
    for (int round = 0;; round++) {
        thr = round >= 4 ? 0.0f : thr * (1.0f / 64.0f);
        int32_t n = 0;
        for (int32_t i = 0; i < n_kept; i++) {
            int32_t j = all_kept ? i : s->ids[i];
            if (s->prob[j] >= thr) s->items[n++] = (item){s->prob[j], j};
        }
        qsort(s->items, (size_t)n, sizeof(item), ts_ref_item_cmp);
        float cum = 0.0f;
        int32_t keep = -1;
        for (int32_t i = 0; i < n; i++) {
            cum += s->items[i].v;
            if (cum >= p_cut) {
                keep = i + 1;
                break;
            }
        }
        if (keep < 0 && n < n_kept) continue; /* not enough candidates yet */
        if (keep < 0) keep = n;
        for (int32_t i = 0; i < keep; i++)
            s->ids[i] = s->items[i].id;
        qsort(s->ids, (size_t)keep, sizeof(int32_t), cmp_id);
        return keep;
    }
}

int32_t ts_cpu_sample(const float *logits, int32_t n_cols, const ts_sampling *p, void *scratch,
                      float *logprob) {
    const int32_t V = n_cols;
    scratch_view s = view(scratch, V);
    int32_t token;

    /* 1. penalty once per distinct id (mark the ids seen, then clear the marks) */
    memcpy(s.l, logits, (size_t)V * sizeof(float));
    if (p->repetition_penalty != 1.0f) {
        for (int32_t i = 0; i < p->n_recent; i++) {
            int32_t id = p->recent[i];
            if (id < 0 || id >= V || s.mark[id]) continue;
            s.mark[id] = 1;
            s.l[id] =
                s.l[id] > 0 ? s.l[id] / p->repetition_penalty : s.l[id] * p->repetition_penalty;
        }
        for (int32_t i = 0; i < p->n_recent; i++)
            if (p->recent[i] >= 0 && p->recent[i] < V) s.mark[p->recent[i]] = 0;
    }
    for (int32_t i = 0; i < p->n_bias; i++) /* 1b. additive biases, in order */
        if (p->bias_ids[i] >= 0 && p->bias_ids[i] < V) s.l[p->bias_ids[i]] += p->bias[i];

    /* 2. greedy */
    if (p->temperature <= 0.0f) {
        token = ts_ref_argmax_row(s.l, V);
        goto done;
    }

    /* 3. top-k; otherwise every id is kept */
    int all = 1;
    int32_t n_kept = V;
    if (p->top_k > 0 && p->top_k < V) {
        n_kept = top_k(&s, V, p->top_k);
        all = 0;
    }
#define KEPT(i) (all ? (i) : s.ids[i])

    /* 4. softmax in id order */
    const float T = p->temperature;
    float max = -INFINITY, sum = 0.0f, pmax = 0.0f;
    for (int32_t i = 0; i < n_kept; i++)
        if (s.l[KEPT(i)] / T > max) max = s.l[KEPT(i)] / T;
    for (int32_t i = 0; i < n_kept; i++) {
        int32_t j = KEPT(i);
        s.prob[j] = expf(s.l[j] / T - max);
        sum += s.prob[j];
    }
    for (int32_t i = 0; i < n_kept; i++) {
        int32_t j = KEPT(i);
        s.prob[j] = s.prob[j] / sum;
        if (s.prob[j] > pmax) pmax = s.prob[j];
    }

    /* 5. top-p */
    if (p->top_p < 1.0f) {
        n_kept = top_p(&s, V, all, n_kept, pmax, p->top_p);
        all = 0;
    }

    /* 6. min-p: compact the kept ids */
    if (p->min_p > 0.0f) {
        const float floor_p = (p->min_p < 1.0f ? p->min_p : 1.0f) * pmax;
        int32_t n = 0;
        for (int32_t i = 0; i < n_kept; i++) {
            int32_t j = KEPT(i);
            if (!(s.prob[j] < floor_p)) s.ids[n++] = j;
        }
        n_kept = n;
        all = 0;
    }

    /* 7. draw in id order */
    float total = 0.0f;
    for (int32_t i = 0; i < n_kept; i++)
        total += s.prob[KEPT(i)];
    const float target = p->uniform * total;
    float acc = 0.0f;
    token = -1;
    for (int32_t i = 0; i < n_kept; i++) {
        token = KEPT(i);
        acc += s.prob[token];
        if (acc > target) break;
    }
#undef KEPT

done:
    if (logprob) *logprob = ts_ref_logprob(logits, V, token);
    return token;
}
