/* mr_comm on NCCL (comm-nccl.h): device buffers, one GPU per rank.  Built
 * only with CUDA and NCCL (runtime/nccl.cmake, library mr_comm_nccl); kept
 * out of mr_runtime so that builds without CUDA are unchanged.
 *
 * Every operation: cudaSetDevice (calls may come from the all-reduce
 * progress thread), order the communication stream after the caller's
 * compute stream, queue the NCCL calls, wait for the communication stream. */
#define _POSIX_C_SOURCE 200809L /* nanosleep */
#include <cuda_runtime_api.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/comm-nccl.h"

#define CUDA_CHECK(call)                                                                       \
    do {                                                                                       \
        cudaError_t mr_ce_ = (call);                                                           \
        if (mr_ce_ != cudaSuccess)                                                             \
            return mr_error(MR_ERR_INTERNAL, "%s:%d: %s failed: %s", __FILE__, __LINE__, #call, \
                            cudaGetErrorString(mr_ce_));                                       \
    } while (0)

#define NCCL_CHECK(call)                                                                       \
    do {                                                                                       \
        ncclResult_t mr_nr_ = (call);                                                          \
        if (mr_nr_ != ncclSuccess)                                                             \
            return mr_error(MR_ERR_INTERNAL, "%s:%d: %s failed: %s (%s)", __FILE__, __LINE__, #call, \
                            ncclGetErrorString(mr_nr_), ncclGetLastError(NULL));              \
    } while (0)

#define CUDA_CHECK_GOTO(call, st, label)                                                       \
    do {                                                                                       \
        cudaError_t mr_ce_ = (call);                                                           \
        if (mr_ce_ != cudaSuccess) {                                                           \
            (st) = mr_error(MR_ERR_INTERNAL, "%s:%d: %s failed: %s", __FILE__, __LINE__, #call, \
                            cudaGetErrorString(mr_ce_));                                       \
            goto label;                                                                        \
        }                                                                                      \
    } while (0)

#define NCCL_CHECK_GOTO(call, st, label)                                                       \
    do {                                                                                       \
        ncclResult_t mr_nr_ = (call);                                                          \
        if (mr_nr_ != ncclSuccess) {                                                           \
            (st) = mr_error(MR_ERR_INTERNAL, "%s:%d: %s failed: %s (%s)", __FILE__, __LINE__, #call, \
                            ncclGetErrorString(mr_nr_), ncclGetLastError(NULL));               \
            goto label;                                                                        \
        }                                                                                      \
    } while (0)

enum { SCRATCH_INTS = 64, BUS_ID_LEN = 32 };

typedef struct nccl_impl {
    mr_comm *mpi;          /* the MPI group the NCCL communicator spans */
    int own_mpi;           /* made by split: destroyed with this one */
    int device;
    ncclComm_t nc;
    cudaStream_t stream;   /* communication stream, created here */
    cudaStream_t compute;  /* the caller's compute stream (NULL: legacy default) */
    cudaEvent_t ready;     /* recorded on compute, waited for on stream */
    int *scratch;          /* device, SCRATCH_INTS: allreduce_max_i32, barrier */
} nccl_impl;

static nccl_impl *im(mr_comm *c) { return c->impl; }

/* Set the device and put the communication stream after the compute stream. */
static mr_status begin(mr_comm *c) {
    nccl_impl *m = im(c);
    CUDA_CHECK(cudaSetDevice(m->device));
    CUDA_CHECK(cudaEventRecord(m->ready, m->compute));
    CUDA_CHECK(cudaStreamWaitEvent(m->stream, m->ready, 0));
    return MR_OK;
}

/* Wait for the communication stream; wait_sleep_us as in comm.h. */
static mr_status finish(mr_comm *c) {
    nccl_impl *m = im(c);
    int base = atomic_load_explicit(&c->wait_sleep_us, memory_order_relaxed);
    if (base == 0) {
        CUDA_CHECK(cudaStreamSynchronize(m->stream));
    } else {
        long us = base;
        for (;;) {
            cudaError_t e = cudaStreamQuery(m->stream);
            if (e == cudaSuccess) break;
            if (e != cudaErrorNotReady)
                return mr_error(MR_ERR_INTERNAL, "%s:%d: cudaStreamQuery failed: %s", __FILE__, __LINE__,
                                cudaGetErrorString(e));
            base = atomic_load_explicit(&c->wait_sleep_us, memory_order_relaxed);
            if (base <= 0) continue; /* hurried: poll without sleeping */
            struct timespec ts = {0, us * 1000L};
            nanosleep(&ts, NULL);
            if (us < 32L * base) us *= 2;
        }
    }
    /* a NCCL failure on a peer shows up here, not at the call */
    ncclResult_t async = ncclSuccess;
    NCCL_CHECK(ncclCommGetAsyncError(m->nc, &async));
    if (async != ncclSuccess)
        return mr_error(MR_ERR_INTERNAL, "%s:%d: NCCL asynchronous error: %s (%s)", __FILE__, __LINE__,
                        ncclGetErrorString(async), ncclGetLastError(m->nc));
    return MR_OK;
}

