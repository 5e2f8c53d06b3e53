/* tokenizer.json (Hugging Face `tokenizers` serialization) -> mr_tokenizer.
 * Every component the file names is either implemented exactly or refused
 * with its name: model BPE; normalizers NFC and Sequence; pre-tokenizers
 * ByteLevel, Split, Digits and Sequence; post-processors ByteLevel,
 * TemplateProcessing, RobertaProcessing, BertProcessing and Sequence;
 * decoder ByteLevel. */
#define _GNU_SOURCE
#include "runtime/tokenizer-internal.h"

#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct jctx {
    mr_tokenizer *t;
    const char *path;
} jctx;

static mr_status get_bool(jctx *c, json_t *obj, const char *where, const char *key, int def, int *out) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) { *out = def; return MR_OK; }
    if (!json_is_boolean(v)) return mr_error(MR_ERR_INPUT, "%s: %s.%s must be true or false", c->path, where, key);
    *out = json_is_true(v);
    return MR_OK;
}

static const char *type_of(json_t *obj) {
    json_t *v = json_object_get(obj, "type");
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* ---- model ---------------------------------------------------------------- */

static mr_status parse_merge(jctx *c, json_t *m, size_t rank) {
    char where[48];
    snprintf(where, sizeof where, "model.merges[%zu]", rank);
    if (rank > INT32_MAX) return mr_error(MR_ERR_INPUT, "%s: too many merges", c->path);
    if (json_is_string(m)) {
        const char *s = json_string_value(m);
        size_t n = json_string_length(m);
        const char *sp = memchr(s, ' ', n);
        if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp + 1 - s)))
            return mr_error(MR_ERR_INPUT, "%s: %s \"%s\" is not two tokens separated by one space", c->path,
                            where, s);
        return tok_add_merge(c->t, s, (size_t)(sp - s), sp + 1, n - (size_t)(sp + 1 - s), (int32_t)rank, where);
    }
    if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
        json_is_string(json_array_get(m, 1))) {
        json_t *a = json_array_get(m, 0), *b = json_array_get(m, 1);
        return tok_add_merge(c->t, json_string_value(a), json_string_length(a), json_string_value(b),
                             json_string_length(b), (int32_t)rank, where);
    }
    return mr_error(MR_ERR_INPUT, "%s: %s must be \"a b\" or [\"a\", \"b\"]", c->path, where);
}

static mr_status parse_model(jctx *c, json_t *model) {
    mr_tokenizer *t = c->t;
    if (!json_is_object(model)) return mr_error(MR_ERR_INPUT, "%s: \"model\" is missing or not an object", c->path);
    const char *type = type_of(model);
    if (type && strcmp(type, "BPE"))
        return mr_error(MR_ERR_UNSUPPORTED, "%s: model type \"%s\" is not supported (only BPE)", c->path, type);
    if (!type && !json_object_get(model, "merges"))
        return mr_error(MR_ERR_UNSUPPORTED, "%s: model has no type and no merges (only BPE is supported)", c->path);
    json_t *v = json_object_get(model, "dropout");
    if (v && !json_is_null(v) && !(json_is_number(v) && json_number_value(v) == 0.0))
        return mr_error(MR_ERR_UNSUPPORTED, "%s: model.dropout %g is not supported (encoding must be deterministic)",
                        c->path, json_number_value(v));
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        v = json_object_get(model, affixes[i]);
        if (v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0))
            return mr_error(MR_ERR_UNSUPPORTED, "%s: model.%s \"%s\" is not supported", c->path, affixes[i],
                            json_is_string(v) ? json_string_value(v) : "?");
    }
    MR_CHECK(get_bool(c, model, "model", "fuse_unk", 0, &t->fuse_unk));
    MR_CHECK(get_bool(c, model, "model", "byte_fallback", 0, &t->byte_fallback));
    MR_CHECK(get_bool(c, model, "model", "ignore_merges", 0, &t->ignore_merges));
    json_t *vocab = json_object_get(model, "vocab");
    if (!json_is_object(vocab)) return mr_error(MR_ERR_INPUT, "%s: model.vocab is missing or not an object", c->path);
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= INT32_MAX)
            return mr_error(MR_ERR_INPUT, "%s: model.vocab[\"%s\"] must be a non-negative integer id", c->path, key);
        MR_CHECK(tok_add_vocab(t, key, strlen(key), (int32_t)json_integer_value(val)));
    }
    json_t *merges = json_object_get(model, "merges");
    if (merges && !json_is_array(merges)) return mr_error(MR_ERR_INPUT, "%s: model.merges must be an array", c->path);
    size_t i;
    json_t *m;
    json_array_foreach(merges, i, m) MR_CHECK(parse_merge(c, m, i));
    v = json_object_get(model, "unk_token");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v)) return mr_error(MR_ERR_INPUT, "%s: model.unk_token must be a string", c->path);
        t->unk_id = tok_map_get(&t->vocab, json_string_value(v), json_string_length(v));
        /* tokenizers fails only when an unknown char meets a missing unk; an
         * absent unk token then behaves like none. */
    }
    return MR_OK;
}

