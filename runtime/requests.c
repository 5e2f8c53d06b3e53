/* See requests.h.  Input lines are untrusted: every field is type- and
 * range-checked and a bad line becomes an error record, never a crash.
 * Results are written by requests-output.c. */
#define _GNU_SOURCE
#include "runtime/requests.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static mr_status bad(mr_request *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static mr_status bad(mr_request *r, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    free(r->error);
    r->error = strdup(buf);
    r->finish = MR_FINISH_ERROR;
    return r->error ? MR_OK : mr_error(MR_ERR_NOMEM, "out of memory");
}

static int get_int_field(json_t *o, const char *key, long long lo, long long hi, long long *out, int *err) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) { *err = 1; return 0; }
    *out = json_integer_value(v);
    return 1;
}

#define NO_TOKENIZER                                                                                              \
    "the model has no tokenizer (no tokenizer.json beside config.json); pass --tokenizer PATH or send token ids " \
    "in \"tokens\""

/* The prompt: `key` holds text (tokenized here) or a list of token ids. */
static mr_status parse_prompt(mr_request *r, json_t *v, const char *key, const mr_request_defaults *d) {
    if (json_is_string(v)) {
        if (!d->tok) return bad(r, "\"%s\" is text but %s", key, NO_TOKENIZER);
        int n = 0;
        if (mr_tokenizer_encode(d->tok, json_string_value(v), json_string_length(v), 1, &r->prompt, &n) != MR_OK)
            return bad(r, "cannot tokenize \"%s\": %s", key, mr_last_error());
        r->n_prompt = n;
        return MR_OK;
    }
    if (json_is_array(v) && json_array_size(v) == 1 && json_is_string(json_array_get(v, 0)))
        return parse_prompt(r, json_array_get(v, 0), key, d); /* ["text"]: one prompt */
    if (!json_is_array(v)) return bad(r, "\"%s\" must be a string or a list of token ids", key);
    size_t n = json_array_size(v);
    r->prompt = malloc((n ? n : 1) * sizeof(int32_t));
    if (!r->prompt) return mr_error(MR_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(v, i);
        if (json_is_string(t) || json_is_array(t))
            return bad(r, "\"%s\" holds several prompts; put one prompt per line", key);
        if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) > 0x7fffffff)
            return bad(r, "\"%s\"[%zu] is not a token id", key, i);
        r->prompt[i] = (int32_t)json_integer_value(t);
    }
    r->n_prompt = (int)n;
    return MR_OK;
}

static mr_status parse_stop(mr_request *r, json_t *v, const mr_request_defaults *d) {
    if (!v || json_is_null(v)) return MR_OK;
    size_t n = json_is_array(v) ? json_array_size(v) : 1;
    if (!json_is_string(v) && !json_is_array(v)) return bad(r, "\"stop\" must be a string or a list of strings");
    if (n > MR_MAX_STOP_STRINGS) return bad(r, "\"stop\" has %zu strings, at most %d", n, MR_MAX_STOP_STRINGS);
    if (n && !d->tok) return bad(r, "stop strings need a tokenizer, but %s", NO_TOKENIZER);
    r->stop = calloc(n ? n : 1, sizeof(char *));
    if (!r->stop) return mr_error(MR_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_is_array(v) ? json_array_get(v, i) : v;
        if (!json_is_string(s)) return bad(r, "\"stop\"[%zu] is not a string", i);
        if (json_string_length(s) == 0 || strlen(json_string_value(s)) != json_string_length(s))
            return bad(r, "\"stop\"[%zu] is empty or holds a NUL character", i);
        r->stop[r->n_stop] = strdup(json_string_value(s));
        if (!r->stop[r->n_stop++]) return mr_error(MR_ERR_NOMEM, "out of memory");
    }
    return MR_OK;
}

