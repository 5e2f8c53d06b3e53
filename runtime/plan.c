/* Plan reader: YAML (libyaml's document API, so every node keeps its line
 * and column) and dotted-key overrides from the command line, both through
 * one table of keys with one set of checks; and the resolved plan printed
 * back as YAML.  Layout, checks against the model and bytes per rank are in
 * plan-layout.c. */
#define _GNU_SOURCE
#include "runtime/plan.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

/* ---- the keys ----------------------------------------------------------- */

typedef enum vtype { T_PATH, T_INT, T_U64, T_FLOAT, T_BOOL, T_ENUM, T_INTLIST } vtype;

enum { F_POW2 = 1, F_OPEN_LO = 2 }; /* power of two; float range open below */

typedef struct keydef {
    const char *name; /* dotted */
    vtype type;
    long long lo, hi; /* integers, list entries */
    double flo, fhi;  /* floats */
    int flags;
    const char *const *values; /* enum spellings, indexed by the enum value */
    int n_values;
} keydef;

static const char *const backend_names[MR_COMM_BACKEND_COUNT] = {"auto", "mpi", "nccl"};
static const char *const algo_names[MR_AR_ALGO_COUNT] = {"auto", "ring", "two_shot", "hierarchical", "mpi"};
static const char *const compression_names[MR_COMPRESSION_COUNT] = {"none", "bf16", "fp16", "int8", "int4"};
static const char *const bind_names[MR_TOPO_BIND_POLICY_COUNT] = {"auto", "none", "force"};
static const char *const gpu_names[MR_TOPO_GPU_POLICY_COUNT] = {"local_rank", "numa"};
static const char *const device_names[MR_DEVICE_KIND_COUNT] = {"auto", "cpu", "cuda"};
static const char *const weights_names[MR_WEIGHTS_KIND_COUNT] = {"auto", "fp32", "bf16"};

#define SIZE_MAX_RANKS (1 << 16) /* per dimension; the product is checked too */
#define BIG (1 << 30)

