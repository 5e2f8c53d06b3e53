/* The all-reduce engine (DESIGN.md: "chunked, compressed, overlapped").
 *
 * A float32 sum over a group, built only on the communicator's primitives
 * (sendrecv, alltoallv, allgather, split), so it runs over MPI and NCCL alike:
 *
 *   ring          reduce-scatter + all-gather around the ring  (allreduce-ring.c)
 *   two_shot      all-to-all of shards, local reduce, all-gather (allreduce-two-shot.c)
 *   hierarchical  inside each node, then across nodes, then inside again
 *                 (allreduce-hier.c)
 *   mpi           the communicator's own all-reduce (the baseline)
 *
 * Every algorithm cuts the vector into chunks of chunk_kib KiB and reduces
 * them one after the other; each may compress what it sends (compress.h),
 * quantising a value once where it enters the exchange and the reduced
 * result once for the all-gather, accumulating in float32.  With
 * compression `none` every algorithm is exact and deterministic: the result
 * is bitwise the float32 sum in a fixed order, and every rank holds the same
 * bits (ring: element of shard j summed x_{j+1} + x_{j+2} + ... + x_j,
 * ranks mod p, left to right; two_shot: x_0 + x_1 + ... in rank order;
 * hierarchical: per node in local-rank order, then nodes in order).  With
 * compression the ranks still hold identical bits, within the bounds of
 * compress.h.
 *
 * Overlap: mr_allreduce_start queues a reduction to a progress thread and
 * returns; mr_allreduce_wait waits for all queued ones.  Meanwhile the
 * caller computes but must not use the group's communicator (the thread
 * needs the communicator's thread_serialized; without it start runs the
 * reduction at once and says so in the log, once). */
#ifndef MR_ALLREDUCE_H
#define MR_ALLREDUCE_H

#include <stddef.h>

#include "kernels/backend.h"
#include "runtime/comm.h"
#include "runtime/plan.h"
#include "runtime/status.h"

typedef struct mr_allreduce_opts {
    mr_allreduce_algo algorithm; /* MR_AR_AUTO: by group size, bytes, compression
                                    (mr_allreduce_choose) */
    int chunk_kib;               /* chunk of the input, KiB of float32 */
    mr_compression compression;
    int block;                   /* values per compression block, 32..256 */
    int overlap;                 /* pipeline row-parallel GEMMs with the reduction */
    int node_size;               /* 0: nodes from the communicator (split_node);
                                    n > 0: consecutive runs of n ranks are a node
                                    (tests and what-if runs on one machine) */
} mr_allreduce_opts;

typedef struct mr_allreduce mr_allreduce;

/* Defaults, then the plan's comm.allreduce.* keys. */
void mr_allreduce_opts_default(mr_allreduce_opts *o);
void mr_allreduce_opts_from_plan(mr_allreduce_opts *o, const mr_plan *p);
/* Environment overrides: MR_ALLREDUCE_ALGORITHM, MR_ALLREDUCE_COMPRESSION,
 * MR_ALLREDUCE_CHUNK_KIB, MR_ALLREDUCE_BLOCK, MR_ALLREDUCE_OVERLAP,
 * MR_ALLREDUCE_NODE_SIZE.  A bad value is an MR_ERR_INPUT naming the
 * variable and the values allowed. */
mr_status mr_allreduce_opts_from_env(mr_allreduce_opts *o);
mr_status mr_allreduce_opts_check(const mr_allreduce_opts *o);

/* Collective over `group` (splits node sub-groups for hierarchical). */
mr_status mr_allreduce_create(mr_comm *group, const mr_allreduce_opts *o, mr_allreduce **out);

/* Where the engine's buffers live and how it computes on them.  The
 * default (mr_allreduce_create) is host memory: memmove, plain loops and
 * runtime/compress.c.  A device engine (runtime/allreduce-cuda.h) gives its
 * own: device memory, its kernels queued in order on one queue (a CUDA
 * stream), with the host's bits (the codecs are byte-identical, the sums
 * are the same additions in the same order).  Its communicator must take
 * device buffers and order its transfers after that queue. */
