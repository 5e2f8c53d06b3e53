/* Plan tests: the YAML reader and its messages (line:column, nearest key),
 * command-line overrides, every refusal against the world size and the
 * committed model fixtures, the rank layout and its groups, and the bytes
 * of weights per rank (checked against what the model loader holds). */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "kernels/backend.h"
#include "runtime/model.h"
#include "runtime/plan.h"

static const char *write_plan(const char *name, const char *text) {
    static char path[8][512];
    static int next = 0;
    char *p = path[next++ % 8];
    snprintf(p, 512, "%s/%s", mr_test_tmpdir(), name);
    FILE *f = fopen(p, "w");
    if (!f) {
        perror(p);
        exit(1);
    }
    fputs(text, f);
    fclose(f);
    return p;
}

static int load_cfg(mr_model_config *c, const char *arch) {
    char rel[128];
    snprintf(rel, sizeof rel, "tests/fixtures/%s", arch);
    mr_status st = mr_plan_load_model_config(c, mr_test_src(rel));
    CHECK(st == MR_OK, "%s: %s", arch, mr_last_error());
    return st == MR_OK;
}

/* Load `text` as plan.yaml; expect a refusal whose message holds `want`. */
static void expect_load_error(const char *text, const char *want) {
    mr_plan p;
    mr_status st = mr_plan_load(&p, write_plan("plan.yaml", text));
    CHECK(st == MR_ERR_INPUT, "expected a refusal containing '%s'", want);
    CHECK(mr_test_contains(mr_last_error(), want), "message '%s' lacks '%s'", mr_last_error(), want);
}

/* Load `text`, then check against `arch` (NULL: no model) and `world`;
 * expect a refusal holding every string of want[] (NULL-terminated). */
static void expect_check_error(const char *text, const char *arch, int world, const char *const *want) {
    mr_plan p;
    mr_model_config c;
    mr_status st = mr_plan_load(&p, write_plan("plan.yaml", text));
    CHECK(st == MR_OK, "%s", mr_last_error());
    if (st != MR_OK || (arch && !load_cfg(&c, arch))) return;
    st = mr_plan_check(&p, arch ? &c : NULL, world);
    CHECK(st == MR_ERR_INPUT, "expected a refusal for %s containing '%s'", arch ? arch : "no model", want[0]);
    for (int i = 0; want[i]; i++)
        CHECK(mr_test_contains(mr_last_error(), want[i]), "message '%s' lacks '%s'", mr_last_error(), want[i]);
    if (arch) mr_config_free(&c);
}

static void expect_check_ok(const char *text, const char *arch, int world) {
    mr_plan p;
    mr_model_config c;
    mr_status st = mr_plan_load(&p, write_plan("plan.yaml", text));
    CHECK(st == MR_OK, "%s", mr_last_error());
    if (st != MR_OK || (arch && !load_cfg(&c, arch))) return;
    st = mr_plan_check(&p, arch ? &c : NULL, world);
    CHECK(st == MR_OK, "%s: %s", arch ? arch : "no model", mr_last_error());
    if (arch) mr_config_free(&c);
}

