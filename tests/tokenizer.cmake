# Tokenizers (tokenizer/): llama.cpp's vectors for stories260K, Llama 2 SPM and GPT-2 BPE, the real
# models (SmolLM2, Qwen2.5-Coder: tokenize lines, prompt ids, end of generation),
# decoding and streaming, broken metadata, the pre-tokenizer regexes, and `tessera tokenize`.
ts_add_test(NAME test_tokenizer SOURCES unit/test_tokenizer.c LIBS ts_tokenizer LABELS unit)
ts_add_test(NAME test_tokenizer_pretok SOURCES unit/test_tokenizer_pretok.c LIBS ts_tokenizer
            LABELS unit)
ts_add_test(NAME test_tokenizer_real SOURCES unit/test_tokenizer_real.c LIBS ts_tokenizer
            LABELS unit)
ts_add_test(NAME test_tokenizer_nfc SOURCES unit/test_tokenizer_nfc.c LIBS ts_tokenizer
            LABELS unit)
ts_add_test(NAME test_tokenizer_hf SOURCES unit/test_tokenizer_hf.c LIBS ts_tokenizer
            LABELS unit)

# `tessera tokenize`, run as a user would (the test runs the built binary).
ts_add_test(NAME test_tokenize_cli SOURCES cli/test_tokenize_cli.c LABELS unit)
add_dependencies(test_tokenize_cli tessera)

# tokenizer.json against the `tokenizers` package (PyPI, in a cached virtual environment: skips
# only when PyPI cannot be reached) and against the GGUF it was made from. tokenizer_hf_check is
# the comparing half, run by the script; it is no test of its own.
add_executable(tokenizer_hf_check unit/tokenizer_hf_check.c)
target_link_libraries(tokenizer_hf_check PRIVATE ts_tokenizer ts_common)
set_target_properties(tokenizer_hf_check PROPERTIES RUNTIME_OUTPUT_DIRECTORY
                                                    ${PROJECT_BINARY_DIR}/tests)
find_package(Python3 REQUIRED COMPONENTS Interpreter)
add_test(NAME tokenizer_json_matches_tokenizers_package
         COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_tokenizer_hf.py
                 $<TARGET_FILE:tokenizer_hf_check>)
set_tests_properties(tokenizer_json_matches_tokenizers_package PROPERTIES LABELS integration
                     TIMEOUT 600 SKIP_RETURN_CODE 77)

# The tokenizer fuzz entry point (user text into every encoder, decoder and NFC), replaying its
# seed corpus in every build; the real fuzzer with -DTESSERA_FUZZ=ON and clang, as fuzz_gguf.
ts_add_test(NAME fuzz_tokenizer_replay SOURCES fuzz/fuzz_tokenizer.c LIBS ts_tokenizer
            LABELS fuzz)
if(TESSERA_FUZZ)
  file(GLOB TS_TOKENIZER_SOURCES ${PROJECT_SOURCE_DIR}/tokenizer/*.c)
  ts_add_fuzzer(NAME fuzz_tokenizer
                SOURCES fuzz/fuzz_tokenizer.c ${TS_TOKENIZER_SOURCES} ${PROJECT_SOURCE_DIR}/model/gguf.c
                CORPUS ${CMAKE_CURRENT_LIST_DIR}/fuzz/corpus/tokenizer MAX_LEN 4096)
  # ts_tokenizer_for_model's checkpoint test (model/hf.c) and what it needs, uninstrumented
  target_link_libraries(fuzz_tokenizer PRIVATE ts_model)
endif()
