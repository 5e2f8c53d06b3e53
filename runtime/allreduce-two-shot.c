/* Two-shot all-reduce: all-to-all of shards, local reduce, all-gather.
 *
 *   p = 3 ranks, vector cut into shards A | B | C (block-aligned)
 *
 *   1. pack        rank r quantises each shard it sends, once:
 *                  r0: A0 [B0] [C0]   r1: [A1] B1 [C1]   r2: [A2] [B2] C2
 *   2. all-to-all  shard j of every rank goes to rank j:
 *                  r0 <- A0 A1 A2     r1 <- B0 B1 B2     r2 <- C0 C1 C2
 *   3. reduce      in rank order, float32 (own shard unquantised):
 *                  r0: A = A0+A1+A2   r1: B = ...        r2: C = ...
 *   4. all-gather  each owner quantises its reduced shard once and sends it
 *                  to everyone (an all-to-all from one buffer, so all
 *                  transfers run at once); every rank (the owner too)
 *                  decodes all of them:
 *                  r0, r1, r2 <- [A] [B] [C]
 *
 * Bytes sent by a rank: 2 (p-1)/p of the (packed) vector, in two rounds.
 * With compression none nothing is packed and the sum order is
 * x_0 + x_1 + ... + x_{p-1}, so the result is bitwise that sum. */
#include <string.h>

#include "runtime/allreduce-internal.h"

mr_status ar_two_shot(mr_allreduce *ar, mr_comm *c, mr_compression comp, const float *in, float *out, size_t n) {
    int p = c->size, me = c->rank;
    if (p == 1) {
        ar_copy(ar, out, in, n * sizeof(float));
        return MR_OK;
    }
    size_t unit = ar_unit(ar, comp);
    int B = ar->o.block;
    int *sc = ar->counts, *sd = sc + p, *rc = sd + p, *rd = rc + p;
    size_t b_me = ar_shard_begin(n, p, me, unit), len_me = ar_shard_begin(n, p, me + 1, unit) - b_me;
    size_t max_len = 0, total = 0;
    for (int j = 0; j < p; j++) {
        size_t b = ar_shard_begin(n, p, j, unit), e = ar_shard_begin(n, p, j + 1, unit);
        if (e - b > max_len) max_len = e - b;
        sd[j] = (int)total;
        sc[j] = (int)mr_compress_bytes(comp, e - b, B);
        total += (size_t)sc[j];
    }
    size_t my_bytes = mr_compress_bytes(comp, len_me, B), max_bytes = mr_compress_bytes(comp, max_len, B);
    MR_CHECK(ar_reserve(ar, &ar->send, total));
    MR_CHECK(ar_reserve(ar, &ar->recv, (size_t)p * max_bytes));
    MR_CHECK(ar_reserve(ar, &ar->acc, max_len * sizeof(float) > max_bytes ? max_len * sizeof(float) : max_bytes));

    /* 1-2: pack every shard (own one too for none: the sum runs in rank
     * order through the received copies) and exchange */
    const void *sendp = in;
    if (comp != MR_COMPRESS_NONE) {
        char *s = ar->send.p;
        for (int j = 0; j < p; j++) {
            size_t b = ar_shard_begin(n, p, j, unit), e = ar_shard_begin(n, p, j + 1, unit);
            if (j != me) ar_compress(ar, comp, in + b, e - b, s + sd[j]);
        }
        sc[me] = 0;
        sendp = s;
    }
    for (int j = 0; j < p; j++) {
        rc[j] = comp != MR_COMPRESS_NONE && j == me ? 0 : (int)my_bytes;
        rd[j] = (int)((size_t)j * my_bytes);
    }
    MR_CHECK(c->ops->alltoallv(c, sendp, sc, sd, ar->recv.p, rc, rd, 1));

    /* 3: reduce in rank order */
    float *acc = ar->acc.p;
    const char *r = ar->recv.p;
    for (int j = 0; j < p; j++) {
        const void *src = r + rd[j];
        if (comp == MR_COMPRESS_NONE || j == me) {
            const float *f = comp == MR_COMPRESS_NONE ? src : in + b_me;
            if (j == 0) ar_copy(ar, acc, f, len_me * sizeof(float));
            else ar_add(ar, acc, f, len_me);
        } else if (j == 0) {
            ar_decompress(ar, comp, src, len_me, acc);
        } else {
            ar_decompress_add(ar, comp, src, len_me, acc);
        }
    }

    /* 4: quantise the reduced shard once and send it to every rank (an
     * all-to-all with one source buffer: every transfer in flight at once,
     * no padding); every rank -- the owner too -- decodes every shard, so
     * all hold the same bits */
    char *mine = ar->send.p;
    ar_compress(ar, comp, acc, len_me, mine);
    size_t off = 0;
    for (int j = 0; j < p; j++) {
        size_t b = ar_shard_begin(n, p, j, unit), e = ar_shard_begin(n, p, j + 1, unit);
        sc[j] = (int)my_bytes;
        sd[j] = 0;
        rc[j] = (int)mr_compress_bytes(comp, e - b, B);
        rd[j] = (int)off;
        off += (size_t)rc[j];
    }
    MR_CHECK(ar_reserve(ar, &ar->recv, off));
    MR_CHECK(c->ops->alltoallv(c, mine, sc, sd, ar->recv.p, rc, rd, 1));
    for (int j = 0; j < p; j++) {
        size_t b = ar_shard_begin(n, p, j, unit), e = ar_shard_begin(n, p, j + 1, unit);
        ar_decompress(ar, comp, (const char *)ar->recv.p + rd[j], e - b, out + b);
    }
    return MR_OK;
}