static void test_reader(void) {
    mr_plan p;
    const char *full = "# every key\n"
                       "model: /models/x\n"
                       "input: in.jsonl\n"
                       "output: \"out dir/out.jsonl\"\n"
                       "parallel:\n"
                       "  data: 2\n"
                       "  tensor: 2\n"
                       "  pipeline: 2\n"
                       "  expert: 4\n"
                       "  micro_batches: 3\n"
                       "  layers_per_stage: [1, 1]\n"
                       "comm:\n"
                       "  backend: nccl\n"
                       "  allreduce:\n"
                       "    algorithm: two_shot\n"
                       "    chunk_kib: 512\n"
                       "    compression: int8\n"
                       "    block: 128\n"
                       "    overlap: false\n"
                       "  deterministic: true\n"
                       "generation:\n"
                       "  max_tokens: 7\n"
                       "  temperature: 0.5\n"
                       "  top_p: 0.9\n"
                       "  top_k: 40\n"
                       "  seed: 18446744073709551615\n"
                       "  max_batch: 16\n"
                       "  token_budget: 1024\n"
                       "  max_context: 2048\n"
                       "topology:\n"
                       "  strict: yes\n"
                       "runtime:\n"
                       "  device: cpu\n"
                       "  threads: 12\n";
    mr_status st = mr_plan_load(&p, write_plan("full.yaml", full));
    CHECK(st == MR_OK, "%s", mr_last_error());
    CHECK(!strcmp(p.model, "/models/x") && !strcmp(p.output, "out dir/out.jsonl"), "paths %s %s", p.model, p.output);
    CHECK(p.parallel.data == 2 && p.parallel.tensor == 2 && p.parallel.pipeline == 2 && p.parallel.expert == 4,
          "sizes");
    CHECK(p.parallel.micro_batches == 3 && p.parallel.n_layers_per_stage == 2 && p.parallel.layers_per_stage[1] == 1,
          "pipeline details");
    CHECK(p.comm.backend == MR_COMM_NCCL && p.comm.allreduce.algorithm == MR_AR_TWO_SHOT &&
              p.comm.allreduce.chunk_kib == 512 && p.comm.allreduce.compression == MR_COMPRESS_INT8 &&
              p.comm.allreduce.block == 128 && !p.comm.allreduce.overlap && p.comm.deterministic,
          "comm");
    CHECK(p.generation.max_tokens == 7 && p.generation.temperature == 0.5f && p.generation.top_p == 0.9f &&
              p.generation.top_k == 40 && p.generation.seed == UINT64_MAX && p.generation.max_batch == 16 &&
              p.generation.token_budget == 1024 && p.generation.max_context == 2048,
          "generation");
    CHECK(p.topology.strict && p.runtime.threads == 12 && p.runtime.device == MR_DEVICE_CPU, "topology/runtime");
    CHECK(p.marks[MR_PLAN_KEY_DEVICE].line == 33 && p.marks[MR_PLAN_KEY_DEVICE].column == 11, "device mark %d:%d",
          p.marks[MR_PLAN_KEY_DEVICE].line, p.marks[MR_PLAN_KEY_DEVICE].column);
    /* marks: line and column of each value */
    CHECK(p.marks[MR_PLAN_KEY_TENSOR].source == MR_PLAN_FROM_FILE && p.marks[MR_PLAN_KEY_TENSOR].line == 7 &&
              p.marks[MR_PLAN_KEY_TENSOR].column == 11,
          "tensor mark %d:%d", p.marks[MR_PLAN_KEY_TENSOR].line, p.marks[MR_PLAN_KEY_TENSOR].column);
    CHECK(p.marks[MR_PLAN_KEY_AR_BLOCK].line == 18 && p.marks[MR_PLAN_KEY_AR_BLOCK].column == 12, "block mark");
    CHECK(p.marks[MR_PLAN_KEY_INPUT].source == MR_PLAN_FROM_FILE, "input mark");

    /* The printed plan reads back to the same values. */
    char path[512];
    snprintf(path, sizeof path, "%s/printed.yaml", mr_test_tmpdir());
    FILE *f = fopen(path, "w");
    mr_plan_print(&p, 0, f);
    fclose(f);
    mr_plan q;
    st = mr_plan_load(&q, path);
    CHECK(st == MR_OK, "printed plan does not load: %s", mr_last_error());
    CHECK(!memcmp(&p.parallel, &q.parallel, sizeof p.parallel) && !memcmp(&p.comm, &q.comm, sizeof p.comm) &&
              !memcmp(&p.generation, &q.generation, sizeof p.generation) && !strcmp(p.output, q.output) &&
              p.topology.strict == q.topology.strict && p.runtime.threads == q.runtime.threads &&
              p.runtime.device == q.runtime.device,
          "printed plan differs");

    /* Defaults, empty files and comment-only files. */
    st = mr_plan_load(&p, write_plan("empty.yaml", "# nothing\n"));
    CHECK(st == MR_OK && mr_plan_world(&p) == 1 && p.comm.allreduce.block == 32 && p.generation.max_batch == 32 &&
              !p.comm.allreduce.overlap && p.marks[MR_PLAN_KEY_DATA].source == MR_PLAN_FROM_DEFAULT &&
              p.runtime.device == MR_DEVICE_AUTO,
          "defaults: %s", mr_last_error());
    const char *inl = "parallel: {data: 4, tensor: 2}\ncomm:\n";
    st = mr_plan_parse(&p, inl, strlen(inl), "inline");
    CHECK(st == MR_OK && mr_plan_world(&p) == 8, "flow mapping: %s", mr_last_error());

    st = mr_plan_load(&p, "/nonexistent/plan.yaml");
    CHECK(st == MR_ERR_IO && mr_test_contains(mr_last_error(), "/nonexistent/plan.yaml"), "%s", mr_last_error());
}

