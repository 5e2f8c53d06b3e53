/* The NCCL communicator (runtime/comm-nccl.h) against the MPI one, on the
 * same data (run with mpirun -np 2 or more, a GPU per rank).
 *
 * Each op runs on MPI with host buffers and on NCCL with device buffers;
 * the results must be the same bytes (allgather, alltoallv with uneven
 * counts and gaps between blocks, sendrecv ring, send/recv, bcast, the max
 * agreement) or, for the float sum, within p 2^-23 sum |x| (NCCL's order of
 * summation is its own; with 2 ranks a + b == b + a, so the bits agree).
 * Sub-groups: split (by parity, reversed order) and split_node against the
 * MPI splits.  recv_any must be refused (MR_ERR_UNSUPPORTED).
 *
 * The all-reduce engine (runtime/allreduce.h): its `mpi` algorithm on a
 * NCCL communicator (ncclAllReduce) against ring and two_shot on MPI,
 * within the same bound; and the device engine (runtime/allreduce-cuda.h):
 * ring, two_shot and hierarchical (nodes of 2 ranks) x every compression,
 * in place and out of place, chunked, and with overlap (the progress
 * thread), each the same bytes on every rank as the host engine gives over
 * MPI for the same algorithm and compression.
 *
 * With one rank every op still runs, on a NCCL communicator of one (what a
 * one-GPU machine can check: the calls, streams and events, no exchange).
 * When two ranks share a GPU, mr_comm_nccl_usable must say 0 and
 * mr_comm_select must hand back the MPI group; the NCCL ops are not run.
 * Without a CUDA device on every rank: exit 77 (skipped). */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kernels/cuda/cuda-backend.h"
#include "runtime/allreduce-cuda.h"
#include "runtime/allreduce.h"
#include "runtime/comm-nccl.h"
#include "runtime/comm.h"

static int P, ME;

#define OK(call)                                                                       \
    do {                                                                               \
        mr_status st_ = (call);                                                        \
        if (st_ != MR_OK) {                                                            \
            fprintf(stderr, "rank %d: %s:%d: %s: %s\n", ME, __FILE__, __LINE__, #call, mr_last_error()); \
            mr_test_fail++;                                                            \
            goto done;                                                                 \
        }                                                                              \
    } while (0)

static void *dev(size_t bytes) {
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        fprintf(stderr, "rank %d: cudaMalloc(%zu) failed\n", ME, bytes);
        exit(1);
    }
    return p;
}
static void up(void *d, const void *h, size_t bytes) {
    if (bytes && cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice) != cudaSuccess) exit(1);
}
static void down(void *h, const void *d, size_t bytes) {
    if (bytes && cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost) != cudaSuccess) exit(1);
}

/* Rank r's value i: mixed signs and magnitudes, the same on every rank. */
static float xval(int r, size_t i) {
    unsigned h = (unsigned)(r * 2654435761u) ^ (unsigned)(i * 40503u + 12345u);
    h ^= h >> 13;
    h *= 0x5bd1e995u;
    h ^= h >> 15;
    return ((float)(h % 20001u) - 10000.0f) / 100.0f * (float)(1 + (h >> 28));
}

/* Count of alltoallv elements from src to dst: uneven, some zero. */
static int a2a_count(int src, int dst) { return (src * 7 + dst * 3) % 5 == 0 ? 0 : 1 + (src * 5 + dst * 11) % 37; }

static int first_diff(const void *a, const void *b, size_t bytes) {
    const unsigned char *x = a, *y = b;
    for (size_t i = 0; i < bytes; i++)
        if (x[i] != y[i]) return (int)i;
    return -1;
}

/* NCCL sum vs MPI sum: same bits, or within p 2^-23 sum|x| */
static void check_sums(const char *what, const float *mpi, const float *nccl, size_t n, size_t base) {
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double mag = 0;
        for (int r = 0; r < P; r++) mag += fabs(xval(r, base + i));
        double tol = P == 2 ? 0 : P * ldexp(mag, -23);
        if (fabs((double)mpi[i] - nccl[i]) > tol && bad++ < 5)
            fprintf(stderr, "rank %d: %s [%zu]: mpi %.9g nccl %.9g\n", ME, what, i, mpi[i], nccl[i]);
    }
    CHECK(bad == 0, "%s: %d of %zu values differ", what, bad, n);
}

