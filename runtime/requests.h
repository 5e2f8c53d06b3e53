/* The offline job's JSONL formats.
 *
 * Native input, one request per line, "prompt" (text, needs a tokenizer) or
 * "tokens" (ids):
 *   {"id": "a1", "prompt": "The capital of France is", "max_tokens": 64,
 *    "temperature": 0.8, "top_p": 0.9, "top_k": 40, "seed": 7,
 *    "stop": "\n" or ["\n", "."], "stop_token_ids": [2], "ignore_eos": false}
 *   {"id": "a2", "tokens": [1, 2, 3], ...}
 * Native output, one line per input line ("text" when a tokenizer is
 * loaded; order: see output.h):
 *   {"id": "a1", "text": "...", "tokens": [...], "finish_reason": "stop"|"length",
 *    "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}
 * or, for a line that could not be run:
 *   {"id": "a1", "line": 12, "error": {"message": "IN.jsonl:12: ..."}}
 *
 * OpenAI batch lines (as `vllm run-batch` and OpenAI's Batch API take them):
 *   {"custom_id": "r1", "method": "POST", "url": "/v1/completions",
 *    "body": {"model": "m", "prompt": "...", "max_tokens": 16, ...the fields above}}
 * are answered as
 *   {"id": "moerun-12", "custom_id": "r1", "response": {"status_code": 200,
 *    "request_id": "moerun-batch-12", "body": {"id": "cmpl-12", "object":
 *    "text_completion", "created": T, "model": "m", "choices": [{"index": 0,
 *    "text": "...", "logprobs": null, "finish_reason": "stop", "stop_reason":
 *    null}], "usage": {...}}}, "error": null}
 * and refused lines as {"id", "custom_id", "response": {"status_code": 400,
 * "request_id", "body": null}, "error": "IN.jsonl:12: ..."}.  A line is in
 * the batch format when it has "custom_id", "url" or "body"; a line that is
 * not JSON is answered in the format of the file's first JSON object line.
 * Blank lines are skipped. */
#ifndef MR_REQUESTS_H
#define MR_REQUESTS_H

#include <stdio.h>

#include "runtime/engine.h"

typedef struct mr_request_defaults {
    int max_tokens;
    mr_sample_params sample;
    int ignore_eos;
    const mr_tokenizer *tok; /* NULL: text prompts and stop strings are refused */
} mr_request_defaults;

/* What result lines say beyond the request itself. */
typedef struct mr_format_info {
    const char *input;  /* input path: error messages start "IN.jsonl:LINE: " */
    const char *model;  /* "model" of OpenAI responses whose request named none */
    long long created;  /* "created" of OpenAI responses (Unix seconds) */
} mr_format_info;

/* Parse one line into r (r->line, r->index and r->api, the format of an
 * unparsable line, set by the caller).  A bad line is not a failure of the
 * job: r->finish = MR_FINISH_ERROR and r->error says why; the return value
 * is MR_OK unless memory ran out. */
mr_status mr_request_parse(mr_request *r, const char *line, const mr_request_defaults *d);

/* Read a whole JSONL file.  *reqs is malloc'ed; free with mr_requests_free. */
mr_status mr_requests_read(const char *path, const mr_request_defaults *d, mr_request **reqs, int *n);
void mr_requests_free(mr_request *reqs, int n);

/* Format a finished request as one JSON line (with '\n'); malloc'ed.
 * info may be NULL. */
char *mr_request_format(const mr_request *r, const mr_format_info *info);

/* The writer of result lines (resumable) is in output.h. */

#endif
