/* Block codecs of compress.h.  The per-value loops are branch-free so that
 * gcc vectorises them (no libm calls: rounding is the 1.5*2^23 trick, valid
 * for |v| <= 2^22, which codes never exceed), and on x86-64 each is built
 * twice, for AVX2 and the baseline, picked at load time (target_clones). */
#include "runtime/compress.h"

#include "kernels/bf16.h"
#include "runtime/safetensors.h" /* mr_f16_to_f32, mr_bf16_to_f32 */

#include <math.h>
#include <string.h>

#define RNE_MAGIC 12582912.0f /* 1.5 * 2^23: (v + M) - M rounds v to nearest even */

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define MR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MR_CLONES
#endif

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

/* Largest |x| by the bit patterns (monotone for non-NaN floats; a NaN wins
 * and makes the block's scale NaN). */
MR_CLONES static float absmax(const float *restrict x, size_t k) {
    uint32_t m = 0;
    for (size_t i = 0; i < k; i++) {
        uint32_t u;
        memcpy(&u, x + i, 4);
        u &= 0x7fffffffu;
        m = u > m ? u : m;
    }
    return u2f(m);
}

/* ---- bf16 ------------------------------------------------------------ */

MR_CLONES static void bf16_pack(const float *restrict x, size_t n, uint16_t *restrict h) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, x + i, 4);
        h[i] = mr_bf16_from_bits(u);
    }
}

MR_CLONES static void bf16_unpack(const uint16_t *restrict h, size_t n, float *restrict out, int add) {
    if (add)
        for (size_t i = 0; i < n; i++) out[i] += u2f((uint32_t)h[i] << 16);
    else
        for (size_t i = 0; i < n; i++) out[i] = u2f((uint32_t)h[i] << 16);
}

/* ---- int8 / int4 ------------------------------------------------------ */

/* x * (L/A) for a block with largest |x| A overflows when A < L/FLT_MAX,
 * so a tiny block (A < 2^-100) is first scaled by 2^100: both products are
 * exact, and (x 2^100) * fl(L / (A 2^100)) is the same float as x * fl(L/A)
 * wherever the latter is finite.  Returns the factor (1 or 2^100) and sets
 * *inv = L / (A * factor), or 0 for an all-zero or non-finite block. */
static inline float int_inv(float A, float L, float *inv) {
    int ok = A > 0 && A <= 3.4028234663852886e38f; /* finite, non-zero */
    float pre = A < 0x1p-100f ? 0x1p100f : 1.0f;
    *inv = ok ? L / (A * pre) : 0.0f;
    return pre;
}

/* Codes are written to q; the caller stores the scale. */
MR_CLONES static void int8_codes(const float *restrict x, size_t k, float pre, float inv,
                                 int8_t *restrict q) {
    for (size_t i = 0; i < k; i++) {
        float v = (x[i] * pre) * inv;
        v = (v + RNE_MAGIC) - RNE_MAGIC;
        q[i] = (int8_t)(int)v;
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define MR_HAVE_AVX2_PATH 1

static int have_avx2(void) {
    static int v = -1;
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx2") ? 1 : 0;
    }
    return v;
}

/* Eight codes: (x * pre) * inv rounded to nearest even, as int32. */
__attribute__((target("avx2"))) static inline __m256i int8_q8(const float *x, __m256 vpre, __m256 vinv) {
    __m256 v = _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x), vpre), vinv);
    return _mm256_cvtps_epi32(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

/* One whole block (k a multiple of 32) in AVX2: the same bytes as the
 * portable code (largest |x| by bit patterns, x * inv rounded to nearest
 * even -- |x * inv| <= 127.5 so the saturating packs never saturate). */
__attribute__((target("avx2"))) static void int8_pack_avx2(const float *x, size_t k, unsigned char *out) {
    const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
    __m256i m = _mm256_setzero_si256();
    for (size_t j = 0; j < k; j += 8)
        m = _mm256_max_epu32(m, _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(x + j)), absmask));
    __m128i h = _mm_max_epu32(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
    h = _mm_max_epu32(h, _mm_shuffle_epi32(h, 0x4e));
    h = _mm_max_epu32(h, _mm_shuffle_epi32(h, 0xb1));
    float A = u2f((uint32_t)_mm_cvtsi128_si32(h)), inv, scale = A / 127.0f;
    float pre = int_inv(A, 127.0f, &inv);
    memcpy(out, &scale, 4);
    const __m256 vinv = _mm256_set1_ps(inv), vpre = _mm256_set1_ps(pre);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (size_t j = 0; j < k; j += 32) {
        __m256i a = int8_q8(x + j, vpre, vinv), b = int8_q8(x + j + 8, vpre, vinv);
        __m256i c = int8_q8(x + j + 16, vpre, vinv), d = int8_q8(x + j + 24, vpre, vinv);
        __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
        __m256i q = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), order);
        _mm256_storeu_si256((__m256i *)(out + 4 + j), q);
    }
}

