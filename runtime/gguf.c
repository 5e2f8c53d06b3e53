/* GGUF files (see gguf.h): the header parser, tensor reads with slicing and
 * the llama q/k un-permutation and the GGUF <-> Hugging Face name map (the
 * metadata -> mr_model_config mapping is in gguf-config.c).
 *
 * The header is parsed through a small buffered cursor over pread: every
 * length is compared with the bytes left in the file before anything is
 * allocated or read, so a hostile count fails with a message instead of a
 * huge allocation.  Keys and tensors are indexed by sorted arrays for
 * bsearch; duplicates are errors.  Tensor data is read only on request,
 * into the caller's buffer: the raw blocks land in the back of dst and are
 * dequantized front to back in place (see gg_read_aligned), so no tensor is
 * held twice. */
#define _GNU_SOURCE
#define _FILE_OFFSET_BITS 64
#include "runtime/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c assumes a little-endian host"
#endif

#define GG_MAX_PREAD ((size_t)1 << 30) /* Linux returns at most ~2 GiB per read */
#define GG_CURSOR_BUF ((size_t)1 << 16)
#define GG_BOUNCE_BYTES ((size_t)1 << 16) /* raw bytes per step of an unaligned read */
#define GG_MAX_BLOCK_BYTES 256            /* largest block we dequantize is Q6_K's 210 */
#define GG_NAME_MAX 256
#define GG_SHAPE_STR 128

typedef struct gg_kv {
    char *key;
    mr_gguf_type type;
    mr_gguf_type elem; /* arrays: element type */
    uint64_t at;       /* byte offset of the key/value pair */
    union {
        uint64_t u;
        int64_t i;
        double f;
    } num;              /* integer, float and bool scalars */
    mr_gguf_string str; /* STRING */
    mr_gguf_array arr;  /* ARRAY; arr.data is owned */
    char *blob;         /* bytes of a string array */
} gg_kv;

typedef struct gg_tensor {
    mr_gguf_tensor_info info; /* first, so &t->info is what callers see */
    uint64_t at;              /* byte offset of its tensor info */
} gg_tensor;

struct mr_gguf {
    char *path;
    int fd;
    uint64_t size;
    uint32_t version;
    uint64_t alignment, data_start;
    gg_kv *kvs;
    int n_kv;
    gg_kv **kv_sorted;
    gg_tensor *tensors;
    int n_tensors;
    gg_tensor **sorted;
    uint64_t bytes_total;
    _Atomic uint64_t bytes_read;
};

