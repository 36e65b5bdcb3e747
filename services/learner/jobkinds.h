/* jobkinds.h: the runners of the R1 recipe's job kinds other than training (DeepSeek-R1,
 * sections 2.3 and 2.4): eval (pass@1 over k samples, cons@k), generate (rejection
 * sampling into an SFT dataset), mix (dataset mixing) and pipeline (ordered stages, each run
 * through aha_job_run in its own directory). aha_job_run (runner.c) dispatches to them with a
 * job whose ctx, spec and record paths are set; nothing else is. Not public. */
#ifndef AHA_LEARNER_JOBKINDS_H
#define AHA_LEARNER_JOBKINDS_H

#include "runner_int.h"

/* A checkpoint on every eval dataset: k samples per question from the rollout workers
 * (which first receive the checkpoint's weights, version 0), scored by aha-reward; one eval
 * record per dataset in eval.jsonl. */
aha_status aha__eval_job(aha__job *j, aha_err *err);
/* Rejection sampling: n samples per prompt, kept by aha_filter_group, written as SFT lines
 * to the output (default JOB_DIR/dataset.jsonl, replaced atomically at the end); the
 * acceptance report goes to JOB_DIR/acceptance.json and, as a "generate" record, to
 * metrics.jsonl. A rerun starts over (every sample is seeded by (seed, chunk)), so it
 * writes the same file. */
aha_status aha__generate_job(aha__job *j, aha_err *err);
/* aha_mix_run into the output (default JOB_DIR/dataset.jsonl) and a "mix" record. */
aha_status aha__mix_job(aha__job *j, aha_err *err);
/* The stages in order; JOB_DIR/pipeline.json keeps which are done, so a rerun skips them. */
aha_status aha__pipeline_job(aha__job *j, aha_err *err);

/* The dataset a generate or mix job writes: spec->output, else JOB_DIR/dataset.jsonl. */
aha_status aha__job_output_path(const aha_job_spec *sp, const char *job_dir, char *out, size_t cap,
                                aha_err *err);

#endif
