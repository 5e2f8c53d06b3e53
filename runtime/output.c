/* See output.h: result lines appended with a journal beside them, a
 * manifest of what produced them, resume and the final input-order pass. */
#define _GNU_SOURCE
#include "runtime/output.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MANIFEST_FORMAT "moerun-output-manifest"
#define MANIFEST_VERSION 1
#define SORT_SUFFIX ".sorting"

/* ---- manifest settings ------------------------------------------------ */

typedef struct setting {
    char *key, *value;
    int must_match;
} setting;

struct mr_manifest {
    setting *s;
    int n, cap;
};

mr_manifest *mr_manifest_create(void) { return calloc(1, sizeof(mr_manifest)); }

void mr_manifest_destroy(mr_manifest *m) {
    if (!m) return;
    for (int i = 0; i < m->n; i++) free(m->s[i].key), free(m->s[i].value);
    free(m->s);
    free(m);
}

mr_status mr_manifest_set(mr_manifest *m, const char *key, const char *value, int must_match) {
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->s[i].key, key)) {
            char *v = strdup(value);
            if (!v) return mr_error(MR_ERR_NOMEM, "out of memory");
            free(m->s[i].value);
            m->s[i].value = v;
            m->s[i].must_match = must_match;
            return MR_OK;
        }
    if (m->n == m->cap) {
        setting *t = realloc(m->s, (size_t)(m->cap = m->cap ? 2 * m->cap : 16) * sizeof *t);
        if (!t) return mr_error(MR_ERR_NOMEM, "out of memory");
        m->s = t;
    }
    setting *s = &m->s[m->n];
    s->key = strdup(key);
    s->value = strdup(value);
    s->must_match = must_match;
    if (!s->key || !s->value) {
        free(s->key), free(s->value);
        return mr_error(MR_ERR_NOMEM, "out of memory");
    }
    m->n++;
    return MR_OK;
}

/* ---- the writer ------------------------------------------------------- */

struct mr_output {
    char *path, *manifest_path, *journal_path, *sort_path;
    int fd, jfd; /* OUT and its journal, O_APPEND */
    int n;
    uint8_t *done;
    long long *off; /* byte offset and length of each answered line in OUT */
    int *len;
    int n_done, answered;
    long long size; /* of OUT: lines are only appended, by this writer */
    int last_index, in_order; /* lines so far in input order (no final pass needed) */
    int complete_at_open;
    long long created;
    double fsync_interval, last_sync;
    const mr_manifest *manifest;
    mr_format_info info;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint32_t fnv32(const char *p, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 16777619u;
    return h;
}

static mr_status write_all(int fd, const char *p, size_t n, const char *path) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return mr_error(MR_ERR_IO, "writing %s: %s", path, w < 0 ? strerror(errno) : "no progress");
        p += w;
        n -= (size_t)w;
    }
    return MR_OK;
}

/* A rename or a new file is durable once its folder is synced. */
static void fsync_dir_of(const char *path) {
    char *copy = strdup(path);
    if (!copy) return;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(copy);
}

static const char *state_name(int state) {
    static const char *n[] = {"running", "stopped", "complete"};
    return n[state];
}
enum { ST_RUNNING, ST_STOPPED, ST_COMPLETE };

