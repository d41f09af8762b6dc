/*
 * http.c — the OpenAI-compatible HTTP API (docs/api.md), the coordinator's second front door.
 * Like api.c it is an adapter over request.c only: a JSON body → ts_request → co_request_admit
 * with the co_output callbacks below → JSON or server-sent events, co_request_client_done when
 * the connection is over. The one validation (request/request.h) judges every field; this file
 * checks only JSON types, n, and what it does not support (echo with logprobs, suffix, best_of
 * other than n), each a 400 naming the field.
 *
 * Choices: a request with n samples and P prompts (a list) has P × n choices, each its own
 * co_request, "index" prompt * n + sample, all admitted at once; a prompt's further samples
 * (co_request_admit_sample) run once its first has produced a token, on its group, whose prefix
 * cache then holds the prompt's KV blocks (the scheduler publishes full blocks each step), so
 * they prefill only the last partial block. With a seed, sample j runs with seed + j (reproducible,
 * and different per sample). One failing choice fails the request; the others are cancelled.
 *
 *   GET  /health                200 {"status":"ok"} while a group serves, else 503
 *   GET  /metrics               Prometheus text format (metrics.h)
 *   POST /tokenize, /detokenize vLLM's: a prompt or chat messages → token ids, ids → text
 *   GET  /v1/models[/ID]        the served model (context_length: the largest group context)
 *   POST /v1/completions        prompt: a string, token ids, or a list of one of those
 *   POST /v1/chat/completions   messages (and tools) through the chat template (chat/chat.h:
 *                               --chat-template, else the model's), special tokens only where
 *                               the template wrote them; stops on every end-of-generation token
 *
 * Errors are OpenAI's shape, {"error": {"message", "type", "param", "code"}}, with the status
 * from the TS_E code (TS_E_INVALID 400, TS_E_EXHAUSTED 429, TS_E_UNAVAILABLE 503, TS_E_TIMEOUT
 * 504), 401 for a missing or wrong key (when --api-key-file is given; checked in constant time
 * on every /v1/ path), 404 for an unknown path or model, 413 for a body over --http-max-body.
 *
 * Threads: libmicrohttpd runs every connection on one event thread (epoll; the connections
 * capped by max_connections), so nothing here may block: a handler takes co->mu to admit and
 * then suspends its connection (MHD_suspend_connection) until there is news, the non-streaming
 * handler until its request is done, the streaming response's reader until bytes are due. The
 * co_output callbacks run under co->mu on the rpc thread, append to the request's buffer and
 * resume the connection if it is suspended (wake): the event thread then sends what is due for
 * every resumed connection in one pass, rather than a thread per connection waking per token.
 * libmicrohttpd does not watch a suspended connection's socket, so a watcher thread polls theirs
 * every HTTP_WAIT_MS and resumes those whose client went away: the connection ends
 * (completed()), which calls co_request_client_done: the node cancels it and frees its KV.
 *
 * Ownership: an http_req is shared by the connection (until request_completed), the co_request
 * (until its release callback) and a streaming response (until its free callback); the count is
 * guarded by co->mu.
 */
#include "coordinator/http.h"
#include "coordinator/http_internal.h"

#include "common/buf.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/json.h"
#include "common/log.h"
#include "chat/chat.h"

#include <microhttpd.h>

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

enum {
    HTTP_MAX_PENDING = 8 << 20, /* streamed bytes a slow client may leave unread */
    HTTP_IDLE_S = 60,
    HTTP_WAIT_MS = 200, /* how often the watcher looks for clients that went away */
};

struct co_http {
    coordinator *co;
    struct MHD_Daemon *d;
    size_t max_body;
    atomic_bool stopping; /* set under co->mu; streams read it without */
    struct http_req *live; /* requests with a connection (the watcher's), under co->mu */
    pthread_t watcher;
    bool watching;           /* the watcher thread runs */
    pthread_cond_t watch_cv; /* paired with co->mu: stop wakes the watcher */
    int64_t created;
    ts_chat_template *chat; /* NULL: chat_why says why there is none */
    char chat_why[512];
    struct co_store *store; /* the Files and Batches API's state (http_batch.c), or NULL */
};

/* One generated token's log-probabilities (params.logprobs), until a response carries it. */
typedef struct lp_entry {
    int32_t token;
    float logprob;
    int32_t n_top;
    int32_t top_ids[TS_MAX_TOP_LOGPROBS];
    float top_logprobs[TS_MAX_TOP_LOGPROBS];
} lp_entry;

enum {
    HTTP_MAX_CHOICES = 1024, /* prompts × n of one request */
};

struct http_req;

/* One choice: one prompt's one sample, run as its own co_request (whose out_user it is). */
typedef struct http_choice {
    struct http_req *h;
    int32_t index;  /* in "choices": prompt * n + sample */
    ts_request req; /* what it runs, until admitted (co_request_admit moves it) */
    co_request *r;  /* NULL before admission and after its release */
    bool sent_role; /* chat stream: the first delta (with the role) went out */
    ts_buf echo;    /* streaming echo: the prompt, for the choice's first chunk */
    ts_buf text;    /* not streaming: the choice's text (the echoed prompt first) */
    ts_finish_reason reason;
    ts_request_usage usage;
    lp_entry *lp; /* tokens not written yet (a stream writes them with its next chunk) */
    size_t n_lp, lp_cap;
    int64_t text_offset; /* completions: where the next token's text starts in the choice */
} http_choice;

/* Under co->mu, except a stream's bytes and the connection's suspension: out, out_off, out_end,
 * suspended and gone are under out_mu, which the output callbacks take inside co->mu (never the
 * other way round), so that the event thread picks up each token without contending for the
 * coordinator's lock with the thread that delivers every stream's tokens. */
typedef struct http_req {
    co_http *srv;
    pthread_mutex_t out_mu;
    struct MHD_Connection *conn;            /* while it has one (hc->h) */
    bool suspended;                         /* conn is suspended: wake() resumes it */
    bool gone;                              /* the watcher found its client gone */
    struct http_req *live_prev, *live_next; /* in srv->live, under co->mu */
    bool out_end;                           /* stream: its last bytes are in out */
    int refs;
    bool stream, include_usage;
    bool chat;     /* /v1/chat/completions: chat.completion objects */
    bool logprobs; /* the request asked for them: choices carry "logprobs" */
    http_choice *choices;
    int32_t n_choices, per_prompt; /* per_prompt: n */
    int32_t n_done;                /* choices finished */
    ts_buf out;                    /* stream: SSE bytes not sent yet (from out_off) */
    size_t out_off;
    bool done; /* answered, failed, or the connection is over: outputs are refused */
    int err;
    char err_msg[512];
    char id[160];
    int64_t created; /* Unix seconds of its arrival */
    int fd;          /* the connection's socket (client_gone), -1: unknown */
} http_req;

/* The connection's state across the handler's calls. */
typedef struct http_conn {
    ts_buf body;
    size_t limit; /* the largest body this path takes */
    bool too_big;
    http_req *h;
} http_conn;

static void req_unref(http_req *h) { /* under co->mu */
    if (--h->refs > 0) return;
    pthread_mutex_destroy(&h->out_mu);
    ts_buf_free(&h->out);
    for (int32_t i = 0; i < h->n_choices; i++) {
        http_choice *ch = &h->choices[i];
        ts_request_free(&ch->req);
        ts_buf_free(&ch->echo);
        ts_buf_free(&ch->text);
        free(ch->lp);
    }
    free(h->choices);
    free(h);
}

/* ---- responses ---- */

static enum MHD_Result send_buf(struct MHD_Connection *c, unsigned status, const char *type,
                                const char *data, size_t n, const char *retry_after) {
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(n, (void *)data, MHD_RESPMEM_MUST_COPY);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (retry_after) MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, retry_after);
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    enum MHD_Result rc = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static void error_json(ts_buf *b, const char *message, const char *type, const char *param,
                       const char *code) {
    ts_json_writer w;
    ts_jw_init(&w, b);
    ts_jw_object_begin(&w);
    ts_jw_key(&w, "error");
    ts_jw_object_begin(&w);
    ts_jw_key(&w, "message");
    ts_jw_string(&w, message);
    ts_jw_key(&w, "type");
    ts_jw_string(&w, type);
    ts_jw_key(&w, "param");
    if (param)
        ts_jw_string(&w, param);
    else
        ts_jw_null(&w);
    ts_jw_key(&w, "code");
    if (code)
        ts_jw_string(&w, code);
    else
        ts_jw_null(&w);
    ts_jw_object_end(&w);
    ts_jw_object_end(&w);
    ts_jw_finish(&w);
}

static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status, const char *message,
                                  const char *type, const char *param, const char *code) {
    ts_buf b = {0};
    error_json(&b, message, type, param, code);
    enum MHD_Result rc = send_buf(c, status, "application/json", b.data ? b.data : "",
                                  b.len, status == 429 ? "1" : NULL);
    ts_buf_free(&b);
    return rc;
}

