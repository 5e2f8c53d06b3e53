/* Single-rank throughput: prefill tokens/s and decode tokens/s at several
 * batch sizes, on a model folder (usually config.json alone with
 * --synthetic), beside two baselines measured in the same run:
 *   - OpenBLAS sgemm GFLOP/s on a large square-ish shape (compute ceiling),
 *   - memcpy GB/s on a buffer far larger than the caches (memory ceiling).
 * Decode at small batch is weight-streaming bound: its GB/s (weight bytes
 * per step / step time) is printed next to the memcpy figure; prefill and
 * large-batch decode are GEMM bound: their GFLOP/s (2 x active parameters
 * per token) next to the sgemm figure.
 *
 * With --generate N it also runs the engine end to end at each batch size:
 * B requests of --prompt tokens each, N greedy tokens each (EOS ignored),
 * continuous batching under the prefill token budget; tokens/s there is
 * generated tokens over the whole run's wall time, prefill included.
 *
 * --model takes a Hugging Face folder or a .gguf file (dequantized to fp32).
 *
 * usage: bench-engine --model DIR|FILE.gguf [--synthetic] [--batches 1,8,64]
 *        [--prompt 128] [--steps 16] [--generate N] [--threads N] [--json FILE] */
#define _GNU_SOURCE
#include <cblas.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench-common.h"
#include "runtime/engine.h"
#include "runtime/model.h"
#include "topology/topology.h"

static double bench_sgemm(int threads) {
    int M = 512, N = 2048, K = 2048;
    float *a = malloc(sizeof(float) * (size_t)M * K), *b = malloc(sizeof(float) * (size_t)N * K);
    float *c = malloc(sizeof(float) * (size_t)M * N);
    for (size_t i = 0; i < (size_t)M * K; i++) a[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)N * K; i++) b[i] = (float)(i % 5) * 0.1f;
    openblas_set_num_threads(threads);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, a, K, b, K, 0, c, N);
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        double t = now_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, a, K, b, K, 0, c, N);
        t = now_s() - t;
        if (t < best) best = t;
    }
    free(a);
    free(b);
    free(c);
    return 2.0 * M * N * K / best / 1e9;
}

/* Parameters touched per token: all but the routed experts not chosen. */
/* B requests of `prompt` pseudo-random tokens, `gen` greedy tokens each,
 * through the engine; generated tokens per second of wall time. */
static double bench_generate(mr_model *m, int B, int prompt, int gen, int budget, mr_engine_stats *st) {
    int V = mr_model_get_config(m)->vocab;
    mr_request *r = calloc((size_t)B, sizeof *r);
    for (int i = 0; i < B; i++) {
        r[i].index = i;
        r[i].id_hash = (uint64_t)i;
        r[i].prompt = malloc(sizeof(int32_t) * (size_t)prompt);
        for (int t = 0; t < prompt; t++) r[i].prompt[t] = (int32_t)(((i + 1) * 7919 + t * 104729) % V);
        r[i].n_prompt = prompt;
        r[i].max_tokens = gen;
        r[i].ignore_eos = 1;
        r[i].sample.top_p = 1;
    }
    mr_engine_options eo = {.max_batch = B, .token_budget = budget};
    memset(st, 0, sizeof *st);
    double t = now_s();
    mr_status rc = mr_engine_run(m, r, B, &eo, NULL, NULL, st);
    t = now_s() - t;
    if (rc != MR_OK) fprintf(stderr, "bench-engine: generate: %s\n", mr_last_error());
    uint64_t done = 0;
    for (int i = 0; i < B; i++) {
        done += (uint64_t)r[i].n_out;
        mr_request_clear(&r[i]);
    }
    free(r);
    return rc == MR_OK ? (double)done / t : 0;
}

static double active_params(const mr_model_config *c) {
    double total = mr_config_param_count(c);
    if (!c->n_experts) return total - (double)c->vocab * c->hidden * (c->tie_embeddings ? 0 : 1);
    int moe_layers = 0;
    for (int l = 0; l < c->n_layers; l++) moe_layers += mr_config_is_moe_layer(c, l);
    double per_expert = 3.0 * c->hidden * c->moe_intermediate;
    return total - (double)moe_layers * (c->n_experts - c->top_k) * per_expert -
           (double)c->vocab * c->hidden * (c->tie_embeddings ? 0 : 1);
}

