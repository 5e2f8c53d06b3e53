/* gpu-floors: the limits of one GPU that the GPU benchmark tables are set
 * against, all measured in the same run:
 *   - device memory bandwidth: cudaMemcpy device to device, and a kernel
 *     that only reads (16-byte loads, one sum per block written);
 *   - cuBLAS GEMM rate: fp32 (default math, no TF32: what the backend's
 *     matmul runs), bf16 x bf16 -> fp32 (the backend's bf16 matmul) and
 *     bf16 -> bf16, on large square shapes with random data.
 * Each figure is the mean of the timed repetitions after warm-ups (CUDA
 * events), with the best beside it.  Prints a table and, with --json FILE,
 * writes the same figures as JSON.
 *
 *   gpu-floors [--device N] [--json FILE] [--quick] */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK_CUDA(call)                                                                    \
    do {                                                                                    \
        cudaError_t e_ = (call);                                                            \
        if (e_ != cudaSuccess) {                                                            \
            fprintf(stderr, "gpu-floors: %s:%d: %s: %s\n", __FILE__, __LINE__, #call,       \
                    cudaGetErrorString(e_));                                                \
            exit(1);                                                                        \
        }                                                                                   \
    } while (0)
#define CHECK_CUBLAS(call)                                                                  \
    do {                                                                                    \
        cublasStatus_t s_ = (call);                                                         \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                  \
            fprintf(stderr, "gpu-floors: %s:%d: %s: %s\n", __FILE__, __LINE__, #call,       \
                    cublasGetStatusString(s_));                                             \
            exit(1);                                                                        \
        }                                                                                   \
    } while (0)

#define WARMUP 3
#define MAX_RESULTS 16

typedef struct result {
    char name[48];
    char shape[48];
    double mean_ms, best_ms;
    double rate_mean, rate_best; /* GB/s or TFLOP/s */
    const char *unit;
} result;

static result results[MAX_RESULTS];
static int nresults;

/* Deterministic pseudo-random fill in [-1, 1): no zeros (they run faster). */
static __global__ void fill_f32(float *p, size_t n, unsigned seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        unsigned h = (unsigned)i * 2654435761u ^ seed;
        h ^= h >> 15;
        h *= 2246822519u;
        h ^= h >> 13;
        p[i] = (float)(h >> 8) / 8388608.0f - 1.0f;
    }
}

static __global__ void f32_to_bf16(__nv_bfloat16 *d, const float *s, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        d[i] = __float2bfloat16_rn(s[i]);
}

/* Reads n float4 and writes one float per block (so the loads are not dead). */
static __global__ void read_kernel(const float4 *p, size_t n, float *out) {
    float s = 0.0f;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float4 v = p[i];
        s += v.x + v.y + v.z + v.w;
    }
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if ((threadIdx.x & 31) == 0 && s == 12345.678f) out[blockIdx.x] = s;
}

static void add_result(const char *name, const char *shape, const float *ms, int reps,
                       double work, const char *unit) {
    double sum = 0.0, best = 1e30;
    for (int i = 0; i < reps; i++) {
        sum += ms[i];
        if (ms[i] < best) best = ms[i];
    }
    result *r = &results[nresults++];
    snprintf(r->name, sizeof r->name, "%s", name);
    snprintf(r->shape, sizeof r->shape, "%s", shape);
    r->mean_ms = sum / reps;
    r->best_ms = best;
    r->rate_mean = work / (r->mean_ms * 1e-3);
    r->rate_best = work / (best * 1e-3);
    r->unit = unit;
    printf("%-30s %-22s %10.3f %10.3f %10.1f %10.1f %s\n", r->name, r->shape, r->mean_ms,
           r->best_ms, r->rate_mean, r->rate_best, unit);
    fflush(stdout);
}

