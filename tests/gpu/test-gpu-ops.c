/* test-gpu-ops: every op of the CUDA backend against the CPU backend on the
 * same random inputs (odd sizes, grouped heads, MLA-like dqk != dv, prefill
 * and decode, repeated ids, both router modes), the bf16 launchers against
 * the CPU's fp32 products, and the block codecs against runtime/compress.c
 * byte for byte.  Prints one table row per case: op, shape, max error
 * relative to max |CPU result|, tolerance.
 *
 * Tolerances: fp32 ops 1e-5 (the two backends sum in different orders);
 * bf16 matmul 1e-2 against the CPU's fp32 product and 1e-5 against a double
 * product of the bf16-rounded inputs; gather, the codecs and the bf16
 * conversion exact; router ids exact; zero, copy_rows and cache_write exact
 * over the whole buffer, guard values around the written region included.
 *
 * Exits 77 (skipped) when there is no CUDA device.  Plain C, no MPI: it is
 * built by CMake (tests/gpu.cmake) or by tests/gpu/run.sh's plain command
 * lines, where -DMR_NO_OPENBLAS marks a CPU backend linked against the naive
 * GEMM of tests/gpu/naive-cblas.c instead of OpenBLAS. */
#include "harness.h"
#define MR_TEST_RAND_SEED 0x2545f4914f6cdd1dull
#include "test-rand.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda-backend.h"
#include "runtime/compress.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TOL_F32 1e-5
#define TOL_BF16 1e-2
#define MAX_LIVE 64

static mr_backend C; /* the reference: CPU backend */
static mr_backend G; /* under test: CUDA backend */

/* ---- helpers ------------------------------------------------------------ */

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "test-gpu-ops: out of host memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}
static float *falloc(size_t n) { return xmalloc(n * sizeof(float)); }
static float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Device buffers of the current case, freed together by gfree_all(). */
static void *live[MAX_LIVE];
static int nlive;

static void *gput(const void *host, size_t bytes) {
    void *d = G.ops->alloc(&G, bytes);
    CHECK(d != NULL && nlive < MAX_LIVE, "device alloc of %zu bytes", bytes);
    if (!d || nlive >= MAX_LIVE) exit(1);
    live[nlive++] = d;
    if (host) G.ops->upload(&G, d, host, bytes);
    return d;
}
static void gget(void *host, const void *dev, size_t bytes) {
    G.ops->download(&G, host, dev, bytes);
    G.ops->sync(&G);
}
static void gfree_all(void) {
    G.ops->sync(&G);
    for (int i = 0; i < nlive; i++) G.ops->free(&G, live[i]);
    nlive = 0;
}

static void row(const char *op, const char *shape, double err, double tol, int ok) {
    printf("%-22s %-46s %11.3e %9.1e  %s\n", op, shape, err, tol, ok ? "ok" : "FAIL");
}

/* max |g - c| / max |c| (absolute when c is all zero) against tol; prints
 * the row and the first mismatches. */
static void compare(const char *op, const char *shape, const float *g, const float *c, size_t n,
                    double tol) {
    double mx = 0.0, worst = 0.0;
    for (size_t i = 0; i < n; i++)
        if (fabs((double)c[i]) > mx) mx = fabs((double)c[i]);
    double den = mx > 0.0 ? mx : 1.0;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)g[i] - (double)c[i]) / den;
        if (!(e <= worst)) worst = e; /* NaN sticks */
        if (!(e <= tol)) {
            if (bad < 5)
                fprintf(stderr, "  %s %s: [%zu] gpu %.9g cpu %.9g\n", op, shape, i, g[i], c[i]);
            bad++;
        }
    }
    row(op, shape, worst, tol, bad == 0);
    CHECK(bad == 0, "%s %s: %zu of %zu elements off (max rel %.3g > %.1e)", op, shape, bad, n,
          worst, tol);
}

/* Bytes that differ, as a table row with tolerance 0. */
static void compare_bytes(const char *op, const char *shape, const void *g, const void *c,
                          size_t n) {
    const unsigned char *a = g, *b = c;
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i] && bad++ == 0) first = i;
    if (bad)
        fprintf(stderr, "  %s %s: first difference at byte %zu: gpu %02x cpu %02x\n", op, shape,
                first, a[first], b[first]);
    row(op, shape, (double)bad, 0.0, bad == 0);
    CHECK(bad == 0, "%s %s: %zu of %zu bytes differ", op, shape, bad, n);
}

static void expect_error(const char *what, const char *needle) {
    const char *e = mr_backend_cuda_error(&G);
    int ok = e && strstr(e, needle);
    printf("%-22s %-46s %11s %9s  %s\n", "error record", what, "-", "-", ok ? "ok" : "FAIL");
    CHECK(ok, "%s: error record '%s' lacks '%s'", what, e ? e : "(none)", needle);
    mr_backend_cuda_clear_error(&G);
}

/* ---- memory ------------------------------------------------------------- */

static void test_memory(void) {
    void *a = G.ops->alloc(&G, 0), *b = G.ops->alloc(&G, 0);
    CHECK(a && b && a != b, "alloc(0) gives distinct pointers (%p %p)", a, b);
    G.ops->free(&G, a);
    G.ops->free(&G, b);
    size_t n = 100003;
    float *h = falloc(n), *back = falloc(n);
    fill(h, n, -1, 1);
    float *d = gput(h, n * sizeof(float));
    gget(back, d, n * sizeof(float));
    compare_bytes("upload/download", "100003 floats", back, h, n * sizeof(float));
    gfree_all();
    free(h);
    free(back);
}

/* ---- matmul, fp32 and bf16 ---------------------------------------------- */

static const struct { int M, N, K, bias, acc; } MM[] = {
    {1, 1, 1, 0, 0},      {1, 37, 65, 1, 0},     {3, 64, 128, 0, 1},    {7, 129, 257, 1, 1},
    {33, 100, 300, 1, 0}, {64, 512, 1024, 0, 0}, {200, 999, 777, 1, 1},
};

