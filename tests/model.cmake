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

# The real fuzzer: cmake -DTESSERA_FUZZ=ON -DCMAKE_C_COMPILER=clang (ts_add_fuzzer).
if(TESSERA_FUZZ)
  ts_add_fuzzer(NAME fuzz_gguf SOURCES fuzz/fuzz_gguf.c ${TS_MODEL_SOURCES}
                CORPUS ${CMAKE_CURRENT_LIST_DIR}/fuzz/corpus/gguf MAX_LEN 65536)
  # the types' reference functions (kernels/quant.c): uninstrumented, as ts_common
  target_link_libraries(fuzz_gguf PRIVATE ts_quant)
endif()

# Hugging Face checkpoints: the safetensors reader and config.json/tensor-name translation.
ts_add_test(NAME test_safetensors SOURCES unit/test_safetensors.c LIBS ts_model LABELS unit)
# The safetensors header fuzz entry point, replaying its seed corpus (written by
# fuzz/make_safetensors_corpus.py) in every build; the real fuzzer with -DTESSERA_FUZZ=ON.
ts_add_test(NAME fuzz_safetensors_replay SOURCES fuzz/fuzz_safetensors.c LIBS ts_model LABELS fuzz)
if(TESSERA_FUZZ)
  ts_add_fuzzer(NAME fuzz_safetensors
                SOURCES fuzz/fuzz_safetensors.c ${PROJECT_SOURCE_DIR}/model/safetensors.c
                CORPUS ${CMAKE_CURRENT_LIST_DIR}/fuzz/corpus/safetensors MAX_LEN 16384)
endif()
