/* pipeline.h: the bookkeeping of a pipeline job, without running anything: which stages are
 * done, what each produced (a checkpoint dir, a dataset file), where each stage works
 * (JOB_DIR/stages/NN-NAME), and the resolution of "${stages.NAME.checkpoint|dataset}".
 *
 * The state lives in JOB_DIR/pipeline.json, rewritten atomically after every change, so a
 * learner restarted on the same jobs dir resumes with the first stage that is not done
 * (a failed or interrupted stage runs again; done stages are skipped). */
#ifndef AHA_LEARNER_PIPELINE_H
#define AHA_LEARNER_PIPELINE_H

#include <stddef.h>

#include "base/status.h"
#include "spec.h"

typedef enum {
    AHA_STAGE_PENDING = 0,
    AHA_STAGE_RUNNING,
    AHA_STAGE_DONE,
    AHA_STAGE_FAILED,
    AHA_STAGE_STATUS_COUNT
} aha_stage_status;

const char *aha_stage_status_name(aha_stage_status s);

typedef struct {
    char *name;
    aha_job_kind kind;
    aha_stage_status status;
    char *checkpoint; /* output of sft/grpo/distill stages once done */
    char *dataset;    /* output of generate/mix stages once done */
    char *error;      /* why it failed */
    double started, finished; /* unix seconds, 0 = not yet */
} aha_stage_state;

typedef struct {
    aha_stage_state *stages;
    int n;
} aha_pipeline_state;

/* All stages pending. */
aha_status aha_pipeline_state_init(const aha_job_spec *pipeline, aha_pipeline_state *st,
                                   aha_err *err);
/* Read path; its stages must be the spec's (same names and kinds, same order), else
 * AHA_EPRECOND naming the first difference. A stage found "running" (the learner died) is
 * read back as pending. */
aha_status aha_pipeline_state_load(const char *path, const aha_job_spec *pipeline,
                                   aha_pipeline_state *st, aha_err *err);
aha_status aha_pipeline_state_save(const aha_pipeline_state *st, const char *path, aha_err *err);
/* {"stages":[{"name","kind","status","checkpoint"?,"dataset"?,"error"?,"started"?,
 * "finished"?}, ...]}; free with free(). Also what GetJob can show. */
aha_status aha_pipeline_state_json(const aha_pipeline_state *st, char **out, aha_err *err);
void aha_pipeline_state_free(aha_pipeline_state *st);

/* Index of the first stage that is not done; -1 when all are. */
int aha_pipeline_next_stage(const aha_pipeline_state *st);
void aha_pipeline_stage_start(aha_pipeline_state *st, int i, double now);
/* Record stage i's outputs (either may be NULL) and mark it done. */
aha_status aha_pipeline_stage_done(aha_pipeline_state *st, int i, const char *checkpoint,
                                   const char *dataset, double now, aha_err *err);
aha_status aha_pipeline_stage_failed(aha_pipeline_state *st, int i, const char *error, double now,
                                     aha_err *err);

/* JOB_DIR/stages/NN-NAME (NN = index + 1, two digits) into out. */
aha_status aha_pipeline_stage_dir(const char *job_dir, int i, const char *name, char *out,
                                  size_t cap, aha_err *err);

/* An aha_job_ref_fn over a pipeline state (ctx = aha_pipeline_state *): the recorded output
 * of a done stage, or an error saying the stage has not produced it. */
aha_status aha_pipeline_ref(void *ctx, const char *stage, aha_job_ref_kind what, char **out,
                            aha_err *err);

#endif
