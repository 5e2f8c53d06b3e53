#define _POSIX_C_SOURCE 200809L
/* The all-reduce engine under real MPI (run by ctest with mpirun -np 2..8).
 *
 * Every algorithm x compression x size (not divisible by ranks, chunks or
 * blocks) x data kind x in/out of place.  Each rank regenerates every rank's
 * input, so it can compute the references itself:
 *   - compression none: bitwise equal to the float32 sum in the algorithm's
 *     documented order (allreduce.h), for mpi within p 2^-23 sum |x|;
 *   - compressed: |result - exact sum (double)| within compress.h's bound;
 *   - every rank holds the same bits; out-of-place leaves the input alone.
 * Hierarchical runs with every node size that divides p (node_size option,
 * consecutive ranks), including 1 and p.  The progress-thread path
 * (start/wait) must give the bits of a plain run. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ar-data.h"
#include "harness.h"
#include "runtime/allreduce.h"
#include "runtime/comm.h"

static mr_comm *world;
static int P, ME;

/* Fixed-order reference of one chunk of k values at offset `base` of the
 * inputs xs[r] (r < P), as the algorithm documents it. */
static void reference_chunk(mr_allreduce_algo algo, int q, float *const *xs, size_t base, size_t k, float *ref) {
    for (size_t t = 0; t < k; t++) {
        size_t i = base + t;
        float s = 0;
        if (algo == MR_AR_RING) {
            /* shard of t: the j with begin(j) <= t < begin(j+1), unit 1 */
            int j;
            for (j = 0; j < P; j++) {
                size_t b = k * (size_t)j / (size_t)P, e = k * (size_t)(j + 1) / (size_t)P;
                if (t >= b && t < e) break;
            }
            s = xs[(j + 1) % P][i];
            for (int d = 2; d <= P; d++) s = s + xs[(j + d) % P][i];
        } else if (algo == MR_AR_HIERARCHICAL) {
            for (int m = 0; m < P / q; m++) {
                float part = xs[m * q][i];
                for (int l = 1; l < q; l++) part = part + xs[m * q + l][i];
                s = m == 0 ? part : s + part;
            }
        } else {
            s = xs[0][i];
            for (int r = 1; r < P; r++) s = s + xs[r][i];
        }
        ref[t] = s;
    }
}

