# Model formats (model/): GGUF reader and writer, the Llama loader, synthetic models, the
# `tessera model` command, and the GGUF fuzzer.
ts_add_test(NAME test_gguf SOURCES unit/test_gguf.c LIBS ts_model LABELS unit)
ts_add_test(NAME test_llama SOURCES unit/test_llama.c LIBS ts_model LABELS unit)
ts_add_test(NAME test_synth SOURCES unit/test_synth.c LIBS ts_model LABELS unit)

# The `tessera model` command, run as a user would.
add_test(NAME test_model_cli
         COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/cli/test_model_cli.sh $<TARGET_FILE:tessera>
                 ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR}/tests/model_cli)
set_tests_properties(test_model_cli PROPERTIES LABELS unit TIMEOUT 120)
