/* Model loading: weights from a checkpoint (or seeded synthetic values),
 * the KV cache and the workspaces, all sized once from the options.
 *
 * Weight names follow the Hugging Face checkpoints of each architecture.
 * Synthetic values are a pure function of (seed, tensor name, element
 * index), so any slice of a tensor gets the same values on every rank. */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/model-internal.h"

typedef enum init_kind { INIT_LINEAR, INIT_NORM, INIT_BIAS, INIT_EMBED } init_kind;

typedef struct loader {
    mr_model *m;
    mr_checkpoint *ck; /* NULL: synthetic */
    float *tmp;        /* host staging */
    size_t tmp_cap;
} loader;

static uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void synth_fill(float *dst, size_t n, const char *name, uint64_t seed, init_kind kind, int64_t fan_in) {
    if (kind == INIT_NORM) {
        for (size_t i = 0; i < n; i++) dst[i] = 1.0f;
        return;
    }
    if (kind == INIT_BIAS) {
        memset(dst, 0, n * sizeof *dst);
        return;
    }
    /* uniform(-a, a) has std a / sqrt(3) */
    float std = kind == INIT_EMBED ? 1.0f : 1.0f / sqrtf((float)fan_in);
    float a = std * 1.7320508f;
    uint64_t base = splitmix64(seed ^ fnv1a(name));
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        uint64_t r = splitmix64(base + i);
        float u = (float)(r >> 40) * (1.0f / 16777216.0f); /* [0, 1) */
        dst[i] = (2.0f * u - 1.0f) * a;
    }
}

/* Allocate a device buffer of n floats. */
static mr_status dev_alloc(mr_model *m, float **out, size_t n, const char *what) {
    if (m->n_allocs == m->cap_allocs) {
        size_t cap = m->cap_allocs ? 2 * m->cap_allocs : 256;
        void **a = realloc(m->allocs, cap * sizeof *a);
        if (!a) return mr_error(MR_ERR_NOMEM, "out of memory tracking buffers");
        m->allocs = a;
        m->cap_allocs = cap;
    }
    *out = m->be->ops->alloc(m->be, n * sizeof(float));
    if (!*out) return mr_error(MR_ERR_NOMEM, "out of memory: %zu bytes for %s", n * sizeof(float), what);
    m->allocs[m->n_allocs++] = *out;
    return MR_OK;
}

/* Read tensor `name` of shape (rows, cols) (cols 0: 1-D) into device memory
 * at dst.  Weights are stored as read, no transposes. */
static mr_status load_into(loader *L, float *dst, const char *name, int64_t rows, int64_t cols, init_kind kind) {
    mr_model *m = L->m;
    size_t n = (size_t)rows * (size_t)(cols ? cols : 1);
    if (n > L->tmp_cap) {
        float *t = realloc(L->tmp, n * sizeof(float));
        if (!t) return mr_error(MR_ERR_NOMEM, "out of memory staging tensor %s", name);
        L->tmp = t;
        L->tmp_cap = n;
    }
    if (L->ck) {
        int64_t shape[2] = {rows, cols};
        MR_CHECK(mr_checkpoint_read_f32(L->ck, name, cols ? 2 : 1, shape, MR_SLICE_ALL, L->tmp));
    } else {
        synth_fill(L->tmp, n, name, m->opt.seed, kind, cols ? cols : rows);
    }
    m->be->ops->upload(m->be, dst, L->tmp, n * sizeof(float));
    m->weight_bytes += n * sizeof(float);
    return MR_OK;
}

static mr_status load_new(loader *L, float **dst, const char *name, int64_t rows, int64_t cols, init_kind kind) {
    MR_CHECK(dev_alloc(L->m, dst, (size_t)rows * (size_t)(cols ? cols : 1), name));
    return load_into(L, *dst, name, rows, cols, kind);
}

