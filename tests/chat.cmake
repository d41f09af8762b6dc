# Chat templates (chat/): the Jinja interpreter and the chat layer against the rendered prompts
# of tests/data/real (the real models' templates, extracted into tests/data/chat), bad templates,
# special-token text in messages; Python's jinja2 as the reference on many message lists; the
# fuzzer; `tessera template`.
ts_add_test(NAME test_chat SOURCES unit/test_chat.c LIBS ts_chat LABELS unit)

# The reference: the script renders the same cases with jinja2 (PyPI, in a cached virtual
# environment; skipped only when PyPI cannot be reached) and chat_jinja_check with ours.
add_executable(chat_jinja_check unit/chat_jinja_check.c)
target_link_libraries(chat_jinja_check PRIVATE ts_chat ts_common)
set_target_properties(chat_jinja_check PROPERTIES RUNTIME_OUTPUT_DIRECTORY
                                                  ${PROJECT_BINARY_DIR}/tests)
find_package(Python3 REQUIRED COMPONENTS Interpreter)
add_test(NAME chat_templates_match_jinja2
         COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_chat_jinja.py
                 $<TARGET_FILE:chat_jinja_check>)
set_tests_properties(chat_templates_match_jinja2 PROPERTIES LABELS integration TIMEOUT 600
                     SKIP_RETURN_CODE 77)

# `tessera template` and `tessera chat` as a user runs them; with --real, the chat cases of
# tests/data/real on the real models (label "real", as real_models_greedy_match_llama_cpp).
if(TARGET tessera)
  add_test(NAME chat_cli COMMAND ${Python3_EXECUTABLE}
           ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_chat_cli.py $<TARGET_FILE:tessera>)
  set_tests_properties(chat_cli PROPERTIES LABELS integration TIMEOUT 300 SKIP_RETURN_CODE 77)
  add_test(NAME real_models_chat_match_llama_cpp COMMAND ${Python3_EXECUTABLE}
           ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_chat_cli.py $<TARGET_FILE:tessera> --real)
  set_tests_properties(real_models_chat_match_llama_cpp PROPERTIES LABELS real TIMEOUT 900
                       SKIP_RETURN_CODE 77)
endif()

# The template fuzz entry point (any bytes as a template, rendered over a fixed conversation),
# replaying its seed corpus in every build; the real fuzzer with -DTESSERA_FUZZ=ON and clang.
ts_add_test(NAME fuzz_chat_template_replay SOURCES fuzz/fuzz_chat_template.c LIBS ts_chat
            LABELS fuzz)
if(TESSERA_FUZZ)
  file(GLOB TS_CHAT_SOURCES ${PROJECT_SOURCE_DIR}/chat/jinja*.c)
  ts_add_fuzzer(NAME fuzz_chat_template
                SOURCES fuzz/fuzz_chat_template.c ${TS_CHAT_SOURCES}
                CORPUS ${CMAKE_CURRENT_LIST_DIR}/fuzz/corpus/chat_template MAX_LEN 4096)
endif()
