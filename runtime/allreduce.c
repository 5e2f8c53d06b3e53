/* The all-reduce engine: options, the choice of algorithm, chunking, the
 * node sub-groups of hierarchical, and overlap on a progress thread
 * (progress.c).  The algorithms themselves live in
 * allreduce-{ring,two-shot,hier}.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/allreduce-internal.h"

void mr_allreduce_opts_default(mr_allreduce_opts *o) {
    memset(o, 0, sizeof *o);
    o->algorithm = MR_AR_AUTO;
    o->chunk_kib = 256;
    o->compression = MR_COMPRESS_NONE;
    o->block = 32;
    o->overlap = 0;
}

void mr_allreduce_opts_from_plan(mr_allreduce_opts *o, const mr_plan *p) {
    mr_allreduce_opts_default(o);
    o->algorithm = p->comm.allreduce.algorithm;
    o->chunk_kib = p->comm.allreduce.chunk_kib;
    o->compression = p->comm.allreduce.compression;
    o->block = p->comm.allreduce.block;
    o->overlap = p->comm.allreduce.overlap;
}

static mr_status env_enum(const char *var, int *v, int count, const char *(*name)(int)) {
    const char *s = getenv(var);
    if (!s || !*s) return MR_OK;
    char allowed[256] = "";
    for (int i = 0; i < count; i++) {
        if (strcmp(s, name(i)) == 0) {
            *v = i;
            return MR_OK;
        }
        snprintf(allowed + strlen(allowed), sizeof allowed - strlen(allowed), "%s%s", i ? ", " : "", name(i));
    }
    return mr_error(MR_ERR_INPUT, "environment %s=%s: expected one of %s", var, s, allowed);
}

static mr_status env_int(const char *var, int *v, int lo, int hi) {
    const char *s = getenv(var);
    if (!s || !*s) return MR_OK;
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (errno || *end || x < lo || x > hi)
        return mr_error(MR_ERR_INPUT, "environment %s=%s: expected an integer in [%d, %d]", var, s, lo, hi);
    *v = (int)x;
    return MR_OK;
}

static const char *algo_name_i(int i) { return mr_allreduce_algo_name((mr_allreduce_algo)i); }
static const char *comp_name_i(int i) { return mr_compression_name((mr_compression)i); }

mr_status mr_allreduce_opts_from_env(mr_allreduce_opts *o) {
    int a = (int)o->algorithm, c = (int)o->compression;
    MR_CHECK(env_enum("MR_ALLREDUCE_ALGORITHM", &a, MR_AR_ALGO_COUNT, algo_name_i));
    MR_CHECK(env_enum("MR_ALLREDUCE_COMPRESSION", &c, MR_COMPRESSION_COUNT, comp_name_i));
    o->algorithm = (mr_allreduce_algo)a;
    o->compression = (mr_compression)c;
    MR_CHECK(env_int("MR_ALLREDUCE_CHUNK_KIB", &o->chunk_kib, 1, 1 << 20));
    MR_CHECK(env_int("MR_ALLREDUCE_BLOCK", &o->block, MR_COMPRESS_BLOCK_MIN, MR_COMPRESS_BLOCK_MAX));
    MR_CHECK(env_int("MR_ALLREDUCE_OVERLAP", &o->overlap, 0, 1));
    MR_CHECK(env_int("MR_ALLREDUCE_NODE_SIZE", &o->node_size, 0, 1 << 20));
    return mr_allreduce_opts_check(o);
}

mr_status mr_allreduce_opts_check(const mr_allreduce_opts *o) {
    if (o->block < MR_COMPRESS_BLOCK_MIN || o->block > MR_COMPRESS_BLOCK_MAX || (o->block & (o->block - 1)))
        return mr_error(MR_ERR_INPUT, "all-reduce block %d: expected a power of two from %d to %d", o->block,
                        MR_COMPRESS_BLOCK_MIN, MR_COMPRESS_BLOCK_MAX);
    if (o->chunk_kib < 1) return mr_error(MR_ERR_INPUT, "all-reduce chunk of %d KiB", o->chunk_kib);
    if (o->algorithm == MR_AR_MPI && o->compression != MR_COMPRESS_NONE)
        return mr_error(MR_ERR_INPUT,
                        "all-reduce algorithm mpi cannot compress (compression %s): use ring, two_shot, "
                        "hierarchical or auto",
                        mr_compression_name(o->compression));
    return MR_OK;
}

mr_status ar_reserve(mr_allreduce *ar, ar_buf *b, size_t bytes) {
    if (bytes <= b->cap) return MR_OK;
    if (b->p) ar->L.free(ar->L.ctx, b->p);
    b->cap = 0;
    b->p = ar->L.alloc(ar->L.ctx, bytes);
    if (!b->p) return mr_error(MR_ERR_NOMEM, "all-reduce: out of memory for %zu bytes of scratch", bytes);
    b->cap = bytes;
    return MR_OK;
}

/* The host's local work: plain memory, loops and runtime/compress.c. */
static void *h_alloc(void *ctx, size_t bytes) { return malloc(bytes); }
static void h_free(void *ctx, void *p) { free(p); }
static void h_copy(void *ctx, void *dst, const void *src, size_t bytes) { memmove(dst, src, bytes); }
static void h_zero(void *ctx, void *dst, size_t bytes) { memset(dst, 0, bytes); }
static void h_add(void *ctx, float *acc, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) acc[i] += x[i];
}
static void h_compress(void *ctx, mr_compression c, int block, const float *x, size_t n, void *out) {
    mr_compress(c, block, x, n, out);
}
static void h_decompress(void *ctx, mr_compression c, int block, const void *in, size_t n, float *out) {
    mr_decompress(c, block, in, n, out);
}
static void h_decompress_add(void *ctx, mr_compression c, int block, const void *in, size_t n, float *acc) {
    mr_decompress_add(c, block, in, n, acc);
}
static mr_status h_fence(void *ctx) { return MR_OK; }

