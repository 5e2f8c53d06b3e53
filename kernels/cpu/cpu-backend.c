/* The CPU backend: the ops table, host memory, the matrix product and the
 * element-wise and row-wise operations.  Rope and attention are in
 * cpu-attention.c, the MoE router in cpu-moe.c.
 *
 * Threads: one OpenMP team of b->threads does all the parallel work; loops
 * run on one thread when the work is too small to pay for waking the team.
 * OpenBLAS is kept at one thread and called from each member of the team on
 * a slice of the weight rows (sgemv for one row of x, where its sgemm is ~5x
 * slower).  Letting OpenBLAS use its own pthread pool instead was 5x slower
 * in a norm/matmul/silu sequence at M=64 on the 2-core build machine: the
 * OpenMP threads spin-wait after each region (libgomp's default) and take
 * the cores from OpenBLAS's threads; with OMP_WAIT_POLICY=passive the two
 * schemes tie, but libgomp reads that only at program start. */
#define _GNU_SOURCE
#include "kernels/cpu/cpu-internal.h"

#include "kernels/bf16.h"

#include <assert.h>
#include <cblas.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define MR_CPU_ALIGN 64
#define MR_CPU_MATMUL_PAR_MIN 2e5 /* flops */
#define MR_CPU_SMALL_M_MAX 32     /* see cpu_small_m_max */

/* ---- memory ------------------------------------------------------------- */

static void *cpu_alloc(mr_backend *b, size_t bytes) {
    /* aligned_alloc wants a multiple of the alignment; 0 bytes still gets a
     * unique pointer so callers can free it like any other. */
    size_t n = (bytes + MR_CPU_ALIGN - 1) / MR_CPU_ALIGN * MR_CPU_ALIGN;
    if (n < bytes) return NULL; /* overflow */
    return aligned_alloc(MR_CPU_ALIGN, n ? n : MR_CPU_ALIGN);
}

static void cpu_free(mr_backend *b, void *p) { free(p); }

static void cpu_copy(mr_backend *b, void *dst, const void *src, size_t bytes) {
    if (bytes) memcpy(dst, src, bytes);
}

static void cpu_sync(mr_backend *b) {}

/* ---- matrix product ----------------------------------------------------- */

/* Largest M for the small-M kernel (cpu-gemm-small.c); 0 = never.  Set at
 * init from MR_CPU_MATMUL_SMALL_M (process-wide, like OpenBLAS's thread
 * count); -1 until then, and where the CPU lacks FMA. */
static int cpu_small_m_max = -1;
static int cpu_fma; /* FMA in hardware: the bf16 gemv (cpu-gemm-small.c) may run */

/* Scratch of the bf16 matmul (b->ctx; NULL until the first reserve). */
typedef struct cpu_ctx {
    float *xr;      /* x rounded to bf16, as floats (M K) */
    size_t xr_cap;  /* floats */
    float *wt;      /* per thread: a tile of weight rows as floats */
    size_t wt_cap;  /* floats per thread */
    int wt_threads;
} cpu_ctx;

/* Weight rows each thread of the bf16 matmul converts at once (M > 1): a
 * tile of 64 rows stays in L2 and each BLAS or small-M call on it packs x
 * once per 64 rows. */
#define BF16_TILE_ROWS 64

static int cpu_reserve_bf16(mr_backend *b, int M, int K) {
    cpu_ctx *c = b->ctx;
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c) return -1;
        b->ctx = c;
    }
    size_t xr = (size_t)M * (size_t)K, wt = (size_t)BF16_TILE_ROWS * (size_t)K;
    if (xr > c->xr_cap) {
        float *p = cpu_alloc(b, xr * sizeof(float));
        if (!p) return -1;
        free(c->xr);
        c->xr = p;
        c->xr_cap = xr;
    }
    if (wt > c->wt_cap || b->threads > c->wt_threads) {
        size_t per = wt > c->wt_cap ? wt : c->wt_cap;
        int nt = b->threads > c->wt_threads ? b->threads : c->wt_threads;
        float *p = cpu_alloc(b, per * (size_t)nt * sizeof(float));
        if (!p) return -1;
        free(c->wt);
        c->wt = p;
        c->wt_cap = per;
        c->wt_threads = nt;
    }
    return 0;
}