/* A TS_E code as OpenAI reports it. */
static unsigned status_of(int code, const char **type, const char **ecode) {
    switch (code) {
    case TS_E_INVALID:
        *type = "invalid_request_error", *ecode = NULL;
        return MHD_HTTP_BAD_REQUEST;
    case TS_E_UNSUPPORTED: /* a well-formed ask this server does not do: the client's to change */
        *type = "invalid_request_error", *ecode = "unsupported";
        return MHD_HTTP_BAD_REQUEST;
    case TS_E_NOT_FOUND:
        *type = "invalid_request_error", *ecode = "not_found";
        return MHD_HTTP_NOT_FOUND;
    case TS_E_EXHAUSTED:
        *type = "rate_limit_error", *ecode = "rate_limit_exceeded";
        return MHD_HTTP_TOO_MANY_REQUESTS;
    case TS_E_UNAVAILABLE:
        *type = "server_error", *ecode = "service_unavailable";
        return MHD_HTTP_SERVICE_UNAVAILABLE;
    case TS_E_TIMEOUT:
        *type = "server_error", *ecode = "timeout";
        return MHD_HTTP_GATEWAY_TIMEOUT;
    case TS_E_UNAUTHENTICATED:
        *type = "authentication_error", *ecode = "invalid_api_key";
        return MHD_HTTP_UNAUTHORIZED;
    default:
        *type = "server_error", *ecode = NULL;
        return MHD_HTTP_INTERNAL_SERVER_ERROR;
    }
}

static enum MHD_Result send_code(struct MHD_Connection *c, int code, const char *message,
                                 const char *param) {
    const char *type, *ecode;
    unsigned status = status_of(code, &type, &ecode);
    return send_error(c, status, message, type, param, ecode);
}

/* ---- completions: JSON → ts_request ---- */

typedef struct completion_opts {
    bool chat;
    bool stream, include_usage;
    bool echo;         /* completions: the prompt's text before the completion's */
    int32_t n;         /* samples per prompt */
    const ts_json *prompts; /* completions with a list of several prompts: the list (else NULL;
                             * the request holds the first) */
    const char *param; /* the field a mapping error is about */
} completion_opts;