static void test_reader_errors(void) {
    /* YAML syntax: libyaml's line and column */
    expect_load_error("parallel:\n  data: 2\n tensor: 2\n", "plan.yaml:3:2: YAML syntax error: ");
    expect_load_error("parallel:\n  layers_per_stage: [1, 2\n", "plan.yaml:3:1: YAML syntax error");
    expect_load_error("model: a\n---\nmodel: b\n", "plan.yaml:3:1: a plan file holds one YAML document");
    /* unknown keys, with the nearest valid key */
    expect_load_error("model: m\nparallel:\n  data: 2\n  tensr: 2\n",
                      "plan.yaml:4:3: unknown key \"tensr\" in parallel (did you mean \"tensor\"?)");
    expect_load_error("comm:\n  allreduce:\n    compresion: int8\n",
                      "plan.yaml:3:5: unknown key \"compresion\" in comm.allreduce (did you mean \"compression\"?)");
    expect_load_error("modle: x\n", "plan.yaml:1:1: unknown key \"modle\" at the top level (did you mean \"model\"?)");
    expect_load_error("parallel:\n  seed: 3\n", "unknown key \"seed\" in parallel (did you mean \"generation.seed\"?)");
    expect_load_error("generation:\n  banana: 3\n", "(valid keys: max_tokens, temperature");
    expect_load_error("parallel:\n  data: 2\n  data: 4\n", "plan.yaml:3:3: duplicate key \"data\" in parallel");
    /* wrong types */
    expect_load_error("parallel:\n  tensor: two\n", "plan.yaml:2:11: parallel.tensor must be an integer, got \"two\"");
    expect_load_error("parallel:\n  tensor: \"2\"\n", "parallel.tensor must be an integer, got the string \"2\"");
    expect_load_error("parallel:\n  tensor: 2.5\n", "parallel.tensor must be an integer");
    expect_load_error("parallel:\n  tensor:\n", "plan.yaml:2:10: parallel.tensor needs a value");
    expect_load_error("parallel:\n  tensor: [2]\n", "parallel.tensor must be a single value, got a list");
    expect_load_error("parallel: 4\n", "plan.yaml:1:11: parallel must be a mapping of keys, got a scalar");
    expect_load_error("- 1\n- 2\n", "plan.yaml:1:1: a plan must be a mapping");
    expect_load_error("comm:\n  allreduce:\n    overlap: maybe\n",
                      "plan.yaml:3:14: comm.allreduce.overlap must be true or false, got \"maybe\"");
    expect_load_error("comm:\n  backend: ncl\n",
                      "comm.backend must be one of auto, mpi, nccl, got \"ncl\" (did you mean \"nccl\"?)");
    expect_load_error("runtime:\n  device: gpu\n",
                      "plan.yaml:2:11: runtime.device must be one of auto, cpu, cuda, got \"gpu\"");
    expect_load_error("runtime:\n  device: cdua\n", "got \"cdua\" (did you mean \"cuda\"?)");
    expect_load_error("parallel:\n  layers_per_stage: 3\n", "parallel.layers_per_stage must be a list of integers");
    expect_load_error("parallel:\n  layers_per_stage: [3, x]\n", "plan.yaml:2:25: parallel.layers_per_stage must be an integer");
    expect_load_error("generation:\n  temperature: hot\n", "generation.temperature must be a number");
    expect_load_error("generation:\n  seed: -1\n", "generation.seed must be an integer");
    /* ranges */
    expect_load_error("parallel:\n  data: 0\n", "parallel.data must be at least 1, got 0");
    expect_load_error("parallel:\n  expert: -2\n", "parallel.expert must be at least 1, got -2");
    expect_load_error("comm:\n  allreduce:\n    block: 48\n", "comm.allreduce.block must be a power of two in [32, 256], got 48");
    expect_load_error("comm:\n  allreduce:\n    block: 512\n", "power of two in [32, 256], got 512");
    expect_load_error("comm:\n  allreduce:\n    chunk_kib: 0\n", "comm.allreduce.chunk_kib must be at least 1");
    expect_load_error("generation:\n  temperature: -0.5\n", "generation.temperature must be in [0, 100], got -0.5");
    expect_load_error("generation:\n  top_p: 0\n", "generation.top_p must be in (0, 1], got 0");
    expect_load_error("generation:\n  top_p: 1.5\n", "generation.top_p must be in (0, 1]");
    expect_load_error("generation:\n  max_batch: 0\n", "generation.max_batch must be at least 1");
    expect_load_error("parallel:\n  layers_per_stage: [2, 0]\n", "parallel.layers_per_stage must be at least 1, got 0");
}

static void test_overrides(void) {
    mr_plan p;
    mr_status st = mr_plan_load(&p, write_plan("plan.yaml", "parallel:\n  tensor: 4\n"));
    CHECK(st == MR_OK, "%s", mr_last_error());
    st = mr_plan_set(&p, "parallel.tensor", "2");
    CHECK(st == MR_OK && p.parallel.tensor == 2 && p.marks[MR_PLAN_KEY_TENSOR].source == MR_PLAN_FROM_OPTION,
          "override: %s", mr_last_error());
    CHECK(mr_plan_set(&p, "parallel.layers_per_stage", "3,2") == MR_OK && p.parallel.n_layers_per_stage == 2 &&
              p.parallel.layers_per_stage[0] == 3 && p.parallel.layers_per_stage[1] == 2,
          "list override: %s", mr_last_error());
    CHECK(mr_plan_set(&p, "parallel.layers_per_stage", "[4, 1]") == MR_OK && p.parallel.layers_per_stage[0] == 4,
          "bracketed list: %s", mr_last_error());
    CHECK(mr_plan_set(&p, "comm.deterministic", "true") == MR_OK && p.comm.deterministic, "bool");
    CHECK(mr_plan_set(&p, "model", "/m") == MR_OK && !strcmp(p.model, "/m"), "path");
    st = mr_plan_set(&p, "parallel.tensor", "two");
    CHECK(st == MR_ERR_INPUT && mr_test_contains(mr_last_error(), "option parallel.tensor must be an integer, got \"two\""),
          "%s", mr_last_error());
    CHECK(p.parallel.tensor == 2, "a refused override leaves the value");
    st = mr_plan_set(&p, "parallel.tensr", "2");
    CHECK(st == MR_ERR_INPUT && mr_test_contains(mr_last_error(), "option \"parallel.tensr\" is not a plan key (did you "
                                                                  "mean \"parallel.tensor\"?)"),
          "%s", mr_last_error());
    st = mr_plan_set(&p, "comm.allreduce.block", "100");
    CHECK(st == MR_ERR_INPUT && mr_test_contains(mr_last_error(), "option comm.allreduce.block must be a power of two"),
          "%s", mr_last_error());
    /* A check error on an overridden key says so. */
    mr_model_config c;
    if (!load_cfg(&c, "llama")) return;
    mr_plan_init(&p);
    mr_plan_set(&p, "parallel.tensor", "3");
    st = mr_plan_check(&p, &c, 0);
    CHECK(st == MR_ERR_INPUT && mr_test_contains(mr_last_error(), "command line: parallel.tensor = 3"), "%s",
          mr_last_error());
    mr_config_free(&c);
}

