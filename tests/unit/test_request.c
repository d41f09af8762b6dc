/*
 * test_request.c — the request model: every row of the limits table holds at its limits and is
 * refused just outside them with a message naming the field and the limits; stop strings, stop
 * ids and prompt ids against the model; the protobuf mapping (zero = default on the wire, the
 * round trip of every field, stop ids beyond the cap refused after the mapping).
 */
#include "common/error.h"
#include "request/request_pb.h"
#include "test.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int32_t ids[4] = {1, 2, 3, 4};

/* A valid request over borrowed storage (never freed). */
static ts_request good(void) {
    ts_request r;
    memset(&r, 0, sizeof r);
    r.params = ts_request_params_default();
    r.prompt_ids = ids;
    r.n_prompt_ids = 4;
    return r;
}

/* Sets a table field; counts and lengths are made with storage of that size. */
static char text[1 << 12];
static char *stop_ptrs[40];
static void set_field(ts_request *r, ts_request_field_id id, double v) {
    ts_request_params *p = &r->params;
    switch (id) {
    case TS_REQUEST_FIELD_MAX_TOKENS: p->max_tokens = (int32_t)v; break;
    case TS_REQUEST_FIELD_TEMPERATURE: p->temperature = (float)v; break;
    case TS_REQUEST_FIELD_TOP_K: p->top_k = (int32_t)v; break;
    case TS_REQUEST_FIELD_TOP_P: p->top_p = (float)v; break;
    case TS_REQUEST_FIELD_MIN_P: p->min_p = (float)v; break;
    case TS_REQUEST_FIELD_REPETITION_PENALTY: p->repetition_penalty = (float)v; break;
    case TS_REQUEST_FIELD_REPETITION_LAST_N: p->repetition_last_n = (int32_t)v; break;
    case TS_REQUEST_FIELD_PRIORITY: p->priority = (int32_t)v; break;
    case TS_REQUEST_FIELD_TIMEOUT_MS: r->timeout_ms = (int64_t)v; break;
    case TS_REQUEST_FIELD_STOPS:
        for (int i = 0; i < (int)v; i++)
            stop_ptrs[i] = ".";
        r->stops = stop_ptrs;
        r->n_stops = (int32_t)v;
        break;
    case TS_REQUEST_FIELD_STOP_BYTES:
        memset(text, 'x', (size_t)v);
        text[(size_t)v] = '\0';
        stop_ptrs[0] = text;
        r->stops = stop_ptrs;
        r->n_stops = 1;
        break;
    case TS_REQUEST_FIELD_STOP_IDS: p->n_stop_ids = (int32_t)v; break; /* ids 0: in range */
    case TS_REQUEST_FIELD_PROMPT_BYTES: /* too long to build: checked by count below */
    case TS_REQUEST_FIELD_REQUEST_ID_BYTES:
    case TS_REQUEST_FIELD_CACHE_SALT_BYTES:
        memset(text, 'x', (size_t)v);
        text[(size_t)v] = '\0';
        if (id == TS_REQUEST_FIELD_REQUEST_ID_BYTES) r->request_id = text;
        if (id == TS_REQUEST_FIELD_CACHE_SALT_BYTES) r->cache_salt = text;
        break;
    case TS_REQUEST_FIELD_PRESENCE_PENALTY: p->presence_penalty = (float)v; break;
    case TS_REQUEST_FIELD_FREQUENCY_PENALTY: p->frequency_penalty = (float)v; break;
    case TS_REQUEST_FIELD_LOGIT_BIAS: p->n_logit_bias = (int32_t)v; break; /* ids 0: in range */
    case TS_REQUEST_FIELD_LOGIT_BIAS_VALUE:
        p->n_logit_bias = 1;
        p->logit_bias_ids[0] = 5;
        p->logit_bias[0] = (float)v;
        break;
    case TS_REQUEST_FIELD_TOP_LOGPROBS: p->top_logprobs = (int32_t)v; break;
    case TS_REQUEST_FIELD_SAMPLES: r->n = (int32_t)v; break;
    case TS_REQUEST_FIELD_COUNT: break;
    }
}

