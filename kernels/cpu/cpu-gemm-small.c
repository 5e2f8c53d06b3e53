/* The small-M matrix product of the CPU backend: y(M,n0:n1) = x(M,K) .
 * w(n0:n1,K)^T for the decode-sized M where OpenBLAS's sgemm is far from
 * both its compute peak and the memory floor (it packs x and w for large
 * products; at M = 8 it reaches ~47 GFLOP/s on the build machine).
 *
 * A register tile of MR rows of x times NR rows of w keeps MR*NR vector
 * accumulators of VL lanes; the inner loop over K loads NR vectors of w and
 * MR of x and does MR*NR fused multiply-adds.  Each row of w is read from
 * memory once and reused from cache for every tile of x rows.
 *
 * The sum for one element (m, n) is the same sequence of operations
 * wherever the element falls in a tile and whatever the tile shape: lane l
 * accumulates fmaf(x[k], w[k], acc) over k = l, l+VL, ... (the last partial
 * vector zero-padded), then the VL lanes are added in a fixed tree.  So the
 * result depends neither on the thread count, nor on M, nor on which ISA
 * clone runs (fmaf is exact-rounded everywhere; contraction is off in ISO C
 * mode, so no other operation is fused behind our back).
 *
 * Portable C: the lane loops are `omp simd` and GCC turns them into one
 * vector instruction each; `GCC unroll` unrolls the tile loops so the
 * accumulators live in registers (GCC 12 at -O2 keeps them in memory
 * otherwise).  x86-64 builds carry clones for x86-64-v3 (AVX2 + FMA) and v4
 * (AVX-512), chosen at run time; without FMA in hardware fmaf would be a
 * library call, so mr_cpu_gemm_small_ok() says no and the caller uses BLAS. */
#include "kernels/cpu/cpu-internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define VL 8 /* lanes per accumulator: one AVX2 register */
#define MR 4 /* rows of x per tile */
#define NR 3 /* rows of w per tile: 12 accumulators + 3 w + 1 x = 16 registers */
/* Packed block of x: 128 KB of stack, so M x kc fits L2 and kc = K up to
 * M = 16 at K = 2048.  Shorter blocks were slower (each block restarts
 * the hardware prefetcher on every row of w, and adds a lane sum). */
#define XBUF_FLOATS 32768

#define MR_UNROLL _Pragma("GCC unroll 8")

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MR_GEMM_X86_CLONES 1
#define MR_GEMM_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MR_GEMM_CLONES
#endif

/* Fixed-order sum of the VL lanes. */
static inline float lane_sum(const float *a) {
    return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

/* One tile over a block of kc columns: MR rows of packed x (xp: vectors of
 * MR x VL, zero-padded) times the NR rows w[j], of which mr x nr results
 * are kept (the last tile of x has zero rows, the last tile of a slice
 * repeats its last row of w: one code path for all, the spare work is lost
 * in the time to stream w).  The lane sums are added into y (stride N), on
 * the first block into (accumulate ? y : 0) + bias.  Inlined, so that it
 * is built for each clone of the caller. */
static inline __attribute__((always_inline)) void
tile(int mr, int nr, float *restrict y, const float *restrict xp, const float *const *restrict w,
     const float *restrict bias, int N, int kc, int first, int accumulate) {
    float a[MR][NR][VL];
    MR_UNROLL for (int i = 0; i < MR; i++)
        MR_UNROLL for (int j = 0; j < NR; j++)
#pragma omp simd
            for (int l = 0; l < VL; l++) a[i][j][l] = 0.0f;
    int kv = kc / VL * VL;
    const float *xs = xp;
    for (int k = 0; k < kv; k += VL, xs += MR * VL) {
        MR_UNROLL for (int i = 0; i < MR; i++)
            MR_UNROLL for (int j = 0; j < NR; j++) {
                const float *xi = xs + i * VL, *wj = w[j] + k;
#pragma omp simd
                for (int l = 0; l < VL; l++) a[i][j][l] = fmaf(xi[l], wj[l], a[i][j][l]);
            }
    }
    if (kv < kc) { /* w's last partial vector, zero-padded (x already is) */
        float wt[NR][VL] = {{0}};
        for (int j = 0; j < NR; j++) memcpy(wt[j], w[j] + kv, sizeof(float) * (size_t)(kc - kv));
        MR_UNROLL for (int i = 0; i < MR; i++)
            MR_UNROLL for (int j = 0; j < NR; j++) {
                const float *xi = xs + i * VL;
#pragma omp simd
                for (int l = 0; l < VL; l++) a[i][j][l] = fmaf(xi[l], wt[j][l], a[i][j][l]);
            }
    }
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) {
            float *yo = y + (size_t)i * N + j, base = *yo;
            if (first) {
                base = accumulate ? *yo : 0.0f;
                if (bias) base += bias[j];
            }
            *yo = base + lane_sum(a[i][j]);
        }
}

