/* config.json -> mr_model_config, per model_type, with every option we do
 * not implement refused by name.  Rotary frequencies follow transformers'
 * modeling_rope_utils (default, linear, llama3, yarn). */
#define _GNU_SOURCE
#include "runtime/config.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *arch_names[MR_ARCH_COUNT] = {
    [MR_ARCH_LLAMA] = "llama",         [MR_ARCH_QWEN2] = "qwen2",
    [MR_ARCH_MIXTRAL] = "mixtral",     [MR_ARCH_QWEN2_MOE] = "qwen2_moe",
    [MR_ARCH_QWEN3_MOE] = "qwen3_moe", [MR_ARCH_DEEPSEEK_V3] = "deepseek_v3",
};

const char *mr_arch_name(mr_arch a) { return (a >= 0 && a < MR_ARCH_COUNT) ? arch_names[a] : "?"; }

/* ---- typed getters: each names the key and the file on error ---------- */

typedef struct parse_ctx {
    json_t *root;
    const char *origin;
} parse_ctx;

static mr_status get_int(parse_ctx *p, const char *key, int *out, int def, int required) {
    json_t *v = json_object_get(p->root, key);
    if (!v || json_is_null(v)) {
        if (required) return mr_error(MR_ERR_INPUT, "%s: missing required key \"%s\"", p->origin, key);
        *out = def;
        return MR_OK;
    }
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if (x < -2147483647LL || x > 2147483647LL)
            return mr_error(MR_ERR_INPUT, "%s: \"%s\" = %lld is out of range", p->origin, key, (long long)x);
        *out = (int)x;
        return MR_OK;
    }
    if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v))) {
        *out = (int)json_real_value(v);
        return MR_OK;
    }
    return mr_error(MR_ERR_INPUT, "%s: \"%s\" must be an integer", p->origin, key);
}

static mr_status get_pos_int(parse_ctx *p, const char *key, int *out, int def, int required) {
    MR_CHECK(get_int(p, key, out, def, required));
    if (*out <= 0 && (required || json_object_get(p->root, key)))
        return mr_error(MR_ERR_INPUT, "%s: \"%s\" = %d must be positive", p->origin, key, *out);
    return MR_OK;
}

static mr_status get_num(json_t *obj, const char *origin, const char *key, float *out, float def) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) { *out = def; return MR_OK; }
    if (!json_is_number(v)) return mr_error(MR_ERR_INPUT, "%s: \"%s\" must be a number", origin, key);
    *out = (float)json_number_value(v);
    return MR_OK;
}

static mr_status get_bool(parse_ctx *p, const char *key, int *out, int def) {
    json_t *v = json_object_get(p->root, key);
    if (!v || json_is_null(v)) { *out = def; return MR_OK; }
    if (!json_is_boolean(v)) return mr_error(MR_ERR_INPUT, "%s: \"%s\" must be true or false", p->origin, key);
    *out = json_is_true(v);
    return MR_OK;
}

