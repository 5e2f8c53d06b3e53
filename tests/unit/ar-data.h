/* Test data and error bounds for the compression codecs and the all-reduce
 * engine (test-compress.c, tests/mpi/test-allreduce.c).  The bounds are the
 * formulas written in runtime/compress.h, recomputed here from the inputs. */
#ifndef MR_AR_DATA_H
#define MR_AR_DATA_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/compress.h"

typedef enum ar_kind { AR_NORMAL, AR_HEAVY, AR_OUTLIER, AR_KIND_COUNT } ar_kind;
static const char *const ar_kind_names[AR_KIND_COUNT] = {"normal", "heavy-tailed", "outlier"};

static inline uint64_t ar_mix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline double ar_uniform(uint64_t *s) { return ((double)(ar_mix(s) >> 11) + 0.5) * 0x1p-53; }

/* x(n): standard normal; Cauchy (heavy tails: values up to ~1e7); or
 * normal with one value per `block` a million times larger (the block's
 * scale is set by it, so every other value quantises coarsely). */
static inline void ar_fill(float *x, size_t n, ar_kind kind, int block, uint64_t seed) {
    uint64_t s = seed * 0x2545f4914f6cdd1dull + 1;
    for (size_t i = 0; i < n; i++) {
        double u = ar_uniform(&s), v = ar_uniform(&s);
        double g = sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
        if (kind == AR_HEAVY) x[i] = (float)tan(3.141592653589793 * (u - 0.5));
        else x[i] = (float)g;
    }
    if (kind == AR_OUTLIER)
        for (size_t b = 0; b < n; b += (size_t)block) {
            size_t k = n - b < (size_t)block ? n - b : (size_t)block;
            size_t at = b + (size_t)(ar_mix(&s) % k);
            x[at] = (x[at] < 0 ? -1e6f : 1e6f) * (1.0f + (float)ar_uniform(&s));
        }
}

/* Bound on |q(x) - x| for one quantisation (compress.h). */
static inline double ar_quant_bound(mr_compression c, double x, double A) {
    switch (c) {
    case MR_COMPRESS_NONE: return 0;
    case MR_COMPRESS_BF16: return 0x1p-8 * fabs(x);
    case MR_COMPRESS_FP16: return 0x1p-11 * fabs(x) + 0x1p-39 * A;
    case MR_COMPRESS_INT8: return A / 254.0 + 0x1p-22 * A;
    case MR_COMPRESS_INT4: return A / 14.0 + 0x1p-22 * A;
    default: return 0;
    }
}

/* Bound on |all-reduce result - exact sum| for p ranks, S = sum_i |x_i|,
 * SA = sum_i A_i (compress.h). */
static inline double ar_sum_bound(mr_compression c, int p, double S, double SA) {
    double acc = p * 0x1p-23 * S;
    switch (c) {
    case MR_COMPRESS_NONE: return acc;
    case MR_COMPRESS_BF16: return (0x1p-7 + 0x1p-15) * S + acc;
    case MR_COMPRESS_FP16: return (0x1p-10 + 0x1p-21) * S + 0x1p-38 * SA + acc;
    case MR_COMPRESS_INT8: return (2.0 / 254.0 + 0x1p-13) * SA + acc;
    case MR_COMPRESS_INT4: return (2.0 / 14.0 + 0x1p-5) * SA + acc;
    default: return 0;
    }
}

/* Largest |x| of the block holding element i. */
static inline float ar_block_max(const float *x, size_t n, size_t i, int block) {
    size_t b = i - i % (size_t)block, e = b + (size_t)block < n ? b + (size_t)block : n;
    float m = 0;
    for (size_t k = b; k < e; k++) m = fabsf(x[k]) > m ? fabsf(x[k]) : m;
    return m;
}

#endif
