/* See progress.h. */
#define _GNU_SOURCE
#include "runtime/progress.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_COMMS 4

struct mr_progress {
    mr_comm *comms[MAX_COMMS];
    int n_comms;
    mr_progress_fn fn;
    void *ctx;
    size_t job_bytes;
    unsigned char *jobs; /* MR_PROGRESS_QUEUE x job_bytes */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int head, tail, stop;
    _Atomic int hurry; /* the caller waits: communicate without sleeping */
    mr_status status;
    char error[512];
};

/* MR_PROGRESS_POLL_US overrides the first sleep (0 = block in MPI_Wait). */
static int poll_us(void) {
    static _Atomic int v = -2;
    int x = atomic_load(&v);
    if (x == -2) {
        const char *e = getenv("MR_PROGRESS_POLL_US");
        x = e && *e ? atoi(e) : MR_PROGRESS_POLL_US;
        if (x < 0) x = 0;
        atomic_store(&v, x);
    }
    return x;
}

static void set_wait_sleep(mr_progress *p, int us) {
    for (int i = 0; i < p->n_comms; i++) atomic_store_explicit(&p->comms[i]->wait_sleep_us, us, memory_order_relaxed);
}

/* Waits in progress stop sleeping (nonblocking stays nonblocking). */
static void hurry(mr_progress *p) {
    for (int i = 0; i < p->n_comms; i++) {
        int v = atomic_load(&p->comms[i]->wait_sleep_us);
        while (v > 0 && !atomic_compare_exchange_weak(&p->comms[i]->wait_sleep_us, &v, -1)) {
        }
    }
}

static void *progress_main(void *arg) {
    mr_progress *p = arg;
    if (p->n_comms && !strcmp(p->comms[0]->ops->name, "mpi")) mr_comm_mpi_fine_timers();
    /* MR_PROGRESS_NICE: the thread's nice value (negative needs root or
     * CAP_SYS_NICE).  Default: the caller's.  -10 helped unbound ranks (a
     * peer's exchange step waits on this thread) but cost 5-10% with ranks
     * pinned to their cores, as moerun binds them: it preempts its own
     * rank's GEMM at every wake-up (bench-overlap over TCP, 2 ranks). */
    const char *nice_env = getenv("MR_PROGRESS_NICE");
    if (nice_env && *nice_env) setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), atoi(nice_env));
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->head == p->tail && !p->stop) pthread_cond_wait(&p->cv, &p->mu);
        if (p->head == p->tail) break; /* stop, queue drained */
        void *job = p->jobs + (size_t)(p->head % MR_PROGRESS_QUEUE) * p->job_bytes;
        int failed = p->status != MR_OK;
        pthread_mutex_unlock(&p->mu);
        set_wait_sleep(p, atomic_load(&p->hurry) ? -1 : poll_us());
        /* after a failure the rest are skipped: the caller gets the first */
        mr_status st = failed ? MR_OK : p->fn(p->ctx, job);
        set_wait_sleep(p, 0);
        pthread_mutex_lock(&p->mu);
        if (st != MR_OK && p->status == MR_OK) {
            p->status = st;
            snprintf(p->error, sizeof p->error, "%s", mr_last_error());
        }
        p->head++;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

mr_status mr_progress_create(mr_comm *const *comms, int n_comms, mr_progress_fn fn, void *ctx, size_t job_bytes,
                             mr_progress **out) {
    *out = NULL;
    mr_progress *p = calloc(1, sizeof *p);
    if (!p) return mr_error(MR_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n_comms; i++) {
        if (!comms[i]) continue;
        if (p->n_comms == MAX_COMMS || !comms[i]->thread_serialized) {
            const char *why = p->n_comms == MAX_COMMS ? "too many communicators" : "communicator not thread-safe";
            free(p);
            return mr_error(MR_ERR_INTERNAL, "progress thread: %s", why);
        }
        p->comms[p->n_comms++] = comms[i];
    }
    p->fn = fn;
    p->ctx = ctx;
    p->job_bytes = job_bytes;
    p->jobs = calloc(MR_PROGRESS_QUEUE, job_bytes ? job_bytes : 1);
    if (!p->jobs) {
        free(p);
        return mr_error(MR_ERR_NOMEM, "out of memory");
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (pthread_create(&p->thread, NULL, progress_main, p) != 0) {
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
        free(p->jobs);
        free(p);
        return mr_error(MR_ERR_INTERNAL, "cannot start a progress thread");
    }
    *out = p;
    return MR_OK;
}

mr_status mr_progress_start(mr_progress *p, const void *job) {
    pthread_mutex_lock(&p->mu);
    while (p->tail - p->head >= MR_PROGRESS_QUEUE) pthread_cond_wait(&p->cv, &p->mu);
    memcpy(p->jobs + (size_t)(p->tail % MR_PROGRESS_QUEUE) * p->job_bytes, job, p->job_bytes);
    p->tail++;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return MR_OK;
}

mr_status mr_progress_wait(mr_progress *p) {
    /* nothing left to overlap with: the thread stops sleeping */
    atomic_store(&p->hurry, 1);
    hurry(p);
    pthread_mutex_lock(&p->mu);
    while (p->head != p->tail) pthread_cond_wait(&p->cv, &p->mu);
    atomic_store(&p->hurry, 0);
    mr_status st = p->status;
    char msg[sizeof p->error];
    memcpy(msg, p->error, sizeof msg);
    p->status = MR_OK;
    pthread_mutex_unlock(&p->mu);
    return st == MR_OK ? MR_OK : mr_error(st, "%s", msg);
}

void mr_progress_destroy(mr_progress *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->jobs);
    free(p);
}
