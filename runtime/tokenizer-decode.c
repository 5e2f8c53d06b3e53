/* Decoding ids to text, the streaming decoder, and the UTF-8 rules both
 * directions share.  Ill-formed UTF-8 becomes U+FFFD per maximal subpart
 * (Unicode 15, section 3.9, "U+FFFD Substitution of Maximal Subparts"), the
 * rule of Rust's String::from_utf8_lossy, which tokenizers' ByteLevel decoder
 * applies, and of Python's bytes.decode("utf-8", "replace"). */
#define _GNU_SOURCE
#include "runtime/tokenizer-internal.h"

#include <stdlib.h>
#include <string.h>

static const char REPLACEMENT[3] = {(char)0xEF, (char)0xBF, (char)0xBD};

int tok_utf8_seq(const uint8_t *s, size_t n, size_t *sub, int *incomplete) {
    *incomplete = 0;
    *sub = 1;
    uint8_t b = s[0];
    if (b < 0x80) return 1;
    int need;
    uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (b >= 0xC2 && b <= 0xDF) need = 1;
    else if (b == 0xE0) { need = 2; lo = 0xA0; }
    else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) need = 2;
    else if (b == 0xED) { need = 2; hi = 0x9F; }
    else if (b == 0xF0) { need = 3; lo = 0x90; }
    else if (b >= 0xF1 && b <= 0xF3) need = 3;
    else if (b == 0xF4) { need = 3; hi = 0x8F; }
    else return 0;
    size_t i = 1;
    for (; i <= (size_t)need; i++) {
        if (i >= n) { *incomplete = 1; *sub = i; return 0; }
        uint8_t c = s[i];
        uint8_t l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
        if (c < l || c > h) { *sub = i; return 0; }
    }
    return need + 1;
}

mr_status tok_utf8_lossy(const char *s, size_t n, char **out, size_t *outlen) {
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0, sub;
    int inc, l;
    while (i < n && (l = tok_utf8_seq(u + i, n - i, &sub, &inc)) > 0) i += (size_t)l;
    *out = NULL;
    *outlen = n;
    if (i == n) return MR_OK; /* valid: no copy */
    char *r = malloc(n * 3 + 1);
    if (!r) return mr_error(MR_ERR_NOMEM, "tokenizer: out of memory (%zu bytes)", n * 3 + 1);
    memcpy(r, s, i);
    size_t o = i;
    while (i < n) {
        l = tok_utf8_seq(u + i, n - i, &sub, &inc);
        if (l > 0) {
            memcpy(r + o, s + i, (size_t)l);
            o += (size_t)l;
            i += (size_t)l;
        } else {
            memcpy(r + o, REPLACEMENT, 3);
            o += 3;
            i += sub;
        }
    }
    r[o] = 0;
    *out = r;
    *outlen = o;
    return MR_OK;
}

int tok_utf8_encode(uint32_t cp, char *out) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) { out[0] = (char)(0xC0 | (cp >> 6)); out[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static mr_status check_id(const mr_tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->n_ids)
        return mr_error(MR_ERR_INPUT, "%s: token id %d is outside the vocabulary [0, %d)", t->origin, id, t->n_ids);
    return MR_OK;
}

static int skipped(const mr_tokenizer *t, int32_t id, int skip_special) {
    return skip_special && (t->id_flags[id] & TOK_ID_SPECIAL);
}

mr_status mr_tokenizer_decode(const mr_tokenizer *t, const int32_t *ids, int n, int skip_special, char **text,
                              size_t *len) {
    *text = NULL;
    *len = 0;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        MR_CHECK(check_id(t, ids[i]));
        if (!skipped(t, ids[i], skip_special)) total += t->id_off[ids[i] + 1] - t->id_off[ids[i]];
    }
    char *raw = malloc(total + 1);
    if (!raw) return mr_error(MR_ERR_NOMEM, "tokenizer: out of memory (%zu bytes)", total + 1);
    size_t o = 0;
    for (int i = 0; i < n; i++) {
        if (skipped(t, ids[i], skip_special)) continue;
        size_t l = t->id_off[ids[i] + 1] - t->id_off[ids[i]];
        memcpy(raw + o, t->id_bytes + t->id_off[ids[i]], l);
        o += l;
    }
    raw[o] = 0;
    char *fixed;
    size_t flen;
    mr_status st = tok_utf8_lossy(raw, o, &fixed, &flen);
    if (st != MR_OK) { free(raw); return st; }
    if (fixed) {
        free(raw);
        raw = fixed;
        o = flen;
    }
    *text = raw;
    *len = o;
    return MR_OK;
}

