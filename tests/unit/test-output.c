/* The resumable output (runtime/output.h) and SHA-256: lines appended with
 * their journal, a manifest refusing changed settings, recovery from torn,
 * unrecorded and corrupted lines, the final input-order pass and the
 * crash between its steps. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "runtime/output.h"
#include "runtime/sha256.h"

static char dir[4096], out[4200], man[4300], jour[4300];

static void sha_vectors(void) {
    struct { const char *in; const char *hex; } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        mr_sha256 s;
        char hex[65];
        mr_sha256_init(&s);
        mr_sha256_update(&s, v[i].in, strlen(v[i].in));
        mr_sha256_final_hex(&s, hex);
        CHECK(!strcmp(hex, v[i].hex), "sha256(\"%s\") = %s", v[i].in, hex);
    }
    /* a million 'a', fed in uneven pieces (buffer joins) */
    mr_sha256 s;
    char hex[65], chunk[997];
    memset(chunk, 'a', sizeof chunk);
    mr_sha256_init(&s);
    for (size_t left = 1000000; left;) {
        size_t k = left < sizeof chunk ? left : (left % 7) + 50;
        mr_sha256_update(&s, chunk, k);
        left -= k;
    }
    mr_sha256_final_hex(&s, hex);
    CHECK(!strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"), "sha256(1M a) = %s", hex);
}

static mr_manifest *settings(const char *temp, const char *data) {
    mr_manifest *m = mr_manifest_create();
    mr_manifest_set(m, "input.sha256", "abc", 1);
    mr_manifest_set(m, "generation.temperature", temp, 1);
    mr_manifest_set(m, "parallel.data", data, 0);
    return m;
}

static mr_status open_out(mr_output **o, int n, const mr_manifest *m, int overwrite, int require) {
    mr_output_options oo = {.path = out, .n_requests = n, .overwrite = overwrite, .require_resume = require,
                            .fsync_interval = 0, .created = 1234, .manifest = m};
    return mr_output_open(o, &oo);
}

