/* The floors of one GPU that GPU benchmark tables are set against, measured
 * in the running process: device memory bandwidth (cudaMemcpy device to
 * device, and a kernel that only reads) and cuBLAS GEMM rates (fp32 without
 * TF32, bf16 x bf16 -> fp32 as the CUDA backend's bf16 matmul, bf16 -> bf16).
 * Used by tests/gpu/gpu-floors (the standalone table) and by bench-engine
 * --backend cuda (the floors beside its own figures).
 *
 * Plain C: no CUDA type appears here.  Built (bench/gpu-floors-lib.cu) only
 * when CMake found nvcc.  Each call selects `device`, allocates its own
 * buffers and frees them, and leaves no work queued. */
#ifndef MR_GPU_FLOORS_LIB_H
#define MR_GPU_FLOORS_LIB_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mr_gpu_floor_kind {
    MR_GPU_FLOOR_MEMCPY = 0,     /* cudaMemcpy D2D; GB/s with read + write counted */
    MR_GPU_FLOOR_READ,           /* a kernel of 16-byte loads; GB/s read */
    MR_GPU_FLOOR_GEMM_F32,       /* cublasSgemm, default math (no TF32); TFLOP/s */
    MR_GPU_FLOOR_GEMM_BF16_F32,  /* cublasGemmEx bf16 x bf16 -> fp32, fp32 compute */
    MR_GPU_FLOOR_GEMM_BF16_BF16, /* cublasGemmEx bf16 x bf16 -> bf16, fp32 compute */
    MR_GPU_FLOOR_KIND_COUNT
} mr_gpu_floor_kind;

typedef struct mr_gpu_floor {
    mr_gpu_floor_kind kind;
    char name[48];  /* "read kernel (float4)" */
    char shape[48]; /* "2.00 GiB" or "8192x8192x8192" */
    double mean_ms, best_ms;     /* over the timed repetitions (CUDA events), after warm-ups */
    double rate_mean, rate_best; /* GB/s or TFLOP/s */
    const char *unit;            /* "GB/s" or "TFLOP/s" (static) */
} mr_gpu_floor;

/* Measure one floor on `device`.  size: buffer bytes for the two memory
 * kinds, n of the n x n x n product for the GEMM kinds.  Returns 0, or -1
 * with the CUDA / cuBLAS reason (file:line: call: error) in err. */
int mr_gpu_floor_measure(int device, mr_gpu_floor_kind kind, size_t size, mr_gpu_floor *out, char *err,
                         size_t errlen);

/* Devices visible; 0 with the reason in err when there is none or the
 * runtime fails. */
int mr_gpu_floor_device_count(char *err, size_t errlen);
/* "NVIDIA H100 80GB HBM3, sm_90, 132 SMs, 79.1 GiB" into desc; 0 or -1. */
int mr_gpu_floor_device_describe(int device, char *desc, size_t cap, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