static void test_sum(mr_comm *mpi, mr_comm *nc, size_t n) {
    float *h = malloc(n * sizeof(float)), *g = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = xval(mpi->rank, i);
    float *d = dev(n * sizeof(float));
    up(d, h, n * sizeof(float));
    OK(mpi->ops->allreduce_sum_f32(mpi, h, n));
    OK(nc->ops->allreduce_sum_f32(nc, d, n));
    down(g, d, n * sizeof(float));
    char what[64];
    snprintf(what, sizeof what, "allreduce_sum_f32 n=%zu", n);
    check_sums(what, h, g, n, 0);
done:
    cudaFree(d);
    free(h);
    free(g);
}

static void test_max(mr_comm *mpi, mr_comm *nc) {
    enum { N = 150 }; /* more than the 64-int device scratch: pieces */
    int a[N], b[N];
    for (int i = 0; i < N; i++) a[i] = b[i] = (int)(xval(mpi->rank, (size_t)i) * 100);
    OK(mpi->ops->allreduce_max_i32(mpi, a, N));
    OK(nc->ops->allreduce_max_i32(nc, b, N));
    CHECK(!memcmp(a, b, sizeof a), "allreduce_max_i32: first difference at byte %d", first_diff(a, b, sizeof a));
done:;
}

static void test_allgather(mr_comm *mpi, mr_comm *nc) {
    size_t bytes = 777;
    unsigned char *s = malloc(bytes), *r1 = malloc(bytes * (size_t)P), *r2 = malloc(bytes * (size_t)P);
    for (size_t i = 0; i < bytes; i++) s[i] = (unsigned char)(mpi->rank * 31 + i);
    void *ds = dev(bytes), *dr = dev(bytes * (size_t)P);
    up(ds, s, bytes);
    OK(mpi->ops->allgather(mpi, s, r1, bytes));
    OK(nc->ops->allgather(nc, ds, dr, bytes));
    down(r2, dr, bytes * (size_t)P);
    CHECK(!memcmp(r1, r2, bytes * (size_t)P), "allgather: first difference at byte %d",
          first_diff(r1, r2, bytes * (size_t)P));
    CHECK(r2[bytes * (size_t)(P - 1)] == (unsigned char)((P - 1) * 31), "allgather: last block not from rank %d", P - 1);
done:
    cudaFree(ds);
    cudaFree(dr);
    free(s);
    free(r1);
    free(r2);
}

/* Uneven counts, a gap of one element between blocks, elements of 12 bytes. */
static void test_alltoallv(mr_comm *mpi, mr_comm *nc) {
    const size_t elem = 12;
    int *sc = calloc((size_t)P * 4, sizeof(int)), *sd = sc + P, *rc = sc + 2 * P, *rd = sc + 3 * P;
    int stot = 0, rtot = 0;
    for (int j = 0; j < P; j++) {
        sc[j] = a2a_count(ME, j);
        sd[j] = stot;
        stot += sc[j] + 1;
        rc[j] = a2a_count(j, ME);
        rd[j] = rtot;
        rtot += rc[j] + 1;
    }
    int *s = calloc((size_t)stot * 3 + 3, sizeof(int)), *r1 = calloc((size_t)rtot * 3 + 3, sizeof(int)),
        *r2 = calloc((size_t)rtot * 3 + 3, sizeof(int));
    for (int j = 0; j < P; j++)
        for (int k = 0; k < sc[j] * 3; k++) s[sd[j] * 3 + k] = ME * 1000000 + j * 1000 + k; /* proves its sender */
    size_t rbytes = (size_t)rtot * elem;
    void *ds = dev((size_t)stot * elem), *dr = dev(rbytes);
    up(ds, s, (size_t)stot * elem);
    up(dr, r2, rbytes); /* zeros in the gaps on both sides */
    OK(mpi->ops->alltoallv(mpi, s, sc, sd, r1, rc, rd, elem));
    OK(nc->ops->alltoallv(nc, ds, sc, sd, dr, rc, rd, elem));
    down(r2, dr, rbytes);
    CHECK(!memcmp(r1, r2, rbytes), "alltoallv: first difference at byte %d", first_diff(r1, r2, rbytes));
    int wrong = 0;
    for (int j = 0; j < P; j++)
        for (int k = 0; k < rc[j] * 3; k++) wrong += r2[rd[j] * 3 + k] != j * 1000000 + ME * 1000 + k;
    CHECK(wrong == 0, "alltoallv: %d ints not what their sender sent", wrong);
done:
    cudaFree(ds);
    cudaFree(dr);
    free(s);
    free(r1);
    free(r2);
    free(sc);
}

