/* NCCL on the CUDA emulator (tests/gpu/emu/README.md): the calls of
 * include/nccl.h carried out over MPI between the ranks' processes, on the
 * emulator's device memory.  Its purpose is to run runtime/comm-nccl.c and
 * everything above it (the launcher's NCCL groups, plans with a GPU per
 * rank) where there is no GPU, and to stop at the misuses real NCCL would
 * turn into a hang or garbage, with a message saying which:
 *
 *   - every buffer must lie inside a live device allocation (a host
 *     pointer, a range past the end, freed memory: ncclInvalidArgument with
 *     the allocation described);
 *   - the ranks of a communicator must make the same collective with the
 *     same count, type, operation and root (each collective first compares
 *     them across the ranks; a difference aborts every rank with both
 *     calls named, where NCCL would hang);
 *   - a send and its receive must have the same size (checked on receipt);
 *   - a collective inside ncclGroupStart/End is refused (moerun groups only
 *     sends and receives).
 *
 * How: ncclGetUniqueId writes its process's MPI_COMM_WORLD rank and a
 * counter into the id; ncclCommInitRank sends (rank, world rank) to that
 * process, which answers with the whole table, and MPI_Comm_create_group
 * makes the communicator (collective over its members only, as NCCL's init
 * is).  Data is staged through host copies of the device ranges, so MPI
 * never sees device memory.  Streams are synchronous in the emulator: an
 * operation is done when the call returns; sends and receives between
 * ncclGroupStart and ncclGroupEnd are posted together at the end.  Not
 * NCCL: nothing about its algorithms, speed, or order of summation (MPI's
 * is used). */
#include "emu-internal.h"
#include "include/nccl.h"

#include <mpi.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <string>
#include <vector>

struct mr_emu_nccl_comm {
    MPI_Comm mpi;
    int rank, size;
    unsigned long long ops; /* collectives so far: named in a mismatch */
    int device;             /* current at ncclCommInitRank: its buffers and streams are that device's */
};

