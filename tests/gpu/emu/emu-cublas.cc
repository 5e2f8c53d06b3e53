/* The cuBLAS calls of kernels/cuda on the CPU, for the CUDA emulator
 * (README.md): cuBLAS's argument checks, column-major meaning and beta = 0
 * rule, computed by plain loops with sums in double. */
#include "emu-internal.h"

#include <stdio.h>
#include <string.h>

#include <set>
#include <vector>

using namespace mr_emu;

/* ---- cuBLAS ------------------------------------------------------------- */

struct cublasContext {
    int device; /* current at cublasCreate: the handle works there only */
    cudaStream_t stream;
    int math;
    void *workspace;
    size_t workspace_bytes;
};
static std::set<cublasHandle_t> g_handles;

cublasStatus_t cublasCreate(cublasHandle_t *h) {
    LOCK;
    *h = new cublasContext{current_device(), 0, 0, NULL, 0};
    g_handles.insert(*h);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t h) {
    LOCK;
    if (!g_handles.erase(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) {
    LOCK;
    if (!g_handles.count(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!stream_ok(s)) return CUBLAS_STATUS_INVALID_VALUE;
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode) {
    LOCK;
    if (!g_handles.count(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->math = (int)mode;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void *workspace, size_t bytes) {
    LOCK;
    if (!g_handles.count(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
    char why[300];
    if (bytes && !range(workspace, bytes, why, sizeof why)) {
        warn("cublasSetWorkspace: %s", why);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    h->workspace = workspace;
    h->workspace_bytes = bytes;
    return CUBLAS_STATUS_SUCCESS;
}

const char *cublasGetStatusString(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

static float load(const void *p, cudaDataType t, size_t i) {
    if (t == CUDA_R_32F) return ((const float *)p)[i];
    uint32_t u = (uint32_t)((const uint16_t *)p)[i] << 16; /* CUDA_R_16BF */
    return __uint_as_float(u);
}

/* v to bf16 bits, to nearest even (as cuBLAS writes a bf16 C; NaN quiet). */
static void store(void *p, cudaDataType t, size_t i, float v) {
    if (t == CUDA_R_32F) {
        ((float *)p)[i] = v;
        return;
    }
    uint32_t u = __float_as_uint(v);
    ((uint16_t *)p)[i] =
        (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40u : (u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* C(m,n) = alpha op(A) op(B) + beta C, column-major, as cublasGemmEx; the
 * sums in double, C not read when beta is 0. */
static cublasStatus_t gemm(const char *what, cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                           int n, int k, float alpha, const void *A, cudaDataType at, int lda, const void *Bm,
                           cudaDataType bt, int ldb, float beta, void *C, cudaDataType ct, int ldc) {
    if (!g_handles.count(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (ta > CUBLAS_OP_C || tb > CUBLAS_OP_C || m < 0 || n < 0 || k < 0) return CUBLAS_STATUS_INVALID_VALUE;
    int ar = ta == CUBLAS_OP_N ? m : k, ac = ta == CUBLAS_OP_N ? k : m;
    int br = tb == CUBLAS_OP_N ? k : n, bc = tb == CUBLAS_OP_N ? n : k;
    if (lda < (ar > 1 ? ar : 1) || ldb < (br > 1 ? br : 1) || ldc < (m > 1 ? m : 1)) {
        warn("%s: leading dimensions lda %d (rows %d), ldb %d (rows %d), ldc %d (rows %d)", what, lda, ar, ldb,
             br, ldc, m);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (current_device() != h->device || stream_device(h->stream) != h->device)
        fatal("%s: a handle of device %d used with device %d current and a stream of device %d", what, h->device,
              current_device(), stream_device(h->stream));
    if (!m || !n) return CUBLAS_STATUS_SUCCESS;
    size_t as = at == CUDA_R_32F ? 4 : 2, bs = bt == CUDA_R_32F ? 4 : 2, cs = ct == CUDA_R_32F ? 4 : 2;
    std::vector<Alloc *> opened;
    char why[300];
    struct {
        const void *p;
        size_t bytes;
        const char *name;
    } parts[3] = {{A, k ? ((size_t)lda * (ac - 1) + ar) * as : 0, "A"},
                  {Bm, k ? ((size_t)ldb * (bc - 1) + br) * bs : 0, "B"},
                  {C, ((size_t)ldc * (n - 1) + m) * cs, "C"}};
    for (auto &pt : parts) {
        if (!pt.bytes) continue;
        Alloc *a = range(pt.p, pt.bytes, why, sizeof why);
        if (!a) {
            warn("%s: matrix %s %s", what, pt.name, why);
            for (Alloc *o : opened) close_alloc(*o);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
        if (a->device != h->device)
            fatal("%s: matrix %s is memory of device %d, the handle's device is %d", what, pt.name, a->device,
                  h->device);
        open_alloc(*a);
        opened.push_back(a);
    }
    g_stats.gemms++;
    order_issue(h->stream);
    for (int i = 0, o = 0; i < 3; i++) /* opened[] holds the parts with bytes, in order; C is written */
        if (parts[i].bytes) order_access(*opened[o++], parts[i].p, parts[i].bytes, h->stream, i == 2, what);
    std::vector<float> col(m);
    for (int j = 0; j < n; j++) {
        for (int i = 0; i < m; i++) {
            double s = 0;
            for (int l = 0; l < k; l++) {
                size_t ai = ta == CUBLAS_OP_N ? (size_t)l * lda + i : (size_t)i * lda + l;
                size_t bi = tb == CUBLAS_OP_N ? (size_t)j * ldb + l : (size_t)l * ldb + j;
                s += (double)load(A, at, ai) * (double)load(Bm, bt, bi);
            }
            size_t ci = (size_t)j * ldc + i;
            col[i] = beta == 0.0f ? (float)(alpha * s) : (float)(alpha * s + (double)beta * load(C, ct, ci));
        }
        for (int i = 0; i < m; i++) store(C, ct, (size_t)j * ldc + i, col[i]);
    }
    for (Alloc *o : opened) close_alloc(*o);
    return CUBLAS_STATUS_SUCCESS;
}

static bool host_scalar(const void *p) { return p && !in_arena(p); }

cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float *alpha, const float *A, int lda, const float *Bm, int ldb, const float *beta,
                           float *C, int ldc) {
    LOCK;
    if (!host_scalar(alpha) || !host_scalar(beta)) return CUBLAS_STATUS_INVALID_VALUE;
    return gemm("cublasSgemm", h, ta, tb, m, n, k, *alpha, A, CUDA_R_32F, lda, Bm, CUDA_R_32F, ldb, *beta, C,
                CUDA_R_32F, ldc);
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *A, cudaDataType at, int lda, const void *Bm,
                            cudaDataType bt, int ldb, const void *beta, void *C, cudaDataType ct, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t algo) {
    LOCK;
    (void)algo;
    /* fp32 x fp32 -> fp32, and bf16 x bf16 -> fp32 or bf16, accumulated in fp32 */
    bool ok = (compute == CUBLAS_COMPUTE_32F || compute == CUBLAS_COMPUTE_32F_PEDANTIC) &&
              ((at == CUDA_R_32F && bt == CUDA_R_32F && ct == CUDA_R_32F) ||
               (at == CUDA_R_16BF && bt == CUDA_R_16BF && (ct == CUDA_R_32F || ct == CUDA_R_16BF)));
    if (!ok) {
        warn("cublasGemmEx: types A %d B %d C %d compute %d not emulated", at, bt, ct, compute);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    if (!host_scalar(alpha) || !host_scalar(beta)) return CUBLAS_STATUS_INVALID_VALUE;
    return gemm("cublasGemmEx", h, ta, tb, m, n, k, *(const float *)alpha, A, at, lda, Bm, bt, ldb,
                *(const float *)beta, C, ct, ldc);
}
