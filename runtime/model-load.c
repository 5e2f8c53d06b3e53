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
    const mr_weight_source *src; /* NULL: synthetic */
    float *tmp;        /* host staging of the slice */
    size_t tmp_cap;
    float *full;       /* synthetic: the whole tensor before slicing */
    size_t full_cap;
    int kmax;          /* widest weight matrix loaded (columns): the bf16 matmul's scratch */
} loader;

#define ALL MR_SLICE_ALL
/* Part `i` of `n` along `axis` of a dimension of size `dim`. */
static mr_slice part(int axis, int64_t dim, int n, int i) {
    if (n <= 1) return ALL;
    return (mr_slice){.axis = axis, .start = dim / n * i, .count = dim / n};
}

static mr_status grow(float **buf, size_t *cap, size_t n, const char *name) {
    if (n <= *cap) return MR_OK;
    float *t = realloc(*buf, n * sizeof(float));
    if (!t) return mr_error(MR_ERR_NOMEM, "out of memory staging tensor %s", name);
    *buf = t;
    *cap = n;
    return MR_OK;
}

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

/* Room for one more pointer in a tracking list (*list, *n used, *cap). */
static mr_status track_room(void ***list, size_t *n, size_t *cap) {
    if (*n < *cap) return MR_OK;
    size_t c = *cap ? 2 * *cap : 64;
    void **a = realloc(*list, c * sizeof *a);
    if (!a) return mr_error(MR_ERR_NOMEM, "out of memory tracking buffers");
    *list = a;
    *cap = c;
    return MR_OK;
}

/* A host mirror of the backend buffer d (model-internal.h): d itself on a
 * host-memory backend. */
static mr_status host_mirror(mr_model *m, void **h, void *d, size_t bytes, const char *what) {
    if (!m->dev) {
        *h = d;
        return MR_OK;
    }
    MR_CHECK(track_room(&m->host_allocs, &m->n_host_allocs, &m->cap_host_allocs));
    MR_CHECK(mr_malloc(h, bytes ? bytes : 1, what));
    m->host_allocs[m->n_host_allocs++] = *h;
    return MR_OK;
}

static mr_status dev_alloc_bytes(mr_model *m, void **out, size_t bytes, const char *what) {
    MR_CHECK(track_room(&m->allocs, &m->n_allocs, &m->cap_allocs));
    *out = m->be->ops->alloc(m->be, bytes);
    if (!*out) return mr_error(MR_ERR_NOMEM, "out of memory: %zu bytes for %s", bytes, what);
    m->allocs[m->n_allocs++] = *out;
    return MR_OK;
}

/* Allocate a device buffer of n floats (or int32s: the same size). */
static mr_status dev_alloc(mr_model *m, float **out, size_t n, const char *what) {
    return dev_alloc_bytes(m, (void **)out, n * sizeof(float), what);
}

/* Bytes of one element of a weight matrix. */
static size_t mat_elem(const mr_model *m) { return m->wbf16 ? sizeof(uint16_t) : sizeof(float); }

/* A weight matrix of n elements (float32 or bf16). */
static mr_status mat_alloc(mr_model *m, void **out, size_t n, const char *what) {
    return dev_alloc_bytes(m, out, n * mat_elem(m), what);
}

/* Read the slice `sl` of tensor `name`, whose full shape is (rows, cols)
 * (cols 0: 1-D), into L->tmp as float32; its element count into *n_out.
 * Weights are stored as read, no transposes. */
static mr_status read_slice(loader *L, const char *name, int64_t rows, int64_t cols, init_kind kind, mr_slice sl,
                            size_t *n_out) {
    mr_model *m = L->m;
    int64_t c = cols ? cols : 1;
    int64_t r_n = sl.axis == 0 ? sl.count : rows, c_n = sl.axis == 1 ? sl.count : c;
    size_t n = (size_t)r_n * (size_t)c_n;
    MR_CHECK(grow(&L->tmp, &L->tmp_cap, n, name));
    if (L->src) {
        int64_t shape[2] = {rows, cols};
        MR_CHECK(L->src->read(L->src->h, name, cols ? 2 : 1, shape, sl, L->tmp));
    } else if (sl.axis < 0) {
        synth_fill(L->tmp, n, name, m->opt.seed, kind, cols ? cols : rows);
    } else {
        /* Values are a function of the full-tensor index: make it, then cut. */
        MR_CHECK(grow(&L->full, &L->full_cap, (size_t)rows * (size_t)c, name));
        synth_fill(L->full, (size_t)rows * (size_t)c, name, m->opt.seed, kind, cols ? cols : rows);
        for (int64_t r = 0; r < r_n; r++) {
            int64_t sr = sl.axis == 0 ? sl.start + r : r, sc = sl.axis == 1 ? sl.start : 0;
            memcpy(L->tmp + (size_t)(r * c_n), L->full + (size_t)(sr * c + sc), (size_t)c_n * sizeof(float));
        }
    }
    *n_out = n;
    return MR_OK;
}