int main(int argc, char **argv) {
    const char *model_dir = NULL, *json_path = NULL, *batches = "1,8,64";
    int synthetic = 0, prompt = 128, steps = 16, threads = 0, generate = 0;
    static const struct option lo[] = {
        {"model", 1, 0, 'm'}, {"synthetic", 0, 0, 's'}, {"batches", 1, 0, 'b'}, {"prompt", 1, 0, 'p'},
        {"steps", 1, 0, 'n'}, {"threads", 1, 0, 't'},   {"json", 1, 0, 'j'},    {"help", 0, 0, 'h'},
        {"generate", 1, 0, 'g'},
        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'm': model_dir = optarg; break;
        case 's': synthetic = 1; break;
        case 'b': batches = optarg; break;
        case 'p': prompt = atoi(optarg); break;
        case 'n': steps = atoi(optarg); break;
        case 't': threads = atoi(optarg); break;
        case 'j': json_path = optarg; break;
        case 'g': generate = atoi(optarg); break;
        default:
            fprintf(c == 'h' ? stdout : stderr,
                    "usage: bench-engine --model DIR|FILE.gguf [--synthetic] [--batches 1,8,64] [--prompt 128] "
                    "[--steps 16] [--generate N] [--threads N] [--json FILE]\n");
            return c == 'h' ? 0 : 2;
        }
    }
    if (!model_dir) { fprintf(stderr, "bench-engine: --model is required\n"); return 2; }
    if (threads <= 0) {
        mr_local_cpus lc;
        threads = mr_topo_local_cpus(&lc) == MR_OK ? lc.cores : 1;
    }
    int bs[16], nb = 0, maxb = 1;
    for (char *s = strdup(batches), *tok = strtok(s, ","); tok && nb < 16; tok = strtok(NULL, ",")) {
        bs[nb] = atoi(tok);
        if (bs[nb] > maxb) maxb = bs[nb];
        nb++;
    }
    int prefill_tokens = prompt * 4;
    int step_tokens = prefill_tokens > maxb ? prefill_tokens : maxb;

    double gemm = bench_sgemm(threads), bw = bench_memcpy();
    mr_backend be;
    mr_backend_cpu_init(&be, threads);
    mr_model_options mo = {.max_slots = maxb > 4 ? maxb : 4, .max_ctx = prompt + (steps > generate ? steps : generate) + 2,
                           .max_step_tokens = step_tokens, .synthetic = synthetic, .seed = 1};
    mr_model *m;
    double t_load = now_s();
    if (mr_model_load(&m, model_dir, &mo, &be) != MR_OK) {
        fprintf(stderr, "bench-engine: %s\n", mr_last_error());
        return 2;
    }
    t_load = now_s() - t_load;
    const mr_model_config *cfg = mr_model_get_config(m);
    double act = active_params(cfg), wbytes = (double)mr_model_weight_bytes(m);
    struct utsname un;
    uname(&un);
    char host[64] = "?";
    gethostname(host, sizeof host);
    printf("# bench-engine: %s (%s), %.0fM parameters (%.0fM active per token), fp32 weights %.2f GB\n",
           model_dir, cfg->model_type, mr_config_param_count(cfg) / 1e6, act / 1e6, wbytes / 1e9);
    printf("# machine: %s %s, %d threads; load %.1f s\n", host, un.machine, threads, t_load);
    printf("# baselines (same run): OpenBLAS sgemm 512x2048x2048 %.1f GFLOP/s, memcpy %.1f GB/s\n", gemm, bw);
    printf("%-10s %6s %8s %12s %10s %10s %9s %9s\n", "phase", "batch", "tokens", "time_ms", "tok/s", "GFLOP/s",
           "%sgemm", "GB/s");

    int32_t *tok = malloc(sizeof(int32_t) * (size_t)step_tokens), *slot = malloc(sizeof(int32_t) * (size_t)step_tokens);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)step_tokens), *rows = malloc(sizeof(int32_t) * (size_t)step_tokens);
    float *logits = malloc(sizeof(float) * (size_t)(maxb > 4 ? maxb : 4) * (size_t)cfg->vocab);
    FILE *jf = json_path ? fopen(json_path, "w") : NULL;
    if (jf) fprintf(jf, "[\n");
    int first = 1;

    /* Prefill: 4 sequences x prompt tokens in one step, logits of last rows. */
    for (int t = 0; t < prefill_tokens; t++) {
        tok[t] = (t * 7919) % cfg->vocab;
        slot[t] = t / prompt;
        pos[t] = t % prompt;
    }
    for (int i = 0; i < 4; i++) rows[i] = (i + 1) * prompt - 1;
    mr_batch b = {.ntok = prefill_tokens, .tokens = tok, .slot = slot, .pos = pos, .n_out = 4, .out_rows = rows};
    mr_model_forward(m, &b, logits); /* warm-up */
    double t0 = now_s();
    mr_model_forward(m, &b, logits);
    double tp = now_s() - t0;
    double gf = 2.0 * act * prefill_tokens / tp / 1e9;
    printf("%-10s %6d %8d %12.1f %10.1f %10.1f %8.0f%% %9s\n", "prefill", 4, prefill_tokens, tp * 1e3,
           prefill_tokens / tp, gf, 100 * gf / gemm, "-");
    if (jf) {
        fprintf(jf, "  {\"phase\": \"prefill\", \"batch\": 4, \"tokens\": %d, \"seconds\": %.6f, \"tokens_per_s\": %.2f, "
                "\"gflops\": %.2f, \"sgemm_gflops\": %.2f, \"memcpy_gbs\": %.2f}", prefill_tokens, tp,
                prefill_tokens / tp, gf, gemm, bw);
        first = 0;
    }
    for (int k = 0; k < nb; k++) {
        int B = bs[k];
        if (B > mo.max_slots) continue;
        for (int s = 0; s < steps + 1; s++) { /* step 0 is warm-up */
            for (int i = 0; i < B; i++) {
                tok[i] = (i * 31 + s * 17) % cfg->vocab;
                slot[i] = i;
                pos[i] = prompt + s; /* attention over a prompt-long cache */
                rows[i] = i;
            }
            mr_batch d = {.ntok = B, .tokens = tok, .slot = slot, .pos = pos, .n_out = B, .out_rows = rows};
            if (s == 1) t0 = now_s();
            mr_model_forward(m, &d, logits);
        }
        double td = (now_s() - t0) / steps;
        /* weights streamed per step: what the last step touched (MoE: the chosen experts) */
        double gbs = (double)mr_model_step_weight_bytes(m) / td / 1e9, gfd = 2.0 * act * B / td / 1e9;
        printf("%-10s %6d %8d %12.2f %10.1f %10.1f %8.0f%% %9.1f\n", "decode", B, B, td * 1e3, B / td, gfd,
               100 * gfd / gemm, gbs);
        if (jf) {
            fprintf(jf, "%s  {\"phase\": \"decode\", \"batch\": %d, \"step_ms\": %.3f, \"tokens_per_s\": %.2f, "
                    "\"gflops\": %.2f, \"weight_gbs\": %.2f, \"sgemm_gflops\": %.2f, \"memcpy_gbs\": %.2f}",
                    first ? "" : ",\n", B, td * 1e3, B / td, gfd, gbs, gemm, bw);
            first = 0;
        }
    }
    for (int k = 0; k < nb && generate > 0; k++) {
        int B = bs[k];
        if (B > mo.max_slots) continue;
        mr_engine_stats st;
        double tps = bench_generate(m, B, prompt, generate, step_tokens, &st);
        printf("%-10s %6d %8llu %12.1f %10.1f %10s %9s %9s\n", "generate", B, (unsigned long long)st.generated_tokens,
               st.seconds * 1e3, tps, "-", "-", "-");
        if (jf) {
            fprintf(jf, "%s  {\"phase\": \"generate\", \"batch\": %d, \"prompt\": %d, \"new_tokens\": %d, "
                    "\"generated\": %llu, \"engine_steps\": %llu, \"seconds\": %.4f, \"tokens_per_s\": %.2f}",
                    first ? "" : ",\n", B, prompt, generate, (unsigned long long)st.generated_tokens,
                    (unsigned long long)st.steps, st.seconds, tps);
            first = 0;
        }
    }
    if (jf) {
        fprintf(jf, "\n]\n");
        fclose(jf);
    }
    printf("# memory floor at batch 1: %.1f ms/step (weight bytes / memcpy GB/s, read+write counted)\n", wbytes / (bw * 1e9) * 1e3);
    mr_model_free(m);
    mr_backend_cpu_free(&be);
    free(tok);
    free(slot);
    free(pos);
    free(rows);
    free(logits);
    return 0;
}
