/* Status codes, the last-error message and logging shared by every module.
 *
 * Functions that can fail return mr_status and record a message with
 * mr_error(); the caller reads it with mr_last_error().  The message is
 * thread-local, so worker threads do not clobber each other.  MR_CHECK and
 * MR_CHECK_GOTO are the only macros that hide a return or a goto. */
#ifndef MR_STATUS_H
#define MR_STATUS_H

#include <stdarg.h>
#include <stddef.h>

typedef enum mr_status {
    MR_OK = 0,
    MR_ERR_INPUT,       /* bad user input: file contents, options, requests */
    MR_ERR_UNSUPPORTED, /* valid input that moerun does not implement */
    MR_ERR_IO,          /* a file could not be opened, read or written */
    MR_ERR_NOMEM,
    MR_ERR_INTERNAL,
    MR_STATUS_COUNT
} mr_status;

/* Record a formatted message for `st` and return `st`. */
mr_status mr_error(mr_status st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prefix the current message with more context ("loading X: <old>"). */
mr_status mr_error_context(mr_status st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
const char *mr_last_error(void);
void mr_clear_error(void);
const char *mr_status_name(mr_status st);
/* Process exit status for a failure: 2 for user errors, 1 for internal. */
int mr_status_exit_code(mr_status st);

#define MR_CHECK(call)                                                        \
    do {                                                                      \
        mr_status mr_st_ = (call);                                            \
        if (mr_st_ != MR_OK) return mr_st_;                                   \
    } while (0)

#define MR_CHECK_GOTO(call, st, label)                                        \
    do {                                                                      \
        (st) = (call);                                                        \
        if ((st) != MR_OK) goto label;                                        \
    } while (0)

/* ---- logging --------------------------------------------------------
 * Line format: [host:pid r0/1] I file.c:42 message
 * MR_LOG_LEVEL=error|warn|info|debug (default info). */
typedef enum mr_log_level {
    MR_LOG_ERROR = 0,
    MR_LOG_WARN,
    MR_LOG_INFO,
    MR_LOG_DEBUG,
    MR_LOG_LEVEL_COUNT
} mr_log_level;

void mr_log_set_rank(int rank, int world);
int mr_log_enabled(mr_log_level lvl);
void mr_log_write(mr_log_level lvl, const char *file, int line,
                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#define MR_LOG(lvl, ...)                                                      \
    do {                                                                      \
        if (mr_log_enabled(lvl)) mr_log_write(lvl, __FILE__, __LINE__, __VA_ARGS__); \
    } while (0)
#define MR_ERRORF(...) MR_LOG(MR_LOG_ERROR, __VA_ARGS__)
#define MR_WARN(...) MR_LOG(MR_LOG_WARN, __VA_ARGS__)
#define MR_INFO(...) MR_LOG(MR_LOG_INFO, __VA_ARGS__)
#define MR_DEBUG(...) MR_LOG(MR_LOG_DEBUG, __VA_ARGS__)

/* Allocation helpers that record MR_ERR_NOMEM with the size asked for. */
mr_status mr_malloc(void **out, size_t bytes, const char *what);
mr_status mr_calloc(void **out, size_t n, size_t size, const char *what);

#endif
