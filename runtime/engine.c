/* See engine.h.  State per running sequence: its request, its KV slot, how
 * many prompt tokens are in the cache, and the tokens generated so far. */
#define _GNU_SOURCE
#include "runtime/engine.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *mr_finish_name(mr_finish f) {
    static const char *n[MR_FINISH_COUNT] = {"none", "stop", "length", "error"};
    return (f >= 0 && f < MR_FINISH_COUNT) ? n[f] : "?";
}

void mr_request_clear(mr_request *r) {
    free(r->id_json);
    free(r->prompt);
    free(r->out);
    free(r->error);
    memset(r, 0, sizeof *r);
}

typedef struct seq {
    mr_request *r;
    int slot;
    int prefilled; /* prompt tokens already in the cache */
} seq;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static mr_status refuse(mr_request *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static mr_status refuse(mr_request *r, const char *fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    r->error = strdup(buf);
    r->finish = MR_FINISH_ERROR;
    return r->error ? MR_OK : mr_error(MR_ERR_NOMEM, "out of memory");
}

/* Requests that can never run are refused before admission. */
static mr_status validate(const mr_model *m, mr_request *r) {
    const mr_model_config *c = mr_model_get_config(m);
    int ctx = mr_model_get_options(m)->max_ctx;
    if (r->n_prompt <= 0) return refuse(r, "empty prompt");
    for (int i = 0; i < r->n_prompt; i++)
        if (r->prompt[i] < 0 || r->prompt[i] >= c->vocab)
            return refuse(r, "token id %d is outside the vocabulary (size %d)", r->prompt[i], c->vocab);
    if (r->n_prompt >= ctx)
        return refuse(r, "prompt of %d tokens does not fit the context of %d positions", r->n_prompt, ctx);
    if (r->max_tokens <= 0) return refuse(r, "max_tokens must be at least 1 (got %d)", r->max_tokens);
    return MR_OK;
}

static int is_stop(const mr_model_config *c, const mr_request *r, int tok) {
    if (!r->ignore_eos && mr_config_is_eos(c, tok)) return 1;
    for (int i = 0; i < r->n_stop_ids; i++)
        if (r->stop_ids[i] == tok) return 1;
    return 0;
}

mr_status mr_engine_run(mr_model *m, mr_request *reqs, int n, const mr_engine_options *opt,
                        mr_request_done_fn done, void *user, mr_engine_stats *stats) {
    const mr_model_config *c = mr_model_get_config(m);
    const mr_model_options *mo = mr_model_get_options(m);
    int B = opt->max_batch > 0 ? opt->max_batch : mo->max_slots;
    int budget = opt->token_budget > 0 ? opt->token_budget : mo->max_step_tokens;
    if (B > mo->max_slots) B = mo->max_slots;
    if (budget > mo->max_step_tokens) budget = mo->max_step_tokens;
    if (budget < B) budget = B; /* every running sequence decodes each step */
    if (budget > mo->max_step_tokens)
        return mr_error(MR_ERR_INPUT, "max batch %d exceeds the %d tokens of one step", B, mo->max_step_tokens);
    int ctx = mo->max_ctx, V = c->vocab;
    mr_status st = MR_OK;
    seq *run = calloc((size_t)B, sizeof *run);
    int32_t *tok = malloc((size_t)budget * sizeof(int32_t)), *slot = malloc((size_t)budget * sizeof(int32_t));
    int32_t *pos = malloc((size_t)budget * sizeof(int32_t)), *rows = malloc((size_t)B * sizeof(int32_t));
    seq **row_seq = malloc((size_t)B * sizeof(seq *));
    float *logits = malloc((size_t)B * (size_t)V * sizeof(float));
    int *free_slots = malloc((size_t)B * sizeof(int));
    mr_sampler *smp = mr_sampler_create(V);
    if (!run || !tok || !slot || !pos || !rows || !row_seq || !logits || !free_slots || !smp) {
        st = mr_error(MR_ERR_NOMEM, "out of memory for the engine's step buffers");
        goto out;
    }
    for (int i = 0; i < B; i++) free_slots[i] = B - 1 - i;
    int n_free = B, n_run = 0, next = 0, n_done = 0;
    mr_engine_stats s = {0};
    double t0 = now_s();
    while (n_done < n) {
        /* Admit waiting requests into free slots; refuse the impossible. */
        while (n_free > 0 && next < n) {
            mr_request *r = &reqs[next++];
            r->n_out = 0;
            if (r->finish != MR_FINISH_ERROR) MR_CHECK_GOTO(validate(m, r), st, out);
            if (r->finish == MR_FINISH_ERROR) {
                n_done++;
                if (done) MR_CHECK_GOTO(done(user, r), st, out);
                continue;
            }
            free(r->out);
            int cap = r->max_tokens < ctx - r->n_prompt ? r->max_tokens : ctx - r->n_prompt;
            r->out = malloc((size_t)cap * sizeof(int32_t));
            if (!r->out) { st = mr_error(MR_ERR_NOMEM, "out of memory"); goto out; }
            run[n_run++] = (seq){.r = r, .slot = free_slots[--n_free], .prefilled = 0};
        }
        if (n_run == 0) continue; /* only refused requests were left */
        /* Decode tokens first: one per sequence past its prompt. */
        int T = 0, n_rows = 0;
        for (int i = 0; i < n_run; i++) {
            seq *q = &run[i];
            if (q->prefilled < q->r->n_prompt) continue;
            tok[T] = q->r->out[q->r->n_out - 1];
            slot[T] = q->slot;
            pos[T] = q->r->n_prompt + q->r->n_out - 1;
            rows[n_rows] = T;
            row_seq[n_rows++] = q;
            T++;
        }
        /* Then prefill chunks, oldest first, under the budget. */
        for (int i = 0; i < n_run && T < budget; i++) {
            seq *q = &run[i];
            int left = q->r->n_prompt - q->prefilled;
            if (left <= 0) continue;
            int take = left < budget - T ? left : budget - T;
            for (int j = 0; j < take; j++, T++) {
                tok[T] = q->r->prompt[q->prefilled + j];
                slot[T] = q->slot;
                pos[T] = q->prefilled + j;
            }
            q->prefilled += take;
            s.prompt_tokens += (uint64_t)take;
            if (q->prefilled == q->r->n_prompt) {
                rows[n_rows] = T - 1;
                row_seq[n_rows++] = q;
            }
        }
        mr_batch b = {.ntok = T, .tokens = tok, .slot = slot, .pos = pos, .n_out = n_rows, .out_rows = rows};
        MR_CHECK_GOTO(mr_model_forward(m, &b, logits), st, out);
        s.steps++;
        for (int i = 0; i < n_rows; i++) {
            mr_request *r = row_seq[i]->r;
            int t = mr_sample(smp, logits + (size_t)i * V, &r->sample, r->id_hash, r->n_out, NULL);
            r->out[r->n_out++] = t;
            s.generated_tokens++;
            if (is_stop(c, r, t)) r->finish = MR_FINISH_STOP;
            else if (r->n_out >= r->max_tokens || r->n_prompt + r->n_out >= ctx) r->finish = MR_FINISH_LENGTH;
        }
        /* Retire finished sequences; their slots go to the next admissions. */
        int keep = 0;
        for (int i = 0; i < n_run; i++) {
            if (run[i].r->finish != MR_FINISH_NONE) {
                free_slots[n_free++] = run[i].slot;
                n_done++;
                if (done) MR_CHECK_GOTO(done(user, run[i].r), st, out);
            } else {
                run[keep++] = run[i];
            }
        }
        n_run = keep;
    }
    s.seconds = now_s() - t0;
    if (stats) *stats = s;
out:
    free(run);
    free(tok);
    free(slot);
    free(pos);
    free(rows);
    free(row_seq);
    free(logits);
    free(free_slots);
    mr_sampler_destroy(smp);
    return st;
}
