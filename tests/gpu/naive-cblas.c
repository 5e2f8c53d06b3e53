/* The naive GEMM behind tests/gpu/naive-cblas/cblas.h: row-major only, the
 * transposes kernels/cpu asks for, sums in double.  Slow but exact enough
 * to be the reference of test-gpu-ops where OpenBLAS is not installed. */
#include "cblas.h"

#include <assert.h>
#include <stddef.h>

/* y(m) = alpha a(m,n) x(n) + beta y */
void cblas_sgemv(CBLAS_ORDER order, CBLAS_TRANSPOSE trans, int m, int n, float alpha,
                 const float *a, int lda, const float *x, int incx, float beta, float *y,
                 int incy) {
    assert(order == CblasRowMajor && trans == CblasNoTrans);
    for (int i = 0; i < m; i++) {
        double s = 0.0;
        for (int j = 0; j < n; j++) s += (double)a[(size_t)i * lda + j] * x[(size_t)j * incx];
        float *yi = y + (size_t)i * incy;
        *yi = (float)(alpha * s + (beta != 0.0f ? (double)beta * *yi : 0.0));
    }
}

/* c(m,n) = alpha op(a)(m,k) op(b)(k,n) + beta c */
void cblas_sgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k,
                 float alpha, const float *a, int lda, const float *b, int ldb, float beta,
                 float *c, int ldc) {
    assert(order == CblasRowMajor);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0.0;
            for (int p = 0; p < k; p++) {
                double av = ta == CblasNoTrans ? a[(size_t)i * lda + p] : a[(size_t)p * lda + i];
                double bv = tb == CblasNoTrans ? b[(size_t)p * ldb + j] : b[(size_t)j * ldb + p];
                s += av * bv;
            }
            float *cij = c + (size_t)i * ldc + j;
            *cij = (float)(alpha * s + (beta != 0.0f ? (double)beta * *cij : 0.0));
        }
}

void openblas_set_num_threads(int n) { (void)n; }
