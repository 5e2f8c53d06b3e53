/* Building an mr_tokenizer: from tokenizer.json (Hugging Face `tokenizers`
 * format) or from GGUF-style arrays (tokens, merges, token types, pre kind).
 * Both paths go through the same tok_add_* / tok_finish building blocks, so
 * they give the same tokenizer for the same data.  Encoding lives in
 * tokenizer-encode.c, decoding in tokenizer-decode.c. */
#define _GNU_SOURCE
#include "runtime/tokenizer-internal.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* GPT-2's split, used by the ByteLevel pre-tokenizer when use_regex is set. */
static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* ---- maps --------------------------------------------------------------- */

uint32_t tok_hash(const void *p, size_t n) {
    const uint8_t *s = p;
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 16777619u;
    return h;
}

static mr_status map_grow(tok_map *m) {
    size_t cap = m->cap ? m->cap * 2 : 1024;
    uint32_t *slots = calloc(cap, sizeof *slots);
    if (!slots) return mr_error(MR_ERR_NOMEM, "tokenizer: out of memory (map of %zu)", cap);
    for (size_t i = 0; i < m->n; i++) {
        size_t j = m->ents[i].hash & (cap - 1);
        while (slots[j]) j = (j + 1) & (cap - 1);
        slots[j] = (uint32_t)(i + 1);
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return MR_OK;
}

static int32_t map_find(const tok_map *m, const char *key, size_t len, uint32_t h, size_t *slot) {
    if (!m->cap) return -1;
    size_t j = h & (m->cap - 1);
    while (m->slots[j]) {
        const tok_map_ent *e = &m->ents[m->slots[j] - 1];
        if (e->hash == h && e->len == len && memcmp(m->blob + e->off, key, len) == 0) {
            if (slot) *slot = j;
            return (int32_t)(m->slots[j] - 1);
        }
        j = (j + 1) & (m->cap - 1);
    }
    if (slot) *slot = j;
    return -1;
}

mr_status tok_map_put(tok_map *m, const char *key, size_t len, int32_t val) {
    uint32_t h = tok_hash(key, len);
    int32_t e = map_find(m, key, len, h, NULL);
    if (e >= 0) { m->ents[e].val = val; return MR_OK; }
    if ((m->n + 1) * 2 > m->cap) MR_CHECK(map_grow(m));
    if (m->n == m->ents_cap) {
        size_t c = m->ents_cap ? m->ents_cap * 2 : 1024;
        void *p = realloc(m->ents, c * sizeof *m->ents);
        if (!p) return mr_error(MR_ERR_NOMEM, "tokenizer: out of memory");
        m->ents = p;
        m->ents_cap = c;
    }
    /* Also when nothing is allocated yet: an empty first key ("" in a
     * fuzzed vocabulary) must not memcpy to NULL + 0. */
    if (!m->blob || m->blob_len + len > m->blob_cap) {
        size_t c = m->blob_cap ? m->blob_cap : 65536;
        while (c < m->blob_len + len) c *= 2;
        void *p = realloc(m->blob, c);
        if (!p) return mr_error(MR_ERR_NOMEM, "tokenizer: out of memory");
        m->blob = p;
        m->blob_cap = c;
    }
    if (m->blob_len + len > UINT32_MAX) return mr_error(MR_ERR_INPUT, "tokenizer: vocabulary too large");
    memcpy(m->blob + m->blob_len, key, len);
    m->ents[m->n] = (tok_map_ent){(uint32_t)m->blob_len, (uint32_t)len, h, val};
    m->blob_len += len;
    size_t slot;
    map_find(m, key, len, h, &slot);
    m->slots[slot] = (uint32_t)(++m->n);
    return MR_OK;
}

int32_t tok_map_get(const tok_map *m, const char *key, size_t len) {
    int32_t e = map_find(m, key, len, tok_hash(key, len), NULL);
    return e < 0 ? -1 : m->ents[e].val;
}

void tok_map_free(tok_map *m) {
    free(m->slots);
    free(m->ents);
    free(m->blob);
    memset(m, 0, sizeof *m);
}

static size_t merge_slot(const tok_merge_map *m, uint64_t key) {
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    size_t j = (size_t)(h >> 20) & (m->cap - 1);
    while (m->slots[j].key != UINT64_MAX && m->slots[j].key != key) j = (j + 1) & (m->cap - 1);
    return j;
}

mr_status tok_merge_put(tok_merge_map *m, int32_t a, int32_t b, int32_t rank, int32_t id) {
    if ((m->n + 1) * 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 4096;
        tok_merge_ent *s = malloc(cap * sizeof *s);
        if (!s) return mr_error(MR_ERR_NOMEM, "tokenizer: out of memory (merges)");
        for (size_t i = 0; i < cap; i++) s[i].key = UINT64_MAX;
        tok_merge_map nm = {s, cap, m->n};
        for (size_t i = 0; i < m->cap; i++)
            if (m->slots[i].key != UINT64_MAX) s[merge_slot(&nm, m->slots[i].key)] = m->slots[i];
        free(m->slots);
        *m = nm;
    }
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t j = merge_slot(m, key);
    if (m->slots[j].key == UINT64_MAX) m->n++;
    /* A repeated merge keeps the later rank, as a Rust HashMap collect does. */
    m->slots[j] = (tok_merge_ent){key, rank, id};
    return MR_OK;
}

const tok_merge_ent *tok_merge_get(const tok_merge_map *m, int32_t a, int32_t b) {
    if (!m->cap) return NULL;
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    const tok_merge_ent *e = &m->slots[merge_slot(m, key)];
    return e->key == key ? e : NULL;
}

/* ---- building blocks ---------------------------------------------------- */

mr_status tok_new(mr_tokenizer **out, const char *origin) {
    mr_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return mr_error(MR_ERR_NOMEM, "tokenizer: out of memory");
    t->origin = strdup(origin ? origin : "tokenizer");
    t->unk_id = t->bos_id = t->eos_id = -1;
    for (int b = 0, n = 0; b < 256; b++) {
        int self = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        t->byte_char[b] = (uint16_t)(self ? b : 256 + n++);
        t->char_byte[t->byte_char[b]] = (uint8_t)b;
        t->char_byte_ok[t->byte_char[b]] = 1;
    }
    *out = t;
    if (!t->origin) return mr_error(MR_ERR_NOMEM, "tokenizer: out of memory");
    return MR_OK;
}

/* Byte-level spelling -> raw bytes; 0 if a char is outside the byte table. */
static int bytelevel_to_bytes(const mr_tokenizer *t, const char *s, size_t n, char *out, size_t *outlen) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        uint8_t c = (uint8_t)s[i];
        uint32_t cp;
        if (c < 0x80) { cp = c; i += 1; }
        else if ((c & 0xE0) == 0xC0 && i + 1 < n) { cp = ((c & 0x1Fu) << 6) | ((uint8_t)s[i + 1] & 0x3Fu); i += 2; }
        else return 0;
        if (cp >= 324 || !t->char_byte_ok[cp]) return 0;
        out[o++] = (char)t->char_byte[cp];
    }
    *outlen = o;
    return 1;
}