/* ---- added tokens ----------------------------------------------------------- */

static mr_status parse_added(jctx *c, json_t *arr) {
    if (!arr || json_is_null(arr)) return MR_OK;
    if (!json_is_array(arr)) return mr_error(MR_ERR_INPUT, "%s: added_tokens must be an array", c->path);
    size_t i;
    json_t *a;
    json_array_foreach(arr, i, a) {
        char where[48];
        snprintf(where, sizeof where, "added_tokens[%zu]", i);
        json_t *id = json_object_get(a, "id"), *content = json_object_get(a, "content");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= INT32_MAX ||
            !json_is_string(content))
            return mr_error(MR_ERR_INPUT, "%s: %s needs an integer \"id\" and a string \"content\"", c->path, where);
        int special, lstrip, rstrip, single_word, normalized;
        MR_CHECK(get_bool(c, a, where, "special", 0, &special));
        MR_CHECK(get_bool(c, a, where, "lstrip", 0, &lstrip));
        MR_CHECK(get_bool(c, a, where, "rstrip", 0, &rstrip));
        MR_CHECK(get_bool(c, a, where, "single_word", 0, &single_word));
        MR_CHECK(get_bool(c, a, where, "normalized", !special, &normalized));
        MR_CHECK(tok_add_added(c->t, json_string_value(content), json_string_length(content),
                               (int32_t)json_integer_value(id), special, lstrip, rstrip, single_word, normalized));
    }
    return MR_OK;
}

/* ---- normalizer ------------------------------------------------------------- */

static mr_status parse_normalizer(jctx *c, json_t *n, int depth) {
    if (!n || json_is_null(n)) return MR_OK;
    const char *type = type_of(n);
    if (!type) return mr_error(MR_ERR_INPUT, "%s: normalizer has no \"type\"", c->path);
    if (!strcmp(type, "NFC")) {
        c->t->nfc = 1;
        return MR_OK;
    }
    if (!strcmp(type, "Sequence") && depth < 8) {
        json_t *list = json_object_get(n, "normalizers");
        if (!json_is_array(list)) return mr_error(MR_ERR_INPUT, "%s: normalizer Sequence needs \"normalizers\"", c->path);
        size_t i;
        json_t *e;
        json_array_foreach(list, i, e) MR_CHECK(parse_normalizer(c, e, depth + 1));
        return MR_OK;
    }
    return mr_error(MR_ERR_UNSUPPORTED, "%s: normalizer \"%s\" is not supported (supported: NFC, Sequence)",
                    c->path, type);
}

/* ---- pre-tokenizer ---------------------------------------------------------- */

static mr_status parse_split(jctx *c, json_t *p) {
    json_t *pat = json_object_get(p, "pattern");
    json_t *re = json_object_get(pat, "Regex"), *lit = json_object_get(pat, "String");
    json_t *s = json_is_string(re) ? re : lit;
    if (!json_is_string(s))
        return mr_error(MR_ERR_INPUT, "%s: Split pre-tokenizer needs pattern {\"Regex\": ...} or {\"String\": ...}",
                        c->path);
    static const char *const names[TOK_SPLIT_BEHAVIOR_COUNT] = {
        [TOK_SPLIT_REMOVED] = "Removed",           [TOK_SPLIT_ISOLATED] = "Isolated",
        [TOK_SPLIT_MERGED_PREV] = "MergedWithPrevious", [TOK_SPLIT_MERGED_NEXT] = "MergedWithNext",
        [TOK_SPLIT_CONTIGUOUS] = "Contiguous",
    };
    json_t *b = json_object_get(p, "behavior");
    int behavior = -1;
    for (int i = 0; i < TOK_SPLIT_BEHAVIOR_COUNT && json_is_string(b); i++)
        if (!strcmp(json_string_value(b), names[i])) behavior = i;
    if (behavior < 0)
        return mr_error(MR_ERR_UNSUPPORTED, "%s: Split behavior \"%s\" is not supported", c->path,
                        json_is_string(b) ? json_string_value(b) : "?");
    int invert;
    MR_CHECK(get_bool(c, p, "Split", "invert", 0, &invert));
    return tok_add_split(c->t, json_string_value(s), json_string_length(s), s == lit, (tok_split_behavior)behavior,
                         invert, "Split pattern");
}

