/* Row-wise and element-wise kernels of the CUDA backend: rmsnorm, add,
 * scale, gather/scatter of rows, silu_mul, sigmoid_gate_add, the bias rows
 * of a matmul and the float32 -> bf16 conversion.
 *
 * Element-wise kernels are grid-stride loops over size_t indices.  rmsnorm
 * is one block per row (the sum of squares in fp32, as on the CPU).
 *
 * scatter_add_rows: ids may repeat, so two rows can add into one
 * destination.  Rather than atomics (whose order, and so whose rounding,
 * changes from run to run) each thread owns one column and walks the rows
 * in order, exactly as the CPU does; the multiply and the add are rounded
 * separately (__fmul_rn, __fadd_rn), as the CPU computes them without
 * contraction, so the result is deterministic and equal to the CPU's bit for
 * bit.  To hide memory latency a thread loads a group of rows at once when
 * their ids are all different (the order of additions into each destination
 * is unchanged); a group with a repeated id goes one row at a time.  The
 * parallelism is `dim` threads, enough for the hidden sizes of the models
 * (>= 2048), not for tiny dim. */
#include "kernels/cuda/cuda-internal.h"

#define SCATTER_GROUP 8   /* rows loaded together by one scatter thread */
#define SCATTER_THREADS 64 /* small blocks: dim / 64 blocks spread over the SMs */

/* ---- rmsnorm ------------------------------------------------------------ */

/* Sum over the block (blockDim.x a multiple of 32, at most 1024); every
 * thread gets it.  red holds 32 floats. */
static __device__ float block_sum(float v, float *red) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = mr_cuda_warp_sum(v);
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float t = lane < nw ? red[lane] : 0.0f;
    t = mr_cuda_warp_sum(t);
    return t;
}

/* y(rows,dim) = x / sqrt(mean(x^2) + eps) * w(dim); one block per row.
 * Each thread reads its own x values again after the sum, so y may be x. */
static __global__ void rmsnorm_kernel(float *y, const float *x, const float *w, int dim,
                                      float eps) {
    __shared__ float red[32];
    const float *xr = x + (size_t)blockIdx.x * dim;
    float *yr = y + (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
    ss = block_sum(ss, red);
    float inv = 1.0f / sqrtf(ss / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = xr[i] * inv * w[i];
}

/* x += a, then h = rmsnorm(x) * w; one block per row.  Each thread adds,
 * stores and squares its own values in the order rmsnorm_kernel reads them,
 * and the block sum is the same: add_kernel then rmsnorm_kernel's bits. */
static __global__ void add_rmsnorm_kernel(float *x, float *h, const float *a, const float *w, int dim,
                                          float eps) {
    __shared__ float red[32];
    float *xr = x + (size_t)blockIdx.x * dim;
    const float *ar = a + (size_t)blockIdx.x * dim;
    float *hr = h + (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = xr[i] + ar[i];
        xr[i] = v;
        ss += v * v;
    }
    ss = block_sum(ss, red);
    float inv = 1.0f / sqrtf(ss / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) hr[i] = xr[i] * inv * w[i];
}

/* About 4 values per thread, whole warps, 32..1024 threads. */
static int norm_threads(int dim) {
    int threads = ((dim + 3) / 4 + 31) / 32 * 32;
    return threads < 32 ? 32 : threads > 1024 ? 1024 : threads;
}

void mr_cuda_rmsnorm(mr_backend *b, float *y, const float *x, const float *w, int rows,
                     int dim, float eps) {
    mr_cuda_ctx *c = mr_cuda_ctx_of(b);
    if (rows <= 0 || dim <= 0) return;
    rmsnorm_kernel<<<(unsigned)rows, norm_threads(dim), 0, c->stream>>>(y, x, w, dim, eps);
    CUDA_CHECK(c, cudaGetLastError());
}

void mr_cuda_add_rmsnorm(mr_backend *b, float *x, float *h, const float *a, const float *w, int rows, int dim,
                         float eps) {
    mr_cuda_ctx *c = mr_cuda_ctx_of(b);
    if (rows <= 0 || dim <= 0) return;
    add_rmsnorm_kernel<<<(unsigned)rows, norm_threads(dim), 0, c->stream>>>(x, h, a, w, dim, eps);
    CUDA_CHECK(c, cudaGetLastError());
}

/* ---- element-wise ------------------------------------------------------- */

static __global__ void add_kernel(float *y, const float *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] += x[i];
}

void mr_cuda_add_on(mr_backend *b, void *stream, float *y, const float *x, size_t n) {
    mr_cuda_ctx *c = mr_cuda_ctx_of(b);
    cudaStream_t s = stream ? (cudaStream_t)stream : c->stream;
    if (!n) return;
    add_kernel<<<mr_cuda_grid(c, n, MR_CUDA_THREADS), MR_CUDA_THREADS, 0, s>>>(y, x, n);
    CUDA_CHECK(c, cudaGetLastError());
}

void mr_cuda_add(mr_backend *b, float *y, const float *x, size_t n) { mr_cuda_add_on(b, NULL, y, x, n); }

static __global__ void scale_kernel(float *y, float s, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] *= s;
}

