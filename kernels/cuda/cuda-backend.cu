/* The CUDA backend: the ops table, device memory, the error record, the
 * matrix products through cuBLAS (fp32, and bf16 weights) and the device
 * queries.  Row-wise and element-wise kernels are in cuda-elementwise.cu,
 * rope and attention in cuda-attention.cu, the router in cuda-moe.cu, the
 * block codecs in cuda-compress.cu.
 *
 * Row-major y(M,N) = x(M,K) . w(N,K)^T is, read column-major, the product
 * y^T(N,M) = w^T . x^T with w seen as (K,N) and x as (K,M): one cublasSgemm
 * with op(w) = T, op(x) = N and leading dimensions K, K, N.  cuBLAS runs in
 * CUBLAS_DEFAULT_MATH, which never uses TF32 for fp32 products, so results
 * are fp32 sums (within ~1e-6 of the CPU's, in another order). */
#include "kernels/cuda/cuda-internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MR_CUDA_WORKSPACE_BYTES (32u << 20) /* cuBLAS's advice for Hopper */
#define MR_CUDA_SCRATCH_BYTES (16u << 20)
#define MR_CUDA_ALLOC_MIN 256 /* what alloc(0) gets, so the pointer is unique */

/* The message of a failed init, when there is no context to hold it. */
static thread_local char init_msg[MR_CUDA_ERRMSG_MAX];

/* ---- errors ------------------------------------------------------------- */

void mr_cuda_fail(mr_cuda_ctx *c, const char *file, int line, const char *fmt, ...) {
    char what[MR_CUDA_ERRMSG_MAX - 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    fprintf(stderr, "E cuda %s:%d: %s\n", base, line, what);
    if (!c->failed) {
        snprintf(c->msg, sizeof c->msg, "%s:%d: %s", base, line, what);
        c->failed = 1;
    }
}

const char *mr_backend_cuda_error(const mr_backend *b) {
    const mr_cuda_ctx *c = (const mr_cuda_ctx *)b->ctx;
    if (!c) return init_msg[0] ? init_msg : NULL;
    return c->failed ? c->msg : NULL;
}

void mr_backend_cuda_clear_error(mr_backend *b) {
    mr_cuda_ctx *c = mr_cuda_ctx_of(b);
    if (c) {
        c->failed = 0;
        c->msg[0] = 0;
    }
    init_msg[0] = 0;
}

void *mr_backend_cuda_stream(const mr_backend *b) {
    const mr_cuda_ctx *c = (const mr_cuda_ctx *)b->ctx;
    return c ? (void *)c->stream : NULL;
}

/* ---- memory ------------------------------------------------------------- */

static void *cuda_alloc(mr_backend *b, size_t bytes) {
    mr_cuda_ctx *c = mr_cuda_ctx_of(b);
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : MR_CUDA_ALLOC_MIN);
    if (e != cudaSuccess) {
        mr_cuda_fail(c, __FILE__, __LINE__, "cudaMalloc(%zu bytes): %s", bytes,
                     cudaGetErrorString(e));
        return NULL;
    }
    return p;
}

static void cuda_free(mr_backend *b, void *p) {
    if (p) CUDA_CHECK(mr_cuda_ctx_of(b), cudaFree(p));
}

