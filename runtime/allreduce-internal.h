/* Shared by the all-reduce engine's files: the engine state, shard
 * arithmetic and the algorithm entry points. */
#ifndef MR_ALLREDUCE_INTERNAL_H
#define MR_ALLREDUCE_INTERNAL_H

#include "runtime/allreduce.h"
#include "runtime/compress.h"
#include "runtime/progress.h"

#define MR_AR_TAG 0x4152 /* "AR": tag of the engine's point-to-point messages */
#define MR_OVERLAP_MIN_ROWS 16 /* fewest token rows in one pipelined GEMM chunk */
#define MR_AR_SMALL_BYTES (256u << 10) /* auto, exact, two ranks: the communicator's own up to this, ring above */

/* Scratch memory, grown (never in steady state: sized for a whole chunk at
 * create) by ar_scratch. */
typedef struct ar_buf {
    void *p;
    size_t cap;
} ar_buf;

struct mr_allreduce {
    mr_comm *group;
    int own_group;
    mr_allreduce_local L;      /* buffers and local work: host or a device */
    mr_allreduce_opts o;
    size_t chunk;              /* values per chunk, a multiple of the block */
    /* hierarchical: this rank's node and its peers of the same local rank */
    mr_comm *node, *cross;
    int n_nodes;               /* 0: ranks per node differ, no hierarchical */
    ar_buf send, recv, acc, tmp;
    int *counts;               /* 4 x group size ints for alltoallv */
    /* overlap: reductions queued on a progress thread */
    mr_progress *prog;
    int overlap_ok, warned;
};

/* Values [shard_begin(j), shard_begin(j+1)) belong to rank j of p: blocks
 * of `unit` values dealt out as evenly as possible, so every shard boundary
 * is a block boundary (compressed shards are whole blocks). */
static inline size_t ar_shard_begin(size_t n, int p, int j, size_t unit) {
    size_t nb = (n + unit - 1) / unit;
    size_t b = nb * (size_t)j / (size_t)p;
    return b * unit < n ? b * unit : n;
}

/* Make `b` at least `bytes` long (contents lost), in the engine's memory. */
mr_status ar_reserve(mr_allreduce *ar, ar_buf *b, size_t bytes);

/* The local work, on host or device memory as the engine's L says. */
static inline void ar_copy(mr_allreduce *ar, void *dst, const void *src, size_t bytes) {
    if (bytes && dst != src) ar->L.copy(ar->L.ctx, dst, src, bytes);
}
static inline void ar_zero(mr_allreduce *ar, void *dst, size_t bytes) {
    if (bytes) ar->L.zero(ar->L.ctx, dst, bytes);
}
static inline void ar_add(mr_allreduce *ar, float *acc, const float *x, size_t n) {
    if (n) ar->L.add(ar->L.ctx, acc, x, n);
}
static inline void ar_compress(mr_allreduce *ar, mr_compression c, const float *x, size_t n, void *out) {
    if (n) ar->L.compress(ar->L.ctx, c, ar->o.block, x, n, out);
}
static inline void ar_decompress(mr_allreduce *ar, mr_compression c, const void *in, size_t n, float *out) {
    if (n) ar->L.decompress(ar->L.ctx, c, ar->o.block, in, n, out);
}
static inline void ar_decompress_add(mr_allreduce *ar, mr_compression c, const void *in, size_t n, float *acc) {
    if (n) ar->L.decompress_add(ar->L.ctx, c, ar->o.block, in, n, acc);
}

/* The compression unit: the block for compressed modes, 1 value for none. */
static inline size_t ar_unit(const mr_allreduce *ar, mr_compression c) {
    return c == MR_COMPRESS_NONE ? 1 : (size_t)ar->o.block;
}

/* One chunk of n values on communicator c (out may equal in).  These use
 * the engine's scratch buffers and the group/node/cross communicators. */
mr_status ar_ring(mr_allreduce *ar, mr_comm *c, mr_compression comp, const float *in, float *out, size_t n);
mr_status ar_two_shot(mr_allreduce *ar, mr_comm *c, mr_compression comp, const float *in, float *out, size_t n);
mr_status ar_hier(mr_allreduce *ar, mr_compression comp, const float *in, float *out, size_t n);

#endif
