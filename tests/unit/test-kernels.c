/* The CPU backend against plain references written here (double-precision
 * accumulation), on random inputs of awkward sizes.  Every comparison states
 * its tolerance relative to max |reference| and prints the first mismatches;
 * exact identities (rope at position 0, equal keys in attention, ties in the
 * router) are checked as well, and ops whose result must not depend on the
 * thread count are run with 1 and 3 threads and compared bit for bit.  The
 * data-movement ops (zero, copy_rows, cache_write) must match bit for bit and
 * leave guard values around the region they write untouched. */
#include "harness.h"
#define MR_TEST_RAND_SEED 0x9e3779b97f4a7c15ull
#include "test-rand.h"
#include "kernels/backend.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static mr_backend B;  /* default thread count */
static mr_backend B1; /* one thread */
static mr_backend B3; /* three threads (more than the build machine's cores) */

/* ---- helpers ------------------------------------------------------------ */

static float *falloc(size_t n) { return malloc((n ? n : 1) * sizeof(float)); }
static double *dalloc(size_t n) { return malloc((n ? n : 1) * sizeof(double)); }

/* |got - ref| <= tol * max|ref| for every element (tol absolute when the
 * reference is all zero).  Prints up to 5 mismatches. */
static void cmp(const char *what, const float *got, const double *ref, size_t n,
                double tol) {
    double mx = 0.0;
    for (size_t i = 0; i < n; i++)
        if (fabs(ref[i]) > mx) mx = fabs(ref[i]);
    double lim = tol * (mx > 0.0 ? mx : 1.0);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= lim)) {
            if (bad < 5)
                fprintf(stderr, "  %s: [%zu] got %.9g want %.9g (|diff| %.3g > %.3g)\n",
                        what, i, got[i], ref[i], d, lim);
            bad++;
        }
    }
    CHECK(bad == 0, "%s: %zu of %zu elements off (tol %.1e x max|ref| %.4g)", what, bad, n, tol, mx);
}

static void same_bits(const char *what, const void *a, const void *b, size_t bytes) {
    CHECK(memcmp(a, b, bytes) == 0, "%s: results differ between thread counts", what);
}

/* ---- memory ------------------------------------------------------------- */

static void test_memory(void) {
    for (size_t bytes = 0; bytes < 200; bytes += 37) {
        float *p = B.ops->alloc(&B, bytes);
        CHECK(p != NULL && (uintptr_t)p % 64 == 0, "alloc(%zu) = %p", bytes, (void *)p);
        B.ops->free(&B, p);
    }
    float src[100], dst[100];
    fill(src, 100, -1, 1);
    float *d = B.ops->alloc(&B, sizeof src);
    B.ops->upload(&B, d, src, sizeof src);
    B.ops->sync(&B);
    B.ops->download(&B, dst, d, sizeof src);
    CHECK(memcmp(src, dst, sizeof src) == 0, "upload/download round trip");
    B.ops->free(&B, d);
    CHECK(B.ops->host_memory == 1, "CPU backend host_memory = %d", B.ops->host_memory);
    CHECK(B.threads >= 1 && B1.threads == 1 && B3.threads == 3, "threads %d %d %d",
          B.threads, B1.threads, B3.threads);
}

/* ---- matmul ------------------------------------------------------------- */

static void test_matmul(void) {
    static const int shapes[][3] = {{1, 1, 1},    {1, 37, 65},   {3, 1, 17},
                                    {7, 13, 1},   {33, 65, 129}, {64, 96, 128},
                                    {5, 300, 257}, {1, 513, 300}, {2, 2, 2},
                                    {300, 40, 70}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        float *x = falloc((size_t)M * K), *w = falloc((size_t)N * K), *bias = falloc(N);
        float *y = falloc((size_t)M * N), *y0 = falloc((size_t)M * N);
        double *ref = dalloc((size_t)M * N);
        fill(x, (size_t)M * K, -1, 1);
        fill(w, (size_t)N * K, -1, 1);
        fill(bias, N, -2, 2);
        fill(y0, (size_t)M * N, -3, 3);
        for (int with_bias = 0; with_bias < 2; with_bias++)
            for (int acc = 0; acc < 2; acc++) {
                for (size_t i = 0; i < (size_t)M * N; i++)
                    y[i] = acc ? y0[i] : NAN; /* beta 0 must not read y */
                B.ops->matmul(&B, y, x, w, with_bias ? bias : NULL, M, N, K, acc);
                for (int m = 0; m < M; m++)
                    for (int n = 0; n < N; n++) {
                        double a = acc ? y0[(size_t)m * N + n] : 0.0;
                        if (with_bias) a += bias[n];
                        for (int k = 0; k < K; k++)
                            a += (double)x[(size_t)m * K + k] * w[(size_t)n * K + k];
                        ref[(size_t)m * N + n] = a;
                    }
                char what[96];
                snprintf(what, sizeof what, "matmul M=%d N=%d K=%d bias=%d acc=%d", M, N, K, with_bias, acc);
                cmp(what, y, ref, (size_t)M * N, 1e-5);
                for (size_t i = 0; i < (size_t)M * N; i++) y[i] = acc ? y0[i] : NAN;
                B3.ops->matmul(&B3, y, x, w, with_bias ? bias : NULL, M, N, K, acc);
                strcat(what, " threads=3");
                cmp(what, y, ref, (size_t)M * N, 1e-5);
            }
        free(x); free(w); free(bias); free(y); free(y0); free(ref);
    }
}

/* The small-M kernel (cpu-gemm-small.c, 2 <= M <= 32 by default; 33 is the
 * first M past it): odd N and K, N not a multiple of its 3-row tiles nor of
 * the 16-row thread split, K not a multiple of its 8-lane vectors, and K
 * long enough (1500, 2011) to be cut into several column blocks.  Results
 * must not depend on the thread count: 1, 3 and the default threads are
 * compared bit for bit where the small-M kernel runs (it needs FMA, as the
 * backend checks at init, and MR_CPU_MATMUL_SMALL_M may move its limit). */
static int small_m_kernel_runs(int M) {
    const char *e = getenv("MR_CPU_MATMUL_SMALL_M");
    int max_m = e && *e ? atoi(e) : 32;
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("x86-64-v3")) return 0;
#endif
    return M >= 2 && M <= max_m;
}

