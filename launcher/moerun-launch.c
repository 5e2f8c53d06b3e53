/* moerun-launch: read a plan, compute the process count, print the exact
 * mpirun command line and run it.
 *   moerun-launch PLAN.yaml [mpirun options] -- generate [generate options]
 * The moerun started is the one installed beside this program; the plan is
 * passed on with --plan.  --dry-run prints the command without running it.
 * Unless the mpirun options bind (--bind-to), it adds --bind-to none: each
 * rank then binds itself next to its GPU or to its share of the node
 * (plan key topology.bind), which mpirun's default binding would pre-empt. */
#define _GNU_SOURCE
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/plan.h"

static void usage(FILE *f) {
    fprintf(f, "usage: moerun-launch PLAN.yaml [--dry-run] [mpirun options] -- <moerun command> [options]\n"
               "  e.g. moerun-launch configs/dgx-h100.yaml --bind-to core -- generate --input in.jsonl --output out.jsonl\n"
               "Computes -np from the plan (data x pipeline x tensor), prints the mpirun line, runs it.\n"
               "Adds --bind-to none unless given --bind-to: moerun binds each rank itself (topology.bind).\n");
}

static void print_quoted(const char *s) {
    if (s[strcspn(s, " \t\"'$\\")] == 0) { fputs(s, stdout); return; }
    putchar('\'');
    for (; *s; s++) *s == '\'' ? fputs("'\\''", stdout) : putchar(*s);
    putchar('\'');
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    mr_plan plan;
    if (mr_plan_load(&plan, argv[1]) != MR_OK || mr_plan_check(&plan, NULL, 0) != MR_OK) {
        fprintf(stderr, "moerun-launch: %s\n", mr_last_error());
        return 2;
    }
    int sep = -1, dry = 0;
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--")) { sep = i; break; }
    if (sep < 0 || sep + 1 >= argc) {
        fprintf(stderr, "moerun-launch: put the moerun command after '--'\n");
        usage(stderr);
        return 2;
    }
    char self[PATH_MAX], moerun[PATH_MAX + 16], np[16];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) { fprintf(stderr, "moerun-launch: cannot find where it is installed\n"); return 1; }
    self[n] = 0;
    char *slash = strrchr(self, '/');
    *slash = 0;
    snprintf(moerun, sizeof moerun, "%s/moerun", self);
    snprintf(np, sizeof np, "%d", mr_plan_world(&plan));
    char **args = calloc((size_t)argc + 8, sizeof(char *));
    int k = 0;
    args[k++] = "mpirun";
    args[k++] = "-np";
    args[k++] = np;
    int binds = 0;
    for (int i = 2; i < sep; i++) {
        if (!strcmp(argv[i], "--dry-run")) { dry = 1; continue; }
        if (!strcmp(argv[i], "--bind-to") || !strcmp(argv[i], "-bind-to")) binds = 1;
        args[k++] = argv[i];
    }
    if (!binds) {
        args[k++] = "--bind-to";
        args[k++] = "none";
    }
    args[k++] = moerun;
    args[k++] = argv[sep + 1];
    args[k++] = "--plan";
    args[k++] = argv[1];
    for (int i = sep + 2; i < argc; i++) args[k++] = argv[i];
    for (int i = 0; i < k; i++) {
        if (i) putchar(' ');
        print_quoted(args[i]);
    }
    putchar('\n');
    fflush(stdout);
    if (dry) return 0;
    execvp("mpirun", args);
    perror("moerun-launch: mpirun");
    return 1;
}
