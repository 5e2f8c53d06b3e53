/* The machine set a job runs on, as every rank sees it, and where each rank
 * sits in it.
 *
 *   discover (hwloc, one node) ─► exchange (MPI: every rank the same
 *   mr_topo) ─► place (pure: GPU, cores, NUMA node, NIC of each rank;
 *   which nodes each group spans) ─► bind (this rank: hwloc cpubind and
 *   membind, NIC variables) ─► report (text, JSON, a dump that reloads)
 *
 * A node is described by what placement needs, not by the whole hwloc tree:
 * its allowed cores grouped by NUMA node, its GPUs (CUDA/NVML OS devices,
 * or NVIDIA PCI functions, with their bus id and local cores) and its NICs
 * (OpenFabrics or network OS devices behind PCI), each GPU paired with the
 * NIC that shares the deepest PCI ancestor.  CPU sets are hwloc list
 * strings ("0-55,112-167") of OS PU indexes.
 *
 * Everything after discovery is a pure function of (mr_topo, plan), so
 * tests can run any machine set from XML files or dumps without MPI. */
#ifndef MR_TOPOLOGY_H
#define MR_TOPOLOGY_H

#include <stdio.h>

#include "runtime/comm.h"
#include "runtime/plan.h"
#include "runtime/status.h"

#define MR_TOPO_NAME 64
#define MR_TOPO_SET 512 /* a CPU set as a list string */
#define MR_TOPO_MAX_NUMA 32
#define MR_TOPO_MAX_GPUS 32
#define MR_TOPO_MAX_NICS 32
#define MR_TOPO_MAX_PUS 4096 /* OS PU indexes below this */

typedef struct mr_topo_numa {
    int os_index;
    int cores; /* allowed cores in it */
    char cpus[MR_TOPO_SET];
} mr_topo_numa;

typedef struct mr_topo_gpu {
    char name[MR_TOPO_NAME];  /* "cuda3", "nvml3" or the PCI bus id */
    char busid[MR_TOPO_NAME]; /* "0000:52:00.0" */
    char model[MR_TOPO_NAME];
    int numa;                 /* index into the node's numa[], -1 if unknown */
    int nic;                  /* index into nics[] of the nearest NIC, -1 none */
    char cpus[MR_TOPO_SET];   /* cores local to it (its socket or NUMA node) */
} mr_topo_gpu;

typedef struct mr_topo_nic {
    char name[MR_TOPO_NAME];   /* "mlx5_3" (OpenFabrics) or "eth0" (network) */
    char netdev[MR_TOPO_NAME]; /* the network interface of the same function ("" if none) */
    char busid[MR_TOPO_NAME];
    int fabric; /* OpenFabrics (InfiniBand/RoCE verbs) device */
    int numa;
} mr_topo_nic;

typedef struct mr_topo_node {
    char host[MR_TOPO_NAME];
    int cores, pus;         /* allowed on this node */
    char cpus[MR_TOPO_SET]; /* allowed PUs */
    short pu_core[MR_TOPO_MAX_PUS]; /* core of each allowed PU (numbered in topology order), -1 other PUs */
    int n_numa, n_gpus, n_nics;
    mr_topo_numa numa[MR_TOPO_MAX_NUMA];
    mr_topo_gpu gpus[MR_TOPO_MAX_GPUS];
    mr_topo_nic nics[MR_TOPO_MAX_NICS];
} mr_topo_node;

typedef struct mr_topo_rank {
    int node, local_rank, local_size;
    int pid;
    char bound[MR_TOPO_SET]; /* its CPU binding when discovered (from outside: mpirun, taskset, Slurm) */
} mr_topo_rank;

typedef struct mr_topo {
    int n_nodes, world;
    mr_topo_node *nodes;
    mr_topo_rank *ranks; /* by world rank */
} mr_topo;

/* ---- discovery -------------------------------------------------------- */

/* This node, from hwloc with I/O devices kept.  `xml`: an hwloc XML file
 * instead of this machine (NULL: this machine, or HWLOC_XMLFILE).  `bound`
 * (MR_TOPO_SET bytes, may be NULL) gets this process's current binding. */
mr_status mr_topo_discover(const char *xml, mr_topo_node *node, char *bound);

/* Every rank discovers its node and all ranks exchange: nodes in the order
 * of their lowest world rank, ranks of a node from MPI_COMM_TYPE_SHARED.
 * Collective over `world`. */
mr_status mr_topo_exchange(mr_comm *world, const char *xml, mr_topo *t);

/* A machine set from files, without MPI: n_xml XML files (or one, for every
 * node) for n_nodes nodes of ranks_per_node ranks, ranks mapped to nodes in
 * blocks (rank / ranks_per_node) or round robin (cyclic). */
mr_status mr_topo_from_xml(mr_topo *t, const char *const *xml, int n_xml, int n_nodes, int ranks_per_node,
                           int cyclic);

void mr_topo_free(mr_topo *t);

/* ---- dump: a text file that reloads to the same mr_topo ---------------- */

mr_status mr_topo_dump(const mr_topo *t, FILE *f);
mr_status mr_topo_save(const mr_topo *t, const char *path);
/* Errors name the file and line. */
mr_status mr_topo_load(mr_topo *t, const char *path);
mr_status mr_topo_parse(mr_topo *t, const char *text, const char *origin);

