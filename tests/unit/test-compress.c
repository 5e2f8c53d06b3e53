/* Unit tests for the block codecs (runtime/compress.c).
 *
 * References are independent: binary16 rounding is checked against gcc's
 * _Float16 conversion, bfloat16 against the nearer of the two neighbouring
 * bfloat16 values computed in double, and every mode's decoded values
 * against the error bound written in compress.h, on normal, heavy-tailed and
 * one-outlier-per-block data. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ar-data.h"
#include "harness.h"
#include "runtime/compress.h"
#include "runtime/safetensors.h"

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint16_t ref_f16(float f) {
    _Float16 h = (_Float16)f;
    uint16_t u;
    memcpy(&u, &h, 2);
    return u;
}

static uint16_t ref_bf16(float f) {
    uint32_t u = bits(f);
    if (isnan(f)) return (uint16_t)((u >> 16) | 0x40);
    if (isinf(f)) return (uint16_t)(u >> 16);
    uint32_t lo = u & 0xffff0000u, hi = lo + 0x10000u;
    double dl = fabs((double)f - (double)from_bits(lo));
    /* hi may be inf (rounding up past the largest finite): compare against
     * the value one bfloat16 step above, 2^128 for the top binade */
    double vh = isinf(from_bits(hi)) ? copysign(ldexp(1.0, 128), f) : (double)from_bits(hi);
    double dh = fabs(vh - (double)f);
    if (dl < dh) return (uint16_t)(lo >> 16);
    if (dh < dl) return (uint16_t)(hi >> 16);
    return (uint16_t)(((lo >> 16) & 1) ? hi >> 16 : lo >> 16);
}

static void test_conversions(void) {
    uint64_t s = 42;
    int bad16 = 0, badbf = 0;
    const uint32_t edges[] = {0, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0x477fe000u, 0x477ff000u,
                              0x477fefffu, 0x38800000u, 0x387fffffu, 0x33000000u, 0x33000001u, 0x32ffffffu,
                              0x7f7fffffu, 0x00000001u, 0x3f800000u, 0x3f808000u, 0x3f818000u};
    for (size_t i = 0; i < sizeof edges / sizeof edges[0] + 4000000; i++) {
        uint32_t u = i < sizeof edges / sizeof edges[0] ? edges[i] : (uint32_t)ar_mix(&s);
        if (i >= sizeof edges / sizeof edges[0] && (i & 1)) /* half the draws near binary16's range */
            u = (u & 0x81ffffffu) | ((uint32_t)(0x60 + (u >> 24) % 0x30) << 23);
        float f = from_bits(u);
        if (isnan(f)) continue; /* NaN payloads differ by design; checked below */
        if (mr_f32_to_f16(f) != ref_f16(f) && bad16++ < 5)
            CHECK(0, "f16(%a = 0x%08x) = 0x%04x, _Float16 gives 0x%04x", (double)f, u, mr_f32_to_f16(f), ref_f16(f));
        if (mr_f32_to_bf16(f) != ref_bf16(f) && badbf++ < 5)
            CHECK(0, "bf16(%a) = 0x%04x, expected 0x%04x", (double)f, mr_f32_to_bf16(f), ref_bf16(f));
    }
    CHECK(bad16 == 0, "%d binary16 mismatches", bad16);
    CHECK(badbf == 0, "%d bfloat16 mismatches", badbf);
    CHECK((mr_f32_to_f16(NAN) & 0x7c00) == 0x7c00 && (mr_f32_to_f16(NAN) & 0x3ff), "f16 NaN stays NaN");
    CHECK(isnan(mr_bf16_to_f32(mr_f32_to_bf16(NAN))), "bf16 NaN stays NaN");
    CHECK(mr_f32_to_bf16(from_bits(0x3f808000u)) == 0x3f80, "bf16 tie to even (down)");
    CHECK(mr_f32_to_bf16(from_bits(0x3f818000u)) == 0x3f82, "bf16 tie to even (up)");
}

static size_t expect_bytes(mr_compression c, size_t n, int B) {
    size_t full = n / (size_t)B, rest = n % (size_t)B, bytes = 0;
    for (size_t b = 0; b <= full; b++) {
        size_t k = b < full ? (size_t)B : rest;
        if (!k) continue;
        bytes += c == MR_COMPRESS_NONE   ? 4 * k
                 : c == MR_COMPRESS_BF16 ? 2 * k
                 : c == MR_COMPRESS_FP16 ? 4 + 2 * k
                 : c == MR_COMPRESS_INT8 ? 4 + k
                                         : 4 + (k + 1) / 2;
    }
    return bytes;
}

