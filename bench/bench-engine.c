/* Single-rank throughput: prefill tokens/s and decode step time at several
 * batch sizes, on a model folder (usually config.json alone with
 * --synthetic), on the CPU or one GPU, beside the floors measured in the
 * same run:
 *   cpu:  OpenBLAS sgemm GFLOP/s (512x2048x2048) and memcpy GB/s (read +
 *         write counted, 512 MiB);
 *   cuda: device memory bandwidth (a read-only kernel over 2 GiB, and
 *         cudaMemcpy D2D for reference) and the cuBLAS GEMM rate of the
 *         weights' type on 8192^3 (bf16 x bf16 -> fp32 as the backend's
 *         bf16 matmul, or fp32 without TF32), from bench/gpu-floors-lib.
 * Each row's floor is the larger of
 *   memory: bytes the step must read (weight matrices touched, MoE: the
 *           chosen experts only; plus the KV cache read by attention) / bandwidth,
 *   compute: FLOPs (2 x active parameters per token, LM head on the rows
 *           whose logits are wanted, plus causal attention) / GEMM rate,
 * and the row prints measured / floor.  Prefill is GEMM bound; decode at
 * batch 1 is weight-streaming bound.
 *
 * Before decode, every KV slot a decode batch uses is filled by prefill
 * forwards of --prefill-batch sequences of --prompt tokens each (one group
 * of slots after the other; the first group once more before them as a
 * warm-up); each of those forwards is a sample of the prefill row.  Decode then
 * runs --steps timed steps (after one warm-up) at positions prompt,
 * prompt+1, ... of each batch size.  On an asynchronous backend the
 * clock is read only after ops->sync().
 *
 * With --generate N it also runs the engine end to end at each batch size:
 * B requests of --prompt tokens each, N greedy tokens each (EOS ignored),
 * continuous batching under the prefill token budget; tokens/s there is
 * generated tokens over the whole run's wall time, prefill included.
 *
 * --model takes a Hugging Face folder or a .gguf file (dequantized to fp32).
 *
 * usage: bench-engine --model DIR|FILE.gguf [--synthetic] [--backend cpu|cuda]
 *        [--device N] [--weights fp32|bf16] [--deterministic] [--batches 1,8,64] [--prompt 128]
 *        [--prefill-batch 4] [--steps 16] [--generate N] [--threads N] [--json FILE]
 *        [--config-only] [--floor-mib 2048] [--floor-gemm 8192]
 * --floor-mib and --floor-gemm size the GPU floors (buffer MiB, GEMM n of n x n x n).
 * --config-only reads config.json alone and prints the shape, parameter
 * counts and the memory the run would take (no backend, no weights).
 * Exit status: 0; 1 when a run fails; 2 on a usage error or a backend this
 * build lacks; 77 for --backend cuda without a CUDA device. */
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
#ifdef MR_HAVE_CUDA
#include "bench/gpu-floors-lib.h"
#include "kernels/cuda/cuda-backend.h"
#endif

#define MAX_BATCHES 16

typedef enum backend_kind { BACKEND_CPU = 0, BACKEND_CUDA, BACKEND_KIND_COUNT } backend_kind;
static const char *const backend_names[BACKEND_KIND_COUNT] = {"cpu", "cuda"};
static const char *const weight_names[MR_WEIGHT_TYPE_COUNT] = {"fp32", "bf16"};

/* The floors of this run: a memory bandwidth and a GEMM rate, with the
 * names of what measured them. */
typedef struct floors {
    char mem_name[112], gemm_name[112];
    double mem_gbs, gemm_gflops;
    double other_mem_gbs; /* cuda: memcpy D2D (read+write) for reference; cpu: 0 */
    double other_gemm_gflops; /* cuda: the other weight type's cuBLAS rate; cpu: 0 */
    char other_gemm_name[64];
} floors;

/* What one row of the table needs for its floor. */
typedef struct row_cost {
    double flops, weight_bytes, kv_bytes;
} row_cost;

