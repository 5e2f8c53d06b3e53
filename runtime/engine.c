/* See engine.h.
 *
 * Stage 0 (the scheduler) keeps, per micro-batch g, the sequences that own
 * the KV slots of g.  A tick of micro-batch g:
 *   1. tokens sampled for g's previous step come back (last stage -> 0);
 *   2. finished sequences leave, waiting requests take their slots;
 *   3. a batch is packed under the token budget: one decode token per
 *      running sequence, then prefill chunks, oldest first;
 *   4. stage 0 runs its layers and sends metadata + activations on.
 * Stages 1..P-1 run what they receive; the last samples.  With one stage
 * all of this happens on one rank and no message is sent.
 *
 *   tick:     0    1    2    3    4   ...      (P = 2, micro-batches = 2)
 *   stage 0:  g0   g1   g0'  g1'  g0''
 *   stage 1:       g0   g1   g0'  g1'
 */
#define _GNU_SOURCE
#include "runtime/engine.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { TAG_BATCH = 101, TAG_TOKENS = 102 };

const char *mr_finish_name(mr_finish f) {
    static const char *n[MR_FINISH_COUNT] = {"none", "stop", "length", "error"};
    return (f >= 0 && f < MR_FINISH_COUNT) ? n[f] : "?";
}

void mr_request_clear(mr_request *r) {
    free(r->id_json);
    free(r->prompt);
    free(r->out);
    free(r->error);
    free(r->model);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->stop);
    free(r->text);
    memset(r, 0, sizeof *r);
}

/* What the last stage needs to sample one row. */
typedef struct row_sample {
    mr_sample_params p;
    uint64_t id_hash;
    int32_t position;
    int32_t pad;
} row_sample;

/* Header of a micro-batch travelling down the pipeline. */
typedef struct batch_hdr {
    int32_t ntok, n_out, group, stop;
} batch_hdr;

typedef struct seq {
    mr_request *r;
    int slot;
    int prefilled; /* prompt tokens already in the cache */
} seq;

typedef struct group {
    seq *run;
    int n_run;
    int *free_slots, n_free;
    seq **row_seq; /* sequences of the rows in flight */
    int n_rows;
    int in_flight;
} group;

typedef struct teacher_rec {
    uint64_t id_hash;
    int32_t position, token;
} teacher_rec;

typedef struct engine {
    mr_model *m;
    const mr_model_config *c;
    int B, budget, ctx, V, G; /* slots, tokens per step, context, vocab, groups */
    int P, stage;
    mr_comm *pipe, *lock, *sched;
    mr_engine_tick_fn tick;
    void *tick_user;
    group *g;
    int32_t *tok, *slot, *pos, *rows, *sampled;
    row_sample *rs;
    float *logits, *x;
    mr_sampler *smp;
    FILE *dump; /* logits of every sampled row, for plan-invariance tests */
    teacher_rec *teacher; /* sorted by (id hash, position) */
    size_t n_teacher;
    const mr_tokenizer *detok;
    mr_engine_stats s;
} engine;

static int teacher_cmp(const void *a, const void *b) {
    const teacher_rec *x = a, *y = b;
    if (x->id_hash != y->id_hash) return x->id_hash < y->id_hash ? -1 : 1;
    return (x->position > y->position) - (x->position < y->position);
}

static mr_status load_teacher(engine *e, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return mr_error(MR_ERR_IO, "cannot read %s", path);
    size_t cap = 0;
    teacher_rec r;
    while (fread(&r.id_hash, 8, 1, f) == 1 && fread(&r.position, 4, 1, f) == 1 && fread(&r.token, 4, 1, f) == 1) {
        if (r.token < 0 || r.token >= e->V) {
            fclose(f);
            return mr_error(MR_ERR_INPUT, "%s: record %zu: token %d outside the vocabulary", path, e->n_teacher,
                            (int)r.token);
        }
        if (e->n_teacher == cap) {
            teacher_rec *t = realloc(e->teacher, (cap = cap ? 2 * cap : 1024) * sizeof *t);
            if (!t) {
                fclose(f);
                return mr_error(MR_ERR_NOMEM, "out of memory reading %s", path);
            }
            e->teacher = t;
        }
        e->teacher[e->n_teacher++] = r;
    }
    fclose(f);
    qsort(e->teacher, e->n_teacher, sizeof *e->teacher, teacher_cmp);
    return MR_OK;
}

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
static mr_status validate(const engine *e, mr_request *r) {
    if (r->n_prompt <= 0) return refuse(r, "empty prompt");
    for (int i = 0; i < r->n_prompt; i++)
        if (r->prompt[i] < 0 || r->prompt[i] >= e->V)
            return refuse(r, "token id %d is outside the vocabulary (size %d)", r->prompt[i], e->V);
    if (r->n_prompt >= e->ctx)
        return refuse(r, "prompt of %d tokens does not fit the context of %d positions", r->n_prompt, e->ctx);
    if (r->max_tokens <= 0) return refuse(r, "max_tokens must be at least 1 (got %d)", r->max_tokens);
    return MR_OK;
}