/* ---- placement (pure) ----------------------------------------------------- */

typedef struct mr_topo_slot {
    int world_rank; /* the MPI rank holding this plan rank */
    int gpu;        /* index into its node's gpus[], -1: none */
    int numa;       /* memory: index into its node's numa[], -1: several */
    int nic;        /* index into its node's nics[], -1: none */
    int cores;      /* cores in cpus */
    int shared;     /* ranks sharing these cores (> 1 when oversubscribed) */
    char cpus[MR_TOPO_SET];
} mr_topo_slot;

typedef struct mr_topo_span {
    int groups;    /* groups of this kind */
    int max_nodes; /* the most nodes one group spans */
    int split;     /* groups spanning more than one node */
} mr_topo_span;

typedef struct mr_topo_placement {
    int world;
    mr_topo_slot *slots;  /* by plan rank */
    int *plan_rank;       /* by world rank */
    int reordered;        /* plan ranks differ from world ranks */
    mr_topo_span span[MR_GROUP_KIND_COUNT];
    int gpus_shared;      /* some GPU serves several ranks */
    char warning[1024];   /* "" when all is well */
} mr_topo_placement;

/* Plan ranks follow the nodes: plan rank r is the r-th rank in (node,
 * local rank) order, so each run of neighbouring plan ranks (a tensor
 * group) sits inside one node whenever it fits.  Then each rank gets its
 * GPU (plan key topology.gpu), cores, NUMA node and NIC.  A tensor group
 * spanning nodes sets `warning`, or fails (MR_ERR_INPUT, naming
 * topology.strict) when the plan says strict.  `plan` must have passed mr_plan_check for t->world ranks. */
mr_status mr_topo_place(const mr_topo *t, const mr_plan *plan, mr_topo_placement *pl);
void mr_topo_placement_free(mr_topo_placement *pl);

/* ---- this rank ---------------------------------------------------------- */

typedef struct mr_topo_bound {
    int applied;       /* 1: moerun bound; 0: left as it was */
    int mem_bound;     /* memory bound to the slot's NUMA node */
    char why[128];     /* why not applied, or what failed */
    char cpus[MR_TOPO_SET]; /* the binding now in force */
} mr_topo_bound;

/* Bind this process (all its threads, and threads it starts later) to its
 * slot's cores and memory.  Failure to bind memory is reported in `out`,
 * not an error (containers may forbid it). */
mr_status mr_topo_bind(const mr_topo *t, const mr_topo_placement *pl, int world_rank, mr_topo_bind_policy policy,
                       mr_topo_bound *out);

/* Export this rank's NIC for UCX and NCCL (UCX_NET_DEVICES, NCCL_IB_HCA or
 * NCCL_SOCKET_IFNAME), keeping variables the user already set.  Returns
 * how many were set; `what` (may be NULL) gets "UCX_NET_DEVICES=mlx5_0:1 ...". */
int mr_topo_export_nic(const mr_topo_node *node, int nic, char *what, size_t n);

/* Before MPI_Init (so that MPI's own UCX sees it): this rank's nearest NIC
 * from its node alone, with the local rank and size the launcher put in
 * the environment (Open MPI, Slurm, MPICH/Hydra).  Returns the variables
 * set, -1 when the launcher gave no local rank. */
int mr_topo_export_nic_early(mr_topo_gpu_policy gpu, char *what, size_t n);

/* ---- all of it, for a job ------------------------------------------------ */

typedef struct mr_topo_job {
    mr_topo topo;
    mr_topo_placement pl;
    mr_topo_bound bound;
    int plan_rank; /* this rank's */
    int threads;   /* CPU threads for this rank: its cores over the ranks sharing them */
    char nic_env[256]; /* variables set for the NIC ("" none) */
} mr_topo_job;

/* Exchange, place (errors as mr_topo_place: alike on every rank), bind
 * (plan key topology.bind), export the NIC (topology.export_nic).
 * Collective over `world`. */
mr_status mr_topo_job_setup(mr_comm *world, const mr_plan *plan, mr_topo_job *j);
void mr_topo_job_free(mr_topo_job *j);

/* ---- reports ------------------------------------------------------------ */

/* One or two lines for rank 0's log at every start. */
void mr_topo_summary(const mr_topo *t, const mr_topo_placement *pl, char *buf, size_t n);
/* The table: nodes, then one row per rank with its groups. */
void mr_topo_print(const mr_topo *t, const mr_plan *plan, const mr_topo_placement *pl, FILE *f);
/* `allowed` (may be NULL): each plan rank's Cpus_allowed_list after binding. */
void mr_topo_print_json(const mr_topo *t, const mr_plan *plan, const mr_topo_placement *pl,
                        const char *const *allowed, FILE *f);

/* ---- what this process may run on (sets the default thread count) ------ */

typedef struct mr_local_cpus {
    int cores;    /* physical cores with at least one allowed PU */
    int pus;      /* allowed hardware threads */
    int numa_nodes;
} mr_local_cpus;

/* Read the allowed CPU set of this process (honours an outside binding
 * such as mpirun --bind-to or taskset). */
mr_status mr_topo_local_cpus(mr_local_cpus *out);

#endif
