/* This rank: CPU and memory binding, NIC variables.  See topology.h. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "topology/topology-internal.h"

mr_status mr_topo_bind(const mr_topo *t, const mr_topo_placement *pl, int world_rank, mr_topo_bind_policy policy,
                       mr_topo_bound *out) {
    memset(out, 0, sizeof *out);
    if (world_rank < 0 || world_rank >= pl->world) return mr_error(MR_ERR_INTERNAL, "rank %d outside the placement", world_rank);
    const mr_topo_slot *sl = &pl->slots[pl->plan_rank[world_rank]];
    const mr_topo_node *node = &t->nodes[t->ranks[world_rank].node];
    hwloc_topology_t h;
    if (hwloc_topology_init(&h) != 0) return mr_error(MR_ERR_INTERNAL, "hwloc_topology_init failed");
    if (hwloc_topology_load(h) != 0) {
        hwloc_topology_destroy(h);
        return mr_error(MR_ERR_INTERNAL, "hwloc_topology_load failed");
    }
    mr_status st = MR_OK;
    hwloc_bitmap_t cur = hwloc_bitmap_alloc(), want = mr_topo_set_parse(sl->cpus);
    if (!cur || !want) {
        st = mr_error(MR_ERR_INTERNAL, "bad CPU set '%s' for rank %d", sl->cpus, world_rank);
        goto out;
    }
    int have_cur = hwloc_get_cpubind(h, cur, HWLOC_CPUBIND_PROCESS) == 0;
    int outside = have_cur && !hwloc_bitmap_isincluded(hwloc_topology_get_allowed_cpuset(h), cur);
    if (policy == MR_TOPO_BIND_NONE) {
        snprintf(out->why, sizeof out->why, "topology.bind is none");
    } else if (policy == MR_TOPO_BIND_AUTO && outside) {
        snprintf(out->why, sizeof out->why, "bound from outside (mpirun --bind-to, taskset, srun --cpu-bind): kept");
    } else if (!hwloc_topology_is_thissystem(h)) {
        snprintf(out->why, sizeof out->why, "the topology is not this machine's (HWLOC_XMLFILE without HWLOC_THISSYSTEM=1)");
    } else if (hwloc_set_cpubind(h, want, HWLOC_CPUBIND_PROCESS) != 0) {
        snprintf(out->why, sizeof out->why, "binding to CPUs %.64s failed", sl->cpus);
    } else {
        out->applied = 1;
        if (sl->numa >= 0) {
            /* preferred (not strict) binding of this thread's future
             * allocations, inherited by threads started afterwards */
            hwloc_bitmap_t ns = hwloc_bitmap_alloc();
            hwloc_bitmap_only(ns, (unsigned)node->numa[sl->numa].os_index);
            out->mem_bound = hwloc_set_membind(h, ns, HWLOC_MEMBIND_BIND, HWLOC_MEMBIND_BYNODESET) == 0;
            if (!out->mem_bound) snprintf(out->why, sizeof out->why, "memory binding refused by the system");
            hwloc_bitmap_free(ns);
        }
    }
    if (hwloc_get_cpubind(h, cur, HWLOC_CPUBIND_PROCESS) == 0)
        mr_topo_set_string(cur, out->cpus);
    else
        snprintf(out->cpus, sizeof out->cpus, "?");
out:
    hwloc_bitmap_free(cur);
    hwloc_bitmap_free(want);
    hwloc_topology_destroy(h);
    return st;
}

static int put(const char *var, const char *val, char *what, size_t n) {
    if (getenv(var)) return 0; /* the user's choice wins */
    if (setenv(var, val, 0) != 0) return 0;
    if (what) {
        size_t o = strlen(what);
        snprintf(what + o, n > o ? n - o : 0, "%s%s=%s", o ? " " : "", var, val);
    }
    return 1;
}

int mr_topo_export_nic(const mr_topo_node *node, int nic, char *what, size_t n) {
    if (what && n) what[0] = 0;
    if (nic < 0 || nic >= node->n_nics) return 0;
    const mr_topo_nic *c = &node->nics[nic];
    char v[MR_TOPO_NAME + 8];
    int set = 0;
    if (c->fabric) {
        snprintf(v, sizeof v, "%s:1", c->name);
        set += put("UCX_NET_DEVICES", v, what, n);
        snprintf(v, sizeof v, "=%s", c->name); /* '=': exactly this HCA, not a prefix */
        set += put("NCCL_IB_HCA", v, what, n);
    } else {
        set += put("UCX_NET_DEVICES", c->name, what, n);
        snprintf(v, sizeof v, "=%s", c->name);
        set += put("NCCL_SOCKET_IFNAME", v, what, n);
    }
    return set;
}

static int env_int(const char *const *names, int n_names) {
    for (int i = 0; i < n_names; i++) {
        const char *v = getenv(names[i]);
        char *end;
        long x = v && *v ? strtol(v, &end, 10) : -1;
        if (v && *v && !*end && x >= 0 && x < (1 << 20)) return (int)x;
    }
    return -1;
}

int mr_topo_export_nic_early(mr_topo_gpu_policy gpu, char *what, size_t n) {
    static const char *const rank_vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID",
                                            "PMI_LOCAL_RANK"};
    static const char *const size_vars[] = {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "PMI_LOCAL_SIZE",
                                            "SLURM_NTASKS_PER_NODE"};
    if (what && n) what[0] = 0;
    int local = env_int(rank_vars, 4), size = env_int(size_vars, 4);
    if (local < 0) return -1;
    if (size <= local) size = local + 1;
    mr_topo t = {0};
    mr_topo_placement pl = {0};
    mr_plan plan;
    mr_plan_init(&plan);
    plan.parallel.data = size;
    plan.topology.gpu = gpu;
    int set = -1;
    t.n_nodes = 1;
    t.world = size;
    t.nodes = calloc(1, sizeof *t.nodes);
    t.ranks = calloc((size_t)size, sizeof *t.ranks);
    if (!t.nodes || !t.ranks || mr_topo_discover(NULL, t.nodes, t.ranks[local].bound) != MR_OK) goto out;
    for (int r = 0; r < size; r++) {
        t.ranks[r].local_rank = r;
        t.ranks[r].local_size = size;
        if (r != local) mr_topo_copy(t.ranks[r].bound, MR_TOPO_SET, t.nodes->cpus);
    }
    if (mr_topo_place(&t, &plan, &pl) != MR_OK) goto out;
    set = mr_topo_export_nic(t.nodes, pl.slots[local].nic, what, n);
out:
    mr_topo_placement_free(&pl);
    mr_topo_free(&t);
    return set;
}