static mr_status parse_rope(mr_model_config *c, parse_ctx *p) {
    MR_CHECK(get_num(p->root, p->origin, "rope_theta", &c->rope_theta, 10000.0f));
    c->rope = MR_ROPE_DEFAULT;
    c->rope_factor = 1.0f;
    json_t *rs = json_object_get(p->root, "rope_scaling");
    if (!rs || json_is_null(rs)) return MR_OK;
    if (!json_is_object(rs)) return mr_error(MR_ERR_INPUT, "%s: \"rope_scaling\" must be an object or null", p->origin);
    json_t *t = json_object_get(rs, "rope_type");
    if (!t) t = json_object_get(rs, "type");
    if (!t || !json_is_string(t))
        return mr_error(MR_ERR_INPUT, "%s: rope_scaling needs a string \"rope_type\"", p->origin);
    const char *type = json_string_value(t);
    const char *o = p->origin;
    MR_CHECK(get_num(rs, o, "factor", &c->rope_factor, 1.0f));
    float orig = 0;
    MR_CHECK(get_num(rs, o, "original_max_position_embeddings", &orig, 0));
    c->rope_orig_max_pos = orig > 0 ? (int)orig : c->max_pos;
    if (!strcmp(type, "default")) {
        c->rope = MR_ROPE_DEFAULT;
    } else if (!strcmp(type, "linear")) {
        c->rope = MR_ROPE_LINEAR;
    } else if (!strcmp(type, "llama3")) {
        c->rope = MR_ROPE_LLAMA3;
        MR_CHECK(get_num(rs, o, "low_freq_factor", &c->low_freq_factor, 1.0f));
        MR_CHECK(get_num(rs, o, "high_freq_factor", &c->high_freq_factor, 4.0f));
        if (!json_object_get(rs, "original_max_position_embeddings"))
            return mr_error(MR_ERR_INPUT, "%s: llama3 rope_scaling needs \"original_max_position_embeddings\"", o);
        if (c->high_freq_factor <= c->low_freq_factor)
            return mr_error(MR_ERR_INPUT, "%s: rope_scaling high_freq_factor must exceed low_freq_factor", o);
    } else if (!strcmp(type, "yarn")) {
        c->rope = MR_ROPE_YARN;
        MR_CHECK(get_num(rs, o, "beta_fast", &c->beta_fast, 32.0f));
        MR_CHECK(get_num(rs, o, "beta_slow", &c->beta_slow, 1.0f));
        if (c->beta_fast == 0) c->beta_fast = 32.0f;
        if (c->beta_slow == 0) c->beta_slow = 1.0f;
        MR_CHECK(get_num(rs, o, "mscale", &c->mscale, 0.0f));
        MR_CHECK(get_num(rs, o, "mscale_all_dim", &c->mscale_all_dim, 0.0f));
        MR_CHECK(get_num(rs, o, "attention_factor", &c->attention_factor, 0.0f));
        json_t *tr = json_object_get(rs, "truncate");
        c->yarn_truncate = !(tr && json_is_false(tr));
    } else {
        return mr_error(MR_ERR_UNSUPPORTED,
                        "%s: rope_scaling type \"%s\" is not supported (supported: default, linear, llama3, yarn)",
                        o, type);
    }
    if (c->rope_factor <= 0) return mr_error(MR_ERR_INPUT, "%s: rope_scaling factor must be positive", o);
    return MR_OK;
}

static mr_status parse_eos(mr_model_config *c, json_t *obj, const char *origin) {
    json_t *v = json_object_get(obj, "eos_token_id");
    if (!v || json_is_null(v)) return MR_OK;
    c->n_eos = 0;
    if (json_is_integer(v)) {
        c->eos_ids[c->n_eos++] = (int)json_integer_value(v);
        return MR_OK;
    }
    if (!json_is_array(v)) return mr_error(MR_ERR_INPUT, "%s: \"eos_token_id\" must be an integer or a list", origin);
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
        if (!json_is_integer(e)) return mr_error(MR_ERR_INPUT, "%s: \"eos_token_id\"[%zu] must be an integer", origin, i);
        if (c->n_eos == MR_MAX_EOS) return mr_error(MR_ERR_UNSUPPORTED, "%s: more than %d eos ids", origin, MR_MAX_EOS);
        c->eos_ids[c->n_eos++] = (int)json_integer_value(e);
    }
    return MR_OK;
}

static mr_status parse_moe(mr_model_config *c, parse_ctx *p, const char *n_key, const char *ffn_key) {
    MR_CHECK(get_pos_int(p, n_key, &c->n_experts, 0, 1));
    MR_CHECK(get_pos_int(p, "num_experts_per_tok", &c->top_k, 0, 1));
    MR_CHECK(get_pos_int(p, ffn_key, &c->moe_intermediate, 0, 1));
    if (c->top_k > c->n_experts)
        return mr_error(MR_ERR_INPUT, "%s: num_experts_per_tok = %d exceeds the %d experts", p->origin, c->top_k,
                        c->n_experts);
    return MR_OK;
}