/* MR_DEVICE overrides the file, the command line overrides both; messages
 * name the variable. */
static void test_env(void) {
    char where[256];
    mr_plan p;
    mr_status st = mr_plan_load(&p, write_plan("plan.yaml", "runtime:\n  device: cuda\n"));
    CHECK(st == MR_OK, "%s", mr_last_error());
    unsetenv("MR_DEVICE");
    CHECK(mr_plan_env(&p) == MR_OK && p.runtime.device == MR_DEVICE_CUDA, "no variable: the file's value");
    CHECK(mr_test_contains(mr_plan_where(&p, MR_PLAN_KEY_DEVICE, where, sizeof where), "plan.yaml:2:11"), "%s", where);
    setenv("MR_DEVICE", "", 1);
    CHECK(mr_plan_env(&p) == MR_OK && p.runtime.device == MR_DEVICE_CUDA, "empty variable: ignored");
    setenv("MR_DEVICE", "cpu", 1);
    CHECK(mr_plan_env(&p) == MR_OK && p.runtime.device == MR_DEVICE_CPU &&
              p.marks[MR_PLAN_KEY_DEVICE].source == MR_PLAN_FROM_ENV,
          "MR_DEVICE=cpu: %s", mr_last_error());
    CHECK(!strcmp(mr_plan_where(&p, MR_PLAN_KEY_DEVICE, where, sizeof where), "environment MR_DEVICE"), "%s", where);
    CHECK(mr_plan_set(&p, "runtime.device", "auto") == MR_OK && p.runtime.device == MR_DEVICE_AUTO &&
              p.marks[MR_PLAN_KEY_DEVICE].source == MR_PLAN_FROM_OPTION,
          "--set after the environment");
    setenv("MR_DEVICE", "gpu", 1);
    st = mr_plan_env(&p);
    CHECK(st == MR_ERR_INPUT && mr_test_contains(mr_last_error(), "environment MR_DEVICE=gpu: runtime.device must be "
                                                                  "one of auto, cpu, cuda"),
          "%s", mr_last_error());
    CHECK(p.runtime.device == MR_DEVICE_AUTO, "a refused variable leaves the value");
    unsetenv("MR_DEVICE");
    CHECK(mr_plan_env_var(MR_PLAN_KEY_DEVICE) && !mr_plan_env_var(MR_PLAN_KEY_TENSOR), "variables by key");
    CHECK(!strcmp(mr_device_kind_name(MR_DEVICE_CUDA), "cuda"), "name");
    /* runtime.weights: MR_WEIGHTS, and what bf16 means for the byte counts */
    CHECK(p.runtime.weights == MR_WEIGHTS_KIND_AUTO && !mr_plan_bf16_weights(&p), "weights default auto, on cpu fp32");
    p.runtime.device = MR_DEVICE_CUDA;
    CHECK(mr_plan_bf16_weights(&p), "auto on cuda: bf16");
    setenv("MR_WEIGHTS", "fp32", 1);
    CHECK(mr_plan_env(&p) == MR_OK && p.runtime.weights == MR_WEIGHTS_KIND_FP32 && !mr_plan_bf16_weights(&p),
          "MR_WEIGHTS=fp32: %s", mr_last_error());
    setenv("MR_WEIGHTS", "half", 1);
    st = mr_plan_env(&p);
    CHECK(st == MR_ERR_INPUT && mr_test_contains(mr_last_error(), "environment MR_WEIGHTS=half: runtime.weights must "
                                                                  "be one of auto, fp32, bf16"),
          "%s", mr_last_error());
    unsetenv("MR_WEIGHTS");
    CHECK(mr_plan_set(&p, "runtime.weights", "bf16") == MR_OK && p.runtime.weights == MR_WEIGHTS_KIND_BF16 &&
              !strcmp(mr_weights_kind_name(p.runtime.weights), "bf16"),
          "--set runtime.weights=bf16");
}

