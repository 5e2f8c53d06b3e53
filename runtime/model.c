/* The batched forward pass of every architecture over the backend table.
 *
 * Per layer (shapes for T tokens, H hidden):
 *   h = rmsnorm(x)                       (T,H)
 *   a = attention(h)  standard or MLA    (T,H), K/V written to the cache
 *   x += a
 *   h = rmsnorm(x)
 *   a = mlp(h) or moe(h)                 (T,H)
 *   x += a
 * then the final norm and the LM head for the rows whose logits are asked.
 * Each "x += a" runs inside the norm that follows it (add_rmsnorm: one pass
 * over x, the same bits); the shard's last one stands alone.
 *
 * Memory: every buffer the ops touch is backend memory (device memory on a
 * GPU); the host only reads and writes its h_* mirrors (model-internal.h),
 * which are the same buffers on a host-memory backend, so the CPU pays no
 * copies.  On a device backend the routing (counting sort of the chosen
 * experts) and the step's int arrays go through the host, as do the
 * exchanges of any communicator without device_memory (MPI): download,
 * call, upload.  A device communicator (NCCL) gets device buffers. */
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
float *mr_model_activations(mr_model *m) { return m->ws.h_x; }
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
/* Host mirror <- backend buffer (and wait for it); no-op when they are one. */
static void fetch(mr_model *m, void *h, const void *d, size_t bytes) {
    if (h == d || !bytes) return;
    m->be->ops->download(m->be, h, d, bytes);
    m->be->ops->sync(m->be);
}
/* Backend buffer <- host mirror; no-op when they are one. */
static void put(mr_model *m, void *d, const void *h, size_t bytes) {
    if (h != d && bytes) m->be->ops->upload(m->be, d, h, bytes);
}

void mr_model_activations_move(mr_model *m, int ntok, int to_device) {
    size_t bytes = (size_t)ntok * (size_t)m->cfg.hidden * sizeof(float);
    if (to_device) put(m, m->ws.x, m->ws.h_x, bytes);
    else fetch(m, m->ws.h_x, m->ws.x, bytes);
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
    m->dev = !be->ops->host_memory;
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
    for (size_t i = 0; i < m->n_host_allocs; i++) free(m->host_allocs[i]);
    free(m->host_allocs);
    if (m->layers)
        for (int l = 0; l < m->cfg.n_layers; l++) free(m->layers[l].experts);
    free(m->layers);
    free(m->k_cache);
    free(m->v_cache);
    mr_workspace *ws = &m->ws;
    free(ws->e_count);
    free(ws->e_offset);
    free(ws->expert_tokens);
    free(ws->ep_scount);
    free(ws->ep_send_eid);
    free(ws->ep_send_src);
    free(ws->ep_recv_eid);
    mr_config_free(&m->cfg);
    free(m);
}

/* Sum of buf(n) over the tensor group, by the all-reduce engine (with the
 * plan's compression) or, with exact=1 or no engine, exactly. */
static mr_status host_allreduce(mr_model *m, float *buf, size_t n, int exact) {
    mr_allreduce *ar = m->opt.shard.tp_ar;
    if (ar && exact) return mr_allreduce_run_as(ar, MR_AR_AUTO, MR_COMPRESS_NONE, buf, buf, n);
    if (ar) return mr_allreduce_run(ar, buf, buf, n);
    mr_comm *c = m->opt.shard.tp_comm;
    return c->ops->allreduce_sum_f32(c, buf, n);
}

/* On a device backend: the device engine when there is one (its `auto`
 * with no compression is the communicator's own all-reduce); else a device
 * communicator's own (exact) all-reduce when no compression is asked;
 * otherwise the host engine on a staged copy. */
