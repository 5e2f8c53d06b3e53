/* Last-error storage, status names and the log line writer. */
#define _GNU_SOURCE
#include "status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define MR_ERRMSG_MAX 2048

static _Thread_local char g_msg[MR_ERRMSG_MAX];

mr_status mr_error(mr_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msg, sizeof g_msg, fmt, ap);
    va_end(ap);
    return st;
}

mr_status mr_error_context(mr_status st, const char *fmt, ...) {
    char buf[2 * MR_ERRMSG_MAX + 4];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, MR_ERRMSG_MAX, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if (n > MR_ERRMSG_MAX - 1) n = MR_ERRMSG_MAX - 1;
    memcpy(buf + n, ": ", 2);
    size_t old = strnlen(g_msg, MR_ERRMSG_MAX - 1);
    memcpy(buf + n + 2, g_msg, old);
    size_t total = (size_t)n + 2 + old;
    if (total > MR_ERRMSG_MAX - 1) total = MR_ERRMSG_MAX - 1;
    memcpy(g_msg, buf, total);
    g_msg[total] = 0;
    return st;
}

const char *mr_last_error(void) { return g_msg[0] ? g_msg : "no error message recorded"; }
void mr_clear_error(void) { g_msg[0] = 0; }

const char *mr_status_name(mr_status st) {
    static const char *names[MR_STATUS_COUNT] = {
        [MR_OK] = "ok",
        [MR_ERR_INPUT] = "invalid input",
        [MR_ERR_UNSUPPORTED] = "unsupported",
        [MR_ERR_IO] = "i/o error",
        [MR_ERR_NOMEM] = "out of memory",
        [MR_ERR_INTERNAL] = "internal error",
    };
    return (st >= 0 && st < MR_STATUS_COUNT) ? names[st] : "unknown status";
}

int mr_status_exit_code(mr_status st) {
    switch (st) {
    case MR_OK: return 0;
    case MR_ERR_INPUT:
    case MR_ERR_UNSUPPORTED:
    case MR_ERR_IO: return 2;
    default: return 1;
    }
}

static int g_rank = 0, g_world = 1;
static int g_level = -1;

void mr_log_set_rank(int rank, int world) { g_rank = rank; g_world = world; }

int mr_log_enabled(mr_log_level lvl) {
    if (g_level < 0) {
        const char *e = getenv("MR_LOG_LEVEL");
        g_level = MR_LOG_INFO;
        if (e) {
            if (!strcasecmp(e, "error")) g_level = MR_LOG_ERROR;
            else if (!strcasecmp(e, "warn")) g_level = MR_LOG_WARN;
            else if (!strcasecmp(e, "debug")) g_level = MR_LOG_DEBUG;
        }
    }
    return (int)lvl <= g_level;
}

void mr_log_write(mr_log_level lvl, const char *file, int line, const char *fmt, ...) {
    static const char tag[MR_LOG_LEVEL_COUNT] = {'E', 'W', 'I', 'D'};
    char host[64] = "?", msg[4096];
    gethostname(host, sizeof host - 1);
    const char *base = strrchr(file, '/');
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "[%s:%d r%d/%d] %c %s:%d %s\n", host, (int)getpid(), g_rank, g_world,
            tag[lvl], base ? base + 1 : file, line, msg);
}

mr_status mr_malloc(void **out, size_t bytes, const char *what) {
    *out = malloc(bytes ? bytes : 1);
    if (!*out) return mr_error(MR_ERR_NOMEM, "out of memory allocating %zu bytes for %s", bytes, what);
    return MR_OK;
}

mr_status mr_calloc(void **out, size_t n, size_t size, const char *what) {
    *out = calloc(n ? n : 1, size ? size : 1);
    if (!*out) return mr_error(MR_ERR_NOMEM, "out of memory allocating %zu x %zu bytes for %s", n, size, what);
    return MR_OK;
}