static void test_refusals(void) {
    /* world size */
    expect_check_error("parallel:\n  data: 2\n  tensor: 2\n", "llama", 8,
                       (const char *const[]){"data × pipeline × tensor = 2 × 1 × 2 = 4 ranks, but the world has 8",
                                             "nearest plans for world 8: data=4 tensor=2, data=2 tensor=2 pipeline=2",
                                             NULL});
    expect_check_error("parallel:\n  tensor: 2\n", NULL, 3,
                       (const char *const[]){"= 2 ranks, but the world has 3", "nearest plans for world 3: tensor=3",
                                             NULL});
    /* tensor vs heads, KV heads, with the valid sizes */
    /* more tensor ranks than KV heads: the KV heads are replicated */
    expect_check_ok("parallel:\n  tensor: 4\n", "llama", 0);
    expect_check_ok("parallel:\n  tensor: 4\n", "qwen2_moe", 0);
    /* 24 heads / 8 KV heads (Llama-3.2-3B's shape): 12 neither divides 8 nor is a multiple */
    expect_check_error("parallel:\n  data: 1\n  tensor: 12\n", "../../bench/models/llama-3b", 0,
                       (const char *const[]){"plan.yaml:3:11: parallel.tensor = 12 does not divide "
                                             "num_key_value_heads = 8 of the model (llama) and is not a multiple",
                                             "tensor sizes that fit this model: 1, 2, 4, 8",
                                             "nearest plans for world 12: data=3 tensor=4", NULL});
    expect_check_error("parallel:\n  tensor: 8\n", "deepseek_v3", 0,
                       (const char *const[]){"parallel.tensor = 8 does not divide num_attention_heads = 4",
                                             "tensor sizes that fit this model: 1, 2, 4", NULL});
    expect_check_error("parallel:\n  tensor: 3\n", "mixtral", 0,
                       (const char *const[]){"parallel.tensor = 3 does not divide num_attention_heads = 4", NULL});
    /* expert */
    expect_check_error("parallel:\n  data: 6\n  expert: 3\n", "mixtral", 0,
                       (const char *const[]){"plan.yaml:3:11: parallel.expert = 3 does not divide the 8 routed "
                                             "experts of the model (num_local_experts = 8)",
                                             "expert sizes that fit this plan and model: 1, 2", NULL});
    expect_check_error("parallel:\n  data: 2\n  tensor: 1\n  expert: 4\n", "qwen3_moe", 0,
                       (const char *const[]){"parallel.expert = 4 does not divide the data × tensor = 2 × 1 = 2 ranks "
                                             "of a pipeline stage",
                                             "expert sizes that fit: 1, 2", NULL});
    expect_check_error("parallel:\n  data: 2\n  expert: 2\n", "llama", 0,
                       (const char *const[]){"plan.yaml:3:11: parallel.expert = 2, but the model (llama) is dense",
                                             "nearest plans for world 2: data=2", NULL});
    /* pipeline and its layers */
    expect_check_error("parallel:\n  pipeline: 5\n", "llama", 0,
                       (const char *const[]){"plan.yaml:2:13: parallel.pipeline = 5 is more than the 4 layers of the "
                                             "model (llama)",
                                             "nearest plans for world 5: data=5", NULL});
    expect_check_error("parallel:\n  pipeline: 2\n  layers_per_stage: [2, 3]\n", "deepseek_v3", 0,
                       (const char *const[]){"parallel.layers_per_stage sums to 5 but the model (deepseek_v3) has 4 "
                                             "layers",
                                             "an even split is [2, 2]", NULL});
    expect_check_error("parallel:\n  pipeline: 2\n  layers_per_stage: [1, 1, 1]\n", NULL, 0,
                       (const char *const[]){"parallel.layers_per_stage has 3 entries but parallel.pipeline is 2",
                                             NULL});
    expect_check_error("parallel:\n  micro_batches: 64\n", NULL, 0,
                       (const char *const[]){"parallel.micro_batches = 64 is more than generation.max_batch = 32",
                                             NULL});
    expect_check_error("comm:\n  backend: nccl\n  allreduce:\n    algorithm: mpi\n", NULL, 0,
                       (const char *const[]){"plan.yaml:4:16: comm.allreduce.algorithm = mpi needs comm.backend mpi",
                                             NULL});

    /* plans that fit */
    expect_check_ok("parallel:\n  data: 2\n  tensor: 2\n  pipeline: 2\n", "llama", 8);
    expect_check_ok("parallel:\n  data: 4\n  tensor: 2\n  expert: 8\n", "mixtral", 8);
    expect_check_ok("parallel:\n  data: 2\n  tensor: 2\n  expert: 4\n  pipeline: 2\n", "qwen3_moe", 8);
    expect_check_ok("parallel:\n  tensor: 4\n  pipeline: 3\n", "deepseek_v3", 12);
    expect_check_ok("parallel:\n  tensor: 2\n  pipeline: 2\n  layers_per_stage: [3, 1]\n", "deepseek_v3", 4);
    expect_check_ok("parallel:\n  tensor: 2\n", "qwen2", 2);

    /* MLA: only the heads limit tensor, not num_key_value_heads. */
    char *json = NULL;
    FILE *f = fopen(mr_test_src("tests/fixtures/deepseek_v3/config.json"), "rb");
    CHECK(f != NULL, "deepseek_v3 config");
    if (!f) return;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    json = calloc(1, (size_t)n + 1);
    CHECK(fread(json, 1, (size_t)n, f) == (size_t)n, "read");
    fclose(f);
    char *kv = strstr(json, "\"num_key_value_heads\": 4");
    CHECK(kv != NULL, "fixture has num_key_value_heads 4");
    if (kv) kv[strlen("\"num_key_value_heads\": ")] = '1';
    mr_model_config c;
    mr_status st = mr_config_parse(&c, json, "deepseek_v3 with 1 KV head");
    free(json);
    CHECK(st == MR_OK, "%s", mr_last_error());
    if (st != MR_OK) return;
    mr_plan p;
    mr_plan_init(&p);
    p.parallel.tensor = 4;
    CHECK(mr_plan_check(&p, &c, 4) == MR_OK, "MLA tensor 4: %s", mr_last_error());
    int sizes[8];
    CHECK(mr_plan_valid_tensor_sizes(&p, &c, sizes, 8) == 3 && sizes[2] == 4, "MLA valid tensor sizes");
    mr_config_free(&c);

    /* a GGUF file's metadata gives the config; a missing file or model is refused */
    CHECK(mr_plan_load_model_config(&c, "/models/x.gguf") != MR_OK &&
              mr_test_contains(mr_last_error(), "/models/x.gguf"), "%s", mr_last_error());
    CHECK(mr_plan_load_model_config(&c, mr_test_src("tests/fixtures/gguf/llama.gguf")) == MR_OK &&
              c.n_layers > 0 && c.arch == MR_ARCH_LLAMA, "%s", mr_last_error());
    mr_config_free(&c);
    CHECK(mr_plan_load_model_config(&c, "/nonexistent/model") == MR_ERR_INPUT &&
              mr_test_contains(mr_last_error(), "/nonexistent/model"),
          "%s", mr_last_error());
    CHECK(mr_plan_load_model_config(&c, mr_test_src("tests/fixtures/llama/config.json")) == MR_OK,
          "config.json path: %s", mr_last_error());
    mr_config_free(&c);
}