static void cpu_upload_bf16(mr_backend *b, uint16_t *dst, const float *src, size_t n) {
    (void)b;
    for (size_t i = 0; i < n; i++) dst[i] = mr_bf16_from_f32(src[i]);
}

/* Rows n0:n1 of y(M,N) from a block of weight rows w(n1-n0, K) (row n0
 * first): the small-M kernel, sgemv, or sgemm.  beta as cpu_matmul_any
 * set it. */
static void matmul_rows(float *y, const float *x, const float *wb, const float *bias, int M, int N, int K,
                        int n0, int n1, int small, float beta, int accumulate) {
    if (small)
        mr_cpu_gemm_small(y + n0, x, wb, bias ? bias + n0 : NULL, M, N, K, 0, n1 - n0, accumulate);
    else if (M == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, n1 - n0, K, 1.0f, wb, K, x, 1, beta, y + n0, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, n1 - n0, K, 1.0f, x, K, wb, K, beta, y + n0, N);
}

/* x(M,K) rounded to bf16, as floats, in the scratch (reserved at start-up;
 * growing here is the fallback). */
static const float *round_x_bf16(mr_backend *b, const float *x, int M, int K) {
    if (cpu_reserve_bf16(b, M, K) != 0) {
        fprintf(stderr, "moerun: cpu backend: out of memory for the bf16 matmul scratch (M=%d K=%d)\n", M, K);
        abort();
    }
    cpu_ctx *c = b->ctx;
    size_t n = (size_t)M * (size_t)K;
    for (size_t i = 0; i < n; i++) c->xr[i] = mr_bf16_to_float(mr_bf16_from_f32(x[i]));
    return c->xr;
}

/* Threads of a product: the team when it is big enough, at most one per
 * block of 16 weight rows. */
static int matmul_threads(mr_backend *b, int M, int N, int K) {
    double flops = 2.0 * M * N * K;
    int nblk = (N + 15) / 16, nt = flops >= MR_CPU_MATMUL_PAR_MIN ? b->threads : 1;
    return nt > nblk ? nblk : nt;
}

/* This team member's weight rows [*n0, *n1): whole blocks of 16. */
static void team_rows(int N, int *n0, int *n1) {
    int me = 0, team = 1;
#ifdef _OPENMP
    me = omp_get_thread_num();
    team = omp_get_num_threads();
#endif
    int nblk = (N + 15) / 16;
    *n0 = (int)((long)nblk * me / team) * 16;
    *n1 = (int)((long)nblk * (me + 1) / team) * 16;
    if (*n1 > N) *n1 = N;
}

/* This team member's float scratch for a tile of widened bf16 rows. */
static float *team_tile(mr_backend *b) {
    cpu_ctx *c = b->ctx;
    int me = 0;
#ifdef _OPENMP
    me = omp_get_thread_num();
#endif
    return c->wt + (size_t)me * c->wt_cap;
}

/* n bf16 weights widened into floats. */
static void widen(float *restrict wt, const uint16_t *restrict src, size_t n) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) wt[i] = mr_bf16_to_float(src[i]);
}

/* y(M,N) = x(M,K) . w(N,K)^T (+ bias(N)); accumulate != 0 adds into y.
 * The weights are float32 w, or bf16 wh (w NULL): then x is rounded to
 * bf16 first (into the scratch); for M = 1 each thread runs the bf16 gemv
 * on its rows (where the CPU has FMA), otherwise it converts its weight
 * rows a tile at a time into its own scratch before the same BLAS calls.
 * Either way memory traffic is the bf16 bytes. */
