/* jobs.h: the learner's job store: submission, the queue, the one runner thread, persistence
 * under --jobs-dir, cancellation and the fan-out of job events to watchers (WatchJob).
 *
 * Layout of the jobs directory (one directory per job, named by its id):
 *   JOBS_DIR/<id>/spec.json     the normalised spec (aha_job_spec_to_json), written once
 *   JOBS_DIR/<id>/state.json    {"id","kind","state","seq","created_at","updated_at","step",
 *                                "total_steps","error","history":[{"state","time","message"}]}
 *                               rewritten atomically on every change of state
 *   JOBS_DIR/<id>/metrics.jsonl, eval.jsonl, pipeline.json, checkpoints: the runner's
 *
 * States: queued → running → succeeded | failed | cancelled; queued → cancelled. A job found
 * "running" when the store opens (the learner died or was stopped mid-job) goes back to the
 * head of the queue, in its old order, and the runner resumes it from its job directory.
 *
 * Threads: every function may be called from any thread. The runner function runs on the
 * store's own thread, one job at a time, in submission order. emit() from the runner never
 * blocks on a watcher: each watcher has a bounded queue; when it is full the oldest metrics
 * record is dropped and the watcher is told how many were dropped by a log event. */
#ifndef AHA_LEARNER_JOBS_H
#define AHA_LEARNER_JOBS_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "runner.h"

/* The work of a job: aha_job_run in aha-learner; tests inject their own. */
typedef aha_status (*aha_job_runner_fn)(aha_job_ctx *ctx, aha_err *err);

typedef struct {
    const char *jobs_dir;        /* created when missing */
    const aha_learner_env *env;  /* passed to every run; must outlive the store */
    aha_job_runner_fn run;
    int watcher_queue;           /* events buffered per watcher (default 256, at least 4) */
    int autostart;               /* 1 (default): run queued jobs; 0: hold them until
                                    aha_jobs_start (tests inspect the restored queue first) */
} aha_jobs_opts;

void aha_jobs_opts_init(aha_jobs_opts *o);

typedef struct aha_jobs aha_jobs;

/* A snapshot of one job; every string is owned by the snapshot (aha_job_info_free). */
typedef struct {
    char *id, *kind, *state, *spec_json, *error, *dir, *last_metrics_json;
    char *stages_json; /* JOB_DIR/pipeline.json as text, NULL for other kinds */
    int64_t step, total_steps;
    double created_at, updated_at;
} aha_job_info;

void aha_job_info_free(aha_job_info *j);

/* One event of a job as WatchJob streams it; strings owned by the event. */
typedef struct {
    char *type;    /* "state", "metrics", "eval", "log", "stage" */
    char *state;   /* for state events; "" otherwise */
    int64_t step;
    char *json;    /* metrics / eval record; "" otherwise */
    char *message; /* log line, stage name, or the reason of a state change; "" otherwise */
    double time;   /* unix seconds */
} aha_job_event;

void aha_job_event_free(aha_job_event *e);

/* Open (creating) the jobs directory, restore the jobs found there and start the runner
 * thread (unless opts->autostart is 0). */
aha_status aha_jobs_open(const aha_jobs_opts *opts, aha_jobs **out, aha_err *err);
/* Start the runner thread of a store opened with autostart 0. */
aha_status aha_jobs_start(aha_jobs *s, aha_err *err);
/* Begin stopping (from any thread, not a signal handler): ask the running job to stop and
 * end every watch, so WatchJob calls return before the server drains. Idempotent. */
void aha_jobs_stop(aha_jobs *s);
/* Stop: cancel the running job (it stays "running" on disk, so the next open resumes it),
 * end every watcher, join the runner thread, free. */
void aha_jobs_close(aha_jobs *s);

/* Validate (INVALID_ARGUMENT naming the field), create the job directory, persist and queue.
 * id receives the new id ("j-20261128-134501-1a2b"). */
aha_status aha_jobs_submit(aha_jobs *s, const char *spec_json, size_t len, char *id, size_t cap,
                           aha_err *err);
/* ENOTFOUND for an unknown id. */
aha_status aha_jobs_get(aha_jobs *s, const char *id, aha_job_info *out, aha_err *err);
/* Every job, oldest first; *out is an array of *n snapshots (aha_job_info_list_free). */
aha_status aha_jobs_list(aha_jobs *s, aha_job_info **out, size_t *n, aha_err *err);
void aha_job_info_list_free(aha_job_info *list, size_t n);
/* queued → cancelled at once; running → the runner is asked to stop and the job becomes
 * cancelled when it returns; cancelled → no change; succeeded/failed → EPRECOND. *out (may be
 * NULL) gets the job after the request. */
aha_status aha_jobs_cancel(aha_jobs *s, const char *id, aha_job_info *out, aha_err *err);

/* Watching. open registers the watcher first (so no live event is missed), then, with
 * from_start, queues the job's history: its state changes, the records of metrics.jsonl and
 * eval.jsonl; live events that duplicate a replayed record are skipped. history_only ends the
 * watch after the history (a snapshot: plots, reports). */
typedef struct aha_job_watcher aha_job_watcher;
aha_status aha_jobs_watch_open(aha_jobs *s, const char *id, int from_start, int history_only,
                               aha_job_watcher **out, aha_err *err);
/* Next event, waiting up to timeout_ms: *got = 1 (ev filled; aha_job_event_free it), 0 (nothing
 * new yet), or -1 (the watch is over: the job ended, or the store is stopping, and every event
 * was taken). */
void aha_jobs_watch_next(aha_job_watcher *w, int timeout_ms, aha_job_event *ev, int *got);
void aha_jobs_watch_close(aha_job_watcher *w);

/* Metrics records dropped so far for slow watchers (all watchers together). */
uint64_t aha_jobs_dropped_events(aha_jobs *s);

#endif