static int field_error(completion_opts *o, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int field_error(completion_opts *o, const char *param, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    ts_error_setv(TS_E_INVALID, fmt, ap);
    va_end(ap);
    o->param = param;
    return TS_E_INVALID;
}

/* The member `key`, NULL when absent or null. */
static const ts_json *member(const ts_json *obj, const char *key) {
    const ts_json *v = ts_json_get(obj, key);
    return v && v->type != TS_JSON_NULL ? v : NULL;
}

static int get_number(const ts_json *obj, const char *key, double *out, bool *present,
                      completion_opts *o) {
    const ts_json *v = member(obj, key);
    *present = v != NULL;
    if (!v) return TS_OK;
    if (v->type != TS_JSON_NUMBER) return field_error(o, key, "%s must be a number", key);
    *out = v->number;
    return TS_OK;
}

static int get_integer(const ts_json *obj, const char *key, int64_t *out, bool *present,
                       completion_opts *o) {
    const ts_json *v = member(obj, key);
    *present = v != NULL;
    if (!v) return TS_OK;
    if (v->type != TS_JSON_NUMBER || !v->is_integer)
        return field_error(o, key, "%s must be an integer", key);
    *out = v->integer;
    return TS_OK;
}

static int32_t clamp32(int64_t v) {
    return v > INT32_MAX ? INT32_MAX : v < INT32_MIN ? INT32_MIN : (int32_t)v;
}

/* A token-id array → the request's prompt ids. */
static int prompt_ids(const ts_json *a, ts_request *req, completion_opts *o) {
    int32_t *ids = malloc((a->length ? a->length : 1) * sizeof *ids);
    if (!ids) return ts_error_set(TS_E_NOMEM, "out of memory");
    for (size_t i = 0; i < a->length; i++) {
        const ts_json *t = &a->items[i];
        if (t->type != TS_JSON_NUMBER || !t->is_integer) {
            free(ids);
            return field_error(o, "prompt", "prompt[%zu] must be a token id (an integer)", i);
        }
        ids[i] = clamp32(t->integer < 0 ? -1 : t->integer); /* the validation names bad ids */
    }
    if (a->length > INT32_MAX) {
        free(ids);
        return field_error(o, "prompt", "prompt: too many token ids");
    }
    ts_request_take_ids(req, ids, (int32_t)a->length);
    return TS_OK;
}

static bool all_integers(const ts_json *a) {
    for (size_t i = 0; i < a->length; i++)
        if (a->items[i].type != TS_JSON_NUMBER || !a->items[i].is_integer) return false;
    return true;
}

/* One prompt of a list: a string or a non-empty array of token ids. */
static bool is_prompt(const ts_json *one) {
    return one->type == TS_JSON_STRING ||
           (one->type == TS_JSON_ARRAY && one->length > 0 && all_integers(one));
}

/* Prompt i of the list p (is_prompt) → the request's prompt. */
static int prompt_item(const ts_json *p, size_t i, ts_request *req, completion_opts *o) {
    const ts_json *one = &p->items[i];
    return one->type == TS_JSON_STRING ? ts_request_set_text(req, one->string)
                                       : prompt_ids(one, req, o);
}

/* A string, token ids, or a list of either (o->prompts; the request gets the first). */
static int map_prompt(const ts_json *p, ts_request *req, completion_opts *o) {
    if (!p) return field_error(o, "prompt", "prompt is required");
    if (p->type == TS_JSON_STRING) return ts_request_set_text(req, p->string);
    if (p->type != TS_JSON_ARRAY || p->length == 0)
        return field_error(o, "prompt",
                           "prompt must be a string, an array of token ids, or a list of them");
    if (all_integers(p)) return prompt_ids(p, req, o);
    for (size_t i = 0; i < p->length; i++)
        if (!is_prompt(&p->items[i]))
            return field_error(o, "prompt",
                               "prompt[%zu] must be a string or a non-empty array of token ids", i);
    if (p->length > 1) o->prompts = p;
    return prompt_item(p, 0, req, o);
}

static int map_stop(const ts_json *s, ts_request *req, completion_opts *o) {
    if (!s) return TS_OK;
    if (s->type == TS_JSON_STRING) return ts_request_add_stop(req, s->string);
    if (s->type != TS_JSON_ARRAY)
        return field_error(o, "stop", "stop must be a string or an array of strings");
    for (size_t i = 0; i < s->length; i++) {
        if (s->items[i].type != TS_JSON_STRING)
            return field_error(o, "stop", "stop[%zu] must be a string", i);
        int rc = ts_request_add_stop(req, s->items[i].string);
        if (rc) return rc;
    }
    return TS_OK;
}

/* n (1 to TS_MAX_SAMPLES samples per prompt; checked here, before the choices are made), and what
 * is refused rather than ignored, since a client asking for it would get something else: best_of
 * other than n (choosing the best of several samples), suffix (insertion). */
static int map_choices(const ts_json *root, completion_opts *o) {
    int64_t n = 1, best_of = 1;
    bool has;
    int rc = get_integer(root, "n", &n, &has, o);
    if (rc) return rc;
    if (!has) n = 1;
    if (n < 1 || n > TS_MAX_SAMPLES)
        return field_error(o, "n", "n must be in [1, %d], got %lld", TS_MAX_SAMPLES, (long long)n);
    o->n = (int32_t)n;
    if ((rc = get_integer(root, "best_of", &best_of, &has, o))) return rc;
    if (has && best_of != n)
        return field_error(o, "best_of",
                           "best_of must equal n (%lld) here: returning the best of several "
                           "samples is not supported, got %lld",
                           (long long)n, (long long)best_of);
    const ts_json *suffix = member(root, "suffix");
    if (suffix && (suffix->type != TS_JSON_STRING || suffix->length))
        return field_error(o, "suffix", "suffix is not supported");
    return TS_OK;
}

/* logit_bias: {"TOKEN_ID": bias, ...} → the request's entries (the count as given: the
 * validation refuses more than TS_MAX_LOGIT_BIAS, the ids outside the vocabulary and the biases
 * outside [-100, 100]). */
static int map_logit_bias(const ts_json *lb, ts_request_params *p, completion_opts *o) {
    if (!lb) return TS_OK;
    if (lb->type != TS_JSON_OBJECT)
        return field_error(o, "logit_bias",
                           "logit_bias must be an object mapping token ids to biases");
    for (size_t i = 0; i < lb->length; i++) {
        const ts_json_member *m = &lb->members[i];
        char *end = NULL;
        long long id = strtoll(m->key, &end, 10);
        if (m->key_length == 0 || *end || end != m->key + m->key_length)
            return field_error(o, "logit_bias", "logit_bias: key '%s' is not a token id", m->key);
        if (m->value.type != TS_JSON_NUMBER)
            return field_error(o, "logit_bias", "logit_bias['%s'] must be a number", m->key);
        if (i < TS_MAX_LOGIT_BIAS) {
            p->logit_bias_ids[i] = id < -1 ? -1 : id > INT32_MAX ? INT32_MAX : (int32_t)id;
            p->logit_bias[i] = (float)m->value.number;
        }
    }
    p->n_logit_bias = lb->length > INT32_MAX ? INT32_MAX : (int32_t)lb->length;
    return TS_OK;
}

/* Completions: logprobs an integer 0 to 5 (that many alternatives; 0 only the token's own).
 * Chat: logprobs a boolean and top_logprobs 0 to 20 (which needs logprobs true). The request
 * model's sampling.top_logprobs (at most 20) holds the count. */
static int map_logprobs(const ts_json *root, ts_request_params *p, completion_opts *o) {
    const ts_json *lp = member(root, "logprobs");
    int64_t top = 0;
    bool has_top;
    int rc = o->chat ? get_integer(root, "top_logprobs", &top, &has_top, o) : TS_OK;
    if (rc) return rc;
    if (!o->chat) {
        if (!lp) return TS_OK;
        if (lp->type != TS_JSON_NUMBER || !lp->is_integer || lp->integer < 0 || lp->integer > 5)
            return field_error(o, "logprobs",
                               "logprobs must be an integer from 0 to 5 (the most likely tokens "
                               "to report at each position)");
        p->logprobs = true;
        p->top_logprobs = (int32_t)lp->integer;
        return TS_OK;
    }
    if (lp && lp->type != TS_JSON_BOOL)
        return field_error(o, "logprobs", "logprobs must be a boolean (chat completions)");
    p->logprobs = lp && lp->boolean;
    if (has_top && !p->logprobs)
        return field_error(o, "top_logprobs", "top_logprobs needs logprobs: true");
    if (has_top) p->top_logprobs = clamp32(top); /* the table judges it: [0, 20] */
    return TS_OK;
}

/* The body of POST /v1/completions or /v1/chat/completions (not its messages) → req
 * (initialized by the caller). Unknown fields are ignored. Defaults as OpenAI's: max_tokens 16
 * (chat: up to the end of the context), temperature 1, top_p 1; without a seed each request gets
 * a fresh one (co_request_admit: ts_request_pick_seed). */
static int map_completion(co_http *srv, const ts_json *root, ts_request *req,
                          completion_opts *o) {
    if (root->type != TS_JSON_OBJECT)
        return field_error(o, NULL, "the request body must be a JSON object");
    int rc = map_choices(root, o);
    if (rc) return rc;
    req->n = o->n;
    const ts_json *m = member(root, "model");
    if (m && m->type != TS_JSON_STRING) return field_error(o, "model", "model must be a string");
    if (m && (rc = ts_request_set_model(req, m->string))) return rc;
    if (!o->chat && (rc = map_prompt(member(root, "prompt"), req, o))) return rc;
    size_t n_prompts = o->prompts ? o->prompts->length : 1;
    if (n_prompts * (size_t)o->n > HTTP_MAX_CHOICES)
        return field_error(o, o->prompts ? "prompt" : "n",
                           "%zu prompts × n %d is %zu choices, more than %d", n_prompts, o->n,
                           n_prompts * (size_t)o->n, HTTP_MAX_CHOICES);
    if ((rc = map_stop(member(root, "stop"), req, o))) return rc;

    ts_request_params *p = &req->params;
    p->temperature = 1.0f;
    if (o->chat) p->max_tokens = co_largest_context(srv->co); /* up to the context's end */
    int64_t iv = 0;
    double dv = 0;
    bool has;
    if ((rc = get_integer(root, "max_tokens", &iv, &has, o))) return rc;
    if (has) p->max_tokens = clamp32(iv);
    if (o->chat && (rc = get_integer(root, "max_completion_tokens", &iv, &has, o))) return rc;
    if (o->chat && has) p->max_tokens = clamp32(iv);
    if ((rc = get_number(root, "temperature", &dv, &has, o))) return rc;
    if (has) p->temperature = (float)dv;
    if ((rc = get_number(root, "top_p", &dv, &has, o))) return rc;
    if (has) p->top_p = (float)dv;
    if ((rc = get_integer(root, "top_k", &iv, &has, o))) return rc; /* extensions */
    if (has) p->top_k = clamp32(iv);
    if ((rc = get_number(root, "min_p", &dv, &has, o))) return rc;
    if (has) p->min_p = (float)dv;
    if ((rc = get_number(root, "repetition_penalty", &dv, &has, o))) return rc;
    if (has) p->repetition_penalty = (float)dv;
    if ((rc = get_number(root, "presence_penalty", &dv, &has, o))) return rc;
    if (has) p->presence_penalty = (float)dv;
    if ((rc = get_number(root, "frequency_penalty", &dv, &has, o))) return rc;
    if (has) p->frequency_penalty = (float)dv;
    if ((rc = map_logit_bias(member(root, "logit_bias"), p, o))) return rc;
    /* vLLM's priority: lower runs sooner; the request model's is higher first. The table's
     * range is symmetric, so the negated value is judged by the same limits. */
    if ((rc = get_integer(root, "priority", &iv, &has, o))) return rc;
    if (has) p->priority = iv == INT32_MIN ? INT32_MAX : -clamp32(iv);
    req->priority_lower_first = has;
    if ((rc = map_logprobs(root, p, o))) return rc;
    const ts_json *echo = o->chat ? NULL : member(root, "echo");
    if (echo && echo->type != TS_JSON_BOOL) return field_error(o, "echo", "echo must be a boolean");
    o->echo = echo && echo->boolean;
    if (o->echo && p->logprobs)
        return field_error(o, "echo",
                           "echo with logprobs is not supported (the prompt's log-probabilities "
                           "are not computed)");
    const ts_json *user = member(root, "user"); /* accepted: an end-user id for abuse tracking */
    if (user && user->type != TS_JSON_STRING)
        return field_error(o, "user", "user must be a string");
    if ((rc = get_integer(root, "seed", &iv, &has, o))) return rc;
    p->seed = (uint64_t)iv;
    req->has_seed = has; /* else co_request_admit draws a fresh one */

    const ts_json *ie = member(root, "ignore_eos");
    if (ie && ie->type != TS_JSON_BOOL)
        return field_error(o, "ignore_eos", "ignore_eos must be a boolean");
    req->ignore_eos = ie && ie->boolean;
    const ts_json *cs = member(root, "cache_salt"); /* vLLM's extension: a tenant's own cache */
    if (cs && cs->type != TS_JSON_STRING)
        return field_error(o, "cache_salt", "cache_salt must be a string");
    if (cs && (rc = ts_request_set_cache_salt(req, cs->string))) return rc;
    const ts_json *s = member(root, "stream");
    if (s && s->type != TS_JSON_BOOL) return field_error(o, "stream", "stream must be a boolean");
    o->stream = s && s->boolean;
    const ts_json *so = member(root, "stream_options");
    if (so) {
        const ts_json *iu = so->type == TS_JSON_OBJECT ? member(so, "include_usage") : NULL;
        if (so->type != TS_JSON_OBJECT || (iu && iu->type != TS_JSON_BOOL))
            return field_error(o, "stream_options",
                               "stream_options must be an object with a boolean include_usage");
        o->include_usage = iu && iu->boolean;
    }
    return TS_OK;
}

/* ---- outputs ---- */

static const char *finish_name(ts_finish_reason r) {
    return r == TS_FINISH_LENGTH ? "length" : "stop";
}

static void write_usage(ts_json_writer *w, const ts_request_usage *u) {
    ts_jw_key(w, "usage");
    ts_jw_object_begin(w);
    ts_jw_key(w, "prompt_tokens");
    ts_jw_int(w, u->prompt_tokens);
    ts_jw_key(w, "completion_tokens");
    ts_jw_int(w, u->completion_tokens);
    ts_jw_key(w, "total_tokens");
    ts_jw_int(w, (int64_t)u->prompt_tokens + u->completion_tokens);
    ts_jw_key(w, "prompt_tokens_details");
    ts_jw_object_begin(w);
    ts_jw_key(w, "cached_tokens");
    ts_jw_int(w, u->cached_prompt_tokens);
    ts_jw_object_end(w);
    ts_jw_object_end(w);
}

static void write_token(ts_json_writer *w, const char *piece, size_t len, bool with_bytes) {
    ts_jw_key(w, "token");
    ts_jw_string_n(w, piece, len);
    if (!with_bytes) return;
    ts_jw_key(w, "bytes");
    ts_jw_array_begin(w);
    for (size_t i = 0; i < len; i++)
        ts_jw_int(w, (unsigned char)piece[i]);
    ts_jw_array_end(w);
}

/* The choice's "logprobs" from the pending entries (which it consumes). Completions:
 * {"tokens", "token_logprobs", "top_logprobs": [{TOKEN: logprob}], "text_offset"}; chat:
 * {"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}]}.
 * Tokens are each token's own text (invalid UTF-8 as U+FFFD; chat's bytes are exact). */
static void write_logprobs(ts_json_writer *w, const http_req *h, http_choice *ch) {
    const ts_tokenizer *tok = h->srv->co->tok;
    ts_jw_key(w, "logprobs");
    if (!h->logprobs) {
        ts_jw_null(w);
        return;
    }
    ts_jw_object_begin(w);
    size_t len;
    const char *piece;
    if (h->chat) {
        ts_jw_key(w, "content");
        ts_jw_array_begin(w);
        for (size_t i = 0; i < ch->n_lp; i++) {
            const lp_entry *e = &ch->lp[i];
            ts_jw_object_begin(w);
            piece = ts_tokenizer_piece(tok, e->token, &len);
            write_token(w, piece, len, true);
            ts_jw_key(w, "logprob");
            ts_jw_double(w, e->logprob);
            ts_jw_key(w, "top_logprobs");
            ts_jw_array_begin(w);
            for (int32_t k = 0; k < e->n_top; k++) {
                ts_jw_object_begin(w);
                piece = ts_tokenizer_piece(tok, e->top_ids[k], &len);
                write_token(w, piece, len, true);
                ts_jw_key(w, "logprob");
                ts_jw_double(w, e->top_logprobs[k]);
                ts_jw_object_end(w);
            }
            ts_jw_array_end(w);
            ts_jw_object_end(w);
        }
        ts_jw_array_end(w);
    } else {
        ts_jw_key(w, "tokens");
        ts_jw_array_begin(w);
        for (size_t i = 0; i < ch->n_lp; i++) {
            piece = ts_tokenizer_piece(tok, ch->lp[i].token, &len);
            ts_jw_string_n(w, piece, len);
        }
        ts_jw_array_end(w);
        ts_jw_key(w, "token_logprobs");
        ts_jw_array_begin(w);
        for (size_t i = 0; i < ch->n_lp; i++)
            ts_jw_double(w, ch->lp[i].logprob);
        ts_jw_array_end(w);
        ts_jw_key(w, "top_logprobs");
        ts_jw_array_begin(w);
        for (size_t i = 0; i < ch->n_lp; i++) {
            ts_jw_object_begin(w);
            for (int32_t k = 0; k < ch->lp[i].n_top; k++) {
                piece = ts_tokenizer_piece(tok, ch->lp[i].top_ids[k], &len);
                char key[256];
                snprintf(key, sizeof key, "%.*s", (int)(len < 255 ? len : 255), piece);
                ts_jw_key(w, key);
                ts_jw_double(w, ch->lp[i].top_logprobs[k]);
            }
            ts_jw_object_end(w);
        }
        ts_jw_array_end(w);
        ts_jw_key(w, "text_offset");
        ts_jw_array_begin(w);
        for (size_t i = 0; i < ch->n_lp; i++) {
            ts_jw_int(w, ch->text_offset);
            (void)ts_tokenizer_piece(tok, ch->lp[i].token, &len);
            ch->text_offset += (int64_t)len;
        }
        ts_jw_array_end(w);
    }
    ts_jw_object_end(w);
    ch->n_lp = 0;
}

/* Keeps the token's log-probabilities (and the step's most likely tokens) for the next choice
 * written. */
static int keep_logprob(http_choice *ch, co_request *r, int32_t token, float logprob) {
    if (!ch->h->logprobs || token < 0) return TS_OK;
    if (ch->n_lp == ch->lp_cap) {
        size_t cap = ch->lp_cap ? 2 * ch->lp_cap : 16;
        lp_entry *lp = realloc(ch->lp, cap * sizeof *lp);
        if (!lp) return TS_E_NOMEM;
        ch->lp = lp;
        ch->lp_cap = cap;
    }
    lp_entry *e = &ch->lp[ch->n_lp++];
    e->token = token;
    e->logprob = logprob;
    e->n_top = r->n_top < TS_MAX_TOP_LOGPROBS ? r->n_top : TS_MAX_TOP_LOGPROBS;
    if (e->n_top > 0) {
        memcpy(e->top_ids, r->top_ids, (size_t)e->n_top * sizeof *e->top_ids);
        memcpy(e->top_logprobs, r->top_logprobs, (size_t)e->n_top * sizeof *e->top_logprobs);
    }
    return TS_OK;
}

/* {"id", "object", "created", "model", "choices": [ — the head of every completion object. */
static void head_json(ts_json_writer *w, const http_req *h) {
    ts_jw_object_begin(w);
    ts_jw_key(w, "id");
    ts_jw_string(w, h->id);
    ts_jw_key(w, "object");
    ts_jw_string(w, !h->chat    ? "text_completion"
                    : h->stream ? "chat.completion.chunk"
                                : "chat.completion");
    ts_jw_key(w, "created");
    ts_jw_int(w, h->created);
    ts_jw_key(w, "model");
    ts_jw_string(w, h->srv->co->model_name);
    ts_jw_key(w, "choices");
    ts_jw_array_begin(w);
}

/* One choice: a completion's "text"; a chat's "message" ({"role", "content"}) or, in a stream,
 * "delta" (the role in the choice's first one, the content while there is some). */
static void choice_json(ts_json_writer *w, const http_req *h, http_choice *ch, const char *text,
                        size_t n, const char *finish) {
    ts_jw_object_begin(w);
    ts_jw_key(w, "index");
    ts_jw_int(w, ch->index);
    if (!h->chat) {
        ts_jw_key(w, "text");
        ts_jw_string_n(w, text, n);
    } else {
        ts_jw_key(w, h->stream ? "delta" : "message");
        ts_jw_object_begin(w);
        if (!h->stream || !ch->sent_role) {
            ts_jw_key(w, "role");
            ts_jw_string(w, "assistant");
            ch->sent_role = true;
        }
        if (!h->stream || n || !finish) {
            ts_jw_key(w, "content");
            ts_jw_string_n(w, text, n);
        }
        ts_jw_object_end(w);
    }
    write_logprobs(w, h, ch);
    ts_jw_key(w, "finish_reason");
    if (finish)
        ts_jw_string(w, finish);
    else
        ts_jw_null(w);
    ts_jw_object_end(w);
}

/* ], and "usage" when given}. */
static int tail_json(ts_json_writer *w, const ts_request_usage *u) {
    ts_jw_array_end(w);
    if (u) write_usage(w, u);
    ts_jw_object_end(w);
    return ts_jw_finish(w);
}

/* A completion object with one choice (or none: ch NULL). */
static int completion_json(ts_buf *b, const http_req *h, http_choice *ch, const char *text,
                           size_t n, const char *finish, const ts_request_usage *u) {
    ts_json_writer w;
    ts_jw_init(&w, b);
    head_json(&w, h);
    if (ch) choice_json(&w, h, ch, text, n, finish);
    return tail_json(&w, u);
}

/* The request's usage: every choice's completion tokens; each prompt's tokens (and its cached
 * ones) once, from its first choice. */
static void add_choice_usage(ts_request_usage *u, const ts_request_usage *c, bool prompt_first) {
    u->completion_tokens += c->completion_tokens;
    if (!prompt_first) return;
    u->prompt_tokens += c->prompt_tokens;
    u->cached_prompt_tokens += c->cached_prompt_tokens;
}

static ts_request_usage total_usage(const http_req *h) {
    ts_request_usage u = {0};
    for (int32_t i = 0; i < h->n_choices; i++)
        add_choice_usage(&u, &h->choices[i].usage, i % h->per_prompt == 0);
    return u;
}

/* There is news for the connection (bytes, the end, a first token): it runs again if it is
 * suspended. Under out_mu; wake() takes it. Resuming only queues the connection for the event
 * thread (never calls back into this file), so any lock may be held. */
static void wake_locked(http_req *h) {
    if (!h->suspended) return;
    h->suspended = false;
    MHD_resume_connection(h->conn);
}

static void wake(http_req *h) {
    pthread_mutex_lock(&h->out_mu);
    wake_locked(h);
    pthread_mutex_unlock(&h->out_mu);
}

/* The event thread, in a handler or a stream's reader: nothing to do until wake(). Under out_mu,
 * so that a wake cannot slip in between the decision and the suspension. */
static void suspend_locked(http_req *h) {
    MHD_suspend_connection(h->conn);
    h->suspended = true;
}

static int sse_event(http_req *h, http_choice *ch, const char *text, size_t n, const char *finish,
                     const ts_request_usage *u) {
    pthread_mutex_lock(&h->out_mu);
    int rc = ts_buf_append_str(&h->out, "data: ");
    if (!rc) rc = completion_json(&h->out, h, ch, text, n, finish, u);
    if (!rc) rc = ts_buf_append_str(&h->out, "\n\n");
    pthread_mutex_unlock(&h->out_mu);
    return rc; /* the caller wakes the reader */
}

/* A stream's end: [DONE] unless the bytes are broken (out of memory). */
static int sse_end(http_req *h, bool done_event) {
    pthread_mutex_lock(&h->out_mu);
    int rc = done_event ? ts_buf_append_str(&h->out, "data: [DONE]\n\n") : 0;
    h->out_end = true;
    wake_locked(h);
    pthread_mutex_unlock(&h->out_mu);
    return rc;
}

/* The stream's bytes its client has not taken yet. */
static size_t sse_pending(http_req *h) {
    pthread_mutex_lock(&h->out_mu);
    size_t n = h->out.len - h->out_off;
    pthread_mutex_unlock(&h->out_mu);
    return n;
}

/* The request fails (a choice failed or could not be admitted): a stream's last event is the
 * error (its status line is gone), a waiting handler answers with it. Under co->mu. */
static void fail_req(http_req *h, int code, const char *message) {
    if (h->done) return;
    h->err = code;
    snprintf(h->err_msg, sizeof h->err_msg, "%s", message);
    if (h->stream) {
        const char *type, *ecode;
        status_of(code, &type, &ecode);
        pthread_mutex_lock(&h->out_mu);
        ts_buf_append_str(&h->out, "data: ");
        error_json(&h->out, message, type, NULL, ecode);
        ts_buf_append_str(&h->out, "\n\n");
        pthread_mutex_unlock(&h->out_mu);
        sse_end(h, true);
    }
    h->done = true;
    wake(h);
}

static int out_tokens(co_request *r, const char *text, size_t n, int32_t token, float logprob) {
    http_choice *ch = r->out_user;
    http_req *h = ch->h;
    if (h->done) return TS_E_CANCELLED; /* the request failed, or its connection is over */
    if (h->stream && sse_pending(h) > HTTP_MAX_PENDING) return TS_E_EXHAUSTED;
    int rc = keep_logprob(ch, r, token, logprob);
    if (rc) return rc;
    if (!h->stream)
        rc = ts_buf_append(&ch->text, text, n);
    else if (n)
        rc = sse_event(h, ch, text, n, NULL, NULL);
    /* The connection wakes for a stream's bytes; a waiting non-streamed request's tokens are no
     * news to it. */
    if (h->stream && n) wake(h);
    return rc;
}

static int out_finish(co_request *r, const char *text, size_t n, int32_t token, float logprob,
                      ts_finish_reason reason, const ts_request_usage *usage) {
    http_choice *ch = r->out_user;
    http_req *h = ch->h;
    if (h->done) return TS_E_CANCELLED;
    ch->reason = reason;
    ch->usage = *usage;
    int rc = keep_logprob(ch, r, token, logprob);
    if (rc) return rc;
    if (!h->stream)
        rc = ts_buf_append(&ch->text, text, n);
    else
        rc = sse_event(h, ch, text, n, finish_name(reason), NULL);
    if (++h->n_done == h->n_choices) {
        if (!rc && h->stream && h->include_usage) {
            ts_request_usage u = total_usage(h);
            rc = sse_event(h, NULL, NULL, 0, NULL, &u);
        }
        if (h->stream) {
            int end = sse_end(h, !rc);
            if (!rc) rc = end;
        }
        h->done = true;
    }
    wake(h);
    return rc;
}

static void out_error(co_request *r, int code, const char *message) {
    http_choice *ch = r->out_user;
    fail_req(ch->h, code, message);
}

static void out_release(co_request *r) {
    http_choice *ch = r->out_user;
    ch->r = NULL;
    req_unref(ch->h);
}

static const co_output http_output = {
    .tokens = out_tokens, .finish = out_finish, .error = out_error, .release = out_release};

/* The HTTP field a refusal of the one validation is about (its API name → OpenAI's). */
static const char *http_param(const char *field, bool chat) {
    if (!field) return NULL;
    if (!strncmp(field, "sampling.", 9)) field += 9;
    if (!strcmp(field, "prompt") || !strcmp(field, "prompt_ids"))
        return chat ? "messages" : "prompt";
    if (!strcmp(field, "top_logprobs")) return chat ? "top_logprobs" : "logprobs";
    if (!strcmp(field, "stop_ids")) return NULL; /* the end-of-generation ids are the server's */
    return field;
}

/* Admits one choice (under co->mu), another sample of lead's prompt unless lead is NULL (it then
 * waits for lead's first token, co_request_admit_sample): 0, or the refusal's code (its message
 * in ts_error, and *param the field a TS_E_INVALID is about, or NULL). */
static int admit_choice(http_req *h, http_choice *ch, const co_request *lead, const char **param) {
    co_request *r = NULL;
    const char *field = NULL;
    /* Admission runs this same validation first (the fields, without the model): its refusal
     * is this one, and the field gives the error its "param". */
    (void)ts_request_check(&ch->req, NULL, &field);
    int rc =
        lead ? co_request_admit_sample(h->srv->co, lead, &ch->req, INT64_MAX, &http_output, ch, &r)
             : co_request_admit(h->srv->co, &ch->req, INT64_MAX, &http_output, ch, &r);
    *param = rc == TS_E_INVALID ? http_param(field, h->chat) : NULL;
    if (rc) return rc;
    ch->r = r;
    h->refs++; /* the co_request's (out_release) */
    if (!h->id[0])
        snprintf(h->id, sizeof h->id, "%s-%s", h->chat ? "chatcmpl" : "cmpl", r->client_id);
    /* A stream's echo: the choice's first chunk (no output can have come: co->mu is held). */
    if (h->stream && ch->echo.len && sse_event(h, ch, ch->echo.data, ch->echo.len, NULL, NULL))
        ts_log(TS_LOG_WARN, r->client_id, "out of memory echoing the prompt");
    return TS_OK;
}

/* The client closed its connection (or it broke) while its request waits or runs: nobody
 * notices while the connection is suspended, which may be a long queue wait or generation. */
static bool client_gone(const http_req *h) {
    if (h->fd < 0) return false;
    struct pollfd p = {.fd = h->fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

/* The watcher thread: every HTTP_WAIT_MS, the suspended connections whose client went away are
 * marked gone and resumed, to end (their handler or reader sees `gone`). */
static void *watch_main(void *arg) {
    co_http *srv = arg;
    coordinator *co = srv->co;
    pthread_mutex_lock(&co->mu);
    while (!atomic_load(&srv->stopping)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += HTTP_WAIT_MS * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&srv->watch_cv, &co->mu, &ts);
        for (http_req *h = srv->live; h && !atomic_load(&srv->stopping); h = h->live_next) {
            pthread_mutex_lock(&h->out_mu);
            if (h->suspended && client_gone(h)) {
                h->gone = true;
                wake_locked(h);
            }
            pthread_mutex_unlock(&h->out_mu);
        }
    }
    pthread_mutex_unlock(&co->mu);
    return NULL;
}

/* The event thread: the stream's next bytes, its end, or 0 with the connection suspended until
 * a wake. */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    http_req *h = cls;
    (void)pos;
    ssize_t n;
    pthread_mutex_lock(&h->out_mu);
    size_t avail = h->out.len - h->out_off;
    if (avail) {
        n = (ssize_t)(avail < max ? avail : max);
        memcpy(buf, h->out.data + h->out_off, (size_t)n);
        h->out_off += (size_t)n;
        if (h->out_off == h->out.len) h->out_off = h->out.len = 0;
    } else if (h->out_end) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else if (atomic_load(&h->srv->stopping) || h->gone) { /* closing: the end */
        n = MHD_CONTENT_READER_END_WITH_ERROR;
    } else {
        suspend_locked(h);
        n = 0;
    }
    pthread_mutex_unlock(&h->out_mu);
    return n;
}

static void stream_free(void *cls) {
    http_req *h = cls;
    coordinator *co = h->srv->co;
    pthread_mutex_lock(&co->mu);
    req_unref(h);
    pthread_mutex_unlock(&co->mu);
}

/* A chat's messages (and tools) through the chat template → the request's prompt ids; it stops
 * on every end-of-generation token of the vocabulary (<|im_end|>, <|eot_id|>, ...). */
static int chat_prompt(co_http *srv, const ts_json *root, ts_request *req, completion_opts *o) {
    const ts_json *messages = member(root, "messages"), *tools = member(root, "tools");
    if (!messages || messages->type != TS_JSON_ARRAY || !messages->length)
        return field_error(o, "messages", "messages must be a non-empty array of messages");
    if (tools && tools->type != TS_JSON_ARRAY)
        return field_error(o, "tools", "tools must be an array");
    const ts_json *agp = member(root, "add_generation_prompt");
    if (agp && agp->type != TS_JSON_BOOL)
        return field_error(o, "add_generation_prompt", "add_generation_prompt must be a boolean");
    if (!srv->chat) return field_error(o, "messages", "%s", srv->chat_why);
    ts_buf text = {0};
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = ts_chat_build_prompt(srv->chat, srv->co->tok, messages, tools, !agp || agp->boolean,
                                  &text, &ids, &n);
    ts_buf_free(&text);
    if (rc) {
        free(ids);
        return field_error(o, "messages", "messages: %s", ts_error_message());
    }
    if (n > INT32_MAX) {
        free(ids);
        return field_error(o, "messages", "messages: the prompt is too long");
    }
    ts_request_take_ids(req, ids, (int32_t)n);
    return rc; /* co_request_admit adds every end-of-generation id */
}

/* 404 for a model this cluster does not serve (co->model_name is fixed at start: no lock). */
static enum MHD_Result send_unknown_model(struct MHD_Connection *c, const co_http *srv,
                                          const char *name) {
    char msg[600];
    snprintf(msg, sizeof msg, "The model '%s' does not exist (this cluster serves '%s')",
             name ? name : "", srv->co->model_name);
    return send_error(c, MHD_HTTP_NOT_FOUND, msg, "invalid_request_error", "model",
                      "model_not_found");
}

/* The one JSON → ts_request mapping (the HTTP handlers and the batch runner). */
static int map_body(co_http *srv, const ts_json *root, ts_request *req, completion_opts *o) {
    pthread_mutex_lock(&srv->co->mu); /* the groups (co_largest_context) */
    int rc = map_completion(srv, root, req, o);
    pthread_mutex_unlock(&srv->co->mu);
    if (!rc && o->chat) rc = chat_prompt(srv, root, req, o); /* no lock: pure */
    return rc;
}

/* A request of n_choices choices (refs 1: the connection's). NULL when out of memory. */
static http_req *new_req(co_http *srv, const completion_opts *o, bool logprobs, int32_t n_choices) {
    http_req *h = calloc(1, sizeof *h);
    if (h) h->choices = calloc((size_t)n_choices, sizeof *h->choices);
    if (!h || !h->choices) {
        free(h);
        return NULL;
    }
    h->srv = srv;
    pthread_mutex_init(&h->out_mu, NULL);
    h->stream = o->stream;
    h->include_usage = o->include_usage;
    h->chat = o->chat;
    h->logprobs = logprobs;
    h->n_choices = n_choices;
    h->per_prompt = o->n;
    h->created = (int64_t)time(NULL);
    h->refs = 1;
    h->fd = -1;
    for (int32_t i = 0; i < n_choices; i++) {
        h->choices[i].h = h;
        h->choices[i].index = i;
        ts_request_init(&h->choices[i].req);
    }
    return h;
}

/* Every choice's request: prompt p's from `first` (the mapped request, with prompt 0) and
 * o->prompts, sample j with seed + j when seeded; each its echo. 0 or TS_E_NOMEM. */
static int build_choices(http_req *h, const ts_request *first, completion_opts *o) {
    const ts_tokenizer *tok = h->srv->co->tok;
    int rc = TS_OK;
    for (int32_t i = 0; !rc && i < h->n_choices; i++) {
        http_choice *ch = &h->choices[i];
        int32_t p = i / h->per_prompt, j = i % h->per_prompt;
        rc = ts_request_copy(&ch->req, j ? &h->choices[i - j].req : first);
        if (!rc && p && !j) {
            ts_request_clear_prompt(&ch->req);
            rc = prompt_item(o->prompts, (size_t)p, &ch->req, o);
        }
        if (!rc && ch->req.has_seed) ch->req.params.seed += (uint64_t)j;
        ts_buf *echo = h->stream ? &ch->echo : &ch->text; /* the text: the prompt, then more */
        if (!rc && o->echo)
            rc = ch->req.prompt ? ts_buf_append_str(echo, ch->req.prompt)
                                : ts_tokenizer_decode(tok, ch->req.prompt_ids,
                                                      (size_t)ch->req.n_prompt_ids, false, echo);
    }
    return rc ? TS_E_NOMEM : TS_OK;
}

/* The non-streaming answer: every choice, the request's usage. */
static int body_json(ts_buf *b, http_req *h) {
    ts_json_writer w;
    ts_jw_init(&w, b);
    head_json(&w, h);
    for (int32_t i = 0; i < h->n_choices; i++) {
        http_choice *ch = &h->choices[i];
        choice_json(&w, h, ch, ch->text.data, ch->text.len, finish_name(ch->reason));
    }
    ts_request_usage u = total_usage(h);
    return tail_json(&w, &u);
}

/* A non-streamed request after admission, and each time its connection is woken: when it is
 * done (or failed, or the server stops) the response goes out, else the connection suspends
 * until the next wake. */
static enum MHD_Result generate_wait(co_http *srv, struct MHD_Connection *c, http_conn *hc) {
    coordinator *co = srv->co;
    http_req *h = hc->h;
    pthread_mutex_lock(&co->mu);
    if (!h->done && !atomic_load(&srv->stopping)) {
        pthread_mutex_lock(&h->out_mu);
        bool gone = h->gone;
        if (!gone) suspend_locked(h); /* under co->mu: no output can come before it */
        pthread_mutex_unlock(&h->out_mu);
        pthread_mutex_unlock(&co->mu);
        return gone ? MHD_NO : MHD_YES; /* gone: close; completed() cancels, freeing its KV */
    }
    if (!h->done || h->err) {
        int code = h->done ? h->err : TS_E_UNAVAILABLE;
        char msg[512];
        snprintf(msg, sizeof msg, "%s", h->done ? h->err_msg : "the coordinator is stopping");
        pthread_mutex_unlock(&co->mu);
        return send_code(c, code, msg, NULL);
    }
    ts_buf b = {0};
    int rc = body_json(&b, h);
    pthread_mutex_unlock(&co->mu);
    enum MHD_Result q = rc ? send_code(c, TS_E_NOMEM, "out of memory", NULL)
                           : send_buf(c, MHD_HTTP_OK, "application/json", b.data, b.len, NULL);
    ts_buf_free(&b);
    return q;
}

static enum MHD_Result handle_generate(co_http *srv, struct MHD_Connection *c, http_conn *hc,
                                       bool chat) {
    coordinator *co = srv->co;
    ts_json_doc *doc = NULL;
    if (ts_json_parse(hc->body.data ? hc->body.data : "", hc->body.len, &doc)) {
        char msg[600];
        snprintf(msg, sizeof msg, "the body is not valid JSON: %s", ts_error_message());
        return send_error(c, MHD_HTTP_BAD_REQUEST, msg, "invalid_request_error", NULL, NULL);
    }
    ts_request req;
    ts_request_init(&req);
    completion_opts o = {.chat = chat};
    int rc = map_body(srv, ts_json_root(doc), &req, &o);
    if (rc) {
        ts_json_doc_free(doc);
        ts_request_free(&req);
        return send_code(c, rc, ts_error_message(), o.param);
    }
    if (!co_serves_model(co, req.model)) {
        enum MHD_Result q = send_unknown_model(c, srv, req.model);
        ts_json_doc_free(doc);
        ts_request_free(&req);
        return q;
    }
    int32_t n_prompts = o.prompts ? (int32_t)o.prompts->length : 1;
    http_req *h = new_req(srv, &o, req.params.logprobs, n_prompts * o.n);
    rc = h ? build_choices(h, &req, &o) : TS_E_NOMEM;
    ts_json_doc_free(doc); /* o.prompts points into it */
    ts_request_free(&req);
    if (rc) {
        if (h) req_unref(h); /* nothing admitted: the connection's is the only reference */
        return send_code(c, TS_E_NOMEM, "out of memory", NULL);
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    h->fd = ci ? ci->connect_fd : -1;
    h->conn = c;
    hc->h = h; /* completed() ends every admitted choice, and lets go of h */

    pthread_mutex_lock(&co->mu);
    h->live_next = srv->live; /* the watcher's, until completed() */
    if (srv->live) srv->live->live_prev = h;
    srv->live = h;
    const char *param = NULL;
    for (int32_t i = 0; !rc && i < h->n_choices; i++) { /* a prompt's first, then its samples */
        int32_t j = i % h->per_prompt;
        rc = admit_choice(h, &h->choices[i], j ? h->choices[i - j].r : NULL, &param);
    }
    if (rc) { /* a choice refused: the admitted ones are cancelled when the connection ends */
        char msg[512];
        snprintf(msg, sizeof msg, "%s", ts_error_message());
        h->done = true;
        pthread_mutex_unlock(&co->mu);
        return send_code(c, rc, msg, param);
    }

    if (h->stream) {
        h->refs++; /* the response's (stream_free) */
        pthread_mutex_unlock(&co->mu);
        struct MHD_Response *resp =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, h, stream_free);
        if (!resp) {
            pthread_mutex_lock(&co->mu);
            req_unref(h);
            pthread_mutex_unlock(&co->mu);
            return MHD_NO;
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        enum MHD_Result q = MHD_queue_response(c, MHD_HTTP_OK, resp);
        MHD_destroy_response(resp);
        return q;
    }

    pthread_mutex_unlock(&co->mu);
    return generate_wait(srv, c, hc);
}

/* ---- tokenize, detokenize (vLLM's shapes) ---- */

/* The body as a JSON object with an optional served "model": 0, or the response was queued
 * (*q) and *doc is NULL. */
static int parse_body(co_http *srv, struct MHD_Connection *c, http_conn *hc, ts_json_doc **doc,
                      enum MHD_Result *q) {
    *doc = NULL;
    char msg[600];
    if (ts_json_parse(hc->body.data ? hc->body.data : "", hc->body.len, doc)) {
        snprintf(msg, sizeof msg, "the body is not valid JSON: %s", ts_error_message());
        *q = send_error(c, MHD_HTTP_BAD_REQUEST, msg, "invalid_request_error", NULL, NULL);
        return TS_E_INVALID;
    }
    const ts_json *root = ts_json_root(*doc), *m = NULL;
    if (root->type != TS_JSON_OBJECT)
        *q = send_error(c, MHD_HTTP_BAD_REQUEST, "the request body must be a JSON object",
                        "invalid_request_error", NULL, NULL);
    else if ((m = member(root, "model")) && m->type != TS_JSON_STRING)
        *q = send_error(c, MHD_HTTP_BAD_REQUEST, "model must be a string", "invalid_request_error",
                        "model", NULL);
    else if (m && !co_serves_model(srv->co, m->string))
        *q = send_unknown_model(c, srv, m->string);
    else
        return TS_OK;
    ts_json_doc_free(*doc);
    *doc = NULL;
    return TS_E_INVALID;
}

/* POST /tokenize: {"prompt": TEXT, "add_special_tokens": true} or {"messages": [...],
 * "add_generation_prompt": true, "tools"} (through the chat template), "return_token_strs" →
 * {"count", "max_model_len", "tokens", "token_strs"}. */
static enum MHD_Result handle_tokenize(co_http *srv, struct MHD_Connection *c, http_conn *hc) {
    ts_json_doc *doc;
    enum MHD_Result q;
    if (parse_body(srv, c, hc, &doc, &q)) return q;
    const ts_json *root = ts_json_root(doc);
    const ts_json *prompt = member(root, "prompt"), *special = member(root, "add_special_tokens");
    const ts_json *strs = member(root, "return_token_strs");
    completion_opts o = {.chat = true};
    ts_request req;
    ts_request_init(&req);
    int rc = TS_OK;
    if (special && special->type != TS_JSON_BOOL)
        rc = field_error(&o, "add_special_tokens", "add_special_tokens must be a boolean");
    else if (strs && strs->type != TS_JSON_BOOL)
        rc = field_error(&o, "return_token_strs", "return_token_strs must be a boolean");
    else if (prompt && member(root, "messages"))
        rc = field_error(&o, "prompt", "give either prompt or messages, not both");
    else if (prompt && prompt->type != TS_JSON_STRING)
        rc = field_error(&o, "prompt", "prompt must be a string");
    else if (prompt) {
        int32_t *ids = NULL;
        size_t n = 0;
        bool bos = (!special || special->boolean) && ts_tokenizer_adds_bos(srv->co->tok);
        rc =
            ts_tokenizer_encode(srv->co->tok, prompt->string, prompt->length, bos, false, &ids, &n);
        if (!rc && n > INT32_MAX) rc = field_error(&o, "prompt", "prompt: too long");
        if (rc)
            free(ids);
        else
            ts_request_take_ids(&req, ids, (int32_t)n);
    } else {
        rc = chat_prompt(srv, root, &req, &o); /* "messages is required" when it is missing */
    }
    ts_buf b = {0};
    if (!rc) {
        ts_json_writer w;
        ts_jw_init(&w, &b);
        ts_jw_object_begin(&w);
        ts_jw_key(&w, "count");
        ts_jw_int(&w, req.n_prompt_ids);
        ts_jw_key(&w, "max_model_len");
        pthread_mutex_lock(&srv->co->mu);
        ts_jw_int(&w, co_largest_context(srv->co));
        pthread_mutex_unlock(&srv->co->mu);
        ts_jw_key(&w, "tokens");
        ts_jw_array_begin(&w);
        for (int32_t i = 0; i < req.n_prompt_ids; i++)
            ts_jw_int(&w, req.prompt_ids[i]);
        ts_jw_array_end(&w);
        ts_jw_key(&w, "token_strs");
        if (strs && strs->boolean) {
            ts_jw_array_begin(&w);
            for (int32_t i = 0; i < req.n_prompt_ids; i++)
                ts_jw_string(&w, ts_tokenizer_token_text(srv->co->tok, req.prompt_ids[i]));
            ts_jw_array_end(&w);
        } else {
            ts_jw_null(&w);
        }
        ts_jw_object_end(&w);
        rc = ts_jw_finish(&w);
    }
    ts_json_doc_free(doc);
    ts_request_free(&req);
    q = rc ? send_code(c, rc, ts_error_message(), o.param)
           : send_buf(c, MHD_HTTP_OK, "application/json", b.data, b.len, NULL);
    ts_buf_free(&b);
    return q;
}

/* POST /detokenize: {"tokens": [ids]} → {"prompt": TEXT} (the pieces concatenated, as
 * tessera generate prints them). */
static enum MHD_Result handle_detokenize(co_http *srv, struct MHD_Connection *c, http_conn *hc) {
    ts_json_doc *doc;
    enum MHD_Result q;
    if (parse_body(srv, c, hc, &doc, &q)) return q;
    const ts_json *tokens = member(ts_json_root(doc), "tokens");
    completion_opts o = {0};
    int32_t n_vocab = ts_tokenizer_n_vocab(srv->co->tok);
    int rc = !tokens || tokens->type != TS_JSON_ARRAY
                 ? field_error(&o, "tokens", "tokens must be an array of token ids")
                 : TS_OK;
    int32_t *ids = rc ? NULL : malloc((tokens->length ? tokens->length : 1) * sizeof *ids);
    if (!rc && !ids) rc = ts_error_set(TS_E_NOMEM, "out of memory");
    for (size_t i = 0; !rc && i < tokens->length; i++) {
        const ts_json *t = &tokens->items[i];
        if (t->type != TS_JSON_NUMBER || !t->is_integer || t->integer < 0 || t->integer >= n_vocab)
            rc = field_error(&o, "tokens", "tokens[%zu] must be a token id in [0, %d)", i,
                             (int)n_vocab);
        else
            ids[i] = (int32_t)t->integer;
    }
    ts_buf text = {0}, b = {0};
    if (!rc) rc = ts_tokenizer_decode(srv->co->tok, ids, tokens->length, true, &text);
    if (!rc) {
        ts_json_writer w;
        ts_jw_init(&w, &b);
        ts_jw_object_begin(&w);
        ts_jw_key(&w, "prompt");
        ts_jw_string_n(&w, text.data ? text.data : "", text.len);
        ts_jw_object_end(&w);
        rc = ts_jw_finish(&w);
    }
    free(ids);
    ts_json_doc_free(doc);
    q = rc ? send_code(c, rc, ts_error_message(), o.param)
           : send_buf(c, MHD_HTTP_OK, "application/json", b.data, b.len, NULL);
    ts_buf_free(&text);
    ts_buf_free(&b);
    return q;
}

/* ---- models, health ---- */

static void model_json(ts_json_writer *w, co_http *srv) {
    coordinator *co = srv->co;
    ts_jw_object_begin(w);
    ts_jw_key(w, "id");
    ts_jw_string(w, co->model_name);
    ts_jw_key(w, "object");
    ts_jw_string(w, "model");
    ts_jw_key(w, "created");
    ts_jw_int(w, srv->created);
    ts_jw_key(w, "owned_by");
    ts_jw_string(w, "tessera");
    ts_jw_key(w, "context_length");
    ts_jw_int(w, co_largest_context(co));
    ts_jw_object_end(w);
}

static enum MHD_Result handle_models(co_http *srv, struct MHD_Connection *c, const char *id) {
    coordinator *co = srv->co;
    ts_buf b = {0};
    ts_json_writer w;
    ts_jw_init(&w, &b);
    pthread_mutex_lock(&co->mu);
    bool found = !id || !strcmp(id, co->model_name);
    if (id && found) {
        model_json(&w, srv);
    } else if (!id) {
        ts_jw_object_begin(&w);
        ts_jw_key(&w, "object");
        ts_jw_string(&w, "list");
        ts_jw_key(&w, "data");
        ts_jw_array_begin(&w);
        model_json(&w, srv);
        ts_jw_array_end(&w);
        ts_jw_object_end(&w);
    }
    pthread_mutex_unlock(&co->mu);
    enum MHD_Result q;
    if (!found)
        q = send_unknown_model(c, srv, id);
    else if (ts_jw_finish(&w))
        q = send_code(c, TS_E_NOMEM, "out of memory", NULL);
    else
        q = send_buf(c, MHD_HTTP_OK, "application/json", b.data, b.len, NULL);
    ts_buf_free(&b);
    return q;
}

static enum MHD_Result handle_health(co_http *srv, struct MHD_Connection *c) {
    coordinator *co = srv->co;
    pthread_mutex_lock(&co->mu);
    int groups = co_live_groups(co);
    bool serving = groups > 0 && !co->shutting_down;
    pthread_mutex_unlock(&co->mu);
    char body[128];
    int n = snprintf(body, sizeof body, "{\"status\":\"%s\",\"groups\":%d}",
                     serving ? "ok" : "unavailable", groups);
    return send_buf(c, serving ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, "application/json",
                    body, (size_t)n, NULL);
}

static enum MHD_Result handle_metrics(co_http *srv, struct MHD_Connection *c) {
    ts_buf b = {0};
    enum MHD_Result q;
    if (co_metrics_render(srv->co, &b))
        q = send_code(c, TS_E_NOMEM, ts_error_message(), NULL);
    else
        q = send_buf(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len,
                     NULL);
    ts_buf_free(&b);
    return q;
}

/* ---- authentication ---- */

/* The model API needs a key (when keys are set, auth.h); /health and /metrics only with
 * --protect-metrics. Checked once the headers are in, before any body is read. */
static bool authorized(const co_http *srv, struct MHD_Connection *c, const char *url) {
    if ((!strcmp(url, "/health") || !strcmp(url, "/metrics")) && !srv->co->protect_metrics)
        return true;
    const char *a = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    return co_auth_check(srv->co->auth, a, a ? strlen(a) : 0);
}

/* ---- the handler ---- */

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **con_cls) {
    co_http *srv = cls;
    (void)version;
    http_conn *hc = *con_cls;
    bool post = !strcmp(method, MHD_HTTP_METHOD_POST);
    if (!hc) {
        hc = calloc(1, sizeof *hc);
        if (!hc) return MHD_NO;
        *con_cls = hc;
        if (!authorized(srv, c, url))
            return send_code(c, TS_E_UNAUTHENTICATED,
                             "Incorrect or missing API key (Authorization: Bearer KEY)", NULL);
        hc->limit = co_http_batch_max_body(url, method, srv->max_body);
        if (post) {
            const char *cl =
                MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
            if (cl && strtoull(cl, NULL, 10) > hc->limit) hc->too_big = true;
            if (!hc->too_big) return MHD_YES; /* the body follows */
        }
    } else if (hc->h && !hc->h->stream) { /* woken (wake()): a non-streamed request's news */
        return generate_wait(srv, c, hc);
    } else if (*upload_size) {
        if (!hc->too_big && hc->body.len + *upload_size > hc->limit) hc->too_big = true;
        if (!hc->too_big && ts_buf_append(&hc->body, upload, *upload_size)) return MHD_NO;
        *upload_size = 0;
        return MHD_YES;
    }
    if (hc->too_big) {
        char msg[128];
        snprintf(msg, sizeof msg, "the request body is larger than %zu bytes", hc->limit);
        return send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, msg, "invalid_request_error", NULL,
                          "request_too_large");
    }

    if (!strcmp(url, "/health")) {
        if (strcmp(method, MHD_HTTP_METHOD_GET))
            return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use GET /health",
                              "invalid_request_error", NULL, NULL);
        return handle_health(srv, c);
    }
    if (!strcmp(url, "/metrics")) {
        if (strcmp(method, MHD_HTTP_METHOD_GET))
            return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use GET /metrics",
                              "invalid_request_error", NULL, NULL);
        return handle_metrics(srv, c);
    }
    if (co_http_batch_path(url)) /* the Files and Batches API (http_batch.c) */
        return co_http_batch_handle(srv, c, url, method, hc->body.data, hc->body.len);
    if (!strcmp(url, "/v1/models") || !strncmp(url, "/v1/models/", 11)) {
        if (strcmp(method, MHD_HTTP_METHOD_GET))
            return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use GET", "invalid_request_error",
                              NULL, NULL);
        return handle_models(srv, c, url[10] == '/' ? url + 11 : NULL);
    }
    if (!strcmp(url, "/v1/completions")) {
        if (!post)
            return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use POST /v1/completions",
                              "invalid_request_error", NULL, NULL);
        return handle_generate(srv, c, hc, false);
    }
    if (!strcmp(url, "/tokenize") || !strcmp(url, "/detokenize")) {
        if (!post)
            return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use POST", "invalid_request_error",
                              NULL, NULL);
        return url[1] == 't' ? handle_tokenize(srv, c, hc) : handle_detokenize(srv, c, hc);
    }
    if (!strcmp(url, "/v1/chat/completions")) {
        if (!post)
            return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use POST /v1/chat/completions",
                              "invalid_request_error", NULL, NULL);
        return handle_generate(srv, c, hc, true);
    }
    char msg[300];
    snprintf(msg, sizeof msg, "unknown path %s %.200s", method, url);
    return send_error(c, MHD_HTTP_NOT_FOUND, msg, "invalid_request_error", NULL, "not_found");
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode why) {
    co_http *srv = cls;
    http_conn *hc = *con_cls;
    (void)c, (void)why;
    if (!hc) return;
    if (hc->h) {
        coordinator *co = srv->co;
        pthread_mutex_lock(&co->mu);
        http_req *h = hc->h;
        h->done = true; /* no more outputs, no more admissions */
        if (h->live_prev)
            h->live_prev->live_next = h->live_next;
        else
            srv->live = h->live_next;
        if (h->live_next) h->live_next->live_prev = h->live_prev;
        h->live_prev = h->live_next = NULL;
        pthread_mutex_lock(&h->out_mu);
        h->conn = NULL; /* not suspended: the connection is over */
        pthread_mutex_unlock(&h->out_mu);
        for (int32_t i = 0; i < h->n_choices; i++) /* each may release: ch->r is then NULL */
            if (h->choices[i].r) co_request_client_done(co, h->choices[i].r);
        req_unref(h); /* the connection's reference holds h through the loop */
        pthread_mutex_unlock(&co->mu);
    }
    ts_buf_free(&hc->body);
    free(hc);
    *con_cls = NULL;
}

