/* Safetensors files and Hugging Face checkpoint folders (see safetensors.h).
 *
 * Opening reads only the headers: each file's JSON header is parsed with
 * jansson and every entry is checked against the file size before any
 * tensor byte is read.  The descriptors stay open so that each rank later
 * preads just its own slice.  Tensors from all shards live in one array
 * sorted by name, so a lookup is a bsearch.  F16/BF16 data is widened to
 * float32 inside the caller's buffer (raw values are read into its back
 * half and expanded front to back), so no tensor is ever held twice. */
#define _GNU_SOURCE
#define _FILE_OFFSET_BITS 64
#include "runtime/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* F32 data goes from the file straight into dst. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

/* Headers larger than this are refused before anything is allocated: real
 * ones are a few MB even with tens of thousands of tensors. */
#define ST_MAX_HEADER ((uint64_t)100 << 20)
#define ST_MAX_INDEX ((uint64_t)100 << 20)
/* Linux returns at most ~2 GiB from one read; ask for 1 GiB at a time. */
#define ST_MAX_PREAD ((size_t)1 << 30)
#define ST_SHAPE_STR 256

/* Every dtype in the safetensors spec, so sizes can be checked even for
 * tensors moerun does not read (I64 buffers, FP8 scales...): those open
 * with dtype MR_DTYPE_COUNT and fail only if someone reads them. */
typedef struct st_dtype_desc {
    const char *name;
    int bits;
    mr_dtype dt;
} st_dtype_desc;

static const st_dtype_desc st_dtypes[] = {
    {"F32", 32, MR_DTYPE_F32},       {"F16", 16, MR_DTYPE_F16},
    {"BF16", 16, MR_DTYPE_BF16},     {"F64", 64, MR_DTYPE_COUNT},
    {"I64", 64, MR_DTYPE_COUNT},     {"U64", 64, MR_DTYPE_COUNT},
    {"I32", 32, MR_DTYPE_COUNT},     {"U32", 32, MR_DTYPE_COUNT},
    {"I16", 16, MR_DTYPE_COUNT},     {"U16", 16, MR_DTYPE_COUNT},
    {"I8", 8, MR_DTYPE_COUNT},       {"U8", 8, MR_DTYPE_COUNT},
    {"BOOL", 8, MR_DTYPE_COUNT},     {"F8_E4M3", 8, MR_DTYPE_COUNT},
    {"F8_E5M2", 8, MR_DTYPE_COUNT},  {"F8_E8M0", 8, MR_DTYPE_COUNT},
    {"F6_E2M3", 6, MR_DTYPE_COUNT},  {"F6_E3M2", 6, MR_DTYPE_COUNT},
    {"F4", 4, MR_DTYPE_COUNT},
};
#define ST_NDTYPES ((int)(sizeof st_dtypes / sizeof st_dtypes[0]))

typedef struct st_file {
    char *path;
    int fd;
    uint64_t size;
} st_file;

typedef struct st_tensor {
    mr_tensor_info info; /* first, so &t->info is what callers see */
    const char *dtype_name; /* the file's spelling, for unsupported dtypes */
} st_tensor;

struct mr_checkpoint {
    char *path; /* as given to open, for "not found in <path>" */
    st_file *files;
    int nfiles;
    st_tensor *tensors; /* sorted by name after open */
    int count, cap;
    uint64_t bytes_total;
    _Atomic uint64_t bytes_read; /* loaders may read from several threads */
};

/* ---- small helpers ------------------------------------------------------ */

const char *mr_dtype_name(mr_dtype dt) {
    static const char *names[MR_DTYPE_COUNT] = {
        [MR_DTYPE_F32] = "F32", [MR_DTYPE_F16] = "F16", [MR_DTYPE_BF16] = "BF16"};
    return (dt >= 0 && dt < MR_DTYPE_COUNT) ? names[dt] : "unsupported";
}

int mr_dtype_size(mr_dtype dt) {
    static const int sizes[MR_DTYPE_COUNT] = {
        [MR_DTYPE_F32] = 4, [MR_DTYPE_F16] = 2, [MR_DTYPE_BF16] = 2};
    return (dt >= 0 && dt < MR_DTYPE_COUNT) ? sizes[dt] : 0;
}