/* Ring: rank r sends 1000 + 17 r bytes to r+1. */
static void test_ring(mr_comm *mpi, mr_comm *nc) {
    int next = (ME + 1) % P, prev = (ME - 1 + P) % P;
    size_t sb = 1000 + 17 * (size_t)ME, rb = 1000 + 17 * (size_t)prev;
    unsigned char *s = malloc(sb), *r1 = malloc(rb), *r2 = malloc(rb);
    for (size_t i = 0; i < sb; i++) s[i] = (unsigned char)(ME + 3 * i);
    void *ds = dev(sb), *dr = dev(rb);
    up(ds, s, sb);
    OK(mpi->ops->sendrecv(mpi, s, sb, next, r1, rb, prev, 5));
    OK(nc->ops->sendrecv(nc, ds, sb, next, dr, rb, prev, 5));
    down(r2, dr, rb);
    CHECK(!memcmp(r1, r2, rb), "sendrecv ring: first difference at byte %d", first_diff(r1, r2, rb));
    CHECK(r2[1] == (unsigned char)(prev + 3), "sendrecv ring: not from rank %d", prev);
    /* send/recv: rank 0 -> every other rank, one after the other */
    if (ME == 0) {
        for (int j = 1; j < P; j++) OK(nc->ops->send(nc, ds, sb, j, 6));
    } else {
        memset(r2, 0, rb);
        up(dr, r2, 1000);
        OK(nc->ops->recv(nc, dr, 1000, 0, 6));
        down(r2, dr, 1000);
        int bad = 0;
        for (size_t i = 0; i < 1000; i++) bad += r2[i] != (unsigned char)(3 * i);
        CHECK(bad == 0, "send/recv from rank 0: %d bytes wrong", bad);
    }
done:
    cudaFree(ds);
    cudaFree(dr);
    free(s);
    free(r1);
    free(r2);
}

static void test_bcast_barrier(mr_comm *mpi, mr_comm *nc) {
    size_t bytes = 4099;
    int root = P - 1;
    unsigned char *h1 = malloc(bytes), *h2 = malloc(bytes);
    for (size_t i = 0; i < bytes; i++) h1[i] = (unsigned char)(ME * 7 + i);
    void *d = dev(bytes);
    up(d, h1, bytes);
    OK(mpi->ops->bcast(mpi, h1, bytes, root));
    OK(nc->ops->bcast(nc, d, bytes, root));
    down(h2, d, bytes);
    CHECK(!memcmp(h1, h2, bytes), "bcast: first difference at byte %d", first_diff(h1, h2, bytes));
    CHECK(h2[0] == (unsigned char)(root * 7), "bcast: not rank %d's data", root);
    OK(nc->ops->barrier(nc));
    CHECK(1, "barrier");
done:
    cudaFree(d);
    free(h1);
    free(h2);
}

/* The sub-group's rank and size, and a sum over it, as MPI's split has them. */
static void check_sub(const char *what, mr_comm *ms, mr_comm *ns) {
    CHECK(ms->rank == ns->rank && ms->size == ns->size, "%s: nccl %d/%d, mpi %d/%d", what, ns->rank, ns->size,
          ms->rank, ms->size);
    size_t n = 1000;
    float *h = malloc(n * sizeof(float)), *g = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = (float)(ME + 1) * (float)i; /* integers: exact in any order */
    float *d = dev(n * sizeof(float));
    up(d, h, n * sizeof(float));
    OK(ms->ops->allreduce_sum_f32(ms, h, n));
    OK(ns->ops->allreduce_sum_f32(ns, d, n));
    down(g, d, n * sizeof(float));
    CHECK(!memcmp(h, g, n * sizeof(float)), "%s: sum differs at byte %d", what, first_diff(h, g, n * sizeof(float)));
done:
    cudaFree(d);
    free(h);
    free(g);
}

