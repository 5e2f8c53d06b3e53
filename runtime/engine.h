/* The generation engine: continuous batching of requests over one model.
 *
 * Each step packs, under a token budget, one decode token for every
 * running sequence, then prefill chunks of sequences still reading their
 * prompt, admitting waiting requests into free KV-cache slots as soon as a
 * sequence finishes (the batch never drains to refill). */
#ifndef MR_ENGINE_H
#define MR_ENGINE_H

#include <stdint.h>

#include "runtime/model.h"
#include "runtime/sampler.h"
#include "runtime/tokenizer.h"

#define MR_MAX_STOP_IDS 16
#define MR_MAX_STOP_STRINGS 16

typedef enum mr_finish {
    MR_FINISH_NONE = 0,
    MR_FINISH_STOP,   /* EOS or a stop token */
    MR_FINISH_LENGTH, /* max_tokens or the context */
    MR_FINISH_ERROR,  /* the request was refused; see error */
    MR_FINISH_COUNT
} mr_finish;

const char *mr_finish_name(mr_finish f);

/* The format a request line came in, and its result goes out in. */
typedef enum mr_request_api {
    MR_API_NATIVE = 0,  /* {"id", "tokens" | "prompt", ...} */
    MR_API_COMPLETIONS, /* OpenAI batch line, url /v1/completions */
    MR_API_COUNT
} mr_request_api;

typedef struct mr_request {
    int index;          /* order in the input */
    int line;           /* input line number (1-based), 0 if none */
    char *id_json;      /* the id as JSON text */
    uint64_t id_hash;
    int32_t *prompt;
    int n_prompt;
    int max_tokens;
    int ignore_eos;
    int32_t stop_ids[MR_MAX_STOP_IDS];
    int n_stop_ids;
    mr_sample_params sample;
    mr_request_api api;
    char *model;        /* OpenAI "model" as given (NULL: none) */
    char **stop;        /* stop strings (need a tokenizer) */
    int n_stop;
    /* results */
    int32_t *out;
    int n_out;
    mr_finish finish;
    int stop_hit;       /* 1 + index of the stop string that ended it, else 0 */
    char *error;
    /* Completion text, when the engine runs with a tokenizer: the streamed
     * decode of the generated tokens (special tokens skipped, the text of a
     * stop token left out), cut before a stop string. */
    char *text;
    size_t n_text, cap_text;
    mr_tokenizer_stream stream;
} mr_request;

/* A pipeline of stages (one rank per stage in `pipe`, ranks = stage
 * index).  Stage 0 schedules and the last stage samples; activations flow
 * down with each micro-batch's metadata and sampled tokens flow back.
 * `lockstep` (may be NULL) holds the first-stage ranks of replicas whose
 * expert exchanges must line up: they tick together, idle ones with empty
 * batches, until all are done. */
typedef struct mr_engine_dist {
    mr_comm *pipe;
    int micro_batches; /* in flight at once (>= 1) */
    mr_comm *lockstep;
    /* The first-stage ranks that schedule these same requests (the tensor
     * group of stage 0), NULL when alone.  With a tick hook they agree on
     * the stop level once per tick (one small all-reduce; piggybacked on
     * the lockstep one when there is lockstep). */
    mr_comm *sched;
} mr_engine_dist;

/* How far a job being stopped (a signal) has got; levels only rise. */
typedef enum mr_engine_stop {
    MR_STOP_NONE = 0,
    MR_STOP_DRAIN, /* admit no more requests, finish the running ones */
    MR_STOP_NOW,   /* abandon the running ones too (done is not called for them) */
    MR_STOP_COUNT
} mr_engine_stop;

/* Called on a first stage once per tick before the batch is packed, and on
 * later stages once per batch received; a first stage's *stop (in: 0)
 * is the level this rank asks for.  All ranks of `sched` / `lockstep`
 * apply the highest level asked, at the same tick. */
typedef mr_status (*mr_engine_tick_fn)(void *user, int *stop);

typedef struct mr_engine_options {
    int max_batch;    /* sequences at once (<= model max_slots) */
    int token_budget; /* tokens per step (<= model max_step_tokens) */
    const mr_engine_dist *dist; /* NULL: one rank runs every stage */
    const char *dump_logits;    /* last stage: write every sampled row's logits here (tests) */
    const char *teacher_tokens; /* tests: records (id hash u64, position i32, token i32); a row
                                 * listed there continues with that token instead of the one
                                 * sampled (teacher forcing: per-token agreement of two runs) */
    const mr_tokenizer *tok;    /* first stage: decode results into r->text, apply stop strings */
    mr_engine_tick_fn tick;     /* optional */
    void *tick_user;
} mr_engine_options;

typedef struct mr_engine_stats {
    uint64_t prompt_tokens, generated_tokens, steps;
    double seconds;
    int stop;      /* the stop level reached (MR_STOP_NONE: ran to the end) */
    int abandoned; /* requests left unanswered by the stop (admitted or not) */
} mr_engine_stats;

/* Called once per request when it ends (also for refused requests). */
typedef mr_status (*mr_request_done_fn)(void *user, mr_request *r);

/* Run every request to completion (on a first stage; later stages pass
 * n = 0 and serve until stage 0 says stop), or until a tick hook stops it.  Requests that cannot run (empty
 * prompt, token outside the vocabulary, longer than the context) end with
 * MR_FINISH_ERROR and a message; the others go on. */
mr_status mr_engine_run(mr_model *m, mr_request *reqs, int n, const mr_engine_options *opt,
                        mr_request_done_fn done, void *user, mr_engine_stats *stats);

void mr_request_clear(mr_request *r);

/* Text of results (requests-text.c).  push: append the text that generated
 * token `id` completes; when a stop string appears the text is cut before
 * it and r->finish becomes MR_FINISH_STOP.  finish: end of the stream (a
 * held incomplete UTF-8 sequence becomes U+FFFD, unless a stop string cut
 * the text). */
mr_status mr_request_text_push(mr_request *r, const mr_tokenizer *t, int32_t id);
mr_status mr_request_text_finish(mr_request *r, const mr_tokenizer *t);

#endif