static const keydef keys[MR_PLAN_KEY_COUNT] = {
    [MR_PLAN_KEY_MODEL] = {"model", T_PATH, 0, 0, 0, 0, 0, NULL, 0},
    [MR_PLAN_KEY_INPUT] = {"input", T_PATH, 0, 0, 0, 0, 0, NULL, 0},
    [MR_PLAN_KEY_OUTPUT] = {"output", T_PATH, 0, 0, 0, 0, 0, NULL, 0},
    [MR_PLAN_KEY_DATA] = {"parallel.data", T_INT, 1, SIZE_MAX_RANKS, 0, 0, 0, NULL, 0},
    [MR_PLAN_KEY_TENSOR] = {"parallel.tensor", T_INT, 1, SIZE_MAX_RANKS, 0, 0, 0, NULL, 0},
    [MR_PLAN_KEY_PIPELINE] = {"parallel.pipeline", T_INT, 1, SIZE_MAX_RANKS, 0, 0, 0, NULL, 0},
    [MR_PLAN_KEY_EXPERT] = {"parallel.expert", T_INT, 1, SIZE_MAX_RANKS, 0, 0, 0, NULL, 0},
    [MR_PLAN_KEY_MICRO_BATCHES] = {"parallel.micro_batches", T_INT, 0, 4096, 0, 0, 0, NULL, 0},
    [MR_PLAN_KEY_LAYERS_PER_STAGE] = {"parallel.layers_per_stage", T_INTLIST, 1, BIG, 0, 0, 0, NULL, 0},
    [MR_PLAN_KEY_COMM_BACKEND] = {"comm.backend", T_ENUM, 0, 0, 0, 0, 0, backend_names, MR_COMM_BACKEND_COUNT},
    [MR_PLAN_KEY_AR_ALGORITHM] = {"comm.allreduce.algorithm", T_ENUM, 0, 0, 0, 0, 0, algo_names,
                                  MR_AR_ALGO_COUNT},
    [MR_PLAN_KEY_AR_CHUNK_KIB] = {"comm.allreduce.chunk_kib", T_INT, 1, 1 << 20, 0, 0, 0, NULL, 0},
    [MR_PLAN_KEY_AR_COMPRESSION] = {"comm.allreduce.compression", T_ENUM, 0, 0, 0, 0, 0, compression_names,
                                    MR_COMPRESSION_COUNT},
    [MR_PLAN_KEY_AR_BLOCK] = {"comm.allreduce.block", T_INT, 32, 256, 0, 0, F_POW2, NULL, 0},
    [MR_PLAN_KEY_AR_OVERLAP] = {"comm.allreduce.overlap", T_BOOL, 0, 0, 0, 0, 0, NULL, 0},
    [MR_PLAN_KEY_DETERMINISTIC] = {"comm.deterministic", T_BOOL, 0, 0, 0, 0, 0, NULL, 0},
    [MR_PLAN_KEY_MAX_TOKENS] = {"generation.max_tokens", T_INT, 1, BIG, 0, 0, 0, NULL, 0},
    [MR_PLAN_KEY_TEMPERATURE] = {"generation.temperature", T_FLOAT, 0, 0, 0, 100, 0, NULL, 0},
    [MR_PLAN_KEY_TOP_P] = {"generation.top_p", T_FLOAT, 0, 0, 0, 1, F_OPEN_LO, NULL, 0},
    [MR_PLAN_KEY_TOP_K] = {"generation.top_k", T_INT, 0, BIG, 0, 0, 0, NULL, 0},
    [MR_PLAN_KEY_SEED] = {"generation.seed", T_U64, 0, 0, 0, 0, 0, NULL, 0},
    [MR_PLAN_KEY_MAX_BATCH] = {"generation.max_batch", T_INT, 1, 1 << 20, 0, 0, 0, NULL, 0},
    [MR_PLAN_KEY_TOKEN_BUDGET] = {"generation.token_budget", T_INT, 1, 1 << 24, 0, 0, 0, NULL, 0},
    [MR_PLAN_KEY_MAX_CONTEXT] = {"generation.max_context", T_INT, 0, 1 << 24, 0, 0, 0, NULL, 0},
    [MR_PLAN_KEY_TOPO_STRICT] = {"topology.strict", T_BOOL, 0, 0, 0, 0, 0, NULL, 0},
    [MR_PLAN_KEY_TOPO_BIND] = {"topology.bind", T_ENUM, 0, 0, 0, 0, 0, bind_names, MR_TOPO_BIND_POLICY_COUNT},
    [MR_PLAN_KEY_TOPO_GPU] = {"topology.gpu", T_ENUM, 0, 0, 0, 0, 0, gpu_names, MR_TOPO_GPU_POLICY_COUNT},
    [MR_PLAN_KEY_TOPO_EXPORT_NIC] = {"topology.export_nic", T_BOOL, 0, 0, 0, 0, 0, NULL, 0},
    [MR_PLAN_KEY_DEVICE] = {"runtime.device", T_ENUM, 0, 0, 0, 0, 0, device_names, MR_DEVICE_KIND_COUNT},
    [MR_PLAN_KEY_WEIGHTS] = {"runtime.weights", T_ENUM, 0, 0, 0, 0, 0, weights_names, MR_WEIGHTS_KIND_COUNT},
    [MR_PLAN_KEY_THREADS] = {"runtime.threads", T_INT, 0, 4096, 0, 0, 0, NULL, 0},
    [MR_PLAN_KEY_FSYNC_INTERVAL] = {"runtime.fsync_interval", T_FLOAT, 0, 0, 0, 86400, 0, NULL, 0},
    [MR_PLAN_KEY_PROGRESS_INTERVAL] = {"runtime.progress_interval", T_FLOAT, 0, 0, 0, 86400, 0, NULL, 0},
    [MR_PLAN_KEY_STOP_GRACE] = {"runtime.stop_grace", T_FLOAT, 0, 0, 0, 3600, 0, NULL, 0},
};

/* Mappings that hold keys (the top level is ""). */
static const char *const sections[] = {"parallel", "comm", "comm.allreduce", "generation", "topology", "runtime"};
#define N_SECTIONS ((int)(sizeof sections / sizeof sections[0]))

