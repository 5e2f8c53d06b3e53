/* GPU floors (bench/gpu-floors-lib.h): memory bandwidth by cudaMemcpy D2D
 * and by a read-only kernel, cuBLAS GEMM rates on square shapes with random
 * data.  Each figure is the mean of REPS timed repetitions after WARMUP
 * untimed ones (CUDA events on the default stream), with the best beside
 * it.  Failures are returned with the call and CUDA's or cuBLAS's own
 * string, never exit(): the callers decide. */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <stdio.h>
#include <string.h>

#include "bench/gpu-floors-lib.h"

#define WARMUP 3

/* Record the first failure in err and jump to the cleanup label. */
#define CUDA_CHECK_GOTO(call, label)                                                                 \
    do {                                                                                             \
        cudaError_t e_ = (call);                                                                     \
        if (e_ != cudaSuccess) {                                                                     \
            snprintf(err, errlen, "%s:%d: %s: %s", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            goto label;                                                                              \
        }                                                                                            \
    } while (0)
#define CUBLAS_CHECK_GOTO(call, label)                                                                  \
    do {                                                                                                \
        cublasStatus_t s_ = (call);                                                                     \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                              \
            snprintf(err, errlen, "%s:%d: %s: %s", __FILE__, __LINE__, #call, cublasGetStatusString(s_)); \
            goto label;                                                                                 \
        }                                                                                               \
    } while (0)

static const char *const kind_names[MR_GPU_FLOOR_KIND_COUNT] = {
    "memcpy D2D (read+write)",     "read kernel (float4)",     "cuBLAS sgemm fp32 (no TF32)",
    "cuBLAS gemm bf16 -> fp32", "cuBLAS gemm bf16 -> bf16"};

/* Deterministic pseudo-random fill in [-1, 1): no zeros (they run faster). */
static __global__ void fill_f32(float *p, size_t n, unsigned seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        unsigned h = (unsigned)i * 2654435761u ^ seed;
        h ^= h >> 15;
        h *= 2246822519u;
        h ^= h >> 13;
        p[i] = (float)(h >> 8) / 8388608.0f - 1.0f;
    }
}

static __global__ void f32_to_bf16(__nv_bfloat16 *d, const float *s, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        d[i] = __float2bfloat16_rn(s[i]);
}

/* Reads n float4 and writes one float per block (so the loads are not dead). */
static __global__ void read_kernel(const float4 *p, size_t n, float *out) {
    float s = 0.0f;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float4 v = p[i];
        s += v.x + v.y + v.z + v.w;
    }
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if ((threadIdx.x & 31) == 0 && s == 12345.678f) out[blockIdx.x] = s;
}

static void fill_result(mr_gpu_floor *r, mr_gpu_floor_kind kind, const char *shape, const float *ms, int reps,
                        double work, const char *unit) {
    double sum = 0.0, best = 1e30;
    for (int i = 0; i < reps; i++) {
        sum += ms[i];
        if (ms[i] < best) best = ms[i];
    }
    r->kind = kind;
    snprintf(r->name, sizeof r->name, "%s", kind_names[kind]);
    snprintf(r->shape, sizeof r->shape, "%s", shape);
    r->mean_ms = sum / reps;
    r->best_ms = best;
    r->rate_mean = work / (r->mean_ms * 1e-3);
    r->rate_best = work / (best * 1e-3);
    r->unit = unit;
}

static int memory_floor(int sms, mr_gpu_floor_kind kind, size_t bytes, mr_gpu_floor *out, char *err,
                        size_t errlen) {
    enum { REPS = 20 };
    float *a = NULL, *b = NULL, *sink = NULL, ms[REPS];
    cudaEvent_t e0 = NULL, e1 = NULL;
    char shape[48];
    int rc = -1;
    bytes &= ~(size_t)15; /* whole float4 */
    CUDA_CHECK_GOTO(cudaMalloc(&a, bytes), done);
    if (kind == MR_GPU_FLOOR_MEMCPY) CUDA_CHECK_GOTO(cudaMalloc(&b, bytes), done);
    CUDA_CHECK_GOTO(cudaMalloc(&sink, 65536 * sizeof(float)), done);
    fill_f32<<<sms * 8, 256>>>(a, bytes / 4, 1u);
    CUDA_CHECK_GOTO(cudaGetLastError(), done);
    CUDA_CHECK_GOTO(cudaEventCreate(&e0), done);
    CUDA_CHECK_GOTO(cudaEventCreate(&e1), done);
    for (int i = -WARMUP; i < REPS; i++) {
        CUDA_CHECK_GOTO(cudaEventRecord(e0), done);
        if (kind == MR_GPU_FLOOR_MEMCPY) {
            CUDA_CHECK_GOTO(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice), done);
        } else {
            read_kernel<<<sms * 4, 1024>>>((const float4 *)a, bytes / 16, sink);
            CUDA_CHECK_GOTO(cudaGetLastError(), done);
        }
        CUDA_CHECK_GOTO(cudaEventRecord(e1), done);
        CUDA_CHECK_GOTO(cudaEventSynchronize(e1), done);
        if (i >= 0) CUDA_CHECK_GOTO(cudaEventElapsedTime(&ms[i], e0, e1), done);
    }
    if (bytes >= (size_t)1 << 30) snprintf(shape, sizeof shape, "%.2f GiB", (double)bytes / (1 << 30));
    else snprintf(shape, sizeof shape, "%.2f MiB", (double)bytes / (1 << 20));
    /* memcpy: read + write, the figure comparable with a kernel's traffic */
    fill_result(out, kind, shape, ms, REPS, (kind == MR_GPU_FLOOR_MEMCPY ? 2.0 : 1.0) * (double)bytes / 1e9, "GB/s");
    rc = 0;