static void test_layout(void) {
    mr_plan p;
    mr_plan_init(&p);
    p.parallel.data = 2;
    p.parallel.pipeline = 2;
    p.parallel.tensor = 2;
    mr_rank_coords c = mr_plan_coords(&p, 5);
    CHECK(c.pipe_i == 1 && c.data_i == 0 && c.tensor_i == 1, "rank 5: pipe %d data %d tensor %d", c.pipe_i, c.data_i,
          c.tensor_i);
    c = mr_plan_coords(&p, 6);
    CHECK(c.pipe_i == 1 && c.data_i == 1 && c.tensor_i == 0, "rank 6");
    int m[16];
    CHECK(mr_plan_group(&p, MR_GROUP_TENSOR, 5, m) == 2 && m[0] == 4 && m[1] == 5, "tensor group of 5");
    CHECK(mr_plan_group(&p, MR_GROUP_PIPELINE, 5, m) == 2 && m[0] == 1 && m[1] == 5, "pipeline group of 5");
    CHECK(mr_plan_group(&p, MR_GROUP_DATA, 5, m) == 2 && m[0] == 5 && m[1] == 7, "data group of 5");

    /* Several shapes: the formula round-trips, every rank is in each of its
     * groups, and the groups of a kind partition the world. */
    const int shapes[][4] = {{2, 2, 2, 2}, {4, 2, 1, 8}, {3, 1, 2, 3}, {1, 8, 2, 4}, {2, 3, 2, 2}, {1, 1, 1, 1}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        p.parallel.data = shapes[s][0];
        p.parallel.tensor = shapes[s][1];
        p.parallel.pipeline = shapes[s][2];
        p.parallel.expert = shapes[s][3];
        CHECK(mr_plan_check(&p, NULL, 0) == MR_OK, "shape %zu: %s", s, mr_last_error());
        int w = mr_plan_world(&p), bad = 0;
        for (int r = 0; r < w; r++) {
            c = mr_plan_coords(&p, r);
            bad += mr_plan_rank(&p, c.data_i, c.pipe_i, c.tensor_i) != r;
            bad += r != (c.pipe_i * p.parallel.data + c.data_i) * p.parallel.tensor + c.tensor_i;
            for (int g = 0; g < MR_GROUP_KIND_COUNT; g++) {
                int n = mr_plan_group(&p, (mr_group_kind)g, r, m), found = 0, covered = 0;
                for (int i = 0; i < n; i++) {
                    found += m[i] == r;
                    bad += i > 0 && m[i] <= m[i - 1];
                    /* the members name the same group */
                    int mm[16];
                    mr_plan_group(&p, (mr_group_kind)g, m[i], mm);
                    covered += !memcmp(mm, m, (size_t)n * sizeof(int));
                }
                bad += found != 1 || covered != n;
            }
            /* expert groups: `expert` neighbouring ranks of one stage */
            int n = mr_plan_group(&p, MR_GROUP_EXPERT, r, m);
            bad += m[n - 1] - m[0] != n - 1 || mr_plan_coords(&p, m[0]).pipe_i != c.pipe_i ||
                   mr_plan_coords(&p, m[n - 1]).pipe_i != c.pipe_i || m[c.expert_i] != r;
        }
        CHECK(bad == 0, "shape %zu (data %d tensor %d pipeline %d expert %d): %d layout errors", s, shapes[s][0],
              shapes[s][1], shapes[s][2], shapes[s][3], bad);
    }
    /* data=4 tensor=2 expert=4: rank 5 is the 2nd of expert group 1 = {4..7} */
    p.parallel.data = 4, p.parallel.tensor = 2, p.parallel.pipeline = 1, p.parallel.expert = 4;
    c = mr_plan_coords(&p, 5);
    CHECK(c.expert_group == 1 && c.expert_i == 1, "rank 5 expert %d/%d", c.expert_group, c.expert_i);
    CHECK(mr_plan_group(&p, MR_GROUP_EXPERT, 5, m) == 4 && m[0] == 4 && m[3] == 7, "expert group of 5");
    /* pipeline=2: the expert plane restarts in each stage */
    p.parallel.data = 2, p.parallel.tensor = 2, p.parallel.pipeline = 2, p.parallel.expert = 2;
    c = mr_plan_coords(&p, 6);
    CHECK(c.expert_group == 1 && c.expert_i == 0, "rank 6 expert %d/%d", c.expert_group, c.expert_i);
    CHECK(mr_plan_group(&p, MR_GROUP_EXPERT, 6, m) == 2 && m[0] == 6 && m[1] == 7, "expert group of 6");

    /* experts per rank */
    mr_model_config cfg;
    if (load_cfg(&cfg, "mixtral")) {
        p.parallel.data = 4, p.parallel.tensor = 1, p.parallel.pipeline = 1, p.parallel.expert = 4;
        int first, count;
        mr_plan_rank_experts(&p, &cfg, 3, &first, &count);
        CHECK(first == 6 && count == 2, "rank 3 experts %d+%d", first, count);
        mr_config_free(&cfg);
    }

    /* layers per stage */
    mr_plan_init(&p);
    p.parallel.pipeline = 2;
    int first, count;
    mr_plan_stage_layers(&p, 61, 0, &first, &count);
    CHECK(first == 0 && count == 31, "61/2 stage 0: %d+%d", first, count);
    mr_plan_stage_layers(&p, 61, 1, &first, &count);
    CHECK(first == 31 && count == 30, "61/2 stage 1: %d+%d", first, count);
    p.parallel.pipeline = 4;
    int want[4][2] = {{0, 3}, {3, 3}, {6, 2}, {8, 2}}, bad = 0;
    for (int s = 0; s < 4; s++) {
        mr_plan_stage_layers(&p, 10, s, &first, &count);
        bad += first != want[s][0] || count != want[s][1];
    }
    CHECK(bad == 0, "10 layers over 4 stages: remainder on the first stages");
    CHECK(mr_plan_set(&p, "parallel.layers_per_stage", "1,4,4,1") == MR_OK, "%s", mr_last_error());
    mr_plan_stage_layers(&p, 10, 2, &first, &count);
    CHECK(first == 5 && count == 4, "layers_per_stage stage 2: %d+%d", first, count);
    CHECK(mr_plan_micro_batches(&p) == 4, "micro-batches default to the pipeline size");
}