mr_slice mr_slice_part(int axis, int64_t dim, int parts, int index) {
    /* A bad split becomes a slice that read_f32 refuses with a message,
     * rather than a division by zero here. */
    if (parts <= 0 || index < 0 || index >= parts)
        return (mr_slice){.axis = axis, .start = -1, .count = 0};
    return (mr_slice){.axis = axis, .start = index * dim / parts, .count = dim / parts};
}

/* a * b into *out; 0 when it would overflow. */
static int st_mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    if (a != 0 && b > UINT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}

static void st_fmt_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t pos = 0;
    buf[0] = 0;
    for (int i = 0; i < ndim && pos < cap; i++) {
        int n = snprintf(buf + pos, cap - pos, "%s%" PRId64, i ? ", " : "[", shape[i]);
        if (n < 0) return;
        pos += (size_t)n;
    }
    if (pos < cap) snprintf(buf + pos, cap - pos, "%s]", ndim > 0 ? "" : "[");
}

static mr_status st_strdup(char **out, const char *s) {
    *out = strdup(s);
    if (!*out) return mr_error(MR_ERR_NOMEM, "out of memory copying a name of %zu bytes", strlen(s));
    return MR_OK;
}

/* dir + "/" + name, without doubling a trailing slash. */
static mr_status st_join(char **out, const char *dir, const char *name) {
    size_t dl = strlen(dir), nl = strlen(name);
    int slash = dl > 0 && dir[dl - 1] != '/';
    MR_CHECK(mr_malloc((void **)out, dl + (size_t)slash + nl + 1, "a checkpoint path"));
    memcpy(*out, dir, dl);
    if (slash) (*out)[dl] = '/';
    memcpy(*out + dl + (size_t)slash, name, nl + 1);
    return MR_OK;
}

static int st_is_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Read exactly len bytes at off: loops over short reads and EINTR. */
static mr_status st_pread_full(const st_file *f, uint64_t off, void *buf, size_t len) {
    unsigned char *p = buf;
    while (len > 0) {
        size_t chunk = len < ST_MAX_PREAD ? len : ST_MAX_PREAD;
        ssize_t r = pread(f->fd, p, chunk, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return mr_error(MR_ERR_IO, "%s: read of %zu bytes at offset %" PRIu64 " failed: %s",
                            f->path, chunk, off, strerror(errno));
        }
        if (r == 0)
            return mr_error(MR_ERR_IO, "%s: unexpected end of file at offset %" PRIu64
                            " (%zu bytes still to read; was the file truncated after open?)",
                            f->path, off, len);
        p += r;
        off += (uint64_t)r;
        len -= (size_t)r;
    }
    return MR_OK;
}

/* ---- F16 / BF16 -> F32 -------------------------------------------------- */