static mr_status n_allreduce_sum(mr_comm *c, float *buf, size_t n) {
    if (n == 0) return MR_OK;
    MR_CHECK(begin(c));
    NCCL_CHECK(ncclAllReduce(buf, buf, n, ncclFloat32, ncclSum, im(c)->nc, im(c)->stream));
    return finish(c);
}

/* v is host memory (the engine's and the launcher's small agreements). */
static mr_status n_allreduce_max(mr_comm *c, int *v, int n) {
    nccl_impl *m = im(c);
    for (int off = 0; off < n; off += SCRATCH_INTS) {
        int k = n - off < SCRATCH_INTS ? n - off : SCRATCH_INTS;
        MR_CHECK(begin(c));
        CUDA_CHECK(cudaMemcpyAsync(m->scratch, v + off, (size_t)k * sizeof(int), cudaMemcpyHostToDevice, m->stream));
        NCCL_CHECK(ncclAllReduce(m->scratch, m->scratch, (size_t)k, ncclInt32, ncclMax, m->nc, m->stream));
        CUDA_CHECK(cudaMemcpyAsync(v + off, m->scratch, (size_t)k * sizeof(int), cudaMemcpyDeviceToHost, m->stream));
        MR_CHECK(finish(c));
    }
    return MR_OK;
}

static mr_status n_allgather(mr_comm *c, const void *send, void *recv, size_t bytes) {
    if (bytes == 0) return MR_OK;
    MR_CHECK(begin(c));
    NCCL_CHECK(ncclAllGather(send, recv, bytes, ncclUint8, im(c)->nc, im(c)->stream));
    return finish(c);
}

/* One NCCL group of a send and a receive per peer with a nonzero count;
 * this rank's own block is a device copy on the same stream. */
static mr_status n_alltoallv(mr_comm *c, const void *send, const int *sc, const int *sd, void *recv, const int *rc,
                             const int *rd, size_t elem) {
    nccl_impl *m = im(c);
    const char *s = send;
    char *r = recv;
    MR_CHECK(begin(c));
    if (sc[c->rank] != rc[c->rank])
        return mr_error(MR_ERR_INTERNAL, "alltoallv: rank %d sends itself %d elements but expects %d", c->rank,
                        sc[c->rank], rc[c->rank]);
    if (sc[c->rank])
        CUDA_CHECK(cudaMemcpyAsync(r + (size_t)rd[c->rank] * elem, s + (size_t)sd[c->rank] * elem,
                                   (size_t)sc[c->rank] * elem, cudaMemcpyDeviceToDevice, m->stream));
    NCCL_CHECK(ncclGroupStart());
    ncclResult_t nr = ncclSuccess;
    for (int k = 1; k < c->size && nr == ncclSuccess; k++) {
        int dst = (c->rank + k) % c->size, src = (c->rank - k + c->size) % c->size;
        if (sc[dst]) nr = ncclSend(s + (size_t)sd[dst] * elem, (size_t)sc[dst] * elem, ncclUint8, dst, m->nc, m->stream);
        if (nr == ncclSuccess && rc[src])
            nr = ncclRecv(r + (size_t)rd[src] * elem, (size_t)rc[src] * elem, ncclUint8, src, m->nc, m->stream);
    }
    ncclResult_t ne = ncclGroupEnd(); /* always close the group */
    NCCL_CHECK(nr);
    NCCL_CHECK(ne);
    return finish(c);
}

static mr_status n_sendrecv(mr_comm *c, const void *sbuf, size_t sbytes, int dest, void *rbuf, size_t rbytes,
                            int src, int tag) {
    nccl_impl *m = im(c);
    MR_CHECK(begin(c));
    NCCL_CHECK(ncclGroupStart());
    ncclResult_t nr = ncclSuccess;
    if (sbytes) nr = ncclSend(sbuf, sbytes, ncclUint8, dest, m->nc, m->stream);
    if (nr == ncclSuccess && rbytes) nr = ncclRecv(rbuf, rbytes, ncclUint8, src, m->nc, m->stream);
    ncclResult_t ne = ncclGroupEnd();
    NCCL_CHECK(nr);
    NCCL_CHECK(ne);
    return finish(c);
}

