/* bench_rollout: the rollout engine on the CPU backend, the issue-4 workload.
 *
 *   bench_rollout [prompts=16] [n=16] [new_tokens=128] [prompt_len=64] [threads=0]
 *
 * A random Qwen2-shaped model (hidden 256, 4 layers, 8 heads, 4 KV heads, intermediate 704,
 * vocab 2048) is written to a temp dir; the engine samples prompts x n completions of exactly
 * new_tokens tokens (no EOS in the config) with all prompts x n sequences in one decode batch.
 * Prints new tokens/s, then the time of one prefill + (n-1) prefix copies against n separate
 * prefills of the same prompt (the shared-prefix speed-up). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "base/fs.h"
#include "base/log.h"
#include "rollout_bench.h"

int main(int argc, char **argv)
{
    int P = argc > 1 ? atoi(argv[1]) : 16, N = argc > 2 ? atoi(argv[2]) : 16;
    int NT = argc > 3 ? atoi(argv[3]) : 128, PL = argc > 4 ? atoi(argv[4]) : 64;
    int threads = argc > 5 ? atoi(argv[5]) : 0;
    aha_log_set_level(AHA_LOG_WARN);
    aha_err err = {0};
    aha_model_config cfg = {
        .arch = AHA_ARCH_QWEN2, .model_type = "qwen2", .architecture = "Qwen2ForCausalLM",
        .vocab_size = 2048, .hidden_size = 256, .intermediate_size = 704, .num_layers = 4,
        .num_heads = 8, .num_kv_heads = 4, .head_dim = 32, .max_position_embeddings = 4096,
        .rope_theta = 1e6, .rms_norm_eps = 1e-6, .tie_word_embeddings = true,
        .attention_bias = true, .bos_token_id = -1, .pad_token_id = -1, .n_eos = 0,
        .initializer_range = 0.02f,
    };
    char dir[] = "/tmp/aha_bench_rollout_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    aha_backend *be;
    aha_model *m;
    if (aha_backend_open("cpu", threads, &be, &err) != AHA_OK ||
        aha_model_init_random(&cfg, 1, be, NULL, &m, &err) != AHA_OK ||
        aha_model_save(m, dir, AHA_DT_F32, 0, &err) != AHA_OK) {
        fprintf(stderr, "bench_rollout: %s\n", err.msg);
        return 1;
    }
    rb_prompts pr;
    rb_prompts_random(&pr, P, PL, 2048);
    aha_engine_opts o = {.model_dir = dir, .device = "cpu", .threads = threads,
                         .max_batch = P * N, .max_seq_len = PL + NT};
    aha_engine *e;
    if (aha_engine_create(&o, &e, &err) != AHA_OK) {
        fprintf(stderr, "bench_rollout: %s\n", err.msg);
        return 1;
    }
    aha_gen_request r = {.n_prompts = P, .prompt_ids = pr.ptr, .prompt_lens = pr.lens, .n = N,
                         .sampling = {.temperature = 1.0f}, .max_new_tokens = NT, .seed = 1,
                         .on_done = rb_count_tokens};
    /* warm-up */
    aha_gen_request w = r;
    w.max_new_tokens = 4;
    aha_gen *g;
    aha_engine_submit(e, &w, &g, &err);
    aha_gen_wait(g, NULL, NULL, &err);
    rb_done_tokens = 0;
    double t0 = aha_now_s();
    if (aha_engine_submit(e, &r, &g, &err) != AHA_OK || aha_gen_wait(g, NULL, NULL, &err) != AHA_OK) {
        fprintf(stderr, "bench_rollout: %s\n", err.msg);
        return 1;
    }
    double dt = aha_now_s() - t0;
    printf("model: qwen2 hidden 256, 4 layers, vocab 2048 (%.2fM params), CPU fp32\n",
           (double)aha_model_numel(m) / 1e6);
    printf("generate: %d prompts x n=%d x %d new tokens (prompt %d): %ld tokens in %.2f s = %.0f new tokens/s\n",
           P, N, NT, PL, rb_done_tokens, dt, (double)rb_done_tokens / dt);
    aha_engine_free(e);

    /* shared-prefix prefill vs separate prefills, on the model directly */
    aha_kv_cache *kv;
    aha_kv_cache_create(m, N, PL + 1, &kv, &err);
    float *logits = malloc((size_t)cfg.vocab_size * 4);
    double best_shared = 1e9, best_sep = 1e9;
    for (int rep = 0; rep < 5; rep++) {
        t0 = aha_now_s();
        aha_model_prefill(m, kv, 0, pr.ptr[0], PL, logits, &err);
        for (int j = 1; j < N; j++) aha_kv_cache_copy_prefix(kv, 0, j, PL, &err);
        double a = aha_now_s() - t0;
        for (int j = 0; j < N; j++) aha_kv_cache_reset_slot(kv, j);
        t0 = aha_now_s();
        for (int j = 0; j < N; j++) aha_model_prefill(m, kv, j, pr.ptr[0], PL, logits, &err);
        double b = aha_now_s() - t0;
        for (int j = 0; j < N; j++) aha_kv_cache_reset_slot(kv, j);
        if (a < best_shared) best_shared = a;
        if (b < best_sep) best_sep = b;
    }
    printf("prefill of one %d-token prompt for n=%d samples: shared %.2f ms, separate %.2f ms: %.1fx\n",
           PL, N, best_shared * 1e3, best_sep * 1e3, best_sep / best_shared);
    aha_kv_cache_free(kv);
    aha_model_free(m);
    aha_backend_free(be);
    aha_remove_tree(dir, NULL);
    free(logits);
    rb_prompts_free(&pr);
    return 0;
}