static mr_status parse_arch(mr_model_config *c, parse_ctx *p) {
    const char *o = p->origin;
    c->routed_scaling = 1.0f;
    c->n_group = c->topk_group = 1;
    c->decoder_sparse_step = 1;
    c->moe_layer_freq = 1;
    switch (c->arch) {
    case MR_ARCH_LLAMA:
        MR_CHECK(get_bool(p, "attention_bias", &c->attn_bias, 0));
        c->o_bias = c->attn_bias;
        MR_CHECK(get_bool(p, "mlp_bias", &c->mlp_bias, 0));
        break;
    case MR_ARCH_QWEN2:
        c->attn_bias = 1;
        break;
    case MR_ARCH_MIXTRAL:
        MR_CHECK(parse_moe(c, p, "num_local_experts", "intermediate_size"));
        c->norm_topk_prob = 1;
        break;
    case MR_ARCH_QWEN2_MOE:
    case MR_ARCH_QWEN3_MOE: {
        if (c->arch == MR_ARCH_QWEN2_MOE) {
            MR_CHECK(get_bool(p, "qkv_bias", &c->attn_bias, 1));
            MR_CHECK(get_int(p, "shared_expert_intermediate_size", &c->shared_intermediate, 0, 0));
        } else {
            MR_CHECK(get_bool(p, "attention_bias", &c->attn_bias, 0));
            c->o_bias = c->attn_bias;
            c->qk_norm = 1;
        }
        MR_CHECK(parse_moe(c, p, "num_experts", "moe_intermediate_size"));
        MR_CHECK(get_bool(p, "norm_topk_prob", &c->norm_topk_prob, 0));
        MR_CHECK(get_pos_int(p, "decoder_sparse_step", &c->decoder_sparse_step, 1, 0));
        json_t *mo = json_object_get(p->root, "mlp_only_layers");
        if (mo && !json_is_null(mo)) {
            if (!json_is_array(mo)) return mr_error(MR_ERR_INPUT, "%s: \"mlp_only_layers\" must be a list", o);
            MR_CHECK(mr_calloc((void **)&c->mlp_only, (size_t)c->n_layers, 1, "mlp_only_layers"));
            size_t i;
            json_t *e;
            json_array_foreach(mo, i, e) {
                if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) >= c->n_layers)
                    return mr_error(MR_ERR_INPUT, "%s: \"mlp_only_layers\"[%zu] is not a layer index", o, i);
                c->mlp_only[json_integer_value(e)] = 1;
            }
        }
        break;
    }
    case MR_ARCH_DEEPSEEK_V3: {
        MR_CHECK(parse_moe(c, p, "n_routed_experts", "moe_intermediate_size"));
        MR_CHECK(get_int(p, "n_shared_experts", &c->n_shared_experts, 0, 0));
        MR_CHECK(get_num(p->root, o, "routed_scaling_factor", &c->routed_scaling, 1.0f));
        MR_CHECK(get_pos_int(p, "n_group", &c->n_group, 1, 0));
        MR_CHECK(get_pos_int(p, "topk_group", &c->topk_group, 1, 0));
        MR_CHECK(get_bool(p, "norm_topk_prob", &c->norm_topk_prob, 1));
        MR_CHECK(get_int(p, "first_k_dense_replace", &c->first_dense, 0, 0));
        MR_CHECK(get_pos_int(p, "moe_layer_freq", &c->moe_layer_freq, 1, 0));
        MR_CHECK(get_int(p, "q_lora_rank", &c->q_lora_rank, 0, 0));
        MR_CHECK(get_pos_int(p, "kv_lora_rank", &c->kv_lora_rank, 0, 1));
        MR_CHECK(get_pos_int(p, "qk_rope_head_dim", &c->qk_rope_dim, 0, 1));
        MR_CHECK(get_pos_int(p, "qk_nope_head_dim", &c->qk_nope_dim, 0, 1));
        MR_CHECK(get_pos_int(p, "v_head_dim", &c->v_head_dim, 0, 1));
        MR_CHECK(get_bool(p, "rope_interleave", &c->rope_interleave, 1));
        int ab = 0;
        MR_CHECK(get_bool(p, "attention_bias", &ab, 0));
        if (ab) return mr_error(MR_ERR_UNSUPPORTED, "%s: \"attention_bias\": true is not supported for deepseek_v3", o);
        if (c->moe_layer_freq != 1)
            return mr_error(MR_ERR_UNSUPPORTED, "%s: \"moe_layer_freq\" = %d is not supported (only 1)", o,
                            c->moe_layer_freq);
        json_t *sf = json_object_get(p->root, "scoring_func");
        if (sf && json_is_string(sf) && strcmp(json_string_value(sf), "sigmoid"))
            return mr_error(MR_ERR_UNSUPPORTED, "%s: \"scoring_func\" = \"%s\" is not supported (only sigmoid)", o,
                            json_string_value(sf));
        json_t *tm = json_object_get(p->root, "topk_method");
        if (tm && json_is_string(tm) && strcmp(json_string_value(tm), "noaux_tc"))
            return mr_error(MR_ERR_UNSUPPORTED, "%s: \"topk_method\" = \"%s\" is not supported (only noaux_tc)", o,
                            json_string_value(tm));
        if (c->n_experts % c->n_group)
            return mr_error(MR_ERR_INPUT, "%s: n_group = %d does not divide n_routed_experts = %d", o, c->n_group,
                            c->n_experts);
        if (c->n_experts / c->n_group < 2)
            return mr_error(MR_ERR_UNSUPPORTED, "%s: groups of fewer than 2 experts are not supported", o);
        if (c->topk_group > c->n_group || c->topk_group * (c->n_experts / c->n_group) < c->top_k)
            return mr_error(MR_ERR_INPUT, "%s: topk_group = %d groups cannot hold num_experts_per_tok = %d experts",
                            o, c->topk_group, c->top_k);
        c->head_dim = c->qk_rope_dim; /* what transformers uses for the rope frequencies */
        break;
    }
    default:
        return mr_error(MR_ERR_INTERNAL, "unhandled architecture");
    }
    /* Options common to the qwen family that we do not implement. */
    if (c->arch == MR_ARCH_QWEN2 || c->arch == MR_ARCH_QWEN2_MOE || c->arch == MR_ARCH_QWEN3_MOE) {
        int sw = 0;
        MR_CHECK(get_bool(p, "use_sliding_window", &sw, 0));
        if (sw) return mr_error(MR_ERR_UNSUPPORTED, "%s: \"use_sliding_window\": true is not supported", o);
    }
    if (c->arch == MR_ARCH_MIXTRAL) {
        int sw = 0;
        MR_CHECK(get_int(p, "sliding_window", &sw, 0, 0));
        if (sw > 0 && sw < c->max_pos)
            return mr_error(MR_ERR_UNSUPPORTED, "%s: \"sliding_window\" = %d is not supported (use null)", o, sw);
    }
    return MR_OK;
}

