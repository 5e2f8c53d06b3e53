/* Device choice, backend and device communicators of `moerun generate`
 * (generate-device.h).  The CUDA parts compile only when CMake found the
 * CUDA backend (MR_HAVE_CUDA) and the NCCL communicator (MR_HAVE_NCCL);
 * without them a request for cuda is a user error and auto means cpu. */
#define _GNU_SOURCE
#include "launcher/generate-device.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef MR_HAVE_CUDA
#include "kernels/cuda/cuda-backend.h"
#endif
#ifdef MR_HAVE_NCCL
#include "runtime/allreduce-cuda.h"
#include "runtime/comm-nccl.h"
#endif

#define NO_CUDA_BUILD "this moerun was built without CUDA (cmake found no nvcc)"

/* What every rank tells the others about its device (one allgather). */
typedef struct rank_device {
    int32_t visible; /* CUDA devices it sees */
    int32_t device;  /* its pick, -1 none */
    int32_t by_pci;
    int32_t node;    /* index into the topology's nodes */
    char busid[20];
} rank_device;

/* "0,1,5" (at most len bytes, "..." when cut) of the ranks r with pick(all[r]). */
static void rank_list(const rank_device *all, int n, int (*pick)(const rank_device *), char *buf, size_t len) {
    size_t o = 0;
    buf[0] = 0;
    for (int r = 0; r < n; r++) {
        if (!pick(&all[r])) continue;
        if (o + 16 >= len) {
            snprintf(buf + o, len - o, "...");
            return;
        }
        o += (size_t)snprintf(buf + o, len - o, "%s%d", o ? "," : "", r);
    }
}

static int sees_none(const rank_device *d) { return d->visible == 0; }
static int by_local_rank(const rank_device *d) { return d->device >= 0 && !d->by_pci; }

#ifdef MR_HAVE_CUDA
/* This rank's GPU among `visible`: the placement's, found by bus id, else
 * local rank mod visible (CUDA numbers only the visible devices, so this
 * follows CUDA_VISIBLE_DEVICES). */
static void pick_gpu(const mr_topo_job *topo, int visible, rank_device *me) {
    const mr_topo_slot *sl = &topo->pl.slots[topo->plan_rank];
    const mr_topo_rank *tr = &topo->topo.ranks[sl->world_rank];
    const mr_topo_node *node = &topo->topo.nodes[tr->node];
    me->node = tr->node;
    me->device = -1;
    if (sl->gpu >= 0 && node->gpus[sl->gpu].busid[0]) {
        char why[256];
        me->device = mr_cuda_device_by_pci(node->gpus[sl->gpu].busid, why, sizeof why);
        me->by_pci = me->device >= 0;
        if (me->device < 0) MR_DEBUG("placement's %s; taking local rank %d mod %d", why, tr->local_rank, visible);
    }
    if (me->device < 0) me->device = tr->local_rank % visible;
    mr_cuda_device_pci(me->device, me->busid, sizeof me->busid);
}
#endif

/* Rank 0's line: its GPU, how many GPUs the ranks use and which share one. */
static void log_cuda(const mr_topo_job *topo, const rank_device *all, int n) {
    char line[2048], desc[256] = "?";
    size_t o;
#ifdef MR_HAVE_CUDA
    mr_cuda_device_describe(all[0].device, desc, sizeof desc);
#endif
    o = (size_t)snprintf(line, sizeof line, "device: cuda, rank 0 -> GPU %d (%s, bus %s)", all[0].device, desc,
                         all[0].busid);
    /* distinct (node, bus id) pairs, and the ranks on each */
    int distinct = 0, shared = 0;
    int *first = malloc((size_t)n * sizeof *first); /* first rank on the same GPU */
    if (!first) return;
    for (int r = 0; r < n; r++) {
        first[r] = r;
        for (int q = 0; q < r; q++)
            if (all[q].node == all[r].node && !strcmp(all[q].busid, all[r].busid)) {
                first[r] = first[q];
                break;
            }
        if (first[r] == r) distinct++;
    }
    int nodes = topo->topo.n_nodes;
    o += (size_t)snprintf(line + o, sizeof line - o, "; %d rank%s on %d GPU%s of %d node%s", n, n == 1 ? "" : "s",
                          distinct, distinct == 1 ? "" : "s", nodes, nodes == 1 ? "" : "s");
    for (int g = 0; g < n && o + 64 < sizeof line; g++) {
        if (first[g] != g) continue;
        int count = 0;
        for (int r = 0; r < n; r++) count += first[r] == g;
        if (count < 2) continue;
        o += (size_t)snprintf(line + o, sizeof line - o, "%s %s bus %s: ranks", shared++ ? ";" : "; shared (testing only):",
                              topo->topo.nodes[all[g].node].host, all[g].busid);
        for (int r = 0, k = 0; r < n && o + 16 < sizeof line; r++)
            if (first[r] == g) o += (size_t)snprintf(line + o, sizeof line - o, "%s%d", k++ ? "," : " ", r);
    }
    free(first);
    char ranks[256];
    rank_list(all, n, by_local_rank, ranks, sizeof ranks);
    if (ranks[0] && o + 32 < sizeof line)
        snprintf(line + o, sizeof line - o, "; by local rank (no visible GPU in the placement): ranks %s", ranks);
    MR_INFO("%s", line);
}

