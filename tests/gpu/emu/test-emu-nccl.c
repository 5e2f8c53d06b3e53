/* The emulator's NCCL (emu-nccl.cc) on its own, under mpirun -np 2..4:
 *
 *   test-emu-nccl             every call against exact expectations
 *                             (integer data: any order of summation gives
 *                             the same bits), two communicators made at
 *                             once by different roots, and the misuses
 *                             that return an error (host pointer, a range
 *                             past its allocation, freed memory, a
 *                             collective inside a group, a bad peer)
 *   test-emu-nccl mismatch    rank 0 reduces 10 values, the others 11
 *   test-emu-nccl recv-size   rank 1 posts a receive of 8 bytes for a send
 *                             of 12
 *
 * The last two must abort every rank with a message saying what (ctest
 * matches it): real NCCL would hang there or corrupt memory. */
#include <cuda_runtime_api.h>
#include <mpi.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static int P, ME;

static void *dev(size_t bytes) {
    void *p = NULL;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
        fprintf(stderr, "cudaMalloc(%zu) failed\n", bytes);
        exit(1);
    }
    return p;
}

static ncclComm_t make(MPI_Comm over) {
    int r, n;
    MPI_Comm_rank(over, &r);
    MPI_Comm_size(over, &n);
    ncclUniqueId id;
    if (r == 0 && ncclGetUniqueId(&id) != ncclSuccess) exit(1);
    MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, over);
    ncclComm_t c = NULL;
    ncclResult_t res = ncclCommInitRank(&c, n, id, r);
    CHECK(res == ncclSuccess && c, "ncclCommInitRank: %s", ncclGetErrorString(res));
    return c;
}