/* The slice into float32 backend memory at dst. */
static mr_status load_into(loader *L, float *dst, const char *name, int64_t rows, int64_t cols, init_kind kind,
                           mr_slice sl) {
    size_t n;
    MR_CHECK(read_slice(L, name, rows, cols, kind, sl, &n));
    L->m->be->ops->upload(L->m->be, dst, L->tmp, n * sizeof(float));
    L->m->weight_bytes += n * sizeof(float);
    return MR_OK;
}

/* The slice of a weight matrix (rows, cols) into `base` at element `off`,
 * as float32 or bf16 (m->wbf16). */
static mr_status load_mat_into(loader *L, void *base, size_t off, const char *name, int64_t rows, int64_t cols,
                               init_kind kind, mr_slice sl) {
    mr_model *m = L->m;
    size_t n;
    MR_CHECK(read_slice(L, name, rows, cols, kind, sl, &n));
    int64_t k = sl.axis == 1 ? sl.count : cols;
    if (k > L->kmax) L->kmax = (int)k;
    if (m->wbf16) m->be->ops->upload_bf16(m->be, (uint16_t *)base + off, L->tmp, n);
    else m->be->ops->upload(m->be, (float *)base + off, L->tmp, n * sizeof(float));
    m->weight_bytes += n * mat_elem(m);
    return MR_OK;
}

static size_t slice_elems(int64_t rows, int64_t cols, mr_slice sl) {
    int64_t c = cols ? cols : 1;
    return (size_t)(sl.axis == 0 ? sl.count : rows) * (size_t)(sl.axis == 1 ? sl.count : c);
}

static mr_status load_new(loader *L, float **dst, const char *name, int64_t rows, int64_t cols, init_kind kind,
                          mr_slice sl) {
    MR_CHECK(dev_alloc(L->m, dst, slice_elems(rows, cols, sl), name));
    return load_into(L, *dst, name, rows, cols, kind, sl);
}

static mr_status load_mat(loader *L, void **dst, const char *name, int64_t rows, int64_t cols, mr_slice sl) {
    MR_CHECK(mat_alloc(L->m, dst, slice_elems(rows, cols, sl), name));
    return load_mat_into(L, *dst, 0, name, rows, cols, INIT_LINEAR, sl);
}

/* gate/up/down of one MLP, named prefix + {gate,up,down}_proj (or mixtral's
 * w1/w3/w2), full width `inter`, sliced into `parts` along the
 * intermediate dimension (part `idx`).  down's bias only on part 0: the
 * row-parallel partial sums add it once. */
static mr_status load_mlp(loader *L, mr_mlp_w *w, const char *prefix, int inter, int mixtral_names, int bias,
                          int parts, int idx) {
    const mr_model_config *c = &L->m->cfg;
    char name[512];
    const char *g = mixtral_names ? "w1" : "gate_proj", *u = mixtral_names ? "w3" : "up_proj",
               *d = mixtral_names ? "w2" : "down_proj";
    int li = inter / parts;
    mr_slice rows = part(0, inter, parts, idx), cols = part(1, inter, parts, idx);
    w->inter = li;
    MR_CHECK(mat_alloc(L->m, &w->gu, (size_t)2 * li * c->hidden, prefix));
    snprintf(name, sizeof name, "%s.%s.weight", prefix, g);
    MR_CHECK(load_mat_into(L, w->gu, 0, name, inter, c->hidden, INIT_LINEAR, rows));
    snprintf(name, sizeof name, "%s.%s.weight", prefix, u);
    MR_CHECK(load_mat_into(L, w->gu, (size_t)li * c->hidden, name, inter, c->hidden, INIT_LINEAR, rows));
    snprintf(name, sizeof name, "%s.%s.weight", prefix, d);
    MR_CHECK(load_mat(L, &w->down, name, c->hidden, inter, cols));
    if (bias) {
        MR_CHECK(dev_alloc(L->m, &w->gu_b, (size_t)2 * li, prefix));
        snprintf(name, sizeof name, "%s.%s.bias", prefix, g);
        MR_CHECK(load_into(L, w->gu_b, name, inter, 0, INIT_BIAS, rows));
        snprintf(name, sizeof name, "%s.%s.bias", prefix, u);
        MR_CHECK(load_into(L, w->gu_b + li, name, inter, 0, INIT_BIAS, rows));
        if (idx == 0 || L->m->det) { /* deterministic mode: every rank adds it (model.c) */
            snprintf(name, sizeof name, "%s.%s.bias", prefix, d);
            MR_CHECK(load_new(L, &w->down_b, name, c->hidden, 0, INIT_BIAS, ALL));
        }
    }
    return MR_OK;
}