static mr_status write_manifest(mr_output *o, int state) {
    json_t *root = json_object(), *must = json_object(), *info = json_object();
    const char *base = strrchr(o->path, '/');
    json_object_set_new(root, "format", json_string(MANIFEST_FORMAT));
    json_object_set_new(root, "version", json_integer(MANIFEST_VERSION));
    json_object_set_new(root, "output", json_string(base ? base + 1 : o->path));
    json_object_set_new(root, "state", json_string(state_name(state)));
    json_object_set_new(root, "requests", json_integer(o->n));
    json_object_set_new(root, "lines", json_integer(o->n_done));
    json_object_set_new(root, "answered", json_integer(o->answered));
    json_object_set_new(root, "created", json_integer(o->created));
    json_object_set_new(root, "updated", json_integer((json_int_t)time(NULL)));
    for (int i = 0; o->manifest && i < o->manifest->n; i++) {
        const setting *s = &o->manifest->s[i];
        json_object_set_new(s->must_match ? must : info, s->key, json_string(s->value));
    }
    json_object_set_new(root, "must_match", must);
    json_object_set_new(root, "info", info);
    char *tmp = NULL;
    mr_status st = MR_OK;
    if (asprintf(&tmp, "%s.tmp", o->manifest_path) < 0) {
        json_decref(root);
        return mr_error(MR_ERR_NOMEM, "out of memory");
    }
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    int fd = text ? open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : -1;
    if (!text) st = mr_error(MR_ERR_NOMEM, "out of memory");
    else if (fd < 0) st = mr_error(MR_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    else {
        st = write_all(fd, text, strlen(text), tmp);
        if (st == MR_OK) st = write_all(fd, "\n", 1, tmp);
        if (st == MR_OK && fsync(fd) != 0) st = mr_error(MR_ERR_IO, "fsync %s: %s", tmp, strerror(errno));
        close(fd);
        if (st == MR_OK && rename(tmp, o->manifest_path) != 0)
            st = mr_error(MR_ERR_IO, "cannot rename %s to %s: %s", tmp, o->manifest_path, strerror(errno));
        if (st == MR_OK) fsync_dir_of(o->manifest_path);
    }
    free(text);
    free(tmp);
    return st;
}

/* Settings of the manifest on disk against ours: every must-match key of
 * either side that differs goes into the message; changed informational
 * keys are logged. */
static mr_status compare_manifest(const mr_output *o, json_t *old) {
    json_t *must = json_object_get(old, "must_match"), *info = json_object_get(old, "info");
    char msg[1800] = "";
    size_t len = 0;
    int n_diff = 0;
    const mr_manifest *m = o->manifest;
    for (int pass = 0; pass < 2; pass++) {
        /* pass 0: our keys; pass 1: keys only the old manifest has */
        const char *key;
        json_t *v;
        int count = pass == 0 ? (m ? m->n : 0) : 0;
        for (int i = 0; i < count; i++) {
            const setting *s = &m->s[i];
            json_t *was = json_object_get(s->must_match ? must : info, s->key);
            const char *old_v = json_is_string(was) ? json_string_value(was) : "(not recorded)";
            if (!strcmp(old_v, s->value)) continue;
            if (!s->must_match) {
                MR_INFO("resuming %s with %s = %s (was %s)", o->path, s->key, s->value, old_v);
                continue;
            }
            const char *dot = strchr(s->key, '.');
            int group = dot ? (int)(dot - s->key) : (int)strlen(s->key);
            if (len < sizeof msg)
                len += (size_t)snprintf(msg + len, sizeof msg - len, "\n  %.*s changed: %s was %s, now %s", group,
                                        s->key, dot ? dot + 1 : s->key, old_v, s->value);
            n_diff++;
        }
        if (pass == 1 && json_is_object(must))
            json_object_foreach(must, key, v) {
                int ours = 0;
                for (int i = 0; m && i < m->n; i++) ours |= m->s[i].must_match && !strcmp(m->s[i].key, key);
                if (ours) continue;
                if (len < sizeof msg)
                    len += (size_t)snprintf(msg + len, sizeof msg - len, "\n  %s was %s, now not set", key,
                                            json_is_string(v) ? json_string_value(v) : "?");
                n_diff++;
            }
    }
    if (!n_diff) return MR_OK;
    return mr_error(MR_ERR_INPUT,
                    "cannot resume %s: %d setting%s from %s (pass --overwrite to start over, or run with the "
                    "recorded settings):%s",
                    o->path, n_diff, n_diff > 1 ? "s differ" : " differs", o->manifest_path, msg);
}

/* Parse "INDEX LENGTH HASH FLAG" (no newline). */
static int parse_record(const char *s, int n, int *idx, long long *len, uint32_t *hash, int *is_err) {
    char *end;
    long i = strtol(s, &end, 10);
    if (end == s || *end != ' ' || i < 0 || i >= n) return 0;
    s = end + 1;
    long long l = strtoll(s, &end, 10);
    if (end == s || *end != ' ' || l < 1 || l > (1LL << 31)) return 0;
    s = end + 1;
    unsigned long h = strtoul(s, &end, 16);
    if (end == s || *end != ' ' || h > 0xffffffffUL) return 0;
    s = end + 1;
    if ((s[0] != 'a' && s[0] != 'e') || s[1]) return 0;
    *idx = (int)i, *len = l, *hash = (uint32_t)h, *is_err = s[0] == 'e';
    return 1;
}

static mr_status read_file(const char *path, char **buf, size_t *n) {
    *buf = NULL;
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return errno == ENOENT ? MR_OK : mr_error(MR_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    size_t cap = 0;
    char chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (*n + got + 1 > cap) {
            char *t = realloc(*buf, cap = 2 * (*n + got + 1));
            if (!t) {
                fclose(f);
                return mr_error(MR_ERR_NOMEM, "out of memory reading %s", path);
            }
            *buf = t;
        }
        memcpy(*buf + *n, chunk, got);
        *n += got;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) return mr_error(MR_ERR_IO, "error reading %s", path);
    if (*buf) (*buf)[*n] = 0;
    return MR_OK;
}

/* The journal against OUT: accept records while their lines are whole,
 * then cut both files after the last accepted one. */
static mr_status recover(mr_output *o) {
    char *j = NULL, *line = NULL;
    size_t jn = 0, cap = 0;
    MR_CHECK(read_file(o->journal_path, &j, &jn));
    FILE *f = fopen(o->path, "rb");
    if (!f && errno != ENOENT) {
        free(j);
        return mr_error(MR_ERR_IO, "cannot open %s: %s", o->path, strerror(errno));
    }
    long long pos = 0;
    size_t jpos = 0;
    mr_status st = MR_OK;
    while (f && jpos < jn) {
        char *nl = memchr(j + jpos, '\n', jn - jpos);
        if (!nl) break; /* a partial record */
        *nl = 0;
        int idx, is_err;
        long long len;
        uint32_t hash;
        if (!parse_record(j + jpos, o->n, &idx, &len, &hash, &is_err) || o->done[idx]) break;
        if ((size_t)len > cap) {
            char *t = realloc(line, (size_t)len);
            if (!t) { st = mr_error(MR_ERR_NOMEM, "out of memory"); break; }
            line = t, cap = (size_t)len;
        }
        if (fread(line, 1, (size_t)len, f) != (size_t)len || line[len - 1] != '\n' || fnv32(line, (size_t)len) != hash)
            break;
        o->done[idx] = 1;
        o->off[idx] = pos;
        o->len[idx] = (int)len;
        o->n_done++;
        o->answered += !is_err;
        if (idx < o->last_index) o->in_order = 0;
        o->last_index = idx;
        pos += len;
        jpos = (size_t)(nl - j) + 1;
    }
    free(line);
    struct stat sb;
    long long size = f && fstat(fileno(f), &sb) == 0 ? (long long)sb.st_size : 0;
    if (f) fclose(f);
    free(j);
    if (st != MR_OK) return st;
    o->size = pos;
    if (size > pos) {
        MR_WARN("%s: cutting %lld bytes after the last whole recorded line (a partial line or a line not yet in "
                "the journal; it will be answered again)", o->path, size - pos);
        if (truncate(o->path, pos) != 0) return mr_error(MR_ERR_IO, "cannot truncate %s: %s", o->path, strerror(errno));
    }
    if (jn > jpos && truncate(o->journal_path, (off_t)jpos) != 0)
        return mr_error(MR_ERR_IO, "cannot truncate %s: %s", o->journal_path, strerror(errno));
    return MR_OK;
}

/* A manifest that says complete: finish a rename the crash interrupted. */
static mr_status open_complete(mr_output *o) {
    struct stat sb;
    if (stat(o->sort_path, &sb) == 0) {
        if (rename(o->sort_path, o->path) != 0)
            return mr_error(MR_ERR_IO, "cannot rename %s to %s: %s", o->sort_path, o->path, strerror(errno));
        fsync_dir_of(o->path);
    }
    if (stat(o->path, &sb) != 0)
        return mr_error(MR_ERR_INPUT, "%s says the job is complete but %s is missing; pass --overwrite to start over",
                        o->manifest_path, o->path);
    unlink(o->journal_path);
    memset(o->done, 1, (size_t)o->n);
    o->n_done = o->n;
    o->complete_at_open = 1;
    return MR_OK;
}

static mr_status open_resume(mr_output *o, json_t *old) {
    json_t *fmt = json_object_get(old, "format");
    if (!json_is_string(fmt) || strcmp(json_string_value(fmt), MANIFEST_FORMAT))
        return mr_error(MR_ERR_INPUT, "%s is not a moerun output manifest; pass --overwrite to start over",
                        o->manifest_path);
    json_t *ver = json_object_get(old, "version");
    if (!json_is_integer(ver) || json_integer_value(ver) != MANIFEST_VERSION)
        return mr_error(MR_ERR_INPUT, "%s has manifest version %lld, this moerun writes %d; pass --overwrite to start "
                        "over", o->manifest_path, json_is_integer(ver) ? (long long)json_integer_value(ver) : -1LL,
                        MANIFEST_VERSION);
    MR_CHECK(compare_manifest(o, old));
    json_t *created = json_object_get(old, "created");
    if (json_is_integer(created)) o->created = json_integer_value(created);
    const char *state = json_string_value(json_object_get(old, "state"));
    if (state && !strcmp(state, "complete")) {
        json_t *answered = json_object_get(old, "answered");
        o->answered = json_is_integer(answered) ? (int)json_integer_value(answered) : o->n;
        return open_complete(o);
    }
    unlink(o->sort_path); /* a final pass that did not get as far as the manifest */
    return recover(o);
}

static void output_free(mr_output *o) {
    if (!o) return;
    if (o->fd >= 0) close(o->fd);
    if (o->jfd >= 0) close(o->jfd);
    free(o->path), free(o->manifest_path), free(o->journal_path), free(o->sort_path);
    free(o->done), free(o->off), free(o->len);
    free(o);
}

mr_status mr_output_open(mr_output **out, const mr_output_options *opt) {
    *out = NULL;
    mr_output *o = calloc(1, sizeof *o);
    if (!o) return mr_error(MR_ERR_NOMEM, "out of memory");
    o->fd = o->jfd = -1;
    o->n = opt->n_requests;
    size_t n1 = (size_t)(o->n > 0 ? o->n : 1);
    o->path = strdup(opt->path);
    o->done = calloc(n1, 1);
    o->off = calloc(n1, sizeof *o->off);
    o->len = calloc(n1, sizeof *o->len);
    int ok = o->path && o->done && o->off && o->len && asprintf(&o->manifest_path, "%s" MR_OUTPUT_MANIFEST_SUFFIX, opt->path) >= 0 &&
             asprintf(&o->journal_path, "%s" MR_OUTPUT_JOURNAL_SUFFIX, opt->path) >= 0 &&
             asprintf(&o->sort_path, "%s" SORT_SUFFIX, opt->path) >= 0;
    if (!ok) {
        output_free(o);
        return mr_error(MR_ERR_NOMEM, "out of memory");
    }
    o->in_order = 1;
    o->last_index = -1;
    o->created = opt->created;
    o->fsync_interval = opt->fsync_interval;
    o->manifest = opt->manifest;
    mr_status st = MR_OK;
    struct stat sb;
    int have_out = stat(o->path, &sb) == 0, have_manifest = access(o->manifest_path, F_OK) == 0;
    int resume = 0;
    if (opt->overwrite) {
        if (opt->require_resume) st = mr_error(MR_ERR_INPUT, "--resume and --overwrite contradict each other");
        unlink(o->journal_path);
        unlink(o->sort_path);
    } else if (have_manifest) {
        json_error_t e;
        json_t *old = json_load_file(o->manifest_path, 0, &e);
        if (!old) st = mr_error(MR_ERR_INPUT, "%s:%d:%d: %s (a damaged manifest; pass --overwrite to start over)",
                                o->manifest_path, e.line, e.column, e.text);
        else st = open_resume(o, old);
        json_decref(old);
        resume = 1;
    } else if (opt->require_resume) {
        st = mr_error(MR_ERR_INPUT, "--resume: nothing to resume, %s has no manifest %s (run without --resume to "
                      "start)", o->path, o->manifest_path);
    } else if (have_out && sb.st_size > 0) {
        st = mr_error(MR_ERR_INPUT, "output %s already exists and is not empty (and has no manifest %s to resume "
                      "from); pass --overwrite to replace it", o->path, o->manifest_path);
    }
    if (st != MR_OK) {
        output_free(o);
        return st;
    }
    if (!o->complete_at_open) {
        int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (resume ? 0 : O_TRUNC);
        o->fd = open(o->path, flags, 0644);
        o->jfd = open(o->journal_path, flags, 0644);
        if (o->fd < 0 || o->jfd < 0)
            st = mr_error(MR_ERR_IO, "cannot open %s: %s", o->fd < 0 ? o->path : o->journal_path, strerror(errno));
        if (st == MR_OK) st = write_manifest(o, ST_RUNNING);
    }
    if (st != MR_OK) {
        output_free(o);
        return st;
    }
    if (resume && !o->complete_at_open && o->n_done)
        MR_INFO("resuming %s: %d of %d requests already answered", o->path, o->n_done, o->n);
    o->last_sync = now_s();
    *out = o;
    return MR_OK;
}

void mr_output_set_info(mr_output *o, const mr_format_info *info) { o->info = *info; }
int mr_output_n_done(const mr_output *o) { return o->n_done; }
const uint8_t *mr_output_done(const mr_output *o) { return o->done; }
long long mr_output_created(const mr_output *o) { return o->created; }
int mr_output_answered(const mr_output *o) { return o->answered; }

static mr_status sync_files(mr_output *o) {
    if (o->fd >= 0 && fdatasync(o->fd) != 0) return mr_error(MR_ERR_IO, "fsync %s: %s", o->path, strerror(errno));
    if (o->jfd >= 0 && fdatasync(o->jfd) != 0)
        return mr_error(MR_ERR_IO, "fsync %s: %s", o->journal_path, strerror(errno));
    o->last_sync = now_s();
    return MR_OK;
}

mr_status mr_output_tick(mr_output *o) {
    if (o && o->fd >= 0 && now_s() - o->last_sync >= o->fsync_interval) return sync_files(o);
    return MR_OK;
}

mr_status mr_output_put_line(mr_output *o, int index, const char *line, size_t len, int is_error) {
    if (index < 0 || index >= o->n || o->done[index] || o->fd < 0)
        return mr_error(MR_ERR_INTERNAL, "request %d answered twice (or out of range)", index);
    if (len == 0 || line[len - 1] != '\n' || memchr(line, '\n', len - 1))
        return mr_error(MR_ERR_INTERNAL, "result line of request %d is not one line", index);
    char rec[96];
    int rn = snprintf(rec, sizeof rec, "%d %zu %08x %c\n", index, len, fnv32(line, len), is_error ? 'e' : 'a');
    MR_CHECK(write_all(o->fd, line, len, o->path));
    MR_CHECK(write_all(o->jfd, rec, (size_t)rn, o->journal_path));
    o->done[index] = 1;
    o->off[index] = o->size;
    o->len[index] = (int)len;
    o->size += (long long)len;
    o->n_done++;
    o->answered += !is_error;
    if (index < o->last_index) o->in_order = 0;
    o->last_index = index;
    return mr_output_tick(o);
}

mr_status mr_output_put(mr_output *o, const mr_request *r) {
    char *line = mr_request_format(r, &o->info);
    if (!line) return mr_error(MR_ERR_NOMEM, "out of memory formatting a result");
    mr_status st = mr_output_put_line(o, r->index, line, strlen(line), r->finish == MR_FINISH_ERROR);
    free(line);
    return st;
}

/* Every line into OUT.sorting in input order, then fsync. */
static mr_status write_sorted(mr_output *o) {
    FILE *f = fopen(o->sort_path, "wb");
    if (!f) return mr_error(MR_ERR_IO, "cannot write %s: %s", o->sort_path, strerror(errno));
    int in = open(o->path, O_RDONLY | O_CLOEXEC);
    char *buf = NULL;
    size_t cap = 0;
    mr_status st = in < 0 ? mr_error(MR_ERR_IO, "cannot read %s: %s", o->path, strerror(errno)) : MR_OK;
    for (int i = 0; st == MR_OK && i < o->n; i++) {
        size_t len = (size_t)o->len[i];
        if (len > cap) {
            char *t = realloc(buf, cap = len);
            if (!t) { st = mr_error(MR_ERR_NOMEM, "out of memory"); break; }
            buf = t;
        }
        if (pread(in, buf, len, o->off[i]) != (ssize_t)len) st = mr_error(MR_ERR_IO, "short read of %s", o->path);
        else if (fwrite(buf, 1, len, f) != len) st = mr_error(MR_ERR_IO, "writing %s: %s", o->sort_path, strerror(errno));
    }
    free(buf);
    if (in >= 0) close(in);
    if (st == MR_OK && (fflush(f) != 0 || fsync(fileno(f)) != 0))
        st = mr_error(MR_ERR_IO, "writing %s: %s", o->sort_path, strerror(errno));
    if (fclose(f) != 0 && st == MR_OK) st = mr_error(MR_ERR_IO, "closing %s: %s", o->sort_path, strerror(errno));
    if (st != MR_OK) unlink(o->sort_path);
    return st;
}

mr_status mr_output_close(mr_output *o, int *complete) {
    if (complete) *complete = 0;
    if (!o) return MR_OK;
    mr_status st = MR_OK;
    if (o->complete_at_open) {
        if (complete) *complete = 1;
    } else if ((st = sync_files(o)) == MR_OK) {
        if (o->n_done == o->n) {
            /* sorted copy, then "complete" (which says: the copy is the
             * result), then the rename; open_complete finishes a rename a
             * crash interrupted */
            if (!o->in_order) st = write_sorted(o);
            if (st == MR_OK) st = write_manifest(o, ST_COMPLETE);
            if (st == MR_OK && !o->in_order) {
                if (rename(o->sort_path, o->path) != 0)
                    st = mr_error(MR_ERR_IO, "cannot rename %s to %s: %s", o->sort_path, o->path, strerror(errno));
                else fsync_dir_of(o->path);
            }
            if (st == MR_OK) unlink(o->journal_path);
            if (st == MR_OK && complete) *complete = 1;
        } else {
            st = write_manifest(o, ST_STOPPED);
        }
    }
    output_free(o);
    return st;
}