mr_status tok_add_vocab(mr_tokenizer *t, const char *s, size_t len, int32_t id) {
    if (id < 0) return mr_error(MR_ERR_INPUT, "%s: token \"%.*s\" has negative id %d", t->origin, (int)len, s, id);
    MR_CHECK(tok_map_put(&t->vocab, s, len, id));
    char buf[1024];
    size_t bl;
    if (len <= sizeof buf && bytelevel_to_bytes(t, s, len, buf, &bl))
        MR_CHECK(tok_map_put(&t->vocab_bytes, buf, bl, id));
    if (id >= t->n_ids) t->n_ids = id + 1;
    return MR_OK;
}

mr_status tok_add_merge(mr_tokenizer *t, const char *a, size_t alen, const char *b, size_t blen,
                        int32_t rank, const char *where) {
    int32_t ia = tok_map_get(&t->vocab, a, alen), ib = tok_map_get(&t->vocab, b, blen);
    char buf[2048];
    if (alen + blen > sizeof buf)
        return mr_error(MR_ERR_INPUT, "%s: %s is too long", t->origin, where);
    memcpy(buf, a, alen);
    memcpy(buf + alen, b, blen);
    int32_t im = tok_map_get(&t->vocab, buf, alen + blen);
    if (ia < 0 || ib < 0 || im < 0)
        return mr_error(MR_ERR_INPUT, "%s: %s (\"%.*s\" + \"%.*s\"): token \"%.*s\" is not in the vocabulary",
                        t->origin, where, (int)alen, a, (int)blen, b,
                        ia < 0 ? (int)alen : ib < 0 ? (int)blen : (int)(alen + blen),
                        ia < 0 ? a : ib < 0 ? b : buf);
    return tok_merge_put(&t->merges, ia, ib, rank, im);
}

