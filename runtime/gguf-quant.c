/* ggml tensor block formats: the table of block sizes for every ggml type
 * (so a GGUF file's sizes can be checked even for types moerun does not
 * read) and dequantization to float32 of F32, F16, BF16, Q8_0, Q4_0, Q4_1,
 * Q4_K, Q5_K and Q6_K.  Block layouts and arithmetic follow ggml's
 * ggml-common.h and dequantize_row_* in ggml-quants.c, operation for
 * operation (d * sc computed first, then times q, minus dmin * m), so the
 * results are bit-identical to ggml's reference dequantizer. */
#include "runtime/gguf.h"

#include <string.h>

#include "runtime/safetensors.h" /* mr_f16_to_f32, mr_bf16_to_f32 */

#define QK_K 256     /* super-block of the K-quants */
#define K_SCALES 12  /* packed 6-bit scales and mins of Q4_K/Q5_K */

typedef void (*deq_fn)(const unsigned char *restrict src, size_t nblocks, float *restrict dst);

typedef struct ggml_type_desc {
    const char *name;
    int blck;  /* elements per block */
    int bytes; /* bytes per block */
    deq_fn deq;
} ggml_type_desc;

static inline float rd_f16(const unsigned char *p) { return mr_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

static void deq_f32(const unsigned char *restrict src, size_t n, float *restrict dst) {
    memcpy(dst, src, n * sizeof(float));
}

static void deq_f16(const unsigned char *restrict src, size_t n, float *restrict dst) {
    for (size_t i = 0; i < n; i++) dst[i] = rd_f16(src + 2 * i);
}

static void deq_bf16(const unsigned char *restrict src, size_t n, float *restrict dst) {
    for (size_t i = 0; i < n; i++) dst[i] = mr_bf16_to_f32((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
}

/* block_q8_0 { f16 d; int8 qs[32]; }: y = qs * d */
static void deq_q8_0(const unsigned char *restrict src, size_t nb, float *restrict y) {
    for (size_t i = 0; i < nb; i++, src += 34, y += 32) {
        const float d = rd_f16(src);
        for (int j = 0; j < 32; j++) y[j] = (float)(int8_t)src[2 + j] * d;
    }
}

/* block_q4_0 { f16 d; u8 qs[16]; }: low nibbles are elements 0..15, high
 * nibbles 16..31; y = (q - 8) * d */
static void deq_q4_0(const unsigned char *restrict src, size_t nb, float *restrict y) {
    for (size_t i = 0; i < nb; i++, src += 18, y += 32) {
        const float d = rd_f16(src);
        const unsigned char *qs = src + 2;
        for (int j = 0; j < 16; j++) {
            y[j] = (float)((qs[j] & 0x0F) - 8) * d;
            y[j + 16] = (float)((qs[j] >> 4) - 8) * d;
        }
    }
}

/* block_q4_1 { f16 d; f16 m; u8 qs[16]; }: y = q * d + m */
static void deq_q4_1(const unsigned char *restrict src, size_t nb, float *restrict y) {
    for (size_t i = 0; i < nb; i++, src += 20, y += 32) {
        const float d = rd_f16(src), m = rd_f16(src + 2);
        const unsigned char *qs = src + 4;
        for (int j = 0; j < 16; j++) {
            y[j] = (float)(qs[j] & 0x0F) * d + m;
            y[j + 16] = (float)(qs[j] >> 4) * d + m;
        }
    }
}

/* The 8 six-bit scales and mins of Q4_K/Q5_K packed into 12 bytes:
 * j < 4: scale = q[j] & 63, min = q[j+4] & 63; j >= 4: the low four bits
 * come from q[j+4] and the top two from the spare bits of q[j-4] / q[j]. */
static inline void scale_min_k4(int j, const unsigned char *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* block_q4_K { f16 d; f16 dmin; u8 scales[12]; u8 qs[128]; }: 8 sub-blocks
 * of 32; each 32 bytes of qs hold two sub-blocks (low nibbles, high). */
static void deq_q4_k(const unsigned char *restrict src, size_t nb, float *restrict y) {
    for (size_t i = 0; i < nb; i++, src += 144) {
        const float d = rd_f16(src), min = rd_f16(src + 2);
        const unsigned char *scales = src + 4, *q = src + 4 + K_SCALES;
        int sc, m;
        for (int j = 0, is = 0; j < QK_K; j += 64, is += 2, q += 32) {
            scale_min_k4(is, scales, &sc, &m);
            const float d1 = d * (float)sc, m1 = min * (float)m;
            scale_min_k4(is + 1, scales, &sc, &m);
            const float d2 = d * (float)sc, m2 = min * (float)m;
            for (int l = 0; l < 32; l++) *y++ = d1 * (float)(q[l] & 0x0F) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (float)(q[l] >> 4) - m2;
        }
    }
}

/* block_q5_K { f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]; }: as
 * Q4_K plus a fifth bit per element, bit 2k / 2k+1 of qh for the two
 * sub-blocks of the k-th 64-element group. */
static void deq_q5_k(const unsigned char *restrict src, size_t nb, float *restrict y) {
    for (size_t i = 0; i < nb; i++, src += 176) {
        const float d = rd_f16(src), min = rd_f16(src + 2);
        const unsigned char *scales = src + 4, *qh = src + 4 + K_SCALES, *ql = qh + QK_K / 8;
        unsigned u1 = 1, u2 = 2;
        int sc, m;
        for (int j = 0, is = 0; j < QK_K; j += 64, is += 2, ql += 32, u1 <<= 2, u2 <<= 2) {
            scale_min_k4(is, scales, &sc, &m);
            const float d1 = d * (float)sc, m1 = min * (float)m;
            scale_min_k4(is + 1, scales, &sc, &m);
            const float d2 = d * (float)sc, m2 = min * (float)m;
            for (int l = 0; l < 32; l++) *y++ = d1 * (float)((ql[l] & 0x0F) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (float)((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        }
    }
}

/* block_q6_K { u8 ql[128]; u8 qh[64]; int8 scales[16]; f16 d; }: 6-bit
 * values (4 low bits in ql, 2 high bits in qh) minus 32, times d * scale of
 * their 16-element group; two halves of 128 elements. */
static void deq_q6_k(const unsigned char *restrict src, size_t nb, float *restrict y) {
    for (size_t i = 0; i < nb; i++, src += 210) {
        const unsigned char *ql = src, *qh = src + QK_K / 2;
        const int8_t *sc = (const int8_t *)(src + QK_K / 2 + QK_K / 4);
        const float d = rd_f16(src + QK_K / 2 + QK_K / 4 + QK_K / 16);
        for (int n = 0; n < QK_K; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                const int q1 = ((ql[l] & 0x0F) | ((qh[l] >> 0 & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0x0F) | ((qh[l] >> 2 & 3) << 4)) - 32;
                const int q3 = ((ql[l] >> 4) | ((qh[l] >> 4 & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6 & 3) << 4)) - 32;
                y[l] = d * (float)sc[is] * (float)q1;
                y[l + 32] = d * (float)sc[is + 2] * (float)q2;
                y[l + 64] = d * (float)sc[is + 4] * (float)q3;
                y[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
        }
    }
}

/* Block sizes as ggml's type_traits (gguf-py GGML_QUANT_SIZES). */
static const ggml_type_desc ggml_types[MR_GGML_TYPE_COUNT] = {
    [MR_GGML_TYPE_F32] = {"F32", 1, 4, deq_f32},
    [MR_GGML_TYPE_F16] = {"F16", 1, 2, deq_f16},
    [MR_GGML_TYPE_Q4_0] = {"Q4_0", 32, 18, deq_q4_0},
    [MR_GGML_TYPE_Q4_1] = {"Q4_1", 32, 20, deq_q4_1},
    [MR_GGML_TYPE_Q5_0] = {"Q5_0", 32, 22, NULL},
    [MR_GGML_TYPE_Q5_1] = {"Q5_1", 32, 24, NULL},
    [MR_GGML_TYPE_Q8_0] = {"Q8_0", 32, 34, deq_q8_0},
    [MR_GGML_TYPE_Q8_1] = {"Q8_1", 32, 40, NULL},
    [MR_GGML_TYPE_Q2_K] = {"Q2_K", QK_K, 84, NULL},
    [MR_GGML_TYPE_Q3_K] = {"Q3_K", QK_K, 110, NULL},
    [MR_GGML_TYPE_Q4_K] = {"Q4_K", QK_K, 144, deq_q4_k},
    [MR_GGML_TYPE_Q5_K] = {"Q5_K", QK_K, 176, deq_q5_k},
    [MR_GGML_TYPE_Q6_K] = {"Q6_K", QK_K, 210, deq_q6_k},
    [MR_GGML_TYPE_Q8_K] = {"Q8_K", QK_K, 292, NULL},
    [MR_GGML_TYPE_IQ2_XXS] = {"IQ2_XXS", QK_K, 66, NULL},
    [MR_GGML_TYPE_IQ2_XS] = {"IQ2_XS", QK_K, 74, NULL},
    [MR_GGML_TYPE_IQ3_XXS] = {"IQ3_XXS", QK_K, 98, NULL},
    [MR_GGML_TYPE_IQ1_S] = {"IQ1_S", QK_K, 50, NULL},
    [MR_GGML_TYPE_IQ4_NL] = {"IQ4_NL", 32, 18, NULL},
    [MR_GGML_TYPE_IQ3_S] = {"IQ3_S", QK_K, 110, NULL},
    [MR_GGML_TYPE_IQ2_S] = {"IQ2_S", QK_K, 82, NULL},
    [MR_GGML_TYPE_IQ4_XS] = {"IQ4_XS", QK_K, 136, NULL},
    [MR_GGML_TYPE_I8] = {"I8", 1, 1, NULL},
    [MR_GGML_TYPE_I16] = {"I16", 1, 2, NULL},
    [MR_GGML_TYPE_I32] = {"I32", 1, 4, NULL},
    [MR_GGML_TYPE_I64] = {"I64", 1, 8, NULL},
    [MR_GGML_TYPE_F64] = {"F64", 1, 8, NULL},
    [MR_GGML_TYPE_IQ1_M] = {"IQ1_M", QK_K, 56, NULL},
    [MR_GGML_TYPE_BF16] = {"BF16", 1, 2, deq_bf16},
    [MR_GGML_TYPE_TQ1_0] = {"TQ1_0", QK_K, 54, NULL},
    [MR_GGML_TYPE_TQ2_0] = {"TQ2_0", QK_K, 66, NULL},
    [MR_GGML_TYPE_MXFP4] = {"MXFP4", 32, 17, NULL},
    [MR_GGML_TYPE_NVFP4] = {"NVFP4", 64, 36, NULL},
    [MR_GGML_TYPE_Q1_0] = {"Q1_0", 128, 18, NULL},
};

static const ggml_type_desc *ggml_desc(int type) {
    if (type < 0 || type >= MR_GGML_TYPE_COUNT || !ggml_types[type].name) return NULL;
    return &ggml_types[type];
}

const char *mr_ggml_type_name(int type) {
    const ggml_type_desc *d = ggml_desc(type);
    return d ? d->name : "?";
}

int mr_ggml_block_elems(int type) {
    const ggml_type_desc *d = ggml_desc(type);
    return d ? d->blck : 0;
}

int mr_ggml_block_bytes(int type) {
    const ggml_type_desc *d = ggml_desc(type);
    return d ? d->bytes : 0;
}

int mr_ggml_can_dequantize(int type) {
    const ggml_type_desc *d = ggml_desc(type);
    return d && d->deq;
}

void mr_ggml_dequantize(int type, const void *src, size_t nblocks, float *dst) {
    const ggml_type_desc *d = ggml_desc(type);
    if (d && d->deq) d->deq(src, nblocks, dst);
}
