/* test_jobs.c: the learner's job store (services/learner/jobs.c) driven by a fake runner
 * defined here: persistence and restart listing, submission order and one job at a time, the
 * state transitions (succeeded, failed, cancelled while queued / running, interrupted by
 * shutdown and resumed first after a restart), and WatchJob's fan-out: replay without gaps or
 * duplicates, and a slow watcher that never blocks the runner. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../harness.h"
#include "base/fs.h"
#include "base/log.h"
#include "jobs.h"

/* ------------------------------------------------------------------------------------------ */
/* the fake runner: behaviour chosen by the spec's name, steps from spec->steps */

static pthread_mutex_t fk_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fk_cv = PTHREAD_COND_INITIALIZER;
static char fk_order[16][64]; /* job ids in the order runs started */
static int fk_n_runs;
static int fk_active, fk_max_active;
static int fk_gate_step = -1; /* "gated" jobs wait before this step until fk_open */
static int fk_open;
static int fk_at_gate;
static int fk_resumed_from; /* step found in progress.txt at the start of the last run */

static void fk_write_line(const char *dir, const char *name, const char *line)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "a");
    if (!f) return;
    fprintf(f, "%s\n", line);
    fclose(f);
}

static aha_status fake_run(aha_job_ctx *ctx, aha_err *err)
{
    const char *name = ctx->spec->name ? ctx->spec->name : "";
    pthread_mutex_lock(&fk_mu);
    snprintf(fk_order[fk_n_runs++ % 16], 64, "%s", ctx->job_id);
    fk_active++;
    if (fk_active > fk_max_active) fk_max_active = fk_active;
    pthread_mutex_unlock(&fk_mu);

    /* resume: a previous run of this job left its step in progress.txt */
    int start = 1;
    char ppath[4096];
    snprintf(ppath, sizeof ppath, "%s/progress.txt", ctx->job_dir);
    FILE *pf = fopen(ppath, "r");
    if (pf) {
        if (fscanf(pf, "%d", &start) != 1) start = 1;
        fclose(pf);
        start++;
    }
    pthread_mutex_lock(&fk_mu);
    fk_resumed_from = start - 1;
    pthread_mutex_unlock(&fk_mu);

    aha_status st = AHA_OK;
    int64_t steps = ctx->spec->steps;
    *ctx->progress_total = steps;
    ctx->emit(ctx->user, AHA_EV_LOG, 0, NULL, "fake runner starting");
    for (int64_t s = start; s <= steps; s++) {
        if (!strcmp(name, "gated") && s == fk_gate_step) {
            pthread_mutex_lock(&fk_mu);
            fk_at_gate = 1;
            pthread_cond_broadcast(&fk_cv);
            while (!fk_open && !*ctx->cancel) {
                pthread_mutex_unlock(&fk_mu);
                usleep(2000);
                pthread_mutex_lock(&fk_mu);
            }
            pthread_mutex_unlock(&fk_mu);
        }
        if (*ctx->cancel) {
            st = aha_errf(err, AHA_ECANCELLED, "cancelled at step %lld", (long long)s);
            break;
        }
        if (!strcmp(name, "fail") && s == 2) {
            st = aha_errf(err, AHA_EINVAL, "boom at step 2");
            break;
        }
        char rec[256];
        snprintf(rec, sizeof rec,
                 "{\"type\":\"step\",\"step\":%lld,\"total_steps\":%lld,\"reward_mean\":%g}",
                 (long long)s, (long long)steps, 0.01 * (double)s);
        /* both orders of file write and emit happen in the real runner's life */
        if (s % 2) fk_write_line(ctx->job_dir, "metrics.jsonl", rec);
        ctx->emit(ctx->user, AHA_EV_METRICS, s, rec, NULL);
        if (!(s % 2)) fk_write_line(ctx->job_dir, "metrics.jsonl", rec);
        if (s % 5 == 0) {
            char ev[200];
            snprintf(ev, sizeof ev, "{\"type\":\"eval\",\"step\":%lld,\"pass_at_1\":0.5}",
                     (long long)s);
            fk_write_line(ctx->job_dir, "eval.jsonl", ev);
            ctx->emit(ctx->user, AHA_EV_EVAL, s, ev, NULL);
        }
        pf = fopen(ppath, "w");
        if (pf) {
            fprintf(pf, "%lld\n", (long long)s);
            fclose(pf);
        }
        *ctx->progress_step = s;
        if (!strcmp(name, "slow")) usleep(20000);
    }
    pthread_mutex_lock(&fk_mu);
    fk_active--;
    pthread_mutex_unlock(&fk_mu);
    return st;
}