mr_status tok_add_added(mr_tokenizer *t, const char *content, size_t len, int32_t id,
                        int special, int lstrip, int rstrip, int single_word, int normalized) {
    if (id < 0) return mr_error(MR_ERR_INPUT, "%s: added token \"%.*s\" has negative id", t->origin, (int)len, content);
    if (len == 0) return mr_error(MR_ERR_INPUT, "%s: added token %d is empty", t->origin, id);
    if (t->n_added == t->cap_added) {
        int c = t->cap_added ? t->cap_added * 2 : 64;
        void *p = realloc(t->added, (size_t)c * sizeof *t->added);
        if (!p) return mr_error(MR_ERR_NOMEM, "tokenizer: out of memory");
        t->added = p;
        t->cap_added = c;
    }
    tok_added *a = &t->added[t->n_added];
    memset(a, 0, sizeof *a);
    a->content = malloc(len + 1);
    if (!a->content) return mr_error(MR_ERR_NOMEM, "tokenizer: out of memory");
    memcpy(a->content, content, len);
    a->content[len] = 0;
    a->len = len;
    a->id = id;
    a->special = !!special;
    a->lstrip = !!lstrip;
    a->rstrip = !!rstrip;
    a->single_word = !!single_word;
    a->normalized = !!normalized;
    t->n_added++;
    MR_CHECK(tok_map_put(&t->added_map, content, len, id));
    if (id >= t->n_ids) t->n_ids = id + 1;
    return MR_OK;
}

/* Onig (what `tokenizers` uses) reads \s as Unicode White_Space; PCRE2's UCP
 * \s also takes U+180E.  Spell \s and \S out so both engines agree. */
#define WS_ITEMS "\\t-\\r \\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"

static mr_status rewrite_pattern(const char *p, size_t n, char **out, size_t *outlen) {
    size_t cap = n * 2 + sizeof WS_ITEMS * 4 + 16, o = 0;
    int in_class = 0, first = 0;
    char *r = malloc(cap);
    if (!r) return mr_error(MR_ERR_NOMEM, "tokenizer: out of memory");
    for (size_t i = 0; i < n; i++) {
        size_t need = o + (n - i) + sizeof WS_ITEMS + 8;
        if (need > cap) {
            cap = need * 2;
            char *q = realloc(r, cap);
            if (!q) { free(r); return mr_error(MR_ERR_NOMEM, "tokenizer: out of memory"); }
            r = q;
        }
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            char d = p[++i];
            if (d == 's') {
                o += (size_t)sprintf(r + o, in_class ? "%s" : "[%s]", WS_ITEMS);
            } else if (d == 'S' && !in_class) {
                o += (size_t)sprintf(r + o, "[^%s]", WS_ITEMS);
            } else {
                r[o++] = c;
                r[o++] = d;
            }
            first = 0;
            continue;
        }
        if (!in_class) {
            r[o++] = c;
            if (c == '[') {
                in_class = first = 1;
                if (i + 1 < n && p[i + 1] == '^') r[o++] = p[++i];
            }
            continue;
        }
        if (c == ']' && !first) {
            in_class = 0;
        } else if (c == '[' && i + 1 < n && p[i + 1] == ':') {
            /* POSIX class [:name:]: copy through its closing bracket */
            const char *e = memmem(p + i, n - i, ":]", 2);
            if (e) {
                size_t k = (size_t)(e - (p + i)) + 2;
                memcpy(r + o, p + i, k);
                o += k;
                i += k - 1;
                first = 0;
                continue;
            }
        }
        r[o++] = c;
        first = 0;
    }
    r[o] = 0;
    *out = r;
    *outlen = o;
    return MR_OK;
}

