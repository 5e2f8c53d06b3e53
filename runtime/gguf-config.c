/* GGUF metadata -> mr_model_config (see gguf.h): the llama and qwen2 keys
 * mapped onto what config.json gives, through gguf.h's public getters only.
 * RoPE scaling: none, linear, yarn, and llama3 recovered from the
 * rope_freqs.weight factors; anything else is refused by name. */
#define _GNU_SOURCE
#include "runtime/gguf.h"

#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CFG_COUNT(a) (sizeof(a) / sizeof((a)[0]))


typedef struct gg_cfg_ctx {
    const mr_gguf *g;
    const char *arch;
    char key[160];
} gg_cfg_ctx;

static const char *cfg_key(gg_cfg_ctx *x, const char *sub) {
    snprintf(x->key, sizeof x->key, "%s.%s", x->arch, sub);
    return x->key;
}

/* A positive int from {arch}.sub, or def when absent and not required. */
static mr_status cfg_int(gg_cfg_ctx *x, const char *sub, int *out, int def, int required) {
    const char *key = cfg_key(x, sub);
    if (mr_gguf_find_key(x->g, key) < 0) {
        if (required) return mr_error(MR_ERR_INPUT, "%s: missing metadata key '%s'", mr_gguf_path(x->g), key);
        *out = def;
        return MR_OK;
    }
    uint32_t v;
    MR_CHECK(mr_gguf_get_u32(x->g, key, &v));
    if (v == 0 || v > INT_MAX)
        return mr_error(MR_ERR_INPUT, "%s: metadata key '%s' = %" PRIu32 " must be a positive int", mr_gguf_path(x->g),
                        key, v);
    *out = (int)v;
    return MR_OK;
}

static mr_status cfg_f32(gg_cfg_ctx *x, const char *sub, float *out, float def) {
    const char *key = cfg_key(x, sub);
    if (mr_gguf_find_key(x->g, key) < 0) {
        *out = def;
        return MR_OK;
    }
    return mr_gguf_get_f32(x->g, key, out);
}

/* The llama3 scaling that convert_hf_to_gguf.py stores as rope_freqs.weight:
 * per frequency a divisor r_i = 1 (high frequencies), factor (low) or, in
 * between, 1 / ((1 - s)/factor + s) with s = A / wavelength - B, where A =
 * old_ctx / (high - low) and B = low / (high - low).  Only A and B matter to
 * the frequencies, so take them from the two smoothed points farthest
 * apart, write them back as (old_ctx, low, high) and keep the result only if
 * mr_config_rope_freqs reproduces every divisor. */
