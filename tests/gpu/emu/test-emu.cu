/* test-emu: the CUDA emulator itself (README.md).  CUDA code, built only
 * in an emulator build (-DMR_CUDA_EMU=ON), through the same rewrite as
 * kernels/cuda.  Two halves:
 *   - semantics, with results known exactly: warp shuffles (xor and
 *     broadcast), a block reduction through shared memory and
 *     __syncthreads, grid-stride loops over more items than threads,
 *     dynamic shared memory, cublasSgemm and cublasGemmEx against sums of
 *     small integers (exact in float), the launch limits;
 *   - misuse, each in a forked child that must die (or fail) with the
 *     emulator's message: a kernel reading one float past its buffer, the
 *     host reading device memory, a host pointer passed to a kernel, use
 *     after cudaFree, a copy with the wrong kind, a copy past the end,
 *     lanes meeting at __syncwarp with different masks, a barrier that
 *     can never complete.
 * If these pass, a check the emulator claims is one it makes. */
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int failed, passed;

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (cond) {                                                        \
            passed++;                                                      \
        } else {                                                           \
            failed++;                                                      \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                  \
            fprintf(stderr, "\n");                                         \
        }                                                                  \
    } while (0)

/* ---- kernels ------------------------------------------------------------ */

/* out[lane] = sum over the warp of (lane + 1) by xor shuffles; bc[lane] =
 * lane 5's value by __shfl_sync. */
static __global__ void warp_kernel(int *out, int *bc) {
    int lane = threadIdx.x & 31, v = lane + 1;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    out[threadIdx.x] = v;
    bc[threadIdx.x] = __shfl_sync(0xffffffffu, lane * 10, 5);
}

/* Block sum of x through shared memory: needs every __syncthreads. */
static __global__ void block_sum_kernel(const float *x, float *out) {
    __shared__ float s[256];
    s[threadIdx.x] = x[blockIdx.x * 256 + threadIdx.x];
    __syncthreads();
    for (int w = 128; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = s[0];
}

static __global__ void stride_kernel(int *y, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] += (int)i;
}

/* Each thread writes its index into dynamic shared memory, then reads its
 * neighbour's after the barrier. */
static __global__ void dyn_shared_kernel(int *out) {
    extern __shared__ int sh[];
    sh[threadIdx.x] = (int)threadIdx.x * 3;
    __syncthreads();
    out[threadIdx.x] = sh[(threadIdx.x + 1) % blockDim.x];
}

static __global__ void read_kernel(const float *x, float *y, int n) {
    if (threadIdx.x == 0) y[0] = x[n]; /* n = the length: one past the end */
}

static __global__ void copy_kernel(const float *x, float *y) { y[threadIdx.x] = x[threadIdx.x]; }

static __global__ void bad_mask_kernel(int *y) {
    __syncwarp(threadIdx.x < 16 ? 0xffffffffu : 0xfffffffeu);
    y[threadIdx.x] = 1;
}

static __global__ void never_kernel(int *y) {
    /* Warp 0 waits at a warp barrier for lanes that sit at __syncthreads. */
    if (threadIdx.x < 16) __syncwarp();
    else __syncthreads();
    y[threadIdx.x] = 1;
}

/* ---- helpers ------------------------------------------------------------ */

template <typename T> static T *dev(const T *h, size_t n) {
    T *d = NULL;
    if (cudaMalloc(&d, n * sizeof(T)) != cudaSuccess) abort();
    if (h && cudaMemcpy(d, h, n * sizeof(T), cudaMemcpyHostToDevice) != cudaSuccess) abort();
    return d;
}

template <typename T> static void get(T *h, const T *d, size_t n) {
    if (cudaMemcpy(h, d, n * sizeof(T), cudaMemcpyDeviceToHost) != cudaSuccess) abort();
}

/* Runs fn in a child; passes when the child does not exit 0 and its
 * stderr holds want. */
