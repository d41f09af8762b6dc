/*
 * kv_transfer_group.c — see kv_transfer_group.h.
 *
 * Each leader call encodes one task message (a fixed struct, then the block ids or the endpoint
 * list) and runs it with ts_engine_run_task; every rank's handler applies it to its own
 * receiver and senders. The message is a plain struct because every rank of a group runs the
 * same build.
 */
#include "kvx/kv_transfer_group.h"

#include "common/error.h"
#include "common/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { TASK_MAGIC = 0x5447584b, /* "KXGT" */ ENDPOINT_BYTES = 300, MAX_DST = 256 };

typedef enum {
    OP_SEND_OPEN = 1,
    OP_SEND_ARM,
    OP_SEND_BLOCKS,
    OP_SEND_FINISH,
    OP_SEND_END,
    OP_SEND_POLL,
    OP_SEND_ABORT,
    OP_RECV_WAIT,
    OP_RECV_POLL,
    OP_RECV_INSTALL,
    OP_RECV_DROP,
} task_op;

typedef struct task {
    uint32_t magic;
    uint32_t op;
    uint64_t request_id;
    int32_t n_tokens;
    int32_t seq_index;
    int32_t first;
    int32_t n; /* blocks that follow (BLOCKS, INSTALL), or endpoint bytes (OPEN) */
    int32_t timeout_ms;
    int32_t pad;
} task;

typedef struct sending {
    uint64_t id;
    ts_kvx_sender *tx;
    bool armed; /* ship from the layer hook during the next step */
    int32_t seq_index, first, n;
    int rc; /* the first error of the hook */
} sending;

struct ts_kvx_group {
    ts_engine *engine;
    uint64_t fingerprint;
    int timeout_ms;
    ts_kvx_transport transport;
    ts_kvx_receiver *rx;
    char *endpoints; /* leader: every rank's, comma-separated */
    sending *sends;
    int n_sends, cap_sends;
    uint8_t *msg; /* leader: the task being built */
    size_t msg_cap;
};

static sending *find_send(ts_kvx_group *g, uint64_t id) {
    for (int i = 0; i < g->n_sends; i++)
        if (g->sends[i].id == id) return &g->sends[i];
    return NULL;
}

static void remove_send(ts_kvx_group *g, sending *s) {
    ts_kvx_sender_destroy(s->tx);
    *s = g->sends[--g->n_sends];
}

/* ------------------------------------------------------------------ every rank */

static void ship_armed(void *user, const ts_batch *b, int32_t layer) {
    ts_kvx_group *g = user;
    int32_t last = ts_engine_hparams(g->engine)->n_layers - 1;
    for (int i = 0; i < g->n_sends; i++) {
        sending *s = &g->sends[i];
        if (!s->armed) continue;
        if (s->rc == 0 && s->seq_index >= b->n_seqs)
            s->rc = ts_error_set(TS_E_INVALID, "request %llu armed as sequence %d of a batch of %d",
                                 (unsigned long long)s->id, s->seq_index, b->n_seqs);
        const ts_batch_seq *q = &b->seqs[s->seq_index < b->n_seqs ? s->seq_index : 0];
        if (s->rc == 0 && s->first + s->n > q->n_blocks)
            s->rc = ts_error_set(TS_E_INVALID, "request %llu: blocks beyond its table",
                                 (unsigned long long)s->id);
        if (s->rc == 0)
            s->rc =
                ts_kvx_sender_send_layer(s->tx, layer, b->block_ids + q->block0, s->first, s->n);
        if (layer == last) s->armed = false;
    }
}

static int split_endpoints(const char *list, size_t bytes, char *copy, const char **eps, int *n) {
    if (bytes == 0 || bytes >= (size_t)MAX_DST * ENDPOINT_BYTES)
        return ts_error_set(TS_E_INVALID, "no decode endpoints");
    memcpy(copy, list, bytes);
    copy[bytes] = 0;
    *n = 0;
    for (char *p = copy; p && *n < MAX_DST;) {
        eps[(*n)++] = p;
        p = strchr(p, ',');
        if (p) *p++ = 0;
    }
    return TS_OK;
}

