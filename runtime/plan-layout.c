/* Plan layout and checks: rank coordinates and groups, layers per pipeline
 * stage, experts per rank, the checks against the world size and the
 * model's config.json (with the nearest plans that fit when a plan does
 * not), and the bytes of weights each rank will hold.  All pure functions
 * of the plan and the config: nothing here reads a weight or talks to
 * another rank. */
#define _GNU_SOURCE
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "runtime/gguf.h"
#include "runtime/plan.h"

#define MAX_WORLD (1 << 24)

/* ---- coordinates and groups ------------------------------------------- */

int mr_plan_world(const mr_plan *p) { return p->parallel.data * p->parallel.pipeline * p->parallel.tensor; }

mr_rank_coords mr_plan_coords(const mr_plan *p, int rank) {
    int D = p->parallel.data, T = p->parallel.tensor, E = p->parallel.expert;
    mr_rank_coords c;
    c.tensor_i = rank % T;
    c.data_i = (rank / T) % D;
    c.pipe_i = rank / T / D;
    int local = c.data_i * T + c.tensor_i; /* place in the stage's expert plane */
    c.expert_group = local / E;
    c.expert_i = local % E;
    return c;
}

int mr_plan_rank(const mr_plan *p, int data_i, int pipe_i, int tensor_i) {
    return (pipe_i * p->parallel.data + data_i) * p->parallel.tensor + tensor_i;
}

int mr_plan_group_size(const mr_plan *p, mr_group_kind g) {
    switch (g) {
    case MR_GROUP_TENSOR: return p->parallel.tensor;
    case MR_GROUP_PIPELINE: return p->parallel.pipeline;
    case MR_GROUP_DATA: return p->parallel.data;
    case MR_GROUP_EXPERT: return p->parallel.expert;
    default: return 0;
    }
}

int mr_plan_group(const mr_plan *p, mr_group_kind g, int rank, int *members) {
    mr_rank_coords c = mr_plan_coords(p, rank);
    int D = p->parallel.data, T = p->parallel.tensor, E = p->parallel.expert;
    int n = mr_plan_group_size(p, g);
    for (int j = 0; j < n; j++) {
        switch (g) {
        case MR_GROUP_TENSOR: members[j] = mr_plan_rank(p, c.data_i, c.pipe_i, j); break;
        case MR_GROUP_PIPELINE: members[j] = mr_plan_rank(p, c.data_i, j, c.tensor_i); break;
        case MR_GROUP_DATA: members[j] = mr_plan_rank(p, j, c.pipe_i, c.tensor_i); break;
        case MR_GROUP_EXPERT: members[j] = c.pipe_i * D * T + c.expert_group * E + j; break;
        default: return 0;
        }
    }
    return n;
}

int mr_plan_micro_batches(const mr_plan *p) {
    return p->parallel.micro_batches ? p->parallel.micro_batches : p->parallel.pipeline;
}

void mr_plan_stage_layers(const mr_plan *p, int n_layers, int stage, int *first, int *count) {
    int P = p->parallel.pipeline;
    *first = *count = 0;
    if (stage < 0 || stage >= P) return;
    if (p->parallel.n_layers_per_stage == P) {
        for (int s = 0; s < stage; s++) *first += p->parallel.layers_per_stage[s];
        *count = p->parallel.layers_per_stage[stage];
        return;
    }
    if (n_layers <= 0) return;
    int base = n_layers / P, extra = n_layers % P; /* the remainder goes to the first stages */
    *first = stage * base + (stage < extra ? stage : extra);
    *count = base + (stage < extra);
}

void mr_plan_rank_experts(const mr_plan *p, const mr_model_config *cfg, int rank, int *first, int *count) {
    *first = *count = 0;
    if (!cfg || cfg->n_experts == 0) return;
    mr_rank_coords c = mr_plan_coords(p, rank);
    *count = cfg->n_experts / p->parallel.expert;
    *first = c.expert_i * *count;
}

/* ---- what the model allows ------------------------------------------- */

static const char *experts_key(const mr_model_config *c) {
    switch (c->arch) {
    case MR_ARCH_MIXTRAL: return "num_local_experts";
    case MR_ARCH_DEEPSEEK_V3: return "n_routed_experts";
    default: return "num_experts";
    }
}

/* The model sizes the tensor size must divide, with their config.json names. */
typedef struct tensor_rule {
    const char *name;
    int value;
    int replicable; /* KV heads: a tensor size that is a multiple also fits (heads replicated) */
} tensor_rule;

