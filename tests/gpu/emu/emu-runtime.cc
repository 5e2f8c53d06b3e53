/* The CUDA emulator's runtime (tests/gpu/emu/README.md): device memory,
 * launches, barriers, the runtime API and the two cuBLAS products that
 * kernels/cuda uses, all on the CPU.  Its purpose is to run the CUDA
 * backend's own code (launch arithmetic, indexing, barriers, shuffles,
 * cuBLAS calling conventions, host/device copies) where there is no GPU,
 * and to stop at the first misuse with a message that says where:
 *
 *   - device memory is its own region of the address space, each
 *     allocation against a guard page and PROT_NONE whenever no kernel or
 *     copy is using it: the host touching device memory, a kernel reading
 *     past its buffer, or any use after cudaFree is a SIGSEGV that the
 *     handler here explains (allocation, offset, kernel, block, thread);
 *   - new allocations (their first 32 MiB) and each block's dynamic shared
 *     memory are filled with 0xff bytes (NaN floats, -1 ints), as real
 *     memory is not zero;
 *   - a kernel's pointer arguments must be device memory (or NULL), a
 *     copy's ranges must lie inside their allocations and match its kind,
 *     cuBLAS's arguments are checked as cuBLAS checks them;
 *   - launch limits (1024 threads, 48 KiB of dynamic shared memory, grid
 *     sizes) fail the launch as CUDA does (cudaGetLastError);
 *   - threads of a block are fibers (own stacks, a register switch): __syncthreads and the warp barriers
 *     wait for the others, a deadlock is reported, MR_EMU_ORDER=reverse
 *     runs blocks and threads in the other order (a race that depends on
 *     it changes the result).
 *
 *   - streams run work when it is issued, but their order is checked: an
 *     operation touching device memory that another stream touched (one
 *     of them writing) without an event wait or a host synchronisation
 *     between them is fatal ("stream order", below; kernels' pointer
 *     arguments count from where they point, one byte: their extent is
 *     unknown, so a conflict inside a kernel's buffer is only seen against
 *     a copy, a GEMM or NCCL, whose ranges are known).
 *
 * It says nothing about speed, the GPU's memory model, warp scheduling or
 * real cuBLAS.  Environment: MR_EMU_SMS (SM count, default 2, so grid-stride
 * loops wrap), MR_EMU_ORDER, MR_EMU_FIBERS=always (no learned no-barrier
 * mode), MR_EMU_POISON_MIB, MR_EMU_STATS=1, MR_EMU_STREAM_CHECK=0 (no order
 * check). */
#include "emu-internal.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <map>
#include <mutex>
#include <set>
#include <unordered_map>
#include <vector>

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

namespace mr_emu {

const size_t PG = 4096;
std::recursive_mutex g_lock;
std::recursive_mutex &lock() { return g_lock; }
thread_local cudaError_t g_last = cudaSuccess; /* per host thread, as in CUDA */
thread_local int g_device = 0;           /* each thread starts on device 0 */

void vwarn(const char *fmt, va_list ap) {
    fprintf(stderr, "E cuda-emu: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
}

void warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vwarn(fmt, ap);
    va_end(ap);
}

void fatal(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vwarn(fmt, ap);
    va_end(ap);
    abort();
}

int env_int(const char *name, int dflt) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : dflt;
}

bool env_is(const char *name, const char *value) {
    const char *v = getenv(name);
    return v && !strcmp(v, value);
}

const Config &config() {
    static const Config c = {env_int("MR_EMU_DEVICES", 1), env_int("MR_EMU_SMS", 2),
                             (size_t)env_int("MR_EMU_POISON_MIB", 32) << 20, env_is("MR_EMU_FIBERS", "always"),
                             env_is("MR_EMU_ORDER", "reverse"), !env_is("MR_EMU_STREAM_CHECK", "0")};
    return c;
}

/* ---- device memory ------------------------------------------------------ */


