/* The backend interface: one table of operations that the model graph calls.
 *
 * CPU (kernels/cpu) and CUDA (kernels/cuda) implement the same table; tests
 * run each operation on every backend against a plain reference.  All
 * tensors are row-major float32 in the backend's memory (host memory for the
 * CPU backend).  Shapes are stated in each comment as (rows, cols). */
#ifndef MR_BACKEND_H
#define MR_BACKEND_H

#include <stddef.h>
#include <stdint.h>

typedef struct mr_backend mr_backend;

/* Routing modes of MoE routers. */
typedef enum mr_route_scoring {
    MR_ROUTE_SOFTMAX = 0, /* mixtral, qwen2_moe, qwen3_moe: softmax over all experts, top-k */
    MR_ROUTE_SIGMOID_GROUP, /* deepseek_v3: sigmoid + correction bias, group-limited top-k */
    MR_ROUTE_SCORING_COUNT
} mr_route_scoring;

typedef struct mr_route_params {
    mr_route_scoring scoring;
    int n_experts;
    int top_k;
    int norm_topk_prob;        /* renormalise the chosen k weights to sum 1 */
    float routed_scaling;      /* multiply final weights (1 for softmax routers) */
    const float *bias;         /* (n_experts) e_score_correction_bias, or NULL */
    int n_group, topk_group;   /* group-limited selection (1,1 = off) */
} mr_route_params;

typedef struct mr_backend_ops {
    const char *name;
    /* memory */
    void *(*alloc)(mr_backend *b, size_t bytes);
    void (*free)(mr_backend *b, void *p);
    void (*upload)(mr_backend *b, void *dst, const void *src, size_t bytes);
    void (*download)(mr_backend *b, void *dst, const void *src, size_t bytes);
    void (*sync)(mr_backend *b);

    /* y(M,N) = x(M,K) . w(N,K)^T (+ bias(N)); accumulate!=0 adds into y. */
    void (*matmul)(mr_backend *b, float *y, const float *x, const float *w,
                   const float *bias, int M, int N, int K, int accumulate);
    /* y(rows,dim) = x / sqrt(mean(x^2) + eps) * w(dim).  y may equal x. */
    void (*rmsnorm)(mr_backend *b, float *y, const float *x, const float *w,
                    int rows, int dim, float eps);
    /* y(n) += x(n) */
    void (*add)(mr_backend *b, float *y, const float *x, size_t n);
    /* The residual add fused with the norm after it: x(rows,dim) += a, then
     * h = rmsnorm(x) * w -- one pass over x instead of three.  The same
     * bits as add then rmsnorm on the same backend.  h must not overlap x or a. */
    void (*add_rmsnorm)(mr_backend *b, float *x, float *h, const float *a, const float *w,
                        int rows, int dim, float eps);
    /* out(rows, dim) = table[ids[r]] rows */
    void (*gather_rows)(mr_backend *b, float *out, const float *table,
                        const int32_t *ids, int rows, int dim);
    /* dst[ids[r]] += weight[r] * src[r] for r < rows (weight NULL = 1). */
    void (*scatter_add_rows)(mr_backend *b, float *dst, const float *src,
                             const int32_t *ids, const float *weight, int rows, int dim);
    /* Rotary embedding in place.  x is (ntok, row_stride); head h of token t
     * starts at x + t*row_stride + h*head_stride, its rotary part at +rot_off,
     * rot_dim values long.  angle_i = pos[t] * inv_freq[i], i < rot_dim/2;
     * cos and sin are multiplied by mscale.  interleaved=0 pairs (i, i+rot_dim/2)
     * (rotate_half, HF default); interleaved=1 pairs (2i, 2i+1) (GPT-J style). */
    void (*rope)(mr_backend *b, float *x, int ntok, int nheads, int row_stride,
                 int head_stride, int rot_off, int rot_dim, const int32_t *pos,
                 const float *inv_freq, float mscale, int interleaved);
    /* Causal attention of ntok query tokens over a KV cache.
     * q (ntok, nh, dqk) contiguous; out (ntok, nh, dv) contiguous.
     * Key of cache slot s, position p, kv head g:
     *   k + s*slot_stride_k + (p*nkv + g)*dqk ; value likewise with dv.
     * Token t (in slot[t] at position pos[t]) attends to positions 0..pos[t]
     * of its slot; query head h uses kv head h / (nh/nkv).
     * Softmax of scale*q.k in fp32 with max subtraction. */
    void (*attention)(mr_backend *b, float *out, const float *q, const float *k,
                      const float *v, const int32_t *slot, const int32_t *pos,
                      int ntok, int nh, int nkv, int dqk, int dv,
                      size_t slot_stride_k, size_t slot_stride_v, float scale);
    /* out(T,inter) = silu(gu[:, :inter]) * gu[:, inter:2 inter], gu (T, 2 inter).
     * (No parameter is named I: <complex.h>, pulled in by cblas.h, defines it.) */
    void (*silu_mul)(mr_backend *b, float *out, const float *gu, int T, int inter);
    /* y(T,dim) += sigmoid(g[t]) * x(T,dim)   (qwen2_moe shared-expert gate) */
    void (*sigmoid_gate_add)(mr_backend *b, float *y, const float *x,
                             const float *g, int T, int dim);
    /* Router: logits (T, n_experts) -> idx (T, top_k), weight (T, top_k). */
    void (*route)(mr_backend *b, int32_t *idx, float *weight, const float *logits,
                  int T, const mr_route_params *p);
    /* y(n) *= s */
    void (*scale)(mr_backend *b, float *y, float s, size_t n);
    /* y(n) = 0 */
    void (*zero)(mr_backend *b, float *y, size_t n);
    /* dst(r, 0..cols) = src(r, 0..cols) for r < rows, rows dst_ld and
     * src_ld floats apart (regions must not overlap). */
    void (*copy_rows)(mr_backend *b, float *dst, size_t dst_ld, const float *src, size_t src_ld, int rows,
                      int cols);
    /* Store token rows into a KV cache of `ctx` positions per slot, `row`
     * floats per position: for t < ntok and h < nheads,
     *   cache[(slot[t]*ctx + pos[t])*row + col + h*dst_hs + i]
     *       = src[t*src_ld + h*src_hs + i],   i < width.
     * src_hs = 0 stores one vector into every head (MLA's shared rope key). */
    void (*cache_write)(mr_backend *b, float *cache, size_t row, int ctx, size_t col, size_t dst_hs,
                        const float *src, size_t src_ld, size_t src_hs, const int32_t *slot, const int32_t *pos,
                        int ntok, int nheads, int width);
    /* bf16 weights (stored as uint16_t: the top half of the float32,
     * rounded to nearest even, NaN kept NaN).
     * y(M,N) = bf16(x(M,K)) . w(N,K)^T (+ bias(N)), w bf16: x is rounded to
     * bf16, the exact products are summed in float32; accumulate != 0 adds
     * into y.  Needs the scratch that reserve_bf16(M, K) prepared. */
    void (*matmul_bf16)(mr_backend *b, float *y, const float *x, const uint16_t *w, const float *bias, int M,
                        int N, int K, int accumulate);
    /* dst(n) bf16 in backend memory = src(n) float32 in host memory. */
    void (*upload_bf16)(mr_backend *b, uint16_t *dst, const float *src, size_t n);
    /* Scratch for matmul_bf16 up to (M, K), allocated now (start-up), so
     * that the calls allocate nothing.  0, or -1 when out of memory. */
    int (*reserve_bf16)(mr_backend *b, int M, int K);
    /* The deterministic mode's product (NULL where a backend has none):
     * y(M,N) = x(M,K) . w(N,K)^T (+ bias) with w float32 or (w_bf16) bf16
     * as matmul_bf16, each element summed in the same fixed order whatever
     * M, N, the threads or the machine: lanes over blocks of kc columns,
     * the blocks added in order onto 0 + bias.  block_stride != 0 (bias
     * NULL): block i's sum alone into y + i block_stride instead, for a
     * caller that adds the blocks of several ranks in that order.  kc at
     * most 8192; bf16 needs reserve_bf16(M, K). */
    void (*matmul_fixed)(mr_backend *b, float *y, const float *x, const void *w, int w_bf16, const float *bias,
                         int M, int N, int K, int kc, size_t block_stride);
    /* 1: the pointers alloc returns are host memory that the caller may
     * read and write directly (the CPU backend); 0: device memory, reached
     * only through the ops, upload and download (CUDA). */
    int host_memory;
} mr_backend_ops;

