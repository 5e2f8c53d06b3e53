/* The backend matmul y(M,N) = x(M,K) . w(N,K)^T on Llama-3.2-1B's
 * projection shapes at decode-sized M, beside plain OpenBLAS cblas_sgemm
 * running its own threads (the baseline), and a memcpy figure, all measured
 * in the same run.  Small M is weight-streaming bound: "wGB/s" (weight bytes
 * / time) is to be read against memcpy's read GB/s; large M is compute
 * bound: GFLOP/s.  "diff" is max |backend - sgemm| / max |sgemm|.
 *
 * As in a model's decode step, weights come from memory, not from the
 * caches: shapes smaller than 256 MB get several copies of w, used in turn.
 *
 * --bf16: the backend runs matmul_bf16 on bf16 copies of the weights (half
 * the bytes; x rounded to bf16); the sgemm baseline stays fp32, and "diff"
 * then shows the bf16 rounding (~1e-3).
 *
 * usage: bench-matmul [--threads N] [--ms 1,2,4,8,16,32,64]
 *        [--shapes q,kv,gate,gate_up,down,lm_head] [--min-time 0.25]
 *        [--bf16] [--json FILE] */
#define _GNU_SOURCE
#include <cblas.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench-common.h"
#include "kernels/backend.h"
#include "topology/topology.h"

typedef struct shape {
    const char *name, *what;
    int N, K;
} shape;

/* Llama-3.2-1B: hidden 2048, 32 heads x 64, 8 KV heads, FFN 8192, vocab 128256 */
static const shape shapes[] = {
    {"q", "q_proj / o_proj", 2048, 2048},
    {"kv", "k_proj / v_proj", 512, 2048},
    {"gate", "gate_proj / up_proj", 8192, 2048},
    {"gate_up", "gate+up fused", 16384, 2048},
    {"down", "down_proj", 2048, 8192},
    {"lm_head", "lm_head (tied)", 128256, 2048},
};
enum { N_SHAPES = sizeof shapes / sizeof shapes[0], MAX_MS = 16 };

/* Deterministic values in [-1, 1) without a sequential dependence. */
static void fill(float *p, size_t n, uint64_t seed) {
    for (size_t i = 0; i < n; i++) {
        uint64_t z = (i + seed) * 0x9e3779b97f4a7c15ull;
        z ^= z >> 29;
        z *= 0xbf58476d1ce4e5b9ull;
        z ^= z >> 32;
        p[i] = (float)(z >> 40) * (1.0f / 8388608.0f) - 1.0f;
    }
}

/* Read bandwidth with the OpenMP team: a sum over a buffer far larger than
 * the caches, the access pattern of a weight stream. */
static double bench_read(int threads) {
    size_t n = ((size_t)512 << 20) / sizeof(uint64_t);
    uint64_t *a = malloc(n * sizeof *a), sum = 0;
    if (!a) return 0.0;
    for (size_t i = 0; i < n; i++) a[i] = i;
    double best = 1e30;
    for (int r = 0; r < 4; r++) {
        double t = now_s();
#pragma omp parallel for num_threads(threads) reduction(+ : sum) schedule(static)
        for (size_t i = 0; i < n; i++) sum += a[i];
        t = now_s() - t;
        if (t < best) best = t;
    }
    free(a);
    if (sum == 42) printf(" "); /* keep the loop */
    return (double)n * sizeof(uint64_t) / best / 1e9;
}

typedef struct run_ctx {
    mr_backend *be;
    float *y, *x, *w;
    const uint16_t *wh; /* bf16 copies of w (--bf16), else NULL */
    size_t wstride; /* values between copies of w */
    int copies, M, N, K, use_blas;
} run_ctx;

static void run_once(run_ctx *c, int copy) {
    const float *w = c->w + (size_t)(copy % c->copies) * c->wstride;
    if (!c->use_blas && c->wh)
        c->be->ops->matmul_bf16(c->be, c->y, c->x, c->wh + (size_t)(copy % c->copies) * c->wstride, NULL, c->M,
                                c->N, c->K, 0);
    else if (c->use_blas)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, c->M, c->N, c->K, 1.0f, c->x,
                    c->K, w, c->K, 0.0f, c->y, c->N);
    else
        c->be->ops->matmul(c->be, c->y, c->x, w, NULL, c->M, c->N, c->K, 0);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median seconds per call: one warm-up, then at least 3 calls and min_time. */