static mr_status cfg_llama3_from_freqs(gg_cfg_ctx *x, mr_model_config *c, const mr_gguf_tensor_info *t) {
    const mr_gguf *g = x->g;
    int half = c->head_dim / 2;
    if (t->ndim != 1 || t->shape[0] != half)
        return mr_error(MR_ERR_INPUT, "%s: rope_freqs.weight has %" PRId64 " elements, expected head_dim/2 = %d",
                        mr_gguf_path(g), t->shape[0], half);
    float *r = NULL, *inv = NULL;
    mr_status st = mr_malloc((void **)&r, 2 * (size_t)half * sizeof *r, "rope factors");
    if (st != MR_OK) return st;
    inv = r + half;
    int64_t shape = half;
    MR_CHECK_GOTO(mr_gguf_read_f32((mr_gguf *)g, "rope_freqs.weight", 1, &shape, MR_SLICE_ALL, r), st, out);
    float f = 1.0f;
    for (int i = 0; i < half; i++) {
        if (!(r[i] >= 1.0f) || !isfinite(r[i])) {
            st = mr_error(MR_ERR_UNSUPPORTED, "%s: rope_freqs.weight[%d] = %g is not a llama3 rope divisor", mr_gguf_path(g),
                          i, (double)r[i]);
            goto out;
        }
        if (r[i] > f) f = r[i];
    }
    c->rope_factor = f;
    if (f == 1.0f) { /* no scaling at all */
        c->rope = MR_ROPE_DEFAULT;
        goto out;
    }
    c->rope = MR_ROPE_LLAMA3;
    c->rope_orig_max_pos = c->max_pos;
    c->low_freq_factor = 1.0f;
    c->high_freq_factor = 4.0f;
    int lo = -1, hi = -1; /* first and last smoothed point */
    for (int i = 0; i < half; i++) {
        if (r[i] > 1.0f * (1 + 1e-6f) && r[i] < f * (1 - 1e-6f)) {
            if (lo < 0) lo = i;
            hi = i;
        }
    }
    double base = c->rope_theta;
    if (lo >= 0 && hi > lo) {
        double wl_lo = 2 * M_PI * pow(base, 2.0 * lo / c->head_dim);
        double wl_hi = 2 * M_PI * pow(base, 2.0 * hi / c->head_dim);
        double s_lo = (1.0 / r[lo] - 1.0 / f) / (1.0 - 1.0 / f), s_hi = (1.0 / r[hi] - 1.0 / f) / (1.0 - 1.0 / f);
        double A = (s_lo - s_hi) / (1.0 / wl_lo - 1.0 / wl_hi), B = A / wl_lo - s_lo;
        if (A > 0 && B > 0) {
            double old = nearbyint(A / B); /* makes low = B * old / A close to 1 */
            c->rope_orig_max_pos = (int)old;
            c->low_freq_factor = (float)(B * old / A);
            c->high_freq_factor = (float)((1.0 + B) * old / A);
        }
    } else {
        /* No or one smoothed point: place the ramp between the last
         * undivided and the first fully divided frequency (low = 1). */
        int last_one = -1, first_f = half;
        for (int i = 0; i < half; i++) {
            if (r[i] <= 1.0f * (1 + 1e-6f)) last_one = i;
            if (r[i] >= f * (1 - 1e-6f) && first_f == half) first_f = i;
        }
        double wl_one = last_one >= 0 ? 2 * M_PI * pow(base, 2.0 * last_one / c->head_dim) : 1.0;
        double wl_f = first_f < half ? 2 * M_PI * pow(base, 2.0 * first_f / c->head_dim) : 4 * wl_one;
        c->rope_orig_max_pos = (int)floor(wl_f * 0.999);
        c->low_freq_factor = 1.0f;
        c->high_freq_factor = (float)(c->rope_orig_max_pos / (wl_one * 1.001));
    }
    /* Accept only what mr_config_rope_freqs reproduces. */
    float mscale;
    mr_config_rope_freqs(c, inv, &mscale);
    for (int i = 0; i < half; i++) {
        double want = 1.0 / pow(base, (double)(float)(2 * i) / (float)c->head_dim) / r[i];
        if (!(fabs(inv[i] - want) <= 1e-5 * want) || !(c->high_freq_factor > c->low_freq_factor)) {
            st = mr_error(MR_ERR_UNSUPPORTED, "%s: rope_freqs.weight is not a llama3 rope scaling that moerun can "
                          "reproduce (frequency %d: %g vs %g)", mr_gguf_path(g), i, (double)inv[i], want);
            goto out;
        }
    }
out:
    free(r);
    return st;
}