mr_status mr_gen_device_choose(mr_comm *world, const mr_plan *p, const mr_topo_job *topo, int quiet,
                               mr_gen_device *out) {
    mr_device_kind want = p->runtime.device;
    const char *why = NO_CUDA_BUILD;
    rank_device me = {.device = -1};
#ifdef MR_HAVE_CUDA
    if (want != MR_DEVICE_CPU) {
        me.visible = mr_cuda_device_count(&why);
        if (me.visible > 0) pick_gpu(topo, me.visible, &me);
    }
#endif
    int n = world->size;
    rank_device *all = malloc((size_t)n * sizeof *all);
    if (!all) return mr_error(MR_ERR_NOMEM, "out of memory");
    mr_status st = world->ops->allgather(world, &me, all, sizeof me);
    if (st != MR_OK) {
        free(all);
        return st;
    }
    int lacking = 0;
    for (int r = 0; r < n; r++) lacking += sees_none(&all[r]);
    char where[MR_PLAN_PATH_MAX + 64], ranks[256];
    mr_plan_where(p, MR_PLAN_KEY_DEVICE, where, sizeof where);
    rank_list(all, n, sees_none, ranks, sizeof ranks);
    *out = (mr_gen_device){.kind = MR_DEVICE_CPU, .device = -1};

    if (want == MR_DEVICE_CUDA && lacking) {
        const mr_topo_slot *sl = &topo->pl.slots[topo->plan_rank];
        const char *host = topo->topo.nodes[topo->topo.ranks[sl->world_rank].node].host;
        if (!me.visible) {
#ifdef MR_HAVE_CUDA
            st = mr_error(MR_ERR_INPUT, "%s: runtime.device = cuda, but rank %d on %s sees no CUDA device (%s)", where,
                          world->rank, host, why ? why : "none");
#else
            st = mr_error(MR_ERR_INPUT,
                          "%s: runtime.device = cuda, but " NO_CUDA_BUILD
                          ": rebuild with the CUDA toolkit, or set runtime.device to auto or cpu",
                          where);
            (void)host;
#endif
            /* rank 0's message is printed by the caller; the others print theirs */
            if (world->rank != 0) MR_ERRORF("%s", mr_last_error());
        } else {
            st = mr_error(MR_ERR_INPUT, "%s: runtime.device = cuda, but %d of %d ranks see no CUDA device (ranks %s)",
                          where, lacking, n, ranks);
        }
        free(all);
        return st;
    }
    if (want != MR_DEVICE_CPU && !lacking) {
        out->kind = MR_DEVICE_CUDA;
        out->device = me.device;
        out->by_pci = me.by_pci;
        snprintf(out->busid, sizeof out->busid, "%s", me.busid);
        if (world->rank == 0 && !quiet) log_cuda(topo, all, n);
    } else if (world->rank == 0 && !quiet) {
        if (want == MR_DEVICE_CPU)
            MR_INFO("device: cpu (runtime.device = cpu, %s)", where);
        else if (lacking == n)
            MR_INFO("device: cpu (runtime.device = auto: no usable CUDA device: %s)", why ? why : "none visible");
        else
            MR_INFO("device: cpu (runtime.device = auto: %d of %d ranks see no CUDA device, ranks %s)", lacking, n,
                    ranks);
    }
    if (out->kind == MR_DEVICE_CPU && p->comm.backend == MR_COMM_NCCL && world->rank == 0)
        MR_WARN("comm.backend = nccl has no effect on the cpu device: the groups are MPI's");
    free(all);
    return MR_OK;
}