static void test_matmul_small(void) {
    static const int ms[] = {2, 3, 7, 16, 31, 32, 33};
    static const int nk[][2] = {{1, 5}, {2, 17}, {37, 65}, {101, 1500}, {19, 2011}};
    for (size_t a = 0; a < sizeof ms / sizeof ms[0]; a++)
        for (size_t s = 0; s < sizeof nk / sizeof nk[0]; s++) {
            int M = ms[a], N = nk[s][0], K = nk[s][1];
            size_t mn = (size_t)M * N;
            float *x = falloc((size_t)M * K), *w = falloc((size_t)N * K), *bias = falloc(N);
            float *y = falloc(mn), *y1 = falloc(mn), *y3 = falloc(mn), *y0 = falloc(mn);
            double *ref = dalloc(mn);
            fill(x, (size_t)M * K, -1, 1);
            fill(w, (size_t)N * K, -1, 1);
            fill(bias, N, -2, 2);
            fill(y0, mn, -3, 3);
            for (int with_bias = 0; with_bias < 2; with_bias++)
                for (int acc = 0; acc < 2; acc++) {
                    const float *bp = with_bias ? bias : NULL;
                    mr_backend *be[3] = {&B, &B1, &B3};
                    float *out[3] = {y, y1, y3};
                    for (int t = 0; t < 3; t++) {
                        for (size_t i = 0; i < mn; i++) out[t][i] = acc ? y0[i] : NAN;
                        be[t]->ops->matmul(be[t], out[t], x, w, bp, M, N, K, acc);
                    }
                    for (int m = 0; m < M; m++)
                        for (int n = 0; n < N; n++) {
                            double r = acc ? y0[(size_t)m * N + n] : 0.0;
                            if (with_bias) r += bias[n];
                            for (int k = 0; k < K; k++)
                                r += (double)x[(size_t)m * K + k] * w[(size_t)n * K + k];
                            ref[(size_t)m * N + n] = r;
                        }
                    char what[96];
                    snprintf(what, sizeof what, "matmul small M=%d N=%d K=%d bias=%d acc=%d", M,
                             N, K, with_bias, acc);
                    cmp(what, y, ref, mn, 1e-5);
                    if (small_m_kernel_runs(M)) { /* sgemm may block by thread */
                        same_bits(what, y, y1, mn * sizeof *y);
                        same_bits(what, y1, y3, mn * sizeof *y);
                    }
                }
            free(x); free(w); free(bias); free(y); free(y1); free(y3); free(y0); free(ref);
        }
}

/* ---- OpenBLAS core ------------------------------------------------------ */

/* Cores with AVX2 kernels are kept; a generic one is replaced only by a
 * core this CPU can run (checked against the CPU's own flags). */
static void test_blas_core(void) {
    static const char *const keep[] = {"Haswell", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids"};
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++)
        CHECK(mr_cpu_blas_better_core(keep[i]) == NULL, "core %s must be kept", keep[i]);
    const char *b = mr_cpu_blas_better_core("Prescott");
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const char *want = avx512 ? "SkylakeX" : avx2 ? "Haswell" : NULL;
    CHECK((b == NULL && want == NULL) || (b && want && !strcmp(b, want)), "Prescott on this CPU -> %s, want %s",
          b ? b : "keep", want ? want : "keep");
#else
    CHECK(b == NULL, "not x86-64: keep the library's core");
#endif
}

/* ---- bf16 weights ------------------------------------------------------- */

/* bf16 rounding written independently of kernels/bf16.h: keep the top 16
 * bits, add one unit when the dropped half is above 0x8000 or exactly
 * 0x8000 with the kept part odd (finite inputs). */
static float ref_bf16(float f) {
    uint32_t u, lo, hi;
    memcpy(&u, &f, 4);
    lo = u & 0xffffu;
    hi = u & 0xffff0000u;
    if (lo > 0x8000u || (lo == 0x8000u && (hi & 0x10000u))) hi += 0x10000u;
    memcpy(&f, &hi, 4);
    return f;
}

static void test_upload_bf16(void) {
    enum { N = 4099 };
    float *src = falloc(N);
    fill(src, N, -1e3, 1e3);
    /* ties: bit 15 set and the rest zero, with even and odd kept parts */
    uint32_t ties[4] = {0x3f808000u, 0x3f818000u, 0xbf808000u, 0x7f7f8000u};
    for (int i = 0; i < 4; i++) memcpy(&src[i], &ties[i], 4);
    src[4] = INFINITY;
    src[5] = -INFINITY;
    src[6] = 1e-40f; /* subnormal */
    src[7] = NAN;
    uint16_t *dst = malloc(N * sizeof *dst);
    B.ops->upload_bf16(&B, dst, src, N);
    size_t bad = 0;
    for (size_t i = 0; i < N; i++) {
        float got;
        uint32_t u = (uint32_t)dst[i] << 16;
        memcpy(&got, &u, 4);
        int ok = i == 7 ? isnan(got) : got == ref_bf16(src[i]);
        if (!ok && bad++ < 5) fprintf(stderr, "  upload_bf16 [%zu]: %.9g -> %.9g\n", i, src[i], got);
    }
    CHECK(bad == 0, "upload_bf16: %zu of %d values not rounded to nearest even", bad, N);
    free(src);
    free(dst);
}

/* y = bf16(x) . bf16(w)^T: every product of two bf16 values is exact in
 * float32, so the reference is the double sum of the rounded inputs
 * (tolerance 1e-5, as fp32 matmul); and within 1e-2 of the fp32 product.
 * Decode-sized M (the small-M kernel) must not depend on the thread count. */
static void test_matmul_bf16(void) {
    static const int shapes[][3] = {{1, 1, 1},    {1, 37, 65},  {3, 1, 17},    {7, 13, 1},  {2, 101, 1500},
                                    {16, 33, 257}, {32, 19, 2011}, {33, 65, 129}, {64, 96, 128}, {1, 513, 300},
                                    {300, 40, 70}, {100, 200, 33}};
    CHECK(B.ops->reserve_bf16(&B, 300, 2011) == 0, "reserve_bf16");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        size_t mn = (size_t)M * N;
        float *x = falloc((size_t)M * K), *wf = falloc((size_t)N * K), *bias = falloc(N);
        float *y = falloc(mn), *y1 = falloc(mn), *y3 = falloc(mn), *y0 = falloc(mn);
        uint16_t *w = malloc(((size_t)N * K + 1) * sizeof *w);
        double *ref = dalloc(mn), *ref32 = dalloc(mn);
        fill(x, (size_t)M * K, -1, 1);
        fill(wf, (size_t)N * K, -1, 1);
        fill(bias, N, -2, 2);
        fill(y0, mn, -3, 3);
        B.ops->upload_bf16(&B, w, wf, (size_t)N * K);
        for (int with_bias = 0; with_bias < 2; with_bias++)
            for (int acc = 0; acc < 2; acc++) {
                const float *bp = with_bias ? bias : NULL;
                mr_backend *be[3] = {&B, &B1, &B3}; /* B1, B3 unreserved: they grow their scratch */
                float *out[3] = {y, y1, y3};
                for (int t = 0; t < 3; t++) {
                    for (size_t i = 0; i < mn; i++) out[t][i] = acc ? y0[i] : NAN;
                    be[t]->ops->matmul_bf16(be[t], out[t], x, w, bp, M, N, K, acc);
                }
                for (int m = 0; m < M; m++)
                    for (int n = 0; n < N; n++) {
                        double r = acc ? y0[(size_t)m * N + n] : 0.0;
                        if (with_bias) r += bias[n];
                        double r32 = r;
                        for (int k = 0; k < K; k++) {
                            float xv = x[(size_t)m * K + k], wv = wf[(size_t)n * K + k];
                            r += (double)ref_bf16(xv) * ref_bf16(wv);
                            r32 += (double)xv * wv;
                        }
                        ref[(size_t)m * N + n] = r;
                        ref32[(size_t)m * N + n] = r32;
                    }
                char what[112];
                snprintf(what, sizeof what, "matmul_bf16 M=%d N=%d K=%d bias=%d acc=%d", M, N, K, with_bias, acc);
                cmp(what, y, ref, mn, 1e-5);
                cmp(what, y3, ref, mn, 1e-5);
                strcat(what, " vs fp32");
                cmp(what, y, ref32, mn, 1e-2);
                if (small_m_kernel_runs(M)) {
                    same_bits(what, y, y1, mn * sizeof *y);
                    same_bits(what, y1, y3, mn * sizeof *y);
                }
            }
        free(x); free(wf); free(bias); free(y); free(y1); free(y3); free(y0); free(w); free(ref); free(ref32);
    }
}