static void log_mhd(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    TS_WARN("http: %s", msg);
}

/* ---- the server ---- */

/* What serving and mapping need (no listener): the coordinator, the chat template. */
static int http_init(co_http *srv, coordinator *co, const char *chat_template) {
    srv->co = co;
    pthread_cond_init(&srv->watch_cv, NULL);
    srv->created = (int64_t)time(NULL);
    const char *model_tmpl = ts_tokenizer_chat_template(co->tok);
    int rc = ts_chat_template_open(chat_template, model_tmpl, &srv->chat);
    if (rc && chat_template)
        return ts_error_wrap(TS_E_INVALID, "--chat-template %s", chat_template);
    if (rc) { /* chat requests are refused, with the reason */
        snprintf(srv->chat_why, sizeof srv->chat_why,
                 "this cluster cannot serve chat: %s (start it with --chat-template NAME|FILE)",
                 ts_error_message());
        if (model_tmpl) TS_WARN("http: %s", srv->chat_why);
    }
    return TS_OK;
}

int co_http_mapper_create(coordinator *co, const char *chat_template, co_http **out) {
    co_http *srv = calloc(1, sizeof *srv);
    *out = NULL;
    if (!srv) return ts_error_set(TS_E_NOMEM, "out of memory");
    int rc = http_init(srv, co, chat_template);
    if (rc) {
        co_http_stop(srv);
        return rc;
    }
    *out = srv;
    return TS_OK;
}

