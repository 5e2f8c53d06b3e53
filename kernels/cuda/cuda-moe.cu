/* The MoE router of the CUDA backend: router logits -> top-k expert ids and
 * weights per token, with the semantics of kernels/cpu/cpu-moe.c (read its
 * header for the two modes and for transformers' masked_fill detail).
 *
 * One warp per token.  The lanes compute each expert's choice value into
 * shared memory (softmax probability, or sigmoid + bias with the experts of
 * dropped groups set to 0), then k rounds of a warp arg-max pick the
 * experts: each round takes the largest value not yet chosen, the lowest
 * index among equals.  That is the CPU's order exactly (decreasing value,
 * ties to the lower index), so ids match the CPU whenever the values do.
 * Group scores (sum of a group's two best values) and the kept groups are
 * computed one lane per group in the CPU's order; the final weights by lane
 * 0 in the CPU's order.  Probabilities differ from the CPU's only by the
 * order of the softmax sum (fp32 rounding). */
#include "kernels/cuda/cuda-internal.h"

#include <limits.h>
#include <math.h>

#define ROUTE_MAX_GROUPS 256 /* as kernels/cpu */
#define ROUTE_MAX_WARPS 4
#define ROUTE_SMEM_MAX (48 * 1024)

/* Shared bytes per warp: values (ne floats), group scores, chosen flags,
 * kept-group flags. */
static size_t route_smem_per_warp(int ne) {
    return (size_t)ne * sizeof(float) + ROUTE_MAX_GROUPS * sizeof(float) +
           ((size_t)ne + 3) / 4 * 4 + ROUTE_MAX_GROUPS;
}

static __device__ __forceinline__ float sigmoid_dev(float x) { return 1.0f / (1.0f + expf(-x)); }

static __global__ void route_kernel(int32_t *idx, float *wout, const float *logits, int T, int ne,
                                    int k, int sigmoid_group, int norm, float scaling,
                                    const float *bias, int ng, int topk_group, size_t per_warp) {
    extern __shared__ unsigned char route_smem[];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int t = blockIdx.x * (blockDim.x >> 5) + warp;
    if (t >= T) return; /* whole warps only; no block barrier below */
    float *val = (float *)(route_smem + (size_t)warp * per_warp);
    float *gs = val + ne;
    unsigned char *chosen = (unsigned char *)(gs + ROUTE_MAX_GROUPS);
    unsigned char *kept = chosen + ((size_t)ne + 3) / 4 * 4;
    const float *l = logits + (size_t)t * ne;

    if (!sigmoid_group) {
        float mx = -INFINITY, sum = 0.0f;
        for (int e = lane; e < ne; e += 32) mx = fmaxf(mx, l[e]);
        mx = mr_cuda_warp_max(mx);
        for (int e = lane; e < ne; e += 32) sum += expf(l[e] - mx);
        sum = mr_cuda_warp_sum(sum);
        for (int e = lane; e < ne; e += 32) val[e] = expf(l[e] - mx) / sum;
    } else {
        for (int e = lane; e < ne; e += 32) val[e] = sigmoid_dev(l[e]) + (bias ? bias[e] : 0.0f);
        if (ng > 1 && topk_group < ng) {
            int gsz = ne / ng;
            __syncwarp();
            for (int g = lane; g < ng; g += 32) {
                float b1 = -INFINITY, b2 = -INFINITY;
                for (int e = g * gsz; e < (g + 1) * gsz; e++) {
                    float cv = val[e];
                    if (cv > b1) {
                        b2 = b1;
                        b1 = cv;
                    } else if (cv > b2) {
                        b2 = cv;
                    }
                }
                gs[g] = gsz > 1 ? b1 + b2 : b1;
            }
            __syncwarp();
            for (int g = lane; g < ng; g += 32) {
                int above = 0;
                for (int o = 0; o < ng; o++) above += gs[o] > gs[g] || (gs[o] == gs[g] && o < g);
                kept[g] = above < topk_group;
            }
            __syncwarp();
            /* transformers' masked_fill: dropped groups compete with 0 */
            for (int e = lane; e < ne; e += 32)
                if (!kept[e / gsz]) val[e] = 0.0f;
        }
    }
    for (int e = lane; e < ne; e += 32) chosen[e] = 0;
    __syncwarp();

    int32_t *it = idx + (size_t)t * k;
    float *wt = wout + (size_t)t * k;
    for (int j = 0; j < k; j++) {
        /* This lane's best unchosen expert; its experts come in increasing
         * order, so the strict > keeps the lowest index among equals. */
        float bv = -INFINITY;
        int be = INT_MAX;
        for (int e = lane; e < ne; e += 32)
            if (!chosen[e] && (be == INT_MAX || val[e] > bv)) {
                bv = val[e];
                be = e;
            }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            int oe = __shfl_xor_sync(0xffffffffu, be, o);
            if (oe != INT_MAX && (be == INT_MAX || ov > bv || (ov == bv && oe < be))) {
                bv = ov;
                be = oe;
            }
        }
        be = __shfl_sync(0xffffffffu, be, 0);
        if (lane == 0) {
            it[j] = be;
            chosen[be] = 1;
        }
        __syncwarp();
    }
    if (lane != 0) return;
    float s = 0.0f;
    if (!sigmoid_group) {
        for (int j = 0; j < k; j++) {
            wt[j] = val[it[j]];
            s += wt[j];
        }
        if (norm)
            for (int j = 0; j < k; j++) wt[j] /= s;
    } else {
        /* weights are the scores without the correction bias */
        for (int j = 0; j < k; j++) {
            wt[j] = sigmoid_dev(l[it[j]]);
            s += wt[j];
        }
        if (norm)
            for (int j = 0; j < k; j++) wt[j] /= s + 1e-20f;
    }
    if (scaling != 1.0f)
        for (int j = 0; j < k; j++) wt[j] *= scaling;
}