char *g_arena;
size_t g_arena_bytes, g_cursor;
Stats g_stats;
void print_stats() {
    fprintf(stderr,
            "cuda-emu: %llu allocations (%.1f MiB), %llu frees, %llu launches (%llu blocks), %llu copies "
            "(%.1f MiB), %llu GEMMs\n",
            g_stats.allocs, g_stats.alloc_bytes / 1048576.0, g_stats.frees, g_stats.launches, g_stats.blocks,
            g_stats.copies, g_stats.copy_bytes / 1048576.0, g_stats.gemms);
}
std::map<uintptr_t, Alloc> g_allocs; /* by base */
int g_next_id;

void arena_init() {
    if (g_arena) return;
    for (size_t gib = 256; gib >= 4; gib /= 2) {
        size_t bytes = gib << 30;
        void *p = mmap(NULL, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p != MAP_FAILED) {
            g_arena = (char *)p;
            g_arena_bytes = bytes;
            g_cursor = PG; /* a guard page first */
            if (getenv("MR_EMU_STATS")) atexit(print_stats);
            return;
        }
    }
    fatal("cannot reserve address space for device memory: %s", strerror(errno));
}

/* The allocation whose pages or trailing guard hold p (live or freed). */
Alloc *find(const void *p) {
    uintptr_t u = (uintptr_t)p;
    auto it = g_allocs.upper_bound(u);
    if (it == g_allocs.begin()) return NULL;
    --it;
    Alloc &a = it->second;
    return u < (uintptr_t)a.base + (a.pages + 1) * PG ? &a : NULL;
}

bool in_arena(const void *p) {
    return g_arena && (const char *)p >= g_arena && (const char *)p < g_arena + g_arena_bytes;
}

void set_prot(Alloc &a, int prot) {
    if (mprotect(a.base, a.pages * PG, prot) != 0) fatal("mprotect: %s", strerror(errno));
}

void open_alloc(Alloc &a) {
    if (a.open++ == 0) set_prot(a, PROT_READ | PROT_WRITE);
}

void close_alloc(Alloc &a) {
    if (--a.open == 0) set_prot(a, PROT_NONE);
}

/* Where p is, in words, for messages. */
void describe(const void *p, char *buf, size_t cap) {
    Alloc *a = find(p);
    const char *c = (const char *)p;
    if (!a) {
        snprintf(buf, cap, "%p is %s", p, in_arena(p) ? "device address space outside any allocation"
                                                        : "not device memory (a host pointer?)");
    } else if (c < a->user) {
        snprintf(buf, cap, "%p is %zu bytes before allocation #%d (%zu bytes)%s", p, (size_t)(a->user - c),
                 a->id, a->bytes, a->live ? "" : ", freed");
    } else if (c >= a->user + a->bytes) {
        snprintf(buf, cap, "%p is at byte %zu of allocation #%d of %zu bytes: past its end%s", p,
                 (size_t)(c - a->user), a->id, a->bytes, a->live ? "" : " (and FREED)");
    } else {
        snprintf(buf, cap, "%p is byte %zu of %sallocation #%d (%zu bytes)", p, (size_t)(c - a->user),
                 a->live ? "" : "FREED ", a->id, a->bytes);
    }
}

/* The live allocation holding [p, p + bytes), or NULL (with why). */
Alloc *range(const void *p, size_t bytes, char *why, size_t cap) {
    Alloc *a = find(p);
    const char *c = (const char *)p;
    if (!a || !a->live || c < a->user || c + bytes > a->user + a->bytes) {
        char d[200];
        describe(p, d, sizeof d);
        if (a && a->live && c >= a->user && c < a->user + a->bytes)
            snprintf(why, cap, "[%p, +%zu bytes) runs %zu bytes past the end of allocation #%d of %zu bytes", p,
                     bytes, (size_t)(c + bytes - a->user - a->bytes), a->id, a->bytes);
        else
            snprintf(why, cap, "[%p, +%zu bytes): %s", p, bytes, d);
        return NULL;
    }
    return a;
}