int co_http_start(coordinator *co, const co_http_options *o, co_http **out) {
    *out = NULL;
    const char *colon = strrchr(o->listen, ':');
    char host[256];
    if (!colon || colon == o->listen || (size_t)(colon - o->listen) >= sizeof host || !colon[1])
        return ts_error_set(TS_E_INVALID, "--http-listen: want HOST:PORT, got '%s'", o->listen);
    snprintf(host, sizeof host, "%.*s", (int)(colon - o->listen), o->listen);
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV},
                    *ai = NULL;
    int gai = getaddrinfo(host, colon + 1, &hints, &ai);
    if (gai)
        return ts_error_set(TS_E_INVALID, "--http-listen %s: %s", o->listen, gai_strerror(gai));
    co_http *srv = calloc(1, sizeof *srv);
    if (!srv) {
        freeaddrinfo(ai);
        return ts_error_set(TS_E_NOMEM, "out of memory");
    }
    if (o->max_header && o->max_header < 4096) {
        freeaddrinfo(ai);
        free(srv);
        return ts_error_set(TS_E_INVALID, "--http-max-header: at least 4096 bytes, got %zu",
                            o->max_header);
    }
    srv->max_body = o->max_body;
    srv->store = o->store;
    int rc = http_init(srv, co, o->chat_template);
    if (!rc) {
        /* One event thread (epoll where there is one) for every connection; suspend/resume
         * for requests that wait (see Threads above). */
        unsigned flags =
            MHD_USE_AUTO_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
        if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
        /* TLS (GnuTLS inside libmicrohttpd): the PEM text stays the caller's until stop. */
        struct MHD_OptionItem tls[] = {
            {MHD_OPTION_HTTPS_MEM_KEY, 0, (void *)o->tls_key_pem},
            {MHD_OPTION_HTTPS_MEM_CERT, 0, (void *)o->tls_cert_pem},
            {MHD_OPTION_END, 0, NULL},
        };
        if (!o->tls_cert_pem)
            tls[0].option = MHD_OPTION_END;
        else if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
            rc = ts_error_set(TS_E_UNSUPPORTED,
                              "--tls-cert: this libmicrohttpd is built without TLS");
        else
            flags |= MHD_USE_TLS;
        if (!rc)
            srv->d = MHD_start_daemon(
                flags, 0, NULL, NULL, handle, srv, MHD_OPTION_EXTERNAL_LOGGER, log_mhd, NULL,
                MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_NOTIFY_COMPLETED, completed, srv,
                MHD_OPTION_CONNECTION_LIMIT, (unsigned)o->max_connections,
                MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)o->max_connections_per_ip,
                MHD_OPTION_CONNECTION_MEMORY_LIMIT, o->max_header ? o->max_header : (size_t)32768,
                MHD_OPTION_CONNECTION_TIMEOUT,
                (unsigned)(o->idle_timeout_s > 0 ? o->idle_timeout_s : HTTP_IDLE_S),
                MHD_OPTION_ARRAY, tls, MHD_OPTION_END);
        if (!rc && !srv->d)
            rc = ts_error_set(TS_E_IO, "--http-listen %s: cannot listen there", o->listen);
        if (!rc && pthread_create(&srv->watcher, NULL, watch_main, srv) != 0)
            rc = ts_error_set(TS_E_INTERNAL, "cannot start the HTTP watcher thread");
        srv->watching = !rc;
    }
    freeaddrinfo(ai);
    if (rc) {
        co_http_stop(srv);
        return rc;
    }
    *out = srv;
    return TS_OK;
}

