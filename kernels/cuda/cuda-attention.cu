/* Position-dependent kernels of the CUDA backend: rotary embedding and
 * causal attention over the KV cache.
 *
 * rope: one thread per (token, rotary pair) computes cos/sin once (the
 * angle is the fp32 product pos * inv_freq, as on the CPU) and rotates that
 * pair in every head; consecutive threads touch consecutive pairs.
 *
 * attention: one block of ATT_THREADS per (token, query head), the online
 * softmax of flash attention over tiles of ATT_TILE cache positions:
 *   1. each warp scores a share of the tile's positions, lanes striding
 *      over dqk (coalesced key reads) and a shuffle sum; scores to shared;
 *   2. the tile's maximum updates the running maximum m; the sum l and the
 *      output accumulators are rescaled by exp(m_old - m_new) once a tile;
 *   3. threads own output columns (dv up to ATT_THREADS * ATT_DV_REGS) and
 *      accumulate exp(s - m) * v over the tile's positions (coalesced
 *      value reads).
 * q sits in shared memory (dqk floats).  Softmax is fp32 with max
 * subtraction; the result equals the CPU's up to fp32 rounding (a different
 * order of sums).  Query heads of one KV group read the same keys and
 * values, from L2 after the first block.  Not done yet: one block per KV
 * group for decode, and splitting long contexts over several blocks
 * (flash-decoding) when ntok * nh blocks do not fill the GPU. */
#include "kernels/cuda/cuda-internal.h"

#include <math.h>

#define ATT_THREADS 128
#define ATT_WARPS (ATT_THREADS / 32)
#define ATT_TILE 64   /* positions scored at once; <= ATT_THREADS */
#define ATT_DV_REGS 4 /* output columns per thread: dv <= 512 */
#define ATT_MAX_DQK 8192  /* q (32 KB) + scores in the default 48 KB of shared memory */
#define ROPE_THREADS 128

/* ---- rotary embedding --------------------------------------------------- */

static __global__ void rope_kernel(float *x, int ntok, int nheads, int row_stride,
                                   int head_stride, int rot_off, int npair, const int32_t *pos,
                                   const float *inv_freq, float mscale, int interleaved) {
    size_t n = (size_t)ntok * (size_t)npair;
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < n;
         k += (size_t)gridDim.x * blockDim.x) {
        int t = (int)(k / (size_t)npair), i = (int)(k % (size_t)npair);
        float th = (float)pos[t] * inv_freq[i];
        float s, co;
        sincosf(th, &s, &co);
        co *= mscale;
        s *= mscale;
        float *r = x + (size_t)t * row_stride + rot_off;
        /* Heads in order: with head_stride 0 the same values turn again,
         * as on the CPU. */
        for (int h = 0; h < nheads; h++) {
            float *p = r + (size_t)h * head_stride;
            float *p0 = interleaved ? p + 2 * i : p + i;
            float *p1 = interleaved ? p0 + 1 : p0 + npair;
            float a = *p0, bb = *p1;
            *p0 = a * co - bb * s;
            *p1 = bb * co + a * s;
        }
    }
}

void mr_cuda_rope(mr_backend *b, float *x, int ntok, int nheads, int row_stride, int head_stride,
                  int rot_off, int rot_dim, const int32_t *pos, const float *inv_freq,
                  float mscale, int interleaved) {
    mr_cuda_ctx *c = mr_cuda_ctx_of(b);
    if (rot_dim % 2 != 0 || rot_dim < 0) {
        mr_cuda_fail(c, __FILE__, __LINE__, "rope: rot_dim %d is not even", rot_dim);
        return;
    }
    int npair = rot_dim / 2;
    size_t n = (size_t)(ntok > 0 ? ntok : 0) * (size_t)npair;
    if (!n || nheads <= 0) return;
    rope_kernel<<<mr_cuda_grid(c, n, ROPE_THREADS), ROPE_THREADS, 0, c->stream>>>(
        x, ntok, nheads, row_stride, head_stride, rot_off, npair, pos, inv_freq, mscale,
        interleaved);
    CUDA_CHECK(c, cudaGetLastError());
}

/* ---- attention ---------------------------------------------------------- */