/* ---- the crash handler -------------------------------------------------- */

const char *g_kernel;         /* running now, or NULL */
int g_fiber = -1;             /* its thread (linear index), -1 outside kernels */
std::vector<char *> g_stacks; /* fiber stacks, for stack overflows */
const size_t STACK = 256 * 1024;

void on_segv(int sig, siginfo_t *si, void *) {
    char d[240], msg[600];
    void *p = si->si_addr;
    describe(p, d, sizeof d);
    for (char *s : g_stacks)
        if ((char *)p >= s && (char *)p < s + PG) snprintf(d, sizeof d, "%p: a fiber's stack overflowed", p);
    if (g_kernel)
        snprintf(msg, sizeof msg,
                 "E cuda-emu: invalid access in kernel %s, block (%u,%u,%u) thread (%u,%u,%u): %s\n", g_kernel,
                 blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z, d);
    else if (in_arena(p))
        snprintf(msg, sizeof msg,
                 "E cuda-emu: the host touched device memory outside any kernel or copy: %s\n", d);
    else
        snprintf(msg, sizeof msg, "E cuda-emu: signal %d at %p (not device memory)\n", sig, p);
    ssize_t w = write(2, msg, strlen(msg));
    (void)w;
    signal(sig, SIG_DFL);
    raise(sig);
}

void install_handler() {
    static thread_local bool done;
    if (done) return;
    done = true;
    static thread_local char *alt;
    alt = (char *)malloc(64 * 1024);
    stack_t ss = {};
    ss.ss_sp = alt;
    ss.ss_size = 64 * 1024;
    sigaltstack(&ss, NULL);
    struct sigaction sa = {};
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
}

/* ---- blocks of fibers --------------------------------------------------- */

struct Warp {
    unsigned exist, live; /* lane masks */
    unsigned want;        /* mask of the barrier being gathered */
    int arrived;
    unsigned gen;
    uint64_t slot[32];
};

struct Block {
    int n, live, arrived;
    unsigned gen;
    Warp warp[32];
} B;

/* Switching between fibers.  On x86-64 a plain switch of the callee-saved
 * registers and the stack pointer (swapcontext also saves the signal mask:
 * two system calls per switch, most of the emulator's time); elsewhere
 * ucontext. */
#if defined(__x86_64__)
extern "C" void mr_emu_switch(void **save_sp, void *to_sp);
asm(".text\n.globl mr_emu_switch\n.type mr_emu_switch,@function\nmr_emu_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  movq %rsp, (%rdi)\n  movq %rsi, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n  ret\n"
    ".size mr_emu_switch,.-mr_emu_switch\n");
struct Ctx {
    void *sp;
};
/* A new context that starts in entry() on the stack [lo, lo + size). */
void ctx_make(Ctx *c, char *lo, size_t size, void (*entry)()) {
    uintptr_t top = ((uintptr_t)lo + size) & ~(uintptr_t)15;
    void **sp = (void **)top;
    *--sp = NULL;            /* entry's return address: it never returns */
    *--sp = (void *)entry;   /* taken by mr_emu_switch's ret */
    for (int i = 0; i < 6; i++) *--sp = NULL; /* rbp rbx r12-r15 */
    c->sp = sp;
}
void ctx_switch(Ctx *from, Ctx *to) { mr_emu_switch(&from->sp, to->sp); }
#else
struct Ctx {
    ucontext_t uc;
};
void ctx_make(Ctx *c, char *lo, size_t size, void (*entry)()) {
    getcontext(&c->uc);
    c->uc.uc_stack.ss_sp = lo;
    c->uc.uc_stack.ss_size = size;
    c->uc.uc_link = NULL;
    makecontext(&c->uc, entry, 0);
}
void ctx_switch(Ctx *from, Ctx *to) { swapcontext(&from->uc, &to->uc); }
#endif

