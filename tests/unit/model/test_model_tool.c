/* test_model_tool.c: aha-tool's model subcommands end to end (argv[1] = the aha-tool binary):
 * grpo-grad and sft-grad outputs against the PyTorch fixtures, logprobs --logits against
 * forward.safetensors, init-model read back bit-identically and reproducibly, and bad
 * arguments or files exiting 2 with a message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../harness.h"
#include "backend/backend.h"
#include "base/fs.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "model/model.h"

static const char *tool;
static char tmp[256];

static int run(const char *const *args)
{
    pid_t pid = fork();
    if (pid == 0) {
        char *argv[16];
        int n = 0;
        argv[n++] = (char *)tool;
        for (; args[n - 1] && n < 15; n++) argv[n] = (char *)args[n - 1];
        argv[n] = NULL;
        execv(tool, argv);
        _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) < 0) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static aha_st_file *open_st(const char *path)
{
    aha_st_file *f = NULL;
    aha_err err = {0};
    CHECK(aha_st_open(path, &f, &err) == AHA_OK, "%s", err.msg);
    return f;
}

static float *f32_of(const aha_st_tensor *t)
{
    float *x = malloc((size_t)t->numel * sizeof(float));
    aha_err err = {0};
    CHECK(aha_st_to_f32(t, x, t->numel, &err) == AHA_OK, "%s", err.msg);
    return x;
}

/* every tensor of ref named with prefix (plus "loss") against out */
static void compare(const char *out_path, const char *ref_path, const char *prefix, double tol)
{
    aha_st_file *out = open_st(out_path), *ref = open_st(ref_path);
    if (!out || !ref) return;
    int matched = 0;
    for (int i = 0; i < aha_st_count(ref); i++) {
        const aha_st_tensor *r = aha_st_at(ref, i);
        if (strncmp(r->name, prefix, strlen(prefix)) != 0 && strcmp(r->name, "loss") != 0) continue;
        const aha_st_tensor *o = aha_st_find(out, r->name);
        CHECK(o != NULL, "%s lacks %s", out_path, r->name);
        if (!o) continue;
        CHECK(o->numel == r->numel && o->ndim == r->ndim, "%s shape", r->name);
        float *a = f32_of(o), *b = f32_of(r);
        if (strcmp(r->name, "loss") == 0) {
            double d = fabs((double)a[0] - b[0]);
            fprintf(stderr, "  loss %.8f vs %.8f\n", (double)a[0], (double)b[0]);
            CHECK(d <= 1e-6 || d <= 1e-4 * fabs((double)b[0]), "loss %.8f vs %.8f", (double)a[0], (double)b[0]);
        } else {
            CHECK(th_rel_err(r->name, a, b, r->numel) <= tol, "%s", r->name);
        }
        matched++;
        free(a);
        free(b);
    }
    int extra = 0;
    for (int i = 0; i < aha_st_count(out); i++) extra += aha_st_find(ref, aha_st_at(out, i)->name) == NULL;
    CHECK(extra == 0, "%s has %d tensors the reference lacks", out_path, extra);
    CHECK(matched >= 2, "compared %d tensors", matched);
    aha_st_close(out);
    aha_st_close(ref);
}

static void test_grads(const char *fixture)
{
    char dir[512], in[600], out[600];
    snprintf(dir, sizeof dir, "%s/%s", th_fixtures(), fixture);
    snprintf(in, sizeof in, "%s/grpo.safetensors", dir);
    snprintf(out, sizeof out, "%s/%s-grpo.safetensors", tmp, fixture);
    const char *a1[] = {"grpo-grad", "--model", dir, "--input", in, "--output", out, NULL};
    CHECK(run(a1) == 0, "grpo-grad %s", fixture);
    compare(out, in, "grad.", 1e-3);
    snprintf(in, sizeof in, "%s/sft.safetensors", dir);
    snprintf(out, sizeof out, "%s/%s-sft.safetensors", tmp, fixture);
    const char *a2[] = {"sft-grad", "--model", dir, "--input", in, "--output", out, NULL};
    CHECK(run(a2) == 0, "sft-grad %s", fixture);
    compare(out, in, "grad.", 1e-3);
}

static void test_logprobs(const char *fixture)
{
    char dir[512], in[600], out[600];
    snprintf(dir, sizeof dir, "%s/%s", th_fixtures(), fixture);
    snprintf(in, sizeof in, "%s/forward.safetensors", dir);
    snprintf(out, sizeof out, "%s/%s-lp.safetensors", tmp, fixture);
    const char *a[] = {"logprobs", "--model", dir, "--input", in, "--output", out, "--logits", NULL};
    CHECK(run(a) == 0, "logprobs %s", fixture);
    aha_st_file *o = open_st(out), *r = open_st(in);
    if (o && r) {
        const char *names[] = {"token_logprobs", "logits"};
        for (int k = 0; k < 2; k++) {
            const aha_st_tensor *x = aha_st_find(o, names[k]), *y = aha_st_find(r, names[k]);
            CHECK(x && y && x->numel == y->numel && x->ndim == y->ndim, "%s present with its shape", names[k]);
            if (!x || !y || x->numel != y->numel) continue;
            float *a1 = f32_of(x), *b1 = f32_of(y);
            CHECK(th_rel_err(names[k], a1, b1, x->numel) <= 1e-4, "%s", names[k]);
            free(a1);
            free(b1);
        }
    }
    aha_st_close(o);
    aha_st_close(r);
}

