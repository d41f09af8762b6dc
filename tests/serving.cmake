# Serving (issue 4): tessera-coordinator + tessera-node as real processes on loopback, driven by
# a Python grpcio client (Debian's /usr/bin/python3 sees python3-grpcio; the message classes are
# generated into the build tree by ts_proto_library ... PYTHON).
if(TARGET tessera-coordinator AND TARGET tessera-node AND TARGET ts_proto)
  get_target_property(TS_SERVING_PYDIR ts_proto TS_PYTHON_DIR)
  if(TS_SERVING_PYDIR)
    foreach(name basic faults node_submit)
      add_test(NAME serving_${name}
               COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/integration/test_serving_${name}.py
                       --bin-dir $<TARGET_FILE_DIR:tessera-coordinator> --pydir ${TS_SERVING_PYDIR})
    endforeach()
    set_tests_properties(serving_basic PROPERTIES LABELS integration TIMEOUT 300
                         SKIP_RETURN_CODE 77)
    set_tests_properties(serving_faults PROPERTIES LABELS "integration;fault" TIMEOUT 300
                         SKIP_RETURN_CODE 77)
    set_tests_properties(serving_node_submit PROPERTIES LABELS "integration;fault" TIMEOUT 180
                         SKIP_RETURN_CODE 77)
    # Mid-stream failover (issue 18): a group killed while it streams; the stream goes on.
    add_test(NAME failover_mid_stream_continues_exactly
             COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/integration/test_failover.py
                     --bin-dir $<TARGET_FILE_DIR:tessera-coordinator> --pydir ${TS_SERVING_PYDIR})
    set_tests_properties(failover_mid_stream_continues_exactly PROPERTIES
                         LABELS "integration;fault" TIMEOUT 300 SKIP_RETURN_CODE 77)
    # The soak under faults (issue 18): gRPC and HTTP traffic while groups are killed and
    # restarted; nothing lost, wrong or leaked. bench/soak.sh runs it for longer.
    add_test(NAME soak_under_node_kills_loses_nothing
             COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/fault/test_soak.py
                     --bin-dir $<TARGET_FILE_DIR:tessera-coordinator> --pydir ${TS_SERVING_PYDIR}
                     --seconds 40 --quiet-seconds 8)
    set_tests_properties(soak_under_node_kills_loses_nothing PROPERTIES
                         LABELS fault TIMEOUT 240 SKIP_RETURN_CODE 77)
    add_test(NAME coordinator_passes_node_refusals_on_and_retries_failures
             COMMAND /usr/bin/python3
                     ${CMAKE_CURRENT_LIST_DIR}/integration/test_coordinator_node_refusals.py
                     --bin-dir $<TARGET_FILE_DIR:tessera-coordinator> --pydir ${TS_SERVING_PYDIR})
    set_tests_properties(coordinator_passes_node_refusals_on_and_retries_failures PROPERTIES
                         LABELS "integration;fault" TIMEOUT 120 SKIP_RETURN_CODE 77)
    # Issue 15 security: the Worker service on its own listener; nodes prove the cluster secret.
    add_test(NAME worker_attach_needs_its_listener_and_the_cluster_secret
             COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/integration/test_worker_security.py
                     --bin-dir $<TARGET_FILE_DIR:tessera-coordinator> --pydir ${TS_SERVING_PYDIR})
    set_tests_properties(worker_attach_needs_its_listener_and_the_cluster_secret PROPERTIES
                         LABELS "integration;fault" TIMEOUT 120 SKIP_RETURN_CODE 77)
    # Cache-aware routing: two groups, two system prompts; an overloaded group is passed over.
    add_test(NAME routing_sends_requests_where_their_prefix_is
             COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/integration/test_cache_aware_routing.py
                     --bin-dir $<TARGET_FILE_DIR:tessera-coordinator> --pydir ${TS_SERVING_PYDIR})
    set_tests_properties(routing_sends_requests_where_their_prefix_is PROPERTIES
                         LABELS integration TIMEOUT 120 SKIP_RETURN_CODE 77)
    # The prefix cache end to end: cached_prompt_tokens (gRPC, HTTP), salts, Health counters.
    add_test(NAME prefix_cache_serving_counts_cached_tokens
             COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/integration/test_prefix_cache_serving.py
                     --bin-dir $<TARGET_FILE_DIR:tessera-coordinator> --pydir ${TS_SERVING_PYDIR})
    set_tests_properties(prefix_cache_serving_counts_cached_tokens PROPERTIES
                         LABELS integration TIMEOUT 120 SKIP_RETURN_CODE 77)
    if(TARGET tessera)
      add_test(NAME serving_up
               COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/integration/test_serving_up.py
                       --bin-dir $<TARGET_FILE_DIR:tessera> --pydir ${TS_SERVING_PYDIR})
      set_tests_properties(serving_up PROPERTIES LABELS integration TIMEOUT 300
                           SKIP_RETURN_CODE 77)
      # Supervision (issue 18): crashed groups and coordinator restarted, kill -9 of tessera up
      # leaves nothing behind.
      add_test(NAME up_supervision
               COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/integration/test_up_supervision.py
                       --bin-dir $<TARGET_FILE_DIR:tessera> --pydir ${TS_SERVING_PYDIR})
      set_tests_properties(up_supervision PROPERTIES LABELS "integration;fault" TIMEOUT 300
                           SKIP_RETURN_CODE 77)
      # The OpenAI-compatible HTTP API through the official openai client (PyPI, cached venv).
      add_test(NAME http_api_openai_client
               COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/integration/test_http_api.py
                       --bin-dir $<TARGET_FILE_DIR:tessera> --pydir ${TS_SERVING_PYDIR})
      set_tests_properties(http_api_openai_client PROPERTIES LABELS integration TIMEOUT 600
                           SKIP_RETURN_CODE 77)
      # TLS on the gRPC and HTTP listeners: a test CA from openssl, grpcio and the openai client.
      add_test(NAME tls_grpc_and_https_with_a_test_ca
               COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/integration/test_tls.py
                       --bin-dir $<TARGET_FILE_DIR:tessera> --pydir ${TS_SERVING_PYDIR})
      set_tests_properties(tls_grpc_and_https_with_a_test_ca PROPERTIES LABELS integration
                           TIMEOUT 300 SKIP_RETURN_CODE 77)
      # GET /metrics through prometheus_client's parser (PyPI, cached venv).
      add_test(NAME http_metrics_prometheus
               COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/integration/test_http_metrics.py
                       --bin-dir $<TARGET_FILE_DIR:tessera> --pydir ${TS_SERVING_PYDIR})
      set_tests_properties(http_metrics_prometheus PROPERTIES LABELS integration TIMEOUT 300
                           SKIP_RETURN_CODE 77)
      # The sampling surface (seeds, stop strings, ...) over HTTP (openai client) and gRPC.
      add_test(NAME http_grpc_sampling_surface
               COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/integration/test_http_sampling.py
                       --bin-dir $<TARGET_FILE_DIR:tessera> --pydir ${TS_SERVING_PYDIR})
      set_tests_properties(http_grpc_sampling_surface PROPERTIES LABELS integration TIMEOUT 600
                           SKIP_RETURN_CODE 77)
      # /tokenize, /detokenize, /health; API keys over HTTP, gRPC and the CLI; connection limits,
      # 429, a disconnect cancels (raw sockets).
      add_test(NAME http_endpoints_keys_limits_disconnect
               COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/integration/test_http_endpoints.py
                       --bin-dir $<TARGET_FILE_DIR:tessera> --pydir ${TS_SERVING_PYDIR})
      set_tests_properties(http_endpoints_keys_limits_disconnect PROPERTIES LABELS integration
                           TIMEOUT 120 SKIP_RETURN_CODE 77)
      # tessera bench --http: the same workload over gRPC and HTTP in one run, compared.
      add_test(NAME bench_http_vs_grpc
               COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/integration/test_bench_http.py
                       --bin-dir $<TARGET_FILE_DIR:tessera> --pydir ${TS_SERVING_PYDIR})
      set_tests_properties(bench_http_vs_grpc PROPERTIES LABELS integration TIMEOUT 300
                           SKIP_RETURN_CODE 77)
    endif()
  endif()