/* Sampling and stopping fields, shared by both formats. */
static mr_status parse_params(mr_request *r, json_t *o, const mr_request_defaults *d) {
    long long x;
    int err = 0;
    if (get_int_field(o, "max_tokens", 1, 1 << 24, &x, &err)) r->max_tokens = (int)x;
    if (err) return bad(r, "\"max_tokens\" must be an integer >= 1");
    if (get_int_field(o, "top_k", -1, 1 << 30, &x, &err)) r->sample.top_k = x < 0 ? 0 : (int)x; /* vLLM: -1 = off */
    if (err) return bad(r, "\"top_k\" must be an integer >= 0 (or -1 for off)");
    if (get_int_field(o, "seed", 0, 0x7fffffffffffffffLL, &x, &err)) r->sample.seed = (uint64_t)x;
    if (err) return bad(r, "\"seed\" must be a non-negative integer");
    json_t *v = json_object_get(o, "temperature");
    if (v && !json_is_null(v)) {
        if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 100)
            return bad(r, "\"temperature\" must be a number in [0, 100]");
        r->sample.temperature = (float)json_number_value(v);
    }
    v = json_object_get(o, "top_p");
    if (v && !json_is_null(v)) {
        if (!json_is_number(v) || json_number_value(v) <= 0 || json_number_value(v) > 1)
            return bad(r, "\"top_p\" must be a number in (0, 1]");
        r->sample.top_p = (float)json_number_value(v);
    }
    v = json_object_get(o, "ignore_eos");
    if (v && !json_is_null(v)) {
        if (!json_is_boolean(v)) return bad(r, "\"ignore_eos\" must be true or false");
        r->ignore_eos = json_is_true(v);
    }
    v = json_object_get(o, "stop_token_ids");
    if (v && !json_is_null(v)) {
        if (!json_is_array(v) || json_array_size(v) > MR_MAX_STOP_IDS)
            return bad(r, "\"stop_token_ids\" must be a list of at most %d token ids", MR_MAX_STOP_IDS);
        for (size_t i = 0; i < json_array_size(v); i++) {
            json_t *t = json_array_get(v, i);
            if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) > 0x7fffffff)
                return bad(r, "\"stop_token_ids\"[%zu] is not a token id", i);
            r->stop_ids[r->n_stop_ids++] = (int32_t)json_integer_value(t);
        }
    }
    return parse_stop(r, json_object_get(o, "stop"), d);
}

static mr_status set_id(mr_request *r, json_t *id) {
    if (id && (json_is_string(id) || json_is_integer(id))) {
        r->id_json = json_dumps(id, JSON_ENCODE_ANY);
    } else {
        char buf[32];
        snprintf(buf, sizeof buf, "%d", r->line);
        r->id_json = strdup(buf);
    }
    if (!r->id_json) return mr_error(MR_ERR_NOMEM, "out of memory");
    r->id_hash = mr_hash_id(r->id_json);
    return MR_OK;
}

static mr_status parse_native(mr_request *r, json_t *o, const mr_request_defaults *d) {
    json_t *id = json_object_get(o, "id");
    MR_CHECK(set_id(r, id));
    if (id && !json_is_string(id) && !json_is_integer(id)) return bad(r, "\"id\" must be a string or an integer");
    json_t *toks = json_object_get(o, "tokens"), *prompt = json_object_get(o, "prompt");
    if (toks && prompt) return bad(r, "give either \"prompt\" (text) or \"tokens\" (ids), not both");
    if (!toks && !prompt) return bad(r, "missing \"prompt\" (text) or \"tokens\" (a list of token ids)");
    if (toks && !json_is_array(toks)) return bad(r, "\"tokens\" must be a list of token ids");
    MR_CHECK(parse_prompt(r, toks ? toks : prompt, toks ? "tokens" : "prompt", d));
    if (r->finish == MR_FINISH_ERROR) return MR_OK;
    return parse_params(r, o, d);
}

/* A /v1/completions body.  Fields that change what comes back and that we
 * do not implement are refused by name rather than ignored. */
static mr_status parse_completions_body(mr_request *r, json_t *b, const mr_request_defaults *d) {
    if (!d->tok) return bad(r, "the /v1/completions format answers with text, but %s", NO_TOKENIZER);
    json_t *v = json_object_get(b, "model");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v)) return bad(r, "\"body.model\" must be a string");
        if (!(r->model = strdup(json_string_value(v)))) return mr_error(MR_ERR_NOMEM, "out of memory");
    }
    json_t *prompt = json_object_get(b, "prompt");
    if (!prompt) return bad(r, "missing \"body.prompt\"");
    long long x;
    int err = 0;
    get_int_field(b, "n", 1, 1, &x, &err);
    if (err) return bad(r, "\"body.n\" other than 1 is not supported");
    get_int_field(b, "best_of", 1, 1, &x, &err);
    if (err) return bad(r, "\"body.best_of\" other than 1 is not supported");
    if (json_is_true(json_object_get(b, "stream"))) return bad(r, "Request must not be sent in stream mode");
    if (json_is_true(json_object_get(b, "echo"))) return bad(r, "\"body.echo\" is not supported");
    v = json_object_get(b, "logprobs");
    if (v && !json_is_null(v) && !json_is_false(v)) return bad(r, "\"body.logprobs\" is not supported");
    v = json_object_get(b, "suffix");
    if (v && !json_is_null(v)) return bad(r, "\"body.suffix\" is not supported");
    MR_CHECK(parse_prompt(r, prompt, "body.prompt", d));
    if (r->finish == MR_FINISH_ERROR) return MR_OK;
    return parse_params(r, b, d);
}

