/* test_spec: job spec parsing, defaults, normalisation round trip, every examples/ spec,
 * pipeline references, and malformed specs whose errors must name the bad field. */
#include <dirent.h>
#include <stdint.h>

#include "../../harness.h"
#include "base/fs.h"
#include "spec.h"
#include "text/template.h"

static int parse(const char *json, aha_job_spec *s, aha_err *e)
{
    return aha_job_spec_parse(json, strlen(json), s, e);
}

static void test_defaults(void)
{
    const char *j = "{\"kind\":\"grpo\",\"model\":\"m\",\"dataset\":\"d/train.jsonl\",\"steps\":10}";
    aha_job_spec s;
    aha_err e = {0};
    CHECK(parse(j, &s, &e) == AHA_OK, "%s", e.msg);
    CHECK(s.kind == AHA_JOB_GRPO, "kind");
    CHECK(s.group_size == 16 && s.mu == 1 && s.questions_per_step == 8, "G/mu/qps");
    CHECK(s.loss.epsilon == 0.2 && s.loss.beta == 0.04, "eps/beta");
    CHECK(s.loss.epsilon_low == 0.2 && s.loss.epsilon_high == 0.2, "asym defaults");
    CHECK(s.loss.kl && s.loss.scale_std && !s.loss.token_level && s.loss.std_eps == 1e-4, "variants");
    CHECK(s.sampling.temperature == 1.0 && s.sampling.top_p == 1.0 && s.sampling.top_k == 0, "sampling");
    CHECK(s.optim.grad_clip == 1.0 && s.optim.schedule == AHA_SCHED_CONSTANT, "optim");
    CHECK(strcmp(s.ref_model, "m") == 0 && strcmp(s.tokenizer, "m") == 0, "ref_model default");
    CHECK(strcmp(s.template_text, aha_template_builtin("r1-zero")) == 0, "template default");
    CHECK(strstr(s.template_text, "User: {prompt}. Assistant:") != NULL, "Table 1 text");
    CHECK(s.dataset.format == AHA_DS_GENERIC && strcmp(s.dataset.name, "train") == 0, "dataset");
    CHECK(strcmp(s.dataset.prompt_field, "prompt") == 0 && s.dataset.prompt_fallback_question,
          "prompt field");
    CHECK(s.reward_weights.accuracy == 1 && s.reward_weights.format == 1 &&
              s.reward_weights.language == 0, "weights");
    CHECK(s.n_reflection_words >= 3 && strcmp(s.reflection_words[0], "wait") == 0, "words");
    CHECK(s.ref_refresh_steps == 0 && s.seed == 42 && !s.has_eval, "misc");
    CHECK(s.services.n_rollout == 0 && !s.services.reward, "services default to learner's");
    char *out;
    CHECK(aha_job_spec_to_json(&s, &out, &e) == AHA_OK, "%s", e.msg);
    CHECK(strstr(out, "\"epsilon\": 0.2,") != NULL, "short reals: %s", out);
    aha_job_spec s2;
    CHECK(parse(out, &s2, &e) == AHA_OK, "reparse: %s", e.msg);
    char *out2;
    CHECK(aha_job_spec_to_json(&s2, &out2, &e) == AHA_OK, "%s", e.msg);
    CHECK(strcmp(out, out2) == 0, "normalised JSON is a fixed point");
    free(out);
    free(out2);
    aha_job_spec_free(&s2);
    aha_job_spec_free(&s);
}