mr_status mr_config_parse(mr_model_config *c, const char *text, const char *origin) {
    memset(c, 0, sizeof *c);
    json_error_t jerr;
    json_t *root = json_loads(text, 0, &jerr);
    if (!root)
        return mr_error(MR_ERR_INPUT, "%s:%d:%d: invalid JSON: %s", origin, jerr.line, jerr.column, jerr.text);
    mr_status st = MR_OK;
    parse_ctx p = {root, origin};
    if (!json_is_object(root)) {
        st = mr_error(MR_ERR_INPUT, "%s: expected a JSON object", origin);
        goto out;
    }
    json_t *mt = json_object_get(root, "model_type");
    if (!mt || !json_is_string(mt)) {
        st = mr_error(MR_ERR_INPUT, "%s: missing string key \"model_type\"", origin);
        goto out;
    }
    snprintf(c->model_type, sizeof c->model_type, "%s", json_string_value(mt));
    c->arch = MR_ARCH_COUNT;
    for (int a = 0; a < MR_ARCH_COUNT; a++)
        if (!strcmp(arch_names[a], c->model_type)) c->arch = (mr_arch)a;
    if (c->arch == MR_ARCH_COUNT) {
        st = mr_error(MR_ERR_UNSUPPORTED,
                      "%s: model_type \"%s\" is not supported (supported: llama, qwen2, mixtral, qwen2_moe, "
                      "qwen3_moe, deepseek_v3)",
                      origin, json_string_value(mt));
        goto out;
    }
    json_t *act = json_object_get(root, "hidden_act");
    if (act && json_is_string(act) && strcmp(json_string_value(act), "silu")) {
        st = mr_error(MR_ERR_UNSUPPORTED, "%s: \"hidden_act\" = \"%s\" is not supported (only silu)", origin,
                      json_string_value(act));
        goto out;
    }
    MR_CHECK_GOTO(get_pos_int(&p, "vocab_size", &c->vocab, 0, 1), st, out);
    MR_CHECK_GOTO(get_pos_int(&p, "hidden_size", &c->hidden, 0, 1), st, out);
    MR_CHECK_GOTO(get_pos_int(&p, "num_hidden_layers", &c->n_layers, 0, 1), st, out);
    MR_CHECK_GOTO(get_pos_int(&p, "num_attention_heads", &c->n_heads, 0, 1), st, out);
    MR_CHECK_GOTO(get_pos_int(&p, "num_key_value_heads", &c->n_kv_heads, c->n_heads, 0), st, out);
    MR_CHECK_GOTO(get_pos_int(&p, "intermediate_size", &c->intermediate, 0, 1), st, out);
    MR_CHECK_GOTO(get_pos_int(&p, "max_position_embeddings", &c->max_pos, 2048, 0), st, out);
    MR_CHECK_GOTO(get_pos_int(&p, "head_dim", &c->head_dim, c->hidden / c->n_heads, 0), st, out);
    MR_CHECK_GOTO(get_num(root, origin, "rms_norm_eps", &c->norm_eps, 1e-6f), st, out);
    MR_CHECK_GOTO(get_bool(&p, "tie_word_embeddings", &c->tie_embeddings, 0), st, out);
    if (c->n_heads % c->n_kv_heads) {
        st = mr_error(MR_ERR_INPUT, "%s: num_key_value_heads = %d does not divide num_attention_heads = %d", origin,
                      c->n_kv_heads, c->n_heads);
        goto out;
    }
    MR_CHECK_GOTO(parse_rope(c, &p), st, out);
    MR_CHECK_GOTO(parse_arch(c, &p), st, out);
    if (c->rope_interleave == 0 && c->arch != MR_ARCH_DEEPSEEK_V3) c->rope_interleave = 0;
    if (mr_config_rope_dim(c) % 2) {
        st = mr_error(MR_ERR_INPUT, "%s: rotary dimension %d is odd", origin, mr_config_rope_dim(c));
        goto out;
    }
    c->bos_id = -1;
    MR_CHECK_GOTO(get_int(&p, "bos_token_id", &c->bos_id, -1, 0), st, out);
    MR_CHECK_GOTO(parse_eos(c, root, origin), st, out);
out:
    json_decref(root);
    if (st != MR_OK) mr_config_free(c);
    return st;
}

