# Unit tests of the CLI's own parts (the commands themselves are tested against real clusters in
# clients.cmake, serving.cmake and batch.cmake).
ts_add_test(NAME test_http_client
            SOURCES cli/test_http_client.c ${PROJECT_SOURCE_DIR}/cli/http_client.c
            LABELS unit TIMEOUT 60)