int co_http_port(const co_http *h) {
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    return i ? i->port : 0;
}

void co_http_stop(co_http *h) {
    if (!h) return;
    pthread_mutex_lock(&h->co->mu);
    atomic_store(&h->stopping, true);
    pthread_cond_signal(&h->watch_cv);
    pthread_mutex_unlock(&h->co->mu);
    if (h->watching) pthread_join(h->watcher, NULL);
    /* No connection may stay suspended through MHD_stop_daemon: each resumed one sees
     * `stopping` (a 503, or the stream's end) and none suspends again. */
    pthread_mutex_lock(&h->co->mu);
    for (http_req *r = h->live; r; r = r->live_next)
        wake(r);
    pthread_mutex_unlock(&h->co->mu);
    if (h->d) MHD_stop_daemon(h->d);
    pthread_cond_destroy(&h->watch_cv);
    ts_chat_template_close(h->chat);
    free(h);
}

/* ---- for the other files of the front door (http_internal.h) ---- */

int co_http_map_request(co_http *h, bool chat, const ts_json *body, bool allow_stream,
                        ts_request *req, const char **param) {
    completion_opts o = {.chat = chat};
    int rc = map_body(h, body, req, &o);
    if (!rc && o.stream && !allow_stream)
        rc = field_error(&o, "stream", "stream must be false here (results are stored)");
    if (!rc && o.echo) rc = field_error(&o, "echo", "echo is not supported here");
    if (!rc && o.prompts)
        rc = field_error(&o, "prompt", "one prompt per batch line, got a list of %zu",
                         o.prompts->length);
    if (!rc && req->params.logprobs) /* refused, not silently dropped from the output */
        rc = field_error(&o, o.chat && req->params.top_logprobs ? "top_logprobs" : "logprobs",
                         "logprobs are not supported in batch lines (their stored results carry "
                         "text and usage)");
    *param = o.param;
    return rc;
}