static inline float st_bits_to_f32(uint32_t bits) {
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline float st_f16(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t em = h & 0x7fffu; /* exponent and mantissa */
    if (em >= 0x7c00u) /* inf / nan: keep the payload */
        return st_bits_to_f32(sign | 0x7f800000u | (em & 0x3ffu) << 13);
    if (em >= 0x0400u) /* normal: rebias the exponent from 15 to 127 */
        return st_bits_to_f32(sign | (em + ((127u - 15u) << 10)) << 13);
    /* zero or subnormal: mantissa * 2^-24, exact in float */
    float mag = (float)em * 0x1p-24f;
    return sign ? -mag : mag;
}

static inline float st_bf16(uint16_t h) { return st_bits_to_f32((uint32_t)h << 16); }

float mr_f16_to_f32(uint16_t h) { return st_f16(h); }
float mr_bf16_to_f32(uint16_t h) { return st_bf16(h); }

static void st_widen_block(const unsigned char *restrict src, float *restrict out, size_t n,
                           mr_dtype dt) {
    if (dt == MR_DTYPE_BF16) {
        for (size_t k = 0; k < n; k++)
            out[k] = st_bf16((uint16_t)(src[2 * k] | src[2 * k + 1] << 8));
    } else {
        for (size_t k = 0; k < n; k++)
            out[k] = st_f16((uint16_t)(src[2 * k] | src[2 * k + 1] << 8));
    }
}

/* dst holds n raw 2-byte values in its back half (bytes [2n, 4n)); widen
 * them to n floats in place.  Output i occupies bytes [4i, 4i+4) and input
 * i bytes [2n+2i, 2n+2i+2), so a block of b elements from i can be
 * converted without overlap while 2b <= n - i.  Halving the block each step
 * keeps the restrict promise and finishes in log2(n) steps. */
static void st_widen_in_place(float *dst, size_t n, mr_dtype dt) {
    const unsigned char *raw = (const unsigned char *)dst + 2 * n;
    size_t i = 0;
    while (n - i >= 2) {
        size_t b = (n - i) / 2;
        st_widen_block(raw + 2 * i, dst + i, b, dt);
        i += b;
    }
    if (i < n) { /* the last one overlaps its own input: load, then store */
        uint16_t h = (uint16_t)(raw[2 * i] | raw[2 * i + 1] << 8);
        dst[i] = dt == MR_DTYPE_BF16 ? st_bf16(h) : st_f16(h);
    }
}

/* ---- parsing one file's header ------------------------------------------ */

static mr_status st_open_file(st_file *f, const char *path) {
    MR_CHECK(st_strdup(&f->path, path));
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0) return mr_error(MR_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(f->fd, &sb) != 0) return mr_error(MR_ERR_IO, "cannot stat %s: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode)) return mr_error(MR_ERR_INPUT, "%s is not a regular file", path);
    f->size = (uint64_t)sb.st_size;
    return MR_OK;
}

static const st_dtype_desc *st_find_dtype(const char *name) {
    for (int i = 0; i < ST_NDTYPES; i++)
        if (!strcmp(st_dtypes[i].name, name)) return &st_dtypes[i];
    return NULL;
}

/* A non-negative JSON integer, or an error naming the field. */
static mr_status st_json_u64(const char *path, const char *tname, const char *field, size_t i,
                             const json_t *v, uint64_t *out) {
    if (!json_is_integer(v))
        return mr_error(MR_ERR_INPUT, "%s: tensor '%s': %s[%zu] is not an integer", path, tname,
                        field, i);
    json_int_t x = json_integer_value(v);
    if (x < 0)
        return mr_error(MR_ERR_INPUT, "%s: tensor '%s': %s[%zu] is %lld, which is negative", path,
                        tname, field, i, (long long)x);
    *out = (uint64_t)x;
    return MR_OK;
}

static mr_status st_append(mr_checkpoint *ck, const st_tensor *t, const char *path) {
    if (ck->count == ck->cap) {
        if (ck->cap >= INT_MAX / 2)
            return mr_error(MR_ERR_INPUT, "%s: too many tensors in the checkpoint", path);
        int cap = ck->cap ? ck->cap * 2 : 64;
        st_tensor *grown = realloc(ck->tensors, (size_t)cap * sizeof *grown);
        if (!grown) return mr_error(MR_ERR_NOMEM, "out of memory listing %d tensors", cap);
        ck->tensors = grown;
        ck->cap = cap;
    }
    st_tensor *dst = &ck->tensors[ck->count];
    *dst = *t;
    MR_CHECK(st_strdup((char **)&dst->info.name, t->info.name));
    ck->count++;
    return MR_OK;
}

/* One "<name>": {dtype, shape, data_offsets} entry; data_start/data_size
 * describe the bytes after the header. */
static mr_status st_parse_entry(mr_checkpoint *ck, int fi, const char *name, const json_t *val,
                                uint64_t data_start, uint64_t data_size) {
    const char *path = ck->files[fi].path;
    if (!json_is_object(val))
        return mr_error(MR_ERR_INPUT, "%s: tensor '%s': entry is not a JSON object", path, name);
    const json_t *jdt = json_object_get(val, "dtype");
    const json_t *jshape = json_object_get(val, "shape");
    const json_t *joffs = json_object_get(val, "data_offsets");
    const char *missing = !jdt ? "dtype" : !jshape ? "shape" : !joffs ? "data_offsets" : NULL;
    if (missing)
        return mr_error(MR_ERR_INPUT, "%s: tensor '%s': missing \"%s\"", path, name, missing);
    if (!json_is_string(jdt))
        return mr_error(MR_ERR_INPUT, "%s: tensor '%s': \"dtype\" is not a string", path, name);
    const st_dtype_desc *desc = st_find_dtype(json_string_value(jdt));
    if (!desc)
        return mr_error(MR_ERR_INPUT, "%s: tensor '%s': unknown dtype '%s'", path, name,
                        json_string_value(jdt));

    st_tensor t = {.info = {.name = name, .dtype = desc->dt, .file = fi},
                   .dtype_name = desc->name};
    if (!json_is_array(jshape))
        return mr_error(MR_ERR_INPUT, "%s: tensor '%s': \"shape\" is not an array", path, name);
    size_t nd = json_array_size(jshape);
    if (nd > MR_MAX_DIMS)
        return mr_error(MR_ERR_INPUT, "%s: tensor '%s': shape has %zu dimensions, more than %d",
                        path, name, nd, MR_MAX_DIMS);
    uint64_t nelem = 1;
    for (size_t i = 0; i < nd; i++) {
        uint64_t d;
        MR_CHECK(st_json_u64(path, name, "shape", i, json_array_get(jshape, i), &d));
        if (!st_mul_u64(nelem, d, &nelem))
            return mr_error(MR_ERR_INPUT, "%s: tensor '%s': shape element count overflows at "
                            "shape[%zu] = %" PRIu64, path, name, i, d);
        t.info.shape[i] = (int64_t)d;
    }
    t.info.ndim = (int)nd;
    char shape_str[ST_SHAPE_STR];
    st_fmt_shape(shape_str, sizeof shape_str, t.info.ndim, t.info.shape);

    if (!json_is_array(joffs) || json_array_size(joffs) != 2)
        return mr_error(MR_ERR_INPUT, "%s: tensor '%s': \"data_offsets\" is not an array of two "
                        "integers", path, name);
    uint64_t begin, end;
    MR_CHECK(st_json_u64(path, name, "data_offsets", 0, json_array_get(joffs, 0), &begin));
    MR_CHECK(st_json_u64(path, name, "data_offsets", 1, json_array_get(joffs, 1), &end));
    if (begin > end)
        return mr_error(MR_ERR_INPUT, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                        "] begin after end", path, name, begin, end);
    if (end > data_size)
        return mr_error(MR_ERR_INPUT, "%s: tensor '%s': header offset past the end of the file: "
                        "data_offsets [%" PRIu64 ", %" PRIu64 "] but only %" PRIu64
                        " data bytes follow the header", path, name, begin, end, data_size);
    uint64_t bits;
    if (!st_mul_u64(nelem, (uint64_t)desc->bits, &bits))
        return mr_error(MR_ERR_INPUT, "%s: tensor '%s': shape %s of %s is too large", path, name,
                        shape_str, desc->name);
    if (bits % 8 != 0 || bits / 8 != end - begin)
        return mr_error(MR_ERR_INPUT, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                        "] hold %" PRIu64 " bytes but shape %s of %s needs %" PRIu64 " bytes",
                        path, name, begin, end, end - begin, shape_str, desc->name,
                        (bits + 7) / 8);
    t.info.offset = data_start + begin;
    t.info.nbytes = end - begin;
    return st_append(ck, &t, path);
}

static mr_status st_check_metadata(const char *path, const json_t *meta, const char *field) {
    if (!json_is_object(meta))
        return mr_error(MR_ERR_INPUT, "%s: \"%s\" is not a JSON object", path, field);
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)meta, key, v) {
        if (!json_is_string(v))
            return mr_error(MR_ERR_INPUT, "%s: \"%s\" value for '%s' is not a string", path,
                            field, key);
    }
    return MR_OK;
}