static int is_stop(const mr_model_config *c, const mr_request *r, int tok) {
    if (!r->ignore_eos && mr_config_is_eos(c, tok)) return 1;
    for (int i = 0; i < r->n_stop_ids; i++)
        if (r->stop_ids[i] == tok) return 1;
    return 0;
}

static void engine_free(engine *e) {
    if (e->g)
        for (int i = 0; i < e->G; i++) {
            free(e->g[i].run);
            free(e->g[i].free_slots);
            free(e->g[i].row_seq);
        }
    free(e->g);
    free(e->tok);
    free(e->slot);
    free(e->pos);
    free(e->rows);
    free(e->sampled);
    free(e->rs);
    free(e->logits);
    mr_sampler_destroy(e->smp);
    if (e->dump) fclose(e->dump);
    free(e->teacher);
}

static mr_status engine_init(engine *e, mr_model *m, const mr_engine_options *opt) {
    const mr_model_options *mo = mr_model_get_options(m);
    memset(e, 0, sizeof *e);
    e->m = m;
    e->c = mr_model_get_config(m);
    e->B = opt->max_batch > 0 ? opt->max_batch : mo->max_slots;
    e->budget = opt->token_budget > 0 ? opt->token_budget : mo->max_step_tokens;
    if (e->B > mo->max_slots) e->B = mo->max_slots;
    if (e->budget > mo->max_step_tokens) e->budget = mo->max_step_tokens;
    if (e->budget < e->B) e->budget = e->B; /* every running sequence decodes each step */
    if (e->budget > mo->max_step_tokens)
        return mr_error(MR_ERR_INPUT, "max batch %d exceeds the %d tokens of one step", e->B, mo->max_step_tokens);
    e->ctx = mo->max_ctx;
    e->V = e->c->vocab;
    e->detok = opt->tok;
    const mr_engine_dist *d = opt->dist;
    e->P = d && d->pipe ? d->pipe->size : 1;
    e->stage = d && d->pipe ? d->pipe->rank : 0;
    e->pipe = d ? d->pipe : NULL;
    e->lock = d ? d->lockstep : NULL;
    e->sched = d && d->sched && d->sched->size > 1 ? d->sched : NULL;
    e->tick = opt->tick;
    e->tick_user = opt->tick_user;
    e->G = e->P > 1 && d->micro_batches > 1 ? d->micro_batches : 1;
    if (e->G > e->B) e->G = e->B;
    e->x = mr_model_activations(m);
    size_t bt = (size_t)e->budget, b = (size_t)e->B;
    e->g = calloc((size_t)e->G, sizeof *e->g);
    e->tok = malloc(bt * sizeof(int32_t));
    e->slot = malloc(bt * sizeof(int32_t));
    e->pos = malloc(bt * sizeof(int32_t));
    e->rows = malloc(bt * sizeof(int32_t));
    e->sampled = malloc(b * sizeof(int32_t));
    e->rs = malloc(b * sizeof(row_sample));
    e->logits = malloc(b * (size_t)e->V * sizeof(float));
    e->smp = mr_sampler_create(e->V);
    if (opt->dump_logits && e->stage == e->P - 1) {
        e->dump = fopen(opt->dump_logits, "wb");
        if (!e->dump) return mr_error(MR_ERR_IO, "cannot write %s", opt->dump_logits);
    }
    if (opt->teacher_tokens && e->stage == e->P - 1) MR_CHECK(load_teacher(e, opt->teacher_tokens));
    if (!e->g || !e->tok || !e->slot || !e->pos || !e->rows || !e->sampled || !e->rs || !e->logits || !e->smp)
        return mr_error(MR_ERR_NOMEM, "out of memory for the engine's step buffers");
    /* Slots are dealt to micro-batches: group k owns every G-th slot. */
    for (int k = 0; k < e->G; k++) {
        group *g = &e->g[k];
        g->run = calloc(b, sizeof(seq));
        g->free_slots = malloc(b * sizeof(int));
        g->row_seq = malloc(b * sizeof(seq *));
        if (!g->run || !g->free_slots || !g->row_seq) return mr_error(MR_ERR_NOMEM, "out of memory");
        for (int s = e->B - 1; s >= 0; s--)
            if (s % e->G == k) g->free_slots[g->n_free++] = s;
    }
    return MR_OK;
}