static void test_init_model(void)
{
    char cfgp[600], d1[600], d2[600];
    snprintf(cfgp, sizeof cfgp, "%s/tiny-qwen3/config.json", th_fixtures());
    snprintf(d1, sizeof d1, "%s/init1", tmp);
    snprintf(d2, sizeof d2, "%s/init2", tmp);
    const char *a1[] = {"init-model", "--config", cfgp, "--out", d1, "--seed", "9", NULL};
    const char *a2[] = {"init-model", "--config", cfgp, "--out", d2, "--seed", "9", NULL};
    CHECK(run(a1) == 0 && run(a2) == 0, "init-model");
    /* reproducible files */
    char p1[700], p2[700];
    snprintf(p1, sizeof p1, "%s/model.safetensors", d1);
    snprintf(p2, sizeof p2, "%s/model.safetensors", d2);
    char *b1 = NULL, *b2 = NULL;
    size_t n1 = 0, n2 = 0;
    aha_err err = {0};
    CHECK(aha_read_file(p1, 1 << 26, &b1, &n1, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_read_file(p2, 1 << 26, &b2, &n2, &err) == AHA_OK, "%s", err.msg);
    CHECK(b1 && b2 && n1 == n2 && memcmp(b1, b2, n1) == 0, "same seed, same file");
    free(b1);
    free(b2);
    /* read back bit-identically: the file holds exactly the in-process random model */
    aha_backend *be = NULL;
    aha_model *disk = NULL, *mem = NULL;
    aha_model_config cfg;
    CHECK(aha_backend_open("cpu", 1, &be, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_model_open(d1, be, NULL, &disk, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_config_load(d1, &cfg, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_model_init_random(&cfg, 9, be, NULL, &mem, &err) == AHA_OK, "%s", err.msg);
    if (disk && mem) {
        CHECK(cfg.qk_norm && !cfg.tie_word_embeddings, "config keeps the architecture");
        int same = aha_model_n_params(disk) == aha_model_n_params(mem);
        for (int i = 0; same && i < aha_model_n_params(mem); i++) {
            int64_t n = aha_model_param(mem, i)->numel;
            float *x = malloc((size_t)n * 4), *y = malloc((size_t)n * 4);
            aha_model_param_get_f32(disk, i, x, &err);
            aha_model_param_get_f32(mem, i, y, &err);
            same = memcmp(x, y, (size_t)n * 4) == 0;
            free(x);
            free(y);
        }
        CHECK(same, "init-model output equals aha_model_init_random bit for bit");
    }
    aha_model_free(disk);
    aha_model_free(mem);
    aha_backend_free(be);
}

static void test_errors(void)
{
    char dir[512], in[600], out[600];
    snprintf(dir, sizeof dir, "%s/tiny-qwen2", th_fixtures());
    snprintf(out, sizeof out, "%s/never.safetensors", tmp);
    const char *a1[] = {"logprobs", "--model", dir, "--input", "/nonexistent.safetensors", "--output", out, NULL};
    CHECK(run(a1) == 2, "missing input file exits 2");
    snprintf(in, sizeof in, "%s/adamw.safetensors", dir);
    const char *a2[] = {"grpo-grad", "--model", dir, "--input", in, "--output", out, NULL};
    CHECK(run(a2) == 2, "input without input_ids exits 2");
    snprintf(in, sizeof in, "%s/forward.safetensors", dir);
    const char *a3[] = {"grpo-grad", "--model", dir, "--input", in, "--output", out, NULL};
    CHECK(run(a3) == 2, "input without completion_mask exits 2");
    const char *a4[] = {"logprobs", "--model", dir, "--frobnicate", NULL};
    CHECK(run(a4) == 2, "unknown flag exits 2");
    const char *a5[] = {"logprobs", "--model", dir, "--input", NULL};
    CHECK(run(a5) == 2, "flag without value exits 2");
    snprintf(in, sizeof in, "%s/tiny-llama/forward.safetensors", th_fixtures());
    const char *a6[] = {"logprobs", "--model", dir, "--input", in, "--output", out, NULL};
    CHECK(run(a6) == 0, "llama ids (vocab 384) fit qwen2's 512");
    const char *a7[] = {"init-model", "--config", "/nonexistent.json", "--out", out, "--seed", "1", NULL};
    CHECK(run(a7) == 2, "missing config exits 2");
    const char *a8[] = {"init-model", "--config", in, "--out", out, "--seed", "x", NULL};
    CHECK(run(a8) == 2, "bad seed exits 2");
    const char *a9[] = {"demo-logprobs", "--model", dir, NULL};
    CHECK(run(a9) == 0, "demo-logprobs");
    const char *a10[] = {"logprobs", "--model", dir, "--input", in, "--output", out, "--device", "tpu", NULL};
    CHECK(run(a10) == 2, "unknown device exits 2");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_model_tool PATH/TO/aha-tool\n");
        return 2;
    }
    tool = argv[1];
    snprintf(tmp, sizeof tmp, "/tmp/aha-model-tool-XXXXXX");
    if (!mkdtemp(tmp)) return 1;
    test_grads("tiny-qwen2");
    test_grads("tiny-llama");
    test_grads("tiny-qwen3");
    test_logprobs("tiny-llama");
    test_init_model();
    test_errors();
    aha_remove_tree(tmp, NULL);
    return th_done("model_tool");
}