/* Attention weights of this rank's heads: column-parallel q/k/v (rows of
 * the projections), row-parallel o_proj (its columns). */
static mr_status load_attention(loader *L, mr_layer_w *w, const char *p) {
    const mr_model_config *c = &L->m->cfg;
    const mr_local *lo = &L->m->loc;
    char name[512];
    int64_t H = c->hidden, nh = c->n_heads, nkv = c->n_kv_heads, hd = c->head_dim;
    int tp = lo->tp, r = lo->tp_rank;
    if (mr_config_is_mla(c)) {
        int64_t qk = mr_config_qk_dim(c), v = c->v_head_dim, kvr = c->kv_lora_rank, rope = c->qk_rope_dim;
        int64_t kvw = c->qk_nope_dim + v;
        if (c->q_lora_rank) {
            int64_t qr = c->q_lora_rank;
            snprintf(name, sizeof name, "%s.self_attn.q_a_proj.weight", p);
            MR_CHECK(load_mat(L, &w->wq_a, name, qr, H, ALL));
            snprintf(name, sizeof name, "%s.self_attn.q_a_layernorm.weight", p);
            MR_CHECK(load_new(L, &w->q_a_norm, name, qr, 0, INIT_NORM, ALL));
            snprintf(name, sizeof name, "%s.self_attn.q_b_proj.weight", p);
            MR_CHECK(load_mat(L, &w->wq_b, name, nh * qk, qr, part(0, nh * qk, tp, r)));
        } else {
            snprintf(name, sizeof name, "%s.self_attn.q_proj.weight", p);
            MR_CHECK(load_mat(L, &w->wq, name, nh * qk, H, part(0, nh * qk, tp, r)));
        }
        snprintf(name, sizeof name, "%s.self_attn.kv_a_proj_with_mqa.weight", p);
        MR_CHECK(load_mat(L, &w->wkv_a, name, kvr + rope, H, ALL));
        snprintf(name, sizeof name, "%s.self_attn.kv_a_layernorm.weight", p);
        MR_CHECK(load_new(L, &w->kv_a_norm, name, kvr, 0, INIT_NORM, ALL));
        snprintf(name, sizeof name, "%s.self_attn.kv_b_proj.weight", p);
        MR_CHECK(load_mat(L, &w->wkv_b, name, nh * kvw, kvr, part(0, nh * kvw, tp, r)));
        snprintf(name, sizeof name, "%s.self_attn.o_proj.weight", p);
        MR_CHECK(load_mat(L, &w->wo, name, H, nh * v, part(1, nh * v, tp, r)));
        return MR_OK;
    }
    static const char *qkv[3] = {"q_proj", "k_proj", "v_proj"};
    int64_t full[3] = {nh * hd, nkv * hd, nkv * hd};
    /* tp > nkv: each rank keeps the one KV head its query heads use */
    mr_slice kvs = nkv >= tp ? part(0, nkv * hd, tp, r)
                             : (mr_slice){.axis = 0, .start = (int64_t)(r / (tp / nkv)) * hd, .count = hd};
    mr_slice sls[3] = {part(0, full[0], tp, r), kvs, kvs};
    int64_t local[3] = {full[0] / tp, lo->nkv * hd, lo->nkv * hd};
    int64_t total = local[0] + local[1] + local[2];
    MR_CHECK(mat_alloc(L->m, &w->wqkv, (size_t)(total * H), "qkv"));
    if (c->attn_bias) MR_CHECK(dev_alloc(L->m, &w->bqkv, (size_t)total, "qkv bias"));
    int64_t off = 0;
    for (int i = 0; i < 3; i++) {
        mr_slice sl = sls[i];
        snprintf(name, sizeof name, "%s.self_attn.%s.weight", p, qkv[i]);
        MR_CHECK(load_mat_into(L, w->wqkv, (size_t)(off * H), name, full[i], H, INIT_LINEAR, sl));
        if (c->attn_bias) {
            snprintf(name, sizeof name, "%s.self_attn.%s.bias", p, qkv[i]);
            MR_CHECK(load_into(L, w->bqkv + off, name, full[i], 0, INIT_BIAS, sl));
        }
        off += local[i];
    }
    snprintf(name, sizeof name, "%s.self_attn.o_proj.weight", p);
    MR_CHECK(load_mat(L, &w->wo, name, H, nh * hd, part(1, nh * hd, tp, r)));
    if (c->o_bias && (r == 0 || L->m->det)) {
        snprintf(name, sizeof name, "%s.self_attn.o_proj.bias", p);
        MR_CHECK(load_new(L, &w->bo, name, H, 0, INIT_BIAS, ALL));
    }
    if (c->qk_norm) {
        snprintf(name, sizeof name, "%s.self_attn.q_norm.weight", p);
        MR_CHECK(load_new(L, &w->q_norm, name, hd, 0, INIT_NORM, ALL));
        snprintf(name, sizeof name, "%s.self_attn.k_norm.weight", p);
        MR_CHECK(load_new(L, &w->k_norm, name, hd, 0, INIT_NORM, ALL));
    }
    return MR_OK;
}

