# rpc/ — the gRPC wrapper. The echo test service (tests/rpc/echo.proto) is generated with
# ts_proto_library, for C and Python.
ts_proto_library(NAME ts_test_echo_proto ROOT ${CMAKE_CURRENT_LIST_DIR}/rpc PROTOS echo.proto
                 PYTHON)
add_library(ts_test_echo STATIC ${CMAKE_CURRENT_LIST_DIR}/rpc/echo_service.c)
target_link_libraries(ts_test_echo PUBLIC ts_rpc ts_test_echo_proto)

ts_add_test(NAME test_rpc_status SOURCES unit/test_rpc_status.c LIBS ts_rpc LABELS unit)
ts_add_test(NAME test_rpc_echo SOURCES rpc/test_rpc_echo.c LIBS ts_test_echo
            LABELS integration TIMEOUT 180)
ts_add_test(NAME test_rpc_faults SOURCES rpc/test_rpc_faults.c LIBS ts_test_echo
            LABELS integration fault TIMEOUT 180)

# The echo server as a program, for clients in other processes (Python, the throughput check).
add_executable(rpc_echo_server ${CMAKE_CURRENT_LIST_DIR}/rpc/echo_server.c)
target_link_libraries(rpc_echo_server PRIVATE ts_test_echo)
set_target_properties(rpc_echo_server PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)

# A real gRPC client (Python grpcio, Debian's python3-grpcio) against our server.
get_target_property(TS_ECHO_PYTHON_DIR ts_test_echo_proto TS_PYTHON_DIR)
if(TS_ECHO_PYTHON_DIR)
  add_test(NAME test_rpc_python
           COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/rpc/test_rpc_python.py
                   --server $<TARGET_FILE:rpc_echo_server> --pydir ${TS_ECHO_PYTHON_DIR})
  set_tests_properties(test_rpc_python PROPERTIES LABELS integration TIMEOUT 120
                       SKIP_RETURN_CODE 77)
endif()

# Not a test: messages/s over 64 concurrent streams on loopback (see docs/rpc.md).
add_executable(rpc_throughput ${CMAKE_CURRENT_LIST_DIR}/rpc/rpc_throughput.c)
target_link_libraries(rpc_throughput PRIVATE ts_test_echo)
set_target_properties(rpc_throughput PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bin)