/* gate/up/down of one MLP, named prefix + {gate,up,down} (or w1/w3/w2). */
static mr_status load_mlp(loader *L, mr_mlp_w *w, const char *prefix, int inter, int mixtral_names, int bias) {
    const mr_model_config *c = &L->m->cfg;
    char name[512];
    const char *g = mixtral_names ? "w1" : "gate_proj", *u = mixtral_names ? "w3" : "up_proj",
               *d = mixtral_names ? "w2" : "down_proj";
    w->inter = inter;
    MR_CHECK(dev_alloc(L->m, &w->gu, (size_t)2 * inter * c->hidden, prefix));
    snprintf(name, sizeof name, "%s.%s.weight", prefix, g);
    MR_CHECK(load_into(L, w->gu, name, inter, c->hidden, INIT_LINEAR));
    snprintf(name, sizeof name, "%s.%s.weight", prefix, u);
    MR_CHECK(load_into(L, w->gu + (size_t)inter * c->hidden, name, inter, c->hidden, INIT_LINEAR));
    snprintf(name, sizeof name, "%s.%s.weight", prefix, d);
    MR_CHECK(load_new(L, &w->down, name, c->hidden, inter, INIT_LINEAR));
    if (bias) {
        MR_CHECK(dev_alloc(L->m, &w->gu_b, (size_t)2 * inter, prefix));
        snprintf(name, sizeof name, "%s.%s.bias", prefix, g);
        MR_CHECK(load_into(L, w->gu_b, name, inter, 0, INIT_BIAS));
        snprintf(name, sizeof name, "%s.%s.bias", prefix, u);
        MR_CHECK(load_into(L, w->gu_b + inter, name, inter, 0, INIT_BIAS));
        snprintf(name, sizeof name, "%s.%s.bias", prefix, d);
        MR_CHECK(load_new(L, &w->down_b, name, c->hidden, 0, INIT_BIAS));
    }
    return MR_OK;
}

static mr_status load_attention(loader *L, mr_layer_w *w, const char *p) {
    const mr_model_config *c = &L->m->cfg;
    char name[512];
    int64_t H = c->hidden, nh = c->n_heads, nkv = c->n_kv_heads, hd = c->head_dim;
    if (mr_config_is_mla(c)) {
        int64_t qk = mr_config_qk_dim(c), v = c->v_head_dim, kvr = c->kv_lora_rank, rope = c->qk_rope_dim;
        if (c->q_lora_rank) {
            int64_t qr = c->q_lora_rank;
            snprintf(name, sizeof name, "%s.self_attn.q_a_proj.weight", p);
            MR_CHECK(load_new(L, &w->wq_a, name, qr, H, INIT_LINEAR));
            snprintf(name, sizeof name, "%s.self_attn.q_a_layernorm.weight", p);
            MR_CHECK(load_new(L, &w->q_a_norm, name, qr, 0, INIT_NORM));
            snprintf(name, sizeof name, "%s.self_attn.q_b_proj.weight", p);
            MR_CHECK(load_new(L, &w->wq_b, name, nh * qk, qr, INIT_LINEAR));
        } else {
            snprintf(name, sizeof name, "%s.self_attn.q_proj.weight", p);
            MR_CHECK(load_new(L, &w->wq, name, nh * qk, H, INIT_LINEAR));
        }
        snprintf(name, sizeof name, "%s.self_attn.kv_a_proj_with_mqa.weight", p);
        MR_CHECK(load_new(L, &w->wkv_a, name, kvr + rope, H, INIT_LINEAR));
        snprintf(name, sizeof name, "%s.self_attn.kv_a_layernorm.weight", p);
        MR_CHECK(load_new(L, &w->kv_a_norm, name, kvr, 0, INIT_NORM));
        snprintf(name, sizeof name, "%s.self_attn.kv_b_proj.weight", p);
        MR_CHECK(load_new(L, &w->wkv_b, name, nh * (c->qk_nope_dim + v), kvr, INIT_LINEAR));
        snprintf(name, sizeof name, "%s.self_attn.o_proj.weight", p);
        MR_CHECK(load_new(L, &w->wo, name, H, nh * v, INIT_LINEAR));
        return MR_OK;
    }
    static const char *qkv[3] = {"q_proj", "k_proj", "v_proj"};
    int64_t rows[3] = {nh * hd, nkv * hd, nkv * hd};
    int64_t total = rows[0] + rows[1] + rows[2];
    MR_CHECK(dev_alloc(L->m, &w->wqkv, (size_t)(total * H), "qkv"));
    if (c->attn_bias) MR_CHECK(dev_alloc(L->m, &w->bqkv, (size_t)total, "qkv bias"));
    int64_t off = 0;
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "%s.self_attn.%s.weight", p, qkv[i]);
        MR_CHECK(load_into(L, w->wqkv + off * H, name, rows[i], H, INIT_LINEAR));
        if (c->attn_bias) {
            snprintf(name, sizeof name, "%s.self_attn.%s.bias", p, qkv[i]);
            MR_CHECK(load_into(L, w->bqkv + off, name, rows[i], 0, INIT_BIAS));
        }
        off += rows[i];
    }
    snprintf(name, sizeof name, "%s.self_attn.o_proj.weight", p);
    MR_CHECK(load_new(L, &w->wo, name, H, nh * hd, INIT_LINEAR));
    if (c->o_bias) {
        snprintf(name, sizeof name, "%s.self_attn.o_proj.bias", p);
        MR_CHECK(load_new(L, &w->bo, name, H, 0, INIT_BIAS));
    }
    if (c->qk_norm) {
        snprintf(name, sizeof name, "%s.self_attn.q_norm.weight", p);
        MR_CHECK(load_new(L, &w->q_norm, name, hd, 0, INIT_NORM));
        snprintf(name, sizeof name, "%s.self_attn.k_norm.weight", p);
        MR_CHECK(load_new(L, &w->k_norm, name, hd, 0, INIT_NORM));
    }
    return MR_OK;
}

