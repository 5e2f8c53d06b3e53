/* Internals of mr_tokenizer shared by tokenizer.c (loading), tokenizer-encode.c,
 * tokenizer-decode.c and tokenizer-nfc.c.  Not part of the public API. */
#ifndef MR_TOKENIZER_INTERNAL_H
#define MR_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stdint.h>

#include "runtime/tokenizer.h"

/* ---- byte string -> int32 map (open addressing, keys copied in) ------- */
typedef struct tok_map_ent {
    uint32_t off, len;
    uint32_t hash;
    int32_t val;
} tok_map_ent;

typedef struct tok_map {
    uint32_t *slots;        /* entry index + 1; 0 = empty */
    size_t cap;             /* power of two */
    tok_map_ent *ents;
    size_t n, ents_cap;
    char *blob;
    size_t blob_len, blob_cap;
} tok_map;

uint32_t tok_hash(const void *p, size_t n);
/* Insert or overwrite. */
mr_status tok_map_put(tok_map *m, const char *key, size_t len, int32_t val);
/* -1 if absent. */
int32_t tok_map_get(const tok_map *m, const char *key, size_t len);
void tok_map_free(tok_map *m);

/* ---- (left id, right id) -> (rank, merged id) ------------------------- */
typedef struct tok_merge_ent {
    uint64_t key;           /* UINT64_MAX = empty */
    int32_t rank, id;
} tok_merge_ent;

typedef struct tok_merge_map {
    tok_merge_ent *slots;
    size_t cap, n;
} tok_merge_map;

mr_status tok_merge_put(tok_merge_map *m, int32_t a, int32_t b, int32_t rank, int32_t id);
const tok_merge_ent *tok_merge_get(const tok_merge_map *m, int32_t a, int32_t b);

/* ---- pre-tokenizer steps ---------------------------------------------- */
typedef enum tok_split_behavior {
    TOK_SPLIT_REMOVED = 0,
    TOK_SPLIT_ISOLATED,
    TOK_SPLIT_MERGED_PREV,
    TOK_SPLIT_MERGED_NEXT,
    TOK_SPLIT_CONTIGUOUS,
    TOK_SPLIT_BEHAVIOR_COUNT
} tok_split_behavior;

typedef enum tok_pre_kind {
    TOK_PRE_SPLIT = 0,      /* Split and Digits */
    TOK_PRE_BYTELEVEL,      /* optional prefix space, optional GPT-2 split */
    TOK_PRE_KIND_COUNT
} tok_pre_kind;

typedef struct tok_pre_step {
    tok_pre_kind kind;
    pcre2_code *re;         /* NULL: ByteLevel without use_regex */
    tok_split_behavior behavior;
    int invert;
    int add_prefix_space;
} tok_pre_step;

/* ---- added tokens, matched in the text before pre-tokenization -------- */
typedef struct tok_added {
    int32_t id;
    char *content;          /* as matched (normalized tokens: normalized) */
    size_t len;
    char *orig;             /* as written in the file: what decodes */
    size_t orig_len;
    unsigned special : 1, lstrip : 1, rstrip : 1, single_word : 1, normalized : 1;
} tok_added;

typedef struct tok_trie_node {
    int32_t child, sibling; /* first child / next sibling, -1 = none */
    int32_t added;          /* index in t->added ending here, -1 = none */
    uint8_t byte;
} tok_trie_node;

typedef struct tok_trie {
    tok_trie_node *nodes;
    int n, cap;
    int32_t root[256];      /* first-level node per byte, -1 = none */
} tok_trie;

/* ---- word cache (repeated pre-tokens skip the merge loop) ------------- */
#define TOK_CACHE_SLOTS 8192
#define TOK_CACHE_KEY 48
#define TOK_CACHE_IDS 12
typedef struct tok_cache_slot {
    uint32_t hash;
    uint8_t klen, nids;
    char key[TOK_CACHE_KEY];
    int32_t ids[TOK_CACHE_IDS];
} tok_cache_slot;

typedef struct tok_cache {
    pthread_mutex_t lock;
    tok_cache_slot slots[TOK_CACHE_SLOTS];
} tok_cache;

