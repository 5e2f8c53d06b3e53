/* The running side of `moerun generate` that makes a long job safe to
 * stop and watch (cmd-generate-job.c):
 *   - stop signals (SIGTERM, SIGUSR1, SIGINT) set a flag; the engine's tick
 *     hook turns it into a stop level that every scheduler rank applies at
 *     the same tick (a rank that saw a signal tells rank 0, which tells
 *     every first-stage rank);
 *   - result lines travel to rank 0 as each request ends (nonblocking
 *     sends), and rank 0 appends them to the output at once;
 *   - progress on rank 0's stderr and the final summary.
 * Control messages use their own duplicate of the world communicator, so
 * they never match the model's traffic. */
#ifndef MR_GENERATE_JOB_H
#define MR_GENERATE_JOB_H

#include "runtime/comm.h"
#include "runtime/engine.h"
#include "runtime/output.h"

/* Exit status of a job stopped by a signal before every request was
 * answered (EX_TEMPFAIL: run the same command again to resume). */
#define MR_EXIT_STOPPED 75

/* Handlers for SIGTERM, SIGUSR1 and SIGINT: the first asks for a drain,
 * the second for a stop now, the third ends the process. */
void mr_gen_signals_install(void);
/* Signals received so far (any of the three). */
int mr_gen_signals(void);

typedef struct mr_gen_options {
    mr_comm *world;
    int reporter;             /* first stage, tensor 0: sends its replica's lines */
    int first_stage;          /* schedules requests (receives stop notices) */
    const int *first_ranks;   /* world ranks of every first-stage rank */
    int n_first;
    int n_replicas;           /* reporters, rank 0 included */
    mr_output *out;           /* rank 0 */
    const mr_format_info *info;
    int total;                /* requests of the input */
    double stop_grace;        /* seconds */
    double progress_interval; /* seconds between log lines (0: none) */
    int quiet;
} mr_gen_options;

typedef struct mr_gen mr_gen;

mr_status mr_gen_create(mr_gen **out, const mr_gen_options *opt);
void mr_gen_destroy(mr_gen *g);

/* Engine hooks (user = the mr_gen). */
mr_status mr_gen_tick(void *user, int *stop);
mr_status mr_gen_done(void *user, mr_request *r);

/* After the engine: reporters send their last lines and an end mark;
 * rank 0 writes every replica's lines until all end marks are in. */
mr_status mr_gen_finish(mr_gen *g);

/* Requests this rank saw end, and (rank 0) job-wide: lines written this
 * run, of which without error record. */
int mr_gen_done_here(const mr_gen *g);
int mr_gen_answered_here(const mr_gen *g);

/* Collective over the world: the summary on rank 0 (wall and generation
 * time, tokens/s, communication time per rank, expert imbalance when
 * imbalance > 0).  comm_s: this rank's seconds in communicator calls. */
mr_status mr_gen_summary(mr_gen *g, const mr_engine_stats *stats, double comm_s, double imbalance, double wall_s);

/* This rank's seconds in its control communicator. */
double mr_gen_comm_seconds(const mr_gen *g);

#endif
