/* The tests' random numbers: xorshift64, reproducible from a seed each test
 * file sets (#define MR_TEST_RAND_SEED before including). */
#ifndef MR_TEST_RAND_H
#define MR_TEST_RAND_H

#include <stddef.h>
#include <stdint.h>

#ifndef MR_TEST_RAND_SEED
#define MR_TEST_RAND_SEED 0x9e3779b97f4a7c15ull
#endif

static uint64_t rng_state = MR_TEST_RAND_SEED;

static inline double urand(void) { /* [0, 1) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}
static inline float frand(float lo, float hi) { return lo + (hi - lo) * (float)urand(); }
static inline int irand(int n) { return (int)(urand() * n); }
static inline void fill(float *p, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) p[i] = frand(lo, hi);
}

#endif