static int task_send_open(ts_kvx_group *g, const task *t, const char *list) {
    if (find_send(g, t->request_id))
        return ts_error_set(TS_E_INVALID, "request %llu: a transfer is already open",
                            (unsigned long long)t->request_id);
    char *copy = malloc((size_t)t->n + 1);
    const char **eps = malloc(MAX_DST * sizeof *eps);
    int n_eps = 0, rc = copy && eps ? TS_OK : ts_error_set(TS_E_NOMEM, "out of memory");
    if (!rc) rc = split_endpoints(list, (size_t)t->n, copy, eps, &n_eps);
    if (!rc && g->n_sends == g->cap_sends) {
        int cap = g->cap_sends ? 2 * g->cap_sends : 8;
        sending *grown = realloc(g->sends, (size_t)cap * sizeof *grown);
        if (!grown)
            rc = ts_error_set(TS_E_NOMEM, "out of memory");
        else {
            g->sends = grown;
            g->cap_sends = cap;
        }
    }
    ts_kvx_sender *tx = NULL;
    if (!rc) {
        ts_kvx_sender_options so = {.request_id = t->request_id,
                                    .fingerprint = g->fingerprint,
                                    .n_tokens = t->n_tokens,
                                    .dst_endpoints = eps,
                                    .dst_size = n_eps,
                                    .timeout_ms = g->timeout_ms,
                                    .transport = g->transport};
        rc = ts_kvx_sender_open(g->engine, &so, &tx);
    }
    if (!rc) g->sends[g->n_sends++] = (sending){.id = t->request_id, .tx = tx};
    free(copy);
    free(eps);
    return rc;
}

static int task_on_sender(ts_kvx_group *g, const task *t, const int32_t *blocks) {
    sending *s = find_send(g, t->request_id);
    if (!s && t->op == OP_SEND_ABORT) return TS_OK; /* this rank never opened it */
    if (!s)
        return ts_error_set(TS_E_NOT_FOUND, "request %llu: no open KV transfer",
                            (unsigned long long)t->request_id);
    int rc = TS_OK;
    switch (t->op) {
    case OP_SEND_ARM:
        s->armed = true;
        s->seq_index = t->seq_index;
        s->first = t->first;
        s->n = t->n;
        break;
    case OP_SEND_BLOCKS: /* the message holds the table's first t->n entries */
        for (int32_t l = 0; !rc && l < ts_engine_hparams(g->engine)->n_layers; l++)
            rc = ts_kvx_sender_send_layer(s->tx, l, blocks, t->first, t->n - t->first);
        break;
    case OP_SEND_FINISH:
        rc = s->rc ? ts_error_set(s->rc, "shipping layers of request %llu failed",
                                  (unsigned long long)s->id)
                   : ts_kvx_sender_finish(s->tx);
        remove_send(g, s);
        break;
    case OP_SEND_END:
        rc = s->rc ? ts_error_set(s->rc, "shipping layers of request %llu failed",
                                  (unsigned long long)s->id)
                   : ts_kvx_sender_end(s->tx);
        break;
    case OP_SEND_POLL: rc = ts_kvx_sender_wait(s->tx, 0); break;
    default: /* OP_SEND_ABORT */ remove_send(g, s); break;
    }
    return rc;
}

static int task_on_receiver(ts_kvx_group *g, const task *t, const int32_t *blocks) {
    if (!g->rx) return ts_error_set(TS_E_UNSUPPORTED, "this group does not receive KV transfers");
    switch (t->op) {
    case OP_RECV_WAIT: return ts_kvx_receiver_wait(g->rx, t->request_id, t->timeout_ms);
    case OP_RECV_POLL: return ts_kvx_receiver_status(g->rx, t->request_id);
    case OP_RECV_INSTALL:
        return ts_kvx_receiver_install(g->rx, g->engine, t->request_id, blocks, t->n);
    default: { /* OP_RECV_DROP: a transfer this rank never saw is already dropped */
        int rc = ts_kvx_receiver_drop(g->rx, t->request_id);
        return rc == TS_E_NOT_FOUND ? TS_OK : rc;
    }
    }
}

