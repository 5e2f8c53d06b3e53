/* The plan: how one job is laid out over its ranks, read from a YAML file
 * and overridden from the command line, then checked against the world
 * size and the model's config.json before any weight is read.
 *
 * world = data × pipeline × tensor.  Ranks are numbered tensor-fastest:
 *     rank = (pipe_i × data + data_i) × tensor + tensor_i
 * so a tensor group is a run of neighbouring ranks and pipeline stages are
 * the outermost slices.  Inside a stage, its data × tensor ranks form the
 * expert plane, cut into groups of `expert` neighbouring ranks; each group
 * holds every routed expert once, num_experts / expert per rank.
 *
 * Everything below the reader is a pure function of the plan (and the
 * model config): no communication, so every rank computes the same layout
 * and tests need no MPI. */
#ifndef MR_PLAN_H
#define MR_PLAN_H

#include <stdint.h>
#include <stdio.h>

#include "runtime/config.h"
#include "runtime/status.h"

#define MR_PLAN_PATH_MAX 4096
#define MR_PLAN_MAX_STAGES 256 /* entries of parallel.layers_per_stage */

typedef enum mr_comm_backend {
    MR_COMM_AUTO = 0, /* NCCL for device memory when built with CUDA, else MPI */
    MR_COMM_MPI,
    MR_COMM_NCCL,
    MR_COMM_BACKEND_COUNT
} mr_comm_backend;

typedef enum mr_allreduce_algo {
    MR_AR_AUTO = 0, /* chosen by group size and message size */
    MR_AR_RING,
    MR_AR_TWO_SHOT,
    MR_AR_HIERARCHICAL,
    MR_AR_MPI, /* MPI_Allreduce itself (the baseline) */
    MR_AR_ALGO_COUNT
} mr_allreduce_algo;

typedef enum mr_compression {
    MR_COMPRESS_NONE = 0,
    MR_COMPRESS_BF16,
    MR_COMPRESS_FP16,
    MR_COMPRESS_INT8,
    MR_COMPRESS_INT4,
    MR_COMPRESSION_COUNT
} mr_compression;

/* Where ranks go on a node (topology/). */
typedef enum mr_topo_bind_policy {
    MR_TOPO_BIND_AUTO = 0, /* bind, unless bound from outside to less than the whole node */
    MR_TOPO_BIND_NONE,     /* leave the binding as it is */
    MR_TOPO_BIND_FORCE,    /* bind even over an outside binding */
    MR_TOPO_BIND_POLICY_COUNT
} mr_topo_bind_policy;

typedef enum mr_topo_gpu_policy {
    MR_TOPO_GPU_LOCAL_RANK = 0, /* local rank i takes GPU i (mod the count) */
    MR_TOPO_GPU_NUMA,           /* a GPU local to the outside binding's NUMA node, else local order */
    MR_TOPO_GPU_POLICY_COUNT
} mr_topo_gpu_policy;

/* What runs the model's operations (kernels/backend.h). */
typedef enum mr_device_kind {
    MR_DEVICE_AUTO = 0, /* cuda when built with CUDA and a device is visible, else cpu */
    MR_DEVICE_CPU,
    MR_DEVICE_CUDA,
    MR_DEVICE_KIND_COUNT
} mr_device_kind;

/* Storage of the weight matrices (runtime/model.h mr_weight_type). */
typedef enum mr_weights_kind {
    MR_WEIGHTS_KIND_AUTO = 0, /* bf16 on a GPU, fp32 on CPUs */
    MR_WEIGHTS_KIND_FP32,
    MR_WEIGHTS_KIND_BF16,
    MR_WEIGHTS_KIND_COUNT
} mr_weights_kind;

/* Every key a plan can hold, by its dotted name ("parallel.tensor"). */
typedef enum mr_plan_key {
    MR_PLAN_KEY_MODEL = 0,
    MR_PLAN_KEY_INPUT,
    MR_PLAN_KEY_OUTPUT,
    MR_PLAN_KEY_DATA,
    MR_PLAN_KEY_TENSOR,
    MR_PLAN_KEY_PIPELINE,
    MR_PLAN_KEY_EXPERT,
    MR_PLAN_KEY_MICRO_BATCHES,
    MR_PLAN_KEY_LAYERS_PER_STAGE,
    MR_PLAN_KEY_COMM_BACKEND,
    MR_PLAN_KEY_AR_ALGORITHM,
    MR_PLAN_KEY_AR_CHUNK_KIB,
    MR_PLAN_KEY_AR_COMPRESSION,
    MR_PLAN_KEY_AR_BLOCK,
    MR_PLAN_KEY_AR_OVERLAP,
    MR_PLAN_KEY_DETERMINISTIC,
    MR_PLAN_KEY_MAX_TOKENS,
    MR_PLAN_KEY_TEMPERATURE,
    MR_PLAN_KEY_TOP_P,
    MR_PLAN_KEY_TOP_K,
    MR_PLAN_KEY_SEED,
    MR_PLAN_KEY_MAX_BATCH,
    MR_PLAN_KEY_TOKEN_BUDGET,
    MR_PLAN_KEY_MAX_CONTEXT,
    MR_PLAN_KEY_TOPO_STRICT,
    MR_PLAN_KEY_TOPO_BIND,
    MR_PLAN_KEY_TOPO_GPU,
    MR_PLAN_KEY_TOPO_EXPORT_NIC,
    MR_PLAN_KEY_DEVICE,
    MR_PLAN_KEY_WEIGHTS,
    MR_PLAN_KEY_THREADS,
    MR_PLAN_KEY_FSYNC_INTERVAL,
    MR_PLAN_KEY_PROGRESS_INTERVAL,
    MR_PLAN_KEY_STOP_GRACE,
    MR_PLAN_KEY_COUNT
} mr_plan_key;

