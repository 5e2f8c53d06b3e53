/* Model configuration: config.json (and generation_config.json) of a Hugging
 * Face checkpoint, parsed into one struct that every architecture shares.
 *
 * Architectures are chosen by `model_type`; an unknown type or an option we
 * do not implement is an error naming the key, never a guess. */
#ifndef MR_CONFIG_H
#define MR_CONFIG_H

#include "runtime/status.h"

typedef enum mr_arch {
    MR_ARCH_LLAMA = 0,
    MR_ARCH_QWEN2,
    MR_ARCH_MIXTRAL,
    MR_ARCH_QWEN2_MOE,
    MR_ARCH_QWEN3_MOE,
    MR_ARCH_DEEPSEEK_V3,
    MR_ARCH_COUNT
} mr_arch;

typedef enum mr_rope_kind {
    MR_ROPE_DEFAULT = 0,
    MR_ROPE_LLAMA3,
    MR_ROPE_YARN,
    MR_ROPE_LINEAR,
    MR_ROPE_KIND_COUNT
} mr_rope_kind;

#define MR_MAX_EOS 8

typedef struct mr_model_config {
    mr_arch arch;
    char model_type[32];
    int vocab, hidden, n_layers, n_heads, n_kv_heads, head_dim, intermediate;
    int max_pos;
    float norm_eps;
    int tie_embeddings;
    int attn_bias;  /* q/k/v projections carry biases (qwen2, llama attention_bias) */
    int o_bias;     /* o_proj carries a bias (llama attention_bias) */
    int mlp_bias;   /* llama mlp_bias */
    int qk_norm;    /* per-head RMSNorm of q and k before RoPE (qwen3) */

    /* rotary embedding */
    mr_rope_kind rope;
    float rope_theta, rope_factor;
    float low_freq_factor, high_freq_factor; /* llama3 */
    int rope_orig_max_pos;                    /* llama3, yarn */
    float beta_fast, beta_slow, mscale, mscale_all_dim, attention_factor; /* yarn */
    int yarn_truncate;
    int rope_interleave; /* pairs (2i, 2i+1) instead of (i, i + d/2) */

    /* mixture of experts (n_experts == 0: dense) */
    int n_experts, top_k, moe_intermediate;
    int shared_intermediate; /* qwen2_moe shared expert (gated) */
    int n_shared_experts;    /* deepseek shared experts (ungated) */
    int norm_topk_prob;
    float routed_scaling;
    int n_group, topk_group;
    int first_dense;         /* deepseek first_k_dense_replace */
    int moe_layer_freq;      /* deepseek moe_layer_freq */
    int decoder_sparse_step; /* qwen moe */
    unsigned char *mlp_only; /* qwen moe mlp_only_layers, per layer flag (may be NULL) */

    /* multi-head latent attention (deepseek_v3) */
    int q_lora_rank; /* 0: plain q_proj */
    int kv_lora_rank, qk_rope_dim, qk_nope_dim, v_head_dim;

    /* generation */
    int bos_id;
    int eos_ids[MR_MAX_EOS];
    int n_eos;
} mr_model_config;

/* Read `dir`/config.json and, when present, `dir`/generation_config.json. */
mr_status mr_config_load(mr_model_config *cfg, const char *dir);
/* Parse a config from a JSON string (for tests); `origin` names it in errors. */
mr_status mr_config_parse(mr_model_config *cfg, const char *json, const char *origin);
void mr_config_free(mr_model_config *cfg);

const char *mr_arch_name(mr_arch a);
int mr_config_is_moe_layer(const mr_model_config *cfg, int layer);
int mr_config_is_mla(const mr_model_config *cfg);
/* Query/key head width and value head width. */
int mr_config_qk_dim(const mr_model_config *cfg);
int mr_config_v_dim(const mr_model_config *cfg);
/* Rotary frequencies (rot_dim/2 values) and the cos/sin scale. */
int mr_config_rope_dim(const mr_model_config *cfg);
void mr_config_rope_freqs(const mr_model_config *cfg, float *inv_freq, float *mscale);
/* Softmax scale of attention (includes the yarn mscale^2 of deepseek). */
float mr_config_attn_scale(const mr_model_config *cfg);
int mr_config_is_eos(const mr_model_config *cfg, int token);
/* Parameter count of the whole model (for reports). */
double mr_config_param_count(const mr_model_config *cfg);

#endif