/* Read and check file fi's header, appending its tensors to ck. */
static mr_status st_parse_file(mr_checkpoint *ck, int fi) {
    const st_file *f = &ck->files[fi];
    if (f->size < 8)
        return mr_error(MR_ERR_INPUT, "%s: file is %" PRIu64 " bytes, shorter than the 8-byte "
                        "safetensors header length", f->path, f->size);
    unsigned char lenbuf[8];
    MR_CHECK(st_pread_full(f, 0, lenbuf, sizeof lenbuf));
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | lenbuf[i];
    if (n > f->size - 8)
        return mr_error(MR_ERR_INPUT, "%s: header length %" PRIu64 " is past the end of the file "
                        "(%" PRIu64 " bytes)", f->path, n, f->size);
    if (n > ST_MAX_HEADER)
        return mr_error(MR_ERR_INPUT, "%s: header length %" PRIu64 " is larger than the %" PRIu64
                        "-byte limit", f->path, n, ST_MAX_HEADER);

    char *buf;
    MR_CHECK(mr_malloc((void **)&buf, (size_t)n, "a safetensors header"));
    mr_status st = st_pread_full(f, 8, buf, (size_t)n);
    json_error_t jerr;
    json_t *root = st == MR_OK ? json_loadb(buf, (size_t)n, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    free(buf);
    if (st != MR_OK) return st;
    if (!root)
        return mr_error(MR_ERR_INPUT, "%s: header is not valid JSON at line %d, column %d: %s",
                        f->path, jerr.line, jerr.column, jerr.text);
    if (!json_is_object(root)) {
        st = mr_error(MR_ERR_INPUT, "%s: header is not a JSON object", f->path);
        goto free_root;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (!strcmp(key, "__metadata__"))
            MR_CHECK_GOTO(st_check_metadata(f->path, val, key), st, free_root);
        else
            MR_CHECK_GOTO(st_parse_entry(ck, fi, key, val, 8 + n, f->size - 8 - n), st,
                          free_root);
    }
free_root:
    json_decref(root);
    return st;
}

/* ---- checkpoints --------------------------------------------------------- */

static int st_cmp_tensor(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->info.name, ((const st_tensor *)b)->info.name);
}