static bool params_equal(const ts_request_params *a, const ts_request_params *b) {
    if (a->n_stop_ids != b->n_stop_ids) return false;
    for (int32_t i = 0; i < a->n_stop_ids && i < TS_MAX_STOP_IDS; i++)
        if (a->stop_ids[i] != b->stop_ids[i]) return false;
    return a->max_tokens == b->max_tokens && a->temperature == b->temperature &&
           a->top_k == b->top_k && a->top_p == b->top_p && a->min_p == b->min_p &&
           a->repetition_penalty == b->repetition_penalty &&
           a->repetition_last_n == b->repetition_last_n && a->seed == b->seed &&
           a->logprobs == b->logprobs && a->priority == b->priority &&
           a->cache_salt == b->cache_salt && a->replayed == b->replayed &&
           a->presence_penalty == b->presence_penalty &&
           a->frequency_penalty == b->frequency_penalty && a->n_logit_bias == b->n_logit_bias &&
           a->top_logprobs == b->top_logprobs &&
           !memcmp(a->logit_bias_ids, b->logit_bias_ids,
                   (size_t)a->n_logit_bias * sizeof *a->logit_bias_ids) &&
           !memcmp(a->logit_bias, b->logit_bias, (size_t)a->n_logit_bias * sizeof *a->logit_bias);
}

static bool is_float_field(int id) {
    return id == TS_REQUEST_FIELD_TEMPERATURE || id == TS_REQUEST_FIELD_TOP_P ||
           id == TS_REQUEST_FIELD_MIN_P || id == TS_REQUEST_FIELD_REPETITION_PENALTY ||
           id == TS_REQUEST_FIELD_PRESENCE_PENALTY || id == TS_REQUEST_FIELD_FREQUENCY_PENALTY ||
           id == TS_REQUEST_FIELD_LOGIT_BIAS_VALUE;
}

static bool contains(const char *s, const char *needle) {
    return strstr(s, needle) != NULL;
}

static void test_every_field_holds_at_its_limits_and_is_refused_outside(void) {
    ts_request_model m = {.n_vocab = 100, .n_ctx = 64};
    for (int id = 0; id < TS_REQUEST_FIELD_COUNT; id++) {
        const ts_request_field *f = ts_request_field_get((ts_request_field_id)id);
        if (id == TS_REQUEST_FIELD_PROMPT_BYTES) continue; /* 16 MiB: below, by its message */
        bool integral = f->unit || floor(f->min) == f->min;
        double step = integral && f->max > 2 ? 1 : 1e-3;
        double inside[2] = {f->min_open ? f->min + step : f->min, f->max};
        double outside[3] = {f->min_open ? f->min : f->min - step, f->max + step, NAN};
        if (id == TS_REQUEST_FIELD_STOP_BYTES && f->max + 1 >= (double)sizeof text) continue;
        for (int i = 0; i < 2; i++) {
            ts_request r = good();
            set_field(&r, (ts_request_field_id)id, inside[i]);
            int rc = ts_request_validate(&r, &m);
            if (rc) fprintf(stderr, "  %s = %g: %s\n", f->name, inside[i], ts_error_message());
            CHECK_EQ_INT(rc, TS_OK);
        }
        for (int i = 0; i < 3; i++) {
            if (i == 2 && !is_float_field(id)) continue; /* NaN: float fields only */
            if (f->unit && outside[i] < 0) continue;
            if (id == TS_REQUEST_FIELD_STOP_IDS && outside[i] > 40) continue;
            if (id == TS_REQUEST_FIELD_SAMPLES && outside[i] == 0) continue; /* 0: unset, 1 */
            ts_request r = good();
            set_field(&r, (ts_request_field_id)id, outside[i]);
            CHECK_EQ_INT(ts_request_validate(&r, &m), TS_E_INVALID);
            const char *msg = ts_error_message();
            char lim[64];
            snprintf(lim, sizeof lim, f->unit ? "%.10g to %.10g" : "%.10g, %.10g]", f->min, f->max);
            bool named = contains(msg, id == TS_REQUEST_FIELD_STOP_BYTES ? "stop[0]"
                                       : id == TS_REQUEST_FIELD_LOGIT_BIAS_VALUE
                                           ? "sampling.logit_bias[0] (token 5)"
                                           : f->name);
            if (!named || !contains(msg, lim))
                fprintf(stderr, "  %s = %g: message %s\n", f->name, outside[i], msg);
            CHECK(named);
            CHECK(contains(msg, lim));
            if (f->flag) {
                char flag[64];
                snprintf(flag, sizeof flag, "--%s", f->flag);
                CHECK(contains(msg, flag));
            }
        }
    }
}

