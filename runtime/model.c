/* The batched forward pass of every architecture over the backend table.
 *
 * Per layer (shapes for T tokens, H hidden):
 *   h = rmsnorm(x)                       (T,H)
 *   a = attention(h)  standard or MLA    (T,H), K/V written to the cache
 *   x += a
 *   h = rmsnorm(x)
 *   a = mlp(h) or moe(h)                 (T,H)
 *   x += a
 * then the final norm and the LM head for the rows whose logits are asked. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/allreduce.h"
#include "runtime/gguf.h"
#include "runtime/model-internal.h"
#include "runtime/progress.h"

/* transformers builds DeepSeek's q_a/kv_a layernorms with the RMSNorm
 * default eps, not rms_norm_eps. */
#define MLA_LORA_NORM_EPS 1e-6f

const mr_model_config *mr_model_get_config(const mr_model *m) { return &m->cfg; }
const mr_model_options *mr_model_get_options(const mr_model *m) { return &m->opt; }
uint64_t mr_model_weight_bytes(const mr_model *m) { return m->weight_bytes; }
uint64_t mr_model_bytes_read(const mr_model *m) { return m->bytes_read; }
float *mr_model_activations(mr_model *m) { return m->ws.x; }
int mr_model_is_first_stage(const mr_model *m) { return m->loc.first; }
int mr_model_is_last_stage(const mr_model *m) { return m->loc.last; }
const uint64_t *mr_model_expert_tokens(const mr_model *m, int *n_local, int *first) {
    *n_local = m->loc.ne;
    *first = m->loc.e0;
    return m->ws.expert_tokens;
}
void mr_model_moe_ep_stats(const mr_model *m, mr_moe_ep_stats *s) {
    *s = m->ep_stats;
    s->group = m->loc.ep;
    s->last_scount = m->loc.ep > 1 ? m->ws.ep_scount : NULL;
    s->last_rcount = m->loc.ep > 1 ? m->ws.ep_rcount : NULL;
}
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
uint64_t mr_model_step_weight_bytes(const mr_model *m) {
    return m->weight_bytes - m->routed_expert_bytes + m->step_expert_bytes;
}

static mr_status st_read(void *h, const char *name, int ndim, const int64_t *shape, mr_slice sl, float *dst) {
    return mr_checkpoint_read_f32(h, name, ndim, shape, sl, dst);
}
static uint64_t st_bytes(const void *h) { return mr_checkpoint_bytes_read(h); }
static mr_status gguf_read(void *h, const char *name, int ndim, const int64_t *shape, mr_slice sl, float *dst) {
    return mr_gguf_read_f32(h, name, ndim, shape, sl, dst);
}
static uint64_t gguf_bytes(const void *h) { return mr_gguf_bytes_read(h); }

int mr_model_path_is_gguf(const char *path) {
    size_t n = strlen(path);
    return n >= 5 && !strcmp(path + n - 5, ".gguf");
}

mr_status mr_model_load(mr_model **out, const char *path, const mr_model_options *opt, mr_backend *be) {
    *out = NULL;
    mr_model *m;
    MR_CHECK(mr_calloc((void **)&m, 1, sizeof *m, "model"));
    m->be = be;
    m->opt = *opt;
    mr_checkpoint *ck = NULL;
    mr_gguf *gg = NULL;
    mr_weight_source src = {0};
    int gguf = mr_model_path_is_gguf(path);
    mr_status st;
    if (gguf) {
        st = mr_gguf_open(&gg, path);
        if (st == MR_OK) st = mr_gguf_to_config(gg, &m->cfg);
        src = (mr_weight_source){.h = gg, .read = gguf_read, .bytes_read = gguf_bytes};
    } else {
        st = mr_config_load(&m->cfg, path);
    }
    if (st != MR_OK) {
        mr_gguf_close(gg);
        free(m);
        return st;
    }
    const mr_model_config *c = &m->cfg;
    if (m->opt.max_ctx <= 0) m->opt.max_ctx = c->max_pos < 4096 ? c->max_pos : 4096;
    if (m->opt.max_ctx > c->max_pos) {
        st = mr_error(MR_ERR_INPUT, "context of %d positions exceeds max_position_embeddings = %d of %s",
                      m->opt.max_ctx, c->max_pos, path);
        goto fail;
    }
    if (m->opt.max_slots <= 0) m->opt.max_slots = 1;
    if (m->opt.max_step_tokens <= 0) m->opt.max_step_tokens = 256;
    if (!m->opt.synthetic && !gguf) {
        MR_CHECK_GOTO(mr_checkpoint_open(&ck, path), st, fail);
        src = (mr_weight_source){.h = ck, .read = st_read, .bytes_read = st_bytes};
    }
    MR_CHECK_GOTO(mr_model_load_weights(m, m->opt.synthetic ? NULL : &src), st, fail);
    mr_checkpoint_close(ck);
    mr_gguf_close(gg);
    *out = m;
    return MR_OK;
fail:
    mr_checkpoint_close(ck);
    mr_gguf_close(gg);
    mr_model_free(m);
    return st;
}

