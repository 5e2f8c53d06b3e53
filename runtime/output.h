/* The output of an offline job, resumable exactly once.
 *
 * Three files (OUT is the output path):
 *   OUT                  result lines, appended in completion order, each
 *                        with one write() of the whole line;
 *   OUT.journal          one text record per line of OUT, written right
 *                        after it: "INDEX LENGTH FNV32 a|e\n" (input index,
 *                        bytes with the '\n', FNV-1a of those bytes,
 *                        answered or error record);
 *   OUT.manifest.json    what produced OUT: settings that must match for a
 *                        resume (input SHA-256, model fingerprint, generation
 *                        settings, ...), informational ones (plan, paths),
 *                        "state" (running, stopped, complete), counts.
 * On open, the records whose lines are whole in OUT (length, final '\n'
 * and hash all agree) are the answered requests; anything after the last
 * such line (a partial line left by a crash, a line written but not yet
 * recorded) is cut off, so a crash never loses or duplicates a whole line.
 * When every request is answered, close rewrites OUT in input order (by a
 * temporary file and rename, the manifest saying "complete" first), so a
 * finished job reads the same however often it was interrupted.
 *
 * Both OUT and the journal are fsync'ed every fsync_interval seconds (0:
 * after every line) and at close: a SIGKILL loses nothing written (the
 * page cache survives it); a power loss loses at most the last interval,
 * which a resume recomputes. */
#ifndef MR_OUTPUT_H
#define MR_OUTPUT_H

#include <stdint.h>

#include "runtime/requests.h"

/* Settings recorded in the manifest: `must_match` ones refuse a resume when
 * they differ, the others are reported when they change. */
typedef struct mr_manifest mr_manifest;
mr_manifest *mr_manifest_create(void);
void mr_manifest_destroy(mr_manifest *m);
/* Key "group.name" ("input.sha256", "generation.temperature"); a copy of
 * the value is kept.  A key set twice keeps the last value. */
mr_status mr_manifest_set(mr_manifest *m, const char *key, const char *value, int must_match);

typedef struct mr_output_options {
    const char *path;
    int n_requests;
    int overwrite;          /* start over even if OUT exists */
    int require_resume;     /* --resume: refuse when there is nothing to resume */
    double fsync_interval;  /* seconds; 0 = every line */
    long long created;      /* the job's time stamp; a resume keeps the manifest's */
    const mr_manifest *manifest;
} mr_output_options;

typedef struct mr_output mr_output;

/* Open OUT fresh or resume it.  Refused (MR_ERR_INPUT, rank-0 message) when
 * OUT exists without a manifest (unless overwrite), when the manifest's
 * must-match settings differ (every differing one named), or when
 * require_resume and there is nothing to resume. */
mr_status mr_output_open(mr_output **out, const mr_output_options *opt);
/* Strings of info are borrowed and must outlive o. */
void mr_output_set_info(mr_output *o, const mr_format_info *info);

/* What open found: lines already answered (a copy of done[i] per request,
 * 1 = answered), the time stamp to use, whether OUT is complete. */
int mr_output_n_done(const mr_output *o);
const uint8_t *mr_output_done(const mr_output *o);
long long mr_output_created(const mr_output *o);
int mr_output_answered(const mr_output *o); /* lines without an error record */

mr_status mr_output_put(mr_output *o, const mr_request *r);
/* A line formatted elsewhere (another rank): whole, ending in '\n'. */
mr_status mr_output_put_line(mr_output *o, int index, const char *line, size_t len, int is_error);
/* fsync now if the interval has passed since the last one. */
mr_status mr_output_tick(mr_output *o);
/* Flush and fsync; every request answered: input order and state complete;
 * otherwise state stopped.  *complete (may be NULL) says which.  Frees o
 * (NULL is fine). */
mr_status mr_output_close(mr_output *o, int *complete);

/* Companion file names: path + suffix (malloc'ed). */
#define MR_OUTPUT_MANIFEST_SUFFIX ".manifest.json"
#define MR_OUTPUT_JOURNAL_SUFFIX ".journal"

#endif
