/* Token sampling: greedy, temperature, top-k and top-p.
 *
 * The random draw for a token depends only on (seed, request id, position),
 * so a request's output does not change with the batch it runs in. */
#ifndef MR_SAMPLER_H
#define MR_SAMPLER_H

#include <stdint.h>

typedef struct mr_sample_params {
    float temperature; /* 0: greedy */
    float top_p;       /* 1: off */
    int top_k;         /* 0: off */
    uint64_t seed;
} mr_sample_params;

typedef struct mr_sampler mr_sampler;

/* Scratch sized for `vocab` entries, made once. */
mr_sampler *mr_sampler_create(int vocab);
void mr_sampler_destroy(mr_sampler *s);

/* The uniform draw in [0, 1) for (seed, id_hash, position). */
double mr_sample_uniform(uint64_t seed, uint64_t id_hash, int position);
/* FNV-1a hash of a request id's text. */
uint64_t mr_hash_id(const char *id);

/* Pick a token from logits (vocab).  Greedy ties go to the lowest id.
 * logprob (may be NULL) receives log p(token) under the final distribution. */
int mr_sample(mr_sampler *s, const float *logits, const mr_sample_params *p, uint64_t id_hash, int position,
              float *logprob);

#endif
