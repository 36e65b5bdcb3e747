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
 *   kind pipeline               each stage in turn: pipeline.json kept with pipeline.h, a
 *                               stage event, then the stage's steps (records carry "stage")
 * It resumes like the real runner: progress.txt in the job directory holds the last finished
 * step, and a later run continues after it. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/fs.h"
#include "pipeline.h"
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

static aha_status run_steps(aha_job_ctx *ctx, const aha_job_spec *sp, const char *stage,
                            aha_err *err);

static aha_status run_pipeline(aha_job_ctx *ctx, aha_err *err)
{
    const aha_job_spec *p = ctx->spec;
    char path[4096];
    snprintf(path, sizeof path, "%s/pipeline.json", ctx->job_dir);
    aha_pipeline_state st;
    AHA_TRY(aha_pipeline_state_init(p, &st, err));
    aha_status rc = AHA_OK;
    for (int i = 0; i < p->n_stages && rc == AHA_OK; i++) {
        aha_pipeline_stage_start(&st, i, aha_wall_s());
        rc = aha_pipeline_state_save(&st, path, err);
        if (rc != AHA_OK) break;
        ctx->emit(ctx->user, AHA_EV_STAGE, 0, NULL, p->stages[i].name);
        rc = run_steps(ctx, &p->stages[i], p->stages[i].name, err);
        if (rc == AHA_OK) rc = aha_pipeline_stage_done(&st, i, "ckpt", NULL, aha_wall_s(), err);
        if (rc == AHA_OK) rc = aha_pipeline_state_save(&st, path, err);
    }
    aha_pipeline_state_free(&st);
    return rc;
}

aha_status aha_job_run(aha_job_ctx *ctx, aha_err *err)
{
    if (ctx->spec->kind == AHA_JOB_PIPELINE) return run_pipeline(ctx, err);
    return run_steps(ctx, ctx->spec, NULL, err);
}

static aha_status run_steps(aha_job_ctx *ctx, const aha_job_spec *sp, const char *stage,
                            aha_err *err)
{
    const char *name = sp->name ? sp->name : "";
    int64_t steps = sp->steps > 0 ? sp->steps : 1;
    char ppath[4096];
    snprintf(ppath, sizeof ppath, "%s/progress%s%s.txt", ctx->job_dir, stage ? "-" : "",
             stage ? stage : "");
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
        char rec[512], stage_key[96] = "";
        if (stage) snprintf(stage_key, sizeof stage_key, "\"stage\":\"%s\",", stage);
        snprintf(rec, sizeof rec,
                 "{\"type\":\"step\",%s\"step\":%lld,\"total_steps\":%lld,\"reward_mean\":%.4f,"
                 "\"accuracy\":%.4f,\"format_rate\":1,\"length_mean\":%d,\"kl_mean\":0.001,"
                 "\"seconds\":{\"total\":%.2f}}",
                 stage_key, (long long)s, (long long)steps, (double)s / (double)steps,
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

/* main.c runs this on learner ranks != 0; the API tests start one rank only */
aha_status aha_job_follow(const aha_learner_env *env, volatile int *stop, bool once, aha_err *err)
{
    (void)env;
    (void)stop;
    (void)once;
    return aha_errf(err, AHA_EUNSUPPORTED, "the fake runner has no learner ranks != 0");
}
