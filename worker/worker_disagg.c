/*
 * worker_disagg.c — see worker_disagg.h. One table of the requests this module follows; each
 * is a prefill request (open sender, from Submit to the transfer's verdict) or a decode request
 * (waiting for its transfer to be claimed).
 */
#include "worker/worker_disagg.h"

#include "common/clock.h"
#include "common/error.h"
#include "common/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
    PREFILLING = 1, /* in the scheduler, sender open */
    SENDING,        /* blocks shipped, end queued: polling for the verdict */
    SHIP_FAILED,    /* shipping failed in the release hook: the first token becomes an error */
    ENDED,          /* the first token ended the request: transfer aborted */
    CLAIMING,       /* decode: waiting for the transfer, then for room */
} state;

typedef struct entry {
    uint64_t id, transfer_id;
    state st;
    int32_t max_tokens; /* prefill: the request's own (the scheduler runs it with 1) */
    int32_t n_prompt;
    bool armed; /* prefill: its last prompt step ships each layer as it is computed */
    int64_t t0; /* prefill: blocks shipped; decode: Submit */
    char error[300];
    /* decode */
    int32_t *prompt;
    int32_t first_token;
    ts_request_params params;
} entry;

struct ts_wdis {
    ts_kvx_group *g;
    ts_sched *sched;
    int32_t max_ctx, max_blocks;
    int timeout_ms;
    ts_wdis_emit emit;
    void *user;
    entry *e;
    int n, cap;
    int32_t *ids; /* [max_blocks] claim buffer */
};

static entry *find(ts_wdis *d, uint64_t id) {
    for (int i = 0; i < d->n; i++)
        if (d->e[i].id == id) return &d->e[i];
    return NULL;
}

static void remove_entry(ts_wdis *d, entry *x) {
    free(x->prompt);
    *x = d->e[--d->n];
}

static entry *add(ts_wdis *d, uint64_t id, uint64_t transfer_id, state st, int32_t n_prompt) {
    if (d->n == d->cap) {
        int cap = d->cap ? d->cap * 2 : 32;
        entry *p = realloc(d->e, (size_t)cap * sizeof *p);
        if (!p) return NULL;
        d->e = p;
        d->cap = cap;
    }
    entry *x = &d->e[d->n++];
    memset(x, 0, sizeof *x);
    x->id = id;
    x->transfer_id = transfer_id;
    x->st = st;
    x->n_prompt = n_prompt;
    x->t0 = ts_now_ns();
    return x;
}

static void emit_finish(ts_wdis *d, uint64_t id, int32_t n_prompt, ts_finish_reason finish,
                        const char *error) {
    ts_sched_event ev = {.request_id = id, .token = -1, .finish = finish, .n_prompt = n_prompt};
    d->emit(d->user, &ev, error, false, 0.0f);
}

/* ---- prefill ---------------------------------------------------------------------------- */

static void on_release(void *user, uint64_t id, ts_finish_reason finish, const int32_t *blocks,
                       int32_t n_blocks, int32_t n_computed) {
    ts_wdis *d = user;
    entry *x = find(d, id);
    if (!x || x->st != PREFILLING) return;
    bool goes_on = finish == TS_FINISH_LENGTH && x->max_tokens > 1 && n_computed + 1 < d->max_ctx;
    if (!goes_on) {
        ts_kvx_group_send_abort(d->g, x->transfer_id);
        x->st = ENDED;
        return;
    }
    int rc = x->armed ? TS_OK : ts_kvx_group_send_blocks(d->g, x->transfer_id, blocks, 0, n_blocks);
    if (!rc) rc = ts_kvx_group_send_end(d->g, x->transfer_id);
    if (rc) {
        snprintf(x->error, sizeof x->error, "KV transfer to the decode group: %s",
                 ts_error_message());
        ts_kvx_group_send_abort(d->g, x->transfer_id);
        x->st = SHIP_FAILED;
        return;
    }
    TS_DEBUG("request %llu: KV of %d blocks %s", (unsigned long long)id, n_blocks,
             x->armed ? "shipped layer by layer during the last prompt step"
                      : "shipped after the step");
    x->st = SENDING;
    x->t0 = ts_now_ns();
}