static void expect_death(const char *what, void (*fn)(void), const char *want) {
    int fd[2];
    if (pipe(fd) != 0) abort();
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd[1], 2);
        close(fd[0]);
        fn();
        _exit(0);
    }
    close(fd[1]);
    char buf[8192];
    size_t len = 0;
    ssize_t r;
    while (len + 1 < sizeof buf && (r = read(fd[0], buf + len, sizeof buf - 1 - len)) > 0) len += (size_t)r;
    buf[len] = 0;
    close(fd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    int died = !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(died && strstr(buf, want), "%s: child %s; stderr \"%s\" should contain \"%s\"", what,
          died ? "failed" : "exited 0", buf, want);
    printf("%-46s %s\n", what, died && strstr(buf, want) ? "caught" : "MISSED");
}

/* ---- semantics ---------------------------------------------------------- */

static void test_semantics(void) {
    int *dout = dev<int>(NULL, 96), *dbc = dev<int>(NULL, 64), out[96], bc[64];
    warp_kernel<<<1, 64>>>(dout, dbc);
    CHECK(cudaGetLastError() == cudaSuccess, "warp_kernel launch");
    get(out, dout, 64);
    get(bc, dbc, 64);
    int ok = 1;
    for (int i = 0; i < 64; i++) ok &= out[i] == 528 && bc[i] == 50; /* 1 + ... + 32; lane 5 * 10 */
    CHECK(ok, "warp xor sum 528 and broadcast of lane 5 in both warps (got %d, %d)", out[0], bc[0]);

    enum { NB = 3 };
    float hx[NB * 256], hs[NB];
    for (int i = 0; i < NB * 256; i++) hx[i] = (float)(i % 7);
    float *dx = dev(hx, NB * 256), *ds = dev<float>(NULL, NB);
    block_sum_kernel<<<NB, 256>>>(dx, ds);
    get(hs, ds, NB);
    for (int b = 0; b < NB; b++) {
        float want = 0;
        for (int i = 0; i < 256; i++) want += hx[b * 256 + i];
        CHECK(hs[b] == want, "block %d sum %g, want %g", b, (double)hs[b], (double)want);
    }

    size_t n = 10007;
    int *dy = dev<int>(NULL, n), *hy = (int *)malloc(n * sizeof(int));
    cudaMemset(dy, 0, n * sizeof(int));
    stride_kernel<<<3, 128>>>(dy, n); /* 384 threads over 10007 items */
    get(hy, dy, n);
    ok = 1;
    for (size_t i = 0; i < n; i++) ok &= hy[i] == (int)i;
    CHECK(ok, "grid-stride loop covers every item once");
    free(hy);

    dyn_shared_kernel<<<2, 96, 96 * sizeof(int)>>>(dout);
    get(out, dout, 96);
    ok = 1;
    for (int i = 0; i < 96; i++) ok &= out[i] == ((i + 1) % 96) * 3;
    CHECK(ok, "dynamic shared memory written before the barrier, read after");

    /* Launch limits: cudaGetLastError reports them, then clears. */
    stride_kernel<<<1, 1025>>>(dy, n);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "1025 threads refused");
    dyn_shared_kernel<<<1, 32, 49 * 1024>>>(dout);
    CHECK(cudaGetLastError() == cudaErrorInvalidValue, "49 KiB of dynamic shared memory refused");
    CHECK(cudaGetLastError() == cudaSuccess, "error cleared by cudaGetLastError");
    cudaFree(dout), cudaFree(dbc), cudaFree(dx), cudaFree(ds), cudaFree(dy);
}

/* Row-major y(M,N) = x(M,K) w(N,K)^T as kernels/cuda calls it (op(w) = T,
 * op(x) = N, column-major m = N, n = M), and a plain column-major product
 * with lda > rows; small integers, so every sum is exact. */
