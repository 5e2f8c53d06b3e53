/* Unit tests for the safetensors/checkpoint reader (runtime/safetensors.c).
 *
 * Every file is written by hand here into the test's temporary folder, so
 * the expected values come from independent formulas (f16 bit patterns
 * decoded with ldexp, bf16 as the top half of a float), never from the
 * reader itself.  Bad inputs each check the status and the message. */
#define _GNU_SOURCE
#include "harness.h"
#include "runtime/safetensors.h"

#include <ftw.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- writing test files ------------------------------------------------ */

static const char *tmp_path(const char *rel) {
    static char buf[8][1024];
    static int next = 0;
    char *b = buf[next++ % 8];
    snprintf(b, sizeof buf[0], "%s/%s", mr_test_tmpdir(), rel);
    return b;
}

static void make_dir(const char *rel) { mkdir(tmp_path(rel), 0755); }

static void write_bytes(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); exit(1); }
    if (len && fwrite(data, 1, len, f) != len) { perror(path); exit(1); }
    fclose(f);
}

/* An 8-byte little-endian length `hlen` (the real header length unless the
 * test lies about it), the header text, then `dlen` data bytes. */
static void write_st_raw(const char *path, uint64_t hlen, const char *header, const void *data,
                         size_t dlen) {
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); exit(1); }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(hlen >> (8 * i));
    fwrite(len8, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    if (dlen) fwrite(data, 1, dlen, f);
    fclose(f);
}

static void write_st(const char *path, const char *header, const void *data, size_t dlen) {
    write_st_raw(path, strlen(header), header, data, dlen);
}

static void put_u16(unsigned char *p, uint16_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* f16 decoded by the textbook formula, independent of the reader's bit
 * shuffling. */
static float ref_f16(uint16_t h) {
    int sign = h >> 15, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v;
    if (e == 0) v = ldexp((double)m, -24);
    else if (e == 31) v = m ? NAN : INFINITY;
    else v = ldexp(1024.0 + m, e - 25);
    return (float)(sign ? -v : v);
}

/* Same value, same sign, or both NaN. */
static int same_value(float a, float b) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    return a == b && signbit(a) == signbit(b);
}

/* Opening must fail with `st` and a message holding every needle. */
static void expect_open_error(const char *path, mr_status st, const char *n1, const char *n2,
                              const char *n3, int line) {
    mr_checkpoint *ck = (mr_checkpoint *)1;
    mr_clear_error();
    mr_status got = mr_checkpoint_open(&ck, path);
    const char *msg = mr_last_error();
    CHECK(got == st, "line %d: status %s, expected %s (%s)", line, mr_status_name(got),
          mr_status_name(st), msg);
    CHECK(ck == NULL, "line %d: out not cleared on failure", line);
    const char *needles[3] = {n1, n2, n3};
    for (int i = 0; i < 3; i++)
        if (needles[i])
            CHECK(mr_test_contains(msg, needles[i]), "line %d: message '%s' lacks '%s'", line,
                  msg, needles[i]);
    if (got == MR_OK) mr_checkpoint_close(ck);
}
#define EXPECT_OPEN_ERROR(path, st, a, b, c) expect_open_error(path, st, a, b, c, __LINE__)

/* ---- conversions ----------------------------------------------------------- */