typedef enum mr_plan_source {
    MR_PLAN_FROM_DEFAULT = 0,
    MR_PLAN_FROM_FILE,
    MR_PLAN_FROM_OPTION,
    MR_PLAN_FROM_ENV, /* an environment variable (mr_plan_env) */
} mr_plan_source;

/* Where a key got its value: for the file, libyaml's mark of the value
 * (1-based line and column). */
typedef struct mr_plan_mark {
    mr_plan_source source;
    int line, column;
} mr_plan_mark;

typedef struct mr_plan {
    char origin[MR_PLAN_PATH_MAX]; /* the plan file as named by the user ("" if none) */
    char model[MR_PLAN_PATH_MAX];  /* HF folder or .gguf ("" if unset) */
    char input[MR_PLAN_PATH_MAX];
    char output[MR_PLAN_PATH_MAX];
    struct {
        int data, tensor, pipeline, expert;
        int micro_batches;                        /* 0: as many as pipeline stages */
        int n_layers_per_stage;                   /* 0: even split */
        int layers_per_stage[MR_PLAN_MAX_STAGES];
    } parallel;
    struct {
        mr_comm_backend backend;
        struct {
            mr_allreduce_algo algorithm;
            int chunk_kib;
            mr_compression compression;
            int block; /* values per quantization block: 32..256, power of two */
            int overlap;
        } allreduce;
        int deterministic;
    } comm;
    struct {
        int max_tokens;
        float temperature, top_p;
        int top_k;
        uint64_t seed;
        int max_batch, token_budget;
        int max_context; /* 0: the model's, capped by the runtime */
    } generation;
    struct {
        int strict; /* a tensor group spanning nodes is an error, not a warning */
        mr_topo_bind_policy bind;
        mr_topo_gpu_policy gpu;
        int export_nic; /* set UCX_NET_DEVICES / NCCL_IB_HCA to each rank's nearest NIC */
    } topology;
    struct {
        mr_device_kind device;
        mr_weights_kind weights;
        int threads; /* 0: the cores this process is bound to */
        float fsync_interval;    /* seconds between fsyncs of the output (0: every line) */
        float progress_interval; /* seconds between progress lines in a log (0: none) */
        float stop_grace;        /* seconds a stopped job lets running requests finish */
    } runtime;
    mr_plan_mark marks[MR_PLAN_KEY_COUNT];
} mr_plan;

/* ---- reading ---------------------------------------------------------- */

/* Defaults for every key (a one-rank plan). */
void mr_plan_init(mr_plan *p);
/* mr_plan_init, then read `path`.  Unknown keys, wrong types, values out of
 * range and YAML syntax errors are MR_ERR_INPUT with "path:line:column:". */
mr_status mr_plan_load(mr_plan *p, const char *path);
/* The same from a string; `origin` names it in messages. */
mr_status mr_plan_parse(mr_plan *p, const char *text, size_t len, const char *origin);
/* Command-line override of one key by its dotted name, with the checks of
 * the file ("parallel.tensor", "2"); layers_per_stage takes "31,30". */
mr_status mr_plan_set(mr_plan *p, const char *key, const char *value);

/* Environment overrides, applied after the file and before the command
 * line (which wins): MR_DEVICE for runtime.device, MR_WEIGHTS for
 * runtime.weights.  A bad value is
 * MR_ERR_INPUT naming the variable and the choices. */
mr_status mr_plan_env(mr_plan *p);
/* The variable that overrides `k`, or NULL. */
const char *mr_plan_env_var(mr_plan_key k);

const char *mr_plan_key_name(mr_plan_key k);
/* Where `k` was set, for messages: "plan.yaml:4:11", "command line",
 * "environment MR_DEVICE", or "plan.yaml" / "plan" for a default. */
const char *mr_plan_where(const mr_plan *p, mr_plan_key k, char *buf, size_t n);

const char *mr_comm_backend_name(mr_comm_backend b);
const char *mr_allreduce_algo_name(mr_allreduce_algo a);
const char *mr_compression_name(mr_compression c);
const char *mr_topo_bind_name(mr_topo_bind_policy b);
const char *mr_topo_gpu_name(mr_topo_gpu_policy g);
const char *mr_device_kind_name(mr_device_kind d);
const char *mr_weights_kind_name(mr_weights_kind w);