static void test_gemm(void) {
    enum { M = 3, N = 5, K = 4 };
    float x[M * K], w[N * K], y[M * N], want[M * N];
    for (int i = 0; i < M * K; i++) x[i] = (float)(i % 5 - 2);
    for (int i = 0; i < N * K; i++) w[i] = (float)(i % 3 - 1);
    for (int r = 0; r < M; r++)
        for (int c = 0; c < N; c++) {
            float s = 0;
            for (int k = 0; k < K; k++) s += x[r * K + k] * w[c * K + k];
            want[r * N + c] = s + 100.0f; /* beta = 1 onto 100 */
        }
    cublasHandle_t h;
    CHECK(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS, "cublasCreate");
    float *dx = dev(x, M * K), *dw = dev(w, N * K), *dy = dev<float>(NULL, M * N);
    for (int i = 0; i < M * N; i++) y[i] = 100.0f;
    cudaMemcpy(dy, y, sizeof y, cudaMemcpyHostToDevice);
    float one = 1.0f;
    CHECK(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, dw, K, dx, K, &one, dy, N) ==
              CUBLAS_STATUS_SUCCESS, "Sgemm");
    get(y, dy, M * N);
    CHECK(!memcmp(y, want, sizeof y), "Sgemm T,N = x w^T + y (y[0] %g, want %g)", (double)y[0], (double)want[0]);

    /* bf16 inputs: integers are exact in bf16 */
    uint16_t xb[M * K], wb[N * K];
    for (int i = 0; i < M * K; i++) xb[i] = (uint16_t)(__float_as_uint(x[i]) >> 16);
    for (int i = 0; i < N * K; i++) wb[i] = (uint16_t)(__float_as_uint(w[i]) >> 16);
    uint16_t *dxb = dev(xb, M * K), *dwb = dev(wb, N * K);
    float zero = 0.0f;
    cudaMemset(dy, 0xff, sizeof y); /* NaN: beta 0 must not read it */
    CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, dwb, CUDA_R_16BF, K, dxb, CUDA_R_16BF, K, &zero,
                       dy, CUDA_R_32F, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS,
          "GemmEx");
    get(y, dy, M * N);
    int ok = 1;
    for (int i = 0; i < M * N; i++) ok &= y[i] == want[i] - 100.0f;
    CHECK(ok, "GemmEx bf16 T,N with beta 0 over NaN");

    /* bf16 C: 1 + 2^-8 (+ 2^-9) rounds to nearest even: 1 and 1 + 2^-7 */
    uint16_t a2[2] = {0x3f80, 0x3f80}, b2[4] = {0x3f80, 0x3b80, 0x3f80, 0x3bc0}, c2[2];
    uint16_t *da2 = dev(a2, 2), *db2 = dev(b2, 4), *dc2 = dev<uint16_t>(NULL, 2);
    CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 2, 2, &one, da2, CUDA_R_16BF, 1, db2, CUDA_R_16BF, 2, &zero,
                       dc2, CUDA_R_16BF, 1, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS,
          "GemmEx bf16 -> bf16");
    get(c2, dc2, 2);
    CHECK(c2[0] == 0x3f80 && c2[1] == 0x3f81, "bf16 C rounded to nearest even (%#x, %#x; want 0x3f80, 0x3f81)",
          c2[0], c2[1]);

    /* A column-major 2x2 product inside larger leading dimensions, N,N */
    float A[3 * 2] = {1, 2, -9, 3, 4, -9}, B[2 * 2] = {5, 6, 7, 8}, C[2 * 2];
    float *dA = dev(A, 6), *dB = dev(B, 4), *dC = dev<float>(NULL, 4);
    CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, dA, 3, dB, 2, &zero, dC, 2) ==
              CUBLAS_STATUS_SUCCESS, "Sgemm N,N lda 3");
    get(C, dC, 4);
    /* [1 3; 2 4] [5 7; 6 8] = [23 31; 34 46], column-major */
    CHECK(C[0] == 23 && C[1] == 34 && C[2] == 31 && C[3] == 46, "column-major product %g %g %g %g", (double)C[0],
          (double)C[1], (double)C[2], (double)C[3]);
    CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 3, 2, 2, &one, dA, 2, dB, 2, &zero, dC, 3) ==
              CUBLAS_STATUS_INVALID_VALUE, "lda < m refused");
    cublasDestroy(h);
}

