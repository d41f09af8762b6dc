/*
 * http_batch.c — the Files and Batches API of the HTTP front door (docs/api.md, "Batches"), as
 * OpenAI defines it, over the durable store (batch_store.h). The endpoints only read and write
 * the store; the runner (batch.c) notices new and cancelled batches there, so a request here
 * never waits on inference and a restart loses nothing the client was told.
 *
 *   POST   /v1/files                 multipart/form-data: purpose=batch, file=@input.jsonl
 *                                    (at most 200 MB and 50,000 lines)
 *   GET    /v1/files[?purpose&limit&after]
 *   GET    /v1/files/{id}            DELETE /v1/files/{id}     GET /v1/files/{id}/content
 *   POST   /v1/batches               {input_file_id, endpoint, completion_window, metadata}
 *   GET    /v1/batches[?limit&after] GET /v1/batches/{id}      POST /v1/batches/{id}/cancel
 *
 * completion_window is "24h" as OpenAI has it; other durations ("90s", "30m", "2h", "7d", from
 * 1 s to 30 days) are an extension. Without --state-dir these paths answer 404 naming the flag.
 */
#include "coordinator/batch_store.h"
#include "coordinator/http_internal.h"

#include "common/error.h"
#include "common/json.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    MULTIPART_SLACK = 1 << 20, /* headers and boundaries around an upload's file */
    FILES_LIST_MAX = 10000,
    BATCHES_LIST_MAX = 100,
    METADATA_MAX_PAIRS = 16,
    WINDOW_MAX_S = 30 * 86400,
};

bool co_http_batch_path(const char *url) {
    return !strcmp(url, "/v1/files") || !strncmp(url, "/v1/files/", 10) ||
           !strcmp(url, "/v1/batches") || !strncmp(url, "/v1/batches/", 12);
}

size_t co_http_batch_max_body(const char *url, const char *method, size_t otherwise) {
    if (!strcmp(url, "/v1/files") && !strcmp(method, MHD_HTTP_METHOD_POST))
        return (size_t)CO_FILE_MAX_BYTES + MULTIPART_SLACK;
    return otherwise;
}