static void test_split(mr_comm *mpi, mr_comm *nc) {
    mr_comm *ms = NULL, *ns = NULL, *mn = NULL, *nn = NULL;
    OK(mpi->ops->split(mpi, ME % 2, -ME, &ms));
    OK(nc->ops->split(nc, ME % 2, -ME, &ns));
    CHECK(!strcmp(ns->ops->name, "nccl"), "split gives a %s communicator", ns->ops->name);
    check_sub("split(parity, -rank)", ms, ns);
    OK(mpi->ops->split_node(mpi, &mn));
    OK(nc->ops->split_node(nc, &nn));
    check_sub("split_node", mn, nn);
done:
    mr_comm_destroy(ns);
    mr_comm_destroy(ms);
    mr_comm_destroy(nn);
    mr_comm_destroy(mn);
}

static void test_recv_any(mr_comm *nc) {
    void *buf = NULL;
    size_t bytes = 0;
    int peer = -1, got = 1;
    mr_status st = nc->ops->recv_any(nc, 7, 0, &buf, &bytes, &peer, &got);
    CHECK(st == MR_ERR_UNSUPPORTED && !got, "recv_any on NCCL: status %s", mr_status_name(st));
    CHECK(mr_test_contains(mr_last_error(), "not supported on the NCCL"), "recv_any message: %s", mr_last_error());
}

/* The engine: `mpi` algorithm on NCCL (device) vs ring and two_shot on MPI
 * (host), compression none; and the wait_sleep_us polling path. */
static void test_engine(mr_comm *mpi, mr_comm *nc) {
    size_t n = 100003;
    mr_allreduce *am = NULL, *an = NULL;
    mr_allreduce_opts o;
    mr_allreduce_opts_default(&o);
    o.overlap = 0;
    float *x = malloc(n * sizeof(float)), *ring = malloc(n * sizeof(float)), *two = malloc(n * sizeof(float)),
          *g = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = xval(ME, i);
    float *d = dev(n * sizeof(float));
    up(d, x, n * sizeof(float));
    OK(mr_allreduce_create(mpi, &o, &am));
    OK(mr_allreduce_create(nc, &o, &an));
    OK(mr_allreduce_run_as(am, MR_AR_RING, MR_COMPRESS_NONE, x, ring, n));
    OK(mr_allreduce_run_as(am, MR_AR_TWO_SHOT, MR_COMPRESS_NONE, x, two, n));
    OK(mr_allreduce_run_as(an, MR_AR_MPI, MR_COMPRESS_NONE, d, d, n));
    down(g, d, n * sizeof(float));
    check_sums("engine mpi-on-nccl vs ring-on-mpi", ring, g, n, 0);
    check_sums("engine mpi-on-nccl vs two_shot-on-mpi", two, g, n, 0);
    /* polling wait (the progress thread's setting) gives the same bits */
    up(d, x, n * sizeof(float));
    atomic_store(&nc->wait_sleep_us, 20);
    OK(nc->ops->allreduce_sum_f32(nc, d, n));
    atomic_store(&nc->wait_sleep_us, 0);
    float *g2 = malloc(n * sizeof(float));
    down(g2, d, n * sizeof(float));
    CHECK(!memcmp(g, g2, n * sizeof(float)), "wait_sleep_us 20: different bits");
    free(g2);
done:
    mr_allreduce_destroy(an);
    mr_allreduce_destroy(am);
    cudaFree(d);
    free(x);
    free(ring);
    free(two);
    free(g);
}

