/* Tokenizer tests (runtime/tokenizer*.c) against the `tokenizers` library.
 *
 * tests/fixtures/tokenizers/ holds a corpus and, per tokenizer, the ids that
 * tokenizers 0.22.2 produced (tests/reference/make_tokenizer_fixtures.py).
 * Every corpus line is encoded with and without special tokens and compared
 * id for id; decoding is compared with tokenizers' decode; lossless
 * tokenizers must give decode(encode(s)) == s; the streaming decoder must
 * emit valid UTF-8 at every step and add up to the full decode.  The same
 * vocabularies are also built through the GGUF-style constructor.  Errors
 * are checked for status and message. */
#define _GNU_SOURCE
#include "harness.h"
#include "runtime/tokenizer.h"

#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FIXTURES "tests/fixtures/tokenizers"

typedef struct line {
    char *text;
    size_t len;
    int valid, nfc;
} line;

typedef struct expect {
    int32_t *ids, *ids_sp;
    int n, n_sp;
    char *decoded, *decoded_skip;
    size_t dlen, dslen;
} expect;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static json_t **read_jsonl(const char *path, int *n) {
    FILE *f = fopen(path, "r");
    if (!f) { perror(path); exit(1); }
    json_t **v = NULL;
    int cap = 0;
    *n = 0;
    char *buf = NULL;
    size_t bcap = 0;
    ssize_t r;
    while ((r = getline(&buf, &bcap, f)) > 0) {
        json_error_t err;
        json_t *j = json_loadb(buf, (size_t)r, JSON_ALLOW_NUL, &err);
        if (!j) { fprintf(stderr, "%s:%d: %s\n", path, *n + 1, err.text); exit(1); }
        if (*n == cap) { cap = cap ? cap * 2 : 256; v = realloc(v, (size_t)cap * sizeof *v); }
        v[(*n)++] = j;
    }
    free(buf);
    fclose(f);
    return v;
}

static line *load_corpus(int *n) {
    json_t **j = read_jsonl(mr_test_src(FIXTURES "/corpus.jsonl"), n);
    line *c = calloc((size_t)*n, sizeof *c);
    for (int i = 0; i < *n; i++) {
        json_t *t = json_object_get(j[i], "text"), *h = json_object_get(j[i], "hex");
        if (t) {
            c[i].len = json_string_length(t);
            c[i].text = malloc(c[i].len + 1);
            memcpy(c[i].text, json_string_value(t), c[i].len + 1);
            c[i].valid = 1;
            c[i].nfc = json_is_true(json_object_get(j[i], "nfc"));
        } else {
            const char *hx = json_string_value(h);
            c[i].len = strlen(hx) / 2;
            c[i].text = malloc(c[i].len + 1);
            for (size_t k = 0; k < c[i].len; k++) sscanf(hx + 2 * k, "%2hhx", (unsigned char *)&c[i].text[k]);
            c[i].text[c[i].len] = 0;
        }
        json_decref(j[i]);
    }
    free(j);
    return c;
}

static int32_t *ids_of(json_t *a, int *n) {
    *n = (int)json_array_size(a);
    int32_t *v = malloc(sizeof(int32_t) * (size_t)(*n + 1));
    for (int i = 0; i < *n; i++) v[i] = (int32_t)json_integer_value(json_array_get(a, (size_t)i));
    return v;
}

static char *dup_string(json_t *s, size_t *len) {
    *len = json_string_length(s);
    char *r = malloc(*len + 1);
    memcpy(r, json_string_value(s), *len + 1);
    return r;
}

static expect *load_expected(const char *name, int n) {
    char rel[256];
    snprintf(rel, sizeof rel, FIXTURES "/%s/expected.jsonl", name);
    int m;
    json_t **j = read_jsonl(mr_test_src(rel), &m);
    if (m != n) { fprintf(stderr, "%s: %d lines, corpus has %d\n", rel, m, n); exit(1); }
    expect *e = calloc((size_t)n, sizeof *e);
    for (int i = 0; i < n; i++) {
        e[i].ids = ids_of(json_object_get(j[i], "ids"), &e[i].n);
        e[i].ids_sp = ids_of(json_object_get(j[i], "ids_special"), &e[i].n_sp);
        e[i].decoded = dup_string(json_object_get(j[i], "decoded"), &e[i].dlen);
        e[i].decoded_skip = dup_string(json_object_get(j[i], "decoded_skip"), &e[i].dslen);
        json_decref(j[i]);
    }
    free(j);
    return e;
}

