/* Reading GGUF files (llama.cpp's single-file model format).
 *
 * Layout (little-endian): "GGUF", uint32 version (2 or 3), uint64 tensor
 * count, uint64 key/value count; the key/values (string key, uint32 type,
 * value); the tensor infos (string name, uint32 n_dims <= 4, uint64 ne[n_dims],
 * uint32 ggml type, uint64 offset into the data section); then, padded to
 * general.alignment (default 32), the data section.
 *
 * Opening reads the header only, with pread, and checks every count, length,
 * dimension, size and offset against the file size and against overflow
 * (model files are untrusted); no tensor byte is read until asked for.
 * Tensors are read like safetensors checkpoints (safetensors.h): by name,
 * with the full shape and an optional slice along one axis, widened or
 * dequantized to float32 (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K).
 *
 * Shapes: GGUF lists dimensions fastest-varying first (ne[0] is the length of
 * a row), PyTorch/Hugging Face lists them slowest first.  This API takes and
 * reports shapes in the Hugging Face order: a weight with ne = [K, N] has
 * shape [N, K] (N rows of K elements), exactly the shape of the same tensor
 * in the safetensors checkpoint it was converted from.  The raw ne[] is
 * kept in mr_gguf_tensor_info for reference. */
#ifndef MR_GGUF_H
#define MR_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/config.h"
#include "runtime/safetensors.h" /* mr_slice */
#include "runtime/status.h"

#define MR_GGUF_MAX_DIMS 4
#define MR_GGUF_DEFAULT_ALIGNMENT 32

/* Metadata value types, numbered as in the file. */
typedef enum mr_gguf_type {
    MR_GGUF_TYPE_UINT8 = 0,
    MR_GGUF_TYPE_INT8 = 1,
    MR_GGUF_TYPE_UINT16 = 2,
    MR_GGUF_TYPE_INT16 = 3,
    MR_GGUF_TYPE_UINT32 = 4,
    MR_GGUF_TYPE_INT32 = 5,
    MR_GGUF_TYPE_FLOAT32 = 6,
    MR_GGUF_TYPE_BOOL = 7,
    MR_GGUF_TYPE_STRING = 8,
    MR_GGUF_TYPE_ARRAY = 9,
    MR_GGUF_TYPE_UINT64 = 10,
    MR_GGUF_TYPE_INT64 = 11,
    MR_GGUF_TYPE_FLOAT64 = 12,
    MR_GGUF_TYPE_COUNT
} mr_gguf_type;

/* "uint32", "string", "array"...; "?" for values outside the enum. */
const char *mr_gguf_type_name(mr_gguf_type t);

/* Tensor types, numbered as ggml's enum ggml_type (the gaps are ids ggml
 * retired).  Every type with a known block size can be opened; only those
 * for which mr_ggml_can_dequantize() is true can be read. */
typedef enum mr_ggml_type {
    MR_GGML_TYPE_F32 = 0,
    MR_GGML_TYPE_F16 = 1,
    MR_GGML_TYPE_Q4_0 = 2,
    MR_GGML_TYPE_Q4_1 = 3,
    MR_GGML_TYPE_Q5_0 = 6,
    MR_GGML_TYPE_Q5_1 = 7,
    MR_GGML_TYPE_Q8_0 = 8,
    MR_GGML_TYPE_Q8_1 = 9,
    MR_GGML_TYPE_Q2_K = 10,
    MR_GGML_TYPE_Q3_K = 11,
    MR_GGML_TYPE_Q4_K = 12,
    MR_GGML_TYPE_Q5_K = 13,
    MR_GGML_TYPE_Q6_K = 14,
    MR_GGML_TYPE_Q8_K = 15,
    MR_GGML_TYPE_IQ2_XXS = 16,
    MR_GGML_TYPE_IQ2_XS = 17,
    MR_GGML_TYPE_IQ3_XXS = 18,
    MR_GGML_TYPE_IQ1_S = 19,
    MR_GGML_TYPE_IQ4_NL = 20,
    MR_GGML_TYPE_IQ3_S = 21,
    MR_GGML_TYPE_IQ2_S = 22,
    MR_GGML_TYPE_IQ4_XS = 23,
    MR_GGML_TYPE_I8 = 24,
    MR_GGML_TYPE_I16 = 25,
    MR_GGML_TYPE_I32 = 26,
    MR_GGML_TYPE_I64 = 27,
    MR_GGML_TYPE_F64 = 28,
    MR_GGML_TYPE_IQ1_M = 29,
    MR_GGML_TYPE_BF16 = 30,
    MR_GGML_TYPE_TQ1_0 = 34,
    MR_GGML_TYPE_TQ2_0 = 35,
    MR_GGML_TYPE_MXFP4 = 39,
    MR_GGML_TYPE_NVFP4 = 40,
    MR_GGML_TYPE_Q1_0 = 41,
    MR_GGML_TYPE_COUNT
} mr_ggml_type;