void mr_model_free(mr_model *m) {
    if (!m) return;
    mr_progress_destroy(m->ep_prog);
    for (size_t i = 0; i < m->n_allocs; i++) m->be->ops->free(m->be, m->allocs[i]);
    free(m->allocs);
    if (m->layers)
        for (int l = 0; l < m->cfg.n_layers; l++) free(m->layers[l].experts);
    free(m->layers);
    free(m->k_cache);
    free(m->v_cache);
    free(m->rope_freq);
    mr_workspace *ws = &m->ws;
    free(ws->route_idx);
    free(ws->perm_tok);
    free(ws->e_count);
    free(ws->e_offset);
    free(ws->out_rows);
    free(ws->embed_ids);
    free(ws->expert_tokens);
    free(ws->ep_scount);
    free(ws->ep_send_eid);
    free(ws->ep_send_src);
    free(ws->ep_recv_eid);
    free(ws->ep_order);
    mr_config_free(&m->cfg);
    free(m);
}

/* Where key (slot, pos, head 0) starts in a layer's cache. */
static float *k_at(const mr_model *m, int l, int slot, int pos) {
    size_t qk = (size_t)mr_config_qk_dim(&m->cfg), nkv = (size_t)m->kv_heads;
    return m->k_cache[l] + ((size_t)slot * (size_t)m->opt.max_ctx + (size_t)pos) * nkv * qk;
}
static float *v_at(const mr_model *m, int l, int slot, int pos) {
    size_t v = (size_t)mr_config_v_dim(&m->cfg), nkv = (size_t)m->kv_heads;
    return m->v_cache[l] + ((size_t)slot * (size_t)m->opt.max_ctx + (size_t)pos) * nkv * v;
}

/* Sum of buf(n) over the tensor group, by the all-reduce engine (with the
 * plan's compression) or, with exact=1 or no engine, exactly. */
static mr_status tp_allreduce_mode(mr_model *m, float *buf, size_t n, int exact) {
    if (m->loc.tp == 1 || n == 0) return MR_OK;
    mr_allreduce *ar = m->opt.shard.tp_ar;
    if (ar && exact) return mr_allreduce_run_as(ar, MR_AR_AUTO, MR_COMPRESS_NONE, buf, buf, n);
    if (ar) return mr_allreduce_run(ar, buf, buf, n);
    mr_comm *c = m->opt.shard.tp_comm;
    return c->ops->allreduce_sum_f32(c, buf, n);
}

static mr_status tp_allreduce(mr_model *m, float *buf, size_t n) { return tp_allreduce_mode(m, buf, n, 0); }

/* Row-parallel output projection and its all-reduce over the tensor group
 * (overlapped in token chunks by the engine when it can). */
static mr_status rowpar_out(mr_model *m, float *y, const float *x, const float *w, const float *bias, int T, int N,
                            int K) {
    mr_allreduce *ar = m->opt.shard.tp_ar;
    if (m->loc.tp > 1 && ar) return mr_allreduce_matmul(ar, m->be, y, x, w, bias, T, N, K);
    m->be->ops->matmul(m->be, y, x, w, bias, T, N, K, 0);
    return tp_allreduce(m, y, (size_t)T * N);
}