static mr_status read_file(const char *path, char **out) {
    FILE *f = fopen(path, "rb");
    if (!f) return mr_error(MR_ERR_IO, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (n < 0 || n > (64L << 20)) {
        fclose(f);
        return mr_error(MR_ERR_INPUT, "%s: unreasonable size %ld bytes", path, n);
    }
    char *buf = malloc((size_t)n + 1);
    if (!buf) { fclose(f); return mr_error(MR_ERR_NOMEM, "reading %s", path); }
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    buf[got] = 0;
    *out = buf;
    return MR_OK;
}

mr_status mr_config_load(mr_model_config *c, const char *dir) {
    char path[4096];
    char *text = NULL;
    snprintf(path, sizeof path, "%s/config.json", dir);
    mr_status st = read_file(path, &text);
    if (st != MR_OK) {
        return mr_error(st == MR_ERR_IO ? MR_ERR_INPUT : st, "%s: no config.json in the checkpoint folder %s",
                        path, dir);
    }
    st = mr_config_parse(c, text, path);
    free(text);
    if (st != MR_OK) return st;
    /* generation_config.json overrides the eos ids when present. */
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f) return MR_OK;
    fclose(f);
    MR_CHECK(read_file(path, &text));
    json_error_t jerr;
    json_t *g = json_loads(text, 0, &jerr);
    free(text);
    if (!g) {
        mr_config_free(c);
        return mr_error(MR_ERR_INPUT, "%s:%d:%d: invalid JSON: %s", path, jerr.line, jerr.column, jerr.text);
    }
    st = json_is_object(g) ? parse_eos(c, g, path) : mr_error(MR_ERR_INPUT, "%s: expected a JSON object", path);
    json_decref(g);
    if (st != MR_OK) mr_config_free(c);
    return st;
}

void mr_config_free(mr_model_config *c) {
    free(c->mlp_only);
    c->mlp_only = NULL;
}

int mr_config_is_moe_layer(const mr_model_config *c, int l) {
    if (c->n_experts == 0) return 0;
    switch (c->arch) {
    case MR_ARCH_MIXTRAL: return 1;
    case MR_ARCH_QWEN2_MOE:
    case MR_ARCH_QWEN3_MOE:
        return !(c->mlp_only && c->mlp_only[l]) && (l + 1) % c->decoder_sparse_step == 0;
    case MR_ARCH_DEEPSEEK_V3: return l >= c->first_dense && l % c->moe_layer_freq == 0;
    default: return 0;
    }
}

int mr_config_is_mla(const mr_model_config *c) { return c->arch == MR_ARCH_DEEPSEEK_V3; }
int mr_config_qk_dim(const mr_model_config *c) {
    return mr_config_is_mla(c) ? c->qk_nope_dim + c->qk_rope_dim : c->head_dim;
}
int mr_config_v_dim(const mr_model_config *c) { return mr_config_is_mla(c) ? c->v_head_dim : c->head_dim; }
int mr_config_rope_dim(const mr_model_config *c) { return mr_config_is_mla(c) ? c->qk_rope_dim : c->head_dim; }

static double yarn_get_mscale(double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * log(scale) + 1.0; }

static double yarn_correction_dim(double rot, int dim, double base, double maxpos) {
    return (dim * log(maxpos / (rot * 2 * M_PI))) / (2 * log(base));
}