static void test_conversions(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float got = mr_f16_to_f32((uint16_t)h), want = ref_f16((uint16_t)h);
        if (!same_value(got, want) && bad++ < 5)
            CHECK(0, "f16 0x%04x -> %g, expected %g", h, got, want);
        uint32_t bf = f32_bits(mr_bf16_to_f32((uint16_t)h));
        if (bf != h << 16 && bad++ < 5) CHECK(0, "bf16 0x%04x -> 0x%08x", h, bf);
    }
    CHECK(bad == 0, "%d conversion mismatches over all 65536 patterns", bad);
    CHECK(mr_f16_to_f32(0x3C00) == 1.0f, "0x3C00");
    CHECK(mr_f16_to_f32(0xC000) == -2.0f, "0xC000");
    CHECK(mr_f16_to_f32(0x0001) == ldexpf(1.0f, -24), "smallest subnormal");
    CHECK(mr_f16_to_f32(0x7BFF) == 65504.0f, "largest normal");
    CHECK(isinf(mr_f16_to_f32(0x7C00)) && mr_f16_to_f32(0x7C00) > 0, "+inf");
    CHECK(isnan(mr_f16_to_f32(0x7E00)), "nan");
    CHECK(signbit(mr_f16_to_f32(0x8000)) && mr_f16_to_f32(0x8000) == 0.0f, "-0");
    /* NaN payloads survive (a quiet f16 NaN stays a quiet f32 NaN). */
    CHECK(f32_bits(mr_f16_to_f32(0x7E01)) == 0x7FC02000u, "nan payload 0x%08x",
          f32_bits(mr_f16_to_f32(0x7E01)));

    CHECK(!strcmp(mr_dtype_name(MR_DTYPE_BF16), "BF16"), "dtype name");
    CHECK(mr_dtype_size(MR_DTYPE_F32) == 4 && mr_dtype_size(MR_DTYPE_F16) == 2 &&
          mr_dtype_size(MR_DTYPE_BF16) == 2, "dtype sizes");

    mr_slice s = mr_slice_part(1, 12, 4, 2);
    CHECK(s.axis == 1 && s.start == 6 && s.count == 3, "slice_part {%d, %lld, %lld}", s.axis,
          (long long)s.start, (long long)s.count);
}

/* ---- round trip of each dtype --------------------------------------------- */

static void test_round_trip(void) {
    /* f32 [2, 3] */
    const float f32v[6] = {1.5f, -2.25f, 0.0f, 3.0e38f, -1.0e-40f, 7.0f};
    /* f16 [3, 3]: known bit patterns and their values */
    const uint16_t f16b[9] = {0x3C00, 0xC000, 0x0001, 0x7C00, 0xFC00, 0x7E00, 0x03FF, 0x7BFF,
                              0x8000};
    const float f16v[9] = {1.0f, -2.0f, ldexpf(1.0f, -24), INFINITY, -INFINITY, NAN,
                           1023.0f * ldexpf(1.0f, -24), 65504.0f, -0.0f};
    /* bf16 [2, 4]: floats whose low 16 bits are zero, so the top half is
     * the exact bf16; 0x00010000 is a bf16 subnormal (2^-133). */
    float bf16v[8] = {1.0f, -3.5f, 0.15625f, 256.0f, -0.0078125f, 0.0f, INFINITY, 0.0f};
    bf16v[7] = ldexpf(1.0f, -133);
    unsigned char data[24 + 18 + 16];
    memcpy(data, f32v, 24);
    for (int i = 0; i < 9; i++) put_u16(data + 24 + 2 * i, f16b[i]);
    for (int i = 0; i < 8; i++) {
        uint32_t u = f32_bits(bf16v[i]);
        CHECK((u & 0xffff) == 0, "bf16 test value %d is not exact", i);
        put_u16(data + 42 + 2 * i, (uint16_t)(u >> 16));
    }
    /* Padded with spaces like the Python writer does for alignment. */
    const char *hdr =
        "{\"__metadata__\": {\"format\": \"pt\"},"
        " \"f32\": {\"dtype\": \"F32\", \"shape\": [2, 3], \"data_offsets\": [0, 24]},"
        " \"h\": {\"dtype\": \"F16\", \"shape\": [3, 3], \"data_offsets\": [24, 42]},"
        " \"b\": {\"dtype\": \"BF16\", \"shape\": [2, 4], \"data_offsets\": [42, 58]}}     ";
    const char *path = tmp_path("round.safetensors");
    write_st(path, hdr, data, sizeof data);

    mr_checkpoint *ck = NULL;
    mr_status st = mr_checkpoint_open(&ck, path);
    CHECK(st == MR_OK, "open: %s", mr_last_error());
    if (st != MR_OK) return;
    CHECK(mr_checkpoint_count(ck) == 3, "count %d", mr_checkpoint_count(ck));
    CHECK(mr_checkpoint_bytes_total(ck) == 58, "bytes_total %llu",
          (unsigned long long)mr_checkpoint_bytes_total(ck));
    CHECK(mr_checkpoint_bytes_read(ck) == 0, "open must not read tensor data");
    const mr_tensor_info *ti = mr_checkpoint_find(ck, "h");
    CHECK(ti && ti->dtype == MR_DTYPE_F16 && ti->ndim == 2 && ti->shape[0] == 3 &&
          ti->shape[1] == 3 && ti->nbytes == 18 && ti->file == 0, "info of h");
    CHECK(ti && ti->offset == 8 + strlen(hdr) + 24, "offset of h");
    CHECK(mr_checkpoint_find(ck, "nope") == NULL, "find of a missing name");
    CHECK(!strcmp(mr_checkpoint_file_path(ck, 0), path), "file path");
    CHECK(mr_checkpoint_file_path(ck, 1) == NULL, "file path out of range");
    /* Sorted order through mr_checkpoint_tensor. */
    CHECK(!strcmp(mr_checkpoint_tensor(ck, 0)->name, "b") &&
          !strcmp(mr_checkpoint_tensor(ck, 2)->name, "h"), "tensor order");

    float out[9];
    st = mr_checkpoint_read_f32(ck, "f32", 2, (int64_t[]){2, 3}, MR_SLICE_ALL, out);
    CHECK(st == MR_OK, "read f32: %s", mr_last_error());
    CHECK(!memcmp(out, f32v, sizeof f32v), "f32 values");
    st = mr_checkpoint_read_f32(ck, "h", 2, (int64_t[]){3, 3}, MR_SLICE_ALL, out);
    CHECK(st == MR_OK, "read f16: %s", mr_last_error());
    for (int i = 0; i < 9; i++)
        CHECK(same_value(out[i], f16v[i]), "f16[%d] = %g, expected %g", i, out[i], f16v[i]);
    st = mr_checkpoint_read_f32(ck, "b", 2, (int64_t[]){2, 4}, MR_SLICE_ALL, out);
    CHECK(st == MR_OK, "read bf16: %s", mr_last_error());
    for (int i = 0; i < 8; i++)
        CHECK(same_value(out[i], bf16v[i]), "bf16[%d] = %g, expected %g", i, out[i], bf16v[i]);
    CHECK(mr_checkpoint_bytes_read(ck) == 58, "bytes_read %llu",
          (unsigned long long)mr_checkpoint_bytes_read(ck));
    mr_checkpoint_close(ck);
}