int ts_kvx_group_task(void *group, ts_engine *e, const void *msg, size_t bytes) {
    ts_kvx_group *g = group;
    (void)e;
    task t;
    if (bytes < sizeof t) return ts_error_set(TS_E_NOT_FOUND, "not a KV transfer task");
    memcpy(&t, msg, sizeof t);
    if (t.magic != TASK_MAGIC) return ts_error_set(TS_E_NOT_FOUND, "not a KV transfer task");
    const uint8_t *extra = (const uint8_t *)msg + sizeof t;
    size_t extra_bytes = bytes - sizeof t;
    bool with_blocks = t.op == OP_SEND_BLOCKS || t.op == OP_RECV_INSTALL;
    if (t.n < 0 || (with_blocks && extra_bytes != (size_t)t.n * sizeof(int32_t)) ||
        (t.op == OP_SEND_OPEN && extra_bytes != (size_t)t.n))
        return ts_error_set(TS_E_INTERNAL, "malformed KV transfer task");
    int32_t *blocks = NULL;
    if (with_blocks && t.n > 0) { /* the message need not be aligned for int32 */
        blocks = malloc(extra_bytes);
        if (!blocks) return ts_error_set(TS_E_NOMEM, "out of memory");
        memcpy(blocks, extra, extra_bytes);
    }
    int rc;
    if (t.op == OP_SEND_OPEN)
        rc = task_send_open(g, &t, (const char *)extra);
    else if (t.op >= OP_SEND_ARM && t.op <= OP_SEND_ABORT)
        rc = task_on_sender(g, &t, blocks);
    else if (t.op >= OP_RECV_WAIT && t.op <= OP_RECV_DROP)
        rc = task_on_receiver(g, &t, blocks);
    else
        rc = ts_error_set(TS_E_INTERNAL, "unknown KV transfer task %u", t.op);
    free(blocks);
    return rc;
}

int ts_kvx_group_create(ts_engine *e, const ts_model *m, const ts_kvx_group_options *opts,
                        ts_kvx_group **out) {
    *out = NULL;
    ts_kvx_group *g = calloc(1, sizeof *g);
    if (!g) return ts_error_set(TS_E_NOMEM, "out of memory");
    g->engine = e;
    const ts_engine_options *eo = ts_engine_options_get(e);
    g->fingerprint = ts_kvx_fingerprint(m, eo->kv_type, eo->block_size);
    g->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 30000;
    g->transport = opts->transport;
    /* Every rank of a group runs on the same kind of device, so all fail alike (in step). */
    int rc = opts->transport == TS_KVX_NCCL ? ts_kvx_nccl_supported(e) : TS_OK;
    char mine[ENDPOINT_BYTES] = "";
    if (!rc && opts->receive) {
        ts_kvx_receiver_options ro = opts->receiver;
        ro.fingerprint = g->fingerprint;
        rc = ts_kvx_receiver_open(e, &ro, &g->rx);
        if (!rc) snprintf(mine, sizeof mine, "%s", ts_kvx_receiver_endpoint(g->rx));
    }
    /* Every rank takes part in the gather even after a local failure, so that no rank waits
     * forever; the failure is reported afterwards. */
    ts_comm *c = ts_engine_comm(e);
    char *all = calloc((size_t)c->size, ENDPOINT_BYTES);
    g->endpoints = calloc((size_t)c->size, ENDPOINT_BYTES + 1);
    int rc2 = all && g->endpoints ? ts_comm_allgather(c, mine, all, ENDPOINT_BYTES)
                                  : ts_error_set(TS_E_NOMEM, "out of memory");
    if (!rc) rc = rc2;
    for (int r = 0; !rc && opts->receive && r < c->size; r++) {
        const char *ep = all + (size_t)r * ENDPOINT_BYTES;
        if (!ep[0]) /* every rank fails alike, so the group stays in step */
            rc = ts_error_set(TS_E_UNAVAILABLE, "rank %d could not open its KV receiver", r);
        if (r) strcat(g->endpoints, ",");
        strncat(g->endpoints, ep, ENDPOINT_BYTES - 1);
    }
    free(all);
    if (rc) {
        ts_kvx_group_destroy(g);
        return rc;
    }
    ts_engine_set_task_handler(e, ts_kvx_group_task, g);
    ts_engine_set_layer_hook(e, ship_armed, g);
    *out = g;
    return TS_OK;
}