static mr_status n_send(mr_comm *c, const void *buf, size_t bytes, int peer, int tag) {
    if (bytes == 0) return MR_OK;
    MR_CHECK(begin(c));
    NCCL_CHECK(ncclSend(buf, bytes, ncclUint8, peer, im(c)->nc, im(c)->stream));
    return finish(c);
}

static mr_status n_recv(mr_comm *c, void *buf, size_t bytes, int peer, int tag) {
    if (bytes == 0) return MR_OK;
    MR_CHECK(begin(c));
    NCCL_CHECK(ncclRecv(buf, bytes, ncclUint8, peer, im(c)->nc, im(c)->stream));
    return finish(c);
}

static mr_status n_recv_any(mr_comm *c, int tag, int block, void **buf, size_t *bytes, int *peer, int *got) {
    *got = 0;
    return mr_error(MR_ERR_UNSUPPORTED,
                    "recv_any (a message of unknown size from any peer) is not supported on the NCCL "
                    "communicator: use the MPI group for it");
}

static mr_status n_bcast(mr_comm *c, void *buf, size_t bytes, int root) {
    if (bytes == 0) return MR_OK;
    MR_CHECK(begin(c));
    NCCL_CHECK(ncclBroadcast(buf, buf, bytes, ncclUint8, root, im(c)->nc, im(c)->stream));
    return finish(c);
}

static mr_status n_barrier(mr_comm *c) {
    nccl_impl *m = im(c);
    MR_CHECK(begin(c));
    NCCL_CHECK(ncclAllReduce(m->scratch, m->scratch, 1, ncclInt32, ncclSum, m->nc, m->stream));
    return finish(c);
}

static mr_status create(mr_comm *mpi_group, int own_mpi, int device, void *cuda_stream, mr_comm **out);

static mr_status n_split(mr_comm *c, int color, int key, mr_comm **out) {
    mr_comm *sub;
    MR_CHECK(im(c)->mpi->ops->split(im(c)->mpi, color, key, &sub));
    return create(sub, 1, im(c)->device, im(c)->compute, out);
}

static mr_status n_split_node(mr_comm *c, mr_comm **out) {
    mr_comm *sub;
    MR_CHECK(im(c)->mpi->ops->split_node(im(c)->mpi, &sub));
    return create(sub, 1, im(c)->device, im(c)->compute, out);
}

/* Frees whatever part of the implementation exists (also after a failed create). */
static void release(nccl_impl *m) {
    if (!m) return;
    cudaSetDevice(m->device);
    if (m->stream) cudaStreamSynchronize(m->stream);
    if (m->nc) ncclCommDestroy(m->nc);
    if (m->scratch) cudaFree(m->scratch);
    if (m->ready) cudaEventDestroy(m->ready);
    if (m->stream) cudaStreamDestroy(m->stream);
    if (m->own_mpi) mr_comm_destroy(m->mpi);
    free(m);
}

static void n_destroy(mr_comm *c) {
    release(c->impl);
    free(c);
}

static const mr_comm_ops nccl_ops = {
    .name = "nccl",
    .allreduce_sum_f32 = n_allreduce_sum,
    .allreduce_max_i32 = n_allreduce_max,
    .allgather = n_allgather,
    .alltoallv = n_alltoallv,
    .sendrecv = n_sendrecv,
    .send = n_send,
    .recv = n_recv,
    .recv_any = n_recv_any,
    .bcast = n_bcast,
    .barrier = n_barrier,
    .split = n_split,
    .split_node = n_split_node,
    .destroy = n_destroy,
};

/* Collective: the unique id goes round on the MPI group.  Every rank takes
 * part in the broadcast even when its own CUDA set-up failed, so that no
 * rank hangs there (rank 0 failing sends an all-zero id, which the others
 * refuse). */