static void test_the_cli_and_the_wire_share_one_row_per_field(void) {
    const ts_request_field *t = ts_request_field_get(TS_REQUEST_FIELD_TEMPERATURE);
    CHECK_EQ_STR(t->name, "sampling.temperature");
    CHECK_EQ_STR(t->flag, "temperature");
    CHECK(t->min == 0 && t->max == 2); /* OpenAI's range, for HTTP and gRPC alike */
    const ts_request_field *p = ts_request_field_get(TS_REQUEST_FIELD_TOP_P);
    CHECK(p->min_open && p->min == 0 && p->max == 1);
    ts_request r = good();
    r.params.temperature = 2.5f;
    CHECK_EQ_INT(ts_request_validate(&r, NULL), TS_E_INVALID);
    CHECK_EQ_STR(ts_error_message(),
                 "sampling.temperature (--temperature) must be in [0, 2], got 2.5");
}

static void test_a_request_without_a_seed_gets_a_fresh_one(void) {
    ts_request a, b, c;
    ts_request_init(&a);
    ts_request_init(&b);
    ts_request_init(&c);
    ts_request_pick_seed(&a);
    ts_request_pick_seed(&b);
    CHECK(a.has_seed && b.has_seed);
    CHECK(a.params.seed != b.params.seed); /* 2^-64 to fail by chance */
    uint64_t first = a.params.seed;
    ts_request_pick_seed(&a); /* has one now: kept */
    CHECK(a.params.seed == first);
    c.has_seed = true;
    c.params.seed = 0; /* seed 0 given is a seed */
    ts_request_pick_seed(&c);
    CHECK(c.params.seed == 0);
}

static void test_prompt_against_the_model(void) {
    ts_request_model m = {.n_vocab = 5, .n_ctx = 4};
    ts_request r = good();
    CHECK_EQ_INT(ts_request_validate(&r, &m), TS_E_INVALID); /* 4 ids fill a context of 4 */
    CHECK(contains(ts_error_message(), "context holds 4"));
    r.n_prompt_ids = 3;
    CHECK_EQ_INT(ts_request_validate(&r, &m), TS_OK);
    m.n_vocab = 3;
    CHECK_EQ_INT(ts_request_validate(&r, &m), TS_E_INVALID);
    CHECK_EQ_STR(ts_error_message(), "prompt_ids[2] = 3 is outside the vocabulary [0, 2]");
    CHECK_EQ_INT(ts_request_validate(&r, NULL), TS_OK); /* no model: ids not checked */
    r.params.stop_ids[0] = 7;
    r.params.n_stop_ids = 1;
    m.n_vocab = 5;
    CHECK_EQ_INT(ts_request_validate(&r, &m), TS_E_INVALID);
    CHECK(contains(ts_error_message(), "stop_ids[0] = 7"));
    ts_request e = good();
    e.n_prompt_ids = 0;
    CHECK_EQ_INT(ts_request_validate(&e, NULL), TS_E_INVALID);
    CHECK(contains(ts_error_message(), "empty prompt"));
    e.prompt = "Once";
    CHECK_EQ_INT(ts_request_validate(&e, NULL), TS_OK); /* text, not tokenized yet */
}

