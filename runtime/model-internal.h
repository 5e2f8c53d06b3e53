/* Internals of runtime/model-*.c: weight layout and workspaces. */
#ifndef MR_MODEL_INTERNAL_H
#define MR_MODEL_INTERNAL_H

#include "runtime/model.h"
#include "runtime/safetensors.h"

/* Weight matrices (void *) are float32, or bf16 (uint16_t) when the model
 * was loaded with weights = bf16 (m->wbf16); everything else is float32. */
typedef struct mr_mlp_w {
    void *gu;     /* (2I, H): gate rows then up rows */
    float *gu_b;  /* (2I) or NULL */
    void *down;   /* (H, I) */
    float *down_b;/* (H) or NULL */
    int inter;
} mr_mlp_w;

typedef struct mr_layer_w {
    float *attn_norm, *ffn_norm; /* (H) */
    /* standard attention: fused q,k,v rows */
    void *wqkv;                  /* ((nh + 2 nkv) hd, H) */
    float *bqkv;                 /* bias or NULL */
    float *q_norm, *k_norm;      /* (hd) qwen3 */
    /* multi-head latent attention */
    void *wq_a, *wq_b;           /* (qr, H), (nh qk, qr) */
    float *q_a_norm;             /* (qr) */
    void *wq;                    /* (nh qk, H) when q_lora_rank == 0 */
    void *wkv_a, *wkv_b;         /* (kvr + rope, H), (nh (nope + v), kvr) */
    float *kv_a_norm;            /* (kvr) */
    void *wo;                    /* (H, nh v) */
    float *bo;                   /* (H) or NULL */
    /* feed-forward */
    int moe;
    mr_mlp_w mlp;                /* dense layers */
    float *router;               /* (E, H), always float32 */
    float *router_bias;          /* (E) deepseek e_score_correction_bias */
    mr_mlp_w *experts;           /* (E) */
    mr_mlp_w shared;             /* inter == 0: none */
    float *shared_gate;          /* (1, H) qwen2_moe, float32 */
} mr_layer_w;

typedef struct mr_workspace {
    /* Backend memory (device memory on a GPU) unless marked host.  A host
     * mirror h_* of a backend buffer is that buffer itself on a host-memory
     * backend (ops->host_memory), else a separate host copy moved with
     * upload/download (see the top of model.c). */
    float *x, *h, *a;     /* (T, H) */
    float *qkv;           /* (T, max(qkv width, MLA widths)) */
    float *q;             /* (T, nh qk) */
    float *o;             /* (T, nh v) */
    float *lat;           /* (T, max(qr, kvr + rope)) MLA latents */
    float *lat2;          /* (T, kvr) */
    float *gu;            /* (T, 2 max inter) */
    float *act;           /* (T, max inter) */
    float *xe, *ye;       /* (T, H) per-expert gathered rows */
    float *router_logits; /* (T, E) */
    int32_t *route_idx, *h_route_idx; /* (T, k) */
    float *route_w, *h_route_w;       /* (T, k) */
    int32_t *e_count, *e_offset;      /* host (E + 1) */
    int32_t *perm_tok, *h_perm_tok;   /* (T k ep) token of each routed row, grouped by expert */
    float *perm_w, *h_perm_w;         /* (T k ep) */
    float *shared_g;      /* (T) */
    float *final_h;       /* (T, H) rows picked for logits */
    int32_t *slot, *pos, *out_rows;   /* (T) the step's arrays (device copies; unused on a host backend) */
    int32_t *embed_ids, *h_embed_ids; /* (T) local embedding rows (nv = zero row) */
    float *logits_local, *h_logits_local; /* (LOGIT_CHUNK, nv) */
    float *logits_all, *h_logits_all;     /* (tp, LOGIT_CHUNK, nv) */
    float *h_x;           /* host (T, H): pipeline activations (mirror of x) */
    float *h_stage;       /* host (T, H) staging of the tensor all-reduce (mirror of nothing: NULL on a host backend) */
    /* expert parallel exchange */
    int *ep_scount, *ep_sdisp, *ep_rcount, *ep_rdisp; /* host (ep) each */
    int32_t *ep_send_eid, *ep_recv_eid;               /* host (T k), (ep T k) */
    int32_t *ep_send_src;                             /* host (T k) routed row of each sent row */
    float *ep_send, *ep_recv;                         /* (T k, H), (ep T k, H) */
    float *h_ep_send, *h_ep_recv;                     /* their host mirrors */
    int32_t *ep_order, *h_ep_order;                   /* (ep T k) */
    uint64_t *expert_tokens;                          /* host (ne) */
    /* deterministic mode with tp > 1: block sums of a row-parallel product */
    float *det_local, *det_all;     /* (det_cap / tp), (det_cap) */
    float *h_det_local, *h_det_all; /* their host mirrors */
    size_t det_cap;                 /* floats */
} mr_workspace;