static void run_attention(mr_model *m, int l, const mr_batch *b) {
    const mr_model_config *c = &m->cfg;
    const mr_backend_ops *ops = m->be->ops;
    mr_workspace *ws = &m->ws;
    size_t qk = (size_t)mr_config_qk_dim(c), v = (size_t)mr_config_v_dim(c), nkv = (size_t)m->kv_heads;
    size_t ctx = (size_t)m->opt.max_ctx;
    ops->attention(m->be, ws->o, ws->q, m->k_cache[l], m->v_cache[l], b->slot, b->pos, b->ntok, m->loc.nh,
                   (int)nkv, (int)qk, (int)v, ctx * nkv * qk, ctx * nkv * v, m->attn_scale);
}

/* Standard multi-head attention with grouped KV heads (llama family). */
static mr_status attention_std(mr_model *m, int l, const mr_batch *b) {
    const mr_model_config *c = &m->cfg;
    const mr_layer_w *w = &m->layers[l];
    const mr_backend_ops *ops = m->be->ops;
    mr_workspace *ws = &m->ws;
    int T = b->ntok, H = c->hidden, nh = m->loc.nh, nkv = m->loc.nkv, hd = c->head_dim;
    int W = (nh + 2 * nkv) * hd;
    ops->matmul(m->be, ws->qkv, ws->h, w->wqkv, w->bqkv, T, W, H, 0); /* (T, W) */
    if (c->qk_norm) {
        for (int t = 0; t < T; t++) {
            float *row = ws->qkv + (size_t)t * W;
            ops->rmsnorm(m->be, row, row, w->q_norm, nh, hd, c->norm_eps);
            ops->rmsnorm(m->be, row + nh * hd, row + nh * hd, w->k_norm, nkv, hd, c->norm_eps);
        }
    }
    ops->rope(m->be, ws->qkv, T, nh, W, hd, 0, hd, b->pos, m->rope_freq, m->rope_mscale, c->rope_interleave);
    ops->rope(m->be, ws->qkv + nh * hd, T, nkv, W, hd, 0, hd, b->pos, m->rope_freq, m->rope_mscale,
              c->rope_interleave);
    /* Split q out and store k, v in the cache (host copies: CPU backend). */
    for (int t = 0; t < T; t++) {
        const float *row = ws->qkv + (size_t)t * W;
        memcpy(ws->q + (size_t)t * nh * hd, row, (size_t)nh * hd * sizeof(float));
        memcpy(k_at(m, l, b->slot[t], b->pos[t]), row + nh * hd, (size_t)nkv * hd * sizeof(float));
        memcpy(v_at(m, l, b->slot[t], b->pos[t]), row + (nh + nkv) * hd, (size_t)nkv * hd * sizeof(float));
    }
    run_attention(m, l, b);
    return rowpar_out(m, ws->a, ws->o, w->wo, w->bo, T, H, nh * hd);
}

/* Multi-head latent attention (deepseek_v3), caching the decompressed
 * per-head keys [nope | rope] and values. */
static mr_status attention_mla(mr_model *m, int l, const mr_batch *b) {
    const mr_model_config *c = &m->cfg;
    const mr_layer_w *w = &m->layers[l];
    const mr_backend_ops *ops = m->be->ops;
    mr_workspace *ws = &m->ws;
    int T = b->ntok, H = c->hidden, nh = m->loc.nh;
    int nope = c->qk_nope_dim, rope = c->qk_rope_dim, vd = c->v_head_dim, qk = nope + rope;
    int kvr = c->kv_lora_rank, qr = c->q_lora_rank;
    if (qr) {
        ops->matmul(m->be, ws->lat, ws->h, w->wq_a, NULL, T, qr, H, 0);        /* (T, qr) */
        ops->rmsnorm(m->be, ws->lat, ws->lat, w->q_a_norm, T, qr, MLA_LORA_NORM_EPS);
        ops->matmul(m->be, ws->q, ws->lat, w->wq_b, NULL, T, nh * qk, qr, 0);  /* (T, nh qk) */
    } else {
        ops->matmul(m->be, ws->q, ws->h, w->wq, NULL, T, nh * qk, H, 0);
    }
    int la = kvr + rope;
    ops->matmul(m->be, ws->lat, ws->h, w->wkv_a, NULL, T, la, H, 0);          /* (T, kvr + rope) */
    for (int t = 0; t < T; t++)
        memcpy(ws->lat2 + (size_t)t * kvr, ws->lat + (size_t)t * la, (size_t)kvr * sizeof(float));
    ops->rmsnorm(m->be, ws->lat2, ws->lat2, w->kv_a_norm, T, kvr, MLA_LORA_NORM_EPS);
    int kvw = nh * (nope + vd);
    ops->matmul(m->be, ws->qkv, ws->lat2, w->wkv_b, NULL, T, kvw, kvr, 0);    /* (T, nh (nope + v)) */
    ops->rope(m->be, ws->q, T, nh, nh * qk, qk, nope, rope, b->pos, m->rope_freq, m->rope_mscale,
              c->rope_interleave);
    ops->rope(m->be, ws->lat, T, 1, la, 0, kvr, rope, b->pos, m->rope_freq, m->rope_mscale, c->rope_interleave);
    for (int t = 0; t < T; t++) {
        float *kd = k_at(m, l, b->slot[t], b->pos[t]), *vdst = v_at(m, l, b->slot[t], b->pos[t]);
        const float *kv = ws->qkv + (size_t)t * kvw, *kr = ws->lat + (size_t)t * la + kvr;
        for (int h = 0; h < nh; h++) {
            memcpy(kd + (size_t)h * qk, kv + (size_t)h * (nope + vd), (size_t)nope * sizeof(float));
            memcpy(kd + (size_t)h * qk + nope, kr, (size_t)rope * sizeof(float));
            memcpy(vdst + (size_t)h * vd, kv + (size_t)h * (nope + vd) + nope, (size_t)vd * sizeof(float));
        }
    }
    run_attention(m, l, b);
    return rowpar_out(m, ws->a, ws->o, w->wo, NULL, T, H, nh * vd);
}