static enum MHD_Result bad(struct MHD_Connection *c, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static enum MHD_Result bad(struct MHD_Connection *c, const char *param, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return co_http_send_error(c, MHD_HTTP_BAD_REQUEST, msg, "invalid_request_error", param, NULL);
}

static enum MHD_Result send_json(struct MHD_Connection *c, ts_buf *b, ts_json_writer *w) {
    enum MHD_Result q = ts_jw_finish(w)
                            ? co_http_send_code(c, TS_E_NOMEM, "out of memory", NULL)
                            : co_http_send(c, MHD_HTTP_OK, "application/json", b->data, b->len);
    ts_buf_free(b);
    return q;
}

static void jw_opt_string(ts_json_writer *w, const char *key, const char *v) {
    ts_jw_key(w, key);
    if (v && *v)
        ts_jw_string(w, v);
    else
        ts_jw_null(w);
}

static void jw_opt_time(ts_json_writer *w, const char *key, int64_t t) {
    ts_jw_key(w, key);
    if (t)
        ts_jw_int(w, t);
    else
        ts_jw_null(w);
}

/* A stored JSON text re-emitted (null when absent or unreadable). */
static void jw_stored(ts_json_writer *w, const char *text) {
    ts_json_doc *doc = NULL;
    if (text && !ts_json_parse(text, strlen(text), &doc))
        ts_jw_value(w, ts_json_root(doc));
    else
        ts_jw_null(w);
    ts_json_doc_free(doc);
}

/* {"object": "list", "data": [ ... ], "has_more", "first_id", "last_id"}: OpenAI's pages. */
static void list_begin(ts_json_writer *w) {
    ts_jw_object_begin(w);
    ts_jw_key(w, "object");
    ts_jw_string(w, "list");
    ts_jw_key(w, "data");
    ts_jw_array_begin(w);
}

static void list_end(ts_json_writer *w, bool more, const char *first, const char *last) {
    ts_jw_array_end(w);
    ts_jw_key(w, "has_more");
    ts_jw_bool(w, more);
    jw_opt_string(w, "first_id", first);
    jw_opt_string(w, "last_id", last);
    ts_jw_object_end(w);
}

/* ?limit=N within [1, max] (default def); 0 or -1 after answering 400. */
static int query_limit(struct MHD_Connection *c, int def, int max) {
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit");
    if (!v) return def;
    char *end;
    long n = strtol(v, &end, 10);
    if (!*v || *end || n < 1 || n > max) {
        bad(c, "limit", "limit must be an integer in [1, %d], got '%.64s'", max, v);
        return -1;
    }
    return (int)n;
}

/* "ID" or "ID" + sub → id (*has_sub says which); false for anything else. */
static bool path_id(const char *rest, const char *sub, char *id, size_t size, bool *has_sub) {
    const char *slash = strchr(rest, '/');
    size_t n = slash ? (size_t)(slash - rest) : strlen(rest);
    if (n == 0 || n >= size || (slash && strcmp(slash, sub))) return false;
    memcpy(id, rest, n);
    id[n] = '\0';
    *has_sub = slash != NULL;
    return true;
}

/* ---- files ---- */

static void file_json(ts_json_writer *w, const co_file_info *f) {
    ts_jw_object_begin(w);
    ts_jw_key(w, "id");
    ts_jw_string(w, f->id);
    ts_jw_key(w, "object");
    ts_jw_string(w, "file");
    ts_jw_key(w, "bytes");
    ts_jw_int(w, f->bytes);
    ts_jw_key(w, "created_at");
    ts_jw_int(w, f->created_at);
    ts_jw_key(w, "expires_at");
    ts_jw_null(w);
    ts_jw_key(w, "filename");
    ts_jw_string(w, f->filename ? f->filename : "");
    ts_jw_key(w, "purpose");
    ts_jw_string(w, f->purpose ? f->purpose : "");
    ts_jw_key(w, "status");
    ts_jw_string(w, "processed");
    ts_jw_key(w, "status_details");
    ts_jw_null(w);
    ts_jw_object_end(w);
}

/* One part of a multipart/form-data body. */
typedef struct part {
    char name[64], filename[256];
    bool has_filename;
    const char *data;
    size_t n;
} part;

static const char *find(const char *hay, size_t n, const char *needle, size_t m) {
    return memmem(hay, n, needle, m);
}

/* A parameter (name="x") of a Content-Disposition header line. */
static bool header_param(const char *line, size_t n, const char *key, char *out, size_t size,
                         bool *present) {
    size_t kn = strlen(key);
    for (size_t i = 0; i + kn + 1 < n; i++) {
        if ((i && line[i - 1] != ' ' && line[i - 1] != ';') || strncasecmp(line + i, key, kn) ||
            line[i + kn] != '=')
            continue;
        const char *v = line + i + kn + 1, *e = line + n;
        size_t len;
        if (v < e && *v == '"') {
            const char *q = memchr(v + 1, '"', (size_t)(e - v - 1));
            if (!q) return false;
            len = (size_t)(q - v - 1);
            v++;
        } else {
            len = strcspn(v, ";\r\n");
            if (len > (size_t)(e - v)) len = (size_t)(e - v);
        }
        if (len >= size) return false;
        memcpy(out, v, len);
        out[len] = '\0';
        *present = true;
        return true;
    }
    *present = false;
    return true;
}

/* Splits the body into at most max parts. 0, or -1 with *why set. */
static int parse_multipart(const char *ctype, const char *body, size_t n, part *parts, int max,
                           int *n_parts, const char **why) {
    *n_parts = 0;
    const char *b = ctype ? strcasestr(ctype, "boundary=") : NULL;
    if (!ctype || strncasecmp(ctype, "multipart/form-data", 19) || !b) {
        *why = "the upload must be multipart/form-data with a boundary (fields purpose and file)";
        return -1;
    }
    b += 9;
    char boundary[80] = "\r\n--";
    size_t bl = *b == '"' ? strcspn(b + 1, "\"") : strcspn(b, "; \t");
    if (bl == 0 || bl > 70) {
        *why = "the multipart boundary is empty or longer than 70 characters";
        return -1;
    }
    memcpy(boundary + 4, b + (*b == '"'), bl);
    boundary[4 + bl] = '\0';
    size_t m = 4 + bl;
    /* the body starts with the boundary without its leading CRLF */
    if (n < m - 2 || memcmp(body, boundary + 2, m - 2)) {
        *why = "the multipart body does not start with its boundary";
        return -1;
    }
    const char *p = body + m - 2, *end = body + n;
    for (;;) {
        if (end - p >= 2 && !memcmp(p, "--", 2)) return 0; /* the closing boundary */
        if (end - p < 2 || memcmp(p, "\r\n", 2)) break;
        p += 2;
        const char *hend = find(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (!hend) break;
        if (*n_parts == max) {
            *why = "too many multipart fields (want purpose and file)";
            return -1;
        }
        part *pt = &parts[(*n_parts)++];
        memset(pt, 0, sizeof *pt);
        for (const char *l = p; l < hend;) {
            const char *le = find(l, (size_t)(hend - l) + 2, "\r\n", 2);
            size_t ln = (size_t)(le - l);
            if (ln > 20 && !strncasecmp(l, "Content-Disposition:", 20)) {
                bool present;
                if (!header_param(l, ln, "name", pt->name, sizeof pt->name, &present) ||
                    !header_param(l, ln, "filename", pt->filename, sizeof pt->filename,
                                  &pt->has_filename)) {
                    *why = "a multipart field name or file name is malformed or too long";
                    return -1;
                }
            }
            l = le + 2;
        }
        const char *data = hend + 4;
        const char *next = find(data, (size_t)(end - data), boundary, m);
        if (!next) break;
        pt->data = data;
        pt->n = (size_t)(next - data);
        p = next + m;
    }
    *why = "the multipart body is truncated or malformed (no closing boundary)";
    return -1;
}

static enum MHD_Result files_upload(co_http *h, struct MHD_Connection *c, const char *body,
                                    size_t n) {
    const char *ctype =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    part parts[8];
    int np;
    const char *why;
    if (parse_multipart(ctype, body ? body : "", n, parts, 8, &np, &why))
        return bad(c, NULL, "%s", why);
    const part *purpose = NULL, *file = NULL;
    for (int i = 0; i < np; i++) {
        if (!strcmp(parts[i].name, "purpose")) purpose = &parts[i];
        if (!strcmp(parts[i].name, "file")) file = &parts[i];
    }
    if (!purpose) return bad(c, "purpose", "purpose is required (purpose=batch)");
    if (purpose->n != 5 || memcmp(purpose->data, "batch", 5))
        return bad(c, "purpose",
                   "purpose must be 'batch' (this server stores batch input files), got '%.*s'",
                   (int)(purpose->n < 64 ? purpose->n : 64), purpose->data);
    if (!file || !file->has_filename) return bad(c, "file", "file is required (a JSONL file)");
    if (file->n > CO_FILE_MAX_BYTES)
        return co_http_send_error(c, MHD_HTTP_CONTENT_TOO_LARGE,
                                  "the file is larger than 200 MB (the batch input limit)",
                                  "invalid_request_error", "file", "file_too_large");
    size_t lines = 0;
    for (const char *p = file->data, *e = file->data + file->n; p < e;) {
        const char *nl = memchr(p, '\n', (size_t)(e - p));
        const char *le = nl ? nl : e;
        for (const char *q = p; q < le; q++)
            if (!isspace((unsigned char)*q)) {
                lines++;
                break;
            }
        p = le + 1;
    }
    if (lines > CO_FILE_MAX_LINES)
        return bad(c, "file", "the file has %zu requests; a batch takes at most %d", lines,
                   CO_FILE_MAX_LINES);
    co_file_info f;
    int rc = co_store_file_add(co_http_store(h), "batch", file->filename, file->data, file->n, &f);
    if (rc) return co_http_send_code(c, rc, ts_error_message(), NULL);
    ts_buf b = {0};
    ts_json_writer w;
    ts_jw_init(&w, &b);
    file_json(&w, &f);
    co_file_info_free(&f);
    return send_json(c, &b, &w);
}

static enum MHD_Result files_list(co_http *h, struct MHD_Connection *c) {
    int limit = query_limit(c, FILES_LIST_MAX, FILES_LIST_MAX);
    if (limit < 0) return MHD_YES;
    const char *order = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "order");
    if (order && strcmp(order, "desc"))
        return bad(c, "order", "order must be 'desc' (newest first)");
    const char *purpose = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "purpose");
    const char *after = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "after");
    co_file_info *a;
    int n;
    bool more;
    int rc = co_store_file_list(co_http_store(h), purpose, after, limit, &a, &n, &more);
    if (rc) return co_http_send_code(c, rc, ts_error_message(), NULL);
    ts_buf b = {0};
    ts_json_writer w;
    ts_jw_init(&w, &b);
    list_begin(&w);
    for (int i = 0; i < n; i++)
        file_json(&w, &a[i]);
    list_end(&w, more, n ? a[0].id : NULL, n ? a[n - 1].id : NULL);
    for (int i = 0; i < n; i++)
        co_file_info_free(&a[i]);
    free(a);
    return send_json(c, &b, &w);
}

