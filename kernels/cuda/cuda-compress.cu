/* Block codecs of runtime/compress.h on the GPU, for the compressed
 * all-reduce: the same bytes as mr_compress() and the same floats as
 * mr_decompress_add() on the CPU, bit for bit.
 *
 * What makes the bytes equal: every multiply and add is rounded on its own
 * (__fmul_rn, __fadd_rn: the CPU is built without contraction), divisions
 * and frexpf/ldexpf are IEEE (no fast-math), float subnormals are kept
 * (no -ftz), codes are rounded to nearest even (__float2int_rn; the CPU's
 * 1.5 * 2^23 trick gives the same for |v| <= 2^22), and the binary16/bf16
 * conversions are the CPU's bit manipulations.  The block maximum is a max
 * of bit patterns, exact in any order.
 *
 * Layout (compress.h): blocks of `block` values, each packed into a fixed
 * number of bytes one after the other, the last block possibly shorter;
 * int and fp16 blocks start with a float32 scale.  Compression is one warp
 * per block (a shuffle max, then a lane per value or per nibble pair);
 * decompression a thread per value.  The scale is written and read byte by
 * byte, so no alignment of the buffer is assumed. */
#include "kernels/cuda/cuda-internal.h"

#include <math.h>

/* mr_compression values (runtime/plan.h); test-gpu-ops checks every mode
 * against the CPU codec, which would catch a change of numbering. */
enum { CMP_NONE = 0, CMP_BF16, CMP_FP16, CMP_INT8, CMP_INT4, CMP_COUNT };

#define CMP_THREADS 256
#define CMP_WARPS (CMP_THREADS / 32)

static __host__ __device__ size_t block_bytes(int mode, size_t k) {
    switch (mode) {
    case CMP_NONE: return 4 * k;
    case CMP_BF16: return 2 * k;
    case CMP_FP16: return 4 + 2 * k;
    case CMP_INT8: return 4 + k;
    case CMP_INT4: return 4 + (k + 1) / 2;
    default: return 0;
    }
}

/* binary16 of f, round to nearest even: mr_f32_to_f16 in compress.c. */
static __device__ uint16_t f32_to_f16(float f) {
    uint32_t u = __float_as_uint(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    u &= 0x7fffffffu;
    if (u > 0x7f800000u) return sign | 0x7e00u;
    if (u >= 0x477ff000u) return sign | 0x7c00u;
    if (u < 0x38800000u) {
        float r = __fadd_rn(__uint_as_float(u), 0.5f);
        return sign | (uint16_t)(__float_as_uint(r) - __float_as_uint(0.5f));
    }
    uint32_t odd = (u >> 13) & 1u;
    u += ((uint32_t)(15 - 127) << 23) + 0xfffu + odd;
    return sign | (uint16_t)(u >> 13);
}

/* float32 of binary16 h: mr_f16_to_f32 in runtime/safetensors.c. */
static __device__ float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t em = h & 0x7fffu;
    if (em >= 0x7c00u) return __uint_as_float(sign | 0x7f800000u | (em & 0x3ffu) << 13);
    if (em >= 0x0400u) return __uint_as_float(sign | (em + ((127u - 15u) << 10)) << 13);
    float mag = __fmul_rn((float)em, 0x1p-24f); /* subnormal or zero: exact */
    return sign ? -mag : mag;
}

static __device__ void put_f32(unsigned char *p, float f) {
    uint32_t u = __float_as_uint(f);
    p[0] = (unsigned char)u;
    p[1] = (unsigned char)(u >> 8);
    p[2] = (unsigned char)(u >> 16);
    p[3] = (unsigned char)(u >> 24);
}

