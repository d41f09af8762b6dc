/*
 * request.h — the one request model of Tessera: what a client asks for, its limits, and the one
 * validation of it.
 *
 * Every front door (the CLI, the coordinator's gRPC API, later HTTP and the batch runner) turns
 * its input into a ts_request and calls ts_request_validate once, where the request enters; the
 * node's worker and scheduler take the same types (ts_request_params is what a node runs) and
 * check them with the same function, so a value is legal everywhere or nowhere. The limits of
 * every field are one table (ts_request_field_get); the wire mapping is request_pb.h, the only
 * code that copies fields between the protobuf messages and these types.
 *
 * Errors: ts_request_validate returns TS_E_INVALID with a message that names the field as the
 * API spells it, its CLI flag when it has one, its limits and the value:
 *   "sampling.temperature (--temperature) must be in [0, 100], got 150"
 * Callers map the code (TS_E_INVALID → INVALID_ARGUMENT, exit 2); nobody parses the text.
 *
 * Ownership: a ts_request owns its strings and arrays (ts_request_init / ts_request_free and the
 * setters below). A request built over borrowed storage (a stack value whose pointers point at
 * somebody else's data, only to be validated) must not be freed. Pure functions, thread-safe.
 */
#ifndef TS_REQUEST_REQUEST_H
#define TS_REQUEST_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    TS_MAX_STOP_IDS = 16,      /* stop token ids of one request (ts_request_params.stop_ids) */
    TS_REQUEST_MAX_STOPS = 4,  /* stop strings of one request (OpenAI's limit) */
    TS_REQUEST_ID_BYTES = 128, /* a client's request id, NUL included */
    TS_MAX_LOGIT_BIAS = 300,   /* logit_bias entries of one request (OpenAI's limit) */
    TS_MAX_TOP_LOGPROBS = 20,  /* top_logprobs of one request (OpenAI's chat limit) */
    TS_MAX_SAMPLES = 128,      /* n: samples of one prompt (OpenAI's limit) */
};

typedef enum {
    TS_FINISH_NONE = 0,
    TS_FINISH_LENGTH = 1,    /* max_tokens or the context length reached */
    TS_FINISH_STOP = 2,      /* a stop token (EOS) was sampled */
    TS_FINISH_CANCELLED = 3, /* ts_sched_cancel */
    TS_FINISH_ERROR = 4,     /* the group failed */
} ts_finish_reason;

const char *ts_finish_reason_name(ts_finish_reason r); /* "length", "stop", ... */

/* What a finished request used (the last output of every front door). */
typedef struct ts_request_usage {
    int32_t prompt_tokens, completion_tokens;
    int32_t cached_prompt_tokens; /* prompt tokens whose KV cache was reused */
    double queue_ms;              /* from arrival to the start of prefill */
    double ttft_ms;               /* from arrival to the first token */
    double total_ms;
} ts_request_usage;

/* What a node runs: the generation and sampling parameters of one request. */
typedef struct ts_request_params {
    int32_t max_tokens;        /* tokens to generate */
    float temperature;         /* 0: greedy */
    int32_t top_k;             /* 0: off */
    float top_p;               /* 1: off */
    float min_p;               /* 0: off */
    float repetition_penalty;  /* 1: off */
    int32_t repetition_last_n; /* tokens (prompt included) the penalty looks back over */
    uint64_t seed;             /* any value */
    /* OpenAI's penalties over the tokens generated so far (not the prompt): the logit of a token
     * that occurred c > 0 times loses frequency_penalty * c + presence_penalty. 0: off. */
    float presence_penalty, frequency_penalty;
    /* logit_bias: logit_bias[i] is added to the logit of logit_bias_ids[i] (after the penalties,
     * before everything else; -100 and 100 in effect ban and force a token). As with stop_ids,
     * after a wire mapping n_logit_bias is the count the message had (validation refuses more
     * than TS_MAX_LOGIT_BIAS). */
    int32_t logit_bias_ids[TS_MAX_LOGIT_BIAS];
    float logit_bias[TS_MAX_LOGIT_BIAS];
    int32_t n_logit_bias;
    bool logprobs;
    int32_t top_logprobs; /* with logprobs: the most probable tokens at each step, 0 to 20 */
    int32_t priority; /* higher runs first; interactive > batch */
    /* The prefix-cache salt (ts_kv_salt_digest of ts_request.cache_salt, common/kv_hash.h; 0:
     * none): requests share cached KV blocks only when their salts are equal. */
    uint64_t cache_salt;
    /* A failover replay (coordinator → node only, never from a client): the last `replayed`
     * prompt ids are tokens this request already generated and streamed on a group that failed.
     * max_tokens then counts what is left; the sampler skips the random draws those tokens took,
     * so the continuation is the one the failed group would have produced. 0 ≤ replayed <
     * the number of prompt ids. */
    int32_t replayed;
    /* End-of-sequence ids (not emitted). After a mapping from the wire n_stop_ids is the count
     * the message had, which may exceed TS_MAX_STOP_IDS (only that many are stored):
     * ts_request_validate refuses it, and nothing reads stop_ids before validating. */
    int32_t stop_ids[TS_MAX_STOP_IDS];
    int32_t n_stop_ids;
} ts_request_params;

