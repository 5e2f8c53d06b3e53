/* Block codecs of compress.h.  Loops are written so that gcc vectorises
 * them at -O2 (no libm calls in the per-value paths: rounding is the
 * 1.5*2^23 trick, valid for |v| <= 2^22, which codes never exceed). */
#include "runtime/compress.h"

#include "runtime/safetensors.h" /* mr_f16_to_f32, mr_bf16_to_f32 */

#include <math.h>
#include <string.h>

#define RNE_MAGIC 12582912.0f /* 1.5 * 2^23: (v + M) - M rounds v to nearest even */

static inline uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t mr_f32_to_bf16(float f) {
    uint32_t u = f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}


/* binary16, round to nearest even.  Normal results: re-bias the exponent
 * and round the 13 dropped mantissa bits; subnormal results: adding 0.5
 * (whose ulp is 2^-24, the binary16 subnormal spacing) rounds in float32
 * hardware and leaves the code in the low mantissa bits. */
uint16_t mr_f32_to_f16(float f) {
    uint32_t u = f2u(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    u &= 0x7fffffffu;
    if (u > 0x7f800000u) return sign | 0x7e00u;   /* NaN */
    if (u >= 0x477ff000u) return sign | 0x7c00u;  /* rounds to >= 65520: inf */
    if (u < 0x38800000u) {                        /* below 2^-14: subnormal or 0 */
        float r = u2f(u) + 0.5f;
        return sign | (uint16_t)(f2u(r) - f2u(0.5f));
    }
    uint32_t odd = (u >> 13) & 1u;
    u += ((uint32_t)(15 - 127) << 23) + 0xfffu + odd;
    return sign | (uint16_t)(u >> 13);
}


static inline size_t block_bytes(mr_compression c, size_t k) {
    switch (c) {
    case MR_COMPRESS_NONE: return 4 * k;
    case MR_COMPRESS_BF16: return 2 * k;
    case MR_COMPRESS_FP16: return 4 + 2 * k;
    case MR_COMPRESS_INT8: return 4 + k;
    case MR_COMPRESS_INT4: return 4 + (k + 1) / 2;
    default: return 0;
    }
}

size_t mr_compress_bytes(mr_compression c, size_t n, int block) {
    size_t B = (size_t)block, full = n / B, rest = n % B;
    return full * block_bytes(c, B) + (rest ? block_bytes(c, rest) : 0);
}

static float absmax(const float *x, size_t k) {
    float m = 0;
    for (size_t i = 0; i < k; i++) {
        float a = fabsf(x[i]);
        m = a > m ? a : m;
    }
    return m;
}

/* ---- int8 / int4 ------------------------------------------------------ */

static void int8_pack(const float *x, size_t k, unsigned char *out) {
    float A = absmax(x, k);
    float scale = A / 127.0f, inv = A > 0 ? 127.0f / A : 0.0f;
    memcpy(out, &scale, 4);
    int8_t *q = (int8_t *)(out + 4);
    for (size_t i = 0; i < k; i++) {
        float v = x[i] * inv;
        v = (v + RNE_MAGIC) - RNE_MAGIC;
        v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
        q[i] = (int8_t)v;
    }
}

static void int8_unpack(const unsigned char *in, size_t k, float *out, int add) {
    float scale;
    memcpy(&scale, in, 4);
    const int8_t *q = (const int8_t *)(in + 4);
    if (add)
        for (size_t i = 0; i < k; i++) out[i] += (float)q[i] * scale;
    else
        for (size_t i = 0; i < k; i++) out[i] = (float)q[i] * scale;
}

static void int4_pack(const float *x, size_t k, unsigned char *out) {
    float A = absmax(x, k);
    float scale = A / 7.0f, inv = A > 0 ? 7.0f / A : 0.0f;
    memcpy(out, &scale, 4);
    unsigned char *q = out + 4;
    for (size_t i = 0; i < k; i += 2) {
        float v0 = x[i] * inv, v1 = i + 1 < k ? x[i + 1] * inv : 0.0f;
        v0 = (v0 + RNE_MAGIC) - RNE_MAGIC;
        v1 = (v1 + RNE_MAGIC) - RNE_MAGIC;
        v0 = v0 > 7.0f ? 7.0f : v0 < -7.0f ? -7.0f : v0;
        v1 = v1 > 7.0f ? 7.0f : v1 < -7.0f ? -7.0f : v1;
        q[i / 2] = (unsigned char)(((int)v0 & 0xf) | (((int)v1 & 0xf) << 4));
    }
}

static inline float nib(unsigned b) { return (float)((int)(b << 28) >> 28); }

static void int4_unpack(const unsigned char *in, size_t k, float *out, int add) {
    float scale;
    memcpy(&scale, in, 4);
    const unsigned char *q = in + 4;
    for (size_t i = 0; i < k; i++) {
        float v = nib((unsigned)(q[i / 2] >> (4 * (i & 1))) & 0xfu) * scale;
        out[i] = add ? out[i] + v : v;
    }
}

/* ---- fp16 with a power-of-two block scale ----------------------------- */

static void fp16_pack(const float *x, size_t k, unsigned char *out) {
    float A = absmax(x, k);
    float scale = 1.0f, inv1 = 1.0f, inv2 = 1.0f;
    if (A > 0 && isfinite(A)) {
        int e;
        frexpf(A, &e); /* A in [2^(e-1), 2^e) */
        scale = ldexpf(1.0f, e - 15);
        /* 2^(15-e) may not be a float32 for tiny blocks: two exact steps */
        int s = 15 - e, s1 = s > 100 ? 100 : s;
        inv1 = ldexpf(1.0f, s1);
        inv2 = ldexpf(1.0f, s - s1);
    }
    memcpy(out, &scale, 4);
    unsigned char *h = out + 4;
    for (size_t i = 0; i < k; i++) {
        uint16_t v = mr_f32_to_f16(x[i] * inv1 * inv2);
        memcpy(h + 2 * i, &v, 2);
    }
}

static void fp16_unpack(const unsigned char *in, size_t k, float *out, int add) {
    float scale;
    memcpy(&scale, in, 4);
    const unsigned char *h = in + 4;
    for (size_t i = 0; i < k; i++) {
        uint16_t v;
        memcpy(&v, h + 2 * i, 2);
        float f = mr_f16_to_f32(v) * scale;
        out[i] = add ? out[i] + f : f;
    }
}

/* ---- whole vectors ---------------------------------------------------- */

void mr_compress(mr_compression c, int block, const float *x, size_t n, void *out) {
    unsigned char *o = out;
    if (c == MR_COMPRESS_NONE) {
        memcpy(out, x, n * 4);
        return;
    }
    if (c == MR_COMPRESS_BF16) {
        for (size_t i = 0; i < n; i++) {
            uint16_t v = mr_f32_to_bf16(x[i]);
            memcpy(o + 2 * i, &v, 2);
        }
        return;
    }
    for (size_t b0 = 0; b0 < n; b0 += (size_t)block) {
        size_t k = n - b0 < (size_t)block ? n - b0 : (size_t)block;
        if (c == MR_COMPRESS_INT8) int8_pack(x + b0, k, o);
        else if (c == MR_COMPRESS_INT4) int4_pack(x + b0, k, o);
        else fp16_pack(x + b0, k, o);
        o += block_bytes(c, k);
    }
}

static void unpack(mr_compression c, int block, const void *in, size_t n, float *out, int add) {
    const unsigned char *p = in;
    if (c == MR_COMPRESS_NONE) {
        const float *f = in;
        if (!add) memcpy(out, in, n * 4);
        else
            for (size_t i = 0; i < n; i++) out[i] += f[i];
        return;
    }
    if (c == MR_COMPRESS_BF16) {
        for (size_t i = 0; i < n; i++) {
            uint16_t v;
            memcpy(&v, p + 2 * i, 2);
            out[i] = add ? out[i] + mr_bf16_to_f32(v) : mr_bf16_to_f32(v);
        }
        return;
    }
    for (size_t b0 = 0; b0 < n; b0 += (size_t)block) {
        size_t k = n - b0 < (size_t)block ? n - b0 : (size_t)block;
        if (c == MR_COMPRESS_INT8) int8_unpack(p, k, out + b0, add);
        else if (c == MR_COMPRESS_INT4) int4_unpack(p, k, out + b0, add);
        else fp16_unpack(p, k, out + b0, add);
        p += block_bytes(c, k);
    }
}

void mr_decompress(mr_compression c, int block, const void *in, size_t n, float *out) {
    unpack(c, block, in, n, out, 0);
}

void mr_decompress_add(mr_compression c, int block, const void *in, size_t n, float *acc) {
    unpack(c, block, in, n, acc, 1);
}
