/* test_cuda_model.c: the decoder on the CUDA backend (bf16 weights and activations, fp32
 * master weights and AdamW) through the model API:
 *  - the PyTorch fixtures (tests/fixtures/tiny-*): logits and token logprobs within 1e-2
 *    relative, GRPO and SFT losses within 1e-2 and every gradient within 3e-2, parameters
 *    after two AdamW steps on PyTorch's SFT gradient within 1e-5;
 *  - KV-cache prefill + decode (a group forked from one prefill) against the full forward on
 *    the same backend, within bf16 tolerance;
 *  - CPU against CUDA on one random model of the Qwen2.5-0.5B layer shape (hidden 896, 14
 *    heads, 2 KV heads, intermediate 4864, vocabulary 151,936; 2 layers) for ragged packed
 *    sequences: token logprobs within 2e-2 relative.
 * Suite 'gpu'; exits 77 (skip) without a GPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../harness.h"
#include "backend/backend.h"
#include "base/rng.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "qwen05.h"

static float *load_all(aha_st_file *f, const char *name, int64_t *n)
{
    const aha_st_tensor *t = aha_st_find(f, name);
    if (!t) {
        fprintf(stderr, "fixture tensor %s missing\n", name);
        exit(1);
    }
    float *x = malloc((size_t)t->numel * sizeof(float));
    aha_err err = {0};
    if (aha_st_to_f32(t, x, t->numel, &err) != AHA_OK) {
        fprintf(stderr, "%s: %s\n", name, err.msg);
        exit(1);
    }
    if (n) *n = t->numel;
    return x;
}

static float scalar(aha_st_file *f, const char *name)
{
    float *x = load_all(f, name, NULL);
    float v = x[0];
    free(x);
    return v;
}

static aha_st_file *open_fixture(const char *dir, const char *file)
{
    char path[1024];
    if (snprintf(path, sizeof path, "%s/%s", dir, file) >= (int)sizeof path) {
        fprintf(stderr, "fixture path too long: %s/%s\n", dir, file);
        exit(1);
    }
    aha_st_file *f = NULL;
    aha_err err = {0};
    if (aha_st_open(path, &f, &err) != AHA_OK) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    return f;
}

typedef struct {
    int32_t *ids, *cu;
    aha_batch b;
    int B, T;
} fbatch;

static void load_batch(aha_st_file *f, fbatch *fb)
{
    const aha_st_tensor *t = aha_st_find(f, "input_ids");
    if (!t || t->dtype != AHA_DT_I32 || t->ndim != 2) {
        fprintf(stderr, "input_ids missing or not I32 [B,T]\n");
        exit(1);
    }
    fb->B = (int)t->shape[0];
    fb->T = (int)t->shape[1];
    fb->ids = malloc((size_t)t->numel * 4);
    memcpy(fb->ids, t->data, (size_t)t->numel * 4);
    fb->cu = malloc((size_t)(fb->B + 1) * 4);
    for (int i = 0; i <= fb->B; i++) fb->cu[i] = i * fb->T;
    fb->b = (aha_batch){fb->ids, fb->cu, fb->B};
}

static void free_batch(fbatch *fb)
{
    free(fb->ids);
    free(fb->cu);
}

static void check_grads(aha_model *m, aha_train *t, aha_st_file *f, const char *what)
{
    double worst = 0;
    for (int i = 0; i < aha_model_n_params(m); i++) {
        const aha_param_info *p = aha_model_param(m, i);
        char name[160], label[200];
        snprintf(name, sizeof name, "grad.%s", p->name);
        int64_t n;
        float *ref = load_all(f, name, &n);
        float *got = malloc((size_t)p->numel * sizeof(float));
        aha_err err = {0};
        CHECK(n == p->numel, "%s numel", name);
        CHECK(aha_train_grad_get_f32(t, i, got, &err) == AHA_OK, "%s", err.msg);
        snprintf(label, sizeof label, "%s %s", what, p->name);
        double rel = th_rel_err(label, got, ref, n);
        if (rel > worst) worst = rel;
        CHECK(rel <= 3e-2, "%s gradient rel err %.3e", name, rel);
        free(got);
        free(ref);
    }
    fprintf(stderr, "  %s worst gradient rel err %.3e\n", what, worst);
}

static void run_fixture(aha_backend *be, const char *fixture)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", th_fixtures(), fixture);
    fprintf(stderr, "== %s on %s\n", dir, be->device);
    aha_err err = {0};
    aha_model *m = NULL;
    aha_model_opts opts = {.logits_chunk_rows = 7, .training = true};
    if (aha_model_open(dir, be, &opts, &m, &err) != AHA_OK) {
        CHECK(0, "open %s: %s", dir, err.msg);
        return;
    }
    int V = aha_model_cfg(m)->vocab_size;

    aha_st_file *f = open_fixture(dir, "forward.safetensors");
    fbatch fb;
    load_batch(f, &fb);
    int64_t nl, nlp;
    float *ref_logits = load_all(f, "logits", &nl), *ref_lp = load_all(f, "token_logprobs", &nlp);
    float *logits = malloc((size_t)nl * sizeof(float)), *lp = malloc((size_t)nlp * sizeof(float));
    CHECK(nl == (int64_t)fb.B * fb.T * V, "logits shape");
    for (int64_t i = 0; i < nl; i++) logits[i] = NAN;
    for (int64_t i = 0; i < nlp; i++) lp[i] = NAN;
    CHECK(aha_model_token_logprobs(m, &fb.b, lp, logits, &err) == AHA_OK, "%s", err.msg);
    CHECK(th_rel_err("logits", logits, ref_logits, nl) <= 1e-2, "logits");
    CHECK(th_rel_err("token_logprobs", lp, ref_lp, nlp) <= 1e-2, "token_logprobs");
    free(logits);
    free(lp);
    free(ref_logits);
    free(ref_lp);
    free_batch(&fb);
    aha_st_close(f);

    aha_train *t = NULL;
    CHECK(aha_train_create(m, &t, &err) == AHA_OK, "%s", err.msg);
    if (!t) {
        aha_model_free(m);
        return;
    }
    f = open_fixture(dir, "grpo.safetensors");
    load_batch(f, &fb);
    float *mask = load_all(f, "completion_mask", NULL), *old = load_all(f, "old_logprobs", NULL),
          *ref = load_all(f, "ref_logprobs", NULL), *adv = load_all(f, "advantages", NULL);
    float eps = scalar(f, "epsilon"), beta = scalar(f, "beta"), loss_ref = scalar(f, "loss");
    aha_grpo_args ga = {.mask = mask, .old_logprobs = old, .ref_logprobs = ref, .advantages = adv,
                        .eps_low = eps, .eps_high = eps, .beta = beta, .norm = AHA_GRPO_NORM_SEQ,
                        .scale = 1.0f / (float)fb.B};
    aha_grpo_stats gs = {0};
    CHECK(aha_train_zero_grad(t, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_model_grpo_backward(m, t, &fb.b, &ga, &gs, NULL, &err) == AHA_OK, "%s", err.msg);
    fprintf(stderr, "  grpo loss %.8f ref %.8f\n", gs.loss, (double)loss_ref);
    /* The GRPO loss is a sum of per-token terms of size ~|A| that cancel (the advantages of a
     * group sum to zero), so its absolute error is ~|A| times the bf16 logprob error (~1e-3),
     * however small the loss itself is. */
    double amean = 0;
    for (int i = 0; i < fb.B; i++) amean += fabs(adv[i]) / fb.B;
    CHECK(fabs(gs.loss - loss_ref) <= 1e-2 * fabs(loss_ref) + 1e-3 * amean, "grpo loss %.8f vs %.8f", gs.loss,
          (double)loss_ref);
    check_grads(m, t, f, "grpo");
    free(mask);
    free(old);
    free(ref);
    free(adv);
    free_batch(&fb);
    aha_st_close(f);

    f = open_fixture(dir, "sft.safetensors");
    load_batch(f, &fb);
    int64_t nm;
    float *lmask = load_all(f, "loss_mask", &nm);
    double msum = 0;
    for (int64_t i = 0; i < nm; i++) msum += lmask[i];
    loss_ref = scalar(f, "loss");
    double loss = 0;
    CHECK(aha_train_zero_grad(t, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_model_sft_backward(m, t, &fb.b, lmask, (float)(1.0 / msum), &loss, &err) == AHA_OK, "%s",
          err.msg);
    fprintf(stderr, "  sft loss %.8f ref %.8f\n", loss, (double)loss_ref);
    CHECK(fabs(loss - loss_ref) <= 1e-2 * fabs(loss_ref), "sft loss %.8f vs %.8f", loss, (double)loss_ref);
    check_grads(m, t, f, "sft");
    free(lmask);
    free_batch(&fb);
    aha_st_close(f);

    /* AdamW on PyTorch's SFT gradient: fp32 master weights, so fp32 tolerance */
    aha_st_file *fs = open_fixture(dir, "sft.safetensors");
    int64_t gn;
    aha_tensor gbuf = aha_train_grads(t, &gn);
    for (int i = 0; i < aha_model_n_params(m); i++) {
        char gname[160];
        snprintf(gname, sizeof gname, "grad.%s", aha_model_param(m, i)->name);
        int64_t n;
        float *g = load_all(fs, gname, &n);
        CHECK(be->ops->to_device(be, aha_tensor_at(gbuf, aha_model_param_offset(m, i)), g,
                                 (size_t)n * sizeof(float), &err) == AHA_OK, "%s", err.msg);
        free(g);
    }
    aha_st_close(fs);
    /* the master weights must be the fixture's fp32 weights: reload them from the checkpoint */
    aha_st_file *fw = open_fixture(dir, "model.safetensors");
    for (int i = 0; i < aha_model_n_params(m); i++) {
        const aha_param_info *p = aha_model_param(m, i);
        int64_t n;
        float *w = load_all(fw, p->name, &n);
        CHECK(aha_model_param_set_f32(m, i, w, &err) == AHA_OK, "%s", err.msg);
        free(w);
    }
    aha_st_close(fw);
    f = open_fixture(dir, "adamw.safetensors");
    aha_adamw_args aa = {scalar(f, "lr"), scalar(f, "beta1"), scalar(f, "beta2"), scalar(f, "eps"),
                         scalar(f, "weight_decay")};
    for (int s = 0; s < 2; s++) CHECK(aha_train_adamw_step(t, &aa, &err) == AHA_OK, "%s", err.msg);
    double worst = 0;
    for (int i = 0; i < aha_model_n_params(m); i++) {
        const aha_param_info *p = aha_model_param(m, i);
        char name[160];
        snprintf(name, sizeof name, "after.%s", p->name);
        int64_t n;
        float *want = load_all(f, name, &n);
        float *got = malloc((size_t)n * sizeof(float));
        CHECK(aha_model_param_get_f32(m, i, got, &err) == AHA_OK, "%s", err.msg);
        double e = th_max_abs(name, got, want, n);
        if (e > worst) worst = e;
        CHECK(e <= 1e-5, "%s after AdamW max |d| %.3e", name, e);
        /* the bf16 compute copy the weight push sends is the rounded master, bit for bit */
        uint16_t *b16 = malloc((size_t)n * 2);
        CHECK(aha_model_param_get_bf16(m, i, b16, &err) == AHA_OK, "%s", err.msg);
        int64_t off = 0;
        for (int64_t j = 0; j < n; j++) off += b16[j] != aha_f32_to_bf16(got[j]);
        CHECK(off == 0, "%s: %lld bf16 weights differ from the rounded fp32 master", name, (long long)off);
        free(b16);
        free(got);
        free(want);
    }
    fprintf(stderr, "  adamw worst |d| %.3e\n", worst);
    aha_st_close(f);
    aha_train_free(t);

    /* KV cache: prefill a prompt, fork it to 3 slots, decode 6 tokens in each, compare with
     * the full forward of the same sequences on this backend */
    aha_rng rng;
    aha_rng_seed(&rng, 99, 3);
    enum { PL = 9, NT = 6, G = 3 };
    int32_t seq[G][PL + NT];
    for (int i = 0; i < PL; i++) seq[0][i] = (int32_t)aha_rng_below(&rng, (uint64_t)V);
    for (int g = 0; g < G; g++) {
        memcpy(seq[g], seq[0], sizeof(int32_t) * PL);
        for (int i = PL; i < PL + NT; i++) seq[g][i] = (int32_t)aha_rng_below(&rng, (uint64_t)V);
    }
    float *full = malloc((size_t)G * (PL + NT) * V * sizeof(float));
    for (int g = 0; g < G; g++) {
        int32_t cu[2] = {0, PL + NT};
        aha_batch b = {seq[g], cu, 1};
        CHECK(aha_model_token_logprobs(m, &b, NULL, full + (size_t)g * (PL + NT) * V, &err) == AHA_OK, "%s",
              err.msg);
    }
    aha_kv_cache *c = NULL;
    CHECK(aha_kv_cache_create(m, G + 1, PL + NT + 2, &c, &err) == AHA_OK, "%s", err.msg);
    float *row = malloc((size_t)G * V * sizeof(float));
    CHECK(aha_model_prefill(m, c, G, seq[0], PL, row, &err) == AHA_OK, "%s", err.msg);
    CHECK(th_rel_err("prefill last logits", row, full + (size_t)(PL - 1) * V, V) <= 1e-2, "prefill");
    for (int g = 0; g < G; g++) CHECK(aha_kv_cache_copy_prefix(c, G, g, PL, &err) == AHA_OK, "%s", err.msg);
    double dworst = 0;
    for (int s = 0; s < NT; s++) {
        int slots[G];
        int32_t tok[G];
        for (int g = 0; g < G; g++) {
            slots[g] = G - 1 - g;
            tok[g] = seq[G - 1 - g][PL + s];
        }
        CHECK(aha_model_decode(m, c, G, slots, tok, row, &err) == AHA_OK, "%s", err.msg);
        for (int g = 0; g < G; g++) {
            int sg = G - 1 - g;
            double e = th_rel_err("decode", row + (size_t)g * V, full + ((size_t)sg * (PL + NT) + PL + s) * V, V);
            if (e > dworst) dworst = e;
            CHECK(e <= 1e-2, "decode slot %d step %d rel %.3e", sg, s, e);
        }
    }
    fprintf(stderr, "  kv-cache decode worst rel err %.3e\n", dworst);
    aha_kv_cache_free(c);

    /* decode_sample (the draw on the GPU, replayed as an op graph after the first step)
     * against decode + host argmax: greedy tokens and raw logprobs; then two sampled runs
     * with one seed give one sequence */
    aha_kv_cache *ca = NULL, *cb = NULL;
    CHECK(aha_kv_cache_create(m, G, PL + 3 * NT, &ca, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_kv_cache_create(m, G, PL + 3 * NT, &cb, &err) == AHA_OK, "%s", err.msg);
    int sl[G];
    int32_t ta[G], tb[G], ids[G], outt[G];
    float lpo[G];
    float *rows = malloc((size_t)G * V * sizeof(float));
    for (int g = 0; g < G; g++) {
        sl[g] = g;
        ids[g] = 100 + g;
        CHECK(aha_model_prefill(m, ca, g, seq[0], PL, NULL, &err) == AHA_OK, "%s", err.msg);
        CHECK(aha_model_prefill(m, cb, g, seq[0], PL, NULL, &err) == AHA_OK, "%s", err.msg);
        ta[g] = tb[g] = seq[g][PL];
    }
    aha_sampling greedy = {0.0f, 1.0f, 0};
    int mism = 0;
    double lperr = 0;
    for (int step = 0; step < 2 * NT; step++) {
        CHECK(aha_model_decode(m, ca, G, sl, ta, rows, &err) == AHA_OK, "%s", err.msg);
        CHECK(aha_model_decode_sample(m, cb, G, sl, tb, &greedy, 5, ids, outt, lpo, &err) == AHA_OK, "%s",
              err.msg);
        for (int g = 0; g < G; g++) {
            const float *r = rows + (size_t)g * V;
            int am = aha_argmax(r, V);
            if (am != outt[g]) mism++;
            lperr = fmax(lperr, fabs(lpo[g] - (r[outt[g]] - aha_logsumexp(r, V))));
            ta[g] = am;
            tb[g] = outt[g];
        }
    }
    fprintf(stderr, "  decode_sample greedy: %d token mismatches, raw logprob max err %.2e\n", mism, lperr);
    CHECK(mism == 0, "greedy decode_sample differs from decode + argmax in %d tokens", mism);
    CHECK(lperr <= 1e-4, "decode_sample logprob error %.3e", lperr);
    aha_sampling hot = {1.0f, 0.9f, 20};
    int32_t run1[NT][G];
    for (int rep = 0; rep < 2; rep++) {
        /* a fresh group: the prompt but its last token prefilled, which the first step feeds */
        for (int g = 0; g < G; g++) {
            aha_kv_cache_reset_slot(cb, g);
            CHECK(aha_model_prefill(m, cb, g, seq[0], PL - 1, NULL, &err) == AHA_OK, "%s", err.msg);
            tb[g] = seq[0][PL - 1];
        }
        int same = 0;
        for (int step = 0; step < NT; step++) {
            CHECK(aha_model_decode_sample(m, cb, G, sl, tb, &hot, 77, ids, outt, lpo, &err) == AHA_OK, "%s", err.msg);
            for (int g = 0; g < G; g++) {
                CHECK(outt[g] >= 0 && outt[g] < V && lpo[g] <= 0, "sampled token %d logprob %g", outt[g], lpo[g]);
                if (rep == 0) run1[step][g] = outt[g];
                else same += run1[step][g] == outt[g];
                tb[g] = outt[g];
            }
        }
        if (rep == 1) CHECK(same == NT * G, "same seed, same ids: %d of %d tokens equal", same, NT * G);
    }
    free(rows);
    aha_kv_cache_free(ca);
    aha_kv_cache_free(cb);
    free(row);
    free(full);
    aha_model_free(m);
}

/* CPU against CUDA on a random model of the Qwen2.5-0.5B layer shape */
static void run_cpu_vs_cuda(aha_backend *cpu, aha_backend *gpu)
{
    fprintf(stderr, "== random Qwen2.5-0.5B-shaped model (2 layers): cpu vs cuda\n");
    aha_model_config cfg;
    bench_qwen05_config(&cfg, 2);
    snprintf(cfg.dtype, sizeof cfg.dtype, "float32"); /* the name this test always used; unread by init_random */
    aha_err err = {0};
    aha_model *mc = NULL, *mg = NULL;
    if (aha_model_init_random(&cfg, 5, cpu, NULL, &mc, &err) != AHA_OK ||
        aha_model_init_random(&cfg, 5, gpu, NULL, &mg, &err) != AHA_OK) {
        CHECK(0, "init_random: %s", err.msg);
        aha_model_free(mc);
        return;
    }
    int lens[] = {130, 1, 65, 200, 2};
    int ns = 5;
    int32_t cu[6] = {0};
    for (int s = 0; s < ns; s++) cu[s + 1] = cu[s] + lens[s];
    int n = cu[ns];
    int32_t *ids = malloc((size_t)n * 4);
    aha_rng rng;
    aha_rng_seed(&rng, 17, 0);
    for (int i = 0; i < n; i++) ids[i] = (int32_t)aha_rng_below(&rng, 151936);
    aha_batch b = {ids, cu, ns};
    int nlp = n - ns;
    float *lc = malloc((size_t)nlp * 4), *lg = malloc((size_t)nlp * 4);
    for (int i = 0; i < nlp; i++) lg[i] = NAN;
    CHECK(aha_model_token_logprobs(mc, &b, lc, NULL, &err) == AHA_OK, "%s", err.msg);
    CHECK(aha_model_token_logprobs(mg, &b, lg, NULL, &err) == AHA_OK, "%s", err.msg);
    CHECK(th_rel_err("token logprobs cuda vs cpu", lg, lc, nlp) <= 2e-2, "cpu vs cuda logprobs");
    free(ids);
    free(lc);
    free(lg);
    aha_model_free(mc);
    aha_model_free(mg);
}

int main(int argc, char **argv)
{
    aha_backend *gpu = NULL, *cpu = NULL;
    aha_err err = {0};
    if (aha_backend_open("cuda:0", 0, &gpu, &err) != AHA_OK) {
        fprintf(stderr, "no CUDA backend: %s\n", err.msg);
        return 77;
    }
    if (argc > 1) {
        for (int i = 1; i < argc; i++) run_fixture(gpu, argv[i]);
    } else {
        run_fixture(gpu, "tiny-qwen2");
        run_fixture(gpu, "tiny-llama");
        run_fixture(gpu, "tiny-qwen3");
        if (aha_backend_open("cpu", 0, &cpu, &err) != AHA_OK) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        run_cpu_vs_cuda(cpu, gpu);
        aha_backend_free(cpu);
    }
    aha_backend_free(gpu);
    return th_done("cuda_model");
}