/* y(M,N) = x(M,K) . w(N,K)^T (+ bias) in double, for the bf16 check. */
static void ref_matmul(double *y, const float *x, const float *w, const float *bias,
                       const float *y0, int M, int N, int K) {
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double s = (y0 ? y0[(size_t)m * N + n] : 0.0) + (bias ? bias[n] : 0.0);
            for (int k = 0; k < K; k++) s += (double)x[(size_t)m * K + k] * w[(size_t)n * K + k];
            y[(size_t)m * N + n] = s;
        }
}

static void test_matmul(void) {
    for (size_t c = 0; c < sizeof MM / sizeof MM[0]; c++) {
        int M = MM[c].M, N = MM[c].N, K = MM[c].K;
        size_t nx = (size_t)M * K, nw = (size_t)N * K, ny = (size_t)M * N;
        float *x = falloc(nx), *w = falloc(nw), *bias = falloc(N), *y0 = falloc(ny);
        float *yc = falloc(ny), *yg = falloc(ny);
        fill(x, nx, -1, 1);
        fill(w, nw, -1, 1);
        fill(bias, N, -1, 1);
        fill(y0, ny, -1, 1);
        char shape[96];
        snprintf(shape, sizeof shape, "M=%d N=%d K=%d%s%s", M, N, K, MM[c].bias ? " bias" : "",
                 MM[c].acc ? " accumulate" : "");
        memcpy(yc, y0, ny * sizeof(float));
        C.ops->matmul(&C, yc, x, w, MM[c].bias ? bias : NULL, M, N, K, MM[c].acc);
        float *dx = gput(x, nx * 4), *dw = gput(w, nw * 4), *db = gput(bias, (size_t)N * 4);
        float *dy = gput(y0, ny * 4);
        G.ops->matmul(&G, dy, dx, dw, MM[c].bias ? db : NULL, M, N, K, MM[c].acc);
        gget(yg, dy, ny * 4);
        compare("matmul", shape, yg, yc, ny, TOL_F32);

        /* bf16 weights: against the fp32 product, and exactly-ish against
         * the product of the rounded inputs (fp32 sums of exact products). */
        uint16_t *dwb = gput(NULL, nw * 2);
        G.ops->upload_bf16(&G, dwb, w, nw);
        G.ops->upload(&G, dy, y0, ny * 4);
        G.ops->matmul_bf16(&G, dy, dx, dwb, MM[c].bias ? db : NULL, M, N, K, MM[c].acc);
        gget(yg, dy, ny * 4);
        compare("matmul_bf16 vs fp32", shape, yg, yc, ny, TOL_BF16);
        /* the CPU backend's bf16 op (what the model runs on a CPU) */
        uint16_t *wb = xmalloc(nw * 2);
        C.ops->upload_bf16(&C, wb, w, nw);
        memcpy(yc, y0, ny * sizeof(float));
        C.ops->matmul_bf16(&C, yc, x, wb, MM[c].bias ? bias : NULL, M, N, K, MM[c].acc);
        compare("matmul_bf16 vs cpu op", shape, yg, yc, ny, TOL_F32);
        free(wb);
        float *xr = falloc(nx), *wr = falloc(nw), *yr = falloc(ny);
        double *yd = xmalloc(ny * sizeof(double));
        for (size_t i = 0; i < nx; i++) xr[i] = bf16_to_f32(mr_f32_to_bf16(x[i]));
        for (size_t i = 0; i < nw; i++) wr[i] = bf16_to_f32(mr_f32_to_bf16(w[i]));
        ref_matmul(yd, xr, wr, MM[c].bias ? bias : NULL, MM[c].acc ? y0 : NULL, M, N, K);
        for (size_t i = 0; i < ny; i++) yr[i] = (float)yd[i];
        compare("matmul_bf16 vs bf16 in", shape, yg, yr, ny, TOL_F32);
        gfree_all();
        free(x), free(w), free(bias), free(y0), free(yc), free(yg);
        free(xr), free(wr), free(yr), free(yd);
    }
}

/* The deterministic mode's product: the CPU backend's bits exactly, fp32
 * and bf16 weights, whole sums and per-block sums (block_stride). */
static void test_matmul_fixed(void) {
    static const struct {
        int M, N, K, kc, bias, blocks;
    } F[] = {{1, 1, 1, 1, 0, 0},       {1, 37, 100, 8, 1, 0},    {3, 5, 1000, 256, 1, 0}, {70, 33, 777, 100, 0, 0},
             {5, 17, 8192, 8192, 1, 0}, {2, 9, 4099, 1024, 0, 0}, {7, 11, 301, 64, 0, 1},  {1, 24, 2048, 512, 0, 1}};
    for (size_t c = 0; c < sizeof F / sizeof F[0]; c++)
        for (int bf = 0; bf < 2; bf++) {
            int M = F[c].M, N = F[c].N, K = F[c].K, kc = F[c].kc, nb = (K + kc - 1) / kc;
            size_t nx = (size_t)M * K, nw = (size_t)N * K, ny = (size_t)M * N * (F[c].blocks ? nb : 1);
            size_t bs = F[c].blocks ? (size_t)M * N : 0;
            float *x = falloc(nx), *w = falloc(nw), *bias = falloc(N), *yc = falloc(ny), *yg = falloc(ny);
            uint16_t *wb = xmalloc(nw * 2);
            fill(x, nx, -1, 1);
            fill(w, nw, -1, 1);
            fill(bias, N, -1, 1);
            for (size_t i = 0; i < nw; i++) wb[i] = mr_f32_to_bf16(w[i]);
            const void *wh = bf ? (const void *)wb : (const void *)w;
            float *dx = gput(x, nx * 4), *db = gput(bias, (size_t)N * 4), *dy = gput(NULL, ny * 4);
            void *dw = gput(wh, nw * (bf ? 2 : 4));
            const float *bp = F[c].bias ? bias : NULL, *dbp = F[c].bias ? db : NULL;
            if (bf) C.ops->reserve_bf16(&C, M, K);
            C.ops->matmul_fixed(&C, yc, x, wh, bf, bp, M, N, K, kc, bs);
            G.ops->matmul_fixed(&G, dy, dx, dw, bf, dbp, M, N, K, kc, bs);
            gget(yg, dy, ny * 4);
            char shape[64];
            snprintf(shape, sizeof shape, "%dx%dx%d kc %d%s%s%s", M, N, K, kc, bf ? " bf16" : "",
                     F[c].bias ? " bias" : "", F[c].blocks ? " blocks" : "");
            compare_bytes("matmul_fixed bits", shape, yg, yc, ny * 4);
            gfree_all();
            free(x), free(w), free(bias), free(yc), free(yg), free(wb);
        }
}

