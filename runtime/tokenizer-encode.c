/* Encoding, step for step as `tokenizers` (0.22) does it:
 *   1. invalid UTF-8 -> U+FFFD (maximal subparts, like from_utf8_lossy);
 *   2. added tokens whose `normalized` is false are cut out of the raw text
 *      (leftmost-longest, honouring single_word/lstrip/rstrip);
 *   3. the rest is normalized (NFC) and the normalized added tokens cut out;
 *   4. each remaining segment goes through the pre-tokenizer steps (regex
 *      splits with onig's find_iter semantics, then ByteLevel);
 *   5. each piece is BPE-merged (binary heap on (rank, position), the same
 *      tie-breaks as tokenizers' Word::merge_all), with a word cache;
 *   6. the post-processor's prefix/suffix ids when add_special is set. */
#define _GNU_SOURCE
#include "runtime/tokenizer-internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct piece {
    const char *p;
    size_t n;
} piece;

typedef struct piece_vec {
    piece *v;
    size_t n, cap;
} piece_vec;

typedef struct seg {
    const char *p;
    size_t n;
    int32_t id; /* added token id, -1 for text */
} seg;

typedef struct seg_vec {
    seg *v;
    size_t n, cap;
} seg_vec;

typedef struct span {
    size_t s, e;
    int match;
} span;

typedef struct sym {
    int32_t id, prev, next;
    uint32_t len;
} sym;

typedef struct hent {
    int32_t rank, pos, id;
} hent;

typedef struct enc_ctx {
    const mr_tokenizer *t;
    pcre2_match_data *md;
    pcre2_match_context *mc; /* NULL: defaults */
    int32_t *ids;
    size_t nids, cap_ids;
    void **owned; /* buffers to free at the end */
    size_t nowned, cap_owned;
    span *spans;
    size_t cap_spans;
    sym *syms;
    size_t cap_syms;
    hent *heap;
    size_t nheap, cap_heap;
} enc_ctx;

/* Grow *v (elements of `size`) to hold at least `need`. */
static mr_status grow(void **v, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return MR_OK;
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *p = realloc(*v, c * size);
    if (!p) return mr_error(MR_ERR_NOMEM, "tokenizer: out of memory (%zu bytes)", c * size);
    *v = p;
    *cap = c;
    return MR_OK;
}
#define GROW(ptr, cap, need) grow((void **)&(ptr), &(cap), (need), sizeof *(ptr))

static mr_status emit(enc_ctx *c, int32_t id) {
    MR_CHECK(GROW(c->ids, c->cap_ids, c->nids + 1));
    c->ids[c->nids++] = id;
    return MR_OK;
}

static mr_status own(enc_ctx *c, void *p) {
    mr_status st = GROW(c->owned, c->cap_owned, c->nowned + 1);
    if (st != MR_OK) { free(p); return st; }
    c->owned[c->nowned++] = p;
    return MR_OK;
}

static mr_status seg_push(seg_vec *v, const char *p, size_t n, int32_t id) {
    MR_CHECK(GROW(v->v, v->cap, v->n + 1));
    v->v[v->n++] = (seg){p, n, id};
    return MR_OK;
}

static mr_status piece_push(piece_vec *v, const char *p, size_t n) {
    if (!n) return MR_OK; /* tokenizers drops empty splits */
    MR_CHECK(GROW(v->v, v->cap, v->n + 1));
    v->v[v->n++] = (piece){p, n};
    return MR_OK;
}

/* ---- regex --------------------------------------------------------------- */

/* One search from `start`; *found = 0 when there is no match. */
static mr_status re_search(enc_ctx *c, const pcre2_code *re, const char *s, size_t n, size_t start,
                           size_t *ms, size_t *me, int *found) {
    int rc = pcre2_match(re, (PCRE2_SPTR)s, n, start, PCRE2_NO_UTF_CHECK, c->md, c->mc);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
        rc = pcre2_match(re, (PCRE2_SPTR)s, n, start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, c->md, c->mc);
    if (rc == PCRE2_ERROR_NOMATCH) { *found = 0; return MR_OK; }
    if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        return mr_error(MR_ERR_INTERNAL, "%s: regex match failed: %s", c->t->origin, (const char *)msg);
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
    *ms = ov[0];
    *me = ov[1];
    *found = 1;
    return MR_OK;
}

static size_t utf8_len_at(const char *s, size_t n, size_t i) {
    if (i >= n) return 1;
    uint8_t b = (uint8_t)s[i];
    size_t l = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
    return i + l <= n ? l : n - i;
}

