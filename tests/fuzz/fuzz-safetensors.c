/* libFuzzer target for the safetensors reader (runtime/safetensors.c).
 *
 * The input bytes become a single .safetensors file (an in-memory memfd,
 * opened by path); every tensor is read whole, along axis 0 and along its
 * last axis.  Errors are expected and fine; crashes, sanitizer reports and
 * leaks are not.  Build with tests/fuzz/build.sh. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "runtime/safetensors.h"
#include "tests/fuzz/fuzz-file.h"

#define FUZZ_MAX_ELEMS ((uint64_t)1 << 22)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    int fd = fuzz_file("fuzz-safetensors", data, size, path);
    if (fd < 0) return 0;
    mr_checkpoint *ck = NULL;
    if (mr_checkpoint_open(&ck, path) == MR_OK) {
        for (int i = 0; i < mr_checkpoint_count(ck); i++) {
            const mr_tensor_info *ti = mr_checkpoint_tensor(ck, i);
            uint64_t n = 1;
            for (int d = 0; d < ti->ndim; d++) n *= (uint64_t)ti->shape[d];
            if (n > FUZZ_MAX_ELEMS) continue;
            float *dst = malloc((size_t)(n ? n : 1) * sizeof *dst);
            if (!dst) continue;
            (void)mr_checkpoint_read_f32(ck, ti->name, ti->ndim, ti->shape, MR_SLICE_ALL, dst);
            if (ti->ndim > 0) {
                int64_t dim = ti->shape[0];
                (void)mr_checkpoint_read_f32(ck, ti->name, ti->ndim, ti->shape,
                                             (mr_slice){.axis = 0, .start = dim / 3, .count = dim / 2}, dst);
                int last = ti->ndim - 1;
                dim = ti->shape[last];
                (void)mr_checkpoint_read_f32(ck, ti->name, ti->ndim, ti->shape,
                                             (mr_slice){.axis = last, .start = dim / 4, .count = dim / 2}, dst);
            }
            free(dst);
        }
        mr_checkpoint_close(ck);
    }
    close(fd);
    return 0;
}
