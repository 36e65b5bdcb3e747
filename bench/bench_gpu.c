/* bench_gpu.c: one GRPO step of the peer's workload (bench/peer/bench_peer.py) on the CUDA
 * backend through the model API, printed as a table and one JSON line:
 *   generation   P prompts x G completions: one prefill per prompt (PL - 1 tokens) forked to
 *                G slots with copy_prefix, then NT batched decode steps over all P*G slots with
 *                the draw on the GPU (temperature 1, no top-k / top-p: the peer's settings),
 *                exactly NT new tokens each (no stop);
 *   reference    token logprobs of the P*G sequences of PL + NT tokens, micro-batches of MB,
 *                after one untimed micro-batch;
 *   training     one GRPO pass (Eq. 1, k3 KL, eps 0.2, beta 0.04) over the same sequences in
 *                micro-batches of MB, gradient clipping to norm 1, one AdamW step; timed after
 *                one untimed warm-up pass as the peer does; MFU by the peer's FLOP formula
 *                (6 N_params + 6 L hidden T per token) against the 989 TFLOP/s bf16 datasheet;
 *   memory       device memory in use (cudaMemGetInfo) above what it was before the model;
 *   decode attention  the decode step's attention_cached alone (P*G queries, every slot at the
 *                mean context PL + NT/2, cache of PL + NT) for several split-KV counts
 *                (AHA_CUDA_DECODE_SPLIT; "auto" is the backend's own choice).
 * BENCH_GPU_CAPTURE=decode|ref|train brackets one decode step (the middle one), one reference
 * micro-batch or one training micro-batch (the second of the timed pass) with
 * cudaProfilerStart/Stop, for `ncu --profile-from-start off` to time each kernel of it alone.
 * One model instance serves all three phases (bf16 compute weights + fp32 master, gradients
 * and AdamW moments), where the peer holds an fp32 policy and two bf16 copies.
 * Random weights of the Qwen2.5-0.5B shape (or the checkpoint in MODEL_DIR); random prompt ids.
 * Usage: bench_gpu [P G PL NT MB [layers [MODEL_DIR]]] */
#include <cuda_profiler_api.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "base/fs.h"
#include "base/rng.h"
#include "io/config.h"
#include "model/model.h"
#include "qwen05.h"
#include "model/sample.h"

static void die(const char *what, aha_err *err)
{
    fprintf(stderr, "bench_gpu: %s: %s\n", what, aha_err_msg(err));
    exit(1);
}

static double mem_used_gib(void)
{
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) return -1;
    return (double)(tot - fr) / (double)(1ull << 30);
}

/* the capture range of BENCH_GPU_CAPTURE: on when phase matches and on is true, off otherwise */
static void capture(const char *phase, bool on)
{
    const char *want = getenv("BENCH_GPU_CAPTURE");
    if (!want || strcmp(want, phase)) return;
    if (on) cudaProfilerStart();
    else {
        cudaDeviceSynchronize();
        cudaProfilerStop();
    }
}

static aha_tensor dev_alloc(aha_backend *be, int64_t n, aha_dtype dt, aha_buf **b, float fill)
{
    aha_err err = {0};
    if (be->ops->buf_alloc(be, (size_t)n * aha_dtype_size(dt), b, &err) != AHA_OK) die("buf_alloc", &err);
    aha_tensor t = {be->ops->buf_base(*b), dt};
    if (dt != AHA_DT_I32 && be->ops->fill(be, t, n, fill, &err) != AHA_OK) die("fill", &err);
    return t;
}