struct Fiber {
    Ctx ctx;
    bool done;
};
std::vector<Fiber> g_fib;
Ctx g_sched;
bool g_fibers;    /* this launch runs fibers (else plain calls) */
bool g_used_sync; /* a barrier or shuffle was reached in this launch */
uint64_t g_progress;
void (*g_body)(void *);
void *g_arg;

void set_thread(int i) {
    g_fiber = i;
    threadIdx.x = (unsigned)i % blockDim.x;
    threadIdx.y = (unsigned)i / blockDim.x % blockDim.y;
    threadIdx.z = (unsigned)i / (blockDim.x * blockDim.y);
}

void need_fiber(const char *what) {
    if (g_fiber < 0) fatal("%s outside a kernel", what);
    if (!g_fibers)
        fatal("kernel %s reached %s in a launch run without fibers (it had none on its first launch); "
              "run with MR_EMU_FIBERS=always",
              g_kernel, what);
    g_used_sync = true;
}

void yield() { ctx_switch(&g_fib[g_fiber].ctx, &g_sched); }

void release_if_ready() {
    if (B.arrived > 0 && B.arrived == B.live) {
        B.arrived = 0;
        B.gen++;
    }
}

void warp_release_if_ready(Warp &w) {
    if (w.arrived > 0 && w.arrived == __builtin_popcount(w.want)) {
        w.arrived = 0;
        w.gen++;
    }
}

void warp_barrier(unsigned mask, const char *what) {
    Warp &w = B.warp[g_fiber / 32];
    unsigned lane = (unsigned)g_fiber % 32, need = mask & w.exist;
    if (!(need >> lane & 1))
        fatal("kernel %s: lane %u calls %s with mask %#x without itself", g_kernel, lane, what, mask);
    if (need & ~w.live)
        fatal("kernel %s, block (%u,%u,%u), warp %d: %s with mask %#x names lanes that have returned (%#x)",
              g_kernel, blockIdx.x, blockIdx.y, blockIdx.z, g_fiber / 32, what, mask, need & ~w.live);
    if (w.arrived == 0)
        w.want = need;
    else if (w.want != need)
        fatal("kernel %s: lanes of warp %d meet at %s with masks %#x and %#x", g_kernel, g_fiber / 32, what,
              w.want, need);
    unsigned g = w.gen;
    w.arrived++;
    g_progress++;
    warp_release_if_ready(w);
    while (w.gen == g) yield();
}

void trampoline() {
    g_body(g_arg);
    int i = g_fiber;
    g_fib[i].done = true;
    Warp &w = B.warp[i / 32];
    w.live &= ~(1u << (i % 32));
    B.live--;
    g_progress++;
    release_if_ready();
    ctx_switch(&g_fib[i].ctx, &g_sched); /* never resumed */
}

char *stack_of(int i) {
    while ((int)g_stacks.size() <= i) {
        void *p = mmap(NULL, STACK + PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) fatal("fiber stack: %s", strerror(errno));
        mprotect(p, PG, PROT_NONE); /* overflow guard */
        g_stacks.push_back((char *)p);
    }
    return g_stacks[i];
}