/* ws->act(T,I) = silu(gate x) * up x */
static void mlp_act(mr_model *m, const mr_mlp_w *w, const float *x, int T) {
    const mr_backend_ops *ops = m->be->ops;
    int H = m->cfg.hidden, I = w->inter;
    ops->matmul(m->be, m->ws.gu, x, w->gu, w->gu_b, T, 2 * I, H, 0);
    ops->silu_mul(m->be, m->ws.act, m->ws.gu, T, I);
}

/* out(T,H) = down(silu(gate x) * up x) */
static void mlp(mr_model *m, const mr_mlp_w *w, float *out, const float *x, int T) {
    mlp_act(m, w, x, T);
    m->be->ops->matmul(m->be, out, m->ws.act, w->down, w->down_b, T, m->cfg.hidden, w->inter, 0);
}

/* The dense MLP of a layer, its down projection row-parallel with the
 * tensor all-reduce (rowpar_out). */
static mr_status mlp_rowpar(mr_model *m, const mr_mlp_w *w, float *out, const float *x, int T) {
    mlp_act(m, w, x, T);
    return rowpar_out(m, out, m->ws.act, w->down, w->down_b, T, m->cfg.hidden, w->inter);
}

static mr_route_params route_params(const mr_model *m, const mr_layer_w *w) {
    const mr_model_config *c = &m->cfg;
    return (mr_route_params){
        .scoring = c->arch == MR_ARCH_DEEPSEEK_V3 ? MR_ROUTE_SIGMOID_GROUP : MR_ROUTE_SOFTMAX,
        .n_experts = c->n_experts, .top_k = c->top_k, .norm_topk_prob = c->norm_topk_prob,
        .routed_scaling = c->routed_scaling, .bias = w->router_bias,
        .n_group = c->n_group, .topk_group = c->topk_group,
    };
}

/* Shared experts of a MoE layer, added into ws->a (tensor-sliced: partial
 * sums, completed by the caller's all-reduce).  In two halves so that the
 * expert-parallel combine can run between them: compute (into ws->ye and
 * ws->shared_g), then add. */
static void moe_shared_compute(mr_model *m, const mr_layer_w *w, int T) {
    if (!w->shared.inter) return;
    mlp(m, &w->shared, m->ws.ye, m->ws.h, T);
    if (w->shared_gate) m->be->ops->matmul(m->be, m->ws.shared_g, m->ws.h, w->shared_gate, NULL, T, 1, m->cfg.hidden, 0);
}

static void moe_shared_add(mr_model *m, const mr_layer_w *w, int T) {
    mr_workspace *ws = &m->ws;
    int H = m->cfg.hidden;
    if (!w->shared.inter) return;
    if (w->shared_gate) m->be->ops->sigmoid_gate_add(m->be, ws->a, ws->ye, ws->shared_g, T, H);
    else m->be->ops->add(m->be, ws->a, ws->ye, (size_t)T * H);
}

