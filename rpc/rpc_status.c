/* rpc_status.c — TS_E_* ↔ gRPC status codes; see rpc_status.h for the table. */
#include "rpc/rpc_status.h"

#include "common/error.h"

int ts_rpc_status_from_error(int ts_code) {
    switch (ts_code) {
    case TS_OK: return TS_RPC_OK;
    case TS_E_INVALID: return TS_RPC_INVALID_ARGUMENT;
    case TS_E_EXHAUSTED:
    case TS_E_NOMEM: return TS_RPC_RESOURCE_EXHAUSTED;
    case TS_E_UNAVAILABLE: return TS_RPC_UNAVAILABLE;
    case TS_E_NOT_FOUND: return TS_RPC_NOT_FOUND;
    case TS_E_TIMEOUT: return TS_RPC_DEADLINE_EXCEEDED;
    case TS_E_CANCELLED: return TS_RPC_CANCELLED;
    case TS_E_UNAUTHENTICATED: return TS_RPC_UNAUTHENTICATED;
    default: return TS_RPC_INTERNAL;
    }
}

int ts_rpc_error_from_status(int status_code) {
    switch (status_code) {
    case TS_RPC_OK: return TS_OK;
    case TS_RPC_INVALID_ARGUMENT:
    case TS_RPC_OUT_OF_RANGE:
    case TS_RPC_FAILED_PRECONDITION: return TS_E_INVALID;
    case TS_RPC_RESOURCE_EXHAUSTED: return TS_E_EXHAUSTED;
    case TS_RPC_UNAVAILABLE: return TS_E_UNAVAILABLE;
    case TS_RPC_NOT_FOUND: return TS_E_NOT_FOUND;
    case TS_RPC_DEADLINE_EXCEEDED: return TS_E_TIMEOUT;
    case TS_RPC_CANCELLED: return TS_E_CANCELLED;
    case TS_RPC_UNIMPLEMENTED: return TS_E_UNSUPPORTED;
    case TS_RPC_UNAUTHENTICATED:
    case TS_RPC_PERMISSION_DENIED: return TS_E_UNAUTHENTICATED;
    default: return TS_E_INTERNAL;
    }
}

const char *ts_rpc_status_name(int status_code) {
    static const char *const names[] = {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    if (status_code < 0 || status_code >= (int)(sizeof names / sizeof names[0]))
        return "UNKNOWN_STATUS";
    return names[status_code];
}