/* Scalar value sizes in bytes; 0 for STRING and ARRAY. */
static const int gg_type_size[MR_GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *mr_gguf_type_name(mr_gguf_type t) {
    static const char *names[MR_GGUF_TYPE_COUNT] = {
        "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
        "bool", "string", "array", "uint64", "int64", "float64"};
    return ((int)t >= 0 && t < MR_GGUF_TYPE_COUNT) ? names[t] : "?";
}

static int gg_is_int(mr_gguf_type t) {
    return t <= MR_GGUF_TYPE_INT32 || t == MR_GGUF_TYPE_UINT64 || t == MR_GGUF_TYPE_INT64;
}
static int gg_is_signed(mr_gguf_type t) {
    return t == MR_GGUF_TYPE_INT8 || t == MR_GGUF_TYPE_INT16 || t == MR_GGUF_TYPE_INT32 ||
           t == MR_GGUF_TYPE_INT64;
}

static mr_status gg_pread_full(const mr_gguf *g, uint64_t off, void *buf, size_t len) {
    unsigned char *p = buf;
    while (len > 0) {
        size_t chunk = len < GG_MAX_PREAD ? len : GG_MAX_PREAD;
        ssize_t r = pread(g->fd, p, chunk, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return mr_error(MR_ERR_IO, "%s: read of %zu bytes at byte %" PRIu64 " failed: %s", g->path, chunk,
                            off, strerror(errno));
        }
        if (r == 0)
            return mr_error(MR_ERR_IO, "%s: unexpected end of file at byte %" PRIu64
                            " (%zu bytes still to read; was the file truncated after open?)", g->path, off, len);
        p += r;
        off += (uint64_t)r;
        len -= (size_t)r;
    }
    return MR_OK;
}

/* ---- the header cursor -------------------------------------------------- */

typedef struct gg_cur {
    mr_gguf *g;
    uint64_t pos;
    unsigned char *buf;
    uint64_t boff; /* buf holds bytes [boff, boff + blen) of the file */
    size_t blen;
    char what[GG_NAME_MAX + 32]; /* "metadata key 'x'", "tensor 'y'": the subject of messages */
} gg_cur;

static uint64_t cur_left(const gg_cur *c) { return c->g->size - c->pos; }

static mr_status cur_truncated(gg_cur *c, uint64_t need, const char *item) {
    return mr_error(MR_ERR_INPUT, "%s: truncated at byte %" PRIu64 ": %s of %s needs %" PRIu64
                    " bytes, but the file is %" PRIu64 " bytes", c->g->path, c->pos, item, c->what, need,
                    c->g->size);
}

static mr_status cur_read(gg_cur *c, void *dst, uint64_t n, const char *item) {
    if (n > cur_left(c)) return cur_truncated(c, n, item);
    unsigned char *out = dst;
    while (n > 0) {
        if (c->pos >= c->boff && c->pos < c->boff + c->blen) {
            size_t at = (size_t)(c->pos - c->boff), k = c->blen - at;
            if (k > n) k = (size_t)n;
            memcpy(out, c->buf + at, k);
            out += k;
            c->pos += k;
            n -= k;
        } else if (n >= GG_CURSOR_BUF) { /* large reads bypass the buffer */
            MR_CHECK(gg_pread_full(c->g, c->pos, out, (size_t)n));
            c->pos += n;
            n = 0;
        } else {
            uint64_t left = cur_left(c);
            size_t fill = left < GG_CURSOR_BUF ? (size_t)left : GG_CURSOR_BUF;
            MR_CHECK(gg_pread_full(c->g, c->pos, c->buf, fill));
            c->boff = c->pos;
            c->blen = fill;
        }
    }
    return MR_OK;
}

static mr_status cur_u32(gg_cur *c, uint32_t *v, const char *item) { return cur_read(c, v, 4, item); }
static mr_status cur_u64(gg_cur *c, uint64_t *v, const char *item) { return cur_read(c, v, 8, item); }

/* A GGUF string (uint64 length, bytes) as a new NUL-terminated copy. */
static mr_status cur_string(gg_cur *c, char **out, uint64_t *len_out, const char *item) {
    uint64_t at = c->pos, len;
    MR_CHECK(cur_u64(c, &len, item));
    if (len > cur_left(c))
        return mr_error(MR_ERR_INPUT, "%s: %s of %s at byte %" PRIu64 " has length %" PRIu64
                        ", past the end of the file (%" PRIu64 " bytes)", c->g->path, item, c->what, at, len,
                        c->g->size);
    char *s;
    MR_CHECK(mr_malloc((void **)&s, (size_t)len + 1, "a GGUF string"));
    mr_status st = cur_read(c, s, len, item);
    if (st != MR_OK) {
        free(s);
        return st;
    }
    s[len] = 0;
    *out = s;
    if (len_out) *len_out = len;
    return MR_OK;
}

/* Names and keys are compared as C strings, so an embedded NUL would make
 * two different names look equal. */
static mr_status cur_name(gg_cur *c, char **out, const char *item) {
    uint64_t at = c->pos, len;
    MR_CHECK(cur_string(c, out, &len, item));
    if (strlen(*out) != len) {
        free(*out);
        *out = NULL;
        return mr_error(MR_ERR_INPUT, "%s: %s of %s at byte %" PRIu64 " contains a NUL byte", c->g->path, item,
                        c->what, at);
    }
    return MR_OK;
}

/* ---- metadata ------------------------------------------------------------ */

static void gg_kv_free(gg_kv *kv) {
    free(kv->key);
    free((char *)kv->str.str);
    free((void *)kv->arr.data);
    free(kv->blob);
}

static mr_status gg_read_scalar(gg_cur *c, gg_kv *kv, mr_gguf_type t) {
    unsigned char b[8] = {0};
    MR_CHECK(cur_read(c, b, (uint64_t)gg_type_size[t], "the value"));
    switch (t) {
    case MR_GGUF_TYPE_UINT8: kv->num.u = b[0]; break;
    case MR_GGUF_TYPE_BOOL: kv->num.u = b[0] != 0; break;
    case MR_GGUF_TYPE_INT8: kv->num.i = (int8_t)b[0]; break;
    case MR_GGUF_TYPE_UINT16: { uint16_t v; memcpy(&v, b, 2); kv->num.u = v; break; }
    case MR_GGUF_TYPE_INT16: { int16_t v; memcpy(&v, b, 2); kv->num.i = v; break; }
    case MR_GGUF_TYPE_UINT32: { uint32_t v; memcpy(&v, b, 4); kv->num.u = v; break; }
    case MR_GGUF_TYPE_INT32: { int32_t v; memcpy(&v, b, 4); kv->num.i = v; break; }
    case MR_GGUF_TYPE_FLOAT32: { float v; memcpy(&v, b, 4); kv->num.f = v; break; }
    case MR_GGUF_TYPE_UINT64: memcpy(&kv->num.u, b, 8); break;
    case MR_GGUF_TYPE_INT64: memcpy(&kv->num.i, b, 8); break;
    case MR_GGUF_TYPE_FLOAT64: memcpy(&kv->num.f, b, 8); break;
    default: return mr_error(MR_ERR_INTERNAL, "gg_read_scalar: type %d", (int)t);
    }
    return MR_OK;
}

/* An array of n strings: one blob holds every string (each NUL-terminated),
 * the elements point into it once the blob stops growing. */
static mr_status gg_read_string_array(gg_cur *c, gg_kv *kv, uint64_t n) {
    mr_gguf_string *el;
    MR_CHECK(mr_calloc((void **)&el, n ? (size_t)n : 1, sizeof *el, "a GGUF string array"));
    kv->arr.data = el;
    size_t used = 0, cap = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t at = c->pos, len;
        MR_CHECK(cur_u64(c, &len, "a string length in the array"));
        if (len > cur_left(c))
            return mr_error(MR_ERR_INPUT, "%s: string %" PRIu64 " of the array %s at byte %" PRIu64
                            " has length %" PRIu64 ", past the end of the file (%" PRIu64 " bytes)",
                            c->g->path, i, c->what, at, len, c->g->size);
        if (used + len + 1 > cap) { /* bounded: the bytes come from the file */
            size_t want = cap ? cap : 4096;
            while (want < used + len + 1) want *= 2;
            char *grown = realloc(kv->blob, want);
            if (!grown) return mr_error(MR_ERR_NOMEM, "out of memory reading %s (%zu bytes)", c->what, want);
            kv->blob = grown;
            cap = want;
        }
        MR_CHECK(cur_read(c, kv->blob + used, len, "a string in the array"));
        kv->blob[used + len] = 0;
        el[i].str = (const char *)(uintptr_t)used; /* an offset until the blob is final */
        el[i].len = len;
        used += (size_t)len + 1;
    }
    for (uint64_t i = 0; i < n; i++) el[i].str = kv->blob + (uintptr_t)el[i].str;
    return MR_OK;
}

static mr_status gg_read_array(gg_cur *c, gg_kv *kv) {
    uint64_t at = c->pos;
    uint32_t et;
    uint64_t n;
    MR_CHECK(cur_u32(c, &et, "the array element type"));
    if (et >= MR_GGUF_TYPE_COUNT)
        return mr_error(MR_ERR_INPUT, "%s: %s at byte %" PRIu64 ": unknown array element type %" PRIu32,
                        c->g->path, c->what, at, et);
    if (et == MR_GGUF_TYPE_ARRAY)
        return mr_error(MR_ERR_UNSUPPORTED, "%s: %s at byte %" PRIu64 ": arrays of arrays are not supported",
                        c->g->path, c->what, at);
    kv->elem = (mr_gguf_type)et;
    kv->arr.type = kv->elem;
    MR_CHECK(cur_u64(c, &n, "the array length"));
    /* Each element needs at least min_bytes of file: refuse counts the
     * file cannot hold before allocating anything for them. */
    uint64_t min_bytes = et == MR_GGUF_TYPE_STRING ? 8 : (uint64_t)gg_type_size[et];
    if (n > cur_left(c) / min_bytes)
        return mr_error(MR_ERR_INPUT, "%s: %s at byte %" PRIu64 ": array of %" PRIu64 " %s elements runs past "
                        "the end of the file (%" PRIu64 " bytes)", c->g->path, c->what, at, n,
                        mr_gguf_type_name(kv->elem), c->g->size);
    kv->arr.n = n;
    if (et == MR_GGUF_TYPE_STRING) return gg_read_string_array(c, kv, n);
    size_t bytes = (size_t)(n * min_bytes);
    void *data;
    MR_CHECK(mr_malloc(&data, bytes ? bytes : 1, "a GGUF array"));
    kv->arr.data = data;
    return cur_read(c, data, bytes, "the array elements");
}