static void *field(mr_plan *p, mr_plan_key k) {
    switch (k) {
    case MR_PLAN_KEY_MODEL: return p->model;
    case MR_PLAN_KEY_INPUT: return p->input;
    case MR_PLAN_KEY_OUTPUT: return p->output;
    case MR_PLAN_KEY_DATA: return &p->parallel.data;
    case MR_PLAN_KEY_TENSOR: return &p->parallel.tensor;
    case MR_PLAN_KEY_PIPELINE: return &p->parallel.pipeline;
    case MR_PLAN_KEY_EXPERT: return &p->parallel.expert;
    case MR_PLAN_KEY_MICRO_BATCHES: return &p->parallel.micro_batches;
    case MR_PLAN_KEY_LAYERS_PER_STAGE: return &p->parallel.n_layers_per_stage;
    case MR_PLAN_KEY_COMM_BACKEND: return &p->comm.backend;
    case MR_PLAN_KEY_AR_ALGORITHM: return &p->comm.allreduce.algorithm;
    case MR_PLAN_KEY_AR_CHUNK_KIB: return &p->comm.allreduce.chunk_kib;
    case MR_PLAN_KEY_AR_COMPRESSION: return &p->comm.allreduce.compression;
    case MR_PLAN_KEY_AR_BLOCK: return &p->comm.allreduce.block;
    case MR_PLAN_KEY_AR_OVERLAP: return &p->comm.allreduce.overlap;
    case MR_PLAN_KEY_DETERMINISTIC: return &p->comm.deterministic;
    case MR_PLAN_KEY_MAX_TOKENS: return &p->generation.max_tokens;
    case MR_PLAN_KEY_TEMPERATURE: return &p->generation.temperature;
    case MR_PLAN_KEY_TOP_P: return &p->generation.top_p;
    case MR_PLAN_KEY_TOP_K: return &p->generation.top_k;
    case MR_PLAN_KEY_SEED: return &p->generation.seed;
    case MR_PLAN_KEY_MAX_BATCH: return &p->generation.max_batch;
    case MR_PLAN_KEY_TOKEN_BUDGET: return &p->generation.token_budget;
    case MR_PLAN_KEY_MAX_CONTEXT: return &p->generation.max_context;
    case MR_PLAN_KEY_TOPO_STRICT: return &p->topology.strict;
    case MR_PLAN_KEY_TOPO_BIND: return &p->topology.bind;
    case MR_PLAN_KEY_TOPO_GPU: return &p->topology.gpu;
    case MR_PLAN_KEY_TOPO_EXPORT_NIC: return &p->topology.export_nic;
    case MR_PLAN_KEY_DEVICE: return &p->runtime.device;
    case MR_PLAN_KEY_WEIGHTS: return &p->runtime.weights;
    case MR_PLAN_KEY_THREADS: return &p->runtime.threads;
    case MR_PLAN_KEY_FSYNC_INTERVAL: return &p->runtime.fsync_interval;
    case MR_PLAN_KEY_PROGRESS_INTERVAL: return &p->runtime.progress_interval;
    case MR_PLAN_KEY_STOP_GRACE: return &p->runtime.stop_grace;
    default: return NULL;
    }
}

const char *mr_plan_key_name(mr_plan_key k) { return k >= 0 && k < MR_PLAN_KEY_COUNT ? keys[k].name : "?"; }
const char *mr_comm_backend_name(mr_comm_backend b) {
    return b >= 0 && b < MR_COMM_BACKEND_COUNT ? backend_names[b] : "?";
}
const char *mr_allreduce_algo_name(mr_allreduce_algo a) {
    return a >= 0 && a < MR_AR_ALGO_COUNT ? algo_names[a] : "?";
}
const char *mr_compression_name(mr_compression c) {
    return c >= 0 && c < MR_COMPRESSION_COUNT ? compression_names[c] : "?";
}
const char *mr_topo_bind_name(mr_topo_bind_policy b) {
    return b >= 0 && b < MR_TOPO_BIND_POLICY_COUNT ? bind_names[b] : "?";
}
const char *mr_topo_gpu_name(mr_topo_gpu_policy g) { return g >= 0 && g < MR_TOPO_GPU_POLICY_COUNT ? gpu_names[g] : "?"; }
const char *mr_device_kind_name(mr_device_kind d) {
    return d >= 0 && d < MR_DEVICE_KIND_COUNT ? device_names[d] : "?";
}
const char *mr_weights_kind_name(mr_weights_kind w) {
    return w >= 0 && w < MR_WEIGHTS_KIND_COUNT ? weights_names[w] : "?";
}

void mr_plan_init(mr_plan *p) {
    memset(p, 0, sizeof *p);
    p->parallel.data = p->parallel.tensor = p->parallel.pipeline = p->parallel.expert = 1;
    p->comm.backend = MR_COMM_AUTO;
    p->comm.allreduce.algorithm = MR_AR_AUTO;
    p->comm.allreduce.chunk_kib = 256;
    p->comm.allreduce.compression = MR_COMPRESS_NONE;
    p->comm.allreduce.block = 32;
    p->comm.allreduce.overlap = 0;
    p->generation.max_tokens = 128;
    p->generation.temperature = 0.0f;
    p->generation.top_p = 1.0f;
    p->generation.max_batch = 32;
    p->generation.token_budget = 512;
    p->runtime.fsync_interval = 10;
    p->runtime.progress_interval = 10;
    p->runtime.stop_grace = 5;
}

const char *mr_plan_where(const mr_plan *p, mr_plan_key k, char *buf, size_t n) {
    const mr_plan_mark *m = &p->marks[k];
    if (m->source == MR_PLAN_FROM_FILE)
        snprintf(buf, n, "%s:%d:%d", p->origin, m->line, m->column);
    else if (m->source == MR_PLAN_FROM_OPTION)
        snprintf(buf, n, "command line");
    else if (m->source == MR_PLAN_FROM_ENV)
        snprintf(buf, n, "environment %s", mr_plan_env_var(k));
    else
        snprintf(buf, n, "%s", p->origin[0] ? p->origin : "plan");
    return buf;
}

