/* Token agreement of a compressed-all-reduce run with an exact one, from
 * the logits each sampled greedily from (MR_DUMP_LOGITS dumps: records of
 * id hash, position, vocab floats).
 *
 * Per request, positions in order: a position agrees when both runs chose
 * the same token (argmax, lowest index on ties, as the greedy sampler).
 * Once a request's tokens differ its later logits see different contexts,
 * so mean |delta logit| is taken over the positions up to and including the
 * first difference only (same context).
 *
 * With --forced the other run was teacher-forced (MR_TEACHER_TOKENS, the
 * file `agreement teacher` writes from the exact run): it continued with
 * the exact run's tokens whatever it chose, so every position shares the
 * context and counts for both measures: per-token (top-1) agreement.
 *
 * usage: agreement score [--forced] VOCAB MIN_AGREEMENT DIR_EXACT DIR_OTHER
 *        agreement teacher VOCAB DIR_EXACT FILE
 * score prints "agreement A/B = P%  mean |dlogit| M (R rows of shared
 * context)  max |dlogit| X  requests diverged: K of N" and exits 1 when the
 * agreement is below MIN_AGREEMENT (a fraction; 0 only reports). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../mpi/logit-dump.h"

static int argmax(const float *v, int V) {
    int best = 0;
    for (int i = 1; i < V; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

static int load(const char *dir, int V, row **rows) {
    int n = load_dump(dir, V, rows);
    for (int i = 0; i < n; i++) (*rows)[i].token = argmax((*rows)[i].v, V);
    return n;
}

static int by_id_pos(const void *a, const void *b) {
    const row *x = a, *y = b;
    if (x->id != y->id) return x->id < y->id ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

static int usage(const char *me) {
    fprintf(stderr,
            "usage: %s score [--forced] VOCAB MIN_AGREEMENT DIR_EXACT DIR_OTHER\n"
            "       %s teacher VOCAB DIR_EXACT FILE\n",
            me, me);
    return 2;
}

/* (id hash, position, greedy token) of every row of the exact run */
static int write_teacher(int V, const char *dir, const char *path) {
    row *a = NULL;
    int na = load(dir, V, &a);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        return 2;
    }
    for (int i = 0; i < na; i++) {
        int32_t t = a[i].token;
        fwrite(&a[i].id, 8, 1, f);
        fwrite(&a[i].pos, 4, 1, f);
        fwrite(&t, 4, 1, f);
    }
    fclose(f);
    printf("%d teacher tokens written to %s\n", na, path);
    return na > 0 ? 0 : 2;
}

int main(int argc, char **argv) {
    if (argc < 2) return usage(argv[0]);
    if (argc == 5 && !strcmp(argv[1], "teacher")) return write_teacher(atoi(argv[2]), argv[3], argv[4]);
    int forced = argc == 7 && !strcmp(argv[2], "--forced");
    if (strcmp(argv[1], "score") || argc != 6 + forced) return usage(argv[0]);
    argv += 1 + forced;
    int V = atoi(argv[1]);
    double min_agree = atof(argv[2]);
    row *a = NULL, *b = NULL;
    int na = load(argv[3], V, &a), nb = load(argv[4], V, &b);
    if (na == 0) {
        fprintf(stderr, "no logit rows in %s\n", argv[3]);
        return 2;
    }
    qsort(a, (size_t)na, sizeof *a, by_id_pos);
    qsort(b, (size_t)nb, sizeof *b, by_id_pos);
    long agree = 0, total = 0, shared = 0;
    int requests = 0, diverged = 0;
    double sum_d = 0, max_d = 0;
    uint64_t cur = 0;
    int cur_diverged = 0, j = 0;
    for (int i = 0; i < na; i++) {
        if (i == 0 || a[i].id != cur) {
            cur = a[i].id;
            cur_diverged = 0;
            requests++;
        }
        while (j < nb && by_id_pos(&b[j], &a[i]) < 0) j++;
        total++;
        if (j >= nb || b[j].id != a[i].id || b[j].pos != a[i].pos) { /* the other run ended sooner */
            if (!cur_diverged) diverged++;
            cur_diverged = 1;
            continue;
        }
        if (!cur_diverged) {
            double s = 0;
            for (int v = 0; v < V; v++) {
                double d = fabs((double)a[i].v[v] - b[j].v[v]);
                s += d;
                if (d > max_d) max_d = d;
            }
            sum_d += s / V;
            shared++;
        }
        if (a[i].token == b[j].token) agree++;
        else if (!cur_diverged && !forced) {
            cur_diverged = 1;
            diverged++;
        }
    }
    double frac = (double)agree / (double)total;
    printf("agreement %ld/%ld = %.2f%%  mean |dlogit| %.3g (%ld rows of shared context)  max |dlogit| %.3g  "
           "requests diverged: %d of %d\n",
           agree, total, 100 * frac, shared ? sum_d / (double)shared : 0.0, shared, max_d, diverged, requests);
    if (frac < min_agree) {
        printf("FAIL: agreement below %.2f%%\n", 100 * min_agree);
        return 1;
    }
    return 0;
}