static void test_generate_request_zero_values_are_the_defaults(void) {
    Tessera__V1__GenerateRequest q = TESSERA__V1__GENERATE_REQUEST__INIT;
    Tessera__V1__SamplingParams sp = TESSERA__V1__SAMPLING_PARAMS__INIT;
    q.prompt = "Once";
    q.sampling = &sp;
    ts_request r;
    CHECK_EQ_INT(ts_request_from_generate(&q, &r), TS_OK);
    ts_request_params d = ts_request_params_default();
    CHECK_EQ_INT(r.params.max_tokens, d.max_tokens);
    CHECK(r.params.top_p == 1.0f && r.params.repetition_penalty == 1.0f);
    CHECK_EQ_INT(r.params.repetition_last_n, 64);
    CHECK_EQ_STR(r.prompt, "Once");
    CHECK_EQ_INT(ts_request_validate(&r, NULL), TS_OK);
    CHECK(!r.has_seed); /* no seed: the coordinator draws one */
    CHECK_EQ_INT(r.n, 0); /* one sample */
    ts_request_free(&r);
    q.n = -1; /* 0 is unset (one sample); below it is refused */
    CHECK_EQ_INT(ts_request_from_generate(&q, &r), TS_OK);
    CHECK_EQ_INT(ts_request_validate(&r, NULL), TS_E_INVALID);
    CHECK(contains(ts_error_message(), "n must be in [1, 128], got -1"));
    ts_request_free(&r);
    q.n = 0;
    sp.seed_given_case = TESSERA__V1__SAMPLING_PARAMS__SEED_GIVEN_SEED; /* seed 0, given */
    CHECK_EQ_INT(ts_request_from_generate(&q, &r), TS_OK);
    CHECK(r.has_seed && r.params.seed == 0);
    Tessera__V1__GenerateRequest back;
    Tessera__V1__SamplingParams back_sp;
    ts_request_to_generate(&r, &back, &back_sp);
    CHECK(back_sp.seed_given_case == TESSERA__V1__SAMPLING_PARAMS__SEED_GIVEN_SEED);
    ts_request_free(&r);
}

static void test_generate_request_round_trip(void) {
    ts_request r;
    ts_request_init(&r);
    CHECK_EQ_INT(ts_request_set_ids(&r, ids, 4), TS_OK);
    CHECK_EQ_INT(ts_request_set_model(&r, "m"), TS_OK);
    CHECK_EQ_INT(ts_request_set_id(&r, "client-1"), TS_OK);
    CHECK_EQ_INT(ts_request_add_stop(&r, "\n\n"), TS_OK);
    r.params = (ts_request_params){.max_tokens = 7,
                                   .temperature = 0.5f,
                                   .top_k = 3,
                                   .top_p = 0.9f,
                                   .min_p = 0.1f,
                                   .repetition_penalty = 1.2f,
                                   .repetition_last_n = 12,
                                   .seed = 99,
                                   .logprobs = true,
                                   .priority = -3,
                                   .presence_penalty = 0.5f,
                                   .frequency_penalty = -0.25f,
                                   .n_logit_bias = 2,
                                   .top_logprobs = 5};
    r.params.logit_bias_ids[0] = 3, r.params.logit_bias[0] = -100;
    r.params.logit_bias_ids[1] = 1, r.params.logit_bias[1] = 2.5f;
    r.ignore_eos = r.no_bos = r.has_seed = true;
    r.n = 3;
    CHECK_EQ_INT(ts_request_set_cache_salt(&r, "tenant-7"), TS_OK);
    CHECK(r.params.cache_salt != 0);
    Tessera__V1__GenerateRequest q;
    Tessera__V1__SamplingParams sp;
    ts_request_to_generate(&r, &q, &sp);
    uint8_t buf[512];
    size_t n = tessera__v1__generate_request__pack(&q, buf);
    Tessera__V1__GenerateRequest *back = tessera__v1__generate_request__unpack(NULL, n, buf);
    CHECK(back != NULL);
    ts_request b;
    CHECK_EQ_INT(ts_request_from_generate(back, &b), TS_OK);
    CHECK_EQ_INT(b.n_prompt_ids, 4);
    CHECK_EQ_INT(b.prompt_ids[3], 4);
    CHECK(!b.prompt);
    CHECK_EQ_STR(b.model, "m");
    CHECK_EQ_STR(b.request_id, "client-1");
    CHECK_EQ_INT(b.n_stops, 1);
    CHECK_EQ_STR(b.stops[0], "\n\n");
    CHECK(b.ignore_eos && b.no_bos);
    CHECK_EQ_INT(b.n, 3);
    CHECK_EQ_STR(b.cache_salt, "tenant-7");
    CHECK(params_equal(&b.params, &r.params));
    ts_request_free(&b);
    back->sampling->n_logit_bias_values = 1; /* one bias for two ids */
    CHECK_EQ_INT(ts_request_from_generate(back, &b), TS_E_INVALID);
    CHECK(contains(ts_error_message(), "1 values for 2 logit_bias_ids"));
    tessera__v1__generate_request__free_unpacked(back, NULL);
    ts_request_free(&b);
    ts_request_free(&r);
}