/* Every f16 pattern in one tensor: exercises the in-place widening over
 * many block sizes (including the odd last element). */
static void test_large_in_place(void) {
    const int n = 65535; /* odd on purpose */
    unsigned char *data = malloc((size_t)n * 2 * 2);
    for (int i = 0; i < n; i++) {
        put_u16(data + 2 * i, (uint16_t)(i + 1));
        put_u16(data + 2 * n + 2 * i, (uint16_t)(n - i));
    }
    char hdr[256];
    snprintf(hdr, sizeof hdr,
             "{\"h\": {\"dtype\": \"F16\", \"shape\": [%d], \"data_offsets\": [0, %d]},"
             " \"b\": {\"dtype\": \"BF16\", \"shape\": [%d], \"data_offsets\": [%d, %d]}}",
             n, 2 * n, n, 2 * n, 4 * n);
    const char *path = tmp_path("large.safetensors");
    write_st(path, hdr, data, (size_t)n * 4);
    free(data);
    mr_checkpoint *ck = NULL;
    CHECK(mr_checkpoint_open(&ck, path) == MR_OK, "open: %s", mr_last_error());
    if (!ck) return;
    float *out = malloc((size_t)n * sizeof *out);
    int bad = 0;
    CHECK(mr_checkpoint_read_f32(ck, "h", 1, (int64_t[]){n}, MR_SLICE_ALL, out) == MR_OK, "%s",
          mr_last_error());
    for (int i = 0; i < n; i++)
        if (!same_value(out[i], ref_f16((uint16_t)(i + 1))) && bad++ < 5)
            CHECK(0, "f16 element %d = %g, expected %g", i, out[i], ref_f16((uint16_t)(i + 1)));
    CHECK(mr_checkpoint_read_f32(ck, "b", 1, (int64_t[]){n}, MR_SLICE_ALL, out) == MR_OK, "%s",
          mr_last_error());
    for (int i = 0; i < n; i++)
        if (f32_bits(out[i]) != (uint32_t)(n - i) << 16 && bad++ < 5)
            CHECK(0, "bf16 element %d = 0x%08x", i, f32_bits(out[i]));
    CHECK(bad == 0, "%d in-place widening mismatches", bad);
    free(out);
    mr_checkpoint_close(ck);
}

