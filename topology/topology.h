/* What this process may run on, from hwloc: the cores of its CPU binding.
 * (The global multi-node topology, placement and GPU/NIC affinity build on
 * this module.) */
#ifndef MR_TOPOLOGY_H
#define MR_TOPOLOGY_H

#include "runtime/status.h"

typedef struct mr_local_cpus {
    int cores;    /* physical cores with at least one allowed PU */
    int pus;      /* allowed hardware threads */
    int numa_nodes;
} mr_local_cpus;

/* Read the allowed CPU set of this process (honours an outside binding
 * such as mpirun --bind-to or taskset). */
mr_status mr_topo_local_cpus(mr_local_cpus *out);

#endif