static void cpu_matmul_any(mr_backend *b, float *y, const float *x, const float *w, const uint16_t *wh,
                           const float *bias, int M, int N, int K, int accumulate) {
    assert(M >= 1 && N >= 1 && K >= 1);
    int small = M >= 2 && M <= cpu_small_m_max;
    float beta = accumulate ? 1.0f : 0.0f;
    if (bias && !small) {
        /* Put the bias into y first and let BLAS accumulate onto it. */
        for (int m = 0; m < M; m++) {
            float *row = y + (size_t)m * N;
            if (accumulate)
                for (int n = 0; n < N; n++) row[n] += bias[n];
            else
                memcpy(row, bias, (size_t)N * sizeof *row);
        }
        beta = 1.0f;
    }
    /* Some OpenBLAS versions scale y by beta=0 as y*0, which keeps a NaN
     * left in an uninitialised y; zero it ourselves for sgemv. */
    if (M == 1 && beta == 0.0f) {
        memset(y, 0, (size_t)N * sizeof *y);
        beta = 1.0f;
    }
    int tile = BF16_TILE_ROWS, gemv_bf16 = cpu_fma;
    if (wh) x = round_x_bf16(b, x, M, K);
    /* Threads split the rows of w (columns of y) in blocks of 16; each
     * runs the small-M kernel or single-threaded BLAS on its block (BLAS
     * repacks x per thread, but there is no second thread pool). */
    int nt = matmul_threads(b, M, N, K);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int n0, n1;
        team_rows(N, &n0, &n1);
        if (n1 > n0 && !wh) matmul_rows(y, x, w + (size_t)n0 * K, bias, M, N, K, n0, n1, small, beta, accumulate);
        if (wh && M == 1 && gemv_bf16 && n1 > n0) mr_cpu_gemv_bf16(y, x, wh, K, n0, n1); /* y holds bias or 0 */
        for (int r0 = n0; wh && !(M == 1 && gemv_bf16) && r0 < n1; r0 += tile) {
            int r1 = n1 - r0 < tile ? n1 : r0 + tile;
            float *wt = team_tile(b);
            widen(wt, wh + (size_t)r0 * K, (size_t)(r1 - r0) * (size_t)K);
            matmul_rows(y, x, wt, bias, M, N, K, r0, r1, small, beta, accumulate);
        }
    }
}

static void cpu_matmul(mr_backend *b, float *y, const float *x, const float *w, const float *bias, int M, int N,
                       int K, int accumulate) {
    cpu_matmul_any(b, y, x, w, NULL, bias, M, N, K, accumulate);
}

static void cpu_matmul_bf16(mr_backend *b, float *y, const float *x, const uint16_t *w, const float *bias, int M,
                            int N, int K, int accumulate) {
    cpu_matmul_any(b, y, x, NULL, w, bias, M, N, K, accumulate);
}

/* Rows n0:n1 of the fixed-order product from a block of weight rows wb
 * (row n0 first): the canonical sums into y, or (bstride != 0) block i's
 * lane sums alone into y + i bstride. */
static void fixed_rows(float *y, const float *x, const float *wb, const float *bias, int M, int N, int K, int kc,
                       size_t bstride, int n0, int n1) {
    if (!bstride) {
        mr_cpu_gemm_fixed(y + n0, N, x, K, wb, K, bias ? bias + n0 : NULL, M, K, kc, 0, n1 - n0, 0);
        return;
    }
    for (int k0 = 0, i = 0; k0 < K; k0 += kc, i++) {
        int kb = K - k0 < kc ? K - k0 : kc;
        mr_cpu_gemm_fixed(y + (size_t)i * bstride + n0, N, x + k0, K, wb + k0, K, NULL, M, kb, kb, 0, n1 - n0, 0);
    }
}

