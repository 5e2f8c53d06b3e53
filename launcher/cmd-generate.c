/* moerun generate: read requests, run them with continuous batching, write
 * one result line per input line in input order. */
#define _GNU_SOURCE
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launcher/commands.h"
#include "runtime/engine.h"
#include "runtime/model.h"
#include "runtime/requests.h"
#include "topology/topology.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: moerun generate --model PATH --input IN.jsonl --output OUT.jsonl [options]\n"
            "\n"
            "Runs every request of IN.jsonl and writes one JSON line per input line to OUT.jsonl,\n"
            "in input order.  Input lines: {\"id\": ..., \"tokens\": [ids], \"max_tokens\": N,\n"
            "\"temperature\": T, \"top_p\": P, \"top_k\": K, \"seed\": S, \"stop_token_ids\": [...],\n"
            "\"ignore_eos\": bool}; only \"tokens\" is required.  A bad line gets an error record\n"
            "naming its line number and the job goes on.\n"
            "\n"
            "model:\n"
            "  --model PATH           Hugging Face checkpoint folder (config.json + *.safetensors)\n"
            "  --synthetic-weights    random weights from config.json alone (benchmarks)\n"
            "  --weights-seed N       seed of the synthetic weights (default 1)\n"
            "batching:\n"
            "  --max-batch N          sequences decoded together (default 32)\n"
            "  --token-budget N       tokens per forward step, prefill chunks included (default 512)\n"
            "  --max-context N        positions per sequence (default: the model's, at most 4096)\n"
            "  --threads N            CPU threads (default: the cores this process is bound to)\n"
            "request defaults (a request's own fields win):\n"
            "  --max-tokens N         tokens to generate (default 128)\n"
            "  --temperature T        0 = greedy (default 0)\n"
            "  --top-p P              nucleus sampling (default 1 = off)\n"
            "  --top-k K              (default 0 = off)\n"
            "  --seed S               sampling seed (default 0)\n"
            "  --ignore-eos           do not stop at the model's EOS tokens\n"
            "output:\n"
            "  --output PATH          results (required); refused if it exists, unless --overwrite\n"
            "  --overwrite            replace an existing output file\n"
            "  --quiet                no progress or summary on stderr\n"
            "  -h, --help             this text\n"
            "\n"
            "Exit status: 0 success (also when some lines got error records), 2 bad input or options,\n"
            "1 internal failure.\n");
}

typedef struct gen_ctx {
    mr_output *out;
    int total, done, quiet;
} gen_ctx;

static mr_status on_done(void *user, mr_request *r) {
    gen_ctx *g = user;
    g->done++;
    if (r->finish == MR_FINISH_ERROR)
        MR_WARN("line %d: %s", r->line, r->error ? r->error : "error");
    return mr_output_put(g->out, r);
}

static int parse_int(const char *opt, const char *s, int lo, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == 0 || *end || v < lo || v > 1 << 30) {
        fprintf(stderr, "moerun generate: %s needs an integer >= %d (got '%s')\n", opt, lo, s);
        return 0;
    }
    *out = (int)v;
    return 1;
}

static int parse_float(const char *opt, const char *s, float lo, float hi, float *out) {
    char *end;
    float v = strtof(s, &end);
    if (*s == 0 || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "moerun generate: %s needs a number in [%g, %g] (got '%s')\n", opt, lo, hi, s);
        return 0;
    }
    *out = v;
    return 1;
}

enum {
    OPT_MODEL = 256, OPT_INPUT, OPT_OUTPUT, OPT_SYNTH, OPT_WSEED, OPT_BATCH, OPT_BUDGET, OPT_CTX, OPT_THREADS,
    OPT_MAXTOK, OPT_TEMP, OPT_TOPP, OPT_TOPK, OPT_SEED, OPT_IGNORE_EOS, OPT_OVERWRITE, OPT_QUIET,
};