static void test_bf16_convert(void) {
    size_t n = 4099;
    float *x = falloc(n);
    fill(x, n, -3, 3);
    const float special[] = {0.0f, -0.0f, 1.0f, INFINITY, -INFINITY, NAN, 1.00390625f /* tie */,
                             1.01171875f /* tie, odd */, 3.4e38f, 1e-40f, -1e-45f};
    memcpy(x, special, sizeof special);
    uint16_t *want = xmalloc(n * 2), *got = xmalloc(n * 2);
    for (size_t i = 0; i < n; i++) want[i] = mr_f32_to_bf16(x[i]);
    uint16_t *d = gput(NULL, n * 2);
    mr_cuda_upload_bf16(&G, d, x, n);
    gget(got, d, n * 2);
    compare_bytes("upload_bf16", "4099 values incl. inf, NaN, ties", got, want, n * 2);
    float *dx = gput(x, n * 4);
    mr_cuda_convert_bf16(&G, d, dx, n);
    gget(got, d, n * 2);
    compare_bytes("convert_bf16", "4099 values, device to device", got, want, n * 2);
    gfree_all();
    free(x), free(want), free(got);
}

/* The scratch is never grown inside an op: too small is an error. */
static void test_scratch(void) {
    int M = 4097, K = 4096;
    mr_cuda_matmul_bf16(&G, NULL, NULL, NULL, NULL, M, 8, K, 0);
    expect_error("matmul_bf16 scratch too small", "mr_backend_cuda_reserve");
    int st = G.ops->reserve_bf16(&G, M, K);
    CHECK(st == 0, "reserve_bf16: %s", mr_backend_cuda_error(&G));
}

/* ---- row-wise and element-wise ------------------------------------------ */

static void test_rmsnorm(void) {
    static const int S[][2] = {{1, 1}, {3, 7}, {5, 64}, {4, 4096}, {17, 5000}, {8, 128}};
    for (size_t c = 0; c < sizeof S / sizeof S[0]; c++) {
        int rows = S[c][0], dim = S[c][1], inplace = c == 5;
        size_t n = (size_t)rows * dim;
        float *x = falloc(n), *w = falloc(dim), *yc = falloc(n), *yg = falloc(n);
        fill(x, n, -2, 2);
        fill(w, dim, 0.5f, 1.5f);
        C.ops->rmsnorm(&C, yc, x, w, rows, dim, 1e-6f);
        float *dx = gput(x, n * 4), *dw = gput(w, (size_t)dim * 4);
        float *dy = inplace ? dx : gput(NULL, n * 4);
        G.ops->rmsnorm(&G, dy, dx, dw, rows, dim, 1e-6f);
        gget(yg, dy, n * 4);
        char shape[64];
        snprintf(shape, sizeof shape, "rows=%d dim=%d%s", rows, dim, inplace ? " in place" : "");
        compare("rmsnorm", shape, yg, yc, n, TOL_F32);
        gfree_all();
        free(x), free(w), free(yc), free(yg);
    }
}

/* add_rmsnorm on the device: x exact (one rounded add), h within fp32
 * tolerance of the CPU's; and the bits of the device's own add then
 * rmsnorm. */
static void test_add_rmsnorm(void) {
    static const int S[][2] = {{1, 1}, {3, 7}, {5, 64}, {4, 4096}, {17, 5000}, {2, 7168}};
    for (size_t c = 0; c < sizeof S / sizeof S[0]; c++) {
        int rows = S[c][0], dim = S[c][1];
        size_t n = (size_t)rows * dim;
        float *x = falloc(n), *a = falloc(n), *w = falloc(dim), *hc = falloc(n), *hg = falloc(n), *xg = falloc(n);
        float *h2 = falloc(n);
        fill(x, n, -2, 2);
        fill(a, n, -2, 2);
        fill(w, dim, 0.5f, 1.5f);
        float *dx = gput(x, n * 4), *da = gput(a, n * 4), *dw = gput(w, (size_t)dim * 4), *dh = gput(NULL, n * 4);
        float *dx2 = gput(x, n * 4), *dh2 = gput(NULL, n * 4);
        C.ops->add_rmsnorm(&C, x, hc, a, w, rows, dim, 1e-6f);
        G.ops->add_rmsnorm(&G, dx, dh, da, dw, rows, dim, 1e-6f);
        G.ops->add(&G, dx2, da, n);
        G.ops->rmsnorm(&G, dh2, dx2, dw, rows, dim, 1e-6f);
        gget(xg, dx, n * 4);
        gget(hg, dh, n * 4);
        gget(h2, dh2, n * 4);
        char shape[64];
        snprintf(shape, sizeof shape, "rows=%d dim=%d", rows, dim);
        CHECK(memcmp(xg, x, n * 4) == 0, "add_rmsnorm %s: x differs from the CPU's sum", shape);
        compare("add_rmsnorm", shape, hg, hc, n, TOL_F32);
        CHECK(memcmp(hg, h2, n * 4) == 0, "add_rmsnorm %s: not the bits of add then rmsnorm", shape);
        gfree_all();
        free(x), free(a), free(w), free(hc), free(hg), free(xg), free(h2);
    }
}

static void test_add_scale(void) {
    static const size_t S[] = {1, 1000, (1u << 20) + 3};
    for (size_t c = 0; c < 3; c++) {
        size_t n = S[c];
        float *x = falloc(n), *y = falloc(n), *yg = falloc(n);
        fill(x, n, -1, 1);
        fill(y, n, -1, 1);
        float *dx = gput(x, n * 4), *dy = gput(y, n * 4);
        char shape[64];
        snprintf(shape, sizeof shape, "n=%zu", n);
        C.ops->add(&C, y, x, n);
        G.ops->add(&G, dy, dx, n);
        gget(yg, dy, n * 4);
        compare("add", shape, yg, y, n, TOL_F32);
        C.ops->scale(&C, y, -0.37f, n);
        G.ops->scale(&G, dy, -0.37f, n);
        gget(yg, dy, n * 4);
        compare("scale", shape, yg, y, n, TOL_F32);
        gfree_all();
        free(x), free(y), free(yg);
    }
}