struct mr_backend {
    const mr_backend_ops *ops;
    void *ctx;
    int threads;
};

/* y = x . w^T by matmul (w float32) or matmul_bf16 (bf16 != 0: w holds
 * uint16_t bf16 values). */
static inline void mr_backend_matmul_w(mr_backend *b, float *y, const float *x, const void *w, int bf16,
                                       const float *bias, int M, int N, int K, int accumulate) {
    if (bf16) b->ops->matmul_bf16(b, y, x, (const uint16_t *)w, bias, M, N, K, accumulate);
    else b->ops->matmul(b, y, x, (const float *)w, bias, M, N, K, accumulate);
}

/* CPU backend: threads <= 0 uses every core this process may run on. */
int mr_backend_cpu_init(mr_backend *b, int threads);
/* First thing in main (before MPI_Init or threads): if OpenBLAS loaded a
 * generic core on a CPU with AVX2 / AVX-512 (a release older than the
 * CPU) and OPENBLAS_CORETYPE is unset: restart != 0 starts this program
 * again with the variable set (the benchmarks); restart = 0 only warns
 * (moerun generate: other kernels give other rounding, and the tests hold
 * a resumed job to the bits of an uninterrupted one).  Returns when no
 * restart happened.  kernels/cpu/cpu-blas-core.c. */
void mr_cpu_blas_core_check(char **argv, int restart);
/* The core mr_cpu_blas_core_check would set for OpenBLAS core `core` on
 * this CPU ("SkylakeX", "Haswell"), or NULL. */
const char *mr_cpu_blas_better_core(const char *core);
/* Frees the backend's scratch (bf16 matmul). */
void mr_backend_cpu_free(mr_backend *b);

#endif