static mr_status compile_pattern(const mr_tokenizer *t, const char *pattern, size_t len, int literal,
                                 const char *where, pcre2_code **out) {
    char *pat = NULL;
    size_t plen = len;
    uint32_t opts = PCRE2_UTF;
    if (literal) {
        opts |= PCRE2_LITERAL;
    } else {
        /* Ruby syntax (onig's default): ^ and $ are line anchors. */
        opts |= PCRE2_UCP | PCRE2_MULTILINE;
        MR_CHECK(rewrite_pattern(pattern, len, &pat, &plen));
    }
    pcre2_compile_context *cc = pcre2_compile_context_create(NULL);
    if (!cc) { free(pat); return mr_error(MR_ERR_NOMEM, "tokenizer: out of memory"); }
    pcre2_set_newline(cc, PCRE2_NEWLINE_LF);
    int err;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)(pat ? pat : pattern), plen, opts, &err, &off, cc);
    pcre2_compile_context_free(cc);
    free(pat);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return mr_error(MR_ERR_INPUT, "%s: %s: regex /%.*s/ does not compile: %s", t->origin, where,
                        (int)len, pattern, (const char *)msg);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* the interpreter is the fallback */
    *out = re;
    return MR_OK;
}

static mr_status push_step(mr_tokenizer *t, tok_pre_step s) {
    void *p = realloc(t->pre, (size_t)(t->n_pre + 1) * sizeof *t->pre);
    if (!p) { if (s.re) pcre2_code_free(s.re); return mr_error(MR_ERR_NOMEM, "tokenizer: out of memory"); }
    t->pre = p;
    t->pre[t->n_pre++] = s;
    return MR_OK;
}

mr_status tok_add_split(mr_tokenizer *t, const char *pattern, size_t len, int literal,
                        tok_split_behavior behavior, int invert, const char *where) {
    tok_pre_step s = {TOK_PRE_SPLIT, NULL, behavior, invert, 0};
    MR_CHECK(compile_pattern(t, pattern, len, literal, where, &s.re));
    return push_step(t, s);
}

mr_status tok_add_bytelevel(mr_tokenizer *t, int add_prefix_space, int use_regex) {
    tok_pre_step s = {TOK_PRE_BYTELEVEL, NULL, TOK_SPLIT_ISOLATED, 0, add_prefix_space};
    if (use_regex)
        MR_CHECK(compile_pattern(t, GPT2_PATTERN, strlen(GPT2_PATTERN), 0, "ByteLevel", &s.re));
    return push_step(t, s);
}

/* Byte-level decoding of one token spelling: every char through the byte
 * table, or the raw UTF-8 if any char is outside it (as tokenizers does). */
static size_t token_decoded(const mr_tokenizer *t, const char *s, size_t n, char *out) {
    size_t bl;
    if (bytelevel_to_bytes(t, s, n, out, &bl)) return bl;
    memcpy(out, s, n);
    return n;
}

static mr_status trie_add(tok_trie *tr, const char *s, size_t n, int32_t idx) {
    int32_t *link = &tr->root[(uint8_t)s[0]];
    int32_t node = -1;
    for (size_t i = 0; i < n; i++) {
        int32_t c = *link;
        while (c >= 0 && tr->nodes[c].byte != (uint8_t)s[i]) c = tr->nodes[c].sibling;
        if (c < 0) {
            if (tr->n == tr->cap) {
                int cap = tr->cap ? tr->cap * 2 : 256;
                void *p = realloc(tr->nodes, (size_t)cap * sizeof *tr->nodes);
                if (!p) return mr_error(MR_ERR_NOMEM, "tokenizer: out of memory");
                tr->nodes = p;
                tr->cap = cap;
            }
            c = tr->n++;
            tr->nodes[c] = (tok_trie_node){-1, *link, -1, (uint8_t)s[i]};
            if (i == 0) c = tr->root[(uint8_t)s[0]] = c;
            else tr->nodes[node].child = c;
        }
        node = c;
        if (i + 1 < n) link = &tr->nodes[node].child;
    }
    if (tr->nodes[node].added < 0) tr->nodes[node].added = idx;
    return MR_OK;
}

