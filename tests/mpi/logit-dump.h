/* Reading the logit dumps of MR_DUMP_LOGITS (records of id hash u64,
 * position i32, vocab float32s; one logits-r<rank>.bin per last-stage
 * rank): every record of every logits-* file in a folder.  Shared by
 * compare-logits.c and tests/compression/agreement.c. */
#ifndef MR_LOGIT_DUMP_H
#define MR_LOGIT_DUMP_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct row {
    uint64_t id;
    int32_t pos;
    int token; /* left for the caller */
    float *v;
} row;

/* Appends the records of `dir` to *rows (realloc'ed); returns the count.
 * Exits with status 2 when the folder cannot be read. */
static inline int load_dump(const char *dir, int V, row **rows) {
    DIR *d = opendir(dir);
    if (!d) {
        perror(dir);
        exit(2);
    }
    struct dirent *de;
    int n = 0, cap = 0;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, "logits-", 7)) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        FILE *f = fopen(path, "rb");
        if (!f) {
            perror(path);
            exit(2);
        }
        for (;;) {
            row r = {0};
            r.v = malloc(sizeof(float) * (size_t)V);
            if (fread(&r.id, 8, 1, f) != 1 || fread(&r.pos, 4, 1, f) != 1 ||
                fread(r.v, 4, (size_t)V, f) != (size_t)V) {
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

#endif
