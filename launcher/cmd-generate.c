/* moerun generate: read requests, run them with continuous batching over the
 * ranks the plan lays out, write one result line per input line (world
 * rank 0 appends each line as its request ends, the other replicas send
 * theirs to it; a finished job's output is in input order).  The output is
 * resumable (runtime/output.h) and the job stops cleanly on SIGTERM or
 * SIGUSR1 (generate-job.h).
 *
 * Order of work, so that bad input costs nothing: options and plan ->
 * model config -> plan check against model and world -> input file ->
 * output file -> communicators -> weights -> generation.  Failures that
 * every rank sees alike exit cleanly with status 2 (rank 0 prints);
 * failures of one rank abort the whole job with that rank's message. */
#define _GNU_SOURCE
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "launcher/commands.h"
#include "launcher/generate-device.h"
#include "launcher/generate-job.h"
#include "runtime/allreduce.h"
#include "runtime/comm.h"
#include "runtime/engine.h"
#include "runtime/model.h"
#include "runtime/output.h"
#include "runtime/plan.h"
#include "runtime/requests.h"
#include "runtime/sha256.h"
#include "runtime/tokenizer-model.h"
#include "topology/topology.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: [mpirun -np N] moerun generate [--plan PLAN.yaml] --model PATH --input IN.jsonl --output OUT.jsonl\n"
            "                      [options]\n"
            "\n"
            "Runs every request of IN.jsonl and writes one JSON line per input line to OUT.jsonl.\n"
            "Input lines, either\n"
            "  {\"id\": ..., \"prompt\": \"text\" | \"tokens\": [ids], \"max_tokens\": N, \"temperature\": T,\n"
            "   \"top_p\": P, \"top_k\": K, \"seed\": S, \"stop\": \"s\" | [\"s\", ...], \"stop_token_ids\": [...],\n"
            "   \"ignore_eos\": bool}\n"
            "answered as {\"id\", \"text\", \"tokens\", \"finish_reason\": \"stop\"|\"length\", \"usage\"}, or\n"
            "OpenAI batch lines, as vLLM run-batch takes them:\n"
            "  {\"custom_id\": ..., \"method\": \"POST\", \"url\": \"/v1/completions\",\n"
            "   \"body\": {\"model\", \"prompt\", \"max_tokens\", \"temperature\", \"top_p\", \"seed\", \"stop\", ...}}\n"
            "answered as {\"id\", \"custom_id\", \"response\": {\"status_code\", \"request_id\", \"body\":\n"
            "{completion with choices[0].text, finish_reason, usage}}, \"error\": null}.  Text prompts\n"
            "and stop strings need a tokenizer; BOS is added where the tokenizer says so.  Generation\n"
            "stops at EOS, a stop token or a stop string (the text is cut before it).  A bad line\n"
            "(not JSON, missing or wrong field, token outside the vocabulary, prompt longer than the\n"
            "context, unsupported url) gets an error record \"IN.jsonl:LINE: why\" and the job goes on.\n"
            "Options override the plan file.\n"
            "\n"
            "plan and model:\n"
            "  --plan PATH            YAML plan (see configs/); without one, a one-rank plan\n"
            "  --set KEY=VALUE        override a plan key, e.g. --set parallel.tensor=2\n"
            "  --data N, --tensor N, --pipeline N, --expert N, --micro-batches N\n"
            "                         parallel sizes (shortcuts for --set parallel.*)\n"
            "  --model PATH           Hugging Face checkpoint folder (config.json + *.safetensors) or .gguf\n"
            "  --tokenizer PATH       tokenizer.json or .gguf to use (default: MODEL/tokenizer.json if\n"
            "                         present, or the GGUF's tokenizer.ggml.* metadata; without one only\n"
            "                         \"tokens\" requests run)\n"
            "  --synthetic-weights    random weights from config.json alone (benchmarks)\n"
            "  --weights-seed N       seed of the synthetic weights (default 1)\n"
            "batching:\n"
            "  --max-batch N          sequences decoded together per replica (default 32)\n"
            "  --token-budget N       tokens per forward step, prefill chunks included (default 512)\n"
            "  --max-context N        positions per sequence (default: the model's, at most 4096)\n"
            "  --threads N            CPU threads per rank (default: the cores this rank is bound to)\n"
            "placement (plan keys, see `moerun topo --help`): each rank is bound next to its GPU or to\n"
            "  its share of the node (--set topology.bind=auto|force|none), ranks are renumbered so that\n"
            "  tensor groups sit inside nodes (a warning, or an error with --set topology.strict=true)\n"
            "device (plan key runtime.device, or MR_DEVICE in the environment; the command line wins):\n"
            "  --set runtime.device=auto|cpu|cuda  auto (default): cuda when this moerun has CUDA and every\n"
            "                         rank sees a GPU, else cpu; cuda without one is an error (exit 2).\n"
            "                         Each rank takes its placement's GPU (by PCI bus id), else local rank\n"
            "                         mod the visible GPUs (CUDA_VISIBLE_DEVICES); tensor and expert groups\n"
            "                         use NCCL when every rank has its own GPU (comm.backend=auto|nccl|mpi)\n"
            "  --set runtime.weights=auto|fp32|bf16  storage of the weight matrices (MR_WEIGHTS in the\n"
            "                         environment); auto (default): bf16 on a GPU, fp32 on CPUs.  bf16\n"
            "                         halves their memory; embeddings, norms and MoE routers stay fp32\n"
            "  --set comm.deterministic=true  (or MR_DETERMINISTIC=true) the same bits for every plan (tensor\n"
            "                         sizes up to 8), batch size and thread count: fixed-order products,\n"
            "                         block sums all-gathered instead of the tensor all-reduce; CPU\n"
            "                         and CUDA backends, slower (bench/results/deterministic-*)\n"
            "request defaults (a request's own fields win):\n"
            "  --max-tokens N         tokens to generate (default 128)\n"
            "  --temperature T        0 = greedy (default 0)\n"
            "  --top-p P              nucleus sampling (default 1 = off)\n"
            "  --top-k K              (default 0 = off)\n"
            "  --seed S               sampling seed (default 0)\n"
            "  --ignore-eos           do not stop at the model's EOS tokens\n"
            "output (resumable):\n"
            "  --output PATH          results (required).  Lines are appended as requests end, each\n"
            "                         whole; when every request is answered the file is rewritten in\n"
            "                         input order.  Beside it: PATH.manifest.json (input SHA-256, model\n"
            "                         fingerprint, generation settings, state) and PATH.journal (one\n"
            "                         record per line).  If PATH exists with a manifest, the job\n"
            "                         RESUMES: answered requests are skipped, a partial last line is cut,\n"
            "                         and it is refused (exit 2, naming each difference) when the input,\n"
            "                         model, tokenizer or a generation setting changed.  The plan's\n"
            "                         parallel sizes, batch and budget may change.  A PATH without a\n"
            "                         manifest is refused unless --overwrite.\n"
            "  --resume               insist on resuming: exit 2 if PATH has no manifest\n"
            "  --overwrite            start over: replace PATH and its manifest\n"
            "  --fsync-interval S     fsync the output every S seconds (default 10; 0 = every line)\n"
            "  --progress-interval S  progress line every S seconds when stderr is not a terminal\n"
            "                         (default 10, 0 = none; on a terminal it refreshes in place)\n"
            "  --stop-grace S         after SIGTERM/SIGUSR1, running requests may finish for S seconds\n"
            "                         (default 5); then they are abandoned (answered on resume)\n"
            "  --quiet                no progress or summary on stderr\n"
            "  -h, --help             this text\n"
            "\n"
            "Signals: SIGTERM, SIGUSR1 or SIGINT to any rank stops the whole job: no new requests,\n"
            "running ones finish within --stop-grace (a second signal abandons them at once), lines\n"
            "are flushed and the manifest says \"stopped\"; every rank exits 75 within about\n"
            "stop-grace + one step.  Under Open MPI send SIGUSR1 to mpirun (it forwards it); a SIGTERM\n"
            "to mpirun gives the ranks only odls_base_sigkill_timeout (1 s) before SIGKILL.\n"
            "\n"
            "Exit status: 0 when every request is answered and at least one line was answered\n"
            "without error (other lines may hold error records; also when there was nothing left to\n"
            "do); 75 (EX_TEMPFAIL) stopped by a signal with requests left: run the same command again\n"
            "to resume; 2 bad plan, options, model, tokenizer, a resume refused, or every line got an\n"
            "error record (the output is still written); 1 internal failure.  Every rank exits\n"
            "non-zero when one fails.\n");
}