static void test_formats_and_fields(void)
{
    const char *j = "{\"kind\":\"eval\",\"checkpoint\":\"c\",\"datasets\":["
                    "{\"path\":\"gsm.jsonl\",\"format\":\"gsm8k\"},"
                    "{\"path\":\"m.jsonl\",\"format\":\"math\",\"fields\":{\"prompt\":\"q\"}}]}";
    aha_job_spec s;
    aha_err e = {0};
    CHECK(parse(j, &s, &e) == AHA_OK, "%s", e.msg);
    CHECK(s.eval.n_datasets == 2 && s.eval.k == 16, "eval k default 16");
    CHECK(s.eval.sampling.temperature == 0.6 && s.eval.sampling.top_p == 0.95, "eval sampling");
    CHECK(strcmp(s.eval.datasets[0].prompt_field, "question") == 0, "gsm8k prompt field");
    CHECK(strcmp(s.eval.datasets[1].prompt_field, "q") == 0, "mapped prompt field");
    CHECK(strcmp(s.eval.datasets[1].answer_field, "solution") == 0, "math answer field");
    aha_job_spec_free(&s);

    j = "{\"kind\":\"grpo\",\"model\":\"m\",\"dataset\":\"d.jsonl\",\"steps\":5,"
        "\"loss\":{\"epsilon_high\":0.28,\"kl\":false,\"token_level\":true,\"scale_std\":false},"
        "\"template\":\"Q: {prompt}\\nA:\",\"schedule\":\"cosine\",\"warmup_steps\":2}";
    CHECK(parse(j, &s, &e) == AHA_OK, "%s", e.msg);
    CHECK(s.loss.epsilon_high == 0.28 && s.loss.epsilon_low == 0.2 && !s.loss.kl &&
              s.loss.token_level && !s.loss.scale_std, "variants parsed");
    CHECK(strcmp(s.template_text, "Q: {prompt}\nA:") == 0, "custom template");
    aha_job_spec_free(&s);

    j = "{\"kind\":\"distill\",\"student_config\":\"small/config.json\",\"tokenizer\":\"tok\","
        "\"dataset\":\"gen.jsonl\",\"teacher\":\"big\"}";
    CHECK(parse(j, &s, &e) == AHA_OK, "%s", e.msg);
    CHECK(s.dataset.format == AHA_DS_SFT && s.epochs == 1 && s.optim.lr == 1e-5, "distill defaults");
    s.epochs = 3; /* 3 epochs of ceil(17 / 8) = 3 batches */
    CHECK(aha_job_total_steps(&s, 17) == 9 && aha_job_total_steps(&s, 16) == 6, "sft steps from epochs");
    s.steps = 5;
    CHECK(aha_job_total_steps(&s, 17) == 5, "explicit steps win");
    aha_job_spec_free(&s);

    j = "{\"kind\":\"mix\",\"sources\":[{\"path\":\"a\",\"proportion\":3},\"b\"],\"total\":10}";
    CHECK(parse(j, &s, &e) == AHA_OK, "%s", e.msg);
    CHECK(s.n_sources == 2 && s.sources[0].proportion == 3 && s.sources[1].proportion == 1, "mix");
    aha_job_spec_free(&s);
}

typedef struct {
    int calls;
} subst_ctx;

static aha_status resolver(void *ctx, const char *stage, aha_job_ref_kind what, char **out,
                           aha_err *err)
{
    ((subst_ctx *)ctx)->calls++;
    if (asprintf(out, "/jobs/x/%s/%s", stage, what == AHA_REF_CHECKPOINT ? "final" : "data.jsonl") < 0)
        return aha_errf(err, AHA_ENOMEM, "oom");
    return AHA_OK;
}

static void test_pipeline(void)
{
    const char *j =
        "{\"kind\":\"pipeline\",\"seed\":7,\"services\":{\"reward\":\"127.0.0.1:9000\"},\"stages\":["
        "{\"name\":\"sft1\",\"kind\":\"sft\",\"model\":\"base\",\"dataset\":\"cold.jsonl\"},"
        "{\"name\":\"rl\",\"kind\":\"grpo\",\"model\":\"${stages.sft1.checkpoint}\","
        "\"dataset\":\"train.jsonl\",\"steps\":3,\"seed\":9},"
        "{\"name\":\"gen\",\"kind\":\"generate\",\"checkpoint\":\"${stages.rl.checkpoint}\","
        "\"dataset\":\"train.jsonl\",\"n\":8,\"keep_per_prompt\":2},"
        "{\"name\":\"mix\",\"kind\":\"mix\",\"sources\":[\"${stages.gen.dataset}\",\"cold.jsonl\"]},"
        "{\"name\":\"sft2\",\"kind\":\"sft\",\"model\":\"${stages.rl.checkpoint}\","
        "\"dataset\":{\"path\":\"${stages.mix.dataset}\"}}]}";
    aha_job_spec s;
    aha_err e = {0};
    CHECK(parse(j, &s, &e) == AHA_OK, "%s", e.msg);
    CHECK(s.n_stages == 5, "stages");
    CHECK(s.stages[0].seed == 7 && s.stages[1].seed == 9, "seed inherited / overridden");
    CHECK(s.stages[1].services.reward && strcmp(s.stages[1].services.reward, "127.0.0.1:9000") == 0,
          "services inherited");
    subst_ctx ctx = {0};
    CHECK(aha_job_spec_resolve(&s.stages[4], resolver, &ctx, &e) == AHA_OK, "%s", e.msg);
    CHECK(strcmp(s.stages[4].model, "/jobs/x/rl/final") == 0, "model resolved: %s", s.stages[4].model);
    CHECK(strcmp(s.stages[4].dataset.path, "/jobs/x/mix/data.jsonl") == 0, "dataset resolved");
    CHECK(ctx.calls == 3, "one call per reference (model, tokenizer, dataset): %d", ctx.calls);
    char *o;
    CHECK(aha_job_spec_subst("a${stages.x.dataset}b${stages.y.checkpoint}", resolver, &ctx, &o, &e) == AHA_OK, "%s", e.msg);
    CHECK(strcmp(o, "a/jobs/x/x/data.jsonlb/jobs/x/y/final") == 0, "embedded refs: %s", o);
    free(o);
    char *out;
    CHECK(aha_job_spec_to_json(&s, &out, &e) == AHA_OK, "%s", e.msg);
    aha_job_spec s2;
    CHECK(parse(out, &s2, &e) == AHA_OK, "normalised pipeline reparses: %s", e.msg);
    free(out);
    aha_job_spec_free(&s2);
    aha_job_spec_free(&s);
}