static mr_status parse_pre(jctx *c, json_t *p, int depth) {
    if (!p || json_is_null(p)) return MR_OK;
    const char *type = type_of(p);
    if (!type) return mr_error(MR_ERR_INPUT, "%s: pre_tokenizer has no \"type\"", c->path);
    if (!strcmp(type, "Sequence") && depth < 8) {
        json_t *list = json_object_get(p, "pretokenizers");
        if (!json_is_array(list)) return mr_error(MR_ERR_INPUT, "%s: pre_tokenizer Sequence needs \"pretokenizers\"", c->path);
        size_t i;
        json_t *e;
        json_array_foreach(list, i, e) MR_CHECK(parse_pre(c, e, depth + 1));
        return MR_OK;
    }
    if (!strcmp(type, "Split")) return parse_split(c, p);
    if (!strcmp(type, "ByteLevel")) {
        int aps, use_regex;
        MR_CHECK(get_bool(c, p, "ByteLevel", "add_prefix_space", 1, &aps));
        MR_CHECK(get_bool(c, p, "ByteLevel", "use_regex", 1, &use_regex));
        return tok_add_bytelevel(c->t, aps, use_regex);
    }
    if (!strcmp(type, "Digits")) {
        int individual;
        MR_CHECK(get_bool(c, p, "Digits", "individual_digits", 0, &individual));
        /* Rust's char::is_numeric is \p{N}; Contiguous runs equal \p{N}+ isolated */
        const char *pat = individual ? "\\p{N}" : "\\p{N}+";
        return tok_add_split(c->t, pat, strlen(pat), 0, TOK_SPLIT_ISOLATED, 0, "Digits");
    }
    return mr_error(MR_ERR_UNSUPPORTED,
                    "%s: pre_tokenizer \"%s\" is not supported (supported: ByteLevel, Split, Digits, Sequence)",
                    c->path, type);
}

/* ---- post-processor --------------------------------------------------------- */

typedef struct ids_buf {
    int32_t v[64];
    int n;
} ids_buf;

static mr_status ids_push(jctx *c, ids_buf *b, int32_t id) {
    if (b->n == (int)(sizeof b->v / sizeof b->v[0]))
        return mr_error(MR_ERR_UNSUPPORTED, "%s: post_processor adds too many tokens", c->path);
    b->v[b->n++] = id;
    return MR_OK;
}

static mr_status parse_template(jctx *c, json_t *p, ids_buf *pre, ids_buf *suf) {
    json_t *single = json_object_get(p, "single"), *specials = json_object_get(p, "special_tokens");
    if (!json_is_array(single)) return mr_error(MR_ERR_INPUT, "%s: TemplateProcessing needs \"single\"", c->path);
    int seen_a = 0;
    size_t i;
    json_t *item;
    json_array_foreach(single, i, item) {
        json_t *seq = json_object_get(item, "Sequence"), *sp = json_object_get(item, "SpecialToken");
        if (seq) {
            const char *id = json_string_value(json_object_get(seq, "id"));
            if (!id || strcmp(id, "A") || seen_a)
                return mr_error(MR_ERR_UNSUPPORTED, "%s: TemplateProcessing single template must hold $A once",
                                c->path);
            seen_a = 1;
        } else if (sp) {
            const char *name = json_string_value(json_object_get(sp, "id"));
            json_t *tok = name ? json_object_get(specials, name) : NULL;
            json_t *ids = json_object_get(tok, "ids");
            if (!json_is_array(ids))
                return mr_error(MR_ERR_INPUT, "%s: TemplateProcessing special token \"%s\" is not in special_tokens",
                                c->path, name ? name : "?");
            size_t k;
            json_t *id;
            json_array_foreach(ids, k, id) {
                if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= INT32_MAX)
                    return mr_error(MR_ERR_INPUT, "%s: special_tokens[\"%s\"].ids must be ids", c->path, name);
                MR_CHECK(ids_push(c, seen_a ? suf : pre, (int32_t)json_integer_value(id)));
            }
        } else {
            return mr_error(MR_ERR_INPUT, "%s: TemplateProcessing item %zu is neither Sequence nor SpecialToken",
                            c->path, i);
        }
    }
    if (!seen_a) return mr_error(MR_ERR_UNSUPPORTED, "%s: TemplateProcessing single template lacks $A", c->path);
    return MR_OK;
}

