/* mr_comm on MPI: host buffers, any transport Open MPI selects.  Message
 * sizes above INT_MAX are sent in pieces. */
#define _GNU_SOURCE /* nanosleep, prctl */
#include <limits.h>
#include <mpi.h>
#include <sys/prctl.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/comm.h"

#define MPI_CHECK(call)                                                                    \
    do {                                                                                   \
        int mr_rc_ = (call);                                                               \
        if (mr_rc_ != MPI_SUCCESS) {                                                       \
            char mr_es_[MPI_MAX_ERROR_STRING];                                             \
            int mr_el_ = 0;                                                                \
            MPI_Error_string(mr_rc_, mr_es_, &mr_el_);                                     \
            return mr_error(MR_ERR_INTERNAL, "%s:%d: %s failed: %s", __FILE__, __LINE__, #call, mr_es_); \
        }                                                                                  \
    } while (0)

#define MAX_PIECE ((size_t)1 << 30)

static MPI_Comm mc(mr_comm *c) { return *(MPI_Comm *)c->impl; }

/* Complete requests: MPI_Waitall, or (wait_sleep_us > 0) test and sleep. */
static int blocking(mr_comm *c) { return atomic_load_explicit(&c->wait_sleep_us, memory_order_relaxed) == 0; }

static int wait_all(mr_comm *c, int n, MPI_Request *r) {
    if (atomic_load_explicit(&c->wait_sleep_us, memory_order_relaxed) <= 0)
        return MPI_Waitall(n, r, MPI_STATUSES_IGNORE);
    /* sleeps double from wait_sleep_us up to 32 times that: quick
     * completions stay quick, long waits wake the core rarely */
    long us = c->wait_sleep_us;
    for (;;) {
        int done = 0, rc = MPI_Testall(n, r, &done, MPI_STATUSES_IGNORE);
        if (rc != MPI_SUCCESS || done) return rc;
        struct timespec ts = {0, us * 1000L};
        nanosleep(&ts, NULL);
        int base = atomic_load_explicit(&c->wait_sleep_us, memory_order_relaxed);
        if (base <= 0) return MPI_Waitall(n, r, MPI_STATUSES_IGNORE); /* hurried */
        if (us < 32L * base) us *= 2;
    }
}

void mr_comm_mpi_fine_timers(void) {
    /* sleeps of tens of microseconds need a small timer slack (default 50 us) */
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
}

static mr_status m_allreduce_sum(mr_comm *c, float *buf, size_t n) {
    for (size_t off = 0; off < n; off += MAX_PIECE / 4) {
        size_t k = n - off < MAX_PIECE / 4 ? n - off : MAX_PIECE / 4;
        if (blocking(c)) {
            MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)k, MPI_FLOAT, MPI_SUM, mc(c)));
        } else {
            MPI_Request r;
            MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, buf + off, (int)k, MPI_FLOAT, MPI_SUM, mc(c), &r));
            MPI_CHECK(wait_all(c, 1, &r));
        }
    }
    return MR_OK;
}

static mr_status m_allreduce_max(mr_comm *c, int *v, int n) {
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_INT, MPI_MAX, mc(c)));
    return MR_OK;
}

static mr_status m_allgather(mr_comm *c, const void *send, void *recv, size_t bytes) {
    if (bytes > INT_MAX) return mr_error(MR_ERR_INTERNAL, "allgather of %zu bytes per rank", bytes);
    if (blocking(c)) {
        MPI_CHECK(MPI_Allgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, mc(c)));
    } else {
        MPI_Request r;
        MPI_CHECK(MPI_Iallgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, mc(c), &r));
        MPI_CHECK(wait_all(c, 1, &r));
    }
    return MR_OK;
}

