/* The engine on a committed fixture (tests/fixtures/llama):
 *   - batch invariance: 9 sampled requests (temperature 0.8, top-p 0.9,
 *     own seeds) give identical tokens alone, all together, and under
 *     continuous batching with max batch 2;
 *   - a request's stream depends on its seed: another seed changes it;
 *   - JSONL input: a malformed line, a token id >= vocabulary size and a
 *     prompt longer than the context become error records naming the line,
 *     while the other lines are answered, in input order. */
#define _GNU_SOURCE
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "runtime/engine.h"
#include "runtime/output.h"
#include "runtime/requests.h"

#define NREQ 9
#define GEN 12

static mr_backend be;
static mr_model *model;

static void make_reqs(mr_request *r, int n, uint64_t seed_base) {
    for (int i = 0; i < n; i++) {
        memset(&r[i], 0, sizeof r[i]);
        r[i].index = i;
        r[i].n_prompt = 3 + (i * 7) % 20;
        r[i].prompt = malloc(sizeof(int32_t) * (size_t)r[i].n_prompt);
        for (int j = 0; j < r[i].n_prompt; j++) r[i].prompt[j] = 3 + (i * 131 + j * 17) % 500;
        r[i].max_tokens = GEN;
        r[i].ignore_eos = 1;
        r[i].sample = (mr_sample_params){.temperature = 0.8f, .top_p = 0.9f, .top_k = 0, .seed = seed_base + (uint64_t)i};
        char id[32];
        snprintf(id, sizeof id, "\"r%d\"", i);
        r[i].id_json = strdup(id);
        r[i].id_hash = mr_hash_id(id);
    }
}

static void run(mr_request *r, int n, int max_batch, int budget) {
    mr_engine_options eo = {.max_batch = max_batch, .token_budget = budget};
    mr_status st = mr_engine_run(model, r, n, &eo, NULL, NULL, NULL);
    CHECK(st == MR_OK, "engine: %s", mr_last_error());
}

static int same(const mr_request *a, const mr_request *b) {
    if (a->n_out != b->n_out) return 0;
    return memcmp(a->out, b->out, sizeof(int32_t) * (size_t)a->n_out) == 0;
}

static void batch_invariance(void) {
    mr_request together[NREQ], alone[NREQ], cont[NREQ], other[NREQ];
    make_reqs(together, NREQ, 100);
    make_reqs(alone, NREQ, 100);
    make_reqs(cont, NREQ, 100);
    make_reqs(other, NREQ, 200);
    run(together, NREQ, NREQ, 256);
    for (int i = 0; i < NREQ; i++) run(&alone[i], 1, 1, 256);
    run(cont, NREQ, 2, 7);
    run(other, NREQ, NREQ, 256);
    int differ = 0;
    for (int i = 0; i < NREQ; i++) {
        CHECK(together[i].n_out == GEN, "request %d generated %d tokens", i, together[i].n_out);
        CHECK(same(&together[i], &alone[i]), "request %d: batch of %d differs from alone", i, NREQ);
        CHECK(same(&together[i], &cont[i]), "request %d: continuous batching (max 2) differs", i);
        differ += !same(&together[i], &other[i]);
    }
    CHECK(differ >= NREQ / 2, "other seeds changed only %d of %d streams", differ, NREQ);
    for (int i = 0; i < NREQ; i++) {
        mr_request_clear(&together[i]);
        mr_request_clear(&alone[i]);
        mr_request_clear(&cont[i]);
        mr_request_clear(&other[i]);
    }
}

static mr_status collect(void *user, mr_request *r) { return mr_output_put(user, r); }