static enum MHD_Result files(co_http *h, struct MHD_Connection *c, const char *rest,
                             const char *method, const char *body, size_t n) {
    bool get = !strcmp(method, MHD_HTTP_METHOD_GET);
    if (!*rest) {
        if (!strcmp(method, MHD_HTTP_METHOD_POST)) return files_upload(h, c, body, n);
        if (get) return files_list(h, c);
        return co_http_send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use POST or GET /v1/files",
                                  "invalid_request_error", NULL, NULL);
    }
    char id[64];
    bool slash;
    if (!path_id(rest, "/content", id, sizeof id, &slash))
        return co_http_send_error(c, MHD_HTTP_NOT_FOUND, "unknown path under /v1/files",
                                  "invalid_request_error", NULL, "not_found");
    co_store *s = co_http_store(h);
    int rc;
    if (slash) {
        if (!get)
            return co_http_send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED,
                                      "use GET /v1/files/{id}/content", "invalid_request_error",
                                      NULL, NULL);
        ts_buf content = {0};
        rc = co_store_file_content(s, id, &content);
        enum MHD_Result q = rc ? co_http_send_code(c, rc, ts_error_message(), NULL)
                               : co_http_send(c, MHD_HTTP_OK, "application/octet-stream",
                                              content.data ? content.data : "", content.len);
        ts_buf_free(&content);
        return q;
    }
    if (!strcmp(method, MHD_HTTP_METHOD_DELETE)) {
        rc = co_store_file_delete(s, id);
        if (rc) return co_http_send_code(c, rc, ts_error_message(), NULL);
        char out[160];
        int len =
            snprintf(out, sizeof out, "{\"id\":\"%s\",\"object\":\"file\",\"deleted\":true}", id);
        return co_http_send(c, MHD_HTTP_OK, "application/json", out, (size_t)len);
    }
    if (!get)
        return co_http_send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED,
                                  "use GET or DELETE /v1/files/{id}", "invalid_request_error", NULL,
                                  NULL);
    co_file_info f;
    rc = co_store_file_get(s, id, &f);
    if (rc) return co_http_send_code(c, rc, ts_error_message(), NULL);
    ts_buf b = {0};
    ts_json_writer w;
    ts_jw_init(&w, &b);
    file_json(&w, &f);
    co_file_info_free(&f);
    return send_json(c, &b, &w);
}