static void free_expected(expect *e, int n) {
    for (int i = 0; i < n; i++) {
        free(e[i].ids);
        free(e[i].ids_sp);
        free(e[i].decoded);
        free(e[i].decoded_skip);
    }
    free(e);
}

static int utf8_valid(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        size_t l = c < 0x80 ? 1 : (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3 : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
        if (!l || i + l > n) return 0;
        for (size_t k = 1; k < l; k++) if ((u[i + k] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && u[i + 1] < 0xA0) return 0;
        if (c == 0xED && u[i + 1] > 0x9F) return 0;
        if (c == 0xF0 && u[i + 1] < 0x90) return 0;
        if (c == 0xF4 && u[i + 1] > 0x8F) return 0;
        i += l;
    }
    return 1;
}

static void show(const char *what, const line *l, const int32_t *got, int ng, const int32_t *want, int nw) {
    int k = 0;
    while (k < ng && k < nw && got[k] == want[k]) k++;
    fprintf(stderr, "  %s mismatch at token %d (got %d ids, want %d) for %s%.*s%s\n", what, k, ng, nw,
            l->valid ? "\"" : "invalid bytes \"", l->len > 160 ? 160 : (int)l->len, l->text,
            l->len > 160 ? "...\"" : "\"");
    fprintf(stderr, "    got:  ");
    for (int i = k > 3 ? k - 3 : 0; i < ng && i < k + 8; i++) fprintf(stderr, "%d ", got[i]);
    fprintf(stderr, "\n    want: ");
    for (int i = k > 3 ? k - 3 : 0; i < nw && i < k + 8; i++) fprintf(stderr, "%d ", want[i]);
    fprintf(stderr, "\n");
}

static int same_ids(const int32_t *a, int na, const int32_t *b, int nb) {
    return na == nb && (na == 0 || memcmp(a, b, sizeof(int32_t) * (size_t)na) == 0);
}

/* Feed ids one at a time; every chunk must be valid UTF-8 and the whole must
 * equal `full`. */
static int stream_matches(const mr_tokenizer *t, const int32_t *ids, int n, const char *full, size_t full_len) {
    mr_tokenizer_stream s;
    mr_tokenizer_stream_init(&s, t, 0);
    size_t cap = mr_tokenizer_stream_bound(t), total = 0;
    char *chunk = malloc(cap), *all = malloc(full_len * 2 + 16);
    int ok = 1;
    for (int i = 0; i <= n && ok; i++) {
        size_t len = 0;
        mr_status st = i < n ? mr_tokenizer_stream_push(&s, ids[i], chunk, cap, &len)
                             : mr_tokenizer_stream_flush(&s, chunk, cap, &len);
        ok = st == MR_OK && utf8_valid(chunk, len) && total + len <= full_len;
        if (ok) { memcpy(all + total, chunk, len); total += len; }
    }
    ok = ok && total == full_len && memcmp(all, full, full_len) == 0;
    free(chunk);
    free(all);
    return ok;
}

typedef struct run_stats {
    int enc_ok, enc_bad, sp_ok, sp_bad, dec_ok, dec_bad, rt_ok, rt_bad, stream_ok, stream_bad;
} run_stats;

/* Compare every corpus line; `lossless`: decode(encode(s)) must give s back. */
static run_stats check_corpus(const char *name, const mr_tokenizer *t, const line *c, const expect *e, int n,
                              int lossless, int nfc, int full) {
    run_stats r = {0};
    int shown = 0;
    for (int i = 0; i < n; i++) {
        int32_t *ids = NULL;
        int nids = 0;
        mr_status st = mr_tokenizer_encode(t, c[i].text, c[i].len, 0, &ids, &nids);
        if (st != MR_OK || !same_ids(ids, nids, e[i].ids, e[i].n)) {
            r.enc_bad++;
            if (shown++ < 5) {
                fprintf(stderr, "%s line %d: %s\n", name, i + 1, st == MR_OK ? "" : mr_last_error());
                show("ids", &c[i], ids, nids, e[i].ids, e[i].n);
            }
        } else {
            r.enc_ok++;
        }
        int32_t *sp = NULL;
        int nsp = 0;
        st = mr_tokenizer_encode(t, c[i].text, c[i].len, 1, &sp, &nsp);
        if (st == MR_OK && same_ids(sp, nsp, e[i].ids_sp, e[i].n_sp)) r.sp_ok++;
        else { r.sp_bad++; if (shown++ < 5) show("ids_special", &c[i], sp, nsp, e[i].ids_sp, e[i].n_sp); }
        free(sp);
        if (full) {
            /* decode the expected ids, so a decode bug shows apart from encode */
            char *txt = NULL, *skip = NULL;
            size_t tl = 0, sl = 0;
            mr_status a = mr_tokenizer_decode(t, e[i].ids, e[i].n, 0, &txt, &tl);
            mr_status b = mr_tokenizer_decode(t, e[i].ids, e[i].n, 1, &skip, &sl);
            if (a == MR_OK && b == MR_OK && tl == e[i].dlen && !memcmp(txt, e[i].decoded, tl) &&
                sl == e[i].dslen && !memcmp(skip, e[i].decoded_skip, sl)) {
                r.dec_ok++;
            } else {
                r.dec_bad++;
                if (shown++ < 5)
                    fprintf(stderr, "%s line %d: decode \"%.*s\" want \"%s\"\n", name, i + 1, (int)tl, txt ? txt : "",
                            e[i].decoded);
            }
            if (lossless && c[i].valid && (!nfc || c[i].nfc)) {
                if (tl == c[i].len && !memcmp(txt, c[i].text, tl)) r.rt_ok++;
                else { r.rt_bad++; if (shown++ < 5) fprintf(stderr, "%s line %d: round trip differs\n", name, i + 1); }
            }
            if (a == MR_OK && stream_matches(t, e[i].ids, e[i].n, txt, tl)) r.stream_ok++;
            else { r.stream_bad++; if (shown++ < 5) fprintf(stderr, "%s line %d: stream differs\n", name, i + 1); }
            free(txt);
            free(skip);
        }
        free(ids);
    }
    return r;
}

/* The tokenizer.json's vocabulary as GGUF arrays (token_type 3 for special
 * added tokens, 4 for the others, 5 for holes). */
static mr_status create_like_gguf(mr_tokenizer **out, const char *name, const char *pre, int32_t bos) {
    char rel[256];
    snprintf(rel, sizeof rel, FIXTURES "/%s/tokenizer.json", name);
    json_error_t err;
    json_t *root = json_load_file(mr_test_src(rel), 0, &err);
    if (!root) { fprintf(stderr, "%s: %s\n", rel, err.text); exit(1); }
    json_t *vocab = json_object_get(json_object_get(root, "model"), "vocab");
    json_t *merges = json_object_get(json_object_get(root, "model"), "merges");
    json_t *added = json_object_get(root, "added_tokens");
    int n = 0;
    const char *key;
    json_t *v;
    size_t i;
    json_object_foreach(vocab, key, v) if (json_integer_value(v) >= n) n = (int)json_integer_value(v) + 1;
    json_array_foreach(added, i, v) {
        int id = (int)json_integer_value(json_object_get(v, "id"));
        if (id >= n) n = id + 1;
    }
    const char **toks = calloc((size_t)n, sizeof *toks);
    int32_t *types = calloc((size_t)n, sizeof *types);
    for (int k = 0; k < n; k++) { toks[k] = "[HOLE]"; types[k] = 5; }
    json_object_foreach(vocab, key, v) { toks[json_integer_value(v)] = key; types[json_integer_value(v)] = 1; }
    json_array_foreach(added, i, v) {
        int id = (int)json_integer_value(json_object_get(v, "id"));
        toks[id] = json_string_value(json_object_get(v, "content"));
        types[id] = json_is_true(json_object_get(v, "special")) ? 3 : 4;
    }
    int nm = (int)json_array_size(merges);
    char **ms = calloc((size_t)nm, sizeof *ms);
    json_array_foreach(merges, i, v) {
        if (json_is_string(v)) ms[i] = strdup(json_string_value(v));
        else if (asprintf(&ms[i], "%s %s", json_string_value(json_array_get(v, 0)),
                          json_string_value(json_array_get(v, 1))) < 0) exit(1);
    }
    mr_tokenizer_vocab_desc d = {name, n, toks, types, nm, (const char *const *)ms, pre, bos, -1, bos >= 0, 0};
    mr_status st = mr_tokenizer_create_bpe(out, &d);
    for (int k = 0; k < nm; k++) free(ms[k]);
    free(ms);
    free(toks);
    free(types);
    json_decref(root);
    return st;
}

typedef struct thread_arg {
    const mr_tokenizer *t;
    const line *c;
    const expect *e;
    int n, bad;
} thread_arg;

static void *encode_all(void *p) {
    thread_arg *a = p;
    for (int i = a->n - 1; i >= 0; i--) {
        int32_t *ids;
        int n;
        if (mr_tokenizer_encode(a->t, a->c[i].text, a->c[i].len, 0, &ids, &n) != MR_OK ||
            !same_ids(ids, n, a->e[i].ids, a->e[i].n)) a->bad++;
        else free(ids);
    }
    return NULL;
}

static void test_tokenizers(const line *c, int n) {
    static const struct {
        const char *name, *gguf_pre;
        int lossless, nfc;
    } list[] = {
        {"deepseek-v3", "deepseek-v3", 1, 0},   {"qwen2", "qwen2", 1, 1},
        {"smollm2", "smollm", 1, 0},            {"r1-distill-qwen", "deepseek-r1-qwen", 1, 1},
        {"tiny-llama3", "llama-bpe", 1, 0},     {"tiny-gpt2", "gpt2", 1, 0},
        {"tiny-deepseek-llm", "deepseek-llm", 1, 0}, {"tiny-mixed", NULL, 0, 1},
    };
    printf("%-17s %6s %9s %9s %9s %9s %9s %9s\n", "tokenizer", "load_s", "ids", "ids+sp", "decode", "roundtrip",
           "stream", "gguf-path");
    for (size_t k = 0; k < sizeof list / sizeof list[0]; k++) {
        char rel[256];
        snprintf(rel, sizeof rel, FIXTURES "/%s/tokenizer.json", list[k].name);
        mr_tokenizer *t = NULL;
        double t0 = now();
        mr_status st = mr_tokenizer_load_json(&t, mr_test_src(rel));
        double load_s = now() - t0;
        CHECK(st == MR_OK, "%s: %s", list[k].name, mr_last_error());
        if (st != MR_OK) continue;
        expect *e = load_expected(list[k].name, n);
        run_stats r = check_corpus(list[k].name, t, c, e, n, list[k].lossless, list[k].nfc, 1);
        CHECK(r.enc_bad == 0, "%s: %d of %d lines encode differently", list[k].name, r.enc_bad, n);
        CHECK(r.sp_bad == 0, "%s: %d lines differ with add_special", list[k].name, r.sp_bad);
        CHECK(r.dec_bad == 0, "%s: %d lines decode differently", list[k].name, r.dec_bad);
        CHECK(r.rt_bad == 0, "%s: %d lines do not round-trip", list[k].name, r.rt_bad);
        CHECK(r.stream_bad == 0, "%s: %d lines stream differently", list[k].name, r.stream_bad);
        char gg[32] = "-";
        if (list[k].gguf_pre) {
            /* BOS as GGUF's add_bos_token would say: what add_special adds */
            int32_t *ids = NULL, bos = -1;
            int nids = 0;
            if (mr_tokenizer_encode(t, "", 0, 1, &ids, &nids) == MR_OK && nids == 1) bos = ids[0];
            free(ids);
            mr_tokenizer *g = NULL;
            st = create_like_gguf(&g, list[k].name, list[k].gguf_pre, bos);
            CHECK(st == MR_OK, "%s via GGUF arrays: %s", list[k].name, mr_last_error());
            if (st == MR_OK) {
                run_stats rg = check_corpus(list[k].name, g, c, e, n, 0, 0, 0);
                CHECK(rg.enc_bad == 0 && rg.sp_bad == 0, "%s via GGUF arrays: %d lines differ, %d with add_special",
                      list[k].name, rg.enc_bad, rg.sp_bad);
                snprintf(gg, sizeof gg, "%d/%d", rg.enc_ok, n);
                mr_tokenizer_free(g);
            }
        }
        printf("%-17s %6.2f %5d/%-3d %5d/%-3d %5d/%-3d %5d/%-3d %5d/%-3d %9s\n", list[k].name, load_s, r.enc_ok, n,
               r.sp_ok, n, r.dec_ok, n, r.rt_ok, r.rt_ok + r.rt_bad, r.stream_ok, n, gg);
        if (k == 1) { /* several threads share one tokenizer (and its cache) */
            pthread_t th[4];
            thread_arg a[4];
            for (int i = 0; i < 4; i++) {
                a[i] = (thread_arg){t, c, e, n, 0};
                pthread_create(&th[i], NULL, encode_all, &a[i]);
            }
            int bad = 0;
            for (int i = 0; i < 4; i++) { pthread_join(th[i], NULL); bad += a[i].bad; }
            CHECK(bad == 0, "qwen2: %d encodes differ when 4 threads encode at once", bad);
        }
        free_expected(e, n);
        mr_tokenizer_free(t);
    }
}

static mr_tokenizer *load(const char *name) {
    char rel[256];
    snprintf(rel, sizeof rel, FIXTURES "/%s/tokenizer.json", name);
    mr_tokenizer *t = NULL;
    if (mr_tokenizer_load_json(&t, mr_test_src(rel)) != MR_OK) {
        fprintf(stderr, "%s: %s\n", name, mr_last_error());
        exit(1);
    }
    return t;
}

static void test_api(void) {
    mr_tokenizer *q = load("qwen2");
    CHECK(mr_tokenizer_token_id(q, "<|im_end|>") == 151645, "im_end id %d", mr_tokenizer_token_id(q, "<|im_end|>"));
    CHECK(mr_tokenizer_token_id(q, "<tool_call>") == 151657, "tool_call id");
    CHECK(mr_tokenizer_token_id(q, "Hello") >= 0, "vocab lookup by spelling");
    CHECK(mr_tokenizer_token_id(q, "no such token") == -1, "missing token");
    CHECK(mr_tokenizer_vocab_size(q) == 151665, "vocab size %d", mr_tokenizer_vocab_size(q));
    CHECK(mr_tokenizer_is_special(q, 151645) && !mr_tokenizer_is_special(q, 151657), "special flags");
    CHECK(mr_tokenizer_bos_id(q) == -1 && mr_tokenizer_eos_id(q) == -1, "qwen2 has no bos/eos in tokenizer.json");
    int32_t bad = 151665;
    char *txt = NULL;
    size_t tl;
    CHECK(mr_tokenizer_decode(q, &bad, 1, 0, &txt, &tl) == MR_ERR_INPUT &&
          mr_test_contains(mr_last_error(), "151665"), "out-of-range id: %s", mr_last_error());
    /* Streaming "é" split over two byte tokens: nothing until complete. */
    int32_t *ids;
    int n;
    CHECK(mr_tokenizer_encode(q, "\xc3\xa9\xe4\xb8\xad", 5, 0, &ids, &n) == MR_OK, "encode");
    free(ids);
    int32_t c3 = mr_tokenizer_token_id(q, "\xc3\x83"), a9 = mr_tokenizer_token_id(q, "\xc2\xa9"); /* Ã, © */
    mr_tokenizer_stream s;
    mr_tokenizer_stream_init(&s, q, 0);
    char out[64];
    size_t len = 99;
    CHECK(c3 >= 0 && a9 >= 0, "byte tokens");
    CHECK(mr_tokenizer_stream_push(&s, c3, out, sizeof out, &len) == MR_OK && len == 0, "held back (%zu)", len);
    CHECK(mr_tokenizer_stream_push(&s, a9, out, sizeof out, &len) == MR_OK && len == 2 && !memcmp(out, "\xc3\xa9", 2),
          "completed");
    CHECK(mr_tokenizer_stream_push(&s, c3, out, sizeof out, &len) == MR_OK && len == 0, "held again");
    CHECK(mr_tokenizer_stream_flush(&s, out, sizeof out, &len) == MR_OK && len == 3 && !memcmp(out, "\xef\xbf\xbd", 3),
          "flush gives U+FFFD");
    CHECK(mr_tokenizer_stream_push(&s, c3, out, 0, &len) == MR_OK && len == 0, "pending needs no room");
    CHECK(mr_tokenizer_stream_push(&s, c3, out, 2, &len) == MR_ERR_INPUT, "too small a buffer is an error");
    /* A long text: time it. */
    size_t big = 200000;
    char *text = malloc(big + 1);
    const char *words[] = {"the ", "quick ", "brown ", "fox ", "jumps ", "over ", "lazy ", "dog. ", "中文 ", "😀 ", "123 ", "\n"};
    size_t o = 0;
    for (unsigned k = 0; o + 8 < big; k = k * 1103515245u + 12345u) {
        const char *w = words[(k >> 16) % 12];
        memcpy(text + o, w, strlen(w));
        o += strlen(w);
    }
    double t0 = now();
    CHECK(mr_tokenizer_encode(q, text, o, 0, &ids, &n) == MR_OK, "long encode");
    double dt = now() - t0;
    printf("qwen2: encoded %zu bytes into %d tokens in %.3f s (%.1f MB/s)\n", o, n, dt, (double)o / dt / 1e6);
    free(ids);
    memset(text, 'a', 50000);
    t0 = now();
    CHECK(mr_tokenizer_encode(q, text, 50000, 0, &ids, &n) == MR_OK, "50 KB word");
    printf("qwen2: one 50000-byte word -> %d tokens in %.3f s\n", n, now() - t0);
    CHECK(now() - t0 < 2.0, "a 50 KB word must not take quadratic time");
    free(ids);
    free(text);
    mr_tokenizer_free(q);

    mr_tokenizer *d = load("deepseek-v3"); /* bos/eos from tokenizer_config.json */
    CHECK(mr_tokenizer_bos_id(d) == 0 && mr_tokenizer_eos_id(d) == 1, "deepseek bos %d eos %d", mr_tokenizer_bos_id(d),
          mr_tokenizer_eos_id(d));
    CHECK(mr_tokenizer_token_id(d, "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>") == 0, "bos by name");
    mr_tokenizer_free(d);
    mr_tokenizer *r = load("r1-distill-qwen"); /* Qwen2 vocabulary, DeepSeek's bos/eos and chat tokens */
    CHECK(mr_tokenizer_bos_id(r) == 151646 && mr_tokenizer_eos_id(r) == 151643, "r1-distill bos %d eos %d",
          mr_tokenizer_bos_id(r), mr_tokenizer_eos_id(r));
    CHECK(mr_tokenizer_vocab_size(r) == 151665, "r1-distill vocab size %d", mr_tokenizer_vocab_size(r));
    CHECK(mr_tokenizer_token_id(r, "<think>") == 151648 && !mr_tokenizer_is_special(r, 151648) &&
          !mr_tokenizer_is_special(r, 151644) && mr_tokenizer_is_special(r, 151643), "r1-distill added tokens");
    mr_tokenizer_free(r);
    mr_tokenizer *l = load("tiny-llama3"); /* bos from TemplateProcessing */
    CHECK(mr_tokenizer_bos_id(l) == mr_tokenizer_token_id(l, "<|begin_of_text|>") && mr_tokenizer_bos_id(l) >= 0,
          "template bos %d", mr_tokenizer_bos_id(l));
    mr_tokenizer_free(l);
}

/* Random bytes (mostly ill-formed UTF-8) and random id sequences: encode
 * never fails, decode is valid UTF-8, encoding the decoded text gives the
 * same ids again, and streaming any ids adds up to decode(). */
static void test_random(void) {
    static const char *names[] = {"deepseek-v3", "qwen2"};
    static const char *frags[] = {"<|im_end|>", "<\xef\xbd\x9cUser\xef\xbd\x9c>", "'s", " ", "\n", "e\xcc\x81",
                                  "\xf0\x9f\x98\x80", "12", "ab"};
    uint64_t x = 88172645463325252ull;
#define RND() (x ^= x << 13, x ^= x >> 7, x ^= x << 17, x)
    for (int k = 0; k < 2; k++) {
        mr_tokenizer *t = load(names[k]);
        int bad_enc = 0, bad_utf8 = 0, bad_again = 0, bad_stream = 0;
        char buf[256];
        for (int it = 0; it < 3000; it++) {
            size_t n = 0, want = RND() % 64;
            while (n < want) {
                uint64_t r = RND();
                if (r % 5 == 0) {
                    const char *f = frags[(r >> 8) % (sizeof frags / sizeof frags[0])];
                    size_t l = strlen(f);
                    memcpy(buf + n, f, l);
                    n += l;
                } else {
                    buf[n++] = (char)(r % 3 ? 0x80 + (r >> 8) % 0x80 : 0x20 + (r >> 8) % 0x60);
                }
            }
            int32_t *ids = NULL, *again = NULL;
            int ni = 0, na = 0;
            char *txt = NULL;
            size_t tl = 0;
            if (mr_tokenizer_encode(t, buf, n, 0, &ids, &ni) != MR_OK ||
                mr_tokenizer_decode(t, ids, ni, 0, &txt, &tl) != MR_OK) {
                bad_enc++;
            } else {
                bad_utf8 += !utf8_valid(txt, tl);
                if (mr_tokenizer_encode(t, txt, tl, 0, &again, &na) != MR_OK || !same_ids(ids, ni, again, na))
                    bad_again++;
            }
            free(ids);
            free(again);
            free(txt);
            /* random ids, many of them partial UTF-8 */
            int32_t rid[16];
            int nr = 1 + (int)(RND() % 16);
            for (int i = 0; i < nr; i++) rid[i] = (int32_t)(RND() % (uint64_t)mr_tokenizer_vocab_size(t));
            if (mr_tokenizer_decode(t, rid, nr, 0, &txt, &tl) != MR_OK || !stream_matches(t, rid, nr, txt, tl))
                bad_stream++;
            free(txt);
        }
        CHECK(bad_enc == 0, "%s: %d random inputs failed", names[k], bad_enc);
        CHECK(bad_utf8 == 0, "%s: %d decodes are not valid UTF-8", names[k], bad_utf8);
        CHECK(bad_again == 0, "%s: %d re-encodes differ", names[k], bad_again);
        CHECK(bad_stream == 0, "%s: %d random id streams differ from decode", names[k], bad_stream);
        mr_tokenizer_free(t);
    }
#undef RND
}

/* ---- errors ---------------------------------------------------------------- */

static char tmp_files[32][1024];
static int n_tmp_files = 0;

static const char *write_tmp(const char *name, const char *text) {
    if (n_tmp_files == 32) { fprintf(stderr, "too many temporary files\n"); exit(1); }
    char *p = tmp_files[n_tmp_files++];
    snprintf(p, sizeof tmp_files[0], "%s/%s", mr_test_tmpdir(), name);
    FILE *f = fopen(p, "w");
    if (!f) { perror(p); exit(1); }
    fputs(text, f);
    fclose(f);
    return p;
}

#define GOOD_MODEL "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a b\"]}"
#define GOOD_PRE "\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true}"
#define GOOD_DEC "\"decoder\": {\"type\": \"ByteLevel\"}"

static void expect_error(const char *file, const char *json, mr_status want, const char *needle1, const char *needle2) {
    const char *p = write_tmp(file, json);
    mr_tokenizer *t = NULL;
    mr_status st = mr_tokenizer_load_json(&t, p);
    CHECK(st == want && t == NULL, "%s: status %s, want %s", file, mr_status_name(st), mr_status_name(want));
    CHECK(mr_test_contains(mr_last_error(), needle1) && mr_test_contains(mr_last_error(), needle2),
          "%s: message \"%s\" lacks \"%s\"/\"%s\"", file, mr_last_error(), needle1, needle2);
    mr_tokenizer_free(t);
}

static void test_errors(void) {
    mr_tokenizer *t = NULL;
    mr_status st = mr_tokenizer_load_json(&t, "/nonexistent/dir/tokenizer.json");
    CHECK(st == MR_ERR_IO && mr_test_contains(mr_last_error(), "/nonexistent/dir/tokenizer.json"), "missing file: %s",
          mr_last_error());
    expect_error("bad.json", "{\n  \"model\": {\n    \"vocab\": {\"a\" 0}\n  }\n}\n", MR_ERR_INPUT, "bad.json:3:", "invalid JSON");
    expect_error("wp.json", "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}, " GOOD_PRE ", " GOOD_DEC "}",
                 MR_ERR_UNSUPPORTED, "wp.json", "\"WordPiece\"");
    expect_error("uni.json", "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", MR_ERR_UNSUPPORTED, "uni.json", "Unigram");
    expect_error("ws.json", "{" GOOD_MODEL ", \"pre_tokenizer\": {\"type\": \"Whitespace\"}, " GOOD_DEC "}",
                 MR_ERR_UNSUPPORTED, "ws.json", "\"Whitespace\"");
    expect_error("seqws.json", "{" GOOD_MODEL ", \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": "
                 "[{\"type\": \"ByteLevel\"}, {\"type\": \"Metaspace\"}]}, " GOOD_DEC "}",
                 MR_ERR_UNSUPPORTED, "seqws.json", "\"Metaspace\"");
    expect_error("nfkc.json", "{" GOOD_MODEL ", \"normalizer\": {\"type\": \"NFKC\"}, " GOOD_PRE ", " GOOD_DEC "}",
                 MR_ERR_UNSUPPORTED, "nfkc.json", "\"NFKC\"");
    expect_error("lower.json", "{" GOOD_MODEL ", \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": "
                 "[{\"type\": \"NFC\"}, {\"type\": \"Lowercase\"}]}, " GOOD_PRE ", " GOOD_DEC "}",
                 MR_ERR_UNSUPPORTED, "lower.json", "\"Lowercase\"");
    expect_error("nopre.json", "{" GOOD_MODEL ", " GOOD_DEC "}", MR_ERR_UNSUPPORTED, "nopre.json", "ByteLevel");
    expect_error("dec.json", "{" GOOD_MODEL ", " GOOD_PRE ", \"decoder\": {\"type\": \"WordPiece\"}}",
                 MR_ERR_UNSUPPORTED, "dec.json", "\"WordPiece\"");
    expect_error("post.json", "{" GOOD_MODEL ", " GOOD_PRE ", \"post_processor\": {\"type\": \"Fancy\"}, " GOOD_DEC "}",
                 MR_ERR_UNSUPPORTED, "post.json", "\"Fancy\"");
    expect_error("merge.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a c\"]}, " GOOD_PRE
                 ", " GOOD_DEC "}", MR_ERR_INPUT, "merges[0]", "\"c\"");
    expect_error("regex.json", "{" GOOD_MODEL ", \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": "
                 "[{\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}, \"behavior\": \"Isolated\"}, "
                 "{\"type\": \"ByteLevel\"}]}, " GOOD_DEC "}", MR_ERR_INPUT, "regex.json", "does not compile");
    expect_error("drop.json", "{\"model\": {\"type\": \"BPE\", \"dropout\": 0.1, \"vocab\": {}}, " GOOD_PRE ", " GOOD_DEC "}",
                 MR_ERR_UNSUPPORTED, "drop.json", "dropout");
    /* the minimal good file loads and merges */
    const char *p = write_tmp("good.json", "{" GOOD_MODEL ", " GOOD_PRE ", " GOOD_DEC "}");
    st = mr_tokenizer_load_json(&t, p);
    CHECK(st == MR_OK, "good.json: %s", mr_last_error());
    if (st == MR_OK) {
        int32_t *ids;
        int n;
        CHECK(mr_tokenizer_encode(t, "ab", 2, 1, &ids, &n) == MR_OK && n == 1 && ids[0] == 2, "merge a b");
        free(ids);
        mr_tokenizer_free(t);
    }
    const char *toks[] = {"a", "b"};
    mr_tokenizer_vocab_desc d = {"x.gguf", 2, toks, NULL, 0, NULL, "no-such-pre", -1, -1, 0, 0};
    st = mr_tokenizer_create_bpe(&t, &d);
    CHECK(st == MR_ERR_UNSUPPORTED && mr_test_contains(mr_last_error(), "\"no-such-pre\"") &&
          mr_test_contains(mr_last_error(), "x.gguf"), "unknown pre: %s", mr_last_error());
    const char *merges[] = {"a  b"};
    mr_tokenizer_vocab_desc d2 = {"y.gguf", 2, toks, NULL, 1, merges, "gpt2", -1, -1, 0, 0};
    st = mr_tokenizer_create_bpe(&t, &d2);
    CHECK(st == MR_ERR_INPUT && mr_test_contains(mr_last_error(), "merge 0"), "bad merge: %s", mr_last_error());
}

int main(void) {
    int n;
    line *c = load_corpus(&n);
    CHECK(n >= 200, "corpus has %d lines", n);
    test_tokenizers(c, n);
    test_api();
    test_random();
    test_errors();
    for (int i = 0; i < n; i++) free(c[i].text);
    free(c);
    for (int i = 0; i < n_tmp_files; i++) unlink(tmp_files[i]);
    rmdir(mr_test_tmpdir());
    return mr_test_summary();
}
