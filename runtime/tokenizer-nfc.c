/* Unicode NFC (UAX #15): full canonical decomposition, canonical ordering,
 * canonical composition, with Hangul done algorithmically.  The tables come
 * from Python's unicodedata (see tokenizer-nfc-table.c); tokenizers' NFC
 * normalizer (the unicode-normalization crate) differs only on characters
 * newer than that Unicode version. */
#define _GNU_SOURCE
#include "runtime/tokenizer-internal.h"

#include <stdlib.h>
#include <string.h>

enum {
    S_BASE = 0xAC00, L_BASE = 0x1100, V_BASE = 0x1161, T_BASE = 0x11A7,
    L_COUNT = 19, V_COUNT = 21, T_COUNT = 28, N_COUNT = V_COUNT * T_COUNT, S_COUNT = L_COUNT * N_COUNT,
};

/* Every code point below U+0300 is NFC-stable and never combines with a
 * neighbour, so text whose bytes are all below 0xCC is already NFC. */
int tok_nfc_needed(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if ((uint8_t)s[i] >= 0xCC) return 1;
    return 0;
}

static uint8_t ccc_of(uint32_t cp) {
    size_t lo = 0, hi = tok_nfc_ccc_n;
    while (lo < hi) {
        size_t m = (lo + hi) / 2;
        if (cp < tok_nfc_ccc[m].lo) hi = m;
        else if (cp > tok_nfc_ccc[m].hi) lo = m + 1;
        else return tok_nfc_ccc[m].ccc;
    }
    return 0;
}

static const tok_decomp *decomp_of(uint32_t cp) {
    size_t lo = 0, hi = tok_nfc_decomp_n;
    while (lo < hi) {
        size_t m = (lo + hi) / 2;
        if (cp < tok_nfc_decomp[m].cp) hi = m;
        else if (cp > tok_nfc_decomp[m].cp) lo = m + 1;
        else return &tok_nfc_decomp[m];
    }
    return NULL;
}

static uint32_t compose_pair(uint32_t a, uint32_t b) {
    if (a >= L_BASE && a < L_BASE + L_COUNT && b >= V_BASE && b < V_BASE + V_COUNT)
        return S_BASE + ((a - L_BASE) * V_COUNT + (b - V_BASE)) * T_COUNT;
    if (a >= S_BASE && a < S_BASE + S_COUNT && (a - S_BASE) % T_COUNT == 0 && b > T_BASE && b < T_BASE + T_COUNT)
        return a + (b - T_BASE);
    size_t lo = 0, hi = tok_nfc_comp_n;
    while (lo < hi) {
        size_t m = (lo + hi) / 2;
        const tok_comp *c = &tok_nfc_comp[m];
        if (a < c->a || (a == c->a && b < c->b)) hi = m;
        else if (a > c->a || b > c->b) lo = m + 1;
        else return c->cp;
    }
    return 0;
}

/* Append the full canonical decomposition of cp (at most 4 levels deep). */
static void decompose(uint32_t cp, uint32_t *out, size_t *n) {
    if (cp >= S_BASE && cp < S_BASE + S_COUNT) {
        uint32_t si = cp - S_BASE;
        out[(*n)++] = L_BASE + si / N_COUNT;
        out[(*n)++] = V_BASE + (si % N_COUNT) / T_COUNT;
        if (si % T_COUNT) out[(*n)++] = T_BASE + si % T_COUNT;
        return;
    }
    const tok_decomp *d = decomp_of(cp);
    if (!d) { out[(*n)++] = cp; return; }
    decompose(d->a, out, n);
    if (d->b) decompose(d->b, out, n);
}

mr_status tok_nfc(const char *s, size_t n, char **out, size_t *outlen) {
    /* A code point decomposes to at most 18 (U+FDFA is compatibility only;
     * canonical ones stay under 4); 4 per input byte is ample. */
    uint32_t *cp = malloc((n * 4 + 4) * sizeof *cp);
    char *r = malloc(n * 4 + 1);
    if (!cp || !r) {
        free(cp);
        free(r);
        return mr_error(MR_ERR_NOMEM, "tokenizer: out of memory (NFC of %zu bytes)", n);
    }
    size_t m = 0;
    const uint8_t *u = (const uint8_t *)s;
    for (size_t i = 0; i < n;) { /* input is valid UTF-8 */
        uint32_t c = u[i];
        size_t l = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        if (l > 1) c &= 0xFFu >> (l + 1);
        for (size_t k = 1; k < l && i + k < n; k++) c = (c << 6) | (u[i + k] & 0x3Fu);
        i += l;
        decompose(c, cp, &m);
    }
    /* canonical ordering: stable insertion sort of each run of non-starters */
    for (size_t i = 1; i < m; i++) {
        uint8_t ci = ccc_of(cp[i]);
        if (!ci) continue;
        size_t j = i;
        uint32_t x = cp[i];
        while (j > 0) {
            uint8_t cj = ccc_of(cp[j - 1]);
            if (cj <= ci || cj == 0) break;
            cp[j] = cp[j - 1];
            j--;
        }
        cp[j] = x;
    }
    /* composition */
    if (m) {
        size_t starter = 0, w = 1;
        int last = ccc_of(cp[0]) ? 256 : 0;
        for (size_t i = 1; i < m; i++) {
            uint32_t c = cp[i];
            int cc = ccc_of(c);
            uint32_t comp = compose_pair(cp[starter], c);
            if (comp && (last < cc || last == 0) && !(last == 256)) {
                cp[starter] = comp;
                continue;
            }
            if (cc == 0) starter = w;
            last = cc;
            cp[w++] = c;
        }
        m = w;
    }
    size_t o = 0;
    for (size_t i = 0; i < m; i++) o += (size_t)tok_utf8_encode(cp[i], r + o);
    r[o] = 0;
    free(cp);
    *out = r;
    *outlen = o;
    return MR_OK;
}