/* ---- nearest names ---------------------------------------------------- */

/* Optimal string alignment distance (Levenshtein plus transpositions). */
static int edit_distance(const char *a, const char *b) {
    enum { MAXL = 64 };
    size_t la = strlen(a), lb = strlen(b);
    if (la >= MAXL || lb >= MAXL) return 1000;
    int d[MAXL][MAXL];
    for (size_t i = 0; i <= la; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= lb; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            int cost = a[i - 1] != b[j - 1];
            int v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v) v = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < v) v = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < v)
                v = d[i - 2][j - 2] + 1;
            d[i][j] = v;
        }
    return d[la][lb];
}

/* Close enough to be a typo rather than a different word. */
static int is_typo(const char *got, int dist) {
    int len = (int)strlen(got);
    return dist <= (len < 6 ? 2 : len / 3 + 1);
}

/* The part of a dotted name after `parent` when it is a direct child, else NULL. */
static const char *child_of(const char *name, const char *parent) {
    size_t n = strlen(parent);
    if (n) {
        if (strncmp(name, parent, n) || name[n] != '.') return NULL;
        name += n + 1;
    }
    return strchr(name, '.') ? NULL : name;
}

static int is_section(const char *name) {
    for (int i = 0; i < N_SECTIONS; i++)
        if (!strcmp(sections[i], name)) return 1;
    return 0;
}

static int find_key(const char *name) {
    for (int k = 0; k < MR_PLAN_KEY_COUNT; k++)
        if (!strcmp(keys[k].name, name)) return k;
    return -1;
}

/* " (did you mean "tensor"?)" for `got` among the children of `parent`,
 * or the list of valid keys when nothing is close. */
static void suggest_child(const char *got, const char *parent, char *out, size_t n) {
    const char *best = NULL;
    int best_d = 1000;
    char list[1024] = "";
    for (int pass = 0; pass < 2; pass++) {
        int count = pass ? MR_PLAN_KEY_COUNT : N_SECTIONS;
        for (int i = 0; i < count; i++) {
            const char *leaf = child_of(pass ? keys[i].name : sections[i], parent);
            if (!leaf) continue;
            int d = edit_distance(got, leaf);
            if (d < best_d) best_d = d, best = leaf;
            size_t l = strlen(list);
            snprintf(list + l, sizeof list - l, "%s%s", l ? ", " : "", leaf);
        }
    }
    if (best && is_typo(got, best_d)) {
        snprintf(out, n, " (did you mean \"%s\"?)", best);
        return;
    }
    /* The right word in the wrong mapping: "seed" under parallel. */
    for (int k = 0; k < MR_PLAN_KEY_COUNT; k++) {
        const char *dot = strrchr(keys[k].name, '.');
        if (dot && !strcmp(dot + 1, got)) {
            snprintf(out, n, " (did you mean \"%s\"?)", keys[k].name);
            return;
        }
    }
    snprintf(out, n, " (valid keys: %s)", list);
}

/* The same over full dotted names, for mr_plan_set. */
static void suggest_dotted(const char *got, char *out, size_t n) {
    int best = -1, best_d = 1000;
    for (int k = 0; k < MR_PLAN_KEY_COUNT; k++) {
        int d = edit_distance(got, keys[k].name);
        if (d < best_d) best_d = d, best = k;
    }
    if (best >= 0 && is_typo(got, best_d))
        snprintf(out, n, " (did you mean \"%s\"?)", keys[best].name);
    else
        snprintf(out, n, " (keys look like \"parallel.tensor\" or \"generation.max_tokens\")");
}

/* ---- values ------------------------------------------------------------ */

static int is_null_scalar(const char *s) {
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

static void enum_list(const keydef *d, char *out, size_t n) {
    out[0] = 0;
    for (int i = 0; i < d->n_values; i++) {
        size_t l = strlen(out);
        snprintf(out + l, n - l, "%s%s", i ? ", " : "", d->values[i]);
    }
}

/* Parse an integer entry with the key's range; err gets the reason. */
static int parse_int_value(const keydef *d, const char *s, int quoted, long long *out, char *err, size_t n) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (quoted || !*s || *end || errno) {
        snprintf(err, n, "%s must be an integer, got %s\"%s\"%s", d->name, quoted ? "the string " : "", s,
                 quoted ? " (drop the quotes)" : "");
        return 0;
    }
    if (v < d->lo || v > d->hi) {
        if (d->flags & F_POW2)
            snprintf(err, n, "%s must be a power of two in [%lld, %lld], got %lld", d->name, d->lo, d->hi, v);
        else if (v < d->lo)
            snprintf(err, n, "%s must be at least %lld, got %lld", d->name, d->lo, v);
        else
            snprintf(err, n, "%s must be at most %lld, got %lld", d->name, d->hi, v);
        return 0;
    }
    if ((d->flags & F_POW2) && (v & (v - 1))) {
        snprintf(err, n, "%s must be a power of two in [%lld, %lld], got %lld", d->name, d->lo, d->hi, v);
        return 0;
    }
    *out = v;
    return 1;
}

