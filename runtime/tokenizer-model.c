/* See tokenizer-model.h.  GGUF arrays are borrowed from the open file while
 * mr_tokenizer_create_bpe copies what it keeps. */
#define _GNU_SOURCE
#include "runtime/tokenizer-model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "runtime/gguf.h"
#include "runtime/model.h"

/* Strings of a GGUF string array as a pointer table (malloc'ed). */
static mr_status string_table(const mr_gguf *g, const char *key, const char ***out, int *n) {
    mr_gguf_array a;
    MR_CHECK(mr_gguf_get_arr(g, key, MR_GGUF_TYPE_STRING, &a));
    if (a.n > (1u << 24))
        return mr_error(MR_ERR_INPUT, "%s: %s has %llu entries, more than a tokenizer can have", mr_gguf_path(g), key,
                        (unsigned long long)a.n);
    const char **t = malloc((a.n ? a.n : 1) * sizeof *t);
    if (!t) return mr_error(MR_ERR_NOMEM, "out of memory reading %s", key);
    const mr_gguf_string *s = a.data;
    for (uint64_t i = 0; i < a.n; i++) {
        if (strlen(s[i].str) != s[i].len) {
            free(t);
            return mr_error(MR_ERR_INPUT, "%s: %s[%llu] holds a NUL byte", mr_gguf_path(g), key,
                            (unsigned long long)i);
        }
        t[i] = s[i].str;
    }
    *out = t;
    *n = (int)a.n;
    return MR_OK;
}

static int32_t optional_id(const mr_gguf *g, const char *key) {
    int64_t v;
    if (mr_gguf_find_key(g, key) < 0 || mr_gguf_get_i64(g, key, &v) != MR_OK || v < 0 || v > INT32_MAX) return -1;
    return (int32_t)v;
}

static int optional_bool(const mr_gguf *g, const char *key, int dflt) {
    int v;
    if (mr_gguf_find_key(g, key) < 0 || mr_gguf_get_bool(g, key, &v) != MR_OK) return dflt;
    return v != 0;
}

mr_status mr_tokenizer_from_gguf(mr_tokenizer **out, mr_gguf *g) {
    *out = NULL;
    const char *path = mr_gguf_path(g), *model = NULL, *pre = "gpt2";
    MR_CHECK(mr_gguf_get_str(g, "tokenizer.ggml.model", &model));
    if (strcmp(model, "gpt2") != 0)
        return mr_error(MR_ERR_UNSUPPORTED,
                        "%s: tokenizer.ggml.model is \"%s\"; only byte-level BPE (\"gpt2\") is implemented", path,
                        model);
    if (mr_gguf_find_key(g, "tokenizer.ggml.pre") >= 0) MR_CHECK(mr_gguf_get_str(g, "tokenizer.ggml.pre", &pre));
    const char **tokens = NULL, **merges = NULL;
    int n_tokens = 0, n_merges = 0;
    int32_t *types = NULL;
    mr_status st;
    MR_CHECK_GOTO(string_table(g, "tokenizer.ggml.tokens", &tokens, &n_tokens), st, out);
    MR_CHECK_GOTO(string_table(g, "tokenizer.ggml.merges", &merges, &n_merges), st, out);
    if (mr_gguf_find_key(g, "tokenizer.ggml.token_type") >= 0) {
        mr_gguf_array a;
        MR_CHECK_GOTO(mr_gguf_get_arr(g, "tokenizer.ggml.token_type", MR_GGUF_TYPE_INT32, &a), st, out);
        if (a.n != (uint64_t)n_tokens) {
            st = mr_error(MR_ERR_INPUT, "%s: tokenizer.ggml.token_type has %llu entries for %d tokens", path,
                          (unsigned long long)a.n, n_tokens);
            goto out;
        }
        types = malloc((size_t)(n_tokens ? n_tokens : 1) * sizeof *types);
        if (!types) { st = mr_error(MR_ERR_NOMEM, "out of memory"); goto out; }
        memcpy(types, a.data, (size_t)n_tokens * sizeof *types);
    }
    /* llama.cpp adds BOS by default for the Llama-3 pre-tokenizer only. */
    int llama3 = !strcmp(pre, "llama-bpe") || !strcmp(pre, "llama3") || !strcmp(pre, "llama-v3");
    mr_tokenizer_vocab_desc d = {
        .origin = path,
        .n_tokens = n_tokens,
        .tokens = tokens,
        .token_types = types,
        .n_merges = n_merges,
        .merges = merges,
        .pre = pre,
        .bos_id = optional_id(g, "tokenizer.ggml.bos_token_id"),
        .eos_id = optional_id(g, "tokenizer.ggml.eos_token_id"),
        .add_bos = optional_bool(g, "tokenizer.ggml.add_bos_token", llama3),
        .add_eos = optional_bool(g, "tokenizer.ggml.add_eos_token", 0),
    };
    if (d.add_bos && d.bos_id < 0) {
        st = mr_error(MR_ERR_INPUT, "%s: tokenizer.ggml.add_bos_token is set but there is no bos_token_id", path);
        goto out;
    }
    st = mr_tokenizer_create_bpe(out, &d);
out:
    free(tokens);
    free(merges);
    free(types);
    return st;
}

static mr_status load_gguf_file(mr_tokenizer **out, const char *path, int required) {
    mr_gguf *g = NULL;
    MR_CHECK(mr_gguf_open(&g, path));
    mr_status st = MR_OK;
    if (mr_gguf_find_key(g, "tokenizer.ggml.tokens") >= 0) st = mr_tokenizer_from_gguf(out, g);
    else if (required) st = mr_error(MR_ERR_INPUT, "%s holds no tokenizer (no tokenizer.ggml.tokens)", path);
    mr_gguf_close(g);
    return st;
}

mr_status mr_tokenizer_load_for_model(mr_tokenizer **out, const char *model_path, const char *override) {
    *out = NULL;
    if (override && *override) {
        if (mr_model_path_is_gguf(override)) return load_gguf_file(out, override, 1);
        return mr_tokenizer_load_json(out, override);
    }
    if (mr_model_path_is_gguf(model_path)) return load_gguf_file(out, model_path, 0);
    char path[4096];
    if (snprintf(path, sizeof path, "%s/tokenizer.json", model_path) >= (int)sizeof path)
        return mr_error(MR_ERR_INPUT, "model path too long: %s", model_path);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (errno == ENOENT) return MR_OK;
        return mr_error(MR_ERR_IO, "cannot read %s: %s", path, strerror(errno));
    }
    return mr_tokenizer_load_json(out, path);
}