static __device__ float get_f32(const unsigned char *p) {
    return __uint_as_float((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                           (uint32_t)p[3] << 24);
}

/* L / A, or 0 for an all-zero or non-finite block, with compress.c's
 * pre-scaling of tiny blocks (A < 2^-100, where L / A would overflow):
 * returns the factor that x is multiplied by before *inv. */
static __device__ __forceinline__ float int_inv(float A, float L, float *inv) {
    float pre = A < 0x1p-100f ? 0x1p100f : 1.0f;
    *inv = A > 0 && A <= 3.4028234663852886e38f ? L / __fmul_rn(A, pre) : 0.0f;
    return pre;
}

/* Round to nearest even and clamp to [-lim, lim]. */
static __device__ __forceinline__ int code(float v, int lim) {
    int q = __float2int_rn(v);
    return q > lim ? lim : q < -lim ? -lim : q;
}

/* ---- compression -------------------------------------------------------- */

static __global__ void bf16_pack_kernel(uint16_t *out, const float *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = mr_cuda_bf16_bits(x[i]);
}

/* One warp per block of B values (int8, int4, fp16). */
static __global__ void block_pack_kernel(int mode, int B, const float *x, size_t n,
                                         unsigned char *out) {
    int lane = threadIdx.x & 31;
    size_t nblk = (n + (size_t)B - 1) / (size_t)B, bb = block_bytes(mode, (size_t)B);
    for (size_t blk = blockIdx.x * (size_t)CMP_WARPS + (threadIdx.x >> 5); blk < nblk;
         blk += (size_t)gridDim.x * CMP_WARPS) {
        const float *xb = x + blk * (size_t)B;
        int k = (int)(n - blk * (size_t)B < (size_t)B ? n - blk * (size_t)B : (size_t)B);
        unsigned char *o = out + blk * bb;
        /* Largest |x| by bit patterns, as the CPU does (equal to the max
         * of fabsf for finite values; a NaN wins). */
        uint32_t m = 0;
        for (int i = lane; i < k; i += 32) m = max(m, __float_as_uint(xb[i]) & 0x7fffffffu);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
        float A = __uint_as_float(m);
        if (mode == CMP_INT8) {
            float scale = A / 127.0f, inv, pre = int_inv(A, 127.0f, &inv);
            if (lane == 0) put_f32(o, scale);
            for (int i = lane; i < k; i += 32)
                o[4 + i] = (unsigned char)(int8_t)code(__fmul_rn(__fmul_rn(xb[i], pre), inv), 127);
        } else if (mode == CMP_INT4) {
            float scale = A / 7.0f, inv, pre = int_inv(A, 7.0f, &inv);
            if (lane == 0) put_f32(o, scale);
            for (int j = lane; 2 * j < k; j += 32) {
                int i = 2 * j;
                int q0 = code(__fmul_rn(__fmul_rn(xb[i], pre), inv), 7);
                int q1 = i + 1 < k ? code(__fmul_rn(__fmul_rn(xb[i + 1], pre), inv), 7) : 0;
                o[4 + j] = (unsigned char)((q0 & 0xf) | ((q1 & 0xf) << 4));
            }
        } else { /* fp16 with a power-of-two scale */
            float scale = 1.0f, inv1 = 1.0f, inv2 = 1.0f;
            if (A > 0 && isfinite(A)) {
                int e;
                frexpf(A, &e);
                scale = ldexpf(1.0f, e - 15);
                int s = 15 - e, s1 = s > 100 ? 100 : s;
                inv1 = ldexpf(1.0f, s1);
                inv2 = ldexpf(1.0f, s - s1);
            }
            if (lane == 0) put_f32(o, scale);
            for (int i = lane; i < k; i += 32) {
                uint16_t h = f32_to_f16(__fmul_rn(__fmul_rn(xb[i], inv1), inv2));
                o[4 + 2 * i] = (unsigned char)h;
                o[5 + 2 * i] = (unsigned char)(h >> 8);
            }
        }
    }
}

/* ---- decompression (add, or write when !add) ---------------------------- */

static __global__ void unpack_add_kernel(int mode, int B, const unsigned char *in, size_t n,
                                         float *acc, int add) {
    size_t bb = block_bytes(mode, (size_t)B);
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float v;
        if (mode == CMP_NONE) {
            v = get_f32(in + 4 * i);
        } else if (mode == CMP_BF16) {
            v = __uint_as_float((uint32_t)(in[2 * i] | in[2 * i + 1] << 8) << 16);
        } else {
            size_t blk = i / (size_t)B, j = i % (size_t)B;
            const unsigned char *p = in + blk * bb;
            float scale = get_f32(p);
            if (mode == CMP_INT8)
                v = __fmul_rn((float)(int8_t)p[4 + j], scale);
            else if (mode == CMP_INT4)
                v = __fmul_rn((float)((int)((unsigned)(p[4 + j / 2] >> (4 * (j & 1))) << 28) >> 28),
                              scale);
            else
                v = __fmul_rn(f16_to_f32((uint16_t)(p[4 + 2 * j] | p[5 + 2 * j] << 8)), scale);
        }
        acc[i] = add ? __fadd_rn(acc[i], v) : v;
    }
}

/* ---- launchers ---------------------------------------------------------- */

static int check_args(mr_cuda_ctx *c, const char *what, int mode, int block) {
    if (mode < 0 || mode >= CMP_COUNT || block < 32 || block > 256 || (block & (block - 1))) {
        mr_cuda_fail(c, __FILE__, __LINE__, "%s: bad mode %d or block %d", what, mode, block);
        return -1;
    }
    return 0;
}

void mr_cuda_compress(mr_backend *b, void *stream, int mode, int block, const float *x, size_t n,
                      void *out) {
    mr_cuda_ctx *c = mr_cuda_ctx_of(b);
    cudaStream_t s = stream ? (cudaStream_t)stream : c->stream;
    if (check_args(c, "compress", mode, block) || !n) return;
    if (mode == CMP_NONE) {
        CUDA_CHECK(c, cudaMemcpyAsync(out, x, n * sizeof(float), cudaMemcpyDeviceToDevice, s));
        return;
    }
    if (mode == CMP_BF16) {
        bf16_pack_kernel<<<mr_cuda_grid(c, n, CMP_THREADS), CMP_THREADS, 0, s>>>(
            (uint16_t *)out, x, n);
    } else {
        size_t nblk = (n + (size_t)block - 1) / (size_t)block;
        block_pack_kernel<<<mr_cuda_grid(c, nblk, CMP_WARPS), CMP_THREADS, 0, s>>>(
            mode, block, x, n, (unsigned char *)out);
    }
    CUDA_CHECK(c, cudaGetLastError());
}

static void unpack(mr_backend *b, void *stream, int mode, int block, const void *in, size_t n,
                   float *out, int add) {
    mr_cuda_ctx *c = mr_cuda_ctx_of(b);
    cudaStream_t s = stream ? (cudaStream_t)stream : c->stream;
    if (check_args(c, add ? "decompress_add" : "decompress", mode, block) || !n) return;
    unpack_add_kernel<<<mr_cuda_grid(c, n, CMP_THREADS), CMP_THREADS, 0, s>>>(
        mode, block, (const unsigned char *)in, n, out, add);
    CUDA_CHECK(c, cudaGetLastError());
}

void mr_cuda_decompress_add(mr_backend *b, void *stream, int mode, int block, const void *in,
                            size_t n, float *acc) {
    unpack(b, stream, mode, block, in, n, acc, 1);
}

void mr_cuda_decompress(mr_backend *b, void *stream, int mode, int block, const void *in,
                        size_t n, float *out) {
    unpack(b, stream, mode, block, in, n, out, 0);
}
