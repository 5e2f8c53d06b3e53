/* Text of a request's result, built token by token on the scheduling rank
 * (see mr_request_text_push in engine.h), and stop strings.
 *
 * A stop string may span tokens, so after each append only the window that
 * can hold a new match is searched: from (old length - longest stop + 1).
 * The earliest match across all stop strings wins; the text is cut before
 * it and the tokens stay as generated (vLLM keeps them too). */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "runtime/engine.h"

/* The buffer grows by doubling, so a request costs O(log n) reallocations
 * over its whole life; it is result storage, like r->out. */
static mr_status reserve(mr_request *r, size_t extra) {
    if (r->n_text + extra + 1 <= r->cap_text) return MR_OK;
    size_t cap = r->cap_text ? r->cap_text : 256;
    while (cap < r->n_text + extra + 1) cap *= 2;
    char *t = realloc(r->text, cap);
    if (!t) return mr_error(MR_ERR_NOMEM, "out of memory for the text of a result");
    r->text = t;
    r->cap_text = cap;
    return MR_OK;
}

static void find_stop(mr_request *r, size_t old_len) {
    size_t best = (size_t)-1;
    int which = -1;
    for (int i = 0; i < r->n_stop; i++) {
        size_t sl = strlen(r->stop[i]);
        if (sl == 0 || sl > r->n_text) continue;
        size_t from = old_len + 1 > sl ? old_len + 1 - sl : 0;
        const char *hit = memmem(r->text + from, r->n_text - from, r->stop[i], sl);
        if (hit && (size_t)(hit - r->text) < best) {
            best = (size_t)(hit - r->text);
            which = i;
        }
    }
    if (which < 0) return;
    r->n_text = best;
    r->text[best] = 0;
    r->stop_hit = which + 1;
    r->finish = MR_FINISH_STOP;
}

mr_status mr_request_text_push(mr_request *r, const mr_tokenizer *t, int32_t id) {
    /* A model vocabulary padded past the tokenizer's: such ids have no text. */
    if (id < 0 || id >= mr_tokenizer_vocab_size(t)) return MR_OK;
    size_t bound = mr_tokenizer_stream_bound(t), len = 0, old = r->n_text;
    MR_CHECK(reserve(r, bound));
    MR_CHECK(mr_tokenizer_stream_push(&r->stream, id, r->text + r->n_text, r->cap_text - r->n_text - 1, &len));
    r->n_text += len;
    r->text[r->n_text] = 0;
    if (len && r->n_stop) find_stop(r, old);
    return MR_OK;
}

mr_status mr_request_text_finish(mr_request *r, const mr_tokenizer *t) {
    size_t len = 0, old = r->n_text;
    MR_CHECK(reserve(r, mr_tokenizer_stream_bound(t)));
    if (!r->stop_hit) {
        MR_CHECK(mr_tokenizer_stream_flush(&r->stream, r->text + r->n_text, r->cap_text - r->n_text - 1, &len));
        r->n_text += len;
        if (len && r->n_stop) find_stop(r, old);
    }
    r->text[r->n_text] = 0;
    return MR_OK;
}