/* ---- streaming ---------------------------------------------------------------- */

void mr_tokenizer_stream_init(mr_tokenizer_stream *s, const mr_tokenizer *t, int skip_special) {
    memset(s, 0, sizeof *s);
    s->tok = t;
    s->skip_special = skip_special;
}

size_t mr_tokenizer_stream_bound(const mr_tokenizer *t) { return 3 * (t->max_token_bytes + 4); }

/* Decode head bytes b[0..n) (pending + new); whatever valid or ill-formed
 * sequences end inside it are written, a trailing incomplete sequence is
 * returned in `keep`. */
static mr_status stream_bytes(mr_tokenizer_stream *s, const uint8_t *b, size_t n, char *out, size_t cap,
                              size_t *len) {
    size_t i = 0, o = *len, sub;
    int inc;
    while (i < n) {
        int l = tok_utf8_seq(b + i, n - i, &sub, &inc);
        if (inc) {
            memcpy(s->pending, b + i, n - i); /* at most 3 bytes */
            s->npending = (int)(n - i);
            break;
        }
        size_t w = l > 0 ? (size_t)l : 3;
        if (o + w > cap)
            return mr_error(MR_ERR_INPUT, "tokenizer stream: output buffer of %zu bytes is too small", cap);
        if (l > 0) memcpy(out + o, b + i, (size_t)l);
        else memcpy(out + o, REPLACEMENT, 3);
        o += w;
        i += l > 0 ? (size_t)l : sub;
    }
    *len = o;
    return MR_OK;
}

mr_status mr_tokenizer_stream_push(mr_tokenizer_stream *s, int32_t id, char *out, size_t cap, size_t *len) {
    const mr_tokenizer *t = s->tok;
    *len = 0;
    MR_CHECK(check_id(t, id));
    if (skipped(t, id, s->skip_special)) return MR_OK;
    const uint8_t *tb = (const uint8_t *)t->id_bytes + t->id_off[id];
    size_t tn = t->id_off[id + 1] - t->id_off[id];
    if (!tn) return MR_OK;
    /* First finish what is pending, in a small window that holds it and
     * enough of the new token to settle every sequence starting in it. */
    size_t skip = 0;
    if (s->npending) {
        uint8_t win[8];
        size_t np = (size_t)s->npending, take = tn < 4 ? tn : 4;
        memcpy(win, s->pending, np);
        memcpy(win + np, tb, take);
        size_t wn = np + take, i = 0, sub, o = 0;
        int inc;
        s->npending = 0;
        while (i < np) {
            int l = tok_utf8_seq(win + i, wn - i, &sub, &inc);
            if (inc) { /* still incomplete even with the whole token */
                memcpy(s->pending, win + i, wn - i);
                s->npending = (int)(wn - i);
                *len = o;
                return MR_OK;
            }
            size_t w = l > 0 ? (size_t)l : 3;
            if (o + w > cap)
                return mr_error(MR_ERR_INPUT, "tokenizer stream: output buffer of %zu bytes is too small", cap);
            if (l > 0) memcpy(out + o, win + i, (size_t)l);
            else memcpy(out + o, REPLACEMENT, 3);
            o += w;
            i += l > 0 ? (size_t)l : sub;
        }
        *len = o;
        skip = i - np;
    }
    return stream_bytes(s, tb + skip, tn - skip, out, cap, len);
}

mr_status mr_tokenizer_stream_flush(mr_tokenizer_stream *s, char *out, size_t cap, size_t *len) {
    *len = 0;
    if (!s->npending) return MR_OK;
    if (cap < 3) return mr_error(MR_ERR_INPUT, "tokenizer stream: output buffer of %zu bytes is too small", cap);
    memcpy(out, REPLACEMENT, 3);
    *len = 3;
    s->npending = 0;
    return MR_OK;
}
