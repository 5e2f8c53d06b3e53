/* The all-reduce engine's local work on a CUDA device (allreduce-cuda.h). */
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/cuda/cuda-backend.h"
#include "runtime/allreduce-cuda.h"
#include "runtime/comm-nccl.h"

typedef struct cuda_local {
    mr_backend *be;
    int device;
    cudaStream_t stream;
    cudaEvent_t ready;
    char error[256]; /* the first failing runtime call of copy/zero/free */
} cuda_local;

static void note(cuda_local *l, cudaError_t e, const char *call, int line) {
    if (e != cudaSuccess && !l->error[0])
        snprintf(l->error, sizeof l->error, "%s:%d: %s failed: %s", __FILE__, line, call, cudaGetErrorString(e));
}
#define NOTE(l, call) note((l), (call), #call, __LINE__)

/* Kernels and copies may come from the progress thread, whose current
 * device is its own: every call sets it. */
static void *d_alloc(void *ctx, size_t bytes) {
    cuda_local *l = ctx;
    void *p = NULL;
    NOTE(l, cudaSetDevice(l->device));
    return cudaMalloc(&p, bytes) == cudaSuccess ? p : NULL;
}
static void d_free(void *ctx, void *p) {
    cuda_local *l = ctx;
    NOTE(l, cudaSetDevice(l->device));
    NOTE(l, cudaStreamSynchronize(l->stream));
    NOTE(l, cudaFree(p));
}
static void d_copy(void *ctx, void *dst, const void *src, size_t bytes) {
    cuda_local *l = ctx;
    NOTE(l, cudaSetDevice(l->device));
    NOTE(l, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, l->stream));
}
static void d_zero(void *ctx, void *dst, size_t bytes) {
    cuda_local *l = ctx;
    NOTE(l, cudaSetDevice(l->device));
    NOTE(l, cudaMemsetAsync(dst, 0, bytes, l->stream));
}
static void d_add(void *ctx, float *acc, const float *x, size_t n) {
    cuda_local *l = ctx;
    NOTE(l, cudaSetDevice(l->device));
    mr_cuda_add_on(l->be, l->stream, acc, x, n);
}
static void d_compress(void *ctx, mr_compression c, int block, const float *x, size_t n, void *out) {
    cuda_local *l = ctx;
    NOTE(l, cudaSetDevice(l->device));
    mr_cuda_compress(l->be, l->stream, (int)c, block, x, n, out);
}
static void d_decompress(void *ctx, mr_compression c, int block, const void *in, size_t n, float *out) {
    cuda_local *l = ctx;
    NOTE(l, cudaSetDevice(l->device));
    mr_cuda_decompress(l->be, l->stream, (int)c, block, in, n, out);
}
static void d_decompress_add(void *ctx, mr_compression c, int block, const void *in, size_t n, float *acc) {
    cuda_local *l = ctx;
    NOTE(l, cudaSetDevice(l->device));
    mr_cuda_decompress_add(l->be, l->stream, (int)c, block, in, n, acc);
}
static void d_begin(void *ctx) {
    cuda_local *l = ctx;
    NOTE(l, cudaSetDevice(l->device));
    NOTE(l, cudaEventRecord(l->ready, (cudaStream_t)mr_backend_cuda_stream(l->be)));
    NOTE(l, cudaStreamWaitEvent(l->stream, l->ready, 0));
}
static mr_status d_fence(void *ctx) {
    cuda_local *l = ctx;
    NOTE(l, cudaSetDevice(l->device));
    NOTE(l, cudaStreamSynchronize(l->stream));
    if (l->error[0]) return mr_error(MR_ERR_INTERNAL, "all-reduce on the device: %s", l->error);
    const char *e = mr_backend_cuda_error(l->be);
    if (e) return mr_error(MR_ERR_INTERNAL, "all-reduce on the device: %s", e);
    return MR_OK;
}
static void d_destroy(void *ctx) {
    cuda_local *l = ctx;
    if (!l) return;
    cudaSetDevice(l->device);
    if (l->stream) cudaStreamSynchronize(l->stream);
    if (l->ready) cudaEventDestroy(l->ready);
    if (l->stream) cudaStreamDestroy(l->stream);
    free(l);
}

mr_status mr_allreduce_create_cuda(mr_comm *mpi_group, int device, mr_backend *be, const mr_allreduce_opts *o,
                                   mr_allreduce **out) {
    *out = NULL;
    cuda_local *l = calloc(1, sizeof *l);
    if (!l) return mr_error(MR_ERR_NOMEM, "out of memory");
    l->be = be;
    l->device = device;
    cudaError_t e = cudaSetDevice(device);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&l->stream, cudaStreamNonBlocking);
    if (e == cudaSuccess) e = cudaEventCreateWithFlags(&l->ready, cudaEventDisableTiming);
    /* every rank goes on to the collective NCCL set-up, which refuses for all
     * when one rank's device failed (comm-nccl.c) */
    mr_comm *nc = NULL;
    mr_status st = mr_comm_nccl_create(mpi_group, device, e == cudaSuccess ? l->stream : NULL, &nc);
    if (st == MR_OK && e != cudaSuccess)
        st = mr_error(MR_ERR_INTERNAL, "all-reduce engine on device %d: %s", device, cudaGetErrorString(e));
    if (st != MR_OK) {
        mr_comm_destroy(nc);
        d_destroy(l);
        return st;
    }
    mr_allreduce_local local = {
        .ctx = l,
        .alloc = d_alloc,
        .free = d_free,
        .copy = d_copy,
        .zero = d_zero,
        .add = d_add,
        .compress = d_compress,
        .decompress = d_decompress,
        .decompress_add = d_decompress_add,
        .begin = d_begin,
        .fence = d_fence,
        .destroy = d_destroy,
    };
    return mr_allreduce_create_local(nc, 1, o, &local, out);
}