static mr_status m_alltoallv(mr_comm *c, const void *send, const int *sc, const int *sd, void *recv, const int *rc,
                             const int *rd, size_t elem) {
    MPI_Datatype t;
    MPI_CHECK(MPI_Type_contiguous((int)elem, MPI_BYTE, &t));
    MPI_CHECK(MPI_Type_commit(&t));
    int rc_;
    if (blocking(c)) {
        rc_ = MPI_Alltoallv(send, sc, sd, t, recv, rc, rd, t, mc(c));
    } else {
        MPI_Request r;
        rc_ = MPI_Ialltoallv(send, sc, sd, t, recv, rc, rd, t, mc(c), &r);
        if (rc_ == MPI_SUCCESS) rc_ = wait_all(c, 1, &r);
    }
    MPI_Type_free(&t);
    MPI_CHECK(rc_);
    return MR_OK;
}

static mr_status m_sendrecv(mr_comm *c, const void *sbuf, size_t sbytes, int dest, void *rbuf, size_t rbytes,
                            int src, int tag) {
    if (sbytes > INT_MAX || rbytes > INT_MAX)
        return mr_error(MR_ERR_INTERNAL, "sendrecv of %zu/%zu bytes", sbytes, rbytes);
    if (blocking(c)) {
        MPI_CHECK(MPI_Sendrecv(sbuf, (int)sbytes, MPI_BYTE, dest, tag, rbuf, (int)rbytes, MPI_BYTE, src, tag, mc(c),
                               MPI_STATUS_IGNORE));
        return MR_OK;
    }
    MPI_Request r[2];
    MPI_CHECK(MPI_Irecv(rbuf, (int)rbytes, MPI_BYTE, src, tag, mc(c), &r[0]));
    MPI_CHECK(MPI_Isend(sbuf, (int)sbytes, MPI_BYTE, dest, tag, mc(c), &r[1]));
    MPI_CHECK(wait_all(c, 2, r));
    return MR_OK;
}

static mr_status m_send(mr_comm *c, const void *buf, size_t bytes, int peer, int tag) {
    const char *p = buf;
    do {
        size_t k = bytes < MAX_PIECE ? bytes : MAX_PIECE;
        MPI_CHECK(MPI_Send(p, (int)k, MPI_BYTE, peer, tag, mc(c)));
        p += k;
        bytes -= k;
    } while (bytes > 0);
    return MR_OK;
}

static mr_status m_recv(mr_comm *c, void *buf, size_t bytes, int peer, int tag) {
    char *p = buf;
    do {
        size_t k = bytes < MAX_PIECE ? bytes : MAX_PIECE;
        MPI_Status s;
        MPI_CHECK(MPI_Recv(p, (int)k, MPI_BYTE, peer, tag, mc(c), &s));
        int got;
        MPI_Get_count(&s, MPI_BYTE, &got);
        if ((size_t)got != k)
            return mr_error(MR_ERR_INTERNAL, "message from rank %d (tag %d): %d bytes, expected %zu", peer, tag, got, k);
        p += k;
        bytes -= k;
    } while (bytes > 0);
    return MR_OK;
}

static mr_status m_recv_any(mr_comm *c, int tag, int block, void **buf, size_t *bytes, int *peer, int *got) {
    MPI_Status s;
    int flag = 1;
    *got = 0;
    if (block) MPI_CHECK(MPI_Probe(MPI_ANY_SOURCE, tag, mc(c), &s));
    else MPI_CHECK(MPI_Iprobe(MPI_ANY_SOURCE, tag, mc(c), &flag, &s));
    if (!flag) return MR_OK;
    int n;
    MPI_Get_count(&s, MPI_BYTE, &n);
    *buf = malloc(n ? (size_t)n : 1);
    if (!*buf) return mr_error(MR_ERR_NOMEM, "out of memory receiving %d bytes", n);
    MPI_CHECK(MPI_Recv(*buf, n, MPI_BYTE, s.MPI_SOURCE, tag, mc(c), MPI_STATUS_IGNORE));
    *bytes = (size_t)n;
    *peer = s.MPI_SOURCE;
    *got = 1;
    return MR_OK;
}