/* ---- layout (pure functions of a plan that passed mr_plan_check) ------ */

typedef struct mr_rank_coords {
    int data_i, pipe_i, tensor_i;
    int expert_group; /* which expert group of the stage's expert plane */
    int expert_i;     /* index inside that group: holds routed experts
                         [expert_i × E/expert, (expert_i + 1) × E/expert) */
} mr_rank_coords;

typedef enum mr_group_kind {
    MR_GROUP_TENSOR = 0, /* same data_i and pipe_i: the all-reduce group */
    MR_GROUP_PIPELINE,   /* same data_i and tensor_i: one rank per stage */
    MR_GROUP_DATA,       /* same pipe_i and tensor_i: the replicas */
    MR_GROUP_EXPERT,     /* the all-to-all group of the MoE exchange */
    MR_GROUP_KIND_COUNT
} mr_group_kind;

int mr_plan_world(const mr_plan *p);
mr_rank_coords mr_plan_coords(const mr_plan *p, int rank);
int mr_plan_rank(const mr_plan *p, int data_i, int pipe_i, int tensor_i);
int mr_plan_group_size(const mr_plan *p, mr_group_kind g);
/* Members of `rank`'s group of kind g, ascending, into members[] (room for
 * mr_plan_group_size); returns the count. */
int mr_plan_group(const mr_plan *p, mr_group_kind g, int rank, int *members);
/* Micro-batches in flight (micro_batches, or the pipeline size when 0). */
int mr_plan_micro_batches(const mr_plan *p);
/* Layers [*first, *first + *count) of stage `stage` of an n_layers model:
 * layers_per_stage, or an even split with the remainder on the first stages. */
void mr_plan_stage_layers(const mr_plan *p, int n_layers, int stage, int *first, int *count);
/* Routed experts [*first, *first + *count) held by `rank` (0, 0 if dense). */
void mr_plan_rank_experts(const mr_plan *p, const mr_model_config *cfg, int rank, int *first, int *count);

/* ---- checks ----------------------------------------------------------- */

/* Check the plan against itself, the world size (0: the plan's own
 * product) and, when cfg is not NULL, the model: heads, KV heads,
 * intermediate sizes, vocabulary, layers, experts.  A refusal is
 * MR_ERR_INPUT naming the field, the numbers that clash and the nearest
 * plans that fit. */
mr_status mr_plan_check(const mr_plan *p, const mr_model_config *cfg, int world);
/* Tensor sizes the model allows with the plan's expert size, ascending,
 * into sizes[] (at most max); returns how many there are. */
int mr_plan_valid_tensor_sizes(const mr_plan *p, const mr_model_config *cfg, int *sizes, int max);
/* Read only the config of `model` (an HF folder, its config.json, or a
 * .gguf file) for mr_plan_check. */
mr_status mr_plan_load_model_config(mr_model_config *cfg, const char *model);

/* ---- weights per rank ------------------------------------------------- */

/* Whether the weight matrices are bf16: runtime.weights = bf16, or auto
 * with runtime.device = cuda (with device auto the launcher decides on the
 * ranks; here it counts as cpu). */
int mr_plan_bf16_weights(const mr_plan *p);

/* Bytes of parameters one rank holds, by kind: the weight matrices
 * (attention, mlp, routed, shared, lm_head) at 4 bytes, or 2 when
 * mr_plan_bf16_weights; the rest float32. */
typedef struct mr_plan_bytes {
    uint64_t embed;     /* first stage: its vocabulary slice */
    uint64_t attention; /* projections: head slices; MLA down-projections whole */
    uint64_t mlp;       /* dense feed-forward: intermediate slice */
    uint64_t routed;    /* expert > 1: num_experts / expert whole experts per MoE
                           layer; expert = 1: every expert, intermediate slice */
    uint64_t shared;    /* shared experts: intermediate slice, on every rank */
    uint64_t router;    /* router (and its bias), qwen2_moe's shared-expert gate: whole */
    uint64_t norms;     /* norms (the final one on the last stage) and biases (q/k/v, gate/up;
                           o/down on tensor rank 0) */
    uint64_t lm_head;   /* last stage: vocabulary slice (tied: a copy unless one stage) */
    uint64_t total;
} mr_plan_bytes;

void mr_plan_rank_bytes(const mr_plan *p, const mr_model_config *cfg, int rank, mr_plan_bytes *out);

/* ---- printing --------------------------------------------------------- */

/* The resolved plan as YAML (itself a valid plan).  n_layers > 0 spells
 * out layers_per_stage. */
void mr_plan_print(const mr_plan *p, int n_layers, FILE *f);
/* One line per rank: coordinates, layers, experts and weight bytes (cfg may
 * be NULL: no layers or bytes). */
void mr_plan_print_ranks(const mr_plan *p, const mr_model_config *cfg, FILE *f);
/* "12.5 MiB" into buf. */
const char *mr_plan_format_bytes(uint64_t bytes, char *buf, size_t n);

#endif