static mr_status tp_allreduce_mode(mr_model *m, float *buf, size_t n, int exact) {
    if (m->loc.tp == 1 || n == 0) return MR_OK;
    if (!m->dev) return host_allreduce(m, buf, n, exact);
    mr_allreduce *ad = m->opt.shard.tp_ar_dev;
    if (ad && exact) return mr_allreduce_run_as(ad, MR_AR_AUTO, MR_COMPRESS_NONE, buf, buf, n);
    if (ad) return mr_allreduce_run(ad, buf, buf, n);
    mr_allreduce *ar = m->opt.shard.tp_ar;
    mr_comm *c = m->opt.shard.tp_comm;
    int plain = !ar || exact || mr_allreduce_options(ar)->compression == MR_COMPRESS_NONE;
    if (c->device_memory && plain) return c->ops->allreduce_sum_f32(c, buf, n);
    fetch(m, m->ws.h_stage, buf, n * sizeof(float));
    MR_CHECK(host_allreduce(m, m->ws.h_stage, n, exact));
    put(m, buf, m->ws.h_stage, n * sizeof(float));
    return MR_OK;
}

static mr_status tp_allreduce(mr_model *m, float *buf, size_t n) { return tp_allreduce_mode(m, buf, n, 0); }

/* y(M,N) = x(M,K) . w(N,K)^T (+ bias) with a weight matrix (float32 or
 * bf16, model-internal.h); in the deterministic mode the fixed-order
 * product, K whole on every rank. */
static void mm(mr_model *m, float *y, const float *x, const void *w, const float *bias, int M, int N, int K) {
    if (m->det) m->be->ops->matmul_fixed(m->be, y, x, w, m->wbf16, bias, M, N, K, mr_det_kc(m, K, 0), 0);
    else mr_backend_matmul_w(m->be, y, x, w, m->wbf16, bias, M, N, K, 0);
}

/* The same with float32 weights whatever the matrices' type (routers). */
static void mm32(mr_model *m, float *y, const float *x, const float *w, int M, int N, int K) {
    if (m->det) m->be->ops->matmul_fixed(m->be, y, x, w, 0, NULL, M, N, K, mr_det_kc(m, K, 0), 0);
    else m->be->ops->matmul(m->be, y, x, w, NULL, M, N, K, 0);
}

/* ---- Deterministic mode (comm.deterministic) ------------------------------
 * Every plan and every batch gives the same bits.  Each product is the
 * backend's fixed-order matmul: an element's sum does not depend on the
 * rows beside it, the thread split or the machine.  A product whose K is
 * split over the tensor group in some plan (attention output, every down
 * projection) is summed in blocks that divide every such split
 * (mr_det_kc): each rank computes its blocks' sums alone, the group
 * all-gathers them, and every rank adds all blocks in K order onto
 * 0 + bias -- the order one rank follows.  That replaces the all-reduce
 * (nb / 2 times its bytes, nb the number of blocks).  MoE layers add the
 * experts of a token in expert order (expert parallelism sorts each token's
 * choices) and the shared experts after them; no overlap. */

/* y(T,N) = x(T,K) . w^T (+ bias) complete on every rank, K this rank's
 * share of `split` ranks' (1 or the tensor size). */
static mr_status det_rowpar(mr_model *m, float *y, const float *x, const void *w, const float *bias, int T, int N,
                            int K, int split) {
    const mr_backend_ops *ops = m->be->ops;
    int kc = mr_det_kc(m, K * split, 1);
    if (split == 1) {
        ops->matmul_fixed(m->be, y, x, w, m->wbf16, bias, T, N, K, kc, 0);
        return MR_OK;
    }
    mr_workspace *ws = &m->ws;
    mr_comm *c = m->opt.shard.tp_comm;
    int nbl = K / kc, nb = nbl * split;
    int rows = (int)(ws->det_cap / ((size_t)nb * (size_t)N));
    if (rows < 1 || K % kc) return mr_error(MR_ERR_INTERNAL, "deterministic block sums: K=%d kc=%d", K, kc);
    for (int t0 = 0; t0 < T; t0 += rows) {
        int n = T - t0 < rows ? T - t0 : rows;
        size_t blk = (size_t)n * (size_t)N, bytes = blk * (size_t)nbl * sizeof(float);
        ops->matmul_fixed(m->be, ws->det_local, x + (size_t)t0 * K, w, m->wbf16, NULL, n, N, K, kc, blk);
        /* rank r's blocks are blocks r nbl .. of the whole: all-gathered in K order */
        if (!m->dev || c->device_memory) {
            MR_CHECK(c->ops->allgather(c, ws->det_local, ws->det_all, bytes));
        } else {
            fetch(m, ws->h_det_local, ws->det_local, bytes);
            MR_CHECK(c->ops->allgather(c, ws->h_det_local, ws->h_det_all, bytes));
            put(m, ws->det_all, ws->h_det_all, bytes * (size_t)split);
        }
        float *yr = y + (size_t)t0 * N;
        ops->zero(m->be, yr, blk);
        if (bias) {
            ops->copy_rows(m->be, ws->det_local, (size_t)N, bias, 0, n, N);
            ops->add(m->be, yr, ws->det_local, blk);
        }
        for (int b = 0; b < nb; b++) ops->add(m->be, yr, ws->det_all + (size_t)b * blk, blk);
    }
    return MR_OK;
}

