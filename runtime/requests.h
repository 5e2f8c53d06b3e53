/* The offline job's JSONL formats.
 *
 * Input, one request per line:
 *   {"id": "a1", "tokens": [1, 2, 3], "max_tokens": 64, "temperature": 0.8,
 *    "top_p": 0.9, "top_k": 40, "seed": 7, "stop_token_ids": [2], "ignore_eos": false}
 * Output, one line per input line, in input order:
 *   {"id": "a1", "tokens": [...], "finish_reason": "stop"|"length",
 *    "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}
 * or, for a line that could not be run:
 *   {"id": "a1", "line": 12, "error": {"message": "..."}}
 * Blank lines are skipped. */
#ifndef MR_REQUESTS_H
#define MR_REQUESTS_H

#include <stdio.h>

#include "runtime/engine.h"

typedef struct mr_request_defaults {
    int max_tokens;
    mr_sample_params sample;
    int ignore_eos;
} mr_request_defaults;

/* Parse one line into r (r->line and r->index set by the caller).  A bad
 * line is not a failure of the job: r->finish = MR_FINISH_ERROR and
 * r->error says why; the return value is MR_OK unless memory ran out. */
mr_status mr_request_parse(mr_request *r, const char *line, const mr_request_defaults *d);

/* Read a whole JSONL file.  *reqs is malloc'ed; free with mr_requests_free. */
mr_status mr_requests_read(const char *path, const mr_request_defaults *d, mr_request **reqs, int *n);
void mr_requests_free(mr_request *reqs, int n);

/* Format a finished request as one JSON line (with '\n'); malloc'ed. */
char *mr_request_format(const mr_request *r);

/* Writes result lines in input order as requests finish out of order;
 * each line is written whole and flushed. */
typedef struct mr_output mr_output;
mr_status mr_output_open(mr_output **out, const char *path, int n_requests, int overwrite);
mr_status mr_output_put(mr_output *o, const mr_request *r);
/* The same for a line formatted elsewhere (another rank); takes `line`. */
mr_status mr_output_put_line(mr_output *o, int index, char *line);
mr_status mr_output_close(mr_output *o);

#endif