/* Matches what the model loader slices: heads, KV heads (not for MLA:
 * every head reads the same latent), the dense and shared intermediate
 * sizes, the routed experts' when they are sliced rather than dealt out
 * (expert = 1), and the vocabulary. */
static int tensor_rules(const mr_model_config *c, int expert, tensor_rule *r) {
    int n = 0;
    r[n++] = (tensor_rule){"num_attention_heads", c->n_heads, 0};
    if (!mr_config_is_mla(c)) r[n++] = (tensor_rule){"num_key_value_heads", c->n_kv_heads, 1};
    r[n++] = (tensor_rule){"intermediate_size", c->intermediate, 0};
    if (c->n_experts && expert == 1 && c->arch != MR_ARCH_MIXTRAL) /* mixtral's is intermediate_size */
        r[n++] = (tensor_rule){"moe_intermediate_size", c->moe_intermediate, 0};
    if (c->shared_intermediate)
        r[n++] = (tensor_rule){"shared_expert_intermediate_size", c->shared_intermediate, 0};
    r[n++] = (tensor_rule){"vocab_size", c->vocab, 0};
    return n;
}

/* Divisors of n, ascending (at most max of them). */
static int divisors(int n, int *out, int max) {
    int lo = 0, hi = 0, high[1024];
    for (int d = 1; (long long)d * d <= n; d++) {
        if (n % d) continue;
        if (lo < max) out[lo++] = d;
        if (d != n / d && hi < 1024) high[hi++] = n / d;
    }
    while (hi > 0 && lo < max) out[lo++] = high[--hi];
    return lo;
}

/* Index of the first model size t does not fit, or -1. */
static int tensor_clash(const mr_model_config *c, int t, int expert, tensor_rule *r) {
    int n = tensor_rules(c, expert, r);
    for (int i = 0; i < n; i++) {
        if (r[i].value <= 0) return i;
        if (r[i].value % t && !(r[i].replicable && t % r[i].value == 0)) return i;
    }
    return -1;
}

int mr_plan_valid_tensor_sizes(const mr_plan *p, const mr_model_config *cfg, int *sizes, int max) {
    tensor_rule r[8];
    int n = 0;
    for (int t = 1; t <= cfg->n_heads && n < max; t++)
        if (tensor_clash(cfg, t, p->parallel.expert, r) < 0) sizes[n++] = t;
    return n;
}

static int expert_fits(const mr_model_config *c, int plane, int e) {
    if (plane % e) return 0;
    if (!c) return 1;
    return c->n_experts ? c->n_experts % e == 0 : e == 1;
}

static int plan_fits(const mr_model_config *c, int d, int t, int pp, int e) {
    tensor_rule r[8];
    if (!expert_fits(c, d * t, e)) return 0;
    if (!c) return 1;
    return pp <= c->n_layers && tensor_clash(c, t, e, r) < 0;
}

static void list_ints(const int *v, int n, char *out, size_t cap) {
    out[0] = 0;
    for (int i = 0; i < n; i++) {
        size_t l = strlen(out);
        snprintf(out + l, cap - l, "%s%d", i ? ", " : "", v[i]);
    }
}

typedef struct cand {
    int d, t, pp, e;
    double dist;
} cand;

static int cand_before(const cand *a, const cand *b, int t0) {
    if (fabs(a->dist - b->dist) > 1e-9) return a->dist < b->dist;
    double ta = fabs(log2((double)a->t / t0)), tb = fabs(log2((double)b->t / t0));
    if (fabs(ta - tb) > 1e-9) return ta < tb;
    if (a->pp != b->pp) return a->pp < b->pp;
    return a->t > b->t;
}

/* "; nearest plans for world 8: data=4 tensor=2, data=2 tensor=2 pipeline=2"
 * (the same world factorised differently, closest first), or "". */
