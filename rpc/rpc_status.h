/*
 * rpc_status.h — gRPC status codes and their mapping to Tessera's TS_E_* codes.
 *
 * Every error that crosses the wire carries a gRPC status code and a human message. Inside a
 * process errors are TS_E_* codes with a thread-local message (common/error.h); these functions
 * translate in both directions so that a handler can answer `ts_rpc_call_fail(call, rc, msg)`
 * and a client gets `rc` back from `ts_rpc_stream_finish`.
 *
 *   TS_E_INVALID                 → INVALID_ARGUMENT
 *   TS_E_EXHAUSTED, TS_E_NOMEM   → RESOURCE_EXHAUSTED
 *   TS_E_UNAVAILABLE             → UNAVAILABLE
 *   TS_E_NOT_FOUND               → NOT_FOUND
 *   TS_E_TIMEOUT                 → DEADLINE_EXCEEDED
 *   TS_E_CANCELLED               → CANCELLED
 *   TS_E_UNAUTHENTICATED         → UNAUTHENTICATED
 *   anything else                → INTERNAL
 *
 * and back (status → TS_E): OK → 0, INVALID_ARGUMENT / OUT_OF_RANGE / FAILED_PRECONDITION →
 * TS_E_INVALID, RESOURCE_EXHAUSTED → TS_E_EXHAUSTED, UNAVAILABLE → TS_E_UNAVAILABLE,
 * NOT_FOUND → TS_E_NOT_FOUND, DEADLINE_EXCEEDED → TS_E_TIMEOUT, CANCELLED → TS_E_CANCELLED,
 * UNIMPLEMENTED → TS_E_UNSUPPORTED, UNAUTHENTICATED / PERMISSION_DENIED → TS_E_UNAUTHENTICATED,
 * anything else → TS_E_INTERNAL.
 *
 * The numeric values equal gRPC's grpc_status_code (they are fixed by the wire protocol), so
 * users of rpc/ never need a gRPC header. All functions are pure and thread-safe.
 */
#ifndef TS_RPC_STATUS_H
#define TS_RPC_STATUS_H

enum {
    TS_RPC_OK = 0,
    TS_RPC_CANCELLED = 1,
    TS_RPC_UNKNOWN = 2,
    TS_RPC_INVALID_ARGUMENT = 3,
    TS_RPC_DEADLINE_EXCEEDED = 4,
    TS_RPC_NOT_FOUND = 5,
    TS_RPC_ALREADY_EXISTS = 6,
    TS_RPC_PERMISSION_DENIED = 7,
    TS_RPC_RESOURCE_EXHAUSTED = 8,
    TS_RPC_FAILED_PRECONDITION = 9,
    TS_RPC_ABORTED = 10,
    TS_RPC_OUT_OF_RANGE = 11,
    TS_RPC_UNIMPLEMENTED = 12,
    TS_RPC_INTERNAL = 13,
    TS_RPC_UNAVAILABLE = 14,
    TS_RPC_DATA_LOSS = 15,
    TS_RPC_UNAUTHENTICATED = 16,
};

/* The gRPC status code for a TS_E_* code (TS_OK → TS_RPC_OK). */
int ts_rpc_status_from_error(int ts_code);

/* The TS_E_* code for a gRPC status code (TS_RPC_OK → TS_OK). */
int ts_rpc_error_from_status(int status_code);

/* "DEADLINE_EXCEEDED", ...; "UNKNOWN_STATUS" for a code outside 0..16. */
const char *ts_rpc_status_name(int status_code);

#endif