typedef struct mr_allreduce_local {
    void *ctx;
    void *(*alloc)(void *ctx, size_t bytes); /* NULL when out of memory */
    void (*free)(void *ctx, void *p);
    void (*copy)(void *ctx, void *dst, const void *src, size_t bytes); /* may overlap */
    void (*zero)(void *ctx, void *dst, size_t bytes);
    void (*add)(void *ctx, float *acc, const float *x, size_t n); /* acc[i] = acc[i] + x[i] */
    void (*compress)(void *ctx, mr_compression c, int block, const float *x, size_t n, void *out);
    void (*decompress)(void *ctx, mr_compression c, int block, const void *in, size_t n, float *out);
    void (*decompress_add)(void *ctx, mr_compression c, int block, const void *in, size_t n, float *acc);
    /* before a reduction called from the caller's thread: order the queue
     * after the caller's own queued work (its compute stream); may be NULL */
    void (*begin)(void *ctx);
    /* after a reduction: wait for the queue; the first error of its work */
    mr_status (*fence)(void *ctx);
    void (*destroy)(void *ctx); /* with the engine; may be NULL */
} mr_allreduce_local;

/* The same with buffers and local work as `local` says (copied; its
 * destroy runs with the engine's, also when this fails).  own_group: the
 * engine destroys `group` with itself. */
mr_status mr_allreduce_create_local(mr_comm *group, int own_group, const mr_allreduce_opts *o,
                                    const mr_allreduce_local *local, mr_allreduce **out);
void mr_allreduce_destroy(mr_allreduce *ar);

/* out(n) = sum over ranks of in(n); out may equal in. */
mr_status mr_allreduce_run(mr_allreduce *ar, const float *in, float *out, size_t n);
/* The same with the algorithm and compression given for this call. */
mr_status mr_allreduce_run_as(mr_allreduce *ar, mr_allreduce_algo algo, mr_compression comp, const float *in,
                              float *out, size_t n);
/* In-place reduction of buf(n) on the progress thread (see above).  On a
 * device engine buf's contents must be complete (the caller's stream
 * synchronised) before start: the thread does not wait for the caller's
 * queued work (so that it can overlap the next of it). */
mr_status mr_allreduce_start(mr_allreduce *ar, float *buf, size_t n);
mr_status mr_allreduce_wait(mr_allreduce *ar);

/* y(T,N) = x(T,K) . w(N,K)^T (+ bias), then summed over the group: a
 * row-parallel GEMM and its all-reduce, pipelined in chunks of tokens when
 * the engine overlaps (allreduce-overlap.c).  w is float32, or bf16 when
 * w_bf16 != 0 (mr_backend_matmul_w). */
mr_status mr_allreduce_matmul(mr_allreduce *ar, mr_backend *be, float *y, const float *x, const void *w,
                              int w_bf16, const float *bias, int T, int N, int K);
/* Token rows per chunk mr_allreduce_matmul uses for T x N outputs (0: no
 * pipelining -- overlap off, or fewer than two chunks). */
int mr_allreduce_overlap_rows(const mr_allreduce *ar, int T, int N);

/* The algorithm `auto` resolves to for n values with compression c. */
mr_allreduce_algo mr_allreduce_choose(const mr_allreduce *ar, size_t n, mr_compression c);
const mr_allreduce_opts *mr_allreduce_options(const mr_allreduce *ar);
/* Whether start() really overlaps (overlap asked, group > 1, thread safe). */
int mr_allreduce_overlaps(const mr_allreduce *ar);
/* One line: "ring|two_shot|... compression int8 block 64 chunk 256 KiB,
 * overlap on, 2 nodes x 2" for the start-up log. */
void mr_allreduce_describe(const mr_allreduce *ar, char *buf, size_t len);

#endif
