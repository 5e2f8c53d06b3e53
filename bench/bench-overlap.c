/* bench-overlap: one tensor-parallel layer -- a row-parallel GEMM and its
 * all-reduce -- with and without overlap, beside the ideal
 * max(compute, communication), all measured in one run.
 *
 *   mpirun -np P bench-overlap [--shapes NAME,...] [--tokens 256,1024] [--iters N]
 *          [--compression none|bf16|fp16|int8|int4] [--algorithm auto|ring|two_shot|hierarchical]
 *          [--chunk-kib K] [--threads T] [--no-pin] [--json FILE] [--label TEXT]
 *
 * Shapes (output N = hidden, input K = the shard of the row-parallel
 * weight, K_full / P):
 *   llama8b-o     Llama-3-8B attention output  N 4096, K_full 4096
 *   llama8b-down  Llama-3-8B MLP down          N 4096, K_full 14336
 *   qwen7b-down   Qwen2-7B MLP down            N 3584, K_full 18944
 *   smollm2-down  SmolLM2-135M MLP down        N 576,  K_full 1536
 * For T tokens, with the CPU backend (T threads) and the all-reduce engine:
 *   compute     the GEMM alone, in the overlapped path's token chunks
 *   comm        the all-reduce of T x N alone
 *   sequential  the same chunks, each GEMM followed by its all-reduce
 *   overlapped  mr_allreduce_matmul with overlap on (the model's code path):
 *               chunk i reduced on the progress thread during GEMM i+1
 *   ideal       max(compute, comm)
 * Each time is the maximum over ranks of the median of `iters` runs, the
 * four measured round-robin, with a barrier before each run.  Rank r is
 * pinned to the (r mod n)-th of its allowed CPUs (bench_pin_rank), as
 * moerun binds its ranks; --no-pin leaves the threads free.
 *
 * bench-overlap-gpu (the same source with MR_BENCH_CUDA, built with the
 * CUDA backend and NCCL): a GPU per rank, the CUDA backend's fp32 GEMM
 * (cuBLAS) and the device engine (runtime/allreduce-cuda.h) over NCCL;
 * overlapped = chunk i reduced (its own stream, NCCL's) on the progress
 * thread while GEMM i+1 runs on the backend's stream. */
#define _GNU_SOURCE
#include <getopt.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench-mpi.h"
#include "kernels/backend.h"
#include "runtime/allreduce.h"
#include "runtime/comm.h"
#include "tests/unit/ar-data.h"
#ifdef MR_BENCH_CUDA
#include "bench/bench-gpu.h"
#include "runtime/allreduce-cuda.h"
#endif

typedef struct shape {
    const char *name;
    int N, K_full;
} shape;

static const shape SHAPES[] = {
    {"llama8b-o", 4096, 4096},
    {"llama8b-down", 4096, 14336},
    {"qwen7b-down", 3584, 18944},
    {"smollm2-down", 576, 1536},
};
#define N_SHAPES (int)(sizeof SHAPES / sizeof SHAPES[0])

typedef struct run_ctx {
    mr_backend *be;
    mr_allreduce *ar;
    float *y, *x, *w;
    int T, N, K, rows; /* rows: the overlapped path's chunk (T if it does not pipeline) */
    int mode;          /* 0 compute, 1 comm, 2 sequential, 3 overlapped */
    mr_allreduce *seq, *ovl;
} run_ctx;

static mr_status run_once(run_ctx *c) {
    const mr_backend_ops *ops = c->be->ops;
    if (c->mode == 1) return mr_allreduce_run(c->ar, c->y, c->y, (size_t)c->T * c->N);
    if (c->mode == 3) return mr_allreduce_matmul(c->ar, c->be, c->y, c->x, c->w, 0, NULL, c->T, c->N, c->K);
    /* compute, and sequential: the same GEMM chunks, each reduced at once */
    for (int r0 = 0; r0 < c->T; r0 += c->rows) {
        int n = c->T - r0 < c->rows ? c->T - r0 : c->rows;
        ops->matmul(c->be, c->y + (size_t)r0 * c->N, c->x + (size_t)r0 * c->K, c->w, NULL, n, c->N, c->K, 0);
        ops->sync(c->be);
        if (c->mode == 2) MR_CHECK(mr_allreduce_run(c->ar, c->y + (size_t)r0 * c->N, c->y + (size_t)r0 * c->N,
                                                    (size_t)n * c->N));
    }
    return MR_OK;
}