/* ---- ggml block formats (gguf-quant.c) ----------------------------------- */

/* "Q4_K"...; "?" for ids that are not a ggml type. */
const char *mr_ggml_type_name(int type);
/* Elements per block and bytes per block; 0 for ids that are not a type. */
int mr_ggml_block_elems(int type);
int mr_ggml_block_bytes(int type);
int mr_ggml_can_dequantize(int type);
/* Dequantize `nblocks` blocks of `type` from src into dst (nblocks *
 * block_elems floats).  src and dst must not overlap; the type must be one
 * that mr_ggml_can_dequantize() accepts. */
void mr_ggml_dequantize(int type, const void *src, size_t nblocks, float *dst);

/* ---- files --------------------------------------------------------------- */

typedef struct mr_gguf mr_gguf;

typedef struct mr_gguf_tensor_info {
    const char *name;             /* the GGUF name, e.g. "blk.0.attn_q.weight" */
    mr_ggml_type type;
    int ndim;                     /* n_dims of the file, 0..4 */
    int64_t ne[MR_GGUF_MAX_DIMS]; /* GGUF order: ne[0] is the row length; unused = 1 */
    int64_t shape[MR_GGUF_MAX_DIMS]; /* HF order: shape[i] = ne[ndim - 1 - i] */
    uint64_t offset;              /* absolute byte offset of the data in the file */
    uint64_t nbytes;
} mr_gguf_tensor_info;

/* A string value: `len` bytes at `str`, which is also NUL-terminated. */
typedef struct mr_gguf_string {
    const char *str;
    uint64_t len;
} mr_gguf_string;

/* An array value: `n` elements of `type`.  Numbers are in host order (the
 * file's little-endian), BOOL elements are uint8_t (0 or not), STRING
 * elements are mr_gguf_string.  Owned by the mr_gguf. */
typedef struct mr_gguf_array {
    mr_gguf_type type;
    uint64_t n;
    const void *data;
} mr_gguf_array;

/* Open `path` and read its header.  Errors name the file, the byte offset
 * and the key or tensor concerned; *out is NULL on failure. */
mr_status mr_gguf_open(mr_gguf **out, const char *path);
void mr_gguf_close(mr_gguf *g);

const char *mr_gguf_path(const mr_gguf *g);
uint32_t mr_gguf_version(const mr_gguf *g);
uint64_t mr_gguf_file_size(const mr_gguf *g);
uint64_t mr_gguf_alignment(const mr_gguf *g);
/* Byte offset of the data section (tensor offsets are relative to it). */
uint64_t mr_gguf_data_offset(const mr_gguf *g);

/* ---- metadata ----------------------------------------------------------- */

int mr_gguf_kv_count(const mr_gguf *g);
const char *mr_gguf_kv_key(const mr_gguf *g, int i);
mr_gguf_type mr_gguf_kv_type(const mr_gguf *g, int i);
/* Index of `key`, or -1 when absent. */
int mr_gguf_find_key(const mr_gguf *g, const char *key);

/* Typed getters.  A missing key is MR_ERR_INPUT naming the file and key; a
 * value of the wrong type is MR_ERR_INPUT naming the key, its type and the
 * type asked for.  The integer getters accept any integer type whose value
 * fits (uint8..int64), the float getters FLOAT32 and FLOAT64; get_bool wants
 * BOOL, get_str STRING.  get_arr wants an ARRAY whose elements are of type
 * `elem` (MR_GGUF_TYPE_COUNT: any element type). */