/* Before the step that completes R's prompt: ship every layer from the engine's layer hook as
 * soon as it is computed, so that the transfer overlaps the rest of the step. */
static void on_prompt_step(void *user, uint64_t id, int32_t seq_index, int32_t n_blocks) {
    ts_wdis *d = user;
    entry *x = find(d, id);
    if (!x || x->st != PREFILLING || x->armed) return;
    int rc = ts_kvx_group_send_arm(d->g, x->transfer_id, seq_index, 0, n_blocks);
    if (rc) /* shipped after the step instead (send_blocks in on_release) */
        TS_DEBUG("request %llu: arming the KV transfer: %s", (unsigned long long)id,
                 ts_error_message());
    x->armed = rc == TS_OK;
}

void ts_wdis_submit_prefill(ts_wdis *d, uint64_t id, uint64_t transfer_id, const char *endpoints,
                            const int32_t *prompt, int32_t n_prompt, const ts_request_params *p) {
    if (find(d, id)) {
        emit_finish(d, id, n_prompt, TS_FINISH_ERROR, "request id already active");
        return;
    }
    int rc = ts_kvx_group_send_open(d->g, transfer_id, n_prompt, endpoints);
    if (rc) {
        char why[400];
        snprintf(why, sizeof why, "opening the KV transfer to %s: %s", endpoints,
                 ts_error_message());
        emit_finish(d, id, n_prompt, TS_FINISH_ERROR, why);
        return;
    }
    ts_request_params one = *p;
    one.max_tokens = 1;
    rc = ts_sched_submit(d->sched, id, prompt, n_prompt, &one);
    entry *x = rc ? NULL : add(d, id, transfer_id, PREFILLING, n_prompt);
    if (!x) {
        char why[400];
        snprintf(why, sizeof why, "%s", rc ? ts_error_message() : "out of memory");
        if (!rc) ts_sched_cancel(d->sched, id, NULL, NULL);
        ts_kvx_group_send_abort(d->g, transfer_id);
        emit_finish(d, id, n_prompt, TS_FINISH_ERROR, why);
        return;
    }
    x->max_tokens = p->max_tokens;
}

void ts_wdis_filter(ts_wdis *d, ts_sched_event *ev, const char **error) {
    entry *x = find(d, ev->request_id);
    if (!x || x->st == CLAIMING) return;
    if (ev->finish == TS_FINISH_CANCELLED) {
        ts_kvx_group_send_abort(d->g, x->transfer_id);
        remove_entry(d, x);
        return;
    }
    if (ev->finish == TS_FINISH_ERROR) return; /* the group is failing: abort_all follows */
    switch (x->st) {
    case SENDING:
        ev->finish = TS_FINISH_NONE; /* the decode group continues */
        break;
    case SHIP_FAILED:
        /* Nothing streamed yet: an error instead of the token lets the coordinator retry. */
        TS_WARN("request %llu: %s", (unsigned long long)x->id, x->error);
        ev->token = -1;
        ev->finish = TS_FINISH_ERROR;
        ev->n_generated = 0;
        *error = x->error; /* copied by the caller before the entry is reused */
        x->st = ENDED;
        break;
    default: break;
    }
    if (x->st == ENDED) {
        /* keep the error text alive until the caller copied it: entries are removed lazily */
        x->id = 0;
        x->transfer_id = 0;
    }
}

/* ---- decode ----------------------------------------------------------------------------- */