static mr_status cfg_rope(gg_cfg_ctx *x, mr_model_config *c) {
    const mr_gguf *g = x->g;
    MR_CHECK(cfg_f32(x, "rope.freq_base", &c->rope_theta, 10000.0f));
    c->rope = MR_ROPE_DEFAULT;
    c->rope_factor = 1.0f;
    const char *type = "none";
    if (mr_gguf_find_key(g, cfg_key(x, "rope.scaling.type")) >= 0) MR_CHECK(mr_gguf_get_str(g, x->key, &type));
    const mr_gguf_tensor_info *freqs = mr_gguf_find_tensor(g, "rope_freqs.weight");
    if (freqs && strcmp(type, "none"))
        return mr_error(MR_ERR_UNSUPPORTED, "%s: rope_freqs.weight together with %s.rope.scaling.type = \"%s\" "
                        "is not supported", mr_gguf_path(g), x->arch, type);
    if (freqs) return cfg_llama3_from_freqs(x, c, freqs);
    if (!strcmp(type, "none")) return MR_OK;
    if (strcmp(type, "linear") && strcmp(type, "yarn"))
        return mr_error(MR_ERR_UNSUPPORTED, "%s: %s.rope.scaling.type = \"%s\" is not supported (supported: none, "
                        "linear, yarn, and llama3 as rope_freqs.weight)", mr_gguf_path(g), x->arch, type);
    MR_CHECK(cfg_f32(x, "rope.scaling.factor", &c->rope_factor, 1.0f));
    if (!(c->rope_factor > 0))
        return mr_error(MR_ERR_INPUT, "%s: %s.rope.scaling.factor must be positive", mr_gguf_path(g), x->arch);
    MR_CHECK(cfg_int(x, "rope.scaling.original_context_length", &c->rope_orig_max_pos, c->max_pos, 0));
    /* Keys whose llama.cpp meaning has no transformers counterpart here. */
    static const struct { const char *sub; float neutral; } refuse[] = {
        {"rope.scaling.attn_factor", 1.0f}, {"rope.scaling.yarn_ext_factor", 1.0f},
        {"rope.scaling.yarn_log_multiplier", 0.0f}};
    for (size_t i = 0; i < CFG_COUNT(refuse); i++) {
        float v;
        MR_CHECK(cfg_f32(x, refuse[i].sub, &v, refuse[i].neutral));
        if (v != refuse[i].neutral)
            return mr_error(MR_ERR_UNSUPPORTED, "%s: %s.%s = %g is not supported", mr_gguf_path(g), x->arch, refuse[i].sub,
                            (double)v);
    }
    if (!strcmp(type, "linear")) {
        c->rope = MR_ROPE_LINEAR;
        return MR_OK;
    }
    c->rope = MR_ROPE_YARN;
    MR_CHECK(cfg_f32(x, "rope.scaling.yarn_beta_fast", &c->beta_fast, 32.0f));
    MR_CHECK(cfg_f32(x, "rope.scaling.yarn_beta_slow", &c->beta_slow, 1.0f));
    /* convert_hf_to_gguf.py stores transformers' attention_factor here. */
    MR_CHECK(cfg_f32(x, "rope.scaling.yarn_attn_factor", &c->attention_factor, 0.0f));
    c->yarn_truncate = 1;
    return MR_OK;
}

/* bos/eos from tokenizer.ggml.*; eot and eom ids (llama3 chat models) end
 * generation too. */
static mr_status cfg_tokens(const mr_gguf *g, mr_model_config *c) {
    static const char *eos_keys[] = {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                                     "tokenizer.ggml.eom_token_id"};
    c->bos_id = -1;
    uint32_t v;
    if (mr_gguf_find_key(g, "tokenizer.ggml.bos_token_id") >= 0) {
        MR_CHECK(mr_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &v));
        c->bos_id = v > INT_MAX ? -1 : (int)v;
    }
    c->n_eos = 0;
    for (size_t k = 0; k < CFG_COUNT(eos_keys); k++) {
        if (mr_gguf_find_key(g, eos_keys[k]) < 0) continue;
        MR_CHECK(mr_gguf_get_u32(g, eos_keys[k], &v));
        if (v > INT_MAX || mr_config_is_eos(c, (int)v)) continue;
        c->eos_ids[c->n_eos++] = (int)v;
    }
    return MR_OK;
}