mr_status mr_gguf_get_u32(const mr_gguf *g, const char *key, uint32_t *out);
mr_status mr_gguf_get_u64(const mr_gguf *g, const char *key, uint64_t *out);
mr_status mr_gguf_get_i64(const mr_gguf *g, const char *key, int64_t *out);
mr_status mr_gguf_get_f32(const mr_gguf *g, const char *key, float *out);
mr_status mr_gguf_get_f64(const mr_gguf *g, const char *key, double *out);
mr_status mr_gguf_get_bool(const mr_gguf *g, const char *key, int *out);
mr_status mr_gguf_get_str(const mr_gguf *g, const char *key, const char **out);
mr_status mr_gguf_get_arr(const mr_gguf *g, const char *key, mr_gguf_type elem,
                          mr_gguf_array *out);

/* ---- tensors ------------------------------------------------------------- */

int mr_gguf_tensor_count(const mr_gguf *g);
/* The i-th tensor in file order; NULL when out of range. */
const mr_gguf_tensor_info *mr_gguf_tensor(const mr_gguf *g, int i);
/* By GGUF name; NULL when absent. */
const mr_gguf_tensor_info *mr_gguf_find_tensor(const mr_gguf *g, const char *name);

/* Tensor names.  GGUF "token_embd.weight" <-> HF "model.embed_tokens.weight",
 * "output_norm.weight" <-> "model.norm.weight", "output.weight" <->
 * "lm_head.weight", and per layer "blk.N.X.{weight,bias}" <->
 * "model.layers.N.Y.{weight,bias}" with X -> Y: attn_norm -> input_layernorm,
 * ffn_norm -> post_attention_layernorm, attn_q/attn_k/attn_v/attn_output ->
 * self_attn.q_proj/k_proj/v_proj/o_proj, attn_q_norm/attn_k_norm ->
 * self_attn.q_norm/k_norm, ffn_gate/ffn_up/ffn_down ->
 * mlp.gate_proj/up_proj/down_proj.  Return 1 and write the other name into
 * out[cap] when the name is in the map, else 0 (out is then ""). */
int mr_gguf_name_to_hf(const char *gguf_name, char *out, size_t cap);
int mr_gguf_name_from_hf(const char *hf_name, char *out, size_t cap);

/* Read a tensor into dst as float32, like mr_checkpoint_read_f32.
 *
 * `name` is a Hugging Face name ("model.layers.0.self_attn.q_proj.weight"):
 * it is mapped to its GGUF tensor and the result is laid out exactly as in
 * the HF checkpoint.  In particular, for general.architecture = "llama" the
 * q_proj and k_proj weights and biases are un-permuted: llama.cpp's
 * convert_hf_to_gguf.py reorders the rows of each head from HF's rotate_half
 * layout (i, i + d/2) to GGML's interleaved pairs (2i, 2i+1), and this read
 * undoes it (qwen2 files are not permuted).  A name outside the map is
 * looked up as a GGUF name and read as stored.
 *
 * `shape[ndim]` is the full HF-order shape the tensor must have; `slice`
 * selects whole tensor, or [start, start + count) along any axis (the
 * un-permuted q/k weights along axis 0 or 1); dst holds the slice's element
 * count.  Errors name the file and the tensor. */
mr_status mr_gguf_read_f32(mr_gguf *g, const char *name, int ndim, const int64_t *shape,
                           mr_slice slice, float *dst);
/* Bytes of tensor data read so far, and in all tensors of the file. */
uint64_t mr_gguf_bytes_read(const mr_gguf *g);
uint64_t mr_gguf_bytes_total(const mr_gguf *g);

/* ---- model configuration ------------------------------------------------- */

/* Fill cfg from the metadata of a "llama" or "qwen2" file, the same fields
 * mr_config_parse fills from config.json: {arch}.block_count,
 * .embedding_length, .feed_forward_length, .attention.head_count,
 * .attention.head_count_kv, .attention.key_length (head_dim),
 * .attention.layer_norm_rms_epsilon, .context_length, .rope.freq_base,
 * .rope.scaling.* (linear, yarn), the llama3 rope scaling that the converter
 * stores as the rope_freqs.weight tensor (recognised and checked against
 * mr_config_rope_freqs), .vocab_size or the length of tokenizer.ggml.tokens,
 * tokenizer.ggml.bos_token_id / eos_token_id (eot/eom ids are added as
 * further eos ids).  tie_embeddings is set when output.weight is absent,
 * attn_bias for qwen2 (and for llama when blk.0.attn_q.bias exists).
 * Anything we do not implement (other architectures, rope scaling types,
 * partial rotary) is refused by name.  Free cfg with mr_config_free. */
mr_status mr_gguf_to_config(const mr_gguf *g, mr_model_config *cfg);

#endif
