/* See requests.h.  Input lines are untrusted: every field is type- and
 * range-checked and a bad line becomes an error record, never a crash. */
#define _GNU_SOURCE
#include "runtime/requests.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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

mr_status mr_request_parse(mr_request *r, const char *line, const mr_request_defaults *d) {
    json_error_t jerr;
    r->max_tokens = d->max_tokens;
    r->sample = d->sample;
    r->ignore_eos = d->ignore_eos;
    json_t *o = json_loads(line, JSON_REJECT_DUPLICATES, &jerr);
    if (!o) return bad(r, "invalid JSON at column %d: %s", jerr.column, jerr.text);
    mr_status st = MR_OK;
    if (!json_is_object(o)) { st = bad(r, "expected a JSON object"); goto out; }
    json_t *id = json_object_get(o, "id");
    if (id && (json_is_string(id) || json_is_integer(id))) {
        r->id_json = json_dumps(id, JSON_ENCODE_ANY);
    } else {
        char buf[32];
        snprintf(buf, sizeof buf, "%d", r->line);
        r->id_json = strdup(buf);
    }
    if (!r->id_json) { st = mr_error(MR_ERR_NOMEM, "out of memory"); goto out; }
    r->id_hash = mr_hash_id(r->id_json);
    if (id && !json_is_string(id) && !json_is_integer(id)) { st = bad(r, "\"id\" must be a string or an integer"); goto out; }
    json_t *toks = json_object_get(o, "tokens");
    if (!toks) { st = bad(r, "missing \"tokens\" (a list of token ids)"); goto out; }
    if (!json_is_array(toks)) { st = bad(r, "\"tokens\" must be a list of token ids"); goto out; }
    size_t n = json_array_size(toks);
    r->prompt = malloc((n ? n : 1) * sizeof(int32_t));
    if (!r->prompt) { st = mr_error(MR_ERR_NOMEM, "out of memory"); goto out; }
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(toks, i);
        if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) > 0x7fffffff) {
            st = bad(r, "\"tokens\"[%zu] is not a token id", i);
            goto out;
        }
        r->prompt[i] = (int32_t)json_integer_value(t);
    }
    r->n_prompt = (int)n;
    long long x;
    int err = 0;
    if (get_int_field(o, "max_tokens", 1, 1 << 24, &x, &err)) r->max_tokens = (int)x;
    if (err) { st = bad(r, "\"max_tokens\" must be an integer >= 1"); goto out; }
    if (get_int_field(o, "top_k", 0, 1 << 30, &x, &err)) r->sample.top_k = (int)x;
    if (err) { st = bad(r, "\"top_k\" must be an integer >= 0"); goto out; }
    if (get_int_field(o, "seed", 0, 0x7fffffffffffffffLL, &x, &err)) r->sample.seed = (uint64_t)x;
    if (err) { st = bad(r, "\"seed\" must be a non-negative integer"); goto out; }
    json_t *v = json_object_get(o, "temperature");
    if (v && !json_is_null(v)) {
        if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 100) {
            st = bad(r, "\"temperature\" must be a number in [0, 100]");
            goto out;
        }
        r->sample.temperature = (float)json_number_value(v);
    }
    v = json_object_get(o, "top_p");
    if (v && !json_is_null(v)) {
        if (!json_is_number(v) || json_number_value(v) <= 0 || json_number_value(v) > 1) {
            st = bad(r, "\"top_p\" must be a number in (0, 1]");
            goto out;
        }
        r->sample.top_p = (float)json_number_value(v);
    }
    v = json_object_get(o, "ignore_eos");
    if (v && !json_is_null(v)) {
        if (!json_is_boolean(v)) { st = bad(r, "\"ignore_eos\" must be true or false"); goto out; }
        r->ignore_eos = json_is_true(v);
    }
    v = json_object_get(o, "stop_token_ids");
    if (v && !json_is_null(v)) {
        if (!json_is_array(v) || json_array_size(v) > MR_MAX_STOP_IDS) {
            st = bad(r, "\"stop_token_ids\" must be a list of at most %d token ids", MR_MAX_STOP_IDS);
            goto out;
        }
        for (size_t i = 0; i < json_array_size(v); i++) {
            json_t *t = json_array_get(v, i);
            if (!json_is_integer(t)) { st = bad(r, "\"stop_token_ids\"[%zu] is not a token id", i); goto out; }
            r->stop_ids[r->n_stop_ids++] = (int32_t)json_integer_value(t);
        }
    }
