# Model formats (model/): GGUF reader and writer, the Llama loader, synthetic models, the
# `tessera model` command, and the GGUF fuzzer.
ts_add_test(NAME test_gguf SOURCES unit/test_gguf.c LIBS ts_model LABELS unit)
ts_add_test(NAME test_model SOURCES unit/test_model.c LIBS ts_model LABELS unit)
ts_add_test(NAME test_synth SOURCES unit/test_synth.c LIBS ts_model LABELS unit)

# The `tessera model` command, run as a user would.
add_test(NAME test_model_cli
         COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/cli/test_model_cli.sh $<TARGET_FILE:tessera>
                 ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR}/tests/model_cli)
set_tests_properties(test_model_cli PROPERTIES LABELS unit TIMEOUT 120)

# The GGUF fuzz entry point, replaying the seed corpus in every build (label fuzz).
ts_add_test(NAME fuzz_gguf_replay SOURCES fuzz/fuzz_gguf.c LIBS ts_model LABELS fuzz)
# The tool that wrote that corpus: make_gguf_corpus tests/fuzz/corpus/gguf
add_executable(make_gguf_corpus fuzz/make_gguf_corpus.c)
target_link_libraries(make_gguf_corpus PRIVATE ts_model)
set_target_properties(make_gguf_corpus PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)

# The real fuzzer: cmake -DTESSERA_FUZZ=ON -DCMAKE_C_COMPILER=clang. The model sources are
# compiled into it with coverage instrumentation; the test runs it for a bounded time, keeping
# what it learns in the build tree and any crash there as crash-*.
if(TESSERA_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "TESSERA_FUZZ=ON needs clang (cmake -DCMAKE_C_COMPILER=clang)")
  endif()
  add_executable(fuzz_gguf fuzz/fuzz_gguf.c ${TS_MODEL_SOURCES})
  target_compile_definitions(fuzz_gguf PRIVATE TS_LIBFUZZER)
  target_compile_options(fuzz_gguf PRIVATE -fsanitize=fuzzer,address,undefined -g)
  target_link_options(fuzz_gguf PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz_gguf PRIVATE ts_common)
  set_target_properties(fuzz_gguf PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
  set(FUZZ_GGUF_WORK ${PROJECT_BINARY_DIR}/tests/fuzz_gguf.work)
  file(MAKE_DIRECTORY ${FUZZ_GGUF_WORK}/corpus)
  add_test(NAME fuzz_gguf
           COMMAND fuzz_gguf -max_total_time=30 -rss_limit_mb=2048 -max_len=65536
                   -artifact_prefix=${FUZZ_GGUF_WORK}/ ${FUZZ_GGUF_WORK}/corpus
                   ${CMAKE_CURRENT_LIST_DIR}/fuzz/corpus/gguf)
  set_tests_properties(fuzz_gguf PROPERTIES LABELS fuzz TIMEOUT 120)
endif()
