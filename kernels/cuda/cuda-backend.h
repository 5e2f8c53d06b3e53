/* The CUDA backend: kernels/backend.h on one GPU, plus the launchers that
 * only a GPU has (bf16 weights, block compression for the all-reduce).
 *
 * Plain C: this header names no CUDA type (streams are void *), so C code
 * and tests include it without the CUDA headers.
 *
 * Memory.  Every pointer an op takes is device memory from ops->alloc,
 * including the int32 arrays (ids, slot, pos), rope's inv_freq and the
 * router's p->bias; the mr_route_params struct itself is read on the host.
 *
 * Ordering.  Every op, upload and download is queued on the backend's one
 * stream and may return before it has run: host buffers given to upload and
 * download, and results read on the host, are safe only after ops->sync()
 * (the CPU backend's sync is a no-op, so code written this way runs on both).
 *
 * Errors.  Ops return void, so the first failure of any CUDA or cuBLAS call
 * (or a shape the kernels do not take) is kept in the backend with
 * file:line and the library's own error string, and printed once to stderr;
 * mr_backend_cuda_error() returns it.  Kernel faults surface at the next
 * sync.  Later failures do not overwrite the first message.
 *
 * Allocation.  Ops never call cudaMalloc: cuBLAS gets a workspace and the
 * bf16 matmul a scratch buffer at init; mr_backend_cuda_reserve() grows the
 * scratch before a run that needs more. */
#ifndef MR_CUDA_BACKEND_H
#define MR_CUDA_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Devices the CUDA runtime sees; 0 when there is none, no driver, or the
 * runtime fails (the reason is then in *why, a static string, if why is
 * not NULL). */
int mr_cuda_device_count(const char **why);
/* "NVIDIA H100 80GB HBM3, sm_90, 132 SMs, 79.1 GiB" into buf. 0 on success. */
int mr_cuda_device_describe(int device, char *buf, size_t cap);
/* The CUDA ordinal of the GPU at PCI bus id `busid` ("0000:52:00.0", as
 * the topology's placement writes it), or -1 with the reason in why (len
 * bytes, may be NULL): not visible (CUDA_VISIBLE_DEVICES), no driver.
 * cuda-device.cu. */
int mr_cuda_device_by_pci(const char *busid, char *why, size_t len);
/* The PCI bus id of `device` in lower case ("0000:52:00.0") into busid;
 * 0, or -1 with "?" in busid. */
int mr_cuda_device_pci(int device, char *busid, size_t len);

/* Backend on `device`: its own non-blocking stream, a cuBLAS handle in
 * fp32 (no TF32) mode, a 32 MiB cuBLAS workspace and a 16 MiB scratch.
 * Returns 0, or -1 with the reason in mr_backend_cuda_error(b). */
int mr_backend_cuda_init(mr_backend *b, int device);
void mr_backend_cuda_free(mr_backend *b);

/* The first error recorded (file:line: call: error string), or NULL. */
const char *mr_backend_cuda_error(const mr_backend *b);
void mr_backend_cuda_clear_error(mr_backend *b);
/* The backend's cudaStream_t, for a communicator that must order its work
 * after the ops (NCCL). */
void *mr_backend_cuda_stream(const mr_backend *b);
/* Grow the scratch buffer to at least `bytes` (synchronises; never shrinks).
 * Call at start-up with the largest mr_cuda_matmul_bf16_scratch() the run
 * will need.  Returns 0 or -1 (error recorded). */
int mr_backend_cuda_reserve(mr_backend *b, size_t bytes);

/* ---- bf16 weights --------------------------------------------------------
 * bf16 is stored as uint16_t (the top half of the float32, rounded to
 * nearest even; NaN stays NaN). */

/* dst(n) bf16 on the device = src(n) float32 on the host.  Goes through the
 * scratch buffer in pieces, so it allocates nothing. */
void mr_cuda_upload_bf16(mr_backend *b, uint16_t *dst, const float *src, size_t n);
/* dst(n) bf16 = src(n) float32, both on the device. */
void mr_cuda_convert_bf16(mr_backend *b, uint16_t *dst, const float *src, size_t n);
/* Scratch bytes that mr_cuda_matmul_bf16 needs for an (M, K) x. */
size_t mr_cuda_matmul_bf16_scratch(int M, int K);
/* y(M,N) = bf16(x(M,K)) . w(N,K)^T (+ bias(N)); accumulate != 0 adds into y.
 * w bf16, x and y float32; x is rounded to bf16 into the scratch, the
 * products are summed in float32 (cublasGemmEx, CUBLAS_COMPUTE_32F). */
void mr_cuda_matmul_bf16(mr_backend *b, float *y, const float *x, const uint16_t *w,
                         const float *bias, int M, int N, int K, int accumulate);

/* ---- block compression (runtime/compress.h) -----------------------------
 * mode is an mr_compression value (runtime/plan.h: 0 none, 1 bf16, 2 fp16,
 * 3 int8, 4 int4), block a power of two in 32..256.  The bytes are those of
 * mr_compress() / mr_decompress_add() on the CPU, bit for bit (for finite
 * inputs: the int modes do not take others, compress.h).  stream NULL
 * is the backend's stream; errors go to the backend's error. */
void mr_cuda_compress(mr_backend *b, void *stream, int mode, int block, const float *x,
                      size_t n, void *out);
void mr_cuda_decompress_add(mr_backend *b, void *stream, int mode, int block,
                            const void *in, size_t n, float *acc);
/* The same writing out(n) (mr_decompress()'s bits). */
void mr_cuda_decompress(mr_backend *b, void *stream, int mode, int block, const void *in,
                        size_t n, float *out);
/* y(n) += x(n) on `stream` (NULL: the backend's), the add op's bits: for
 * work queued on another stream than the backend's (the all-reduce
 * engine's, runtime/allreduce-cuda.c). */
void mr_cuda_add_on(mr_backend *b, void *stream, float *y, const float *x, size_t n);

#ifdef __cplusplus
}
#endif

#endif
