/* A decoder-only transformer on one backend: weights, KV cache, workspaces
 * and the batched forward pass for every supported architecture.
 *
 * A forward pass takes a flat batch of tokens from many sequences (each
 * token names its KV-cache slot and position), so prefill chunks and decode
 * tokens of different requests share every GEMM.  Everything is sized at
 * load time from the options: the decode loop allocates nothing. */
#ifndef MR_MODEL_H
#define MR_MODEL_H

#include <stdint.h>

#include "kernels/backend.h"
#include "runtime/comm.h"
#include "runtime/config.h"
#include "runtime/status.h"

typedef struct mr_model mr_model;

/* This rank's part of the model (all zero: the whole model on one rank).
 * Tensor parallelism splits heads, intermediate sizes and the vocabulary
 * over tp ranks (Megatron style: column-parallel in, row-parallel out, one
 * all-reduce per block).  With ep > 1 the routed experts are not sliced
 * but dealt out, n_experts / ep per rank, and each token is dispatched by
 * exactly one rank of its tensor group. */
typedef struct mr_model_shard {
    int tp, tp_rank;
    int layer_begin, layer_end; /* this pipeline stage's layers [begin, end) */
    int ep, ep_rank;
    mr_comm *tp_comm;           /* tp > 1 */
    mr_comm *ep_comm;           /* ep > 1 */
    /* ep > 1 with a device communicator as ep_comm (NCCL): the same group
     * on host memory (MPI) for the routing metadata (counts, expert ids);
     * NULL: ep_comm.  A communicator whose device_memory is 0 is given host
     * buffers: on a GPU backend the model stages its rows through the host. */
    mr_comm *ep_comm_host;
    /* The tensor group's all-reduce engine (tp > 1; NULL: the communicator's
     * own exact all-reduce).  With its overlap on, the row-parallel GEMMs
     * (attention output, dense MLP down) run in token chunks, each chunk's
     * reduction on the engine's progress thread while the next computes. */
    struct mr_allreduce *tp_ar;
    /* On a device backend whose tensor group is a device communicator
     * (NCCL): the engine on device buffers (runtime/allreduce-cuda.h), used
     * instead of tp_ar -- no staging through the host, overlap by a second
     * stream and the progress thread.  NULL: tp_ar on host copies. */
    struct mr_allreduce *tp_ar_dev;
    /* ep > 1: the combine all-to-all runs on a progress thread while the
     * shared experts compute (models with shared experts; needs an
     * expert communicator that allows a second thread).  Every rank of
     * the expert group must set it alike. */
    int ep_overlap;
} mr_model_shard;

/* Storage of the weight matrices (every linear projection and the LM head;
 * embeddings, norms, biases and MoE routers stay fp32).  bf16 matrices are
 * multiplied with the activations rounded to bf16, sums in fp32
 * (backend.h: matmul_bf16). */
typedef enum mr_weight_type { MR_WEIGHTS_FP32 = 0, MR_WEIGHTS_BF16, MR_WEIGHT_TYPE_COUNT } mr_weight_type;

typedef struct mr_model_options {
    int max_slots;      /* sequences held in the KV cache at once */
    int max_ctx;        /* positions per sequence (0: max_position_embeddings, capped at 4096) */
    int max_step_tokens;/* tokens in one forward pass */
    int synthetic;      /* random weights from config.json alone */
    uint64_t seed;      /* seed of the synthetic weights */
    mr_weight_type weights; /* matrices fp32 (default) or bf16 */
    int deterministic;  /* comm.deterministic: every product in a fixed order, the same bits for
                         * every plan and batch (model.c, "Deterministic mode") */
    int ep_timing_sync; /* benchmarks: an untimed barrier over the expert group before
                         * the timed dispatch and combine, so that their times hold no
                         * wait for a slower rank (see mr_model_moe_ep_stats) */
    mr_model_shard shard;
} mr_model_options;

typedef struct mr_batch {
    int ntok;
    const int32_t *tokens, *slot, *pos; /* (ntok) each */
    int n_out;                          /* rows whose logits are wanted */
    const int32_t *out_rows;            /* (n_out) indices into the batch */
} mr_batch;

/* Load `path` (a Hugging Face folder or a .gguf file).  With opt->synthetic only config.json
 * is read. */
mr_status mr_model_load(mr_model **out, const char *path, const mr_model_options *opt, mr_backend *be);
void mr_model_free(mr_model *m);
/* Whether `path` names a GGUF file (else a Hugging Face folder). */
int mr_model_path_is_gguf(const char *path);

const mr_model_config *mr_model_get_config(const mr_model *m);
const mr_model_options *mr_model_get_options(const mr_model *m);
/* Bytes of weights held and bytes read from the checkpoint. */
uint64_t mr_model_weight_bytes(const mr_model *m);
uint64_t mr_model_bytes_read(const mr_model *m);
/* Weight bytes the last forward streamed: everything but the routed
 * experts no token chose. */
uint64_t mr_model_step_weight_bytes(const mr_model *m);

/* Run the batch through this rank's layers.  The first stage embeds
 * b->tokens; a later stage reads its input rows from
 * mr_model_activations() (filled by the caller).  The last stage writes
 * logits (n_out, vocab) in host memory; an earlier stage leaves its output
 * rows in mr_model_activations().  A batch of 0 tokens still joins the
 * expert exchanges (ep > 1). */
mr_status mr_model_forward(mr_model *m, const mr_batch *b, float *logits);
/* (max_step_tokens, hidden) host buffer of the activations between stages.
 * On a device backend it is a host mirror: after a forward call
 * mr_model_activations_move(m, T, 0) before reading it, and after filling
 * it mr_model_activations_move(m, T, 1) before the forward (no-ops on the
 * CPU, where the buffer is the model's own). */
float *mr_model_activations(mr_model *m);
void mr_model_activations_move(mr_model *m, int ntok, int to_device);
int mr_model_is_first_stage(const mr_model *m);
int mr_model_is_last_stage(const mr_model *m);
/* Routed tokens each local expert computed so far (n_local_experts values),
 * and the index of the first local expert. */
const uint64_t *mr_model_expert_tokens(const mr_model *m, int *n_local, int *first);

/* Expert-parallel exchange statistics since load (ep > 1; zeros otherwise).
 * dispatch_s: from the routed rows' layout to the received rows grouped by
 * local expert (counts, expert ids and payload all-to-alls included);
 * combine_s: from the expert outputs back in received order to the weighted
 * sum in the own tokens' rows; a2a_s: the all-to-all calls alone.  rows_sent
 * and rows_recv count payload rows of the dispatch (the combine moves the
 * same rows back).  last_scount / last_rcount: rows per peer of the latest
 * exchange (group size values), for replaying it in benchmarks. */
typedef struct mr_moe_ep_stats {
    uint64_t calls;
    double dispatch_s, combine_s, a2a_s;
    uint64_t rows_sent, rows_recv;
    int group;
    const int *last_scount, *last_rcount;
} mr_moe_ep_stats;
void mr_model_moe_ep_stats(const mr_model *m, mr_moe_ep_stats *s);

#endif