void ts_wdis_submit_decode(ts_wdis *d, uint64_t id, uint64_t transfer_id, int32_t first_token,
                           const int32_t *prompt, int32_t n_prompt, const ts_request_params *p) {
    if (!ts_kvx_group_endpoints(d->g)[0]) {
        emit_finish(d, id, n_prompt, TS_FINISH_ERROR, "this group does not receive KV");
        return;
    }
    if (find(d, id) || n_prompt < 1) {
        emit_finish(d, id, n_prompt, TS_FINISH_ERROR,
                    n_prompt < 1 ? "the prompt is empty" : "request id already active");
        return;
    }
    entry *x = add(d, id, transfer_id, CLAIMING, n_prompt);
    if (x) x->prompt = malloc((size_t)n_prompt * sizeof *prompt);
    if (!x || !x->prompt) {
        if (x) remove_entry(d, x);
        ts_kvx_group_recv_drop(d->g, transfer_id);
        emit_finish(d, id, n_prompt, TS_FINISH_ERROR, "out of memory");
        return;
    }
    memcpy(x->prompt, prompt, (size_t)n_prompt * sizeof *prompt);
    x->first_token = first_token;
    x->params = *p;
}

/* 1 when x is done with (removed), 0 to poll again. */
static int poll_claim(ts_wdis *d, entry *x) {
    int rc = ts_kvx_group_recv_poll(d->g, x->transfer_id);
    char why[400];
    if (rc == TS_E_TIMEOUT) {
        if ((ts_now_ns() - x->t0) / 1000000 <= d->timeout_ms) return 0;
        snprintf(why, sizeof why, "the KV cache did not arrive within %d ms", d->timeout_ms);
        ts_kvx_group_recv_drop(d->g, x->transfer_id);
    } else if (rc) {
        snprintf(why, sizeof why, "KV transfer failed: %s", ts_error_message());
        ts_kvx_group_recv_drop(d->g, x->transfer_id);
    } else {
        int32_t n_blocks = 0, n_tokens = 0;
        rc = ts_kvx_group_recv_claim(d->g, ts_sched_pool(d->sched), x->transfer_id, d->ids,
                                     d->max_blocks, &n_blocks, &n_tokens);
        if (rc == TS_E_EXHAUSTED) return 0; /* no room yet: blocks free up as streams end */
        if (!rc && n_tokens != x->n_prompt) {
            for (int32_t i = 0; i < n_blocks; i++)
                ts_kv_pool_release(ts_sched_pool(d->sched), d->ids[i]);
            rc = ts_error_set(TS_E_INVALID, "the transfer holds %d tokens, the prompt %d", n_tokens,
                              x->n_prompt);
        }
        if (!rc)
            rc = ts_sched_submit_prefilled(d->sched, x->id, x->prompt, x->n_prompt, x->first_token,
                                           d->ids, n_blocks, &x->params);
        if (!rc) {
            TS_DEBUG("request %llu: KV claimed (%d blocks, %d prompt tokens) %.2f ms after the "
                     "Submit, decoding",
                     (unsigned long long)x->id, n_blocks, x->n_prompt,
                     (double)(ts_now_ns() - x->t0) / 1e6);
            remove_entry(d, x);
            return 1;
        }
        snprintf(why, sizeof why, "installing the transferred KV cache: %s", ts_error_message());
    }
    emit_finish(d, x->id, x->n_prompt, TS_FINISH_ERROR, why);
    remove_entry(d, x);
    return 1;
}

/* ---- both ------------------------------------------------------------------------------- */

/* 1 when x is done with (removed), 0 to poll again. */
static int poll_send(ts_wdis *d, entry *x) {
    int rc = ts_kvx_group_send_poll(d->g, x->transfer_id);
    if (rc == TS_E_TIMEOUT) return 0;
    ts_sched_event ev = {.request_id = x->id, .token = -1, .n_prompt = x->n_prompt};
    float ms = (float)((ts_now_ns() - x->t0) / 1e6);
    if (rc) {
        char why[400];
        snprintf(why, sizeof why, "KV transfer to the decode group failed: %s", ts_error_message());
        ev.finish = TS_FINISH_ERROR;
        d->emit(d->user, &ev, why, false, ms);
    } else {
        d->emit(d->user, &ev, NULL, true, ms);
    }
    remove_entry(d, x);
    return 1;
}

