/*
 * request.c — the request model: defaults, the table of limits, the one validation (see
 * request.h).
 *
 * The table is indexed by ts_request_field_id; value_of reads a field's value (or count) from
 * a request, so adding a field is a row here, a case there and a test in test_request.c.
 */
#include "request/request.h"

#include "common/error.h"
#include "common/kv_hash.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static const ts_request_field fields[TS_REQUEST_FIELD_COUNT] = {
    [TS_REQUEST_FIELD_MAX_TOKENS] = {"max_tokens", "max-tokens", 1, 1 << 24, false, NULL},
    [TS_REQUEST_FIELD_TEMPERATURE] = {"sampling.temperature", "temperature", 0, 2, false, NULL},
    [TS_REQUEST_FIELD_TOP_K] = {"sampling.top_k", "top-k", 0, 1 << 30, false, NULL},
    [TS_REQUEST_FIELD_TOP_P] = {"sampling.top_p", "top-p", 0, 1, true, NULL},
    [TS_REQUEST_FIELD_MIN_P] = {"sampling.min_p", "min-p", 0, 1, false, NULL},
    [TS_REQUEST_FIELD_REPETITION_PENALTY] = {"sampling.repetition_penalty", "repeat-penalty", 0, 10,
                                             true, NULL},
    [TS_REQUEST_FIELD_REPETITION_LAST_N] = {"sampling.repetition_last_n", "repeat-last-n", 0,
                                            1 << 24, false, NULL},
    [TS_REQUEST_FIELD_PRIORITY] = {"priority", NULL, -1000000, 1000000, false, NULL},
    [TS_REQUEST_FIELD_TIMEOUT_MS] = {"timeout_ms", "timeout-ms", 0, 1 << 30, false, NULL},
    [TS_REQUEST_FIELD_STOPS] = {"stop", NULL, 0, TS_REQUEST_MAX_STOPS, false, "strings"},
    [TS_REQUEST_FIELD_STOP_BYTES] = {"stop[i]", NULL, 1, 256, false, "bytes"},
    [TS_REQUEST_FIELD_STOP_IDS] = {"stop_ids", NULL, 0, TS_MAX_STOP_IDS, false, "ids"},
    [TS_REQUEST_FIELD_PROMPT_BYTES] = {"prompt", "prompt", 0, 1 << 24, false, "bytes"},
    [TS_REQUEST_FIELD_REQUEST_ID_BYTES] = {"request_id", NULL, 0, TS_REQUEST_ID_BYTES - 1, false,
                                           "bytes"},
    [TS_REQUEST_FIELD_CACHE_SALT_BYTES] = {"cache_salt", NULL, 0, 256, false, "bytes"},
    [TS_REQUEST_FIELD_PRESENCE_PENALTY] = {"sampling.presence_penalty", NULL, -2, 2, false, NULL},
    [TS_REQUEST_FIELD_FREQUENCY_PENALTY] = {"sampling.frequency_penalty", NULL, -2, 2, false, NULL},
    [TS_REQUEST_FIELD_LOGIT_BIAS] = {"sampling.logit_bias", NULL, 0, TS_MAX_LOGIT_BIAS, false,
                                     "entries"},
    [TS_REQUEST_FIELD_LOGIT_BIAS_VALUE] = {"sampling.logit_bias[i]", NULL, -100, 100, false, NULL},
    [TS_REQUEST_FIELD_TOP_LOGPROBS] = {"sampling.top_logprobs", NULL, 0, TS_MAX_TOP_LOGPROBS, false,
                                       NULL},
    [TS_REQUEST_FIELD_SAMPLES] = {"n", NULL, 1, TS_MAX_SAMPLES, false, NULL},
};

const ts_request_field *ts_request_field_get(ts_request_field_id id) {
    TS_ASSERT(id >= 0 && id < TS_REQUEST_FIELD_COUNT);
    return &fields[id];
}

const char *ts_finish_reason_name(ts_finish_reason r) {
    switch (r) {
    case TS_FINISH_NONE: return "none";
    case TS_FINISH_LENGTH: return "length";
    case TS_FINISH_STOP: return "stop";
    case TS_FINISH_CANCELLED: return "cancelled";
    case TS_FINISH_ERROR: return "error";
    }
    return "unknown";
}

