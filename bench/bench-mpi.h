/* What the MPI benchmarks share: timing several modes round-robin, and
 * their list options.  Include after <mpi.h>. */
#ifndef MR_BENCH_MPI_H
#define MR_BENCH_MPI_H

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench-common.h"
#include "runtime/status.h"

static inline int bench_cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* out[m] = the maximum over ranks of the median of `iters` runs of mode m,
 * the modes measured round-robin (0, 1, ..., 0, 1, ...) after one warm-up
 * round, so that a slow spell of the machine hits them all alike; a barrier
 * before each run.  A failed run aborts the job. */
static inline void bench_medians(int modes, int iters, mr_status (*run)(void *ctx, int mode), void *ctx, double *out,
                                 const char *who) {
    double *t = malloc((size_t)iters * (size_t)modes * sizeof *t);
    for (int i = -1; i < iters; i++)
        for (int m = 0; m < modes; m++) {
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = now_s();
            if (run(ctx, m) != MR_OK) {
                fprintf(stderr, "%s: %s\n", who, mr_last_error());
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
            if (i >= 0) t[m * iters + i] = now_s() - t0;
        }
    for (int m = 0; m < modes; m++) {
        qsort(t + m * iters, (size_t)iters, sizeof *t, bench_cmp_d);
        double med = t[m * iters + iters / 2];
        MPI_Allreduce(&med, &out[m], 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    }
    free(t);
}

/* Pins the calling thread, and every thread it starts later, to the
 * (rank mod n)-th CPU it may run on, as moerun's own binding gives each rank
 * of a node its cores.  Benchmarks run their ranks on network-namespace
 * "nodes" that share this machine's cores, where mpirun is told --bind-to
 * none; unpinned, the ranks' GEMM and progress threads migrate and preempt
 * each other's.  Returns the CPU, or -1 (left unpinned). */
static inline int bench_pin_rank(int rank) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
    int n = CPU_COUNT(&set), k = rank % (n > 0 ? n : 1);
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &set) || k--) continue;
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        return sched_setaffinity(0, sizeof one, &one) == 0 ? cpu : -1;
    }
    return -1;
}

/* "64,256" -> out[], at most max; returns the count. */
static inline int bench_parse_ints(const char *s, int *out, int max) {
    int n = 0;
    char *dup = strdup(s), *save = NULL;
    for (char *t = strtok_r(dup, ",", &save); t && n < max; t = strtok_r(NULL, ",", &save)) out[n++] = atoi(t);
    free(dup);
    return n;
}

/* "a,c" over names[n] -> use[] (1 for each named); an unknown name aborts
 * the job with a message from rank 0. */
static inline void bench_pick(const char *list, const char *const *names, int n, int *use, const char *who) {
    memset(use, 0, sizeof(int) * (size_t)n);
    char *dup = strdup(list), *save = NULL;
    for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int k = 0;
        while (k < n && strcmp(t, names[k])) k++;
        if (k == n) {
            int me = 0;
            MPI_Comm_rank(MPI_COMM_WORLD, &me);
            if (me == 0) fprintf(stderr, "%s: unknown shape '%s'\n", who, t);
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
        use[k] = 1;
    }
    free(dup);
}

#endif