mr_status tok_finish(mr_tokenizer *t) {
    if (t->n_pre == 0 || t->pre[t->n_pre - 1].kind != TOK_PRE_BYTELEVEL)
        return mr_error(MR_ERR_UNSUPPORTED,
                        "%s: pre_tokenizer must end with ByteLevel (only byte-level BPE is implemented)",
                        t->origin);
    for (int i = 0; i + 1 < t->n_pre; i++)
        if (t->pre[i].kind == TOK_PRE_BYTELEVEL)
            return mr_error(MR_ERR_UNSUPPORTED, "%s: ByteLevel must be the last pre-tokenizer", t->origin);
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        t->byte_id[b] = tok_map_get(&t->vocab_bytes, &c, 1);
    }
    /* Normalized added tokens are matched against normalized text, so their
     * contents are normalized too.  The tries give the longest match. */
    for (int i = 0; i < t->n_added; i++) {
        tok_added *a = &t->added[i];
        if (a->normalized && t->nfc && tok_nfc_needed(a->content, a->len)) {
            char *s;
            size_t n;
            MR_CHECK(tok_nfc(a->content, a->len, &s, &n));
            a->orig = a->content;
            a->orig_len = a->len;
            a->content = s;
            a->len = n;
        }
        if (a->single_word && !t->word_re) {
            /* Rust regex \w: Alphabetic, marks, Nd, Pc, joiners */
            static const char W[] = "[\\p{L}\\p{Nl}\\p{M}\\p{Nd}\\p{Pc}\\x{200c}\\x{200d}]";
            MR_CHECK(compile_pattern(t, W, sizeof W - 1, 0, "single_word", &t->word_re));
        }
    }
    for (int b = 0; b < 256; b++) t->trie_raw.root[b] = t->trie_norm.root[b] = -1;
    for (int i = 0; i < t->n_added; i++) {
        tok_added *a = &t->added[i];
        if (a->len) MR_CHECK(trie_add(a->normalized ? &t->trie_norm : &t->trie_raw, a->content, a->len, i));
    }
    /* id -> bytes table */
    size_t total = 0;
    for (size_t i = 0; i < t->vocab.n; i++) total += t->vocab.ents[i].len;
    for (int i = 0; i < t->n_added; i++) total += t->added[i].orig ? t->added[i].orig_len : t->added[i].len;
    t->id_off = calloc((size_t)t->n_ids + 1, sizeof *t->id_off);
    t->id_flags = calloc((size_t)t->n_ids + 1, 1);
    uint32_t *len = calloc((size_t)t->n_ids + 1, sizeof *len);
    const char **src = calloc((size_t)t->n_ids + 1, sizeof *src);
    t->id_bytes = malloc(total + 1);
    if (!t->id_off || !t->id_flags || !len || !src || !t->id_bytes) {
        free(len); free(src);
        return mr_error(MR_ERR_NOMEM, "tokenizer: out of memory");
    }
    for (size_t i = 0; i < t->vocab.n; i++) {
        const tok_map_ent *e = &t->vocab.ents[i];
        src[e->val] = t->vocab.blob + e->off;
        len[e->val] = e->len;
        t->id_flags[e->val] |= TOK_ID_PRESENT;
    }
    /* tokenizers looks an id up in the added vocabulary first, and decodes
     * the content as written, not the normalized one. */
    for (int i = 0; i < t->n_added; i++) {
        tok_added *a = &t->added[i];
        src[a->id] = a->orig ? a->orig : a->content;
        len[a->id] = (uint32_t)(a->orig ? a->orig_len : a->len);
        t->id_flags[a->id] |= TOK_ID_PRESENT | (a->special ? TOK_ID_SPECIAL : 0);
    }
    size_t o = 0;
    for (int32_t id = 0; id < t->n_ids; id++) {
        t->id_off[id] = (uint32_t)o;
        if (src[id]) o += token_decoded(t, src[id], len[id], t->id_bytes + o);
        size_t l = o - t->id_off[id];
        if (l > t->max_token_bytes) t->max_token_bytes = l;
    }
    t->id_off[t->n_ids] = (uint32_t)o;
    free(len);
    free(src);
    t->cache = calloc(1, sizeof *t->cache);
    if (!t->cache) return mr_error(MR_ERR_NOMEM, "tokenizer: out of memory");
    pthread_mutex_init(&t->cache->lock, NULL);
    if (t->unk_id >= t->n_ids) t->unk_id = -1;
    return MR_OK;
}