/* Sample the rows of the last forward (last stage). */
static void sample_rows(engine *e, int n_out) {
    for (int i = 0; i < n_out; i++)
        e->sampled[i] = mr_sample(e->smp, e->logits + (size_t)i * e->V, &e->rs[i].p, e->rs[i].id_hash,
                                  e->rs[i].position, NULL);
    if (e->dump) /* (id hash, position, vocab floats) per sampled row */
        for (int i = 0; i < n_out; i++) {
            fwrite(&e->rs[i].id_hash, sizeof(uint64_t), 1, e->dump);
            fwrite(&e->rs[i].position, sizeof(int32_t), 1, e->dump);
            fwrite(e->logits + (size_t)i * e->V, sizeof(float), (size_t)e->V, e->dump);
        }
    for (int i = 0; i < n_out && e->n_teacher; i++) {
        teacher_rec key = {.id_hash = e->rs[i].id_hash, .position = e->rs[i].position};
        const teacher_rec *t = bsearch(&key, e->teacher, e->n_teacher, sizeof key, teacher_cmp);
        if (t) e->sampled[i] = t->token;
    }
}

/* Tokens of group g's rows arrived: extend, decide who finished, retire. */
static mr_status apply_tokens(engine *e, group *g, mr_request_done_fn done, void *user, int *n_done) {
    for (int i = 0; i < g->n_rows; i++) {
        mr_request *r = g->row_seq[i]->r;
        int t = e->sampled[i];
        r->out[r->n_out++] = t;
        e->s.generated_tokens++;
        if (is_stop(e->c, r, t)) r->finish = MR_FINISH_STOP; /* its text is left out, as vLLM does */
        else if (e->detok) MR_CHECK(mr_request_text_push(r, e->detok, t));
        if (r->finish == MR_FINISH_NONE && (r->n_out >= r->max_tokens || r->n_prompt + r->n_out >= e->ctx))
            r->finish = MR_FINISH_LENGTH;
        if (r->finish != MR_FINISH_NONE && e->detok) MR_CHECK(mr_request_text_finish(r, e->detok));
    }
    g->n_rows = 0;
    g->in_flight = 0;
    int keep = 0;
    for (int i = 0; i < g->n_run; i++) {
        if (g->run[i].r->finish != MR_FINISH_NONE) {
            g->free_slots[g->n_free++] = g->run[i].slot;
            (*n_done)++;
            if (done) MR_CHECK(done(user, g->run[i].r));
        } else {
            g->run[keep++] = g->run[i];
        }
    }
    g->n_run = keep;
    return MR_OK;
}

/* Admit waiting requests into g's free slots, then pack its batch.
 * Returns the token count; rows needing logits are recorded in g. */
