/*
 * http.h — the coordinator's HTTP front door: the OpenAI-compatible API (see http.c and
 * docs/api.md), an adapter over request.c like the gRPC one (api.c). API keys: co->auth
 * (auth.h), /health and /metrics too with co->protect_metrics.
 */
#ifndef TS_COORDINATOR_HTTP_H
#define TS_COORDINATOR_HTTP_H

#include "coordinator/coordinator.h"

#include <stddef.h>

typedef struct co_http co_http;

typedef struct co_http_options {
    const char *listen;        /* "HOST:PORT" (port 0: any free port) */
    const char *chat_template; /* a built-in name or a file; NULL: the model's (chat/chat.h) */
    size_t max_body;           /* request bodies larger than this get 413 (uploads: their own) */
    struct co_store *store;    /* --state-dir: the Files and Batches API; NULL: they answer 404 */
    int max_connections;
    int max_connections_per_ip; /* 0: no limit */
    size_t max_header;          /* request line and headers; 0: libmicrohttpd's default */
    int idle_timeout_s;         /* a connection silent this long is closed */
    const char *tls_cert_pem, *tls_key_pem; /* HTTPS with these (rpc/rpc_tls.h); NULL: HTTP.
                                               The text must outlive the listener */
} co_http_options;

/* Starts the listener (its own threads). 0, or TS_E_INVALID (the address, the key file, the
 * --chat-template; a model without a usable template only refuses chat requests),
 * TS_E_IO (cannot bind), TS_E_NOMEM; the message names the flag. */
int co_http_start(coordinator *co, const co_http_options *o, co_http **out);
/* The HTTP front door without a listener, for co_http_map_request (http_internal.h) alone:
 * the fuzzer of the body → request mapping. Freed by co_http_stop. 0 or as co_http_start. */
int co_http_mapper_create(coordinator *co, const char *chat_template, co_http **out);
/* The port it listens on. */
int co_http_port(const co_http *h);
/* Stops it: waiting clients are told the server is going (503 / an error event), every
 * connection is closed. Not under co->mu. NULL is a no-op. */
void co_http_stop(co_http *h);

#endif
