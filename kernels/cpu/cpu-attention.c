/* Position-dependent operations of the CPU backend: rotary embedding and
 * causal attention over the KV cache.
 *
 * Attention streams each (token, head) pair's keys and values once, in
 * chunks of MR_CPU_ATT_CHUNK positions: the chunk's scores go to a small
 * stack buffer, the running maximum and denominator are rescaled once per
 * chunk (the online softmax of flash attention), and the output row itself
 * is the accumulator.  No memory is allocated and the cache length is not
 * bounded.  The result equals softmax(scale*q.k) . v with max subtraction up
 * to fp32 rounding. */
#include "kernels/cpu/cpu-internal.h"

#include <assert.h>
#include <math.h>
#include <string.h>

#define MR_CPU_ROPE_CHUNK 64  /* rotary pairs whose cos/sin are computed at once */
#define MR_CPU_ATT_CHUNK 128  /* positions scored at once */

/* ---- rotary embedding --------------------------------------------------- */

/* Rotate the pairs [i0, i0+n) of one head's rotary part r (see backend.h). */
static void rope_rotate(float *r, int half, int i0, int n, const float *c,
                        const float *s, int interleaved) {
    if (interleaved) {
        for (int j = 0; j < n; j++) {
            float *p = r + 2 * (i0 + j);
            float a = p[0], bb = p[1];
            p[0] = a * c[j] - bb * s[j];
            p[1] = bb * c[j] + a * s[j];
        }
    } else {
        float *lo = r + i0, *hi = r + i0 + half;
#pragma omp simd
        for (int j = 0; j < n; j++) {
            float a = lo[j], bb = hi[j];
            lo[j] = a * c[j] - bb * s[j];
            hi[j] = bb * c[j] + a * s[j];
        }
    }
}

void mr_cpu_rope(mr_backend *b, float *x, int ntok, int nheads, int row_stride,
                 int head_stride, int rot_off, int rot_dim, const int32_t *pos,
                 const float *inv_freq, float mscale, int interleaved) {
    assert(rot_dim % 2 == 0);
    int half = rot_dim / 2;
#pragma omp parallel for num_threads(b->threads) schedule(static) \
    if ((size_t)ntok * nheads * rot_dim >= MR_CPU_PAR_MIN / 4 && ntok > 1)
    for (int t = 0; t < ntok; t++) {
        /* The angle is one fp32 product, as transformers computes it
         * (inv_freq @ position_ids in fp32), so large positions round alike. */
        float fp = (float)pos[t];
        float *row = x + (size_t)t * row_stride + rot_off;
        for (int i0 = 0; i0 < half; i0 += MR_CPU_ROPE_CHUNK) {
            float c[MR_CPU_ROPE_CHUNK], s[MR_CPU_ROPE_CHUNK];
            int n = half - i0 < MR_CPU_ROPE_CHUNK ? half - i0 : MR_CPU_ROPE_CHUNK;
            for (int j = 0; j < n; j++) {
                float th = fp * inv_freq[i0 + j];
                c[j] = cosf(th) * mscale;
                s[j] = sinf(th) * mscale;
            }
            for (int h = 0; h < nheads; h++)
                rope_rotate(row + (size_t)h * head_stride, half, i0, n, c, s,
                            interleaved);
        }
    }
}

/* ---- attention ---------------------------------------------------------- */

/* o(dv) = softmax_p(scale * q.k_p) . v_p over p < npos, where key p is at
 * kb + p*kstep and value p at vb + p*vstep. */
static void attend_one(float *o, const float *q, const float *kb, const float *vb,
                       size_t kstep, size_t vstep, int npos, int dqk, int dv,
                       float scale) {
    float sc[MR_CPU_ATT_CHUNK];
    float m = -INFINITY, l = 0.0f;
    memset(o, 0, (size_t)dv * sizeof *o);
    for (int p0 = 0; p0 < npos; p0 += MR_CPU_ATT_CHUNK) {
        int n = npos - p0 < MR_CPU_ATT_CHUNK ? npos - p0 : MR_CPU_ATT_CHUNK;
        float cmax = -INFINITY;
        for (int j = 0; j < n; j++) {
            const float *kr = kb + (size_t)(p0 + j) * kstep;
            float d = 0.0f;
#pragma omp simd reduction(+ : d)
            for (int i = 0; i < dqk; i++) d += q[i] * kr[i];
            sc[j] = d * scale;
            if (sc[j] > cmax) cmax = sc[j];
        }
        if (cmax > m) {
            /* New maximum: rescale what was summed against the old one. */
            if (m != -INFINITY) {
                float c = expf(m - cmax);
                l *= c;
#pragma omp simd
                for (int i = 0; i < dv; i++) o[i] *= c;
            }
            m = cmax;
        }
        for (int j = 0; j < n; j++) {
            float e = expf(sc[j] - m);
            const float *vr = vb + (size_t)(p0 + j) * vstep;
            l += e;
#pragma omp simd
            for (int i = 0; i < dv; i++) o[i] += e * vr[i];
        }
    }
    float inv = 1.0f / l;
#pragma omp simd
    for (int i = 0; i < dv; i++) o[i] *= inv;
}

void mr_cpu_attention(mr_backend *b, float *out, const float *q, const float *k,
                      const float *v, const int32_t *slot, const int32_t *pos,
                      int ntok, int nh, int nkv, int dqk, int dv,
                      size_t slot_stride_k, size_t slot_stride_v, float scale) {
    assert(nkv >= 1 && nh % nkv == 0);
    int group = nh / nkv;
    /* Work in multiply-adds, to decide whether a team is worth waking. */
    size_t work = 0;
    for (int t = 0; t < ntok; t++) work += (size_t)(pos[t] + 1);
    work *= (size_t)nh * (size_t)(dqk + dv);
    int npair = ntok * nh;
    /* Dynamic: in a prefill the pairs of late tokens cost far more. */
#pragma omp parallel for num_threads(b->threads) schedule(dynamic, 1) \
    if (work >= MR_CPU_PAR_MIN && npair > 1)
    for (int th = 0; th < npair; th++) {
        int t = th / nh, h = th % nh, g = h / group;
        assert(pos[t] >= 0);
        attend_one(out + (size_t)th * dv, q + (size_t)th * dqk,
                   k + (size_t)slot[t] * slot_stride_k + (size_t)g * dqk,
                   v + (size_t)slot[t] * slot_stride_v + (size_t)g * dv,
                   (size_t)nkv * dqk, (size_t)nkv * dv, pos[t] + 1, dqk, dv, scale);
    }
}