/* compute, comm, sequential: the engine without overlap; overlapped: with */
static mr_status run_mode(void *ctx, int mode) {
    run_ctx *c = ctx;
    c->mode = mode;
    c->ar = mode == 3 ? c->ovl : c->seq;
    return run_once(c);
}

int main(int argc, char **argv) {
    mr_comm *world;
    if (mr_comm_mpi_init(&argc, &argv, &world) != MR_OK) {
        fprintf(stderr, "MPI init: %s\n", mr_last_error());
        return 1;
    }
    int P = world->size, me = world->rank;
    int tokens[16] = {256, 1024}, n_tokens = 2, iters = 7, threads = 1, pin = 1;
    int use[N_SHAPES] = {1, 1, 1, 1};
    const char *json = NULL, *label = "", *names[N_SHAPES];
    for (int k = 0; k < N_SHAPES; k++) names[k] = SHAPES[k].name;
    mr_allreduce_opts o;
    mr_allreduce_opts_default(&o);
    static const struct option lo[] = {{"shapes", 1, 0, 's'},      {"tokens", 1, 0, 't'},    {"iters", 1, 0, 'i'},
                                       {"compression", 1, 0, 'c'}, {"algorithm", 1, 0, 'a'}, {"chunk-kib", 1, 0, 'k'},
                                       {"threads", 1, 0, 'p'},     {"json", 1, 0, 'j'},      {"label", 1, 0, 'l'},
                                       {"no-pin", 0, 0, 'n'},      {"help", 0, 0, 'h'},      {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (ch) {
        case 's': bench_pick(optarg, names, N_SHAPES, use, "bench-overlap"); break;
        case 't': n_tokens = bench_parse_ints(optarg, tokens, 16); break;
        case 'i': iters = atoi(optarg); break;
        case 'c':
            setenv("MR_ALLREDUCE_COMPRESSION", optarg, 1);
            break;
        case 'a': setenv("MR_ALLREDUCE_ALGORITHM", optarg, 1); break;
        case 'k': o.chunk_kib = atoi(optarg); break;
        case 'p': threads = atoi(optarg); break;
        case 'j': json = optarg; break;
        case 'l': label = optarg; break;
        case 'n': pin = 0; break;
        default:
            if (me == 0)
                fprintf(stderr, "usage: mpirun -np P %s [--shapes llama8b-o,llama8b-down,qwen7b-down,smollm2-down] "
                                "[--tokens 256,1024] [--iters N] [--compression C] [--algorithm A] [--chunk-kib K] "
                                "[--threads T] [--no-pin] [--json FILE] [--label TEXT]\n",
                        argv[0]);
            mr_comm_mpi_finalize();
            return ch == 'h' ? 0 : 2;
        }
    }
    if (mr_allreduce_opts_from_env(&o) != MR_OK) {
        if (me == 0) fprintf(stderr, "bench-overlap: %s\n", mr_last_error());
        mr_comm_mpi_finalize();
        return 2;
    }
    /* before the backend's and the engine's threads start: they inherit it */
    int cpu = pin ? bench_pin_rank(me) : -1;
    mr_allreduce *seq = NULL, *ovl = NULL;
    mr_backend be = {0};
    mr_status st = MR_OK;
#ifdef MR_BENCH_CUDA
    int device = -1;
    st = bench_gpu_start(world, &be, &device);
    o.overlap = 0;
    if (st == MR_OK) st = mr_allreduce_create_cuda(world, device, &be, &o, &seq);
    o.overlap = 1;
    if (st == MR_OK) st = mr_allreduce_create_cuda(world, device, &be, &o, &ovl);
#else
    o.overlap = 0;
    st = mr_allreduce_create(world, &o, &seq);
    o.overlap = 1;
    if (st == MR_OK) st = mr_allreduce_create(world, &o, &ovl);
    if (st == MR_OK) mr_backend_cpu_init(&be, threads);
#endif
    int bad[1] = {st != MR_OK};
    world->ops->allreduce_max_i32(world, bad, 1);
    if (bad[0]) {
        fprintf(stderr, "bench-overlap (rank %d): %s\n", me, st != MR_OK ? mr_last_error() : "another rank failed");
        mr_comm_mpi_finalize();
        return st == MR_ERR_UNSUPPORTED ? 77 : 2;
    }
    char desc[256];
    mr_allreduce_describe(ovl, desc, sizeof desc);
    FILE *jf = NULL;
    if (me == 0) {
#ifdef MR_BENCH_CUDA
        printf("# bench-overlap-gpu %s: %d ranks, a GPU each (CUDA fp32 GEMM, the device engine over NCCL), %s; "
               "median of %d\n", label, P, desc, iters);
        (void)cpu, (void)threads;
#else
        printf("# bench-overlap %s: %d ranks, %d GEMM thread(s) a rank, %s; median of %d; %s\n", label, P, threads,
               desc, iters, cpu >= 0 ? "rank r pinned to allowed CPU r mod n" : "ranks not pinned");
#endif
        printf("%-13s %6s %5s %6s %5s %11s %9s %11s %11s %9s %9s %9s\n", "shape", "tokens", "N", "K", "rows",
               "compute ms", "comm ms", "sequent. ms", "overlap ms", "ideal ms", "ovl/ideal", "seq/ideal");
        jf = bench_json_open(json);
    }
    int first = 1;
    for (int s = 0; s < N_SHAPES; s++) {
        if (!use[s]) continue;
        int N = SHAPES[s].N, K = SHAPES[s].K_full / P;
        for (int ti = 0; ti < n_tokens; ti++) {
            int T = tokens[ti];
            float *x = malloc((size_t)T * K * sizeof(float)), *w = malloc((size_t)N * K * sizeof(float));
            float *y = malloc((size_t)T * N * sizeof(float));
            ar_fill(x, (size_t)T * K, AR_NORMAL, 32, 11 + (uint64_t)me);
            ar_fill(w, (size_t)N * K, AR_NORMAL, 32, 97 + (uint64_t)me);
#ifdef MR_BENCH_CUDA /* the same data on the device */
            float *hx = x, *hw = w;
            free(y);
            x = be.ops->alloc(&be, (size_t)T * K * sizeof(float));
            w = be.ops->alloc(&be, (size_t)N * K * sizeof(float));
            y = be.ops->alloc(&be, (size_t)T * N * sizeof(float));
            be.ops->upload(&be, x, hx, (size_t)T * K * sizeof(float));
            be.ops->upload(&be, w, hw, (size_t)N * K * sizeof(float));
            be.ops->zero(&be, y, (size_t)T * N);
            be.ops->sync(&be);
            free(hx), free(hw);
#endif
            int rows = mr_allreduce_overlap_rows(ovl, T, N);
            run_ctx c = {&be, seq, y, x, w, T, N, K, rows ? rows : T, 0, seq, ovl};
            double tm[4];
            bench_medians(4, iters, run_mode, &c, tm, "bench-overlap");
            double t_comp = tm[0], t_comm = tm[1], t_seq = tm[2], t_ovl = tm[3];
            double ideal = t_comp > t_comm ? t_comp : t_comm;
            if (me == 0) {
                printf("%-13s %6d %5d %6d %5d %11.2f %9.2f %11.2f %11.2f %9.2f %9.3f %9.3f\n", SHAPES[s].name, T, N, K,
                       rows, t_comp * 1e3, t_comm * 1e3, t_seq * 1e3, t_ovl * 1e3, ideal * 1e3, t_ovl / ideal,
                       t_seq / ideal);
                if (jf) {
                    fprintf(jf,
                            "%s  {\"label\": \"%s\", \"shape\": \"%s\", \"ranks\": %d, \"tokens\": %d, \"N\": %d, "
                            "\"K\": %d, \"chunk_rows\": %d, \"compute_ms\": %.3f, \"comm_ms\": %.3f, "
                            "\"sequential_ms\": %.3f, \"overlapped_ms\": %.3f, \"ideal_ms\": %.3f, "
                            "\"compression\": \"%s\"}",
                            bench_json_sep(&first), label, SHAPES[s].name, P, T, N, K, rows, t_comp * 1e3, t_comm * 1e3,
                            t_seq * 1e3, t_ovl * 1e3, ideal * 1e3, mr_compression_name(o.compression));
                }
            }
#ifdef MR_BENCH_CUDA
            be.ops->free(&be, x), be.ops->free(&be, w), be.ops->free(&be, y);
#else
            free(x), free(w), free(y);
#endif
        }
    }
    bench_json_close(jf);
    mr_allreduce_destroy(seq);
    mr_allreduce_destroy(ovl);
#ifdef MR_BENCH_CUDA
    mr_backend_cuda_free(&be);
#else
    mr_backend_cpu_free(&be);
#endif
    mr_comm_destroy(world);
    mr_comm_mpi_finalize();
    return 0;
}