static void test_gather_scatter(void) {
    /* gather: repeated ids */
    static const int S[][3] = {{100, 13, 65}, {7, 20, 1}, {1000, 64, 4096}}; /* vocab rows dim */
    for (size_t c = 0; c < 3; c++) {
        int V = S[c][0], rows = S[c][1], dim = S[c][2];
        size_t nt = (size_t)V * dim, no = (size_t)rows * dim;
        float *t = falloc(nt), *oc = falloc(no), *og = falloc(no);
        int32_t *ids = xmalloc((size_t)rows * 4);
        fill(t, nt, -1, 1);
        for (int r = 0; r < rows; r++) ids[r] = r % 3 == 2 ? ids[r - 1] : irand(V);
        C.ops->gather_rows(&C, oc, t, ids, rows, dim);
        float *dt = gput(t, nt * 4), *dout = gput(NULL, no * 4);
        int32_t *dids = gput(ids, (size_t)rows * 4);
        G.ops->gather_rows(&G, dout, dt, dids, rows, dim);
        gget(og, dout, no * 4);
        char shape[64];
        snprintf(shape, sizeof shape, "table %dx%d, %d rows, repeats", V, dim, rows);
        compare("gather_rows", shape, og, oc, no, 0.0);
        gfree_all();
        free(t), free(oc), free(og), free(ids);
    }
    /* scatter: ids repeat; weights or none */
    static const int Q[][4] = {{50, 10, 33, 1}, {300, 64, 4096, 0}, {17, 3, 1, 1}, {1000, 40, 2048, 1}};
    for (size_t c = 0; c < 4; c++) {
        int rows = Q[c][0], ndst = Q[c][1], dim = Q[c][2], weighted = Q[c][3];
        size_t ns = (size_t)rows * dim, nd = (size_t)ndst * dim;
        float *src = falloc(ns), *d0 = falloc(nd), *dc = falloc(nd), *dg = falloc(nd);
        float *dg2 = falloc(nd), *wt = falloc(rows);
        int32_t *ids = xmalloc((size_t)rows * 4);
        fill(src, ns, -1, 1);
        fill(d0, nd, -1, 1);
        fill(wt, rows, 0, 1);
        for (int r = 0; r < rows; r++) ids[r] = irand(ndst);
        memcpy(dc, d0, nd * 4);
        C.ops->scatter_add_rows(&C, dc, src, ids, weighted ? wt : NULL, rows, dim);
        float *dsrc = gput(src, ns * 4), *ddst = gput(d0, nd * 4), *dw = gput(wt, (size_t)rows * 4);
        int32_t *dids = gput(ids, (size_t)rows * 4);
        G.ops->scatter_add_rows(&G, ddst, dsrc, dids, weighted ? dw : NULL, rows, dim);
        gget(dg, ddst, nd * 4);
        G.ops->upload(&G, ddst, d0, nd * 4);
        G.ops->scatter_add_rows(&G, ddst, dsrc, dids, weighted ? dw : NULL, rows, dim);
        gget(dg2, ddst, nd * 4);
        char shape[80];
        snprintf(shape, sizeof shape, "%d rows into %d, dim=%d%s", rows, ndst, dim,
                 weighted ? " weighted" : "");
        compare("scatter_add_rows", shape, dg, dc, nd, TOL_F32);
        compare_bytes("scatter_add_rows rerun", shape, dg2, dg, nd * 4);
        if (memcmp(dg, dc, nd * 4) != 0)
            printf("  (note: scatter_add_rows %s is not bit-identical to the CPU)\n", shape);
        gfree_all();
        free(src), free(d0), free(dc), free(dg), free(dg2), free(wt), free(ids);
    }
}

static void test_activations(void) {
    static const int S[][2] = {{5, 7}, {64, 1408}, {3, 4096}};
    for (size_t c = 0; c < 3; c++) {
        int T = S[c][0], ni = S[c][1];
        size_t n = (size_t)T * ni;
        float *gu = falloc(2 * n), *oc = falloc(n), *og = falloc(n), *x = falloc(n);
        float *g = falloc(T), *y = falloc(n);
        fill(gu, 2 * n, -6, 6);
        fill(x, n, -1, 1);
        fill(y, n, -1, 1);
        fill(g, T, -4, 4);
        char shape[64];
        snprintf(shape, sizeof shape, "T=%d inter=%d", T, ni);
        C.ops->silu_mul(&C, oc, gu, T, ni);
        float *dgu = gput(gu, 2 * n * 4), *dout = gput(NULL, n * 4);
        G.ops->silu_mul(&G, dout, dgu, T, ni);
        gget(og, dout, n * 4);
        compare("silu_mul", shape, og, oc, n, TOL_F32);
        snprintf(shape, sizeof shape, "T=%d dim=%d", T, ni);
        float *dx = gput(x, n * 4), *dy = gput(y, n * 4), *dg = gput(g, (size_t)T * 4);
        C.ops->sigmoid_gate_add(&C, y, x, g, T, ni);
        G.ops->sigmoid_gate_add(&G, dy, dx, dg, T, ni);
        gget(og, dy, n * 4);
        compare("sigmoid_gate_add", shape, og, y, n, TOL_F32);
        gfree_all();
        free(gu), free(oc), free(og), free(x), free(g), free(y);
    }
}

/* ---- zero, copy_rows, cache_write ---------------------------------------
 * Data movement, so bit-exact.  The destination starts as random guard
 * values in [0.5, 1] with PAD floats before and after the region the op may
 * write (sources are in [2, 3], so the CPU result tells which elements an op
 * wrote: those that changed).  Both backends start from the same bytes and
 * the whole buffer must match: the written elements and the guards. */

#define PAD 37