void mr_config_rope_freqs(const mr_model_config *c, float *inv_freq, float *mscale) {
    int dim = mr_config_rope_dim(c);
    int half = dim / 2;
    double base = c->rope_theta;
    *mscale = 1.0f;
    for (int i = 0; i < half; i++) {
        /* transformers computes base ** (arange(0,dim,2).float()/dim) in fp32 */
        float expo = (float)(2 * i) / (float)dim;
        inv_freq[i] = (float)(1.0 / pow(base, (double)expo));
    }
    switch (c->rope) {
    case MR_ROPE_DEFAULT: break;
    case MR_ROPE_LINEAR:
        for (int i = 0; i < half; i++) inv_freq[i] /= c->rope_factor;
        break;
    case MR_ROPE_LLAMA3: {
        double old = c->rope_orig_max_pos, lf = c->low_freq_factor, hf = c->high_freq_factor, f = c->rope_factor;
        double low_wl = old / lf, high_wl = old / hf;
        for (int i = 0; i < half; i++) {
            double inv = inv_freq[i], wl = 2 * M_PI / inv;
            if (wl > low_wl) inv_freq[i] = (float)(inv / f);
            else if (wl >= high_wl) {
                double smooth = (old / wl - lf) / (hf - lf);
                inv_freq[i] = (float)((1 - smooth) * inv / f + smooth * inv);
            }
        }
        break;
    }
    case MR_ROPE_YARN: {
        double f = c->rope_factor;
        double af = c->attention_factor;
        if (af == 0) {
            if (c->mscale != 0 && c->mscale_all_dim != 0)
                af = yarn_get_mscale(f, c->mscale) / yarn_get_mscale(f, c->mscale_all_dim);
            else af = yarn_get_mscale(f, 1.0);
        }
        *mscale = (float)af;
        double low = yarn_correction_dim(c->beta_fast, dim, base, c->rope_orig_max_pos);
        double high = yarn_correction_dim(c->beta_slow, dim, base, c->rope_orig_max_pos);
        if (c->yarn_truncate) { low = floor(low); high = ceil(high); }
        if (low < 0) low = 0;
        if (high > dim - 1) high = dim - 1;
        if (low == high) high += 0.001;
        for (int i = 0; i < half; i++) {
            float ramp = (float)(((float)i - (float)low) / (float)(high - low));
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            float extra = 1.0f - ramp; /* extrapolation weight */
            float inv_extra = inv_freq[i];
            float inv_inter = (float)(1.0 / ((double)f * (1.0 / (double)inv_freq[i])));
            inv_freq[i] = inv_inter * (1 - extra) + inv_extra * extra;
        }
        break;
    }
    default: break;
    }
}

float mr_config_attn_scale(const mr_model_config *c) {
    double s = 1.0 / sqrt((double)mr_config_qk_dim(c));
    if (c->arch == MR_ARCH_DEEPSEEK_V3 && c->rope == MR_ROPE_YARN && c->mscale_all_dim != 0) {
        double m = yarn_get_mscale(c->rope_factor, c->mscale_all_dim);
        s *= m * m;
    }
    return (float)s;
}

int mr_config_is_eos(const mr_model_config *c, int token) {
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] == token) return 1;
    return 0;
}

double mr_config_param_count(const mr_model_config *c) {
    double H = c->hidden, n = 0;
    double qk = mr_config_qk_dim(c), v = mr_config_v_dim(c);
    for (int l = 0; l < c->n_layers; l++) {
        if (mr_config_is_mla(c)) {
            double q = c->q_lora_rank ? H * c->q_lora_rank + c->q_lora_rank * c->n_heads * qk : H * c->n_heads * qk;
            n += q + H * (c->kv_lora_rank + c->qk_rope_dim) +
                 c->kv_lora_rank * c->n_heads * (c->qk_nope_dim + v) + c->n_heads * v * H;
        } else {
            n += H * c->n_heads * qk + 2 * H * c->n_kv_heads * qk + c->n_heads * v * H;
        }
        if (mr_config_is_moe_layer(c, l)) {
            n += (double)c->n_experts * 3 * H * c->moe_intermediate + H * c->n_experts;
            n += 3 * H * c->shared_intermediate + 3 * H * c->moe_intermediate * c->n_shared_experts;
        } else {
            n += 3 * H * c->intermediate;
        }
    }
    n += H * c->vocab * (c->tie_embeddings ? 1 : 2);
    return n;
}
