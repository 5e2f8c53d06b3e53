/* test-gemv: the CPU backend's bf16 gemv (the M = 1 product of matmul_bf16,
 * kernels/cpu/cpu-gemm-small.c) against a plain loop of the order its
 * header documents, bit for bit: 4 accumulators of 8 lanes over whole runs
 * of 32 columns, the next whole 8s into accumulator 0, the last K % 8 into
 * accumulator 0's lanes one each, then (a0 + a1) + (a2 + a3) per lane and
 * the lane tree ((0+4)+(2+6))+((1+5)+(3+7)), added into y.  Both paths: the
 * one this machine dispatches to (AVX2 + FMA here) and the portable loop. */
#include "harness.h"

#include "test-rand.h"
#include "kernels/cpu/cpu-internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static float bf(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static float ref_row(const float *x, const uint16_t *w, int K) {
    float a[4][8] = {{0}};
    int k4 = K / 32 * 32, kv = K / 8 * 8;
    for (int k = 0; k < k4; k++) a[(k % 32) / 8][k % 8] = fmaf(x[k], bf(w[k]), a[(k % 32) / 8][k % 8]);
    for (int k = k4; k < kv; k++) a[0][k % 8] = fmaf(x[k], bf(w[k]), a[0][k % 8]);
    for (int k = kv; k < K; k++) a[0][k - kv] = fmaf(x[k], bf(w[k]), a[0][k - kv]);
    float t[8];
    for (int l = 0; l < 8; l++) t[l] = (a[0][l] + a[1][l]) + (a[2][l] + a[3][l]);
    return ((t[0] + t[4]) + (t[2] + t[6])) + ((t[1] + t[5]) + (t[3] + t[7]));
}

int main(void) {
    static const int Ks[] = {1, 7, 8, 9, 31, 32, 33, 40, 100, 576, 2048, 2049, 8191};
    for (size_t i = 0; i < sizeof Ks / sizeof Ks[0]; i++) {
        int K = Ks[i], N = 37;
        float *x = malloc(sizeof(float) * (size_t)K), *y0 = malloc(sizeof(float) * N);
        float *yd = malloc(sizeof(float) * N), *yp = malloc(sizeof(float) * N), *yr = malloc(sizeof(float) * N);
        uint16_t *w = malloc(sizeof(uint16_t) * (size_t)K * N);
        fill(x, (size_t)K, -1, 1);
        for (size_t k = 0; k < (size_t)K * N; k++) w[k] = (uint16_t)(irand(65536) & 0xbfff); /* |w| < 2 */
        fill(y0, (size_t)N, -0.5f, 0.5f);
        memcpy(yd, y0, sizeof(float) * N);
        memcpy(yp, y0, sizeof(float) * N);
        mr_cpu_gemv_bf16(yd, x, w, K, 0, 20); /* two calls: a split of the rows */
        mr_cpu_gemv_bf16(yd, x, w, K, 20, N);
        mr_cpu_gemv_bf16_portable(yp, x, w, K, 0, N);
        for (int n = 0; n < N; n++) yr[n] = y0[n] + ref_row(x, w + (size_t)n * K, K);
        CHECK(!memcmp(yd, yr, sizeof(float) * N), "K=%d: the dispatched gemv differs from the reference order", K);
        CHECK(!memcmp(yp, yr, sizeof(float) * N), "K=%d: the portable gemv differs from the reference order", K);
        free(x), free(y0), free(yd), free(yp), free(yr), free(w);
    }
    return mr_test_summary();
}
