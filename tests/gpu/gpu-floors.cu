/* gpu-floors: the limits of one GPU that the GPU benchmark tables are set
 * against, all measured in the same run (bench/gpu-floors-lib.cu, shared
 * with bench-engine --backend cuda):
 *   - device memory bandwidth: cudaMemcpy device to device, and a kernel
 *     that only reads (16-byte loads, one sum per block written);
 *   - cuBLAS GEMM rate: fp32 (default math, no TF32: what the backend's
 *     matmul runs), bf16 x bf16 -> fp32 (the backend's bf16 matmul) and
 *     bf16 -> bf16, on large square shapes with random data.
 * Each figure is the mean of the timed repetitions after warm-ups (CUDA
 * events), with the best beside it.  Prints a table and, with --json FILE,
 * writes the same figures as JSON.  Exits 77 without a CUDA device.
 *
 *   gpu-floors [--device N] [--json FILE] [--quick] [--mib N] [--gemm N]
 * --mib and --gemm replace the buffer size (MiB) and the GEMM shapes by one
 * size each (small ones check the program, e.g. on the emulator). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/gpu-floors-lib.h"

#define MAX_RESULTS 16

static mr_gpu_floor results[MAX_RESULTS];
static int nresults;

static void measure(int dev, mr_gpu_floor_kind kind, size_t size) {
    char err[512];
    mr_gpu_floor *r = &results[nresults];
    if (mr_gpu_floor_measure(dev, kind, size, r, err, sizeof err) != 0) {
        fprintf(stderr, "gpu-floors: %s\n", err);
        exit(1);
    }
    nresults++;
    printf("%-30s %-22s %10.3f %10.3f %10.1f %10.1f %s\n", r->name, r->shape, r->mean_ms, r->best_ms, r->rate_mean,
           r->rate_best, r->unit);
    fflush(stdout);
}

static void write_json(const char *path, const char *device) {
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(1);
    }
    fprintf(f, "{\n  \"program\": \"gpu-floors\",\n  \"device\": \"%s\",\n  \"results\": [\n", device);
    for (int i = 0; i < nresults; i++) {
        const mr_gpu_floor *r = &results[i];
        fprintf(f,
                "    {\"name\": \"%s\", \"shape\": \"%s\", \"mean_ms\": %.4f, \"best_ms\": %.4f, "
                "\"rate_mean\": %.2f, \"rate_best\": %.2f, \"unit\": \"%s\"}%s\n",
                r->name, r->shape, r->mean_ms, r->best_ms, r->rate_mean, r->rate_best, r->unit,
                i + 1 < nresults ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
    fclose(f);
}

int main(int argc, char **argv) {
    int dev = 0, quick = 0, mib = 0, gemm = 0;
    const char *json = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--device") && i + 1 < argc) dev = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
        else if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--mib") && i + 1 < argc && (mib = atoi(argv[++i])) > 0) continue;
        else if (!strcmp(argv[i], "--gemm") && i + 1 < argc && (gemm = atoi(argv[++i])) > 0) continue;
        else {
            fprintf(stderr, "usage: gpu-floors [--device N] [--json FILE] [--quick] [--mib N] [--gemm N]\n");
            return 2;
        }
    }
    char err[512], device[512];
    if (mr_gpu_floor_device_count(err, sizeof err) <= 0) {
        printf("gpu-floors: no CUDA device (%s): skipped\n", err);
        return 77;
    }
    if (mr_gpu_floor_device_describe(dev, device, sizeof device, err, sizeof err) != 0) {
        fprintf(stderr, "gpu-floors: device %d: %s\n", dev, err);
        return 1;
    }
    printf("gpu-floors on device %d: %s\n\n", dev, device);
    printf("%-30s %-22s %10s %10s %10s %10s %s\n", "what", "size", "mean ms", "best ms", "mean", "best", "unit");
    size_t bytes = (size_t)(mib ? mib : quick ? 256 : 2048) << 20;
    measure(dev, MR_GPU_FLOOR_MEMCPY, bytes);
    measure(dev, MR_GPU_FLOOR_READ, bytes);
    const int sizes[] = {gemm ? gemm : 4096, 8192};
    for (int s = quick || gemm ? 0 : 1; s >= 0; s--) /* the large shape first */
        for (int k = MR_GPU_FLOOR_GEMM_F32; k <= MR_GPU_FLOOR_GEMM_BF16_BF16; k++)
            measure(dev, (mr_gpu_floor_kind)k, (size_t)sizes[s]);
    if (json) write_json(json, device);
    return 0;
}