static void nearest_plans(const mr_plan *p, const mr_model_config *c, int world, char *out, size_t cap) {
    enum { KEEP = 4 };
    cand best[KEEP];
    int nb = 0;
    const int D0 = p->parallel.data, T0 = p->parallel.tensor, P0 = p->parallel.pipeline, E0 = p->parallel.expert;
    out[0] = 0;
    enum { MAXDIV = 1024 }; /* a number below 2^24 has fewer divisors */
    static _Thread_local int dt[MAXDIV], dp[MAXDIV], dx[MAXDIV];
    int nt = divisors(world, dt, MAXDIV);
    for (int i = 0; i < nt; i++) {
        int t = dt[i], np = divisors(world / t, dp, MAXDIV);
        for (int j = 0; j < np; j++) {
            int pp = dp[j], d = world / t / pp;
            /* One entry per factorisation, with the expert size closest to the one asked for. */
            int e = 0, nx = divisors(d * t, dx, MAXDIV);
            double de = 1e30;
            for (int k = 0; k < nx; k++) {
                double dist = fabs(log2((double)dx[k] / E0));
                if (plan_fits(c, d, t, pp, dx[k]) && dist < de - 1e-9) e = dx[k], de = dist;
            }
            if (!e || (d == D0 && t == T0 && pp == P0 && e == E0)) continue;
            cand x = {d, t, pp, e,
                             fabs(log2((double)d / D0)) + fabs(log2((double)t / T0)) + fabs(log2((double)pp / P0)) +
                                 de};
            /* Ties: the tensor group nearest the one asked for (it was sized to a
             * node), then fewer stages, then the larger tensor group. */
            int at = nb;
            while (at > 0 && cand_before(&x, &best[at - 1], T0)) at--;
            if (at >= KEEP) continue;
            if (nb < KEEP) nb++;
            memmove(&best[at + 1], &best[at], (size_t)(nb - 1 - at) * sizeof best[0]);
            best[at] = x;
        }
    }
    if (nb == 0) return;
    size_t l = (size_t)snprintf(out, cap, "; nearest plans for world %d: ", world);
    for (int i = 0; i < nb && l < cap; i++) {
        char one[96] = "";
        size_t o = 0;
        if (best[i].d > 1 || (best[i].t == 1 && best[i].pp == 1))
            o += (size_t)snprintf(one + o, sizeof one - o, " data=%d", best[i].d);
        if (best[i].t > 1) o += (size_t)snprintf(one + o, sizeof one - o, " tensor=%d", best[i].t);
        if (best[i].pp > 1) o += (size_t)snprintf(one + o, sizeof one - o, " pipeline=%d", best[i].pp);
        if (best[i].e > 1) snprintf(one + o, sizeof one - o, " expert=%d", best[i].e);
        l += (size_t)snprintf(out + l, cap - l, "%s%s", i ? ", " : "", one + 1);
    }
}

/* Expert sizes that fit the plane (and the model's routed experts). */
static void expert_sizes(const mr_model_config *c, int plane, char *out, size_t cap) {
    int d[1024], v[64], n = 0, nd = divisors(plane, d, 1024);
    for (int i = 0; i < nd && n < 64; i++)
        if (expert_fits(c, plane, d[i])) v[n++] = d[i];
    list_ints(v, n, out, cap);
}

