/* test_grpo_math: group advantages against the PyTorch fixtures and hand cases, the lr
 * schedule at known points, and per-step metrics aggregation. */
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "../../harness.h"
#include "base/fs.h"
#include "io/safetensors.h"
#include "grpo_math.h"

static void test_fixtures(void)
{
    const char *models[] = {"tiny-qwen2", "tiny-llama", "tiny-qwen3"};
    for (int m = 0; m < 3; m++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s/grpo.safetensors", th_fixtures(), models[m]);
        aha_st_file *f = NULL;
        aha_err e = {0};
        CHECK(aha_st_open(path, &f, &e) == AHA_OK, "%s", e.msg);
        if (!f) continue;
        const aha_st_tensor *rt = aha_st_find(f, "rewards");
        CHECK(rt && rt->ndim == 1 && rt->numel > 1 && rt->numel <= 64, "%s: rewards", path);
        if (!rt || rt->numel > 64) {
            aha_st_close(f);
            continue;
        }
        int n = (int)rt->numel;
        int64_t shape[1] = {n};
        float r[64], want[64], got[64];
        CHECK(aha_st_load_f32(f, "rewards", 1, shape, r, &e) == AHA_OK, "%s", e.msg);
        CHECK(aha_st_load_f32(f, "advantages", 1, shape, want, &e) == AHA_OK, "%s", e.msg);
        aha_st_close(f);
        double rd[64];
        for (int i = 0; i < n; i++) rd[i] = r[i];
        bool eq;
        /* the fixtures: (rewards - rewards.mean()) / (rewards.std() + 1e-4), one group */
        int64_t n_eq = aha_grpo_advantages(rd, 1, n, true, 1e-4, got, &eq);
        CHECK(n_eq == 0 && !eq, "fixture group is not all-equal");
        double worst = th_max_abs(models[m], got, want, n);
        CHECK(worst < 1e-6, "%s: advantages differ by %g", models[m], worst);
    }
}

static void test_hand(void)
{
    /* two groups of 3: [1,0,0] and all-equal [0.5,0.5,0.5] */
    double r[6] = {1, 0, 0, 0.5, 0.5, 0.5};
    float a[6];
    bool eq[2];
    CHECK(aha_grpo_advantages(r, 2, 3, true, 1e-4, a, eq) == 1, "one all-equal group");
    CHECK(!eq[0] && eq[1], "flags");
    /* mean 1/3, sample std sqrt(((2/3)^2 + 2 (1/3)^2) / 2) = sqrt(1/3) */
    double sd = sqrt(1.0 / 3.0);
    CHECK(fabs(a[0] - (2.0 / 3.0) / (sd + 1e-4)) < 1e-6, "a0 %g", a[0]);
    CHECK(fabs(a[1] + (1.0 / 3.0) / (sd + 1e-4)) < 1e-6, "a1 %g", a[1]);
    CHECK(a[3] == 0 && a[4] == 0 && a[5] == 0, "all-equal group gives exactly 0");
    /* values whose mean is not exactly representable */
    double r3[3] = {0.1, 0.1, 0.1};
    float a3[3];
    aha_grpo_advantages(r3, 1, 3, true, 1e-4, a3, NULL);
    CHECK(a3[0] == 0 && a3[1] == 0 && a3[2] == 0, "0.1 x3 gives 0");
    double r1[1] = {0.7};
    float a1[1] = {9};
    CHECK(aha_grpo_advantages(r1, 1, 1, true, 1e-4, a1, NULL) == 1 && a1[0] == 0, "single element");
    /* no std scaling: A = r - mean */
    aha_grpo_advantages(r, 1, 3, false, 1e-4, a, NULL);
    CHECK(fabs(a[0] - 2.0 / 3.0) < 1e-7 && fabs(a[2] + 1.0 / 3.0) < 1e-7, "scale_std off");
    /* advantages of a group sum to zero */
    double rr[5] = {0.2, 1.7, 0.3, 0.9, 2.0};
    float aa[5];
    aha_grpo_advantages(rr, 1, 5, true, 1e-4, aa, NULL);
    double s = 0;
    for (int i = 0; i < 5; i++) s += aa[i];
    CHECK(fabs(s) < 1e-6, "sum %g", s);
}

static void test_schedule(void)
{
    aha_optim_spec o = {0};
    o.lr = 1e-3;
    o.schedule = AHA_SCHED_CONSTANT;
    CHECK(aha_lr_at(&o, 0, 100) == 1e-3 && aha_lr_at(&o, 99, 100) == 1e-3, "constant");
    o.warmup_steps = 4;
    CHECK(fabs(aha_lr_at(&o, 0, 100) - 0.25e-3) < 1e-15, "warmup step 0");
    CHECK(fabs(aha_lr_at(&o, 1, 100) - 0.5e-3) < 1e-15, "warmup step 1");
    CHECK(aha_lr_at(&o, 4, 100) == 1e-3, "after warmup");
    o.schedule = AHA_SCHED_LINEAR;
    /* total 104, warmup 4: step 4 + 50 is half-way */
    CHECK(fabs(aha_lr_at(&o, 54, 104) - 0.5e-3) < 1e-15, "linear half %g", aha_lr_at(&o, 54, 104));
    CHECK(fabs(aha_lr_at(&o, 104, 104)) < 1e-18, "linear end");
    o.schedule = AHA_SCHED_COSINE;
    CHECK(fabs(aha_lr_at(&o, 4, 104) - 1e-3) < 1e-15, "cosine start");
    CHECK(fabs(aha_lr_at(&o, 54, 104) - 0.5e-3) < 1e-15, "cosine half");
    /* a quarter: 0.5 (1 + cos(pi/4)) */
    CHECK(fabs(aha_lr_at(&o, 29, 104) - 1e-3 * 0.5 * (1 + sqrt(0.5))) < 1e-15, "cosine quarter");
    o.min_lr_ratio = 0.1;
    CHECK(fabs(aha_lr_at(&o, 104, 104) - 1e-4) < 1e-15, "cosine floor");
    CHECK(fabs(aha_lr_at(&o, 1000, 104) - 1e-4) < 1e-15, "past the end stays at floor");
}