static void test_codecs(void) {
    const size_t sizes[] = {1, 31, 32, 33, 100, 257, 1000, 4099};
    const int blocks[] = {32, 64, 128, 256};
    for (int c = 0; c < MR_COMPRESSION_COUNT; c++)
        for (int bi = 0; bi < 4; bi++)
            for (int k = 0; k < AR_KIND_COUNT; k++) {
                int B = blocks[bi], worst_ok = 1, add_ok = 1;
                double worst = 0;
                for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
                    size_t n = sizes[si];
                    float *x = malloc(n * 4), *y = malloc(n * 4), *acc = malloc(n * 4), *acc2 = malloc(n * 4);
                    size_t nb = mr_compress_bytes((mr_compression)c, n, B);
                    unsigned char *z = malloc(nb + 1);
                    CHECK(nb == expect_bytes((mr_compression)c, n, B), "%s n=%zu B=%d: %zu bytes",
                          mr_compression_name((mr_compression)c), n, B, nb);
                    ar_fill(x, n, (ar_kind)k, B, 1000 * si + (size_t)k);
                    z[nb] = 0xa5;
                    mr_compress((mr_compression)c, B, x, n, z);
                    CHECK(z[nb] == 0xa5, "%s wrote past %zu bytes", mr_compression_name((mr_compression)c), nb);
                    mr_decompress((mr_compression)c, B, z, n, y);
                    for (size_t i = 0; i < n; i++) {
                        double A = ar_block_max(x, n, i, B), err = fabs((double)y[i] - x[i]);
                        double bound = ar_quant_bound((mr_compression)c, x[i], A);
                        if (err > bound) worst_ok = 0;
                        if (A > 0 && err / A > worst) worst = err / A;
                        acc[i] = acc2[i] = (float)i * 0.25f;
                    }
                    mr_decompress_add((mr_compression)c, B, z, n, acc);
                    for (size_t i = 0; i < n; i++)
                        if (acc[i] != acc2[i] + y[i]) add_ok = 0;
                    free(x), free(y), free(acc), free(acc2), free(z);
                }
                CHECK(worst_ok, "%s block %d %s: error above the bound (worst %.3g of the block max)",
                      mr_compression_name((mr_compression)c), B, ar_kind_names[k], worst);
                CHECK(add_ok, "%s: decompress_add != acc + decompress", mr_compression_name((mr_compression)c));
                if (c == MR_COMPRESS_NONE) CHECK(worst == 0, "none is exact (%g)", worst);
            }
}

static void test_special_blocks(void) {
    float x[64] = {0}, y[64];
    unsigned char z[512];
    for (int c = 1; c < MR_COMPRESSION_COUNT; c++) {
        mr_compress((mr_compression)c, 32, x, 64, z);
        mr_decompress((mr_compression)c, 32, z, 64, y);
        int zero = 1;
        for (int i = 0; i < 64; i++) zero &= y[i] == 0.0f;
        CHECK(zero, "%s: zero block decodes to zeros", mr_compression_name((mr_compression)c));
    }
    /* int8: values on the code grid come back exactly */
    for (int i = 0; i < 64; i++) x[i] = (float)((i % 255) - 127) * 0.25f;
    x[0] = 31.75f; /* A = 31.75 = 127 * 0.25 */
    mr_compress(MR_COMPRESS_INT8, 64, x, 64, z);
    mr_decompress(MR_COMPRESS_INT8, 64, z, 64, y);
    float scale;
    memcpy(&scale, z, 4);
    CHECK(scale == 0.25f, "int8 scale %g", (double)scale);
    int exact = 1;
    for (int i = 0; i < 64; i++) exact &= y[i] == x[i];
    CHECK(exact, "int8 grid values exact");
    /* int4 signs: -7..7 codes */
    for (int i = 0; i < 15; i++) x[i] = (float)(i - 7);
    mr_compress(MR_COMPRESS_INT4, 32, x, 15, z);
    mr_decompress(MR_COMPRESS_INT4, 32, z, 15, y);
    exact = 1;
    for (int i = 0; i < 15; i++) exact &= y[i] == x[i];
    CHECK(exact, "int4 codes -7..7 exact");
    /* fp16 never overflows: huge and tiny blocks */
    for (int i = 0; i < 64; i++) x[i] = (i & 1 ? -3e36f : 1e36f) * (float)(i + 1);
    mr_compress(MR_COMPRESS_FP16, 64, x, 64, z);
    mr_decompress(MR_COMPRESS_FP16, 64, z, 64, y);
    int fin = 1;
    for (int i = 0; i < 64; i++) fin &= isfinite(y[i]) && fabs((double)y[i] - x[i]) <= 0x1p-11 * fabs(x[i]) + 1e-30;
    CHECK(fin, "fp16 block of values up to 2e38: finite, relative 2^-11");
    /* a block whose largest value is in [2^14, 2^15) has scale 1: its codes
     * are plain binary16 conversions (normal, subnormal and zero results) */
    uint64_t sd = 7;
    for (int i = 0; i < 64; i++) x[i] = (float)((ar_uniform(&sd) - 0.5) * pow(10.0, -9.0 + 13.0 * ar_uniform(&sd)));
    x[5] = 20000.0f;
    x[6] = 0.0f;
    x[7] = -3e-8f;
    mr_compress(MR_COMPRESS_FP16, 64, x, 64, z);
    memcpy(&scale, z, 4);
    int codes_ok = scale == 1.0f;
    for (int i = 0; i < 64; i++) {
        uint16_t h;
        memcpy(&h, z + 4 + 2 * i, 2);
        codes_ok &= h == ref_f16(x[i]);
    }
    CHECK(codes_ok, "fp16 codes equal _Float16 conversions (scale %g)", (double)scale);
    for (int i = 0; i < 64; i++) x[i] = 1e-40f * (float)(i + 1); /* float32 subnormals */
    mr_compress(MR_COMPRESS_FP16, 64, x, 64, z);
    mr_decompress(MR_COMPRESS_FP16, 64, z, 64, y);
    fin = 1;
    for (int i = 0; i < 64; i++) fin &= fabs((double)y[i] - x[i]) <= 0x1p-11 * fabs(x[i]) + 0x1p-149;
    CHECK(fin, "fp16 block of float32 subnormals: within 2^-11 relative + 2^-149");
}