/* Copy x(:, k0:k0+kc) into xp as MR-row tiles, each a run of vectors of MR
 * x VL (row i's VL columns together), zero-padded to whole vectors and
 * whole tiles: one sequential stream per tile, and no cache-set conflicts
 * between rows of x whose stride is a power of two. */
static void pack_x(float *restrict xp, const float *restrict x, int M, int K, int k0, int kc) {
    int steps = (kc + VL - 1) / VL;
    for (int m0 = 0; m0 < M; m0 += MR)
        for (int s = 0; s < steps; s++, xp += MR * VL)
            for (int i = 0; i < MR; i++) {
                int m = m0 + i, c = kc - s * VL < VL ? kc - s * VL : VL;
                if (m < M)
                    memcpy(xp + i * VL, x + (size_t)m * K + k0 + s * VL, sizeof(float) * (size_t)c);
                else
                    c = 0;
                for (int l = c; l < VL; l++) xp[i * VL + l] = 0.0f;
            }
}

/* One packed block (columns k0 .. k0+kc of M rows, in xp) against the
 * rows n0:n1 of w (stride ldw): every NR-row tile of w swept across all
 * MR-row tiles of x, lane sums added into y (stride ldy). */
static inline __attribute__((always_inline)) void
sweep(float *y, int ldy, const float *xp, int M, const float *w, int ldw, const float *bias, int k0, int kc, int n0,
      int n1, int accumulate) {
    int steps = (kc + VL - 1) / VL;
    for (int n = n0; n < n1; n += NR) {
        int nr = n1 - n < NR ? n1 - n : NR;
        const float *wr[NR];
        for (int j = 0; j < NR; j++) wr[j] = w + (size_t)(n + (j < nr ? j : nr - 1)) * ldw + k0;
        const float *bn = bias ? bias + n : NULL;
        for (int m = 0; m < M; m += MR) {
            float *ym = y + (size_t)m * ldy + n;
            const float *xm = xp + (size_t)(m / MR) * steps * MR * VL;
            tile(M - m < MR ? M - m : MR, nr, ym, xm, wr, bn, ldy, kc, k0 == 0, accumulate);
        }
    }
}

/* The columns go in equal blocks of kc, as few as let M x kc fit the packed
 * buffer.  For each block x is packed, and every NR-row tile of w is swept
 * across all tiles of x: w is read from memory once and reused from L1,
 * the packed x from L1/L2.  Each block's lane sums are added into y, so the
 * order of additions depends on M and K, never on n0:n1. */