out:
    json_decref(o);
    return st;
}

static int blank(const char *s) {
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\n') return 0;
    return 1;
}

mr_status mr_requests_read(const char *path, const mr_request_defaults *d, mr_request **reqs, int *n) {
    *reqs = NULL;
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return mr_error(MR_ERR_IO, "cannot open input %s: %s", path, strerror(errno));
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

char *mr_request_format(const mr_request *r) {
    json_t *o = json_object();
    json_error_t jerr;
    json_t *id = json_loads(r->id_json ? r->id_json : "null", JSON_DECODE_ANY, &jerr);
    json_object_set_new(o, "id", id ? id : json_null());
    if (r->finish == MR_FINISH_ERROR) {
        if (r->line) json_object_set_new(o, "line", json_integer(r->line));
        json_t *e = json_object();
        json_object_set_new(e, "message", json_string(r->error ? r->error : "error"));
        json_object_set_new(o, "error", e);
    } else {
        json_t *t = json_array();
        for (int i = 0; i < r->n_out; i++) json_array_append_new(t, json_integer(r->out[i]));
        json_object_set_new(o, "tokens", t);
        json_object_set_new(o, "finish_reason", json_string(mr_finish_name(r->finish)));
        json_t *u = json_object();
        json_object_set_new(u, "prompt_tokens", json_integer(r->n_prompt));
        json_object_set_new(u, "completion_tokens", json_integer(r->n_out));
        json_object_set_new(u, "total_tokens", json_integer(r->n_prompt + r->n_out));
        json_object_set_new(o, "usage", u);
    }
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

struct mr_output {
    FILE *f;
    char *path;
    char **pending; /* formatted lines waiting for earlier ones */
    int n, next;
};

mr_status mr_output_open(mr_output **out, const char *path, int n, int overwrite) {
    struct stat sb;
    if (!overwrite && stat(path, &sb) == 0 && sb.st_size > 0)
        return mr_error(MR_ERR_INPUT, "output %s already exists and is not empty; pass --overwrite to replace it",
                        path);
    mr_output *o = calloc(1, sizeof *o);
    if (!o) return mr_error(MR_ERR_NOMEM, "out of memory");
    o->pending = calloc((size_t)(n ? n : 1), sizeof(char *));
    o->path = strdup(path);
    o->n = n;
    o->f = fopen(path, "wb");
    if (!o->f || !o->pending || !o->path) {
        mr_status st = mr_error(MR_ERR_IO, "cannot open output %s: %s", path, strerror(errno));
        if (o->f) fclose(o->f);
        free(o->pending);
        free(o->path);
        free(o);
        return st;
    }
    *out = o;
    return MR_OK;
}

mr_status mr_output_put(mr_output *o, const mr_request *r) {
    char *line = mr_request_format(r);
    if (!line) return mr_error(MR_ERR_NOMEM, "out of memory formatting a result");
    return mr_output_put_line(o, r->index, line);
}

mr_status mr_output_put_line(mr_output *o, int index, char *line) {
    if (index < 0 || index >= o->n || o->pending[index]) {
        free(line);
        return mr_error(MR_ERR_INTERNAL, "request %d finished twice", index);
    }
    o->pending[index] = line;
    while (o->next < o->n && o->pending[o->next]) {
        char *s = o->pending[o->next];
        size_t len = strlen(s);
        if (fwrite(s, 1, len, o->f) != len || fflush(o->f) != 0)
            return mr_error(MR_ERR_IO, "writing %s: %s", o->path, strerror(errno));
        free(s);
        o->pending[o->next] = (char *)1; /* written */
        o->next++;
    }
    return MR_OK;
}

mr_status mr_output_close(mr_output *o) {
    if (!o) return MR_OK;
    mr_status st = MR_OK;
    if (fclose(o->f) != 0) st = mr_error(MR_ERR_IO, "closing %s: %s", o->path, strerror(errno));
    for (int i = o->next; i < o->n; i++)
        if (o->pending[i] && o->pending[i] != (char *)1) free(o->pending[i]);
    free(o->pending);
    free(o->path);
    free(o);
    return st;
}
