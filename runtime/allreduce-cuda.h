/* The all-reduce engine (allreduce.h) on one CUDA device per rank: ring,
 * two-shot and hierarchical with every compression, on device buffers,
 * over a NCCL communicator of its own.
 *
 * Its local work (copies, sums, codecs) runs on a CUDA stream of its own
 * with the CUDA backend's kernels (mr_cuda_compress, _decompress[_add],
 * mr_cuda_add_on), whose bits are the host engine's: the same algorithm
 * over NCCL gives, rank for rank, the bytes it gives over MPI on the host.
 * Its NCCL communicator orders its transfers after that stream, so the
 * local work and the transfers alternate without host waits between them;
 * each reduction ends by waiting for the stream (and reporting the first
 * CUDA, cuBLAS or kernel error).
 *
 * From the caller's thread (mr_allreduce_run*) the stream first waits for
 * the backend's stream (the caller's queued work that made the input).
 * With overlap (mr_allreduce_start, mr_allreduce_matmul) reductions run on
 * the engine's progress thread while the caller queues the next GEMM on
 * the backend's stream: the input must be complete when started
 * (mr_allreduce_matmul synchronises each chunk's GEMM first); the backend's
 * launchers are called from that thread with this stream only.
 *
 * Built into mr_comm_nccl (runtime/nccl.cmake) with CUDA and NCCL; no CUDA
 * types here. */
#ifndef MR_ALLREDUCE_CUDA_H
#define MR_ALLREDUCE_CUDA_H

#include "kernels/backend.h"
#include "runtime/allreduce.h"
#include "runtime/comm.h"
#include "runtime/status.h"

/* Collective over the MPI group `mpi_group` (each rank on its own
 * `device`, which `be`, a CUDA backend, drives).  The engine owns its NCCL
 * communicator (and its node sub-groups for hierarchical). */
mr_status mr_allreduce_create_cuda(mr_comm *mpi_group, int device, mr_backend *be, const mr_allreduce_opts *o,
                                   mr_allreduce **out);

#endif
