/*
 * test.h — the minimal unit-test harness used by every test program.
 *
 *   static void test_parses_empty_object(void) { CHECK(...); CHECK_EQ_INT(a, b); }
 *   int main(void) { RUN(test_parses_empty_object); return test_summary(); }
 *
 * A failed CHECK prints file:line and the expression and marks the current test failed, then the
 * test goes on (so one run shows every failure). test_summary() prints "N passed, M failed" and
 * returns the exit code. A test program that cannot run here calls test_skip("why"), which prints
 * "SKIP: why" and exits with 77; ctest reports it as skipped (SKIP_RETURN_CODE 77), not passed.
 *
 * Test data: TS_SOURCE_DIR is the source tree (a compile definition), so paths are
 * TS_SOURCE_DIR "/tests/data/..." and TS_SOURCE_DIR "/models/stories260K/...".
 */
#ifndef TS_TESTS_TEST_H
#define TS_TESTS_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_failed_checks;
static int test_current_failed;
static int test_passed_count;
static int test_failed_count;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "  %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);             \
            test_failed_checks++;                                                                  \
            test_current_failed = 1;                                                               \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);                            \
        if (check_a_ != check_b_) {                                                                \
            fprintf(stderr, "  %s:%d: CHECK failed: %s == %s (%lld != %lld)\n", __FILE__,          \
                    __LINE__, #a, #b, check_a_, check_b_);                                         \
            test_failed_checks++;                                                                  \
            test_current_failed = 1;                                                               \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                                         \
    do {                                                                                           \
        const char *check_a_ = (a), *check_b_ = (b);                                               \
        if (!check_a_ || !check_b_ || strcmp(check_a_, check_b_) != 0) {                           \
            fprintf(stderr, "  %s:%d: CHECK failed: %s == %s (\"%s\" != \"%s\")\n", __FILE__,      \
                    __LINE__, #a, #b, check_a_ ? check_a_ : "(null)",                              \
                    check_b_ ? check_b_ : "(null)");                                               \
            test_failed_checks++;                                                                  \
            test_current_failed = 1;                                                               \
        }                                                                                          \
    } while (0)

/* |a - b| <= tol */
#define CHECK_NEAR(a, b, tol)                                                                      \
    do {                                                                                           \
        double check_a_ = (double)(a), check_b_ = (double)(b);                                     \
        if (!(fabs(check_a_ - check_b_) <= (double)(tol))) {                                       \
            fprintf(stderr, "  %s:%d: CHECK failed: %s ~ %s (%.9g vs %.9g, tol %g)\n", __FILE__,   \
                    __LINE__, #a, #b, check_a_, check_b_, (double)(tol));                          \
            test_failed_checks++;                                                                  \
            test_current_failed = 1;                                                               \
        }                                                                                          \
    } while (0)

/* A call returning a TS_E code must succeed; prints the error message otherwise. */
#define CHECK_OK(call)                                                                             \
    do {                                                                                           \
        int check_rc_ = (call);                                                                    \
        if (check_rc_ != 0) {                                                                      \
            fprintf(stderr, "  %s:%d: CHECK_OK failed: %s returned %d: %s\n", __FILE__, __LINE__,  \
                    #call, check_rc_, ts_error_message());                                         \
            test_failed_checks++;                                                                  \
            test_current_failed = 1;                                                               \
        }                                                                                          \
    } while (0)

static inline void test_run(const char *name, void (*fn)(void)) {
    test_current_failed = 0;
    fn();
    if (test_current_failed) {
        test_failed_count++;
        fprintf(stderr, "FAIL %s\n", name);
    } else {
        test_passed_count++;
        fprintf(stderr, "ok   %s\n", name);
    }
}

#define RUN(fn) test_run(#fn, fn)

static inline int test_summary(void) {
    fprintf(stderr, "%d passed, %d failed\n", test_passed_count, test_failed_count);
    return test_failed_count ? 1 : 0;
}

static inline void test_skip(const char *why) {
    printf("SKIP: %s\n", why);
    fflush(stdout);
    exit(77);
}

#endif