static mr_status create(mr_comm *g, int own_mpi, int device, void *cuda_stream, mr_comm **out) {
    mr_status st = MR_OK;
    *out = NULL;
    if (strcmp(g->ops->name, "mpi"))
        return mr_error(MR_ERR_INTERNAL, "NCCL communicator: the group must be an MPI communicator, not %s",
                        g->ops->name);
    mr_comm *c = calloc(1, sizeof *c);
    nccl_impl *m = calloc(1, sizeof *m);
    if (!c || !m) {
        free(c);
        free(m);
        if (own_mpi) mr_comm_destroy(g);
        return mr_error(MR_ERR_NOMEM, "out of memory");
    }
    m->mpi = g;
    m->own_mpi = own_mpi;
    m->device = device;
    m->compute = cuda_stream;
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    mr_status local = MR_OK;
    cudaError_t ce = cudaSetDevice(device);
    if (ce != cudaSuccess)
        local = mr_error(MR_ERR_INTERNAL, "%s:%d: cudaSetDevice(%d) failed: %s", __FILE__, __LINE__, device,
                         cudaGetErrorString(ce));
    if (local == MR_OK && g->rank == 0) {
        ncclResult_t nr = ncclGetUniqueId(&id);
        if (nr != ncclSuccess)
            local = mr_error(MR_ERR_INTERNAL, "%s:%d: ncclGetUniqueId failed: %s", __FILE__, __LINE__,
                             ncclGetErrorString(nr));
    }
    MR_CHECK_GOTO(g->ops->bcast(g, &id, sizeof id, 0), st, fail);
    /* every rank agrees whether to go on before the collective init */
    int bad[1] = {local != MR_OK};
    MR_CHECK_GOTO(g->ops->allreduce_max_i32(g, bad, 1), st, fail);
    if (local != MR_OK) {
        st = local;
        goto fail;
    }
    if (bad[0]) {
        st = mr_error(MR_ERR_INTERNAL, "NCCL communicator: another rank of the group failed to set up CUDA");
        goto fail;
    }
    CUDA_CHECK_GOTO(cudaStreamCreateWithFlags(&m->stream, cudaStreamNonBlocking), st, fail);
    CUDA_CHECK_GOTO(cudaEventCreateWithFlags(&m->ready, cudaEventDisableTiming), st, fail);
    CUDA_CHECK_GOTO(cudaMalloc((void **)&m->scratch, SCRATCH_INTS * sizeof(int)), st, fail);
    CUDA_CHECK_GOTO(cudaMemset(m->scratch, 0, SCRATCH_INTS * sizeof(int)), st, fail);
    NCCL_CHECK_GOTO(ncclCommInitRank(&m->nc, g->size, id, g->rank), st, fail);
    c->ops = &nccl_ops;
    c->rank = g->rank;
    c->size = g->size;
    c->thread_serialized = g->thread_serialized;
    c->device_memory = 1;
    c->impl = m;
    *out = c;
    return MR_OK;
fail:
    release(m);
    free(c);
    return st;
}

mr_status mr_comm_nccl_create(mr_comm *mpi_group, int device, void *cuda_stream, mr_comm **out) {
    return create(mpi_group, 0, device, cuda_stream, out);
}

/* Collective.  reason (len bytes) says why not, when the answer is 0. */
static int usable(mr_comm *g, int device, char *reason, size_t len) {
    char mine[BUS_ID_LEN];
    memset(mine, 0, sizeof mine);
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || device < 0 || device >= n ||
        cudaDeviceGetPCIBusId(mine, BUS_ID_LEN - 1, device) != cudaSuccess)
        memset(mine, 0, sizeof mine);
    char *all = calloc((size_t)g->size, BUS_ID_LEN);
    if (!all) {
        snprintf(reason, len, "out of memory");
        return 0; /* every rank fails alike only in theory; MPI then errs */
    }
    int ok = 1;
    if (g->ops->allgather(g, mine, all, BUS_ID_LEN) != MR_OK) {
        snprintf(reason, len, "allgather of the PCI bus ids failed: %s", mr_last_error());
        ok = 0;
    }
    for (int i = 0; ok && i < g->size; i++) {
        const char *a = all + (size_t)i * BUS_ID_LEN;
        if (!a[0]) {
            snprintf(reason, len, "rank %d has no CUDA device %d", i, device);
            ok = 0;
        }
        for (int j = 0; ok && j < i; j++)
            if (!strcmp(a, all + (size_t)j * BUS_ID_LEN)) {
                snprintf(reason, len, "ranks %d and %d share the GPU %s", j, i, a);
                ok = 0;
            }
    }
    free(all);
    return ok;
}

int mr_comm_nccl_usable(mr_comm *mpi_group, int device) {
    char reason[160];
    return usable(mpi_group, device, reason, sizeof reason);
}

mr_status mr_comm_select(mr_comm *mpi_group, int device, void *cuda_stream, mr_comm **out, int *is_nccl,
                         char *desc, size_t len) {
    char reason[160] = "";
    *is_nccl = 0;
    *out = mpi_group;
    if (!usable(mpi_group, device, reason, sizeof reason)) {
        snprintf(desc, len, "communicator mpi (device buffers staged through host memory): %s", reason);
        if (mpi_group->rank == 0) MR_INFO("%s", desc);
        return MR_OK;
    }
    int v = 0;
    ncclGetVersion(&v);
    MR_CHECK(mr_comm_nccl_create(mpi_group, device, cuda_stream, out));
    *is_nccl = 1;
    snprintf(desc, len, "communicator nccl %d.%d.%d over %d ranks, device %d", v / 10000, v / 100 % 100, v % 100,
             mpi_group->size, device);
    return MR_OK;
}