static int st_cmp_key(const void *key, const void *elem) {
    return strcmp((const char *)key, ((const st_tensor *)elem)->info.name);
}

static const st_tensor *st_find(const mr_checkpoint *ck, const char *name) {
    if (!name || ck->count == 0) return NULL;
    return bsearch(name, ck->tensors, (size_t)ck->count, sizeof *ck->tensors, st_cmp_key);
}

/* Sort for bsearch; a name in two shards is an error, not a silent pick. */
static mr_status st_finalize(mr_checkpoint *ck) {
    if (ck->count > 1) qsort(ck->tensors, (size_t)ck->count, sizeof *ck->tensors, st_cmp_tensor);
    ck->bytes_total = 0;
    for (int i = 0; i < ck->count; i++) {
        const mr_tensor_info *t = &ck->tensors[i].info;
        if (i > 0 && !strcmp(t->name, ck->tensors[i - 1].info.name))
            return mr_error(MR_ERR_INPUT, "%s: tensor '%s' appears in both %s and %s", ck->path,
                            t->name, ck->files[ck->tensors[i - 1].info.file].path,
                            ck->files[t->file].path);
        ck->bytes_total += t->nbytes;
    }
    return MR_OK;
}

static mr_status st_open_single(mr_checkpoint *ck, const char *file) {
    MR_CHECK(mr_calloc((void **)&ck->files, 1, sizeof *ck->files, "checkpoint files"));
    ck->files[0].fd = -1;
    ck->nfiles = 1;
    MR_CHECK(st_open_file(&ck->files[0], file));
    MR_CHECK(st_parse_file(ck, 0));
    return st_finalize(ck);
}

/* A shard name must stay inside the checkpoint folder. */
static int st_safe_shard_name(const char *s) {
    if (!s[0] || s[0] == '/') return 0;
    for (const char *p = s;;) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (len == 2 && p[0] == '.' && p[1] == '.') return 0;
        if (!slash) return 1;
        p = slash + 1;
    }
}

static int st_cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The first tensor that weight_map sends to `shard`, for error messages. */
static const char *st_tensor_for_shard(const json_t *wm, const char *shard) {
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)wm, key, v) {
        if (!strcmp(json_string_value(v), shard)) return key;
    }
    return "?";
}

