/* Shared by check-reference.c and check-gguf-fidelity.c: the logit error
 * measure, and the greedy-continuation check (prompts `which` through the
 * engine, greedy, EOS ignored, every generated token compared with
 * transformers'). */
#ifndef MR_REF_GREEDY_H
#define MR_REF_GREEDY_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "runtime/engine.h"
#include "runtime/model.h"

/* max |a - ref| / max |ref| over n values (NaN counts as infinite) */
static inline double rel_err(const float *a, const float *ref, size_t n) {
    double md = 0, mr = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - ref[i]);
        if (d > md || isnan(d)) md = isnan(d) ? INFINITY : d;
        if (fabs(ref[i]) > mr) mr = fabs(ref[i]);
    }
    return md / (mr > 0 ? mr : 1);
}

typedef struct ref_seqs {
    int32_t *const *prompt, *const *greedy; /* per prompt: ids, expected continuation */
    const int *plen, *glen;
} ref_seqs;

/* min_agree 1: every continuation identical.  Below 1 (bf16 weights,
 * where one activation rounded the other way near a bf16 tie can change a
 * later token): the tokens before each continuation's first difference,
 * summed over the prompts, must be at least min_agree of all tokens. */
static void ref_check_greedy(const ref_seqs *s, mr_model *m, const int *which, int nw, int max_batch, int budget,
                             const char *label, double min_agree) {
    mr_request *r = calloc((size_t)nw, sizeof *r);
    for (int k = 0; k < nw; k++) {
        int i = which[k];
        r[k].index = k;
        r[k].prompt = malloc(sizeof(int32_t) * (size_t)s->plen[i]);
        memcpy(r[k].prompt, s->prompt[i], sizeof(int32_t) * (size_t)s->plen[i]);
        r[k].n_prompt = s->plen[i];
        r[k].max_tokens = s->glen[i];
        r[k].ignore_eos = 1;
        r[k].sample.top_p = 1;
        r[k].id_hash = (uint64_t)i;
    }
    mr_engine_options eo = {.max_batch = max_batch, .token_budget = budget};
    mr_status st = mr_engine_run(m, r, nw, &eo, NULL, NULL, NULL);
    CHECK(st == MR_OK, "%s: engine failed: %s", label, mr_last_error());
    int agree = 0, total = 0;
    for (int k = 0; k < nw && st == MR_OK; k++) {
        int i = which[k], j = 0, n = r[k].n_out < s->glen[i] ? r[k].n_out : s->glen[i];
        while (j < n && r[k].out[j] == s->greedy[i][j]) j++;
        agree += j;
        total += s->glen[i];
        int same = j == s->glen[i] && r[k].n_out == s->glen[i];
        if (min_agree >= 1) CHECK(same, "%s: prompt %d greedy continuation differs from transformers", label, i);
        if (!same) {
            fprintf(stderr, "  %s: prompt %d differs from token %d\n   got:", label, i, j);
            for (int t = 0; t < r[k].n_out; t++) fprintf(stderr, " %d", r[k].out[t]);
            fprintf(stderr, "\n  want:");
            for (int t = 0; t < s->glen[i]; t++) fprintf(stderr, " %d", s->greedy[i][t]);
            fprintf(stderr, "\n");
        }
    }
    if (min_agree < 1 && st == MR_OK) {
        printf("  %s: %d of %d tokens before the first difference\n", label, agree, total);
        CHECK(agree >= min_agree * total, "%s: only %d of %d greedy tokens agree with transformers (< %.0f%%)", label,
              agree, total, 100 * min_agree);
    }
    for (int k = 0; k < nw; k++) mr_request_clear(&r[k]);
    free(r);
}

#endif