/* Matches and the gaps between them covering s[0..n), as tokenizers'
 * Pattern::find_matches for a regex (onig's find_iter: an empty match right
 * where the previous match ended is skipped by one char). */
static mr_status find_spans(enc_ctx *c, const pcre2_code *re, const char *s, size_t n, size_t *nspans) {
    size_t k = 0, prev = 0, last_end = 0, last_match_end = 0;
    int have_last = 0;
    while (last_end <= n) {
        size_t ms = 0, me = 0;
        int found = 0;
        MR_CHECK(re_search(c, re, s, n, last_end, &ms, &me, &found));
        if (!found) break;
        if (ms == me && have_last && last_match_end == me) {
            last_end += utf8_len_at(s, n, last_end);
            continue;
        }
        last_end = last_match_end = me;
        have_last = 1;
        MR_CHECK(GROW(c->spans, c->cap_spans, k + 2));
        if (prev != ms) c->spans[k++] = (span){prev, ms, 0};
        c->spans[k++] = (span){ms, me, 1};
        prev = me;
    }
    MR_CHECK(GROW(c->spans, c->cap_spans, k + 1));
    if (prev != n) c->spans[k++] = (span){prev, n, 0};
    *nspans = k;
    return MR_OK;
}

/* NormalizedString::split with a SplitDelimiterBehavior. */
static mr_status split_piece(enc_ctx *c, const tok_pre_step *st, piece in, piece_vec *out) {
    size_t k;
    MR_CHECK(find_spans(c, st->re, in.p, in.n, &k));
    span *sp = c->spans;
    if (st->invert)
        for (size_t i = 0; i < k; i++) sp[i].match = !sp[i].match;
    size_t m = 0; /* compacted spans, merged in place */
    int prev_match = 0;
    switch (st->behavior) {
    case TOK_SPLIT_REMOVED:
        for (size_t i = 0; i < k; i++)
            if (!sp[i].match) sp[m++] = sp[i];
        break;
    case TOK_SPLIT_ISOLATED:
        m = k;
        break;
    case TOK_SPLIT_MERGED_PREV:
        for (size_t i = 0; i < k; i++) {
            if (sp[i].match && !prev_match && m) sp[m - 1].e = sp[i].e;
            else sp[m++] = sp[i];
            prev_match = sp[i].match;
        }
        break;
    case TOK_SPLIT_MERGED_NEXT:
        /* folded from the right: a match joins the span after it */
        for (size_t i = k; i-- > 0;) {
            span cur = sp[i];
            if (cur.match && !prev_match && m) sp[k - m].s = cur.s;
            else { m++; sp[k - m] = cur; }
            prev_match = cur.match;
        }
        memmove(sp, sp + (k - m), m * sizeof *sp);
        break;
    case TOK_SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < k; i++) {
            if (sp[i].match == prev_match && m) sp[m - 1].e = sp[i].e;
            else sp[m++] = sp[i];
            prev_match = sp[i].match;
        }
        break;
    default:
        return mr_error(MR_ERR_INTERNAL, "tokenizer: bad split behavior %d", (int)st->behavior);
    }
    for (size_t i = 0; i < m; i++) MR_CHECK(piece_push(out, in.p + sp[i].s, sp[i].e - sp[i].s));
    return MR_OK;
}

/* ---- BPE -------------------------------------------------------------------- */

static int hent_less(hent a, hent b) { return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos); }

static mr_status heap_push(enc_ctx *c, hent e) {
    MR_CHECK(GROW(c->heap, c->cap_heap, c->nheap + 1));
    size_t i = c->nheap++;
    while (i > 0 && hent_less(e, c->heap[(i - 1) / 2])) {
        c->heap[i] = c->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    c->heap[i] = e;
    return MR_OK;
}

static hent heap_pop(enc_ctx *c) {
    hent top = c->heap[0], last = c->heap[--c->nheap];
    size_t i = 0, n = c->nheap;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        hent best = last;
        if (l < n && hent_less(c->heap[l], best)) { m = l; best = c->heap[l]; }
        if (r < n && hent_less(c->heap[r], best)) m = r;
        if (m == i) break;
        c->heap[i] = c->heap[m];
        i = m;
    }
    if (n) c->heap[i] = last;
    return top;
}

static mr_status add_sym(enc_ctx *c, size_t *ns, int32_t id, uint32_t len) {
    MR_CHECK(GROW(c->syms, c->cap_syms, *ns + 1));
    int32_t k = (int32_t)*ns;
    if (k) c->syms[k - 1].next = k;
    c->syms[k] = (sym){id, k - 1, -1, len};
    (*ns)++;
    return MR_OK;
}

