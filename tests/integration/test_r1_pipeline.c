/* test_r1_pipeline: pipeline jobs over real aha-reward, aha-rollout and aha-refpolicy
 * processes with a tiny random model:
 *   - sft -> grpo through aha_job_run: both stages done in pipeline.json, the grpo stage's
 *     resolved spec names the sft stage's checkpoint, and its weights are that checkpoint's
 *     plus a small RL change (much closer to the sft result than to the base model); the
 *     pipeline's metrics.jsonl holds the records of both stages, stage events come in order;
 *   - a stage that fails stops the pipeline with its error, recorded in pipeline.json;
 *   - resume after a kill: an aha-job process running the same pipeline is SIGKILLed during
 *     the grpo stage, run again, skips the sft stage (no sft record, the sft checkpoint
 *     untouched), resumes grpo from its last checkpoint, and leaves one record per step.
 * argv: aha-reward aha-rollout aha-refpolicy aha-job */
#include <jansson.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../harness.h"
#include "base/fs.h"
#include "io/safetensors.h"
#include "learner_env.h"
#include "runner.h"

static const char *cfg_json =
    "{\"architectures\": [\"Qwen2ForCausalLM\"], \"model_type\": \"qwen2\", \"hidden_size\": 32,"
    " \"intermediate_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
    " \"num_key_value_heads\": 2, \"max_position_embeddings\": 512, \"rms_norm_eps\": 1e-6,"
    " \"rope_theta\": 10000.0, \"tie_word_embeddings\": true, \"vocab_size\": 261,"
    " \"eos_token_id\": 256, \"initializer_range\": 0.02}";

typedef struct {
    char stages[4096]; /* stage event messages, one a line */
    int n_steps[2];    /* step records of stage cold / rl */
} sink;

static void emit(void *user, aha_job_event_type type, int64_t step, const char *json, const char *message)
{
    (void)step;
    sink *s = user;
    if (type == AHA_EV_STAGE && message) {
        size_t l = strlen(s->stages);
        snprintf(s->stages + l, sizeof s->stages - l, "%s\n", message);
    }
    if (type == AHA_EV_METRICS && json) {
        json_t *o = json_loads(json, 0, NULL);
        const char *st = json_string_value(json_object_get(o, "stage"));
        if (st && !strcmp(st, "cold")) s->n_steps[0]++;
        if (st && !strcmp(st, "rl")) s->n_steps[1]++;
        json_decref(o);
    }
}

static aha_status run(const char *spec_json, const char *dir, const aha_learner_env *env, sink *s, aha_err *err)
{
    aha_job_spec spec;
    AHA_TRY(aha_job_spec_parse(spec_json, strlen(spec_json), &spec, err));
    volatile int cancel = 0;
    int64_t ps = 0, pt = 0;
    aha_job_ctx ctx = {.job_id = "p", .job_dir = dir, .spec = &spec, .env = env, .emit = emit, .user = s,
                       .cancel = &cancel, .progress_step = &ps, .progress_total = &pt};
    aha_status st = aha_job_run(&ctx, err);
    aha_job_spec_free(&spec);
    return st;
}

static json_t *load_json(const char *path)
{
    json_error_t je;
    return json_load_file(path, 0, &je);
}

/* RMS difference of one tensor between two model dirs */
static double tensor_rms_diff(const char *dir_a, const char *dir_b, const char *name)
{
    float *v[2] = {NULL, NULL};
    size_t n[2] = {0, 0};
    const char *dirs[2] = {dir_a, dir_b};
    for (int i = 0; i < 2; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/model.safetensors", dirs[i]);
        aha_err err = {0};
        aha_st_file *f = NULL;
        if (aha_st_open(path, &f, &err) != AHA_OK) {
            fprintf(stderr, "%s: %s\n", path, err.msg);
            return NAN;
        }
        const aha_st_tensor *t = aha_st_find(f, name);
        if (t) {
            n[i] = (size_t)t->numel;
            v[i] = malloc(n[i] * sizeof(float));
            if (v[i] && aha_st_to_f32(t, v[i], t->numel, &err) != AHA_OK) {
                free(v[i]);
                v[i] = NULL;
            }
        }
        aha_st_close(f);
    }
    double d = NAN;
    if (v[0] && v[1] && n[0] == n[1] && n[0] > 0) {
        d = 0;
        for (size_t k = 0; k < n[0]; k++) d += ((double)v[0][k] - v[1][k]) * ((double)v[0][k] - v[1][k]);
        d = sqrt(d / (double)n[0]);
    }
    free(v[0]);
    free(v[1]);
    return d;
}

