/* See sampler.h.  Top-k/top-p work on a candidate set found by partial
 * selection (quickselect), grown until it holds the nucleus, so a large
 * vocabulary is never fully sorted for each token. */
#include "runtime/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct mr_sampler {
    int vocab;
    float *prob;
    int32_t *idx;
};

mr_sampler *mr_sampler_create(int vocab) {
    mr_sampler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->vocab = vocab;
    s->prob = malloc((size_t)vocab * sizeof(float));
    s->idx = malloc((size_t)vocab * sizeof(int32_t));
    if (!s->prob || !s->idx) {
        mr_sampler_destroy(s);
        return NULL;
    }
    return s;
}

void mr_sampler_destroy(mr_sampler *s) {
    if (!s) return;
    free(s->prob);
    free(s->idx);
    free(s);
}

static uint64_t mix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

double mr_sample_uniform(uint64_t seed, uint64_t id_hash, int position) {
    uint64_t r = mix64(mix64(seed) ^ mix64(id_hash + 0x632BE59BD9B4E019ull) ^ mix64((uint64_t)position * 0xD6E8FEB86659FD93ull));
    return (double)(r >> 11) * (1.0 / 9007199254740992.0);
}

uint64_t mr_hash_id(const char *id) {
    uint64_t h = 1469598103934665603ull;
    for (; *id; id++) h = (h ^ (unsigned char)*id) * 1099511628211ull;
    return h;
}

/* Order: higher probability first, then lower id (deterministic). */
static int before(const float *p, int32_t a, int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); }

/* Partially order idx[lo..hi) so its first k entries are the k best. */
static void select_top(const float *p, int32_t *idx, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int32_t pivot = idx[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (before(p, idx[i], pivot)) i++;
            while (before(p, pivot, idx[j])) j--;
            if (i <= j) {
                int32_t t = idx[i];
                idx[i] = idx[j];
                idx[j] = t;
                i++;
                j--;
            }
        }
        if (k - 1 <= j) hi = j;
        else if (k - 1 >= i) lo = i;
        else break;
    }
}

static const float *g_sort_p;
static int cmp_desc(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return before(g_sort_p, x, y) ? -1 : before(g_sort_p, y, x) ? 1 : 0;
}

int mr_sample(mr_sampler *s, const float *logits, const mr_sample_params *p, uint64_t id_hash, int position,
              float *logprob) {
    int V = s->vocab;
    float mx = logits[0];
    int best = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > mx) { mx = logits[i]; best = i; }
    if (p->temperature <= 0) {
        if (logprob) {
            double z = 0;
            for (int i = 0; i < V; i++) z += exp((double)logits[i] - mx);
            *logprob = (float)-log(z);
        }
        return best;
    }
    double inv_t = 1.0 / p->temperature, z = 0;
    for (int i = 0; i < V; i++) {
        s->prob[i] = (float)exp(((double)logits[i] - mx) * inv_t);
        z += s->prob[i];
        s->idx[i] = i;
    }
    for (int i = 0; i < V; i++) s->prob[i] = (float)(s->prob[i] / z);
    int n = V;
    if ((p->top_k > 0 && p->top_k < V) || p->top_p < 1.0f) {
        int limit = (p->top_k > 0 && p->top_k < V) ? p->top_k : V;
        int k = limit < 64 ? limit : 64;
        for (;;) {
            select_top(s->prob, s->idx, V, k);
            g_sort_p = s->prob;
            qsort(s->idx, (size_t)k, sizeof(int32_t), cmp_desc);
            double cum = 0;
            int keep = k;
            if (p->top_p < 1.0f) {
                for (int i = 0; i < k; i++) {
                    cum += s->prob[s->idx[i]];
                    if (cum >= p->top_p) { keep = i + 1; break; }
                }
                if (cum < p->top_p && k < limit) { /* nucleus not yet inside: widen */
                    k = k * 4 < limit ? k * 4 : limit;
                    continue;
                }
            }
            n = keep;
            break;
        }
    }
    double total = 0;
    for (int i = 0; i < n; i++) total += s->prob[s->idx[i]];
    double u = mr_sample_uniform(p->seed, id_hash, position) * total, cum = 0;
    int tok = s->idx[n - 1];
    for (int i = 0; i < n; i++) {
        cum += s->prob[s->idx[i]];
        if (u < cum) { tok = s->idx[i]; break; }
    }
    if (logprob) *logprob = (float)log(s->prob[tok] / total);
    return tok;
}