/* Bytes the model loader holds for a one-rank model or one pipeline stage. */
static uint64_t loaded_bytes(const char *arch, int layer_begin, int layer_end, int bf16) {
    char rel[128];
    snprintf(rel, sizeof rel, "tests/fixtures/%s", arch);
    mr_backend be = {0};
    if (mr_backend_cpu_init(&be, 1) != 0) return 0;
    mr_model_options mo = {.max_slots = 1, .max_ctx = 8, .max_step_tokens = 4, .synthetic = 1, .seed = 1,
                           .weights = bf16 ? MR_WEIGHTS_BF16 : MR_WEIGHTS_FP32};
    mo.shard.layer_begin = layer_begin;
    mo.shard.layer_end = layer_end;
    mr_model *m = NULL;
    uint64_t b = 0;
    if (mr_model_load(&m, mr_test_src(rel), &mo, &be) == MR_OK) b = mr_model_weight_bytes(m);
    else fprintf(stderr, "loading %s: %s\n", arch, mr_last_error());
    mr_model_free(m);
    mr_backend_cpu_free(&be);
    return b;
}

/* Per-rank bytes against what the loader holds, with fp32 and with bf16
 * weight matrices (runtime.weights). */
static void test_bytes(void) {
    static const char *const archs[] = {"llama", "qwen2", "mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v3"};
    for (size_t a = 0; a < 2 * sizeof archs / sizeof archs[0]; a++) {
        int bf16 = a % 2;
        mr_model_config c;
        if (!load_cfg(&c, archs[a / 2])) continue;
        mr_plan p;
        mr_plan_init(&p);
        p.runtime.weights = bf16 ? MR_WEIGHTS_KIND_BF16 : MR_WEIGHTS_KIND_FP32;
        mr_plan_bytes whole, b[8];
        mr_plan_rank_bytes(&p, &c, 0, &whole);
        /* one rank: exactly what the loader holds */
        uint64_t got = loaded_bytes(archs[a / 2], 0, 0, bf16);
        CHECK(whole.total == got, "%s: plan says %llu bytes, the loader holds %llu", archs[a / 2],
              (unsigned long long)whole.total, (unsigned long long)got);

        /* pipeline = 2: each stage as the loader holds it; together the
         * whole model (plus a second copy of tied embeddings) */
        p.parallel.pipeline = 2;
        uint64_t sum = 0;
        for (int s = 0; s < 2; s++) {
            int first, count;
            mr_plan_stage_layers(&p, c.n_layers, s, &first, &count);
            mr_plan_rank_bytes(&p, &c, s, &b[s]);
            sum += b[s].total;
            got = loaded_bytes(archs[a / 2], first, first + count, bf16);
            CHECK(b[s].total == got, "%s stage %d: plan %llu, loader %llu", archs[a / 2], s,
                  (unsigned long long)b[s].total, (unsigned long long)got);
        }
        CHECK(sum == whole.total + (c.tie_embeddings && !bf16 ? whole.embed : 0), "%s: stages sum to %llu, whole %llu",
              archs[a / 2], (unsigned long long)sum, (unsigned long long)whole.total);

        /* tensor = 2: sliced parts halve; each rank at most 55% */
        p.parallel.pipeline = 1;
        p.parallel.tensor = 2;
        uint64_t sliced = 0;
        for (int r = 0; r < 2; r++) {
            mr_plan_rank_bytes(&p, &c, r, &b[r]);
            CHECK(b[r].total * 100 <= whole.total * 55, "%s tensor=2 rank %d holds %llu of %llu", archs[a / 2], r,
                  (unsigned long long)b[r].total, (unsigned long long)whole.total);
            sliced += b[r].embed + b[r].attention + b[r].mlp + b[r].routed + b[r].shared + b[r].lm_head;
        }
        CHECK(b[0].embed + b[1].embed == whole.embed && b[0].mlp + b[1].mlp == whole.mlp &&
                  b[0].routed + b[1].routed == whole.routed && b[0].lm_head + b[1].lm_head == whole.lm_head,
              "%s: tensor slices add up", archs[a / 2]);
        (void)sliced;

        /* expert = 4 on an MoE model: a quarter of the routed experts per rank */
        if (c.n_experts) {
            mr_plan_init(&p);
            p.runtime.weights = bf16 ? MR_WEIGHTS_KIND_BF16 : MR_WEIGHTS_KIND_FP32;
            p.parallel.data = 4;
            p.parallel.expert = 4;
            CHECK(mr_plan_check(&p, &c, 4) == MR_OK, "%s expert=4: %s", archs[a / 2], mr_last_error());
            for (int r = 0; r < 4; r++) {
                mr_plan_rank_bytes(&p, &c, r, &b[r]);
                CHECK(b[r].routed * 4 == whole.routed && b[r].shared == whole.shared && b[r].router == whole.router,
                      "%s expert=4 rank %d: routed %llu of %llu", archs[a / 2], r, (unsigned long long)b[r].routed,
                      (unsigned long long)whole.routed);
                CHECK(b[r].total == whole.total - whole.routed + whole.routed / 4, "%s expert=4 rank %d total",
                      archs[a / 2], r);
            }
        }
        mr_config_free(&c);
    }
    char buf[32];
    CHECK(!strcmp(mr_plan_format_bytes(1536, buf, sizeof buf), "1.50 KiB"), "%s", buf);
    CHECK(!strcmp(mr_plan_format_bytes(12, buf, sizeof buf), "12 B"), "%s", buf);
    CHECK(!strcmp(mr_plan_format_bytes(3ull << 30, buf, sizeof buf), "3.00 GiB"), "%s", buf);
}