/* ---- slices ---------------------------------------------------------------- */

/* The value of element (i, j, k) in the slice tests: small integers, exact
 * in f16, bf16 and f32. */
static float elem(int64_t flat) { return (float)(flat % 200); }

static void check_slice(mr_checkpoint *ck, const char *name, int ndim, const int64_t *shape,
                        mr_slice s, int esz, int line) {
    /* Reference: walk the full tensor and keep indices inside the slice. */
    int64_t total = 1;
    for (int d = 0; d < ndim; d++) total *= shape[d];
    int64_t inner = 1;
    if (s.axis >= 0)
        for (int d = s.axis + 1; d < ndim; d++) inner *= shape[d];
    float *ref = malloc((size_t)total * sizeof *ref), *out = malloc((size_t)total * sizeof *out);
    int64_t m = 0;
    for (int64_t f = 0; f < total; f++) {
        int64_t idx = s.axis >= 0 ? (f / inner) % shape[s.axis] : 0;
        if (s.axis < 0 || (idx >= s.start && idx < s.start + s.count)) ref[m++] = elem(f);
    }
    uint64_t before = mr_checkpoint_bytes_read(ck);
    mr_status st = mr_checkpoint_read_f32(ck, name, ndim, shape, s, out);
    CHECK(st == MR_OK, "line %d: %s", line, mr_last_error());
    uint64_t delta = mr_checkpoint_bytes_read(ck) - before;
    CHECK(delta == (uint64_t)(m * esz), "line %d: read %llu bytes, slice is %lld", line,
          (unsigned long long)delta, (long long)(m * esz));
    int bad = 0;
    for (int64_t i = 0; i < m && st == MR_OK; i++)
        if (out[i] != ref[i] && bad++ < 5)
            CHECK(0, "line %d: %s[%lld] = %g, expected %g", line, name, (long long)i, out[i],
                  ref[i]);
    CHECK(bad == 0, "line %d: %d mismatches", line, bad);
    free(ref);
    free(out);
}
#define CHECK_SLICE(ck, name, nd, shape, s, esz) check_slice(ck, name, nd, shape, s, esz, __LINE__)