static mr_status parse_batch_line(mr_request *r, json_t *o, const mr_request_defaults *d) {
    json_t *cid = json_object_get(o, "custom_id");
    if (json_is_string(cid)) MR_CHECK(set_id(r, cid));
    else if (!(r->id_json = strdup("null"))) return mr_error(MR_ERR_NOMEM, "out of memory");
    r->id_hash = mr_hash_id(r->id_json);
    if (!json_is_string(cid)) return bad(r, "missing \"custom_id\" (a string)");
    json_t *method = json_object_get(o, "method"), *url = json_object_get(o, "url"), *body = json_object_get(o, "body");
    if (method && (!json_is_string(method) || strcmp(json_string_value(method), "POST")))
        return bad(r, "\"method\" must be \"POST\"");
    if (!json_is_string(url)) return bad(r, "missing \"url\" (\"/v1/completions\")");
    if (strcmp(json_string_value(url), "/v1/completions"))
        return bad(r, "URL %.200s is not supported; moerun answers /v1/completions", json_string_value(url));
    if (!json_is_object(body)) return bad(r, "missing \"body\" (an object)");
    return parse_completions_body(r, body, d);
}

static int is_batch_line(json_t *o) {
    return json_object_get(o, "custom_id") || json_object_get(o, "url") || json_object_get(o, "body");
}

mr_status mr_request_parse(mr_request *r, const char *line, const mr_request_defaults *d) {
    json_error_t jerr;
    r->max_tokens = d->max_tokens;
    r->sample = d->sample;
    r->ignore_eos = d->ignore_eos;
    json_t *o = json_loads(line, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    mr_status st;
    if (!o) {
        st = bad(r, "invalid JSON at column %d: %s", jerr.column, jerr.text);
    } else if (!json_is_object(o)) {
        st = bad(r, "expected a JSON object");
    } else {
        r->api = is_batch_line(o) ? MR_API_COMPLETIONS : MR_API_NATIVE;
        st = r->api == MR_API_NATIVE ? parse_native(r, o, d) : parse_batch_line(r, o, d);
    }
    if (st == MR_OK && !r->id_json) { /* unparsable line: the id is its number */
        char buf[32] = "null";
        if (r->api == MR_API_NATIVE) snprintf(buf, sizeof buf, "%d", r->line);
        if (!(r->id_json = strdup(buf))) st = mr_error(MR_ERR_NOMEM, "out of memory");
        else r->id_hash = mr_hash_id(r->id_json);
    }
    json_decref(o);
    return st;
}

static int blank(const char *s) {
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\n') return 0;
    return 1;
}

/* The format of the file's first line that is a JSON object, for lines
 * that are not JSON at all. */
static mr_request_api file_api(FILE *f) {
    char *line = NULL;
    size_t cap = 0;
    mr_request_api api = MR_API_NATIVE;
    while (getline(&line, &cap, f) >= 0) {
        json_error_t e;
        json_t *o = json_loads(line, 0, &e);
        int found = o && json_is_object(o);
        if (found) api = is_batch_line(o) ? MR_API_COMPLETIONS : MR_API_NATIVE;
        json_decref(o);
        if (found) break;
    }
    free(line);
    rewind(f);
    return api;
}

mr_status mr_requests_read(const char *path, const mr_request_defaults *d, mr_request **reqs, int *n) {
    *reqs = NULL;
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return mr_error(MR_ERR_IO, "cannot open input %s: %s", path, strerror(errno));
    mr_request_api api = file_api(f);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int cnt = 0, alloc = 0, lineno = 0;
    mr_request *rs = NULL;
    mr_status st = MR_OK;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if ((size_t)len != strlen(line)) { /* a NUL byte inside the line */
            line[0] = '\x01';
            line[1] = 0;
        }
        if (blank(line)) continue;
        if (cnt == alloc) {
            alloc = alloc ? 2 * alloc : 64;
            mr_request *t = realloc(rs, (size_t)alloc * sizeof *rs);
            if (!t) { st = mr_error(MR_ERR_NOMEM, "out of memory reading %s", path); goto out; }
            rs = t;
        }
        mr_request *r = &rs[cnt++];
        memset(r, 0, sizeof *r);
        r->index = cnt - 1;
        r->line = lineno;
        r->api = api;
        MR_CHECK_GOTO(mr_request_parse(r, line, d), st, out);
    }
    if (ferror(f)) st = mr_error(MR_ERR_IO, "error reading %s", path);
out:
    free(line);
    fclose(f);
    if (st != MR_OK) {
        mr_requests_free(rs, cnt);
        return st;
    }
    *reqs = rs;
    *n = cnt;
    return MR_OK;
}

void mr_requests_free(mr_request *reqs, int n) {
    for (int i = 0; i < n; i++) mr_request_clear(&reqs[i]);
    free(reqs);
}