static void test_metrics(void)
{
    char *words[] = {"wait", "let me check"};
    aha_step_metrics m;
    aha_step_metrics_init(&m, 3, 10);
    m.lr = 1e-6;
    m.kl_mean = 0.01;
    m.t_total = 2.0;
    m.t_generate = 1.5;
    m.tokens = 400;
    m.stage = "rl";
    const char *t0 = "<think> 2+2=4. WAIT, let me re-do </think>";
    aha_completion_stats g1[2] = {
        {2.0, 1, 1, NAN, 10, false, t0, strlen(t0)},
        {0.0, 0, 0, NAN, 30, true, "no", 2},
    };
    aha_completion_stats g2[2] = {
        {1.0, 0, 1, NAN, 20, false, "Let Me Check", 12},
        {1.0, 0, 1, NAN, 40, false, NULL, 0},
    };
    aha_step_metrics_add_group(&m, g1, 2, words, 2);
    aha_step_metrics_add_group(&m, g2, 2, words, 2);
    char *line;
    aha_err e = {0};
    CHECK(aha_step_metrics_json(&m, &line, &e) == AHA_OK, "%s", e.msg);
    CHECK(strchr(line, '\n') == NULL, "one line");
    json_t *o = json_loads(line, 0, NULL);
    CHECK(o != NULL, "valid JSON: %s", line);
    if (!o) return;
    /* independent: rewards 2,0,1,1 → mean 1, pop std sqrt(0.5) */
    CHECK(strcmp(json_string_value(json_object_get(o, "type")), "step") == 0, "type");
    CHECK(strcmp(json_string_value(json_object_get(o, "stage")), "rl") == 0, "stage");
    CHECK(json_integer_value(json_object_get(o, "step")) == 3, "step");
    CHECK(fabs(json_real_value(json_object_get(o, "reward_mean")) - 1.0) < 1e-9, "reward mean");
    CHECK(fabs(json_real_value(json_object_get(o, "reward_std")) - sqrt(0.5)) < 1e-9, "reward std");
    CHECK(fabs(json_real_value(json_object_get(o, "accuracy")) - 0.25) < 1e-9, "accuracy");
    /* group stds (n - 1): {2, 0} → sqrt(2), {1, 1} → 0; mean sqrt(2)/2 */
    CHECK(fabs(json_real_value(json_object_get(o, "group_reward_std")) - sqrt(2) / 2) < 1e-9, "group std");
    CHECK(fabs(json_real_value(json_object_get(o, "format_rate")) - 0.75) < 1e-9, "format rate");
    CHECK(fabs(json_real_value(json_object_get(o, "length_mean")) - 25) < 1e-9, "length mean");
    CHECK(json_integer_value(json_object_get(o, "length_max")) == 40, "length max");
    CHECK(fabs(json_real_value(json_object_get(o, "all_equal_groups")) - 0.5) < 1e-9, "all-equal share");
    CHECK(fabs(json_real_value(json_object_get(o, "reflection_rate")) - 0.5) < 1e-9, "reflection rate");
    CHECK(fabs(json_real_value(json_object_get(o, "truncated_rate")) - 0.25) < 1e-9, "truncated");
    CHECK(fabs(json_real_value(json_object_get(o, "tokens_per_s")) - 200) < 1e-9, "tokens/s");
    json_t *rw = json_object_get(o, "rewards");
    CHECK(fabs(json_real_value(json_object_get(json_object_get(rw, "format"), "mean")) - 0.75) < 1e-9,
          "format component mean");
    CHECK(json_object_get(rw, "language") == NULL, "absent component left out");
    CHECK(json_object_get(o, "loss") == NULL, "unmeasured scalar left out");
    CHECK(fabs(json_real_value(json_object_get(json_object_get(o, "seconds"), "generate")) - 1.5) < 1e-9,
          "seconds.generate");
    json_decref(o);

    char dir[] = "/tmp/aha_metrics_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char path[256];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    CHECK(aha_metrics_append(path, line, &e) == AHA_OK, "%s", e.msg);
    CHECK(aha_metrics_append(path, line, &e) == AHA_OK, "%s", e.msg);
    char *buf;
    size_t len;
    CHECK(aha_read_file(path, 1 << 20, &buf, &len, &e) == AHA_OK, "%s", e.msg);
    CHECK(len == 2 * (strlen(line) + 1), "two lines appended");
    free(buf);
    free(line);
    aha_remove_tree(dir, NULL);
    CHECK(aha_metrics_append("/nonexistent-dir/x/metrics.jsonl", "{}", &e) == AHA_EIO &&
              strstr(e.msg, "/nonexistent-dir/x/metrics.jsonl"), "error names the path");
}

int main(void)
{
    test_fixtures();
    test_hand();
    test_schedule();
    test_metrics();
    return th_done("grpo_math");
}