/* aha-job SPEC --job-dir DIR ... with stdout on a pipe; returns the pid, *fd the read end */
static pid_t start_job(char *const *argv, int *fd)
{
    int p[2];
    if (pipe(p) != 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(p[1]);
    *fd = p[0];
    return pid;
}

/* read one line from fd (up to 60 s); 0 at EOF or timeout */
static int read_line(int fd, char *line, size_t cap)
{
    size_t len = 0;
    double end = aha_now_s() + 60;
    while (aha_now_s() < end && len < cap - 1) {
        struct pollfd pf = {fd, POLLIN, 0};
        if (poll(&pf, 1, 200) <= 0) continue;
        char ch;
        if (read(fd, &ch, 1) != 1) return 0;
        if (ch == '\n') {
            line[len] = 0;
            return 1;
        }
        line[len++] = ch;
    }
    line[len] = 0;
    return len > 0;
}

static double mtime_of(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0) return -1;
    return (double)sb.st_mtim.tv_sec + 1e-9 * (double)sb.st_mtim.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: test_r1_pipeline AHA-REWARD AHA-ROLLOUT AHA-REFPOLICY AHA-JOB\n");
        return 2;
    }
    char root[] = "/tmp/aha-test-r1pipe-XXXXXX";
    CHECK(mkdtemp(root) != NULL, "mkdtemp");
    char base[512], sftp[512], train[512], ja[512], jb[512], jc[512], spec_file[512], path[4400];
    snprintf(base, sizeof base, "%s/base", root);
    snprintf(sftp, sizeof sftp, "%s/sft.jsonl", root);
    snprintf(train, sizeof train, "%s/train.jsonl", root);
    snprintf(ja, sizeof ja, "%s/job-a", root);
    snprintf(jb, sizeof jb, "%s/job-b", root);
    snprintf(jc, sizeof jc, "%s/job-c", root);
    snprintf(spec_file, sizeof spec_file, "%s/pipeline.json", root);
    aha_err err = {0};
    th_make_tiny_model(base, cfg_json, 13);
    FILE *f = fopen(sftp, "w");
    for (int i = 0; f && i < 16; i++)
        fprintf(f, "{\"prompt\": \"What is %d + 2?\", \"completion\": \"<think> %d + 2 = %d </think> <answer> %d </answer>\"}\n",
                i, i, i + 2, i + 2);
    if (f) fclose(f);
    th_write_sum_prompts(train, 16, 3);

    th_services svcs;
    th_services_start(&svcs, argv[1], argv[2], argv[3], base, 512, 0);
    char *a_rw = svcs.reward_addr, *a_ro = svcs.rollout_addr, *a_rp = svcs.refpolicy_addr;
    aha_learner_env env = {.rollout = {a_ro}, .n_rollout = 1, .reward = a_rw, .refpolicy = a_rp, .device = "cpu",
                           .rpc_timeout_ms = 60000};

    char spec[4096];
    snprintf(spec, sizeof spec,
             "{\"kind\": \"pipeline\", \"name\": \"p\", \"seed\": 3, \"stages\": ["
             " {\"name\": \"cold\", \"kind\": \"sft\", \"model\": \"%s\", \"dataset\": {\"path\": \"%s\", \"format\": \"sft\"},"
             "  \"steps\": 4, \"batch_size\": 4, \"micro_batch\": 4, \"max_seq_len\": 480, \"lr\": 1e-2,"
             "  \"checkpoint_every\": 2},"
             " {\"name\": \"rl\", \"kind\": \"grpo\", \"model\": \"${stages.cold.checkpoint}\", \"dataset\": \"%s\","
             "  \"G\": 2, \"questions_per_step\": 2, \"steps\": 6, \"max_new_tokens\": 8, \"lr\": 1e-4,"
             "  \"checkpoint_every\": 1}]}",
             base, sftp, train);
    bool up = svcs.reward.port && svcs.rollout.port && svcs.refpolicy.port;

    /* ---- sft -> grpo in process ---- */
    if (up) {
        sink s = {0};
        aha_status st = run(spec, ja, &env, &s, &err);
        CHECK(st == AHA_OK, "pipeline: %s", err.msg);
        CHECK(s.n_steps[0] == 4 && s.n_steps[1] == 6, "step records: cold %d, rl %d", s.n_steps[0], s.n_steps[1]);
        const char *a = strstr(s.stages, "cold (sft, 1/2): started"), *b = strstr(s.stages, "cold (sft, 1/2): done"),
                   *c = strstr(s.stages, "rl (grpo, 2/2): started"), *d = strstr(s.stages, "rl (grpo, 2/2): done");
        CHECK(a && b && c && d && a < b && b < c && c < d, "stage events in order:\n%s", s.stages);
        snprintf(path, sizeof path, "%s/pipeline.json", ja);
        json_t *ps = load_json(path);
        json_t *s0 = json_array_get(json_object_get(ps, "stages"), 0), *s1 = json_array_get(json_object_get(ps, "stages"), 1);
        const char *ck0 = json_string_value(json_object_get(s0, "checkpoint"));
        const char *ck1 = json_string_value(json_object_get(s1, "checkpoint"));
        CHECK(!strcmp(json_string_value(json_object_get(s0, "status")), "done") &&
                  !strcmp(json_string_value(json_object_get(s1, "status")), "done"),
              "both stages done");
        CHECK(ck0 && ck1 && strstr(ck0, "/stages/01-cold/ckpt-000004") && strstr(ck1, "/stages/02-rl/ckpt-000006"),
              "checkpoints %s, %s", ck0 ? ck0 : "-", ck1 ? ck1 : "-");
        snprintf(path, sizeof path, "%s/stages/02-rl/spec.json", ja);
        json_t *s2spec = load_json(path);
        const char *model2 = json_string_value(json_object_get(s2spec, "model"));
        CHECK(ck0 && model2 && !strcmp(model2, ck0), "the grpo stage starts from %s (its spec: %s)", ck0 ? ck0 : "-",
              model2 ? model2 : "-");
        if (ck0 && ck1) {
            const char *tn = "model.embed_tokens.weight";
            double d_sft = tensor_rms_diff(ck1, ck0, tn), d_base = tensor_rms_diff(ck1, base, tn);
            CHECK(isfinite(d_sft) && isfinite(d_base) && d_sft < 0.1 * d_base,
                  "grpo weights are the sft checkpoint's plus a small change: rms to sft %g, to base %g", d_sft, d_base);
        }
        json_decref(s2spec);
        json_decref(ps);
        /* the pipeline's own records: both stages, one line per step */
        snprintf(path, sizeof path, "%s/metrics.jsonl", ja);
        char *text = NULL;
        size_t len = 0;
        CHECK(aha_read_file(path, 1 << 24, &text, &len, &err) == AHA_OK, "pipeline metrics.jsonl: %s", err.msg);
        int cold = 0, rl = 0;
        for (char *p = text; p && (p = strstr(p, "\"stage\":\"cold\"")); p++) cold++;
        for (char *p = text; p && (p = strstr(p, "\"stage\":\"rl\"")); p++) rl++;
        CHECK(cold == 4 && rl == 6, "pipeline metrics.jsonl: %d cold and %d rl records", cold, rl);
        free(text);
    }

    /* ---- a failing stage stops the pipeline ---- */
    if (up) {
        char spec_c[2048];
        snprintf(spec_c, sizeof spec_c,
                 "{\"kind\": \"pipeline\", \"stages\": ["
                 " {\"name\": \"data\", \"kind\": \"mix\", \"sources\": [\"%s\"]},"
                 " {\"name\": \"bad\", \"kind\": \"sft\", \"model\": \"%s/no-such-model\", \"dataset\":"
                 "  {\"path\": \"${stages.data.dataset}\", \"format\": \"sft\"}, \"steps\": 1},"
                 " {\"name\": \"never\", \"kind\": \"mix\", \"sources\": [\"%s\"]}]}",
                 sftp, root, sftp);
        sink s = {0};
        aha_status st = run(spec_c, jc, &env, &s, &err);
        CHECK(st != AHA_OK && strstr(err.msg, "stage bad (sft)") && strstr(err.msg, "no-such-model"),
              "the failed stage's error: %s", err.msg);
        snprintf(path, sizeof path, "%s/pipeline.json", jc);
        json_t *ps = load_json(path);
        json_t *sv = json_object_get(ps, "stages");
        const char *e1 = json_string_value(json_object_get(json_array_get(sv, 1), "error"));
        CHECK(!strcmp(json_string_value(json_object_get(json_array_get(sv, 0), "status")), "done") &&
                  !strcmp(json_string_value(json_object_get(json_array_get(sv, 1), "status")), "failed") &&
                  !strcmp(json_string_value(json_object_get(json_array_get(sv, 2), "status")), "pending") && e1 &&
                  strstr(e1, "no-such-model"),
              "pipeline.json: done, failed (with its error), pending");
        json_decref(ps);
    }

    /* ---- kill during stage 2, run again ---- */
    if (up) {
        th_write_text(spec_file, spec);
        char *av[] = {argv[4], spec_file, "--job-dir", jb, "--rollout", a_ro, "--reward", a_rw, "--refpolicy", a_rp,
                      "--log-level", "warn", NULL};
        int fd = -1;
        pid_t pid = start_job(av, &fd);
        CHECK(pid > 0, "aha-job started");
        char line[8192];
        int killed = 0;
        while (pid > 0 && read_line(fd, line, sizeof line)) {
            if (strstr(line, "\"stage\":\"rl\"") && strstr(line, "\"type\":\"step\"") && strstr(line, "\"step\":3,")) {
                kill(pid, SIGKILL);
                killed = 1;
                break;
            }
        }
        int status = 0;
        if (pid > 0) waitpid(pid, &status, 0);
        if (fd >= 0) close(fd);
        CHECK(killed && WIFSIGNALED(status), "aha-job killed during the grpo stage");
        snprintf(path, sizeof path, "%s/pipeline.json", jb);
        json_t *ps = load_json(path);
        json_t *sv = json_object_get(ps, "stages");
        CHECK(!strcmp(json_string_value(json_object_get(json_array_get(sv, 0), "status")), "done") &&
                  !strcmp(json_string_value(json_object_get(json_array_get(sv, 1), "status")), "running"),
              "after the kill: cold done, rl running");
        json_decref(ps);
        char ck_file[4400];
        snprintf(ck_file, sizeof ck_file, "%s/stages/01-cold/ckpt-000004/model.safetensors", jb);
        double mt0 = mtime_of(ck_file);
        CHECK(mt0 > 0, "the sft checkpoint exists");

        pid = start_job(av, &fd);
        int cold_steps = 0, rl_first = -1, rl_n = 0, skipped = 0;
        while (pid > 0 && read_line(fd, line, sizeof line)) {
            if (strstr(line, "\"type\":\"stage\"") && strstr(line, "cold (sft, 1/2): done earlier, skipped")) skipped = 1;
            if (!strstr(line, "\"type\":\"step\"")) continue;
            if (strstr(line, "\"stage\":\"cold\"")) cold_steps++;
            if (strstr(line, "\"stage\":\"rl\"")) {
                json_t *o = json_loads(line, 0, NULL);
                int stp = (int)json_integer_value(json_object_get(o, "step"));
                if (rl_first < 0) rl_first = stp;
                rl_n++;
                json_decref(o);
            }
        }
        status = 0;
        if (pid > 0) waitpid(pid, &status, 0);
        if (fd >= 0) close(fd);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the rerun completes (status %d)", status);
        CHECK(skipped && cold_steps == 0, "the sft stage is skipped (event %d, %d sft steps rerun)", skipped, cold_steps);
        CHECK(rl_first >= 3 && rl_first <= 4 && rl_first + rl_n - 1 == 6,
              "grpo resumes from its last checkpoint: steps %d..%d", rl_first, rl_first + rl_n - 1);
        CHECK(mtime_of(ck_file) == mt0, "the sft checkpoint was not rewritten");
        ps = load_json(path);
        sv = json_object_get(ps, "stages");
        CHECK(!strcmp(json_string_value(json_object_get(json_array_get(sv, 1), "status")), "done"), "rl done");
        json_decref(ps);
        snprintf(path, sizeof path, "%s/metrics.jsonl", jb);
        char *text = NULL;
        size_t len = 0;
        CHECK(aha_read_file(path, 1 << 24, &text, &len, &err) == AHA_OK, "metrics.jsonl: %s", err.msg);
        int rl = 0, cold = 0;
        for (char *p = text; p && (p = strstr(p, "\"stage\":\"rl\"")); p++) rl++;
        for (char *p = text; p && (p = strstr(p, "\"stage\":\"cold\"")); p++) cold++;
        CHECK(rl == 6 && cold == 4, "one record per step after the resume: %d rl, %d cold", rl, cold);
        free(text);
    }
    th_services_stop(&svcs);
    aha_remove_tree(root, NULL);
    return th_done("r1_pipeline");
}