/* Greedy, 16 tokens, no penalties, repetition_last_n 64, no stop ids, priority 0. */
ts_request_params ts_request_params_default(void);

/* The two classes of work: priority >= 0 is interactive, below it batch work (the batch runner's
 * requests, which run as filler: node/scheduler.h). Metrics label by the same line. */
static inline bool ts_priority_is_batch(int32_t priority) {
    return priority < 0;
}

/* One request as a client gives it. */
typedef struct ts_request {
    char *model;         /* NULL or "": the served model */
    char *prompt;        /* text to tokenize (NULL: none) */
    int32_t *prompt_ids; /* the prompt as token ids: given, or the tokenized text */
    int32_t n_prompt_ids;
    bool no_bos;     /* do not add BOS when tokenizing the text */
    bool ignore_eos; /* keep generating after the end-of-sequence token */
    char **stops;    /* stop strings: generation ends before the first match */
    int32_t n_stops;
    char *request_id; /* the client's id (NULL: none) */
    int64_t timeout_ms; /* deadline from arrival; 0: none */
    bool priority_lower_first; /* the client's priority was -params.priority (vLLM's HTTP
                                * convention: lower runs sooner); messages show its value */
    bool has_seed;      /* params.seed was given; else the coordinator draws a fresh random one
                         * where the request enters (ts_request_pick_seed) */
    char *cache_salt;   /* NULL or "": none; see ts_request_params.cache_salt */
    /* Samples of the prompt the client wants (OpenAI's n; 0: one). Only the front door reads
     * it: it runs each sample as a request of its own (the coordinator's co_request_admit_sample),
     * sample j with seed + j when seeded. */
    int32_t n;
    ts_request_params params;
} ts_request;

/* ---- the limits: one table ---- */

typedef enum {
    TS_REQUEST_FIELD_MAX_TOKENS,
    TS_REQUEST_FIELD_TEMPERATURE,
    TS_REQUEST_FIELD_TOP_K,
    TS_REQUEST_FIELD_TOP_P,
    TS_REQUEST_FIELD_MIN_P,
    TS_REQUEST_FIELD_REPETITION_PENALTY,
    TS_REQUEST_FIELD_REPETITION_LAST_N,
    TS_REQUEST_FIELD_PRIORITY,
    TS_REQUEST_FIELD_TIMEOUT_MS,
    TS_REQUEST_FIELD_STOPS,        /* the number of stop strings */
    TS_REQUEST_FIELD_STOP_BYTES,   /* the length of each stop string */
    TS_REQUEST_FIELD_STOP_IDS,     /* the number of stop ids (each must be in the vocabulary) */
    TS_REQUEST_FIELD_PROMPT_BYTES, /* the length of the text prompt */
    TS_REQUEST_FIELD_REQUEST_ID_BYTES,
    TS_REQUEST_FIELD_CACHE_SALT_BYTES,
    TS_REQUEST_FIELD_PRESENCE_PENALTY,
    TS_REQUEST_FIELD_FREQUENCY_PENALTY,
    TS_REQUEST_FIELD_LOGIT_BIAS, /* the number of entries (each id must be in the vocabulary) */
    TS_REQUEST_FIELD_LOGIT_BIAS_VALUE, /* each entry's bias */
    TS_REQUEST_FIELD_TOP_LOGPROBS,
    TS_REQUEST_FIELD_SAMPLES, /* n (0 counts as 1) */
    TS_REQUEST_FIELD_COUNT
} ts_request_field_id;

