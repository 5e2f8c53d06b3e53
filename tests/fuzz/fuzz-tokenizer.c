/* libFuzzer target for the tokenizer.json loader (runtime/tokenizer*.c).
 *
 * The input bytes become a tokenizer.json file (an in-memory memfd, opened
 * by path like a real checkpoint's); when it loads, a few fixed strings and
 * the input itself are encoded with and without special tokens, the ids are
 * decoded whole (skipping specials and not) and through the streaming
 * decoder, and every id's bytes are looked up.  Errors are expected and
 * fine; crashes, sanitizer reports and leaks are not.  Build with
 * tests/fuzz/build.sh. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "runtime/tokenizer.h"
#include "tests/fuzz/fuzz-file.h"

/* Texts that reach the pre-tokenizer's corners: contractions, digits,
 * newlines, runs of spaces, non-ASCII, invalid UTF-8, an added token. */
static const char *const TEXTS[] = {
    "Hello world! It's 2024, isn't it?",
    "  a\n\n\tb   c\r\n",
    "caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80 12345678",
    "\xff\xfe\xc3 bad \xe2\x82",
    "<|endoftext|>x<s></s>",
    "",
};

static void decode_all(const mr_tokenizer *t, const int32_t *ids, int n) {
    for (int skip = 0; skip < 2; skip++) {
        char *text = NULL;
        size_t len = 0;
        if (mr_tokenizer_decode(t, ids, n, skip, &text, &len) == MR_OK) (void)strlen(text);
        free(text);
    }
    size_t cap = mr_tokenizer_stream_bound(t);
    char *out = malloc(cap ? cap : 1);
    if (!out) return;
    mr_tokenizer_stream s;
    mr_tokenizer_stream_init(&s, t, 0);
    size_t len;
    for (int i = 0; i < n; i++) {
        if (mr_tokenizer_stream_push(&s, ids[i], out, cap, &len) != MR_OK) break;
        (void)mr_tokenizer_is_special(t, ids[i]);
        size_t blen;
        const char *b = mr_tokenizer_token_bytes(t, ids[i], &blen);
        if (b && blen) (void)b[blen - 1];
    }
    (void)mr_tokenizer_stream_flush(&s, out, cap, &len);
    free(out);
}

static void encode_decode(const mr_tokenizer *t, const char *text, size_t len) {
    for (int special = 0; special < 2; special++) {
        int32_t *ids = NULL;
        int n = 0;
        if (mr_tokenizer_encode(t, text, len, special, &ids, &n) == MR_OK) decode_all(t, ids, n);
        free(ids);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    int fd = fuzz_file("fuzz-tokenizer", data, size, path);
    if (fd < 0) return 0;
    mr_tokenizer *t = NULL;
    if (mr_tokenizer_load_json(&t, path) == MR_OK) {
        for (size_t i = 0; i < sizeof TEXTS / sizeof TEXTS[0]; i++)
            encode_decode(t, TEXTS[i], strlen(TEXTS[i]));
        /* The input itself: a tokenizer.json is a text full of the
         * vocabulary's own spellings. */
        encode_decode(t, (const char *)data, size);
        (void)mr_tokenizer_token_id(t, "<|endoftext|>");
        (void)mr_tokenizer_bos_id(t);
        (void)mr_tokenizer_eos_id(t);
        int32_t bad[3] = {-1, mr_tokenizer_vocab_size(t), 0};
        decode_all(t, bad, 3);
        mr_tokenizer_free(t);
    }
    close(fd);
    return 0;
}