/* Row-parallel output projection and its all-reduce over the tensor group
 * (overlapped in token chunks by the engine when it can). */
static mr_status rowpar_out(mr_model *m, float *y, const float *x, const void *w, const float *bias, int T, int N,
                            int K) {
    if (m->det) return det_rowpar(m, y, x, w, bias, T, N, K, m->loc.tp);
    mr_allreduce *ar = m->dev ? m->opt.shard.tp_ar_dev : m->opt.shard.tp_ar;
    if (m->loc.tp > 1 && ar) return mr_allreduce_matmul(ar, m->be, y, x, w, m->wbf16, bias, T, N, K);
    mm(m, y, x, w, bias, T, N, K);
    return tp_allreduce(m, y, (size_t)T * N);
}

static void run_attention(mr_model *m, int l, const mr_batch *b) {
    const mr_model_config *c = &m->cfg;
    const mr_backend_ops *ops = m->be->ops;
    mr_workspace *ws = &m->ws;
    size_t qk = (size_t)mr_config_qk_dim(c), v = (size_t)mr_config_v_dim(c), nkv = (size_t)m->kv_heads;
    size_t ctx = (size_t)m->opt.max_ctx;
    ops->attention(m->be, ws->o, ws->q, m->k_cache[l], m->v_cache[l], m->cur_slot, m->cur_pos, b->ntok, m->loc.nh,
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
    mm(m, ws->qkv, ws->h, w->wqkv, w->bqkv, T, W, H); /* (T, W) */
    if (c->qk_norm) {
        for (int t = 0; t < T; t++) {
            float *row = ws->qkv + (size_t)t * W;
            ops->rmsnorm(m->be, row, row, w->q_norm, nh, hd, c->norm_eps);
            ops->rmsnorm(m->be, row + nh * hd, row + nh * hd, w->k_norm, nkv, hd, c->norm_eps);
        }
    }
    ops->rope(m->be, ws->qkv, T, nh, W, hd, 0, hd, m->cur_pos, m->rope_freq, m->rope_mscale, c->rope_interleave);
    ops->rope(m->be, ws->qkv + nh * hd, T, nkv, W, hd, 0, hd, m->cur_pos, m->rope_freq, m->rope_mscale,
              c->rope_interleave);
    /* Split q out and store k, v in the cache at (slot, position). */
    int ctx = m->opt.max_ctx, kvw = nkv * hd;
    ops->copy_rows(m->be, ws->q, (size_t)nh * hd, ws->qkv, (size_t)W, T, nh * hd);
    ops->cache_write(m->be, m->k_cache[l], (size_t)kvw, ctx, 0, 0, ws->qkv + nh * hd, (size_t)W, 0, m->cur_slot,
                     m->cur_pos, T, 1, kvw);
    ops->cache_write(m->be, m->v_cache[l], (size_t)kvw, ctx, 0, 0, ws->qkv + (nh + nkv) * hd, (size_t)W, 0,
                     m->cur_slot, m->cur_pos, T, 1, kvw);
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
        mm(m, ws->lat, ws->h, w->wq_a, NULL, T, qr, H);       /* (T, qr) */
        ops->rmsnorm(m->be, ws->lat, ws->lat, w->q_a_norm, T, qr, MLA_LORA_NORM_EPS);
        mm(m, ws->q, ws->lat, w->wq_b, NULL, T, nh * qk, qr); /* (T, nh qk) */
    } else {
        mm(m, ws->q, ws->h, w->wq, NULL, T, nh * qk, H);
    }
    int la = kvr + rope;
    mm(m, ws->lat, ws->h, w->wkv_a, NULL, T, la, H);         /* (T, kvr + rope) */
    ops->copy_rows(m->be, ws->lat2, (size_t)kvr, ws->lat, (size_t)la, T, kvr);
    ops->rmsnorm(m->be, ws->lat2, ws->lat2, w->kv_a_norm, T, kvr, MLA_LORA_NORM_EPS);
    int kvw = nh * (nope + vd);
    mm(m, ws->qkv, ws->lat2, w->wkv_b, NULL, T, kvw, kvr);   /* (T, nh (nope + v)) */
    ops->rope(m->be, ws->q, T, nh, nh * qk, qk, nope, rope, m->cur_pos, m->rope_freq, m->rope_mscale,
              c->rope_interleave);
    ops->rope(m->be, ws->lat, T, 1, la, 0, kvr, rope, m->cur_pos, m->rope_freq, m->rope_mscale,
              c->rope_interleave);
    /* per head: key [nope_h | shared rope key], value v_h */
    int ctx = m->opt.max_ctx;
    size_t krow = (size_t)nh * qk, vrow = (size_t)nh * vd, hs = (size_t)(nope + vd);
    ops->cache_write(m->be, m->k_cache[l], krow, ctx, 0, (size_t)qk, ws->qkv, (size_t)kvw, hs, m->cur_slot,
                     m->cur_pos, T, nh, nope);
    ops->cache_write(m->be, m->k_cache[l], krow, ctx, (size_t)nope, (size_t)qk, ws->lat + kvr, (size_t)la, 0,
                     m->cur_slot, m->cur_pos, T, nh, rope);
    ops->cache_write(m->be, m->v_cache[l], vrow, ctx, 0, (size_t)vd, ws->qkv + nope, (size_t)kvw, hs, m->cur_slot,
                     m->cur_pos, T, nh, vd);
    run_attention(m, l, b);
    return rowpar_out(m, ws->a, ws->o, w->wo, NULL, T, H, nh * vd);
}