static void fk_reset(void)
{
    pthread_mutex_lock(&fk_mu);
    fk_n_runs = 0;
    fk_active = fk_max_active = 0;
    fk_gate_step = -1;
    fk_open = 0;
    fk_at_gate = 0;
    pthread_mutex_unlock(&fk_mu);
}

static void fk_wait_gate(void)
{
    pthread_mutex_lock(&fk_mu);
    for (int i = 0; i < 2000 && !fk_at_gate; i++) {
        pthread_mutex_unlock(&fk_mu);
        usleep(5000);
        pthread_mutex_lock(&fk_mu);
    }
    pthread_mutex_unlock(&fk_mu);
}

static void fk_release(void)
{
    pthread_mutex_lock(&fk_mu);
    fk_open = 1;
    pthread_mutex_unlock(&fk_mu);
}

/* ------------------------------------------------------------------------------------------ */

static aha_learner_env env = {.device = "cpu", .rpc_timeout_ms = 1000};
static char jobs_dir[256];

static aha_jobs *open_store(int autostart, int queue)
{
    aha_jobs_opts o;
    aha_jobs_opts_init(&o);
    o.jobs_dir = jobs_dir;
    o.env = &env;
    o.run = fake_run;
    o.autostart = autostart;
    if (queue) o.watcher_queue = queue;
    aha_jobs *s = NULL;
    aha_err e;
    aha_status st = aha_jobs_open(&o, &s, &e);
    CHECK(st == AHA_OK, "open: %s", e.msg);
    return s;
}

static void spec_of(char *buf, size_t cap, const char *name, int steps)
{
    snprintf(buf, cap,
             "{\"kind\":\"grpo\",\"name\":\"%s\",\"model\":\"m\",\"dataset\":\"d.jsonl\","
             "\"steps\":%d}",
             name, steps);
}

static int submit(aha_jobs *s, const char *name, int steps, char *id)
{
    char spec[512];
    spec_of(spec, sizeof spec, name, steps);
    aha_err e;
    aha_status st = aha_jobs_submit(s, spec, strlen(spec), id, 64, &e);
    CHECK(st == AHA_OK, "submit %s: %s", name, e.msg);
    return st == AHA_OK;
}

static char *state_of(aha_jobs *s, const char *id)
{
    static char buf[32];
    aha_job_info j;
    aha_err e;
    if (aha_jobs_get(s, id, &j, &e) != AHA_OK) return strcpy(buf, "?");
    snprintf(buf, sizeof buf, "%s", j.state);
    aha_job_info_free(&j);
    return buf;
}

static int wait_state(aha_jobs *s, const char *id, const char *want, double seconds)
{
    double end = aha_now_s() + seconds;
    while (aha_now_s() < end) {
        if (!strcmp(state_of(s, id), want)) return 1;
        usleep(5000);
    }
    return 0;
}