MR_GEMM_CLONES
void mr_cpu_gemm_small(float *y, const float *x, const float *w, const float *bias, int M,
                       int N, int K, int n0, int n1, int accumulate) {
    float xp[XBUF_FLOATS] __attribute__((aligned(64)));
    int mpad = (M + MR - 1) / MR * MR;
    int kcmax = XBUF_FLOATS / mpad / VL * VL;
    if (kcmax < VL) return; /* M above mr_cpu_gemm_small_max_m(); the caller checks */
    int nblocks = (K + kcmax - 1) / kcmax;
    int kcb = ((K + nblocks - 1) / nblocks + VL - 1) / VL * VL;
    for (int k0 = 0; k0 < K; k0 += kcb) {
        int kc = K - k0 < kcb ? K - k0 : kcb;
        pack_x(xp, x, M, K, k0, kc);
        sweep(y, N, xp, M, w, K, bias, k0, kc, n0, n1, accumulate);
    }
}

/* tile() for one row of x (unpacked: a decode step) against NR1 rows of
 * w: the same lane chains, tail and lane sums as tile() with mr = 1, so
 * the same bits, with none of its padded rows' work. */
#define NR1 8
static inline __attribute__((always_inline)) void
tile1(int nr, float *restrict y, const float *restrict x, const float *const *restrict w, const float *restrict bias,
      int kc, int first, int accumulate) {
    float a[NR1][VL];
    MR_UNROLL for (int j = 0; j < NR1; j++)
#pragma omp simd
        for (int l = 0; l < VL; l++) a[j][l] = 0.0f;
    int kv = kc / VL * VL;
    for (int k = 0; k < kv; k += VL)
        MR_UNROLL for (int j = 0; j < NR1; j++) {
            const float *wj = w[j] + k, *xk = x + k;
#pragma omp simd
            for (int l = 0; l < VL; l++) a[j][l] = fmaf(xk[l], wj[l], a[j][l]);
        }
    if (kv < kc) {
        float xt[VL] = {0}, wt[NR1][VL] = {{0}};
        memcpy(xt, x + kv, sizeof(float) * (size_t)(kc - kv));
        for (int j = 0; j < NR1; j++) memcpy(wt[j], w[j] + kv, sizeof(float) * (size_t)(kc - kv));
        MR_UNROLL for (int j = 0; j < NR1; j++)
#pragma omp simd
            for (int l = 0; l < VL; l++) a[j][l] = fmaf(xt[l], wt[j][l], a[j][l]);
    }
    for (int j = 0; j < nr; j++) {
        float base = y[j];
        if (first) {
            base = accumulate ? y[j] : 0.0f;
            if (bias) base += bias[j];
        }
        y[j] = base + lane_sum(a[j]);
    }
}

/* The fixed-order product of the deterministic mode: y(M, n0:n1) (row
 * stride ldy) = x(M, K) (stride ldx) . w(n0:n1, K)^T (stride ldw) in
 * blocks of kc columns whatever M is: element (m, n) is
 *   (((accumulate ? y : 0) + bias) + L_0) + L_1 + ...
 * where L_b is the lane sum of block b (lanes as in tile()).  M goes in
 * chunks of rows whose packed blocks fit the buffer; neither the chunk,
 * nor M, nor the thread's n0:n1 changes an element's operations.  kc must
 * leave room for MR rows (mr_cpu_gemm_fixed_max_kc). */
