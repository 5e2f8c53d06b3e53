/* OpenBLAS chooses its kernels once, when the library is loaded: the
 * OPENBLAS_CORETYPE environment variable, else its own CPUID table.  A
 * release older than the CPU does not know the model and falls back to a
 * generic core: Debian 12's OpenBLAS 0.3.21 runs its SSE3 "Prescott"
 * kernels on an Emerald Rapids Xeon (AVX-512), and sgemm at M = 64 on
 * Llama-1B shapes ran at 29.5 GFLOP/s there against 144 GFLOP/s with
 * OPENBLAS_CORETYPE=SkylakeX (2 cores, bench-matmul).  The choice cannot be
 * changed after load, so the program is started again with the variable
 * set (same pid, same arguments; before MPI_Init, nothing is lost). */
#define _GNU_SOURCE
#include "kernels/cpu/cpu-internal.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef MR_NO_OPENBLAS /* tests/gpu/run.sh's plain build with a naive stand-in */
const char *mr_cpu_blas_better_core(const char *core) {
    (void)core;
    return NULL;
}
void mr_cpu_blas_core_check(char **argv, int restart) {
    (void)argv;
    (void)restart;
}
#else

/* OpenBLAS cores with AVX2 and FMA kernels (openblas_get_corename names). */
static int core_has_avx2(const char *core) {
    static const char *const good[] = {"Haswell", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids", "Excavator"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!strcasecmp(core, good[i])) return 1;
    return 0;
}

/* The OpenBLAS core this CPU should run, or NULL to keep the library's. */
const char *mr_cpu_blas_better_core(const char *core) {
    if (core_has_avx2(core)) return NULL;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
    return NULL;
}

void mr_cpu_blas_core_check(char **argv, int restart) {
    const char *set = getenv("OPENBLAS_CORETYPE");
    if ((set && *set) || getenv("MR_BLAS_CORE_CHECKED")) return; /* the user's choice, or already restarted */
    const char *core = openblas_get_corename();
    const char *better = mr_cpu_blas_better_core(core ? core : "");
    if (!better) return;
    const char *rank = getenv("OMPI_COMM_WORLD_RANK");
    int say = !rank || !strcmp(rank, "0");
    if (!restart) {
        if (say)
            fprintf(stderr, "moerun: warning: OpenBLAS runs its generic %s kernels on this CPU (GEMMs several times "
                            "slower); OPENBLAS_CORETYPE=%s in the environment picks the right ones\n",
                    core ? core : "?", better);
        return;
    }
    setenv("OPENBLAS_CORETYPE", better, 1);
    setenv("MR_BLAS_CORE_CHECKED", "1", 1);
    if (say)
        fprintf(stderr, "%s: OpenBLAS took its generic %s kernels on this CPU; restarting with "
                        "OPENBLAS_CORETYPE=%s (set OPENBLAS_CORETYPE to choose yourself)\n",
                argv[0], core ? core : "?", better);
    fflush(NULL);
    execv("/proc/self/exe", argv);
    /* Could not restart: carry on with the slow kernels. */
    fprintf(stderr, "%s: restart with OPENBLAS_CORETYPE=%s failed; continuing\n", argv[0], better);
}
#endif