/* ---- fixed-order matmul (deterministic mode) ------------------------------ */

/* The order backend.h documents, written plainly: element (m, n) starts at
 * 0 + bias; each block of kc columns sums into 8 lanes (column k0 + j goes
 * to lane j % 8, one fmaf each), the lanes are added as
 * ((0+4)+(2+6))+((1+5)+(3+7)), and that sum is added on. */
static float fixed_ref(const float *x, const float *w, const float *bias, int n, int K, int kc) {
    float y = 0.0f + (bias ? bias[n] : 0.0f);
    for (int k0 = 0; k0 < K; k0 += kc) {
        float a[8] = {0};
        for (int k = k0; k < K && k < k0 + kc; k++) a[(k - k0) % 8] = fmaf(x[k], w[k], a[(k - k0) % 8]);
        y = y + (((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7])));
    }
    return y;
}

/* matmul_fixed: the bits of fixed_ref for every element, whatever M (a row
 * alone, inside 37 or 70 rows), the thread count (1, 3, default), the
 * weights' type (bf16: fixed_ref of the rounded inputs); with block_stride
 * each block's sum alone, which added in order onto 0 + bias give the same
 * bits again (what a tensor group does). */
static void test_matmul_fixed(void) {
    static const int shapes[][5] = {{1, 1, 1, 1, 1},          {1, 37, 65, 65, 13},      {5, 19, 64, 64, 16},
                                    {37, 33, 257, 257, 257},  {70, 45, 1024, 1024, 128}, {3, 20, 8192, 8192, 1024},
                                    {40, 17, 300, 300, 60}}; /* M, N, K, two block widths */
    CHECK(B.ops->matmul_fixed != NULL, "the cpu backend has matmul_fixed");
    CHECK(B.ops->reserve_bf16(&B, 70, 8192) == 0, "reserve_bf16");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int kcase = 0; kcase < 2; kcase++)
            for (int bf = 0; bf < 2; bf++) {
                int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2], kc = shapes[s][3 + kcase];
                size_t mn = (size_t)M * N, nb = (size_t)((K + kc - 1) / kc);
                float *x = falloc((size_t)M * K), *wf = falloc((size_t)N * K), *bias = falloc(N), *row = falloc(N);
                float *xr = falloc((size_t)M * K), *wr = falloc((size_t)N * K), *blocks = falloc(mn * nb);
                float *y = falloc(mn), *y1 = falloc(mn), *y3 = falloc(mn), *sum = falloc(mn);
                uint16_t *wh = malloc(((size_t)N * K + 1) * sizeof *wh);
                fill(x, (size_t)M * K, -1, 1), fill(wf, (size_t)N * K, -1, 1), fill(bias, N, -2, 2);
                B.ops->upload_bf16(&B, wh, wf, (size_t)N * K);
                for (size_t i = 0; i < (size_t)M * K; i++) xr[i] = bf ? ref_bf16(x[i]) : x[i];
                for (size_t i = 0; i < (size_t)N * K; i++) wr[i] = bf ? ref_bf16(wf[i]) : wf[i];
                const void *w = bf ? (const void *)wh : (const void *)wf;
                mr_backend *be[3] = {&B, &B1, &B3};
                float *out[3] = {y, y1, y3};
                for (int t = 0; t < 3; t++) be[t]->ops->matmul_fixed(be[t], out[t], x, w, bf, bias, M, N, K, kc, 0);
                size_t bad = 0;
                for (int m = 0; m < M; m++)
                    for (int n = 0; n < N; n++) {
                        float r = fixed_ref(xr + (size_t)m * K, wr + (size_t)n * K, bias, n, K, kc);
                        if (memcmp(&r, &y[(size_t)m * N + n], sizeof r) && bad++ < 3)
                            fprintf(stderr, "  matmul_fixed [%d,%d]: %.9g want %.9g\n", m, n, y[(size_t)m * N + n], r);
                    }
                char what[112];
                snprintf(what, sizeof what, "matmul_fixed M=%d N=%d K=%d kc=%d %s", M, N, K, kc, bf ? "bf16" : "fp32");
                CHECK(bad == 0, "%s: %zu elements differ from the documented order", what, bad);
                same_bits(what, y, y1, mn * sizeof *y);
                same_bits(what, y, y3, mn * sizeof *y);
                B.ops->matmul_fixed(&B, row, x + (size_t)(M - 1) * K, w, bf, bias, 1, N, K, kc, 0);
                CHECK(memcmp(row, y + (size_t)(M - 1) * N, (size_t)N * sizeof *row) == 0,
                      "%s: a row alone differs", what);
                B.ops->matmul_fixed(&B, blocks, x, w, bf, NULL, M, N, K, kc, mn); /* block sums, added in order */
                for (size_t i = 0; i < mn; i++) {
                    float v = 0.0f + bias[i % (size_t)N];
                    for (size_t b = 0; b < nb; b++) v = v + blocks[(size_t)b * mn + i];
                    sum[i] = v;
                }
                CHECK(memcmp(sum, y, mn * sizeof *y) == 0, "%s: block sums added in order differ", what);
                free(x); free(wf); free(bias); free(xr); free(wr); free(y); free(y1); free(y3); free(row); free(sum);
                free(blocks); free(wh);
            }
}

/* ---- rmsnorm ------------------------------------------------------------ */

