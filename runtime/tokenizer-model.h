/* The tokenizer that goes with a model: tokenizer.json beside a Hugging Face
 * folder's config.json, or the tokenizer.ggml.* metadata of a GGUF file, or a
 * file named by the user (--tokenizer) that overrides both. */
#ifndef MR_TOKENIZER_MODEL_H
#define MR_TOKENIZER_MODEL_H

#include "runtime/tokenizer.h"

/* `override` (may be NULL): a tokenizer.json or a .gguf file whose
 * tokenizer.ggml.* arrays are used.  Without it: a GGUF model's metadata, or
 * MODEL/tokenizer.json.  A Hugging Face folder without tokenizer.json is not
 * an error: *out is NULL (only token-id requests can run).  A GGUF file
 * without tokenizer.ggml.tokens is the same.  Errors name the file. */
mr_status mr_tokenizer_load_for_model(mr_tokenizer **out, const char *model_path, const char *override);

/* Build the tokenizer from an opened GGUF file's tokenizer.ggml.* keys:
 * tokens, merges, token_type, pre, bos/eos_token_id, add_bos_token and
 * add_eos_token (llama.cpp's defaults when absent: BOS for the llama-bpe
 * pre-tokenizer, none otherwise).  Only tokenizer.ggml.model "gpt2"
 * (byte-level BPE) is implemented. */
struct mr_gguf;
mr_status mr_tokenizer_from_gguf(mr_tokenizer **out, struct mr_gguf *g);

#endif
