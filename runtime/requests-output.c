/* Result lines of the offline job (formats in requests.h); output.c
 * writes them. */
#define _GNU_SOURCE
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "runtime/requests.h"

/* "IN.jsonl:12: message" */
static json_t *error_text(const mr_request *r, const mr_format_info *info) {
    const char *msg = r->error ? r->error : "error";
    if (!info || !info->input || !r->line) return json_string(msg);
    char *s = NULL;
    if (asprintf(&s, "%s:%d: %s", info->input, r->line, msg) < 0) return NULL;
    json_t *j = json_string(s);
    free(s);
    return j;
}

static json_t *usage(const mr_request *r) {
    json_t *u = json_object();
    json_object_set_new(u, "prompt_tokens", json_integer(r->n_prompt));
    json_object_set_new(u, "completion_tokens", json_integer(r->n_out));
    json_object_set_new(u, "total_tokens", json_integer(r->n_prompt + r->n_out));
    return u;
}

static json_t *text_of(const mr_request *r) {
    return json_stringn(r->text ? r->text : "", r->text ? r->n_text : 0);
}

static json_t *native(const mr_request *r, json_t *id, const mr_format_info *info) {
    json_t *o = json_object();
    json_object_set_new(o, "id", id);
    if (r->finish == MR_FINISH_ERROR) {
        if (r->line) json_object_set_new(o, "line", json_integer(r->line));
        json_t *e = json_object();
        json_object_set_new(e, "message", error_text(r, info));
        json_object_set_new(o, "error", e);
        return o;
    }
    if (r->text) json_object_set_new(o, "text", text_of(r));
    json_t *t = json_array();
    for (int i = 0; i < r->n_out; i++) json_array_append_new(t, json_integer(r->out[i]));
    json_object_set_new(o, "tokens", t);
    json_object_set_new(o, "finish_reason", json_string(mr_finish_name(r->finish)));
    json_object_set_new(o, "usage", usage(r));
    return o;
}

/* vLLM's stop_reason: the stop string or stop token id that ended the
 * request, null for EOS or length. */
static json_t *stop_reason(const mr_request *r) {
    if (r->stop_hit) return json_string(r->stop[r->stop_hit - 1]);
    if (r->finish == MR_FINISH_STOP && r->n_out)
        for (int i = 0; i < r->n_stop_ids; i++)
            if (r->stop_ids[i] == r->out[r->n_out - 1]) return json_integer(r->out[r->n_out - 1]);
    return json_null();
}

/* Ids are made from the line number, so that a rerun or another plan
 * writes the same file. */
static json_t *completions(const mr_request *r, json_t *custom_id, const mr_format_info *info) {
    char id[64], rid[64], cid[64];
    snprintf(id, sizeof id, "moerun-%d", r->line);
    snprintf(rid, sizeof rid, "moerun-batch-%d", r->line);
    snprintf(cid, sizeof cid, "cmpl-%d", r->line);
    json_t *o = json_object(), *resp = json_object();
    json_object_set_new(o, "id", json_string(id));
    json_object_set_new(o, "custom_id", custom_id);
    json_object_set_new(o, "response", resp);
    int err = r->finish == MR_FINISH_ERROR;
    json_object_set_new(resp, "status_code", json_integer(err ? 400 : 200));
    json_object_set_new(resp, "request_id", json_string(rid));
    if (err) {
        json_object_set_new(resp, "body", json_null());
        json_object_set_new(o, "error", error_text(r, info));
        return o;
    }
    json_t *b = json_object(), *choice = json_object(), *choices = json_array();
    json_object_set_new(b, "id", json_string(cid));
    json_object_set_new(b, "object", json_string("text_completion"));
    json_object_set_new(b, "created", json_integer(info ? info->created : 0));
    const char *model = r->model ? r->model : info && info->model ? info->model : "";
    json_object_set_new(b, "model", json_string(model));
    json_object_set_new(choice, "index", json_integer(0));
    json_object_set_new(choice, "text", text_of(r));
    json_object_set_new(choice, "logprobs", json_null());
    json_object_set_new(choice, "finish_reason", json_string(mr_finish_name(r->finish)));
    json_object_set_new(choice, "stop_reason", stop_reason(r));
    json_array_append_new(choices, choice);
    json_object_set_new(b, "choices", choices);
    json_object_set_new(b, "usage", usage(r));
    json_object_set_new(resp, "body", b);
    json_object_set_new(o, "error", json_null());
    return o;
}

char *mr_request_format(const mr_request *r, const mr_format_info *info) {
    json_error_t jerr;
    json_t *id = json_loads(r->id_json ? r->id_json : "null", JSON_DECODE_ANY, &jerr);
    if (!id) id = json_null();
    json_t *o = r->api == MR_API_COMPLETIONS ? completions(r, id, info) : native(r, id, info);
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!s) return NULL;
    size_t n = strlen(s);
    char *line = realloc(s, n + 2);
    if (!line) { free(s); return NULL; }
    line[n] = '\n';
    line[n + 1] = 0;
    return line;
}