enum {
    OPT_PLAN = 256, OPT_SET, OPT_DATA, OPT_TENSOR, OPT_PIPELINE, OPT_EXPERT, OPT_MICRO, OPT_MODEL, OPT_INPUT,
    OPT_OUTPUT, OPT_SYNTH, OPT_WSEED, OPT_BATCH, OPT_BUDGET, OPT_CTX, OPT_THREADS, OPT_MAXTOK, OPT_TEMP, OPT_TOPP,
    OPT_TOPK, OPT_SEED, OPT_IGNORE_EOS, OPT_OVERWRITE, OPT_QUIET, OPT_TOKENIZER, OPT_RESUME, OPT_FSYNC,
    OPT_PROGRESS, OPT_GRACE,
};

/* Options that are plan keys, by option id. */
static const char *plan_key_of(int opt) {
    switch (opt) {
    case OPT_DATA: return "parallel.data";
    case OPT_TENSOR: return "parallel.tensor";
    case OPT_PIPELINE: return "parallel.pipeline";
    case OPT_EXPERT: return "parallel.expert";
    case OPT_MICRO: return "parallel.micro_batches";
    case OPT_MODEL: return "model";
    case OPT_INPUT: return "input";
    case OPT_OUTPUT: return "output";
    case OPT_BATCH: return "generation.max_batch";
    case OPT_BUDGET: return "generation.token_budget";
    case OPT_CTX: return "generation.max_context";
    case OPT_THREADS: return "runtime.threads";
    case OPT_MAXTOK: return "generation.max_tokens";
    case OPT_TEMP: return "generation.temperature";
    case OPT_TOPP: return "generation.top_p";
    case OPT_TOPK: return "generation.top_k";
    case OPT_SEED: return "generation.seed";
    case OPT_FSYNC: return "runtime.fsync_interval";
    case OPT_PROGRESS: return "runtime.progress_interval";
    case OPT_GRACE: return "runtime.stop_grace";
    default: return NULL;
    }
}

typedef struct job {
    mr_comm *world, *tp, *pipe, *ep, *lock, *sched;
    /* The model's tensor and expert communicators: NCCL ones on GPUs when
     * usable (owned here, over tp and ep, which must outlive them), else
     * tp and ep themselves. */
    mr_comm *tp_dev, *ep_dev;
    int tp_nccl, ep_nccl;
    mr_comm *mpi_world; /* MPI's numbering, when world is renumbered for the topology */
    mr_plan plan;
    mr_rank_coords me;
    int reporter; /* stage 0, tensor 0: this rank reports its replica's results */
    mr_output *out;  /* rank 0 */
    mr_gen *gen;     /* stop signals, lines to rank 0, progress */
    mr_format_info info;
} job;

typedef struct plan_set {
    const char *key;
    char *val;
} plan_set;