static mr_status m_bcast(mr_comm *c, void *buf, size_t bytes, int root) {
    char *p = buf;
    do {
        size_t k = bytes < MAX_PIECE ? bytes : MAX_PIECE;
        MPI_CHECK(MPI_Bcast(p, (int)k, MPI_BYTE, root, mc(c)));
        p += k;
        bytes -= k;
    } while (bytes > 0);
    return MR_OK;
}

static mr_status m_barrier(mr_comm *c) {
    MPI_CHECK(MPI_Barrier(mc(c)));
    return MR_OK;
}

static mr_status m_isend(mr_comm *c, const void *buf, size_t bytes, int peer, int tag, void **req) {
    if (bytes > INT_MAX) return mr_error(MR_ERR_INTERNAL, "isend of %zu bytes", bytes);
    MPI_Request *r = malloc(sizeof *r);
    if (!r) return mr_error(MR_ERR_NOMEM, "out of memory");
    int rc = MPI_Isend(buf, (int)bytes, MPI_BYTE, peer, tag, mc(c), r);
    if (rc != MPI_SUCCESS) free(r);
    MPI_CHECK(rc);
    *req = r;
    return MR_OK;
}

static mr_status m_test(mr_comm *c, void **req, int block, int *done) {
    (void)c;
    MPI_Request *r = *req;
    *done = 1;
    if (!r) return MR_OK;
    if (block) MPI_CHECK(MPI_Wait(r, MPI_STATUS_IGNORE));
    else MPI_CHECK(MPI_Test(r, done, MPI_STATUS_IGNORE));
    if (*done) {
        free(r);
        *req = NULL;
    }
    return MR_OK;
}

static mr_status m_split(mr_comm *c, int color, int key, mr_comm **out) { return mr_comm_mpi_split(c, color, key, out); }
static mr_status m_split_node(mr_comm *c, mr_comm **out) { return mr_comm_mpi_split_node(c, out); }

static void m_destroy(mr_comm *c) {
    MPI_Comm *m = c->impl;
    if (*m != MPI_COMM_WORLD && *m != MPI_COMM_NULL) MPI_Comm_free(m);
    free(m);
    free(c);
}

