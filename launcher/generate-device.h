/* Which device each rank of `moerun generate` computes on, its backend and
 * its device communicators (cmd-generate-device.c).
 *
 *   runtime.device (plan, MR_DEVICE, --set) ─► resolve: auto = cuda when
 *   this moerun has CUDA and every rank sees a device, else cpu; cuda
 *   without either is a user error on every rank (exit 2) ─► the rank's
 *   GPU: its topology placement's bus id, else local rank mod the visible
 *   count ─► one log line on rank 0 (GPU of rank 0, GPUs shared)
 *   ─► backend (CPU or CUDA) ─► tensor and expert groups on NCCL when
 *   usable (comm.backend), else the MPI groups with host staging.
 *
 * Built without CUDA (no MR_HAVE_CUDA), everything here is the CPU path. */
#ifndef MR_GENERATE_DEVICE_H
#define MR_GENERATE_DEVICE_H

#include <stddef.h>

#include "kernels/backend.h"
#include "runtime/allreduce.h"
#include "runtime/comm.h"
#include "runtime/plan.h"
#include "runtime/status.h"
#include "topology/topology.h"

typedef struct mr_gen_device {
    mr_device_kind kind; /* MR_DEVICE_CPU or MR_DEVICE_CUDA, resolved */
    int device;          /* CUDA ordinal, -1 on the CPU */
    int by_pci;          /* 1: found by the placement's bus id; 0: local rank mod count */
    char busid[32];      /* of `device` ("" on the CPU) */
} mr_gen_device;

/* Collective over `world`: resolve runtime.device and pick this rank's
 * GPU.  A device that cannot be had is MR_ERR_INPUT naming where
 * runtime.device was set, on every rank (each rank whose own check failed
 * has logged its reason when it is not rank 0; rank 0's is the returned
 * message).  Rank 0 logs the choice unless quiet. */
mr_status mr_gen_device_choose(mr_comm *world, const mr_plan *p, const mr_topo_job *topo, int quiet,
                               mr_gen_device *out);

/* The CPU backend with `threads`, or the CUDA backend on d->device. */
mr_status mr_gen_backend_init(mr_backend *be, const mr_gen_device *d, int threads);
void mr_gen_backend_free(mr_backend *be, const mr_gen_device *d);

/* Collective over `mpi_group`: the communicator the model uses for device
 * buffers.  On the CPU, or with comm.backend = mpi, the MPI group itself;
 * with CUDA a NCCL communicator when mr_comm_select finds it usable, else
 * the MPI group (the model stages through host memory).  *is_nccl says
 * which (destroy *out only then: it keeps a pointer to mpi_group, which
 * must outlive it).  `what` names the group ("tensor") in rank 0's line
 * when log is set.  comm.backend = nccl with no NCCL is MR_ERR_INPUT. */
mr_status mr_gen_device_comm(mr_comm *mpi_group, const mr_gen_device *d, const mr_plan *p, mr_backend *be,
                             const char *what, int log, mr_comm **out, int *is_nccl);

/* The tensor group's all-reduce engine on the device (runtime/
 * allreduce-cuda.h, its own NCCL communicator over mpi_group) when that
 * group is on NCCL (is_nccl); else *out = NULL and the model uses the host
 * engine on staged copies.  Collective over mpi_group. */
mr_status mr_gen_device_allreduce(mr_comm *mpi_group, const mr_gen_device *d, mr_backend *be,
                                  const mr_allreduce_opts *o, int is_nccl, int log, mr_allreduce **out);

#endif
