/*
 * http_client.h — a small blocking HTTP/1.1 client for the CLI's commands of the coordinator's
 * HTTP API (tessera batch). One request per connection (Connection: close), plain http only;
 * the body of the answer is read whole (Content-Length, chunked, or until the peer closes).
 * The API key comes from TESSERA_API_KEY (never argv), as for the gRPC commands.
 */
#ifndef TS_CLI_HTTP_CLIENT_H
#define TS_CLI_HTTP_CLIENT_H

#include "common/buf.h"

#include <stddef.h>

/* base: "http://HOST:PORT" (a trailing "/v1" or "/" is allowed); path: "/v1/...". 0 with *status
 * and the body in *out (appended), or TS_E_INVALID (the URL), TS_E_UNAVAILABLE (cannot connect:
 * the message names the server), TS_E_IO (a broken or malformed answer), TS_E_NOMEM. */
int ts_http_call(const char *base, const char *method, const char *path, const char *content_type,
                 const void *body, size_t n, int timeout_s, int *status, ts_buf *out);

#endif
