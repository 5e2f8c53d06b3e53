/* The topology steps a job takes at start, in one call.  See topology.h. */
#include <string.h>

#include "topology/topology-internal.h"

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
        mr_local_cpus lc = {0};
        j->threads = mr_topo_local_cpus(&lc) == MR_OK ? lc.cores : 1;
        if (lc.pus == node->pus && me->local_size > 1) j->threads /= me->local_size;
    }
    if (j->threads < 1) j->threads = 1;
    if (plan->topology.export_nic) mr_topo_export_nic(node, sl->nic, j->nic_env, sizeof j->nic_env);
    return MR_OK;
}

void mr_topo_job_free(mr_topo_job *j) {
    mr_topo_placement_free(&j->pl);
    mr_topo_free(&j->topo);
}