static mr_status load_ffn(loader *L, mr_layer_w *w, const char *p, int layer) {
    const mr_model_config *c = &L->m->cfg;
    const mr_local *lo = &L->m->loc;
    char name[512], pre[512];
    int mixtral = c->arch == MR_ARCH_MIXTRAL;
    w->moe = mr_config_is_moe_layer(c, layer);
    if (!w->moe) {
        snprintf(pre, sizeof pre, "%s.mlp", p);
        return load_mlp(L, &w->mlp, pre, c->intermediate, 0, c->mlp_bias, lo->tp, lo->tp_rank);
    }
    const char *blk = mixtral ? "block_sparse_moe" : "mlp";
    snprintf(name, sizeof name, "%s.%s.gate.weight", p, blk);
    MR_CHECK(load_new(L, &w->router, name, c->n_experts, c->hidden, INIT_LINEAR, ALL));
    if (c->arch == MR_ARCH_DEEPSEEK_V3) {
        snprintf(name, sizeof name, "%s.mlp.gate.e_score_correction_bias", p);
        MR_CHECK(load_new(L, &w->router_bias, name, c->n_experts, 0, INIT_BIAS, ALL));
    }
    MR_CHECK(mr_calloc((void **)&w->experts, (size_t)lo->ne, sizeof *w->experts, "experts"));
    /* ep == 1: every expert, sliced over the tensor group; ep > 1: whole
     * experts [e0, e0 + ne). */
    int parts = lo->ep > 1 ? 1 : lo->tp, idx = lo->ep > 1 ? 0 : lo->tp_rank;
    for (int e = 0; e < lo->ne; e++) {
        snprintf(pre, sizeof pre, "%s.%s.experts.%d", p, blk, lo->e0 + e);
        uint64_t before = L->m->weight_bytes;
        MR_CHECK(load_mlp(L, &w->experts[e], pre, c->moe_intermediate, mixtral, 0, parts, idx));
        L->m->routed_expert_bytes += L->m->weight_bytes - before;
    }
    if (c->shared_intermediate) {
        snprintf(pre, sizeof pre, "%s.mlp.shared_expert", p);
        MR_CHECK(load_mlp(L, &w->shared, pre, c->shared_intermediate, 0, 0, lo->tp, lo->tp_rank));
        snprintf(name, sizeof name, "%s.mlp.shared_expert_gate.weight", p);
        MR_CHECK(load_new(L, &w->shared_gate, name, 1, c->hidden, INIT_LINEAR, ALL));
    } else if (c->n_shared_experts) {
        snprintf(pre, sizeof pre, "%s.mlp.shared_experts", p);
        MR_CHECK(load_mlp(L, &w->shared, pre, c->moe_intermediate * c->n_shared_experts, 0, 0, lo->tp,
                          lo->tp_rank));
    }
    return MR_OK;
}

