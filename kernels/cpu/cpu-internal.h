/* Internal to the CPU backend (kernels/cpu): the operations that live in
 * their own files, and the size below which a loop runs on one thread.
 * Nothing outside kernels/cpu includes this header. */
#ifndef MR_CPU_INTERNAL_H
#define MR_CPU_INTERNAL_H

#include "kernels/backend.h"

/* Element count under which an OpenMP team costs more than it saves
 * (waking the team is a few microseconds; 32 K floats is ~10 us of work). */
#define MR_CPU_PAR_MIN 32768

/* cpu-attention.c */
void mr_cpu_rope(mr_backend *b, float *x, int ntok, int nheads, int row_stride,
                 int head_stride, int rot_off, int rot_dim, const int32_t *pos,
                 const float *inv_freq, float mscale, int interleaved);
void mr_cpu_attention(mr_backend *b, float *out, const float *q, const float *k,
                      const float *v, const int32_t *slot, const int32_t *pos,
                      int ntok, int nh, int nkv, int dqk, int dv,
                      size_t slot_stride_k, size_t slot_stride_v, float scale);

/* cpu-gemm-small.c: y(M, n0:n1) = x(M,K) . w(n0:n1,K)^T (+ bias(n0:n1)),
 * accumulate != 0 adds into y; y, w and bias are the whole (M,N), (N,K),
 * (N) arrays.  Single-threaded: callers split n0:n1.  Use only where
 * _ok() says yes (FMA in hardware) and for M <= _max_m(). */
void mr_cpu_gemm_small(float *y, const float *x, const float *w, const float *bias, int M,
                       int N, int K, int n0, int n1, int accumulate);
int mr_cpu_gemm_small_ok(void);
/* y(n0:n1) += x(K) . w(n0:n1,K)^T, w bf16 (all N rows; single-threaded).
 * Needs FMA in hardware as well (mr_cpu_gemm_small_ok). */
void mr_cpu_gemv_bf16(float *y, const float *x, const uint16_t *w, int K, int n0, int n1);
/* The same with the portable loop (what runs without AVX2 + FMA), for tests. */
void mr_cpu_gemv_bf16_portable(float *y, const float *x, const uint16_t *w, int K, int n0, int n1);
int mr_cpu_gemm_small_max_m(void);
/* The deterministic mode's product: the same operations for an element
 * whatever M, the row split or the ISA clone (fmaf is exact-rounded; a CPU
 * without FMA calls the library's, slowly).  Blocks of kc columns, kc at
 * most mr_cpu_gemm_fixed_max_kc(); strides ldy, ldx, ldw.  cpu-gemm-small.c. */
void mr_cpu_gemm_fixed(float *y, int ldy, const float *x, int ldx, const float *w, int ldw, const float *bias,
                       int M, int K, int kc, int n0, int n1, int accumulate);
int mr_cpu_gemm_fixed_max_kc(void);

/* cpu-moe.c */
void mr_cpu_route(mr_backend *b, int32_t *idx, float *weight, const float *logits,
                  int T, const mr_route_params *p);

#endif
