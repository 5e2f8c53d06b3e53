/* What the MPI benchmarks built with MR_BENCH_CUDA share: a GPU per rank. */
#ifndef MR_BENCH_GPU_H
#define MR_BENCH_GPU_H

#include "kernels/cuda/cuda-backend.h"
#include "runtime/comm.h"
#include "runtime/status.h"

/* The node-local rank's GPU (local rank mod the visible devices) and the
 * CUDA backend on it.  MR_ERR_UNSUPPORTED (the caller exits 77) without a
 * device or with more ranks on the node than GPUs: NCCL refuses two ranks
 * on one GPU. */
static inline mr_status bench_gpu_start(mr_comm *world, mr_backend *be, int *device) {
    mr_comm *node = NULL;
    int ndev = mr_cuda_device_count(NULL);
    *device = -1;
    mr_status st = ndev > 0 ? world->ops->split_node(world, &node) : mr_error(MR_ERR_UNSUPPORTED, "no CUDA device");
    if (st == MR_OK) {
        *device = node->rank % ndev;
        if (node->size > ndev) st = mr_error(MR_ERR_UNSUPPORTED, "%d ranks on a node of %d GPUs", node->size, ndev);
    }
    if (st == MR_OK && mr_backend_cuda_init(be, *device) != 0)
        st = mr_error(MR_ERR_INTERNAL, "CUDA backend: %s", mr_backend_cuda_error(be));
    mr_comm_destroy(node);
    return st;
}

#endif