void run_block_fibers(int n, bool reverse) {
    B.n = B.live = n;
    B.arrived = 0;
    for (int w = 0; w < (n + 31) / 32; w++) {
        int lanes = n - 32 * w < 32 ? n - 32 * w : 32;
        Warp &wp = B.warp[w];
        wp.exist = wp.live = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
        wp.arrived = 0;
    }
    if ((int)g_fib.size() < n) g_fib.resize(n);
    for (int i = 0; i < n; i++) {
        Fiber &f = g_fib[i];
        f.done = false;
        ctx_make(&f.ctx, stack_of(i) + PG, STACK, trampoline);
    }
    while (B.live > 0) {
        uint64_t before = g_progress;
        for (int k = 0; k < n; k++) {
            int i = reverse ? n - 1 - k : k;
            if (g_fib[i].done) continue;
            set_thread(i);
            ctx_switch(&g_sched, &g_fib[i].ctx);
        }
        if (B.live > 0 && g_progress == before) {
            fprintf(stderr, "E cuda-emu: kernel %s, block (%u,%u,%u): deadlock, %d of %d threads wait", g_kernel,
                    blockIdx.x, blockIdx.y, blockIdx.z, B.live, n);
            fprintf(stderr, " (%d at __syncthreads; warp barriers:", B.arrived);
            for (int w = 0; w < (n + 31) / 32; w++)
                if (B.warp[w].arrived) fprintf(stderr, " warp %d %d of %#x", w, B.warp[w].arrived, B.warp[w].want);
            fprintf(stderr, ")\n");
            abort();
        }
    }
}

/* The dynamic shared memory of the running block: its end against a
 * guard page. */
char *g_smem_base;
size_t g_smem_cap;
char *g_smem;

void smem_prepare(size_t bytes) {
    size_t pages = (bytes + PG - 1) / PG + 1;
    if (pages > g_smem_cap) {
        if (g_smem_base) munmap(g_smem_base, (g_smem_cap + 1) * PG);
        g_smem_base = (char *)mmap(NULL, (pages + 1) * PG, PROT_READ | PROT_WRITE,
                                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (g_smem_base == MAP_FAILED) fatal("shared memory: %s", strerror(errno));
        g_smem_cap = pages;
        mprotect(g_smem_base + pages * PG, PG, PROT_NONE);
    }
    g_smem = g_smem_base + g_smem_cap * PG - bytes;
}

std::unordered_map<const void *, bool> g_has_sync; /* learned per kernel */

} // namespace mr_emu

using namespace mr_emu;

/* ---- device side entry points (emu.h) ----------------------------------- */

void __syncthreads(void) {
    need_fiber("__syncthreads");
    unsigned g = B.gen;
    B.arrived++;
    g_progress++;
    release_if_ready();
    while (B.gen == g) yield();
}

void __syncwarp(unsigned mask) {
    need_fiber("__syncwarp");
    warp_barrier(mask, "__syncwarp");
}

uint64_t mr_emu_shfl(unsigned mask, uint64_t v, int src, int xmask, int width) {
    need_fiber("a warp shuffle");
    if (width < 1 || width > 32 || (width & (width - 1))) fatal("kernel %s: shuffle width %d", g_kernel, width);
    Warp &w = B.warp[g_fiber / 32];
    int lane = g_fiber % 32, seg = lane & ~(width - 1);
    int s = xmask >= 0 ? lane ^ xmask : seg + (src & (width - 1));
    if (xmask >= 0 && (s & ~(width - 1)) != seg) s = lane; /* outside the segment: own value */
    w.slot[lane] = v;
    warp_barrier(mask, "a shuffle");
    if (!(w.want >> s & 1))
        fatal("kernel %s: lane %d reads lane %d, which is not in the shuffle's mask %#x", g_kernel, lane, s, w.want);
    uint64_t r = w.slot[s];
    warp_barrier(mask, "a shuffle");
    return r;
}

void *mr_emu_dyn_shared(void) { return g_smem; }

