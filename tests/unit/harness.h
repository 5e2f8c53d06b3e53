/* A minimal test harness: CHECK records a failure and goes on, so one run
 * prints every mismatch; mr_test_summary() prints "N passed, N failed" and
 * returns the exit status. */
#ifndef MR_TEST_HARNESS_H
#define MR_TEST_HARNESS_H
#include <stdio.h>

extern int mr_test_pass, mr_test_fail;

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (cond) { mr_test_pass++; }                                         \
        else {                                                                \
            mr_test_fail++;                                                   \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);   \
            fprintf(stderr, __VA_ARGS__);                                     \
            fputc('\n', stderr);                                              \
        }                                                                     \
    } while (0)

/* Path under the source tree (MR_SOURCE_DIR from ctest). Static buffer. */
const char *mr_test_src(const char *rel);
/* A fresh temporary directory for this test, removed by the caller. */
const char *mr_test_tmpdir(void);
/* Substring check on an error message. */
int mr_test_contains(const char *hay, const char *needle);
int mr_test_summary(void);
#endif