static mr_status gg_read_kv(gg_cur *c, gg_kv *kv, uint64_t index) {
    kv->at = c->pos;
    snprintf(c->what, sizeof c->what, "metadata key #%" PRIu64, index);
    MR_CHECK(cur_name(c, &kv->key, "the key"));
    snprintf(c->what, sizeof c->what, "metadata key '%.*s'", GG_NAME_MAX, kv->key);
    uint64_t at = c->pos;
    uint32_t t;
    MR_CHECK(cur_u32(c, &t, "the value type"));
    if (t >= MR_GGUF_TYPE_COUNT)
        return mr_error(MR_ERR_INPUT, "%s: %s: unknown value type %" PRIu32 " at byte %" PRIu64, c->g->path,
                        c->what, t, at);
    kv->type = (mr_gguf_type)t;
    if (t == MR_GGUF_TYPE_STRING) {
        char *s;
        MR_CHECK(cur_string(c, &s, &kv->str.len, "the string value"));
        kv->str.str = s;
        return MR_OK;
    }
    if (t == MR_GGUF_TYPE_ARRAY) return gg_read_array(c, kv);
    return gg_read_scalar(c, kv, kv->type);
}

static int gg_cmp_kv(const void *a, const void *b) {
    return strcmp((*(const gg_kv *const *)a)->key, (*(const gg_kv *const *)b)->key);
}

static int gg_cmp_kv_key(const void *key, const void *elem) {
    return strcmp((const char *)key, (*(const gg_kv *const *)elem)->key);
}

static const gg_kv *gg_find_kv(const mr_gguf *g, const char *key) {
    if (!key || g->n_kv == 0) return NULL;
    gg_kv *const *p = bsearch(key, g->kv_sorted, (size_t)g->n_kv, sizeof *g->kv_sorted, gg_cmp_kv_key);
    return p ? *p : NULL;
}

/* ---- tensor infos --------------------------------------------------------- */

static void gg_fmt_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t pos = 0;
    buf[0] = 0;
    for (int i = 0; i < ndim && pos < cap; i++) {
        int n = snprintf(buf + pos, cap - pos, "%s%" PRId64, i ? ", " : "[", shape[i]);
        if (n < 0) return;
        pos += (size_t)n;
    }
    if (pos < cap) snprintf(buf + pos, cap - pos, "%s]", ndim > 0 ? "" : "[");
}

static mr_status gg_read_tensor_info(gg_cur *c, gg_tensor *t, uint64_t index) {
    const char *path = c->g->path;
    t->at = c->pos;
    snprintf(c->what, sizeof c->what, "tensor info #%" PRIu64, index);
    char *name;
    MR_CHECK(cur_name(c, &name, "the tensor name"));
    t->info.name = name;
    snprintf(c->what, sizeof c->what, "tensor '%.*s'", GG_NAME_MAX, name);
    uint64_t at = c->pos;
    uint32_t nd;
    MR_CHECK(cur_u32(c, &nd, "n_dims"));
    if (nd > MR_GGUF_MAX_DIMS)
        return mr_error(MR_ERR_INPUT, "%s: %s: n_dims = %" PRIu32 " at byte %" PRIu64 ", more than %d", path,
                        c->what, nd, at, MR_GGUF_MAX_DIMS);
    t->info.ndim = (int)nd;
    uint64_t nelem = 1;
    for (int d = 0; d < MR_GGUF_MAX_DIMS; d++) t->info.ne[d] = 1;
    for (uint32_t d = 0; d < nd; d++) {
        uint64_t ne;
        at = c->pos;
        MR_CHECK(cur_u64(c, &ne, "a dimension"));
        if (ne > (uint64_t)INT64_MAX)
            return mr_error(MR_ERR_INPUT, "%s: %s: ne[%" PRIu32 "] = %" PRIu64 " at byte %" PRIu64
                            " is out of range", path, c->what, d, ne, at);
        if (ne != 0 && nelem > (uint64_t)INT64_MAX / ne)
            return mr_error(MR_ERR_INPUT, "%s: %s: the element count overflows at ne[%" PRIu32 "] = %" PRIu64
                            " (byte %" PRIu64 ")", path, c->what, d, ne, at);
        nelem *= ne;
        t->info.ne[d] = (int64_t)ne;
    }
    for (int i = 0; i < t->info.ndim; i++) t->info.shape[i] = t->info.ne[t->info.ndim - 1 - i];
    for (int i = t->info.ndim; i < MR_GGUF_MAX_DIMS; i++) t->info.shape[i] = 1;
    at = c->pos;
    uint32_t type;
    MR_CHECK(cur_u32(c, &type, "the ggml type"));
    int blck = type < MR_GGML_TYPE_COUNT ? mr_ggml_block_elems((int)type) : 0;
    int bbytes = blck ? mr_ggml_block_bytes((int)type) : 0;
    if (blck == 0)
        return mr_error(MR_ERR_INPUT, "%s: %s: unknown ggml type %" PRIu32 " at byte %" PRIu64, path, c->what,
                        type, at);
    t->info.type = (mr_ggml_type)type;
    if (t->info.ne[0] % blck)
        return mr_error(MR_ERR_INPUT, "%s: %s: row length ne[0] = %" PRId64 " is not a multiple of the %s "
                        "block size %d", path, c->what, t->info.ne[0], mr_ggml_type_name((int)type), blck);
    /* bytes = blocks * block bytes, blocks = nelem / blck (rows are whole blocks) */
    uint64_t blocks = nelem / (uint64_t)blck;
    if (blocks > UINT64_MAX / (uint64_t)bbytes)
        return mr_error(MR_ERR_INPUT, "%s: %s: the byte size of %" PRIu64 " %s elements overflows", path,
                        c->what, nelem, mr_ggml_type_name((int)type));
    t->info.nbytes = blocks * (uint64_t)bbytes;
    MR_CHECK(cur_u64(c, &t->info.offset, "the data offset"));
    return MR_OK;
}

static int gg_cmp_tensor(const void *a, const void *b) {
    return strcmp((*(const gg_tensor *const *)a)->info.name, (*(const gg_tensor *const *)b)->info.name);
}

static int gg_cmp_tensor_key(const void *key, const void *elem) {
    return strcmp((const char *)key, (*(const gg_tensor *const *)elem)->info.name);
}