int mr_cmd_generate(int argc, char **argv) {
    static const struct option longopts[] = {
        {"model", required_argument, 0, OPT_MODEL},       {"input", required_argument, 0, OPT_INPUT},
        {"output", required_argument, 0, OPT_OUTPUT},     {"synthetic-weights", no_argument, 0, OPT_SYNTH},
        {"weights-seed", required_argument, 0, OPT_WSEED},{"max-batch", required_argument, 0, OPT_BATCH},
        {"token-budget", required_argument, 0, OPT_BUDGET},{"max-context", required_argument, 0, OPT_CTX},
        {"threads", required_argument, 0, OPT_THREADS},   {"max-tokens", required_argument, 0, OPT_MAXTOK},
        {"temperature", required_argument, 0, OPT_TEMP},  {"top-p", required_argument, 0, OPT_TOPP},
        {"top-k", required_argument, 0, OPT_TOPK},        {"seed", required_argument, 0, OPT_SEED},
        {"ignore-eos", no_argument, 0, OPT_IGNORE_EOS},   {"overwrite", no_argument, 0, OPT_OVERWRITE},
        {"quiet", no_argument, 0, OPT_QUIET},             {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *model_path = NULL, *in_path = NULL, *out_path = NULL;
    mr_model_options mo = {.max_slots = 32, .max_step_tokens = 512, .seed = 1};
    int threads = 0, overwrite = 0, quiet = 0, wseed = 1;
    mr_request_defaults d = {.max_tokens = 128, .sample = {.temperature = 0, .top_p = 1, .top_k = 0, .seed = 0}};
    int c, seed = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int ok = 1;
        switch (c) {
        case OPT_MODEL: model_path = optarg; break;
        case OPT_INPUT: in_path = optarg; break;
        case OPT_OUTPUT: out_path = optarg; break;
        case OPT_SYNTH: mo.synthetic = 1; break;
        case OPT_WSEED: ok = parse_int("--weights-seed", optarg, 0, &wseed); break;
        case OPT_BATCH: ok = parse_int("--max-batch", optarg, 1, &mo.max_slots); break;
        case OPT_BUDGET: ok = parse_int("--token-budget", optarg, 1, &mo.max_step_tokens); break;
        case OPT_CTX: ok = parse_int("--max-context", optarg, 2, &mo.max_ctx); break;
        case OPT_THREADS: ok = parse_int("--threads", optarg, 1, &threads); break;
        case OPT_MAXTOK: ok = parse_int("--max-tokens", optarg, 1, &d.max_tokens); break;
        case OPT_TEMP: ok = parse_float("--temperature", optarg, 0, 100, &d.sample.temperature); break;
        case OPT_TOPP: ok = parse_float("--top-p", optarg, 1e-6f, 1, &d.sample.top_p); break;
        case OPT_TOPK: ok = parse_int("--top-k", optarg, 0, &d.sample.top_k); break;
        case OPT_SEED: ok = parse_int("--seed", optarg, 0, &seed); break;
        case OPT_IGNORE_EOS: d.ignore_eos = 1; break;
        case OPT_OVERWRITE: overwrite = 1; break;
        case OPT_QUIET: quiet = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (!ok) return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "moerun generate: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!model_path || !in_path || !out_path) {
        fprintf(stderr, "moerun generate: --model, --input and --output are required (see --help)\n");
        return 2;
    }
    mo.seed = (uint64_t)wseed;
    d.sample.seed = (uint64_t)seed;
    if (mo.max_step_tokens < mo.max_slots) mo.max_step_tokens = mo.max_slots;
    if (threads == 0) {
        mr_local_cpus lc;
        threads = mr_topo_local_cpus(&lc) == MR_OK ? lc.cores : 1;
    }

    mr_status st = MR_OK;
    mr_backend be = {0};
    mr_model *m = NULL;
    mr_request *reqs = NULL;
    int n = 0;
    mr_output *out = NULL;
    if (mr_backend_cpu_init(&be, threads) != 0) {
        fprintf(stderr, "moerun generate: cannot start the CPU backend\n");
        return 1;
    }
    /* Read every input line first: the whole job is checked before weights load. */
    MR_CHECK_GOTO(mr_requests_read(in_path, &d, &reqs, &n), st, fail);
    MR_CHECK_GOTO(mr_model_load(&m, model_path, &mo, &be), st, fail);
    const mr_model_config *cfg = mr_model_get_config(m);
    if (!quiet)
        MR_INFO("model %s (%s, %d layers, hidden %d, %.1fM parameters%s), %d requests, batch %d, budget %d, "
                "%d threads",
                model_path, cfg->model_type, cfg->n_layers, cfg->hidden, mr_config_param_count(cfg) / 1e6,
                mo.synthetic ? ", synthetic weights" : "", n, mo.max_slots, mo.max_step_tokens, be.threads);
    MR_CHECK_GOTO(mr_output_open(&out, out_path, n, overwrite), st, fail);
    gen_ctx g = {.out = out, .total = n, .quiet = quiet};
    mr_engine_options eo = {.max_batch = mo.max_slots, .token_budget = mo.max_step_tokens};
    mr_engine_stats stats;
    MR_CHECK_GOTO(mr_engine_run(m, reqs, n, &eo, on_done, &g, &stats), st, fail);
    MR_CHECK_GOTO(mr_output_close(out), st, fail);
    out = NULL;
    if (!quiet)
        MR_INFO("done: %d requests, %llu prompt + %llu generated tokens in %.2f s (%.1f generated tokens/s, %llu "
                "steps)",
                n, (unsigned long long)stats.prompt_tokens, (unsigned long long)stats.generated_tokens,
                stats.seconds, stats.seconds > 0 ? (double)stats.generated_tokens / stats.seconds : 0.0,
                (unsigned long long)stats.steps);
    mr_model_free(m);
    mr_requests_free(reqs, n);
    mr_backend_cpu_free(&be);
    return 0;
fail:
    MR_ERRORF("%s", mr_last_error());
    mr_output_close(out);
    mr_model_free(m);
    mr_requests_free(reqs, n);
    mr_backend_cpu_free(&be);
    return mr_status_exit_code(st);
}
