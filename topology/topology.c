/* See topology.h. */
#include "topology/topology.h"

#include <hwloc.h>

mr_status mr_topo_local_cpus(mr_local_cpus *out) {
    hwloc_topology_t t;
    if (hwloc_topology_init(&t) != 0) return mr_error(MR_ERR_INTERNAL, "hwloc_topology_init failed");
    if (hwloc_topology_load(t) != 0) {
        hwloc_topology_destroy(t);
        return mr_error(MR_ERR_INTERNAL, "hwloc_topology_load failed");
    }
    hwloc_bitmap_t set = hwloc_bitmap_alloc();
    if (!set || hwloc_get_cpubind(t, set, HWLOC_CPUBIND_PROCESS) != 0) {
        /* No binding information: everything the topology allows. */
        hwloc_bitmap_copy(set, hwloc_topology_get_allowed_cpuset(t));
    }
    out->pus = hwloc_bitmap_weight(set);
    out->cores = hwloc_get_nbobjs_inside_cpuset_by_type(t, set, HWLOC_OBJ_CORE);
    if (out->cores <= 0) out->cores = out->pus;
    out->numa_nodes = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_NUMANODE);
    hwloc_bitmap_free(set);
    hwloc_topology_destroy(t);
    if (out->pus <= 0) return mr_error(MR_ERR_INTERNAL, "hwloc reports no CPU for this process");
    return MR_OK;
}