static void memory_floors(int sms, int quick) {
    size_t bytes = (quick ? 256ull : 2048ull) << 20;
    float *a, *b, *out;
    CHECK_CUDA(cudaMalloc(&a, bytes));
    CHECK_CUDA(cudaMalloc(&b, bytes));
    CHECK_CUDA(cudaMalloc(&out, 65536 * sizeof(float)));
    fill_f32<<<sms * 8, 256>>>(a, bytes / 4, 1u);
    CHECK_CUDA(cudaGetLastError());
    cudaEvent_t e0, e1;
    CHECK_CUDA(cudaEventCreate(&e0));
    CHECK_CUDA(cudaEventCreate(&e1));
    enum { REPS = 20 };
    float ms[REPS];
    char shape[48];
    snprintf(shape, sizeof shape, "%.2f GiB", (double)bytes / (1 << 30));
    for (int i = -WARMUP; i < REPS; i++) {
        CHECK_CUDA(cudaEventRecord(e0));
        CHECK_CUDA(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice));
        CHECK_CUDA(cudaEventRecord(e1));
        CHECK_CUDA(cudaEventSynchronize(e1));
        if (i >= 0) CHECK_CUDA(cudaEventElapsedTime(&ms[i], e0, e1));
    }
    /* read + write: the figure comparable with a kernel's traffic */
    add_result("memcpy D2D (read+write)", shape, ms, REPS, 2.0 * bytes / 1e9, "GB/s");
    int blocks = sms * 4;
    for (int i = -WARMUP; i < REPS; i++) {
        CHECK_CUDA(cudaEventRecord(e0));
        read_kernel<<<blocks, 1024>>>((const float4 *)a, bytes / 16, out);
        CHECK_CUDA(cudaEventRecord(e1));
        CHECK_CUDA(cudaEventSynchronize(e1));
        CHECK_CUDA(cudaGetLastError());
        if (i >= 0) CHECK_CUDA(cudaEventElapsedTime(&ms[i], e0, e1));
    }
    add_result("read kernel (float4)", shape, ms, REPS, (double)bytes / 1e9, "GB/s");
    CHECK_CUDA(cudaEventDestroy(e0));
    CHECK_CUDA(cudaEventDestroy(e1));
    CHECK_CUDA(cudaFree(a));
    CHECK_CUDA(cudaFree(b));
    CHECK_CUDA(cudaFree(out));
}

typedef enum { G_F32, G_BF16_F32, G_BF16_BF16 } gemm_kind;

static void gemm_floor(cublasHandle_t h, gemm_kind kind, int n, int sms) {
    size_t nn = (size_t)n * n;
    float *a32, *b32, *c32;
    __nv_bfloat16 *a16 = NULL, *b16 = NULL, *c16 = NULL;
    CHECK_CUDA(cudaMalloc(&a32, nn * 4));
    CHECK_CUDA(cudaMalloc(&b32, nn * 4));
    CHECK_CUDA(cudaMalloc(&c32, nn * 4));
    fill_f32<<<sms * 8, 256>>>(a32, nn, 7u);
    fill_f32<<<sms * 8, 256>>>(b32, nn, 11u);
    if (kind != G_F32) {
        CHECK_CUDA(cudaMalloc(&a16, nn * 2));
        CHECK_CUDA(cudaMalloc(&b16, nn * 2));
        CHECK_CUDA(cudaMalloc(&c16, nn * 2));
        f32_to_bf16<<<sms * 8, 256>>>(a16, a32, nn);
        f32_to_bf16<<<sms * 8, 256>>>(b16, b32, nn);
    }
    CHECK_CUDA(cudaGetLastError());
    cudaEvent_t e0, e1;
    CHECK_CUDA(cudaEventCreate(&e0));
    CHECK_CUDA(cudaEventCreate(&e1));
    enum { REPS = 10 };
    float ms[REPS], one = 1.0f, zero = 0.0f;
    for (int i = -WARMUP; i < REPS; i++) {
        CHECK_CUDA(cudaEventRecord(e0));
        if (kind == G_F32)
            CHECK_CUBLAS(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &one, a32, n, b32, n,
                                     &zero, c32, n));
        else
            CHECK_CUBLAS(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &one, a16,
                                      CUDA_R_16BF, n, b16, CUDA_R_16BF, n, &zero,
                                      kind == G_BF16_F32 ? (void *)c32 : (void *)c16,
                                      kind == G_BF16_F32 ? CUDA_R_32F : CUDA_R_16BF, n,
                                      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        CHECK_CUDA(cudaEventRecord(e1));
        CHECK_CUDA(cudaEventSynchronize(e1));
        if (i >= 0) CHECK_CUDA(cudaEventElapsedTime(&ms[i], e0, e1));
    }
    static const char *names[] = {"cuBLAS sgemm fp32 (no TF32)", "cuBLAS gemm bf16 -> fp32",
                                  "cuBLAS gemm bf16 -> bf16"};
    char shape[48];
    snprintf(shape, sizeof shape, "%dx%dx%d", n, n, n);
    add_result(names[kind], shape, ms, REPS, 2.0 * n * n * (double)n / 1e12, "TFLOP/s");
    CHECK_CUDA(cudaEventDestroy(e0));
    CHECK_CUDA(cudaEventDestroy(e1));
    cudaFree(a32), cudaFree(b32), cudaFree(c32);
    if (a16) cudaFree(a16), cudaFree(b16), cudaFree(c16);
}