/* Timing events: the elapsed time between two records is what the host
 * waited between them (work runs when issued); an event that was never
 * recorded or does not time is an invalid handle, as in CUDA. */
static void test_events(void) {
    cudaEvent_t a, b, quiet;
    float ms = -1.0f;
    CHECK(cudaEventCreate(&a) == cudaSuccess && cudaEventCreate(&b) == cudaSuccess &&
              cudaEventCreateWithFlags(&quiet, cudaEventDisableTiming) == cudaSuccess, "events created");
    CHECK(cudaEventRecord(a) == cudaSuccess, "record a");
    CHECK(cudaEventElapsedTime(&ms, a, b) == cudaErrorInvalidResourceHandle, "b never recorded: refused");
    CHECK(cudaGetLastError() == cudaErrorInvalidResourceHandle, "and the error is the last one");
    struct timespec pause = {0, 20 * 1000 * 1000};
    nanosleep(&pause, NULL);
    CHECK(cudaEventRecord(b) == cudaSuccess && cudaEventSynchronize(b) == cudaSuccess, "record b");
    CHECK(cudaEventElapsedTime(&ms, a, b) == cudaSuccess && ms >= 19.0f && ms < 2000.0f,
          "20 ms between the records (got %g ms)", (double)ms);
    CHECK(cudaEventRecord(quiet) == cudaSuccess, "a non-timing event records");
    CHECK(cudaEventElapsedTime(&ms, a, quiet) == cudaErrorInvalidResourceHandle, "non-timing event refused");
    cudaGetLastError();
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    cudaEventDestroy(quiet);
}

/* Devices (MR_EMU_DEVICES=2, set by main): a stream and an event belong
 * to the device current at their creation, as in CUDA; a launch on another
 * device's stream and a record of an event into one are refused. */
static void test_devices(void) {
    cudaStream_t s0;
    cudaEvent_t e1;
    float *x0 = dev<float>(NULL, 32), *y0 = dev<float>(NULL, 32);
    CHECK(cudaStreamCreateWithFlags(&s0, cudaStreamNonBlocking) == cudaSuccess, "a stream on device 0");
    CHECK(cudaSetDevice(1) == cudaSuccess, "device 1 current");
    CHECK(cudaEventCreate(&e1) == cudaSuccess, "an event on device 1");
    copy_kernel<<<1, 32, 0, s0>>>(x0, y0);
    CHECK(cudaGetLastError() == cudaErrorInvalidResourceHandle, "launch on device 0's stream from device 1 refused");
    CHECK(cudaEventRecord(e1, s0) == cudaErrorInvalidResourceHandle, "device 1's event on device 0's stream refused");
    cudaGetLastError();
    int d = -1;
    CHECK(cudaSetDevice(0) == cudaSuccess && cudaGetDevice(&d) == cudaSuccess && d == 0, "back on device 0");
    copy_kernel<<<1, 32, 0, s0>>>(x0, y0);
    CHECK(cudaGetLastError() == cudaSuccess && cudaStreamSynchronize(s0) == cudaSuccess, "launch on its own device");
    cudaEventDestroy(e1);
    cudaStreamDestroy(s0);
}

/* ---- misuse (each in a child) ------------------------------------------- */

static void past_end(void) {
    float *x = dev<float>(NULL, 37), *y = dev<float>(NULL, 1);
    read_kernel<<<1, 32>>>(x, y, 37);
}

static void host_reads_device(void) {
    float *x = dev<float>(NULL, 8);
    volatile float v = x[3];
    (void)v;
}

static void host_pointer_arg(void) {
    static float hx[32];
    float *y = dev<float>(NULL, 32);
    copy_kernel<<<1, 32>>>(hx, y);
}

static void use_after_free(void) {
    float *x = dev<float>(NULL, 32), *y = dev<float>(NULL, 32);
    cudaFree(x);
    copy_kernel<<<1, 32>>>(x, y);
}