static mr_status alloc_state(mr_model *m) {
    const mr_model_config *c = &m->cfg;
    const mr_local *lo = &m->loc;
    mr_workspace *ws = &m->ws;
    size_t T = (size_t)m->opt.max_step_tokens, H = (size_t)c->hidden;
    size_t nh = (size_t)lo->nh, qk = (size_t)mr_config_qk_dim(c), v = (size_t)mr_config_v_dim(c);
    m->kv_heads = mr_config_is_mla(c) ? lo->nh : lo->nkv;
    size_t qkv_w = mr_config_is_mla(c) ? nh * (size_t)(c->qk_nope_dim + c->v_head_dim)
                                       : (nh + 2 * (size_t)lo->nkv) * (size_t)c->head_dim;
    size_t lat_w = mr_config_is_mla(c) ? (size_t)(c->q_lora_rank > c->kv_lora_rank + c->qk_rope_dim
                                                      ? c->q_lora_rank
                                                      : c->kv_lora_rank + c->qk_rope_dim)
                                       : 1;
    size_t inter = (size_t)lo->inter;
    if ((size_t)lo->expert_inter > inter) inter = (size_t)lo->expert_inter;
    if ((size_t)lo->shared_inter > inter) inter = (size_t)lo->shared_inter;
    size_t E = (size_t)(c->n_experts ? c->n_experts : 1), K = (size_t)(c->top_k ? c->top_k : 1);
    size_t ep = (size_t)lo->ep, nv = (size_t)lo->nv, tp = (size_t)lo->tp;
    struct { float **p; size_t n; const char *what; } fbufs[] = {
        {&ws->x, T * H, "x"}, {&ws->h, T * H, "h"}, {&ws->a, T * H, "a"},
        {&ws->qkv, T * qkv_w, "qkv"}, {&ws->q, T * nh * qk, "q"}, {&ws->o, T * nh * v, "o"},
        {&ws->lat, T * lat_w, "latents"}, {&ws->lat2, T * (size_t)(c->kv_lora_rank ? c->kv_lora_rank : 1), "kv latents"},
        {&ws->gu, T * 2 * inter, "gate/up"}, {&ws->act, T * inter, "act"},
        {&ws->xe, T * H * (ep > 1 ? ep * K : 1), "expert in"}, {&ws->ye, T * H * (ep > 1 ? ep * K : 1), "expert out"},
        {&ws->router_logits, T * E, "router"}, {&ws->route_w, T * K, "route w"},
        {&ws->perm_w, T * K * ep, "perm w"}, {&ws->shared_g, T, "shared gate"}, {&ws->final_h, T * H, "final"},
        {&ws->logits_local, MR_LOGIT_CHUNK * nv, "logits"}, {&ws->logits_all, tp * MR_LOGIT_CHUNK * nv, "logits"},
    };
    for (size_t i = 0; i < sizeof fbufs / sizeof fbufs[0]; i++)
        MR_CHECK(dev_alloc(m, fbufs[i].p, fbufs[i].n, fbufs[i].what));
    /* int32 buffers of the backend (same element size as float) */
    struct { int32_t **p; size_t n; const char *what; } ibufs[] = {
        {&ws->route_idx, T * K, "route idx"}, {&ws->perm_tok, T * K * ep, "perm"}, {&ws->embed_ids, T, "embed ids"},
        {&ws->slot, T, "slots"}, {&ws->pos, T, "positions"}, {&ws->out_rows, T, "out rows"},
    };
    for (size_t i = 0; i < sizeof ibufs / sizeof ibufs[0]; i++)
        MR_CHECK(dev_alloc(m, (float **)ibufs[i].p, ibufs[i].n, ibufs[i].what));
    MR_CHECK(host_mirror(m, (void **)&ws->h_route_idx, ws->route_idx, T * K * sizeof(int32_t), "route idx"));
    MR_CHECK(host_mirror(m, (void **)&ws->h_route_w, ws->route_w, T * K * sizeof(float), "route w"));
    MR_CHECK(host_mirror(m, (void **)&ws->h_perm_tok, ws->perm_tok, T * K * ep * sizeof(int32_t), "perm"));
    MR_CHECK(host_mirror(m, (void **)&ws->h_perm_w, ws->perm_w, T * K * ep * sizeof(float), "perm w"));
    MR_CHECK(host_mirror(m, (void **)&ws->h_embed_ids, ws->embed_ids, T * sizeof(int32_t), "embed ids"));
    size_t logit_bytes = MR_LOGIT_CHUNK * nv * sizeof(float);
    MR_CHECK(host_mirror(m, (void **)&ws->h_logits_local, ws->logits_local, logit_bytes, "logits"));
    MR_CHECK(host_mirror(m, (void **)&ws->h_logits_all, ws->logits_all, tp * logit_bytes, "logits"));
    MR_CHECK(host_mirror(m, (void **)&ws->h_x, ws->x, T * H * sizeof(float), "activations"));
    if (m->dev) MR_CHECK(host_mirror(m, (void **)&ws->h_stage, NULL, T * H * sizeof(float), "all-reduce staging"));
    MR_CHECK(mr_malloc((void **)&ws->e_count, (E + 1) * sizeof(int32_t), "expert counts"));
    MR_CHECK(mr_malloc((void **)&ws->e_offset, (E + 1) * sizeof(int32_t), "expert offsets"));
    MR_CHECK(mr_calloc((void **)&ws->expert_tokens, (size_t)(lo->ne ? lo->ne : 1), sizeof(uint64_t), "expert counts"));
    if (ep > 1) {
        MR_CHECK(mr_malloc((void **)&ws->ep_scount, 4 * ep * sizeof(int), "ep counts"));
        ws->ep_sdisp = ws->ep_scount + ep;
        ws->ep_rcount = ws->ep_sdisp + ep;
        ws->ep_rdisp = ws->ep_rcount + ep;
        MR_CHECK(mr_malloc((void **)&ws->ep_send_eid, T * K * sizeof(int32_t), "ep ids"));
        MR_CHECK(mr_malloc((void **)&ws->ep_send_src, T * K * sizeof(int32_t), "ep src"));
        MR_CHECK(mr_malloc((void **)&ws->ep_recv_eid, ep * T * K * sizeof(int32_t), "ep ids"));
        MR_CHECK(dev_alloc(m, (float **)&ws->ep_order, ep * T * K, "ep order"));
        MR_CHECK(host_mirror(m, (void **)&ws->h_ep_order, ws->ep_order, ep * T * K * sizeof(int32_t), "ep order"));
        MR_CHECK(dev_alloc(m, &ws->ep_send, T * K * H, "ep send"));
        MR_CHECK(dev_alloc(m, &ws->ep_recv, ep * T * K * H, "ep recv"));
        MR_CHECK(host_mirror(m, (void **)&ws->h_ep_send, ws->ep_send, T * K * H * sizeof(float), "ep send"));
        MR_CHECK(host_mirror(m, (void **)&ws->h_ep_recv, ws->ep_recv, ep * T * K * H * sizeof(float), "ep recv"));
    }

    if (m->det && tp > 1) {
        /* Block sums of the widest row-parallel product (every one writes
         * H columns) for as many rows as 4M floats hold, at least one. */
        int widths[] = {c->n_heads * mr_config_v_dim(c), c->intermediate, lo->ep == 1 ? c->moe_intermediate : 0,
                        lo->shared_inter * lo->tp}; /* whole K of each */
        size_t nb = 1;
        for (size_t i = 0; i < sizeof widths / sizeof widths[0]; i++) {
            size_t n = widths[i] > 0 ? (size_t)(widths[i] / mr_det_kc(m, widths[i], 1)) : 0;
            if (n > nb) nb = n;
        }
        size_t rows = ((size_t)1 << 22) / (nb * H);
        if (rows < 1) rows = 1;
        if (rows > T) rows = T; /* experts dealt out are whole: only T-row products are split */
        ws->det_cap = rows * nb * H;
        MR_CHECK(dev_alloc(m, &ws->det_local, ws->det_cap / tp, "deterministic block sums"));
        MR_CHECK(dev_alloc(m, &ws->det_all, ws->det_cap, "deterministic block sums"));
        MR_CHECK(host_mirror(m, (void **)&ws->h_det_local, ws->det_local, ws->det_cap / tp * sizeof(float),
                             "block sums"));
        MR_CHECK(host_mirror(m, (void **)&ws->h_det_all, ws->det_all, ws->det_cap * sizeof(float), "block sums"));
    }

    size_t per_slot_k = (size_t)m->opt.max_ctx * (size_t)m->kv_heads * qk;
    size_t per_slot_v = (size_t)m->opt.max_ctx * (size_t)m->kv_heads * v;
    MR_CHECK(mr_calloc((void **)&m->k_cache, (size_t)c->n_layers, sizeof(float *), "k cache"));
    MR_CHECK(mr_calloc((void **)&m->v_cache, (size_t)c->n_layers, sizeof(float *), "v cache"));
    for (int l = lo->lb; l < lo->le; l++) {
        MR_CHECK(dev_alloc(m, &m->k_cache[l], per_slot_k * (size_t)m->opt.max_slots, "k cache"));
        MR_CHECK(dev_alloc(m, &m->v_cache[l], per_slot_v * (size_t)m->opt.max_slots, "v cache"));
    }
    int rd = mr_config_rope_dim(c);
    float *freq;
    MR_CHECK(mr_malloc((void **)&freq, (size_t)(rd / 2 + 1) * sizeof(float), "rope"));
    mr_config_rope_freqs(c, freq, &m->rope_mscale);
    mr_status st = dev_alloc(m, &m->rope_freq, (size_t)(rd / 2 + 1), "rope");
    if (st == MR_OK) {
        m->be->ops->upload(m->be, m->rope_freq, freq, (size_t)(rd / 2 + 1) * sizeof(float));
        m->be->ops->sync(m->be);
    }
    free(freq);
    MR_CHECK(st);
    m->attn_scale = mr_config_attn_scale(c);
    return MR_OK;
}

