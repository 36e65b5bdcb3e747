/* grpo_math.h: the learner's arithmetic that needs no model: group-relative advantages
 * (Eq. 3 of the R1 paper), the learning-rate schedule, and the per-step metrics record
 * written one JSON line per step to metrics.jsonl (schema in docs/JOBS.md). */
#ifndef AHA_LEARNER_GRPO_MATH_H
#define AHA_LEARNER_GRPO_MATH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "spec.h"

/* Eq. 3 over n_groups groups of G rewards, row-major (n_groups, G):
 *   A_i = (r_i - mean(r)) / (std(r) + std_eps)        (scale_std)
 *   A_i =  r_i - mean(r)                              (!scale_std, Dr. GRPO)
 * std is the sample (unbiased, n - 1) standard deviation, as torch.Tensor.std() computes it
 * (the PyTorch fixtures use (r - r.mean()) / (r.std() + 1e-4)). A group whose rewards are
 * all equal (including G == 1) gets A = 0 exactly. all_equal (may be NULL) receives one flag
 * per group. Returns the number of all-equal groups. */
int64_t aha_grpo_advantages(const double *rewards, int64_t n_groups, int G, bool scale_std,
                            double std_eps, float *adv, bool *all_equal);

/* Learning rate of update `step` (0-based) out of total_steps: linear warmup from lr/W to lr
 * over the first W = warmup_steps updates (the first update already moves), then constant,
 * cosine or linear decay from lr to lr * min_lr_ratio, reached at step == total_steps. */
double aha_lr_at(const aha_optim_spec *o, int64_t step, int64_t total_steps);

/* Whether text holds any of the words (ASCII case-insensitive substring match). */
bool aha_text_has_any_word(const char *text, size_t len, char *const *words, int n_words);

/* One completion as the metrics see it. */
typedef struct {
    double reward;                     /* total */
    double accuracy, format, language; /* components in [0,1]; NAN = not reported */
    int64_t length;                    /* completion tokens */
    bool truncated;                    /* finish_reason "length" */
    const char *text;                  /* may be NULL (no reflection count) */
    size_t text_len;
} aha_completion_stats;

#define AHA_N_REWARD_COMPONENTS 3 /* accuracy, format, language */

/* The metrics of one step. The caller sets the public scalars (NAN = not measured: the key
 * is left out of the record) and feeds completions group by group. */
typedef struct {
    /* public */
    int64_t step; /* 1-based: the number of updates done when the record is written */
    int64_t total_steps;
    const char *stage; /* pipeline stage name or NULL */
    double lr, loss, grad_norm, kl_mean, clip_frac;
    double t_generate, t_score, t_reference, t_train, t_push, t_eval, t_total; /* seconds */
    int64_t tokens; /* tokens generated (grpo) or trained on (sft) in this step */
    double wall_time; /* unix seconds; 0 = now at record time */
    /* read-only: accumulated by aha_step_metrics_add_group */
    int64_t n_completions, n_groups, n_all_equal, n_truncated, n_reflect, n_correct, n_formatted;
    double sum_reward, sumsq_reward, sum_len;
    double sum_group_std; /* sum over groups of the group's sample std (what TRL logs) */
    int64_t max_len;
    double sum_c[AHA_N_REWARD_COMPONENTS], sumsq_c[AHA_N_REWARD_COMPONENTS];
    int64_t n_c[AHA_N_REWARD_COMPONENTS];
} aha_step_metrics;

/* Zero the counters and set every public scalar to NAN / 0. */
void aha_step_metrics_init(aha_step_metrics *m, int64_t step, int64_t total_steps);
/* Add one group of G completions (all-equal is judged on the totals, as the advantages are).
 * A completion is correct when accuracy >= 0.5 and well-formatted when format >= 0.5. */
void aha_step_metrics_add_group(aha_step_metrics *m, const aha_completion_stats *c, int G,
                                char *const *reflection_words, int n_words);
/* The record as one JSON line (no trailing newline), {"type": "step", ...}; free with free(). */
aha_status aha_step_metrics_json(const aha_step_metrics *m, char **out, aha_err *err);
/* Append one line (and "\n") to path, creating it, in a single write. */
aha_status aha_metrics_append(const char *path, const char *line, aha_err *err);

#endif
