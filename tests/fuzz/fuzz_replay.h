/*
 * fuzz_replay.h — the main() of a fuzz entry point built without libFuzzer: it replays files
 * (each file of a directory, recursively) through LLVMFuzzerTestOneInput, so that every build
 * compiles and runs the entry point on its seed corpus. Include it once, after the entry point,
 * in a file built without TS_LIBFUZZER, and call ts_fuzz_replay_main from main().
 */
#ifndef TS_TESTS_FUZZ_REPLAY_H
#define TS_TESTS_FUZZ_REPLAY_H

#include "common/buf.h"
#include "common/error.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Runs one file, or every file under a directory, through the entry point; the number run. */
static int ts_fuzz_replay_path(const char *name, const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "%s: %s: not found\n", name, path);
        exit(1);
    }
    if (S_ISDIR(st.st_mode)) {
        DIR *dir = opendir(path);
        int n = 0;
        struct dirent *e;
        while (dir && (e = readdir(dir)) != NULL) {
            if (e->d_name[0] == '.') continue;
            char child[4096];
            snprintf(child, sizeof child, "%s/%s", path, e->d_name);
            n += ts_fuzz_replay_path(name, child);
        }
        if (dir) closedir(dir);
        return n;
    }
    ts_buf input = {0};
    if (ts_buf_read_file(&input, path) != TS_OK) {
        fprintf(stderr, "%s: %s\n", name, ts_error_message());
        exit(1);
    }
    /* an exact-size copy, so a sanitizer build sees reads past the end */
    uint8_t *copy = malloc(input.len ? input.len : 1);
    memcpy(copy, input.data, input.len);
    LLVMFuzzerTestOneInput(copy, input.len);
    free(copy);
    ts_buf_free(&input);
    return 1;
}

/* Replays the paths given, or default_corpus without any; exit status for main(). */
static int ts_fuzz_replay_main(const char *name, int argc, char **argv,
                               const char *default_corpus) {
    int n = 0;
    if (argc < 2) n = ts_fuzz_replay_path(name, default_corpus);
    for (int i = 1; i < argc; i++)
        n += ts_fuzz_replay_path(name, argv[i]);
    if (n == 0) {
        fprintf(stderr, "%s: no inputs\n", name);
        return 1;
    }
    printf("%s: %d inputs replayed, contract held\n", name, n);
    return 0;
}

#endif
