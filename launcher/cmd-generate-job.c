/* See generate-job.h.  Stop protocol:
 *
 *   signal on rank k ──TAG_STOP(level)──► rank 0 ──TAG_STOP──► every first-stage rank
 *   first-stage ranks: level = max(own signal, notices, grace expired)
 *   engine: the ranks scheduling one replica (tensor group, or the lockstep
 *           group) reduce the level once per tick and apply it together;
 *           later pipeline stages follow their first stage's stop header.
 *
 * Level DRAIN admits nothing new and lets the running requests finish for
 * up to runtime.stop_grace seconds; NOW (grace over, or a second signal)
 * abandons what still runs: those requests are answered again on resume,
 * from scratch, with the same result. */
#define _GNU_SOURCE
#include "launcher/generate-job.h"

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { TAG_STOP = 301, TAG_LINE = 302 };

/* ---- signals ------------------------------------------------------------ */

static volatile sig_atomic_t g_signals, g_last_signal;

static void on_signal(int sig) {
    g_signals = g_signals + 1;
    g_last_signal = sig;
    if (g_signals >= 3) { /* a third one: the default action, now */
        signal(sig, SIG_DFL);
        raise(sig);
    }
}

void mr_gen_signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

int mr_gen_signals(void) { return g_signals; }

/* ---- state --------------------------------------------------------------- */

/* What travels with a result line to rank 0 (index -1: end mark). */
typedef struct line_hdr {
    int32_t index, is_error, prompt_tokens, generated_tokens;
} line_hdr;

typedef struct pending {
    void *req;
    char *buf;
} pending;