/* The device engine against the host engine, algorithm by compression. */
static void test_engine_device(mr_comm *mpi, int device) {
    size_t n = 100003; /* not a multiple of ranks, blocks or chunks */
    mr_backend be = {0};
    mr_allreduce *ah = NULL, *ad = NULL, *ao = NULL;
    float *x = malloc(n * sizeof(float)), *want = malloc(n * sizeof(float)), *got = malloc(n * sizeof(float));
    float *d = NULL, *d2 = NULL;
    for (size_t i = 0; i < n; i++) x[i] = xval(ME, i) * (i % 977 == 0 ? 1e4f : 1.0f); /* some outliers */
    if (mr_backend_cuda_init(&be, device) != 0) {
        CHECK(0, "CUDA backend on device %d: %s", device, mr_backend_cuda_error(&be));
        goto done;
    }
    mr_allreduce_opts o;
    mr_allreduce_opts_default(&o);
    o.chunk_kib = 96; /* 24576 values: five chunks */
    o.block = 64;
    o.node_size = P % 2 == 0 ? 2 : 1;
    OK(mr_allreduce_create(mpi, &o, &ah));
    OK(mr_allreduce_create_cuda(mpi, device, &be, &o, &ad));
    o.overlap = 1;
    OK(mr_allreduce_create_cuda(mpi, device, &be, &o, &ao));
    CHECK(P == 1 || mr_allreduce_overlaps(ao), "device engine with overlap: overlap off");
    d = be.ops->alloc(&be, n * sizeof(float));
    d2 = be.ops->alloc(&be, n * sizeof(float));
    static const mr_allreduce_algo algos[] = {MR_AR_RING, MR_AR_TWO_SHOT, MR_AR_HIERARCHICAL};
    for (int a = 0; a < 3; a++)
        for (int c = 0; c < MR_COMPRESSION_COUNT; c++) {
            char what[96];
            snprintf(what, sizeof what, "device engine %s %s", mr_allreduce_algo_name(algos[a]),
                     mr_compression_name((mr_compression)c));
            OK(mr_allreduce_run_as(ah, algos[a], (mr_compression)c, x, want, n));
            /* in place, then out of place (d -> d2) */
            up(d, x, n * sizeof(float));
            OK(mr_allreduce_run_as(ad, algos[a], (mr_compression)c, d, d, n));
            down(got, d, n * sizeof(float));
            CHECK(!memcmp(want, got, n * sizeof(float)), "%s in place: first difference at byte %d", what,
                  first_diff(want, got, n * sizeof(float)));
            up(d, x, n * sizeof(float));
            OK(mr_allreduce_run_as(ad, algos[a], (mr_compression)c, d, d2, n));
            down(got, d2, n * sizeof(float));
            CHECK(!memcmp(want, got, n * sizeof(float)), "%s out of place: first difference at byte %d", what,
                  first_diff(want, got, n * sizeof(float)));
        }
    /* overlap: two reductions queued on the progress thread, the plan's
     * algorithm (auto: two_shot when compressing) */
    for (int c = 0; c < MR_COMPRESSION_COUNT; c++) {
        mr_allreduce_algo algo = c == MR_COMPRESS_NONE ? MR_AR_MPI : MR_AR_TWO_SHOT;
        OK(mr_allreduce_run_as(ah, algo, (mr_compression)c, x, want, n));
        mr_allreduce *e = NULL;
        mr_allreduce_opts oc = o;
        oc.compression = (mr_compression)c;
        OK(mr_allreduce_create_cuda(mpi, device, &be, &oc, &e));
        up(d, x, n * sizeof(float));
        be.ops->sync(&be);
        size_t half = n / 2;
        mr_status s1 = mr_allreduce_start(e, d, half), s2 = mr_allreduce_start(e, d + half, n - half);
        mr_status s3 = mr_allreduce_wait(e);
        CHECK(s1 == MR_OK && s2 == MR_OK && s3 == MR_OK, "overlap %s: %s", mr_compression_name((mr_compression)c),
              mr_last_error());
        down(got, d, n * sizeof(float));
        mr_allreduce_destroy(e);
        if (c == MR_COMPRESS_NONE) { /* ncclAllReduce's order vs MPI's: the bound */
            check_sums("overlap none (ncclAllReduce)", want, got, n, 0);
        } else { /* each half reduced on its own (the second starts mid-block) */
            float *w2 = malloc(n * sizeof(float));
            OK(mr_allreduce_run_as(ah, algo, (mr_compression)c, x, w2, half));
            OK(mr_allreduce_run_as(ah, algo, (mr_compression)c, x + half, w2 + half, n - half));
            CHECK(!memcmp(w2, got, n * sizeof(float)), "overlap %s: first difference at byte %d",
                  mr_compression_name((mr_compression)c), first_diff(w2, got, n * sizeof(float)));
            free(w2);
        }
    }
done:
    if (d) be.ops->free(&be, d);
    if (d2) be.ops->free(&be, d2);
    mr_allreduce_destroy(ao);
    mr_allreduce_destroy(ad);
    mr_allreduce_destroy(ah);
    if (be.ctx) mr_backend_cuda_free(&be);
    free(x);
    free(want);
    free(got);
}