/* Set scalar key k from text.  Returns 1, or 0 with the reason in err. */
static int set_scalar(mr_plan *p, mr_plan_key k, const char *s, int quoted, char *err, size_t n) {
    const keydef *d = &keys[k];
    void *dst = field(p, k);
    if (d->type != T_PATH && !quoted && is_null_scalar(s)) {
        snprintf(err, n, "%s needs a value", d->name);
        return 0;
    }
    switch (d->type) {
    case T_PATH:
        if (!quoted && is_null_scalar(s)) s = "";
        if (strlen(s) >= MR_PLAN_PATH_MAX) {
            snprintf(err, n, "%s is longer than %d bytes", d->name, MR_PLAN_PATH_MAX - 1);
            return 0;
        }
        strcpy(dst, s);
        return 1;
    case T_INT: {
        long long v;
        if (!parse_int_value(d, s, quoted, &v, err, n)) return 0;
        *(int *)dst = (int)v;
        return 1;
    }
    case T_U64: {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (quoted || !*s || *end || errno || *s == '-') {
            snprintf(err, n, "%s must be an integer in [0, 2^64), got %s\"%s\"", d->name, quoted ? "the string " : "",
                     s);
            return 0;
        }
        *(uint64_t *)dst = (uint64_t)v;
        return 1;
    }
    case T_FLOAT: {
        char *end;
        double v = strtod(s, &end);
        int lo_ok = (d->flags & F_OPEN_LO) ? v > d->flo : v >= d->flo;
        if (quoted || !*s || *end || !isfinite(v)) {
            snprintf(err, n, "%s must be a number, got %s\"%s\"", d->name, quoted ? "the string " : "", s);
            return 0;
        }
        if (!lo_ok || v > d->fhi) {
            snprintf(err, n, "%s must be in %s%g, %g], got %g", d->name, (d->flags & F_OPEN_LO) ? "(" : "[", d->flo,
                     d->fhi, v);
            return 0;
        }
        *(float *)dst = (float)v;
        return 1;
    }
    case T_BOOL: {
        static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
        for (int i = 0; i < 3 && !quoted; i++) {
            if (!strcasecmp(s, yes[i])) return *(int *)dst = 1, 1;
            if (!strcasecmp(s, no[i])) return *(int *)dst = 0, 1;
        }
        snprintf(err, n, "%s must be true or false, got %s\"%s\"", d->name, quoted ? "the string " : "", s);
        return 0;
    }
    case T_ENUM: {
        int best = 0, best_d = 1000;
        for (int i = 0; i < d->n_values; i++) {
            if (!strcmp(s, d->values[i])) return *(int *)dst = i, 1;
            int dist = edit_distance(s, d->values[i]);
            if (dist < best_d) best_d = dist, best = i;
        }
        char list[256], hint[96] = "";
        enum_list(d, list, sizeof list);
        if (is_typo(s, best_d)) snprintf(hint, sizeof hint, " (did you mean \"%s\"?)", d->values[best]);
        snprintf(err, n, "%s must be one of %s, got \"%s\"%s", d->name, list, s, hint);
        return 0;
    }
    case T_INTLIST: {
        /* Command-line form: "31,30" or "[31, 30]". */
        int count = 0;
        const char *c = s;
        while (*c == ' ' || *c == '[') c++;
        while (*c && *c != ']') {
            char item[32];
            size_t l = strcspn(c, ",]");
            while (l && c[l - 1] == ' ') l--;
            if (l == 0 || l >= sizeof item) {
                snprintf(err, n, "%s must be a list of integers such as 31,30, got \"%s\"", d->name, s);
                return 0;
            }
            memcpy(item, c, l);
            item[l] = 0;
            long long v;
            if (!parse_int_value(d, item, 0, &v, err, n)) return 0;
            if (count == MR_PLAN_MAX_STAGES) {
                snprintf(err, n, "%s has more than %d entries", d->name, MR_PLAN_MAX_STAGES);
                return 0;
            }
            p->parallel.layers_per_stage[count++] = (int)v;
            c += strcspn(c, ",]");
            while (*c == ',' || *c == ' ') c++;
        }
        p->parallel.n_layers_per_stage = count;
        return 1;
    }
    }
    snprintf(err, n, "%s: unhandled type", d->name);
    return 0;
}