/* Whole buffers: g (CUDA) against c (CPU), init the common start. */
static void compare_guarded(const char *op, const char *shape, const float *g, const float *c,
                            const float *init, size_t n) {
    size_t bad_in = 0, bad_out = 0;
    for (size_t i = 0; i < n; i++) {
        if (memcmp(&g[i], &c[i], sizeof *g) == 0) continue;
        int written = memcmp(&c[i], &init[i], sizeof *c) != 0;
        size_t *bad = written ? &bad_in : &bad_out;
        if (*bad < 3)
            fprintf(stderr, "  %s %s: [%zu] %s: gpu %.9g cpu %.9g\n", op, shape, i,
                    written ? "written" : "guard", g[i], c[i]);
        (*bad)++;
    }
    row(op, shape, (double)(bad_in + bad_out), 0.0, bad_in + bad_out == 0);
    CHECK(bad_in == 0, "%s %s: %zu written elements differ from the CPU", op, shape, bad_in);
    CHECK(bad_out == 0, "%s %s: %zu guard elements changed", op, shape, bad_out);
}

static void test_zero(void) {
    static const size_t S[] = {0, 1, 255, 256, 257, (1u << 20) + 3};
    for (size_t c = 0; c < sizeof S / sizeof S[0]; c++) {
        size_t n = S[c], tot = n + 2 * PAD;
        float *init = falloc(tot), *yc = falloc(tot), *yg = falloc(tot);
        fill(init, tot, 0.5f, 1);
        memcpy(yc, init, tot * 4);
        float *dy = gput(init, tot * 4);
        C.ops->zero(&C, yc + PAD, n);
        G.ops->zero(&G, dy + PAD, n);
        gget(yg, dy, tot * 4);
        char shape[64];
        snprintf(shape, sizeof shape, "n=%zu", n);
        compare_guarded("zero", shape, yg, yc, init, tot);
        gfree_all();
        free(init), free(yc), free(yg);
    }
}

static void test_copy_rows(void) {
    static const struct { int rows, cols; size_t dst_ld, src_ld; } S[] = {
        {1, 1, 1, 1},       {3, 5, 5, 5},          {7, 13, 20, 17},   {5, 33, 33, 64},
        {17, 1, 3, 1},      {64, 576, 1152, 600},  {3, 4097, 4100, 5000},
        {0, 5, 8, 8} /* no rows */, {4, 0, 8, 8} /* no cols */,
    };
    for (size_t c = 0; c < sizeof S / sizeof S[0]; c++) {
        int rows = S[c].rows, cols = S[c].cols;
        size_t dld = S[c].dst_ld, sld = S[c].src_ld;
        size_t nd = (size_t)rows * dld + 2 * PAD, ns = (size_t)rows * sld + 1;
        float *init = falloc(nd), *dc = falloc(nd), *dg = falloc(nd);
        float *src = falloc(ns), *sg = falloc(ns);
        fill(init, nd, 0.5f, 1);
        fill(src, ns, 2, 3);
        memcpy(dc, init, nd * 4);
        float *ddst = gput(init, nd * 4), *dsrc = gput(src, ns * 4);
        C.ops->copy_rows(&C, dc + PAD, dld, src, sld, rows, cols);
        G.ops->copy_rows(&G, ddst + PAD, dld, dsrc, sld, rows, cols);
        gget(dg, ddst, nd * 4);
        gget(sg, dsrc, ns * 4);
        char shape[80];
        snprintf(shape, sizeof shape, "%dx%d dst_ld=%zu src_ld=%zu", rows, cols, dld, sld);
        compare_guarded("copy_rows", shape, dg, dc, init, nd);
        CHECK(memcmp(sg, src, ns * 4) == 0, "copy_rows %s: the source changed", shape);
        gfree_all();
        free(init), free(dc), free(dg), free(src), free(sg);
    }
}

/* src_off places the source inside a wider row (q|k|v, c_kv|k_pe); the
 * (slot, pos) pairs are distinct and in random order. */
static void test_cache_write(void) {
    static const struct {
        const char *what;
        size_t row, col, dst_hs, src_ld, src_hs, src_off;
        int nslot, ctx, ntok, nheads, width;
    } W[] = {
        {"GQA k: 2 heads x 16, src in q|k|v", 32, 0, 16, 96, 16, 64, 3, 8, 5, 2, 16},
        {"odd: 3 heads x 7, col 5, hs 8/9", 29, 5, 8, 31, 9, 2, 2, 5, 6, 3, 7},
        {"MLA k_pe: src_hs 0 into 4 heads", 96, 16, 24, 40, 0, 32, 3, 6, 4, 4, 8},
        {"MLA latent: 1 head x 576 (> 256 threads)", 576, 0, 0, 600, 0, 0, 2, 40, 33, 1, 576},
        {"prefill: 64 tokens, 128 heads x 64", 8192, 0, 64, 3 * 8192, 64, 8192, 2, 100, 64, 128, 64},
        {"width 1, 5 heads, col 1, dst_hs 3", 16, 1, 3, 5, 1, 0, 2, 7, 9, 5, 1},
        {"ntok = 0", 16, 0, 8, 16, 8, 0, 2, 4, 0, 2, 8},
        {"nheads = 0", 16, 0, 8, 16, 8, 0, 2, 4, 2, 0, 8},
    };
    for (size_t c = 0; c < sizeof W / sizeof W[0]; c++) {
        int ntok = W[c].ntok, nsp = W[c].nslot * W[c].ctx;
        size_t ncache = (size_t)nsp * W[c].row + 2 * PAD;
        size_t nsrc = W[c].src_off + (size_t)(ntok > 0 ? ntok : 1) * W[c].src_ld;
        float *init = falloc(ncache), *kc = falloc(ncache), *kg = falloc(ncache);
        float *src = falloc(nsrc), *sg = falloc(nsrc);
        int32_t *perm = xmalloc((size_t)nsp * 4), *slot = xmalloc((size_t)nsp * 4);
        int32_t *pos = xmalloc((size_t)nsp * 4);
        for (int i = 0; i < nsp; i++) perm[i] = i;
        for (int i = nsp - 1; i > 0; i--) {
            int j = irand(i + 1);
            int32_t tmp = perm[i];
            perm[i] = perm[j], perm[j] = tmp;
        }
        for (int t = 0; t < nsp; t++) slot[t] = perm[t] / W[c].ctx, pos[t] = perm[t] % W[c].ctx;
        fill(init, ncache, 0.5f, 1);
        fill(src, nsrc, 2, 3);
        memcpy(kc, init, ncache * 4);
        float *dcache = gput(init, ncache * 4), *dsrc = gput(src, nsrc * 4);
        int32_t *dslot = gput(slot, (size_t)nsp * 4), *dpos = gput(pos, (size_t)nsp * 4);
        C.ops->cache_write(&C, kc + PAD, W[c].row, W[c].ctx, W[c].col, W[c].dst_hs,
                           src + W[c].src_off, W[c].src_ld, W[c].src_hs, slot, pos, ntok,
                           W[c].nheads, W[c].width);
        G.ops->cache_write(&G, dcache + PAD, W[c].row, W[c].ctx, W[c].col, W[c].dst_hs,
                           dsrc + W[c].src_off, W[c].src_ld, W[c].src_hs, dslot, dpos, ntok,
                           W[c].nheads, W[c].width);
        gget(kg, dcache, ncache * 4);
        gget(sg, dsrc, nsrc * 4);
        compare_guarded("cache_write", W[c].what, kg, kc, init, ncache);
        CHECK(memcmp(sg, src, nsrc * 4) == 0, "cache_write %s: the source changed", W[c].what);
        gfree_all();
        free(init), free(kc), free(kg), free(src), free(sg), free(perm), free(slot), free(pos);
    }
    /* More heads than a grid's y dimension takes are refused, not run. */
    G.ops->cache_write(&G, NULL, 1, 1, 0, 1, NULL, 1, 1, NULL, NULL, 1, 65536, 1);
    expect_error("cache_write 65536 heads", "cuda-elementwise.cu");
}

