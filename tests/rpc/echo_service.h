/*
 * echo_service.h — the test service of echo.proto on a ts_rpc_server, instrumented so that tests
 * can check the server's side of every call (exactly-once on_done, back-pressure, sends after
 * the end). Used by the rpc tests, tests/rpc/echo_server (for the Python client test) and the
 * throughput program.
 *
 * Count streams are produced by a separate "engine" thread, as the coordinator's engine would:
 * it sends from outside the loop thread, stops at TS_E_EXHAUSTED until on_writable, and after a
 * call's on_done tries one more send to check that it fails with TS_E_CANCELLED.
 */
#ifndef TS_TESTS_RPC_ECHO_SERVICE_H
#define TS_TESTS_RPC_ECHO_SERVICE_H

#include "common/buf.h"
#include "rpc/rpc_server.h"

typedef struct echo_service echo_service;

typedef struct echo_stats {
    int started;             /* calls that reached a handler (on_start) */
    int done;                /* on_done callbacks */
    int cancelled;           /* ... with cancelled = 1 */
    int double_done;         /* on_done more than once for one call (must stay 0) */
    int active_streams;      /* Count streams whose on_done has not run */
    int exhausted;           /* sends refused with TS_E_EXHAUSTED */
    int writable;            /* on_writable callbacks */
    int late_send_cancelled; /* sends after on_done that returned TS_E_CANCELLED */
    int late_send_other;     /* ... that returned anything else (must stay 0) */
    int max_queued;          /* the largest send queue seen by the producer */
    long long sent;          /* Count messages accepted by ts_rpc_call_send */
} echo_stats;

/* Registers /tessera.test.Echo/{Echo,Count,Chat,Stats} on srv (before start) and starts the
 * producer thread. */
int echo_service_create(ts_rpc_server *srv, echo_service **out);

void echo_service_stats(echo_service *e, echo_stats *out);

/* Formats the stats as "started=N done=N cancelled=N ..." into buf. */
void echo_stats_format(const echo_stats *st, char *buf, size_t size);

/* Stops the producer and frees everything. Call after the server has shut down (every call's
 * on_done has run). Safe on NULL. */
void echo_service_destroy(echo_service *e);

/* Client side: packs an EchoRequest into out; parses an EchoReply (text copied, truncated). */
int echo_request_pack(ts_buf *out, const char *text, int count, int interval_us, int payload_bytes,
                      int id);
int echo_reply_parse(const ts_buf *msg, char *text, size_t text_size, int *seq, int *id,
                     size_t *payload_len);

#endif
