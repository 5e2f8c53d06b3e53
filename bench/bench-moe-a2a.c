/* bench-moe-a2a: the expert-parallel dispatch + combine of one MoE layer,
 * beside a plain MPI_Alltoallv of the same rows measured in the same run.
 *
 *   mpirun -np G bench-moe-a2a --model bench/models/moe-ds-small [--tokens 1,16,64,256] [--iters N]
 *
 * Every rank loads the model with its 1/G of the routed experts (synthetic
 * weights from config.json), then runs forward passes of T tokens (T
 * sequences at position 0, so attention is trivial and the MoE layers carry
 * the work).  The model times, per MoE layer call:
 *   dispatch  routed rows laid out by destination, counts exchanged, expert
 *             ids and payload sent with all-to-all(v), received rows grouped
 *             by local expert;
 *   combine   expert outputs back in received order, the reverse
 *             all-to-all(v), the weighted sum into the own tokens' rows;
 *   a2a       the four all-to-all(v) calls alone.
 * The baseline replays the latest exchange's rows per peer (hidden floats a
 * row) as two MPI_Alltoallv calls, there and back: the payload bytes of
 * dispatch + combine with none of the layout work or the small exchanges.
 * Times are the maximum over ranks of the mean per call.  The model is
 * loaded with ep_timing_sync: an untimed barrier before the dispatch and
 * before the combine, so that neither holds the wait for a rank still busy
 * with its attention or experts (load imbalance is not exchange time). */
#define _GNU_SOURCE
#include <getopt.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench-common.h"
#include "runtime/comm.h"
#include "runtime/model.h"

