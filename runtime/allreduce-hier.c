/* Hierarchical all-reduce: inside each node, then across nodes.
 *
 *   2 nodes x 2 ranks (local ranks l = 0, 1); vector cut into node shards
 *   S0 | S1 (block-aligned), shard l belongs to local rank l.
 *
 *          node 0                node 1
 *        a0     a1             b0     b1          (ranks' inputs)
 *   1. reduce-scatter inside the node, float32, local-rank order:
 *        a0[S0]+a1[S0]  a0[S1]+a1[S1]   b0[S0]+b1[S0]  b0[S1]+b1[S1]
 *   2. across nodes, among ranks of equal l (the `cross` group): a
 *      two-shot all-reduce of shard l -- the only traffic between nodes,
 *      and the only stage that compresses (the node partial sum is
 *      quantised once, the result once):
 *        S0 = (a0+a1)[S0] + (b0+b1)[S0] on a0 and b0;  S1 likewise on a1, b1
 *   3. all-gather inside the node, float32:
 *        every rank <- S0 | S1
 *
 * Each rank sends 2 (q-1)/q of the vector inside its node and 2 (m-1)/m of
 * a 1/q shard across nodes (q ranks a node, m nodes): the slow links carry
 * 1/q of what a flat ring puts on them.  Exact sum order: per node in
 * local-rank order, then nodes in order. */
#include <string.h>

#include "runtime/allreduce-internal.h"

mr_status ar_hier(mr_allreduce *ar, mr_compression comp, const float *in, float *out, size_t n) {
    mr_comm *node = ar->node;
    int q = node->size, l = node->rank;
    size_t unit = ar_unit(ar, comp);
    int *sc = ar->counts, *sd = sc + q, *rc = sd + q, *rd = rc + q;
    size_t b_l = ar_shard_begin(n, q, l, unit), len_l = ar_shard_begin(n, q, l + 1, unit) - b_l, max_len = 0;
    for (int j = 0; j < q; j++) {
        size_t b = ar_shard_begin(n, q, j, unit), e = ar_shard_begin(n, q, j + 1, unit);
        if (e - b > max_len) max_len = e - b;
        sc[j] = (int)((e - b) * sizeof(float));
        sd[j] = (int)(b * sizeof(float));
        rc[j] = (int)(len_l * sizeof(float));
        rd[j] = (int)((size_t)j * len_l * sizeof(float));
    }
    /* tmp: the q received copies of shard l, reduced into its first row */
    MR_CHECK(ar_reserve(ar, &ar->tmp, (size_t)q * (max_len > len_l ? max_len : len_l) * sizeof(float)));
    float *part = ar->tmp.p;
    if (q > 1) MR_CHECK(node->ops->alltoallv(node, in, sc, sd, part, rc, rd, 1));
    else ar_copy(ar, part, in, n * sizeof(float));
    for (int j = 1; j < q; j++) ar_add(ar, part, part + (size_t)j * len_l, len_l);

    /* across nodes (uses send, recv, acc -- not tmp) */
    MR_CHECK(ar_two_shot(ar, ar->cross, comp, part, part, len_l));
    if (q == 1) {
        ar_copy(ar, out, part, n * sizeof(float));
        return MR_OK;
    }

    /* all-gather inside the node, padded to the longest shard */
    if (max_len > len_l) ar_zero(ar, part + len_l, (max_len - len_l) * sizeof(float));
    MR_CHECK(ar_reserve(ar, &ar->recv, (size_t)q * max_len * sizeof(float)));
    MR_CHECK(node->ops->allgather(node, part, ar->recv.p, max_len * sizeof(float)));
    const float *g = ar->recv.p;
    for (int j = 0; j < q; j++) {
        size_t b = ar_shard_begin(n, q, j, unit), e = ar_shard_begin(n, q, j + 1, unit);
        ar_copy(ar, out + b, g + (size_t)j * max_len, (e - b) * sizeof(float));
    }
    return MR_OK;
}
