/*
 * test_jsonl_util.h — reading the reference files of tests/data (one JSON object per line) in
 * tests: for_each_json_line parses each non-empty line and hands its root to a callback.
 */
#ifndef TS_TESTS_TEST_JSONL_UTIL_H
#define TS_TESTS_TEST_JSONL_UTIL_H

#include "common/buf.h"
#include "common/json.h"
#include "tests/unit/test.h"

/* Calls fn for each line of a JSONL file; returns the number of lines. A file that cannot be read
 * or a line that is not JSON fails the current test. */
static inline int for_each_json_line(const char *path, void (*fn)(const ts_json *root, void *ctx),
                                     void *ctx) {
    ts_buf file = {0};
    CHECK_OK(ts_buf_read_file(&file, path));
    int lines = 0;
    for (char *line = file.data, *end; line && *line; line = *end ? end + 1 : end) {
        end = strchr(line, '\n');
        if (!end) end = line + strlen(line);
        if (end == line) continue;
        ts_json_doc *doc = NULL;
        CHECK_OK(ts_json_parse(line, (size_t)(end - line), &doc));
        if (!doc) break;
        fn(ts_json_root(doc), ctx);
        ts_json_doc_free(doc);
        lines++;
    }
    ts_buf_free(&file);
    return lines;
}

#endif
