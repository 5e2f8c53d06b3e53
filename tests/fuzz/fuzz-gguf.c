/* libFuzzer target for the GGUF reader (runtime/gguf.c, gguf-quant.c).
 *
 * The input bytes become a GGUF file (an in-memory memfd, opened by path
 * like a real model); every metadata key is fetched through each typed
 * getter, the llama/qwen2 config mapping runs, and every tensor is read:
 * whole, one row range and one column range, by its GGUF name and, when it
 * has one, by its Hugging Face name (the llama q/k un-permutation path).
 * Errors are expected and fine; crashes, sanitizer reports and leaks are
 * not.  Build with tests/fuzz/build.sh. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "runtime/gguf.h"
#include "tests/fuzz/fuzz-file.h"

/* Tensors larger than this are skipped (a small input can still declare a
 * large zero-filled-looking tensor only if its bytes are in the file, so
 * this bounds memory, not coverage). */
#define FUZZ_MAX_ELEMS ((uint64_t)1 << 22)

static void read_all_ways(mr_gguf *g, const char *name, const mr_gguf_tensor_info *ti) {
    uint64_t n = 1;
    for (int d = 0; d < ti->ndim; d++) n *= (uint64_t)ti->shape[d];
    if (n > FUZZ_MAX_ELEMS) return;
    float *dst = malloc((size_t)(n ? n : 1) * sizeof *dst);
    if (!dst) return;
    (void)mr_gguf_read_f32(g, name, ti->ndim, ti->shape, MR_SLICE_ALL, dst);
    if (ti->ndim > 0 && ti->shape[0] > 1) {
        int64_t dim = ti->shape[0];
        (void)mr_gguf_read_f32(g, name, ti->ndim, ti->shape,
                               (mr_slice){.axis = 0, .start = dim / 3, .count = dim / 2}, dst);
    }
    if (ti->ndim > 1) {
        int last = ti->ndim - 1;
        int64_t dim = ti->shape[last];
        (void)mr_gguf_read_f32(g, name, ti->ndim, ti->shape,
                               (mr_slice){.axis = last, .start = dim > 7 ? 7 : 0, .count = dim / 3}, dst);
    }
    free(dst);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    int fd = fuzz_file("fuzz-gguf", data, size, path);
    if (fd < 0) return 0;
    mr_gguf *g = NULL;
    if (mr_gguf_open(&g, path) == MR_OK) {
        for (int i = 0; i < mr_gguf_kv_count(g); i++) {
            const char *key = mr_gguf_kv_key(g, i);
            uint32_t u32;
            uint64_t u64;
            int64_t i64;
            float f32;
            double f64;
            int b;
            const char *s;
            mr_gguf_array a;
            (void)mr_gguf_get_u32(g, key, &u32);
            (void)mr_gguf_get_u64(g, key, &u64);
            (void)mr_gguf_get_i64(g, key, &i64);
            (void)mr_gguf_get_f32(g, key, &f32);
            (void)mr_gguf_get_f64(g, key, &f64);
            (void)mr_gguf_get_bool(g, key, &b);
            if (mr_gguf_get_str(g, key, &s) == MR_OK) (void)strlen(s);
            if (mr_gguf_get_arr(g, key, MR_GGUF_TYPE_STRING, &a) == MR_OK)
                for (uint64_t k = 0; k < a.n; k++) (void)strlen(((const mr_gguf_string *)a.data)[k].str);
        }
        mr_model_config cfg;
        if (mr_gguf_to_config(g, &cfg) == MR_OK) mr_config_free(&cfg);
        for (int i = 0; i < mr_gguf_tensor_count(g); i++) {
            const mr_gguf_tensor_info *ti = mr_gguf_tensor(g, i);
            char hf[256];
            read_all_ways(g, ti->name, ti);
            if (mr_gguf_name_to_hf(ti->name, hf, sizeof hf)) read_all_ways(g, hf, ti);
        }
        mr_gguf_close(g);
    }
    close(fd);
    return 0;
}
