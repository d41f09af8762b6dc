/* test_secret.c — cluster secrets (common/secret.h): files of mode 0600, the environment,
 * constant-time comparison. */
#include "common/error.h"
#include "common/secret.h"
#include "tests/unit/test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];

static void path_in_dir(char *out, size_t size, const char *name) {
    snprintf(out, size, "%s/%s", dir, name);
}

static void write_file(const char *path, const char *text, mode_t mode) {
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
}

static void test_created_secrets_are_private_fresh_and_load_back(void) {
    char a_path[128], b_path[128], a[TS_SECRET_MAX], b[TS_SECRET_MAX];
    path_in_dir(a_path, sizeof a_path, "a.secret");
    path_in_dir(b_path, sizeof b_path, "b.secret");
    CHECK_OK(ts_secret_create_file(a_path));
    CHECK_OK(ts_secret_create_file(b_path));
    struct stat st;
    CHECK(stat(a_path, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK_OK(ts_secret_load("--cluster-secret-file", a_path, NULL, a, sizeof a));
    CHECK_OK(ts_secret_load("--cluster-secret-file", b_path, NULL, b, sizeof b));
    CHECK_EQ_INT((int)strlen(a), 64);
    CHECK(strcmp(a, b) != 0);
    CHECK_EQ_INT(ts_secret_create_file(a_path), TS_E_IO); /* never overwrites */
    CHECK(strstr(ts_error_message(), a_path) != NULL);
    unlink(a_path);
    unlink(b_path);
}

static void test_bad_files_are_refused_by_name_without_the_secret(void) {
    char path[128], out[TS_SECRET_MAX];
    path_in_dir(path, sizeof path, "loose.secret");
    write_file(path, "hunter2hunter2\n", 0644);
    CHECK_EQ_INT(ts_secret_load("--cluster-secret-file", path, NULL, out, sizeof out),
                 TS_E_INVALID);
    CHECK(strstr(ts_error_message(), "chmod 600") && strstr(ts_error_message(), path));
    CHECK(!strstr(ts_error_message(), "hunter2"));
    chmod(path, 0600);
    CHECK_OK(ts_secret_load("--cluster-secret-file", path, NULL, out, sizeof out));
    CHECK_EQ_STR(out, "hunter2hunter2");
    write_file(path, "two words\n", 0600);
    CHECK_EQ_INT(ts_secret_load("--cluster-secret-file", path, NULL, out, sizeof out),
                 TS_E_INVALID);
    CHECK(!strstr(ts_error_message(), "two words"));
    write_file(path, "\n", 0600);
    CHECK_EQ_INT(ts_secret_load("--cluster-secret-file", path, NULL, out, sizeof out),
                 TS_E_INVALID);
    CHECK(strstr(ts_error_message(), "empty") != NULL);
    unlink(path);
    CHECK_EQ_INT(ts_secret_load("--cluster-secret-file", path, NULL, out, sizeof out), TS_E_IO);
    CHECK(strstr(ts_error_message(), "--cluster-secret-file") != NULL);
}

static void test_the_environment_is_the_fallback(void) {
    char out[TS_SECRET_MAX];
    unsetenv("TS_TEST_SECRET");
    CHECK_OK(ts_secret_load("--f", NULL, "TS_TEST_SECRET", out, sizeof out));
    CHECK_EQ_STR(out, "");
    setenv("TS_TEST_SECRET", "s3cret", 1);
    CHECK_OK(ts_secret_load("--f", NULL, "TS_TEST_SECRET", out, sizeof out));
    CHECK_EQ_STR(out, "s3cret");
    unsetenv("TS_TEST_SECRET");
}

static void test_equal_compares_every_byte_and_the_length(void) {
    CHECK(ts_secret_equal("abc", 3, "abc", 3));
    CHECK(!ts_secret_equal("abc", 3, "abd", 3));
    CHECK(!ts_secret_equal("abc", 3, "ab", 2));
    CHECK(!ts_secret_equal("ab", 2, "abc", 3));
    CHECK(!ts_secret_equal("", 0, "a", 1));
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/ts-test-secret-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    RUN(test_created_secrets_are_private_fresh_and_load_back);
    RUN(test_bad_files_are_refused_by_name_without_the_secret);
    RUN(test_the_environment_is_the_fallback);
    RUN(test_equal_compares_every_byte_and_the_length);
    rmdir(dir);
    return test_summary();
}
