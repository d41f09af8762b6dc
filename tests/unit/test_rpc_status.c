/* test_rpc_status.c — TS_E_* ↔ gRPC status mapping (rpc/rpc_status.h). */
#include "common/error.h"
#include "rpc/rpc_status.h"
#include "tests/unit/test.h"

static void test_errors_map_to_the_documented_statuses(void) {
    CHECK_EQ_INT(ts_rpc_status_from_error(TS_OK), TS_RPC_OK);
    CHECK_EQ_INT(ts_rpc_status_from_error(TS_E_INVALID), TS_RPC_INVALID_ARGUMENT);
    CHECK_EQ_INT(ts_rpc_status_from_error(TS_E_EXHAUSTED), TS_RPC_RESOURCE_EXHAUSTED);
    CHECK_EQ_INT(ts_rpc_status_from_error(TS_E_NOMEM), TS_RPC_RESOURCE_EXHAUSTED);
    CHECK_EQ_INT(ts_rpc_status_from_error(TS_E_UNAVAILABLE), TS_RPC_UNAVAILABLE);
    CHECK_EQ_INT(ts_rpc_status_from_error(TS_E_NOT_FOUND), TS_RPC_NOT_FOUND);
    CHECK_EQ_INT(ts_rpc_status_from_error(TS_E_TIMEOUT), TS_RPC_DEADLINE_EXCEEDED);
    CHECK_EQ_INT(ts_rpc_status_from_error(TS_E_CANCELLED), TS_RPC_CANCELLED);
    CHECK_EQ_INT(ts_rpc_status_from_error(TS_E_UNAUTHENTICATED), TS_RPC_UNAUTHENTICATED);
    CHECK_EQ_INT(ts_rpc_status_from_error(TS_E_IO), TS_RPC_INTERNAL);
    CHECK_EQ_INT(ts_rpc_status_from_error(TS_E_FORMAT), TS_RPC_INTERNAL);
    CHECK_EQ_INT(ts_rpc_status_from_error(TS_E_UNSUPPORTED), TS_RPC_INTERNAL);
    CHECK_EQ_INT(ts_rpc_status_from_error(TS_E_INTERNAL), TS_RPC_INTERNAL);
    CHECK_EQ_INT(ts_rpc_status_from_error(-1000), TS_RPC_INTERNAL);
}

static void test_statuses_map_back_to_errors(void) {
    CHECK_EQ_INT(ts_rpc_error_from_status(TS_RPC_OK), TS_OK);
    CHECK_EQ_INT(ts_rpc_error_from_status(TS_RPC_INVALID_ARGUMENT), TS_E_INVALID);
    CHECK_EQ_INT(ts_rpc_error_from_status(TS_RPC_OUT_OF_RANGE), TS_E_INVALID);
    CHECK_EQ_INT(ts_rpc_error_from_status(TS_RPC_RESOURCE_EXHAUSTED), TS_E_EXHAUSTED);
    CHECK_EQ_INT(ts_rpc_error_from_status(TS_RPC_UNAVAILABLE), TS_E_UNAVAILABLE);
    CHECK_EQ_INT(ts_rpc_error_from_status(TS_RPC_NOT_FOUND), TS_E_NOT_FOUND);
    CHECK_EQ_INT(ts_rpc_error_from_status(TS_RPC_DEADLINE_EXCEEDED), TS_E_TIMEOUT);
    CHECK_EQ_INT(ts_rpc_error_from_status(TS_RPC_CANCELLED), TS_E_CANCELLED);
    CHECK_EQ_INT(ts_rpc_error_from_status(TS_RPC_UNIMPLEMENTED), TS_E_UNSUPPORTED);
    CHECK_EQ_INT(ts_rpc_error_from_status(TS_RPC_UNAUTHENTICATED), TS_E_UNAUTHENTICATED);
    CHECK_EQ_INT(ts_rpc_error_from_status(TS_RPC_PERMISSION_DENIED), TS_E_UNAUTHENTICATED);
    CHECK_EQ_INT(ts_rpc_error_from_status(TS_RPC_UNKNOWN), TS_E_INTERNAL);
    CHECK_EQ_INT(ts_rpc_error_from_status(TS_RPC_DATA_LOSS), TS_E_INTERNAL);
    CHECK_EQ_INT(ts_rpc_error_from_status(99), TS_E_INTERNAL);
}

static void test_round_trip_keeps_the_mapped_codes(void) {
    const int codes[] = {
        TS_OK,        TS_E_INVALID,   TS_E_EXHAUSTED, TS_E_UNAVAILABLE,    TS_E_NOT_FOUND,
        TS_E_TIMEOUT, TS_E_CANCELLED, TS_E_INTERNAL,  TS_E_UNAUTHENTICATED};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        CHECK_EQ_INT(ts_rpc_error_from_status(ts_rpc_status_from_error(codes[i])), codes[i]);
}

static void test_status_names(void) {
    CHECK_EQ_STR(ts_rpc_status_name(TS_RPC_OK), "OK");
    CHECK_EQ_STR(ts_rpc_status_name(TS_RPC_DEADLINE_EXCEEDED), "DEADLINE_EXCEEDED");
    CHECK_EQ_STR(ts_rpc_status_name(TS_RPC_UNAUTHENTICATED), "UNAUTHENTICATED");
    CHECK_EQ_STR(ts_rpc_status_name(17), "UNKNOWN_STATUS");
    CHECK_EQ_STR(ts_rpc_status_name(-1), "UNKNOWN_STATUS");
}

int main(void) {
    RUN(test_errors_map_to_the_documented_statuses);
    RUN(test_statuses_map_back_to_errors);
    RUN(test_round_trip_keeps_the_mapped_codes);
    RUN(test_status_names);
    return test_summary();
}