void mr_tokenizer_free(mr_tokenizer *t) {
    if (!t) return;
    tok_map_free(&t->vocab);
    tok_map_free(&t->vocab_bytes);
    tok_map_free(&t->added_map);
    free(t->merges.slots);
    free(t->id_off);
    free(t->id_bytes);
    free(t->id_flags);
    for (int i = 0; i < t->n_added; i++) {
        free(t->added[i].content);
        free(t->added[i].orig);
    }
    free(t->added);
    free(t->trie_raw.nodes);
    free(t->trie_norm.nodes);
    if (t->word_re) pcre2_code_free(t->word_re);
    for (int i = 0; i < t->n_pre; i++)
        if (t->pre[i].re) pcre2_code_free(t->pre[i].re);
    free(t->pre);
    free(t->prefix);
    free(t->suffix);
    if (t->cache) {
        pthread_mutex_destroy(&t->cache->lock);
        free(t->cache);
    }
    free(t->origin);
    free(t);
}

/* ---- getters ------------------------------------------------------------ */

int32_t mr_tokenizer_token_id(const mr_tokenizer *t, const char *token) {
    size_t n = strlen(token);
    int32_t id = tok_map_get(&t->added_map, token, n);
    return id >= 0 ? id : tok_map_get(&t->vocab, token, n);
}

const char *mr_tokenizer_token_bytes(const mr_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_ids) return NULL;
    *len = t->id_off[id + 1] - t->id_off[id];
    return t->id_bytes + t->id_off[id];
}

int mr_tokenizer_is_special(const mr_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_ids && (t->id_flags[id] & TOK_ID_SPECIAL);
}
int32_t mr_tokenizer_vocab_size(const mr_tokenizer *t) { return t->n_ids; }
int32_t mr_tokenizer_bos_id(const mr_tokenizer *t) { return t->bos_id; }
int32_t mr_tokenizer_eos_id(const mr_tokenizer *t) { return t->eos_id; }

static mr_status set_post(mr_tokenizer *t, const int32_t *pre, int npre, const int32_t *suf, int nsuf) {
    free(t->prefix);
    free(t->suffix);
    t->prefix = malloc(sizeof(int32_t) * (size_t)(npre + 1));
    t->suffix = malloc(sizeof(int32_t) * (size_t)(nsuf + 1));
    if (!t->prefix || !t->suffix) return mr_error(MR_ERR_NOMEM, "tokenizer: out of memory");
    if (npre) memcpy(t->prefix, pre, sizeof(int32_t) * (size_t)npre);
    if (nsuf) memcpy(t->suffix, suf, sizeof(int32_t) * (size_t)nsuf);
    t->n_prefix = npre;
    t->n_suffix = nsuf;
    return MR_OK;
}

/* ---- GGUF-style construction -------------------------------------------- */

/* The split patterns of each tokenizer.ggml.pre kind, as the matching Hugging
 * Face tokenizer.json files write them (llama.cpp's llama-vocab.cpp holds the
 * same list, some hand-expanded). */