static const gg_tensor *gg_find_tensor(const mr_gguf *g, const char *name) {
    if (!name || g->n_tensors == 0) return NULL;
    gg_tensor *const *p = bsearch(name, g->sorted, (size_t)g->n_tensors, sizeof *g->sorted, gg_cmp_tensor_key);
    return p ? *p : NULL;
}

/* Offsets are relative to the data section; place each tensor absolutely
 * and check that its bytes lie inside the file. */
static mr_status gg_place_tensors(mr_gguf *g) {
    if (g->n_tensors > 0 && g->data_start > g->size)
        return mr_error(MR_ERR_INPUT, "%s: the data section starts at byte %" PRIu64 ", past the end of the file "
                        "(%" PRIu64 " bytes)", g->path, g->data_start, g->size);
    uint64_t room = g->n_tensors > 0 ? g->size - g->data_start : 0;
    g->bytes_total = 0;
    for (int i = 0; i < g->n_tensors; i++) {
        mr_gguf_tensor_info *t = &g->tensors[i].info;
        uint64_t off = t->offset;
        if (off % g->alignment)
            return mr_error(MR_ERR_INPUT, "%s: tensor '%s' (info at byte %" PRIu64 "): data offset %" PRIu64
                            " is not a multiple of the alignment %" PRIu64, g->path, t->name, g->tensors[i].at,
                            off, g->alignment);
        if (off > room || t->nbytes > room - off) {
            char shape[GG_SHAPE_STR];
            gg_fmt_shape(shape, sizeof shape, t->ndim, t->shape);
            return mr_error(MR_ERR_INPUT, "%s: tensor '%s' (info at byte %" PRIu64 "): data offset %" PRIu64
                            " + %" PRIu64 " bytes (%s %s) runs past the end of the file: the data section "
                            "holds %" PRIu64 " bytes from byte %" PRIu64, g->path, t->name, g->tensors[i].at,
                            off, t->nbytes, mr_ggml_type_name(t->type), shape, room, g->data_start);
        }
        t->offset = g->data_start + off;
        g->bytes_total += t->nbytes;
    }
    return MR_OK;
}

static mr_status gg_index(mr_gguf *g) {
    if (g->n_kv > 0) {
        MR_CHECK(mr_calloc((void **)&g->kv_sorted, (size_t)g->n_kv, sizeof *g->kv_sorted, "GGUF keys"));
        for (int i = 0; i < g->n_kv; i++) g->kv_sorted[i] = &g->kvs[i];
        qsort(g->kv_sorted, (size_t)g->n_kv, sizeof *g->kv_sorted, gg_cmp_kv);
        for (int i = 1; i < g->n_kv; i++)
            if (!strcmp(g->kv_sorted[i]->key, g->kv_sorted[i - 1]->key))
                return mr_error(MR_ERR_INPUT, "%s: metadata key '%s' appears twice (at bytes %" PRIu64 " and %"
                                PRIu64 ")", g->path, g->kv_sorted[i]->key, g->kv_sorted[i - 1]->at,
                                g->kv_sorted[i]->at);
    }
    if (g->n_tensors > 0) {
        MR_CHECK(mr_calloc((void **)&g->sorted, (size_t)g->n_tensors, sizeof *g->sorted, "GGUF tensors"));
        for (int i = 0; i < g->n_tensors; i++) g->sorted[i] = &g->tensors[i];
        qsort(g->sorted, (size_t)g->n_tensors, sizeof *g->sorted, gg_cmp_tensor);
        for (int i = 1; i < g->n_tensors; i++)
            if (!strcmp(g->sorted[i]->info.name, g->sorted[i - 1]->info.name))
                return mr_error(MR_ERR_INPUT, "%s: tensor '%s' appears twice (infos at bytes %" PRIu64 " and %"
                                PRIu64 ")", g->path, g->sorted[i]->info.name, g->sorted[i - 1]->at,
                                g->sorted[i]->at);
    }
    return MR_OK;
}

/* general.alignment: a uint32 power of two when present. */
static mr_status gg_alignment(mr_gguf *g) {
    g->alignment = MR_GGUF_DEFAULT_ALIGNMENT;
    const gg_kv *kv = gg_find_kv(g, "general.alignment");
    if (!kv) return MR_OK;
    if (kv->type != MR_GGUF_TYPE_UINT32)
        return mr_error(MR_ERR_INPUT, "%s: metadata key 'general.alignment' (byte %" PRIu64 ") has type %s, "
                        "expected uint32", g->path, kv->at, mr_gguf_type_name(kv->type));
    if (kv->num.u == 0 || (kv->num.u & (kv->num.u - 1)))
        return mr_error(MR_ERR_INPUT, "%s: metadata key 'general.alignment' (byte %" PRIu64 ") = %" PRIu64
                        " is not a power of two", g->path, kv->at, kv->num.u);
    g->alignment = kv->num.u;
    return MR_OK;
}