static void cuda_upload(mr_backend *b, void *dst, const void *src, size_t bytes) {
    mr_cuda_ctx *c = mr_cuda_ctx_of(b);
    if (bytes)
        CUDA_CHECK(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
}

static void cuda_download(mr_backend *b, void *dst, const void *src, size_t bytes) {
    mr_cuda_ctx *c = mr_cuda_ctx_of(b);
    if (bytes)
        CUDA_CHECK(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
}

static void cuda_sync(mr_backend *b) {
    mr_cuda_ctx *c = mr_cuda_ctx_of(b);
    CUDA_CHECK(c, cudaStreamSynchronize(c->stream));
}

int mr_backend_cuda_reserve(mr_backend *b, size_t bytes) {
    mr_cuda_ctx *c = mr_cuda_ctx_of(b);
    int st = 0;
    if (bytes <= c->scratch_bytes) return 0;
    CUDA_CHECK_GOTO(c, cudaStreamSynchronize(c->stream), st, out);
    CUDA_CHECK_GOTO(c, cudaFree(c->scratch), st, out);
    c->scratch = NULL;
    c->scratch_bytes = 0;
    CUDA_CHECK_GOTO(c, cudaMalloc(&c->scratch, bytes), st, out);
    c->scratch_bytes = bytes;
out:
    return st;
}

/* ---- matrix products ---------------------------------------------------- */

/* y(M,N) = x(M,K) . w(N,K)^T (+ bias(N)); accumulate != 0 adds into y. */
static void cuda_matmul(mr_backend *b, float *y, const float *x, const float *w,
                        const float *bias, int M, int N, int K, int accumulate) {
    mr_cuda_ctx *c = mr_cuda_ctx_of(b);
    if (M < 1 || N < 1 || K < 1) {
        mr_cuda_fail(c, __FILE__, __LINE__, "matmul: bad shape M=%d N=%d K=%d", M, N, K);
        return;
    }
    float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    if (bias) {
        /* The bias goes into y first and the GEMM accumulates onto it. */
        mr_cuda_bias_rows(c, y, bias, M, N, accumulate);
        beta = 1.0f;
    }
    CUBLAS_CHECK(c, cublasSgemm(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, w, K, x, K,
                                &beta, y, N));
}

size_t mr_cuda_matmul_bf16_scratch(int M, int K) {
    return (size_t)(M > 0 ? M : 0) * (size_t)(K > 0 ? K : 0) * sizeof(uint16_t);
}

void mr_cuda_matmul_bf16(mr_backend *b, float *y, const float *x, const uint16_t *w,
                         const float *bias, int M, int N, int K, int accumulate) {
    mr_cuda_ctx *c = mr_cuda_ctx_of(b);
    if (M < 1 || N < 1 || K < 1) {
        mr_cuda_fail(c, __FILE__, __LINE__, "matmul_bf16: bad shape M=%d N=%d K=%d", M, N, K);
        return;
    }
    size_t need = mr_cuda_matmul_bf16_scratch(M, K);
    if (need > c->scratch_bytes) {
        /* No allocation here: the decode loop calls this. */
        mr_cuda_fail(c, __FILE__, __LINE__,
                     "matmul_bf16: M=%d K=%d needs %zu bytes of scratch, the backend has %zu "
                     "(call mr_backend_cuda_reserve at start-up)",
                     M, K, need, c->scratch_bytes);
        return;
    }
    uint16_t *xb = (uint16_t *)c->scratch;
    mr_cuda_f32_to_bf16(c, xb, x, (size_t)M * (size_t)K);
    float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    if (bias) {
        mr_cuda_bias_rows(c, y, bias, M, N, accumulate);
        beta = 1.0f;
    }
    CUBLAS_CHECK(c, cublasGemmEx(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, w,
                                 CUDA_R_16BF, K, xb, CUDA_R_16BF, K, &beta, y, CUDA_R_32F, N,
                                 CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void mr_cuda_convert_bf16(mr_backend *b, uint16_t *dst, const float *src, size_t n) {
    mr_cuda_f32_to_bf16(mr_cuda_ctx_of(b), dst, src, n);
}

/* Host float32 -> device bf16 through the scratch, a piece at a time; the
 * stream orders each piece's copy after the previous piece's conversion. */
void mr_cuda_upload_bf16(mr_backend *b, uint16_t *dst, const float *src, size_t n) {
    mr_cuda_ctx *c = mr_cuda_ctx_of(b);
    size_t piece = c->scratch_bytes / sizeof(float);
    if (n && piece == 0) {
        mr_cuda_fail(c, __FILE__, __LINE__, "upload_bf16: no scratch buffer");
        return;
    }
    for (size_t off = 0; off < n; off += piece) {
        size_t len = n - off < piece ? n - off : piece;
        CUDA_CHECK(c, cudaMemcpyAsync(c->scratch, src + off, len * sizeof(float),
                                      cudaMemcpyHostToDevice, c->stream));
        mr_cuda_f32_to_bf16(c, dst + off, (const float *)c->scratch, len);
    }
}

static int cuda_reserve_bf16(mr_backend *b, int M, int K) {
    return mr_backend_cuda_reserve(b, mr_cuda_matmul_bf16_scratch(M, K));
}

/* ---- the table ---------------------------------------------------------- */

static const mr_backend_ops mr_cuda_ops = {
    /* .name = */ "cuda",
    /* .alloc = */ cuda_alloc,
    /* .free = */ cuda_free,
    /* .upload = */ cuda_upload,
    /* .download = */ cuda_download,
    /* .sync = */ cuda_sync,
    /* .matmul = */ cuda_matmul,
    /* .rmsnorm = */ mr_cuda_rmsnorm,
    /* .add = */ mr_cuda_add,
    /* .add_rmsnorm = */ mr_cuda_add_rmsnorm,
    /* .gather_rows = */ mr_cuda_gather_rows,
    /* .scatter_add_rows = */ mr_cuda_scatter_add_rows,
    /* .rope = */ mr_cuda_rope,
    /* .attention = */ mr_cuda_attention,
    /* .silu_mul = */ mr_cuda_silu_mul,
    /* .sigmoid_gate_add = */ mr_cuda_sigmoid_gate_add,
    /* .route = */ mr_cuda_route,
    /* .scale = */ mr_cuda_scale,
    /* .zero = */ mr_cuda_zero,
    /* .copy_rows = */ mr_cuda_copy_rows,
    /* .cache_write = */ mr_cuda_cache_write,
    /* .matmul_bf16 = */ mr_cuda_matmul_bf16,
    /* .upload_bf16 = */ mr_cuda_upload_bf16,
    /* .reserve_bf16 = */ cuda_reserve_bf16,
    /* .matmul_fixed = */ mr_cuda_matmul_fixed,
    /* .host_memory = */ 0,
};

/* ---- devices, init, free ------------------------------------------------ */

int mr_cuda_device_count(const char **why) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        if (why) *why = cudaGetErrorString(e);
        (void)cudaGetLastError(); /* not sticky: clear it */
        return 0;
    }
    if (why) *why = n ? NULL : "no CUDA device";
    return n;
}

int mr_cuda_device_describe(int device, char *buf, size_t cap) {
    cudaDeviceProp p;
    cudaError_t e = cudaGetDeviceProperties(&p, device);
    if (e != cudaSuccess) {
        snprintf(buf, cap, "device %d: %s", device, cudaGetErrorString(e));
        return -1;
    }
    snprintf(buf, cap, "%s, sm_%d%d, %d SMs, %.1f GiB", p.name, p.major, p.minor,
             p.multiProcessorCount, (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    return 0;
}

static void ctx_release(mr_cuda_ctx *c) {
    /* Teardown: errors here are reported but nothing can be done about them. */
    if (c->cublas) cublasDestroy(c->cublas);
    if (c->workspace) cudaFree(c->workspace);
    if (c->scratch) cudaFree(c->scratch);
    if (c->stream) cudaStreamDestroy(c->stream);
    c->cublas = NULL;
    c->workspace = c->scratch = NULL;
    c->stream = NULL;
}

int mr_backend_cuda_init(mr_backend *b, int device) {
    int st = 0;
    b->ops = NULL;
    b->ctx = NULL;
    b->threads = 1;
    init_msg[0] = 0;
    mr_cuda_ctx *c = (mr_cuda_ctx *)calloc(1, sizeof *c);
    if (!c) {
        snprintf(init_msg, sizeof init_msg, "cuda init: out of host memory");
        return -1;
    }
    c->device = device;
    CUDA_CHECK_GOTO(c, cudaSetDevice(device), st, fail);
    CUDA_CHECK_GOTO(c, cudaDeviceGetAttribute(&c->sm_count, cudaDevAttrMultiProcessorCount, device),
                    st, fail);
    CUDA_CHECK_GOTO(c, cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), st, fail);
    CUBLAS_CHECK_GOTO(c, cublasCreate(&c->cublas), st, fail);
    CUBLAS_CHECK_GOTO(c, cublasSetStream(c->cublas, c->stream), st, fail);
    /* fp32 products in fp32 (no TF32), and no reduced-precision sums in the
     * bf16 products either. */
    CUBLAS_CHECK_GOTO(c, cublasSetMathMode(c->cublas, (cublasMath_t)(CUBLAS_DEFAULT_MATH |
                                           CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)),
                      st, fail);
    CUDA_CHECK_GOTO(c, cudaMalloc(&c->workspace, MR_CUDA_WORKSPACE_BYTES), st, fail);
    c->workspace_bytes = MR_CUDA_WORKSPACE_BYTES;
    CUBLAS_CHECK_GOTO(c, cublasSetWorkspace(c->cublas, c->workspace, c->workspace_bytes), st, fail);
    CUDA_CHECK_GOTO(c, cudaMalloc(&c->scratch, MR_CUDA_SCRATCH_BYTES), st, fail);
    c->scratch_bytes = MR_CUDA_SCRATCH_BYTES;
    b->ops = &mr_cuda_ops;
    b->ctx = c;
    return 0;
fail:
    snprintf(init_msg, sizeof init_msg, "cuda init (device %d): %.440s", device, c->msg);
    ctx_release(c);
    free(c);
    return st;
}

void mr_backend_cuda_free(mr_backend *b) {
    mr_cuda_ctx *c = mr_cuda_ctx_of(b);
    if (c) {
        cudaStreamSynchronize(c->stream);
        ctx_release(c);
        free(c);
    }
    b->ops = NULL;
    b->ctx = NULL;
    b->threads = 0;
}
