/* What every benchmark measures the same way: a monotonic clock, and the
 * memory-copy bandwidth that decode is compared with. */
#ifndef MR_BENCH_COMMON_H
#define MR_BENCH_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Best of 4 memcpys of 512 MiB on one thread, in GB/s with the bytes read
 * and the bytes written both counted; 0 if the buffers cannot be had. */
static inline double bench_memcpy(void) {
    size_t n = (size_t)512 << 20;
    char *a = malloc(n), *b = malloc(n);
    if (!a || !b) {
        free(a);
        free(b);
        return 0.0;
    }
    memset(a, 1, n);
    memset(b, 2, n);
    double best = 1e30;
    for (int r = 0; r < 4; r++) {
        double t = now_s();
        memcpy(b, a, n);
        t = now_s() - t;
        if (t < best) best = t;
    }
    free(a);
    free(b);
    return 2.0 * (double)n / best / 1e9;
}

/* A JSON result file holding one array: opened with its "[" written, or
 * NULL when path is NULL; exits with a message when it cannot be written.
 * Rows are separated by ",\n" (bench_json_sep); close writes the "]". */
static inline FILE *bench_json_open(const char *path) {
    if (!path) return NULL;
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(2);
    }
    fprintf(f, "[\n");
    return f;
}

static inline const char *bench_json_sep(int *first) {
    const char *s = *first ? "" : ",\n";
    *first = 0;
    return s;
}

static inline void bench_json_close(FILE *f) {
    if (!f) return;
    fprintf(f, "\n]\n");
    fclose(f);
}

#endif