static const mr_allreduce_local host_local = {
    .alloc = h_alloc,
    .free = h_free,
    .copy = h_copy,
    .zero = h_zero,
    .add = h_add,
    .compress = h_compress,
    .decompress = h_decompress,
    .decompress_add = h_decompress_add,
    .fence = h_fence,
};

/* Node sub-groups: consecutive runs of node_size ranks, or what the
 * communicator says shares a node.  Hierarchical needs the same number of
 * ranks on every node; otherwise n_nodes stays 0 and auto never picks it. */
static mr_status make_nodes(mr_allreduce *ar) {
    mr_comm *g = ar->group;
    if (ar->o.node_size > 0) {
        if (g->size % ar->o.node_size)
            return mr_error(MR_ERR_INPUT, "all-reduce node size %d does not divide the group of %d ranks",
                            ar->o.node_size, g->size);
        MR_CHECK(g->ops->split(g, g->rank / ar->o.node_size, g->rank, &ar->node));
    } else {
        MR_CHECK(g->ops->split_node(g, &ar->node));
    }
    int q[2] = {ar->node->size, -ar->node->size};
    MR_CHECK(g->ops->allreduce_max_i32(g, q, 2));
    MR_CHECK(g->ops->split(g, ar->node->rank, g->rank, &ar->cross));
    ar->n_nodes = q[0] == -q[1] ? g->size / ar->node->size : 0;
    return MR_OK;
}

typedef struct ar_job {
    float *buf;
    size_t n;
} ar_job;

static mr_status run_chunks(mr_allreduce *ar, mr_allreduce_algo algo, mr_compression comp, const float *in,
                            float *out, size_t n);

/* On the progress thread: the caller made the buffer ready (the overlap
 * syncs each GEMM chunk before it starts the reduction), so no begin. */
static mr_status run_job(void *ctx, void *job) {
    ar_job *j = job;
    mr_allreduce *ar = ctx;
    return run_chunks(ar, ar->o.algorithm, ar->o.compression, j->buf, j->buf, j->n);
}

mr_status mr_allreduce_create(mr_comm *group, const mr_allreduce_opts *o, mr_allreduce **out) {
    return mr_allreduce_create_local(group, 0, o, &host_local, out);
}