static void test_submit_round_trip_and_stop_ids_beyond_the_cap(void) {
    ts_request_params p = ts_request_params_default();
    p.max_tokens = 5;
    p.temperature = 0.7f;
    p.stop_ids[0] = 2;
    p.n_stop_ids = 1;
    p.cache_salt = 0xfeedull;
    p.replayed = 3;
    p.frequency_penalty = 1.5f;
    p.logit_bias_ids[0] = 4, p.logit_bias[0] = 100, p.n_logit_bias = 1;
    Tessera__V1__Submit s = TESSERA__V1__SUBMIT__INIT;
    Tessera__V1__SamplingParams sp;
    ts_request_params_to_submit(&p, &s, &sp);
    ts_request_params back;
    ts_request_params_from_submit(&s, &back);
    CHECK(params_equal(&back, &p));
    /* A window of 0 tokens is sent as no penalty (the wire's 0 means 64). */
    p.repetition_penalty = 1.5f;
    p.repetition_last_n = 0;
    ts_request_params_to_submit(&p, &s, &sp);
    CHECK(sp.repetition_penalty == 1.0f);
    int32_t many[40] = {0};
    s.n_stop_ids = 40;
    s.stop_ids = many;
    ts_request_params_from_submit(&s, &back);
    CHECK_EQ_INT(back.n_stop_ids, 40);
    ts_request r = good();
    r.params = back;
    CHECK_EQ_INT(ts_request_validate(&r, NULL), TS_E_INVALID);
    CHECK(contains(ts_error_message(), "stop_ids must have 0 to 16 ids, got 40"));
}

static void test_eos_is_added_unless_ignored(void) {
    ts_request r;
    ts_request_init(&r);
    CHECK_EQ_INT(ts_request_add_eos(&r, 2), TS_OK);
    CHECK_EQ_INT(r.params.n_stop_ids, 1);
    CHECK_EQ_INT(ts_request_add_eos(&r, -1), TS_OK);
    CHECK_EQ_INT(ts_request_add_eos(&r, 2), TS_OK); /* already there: not added twice */
    CHECK_EQ_INT(r.params.n_stop_ids, 1);
    const int32_t eog[] = {2, 7, 9};
    CHECK_EQ_INT(ts_request_add_eos_ids(&r, eog, 3), TS_OK);
    CHECK_EQ_INT(r.params.n_stop_ids, 3);
    CHECK_EQ_INT(r.params.stop_ids[2], 9);
    r.ignore_eos = true;
    CHECK_EQ_INT(ts_request_add_eos(&r, 3), TS_OK);
    CHECK_EQ_INT(r.params.n_stop_ids, 3);
    ts_request_free(&r);
}

/* A failover replay's tokens are part of the prompt: at least one prompt id is the client's. */
static void test_replayed_lies_within_the_prompt(void) {
    ts_request r = good(); /* 4 prompt ids */
    r.params.replayed = 3;
    CHECK_EQ_INT(ts_request_validate(&r, NULL), TS_OK);
    r.params.replayed = 4;
    CHECK_EQ_INT(ts_request_validate(&r, NULL), TS_E_INVALID);
    CHECK(contains(ts_error_message(), "replayed: 4 of 4 prompt ids"));
    r.params.replayed = -1;
    CHECK_EQ_INT(ts_request_validate(&r, NULL), TS_E_INVALID);
}

