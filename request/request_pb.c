/* request_pb.c — request model ↔ protobuf; see request_pb.h. */
#include "request/request_pb.h"

#include "common/error.h"

#include <string.h>

ts_finish_reason ts_finish_reason_from_pb(Tessera__V1__FinishReason reason) {
    switch (reason) {
    case TESSERA__V1__FINISH_REASON__FINISH_REASON_UNSPECIFIED: return TS_FINISH_NONE;
    case TESSERA__V1__FINISH_REASON__FINISH_REASON_LENGTH: return TS_FINISH_LENGTH;
    case TESSERA__V1__FINISH_REASON__FINISH_REASON_STOP: return TS_FINISH_STOP;
    case TESSERA__V1__FINISH_REASON__FINISH_REASON_CANCELLED: return TS_FINISH_CANCELLED;
    default: return TS_FINISH_ERROR;
    }
}

Tessera__V1__FinishReason ts_finish_reason_to_pb(ts_finish_reason reason) {
    switch (reason) {
    case TS_FINISH_NONE: return TESSERA__V1__FINISH_REASON__FINISH_REASON_UNSPECIFIED;
    case TS_FINISH_LENGTH: return TESSERA__V1__FINISH_REASON__FINISH_REASON_LENGTH;
    case TS_FINISH_STOP: return TESSERA__V1__FINISH_REASON__FINISH_REASON_STOP;
    case TS_FINISH_CANCELLED: return TESSERA__V1__FINISH_REASON__FINISH_REASON_CANCELLED;
    case TS_FINISH_ERROR: break;
    }
    return TESSERA__V1__FINISH_REASON__FINISH_REASON_ERROR;
}

void ts_request_usage_to_pb(const ts_request_usage *u, Tessera__V1__Usage *out) {
    tessera__v1__usage__init(out);
    out->prompt_tokens = u->prompt_tokens;
    out->completion_tokens = u->completion_tokens;
    out->cached_prompt_tokens = u->cached_prompt_tokens;
    out->queue_ms = u->queue_ms;
    out->ttft_ms = u->ttft_ms;
    out->total_ms = u->total_ms;
}

static void sampling_from_pb(const Tessera__V1__SamplingParams *s, ts_request_params *p) {
    if (!s) return;
    p->temperature = s->temperature;
    p->top_k = s->top_k;
    p->top_p = s->top_p == 0.0f ? 1.0f : s->top_p;
    p->min_p = s->min_p;
    p->repetition_penalty = s->repetition_penalty == 0.0f ? 1.0f : s->repetition_penalty;
    if (s->repetition_last_n) p->repetition_last_n = s->repetition_last_n;
    p->seed = s->seed;
    p->top_logprobs = s->top_logprobs;
    p->presence_penalty = s->presence_penalty;
    p->frequency_penalty = s->frequency_penalty;
    size_t n =
        s->n_logit_bias_ids < s->n_logit_bias_values ? s->n_logit_bias_ids : s->n_logit_bias_values;
    size_t keep = n < TS_MAX_LOGIT_BIAS ? n : TS_MAX_LOGIT_BIAS;
    if (keep) memcpy(p->logit_bias_ids, s->logit_bias_ids, keep * sizeof *p->logit_bias_ids);
    if (keep) memcpy(p->logit_bias, s->logit_bias_values, keep * sizeof *p->logit_bias);
    p->n_logit_bias = n > INT32_MAX ? INT32_MAX : (int32_t)n; /* validation refuses > the cap */
}

static void sampling_to_pb(const ts_request_params *p, Tessera__V1__SamplingParams *s) {
    tessera__v1__sampling_params__init(s);
    s->temperature = p->temperature;
    s->top_k = p->top_k;
    s->top_p = p->top_p;
    s->min_p = p->min_p;
    /* The wire cannot say "look back over 0 tokens" (0 means 64); a window of 0 tokens is no
     * penalty, which it can say. */
    s->repetition_penalty = p->repetition_last_n == 0 ? 1.0f : p->repetition_penalty;
    s->repetition_last_n = p->repetition_last_n;
    s->seed_given_case = TESSERA__V1__SAMPLING_PARAMS__SEED_GIVEN_SEED; /* a node runs with it */
    s->seed = p->seed;
    s->top_logprobs = p->top_logprobs;
    s->presence_penalty = p->presence_penalty;
    s->frequency_penalty = p->frequency_penalty;
    size_t n = (size_t)(p->n_logit_bias < TS_MAX_LOGIT_BIAS ? p->n_logit_bias : TS_MAX_LOGIT_BIAS);
    s->n_logit_bias_ids = s->n_logit_bias_values = p->n_logit_bias > 0 ? n : 0;
    s->logit_bias_ids = (int32_t *)p->logit_bias_ids;
    s->logit_bias_values = (float *)p->logit_bias;
}