/* Word::merge_word + merge_all for one piece of raw bytes. */
static mr_status bpe_piece(enc_ctx *c, const char *p, size_t n) {
    const mr_tokenizer *t = c->t;
    if (n > INT32_MAX / 2) return mr_error(MR_ERR_INPUT, "tokenizer: a %zu-byte word is too long", n);
    size_t ns = 0;
    int32_t unk = -1;
    uint32_t unk_len = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)p[i];
        int32_t id = t->byte_id[b];
        if (id >= 0) {
            if (unk >= 0) { MR_CHECK(add_sym(c, &ns, unk, unk_len)); unk = -1; }
            MR_CHECK(add_sym(c, &ns, id, 1));
            continue;
        }
        if (t->byte_fallback) {
            /* <0xXX> of the UTF-8 of the byte-level char, as merge_word does */
            char u[4], name[8];
            int ul = tok_utf8_encode(t->byte_char[b], u), ok = 1;
            int32_t fb[4];
            for (int j = 0; j < ul && ok; j++) {
                snprintf(name, sizeof name, "<0x%02X>", (unsigned)(uint8_t)u[j]);
                fb[j] = tok_map_get(&t->vocab, name, strlen(name));
                ok = fb[j] >= 0;
            }
            if (ok) {
                for (int j = 0; j < ul; j++) MR_CHECK(add_sym(c, &ns, fb[j], 1));
                continue;
            }
        }
        if (t->unk_id >= 0) {
            if (unk >= 0 && t->fuse_unk) {
                unk_len += 1;
            } else {
                if (unk >= 0) MR_CHECK(add_sym(c, &ns, unk, unk_len));
                unk = t->unk_id;
                unk_len = 1;
            }
        }
    }
    if (unk >= 0) MR_CHECK(add_sym(c, &ns, unk, unk_len));
    sym *s = c->syms;
    c->nheap = 0;
    for (size_t i = 0; i + 1 < ns; i++) {
        const tok_merge_ent *m = tok_merge_get(&t->merges, s[i].id, s[i + 1].id);
        if (m) MR_CHECK(heap_push(c, (hent){m->rank, (int32_t)i, m->id}));
    }
    while (c->nheap) {
        hent top = heap_pop(c);
        sym *cur = &c->syms[top.pos];
        if (cur->len == 0 || cur->next < 0) continue;
        sym right = c->syms[cur->next];
        const tok_merge_ent *m = tok_merge_get(&t->merges, cur->id, right.id);
        if (!m || m->id != top.id) continue; /* stale entry */
        c->syms[cur->next].len = 0;
        cur->id = top.id;
        cur->len += right.len;
        cur->next = right.next;
        if (right.next >= 0) c->syms[right.next].prev = top.pos;
        if (cur->prev >= 0) {
            m = tok_merge_get(&t->merges, c->syms[cur->prev].id, cur->id);
            if (m) MR_CHECK(heap_push(c, (hent){m->rank, cur->prev, m->id}));
            cur = &c->syms[top.pos]; /* heap_push does not move syms, but keep it obvious */
        }
        if (cur->next >= 0) {
            m = tok_merge_get(&t->merges, cur->id, c->syms[cur->next].id);
            if (m) MR_CHECK(heap_push(c, (hent){m->rank, top.pos, m->id}));
        }
    }
    for (int32_t i = ns ? 0 : -1; i >= 0; i = c->syms[i].next)
        if (c->syms[i].len) MR_CHECK(emit(c, c->syms[i].id));
    return MR_OK;
}

static mr_status model_piece(enc_ctx *c, const char *p, size_t n) {
    const mr_tokenizer *t = c->t;
    if (t->ignore_merges) {
        int32_t id = tok_map_get(&t->vocab_bytes, p, n);
        if (id >= 0) return emit(c, id);
    }
    tok_cache *cache = t->cache;
    uint32_t h = 0;
    tok_cache_slot *slot = NULL;
    if (n <= TOK_CACHE_KEY) {
        h = tok_hash(p, n);
        slot = &cache->slots[h % TOK_CACHE_SLOTS];
        pthread_mutex_lock(&cache->lock);
        if (slot->nids && slot->hash == h && slot->klen == n && memcmp(slot->key, p, n) == 0) {
            int32_t ids[TOK_CACHE_IDS];
            int k = slot->nids;
            memcpy(ids, slot->ids, sizeof(int32_t) * (size_t)k);
            pthread_mutex_unlock(&cache->lock);
            for (int i = 0; i < k; i++) MR_CHECK(emit(c, ids[i]));
            return MR_OK;
        }
        pthread_mutex_unlock(&cache->lock);
    }
    size_t first = c->nids;
    MR_CHECK(bpe_piece(c, p, n));
    size_t k = c->nids - first;
    if (slot && k > 0 && k <= TOK_CACHE_IDS) {
        pthread_mutex_lock(&cache->lock);
        slot->hash = h;
        slot->klen = (uint8_t)n;
        slot->nids = (uint8_t)k;
        memcpy(slot->key, p, n);
        memcpy(slot->ids, c->ids + first, k * sizeof(int32_t));
        pthread_mutex_unlock(&cache->lock);
    }
    return MR_OK;
}

