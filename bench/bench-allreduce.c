/* bench-allreduce: the all-reduce engine beside MPI_Allreduce, an
 * nccl-tests-style table measured in one run.
 *
 *   mpirun -np P bench-allreduce [--sizes 4K,64K,1M,16M] [--iters N] [--warmup N]
 *          [--algos ring,two_shot,hierarchical] [--compressions none,bf16,fp16,int8,int4]
 *          [--chunk-kib K] [--block B] [--node-size Q] [--json FILE] [--label TEXT]
 *
 * For each size (bytes of float32): MPI_Allreduce(MPI_SUM, fp32) out of
 * place, then every algorithm x compression of the engine out of place, on
 * the same random-normal inputs.  time = max over ranks of the mean of
 * `iters` calls after `warmup`, a barrier before each timed batch.
 *   algbw = bytes / time,  busbw = algbw * 2 (p-1) / p   (as nccl-tests)
 *   max_rel_err = max |result - exact| / max |exact|, exact summed in double
 * with every rank's input regenerated on rank 0.  --json writes one object
 * per row (algorithm, compression, ranks, bytes, time_us, busbw_gbs,
 * baseline, baseline_busbw_gbs, max_rel_err).
 *
 * bench-allreduce-gpu (the same source with MR_BENCH_CUDA, built with the
 * CUDA backend and NCCL): a GPU per rank (local rank -> device), device
 * buffers, the device engine (runtime/allreduce-cuda.h) beside
 * ncclAllReduce in place (the baseline: ratios and "baseline" are against
 * it) and MPI_Allreduce on host buffers; every call ends with the device
 * idle (the engine's fence, the communicator's wait). */
#define _GNU_SOURCE
#include <getopt.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench-common.h"
#include "runtime/allreduce.h"
#include "runtime/comm.h"
#include "tests/unit/ar-data.h"
#ifdef MR_BENCH_CUDA
#include "bench/bench-gpu.h"
#include "runtime/allreduce-cuda.h"
#include "runtime/comm-nccl.h"
static mr_backend g_be;     /* the rank's GPU */
static mr_comm *g_nccl;     /* NCCL over the world: the baseline */
#define BASELINE "ncclAllReduce"
#else
#define BASELINE "MPI_Allreduce"
#endif

#define MAX_LIST 32

static int parse_sizes(const char *s, size_t *out) {
    int n = 0;
    char *dup = strdup(s), *save = NULL;
    for (char *t = strtok_r(dup, ",", &save); t && n < MAX_LIST; t = strtok_r(NULL, ",", &save)) {
        char *end;
        double v = strtod(t, &end);
        if (*end == 'K' || *end == 'k') v *= 1024;
        else if (*end == 'M' || *end == 'm') v *= 1024 * 1024;
        else if (*end == 'G' || *end == 'g') v *= 1024.0 * 1024 * 1024;
        out[n++] = (size_t)v;
    }
    free(dup);
    return n;
}

static int parse_names(const char *s, int *out, int count, const char *(*name)(int)) {
    int n = 0;
    char *dup = strdup(s), *save = NULL;
    for (char *t = strtok_r(dup, ",", &save); t && n < MAX_LIST; t = strtok_r(NULL, ",", &save)) {
        int k = 0;
        while (k < count && strcmp(t, name(k))) k++;
        if (k == count) {
            fprintf(stderr, "bench-allreduce: unknown name '%s'\n", t);
            exit(2);
        }
        out[n++] = k;
    }
    free(dup);
    return n;
}

static const char *algo_name(int i) { return mr_allreduce_algo_name((mr_allreduce_algo)i); }
static const char *comp_name(int i) { return mr_compression_name((mr_compression)i); }

