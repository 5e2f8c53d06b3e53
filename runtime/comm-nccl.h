/* mr_comm on NCCL: the same operation table as comm-mpi.c, on DEVICE
 * memory, for ranks that each drive their own GPU.
 *
 * Built as the separate static library mr_comm_nccl (runtime/nccl.cmake)
 * when CUDA and NCCL are found; this header has no CUDA or NCCL types, so
 * any module may include it.
 *
 * Semantics of the operations (see comm.h for each one's contract):
 *   - every buffer is device memory on `device`, except allreduce_max_i32,
 *     whose v(n) is host memory (it goes through a small device scratch);
 *   - blocking: each call queues its NCCL work on the communicator's own
 *     communication stream, ordered after the caller's compute stream
 *     (cudaEventRecord on it, cudaStreamWaitEvent on the communication
 *     stream), and waits for the communication stream before returning --
 *     the same as the MPI operations.  wait_sleep_us is honoured while
 *     waiting (0: cudaStreamSynchronize; > 0 poll and sleep; < 0 poll).
 *     Asynchronous variants are future work;
 *   - tags are ignored: NCCL matches point-to-point messages between a
 *     pair of ranks in the order they were issued;
 *   - recv_any is not supported (MR_ERR_UNSUPPORTED);
 *   - split and split_node split the underlying MPI group, then create a
 *     NCCL communicator on the sub-group (same device and compute stream).
 * Every NCCL or CUDA failure is an MR_ERR_INTERNAL with file:line, the call
 * and ncclGetErrorString / cudaGetErrorString. */
#ifndef MR_COMM_NCCL_H
#define MR_COMM_NCCL_H

#include <stddef.h>

#include "runtime/comm.h"
#include "runtime/status.h"

/* Collective over `mpi_group`: rank 0 makes the NCCL unique id and
 * broadcasts it with the group's bcast; every rank then ncclCommInitRank on
 * `device`.  cuda_stream is the caller's compute stream (a cudaStream_t,
 * e.g. mr_backend_cuda_stream()); NULL means the legacy default stream.
 * The communicator keeps a pointer to mpi_group (which must outlive it) and
 * creates its own communication stream. */
mr_status mr_comm_nccl_create(mr_comm *mpi_group, int device, void *cuda_stream, mr_comm **out);

/* Collective over `mpi_group`: 1 when every rank sees `device` and no two
 * ranks of the group share one GPU (their cudaDeviceGetPCIBusId strings,
 * compared after an allgather), else 0.  Every rank gets the same answer. */
int mr_comm_nccl_usable(mr_comm *mpi_group, int device);

/* Collective over `mpi_group`: the NCCL communicator when
 * mr_comm_nccl_usable(), else `mpi_group` itself (the caller then stages
 * device buffers through host memory) with an info line saying why.
 * *is_nccl says which one *out is (the caller destroys only a NCCL one);
 * desc (len bytes) gets one line for the start-up log. */
mr_status mr_comm_select(mr_comm *mpi_group, int device, void *cuda_stream, mr_comm **out, int *is_nccl,
                         char *desc, size_t len);

#endif