static void jsonl_errors(void) {
    const char *dir = mr_test_tmpdir();
    char in[4096], outp[4096];
    snprintf(in, sizeof in, "%s/in.jsonl", dir);
    snprintf(outp, sizeof outp, "%s/out.jsonl", dir);
    FILE *f = fopen(in, "w");
    fprintf(f, "{\"id\": \"ok1\", \"tokens\": [5, 6, 7], \"max_tokens\": 4}\n");
    fprintf(f, "{\"id\": \"broken\", \"tokens\": [5, 6\n");                      /* line 2 */
    fprintf(f, "\n");                                                               /* blank: skipped */
    fprintf(f, "{\"id\": \"vocab\", \"tokens\": [5, 512]}\n");                     /* line 4 */
    fprintf(f, "{\"id\": \"long\", \"tokens\": [");                               /* line 5 */
    for (int i = 0; i < 100; i++) fprintf(f, "%s%d", i ? "," : "", 5 + i);
    fprintf(f, "]}\n");
    fprintf(f, "{\"id\": 7, \"tokens\": [9, 10], \"max_tokens\": 3, \"temperature\": \"hot\"}\n"); /* line 6 */
    fprintf(f, "{\"id\": \"ok2\", \"tokens\": [8, 9], \"max_tokens\": 3}\n");
    fclose(f);
    mr_request_defaults d = {.max_tokens = 5, .sample = {.top_p = 1}, .ignore_eos = 1};
    mr_request *reqs;
    int n;
    CHECK(mr_requests_read(in, &d, &reqs, &n) == MR_OK, "read: %s", mr_last_error());
    CHECK(n == 6, "%d requests read, want 6", n);
    mr_output *o;
    mr_output_options oo = {.path = outp, .n_requests = n, .fsync_interval = 10};
    CHECK(mr_output_open(&o, &oo) == MR_OK, "open: %s", mr_last_error());
    mr_engine_options eo = {.max_batch = 4, .token_budget = 64};
    CHECK(mr_engine_run(model, reqs, n, &eo, collect, o, NULL) == MR_OK, "run: %s", mr_last_error());
    int complete = 0;
    CHECK(mr_output_close(o, &complete) == MR_OK && complete, "close: %s", mr_last_error());
    /* Writing again over a non-empty output without its manifest is refused. */
    char man[4200];
    snprintf(man, sizeof man, "%s" MR_OUTPUT_MANIFEST_SUFFIX, outp);
    CHECK(unlink(man) == 0, "no manifest %s", man);
    CHECK(mr_output_open(&o, &oo) == MR_ERR_INPUT && mr_test_contains(mr_last_error(), "already exists"),
          "existing output not protected: %s", mr_last_error());

    f = fopen(outp, "r");
    char line[8192];
    const char *want_id[6] = {"ok1", "broken", "vocab", "long", NULL, "ok2"};
    const int want_line[6] = {0, 2, 4, 5, 6, 0};
    const char *want_msg[6] = {NULL, "invalid JSON", "outside the vocabulary", "does not fit the context",
                               "temperature", NULL};
    int k = 0;
    while (fgets(line, sizeof line, f) && k < 6) {
        json_error_t e;
        json_t *o2 = json_loads(line, 0, &e);
        CHECK(o2 != NULL, "output line %d is not JSON: %s", k + 1, line);
        if (!o2) { k++; continue; }
        json_t *id = json_object_get(o2, "id");
        if (want_id[k] && k != 1) CHECK(json_is_string(id) && !strcmp(json_string_value(id), want_id[k]),
                                        "output line %d has the wrong id: %s", k + 1, line);
        json_t *err = json_object_get(o2, "error");
        if (want_msg[k]) {
            const char *msg = err ? json_string_value(json_object_get(err, "message")) : NULL;
            CHECK(msg && mr_test_contains(msg, want_msg[k]), "line %d: want an error with '%s': %s", k + 1,
                  want_msg[k], line);
            CHECK(json_integer_value(json_object_get(o2, "line")) == want_line[k], "line %d: wrong line number: %s",
                  k + 1, line);
        } else {
            CHECK(!err && json_array_size(json_object_get(o2, "tokens")) > 0, "line %d: want tokens: %s", k + 1, line);
            CHECK(!strcmp(json_string_value(json_object_get(o2, "finish_reason")), "length"),
                  "line %d: finish_reason: %s", k + 1, line);
        }
        json_decref(o2);
        k++;
    }
    CHECK(k == 6, "%d output lines, want 6", k);
    fclose(f);
    mr_requests_free(reqs, n);
}

int main(void) {
    if (mr_backend_cpu_init(&be, 2) != 0) return 1;
    mr_model_options mo = {.max_slots = NREQ, .max_ctx = 64, .max_step_tokens = 256};
    if (mr_model_load(&model, mr_test_src("tests/fixtures/llama"), &mo, &be) != MR_OK) {
        fprintf(stderr, "%s\n", mr_last_error());
        return 1;
    }
    batch_invariance();
    jsonl_errors();
    mr_model_free(model);
    mr_backend_cpu_free(&be);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", mr_test_tmpdir());
    if (system(cmd) != 0) return 1;
    return mr_test_summary();
}
