/* test_model_io.c: models on disk. A random model (init_random) saved and opened again is
 * bit-identical, its statistics follow transformers' _init_weights (norms 1, biases 0,
 * matrices N(0, initializer_range)); sharded saves load; BF16 saves round to bf16; malformed
 * model directories (a missing tensor, a wrong shape, no weights) fail with a message naming
 * the tensor; the parameter API refuses bad indexes; optimizer state resumes exactly. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../harness.h"
#include "backend/backend.h"
#include "base/fs.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "model/model.h"

static aha_backend *be;
static char tmp[256];

static float *params_of(aha_model *m, int i)
{
    const aha_param_info *p = aha_model_param(m, i);
    float *x = malloc((size_t)p->numel * sizeof(float));
    aha_err err = {0};
    CHECK(aha_model_param_get_f32(m, i, x, &err) == AHA_OK, "%s", err.msg);
    return x;
}

static int same_params(aha_model *a, aha_model *b, int bf16)
{
    if (aha_model_n_params(a) != aha_model_n_params(b)) return 0;
    int ok = 1;
    for (int i = 0; i < aha_model_n_params(a) && ok; i++) {
        const aha_param_info *p = aha_model_param(a, i);
        float *x = params_of(a, i), *y = params_of(b, i);
        for (int64_t j = 0; j < p->numel && ok; j++) {
            float want = bf16 ? aha_bf16_to_f32(aha_f32_to_bf16(x[j])) : x[j];
            if (memcmp(&want, &y[j], 4) != 0) {
                fprintf(stderr, "  %s[%lld]: %.9g vs %.9g\n", p->name, (long long)j, (double)want, (double)y[j]);
                ok = 0;
            }
        }
        free(x);
        free(y);
    }
    return ok;
}

static void test_random_roundtrip(void)
{
    aha_err err = {0};
    aha_model_config cfg;
    char fx[512];
    snprintf(fx, sizeof fx, "%s/tiny-qwen2", th_fixtures());
    CHECK(aha_config_load(fx, &cfg, &err) == AHA_OK, "%s", err.msg);
    aha_model *m = NULL, *r = NULL, *same = NULL, *other = NULL;
    CHECK(aha_model_init_random(&cfg, 42, be, NULL, &m, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_model_init_random(&cfg, 42, be, NULL, &same, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_model_init_random(&cfg, 43, be, NULL, &other, &err) == AHA_OK, "%s", err.msg);
    CHECK(same_params(m, same, 0), "same seed, same model");
    CHECK(!same_params(m, other, 0), "another seed, another model");

    /* init statistics: norms 1, biases 0, matrices ~ N(0, 0.02) */
    for (int i = 0; i < aha_model_n_params(m); i++) {
        const aha_param_info *p = aha_model_param(m, i);
        float *x = params_of(m, i);
        double s = 0, s2 = 0;
        for (int64_t j = 0; j < p->numel; j++) s += x[j], s2 += (double)x[j] * x[j];
        double mean = s / p->numel, sd = sqrt(s2 / p->numel - mean * mean);
        if (strstr(p->name, "norm")) CHECK(mean == 1.0 && sd == 0, "%s: norm not 1", p->name);
        else if (strstr(p->name, "bias")) CHECK(s2 == 0, "%s: bias not 0", p->name);
        else if (p->numel >= 2048)
            CHECK(fabs(mean) < 0.002 && fabs(sd - cfg.initializer_range) < 0.002, "%s: mean %g sd %g",
                  p->name, mean, sd);
        free(x);
    }

    char dir[512];
    snprintf(dir, sizeof dir, "%s/rnd", tmp);
    CHECK(aha_model_save(m, dir, AHA_DT_F32, 0, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_model_open(dir, be, NULL, &r, &err) == AHA_OK, "%s", err.msg);
    if (r) CHECK(same_params(m, r, 0), "saved and reopened model is bit-identical");
    aha_model_free(r);
    r = NULL;

    /* sharded: shards of 140 kB (the embedding is 128 kB) force several files */
    snprintf(dir, sizeof dir, "%s/sharded", tmp);
    CHECK(aha_model_save(m, dir, AHA_DT_F32, 140000, &err) == AHA_OK, "%s", err.msg);
    char idx[600];
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
    CHECK(aha_path_exists(idx), "sharded save writes an index");
    CHECK(aha_model_open(dir, be, NULL, &r, &err) == AHA_OK, "%s", err.msg);
    if (r) CHECK(same_params(m, r, 0), "sharded model is bit-identical");
    aha_model_free(r);
    r = NULL;

    /* BF16 */
    snprintf(dir, sizeof dir, "%s/bf16", tmp);
    CHECK(aha_model_save(m, dir, AHA_DT_BF16, 0, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_model_open(dir, be, NULL, &r, &err) == AHA_OK, "%s", err.msg);
    if (r) CHECK(same_params(m, r, 1), "bf16 model equals the rounded parameters");
    aha_model_free(r);

    aha_model_free(m);
    aha_model_free(same);
    aha_model_free(other);
}

/* Replace the first occurrence of from by to in the malloc'd string *s. */
static void replace(char **s, const char *from, const char *to)
{
    char *at = strstr(*s, from);
    if (!at) return;
    size_t n = strlen(*s) + strlen(to) + 1;
    char *r = malloc(n);
    snprintf(r, n, "%.*s%s%s", (int)(at - *s), *s, to, at + strlen(from));
    free(*s);
    *s = r;
}

/* Write dir with the fixture's config.json and its tensors, with `drop` left out and `bad`
 * given a wrong shape; huge makes config.json claim an enormous vocabulary and FFN. */
static void write_broken_cfg(const char *dir, const char *drop, const char *bad, int huge);
static void write_broken(const char *dir, const char *drop, const char *bad)
{
    write_broken_cfg(dir, drop, bad, 0);
}

static void write_broken_cfg(const char *dir, const char *drop, const char *bad, int huge)
{
    aha_err err = {0};
    char fx[512], path[700];
    snprintf(fx, sizeof fx, "%s/tiny-qwen2", th_fixtures());
    CHECK(aha_mkdirs(dir, &err) == AHA_OK, "%s", err.msg);
    char *json = NULL;
    size_t len = 0;
    snprintf(path, sizeof path, "%s/config.json", fx);
    CHECK(aha_read_file(path, 1 << 20, &json, &len, &err) == AHA_OK, "%s", err.msg);
    if (huge) {
        replace(&json, "\"vocab_size\": 512", "\"vocab_size\": 4000000");
        replace(&json, "\"intermediate_size\": 176", "\"intermediate_size\": 262144");
        len = strlen(json);
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    CHECK(aha_write_file_atomic(path, json, len, &err) == AHA_OK, "%s", err.msg);
    free(json);
    aha_st_file *f = NULL;
    CHECK(aha_st_open(fx, &f, &err) == AHA_OK, "%s", err.msg);
    aha_st_writer *w = aha_st_writer_new();
    for (int i = 0; f && i < aha_st_count(f); i++) {
        const aha_st_tensor *t = aha_st_at(f, i);
        if (drop && strcmp(t->name, drop) == 0) continue;
        int64_t shape[AHA_ST_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        int ndim = t->ndim;
        if (bad && strcmp(t->name, bad) == 0) {
            /* same bytes, another shape */
            shape[0] = t->numel / 2;
            shape[1] = 2;
            ndim = 2;
        }
        CHECK(aha_st_writer_add(w, t->name, t->dtype, ndim, shape, t->data, &err) == AHA_OK, "%s", err.msg);
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK(aha_st_writer_save(w, path, &err) == AHA_OK, "%s", err.msg);
    aha_st_writer_free(w);
    aha_st_close(f);
}

static void test_malformed(void)
{
    aha_err err = {0};
    aha_model *m = NULL;
    char dir[512];

    snprintf(dir, sizeof dir, "%s/missing", tmp);
    write_broken(dir, "model.layers.1.self_attn.k_proj.bias", NULL);
    CHECK(aha_model_open(dir, be, NULL, &m, &err) == AHA_EFORMAT, "missing tensor must be EFORMAT");
    fprintf(stderr, "  expected error: %s\n", err.msg);
    CHECK(strstr(err.msg, "model.layers.1.self_attn.k_proj.bias") && strstr(err.msg, "missing"),
          "message names the missing tensor: %s", err.msg);
    CHECK(m == NULL, "no model on error");

    snprintf(dir, sizeof dir, "%s/shape", tmp);
    write_broken(dir, NULL, "model.layers.0.mlp.up_proj.weight");
    CHECK(aha_model_open(dir, be, NULL, &m, &err) == AHA_EFORMAT, "wrong shape must be EFORMAT");
    fprintf(stderr, "  expected error: %s\n", err.msg);
    CHECK(strstr(err.msg, "model.layers.0.mlp.up_proj.weight") && strstr(err.msg, "[176, 64]"),
          "message names the tensor and the expected shape: %s", err.msg);

    /* a config.json that claims ~1.4 GB of parameters over the tiny file: refused on the
     * shapes before anything that size is allocated */
    snprintf(dir, sizeof dir, "%s/huge", tmp);
    write_broken_cfg(dir, NULL, NULL, 1);
    double t0 = aha_now_s();
    CHECK(aha_model_open(dir, be, NULL, &m, &err) == AHA_EFORMAT, "lying config must be EFORMAT");
    fprintf(stderr, "  expected error (%.3f s): %s\n", aha_now_s() - t0, err.msg);
    CHECK(strstr(err.msg, "model.embed_tokens.weight") && strstr(err.msg, "[4000000, 64]"),
          "message names the embedding and the claimed shape: %s", err.msg);

    /* config but no weights at all */
    snprintf(dir, sizeof dir, "%s/noweights", tmp);
    write_broken(dir, NULL, NULL);
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    remove(path);
    CHECK(aha_model_open(dir, be, NULL, &m, &err) != AHA_OK, "no weights must fail");
    fprintf(stderr, "  expected error: %s\n", err.msg);

    snprintf(dir, sizeof dir, "%s/does-not-exist", tmp);
    CHECK(aha_model_open(dir, be, NULL, &m, &err) != AHA_OK, "missing dir must fail");

    /* the untouched copy opens (so the failures above come from the damage) */
    snprintf(dir, sizeof dir, "%s/intact", tmp);
    write_broken(dir, NULL, NULL);
    CHECK(aha_model_open(dir, be, NULL, &m, &err) == AHA_OK, "intact copy: %s", err.msg);
    if (m) {
        CHECK(aha_model_param_find(m, "lm_head.weight") == -1, "tied model has no lm_head parameter");
        CHECK(aha_model_param_find(m, "model.norm.weight") >= 0, "find");
        float x[4];
        CHECK(aha_model_param_get_f32(m, aha_model_n_params(m), x, &err) == AHA_EINVAL, "index out of range");
        uint16_t h[4];
        CHECK(aha_model_param_get_bf16(m, -1, h, &err) == AHA_EINVAL, "bf16: index out of range");
        /* bf16 of every parameter: the fp32 values rounded to nearest even */
        int64_t bad = 0;
        for (int i = 0; i < aha_model_n_params(m); i++) {
            int64_t n = aha_model_param(m, i)->numel;
            float *f = malloc((size_t)n * sizeof(float));
            uint16_t *b = malloc((size_t)n * 2);
            CHECK(aha_model_param_get_f32(m, i, f, &err) == AHA_OK && aha_model_param_get_bf16(m, i, b, &err) == AHA_OK,
                  "get: %s", err.msg);
            for (int64_t j = 0; j < n; j++) bad += b[j] != aha_f32_to_bf16(f[j]);
            free(f);
            free(b);
        }
        CHECK(bad == 0, "%lld bf16 weights are not the rounded fp32 ones", (long long)bad);
        int32_t ids[3] = {1, 2, 9999}, cu[2] = {0, 3};
        aha_batch b = {ids, cu, 1};
        CHECK(aha_model_token_logprobs(m, &b, x, NULL, &err) == AHA_EINVAL, "id outside the vocabulary");
        int32_t cu_bad[3] = {0, 2, 2};
        aha_batch b2 = {ids, cu_bad, 2};
        CHECK(aha_batch_check(m, &b2, &err) == AHA_EINVAL, "empty sequence refused");
    }
    aha_model_free(m);
}

/* Optimizer state: save after one step, take another; reload and take it again: same. */
static void test_train_resume(void)
{
    aha_err err = {0};
    char fx[512], path[600];
    snprintf(fx, sizeof fx, "%s/tiny-llama", th_fixtures());
    aha_model *m = NULL;
    aha_train *t = NULL;
    CHECK(aha_model_open(fx, be, NULL, &m, &err) == AHA_OK, "%s", err.msg);
    if (!m) return;
    CHECK(aha_train_create(m, &t, &err) == AHA_OK, "%s", err.msg);
    int32_t ids[10] = {1, 5, 9, 200, 17, 3, 44, 12, 300, 2}, cu[3] = {0, 6, 10};
    float mask[8] = {0, 1, 1, 1, 1, 1, 1, 1};
    aha_batch b = {ids, cu, 2};
    double loss;
    aha_adamw_args aa = {1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f};
    CHECK(aha_model_sft_backward(m, t, &b, mask, 1.0f / 7, &loss, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_train_adamw_step(t, &aa, &err) == AHA_OK, "%s", err.msg);
    snprintf(path, sizeof path, "%s/opt.safetensors", tmp);
    char mdir[600];
    snprintf(mdir, sizeof mdir, "%s/after1", tmp);
    CHECK(aha_train_save(t, path, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_model_save(m, mdir, AHA_DT_F32, 0, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_train_zero_grad(t, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_model_sft_backward(m, t, &b, mask, 1.0f / 7, &loss, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_train_adamw_step(t, &aa, &err) == AHA_OK, "%s", err.msg);

    aha_model *m2 = NULL;
    aha_train *t2 = NULL;
    CHECK(aha_model_open(mdir, be, NULL, &m2, &err) == AHA_OK, "%s", err.msg);
    if (m2) {
        CHECK(aha_train_create(m2, &t2, &err) == AHA_OK, "%s", err.msg);
        CHECK(aha_train_load(t2, path, &err) == AHA_OK, "%s", err.msg);
        CHECK(aha_train_step_count(t2) == 1, "step restored");
        /* the gradient of the same parameters as the first run's second step */
        CHECK(aha_model_sft_backward(m2, t2, &b, mask, 1.0f / 7, &loss, &err) == AHA_OK, "%s", err.msg);
        CHECK(aha_train_adamw_step(t2, &aa, &err) == AHA_OK, "%s", err.msg);
        CHECK(same_params(m, m2, 0), "resumed run equals the uninterrupted one");
        /* a state file of another model is refused and changes nothing */
        CHECK(aha_train_load(t2, fx, &err) != AHA_OK, "foreign file refused");
        CHECK(aha_train_step_count(t2) == 2, "step unchanged after a refused load");
    }
    double n0, n1;
    CHECK(aha_train_grad_norm(t, &n0, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_train_clip(t, n0 / 4, &n1, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_train_grad_norm(t, &n1, &err) == AHA_OK, "%s", err.msg);
    CHECK(fabs(n1 - n0 / 4) < 1e-4 * n0, "clip scales the norm to max_norm: %g vs %g", n1, n0 / 4);
    aha_train_free(t2);
    aha_model_free(m2);
    aha_train_free(t);
    aha_model_free(m);
}

/* no_decay_bias_norm: biases and norms step as with weight_decay 0, matrices as with it */
static void test_decay_groups(void)
{
    aha_err err = {0};
    char fx[512];
    snprintf(fx, sizeof fx, "%s/tiny-qwen2", th_fixtures());
    aha_model *m[3] = {0};
    aha_train *t[3] = {0};
    aha_adamw_args args[3] = {{1e-2f, 0.9f, 0.95f, 1e-8f, 0.5f, true},
                              {1e-2f, 0.9f, 0.95f, 1e-8f, 0.5f, false},
                              {1e-2f, 0.9f, 0.95f, 1e-8f, 0.0f, false}};
    int32_t ids[8] = {3, 9, 27, 81, 243, 217, 139, 5}, cu[2] = {0, 8};
    float mask[7] = {1, 1, 1, 1, 1, 1, 1};
    aha_batch b = {ids, cu, 1};
    for (int k = 0; k < 3; k++) {
        CHECK(aha_model_open(fx, be, NULL, &m[k], &err) == AHA_OK, "%s", err.msg);
        if (!m[k]) return;
        CHECK(aha_train_create(m[k], &t[k], &err) == AHA_OK, "%s", err.msg);
        double loss;
        CHECK(aha_model_sft_backward(m[k], t[k], &b, mask, 1.0f / 7, &loss, &err) == AHA_OK, "%s", err.msg);
        for (int s = 0; s < 2; s++) CHECK(aha_train_adamw_step(t[k], &args[k], &err) == AHA_OK, "%s", err.msg);
    }
    int n_exempt = 0, ok = 1;
    for (int i = 0; i < aha_model_n_params(m[0]); i++) {
        const aha_param_info *p = aha_model_param(m[0], i);
        bool exempt = strstr(p->name, "bias") || strstr(p->name, "norm");
        n_exempt += exempt;
        float *x = params_of(m[0], i), *y = params_of(m[exempt ? 2 : 1], i), *z = params_of(m[exempt ? 1 : 2], i);
        ok &= memcmp(x, y, (size_t)p->numel * 4) == 0 && memcmp(x, z, (size_t)p->numel * 4) != 0;
        free(x), free(y), free(z);
    }
    CHECK(ok && n_exempt == 3 * 2 + 2 * 2 + 1, "decay groups follow the parameter kinds");
    for (int k = 0; k < 3; k++) {
        aha_train_free(t[k]);
        aha_model_free(m[k]);
    }
}

/* set_params_from_host: a bad list changes nothing; a good one (F32 and BF16) applies */
static void test_set_params(void)
{
    aha_err err = {0};
    char fx[512];
    snprintf(fx, sizeof fx, "%s/tiny-qwen2", th_fixtures());
    aha_model *m = NULL, *orig = NULL;
    CHECK(aha_model_open(fx, be, NULL, &m, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_model_open(fx, be, NULL, &orig, &err) == AHA_OK, "%s", err.msg);
    if (!m || !orig) return;
    int a = aha_model_param_find(m, "model.norm.weight"), b = aha_model_param_find(m, "model.layers.1.mlp.up_proj.weight");
    int64_t na = aha_model_param(m, a)->numel, nb = aha_model_param(m, b)->numel;
    float *fa = malloc((size_t)na * 4);
    uint16_t *hb = malloc((size_t)nb * 2);
    for (int64_t i = 0; i < na; i++) fa[i] = 0.5f + (float)i;
    for (int64_t i = 0; i < nb; i++) hb[i] = aha_f32_to_bf16((float)(i % 7) - 3.0f);
    aha_param_update bad[2] = {{a, AHA_DT_F32, fa}, {b, AHA_DT_F16, hb}};
    CHECK(aha_model_set_params_from_host(m, bad, 2, &err) == AHA_EINVAL, "F16 refused");
    fprintf(stderr, "  expected error: %s\n", err.msg);
    aha_param_update dup[2] = {{a, AHA_DT_F32, fa}, {a, AHA_DT_F32, fa}};
    CHECK(aha_model_set_params_from_host(m, dup, 2, &err) == AHA_EINVAL, "duplicate refused");
    aha_param_update out[2] = {{a, AHA_DT_F32, fa}, {9999, AHA_DT_F32, fa}};
    CHECK(aha_model_set_params_from_host(m, out, 2, &err) == AHA_EINVAL, "index refused");
    CHECK(same_params(m, orig, 0), "refused updates changed nothing");
    aha_param_update good[2] = {{a, AHA_DT_F32, fa}, {b, AHA_DT_BF16, hb}};
    CHECK(aha_model_set_params_from_host(m, good, 2, &err) == AHA_OK, "%s", err.msg);
    float *ga = params_of(m, a), *gb = params_of(m, b);
    CHECK(memcmp(ga, fa, (size_t)na * 4) == 0, "f32 update applied");
    int okb = 1;
    for (int64_t i = 0; i < nb; i++) okb &= gb[i] == (float)(i % 7) - 3.0f;
    CHECK(okb, "bf16 update applied");
    free(fa), free(hb), free(ga), free(gb);
    aha_model_free(m);
    aha_model_free(orig);
}

int main(void)
{
    aha_err err = {0};
    snprintf(tmp, sizeof tmp, "/tmp/aha-model-io-XXXXXX");
    if (!mkdtemp(tmp) || aha_backend_open("cpu", 1, &be, &err) != AHA_OK) {
        fprintf(stderr, "setup failed: %s\n", err.msg);
        return 1;
    }
    test_random_roundtrip();
    test_malformed();
    test_train_resume();
    test_decay_groups();
    test_set_params();
    aha_backend_free(be);
    if (!getenv("AHA_KEEP_TMP")) aha_remove_tree(tmp, NULL);
    return th_done("model_io");
}