/* ---- pre-tokenization of one text segment ---------------------------------- */

static mr_status pretokenize(enc_ctx *c, const char *p, size_t n) {
    const mr_tokenizer *t = c->t;
    piece_vec a = {0}, b = {0};
    mr_status st = piece_push(&a, p, n);
    for (int k = 0; st == MR_OK && k < t->n_pre; k++) {
        const tok_pre_step *step = &t->pre[k];
        b.n = 0;
        for (size_t i = 0; st == MR_OK && i < a.n; i++) {
            piece in = a.v[i];
            if (step->kind == TOK_PRE_BYTELEVEL && step->add_prefix_space && in.p[0] != ' ') {
                char *q = malloc(in.n + 1);
                if (!q) { st = mr_error(MR_ERR_NOMEM, "tokenizer: out of memory"); break; }
                q[0] = ' ';
                memcpy(q + 1, in.p, in.n);
                if ((st = own(c, q)) != MR_OK) break;
                in = (piece){q, in.n + 1};
            }
            if (step->re) st = split_piece(c, step, in, &b);
            else st = piece_push(&b, in.p, in.n);
        }
        piece_vec tmp = a;
        a = b;
        b = tmp;
    }
    for (size_t i = 0; st == MR_OK && i < a.n; i++) st = model_piece(c, a.v[i].p, a.v[i].n);
    free(a.v);
    free(b.v);
    return st;
}

/* ---- added tokens ------------------------------------------------------------ */