mr_status mr_plan_check(const mr_plan *p, const mr_model_config *c, int world) {
    const int D = p->parallel.data, T = p->parallel.tensor, P = p->parallel.pipeline, E = p->parallel.expert;
    long long prod = (long long)D * T * P;
    char w[MR_PLAN_PATH_MAX + 64], near[1024], list[512];
    const char *origin = p->origin[0] ? p->origin : "plan";
    if (prod > MAX_WORLD)
        return mr_error(MR_ERR_INPUT, "%s: parallel: data × pipeline × tensor = %d × %d × %d = %lld ranks, more than %d",
                        origin, D, P, T, prod, MAX_WORLD);
    if (world <= 0) world = (int)prod;
    if (world > MAX_WORLD) return mr_error(MR_ERR_INPUT, "world size %d is more than %d ranks", world, MAX_WORLD);
    if (prod != world) {
        nearest_plans(p, c, world, near, sizeof near);
        return mr_error(MR_ERR_INPUT,
                        "%s: parallel: data × pipeline × tensor = %d × %d × %d = %lld ranks, but the world has %d "
                        "ranks%s",
                        origin, D, P, T, prod, world, near);
    }

    /* The model first: "the model is dense" explains more than "3 does not divide 4". */
    if (c && E > 1 && c->n_experts == 0) {
        nearest_plans(p, c, world, near, sizeof near);
        return mr_error(MR_ERR_INPUT,
                        "%s: parallel.expert = %d, but the model (%s) is dense: it has no routed experts to "
                        "spread; use expert: 1%s",
                        mr_plan_where(p, MR_PLAN_KEY_EXPERT, w, sizeof w), E, c->model_type, near);
    }
    if ((D * T) % E) {
        expert_sizes(c, D * T, list, sizeof list);
        nearest_plans(p, c, world, near, sizeof near);
        return mr_error(MR_ERR_INPUT,
                        "%s: parallel.expert = %d does not divide the data × tensor = %d × %d = %d ranks of a "
                        "pipeline stage (the expert plane); expert sizes that fit: %s%s",
                        mr_plan_where(p, MR_PLAN_KEY_EXPERT, w, sizeof w), E, D, T, D * T, list, near);
    }
    if (p->parallel.n_layers_per_stage && p->parallel.n_layers_per_stage != P)
        return mr_error(MR_ERR_INPUT,
                        "%s: parallel.layers_per_stage has %d entries but parallel.pipeline is %d: give one "
                        "layer count per stage",
                        mr_plan_where(p, MR_PLAN_KEY_LAYERS_PER_STAGE, w, sizeof w),
                        p->parallel.n_layers_per_stage, P);
    if (mr_plan_micro_batches(p) > p->generation.max_batch)
        return mr_error(MR_ERR_INPUT,
                        "%s: parallel.micro_batches = %d is more than generation.max_batch = %d: some "
                        "micro-batches would always be empty",
                        mr_plan_where(p, MR_PLAN_KEY_MICRO_BATCHES, w, sizeof w), mr_plan_micro_batches(p),
                        p->generation.max_batch);
    if (p->comm.allreduce.algorithm == MR_AR_MPI && p->comm.backend == MR_COMM_NCCL)
        return mr_error(MR_ERR_INPUT,
                        "%s: comm.allreduce.algorithm = mpi needs comm.backend mpi or auto, not nccl",
                        mr_plan_where(p, MR_PLAN_KEY_AR_ALGORITHM, w, sizeof w));
    if (!c) return MR_OK;

    tensor_rule r[8];
    int bad = tensor_clash(c, T, E, r);
    if (bad >= 0) {
        int sizes[64];
        int n = mr_plan_valid_tensor_sizes(p, c, sizes, 64);
        list_ints(sizes, n, list, sizeof list);
        nearest_plans(p, c, world, near, sizeof near);
        return mr_error(MR_ERR_INPUT,
                        "%s: parallel.tensor = %d does not divide %s = %d of the model (%s)%s; tensor sizes that "
                        "fit this model: %s%s",
                        mr_plan_where(p, MR_PLAN_KEY_TENSOR, w, sizeof w), T, r[bad].name, r[bad].value,
                        c->model_type, r[bad].replicable ? " and is not a multiple of it" : "", list, near);
    }
    if (P > c->n_layers) {
        nearest_plans(p, c, world, near, sizeof near);
        return mr_error(MR_ERR_INPUT,
                        "%s: parallel.pipeline = %d is more than the %d layers of the model (%s): every stage "
                        "needs at least one layer%s",
                        mr_plan_where(p, MR_PLAN_KEY_PIPELINE, w, sizeof w), P, c->n_layers, c->model_type, near);
    }
    if (p->parallel.n_layers_per_stage) {
        int sum = 0;
        for (int s = 0; s < P; s++) sum += p->parallel.layers_per_stage[s];
        if (sum != c->n_layers) {
            mr_plan even = *p;
            even.parallel.n_layers_per_stage = 0;
            size_t l = 0;
            for (int s = 0; s < P && l < sizeof list; s++) {
                int first, count;
                mr_plan_stage_layers(&even, c->n_layers, s, &first, &count);
                l += (size_t)snprintf(list + l, sizeof list - l, "%s%d", s ? ", " : "", count);
            }
            return mr_error(MR_ERR_INPUT,
                            "%s: parallel.layers_per_stage sums to %d but the model (%s) has %d layers "
                            "(num_hidden_layers); an even split is [%s]",
                            mr_plan_where(p, MR_PLAN_KEY_LAYERS_PER_STAGE, w, sizeof w), sum, c->model_type,
                            c->n_layers, list);
        }
    }
    if (c->n_experts && c->n_experts % E) {
        expert_sizes(c, D * T, list, sizeof list);
        nearest_plans(p, c, world, near, sizeof near);
        return mr_error(MR_ERR_INPUT,
                        "%s: parallel.expert = %d does not divide the %d routed experts of the model (%s = %d); "
                        "expert sizes that fit this plan and model: %s%s",
                        mr_plan_where(p, MR_PLAN_KEY_EXPERT, w, sizeof w), E, c->n_experts, experts_key(c),
                        c->n_experts, list, near);
    }
    return MR_OK;
}

