# Prefill/decode disaggregation (issue 5): tessera-coordinator + prefill and decode node groups
# as real processes on loopback (tessera up, or the serving test harness), driven by grpcio.
if(TARGET tessera-coordinator AND TARGET tessera-node AND TARGET tessera AND TARGET ts_proto)
  get_target_property(TS_DISAGG_PYDIR ts_proto TS_PYTHON_DIR)
  if(TS_DISAGG_PYDIR)
    add_test(NAME disagg_parity
             COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/integration/test_disagg_parity.py
                     --bin-dir $<TARGET_FILE_DIR:tessera> --pydir ${TS_DISAGG_PYDIR})
    set_tests_properties(disagg_parity PROPERTIES LABELS integration TIMEOUT 420
                         SKIP_RETURN_CODE 77)
    add_test(NAME disagg_faults
             COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/integration/test_disagg_faults.py
                     --bin-dir $<TARGET_FILE_DIR:tessera> --pydir ${TS_DISAGG_PYDIR})
    set_tests_properties(disagg_faults PROPERTIES LABELS "integration;fault" TIMEOUT 300
                         SKIP_RETURN_CODE 77)
    add_test(NAME disagg_kv_mismatch_refused
             COMMAND /usr/bin/python3
                     ${CMAKE_CURRENT_LIST_DIR}/integration/test_disagg_kv_mismatch.py
                     --bin-dir $<TARGET_FILE_DIR:tessera> --pydir ${TS_DISAGG_PYDIR})
    set_tests_properties(disagg_kv_mismatch_refused PROPERTIES LABELS "integration;fault"
                         TIMEOUT 300 SKIP_RETURN_CODE 77)
  endif()
endif()