static void test_slices(void) {
    /* m32 [6, 5] F32, m16 [6, 5] BF16, t3 [3, 4, 5] F16 */
    unsigned char data[120 + 60 + 120];
    for (int f = 0; f < 30; f++) {
        float v = elem(f);
        memcpy(data + 4 * f, &v, 4);
        put_u16(data + 120 + 2 * f, (uint16_t)(f32_bits(v) >> 16));
    }
    for (int f = 0; f < 60; f++) {
        /* f16 of a small integer v: exponent e with 2^e <= v, mantissa. */
        float v = elem(f);
        uint16_t h = 0;
        if (v > 0) {
            int e = ilogbf(v);
            h = (uint16_t)((e + 15) << 10 | ((int)ldexpf(v, 10 - e) - 1024));
        }
        CHECK(ref_f16(h) == v, "test encoding of %g", v);
        put_u16(data + 180 + 2 * f, h);
    }
    const char *hdr =
        "{\"m32\": {\"dtype\": \"F32\", \"shape\": [6, 5], \"data_offsets\": [0, 120]},"
        " \"m16\": {\"dtype\": \"BF16\", \"shape\": [6, 5], \"data_offsets\": [120, 180]},"
        " \"t3\": {\"dtype\": \"F16\", \"shape\": [3, 4, 5], \"data_offsets\": [180, 300]}}";
    const char *path = tmp_path("slices.safetensors");
    write_st(path, hdr, data, sizeof data);
    mr_checkpoint *ck = NULL;
    CHECK(mr_checkpoint_open(&ck, path) == MR_OK, "open: %s", mr_last_error());
    if (!ck) return;
    const int64_t s2[2] = {6, 5}, s3[3] = {3, 4, 5};
    mr_slice a0 = {.axis = 0, .start = 2, .count = 3};
    mr_slice a1 = {.axis = 1, .start = 1, .count = 3};
    CHECK_SLICE(ck, "m32", 2, s2, MR_SLICE_ALL, 4);
    CHECK_SLICE(ck, "m32", 2, s2, a0, 4);
    CHECK_SLICE(ck, "m32", 2, s2, a1, 4);
    CHECK_SLICE(ck, "m16", 2, s2, a0, 2);
    CHECK_SLICE(ck, "m16", 2, s2, a1, 2);
    CHECK_SLICE(ck, "t3", 3, s3, ((mr_slice){.axis = 1, .start = 1, .count = 2}), 2);
    CHECK_SLICE(ck, "t3", 3, s3, ((mr_slice){.axis = 2, .start = 4, .count = 1}), 2);
    CHECK_SLICE(ck, "t3", 3, s3, ((mr_slice){.axis = 0, .start = 1, .count = 2}), 2);
    CHECK_SLICE(ck, "t3", 3, s3, ((mr_slice){.axis = 1, .start = 0, .count = 4}), 2);
    /* Equal parts, as ranks would read them. */
    for (int p = 0; p < 3; p++) CHECK_SLICE(ck, "m16", 2, s2, mr_slice_part(0, 6, 3, p), 2);
    for (int p = 0; p < 5; p++) CHECK_SLICE(ck, "m32", 2, s2, mr_slice_part(1, 5, 5, p), 4);

    float out[30];
    mr_status st = mr_checkpoint_read_f32(ck, "m32", 2, s2,
                                          (mr_slice){.axis = 0, .start = 5, .count = 2}, out);
    CHECK(st == MR_ERR_INPUT && mr_test_contains(mr_last_error(), "out of range") &&
          mr_test_contains(mr_last_error(), "'m32'") &&
          mr_test_contains(mr_last_error(), "[5, 7)"), "slice out of range: %s", mr_last_error());
    st = mr_checkpoint_read_f32(ck, "m32", 2, s2, (mr_slice){.axis = 2, .start = 0, .count = 1},
                                out);
    CHECK(st == MR_ERR_INPUT && mr_test_contains(mr_last_error(), "axis 2"), "bad axis: %s",
          mr_last_error());
    st = mr_checkpoint_read_f32(ck, "m32", 2, s2, mr_slice_part(0, 6, 0, 0), out);
    CHECK(st == MR_ERR_INPUT, "zero parts: %s", mr_last_error());
    mr_checkpoint_close(ck);
}

/* ---- sharded folders ------------------------------------------------------- */

static void write_shards(const char *dir, const char *index) {
    char p[1024];
    float a[4] = {1, 2, 3, 4}, b[2] = {5, 6}, c[3] = {7, 8, 9};
    unsigned char d1[24];
    memcpy(d1, a, 16);
    memcpy(d1 + 16, b, 8);
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
    write_st(p, "{\"a\": {\"dtype\": \"F32\", \"shape\": [2, 2], \"data_offsets\": [0, 16]},"
                " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [16, 24]}}",
             d1, sizeof d1);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    write_st(p, "{\"c\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 12]}}", c,
             sizeof c);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    write_bytes(p, index, strlen(index));
}

static const char good_index[] =
    "{\"metadata\": {\"total_size\": 36}, \"weight_map\": {"
    "\"a\": \"model-00001-of-00002.safetensors\", \"b\": \"model-00001-of-00002.safetensors\","
    " \"c\": \"model-00002-of-00002.safetensors\"}}";

