# The Files and Batches API (issue 16): a real coordinator with --state-dir and a node of the
# bundled model, driven by the official openai client (PyPI, cached venv) and raw HTTP.
if(TARGET tessera-coordinator AND TARGET tessera-node AND TARGET tessera AND TARGET ts_proto)
  get_target_property(TS_BATCH_PYDIR ts_proto TS_PYTHON_DIR)
  if(TS_BATCH_PYDIR)
    add_test(NAME batch_api_openai_client
             COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/integration/test_batch_api.py
                     --bin-dir $<TARGET_FILE_DIR:tessera> --pydir ${TS_BATCH_PYDIR})
    set_tests_properties(batch_api_openai_client PROPERTIES LABELS "integration;fault"
                         TIMEOUT 600 SKIP_RETURN_CODE 77)
    # kill -9 of the coordinator mid-batch: the job continues, nothing lost or run twice.
    add_test(NAME batch_survives_coordinator_kill
             COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/integration/test_batch_recovery.py
                     --bin-dir $<TARGET_FILE_DIR:tessera> --pydir ${TS_BATCH_PYDIR})
    set_tests_properties(batch_survives_coordinator_kill PROPERTIES LABELS "integration;fault"
                         TIMEOUT 300 SKIP_RETURN_CODE 77)
    add_test(NAME batch_cli_submit_wait_results
             COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/integration/test_batch_cli.py
                     --bin-dir $<TARGET_FILE_DIR:tessera> --pydir ${TS_BATCH_PYDIR})
    set_tests_properties(batch_cli_submit_wait_results PROPERTIES LABELS integration TIMEOUT 300
                         SKIP_RETURN_CODE 77)
    # tessera batch run: its own local cluster; kill -9 of it mid-run, then resumed.
    add_test(NAME batch_run_offline_resumes_after_kill
             COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/integration/test_batch_run.py
                     --bin-dir $<TARGET_FILE_DIR:tessera> --pydir ${TS_BATCH_PYDIR})
    set_tests_properties(batch_run_offline_resumes_after_kill PROPERTIES
                         LABELS "integration;fault" TIMEOUT 400 SKIP_RETURN_CODE 77)
  endif()
endif()