/* ---- batches ---- */

static void batch_json(ts_json_writer *w, const co_batch_info *b, const char *model) {
    ts_jw_object_begin(w);
    ts_jw_key(w, "id");
    ts_jw_string(w, b->id);
    ts_jw_key(w, "object");
    ts_jw_string(w, "batch");
    ts_jw_key(w, "endpoint");
    ts_jw_string(w, b->endpoint);
    ts_jw_key(w, "model");
    ts_jw_string(w, model);
    ts_jw_key(w, "errors");
    if (b->errors) {
        ts_jw_object_begin(w);
        ts_jw_key(w, "object");
        ts_jw_string(w, "list");
        ts_jw_key(w, "data");
        jw_stored(w, b->errors);
        ts_jw_object_end(w);
    } else {
        ts_jw_null(w);
    }
    ts_jw_key(w, "input_file_id");
    ts_jw_string(w, b->input_file_id);
    ts_jw_key(w, "completion_window");
    ts_jw_string(w, b->completion_window);
    ts_jw_key(w, "status");
    ts_jw_string(w, co_batch_status_name(b->status));
    jw_opt_string(w, "output_file_id", b->output_file_id);
    jw_opt_string(w, "error_file_id", b->error_file_id);
    ts_jw_key(w, "created_at");
    ts_jw_int(w, b->created_at);
    jw_opt_time(w, "in_progress_at", b->at[CO_BATCH_IN_PROGRESS]);
    ts_jw_key(w, "expires_at");
    ts_jw_int(w, b->expires_at);
    jw_opt_time(w, "finalizing_at", b->at[CO_BATCH_FINALIZING]);
    jw_opt_time(w, "completed_at", b->at[CO_BATCH_COMPLETED]);
    jw_opt_time(w, "failed_at", b->at[CO_BATCH_FAILED]);
    jw_opt_time(w, "expired_at", b->at[CO_BATCH_EXPIRED]);
    jw_opt_time(w, "cancelling_at", b->at[CO_BATCH_CANCELLING]);
    jw_opt_time(w, "cancelled_at", b->at[CO_BATCH_CANCELLED]);
    ts_jw_key(w, "request_counts");
    ts_jw_object_begin(w);
    ts_jw_key(w, "total");
    ts_jw_int(w, b->total);
    ts_jw_key(w, "completed");
    ts_jw_int(w, b->completed);
    ts_jw_key(w, "failed");
    ts_jw_int(w, b->failed);
    ts_jw_object_end(w);
    ts_jw_key(w, "metadata");
    jw_stored(w, b->metadata);
    ts_jw_key(w, "usage");
    ts_jw_object_begin(w);
    ts_jw_key(w, "input_tokens");
    ts_jw_int(w, b->prompt_tokens);
    ts_jw_key(w, "input_tokens_details");
    ts_jw_object_begin(w);
    ts_jw_key(w, "cached_tokens");
    ts_jw_int(w, b->cached_tokens);
    ts_jw_object_end(w);
    ts_jw_key(w, "output_tokens");
    ts_jw_int(w, b->completion_tokens);
    ts_jw_key(w, "output_tokens_details");
    ts_jw_object_begin(w);
    ts_jw_key(w, "reasoning_tokens");
    ts_jw_int(w, 0);
    ts_jw_object_end(w);
    ts_jw_key(w, "total_tokens");
    ts_jw_int(w, b->prompt_tokens + b->completion_tokens);
    ts_jw_object_end(w);
    ts_jw_object_end(w);
}

