/* test_runner_sft: an SFT job through aha_job_run on a tiny random model: checkpoints are
 * written atomically and pruned to the last two, a job cancelled after step 3 and run again
 * resumes from its checkpoint and produces the same losses and bit-identical final weights
 * as a job that never stopped, metrics.jsonl holds one line per step, and a checkpoint of a
 * different spec is refused. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../harness.h"
#include "base/fs.h"
#include "checkpoint.h"
#include "../../integration/learner_env.h"
#include "runner.h"

typedef struct {
    double loss[32];
    int n;
    int cancel_after; /* set *cancel once this step's record is out; 0 = never */
    volatile int *cancel;
} sink;

static void emit(void *user, aha_job_event_type type, int64_t step, const char *json, const char *message)
{
    (void)message;
    sink *s = user;
    if (type != AHA_EV_METRICS || !json) return;
    json_t *o = json_loads(json, 0, NULL);
    if (o && step >= 1 && step < 32) {
        s->loss[step] = json_real_value(json_object_get(o, "loss"));
        if (step > s->n) s->n = (int)step;
    }
    json_decref(o);
    if (s->cancel_after && step == s->cancel_after) *s->cancel = 1;
}

static aha_status run(const char *spec_json, const char *dir, sink *s, volatile int *cancel, aha_err *err)
{
    aha_job_spec spec;
    AHA_TRY(aha_job_spec_parse(spec_json, strlen(spec_json), &spec, err));
    aha_learner_env env = {.device = "cpu", .rpc_timeout_ms = 1000};
    int64_t ps = 0, pt = 0;
    aha_job_ctx ctx = {.job_id = "t", .job_dir = dir, .spec = &spec, .env = &env, .emit = emit, .user = s,
                       .cancel = cancel, .progress_step = &ps, .progress_total = &pt};
    s->cancel = cancel;
    aha_status st = aha_job_run(&ctx, err);
    aha_job_spec_free(&spec);
    return st;
}

static int count_step_lines(const char *path)
{
    char *d = NULL;
    size_t len = 0;
    if (aha_read_file(path, 1 << 24, &d, &len, NULL) != AHA_OK) return -1;
    int n = 0, expect = 1, ok = 1;
    for (char *p = d; p && *p;) {
        char *nl = strchr(p, '\n');
        json_t *o = json_loadb(p, nl ? (size_t)(nl - p) : strlen(p), 0, NULL);
        if (o && json_integer_value(json_object_get(o, "step")) != expect++) ok = 0;
        json_decref(o);
        n++;
        p = nl ? nl + 1 : NULL;
    }
    free(d);
    return ok ? n : -2;
}