/* topology.export_nic must act before MPI_Init, where MPI's UCX picks its
 * devices: read the plan quietly here (it is read and checked for real
 * after MPI_Init, where errors are reported). */
static void export_nic_early(const char *plan_path, const plan_set *sets, int n_sets, char *what, size_t n) {
    mr_plan *p = malloc(sizeof *p);
    if (!p) return;
    mr_plan_init(p);
    int ok = !plan_path || mr_plan_load(p, plan_path) == MR_OK;
    for (int i = 0; ok && i < n_sets; i++) ok = mr_plan_set(p, sets[i].key, sets[i].val) == MR_OK;
    if (ok && p->topology.export_nic) mr_topo_export_nic_early(p->topology.gpu, what, n);
    mr_clear_error();
    free(p);
}

/* Discover the nodes, place the plan's ranks (renumbering the world so
 * that each node holds neighbouring plan ranks), bind this rank, report. */
static mr_status place_ranks(job *j, mr_topo_job *topo, int quiet, const char *early_nic) {
    MR_CHECK(mr_topo_job_setup(j->world, &j->plan, topo));
    if (topo->pl.reordered) {
        j->mpi_world = j->world;
        j->world = NULL;
        MR_CHECK(mr_comm_mpi_split(j->mpi_world, 0, topo->plan_rank, &j->world));
        mr_log_set_rank(j->world->rank, j->world->size);
    }
    const mr_topo_slot *sl = &topo->pl.slots[topo->plan_rank];
    const mr_topo_node *node = &topo->topo.nodes[topo->topo.ranks[sl->world_rank].node];
    char line[2048];
    if (j->world->rank == 0) {
        if (!quiet) {
            mr_topo_summary(&topo->topo, &topo->pl, line, sizeof line);
            MR_INFO("%s", line);
        }
        if (topo->pl.warning[0]) MR_WARN("%s", topo->pl.warning);
    }
    size_t o;
    if (topo->bound.applied) {
        o = (size_t)snprintf(line, sizeof line, "rank %d bound to CPUs %s (%d core%s%s)", j->world->rank,
                             topo->bound.cpus, sl->cores, sl->cores == 1 ? "" : "s",
                             sl->shared > 1 ? ", shared with other ranks" : "");
        if (sl->numa >= 0 && topo->bound.mem_bound)
            snprintf(line + o, sizeof line - o, ", memory on NUMA node %d", node->numa[sl->numa].os_index);
    } else {
        snprintf(line, sizeof line, "rank %d not bound by moerun (%s), CPUs %s", j->world->rank, topo->bound.why,
                 topo->bound.cpus);
    }
    if (sl->gpu >= 0) {
        o = strlen(line);
        snprintf(line + o, sizeof line - o, "; GPU %s (%s)", node->gpus[sl->gpu].name, node->gpus[sl->gpu].busid);
    }
    if (early_nic[0] || topo->nic_env[0]) {
        o = strlen(line);
        snprintf(line + o, sizeof line - o, "; %s%s%s", early_nic, early_nic[0] && topo->nic_env[0] ? " " : "",
                 topo->nic_env);
    }
    if (j->world->rank == 0 && !quiet)
        MR_INFO("%s", line);
    else
        MR_DEBUG("%s", line);
    return MR_OK;
}

/* What a resume must match (input, model, tokenizer, settings that change
 * answers) and what it may change (paths, plan sizes, batching). */
static mr_status build_manifest(mr_manifest *m, const job *j, int n_all, const char *tok_path, int ignore_eos,
                                int synthetic, long wseed) {
    const mr_plan *p = &j->plan;
    char v[128], hex[65];
    MR_CHECK(mr_sha256_file(p->input, hex));
    MR_CHECK(mr_manifest_set(m, "input.sha256", hex, 1));
    snprintf(v, sizeof v, "%d", n_all);
    MR_CHECK(mr_manifest_set(m, "input.requests", v, 1));
    MR_CHECK(mr_fingerprint_model(p->model, hex));
    MR_CHECK(mr_manifest_set(m, "model.fingerprint", hex, 1));
    if (synthetic) snprintf(v, sizeof v, "synthetic, seed %ld", wseed);
    else snprintf(v, sizeof v, "checkpoint");
    MR_CHECK(mr_manifest_set(m, "model.weights", v, 1));
    if (tok_path) MR_CHECK(mr_sha256_file(tok_path, hex));
    else snprintf(hex, sizeof hex, "(the model's)");
    MR_CHECK(mr_manifest_set(m, "tokenizer.sha256", hex, 1));
    const struct { const char *key; int x; } ints[] = {
        {"generation.max_tokens", p->generation.max_tokens},
        {"generation.top_k", p->generation.top_k},
        {"generation.max_context", p->generation.max_context},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        snprintf(v, sizeof v, "%d", ints[i].x);
        MR_CHECK(mr_manifest_set(m, ints[i].key, v, 1));
    }
    const struct { const char *key; float x; } num[] = {
        {"generation.temperature", p->generation.temperature},
        {"generation.top_p", p->generation.top_p},
    };
    for (size_t i = 0; i < sizeof num / sizeof num[0]; i++) {
        /* the shortest text that reads back as the same float: 0.7, not 0.699999988 */
        for (int digits = 6; digits <= 9; digits++) {
            snprintf(v, sizeof v, "%.*g", digits, (double)num[i].x);
            if (strtof(v, NULL) == num[i].x) break;
        }
        MR_CHECK(mr_manifest_set(m, num[i].key, v, 1));
    }
    snprintf(v, sizeof v, "%llu", (unsigned long long)p->generation.seed);
    MR_CHECK(mr_manifest_set(m, "generation.seed", v, 1));
    MR_CHECK(mr_manifest_set(m, "generation.ignore_eos", ignore_eos ? "true" : "false", 1));
    /* compressed tensor all-reduce changes logits */
    MR_CHECK(mr_manifest_set(m, "comm.allreduce.compression", mr_compression_name(p->comm.allreduce.compression), 1));
    if (p->comm.allreduce.compression != MR_COMPRESS_NONE) {
        snprintf(v, sizeof v, "%d, tensor %d", p->comm.allreduce.block, p->parallel.tensor);
        MR_CHECK(mr_manifest_set(m, "comm.allreduce.block", v, 1));
    }
    MR_CHECK(mr_manifest_set(m, "input.path", p->input, 0));
    MR_CHECK(mr_manifest_set(m, "model.path", p->model, 0));
    const struct { const char *key; int x; } info[] = {
        {"parallel.data", p->parallel.data},          {"parallel.tensor", p->parallel.tensor},
        {"parallel.pipeline", p->parallel.pipeline},  {"parallel.expert", p->parallel.expert},
        {"generation.max_batch", p->generation.max_batch}, {"generation.token_budget", p->generation.token_budget},
    };
    for (size_t i = 0; i < sizeof info / sizeof info[0]; i++) {
        snprintf(v, sizeof v, "%d", info[i].x);
        MR_CHECK(mr_manifest_set(m, info[i].key, v, 0));
    }
    return MR_OK;
}

