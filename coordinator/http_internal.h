/*
 * http_internal.h — what http.c shares with the other files of the HTTP front door
 * (http_batch.c: the Files and Batches API; batch.c: the batch runner, which maps each line's
 * body exactly as POST /v1/completions and /v1/chat/completions map theirs). Not a public API.
 */
#ifndef TS_COORDINATOR_HTTP_INTERNAL_H
#define TS_COORDINATOR_HTTP_INTERNAL_H

#include "common/buf.h"
#include "common/json.h"
#include "coordinator/http.h"
#include "request/request.h"

#include <microhttpd.h>

#include <stdbool.h>
#include <stdint.h>

/* The body of a completion (chat: true for /v1/chat/completions) → *req (initialized by the
 * caller): the one JSON → ts_request mapping of the HTTP API, chat template included. 0, or a
 * TS_E code with the message; *param then names the field (or NULL). Takes co->mu itself (the
 * seed counter): call it without the lock. Streaming is refused when !allow_stream. */
int co_http_map_request(co_http *h, bool chat, const ts_json *body, bool allow_stream,
                        ts_request *req, const char **param);
/* One finished choice of a completion: its text, how it ended, its usage. */
typedef struct co_http_choice_result {
    const char *text;
    size_t len;
    ts_finish_reason reason;
    ts_request_usage usage;
} co_http_choice_result;
/* The response body a non-streaming request with one prompt gets: a text_completion or
 * chat.completion object with this id, creation time, the n choices (index 0 to n - 1) and
 * their usage (the prompt's tokens once, every choice's completion tokens; the same rule as the
 * HTTP answers), which *usage gets too. 0 or TS_E_NOMEM. */
int co_http_completion_body(co_http *h, bool chat, const char *id, int64_t created,
                            const co_http_choice_result *choices, int32_t n,
                            ts_request_usage *usage, ts_buf *out);
/* OpenAI's error object {"error": {message, type, param, code}} for a TS_E code; *status gets
 * the HTTP status the API answers it with. */
int co_http_error_body(int code, const char *message, const char *param, ts_buf *out,
                       unsigned *status);

/* Responses (the connection's thread). */
enum MHD_Result co_http_send(struct MHD_Connection *c, unsigned status, const char *type,
                             const char *data, size_t n);
enum MHD_Result co_http_send_error(struct MHD_Connection *c, unsigned status, const char *message,
                                   const char *type, const char *param, const char *code);
/* A TS_E code with OpenAI's status and type for it. */
enum MHD_Result co_http_send_code(struct MHD_Connection *c, int code, const char *message,
                                  const char *param);

coordinator *co_http_coordinator(co_http *h);
struct co_store *co_http_store(co_http *h); /* NULL without --state-dir */

/* ---- http_batch.c ---- */
/* True for the paths it serves (/v1/files..., /v1/batches...). */
bool co_http_batch_path(const char *url);
/* The largest body it accepts at this path (uploads are larger than completions). */
size_t co_http_batch_max_body(const char *url, const char *method, size_t otherwise);
/* Serves one request whose whole body has arrived (the key was checked). */
enum MHD_Result co_http_batch_handle(co_http *h, struct MHD_Connection *c, const char *url,
                                     const char *method, const char *body, size_t n);

#endif