__attribute__((target("avx2"))) static void int8_unpack_avx2(const unsigned char *in, size_t k, float *out,
                                                            int add) {
    float scale;
    memcpy(&scale, in, 4);
    const __m256 vs = _mm256_set1_ps(scale);
    for (size_t j = 0; j < k; j += 8) {
        __m128i b = _mm_loadl_epi64((const __m128i *)(in + 4 + j));
        __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), vs);
        if (add) v = _mm256_add_ps(_mm256_loadu_ps(out + j), v);
        _mm256_storeu_ps(out + j, v);
    }
}
#endif

static void int8_pack(const float *x, size_t k, unsigned char *out) {
#ifdef MR_HAVE_AVX2_PATH
    if (k % 32 == 0 && have_avx2()) {
        int8_pack_avx2(x, k, out);
        return;
    }
#endif
    float A = absmax(x, k), inv, scale = A / 127.0f;
    float pre = int_inv(A, 127.0f, &inv);
    memcpy(out, &scale, 4);
    int8_codes(x, k, pre, inv, (int8_t *)(out + 4));
}

MR_CLONES static void int8_unpack_any(const unsigned char *in, size_t k, float *restrict out, int add) {
    float scale;
    memcpy(&scale, in, 4);
    const int8_t *restrict q = (const int8_t *)(in + 4);
    if (add)
        for (size_t i = 0; i < k; i++) out[i] += (float)q[i] * scale;
    else
        for (size_t i = 0; i < k; i++) out[i] = (float)q[i] * scale;
}

static void int8_unpack(const unsigned char *in, size_t k, float *out, int add) {
#ifdef MR_HAVE_AVX2_PATH
    if (k % 8 == 0 && have_avx2()) {
        int8_unpack_avx2(in, k, out, add);
        return;
    }
#endif
    int8_unpack_any(in, k, out, add);
}

MR_CLONES static void int4_codes(const float *restrict x, size_t pairs, float pre, float inv,
                                 unsigned char *restrict q) {
    for (size_t i = 0; i < pairs; i++) {
        float v0 = (x[2 * i] * pre) * inv, v1 = (x[2 * i + 1] * pre) * inv;
        v0 = (v0 + RNE_MAGIC) - RNE_MAGIC;
        v1 = (v1 + RNE_MAGIC) - RNE_MAGIC;
        q[i] = (unsigned char)(((unsigned)(int)v0 & 0xfu) | (((unsigned)(int)v1 & 0xfu) << 4));
    }
}

static void int4_pack(const float *x, size_t k, unsigned char *out) {
    float A = absmax(x, k), inv, scale = A / 7.0f;
    float pre = int_inv(A, 7.0f, &inv);
    memcpy(out, &scale, 4);
    int4_codes(x, k / 2, pre, inv, out + 4);
    if (k & 1) { /* odd tail: the high nibble is 0 */
        float v = (x[k - 1] * pre) * inv;
        v = (v + RNE_MAGIC) - RNE_MAGIC;
        out[4 + k / 2] = (unsigned char)((unsigned)(int)v & 0xfu);
    }
}

MR_CLONES static void int4_unpack(const unsigned char *in, size_t k, float *restrict out, int add) {
    float scale;
    memcpy(&scale, in, 4);
    const unsigned char *restrict q = in + 4;
    for (size_t i = 0; i < k / 2; i++) {
        /* sign-extend each nibble: (b ^ 8) - 8 */
        float lo = (float)((int)((q[i] & 0xfu) ^ 8u) - 8) * scale;
        float hi = (float)((int)((q[i] >> 4) ^ 8u) - 8) * scale;
        out[2 * i] = add ? out[2 * i] + lo : lo;
        out[2 * i + 1] = add ? out[2 * i + 1] + hi : hi;
    }
    if (k & 1) {
        float v = (float)((int)((q[k / 2] & 0xfu) ^ 8u) - 8) * scale;
        out[k - 1] = add ? out[k - 1] + v : v;
    }
}

/* ---- fp16 with a power-of-two block scale ----------------------------- */