static const char LLAMA3_PATTERN[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char QWEN2_PATTERN[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char *const DEEPSEEK_V3_PATTERNS[] = {
    "\\p{N}{1,3}",
    "[\\x{4e00}-\\x{9fa5}\\x{3040}-\\x{309f}\\x{30a0}-\\x{30ff}]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
    " ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    NULL,
};
static const char *const DEEPSEEK_LLM_PATTERNS[] = {
    "[\\r\\n]",
    "\\s?[A-Za-z\\x{b5}\\x{c0}-\\x{d6}\\x{d8}-\\x{f6}\\x{f8}-\\x{1ba}\\x{1bc}-\\x{1bf}\\x{1c4}-\\x{293}"
    "\\x{295}-\\x{2af}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37b}-\\x{37d}\\x{37f}\\x{386}\\x{388}-\\x{38a}"
    "\\x{38c}\\x{38e}-\\x{3a1}\\x{3a3}-\\x{3f5}\\x{3f7}-\\x{481}\\x{48a}-\\x{52f}\\x{531}-\\x{556}"
    "\\x{10a0}-\\x{10c5}\\x{13a0}-\\x{13f5}\\x{13f8}-\\x{13fd}\\x{1c90}-\\x{1cba}\\x{1cbd}-\\x{1cbf}"
    "\\x{1d00}-\\x{1d2b}\\x{1d6b}-\\x{1d77}\\x{1d79}-\\x{1d9a}\\x{1e00}-\\x{1f15}\\x{1f18}-\\x{1f1d}"
    "\\x{1f20}-\\x{1f45}\\x{1f48}-\\x{1f4d}\\x{1f50}-\\x{1f57}\\x{1f59}\\x{1f5b}\\x{1f5d}\\x{1f5f}-\\x{1f7d}"
    "\\x{1f80}-\\x{1fb4}\\x{1fb6}-\\x{1fbc}\\x{1fbe}\\x{1fc2}-\\x{1fc4}\\x{1fc6}-\\x{1fcc}\\x{1fd0}-\\x{1fd3}"
    "\\x{1fd6}-\\x{1fdb}\\x{1fe0}-\\x{1fec}\\x{1ff2}-\\x{1ff4}\\x{1ff6}-\\x{1ffc}\\x{2102}\\x{2107}"
    "\\x{210a}-\\x{2113}\\x{2115}\\x{2119}-\\x{211d}\\x{2124}\\x{2126}\\x{2128}\\x{212a}-\\x{212d}"
    "\\x{212f}-\\x{2134}\\x{2139}\\x{213c}-\\x{213f}\\x{2145}-\\x{2149}\\x{214e}\\x{2183}\\x{2184}"
    "\\x{2c00}-\\x{2c7b}\\x{2c7e}-\\x{2ce4}\\x{2ceb}-\\x{2cee}\\x{2cf2}\\x{2cf3}\\x{a640}-\\x{a66d}"
    "\\x{a680}-\\x{a69b}\\x{a722}-\\x{a76f}\\x{a771}-\\x{a787}\\x{a78b}-\\x{a78e}\\x{ab70}-\\x{abbf}"
    "\\x{fb00}-\\x{fb06}\\x{fb13}-\\x{fb17}\\x{ff21}-\\x{ff3a}\\x{ff41}-\\x{ff5a}\\x{10400}-\\x{1044f}"
    "\\x{104b0}-\\x{104d3}\\x{104d8}-\\x{104fb}\\x{10c80}-\\x{10cb2}\\x{10cc0}-\\x{10cf2}\\x{118a0}-\\x{118df}"
    "\\x{1e900}-\\x{1e943}]+",
    "\\s?[!-/:-~\\x{ff01}-\\x{ff0f}\\x{ff1a}-\\x{ff5e}\\x{2018}-\\x{201f}\\x{3000}-\\x{3002}]+",
    "\\s+$",
    "[\\x{4e00}-\\x{9fa5}\\x{800}-\\x{4e00}\\x{ac00}-\\x{d7ff}]+",
    "\\p{N}+",
    NULL,
};

static mr_status add_pre_kind(mr_tokenizer *t, const char *pre) {
    const char *const *splits = NULL;
    const char *one[2] = {NULL, NULL};
    int use_regex = 0;
    if (!strcmp(pre, "llama-bpe") || !strcmp(pre, "llama3") || !strcmp(pre, "llama-v3")) {
        one[0] = LLAMA3_PATTERN;
        t->ignore_merges = 1;
    } else if (!strcmp(pre, "qwen2") || !strcmp(pre, "deepseek-r1-qwen")) {
        one[0] = QWEN2_PATTERN;
        t->nfc = 1;
    } else if (!strcmp(pre, "gpt2") || !strcmp(pre, "gpt-2")) {
        use_regex = 1;
    } else if (!strcmp(pre, "smollm") || !strcmp(pre, "starcoder")) {
        one[0] = "\\p{N}"; /* Digits(individual_digits = true) */
        use_regex = 1;
    } else if (!strcmp(pre, "deepseek-v3")) {
        splits = DEEPSEEK_V3_PATTERNS;
    } else if (!strcmp(pre, "deepseek-llm")) {
        splits = DEEPSEEK_LLM_PATTERNS;
    } else {
        return mr_error(MR_ERR_UNSUPPORTED,
                        "%s: tokenizer.ggml.pre \"%s\" is not supported (supported: llama-bpe, gpt2, smollm, "
                        "qwen2, deepseek-r1-qwen, deepseek-llm, deepseek-v3)", t->origin, pre);
    }
    if (!splits) splits = one;
    for (int i = 0; splits[i]; i++)
        MR_CHECK(tok_add_split(t, splits[i], strlen(splits[i]), 0, TOK_SPLIT_ISOLATED, 0, pre));
    return tok_add_bytelevel(t, 0, use_regex);
}

mr_status mr_tokenizer_create_bpe(mr_tokenizer **out, const mr_tokenizer_vocab_desc *d) {
    mr_tokenizer *t = NULL;
    mr_status st;
    *out = NULL;
    MR_CHECK_GOTO(tok_new(&t, d->origin), st, fail);
    if (!d->pre) { st = mr_error(MR_ERR_INPUT, "%s: tokenizer.ggml.pre is missing", t->origin); goto fail; }
    if (d->n_tokens <= 0 || !d->tokens || d->n_merges < 0 || (d->n_merges && !d->merges)) {
        st = mr_error(MR_ERR_INPUT, "%s: tokenizer.ggml.tokens/merges are missing or empty", t->origin);
        goto fail;
    }
    if (d->bos_id >= d->n_tokens || d->eos_id >= d->n_tokens) {
        st = mr_error(MR_ERR_INPUT, "%s: bos id %d / eos id %d outside the %d tokens", t->origin, d->bos_id,
                      d->eos_id, d->n_tokens);
        goto fail;
    }
    for (int i = 0; i < d->n_tokens; i++) {
        int type = d->token_types ? d->token_types[i] : 1;
        const char *s = d->tokens[i];
        if (!s) { st = mr_error(MR_ERR_INPUT, "%s: token %d is missing", t->origin, i); goto fail; }
        size_t n = strlen(s);
        if (type == 3 || type == 4) {
            MR_CHECK_GOTO(tok_add_added(t, s, n, i, type == 3, 0, 0, 0, 0), st, fail);
            MR_CHECK_GOTO(tok_add_vocab(t, s, n, i), st, fail);
        } else if (type == 5) {
            if (i >= t->n_ids) t->n_ids = i + 1; /* padding ids: present, never produced */
        } else {
            MR_CHECK_GOTO(tok_add_vocab(t, s, n, i), st, fail);
        }
    }
    for (int i = 0; i < d->n_merges; i++) {
        const char *m = d->merges[i], *sp = m ? strchr(m, ' ') : NULL;
        char where[48];
        snprintf(where, sizeof where, "merge %d", i);
        if (!sp || strchr(sp + 1, ' ')) {
            st = mr_error(MR_ERR_INPUT, "%s: %s \"%s\" is not two tokens separated by one space", t->origin,
                          where, m ? m : "(null)");
            goto fail;
        }
        MR_CHECK_GOTO(tok_add_merge(t, m, (size_t)(sp - m), sp + 1, strlen(sp + 1), i, where), st, fail);
    }
    MR_CHECK_GOTO(add_pre_kind(t, d->pre), st, fail);
    t->bos_id = d->bos_id;
    t->eos_id = d->eos_id;
    int32_t bos = d->bos_id, eos = d->eos_id;
    MR_CHECK_GOTO(set_post(t, &bos, d->add_bos && bos >= 0, &eos, d->add_eos && eos >= 0), st, fail);
    MR_CHECK_GOTO(tok_finish(t), st, fail);
    *out = t;
    return MR_OK;
fail:
    mr_tokenizer_free(t);
    return st;
}

/* tokenizer.json loading is in tokenizer-json.c. */
