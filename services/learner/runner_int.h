/* runner_int.h: what the job runner's files (runner.c: dispatch, shared plumbing and SFT;
 * grpo.c: GRPO steps, rollout/reward/refpolicy clients and evaluation) share. Not public. */
#ifndef AHA_LEARNER_RUNNER_INT_H
#define AHA_LEARNER_RUNNER_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "dataset.h"
#include "model/model.h"
#include "rpc/rpc.h"
#include "runner.h" /* no include guard: include runner_int.h only */
#include "text/tokenizer.h"

#define AHA__MAX_ROLLOUT 16

typedef struct {
    aha_job_ctx *ctx;
    const aha_job_spec *sp;
    aha_backend *be;
    aha_model *m;
    aha_train *t;
    aha_tokenizer *tok;
    char tok_json[4096];     /* tokenizer.json copied into checkpoints; "" = none */
    char spec_hash[17];
    char metrics_path[4096], eval_path[4096];
    char last_ckpt[4096];    /* newest checkpoint written or resumed from; "" = none */
    aha_data_order order;
    bool have_order;
    int64_t step;            /* optimizer updates done (GRPO: steps done) */
    int64_t total;           /* updates the job will do */
    bool resumed;
    int64_t pushed_version;  /* version the rollout workers hold; -1 = not pushed yet */
    /* services (grpo, eval inside training, eval/generate kinds) */
    aha_rpc_channel *rollout[AHA__MAX_ROLLOUT];
    const char *rollout_addr[AHA__MAX_ROLLOUT];
    int n_rollout;
    bool rollout_ok[AHA__MAX_ROLLOUT]; /* took the last weight push: may generate */
    aha_rpc_channel *reward, *refpolicy;
    const char *reward_addr, *refpolicy_addr;
    int timeout_ms;
    /* held-out sets, loaded on first use */
    aha_dataset *eval_sets;
} aha__job;

/* logging: the learner's log and a WatchJob log event */
void aha__job_log(aha__job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* append json to path (metrics.jsonl / eval.jsonl) and emit it */
aha_status aha__job_record(aha__job *j, aha_job_event_type type, int64_t step, const char *path,
                           const char *json, aha_err *err);
bool aha__job_cancelled(const aha__job *j);
void aha__job_progress(aha__job *j);

/* service channels from the spec or the learner's flags */
aha_status aha__job_connect(aha__job *j, bool need_rollout, bool need_reward, bool need_ref,
                            aha_err *err);
/* push the policy to every rollout worker (version), and to refpolicy when to_ref */
aha_status aha__job_push(aha__job *j, int64_t version, bool to_rollout, bool to_ref,
                         double *seconds, aha_err *err);

/* push the version the workers should hold (pushed_version) to rollout worker w alone: a
 * worker found serving another version (restarted from its model dir) catches up */
aha_status aha__job_repush_worker(aha__job *j, int w, aha_err *err);

/* checkpoint of j's model, train state, cursor and step */
aha_status aha__job_checkpoint(aha__job *j, aha_err *err);

/* Generation over the rollout workers and scoring by aha-reward (grpo.c), for the other job
 * kinds: n samples of each of n_prompts encoded prompts into out (n_prompts * n, zeroed by the
 * caller, freed with aha__gsample_clear); the reward of each into out (answers freed by the
 * caller). prompts are the rendered texts the reward sees. */
typedef struct {
    int32_t *ids; /* completion tokens */
    float *lp;    /* the rollout's logprobs of them */
    int n;
    char *text;
    bool truncated, done;
} aha__gsample;
typedef struct {
    double total, acc, fmt, lang; /* components NAN when the reward did not report them */
    char *answer;                 /* extracted answer, NULL = none */
    char error[160];              /* the reward's item error, "" = none */
} aha__score;
aha_status aha__generate_all(aha__job *j, int n_prompts, int32_t *const *pids, const size_t *pn, int n,
                         const aha_sampling_spec *sa, uint64_t seed, aha__gsample *out, aha_err *err);
aha_status aha__score_all(aha__job *j, int n_prompts, int n, char *const *prompts, char *const *answers,
                      char *const *langs, const aha__gsample *s, aha__score *out, aha_err *err);
void aha__gsample_clear(aha__gsample *s);

/* GRPO training loop (grpo.c); j has its model, train state, data and order ready */
aha_status aha__grpo_run(aha__job *j, const aha_dataset *ds, aha_err *err);
/* Held-out evaluation of the current pushed policy on every eval set of es; records one eval
 * record per set (step < 0 = none). accuracy (may be NULL) receives the first set's pass@1. */
aha_status aha__eval_run(aha__job *j, const aha_eval_spec *es, int64_t step, double *pass1,
                         aha_err *err);

#endif