void mr_cuda_scale(mr_backend *b, float *y, float s, size_t n) {
    mr_cuda_ctx *c = mr_cuda_ctx_of(b);
    if (!n) return;
    scale_kernel<<<mr_cuda_grid(c, n, MR_CUDA_THREADS), MR_CUDA_THREADS, 0, c->stream>>>(y, s, n);
    CUDA_CHECK(c, cudaGetLastError());
}

/* out(T,ni) = silu(gu[:, :ni]) * gu[:, ni:2ni], silu(g) = g / (1 + exp(-g)). */
static __global__ void silu_mul_kernel(float *out, const float *gu, int ni, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i / (size_t)ni, j = i % (size_t)ni;
        const float *g = gu + t * 2 * (size_t)ni;
        float gv = g[j];
        out[i] = gv / (1.0f + expf(-gv)) * g[ni + j];
    }
}

void mr_cuda_silu_mul(mr_backend *b, float *out, const float *gu, int T, int inter) {
    mr_cuda_ctx *c = mr_cuda_ctx_of(b);
    size_t n = (size_t)(T > 0 ? T : 0) * (size_t)(inter > 0 ? inter : 0);
    if (!n) return;
    silu_mul_kernel<<<mr_cuda_grid(c, n, MR_CUDA_THREADS), MR_CUDA_THREADS, 0, c->stream>>>(
        out, gu, inter, n);
    CUDA_CHECK(c, cudaGetLastError());
}

/* y(T,dim) += sigmoid(g[t]) * x(T,dim) */
static __global__ void sigmoid_gate_add_kernel(float *y, const float *x, const float *g, int dim,
                                               size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float s = 1.0f / (1.0f + expf(-g[i / (size_t)dim]));
        y[i] += s * x[i];
    }
}

void mr_cuda_sigmoid_gate_add(mr_backend *b, float *y, const float *x, const float *g, int T,
                              int dim) {
    mr_cuda_ctx *c = mr_cuda_ctx_of(b);
    size_t n = (size_t)(T > 0 ? T : 0) * (size_t)(dim > 0 ? dim : 0);
    if (!n) return;
    sigmoid_gate_add_kernel<<<mr_cuda_grid(c, n, MR_CUDA_THREADS), MR_CUDA_THREADS, 0,
                              c->stream>>>(y, x, g, dim, n);
    CUDA_CHECK(c, cudaGetLastError());
}

/* y(M,N) = (accumulate ? y : 0) + bias(N) per row. */
static __global__ void bias_rows_kernel(float *y, const float *bias, int N, size_t n,
                                        int accumulate) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float bv = bias[i % (size_t)N];
        y[i] = accumulate ? y[i] + bv : bv;
    }
}

void mr_cuda_bias_rows(mr_cuda_ctx *c, float *y, const float *bias, int M, int N,
                       int accumulate) {
    size_t n = (size_t)M * (size_t)N;
    bias_rows_kernel<<<mr_cuda_grid(c, n, MR_CUDA_THREADS), MR_CUDA_THREADS, 0, c->stream>>>(
        y, bias, N, n, accumulate);
    CUDA_CHECK(c, cudaGetLastError());
}

static __global__ void f32_to_bf16_kernel(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = mr_cuda_bf16_bits(src[i]);
}

void mr_cuda_f32_to_bf16(mr_cuda_ctx *c, uint16_t *dst, const float *src, size_t n) {
    if (!n) return;
    f32_to_bf16_kernel<<<mr_cuda_grid(c, n, MR_CUDA_THREADS), MR_CUDA_THREADS, 0, c->stream>>>(
        dst, src, n);
    CUDA_CHECK(c, cudaGetLastError());
}

/* ---- rows --------------------------------------------------------------- */

/* out(rows, dim) = table[ids[r]]: one block per row. */
static __global__ void gather_rows_kernel(float *out, const float *table, const int32_t *ids,
                                          int dim) {
    const float *src = table + (size_t)ids[blockIdx.x] * dim;
    float *dst = out + (size_t)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = src[i];
}

void mr_cuda_gather_rows(mr_backend *b, float *out, const float *table, const int32_t *ids,
                         int rows, int dim) {
    mr_cuda_ctx *c = mr_cuda_ctx_of(b);
    if (rows <= 0 || dim <= 0) return;
    int threads = (dim + 31) / 32 * 32;
    threads = threads > MR_CUDA_THREADS ? MR_CUDA_THREADS : threads;
    gather_rows_kernel<<<(unsigned)rows, threads, 0, c->stream>>>(out, table, ids, dim);
    CUDA_CHECK(c, cudaGetLastError());
}

/* y(n) = 0 */
void mr_cuda_zero(mr_backend *b, float *y, size_t n) {
    mr_cuda_ctx *c = mr_cuda_ctx_of(b);
    if (n) CUDA_CHECK(c, cudaMemsetAsync(y, 0, n * sizeof(float), c->stream));
}

