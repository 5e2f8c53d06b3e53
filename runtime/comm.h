/* The communicator interface: collectives and point-to-point over a group
 * of ranks (tensor, pipeline, data, expert groups are each one mr_comm).
 *
 * Implemented on MPI (host memory, whatever transport Open MPI picks);
 * the NCCL implementation plugs into the same table.  Every call returns
 * mr_status with the library's own error string on failure. */
#ifndef MR_COMM_H
#define MR_COMM_H

#include <stdatomic.h>
#include <stddef.h>

#include "runtime/status.h"

typedef struct mr_comm mr_comm;

typedef struct mr_comm_ops {
    const char *name;
    /* buf(n) = sum over ranks, in place */
    mr_status (*allreduce_sum_f32)(mr_comm *c, float *buf, size_t n);
    /* v(n) = max over ranks, in place */
    mr_status (*allreduce_max_i32)(mr_comm *c, int *v, int n);
    /* recv(size * bytes) = every rank's send(bytes), in rank order */
    mr_status (*allgather)(mr_comm *c, const void *send, void *recv, size_t bytes);
    /* element counts and displacements per peer, elements of elem_bytes */
    mr_status (*alltoallv)(mr_comm *c, const void *send, const int *scounts, const int *sdispls, void *recv,
                           const int *rcounts, const int *rdispls, size_t elem_bytes);
    /* send `sbytes` to `dest` while receiving `rbytes` from `src` */
    mr_status (*sendrecv)(mr_comm *c, const void *sbuf, size_t sbytes, int dest, void *rbuf, size_t rbytes,
                          int src, int tag);
    mr_status (*send)(mr_comm *c, const void *buf, size_t bytes, int peer, int tag);
    mr_status (*recv)(mr_comm *c, void *buf, size_t bytes, int peer, int tag);
    /* receive a message of unknown size from any peer with `tag`, if one is
     * waiting (block=0) or once one arrives (block=1); *buf is malloc'ed. */
    mr_status (*recv_any)(mr_comm *c, int tag, int block, void **buf, size_t *bytes, int *peer, int *got);
    mr_status (*bcast)(mr_comm *c, void *buf, size_t bytes, int root);
    /* Optional (NULL: use send).  Start a send of `bytes` (the buffer must
     * stay untouched until it completes); *req is completed by test. */
    mr_status (*isend)(mr_comm *c, const void *buf, size_t bytes, int peer, int tag, void **req);
    /* Optional, with isend: *done = 1 once *req completed (then freed and
     * set to NULL); block = 1 waits for it. */
    mr_status (*test)(mr_comm *c, void **req, int block, int *done);
    mr_status (*barrier)(mr_comm *c);
    /* sub-groups: by color ordered by key, and the ranks sharing a node */
    mr_status (*split)(mr_comm *c, int color, int key, mr_comm **out);
    mr_status (*split_node)(mr_comm *c, mr_comm **out);
    void (*destroy)(mr_comm *c);
} mr_comm_ops;

struct mr_comm {
    const mr_comm_ops *ops;
    int rank, size;
    /* calls may come from a second thread, one thread at a time
     * (MPI_THREAD_SERIALIZED or better): the all-reduce engine's progress
     * thread needs it for overlap */
    int thread_serialized;
    /* 1: buffers are device memory (NCCL); 0: host memory (MPI), so a
     * caller holding device buffers stages them through the host */
    int device_memory;
    /* 0: blocking calls (the library spins: lowest latency).  Otherwise
     * the collectives and sendrecv are issued as nonblocking calls and
     * completed by testing: > 0 sleeping this many microseconds (doubling)
     * between tests, so that a computing thread on the same core keeps it;
     * < 0 without sleeping.  The all-reduce progress thread sets it for a
     * whole reduction (every rank alike: a blocking collective never matches
     * a nonblocking one); another thread may turn > 0 into -1 meanwhile. */
    _Atomic int wait_sleep_us;
    /* Seconds spent inside this communicator's calls, waiting included
     * (the job summary's communication time; one clock read per call). */
    double busy_s;
    void *impl;
};

/* ---- MPI ----------------------------------------------------------- */

/* MPI_Init_thread (if not yet initialised); world communicator. */
mr_status mr_comm_mpi_init(int *argc, char ***argv, mr_comm **world);
/* Split `parent` into groups by color, ordered by key. */
mr_status mr_comm_mpi_split(mr_comm *parent, int color, int key, mr_comm **out);
/* Ranks on the same node as this one (MPI_COMM_TYPE_SHARED). */
mr_status mr_comm_mpi_split_node(mr_comm *parent, mr_comm **out);
/* End every rank of the job now with `code` (after this rank's message). */
void mr_comm_mpi_abort(mr_comm *world, int code);
void mr_comm_mpi_finalize(void);
/* This thread's timer slack down to 1 us, for wait_sleep_us polling. */
void mr_comm_mpi_fine_timers(void);
int mr_comm_mpi_initialized(void);

static inline void mr_comm_destroy(mr_comm *c) {
    if (c) c->ops->destroy(c);
}

#endif