mr_status mr_plan_set(mr_plan *p, const char *key, const char *value) {
    char err[1024];
    int k = find_key(key);
    if (k < 0) {
        suggest_dotted(key, err, sizeof err);
        return mr_error(MR_ERR_INPUT, "option \"%s\" is not a plan key%s", key, err);
    }
    if (!set_scalar(p, (mr_plan_key)k, value, 0, err, sizeof err))
        return mr_error(MR_ERR_INPUT, "option %s", err);
    p->marks[k] = (mr_plan_mark){.source = MR_PLAN_FROM_OPTION};
    return MR_OK;
}

/* Keys an environment variable may override: settings of the machine a
 * job lands on rather than of the job (a CPU test run of a GPU plan). */
static const struct {
    mr_plan_key key;
    const char *var;
} env_keys[] = {
    {MR_PLAN_KEY_DEVICE, "MR_DEVICE"},
    {MR_PLAN_KEY_WEIGHTS, "MR_WEIGHTS"},
    {MR_PLAN_KEY_DETERMINISTIC, "MR_DETERMINISTIC"},
};

const char *mr_plan_env_var(mr_plan_key k) {
    for (size_t i = 0; i < sizeof env_keys / sizeof env_keys[0]; i++)
        if (env_keys[i].key == k) return env_keys[i].var;
    return NULL;
}

mr_status mr_plan_env(mr_plan *p) {
    char err[1024];
    for (size_t i = 0; i < sizeof env_keys / sizeof env_keys[0]; i++) {
        const char *v = getenv(env_keys[i].var);
        if (!v || !*v) continue;
        if (!set_scalar(p, env_keys[i].key, v, 0, err, sizeof err))
            return mr_error(MR_ERR_INPUT, "environment %s=%s: %s", env_keys[i].var, v, err);
        p->marks[env_keys[i].key] = (mr_plan_mark){.source = MR_PLAN_FROM_ENV};
    }
    return MR_OK;
}

/* ---- YAML --------------------------------------------------------------- */

typedef struct reader {
    mr_plan *p;
    yaml_document_t *doc;
    const char *origin;
} reader;

static const char *node_kind(const yaml_node_t *n) {
    switch (n->type) {
    case YAML_SCALAR_NODE: return "a scalar";
    case YAML_SEQUENCE_NODE: return "a list";
    case YAML_MAPPING_NODE: return "a mapping";
    default: return "nothing";
    }
}

static mr_status at(const reader *r, const yaml_node_t *n, const char *fmt, const char *msg) {
    return mr_error(MR_ERR_INPUT, fmt, r->origin, (int)n->start_mark.line + 1, (int)n->start_mark.column + 1, msg);
}

static int scalar_quoted(const yaml_node_t *n) {
    return n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE && n->data.scalar.style != YAML_ANY_SCALAR_STYLE;
}

static mr_status read_list(reader *r, mr_plan_key k, yaml_node_t *v) {
    const keydef *d = &keys[k];
    char err[1024];
    if (v->type != YAML_SEQUENCE_NODE) {
        snprintf(err, sizeof err, "%s must be a list of integers such as [31, 30], got %s", d->name, node_kind(v));
        return at(r, v, "%s:%d:%d: %s", err);
    }
    int count = 0;
    for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
        yaml_node_t *item = yaml_document_get_node(r->doc, *it);
        if (!item || item->type != YAML_SCALAR_NODE) {
            snprintf(err, sizeof err, "%s entries must be integers, got %s", d->name, item ? node_kind(item) : "?");
            return at(r, item ? item : v, "%s:%d:%d: %s", err);
        }
        long long x;
        if (!parse_int_value(d, (const char *)item->data.scalar.value, scalar_quoted(item), &x, err, sizeof err))
            return at(r, item, "%s:%d:%d: %s", err);
        if (count == MR_PLAN_MAX_STAGES) {
            snprintf(err, sizeof err, "%s has more than %d entries", d->name, MR_PLAN_MAX_STAGES);
            return at(r, item, "%s:%d:%d: %s", err);
        }
        r->p->parallel.layers_per_stage[count++] = (int)x;
    }
    r->p->parallel.n_layers_per_stage = count;
    return MR_OK;
}