static void test_collectives(ncclComm_t c, cudaStream_t s) {
    enum { N = 1003 };
    int h[N * 4], g[N * 4];
    int *d = dev(sizeof h);
    /* sum and max of integers */
    for (int i = 0; i < N; i++) h[i] = (ME + 1) * (i - 500);
    cudaMemcpy(d, h, N * sizeof(int), cudaMemcpyHostToDevice);
    CHECK(ncclAllReduce(d, d, N, ncclInt32, ncclSum, c, s) == ncclSuccess, "allreduce sum");
    cudaMemcpy(g, d, N * sizeof(int), cudaMemcpyDeviceToHost);
    int bad = 0;
    for (int i = 0; i < N; i++) bad += g[i] != P * (P + 1) / 2 * (i - 500);
    CHECK(bad == 0, "allreduce sum: %d wrong", bad);
    float f[3] = {(float)ME, -(float)ME, 0.5f * (float)ME}, fo[3];
    float *df = dev(sizeof f);
    cudaMemcpy(df, f, sizeof f, cudaMemcpyHostToDevice);
    CHECK(ncclAllReduce(df, df, 3, ncclFloat32, ncclMax, c, s) == ncclSuccess, "allreduce max");
    cudaMemcpy(fo, df, sizeof fo, cudaMemcpyDeviceToHost);
    CHECK(fo[0] == (float)(P - 1) && fo[1] == 0.0f && fo[2] == 0.5f * (float)(P - 1), "max: %g %g %g", fo[0],
          fo[1], fo[2]);
    /* all-gather in place: this rank's block of the receive buffer is the send buffer */
    for (int i = 0; i < N; i++) h[i] = ME * 100000 + i;
    cudaMemcpy(d + ME * N, h, N * sizeof(int), cudaMemcpyHostToDevice);
    CHECK(ncclAllGather(d + ME * N, d, N, ncclInt32, c, s) == ncclSuccess, "allgather");
    cudaMemcpy(g, d, (size_t)P * N * sizeof(int), cudaMemcpyDeviceToHost);
    bad = 0;
    for (int r = 0; r < P; r++)
        for (int i = 0; i < N; i++) bad += g[r * N + i] != r * 100000 + i;
    CHECK(bad == 0, "allgather: %d wrong", bad);
    /* reduce-scatter: block r of the sum to rank r */
    for (int i = 0; i < P * 7; i++) h[i] = ME + i;
    cudaMemcpy(d, h, (size_t)P * 7 * sizeof(int), cudaMemcpyHostToDevice);
    CHECK(ncclReduceScatter(d, d + P * 7, 7, ncclInt32, ncclSum, c, s) == ncclSuccess, "reduce-scatter");
    cudaMemcpy(g, d + P * 7, 7 * sizeof(int), cudaMemcpyDeviceToHost);
    bad = 0;
    for (int i = 0; i < 7; i++) bad += g[i] != P * (P - 1) / 2 + P * (ME * 7 + i);
    CHECK(bad == 0, "reduce-scatter: %d wrong", bad);
    /* broadcast from the last rank, out of place */
    for (int i = 0; i < N; i++) h[i] = ME * 7 + i;
    cudaMemcpy(d, h, N * sizeof(int), cudaMemcpyHostToDevice);
    CHECK(ncclBroadcast(d, d + N, N, ncclInt32, P - 1, c, s) == ncclSuccess, "broadcast");
    cudaMemcpy(g, d + N, N * sizeof(int), cudaMemcpyDeviceToHost);
    bad = 0;
    for (int i = 0; i < N; i++) bad += g[i] != (P - 1) * 7 + i;
    CHECK(bad == 0, "broadcast: %d wrong", bad);
    /* a ring of sends and receives of uneven sizes in one group */
    int next = (ME + 1) % P, prev = (ME + P - 1) % P;
    for (int i = 0; i < N; i++) h[i] = ME * 1000 + i;
    cudaMemcpy(d, h, N * sizeof(int), cudaMemcpyHostToDevice);
    ncclGroupStart();
    ncclSend(d, (size_t)(10 + ME) * sizeof(int), ncclUint8, next, c, s);
    ncclRecv(d + N, (size_t)(10 + prev) * sizeof(int), ncclUint8, prev, c, s);
    CHECK(ncclGroupEnd() == ncclSuccess, "group of send and receive");
    cudaMemcpy(g, d + N, (size_t)(10 + prev) * sizeof(int), cudaMemcpyDeviceToHost);
    bad = 0;
    for (int i = 0; i < 10 + prev; i++) bad += g[i] != prev * 1000 + i;
    CHECK(bad == 0, "ring: %d wrong", bad);
    cudaFree(d);
    cudaFree(df);
}