/* Open every shard the index names (each once, as file i = i-th name in
 * sorted order), then check the weight_map against what the shards hold. */
static mr_status st_open_shards(mr_checkpoint *ck, const char *index, const char *dir,
                                const json_t *wm) {
    size_t n = json_object_size(wm);
    const char **names;
    MR_CHECK(mr_calloc((void **)&names, n, sizeof *names, "shard names"));
    mr_status st = MR_OK;
    size_t k = 0;
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)wm, key, v) {
        if (!json_is_string(v)) {
            st = mr_error(MR_ERR_INPUT, "%s: weight_map value for tensor '%s' is not a string",
                          index, key);
            goto free_names;
        }
        if (!st_safe_shard_name(json_string_value(v))) {
            st = mr_error(MR_ERR_INPUT, "%s: weight_map maps tensor '%s' to '%s', which is not a "
                          "file inside %s", index, key, json_string_value(v), dir);
            goto free_names;
        }
        names[k++] = json_string_value(v);
    }
    qsort(names, n, sizeof *names, st_cmp_str);
    size_t nuniq = 0;
    for (size_t i = 0; i < n; i++)
        if (nuniq == 0 || strcmp(names[nuniq - 1], names[i])) names[nuniq++] = names[i];
    if (nuniq > INT_MAX) {
        st = mr_error(MR_ERR_INPUT, "%s: too many shard files", index);
        goto free_names;
    }

    MR_CHECK_GOTO(mr_calloc((void **)&ck->files, nuniq, sizeof *ck->files, "checkpoint files"),
                  st, free_names);
    for (size_t i = 0; i < nuniq; i++) ck->files[i].fd = -1;
    ck->nfiles = (int)nuniq;
    for (size_t i = 0; i < nuniq; i++) {
        char *file;
        MR_CHECK_GOTO(st_join(&file, dir, names[i]), st, free_names);
        st = st_open_file(&ck->files[i], file);
        free(file);
        if (st != MR_OK) {
            st = mr_error_context(st, "%s: shard '%s' (named for tensor '%s')", index, names[i],
                                  st_tensor_for_shard(wm, names[i]));
            goto free_names;
        }
        MR_CHECK_GOTO(st_parse_file(ck, (int)i), st, free_names);
    }
    MR_CHECK_GOTO(st_finalize(ck), st, free_names);

    json_object_foreach((json_t *)wm, key, v) {
        const char *shard = json_string_value(v);
        const char **slot = bsearch(&shard, names, nuniq, sizeof *names, st_cmp_str);
        int fi = (int)(slot - names);
        const st_tensor *t = st_find(ck, key);
        if (!t) {
            st = mr_error(MR_ERR_INPUT, "%s: weight_map maps tensor '%s' to %s, but %s has no "
                          "tensor '%s'", index, key, shard, ck->files[fi].path, key);
            goto free_names;
        }
        if (t->info.file != fi) {
            st = mr_error(MR_ERR_INPUT, "%s: weight_map maps tensor '%s' to %s, but it is in %s",
                          index, key, shard, ck->files[t->info.file].path);
            goto free_names;
        }
    }
free_names:
    free(names);
    return st;
}