/* rows x cols floats between strided rows: one cudaMemcpy2DAsync. */
void mr_cuda_copy_rows(mr_backend *b, float *dst, size_t dst_ld, const float *src, size_t src_ld,
                       int rows, int cols) {
    mr_cuda_ctx *c = mr_cuda_ctx_of(b);
    if (rows <= 0 || cols <= 0) return;
    CUDA_CHECK(c, cudaMemcpy2DAsync(dst, dst_ld * sizeof(float), src, src_ld * sizeof(float),
                                    (size_t)cols * sizeof(float), (size_t)rows,
                                    cudaMemcpyDeviceToDevice, c->stream));
}

/* KV-cache store: block (t, h) copies `width` floats (backend.h). */
static __global__ void cache_write_kernel(float *cache, size_t row, int ctx, size_t col,
                                          size_t dst_hs, const float *src, size_t src_ld,
                                          size_t src_hs, const int32_t *slot, const int32_t *pos,
                                          int width) {
    int t = blockIdx.x, h = blockIdx.y;
    float *d = cache + ((size_t)slot[t] * (size_t)ctx + (size_t)pos[t]) * row + col + (size_t)h * dst_hs;
    const float *s = src + (size_t)t * src_ld + (size_t)h * src_hs;
    for (int i = threadIdx.x; i < width; i += blockDim.x) d[i] = s[i];
}

void mr_cuda_cache_write(mr_backend *b, float *cache, size_t row, int ctx, size_t col, size_t dst_hs,
                         const float *src, size_t src_ld, size_t src_hs, const int32_t *slot,
                         const int32_t *pos, int ntok, int nheads, int width) {
    mr_cuda_ctx *c = mr_cuda_ctx_of(b);
    if (ntok <= 0 || nheads <= 0 || width <= 0) return;
    if (nheads > 65535) {
        mr_cuda_fail(c, __FILE__, __LINE__, "cache_write: %d heads (at most 65535)", nheads);
        return;
    }
    int threads = (width + 31) / 32 * 32;
    threads = threads > MR_CUDA_THREADS ? MR_CUDA_THREADS : threads;
    dim3 grid((unsigned)ntok, (unsigned)nheads);
    cache_write_kernel<<<grid, threads, 0, c->stream>>>(cache, row, ctx, col, dst_hs, src, src_ld,
                                                        src_hs, slot, pos, width);
    CUDA_CHECK(c, cudaGetLastError());
}

/* dst[ids[r]] += weight[r] * src[r] (weight NULL = 1): thread i owns
 * column i of every row, in row order (see the top of the file). */
static __global__ void scatter_add_rows_kernel(float *dst, const float *src, const int32_t *ids,
                                               const float *weight, int rows, int dim) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= dim) return;
    int r = 0;
    for (; r + SCATTER_GROUP <= rows; r += SCATTER_GROUP) {
        int32_t id[SCATTER_GROUP];
        float s[SCATTER_GROUP], wr[SCATTER_GROUP];
        int distinct = 1;
#pragma unroll
        for (int j = 0; j < SCATTER_GROUP; j++) {
            id[j] = ids[r + j];
            wr[j] = weight ? weight[r + j] : 1.0f;
            s[j] = src[(size_t)(r + j) * dim + i];
        }
#pragma unroll
        for (int j = 1; j < SCATTER_GROUP; j++)
#pragma unroll
            for (int o = 0; o < j; o++) distinct &= id[j] != id[o];
        if (distinct) {
            float d[SCATTER_GROUP];
#pragma unroll
            for (int j = 0; j < SCATTER_GROUP; j++) d[j] = dst[(size_t)id[j] * dim + i];
#pragma unroll
            for (int j = 0; j < SCATTER_GROUP; j++)
                dst[(size_t)id[j] * dim + i] = __fadd_rn(d[j], __fmul_rn(wr[j], s[j]));
        } else {
#pragma unroll
            for (int j = 0; j < SCATTER_GROUP; j++) {
                float *p = dst + (size_t)id[j] * dim + i;
                *p = __fadd_rn(*p, __fmul_rn(wr[j], s[j]));
            }
        }
    }
    for (; r < rows; r++) {
        float *p = dst + (size_t)ids[r] * dim + i;
        *p = __fadd_rn(*p, __fmul_rn(weight ? weight[r] : 1.0f, src[(size_t)r * dim + i]));
    }
}

void mr_cuda_scatter_add_rows(mr_backend *b, float *dst, const float *src, const int32_t *ids,
                              const float *weight, int rows, int dim) {
    mr_cuda_ctx *c = mr_cuda_ctx_of(b);
    if (rows <= 0 || dim <= 0) return;
    unsigned blocks = (unsigned)((dim + SCATTER_THREADS - 1) / SCATTER_THREADS);
    scatter_add_rows_kernel<<<blocks, SCATTER_THREADS, 0, c->stream>>>(dst, src, ids, weight,
                                                                        rows, dim);
    CUDA_CHECK(c, cudaGetLastError());
}