/* The deterministic mode's matmul (backend.h): mr_cpu_gemm_fixed on each
 * thread's rows of w; bf16 weights are widened 64 rows at a time into the
 * thread's scratch, x rounded to bf16 first, as in cpu_matmul_any. */
static void cpu_matmul_fixed(mr_backend *b, float *y, const float *x, const void *w, int w_bf16,
                             const float *bias, int M, int N, int K, int kc, size_t block_stride) {
    assert(M >= 1 && N >= 1 && K >= 1 && kc >= 1 && kc <= mr_cpu_gemm_fixed_max_kc());
    assert(!block_stride || !bias);
    const uint16_t *wh = w_bf16 ? w : NULL;
    if (wh) x = round_x_bf16(b, x, M, K);
    int nt = matmul_threads(b, M, N, K);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int n0, n1;
        team_rows(N, &n0, &n1);
        if (!wh && n1 > n0)
            fixed_rows(y, x, (const float *)w + (size_t)n0 * K, bias, M, N, K, kc, block_stride, n0, n1);
        for (int r0 = n0; wh && r0 < n1; r0 += BF16_TILE_ROWS) {
            int r1 = n1 - r0 < BF16_TILE_ROWS ? n1 : r0 + BF16_TILE_ROWS;
            float *wt = team_tile(b);
            widen(wt, wh + (size_t)r0 * K, (size_t)(r1 - r0) * (size_t)K);
            fixed_rows(y, x, wt, bias, M, N, K, kc, block_stride, r0, r1);
        }
    }
}

/* ---- row-wise ----------------------------------------------------------- */

/* y(rows,dim) = x / sqrt(mean(x^2) + eps) * w(dim); y may equal x.  The sum
 * of squares is fp32, as transformers computes it. */
static inline void rmsnorm_row(float *yr, const float *xr, const float *w, int dim, float eps) {
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int i = 0; i < dim; i++) ss += xr[i] * xr[i];
    float inv = 1.0f / sqrtf(ss / (float)dim + eps);
#pragma omp simd
    for (int i = 0; i < dim; i++) yr[i] = xr[i] * inv * w[i];
}

static void cpu_rmsnorm(mr_backend *b, float *y, const float *x, const float *w,
                        int rows, int dim, float eps) {
#pragma omp parallel for num_threads(b->threads) schedule(static) \
    if ((size_t)rows * dim >= MR_CPU_PAR_MIN && rows > 1)
    for (int r = 0; r < rows; r++) rmsnorm_row(y + (size_t)r * dim, x + (size_t)r * dim, w, dim, eps);
}

/* x += a, then h = rmsnorm(x) * w, row by row (the row still in cache):
 * the same operations as cpu_add and cpu_rmsnorm, so the same bits. */
static void cpu_add_rmsnorm(mr_backend *b, float *x, float *h, const float *a, const float *w,
                            int rows, int dim, float eps) {
#pragma omp parallel for num_threads(b->threads) schedule(static) \
    if ((size_t)rows * dim >= MR_CPU_PAR_MIN && rows > 1)
    for (int r = 0; r < rows; r++) {
        float *xr = x + (size_t)r * dim;
        const float *ar = a + (size_t)r * dim;
#pragma omp simd
        for (int i = 0; i < dim; i++) xr[i] += ar[i];
        rmsnorm_row(h + (size_t)r * dim, xr, w, dim, eps);
    }
}

/* out(rows, dim) = table[ids[r]] rows */
static void cpu_gather_rows(mr_backend *b, float *out, const float *table,
                            const int32_t *ids, int rows, int dim) {
#pragma omp parallel for num_threads(b->threads) schedule(static) \
    if ((size_t)rows * dim >= MR_CPU_PAR_MIN && rows > 1)
    for (int r = 0; r < rows; r++)
        memcpy(out + (size_t)r * dim, table + (size_t)ids[r] * dim,
               (size_t)dim * sizeof *out);
}

