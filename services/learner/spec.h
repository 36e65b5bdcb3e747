/* spec.h: the job spec of aha-learner (the JSON that `ahactl submit` sends and SubmitJob
 * carries in spec_json), parsed and validated into a C struct.
 *
 * Validation is strict: a bad value gets a message naming the field by its path
 * ("spec.epsilon: must be in (0, 1), got 3", "spec.stages[2].dataset.path: required"), an
 * unknown key is an error ("spec.foo: unknown field"), and a key that exists but does not
 * belong to the job's kind says so. Every field has a default (docs/JOBS.md lists them);
 * aha_job_spec_to_json writes the normalised spec with every default filled in, which the
 * learner stores in the job directory, and which parses back to the same struct.
 *
 * Kinds: grpo, sft, distill (sft of a different student model), eval, generate (rejection
 * sampling), mix (dataset mixing) and pipeline (ordered named stages of the other kinds; a
 * stage's string fields may name an earlier stage's output as "${stages.NAME.checkpoint}" or
 * "${stages.NAME.dataset}", resolved at run time with aha_job_spec_subst). */
#ifndef AHA_LEARNER_SPEC_H
#define AHA_LEARNER_SPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef enum {
    AHA_JOB_GRPO = 0,
    AHA_JOB_SFT,
    AHA_JOB_DISTILL,
    AHA_JOB_EVAL,
    AHA_JOB_GENERATE,
    AHA_JOB_MIX,
    AHA_JOB_PIPELINE,
    AHA_JOB_KIND_COUNT
} aha_job_kind;

/* "grpo", "sft", ... */
const char *aha_job_kind_name(aha_job_kind k);

/* "an object", "a string", ...: what a JSON value is, for messages that say what was given
 * instead (shared with the dataset reader) */
struct json_t;
const char *aha__json_type_word(const struct json_t *v);

typedef enum {
    AHA_DS_GENERIC = 0, /* prompt (or question) + answer [+ lang] [+ id] */
    AHA_DS_GSM8K,       /* question + answer; the reference is the text after the last "####" */
    AHA_DS_MATH,        /* problem + solution; the reference is the last \boxed{} of solution */
    AHA_DS_SFT,         /* prompt + completion */
    AHA_DS_FORMAT_COUNT
} aha_dataset_format;

const char *aha_dataset_format_name(aha_dataset_format f);

typedef enum { AHA_SCHED_CONSTANT = 0, AHA_SCHED_COSINE, AHA_SCHED_LINEAR } aha_lr_schedule;

const char *aha_lr_schedule_name(aha_lr_schedule s);

/* A JSONL dataset and how to read it. The *_field names are the effective JSON keys (the
 * format's defaults unless the spec's "fields" overrode them). */
typedef struct {
    char *path;
    char *name; /* label in eval reports; default: file name without directory and .jsonl */
    aha_dataset_format format;
    char *prompt_field;     /* generic/sft "prompt", gsm8k "question", math "problem" */
    char *answer_field;     /* generic/gsm8k "answer", math "solution"; NULL for sft */
    char *completion_field; /* sft "completion"; NULL otherwise */
    char *lang_field;       /* "lang" (optional in each line) */
    char *id_field;         /* "id" (optional in each line; default id is NAME:LINE) */
    /* generic only: when prompt_field was not overridden, a line without "prompt" may give
     * "question" instead */
    bool prompt_fallback_question;
    bool skip_bad_lines; /* count and skip malformed lines instead of failing */
    int64_t limit;       /* use at most this many examples; 0 = all */
} aha_dataset_spec;

typedef struct {
    double temperature; /* 0 = greedy */
    double top_p;
    int top_k; /* 0 = off */
    int max_new_tokens;
} aha_sampling_spec;

/* Service addresses ("host:port" or "unix:PATH"). Absent (n_rollout 0, NULL) means: the
 * learner's own configured addresses (its flags), so a spec need not know the topology. */
typedef struct {
    char **rollout;
    int n_rollout;
    char *reward;
    char *refpolicy;
} aha_services_spec;

typedef struct {
    double lr;
    int warmup_steps;
    aha_lr_schedule schedule;
    double min_lr_ratio; /* floor of cosine/linear decay, as a fraction of lr */
    double weight_decay;
    double grad_clip; /* max global grad norm; 0 = off */
    double adam_beta1, adam_beta2, adam_eps;
} aha_optim_spec;

/* The GRPO objective (DESIGN.md, Eq. 1 and 3) and its optional variants. Defaults are the
 * paper's: sequence-level 1/|o_i| normalisation, std scaling, symmetric clip, k3 KL. */
typedef struct {
    double epsilon;      /* clip range */
    double epsilon_low;  /* lower clip 1 - epsilon_low; = epsilon unless set */
    double epsilon_high; /* upper clip 1 + epsilon_high; = epsilon unless set ("clip higher") */
    double beta;         /* KL weight */
    bool kl;             /* false: no KL term (and no refpolicy calls) */
    bool token_level;    /* true: normalise by the batch's total tokens (DAPO), not per seq */
    bool scale_std;      /* false: A_i = r_i - mean (Dr. GRPO) */
    double std_eps;      /* A_i = (r_i - mean) / (std + std_eps) */
} aha_loss_spec;