static void moe_shared(mr_model *m, const mr_layer_w *w, int T) {
    moe_shared_compute(m, w, T);
    moe_shared_add(m, w, T);
}

/* MoE with every expert on this rank (sliced over the tensor group when
 * tp > 1): router, grouping of routed rows by expert (counting sort), one
 * GEMM chain per expert over all its tokens, weighted scatter back. */
static void moe_local(mr_model *m, int l, int T) {
    const mr_model_config *c = &m->cfg;
    const mr_layer_w *w = &m->layers[l];
    const mr_backend_ops *ops = m->be->ops;
    mr_workspace *ws = &m->ws;
    int H = c->hidden, E = c->n_experts, K = c->top_k;
    ops->matmul(m->be, ws->router_logits, ws->h, w->router, NULL, T, E, H, 0);
    mr_route_params rp = route_params(m, w);
    ops->route(m->be, ws->route_idx, ws->route_w, ws->router_logits, T, &rp);
    memset(ws->e_count, 0, (size_t)(E + 1) * sizeof(int32_t));
    for (int i = 0; i < T * K; i++) ws->e_count[ws->route_idx[i]]++;
    ws->e_offset[0] = 0;
    for (int e = 0; e < E; e++) ws->e_offset[e + 1] = ws->e_offset[e] + ws->e_count[e];
    memset(ws->e_count, 0, (size_t)(E + 1) * sizeof(int32_t));
    for (int i = 0; i < T * K; i++) {
        int e = ws->route_idx[i], at = ws->e_offset[e] + ws->e_count[e]++;
        ws->perm_tok[at] = i / K;
        ws->perm_w[at] = ws->route_w[i];
    }
    memset(ws->a, 0, (size_t)T * H * sizeof(float));
    for (int e = 0; e < E; e++) {
        int n = ws->e_count[e], off = ws->e_offset[e];
        if (!n) continue;
        ws->expert_tokens[e] += (uint64_t)n;
        m->step_expert_bytes += (uint64_t)3 * (uint64_t)w->experts[e].inter * (uint64_t)H * sizeof(float);
        ops->gather_rows(m->be, ws->xe, ws->h, ws->perm_tok + off, n, H);
        mlp(m, &w->experts[e], ws->ye, ws->xe, n);
        ops->scatter_add_rows(m->be, ws->a, ws->ye, ws->perm_tok + off, ws->perm_w + off, n, H);
    }
    moe_shared(m, w, T);
}

/* The combine all-to-all as a progress-thread job. */
typedef struct ep_combine_job {
    mr_comm *ep;
    const void *send;
    const int *sc, *sd;
    void *recv;
    const int *rc, *rd;
    size_t elem;
} ep_combine_job;

static mr_status run_combine(void *ctx, void *job) {
    (void)ctx;
    ep_combine_job *j = job;
    return j->ep->ops->alltoallv(j->ep, j->send, j->sc, j->sd, j->recv, j->rc, j->rd, j->elem);
}

/* *yes alike on every rank of the expert group: the plan's flag, the
 * communicator's thread level, the layer's shared experts.  A thread that
 * cannot start is an error (the peers would wait in the other path). */
static mr_status overlap_combine(mr_model *m, const mr_layer_w *w, int *yes) {
    mr_comm *ep = m->opt.shard.ep_comm;
    *yes = m->opt.shard.ep_overlap && ep->thread_serialized && w->shared.inter;
    if (*yes && !m->ep_prog) {
        MR_CHECK(mr_progress_create(&ep, 1, run_combine, NULL, sizeof(ep_combine_job), &m->ep_prog));
        MR_DEBUG("expert combine overlapped with the shared experts (progress thread started)");
    }
    return MR_OK;
}

/* MoE with the experts dealt out over an expert group, staged like DeepEP:
 *   route own tokens -> rows per destination rank -> exchange counts ->
 *   dispatch rows (+ local expert ids) with all-to-all(v) -> each local
 *   expert runs one GEMM chain over every row it received -> combine with
 *   the reverse all-to-all(v) -> weighted sum into the own tokens' rows.
 * With tp > 1 each tensor rank dispatches its own contiguous share of the
 * batch, so no routed token is computed twice; the caller's all-reduce
 * over the tensor group completes every row. */