static mr_status pair_id(jctx *c, json_t *p, const char *key, int32_t *id) {
    json_t *v = json_object_get(p, key), *i = json_array_get(v, 1);
    if (!json_is_integer(i) || json_integer_value(i) < 0 || json_integer_value(i) >= INT32_MAX)
        return mr_error(MR_ERR_INPUT, "%s: post_processor.%s must be [token, id]", c->path, key);
    *id = (int32_t)json_integer_value(i);
    return MR_OK;
}

/* Processors run in order, each wrapping what the previous produced. */
static mr_status parse_post(jctx *c, json_t *p, ids_buf *pre, ids_buf *suf, int depth) {
    if (!p || json_is_null(p)) return MR_OK;
    const char *type = type_of(p);
    if (!type) return mr_error(MR_ERR_INPUT, "%s: post_processor has no \"type\"", c->path);
    ids_buf a = {{0}, 0}, b = {{0}, 0};
    if (!strcmp(type, "ByteLevel")) return MR_OK; /* offsets only */
    if (!strcmp(type, "Sequence") && depth < 8) {
        json_t *list = json_object_get(p, "processors");
        if (!json_is_array(list)) return mr_error(MR_ERR_INPUT, "%s: post_processor Sequence needs \"processors\"", c->path);
        size_t i;
        json_t *e;
        json_array_foreach(list, i, e) MR_CHECK(parse_post(c, e, pre, suf, depth + 1));
        return MR_OK;
    }
    if (!strcmp(type, "TemplateProcessing")) {
        MR_CHECK(parse_template(c, p, &a, &b));
    } else if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing")) {
        int32_t cls, sep;
        MR_CHECK(pair_id(c, p, "cls", &cls));
        MR_CHECK(pair_id(c, p, "sep", &sep));
        a.v[a.n++] = cls;
        b.v[b.n++] = sep;
    } else {
        return mr_error(MR_ERR_UNSUPPORTED,
                        "%s: post_processor \"%s\" is not supported (supported: ByteLevel, TemplateProcessing, "
                        "RobertaProcessing, BertProcessing, Sequence)", c->path, type);
    }
    for (int i = 0; i < pre->n; i++) MR_CHECK(ids_push(c, &a, pre->v[i]));
    for (int i = 0; i < b.n; i++) MR_CHECK(ids_push(c, suf, b.v[i]));
    *pre = a;
    return MR_OK;
}

static mr_status check_decoder(jctx *c, json_t *d, int depth) {
    const char *type = d && !json_is_null(d) ? type_of(d) : "null";
    if (type && !strcmp(type, "ByteLevel")) return MR_OK;
    if (type && !strcmp(type, "Sequence") && depth < 8) {
        json_t *list = json_object_get(d, "decoders");
        size_t i;
        json_t *e;
        if (!json_is_array(list) || !json_array_size(list)) goto bad;
        json_array_foreach(list, i, e) MR_CHECK(check_decoder(c, e, depth + 1));
        return MR_OK;
    }
bad:
    return mr_error(MR_ERR_UNSUPPORTED, "%s: decoder \"%s\" is not supported (only ByteLevel)", c->path,
                    type ? type : "?");
}

