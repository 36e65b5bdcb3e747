/* learner_fake_runner.c: a stand-in aha_job_run for the job-API integration tests, linked with
 * the real services/learner/main.c into the test-only binary aha-learner-fakerun. It does no
 * training: it makes deterministic, fast jobs whose course the test chooses through the spec,
 * so the server, ahactl and the clients are tested without models or other services.
 *
 *   spec.steps                  number of steps; each writes one metrics.jsonl record
 *                               {"type":"step","step":S,"total_steps":N,"reward_mean":S/N,...}
 *                               and emits it; every 5th step also an eval record
 *   spec.name "fail"            fails at step 2 ("fake failure at step 2")
 *   spec.name "slow"            200 ms per step (else 20 ms)
 * It resumes like the real runner: progress.txt in the job directory holds the last finished
 * step, and a later run continues after it. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "runner.h"

static void append_line(const char *dir, const char *file, const char *line)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "a");
    if (!f) return;
    fprintf(f, "%s\n", line);
    fclose(f);
}

aha_status aha_job_run(aha_job_ctx *ctx, aha_err *err)
{
    const char *name = ctx->spec->name ? ctx->spec->name : "";
    int64_t steps = ctx->spec->steps > 0 ? ctx->spec->steps : 1;
    char ppath[4096];
    snprintf(ppath, sizeof ppath, "%s/progress.txt", ctx->job_dir);
    long long done = 0;
    FILE *pf = fopen(ppath, "r");
    if (pf) {
        if (fscanf(pf, "%lld", &done) != 1) done = 0;
        fclose(pf);
    }
    *ctx->progress_total = steps;
    *ctx->progress_step = done;
    char msg[128];
    snprintf(msg, sizeof msg, "fake runner: %s from step %lld", done ? "resuming" : "starting",
             done + 1);
    ctx->emit(ctx->user, AHA_EV_LOG, done, NULL, msg);
    int slow = !strcmp(name, "slow");
    for (int64_t s = done + 1; s <= steps; s++) {
        for (int t = 0; t < (slow ? 10 : 1); t++) {
            if (*ctx->cancel) return aha_errf(err, AHA_ECANCELLED, "cancelled before step %lld",
                                              (long long)s);
            usleep(20000);
        }
        if (!strcmp(name, "fail") && s == 2) return aha_errf(err, AHA_EINTERNAL, "fake failure at step 2");
        char rec[512];
        snprintf(rec, sizeof rec,
                 "{\"type\":\"step\",\"step\":%lld,\"total_steps\":%lld,\"reward_mean\":%.4f,"
                 "\"accuracy\":%.4f,\"format_rate\":1,\"length_mean\":%d,\"kl_mean\":0.001,"
                 "\"seconds\":{\"total\":%.2f}}",
                 (long long)s, (long long)steps, (double)s / (double)steps,
                 (double)s / (double)steps, 10 + (int)s, slow ? 0.2 : 0.02);
        append_line(ctx->job_dir, "metrics.jsonl", rec);
        ctx->emit(ctx->user, AHA_EV_METRICS, s, rec, NULL);
        if (s % 5 == 0) {
            snprintf(rec, sizeof rec,
                     "{\"type\":\"eval\",\"step\":%lld,\"dataset\":\"eval\",\"n_questions\":10,"
                     "\"k\":4,\"pass_at_1\":%.3f,\"cons_at_k\":%.3f,\"format_rate\":1,"
                     "\"length_mean\":12,\"length_p50\":12,\"length_p90\":14,\"length_max\":16}",
                     (long long)s, (double)s / (double)steps, (double)s / (double)steps);
            append_line(ctx->job_dir, "metrics.jsonl", rec);
            ctx->emit(ctx->user, AHA_EV_EVAL, s, rec, NULL);
        }
        pf = fopen(ppath, "w");
        if (pf) {
            fprintf(pf, "%lld\n", (long long)s);
            fclose(pf);
        }
        *ctx->progress_step = s;
    }
    return AHA_OK;
}
