/* See harness.h. */
#define _GNU_SOURCE
#include "harness.h"

#include <stdlib.h>
#include <string.h>

int mr_test_pass = 0, mr_test_fail = 0;

const char *mr_test_src(const char *rel) {
    static char buf[8][4096];
    static int next = 0;
    const char *root = getenv("MR_SOURCE_DIR");
    char *b = buf[next++ % 8];
    snprintf(b, 4096, "%s/%s", root ? root : ".", rel);
    return b;
}

const char *mr_test_tmpdir(void) {
    static char dir[256];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/mr-test-XXXXXX");
        if (!mkdtemp(dir)) { perror("mkdtemp"); exit(1); }
    }
    return dir;
}

int mr_test_contains(const char *hay, const char *needle) {
    return hay && needle && strstr(hay, needle) != NULL;
}

int mr_test_summary(void) {
    printf("%d passed, %d failed\n", mr_test_pass, mr_test_fail);
    return mr_test_fail ? 1 : 0;
}
