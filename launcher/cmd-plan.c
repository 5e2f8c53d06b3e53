/* moerun plan check: read a plan, the model's config.json only, check the
 * plan against both and the world size, and show the resolved plan and what
 * every rank will hold.  No weight is read, no device touched, no MPI. */
#define _GNU_SOURCE
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launcher/commands.h"
#include "runtime/plan.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: moerun plan check PLAN.yaml [--world N] [--model PATH] [--set KEY=VALUE]... [-h]\n"
            "\n"
            "Checks a plan against the world size and the model's config.json (no weights are read),\n"
            "then prints the resolved plan and one line per rank: its data, pipeline and tensor\n"
            "coordinates, the layers of its stage, its expert group and the bytes of weights it holds.\n"
            "\n"
            "  --world N          ranks the job will run on (default: data x pipeline x tensor of the plan)\n"
            "  --model PATH       Hugging Face checkpoint folder; overrides `model:` of the plan\n"
            "  --set KEY=VALUE    override one plan key by its dotted name, e.g. --set parallel.tensor=2\n"
            "  -h, --help         this text\n"
            "\n"
            "Without a model (none in the plan, none given) only the layout is checked.\n"
            "runtime.device (auto | cpu | cuda, or MR_DEVICE in the environment) is printed as set:\n"
            "whether a GPU is there is checked by `moerun generate` on the ranks, not here.\n"
            "Exit status: 0 the plan fits, 2 it does not (the message says why and what would fit),\n"
            "1 internal failure.\n");
}

enum { OPT_WORLD = 256, OPT_MODEL, OPT_SET };

static int check(int argc, char **argv) {
    static const struct option longopts[] = {
        {"world", required_argument, 0, OPT_WORLD},
        {"model", required_argument, 0, OPT_MODEL},
        {"set", required_argument, 0, OPT_SET},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *model = NULL, *sets[64];
    int n_sets = 0, world = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_WORLD: {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (!*optarg || *end || v < 1 || v > 1 << 24) {
                fprintf(stderr, "moerun plan check: --world needs a number of ranks >= 1 (got '%s')\n", optarg);
                return 2;
            }
            world = (int)v;
            break;
        }
        case OPT_MODEL: model = optarg; break;
        case OPT_SET:
            if (n_sets == 64 || !strchr(optarg, '=')) {
                fprintf(stderr, "moerun plan check: --set takes KEY=VALUE (got '%s')\n", optarg);
                return 2;
            }
            sets[n_sets++] = optarg;
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "moerun plan check: give exactly one plan file (see --help)\n");
        return 2;
    }
    const char *path = argv[optind];

    mr_plan *plan = malloc(sizeof *plan);
    if (!plan) return 1;
    mr_model_config cfg;
    int have_cfg = 0;
    mr_status st = mr_plan_load(plan, path);
    if (st == MR_OK) st = mr_plan_env(plan);
    if (st == MR_OK && model) st = mr_plan_set(plan, "model", model);
    for (int i = 0; i < n_sets && st == MR_OK; i++) {
        char key[128];
        size_t kl = (size_t)(strchr(sets[i], '=') - sets[i]);
        snprintf(key, sizeof key, "%.*s", (int)kl, sets[i]);
        st = mr_plan_set(plan, key, sets[i] + kl + 1);
    }
    if (st == MR_OK && plan->model[0]) {
        st = mr_plan_load_model_config(&cfg, plan->model);
        have_cfg = st == MR_OK;
        char where[MR_PLAN_PATH_MAX + 64];
        if (st != MR_OK) mr_error_context(st, "%s", mr_plan_where(plan, MR_PLAN_KEY_MODEL, where, sizeof where));
    }
    if (st == MR_OK) st = mr_plan_check(plan, have_cfg ? &cfg : NULL, world);
    if (st != MR_OK) {
        fprintf(stderr, "moerun plan check: %s\n", mr_last_error());
        if (have_cfg) mr_config_free(&cfg);
        free(plan);
        return mr_status_exit_code(st);
    }

    int w = mr_plan_world(plan);
    printf("plan %s fits: %d rank%s = data %d x pipeline %d x tensor %d", path, w, w == 1 ? "" : "s",
           plan->parallel.data, plan->parallel.pipeline, plan->parallel.tensor);
    if (plan->parallel.expert > 1) printf(", expert groups of %d", plan->parallel.expert);
    printf("\n");
    if (have_cfg) {
        char b[32];
        mr_plan one;
        mr_plan_init(&one);
        mr_plan_bytes whole;
        mr_plan_rank_bytes(&one, &cfg, 0, &whole);
        printf("model %s: %s, %d layers, %d heads / %d KV heads%s, vocab %d", plan->model, cfg.model_type,
               cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, mr_config_is_mla(&cfg) ? " (MLA)" : "", cfg.vocab);
        if (cfg.n_experts) printf(", %d routed experts (top %d)", cfg.n_experts, cfg.top_k);
        printf(", %.1fM parameters, %s in fp32\n", mr_config_param_count(&cfg) / 1e6,
               mr_plan_format_bytes(whole.total, b, sizeof b));
    } else {
        printf("no model given: heads, layers and experts not checked (use --model PATH)\n");
    }
    printf("\n# resolved plan\n");
    mr_plan_print(plan, have_cfg ? cfg.n_layers : 0, stdout);
    printf("\n");
    mr_plan_print_ranks(plan, have_cfg ? &cfg : NULL, stdout);
    if (have_cfg) mr_config_free(&cfg);
    free(plan);
    return 0;
}

int mr_cmd_plan(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "check")) return check(argc - 1, argv + 1);
    fprintf(stderr, "moerun plan: unknown verb '%s' (the verb is `check`)\n\n", argv[1]);
    usage(stderr);
    return 2;
}
