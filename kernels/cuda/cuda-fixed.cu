/* The deterministic mode's product on the GPU (backend.h, matmul_fixed):
 * y(M,N) = x(M,K) . w(N,K)^T (+ bias) with every element summed in the
 * order kernels/cpu/cpu-gemm-small.c documents, so the result has the CPU
 * backend's bits whatever M, N or the launch shape:
 *   - K in blocks of kc columns; in a block, lane l (of 8) chains
 *     a_l = fmaf(x[k], w[k], a_l) over k = l, l+8, ... from +0, and a lane
 *     past the block's last partial vector does one fmaf(0, 0, a_l) (the
 *     CPU's zero padding);
 *   - the block's sum is ((a0+a4)+(a2+a6))+((a1+a5)+(a3+a7));
 *   - element = ((0 + bias) + L_0) + L_1 + ..., or with block_stride each
 *     block's 0 + L_i on its own, at y + i block_stride.
 * Eight threads compute one element, thread l owning lane l: the three
 * xor shuffles (4, 2, 1) add exactly that tree (float addition is
 * commutative, so both partners get the same bits).  fmaf is the IEEE
 * fused multiply-add on both sides; every other operation is a separate
 * __fadd_rn, so nvcc's contraction cannot change a rounding.  bf16 weights:
 * x is rounded to bf16 on load and w widened, as cpu_matmul_fixed does.
 *
 * It is a correctness mode: no tensor cores, no tiling beyond the warp
 * (x rows come from L1/L2 for the groups of a warp that share them). */
#include "kernels/cuda/cuda-internal.h"

#define FIX_LANES 8
#define FIX_THREADS 128 /* 16 elements per block */
#define FIX_MAX_KC 8192 /* as the CPU */

static __device__ __forceinline__ float fix_x(const float *x, size_t i, int bf16) {
    float v = x[i];
    return bf16 ? __uint_as_float((uint32_t)mr_cuda_bf16_bits(v) << 16) : v;
}

static __global__ void fixed_kernel(float *y, const float *x, const void *w, int bf16, const float *bias, int M,
                                    int N, int K, int kc, size_t bstride) {
    int l = threadIdx.x % FIX_LANES;
    size_t e = (size_t)blockIdx.x * (FIX_THREADS / FIX_LANES) + threadIdx.x / FIX_LANES;
    bool live = e < (size_t)M * (size_t)N; /* dead groups still take part in the shuffles */
    size_t m = live ? e / (size_t)N : 0, n = live ? e % (size_t)N : 0;
    const float *xr = x + m * (size_t)K;
    const float *wf = (const float *)w + n * (size_t)K;
    const uint16_t *wh = (const uint16_t *)w + n * (size_t)K;
    float acc = bias && live ? __fadd_rn(0.0f, bias[n]) : 0.0f;
    for (int k0 = 0, i = 0; k0 < K; k0 += kc, i++) {
        int kb = K - k0 < kc ? K - k0 : kc;
        float a = 0.0f;
        for (int k = l; live && k < kb; k += FIX_LANES) {
            size_t c = (size_t)k0 + (size_t)k;
            float wv = bf16 ? __uint_as_float((uint32_t)wh[c] << 16) : wf[c];
            a = fmaf(fix_x(xr, c, bf16), wv, a);
        }
        if (kb % FIX_LANES && l >= kb % FIX_LANES) a = fmaf(0.0f, 0.0f, a);
        a = __fadd_rn(a, __shfl_xor_sync(0xffffffffu, a, 4));
        a = __fadd_rn(a, __shfl_xor_sync(0xffffffffu, a, 2));
        a = __fadd_rn(a, __shfl_xor_sync(0xffffffffu, a, 1));
        if (bstride) {
            if (live && l == 0) y[(size_t)i * bstride + e] = __fadd_rn(0.0f, a);
        } else {
            acc = __fadd_rn(acc, a);
        }
    }
    if (!bstride && live && l == 0) y[e] = acc;
}

void mr_cuda_matmul_fixed(mr_backend *b, float *y, const float *x, const void *w, int w_bf16, const float *bias,
                          int M, int N, int K, int kc, size_t block_stride) {
    mr_cuda_ctx *c = mr_cuda_ctx_of(b);
    if (M < 1 || N < 1 || K < 1 || kc < 1 || kc > FIX_MAX_KC || (block_stride && bias)) {
        mr_cuda_fail(c, __FILE__, __LINE__, "matmul_fixed: bad call M=%d N=%d K=%d kc=%d (bias with block_stride?)",
                     M, N, K, kc);
        return;
    }
    size_t groups = (size_t)M * (size_t)N, per = FIX_THREADS / FIX_LANES;
    size_t blocks = (groups + per - 1) / per;
    if (blocks > 0x7fffffffu) {
        mr_cuda_fail(c, __FILE__, __LINE__, "matmul_fixed: %d x %d outputs", M, N);
        return;
    }
    fixed_kernel<<<(unsigned)blocks, FIX_THREADS, 0, c->stream>>>(y, x, w, w_bf16, bias, M, N, K, kc, block_stride);
    CUDA_CHECK(c, cudaGetLastError());
}
