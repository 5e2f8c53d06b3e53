/* SHA-256 (FIPS 180-4) and the fingerprints the output manifest keeps of
 * its input, model and tokenizer, so that a resumed job can tell whether
 * they changed. */
#ifndef MR_SHA256_H
#define MR_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/status.h"

typedef struct mr_sha256 {
    uint32_t h[8];
    uint64_t bytes;
    uint8_t buf[64];
    size_t n_buf;
} mr_sha256;

void mr_sha256_init(mr_sha256 *s);
void mr_sha256_update(mr_sha256 *s, const void *data, size_t n);
/* 64 lowercase hex digits and a NUL into hex[65]. */
void mr_sha256_final_hex(mr_sha256 *s, char hex[65]);

/* The whole file. */
mr_status mr_sha256_file(const char *path, char hex[65]);

/* A model's fingerprint without reading hundreds of GB: SHA-256 over, for
 * each file of the folder that defines the model (config.json and
 * tokenizer files whole; *.safetensors and *.gguf by name, size, first and
 * last MiB, which hold the headers and a sample of the data), in name
 * order; a .gguf file alone the same way.  Any edit of a config, a
 * tokenizer, a header or a file size changes it. */
mr_status mr_fingerprint_model(const char *path, char hex[65]);

#endif
