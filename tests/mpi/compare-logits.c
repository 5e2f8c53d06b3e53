/* Compares the logits two runs sampled from (MR_DUMP_LOGITS dumps: records
 * of id hash, position, vocab floats), matching rows by (id, position):
 * every row of A must be in B with max |a - b| / max |a| <= TOL.
 * usage: compare-logits VOCAB TOL DIR_A DIR_B */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct row {
    uint64_t id;
    int32_t pos;
    float *v;
} row;

static int load(const char *dir, int V, row **rows) {
    DIR *d = opendir(dir);
    if (!d) { perror(dir); exit(2); }
    struct dirent *de;
    int n = 0, cap = 0;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, "logits-", 7)) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        FILE *f = fopen(path, "rb");
        for (;;) {
            row r;
            r.v = malloc(sizeof(float) * (size_t)V);
            if (fread(&r.id, 8, 1, f) != 1 || fread(&r.pos, 4, 1, f) != 1 || fread(r.v, 4, (size_t)V, f) != (size_t)V) {
                free(r.v);
                break;
            }
            if (n == cap) *rows = realloc(*rows, sizeof(row) * (size_t)(cap = cap ? 2 * cap : 256));
            (*rows)[n++] = r;
        }
        fclose(f);
    }
    closedir(d);
    return n;
}

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: %s VOCAB TOL DIR_A DIR_B\n", argv[0]); return 2; }
    int V = atoi(argv[1]);
    double tol = atof(argv[2]), worst = 0;
    row *a = NULL, *b = NULL;
    int na = load(argv[3], V, &a), nb = load(argv[4], V, &b), bad = 0;
    for (int i = 0; i < na; i++) {
        int k = -1;
        for (int j = 0; j < nb && k < 0; j++)
            if (b[j].id == a[i].id && b[j].pos == a[i].pos) k = j;
        if (k < 0) { bad++; fprintf(stderr, "row (id %llx, pos %d) missing\n", (unsigned long long)a[i].id, a[i].pos); continue; }
        double md = 0, mx = 0;
        for (int v = 0; v < V; v++) {
            double dd = fabs((double)a[i].v[v] - b[k].v[v]);
            if (dd > md || isnan(dd)) md = isnan(dd) ? INFINITY : dd;
            if (fabs(a[i].v[v]) > mx) mx = fabs(a[i].v[v]);
        }
        double rel = md / (mx > 0 ? mx : 1);
        if (rel > worst) worst = rel;
        if (!(rel <= tol)) bad++;
    }
    printf("%d rows compared (%d in B), max rel logit difference %.2e (tol %.0e)\n", na, nb, worst, tol);
    if (na == 0 || na != nb) bad++;
    return bad ? 1 : 0;
}