static enum MHD_Result send_batch(co_http *h, struct MHD_Connection *c, co_batch_info *bi) {
    ts_buf b = {0};
    ts_json_writer w;
    ts_jw_init(&w, &b);
    batch_json(&w, bi, co_http_coordinator(h)->model_name);
    co_batch_info_free(bi);
    return send_json(c, &b, &w);
}

/* "24h", or N followed by s, m, h or d (an extension), within [1 s, 30 days]. */
static int64_t parse_window(const char *v) {
    char *end;
    long long n = strtoll(v, &end, 10);
    if (end == v || n <= 0 || !end[0] || end[1] || !isdigit((unsigned char)v[0])) return -1;
    int64_t mult = end[0] == 's'   ? 1
                   : end[0] == 'm' ? 60
                   : end[0] == 'h' ? 3600
                   : end[0] == 'd' ? 86400
                                   : 0;
    if (!mult || n > WINDOW_MAX_S / mult) return -1;
    return (int64_t)n * mult;
}

static enum MHD_Result batches_create(co_http *h, struct MHD_Connection *c, const char *body,
                                      size_t n) {
    ts_json_doc *doc = NULL;
    if (ts_json_parse(body ? body : "", n, &doc))
        return bad(c, NULL, "the body is not valid JSON: %s", ts_error_message());
    const ts_json *root = ts_json_root(doc);
    enum MHD_Result q;
    const ts_json *in = ts_json_get(root, "input_file_id"), *ep = ts_json_get(root, "endpoint"),
                  *win = ts_json_get(root, "completion_window"),
                  *md = ts_json_get(root, "metadata");
    int64_t window = -1;
    if (root->type != TS_JSON_OBJECT) {
        q = bad(c, NULL, "the request body must be a JSON object");
    } else if (!in || in->type != TS_JSON_STRING || !in->length) {
        q = bad(c, "input_file_id", "input_file_id is required (the id of an uploaded file)");
    } else if (!ep || ep->type != TS_JSON_STRING ||
               (strcmp(ep->string, "/v1/chat/completions") &&
                strcmp(ep->string, "/v1/completions"))) {
        q = bad(c, "endpoint", "endpoint must be '/v1/chat/completions' or '/v1/completions'%s%s%s",
                ep && ep->type == TS_JSON_STRING ? ", got '" : "",
                ep && ep->type == TS_JSON_STRING ? ep->string : "",
                ep && ep->type == TS_JSON_STRING ? "'" : "");
    } else if (!win || win->type != TS_JSON_STRING || (window = parse_window(win->string)) < 0) {
        q = bad(c, "completion_window",
                "completion_window must be '24h' (or, as an extension, a duration such as '90s', "
                "'30m', '2h', '7d' up to 30 days)");
    } else {
        ts_buf meta = {0};
        const char *why = NULL;
        if (md && md->type != TS_JSON_NULL) {
            if (md->type != TS_JSON_OBJECT || md->length > METADATA_MAX_PAIRS) {
                why = "metadata must be an object of at most 16 string values";
            } else {
                for (size_t i = 0; i < md->length && !why; i++) {
                    const ts_json_member *m = &md->members[i];
                    if (m->key_length > 64 || m->value.type != TS_JSON_STRING ||
                        m->value.length > 512)
                        why = "metadata: keys of at most 64 characters, string values of at most "
                              "512";
                }
            }
            if (!why) {
                ts_json_writer w;
                ts_jw_init(&w, &meta);
                ts_jw_value(&w, md);
                if (ts_jw_finish(&w)) why = "out of memory";
            }
        }
        if (why) {
            q = bad(c, "metadata", "%s", why);
        } else {
            co_batch_info b = {.endpoint = (char *)ep->string,
                               .input_file_id = (char *)in->string,
                               .completion_window = (char *)win->string,
                               .window_s = window,
                               .metadata = meta.data};
            co_batch_info out;
            int rc = co_store_batch_create(co_http_store(h), &b, &out);
            q = rc ? co_http_send_code(c, rc, ts_error_message(),
                                       rc == TS_E_NOT_FOUND || rc == TS_E_INVALID ? "input_file_id"
                                                                                  : NULL)
                   : send_batch(h, c, &out);
        }
        ts_buf_free(&meta);
    }
    ts_json_doc_free(doc);
    return q;
}

