/* Byte-level BPE tokenizer (GPT-2, Llama-3, Qwen2, SmolLM2, DeepSeek-V3
 * families), loaded from a Hugging Face tokenizer.json or built from the
 * arrays a GGUF file holds.  encode() gives the same ids as the `tokenizers`
 * library (0.22) with add_special_tokens set from `add_special`.
 *
 * Invalid UTF-8 given to encode() is first replaced the way Rust's
 * String::from_utf8_lossy and Python's bytes.decode("utf-8", "replace") do:
 * each maximal ill-formed subsequence becomes one U+FFFD.  That is exactly the
 * string `tokenizers` sees when a caller decodes bytes with errors="replace".
 *
 * decode() concatenates the bytes of the tokens and applies the same lossy
 * rule to the result; the streaming decoder emits only complete UTF-8
 * sequences and holds back a trailing incomplete one, so the concatenation of
 * its output equals decode() of all ids. */
#ifndef MR_TOKENIZER_H
#define MR_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/status.h"

typedef struct mr_tokenizer mr_tokenizer;

/* Load tokenizer.json.  A tokenizer_config.json in the same folder, if
 * present, names the bos/eos tokens (it does not change encode()).
 * Anything the file asks for that is not implemented is refused by name. */
mr_status mr_tokenizer_load_json(mr_tokenizer **out, const char *path);

/* What a GGUF file holds (tokenizer.ggml.*), for building the same tokenizer
 * without a tokenizer.json.  `pre` is tokenizer.ggml.pre: "llama-bpe"
 * ("llama3"), "gpt2" ("gpt-2"), "smollm", "qwen2", "deepseek-r1-qwen",
 * "deepseek-llm", "deepseek-v3". */
typedef struct mr_tokenizer_vocab_desc {
    const char *origin;              /* file name for messages */
    int n_tokens;
    const char *const *tokens;       /* byte-level token strings, id order */
    const int32_t *token_types;      /* 1 normal, 3 control, 4 user-defined,
                                      * 5 unused; NULL = all normal */
    int n_merges;
    const char *const *merges;       /* "left right", highest priority first */
    const char *pre;
    int32_t bos_id, eos_id;          /* -1 if none */
    int add_bos, add_eos;            /* added by encode(add_special = 1) */
} mr_tokenizer_vocab_desc;

mr_status mr_tokenizer_create_bpe(mr_tokenizer **out, const mr_tokenizer_vocab_desc *desc);

void mr_tokenizer_free(mr_tokenizer *t);

/* Encode `len` bytes of `text`.  *ids is malloc'd (free() it); *n its count.
 * Thread-safe: many threads may encode with one tokenizer. */
mr_status mr_tokenizer_encode(const mr_tokenizer *t, const char *text, size_t len,
                              int add_special, int32_t **ids, int *n);

/* Decode ids to UTF-8 (lossy, see above).  skip_special drops special added
 * tokens, like tokenizers' skip_special_tokens.  *text is malloc'd and
 * NUL-terminated; *len excludes the NUL.  An id outside [0, vocab size) is an
 * error. */
mr_status mr_tokenizer_decode(const mr_tokenizer *t, const int32_t *ids, int n,
                              int skip_special, char **text, size_t *len);

/* Streaming decoder: a plain struct, no allocation. */
typedef struct mr_tokenizer_stream {
    const mr_tokenizer *tok;
    int skip_special;
    int npending;
    unsigned char pending[4];        /* start of an incomplete UTF-8 sequence */
} mr_tokenizer_stream;

void mr_tokenizer_stream_init(mr_tokenizer_stream *s, const mr_tokenizer *t, int skip_special);
/* Most bytes one push or flush can write. */
size_t mr_tokenizer_stream_bound(const mr_tokenizer *t);
/* Append the complete UTF-8 that `id` finishes to out[0..cap); *len = bytes
 * written (not NUL-terminated). */
mr_status mr_tokenizer_stream_push(mr_tokenizer_stream *s, int32_t id, char *out, size_t cap,
                                   size_t *len);
/* End of stream: a held incomplete sequence becomes U+FFFD. */
mr_status mr_tokenizer_stream_flush(mr_tokenizer_stream *s, char *out, size_t cap, size_t *len);

/* Id of an added token's content or of a vocabulary entry (byte-level
 * spelling), -1 if none. */
int32_t mr_tokenizer_token_id(const mr_tokenizer *t, const char *token);
/* Bytes a single id decodes to (not NUL-terminated); NULL if out of range. */
const char *mr_tokenizer_token_bytes(const mr_tokenizer *t, int32_t id, size_t *len);
int mr_tokenizer_is_special(const mr_tokenizer *t, int32_t id);
int32_t mr_tokenizer_vocab_size(const mr_tokenizer *t);
int32_t mr_tokenizer_bos_id(const mr_tokenizer *t);   /* -1 if none */
int32_t mr_tokenizer_eos_id(const mr_tokenizer *t);   /* -1 if none */

#endif
