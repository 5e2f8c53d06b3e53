/* Bad checkpoints and configs are refused with messages that name the file
 * and the place: missing config.json, unknown model_type, unsupported
 * options, a tensor of the wrong shape, a missing tensor, a truncated
 * weights file.  Uses a copy of the committed qwen2 fixture. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "runtime/model.h"

static mr_backend be;

static void sh(const char *fmt, const char *a, const char *b) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, fmt, a, b);
    if (system(cmd) != 0) { fprintf(stderr, "command failed: %s\n", cmd); exit(1); }
}

/* Load `dir` and expect failure with `st` and a message holding both needles. */
static void expect_fail(const char *dir, mr_status want, const char *n1, const char *n2, const char *what) {
    mr_model_options mo = {.max_slots = 1, .max_ctx = 64, .max_step_tokens = 16};
    mr_model *m = NULL;
    mr_status st = mr_model_load(&m, dir, &mo, &be);
    CHECK(st == want, "%s: status %s, want %s (%s)", what, mr_status_name(st), mr_status_name(want), mr_last_error());
    CHECK(mr_test_contains(mr_last_error(), n1), "%s: message lacks '%s': %s", what, n1, mr_last_error());
    if (n2) CHECK(mr_test_contains(mr_last_error(), n2), "%s: message lacks '%s': %s", what, n2, mr_last_error());
    printf("  %-28s -> %s\n", what, mr_last_error());
    mr_model_free(m);
}

/* Fresh copy of the fixture with config.json edited by a python-free sed. */
static const char *fresh(const char *name) {
    static char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", mr_test_tmpdir(), name);
    sh("rm -rf '%s' && mkdir -p '%s'", dir, dir);
    sh("cp %s/* '%s'", mr_test_src("tests/fixtures/qwen2"), dir);
    return dir;
}

int main(void) {
    if (mr_backend_cpu_init(&be, 1) != 0) return 1;
    char cmd[8192];

    const char *d = fresh("noconfig");
    snprintf(cmd, sizeof cmd, "%s/config.json", d);
    unlink(cmd);
    expect_fail(d, MR_ERR_INPUT, "config.json", d, "missing config.json");

    d = fresh("unknown");
    sh("sed -i 's/\"model_type\": \"qwen2\"/\"model_type\": \"gpt_neox\"/' '%s/config.json'%s", d, "");
    expect_fail(d, MR_ERR_UNSUPPORTED, "model_type \"gpt_neox\" is not supported", "config.json", "unknown model_type");

    d = fresh("sliding");
    sh("sed -i 's/\"use_sliding_window\": false/\"use_sliding_window\": true/' '%s/config.json'%s", d, "");
    expect_fail(d, MR_ERR_UNSUPPORTED, "use_sliding_window", "config.json", "unsupported option");

    d = fresh("rope");
    sh("sed -i 's/\"rope_scaling\": null/\"rope_scaling\": {\"rope_type\": \"dynamic\", \"factor\": 2.0}/' "
       "'%s/config.json'%s", d, "");
    expect_fail(d, MR_ERR_UNSUPPORTED, "rope_scaling type \"dynamic\"", NULL, "unsupported rope_scaling");

    d = fresh("badjson");
    sh("printf '{\"model_type\": \"qwen2\",\\n  \"hidden_size\": }' > '%s/config.json'%s", d, "");
    expect_fail(d, MR_ERR_INPUT, "config.json:2:", "invalid JSON", "config.json syntax error");

    /* intermediate_size that disagrees with the weights: a wrong-shape tensor */
    d = fresh("shape");
    sh("sed -i 's/\"intermediate_size\": \\([0-9]*\\)/\"intermediate_size\": 99/' '%s/config.json'%s", d, "");
    expect_fail(d, MR_ERR_INPUT, "mlp.gate_proj.weight", "expected [99,", "tensor of the wrong shape");

    /* untied embeddings: lm_head.weight does not exist in the checkpoint */
    d = fresh("missing");
    sh("sed -i 's/\"tie_word_embeddings\": true/\"tie_word_embeddings\": false/' '%s/config.json'%s", d, "");
    expect_fail(d, MR_ERR_INPUT, "lm_head.weight", "not found", "missing tensor");

    d = fresh("truncated");
    sh("truncate -s 4096 '%s/model.safetensors'%s", d, "");
    expect_fail(d, MR_ERR_INPUT, "model.safetensors", NULL, "truncated weights file");

    sh("rm -rf '%s'%s", mr_test_tmpdir(), "");
    mr_backend_cpu_free(&be);
    return mr_test_summary();
}