static enum MHD_Result batches_list(co_http *h, struct MHD_Connection *c) {
    int limit = query_limit(c, 20, BATCHES_LIST_MAX);
    if (limit < 0) return MHD_YES;
    const char *after = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "after");
    co_batch_info *a;
    int n;
    bool more;
    int rc = co_store_batch_list(co_http_store(h), after, limit, &a, &n, &more);
    if (rc) return co_http_send_code(c, rc, ts_error_message(), NULL);
    ts_buf b = {0};
    ts_json_writer w;
    ts_jw_init(&w, &b);
    list_begin(&w);
    for (int i = 0; i < n; i++)
        batch_json(&w, &a[i], co_http_coordinator(h)->model_name);
    list_end(&w, more, n ? a[0].id : NULL, n ? a[n - 1].id : NULL);
    for (int i = 0; i < n; i++)
        co_batch_info_free(&a[i]);
    free(a);
    return send_json(c, &b, &w);
}

static enum MHD_Result batches(co_http *h, struct MHD_Connection *c, const char *rest,
                               const char *method, const char *body, size_t n) {
    bool get = !strcmp(method, MHD_HTTP_METHOD_GET), post = !strcmp(method, MHD_HTTP_METHOD_POST);
    if (!*rest) {
        if (post) return batches_create(h, c, body, n);
        if (get) return batches_list(h, c);
        return co_http_send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use POST or GET /v1/batches",
                                  "invalid_request_error", NULL, NULL);
    }
    char id[64];
    bool slash;
    if (!path_id(rest, "/cancel", id, sizeof id, &slash))
        return co_http_send_error(c, MHD_HTTP_NOT_FOUND, "unknown path under /v1/batches",
                                  "invalid_request_error", NULL, "not_found");
    co_batch_info bi;
    int rc;
    if (slash) {
        if (!post)
            return co_http_send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED,
                                      "use POST /v1/batches/{id}/cancel", "invalid_request_error",
                                      NULL, NULL);
        rc = co_store_batch_cancel(co_http_store(h), id, &bi);
    } else {
        if (!get)
            return co_http_send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use GET /v1/batches/{id}",
                                      "invalid_request_error", NULL, NULL);
        rc = co_store_batch_get(co_http_store(h), id, &bi);
    }
    if (rc) return co_http_send_code(c, rc, ts_error_message(), NULL);
    return send_batch(h, c, &bi);
}

enum MHD_Result co_http_batch_handle(co_http *h, struct MHD_Connection *c, const char *url,
                                     const char *method, const char *body, size_t n) {
    if (!co_http_store(h))
        return co_http_send_error(c, MHD_HTTP_NOT_FOUND,
                                  "the Files and Batches API needs durable state: start the "
                                  "coordinator (or tessera up) with --state-dir DIR",
                                  "invalid_request_error", NULL, "not_found");
    if (!strncmp(url, "/v1/files", 9))
        return files(h, c, url[9] == '/' ? url + 10 : "", method, body, n);
    return batches(h, c, url[11] == '/' ? url + 12 : "", method, body, n);
}