ts_request_params ts_request_params_default(void) {
    ts_request_params p;
    memset(&p, 0, sizeof p);
    p.max_tokens = 16;
    p.top_p = 1.0f;
    p.repetition_penalty = 1.0f;
    p.repetition_last_n = 64;
    return p;
}

/* ---- validation ---- */

static double value_of(const ts_request *r, ts_request_field_id id) {
    const ts_request_params *p = &r->params;
    switch (id) {
    case TS_REQUEST_FIELD_MAX_TOKENS: return p->max_tokens;
    case TS_REQUEST_FIELD_TEMPERATURE: return p->temperature;
    case TS_REQUEST_FIELD_TOP_K: return p->top_k;
    case TS_REQUEST_FIELD_TOP_P: return p->top_p;
    case TS_REQUEST_FIELD_MIN_P: return p->min_p;
    case TS_REQUEST_FIELD_REPETITION_PENALTY: return p->repetition_penalty;
    case TS_REQUEST_FIELD_REPETITION_LAST_N: return p->repetition_last_n;
    case TS_REQUEST_FIELD_PRIORITY: return p->priority;
    case TS_REQUEST_FIELD_TIMEOUT_MS: return (double)r->timeout_ms;
    case TS_REQUEST_FIELD_STOPS: return r->n_stops;
    case TS_REQUEST_FIELD_STOP_BYTES: return 1; /* per string, in validate */
    case TS_REQUEST_FIELD_STOP_IDS: return p->n_stop_ids;
    case TS_REQUEST_FIELD_PROMPT_BYTES: return r->prompt ? (double)strlen(r->prompt) : 0;
    case TS_REQUEST_FIELD_REQUEST_ID_BYTES:
        return r->request_id ? (double)strlen(r->request_id) : 0;
    case TS_REQUEST_FIELD_CACHE_SALT_BYTES:
        return r->cache_salt ? (double)strlen(r->cache_salt) : 0;
    case TS_REQUEST_FIELD_PRESENCE_PENALTY: return p->presence_penalty;
    case TS_REQUEST_FIELD_FREQUENCY_PENALTY: return p->frequency_penalty;
    case TS_REQUEST_FIELD_LOGIT_BIAS: return p->n_logit_bias;
    case TS_REQUEST_FIELD_LOGIT_BIAS_VALUE: return 0; /* per entry, in validate */
    case TS_REQUEST_FIELD_TOP_LOGPROBS: return p->top_logprobs;
    case TS_REQUEST_FIELD_SAMPLES: return r->n ? r->n : 1; /* 0: unset */
    case TS_REQUEST_FIELD_COUNT: break;
    }
    return 0;
}

static bool in_limits(const ts_request_field *f, double v) {
    if (isnan(v)) return false;
    return (f->min_open ? v > f->min : v >= f->min) && v <= f->max;
}

/* "sampling.top_p (--top-p) must be in (0, 1], got 3" (the name may carry an index). */
static int refuse(const ts_request_field *f, const char *name, double v) {
    char flag[48] = "";
    if (f->flag) snprintf(flag, sizeof flag, " (--%s)", f->flag);
    if (f->unit)
        return ts_error_set(TS_E_INVALID, "%s%s must have %s%.10g to %.10g %s, got %.10g", name,
                            flag, f->min_open ? "more than " : "", f->min, f->max, f->unit, v);
    return ts_error_set(TS_E_INVALID, "%s%s must be in %c%.10g, %.10g], got %.10g", name, flag,
                        f->min_open ? '(' : '[', f->min, f->max, v);
}

static int check_ids(const char *name, const int32_t *ids, int32_t n, int32_t n_vocab) {
    for (int32_t i = 0; n_vocab > 0 && i < n; i++)
        if (ids[i] < 0 || ids[i] >= n_vocab)
            return ts_error_set(TS_E_INVALID, "%s[%d] = %d is outside the vocabulary [0, %d]", name,
                                i, ids[i], n_vocab - 1);
    return TS_OK;
}

int ts_request_validate(const ts_request *r, const ts_request_model *m) {
    return ts_request_check(r, m, NULL);
}