mr_status mr_plan_load_model_config(mr_model_config *cfg, const char *model) {
    if (!model || !*model)
        return mr_error(MR_ERR_INPUT, "no model: set `model:` in the plan or pass --model PATH");
    size_t n = strlen(model);
    if (n >= 5 && !strcmp(model + n - 5, ".gguf")) { /* its metadata only, no tensor data */
        mr_gguf *g;
        MR_CHECK(mr_gguf_open(&g, model));
        mr_status st = mr_gguf_to_config(g, cfg);
        mr_gguf_close(g);
        return st;
    }
    struct stat sb;
    if (stat(model, &sb) != 0) return mr_error(MR_ERR_INPUT, "model %s: no such file or folder", model);
    if (S_ISREG(sb.st_mode)) {
        /* .../config.json itself: read its folder */
        const char *slash = strrchr(model, '/');
        if (strcmp(slash ? slash + 1 : model, "config.json"))
            return mr_error(MR_ERR_INPUT, "model %s: expected a checkpoint folder, its config.json or a .gguf file",
                            model);
        char dir[MR_PLAN_PATH_MAX];
        snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - model) : 1, slash ? model : ".");
        return mr_config_load(cfg, dir);
    }
    return mr_config_load(cfg, model);
}

/* ---- bytes per rank --------------------------------------------------- */

int mr_plan_bf16_weights(const mr_plan *p) {
    mr_weights_kind w = p->runtime.weights;
    return w == MR_WEIGHTS_KIND_BF16 || (w == MR_WEIGHTS_KIND_AUTO && p->runtime.device == MR_DEVICE_CUDA);
}

void mr_plan_rank_bytes(const mr_plan *p, const mr_model_config *c, int rank, mr_plan_bytes *out) {
    memset(out, 0, sizeof *out);
    mr_rank_coords rc = mr_plan_coords(p, rank);
    const uint64_t T = (uint64_t)p->parallel.tensor, H = (uint64_t)c->hidden;
    const uint64_t nh = (uint64_t)c->n_heads / T;
    const uint64_t nkv = (uint64_t)c->n_kv_heads >= T ? (uint64_t)c->n_kv_heads / T : 1; /* replicated */
    int first, count;
    mr_plan_stage_layers(p, c->n_layers, rc.pipe_i, &first, &count);
    mr_plan_bytes n = {0}; /* parameters, scaled to bytes at the end */
    int bf16 = mr_plan_bf16_weights(p);
    for (int l = first; l < first + count; l++) {
        n.norms += 2 * H; /* input and post-attention norms */
        if (mr_config_is_mla(c)) {
            /* Down-projections to the latents are shared by all heads: whole on every rank. */
            uint64_t qk = (uint64_t)mr_config_qk_dim(c), v = (uint64_t)c->v_head_dim;
            uint64_t kvr = (uint64_t)c->kv_lora_rank, qr = (uint64_t)c->q_lora_rank;
            if (qr) {
                n.attention += H * qr + qr * nh * qk;
                n.norms += qr;
            } else {
                n.attention += H * nh * qk;
            }
            n.attention += H * (kvr + (uint64_t)c->qk_rope_dim) + kvr * nh * ((uint64_t)c->qk_nope_dim + v);
            n.attention += nh * v * H;
            n.norms += kvr;
        } else {
            uint64_t hd = (uint64_t)c->head_dim;
            n.attention += H * (nh + 2 * nkv) * hd + nh * hd * H;
            if (c->attn_bias) n.norms += (nh + 2 * nkv) * hd; /* float32 with the norms */
            if (c->o_bias && rc.tensor_i == 0) n.norms += H; /* added once after the all-reduce */
            if (c->qk_norm) n.norms += 2 * hd;
        }
        if (mr_config_is_moe_layer(c, l)) {
            uint64_t E = (uint64_t)c->n_experts, mi = (uint64_t)c->moe_intermediate;
            n.router += E * H + (c->arch == MR_ARCH_DEEPSEEK_V3 ? E : 0);
            /* expert > 1: whole experts dealt out; expert = 1: every expert sliced. */
            if (p->parallel.expert > 1) n.routed += E / (uint64_t)p->parallel.expert * 3 * H * mi;
            else n.routed += E * 3 * H * (mi / T);
            uint64_t si = ((uint64_t)c->shared_intermediate + mi * (uint64_t)c->n_shared_experts) / T;
            n.shared += 3 * H * si;
            n.router += c->shared_intermediate ? H : 0; /* qwen2_moe's shared-expert gate (float32) */
        } else {
            uint64_t inter = (uint64_t)c->intermediate / T;
            n.mlp += 3 * H * inter;
            if (c->mlp_bias) {
                n.norms += 2 * inter;
                if (rc.tensor_i == 0) n.norms += H; /* down_proj bias, added once */
            }
        }
    }
    uint64_t vocab_slice = (uint64_t)c->vocab / T * H;
    if (rc.pipe_i == 0) n.embed = vocab_slice;
    if (rc.pipe_i == p->parallel.pipeline - 1) {
        n.norms += H; /* final norm */
        /* Tied: the last stage keeps its own copy unless it is also the
         * first and the head is float32 like the embedding. */
        n.lm_head = c->tie_embeddings && p->parallel.pipeline == 1 && !bf16 ? 0 : vocab_slice;
    }
    const uint64_t f = sizeof(float), e = bf16 ? 2 : sizeof(float); /* e: weight matrices */
    out->embed = n.embed * f;
    out->attention = n.attention * e;
    out->mlp = n.mlp * e;
    out->routed = n.routed * e;
    out->shared = n.shared * e;
    out->router = n.router * f;
    out->norms = n.norms * f;
    out->lm_head = n.lm_head * e;
    out->total = out->embed + out->attention + out->mlp + out->routed + out->shared + out->router + out->norms +
                 out->lm_head;
}