typedef struct ts_request_field {
    const char *name; /* as the API spells it: "sampling.temperature" */
    const char *flag; /* the CLI flag without dashes ("temperature"), or NULL */
    double min, max;  /* inclusive limits ... */
    bool min_open;    /* ... except min itself when set: (min, max] */
    const char *unit; /* NULL for a value; "strings", "bytes", "ids" for a count */
} ts_request_field;

/* The row of a field (never NULL for a valid id). */
const ts_request_field *ts_request_field_get(ts_request_field_id id);

/* What only the model knows; 0 = unknown, not checked. */
typedef struct ts_request_model {
    int32_t n_vocab; /* prompt and stop ids must lie in [0, n_vocab) */
    int32_t n_ctx;   /* a prompt of ids leaves at least one position: n_prompt_ids < n_ctx */
} ts_request_model;

/* The one validation: every field against the table, stop strings, logit_bias entries, stop
 * ids, logit_bias ids and prompt ids against the model. A prompt is required (text or ids); ids are
 * checked once present, so a text request may be validated before and after tokenizing. 0 or
 * TS_E_INVALID with the message. `m` may be NULL (nothing model-dependent checked). */
int ts_request_validate(const ts_request *r, const ts_request_model *m);
/* ts_request_validate that also says which field it refused: *field (when field is not NULL)
 * gets its API name ("sampling.temperature", "stop", "stop_ids", "sampling.logit_bias",
 * "prompt", ...; a table row's name), NULL when valid. For front doors whose errors name a
 * field apart from the message (HTTP's "param"); the code, not the text, is the interface. */
int ts_request_check(const ts_request *r, const ts_request_model *m, const char **field);

/* ---- building one (owned storage) ---- */

/* Empty request with ts_request_params_default(). */
void ts_request_init(ts_request *r);
/* Frees what the request owns and empties it; safe on an initialized or zeroed request. */
void ts_request_free(ts_request *r);
/* dst (uninitialized) becomes a deep copy of src: its own strings and arrays, equal fields.
 * 0, or TS_E_NOMEM with dst empty (ts_request_init). For requests that differ in one field
 * (the choices of an HTTP n > 1, the prompts of a list). */
int ts_request_copy(ts_request *dst, const ts_request *src);
/* Frees the prompt (text and ids), leaving everything else. */
void ts_request_clear_prompt(ts_request *r);
/* Each copies its argument, replacing an earlier value. 0 or TS_E_NOMEM. */
int ts_request_set_text(ts_request *r, const char *text);
int ts_request_set_ids(ts_request *r, const int32_t *ids, size_t n); /* TS_E_INVALID > INT32_MAX */
/* The ids become the request's (ownership passes; free() them otherwise). */
void ts_request_take_ids(ts_request *r, int32_t *ids, int32_t n);
int ts_request_set_model(ts_request *r, const char *model);
int ts_request_set_id(ts_request *r, const char *request_id);
/* Sets cache_salt and params.cache_salt (its digest). */
int ts_request_set_cache_salt(ts_request *r, const char *salt);
int ts_request_add_stop(ts_request *r, const char *stop);
/* Without a seed (has_seed false): a fresh random params.seed (getrandom), has_seed set. */
void ts_request_pick_seed(ts_request *r);
/* Adds an end-of-sequence id unless ignore_eos, the id is negative or already a stop id;
 * TS_E_INVALID when full. */
int ts_request_add_eos(ts_request *r, int32_t eos);
/* ts_request_add_eos for each of ids (a tokenizer's end-of-generation ids: EOS, EOT, <|im_end|>,
 * ...; every front door stops on all of them, as llama.cpp does). */
int ts_request_add_eos_ids(ts_request *r, const int32_t *ids, size_t n);

#endif
