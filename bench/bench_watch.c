/* bench_watch: what WatchJob fan-out costs the job runner. A runner function made here emits
 * N metrics records (each also appended to metrics.jsonl, as the real runner does) as fast as
 * it can; we time the job with 0 watchers, with W watchers that keep up, and with W watchers
 * that never read (stalled clients), and print records/s and the events each watcher got or
 * was told were dropped. The point: a stalled watcher must not slow the job.
 *
 * usage: bench_watch [N records (20000)] [W watchers (8)] */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/log.h"
#include "jobs.h"

static long n_records = 20000;

static aha_status flood(aha_job_ctx *ctx, aha_err *err)
{
    (void)err;
    char path[4096];
    snprintf(path, sizeof path, "%s/metrics.jsonl", ctx->job_dir);
    FILE *f = fopen(path, "a");
    *ctx->progress_total = n_records;
    for (long s = 1; s <= n_records && !*ctx->cancel; s++) {
        char rec[400];
        snprintf(rec, sizeof rec,
                 "{\"type\":\"step\",\"step\":%ld,\"total_steps\":%ld,\"reward_mean\":%.4f,"
                 "\"accuracy\":0.5,\"format_rate\":0.98,\"length_mean\":43.1,\"kl_mean\":0.0012,"
                 "\"seconds\":{\"total\":1.0}}",
                 s, n_records, (double)s / (double)n_records);
        if (f) fprintf(f, "%s\n", rec);
        ctx->emit(ctx->user, AHA_EV_METRICS, s, rec, NULL);
        *ctx->progress_step = s;
    }
    if (f) fclose(f);
    return AHA_OK;
}

typedef struct {
    aha_job_watcher *w;
    long metrics, other;
} reader;

static void *read_all(void *arg)
{
    reader *r = arg;
    for (;;) {
        aha_job_event ev;
        int got;
        aha_jobs_watch_next(r->w, 1000, &ev, &got);
        if (got < 0) break;
        if (got == 0) continue;
        if (!strcmp(ev.type, "metrics")) r->metrics++;
        else r->other++;
        aha_job_event_free(&ev);
    }
    return NULL;
}

static void run(const char *label, int watchers, int stalled)
{
    char dir[256];
    snprintf(dir, sizeof dir, "/tmp/aha-bench-watch-%d", (int)getpid());
    aha_err e;
    aha_remove_tree(dir, &e);
    aha_learner_env env = {.device = "cpu"};
    aha_jobs_opts o;
    aha_jobs_opts_init(&o);
    o.jobs_dir = dir;
    o.env = &env;
    o.run = flood;
    o.autostart = 0;
    aha_jobs *s = NULL;
    if (aha_jobs_open(&o, &s, &e) != AHA_OK) {
        fprintf(stderr, "open: %s\n", e.msg);
        exit(1);
    }
    const char *spec = "{\"kind\":\"grpo\",\"model\":\"m\",\"dataset\":\"d.jsonl\",\"steps\":1}";
    char id[64];
    if (aha_jobs_submit(s, spec, strlen(spec), id, sizeof id, &e) != AHA_OK) {
        fprintf(stderr, "submit: %s\n", e.msg);
        exit(1);
    }
    reader *r = calloc((size_t)watchers + 1, sizeof *r);
    pthread_t *t = calloc((size_t)watchers + 1, sizeof *t);
    for (int i = 0; i < watchers; i++) {
        aha_jobs_watch_open(s, id, 0, 0, &r[i].w, &e);
        if (!stalled) pthread_create(&t[i], NULL, read_all, &r[i]);
    }
    double t0 = aha_now_s();
    aha_jobs_start(s, &e);
    for (;;) {
        aha_job_info j;
        aha_jobs_get(s, id, &j, &e);
        int done = !strcmp(j.state, "succeeded");
        aha_job_info_free(&j);
        if (done) break;
        usleep(1000);
    }
    double dt = aha_now_s() - t0;
    long got = 0;
    for (int i = 0; i < watchers; i++) {
        if (stalled) read_all(&r[i]);
        else pthread_join(t[i], NULL);
        got += r[i].metrics;
        aha_jobs_watch_close(r[i].w);
    }
    printf("%-26s %3d watchers  %8.0f records/s  %.2f s  per watcher: %ld metrics shown, %llu "
           "dropped\n",
           label, watchers, (double)n_records / dt, dt, watchers ? got / watchers : 0,
           watchers ? (unsigned long long)aha_jobs_dropped_events(s) / (unsigned long long)watchers
                    : 0ULL);
    aha_jobs_close(s);
    aha_remove_tree(dir, &e);
    free(r);
    free(t);
}

int main(int argc, char **argv)
{
    aha_log_set_level(AHA_LOG_WARN);
    if (argc > 1) n_records = atol(argv[1]);
    int w = argc > 2 ? atoi(argv[2]) : 8;
    if (n_records < 1 || w < 1) {
        fprintf(stderr, "usage: bench_watch [N records] [W watchers]\n");
        return 2;
    }
    printf("bench_watch: %ld metrics records emitted by a runner, written to metrics.jsonl\n",
           n_records);
    run("no watcher", 0, 0);
    run("watchers reading", w, 0);
    run("watchers stalled", w, 1);
    return 0;
}