static double bench_sgemm(int threads) {
    int M = 512, N = 2048, K = 2048;
    float *a = malloc(sizeof(float) * (size_t)M * K), *b = malloc(sizeof(float) * (size_t)N * K);
    float *c = malloc(sizeof(float) * (size_t)M * N);
    if (!a || !b || !c) {
        free(a), free(b), free(c);
        return 0;
    }
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

static void cpu_floors(floors *f, int threads) {
    memset(f, 0, sizeof *f);
    f->gemm_gflops = bench_sgemm(threads);
    f->mem_gbs = bench_memcpy();
    snprintf(f->gemm_name, sizeof f->gemm_name, "OpenBLAS sgemm 512x2048x2048");
    snprintf(f->mem_name, sizeof f->mem_name, "memcpy 512 MiB (read+write)");
}

#ifdef MR_HAVE_CUDA
/* The GPU's floors, measured before the model takes the memory: the read
 * kernel is the bandwidth of streaming weights (they are read, not copied);
 * the GEMM rate is cuBLAS's for the weights' type. */
static int cuda_floors(floors *f, int device, mr_weight_type wt, int mib, int gemm) {
    char err[512];
    mr_gpu_floor rd, cp, g32, g16;
    memset(f, 0, sizeof *f);
    if (mr_gpu_floor_measure(device, MR_GPU_FLOOR_READ, (size_t)mib << 20, &rd, err, sizeof err) ||
        mr_gpu_floor_measure(device, MR_GPU_FLOOR_MEMCPY, (size_t)mib << 20, &cp, err, sizeof err) ||
        mr_gpu_floor_measure(device, MR_GPU_FLOOR_GEMM_F32, (size_t)gemm, &g32, err, sizeof err) ||
        mr_gpu_floor_measure(device, MR_GPU_FLOOR_GEMM_BF16_F32, (size_t)gemm, &g16, err, sizeof err)) {
        fprintf(stderr, "bench-engine: GPU floors: %s\n", err);
        return -1;
    }
    const mr_gpu_floor *use = wt == MR_WEIGHTS_BF16 ? &g16 : &g32, *other = wt == MR_WEIGHTS_BF16 ? &g32 : &g16;
    /* best of the repetitions: a floor is the least time the device allows */
    f->mem_gbs = rd.rate_best;
    f->other_mem_gbs = cp.rate_best;
    f->gemm_gflops = use->rate_best * 1e3;
    f->other_gemm_gflops = other->rate_best * 1e3;
    snprintf(f->mem_name, sizeof f->mem_name, "%s %s", rd.name, rd.shape);
    snprintf(f->gemm_name, sizeof f->gemm_name, "%s %s", use->name, use->shape);
    snprintf(f->other_gemm_name, sizeof f->other_gemm_name, "%s", other->name);
    return 0;
}
#endif

/* Parameters a token multiplies by, without the embedding (a gather) and
 * without the LM head (counted per output row): all but the routed experts
 * not chosen. */
static double body_params(const mr_model_config *c) {
    double total = mr_config_param_count(c);
    double emb_and_head = (double)c->vocab * c->hidden * (c->tie_embeddings ? 1 : 2);
    if (!c->n_experts) return total - emb_and_head;
    int moe_layers = 0;
    for (int l = 0; l < c->n_layers; l++) moe_layers += mr_config_is_moe_layer(c, l);
    double per_expert = 3.0 * c->hidden * c->moe_intermediate;
    return total - (double)moe_layers * (c->n_experts - c->top_k) * per_expert - emb_and_head;
}

/* Causal attention FLOPs of one query at position pos (q.k and p.v over
 * pos + 1 cached positions, every layer). */
static double attn_flops(const mr_model_config *c, double pos) {
    return 2.0 * (pos + 1) * c->n_heads * (mr_config_qk_dim(c) + mr_config_v_dim(c)) * c->n_layers;
}

/* KV-cache bytes attention reads for one query at position pos: the cache
 * holds per layer and position kv_heads x (qk + v) floats (MLA: one per
 * query head, model-load.c), fp32 on every backend. */
static double kv_read_bytes(const mr_model_config *c, double pos) {
    int kvh = mr_config_is_mla(c) ? c->n_heads : c->n_kv_heads;
    return (pos + 1) * c->n_layers * (double)kvh * (mr_config_qk_dim(c) + mr_config_v_dim(c)) * sizeof(float);
}

/* Weight bytes the last forward streamed, without the input embedding
 * table (only the batch's rows are gathered from it; it stays fp32,
 * model.h) -- unless it is also the LM head: tied and fp32.  With bf16
 * matrices a tied model keeps a bf16 copy as its head. */
static double step_weight_bytes(const mr_model *m) {
    const mr_model_config *c = mr_model_get_config(m);
    double b = (double)mr_model_step_weight_bytes(m);
    if (!c->tie_embeddings || mr_model_get_options(m)->weights == MR_WEIGHTS_BF16)
        b -= (double)c->vocab * c->hidden * sizeof(float);
    return b > 0 ? b : 0;
}

/* floor_ms and which bound sets it ("mem" or "gemm"). */
static double row_floor_ms(const floors *f, const row_cost *rc, const char **bound) {
    double mem = f->mem_gbs > 0 ? (rc->weight_bytes + rc->kv_bytes) / (f->mem_gbs * 1e9) * 1e3 : 0;
    double gemm = f->gemm_gflops > 0 ? rc->flops / (f->gemm_gflops * 1e9) * 1e3 : 0;
    *bound = mem >= gemm ? "mem" : "gemm";
    return mem >= gemm ? mem : gemm;
}

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', f);
        if ((unsigned char)*s >= 0x20) fputc(*s, f);
    }
    fputc('"', f);
}