MR_GEMM_CLONES
void mr_cpu_gemm_fixed(float *y, int ldy, const float *x, int ldx, const float *w, int ldw, const float *bias,
                       int M, int K, int kc, int n0, int n1, int accumulate) {
    if (M == 1) { /* a decode step: one row, no packing */
        for (int k0 = 0; k0 < K; k0 += kc) {
            int kb = K - k0 < kc ? K - k0 : kc;
            for (int n = n0; n < n1; n += NR1) {
                int nr = n1 - n < NR1 ? n1 - n : NR1;
                const float *wr[NR1];
                for (int j = 0; j < NR1; j++) wr[j] = w + (size_t)(n + (j < nr ? j : nr - 1)) * ldw + k0;
                tile1(nr, y + n, x + k0, wr, bias ? bias + n : NULL, kb, k0 == 0, accumulate);
            }
        }
        return;
    }
    float xp[XBUF_FLOATS] __attribute__((aligned(64)));
    int steps_max = (kc + VL - 1) / VL;
    int mchunk = XBUF_FLOATS / (steps_max * VL) / MR * MR;
    if (mchunk < MR) return; /* kc above mr_cpu_gemm_fixed_max_kc(); the caller checks */
    for (int m0 = 0; m0 < M; m0 += mchunk) {
        int mrows = M - m0 < mchunk ? M - m0 : mchunk;
        const float *xm0 = x + (size_t)m0 * ldx;
        for (int k0 = 0; k0 < K; k0 += kc) {
            int kb = K - k0 < kc ? K - k0 : kc;
            pack_x(xp, xm0, mrows, ldx, k0, kb);
            sweep(y + (size_t)m0 * ldy, ldy, xp, mrows, w, ldw, bias, k0, kb, n0, n1, accumulate);
        }
    }
}

int mr_cpu_gemm_fixed_max_kc(void) { return XBUF_FLOATS / MR; }

int mr_cpu_gemm_small_max_m(void) { return XBUF_FLOATS / VL; }

int mr_cpu_gemm_small_ok(void) {
#if defined(MR_GEMM_X86_CLONES)
    __builtin_cpu_init(); /* the same test as the clones' resolver */
    return __builtin_cpu_supports("x86-64-v3") > 0;
#elif defined(__FMA__) || defined(__aarch64__)
    return 1; /* built for a target with FMA */
#else
    return 0; /* fmaf would be a library call */
#endif
}

/* y(n0:n1) += x(K) . w(n0:n1, K)^T with w in bf16 (M = 1 of matmul_bf16):
 * the weights are widened in registers as they stream in, so a decode step
 * reads 2 bytes per weight.  Four vector accumulators (the FMA latency);
 * accumulator j, lane l sums x[k] w[k] over k = 32i + 8j + l, the tail
 * after the last whole 32 goes to accumulator 0 by vectors, then to its
 * lanes one value each; the accumulators and lanes are added in a fixed
 * order, so the result depends on neither the thread split nor the ISA
 * clone. */
