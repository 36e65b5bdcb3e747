/* runner_int.h: what the job runner's files (runner.c: dispatch, shared plumbing and SFT;
 * grpo.c: GRPO steps, rollout/reward/refpolicy clients and evaluation) share. Not public. */
#ifndef AHA_LEARNER_RUNNER_INT_H
#define AHA_LEARNER_RUNNER_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "dataset.h"
#include "dist/comm.h"
#include "dist/dp.h"
#include "grpo_math.h"
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
    /* weight push path: the weights group (NCCL on one node) when every worker joined it,
     * else gRPC streaming (runner.c, aha__job_push) */
    struct aha_weight_group *wg;
    const char *wg_kind;     /* its transport: "nccl" or "tcp" */
    bool wg_tried;
    const char *push_path;   /* "grpc", "nccl" or "tcp": how the last push went */
    /* data-parallel learner group (dprun.c); comm NULL = one rank, the code paths of old */
    aha_comm *comm;
    int rank, world;
    int check_every;         /* weight agreement every K updates: rank 0's, sent to every rank */
    int policy_kind;         /* where open_policy took the weights (AHA__POLICY_*), for the */
    char policy_path[4096];  /* other ranks to load the same */
} aha__job;

enum { AHA__POLICY_CKPT = 1, AHA__POLICY_DIR = 2, AHA__POLICY_FRESH = 3 };

/* logging: the learner's log and a WatchJob log event */
void aha__job_log(aha__job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* append json to path (metrics.jsonl / eval.jsonl) and emit it */
aha_status aha__job_record(aha__job *j, aha_job_event_type type, int64_t step, const char *path,
                           const char *json, aha_err *err);
bool aha__job_cancelled(const aha__job *j);
/* the start of one training step: ECANCELLED when the job was cancelled, else *t0 = now and
 * fresh metrics for step j->step + 1 of stage */
aha_status aha__job_step_begin(aha__job *j, const char *stage, aha_step_metrics *mt, double *t0,
                               aha_err *err);
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

/* ---- data parallelism (dprun.c) ----------------------------------------------------------
 * Rank 0 runs the job as with one rank and, at the points below, tells the other ranks what
 * to do over the group's control channel (aha_comm_broadcast_bytes): the job (spec, job dir,
 * the checkpoint or model its weights came from), then each optimizer step's sequences. Every
 * rank trains its aha_dp_shard of them and calls aha_dp_step. */

/* Growable byte buffer of a control message, and a bounds-checked reader. */
typedef struct {
    char *p;
    size_t n, cap;
    bool oom;
} aha__wbuf;
typedef struct {
    const char *p;
    size_t n, off;
    bool bad;
} aha__rbuf;
void aha__wbuf_put(aha__wbuf *b, const void *x, size_t n);
void aha__wbuf_i64(aha__wbuf *b, int64_t v);
void aha__wbuf_str(aha__wbuf *b, const char *s);
void aha__wbuf_free(aha__wbuf *b);
bool aha__rbuf_get(aha__rbuf *r, void *x, size_t n);
int64_t aha__rbuf_i64(aha__rbuf *r);
/* a pointer to n bytes inside the message (NULL when it is shorter) */
const void *aha__rbuf_view(aha__rbuf *r, size_t n);
/* a NUL-terminated copy (NULL when malformed or out of memory) */
char *aha__rbuf_str(aha__rbuf *r);

/* Rank 0, after open_policy, for grpo/sft/distill: form the group (waits for the other ranks),
 * hand them the job, check that every rank loaded the same weights. No-op for one rank. */
aha_status aha__dp_open(aha__job *j, aha_err *err);
/* Rank 0 at the end of the job: tell the other ranks (best effort) and leave the group. */
void aha__dp_close(aha__job *j, aha_status st, const aha_err *e);
/* Rank 0: one step's work (b) to every rank. */
aha_status aha__dp_send_step(aha__job *j, const aha__wbuf *b, aha_err *err);
/* Every rank: share the local status; AHA_OK only when every rank is fine, otherwise the
 * first failing rank's status and message ("learner rank R: ...") on every rank. */
aha_status aha__dp_sync(aha__job *j, aha_status st, aha_err *err);
/* the clip + AdamW options of one update (and the group's checks) */
aha_dp_opts aha__dp_opts(const aha__job *j, double lr);
/* Loads the weights (and for a checkpoint the optimizer state) of kind/path into j->m, j->t
 * on j->be; runner.c (open_policy uses it too). */
aha_status aha__open_policy_as(aha__job *j, int kind, const char *path, aha_err *err);

/* Rank 0 packs, followers train: one GRPO / SFT step message (grpo.c, runner.c). */
aha_status aha__grpo_follow_step(aha__job *j, aha__rbuf *r, aha_err *err);
aha_status aha__sft_follow_step(aha__job *j, aha__rbuf *r, aha_err *err);

/* GRPO training loop (grpo.c); j has its model, train state, data and order ready */
aha_status aha__grpo_run(aha__job *j, const aha_dataset *ds, aha_err *err);
/* Held-out evaluation of the current pushed policy on every eval set of es; records one eval
 * record per set (step < 0 = none). accuracy (may be NULL) receives the first set's pass@1. */
aha_status aha__eval_run(aha__job *j, const aha_eval_spec *es, int64_t step, double *pass1,
                         aha_err *err);

#endif