static mr_status moe_ep(mr_model *m, int l, int T) {
    const mr_model_config *c = &m->cfg;
    const mr_layer_w *w = &m->layers[l];
    const mr_backend_ops *ops = m->be->ops;
    const mr_local *lo = &m->loc;
    mr_workspace *ws = &m->ws;
    mr_comm *ep = m->opt.shard.ep_comm;
    int H = c->hidden, E = c->n_experts, K = c->top_k, G = lo->ep, ne = lo->ne;
    int t0 = (int)((long)T * lo->tp_rank / lo->tp), t1 = (int)((long)T * (lo->tp_rank + 1) / lo->tp), n = t1 - t0;
    if (n > 0) {
        ops->matmul(m->be, ws->router_logits, ws->h + (size_t)t0 * H, w->router, NULL, n, E, H, 0);
        mr_route_params rp = route_params(m, w);
        ops->route(m->be, ws->route_idx, ws->route_w, ws->router_logits, n, &rp);
    }
    /* rows per destination, then the send buffer in destination order */
    mr_moe_ep_stats *st = &m->ep_stats;
    if (m->opt.ep_timing_sync) MR_CHECK(ep->ops->barrier(ep));
    double t_start = now_s(), ta;
    int *sc = ws->ep_scount, *sd = ws->ep_sdisp, *rc = ws->ep_rcount, *rd = ws->ep_rdisp;
    memset(sc, 0, (size_t)G * sizeof(int));
    for (int i = 0; i < n * K; i++) sc[ws->route_idx[i] / ne]++;
    sd[0] = 0;
    for (int d = 1; d < G; d++) sd[d] = sd[d - 1] + sc[d - 1];
    int *fill = rc; /* reuse as a cursor before the counts exchange */
    memcpy(fill, sd, (size_t)G * sizeof(int));
    for (int i = 0; i < n * K; i++) {
        int e = ws->route_idx[i], d = e / ne, at = fill[d]++;
        ws->ep_send_eid[at] = e - d * ne;
        ws->ep_send_src[at] = i;
        ws->perm_tok[at] = t0 + i / K;
        ws->perm_w[at] = ws->route_w[i];
    }
    int nsend = n * K;
    if (nsend) ops->gather_rows(m->be, ws->ep_send, ws->h, ws->perm_tok, nsend, H);
    /* exchange counts: one int to every peer */
    int ones[256], disp[256];
    if (G > 256) return mr_error(MR_ERR_UNSUPPORTED, "expert groups of more than 256 ranks");
    for (int d = 0; d < G; d++) ones[d] = 1, disp[d] = d;
    ta = now_s();
    MR_CHECK(ep->ops->alltoallv(ep, sc, ones, disp, rc, ones, disp, sizeof(int)));
    rd[0] = 0;
    for (int d = 1; d < G; d++) rd[d] = rd[d - 1] + rc[d - 1];
    int nrecv = rd[G - 1] + rc[G - 1];
    MR_CHECK(ep->ops->alltoallv(ep, ws->ep_send_eid, sc, sd, ws->ep_recv_eid, rc, rd, sizeof(int32_t)));
    MR_CHECK(ep->ops->alltoallv(ep, ws->ep_send, sc, sd, ws->ep_recv, rc, rd, (size_t)H * sizeof(float)));
    st->a2a_s += now_s() - ta;
    /* group received rows by local expert */
    memset(ws->e_count, 0, (size_t)(ne + 1) * sizeof(int32_t));
    for (int j = 0; j < nrecv; j++) ws->e_count[ws->ep_recv_eid[j]]++;
    ws->e_offset[0] = 0;
    for (int e = 0; e < ne; e++) ws->e_offset[e + 1] = ws->e_offset[e] + ws->e_count[e];
    memset(ws->e_count, 0, (size_t)(ne + 1) * sizeof(int32_t));
    for (int j = 0; j < nrecv; j++) {
        int e = ws->ep_recv_eid[j];
        ws->ep_order[ws->e_offset[e] + ws->e_count[e]++] = j;
    }
    if (nrecv) ops->gather_rows(m->be, ws->xe, ws->ep_recv, ws->ep_order, nrecv, H);
    m->be->ops->sync(m->be);
    st->dispatch_s += now_s() - t_start;
    st->calls++;
    st->rows_sent += (uint64_t)nsend;
    st->rows_recv += (uint64_t)nrecv;
    for (int e = 0; e < ne; e++) {
        int cnt = ws->e_count[e], off = ws->e_offset[e];
        if (!cnt) continue;
        ws->expert_tokens[e] += (uint64_t)cnt;
        m->step_expert_bytes += (uint64_t)3 * (uint64_t)w->experts[e].inter * (uint64_t)H * sizeof(float);
        /* chunks of at most one step's tokens: the gate/up workspace's rows */
        for (int k = 0; k < cnt; k += m->opt.max_step_tokens) {
            int rows = cnt - k < m->opt.max_step_tokens ? cnt - k : m->opt.max_step_tokens;
            mlp(m, &w->experts[e], ws->ye + (size_t)(off + k) * H, ws->xe + (size_t)(off + k) * H, rows);
        }
    }
    /* back to received order: ep_recv[order[k]] = ye[k] */
    m->be->ops->sync(m->be);
    if (m->opt.ep_timing_sync) MR_CHECK(ep->ops->barrier(ep));
    double t_comb = now_s();
    if (nrecv) {
        memset(ws->ep_recv, 0, (size_t)nrecv * H * sizeof(float));
        ops->scatter_add_rows(m->be, ws->ep_recv, ws->ye, ws->ep_order, NULL, nrecv, H);
    }
    ta = now_s();
    if (T > 0) memset(ws->a, 0, (size_t)T * H * sizeof(float));
    int overlap;
    MR_CHECK(overlap_combine(m, w, &overlap));
    if (overlap) {
        /* the shared experts compute while the combine is in flight (they
         * touch neither ep_recv nor ep_send); the sums keep the order of
         * the path below, so both give the same bits */
        ep_combine_job job = {ep, ws->ep_recv, rc, rd, ws->ep_send, sc, sd, (size_t)H * sizeof(float)};
        MR_CHECK(mr_progress_start(m->ep_prog, &job));
        if (T > 0) moe_shared_compute(m, w, T);
        m->be->ops->sync(m->be);
        MR_CHECK(mr_progress_wait(m->ep_prog));
        st->a2a_s += now_s() - ta;
        if (nsend) ops->scatter_add_rows(m->be, ws->a, ws->ep_send, ws->perm_tok, ws->perm_w, nsend, H);
        if (T > 0) moe_shared_add(m, w, T);
    } else {
        MR_CHECK(ep->ops->alltoallv(ep, ws->ep_recv, rc, rd, ws->ep_send, sc, sd, (size_t)H * sizeof(float)));
        st->a2a_s += now_s() - ta;
        if (nsend) ops->scatter_add_rows(m->be, ws->a, ws->ep_send, ws->perm_tok, ws->perm_w, nsend, H);
        if (T > 0) moe_shared(m, w, T);
    }
    m->be->ops->sync(m->be);
    st->combine_s += now_s() - t_comb;
    return MR_OK;
}

