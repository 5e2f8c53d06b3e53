/* moerun: distributed LLM inference.  Dispatches to the subcommands. */
#include <stdio.h>
#include <string.h>

#include "kernels/backend.h"
#include "launcher/commands.h"

static void usage(FILE *f) {
    fprintf(f,
            "moerun %s: offline large-batch LLM generation\n"
            "\n"
            "usage: moerun <command> [options]\n"
            "\n"
            "commands:\n"
            "  generate   run a JSONL file of requests through a model, write a JSONL of results\n"
            "  plan       check a plan YAML against the world size and the model, show each rank's share\n"
            "  topo       what each rank sees (cores, NUMA, GPUs, NICs) and where it sits\n"
            "  version    print the version\n"
            "  help       this text\n"
            "\n"
            "Run `moerun <command> --help` for a command's options.\n",
            MR_VERSION);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "generate")) {
        mr_cpu_blas_core_check(argv, 0); /* a warning when OpenBLAS took generic kernels */
        return mr_cmd_generate(argc - 1, argv + 1);
    }
    if (!strcmp(cmd, "plan")) return mr_cmd_plan(argc - 1, argv + 1);
    if (!strcmp(cmd, "topo")) return mr_cmd_topo(argc - 1, argv + 1);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("moerun %s\n", MR_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "moerun: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