int main(int argc, char **argv) {
    mr_comm *world = NULL, *node = NULL, *nc = NULL, *sel = NULL;
    cudaStream_t compute = NULL;
    if (mr_comm_mpi_init(&argc, &argv, &world) != MR_OK) {
        fprintf(stderr, "MPI init: %s\n", mr_last_error());
        return 1;
    }
    P = world->size;
    ME = world->rank;
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess) ndev = 0;
    int none[1] = {ndev == 0};
    int rc = 1;
    OK(world->ops->allreduce_max_i32(world, none, 1));
    if (none[0]) {
        if (ME == 0) printf("test-nccl-comm: skipped: no CUDA device on %s rank\n", ndev ? "another" : "this");
        rc = 77;
        goto out;
    }
    if (P < 2) printf("test-nccl-comm: one rank: every op on a NCCL communicator of one (no exchange; -np 2 "
                      "with two GPUs for that)\n");
    OK(world->ops->split_node(world, &node));
    int device = node->rank % ndev;
    int usable = mr_comm_nccl_usable(world, device);
    int shared[1] = {node->size > ndev};
    OK(world->ops->allreduce_max_i32(world, shared, 1));
    if (shared[0]) {
        /* more ranks on a node than GPUs: NCCL must be refused */
        CHECK(usable == 0, "ranks share a GPU but mr_comm_nccl_usable says %d", usable);
        char desc[256];
        int is_nccl = -1;
        OK(mr_comm_select(world, device, NULL, &sel, &is_nccl, desc, sizeof desc));
        CHECK(is_nccl == 0 && sel == world, "mr_comm_select: %s", desc);
        CHECK(mr_test_contains(desc, "share the GPU"), "mr_comm_select: %s", desc);
        if (ME == 0) printf("test-nccl-comm: %d ranks on %d GPU(s): NCCL refused (%s); NCCL ops not run\n",
                            node->size, ndev, desc);
        goto done;
    }
    CHECK(usable == 1, "one GPU per rank but mr_comm_nccl_usable says %d", usable);
    if (cudaSetDevice(device) != cudaSuccess) goto done;
    if (cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking) != cudaSuccess) goto done;
    OK(mr_comm_nccl_create(world, device, compute, &nc));
    CHECK(nc->rank == ME && nc->size == P && !strcmp(nc->ops->name, "nccl"), "nccl comm %d/%d", nc->rank, nc->size);
    test_sum(world, nc, 1);
    test_sum(world, nc, 1000003);
    test_max(world, nc);
    test_allgather(world, nc);
    test_alltoallv(world, nc);
    test_ring(world, nc);
    test_bcast_barrier(world, nc);
    test_split(world, nc);
    test_recv_any(nc);
    test_engine(world, nc);
    test_engine_device(world, device);
done:
    mr_comm_destroy(nc);
    if (compute) cudaStreamDestroy(compute);
    mr_comm_destroy(node);
    /* every rank's verdict: fails anywhere fail everywhere */
    int fails[1] = {mr_test_fail};
    if (world->ops->allreduce_max_i32(world, fails, 1) != MR_OK) fails[0] = 1;
    if (fails[0] && !mr_test_fail) mr_test_fail = 1;
    rc = mr_test_summary();
out:
    mr_comm_destroy(world);
    mr_comm_mpi_finalize();
    return rc;
}