static void test_rmsnorm(void) {
    static const int shapes[][2] = {{1, 1}, {1, 7}, {5, 576}, {3, 4097}, {64, 1024}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int rows = shapes[s][0], dim = shapes[s][1];
        size_t n = (size_t)rows * dim;
        float *x = falloc(n), *y = falloc(n), *w = falloc(dim);
        double *ref = dalloc(n);
        fill(x, n, -4, 4);
        fill(w, dim, 0.5f, 1.5f);
        float eps = 1e-6f;
        for (int r = 0; r < rows; r++) {
            double ss = 0;
            for (int i = 0; i < dim; i++) ss += (double)x[(size_t)r * dim + i] * x[(size_t)r * dim + i];
            double inv = 1.0 / sqrt(ss / dim + eps);
            for (int i = 0; i < dim; i++)
                ref[(size_t)r * dim + i] = x[(size_t)r * dim + i] * inv * w[i];
        }
        char what[64];
        B.ops->rmsnorm(&B, y, x, w, rows, dim, eps);
        snprintf(what, sizeof what, "rmsnorm %dx%d", rows, dim);
        cmp(what, y, ref, n, 1e-5);
        B.ops->rmsnorm(&B, x, x, w, rows, dim, eps);
        snprintf(what, sizeof what, "rmsnorm in place %dx%d", rows, dim);
        cmp(what, x, ref, n, 1e-5);
        /* add_rmsnorm: the bits of add then rmsnorm, x and h */
        float *a = falloc(n), *x2 = falloc(n), *h = falloc(n);
        fill(a, n, -4, 4);
        memcpy(x2, x, n * sizeof *x);
        B.ops->add(&B, x2, a, n);
        B.ops->rmsnorm(&B, y, x2, w, rows, dim, eps);
        B.ops->add_rmsnorm(&B, x, h, a, w, rows, dim, eps);
        CHECK(!memcmp(x, x2, n * 4) && !memcmp(h, y, n * 4), "add_rmsnorm %dx%d: not add then rmsnorm", rows, dim);
        free(x); free(y); free(w); free(ref); free(a); free(x2); free(h);
    }
}

/* ---- rope --------------------------------------------------------------- */

/* One layout: nheads heads of head_dim values, head_stride apart, rows
 * row_stride apart (padding beyond the heads must stay untouched). */
static void rope_case(int ntok, int nheads, int head_dim, int pad, int rot_off,
                      int rot_dim, float mscale, int interleaved) {
    int head_stride = head_dim, row_stride = nheads * head_dim + pad, half = rot_dim / 2;
    size_t n = (size_t)ntok * row_stride;
    float *x = falloc(n), *x0 = falloc(n), *inv_freq = falloc(half);
    double *ref = dalloc(n);
    int32_t *pos = malloc(ntok * sizeof *pos);
    fill(x0, n, -2, 2);
    memcpy(x, x0, n * sizeof *x);
    for (int i = 0; i < half; i++) inv_freq[i] = powf(10000.0f, -2.0f * i / rot_dim);
    static const int32_t some[] = {0, 1, 17, 1000, 4095, 3, 131071};
    for (int t = 0; t < ntok; t++) pos[t] = some[t % 7] + t / 7;
    for (size_t i = 0; i < n; i++) ref[i] = x0[i];
    for (int t = 0; t < ntok; t++)
        for (int h = 0; h < nheads; h++) {
            size_t base = (size_t)t * row_stride + (size_t)h * head_stride + rot_off;
            for (int i = 0; i < half; i++) {
                /* The angle is rounded to fp32 as in transformers. */
                double th = (float)pos[t] * inv_freq[i];
                double c = cos(th) * mscale, s = sin(th) * mscale;
                size_t ia = interleaved ? base + 2 * i : base + i;
                size_t ib = interleaved ? ia + 1 : ia + half;
                ref[ia] = x0[ia] * c - x0[ib] * s;
                ref[ib] = x0[ib] * c + x0[ia] * s;
            }
        }
    B.ops->rope(&B, x, ntok, nheads, row_stride, head_stride, rot_off, rot_dim, pos,
                inv_freq, mscale, interleaved);
    char what[128];
    snprintf(what, sizeof what, "rope ntok=%d nh=%d hd=%d pad=%d off=%d rot=%d mscale=%g inter=%d", ntok,
             nheads, head_dim, pad, rot_off, rot_dim, mscale, interleaved);
    cmp(what, x, ref, n, 1e-5);
    /* Values outside the rotary parts are untouched, bit for bit. */
    size_t moved = 0;
    for (size_t i = 0; i < n; i++) {
        int col = (int)(i % row_stride), h = col / head_dim, in = col % head_dim;
        int rotary = h < nheads && in >= rot_off && in < rot_off + rot_dim;
        if (!rotary && memcmp(&x[i], &x0[i], sizeof *x) != 0) moved++;
    }
    CHECK(moved == 0, "%s: %zu values outside the rotary part changed", what, moved);
    if (mscale == 1.0f) {
        /* Identities: position 0 is the identity exactly; a rotation keeps
         * the norm of each pair. */
        size_t bad0 = 0, badn = 0;
        for (int t = 0; t < ntok; t++)
            for (int h = 0; h < nheads; h++) {
                size_t base = (size_t)t * row_stride + (size_t)h * head_stride + rot_off;
                for (int i = 0; i < half; i++) {
                    size_t ia = interleaved ? base + 2 * i : base + i;
                    size_t ib = interleaved ? ia + 1 : ia + half;
                    if (pos[t] == 0 && (x[ia] != x0[ia] || x[ib] != x0[ib])) bad0++;
                    double r0 = (double)x0[ia] * x0[ia] + (double)x0[ib] * x0[ib];
                    double r1 = (double)x[ia] * x[ia] + (double)x[ib] * x[ib];
                    if (!(fabs(r1 - r0) <= 1e-5 * (r0 + 1e-30) + 1e-12)) badn++;
                }
            }
        CHECK(bad0 == 0, "%s: position 0 changed %zu pairs", what, bad0);
        CHECK(badn == 0, "%s: %zu pairs changed norm", what, badn);
    }
    free(x); free(x0); free(inv_freq); free(ref); free(pos);
}

static void test_rope(void) {
    for (int inter = 0; inter < 2; inter++) {
        rope_case(5, 3, 24, 0, 0, 24, 1.0f, inter);    /* full rotation */
        rope_case(9, 3, 24, 5, 8, 16, 1.0f, inter);    /* MLA-like: rotary tail part */
        rope_case(7, 2, 32, 3, 0, 8, 1.3f, inter);     /* partial rotary, mscale */
        rope_case(3, 1, 2, 0, 0, 2, 0.7f, inter);      /* one pair */
        rope_case(64, 8, 64, 0, 0, 64, 1.0f, inter);   /* parallel path */
        rope_case(2, 2, 300, 1, 10, 280, 1.0f, inter); /* more pairs than one chunk */
    }
}

/* ---- attention ---------------------------------------------------------- */

typedef struct {
    int nh, nkv, dqk, dv, cap, nslot, ntok;
    const int32_t *slot, *pos;
    float qscale; /* spread of q: large values test the max subtraction */
    int equal_keys;
} att_case;