static mr_status cfg_fill(gg_cfg_ctx *x, mr_model_config *c) {
    const mr_gguf *g = x->g;
    MR_CHECK(cfg_int(x, "block_count", &c->n_layers, 0, 1));
    MR_CHECK(cfg_int(x, "embedding_length", &c->hidden, 0, 1));
    MR_CHECK(cfg_int(x, "feed_forward_length", &c->intermediate, 0, 1));
    MR_CHECK(cfg_int(x, "attention.head_count", &c->n_heads, 0, 1));
    MR_CHECK(cfg_int(x, "attention.head_count_kv", &c->n_kv_heads, c->n_heads, 0));
    MR_CHECK(cfg_int(x, "attention.key_length", &c->head_dim, c->hidden / c->n_heads, 0));
    int v_dim, rot;
    MR_CHECK(cfg_int(x, "attention.value_length", &v_dim, c->head_dim, 0));
    MR_CHECK(cfg_int(x, "rope.dimension_count", &rot, c->head_dim, 0));
    if (v_dim != c->head_dim || rot != c->head_dim)
        return mr_error(MR_ERR_UNSUPPORTED, "%s: value_length %d / rope.dimension_count %d differ from the head "
                        "size %d (not supported)", mr_gguf_path(g), v_dim, rot, c->head_dim);
    MR_CHECK(cfg_int(x, "context_length", &c->max_pos, 2048, 0));
    MR_CHECK(cfg_f32(x, "attention.layer_norm_rms_epsilon", &c->norm_eps, 1e-6f));
    if (c->n_heads % c->n_kv_heads)
        return mr_error(MR_ERR_INPUT, "%s: %s.attention.head_count_kv = %d does not divide head_count = %d",
                        mr_gguf_path(g), x->arch, c->n_kv_heads, c->n_heads);
    if (c->head_dim % 2) return mr_error(MR_ERR_INPUT, "%s: rotary dimension %d is odd", mr_gguf_path(g), c->head_dim);

    /* vocabulary: {arch}.vocab_size, else the token list */
    if (mr_gguf_find_key(g, cfg_key(x, "vocab_size")) >= 0) {
        MR_CHECK(cfg_int(x, "vocab_size", &c->vocab, 0, 1));
    } else if (mr_gguf_find_key(g, "tokenizer.ggml.tokens") >= 0) {
        mr_gguf_array a;
        MR_CHECK(mr_gguf_get_arr(g, "tokenizer.ggml.tokens", MR_GGUF_TYPE_STRING, &a));
        if (a.n == 0 || a.n > INT_MAX)
            return mr_error(MR_ERR_INPUT, "%s: tokenizer.ggml.tokens has %" PRIu64 " entries", mr_gguf_path(g), a.n);
        c->vocab = (int)a.n;
    } else {
        return mr_error(MR_ERR_INPUT, "%s: no vocabulary size: neither '%s.vocab_size' nor "
                        "'tokenizer.ggml.tokens' is present", mr_gguf_path(g), x->arch);
    }
    const mr_gguf_tensor_info *emb = mr_gguf_find_tensor(g, "token_embd.weight");
    if (emb && (emb->ndim != 2 || emb->shape[0] != c->vocab || emb->shape[1] != c->hidden))
        return mr_error(MR_ERR_INPUT, "%s: token_embd.weight has shape [%" PRId64 ", %" PRId64 "], but the "
                        "metadata says vocab %d, hidden %d", mr_gguf_path(g), emb->shape[0], emb->shape[1],
                        c->vocab, c->hidden);

    c->tie_embeddings = mr_gguf_find_tensor(g, "output.weight") == NULL;
    if (c->arch == MR_ARCH_QWEN2) {
        c->attn_bias = 1;
    } else {
        c->attn_bias = mr_gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL;
        c->o_bias = mr_gguf_find_tensor(g, "blk.0.attn_output.bias") != NULL;
        c->mlp_bias = mr_gguf_find_tensor(g, "blk.0.ffn_gate.bias") != NULL;
    }
    c->routed_scaling = 1.0f; /* dense defaults, as mr_config_parse sets them */
    c->n_group = c->topk_group = 1;
    c->decoder_sparse_step = 1;
    c->moe_layer_freq = 1;
    MR_CHECK(cfg_rope(x, c));
    return cfg_tokens(g, c);
}

mr_status mr_gguf_to_config(const mr_gguf *g, mr_model_config *c) {
    memset(c, 0, sizeof *c);
    const char *arch;
    MR_CHECK(mr_gguf_get_str(g, "general.architecture", &arch));
    if (!strcmp(arch, "llama")) c->arch = MR_ARCH_LLAMA;
    else if (!strcmp(arch, "qwen2")) c->arch = MR_ARCH_QWEN2;
    else
        return mr_error(MR_ERR_UNSUPPORTED, "%s: general.architecture \"%s\" is not supported (supported: llama, "
                        "qwen2)", mr_gguf_path(g), arch);
    snprintf(c->model_type, sizeof c->model_type, "%s", arch);
    gg_cfg_ctx x = {.g = g, .arch = arch};
    mr_status st = cfg_fill(&x, c);
    if (st != MR_OK) mr_config_free(c);
    return st;
}
