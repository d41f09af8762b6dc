# Client-facing tests of a real cluster (issue 4): `tessera generate --server`, `tessera bench`,
# a Python grpcio client, bad requests. Each test starts its own cluster on loopback (port 0):
# tessera-coordinator + node groups, or `tessera up`; see tests/integration/cluster.py.
if(TARGET tessera AND TARGET tessera-coordinator AND TARGET tessera-node)
  set(TESSERA_BIN $<TARGET_FILE:tessera>)
  ts_add_script_test(NAME server_unreachable_fails_fast
                     SCRIPT integration/test_server_unreachable.py ARGS ${TESSERA_BIN}
                     LABELS integration TIMEOUT 120)
  ts_add_script_test(NAME server_generate_matches_local
                     SCRIPT integration/test_server_generate.py ARGS ${TESSERA_BIN}
                     LABELS integration TIMEOUT 600)
  ts_add_script_test(NAME server_generate_matches_local_up_tp2_two_groups
                     SCRIPT integration/test_server_generate.py ARGS ${TESSERA_BIN} --groups 2
                     --tp 2 --launcher up LABELS integration TIMEOUT 600)
  ts_add_script_test(NAME server_64_streams_match_alone
                     SCRIPT integration/test_server_concurrent.py ARGS ${TESSERA_BIN}
                     LABELS integration TIMEOUT 900)
  if(TARGET ts_proto)
    get_target_property(TS_INFERENCE_PYTHON_DIR ts_proto TS_PYTHON_DIR)
  endif()
  if(TS_INFERENCE_PYTHON_DIR)
    # Debian's grpcio is seen by /usr/bin/python3 (not by a virtualenv's interpreter).
    foreach(t python bad_requests request_limits)
      add_test(NAME server_${t}
               COMMAND /usr/bin/python3
                       ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_server_${t}.py ${TESSERA_BIN}
                       --pydir ${TS_INFERENCE_PYTHON_DIR})
      set_tests_properties(server_${t} PROPERTIES LABELS "integration" TIMEOUT 600
                           SKIP_RETURN_CODE 77)
    endforeach()
    set_tests_properties(server_bad_requests PROPERTIES LABELS "integration;fault")
    set_tests_properties(server_request_limits PROPERTIES LABELS "integration;fault")
  endif()
endif()
