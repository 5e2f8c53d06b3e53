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

mr_status ar_reserve(ar_buf *b, size_t bytes) {
    if (bytes <= b->cap) return MR_OK;
    void *p = realloc(b->p, bytes);
    if (!p) return mr_error(MR_ERR_NOMEM, "all-reduce: out of memory for %zu bytes of scratch", bytes);
    b->p = p;
    b->cap = bytes;
    return MR_OK;
}

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

static mr_status run_job(void *ctx, void *job) {
    ar_job *j = job;
    return mr_allreduce_run(ctx, j->buf, j->buf, j->n);
}

mr_status mr_allreduce_create(mr_comm *group, const mr_allreduce_opts *o, mr_allreduce **out) {
    MR_CHECK(mr_allreduce_opts_check(o));
    mr_allreduce *ar = calloc(1, sizeof *ar);
    if (!ar) return mr_error(MR_ERR_NOMEM, "out of memory");
    ar->group = group;
    ar->o = *o;
    size_t chunk = (size_t)o->chunk_kib * 256;
    chunk -= chunk % (size_t)o->block;
    ar->chunk = chunk ? chunk : (size_t)o->block;
    ar->counts = calloc(4 * (size_t)group->size, sizeof(int));
    mr_status st = ar->counts ? MR_OK : mr_error(MR_ERR_NOMEM, "out of memory");
    if (st == MR_OK && group->size > 1) st = make_nodes(ar);
    /* scratch for a whole chunk now, so the decode loop never allocates */
    size_t big = ar->chunk * 4 + (size_t)group->size * (MR_COMPRESS_BLOCK_MAX * 4 + 64);
    if (st == MR_OK) st = ar_reserve(&ar->send, big);
    if (st == MR_OK) st = ar_reserve(&ar->recv, big);
    if (st == MR_OK) st = ar_reserve(&ar->tmp, big);
    if (st == MR_OK) st = ar_reserve(&ar->acc, big);
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
    free(ar->send.p);
    free(ar->recv.p);
    free(ar->tmp.p);
    free(ar->acc.p);
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
    if (ar->group->size == 2 && n * sizeof(float) > MR_AR_SMALL_BYTES) return MR_AR_RING;
    return MR_AR_MPI;
}

static mr_status run_chunks(mr_allreduce *ar, mr_allreduce_algo algo, mr_compression comp, const float *in,
                            float *out, size_t n) {
    mr_comm *g = ar->group;
    if (g->size == 1 || n == 0) {
        if (out != in && n) memmove(out, in, n * sizeof(float));
        return MR_OK;
    }
    if (algo == MR_AR_AUTO) algo = mr_allreduce_choose(ar, n, comp);
    if (algo == MR_AR_MPI) {
        if (comp != MR_COMPRESS_NONE)
            return mr_error(MR_ERR_INPUT, "all-reduce algorithm mpi cannot compress (%s)", mr_compression_name(comp));
        if (out != in) memcpy(out, in, n * sizeof(float));
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
    return run_chunks(ar, algo, comp, in, out, n);
}

mr_status mr_allreduce_run(mr_allreduce *ar, const float *in, float *out, size_t n) {
    return run_chunks(ar, ar->o.algorithm, ar->o.compression, in, out, n);
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