static mr_status st_open_index(mr_checkpoint *ck, const char *index, const char *dir) {
    struct stat sb;
    if (stat(index, &sb) != 0)
        return mr_error(MR_ERR_IO, "cannot open %s: %s", index, strerror(errno));
    if ((uint64_t)sb.st_size > ST_MAX_INDEX)
        return mr_error(MR_ERR_INPUT, "%s: %" PRIu64 " bytes, larger than the %" PRIu64
                        "-byte limit for an index", index, (uint64_t)sb.st_size, ST_MAX_INDEX);
    json_error_t jerr;
    json_t *root = json_load_file(index, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return mr_error(MR_ERR_INPUT, "%s: not valid JSON at line %d, column %d: %s", index,
                        jerr.line, jerr.column, jerr.text);
    mr_status st = MR_OK;
    const json_t *wm = json_object_get(root, "weight_map");
    const json_t *meta = json_object_get(root, "metadata");
    if (!json_is_object(root))
        st = mr_error(MR_ERR_INPUT, "%s: not a JSON object", index);
    else if (!wm)
        st = mr_error(MR_ERR_INPUT, "%s: missing \"weight_map\"", index);
    else if (!json_is_object(wm) || json_object_size(wm) == 0)
        st = mr_error(MR_ERR_INPUT, "%s: \"weight_map\" is not a non-empty JSON object", index);
    else if (meta && !json_is_object(meta))
        st = mr_error(MR_ERR_INPUT, "%s: \"metadata\" is not a JSON object", index);
    else
        st = st_open_shards(ck, index, dir, wm);
    json_decref(root);
    return st;
}

static int st_ends_with(const char *s, const char *suffix) {
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && !strcmp(s + ls - lx, suffix);
}

static mr_status st_open_path(mr_checkpoint *ck, const char *path) {
    static const char index_name[] = "model.safetensors.index.json";
    static const char single_name[] = "model.safetensors";
    struct stat sb;
    if (stat(path, &sb) != 0)
        return mr_error(MR_ERR_IO, "cannot open checkpoint %s: %s", path, strerror(errno));
    mr_status st;
    if (S_ISDIR(sb.st_mode)) {
        char *index = NULL, *single = NULL;
        MR_CHECK_GOTO(st_join(&index, path, index_name), st, free_paths);
        MR_CHECK_GOTO(st_join(&single, path, single_name), st, free_paths);
        if (st_is_file(index))
            st = st_open_index(ck, index, path);
        else if (st_is_file(single))
            st = st_open_single(ck, single);
        else
            st = mr_error(MR_ERR_INPUT, "checkpoint folder %s has neither %s nor %s", path,
                          index_name, single_name);
    free_paths:
        free(index);
        free(single);
        return st;
    }
    if (!st_ends_with(path, ".index.json")) return st_open_single(ck, path);
    /* An index file given directly: its shards sit next to it. */
    char *dir;
    MR_CHECK(st_strdup(&dir, path));
    char *slash = strrchr(dir, '/');
    if (slash == dir) slash[1] = 0;
    else if (slash) *slash = 0;
    else strcpy(dir, ".");
    st = st_open_index(ck, path, dir);
    free(dir);
    return st;
}

mr_status mr_checkpoint_open(mr_checkpoint **out, const char *path) {
    *out = NULL;
    mr_checkpoint *ck;
    MR_CHECK(mr_calloc((void **)&ck, 1, sizeof *ck, "a checkpoint"));
    atomic_init(&ck->bytes_read, 0);
    mr_status st = st_strdup(&ck->path, path);
    if (st == MR_OK) st = st_open_path(ck, path);
    if (st != MR_OK) {
        mr_checkpoint_close(ck);
        return st;
    }
    *out = ck;
    return MR_OK;
}

void mr_checkpoint_close(mr_checkpoint *ck) {
    if (!ck) return;
    for (int i = 0; i < ck->nfiles; i++) {
        if (ck->files[i].fd >= 0) close(ck->files[i].fd);
        free(ck->files[i].path);
    }
    for (int i = 0; i < ck->count; i++) free((char *)ck->tensors[i].info.name);
    free(ck->files);
    free(ck->tensors);
    free(ck->path);
    free(ck);
}

int mr_checkpoint_count(const mr_checkpoint *ck) { return ck->count; }

const mr_tensor_info *mr_checkpoint_tensor(const mr_checkpoint *ck, int i) {
    return (i >= 0 && i < ck->count) ? &ck->tensors[i].info : NULL;
}

const mr_tensor_info *mr_checkpoint_find(const mr_checkpoint *ck, const char *name) {
    const st_tensor *t = st_find(ck, name);
    return t ? &t->info : NULL;
}

const char *mr_checkpoint_file_path(const mr_checkpoint *ck, int file) {
    return (file >= 0 && file < ck->nfiles) ? ck->files[file].path : NULL;
}

uint64_t mr_checkpoint_bytes_read(const mr_checkpoint *ck) {
    return atomic_load(&((mr_checkpoint *)ck)->bytes_read);
}

uint64_t mr_checkpoint_bytes_total(const mr_checkpoint *ck) { return ck->bytes_total; }

/* ---- reading ------------------------------------------------------------- */

/* n elements of t starting at byte `off` of its file into dst[0, n). */
static mr_status st_read_run(mr_checkpoint *ck, const st_tensor *t, uint64_t off, size_t n,
                             float *dst) {
    const st_file *f = &ck->files[t->info.file];
    size_t esz = (size_t)mr_dtype_size(t->info.dtype);
    /* 2-byte data lands in the back half of dst and is widened in place. */
    void *raw = esz == 4 ? (void *)dst : (void *)((unsigned char *)dst + 2 * n);
    mr_status st = st_pread_full(f, off, raw, n * esz);
    if (st != MR_OK) return mr_error_context(st, "reading tensor '%s'", t->info.name);
    atomic_fetch_add(&ck->bytes_read, (uint64_t)(n * esz));
    if (esz == 2) st_widen_in_place(dst, n, t->info.dtype);
    return MR_OK;
}

mr_status mr_checkpoint_read_f32(mr_checkpoint *ck, const char *name, int ndim,
                                 const int64_t *shape, mr_slice slice, float *dst) {
    const st_tensor *t = st_find(ck, name);
    if (!t) return mr_error(MR_ERR_INPUT, "tensor '%s' not found in %s", name, ck->path);
    const mr_tensor_info *ti = &t->info;
    const char *path = ck->files[ti->file].path;
    char have[ST_SHAPE_STR], want[ST_SHAPE_STR];
    st_fmt_shape(have, sizeof have, ti->ndim, ti->shape);
    if (ndim != ti->ndim || (ndim > 0 && memcmp(shape, ti->shape, (size_t)ndim * sizeof *shape))) {
        st_fmt_shape(want, sizeof want, ndim, shape);
        return mr_error(MR_ERR_INPUT, "tensor '%s' in %s has shape %s, expected %s", name, path,
                        have, want);
    }
    if (ti->dtype == MR_DTYPE_COUNT)
        return mr_error(MR_ERR_UNSUPPORTED, "tensor '%s' in %s has dtype %s; moerun reads only "
                        "F32, F16 and BF16", name, path, t->dtype_name);

    /* The slice is `runs` contiguous runs of run_elems elements, run r
     * starting at element r * stride + first of the tensor. */
    uint64_t nelem = ti->nbytes / (uint64_t)mr_dtype_size(ti->dtype);
    uint64_t runs = 1, run_elems = nelem, stride = 0, first = 0;
    if (slice.axis != -1) {
        int axis = slice.axis;
        if (axis < 0 || axis >= ti->ndim)
            return mr_error(MR_ERR_INPUT, "slice axis %d is out of range for tensor '%s' in %s "
                            "with shape %s", axis, name, path, have);
        int64_t dim = ti->shape[axis];
        if (slice.start < 0 || slice.count < 0 || slice.start > dim - slice.count)
            return mr_error(MR_ERR_INPUT, "slice [%" PRId64 ", %" PRId64 ") along axis %d is out "
                            "of range for tensor '%s' in %s with shape %s", slice.start,
                            slice.start + slice.count, axis, name, path, have);
        /* No overflow: the whole element count was checked at open. */
        uint64_t outer = 1, inner = 1;
        for (int i = 0; i < axis; i++) outer *= (uint64_t)ti->shape[i];
        for (int i = axis + 1; i < ti->ndim; i++) inner *= (uint64_t)ti->shape[i];
        if (slice.count == dim) { /* the whole tensor: one run */
            runs = 1;
            run_elems = nelem;
        } else { /* one run per outer index; outer == 1 makes it a single run */
            runs = outer;
            run_elems = (uint64_t)slice.count * inner;
            stride = (uint64_t)dim * inner;
            first = (uint64_t)slice.start * inner;
        }
    }
    if (run_elems == 0) return MR_OK;
    uint64_t esz = (uint64_t)mr_dtype_size(ti->dtype);
    for (uint64_t r = 0; r < runs; r++) {
        uint64_t off = ti->offset + (r * stride + first) * esz;
        MR_CHECK(st_read_run(ck, t, off, (size_t)run_elems, dst + r * run_elems));
    }
    return MR_OK;
}