/* dst[ids[r]] += weight[r] * src[r] for r < rows (weight NULL = 1).  Ids may
 * repeat, so threads split the columns, not the rows: each element is summed
 * by one thread in row order, which is also deterministic. */
static void cpu_scatter_add_rows(mr_backend *b, float *dst, const float *src,
                                 const int32_t *ids, const float *weight,
                                 int rows, int dim) {
    int nt = (size_t)rows * dim >= MR_CPU_PAR_MIN ? b->threads : 1;
    /* Chunks of 16 floats (one cache line) so threads never share a line. */
    int nchunk = (dim + 15) / 16;
    if (nt > nchunk) nt = nchunk;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int me = 0, team = 1;
#ifdef _OPENMP
        me = omp_get_thread_num();
        team = omp_get_num_threads();
#endif
        int c0 = (int)((long)nchunk * me / team) * 16;
        int c1 = (int)((long)nchunk * (me + 1) / team) * 16;
        if (c1 > dim) c1 = dim;
        for (int r = 0; r < rows; r++) {
            const float *s = src + (size_t)r * dim;
            float *d = dst + (size_t)ids[r] * dim;
            float wr = weight ? weight[r] : 1.0f;
#pragma omp simd
            for (int i = c0; i < c1; i++) d[i] += wr * s[i];
        }
    }
}

/* ---- element-wise ------------------------------------------------------- */

/* y(n) += x(n) */
static void cpu_add(mr_backend *b, float *y, const float *x, size_t n) {
    long nn = (long)n;
#pragma omp parallel for simd num_threads(b->threads) schedule(static) \
    if (n >= MR_CPU_PAR_MIN)
    for (long i = 0; i < nn; i++) y[i] += x[i];
}

/* y(n) *= s */
static void cpu_scale(mr_backend *b, float *y, float s, size_t n) {
    long nn = (long)n;
#pragma omp parallel for simd num_threads(b->threads) schedule(static) \
    if (n >= MR_CPU_PAR_MIN)
    for (long i = 0; i < nn; i++) y[i] *= s;
}

/* out(T,ni) = silu(gu[:, :ni]) * gu[:, ni:2ni]; silu(g) = g / (1 + exp(-g)).
 * (Not "I": <cblas.h> pulls in <complex.h>, whose I is a macro.) */
static void cpu_silu_mul(mr_backend *b, float *out, const float *gu, int T, int ni) {
#pragma omp parallel for num_threads(b->threads) schedule(static) \
    if ((size_t)T * ni >= MR_CPU_PAR_MIN && T > 1)
    for (int t = 0; t < T; t++) {
        const float *g = gu + (size_t)t * 2 * ni, *u = g + ni;
        float *o = out + (size_t)t * ni;
#pragma omp simd
        for (int i = 0; i < ni; i++) o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    }
}

/* y(T,dim) += sigmoid(g[t]) * x(T,dim) */
static void cpu_sigmoid_gate_add(mr_backend *b, float *y, const float *x,
                                 const float *g, int T, int dim) {
#pragma omp parallel for num_threads(b->threads) schedule(static) \
    if ((size_t)T * dim >= MR_CPU_PAR_MIN && T > 1)
    for (int t = 0; t < T; t++) {
        float s = 1.0f / (1.0f + expf(-g[t]));
        float *yr = y + (size_t)t * dim;
        const float *xr = x + (size_t)t * dim;
#pragma omp simd
        for (int i = 0; i < dim; i++) yr[i] += s * xr[i];
    }
}

static void cpu_zero(mr_backend *b, float *y, size_t n) {
    (void)b;
    if (n) memset(y, 0, n * sizeof(float));
}

static void cpu_copy_rows(mr_backend *b, float *dst, size_t dst_ld, const float *src, size_t src_ld, int rows,
                          int cols) {
    (void)b;
    for (int r = 0; r < rows; r++)
        memcpy(dst + (size_t)r * dst_ld, src + (size_t)r * src_ld, (size_t)cols * sizeof(float));
}