/* ---- printing --------------------------------------------------------- */

const char *mr_plan_format_bytes(uint64_t bytes, char *buf, size_t n) {
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024 && u < 5) v /= 1024, u++;
    if (u == 0) snprintf(buf, n, "%llu B", (unsigned long long)bytes);
    else snprintf(buf, n, "%.*f %s", v < 10 ? 2 : 1, v, unit[u]);
    return buf;
}

void mr_plan_print_ranks(const mr_plan *p, const mr_model_config *c, FILE *f) {
    int world = mr_plan_world(p), moe = c && c->n_experts;
    fprintf(f, "%5s %5s %5s %-9s %6s %-9s %-9s %12s\n", "rank", "data", "pipe", "layers", "tensor", "ep grp/i",
            moe ? "experts" : "", c ? "weights" : "");
    uint64_t sum = 0, max = 0;
    int max_rank = 0;
    for (int r = 0; r < world; r++) {
        mr_rank_coords rc = mr_plan_coords(p, r);
        char layers[32] = "-", ep[32], ex[32] = "", wb[32] = "";
        int first, count;
        mr_plan_stage_layers(p, c ? c->n_layers : 0, rc.pipe_i, &first, &count);
        if (count) snprintf(layers, sizeof layers, "%d..%d", first, first + count - 1);
        snprintf(ep, sizeof ep, "%d/%d", rc.expert_group, rc.expert_i);
        if (moe) {
            mr_plan_rank_experts(p, c, r, &first, &count);
            snprintf(ex, sizeof ex, "%d..%d", first, first + count - 1);
        }
        if (c) {
            mr_plan_bytes b;
            mr_plan_rank_bytes(p, c, r, &b);
            mr_plan_format_bytes(b.total, wb, sizeof wb);
            sum += b.total;
            if (b.total > max) max = b.total, max_rank = r;
        }
        fprintf(f, "%5d %5d %5d %-9s %6d %-9s %-9s %12s\n", r, rc.data_i, rc.pipe_i, layers, rc.tensor_i, ep, ex,
                wb);
    }
    if (c) {
        char a[32], b[32], m[32];
        mr_plan one; /* the whole model on one rank */
        mr_plan_init(&one);
        mr_plan_bytes whole;
        mr_plan_rank_bytes(&one, c, 0, &whole);
        fprintf(f, "weights (fp32): at most %s on a rank (rank %d), %s over all %d ranks; the model is %s\n",
                mr_plan_format_bytes(max, a, sizeof a), max_rank, mr_plan_format_bytes(sum, b, sizeof b), world,
                mr_plan_format_bytes(whole.total, m, sizeof m));
    }
}