/* Local sizes from the shard; the plan checks divisibility before any
 * weight is read, this repeats it for callers that skip the plan. */
/* Tensor sizes t <= 8 that split the model as resolve_shard does, with
 * routed experts dealt out (their width is then not split): every size
 * some plan can give a row-parallel product. */
static unsigned det_tensor_sizes(const mr_model_config *c) {
    unsigned mask = 0;
    for (int t = 1; t <= 8; t++) {
        if (c->n_heads % t || c->intermediate % t || c->vocab % t || c->shared_intermediate % t) continue;
        if (!mr_config_is_mla(c) && c->n_kv_heads % t && t % c->n_kv_heads) continue;
        mask |= 1u << t;
    }
    return mask;
}

static int gcd_int(int a, int b) {
    while (b) {
        int r = a % b;
        a = b, b = r;
    }
    return a;
}

/* Blocks of at most 1024 columns (the packed x of 32 rows fits L2); a
 * width with no divisor in [64, 1024] is one block when it fits the
 * kernel's buffer (8192). */
int mr_det_kc(const mr_model *m, int K, int rowpar) {
    int L = 1;
    for (int t = 2; rowpar && t <= 8; t++)
        if ((m->det_tmask >> t & 1u) && K % t == 0) L = L / gcd_int(L, t) * t;
    int G = K / L, best = 1;
    for (int d = 1; d <= G && d <= 1024; d++)
        if (G % d == 0) best = d;
    if (best < 64 && G <= 8192) best = G;
    return best;
}

