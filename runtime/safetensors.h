/* Reading safetensors files and Hugging Face checkpoint folders.
 *
 * A checkpoint is config.json plus model.safetensors, or sharded
 * model-*.safetensors listed in model.safetensors.index.json.  Tensors are
 * read by name through a slice (replicated, or a range along one axis), so
 * a rank reads only its own part: reads use pread of exactly the bytes
 * needed and convert F32/F16/BF16 to float32.  Every header length, offset,
 * shape and dtype is checked against the file; model files are untrusted. */
#ifndef MR_SAFETENSORS_H
#define MR_SAFETENSORS_H

#include <stdint.h>

#include "runtime/status.h"

#define MR_MAX_DIMS 8

typedef enum mr_dtype {
    MR_DTYPE_F32 = 0,
    MR_DTYPE_F16,
    MR_DTYPE_BF16,
    MR_DTYPE_COUNT
} mr_dtype;

const char *mr_dtype_name(mr_dtype dt);
int mr_dtype_size(mr_dtype dt);

typedef struct mr_tensor_info {
    const char *name;
    mr_dtype dtype;
    int ndim;
    int64_t shape[MR_MAX_DIMS];
    uint64_t offset; /* absolute byte offset of the data in its file */
    uint64_t nbytes;
    int file;        /* index of the file that holds it */
} mr_tensor_info;

/* A slice of a tensor: the whole tensor (axis = -1), or elements
 * [start, start + count) along `axis`. */
typedef struct mr_slice {
    int axis;
    int64_t start, count;
} mr_slice;

#define MR_SLICE_ALL ((mr_slice){.axis = -1, .start = 0, .count = 0})
/* Part `index` of `parts` equal parts along `axis` (dim must divide). */
mr_slice mr_slice_part(int axis, int64_t dim, int parts, int index);

typedef struct mr_checkpoint mr_checkpoint;

/* Open a checkpoint: a folder (with model.safetensors or
 * model.safetensors.index.json) or a single .safetensors file. */
mr_status mr_checkpoint_open(mr_checkpoint **out, const char *path);
void mr_checkpoint_close(mr_checkpoint *ck);

int mr_checkpoint_count(const mr_checkpoint *ck);
const mr_tensor_info *mr_checkpoint_tensor(const mr_checkpoint *ck, int i);
/* NULL when absent. */
const mr_tensor_info *mr_checkpoint_find(const mr_checkpoint *ck, const char *name);
const char *mr_checkpoint_file_path(const mr_checkpoint *ck, int file);

/* Read `name` into dst as float32.  The tensor must exist with exactly the
 * shape `shape[ndim]` (the full, unsliced shape); `slice` selects the part
 * to read; dst holds the slice's element count.  Errors name the file and
 * the tensor (missing tensor, wrong rank/shape with expected vs found,
 * unsupported dtype, data past the end of the file). */
mr_status mr_checkpoint_read_f32(mr_checkpoint *ck, const char *name, int ndim,
                                 const int64_t *shape, mr_slice slice, float *dst);
/* Bytes of tensor data read so far (for the "each rank reads its shard" tests). */
uint64_t mr_checkpoint_bytes_read(const mr_checkpoint *ck);
/* Total bytes of tensor data in the checkpoint. */
uint64_t mr_checkpoint_bytes_total(const mr_checkpoint *ck);

/* Conversions (exact for F16/BF16 -> F32, including subnormals, inf, nan). */
float mr_f16_to_f32(uint16_t h);
float mr_bf16_to_f32(uint16_t h);

#endif