static mr_status check_batch(const mr_model *m, const mr_batch *b) {
    if (b->ntok < 0 || b->ntok > m->opt.max_step_tokens)
        return mr_error(MR_ERR_INTERNAL, "batch of %d tokens (limit %d)", b->ntok, m->opt.max_step_tokens);
    for (int t = 0; t < b->ntok; t++) {
        if (m->loc.first && (b->tokens[t] < 0 || b->tokens[t] >= m->cfg.vocab))
            return mr_error(MR_ERR_INPUT, "token id %d is outside the vocabulary (size %d)", b->tokens[t],
                            m->cfg.vocab);
        if (b->slot[t] < 0 || b->slot[t] >= m->opt.max_slots || b->pos[t] < 0 || b->pos[t] >= m->opt.max_ctx)
            return mr_error(MR_ERR_INTERNAL, "token %d: slot %d position %d out of range", t, b->slot[t], b->pos[t]);
    }
    for (int i = 0; i < b->n_out; i++)
        if (b->out_rows[i] < 0 || b->out_rows[i] >= b->ntok)
            return mr_error(MR_ERR_INTERNAL, "logit row %d out of range", b->out_rows[i]);
    return MR_OK;
}


/* Embedding of the local vocabulary rows; tokens of other ranks read the
 * zero row, and the tensor all-reduce completes every row. */