/* Deterministic mode: the backend's fixed-order product, a tensor size
 * its block order covers. */
static mr_status det_check(mr_model *m) {
    if (!m->det) return MR_OK;
    const mr_local *lo = &m->loc;
    if (!m->be->ops->matmul_fixed)
        return mr_error(MR_ERR_UNSUPPORTED, "comm.deterministic: the %s backend has no fixed-order matmul yet "
                        "(the cpu backend has)", m->be->ops->name);
    m->det_tmask = det_tensor_sizes(&m->cfg);
    if (lo->tp > 8 || !(m->det_tmask >> lo->tp & 1u)) {
        char sizes[64] = "";
        for (int t = 1; t <= 8; t++)
            if (m->det_tmask >> t & 1u)
                snprintf(sizes + strlen(sizes), sizeof sizes - strlen(sizes), "%s%d", *sizes ? ", " : "", t);
        return mr_error(MR_ERR_INPUT, "comm.deterministic: tensor = %d; its fixed order covers the tensor sizes "
                        "%s of this model (at most 8)", lo->tp, sizes);
    }
    return MR_OK;
}

static mr_status resolve_shard(mr_model *m) {
    const mr_model_config *c = &m->cfg;
    const mr_model_shard *sh = &m->opt.shard;
    mr_local *lo = &m->loc;
    lo->tp = sh->tp > 0 ? sh->tp : 1;
    lo->tp_rank = sh->tp > 0 ? sh->tp_rank : 0;
    lo->ep = sh->ep > 0 ? sh->ep : 1;
    lo->ep_rank = sh->ep > 0 ? sh->ep_rank : 0;
    lo->lb = sh->layer_end > 0 ? sh->layer_begin : 0;
    lo->le = sh->layer_end > 0 ? sh->layer_end : c->n_layers;
    lo->first = lo->lb == 0;
    lo->last = lo->le == c->n_layers;
    int tp = lo->tp;
    const char *why = NULL;
    if (c->n_heads % tp) why = "num_attention_heads";
    else if (!mr_config_is_mla(c) && c->n_kv_heads % tp && tp % c->n_kv_heads) why = "num_key_value_heads";
    else if (c->intermediate % tp) why = "intermediate_size";
    else if (c->vocab % tp) why = "vocab_size";
    else if (c->shared_intermediate % tp) why = "shared_expert_intermediate_size";
    else if (c->n_experts && lo->ep == 1 && c->moe_intermediate % tp) why = "moe_intermediate_size";
    if (why) return mr_error(MR_ERR_INPUT, "tensor = %d does not divide %s of the model", tp, why);
    if (lo->ep > 1 && (!c->n_experts || c->n_experts % lo->ep))
        return mr_error(MR_ERR_INPUT, "expert = %d does not divide the %d routed experts", lo->ep, c->n_experts);
    if (lo->lb < 0 || lo->le > c->n_layers || lo->lb >= lo->le)
        return mr_error(MR_ERR_INPUT, "layers [%d, %d) outside the model's %d", lo->lb, lo->le, c->n_layers);
    if ((tp > 1 && !sh->tp_comm) || (lo->ep > 1 && !sh->ep_comm))
        return mr_error(MR_ERR_INTERNAL, "a tensor or expert split needs its communicator");
    lo->nh = c->n_heads / tp;
    lo->nkv = mr_config_is_mla(c) ? lo->nh : c->n_kv_heads >= tp ? c->n_kv_heads / tp : 1;
    lo->inter = c->intermediate / tp;
    lo->shared_inter = (c->shared_intermediate + c->moe_intermediate * c->n_shared_experts) / tp;
    lo->ne = c->n_experts / lo->ep;
    lo->e0 = lo->ne * lo->ep_rank;
    lo->expert_inter = lo->ep > 1 ? c->moe_intermediate : c->moe_intermediate / tp;
    lo->nv = c->vocab / tp;
    lo->v0 = lo->nv * lo->tp_rank;
    return MR_OK;
}