/* int8 and int4 blocks so small that 127/A (7/A) overflows float32: the
 * bound of compress.h (with its 2^-142 for a subnormal scale), on blocks
 * taken by the vectorised path (32 values) and the portable one (31). */
static void test_tiny_blocks(void) {
    static const double mags[] = {3e-30, 1e-34, 2e-37, 1e-38, 1e-40, 1e-43};
    const mr_compression modes[] = {MR_COMPRESS_INT8, MR_COMPRESS_INT4};
    uint64_t sd = 11;
    for (int mi = 0; mi < 2; mi++)
        for (int g = 0; g < 6; g++)
            for (int n = 31; n <= 32; n++) {
                float x[32], y[32];
                unsigned char z[256];
                for (int i = 0; i < n; i++) x[i] = (float)((ar_uniform(&sd) * 2 - 1) * mags[g]);
                x[3] = (float)-mags[g]; /* A itself, negative */
                double A = 0;
                for (int i = 0; i < n; i++) A = fmax(A, fabs((double)x[i]));
                mr_compress(modes[mi], 32, x, (size_t)n, z);
                mr_decompress(modes[mi], 32, z, (size_t)n, y);
                double steps = modes[mi] == MR_COMPRESS_INT8 ? 254.0 : 14.0;
                double bound = A / steps + 0x1p-22 * A + 0x1p-142 + 0x1p-149, worst = 0;
                for (int i = 0; i < n; i++) worst = fmax(worst, fabs((double)y[i] - x[i]));
                CHECK(worst <= bound, "%s block of %d values with max |x| %g: error %g > bound %g",
                      modes[mi] == MR_COMPRESS_INT8 ? "int8" : "int4", n, A, worst, bound);
            }
}

/* int8 bytes against the formula of compress.h computed here (the codec
 * may take a vectorised path; the bytes must not change) */
static void test_int8_bytes(void) {
    enum { N = 1000 };
    static float x[N];
    static unsigned char z[N * 2];
    const int blocks[] = {32, 64, 256};
    for (int bi = 0; bi < 3; bi++) {
        int B = blocks[bi], bad = 0;
        ar_fill(x, N, AR_OUTLIER, B, 31 + (uint64_t)B);
        mr_compress(MR_COMPRESS_INT8, B, x, N, z);
        const unsigned char *p = z;
        for (int b0 = 0; b0 < N; b0 += B) {
            int k = N - b0 < B ? N - b0 : B;
            float A = 0;
            for (int i = 0; i < k; i++) A = fabsf(x[b0 + i]) > A ? fabsf(x[b0 + i]) : A;
            float scale = A / 127.0f, inv = 127.0f / A, got;
            memcpy(&got, p, 4);
            if (memcmp(&got, &scale, 4)) bad++;
            for (int i = 0; i < k; i++)
                if ((int8_t)p[4 + i] != (int8_t)nearbyintf(x[b0 + i] * inv)) bad++;
            p += 4 + k;
        }
        CHECK(bad == 0, "int8 block %d: %d bytes differ from the formula", B, bad);
    }
}

int main(void) {
    test_int8_bytes();
    test_conversions();
    test_codecs();
    test_special_blocks();
    test_tiny_blocks();
    return mr_test_summary();
}
