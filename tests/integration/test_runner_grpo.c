/* test_runner_grpo: GRPO jobs through aha_job_run against real aha-reward, aha-rollout and
 * aha-refpolicy processes on loopback, with a tiny random model:
 *   - every step's record has the metrics of issue 5, the first pass's ratio is exactly 1
 *     (old logprobs recomputed by the learner on its own micro-batches), rollout and learner
 *     logprobs agree (fp32 weight push), evals run before the first update and at the end;
 *   - a job cancelled after step 3 (last checkpoint: step 2) and run again resumes and
 *     computes the same losses for steps 3 and 4 as a job that never stopped;
 *   - with a second, dead rollout address, its prompts go to the live worker and the job
 *     completes.
 * argv: aha-reward aha-rollout aha-refpolicy */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../harness.h"
#include "base/fs.h"
#include "learner_env.h"
#include "runner.h"

#define MAXS 16

typedef struct {
    double loss[MAXS], ratio[MAXS], mismatch[MAXS];
    int n, n_eval, keys_ok;
    int cancel_after;
    volatile int *cancel;
} sink;

static void emit(void *user, aha_job_event_type type, int64_t step, const char *json, const char *message)
{
    (void)message;
    sink *s = user;
    if (type == AHA_EV_EVAL && json) s->n_eval++;
    if (type != AHA_EV_METRICS || !json) return;
    json_t *o = json_loads(json, 0, NULL);
    if (o && step >= 1 && step < MAXS) {
        s->loss[step] = json_number_value(json_object_get(o, "loss"));
        s->ratio[step] = json_number_value(json_object_get(o, "ratio_mean"));
        s->mismatch[step] = json_number_value(json_object_get(o, "logprob_mismatch"));
        if (step > s->n) s->n = (int)step;
        const char *keys[] = {"reward_mean", "reward_std", "accuracy", "format_rate", "length_mean", "length_max",
                              "kl_mean", "clip_frac", "grad_norm", "lr", "all_equal_groups", "tokens_per_s",
                              "reflection_rate", "seconds", "rewards"};
        int ok = 1;
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
            if (!json_object_get(o, keys[i])) {
                fprintf(stderr, "step %lld: no \"%s\" in %s\n", (long long)step, keys[i], json);
                ok = 0;
            }
        json_t *sec = json_object_get(o, "seconds");
        const char *phases[] = {"generate", "score", "reference", "train", "push"};
        for (size_t i = 0; sec && i < 5; i++)
            if (!json_object_get(sec, phases[i])) ok = 0;
        s->keys_ok += ok;
    }
    json_decref(o);
    if (s->cancel_after && step == s->cancel_after) *s->cancel = 1;
}

