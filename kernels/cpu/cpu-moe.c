/* The MoE router of the CPU backend: router logits -> top-k expert ids and
 * their weights, per token, as transformers computes them.
 *
 *  MR_ROUTE_SOFTMAX (mixtral, qwen2_moe, qwen3_moe): probabilities are the
 *  softmax over all experts; the k largest are chosen and, with
 *  norm_topk_prob, divided by their sum.
 *
 *  MR_ROUTE_SIGMOID_GROUP (deepseek_v3): scores = sigmoid(logits); experts
 *  are chosen by scores + bias (e_score_correction_bias), first keeping the
 *  topk_group groups whose two best choice values sum highest; the weights
 *  are the scores without bias, divided by (sum + 1e-20) with
 *  norm_topk_prob.  Experts of dropped groups take the value 0, not -inf,
 *  exactly as transformers' masked_fill does: they can still be picked when
 *  a kept expert's score + bias is negative (DeepSeek's original code
 *  differs there; we follow the reference the tests hold us to).
 *
 * Both then multiply by routed_scaling.  Ties go to the lower index, so
 * results do not depend on the thread count.  Ids come out ordered by
 * decreasing choice value.  Nothing is allocated: the top-k list is kept
 * sorted in the output rows themselves. */
#include "kernels/cpu/cpu-internal.h"

#include <assert.h>
#include <math.h>

#define MR_CPU_ROUTE_MAX_GROUPS 256

/* Insert expert e with value v into the list idx/val of n entries sorted by
 * decreasing value, capacity k; returns the new length.  Experts arrive in
 * increasing index order, so the strict comparison keeps earlier experts
 * ahead on ties. */
static int topk_push(int32_t *idx, float *val, int n, int k, int e, float v) {
    if (n == k && !(v > val[k - 1])) return n;
    int i = n < k ? n : k - 1;
    while (i > 0 && v > val[i - 1]) {
        idx[i] = idx[i - 1];
        val[i] = val[i - 1];
        i--;
    }
    idx[i] = e;
    val[i] = v;
    return n < k ? n + 1 : n;
}

static float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

static void route_softmax(int32_t *idx, float *w, const float *l,
                          const mr_route_params *p) {
    int ne = p->n_experts, k = p->top_k, n = 0;
    float mx = l[0], sum = 0.0f;
    for (int e = 1; e < ne; e++)
        if (l[e] > mx) mx = l[e];
    for (int e = 0; e < ne; e++) sum += expf(l[e] - mx);
    for (int e = 0; e < ne; e++) n = topk_push(idx, w, n, k, e, expf(l[e] - mx) / sum);
    if (p->norm_topk_prob) {
        float s = 0.0f;
        for (int j = 0; j < k; j++) s += w[j];
        for (int j = 0; j < k; j++) w[j] /= s;
    }
}

static void route_sigmoid_group(int32_t *idx, float *w, const float *l,
                                const mr_route_params *p) {
    int ne = p->n_experts, k = p->top_k, n = 0;
    int ng = p->n_group > 1 ? p->n_group : 1, gsz = ne / ng;
    const float *bias = p->bias;
    unsigned char kept[MR_CPU_ROUTE_MAX_GROUPS];
    for (int g = 0; g < ng; g++) kept[g] = 1;
    if (ng > 1 && p->topk_group < ng) {
        /* Group score: sum of the group's two best choice values. */
        float gs[MR_CPU_ROUTE_MAX_GROUPS];
        for (int g = 0; g < ng; g++) {
            float b1 = -INFINITY, b2 = -INFINITY;
            for (int e = g * gsz; e < (g + 1) * gsz; e++) {
                float c = sigmoidf(l[e]) + (bias ? bias[e] : 0.0f);
                if (c > b1) { b2 = b1; b1 = c; }
                else if (c > b2) b2 = c;
            }
            gs[g] = gsz > 1 ? b1 + b2 : b1;
        }
        /* Keep a group if fewer than topk_group groups rank above it. */
        for (int g = 0; g < ng; g++) {
            int above = 0;
            for (int o = 0; o < ng; o++)
                above += gs[o] > gs[g] || (gs[o] == gs[g] && o < g);
            kept[g] = above < p->topk_group;
        }
    }
    /* transformers' masked_fill: experts of dropped groups compete with 0. */
    for (int e = 0; e < ne; e++)
        n = topk_push(idx, w, n, k, e, kept[e / gsz] ? sigmoidf(l[e]) + (bias ? bias[e] : 0.0f) : 0.0f);
    /* Weights are the scores without the correction bias. */
    float s = 0.0f;
    for (int j = 0; j < k; j++) {
        w[j] = sigmoidf(l[idx[j]]);
        s += w[j];
    }
    if (p->norm_topk_prob)
        for (int j = 0; j < k; j++) w[j] /= s + 1e-20f;
}

void mr_cpu_route(mr_backend *b, int32_t *idx, float *weight, const float *logits,
                  int T, const mr_route_params *p) {
    int ne = p->n_experts, k = p->top_k;
    assert(ne >= 1 && k >= 1 && k <= ne);
    assert(p->scoring >= 0 && p->scoring < MR_ROUTE_SCORING_COUNT);
    if (p->scoring == MR_ROUTE_SIGMOID_GROUP) {
        int ng = p->n_group > 1 ? p->n_group : 1;
        assert(ng <= MR_CPU_ROUTE_MAX_GROUPS && ne % ng == 0);
        assert(ng == 1 || p->topk_group >= ng || p->topk_group * (ne / ng) >= k);
    } else {
        /* Softmax routers with group limits (deepseek_v2) are not handled. */
        assert(p->n_group <= 1 || p->topk_group >= p->n_group);
    }
#pragma omp parallel for num_threads(b->threads) schedule(static) \
    if ((size_t)T * ne >= MR_CPU_PAR_MIN / 8 && T > 1)
    for (int t = 0; t < T; t++) {
        int32_t *it = idx + (size_t)t * k;
        float *wt = weight + (size_t)t * k;
        const float *lt = logits + (size_t)t * ne;
        if (p->scoring == MR_ROUTE_SIGMOID_GROUP)
            route_sigmoid_group(it, wt, lt, p);
        else
            route_softmax(it, wt, lt, p);
        if (p->routed_scaling != 1.0f)
            for (int j = 0; j < k; j++) wt[j] *= p->routed_scaling;
    }
}
