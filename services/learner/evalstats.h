/* evalstats.h: evaluation statistics as DeepSeek-R1 reports them, and the rejection-sampling
 * filter of generate jobs.
 *
 * pass@1 = mean correctness over the k samples of each question, averaged over questions.
 * cons@k = correctness of the majority answer: the k extracted answers are grouped by an
 * equivalence the caller supplies (the reward service's, so "0.5" and "1/2" vote together),
 * the largest group wins, ties go to the group whose first member came first, and the group
 * is as correct as its first member. A question without any extracted answer counts wrong.
 * A sample is correct when its accuracy component is >= 0.5 and well-formatted when its format
 * component is >= 0.5 (the components are 0/1 in aha-reward). */
#ifndef AHA_LEARNER_EVALSTATS_H
#define AHA_LEARNER_EVALSTATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "spec.h"

typedef struct {
    const char *answer; /* extracted answer text; NULL = none found */
    double accuracy;    /* reward component */
    double format;      /* reward component */
    int64_t length;     /* completion tokens */
} aha_eval_sample;

/* Whether answers a and b are the same answer. NULL callback: byte equality. */
typedef bool (*aha_answer_equiv_fn)(void *ctx, const char *a, const char *b);

typedef struct {
    int64_t n_questions;
    int k;
    double pass_at_1, cons_at_k, format_rate;
    double length_mean, length_p50, length_p90;
    int64_t length_max;
} aha_eval_result;

/* samples: (n_questions, k) row-major. */
aha_status aha_eval_compute(const aha_eval_sample *samples, int64_t n_questions, int k,
                            aha_answer_equiv_fn eq, void *ctx, aha_eval_result *out, aha_err *err);
/* The q-quantile (q in [0,1]) of n sorted values by linear interpolation between closest
 * ranks (numpy's default). NAN when n == 0. */
double aha_quantile_sorted(const double *sorted, int64_t n, double q);
/* {"type":"eval", "stage", "step", "dataset", "n_questions", "k", "pass_at_1", "cons_at_k",
 * "format_rate", "length_mean", "length_p50", "length_p90", "length_max", "temperature",
 * "top_p"} on one line. stage may be NULL, step < 0 leaves it out. */
aha_status aha_eval_record_json(const aha_eval_result *r, const char *dataset, const char *stage,
                                int64_t step, const aha_sampling_spec *sampling, char **out,
                                aha_err *err);

/* ---- rejection sampling (generate jobs) ---------------------------------------------- */

#define AHA_REJECT_MAP(X)                                                                  \
    X(KEPT, "kept")                                                                        \
    X(ERROR, "error")           /* the reward service could not score it */               \
    X(TRUNCATED, "truncated")   /* finish_reason "length" */                              \
    X(INCORRECT, "incorrect")                                                              \
    X(FORMAT, "format")                                                                    \
    X(LANGUAGE, "language")     /* language component below min_language */               \
    X(DUPLICATE, "duplicate")   /* same text as a kept sample of the prompt, whitespace aside */ \
    X(OVER_LIMIT, "over_limit") /* keep_per_prompt already reached */

typedef enum {
#define AHA__REJ_ENUM(name, str) AHA_REJ_##name,
    AHA_REJECT_MAP(AHA__REJ_ENUM)
#undef AHA__REJ_ENUM
    AHA_REJ_COUNT
} aha_reject_reason;

const char *aha_reject_reason_name(aha_reject_reason r);

typedef struct {
    const char *prompt_id;
    const char *prompt;   /* the raw question (SFT lines get it, not the templated text) */
    const char *answer;   /* reference answer, may be NULL */
    const char *completion;
    const char *finish_reason; /* "stop" or "length" */
    double accuracy, format;
    double language; /* NAN when the reward had no language component: not checked */
    const char *error; /* reward item error; NULL or "" = none */
    int index;         /* sample index within its prompt */
} aha_gen_sample;

typedef struct {
    int keep_per_prompt;
    double min_language;
    bool require_correct, require_format;
} aha_filter_opts;

typedef struct {
    int64_t prompts, prompts_with_kept, samples, kept;
    int64_t by_reason[AHA_REJ_COUNT]; /* [AHA_REJ_KEPT] == kept */
} aha_filter_report;

aha_filter_opts aha_filter_opts_from_spec(const aha_job_spec *generate);
/* Judge the n samples of one prompt in order; verdict[i] is the first reason that applies
 * (checks in the order of AHA_REJECT_MAP). Adds to rep. Returns the number kept. */
int aha_filter_group(const aha_filter_opts *o, const aha_gen_sample *s, int n,
                     aha_reject_reason *verdict, aha_filter_report *rep);
/* The SFT line of a kept sample: {"prompt", "completion", "id": "PROMPT_ID#INDEX",
 * "source_id", "sample_index"[, "answer"]}, one line without newline. */
aha_status aha_filter_sft_line(const aha_gen_sample *s, char **out, aha_err *err);
/* {"prompts", "prompts_with_kept", "samples", "kept", "acceptance_rate",
 *  "rejected": {"truncated": n, ...}} */
aha_status aha_filter_report_json(const aha_filter_report *r, char **out, aha_err *err);
/* The same as one metrics.jsonl line: {"type":"generate", "stage"?, ...} (stage may be NULL). */
aha_status aha_filter_record_json(const aha_filter_report *r, const char *stage, char **out,
                                  aha_err *err);

#endif
