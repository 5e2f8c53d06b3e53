/* A row-parallel GEMM and its all-reduce, pipelined along the tokens.
 *
 *   y(T,N) = x(T,K) . w^T summed over the tensor group, T rows cut into
 *   chunks c0 c1 c2 ... of `rows` tokens:
 *
 *   compute  | GEMM c0 | GEMM c1 | GEMM c2 | GEMM c3 |
 *   progress           | reduce c0 | reduce c1 | reduce c2 | reduce c3 |
 *                                                           ^ wait
 *
 * The caller's thread computes chunk i+1 while the engine's progress
 * thread reduces chunk i (mr_allreduce_start), so the layer costs about
 * max(compute, communication) plus one chunk of the other.  Chunks are sized
 * by the engine's chunk_kib (never fewer than MR_OVERLAP_MIN_ROWS rows);
 * with fewer than two chunks, or no overlap, it is GEMM then all-reduce. */
#include "runtime/allreduce-internal.h"

int mr_allreduce_overlap_rows(const mr_allreduce *ar, int T, int N) {
    if (!ar || !ar->overlap_ok || N <= 0) return 0;
    int rows = (int)((size_t)ar->o.chunk_kib * 256 / (size_t)N);
    if (rows < MR_OVERLAP_MIN_ROWS) rows = MR_OVERLAP_MIN_ROWS;
    return T >= 2 * rows ? rows : 0;
}

mr_status mr_allreduce_matmul(mr_allreduce *ar, mr_backend *be, float *y, const float *x, const void *w,
                              int w_bf16, const float *bias, int T, int N, int K) {
    const mr_backend_ops *ops = be->ops;
    int rows = mr_allreduce_overlap_rows(ar, T, N);
    if (rows == 0) { /* run orders a device engine after the GEMM (its begin) */
        mr_backend_matmul_w(be, y, x, w, w_bf16, bias, T, N, K, 0);
        return mr_allreduce_run(ar, y, y, (size_t)T * N);
    }
    mr_status st = MR_OK;
    for (int r0 = 0; r0 < T && st == MR_OK; r0 += rows) {
        int n = T - r0 < rows ? T - r0 : rows;
        mr_backend_matmul_w(be, y + (size_t)r0 * N, x + (size_t)r0 * K, w, w_bf16, bias, n, N, K, 0);
        ops->sync(be);
        st = mr_allreduce_start(ar, y + (size_t)r0 * N, (size_t)n * N);
    }
    mr_status st2 = mr_allreduce_wait(ar);
    return st != MR_OK ? st : st2;
}
