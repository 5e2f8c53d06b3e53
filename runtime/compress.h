/* Block compression for the all-reduce engine (DESIGN.md: compression).
 *
 * A vector of n float32 values is cut into blocks of `block` values
 * (32..256, a power of two; the last block may be shorter).  Each mode packs
 * one block into a fixed number of bytes, blocks one after the other, so a
 * run of whole blocks is a contiguous byte range:
 *
 *   mode   per block                                 bytes (block of k values)
 *   none   k float32                                 4k
 *   bf16   k bfloat16 (round to nearest even)        2k
 *   fp16   float32 scale 2^e, k binary16 of x/2^e    4 + 2k
 *   int8   float32 scale A/127, k int8 of x/scale    4 + k
 *   int4   float32 scale A/7, k nibbles (low first)  4 + ceil(k/2)
 *
 * A is the block's largest |x|.  fp16's scale is the power of two that puts
 * A in [2^14, 2^15), so no value overflows binary16 and the scaling is exact.
 * Codes are round-to-nearest-even of x * (127/A) (int8) or x * (7/A) (int4),
 * computed in float32 exactly as written (no fused multiply-add), so the CUDA
 * kernels produce the same bytes; a block with A < 2^-100, where 127/A would
 * overflow, computes (x 2^100) * (127 / (A 2^100)) instead, the same floats
 * without the overflow.  An all-zero block has scale 0 (int) or 1
 * (fp16).  Non-finite inputs are not supported by the int modes (the block
 * decodes to NaN); bf16 and fp16 keep inf and NaN.
 *
 * Error of one quantisation q(x) of a value x in a block with largest |x| A:
 *   bf16  |q(x) - x| <= 2^-8 |x|
 *   fp16  |q(x) - x| <= 2^-11 |x| + 2^-39 A
 *   int8  |q(x) - x| <= A/254 + 2^-22 A
 *   int4  |q(x) - x| <= A/14  + 2^-22 A
 * (plus 2^-149, one float32 subnormal step, when A itself is subnormal; for
 * int8 and int4 plus 2^-142 when A < 2^-119: the scale A/127 or A/7 is then
 * a float32 subnormal, rounded to a step of 2^-149, and a code multiplies
 * that error by at most 127).
 * The all-reduce quantises each value once where it is sent (its own input,
 * or for hierarchical a node's partial sum) and the reduced result once for
 * the all-gather; sums are accumulated in float32.  So for p ranks, with
 * S = sum_i |x_i|, A_i rank i's block maximum and e(.) the bound above:
 *   |result - exact sum| <= sum_i e_i + e(result) + p 2^-23 S
 * which gives, per element (bounds the tests check, runtime/allreduce.h):
 *   bf16  (2^-7 + 2^-15 + p 2^-23) S
 *   fp16  (2^-10 + 2^-21 + p 2^-23) S + 2^-38 sum_i A_i
 *   int8  (2/254 + 2^-13) sum_i A_i + p 2^-23 S
 *   int4  (2/14 + 2^-5) sum_i A_i + p 2^-23 S */
#ifndef MR_COMPRESS_H
#define MR_COMPRESS_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/plan.h"

#define MR_COMPRESS_BLOCK_MIN 32
#define MR_COMPRESS_BLOCK_MAX 256

/* Bytes of the packed form of n values (n need not be a block multiple). */
size_t mr_compress_bytes(mr_compression c, size_t n, int block);
/* Pack x[0..n) into out (mr_compress_bytes(c, n, block) bytes). */
void mr_compress(mr_compression c, int block, const float *x, size_t n, void *out);
/* out[0..n) = the values packed in `in`. */
void mr_decompress(mr_compression c, int block, const void *in, size_t n, float *out);
/* acc[0..n) += the values packed in `in` (one float32 add per value). */
void mr_decompress_add(mr_compression c, int block, const void *in, size_t n, float *acc);

/* float32 -> bfloat16 / binary16, round to nearest even, inf and NaN kept
 * (the reverse conversions are safetensors.h's mr_bf16_to_f32 and
 * mr_f16_to_f32). */
uint16_t mr_f32_to_bf16(float f);
uint16_t mr_f32_to_f16(float f);

#endif