/* The fields every JSON row carries: what ran where, and the floors. */
typedef struct run_info {
    const char *model, *backend, *weights;
    char device[512];
    const floors *fl;
    double bytes_per_param; /* weight bytes held / parameters (bf16 in effect: ~2) */
    int det;                /* --deterministic: comm.deterministic's fixed-order products */
} run_info;

static void json_row_begin(FILE *jf, int *first, const run_info *ri, const char *phase, int batch) {
    fprintf(jf, "%s  {\"engine\": \"moerun\", \"model\": ", bench_json_sep(first));
    json_str(jf, ri->model);
    fprintf(jf, ", \"backend\": \"%s\", \"device\": ", ri->backend);
    json_str(jf, ri->device);
    fprintf(jf, ", \"weights\": \"%s\", \"weight_bytes_per_param\": %.3f, \"mem_floor_gbs\": %.2f, \"mem_floor\": ",
            ri->weights, ri->bytes_per_param, ri->fl->mem_gbs);
    json_str(jf, ri->fl->mem_name);
    fprintf(jf, ", \"gemm_floor_gflops\": %.2f, \"gemm_floor\": ", ri->fl->gemm_gflops);
    json_str(jf, ri->fl->gemm_name);
    fprintf(jf, ", \"deterministic\": %s, \"phase\": \"%s\", \"batch\": %d", ri->det ? "true" : "false", phase,
            batch);
}

/* B requests of `prompt` pseudo-random tokens, `gen` greedy tokens each,
 * through the engine; generated tokens per second of wall time. */