done:
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    cudaFree(a);
    cudaFree(b);
    cudaFree(sink);
    return rc;
}

static int gemm_floor(int sms, mr_gpu_floor_kind kind, int n, mr_gpu_floor *out, char *err, size_t errlen) {
    enum { REPS = 10 };
    size_t nn = (size_t)n * n;
    float *a32 = NULL, *b32 = NULL, *c32 = NULL, ms[REPS], one = 1.0f, zero = 0.0f;
    __nv_bfloat16 *a16 = NULL, *b16 = NULL, *c16 = NULL;
    cublasHandle_t h = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    char shape[48];
    int rc = -1;
    CUBLAS_CHECK_GOTO(cublasCreate(&h), done);
    CUBLAS_CHECK_GOTO(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH), done);
    CUDA_CHECK_GOTO(cudaMalloc(&a32, nn * 4), done);
    CUDA_CHECK_GOTO(cudaMalloc(&b32, nn * 4), done);
    CUDA_CHECK_GOTO(cudaMalloc(&c32, nn * 4), done);
    fill_f32<<<sms * 8, 256>>>(a32, nn, 7u);
    fill_f32<<<sms * 8, 256>>>(b32, nn, 11u);
    if (kind != MR_GPU_FLOOR_GEMM_F32) {
        CUDA_CHECK_GOTO(cudaMalloc(&a16, nn * 2), done);
        CUDA_CHECK_GOTO(cudaMalloc(&b16, nn * 2), done);
        CUDA_CHECK_GOTO(cudaMalloc(&c16, nn * 2), done);
        f32_to_bf16<<<sms * 8, 256>>>(a16, a32, nn);
        f32_to_bf16<<<sms * 8, 256>>>(b16, b32, nn);
    }
    CUDA_CHECK_GOTO(cudaGetLastError(), done);
    CUDA_CHECK_GOTO(cudaEventCreate(&e0), done);
    CUDA_CHECK_GOTO(cudaEventCreate(&e1), done);
    for (int i = -WARMUP; i < REPS; i++) {
        CUDA_CHECK_GOTO(cudaEventRecord(e0), done);
        if (kind == MR_GPU_FLOOR_GEMM_F32)
            CUBLAS_CHECK_GOTO(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &one, a32, n, b32, n, &zero, c32, n),
                              done);
        else
            CUBLAS_CHECK_GOTO(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &one, a16, CUDA_R_16BF, n, b16,
                                           CUDA_R_16BF, n, &zero,
                                           kind == MR_GPU_FLOOR_GEMM_BF16_F32 ? (void *)c32 : (void *)c16,
                                           kind == MR_GPU_FLOOR_GEMM_BF16_F32 ? CUDA_R_32F : CUDA_R_16BF, n,
                                           CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                              done);
        CUDA_CHECK_GOTO(cudaEventRecord(e1), done);
        CUDA_CHECK_GOTO(cudaEventSynchronize(e1), done);
        if (i >= 0) CUDA_CHECK_GOTO(cudaEventElapsedTime(&ms[i], e0, e1), done);
    }
    snprintf(shape, sizeof shape, "%dx%dx%d", n, n, n);
    fill_result(out, kind, shape, ms, REPS, 2.0 * n * n * (double)n / 1e12, "TFLOP/s");
    rc = 0;
done:
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    if (h) cublasDestroy(h);
    cudaFree(a32);
    cudaFree(b32);
    cudaFree(c32);
    cudaFree(a16);
    cudaFree(b16);
    cudaFree(c16);
    return rc;
}

extern "C" int mr_gpu_floor_measure(int device, mr_gpu_floor_kind kind, size_t size, mr_gpu_floor *out, char *err,
                                    size_t errlen) {
    int sms = 0;
    if ((int)kind < 0 || kind >= MR_GPU_FLOOR_KIND_COUNT) {
        snprintf(err, errlen, "unknown floor kind %d", (int)kind);
        return -1;
    }
    if (kind >= MR_GPU_FLOOR_GEMM_F32 && (size < 1 || size > 65536)) {
        snprintf(err, errlen, "GEMM size %zu out of range 1..65536", size);
        return -1;
    }
    if (kind < MR_GPU_FLOOR_GEMM_F32 && size < 16) {
        snprintf(err, errlen, "buffer of %zu bytes: at least 16", size);
        return -1;
    }
    CUDA_CHECK_GOTO(cudaSetDevice(device), fail);
    CUDA_CHECK_GOTO(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), fail);
    if (kind < MR_GPU_FLOOR_GEMM_F32) return memory_floor(sms, kind, size, out, err, errlen);
    return gemm_floor(sms, kind, (int)size, out, err, errlen);
fail:
    return -1;
}

extern "C" int mr_gpu_floor_device_count(char *err, size_t errlen) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        snprintf(err, errlen, "%s", cudaGetErrorString(e));
        return 0;
    }
    if (n == 0) snprintf(err, errlen, "no CUDA device");
    return n;
}

extern "C" int mr_gpu_floor_device_describe(int device, char *desc, size_t cap, char *err, size_t errlen) {
    cudaDeviceProp p;
    CUDA_CHECK_GOTO(cudaGetDeviceProperties(&p, device), fail);
    snprintf(desc, cap, "%.256s, sm_%d%d, %d SMs, %.1f GiB", p.name, p.major, p.minor, p.multiProcessorCount,
             (double)p.totalGlobalMem / (1 << 30));
    return 0;
fail:
    return -1;
}