endif()

# The fuzz entry point of the HTTP body → request-model mapping (no server), replaying its seed
# corpus in every build (label fuzz); the real fuzzer with -DTESSERA_FUZZ=ON and clang.
if(TARGET ts_coordinator)
  ts_add_test(NAME fuzz_http_request_replay SOURCES fuzz/fuzz_http_request.c LIBS ts_coordinator
              LABELS fuzz)
  if(TESSERA_FUZZ)
    # the mapping (http.c), the JSON parser and the validation instrumented; the rest of the
    # coordinator from its library
    ts_add_fuzzer(NAME fuzz_http_request
                  SOURCES fuzz/fuzz_http_request.c ${PROJECT_SOURCE_DIR}/coordinator/http.c
                          ${PROJECT_SOURCE_DIR}/common/json.c ${PROJECT_SOURCE_DIR}/request/request.c
                  CORPUS ${CMAKE_CURRENT_LIST_DIR}/fuzz/corpus/http_request MAX_LEN 8192)
    target_link_libraries(fuzz_http_request PRIVATE ts_coordinator)
  endif()
endif()

# The coordinator's index of a group's prefix-cache keys (cache-aware routing), on its own.
ts_add_test(NAME test_prefix_index
            SOURCES unit/test_prefix_index.c ${PROJECT_SOURCE_DIR}/coordinator/prefix_index.c
            LABELS unit)