static mr_status load_ffn(loader *L, mr_layer_w *w, const char *p, int layer) {
    const mr_model_config *c = &L->m->cfg;
    char name[512], pre[512];
    int mixtral = c->arch == MR_ARCH_MIXTRAL;
    w->moe = mr_config_is_moe_layer(c, layer);
    if (!w->moe) {
        snprintf(pre, sizeof pre, "%s.mlp", p);
        return load_mlp(L, &w->mlp, pre, c->intermediate, 0, c->mlp_bias);
    }
    const char *blk = mixtral ? "block_sparse_moe" : "mlp";
    snprintf(name, sizeof name, "%s.%s.gate.weight", p, blk);
    MR_CHECK(load_new(L, &w->router, name, c->n_experts, c->hidden, INIT_LINEAR));
    if (c->arch == MR_ARCH_DEEPSEEK_V3) {
        snprintf(name, sizeof name, "%s.mlp.gate.e_score_correction_bias", p);
        MR_CHECK(load_new(L, &w->router_bias, name, c->n_experts, 0, INIT_BIAS));
    }
    MR_CHECK(mr_calloc((void **)&w->experts, (size_t)c->n_experts, sizeof *w->experts, "experts"));
    for (int e = 0; e < c->n_experts; e++) {
        snprintf(pre, sizeof pre, "%s.%s.experts.%d", p, blk, e);
        uint64_t before = L->m->weight_bytes;
        MR_CHECK(load_mlp(L, &w->experts[e], pre, c->moe_intermediate, mixtral, 0));
        L->m->routed_expert_bytes += L->m->weight_bytes - before;
    }
    if (c->shared_intermediate) {
        snprintf(pre, sizeof pre, "%s.mlp.shared_expert", p);
        MR_CHECK(load_mlp(L, &w->shared, pre, c->shared_intermediate, 0, 0));
        snprintf(name, sizeof name, "%s.mlp.shared_expert_gate.weight", p);
        MR_CHECK(load_new(L, &w->shared_gate, name, 1, c->hidden, INIT_LINEAR));
    } else if (c->n_shared_experts) {
        snprintf(pre, sizeof pre, "%s.mlp.shared_experts", p);
        MR_CHECK(load_mlp(L, &w->shared, pre, c->moe_intermediate * c->n_shared_experts, 0, 0));
    }
    return MR_OK;
}