static void decode_attention_sweep(aha_backend *be, int n, int slots_n, int max_seq, int len, int H, int KV, int D)
{
    aha_err err = {0};
    aha_buf *bk, *bv, *bq, *bo, *bs, *bl;
    int64_t nc = (int64_t)slots_n * max_seq * KV * D;
    aha_tensor kc = dev_alloc(be, nc, AHA_DT_BF16, &bk, 0.01f), vc = dev_alloc(be, nc, AHA_DT_BF16, &bv, 0.02f);
    aha_tensor q = dev_alloc(be, (int64_t)n * H * D, AHA_DT_BF16, &bq, 0.03f);
    aha_tensor o = dev_alloc(be, (int64_t)n * H * D, AHA_DT_BF16, &bo, 0.0f);
    aha_tensor ts = dev_alloc(be, n, AHA_DT_I32, &bs, 0), tl = dev_alloc(be, n, AHA_DT_I32, &bl, 0);
    int32_t *h = malloc((size_t)n * 4);
    for (int i = 0; i < n; i++) h[i] = i;
    if (be->ops->to_device(be, ts, h, (size_t)n * 4, &err) != AHA_OK) die("to_device", &err);
    for (int i = 0; i < n; i++) h[i] = len;
    if (be->ops->to_device(be, tl, h, (size_t)n * 4, &err) != AHA_OK) die("to_device", &err);
    free(h);
    printf("  decode attention_cached, %d queries at length %d (cache %d), us per call:", n, len, max_seq);
    const char *splits[] = {"1", "2", "3", "4", "6", "8", NULL};
    for (int k = 0; k < (int)(sizeof splits / sizeof splits[0]); k++) {
        if (splits[k]) setenv("AHA_CUDA_DECODE_SPLIT", splits[k], 1);
        else unsetenv("AHA_CUDA_DECODE_SPLIT");
        double t = 0;
        for (int rep = 0; rep < 2; rep++) { /* the first round warms up */
            if (be->ops->synchronize(be, &err) != AHA_OK) die("sync", &err);
            t = aha_now_s();
            for (int it = 0; it < 100; it++)
                if (be->ops->attention_cached(be, o, q, kc, vc, ts, tl, n, H, KV, D, max_seq, &err) != AHA_OK)
                    die("attention_cached", &err);
            if (be->ops->synchronize(be, &err) != AHA_OK) die("sync", &err);
            t = aha_now_s() - t;
        }
        printf(" split %s %.1f;", splits[k] ? splits[k] : "auto", t / 100 * 1e6);
    }
    printf("\n");
    unsetenv("AHA_CUDA_DECODE_SPLIT");
    be->ops->buf_free(be, bk);
    be->ops->buf_free(be, bv);
    be->ops->buf_free(be, bq);
    be->ops->buf_free(be, bo);
    be->ops->buf_free(be, bs);
    be->ops->buf_free(be, bl);
}