void ts_wdis_poll(ts_wdis *d) {
    for (int i = 0; i < d->n;) {
        entry *x = &d->e[i];
        int done = x->st == SENDING    ? poll_send(d, x)
                   : x->st == CLAIMING ? poll_claim(d, x)
                   : x->st == ENDED    ? (remove_entry(d, x), 1)
                                       : 0;
        if (!done) i++; /* a removal moved the last entry here */
    }
}

bool ts_wdis_busy(const ts_wdis *d) {
    for (int i = 0; i < d->n; i++)
        if (d->e[i].st == SENDING || d->e[i].st == CLAIMING) return true;
    return false;
}

void ts_wdis_cancel(ts_wdis *d, uint64_t id, uint64_t transfer_id, bool in_sched) {
    entry *x = find(d, id);
    if (x && x->st == CLAIMING) {
        ts_kvx_group_recv_drop(d->g, x->transfer_id);
        emit_finish(d, id, x->n_prompt, TS_FINISH_CANCELLED, NULL);
        remove_entry(d, x);
    } else if (x && !in_sched) {
        ts_kvx_group_send_abort(d->g, x->transfer_id);
        if (x->st == SENDING) emit_finish(d, id, x->n_prompt, TS_FINISH_CANCELLED, NULL);
        remove_entry(d, x);
    }
    /* A transfer that arrived (or is arriving) before its decode Submit. */
    if (transfer_id && ts_kvx_group_endpoints(d->g)[0])
        ts_kvx_group_recv_drop(d->g, transfer_id); /* unknown is fine */
}

void ts_wdis_abort_all(ts_wdis *d, ts_finish_reason reason) {
    while (d->n > 0) {
        entry *x = &d->e[0];
        if (x->st == CLAIMING) {
            ts_kvx_group_recv_drop(d->g, x->transfer_id);
            emit_finish(d, x->id, x->n_prompt, reason, NULL);
        } else if (x->st != ENDED) {
            ts_kvx_group_send_abort(d->g, x->transfer_id);
            if (x->st == SENDING) emit_finish(d, x->id, x->n_prompt, reason, NULL);
        }
        remove_entry(d, x);
    }
}

int ts_wdis_create(ts_kvx_group *g, ts_sched *sched, int32_t max_ctx, int32_t block_size,
                   int timeout_ms, ts_wdis_emit emit, void *user, ts_wdis **out) {
    *out = NULL;
    ts_wdis *d = calloc(1, sizeof *d);
    if (!d) return ts_error_set(TS_E_NOMEM, "out of memory");
    d->g = g;
    d->sched = sched;
    d->max_ctx = max_ctx;
    d->max_blocks = (max_ctx + block_size - 1) / block_size;
    d->timeout_ms = timeout_ms > 0 ? timeout_ms : 30000;
    d->emit = emit;
    d->user = user;
    d->ids = malloc((size_t)d->max_blocks * sizeof *d->ids);
    if (!d->ids) {
        free(d);
        return ts_error_set(TS_E_NOMEM, "out of memory");
    }
    ts_sched_set_release_hook(sched, on_release, d);
    ts_sched_set_prompt_hook(sched, on_prompt_step, d);
    *out = d;
    return TS_OK;
}

void ts_wdis_destroy(ts_wdis *d) {
    if (!d) return;
    ts_sched_set_release_hook(d->sched, NULL, NULL);
    ts_sched_set_prompt_hook(d->sched, NULL, NULL);
    for (int i = 0; i < d->n; i++)
        free(d->e[i].prompt);
    free(d->e);
    free(d->ids);
    free(d);
}
