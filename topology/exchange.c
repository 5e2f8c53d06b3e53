/* The global topology: every rank's node discovered and shared over MPI,
 * or built from XML files without MPI.  See topology.h. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "topology/topology-internal.h"

void mr_topo_free(mr_topo *t) {
    free(t->nodes);
    free(t->ranks);
    memset(t, 0, sizeof *t);
}

static mr_status alloc_topo(mr_topo *t, int n_nodes, int world) {
    t->n_nodes = n_nodes;
    t->world = world;
    t->nodes = calloc((size_t)(n_nodes > 0 ? n_nodes : 1), sizeof *t->nodes);
    t->ranks = calloc((size_t)(world > 0 ? world : 1), sizeof *t->ranks);
    if (!t->nodes || !t->ranks) {
        mr_topo_free(t);
        return mr_error(MR_ERR_NOMEM, "out of memory for the topology of %d nodes, %d ranks", n_nodes, world);
    }
    return MR_OK;
}

/*  every rank           discover its node (hwloc), its binding
 *  node communicator    local rank / size (MPI_COMM_TYPE_SHARED)
 *  allgather            which ranks lead a node -> node index = leaders
 *                       before it in world order
 *  allgather            mr_topo_rank of every rank
 *  bcast per node       the leader's mr_topo_node                        */
mr_status mr_topo_exchange(mr_comm *world, const char *xml, mr_topo *t) {
    memset(t, 0, sizeof *t);
    mr_topo_node *mine = calloc(1, sizeof *mine);
    mr_topo_rank me = {0};
    mr_comm *node = NULL;
    int *lead = calloc((size_t)world->size, sizeof *lead);
    mr_status st = mine && lead ? mr_topo_discover(xml, mine, me.bound) : mr_error(MR_ERR_NOMEM, "out of memory");
    /* every rank learns whether any failed, so none waits alone */
    int bad = st != MR_OK;
    char why[512];
    snprintf(why, sizeof why, "%s", st != MR_OK ? mr_last_error() : "");
    MR_CHECK_GOTO(world->ops->allreduce_max_i32(world, &bad, 1), st, out);
    if (bad) {
        st = why[0] ? mr_error(MR_ERR_INTERNAL, "%s", why) : mr_error(MR_ERR_INTERNAL, "topology discovery failed on another rank");
        goto out;
    }
    MR_CHECK_GOTO(world->ops->split_node(world, &node), st, out);
    me.pid = (int)getpid();
    me.local_rank = node->rank;
    me.local_size = node->size;
    int is_leader = node->rank == 0;
    MR_CHECK_GOTO(world->ops->allgather(world, &is_leader, lead, sizeof(int)), st, out);
    int n_nodes = 0, my_index = 0;
    for (int r = 0; r < world->size; r++) {
        if (r == world->rank) my_index = n_nodes;
        n_nodes += lead[r];
    }
    MR_CHECK_GOTO(node->ops->bcast(node, &my_index, sizeof my_index, 0), st, out);
    me.node = my_index;
    MR_CHECK_GOTO(alloc_topo(t, n_nodes, world->size), st, out);
    MR_CHECK_GOTO(world->ops->allgather(world, &me, t->ranks, sizeof me), st, out);
    for (int r = 0, k = 0; r < world->size; r++) {
        if (!lead[r]) continue;
        if (r == world->rank) t->nodes[k] = *mine;
        MR_CHECK_GOTO(world->ops->bcast(world, &t->nodes[k], sizeof t->nodes[k], r), st, out);
        k++;
    }
out:
    if (st != MR_OK) mr_topo_free(t);
    mr_comm_destroy(node);
    free(mine);
    free(lead);
    return st;
}

mr_status mr_topo_from_xml(mr_topo *t, const char *const *xml, int n_xml, int n_nodes, int ranks_per_node,
                           int cyclic) {
    memset(t, 0, sizeof *t);
    if (n_xml < 1 || n_nodes < 1 || ranks_per_node < 1 || (n_xml != 1 && n_xml != n_nodes))
        return mr_error(MR_ERR_INPUT, "a topology from XML needs one XML file, or one per node (%d nodes, %d files), "
                                      "and at least one rank per node", n_nodes, n_xml);
    MR_CHECK(alloc_topo(t, n_nodes, n_nodes * ranks_per_node));
    for (int n = 0; n < n_nodes; n++) {
        int src = n_xml == 1 ? 0 : n;
        mr_status st = n > 0 && src == 0 ? MR_OK : mr_topo_discover(xml[src], &t->nodes[n], NULL);
        if (st != MR_OK) {
            mr_topo_free(t);
            return st;
        }
        if (n > 0 && src == 0) t->nodes[n] = t->nodes[0];
        /* node names: the XML's HostName when every node has its own file */
        if (n_xml == 1 || !strcmp(t->nodes[n].host, "xml"))
            snprintf(t->nodes[n].host, sizeof t->nodes[n].host, "node%d", n);
    }
    for (int r = 0; r < t->world; r++) {
        mr_topo_rank *rk = &t->ranks[r];
        rk->node = cyclic ? r % n_nodes : r / ranks_per_node;
        rk->local_rank = cyclic ? r / n_nodes : r % ranks_per_node;
        rk->local_size = ranks_per_node;
        snprintf(rk->bound, sizeof rk->bound, "%s", t->nodes[rk->node].cpus);
    }
    return MR_OK;
}