enum { TOK_ID_SPECIAL = 1, TOK_ID_PRESENT = 2 };

struct mr_tokenizer {
    char *origin;
    int32_t n_ids;              /* max id + 1 */
    /* model */
    tok_map vocab;              /* byte-level spelling -> id */
    tok_map vocab_bytes;        /* raw bytes -> id */
    tok_merge_map merges;
    int32_t byte_id[256];       /* single-byte token, -1 if none */
    int32_t unk_id;             /* -1 if none */
    int fuse_unk, byte_fallback, ignore_merges;
    /* ids -> bytes */
    uint32_t *id_off;           /* n_ids + 1 offsets into id_bytes */
    char *id_bytes;
    uint8_t *id_flags;
    size_t max_token_bytes;
    /* added tokens */
    tok_added *added;
    int n_added, cap_added;
    tok_map added_map;          /* content -> id */
    tok_trie trie_raw, trie_norm;
    pcre2_code *word_re;        /* \w for single_word */
    /* normalizer: NFC or none */
    int nfc;
    tok_pre_step *pre;
    int n_pre;
    /* post-processor with add_special */
    int32_t *prefix, *suffix;
    int n_prefix, n_suffix;
    int32_t bos_id, eos_id;
    tok_cache *cache;
    /* byte <-> byte-level char */
    uint16_t byte_char[256];
    uint8_t char_byte[324];     /* valid where char_byte_ok */
    uint8_t char_byte_ok[324];
};

/* tokenizer.c: building blocks used by both loaders */
mr_status tok_new(mr_tokenizer **out, const char *origin);
mr_status tok_add_vocab(mr_tokenizer *t, const char *s, size_t len, int32_t id);
mr_status tok_add_merge(mr_tokenizer *t, const char *a, size_t alen, const char *b, size_t blen,
                        int32_t rank, const char *where);
mr_status tok_add_added(mr_tokenizer *t, const char *content, size_t len, int32_t id,
                        int special, int lstrip, int rstrip, int single_word, int normalized);
mr_status tok_add_split(mr_tokenizer *t, const char *pattern, size_t len, int literal,
                        tok_split_behavior behavior, int invert, const char *where);
mr_status tok_add_bytelevel(mr_tokenizer *t, int add_prefix_space, int use_regex);
mr_status tok_finish(mr_tokenizer *t);

/* tokenizer-decode.c: UTF-8 helpers */
/* Length of the well-formed sequence at s (1..4), 0 if ill-formed; *need is
 * set when the bytes so far are a valid but incomplete prefix (then return 0
 * and *sub = its length); otherwise *sub is the maximal-subpart length. */
int tok_utf8_seq(const uint8_t *s, size_t n, size_t *sub, int *incomplete);
/* Copy `n` bytes with each maximal ill-formed subpart as U+FFFD.  *out is
 * malloc'd (n*3+1 bytes at most). Returns MR_OK or NOMEM. */
mr_status tok_utf8_lossy(const char *s, size_t n, char **out, size_t *outlen);
int tok_utf8_encode(uint32_t cp, char *out);

/* tokenizer-nfc.c: NFC over tables that tokenizer-nfc-table.c holds
 * (generated by tests/reference/make_tokenizer_fixtures.py --nfc-table). */
int tok_nfc_needed(const char *s, size_t n);
mr_status tok_nfc(const char *s, size_t n, char **out, size_t *outlen);

typedef struct tok_ccc_range {
    uint32_t lo, hi;
    uint8_t ccc;
} tok_ccc_range;
typedef struct tok_decomp {
    uint32_t cp, a, b; /* canonical decomposition cp -> a b (b = 0: singleton) */
} tok_decomp;
typedef struct tok_comp {
    uint32_t a, b, cp; /* primary composite, sorted by (a, b) */
} tok_comp;
extern const tok_ccc_range tok_nfc_ccc[];
extern const size_t tok_nfc_ccc_n;
extern const tok_decomp tok_nfc_decomp[];
extern const size_t tok_nfc_decomp_n;
extern const tok_comp tok_nfc_comp[];
extern const size_t tok_nfc_comp_n;
extern const char tok_nfc_unicode_version[];

#endif
