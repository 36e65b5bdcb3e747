/* bench_model_cpu.c: throughput of the decoder on the CPU backend for a demo-sized random
 * model: scoring (token logprobs), one GRPO forward+backward, an AdamW step, and generation
 * (16 prompts x n=4 sharing one prefill each, continuous decode). Prints a table.
 * Usage: bench_model_cpu [--threads N] [--hidden C] [--layers L] [--vocab V] [--seq T] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "base/fs.h"
#include "base/rng.h"
#include "model/model.h"

static void die(const char *what, const aha_err *err)
{
    fprintf(stderr, "bench_model_cpu: %s: %s\n", what, aha_err_msg(err));
    exit(1);
}

int main(int argc, char **argv)
{
    int threads = 0, C = 192, L = 4, V = 384, T = 192, B = 16;
    for (int i = 1; i + 1 < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--threads")) threads = v;
        else if (!strcmp(argv[i], "--hidden")) C = v;
        else if (!strcmp(argv[i], "--layers")) L = v;
        else if (!strcmp(argv[i], "--vocab")) V = v;
        else if (!strcmp(argv[i], "--seq")) T = v;
    }
    aha_model_config cfg = {0};
    cfg.arch = AHA_ARCH_QWEN2;
    snprintf(cfg.model_type, sizeof cfg.model_type, "qwen2");
    snprintf(cfg.architecture, sizeof cfg.architecture, "Qwen2ForCausalLM");
    cfg.vocab_size = V;
    cfg.hidden_size = C;
    cfg.intermediate_size = C * 8 / 3 / 32 * 32;
    cfg.num_layers = L;
    cfg.num_heads = C / 32;
    cfg.num_kv_heads = cfg.num_heads / 3 > 0 ? cfg.num_heads / 3 : 1;
    while (cfg.num_heads % cfg.num_kv_heads) cfg.num_kv_heads--;
    cfg.head_dim = 32;
    cfg.max_position_embeddings = 4096;
    cfg.rope_theta = 10000;
    cfg.rms_norm_eps = 1e-6;
    cfg.tie_word_embeddings = true;
    cfg.attention_bias = true;
    cfg.initializer_range = 0.02f;
    cfg.bos_token_id = cfg.pad_token_id = -1;

    aha_err err = {0};
    aha_backend *be = NULL;
    aha_model *m = NULL;
    aha_train *t = NULL;
    if (aha_backend_open("cpu", threads, &be, &err) || aha_model_init_random(&cfg, 1, be, NULL, &m, &err) ||
        aha_train_create(m, &t, &err))
        die("setup", &err);
    printf("model: hidden %d, %d layers, %d heads (%d kv), ffn %d, vocab %d: %.2fM parameters; threads %d\n", C, L,
           cfg.num_heads, cfg.num_kv_heads, cfg.intermediate_size, V, aha_model_param_count(m) / 1e6, threads);

    int N = B * T;
    int32_t *ids = malloc((size_t)N * 4), *cu = malloc((size_t)(B + 1) * 4);
    aha_rng rng;
    aha_rng_seed(&rng, 3, 0);
    for (int i = 0; i < N; i++) ids[i] = (int32_t)aha_rng_below(&rng, (uint64_t)V);
    for (int b = 0; b <= B; b++) cu[b] = b * T;
    aha_batch batch = {ids, cu, B};
    int nlp = N - B;
    float *lp = malloc((size_t)nlp * 4), *mask = malloc((size_t)nlp * 4), *adv = malloc((size_t)B * 4);
    for (int b = 0; b < B; b++) {
        adv[b] = (float)aha_rng_normal(&rng);
        for (int j = 0; j < T - 1; j++) mask[b * (T - 1) + j] = j >= T / 2 ? 1.0f : 0.0f; /* half prompt */
    }

    /* warm-up sizes the arenas */
    if (aha_model_token_logprobs(m, &batch, lp, NULL, &err)) die("logprobs", &err);
    int reps = 3;
    double t0 = aha_now_s();
    for (int r = 0; r < reps; r++)
        if (aha_model_token_logprobs(m, &batch, lp, NULL, &err)) die("logprobs", &err);
    double score_s = (aha_now_s() - t0) / reps;

    aha_grpo_args ga = {.mask = mask, .old_logprobs = lp, .ref_logprobs = lp, .advantages = adv, .eps_low = 0.2f,
                        .eps_high = 0.2f, .beta = 0.04f, .scale = 1.0f / B};
    if (aha_model_grpo_backward(m, t, &batch, &ga, NULL, NULL, &err)) die("grpo", &err);
    t0 = aha_now_s();
    for (int r = 0; r < reps; r++)
        if (aha_model_grpo_backward(m, t, &batch, &ga, NULL, NULL, &err)) die("grpo", &err);
    double grpo_s = (aha_now_s() - t0) / reps;
    aha_adamw_args aa = {1e-5f, 0.9f, 0.95f, 1e-8f, 0.0f};
    t0 = aha_now_s();
    for (int r = 0; r < reps; r++)
        if (aha_train_adamw_step(t, &aa, &err)) die("adamw", &err);
    double adam_s = (aha_now_s() - t0) / reps;

    /* generation: P prompts of 64 tokens, n samples each forked from one prefill, 64 new */
    int P = 16, n = 4, plen = 64, gen = 64, S = P * n;
    aha_kv_cache *c = NULL;
    if (aha_kv_cache_create(m, S, plen + gen, &c, &err)) die("kv cache", &err);
    float *logits = malloc((size_t)S * V * 4);
    int *slots = malloc((size_t)S * sizeof(int));
    int32_t *tok = malloc((size_t)S * 4);
    t0 = aha_now_s();
    for (int p = 0; p < P; p++) {
        if (aha_model_prefill(m, c, p * n, ids + p * plen, plen, logits, &err)) die("prefill", &err);
        for (int j = 1; j < n; j++)
            if (aha_kv_cache_copy_prefix(c, p * n, p * n + j, plen, &err)) die("fork", &err);
    }
    double prefill_s = aha_now_s() - t0;
    for (int s = 0; s < S; s++) {
        slots[s] = s;
        tok[s] = (int32_t)(s % V);
    }
    t0 = aha_now_s();
    for (int g = 0; g < gen; g++) {
        if (aha_model_decode(m, c, S, slots, tok, logits, &err)) die("decode", &err);
        for (int s = 0; s < S; s++) tok[s] = (int32_t)((tok[s] * 31 + g) % V);
    }
    double decode_s = aha_now_s() - t0;
    /* the same prompts prefilled separately for every sample */
    for (int s = 0; s < S; s++) aha_kv_cache_reset_slot(c, s);
    t0 = aha_now_s();
    for (int s = 0; s < S; s++)
        if (aha_model_prefill(m, c, s, ids + (s / n) * plen, plen, logits, &err)) die("prefill", &err);
    double sep_s = aha_now_s() - t0;

    printf("%-44s %12s %14s\n", "workload", "seconds", "tokens/s");
    printf("%-44s %12.4f %14.0f\n", "score (token logprobs), 16 x 192", score_s, N / score_s);
    printf("%-44s %12.4f %14.0f\n", "GRPO forward+backward, 16 x 192", grpo_s, N / grpo_s);
    printf("%-44s %12.4f %14s\n", "AdamW step", adam_s, "-");
    printf("%-44s %12.4f %14.0f\n", "prefill 16 prompts x 64 (+ fork to n=4)", prefill_s, P * plen / prefill_s);
    printf("%-44s %12.4f %14.0f\n", "decode 64 slots x 64 new tokens", decode_s, S * gen / decode_s);
    printf("%-44s %12.4f %14s\n", "prefill 64 x 64 separately", sep_s, "-");
    printf("shared-prefix prefill speed-up: %.1fx\n", sep_s / prefill_s);
    aha_kv_cache_free(c);
    aha_train_free(t);
    aha_model_free(m);
    aha_backend_free(be);
    free(ids), free(cu), free(lp), free(mask), free(adv), free(logits), free(slots), free(tok);
    return 0;
}