static void test_examples(void)
{
    const char *root = getenv("AHA_SOURCE_ROOT");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/examples", root ? root : ".");
    DIR *d = opendir(dir);
    CHECK(d != NULL, "open %s", dir);
    if (!d) return;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l < 6 || strcmp(de->d_name + l - 5, ".json") != 0) continue;
        /* examples/topology-*.json are `ahactl up` topologies (docs/DEPLOY.md), not job specs. */
        if (strncmp(de->d_name, "topology", 8) == 0) continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        char *buf;
        size_t len;
        aha_err e = {0};
        CHECK(aha_read_file(path, 1 << 20, &buf, &len, &e) == AHA_OK, "%s", e.msg);
        aha_job_spec s;
        aha_status st = aha_job_spec_parse(buf, len, &s, &e);
        CHECK(st == AHA_OK, "%s: %s", de->d_name, e.msg);
        if (st == AHA_OK) aha_job_spec_free(&s);
        free(buf);
        n++;
    }
    closedir(d);
    CHECK(n >= 4, "found %d example specs", n);
}

static const struct {
    const char *json;
    const char *want; /* substring of the message */
} bad[] = {
    {"", "spec: empty"},
    {"{\"kind\":", "invalid JSON"},
    {"[1]", "spec: must be an object"},
    {"{}", "spec.kind: required"},
    {"{\"kind\":\"ppo\"}", "spec.kind: must be one of grpo, sft"},
    {"{\"kind\":\"grpo\",\"dataset\":\"d\",\"steps\":1}", "spec.model: required"},
    {"{\"kind\":\"grpo\",\"model\":\"m\",\"steps\":1}", "spec.dataset: required"},
    {"{\"kind\":\"grpo\",\"model\":\"m\",\"dataset\":\"d\"}", "spec.steps: required"},
    {"{\"kind\":\"grpo\",\"model\":\"m\",\"dataset\":\"d\",\"steps\":1,\"epsilon\":3}",
     "spec.epsilon: must be in (0, 1), got 3"},
    {"{\"kind\":\"grpo\",\"model\":\"m\",\"dataset\":\"d\",\"steps\":1,\"G\":1}", "spec.G: must be in [2, 1024], got 1"},
    {"{\"kind\":\"grpo\",\"model\":\"m\",\"dataset\":\"d\",\"steps\":1,\"G\":2.5}", "spec.G: must be an integer"},
    {"{\"kind\":\"grpo\",\"model\":\"m\",\"dataset\":\"d\",\"steps\":1,\"beta\":-1}", "spec.beta: must be >= 0, got -1"},
    {"{\"kind\":\"grpo\",\"model\":\"m\",\"dataset\":\"d\",\"steps\":1,\"foo\":1}", "spec.foo: unknown field"},
    {"{\"kind\":\"sft\",\"model\":\"m\",\"dataset\":\"d\",\"G\":4}", "spec.G: not a field of sft jobs"},
    {"{\"kind\":\"grpo\",\"model\":\"m\",\"dataset\":\"d\",\"steps\":1,\"top_p\":0}", "spec.top_p: must be in (0, 1], got 0"},
    {"{\"kind\":\"grpo\",\"model\":\"m\",\"dataset\":\"d\",\"steps\":1,\"temperature\":0}", "spec.temperature: must be > 0 for grpo"},
    {"{\"kind\":\"grpo\",\"model\":\"m\",\"dataset\":\"d\",\"steps\":1,\"schedule\":\"step\"}", "spec.schedule: must be one of constant, cosine, linear"},
    {"{\"kind\":\"grpo\",\"model\":\"m\",\"dataset\":\"d\",\"steps\":1,\"template\":\"no placeholder\"}", "spec.template: must contain {prompt}"},
    {"{\"kind\":\"grpo\",\"model\":\"m\",\"dataset\":{\"path\":\"d\",\"format\":\"csv\"},\"steps\":1}", "spec.dataset.format: must be one of"},
    {"{\"kind\":\"grpo\",\"model\":\"m\",\"dataset\":\"d\",\"steps\":1,\"template\":\"{prompt} {x}\"}", "spec.template: "},
    {"{\"kind\":\"grpo\",\"model\":\"m\",\"dataset\":{\"path\":\"d\",\"format\":\"sft\"},\"steps\":1}", "spec.dataset.format: must be one of generic, gsm8k, math here, got sft"},
    {"{\"kind\":\"grpo\",\"model\":\"m\",\"dataset\":{\"format\":\"gsm8k\"},\"steps\":1}", "spec.dataset.path: required"},
    {"{\"kind\":\"grpo\",\"model\":\"m\",\"dataset\":{\"path\":\"d\",\"fields\":{\"question\":\"q\"}},\"steps\":1}", "spec.dataset.fields.question: unknown field"},
    {"{\"kind\":\"grpo\",\"model\":\"m\",\"dataset\":\"d\",\"steps\":1,\"loss\":{\"epsilon_high\":2}}", "spec.loss.epsilon_high: must be in (0, 1), got 2"},
    {"{\"kind\":\"grpo\",\"model\":\"m\",\"dataset\":\"d\",\"steps\":1,\"loss\":{\"kl\":\"no\"}}", "spec.loss.kl: must be true or false, got a string"},
    {"{\"kind\":\"grpo\",\"model\":\"m\",\"dataset\":\"d\",\"steps\":1,\"reward_weights\":{\"accuracy\":0,\"format\":0}}", "spec.reward_weights: all weights are 0"},
    {"{\"kind\":\"grpo\",\"model\":\"m\",\"dataset\":\"d\",\"steps\":1,\"reward_weights\":{\"length\":1}}", "spec.reward_weights.length: unknown field"},
    {"{\"kind\":\"grpo\",\"model\":\"m\",\"dataset\":\"d\",\"steps\":1,\"services\":{\"rollout\":[\"localhost\"]}}", "spec.services.rollout: \"localhost\" is not HOST:PORT"},
    {"{\"kind\":\"grpo\",\"model\":\"m\",\"dataset\":\"d\",\"steps\":1,\"services\":{\"reward\":\"h:99999\"}}", "spec.services.reward: \"h:99999\": port must be 1..65535"},
    {"{\"kind\":\"grpo\",\"model\":\"m\",\"dataset\":\"d\",\"steps\":1,\"reflection_words\":[\"wait\",3]}", "spec.reflection_words: entry 1 must be a string"},
    {"{\"kind\":\"grpo\",\"model\":\"m\",\"dataset\":\"d\",\"steps\":1,\"eval\":{\"every\":5}}", "spec.eval.datasets: required"},
    {"{\"kind\":\"grpo\",\"model\":\"m\",\"dataset\":\"d\",\"steps\":1,\"eval\":{\"dataset\":\"e\",\"k\":0}}", "spec.eval.k: must be in [1, 1024], got 0"},
    {"{\"kind\":\"grpo\",\"model\":\"${stages.a.checkpoint}\",\"dataset\":\"d\",\"steps\":1}", "spec.model: references (${...}) are only allowed in pipeline stages"},
    {"{\"kind\":\"grpo\",\"model\":\"m\",\"dataset\":\"d\",\"steps\":1,\"seed\":-3}", "spec.seed: must be >= 0"},
    {"{\"kind\":\"grpo\",\"model\":\"m\",\"model\":\"n\",\"dataset\":\"d\",\"steps\":1}", "duplicate"},
    {"{\"kind\":\"eval\",\"checkpoint\":\"c\"}", "spec.datasets: required"},
    {"{\"kind\":\"eval\",\"checkpoint\":\"c\",\"datasets\":[\"a/x.jsonl\",\"b/x.jsonl\"]}", "spec.datasets[1].name: \"x\" is used twice"},
    {"{\"kind\":\"generate\",\"checkpoint\":\"c\",\"dataset\":\"d\",\"n\":2,\"keep_per_prompt\":3}", "spec.keep_per_prompt: must be <= n (2), got 3"},
    {"{\"kind\":\"generate\",\"checkpoint\":\"c\",\"dataset\":\"d\",\"min_language\":1.5}", "spec.min_language: must be in [0, 1], got 1.5"},
    {"{\"kind\":\"distill\",\"dataset\":\"d\"}", "spec.student_config: give exactly one of"},
    {"{\"kind\":\"distill\",\"student_config\":\"c.json\",\"dataset\":\"d\"}", "spec.tokenizer: required"},
    {"{\"kind\":\"distill\",\"model\":\"m\",\"student_init\":\"s\",\"dataset\":\"d\"}", "spec.model: not a field of distill jobs"},
    {"{\"kind\":\"mix\",\"sources\":[]}", "spec.sources: must hold 1 to 64 sources, got 0"},
    {"{\"kind\":\"mix\",\"sources\":[{\"path\":\"a\",\"count\":3}],\"total\":5}", "spec.sources[0].count: not allowed when total is set"},
    {"{\"kind\":\"mix\",\"sources\":[{\"path\":\"a\",\"proportion\":0}],\"total\":5}", "spec.sources[0].proportion: must be > 0, got 0"},
    {"{\"kind\":\"mix\",\"sources\":[\"a\"],\"template\":\"r1-zero\"}", "spec.template: not a field of mix jobs"},
    {"{\"kind\":\"pipeline\",\"stages\":[]}", "spec.stages: must hold 1 to 32 stages, got 0"},
    {"{\"kind\":\"pipeline\",\"stages\":[{\"kind\":\"sft\",\"model\":\"m\",\"dataset\":\"d\"}]}", "spec.stages[0].name: required"},
    {"{\"kind\":\"pipeline\",\"stages\":[{\"name\":\"a b\",\"kind\":\"sft\",\"model\":\"m\",\"dataset\":\"d\"}]}", "spec.stages[0].name: \"a b\": use letters"},
    {"{\"kind\":\"pipeline\",\"stages\":[{\"name\":\"a\",\"kind\":\"sft\",\"model\":\"m\",\"dataset\":\"d\"},"
     "{\"name\":\"a\",\"kind\":\"sft\",\"model\":\"m\",\"dataset\":\"d\"}]}", "spec.stages[1].name: \"a\" is already the name of stages[0]"},
    {"{\"kind\":\"pipeline\",\"stages\":[{\"name\":\"a\",\"kind\":\"pipeline\",\"stages\":[]}]}", "spec.stages[0].kind: a pipeline stage cannot be a pipeline"},
    {"{\"kind\":\"pipeline\",\"stages\":[{\"name\":\"a\",\"kind\":\"sft\",\"model\":\"${stages.b.checkpoint}\",\"dataset\":\"d\"},"
     "{\"name\":\"b\",\"kind\":\"sft\",\"model\":\"m\",\"dataset\":\"d\"}]}", "spec.stages[0].model: no earlier stage named \"b\""},
    {"{\"kind\":\"pipeline\",\"stages\":[{\"name\":\"a\",\"kind\":\"sft\",\"model\":\"m\",\"dataset\":\"d\"},"
     "{\"name\":\"b\",\"kind\":\"sft\",\"model\":\"m\",\"dataset\":\"${stages.a.dataset}\"}]}", "spec.stages[1].dataset: stage \"a\" (sft) produces no dataset"},
    {"{\"kind\":\"pipeline\",\"stages\":[{\"name\":\"a\",\"kind\":\"sft\",\"model\":\"m\",\"dataset\":\"d\"},"
     "{\"name\":\"b\",\"kind\":\"sft\",\"model\":\"${stages.a.weights}\",\"dataset\":\"d\"}]}", "spec.stages[1].model: bad reference"},
    {"{\"kind\":\"pipeline\",\"stages\":[{\"name\":\"a\",\"kind\":\"grpo\",\"model\":\"m\",\"dataset\":\"d\",\"steps\":1,\"mu\":0}]}", "spec.stages[0].mu: must be in [1, 64], got 0"},
};

static void test_malformed(void)
{
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        aha_job_spec s;
        aha_err e = {0};
        aha_status st = parse(bad[i].json, &s, &e);
        CHECK(st != AHA_OK, "case %zu accepted: %s", i, bad[i].json);
        if (st == AHA_OK) {
            aha_job_spec_free(&s);
            continue;
        }
        CHECK(strstr(e.msg, bad[i].want) != NULL, "case %zu: message \"%s\" lacks \"%s\"", i,
              e.msg, bad[i].want);
        int zero = 1;
        for (size_t b = 0; b < sizeof s; b++)
            if (((unsigned char *)&s)[b]) zero = 0;
        CHECK(zero, "case %zu: spec not zeroed on failure", i);
    }
    fprintf(stderr, "  %zu malformed specs rejected\n", sizeof bad / sizeof bad[0]);
}

int main(void)
{
    test_defaults();
    test_formats_and_fields();
    test_pipeline();
    test_malformed();
    test_examples();
    return th_done("spec");
}