int ts_request_check(const ts_request *r, const ts_request_model *m, const char **field) {
    if (field) *field = NULL;
    for (int id = 0; id < TS_REQUEST_FIELD_COUNT; id++) {
        double v = value_of(r, (ts_request_field_id)id);
        if (id == TS_REQUEST_FIELD_PRIORITY && r->priority_lower_first)
            v = -v; /* the limits are symmetric: as the client gave it */
        if (!in_limits(&fields[id], v)) {
            if (field) *field = fields[id].name;
            return refuse(&fields[id], fields[id].name, v);
        }
    }
    const ts_request_field *sb = &fields[TS_REQUEST_FIELD_STOP_BYTES];
    for (int32_t i = 0; i < r->n_stops; i++) {
        double len = r->stops[i] ? (double)strlen(r->stops[i]) : 0;
        if (!in_limits(sb, len)) {
            if (field) *field = "stop";
            char name[32];
            snprintf(name, sizeof name, "stop[%d]", i);
            return refuse(sb, name, len);
        }
    }
    const ts_request_field *lb = &fields[TS_REQUEST_FIELD_LOGIT_BIAS_VALUE];
    for (int32_t i = 0; i < r->params.n_logit_bias; i++) {
        if (!in_limits(lb, r->params.logit_bias[i])) {
            char name[64];
            snprintf(name, sizeof name, "sampling.logit_bias[%d] (token %d)", i,
                     r->params.logit_bias_ids[i]);
            if (field) *field = "sampling.logit_bias";
            return refuse(lb, name, r->params.logit_bias[i]);
        }
    }
    int32_t n_vocab = m ? m->n_vocab : 0, n_ctx = m ? m->n_ctx : 0;
    int rc = check_ids("stop_ids", r->params.stop_ids, r->params.n_stop_ids, n_vocab);
    if (rc) {
        if (field) *field = "stop_ids";
        return rc;
    }
    rc = check_ids("sampling.logit_bias token", r->params.logit_bias_ids, r->params.n_logit_bias,
                   n_vocab);
    if (field) *field = rc ? "sampling.logit_bias" : "prompt"; /* the rest is the prompt's */
    if (rc) return rc;
    if (r->n_prompt_ids == 0 && !(r->prompt && r->prompt[0]))
        return ts_error_set(TS_E_INVALID, "empty prompt: give prompt or prompt_ids");
    if (r->n_prompt_ids < 0)
        return ts_error_set(TS_E_INVALID, "prompt_ids: negative count %d", r->n_prompt_ids);
    rc = check_ids("prompt_ids", r->prompt_ids, r->n_prompt_ids, n_vocab);
    if (rc) return rc;
    if (r->params.replayed < 0 || (r->params.replayed > 0 && r->params.replayed >= r->n_prompt_ids))
        return ts_error_set(TS_E_INVALID, "replayed: %d of %d prompt ids", r->params.replayed,
                            r->n_prompt_ids);
    if (n_ctx > 0 && r->n_prompt_ids >= n_ctx)
        return ts_error_set(TS_E_INVALID,
                            "the prompt has %d tokens but the context holds %d (at most %d prompt "
                            "tokens leave room for the completion)",
                            r->n_prompt_ids, n_ctx, n_ctx - 1);
    if (field) *field = NULL;
    return TS_OK;
}

/* ---- owned storage ---- */

void ts_request_init(ts_request *r) {
    memset(r, 0, sizeof *r);
    r->params = ts_request_params_default();
}

void ts_request_free(ts_request *r) {
    if (!r) return;
    free(r->model);
    free(r->prompt);
    free(r->prompt_ids);
    for (int32_t i = 0; i < r->n_stops; i++)
        free(r->stops[i]);
    free(r->stops);
    free(r->request_id);
    free(r->cache_salt);
    ts_request_params params = r->params;
    memset(r, 0, sizeof *r);
    r->params = params;
}