static int valid_id_shape(const char *id)
{
    /* j-YYYYMMDD-HHMMSS-xxxx */
    if (strlen(id) != 22 || strncmp(id, "j-", 2) || id[10] != '-' || id[17] != '-') return 0;
    for (int i = 2; i < 22; i++) {
        if (i == 10 || i == 17) continue;
        char c = id[i];
        if (i < 17 ? !(c >= '0' && c <= '9') : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return 0;
    }
    return 1;
}

static void test_validation_and_persistence(void)
{
    fk_reset();
    aha_jobs *s = open_store(0, 0);
    if (!s) return;
    /* a malformed spec names its field and leaves nothing behind */
    const char *bad = "{\"kind\":\"grpo\",\"dataset\":\"d\",\"steps\":1}";
    char id[64];
    aha_err e;
    aha_status st = aha_jobs_submit(s, bad, strlen(bad), id, sizeof id, &e);
    CHECK(st == AHA_EINVAL, "bad spec status %d", st);
    CHECK(strstr(e.msg, "spec.model") != NULL, "message names the field: %s", e.msg);
    const char *unknown = "{\"kind\":\"grpo\",\"model\":\"m\",\"dataset\":\"d\",\"steps\":1,\"bogus\":1}";
    st = aha_jobs_submit(s, unknown, strlen(unknown), id, sizeof id, &e);
    CHECK(st == AHA_EINVAL && strstr(e.msg, "spec.bogus"), "unknown field: %s", e.msg);
    aha_job_info *list;
    size_t n;
    aha_jobs_list(s, &list, &n, &e);
    CHECK(n == 0, "rejected specs created %zu jobs", n);
    aha_job_info_list_free(list, n);

    char ids[3][64];
    for (int i = 0; i < 3; i++) submit(s, "p", 3, ids[i]);
    for (int i = 0; i < 3; i++) {
        CHECK(valid_id_shape(ids[i]), "id shape: %s", ids[i]);
        CHECK(!strcmp(state_of(s, ids[i]), "queued"), "queued before start: %s", state_of(s, ids[i]));
        char p[512];
        snprintf(p, sizeof p, "%s/%s/spec.json", jobs_dir, ids[i]);
        CHECK(aha_path_exists(p), "%s written", p);
        snprintf(p, sizeof p, "%s/%s/state.json", jobs_dir, ids[i]);
        CHECK(aha_path_exists(p), "%s written", p);
    }
    CHECK(strcmp(ids[0], ids[1]) && strcmp(ids[1], ids[2]), "ids differ");
    /* the stored spec is the normalised one: defaults filled in */
    aha_job_info j;
    CHECK(aha_jobs_get(s, ids[1], &j, &e) == AHA_OK, "get: %s", e.msg);
    CHECK(strstr(j.spec_json, "\"questions_per_step\"") != NULL, "normalised spec has defaults");
    CHECK(!strcmp(j.kind, "grpo"), "kind %s", j.kind);
    CHECK(j.total_steps == 3, "total_steps %lld", (long long)j.total_steps);
    aha_job_info_free(&j);
    CHECK(aha_jobs_get(s, "j-nope", &j, &e) == AHA_ENOTFOUND, "unknown id");
    CHECK(aha_jobs_get(s, "../../etc", &j, &e) == AHA_ENOTFOUND, "path-like id");
    aha_jobs_close(s);

    /* restart: the same jobs, states and order come back */
    s = open_store(0, 0);
    if (!s) return;
    aha_jobs_list(s, &list, &n, &e);
    CHECK(n == 3, "restored %zu jobs", n);
    for (size_t i = 0; i < n && i < 3; i++) {
        CHECK(!strcmp(list[i].id, ids[i]), "order after restart: %s vs %s", list[i].id, ids[i]);
        CHECK(!strcmp(list[i].state, "queued"), "state after restart: %s", list[i].state);
    }
    aha_job_info_list_free(list, n);
    /* cancel one while queued, then run: the other two run in submission order */
    CHECK(aha_jobs_cancel(s, ids[1], &j, &e) == AHA_OK, "cancel queued: %s", e.msg);
    CHECK(!strcmp(j.state, "cancelled"), "cancelled at once: %s", j.state);
    aha_job_info_free(&j);
    CHECK(aha_jobs_cancel(s, ids[1], NULL, &e) == AHA_OK, "cancel again is a no-op");
    aha_jobs_start(s, &e);
    CHECK(wait_state(s, ids[2], "succeeded", 10), "third job done: %s", state_of(s, ids[2]));
    CHECK(!strcmp(state_of(s, ids[0]), "succeeded"), "first done: %s", state_of(s, ids[0]));
    CHECK(!strcmp(state_of(s, ids[1]), "cancelled"), "second stays cancelled");
    pthread_mutex_lock(&fk_mu);
    CHECK(fk_n_runs == 2, "runs %d", fk_n_runs);
    CHECK(fk_n_runs >= 2 && !strcmp(fk_order[0], ids[0]) && !strcmp(fk_order[1], ids[2]),
          "submission order");
    CHECK(fk_max_active == 1, "one job at a time (max %d)", fk_max_active);
    pthread_mutex_unlock(&fk_mu);
    CHECK(aha_jobs_get(s, ids[0], &j, &e) == AHA_OK, "get");
    CHECK(j.step == 3 && j.total_steps == 3, "progress %lld/%lld", (long long)j.step,
          (long long)j.total_steps);
    CHECK(strstr(j.last_metrics_json, "\"step\":3") != NULL, "last metrics: %s",
          j.last_metrics_json);
    aha_job_info_free(&j);
    CHECK(aha_jobs_cancel(s, ids[0], NULL, &e) == AHA_EPRECOND, "cancel finished job");
    aha_jobs_close(s);

    /* and the finished states survive another restart, with their last metrics */
    s = open_store(0, 0);
    if (!s) return;
    CHECK(!strcmp(state_of(s, ids[0]), "succeeded"), "succeeded persisted");
    CHECK(!strcmp(state_of(s, ids[1]), "cancelled"), "cancelled persisted");
    CHECK(aha_jobs_get(s, ids[2], &j, &e) == AHA_OK, "get");
    CHECK(j.step == 3 && strstr(j.last_metrics_json, "\"step\":3"), "metrics after restart");
    aha_job_info_free(&j);
    aha_jobs_close(s);
}

static void test_fail_and_cancel_running(void)
{
    fk_reset();
    aha_jobs *s = open_store(1, 0);
    if (!s) return;
    char f[64], g[64], q[64];
    submit(s, "fail", 5, f);
    CHECK(wait_state(s, f, "failed", 10), "failed: %s", state_of(s, f));
    aha_job_info j;
    aha_err e;
    aha_jobs_get(s, f, &j, &e);
    CHECK(strstr(j.error, "boom at step 2") != NULL, "error kept: %s", j.error);
    aha_job_info_free(&j);

    fk_gate_step = 3;
    submit(s, "gated", 10, g);
    submit(s, "p", 2, q);
    fk_wait_gate();
    CHECK(!strcmp(state_of(s, g), "running"), "gated job running: %s", state_of(s, g));
    CHECK(!strcmp(state_of(s, q), "queued"), "next queued: %s", state_of(s, q));
    CHECK(aha_jobs_cancel(s, g, &j, &e) == AHA_OK, "cancel running: %s", e.msg);
    CHECK(!strcmp(j.state, "running"), "still running until the runner returns: %s", j.state);
    aha_job_info_free(&j);
    CHECK(wait_state(s, g, "cancelled", 10), "cancelled: %s", state_of(s, g));
    CHECK(wait_state(s, q, "succeeded", 10), "the next job runs: %s", state_of(s, q));
    aha_jobs_close(s);
}

static void test_restart_resumes_running_first(void)
{
    fk_reset();
    aha_jobs *s = open_store(1, 0);
    if (!s) return;
    char a[64], b[64];
    fk_gate_step = 4;
    submit(s, "gated", 6, a);
    submit(s, "p", 2, b);
    fk_wait_gate();
    aha_jobs_close(s); /* shutdown while a runs: a stays "running" on disk */

    char path[512], *text = NULL;
    size_t len;
    snprintf(path, sizeof path, "%s/%s/state.json", jobs_dir, a);
    aha_err e;
    CHECK(aha_read_file(path, 1 << 20, &text, &len, &e) == AHA_OK, "%s", e.msg);
    CHECK(text && strstr(text, "\"state\": \"running\""), "on disk still running: %s",
          text ? text : "");
    free(text);

    fk_reset();
    fk_open = 1;
    s = open_store(0, 0);
    if (!s) return;
    CHECK(!strcmp(state_of(s, a), "queued"), "re-queued: %s", state_of(s, a));
    CHECK(!strcmp(state_of(s, b), "queued"), "still queued: %s", state_of(s, b));
    aha_jobs_start(s, &e);
    CHECK(wait_state(s, b, "succeeded", 10), "b done: %s", state_of(s, b));
    CHECK(!strcmp(state_of(s, a), "succeeded"), "a done: %s", state_of(s, a));
    pthread_mutex_lock(&fk_mu);
    CHECK(fk_n_runs == 2 && !strcmp(fk_order[0], a), "the interrupted job ran first");
    pthread_mutex_unlock(&fk_mu);
    /* the resumed run found the first run's progress in the same job dir (steps 1..3) */
    aha_job_watcher *w;
    CHECK(aha_jobs_watch_open(s, a, 1, 1, &w, &e) == AHA_OK, "history: %s", e.msg);
    int steps[16] = {0}, dup = 0, n_metrics = 0, saw_requeue = 0;
    for (;;) {
        aha_job_event ev;
        int got;
        aha_jobs_watch_next(w, 1000, &ev, &got);
        if (got <= 0) break;
        if (!strcmp(ev.type, "metrics") && ev.step > 0 && ev.step < 16) {
            dup += steps[ev.step]++ > 0;
            n_metrics++;
        }
        if (!strcmp(ev.type, "state") && strstr(ev.message, "re-queued")) saw_requeue = 1;
        aha_job_event_free(&ev);
    }
    aha_jobs_watch_close(w);
    CHECK(n_metrics == 6 && dup == 0, "steps 1..6 once each across the restart (%d, dup %d)",
          n_metrics, dup);
    CHECK(saw_requeue, "history tells of the re-queue");
    aha_jobs_close(s);
}

/* ------------------------------------------------------------------------------------------ */
/* watchers */

typedef struct {
    aha_job_watcher *w;
    int steps[1024];
    int n_metrics, n_evals, last_step, order_ok, dropped;
    char states[8][16];
    int n_states;
    int slow_ms; /* sleep before taking each event */
    int eval_at[256]; /* the last metrics step seen when each eval arrived */
} consumer;

static void consume_one(consumer *c, aha_job_event *ev)
{
    if (!strcmp(ev->type, "metrics")) {
        if (ev->step <= c->last_step) c->order_ok = 0;
        c->last_step = (int)ev->step;
        if (ev->step > 0 && ev->step < 1024) c->steps[ev->step]++;
        c->n_metrics++;
    } else if (!strcmp(ev->type, "eval")) {
        if (c->n_evals < 256) c->eval_at[c->n_evals] = c->last_step;
        c->n_evals++;
    } else if (!strcmp(ev->type, "state") && c->n_states < 8) {
        snprintf(c->states[c->n_states++], 16, "%s", ev->state);
    } else if (!strcmp(ev->type, "log")) {
        unsigned long long d;
        if (strstr(ev->message, "metrics records not shown") &&
            sscanf(ev->message, "%llu", &d) == 1)
            c->dropped += (int)d;
    }
}

static void *consume_all(void *arg)
{
    consumer *c = arg;
    for (;;) {
        aha_job_event ev;
        int got;
        if (c->slow_ms) usleep((useconds_t)c->slow_ms * 1000);
        aha_jobs_watch_next(c->w, 2000, &ev, &got);
        if (got < 0) break;
        if (got == 0) continue;
        consume_one(c, &ev);
        aha_job_event_free(&ev);
    }
    return NULL;
}

static void test_replay_no_gaps_no_duplicates(void)
{
    fk_reset();
    aha_jobs *s = open_store(1, 0);
    if (!s) return;
    char a[64];
    fk_gate_step = 6;
    submit(s, "gated", 12, a);
    fk_wait_gate();
    /* steps 1..5 are on disk and in the ring; open mid-job with history */
    consumer c = {.order_ok = 1};
    aha_err e;
    CHECK(aha_jobs_watch_open(s, a, 1, 0, &c.w, &e) == AHA_OK, "watch: %s", e.msg);
    consumer live = {.order_ok = 1};
    CHECK(aha_jobs_watch_open(s, a, 0, 0, &live.w, &e) == AHA_OK, "watch live: %s", e.msg);
    fk_release();
    pthread_t t1, t2;
    pthread_create(&t1, NULL, consume_all, &c);
    pthread_create(&t2, NULL, consume_all, &live);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    aha_jobs_watch_close(c.w);
    aha_jobs_watch_close(live.w);
    int once = 1;
    for (int i = 1; i <= 12; i++) once &= c.steps[i] == 1;
    CHECK(c.n_metrics == 12 && once && c.order_ok, "from_start: 12 steps once, in order (%d)",
          c.n_metrics);
    CHECK(c.n_evals == 2, "evals %d", c.n_evals);
    CHECK(c.n_states == 3 && !strcmp(c.states[0], "queued") && !strcmp(c.states[1], "running") &&
              !strcmp(c.states[2], "succeeded"),
          "states %d", c.n_states);
    int live_once = 1;
    for (int i = 6; i <= 12; i++) live_once &= live.steps[i] == 1;
    CHECK(live.n_metrics == 7 && live_once && live.order_ok, "live only: steps 6..12 (%d)",
          live.n_metrics);
    CHECK(live.n_states == 2 && !strcmp(live.states[0], "running") &&
              !strcmp(live.states[1], "succeeded"),
          "live states: current, then the end (%d)", live.n_states);

    /* a watch of a finished job replays and ends; without history it gives the state only */
    consumer done = {.order_ok = 1};
    CHECK(aha_jobs_watch_open(s, a, 1, 0, &done.w, &e) == AHA_OK, "watch finished");
    consume_all(&done);
    aha_jobs_watch_close(done.w);
    CHECK(done.n_metrics == 12 && done.n_evals == 2 && done.n_states == 3, "finished replay");
    /* eval.jsonl records have no time: they are placed after their step's record */
    CHECK(done.eval_at[0] == 5 && done.eval_at[1] == 10, "evals in place: after steps %d, %d",
          done.eval_at[0], done.eval_at[1]);
    consumer now = {.order_ok = 1};
    CHECK(aha_jobs_watch_open(s, a, 0, 0, &now.w, &e) == AHA_OK, "watch finished live");
    consume_all(&now);
    aha_jobs_watch_close(now.w);
    CHECK(now.n_metrics == 0 && now.n_states == 1 && !strcmp(now.states[0], "succeeded"),
          "finished, no history: its state");
    CHECK(aha_jobs_watch_open(s, "j-none", 1, 0, &now.w, &e) == AHA_ENOTFOUND, "unknown job");
    aha_jobs_close(s);
}

static void test_slow_watcher(void)
{
    fk_reset();
    const int cap = 16, steps = 400;
    aha_jobs *s = open_store(0, cap);
    if (!s) return;
    char a[64];
    submit(s, "p", steps, a);
    aha_err e;
    consumer slow = {.order_ok = 1};
    consumer fast = {.order_ok = 1};
    CHECK(aha_jobs_watch_open(s, a, 0, 0, &slow.w, &e) == AHA_OK, "slow watch");
    CHECK(aha_jobs_watch_open(s, a, 0, 0, &fast.w, &e) == AHA_OK, "fast watch");
    pthread_t tf;
    pthread_create(&tf, NULL, consume_all, &fast);
    double t0 = aha_now_s();
    aha_jobs_start(s, &e);
    /* the slow watcher takes nothing until the job is over: the runner must not wait for it */
    CHECK(wait_state(s, a, "succeeded", 20), "job done with a stalled watcher: %s",
          state_of(s, a));
    double took = aha_now_s() - t0;
    consume_all(&slow);
    pthread_join(tf, NULL);
    aha_jobs_watch_close(slow.w);
    aha_jobs_watch_close(fast.w);
    fprintf(stderr, "  %d steps in %.2f s; slow watcher got %d, told of %d dropped; fast got %d "
                    "(+%d dropped)\n",
            steps, took, slow.n_metrics, slow.dropped, fast.n_metrics, fast.dropped);
    CHECK(slow.n_metrics + slow.dropped == steps, "slow: shown + dropped = %d + %d",
          slow.n_metrics, slow.dropped);
    CHECK(slow.dropped > 0 && slow.n_metrics <= cap, "slow watcher was bounded (%d kept)",
          slow.n_metrics);
    CHECK(slow.last_step == steps && slow.order_ok, "the newest records are kept, in order");
    CHECK(slow.n_states == 3 && !strcmp(slow.states[0], "queued") &&
              !strcmp(slow.states[2], "succeeded"),
          "state events kept (%d)", slow.n_states);
    CHECK(slow.n_evals == steps / 5, "eval events kept (%d)", slow.n_evals);
    CHECK(fast.n_metrics + fast.dropped == steps && fast.order_ok, "fast: %d + %d",
          fast.n_metrics, fast.dropped);
    CHECK(aha_jobs_dropped_events(s) >= (uint64_t)slow.dropped, "drop counter");
    aha_jobs_close(s);
}

int main(void)
{
    aha_log_set_level(AHA_LOG_WARN);
    snprintf(jobs_dir, sizeof jobs_dir, "/tmp/aha-test-jobs-%d", (int)getpid());
    aha_err e;
    aha_remove_tree(jobs_dir, &e);
    test_validation_and_persistence();
    aha_remove_tree(jobs_dir, &e);
    test_fail_and_cancel_running();
    aha_remove_tree(jobs_dir, &e);
    test_restart_resumes_running_first();
    aha_remove_tree(jobs_dir, &e);
    test_replay_no_gaps_no_duplicates();
    aha_remove_tree(jobs_dir, &e);
    test_slow_watcher();
    aha_remove_tree(jobs_dir, &e);
    return th_done("learnersrv_jobs");
}
