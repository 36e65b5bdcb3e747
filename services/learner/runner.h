/* runner.h: runs one job (grpo, sft, eval, generate, pipeline, distill) in the calling thread.
 * The job server owns queueing, persistence of job state and event fan-out; the runner owns the
 * work, checkpoints and metrics.jsonl inside job_dir, and resumes from job_dir's last checkpoint. */
#include "base/status.h"
#include "spec.h"            /* aha_job_spec (services/learner/spec.h, from the jobs helper) */
typedef struct {
    const char *rollout[16]; int n_rollout;   /* default service addresses (from learner flags) */
    const char *reward; const char *refpolicy;
    const char *device;                        /* "cpu" | "cuda:N" */
    int rpc_timeout_ms;                        /* deadline of every call the learner makes */
    /* data-parallel learner group (docs/DIST.md); world_size <= 1 = one rank, as before */
    int rank, world_size;
    const char *rendezvous;                    /* rank 0's "host:port" for the group */
    int dist_timeout_ms;                       /* rendezvous and every collective (0 = 300000) */
    int dist_retries;                          /* rank 0: a job whose group broke re-forms it and
                                                  resumes from its last checkpoint this often */
    int dist_check_every;                      /* weight agreement every K updates (0 = 20) */
    const char *dist_transport;                /* "tcp" | "nccl" | NULL = nccl on cuda, else tcp */
    /* weight push to the rollout workers: "host:port" where this learner (rank 0) listens for
     * them to join its weights group (JoinWeightGroup, docs/DIST.md); NULL = gRPC only */
    const char *weights_rendezvous;
    const char *weights_transport;             /* "nccl" | "tcp" | "grpc" | NULL = nccl on cuda
                                                  (with NCCL and weights_rendezvous), else grpc */
} aha_learner_env;
typedef enum { AHA_EV_METRICS, AHA_EV_EVAL, AHA_EV_LOG, AHA_EV_STAGE } aha_job_event_type;
typedef struct {
    const char *job_id, *job_dir;
    const aha_job_spec *spec;                  /* parsed and validated */
    const aha_learner_env *env;
    /* thread-safe sink for WatchJob: json is one metrics/eval record (also written by the
       runner to job_dir/metrics.jsonl / eval.jsonl), message a log line or stage name */
    void (*emit)(void *user, aha_job_event_type type, int64_t step, const char *json, const char *message);
    void *user;
    volatile int *cancel;                      /* set to 1 by CancelJob / shutdown; poll between steps */
    int64_t *progress_step, *progress_total;   /* the runner keeps these current (GetJob shows them) */
} aha_job_ctx;
/* AHA_OK when the job completed; AHA_ECANCELLED when *cancel stopped it (checkpoint kept, so a
 * later run resumes); other statuses = failed, err says why. Resumes when job_dir holds a checkpoint. */
aha_status aha_job_run(aha_job_ctx *ctx, aha_err *err);
/* Learner ranks != 0 (env->rank >= 1): join rank 0's group at env->rendezvous, then train
 * each grpo/sft job rank 0 starts on this rank's share of every step, until *stop is set
 * (checked between jobs and while waiting for rank 0), or after one job when once. A group
 * that breaks (rank 0 gone, a collective's deadline) ends the job here; the rank then waits
 * to join again. Returns the last job's status when once, else AHA_OK when stopped. */
aha_status aha_job_follow(const aha_learner_env *env, volatile int *stop, bool once, aha_err *err);