/* ws->act(T,I) = silu(gate x) * up x */
static void mlp_act(mr_model *m, const mr_mlp_w *w, const float *x, int T) {
    const mr_backend_ops *ops = m->be->ops;
    int H = m->cfg.hidden, I = w->inter;
    mm(m, m->ws.gu, x, w->gu, w->gu_b, T, 2 * I, H);
    ops->silu_mul(m->be, m->ws.act, m->ws.gu, T, I);
}

/* out(T,H) = down(silu(gate x) * up x); the width sliced over `split`
 * tensor ranks (partial sums, except in the deterministic mode: complete). */
static mr_status mlp(mr_model *m, const mr_mlp_w *w, float *out, const float *x, int T, int split) {
    mlp_act(m, w, x, T);
    if (m->det) return det_rowpar(m, out, m->ws.act, w->down, w->down_b, T, m->cfg.hidden, w->inter, split);
    mm(m, out, m->ws.act, w->down, w->down_b, T, m->cfg.hidden, w->inter);
    return MR_OK;
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
static mr_status moe_shared_compute(mr_model *m, const mr_layer_w *w, int T) {
    if (!w->shared.inter) return MR_OK;
    MR_CHECK(mlp(m, &w->shared, m->ws.ye, m->ws.h, T, m->loc.tp));
    if (w->shared_gate) mm32(m, m->ws.shared_g, m->ws.h, w->shared_gate, T, 1, m->cfg.hidden);
    return MR_OK;
}

static void moe_shared_add(mr_model *m, const mr_layer_w *w, int T) {
    mr_workspace *ws = &m->ws;
    int H = m->cfg.hidden;
    if (!w->shared.inter) return;
    if (w->shared_gate) m->be->ops->sigmoid_gate_add(m->be, ws->a, ws->ye, ws->shared_g, T, H);
    else m->be->ops->add(m->be, ws->a, ws->ye, (size_t)T * H);
}

static mr_status moe_shared(mr_model *m, const mr_layer_w *w, int T) {
    MR_CHECK(moe_shared_compute(m, w, T));
    moe_shared_add(m, w, T);
    return MR_OK;
}

/* The router's choices (n values) into their host mirrors. */
static void fetch_routes(mr_model *m, int n) {
    if (!m->dev || n <= 0) return;
    m->be->ops->download(m->be, m->ws.h_route_idx, m->ws.route_idx, (size_t)n * sizeof(int32_t));
    m->be->ops->download(m->be, m->ws.h_route_w, m->ws.route_w, (size_t)n * sizeof(float));
    m->be->ops->sync(m->be);
}

/* The routed rows' tokens and weights (n values) from their host mirrors. */
static void put_perm(mr_model *m, int n) {
    if (n <= 0) return;
    put(m, m->ws.perm_tok, m->ws.h_perm_tok, (size_t)n * sizeof(int32_t));
    put(m, m->ws.perm_w, m->ws.h_perm_w, (size_t)n * sizeof(float));
}

/* All-to-all of rows of H floats over the expert group: on the device
 * buffers when the communicator takes them, else through the host mirrors
 * (send rows nsend, received nrecv; same layout). */
static mr_status ep_rows(mr_model *m, mr_comm *ep, const float *send, float *h_send, const int *sc, const int *sd,
                         int nsend, float *recv, float *h_recv, const int *rc, const int *rd, int nrecv) {
    size_t row = (size_t)m->cfg.hidden * sizeof(float);
    if (!m->dev || ep->device_memory) return ep->ops->alltoallv(ep, send, sc, sd, recv, rc, rd, row);
    fetch(m, h_send, send, (size_t)nsend * row);
    MR_CHECK(ep->ops->alltoallv(ep, h_send, sc, sd, h_recv, rc, rd, row));
    put(m, recv, h_recv, (size_t)nrecv * row);
    return MR_OK;
}

/* MoE with every expert on this rank (sliced over the tensor group when
 * tp > 1): router, grouping of routed rows by expert (counting sort), one
 * GEMM chain per expert over all its tokens, weighted scatter back. */
static mr_status moe_local(mr_model *m, int l, int T) {
    const mr_model_config *c = &m->cfg;
    const mr_layer_w *w = &m->layers[l];
    const mr_backend_ops *ops = m->be->ops;
    mr_workspace *ws = &m->ws;
    int H = c->hidden, E = c->n_experts, K = c->top_k;
    mm32(m, ws->router_logits, ws->h, w->router, T, E, H);
    mr_route_params rp = route_params(m, w);
    ops->route(m->be, ws->route_idx, ws->route_w, ws->router_logits, T, &rp);
    fetch_routes(m, T * K);
    memset(ws->e_count, 0, (size_t)(E + 1) * sizeof(int32_t));
    for (int i = 0; i < T * K; i++) ws->e_count[ws->h_route_idx[i]]++;
    ws->e_offset[0] = 0;
    for (int e = 0; e < E; e++) ws->e_offset[e + 1] = ws->e_offset[e] + ws->e_count[e];
    memset(ws->e_count, 0, (size_t)(E + 1) * sizeof(int32_t));
    for (int i = 0; i < T * K; i++) {
        int e = ws->h_route_idx[i], at = ws->e_offset[e] + ws->e_count[e]++;
        ws->h_perm_tok[at] = i / K;
        ws->h_perm_w[at] = ws->h_route_w[i];
    }
    put_perm(m, T * K);
    ops->zero(m->be, ws->a, (size_t)T * H);
    for (int e = 0; e < E; e++) {
        int n = ws->e_count[e], off = ws->e_offset[e];
        if (!n) continue;
        ws->expert_tokens[e] += (uint64_t)n;
        m->step_expert_bytes += (uint64_t)3 * (uint64_t)w->experts[e].inter * (uint64_t)H * sizeof(float);
        ops->gather_rows(m->be, ws->xe, ws->h, ws->perm_tok + off, n, H);
        MR_CHECK(mlp(m, &w->experts[e], ws->ye, ws->xe, n, m->loc.tp));
        ops->scatter_add_rows(m->be, ws->a, ws->ye, ws->perm_tok + off, ws->perm_w + off, n, H);
    }
    return moe_shared(m, w, T);
}

/* Deterministic mode: each token's k choices in expert order, so that the
 * combine adds a token's experts in the order moe_local does. */
static void sort_routes(int32_t *idx, float *wt, int n, int k) {
    for (int t = 0; t < n; t++) {
        int32_t *e = idx + (size_t)t * k;
        float *g = wt + (size_t)t * k;
        for (int i = 1; i < k; i++)
            for (int j = i; j > 0 && e[j - 1] > e[j]; j--) {
                int32_t te = e[j];
                float tg = g[j];
                e[j] = e[j - 1], g[j] = g[j - 1];
                e[j - 1] = te, g[j - 1] = tg;
            }
    }
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
 * cannot start is an error (the peers would wait in the other path).  On a
 * device backend only with a device communicator (NCCL): its all-to-all
 * then runs on the communication stream, ordered after what the compute
 * stream had when the thread issued it (comm-nccl.c's begin), while this
 * thread queues the shared experts on the compute stream; a host-staged
 * exchange would need the backend's stream from two threads. */
static mr_status overlap_combine(mr_model *m, const mr_layer_w *w, int *yes) {
    mr_comm *ep = m->opt.shard.ep_comm;
    *yes = m->opt.shard.ep_overlap && ep->thread_serialized && w->shared.inter && !m->det &&
           (!m->dev || ep->device_memory);
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
static mr_status moe_ep(mr_model *m, int l, int T, int with_shared) {
    const mr_model_config *c = &m->cfg;
    const mr_layer_w *w = &m->layers[l];
    const mr_backend_ops *ops = m->be->ops;
    const mr_local *lo = &m->loc;
    mr_workspace *ws = &m->ws;
    mr_comm *ep = m->opt.shard.ep_comm;
    mr_comm *meta = m->opt.shard.ep_comm_host ? m->opt.shard.ep_comm_host : ep; /* host-memory group */
    int H = c->hidden, E = c->n_experts, K = c->top_k, G = lo->ep, ne = lo->ne;
    int t0 = (int)((long)T * lo->tp_rank / lo->tp), t1 = (int)((long)T * (lo->tp_rank + 1) / lo->tp), n = t1 - t0;
    if (n > 0) {
        mm32(m, ws->router_logits, ws->h + (size_t)t0 * H, w->router, n, E, H);
        mr_route_params rp = route_params(m, w);
        ops->route(m->be, ws->route_idx, ws->route_w, ws->router_logits, n, &rp);
        fetch_routes(m, n * K);
        if (m->det) sort_routes(ws->h_route_idx, ws->h_route_w, n, K);
    }
    /* rows per destination, then the send buffer in destination order */
    mr_moe_ep_stats *st = &m->ep_stats;
    if (m->opt.ep_timing_sync) MR_CHECK(ep->ops->barrier(ep));
    double t_start = now_s(), ta;
    int *sc = ws->ep_scount, *sd = ws->ep_sdisp, *rc = ws->ep_rcount, *rd = ws->ep_rdisp;
    memset(sc, 0, (size_t)G * sizeof(int));
    for (int i = 0; i < n * K; i++) sc[ws->h_route_idx[i] / ne]++;
    sd[0] = 0;
    for (int d = 1; d < G; d++) sd[d] = sd[d - 1] + sc[d - 1];
    int *fill = rc; /* reuse as a cursor before the counts exchange */
    memcpy(fill, sd, (size_t)G * sizeof(int));
    for (int i = 0; i < n * K; i++) {
        int e = ws->h_route_idx[i], d = e / ne, at = fill[d]++;
        ws->ep_send_eid[at] = e - d * ne;
        ws->ep_send_src[at] = i;
        ws->h_perm_tok[at] = t0 + i / K;
        ws->h_perm_w[at] = ws->h_route_w[i];
    }
    int nsend = n * K;
    put_perm(m, nsend);
    if (nsend) ops->gather_rows(m->be, ws->ep_send, ws->h, ws->perm_tok, nsend, H);
    /* exchange counts: one int to every peer */
    int ones[256], disp[256];
    if (G > 256) return mr_error(MR_ERR_UNSUPPORTED, "expert groups of more than 256 ranks");
    for (int d = 0; d < G; d++) ones[d] = 1, disp[d] = d;
    ta = now_s();
    MR_CHECK(meta->ops->alltoallv(meta, sc, ones, disp, rc, ones, disp, sizeof(int)));
    rd[0] = 0;
    for (int d = 1; d < G; d++) rd[d] = rd[d - 1] + rc[d - 1];
    int nrecv = rd[G - 1] + rc[G - 1];
    MR_CHECK(meta->ops->alltoallv(meta, ws->ep_send_eid, sc, sd, ws->ep_recv_eid, rc, rd, sizeof(int32_t)));
    MR_CHECK(ep_rows(m, ep, ws->ep_send, ws->h_ep_send, sc, sd, nsend, ws->ep_recv, ws->h_ep_recv, rc, rd, nrecv));
    st->a2a_s += now_s() - ta;
    /* group received rows by local expert */
    memset(ws->e_count, 0, (size_t)(ne + 1) * sizeof(int32_t));
    for (int j = 0; j < nrecv; j++) ws->e_count[ws->ep_recv_eid[j]]++;
    ws->e_offset[0] = 0;
    for (int e = 0; e < ne; e++) ws->e_offset[e + 1] = ws->e_offset[e] + ws->e_count[e];
    memset(ws->e_count, 0, (size_t)(ne + 1) * sizeof(int32_t));
    for (int j = 0; j < nrecv; j++) {
        int e = ws->ep_recv_eid[j];
        ws->h_ep_order[ws->e_offset[e] + ws->e_count[e]++] = j;
    }
    put(m, ws->ep_order, ws->h_ep_order, (size_t)nrecv * sizeof(int32_t));
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
            MR_CHECK(mlp(m, &w->experts[e], ws->ye + (size_t)(off + k) * H, ws->xe + (size_t)(off + k) * H, rows, 1));
        }
    }
    /* back to received order: ep_recv[order[k]] = ye[k] */
    m->be->ops->sync(m->be);
    if (m->opt.ep_timing_sync) MR_CHECK(ep->ops->barrier(ep));
    double t_comb = now_s();
    if (nrecv) {
        ops->zero(m->be, ws->ep_recv, (size_t)nrecv * H);
        ops->scatter_add_rows(m->be, ws->ep_recv, ws->ye, ws->ep_order, NULL, nrecv, H);
    }
    ta = now_s();
    if (T > 0) ops->zero(m->be, ws->a, (size_t)T * H);
    int overlap;
    MR_CHECK(overlap_combine(m, w, &overlap));
    if (overlap) {
        /* the shared experts compute while the combine is in flight (they
         * touch neither ep_recv nor ep_send); the sums keep the order of
         * the path below, so both give the same bits */
        ep_combine_job job = {ep, ws->ep_recv, rc, rd, ws->ep_send, sc, sd, (size_t)H * sizeof(float)};
        MR_CHECK(mr_progress_start(m->ep_prog, &job));
        if (T > 0) MR_CHECK(moe_shared_compute(m, w, T));
        m->be->ops->sync(m->be);
        MR_CHECK(mr_progress_wait(m->ep_prog));
        st->a2a_s += now_s() - ta;
        if (nsend) ops->scatter_add_rows(m->be, ws->a, ws->ep_send, ws->perm_tok, ws->perm_w, nsend, H);
        if (T > 0) moe_shared_add(m, w, T);
    } else {
        MR_CHECK(ep_rows(m, ep, ws->ep_recv, ws->h_ep_recv, rc, rd, nrecv, ws->ep_send, ws->h_ep_send, sc, sd, nsend));
        st->a2a_s += now_s() - ta;
        if (nsend) ops->scatter_add_rows(m->be, ws->a, ws->ep_send, ws->perm_tok, ws->perm_w, nsend, H);
        if (T > 0 && with_shared) MR_CHECK(moe_shared(m, w, T));
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
        m->ws.h_embed_ids[t] = (id >= 0 && id < lo->nv) ? id : lo->nv;
    }
    put(m, m->ws.embed_ids, m->ws.h_embed_ids, (size_t)b->ntok * sizeof(int32_t));
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
        ops->gather_rows(m->be, ws->final_h, ws->x, m->cur_out_rows + r0, n, H);
        ops->rmsnorm(m->be, ws->final_h, ws->final_h, m->norm, n, H, c->norm_eps);
        size_t bytes = (size_t)n * nv * sizeof(float);
        if (lo->tp == 1) {
            /* host: straight into the caller's rows; device: through logits_local */
            float *dst = m->dev ? ws->logits_local : logits + (size_t)r0 * V;
            mm(m, dst, ws->final_h, m->lm_head, NULL, n, V, H);
            if (m->dev) fetch(m, logits + (size_t)r0 * V, dst, bytes);
            continue;
        }
        mm(m, ws->logits_local, ws->final_h, m->lm_head, NULL, n, nv, H);
        mr_comm *tc = m->opt.shard.tp_comm;
        if (m->dev && tc->device_memory) {
            MR_CHECK(tc->ops->allgather(tc, ws->logits_local, ws->logits_all, bytes));
            fetch(m, ws->h_logits_all, ws->logits_all, (size_t)lo->tp * bytes);
        } else {
            fetch(m, ws->h_logits_local, ws->logits_local, bytes);
            MR_CHECK(tc->ops->allgather(tc, ws->h_logits_local, ws->h_logits_all, bytes));
        }
        for (int r = 0; r < lo->tp; r++)
            for (int i = 0; i < n; i++)
                memcpy(logits + (size_t)(r0 + i) * V + (size_t)r * nv, ws->h_logits_all + ((size_t)r * n + i) * nv,
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
    /* the step's int arrays in backend memory */
    if (m->dev) {
        put(m, ws->slot, b->slot, (size_t)T * sizeof(int32_t));
        put(m, ws->pos, b->pos, (size_t)T * sizeof(int32_t));
        put(m, ws->out_rows, b->out_rows, (size_t)b->n_out * sizeof(int32_t));
        m->cur_slot = ws->slot, m->cur_pos = ws->pos, m->cur_out_rows = ws->out_rows;
    } else {
        m->cur_slot = b->slot, m->cur_pos = b->pos, m->cur_out_rows = b->out_rows;
    }
    if (T == 0) { /* nothing to compute, but the expert exchanges need us */
        if (lo->ep > 1)
            for (int l = lo->lb; l < lo->le; l++)
                if (m->layers[l].moe) MR_CHECK(moe_ep(m, l, 0, !(m->det && lo->tp > 1)));
        return MR_OK;
    }
    if (lo->first) MR_CHECK(embed(m, b));
    /* Each block's output (a) joins the residual stream (x) in the norm that
     * follows it (add_rmsnorm); the last one's after the loop. */
    for (int l = lo->lb; l < lo->le; l++) {
        const mr_layer_w *w = &m->layers[l];
        if (l == lo->lb) ops->rmsnorm(m->be, ws->h, ws->x, w->attn_norm, T, H, c->norm_eps);
        else ops->add_rmsnorm(m->be, ws->x, ws->h, ws->a, w->attn_norm, T, H, c->norm_eps);
        /* attention and dense MLP end in rowpar_out (GEMM + all-reduce) */
        MR_CHECK(mr_config_is_mla(c) ? attention_mla(m, l, b) : attention_std(m, l, b));
        ops->add_rmsnorm(m->be, ws->x, ws->h, ws->a, w->ffn_norm, T, H, c->norm_eps);
        if (!w->moe) {
            MR_CHECK(mlp_rowpar(m, &w->mlp, ws->a, ws->h, T));
        } else {
            if (m->det && lo->tp > 1 && lo->ep > 1) {
                /* routed rows: one tensor rank's each (exact sum), then the shared experts, complete */
                MR_CHECK(moe_ep(m, l, T, 0));
                MR_CHECK(tp_allreduce_mode(m, ws->a, (size_t)T * H, 1));
                MR_CHECK(moe_shared(m, w, T));
            } else {
                MR_CHECK(lo->ep > 1 ? moe_ep(m, l, T, 1) : moe_local(m, l, T));
                if (!m->det) MR_CHECK(tp_allreduce(m, ws->a, (size_t)T * H)); /* deterministic: complete already */
            }
        }
    }
    ops->add(m->be, ws->x, ws->a, (size_t)T * H); /* (every shard has a layer: model-load.c) */
    if (lo->last) MR_CHECK(lm_head(m, b, logits));
    ops->sync(m->be);
    return MR_OK;
}
