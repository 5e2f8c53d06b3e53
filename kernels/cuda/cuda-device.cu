/* Device lookup for the launcher: a GPU by its PCI bus id (the topology's
 * placement names GPUs that way, hwloc's numbering is not CUDA's) and the
 * bus id of a CUDA ordinal (to tell which ranks share a GPU).  Plain C
 * entry points, no backend needed; the CUDA runtime's numbering already
 * follows CUDA_VISIBLE_DEVICES, so a GPU hidden by it is not found. */
#include <cuda_runtime.h>

#include <ctype.h>
#include <stdio.h>

#include "kernels/cuda/cuda-backend.h"

int mr_cuda_device_by_pci(const char *busid, char *why, size_t len) {
    if (!busid || !*busid) {
        if (why && len) snprintf(why, len, "no PCI bus id");
        return -1;
    }
    /* hwloc writes lower-case hex ("0000:c1:00.0"); CUDA parses either,
     * but compare-by-string callers get CUDA's own spelling back. */
    char id[32];
    size_t n = 0;
    for (; busid[n] && n + 1 < sizeof id; n++) id[n] = (char)toupper((unsigned char)busid[n]);
    id[n] = 0;
    int dev = -1;
    cudaError_t e = cudaDeviceGetByPCIBusId(&dev, id);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* not sticky: clear it */
        if (why && len)
            snprintf(why, len, "GPU %s: %s%s", busid, cudaGetErrorString(e),
                     e == cudaErrorInvalidDevice ? " (not visible to CUDA: CUDA_VISIBLE_DEVICES?)" : "");
        return -1;
    }
    return dev;
}

int mr_cuda_device_pci(int device, char *busid, size_t len) {
    if (!busid || len < 2) return -1;
    /* CUDA needs at least 13 bytes ("0000:00:00.0" and the NUL). */
    char id[32];
    cudaError_t e = cudaDeviceGetPCIBusId(id, (int)sizeof id, device);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(busid, len, "?");
        return -1;
    }
    for (char *c = id; *c; c++) *c = (char)tolower((unsigned char)*c);
    snprintf(busid, len, "%s", id);
    return 0;
}