namespace {

const char MAGIC[] = "mr-emu-nccl";
enum { TAG_INIT = 31000, TAG_SPAN = 1000, TAG_P2P = 7 };

struct Id {
    char magic[sizeof MAGIC];
    int root;                /* MPI_COMM_WORLD rank of the process that made it */
    unsigned counter;
};
static_assert(sizeof(Id) <= NCCL_UNIQUE_ID_BYTES, "ncclUniqueId too small");

thread_local std::string g_error; /* ncclGetLastError */

ncclResult_t fail(ncclResult_t r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
ncclResult_t fail(ncclResult_t r, const char *fmt, ...) {
    char buf[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    g_error = buf;
    mr_emu::warn("%s", buf);
    return r;
}

int world_rank() {
    int r = -1;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
}

[[noreturn]] void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void die(const char *fmt, ...) {
    char buf[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "E cuda-emu (nccl, world rank %d): %s\n", world_rank(), buf);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 70);
    abort();
}

size_t type_size(ncclDataType_t t) {
    switch (t) {
    case ncclInt8: case ncclUint8: return 1;
    case ncclFloat16: case ncclBfloat16: return 2;
    case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
    case ncclInt64: case ncclUint64: case ncclFloat64: return 8;
    }
    return 0;
}

/* The MPI type for a reduction, or MPI_DATATYPE_NULL where the emulator
 * cannot reduce it (half types). */
MPI_Datatype mpi_type(ncclDataType_t t) {
    switch (t) {
    case ncclInt8: return MPI_INT8_T;
    case ncclUint8: return MPI_UINT8_T;
    case ncclInt32: return MPI_INT32_T;
    case ncclUint32: return MPI_UINT32_T;
    case ncclInt64: return MPI_INT64_T;
    case ncclUint64: return MPI_UINT64_T;
    case ncclFloat32: return MPI_FLOAT;
    case ncclFloat64: return MPI_DOUBLE;
    default: return MPI_DATATYPE_NULL;
    }
}

MPI_Op mpi_op(ncclRedOp_t op) {
    switch (op) {
    case ncclSum: return MPI_SUM;
    case ncclProd: return MPI_PROD;
    case ncclMax: return MPI_MAX;
    case ncclMin: return MPI_MIN;
    default: return MPI_OP_NULL;
    }
}

/* A device range staged on the host: checked and copied in on creation
 * (when `in`), copied back by put(). */
struct Staged {
    std::vector<char> host;
    char *dev = nullptr;
};

/* The range is also an access of `stream` (read when in, else written) for
 * the emulator's stream-order check. */
ncclResult_t stage(const char *call, const char *what, const void *p, size_t bytes, bool in, Staged &s,
                   cudaStream_t stream, ncclComm_t c) {
    s.host.assign(bytes ? bytes : 1, 0);
    s.dev = (char *)p;
    if (!bytes) return ncclSuccess;
    LOCK;
    char why[300];
    mr_emu::Alloc *a = mr_emu::range(p, bytes, why, sizeof why);
    if (!a) return fail(ncclInvalidArgument, "%s: %s is not device memory: %s", call, what, why);
    if (a->device != c->device)
        return fail(ncclInvalidArgument, "%s: %s is memory of device %d, the communicator's device is %d", call, what,
                    a->device, c->device);
    mr_emu::order_access(*a, p, bytes, stream, !in, call);
    if (in) {
        mr_emu::open_alloc(*a);
        memcpy(s.host.data(), p, bytes);
        mr_emu::close_alloc(*a);
    }
    return ncclSuccess;
}

ncclResult_t put(const char *call, Staged &s, size_t bytes) {
    if (!bytes) return ncclSuccess;
    LOCK;
    char why[300];
    mr_emu::Alloc *a = mr_emu::range(s.dev, bytes, why, sizeof why);
    if (!a) return fail(ncclInvalidArgument, "%s: the receive buffer went away: %s", call, why);
    mr_emu::open_alloc(*a);
    memcpy(s.dev, s.host.data(), bytes);
    mr_emu::close_alloc(*a);
    return ncclSuccess;
}

ncclResult_t check_comm(const char *call, ncclComm_t c, cudaStream_t stream) {
    if (!c) return fail(ncclInvalidArgument, "%s: NULL communicator", call);
    LOCK;
    if (!mr_emu::stream_ok(stream)) return fail(ncclInvalidArgument, "%s: not a stream of this device", call);
    if (stream && mr_emu::stream_device(stream) != c->device)
        return fail(ncclInvalidArgument, "%s: a stream of device %d, the communicator's device is %d", call,
                    mr_emu::stream_device(stream), c->device);
    return ncclSuccess;
}

/* Every rank must be in the same collective with the same arguments. */
void agree(ncclComm_t c, const char *call, int kind, size_t count, int type, int op, int root) {
    long long mine[6] = {kind, (long long)count, type, op, root, (long long)c->ops++};
    std::vector<long long> all((size_t)c->size * 6);
    MPI_Allgather(mine, 6, MPI_LONG_LONG, all.data(), 6, MPI_LONG_LONG, c->mpi);
    for (int r = 0; r < c->size; r++) {
        const long long *o = &all[(size_t)r * 6];
        if (memcmp(o, mine, sizeof mine))
            die("collective #%llu of communicator rank %d: %s(count %zu, type %d, op %d, root %d), but rank %d "
                "calls kind %lld (count %lld, type %lld, op %lld, root %lld): NCCL would hang or corrupt",
                (unsigned long long)mine[5], c->rank, call, count, type, op, root, r, o[0], o[1], o[2], o[3], o[4]);
    }
}

/* Sends and receives of an open group (this thread's). */
struct P2p {
    bool send;
    const void *buf;
    size_t bytes;
    int peer;
    ncclComm_t comm;
    cudaStream_t stream;
};
thread_local int g_depth;
thread_local std::vector<P2p> g_group;

ncclResult_t run_p2p(std::vector<P2p> &ops) {
    std::vector<Staged> st(ops.size());
    std::vector<MPI_Request> req(ops.size(), MPI_REQUEST_NULL);
    for (size_t i = 0; i < ops.size(); i++) {
        P2p &o = ops[i];
        const char *call = o.send ? "ncclSend" : "ncclRecv";
        if (o.peer < 0 || o.peer >= o.comm->size)
            return fail(ncclInvalidArgument, "%s: peer %d of a communicator of %d", call, o.peer, o.comm->size);
        if (o.bytes > (size_t)INT32_MAX)
            return fail(ncclInvalidUsage, "%s: %zu bytes: over the emulator's 2 GiB a message", call, o.bytes);
        {
            LOCK;
            mr_emu::order_issue(o.stream);
        }
        ncclResult_t r = stage(call, o.send ? "sendbuff" : "recvbuff", o.buf, o.bytes, o.send, st[i], o.stream, o.comm);
        if (r != ncclSuccess) return r;
    }
    for (size_t i = 0; i < ops.size(); i++) {
        P2p &o = ops[i];
        if (o.send) MPI_Isend(st[i].host.data(), (int)o.bytes, MPI_BYTE, o.peer, TAG_P2P, o.comm->mpi, &req[i]);
        else MPI_Irecv(st[i].host.data(), (int)o.bytes, MPI_BYTE, o.peer, TAG_P2P, o.comm->mpi, &req[i]);
    }
    std::vector<MPI_Status> ms(ops.size());
    int rc = MPI_Waitall((int)req.size(), req.data(), ms.data());
    for (size_t i = 0; rc != MPI_SUCCESS && i < ops.size(); i++) {
        int cls = MPI_SUCCESS;
        if (ms[i].MPI_ERROR != MPI_SUCCESS) MPI_Error_class(ms[i].MPI_ERROR, &cls);
        if (cls == MPI_ERR_TRUNCATE)
            die("ncclRecv of %zu bytes from rank %d got a longer send: NCCL would hang or corrupt", ops[i].bytes,
                ops[i].peer);
    }
    if (rc != MPI_SUCCESS) return fail(ncclRemoteError, "send/receive: MPI_Waitall failed");
    for (size_t i = 0; i < ops.size(); i++) {
        P2p &o = ops[i];
        if (o.send) continue;
        int got = 0;
        MPI_Get_count(&ms[i], MPI_BYTE, &got);
        if ((size_t)got != o.bytes)
            die("ncclRecv of %zu bytes from rank %d got a send of %d bytes: NCCL would hang or corrupt", o.bytes,
                o.peer, got);
        ncclResult_t r = put("ncclRecv", st[i], o.bytes);
        if (r != ncclSuccess) return r;
    }
    return ncclSuccess;
}

ncclResult_t p2p(bool send, const void *buf, size_t count, ncclDataType_t t, int peer, ncclComm_t c,
                 cudaStream_t stream) {
    const char *call = send ? "ncclSend" : "ncclRecv";
    ncclResult_t r = check_comm(call, c, stream);
    if (r != ncclSuccess) return r;
    if (!type_size(t)) return fail(ncclInvalidArgument, "%s: data type %d", call, (int)t);
    P2p o = {send, buf, count * type_size(t), peer, c, stream};
    if (g_depth > 0) {
        g_group.push_back(o);
        return ncclSuccess;
    }
    std::vector<P2p> one(1, o);
    return run_p2p(one);
}

ncclResult_t no_group(const char *call) {
    if (g_depth > 0)
        return fail(ncclInvalidUsage, "%s inside ncclGroupStart/End: the emulator runs only sends and receives "
                    "in a group", call);
    return ncclSuccess;
}

/* A collective's checks: communicator, stream, not in a group; then it is
 * issued on the stream. */
ncclResult_t collective(const char *call, ncclComm_t c, cudaStream_t stream) {
    ncclResult_t r = check_comm(call, c, stream);
    if (r == ncclSuccess) r = no_group(call);
    if (r == ncclSuccess) {
        LOCK;
        mr_emu::order_issue(stream);
    }
    return r;
}

/* Its send buffer staged in, its receive buffer checked. */
ncclResult_t stage_pair(const char *call, ncclComm_t c, const void *send, size_t sbytes, void *recv, size_t rbytes,
                        Staged &in, Staged &out, cudaStream_t stream) {
    ncclResult_t r = stage(call, "sendbuff", send, sbytes, true, in, stream, c);
    return r == ncclSuccess ? stage(call, "recvbuff", recv, rbytes, false, out, stream, c) : r;
}

} // namespace

extern "C" {

ncclResult_t ncclGetVersion(int *version) {
    *version = 0; /* "nccl 0.0.0" in the launcher's log: not NCCL */
    return ncclSuccess;
}

const char *ncclGetErrorString(ncclResult_t r) {
    switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error";
    case ncclSystemError: return "unhandled system error";
    case ncclInternalError: return "internal error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
    }
}

const char *ncclGetLastError(ncclComm_t) { return g_error.c_str(); }

ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    static unsigned counter;
    int init = 0;
    MPI_Initialized(&init);
    if (!init) return fail(ncclSystemError, "ncclGetUniqueId: the emulator's NCCL needs MPI initialised");
    memset(id, 0, sizeof *id);
    Id v;
    memset(&v, 0, sizeof v);
    memcpy(v.magic, MAGIC, sizeof MAGIC);
    v.root = world_rank();
    {
        LOCK;
        v.counter = counter++;
    }
    memcpy(id->internal, &v, sizeof v);
    return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
    Id v;
    memcpy(&v, id.internal, sizeof v);
    *comm = nullptr;
    if (memcmp(v.magic, MAGIC, sizeof MAGIC))
        return fail(ncclInvalidArgument, "ncclCommInitRank: not an id from ncclGetUniqueId");
    if (nranks < 1 || rank < 0 || rank >= nranks)
        return fail(ncclInvalidArgument, "ncclCommInitRank: rank %d of %d", rank, nranks);
    int me = world_rank(), tag = TAG_INIT + (int)(v.counter % TAG_SPAN);
    std::vector<int> table((size_t)nranks, -1);
    int mine[3] = {rank, me, nranks};
    if (me == v.root) {
        table[(size_t)rank] = me;
        for (int k = 1; k < nranks; k++) {
            int got[3];
            MPI_Recv(got, 3, MPI_INT, MPI_ANY_SOURCE, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            if (got[2] != nranks || got[0] < 0 || got[0] >= nranks || table[(size_t)got[0]] >= 0)
                die("ncclCommInitRank: world rank %d joins as rank %d of %d, the root's communicator has %d ranks "
                    "(rank %d %s)", got[1], got[0], got[2], nranks, got[0],
                    got[0] >= 0 && got[0] < nranks && table[(size_t)got[0]] >= 0 ? "taken twice" : "out of range");
            table[(size_t)got[0]] = got[1];
        }
        for (int k = 0; k < nranks; k++)
            if (k != rank) MPI_Send(table.data(), nranks, MPI_INT, table[(size_t)k], tag, MPI_COMM_WORLD);
    } else {
        MPI_Send(mine, 3, MPI_INT, v.root, tag, MPI_COMM_WORLD);
        MPI_Recv(table.data(), nranks, MPI_INT, v.root, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    }
    MPI_Group world, g;
    MPI_Comm_group(MPI_COMM_WORLD, &world);
    MPI_Group_incl(world, nranks, table.data(), &g);
    MPI_Comm mc = MPI_COMM_NULL;
    int rc = MPI_Comm_create_group(MPI_COMM_WORLD, g, tag, &mc);
    MPI_Group_free(&g);
    MPI_Group_free(&world);
    if (rc != MPI_SUCCESS || mc == MPI_COMM_NULL)
        return fail(ncclSystemError, "ncclCommInitRank: MPI_Comm_create_group failed");
    int r = -1;
    MPI_Comm_rank(mc, &r);
    if (r != rank) die("ncclCommInitRank: rank %d came out as %d", rank, r);
    MPI_Comm_set_errhandler(mc, MPI_ERRORS_RETURN); /* a truncated receive is explained, not fatal */
    int dev = 0;
    {
        LOCK;
        dev = mr_emu::current_device();
    }
    ncclComm_t c = new mr_emu_nccl_comm{mc, rank, nranks, 0, dev};
    *comm = c;
    return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t c) {
    if (!c) return fail(ncclInvalidArgument, "ncclCommDestroy: NULL communicator");
    MPI_Comm_free(&c->mpi);
    delete c;
    return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t c, ncclResult_t *e) {
    *e = ncclSuccess;
    return c ? ncclSuccess : fail(ncclInvalidArgument, "ncclCommGetAsyncError: NULL communicator");
}

ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t t, ncclRedOp_t op,
                           ncclComm_t c, cudaStream_t stream) {
    const char *call = "ncclAllReduce";
    ncclResult_t r = collective(call, c, stream);
    if (r != ncclSuccess) return r;
    if (mpi_type(t) == MPI_DATATYPE_NULL || mpi_op(op) == MPI_OP_NULL)
        return fail(ncclInvalidArgument, "%s: type %d, op %d: not in the emulator", call, (int)t, (int)op);
    if (count > (size_t)INT32_MAX) return fail(ncclInvalidUsage, "%s: count %zu over the emulator's 2^31", call, count);
    size_t bytes = count * type_size(t);
    Staged in, out;
    if ((r = stage_pair(call, c, sendbuff, bytes, recvbuff, bytes, in, out, stream)) != ncclSuccess) return r;
    agree(c, call, 1, count, t, op, -1);
    MPI_Allreduce(in.host.data(), out.host.data(), (int)count, mpi_type(t), mpi_op(op), c->mpi);
    return put(call, out, bytes);
}

ncclResult_t ncclAllGather(const void *sendbuff, void *recvbuff, size_t sendcount, ncclDataType_t t, ncclComm_t c,
                           cudaStream_t stream) {
    const char *call = "ncclAllGather";
    ncclResult_t r = collective(call, c, stream);
    if (r != ncclSuccess) return r;
    size_t bytes = sendcount * type_size(t);
    if (!type_size(t) || bytes > (size_t)INT32_MAX / (size_t)c->size)
        return fail(ncclInvalidArgument, "%s: type %d, count %zu", call, (int)t, sendcount);
    Staged in, out;
    if ((r = stage_pair(call, c, sendbuff, bytes, recvbuff, bytes * (size_t)c->size, in, out, stream)) != ncclSuccess)
        return r;
    agree(c, call, 2, sendcount, t, -1, -1);
    MPI_Allgather(in.host.data(), (int)bytes, MPI_BYTE, out.host.data(), (int)bytes, MPI_BYTE, c->mpi);
    return put(call, out, bytes * (size_t)c->size);
}

ncclResult_t ncclReduceScatter(const void *sendbuff, void *recvbuff, size_t recvcount, ncclDataType_t t,
                               ncclRedOp_t op, ncclComm_t c, cudaStream_t stream) {
    const char *call = "ncclReduceScatter";
    ncclResult_t r = collective(call, c, stream);
    if (r != ncclSuccess) return r;
    if (mpi_type(t) == MPI_DATATYPE_NULL || mpi_op(op) == MPI_OP_NULL ||
        recvcount > (size_t)INT32_MAX / (size_t)c->size)
        return fail(ncclInvalidArgument, "%s: type %d, op %d, count %zu", call, (int)t, (int)op, recvcount);
    size_t bytes = recvcount * type_size(t);
    Staged in, out;
    if ((r = stage_pair(call, c, sendbuff, bytes * (size_t)c->size, recvbuff, bytes, in, out, stream)) != ncclSuccess)
        return r;
    agree(c, call, 3, recvcount, t, op, -1);
    MPI_Reduce_scatter_block(in.host.data(), out.host.data(), (int)recvcount, mpi_type(t), mpi_op(op), c->mpi);
    return put(call, out, bytes);
}

ncclResult_t ncclBroadcast(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t t, int root,
                           ncclComm_t c, cudaStream_t stream) {
    const char *call = "ncclBroadcast";
    ncclResult_t r = collective(call, c, stream);
    if (r != ncclSuccess) return r;
    size_t bytes = count * type_size(t);
    if (!type_size(t) || bytes > (size_t)INT32_MAX || root < 0 || root >= c->size)
        return fail(ncclInvalidArgument, "%s: type %d, count %zu, root %d", call, (int)t, count, root);
    Staged buf, out;
    if (c->rank == root && (r = stage(call, "sendbuff", sendbuff, bytes, true, buf, stream, c)) != ncclSuccess)
        return r;
    if ((r = stage(call, "recvbuff", recvbuff, bytes, false, out, stream, c)) != ncclSuccess) return r;
    agree(c, call, 4, count, t, -1, root);
    if (c->rank == root) out.host = buf.host;
    MPI_Bcast(out.host.data(), (int)bytes, MPI_BYTE, root, c->mpi);
    return put(call, out, bytes);
}

ncclResult_t ncclSend(const void *sendbuff, size_t count, ncclDataType_t t, int peer, ncclComm_t c,
                      cudaStream_t stream) {
    return p2p(true, sendbuff, count, t, peer, c, stream);
}

ncclResult_t ncclRecv(void *recvbuff, size_t count, ncclDataType_t t, int peer, ncclComm_t c, cudaStream_t stream) {
    return p2p(false, recvbuff, count, t, peer, c, stream);
}

ncclResult_t ncclGroupStart(void) {
    g_depth++;
    return ncclSuccess;
}

ncclResult_t ncclGroupEnd(void) {
    if (g_depth <= 0) return fail(ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
    if (--g_depth > 0) return ncclSuccess;
    std::vector<P2p> ops;
    ops.swap(g_group);
    return run_p2p(ops);
}

} // extern "C"