/* The model reads backend memory directly only when the backend says so. */
static void test_host_memory(void) {
    int ok = G.ops->host_memory == 0 && C.ops->host_memory == 1;
    printf("%-22s %-46s %11s %9s  %s\n", "host_memory", "CUDA 0, CPU 1", "-", "-", ok ? "ok" : "FAIL");
    CHECK(G.ops->host_memory == 0, "CUDA backend host_memory = %d (want 0)", G.ops->host_memory);
    CHECK(C.ops->host_memory == 1, "CPU backend host_memory = %d (want 1)", C.ops->host_memory);
}

/* ---- rope and attention ------------------------------------------------- */

static void test_rope(void) {
    static const struct {
        const char *what;
        int ntok, nheads, row_stride, head_stride, rot_off, rot_dim, interleaved;
        float mscale;
    } R[] = {
        {"full, rotate_half", 5, 4, 256, 64, 0, 64, 0, 1.0f},
        {"full, interleaved", 5, 4, 256, 64, 0, 64, 1, 1.0f},
        {"partial 32 of 96, odd stride", 6, 3, 3 * 96 + 17, 96, 32, 32, 0, 1.3f},
        {"MLA k_pe: 1 head, stride 0", 7, 1, 64, 0, 48, 16, 1, 0.9f},
        {"MLA q: nope 16 + rope 8", 4, 3, 72, 24, 16, 8, 1, 1.1f},
    };
    static const int32_t P[] = {0, 1, 7, 100, 4000, 65535, 33};
    for (size_t c = 0; c < sizeof R / sizeof R[0]; c++) {
        int ntok = R[c].ntok, half = R[c].rot_dim / 2;
        size_t n = (size_t)ntok * R[c].row_stride;
        float *x = falloc(n), *xg = falloc(n), *inv = falloc(half);
        fill(x, n, -1, 1);
        for (int i = 0; i < half; i++) inv[i] = powf(10000.0f, -2.0f * i / (float)R[c].rot_dim);
        float *dx = gput(x, n * 4), *dinv = gput(inv, (size_t)half * 4);
        int32_t *dpos = gput(P, (size_t)ntok * 4);
        C.ops->rope(&C, x, ntok, R[c].nheads, R[c].row_stride, R[c].head_stride, R[c].rot_off,
                    R[c].rot_dim, P, inv, R[c].mscale, R[c].interleaved);
        G.ops->rope(&G, dx, ntok, R[c].nheads, R[c].row_stride, R[c].head_stride, R[c].rot_off,
                    R[c].rot_dim, dpos, dinv, R[c].mscale, R[c].interleaved);
        gget(xg, dx, n * 4);
        compare("rope", R[c].what, xg, x, n, TOL_F32);
        gfree_all();
        free(x), free(xg), free(inv);
    }
}

#define NSLOT 3
#define CTX 320