static double max_over_ranks(double v) {
    double r;
    MPI_Allreduce(&v, &r, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return r;
}

static void usage(FILE *f) {
    fprintf(f, "usage: mpirun -np G bench-moe-a2a --model DIR [--tokens 1,16,64,256] [--iters N] [--threads N]\n"
               "                               [--json FILE]\n"
               "Expert-parallel dispatch + combine per MoE layer (expert group = all G ranks, synthetic\n"
               "weights) beside MPI_Alltoallv of the same rows, measured in the same run.\n");
}

int main(int argc, char **argv) {
    mr_comm *w;
    if (mr_comm_mpi_init(&argc, &argv, &w) != MR_OK) {
        fprintf(stderr, "bench-moe-a2a: %s\n", mr_last_error());
        return 1;
    }
    const char *model = NULL, *tokens_arg = "1,16,64,256", *json = NULL;
    int iters = 5, threads = 1;
    static const struct option opts[] = {{"model", required_argument, 0, 'm'}, {"tokens", required_argument, 0, 't'},
                                          {"iters", required_argument, 0, 'i'}, {"threads", required_argument, 0, 'j'},
                                          {"json", required_argument, 0, 'J'},   {"help", no_argument, 0, 'h'},
                                          {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 't': tokens_arg = optarg; break;
        case 'i': iters = atoi(optarg); break;
        case 'j': threads = atoi(optarg); break;
        case 'J': json = optarg; break;
        case 'h': if (w->rank == 0) usage(stdout); mr_comm_mpi_finalize(); return 0;
        default: if (w->rank == 0) usage(stderr); mr_comm_mpi_finalize(); return 2;
        }
    }
    if (!model || iters < 1 || threads < 1) {
        if (w->rank == 0) usage(stderr);
        mr_comm_mpi_finalize();
        return 2;
    }
    int ts[32], nts = 0, tmax = 0;
    for (char *s = (char *)tokens_arg; *s && nts < 32;) {
        ts[nts] = (int)strtol(s, &s, 10);
        if (ts[nts] < 1) break;
        if (ts[nts] > tmax) tmax = ts[nts];
        nts++;
        if (*s == ',') s++;
    }
    mr_backend be;
    mr_backend_cpu_init(&be, threads);
    mr_model_options mo = {.max_slots = tmax, .max_ctx = 4, .max_step_tokens = tmax, .synthetic = 1, .seed = 1,
                          .ep_timing_sync = 1};
    mo.shard = (mr_model_shard){.tp = 1, .ep = w->size, .ep_rank = w->rank, .ep_comm = w};
    mr_model *m;
    if (mr_model_load(&m, model, &mo, &be) != MR_OK) {
        fprintf(stderr, "bench-moe-a2a rank %d: %s\n", w->rank, mr_last_error());
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    const mr_model_config *cfg = mr_model_get_config(m);
    int H = cfg->hidden, G = w->size;
    int32_t *tok = malloc((size_t)tmax * sizeof *tok), *slot = malloc((size_t)tmax * sizeof *slot);
    int32_t *pos = calloc((size_t)tmax, sizeof *pos), out_row = 0;
    float *logits = malloc((size_t)cfg->vocab * sizeof *logits);
    int *sc = malloc((size_t)G * sizeof *sc), *rc = malloc((size_t)G * sizeof *rc);
    int *sd = malloc((size_t)G * sizeof *sd), *rd = malloc((size_t)G * sizeof *rd);
    FILE *jf = json && w->rank == 0 ? fopen(json, "w") : NULL;
    if (w->rank == 0) {
        printf("# bench-moe-a2a: %s, %d ranks in the expert group, hidden %d, %d routed experts top-%d, "
               "fp32 rows, %d thread(s) per rank\n",
               model, G, H, cfg->n_experts, cfg->top_k, threads);
        printf("# per MoE layer call, max over ranks of the mean; baseline: MPI_Alltoallv of the same rows there "
               "and back\n");
        printf("%8s %10s %10s | %12s %12s %12s %12s | %14s %8s\n", "tok/rank", "rows/rank", "KiB/rank",
               "dispatch_us", "combine_us", "disp+comb_us", "a2a_only_us", "alltoallv_us", "ratio");
    }
    for (int k = 0; k < nts; k++) {
        int T = ts[k];
        uint64_t seed = 0x9E3779B97F4A7C15ull * (uint64_t)(w->rank + 1);
        for (int t = 0; t < T; t++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            tok[t] = (int32_t)((seed >> 33) % (uint64_t)cfg->vocab);
            slot[t] = t;
        }
        mr_batch b = {.ntok = T, .tokens = tok, .slot = slot, .pos = pos, .n_out = 1, .out_rows = &out_row};
        if (mr_model_forward(m, &b, logits) != MR_OK) { /* warm-up */
            fprintf(stderr, "rank %d: %s\n", w->rank, mr_last_error());
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        mr_moe_ep_stats s0, s1;
        mr_model_moe_ep_stats(m, &s0);
        MPI_Barrier(MPI_COMM_WORLD);
        for (int i = 0; i < iters; i++)
            if (mr_model_forward(m, &b, logits) != MR_OK) MPI_Abort(MPI_COMM_WORLD, 1);
        mr_model_moe_ep_stats(m, &s1);
        double calls = (double)(s1.calls - s0.calls);
        double disp = (s1.dispatch_s - s0.dispatch_s) / calls, comb = (s1.combine_s - s0.combine_s) / calls;
        double a2a = (s1.a2a_s - s0.a2a_s) / calls;
        double rows = (double)(s1.rows_sent - s0.rows_sent) / calls;
        /* the baseline: the latest layer's rows per peer, H floats each */
        memcpy(sc, s1.last_scount, (size_t)G * sizeof *sc);
        memcpy(rc, s1.last_rcount, (size_t)G * sizeof *rc);
        size_t ns = 0, nr = 0;
        for (int d = 0; d < G; d++) {
            sd[d] = (int)ns, rd[d] = (int)nr;
            ns += (size_t)sc[d], nr += (size_t)rc[d];
        }
        MPI_Datatype row;
        MPI_Type_contiguous(H, MPI_FLOAT, &row);
        MPI_Type_commit(&row);
        float *sb = calloc(ns ? ns * (size_t)H : 1, sizeof(float)), *rb = calloc(nr ? nr * (size_t)H : 1, sizeof(float));
        int reps = (int)calls;
        MPI_Alltoallv(sb, sc, sd, row, rb, rc, rd, row, MPI_COMM_WORLD); /* warm-up */
        MPI_Alltoallv(rb, rc, rd, row, sb, sc, sd, row, MPI_COMM_WORLD);
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = now_s();
        for (int r = 0; r < reps; r++) {
            MPI_Alltoallv(sb, sc, sd, row, rb, rc, rd, row, MPI_COMM_WORLD);
            MPI_Alltoallv(rb, rc, rd, row, sb, sc, sd, row, MPI_COMM_WORLD);
        }
        double base = (now_s() - t0) / reps;
        free(sb);
        free(rb);
        MPI_Type_free(&row);
        disp = max_over_ranks(disp), comb = max_over_ranks(comb), a2a = max_over_ranks(a2a);
        base = max_over_ranks(base), rows = max_over_ranks(rows);
        double kib = rows * H * sizeof(float) / 1024.0;
        if (w->rank == 0) {
            printf("%8d %10.1f %10.1f | %12.1f %12.1f %12.1f %12.1f | %14.1f %7.2fx\n", T, rows, kib, 1e6 * disp,
                   1e6 * comb, 1e6 * (disp + comb), 1e6 * a2a, 1e6 * base, (disp + comb) / base);
            if (jf)
                fprintf(jf,
                        "{\"bench\": \"moe-a2a\", \"model\": \"%s\", \"ranks\": %d, \"tokens_per_rank\": %d, "
                        "\"rows_per_rank\": %.1f, \"dispatch_us\": %.2f, \"combine_us\": %.2f, \"a2a_only_us\": %.2f, "
                        "\"baseline\": \"MPI_Alltoallv x2\", \"baseline_us\": %.2f}\n",
                        model, G, T, rows, 1e6 * disp, 1e6 * comb, 1e6 * a2a, 1e6 * base);
        }
    }
    if (jf) fclose(jf);
    free(tok), free(slot), free(pos), free(logits), free(sc), free(rc), free(sd), free(rd);
    mr_model_free(m);
    mr_backend_cpu_free(&be);
    mr_comm_destroy(w);
    mr_comm_mpi_finalize();
    return 0;
}