typedef struct {
    double accuracy, format, language;
} aha_reward_weights_spec;

/* Held-out evaluation (inside grpo/sft jobs every `every` steps, or the eval kind). */
typedef struct {
    aha_dataset_spec *datasets;
    int n_datasets;
    int every; /* steps between evals inside a training job; 0 = only at the end */
    int k;     /* samples per question */
    aha_sampling_spec sampling;
} aha_eval_spec;

typedef struct {
    char *path;
    double proportion; /* weight when the mix has a total */
    int64_t count;     /* lines to take when the mix has no total; -1 = all */
} aha_mix_source;

typedef struct aha_job_spec aha_job_spec;

struct aha_job_spec {
    /* common */
    aha_job_kind kind;
    char *name;        /* pipeline stage name (required there) or a free job label; may be NULL */
    uint64_t seed;
    aha_services_spec services;
    char *template_text; /* resolved text holding "{prompt}" (built-ins of text/template.h
                          * expanded; default "r1-zero", Table 1) */

    /* models: grpo/sft use model (+ ref_model for grpo); distill uses student_config or
     * student_init; eval/generate use checkpoint. tokenizer defaults to the model dir. */
    char *model;
    char *ref_model;
    char *tokenizer;
    char *checkpoint;
    char *student_config;
    char *student_init;
    char *teacher; /* distill: the teacher's checkpoint, recorded for reports only */

    aha_dataset_spec dataset; /* grpo, sft, distill, generate */
    bool has_dataset;

    /* training (grpo, sft, distill) */
    int64_t steps; /* grpo: required; sft: 0 = derived from epochs */
    int epochs;    /* sft/distill */
    int batch_size; /* sft/distill: sequences per optimizer step */
    int micro_batch; /* sequences per forward/backward pass */
    int max_seq_len; /* sft/distill: longer examples are truncated */
    int checkpoint_every; /* 0 = only at the end */
    aha_optim_spec optim;
    aha_eval_spec eval; /* grpo/sft/distill: n_datasets 0 = no eval; the eval kind: required */
    bool has_eval;

    /* grpo */
    int group_size; /* G */
    int questions_per_step;
    int mu;
    int max_prompt_tokens;
    aha_sampling_spec sampling; /* grpo rollouts; generate's sampling */
    aha_loss_spec loss;
    aha_reward_weights_spec reward_weights;
    char *language; /* target language of the language reward ("en"); NULL = per-line lang */
    char **reflection_words;
    int n_reflection_words;
    int64_t ref_refresh_steps; /* 0 = never refresh the reference */

    /* generate */
    int n_samples;       /* n per prompt */
    int keep_per_prompt; /* m */
    double min_language; /* minimum language-consistency component */
    bool require_correct;
    bool require_format;
    char *output; /* generate/mix output JSONL; NULL = DATASET in the job (stage) directory */

    /* mix */
    aha_mix_source *sources;
    int n_sources;
    int64_t total; /* 0 = concatenate (each source's count) */
    bool shuffle;
    bool mix_skip_bad_lines;

    /* pipeline */
    aha_job_spec *stages;
    int n_stages;
};

/* Largest spec text accepted. */
#define AHA_JOB_SPEC_MAX_BYTES (1u << 20)

/* Parse and validate. On success *spec owns everything (free with aha_job_spec_free); on
 * failure *spec is zeroed and err names the field. */
aha_status aha_job_spec_parse(const char *json, size_t len, aha_job_spec *spec, aha_err *err);
void aha_job_spec_free(aha_job_spec *spec);
/* The normalised spec (defaults filled, built-in template expanded), pretty-printed JSON;
 * free with free(). Parsing it gives an equal spec. */
aha_status aha_job_spec_to_json(const aha_job_spec *spec, char **out, aha_err *err);

/* Optimizer steps of a training job: grpo → steps; sft/distill → steps, or when 0,
 * epochs × ceil(n_examples / batch_size); other kinds → 0. */
int64_t aha_job_total_steps(const aha_job_spec *spec, int64_t n_examples);

/* Pipeline references. */
typedef enum { AHA_REF_CHECKPOINT = 0, AHA_REF_DATASET } aha_job_ref_kind;

/* Called for each "${stages.NAME.checkpoint|dataset}" in a string: write the replacement to
 * *out (malloc'd) or return an error. */
typedef aha_status (*aha_job_ref_fn)(void *ctx, const char *stage, aha_job_ref_kind what,
                                     char **out, aha_err *err);
/* Replace every reference in s; *out is malloc'd (a copy when s holds none). */
aha_status aha_job_spec_subst(const char *s, aha_job_ref_fn fn, void *ctx, char **out,
                              aha_err *err);
/* Apply aha_job_spec_subst to every path-like string of one stage (model, ref_model,
 * tokenizer, checkpoint, student_init, student_config, teacher, dataset and eval paths,
 * mix source paths, output), in place. */
aha_status aha_job_spec_resolve(aha_job_spec *stage, aha_job_ref_fn fn, void *ctx, aha_err *err);

#endif