static mr_status embed(mr_model *m, const mr_batch *b) {
    const mr_local *lo = &m->loc;
    int H = m->cfg.hidden;
    for (int t = 0; t < b->ntok; t++) {
        int id = b->tokens[t] - lo->v0;
        m->ws.embed_ids[t] = (id >= 0 && id < lo->nv) ? id : lo->nv;
    }
    m->be->ops->gather_rows(m->be, m->ws.x, m->embed, m->ws.embed_ids, b->ntok, H);
    /* exact whatever the compression: one rank holds each row */
    return tp_allreduce_mode(m, m->ws.x, (size_t)b->ntok * H, 1);
}

/* Final norm and LM head of the rows asked for; with tp > 1 each rank's
 * vocabulary slice is all-gathered into full rows. */
static mr_status lm_head(mr_model *m, const mr_batch *b, float *logits) {
    const mr_model_config *c = &m->cfg;
    const mr_backend_ops *ops = m->be->ops;
    const mr_local *lo = &m->loc;
    mr_workspace *ws = &m->ws;
    int H = c->hidden, V = c->vocab, nv = lo->nv;
    for (int r0 = 0; r0 < b->n_out; r0 += MR_LOGIT_CHUNK) {
        int n = b->n_out - r0 < MR_LOGIT_CHUNK ? b->n_out - r0 : MR_LOGIT_CHUNK;
        ops->gather_rows(m->be, ws->final_h, ws->x, b->out_rows + r0, n, H);
        ops->rmsnorm(m->be, ws->final_h, ws->final_h, m->norm, n, H, c->norm_eps);
        if (lo->tp == 1) {
            ops->matmul(m->be, logits + (size_t)r0 * V, ws->final_h, m->lm_head, NULL, n, V, H, 0);
            continue;
        }
        ops->matmul(m->be, ws->logits_local, ws->final_h, m->lm_head, NULL, n, nv, H, 0);
        mr_comm *tc = m->opt.shard.tp_comm;
        MR_CHECK(tc->ops->allgather(tc, ws->logits_local, ws->logits_all, (size_t)n * nv * sizeof(float)));
        for (int r = 0; r < lo->tp; r++)
            for (int i = 0; i < n; i++)
                memcpy(logits + (size_t)(r0 + i) * V + (size_t)r * nv, ws->logits_all + ((size_t)r * n + i) * nv,
                       (size_t)nv * sizeof(float));
    }
    return MR_OK;
}

mr_status mr_model_forward(mr_model *m, const mr_batch *b, float *logits) {
    MR_CHECK(check_batch(m, b));
    const mr_model_config *c = &m->cfg;
    const mr_backend_ops *ops = m->be->ops;
    const mr_local *lo = &m->loc;
    mr_workspace *ws = &m->ws;
    int T = b->ntok, H = c->hidden;
    m->step_expert_bytes = 0;
    if (T == 0) { /* nothing to compute, but the expert exchanges need us */
        if (lo->ep > 1)
            for (int l = lo->lb; l < lo->le; l++)
                if (m->layers[l].moe) MR_CHECK(moe_ep(m, l, 0));
        return MR_OK;
    }
    if (lo->first) MR_CHECK(embed(m, b));
    for (int l = lo->lb; l < lo->le; l++) {
        const mr_layer_w *w = &m->layers[l];
        ops->rmsnorm(m->be, ws->h, ws->x, w->attn_norm, T, H, c->norm_eps);
        /* attention and dense MLP end in rowpar_out (GEMM + all-reduce) */
        MR_CHECK(mr_config_is_mla(c) ? attention_mla(m, l, b) : attention_std(m, l, b));
        ops->add(m->be, ws->x, ws->a, (size_t)T * H);
        ops->rmsnorm(m->be, ws->h, ws->x, w->ffn_norm, T, H, c->norm_eps);
        if (!w->moe) {
            MR_CHECK(mlp_rowpar(m, &w->mlp, ws->a, ws->h, T));
        } else {
            if (lo->ep > 1) MR_CHECK(moe_ep(m, l, T));
            else moe_local(m, l, T);
            MR_CHECK(tp_allreduce(m, ws->a, (size_t)T * H));
        }
        ops->add(m->be, ws->x, ws->a, (size_t)T * H);
    }
    if (lo->last) MR_CHECK(lm_head(m, b, logits));
    ops->sync(m->be);
    return MR_OK;
}