static mr_status pack(engine *e, group *g, mr_request *reqs, int n, int *next, mr_request_done_fn done, void *user,
                      int *n_done, int *T_out) {
    while (g->n_free > 0 && *next < n) {
        mr_request *r = &reqs[(*next)++];
        r->n_out = 0;
        if (r->finish != MR_FINISH_ERROR) MR_CHECK(validate(e, r));
        if (r->finish == MR_FINISH_ERROR) {
            (*n_done)++;
            if (done) MR_CHECK(done(user, r));
            continue;
        }
        free(r->out);
        int cap = r->max_tokens < e->ctx - r->n_prompt ? r->max_tokens : e->ctx - r->n_prompt;
        r->out = malloc((size_t)cap * sizeof(int32_t));
        if (!r->out) return mr_error(MR_ERR_NOMEM, "out of memory");
        r->n_text = 0;
        r->stop_hit = 0;
        if (e->detok) mr_tokenizer_stream_init(&r->stream, e->detok, 1);
        g->run[g->n_run++] = (seq){.r = r, .slot = g->free_slots[--g->n_free], .prefilled = 0};
    }
    int T = 0;
    g->n_rows = 0;
    for (int i = 0; i < g->n_run; i++) { /* decode tokens first */
        seq *q = &g->run[i];
        if (q->prefilled < q->r->n_prompt) continue;
        e->tok[T] = q->r->out[q->r->n_out - 1];
        e->slot[T] = q->slot;
        e->pos[T] = q->r->n_prompt + q->r->n_out - 1;
        e->rows[g->n_rows] = T;
        g->row_seq[g->n_rows++] = q;
        T++;
    }
    for (int i = 0; i < g->n_run && T < e->budget; i++) { /* then prefill chunks */
        seq *q = &g->run[i];
        int left = q->r->n_prompt - q->prefilled;
        if (left <= 0) continue;
        int take = left < e->budget - T ? left : e->budget - T;
        for (int j = 0; j < take; j++, T++) {
            e->tok[T] = q->r->prompt[q->prefilled + j];
            e->slot[T] = q->slot;
            e->pos[T] = q->prefilled + j;
        }
        q->prefilled += take;
        e->s.prompt_tokens += (uint64_t)take;
        if (q->prefilled == q->r->n_prompt) {
            e->rows[g->n_rows] = T - 1;
            g->row_seq[g->n_rows++] = q;
        }
    }
    for (int i = 0; i < g->n_rows; i++) {
        const mr_request *r = g->row_seq[i]->r;
        e->rs[i] = (row_sample){.p = r->sample, .id_hash = r->id_hash, .position = r->n_out};
    }
    *T_out = T;
    return MR_OK;
}

static mr_status send_batch(engine *e, const batch_hdr *h) {
    mr_comm *p = e->pipe;
    int to = e->stage + 1;
    MR_CHECK(p->ops->send(p, h, sizeof *h, to, TAG_BATCH));
    if (h->stop || h->ntok == 0) return MR_OK;
    size_t T = (size_t)h->ntok;
    MR_CHECK(p->ops->send(p, e->slot, T * sizeof(int32_t), to, TAG_BATCH));
    MR_CHECK(p->ops->send(p, e->pos, T * sizeof(int32_t), to, TAG_BATCH));
    if (h->n_out) {
        MR_CHECK(p->ops->send(p, e->rows, (size_t)h->n_out * sizeof(int32_t), to, TAG_BATCH));
        MR_CHECK(p->ops->send(p, e->rs, (size_t)h->n_out * sizeof(row_sample), to, TAG_BATCH));
    }
    mr_model_activations_move(e->m, h->ntok, 0); /* device -> host mirror (no-op on the CPU) */
    return p->ops->send(p, e->x, T * (size_t)e->c->hidden * sizeof(float), to, TAG_BATCH);
}

static mr_status recv_batch(engine *e, batch_hdr *h) {
    mr_comm *p = e->pipe;
    int from = e->stage - 1;
    MR_CHECK(p->ops->recv(p, h, sizeof *h, from, TAG_BATCH));
    if (h->stop || h->ntok == 0) return MR_OK;
    if (h->ntok > e->budget || h->n_out > e->B)
        return mr_error(MR_ERR_INTERNAL, "stage %d: batch of %d tokens / %d rows exceeds the limits", e->stage,
                        h->ntok, h->n_out);
    size_t T = (size_t)h->ntok;
    MR_CHECK(p->ops->recv(p, e->slot, T * sizeof(int32_t), from, TAG_BATCH));
    MR_CHECK(p->ops->recv(p, e->pos, T * sizeof(int32_t), from, TAG_BATCH));
    if (h->n_out) {
        MR_CHECK(p->ops->recv(p, e->rows, (size_t)h->n_out * sizeof(int32_t), from, TAG_BATCH));
        MR_CHECK(p->ops->recv(p, e->rs, (size_t)h->n_out * sizeof(row_sample), from, TAG_BATCH));
    }
    MR_CHECK(p->ops->recv(p, e->x, T * (size_t)e->c->hidden * sizeof(float), from, TAG_BATCH));
    mr_model_activations_move(e->m, h->ntok, 1);
    return MR_OK;
}

static mr_status forward(engine *e, int T, int n_out) {
    mr_batch b = {.ntok = T, .tokens = e->tok, .slot = e->slot, .pos = e->pos, .n_out = n_out, .out_rows = e->rows};
    return mr_model_forward(e->m, &b, e->logits);
}