static inline __attribute__((always_inline)) float bf16f(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

MR_GEMM_CLONES
static void gemv_bf16_any(float *y, const float *x, const uint16_t *w, int K, int n0, int n1) {
    enum { NA = 4 };
    int k4 = K / (NA * VL) * (NA * VL), kv = K / VL * VL;
    for (int n = n0; n < n1; n++) {
        const uint16_t *wr = w + (size_t)n * K;
        float a[NA][VL] = {{0}};
        for (int k = 0; k < k4; k += NA * VL)
            MR_UNROLL for (int j = 0; j < NA; j++)
#pragma omp simd
                for (int l = 0; l < VL; l++) a[j][l] = fmaf(x[k + j * VL + l], bf16f(wr[k + j * VL + l]), a[j][l]);
        for (int k = k4; k < kv; k += VL)
#pragma omp simd
            for (int l = 0; l < VL; l++) a[0][l] = fmaf(x[k + l], bf16f(wr[k + l]), a[0][l]);
        for (int k = kv; k < K; k++) a[0][k - kv] = fmaf(x[k], bf16f(wr[k]), a[0][k - kv]);
        float t[VL];
        for (int l = 0; l < VL; l++) t[l] = (a[0][l] + a[1][l]) + (a[2][l] + a[3][l]);
        y[n] += lane_sum(t);
    }
}

#if defined(MR_GEMM_X86_CLONES)
#include <immintrin.h>

/* Eight bf16 weights widened to float32: zero-extend to 32 bits, shift. */
__attribute__((target("avx2,fma"))) static inline __m256 bf16x8(const uint16_t *p) {
    __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
}

/* Accumulators a[0..3] of one row over the whole runs of 32 and 8, then
 * its tail and sums, added into *y. */
__attribute__((target("avx2,fma"))) static inline void row_finish(float *y, const float *x, const uint16_t *wr,
                                                                  int K, __m256 a0, __m256 a1, __m256 a2, __m256 a3) {
    int kv = K / 8 * 8;
    float a[4][VL], t[VL];
    _mm256_storeu_ps(a[0], a0);
    _mm256_storeu_ps(a[1], a1);
    _mm256_storeu_ps(a[2], a2);
    _mm256_storeu_ps(a[3], a3);
    for (int k = kv; k < K; k++) a[0][k - kv] = fmaf(x[k], bf16f(wr[k]), a[0][k - kv]);
    for (int l = 0; l < VL; l++) t[l] = (a[0][l] + a[1][l]) + (a[2][l] + a[3][l]);
    *y += lane_sum(t);
}

#define FMA8(acc, xo, wo) acc = _mm256_fmadd_ps(_mm256_loadu_ps(x + (xo)), bf16x8(wo), acc)

/* gemv_bf16_any in AVX2 + FMA: the same accumulators, lanes, tail and
 * order, so the same bits; two rows at a time share the loads of x.  GCC
 * 12 builds the portable loop's widening as two 4-lane halves (14 GB/s of
 * weights on the 2-core Xeon; this, 17-18). */
__attribute__((target("avx2,fma"))) static void gemv_bf16_avx2(float *y, const float *x, const uint16_t *w, int K,
                                                               int n0, int n1) {
    int k4 = K / 32 * 32, kv = K / 8 * 8, n = n0;
    for (; n + 1 < n1; n += 2) {
        const uint16_t *r0 = w + (size_t)n * K, *r1 = r0 + K;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        for (int k = 0; k < k4; k += 32) {
            FMA8(a0, k, r0 + k);
            FMA8(a1, k + 8, r0 + k + 8);
            FMA8(a2, k + 16, r0 + k + 16);
            FMA8(a3, k + 24, r0 + k + 24);
            FMA8(b0, k, r1 + k);
            FMA8(b1, k + 8, r1 + k + 8);
            FMA8(b2, k + 16, r1 + k + 16);
            FMA8(b3, k + 24, r1 + k + 24);
        }
        for (int k = k4; k < kv; k += 8) {
            FMA8(a0, k, r0 + k);
            FMA8(b0, k, r1 + k);
        }
        row_finish(y + n, x, r0, K, a0, a1, a2, a3);
        row_finish(y + n + 1, x, r1, K, b0, b1, b2, b3);
    }
    for (; n < n1; n++) {
        const uint16_t *r0 = w + (size_t)n * K;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int k = 0; k < k4; k += 32) {
            FMA8(a0, k, r0 + k);
            FMA8(a1, k + 8, r0 + k + 8);
            FMA8(a2, k + 16, r0 + k + 16);
            FMA8(a3, k + 24, r0 + k + 24);
        }
        for (int k = k4; k < kv; k += 8) FMA8(a0, k, r0 + k);
        row_finish(y + n, x, r0, K, a0, a1, a2, a3);
    }
}
#undef FMA8
#endif

void mr_cpu_gemv_bf16(float *y, const float *x, const uint16_t *w, int K, int n0, int n1) {
#if defined(MR_GEMM_X86_CLONES)
    static int avx2 = -1;
    if (avx2 < 0) {
        __builtin_cpu_init();
        /* MR_GEMV_PORTABLE=1: the loop below, for benchmarks (read once) */
        avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && !getenv("MR_GEMV_PORTABLE");
    }
    if (avx2) {
        gemv_bf16_avx2(y, x, w, K, n0, n1);
        return;
    }
#endif
    gemv_bf16_any(y, x, w, K, n0, n1);
}

void mr_cpu_gemv_bf16_portable(float *y, const float *x, const uint16_t *w, int K, int n0, int n1) {
    gemv_bf16_any(y, x, w, K, n0, n1);
}