static mr_status gg_parse(mr_gguf *g) {
    gg_cur c = {.g = g, .pos = 0};
    snprintf(c.what, sizeof c.what, "the header");
    MR_CHECK(mr_malloc((void **)&c.buf, GG_CURSOR_BUF, "the GGUF read buffer"));
    mr_status st;
    unsigned char magic[4];
    MR_CHECK_GOTO(cur_read(&c, magic, 4, "the magic"), st, out);
    if (memcmp(magic, "GGUF", 4)) {
        st = mr_error(MR_ERR_INPUT, "%s: not a GGUF file: bytes 0-3 are %02x %02x %02x %02x, expected \"GGUF\"",
                      g->path, magic[0], magic[1], magic[2], magic[3]);
        goto out;
    }
    MR_CHECK_GOTO(cur_u32(&c, &g->version, "the version"), st, out);
    if (g->version != 2 && g->version != 3) {
        uint32_t v = g->version, sw = (v >> 24) | ((v >> 8) & 0xff00) | ((v << 8) & 0xff0000) | (v << 24);
        st = mr_error(MR_ERR_UNSUPPORTED, "%s: GGUF version %" PRIu32 " at byte 4 is not supported (only 2 and "
                      "3)%s", g->path, v, (sw == 2 || sw == 3) ? "; this is a big-endian file" : "");
        goto out;
    }
    uint64_t n_tensors, n_kv;
    MR_CHECK_GOTO(cur_u64(&c, &n_tensors, "the tensor count"), st, out);
    MR_CHECK_GOTO(cur_u64(&c, &n_kv, "the key/value count"), st, out);
    /* Smallest possible entries: a key/value is an 8-byte length, a 4-byte
     * type and a 1-byte value; a tensor info is 8 + 4 + 4 + 8 bytes. */
    if (n_kv > cur_left(&c) / 13 || n_kv > INT_MAX) {
        st = mr_error(MR_ERR_INPUT, "%s: key/value count %" PRIu64 " at byte 16 is more than the %" PRIu64
                      "-byte file can hold", g->path, n_kv, g->size);
        goto out;
    }
    if (n_tensors > cur_left(&c) / 24 || n_tensors > INT_MAX) {
        st = mr_error(MR_ERR_INPUT, "%s: tensor count %" PRIu64 " at byte 8 is more than the %" PRIu64
                      "-byte file can hold", g->path, n_tensors, g->size);
        goto out;
    }
    MR_CHECK_GOTO(mr_calloc((void **)&g->kvs, n_kv ? (size_t)n_kv : 1, sizeof *g->kvs, "GGUF metadata"), st, out);
    for (uint64_t i = 0; i < n_kv; i++) {
        g->n_kv = (int)i + 1; /* so close() frees a partly read entry */
        MR_CHECK_GOTO(gg_read_kv(&c, &g->kvs[i], i), st, out);
    }
    MR_CHECK_GOTO(mr_calloc((void **)&g->tensors, n_tensors ? (size_t)n_tensors : 1, sizeof *g->tensors,
                            "GGUF tensor infos"), st, out);
    for (uint64_t i = 0; i < n_tensors; i++) {
        g->n_tensors = (int)i + 1;
        MR_CHECK_GOTO(gg_read_tensor_info(&c, &g->tensors[i], i), st, out);
    }
    MR_CHECK_GOTO(gg_index(g), st, out);
    MR_CHECK_GOTO(gg_alignment(g), st, out);
    g->data_start = c.pos + (g->alignment - c.pos % g->alignment) % g->alignment;
    st = gg_place_tensors(g);
out:
    free(c.buf);
    return st;
}