int ts_request_copy(ts_request *dst, const ts_request *src) {
    *dst = *src; /* the scalars and params; what it owns is copied by the setters below */
    dst->model = dst->prompt = dst->request_id = dst->cache_salt = NULL;
    dst->prompt_ids = NULL;
    dst->n_prompt_ids = 0;
    dst->stops = NULL;
    dst->n_stops = 0;
    int rc = src->model ? ts_request_set_model(dst, src->model) : TS_OK;
    if (!rc && src->prompt) rc = ts_request_set_text(dst, src->prompt);
    if (!rc && src->request_id) rc = ts_request_set_id(dst, src->request_id);
    if (!rc && src->cache_salt) rc = ts_request_set_cache_salt(dst, src->cache_salt);
    if (!rc && src->prompt_ids)
        rc = ts_request_set_ids(dst, src->prompt_ids,
                                (size_t)(src->n_prompt_ids > 0 ? src->n_prompt_ids : 0));
    for (int32_t i = 0; !rc && i < src->n_stops; i++)
        rc = ts_request_add_stop(dst, src->stops[i]);
    if (rc) {
        ts_request_free(dst);
        ts_request_init(dst);
        return ts_error_set(TS_E_NOMEM, "out of memory");
    }
    return TS_OK;
}

void ts_request_clear_prompt(ts_request *r) {
    free(r->prompt);
    free(r->prompt_ids);
    r->prompt = NULL;
    r->prompt_ids = NULL;
    r->n_prompt_ids = 0;
}

static int set_string(char **dst, const char *src) {
    char *copy = strdup(src ? src : "");
    if (!copy) return ts_error_set(TS_E_NOMEM, "out of memory");
    free(*dst);
    *dst = copy;
    return TS_OK;
}

int ts_request_set_text(ts_request *r, const char *text) {
    return set_string(&r->prompt, text);
}

int ts_request_set_model(ts_request *r, const char *model) {
    return set_string(&r->model, model);
}

int ts_request_set_id(ts_request *r, const char *request_id) {
    return set_string(&r->request_id, request_id);
}

int ts_request_set_cache_salt(ts_request *r, const char *salt) {
    int rc = set_string(&r->cache_salt, salt);
    if (!rc) r->params.cache_salt = ts_kv_salt_digest(r->cache_salt);
    return rc;
}

int ts_request_set_ids(ts_request *r, const int32_t *ids, size_t n) {
    if (n > INT32_MAX) return ts_error_set(TS_E_INVALID, "prompt_ids: %zu ids, too many", n);
    int32_t *copy = malloc((n ? n : 1) * sizeof *copy);
    if (!copy) return ts_error_set(TS_E_NOMEM, "out of memory");
    if (n) memcpy(copy, ids, n * sizeof *copy);
    ts_request_take_ids(r, copy, (int32_t)n);
    return TS_OK;
}

void ts_request_take_ids(ts_request *r, int32_t *ids, int32_t n) {
    free(r->prompt_ids);
    r->prompt_ids = ids;
    r->n_prompt_ids = n;
}

int ts_request_add_stop(ts_request *r, const char *stop) {
    char **stops = realloc(r->stops, (size_t)(r->n_stops + 1) * sizeof *stops);
    if (!stops) return ts_error_set(TS_E_NOMEM, "out of memory");
    r->stops = stops;
    stops[r->n_stops] = strdup(stop);
    if (!stops[r->n_stops]) return ts_error_set(TS_E_NOMEM, "out of memory");
    r->n_stops++;
    return TS_OK;
}

int ts_request_add_eos(ts_request *r, int32_t eos) {
    ts_request_params *p = &r->params;
    if (r->ignore_eos || eos < 0) return TS_OK;
    for (int32_t i = 0; i < p->n_stop_ids && i < TS_MAX_STOP_IDS; i++)
        if (p->stop_ids[i] == eos) return TS_OK;
    if (p->n_stop_ids < 0 || p->n_stop_ids >= TS_MAX_STOP_IDS)
        return ts_error_set(TS_E_INVALID, "stop_ids: no room for the end-of-sequence id");
    p->stop_ids[p->n_stop_ids++] = eos;
    return TS_OK;
}

int ts_request_add_eos_ids(ts_request *r, const int32_t *ids, size_t n) {
    int rc = TS_OK;
    for (size_t i = 0; !rc && i < n; i++)
        rc = ts_request_add_eos(r, ids[i]);
    return rc;
}

void ts_request_pick_seed(ts_request *r) {
    if (r->has_seed) return;
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, 0) != (ssize_t)sizeof seed) {
        /* No entropy source: a clock and a counter still differ from request to request. */
        static _Atomic uint64_t counter;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = ((uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec) ^
               (++counter * 0x9e3779b97f4a7c15ULL);
    }
    r->params.seed = seed;
    r->has_seed = true;
}