/* Rank 0 opens (or resumes) the output; every rank learns which requests
 * are answered already and the job's time stamp, and drops those requests
 * (*n keeps the rest, in input order). */
static mr_status open_output(job *j, mr_request *all, int *n, int *n_done) {
    mr_comm *w = j->world;
    long long hdr[2] = {0, 0}; /* created, answered before */
    uint8_t *done = calloc((size_t)(*n ? *n : 1), 1);
    if (!done) return mr_error(MR_ERR_NOMEM, "out of memory");
    if (w->rank == 0) {
        hdr[0] = mr_output_created(j->out);
        hdr[1] = mr_output_n_done(j->out);
        memcpy(done, mr_output_done(j->out), (size_t)*n);
    }
    mr_status st = w->ops->bcast(w, hdr, sizeof hdr, 0);
    if (st == MR_OK && hdr[1] > 0) st = w->ops->bcast(w, done, (size_t)*n, 0);
    if (st == MR_OK) {
        int k = 0;
        for (int i = 0; i < *n; i++) {
            if (done[i]) mr_request_clear(&all[i]);
            else all[k++] = all[i];
        }
        *n_done = *n - k;
        *n = k;
        j->info.created = hdr[0];
        if (j->out) mr_output_set_info(j->out, &j->info);
    }
    free(done);
    return st;
}

/* Communicators of the stop protocol: the first-stage ranks scheduling
 * one replica agree on stopping (with tensor > 1; lockstep replicas use
 * their own group). */
static mr_status make_control_groups(job *j) {
    if (j->plan.parallel.tensor == 1) return MR_OK;
    return mr_comm_mpi_split(j->world, j->me.pipe_i * j->plan.parallel.data + j->me.data_i, j->world->rank, &j->sched);
}

/* Stop signals, result lines to rank 0, progress (generate-job.h). */
static mr_status start_job_control(job *j, int n_total, int quiet) {
    mr_comm *w = j->world;
    int *first = malloc(sizeof(int) * (size_t)w->size), n_first = 0;
    if (!first) return mr_error(MR_ERR_NOMEM, "out of memory");
    for (int r = 0; r < w->size; r++)
        if (mr_plan_coords(&j->plan, r).pipe_i == 0) first[n_first++] = r;
    mr_gen_options go = {.world = w, .reporter = j->reporter, .first_stage = j->me.pipe_i == 0,
                         .first_ranks = first, .n_first = n_first, .n_replicas = j->plan.parallel.data,
                         .out = j->out, .info = &j->info, .total = n_total,
                         .stop_grace = j->plan.runtime.stop_grace,
                         .progress_interval = j->plan.runtime.progress_interval, .quiet = quiet};
    mr_status st = mr_gen_create(&j->gen, &go);
    free(first); /* mr_gen_create keeps what it needs */
    return st;
}

static double comm_seconds(const job *j) {
    const mr_comm *c[] = {j->world, j->tp, j->pipe, j->ep, j->lock, j->sched};
    double s = 0;
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) s += c[i] ? c[i]->busy_s : 0;
    if (j->tp_nccl) s += j->tp_dev->busy_s;
    if (j->ep_nccl) s += j->ep_dev->busy_s;
    return s;
}

/* Rank 0 closes the output (in input order once complete); every rank
 * learns how the job ended and takes the same exit status.  Collective. */
