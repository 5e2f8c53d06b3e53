/* See sha256.h.  The compression function follows FIPS 180-4, section 6.2. */
#define _GNU_SOURCE
#include "runtime/sha256.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t ror(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void block(mr_sha256 *s, const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    s->h[0] += a, s->h[1] += b, s->h[2] += c, s->h[3] += d, s->h[4] += e, s->h[5] += f, s->h[6] += g, s->h[7] += h;
}

void mr_sha256_init(mr_sha256 *s) {
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, h0, sizeof h0);
    s->bytes = 0;
    s->n_buf = 0;
}

void mr_sha256_update(mr_sha256 *s, const void *data, size_t n) {
    const uint8_t *p = data;
    s->bytes += n;
    if (s->n_buf) {
        size_t k = 64 - s->n_buf < n ? 64 - s->n_buf : n;
        memcpy(s->buf + s->n_buf, p, k);
        s->n_buf += k, p += k, n -= k;
        if (s->n_buf < 64) return;
        block(s, s->buf);
        s->n_buf = 0;
    }
    for (; n >= 64; p += 64, n -= 64) block(s, p);
    memcpy(s->buf, p, n);
    s->n_buf = n;
}

void mr_sha256_final_hex(mr_sha256 *s, char hex[65]) {
    uint64_t bits = s->bytes * 8;
    uint8_t pad[72] = {0x80};
    size_t k = (s->n_buf < 56 ? 56 : 120) - s->n_buf;
    for (int i = 0; i < 8; i++) pad[k + (size_t)i] = (uint8_t)(bits >> (56 - 8 * i));
    mr_sha256_update(s, pad, k + 8);
    for (int i = 0; i < 8; i++) snprintf(hex + 8 * i, 9, "%08x", s->h[i]);
}

/* Bytes [off, off + n) of f into the hash. */
static mr_status hash_range(mr_sha256 *s, FILE *f, const char *path, long long off, long long n) {
    static _Thread_local unsigned char buf[1 << 16];
    if (fseeko(f, off, SEEK_SET) != 0) return mr_error(MR_ERR_IO, "cannot seek in %s: %s", path, strerror(errno));
    while (n > 0) {
        size_t want = n < (long long)sizeof buf ? (size_t)n : sizeof buf;
        size_t got = fread(buf, 1, want, f);
        if (got == 0) return mr_error(MR_ERR_IO, "cannot read %s: %s", path, ferror(f) ? strerror(errno) : "short file");
        mr_sha256_update(s, buf, got);
        n -= (long long)got;
    }
    return MR_OK;
}

mr_status mr_sha256_file(const char *path, char hex[65]) {
    FILE *f = fopen(path, "rb");
    if (!f) return mr_error(MR_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    mr_sha256 s;
    mr_sha256_init(&s);
    mr_status st = fstat(fileno(f), &sb) == 0 ? hash_range(&s, f, path, 0, (long long)sb.st_size)
                                               : mr_error(MR_ERR_IO, "cannot stat %s: %s", path, strerror(errno));
    fclose(f);
    if (st == MR_OK) mr_sha256_final_hex(&s, hex);
    return st;
}

enum { SAMPLE = 1 << 20 };

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* One file into a fingerprint: its name and size, then the whole of it
 * (`whole`) or its first and last MiB. */
static mr_status fingerprint_file(mr_sha256 *s, const char *path, const char *name, int whole) {
    FILE *f = fopen(path, "rb");
    if (!f) return mr_error(MR_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    mr_status st = MR_OK;
    if (fstat(fileno(f), &sb) != 0) {
        st = mr_error(MR_ERR_IO, "cannot stat %s: %s", path, strerror(errno));
    } else {
        long long size = (long long)sb.st_size;
        char head[512];
        int n = snprintf(head, sizeof head, "%s\n%lld\n", name, size);
        mr_sha256_update(s, head, (size_t)n);
        if (whole || size <= 2 * SAMPLE) {
            st = hash_range(s, f, path, 0, size);
        } else {
            st = hash_range(s, f, path, 0, SAMPLE);
            if (st == MR_OK) st = hash_range(s, f, path, size - SAMPLE, SAMPLE);
        }
    }
    fclose(f);
    return st;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

mr_status mr_fingerprint_model(const char *path, char hex[65]) {
    struct stat sb;
    if (stat(path, &sb) != 0) return mr_error(MR_ERR_IO, "cannot open model %s: %s", path, strerror(errno));
    mr_sha256 s;
    mr_sha256_init(&s);
    if (!S_ISDIR(sb.st_mode)) {
        const char *base = strrchr(path, '/');
        MR_CHECK(fingerprint_file(&s, path, base ? base + 1 : path, 0));
        mr_sha256_final_hex(&s, hex);
        return MR_OK;
    }
    DIR *d = opendir(path);
    if (!d) return mr_error(MR_ERR_IO, "cannot list model folder %s: %s", path, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    mr_status st = MR_OK;
    for (struct dirent *e; (e = readdir(d));) {
        const char *nm = e->d_name;
        int wanted = !strcmp(nm, "config.json") || !strncmp(nm, "tokenizer", 9) || ends_with(nm, ".safetensors") ||
                     ends_with(nm, ".gguf") || !strcmp(nm, "model.safetensors.index.json");
        if (!wanted) continue;
        if (n == cap) {
            char **t = realloc(names, (cap = cap ? 2 * cap : 16) * sizeof *names);
            if (!t) { st = mr_error(MR_ERR_NOMEM, "out of memory"); break; }
            names = t;
        }
        if (!(names[n] = strdup(nm))) { st = mr_error(MR_ERR_NOMEM, "out of memory"); break; }
        n++;
    }
    closedir(d);
    if (st == MR_OK) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; st == MR_OK && i < n; i++) {
        char *full = NULL;
        if (asprintf(&full, "%s/%s", path, names[i]) < 0) { st = mr_error(MR_ERR_NOMEM, "out of memory"); break; }
        int whole = !ends_with(names[i], ".safetensors") && !ends_with(names[i], ".gguf");
        st = fingerprint_file(&s, full, names[i], whole);
        free(full);
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    if (st == MR_OK) mr_sha256_final_hex(&s, hex);
    return st;
}
