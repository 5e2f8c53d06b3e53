/* Stand-in for <cblas.h> when tests/gpu/run.sh builds the GPU op test on a
 * machine without OpenBLAS: declares just what kernels/cpu uses, and
 * naive-cblas.c implements it (plain loops, double accumulation).  Never
 * used by the CMake build, which links the real OpenBLAS. */
#ifndef MR_NAIVE_CBLAS_H
#define MR_NAIVE_CBLAS_H

typedef enum CBLAS_ORDER { CblasRowMajor = 101, CblasColMajor = 102 } CBLAS_ORDER;
typedef enum CBLAS_TRANSPOSE { CblasNoTrans = 111, CblasTrans = 112 } CBLAS_TRANSPOSE;

void cblas_sgemv(CBLAS_ORDER order, CBLAS_TRANSPOSE trans, int m, int n, float alpha,
                 const float *a, int lda, const float *x, int incx, float beta, float *y,
                 int incy);
void cblas_sgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k,
                 float alpha, const float *a, int lda, const float *b, int ldb, float beta,
                 float *c, int ldc);
void openblas_set_num_threads(int n);

#endif