void ts_kvx_group_destroy(ts_kvx_group *g) {
    if (!g) return;
    if (g->engine) {
        ts_engine_set_task_handler(g->engine, NULL, NULL);
        ts_engine_set_layer_hook(g->engine, NULL, NULL);
    }
    while (g->n_sends > 0)
        remove_send(g, &g->sends[0]);
    free(g->sends);
    ts_kvx_receiver_close(g->rx);
    free(g->endpoints);
    free(g->msg);
    free(g);
}

const char *ts_kvx_group_endpoints(const ts_kvx_group *g) {
    return g->endpoints;
}
ts_kvx_receiver *ts_kvx_group_receiver(const ts_kvx_group *g) {
    return g->rx;
}

/* ------------------------------------------------------------------ leader */

static int run(ts_kvx_group *g, const task *t, const void *extra, size_t extra_bytes) {
    size_t bytes = sizeof *t + extra_bytes;
    if (bytes > g->msg_cap) {
        uint8_t *grown = realloc(g->msg, bytes);
        if (!grown) return ts_error_set(TS_E_NOMEM, "out of memory");
        g->msg = grown;
        g->msg_cap = bytes;
    }
    memcpy(g->msg, t, sizeof *t);
    if (extra_bytes) memcpy(g->msg + sizeof *t, extra, extra_bytes);
    return ts_engine_run_task(g->engine, g->msg, bytes);
}

static task make(task_op op, uint64_t id) {
    return (task){.magic = TASK_MAGIC, .op = op, .request_id = id};
}

int ts_kvx_group_send_open(ts_kvx_group *g, uint64_t request_id, int32_t n_tokens,
                           const char *dst_endpoints) {
    /* Checked here first: the abort below must not end the transfer already open. */
    if (find_send(g, request_id))
        return ts_error_set(TS_E_INVALID, "request %llu: a transfer is already open",
                            (unsigned long long)request_id);
    task t = make(OP_SEND_OPEN, request_id);
    size_t len = dst_endpoints ? strlen(dst_endpoints) : 0;
    t.n_tokens = n_tokens;
    t.n = (int32_t)len;
    int rc = run(g, &t, dst_endpoints, len);
    if (rc) { /* ranks that did open must not keep a half-open transfer */
        int keep = rc;
        char message[512];
        snprintf(message, sizeof message, "%s", ts_error_message());
        ts_kvx_group_send_abort(g, request_id);
        rc = ts_error_set(keep, "%s", message);
    }
    return rc;
}

int ts_kvx_group_send_arm(ts_kvx_group *g, uint64_t request_id, int32_t seq_index, int32_t first,
                          int32_t n) {
    task t = make(OP_SEND_ARM, request_id);
    t.seq_index = seq_index;
    t.first = first;
    t.n = n;
    return run(g, &t, NULL, 0);
}

int ts_kvx_group_send_blocks(ts_kvx_group *g, uint64_t request_id, const int32_t *block_table,
                             int32_t first, int32_t n) {
    task t = make(OP_SEND_BLOCKS, request_id);
    t.first = first;
    t.n = first + n;
    return run(g, &t, block_table, (size_t)t.n * sizeof(int32_t));
}

