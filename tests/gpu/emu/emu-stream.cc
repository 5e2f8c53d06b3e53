/* The CUDA emulator's streams and events (README.md): their registries,
 * the stream-order check (emu-internal.h) and event timing.  Work runs when
 * it is issued (emu-runtime.cc), so a stream needs no queue: what it keeps
 * is its place in the order of operations, and an event keeps the clock and
 * the host time of its last record. */
#include "emu-internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <set>
#include <unordered_map>
#include <vector>

namespace mr_emu {

std::set<cudaStream_t> g_streams;
std::set<cudaEvent_t> g_events;

/* ---- stream order (emu-internal.h) ---------------------------------------
 * Work runs when it is issued, so the emulator cannot show a missing
 * dependency between streams by a wrong result; it checks the order
 * instead.  Each stream counts its operations; a vector clock per stream,
 * per event and for the host says up to which operation of every stream
 * it is ordered after.  An operation issued on a stream is ordered after
 * all the host has waited for; cudaEventRecord copies the stream's clock
 * into the event, cudaStreamWaitEvent merges it into the waiting stream,
 * the synchronisations merge a clock into the host's; the legacy stream
 * (0) and blocking streams are ordered after each other.  Per allocation,
 * the recent accesses (range, stream, operation, read or write) are kept
 * until the host has waited for them. */
typedef std::unordered_map<cudaStream_t, unsigned long long> Clock;
struct StreamState {
    unsigned long long seq = 0;
    Clock vc;
    bool blocking = true;
    int device = 0;
};
struct Access {
    uintptr_t lo, hi;
    cudaStream_t s;
    unsigned long long seq;
    bool write;
    const char *what;
};
std::unordered_map<cudaStream_t, StreamState> g_ss;
Clock g_host;
std::unordered_map<int, std::vector<Access>> g_acc;

void merge(Clock &dst, const Clock &src) {
    for (auto &kv : src)
        if (kv.second > dst[kv.first]) dst[kv.first] = kv.second;
}
unsigned long long known(const Clock &c, cudaStream_t s) {
    auto it = c.find(s);
    return it == c.end() ? 0 : it->second;
}
void stream_name(cudaStream_t s, char *buf, size_t cap) {
    if (!s) snprintf(buf, cap, "0 (the legacy default stream)");
    else snprintf(buf, cap, "%p", (void *)s);
}

void order_issue(cudaStream_t s) {
    if (!config().order_check) return;
    StreamState &t = g_ss[s];
    t.seq++;
    merge(t.vc, g_host);
    t.vc[s] = t.seq;
    if (!t.blocking) return;
    /* the legacy stream and blocking streams wait for each other */
    for (auto &kv : g_ss)
        if (kv.first != s && (s == 0 ? kv.second.blocking : kv.first == 0) && kv.second.seq > t.vc[kv.first])
            t.vc[kv.first] = kv.second.seq;
}

void order_access(Alloc &a, const void *p, size_t bytes, cudaStream_t s, bool write, const char *what) {
    if (!config().order_check) return;
    StreamState &t = g_ss[s];
    uintptr_t lo = (uintptr_t)p, hi = lo + (bytes ? bytes : 1);
    std::vector<Access> &list = g_acc[a.id];
    size_t keep = 0;
    bool merged = false;
    for (size_t i = 0; i < list.size(); i++) {
        Access &e = list[i];
        if (known(g_host, e.s) >= e.seq) continue; /* the host waited for it: every later operation is after */
        if (e.s != s && (e.write || write) && e.lo < hi && lo < e.hi && known(t.vc, e.s) < e.seq) {
            char sn[64], en[64];
            stream_name(s, sn, sizeof sn);
            stream_name(e.s, en, sizeof en);
            fatal("stream order: %s on stream %s %s bytes [%zu, %zu) of allocation #%d, which %s on stream %s %s "
                  "(its operation %llu) with no event wait or synchronisation between them: on a GPU they may run "
                  "at the same time", what, sn, write ? "writes" : "reads", (size_t)(lo - (uintptr_t)a.user),
                  (size_t)(hi - (uintptr_t)a.user), a.id, e.what, en, e.write ? "wrote" : "read", e.seq);
        }
        if (e.s == s && e.write == write && e.lo == lo && e.hi == hi) {
            e.seq = t.seq;
            e.what = what;
            merged = true;
        }
        list[keep++] = e;
    }
    list.resize(keep);
    if (!merged) list.push_back(Access{lo, hi, s, t.seq, write, what});
}

void order_host_sync(cudaStream_t s) {
    if (!config().order_check) return;
    merge(g_host, g_ss[s].vc);
}

void host_sync_all() {
    for (auto &kv : g_ss) order_host_sync(kv.first);
}

void order_forget(int alloc_id) { g_acc.erase(alloc_id); }

bool stream_ok(cudaStream_t s) { return s == 0 || g_streams.count(s); }

int stream_device(cudaStream_t s) { return s ? g_ss[s].device : current_device(); }

/* An event: its clock (the stream's at its last record), whether it times
 * (not cudaEventDisableTiming) and when it was last recorded (host ms). */
struct EventState {
    Clock vc;
    bool timing = true, recorded = false;
    int device = 0; /* current when it was created */
    double ms = 0.0;
};
std::unordered_map<cudaEvent_t, EventState> g_ev;

double now_ms() {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

} // namespace mr_emu

using namespace mr_emu;

static cudaError_t fail(cudaError_t e) { return set_error(e); }

/* Handles: a registry each. */
template <typename H> static cudaError_t handle_new(std::set<H> &reg, H *h) {
    LOCK;
    *h = (H)malloc(1);
    reg.insert(*h);
    return cudaSuccess;
}
/* The handle's byte is never freed: a later handle never has its address
 * (the stream-order state is keyed by it). */
template <typename H> static cudaError_t handle_free(std::set<H> &reg, H h) {
    LOCK;
    if (!h || !reg.erase(h)) return fail(cudaErrorInvalidResourceHandle);
    return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags) {
    LOCK;
    cudaError_t e = handle_new(g_streams, s);
    g_ss[*s].blocking = !(flags & cudaStreamNonBlocking);
    g_ss[*s].device = current_device();
    return e;
}
cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, cudaStreamDefault); }
cudaError_t cudaStreamDestroy(cudaStream_t s) { return handle_free(g_streams, s); }
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    LOCK;
    if (!stream_ok(s)) return fail(cudaErrorInvalidResourceHandle);
    order_host_sync(s);
    return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t s) { return cudaStreamSynchronize(s); }
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags) {
    LOCK;
    (void)flags;
    if (!stream_ok(s) || !g_events.count(e)) return fail(cudaErrorInvalidResourceHandle);
    if (config().order_check) merge(g_ss[s].vc, g_ev[e].vc);
    return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags) {
    LOCK;
    cudaError_t r = handle_new(g_events, e);
    g_ev[*e].timing = !(flags & cudaEventDisableTiming);
    g_ev[*e].device = current_device();
    return r;
}
cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, cudaEventDefault); }
cudaError_t cudaEventDestroy(cudaEvent_t e) { return handle_free(g_events, e); }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    LOCK;
    if (!stream_ok(s) || !g_events.count(e)) return fail(cudaErrorInvalidResourceHandle);
    EventState &ev = g_ev[e];
    if (ev.device != stream_device(s)) { /* CUDA refuses it */
        warn("cudaEventRecord: an event of device %d on a stream of device %d", ev.device, stream_device(s));
        return fail(cudaErrorInvalidResourceHandle);
    }
    if (config().order_check) {
        StreamState &t = g_ss[s];
        t.vc[s] = t.seq;
        ev.vc = t.vc;
    }
    ev.recorded = true;
    ev.ms = now_ms(); /* the stream's work so far is done: it ran when issued */
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    LOCK;
    if (!g_events.count(e)) return fail(cudaErrorInvalidResourceHandle);
    if (config().order_check) merge(g_host, g_ev[e].vc);
    return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e) { return cudaEventSynchronize(e); }
/* As CUDA: both events recorded and timing, else an invalid handle. */
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    LOCK;
    if (!ms) return fail(cudaErrorInvalidValue);
    if (!g_events.count(start) || !g_events.count(end)) return fail(cudaErrorInvalidResourceHandle);
    const EventState &a = g_ev[start], &b = g_ev[end];
    if (!a.timing || !b.timing || !a.recorded || !b.recorded || a.device != b.device)
        return fail(cudaErrorInvalidResourceHandle);
    *ms = (float)(b.ms - a.ms);
    return cudaSuccess;
}
