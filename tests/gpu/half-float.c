/* mr_f16_to_f32 and mr_bf16_to_f32 for tests/gpu/run.sh's plain build on a
 * machine without jansson, whose header runtime/safetensors.c (their home)
 * needs.  Both conversions are exact, so any correct implementation gives
 * the same bits; this one is written differently from safetensors.c on
 * purpose (a scale by 2^-24 for every finite value), so that the two would
 * disagree if either were wrong. */
#include <stdint.h>
#include <string.h>

float mr_f16_to_f32(uint16_t h);
float mr_bf16_to_f32(uint16_t h);

float mr_f16_to_f32(uint16_t h) {
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu, u;
    float f;
    if (e == 0x1f) { /* inf, NaN: payload kept */
        u = (uint32_t)(h & 0x8000u) << 16 | 0x7f800000u | m << 13;
        memcpy(&f, &u, 4);
        return f;
    }
    /* value = (e ? 1024 + m : m) * 2^(max(e, 1) - 25) */
    float mag = (float)(e ? 1024u + m : m);
    for (uint32_t k = e > 1 ? e - 1 : 0; k > 0; k--) mag *= 2.0f;
    mag *= 0x1p-24f;
    return h & 0x8000u ? -mag : mag;
}

float mr_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