void mr_emu_run(const char *name, const void *key, dim3 grid, dim3 block, size_t shmem, cudaStream_t stream,
                void (*body)(void *), void *arg, const void *const *ptrs, const bool *readonly, int nptrs) {
    std::lock_guard<std::recursive_mutex> lk(g_lock);
    install_handler();
    unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
    if (!grid.x || !grid.y || !grid.z || !threads || threads > 1024 || block.z > 64 || grid.y > 65535 ||
        grid.z > 65535 || grid.x > 0x7fffffffu) {
        warn("kernel %s: launch of (%u,%u,%u) blocks of (%u,%u,%u) threads refused", name, grid.x, grid.y, grid.z,
             block.x, block.y, block.z);
        g_last = cudaErrorInvalidConfiguration;
        return;
    }
    if (shmem > 48 * 1024) {
        warn("kernel %s: %zu bytes of dynamic shared memory (48 KiB without cudaFuncSetAttribute)", name, shmem);
        g_last = cudaErrorInvalidValue;
        return;
    }
    if (!stream_ok(stream)) {
        warn("kernel %s: launched on a stream that does not exist (%p)", name, (void *)stream);
        g_last = cudaErrorInvalidResourceHandle;
        return;
    }
    if (stream_device(stream) != g_device) { /* CUDA refuses it: the stream is another device's */
        warn("kernel %s: launched on a stream of device %d while device %d is current", name, stream_device(stream),
             g_device);
        g_last = cudaErrorInvalidResourceHandle;
        return;
    }
    std::vector<Alloc *> opened;
    order_issue(stream);
    for (int i = 0; i < nptrs; i++) {
        if (!ptrs[i]) continue;
        Alloc *a = find(ptrs[i]);
        const char *c = (const char *)ptrs[i];
        if (!a || !a->live || c < a->user || c > a->user + a->bytes) {
            char d[200];
            describe(ptrs[i], d, sizeof d);
            fatal("kernel %s: pointer argument %d: %s", name, i + 1, d);
        }
        if (a->device != g_device)
            fatal("kernel %s on device %d: pointer argument %d is memory of device %d, which a kernel cannot reach "
                  "without peer access (cudaSetDevice missing in this thread?)", name, g_device, i + 1, a->device);
        order_access(*a, ptrs[i], 0, stream, !readonly[i], name);
        opened.push_back(a);
        open_alloc(*a);
    }
    bool first = !g_has_sync.count(key);
    g_fibers = first || g_has_sync[key] || config().fibers_always;
    bool reverse = config().reverse;
    g_used_sync = false;
    g_kernel = name;
    g_body = body;
    g_arg = arg;
    gridDim = grid;
    blockDim = block;
    smem_prepare(shmem);
    unsigned long long nb = (unsigned long long)grid.x * grid.y * grid.z;
    g_stats.launches++;
    g_stats.blocks += nb;
    for (unsigned long long k = 0; k < nb; k++) {
        unsigned long long b = reverse ? nb - 1 - k : k;
        blockIdx.x = (unsigned)(b % grid.x);
        blockIdx.y = (unsigned)(b / grid.x % grid.y);
        blockIdx.z = (unsigned)(b / ((unsigned long long)grid.x * grid.y));
        memset(g_smem, 0xff, shmem);
        if (g_fibers) {
            run_block_fibers((int)threads, reverse);
        } else {
            for (int t = 0; t < (int)threads; t++) {
                set_thread(reverse ? (int)threads - 1 - t : t);
                body(arg);
            }
        }
    }
    if (first) g_has_sync[key] = g_used_sync;
    g_kernel = NULL;
    g_fiber = -1;
    for (Alloc *a : opened) close_alloc(*a);
}

/* ---- the runtime API ---------------------------------------------------- */


cudaError_t mr_emu::set_error(cudaError_t e) {
    g_last = e;
    return e;
}
static cudaError_t fail(cudaError_t e) { return set_error(e); }

cudaError_t cudaGetLastError(void) {
    LOCK;
    cudaError_t e = g_last;
    g_last = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return g_last; }

const char *cudaGetErrorName(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    }
    return "cudaErrorUnknown";
}

const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    }
    return "unknown error";
}

static int ndevices() { return config().devices; }
int mr_emu::current_device() { return g_device; }

cudaError_t cudaGetDeviceCount(int *n) {
    *n = ndevices();
    return *n > 0 ? cudaSuccess : fail(cudaErrorNoDevice);
}