mr_status mr_allreduce_create_local(mr_comm *group, int own_group, const mr_allreduce_opts *o,
                                    const mr_allreduce_local *local, mr_allreduce **out) {
    *out = NULL;
    mr_allreduce *ar = calloc(1, sizeof *ar);
    mr_status st = ar ? mr_allreduce_opts_check(o) : mr_error(MR_ERR_NOMEM, "out of memory");
    if (!ar) {
        if (local->destroy) local->destroy(local->ctx);
        if (own_group) mr_comm_destroy(group);
        return st;
    }
    ar->group = group;
    ar->own_group = own_group;
    ar->L = *local;
    ar->o = *o;
    size_t chunk = (size_t)o->chunk_kib * 256;
    chunk -= chunk % (size_t)o->block;
    ar->chunk = chunk ? chunk : (size_t)o->block;
    if (st == MR_OK) {
        ar->counts = calloc(4 * (size_t)group->size, sizeof(int));
        if (!ar->counts) st = mr_error(MR_ERR_NOMEM, "out of memory");
    }
    if (st == MR_OK && group->size > 1) st = make_nodes(ar);
    /* scratch for a whole chunk now, so the decode loop never allocates */
    size_t big = ar->chunk * 4 + (size_t)group->size * (MR_COMPRESS_BLOCK_MAX * 4 + 64);
    if (st == MR_OK) st = ar_reserve(ar, &ar->send, big);
    if (st == MR_OK) st = ar_reserve(ar, &ar->recv, big);
    if (st == MR_OK) st = ar_reserve(ar, &ar->tmp, big);
    if (st == MR_OK) st = ar_reserve(ar, &ar->acc, big);
    ar->overlap_ok = o->overlap && group->size > 1 && group->thread_serialized;
    if (st == MR_OK && ar->overlap_ok) {
        /* while a reduction runs there, the group's (and node sub-groups')
         * waits sleep between tests, leaving the cores to the caller's GEMM */
        mr_comm *comms[3] = {ar->group, ar->node, ar->cross};
        st = mr_progress_create(comms, 3, run_job, ar, sizeof(ar_job), &ar->prog);
    }
    if (st != MR_OK) {
        mr_allreduce_destroy(ar);
        return st;
    }
    *out = ar;
    return MR_OK;
}

void mr_allreduce_destroy(mr_allreduce *ar) {
    if (!ar) return;
    mr_progress_destroy(ar->prog);
    mr_comm_destroy(ar->node);
    mr_comm_destroy(ar->cross);
    ar_buf *bufs[4] = {&ar->send, &ar->recv, &ar->tmp, &ar->acc};
    for (int i = 0; i < 4; i++)
        if (bufs[i]->p) ar->L.free(ar->L.ctx, bufs[i]->p);
    if (ar->own_group) mr_comm_destroy(ar->group);
    if (ar->L.destroy) ar->L.destroy(ar->L.ctx);
    free(ar->counts);
    free(ar);
}

/* Tuned on bench/results/allreduce-* (2-core machine; shared memory and TCP
 * between namespace nodes, 2/4/8 ranks, 64 KiB to 16 MiB): exact sums are
 * the communicator's own all-reduce (MPI_Allreduce was as fast or faster in
 * every cell but one) except two ranks and large messages, where the ring won
 * over TCP (1.45x at 16 MiB); compressed sums are two-shot (best or within a
 * few percent everywhere; the ring's compressed form sends more). */
mr_allreduce_algo mr_allreduce_choose(const mr_allreduce *ar, size_t n, mr_compression c) {
    if (ar->o.algorithm != MR_AR_AUTO) return ar->o.algorithm;
    if (c != MR_COMPRESS_NONE) return MR_AR_TWO_SHOT;
    if (ar->group->device_memory) return MR_AR_MPI; /* NCCL's own all-reduce (not measured against ours yet) */
    if (ar->group->size == 2 && n * sizeof(float) > MR_AR_SMALL_BYTES) return MR_AR_RING;
    return MR_AR_MPI;
}

static mr_status reduce(mr_allreduce *ar, mr_allreduce_algo algo, mr_compression comp, const float *in,
                        float *out, size_t n);

/* The reduction, then the fence: the queue's work done, its error seen. */
static mr_status run_chunks(mr_allreduce *ar, mr_allreduce_algo algo, mr_compression comp, const float *in,
                            float *out, size_t n) {
    mr_status st = reduce(ar, algo, comp, in, out, n);
    mr_status fe = ar->L.fence(ar->L.ctx);
    return st != MR_OK ? st : fe;
}