static void test_sharded(void) {
    make_dir("sharded");
    const char *dir = tmp_path("sharded");
    write_shards(dir, good_index);
    /* A stray model.safetensors must lose to the index. */
    write_st(tmp_path("sharded/model.safetensors"), "{}", NULL, 0);
    mr_checkpoint *ck = NULL;
    mr_status st = mr_checkpoint_open(&ck, dir);
    CHECK(st == MR_OK, "open sharded: %s", mr_last_error());
    if (!ck) return;
    CHECK(mr_checkpoint_count(ck) == 3, "count %d", mr_checkpoint_count(ck));
    CHECK(mr_checkpoint_bytes_total(ck) == 36, "bytes_total");
    const mr_tensor_info *c = mr_checkpoint_find(ck, "c");
    CHECK(c && mr_test_contains(mr_checkpoint_file_path(ck, c->file), "model-00002-of-00002"),
          "c lives in shard 2");
    float out[4];
    CHECK(mr_checkpoint_read_f32(ck, "c", 1, (int64_t[]){3}, MR_SLICE_ALL, out) == MR_OK &&
          out[0] == 7 && out[2] == 9, "read c: %s", mr_last_error());
    CHECK(mr_checkpoint_read_f32(ck, "a", 2, (int64_t[]){2, 2},
                                 (mr_slice){.axis = 1, .start = 1, .count = 1}, out) == MR_OK &&
          out[0] == 2 && out[1] == 4, "read a[:, 1]: %s", mr_last_error());
    CHECK(mr_checkpoint_bytes_read(ck) == 12 + 8, "bytes_read %llu",
          (unsigned long long)mr_checkpoint_bytes_read(ck));
    mr_checkpoint_close(ck);

    /* The index file given directly. */
    st = mr_checkpoint_open(&ck, tmp_path("sharded/model.safetensors.index.json"));
    CHECK(st == MR_OK && mr_checkpoint_count(ck) == 3, "open index file: %s", mr_last_error());
    mr_checkpoint_close(ck);

    /* A folder with just model.safetensors. */
    make_dir("single");
    float v[2] = {3, 4};
    write_st(tmp_path("single/model.safetensors"),
             "{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", v, 8);
    st = mr_checkpoint_open(&ck, tmp_path("single"));
    CHECK(st == MR_OK && mr_checkpoint_count(ck) == 1, "open single folder: %s",
          mr_last_error());
    mr_checkpoint_close(ck);
}

/* ---- bad input ------------------------------------------------------------- */

/* Write one bad safetensors file and expect open to fail naming it. */
static void bad_header(const char *rel, const char *hdr, size_t dlen, const char *n2,
                       const char *n3, int line) {
    static unsigned char zeros[64];
    const char *path = tmp_path(rel);
    write_st(path, hdr, zeros, dlen);
    expect_open_error(path, MR_ERR_INPUT, path, n2, n3, line);
}
#define BAD_HEADER(rel, hdr, dlen, a, b) bad_header(rel, hdr, dlen, a, b, __LINE__)