#define MR_LOGIT_CHUNK 64

/* Local sizes of this rank's shard. */
typedef struct mr_local {
    int tp, tp_rank, ep, ep_rank;
    int lb, le;          /* layers [lb, le) */
    int first, last;     /* first / last pipeline stage */
    int nh, nkv;         /* heads, kv heads on this rank */
    int inter, shared_inter;
    int expert_inter;    /* routed expert width on this rank (sliced when ep == 1) */
    int e0, ne;          /* local experts [e0, e0 + ne) */
    int v0, nv;          /* vocabulary rows [v0, v0 + nv) */
} mr_local;

struct mr_model {
    mr_model_config cfg;
    mr_model_options opt;
    mr_local loc;
    mr_backend *be;
    float *embed;   /* (V, H) */
    float *norm;    /* (H) */
    void *lm_head;  /* (V, H); == embed when tied and float32 (a bf16 copy of it otherwise) */
    int wbf16;      /* weight matrices are bf16 (opt.weights) */
    mr_layer_w *layers;
    float *rope_freq; /* (rope_dim / 2) */
    float rope_mscale, attn_scale;
    /* KV cache: per layer (slots, ctx, nkv, qk) and (slots, ctx, nkv, v) */
    float **k_cache, **v_cache;
    int kv_heads; /* heads stored in the cache (nh for MLA) */
    mr_workspace ws;
    uint64_t weight_bytes, bytes_read;
    uint64_t routed_expert_bytes; /* part of weight_bytes in routed experts */
    uint64_t step_expert_bytes;   /* routed-expert bytes the last forward touched */
    mr_moe_ep_stats ep_stats;     /* see mr_model_moe_ep_stats */
    struct mr_progress *ep_prog;  /* the combine's progress thread (shard.ep_overlap) */
    int dev;                      /* backend memory is not host memory: stage through the host */
    int det;                      /* deterministic mode (opt.deterministic) */
    unsigned det_tmask;           /* bit t: tensor size t (<= 8) fits the model (det_lcm) */
    const int32_t *cur_slot, *cur_pos, *cur_out_rows; /* the forward's arrays in backend memory */
    void **allocs; /* every device buffer, for mr_model_free */
    size_t n_allocs, cap_allocs;
    void **host_allocs; /* host mirrors of a device backend */
    size_t n_host_allocs, cap_host_allocs;
};

/* Where weights come from: a safetensors checkpoint or a GGUF file, both
 * read by Hugging Face tensor name with a slice, converted to float32. */
typedef struct mr_weight_source {
    void *h;
    mr_status (*read)(void *h, const char *name, int ndim, const int64_t *shape, mr_slice sl, float *dst);
    uint64_t (*bytes_read)(const void *h);
} mr_weight_source;

/* Deterministic mode (model-load.c).  A row-parallel product of full
 * width K is summed in blocks of mr_det_kc(m, K, 1) columns, which divides
 * K / t for every tensor size t <= 8 the model admits (bit t of
 * det_tmask), so every plan adds the same block sums in the same order;
 * any other product (full K on every rank) in blocks of mr_det_kc(m, K, 0). */
int mr_det_kc(const mr_model *m, int K, int rowpar);

/* Weight loading (model-load.c); src NULL: synthetic weights. */
mr_status mr_model_load_weights(mr_model *m, const mr_weight_source *src);

#endif