int co_http_completion_body(co_http *h, bool chat, const char *id, int64_t created,
                            const co_http_choice_result *choices, int32_t n,
                            ts_request_usage *usage, ts_buf *out) {
    http_req r = {.srv = h, .chat = chat, .created = created, .n_choices = n, .per_prompt = n};
    snprintf(r.id, sizeof r.id, "%s", id);
    *usage = (ts_request_usage){0};
    ts_json_writer w;
    ts_jw_init(&w, out);
    head_json(&w, &r);
    for (int32_t i = 0; i < n; i++) {
        http_choice ch = {.h = &r, .index = i};
        choice_json(&w, &r, &ch, choices[i].text, choices[i].len, finish_name(choices[i].reason));
        add_choice_usage(usage, &choices[i].usage, i == 0); /* the n choices of one prompt */
    }
    return tail_json(&w, usage);
}

int co_http_error_body(int code, const char *message, const char *param, ts_buf *out,
                       unsigned *status) {
    const char *type, *ecode;
    *status = status_of(code, &type, &ecode);
    error_json(out, message, type, param, ecode);
    return out->data ? TS_OK : TS_E_NOMEM;
}

enum MHD_Result co_http_send(struct MHD_Connection *c, unsigned status, const char *type,
                             const char *data, size_t n) {
    return send_buf(c, status, type, data, n, NULL);
}

enum MHD_Result co_http_send_error(struct MHD_Connection *c, unsigned status, const char *message,
                                   const char *type, const char *param, const char *code) {
    return send_error(c, status, message, type, param, code);
}

enum MHD_Result co_http_send_code(struct MHD_Connection *c, int code, const char *message,
                                  const char *param) {
    return send_code(c, code, message, param);
}

coordinator *co_http_coordinator(co_http *h) {
    return h->co;
}

struct co_store *co_http_store(co_http *h) {
    return h->store;
}