static void test_bad_files(void) {
    make_dir("empty");
    EXPECT_OPEN_ERROR(tmp_path("empty"), MR_ERR_INPUT, tmp_path("empty"),
                      "model.safetensors.index.json", "nor model.safetensors");
    EXPECT_OPEN_ERROR(tmp_path("does-not-exist"), MR_ERR_IO, tmp_path("does-not-exist"),
                      "No such file", NULL);

    const char *p = tmp_path("short.safetensors");
    write_bytes(p, "\x10\0\0", 3);
    EXPECT_OPEN_ERROR(p, MR_ERR_INPUT, p, "shorter than", NULL);

    p = tmp_path("hlen.safetensors");
    write_st_raw(p, 1000, "{}", NULL, 0);
    EXPECT_OPEN_ERROR(p, MR_ERR_INPUT, p, "header length 1000 is past the end", "10 bytes");
    p = tmp_path("huge.safetensors");
    write_st_raw(p, (uint64_t)1 << 62, "{}", NULL, 0);
    EXPECT_OPEN_ERROR(p, MR_ERR_INPUT, p, "past the end", NULL);

    BAD_HEADER("json.safetensors", "{\"a\": {\"dtype\": \"F32\",\n }", 0, "not valid JSON",
               "line 2, column");
    BAD_HEADER("array.safetensors", "[1, 2]", 0, "not a JSON object", NULL);
    BAD_HEADER("dup.safetensors",
               "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
               " \"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
               "duplicate", NULL);
    BAD_HEADER("past.safetensors",
               "{\"w\": {\"dtype\": \"F32\", \"shape\": [100], \"data_offsets\": [0, 400]}}", 16,
               "tensor 'w'", "header offset past the end");
    BAD_HEADER("size.safetensors",
               "{\"w\": {\"dtype\": \"F32\", \"shape\": [2, 3], \"data_offsets\": [0, 20]}}", 24,
               "tensor 'w'", "hold 20 bytes but shape [2, 3] of F32 needs 24 bytes");
    BAD_HEADER("order.safetensors",
               "{\"w\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [8, 4]}}", 16,
               "tensor 'w'", "[8, 4] begin after end");
    BAD_HEADER("neg.safetensors",
               "{\"w\": {\"dtype\": \"F32\", \"shape\": [2, -3], \"data_offsets\": [0, 8]}}", 16,
               "tensor 'w'", "shape[1] is -3");
    BAD_HEADER("overflow.safetensors",
               "{\"w\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 16],"
               " \"data_offsets\": [0, 8]}}", 16, "tensor 'w'", "overflows");
    BAD_HEADER("bits.safetensors",
               "{\"w\": {\"dtype\": \"F64\", \"shape\": [2147483648, 2147483648],"
               " \"data_offsets\": [0, 8]}}", 16, "tensor 'w'", "too large");
    BAD_HEADER("rank.safetensors",
               "{\"w\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1],"
               " \"data_offsets\": [0, 4]}}", 16, "tensor 'w'", "9 dimensions");
    BAD_HEADER("nodtype.safetensors", "{\"w\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 16,
               "tensor 'w'", "missing \"dtype\"");
    BAD_HEADER("noshape.safetensors", "{\"w\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}",
               16, "tensor 'w'", "missing \"shape\"");
    BAD_HEADER("nooffs.safetensors", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1]}}", 16,
               "tensor 'w'", "missing \"data_offsets\"");
    BAD_HEADER("dtypetype.safetensors",
               "{\"w\": {\"dtype\": 3, \"shape\": [1], \"data_offsets\": [0, 4]}}", 16,
               "tensor 'w'", "\"dtype\" is not a string");
    BAD_HEADER("shapetype.safetensors",
               "{\"w\": {\"dtype\": \"F32\", \"shape\": {}, \"data_offsets\": [0, 4]}}", 16,
               "tensor 'w'", "\"shape\" is not an array");
    BAD_HEADER("dimtype.safetensors",
               "{\"w\": {\"dtype\": \"F32\", \"shape\": [1.0], \"data_offsets\": [0, 4]}}", 16,
               "tensor 'w'", "shape[0] is not an integer");
    BAD_HEADER("offs3.safetensors",
               "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4, 8]}}", 16,
               "tensor 'w'", "two integers");
    BAD_HEADER("entry.safetensors", "{\"w\": 7}", 0, "tensor 'w'", "not a JSON object");
    BAD_HEADER("meta.safetensors", "{\"__metadata__\": [1]}", 0, "__metadata__", NULL);
    BAD_HEADER("metaval.safetensors", "{\"__metadata__\": {\"k\": 1}}", 0, "'k'",
               "not a string");
    BAD_HEADER("unknown.safetensors",
               "{\"w\": {\"dtype\": \"Q7\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 16,
               "tensor 'w'", "unknown dtype 'Q7'");
}

static void test_bad_reads(void) {
    /* A spec dtype moerun does not read opens (checkpoints carry I64
     * buffers) and fails only when read. */
    float v[6] = {1, 2, 3, 4, 5, 6};
    const char *p = tmp_path("reads.safetensors");
    write_st(p, "{\"w\": {\"dtype\": \"F32\", \"shape\": [2, 3], \"data_offsets\": [0, 24]},"
                " \"ids\": {\"dtype\": \"I64\", \"shape\": [3], \"data_offsets\": [0, 24]}}",
             v, sizeof v);
    mr_checkpoint *ck = NULL;
    CHECK(mr_checkpoint_open(&ck, p) == MR_OK, "open: %s", mr_last_error());
    if (!ck) return;
    const mr_tensor_info *ids = mr_checkpoint_find(ck, "ids");
    CHECK(ids && ids->dtype == MR_DTYPE_COUNT && ids->nbytes == 24, "I64 recorded as unsupported");
    float out[6];
    mr_status st = mr_checkpoint_read_f32(ck, "ids", 1, (int64_t[]){3}, MR_SLICE_ALL, out);
    CHECK(st == MR_ERR_UNSUPPORTED && mr_test_contains(mr_last_error(), "tensor 'ids'") &&
          mr_test_contains(mr_last_error(), "I64") && mr_test_contains(mr_last_error(), p),
          "I64 read: %s", mr_last_error());

    char want[1200];
    st = mr_checkpoint_read_f32(ck, "w", 2, (int64_t[]){3, 2}, MR_SLICE_ALL, out);
    snprintf(want, sizeof want, "tensor 'w' in %s has shape [2, 3], expected [3, 2]", p);
    CHECK(st == MR_ERR_INPUT && mr_test_contains(mr_last_error(), want), "wrong shape: %s",
          mr_last_error());
    st = mr_checkpoint_read_f32(ck, "w", 3, (int64_t[]){2, 3, 1}, MR_SLICE_ALL, out);
    CHECK(st == MR_ERR_INPUT && mr_test_contains(mr_last_error(), "expected [2, 3, 1]"),
          "wrong rank: %s", mr_last_error());
    st = mr_checkpoint_read_f32(ck, "nope", 1, (int64_t[]){1}, MR_SLICE_ALL, out);
    snprintf(want, sizeof want, "tensor 'nope' not found in %s", p);
    CHECK(st == MR_ERR_INPUT && mr_test_contains(mr_last_error(), want), "missing: %s",
          mr_last_error());
    CHECK(mr_checkpoint_bytes_read(ck) == 0, "failed reads read nothing");
    mr_checkpoint_close(ck);
}

