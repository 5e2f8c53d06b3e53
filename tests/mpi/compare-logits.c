/* Compares the logits two runs sampled from (MR_DUMP_LOGITS dumps: records
 * of id hash, position, vocab floats), matching rows by (id, position):
 * every row of A must be in B with max |a - b| / max |a| <= TOL, or with
 * TOL "bits" the same bits.
 * usage: compare-logits VOCAB TOL|bits DIR_A DIR_B */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "logit-dump.h"

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: %s VOCAB TOL DIR_A DIR_B\n", argv[0]); return 2; }
    int V = atoi(argv[1]);
    int bits = strcmp(argv[2], "bits") == 0;
    double tol = bits ? 0 : atof(argv[2]), worst = 0;
    int differ = 0; /* rows whose bits differ */
    row *a = NULL, *b = NULL;
    int na = load_dump(argv[3], V, &a), nb = load_dump(argv[4], V, &b), bad = 0;
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
        if (memcmp(a[i].v, b[k].v, (size_t)V * sizeof(float))) differ++;
        if (bits && memcmp(a[i].v, b[k].v, (size_t)V * sizeof(float))) bad++;
        if (rel > worst) worst = rel;
        if (!(rel <= tol)) bad++;
    }
    if (bits)
        printf("%d rows compared (%d in B), %d differ in their bits (max rel logit difference %.2e)\n", na, nb,
               differ, worst);
    else
        printf("%d rows compared (%d in B), max rel logit difference %.2e (tol %.0e)\n", na, nb, worst, tol);
    if (na == 0 || na != nb) bad++;
    return bad ? 1 : 0;
}
