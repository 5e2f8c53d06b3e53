/* Ring all-reduce: reduce-scatter around the ring, then all-gather.
 *
 *   p = 3, shards A | B | C; every step each rank sends to r+1 and
 *   receives from r-1 (one sendrecv).
 *
 *   exact (compression none): partial sums travel
 *     reduce-scatter  step 0: r1 -> r2: A1      r2 -> r0: B2      r0 -> r1: C0
 *                     step 1: r2 -> r0: A1+A2   r0 -> r1: B2+B0   r1 -> r2: C0+C1
 *                     now r0 holds A = (A1+A2)+A0, r1 B, r2 C
 *     all-gather      step 0: r0 -> r1: A       r1 -> r2: B       r2 -> r0: C
 *                     step 1: r1 -> r2: A       r2 -> r0: B       r0 -> r1: C
 *   So shard j is summed x_{j+1} + x_{j+2} + ... + x_j (mod p), left to
 *   right: 2 (p-1) steps, each rank sends 2 (p-1)/p of the vector.
 *
 *   compressed: a partial sum would have to be re-quantised at every hop,
 *   so instead each rank quantises its own shards once and the ring carries
 *   them unreduced, nearest destination first; a rank takes the head of
 *   what it receives and forwards the rest:
 *     step 0: r0 -> r1: [B0][C0]   r1 -> r2: [C1][A1]   r2 -> r0: [A2][B2]
 *     step 1: r0 -> r1: [B2]       r1 -> r2: [C0]       r2 -> r0: [A1]
 *   each owner adds what it takes to its own float32 shard, quantises the
 *   result once, and the all-gather forwards the packed results unchanged.
 *   Reduce-scatter bytes: (p-1)/2 packed vectors a rank (two-shot's
 *   (p-1)/p is less; auto prefers two-shot when compressing). */
#include <string.h>

#include "runtime/allreduce-internal.h"

static inline int mod(int a, int p) { return ((a % p) + p) % p; }

static mr_status ring_exact(mr_allreduce *ar, mr_comm *c, const float *in, float *out, size_t n) {
    int p = c->size, me = c->rank, next = mod(me + 1, p), prev = mod(me - 1, p);
    ar_copy(ar, out, in, n * sizeof(float));
    size_t max_len = 0;
    for (int j = 0; j < p; j++) {
        size_t len = ar_shard_begin(n, p, j + 1, 1) - ar_shard_begin(n, p, j, 1);
        if (len > max_len) max_len = len;
    }
    MR_CHECK(ar_reserve(ar, &ar->tmp, max_len * sizeof(float)));
    float *tmp = ar->tmp.p;
    for (int s = 0; s < p - 1; s++) {
        int sj = mod(me - 1 - s, p), rj = mod(me - 2 - s, p);
        size_t sb = ar_shard_begin(n, p, sj, 1), se = ar_shard_begin(n, p, sj + 1, 1);
        size_t rb = ar_shard_begin(n, p, rj, 1), re = ar_shard_begin(n, p, rj + 1, 1);
        MR_CHECK(c->ops->sendrecv(c, out + sb, (se - sb) * sizeof(float), next, tmp, (re - rb) * sizeof(float), prev,
                                  MR_AR_TAG));
        ar_add(ar, out + rb, tmp, re - rb);
    }
    for (int s = 0; s < p - 1; s++) {
        int sj = mod(me - s, p), rj = mod(me - 1 - s, p);
        size_t sb = ar_shard_begin(n, p, sj, 1), se = ar_shard_begin(n, p, sj + 1, 1);
        size_t rb = ar_shard_begin(n, p, rj, 1), re = ar_shard_begin(n, p, rj + 1, 1);
        MR_CHECK(c->ops->sendrecv(c, out + sb, (se - sb) * sizeof(float), next, out + rb, (re - rb) * sizeof(float),
                                  prev, MR_AR_TAG));
    }
    return MR_OK;
}

static mr_status ring_packed(mr_allreduce *ar, mr_comm *c, mr_compression comp, const float *in, float *out,
                             size_t n) {
    int p = c->size, me = c->rank, next = mod(me + 1, p), prev = mod(me - 1, p), B = ar->o.block;
    size_t unit = (size_t)B;
    /* packed bytes of shard j: ar->counts[j]; offsets in shard order: counts[p + j] */
    int *cb = ar->counts, *off = cb + p;
    size_t total = 0;
    for (int j = 0; j < p; j++) {
        size_t b = ar_shard_begin(n, p, j, unit), e = ar_shard_begin(n, p, j + 1, unit);
        cb[j] = (int)mr_compress_bytes(comp, e - b, B);
        off[j] = (int)total;
        total += (size_t)cb[j];
    }
    MR_CHECK(ar_reserve(ar, &ar->send, total));
    MR_CHECK(ar_reserve(ar, &ar->recv, total));
    MR_CHECK(ar_reserve(ar, &ar->tmp, total));
    size_t b_me = ar_shard_begin(n, p, me, unit), len_me = ar_shard_begin(n, p, me + 1, unit) - b_me;
    MR_CHECK(ar_reserve(ar, &ar->acc, len_me * sizeof(float)));

    /* own shards packed nearest destination first */
    char *cur = ar->send.p;
    size_t cur_bytes = 0;
    for (int d = 1; d < p; d++) {
        int j = mod(me + d, p);
        size_t b = ar_shard_begin(n, p, j, unit), e = ar_shard_begin(n, p, j + 1, unit);
        ar_compress(ar, comp, in + b, e - b, cur + cur_bytes);
        cur_bytes += (size_t)cb[j];
    }
    float *acc = ar->acc.p;
    ar_copy(ar, acc, in + b_me, len_me * sizeof(float));

    /* reduce-scatter: at step s the bundle received comes from origin
     * me-1-s and holds its shards for me, me+1, ..., origin-1 */
    char *rbuf[2] = {ar->recv.p, ar->tmp.p};
    for (int s = 0; s < p - 1; s++) {
        size_t in_bytes = 0;
        for (int d = 0; d <= p - 2 - s; d++) in_bytes += (size_t)cb[mod(me + d, p)];
        char *r = rbuf[s & 1];
        MR_CHECK(c->ops->sendrecv(c, cur, cur_bytes, next, r, in_bytes, prev, MR_AR_TAG));
        ar_decompress_add(ar, comp, r, len_me, acc);
        cur = r + cb[me];
        cur_bytes = in_bytes - (size_t)cb[me];
    }

    /* all-gather of the packed results, in shard order in ar->send */
    char *all = ar->send.p;
    ar_compress(ar, comp, acc, len_me, all + off[me]);
    for (int s = 0; s < p - 1; s++) {
        int sj = mod(me - s, p), rj = mod(me - 1 - s, p);
        MR_CHECK(c->ops->sendrecv(c, all + off[sj], (size_t)cb[sj], next, all + off[rj], (size_t)cb[rj], prev,
                                  MR_AR_TAG));
    }
    for (int j = 0; j < p; j++) {
        size_t b = ar_shard_begin(n, p, j, unit), e = ar_shard_begin(n, p, j + 1, unit);
        ar_decompress(ar, comp, all + off[j], e - b, out + b);
    }
    return MR_OK;
}

mr_status ar_ring(mr_allreduce *ar, mr_comm *c, mr_compression comp, const float *in, float *out, size_t n) {
    if (c->size == 1) {
        ar_copy(ar, out, in, n * sizeof(float));
        return MR_OK;
    }
    return comp == MR_COMPRESS_NONE ? ring_exact(ar, c, in, out, n) : ring_packed(ar, c, comp, in, out, n);
}