static mr_status alloc_state(mr_model *m) {
    const mr_model_config *c = &m->cfg;
    mr_workspace *ws = &m->ws;
    size_t T = (size_t)m->opt.max_step_tokens, H = (size_t)c->hidden;
    size_t nh = (size_t)c->n_heads, qk = (size_t)mr_config_qk_dim(c), v = (size_t)mr_config_v_dim(c);
    m->kv_heads = mr_config_is_mla(c) ? c->n_heads : c->n_kv_heads;
    size_t qkv_w = mr_config_is_mla(c) ? nh * (size_t)(c->qk_nope_dim + c->v_head_dim)
                                       : (nh + 2 * (size_t)c->n_kv_heads) * (size_t)c->head_dim;
    size_t lat_w = mr_config_is_mla(c) ? (size_t)(c->q_lora_rank > c->kv_lora_rank + c->qk_rope_dim
                                                      ? c->q_lora_rank
                                                      : c->kv_lora_rank + c->qk_rope_dim)
                                       : 1;
    size_t inter = (size_t)c->intermediate;
    if ((size_t)c->moe_intermediate > inter) inter = (size_t)c->moe_intermediate;
    if ((size_t)c->shared_intermediate > inter) inter = (size_t)c->shared_intermediate;
    if ((size_t)c->moe_intermediate * (size_t)c->n_shared_experts > inter)
        inter = (size_t)c->moe_intermediate * (size_t)c->n_shared_experts;
    size_t E = (size_t)(c->n_experts ? c->n_experts : 1), K = (size_t)(c->top_k ? c->top_k : 1);
    struct { float **p; size_t n; const char *what; } fbufs[] = {
        {&ws->x, T * H, "x"}, {&ws->h, T * H, "h"}, {&ws->a, T * H, "a"},
        {&ws->qkv, T * qkv_w, "qkv"}, {&ws->q, T * nh * qk, "q"}, {&ws->o, T * nh * v, "o"},
        {&ws->lat, T * lat_w, "latents"}, {&ws->lat2, T * (size_t)(c->kv_lora_rank ? c->kv_lora_rank : 1), "kv latents"},
        {&ws->gu, T * 2 * inter, "gate/up"}, {&ws->act, T * inter, "act"},
        {&ws->xe, T * H, "expert in"}, {&ws->ye, T * H, "expert out"},
        {&ws->router_logits, T * E, "router"}, {&ws->route_w, T * K, "route w"},
        {&ws->perm_w, T * K, "perm w"}, {&ws->shared_g, T, "shared gate"}, {&ws->final_h, T * H, "final"},
    };
    for (size_t i = 0; i < sizeof fbufs / sizeof fbufs[0]; i++)
        MR_CHECK(dev_alloc(m, fbufs[i].p, fbufs[i].n, fbufs[i].what));
    MR_CHECK(mr_malloc((void **)&ws->route_idx, T * K * sizeof(int32_t), "route idx"));
    MR_CHECK(mr_malloc((void **)&ws->perm_tok, T * K * sizeof(int32_t), "perm"));
    MR_CHECK(mr_malloc((void **)&ws->e_count, (E + 1) * sizeof(int32_t), "expert counts"));
    MR_CHECK(mr_malloc((void **)&ws->e_offset, (E + 1) * sizeof(int32_t), "expert offsets"));
    MR_CHECK(mr_malloc((void **)&ws->out_rows, T * sizeof(int32_t), "out rows"));

    size_t per_slot_k = (size_t)m->opt.max_ctx * (size_t)m->kv_heads * qk;
    size_t per_slot_v = (size_t)m->opt.max_ctx * (size_t)m->kv_heads * v;
    MR_CHECK(mr_calloc((void **)&m->k_cache, (size_t)c->n_layers, sizeof(float *), "k cache"));
    MR_CHECK(mr_calloc((void **)&m->v_cache, (size_t)c->n_layers, sizeof(float *), "v cache"));
    for (int l = 0; l < c->n_layers; l++) {
        MR_CHECK(dev_alloc(m, &m->k_cache[l], per_slot_k * (size_t)m->opt.max_slots, "k cache"));
        MR_CHECK(dev_alloc(m, &m->v_cache[l], per_slot_v * (size_t)m->opt.max_slots, "v cache"));
    }
    int rd = mr_config_rope_dim(c);
    MR_CHECK(mr_malloc((void **)&m->rope_freq, (size_t)(rd / 2 + 1) * sizeof(float), "rope"));
    mr_config_rope_freqs(c, m->rope_freq, &m->rope_mscale);
    m->attn_scale = mr_config_attn_scale(c);
    return MR_OK;
}

mr_status mr_model_load_weights(mr_model *m, mr_checkpoint *ck) {
    const mr_model_config *c = &m->cfg;
    loader L = {.m = m, .ck = ck};
    mr_status st = MR_OK;
    char p[256];
    MR_CHECK_GOTO(load_new(&L, &m->embed, "model.embed_tokens.weight", c->vocab, c->hidden, INIT_EMBED), st, out);
    MR_CHECK_GOTO(load_new(&L, &m->norm, "model.norm.weight", c->hidden, 0, INIT_NORM), st, out);
    if (c->tie_embeddings) m->lm_head = m->embed;
    else MR_CHECK_GOTO(load_new(&L, &m->lm_head, "lm_head.weight", c->vocab, c->hidden, INIT_LINEAR), st, out);
    MR_CHECK_GOTO(mr_calloc((void **)&m->layers, (size_t)c->n_layers, sizeof *m->layers, "layers"), st, out);
    for (int l = 0; l < c->n_layers; l++) {
        mr_layer_w *w = &m->layers[l];
        snprintf(p, sizeof p, "model.layers.%d", l);
        char name[512];
        snprintf(name, sizeof name, "%s.input_layernorm.weight", p);
        MR_CHECK_GOTO(load_new(&L, &w->attn_norm, name, c->hidden, 0, INIT_NORM), st, out);
        snprintf(name, sizeof name, "%s.post_attention_layernorm.weight", p);
        MR_CHECK_GOTO(load_new(&L, &w->ffn_norm, name, c->hidden, 0, INIT_NORM), st, out);
        MR_CHECK_GOTO(load_attention(&L, w, p), st, out);
        MR_CHECK_GOTO(load_ffn(&L, w, p, l), st, out);
    }
    MR_CHECK_GOTO(alloc_state(m), st, out);
    if (ck) m->bytes_read = mr_checkpoint_bytes_read(ck);
out:
    free(L.tmp);
    return st;
}