static void attention_case(const char *name, const att_case *c) {
    size_t sk = (size_t)c->cap * c->nkv * c->dqk + 7; /* odd strides on purpose */
    size_t sv = (size_t)c->cap * c->nkv * c->dv + 3;
    size_t nk = sk * c->nslot, nv = sv * c->nslot;
    size_t nq = (size_t)c->ntok * c->nh * c->dqk, no = (size_t)c->ntok * c->nh * c->dv;
    float *k = falloc(nk), *v = falloc(nv), *q = falloc(nq);
    float *o = falloc(no), *o1 = falloc(no), *o3 = falloc(no);
    double *ref = dalloc(no), *sc = dalloc(c->cap);
    /* Positions past the last one any token of the slot reaches are NaN, so
     * reading them shows up in the result. */
    for (size_t i = 0; i < nk; i++) k[i] = NAN;
    for (size_t i = 0; i < nv; i++) v[i] = NAN;
    for (int s = 0; s < c->nslot; s++) {
        int last = -1;
        for (int t = 0; t < c->ntok; t++)
            if (c->slot[t] == s && c->pos[t] > last) last = c->pos[t];
        for (int p = 0; p <= last; p++)
            for (int g = 0; g < c->nkv; g++) {
                float *kr = k + s * sk + ((size_t)p * c->nkv + g) * c->dqk;
                if (c->equal_keys) {
                    for (int i = 0; i < c->dqk; i++) kr[i] = 0.25f * (i % 5) - 0.5f;
                } else {
                    fill(kr, c->dqk, -1, 1);
                }
                fill(v + s * sv + ((size_t)p * c->nkv + g) * c->dv, c->dv, -1, 1);
            }
    }
    fill(q, nq, -c->qscale, c->qscale);
    float scale = 1.0f / sqrtf((float)c->dqk);
    int group = c->nh / c->nkv;
    for (int t = 0; t < c->ntok; t++)
        for (int h = 0; h < c->nh; h++) {
            int g = h / group, P = c->pos[t];
            const float *qv = q + ((size_t)t * c->nh + h) * c->dqk;
            const float *kb = k + c->slot[t] * sk + (size_t)g * c->dqk;
            const float *vb = v + c->slot[t] * sv + (size_t)g * c->dv;
            double mx = -INFINITY, sum = 0;
            for (int p = 0; p <= P; p++) {
                double d = 0;
                for (int i = 0; i < c->dqk; i++)
                    d += (double)qv[i] * kb[(size_t)p * c->nkv * c->dqk + i];
                sc[p] = d * scale;
                if (sc[p] > mx) mx = sc[p];
            }
            for (int p = 0; p <= P; p++) sum += sc[p] = exp(sc[p] - mx);
            for (int i = 0; i < c->dv; i++) {
                double a = 0;
                for (int p = 0; p <= P; p++) a += sc[p] * vb[(size_t)p * c->nkv * c->dv + i];
                ref[((size_t)t * c->nh + h) * c->dv + i] = a / sum;
            }
        }
    B.ops->attention(&B, o, q, k, v, c->slot, c->pos, c->ntok, c->nh, c->nkv, c->dqk, c->dv, sk, sv, scale);
    cmp(name, o, ref, no, 1e-5);
    B1.ops->attention(&B1, o1, q, k, v, c->slot, c->pos, c->ntok, c->nh, c->nkv, c->dqk, c->dv, sk, sv, scale);
    B3.ops->attention(&B3, o3, q, k, v, c->slot, c->pos, c->ntok, c->nh, c->nkv, c->dqk, c->dv, sk, sv, scale);
    same_bits(name, o1, o3, no * sizeof *o);
    if (c->equal_keys) {
        /* All scores equal: the output is the mean of the values 0..pos. */
        for (int t = 0; t < c->ntok; t++)
            for (int h = 0; h < c->nh; h++)
                for (int i = 0; i < c->dv; i++) {
                    double a = 0;
                    const float *vb = v + c->slot[t] * sv + (size_t)(h / group) * c->dv;
                    for (int p = 0; p <= c->pos[t]; p++)
                        a += vb[(size_t)p * c->nkv * c->dv + i];
                    ref[((size_t)t * c->nh + h) * c->dv + i] = a / (c->pos[t] + 1);
                }
        char what[96];
        snprintf(what, sizeof what, "%s: mean of values", name);
        cmp(what, o, ref, no, 1e-6);
    }
    free(k); free(v); free(q); free(o); free(o1); free(o3); free(ref); free(sc);
}

static void test_attention(void) {
    /* Three slots: one token at position 0, a prefill chunk 5..9, a decode
     * token at 37; tokens interleaved across slots. */
    static const int32_t slot[] = {1, 0, 2, 1, 1, 1, 1};
    static const int32_t pos[] = {5, 0, 37, 6, 7, 9, 8};
    att_case c = {8, 2, 48, 32, 40, 3, 7, slot, pos, 1.0f, 0};
    attention_case("attention gqa 8/2 dqk48 dv32", &c);
    c.equal_keys = 1;
    attention_case("attention equal keys", &c);
    c.equal_keys = 0;
    c.dqk = c.dv = 64;
    attention_case("attention dqk=dv=64", &c);
    c.nh = c.nkv = 3;
    c.dqk = 5, c.dv = 3;
    attention_case("attention mha odd dims", &c);
    /* Long rows cross the score chunks; large q makes the maximum move. */
    static const int32_t slot2[] = {0, 1, 0};
    static const int32_t pos2[] = {300, 1, 129};
    att_case d = {4, 1, 16, 24, 301, 2, 3, slot2, pos2, 6.0f, 0};
    attention_case("attention long, large scores", &d);
    static const int32_t slot3[] = {0};
    static const int32_t pos3[] = {0};
    att_case e = {1, 1, 1, 1, 1, 1, 1, slot3, pos3, 1.0f, 0};
    attention_case("attention 1x1", &e);
}

/* ---- element-wise ------------------------------------------------------- */

static void test_silu_mul(void) {
    static const int shapes[][2] = {{1, 1}, {3, 5}, {17, 1536}, {33, 1536}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int T = shapes[s][0], I = shapes[s][1];
        float *gu = falloc((size_t)T * 2 * I), *o = falloc((size_t)T * I);
        double *ref = dalloc((size_t)T * I);
        fill(gu, (size_t)T * 2 * I, -8, 8);
        if (I > 1) { /* exp(100) overflows: silu must still be -0 */
            gu[0] = -100.0f;
            gu[1] = 100.0f;
        }
        for (int t = 0; t < T; t++)
            for (int i = 0; i < I; i++) {
                double g = gu[(size_t)t * 2 * I + i], u = gu[(size_t)t * 2 * I + I + i];
                ref[(size_t)t * I + i] = g / (1.0 + exp(-g)) * u;
            }
        B.ops->silu_mul(&B, o, gu, T, I);
        char what[64];
        snprintf(what, sizeof what, "silu_mul T=%d I=%d", T, I);
        cmp(what, o, ref, (size_t)T * I, 1e-6);
        free(gu); free(o); free(ref);
    }
}