int ts_kvx_group_send_finish(ts_kvx_group *g, uint64_t request_id) {
    return run(g, &(task){.magic = TASK_MAGIC, .op = OP_SEND_FINISH, .request_id = request_id},
               NULL, 0);
}

int ts_kvx_group_send_end(ts_kvx_group *g, uint64_t request_id) {
    return run(g, &(task){.magic = TASK_MAGIC, .op = OP_SEND_END, .request_id = request_id}, NULL,
               0);
}

int ts_kvx_group_send_poll(ts_kvx_group *g, uint64_t request_id) {
    int rc =
        run(g, &(task){.magic = TASK_MAGIC, .op = OP_SEND_POLL, .request_id = request_id}, NULL, 0);
    if (rc == TS_E_TIMEOUT) return rc; /* still in flight somewhere */
    char message[512];
    snprintf(message, sizeof message, "%s", rc ? ts_error_message() : "");
    /* Decided: the senders are done with (finished or failed) on every rank. */
    int rc2 = ts_kvx_group_send_abort(g, request_id);
    if (rc) return ts_error_set(rc, "%s", message);
    return rc2;
}

int ts_kvx_group_send_abort(ts_kvx_group *g, uint64_t request_id) {
    return run(g, &(task){.magic = TASK_MAGIC, .op = OP_SEND_ABORT, .request_id = request_id}, NULL,
               0);
}

int ts_kvx_group_recv_wait(ts_kvx_group *g, uint64_t request_id, int timeout_ms) {
    task t = make(OP_RECV_WAIT, request_id);
    t.timeout_ms = timeout_ms;
    return run(g, &t, NULL, 0);
}

int ts_kvx_group_recv_poll(ts_kvx_group *g, uint64_t request_id) {
    if (!g->rx) return ts_error_set(TS_E_UNSUPPORTED, "this group does not receive KV transfers");
    /* The leader's own part first: no group task while it is still arriving. */
    int rc = ts_kvx_receiver_status(g->rx, request_id);
    if (rc) return rc;
    return run(g, &(task){.magic = TASK_MAGIC, .op = OP_RECV_POLL, .request_id = request_id}, NULL,
               0);
}

int ts_kvx_group_recv_claim(ts_kvx_group *g, ts_kv_pool *pool, uint64_t request_id,
                            int32_t *block_ids, int32_t max_blocks, int32_t *n_blocks,
                            int32_t *n_tokens) {
    if (!g->rx) return ts_error_set(TS_E_UNSUPPORTED, "this group does not receive KV transfers");
    int32_t n = 0, tokens = 0;
    int rc = ts_kvx_receiver_geometry(g->rx, request_id, &tokens, &n);
    if (rc) return rc;
    if (n > max_blocks)
        return ts_error_set(TS_E_INVALID, "request %llu: %d blocks, room for %d",
                            (unsigned long long)request_id, n, max_blocks);
    if (ts_kv_pool_n_free(pool) < n) return TS_E_EXHAUSTED;
    for (int32_t i = 0; i < n; i++)
        ts_kv_pool_alloc(pool, &block_ids[i]); /* room checked */
    task t = make(OP_RECV_INSTALL, request_id);
    t.n = n;
    rc = run(g, &t, block_ids, (size_t)n * sizeof(int32_t));
    if (rc) {
        char message[512];
        snprintf(message, sizeof message, "%s", ts_error_message());
        for (int32_t i = 0; i < n; i++)
            ts_kv_pool_release(pool, block_ids[i]);
        ts_kvx_group_recv_drop(g, request_id);
        return ts_error_set(rc, "%s", message);
    }
    *n_blocks = n;
    *n_tokens = tokens;
    return TS_OK;
}

int ts_kvx_group_recv_drop(ts_kvx_group *g, uint64_t request_id) {
    return run(g, &(task){.magic = TASK_MAGIC, .op = OP_RECV_DROP, .request_id = request_id}, NULL,
               0);
}
