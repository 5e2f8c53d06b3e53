/* The device side of the CUDA emulator (tests/gpu/emu/README.md): what a
 * .cu file of kernels/cuda sees in place of nvcc's built-ins when it is
 * compiled as C++ by the host compiler.  Included by the stand-in
 * cuda_runtime.h; rewrite.cmake has already turned every
 *   kernel<<<grid, block, shmem, stream>>>(args)
 * into mr_emu_launch(kernel, grid, block, shmem, stream)(args), and every
 * `extern __shared__ T name[];` into a pointer to the block's dynamic
 * shared memory.
 *
 * A launch runs its blocks one after another on the calling thread; the
 * threads of a block are fibers, so __syncthreads, __syncwarp and the warp
 * shuffles are real barriers with CUDA's meaning (a thread that returned
 * counts as arrived).  Kernels that never reach a barrier are learned on
 * their first launch and later run as plain calls, thread after thread. */
#ifndef MR_EMU_H
#define MR_EMU_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <tuple>
#include <type_traits>
#include <utility>

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};
/* vector types, aligned as CUDA's (a float4 load is one 16-byte access) */
struct __attribute__((aligned(8))) float2 {
    float x, y;
};
struct __attribute__((aligned(16))) float4 {
    float x, y, z, w;
};
static inline float2 make_float2(float x, float y) { return float2{x, y}; }
static inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;
static const int warpSize = 32;

#define __global__
#define __device__
#define __host__
#define __forceinline__ __attribute__((always_inline)) inline
#define __launch_bounds__(...)
#define __shared__ static /* blocks run one at a time: one copy serves each */

/* ---- barriers and shuffles (emu-runtime.cc) ------------------------------ */

void __syncthreads(void);
void __syncwarp(unsigned mask = 0xffffffffu);
/* Every lane of `mask` posts 8 bytes and reads lane src's (-1: lane ^ xmask). */
uint64_t mr_emu_shfl(unsigned mask, uint64_t v, int src, int xmask, int width);
void *mr_emu_dyn_shared(void);

template <typename T> static inline T mr_emu_shfl_t(unsigned mask, T v, int src, int xmask, int width) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a scalar");
    uint64_t u = 0;
    memcpy(&u, &v, sizeof v);
    u = mr_emu_shfl(mask, u, src, xmask, width);
    T r;
    memcpy(&r, &u, sizeof r);
    return r;
}
template <typename T> static inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    return mr_emu_shfl_t(mask, v, src, -1, width);
}
template <typename T> static inline T __shfl_xor_sync(unsigned mask, T v, int xmask, int width = 32) {
    return mr_emu_shfl_t(mask, v, -1, xmask, width);
}

/* ---- arithmetic intrinsics: IEEE single operations, rounded one by one
 * (the emulator is built with -ffp-contract=off) -------------------------- */

static inline uint32_t __float_as_uint(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float __uint_as_float(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline int __float2int_rn(float f) { return (int)nearbyintf(f); } /* default mode: to even */
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
static inline int min(int a, int b) { return a < b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }

/* ---- launches ----------------------------------------------------------- */

struct CUstream_st;
typedef struct CUstream_st *cudaStream_t;

/* Runs body(arg) for every thread of every block (emu-runtime.cc).  key
 * names the kernel for the learned no-barrier mode; ptrs are its pointer
 * arguments (in order), checked to be device memory (or NULL) and opened
 * for the launch. */
void mr_emu_run(const char *name, const void *key, dim3 grid, dim3 block, size_t shmem,
                cudaStream_t stream, void (*body)(void *), void *arg, const void *const *ptrs,
                const bool *readonly, int nptrs);

/* A pointer argument, and whether the kernel may only read through it
 * (pointer to const: the stream-order check counts it a read). */
template <typename T> static inline void mr_emu_ptr(const void **out, bool *ro, int *n, const T &v) {
    if constexpr (std::is_pointer<T>::value) {
        ro[*n] = std::is_const<typename std::remove_pointer<T>::type>::value;
        out[(*n)++] = (const void *)v;
    }
}

template <typename... P> struct mr_emu_launcher {
    void (*fn)(P...);
    const char *name;
    dim3 grid, block;
    size_t shmem;
    cudaStream_t stream;

    template <typename... A> void operator()(A &&...a) const {
        static_assert(sizeof...(A) == sizeof...(P), "kernel called with the wrong number of arguments");
        /* As CUDA does: the arguments are converted to the parameters' types
         * and copied before the launch. */
        struct call {
            void (*fn)(P...);
            std::tuple<P...> args;
        } c{fn, std::tuple<P...>(static_cast<P>(std::forward<A>(a))...)};
        const void *ptrs[sizeof...(P) + 1];
        bool ro[sizeof...(P) + 1];
        int n = 0;
        std::apply([&](const P &...v) { (mr_emu_ptr(ptrs, ro, &n, v), ...); }, c.args);
        mr_emu_run(name, (const void *)fn, grid, block, shmem, stream,
                   [](void *p) {
                       call *cc = (call *)p;
                       std::apply(cc->fn, cc->args);
                   },
                   &c, ptrs, ro, n);
    }
};

template <typename... P>
static inline mr_emu_launcher<P...> mr_emu_launch_(void (*fn)(P...), const char *name, dim3 grid, dim3 block,
                                                   size_t shmem = 0, cudaStream_t stream = 0) {
    return mr_emu_launcher<P...>{fn, name, grid, block, shmem, stream};
}
#define mr_emu_launch(kernel, ...) mr_emu_launch_(kernel, #kernel, __VA_ARGS__)

#endif