/* binary16 codes of x * s1 * s2 (both powers of two, so exact), branch-free:
 * the same results as mr_f32_to_f16 for every input, inf and NaN included. */
MR_CLONES static void f16_codes(const float *restrict x, size_t k, float s1, float s2, uint16_t *restrict h) {
    for (size_t i = 0; i < k; i++) {
        float y = x[i] * s1 * s2;
        uint32_t u = f2u(y), sign = (u >> 16) & 0x8000u;
        u &= 0x7fffffffu;
        uint32_t sub = f2u(u2f(u) + 0.5f) - 0x3f000000u;
        uint32_t nrm = (u + ((uint32_t)(15 - 127) << 23) + 0xfffu + ((u >> 13) & 1u)) >> 13;
        uint32_t r = u < 0x38800000u ? sub : nrm;
        r = u >= 0x477ff000u ? 0x7c00u : r;
        r = u > 0x7f800000u ? 0x7e00u : r;
        h[i] = (uint16_t)(sign | r);
    }
}

static void fp16_pack(const float *x, size_t k, unsigned char *out) {
    float A = absmax(x, k);
    float scale = 1.0f, inv1 = 1.0f, inv2 = 1.0f;
    if (A > 0 && A <= 3.4028234663852886e38f) {
        int e;
        frexpf(A, &e); /* A in [2^(e-1), 2^e) */
        scale = ldexpf(1.0f, e - 15);
        /* 2^(15-e) may not be a float32 for tiny blocks: two exact steps */
        int s = 15 - e, s1 = s > 100 ? 100 : s;
        inv1 = ldexpf(1.0f, s1);
        inv2 = ldexpf(1.0f, s - s1);
    }
    memcpy(out, &scale, 4);
    uint16_t tmp[MR_COMPRESS_BLOCK_MAX];
    f16_codes(x, k, inv1, inv2, tmp);
    memcpy(out + 4, tmp, 2 * k);
}

MR_CLONES static void f16_values(const uint16_t *restrict h, size_t k, float scale, float *restrict out, int add) {
    for (size_t i = 0; i < k; i++) {
        uint32_t em = h[i] & 0x7fffu, sign = (uint32_t)(h[i] & 0x8000u) << 16;
        uint32_t fin = f2u(u2f(em << 13) * 0x1p112f);
        uint32_t special = 0x7f800000u | ((em & 0x3ffu) << 13);
        float v = u2f(sign | (em >= 0x7c00u ? special : fin)) * scale;
        out[i] = add ? out[i] + v : v;
    }
}

static void fp16_unpack(const unsigned char *in, size_t k, float *out, int add) {
    float scale;
    memcpy(&scale, in, 4);
    uint16_t tmp[MR_COMPRESS_BLOCK_MAX];
    memcpy(tmp, in + 4, 2 * k);
    f16_values(tmp, k, scale, out, add);
}

/* ---- single values: the same loops, one value ------------------------- */

uint16_t mr_f32_to_bf16(float f) {
    uint16_t h;
    bf16_pack(&f, 1, &h);
    return h;
}

uint16_t mr_f32_to_f16(float f) {
    uint16_t h;
    f16_codes(&f, 1, 1.0f, 1.0f, &h);
    return h;
}

/* ---- whole vectors ---------------------------------------------------- */

void mr_compress(mr_compression c, int block, const float *x, size_t n, void *out) {
    unsigned char *o = out;
    if (c == MR_COMPRESS_NONE) {
        memcpy(out, x, n * 4);
        return;
    }
    if (c == MR_COMPRESS_BF16) {
        if (((uintptr_t)out & 1) == 0) bf16_pack(x, n, out);
        else
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

MR_CLONES static void add_f32(const float *restrict x, size_t n, float *restrict acc) {
    for (size_t i = 0; i < n; i++) acc[i] += x[i];
}

static void unpack(mr_compression c, int block, const void *in, size_t n, float *out, int add) {
    const unsigned char *p = in;
    if (c == MR_COMPRESS_NONE) {
        if (!add) memcpy(out, in, n * 4);
        else if (((uintptr_t)in & 3) == 0) add_f32(in, n, out);
        else
            for (size_t i = 0; i < n; i++) {
                float f;
                memcpy(&f, p + 4 * i, 4);
                out[i] += f;
            }
        return;
    }
    if (c == MR_COMPRESS_BF16) {
        if (((uintptr_t)in & 1) == 0) bf16_unpack(in, n, out, add);
        else
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