static double bench_generate(mr_model *m, int B, int prompt, int gen, int budget, mr_engine_stats *st) {
    int V = mr_model_get_config(m)->vocab;
    mr_request *r = calloc((size_t)B, sizeof *r);
    if (!r) return 0;
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

/* --config-only: the shape and the memory of a run with these options,
 * from config.json alone.  Estimates: every parameter at 4 bytes (fp32), or
 * the matrices at 2 and the input embedding at 4 (bf16); the KV cache as
 * kv_read_bytes.  Returns the exit status. */
static int config_only(const char *dir, int nslots, int ctx) {
    mr_model_config c;
    if (mr_model_path_is_gguf(dir)) {
        fprintf(stderr, "bench-engine: --config-only takes a folder with config.json, not a .gguf file\n");
        return 2;
    }
    if (mr_config_load(&c, dir) != MR_OK) {
        fprintf(stderr, "bench-engine: %s\n", mr_last_error());
        return 1;
    }
    double total = mr_config_param_count(&c), emb = (double)c.vocab * c.hidden;
    double active = body_params(&c) + emb;
    printf("%s: %s, %d layers, hidden %d, %d heads (%d kv), vocab %d, %s", dir, c.model_type, c.n_layers, c.hidden,
           c.n_heads, c.n_kv_heads, c.vocab, c.tie_embeddings ? "tied" : "untied");
    if (c.n_experts)
        printf(", %d experts top-%d (moe_intermediate %d, %d shared), %d dense layers", c.n_experts, c.top_k,
               c.moe_intermediate, c.n_shared_experts, c.first_dense);
    if (mr_config_is_mla(&c))
        printf(", MLA kv_lora %d q_lora %d qk %d+%d v %d", c.kv_lora_rank, c.q_lora_rank, c.qk_nope_dim,
               c.qk_rope_dim, c.v_head_dim);
    printf("\nparameters %.3fB (%.3fB active per token)\n", total / 1e9, active / 1e9);
    printf("weights ~%.1f GB fp32, ~%.1f GB bf16; KV cache %.1f GB for %d slots x %d positions (fp32)\n",
           total * 4 / 1e9, ((total - emb) * 2 + emb * 4) / 1e9, nslots * kv_read_bytes(&c, ctx - 1) / 1e9, nslots,
           ctx);
    mr_config_free(&c);
    return 0;
}

static void usage(FILE *f) {
    fprintf(f, "usage: bench-engine --model DIR|FILE.gguf [--synthetic] [--backend cpu|cuda] [--device N] "
               "[--weights fp32|bf16] [--deterministic] [--batches 1,8,64] [--prompt 128] [--prefill-batch 4] "
               "[--steps 16] [--generate N] [--threads N] [--json FILE] [--config-only] [--floor-mib 2048] "
               "[--floor-gemm 8192]\n");
}

static int pick(const char *arg, const char *const *names, int n, const char *opt) {
    for (int i = 0; i < n; i++)
        if (!strcmp(arg, names[i])) return i;
    fprintf(stderr, "bench-engine: %s \"%s\": expected", opt, arg);
    for (int i = 0; i < n; i++) fprintf(stderr, "%s %s", i ? " or" : "", names[i]);
    fprintf(stderr, "\n");
    return -1;
}

static int positive(const char *arg, const char *opt, int *out) {
    char *end;
    long v = strtol(arg, &end, 10);
    if (*arg == '\0' || *end != '\0' || v < 1 || v > 1 << 20) {
        fprintf(stderr, "bench-engine: %s \"%s\": expected an integer in 1..%d\n", opt, arg, 1 << 20);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* Backend by kind: 0, 2 (not in this build), 77 (no device) or 1. */
static int backend_init(mr_backend *be, backend_kind kind, int device, int threads, char *desc, size_t cap) {
    if (kind == BACKEND_CPU) {
        struct utsname un;
        char host[64] = "?";
        uname(&un);
        gethostname(host, sizeof host);
        snprintf(desc, cap, "%s %s, %d threads", host, un.machine, threads);
        return mr_backend_cpu_init(be, threads) == 0 ? 0 : 1;
    }
#ifdef MR_HAVE_CUDA
    const char *why = NULL;
    if (mr_cuda_device_count(&why) <= 0) {
        printf("bench-engine: --backend cuda: no CUDA device (%s): skipped\n", why ? why : "none");
        return 77;
    }
    if (mr_cuda_device_describe(device, desc, cap) != 0) snprintf(desc, cap, "CUDA device %d", device);
    if (mr_backend_cuda_init(be, device) != 0) {
        fprintf(stderr, "bench-engine: CUDA backend on device %d: %s\n", device, mr_backend_cuda_error(be));
        return 1;
    }
    return 0;
#else
    (void)device;
    fprintf(stderr, "bench-engine: --backend cuda: this build has no CUDA backend (CMake found no nvcc, or "
                    "MR_WITH_CUDA=OFF); rebuild with CUDA or use --backend cpu\n");
    return 2;
#endif
}

static void backend_free(mr_backend *be, backend_kind kind) {
#ifdef MR_HAVE_CUDA
    if (kind == BACKEND_CUDA) {
        mr_backend_cuda_free(be);
        return;
    }
#endif
    mr_backend_cpu_free(be);
}

/* The backend's first recorded error (CUDA), or NULL. */
static const char *backend_error(mr_backend *be, backend_kind kind) {
#ifdef MR_HAVE_CUDA
    if (kind == BACKEND_CUDA) {
        be->ops->sync(be);
        return mr_backend_cuda_error(be);
    }
#endif
    (void)be, (void)kind;
    return NULL;
}

/* One forward, checked. */
static int forward(mr_model *m, const mr_batch *b, float *logits) {
    if (mr_model_forward(m, b, logits) != MR_OK) {
        fprintf(stderr, "bench-engine: forward of %d tokens: %s\n", b->ntok, mr_last_error());
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    mr_cpu_blas_core_check(argv, 1); /* may restart this program (kernels/cpu/cpu-blas-core.c) */
    const char *model_dir = NULL, *json_path = NULL, *batches = "1,8,64";
    int config = 0, synthetic = 0, prompt = 128, steps = 16, threads = 0, generate = 0, device = 0, pbatch = 4;
    int det = 0, floor_mib = 2048, floor_gemm = 8192; /* the GPU floors' buffer and GEMM sizes */
    backend_kind bk = BACKEND_CPU;
    mr_weight_type wt = MR_WEIGHTS_FP32;
    static const struct option lo[] = {
        {"model", 1, 0, 'm'},   {"synthetic", 0, 0, 's'}, {"batches", 1, 0, 'b'},       {"prompt", 1, 0, 'p'},
        {"steps", 1, 0, 'n'},   {"threads", 1, 0, 't'},   {"json", 1, 0, 'j'},          {"help", 0, 0, 'h'},
        {"generate", 1, 0, 'g'}, {"backend", 1, 0, 'B'},  {"device", 1, 0, 'd'},        {"weights", 1, 0, 'w'},
        {"prefill-batch", 1, 0, 'P'}, {"config-only", 0, 0, 'C'}, {"deterministic", 0, 0, 'D'},
        {"floor-mib", 1, 0, 'F'}, {"floor-gemm", 1, 0, 'G'}, {0, 0, 0, 0}};
    int c, v;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'm': model_dir = optarg; break;
        case 's': synthetic = 1; break;
        case 'C': config = 1; break;
        case 'D': det = 1; break;
        case 'b': batches = optarg; break;
        case 'p': if (positive(optarg, "--prompt", &prompt)) return 2; break;
        case 'n': if (positive(optarg, "--steps", &steps)) return 2; break;
        case 't': threads = atoi(optarg); break;
        case 'j': json_path = optarg; break;
        case 'g': generate = atoi(optarg); break;
        case 'd': device = atoi(optarg); break;
        case 'P': if (positive(optarg, "--prefill-batch", &pbatch)) return 2; break;
        case 'F': if (positive(optarg, "--floor-mib", &floor_mib)) return 2; break;
        case 'G': if (positive(optarg, "--floor-gemm", &floor_gemm)) return 2; break;
        case 'B':
            if ((v = pick(optarg, backend_names, BACKEND_KIND_COUNT, "--backend")) < 0) return 2;
            bk = (backend_kind)v;
            break;
        case 'w':
            if ((v = pick(optarg, weight_names, MR_WEIGHT_TYPE_COUNT, "--weights")) < 0) return 2;
            wt = (mr_weight_type)v;
            break;
        default: usage(c == 'h' ? stdout : stderr); return c == 'h' ? 0 : 2;
        }
    }
    if (!model_dir) { fprintf(stderr, "bench-engine: --model is required\n"); usage(stderr); return 2; }
    if (threads <= 0) {
        mr_local_cpus lc;
        threads = mr_topo_local_cpus(&lc) == MR_OK ? lc.cores : 1;
    }
    int bs[MAX_BATCHES], nb = 0, maxb = 1;
    char *list = strdup(batches);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        if (nb == MAX_BATCHES || positive(tok, "--batches", &bs[nb])) {
            if (nb == MAX_BATCHES) fprintf(stderr, "bench-engine: --batches: at most %d sizes\n", MAX_BATCHES);
            free(list);
            return 2;
        }
        if (bs[nb] > maxb) maxb = bs[nb];
        nb++;
    }
    free(list);
    /* KV slots: every decode batch's, filled by whole prefill groups */
    int nslots = (maxb + pbatch - 1) / pbatch * pbatch, ngroups = nslots / pbatch;
    int prefill_tokens = pbatch * prompt;
    int step_tokens = prefill_tokens > maxb ? prefill_tokens : maxb;
    int max_ctx = prompt + (steps > generate ? steps : generate) + 2;
    if (config) return config_only(model_dir, nslots, max_ctx);

    run_info ri = {.model = model_dir, .backend = backend_names[bk], .weights = weight_names[wt], .det = det};
    floors fl;
    memset(&fl, 0, sizeof fl);
    if (bk == BACKEND_CPU) cpu_floors(&fl, threads);
#ifdef MR_HAVE_CUDA
    /* (the device check and its skip come from backend_init below) */
    else if (mr_cuda_device_count(NULL) > 0 && cuda_floors(&fl, device, wt, floor_mib, floor_gemm) != 0)
        return 1;
#else
    (void)floor_mib, (void)floor_gemm;
#endif
    ri.fl = &fl;
    mr_backend be;
    memset(&be, 0, sizeof be);
    int brc = backend_init(&be, bk, device, threads, ri.device, sizeof ri.device);
    if (brc) return brc;

    mr_model_options mo = {.max_slots = nslots, .max_ctx = max_ctx,
                           .max_step_tokens = step_tokens, .synthetic = synthetic, .seed = 1, .weights = wt,
                           .deterministic = det};
    mr_model *m = NULL;
    int rc = 1;
    int32_t *tok = NULL, *slot = NULL, *pos = NULL, *rows = NULL;
    float *logits = NULL;
    FILE *jf = NULL;
    double t_load = now_s();
    if (mr_model_load(&m, model_dir, &mo, &be) != MR_OK) {
        fprintf(stderr, "bench-engine: %s\n", mr_last_error());
        goto out;
    }
    be.ops->sync(&be);
    t_load = now_s() - t_load;
    const mr_model_config *cfg = mr_model_get_config(m);
    double body = body_params(cfg), lm_head = (double)cfg->vocab * cfg->hidden;
    printf("# bench-engine: %s (%s), %.0fM parameters (%.0fM active per token), %s weights %.2f GB\n", model_dir,
           cfg->model_type, mr_config_param_count(cfg) / 1e6, (body + lm_head) / 1e6, weight_names[wt],
           (double)mr_model_weight_bytes(m) / 1e9);
    printf("# backend %s: %s; load %.1f s%s\n", backend_names[bk], ri.device, t_load,
           det ? "; deterministic mode (fixed-order products)" : "");
    /* bf16 asked but 4 bytes a parameter held: the model stored fp32 */
    double bpp = (double)mr_model_weight_bytes(m) / mr_config_param_count(cfg);
    if (wt == MR_WEIGHTS_BF16 && bpp > 3.0)
        printf("# NOTE: --weights bf16 but the model holds %.2f bytes per parameter: bf16 storage is not in "
               "effect in this build's model\n", bpp);
    ri.bytes_per_param = bpp;
    printf("# floors (same run): %s %.1f GB/s; %s %.1f GFLOP/s", fl.mem_name, fl.mem_gbs, fl.gemm_name,
           fl.gemm_gflops);
    if (bk == BACKEND_CUDA)
        printf("; for reference memcpy D2D (read+write) %.1f GB/s, %s %.1f GFLOP/s", fl.other_mem_gbs,
               fl.other_gemm_name, fl.other_gemm_gflops);
    printf("\n# floor = max(bytes read / bandwidth, FLOPs / GEMM rate); x_floor = time / floor\n");
    printf("%-10s %6s %8s %12s %10s %10s %9s %10s %5s %8s\n", "phase", "batch", "tokens", "time_ms", "tok/s",
           "TFLOP/s", "GB/s", "floor_ms", "bound", "x_floor");

    tok = malloc(sizeof(int32_t) * (size_t)step_tokens);
    slot = malloc(sizeof(int32_t) * (size_t)step_tokens);
    pos = malloc(sizeof(int32_t) * (size_t)step_tokens);
    rows = malloc(sizeof(int32_t) * (size_t)step_tokens);
    logits = malloc(sizeof(float) * (size_t)(maxb > pbatch ? maxb : pbatch) * (size_t)cfg->vocab);
    if (!tok || !slot || !pos || !rows || !logits) {
        fprintf(stderr, "bench-engine: out of host memory for the batch buffers\n");
        goto out;
    }
    jf = bench_json_open(json_path);
    int first = 1;

    /* Prefill: group g puts pbatch sequences of `prompt` tokens into slots
     * g*pbatch.., logits of their last rows.  Group 0 twice: warm-up. */
    double t_sum = 0, t_best = 1e30;
    for (int g = -1; g < ngroups; g++) {
        int g0 = g < 0 ? 0 : g;
        for (int t = 0; t < prefill_tokens; t++) {
            tok[t] = (int32_t)(((size_t)t * 7919 + (size_t)g0 * 104729) % (size_t)cfg->vocab);
            slot[t] = g0 * pbatch + t / prompt;
            pos[t] = t % prompt;
        }
        for (int i = 0; i < pbatch; i++) rows[i] = (i + 1) * prompt - 1;
        mr_batch b = {.ntok = prefill_tokens, .tokens = tok, .slot = slot, .pos = pos, .n_out = pbatch,
                      .out_rows = rows};
        be.ops->sync(&be);
        double t0 = now_s();
        if (forward(m, &b, logits)) goto out;
        be.ops->sync(&be);
        double t = now_s() - t0;
        if (g < 0) continue;
        t_sum += t;
        if (t < t_best) t_best = t;
    }
    {
        double tp = t_sum / ngroups;
        row_cost pc = {.flops = 2.0 * body * prefill_tokens + 2.0 * lm_head * pbatch,
                       .weight_bytes = step_weight_bytes(m)};
        for (int p = 0; p < prompt; p++) pc.flops += pbatch * attn_flops(cfg, p);
        const char *bound;
        double floor_ms = row_floor_ms(&fl, &pc, &bound);
        printf("%-10s %6d %8d %12.2f %10.1f %10.3f %9s %10.2f %5s %8.2f\n", "prefill", pbatch, prefill_tokens,
               tp * 1e3, prefill_tokens / tp, pc.flops / tp / 1e12, "-", floor_ms, bound, tp * 1e3 / floor_ms);
        if (jf) {
            json_row_begin(jf, &first, &ri, "prefill", pbatch);
            fprintf(jf, ", \"prompt\": %d, \"tokens\": %d, \"samples\": %d, \"seconds\": %.6f, \"best_seconds\": %.6f, "
                        "\"tokens_per_s\": %.2f, \"flops\": %.4e, \"gflops\": %.2f, \"floor_ms\": %.4f, "
                        "\"floor_bound\": \"%s\", \"ratio\": %.3f}",
                    prompt, prefill_tokens, ngroups, tp, t_best, prefill_tokens / tp, pc.flops, pc.flops / tp / 1e9,
                    floor_ms, bound, tp * 1e3 / floor_ms);
        }
    }

    double floor_b1_weights_ms = 0;
    for (int k = 0; k < nb; k++) {
        int B = bs[k];
        double t0 = 0;
        row_cost dc = {0};
        for (int s = 0; s < steps + 1; s++) { /* step 0 is warm-up */
            for (int i = 0; i < B; i++) {
                tok[i] = (i * 31 + s * 17) % cfg->vocab;
                slot[i] = i;
                pos[i] = prompt + s; /* attention over a prompt-long cache */
                rows[i] = i;
            }
            mr_batch d = {.ntok = B, .tokens = tok, .slot = slot, .pos = pos, .n_out = B, .out_rows = rows};
            if (s == 1) {
                be.ops->sync(&be);
                t0 = now_s();
            }
            if (forward(m, &d, logits)) goto out;
            if (s >= 1) {
                dc.flops += B * (2.0 * (body + lm_head) + attn_flops(cfg, prompt + s));
                dc.kv_bytes += B * kv_read_bytes(cfg, prompt + s);
            }
        }
        be.ops->sync(&be);
        double td = (now_s() - t0) / steps;
        dc.flops /= steps;
        dc.kv_bytes /= steps;
        /* weights streamed per step: what the last step touched (MoE: the chosen experts) */
        dc.weight_bytes = step_weight_bytes(m);
        const char *bound;
        double floor_ms = row_floor_ms(&fl, &dc, &bound);
        double gbs = (dc.weight_bytes + dc.kv_bytes) / td / 1e9;
        if (B == 1) floor_b1_weights_ms = dc.weight_bytes / (fl.mem_gbs * 1e9) * 1e3;
        printf("%-10s %6d %8d %12.3f %10.1f %10.3f %9.1f %10.3f %5s %8.2f\n", "decode", B, B, td * 1e3, B / td,
               dc.flops / td / 1e12, gbs, floor_ms, bound, td * 1e3 / floor_ms);
        if (jf) {
            json_row_begin(jf, &first, &ri, "decode", B);
            fprintf(jf, ", \"context\": %d, \"steps\": %d, \"step_ms\": %.4f, \"tokens_per_s\": %.2f, \"flops\": %.4e, "
                        "\"gflops\": %.2f, \"weight_bytes\": %.0f, \"kv_bytes\": %.0f, \"weight_gbs\": %.2f, "
                        "\"read_gbs\": %.2f, \"floor_ms\": %.4f, \"floor_bound\": \"%s\", "
                        "\"floor_weights_ms\": %.4f, \"ratio\": %.3f}",
                    prompt, steps, td * 1e3, B / td, dc.flops, dc.flops / td / 1e9, dc.weight_bytes, dc.kv_bytes,
                    dc.weight_bytes / td / 1e9, gbs, floor_ms, bound, dc.weight_bytes / (fl.mem_gbs * 1e9) * 1e3,
                    td * 1e3 / floor_ms);
        }
    }
    for (int k = 0; k < nb && generate > 0; k++) {
        int B = bs[k];
        mr_engine_stats st;
        double tps = bench_generate(m, B, prompt, generate, step_tokens, &st);
        be.ops->sync(&be);
        if (tps == 0) goto out;
        printf("%-10s %6d %8llu %12.1f %10.1f %10s %9s %10s %5s %8s\n", "generate", B,
               (unsigned long long)st.generated_tokens, st.seconds * 1e3, tps, "-", "-", "-", "-", "-");
        if (jf) {
            json_row_begin(jf, &first, &ri, "generate", B);
            fprintf(jf, ", \"prompt\": %d, \"new_tokens\": %d, \"generated\": %llu, \"engine_steps\": %llu, "
                        "\"seconds\": %.4f, \"tokens_per_s\": %.2f}",
                    prompt, generate, (unsigned long long)st.generated_tokens, (unsigned long long)st.steps,
                    st.seconds, tps);
        }
    }
    const char *err = backend_error(&be, bk);
    if (err) {
        fprintf(stderr, "bench-engine: backend error during the run: %s\n", err);
        goto out;
    }
    if (floor_b1_weights_ms > 0)
        printf("# weights alone at batch 1: %.3f ms/step (weight bytes touched / %.1f GB/s)\n", floor_b1_weights_ms,
               fl.mem_gbs);
    rc = 0;
out:
    bench_json_close(jf);
    if (m) mr_model_free(m);
    backend_free(&be, bk);
    free(tok);
    free(slot);
    free(pos);
    free(rows);
    free(logits);
    return rc;
}