static mr_status close_output(job *j, int n_total, int n_before, int stopped, int *exit_code) {
    mr_comm *w = j->world;
    int v[4] = {0, 0, stopped || mr_gen_signals() > 0, 0}; /* incomplete, answered any, stopped, failed */
    int lines = 0;
    if (w->rank == 0) {
        int complete = 0;
        lines = mr_output_n_done(j->out);
        v[1] = mr_output_answered(j->out) > 0;
        if (mr_output_close(j->out, &complete) != MR_OK) {
            MR_ERRORF("%s", mr_last_error());
            v[3] = 1;
        }
        j->out = NULL;
        v[0] = !complete;
    }
    MR_CHECK(w->ops->allreduce_max_i32(w, v, 4));
    *exit_code = 0;
    if (v[3]) {
        *exit_code = 1;
    } else if (v[0]) {
        *exit_code = v[2] ? MR_EXIT_STOPPED : 1;
        if (w->rank == 0 && v[2])
            MR_WARN("stopped with %d of %d requests answered in %s; run the same command again to resume (exit "
                    "status %d)", lines, n_total, j->plan.output, MR_EXIT_STOPPED);
        else if (w->rank == 0)
            MR_ERRORF("internal: %d of %d requests left unanswered", n_total - lines, n_total);
    } else if (n_total > 0 && !v[1]) {
        *exit_code = 2;
        if (w->rank == 0) MR_ERRORF("every line of %s got an error record (see %s)", j->plan.input, j->plan.output);
    } else if (w->rank == 0 && n_total > 0 && n_before == n_total) {
        MR_INFO("%s: all %d requests were answered before; nothing to do", j->plan.output, n_total);
    }
    return MR_OK;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Deal requests to replicas, largest expected work first, each to the
 * least loaded replica (ties: lowest index) — the same on every rank. */
static int cmp_work(const void *a, const void *b, void *arg) {
    const mr_request *r = arg;
    int x = *(const int *)a, y = *(const int *)b;
    long wx = (long)r[x].n_prompt + r[x].max_tokens, wy = (long)r[y].n_prompt + r[y].max_tokens;
    return wx > wy ? -1 : wx < wy ? 1 : x - y;
}

static mr_status share_requests(mr_request *all, int n, int replicas, int me, mr_request **mine, int *n_mine) {
    int *order = malloc(sizeof(int) * (size_t)(n ? n : 1));
    long *load = calloc((size_t)replicas, sizeof(long));
    int *owner = malloc(sizeof(int) * (size_t)(n ? n : 1));
    *mine = calloc((size_t)(n ? n : 1), sizeof(mr_request));
    if (!order || !load || !owner || !*mine) {
        free(order), free(load), free(owner);
        return mr_error(MR_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < n; i++) order[i] = i;
    qsort_r(order, (size_t)n, sizeof(int), cmp_work, all);
    for (int k = 0; k < n; k++) {
        int best = 0;
        for (int d = 1; d < replicas; d++)
            if (load[d] < load[best]) best = d;
        owner[order[k]] = best;
        load[best] += (long)all[order[k]].n_prompt + all[order[k]].max_tokens;
    }
    *n_mine = 0;
    for (int i = 0; i < n; i++) /* input order within a replica */
        if (owner[i] == me) {
            (*mine)[(*n_mine)++] = all[i];
            memset(&all[i], 0, sizeof all[i]);
        }
    free(order);
    free(load);
    free(owner);
    return MR_OK;
}

static mr_status make_groups(job *j) {
    mr_comm *w = j->world;
    const mr_plan *p = &j->plan;
    int members[4096];
    if (mr_plan_group_size(p, MR_GROUP_TENSOR) > 4096) return mr_error(MR_ERR_UNSUPPORTED, "group too large");
    mr_comm **dst[3] = {&j->tp, &j->pipe, &j->ep};
    mr_group_kind kinds[3] = {MR_GROUP_TENSOR, MR_GROUP_PIPELINE, MR_GROUP_EXPERT};
    for (int k = 0; k < 3; k++) {
        mr_plan_group(p, kinds[k], w->rank, members);
        MR_CHECK(mr_comm_mpi_split(w, members[0], w->rank, dst[k]));
    }
    /* Replicas whose expert exchanges must line up tick together. */
    if (p->parallel.expert > 1 && p->parallel.data > 1) MR_CHECK(mr_comm_mpi_split(w, j->me.pipe_i, w->rank, &j->lock));
    return MR_OK;
}

/* Collective; the imbalance (max/mean routed tokens per expert) on rank 0,
 * 0 for a dense model. */
static double report_experts(job *j, mr_model *m, int quiet) {
    const mr_model_config *c = mr_model_get_config(m);
    if (!c->n_experts) return 0;
    int n_local, first;
    const uint64_t *cnt = mr_model_expert_tokens(m, &n_local, &first);
    float *all = calloc((size_t)c->n_experts, sizeof(float));
    double imbalance = 0;
    if (!all) return 0;
    for (int e = 0; e < n_local; e++) all[first + e] = (float)cnt[e];
    /* ep == 1: every tensor rank of a replica routes the same tokens */
    float scale = j->plan.parallel.expert > 1 ? 1.0f : 1.0f / (float)j->plan.parallel.tensor;
    for (int e = 0; e < c->n_experts; e++) all[e] *= scale;
    mr_comm *w = j->world;
    if (w->ops->allreduce_sum_f32(w, all, (size_t)c->n_experts) == MR_OK && w->rank == 0) {
        double sum = 0, mx = 0;
        char buf[4096];
        int off = 0;
        for (int e = 0; e < c->n_experts; e++) {
            sum += all[e];
            if (all[e] > mx) mx = all[e];
            if (off < (int)sizeof buf - 32) off += snprintf(buf + off, sizeof buf - (size_t)off, " %.0f", all[e]);
        }
        double mean = sum / c->n_experts;
        imbalance = mean > 0 ? mx / mean : 0.0;
        if (!quiet) MR_INFO("routed tokens per expert (all MoE layers):%s; imbalance max/mean %.2f", buf, imbalance);
    }
    free(all);
    return imbalance;
}

int mr_cmd_generate(int argc, char **argv) {
    static const struct option longopts[] = {
        {"plan", 1, 0, OPT_PLAN},           {"set", 1, 0, OPT_SET},          {"data", 1, 0, OPT_DATA},
        {"tensor", 1, 0, OPT_TENSOR},       {"pipeline", 1, 0, OPT_PIPELINE}, {"expert", 1, 0, OPT_EXPERT},
        {"micro-batches", 1, 0, OPT_MICRO}, {"model", 1, 0, OPT_MODEL},      {"input", 1, 0, OPT_INPUT},
        {"output", 1, 0, OPT_OUTPUT},       {"synthetic-weights", 0, 0, OPT_SYNTH},
        {"weights-seed", 1, 0, OPT_WSEED},  {"max-batch", 1, 0, OPT_BATCH},  {"token-budget", 1, 0, OPT_BUDGET},
        {"max-context", 1, 0, OPT_CTX},     {"threads", 1, 0, OPT_THREADS},  {"max-tokens", 1, 0, OPT_MAXTOK},
        {"temperature", 1, 0, OPT_TEMP},    {"top-p", 1, 0, OPT_TOPP},       {"top-k", 1, 0, OPT_TOPK},
        {"seed", 1, 0, OPT_SEED},           {"ignore-eos", 0, 0, OPT_IGNORE_EOS},
        {"overwrite", 0, 0, OPT_OVERWRITE}, {"quiet", 0, 0, OPT_QUIET},      {"help", 0, 0, 'h'},
        {"tokenizer", 1, 0, OPT_TOKENIZER}, {"resume", 0, 0, OPT_RESUME},
        {"fsync-interval", 1, 0, OPT_FSYNC}, {"progress-interval", 1, 0, OPT_PROGRESS},
        {"stop-grace", 1, 0, OPT_GRACE},
        {0, 0, 0, 0},
    };
    const char *plan_path = NULL, *tok_path = NULL;
    plan_set sets[128];
    int n_sets = 0, synthetic = 0, overwrite = 0, resume = 0, quiet = 0, ignore_eos = 0, c;
    double t_start = now_s();
    long wseed = 1;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (n_sets == 128) { fprintf(stderr, "moerun generate: too many options\n"); return 2; }
        switch (c) {
        case OPT_PLAN: plan_path = optarg; break;
        case OPT_SET: {
            char *eq = strchr(optarg, '=');
            if (!eq) { fprintf(stderr, "moerun generate: --set takes KEY=VALUE (got '%s')\n", optarg); return 2; }
            *eq = 0;
            sets[n_sets].key = optarg;
            sets[n_sets++].val = eq + 1;
            break;
        }
        case OPT_SYNTH: synthetic = 1; break;
        case OPT_TOKENIZER: tok_path = optarg; break;
        case OPT_WSEED: {
            char *end;
            wseed = strtol(optarg, &end, 10);
            if (*end || wseed < 0) { fprintf(stderr, "moerun generate: --weights-seed needs an integer >= 0\n"); return 2; }
            break;
        }
        case OPT_IGNORE_EOS: ignore_eos = 1; break;
        case OPT_OVERWRITE: overwrite = 1; break;
        case OPT_RESUME: resume = 1; break;
        case OPT_QUIET: quiet = 1; break;
        case 'h': usage(stdout); return 0;
        default:
            if (plan_key_of(c)) {
                sets[n_sets].key = plan_key_of(c);
                sets[n_sets++].val = optarg;
                break;
            }
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "moerun generate: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }

    job j = {0};
    mr_status st = MR_OK;
    int fatal_local = 0; /* a failure only this rank may see: abort the job */
    mr_backend be = {0};
    mr_model *m = NULL;
    mr_allreduce *tp_ar = NULL, *tp_ar_dev = NULL;
    mr_tokenizer *tok = NULL;
    mr_request *all = NULL, *mine = NULL;
    int n_all = 0, n_mine = 0;
    mr_model_config cfg;
    int have_cfg = 0;
    mr_manifest *manifest = NULL;
    mr_engine_stats stats = {0};
    int n_total = 0, n_before = 0, exit_code = 0;
    mr_topo_job topo = {0};
    mr_gen_device dev = {.kind = MR_DEVICE_CPU, .device = -1};
    char early_nic[256] = "";
    export_nic_early(plan_path, sets, n_sets, early_nic, sizeof early_nic);
    MR_CHECK_GOTO(mr_comm_mpi_init(&argc, &argv, &j.world), st, fail);
    mr_log_set_rank(j.world->rank, j.world->size);
    mr_gen_signals_install();

    /* ---- everything every rank checks alike ---- */
    mr_plan_init(&j.plan);
    if (plan_path) MR_CHECK_GOTO(mr_plan_load(&j.plan, plan_path), st, fail);
    MR_CHECK_GOTO(mr_plan_env(&j.plan), st, fail);
    for (int i = 0; i < n_sets; i++) MR_CHECK_GOTO(mr_plan_set(&j.plan, sets[i].key, sets[i].val), st, fail);
    if (!j.plan.model[0] || !j.plan.input[0] || !j.plan.output[0]) {
        st = mr_error(MR_ERR_INPUT, "--model, --input and --output are required (or model/input/output in the plan)");
        goto fail;
    }
    MR_CHECK_GOTO(mr_plan_load_model_config(&cfg, j.plan.model), st, fail);
    have_cfg = 1;
    MR_CHECK_GOTO(mr_plan_check(&j.plan, &cfg, j.world->size), st, fail);
    MR_CHECK_GOTO(place_ranks(&j, &topo, quiet, early_nic), st, fail);
    MR_CHECK_GOTO(mr_gen_device_choose(j.world, &j.plan, &topo, quiet, &dev), st, fail);
    mr_allreduce_opts aro;
    mr_allreduce_opts_from_plan(&aro, &j.plan);
    MR_CHECK_GOTO(mr_allreduce_opts_from_env(&aro), st, fail);
    if (j.plan.comm.deterministic && aro.compression != MR_COMPRESS_NONE) {
        st = mr_error(MR_ERR_INPUT, "comm.deterministic is on and the tensor all-reduce compresses (%s): compressed "
                      "sums are not exact; set comm.allreduce.compression: none (or turn comm.deterministic off)",
                      mr_compression_name(aro.compression));
        goto fail;
    }
    j.me = mr_plan_coords(&j.plan, j.world->rank);
    j.reporter = j.me.pipe_i == 0 && j.me.tensor_i == 0;
    mr_request_defaults d = {
        .max_tokens = j.plan.generation.max_tokens,
        .sample = {.temperature = j.plan.generation.temperature, .top_p = j.plan.generation.top_p,
                   .top_k = j.plan.generation.top_k, .seed = j.plan.generation.seed},
        .ignore_eos = ignore_eos,
    };
    MR_CHECK_GOTO(mr_tokenizer_load_for_model(&tok, j.plan.model, tok_path), st, fail);
    d.tok = tok;
    MR_CHECK_GOTO(mr_requests_read(j.plan.input, &d, &all, &n_all), st, fail);
    n_total = n_all;
    j.info = (mr_format_info){.input = j.plan.input, .model = j.plan.model};
    if (j.world->rank == 0) {
        manifest = mr_manifest_create();
        st = manifest ? build_manifest(manifest, &j, n_all, tok_path, ignore_eos, synthetic, wseed)
                      : mr_error(MR_ERR_NOMEM, "out of memory");
        mr_output_options oo = {.path = j.plan.output, .n_requests = n_all, .overwrite = overwrite,
                                .require_resume = resume, .fsync_interval = j.plan.runtime.fsync_interval,
                                .created = (long long)time(NULL), .manifest = manifest};
        if (st == MR_OK) st = mr_output_open(&j.out, &oo);
        if (st != MR_OK) MR_ERRORF("%s", mr_last_error());
    }
    int early[2] = {st != MR_OK, mr_gen_signals() > 0}; /* refused; stopped before loading */
    MR_CHECK_GOTO(j.world->ops->allreduce_max_i32(j.world, early, 2), st, fail);
    if (early[0]) { st = st != MR_OK ? st : MR_ERR_INPUT; goto quiet_fail; }
    MR_CHECK_GOTO(open_output(&j, all, &n_all, &n_before), st, fail);
    if (n_all == 0 || early[1]) goto finish; /* nothing left: no weights to load */

    /* ---- from here a failure may be one rank's alone ---- */
    fatal_local = 1;
    MR_CHECK_GOTO(make_groups(&j), st, fail);
    MR_CHECK_GOTO(make_control_groups(&j), st, fail);
    if (j.tp) {
        MR_CHECK_GOTO(mr_allreduce_create(j.tp, &aro, &tp_ar), st, fail);
        if (j.world->rank == 0 && !quiet) {
            char what[256];
            mr_allreduce_describe(tp_ar, what, sizeof what);
            MR_INFO("tensor all-reduce: %s", what);
        }
    }
    int threads = j.plan.runtime.threads ? j.plan.runtime.threads : topo.threads;
    MR_CHECK_GOTO(mr_gen_backend_init(&be, &dev, threads), st, fail);
    /* The all-reduce engine on the MPI tensor group (tp_ar, host buffers:
     * the model stages through the host for it), and with NCCL a second
     * one on device buffers (tp_ar_dev), which the model then uses. */
    MR_CHECK_GOTO(mr_gen_device_comm(j.tp, &dev, &j.plan, &be, "tensor", j.world->rank == 0 && !quiet, &j.tp_dev,
                                     &j.tp_nccl), st, fail);
    MR_CHECK_GOTO(mr_gen_device_allreduce(j.tp, &dev, &be, &aro, j.tp_nccl, j.world->rank == 0 && !quiet,
                                          &tp_ar_dev), st, fail);
    if (tp_ar_dev) { /* the model then uses the device engine only (every rank of the group alike) */
        mr_allreduce_destroy(tp_ar);
        tp_ar = NULL;
    }
    MR_CHECK_GOTO(mr_gen_device_comm(j.ep, &dev, &j.plan, &be, "expert", j.world->rank == 0 && !quiet, &j.ep_dev,
                                     &j.ep_nccl), st, fail);
    if (j.world->rank == 0 && !quiet) {
        MR_INFO("plan: %d ranks = data %d x pipeline %d x tensor %d, expert groups of %d, %d micro-batches",
                j.world->size, j.plan.parallel.data, j.plan.parallel.pipeline, j.plan.parallel.tensor,
                j.plan.parallel.expert, mr_plan_micro_batches(&j.plan));
        if (j.world->size > 1) mr_plan_print_ranks(&j.plan, &cfg, stderr);
    }
    int first, count;
    mr_plan_stage_layers(&j.plan, cfg.n_layers, j.me.pipe_i, &first, &count);
    mr_model_options mo = {
        .max_slots = j.plan.generation.max_batch,
        .max_ctx = j.plan.generation.max_context,
        .max_step_tokens = j.plan.generation.token_budget,
        .synthetic = synthetic,
        .seed = (uint64_t)wseed,
        .shard = {.tp = j.plan.parallel.tensor, .tp_rank = j.me.tensor_i, .layer_begin = first,
                  .layer_end = first + count, .ep = j.plan.parallel.expert, .ep_rank = j.me.expert_i,
                  .tp_comm = j.tp_dev, .ep_comm = j.ep_dev, .ep_comm_host = j.ep, .tp_ar = tp_ar,
                  .tp_ar_dev = tp_ar_dev,
                  .ep_overlap = aro.overlap},
    };
    if (mo.max_step_tokens < mo.max_slots) mo.max_step_tokens = mo.max_slots;
    mo.deterministic = j.plan.comm.deterministic;
    if (mo.deterministic && j.world->rank == 0 && !quiet)
        MR_INFO("deterministic mode: fixed-order products, %s", j.plan.parallel.tensor > 1
                ? "the tensor all-reduce replaced by all-gathered block sums added in order"
                : "the same bits as any plan of this model");
    mr_weights_kind wk = j.plan.runtime.weights;
    mo.weights = wk == MR_WEIGHTS_KIND_BF16 || (wk == MR_WEIGHTS_KIND_AUTO && dev.kind == MR_DEVICE_CUDA)
                     ? MR_WEIGHTS_BF16
                     : MR_WEIGHTS_FP32;
    /* Failure-path tests: one rank finds no checkpoint where the others do. */
    const char *fail_rank = getenv("MR_TEST_FAIL_RANK");
    char missing[MR_PLAN_PATH_MAX + 64];
    const char *model_path = j.plan.model;
    if (fail_rank && atoi(fail_rank) == j.world->rank) {
        snprintf(missing, sizeof missing, "%s/missing-on-rank-%d", j.plan.model, j.world->rank);
        model_path = missing;
    }
    MR_CHECK_GOTO(mr_model_load(&m, model_path, &mo, &be), st, fail);
    if (!quiet && j.world->rank == 0)
        MR_INFO("model %s (%s, %d layers, hidden %d, %.1fM parameters%s, %s weight matrices%s), %s, %d requests "
                "(%d answered before), batch %d, budget %d, %d threads per rank",
                j.plan.model, cfg.model_type, cfg.n_layers, cfg.hidden, mr_config_param_count(&cfg) / 1e6,
                synthetic ? ", synthetic weights" : "", mo.weights == MR_WEIGHTS_BF16 ? "bf16" : "fp32",
                wk == MR_WEIGHTS_KIND_AUTO ? " (runtime.weights = auto)" : "", tok ? "tokenizer loaded" : "no tokenizer (token ids only)",
                n_total, n_before, mo.max_slots, mo.max_step_tokens, be.threads);
    if (j.me.pipe_i == 0) {
        MR_CHECK_GOTO(share_requests(all, n_all, j.plan.parallel.data, j.me.data_i, &mine, &n_mine), st, fail);
    }
    MR_CHECK_GOTO(start_job_control(&j, n_total, quiet), st, fail);
    mr_engine_dist dist = {.pipe = j.pipe, .micro_batches = mr_plan_micro_batches(&j.plan), .lockstep = j.lock,
                           .sched = j.sched};
    /* MR_DUMP_LOGITS=DIR: each last-stage rank of tensor index 0 writes the
     * logits it sampled from (tests compare plans with them). */
    char dump[MR_PLAN_PATH_MAX + 32];
    const char *dump_dir = getenv("MR_DUMP_LOGITS");
    /* MR_TEACHER_TOKENS=FILE: teacher forcing (tests/compression) */
    const char *teacher = getenv("MR_TEACHER_TOKENS");
    if (dump_dir) snprintf(dump, sizeof dump, "%s/logits-r%d.bin", dump_dir, j.world->rank);
    mr_engine_options eo = {.max_batch = mo.max_slots, .token_budget = mo.max_step_tokens, .dist = &dist,
                            .dump_logits = dump_dir && j.me.tensor_i == 0 ? dump : NULL, .tok = tok,
                            .teacher_tokens = teacher && *teacher ? teacher : NULL,
                            .tick = mr_gen_tick, .tick_user = j.gen};
    MR_CHECK_GOTO(mr_engine_run(m, mine, n_mine, &eo, mr_gen_done, j.gen, &stats), st, fail);
    MR_CHECK_GOTO(mr_gen_finish(j.gen), st, fail);
    double imbalance = report_experts(&j, m, quiet);
    MR_CHECK_GOTO(mr_gen_summary(j.gen, &stats, comm_seconds(&j), imbalance, now_s() - t_start), st, fail);
finish:
    MR_CHECK_GOTO(close_output(&j, n_total, n_before, stats.stop, &exit_code), st, fail);
    goto cleanup;
fail:
    if (fatal_local || !j.world || j.world->rank == 0) MR_ERRORF("%s", mr_last_error());
    fflush(stderr);
    if (fatal_local && j.world && j.world->size > 1) mr_comm_mpi_abort(j.world, mr_status_exit_code(st));
quiet_fail:
cleanup:
    mr_output_close(j.out, NULL);
    mr_manifest_destroy(manifest);
    mr_gen_destroy(j.gen);
    mr_model_free(m);
    mr_tokenizer_free(tok);
    mr_requests_free(all, n_all);
    mr_requests_free(mine, n_mine);
    if (have_cfg) mr_config_free(&cfg);
    mr_allreduce_destroy(tp_ar);
    mr_allreduce_destroy(tp_ar_dev);
    if (j.tp_nccl) mr_comm_destroy(j.tp_dev);
    if (j.ep_nccl) mr_comm_destroy(j.ep_dev);
    mr_gen_backend_free(&be, &dev);
    mr_comm_destroy(j.tp);
    mr_comm_destroy(j.pipe);
    mr_comm_destroy(j.ep);
    mr_comm_destroy(j.lock);
    mr_comm_destroy(j.sched);
    int world_size = j.world ? j.world->size : 1;
    mr_comm_destroy(j.world);
    mr_comm_destroy(j.mpi_world);
    mr_topo_job_free(&topo);
    mr_comm_mpi_finalize();
    if (st == MR_OK && exit_code != 0 && world_size > 1) {
        /* mpirun starts killing the job at the first non-zero status; a
         * rank still inside MPI_Finalize then waits for its kill sequence
         * (seconds).  Every rank's work is done, so leave a moment. */
        struct timespec ts = {0, 200 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return st == MR_OK ? exit_code : mr_status_exit_code(st);
}