struct mr_gen {
    mr_gen_options o;
    int *first; /* o.first_ranks, owned */
    mr_comm *ctl;
    int rank;
    /* stopping */
    int sig_seen, asked, told, heard; /* signals acted on; level asked; sent; heard from rank 0 */
    double stop_t0;
    /* reporters: lines on their way to rank 0 */
    pending *pend;
    int n_pend, cap_pend;
    /* rank 0 */
    int ends;
    int lines_now;
    unsigned long long prompt_tok, gen_tok;
    double t0, next_print;
    int tty, tty_dirty;
    /* every rank */
    int done_here, answered_here;
    long tick_sleep_us; /* MR_TEST_TICK_US: tests stretch a tiny model's run over seconds */
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const char *signal_name(int sig) {
    return sig == SIGTERM ? "SIGTERM" : sig == SIGUSR1 ? "SIGUSR1" : sig == SIGINT ? "SIGINT" : "a signal";
}

mr_status mr_gen_create(mr_gen **out, const mr_gen_options *opt) {
    mr_gen *g = calloc(1, sizeof *g);
    if (!g) return mr_error(MR_ERR_NOMEM, "out of memory");
    g->o = *opt;
    g->rank = opt->world->rank;
    int *first = malloc(sizeof(int) * (size_t)(opt->n_first ? opt->n_first : 1));
    if (!first) {
        free(g);
        return mr_error(MR_ERR_NOMEM, "out of memory");
    }
    memcpy(first, opt->first_ranks, sizeof(int) * (size_t)opt->n_first);
    g->first = first;
    g->o.first_ranks = first;
    g->t0 = now_s();
    g->tty = isatty(2);
    const char *slow = getenv("MR_TEST_TICK_US");
    g->tick_sleep_us = slow ? atol(slow) : 0;
    g->next_print = g->t0 + (g->tty ? 1.0 : opt->progress_interval);
    mr_status st = mr_comm_mpi_split(opt->world, 0, g->rank, &g->ctl);
    if (st != MR_OK) {
        free(first);
        free(g);
        return st;
    }
    *out = g;
    return MR_OK;
}

void mr_gen_destroy(mr_gen *g) {
    if (!g) return;
    for (int i = 0; i < g->n_pend; i++) free(g->pend[i].buf); /* only after an error */
    free(g->pend);
    free(g->first);
    if (g->ctl) {
        /* notices nobody waited for (sent after their receiver finished) */
        for (int got = 1; got;) {
            void *buf = NULL;
            size_t bytes;
            int peer;
            if (g->ctl->ops->recv_any(g->ctl, TAG_STOP, 0, &buf, &bytes, &peer, &got) != MR_OK) break;
            if (got) free(buf);
        }
        mr_comm_destroy(g->ctl);
    }
    free(g);
}

int mr_gen_done_here(const mr_gen *g) { return g->done_here; }
int mr_gen_answered_here(const mr_gen *g) { return g->answered_here; }
double mr_gen_comm_seconds(const mr_gen *g) { return g->ctl ? g->ctl->busy_s : 0; }

/* ---- stopping ------------------------------------------------------------ */

static mr_status tell(mr_gen *g, int to, int level) {
    int32_t v = level;
    return g->ctl->ops->send(g->ctl, &v, sizeof v, to, TAG_STOP);
}

/* This rank's stop level from its signals, notices and the grace. */
static mr_status poll_stop(mr_gen *g) {
    int level = g->asked, sig = g_signals;
    if (sig > g->sig_seen) {
        g->sig_seen = sig;
        int want = sig >= 2 ? MR_STOP_NOW : MR_STOP_DRAIN;
        if (want > level) level = want;
        MR_WARN("%s: %s", signal_name(g_last_signal),
                    want == MR_STOP_NOW ? "stopping now; running requests are abandoned (answered again on resume)"
                                        : "stopping: no new requests, running ones may finish");
    }
    if (g->rank == 0 || g->o.first_stage) {
        for (int got = 1; got;) {
            void *buf = NULL;
            size_t bytes = 0;
            int peer = -1;
            MR_CHECK(g->ctl->ops->recv_any(g->ctl, TAG_STOP, 0, &buf, &bytes, &peer, &got));
            if (!got) break;
            int32_t v = 0;
            if (bytes == sizeof v) memcpy(&v, buf, sizeof v);
            free(buf);
            if (v < MR_STOP_NONE || v >= MR_STOP_COUNT)
                return mr_error(MR_ERR_INTERNAL, "stop notice %d from rank %d", (int)v, peer);
            if (g->rank == 0 && v > level) MR_WARN("rank %d asks to stop (it received a signal)", peer);
            if (peer == 0 && v > g->heard) g->heard = v;
            if (v > level) level = v;
        }
    }
    double t = now_s();
    if (level >= MR_STOP_DRAIN && g->stop_t0 == 0) g->stop_t0 = t;
    if (level == MR_STOP_DRAIN && t - g->stop_t0 >= g->o.stop_grace) {
        level = MR_STOP_NOW;
        if (g->rank == 0)
            MR_WARN("stop grace of %.1f s is over: abandoning running requests (answered again on resume)",
                    g->o.stop_grace);
    }
    g->asked = level;
    int known = g->told > g->heard ? g->told : g->heard;
    if (level > known) {
        g->told = level;
        if (g->rank != 0) {
            MR_CHECK(tell(g, 0, level));
        } else {
            for (int i = 0; i < g->o.n_first; i++)
                if (g->o.first_ranks[i] != 0) MR_CHECK(tell(g, g->o.first_ranks[i], level));
        }
    }
    return MR_OK;
}

/* ---- result lines -------------------------------------------------------- */

static void count_tokens(mr_gen *g, int prompt, int generated) {
    g->lines_now++;
    g->prompt_tok += (unsigned long long)prompt;
    g->gen_tok += (unsigned long long)generated;
}

/* Rank 0: write every line that has arrived (block: wait for one first). */
static mr_status poll_lines(mr_gen *g, int block, int *n_got) {
    *n_got = 0;
    for (;;) {
        void *buf = NULL;
        size_t bytes = 0;
        int peer = -1, got = 0;
        MR_CHECK(g->ctl->ops->recv_any(g->ctl, TAG_LINE, block, &buf, &bytes, &peer, &got));
        block = 0;
        if (!got) return MR_OK;
        (*n_got)++;
        line_hdr h;
        if (bytes < sizeof h) {
            free(buf);
            return mr_error(MR_ERR_INTERNAL, "short result message (%zu bytes) from rank %d", bytes, peer);
        }
        memcpy(&h, buf, sizeof h);
        mr_status st = MR_OK;
        if (h.index < 0) {
            g->ends++;
        } else {
            st = mr_output_put_line(g->o.out, h.index, (char *)buf + sizeof h, bytes - sizeof h, h.is_error);
            count_tokens(g, h.prompt_tokens, h.generated_tokens);
        }
        free(buf);
        MR_CHECK(st);
    }
}

/* Reporters: forget the sends that completed (block: wait for all). */
static mr_status test_sends(mr_gen *g, int block) {
    int keep = 0;
    for (int i = 0; i < g->n_pend; i++) {
        int done = 1;
        if (g->ctl->ops->test) MR_CHECK(g->ctl->ops->test(g->ctl, &g->pend[i].req, block, &done));
        if (done) free(g->pend[i].buf);
        else g->pend[keep++] = g->pend[i];
    }
    g->n_pend = keep;
    return MR_OK;
}

static mr_status send_line(mr_gen *g, const line_hdr *h, const char *line, size_t len) {
    char *buf = malloc(sizeof *h + len);
    if (!buf) return mr_error(MR_ERR_NOMEM, "out of memory");
    memcpy(buf, h, sizeof *h);
    if (len) memcpy(buf + sizeof *h, line, len);
    mr_comm *c = g->ctl;
    if (!c->ops->isend) {
        mr_status st = c->ops->send(c, buf, sizeof *h + len, 0, TAG_LINE);
        free(buf);
        return st;
    }
    if (g->n_pend == g->cap_pend) {
        pending *t = realloc(g->pend, (size_t)(g->cap_pend = g->cap_pend ? 2 * g->cap_pend : 64) * sizeof *t);
        if (!t) {
            free(buf);
            return mr_error(MR_ERR_NOMEM, "out of memory");
        }
        g->pend = t;
    }
    pending *p = &g->pend[g->n_pend];
    mr_status st = c->ops->isend(c, buf, sizeof *h + len, 0, TAG_LINE, &p->req);
    if (st != MR_OK) {
        free(buf);
        return st;
    }
    p->buf = buf;
    g->n_pend++;
    return test_sends(g, 0);
}

/* ---- progress -------------------------------------------------------------- */

static void format_eta(double s, char *buf, size_t n) {
    if (!(s >= 0) || s > 1e7) {
        snprintf(buf, n, "?");
        return;
    }
    long t = (long)(s + 0.5);
    snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
}

static void progress(mr_gen *g, int final) {
    if (g->rank != 0 || g->o.quiet || !g->o.out) return;
    double t = now_s();
    if (!final && t < g->next_print) return;
    double interval = g->tty ? 1.0 : g->o.progress_interval;
    if (!g->tty && interval <= 0) return;
    g->next_print = t + interval;
    if (final && !g->tty) return; /* the summary follows */
    int done = mr_output_n_done(g->o.out), total = g->o.total;
    double el = t - g->t0 > 1e-9 ? t - g->t0 : 1e-9;
    double rate = g->lines_now / el;
    char eta[32];
    format_eta(rate > 0 ? (total - done) / rate : -1, eta, sizeof eta);
    char line[256];
    snprintf(line, sizeof line,
             "%d/%d requests (%.1f%%), %.2f requests/s, prompt %.1f tokens/s, generated %.1f tokens/s, ETA %s", done,
             total, total ? 100.0 * done / total : 100.0, rate, (double)g->prompt_tok / el, (double)g->gen_tok / el,
             eta);
    if (g->tty) {
        fprintf(stderr, "\r%s\033[K%s", line, final ? "\n" : "");
        fflush(stderr);
        g->tty_dirty = !final;
    } else {
        MR_INFO("progress: %s", line);
    }
}

/* ---- engine hooks ------------------------------------------------------------ */

mr_status mr_gen_tick(void *user, int *stop) {
    mr_gen *g = user;
    MR_CHECK(poll_stop(g));
    if (g->rank == 0) {
        int n;
        MR_CHECK(poll_lines(g, 0, &n));
        MR_CHECK(mr_output_tick(g->o.out));
        progress(g, 0);
    } else if (g->n_pend) {
        MR_CHECK(test_sends(g, 0));
    }
    *stop = g->asked;
    if (g->tick_sleep_us > 0 && g->o.first_stage) {
        struct timespec ts = {g->tick_sleep_us / 1000000, g->tick_sleep_us % 1000000 * 1000};
        nanosleep(&ts, NULL);
    }
    return MR_OK;
}

mr_status mr_gen_done(void *user, mr_request *r) {
    mr_gen *g = user;
    g->done_here++;
    if (!g->o.reporter) return MR_OK;
    if (r->finish == MR_FINISH_ERROR)
        MR_WARN("%s:%d: %s", g->o.info->input, r->line, r->error ? r->error : "error");
    else
        g->answered_here++;
    if (g->rank == 0) {
        MR_CHECK(mr_output_put(g->o.out, r));
        count_tokens(g, r->n_prompt, r->n_out);
        return MR_OK;
    }
    char *line = mr_request_format(r, g->o.info);
    if (!line) return mr_error(MR_ERR_NOMEM, "out of memory formatting a result");
    line_hdr h = {.index = r->index, .is_error = r->finish == MR_FINISH_ERROR, .prompt_tokens = r->n_prompt,
                  .generated_tokens = r->n_out};
    mr_status st = send_line(g, &h, line, strlen(line));
    free(line);
    return st;
}

mr_status mr_gen_finish(mr_gen *g) {
    if (g->rank != 0) {
        if (!g->o.reporter) return MR_OK;
        MR_CHECK(test_sends(g, 1));
        line_hdr end = {.index = -1};
        return g->ctl->ops->send(g->ctl, &end, sizeof end, 0, TAG_LINE);
    }
    /* rank 0: the other replicas' lines, while still relaying stops */
    while (g->ends < g->o.n_replicas - 1) {
        int n;
        MR_CHECK(poll_stop(g));
        MR_CHECK(poll_lines(g, 0, &n));
        MR_CHECK(mr_output_tick(g->o.out));
        progress(g, 0);
        if (!n) {
            struct timespec ts = {0, 1000000}; /* 1 ms: this core may be another rank's */
            nanosleep(&ts, NULL);
        }
    }
    progress(g, 1);
    return MR_OK;
}

/* ---- summary ------------------------------------------------------------------- */

mr_status mr_gen_summary(mr_gen *g, const mr_engine_stats *s, double comm_s, double imbalance, double wall_s) {
    mr_comm *w = g->o.world;
    double mine[4] = {comm_s + mr_gen_comm_seconds(g), g->o.reporter ? (double)s->prompt_tokens : 0,
                      g->o.reporter ? (double)s->generated_tokens : 0, g->o.reporter ? s->seconds : 0};
    double *all = malloc((size_t)w->size * sizeof mine);
    if (!all) return mr_error(MR_ERR_NOMEM, "out of memory");
    mr_status st = w->ops->allgather(w, mine, all, sizeof mine);
    if (st != MR_OK || g->rank != 0 || g->o.quiet) {
        free(all);
        return st;
    }
    double prompt = 0, gen = 0, gen_s = 0;
    for (int r = 0; r < w->size; r++) {
        prompt += all[4 * r + 1];
        gen += all[4 * r + 2];
        if (all[4 * r + 3] > gen_s) gen_s = all[4 * r + 3];
    }
    int done = g->o.out ? mr_output_n_done(g->o.out) : g->o.total;
    MR_INFO("done: %d of %d requests answered (%d in this run), %.0f prompt + %.0f generated tokens in %.2f s "
            "(%.1f generated tokens/s, %.1f prompt tokens/s, %d replica%s); wall time %.2f s",
            done, g->o.total, g->lines_now, prompt, gen, gen_s, gen_s > 0 ? gen / gen_s : 0.0,
            gen_s > 0 ? prompt / gen_s : 0.0, g->o.n_replicas, g->o.n_replicas > 1 ? "s" : "", wall_s);
    if (w->size > 1) {
        char buf[1024];
        int off = 0;
        if (w->size <= 16) {
            for (int r = 0; r < w->size && off < (int)sizeof buf - 48; r++)
                off += snprintf(buf + off, sizeof buf - (size_t)off, "%s r%d %.2f s (%.0f%%)", r ? "," : "", r,
                                all[4 * r], wall_s > 0 ? 100.0 * all[4 * r] / wall_s : 0.0);
        } else {
            int lo = 0, hi = 0;
            double sum = 0;
            for (int r = 0; r < w->size; r++) {
                sum += all[4 * r];
                if (all[4 * r] < all[4 * lo]) lo = r;
                if (all[4 * r] > all[4 * hi]) hi = r;
            }
            snprintf(buf, sizeof buf, " min %.2f s (r%d), mean %.2f s, max %.2f s (r%d)", all[4 * lo], lo,
                     sum / w->size, all[4 * hi], hi);
        }
        MR_INFO("time in communication per rank (waiting included):%s", buf);
    }
    if (imbalance > 0) MR_INFO("expert load imbalance (max/mean routed tokens per expert): %.2f", imbalance);
    free(all);
    return MR_OK;
}