static aha_status run(const char *spec_json, const char *dir, const aha_learner_env *env, sink *s,
                      volatile int *cancel, aha_err *err)
{
    aha_job_spec spec;
    AHA_TRY(aha_job_spec_parse(spec_json, strlen(spec_json), &spec, err));
    int64_t ps = 0, pt = 0;
    aha_job_ctx ctx = {.job_id = "g", .job_dir = dir, .spec = &spec, .env = env, .emit = emit, .user = s,
                       .cancel = cancel, .progress_step = &ps, .progress_total = &pt};
    s->cancel = cancel;
    aha_status st = aha_job_run(&ctx, err);
    aha_job_spec_free(&spec);
    return st;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: test_runner_grpo AHA-REWARD AHA-ROLLOUT AHA-REFPOLICY\n");
        return 2;
    }
    char root[] = "/tmp/aha-test-grpo-XXXXXX";
    CHECK(mkdtemp(root) != NULL, "mkdtemp");
    char base[512], train[512], evalp[512], ja[512], jb[512], jc[512];
    snprintf(base, sizeof base, "%s/base", root);
    snprintf(train, sizeof train, "%s/train.jsonl", root);
    snprintf(evalp, sizeof evalp, "%s/eval.jsonl", root);
    snprintf(ja, sizeof ja, "%s/job-a", root);
    snprintf(jb, sizeof jb, "%s/job-b", root);
    snprintf(jc, sizeof jc, "%s/job-c", root);
    aha_err err = {0};
    th_make_tiny_model(base, TH_TINY_QWEN2_CFG, 11);
    th_write_sum_prompts(train, 16, 7);
    th_write_sum_prompts(evalp, 3, 9);

    th_services sv;
    th_services_start(&sv, argv[1], argv[2], argv[3], base, 1024, 0);
    aha_learner_env env = {.rollout = {sv.rollout_addr}, .n_rollout = 1, .reward = sv.reward_addr,
                           .refpolicy = sv.refpolicy_addr, .device = "cpu", .rpc_timeout_ms = 60000};

    char spec[4096];
    snprintf(spec, sizeof spec,
             "{\"kind\": \"grpo\", \"model\": \"%s\", \"dataset\": \"%s\", \"template\": \"r1-zero\","
             " \"G\": 4, \"questions_per_step\": 2, \"steps\": 4, \"mu\": 2, \"micro_batch\": 3,"
             " \"max_new_tokens\": 12, \"temperature\": 1.0, \"lr\": 1e-2, \"beta\": 0.04,"
             " \"checkpoint_every\": 2, \"seed\": 3,"
             " \"eval\": {\"dataset\": \"%s\", \"every\": 0, \"k\": 2, \"max_new_tokens\": 8}}",
             base, train, evalp);
    volatile int ca = 0, cb = 0, cc = 0;
    sink sa = {0}, sb = {0}, sc = {0};
    aha_status st = AHA_OK;
    if (sv.reward.port && sv.rollout.port && sv.refpolicy.port) {
        st = run(spec, ja, &env, &sa, &ca, &err);
        CHECK(st == AHA_OK, "job a: %s", err.msg);
        CHECK(sa.n == 4 && sa.keys_ok == 4, "4 step records with every metric (%d, %d)", sa.n, sa.keys_ok);
        CHECK(sa.n_eval == 2, "evals before the first update and at the end: %d", sa.n_eval);
        for (int s = 1; s <= sa.n; s++) {
            CHECK(sa.ratio[s] == 1.0, "step %d: first-pass ratio %.17g is exactly 1", s, sa.ratio[s]);
            CHECK(isfinite(sa.loss[s]), "step %d: loss %g", s, sa.loss[s]);
            CHECK(sa.mismatch[s] < 1e-3, "step %d: rollout/learner logprob gap %g", s, sa.mismatch[s]);
        }

        sb.cancel_after = 3;
        st = run(spec, jb, &env, &sb, &cb, &err);
        CHECK(st == AHA_ECANCELLED, "job b cancelled: %s %s", aha_status_name(st), err.msg);
        cb = 0;
        sb.cancel_after = 0;
        memset(sb.loss, 0, sizeof sb.loss);
        sb.n = 0;
        st = run(spec, jb, &env, &sb, &cb, &err);
        CHECK(st == AHA_OK, "job b resumed: %s", err.msg);
        CHECK(sb.loss[2] == 0 && sb.n == 4, "resumed at step 3");
        for (int s = 3; s <= 4; s++)
            CHECK(sb.loss[s] == sa.loss[s], "step %d: resumed loss %.17g, uninterrupted %.17g", s, sb.loss[s],
                  sa.loss[s]);

        /* a dead second worker: its share goes to the live one */
        aha_learner_env env2 = env;
        env2.rollout[1] = "127.0.0.1:1";
        env2.n_rollout = 2;
        char spec2[4096];
        snprintf(spec2, sizeof spec2,
                 "{\"kind\": \"grpo\", \"model\": \"%s\", \"dataset\": \"%s\", \"G\": 2,"
                 " \"questions_per_step\": 2, \"steps\": 1, \"max_new_tokens\": 6, \"seed\": 4}",
                 base, train);
        st = run(spec2, jc, &env2, &sc, &cc, &err);
        CHECK(st == AHA_OK && sc.n == 1, "job with a dead worker completes: %s", err.msg);
    }
    th_services_stop(&sv);
    aha_remove_tree(root, NULL);
    return th_done("runner_grpo");
}