static uint64_t hash_bits(const float *x, size_t n) {
    uint64_t h = 1469598103934665603ull;
    const unsigned char *b = (const unsigned char *)x;
    for (size_t i = 0; i < n * 4; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static int same_on_all_ranks(uint64_t h) {
    uint64_t *all = malloc((size_t)P * sizeof *all);
    world->ops->allgather(world, &h, all, sizeof h);
    int ok = 1;
    for (int r = 0; r < P; r++) ok &= all[r] == h;
    free(all);
    return ok;
}

typedef struct counts {
    int runs, fails;
} counts;

static void one_case(mr_allreduce *ar, mr_allreduce_algo algo, int q, mr_compression comp, size_t n, ar_kind kind,
                     int in_place, counts *ct) {
    const mr_allreduce_opts *o = mr_allreduce_options(ar);
    float **xs = malloc((size_t)P * sizeof *xs);
    for (int r = 0; r < P; r++) {
        xs[r] = malloc((n ? n : 1) * sizeof(float));
        ar_fill(xs[r], n, kind, o->block, (uint64_t)r * 7919 + n * 31 + (uint64_t)kind * 5 + (uint64_t)comp);
    }
    float *in = malloc((n ? n : 1) * sizeof(float)), *out = malloc((n ? n : 1) * sizeof(float));
    memcpy(in, xs[ME], n * sizeof(float));
    mr_status st = mr_allreduce_run_as(ar, algo, comp, in, in_place ? in : out, n);
    float *res = in_place ? in : out;
    int ok = st == MR_OK;
    char why[256] = "";
    if (!ok) snprintf(why, sizeof why, "%s", mr_last_error());
    if (ok && !in_place && memcmp(in, xs[ME], n * sizeof(float))) {
        ok = 0;
        snprintf(why, sizeof why, "out-of-place changed the input");
    }
    /* chunk size as the engine uses it */
    size_t chunk = (size_t)o->chunk_kib * 256;
    chunk -= chunk % (size_t)o->block;
    float *ref = malloc((n ? n : 1) * sizeof(float));
    for (size_t off = 0; off < n; off += chunk)
        reference_chunk(algo, q, xs, off, n - off < chunk ? n - off : chunk, ref + off);
    for (size_t i = 0; ok && i < n; i++) {
        double S = 0, SA = 0, exact = 0;
        for (int r = 0; r < P; r++) {
            S += fabs(xs[r][i]);
            SA += ar_block_max(xs[r], n, i, o->block);
            exact += xs[r][i];
        }
        if (comp == MR_COMPRESS_NONE && algo != MR_AR_MPI) {
            if (memcmp(&res[i], &ref[i], 4)) {
                ok = 0;
                snprintf(why, sizeof why, "element %zu: %.9g, fixed-order sum %.9g", i, (double)res[i],
                         (double)ref[i]);
            }
        } else {
            double err = fabs((double)res[i] - exact), bound = ar_sum_bound(comp, P, S, SA);
            if (!(err <= bound)) {
                ok = 0;
                snprintf(why, sizeof why, "element %zu: error %.3g above the bound %.3g (sum %.6g)", i, err, bound,
                         exact);
            }
        }
    }
    int all_ok = ok;
    if (ok && !same_on_all_ranks(hash_bits(res, n))) {
        all_ok = 0;
        snprintf(why, sizeof why, "ranks hold different bits");
    }
    ct->runs++;
    if (!all_ok) {
        ct->fails++;
        if (ct->fails <= 10)
            CHECK(0, "p=%d %s (node %d) %s n=%zu block %d %s %s: %s", P, mr_allreduce_algo_name(algo), q,
                  mr_compression_name(comp), n, o->block, ar_kind_names[kind], in_place ? "in place" : "out of place",
                  why);
    }
    for (int r = 0; r < P; r++) free(xs[r]);
    free(xs), free(in), free(out), free(ref);
}

static void sweep(int block, int q, counts *ct) {
    mr_allreduce_opts o;
    mr_allreduce_opts_default(&o);
    o.block = block;
    o.chunk_kib = 4; /* 1024 values: the larger sizes cross chunks */
    o.node_size = q;
    mr_allreduce *ar;
    if (mr_allreduce_create(world, &o, &ar) != MR_OK) {
        CHECK(0, "create (node size %d): %s", q, mr_last_error());
        return;
    }
    const size_t sizes[] = {1, 5, 127, 1000, 1024 + 3 * 64 + 7, 5003};
    const mr_allreduce_algo algos[] = {MR_AR_RING, MR_AR_TWO_SHOT, MR_AR_HIERARCHICAL, MR_AR_MPI};
    for (int a = 0; a < 4; a++) {
        if (q != P && algos[a] != MR_AR_HIERARCHICAL) continue; /* flat algorithms once, at q = P */
        for (int c = 0; c < MR_COMPRESSION_COUNT; c++) {
            if (algos[a] == MR_AR_MPI && c != MR_COMPRESS_NONE) continue;
            for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
                for (int k = 0; k < AR_KIND_COUNT; k++)
                    for (int ip = 0; ip < 2; ip++)
                        one_case(ar, algos[a], q, (mr_compression)c, sizes[s], (ar_kind)k, ip, ct);
        }
    }
    mr_allreduce_destroy(ar);
}

/* Queued reductions on the progress thread equal plain runs. */
static void test_overlap(void) {
    mr_allreduce_opts o;
    mr_allreduce_opts_default(&o);
    o.compression = MR_COMPRESS_INT8;
    o.chunk_kib = 2;
    o.overlap = 1;
    mr_allreduce *ar;
    if (mr_allreduce_create(world, &o, &ar) != MR_OK) {
        CHECK(0, "create: %s", mr_last_error());
        return;
    }
    CHECK(mr_allreduce_overlaps(ar), "overlap is on (MPI_THREAD_SERIALIZED)");
    enum { NB = 6, N = 3000 };
    float *a = malloc(NB * N * sizeof(float)), *b = malloc(NB * N * sizeof(float));
    ar_fill(a, NB * N, AR_NORMAL, 64, 99 + (uint64_t)ME);
    memcpy(b, a, NB * N * sizeof(float));
    for (int i = 0; i < NB; i++) CHECK(mr_allreduce_start(ar, a + i * N, N) == MR_OK, "start %d", i);
    CHECK(mr_allreduce_wait(ar) == MR_OK, "wait: %s", mr_last_error());
    for (int i = 0; i < NB; i++) mr_allreduce_run(ar, b + i * N, b + i * N, N);
    CHECK(memcmp(a, b, NB * N * sizeof(float)) == 0, "progress-thread results equal plain runs");
    free(a), free(b);
    mr_allreduce_destroy(ar);
}

static void test_errors(void) {
    mr_allreduce_opts o;
    mr_allreduce_opts_default(&o);
    o.algorithm = MR_AR_MPI;
    o.compression = MR_COMPRESS_INT8;
    mr_allreduce *ar = NULL;
    CHECK(mr_allreduce_create(world, &o, &ar) == MR_ERR_INPUT && mr_test_contains(mr_last_error(), "cannot compress"),
          "mpi + int8 refused: %s", mr_last_error());
    mr_allreduce_opts_default(&o);
    o.block = 48;
    CHECK(mr_allreduce_create(world, &o, &ar) == MR_ERR_INPUT && mr_test_contains(mr_last_error(), "power of two"),
          "block 48 refused: %s", mr_last_error());
    if (P > 2 && P % 2) {
        mr_allreduce_opts_default(&o);
        o.node_size = 2;
        CHECK(mr_allreduce_create(world, &o, &ar) == MR_ERR_INPUT && mr_test_contains(mr_last_error(), "does not divide"),
              "node size 2 of %d refused: %s", P, mr_last_error());
    }
    setenv("MR_ALLREDUCE_COMPRESSION", "int3", 1);
    mr_allreduce_opts_default(&o);
    CHECK(mr_allreduce_opts_from_env(&o) == MR_ERR_INPUT &&
              mr_test_contains(mr_last_error(), "MR_ALLREDUCE_COMPRESSION=int3: expected one of none, bf16"),
          "env int3: %s", mr_last_error());
    unsetenv("MR_ALLREDUCE_COMPRESSION");
}

int main(int argc, char **argv) {
    if (mr_comm_mpi_init(&argc, &argv, &world) != MR_OK) {
        fprintf(stderr, "MPI init: %s\n", mr_last_error());
        return 1;
    }
    P = world->size;
    ME = world->rank;
    counts ct = {0, 0};
    for (int q = 1; q <= P; q++) {
        if (P % q) continue;
        sweep(64, q, &ct);
    }
    sweep(32, P, &ct);
    sweep(256, P, &ct);
    test_overlap();
    test_errors();
    if (ME == 0) printf("%d ranks: %d all-reduce cases, %d failed\n", P, ct.runs, ct.fails);
    int fails = mr_test_fail;
    world->ops->allreduce_max_i32(world, &fails, 1);
    int rc = ME == 0 ? mr_test_summary() : (mr_test_fail ? 1 : 0);
    if (fails && !rc) rc = 1;
    mr_comm_destroy(world);
    mr_comm_mpi_finalize();
    return rc;
}