int main(int argc, char **argv)
{
    int P = argc > 1 ? atoi(argv[1]) : 16, G = argc > 2 ? atoi(argv[2]) : 16;
    int PL = argc > 3 ? atoi(argv[3]) : 128, NT = argc > 4 ? atoi(argv[4]) : 512;
    int MB = argc > 5 ? atoi(argv[5]) : 16, layers = argc > 6 ? atoi(argv[6]) : 24;
    if (P <= 0 || G <= 0 || PL < 2 || NT <= 0 || MB <= 0 || layers <= 0) {
        fprintf(stderr, "usage: bench_gpu [P G PL NT MB [layers]] (positive; PL >= 2)\n");
        return 2;
    }
    int N = P * G, T = PL + NT;
    aha_err err = {0};
    aha_backend *be = NULL;
    if (aha_backend_open("cuda:0", 0, &be, &err) != AHA_OK) die("backend", &err);
    double mem0 = mem_used_gib();

    aha_model_config cfg;
    bench_qwen05_config(&cfg, layers);

    double t = aha_now_s();
    aha_model *m = NULL;
    aha_model_opts opts = {.max_batch_tokens = MB * T, .logits_chunk_rows = 2048, .training = true};
    if (argc > 7) {
        if (aha_model_open(argv[7], be, &opts, &m, &err) != AHA_OK) die(argv[7], &err);
        cfg = *aha_model_cfg(m);
        layers = cfg.num_layers;
    } else if (aha_model_init_random(&cfg, 1, be, &opts, &m, &err) != AHA_OK) {
        die("init_random", &err);
    }
    double nparam = (double)aha_model_numel(m);
    fprintf(stderr, "model: %.0f parameters, init %.1f s\n", nparam, aha_now_s() - t);

    aha_rng rng;
    aha_rng_seed(&rng, 0, 0);
    int32_t *seqs = malloc((size_t)N * T * 4);
    for (int p = 0; p < P; p++)
        for (int i = 0; i < PL; i++) seqs[(size_t)p * G * T + i] = (int32_t)aha_rng_below(&rng, 151000);
    for (int p = 0; p < P; p++)
        for (int g = 1; g < G; g++) memcpy(seqs + ((size_t)p * G + g) * T, seqs + (size_t)p * G * T, (size_t)PL * 4);

    /* ---- generation ---- */
    aha_kv_cache *c = NULL;
    if (aha_kv_cache_create(m, N + P, T, &c, &err) != AHA_OK) die("kv cache", &err);
    int *slots = malloc((size_t)N * sizeof(int));
    int32_t *tin = malloc((size_t)N * 4), *tout = malloc((size_t)N * 4), *rid = malloc((size_t)N * 4);
    float *glp = malloc((size_t)N * NT * sizeof(float)), *lpo = malloc((size_t)N * sizeof(float));
    aha_sampling sp = {1.0f, 1.0f, 0};
    for (int i = 0; i < N; i++) {
        slots[i] = i;
        rid[i] = i;
    }
    /* warm-up: one small prefill + two decode steps (module load, GEMM algorithm choice, the
     * step's graph recorded on its second sighting) */
    if (aha_model_prefill(m, c, N, seqs, PL - 1, NULL, &err) != AHA_OK) die("warm-up prefill", &err);
    for (int i = 0; i < N; i++) {
        if (aha_kv_cache_copy_prefix(c, N, i, PL - 1, &err) != AHA_OK) die("warm-up fork", &err);
        tin[i] = seqs[PL - 1];
    }
    for (int w = 0; w < 2; w++)
        if (aha_model_decode_sample(m, c, N, slots, tin, &sp, 42, rid, tout, lpo, &err) != AHA_OK)
            die("warm-up", &err);
    for (int i = 0; i <= N; i++) aha_kv_cache_reset_slot(c, i);
    if (be->ops->synchronize(be, &err) != AHA_OK) die("sync", &err);

    t = aha_now_s();
    for (int p = 0; p < P; p++) {
        const int32_t *pr = seqs + (size_t)p * G * T;
        if (aha_model_prefill(m, c, N + p, pr, PL - 1, NULL, &err) != AHA_OK) die("prefill", &err);
        for (int g = 0; g < G; g++)
            if (aha_kv_cache_copy_prefix(c, N + p, p * G + g, PL - 1, &err) != AHA_OK) die("fork", &err);
    }
    double t_prefill = aha_now_s() - t;
    for (int i = 0; i < N; i++) tin[i] = seqs[(size_t)i * T + PL - 1];
    for (int s = 0; s < NT; s++) {
        if (s == NT / 2) capture("decode", true);
        if (aha_model_decode_sample(m, c, N, slots, tin, &sp, 42, rid, tout, lpo, &err) != AHA_OK)
            die("decode", &err);
        if (s == NT / 2) capture("decode", false);
        for (int i = 0; i < N; i++) {
            seqs[(size_t)i * T + PL + s] = tout[i];
            glp[(size_t)i * NT + s] = lpo[i];
            tin[i] = tout[i];
        }
    }
    double t_gen = aha_now_s() - t;
    double mem_gen = mem_used_gib() - mem0;
    double glp_mean = 0;
    for (size_t i = 0; i < (size_t)N * NT; i++) glp_mean += glp[i];
    glp_mean /= (double)N * NT;
    aha_kv_cache_free(c);

    /* ---- reference logprobs ---- */
    int nlp = T - 1;
    float *ref = malloc((size_t)N * nlp * sizeof(float));
    int32_t *cu = malloc((size_t)(MB + 1) * 4);
    /* warm-up: one micro-batch, untimed (GEMM algorithm choice for the batch shapes) */
    for (int i = 0; i <= MB && i <= N; i++) cu[i] = i * T;
    aha_batch wb = {seqs, cu, MB < N ? MB : N};
    if (aha_model_token_logprobs(m, &wb, ref, NULL, &err) != AHA_OK) die("warm-up logprobs", &err);
    if (be->ops->synchronize(be, &err) != AHA_OK) die("sync", &err);
    t = aha_now_s();
    for (int i0 = 0; i0 < N; i0 += MB) {
        int nb = N - i0 < MB ? N - i0 : MB;
        for (int i = 0; i <= nb; i++) cu[i] = i * T;
        aha_batch b = {seqs + (size_t)i0 * T, cu, nb};
        if (i0 == MB) capture("ref", true);
        if (aha_model_token_logprobs(m, &b, ref + (size_t)i0 * nlp, NULL, &err) != AHA_OK) die("logprobs", &err);
        if (i0 == MB) capture("ref", false);
    }
    double t_ref = aha_now_s() - t;
    /* the rollout's logprobs and the recomputed ones should agree (same weights, bf16 both) */
    double mism = 0;
    for (int i = 0; i < N; i++)
        for (int s = 0; s < NT; s++) mism += fabs(glp[(size_t)i * NT + s] - ref[(size_t)i * nlp + PL - 1 + s]);
    mism /= (double)N * NT;

    /* ---- training ---- */
    aha_train *tr = NULL;
    if (aha_train_create(m, &tr, &err) != AHA_OK) die("train state", &err);
    float *mask = calloc((size_t)N * nlp, sizeof(float)), *adv = malloc((size_t)N * sizeof(float));
    for (int i = 0; i < N; i++)
        for (int s = PL - 1; s < nlp; s++) mask[(size_t)i * nlp + s] = 1.0f;
    for (int p = 0; p < P; p++) {
        double r[4096], mean = 0, var = 0;
        for (int g = 0; g < G && g < 4096; g++) mean += (r[g] = aha_rng_f64(&rng));
        mean /= G;
        for (int g = 0; g < G && g < 4096; g++) var += (r[g] - mean) * (r[g] - mean);
        double sd = G > 1 ? sqrt(var / (G - 1)) : 0;
        for (int g = 0; g < G && g < 4096; g++) adv[p * G + g] = (float)((r[g] - mean) / (sd + 1e-4));
    }
    aha_adamw_args aa = {1e-6f, 0.9f, 0.99f, 1e-8f, 0.0f};
    double t_train = 0, gnorm = 0, loss = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (be->ops->synchronize(be, &err) != AHA_OK) die("sync", &err);
        t = aha_now_s();
        if (aha_train_zero_grad(tr, &err) != AHA_OK) die("zero_grad", &err);
        loss = 0;
        for (int i0 = 0; i0 < N; i0 += MB) {
            int nb = N - i0 < MB ? N - i0 : MB;
            for (int i = 0; i <= nb; i++) cu[i] = i * T;
            aha_batch b = {seqs + (size_t)i0 * T, cu, nb};
            aha_grpo_args ga = {.mask = mask + (size_t)i0 * nlp, .old_logprobs = ref + (size_t)i0 * nlp,
                                .ref_logprobs = ref + (size_t)i0 * nlp, .advantages = adv + i0,
                                .eps_low = 0.2f, .eps_high = 0.2f, .beta = 0.04f, .norm = AHA_GRPO_NORM_SEQ,
                                .scale = 1.0f / (float)N};
            aha_grpo_stats gs;
            if (pass == 1 && i0 == MB) capture("train", true);
            if (aha_model_grpo_backward(m, tr, &b, &ga, &gs, NULL, &err) != AHA_OK) die("grpo", &err);
            if (pass == 1 && i0 == MB) capture("train", false);
            loss += gs.loss;
        }
        if (aha_train_clip(tr, 1.0, &gnorm, &err) != AHA_OK) die("clip", &err);
        if (aha_train_adamw_step(tr, &aa, &err) != AHA_OK) die("adamw", &err);
        if (be->ops->synchronize(be, &err) != AHA_OK) die("sync", &err);
        t_train = aha_now_s() - t;
    }
    double mem_peak = mem_used_gib() - mem0;

    double gen_tps = (double)N * NT / t_gen, ref_tps = (double)N * T / t_ref, train_tps = (double)N * T / t_train;
    double fl_tok = 6.0 * nparam + 6.0 * layers * (double)cfg.hidden_size * T;
    double mfu = train_tps * fl_tok / 989e12;
    printf("\nbench_gpu: %d prompts x G=%d, prompt %d, %d new tokens, micro-batch %d, %d layers, %.0fM params\n", P,
           G, PL, NT, MB, layers, nparam / 1e6);
    printf("  %-34s %12s\n", "metric", "aha cuda");
    printf("  %-34s %12.0f  (%.2f s; prefill+fork %.3f s)\n", "generation new tokens/s", gen_tps, t_gen, t_prefill);
    printf("  %-34s %12.0f  (%.3f s)\n", "reference logprobs tokens/s", ref_tps, t_ref);
    printf("  %-34s %12.0f  (%.3f s, MFU %.1f%% of 989 TFLOP/s)\n", "training tokens/s (GRPO pass)", train_tps,
           t_train, 100 * mfu);
    printf("  %-34s %12.2f\n", "step seconds (gen + ref + train)", t_gen + t_ref + t_train);
    printf("  %-34s %12.2f  (after generation %.2f)\n", "device memory GiB (cudaMemGetInfo)", mem_peak, mem_gen);
    printf("  mean rollout logprob %.4f; mean |rollout - recomputed| %.2e; grad norm %.4g; loss %.4g\n", glp_mean,
           mism, gnorm, loss);
    printf("JSON {\"gen_new_tok_per_s\": %.1f, \"gen_s\": %.3f, \"ref_tok_per_s\": %.1f, \"ref_s\": %.3f, "
           "\"train_tok_per_s\": %.1f, \"train_s\": %.3f, \"train_mfu_vs_989T\": %.4f, \"step_total_s\": %.3f, "
           "\"peak_mem_GiB\": %.3f, \"mismatch\": %.3e}\n",
           gen_tps, t_gen, ref_tps, t_ref, train_tps, t_train, mfu, t_gen + t_ref + t_train, mem_peak, mism);
    aha_train_free(tr);
    aha_model_free(m);
    decode_attention_sweep(be, N, N + P, T, PL + NT / 2, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
    aha_backend_free(be);
    free(seqs);
    free(slots);
    free(tin);
    free(tout);
    free(rid);
    free(glp);
    free(lpo);
    free(ref);
    free(cu);
    free(mask);
    free(adv);
    return 0;
}