static void write_json(const char *path, const char *device) {
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(1);
    }
    fprintf(f, "{\n  \"program\": \"gpu-floors\",\n  \"device\": \"%s\",\n  \"results\": [\n", device);
    for (int i = 0; i < nresults; i++) {
        const result *r = &results[i];
        fprintf(f,
                "    {\"name\": \"%s\", \"shape\": \"%s\", \"mean_ms\": %.4f, \"best_ms\": %.4f, "
                "\"rate_mean\": %.2f, \"rate_best\": %.2f, \"unit\": \"%s\"}%s\n",
                r->name, r->shape, r->mean_ms, r->best_ms, r->rate_mean, r->rate_best, r->unit,
                i + 1 < nresults ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
    fclose(f);
}

int main(int argc, char **argv) {
    int dev = 0, quick = 0;
    const char *json = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--device") && i + 1 < argc) dev = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
        else if (!strcmp(argv[i], "--quick")) quick = 1;
        else {
            fprintf(stderr, "usage: gpu-floors [--device N] [--json FILE] [--quick]\n");
            return 2;
        }
    }
    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev == 0) {
        printf("gpu-floors: no CUDA device (%s): skipped\n",
               e != cudaSuccess ? cudaGetErrorString(e) : "none");
        return 77;
    }
    CHECK_CUDA(cudaSetDevice(dev));
    cudaDeviceProp p;
    CHECK_CUDA(cudaGetDeviceProperties(&p, dev));
    char device[512];
    snprintf(device, sizeof device, "%.256s, sm_%d%d, %d SMs, %.1f GiB", p.name, p.major, p.minor,
             p.multiProcessorCount, (double)p.totalGlobalMem / (1 << 30));
    printf("gpu-floors on device %d: %s\n\n", dev, device);
    printf("%-30s %-22s %10s %10s %10s %10s %s\n", "what", "size", "mean ms", "best ms", "mean",
           "best", "unit");
    cublasHandle_t h;
    CHECK_CUBLAS(cublasCreate(&h));
    CHECK_CUBLAS(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
    memory_floors(p.multiProcessorCount, quick);
    int sizes[] = {4096, 8192};
    for (int s = quick ? 0 : 1; s >= 0; s--) /* the large shape first */
        for (int k = G_F32; k <= G_BF16_BF16; k++)
            gemm_floor(h, (gemm_kind)k, sizes[s], p.multiProcessorCount);
    CHECK_CUBLAS(cublasDestroy(h));
    if (json) write_json(json, device);
    return 0;
}