static mr_status read_mapping(reader *r, yaml_node_t *map, const char *path) {
    char full[256], err[2560];
    for (yaml_node_pair_t *pr = map->data.mapping.pairs.start; pr < map->data.mapping.pairs.top; pr++) {
        yaml_node_t *kn = yaml_document_get_node(r->doc, pr->key);
        yaml_node_t *vn = yaml_document_get_node(r->doc, pr->value);
        if (!kn || !vn) return mr_error(MR_ERR_INTERNAL, "%s: libyaml returned a pair without nodes", r->origin);
        if (kn->type != YAML_SCALAR_NODE) {
            snprintf(err, sizeof err, "keys must be words, got %s", node_kind(kn));
            return at(r, kn, "%s:%d:%d: %s", err);
        }
        const char *name = (const char *)kn->data.scalar.value;
        /* Duplicates: YAML leaves them to the application; a second value
         * silently winning is the kind of mistake a plan should not hide. */
        for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < pr; q++) {
            yaml_node_t *prev = yaml_document_get_node(r->doc, q->key);
            if (prev && prev->type == YAML_SCALAR_NODE && !strcmp((const char *)prev->data.scalar.value, name)) {
                snprintf(err, sizeof err, "duplicate key \"%s\"%s%s (first at line %d)", name, *path ? " in " : "",
                         path, (int)prev->start_mark.line + 1);
                return at(r, kn, "%s:%d:%d: %s", err);
            }
        }
        snprintf(full, sizeof full, "%s%s%s", path, *path ? "." : "", name);
        if (strlen(name) < 64 && is_section(full)) {
            if (vn->type == YAML_SCALAR_NODE && !scalar_quoted(vn) && is_null_scalar((const char *)vn->data.scalar.value))
                continue; /* "comm:" with nothing under it */
            if (vn->type != YAML_MAPPING_NODE) {
                snprintf(err, sizeof err, "%s must be a mapping of keys, got %s", full, node_kind(vn));
                return at(r, vn, "%s:%d:%d: %s", err);
            }
            MR_CHECK(read_mapping(r, vn, full));
            continue;
        }
        int k = strlen(name) < 64 ? find_key(full) : -1;
        if (k < 0) {
            char hint[1100];
            suggest_child(name, path, hint, sizeof hint);
            snprintf(err, sizeof err, "unknown key \"%.64s\" %s%s%s", name, *path ? "in " : "at the top level",
                     path, hint);
            return at(r, kn, "%s:%d:%d: %s", err);
        }
        if (keys[k].type == T_INTLIST) {
            MR_CHECK(read_list(r, (mr_plan_key)k, vn));
        } else {
            if (vn->type != YAML_SCALAR_NODE) {
                snprintf(err, sizeof err, "%s must be a single value, got %s", keys[k].name, node_kind(vn));
                return at(r, vn, "%s:%d:%d: %s", err);
            }
            if (!set_scalar(r->p, (mr_plan_key)k, (const char *)vn->data.scalar.value, scalar_quoted(vn), err,
                            sizeof err))
                return at(r, vn, "%s:%d:%d: %s", err);
        }
        r->p->marks[k] = (mr_plan_mark){MR_PLAN_FROM_FILE, (int)vn->start_mark.line + 1,
                                        (int)vn->start_mark.column + 1};
    }
    return MR_OK;
}

static mr_status parser_error(const yaml_parser_t *ps, const char *origin) {
    const char *problem = ps->problem ? ps->problem : "unknown error";
    if (ps->error == YAML_READER_ERROR)
        return mr_error(MR_ERR_INPUT, "%s: byte %zu: %s (a plan must be UTF-8 text)", origin, ps->problem_offset,
                        problem);
    if (ps->error == YAML_MEMORY_ERROR) return mr_error(MR_ERR_NOMEM, "%s: out of memory parsing YAML", origin);
    char ctx[256] = "";
    if (ps->context)
        snprintf(ctx, sizeof ctx, " (%s at line %d, column %d)", ps->context, (int)ps->context_mark.line + 1,
                 (int)ps->context_mark.column + 1);
    return mr_error(MR_ERR_INPUT, "%s:%d:%d: YAML syntax error: %s%s", origin, (int)ps->problem_mark.line + 1,
                    (int)ps->problem_mark.column + 1, problem, ctx);
}

/* Load the one document of the stream and walk it. */
static mr_status read_stream(mr_plan *p, yaml_parser_t *ps, const char *origin) {
    yaml_document_t doc, extra;
    if (!yaml_parser_load(ps, &doc)) return parser_error(ps, origin);
    mr_status st = MR_OK;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root) {
        if (!yaml_parser_load(ps, &extra)) {
            st = parser_error(ps, origin);
        } else {
            yaml_node_t *second = yaml_document_get_root_node(&extra);
            if (second)
                st = mr_error(MR_ERR_INPUT, "%s:%d:%d: a plan file holds one YAML document, found a second", origin,
                              (int)second->start_mark.line + 1, (int)second->start_mark.column + 1);
            yaml_document_delete(&extra);
        }
    }
    if (st == MR_OK && root) {
        reader r = {.p = p, .doc = &doc, .origin = origin};
        if (root->type == YAML_SCALAR_NODE && !scalar_quoted(root) &&
            is_null_scalar((const char *)root->data.scalar.value)) {
            /* a file of comments only: every default */
        } else if (root->type != YAML_MAPPING_NODE) {
            st = mr_error(MR_ERR_INPUT, "%s:%d:%d: a plan must be a mapping (model: ..., parallel: ...), got %s",
                          origin, (int)root->start_mark.line + 1, (int)root->start_mark.column + 1, node_kind(root));
        } else {
            st = read_mapping(&r, root, "");
        }
    }
    yaml_document_delete(&doc);
    return st;
}