static mr_status reduce(mr_allreduce *ar, mr_allreduce_algo algo, mr_compression comp, const float *in,
                        float *out, size_t n) {
    mr_comm *g = ar->group;
    if (g->size == 1 || n == 0) {
        ar_copy(ar, out, in, n * sizeof(float));
        return MR_OK;
    }
    if (algo == MR_AR_AUTO) algo = mr_allreduce_choose(ar, n, comp);
    if (algo == MR_AR_MPI) {
        if (comp != MR_COMPRESS_NONE)
            return mr_error(MR_ERR_INPUT, "all-reduce algorithm mpi cannot compress (%s)", mr_compression_name(comp));
        ar_copy(ar, out, in, n * sizeof(float));
        return g->ops->allreduce_sum_f32(g, out, n);
    }
    if (algo == MR_AR_HIERARCHICAL && !ar->n_nodes)
        return mr_error(MR_ERR_UNSUPPORTED, "hierarchical all-reduce needs the same number of ranks on every node");
    for (size_t off = 0; off < n; off += ar->chunk) {
        size_t k = n - off < ar->chunk ? n - off : ar->chunk;
        switch (algo) {
        case MR_AR_RING: MR_CHECK(ar_ring(ar, g, comp, in + off, out + off, k)); break;
        case MR_AR_TWO_SHOT: MR_CHECK(ar_two_shot(ar, g, comp, in + off, out + off, k)); break;
        case MR_AR_HIERARCHICAL: MR_CHECK(ar_hier(ar, comp, in + off, out + off, k)); break;
        default: return mr_error(MR_ERR_INTERNAL, "all-reduce algorithm %d", (int)algo);
        }
    }
    return MR_OK;
}

mr_status mr_allreduce_run_as(mr_allreduce *ar, mr_allreduce_algo algo, mr_compression comp, const float *in,
                              float *out, size_t n) {
    if (ar->L.begin) ar->L.begin(ar->L.ctx);
    return run_chunks(ar, algo, comp, in, out, n);
}

mr_status mr_allreduce_run(mr_allreduce *ar, const float *in, float *out, size_t n) {
    return mr_allreduce_run_as(ar, ar->o.algorithm, ar->o.compression, in, out, n);
}

int mr_allreduce_overlaps(const mr_allreduce *ar) { return ar->overlap_ok; }

mr_status mr_allreduce_start(mr_allreduce *ar, float *buf, size_t n) {
    if (!ar->overlap_ok) {
        if (ar->o.overlap && ar->group->size > 1 && !ar->warned) {
            ar->warned = 1;
            MR_LOG(MR_LOG_WARN, "all-reduce overlap off: the communicator is not thread-safe (MPI thread level "
                                "below MPI_THREAD_SERIALIZED)");
        }
        return mr_allreduce_run(ar, buf, buf, n);
    }
    ar_job j = {buf, n};
    return mr_progress_start(ar->prog, &j);
}

mr_status mr_allreduce_wait(mr_allreduce *ar) { return ar->overlap_ok ? mr_progress_wait(ar->prog) : MR_OK; }

const mr_allreduce_opts *mr_allreduce_options(const mr_allreduce *ar) { return &ar->o; }

void mr_allreduce_describe(const mr_allreduce *ar, char *buf, size_t len) {
    char nodes[64] = "";
    if (ar->n_nodes) snprintf(nodes, sizeof nodes, ", %d node%s x %d", ar->n_nodes, ar->n_nodes > 1 ? "s" : "",
                              ar->group->size / ar->n_nodes);
    char algo[96];
    if (ar->o.algorithm != MR_AR_AUTO) snprintf(algo, sizeof algo, "%s", mr_allreduce_algo_name(ar->o.algorithm));
    else if (ar->group->size == 1) snprintf(algo, sizeof algo, "auto (one rank: nothing to reduce)");
    else {
        mr_allreduce_algo small = mr_allreduce_choose(ar, 1, ar->o.compression);
        mr_allreduce_algo large = mr_allreduce_choose(ar, (size_t)1 << 24, ar->o.compression);
        if (small == large) snprintf(algo, sizeof algo, "auto = %s", mr_allreduce_algo_name(small));
        else snprintf(algo, sizeof algo, "auto = %s up to %u KiB, %s above", mr_allreduce_algo_name(small),
                      MR_AR_SMALL_BYTES >> 10, mr_allreduce_algo_name(large));
    }
    snprintf(buf, len, "algorithm %s, compression %s (block %d), chunk %d KiB, overlap %s%s", algo,
             mr_compression_name(ar->o.compression), ar->o.block,
             ar->o.chunk_kib,
             ar->overlap_ok                               ? "on"
             : ar->o.overlap && ar->group->size > 1 ? "off (communicator not thread-safe)"
                                                    : "off",
             nodes);
}