static void test_bad_shards(void) {
    /* The index names a shard file that is not there. */
    make_dir("noshard");
    const char *dir = tmp_path("noshard");
    write_shards(dir, good_index);
    char p[1024];
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    remove(p);
    EXPECT_OPEN_ERROR(dir, MR_ERR_IO, "model-00002-of-00002.safetensors", "tensor 'c'",
                      "No such file");

    /* The index names a tensor its shard lacks. */
    make_dir("lacks");
    dir = tmp_path("lacks");
    write_shards(dir, "{\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\","
                      " \"zz\": \"model-00002-of-00002.safetensors\"}}");
    EXPECT_OPEN_ERROR(dir, MR_ERR_INPUT, "tensor 'zz'", "model-00002-of-00002.safetensors has no",
                      "model.safetensors.index.json");

    /* The index sends a tensor to the wrong shard. */
    make_dir("wrong");
    dir = tmp_path("wrong");
    write_shards(dir, "{\"weight_map\": {\"c\": \"model-00001-of-00002.safetensors\","
                      " \"a\": \"model-00002-of-00002.safetensors\"}}");
    EXPECT_OPEN_ERROR(dir, MR_ERR_INPUT, "weight_map maps tensor '", "but it is in", NULL);

    /* The same tensor in two shards. */
    make_dir("dup");
    dir = tmp_path("dup");
    write_shards(dir, good_index);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    float c[3] = {7, 8, 9};
    write_st(p, "{\"c\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
                " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}", c,
             sizeof c);
    EXPECT_OPEN_ERROR(dir, MR_ERR_INPUT, "tensor 'b' appears in both",
                      "model-00001-of-00002.safetensors and", "model-00002-of-00002.safetensors");

    /* A shard name that escapes the folder, a bad index and a bad shard. */
    make_dir("escape");
    dir = tmp_path("escape");
    write_shards(dir, "{\"weight_map\": {\"a\": \"../round.safetensors\"}}");
    EXPECT_OPEN_ERROR(dir, MR_ERR_INPUT, "tensor 'a'", "'../round.safetensors'", "not a file");
    make_dir("badindex");
    dir = tmp_path("badindex");
    write_shards(dir, "{\"weight_map\": {\"a\": }");
    EXPECT_OPEN_ERROR(dir, MR_ERR_INPUT, "model.safetensors.index.json", "not valid JSON",
                      "line 1, column");
    make_dir("nomap");
    dir = tmp_path("nomap");
    write_shards(dir, "{\"metadata\": {}}");
    EXPECT_OPEN_ERROR(dir, MR_ERR_INPUT, "model.safetensors.index.json", "weight_map", NULL);
    make_dir("badshard");
    dir = tmp_path("badshard");
    write_shards(dir, good_index);
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
    write_st(p, "{\"a\": {\"dtype\": \"F32\", \"shape\": [9], \"data_offsets\": [0, 36]}}", c,
             sizeof c);
    EXPECT_OPEN_ERROR(dir, MR_ERR_INPUT, p, "tensor 'a'", "header offset past the end");
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    return remove(path);
}

int main(void) {
    test_conversions();
    test_round_trip();
    test_large_in_place();
    test_slices();
    test_sharded();
    test_bad_files();
    test_bad_reads();
    test_bad_shards();
    nftw(mr_test_tmpdir(), remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return mr_test_summary();
}