static void test_sigmoid_gate_add(void) {
    static const int shapes[][2] = {{1, 1}, {4, 7}, {40, 1000}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int T = shapes[s][0], dim = shapes[s][1];
        size_t n = (size_t)T * dim;
        float *y = falloc(n), *x = falloc(n), *g = falloc(T);
        double *ref = dalloc(n);
        fill(y, n, -1, 1);
        fill(x, n, -1, 1);
        fill(g, T, -6, 6);
        for (int t = 0; t < T; t++)
            for (int i = 0; i < dim; i++)
                ref[(size_t)t * dim + i] = y[(size_t)t * dim + i] +
                    x[(size_t)t * dim + i] / (1.0 + exp(-(double)g[t]));
        B.ops->sigmoid_gate_add(&B, y, x, g, T, dim);
        char what[64];
        snprintf(what, sizeof what, "sigmoid_gate_add T=%d dim=%d", T, dim);
        cmp(what, y, ref, n, 1e-6);
        free(y); free(x); free(g); free(ref);
    }
}

static void test_add_scale(void) {
    static const size_t sizes[] = {1, 1001, 100003};
    for (size_t s = 0; s < 3; s++) {
        size_t n = sizes[s], bad = 0;
        float *y = falloc(n), *x = falloc(n), *y0 = falloc(n);
        fill(y0, n, -1, 1);
        fill(x, n, -1, 1);
        memcpy(y, y0, n * sizeof *y);
        B.ops->add(&B, y, x, n);
        for (size_t i = 0; i < n; i++) bad += y[i] != y0[i] + x[i];
        CHECK(bad == 0, "add n=%zu: %zu elements differ from y + x", n, bad);
        memcpy(y, y0, n * sizeof *y);
        B.ops->scale(&B, y, 0.37f, n);
        bad = 0;
        for (size_t i = 0; i < n; i++) bad += y[i] != y0[i] * 0.37f;
        CHECK(bad == 0, "scale n=%zu: %zu elements differ from y * s", n, bad);
        free(y); free(x); free(y0);
    }
}

/* ---- gather / scatter --------------------------------------------------- */

static void test_gather_scatter(void) {
    static const int shapes[][3] = {{1, 1, 1}, {10, 7, 33}, {4, 20, 5000}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int ntab = shapes[s][0], rows = shapes[s][1], dim = shapes[s][2];
        size_t nt = (size_t)ntab * dim, nr = (size_t)rows * dim;
        float *table = falloc(nt), *out = falloc(nr), *w = falloc(rows);
        float *d = falloc(nt), *d1 = falloc(nt), *d3 = falloc(nt);
        double *ref = dalloc(nt);
        int32_t *ids = malloc(rows * sizeof *ids);
        fill(table, nt, -1, 1);
        fill(w, rows, -2, 2);
        for (int r = 0; r < rows; r++) ids[r] = (r * 7 + 3) % ntab; /* repeats */
        B.ops->gather_rows(&B, out, table, ids, rows, dim);
        size_t bad = 0;
        for (int r = 0; r < rows; r++)
            bad += memcmp(out + (size_t)r * dim, table + (size_t)ids[r] * dim, dim * sizeof *out) != 0;
        CHECK(bad == 0, "gather_rows %dx%d: %zu rows wrong", rows, dim, bad);
        for (int weighted = 0; weighted < 2; weighted++) {
            fill(d, nt, -1, 1);
            memcpy(d1, d, nt * sizeof *d);
            memcpy(d3, d, nt * sizeof *d);
            for (size_t i = 0; i < nt; i++) ref[i] = d[i];
            for (int r = 0; r < rows; r++)
                for (int i = 0; i < dim; i++)
                    ref[(size_t)ids[r] * dim + i] += (weighted ? w[r] : 1.0) * out[(size_t)r * dim + i];
            const float *wp = weighted ? w : NULL;
            B.ops->scatter_add_rows(&B, d, out, ids, wp, rows, dim);
            char what[80];
            snprintf(what, sizeof what, "scatter_add_rows %dx%d weighted=%d", rows, dim, weighted);
            cmp(what, d, ref, nt, 1e-6);
            B1.ops->scatter_add_rows(&B1, d1, out, ids, wp, rows, dim);
            B3.ops->scatter_add_rows(&B3, d3, out, ids, wp, rows, dim);
            same_bits(what, d1, d3, nt * sizeof *d);
        }
        free(table); free(out); free(w); free(d); free(d1); free(d3); free(ref); free(ids);
    }
}

/* ---- zero, copy_rows, cache_write ---------------------------------------
 * Pure data movement, so exact: each op runs on a buffer of random guard
 * values with PAD floats on both sides of the region it may write, and the
 * whole buffer must equal the plain reference bit for bit: the written
 * elements hold the source, every other element keeps its guard. */

#define PAD 37

/* Elements of got that differ (bitwise) from want inside the written region
 * (mask 1) and outside it (mask 0); prints the first few of each. */
static void cmp_guarded(const char *what, const float *got, const float *want,
                        const unsigned char *mask, size_t n) {
    size_t bad_in = 0, bad_out = 0;
    for (size_t i = 0; i < n; i++) {
        if (memcmp(&got[i], &want[i], sizeof *got) == 0) continue;
        size_t *bad = mask[i] ? &bad_in : &bad_out;
        if (*bad < 3)
            fprintf(stderr, "  %s: [%zu] %s: got %.9g want %.9g\n", what, i,
                    mask[i] ? "written" : "guard", got[i], want[i]);
        (*bad)++;
    }
    CHECK(bad_in == 0, "%s: %zu written elements differ from the reference", what, bad_in);
    CHECK(bad_out == 0, "%s: %zu elements outside the region were touched", what, bad_out);
}

static void test_zero(void) {
    static const size_t sizes[] = {0, 1, 7, 1001, 100003};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s], tot = n + 2 * PAD;
        float *y = falloc(tot), *want = falloc(tot);
        unsigned char *mask = calloc(tot, 1);
        fill(y, tot, -1, 1);
        memcpy(want, y, tot * sizeof *y);
        for (size_t i = PAD; i < PAD + n; i++) want[i] = 0.0f, mask[i] = 1;
        B.ops->zero(&B, y + PAD, n);
        char what[64];
        snprintf(what, sizeof what, "zero n=%zu", n);
        cmp_guarded(what, y, want, mask, tot);
        free(y); free(want); free(mask);
    }
}

static void test_copy_rows(void) {
    static const struct { int rows, cols; size_t dst_ld, src_ld; } S[] = {
        {1, 1, 1, 1},    {3, 5, 5, 5},      {7, 13, 20, 17},  {5, 33, 33, 64},
        {17, 1, 3, 1},   {2, 4097, 4100, 4097}, {0, 5, 8, 8} /* no rows */,
        {4, 0, 8, 8} /* no cols */,
    };
    for (size_t s = 0; s < sizeof S / sizeof S[0]; s++) {
        int rows = S[s].rows, cols = S[s].cols;
        size_t dld = S[s].dst_ld, sld = S[s].src_ld;
        size_t nd = (size_t)rows * dld + 2 * PAD, ns = (size_t)rows * sld + 1;
        float *dst = falloc(nd), *want = falloc(nd), *src = falloc(ns), *src0 = falloc(ns);
        unsigned char *mask = calloc(nd, 1);
        fill(dst, nd, -1, 1);
        fill(src, ns, 2, 3);
        memcpy(want, dst, nd * sizeof *dst);
        memcpy(src0, src, ns * sizeof *src);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) {
                size_t i = PAD + (size_t)r * dld + c;
                want[i] = src[(size_t)r * sld + c];
                mask[i] = 1;
            }
        B.ops->copy_rows(&B, dst + PAD, dld, src, sld, rows, cols);
        char what[96];
        snprintf(what, sizeof what, "copy_rows %dx%d dst_ld=%zu src_ld=%zu", rows, cols, dld, sld);
        cmp_guarded(what, dst, want, mask, nd);
        CHECK(memcmp(src, src0, ns * sizeof *src) == 0, "%s: source changed", what);
        free(dst); free(want); free(src); free(src0); free(mask);
    }
}

