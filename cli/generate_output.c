/*
 * generate_output.c — see generate_output.h.
 */
#include "cli/generate_output.h"

#include "common/error.h"
#include "common/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ts_generate_output_tokens(ts_generate_output *o, const int32_t *ids, size_t n) {
    if (o->n_ids + n > o->cap_ids) {
        size_t cap = o->cap_ids ? o->cap_ids : 64;
        while (cap < o->n_ids + n)
            cap *= 2;
        int32_t *grown = realloc(o->ids, cap * sizeof *grown);
        if (!grown) return ts_error_set(TS_E_NOMEM, "out of memory");
        o->ids = grown;
        o->cap_ids = cap;
    }
    if (n) memcpy(o->ids + o->n_ids, ids, n * sizeof *ids);
    o->n_ids += n;
    return 0;
}

int ts_generate_output_text(ts_generate_output *o, const char *text, size_t n) {
    if (n == 0) return 0;
    if (ts_buf_append(&o->completion, text, n)) return ts_error_set(TS_E_NOMEM, "out of memory");
    if (!o->json) {
        fwrite(text, 1, n, stdout);
        fflush(stdout);
    }
    return 0;
}

static void write_ids(ts_json_writer *w, const char *key, const int32_t *ids, size_t n) {
    ts_jw_key(w, key);
    ts_jw_array_begin(w);
    for (size_t i = 0; i < n; i++)
        ts_jw_int(w, ids[i]);
    ts_jw_array_end(w);
}

static void write_double(ts_json_writer *w, const char *key, double v) {
    ts_jw_key(w, key);
    ts_jw_double(w, v);
}

static void write_int(ts_json_writer *w, const char *key, int64_t v) {
    ts_jw_key(w, key);
    ts_jw_int(w, v);
}

int ts_generate_output_json(const ts_generate_output *o, const ts_generate_summary *s) {
    ts_buf out = {0};
    ts_json_writer w;
    ts_jw_init(&w, &out);
    ts_jw_object_begin(&w);
    write_ids(&w, "prompt_ids", s->prompt_ids, s->n_prompt);
    write_ids(&w, "completion_ids", o->ids, o->n_ids);
    ts_jw_key(&w, "completion");
    ts_jw_string_n(&w, o->completion.data ? o->completion.data : "", o->completion.len);
    ts_jw_key(&w, "finish_reason");
    ts_jw_string(&w, ts_finish_reason_name(s->finish));
    ts_jw_key(&w, "usage");
    ts_jw_object_begin(&w);
    write_int(&w, "prompt_tokens", s->prompt_tokens);
    write_int(&w, "completion_tokens", s->completion_tokens);
    write_int(&w, "cached_prompt_tokens", s->cached_prompt_tokens);
    ts_jw_object_end(&w);
    ts_jw_key(&w, "timings");
    ts_jw_object_begin(&w);
    write_double(&w, "ttft_ms", s->ttft_ms);
    write_double(&w, "prefill_tokens_per_s", s->prefill_tokens_per_s);
    write_double(&w, "decode_tokens_per_s", s->decode_tokens_per_s);
    write_double(&w, "total_ms", s->total_ms);
    ts_jw_object_end(&w);
    ts_jw_object_end(&w);
    int rc = ts_jw_finish(&w);
    if (!rc) printf("%s\n", out.data);
    ts_buf_free(&out);
    return rc;
}

void ts_generate_output_free(ts_generate_output *o) {
    free(o->ids);
    ts_buf_free(&o->completion);
    o->ids = NULL;
    o->n_ids = o->cap_ids = 0;
}