static void put(mr_output *o, int i) {
    char line[64];
    snprintf(line, sizeof line, "{\"id\":\"r%d\",\"x\":%d}\n", i, i * i);
    CHECK(mr_output_put_line(o, i, line, strlen(line), i == 3) == MR_OK, "put %d: %s", i, mr_last_error());
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = calloc(1, 1 << 16);
    size_t n = fread(buf, 1, (1 << 16) - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

static void append(const char *path, const char *text) {
    FILE *f = fopen(path, "ab");
    fputs(text, f);
    fclose(f);
}

static void resume_cycle(void) {
    enum { N = 8 };
    mr_manifest *m = settings("0.5", "1");
    mr_output *o = NULL;
    /* --resume with nothing to resume */
    CHECK(open_out(&o, N, m, 0, 1) == MR_ERR_INPUT && mr_test_contains(mr_last_error(), "nothing to resume"),
          "require_resume without a manifest: %s", mr_last_error());
    CHECK(open_out(&o, N, m, 0, 0) == MR_OK, "fresh open: %s", mr_last_error());
    CHECK(mr_output_n_done(o) == 0 && mr_output_created(o) == 1234, "fresh: %d done", mr_output_n_done(o));
    int order[] = {5, 1, 3};
    for (int i = 0; i < 3; i++) put(o, order[i]);
    CHECK(mr_output_put_line(o, 5, "{}\n", 3, 0) == MR_ERR_INTERNAL, "a second answer of 5 is refused");
    int complete = 1;
    CHECK(mr_output_close(o, &complete) == MR_OK && !complete, "close incomplete: %s", mr_last_error());
    char *txt = slurp(man);
    CHECK(txt && strstr(txt, "\"state\": \"stopped\"") && strstr(txt, "\"lines\": 3"), "manifest: %s", txt);
    free(txt);

    /* a line written but not recorded, then a torn one: both cut */
    append(out, "{\"id\":\"r0\",\"x\":0}\n{\"id\":\"r2\",\"x");
    /* another time stamp and data size: the manifest's time stamp stays, data may change */
    mr_manifest *m2 = settings("0.5", "4");
    mr_output_options oo = {.path = out, .n_requests = N, .fsync_interval = 0, .created = 999, .manifest = m2};
    CHECK(mr_output_open(&o, &oo) == MR_OK, "resume: %s", mr_last_error());
    CHECK(mr_output_n_done(o) == 3 && mr_output_created(o) == 1234 && mr_output_answered(o) == 2,
          "resume found %d lines (want 3), created %lld", mr_output_n_done(o), mr_output_created(o));
    const uint8_t *d = mr_output_done(o);
    CHECK(d[1] && d[3] && d[5] && !d[0] && !d[2], "done bitmap");
    put(o, 0);
    put(o, 2);
    CHECK(mr_output_close(o, &complete) == MR_OK && !complete, "close 2: %s", mr_last_error());

    /* a corrupted byte inside line 4 of 5: that line and the ones after it go */
    txt = slurp(out);
    char *p = strstr(txt, "\"r0\"");
    CHECK(p != NULL, "line r0 present");
    if (p) {
        p[2] = 'X';
        FILE *f = fopen(out, "wb");
        fputs(txt, f);
        fclose(f);
    }
    free(txt);
    CHECK(mr_output_open(&o, &oo) == MR_OK, "resume 2: %s", mr_last_error());
    CHECK(mr_output_n_done(o) == 3, "after corruption %d lines kept (want 3)", mr_output_n_done(o));
    for (int i = 0; i < N; i++)
        if (!mr_output_done(o)[i]) put(o, i);
    CHECK(mr_output_close(o, &complete) == MR_OK && complete, "close complete: %s", mr_last_error());
    txt = slurp(out);
    char want[1024] = "";
    for (int i = 0; i < N; i++)
        snprintf(want + strlen(want), sizeof want - strlen(want), "{\"id\":\"r%d\",\"x\":%d}\n", i, i * i);
    CHECK(txt && !strcmp(txt, want), "final file not in input order:\n%s", txt);
    free(txt);
    CHECK(access(jour, F_OK) != 0, "journal removed when complete");

    /* complete: nothing to do */
    CHECK(mr_output_open(&o, &oo) == MR_OK && mr_output_n_done(o) == N, "reopen complete: %s", mr_last_error());
    CHECK(mr_output_close(o, &complete) == MR_OK && complete, "close again");

    /* a crash after "complete" was written but before the rename: the
     * sorted copy waits beside OUT and open finishes the rename */
    char sorting[4300];
    snprintf(sorting, sizeof sorting, "%s.sorting", out);
    rename(out, sorting);
    append(out, "{\"id\":\"r7\",\"x\":49}\n");
    CHECK(mr_output_open(&o, &oo) == MR_OK, "reopen after interrupted rename: %s", mr_last_error());
    mr_output_close(o, NULL);
    txt = slurp(out);
    CHECK(txt && !strcmp(txt, want) && access(sorting, F_OK) != 0, "interrupted rename finished: %s", txt);
    free(txt);

    /* changed settings: refused, each named, nothing touched */
    mr_manifest *m3 = settings("0.7", "1");
    mr_manifest_set(m3, "input.sha256", "def", 1);
    CHECK(open_out(&o, N, m3, 0, 0) == MR_ERR_INPUT, "changed settings accepted");
    const char *e = mr_last_error();
    CHECK(mr_test_contains(e, "input changed: sha256 was abc, now def") &&
              mr_test_contains(e, "generation changed: temperature was 0.5, now 0.7") &&
              mr_test_contains(e, "2 settings differ"),
          "message: %s", e);
    txt = slurp(out);
    CHECK(txt && !strcmp(txt, want), "refused resume touched the output");
    free(txt);
    /* --overwrite starts over */
    CHECK(open_out(&o, N, m3, 1, 0) == MR_OK && mr_output_n_done(o) == 0, "overwrite: %s", mr_last_error());
    mr_output_close(o, NULL);
    txt = slurp(out);
    CHECK(txt && !*txt, "overwrite emptied the output");
    free(txt);
    /* an output without manifest is not resumed, nor replaced */
    append(out, "{\"id\":\"x\"}\n");
    unlink(man);
    CHECK(open_out(&o, N, m3, 0, 0) == MR_ERR_INPUT && mr_test_contains(mr_last_error(), "already exists"),
          "output without manifest: %s", mr_last_error());
    mr_manifest_destroy(m);
    mr_manifest_destroy(m2);
    mr_manifest_destroy(m3);
}

int main(void) {
    snprintf(dir, sizeof dir, "%s", mr_test_tmpdir());
    snprintf(out, sizeof out, "%s/out.jsonl", dir);
    snprintf(man, sizeof man, "%s" MR_OUTPUT_MANIFEST_SUFFIX, out);
    snprintf(jour, sizeof jour, "%s" MR_OUTPUT_JOURNAL_SUFFIX, out);
    sha_vectors();
    resume_cycle();
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) return 1;
    return mr_test_summary();
}