/* Cases: slots and positions in scrambled order, never the same (slot, pos)
 * twice; src_off places the source inside a wider row (q|k|v, c_kv|k_pe). */
typedef struct {
    const char *name;
    size_t row, col, dst_hs, src_ld, src_hs, src_off;
    int nslot, ctx, ntok, nheads, width;
    int32_t slot[8], pos[8];
} cw_case;

static const cw_case CW[] = {
    {"GQA k: 2 heads x 16, src in q|k|v", 32, 0, 16, 96, 16, 64, 3, 8, 5, 2, 16,
     {1, 0, 2, 1, 0}, {3, 7, 0, 2, 1}},
    {"odd: 3 heads x 7, col 5, dst_hs 8, src_hs 9", 29, 5, 8, 31, 9, 2, 2, 5, 6, 3, 7,
     {1, 1, 0, 1, 0, 0}, {4, 0, 2, 3, 1, 4}},
    {"MLA k_pe: src_hs 0 into 4 heads", 96, 16, 24, 40, 0, 32, 3, 6, 4, 4, 8,
     {2, 0, 1, 2}, {5, 0, 3, 1}},
    {"MLA latent: 1 head x 20, col 0", 28, 0, 0, 27, 0, 0, 2, 9, 7, 1, 20,
     {0, 1, 1, 0, 0, 1, 0}, {8, 0, 8, 2, 0, 5, 1}},
    {"decode: last and first positions", 12, 4, 4, 8, 4, 0, 4, 10, 4, 2, 3,
     {3, 0, 2, 1}, {9, 0, 9, 4}},
    {"ntok = 0", 16, 0, 8, 16, 8, 0, 2, 4, 0, 2, 8, {0}, {0}},
    {"nheads = 0", 16, 0, 8, 16, 8, 0, 2, 4, 2, 0, 8, {0, 1}, {1, 2}},
};

static void cache_write_case(const cw_case *c) {
    size_t ncache = (size_t)c->nslot * c->ctx * c->row + 2 * PAD;
    size_t nsrc = c->src_off + (size_t)(c->ntok > 0 ? c->ntok : 1) * c->src_ld;
    float *cache = falloc(ncache), *want = falloc(ncache);
    float *src = falloc(nsrc), *src0 = falloc(nsrc);
    unsigned char *mask = calloc(ncache, 1);
    fill(cache, ncache, -1, 1);
    fill(src, nsrc, 2, 3);
    memcpy(want, cache, ncache * sizeof *cache);
    memcpy(src0, src, nsrc * sizeof *src);
    const float *s = src + c->src_off;
    for (int t = 0; t < c->ntok; t++)
        for (int h = 0; h < c->nheads; h++)
            for (int i = 0; i < c->width; i++) {
                size_t d = PAD + ((size_t)c->slot[t] * c->ctx + c->pos[t]) * c->row + c->col +
                           h * c->dst_hs + i;
                want[d] = s[t * c->src_ld + h * c->src_hs + i];
                mask[d] = 1;
            }
    B.ops->cache_write(&B, cache + PAD, c->row, c->ctx, c->col, c->dst_hs, s, c->src_ld,
                       c->src_hs, c->slot, c->pos, c->ntok, c->nheads, c->width);
    char what[96];
    snprintf(what, sizeof what, "cache_write %s", c->name);
    cmp_guarded(what, cache, want, mask, ncache);
    CHECK(memcmp(src, src0, nsrc * sizeof *src) == 0, "%s: source changed", what);
    free(cache); free(want); free(src); free(src0); free(mask);
}

static void test_cache_write(void) {
    for (size_t c = 0; c < sizeof CW / sizeof CW[0]; c++) cache_write_case(&CW[c]);
}

/* ---- router ------------------------------------------------------------- */

typedef struct { double v; int i; } keyed;
static int by_value_desc(const void *a, const void *b) {
    const keyed *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return x->i - y->i;
}

/* Reference router for one token, by sorting.  Returns the smallest gap
 * between a chosen and a rejected key (expert or group), so the caller can
 * redraw inputs whose choice fp32 rounding could flip. */
static double route_ref(int32_t *idx, double *w, const float *l, const mr_route_params *p) {
    int ne = p->n_experts, k = p->top_k;
    keyed key[512], grp[512];
    double val[512], margin = INFINITY;
    if (p->scoring == MR_ROUTE_SOFTMAX) {
        double mx = -INFINITY, sum = 0;
        for (int e = 0; e < ne; e++) mx = fmax(mx, l[e]);
        for (int e = 0; e < ne; e++) sum += val[e] = exp(l[e] - mx);
        for (int e = 0; e < ne; e++) val[e] /= sum, key[e] = (keyed){val[e], e};
    } else {
        int ng = p->n_group > 1 ? p->n_group : 1, gsz = ne / ng;
        for (int e = 0; e < ne; e++) {
            val[e] = 1.0 / (1.0 + exp(-(double)l[e]));
            key[e] = (keyed){val[e] + (p->bias ? p->bias[e] : 0.0), e};
        }
        if (ng > 1 && p->topk_group < ng) {
            for (int g = 0; g < ng; g++) {
                keyed in[512];
                memcpy(in, key + g * gsz, gsz * sizeof *in);
                qsort(in, gsz, sizeof *in, by_value_desc);
                grp[g] = (keyed){in[0].v + (gsz > 1 ? in[1].v : 0.0), g};
            }
            qsort(grp, ng, sizeof *grp, by_value_desc);
            margin = grp[p->topk_group - 1].v - grp[p->topk_group].v;
            for (int j = p->topk_group; j < ng; j++) /* losing groups: 0, as transformers' masked_fill */
                for (int e = grp[j].i * gsz; e < (grp[j].i + 1) * gsz; e++)
                    key[e].v = 0.0;
        }
    }
    qsort(key, ne, sizeof *key, by_value_desc);
    if (k < ne) margin = fmin(margin, key[k - 1].v - key[k].v);
    double s = 0;
    for (int j = 0; j < k; j++) idx[j] = key[j].i, s += w[j] = val[key[j].i];
    for (int j = 0; j < k; j++) {
        if (p->norm_topk_prob) w[j] /= s + (p->scoring == MR_ROUTE_SOFTMAX ? 0.0 : 1e-20);
        w[j] *= p->routed_scaling;
    }
    return margin;
}

