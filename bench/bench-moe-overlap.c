/* bench-moe-overlap: the expert-parallel combine of one MoE layer and the
 * shared experts, sequential and overlapped (the model's path with
 * comm.allreduce.overlap: the combine all-to-all on a progress thread while
 * the shared experts compute), beside the ideal max(compute, comm), all
 * measured in one run.
 *
 *   mpirun -np G bench-moe-overlap [--shapes NAME,...] [--tokens 64,256] [--iters N] [--threads T]
 *          [--json FILE] [--label TEXT]
 *
 * Shapes (hidden H, shared-expert intermediate I, routed top-k K):
 *   qwen1.5-moe   Qwen1.5-MoE-A2.7B     H 2048, I 5632, K 4
 *   dsv2-lite     DeepSeek-V2-Lite      H 2048, I 2816 (2 shared experts), K 6
 *   dsv3          DeepSeek-V3           H 7168, I 2048, K 8
 * For T tokens a rank, routed uniformly: the combine returns T*K rows of H
 * floats, T*K/G to every rank of the group (alltoallv, as moe_ep does), and
 * the shared experts are down(silu(gate x) * up x) over the rank's T tokens:
 *   compute     the shared experts alone
 *   comm        the combine alone
 *   sequential  combine, then shared experts
 *   overlapped  combine on the progress thread during the shared experts
 *   ideal       max(compute, comm)
 * Each time is the maximum over ranks of the median of `iters` runs, the
 * four measured round-robin, with a barrier before each run.
 *
 * bench-moe-overlap-gpu (the same source with MR_BENCH_CUDA, built with the
 * CUDA backend and NCCL): a GPU per rank, the shared experts on the CUDA
 * backend (cuBLAS fp32), the combine an NCCL all-to-all on its own stream
 * issued by the progress thread -- the model's path when the expert group
 * is on NCCL (runtime/model.c, overlap_combine). */
#define _GNU_SOURCE
#include <getopt.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench-mpi.h"
#include "kernels/backend.h"
#include "runtime/comm.h"
#include "runtime/progress.h"
#include "tests/unit/ar-data.h"
#ifdef MR_BENCH_CUDA
#include "bench/bench-gpu.h"
#include "runtime/comm-nccl.h"
#endif

typedef struct shape {
    const char *name;
    int H, I, K;
} shape;

static const shape SHAPES[] = {
    {"qwen1.5-moe", 2048, 5632, 4},
    {"dsv2-lite", 2048, 2816, 6},
    {"dsv3", 7168, 2048, 8},
};
#define N_SHAPES (int)(sizeof SHAPES / sizeof SHAPES[0])

typedef struct combine_job {
    mr_comm *c;
    const float *send;
    float *recv;
    const int *sc, *sd, *rc, *rd;
    size_t elem;
} combine_job;

static mr_status run_combine(void *ctx, void *job) {
    (void)ctx;
    combine_job *j = job;
    return j->c->ops->alltoallv(j->c, j->send, j->sc, j->sd, j->recv, j->rc, j->rd, j->elem);
}

typedef struct run_ctx {
    mr_backend *be;
    mr_comm *c;
    mr_progress *prog;
    combine_job job;
    const float *x, *gu, *down;
    float *gu_out, *act, *y;
    int T, H, I;
} run_ctx;

static void shared_experts(run_ctx *r) {
    const mr_backend_ops *ops = r->be->ops;
    ops->matmul(r->be, r->gu_out, r->x, r->gu, NULL, r->T, 2 * r->I, r->H, 0);
    ops->silu_mul(r->be, r->act, r->gu_out, r->T, r->I);
    ops->matmul(r->be, r->y, r->act, r->down, NULL, r->T, r->H, r->I, 0);
    ops->sync(r->be);
}

/* 0 compute, 1 comm, 2 sequential, 3 overlapped */
static mr_status run_once(run_ctx *r, int mode) {
    if (mode == 0) {
        shared_experts(r);
        return MR_OK;
    }
    if (mode == 3) {
        MR_CHECK(mr_progress_start(r->prog, &r->job));
        shared_experts(r);
        return mr_progress_wait(r->prog);
    }
    MR_CHECK(run_combine(NULL, &r->job));
    if (mode == 2) shared_experts(r);
    return MR_OK;
}