static int is_white_space(uint32_t cp) {
    return (cp >= 9 && cp <= 13) || cp == 32 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

static uint32_t decode_at(const char *s, size_t n, size_t i, size_t *len) {
    const uint8_t *u = (const uint8_t *)s + i;
    size_t l = utf8_len_at(s, n, i);
    uint32_t cp = l == 1 ? u[0] : l == 2 ? (u[0] & 0x1Fu) : l == 3 ? (u[0] & 0x0Fu) : (u[0] & 0x07u);
    for (size_t k = 1; k < l; k++) cp = (cp << 6) | (u[k] & 0x3Fu);
    *len = l;
    return cp;
}

static size_t char_start_before(const char *s, size_t i) {
    do i--;
    while (i > 0 && ((uint8_t)s[i] & 0xC0) == 0x80);
    return i;
}

static int is_word_at(enc_ctx *c, const char *s, size_t n, size_t i) {
    size_t l = utf8_len_at(s, n, i);
    int rc = pcre2_match(c->t->word_re, (PCRE2_SPTR)s + i, l, 0, PCRE2_NO_UTF_CHECK | PCRE2_ANCHORED, c->md, c->mc);
    return rc >= 0;
}

/* AddedVocabulary::find_matches: cut the added tokens of `tr` out of s. */
static mr_status split_added(enc_ctx *c, const tok_trie *tr, const char *s, size_t n, seg_vec *out) {
    const mr_tokenizer *t = c->t;
    size_t start_offset = 0, pos = 0;
    while (pos < n) {
        size_t ms = 0, me = 0;
        int32_t idx = -1;
        for (size_t i = pos; i < n && idx < 0; i++) {
            int32_t node = tr->root[(uint8_t)s[i]];
            for (size_t j = i; node >= 0;) {
                if (tr->nodes[node].added >= 0) { idx = tr->nodes[node].added; ms = i; me = j + 1; }
                if (++j >= n) break;
                int32_t ch = tr->nodes[node].child;
                while (ch >= 0 && tr->nodes[ch].byte != (uint8_t)s[j]) ch = tr->nodes[ch].sibling;
                node = ch;
            }
        }
        if (idx < 0) break;
        pos = me;
        const tok_added *a = &t->added[idx];
        size_t start = ms, stop = me;
        if (a->single_word) {
            int start_space = start == 0 || !is_word_at(c, s, n, char_start_before(s, start));
            int stop_space = stop == n || !is_word_at(c, s, n, stop);
            if (!start_space || !stop_space) continue;
        }
        if (a->lstrip) {
            size_t ns = start, l;
            while (ns > 0) {
                size_t k = char_start_before(s, ns);
                if (!is_white_space(decode_at(s, n, k, &l))) break;
                ns = k;
            }
            start = ns > start_offset ? ns : start_offset;
        }
        if (a->rstrip) {
            size_t l;
            while (stop < n && is_white_space(decode_at(s, n, stop, &l))) stop += l;
        }
        if (start_offset < start) MR_CHECK(seg_push(out, s + start_offset, start - start_offset, -1));
        MR_CHECK(seg_push(out, s + start, stop - start, a->id));
        start_offset = stop;
    }
    if (start_offset < n) MR_CHECK(seg_push(out, s + start_offset, n - start_offset, -1));
    return MR_OK;
}

/* A text segment between raw added tokens: normalize, cut the normalized
 * added tokens, pre-tokenize and merge the rest. */
static mr_status encode_text(enc_ctx *c, const char *p, size_t n) {
    const mr_tokenizer *t = c->t;
    if (t->nfc && tok_nfc_needed(p, n)) {
        char *q;
        size_t qn;
        MR_CHECK(tok_nfc(p, n, &q, &qn));
        MR_CHECK(own(c, q));
        p = q;
        n = qn;
    }
    seg_vec segs = {0};
    mr_status st = split_added(c, &t->trie_norm, p, n, &segs);
    for (size_t i = 0; st == MR_OK && i < segs.n; i++) {
        if (segs.v[i].id >= 0) st = emit(c, segs.v[i].id);
        else if (segs.v[i].n) st = pretokenize(c, segs.v[i].p, segs.v[i].n);
    }
    free(segs.v);
    return st;
}

mr_status mr_tokenizer_encode(const mr_tokenizer *t, const char *text, size_t len, int add_special, int32_t **ids,
                              int *n) {
    enc_ctx c = {.t = t};
    seg_vec segs = {0};
    mr_status st = MR_OK;
    *ids = NULL;
    *n = 0;
    if (len > (size_t)INT32_MAX / 4) return mr_error(MR_ERR_INPUT, "tokenizer: text of %zu bytes is too long", len);
    if (!text && len) return mr_error(MR_ERR_INPUT, "tokenizer: NULL text of %zu bytes", len);
    const char *s = text ? text : "";
    char *fixed;
    size_t flen;
    MR_CHECK(tok_utf8_lossy(s, len, &fixed, &flen));
    if (fixed) {
        MR_CHECK_GOTO(own(&c, fixed), st, done);
        s = fixed;
        len = flen;
    }
    /* JIT matching runs on PCRE2's default 32 KB stack; a match that needs
     * more is retried by the interpreter (re_search), which uses the heap. */
    c.md = pcre2_match_data_create(1, NULL);
    if (!c.md) {
        st = mr_error(MR_ERR_NOMEM, "tokenizer: out of memory (regex match data)");
        goto done;
    }
    if (add_special)
        for (int i = 0; i < t->n_prefix; i++) MR_CHECK_GOTO(emit(&c, t->prefix[i]), st, done);
    MR_CHECK_GOTO(split_added(&c, &t->trie_raw, s, len, &segs), st, done);
    for (size_t i = 0; i < segs.n; i++) {
        if (segs.v[i].id >= 0) MR_CHECK_GOTO(emit(&c, segs.v[i].id), st, done);
        else if (segs.v[i].n) MR_CHECK_GOTO(encode_text(&c, segs.v[i].p, segs.v[i].n), st, done);
    }
    if (add_special)
        for (int i = 0; i < t->n_suffix; i++) MR_CHECK_GOTO(emit(&c, t->suffix[i]), st, done);
    if (c.nids > INT32_MAX) {
        st = mr_error(MR_ERR_INPUT, "tokenizer: too many tokens");
        goto done;
    }
    if (!c.ids) MR_CHECK_GOTO(GROW(c.ids, c.cap_ids, 1), st, done);
    *ids = c.ids;
    *n = (int)c.nids;
    c.ids = NULL;
done:
    free(segs.v);
    for (size_t i = 0; i < c.nowned; i++) free(c.owned[i]);
    free(c.owned);
    free(c.ids);
    free(c.spans);
    free(c.syms);
    free(c.heap);
    if (c.md) pcre2_match_data_free(c.md);
    return st;
}