static void route_case(const char *name, mr_route_params p, int T, const float *given) {
    int ne = p.n_experts, k = p.top_k;
    float *l = falloc((size_t)T * ne), *w = falloc((size_t)T * k), *w3 = falloc((size_t)T * k);
    double *wref = dalloc((size_t)T * k);
    int32_t *idx = malloc((size_t)T * k * sizeof *idx), *idx3 = malloc((size_t)T * k * sizeof *idx);
    int32_t *iref = malloc((size_t)T * k * sizeof *iref);
    for (int t = 0; t < T; t++) {
        float *lt = l + (size_t)t * ne;
        if (given) memcpy(lt, given + (size_t)t * ne, ne * sizeof *lt);
        for (int tries = 0;; tries++) {
            if (!given) fill(lt, ne, -4, 4);
            double m = route_ref(iref + (size_t)t * k, wref + (size_t)t * k, lt, &p);
            if (given || m > 1e-4) break;
            if (tries == 100) { CHECK(0, "%s: cannot draw clear inputs", name); break; }
        }
    }
    B.ops->route(&B, idx, w, l, T, &p);
    size_t bad = 0;
    for (size_t i = 0; i < (size_t)T * k; i++)
        if (idx[i] != iref[i] && bad++ < 5)
            fprintf(stderr, "  %s: token %zu choice %zu: expert %d, want %d\n", name,
                    i / k, i % k, idx[i], iref[i]);
    CHECK(bad == 0, "%s: %zu expert ids differ from the reference", name, bad);
    if (bad == 0) cmp(name, w, wref, (size_t)T * k, 2e-6);
    B3.ops->route(&B3, idx3, w3, l, T, &p);
    same_bits(name, idx, idx3, (size_t)T * k * sizeof *idx);
    same_bits(name, w, w3, (size_t)T * k * sizeof *w);
    free(l); free(w); free(w3); free(wref); free(idx); free(idx3); free(iref);
}

static void test_route(void) {
    char name[96];
    /* Softmax routers: mixtral (8 experts, top 2, normalised), qwen2_moe
     * (60, top 4, not), qwen3_moe (128, top 8, normalised), top 1. */
    static const int sm[][3] = {{8, 2, 1}, {60, 4, 0}, {128, 8, 1}, {64, 1, 0}, {64, 64, 1}};
    for (size_t s = 0; s < sizeof sm / sizeof sm[0]; s++)
        for (int T = 1; T <= 600; T += 599) {
            mr_route_params p = {MR_ROUTE_SOFTMAX, sm[s][0], sm[s][1], sm[s][2], 1.0f, NULL, 1, 1};
            snprintf(name, sizeof name, "route softmax ne=%d k=%d norm=%d T=%d", sm[s][0], sm[s][1], sm[s][2], T);
            route_case(name, p, T, NULL);
        }
    /* Sigmoid group routers: deepseek_v3 (256 / 8 groups / keep 4 / top 8,
     * scaling 2.5), a small one, and one without groups or bias. */
    float bias[256];
    fill(bias, 256, -0.3f, 0.3f);
    static const int sg[][5] = {{256, 8, 8, 4, 1}, {64, 6, 8, 3, 0}, {16, 2, 4, 1, 1},
                                {64, 4, 1, 1, 1},  {32, 3, 4, 4, 0}};
    for (size_t s = 0; s < sizeof sg / sizeof sg[0]; s++)
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            mr_route_params p = {MR_ROUTE_SIGMOID_GROUP, sg[s][0], sg[s][1], sg[s][4],
                                 with_bias ? 2.5f : 1.0f, with_bias ? bias : NULL,
                                 sg[s][2], sg[s][3]};
            snprintf(name, sizeof name, "route sigmoid ne=%d k=%d groups %d/%d norm=%d bias=%d",
                     sg[s][0], sg[s][1], sg[s][3], sg[s][2], sg[s][4], with_bias);
            route_case(name, p, 300, NULL);
        }
    /* Group-limited: expert 1 has the best score, but its group's second
     * best is poor, so group 0 loses and expert 1 must not be chosen. */
    float l[16] = {-5, 5, -5, -5, 1.0f, 1.1f, 0.9f, 0.8f, 0.5f, 0.5f, 0.4f, 0.3f, -1, -1, -1, -1};
    mr_route_params pg = {MR_ROUTE_SIGMOID_GROUP, 16, 2, 1, 1.0f, NULL, 4, 2};
    route_case("route sigmoid losing group", pg, 1, l);
    int32_t idx[2];
    float w[2];
    B.ops->route(&B, idx, w, l, 1, &pg);
    CHECK(idx[0] == 5 && idx[1] == 4, "losing group: chose %d %d, want 5 4", idx[0], idx[1]);
    /* Ties go to the lower index. */
    float z[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    mr_route_params pt = {MR_ROUTE_SOFTMAX, 8, 3, 0, 1.0f, NULL, 1, 1};
    int32_t it[3];
    float wt[3];
    B.ops->route(&B, it, wt, z, 1, &pt);
    CHECK(it[0] == 0 && it[1] == 1 && it[2] == 2 && wt[0] == 0.125f && wt[2] == 0.125f,
          "softmax ties: chose %d %d %d weights %g %g %g", it[0], it[1], it[2], wt[0],
          wt[1], wt[2]);
    /* Tied groups go to the lower index too. */
    mr_route_params pz = {MR_ROUTE_SIGMOID_GROUP, 8, 3, 1, 1.0f, NULL, 4, 2};
    B.ops->route(&B, it, wt, z, 1, &pz);
    CHECK(it[0] == 0 && it[1] == 1 && it[2] == 2, "tied groups: chose %d %d %d, want 0 1 2",
          it[0], it[1], it[2]);
    pt.norm_topk_prob = 1;
    B.ops->route(&B, it, wt, z, 1, &pt);
    CHECK(fabsf(wt[0] + wt[1] + wt[2] - 1.0f) < 1e-6f, "normalised weights sum %g",
          wt[0] + wt[1] + wt[2]);
}

int main(void) {
    /* B last: OpenBLAS's thread count is process-wide and the last init sets it. */
    if (mr_backend_cpu_init(&B1, 1) != 0 || mr_backend_cpu_init(&B3, 3) != 0 ||
        mr_backend_cpu_init(&B, 0) != 0) {
        fprintf(stderr, "cpu backend init failed\n");
        return 1;
    }
    test_memory();
    test_matmul();
    test_matmul_small();
    test_blas_core();
    test_upload_bf16();
    test_matmul_bf16();
    test_matmul_fixed();
    test_rmsnorm();
    test_rope();
    test_attention();
    test_silu_mul();
    test_sigmoid_gate_add();
    test_add_scale();
    test_gather_scatter();
    test_zero();
    test_copy_rows();
    test_cache_write();
    test_route();
    mr_backend_cpu_free(&B1);
    mr_backend_cpu_free(&B3);
    mr_backend_cpu_free(&B);
    return mr_test_summary();
}