/* Every data-moving call adds its time to c->busy_s. */
static double clk(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static mr_status timed(mr_comm *c, double t0, mr_status st) {
    c->busy_s += clk() - t0;
    return st;
}
static mr_status t_allreduce_sum(mr_comm *c, float *buf, size_t n) {
    double t0 = clk();
    return timed(c, t0, m_allreduce_sum(c, buf, n));
}
static mr_status t_allreduce_max(mr_comm *c, int *v, int n) {
    double t0 = clk();
    return timed(c, t0, m_allreduce_max(c, v, n));
}
static mr_status t_allgather(mr_comm *c, const void *send, void *recv, size_t bytes) {
    double t0 = clk();
    return timed(c, t0, m_allgather(c, send, recv, bytes));
}
static mr_status t_alltoallv(mr_comm *c, const void *send, const int *sc, const int *sd, void *recv, const int *rc,
                             const int *rd, size_t elem) {
    double t0 = clk();
    return timed(c, t0, m_alltoallv(c, send, sc, sd, recv, rc, rd, elem));
}
static mr_status t_sendrecv(mr_comm *c, const void *sbuf, size_t sbytes, int dest, void *rbuf, size_t rbytes,
                            int src, int tag) {
    double t0 = clk();
    return timed(c, t0, m_sendrecv(c, sbuf, sbytes, dest, rbuf, rbytes, src, tag));
}
static mr_status t_send(mr_comm *c, const void *buf, size_t bytes, int peer, int tag) {
    double t0 = clk();
    return timed(c, t0, m_send(c, buf, bytes, peer, tag));
}
static mr_status t_recv(mr_comm *c, void *buf, size_t bytes, int peer, int tag) {
    double t0 = clk();
    return timed(c, t0, m_recv(c, buf, bytes, peer, tag));
}
static mr_status t_recv_any(mr_comm *c, int tag, int block, void **buf, size_t *bytes, int *peer, int *got) {
    double t0 = clk();
    return timed(c, t0, m_recv_any(c, tag, block, buf, bytes, peer, got));
}
static mr_status t_bcast(mr_comm *c, void *buf, size_t bytes, int root) {
    double t0 = clk();
    return timed(c, t0, m_bcast(c, buf, bytes, root));
}
static mr_status t_barrier(mr_comm *c) {
    double t0 = clk();
    return timed(c, t0, m_barrier(c));
}
static mr_status t_isend(mr_comm *c, const void *buf, size_t bytes, int peer, int tag, void **req) {
    double t0 = clk();
    return timed(c, t0, m_isend(c, buf, bytes, peer, tag, req));
}
static mr_status t_test(mr_comm *c, void **req, int block, int *done) {
    double t0 = clk();
    return timed(c, t0, m_test(c, req, block, done));
}

static const mr_comm_ops mpi_ops = {
    .name = "mpi",
    .allreduce_sum_f32 = t_allreduce_sum,
    .allreduce_max_i32 = t_allreduce_max,
    .allgather = t_allgather,
    .alltoallv = t_alltoallv,
    .sendrecv = t_sendrecv,
    .send = t_send,
    .recv = t_recv,
    .recv_any = t_recv_any,
    .bcast = t_bcast,
    .barrier = t_barrier,
    .isend = t_isend,
    .test = t_test,
    .split = m_split,
    .split_node = m_split_node,
    .destroy = m_destroy,
};

static mr_status wrap(MPI_Comm comm, mr_comm **out) {
    mr_comm *c = calloc(1, sizeof *c);
    MPI_Comm *m = malloc(sizeof *m);
    if (!c || !m) {
        free(c);
        free(m);
        return mr_error(MR_ERR_NOMEM, "out of memory");
    }
    *m = comm;
    c->ops = &mpi_ops;
    c->impl = m;
    MPI_Comm_rank(comm, &c->rank);
    MPI_Comm_size(comm, &c->size);
    int level = MPI_THREAD_SINGLE;
    MPI_Query_thread(&level);
    c->thread_serialized = level >= MPI_THREAD_SERIALIZED;
    *out = c;
    return MR_OK;
}

int mr_comm_mpi_initialized(void) {
    int f = 0;
    MPI_Initialized(&f);
    return f;
}

mr_status mr_comm_mpi_init(int *argc, char ***argv, mr_comm **world) {
    if (!mr_comm_mpi_initialized()) {
        int provided;
        MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided));
    }
    /* Errors come back as codes so that the failing rank can report them. */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    return wrap(MPI_COMM_WORLD, world);
}

mr_status mr_comm_mpi_split(mr_comm *parent, int color, int key, mr_comm **out) {
    MPI_Comm n;
    MPI_CHECK(MPI_Comm_split(mc(parent), color, key, &n));
    MPI_Comm_set_errhandler(n, MPI_ERRORS_RETURN);
    return wrap(n, out);
}

mr_status mr_comm_mpi_split_node(mr_comm *parent, mr_comm **out) {
    MPI_Comm n;
    MPI_CHECK(MPI_Comm_split_type(mc(parent), MPI_COMM_TYPE_SHARED, parent->rank, MPI_INFO_NULL, &n));
    MPI_Comm_set_errhandler(n, MPI_ERRORS_RETURN);
    return wrap(n, out);
}

void mr_comm_mpi_abort(mr_comm *world, int code) {
    MPI_Abort(world ? mc(world) : MPI_COMM_WORLD, code);
}

void mr_comm_mpi_finalize(void) {
    int f = 0;
    MPI_Finalized(&f);
    if (!f && mr_comm_mpi_initialized()) MPI_Finalize();
}
