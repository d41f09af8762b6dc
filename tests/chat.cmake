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