/* Every committed example plan parses and lays out (their model paths are
 * placeholders; the model checks run on the fixtures above). */
static void test_configs(void) {
    const char *dir = mr_test_src("configs");
    DIR *d = opendir(dir);
    CHECK(d != NULL, "cannot open %s", dir);
    if (!d) return;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 6 || strcmp(e->d_name + l - 5, ".yaml")) continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        mr_plan p;
        mr_status st = mr_plan_load(&p, path);
        CHECK(st == MR_OK, "%s", mr_last_error());
        if (st == MR_OK) CHECK(mr_plan_check(&p, NULL, 0) == MR_OK, "%s: %s", e->d_name, mr_last_error());
        CHECK(p.model[0] != 0, "%s names a model", e->d_name);
        n++;
    }
    closedir(d);
    CHECK(n >= 4, "only %d plans in configs/", n);
}

/* The plans written above: plain files in one folder. */
static void remove_tmpdir(void) {
    const char *dir = mr_test_tmpdir();
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    if (d) closedir(d);
    rmdir(dir);
}

int main(void) {
    /* Run straight from the build tree too: find the sources from this file. */
    if (!getenv("MR_SOURCE_DIR")) {
        static char root[1024];
        snprintf(root, sizeof root, "%s", __FILE__);
        char *cut = strstr(root, "/tests/unit/test-plan.c");
        if (cut) {
            *cut = 0;
            setenv("MR_SOURCE_DIR", root, 1);
        }
    }
    test_reader();
    test_reader_errors();
    test_overrides();
    test_env();
    test_refusals();
    test_layout();
    test_bytes();
    test_configs();
    remove_tmpdir();
    return mr_test_summary();
}
