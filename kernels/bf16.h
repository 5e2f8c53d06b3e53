/* bfloat16 bits on the host: the top half of a float32, rounded to nearest
 * even; a NaN stays a (quiet) NaN.  The CUDA kernels' mr_cuda_bf16_bits
 * (kernels/cuda/cuda-internal.h) gives the same bits. */
#ifndef MR_BF16_H
#define MR_BF16_H

#include <stdint.h>
#include <string.h>

/* Branch-free, so that loops over it vectorise. */
static inline uint16_t mr_bf16_from_bits(uint32_t u) {
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16, qnan = (u >> 16) | 0x40u;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? qnan : r);
}

static inline uint16_t mr_bf16_from_f32(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return mr_bf16_from_bits(u);
}

static inline float mr_bf16_to_float(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#endif