/* A copy owns everything it holds: freeing the original leaves it whole, and equal. */
static void test_a_copy_owns_everything_it_holds(void) {
    ts_request a, b;
    ts_request_init(&a);
    CHECK_EQ_INT(ts_request_set_text(&a, "Once upon"), TS_OK);
    CHECK_EQ_INT(ts_request_set_ids(&a, ids, 4), TS_OK);
    CHECK_EQ_INT(ts_request_set_model(&a, "m"), TS_OK);
    CHECK_EQ_INT(ts_request_set_id(&a, "req-1"), TS_OK);
    CHECK_EQ_INT(ts_request_set_cache_salt(&a, "tenant"), TS_OK);
    CHECK_EQ_INT(ts_request_add_stop(&a, "\n\n"), TS_OK);
    CHECK_EQ_INT(ts_request_add_stop(&a, "END"), TS_OK);
    a.params.temperature = 0.7f;
    a.params.seed = 42;
    a.has_seed = true;
    CHECK_EQ_INT(ts_request_copy(&b, &a), TS_OK);
    uint64_t salt = a.params.cache_salt;
    ts_request_free(&a);
    CHECK(b.prompt && !strcmp(b.prompt, "Once upon"));
    CHECK_EQ_INT(b.n_prompt_ids, 4);
    CHECK_EQ_INT(b.prompt_ids[3], 4);
    CHECK(b.model && !strcmp(b.model, "m"));
    CHECK(b.request_id && !strcmp(b.request_id, "req-1"));
    CHECK(b.cache_salt && !strcmp(b.cache_salt, "tenant"));
    CHECK(b.params.cache_salt == salt && salt != 0);
    CHECK_EQ_INT(b.n_stops, 2);
    CHECK(!strcmp(b.stops[1], "END"));
    CHECK(b.has_seed && b.params.seed == 42 && b.params.temperature == 0.7f);
    ts_request_clear_prompt(&b);
    CHECK(!b.prompt && !b.prompt_ids && b.n_prompt_ids == 0 && b.n_stops == 2);
    ts_request_free(&b);
    ts_request_init(&a); /* an empty request copies to an empty one */
    CHECK_EQ_INT(ts_request_copy(&b, &a), TS_OK);
    CHECK(!b.prompt && !b.prompt_ids && !b.stops && !b.model);
    ts_request_free(&b);
}

/* ts_request_check names the refused field (the API's name), NULL when valid. */
static void test_check_names_the_refused_field(void) {
    const char *field = "x";
    ts_request r = good();
    CHECK_EQ_INT(ts_request_check(&r, NULL, &field), TS_OK);
    CHECK(field == NULL);
    r.params.temperature = 150;
    CHECK_EQ_INT(ts_request_check(&r, NULL, &field), TS_E_INVALID);
    CHECK(field && !strcmp(field, "sampling.temperature"));
    r = good();
    r.params.logit_bias_ids[0] = 3;
    r.params.logit_bias[0] = 500;
    r.params.n_logit_bias = 1;
    CHECK_EQ_INT(ts_request_check(&r, NULL, &field), TS_E_INVALID);
    CHECK(field && !strcmp(field, "sampling.logit_bias"));
    r = good();
    ts_request_model m = {.n_vocab = 3, .n_ctx = 64};
    CHECK_EQ_INT(ts_request_check(&r, &m, &field), TS_E_INVALID); /* id 3 is outside [0, 3) */
    CHECK(field && !strcmp(field, "prompt"));
    r.n_prompt_ids = 0;
    CHECK_EQ_INT(ts_request_check(&r, NULL, &field), TS_E_INVALID);
    CHECK(field && !strcmp(field, "prompt"));
}

int main(void) {
    RUN(test_every_field_holds_at_its_limits_and_is_refused_outside);
    RUN(test_the_cli_and_the_wire_share_one_row_per_field);
    RUN(test_a_request_without_a_seed_gets_a_fresh_one);
    RUN(test_prompt_against_the_model);
    RUN(test_generate_request_zero_values_are_the_defaults);
    RUN(test_generate_request_round_trip);
    RUN(test_submit_round_trip_and_stop_ids_beyond_the_cap);
    RUN(test_eos_is_added_unless_ignored);
    RUN(test_replayed_lies_within_the_prompt);
    RUN(test_a_copy_owns_everything_it_holds);
    RUN(test_check_names_the_refused_field);
    return test_summary();
}