/* Stages 1..P-1: run what arrives until told to stop. */
static mr_status serve(engine *e) {
    for (;;) {
        batch_hdr h;
        MR_CHECK(recv_batch(e, &h));
        int ignored = 0;
        if (e->tick) MR_CHECK(e->tick(e->tick_user, &ignored));
        if (h.stop) return e->stage + 1 < e->P ? send_batch(e, &h) : MR_OK;
        MR_CHECK(forward(e, h.ntok, h.n_out));
        e->s.steps++;
        if (e->stage + 1 < e->P) {
            MR_CHECK(send_batch(e, &h));
        } else if (h.n_out) {
            sample_rows(e, h.n_out);
            MR_CHECK(e->pipe->ops->send(e->pipe, e->sampled, (size_t)h.n_out * sizeof(int32_t), 0, TAG_TOKENS));
        }
    }
}

mr_status mr_engine_run(mr_model *m, mr_request *reqs, int n, const mr_engine_options *opt,
                        mr_request_done_fn done, void *user, mr_engine_stats *stats) {
    engine e;
    mr_status st = engine_init(&e, m, opt);
    double t0 = now_s();
    if (st != MR_OK) goto out;
    if (e.stage > 0) {
        st = serve(&e);
        goto out;
    }
    int next = 0, n_done = 0;
    int level = MR_STOP_NONE; /* agreed with sched / lockstep peers */
    int asked = MR_STOP_NONE; /* asked by this rank's hook */
    mr_comm *agree = e.lock ? e.lock : e.tick ? e.sched : NULL;
    for (long tick = 0;; tick++) {
        group *g = &e.g[tick % e.G];
        if (g->in_flight) {
            MR_CHECK_GOTO(e.pipe->ops->recv(e.pipe, e.sampled, (size_t)g->n_rows * sizeof(int32_t), e.P - 1,
                                            TAG_TOKENS),
                          st, out);
            MR_CHECK_GOTO(apply_tokens(&e, g, done, user, &n_done), st, out);
        }
        if (e.tick) {
            int want = MR_STOP_NONE;
            MR_CHECK_GOTO(e.tick(e.tick_user, &want), st, out);
            if (want > asked) asked = want;
            if (!agree && asked > level) level = asked;
        }
        int T = 0;
        if (level < MR_STOP_NOW) /* draining: no admission (n = next) */
            MR_CHECK_GOTO(pack(&e, g, reqs, level == MR_STOP_NONE ? n : next, &next, done, user, &n_done, &T), st,
                          out);
        else
            g->n_rows = 0;
        int running = 0, in_flight = 0;
        for (int k = 0; k < e.G; k++) running += e.g[k].n_run, in_flight |= e.g[k].in_flight;
        int v[2] = {in_flight || (level < MR_STOP_NOW && running > 0) || (level == MR_STOP_NONE && next < n), asked};
        /* the level agreed here applies from the next tick on, identically
         * on every peer */
        if (agree) MR_CHECK_GOTO(agree->ops->allreduce_max_i32(agree, v, 2), st, out);
        if (agree && v[1] > level) level = v[1];
        if (!v[0]) break;
        if (T == 0 && !e.lock) continue; /* nothing to run for this micro-batch now */
        MR_CHECK_GOTO(forward(&e, T, e.P == 1 ? g->n_rows : 0), st, out);
        e.s.steps++;
        if (e.P == 1) {
            sample_rows(&e, g->n_rows);
            MR_CHECK_GOTO(apply_tokens(&e, g, done, user, &n_done), st, out);
        } else {
            batch_hdr h = {.ntok = T, .n_out = T ? g->n_rows : 0, .group = (int)(tick % e.G)};
            MR_CHECK_GOTO(send_batch(&e, &h), st, out);
            g->in_flight = h.n_out > 0;
            if (!g->in_flight) MR_CHECK_GOTO(apply_tokens(&e, g, done, user, &n_done), st, out);
        }
    }
    e.s.stop = level;
    e.s.abandoned = n - n_done;
    if (e.P > 1) {
        batch_hdr h = {.stop = 1};
        st = send_batch(&e, &h);
    }
out:
    e.s.seconds = now_s() - t0;
    if (stats) *stats = e.s;
    engine_free(&e);
    return st;
}