mr_status mr_model_load_weights(mr_model *m, const mr_weight_source *ck) {
    const mr_model_config *c = &m->cfg;
    loader L = {.m = m, .src = ck};
    mr_status st = MR_OK;
    char p[256];
    MR_CHECK(resolve_shard(m));
    m->det = m->opt.deterministic != 0;
    MR_CHECK(det_check(m));
    if ((unsigned)m->opt.weights >= MR_WEIGHT_TYPE_COUNT)
        return mr_error(MR_ERR_INPUT, "weights: unknown storage type %d", (int)m->opt.weights);
    m->wbf16 = m->opt.weights == MR_WEIGHTS_BF16;
    const mr_local *lo = &m->loc;
    mr_slice vs = part(0, c->vocab, lo->tp, lo->tp_rank);
    size_t vrow = (size_t)lo->nv * (size_t)c->hidden;
    /* The local embedding rows plus one zero row for tokens of other ranks
     * (a last stage reads a tied float32 LM head from them). */
    if (lo->first || (lo->last && c->tie_embeddings && !m->wbf16)) {
        MR_CHECK_GOTO(dev_alloc(m, &m->embed, vrow + (size_t)c->hidden, "embedding"), st, out);
        MR_CHECK_GOTO(load_into(&L, m->embed, "model.embed_tokens.weight", c->vocab, c->hidden, INIT_EMBED, vs), st,
                      out);
        memset(L.tmp, 0, (size_t)c->hidden * sizeof(float));
        m->be->ops->upload(m->be, m->embed + vrow, L.tmp, (size_t)c->hidden * sizeof(float));
    }
    if (lo->last) {
        MR_CHECK_GOTO(load_new(&L, &m->norm, "model.norm.weight", c->hidden, 0, INIT_NORM, ALL), st, out);
        if (c->tie_embeddings && !m->wbf16) {
            m->lm_head = m->embed;
        } else if (c->tie_embeddings) { /* a bf16 copy of the embedding rows */
            MR_CHECK_GOTO(mat_alloc(m, &m->lm_head, vrow, "lm_head"), st, out);
            MR_CHECK_GOTO(load_mat_into(&L, m->lm_head, 0, "model.embed_tokens.weight", c->vocab, c->hidden,
                                        INIT_EMBED, vs),
                          st, out);
        } else {
            MR_CHECK_GOTO(load_mat(&L, &m->lm_head, "lm_head.weight", c->vocab, c->hidden, vs), st, out);
        }
    }
    MR_CHECK_GOTO(mr_calloc((void **)&m->layers, (size_t)c->n_layers, sizeof *m->layers, "layers"), st, out);
    for (int l = lo->lb; l < lo->le; l++) {
        mr_layer_w *w = &m->layers[l];
        snprintf(p, sizeof p, "model.layers.%d", l);
        char name[512];
        snprintf(name, sizeof name, "%s.input_layernorm.weight", p);
        MR_CHECK_GOTO(load_new(&L, &w->attn_norm, name, c->hidden, 0, INIT_NORM, ALL), st, out);
        snprintf(name, sizeof name, "%s.post_attention_layernorm.weight", p);
        MR_CHECK_GOTO(load_new(&L, &w->ffn_norm, name, c->hidden, 0, INIT_NORM, ALL), st, out);
        MR_CHECK_GOTO(load_attention(&L, w, p), st, out);
        MR_CHECK_GOTO(load_ffn(&L, w, p, l), st, out);
    }
    MR_CHECK_GOTO(alloc_state(m), st, out);
    if (m->wbf16) {
        /* The bf16 matmul's scratch, now: (rows, widest K).  Rows: a step's
         * tokens, all ranks' tokens for one expert under expert
         * parallelism, a chunk of LM-head rows. */
        int rows = m->opt.max_step_tokens * lo->ep;
        if (rows < MR_LOGIT_CHUNK) rows = MR_LOGIT_CHUNK;
        if (m->be->ops->reserve_bf16(m->be, rows, L.kmax > 0 ? L.kmax : 1) != 0)
            MR_CHECK_GOTO(mr_error(MR_ERR_NOMEM, "out of memory: the bf16 matmul scratch for %d x %d", rows, L.kmax),
                          st, out);
    }
    if (ck) m->bytes_read = ck->bytes_read(ck->h);
out:
    free(L.tmp);
    free(L.full);
    return st;
}