void mr_cuda_route(mr_backend *b, int32_t *idx, float *weight, const float *logits, int T,
                   const mr_route_params *p) {
    mr_cuda_ctx *c = mr_cuda_ctx_of(b);
    int ne = p->n_experts, k = p->top_k;
    int sig = p->scoring == MR_ROUTE_SIGMOID_GROUP;
    int ng = p->n_group > 1 ? p->n_group : 1;
    if (ne < 1 || k < 1 || k > ne || p->scoring < 0 || p->scoring >= MR_ROUTE_SCORING_COUNT) {
        mr_cuda_fail(c, __FILE__, __LINE__, "route: bad parameters (experts %d, top_k %d, scoring %d)",
                     ne, k, (int)p->scoring);
        return;
    }
    if (sig && (ng > ROUTE_MAX_GROUPS || ne % ng != 0 ||
                (ng > 1 && p->topk_group < ng && p->topk_group * (ne / ng) < k))) {
        mr_cuda_fail(c, __FILE__, __LINE__, "route: bad groups (experts %d, groups %d, topk_group %d, top_k %d)",
                     ne, ng, p->topk_group, k);
        return;
    }
    if (!sig && p->n_group > 1 && p->topk_group < p->n_group) {
        /* Softmax routers with group limits (deepseek_v2) are not handled. */
        mr_cuda_fail(c, __FILE__, __LINE__, "route: softmax scoring with group limits");
        return;
    }
    if (T <= 0) return;
    size_t per = route_smem_per_warp(ne);
    int warps = (int)(ROUTE_SMEM_MAX / per);
    if (warps < 1) {
        mr_cuda_fail(c, __FILE__, __LINE__, "route: %d experts need %zu bytes of shared memory", ne,
                     per);
        return;
    }
    warps = warps > ROUTE_MAX_WARPS ? ROUTE_MAX_WARPS : warps;
    unsigned blocks = (unsigned)((T + warps - 1) / warps);
    route_kernel<<<blocks, 32 * warps, per * (size_t)warps, c->stream>>>(
        idx, weight, logits, T, ne, k, sig, p->norm_topk_prob, p->routed_scaling,
        sig ? p->bias : NULL, sig ? ng : 1, p->topk_group, per);
    CUDA_CHECK(c, cudaGetLastError());
}