static void test_attention(void) {
    static const struct {
        const char *what;
        int ntok, nh, nkv, dqk, dv;
        int32_t slot[16], pos[16];
        float qmul;
    } A[] = {
        {"prefill, GQA 4/2, d=64", 9, 4, 2, 64, 64, {1, 1, 1, 1, 1, 1, 1, 1, 1},
         {0, 1, 2, 3, 4, 5, 6, 7, 8}, 1.0f},
        {"decode, MQA 8/1, d=128", 3, 8, 1, 128, 128, {2, 0, 1}, {100, 7, 300}, 1.0f},
        {"prefill chunk, MLA dqk=192 dv=128", 16, 4, 4, 192, 128,
         {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
         {5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}, 1.0f},
        {"decode, MLA dqk=192 dv=128", 4, 4, 4, 192, 128, {0, 1, 2, 1}, {319, 64, 65, 0}, 1.0f},
        {"odd: 6/3 heads, dqk=17 dv=33", 5, 6, 3, 17, 33, {0, 1, 2, 0, 1}, {0, 63, 64, 127, 200},
         1.0f},
        {"dv=512 (largest), 2/1 heads", 2, 2, 1, 64, 512, {2, 1}, {10, 150}, 1.0f},
        {"sharp scores (q x 16), GQA 4/2", 9, 4, 2, 64, 64, {1, 1, 1, 1, 1, 1, 1, 1, 1},
         {0, 1, 2, 30, 64, 65, 128, 200, 299}, 16.0f},
    };
    for (size_t c = 0; c < sizeof A / sizeof A[0]; c++) {
        int ntok = A[c].ntok, nh = A[c].nh, nkv = A[c].nkv, dqk = A[c].dqk, dv = A[c].dv;
        size_t ssk = (size_t)CTX * nkv * dqk, ssv = (size_t)CTX * nkv * dv;
        size_t nk = NSLOT * ssk, nv = NSLOT * ssv, nq = (size_t)ntok * nh * dqk;
        size_t no = (size_t)ntok * nh * dv;
        float *k = falloc(nk), *v = falloc(nv), *q = falloc(nq), *oc = falloc(no), *og = falloc(no);
        fill(k, nk, -1, 1);
        fill(v, nv, -1, 1);
        fill(q, nq, -A[c].qmul, A[c].qmul);
        float scale = 1.0f / sqrtf((float)dqk);
        C.ops->attention(&C, oc, q, k, v, A[c].slot, A[c].pos, ntok, nh, nkv, dqk, dv, ssk, ssv,
                         scale);
        float *dk = gput(k, nk * 4), *dvv = gput(v, nv * 4), *dq = gput(q, nq * 4);
        float *dout = gput(NULL, no * 4);
        int32_t *dslot = gput(A[c].slot, (size_t)ntok * 4), *dpos = gput(A[c].pos, (size_t)ntok * 4);
        G.ops->attention(&G, dout, dq, dk, dvv, dslot, dpos, ntok, nh, nkv, dqk, dv, ssk, ssv,
                         scale);
        gget(og, dout, no * 4);
        compare("attention", A[c].what, og, oc, no, TOL_F32);
        gfree_all();
        free(k), free(v), free(q), free(oc), free(og);
    }
    /* Shapes the kernel does not take are refused, not run. */
    G.ops->attention(&G, NULL, NULL, NULL, NULL, NULL, NULL, 1, 2, 1, 64, 513, 0, 0, 1.0f);
    expect_error("attention dv=513", "cuda-attention.cu");
}

/* ---- router ------------------------------------------------------------- */

static void test_route(void) {
    static const struct {
        const char *what;
        mr_route_scoring scoring;
        int T, ne, k, norm, ng, topk_group, with_bias, ties;
        float scaling, bias_shift;
    } R[] = {
        {"softmax 8 experts top-2, norm (mixtral)", MR_ROUTE_SOFTMAX, 33, 8, 2, 1, 1, 1, 0, 0, 1.0f, 0},
        {"softmax 60 top-4, no norm (qwen2_moe)", MR_ROUTE_SOFTMAX, 17, 60, 4, 0, 1, 1, 0, 0, 1.0f, 0},
        {"softmax 128 top-8, norm (qwen3_moe)", MR_ROUTE_SOFTMAX, 64, 128, 8, 1, 1, 1, 0, 0, 1.0f, 0},
        {"softmax 8 top-3, equal logits (ties)", MR_ROUTE_SOFTMAX, 6, 8, 3, 1, 1, 1, 0, 1, 1.0f, 0},
        {"sigmoid 256 top-8, 8 groups keep 4 (DSv3)", MR_ROUTE_SIGMOID_GROUP, 40, 256, 8, 1, 8, 4, 1, 0, 2.5f, 0},
        {"sigmoid 64 top-6, no groups, no norm", MR_ROUTE_SIGMOID_GROUP, 7, 64, 6, 0, 1, 1, 1, 0, 1.0f, 0},
        {"sigmoid 16, groups of one, keep 4, top-4", MR_ROUTE_SIGMOID_GROUP, 5, 16, 4, 1, 16, 4, 1, 0, 1.0f, 0},
        {"sigmoid 32, 4 groups keep 2, bias < 0", MR_ROUTE_SIGMOID_GROUP, 9, 32, 4, 1, 4, 2, 1, 0, 1.0f, -1.2f},
        {"sigmoid 32 top-4, equal logits (ties)", MR_ROUTE_SIGMOID_GROUP, 4, 32, 4, 1, 4, 2, 0, 1, 1.0f, 0},
    };
    for (size_t c = 0; c < sizeof R / sizeof R[0]; c++) {
        int T = R[c].T, ne = R[c].ne, k = R[c].k;
        size_t nl = (size_t)T * ne, no = (size_t)T * k;
        float *l = falloc(nl), *bias = falloc(ne), *wc = falloc(no), *wg = falloc(no);
        int32_t *ic = xmalloc(no * 4), *ig = xmalloc(no * 4);
        fill(l, nl, -3, 3);
        fill(bias, ne, -0.3f + R[c].bias_shift, 0.3f + R[c].bias_shift);
        if (R[c].ties)
            for (int t = 0; t < T; t++)
                for (int e = 0; e < ne; e++)
                    l[(size_t)t * ne + e] = t == 0 ? 0.5f : (float)((e * 7 + t) % 3);
        mr_route_params p = {R[c].scoring, ne, k, R[c].norm, R[c].scaling,
                             R[c].with_bias ? bias : NULL, R[c].ng, R[c].topk_group};
        C.ops->route(&C, ic, wc, l, T, &p);
        float *dl = gput(l, nl * 4), *db = gput(bias, (size_t)ne * 4), *dw = gput(NULL, no * 4);
        int32_t *di = gput(NULL, no * 4);
        p.bias = R[c].with_bias ? db : NULL;
        G.ops->route(&G, di, dw, dl, T, &p);
        gget(ig, di, no * 4);
        gget(wg, dw, no * 4);
        size_t bad = 0;
        for (size_t i = 0; i < no; i++) bad += ic[i] != ig[i];
        row("route ids", R[c].what, (double)bad, 0.0, bad == 0);
        CHECK(bad == 0, "route %s: %zu of %zu ids differ", R[c].what, bad, no);
        if (bad)
            for (size_t i = 0; i < no && i < 16; i++)
                fprintf(stderr, "  [%zu] gpu %d cpu %d\n", i, ig[i], ic[i]);
        compare("route weights", R[c].what, wg, wc, no, TOL_F32);
        gfree_all();
        free(l), free(bias), free(wc), free(wg), free(ic), free(ig);
    }
    mr_route_params bad = {MR_ROUTE_SOFTMAX, 8, 9, 1, 1.0f, NULL, 1, 1};
    G.ops->route(&G, NULL, NULL, NULL, 1, &bad);
    expect_error("route top_k > experts", "cuda-moe.cu");
}

/* ---- block codecs ------------------------------------------------------- */

/* Blocks of different kinds: random, zero, tiny (subnormal), huge, exact
 * halves of the int8 and int4 steps (ties), mixed magnitudes. */
static void fill_codec(float *x, size_t n, int block) {
    for (size_t b0 = 0, bi = 0; b0 < n; b0 += (size_t)block, bi++) {
        size_t k = n - b0 < (size_t)block ? n - b0 : (size_t)block;
        float *xb = x + b0;
        for (size_t i = 0; i < k; i++) {
            switch (bi % 7) {
            case 0: xb[i] = frand(-1, 1); break;
            case 1: xb[i] = (i & 1) ? -0.0f : 0.0f; break; /* signed zeros: decompress keeps the sign */
            case 2: xb[i] = frand(-1, 1) * 1e-38f; break;
            case 3: xb[i] = frand(-1, 1) * 1e30f; break;
            case 4: xb[i] = i == 0 ? 127.0f : (float)(irand(254) - 127) + 0.5f; break;
            case 5: xb[i] = i == 0 ? -7.0f : (float)(irand(14) - 7) + 0.5f; break;
            default: xb[i] = frand(-1, 1) * ldexpf(1.0f, irand(41) - 20); break;
            }
        }
    }
}

static void test_codecs(void) {
    static const char *names[] = {"none", "bf16", "fp16", "int8", "int4"};
    static const size_t sizes[] = {1, 31, 1000, 4096 + 17};
    static const int blocks[] = {32, 64, 256};
    for (int mode = 0; mode < MR_COMPRESSION_COUNT; mode++)
        for (int bi = 0; bi < 3; bi++) {
            int block = blocks[bi];
            size_t bad_c = 0, bad_d = 0, bad_w = 0, total = 0;
            for (int si = 0; si < 4; si++) {
                size_t n = sizes[si], nb = mr_compress_bytes((mr_compression)mode, n, block);
                float *x = falloc(n), *acc = falloc(n), *ac = falloc(n), *ag = falloc(n);
                unsigned char *pc = xmalloc(nb), *pg = xmalloc(nb);
                fill_codec(x, n, block);
                fill(acc, n, -1, 1);
                mr_compress((mr_compression)mode, block, x, n, pc);
                memcpy(ac, acc, n * 4);
                mr_decompress_add((mr_compression)mode, block, pc, n, ac);
                float *dx = gput(x, n * 4), *dacc = gput(acc, n * 4);
                void *dp = gput(NULL, nb);
                mr_cuda_compress(&G, NULL, mode, block, dx, n, dp);
                gget(pg, dp, nb);
                for (size_t i = 0; i < nb; i++) bad_c += pc[i] != pg[i];
                /* decompress the CPU's bytes, so a compress bug is not
                 * counted twice */
                G.ops->upload(&G, dp, pc, nb);
                mr_cuda_decompress_add(&G, NULL, mode, block, dp, n, dacc);
                gget(ag, dacc, n * 4);
                for (size_t i = 0; i < n; i++) bad_d += memcmp(&ac[i], &ag[i], 4) != 0;
                mr_decompress((mr_compression)mode, block, pc, n, ac); /* and writing, not adding */
                mr_cuda_decompress(&G, NULL, mode, block, dp, n, dacc);
                gget(ag, dacc, n * 4);
                for (size_t i = 0; i < n; i++) bad_w += memcmp(&ac[i], &ag[i], 4) != 0;
                total += nb;
                gfree_all();
                free(x), free(acc), free(ac), free(ag), free(pc), free(pg);
            }
            char shape[64];
            snprintf(shape, sizeof shape, "%s block %d, n=1,31,1000,4113 (%zu B)", names[mode],
                     block, total);
            row("compress bytes", shape, (double)bad_c, 0.0, bad_c == 0);
            CHECK(bad_c == 0, "compress %s: %zu bytes differ from the CPU codec", shape, bad_c);
            row("decompress_add bits", shape, (double)bad_d, 0.0, bad_d == 0);
            CHECK(bad_d == 0, "decompress_add %s: %zu floats differ from the CPU", shape, bad_d);
            row("decompress bits", shape, (double)bad_w, 0.0, bad_w == 0);
            CHECK(bad_w == 0, "decompress %s: %zu floats differ from the CPU", shape, bad_w);
        }
}

/* ---- main --------------------------------------------------------------- */

int main(void) {
    const char *why = NULL;
    int ndev = mr_cuda_device_count(&why);
    if (ndev <= 0) {
        printf("test-gpu-ops: no CUDA device (%s): skipped\n", why ? why : "none");
        return 77;
    }
    const char *env = getenv("MR_CUDA_DEVICE");
    int dev = env && *env ? atoi(env) : 0;
    char desc[256];
    mr_cuda_device_describe(dev, desc, sizeof desc);
    if (mr_backend_cuda_init(&G, dev) != 0) {
        fprintf(stderr, "test-gpu-ops: %s\n", mr_backend_cuda_error(&G));
        return 1;
    }
    mr_backend_cpu_init(&C, 0);
#ifdef MR_NO_OPENBLAS
    const char *ref = "CPU backend with the naive reference GEMM (no OpenBLAS)";
#else
    const char *ref = "CPU backend with OpenBLAS";
#endif
    printf("device %d: %s\nreference: %s, %d threads\n\n", dev, desc, ref, C.threads);
    printf("%-22s %-46s %11s %9s  %s\n", "op", "shape", "max rel err", "tolerance", "result");
    printf("%-22s %-46s %11s %9s  %s\n", "--", "-----", "-----------", "---------", "------");
    test_memory();
    test_matmul();
    test_matmul_fixed();
    test_bf16_convert();
    test_scratch();
    test_rmsnorm();
    test_add_rmsnorm();
    test_add_scale();
    test_gather_scatter();
    test_activations();
    test_host_memory();
    test_zero();
    test_copy_rows();
    test_cache_write();
    test_rope();
    test_attention();
    test_route();
    test_codecs();
    G.ops->sync(&G);
    const char *err = mr_backend_cuda_error(&G);
    CHECK(err == NULL, "CUDA backend error after the run: %s", err);
    mr_backend_cuda_free(&G);
    mr_backend_cpu_free(&C);
    printf("\n(compress rows count differing bytes, decompress_add rows differing floats, "
           "route ids differing ids: all must be 0)\n");
    return mr_test_summary();
}