int main(void)
{
    char root[] = "/tmp/aha-test-runner-XXXXXX";
    CHECK(mkdtemp(root) != NULL, "mkdtemp");
    char base[512], data[512], a[512], b[512], p[4096];
    aha_err err = {0};
    snprintf(base, sizeof base, "%s/base", root);
    snprintf(data, sizeof data, "%s/sft.jsonl", root);
    snprintf(a, sizeof a, "%s/job-a", root);
    snprintf(b, sizeof b, "%s/job-b", root);

    /* a tiny model with a byte-level tokenizer, and a small corpus */
    th_make_tiny_model(base, TH_TINY_QWEN2_CFG, 7);
    CHECK(th_write_sum_sft(data, 40), "open %s", data);

    char spec[4096];
    snprintf(spec, sizeof spec,
             "{\"kind\": \"sft\", \"model\": \"%s\", \"dataset\": {\"path\": \"%s\", \"format\": \"sft\"},"
             " \"steps\": 6, \"batch_size\": 4, \"micro_batch\": 3, \"lr\": 3e-3, \"warmup_steps\": 2,"
             " \"schedule\": \"cosine\", \"checkpoint_every\": 3, \"seed\": 5}",
             base, data);

    /* A: uninterrupted */
    volatile int cancel_a = 0, cancel_b = 0;
    sink sa = {0}, sb = {0};
    CHECK(run(spec, a, &sa, &cancel_a, &err) == AHA_OK, "job a: %s", err.msg);
    CHECK(sa.n == 6, "job a emitted %d steps", sa.n);
    CHECK(sa.loss[6] < sa.loss[1], "loss falls: %g -> %g", sa.loss[1], sa.loss[6]);
    char latest[1024];
    CHECK(aha_ckpt_latest(a, latest, sizeof latest, &err) == AHA_OK, "latest: %s", err.msg);
    CHECK(strstr(latest, "ckpt-000006") != NULL, "latest is %s", latest);
    snprintf(p, sizeof p, "%s/ckpt-000003", a);
    CHECK(aha_path_is_dir(p), "ckpt-000003 kept (last two)");
    for (const char *fn = "config.json\0model.safetensors\0tokenizer.json\0optimizer.safetensors\0state.json\0"; *fn;
         fn += strlen(fn) + 1) {
        snprintf(p, sizeof p, "%s/%s", latest, fn);
        CHECK(aha_path_exists(p), "checkpoint has %s", fn);
    }

    /* B: cancelled after step 4's record (its last checkpoint is step 3), then resumed */
    sb.cancel_after = 4;
    aha_status st = run(spec, b, &sb, &cancel_b, &err);
    CHECK(st == AHA_ECANCELLED, "job b stops cancelled, got %s (%s)", aha_status_name(st), err.msg);
    CHECK(sb.n == 4, "job b ran %d steps before the cancel", sb.n);
    snprintf(p, sizeof p, "%s/metrics.jsonl", b);
    CHECK(count_step_lines(p) == 4, "4 step lines before resume, got %d", count_step_lines(p));
    cancel_b = 0;
    sb.cancel_after = 0;
    sb.n = 0;
    memset(sb.loss, 0, sizeof sb.loss);
    CHECK(run(spec, b, &sb, &cancel_b, &err) == AHA_OK, "job b resumed: %s", err.msg);
    CHECK(sb.loss[3] == 0 && sb.n == 6, "resume starts at step 4 (n %d)", sb.n);
    for (int s = 4; s <= 6; s++)
        CHECK(sb.loss[s] == sa.loss[s], "step %d loss after resume %.17g, uninterrupted %.17g", s, sb.loss[s], sa.loss[s]);
    CHECK(count_step_lines(p) == 6, "metrics.jsonl: steps 1..6 once each, got %d", count_step_lines(p));
    /* bit-identical final weights and optimizer state */
    const char *files[] = {"model.safetensors", "optimizer.safetensors"};
    for (int i = 0; i < 2; i++) {
        char pa[1024], pb[1024], *da = NULL, *db = NULL;
        size_t la = 0, lb = 0;
        snprintf(pa, sizeof pa, "%s/ckpt-000006/%s", a, files[i]);
        snprintf(pb, sizeof pb, "%s/ckpt-000006/%s", b, files[i]);
        CHECK(aha_read_file(pa, 1 << 28, &da, &la, &err) == AHA_OK, "%s", err.msg);
        CHECK(aha_read_file(pb, 1 << 28, &db, &lb, &err) == AHA_OK, "%s", err.msg);
        CHECK(da && db && la == lb && memcmp(da, db, la) == 0, "%s identical after resume", files[i]);
        free(da);
        free(db);
    }

    /* the same job dir with another spec is refused, naming the mismatch */
    char spec2[8192];
    snprintf(spec2, sizeof spec2, "%.*s, \"weight_decay\": 0.5}", (int)(strlen(spec) - 1), spec);
    sink sc = {0};
    volatile int cancel_c = 0;
    st = run(spec2, b, &sc, &cancel_c, &err);
    CHECK(st == AHA_EPRECOND && strstr(err.msg, "different job spec"), "other spec refused: %s %s",
          aha_status_name(st), err.msg);

    aha_remove_tree(root, NULL);
    return th_done("learner_runner_sft");
}
