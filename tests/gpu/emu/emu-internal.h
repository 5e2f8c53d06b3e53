/* Internal to the CUDA emulator (README.md): what emu-runtime.cc shares
 * with emu-stream.cc, emu-cublas.cc and emu-nccl.cc. */
#ifndef MR_EMU_INTERNAL_H
#define MR_EMU_INTERNAL_H

#include "include/cublas_v2.h"

#include <mutex>

namespace mr_emu {

struct Alloc {
    char *base;    /* first page */
    size_t pages;  /* accessible pages; a guard page follows */
    char *user;    /* what cudaMalloc returned: the end touches the guard */
    size_t bytes;
    int id;
    bool live;
    int open;      /* kernels and copies using it now */
    int device;    /* current when it was allocated */
};

struct Stats {
    unsigned long long allocs, alloc_bytes, frees, launches, blocks, copies, copy_bytes, gemms;
};
extern Stats g_stats; /* MR_EMU_STATS=1: printed at exit */

/* The environment (emu-runtime.cc's header), read once. */
struct Config {
    int devices, sms;
    size_t poison_bytes;
    bool fibers_always, reverse, order_check;
};
const Config &config();

std::recursive_mutex &lock(); /* every API call holds it */
void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A misuse the emulator stops at: the message, then abort. */
[[noreturn]] void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
cudaError_t set_error(cudaError_t e); /* what cudaGetLastError returns next; returns e */
bool in_arena(const void *p);
/* The live allocation holding [p, p + bytes), or NULL with why in words. */
Alloc *range(const void *p, size_t bytes, char *why, size_t cap);
void open_alloc(Alloc &a);  /* readable and writable while used */
void close_alloc(Alloc &a); /* PROT_NONE again when no one uses it */
bool stream_ok(cudaStream_t s);
int current_device();               /* this thread's (cudaSetDevice), 0 until set */
int stream_device(cudaStream_t s);  /* the device it was created on; 0: the current one */

/* Stream order (emu-runtime.cc, "stream order"): every operation is issued
 * on a stream (order_issue, which returns nothing: it advances the stream
 * and what it has been ordered after), then reports the device ranges it
 * touches (order_access; a kernel's pointer arguments are one byte each,
 * their extent being unknown).  An access that conflicts with another
 * stream's (a write on either side, ranges overlapping) that this stream
 * is not ordered after -- by an event it waited for, the legacy stream's
 * implicit order, or the host having synchronised it before issuing -- is
 * fatal, naming both.  MR_EMU_STREAM_CHECK=0 turns it off. */
void order_issue(cudaStream_t s);
void order_access(Alloc &a, const void *p, size_t bytes, cudaStream_t s, bool write, const char *what);
void order_host_sync(cudaStream_t s); /* the host waited for s (cudaMemcpy and the like) */
void host_sync_all();                 /* the host waited for every stream */
void order_forget(int alloc_id);      /* the allocation was freed */

} // namespace mr_emu

#define LOCK std::lock_guard<std::recursive_mutex> lk_(mr_emu::lock())

#endif