mr_status mr_gguf_open(mr_gguf **out, const char *path) {
    *out = NULL;
    mr_gguf *g;
    MR_CHECK(mr_calloc((void **)&g, 1, sizeof *g, "a GGUF file"));
    g->fd = -1;
    atomic_init(&g->bytes_read, 0);
    mr_status st = MR_OK;
    g->path = strdup(path);
    if (!g->path) {
        st = mr_error(MR_ERR_NOMEM, "out of memory opening %s", path);
        goto fail;
    }
    g->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (g->fd < 0) {
        st = mr_error(MR_ERR_IO, "cannot open %s: %s", path, strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(g->fd, &sb) != 0) {
        st = mr_error(MR_ERR_IO, "cannot stat %s: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = mr_error(MR_ERR_INPUT, "%s is not a regular file", path);
        goto fail;
    }
    g->size = (uint64_t)sb.st_size;
    MR_CHECK_GOTO(gg_parse(g), st, fail);
    *out = g;
    return MR_OK;
fail:
    mr_gguf_close(g);
    return st;
}

void mr_gguf_close(mr_gguf *g) {
    if (!g) return;
    if (g->fd >= 0) close(g->fd);
    for (int i = 0; i < g->n_kv; i++) gg_kv_free(&g->kvs[i]);
    for (int i = 0; i < g->n_tensors; i++) free((char *)g->tensors[i].info.name);
    free(g->kvs);
    free(g->kv_sorted);
    free(g->tensors);
    free(g->sorted);
    free(g->path);
    free(g);
}

const char *mr_gguf_path(const mr_gguf *g) { return g->path; }
uint32_t mr_gguf_version(const mr_gguf *g) { return g->version; }
uint64_t mr_gguf_file_size(const mr_gguf *g) { return g->size; }
uint64_t mr_gguf_alignment(const mr_gguf *g) { return g->alignment; }
uint64_t mr_gguf_data_offset(const mr_gguf *g) { return g->data_start; }
int mr_gguf_kv_count(const mr_gguf *g) { return g->n_kv; }
const char *mr_gguf_kv_key(const mr_gguf *g, int i) { return (i >= 0 && i < g->n_kv) ? g->kvs[i].key : NULL; }
mr_gguf_type mr_gguf_kv_type(const mr_gguf *g, int i) {
    return (i >= 0 && i < g->n_kv) ? g->kvs[i].type : MR_GGUF_TYPE_COUNT;
}
int mr_gguf_find_key(const mr_gguf *g, const char *key) {
    const gg_kv *kv = gg_find_kv(g, key);
    return kv ? (int)(kv - g->kvs) : -1;
}
int mr_gguf_tensor_count(const mr_gguf *g) { return g->n_tensors; }
const mr_gguf_tensor_info *mr_gguf_tensor(const mr_gguf *g, int i) {
    return (i >= 0 && i < g->n_tensors) ? &g->tensors[i].info : NULL;
}
const mr_gguf_tensor_info *mr_gguf_find_tensor(const mr_gguf *g, const char *name) {
    const gg_tensor *t = gg_find_tensor(g, name);
    return t ? &t->info : NULL;
}
uint64_t mr_gguf_bytes_read(const mr_gguf *g) { return atomic_load(&((mr_gguf *)g)->bytes_read); }
uint64_t mr_gguf_bytes_total(const mr_gguf *g) { return g->bytes_total; }

/* ---- typed getters -------------------------------------------------------- */

static mr_status gg_get(const mr_gguf *g, const char *key, const gg_kv **out) {
    *out = gg_find_kv(g, key);
    if (!*out) return mr_error(MR_ERR_INPUT, "%s: metadata key '%s' not found", g->path, key);
    return MR_OK;
}

static mr_status gg_wrong_type(const mr_gguf *g, const gg_kv *kv, const char *want) {
    return mr_error(MR_ERR_INPUT, "%s: metadata key '%s' (byte %" PRIu64 ") has type %s, expected %s", g->path,
                    kv->key, kv->at, mr_gguf_type_name(kv->type), want);
}

/* Any integer value into [lo, hi] (as int64, or as uint64 when unsigned). */
static mr_status gg_get_int(const mr_gguf *g, const char *key, const char *want, int64_t lo, uint64_t hi,
                            int64_t *is, uint64_t *us) {
    const gg_kv *kv;
    MR_CHECK(gg_get(g, key, &kv));
    if (!gg_is_int(kv->type)) return gg_wrong_type(g, kv, want);
    int neg = gg_is_signed(kv->type) && kv->num.i < 0;
    if ((neg && kv->num.i < lo) || (!neg && kv->num.u > hi)) {
        char val[32];
        if (neg) snprintf(val, sizeof val, "%" PRId64, kv->num.i);
        else snprintf(val, sizeof val, "%" PRIu64, kv->num.u);
        return mr_error(MR_ERR_INPUT, "%s: metadata key '%s' (%s) = %s is out of range for %s", g->path, key,
                        mr_gguf_type_name(kv->type), val, want);
    }
    if (is) *is = neg ? kv->num.i : (int64_t)kv->num.u;
    if (us) *us = kv->num.u;
    return MR_OK;
}

mr_status mr_gguf_get_u32(const mr_gguf *g, const char *key, uint32_t *out) {
    uint64_t v;
    MR_CHECK(gg_get_int(g, key, "uint32", 0, UINT32_MAX, NULL, &v));
    *out = (uint32_t)v;
    return MR_OK;
}

mr_status mr_gguf_get_u64(const mr_gguf *g, const char *key, uint64_t *out) {
    return gg_get_int(g, key, "uint64", 0, UINT64_MAX, NULL, out);
}

mr_status mr_gguf_get_i64(const mr_gguf *g, const char *key, int64_t *out) {
    return gg_get_int(g, key, "int64", INT64_MIN, (uint64_t)INT64_MAX, out, NULL);
}

mr_status mr_gguf_get_f64(const mr_gguf *g, const char *key, double *out) {
    const gg_kv *kv;
    MR_CHECK(gg_get(g, key, &kv));
    if (kv->type != MR_GGUF_TYPE_FLOAT32 && kv->type != MR_GGUF_TYPE_FLOAT64)
        return gg_wrong_type(g, kv, "float64");
    *out = kv->num.f;
    return MR_OK;
}

mr_status mr_gguf_get_f32(const mr_gguf *g, const char *key, float *out) {
    const gg_kv *kv;
    MR_CHECK(gg_get(g, key, &kv));
    if (kv->type != MR_GGUF_TYPE_FLOAT32 && kv->type != MR_GGUF_TYPE_FLOAT64)
        return gg_wrong_type(g, kv, "float32");
    *out = (float)kv->num.f;
    return MR_OK;
}

mr_status mr_gguf_get_bool(const mr_gguf *g, const char *key, int *out) {
    const gg_kv *kv;
    MR_CHECK(gg_get(g, key, &kv));
    if (kv->type != MR_GGUF_TYPE_BOOL) return gg_wrong_type(g, kv, "bool");
    *out = kv->num.u != 0;
    return MR_OK;
}

mr_status mr_gguf_get_str(const mr_gguf *g, const char *key, const char **out) {
    const gg_kv *kv;
    MR_CHECK(gg_get(g, key, &kv));
    if (kv->type != MR_GGUF_TYPE_STRING) return gg_wrong_type(g, kv, "string");
    *out = kv->str.str;
    return MR_OK;
}

mr_status mr_gguf_get_arr(const mr_gguf *g, const char *key, mr_gguf_type elem, mr_gguf_array *out) {
    const gg_kv *kv;
    MR_CHECK(gg_get(g, key, &kv));
    if (kv->type != MR_GGUF_TYPE_ARRAY) return gg_wrong_type(g, kv, "array");
    if (elem != MR_GGUF_TYPE_COUNT && kv->elem != elem)
        return mr_error(MR_ERR_INPUT, "%s: metadata key '%s' (byte %" PRIu64 ") is an array of %s, expected an "
                        "array of %s", g->path, key, kv->at, mr_gguf_type_name(kv->elem),
                        mr_gguf_type_name(elem));
    *out = kv->arr;
    return MR_OK;
}

/* ---- names ---------------------------------------------------------------- */

typedef struct gg_name_pair {
    const char *gguf, *hf;
} gg_name_pair;

static const gg_name_pair gg_global_names[] = {
    {"token_embd", "model.embed_tokens"},
    {"output_norm", "model.norm"},
    {"output", "lm_head"},
};

static const gg_name_pair gg_layer_names[] = {
    {"attn_norm", "input_layernorm"},     {"ffn_norm", "post_attention_layernorm"},
    {"attn_q", "self_attn.q_proj"},       {"attn_k", "self_attn.k_proj"},
    {"attn_v", "self_attn.v_proj"},       {"attn_output", "self_attn.o_proj"},
    {"attn_q_norm", "self_attn.q_norm"},  {"attn_k_norm", "self_attn.k_norm"},
    {"ffn_gate", "mlp.gate_proj"},        {"ffn_up", "mlp.up_proj"},
    {"ffn_down", "mlp.down_proj"},
};

#define GG_COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Map `in` one way (to_hf) or the other; 1 when mapped. */
static int gg_map_name(const char *in, char *out, size_t cap, int to_hf) {
    if (cap) out[0] = 0;
    if (!in || !cap) return 0;
    const char *dot = strrchr(in, '.');
    if (!dot || (strcmp(dot, ".weight") && strcmp(dot, ".bias"))) return 0;
    size_t stem = (size_t)(dot - in);
    int n = -1;
    for (size_t i = 0; i < GG_COUNT(gg_global_names); i++) {
        const char *from = to_hf ? gg_global_names[i].gguf : gg_global_names[i].hf;
        const char *to = to_hf ? gg_global_names[i].hf : gg_global_names[i].gguf;
        if (strlen(from) == stem && !strncmp(in, from, stem)) n = snprintf(out, cap, "%s%s", to, dot);
    }
    if (n < 0) {
        const char *pre = to_hf ? "blk." : "model.layers.";
        size_t pl = strlen(pre);
        if (strncmp(in, pre, pl)) return 0;
        const char *p = in + pl, *digits = p;
        while (*p >= '0' && *p <= '9') p++;
        size_t nd = (size_t)(p - digits);
        if (nd == 0 || nd > 9 || (nd > 1 && digits[0] == '0') || *p != '.') return 0;
        const char *rest = p + 1;
        size_t rl = (size_t)(dot - rest);
        for (size_t i = 0; i < GG_COUNT(gg_layer_names); i++) {
            const char *from = to_hf ? gg_layer_names[i].gguf : gg_layer_names[i].hf;
            const char *to = to_hf ? gg_layer_names[i].hf : gg_layer_names[i].gguf;
            if (strlen(from) == rl && !strncmp(rest, from, rl))
                n = snprintf(out, cap, "%s%.*s.%s%s", to_hf ? "model.layers." : "blk.", (int)nd, digits, to, dot);
        }
    }
    if (n < 0 || (size_t)n >= cap) {
        out[0] = 0;
        return 0;
    }
    return 1;
}

int mr_gguf_name_to_hf(const char *gguf_name, char *out, size_t cap) { return gg_map_name(gguf_name, out, cap, 1); }
int mr_gguf_name_from_hf(const char *hf_name, char *out, size_t cap) { return gg_map_name(hf_name, out, cap, 0); }

/* ---- reading tensors -------------------------------------------------------- */

/* Elements [first, first + n) of t, whole blocks (first and n multiples of
 * the block size): the raw blocks are read into the back of dst and
 * dequantized front to back.  Output block k ends at byte 4(k+1)B of dst and
 * input block k starts at 4nB' - R + kS (R raw bytes, S bytes and B elements
 * per block), so a group of m blocks from block i can be converted without
 * overlap while m <= (nblk - i)(4B - S) / 4B; the last blocks go one at a
 * time through a stack copy. */
static mr_status gg_read_aligned(mr_gguf *g, const gg_tensor *t, uint64_t first, uint64_t n, float *dst) {
    const int type = t->info.type;
    const uint64_t B = (uint64_t)mr_ggml_block_elems(type), S = (uint64_t)mr_ggml_block_bytes(type);
    const uint64_t nblk = n / B, raw = nblk * S;
    unsigned char *base = (unsigned char *)dst + (4 * n - raw);
    mr_status st = gg_pread_full(g, t->info.offset + first / B * S, base, (size_t)raw);
    if (st != MR_OK) return mr_error_context(st, "reading tensor '%s'", t->info.name);
    atomic_fetch_add(&g->bytes_read, raw);
    if (type == MR_GGML_TYPE_F32) return MR_OK;
    const uint64_t D = 4 * B, N = 4 * B - S;
    for (uint64_t i = 0; i < nblk;) {
        uint64_t rem = nblk - i, m = rem / D * N + rem % D * N / D;
        if (m > 0) {
            mr_ggml_dequantize(type, base + i * S, (size_t)m, dst + i * B);
            i += m;
        } else {
            unsigned char tmp[GG_MAX_BLOCK_BYTES];
            memcpy(tmp, base + i * S, (size_t)S);
            mr_ggml_dequantize(type, tmp, 1, dst + i * B);
            i++;
        }
    }
    return MR_OK;
}

/* Elements [first, first + n) of t into dst, any alignment. */
static mr_status gg_read_elems(mr_gguf *g, const gg_tensor *t, uint64_t first, uint64_t n, float *dst) {
    if (n == 0) return MR_OK;
    const int type = t->info.type;
    const uint64_t B = (uint64_t)mr_ggml_block_elems(type), S = (uint64_t)mr_ggml_block_bytes(type);
    if (first % B == 0 && n % B == 0) return gg_read_aligned(g, t, first, n, dst);
    /* Partial blocks at the ends: dequantize whole blocks into a bounce
     * buffer, a bounded number at a time, and copy out the part wanted. */
    uint64_t per = GG_BOUNCE_BYTES / S ? GG_BOUNCE_BYTES / S : 1;
    unsigned char *raw;
    float *tmp;
    MR_CHECK(mr_malloc((void **)&raw, (size_t)(per * S), "a dequantization buffer"));
    mr_status st = mr_malloc((void **)&tmp, (size_t)(per * B) * sizeof *tmp, "a dequantization buffer");
    if (st != MR_OK) {
        free(raw);
        return st;
    }
    uint64_t b = first / B, b_end = (first + n + B - 1) / B;
    while (b < b_end) {
        uint64_t k = b_end - b < per ? b_end - b : per;
        st = gg_pread_full(g, t->info.offset + b * S, raw, (size_t)(k * S));
        if (st != MR_OK) {
            st = mr_error_context(st, "reading tensor '%s'", t->info.name);
            break;
        }
        atomic_fetch_add(&g->bytes_read, k * S);
        mr_ggml_dequantize(type, raw, (size_t)k, tmp);
        uint64_t lo = b * B > first ? b * B : first, hi = (b + k) * B < first + n ? (b + k) * B : first + n;
        memcpy(dst + (lo - first), tmp + (lo - b * B), (size_t)(hi - lo) * sizeof *dst);
        b += k;
    }
    free(raw);
    free(tmp);
    return st;
}

/* Rows [row0, row0 + nrows), columns [col0, col0 + ncols) of the tensor
 * seen as rows of ne[0] elements, packed into dst. */
static mr_status gg_read_rows(mr_gguf *g, const gg_tensor *t, uint64_t row0, uint64_t nrows, uint64_t col0,
                              uint64_t ncols, float *dst) {
    const uint64_t C = (uint64_t)t->info.ne[0];
    if (ncols == C) return gg_read_elems(g, t, row0 * C, nrows * C, dst);
    for (uint64_t r = 0; r < nrows; r++)
        MR_CHECK(gg_read_elems(g, t, (row0 + r) * C + col0, ncols, dst + r * ncols));
    return MR_OK;
}

/* HF row r of a llama q/k tensor -> the GGUF row that holds it: within a
 * head of hd rows, HF row t*hd/2 + j sits at GGUF row 2j + t. */
static uint64_t gg_perm_row(uint64_t r, uint64_t hd) {
    uint64_t w = r % hd, half = hd / 2;
    return r - w + 2 * (w % half) + w / half;
}

/* A q_proj/k_proj weight [R, C] or bias [R] of a llama file: the rows (or
 * elements) of each head are un-permuted back to HF order. */
static mr_status gg_read_permuted(mr_gguf *g, const gg_tensor *t, uint64_t heads, mr_slice slice, float *dst) {
    const mr_gguf_tensor_info *ti = &t->info;
    const uint64_t R = (uint64_t)ti->shape[0];
    if (R == 0 || (ti->ndim == 2 && ti->shape[1] == 0)) return MR_OK; /* nothing to read */
    if (heads == 0 || R % heads || (R / heads) % 2)
        return mr_error(MR_ERR_INPUT, "%s: cannot undo the llama q/k permutation of tensor '%s': %" PRIu64
                        " rows are not %" PRIu64 " heads of even size", g->path, ti->name, R, heads);
    const uint64_t hd = R / heads;
    uint64_t r0 = 0, nr = R;
    if (slice.axis == 0) {
        r0 = (uint64_t)slice.start;
        nr = (uint64_t)slice.count;
    }
    if (ti->ndim == 1) { /* a bias: small, read whole and pick */
        float *all;
        MR_CHECK(mr_malloc((void **)&all, (size_t)R * sizeof *all, "a q/k bias"));
        mr_status st = gg_read_elems(g, t, 0, R, all);
        for (uint64_t r = 0; st == MR_OK && r < nr; r++) dst[r] = all[gg_perm_row(r0 + r, hd)];
        free(all);
        return st;
    }
    const uint64_t C = (uint64_t)ti->shape[1];
    uint64_t c0 = 0, nc = C;
    if (slice.axis == 1) {
        c0 = (uint64_t)slice.start;
        nc = (uint64_t)slice.count;
    }
    if (nr % hd || r0 % hd) { /* not whole heads: one row at a time */
        for (uint64_t r = 0; r < nr; r++)
            MR_CHECK(gg_read_rows(g, t, gg_perm_row(r0 + r, hd), 1, c0, nc, dst + r * nc));
        return MR_OK;
    }
    /* Whole heads hold the same rows in both orders: read them as stored,
     * then reorder each head through a copy. */
    MR_CHECK(gg_read_rows(g, t, r0, nr, c0, nc, dst));
    float *head;
    MR_CHECK(mr_malloc((void **)&head, (size_t)(hd * nc) * sizeof *head, "a q/k head"));
    for (uint64_t h = 0; h < nr / hd; h++) {
        float *blk = dst + h * hd * nc;
        memcpy(head, blk, (size_t)(hd * nc) * sizeof *head);
        for (uint64_t w = 0; w < hd; w++)
            memcpy(blk + w * nc, head + gg_perm_row(w, hd) * nc, (size_t)nc * sizeof *head);
    }
    free(head);
    return MR_OK;
}

static int gg_ends_with(const char *s, const char *suffix) {
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && !strcmp(s + ls - lx, suffix);
}

/* Heads to un-permute for `hf_name` in this file; 0 when not permuted. */
static mr_status gg_permute_heads(const mr_gguf *g, const char *hf_name, uint64_t *heads) {
    *heads = 0;
    const gg_kv *arch = gg_find_kv(g, "general.architecture");
    if (!arch || arch->type != MR_GGUF_TYPE_STRING || strcmp(arch->str.str, "llama")) return MR_OK;
    int is_q = gg_ends_with(hf_name, "self_attn.q_proj.weight") || gg_ends_with(hf_name, "self_attn.q_proj.bias");
    int is_k = gg_ends_with(hf_name, "self_attn.k_proj.weight") || gg_ends_with(hf_name, "self_attn.k_proj.bias");
    if (!is_q && !is_k) return MR_OK;
    uint32_t n;
    mr_status st = mr_gguf_get_u32(g, "llama.attention.head_count", &n);
    if (st == MR_OK && is_k && gg_find_kv(g, "llama.attention.head_count_kv"))
        st = mr_gguf_get_u32(g, "llama.attention.head_count_kv", &n);
    if (st != MR_OK) return mr_error_context(st, "undoing the llama q/k permutation of '%s'", hf_name);
    *heads = n;
    return MR_OK;
}

mr_status mr_gguf_read_f32(mr_gguf *g, const char *name, int ndim, const int64_t *shape, mr_slice slice,
                           float *dst) {
    char gname[GG_NAME_MAX];
    int mapped = mr_gguf_name_from_hf(name, gname, sizeof gname);
    const gg_tensor *t = gg_find_tensor(g, mapped ? gname : name);
    if (!t) {
        if (mapped) return mr_error(MR_ERR_INPUT, "tensor '%s' (GGUF '%s') not found in %s", name, gname, g->path);
        return mr_error(MR_ERR_INPUT, "tensor '%s' not found in %s", name, g->path);
    }
    const mr_gguf_tensor_info *ti = &t->info;
    char have[GG_SHAPE_STR], want[GG_SHAPE_STR];
    gg_fmt_shape(have, sizeof have, ti->ndim, ti->shape);
    if (ndim != ti->ndim || (ndim > 0 && memcmp(shape, ti->shape, (size_t)ndim * sizeof *shape))) {
        gg_fmt_shape(want, sizeof want, ndim < 0 || ndim > MR_MAX_DIMS ? 0 : ndim, shape);
        return mr_error(MR_ERR_INPUT, "tensor '%s' in %s has shape %s, expected %s", name, g->path, have, want);
    }
    if (!mr_ggml_can_dequantize(ti->type))
        return mr_error(MR_ERR_UNSUPPORTED, "tensor '%s' in %s has type %s; moerun reads only F32, F16, BF16, "
                        "Q8_0, Q4_0, Q4_1, Q4_K, Q5_K and Q6_K", name, g->path, mr_ggml_type_name(ti->type));
    uint64_t nelem = 1;
    for (int i = 0; i < ti->ndim; i++) nelem *= (uint64_t)ti->shape[i]; /* checked at open */
    if (slice.axis != -1) {
        if (slice.axis < 0 || slice.axis >= ti->ndim)
            return mr_error(MR_ERR_INPUT, "slice axis %d is out of range for tensor '%s' in %s with shape %s",
                            slice.axis, name, g->path, have);
        int64_t dim = ti->shape[slice.axis];
        if (slice.start < 0 || slice.count < 0 || slice.start > dim - slice.count)
            return mr_error(MR_ERR_INPUT, "slice [%" PRId64 ", %" PRId64 ") along axis %d is out of range for "
                            "tensor '%s' in %s with shape %s", slice.start, slice.start + slice.count,
                            slice.axis, name, g->path, have);
        if (slice.count == dim) slice = MR_SLICE_ALL;
    }
    uint64_t heads = 0;
    if (mapped) MR_CHECK(gg_permute_heads(g, name, &heads));
    if (heads && ti->ndim >= 1 && ti->ndim <= 2) return gg_read_permuted(g, t, heads, slice, dst);
    if (slice.axis == -1) return gg_read_elems(g, t, 0, nelem, dst);
    const uint64_t C = (uint64_t)ti->ne[0];
    if (slice.axis == ti->ndim - 1) /* columns: a run in every row */
        return gg_read_rows(g, t, 0, C ? nelem / C : 0, (uint64_t)slice.start, (uint64_t)slice.count, dst);
    /* An outer axis: one run of count * inner elements per outer index. */
    uint64_t outer = 1, inner = 1, dim = (uint64_t)ti->shape[slice.axis];
    for (int i = 0; i < slice.axis; i++) outer *= (uint64_t)ti->shape[i];
    for (int i = slice.axis + 1; i < ti->ndim; i++) inner *= (uint64_t)ti->shape[i];
    uint64_t run = (uint64_t)slice.count * inner;
    for (uint64_t o = 0; o < outer; o++)
        MR_CHECK(gg_read_elems(g, t, (o * dim + (uint64_t)slice.start) * inner, run, dst + o * run));
    return MR_OK;
}