static double max_over_ranks(double v) {
    double r;
    MPI_Allreduce(&v, &r, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return r;
}

typedef mr_status (*call_fn)(void *ctx, const float *in, float *out, size_t n);

typedef struct eng_ctx {
    mr_allreduce *ar;
    mr_allreduce_algo algo;
    mr_compression comp;
} eng_ctx;

static mr_status call_engine(void *ctx, const float *in, float *out, size_t n) {
    eng_ctx *e = ctx;
    return mr_allreduce_run_as(e->ar, e->algo, e->comp, in, out, n);
}

static mr_status call_mpi(void *ctx, const float *in, float *out, size_t n) {
    (void)ctx;
    return MPI_Allreduce(in, out, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD) == MPI_SUCCESS
               ? MR_OK
               : mr_error(MR_ERR_INTERNAL, "MPI_Allreduce failed");
}

#ifdef MR_BENCH_CUDA
/* ncclAllReduce in place on out (in is not read: its copy is made once
 * before timing, so values grow by P a call -- harmless for timing) */
static mr_status call_nccl(void *ctx, const float *in, float *out, size_t n) {
    (void)ctx, (void)in;
    return g_nccl->ops->allreduce_sum_f32(g_nccl, out, n);
}
#endif

/* Buffers of the benchmark: device memory in the GPU build. */
static float *buf_alloc(size_t n) {
#ifdef MR_BENCH_CUDA
    return g_be.ops->alloc(&g_be, n * sizeof(float));
#else
    return malloc(n * sizeof(float));
#endif
}
static void buf_free(float *p) {
#ifdef MR_BENCH_CUDA
    g_be.ops->free(&g_be, p);
#else
    free(p);
#endif
}
static void buf_put(float *dst, const float *h, size_t n) {
#ifdef MR_BENCH_CUDA
    g_be.ops->upload(&g_be, dst, h, n * sizeof(float));
    g_be.ops->sync(&g_be);
#else
    memcpy(dst, h, n * sizeof(float));
#endif
}
static void buf_get(float *h, const float *src, size_t n) {
#ifdef MR_BENCH_CUDA
    g_be.ops->download(&g_be, h, src, n * sizeof(float));
    g_be.ops->sync(&g_be);
#else
    memcpy(h, src, n * sizeof(float));
#endif
}

static double time_calls(call_fn f, void *ctx, const float *in, float *out, size_t n, int warmup, int iters) {
    for (int i = 0; i < warmup; i++)
        if (f(ctx, in, out, n) != MR_OK) {
            fprintf(stderr, "bench-allreduce: %s\n", mr_last_error());
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
    MPI_Barrier(MPI_COMM_WORLD);
    double t = now_s();
    for (int i = 0; i < iters; i++) f(ctx, in, out, n);
    return max_over_ranks((now_s() - t) / iters);
}

/* max |out - exact| / max |exact| (rank 0 computes, everyone gets it) */
static double rel_err(const float *out, const double *exact, size_t n, double emax, int me) {
    double e = 0;
    if (me == 0)
        for (size_t i = 0; i < n; i++) {
            double d = fabs((double)out[i] - exact[i]);
            if (d > e || isnan(d)) e = isnan(d) ? INFINITY : d;
        }
    MPI_Bcast(&e, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    return emax > 0 ? e / emax : e;
}

#ifndef MR_BENCH_CUDA
/* Single-thread codec rate on 4 Mi values (rank 0): pack, and unpack-add,
 * in GB/s of float32 -- the compute each compressed byte costs. */
static void codec_rates(int block) {
    size_t n = (size_t)4 << 20;
    float *x = malloc(n * 4), *y = malloc(n * 4);
    void *z = malloc(n * 4 + 4096);
    ar_fill(x, n, AR_NORMAL, block, 5);
    memset(y, 0, n * 4);
    printf("# codec, one thread, %zu values, block %d: ", n, block);
    for (int c = 1; c < MR_COMPRESSION_COUNT; c++) {
        double tp = 1e30, tu = 1e30;
        for (int r = 0; r < 3; r++) {
            double t = now_s();
            mr_compress((mr_compression)c, block, x, n, z);
            t = now_s() - t;
            tp = t < tp ? t : tp;
            t = now_s();
            mr_decompress_add((mr_compression)c, block, z, n, y);
            t = now_s() - t;
            tu = t < tu ? t : tu;
        }
        printf("%s pack %.2f / unpack-add %.2f GB/s%s", mr_compression_name((mr_compression)c), n * 4 / tp / 1e9,
               n * 4 / tu / 1e9, c + 1 < MR_COMPRESSION_COUNT ? "; " : "\n");
    }
    free(x), free(y), free(z);
}
#endif

int main(int argc, char **argv) {
    mr_comm *world;
    if (mr_comm_mpi_init(&argc, &argv, &world) != MR_OK) {
        fprintf(stderr, "MPI init: %s\n", mr_last_error());
        return 1;
    }
    int P = world->size, me = world->rank;
    size_t sizes[MAX_LIST];
    int n_sizes = parse_sizes("4K,64K,1M,16M", sizes);
    int algos[MAX_LIST] = {MR_AR_RING, MR_AR_TWO_SHOT}, n_algos = 2;
    int comps[MAX_LIST] = {MR_COMPRESS_NONE, MR_COMPRESS_BF16, MR_COMPRESS_FP16, MR_COMPRESS_INT8, MR_COMPRESS_INT4};
    int n_comps = 5, iters = 20, warmup = 3;
    const char *json = NULL, *label = "";
    mr_allreduce_opts o;
    mr_allreduce_opts_default(&o);
    static const struct option lo[] = {{"sizes", 1, 0, 's'},       {"iters", 1, 0, 'i'},  {"warmup", 1, 0, 'w'},
                                       {"algos", 1, 0, 'a'},       {"compressions", 1, 0, 'c'},
                                       {"chunk-kib", 1, 0, 'k'},   {"block", 1, 0, 'b'},  {"node-size", 1, 0, 'q'},
                                       {"json", 1, 0, 'j'},        {"label", 1, 0, 'l'},  {"help", 0, 0, 'h'},
                                       {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (ch) {
        case 's': n_sizes = parse_sizes(optarg, sizes); break;
        case 'i': iters = atoi(optarg); break;
        case 'w': warmup = atoi(optarg); break;
        case 'a': n_algos = parse_names(optarg, algos, MR_AR_ALGO_COUNT, algo_name); break;
        case 'c': n_comps = parse_names(optarg, comps, MR_COMPRESSION_COUNT, comp_name); break;
        case 'k': o.chunk_kib = atoi(optarg); break;
        case 'b': o.block = atoi(optarg); break;
        case 'q': o.node_size = atoi(optarg); break;
        case 'j': json = optarg; break;
        case 'l': label = optarg; break;
        default:
            if (me == 0)
                fprintf(stderr, "usage: mpirun -np P %s [--sizes 4K,64K,1M,16M] [--iters N] [--warmup N] "
                                "[--algos ring,two_shot,hierarchical] [--compressions none,bf16,fp16,int8,int4] "
                                "[--chunk-kib K] [--block B] [--node-size Q] [--json FILE] [--label TEXT]\n",
                        argv[0]);
            mr_comm_mpi_finalize();
            return ch == 'h' ? 0 : 2;
        }
    }
    o.overlap = 0;
    mr_allreduce *ar = NULL;
    mr_status st = MR_OK;
    char gpu_desc[320] = "host memory";
#ifdef MR_BENCH_CUDA
    int device = -1;
    st = bench_gpu_start(world, &g_be, &device);
    if (st == MR_OK) st = mr_comm_nccl_create(world, device, mr_backend_cuda_stream(&g_be), &g_nccl);
    if (st == MR_OK) st = mr_allreduce_create_cuda(world, device, &g_be, &o, &ar);
    if (st == MR_OK) {
        char d[200];
        mr_cuda_device_describe(device, d, sizeof d);
        snprintf(gpu_desc, sizeof gpu_desc, "rank 0 on GPU %d: %s", device, d);
    }
#else
    st = mr_allreduce_create(world, &o, &ar);
#endif
    int bad[1] = {st != MR_OK};
    world->ops->allreduce_max_i32(world, bad, 1);
    if (bad[0]) {
        fprintf(stderr, "bench-allreduce (rank %d): %s\n", me, st != MR_OK ? mr_last_error() : "another rank failed");
        mr_comm_mpi_finalize();
        return st == MR_ERR_UNSUPPORTED ? 77 : 2;
    }
    char host[256];
    gethostname(host, sizeof host);
    char desc[256];
    mr_allreduce_describe(ar, desc, sizeof desc);
    FILE *jf = NULL;
    if (me == 0) {
        printf("# bench-allreduce %s: %d ranks (rank 0 on %s, %s), %s; %d iterations after %d warm-up, out of "
               "place\n", label, P, host, gpu_desc, desc, iters, warmup);
        printf("# busbw = algbw * 2(p-1)/p; baseline %s fp32 measured in the same run\n", BASELINE);
#ifndef MR_BENCH_CUDA
        codec_rates(o.block);
#endif
        printf("%12s %10s %5s %13s %11s %10s %9s %9s %9s %10s %11s\n", "size(B)", "count", "type", "algorithm",
               "compression", "time(us)", "algbw", "busbw", "vs base", "base busbw", "max_rel_err");
        jf = bench_json_open(json);
    }
    int first_row = 1;
    for (int si = 0; si < n_sizes; si++) {
        size_t n = sizes[si] / sizeof(float);
        if (n == 0) continue;
        float *in = malloc(n * sizeof(float)), *out = malloc(n * sizeof(float));
        float *din = buf_alloc(n), *dout = buf_alloc(n);
        double *exact = NULL, emax = 0;
        ar_fill(in, n, AR_NORMAL, o.block, 1000 + (uint64_t)me);
        buf_put(din, in, n);
        if (me == 0) { /* every rank's input, summed in double */
            exact = calloc(n, sizeof(double));
            float *x = malloc(n * sizeof(float));
            for (int r = 0; r < P; r++) {
                ar_fill(x, n, AR_NORMAL, o.block, 1000 + (uint64_t)r);
                for (size_t i = 0; i < n; i++) exact[i] += x[i];
            }
            for (size_t i = 0; i < n; i++) emax = fabs(exact[i]) > emax ? fabs(exact[i]) : emax;
            free(x);
        }
        double bus = 2.0 * (P - 1) / P, bytes = (double)n * sizeof(float);
        double t_mpi = time_calls(call_mpi, NULL, in, out, n, warmup, iters);
        double e_mpi = rel_err(out, exact, n, emax, me);
        double mpi_bus = bytes / t_mpi / 1e9 * bus, t_base = t_mpi, base_bus = mpi_bus;
#ifdef MR_BENCH_CUDA
        buf_put(dout, in, n);
        t_base = time_calls(call_nccl, NULL, din, dout, n, warmup, iters);
        base_bus = bytes / t_base / 1e9 * bus;
        buf_put(dout, in, n); /* one more call on fresh data for the error */
        call_nccl(NULL, din, dout, n);
        buf_get(out, dout, n);
        double e_base = rel_err(out, exact, n, emax, me);
        if (me == 0)
            printf("%12zu %10zu %5s %13s %11s %10.1f %9.3f %9.3f %9s %10.3f %11.2e\n", n * sizeof(float), n, "float",
                   BASELINE, "none", t_base * 1e6, bytes / t_base / 1e9, base_bus, "1.00x", base_bus, e_base);
#endif
        if (me == 0)
            printf("%12zu %10zu %5s %13s %11s %10.1f %9.3f %9.3f %8.2fx %10.3f %11.2e\n", n * sizeof(float), n, "float",
                   "MPI_Allreduce", "none", t_mpi * 1e6, bytes / t_mpi / 1e9, mpi_bus, mpi_bus / base_bus, base_bus,
                   e_mpi);
        for (int a = 0; a < n_algos; a++)
            for (int c = 0; c < n_comps; c++) {
                mr_allreduce_algo algo = (mr_allreduce_algo)algos[a];
                mr_compression comp = (mr_compression)comps[c];
                if (algo == MR_AR_MPI && comp != MR_COMPRESS_NONE) continue;
                eng_ctx ctx = {ar, algo, comp};
                double t = time_calls(call_engine, &ctx, din, dout, n, warmup, iters);
                buf_get(out, dout, n);
                double e = rel_err(out, exact, n, emax, me);
                double busbw = bytes / t / 1e9 * bus;
                if (me != 0) continue;
                char ratio[32];
                snprintf(ratio, sizeof ratio, "%.2fx", busbw / base_bus);
                printf("%12zu %10zu %5s %13s %11s %10.1f %9.3f %9.3f %9s %10.3f %11.2e\n", n * sizeof(float), n,
                       "float", mr_allreduce_algo_name(algo), mr_compression_name(comp), t * 1e6, bytes / t / 1e9,
                       busbw, ratio, base_bus, e);
                if (jf) {
                    fprintf(jf,
                            "%s  {\"label\": \"%s\", \"algorithm\": \"%s\", \"compression\": \"%s\", \"ranks\": %d, "
                            "\"bytes\": %zu, \"time_us\": %.2f, \"busbw_gbs\": %.4f, \"baseline\": "
                            "\"%s\", \"baseline_time_us\": %.2f, \"baseline_busbw_gbs\": %.4f, "
                            "\"max_rel_err\": %.3e, \"block\": %d, \"chunk_kib\": %d, \"mpi_busbw_gbs\": %.4f}",
                            bench_json_sep(&first_row), label, mr_allreduce_algo_name(algo), mr_compression_name(comp), P,
                            n * sizeof(float), t * 1e6, busbw, BASELINE, t_base * 1e6, base_bus, e, o.block,
                            o.chunk_kib, mpi_bus);
                }
            }
        buf_free(din);
        buf_free(dout);
        free(in);
        free(out);
        free(exact);
    }
    bench_json_close(jf);
    mr_allreduce_destroy(ar);
#ifdef MR_BENCH_CUDA
    mr_comm_destroy(g_nccl);
    mr_backend_cuda_free(&g_be);
#endif
    mr_comm_destroy(world);
    mr_comm_mpi_finalize();
    return 0;
}