mr_status mr_plan_parse(mr_plan *p, const char *text, size_t len, const char *origin) {
    mr_plan_init(p);
    snprintf(p->origin, sizeof p->origin, "%s", origin);
    yaml_parser_t ps;
    if (!yaml_parser_initialize(&ps)) return mr_error(MR_ERR_NOMEM, "%s: cannot start the YAML parser", origin);
    yaml_parser_set_input_string(&ps, (const unsigned char *)text, len);
    mr_status st = read_stream(p, &ps, p->origin);
    yaml_parser_delete(&ps);
    return st;
}

mr_status mr_plan_load(mr_plan *p, const char *path) {
    mr_plan_init(p);
    snprintf(p->origin, sizeof p->origin, "%s", path);
    FILE *f = fopen(path, "rb");
    if (!f) return mr_error(MR_ERR_IO, "cannot open plan %s: %s", path, strerror(errno));
    yaml_parser_t ps;
    mr_status st;
    if (!yaml_parser_initialize(&ps)) {
        st = mr_error(MR_ERR_NOMEM, "%s: cannot start the YAML parser", path);
    } else {
        yaml_parser_set_input_file(&ps, f);
        st = read_stream(p, &ps, p->origin);
        yaml_parser_delete(&ps);
    }
    fclose(f);
    return st;
}

/* ---- printing ------------------------------------------------------------ */

static void print_path(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

/* Split a dotted parent path into its components; returns the count. */
static int split_path(const char *path, char parts[][32], int max) {
    int n = 0;
    while (*path && n < max) {
        size_t l = strcspn(path, ".");
        snprintf(parts[n++], 32, "%.*s", (int)l, path);
        path += l;
        if (*path == '.') path++;
    }
    return n;
}

void mr_plan_print(const mr_plan *p, int n_layers, FILE *f) {
    char prev[4][32];
    int n_prev = 0;
    for (int k = 0; k < MR_PLAN_KEY_COUNT; k++) {
        const keydef *d = &keys[k];
        /* Open the mappings of this key's parent that the previous key's
         * parent did not share. */
        const char *dot = strrchr(d->name, '.');
        char parent[128] = "", cur[4][32];
        if (dot) snprintf(parent, sizeof parent, "%.*s", (int)(dot - d->name), d->name);
        int n_cur = split_path(parent, cur, 4), same = 0;
        while (same < n_cur && same < n_prev && !strcmp(cur[same], prev[same])) same++;
        for (int i = same; i < n_cur; i++) fprintf(f, "%*s%s:\n", 2 * i, "", cur[i]);
        memcpy(prev, cur, sizeof cur);
        n_prev = n_cur;
        int depth = n_cur;
        const char *leaf = dot ? dot + 1 : d->name;
        fprintf(f, "%*s%s: ", 2 * depth, "", leaf);
        const void *v = field((mr_plan *)p, (mr_plan_key)k);
        switch (d->type) {
        case T_PATH: print_path(f, v); break;
        case T_INT:
            fprintf(f, "%d", k == MR_PLAN_KEY_MICRO_BATCHES ? mr_plan_micro_batches(p) : *(const int *)v);
            break;
        case T_U64: fprintf(f, "%llu", (unsigned long long)*(const uint64_t *)v); break;
        case T_FLOAT: fprintf(f, "%g", (double)*(const float *)v); break;
        case T_BOOL: fputs(*(const int *)v ? "true" : "false", f); break;
        case T_ENUM: fputs(d->values[*(const int *)v], f); break;
        case T_INTLIST: {
            int np = p->parallel.pipeline;
            if (p->parallel.n_layers_per_stage == 0 && n_layers <= 0) {
                fputs("[]  # even split", f);
                break;
            }
            fputc('[', f);
            for (int s = 0; s < np && s < MR_PLAN_MAX_STAGES; s++) {
                int first, count;
                mr_plan_stage_layers(p, n_layers, s, &first, &count);
                fprintf(f, "%s%d", s ? ", " : "", count);
            }
            fputc(']', f);
            break;
        }
        }
        fputc('\n', f);
    }
}