/* bos/eos names from tokenizer_config.json beside tokenizer.json, if any. */
static mr_status read_config(mr_tokenizer *t, const char *path) {
    char *dup = strdup(path);
    if (!dup) return mr_error(MR_ERR_NOMEM, "tokenizer: out of memory");
    char cfg[4096];
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dirname(dup));
    free(dup);
    json_error_t err;
    json_t *root = json_load_file(cfg, 0, &err);
    if (!root) {
        if (json_error_code(&err) == json_error_cannot_open_file) return MR_OK;
        return mr_error(MR_ERR_INPUT, "%s:%d:%d: %s", cfg, err.line, err.column, err.text);
    }
    static const char *const keys[2] = {"bos_token", "eos_token"};
    int32_t *dst[2] = {&t->bos_id, &t->eos_id};
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(root, keys[i]);
        if (json_is_object(v)) v = json_object_get(v, "content");
        if (!json_is_string(v)) continue;
        int32_t id = mr_tokenizer_token_id(t, json_string_value(v));
        if (id < 0) {
            json_decref(root);
            return mr_error(MR_ERR_INPUT, "%s: %s \"%s\" is not a token of %s", cfg, keys[i], json_string_value(v),
                            path);
        }
        *dst[i] = id;
    }
    json_decref(root);
    return MR_OK;
}

mr_status mr_tokenizer_load_json(mr_tokenizer **out, const char *path) {
    *out = NULL;
    json_error_t err;
    json_t *root = json_load_file(path, 0, &err);
    if (!root) {
        if (json_error_code(&err) == json_error_cannot_open_file)
            return mr_error(MR_ERR_IO, "%s: cannot open: %s", path, err.text);
        return mr_error(MR_ERR_INPUT, "%s:%d:%d: invalid JSON: %s", path, err.line, err.column, err.text);
    }
    mr_tokenizer *t = NULL;
    mr_status st;
    MR_CHECK_GOTO(tok_new(&t, path), st, done);
    jctx c = {t, path};
    if (!json_is_object(root)) {
        st = mr_error(MR_ERR_INPUT, "%s: top level is not a JSON object", path);
        goto done;
    }
    json_t *trunc = json_object_get(root, "truncation"), *pad = json_object_get(root, "padding");
    if ((trunc && !json_is_null(trunc)) || (pad && !json_is_null(pad)))
        MR_WARN("%s: truncation/padding settings are ignored", path);
    MR_CHECK_GOTO(parse_model(&c, json_object_get(root, "model")), st, done);
    MR_CHECK_GOTO(parse_added(&c, json_object_get(root, "added_tokens")), st, done);
    MR_CHECK_GOTO(parse_normalizer(&c, json_object_get(root, "normalizer"), 0), st, done);
    MR_CHECK_GOTO(parse_pre(&c, json_object_get(root, "pre_tokenizer"), 0), st, done);
    ids_buf pre = {{0}, 0}, suf = {{0}, 0};
    MR_CHECK_GOTO(parse_post(&c, json_object_get(root, "post_processor"), &pre, &suf, 0), st, done);
    MR_CHECK_GOTO(check_decoder(&c, json_object_get(root, "decoder"), 0), st, done);
    for (int i = 0; i < pre.n + suf.n; i++) {
        int32_t id = i < pre.n ? pre.v[i] : suf.v[i - pre.n];
        if (id >= t->n_ids) {
            st = mr_error(MR_ERR_INPUT, "%s: post_processor adds id %d beyond the vocabulary (%d)", path, id,
                          t->n_ids);
            goto done;
        }
    }
    t->n_prefix = pre.n;
    t->n_suffix = suf.n;
    t->prefix = malloc(sizeof(int32_t) * (size_t)(pre.n + 1));
    t->suffix = malloc(sizeof(int32_t) * (size_t)(suf.n + 1));
    if (!t->prefix || !t->suffix) {
        st = mr_error(MR_ERR_NOMEM, "tokenizer: out of memory");
        goto done;
    }
    memcpy(t->prefix, pre.v, sizeof(int32_t) * (size_t)pre.n);
    memcpy(t->suffix, suf.v, sizeof(int32_t) * (size_t)suf.n);
    if (pre.n) t->bos_id = pre.v[0];
    if (suf.n) t->eos_id = suf.v[suf.n - 1];
    MR_CHECK_GOTO(tok_finish(t), st, done);
    MR_CHECK_GOTO(read_config(t, path), st, done);
done:
    json_decref(root);
    if (st != MR_OK) {
        mr_tokenizer_free(t);
        return st;
    }
    *out = t;
    return MR_OK;
}
