/* The topology steps a job takes at start, in one call.  See topology.h. */
#include <stdlib.h>
#include <string.h>

#include "topology/topology-internal.h"

/* Cores of `node` with a PU in the CPU list (0 if it does not parse). */
static int cores_in(const mr_topo_node *node, const char *list) {
    hwloc_bitmap_t set = mr_topo_set_parse(list);
    char *seen = calloc(MR_TOPO_MAX_PUS, 1);
    int n = 0;
    for (int pu = set && seen ? hwloc_bitmap_first(set) : -1; pu >= 0 && pu < MR_TOPO_MAX_PUS;
         pu = hwloc_bitmap_next(set, pu)) {
        int c = node->pu_core[pu];
        if (c >= 0 && !seen[c]) seen[c] = 1, n++;
    }
    free(seen);
    hwloc_bitmap_free(set);
    return n;
}

mr_status mr_topo_job_setup(mr_comm *world, const mr_plan *plan, mr_topo_job *j) {
    memset(j, 0, sizeof *j);
    MR_CHECK(mr_topo_exchange(world, NULL, &j->topo));
    mr_status st = mr_topo_place(&j->topo, plan, &j->pl);
    if (st != MR_OK) {
        mr_topo_free(&j->topo);
        return st;
    }
    j->plan_rank = j->pl.plan_rank[world->rank];
    const mr_topo_slot *sl = &j->pl.slots[j->plan_rank];
    const mr_topo_rank *me = &j->topo.ranks[world->rank];
    const mr_topo_node *node = &j->topo.nodes[me->node];
    st = mr_topo_bind(&j->topo, &j->pl, world->rank, plan->topology.bind, &j->bound);
    if (st != MR_OK) {
        mr_topo_job_free(j);
        return st;
    }
    if (j->bound.applied) {
        j->threads = sl->shared > 1 ? sl->cores / sl->shared : sl->cores;
    } else {
        /* the cores it may run on, shared with the node's other ranks
         * when nothing narrowed them */
        j->threads = cores_in(node, j->bound.cpus);
        if (!strcmp(j->bound.cpus, node->cpus) && me->local_size > 1) j->threads /= me->local_size;
    }
    if (j->threads < 1) j->threads = 1;
    if (plan->topology.export_nic) mr_topo_export_nic(node, sl->nic, j->nic_env, sizeof j->nic_env);
    return MR_OK;
}

void mr_topo_job_free(mr_topo_job *j) {
    mr_topo_placement_free(&j->pl);
    mr_topo_free(&j->topo);
}
