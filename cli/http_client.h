/*
 * http_client.h — a small blocking HTTP/1.1 client for the CLI's use of the coordinator's HTTP
 * API: whole answers for tessera batch, server-sent event streams over kept-alive connections for
 * tessera bench. Plain http only. The API key comes from TESSERA_API_KEY (never argv), as for the
 * gRPC commands.
 *
 * A connection is used by one thread at a time, one call after another (no pipelining). It is
 * opened on its first call and kept while the server keeps it (HTTP/1.1 keep-alive), as the
 * official OpenAI client keeps its pooled connections; ts_http_call opens one for one call.
 */
#ifndef TS_CLI_HTTP_CLIENT_H
#define TS_CLI_HTTP_CLIENT_H

#include "common/buf.h"

#include <stddef.h>
#include <stdint.h>

typedef struct ts_http_conn ts_http_conn;

/* A connection to base: "http://HOST:PORT" (a trailing "/v1" or "/" is allowed; paths carry
 * /v1). timeout_s: the longest wait for the server in any send or read (0: none). 0, or
 * TS_E_INVALID (the URL) or TS_E_NOMEM. Nothing is connected yet. */
int ts_http_conn_new(const char *base, int timeout_s, ts_http_conn **out);
void ts_http_conn_free(ts_http_conn *c);

/* Receives a streamed answer's server-sent events: data is one event's data (what follows
 * "data:" on its lines, joined by "\n"; NUL-terminated). It is called with data NULL each time
 * every event received so far has been delivered and the next bytes must be waited for: the
 * events between two such calls arrived together. A nonzero return ends the call with it. */
typedef int (*ts_http_event_fn)(void *arg, const char *data, size_t n);

/* One call of method on path with an optional body of content_type. *status: the answer's HTTP
 * status. A 2xx answer of type text/event-stream goes event by event to on_event when one is
 * given; any other answer's body is appended to *out. deadline_ns: a ts_now_ns() time at which
 * the call gives up (0: none). 0, or TS_E_UNAVAILABLE (cannot connect: the message names the
 * server), TS_E_IO (a broken or malformed answer), TS_E_TIMEOUT (timeout_s or the deadline
 * passed), TS_E_NOMEM, or on_event's code; after an error the connection is closed (which ends
 * the request at the server). A kept connection the server closed before answering is reopened
 * once. */
int ts_http_request(ts_http_conn *c, const char *method, const char *path, const char *content_type,
                    const void *body, size_t n, int64_t deadline_ns, ts_http_event_fn on_event,
                    void *arg, int *status, ts_buf *out);

/* One call on a connection of its own, read whole (as ts_http_request without events). */
int ts_http_call(const char *base, const char *method, const char *path, const char *content_type,
                 const void *body, size_t n, int timeout_s, int *status, ts_buf *out);

/* The TS_E code of an HTTP error, the inverse of the server's mapping. An OpenAI error object's
 * "code" or "type" decides when given (an error event inside a 200 stream has only those):
 * "timeout" → TS_E_TIMEOUT, "service_unavailable" → TS_E_UNAVAILABLE, "rate_limit_exceeded" →
 * TS_E_EXHAUSTED, "invalid_api_key" → TS_E_UNAUTHENTICATED, "not_found" → TS_E_NOT_FOUND, type
 * "invalid_request_error" → TS_E_INVALID. Else the status: 400 and 413 → TS_E_INVALID, 401 →
 * TS_E_UNAUTHENTICATED, 404 → TS_E_NOT_FOUND, 429 → TS_E_EXHAUSTED, 503 → TS_E_UNAVAILABLE,
 * 504 → TS_E_TIMEOUT, other non-2xx → TS_E_INTERNAL. TS_OK for a 2xx status without an error
 * object. type and code may be NULL. */
int ts_http_error_code(int status, const char *type, const char *code);

#endif