cudaError_t cudaSetDevice(int device) {
    if (device < 0 || device >= ndevices()) return fail(cudaErrorInvalidDevice);
    g_device = device;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device) {
    *device = g_device;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int device) {
    if (device < 0 || device >= ndevices()) return fail(cudaErrorInvalidDevice);
    if (attr != cudaDevAttrMultiProcessorCount) return fail(cudaErrorInvalidValue);
    *value = config().sms;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int device) {
    if (device < 0 || device >= ndevices()) return fail(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "CUDA emulator on the CPU (tests/gpu/emu), not a GPU");
    p->totalGlobalMem = (size_t)16 << 30;
    p->sharedMemPerBlock = 48 * 1024;
    p->warpSize = 32;
    p->maxThreadsPerBlock = 1024;
    p->major = 9;
    p->minor = 0;
    p->multiProcessorCount = config().sms;
    p->pciBusID = 0xe0 + device;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetPCIBusId(char *busid, int len, int device) {
    if (device < 0 || device >= ndevices()) return fail(cudaErrorInvalidDevice);
    if (len < 13) return fail(cudaErrorInvalidValue);
    snprintf(busid, (size_t)len, "0000:%02X:00.0", (0xe0 + device) & 0xff);
    return cudaSuccess;
}

cudaError_t cudaDeviceGetByPCIBusId(int *device, const char *busid) {
    for (int d = 0; d < ndevices(); d++) {
        char id[32];
        cudaDeviceGetPCIBusId(id, sizeof id, d);
        if (!strcasecmp(id, busid)) {
            *device = d;
            return cudaSuccess;
        }
    }
    return fail(cudaErrorInvalidDevice);
}

cudaError_t cudaDeviceSynchronize(void) {
    LOCK;
    host_sync_all();
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t bytes) {
    LOCK;
    install_handler();
    arena_init();
    *p = NULL;
    if (bytes == 0) return cudaSuccess; /* as CUDA: NULL, no error */
    size_t pages = (bytes + PG - 1) / PG;
    if (g_cursor + (pages + 1) * PG > g_arena_bytes) return fail(cudaErrorMemoryAllocation);
    Alloc a;
    a.base = g_arena + g_cursor;
    a.pages = pages;
    a.user = (char *)((uintptr_t)(a.base + pages * PG - bytes) & ~(uintptr_t)3);
    a.bytes = bytes;
    a.id = ++g_next_id;
    a.live = true;
    a.open = 0;
    a.device = g_device;
    g_cursor += (pages + 1) * PG;
    /* Poison the first MR_EMU_POISON_MIB (32) MiB: all of most buffers, the
     * first slots of a KV cache; the rest stays untouched (zero pages),
     * not gigabytes of page faults for a cache sized for a whole batch. */
    size_t cap = config().poison_bytes;
    size_t poison = a.user + bytes - a.base < cap ? (size_t)(a.user + bytes - a.base) : cap;
    set_prot(a, PROT_READ | PROT_WRITE);
    memset(a.base, 0xff, poison);
    set_prot(a, PROT_NONE);
    g_allocs[(uintptr_t)a.base] = a;
    g_stats.allocs++;
    g_stats.alloc_bytes += bytes;
    *p = a.user;
    return cudaSuccess;
}

cudaError_t cudaFree(void *p) {
    LOCK;
    if (!p) return cudaSuccess;
    Alloc *a = find(p);
    if (!a || !a->live || (char *)p != a->user) {
        char d[200];
        describe(p, d, sizeof d);
        warn("cudaFree: %s", d);
        return fail(cudaErrorInvalidValue);
    }
    if (a->open) fatal("cudaFree of allocation #%d while a kernel or copy uses it", a->id);
    host_sync_all(); /* cudaFree waits for the device */
    order_forget(a->id);
    a->live = false;
    g_stats.frees++;
    madvise(a->base, a->pages * PG, MADV_DONTNEED); /* stays PROT_NONE: later use faults */
    return cudaSuccess;
}

/* Checks one side of a copy: device (the range inside a live allocation)
 * or host (not device memory).  Opens a device range. */
static bool copy_side(const char *what, const char *side, const void *p, size_t bytes, bool device,
                      std::vector<Alloc *> &opened) {
    char why[300];
    if (!device) {
        if (in_arena(p) || find(p)) {
            char d[200];
            describe(p, d, sizeof d);
            warn("%s: the %s should be host memory, but %s", what, side, d);
            return false;
        }
        return true;
    }
    Alloc *a = range(p, bytes, why, sizeof why);
    if (!a) {
        warn("%s: the %s %s", what, side, why);
        return false;
    }
    open_alloc(*a);
    opened.push_back(a);
    return true;
}

static cudaError_t copy2d(const char *what, void *dst, size_t dpitch, const void *src, size_t spitch,
                          size_t width, size_t height, cudaMemcpyKind kind, cudaStream_t s) {
    LOCK;
    if (!stream_ok(s)) return fail(cudaErrorInvalidResourceHandle);
    if (!width || !height) return cudaSuccess;
    if (kind == cudaMemcpyDefault) {
        int dd = find(dst) != NULL, sd = find(src) != NULL;
        kind = (cudaMemcpyKind)(sd ? (dd ? 3 : 2) : (dd ? 1 : 0));
    }
    if ((int)kind < 0 || kind > cudaMemcpyDeviceToDevice) return fail(cudaErrorInvalidMemcpyDirection);
    if (width > dpitch || width > spitch) return fail(cudaErrorInvalidValue);
    bool dd = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    bool sd = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    std::vector<Alloc *> opened;
    bool ok = copy_side(what, "destination", dst, (height - 1) * dpitch + width, dd, opened) &&
              copy_side(what, "source", src, (height - 1) * spitch + width, sd, opened);
    g_stats.copies++;
    g_stats.copy_bytes += width * height;
    if (ok) {
        order_issue(s);
        if (dd) order_access(*find(dst), dst, (height - 1) * dpitch + width, s, true, what);
        if (sd) order_access(*find(src), src, (height - 1) * spitch + width, s, false, what);
    }
    if (ok)
        for (size_t r = 0; r < height; r++) memmove((char *)dst + r * dpitch, (const char *)src + r * spitch, width);
    for (Alloc *a : opened) close_alloc(*a);
    return ok ? cudaSuccess : fail(cudaErrorInvalidValue);
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    LOCK;
    cudaError_t e = copy2d("cudaMemcpy", dst, bytes, src, bytes, bytes, 1, kind, 0);
    order_host_sync(0); /* returns when done (as it does for the host buffers used here) */
    return e;
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s) {
    return copy2d("cudaMemcpyAsync", dst, bytes, src, bytes, bytes, 1, kind, s);
}
cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                              size_t height, cudaMemcpyKind kind, cudaStream_t s) {
    return copy2d("cudaMemcpy2DAsync", dst, dpitch, src, spitch, width, height, kind, s);
}

cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t s) {
    LOCK;
    if (!stream_ok(s)) return fail(cudaErrorInvalidResourceHandle);
    if (!bytes) return cudaSuccess;
    std::vector<Alloc *> opened;
    if (!copy_side("cudaMemset", "destination", p, bytes, true, opened)) return fail(cudaErrorInvalidValue);
    order_issue(s);
    order_access(*opened[0], p, bytes, s, true, "cudaMemset");
    memset(p, value, bytes);
    close_alloc(*opened[0]);
    return cudaSuccess;
}
cudaError_t cudaMemset(void *p, int value, size_t bytes) {
    LOCK;
    cudaError_t e = cudaMemsetAsync(p, value, bytes, 0);
    order_host_sync(0);
    return e;
}

