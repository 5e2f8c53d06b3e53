/* Internal to the CUDA backend (kernels/cuda): the context behind
 * mr_backend.ctx, the error macros, and the ops that live in their own
 * files.  Included by the .cu files only (C++ through nvcc). */
#ifndef MR_CUDA_INTERNAL_H
#define MR_CUDA_INTERNAL_H

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "kernels/cuda/cuda-backend.h"

#define MR_CUDA_ERRMSG_MAX 512
#define MR_CUDA_THREADS 256 /* block size of the element-wise kernels */

typedef struct mr_cuda_ctx {
    int device;
    int sm_count;
    cudaStream_t stream;
    cublasHandle_t cublas;
    void *workspace; /* cuBLAS workspace, so cuBLAS never allocates in an op */
    size_t workspace_bytes;
    void *scratch; /* bf16 copies of x, staging for mr_cuda_upload_bf16 */
    size_t scratch_bytes;
    int failed;                   /* an error was recorded */
    char msg[MR_CUDA_ERRMSG_MAX]; /* the first one */
} mr_cuda_ctx;

static inline mr_cuda_ctx *mr_cuda_ctx_of(mr_backend *b) { return (mr_cuda_ctx *)b->ctx; }

/* Record "file:line: message" as the backend's error (the first one only
 * is kept; each is printed to stderr). */
void mr_cuda_fail(mr_cuda_ctx *c, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The only macros that hide a return or a goto (STYLE.md).  The void forms
 * serve the ops, which return void; the _GOTO forms set st = -1. */
#define CUDA_CHECK(c, call)                                                               \
    do {                                                                                  \
        cudaError_t mr_e_ = (call);                                                       \
        if (mr_e_ != cudaSuccess) {                                                       \
            mr_cuda_fail((c), __FILE__, __LINE__, "%s: %s", #call, cudaGetErrorString(mr_e_)); \
            return;                                                                       \
        }                                                                                 \
    } while (0)
#define CUDA_CHECK_GOTO(c, call, st, label)                                               \
    do {                                                                                  \
        cudaError_t mr_e_ = (call);                                                       \
        if (mr_e_ != cudaSuccess) {                                                       \
            mr_cuda_fail((c), __FILE__, __LINE__, "%s: %s", #call, cudaGetErrorString(mr_e_)); \
            (st) = -1;                                                                    \
            goto label;                                                                   \
        }                                                                                 \
    } while (0)
#define CUBLAS_CHECK(c, call)                                                             \
    do {                                                                                  \
        cublasStatus_t mr_s_ = (call);                                                    \
        if (mr_s_ != CUBLAS_STATUS_SUCCESS) {                                             \
            mr_cuda_fail((c), __FILE__, __LINE__, "%s: %s", #call, cublasGetStatusString(mr_s_)); \
            return;                                                                       \
        }                                                                                 \
    } while (0)
#define CUBLAS_CHECK_GOTO(c, call, st, label)                                             \
    do {                                                                                  \
        cublasStatus_t mr_s_ = (call);                                                    \
        if (mr_s_ != CUBLAS_STATUS_SUCCESS) {                                             \
            mr_cuda_fail((c), __FILE__, __LINE__, "%s: %s", #call, cublasGetStatusString(mr_s_)); \
            (st) = -1;                                                                    \
            goto label;                                                                   \
        }                                                                                 \
    } while (0)

/* Blocks for a grid-stride loop over n items: enough to fill the device a
 * few times over, never more than the items need. */
static inline unsigned mr_cuda_grid(const mr_cuda_ctx *c, size_t n, int threads) {
    size_t want = (n + (size_t)threads - 1) / (size_t)threads;
    size_t cap = (size_t)(c->sm_count > 0 ? c->sm_count : 16) * 16;
    if (want > cap) want = cap;
    return want ? (unsigned)want : 1u;
}

/* float32 -> bf16 bits, round to nearest even, NaN kept quiet: the same
 * bits as mr_f32_to_bf16 in runtime/compress.c. */
static __device__ __forceinline__ uint16_t mr_cuda_bf16_bits(float f) {
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* Sums and maxima over a warp; every lane gets the result. */
static __device__ __forceinline__ float mr_cuda_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
static __device__ __forceinline__ float mr_cuda_warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* cuda-fixed.cu: the deterministic mode's product (backend.h) */
void mr_cuda_matmul_fixed(mr_backend *b, float *y, const float *x, const void *w, int w_bf16, const float *bias,
                          int M, int N, int K, int kc, size_t block_stride);

/* cuda-elementwise.cu */
void mr_cuda_add_rmsnorm(mr_backend *b, float *x, float *h, const float *a, const float *w, int rows, int dim,
                         float eps);
void mr_cuda_rmsnorm(mr_backend *b, float *y, const float *x, const float *w, int rows,
                     int dim, float eps);
void mr_cuda_add(mr_backend *b, float *y, const float *x, size_t n);
void mr_cuda_scale(mr_backend *b, float *y, float s, size_t n);
void mr_cuda_gather_rows(mr_backend *b, float *out, const float *table, const int32_t *ids,
                         int rows, int dim);
void mr_cuda_scatter_add_rows(mr_backend *b, float *dst, const float *src, const int32_t *ids,
                              const float *weight, int rows, int dim);
void mr_cuda_silu_mul(mr_backend *b, float *out, const float *gu, int T, int inter);
void mr_cuda_zero(mr_backend *b, float *y, size_t n);
void mr_cuda_copy_rows(mr_backend *b, float *dst, size_t dst_ld, const float *src, size_t src_ld,
                       int rows, int cols);
void mr_cuda_cache_write(mr_backend *b, float *cache, size_t row, int ctx, size_t col, size_t dst_hs,
                         const float *src, size_t src_ld, size_t src_hs, const int32_t *slot,
                         const int32_t *pos, int ntok, int nheads, int width);
void mr_cuda_sigmoid_gate_add(mr_backend *b, float *y, const float *x, const float *g, int T,
                              int dim);
/* y(M,N) = bias broadcast (accumulate: y += bias), before a GEMM with beta 1. */
void mr_cuda_bias_rows(mr_cuda_ctx *c, float *y, const float *bias, int M, int N, int accumulate);
/* dst(n) bf16 = src(n) float32 on the device, on the backend's stream. */
void mr_cuda_f32_to_bf16(mr_cuda_ctx *c, uint16_t *dst, const float *src, size_t n);

/* cuda-attention.cu */
void mr_cuda_rope(mr_backend *b, float *x, int ntok, int nheads, int row_stride, int head_stride,
                  int rot_off, int rot_dim, const int32_t *pos, const float *inv_freq,
                  float mscale, int interleaved);
void mr_cuda_attention(mr_backend *b, float *out, const float *q, const float *k, const float *v,
                       const int32_t *slot, const int32_t *pos, int ntok, int nh, int nkv,
                       int dqk, int dv, size_t slot_stride_k, size_t slot_stride_v, float scale);

/* cuda-moe.cu */
void mr_cuda_route(mr_backend *b, int32_t *idx, float *weight, const float *logits, int T,
                   const mr_route_params *p);

#endif