static double time_it(run_ctx *c, double min_time) {
    double t[64];
    int n = 0;
    run_once(c, 0);
    double start = now_s();
    while (n < 64 && (n < 3 || now_s() - start < min_time)) {
        double t0 = now_s();
        run_once(c, n + 1);
        t[n++] = now_s() - t0;
    }
    qsort(t, (size_t)n, sizeof t[0], cmp_double);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

static int parse_list(const char *s, int *out, int max) {
    int n = 0;
    char *dup = strdup(s);
    for (char *tok = strtok(dup, ","); tok && n < max; tok = strtok(NULL, ","))
        out[n++] = atoi(tok);
    free(dup);
    return n;
}

int main(int argc, char **argv) {
    mr_cpu_blas_core_check(argv, 1); /* may restart this program (kernels/cpu/cpu-blas-core.c) */
    const char *json_path = NULL, *ms_arg = "1,2,4,8,16,32,64", *shape_arg = NULL;
    int threads = 0, bf16 = 0;
    double min_time = 0.25;
    static const struct option lo[] = {{"threads", 1, 0, 't'}, {"ms", 1, 0, 'm'},
                                       {"shapes", 1, 0, 's'},  {"min-time", 1, 0, 'r'},
                                       {"json", 1, 0, 'j'},    {"help", 0, 0, 'h'},
                                       {"bf16", 0, 0, 'b'},
                                       {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 't': threads = atoi(optarg); break;
        case 'm': ms_arg = optarg; break;
        case 's': shape_arg = optarg; break;
        case 'r': min_time = atof(optarg); break;
        case 'j': json_path = optarg; break;
        case 'b': bf16 = 1; break;
        default:
            fprintf(c == 'h' ? stdout : stderr,
                    "usage: bench-matmul [--threads N] [--ms 1,2,4,8,16,32,64] "
                    "[--shapes q,kv,gate,gate_up,down,lm_head] [--min-time S] [--bf16] [--json FILE]\n");
            return c == 'h' ? 0 : 2;
        }
    }
    if (threads <= 0) {
        mr_local_cpus lc;
        threads = mr_topo_local_cpus(&lc) == MR_OK ? lc.cores : 1;
    }
    int ms[MAX_MS], nm = parse_list(ms_arg, ms, MAX_MS), maxm = 1;
    for (int i = 0; i < nm; i++) {
        if (ms[i] < 1) {
            fprintf(stderr, "bench-matmul: bad M %d in --ms\n", ms[i]);
            return 2;
        }
        if (ms[i] > maxm) maxm = ms[i];
    }

    double bw = bench_memcpy(), rd = bench_read(threads);
    mr_backend be;
    mr_backend_cpu_init(&be, threads); /* sets OpenBLAS to one thread */
    struct utsname un;
    uname(&un);
    char host[64] = "?";
    gethostname(host, sizeof host);
    printf("# bench-matmul: y(M,N) = x(M,K) . w(N,K)^T, backend weights %s, Llama-3.2-1B shapes\n",
           bf16 ? "bf16 (matmul_bf16)" : "fp32");
    printf("# machine: %s %s, %d threads\n", host, un.machine, threads);
    printf("# memory (same run): memcpy %.1f GB/s (read+write bytes, one thread), read %.1f GB/s "
           "(%d threads): wGB/s near the read figure is the floor\n", bw, rd, threads);
    printf("# backend: moerun cpu matmul (%d threads); sgemm: cblas_sgemm with %d OpenBLAS threads\n",
           threads, threads);
    printf("%-8s %6s %5s %4s | %9s %8s %7s | %9s %8s %7s | %6s %8s\n", "shape", "N", "K", "M",
           "back_ms", "GFLOP/s", "wGB/s", "sgemm_ms", "GFLOP/s", "wGB/s", "speed", "diff");

    FILE *jf = json_path ? fopen(json_path, "w") : NULL;
    if (jf)
        fprintf(jf, "{\"memcpy_gbs\": %.2f, \"read_gbs\": %.2f, \"threads\": %d, \"weights\": \"%s\", \"rows\": [\n",
                bw, rd, threads, bf16 ? "bf16" : "fp32");
    int first = 1;
    for (int s = 0; s < N_SHAPES; s++) {
        const shape *sh = &shapes[s];
        if (shape_arg) { /* comma-separated names */
            char pat[64];
            snprintf(pat, sizeof pat, ",%s,", sh->name);
            char list[256];
            snprintf(list, sizeof list, ",%s,", shape_arg);
            if (!strstr(list, pat)) continue;
        }
        int N = sh->N, K = sh->K;
        size_t wn = (size_t)N * K, min_bytes = (size_t)256 << 20;
        int copies = (int)((min_bytes + wn * sizeof(float) - 1) / (wn * sizeof(float)));
        float *w = malloc(sizeof(float) * wn * (size_t)copies), *x = malloc(sizeof(float) * (size_t)maxm * K);
        float *yb = malloc(sizeof(float) * (size_t)maxm * N), *yr = malloc(sizeof(float) * (size_t)maxm * N);
        if (!w || !x || !yb || !yr) {
            fprintf(stderr, "bench-matmul: out of memory for %s\n", sh->name);
            return 1;
        }
        fill(w, wn * (size_t)copies, 1 + (uint64_t)s);
        uint16_t *wh = NULL;
        if (bf16) { /* the bf16 copies, and the scratch reserved as the model does */
            wh = malloc(sizeof(uint16_t) * wn * (size_t)copies);
            if (!wh || be.ops->reserve_bf16(&be, maxm, K) != 0) {
                fprintf(stderr, "bench-matmul: out of memory for %s\n", sh->name);
                return 1;
            }
            be.ops->upload_bf16(&be, wh, w, wn * (size_t)copies);
        }
        fill(x, (size_t)maxm * K, 1000003);
        double tb[MAX_MS], tr[MAX_MS];
        /* All sgemm rows first: OpenMP threads spinning after the backend's
         * regions would take the cores from OpenBLAS's own threads. */
        openblas_set_num_threads(threads);
        for (int i = 0; i < nm; i++) {
            run_ctx rc = {&be, yr, x, w, NULL, wn, copies, ms[i], N, K, 1};
            tr[i] = time_it(&rc, min_time);
        }
        openblas_set_num_threads(1);
        for (int i = 0; i < nm; i++) {
            run_ctx rc = {&be, yb, x, w, wh, wn, copies, ms[i], N, K, 0};
            tb[i] = time_it(&rc, min_time);
        }
        for (int i = 0; i < nm; i++) {
            int M = ms[i];
            /* Once more each on the first copy of w, for the comparison. */
            run_ctx rb = {&be, yb, x, w, wh, wn, 1, M, N, K, 0}, rr = {&be, yr, x, w, NULL, wn, 1, M, N, K, 1};
            run_once(&rb, 0);
            openblas_set_num_threads(threads);
            run_once(&rr, 0);
            openblas_set_num_threads(1);
            double mx = 0.0, d = 0.0;
            for (size_t j = 0; j < (size_t)M * N; j++) {
                if (fabs(yr[j]) > mx) mx = fabs(yr[j]);
                if (fabs(yb[j] - yr[j]) > d) d = fabs(yb[j] - yr[j]);
            }
            d = mx > 0 ? d / mx : d;
            double flop = 2.0 * M * N * K, bytes = 4.0 * N * K, bbytes = (bf16 ? 2.0 : 4.0) * N * K;
            printf("%-8s %6d %5d %4d | %9.3f %8.1f %7.1f | %9.3f %8.1f %7.1f | %5.2fx %8.1e\n",
                   sh->name, N, K, M, tb[i] * 1e3, flop / tb[i] / 1e9, bbytes / tb[i] / 1e9,
                   tr[i] * 1e3, flop / tr[i] / 1e9, bytes / tr[i] / 1e9, tr[i] / tb[i], d);
            if (jf) {
                fprintf(jf,
                        "%s  {\"shape\": \"%s\", \"N\": %d, \"K\": %d, \"M\": %d, "
                        "\"backend_ms\": %.4f, \"backend_gflops\": %.2f, \"backend_weight_gbs\": %.2f, "
                        "\"sgemm_ms\": %.4f, \"sgemm_gflops\": %.2f, \"sgemm_weight_gbs\": %.2f, "
                        "\"max_rel_diff\": %.3g}",
                        first ? "" : ",\n", sh->name, N, K, M, tb[i] * 1e3, flop / tb[i] / 1e9,
                        bbytes / tb[i] / 1e9, tr[i] * 1e3, flop / tr[i] / 1e9, bytes / tr[i] / 1e9, d);
                first = 0;
            }
        }
        fflush(stdout);
        free(w);
        free(wh);
        free(x);
        free(yb);
        free(yr);
    }
    if (jf) {
        fprintf(jf, "\n]}\n");
        fclose(jf);
    }
    mr_backend_cpu_free(&be);
    return 0;
}