static void stop_ids_from_pb(const int32_t *ids, size_t n, ts_request_params *p) {
    size_t keep = n < TS_MAX_STOP_IDS ? n : TS_MAX_STOP_IDS;
    if (keep) memcpy(p->stop_ids, ids, keep * sizeof *ids);
    p->n_stop_ids = n > INT32_MAX ? INT32_MAX : (int32_t)n; /* validation refuses > the cap */
}

int ts_request_from_generate(const Tessera__V1__GenerateRequest *q, ts_request *out) {
    ts_request_init(out);
    ts_request_params *p = &out->params;
    if (q->max_tokens) p->max_tokens = q->max_tokens;
    sampling_from_pb(q->sampling, p);
    out->has_seed = q->sampling &&
                    q->sampling->seed_given_case == TESSERA__V1__SAMPLING_PARAMS__SEED_GIVEN_SEED;
    p->logprobs = q->logprobs;
    p->priority = q->priority;
    out->no_bos = q->no_bos;
    out->ignore_eos = q->ignore_eos;
    out->n = q->n;
    int rc = ts_request_set_model(out, q->model);
    if (!rc && q->cache_salt[0]) rc = ts_request_set_cache_salt(out, q->cache_salt);
    if (!rc && q->request_id[0]) rc = ts_request_set_id(out, q->request_id);
    if (!rc && q->prompt[0]) rc = ts_request_set_text(out, q->prompt);
    else if (!rc && q->n_prompt_ids) rc = ts_request_set_ids(out, q->prompt_ids, q->n_prompt_ids);
    if (!rc && q->n_stop > INT32_MAX) rc = ts_error_set(TS_E_INVALID, "stop: too many strings");
    if (!rc && q->sampling && q->sampling->n_logit_bias_ids != q->sampling->n_logit_bias_values)
        rc = ts_error_set(TS_E_INVALID,
                          "sampling.logit_bias_values: %zu values for %zu logit_bias_ids (one "
                          "bias per id)",
                          q->sampling->n_logit_bias_values, q->sampling->n_logit_bias_ids);
    for (size_t i = 0; !rc && i < q->n_stop; i++)
        rc = ts_request_add_stop(out, q->stop[i]);
    return rc;
}

void ts_request_to_generate(const ts_request *r, Tessera__V1__GenerateRequest *q,
                            Tessera__V1__SamplingParams *sp) {
    tessera__v1__generate_request__init(q);
    sampling_to_pb(&r->params, sp);
    if (!r->has_seed) sp->seed_given_case = TESSERA__V1__SAMPLING_PARAMS__SEED_GIVEN__NOT_SET;
    q->model = r->model ? r->model : "";
    q->prompt = r->prompt ? r->prompt : "";
    if (!r->prompt || !r->prompt[0]) {
        q->n_prompt_ids = (size_t)r->n_prompt_ids;
        q->prompt_ids = r->prompt_ids;
    }
    q->max_tokens = r->params.max_tokens;
    q->sampling = sp;
    q->n_stop = (size_t)r->n_stops;
    q->stop = r->stops;
    q->logprobs = r->params.logprobs;
    q->priority = r->params.priority;
    q->request_id = r->request_id ? r->request_id : "";
    q->no_bos = r->no_bos;
    q->ignore_eos = r->ignore_eos;
    q->n = r->n;
    q->cache_salt = r->cache_salt ? r->cache_salt : "";
}

void ts_request_params_from_submit(const Tessera__V1__Submit *m, ts_request_params *p) {
    *p = ts_request_params_default();
    p->max_tokens = m->max_tokens;
    sampling_from_pb(m->sampling, p);
    p->logprobs = m->logprobs;
    p->priority = m->priority;
    p->cache_salt = m->cache_salt;
    p->replayed = m->replayed_tokens;
    stop_ids_from_pb(m->stop_ids, m->n_stop_ids, p);
}

void ts_request_params_to_submit(const ts_request_params *p, Tessera__V1__Submit *s,
                                 Tessera__V1__SamplingParams *sp) {
    sampling_to_pb(p, sp);
    s->max_tokens = p->max_tokens;
    s->sampling = sp;
    s->logprobs = p->logprobs;
    s->priority = p->priority;
    s->cache_salt = p->cache_salt;
    s->replayed_tokens = p->replayed;
    s->n_stop_ids = (size_t)(p->n_stop_ids < TS_MAX_STOP_IDS ? p->n_stop_ids : TS_MAX_STOP_IDS);
    s->stop_ids = (int32_t *)p->stop_ids;
}