static void cpu_cache_write(mr_backend *b, float *cache, size_t row, int ctx, size_t col, size_t dst_hs,
                            const float *src, size_t src_ld, size_t src_hs, const int32_t *slot, const int32_t *pos,
                            int ntok, int nheads, int width) {
    (void)b;
    for (int t = 0; t < ntok; t++) {
        float *d = cache + ((size_t)slot[t] * (size_t)ctx + (size_t)pos[t]) * row + col;
        const float *s = src + (size_t)t * src_ld;
        for (int h = 0; h < nheads; h++)
            memcpy(d + (size_t)h * dst_hs, s + (size_t)h * src_hs, (size_t)width * sizeof(float));
    }
}

/* ---- the table ---------------------------------------------------------- */

static const mr_backend_ops mr_cpu_ops = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .sync = cpu_sync,
    .matmul = cpu_matmul,
    .rmsnorm = cpu_rmsnorm,
    .add = cpu_add,
    .add_rmsnorm = cpu_add_rmsnorm,
    .gather_rows = cpu_gather_rows,
    .scatter_add_rows = cpu_scatter_add_rows,
    .rope = mr_cpu_rope,
    .attention = mr_cpu_attention,
    .silu_mul = cpu_silu_mul,
    .sigmoid_gate_add = cpu_sigmoid_gate_add,
    .route = mr_cpu_route,
    .scale = cpu_scale,
    .zero = cpu_zero,
    .copy_rows = cpu_copy_rows,
    .cache_write = cpu_cache_write,
    .matmul_bf16 = cpu_matmul_bf16,
    .upload_bf16 = cpu_upload_bf16,
    .reserve_bf16 = cpu_reserve_bf16,
    .matmul_fixed = cpu_matmul_fixed,
    .host_memory = 1,
};

/* The same operations presented as a device backend (host_memory 0), for
 * tests: the model then keeps separate host mirrors and moves every buffer
 * it reads on the host with download/upload, as on a GPU, so a missing
 * move gives wrong results here instead of on the first GPU.  Chosen with
 * MR_CPU_AS_DEVICE=1 in the environment. */
static mr_backend_ops mr_cpu_as_device_ops;

/* CPUs this process may run on (its affinity mask, as set by taskset, Slurm
 * or mpirun binding), not every CPU of the machine. */
static int cpu_affinity_count(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int mr_backend_cpu_init(mr_backend *b, int threads) {
    b->ops = &mr_cpu_ops;
    const char *dev = getenv("MR_CPU_AS_DEVICE");
    if (dev && !strcmp(dev, "1")) {
        mr_cpu_as_device_ops = mr_cpu_ops;
        mr_cpu_as_device_ops.name = "cpu-as-device";
        mr_cpu_as_device_ops.host_memory = 0;
        b->ops = &mr_cpu_as_device_ops;
    }
    b->ctx = NULL;
    b->threads = threads > 0 ? threads : cpu_affinity_count();
    /* Process-wide.  cpu_matmul parallelises over OpenBLAS calls itself
     * (see the top of this file). */
    openblas_set_num_threads(1);
    const char *e = getenv("MR_CPU_MATMUL_SMALL_M");
    cpu_fma = mr_cpu_gemm_small_ok();
    cpu_small_m_max = !cpu_fma ? 0 : e && *e ? atoi(e) : MR_CPU_SMALL_M_MAX;
    if (cpu_small_m_max > mr_cpu_gemm_small_max_m()) cpu_small_m_max = mr_cpu_gemm_small_max_m();
    return 0;
}

void mr_backend_cpu_free(mr_backend *b) {
    cpu_ctx *c = b->ctx;
    if (c) {
        free(c->xr);
        free(c->wt);
        free(c);
    }
    b->ops = NULL;
    b->ctx = NULL;
    b->threads = 0;
}