static void wrong_kind(void) {
    float *x = dev<float>(NULL, 32), *y = dev<float>(NULL, 32);
    cudaError_t e = cudaMemcpy(y, x, 32 * sizeof(float), cudaMemcpyHostToDevice);
    if (e != cudaSuccess) {
        fprintf(stderr, "%s\n", cudaGetErrorString(e));
        exit(1);
    }
}

static void copy_past_end(void) {
    float h[33] = {0}, *x = dev<float>(NULL, 32);
    cudaError_t e = cudaMemcpy(x, h, 33 * sizeof(float), cudaMemcpyHostToDevice);
    if (e != cudaSuccess) exit(1);
}

/* A kernel on device 1 given device 0's memory: no peer access. */
static void other_device_memory(void) {
    float *x0 = dev<float>(NULL, 32), *y0 = dev<float>(NULL, 32);
    cudaSetDevice(1);
    copy_kernel<<<1, 32>>>(x0, y0);
}

/* A new host thread starts on device 0 (as in CUDA): one that launches
 * without cudaSetDevice reaches memory of device 1 from device 0. */
static float *g_x1, *g_y1;
static void *thread_launch(void *) {
    copy_kernel<<<1, 32>>>(g_x1, g_y1);
    return NULL;
}
static void thread_without_set_device(void) {
    cudaSetDevice(1);
    g_x1 = dev<float>(NULL, 32);
    g_y1 = dev<float>(NULL, 32);
    pthread_t t;
    pthread_create(&t, NULL, thread_launch, NULL);
    pthread_join(t, NULL);
}

static void bad_mask(void) {
    int *y = dev<int>(NULL, 32);
    bad_mask_kernel<<<1, 32>>>(y);
}

/* Two non-blocking streams: a kernel on s2 reads what a kernel on s1
 * wrote, with (ordered) or without an event between them. */
static void two_streams(bool event) {
    float *x = dev<float>(NULL, 32), *y = dev<float>(NULL, 32);
    cudaStream_t s1, s2;
    cudaEvent_t e;
    cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking);
    cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking);
    cudaEventCreateWithFlags(&e, cudaEventDisableTiming);
    copy_kernel<<<1, 32, 0, s1>>>(y, x); /* writes x */
    if (event) {
        cudaEventRecord(e, s1);
        cudaStreamWaitEvent(s2, e, 0);
    }
    copy_kernel<<<1, 32, 0, s2>>>(x, y); /* reads x */
}
static void unordered_streams(void) { two_streams(false); }
static void ordered_streams(void) {
    two_streams(true);
    cudaDeviceSynchronize();
    fprintf(stderr, "ordered: fine\n");
    exit(3);
}

static void never(void) {
    int *y = dev<int>(NULL, 64);
    never_kernel<<<1, 64>>>(y);
}

int main(void) {
    setenv("MR_EMU_DEVICES", "2", 1); /* before the emulator reads it: test_devices needs two */
    test_semantics();
    test_gemm();
    test_events();
    test_devices();
    expect_death("kernel reads one float past its buffer", past_end, "past its end");
    expect_death("host reads device memory", host_reads_device, "the host touched device memory");
    expect_death("host pointer passed to a kernel", host_pointer_arg, "not device memory");
    expect_death("kernel uses freed memory", use_after_free, "FREED");
    expect_death("cudaMemcpy device->device as HostToDevice", wrong_kind, "should be host memory");
    expect_death("cudaMemcpy one float past the end", copy_past_end, "runs 4 bytes past the end");
    expect_death("a kernel on device 1 reads device 0's memory", other_device_memory, "is memory of device 0");
    expect_death("a thread launches without cudaSetDevice", thread_without_set_device,
                 "on device 0: pointer argument 1 is memory of device 1");
    expect_death("lanes at __syncwarp with different masks", bad_mask, "masks");
    expect_death("a barrier that cannot complete", never, "deadlock");
    expect_death("a kernel on another stream reads what one wrote, no event", unordered_streams,
                 "with no event wait or synchronisation between them");
    expect_death("the same with an event between them (exit 3 to show it ran through)", ordered_streams,
                 "ordered: fine");
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