static mr_status run_mode(void *ctx, int mode) { return run_once(ctx, mode); }

int main(int argc, char **argv) {
    mr_comm *world;
    if (mr_comm_mpi_init(&argc, &argv, &world) != MR_OK) {
        fprintf(stderr, "MPI init: %s\n", mr_last_error());
        return 1;
    }
    int G = world->size, me = world->rank;
    int tokens[16] = {64, 256}, n_tokens = 2, iters = 7, threads = 1, use[N_SHAPES] = {1, 1, 1};
    const char *json = NULL, *label = "", *names[N_SHAPES];
    for (int k = 0; k < N_SHAPES; k++) names[k] = SHAPES[k].name;
    static const struct option lo[] = {{"shapes", 1, 0, 's'}, {"tokens", 1, 0, 't'}, {"iters", 1, 0, 'i'},
                                       {"threads", 1, 0, 'p'}, {"json", 1, 0, 'j'},   {"label", 1, 0, 'l'},
                                       {"help", 0, 0, 'h'},   {0, 0, 0, 0}};
    for (int ch; (ch = getopt_long(argc, argv, "h", lo, NULL)) != -1;) {
        switch (ch) {
        case 's': bench_pick(optarg, names, N_SHAPES, use, "bench-moe-overlap"); break;
        case 't': n_tokens = bench_parse_ints(optarg, tokens, 16); break;
        case 'i': iters = atoi(optarg); break;
        case 'p': threads = atoi(optarg); break;
        case 'j': json = optarg; break;
        case 'l': label = optarg; break;
        default:
            if (me == 0)
                fprintf(stderr, "usage: mpirun -np G %s [--shapes qwen1.5-moe,dsv2-lite,dsv3] [--tokens 64,256] "
                                "[--iters N] [--threads T] [--json FILE] [--label TEXT]\n", argv[0]);
            mr_comm_mpi_finalize();
            return ch == 'h' ? 0 : 2;
        }
    }
    mr_progress *prog = NULL;
    mr_backend be = {0};
    mr_comm *comm = world; /* the combine's communicator */
    mr_status st = MR_OK;
#ifdef MR_BENCH_CUDA
    int device = -1;
    (void)threads; /* the GEMMs are the GPU's */
    st = bench_gpu_start(world, &be, &device);
    if (st == MR_OK) st = mr_comm_nccl_create(world, device, mr_backend_cuda_stream(&be), &comm);
#else
    mr_backend_cpu_init(&be, threads);
#endif
    if (st == MR_OK) st = mr_progress_create(&comm, 1, run_combine, NULL, sizeof(combine_job), &prog);
    int bad[1] = {st != MR_OK};
    world->ops->allreduce_max_i32(world, bad, 1);
    if (bad[0]) {
        fprintf(stderr, "bench-moe-overlap (rank %d): %s\n", me, st != MR_OK ? mr_last_error() : "another rank failed");
        mr_comm_mpi_finalize();
        return st == MR_ERR_UNSUPPORTED ? 77 : 2;
    }
    int *cnt = calloc(4 * (size_t)G, sizeof(int));
    FILE *jf = NULL;
    if (me == 0) {
#ifdef MR_BENCH_CUDA
        printf("# bench-moe-overlap-gpu %s: %d ranks, a GPU each (CUDA fp32 GEMMs, NCCL all-to-all); median of %d\n",
               label, G, iters);
#else
        printf("# bench-moe-overlap %s: %d ranks, %d GEMM thread(s) a rank; median of %d\n", label, G, threads, iters);
#endif
        printf("%-12s %6s %5s %5s %2s %11s %9s %11s %11s %9s %9s %9s\n", "shape", "tokens", "H", "I", "K",
               "compute ms", "comm ms", "sequent. ms", "overlap ms", "ideal ms", "ovl/ideal", "seq/ideal");
        jf = bench_json_open(json);
    }
    int first = 1;
    for (int s = 0; s < N_SHAPES; s++) {
        if (!use[s]) continue;
        int H = SHAPES[s].H, I = SHAPES[s].I, K = SHAPES[s].K;
        for (int ti = 0; ti < n_tokens; ti++) {
            int T = tokens[ti], rows = T * K;
            /* rows dealt evenly over the group, as uniform routing does */
            for (int d = 0; d < G; d++) {
                cnt[d] = cnt[G + d] = rows / G + (d < rows % G);
                cnt[2 * G + d] = d ? cnt[2 * G + d - 1] + cnt[d - 1] : 0;
            }
            memcpy(cnt + 3 * G, cnt + 2 * G, (size_t)G * sizeof(int));
            float *x = malloc((size_t)T * H * 4), *gu = malloc((size_t)2 * I * H * 4), *down = malloc((size_t)H * I * 4);
            float *gu_out = malloc((size_t)T * 2 * I * 4), *act = malloc((size_t)T * I * 4), *y = malloc((size_t)T * H * 4);
            float *send = malloc((size_t)rows * H * 4), *recv = malloc((size_t)rows * H * 4);
            ar_fill(x, (size_t)T * H, AR_NORMAL, 32, 11 + (uint64_t)me);
            ar_fill(gu, (size_t)2 * I * H, AR_NORMAL, 32, 23);
            ar_fill(down, (size_t)H * I, AR_NORMAL, 32, 37);
            ar_fill(send, (size_t)rows * H, AR_NORMAL, 32, 41 + (uint64_t)me);
#ifdef MR_BENCH_CUDA /* the same data on the device */
            float **bufs[] = {&x, &gu, &down, &gu_out, &act, &y, &send, &recv};
            size_t nb[] = {(size_t)T * H, (size_t)2 * I * H, (size_t)H * I, (size_t)T * 2 * I, (size_t)T * I,
                           (size_t)T * H, (size_t)rows * H, (size_t)rows * H};
            static const int input[] = {1, 1, 1, 0, 0, 0, 1, 0}; /* x, gu, down, send; the rest are outputs */
            for (int b = 0; b < 8; b++) {
                float *h = *bufs[b];
                *bufs[b] = be.ops->alloc(&be, nb[b] * sizeof(float));
                if (input[b]) be.ops->upload(&be, *bufs[b], h, nb[b] * sizeof(float));
                else be.ops->zero(&be, *bufs[b], nb[b]);
                be.ops->sync(&be);
                free(h);
            }
#endif
            run_ctx r = {&be, comm, prog, {comm, send, recv, cnt, cnt + 2 * G, cnt + G, cnt + 3 * G, (size_t)H * 4},
                         x, gu, down, gu_out, act, y, T, H, I};
            double tm[4];
            bench_medians(4, iters, run_mode, &r, tm, "bench-moe-overlap");
            double ideal = tm[0] > tm[1] ? tm[0] : tm[1];
            if (me == 0) {
                printf("%-12s %6d %5d %5d %2d %11.2f %9.2f %11.2f %11.2f %9.2f %9.3f %9.3f\n", SHAPES[s].name, T, H, I, K,
                       tm[0] * 1e3, tm[1] * 1e3, tm[2] * 1e3, tm[3] * 1e3, ideal * 1e3, tm[3] / ideal, tm[2] / ideal);
                if (jf)
                    fprintf(jf,
                            "%s  {\"label\": \"%s\", \"shape\": \"%s\", \"ranks\": %d, \"tokens\": %d, \"H\": %d, "
                            "\"I\": %d, \"K\": %d, \"compute_ms\": %.3f, \"comm_ms\": %.3f, \"sequential_ms\": %.3f, "
                            "\"overlapped_ms\": %.3f, \"ideal_ms\": %.3f}",
                            bench_json_sep(&first), label, SHAPES[s].name, G, T, H, I, K, tm[0] * 1e3, tm[1] * 1e3,
                            tm[2] * 1e3, tm[3] * 1e3, ideal * 1e3);
            }
#ifdef MR_BENCH_CUDA
            float *dev_bufs[] = {x, gu, down, gu_out, act, y, send, recv};
            for (int b = 0; b < 8; b++) be.ops->free(&be, dev_bufs[b]);
#else
            free(x), free(gu), free(down), free(gu_out), free(act), free(y), free(send), free(recv);
#endif
        }
    }
    bench_json_close(jf);
    free(cnt);
    mr_progress_destroy(prog);
#ifdef MR_BENCH_CUDA
    mr_comm_destroy(comm);
    mr_backend_cuda_free(&be);
#else
    mr_backend_cpu_free(&be);
#endif
    mr_comm_destroy(world);
    mr_comm_mpi_finalize();
    return 0;
}
