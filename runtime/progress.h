/* A communication progress thread: runs queued jobs, in order, while the
 * caller computes.  A job is a function that communicates (an all-reduce,
 * an all-to-all); while one runs, the communicators named at create issue
 * nonblocking calls and sleep between tests (comm.h, wait_sleep_us), so the
 * caller's GEMM threads keep the cores; when the caller waits, the sleeps
 * stop.  The caller must not use those communicators until it has waited.
 *
 * Every rank of a communicator must take this path alike: a blocking
 * collective never matches a nonblocking one.  Needs communicators that
 * allow calls from a second thread (thread_serialized). */
#ifndef MR_PROGRESS_H
#define MR_PROGRESS_H

#include <stddef.h>

#include "runtime/comm.h"
#include "runtime/status.h"

#define MR_PROGRESS_POLL_US 20 /* first sleep between tests, doubling (env MR_PROGRESS_POLL_US) */
#define MR_PROGRESS_QUEUE 64   /* jobs queued at most */

typedef struct mr_progress mr_progress;
/* Runs one job (a copy of what was passed to mr_progress_start). */
typedef mr_status (*mr_progress_fn)(void *ctx, void *job);

/* A thread for jobs of `job_bytes` bytes run by fn(ctx, job), waiting
 * politely on comms[0..n_comms) (NULL entries are skipped). */
mr_status mr_progress_create(mr_comm *const *comms, int n_comms, mr_progress_fn fn, void *ctx, size_t job_bytes,
                             mr_progress **out);
/* Queue a job (copied); blocks while the queue is full. */
mr_status mr_progress_start(mr_progress *p, const void *job);
/* Wait for every queued job; the first failure since the last wait. */
mr_status mr_progress_wait(mr_progress *p);
void mr_progress_destroy(mr_progress *p);

#endif