mr_status mr_gen_backend_init(mr_backend *be, const mr_gen_device *d, int threads) {
    if (d->kind == MR_DEVICE_CUDA) {
#ifdef MR_HAVE_CUDA
        if (mr_backend_cuda_init(be, d->device) != 0) {
            const char *e = mr_backend_cuda_error(be);
            return mr_error(MR_ERR_INTERNAL, "cannot start the CUDA backend on GPU %d (bus %s): %s", d->device,
                            d->busid, e ? e : "unknown error");
        }
        return MR_OK;
#else
        return mr_error(MR_ERR_INTERNAL, NO_CUDA_BUILD);
#endif
    }
    if (mr_backend_cpu_init(be, threads) != 0) return mr_error(MR_ERR_INTERNAL, "cannot start the CPU backend");
    return MR_OK;
}

void mr_gen_backend_free(mr_backend *be, const mr_gen_device *d) {
    if (!be->ops) return;
#ifdef MR_HAVE_CUDA
    if (d->kind == MR_DEVICE_CUDA) {
        mr_backend_cuda_free(be);
        return;
    }
#endif
    mr_backend_cpu_free(be);
}

mr_status mr_gen_device_comm(mr_comm *mpi_group, const mr_gen_device *d, const mr_plan *p, mr_backend *be,
                             const char *what, int log, mr_comm **out, int *is_nccl) {
    *out = mpi_group;
    *is_nccl = 0;
    /* A group of one exchanges nothing: no NCCL communicator for it. */
    if (!mpi_group || d->kind != MR_DEVICE_CUDA || mpi_group->size == 1) return MR_OK;
    char where[MR_PLAN_PATH_MAX + 64];
    mr_plan_where(p, MR_PLAN_KEY_COMM_BACKEND, where, sizeof where);
    if (p->comm.backend == MR_COMM_MPI) {
        if (log) MR_INFO("%s group: communicator mpi (comm.backend = mpi; device buffers staged through host memory)", what);
        return MR_OK;
    }
#ifdef MR_HAVE_NCCL
    char desc[256];
    MR_CHECK(mr_comm_select(mpi_group, d->device, mr_backend_cuda_stream(be), out, is_nccl, desc, sizeof desc));
    if (!*is_nccl && p->comm.backend == MR_COMM_NCCL)
        return mr_error(MR_ERR_INPUT, "%s: comm.backend = nccl, but the %s group cannot use it: %s", where, what, desc);
    /* mr_comm_select logs its fallback itself, on each group's rank 0 */
    if (log && *is_nccl) MR_INFO("%s group: %s", what, desc);
    return MR_OK;
#else
    (void)be;
    if (p->comm.backend == MR_COMM_NCCL)
        return mr_error(MR_ERR_INPUT,
                        "%s: comm.backend = nccl, but this moerun was built without NCCL (nccl.h or libnccl not "
                        "found at cmake time; set NCCL_HOME)",
                        where);
    if (log) MR_INFO("%s group: communicator mpi (built without NCCL; device buffers staged through host memory)", what);
    return MR_OK;
#endif
}

mr_status mr_gen_device_allreduce(mr_comm *mpi_group, const mr_gen_device *d, mr_backend *be,
                                  const mr_allreduce_opts *o, int is_nccl, int log, mr_allreduce **out) {
    *out = NULL;
    if (!is_nccl) return MR_OK;
#ifdef MR_HAVE_NCCL
    MR_CHECK(mr_allreduce_create_cuda(mpi_group, d->device, be, o, out));
    if (log) {
        char what[256];
        mr_allreduce_describe(*out, what, sizeof what);
        MR_INFO("tensor all-reduce on the device (its own NCCL communicator and stream): %s", what);
    }
    return MR_OK;
#else
    (void)mpi_group, (void)d, (void)be, (void)o, (void)log;
    return mr_error(MR_ERR_INTERNAL, "a NCCL group in a build without NCCL");
#endif
}