static __global__ void __launch_bounds__(ATT_THREADS)
attention_kernel(float *out, const float *q, const float *k, const float *v, const int32_t *slot,
                 const int32_t *pos, int nh, int nkv, int dqk, int dv, size_t slot_stride_k,
                 size_t slot_stride_v, float scale) {
    extern __shared__ float qs[]; /* dqk */
    __shared__ float sc[ATT_TILE];
    int th = blockIdx.x, t = th / nh, h = th % nh, g = h / (nh / nkv);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const float *qh = q + (size_t)th * dqk;
    for (int i = threadIdx.x; i < dqk; i += ATT_THREADS) qs[i] = qh[i];
    int npos = pos[t] + 1;
    size_t kstep = (size_t)nkv * dqk, vstep = (size_t)nkv * dv;
    const float *kb = k + (size_t)slot[t] * slot_stride_k + (size_t)g * dqk;
    const float *vb = v + (size_t)slot[t] * slot_stride_v + (size_t)g * dv;
    float acc[ATT_DV_REGS];
#pragma unroll
    for (int u = 0; u < ATT_DV_REGS; u++) acc[u] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    __syncthreads();

    for (int p0 = 0; p0 < npos; p0 += ATT_TILE) {
        int n = npos - p0 < ATT_TILE ? npos - p0 : ATT_TILE;
        /* 1. scores: a warp per position */
        for (int j = warp; j < n; j += ATT_WARPS) {
            const float *kr = kb + (size_t)(p0 + j) * kstep;
            float d = 0.0f;
            for (int i = lane; i < dqk; i += 32) d += qs[i] * kr[i];
            d = mr_cuda_warp_sum(d);
            if (lane == 0) sc[j] = d * scale;
        }
        __syncthreads();
        /* 2. running maximum (every thread reads the n scores: broadcasts) */
        float cmax = -INFINITY;
        for (int j = 0; j < n; j++) cmax = fmaxf(cmax, sc[j]);
        float mnew = fmaxf(m, cmax);
        /* Before the first tile l and acc are 0; skip exp(-inf - -inf). */
        float corr = m == -INFINITY ? 0.0f : expf(m - mnew);
        __syncthreads();
        if (threadIdx.x < n) sc[threadIdx.x] = expf(sc[threadIdx.x] - mnew);
        __syncthreads();
        m = mnew;
        l *= corr;
#pragma unroll
        for (int u = 0; u < ATT_DV_REGS; u++) acc[u] *= corr;
        /* 3. values: a thread per output column */
#pragma unroll 4
        for (int j = 0; j < n; j++) {
            float e = sc[j];
            const float *vr = vb + (size_t)(p0 + j) * vstep;
            l += e;
#pragma unroll
            for (int u = 0; u < ATT_DV_REGS; u++) {
                int d = threadIdx.x + u * ATT_THREADS;
                if (d < dv) acc[u] += e * vr[d];
            }
        }
        __syncthreads(); /* sc is rewritten by the next tile */
    }
    float inv = 1.0f / l;
    float *o = out + (size_t)th * dv;
#pragma unroll
    for (int u = 0; u < ATT_DV_REGS; u++) {
        int d = threadIdx.x + u * ATT_THREADS;
        if (d < dv) o[d] = acc[u] * inv;
    }
}

void mr_cuda_attention(mr_backend *b, float *out, const float *q, const float *k, const float *v,
                       const int32_t *slot, const int32_t *pos, int ntok, int nh, int nkv,
                       int dqk, int dv, size_t slot_stride_k, size_t slot_stride_v,
                       float scale) {
    mr_cuda_ctx *c = mr_cuda_ctx_of(b);
    if (ntok <= 0) return;
    if (nh < 1 || nkv < 1 || nh % nkv != 0 || dqk < 1 || dv < 1) {
        mr_cuda_fail(c, __FILE__, __LINE__, "attention: bad heads nh=%d nkv=%d dqk=%d dv=%d", nh,
                     nkv, dqk, dv);
        return;
    }
    if (dv > ATT_THREADS * ATT_DV_REGS || dqk > ATT_MAX_DQK) {
        mr_cuda_fail(c, __FILE__, __LINE__,
                     "attention: dqk=%d dv=%d not supported (dqk <= %d, dv <= %d)", dqk, dv,
                     ATT_MAX_DQK, ATT_THREADS * ATT_DV_REGS);
        return;
    }
    size_t blocks = (size_t)ntok * (size_t)nh;
    if (blocks > 0x7fffffffu) {
        mr_cuda_fail(c, __FILE__, __LINE__, "attention: %zu (token, head) pairs", blocks);
        return;
    }
    attention_kernel<<<(unsigned)blocks, ATT_THREADS, (size_t)dqk * sizeof(float), c->stream>>>(
        out, q, k, v, slot, pos, nh, nkv, dqk, dv, slot_stride_k, slot_stride_v, scale);
    CUDA_CHECK(c, cudaGetLastError());
}