static void test_refusals(ncclComm_t c, cudaStream_t s) {
    float host[4] = {0};
    float *d = dev(4 * sizeof(float));
    ncclResult_t r = ncclAllReduce(host, host, 4, ncclFloat32, ncclSum, c, s);
    CHECK(r == ncclInvalidArgument && mr_test_contains(ncclGetLastError(c), "not device memory"),
          "host pointer: %s: %s", ncclGetErrorString(r), ncclGetLastError(c));
    r = ncclAllReduce(d, d, 5, ncclFloat32, ncclSum, c, s);
    CHECK(r == ncclInvalidArgument && mr_test_contains(ncclGetLastError(c), "past the end"),
          "5 floats of a 4-float buffer: %s: %s", ncclGetErrorString(r), ncclGetLastError(c));
    r = ncclSend(d, 4, ncclFloat32, P, c, s);
    CHECK(r == ncclInvalidArgument && mr_test_contains(ncclGetLastError(c), "peer"), "peer %d: %s", P,
          ncclGetLastError(c));
    ncclGroupStart();
    r = ncclAllReduce(d, d, 4, ncclFloat32, ncclSum, c, s);
    CHECK(r == ncclInvalidUsage, "collective in a group: %s", ncclGetErrorString(r));
    CHECK(ncclGroupEnd() == ncclSuccess, "empty group end");
    CHECK(ncclGroupEnd() == ncclInvalidUsage, "group end without start");
    cudaFree(d);
    r = ncclBroadcast(d, d, 4, ncclFloat32, 0, c, s);
    CHECK(r == ncclInvalidArgument && mr_test_contains(ncclGetLastError(c), "FREED"), "freed: %s",
          ncclGetLastError(c));
    /* the communicator is device 0's (MR_EMU_DEVICES=2 in the ctest) */
    int ndev = 0;
    cudaGetDeviceCount(&ndev);
    if (ndev > 1) {
        cudaStream_t s1;
        cudaSetDevice(1);
        float *d1 = dev(4 * sizeof(float));
        cudaStreamCreate(&s1);
        r = ncclAllReduce(d1, d1, 4, ncclFloat32, ncclSum, c, s);
        CHECK(r == ncclInvalidArgument && mr_test_contains(ncclGetLastError(c), "memory of device 1"),
              "a buffer of device 1: %s", ncclGetLastError(c));
        cudaSetDevice(0);
        d = dev(4 * sizeof(float));
        r = ncclAllReduce(d, d, 4, ncclFloat32, ncclSum, c, s1);
        CHECK(r == ncclInvalidArgument && mr_test_contains(ncclGetLastError(c), "a stream of device 1"),
              "a stream of device 1: %s", ncclGetLastError(c));
        cudaFree(d);
        cudaFree(d1);
        cudaStreamDestroy(s1);
    }
    ncclUniqueId zero;
    memset(&zero, 0, sizeof zero);
    ncclComm_t bad = NULL;
    CHECK(ncclCommInitRank(&bad, P, zero, ME) == ncclInvalidArgument && !bad, "all-zero id");
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &ME);
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    const char *mode = argc > 1 ? argv[1] : "";
    cudaStream_t s;
    cudaSetDevice(0);
    cudaStreamCreate(&s);
    ncclComm_t c = make(MPI_COMM_WORLD);
    if (!strcmp(mode, "mismatch")) {
        float *d = dev(11 * sizeof(float));
        cudaMemset(d, 0, 11 * sizeof(float));
        ncclAllReduce(d, d, ME == 0 ? 10 : 11, ncclFloat32, ncclSum, c, s);
        fprintf(stderr, "rank %d: the mismatched all-reduce returned\n", ME);
        MPI_Finalize();
        return 1;
    }
    if (!strcmp(mode, "recv-size")) {
        char *d = dev(12);
        if (ME == 0) ncclSend(d, 12, ncclUint8, 1, c, s);
        if (ME == 1) ncclRecv(d, 8, ncclUint8, 0, c, s);
        MPI_Barrier(MPI_COMM_WORLD);
        fprintf(stderr, "rank %d: the mismatched send/receive returned\n", ME);
        MPI_Finalize();
        return 1;
    }
    test_collectives(c, s);
    /* two communicators by parity, their ids made by different roots at once */
    MPI_Comm half;
    MPI_Comm_split(MPI_COMM_WORLD, ME % 2, ME, &half);
    ncclComm_t h = make(half);
    int one = 1, *d = dev(sizeof(int)), got = 0;
    cudaMemcpy(d, &one, sizeof one, cudaMemcpyHostToDevice);
    ncclAllReduce(d, d, 1, ncclInt32, ncclSum, h, s);
    cudaMemcpy(&got, d, sizeof got, cudaMemcpyDeviceToHost);
    CHECK(got == (P + 1 - ME % 2) / 2, "parity communicator of %d ranks sums to %d", (P + 1 - ME % 2) / 2, got);
    cudaFree(d);
    ncclCommDestroy(h);
    MPI_Comm_free(&half);
    test_refusals(c, s);
    ncclCommDestroy(c);
    cudaStreamDestroy(s);
    int fails = mr_test_fail, all = 0;
    MPI_Allreduce(&fails, &all, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (all && !mr_test_fail) mr_test_fail = 1;
    int rc = mr_test_summary();
    MPI_Finalize();
    return rc;
}
