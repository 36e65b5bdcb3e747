/* bench_rollout_draw: the rollout engine drawing on the host (the (n, V) fp32 logits cross to
 * the host every step, aha_sample_token per row) against drawing on the device
 * (aha_model_decode_sample: n ids and logprobs cross), same model, same workload.
 *
 *   bench_rollout_draw [device=cuda:0] [prompts=16] [n=16] [new_tokens=64] [prompt_len=128]
 *                      [layers=4]
 *
 * A random model of the Qwen2.5-0.5B layer shape (hidden 896, 14 heads, 2 KV heads,
 * intermediate 4864, vocabulary 151,936, tied) with `layers` layers is written to a temp dir;
 * each mode samples prompts x n completions of exactly new_tokens tokens (no EOS in the
 * config; temperature 1, no top-k / top-p, so the host draw is a softmax and one categorical
 * per row) with all sequences in one decode batch. One warm-up request per mode (CUDA graph
 * recordings, allocations) precedes the timed one. Prints new tokens/s and ms per step. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "base/fs.h"
#include "base/log.h"
#include "rollout_bench.h"

static int generate(aha_engine *e, aha_gen_request *r, double *secs)
{
    aha_err err = {0};
    aha_gen *g = NULL;
    rb_done_tokens = 0;
    double t0 = aha_now_s();
    if (aha_engine_submit(e, r, &g, &err) != AHA_OK || aha_gen_wait(g, NULL, NULL, &err) != AHA_OK) {
        fprintf(stderr, "bench_rollout_draw: %s\n", err.msg);
        return 1;
    }
    *secs = aha_now_s() - t0;
    return 0;
}

int main(int argc, char **argv)
{
    const char *dev = argc > 1 ? argv[1] : "cuda:0";
    int P = argc > 2 ? atoi(argv[2]) : 16, N = argc > 3 ? atoi(argv[3]) : 16;
    int NT = argc > 4 ? atoi(argv[4]) : 64, PL = argc > 5 ? atoi(argv[5]) : 128;
    int L = argc > 6 ? atoi(argv[6]) : 4;
    if (P < 1 || N < 1 || NT < 1 || PL < 1 || L < 1) {
        fprintf(stderr, "usage: bench_rollout_draw [device] [prompts] [n] [new_tokens] [prompt_len] [layers]\n");
        return 2;
    }
    aha_log_set_level(AHA_LOG_WARN);
    /* line by line: a run stopped at a time limit keeps what it printed */
    setvbuf(stdout, NULL, _IOLBF, 0);
    aha_err err = {0};
    aha_model_config cfg = {
        .arch = AHA_ARCH_QWEN2, .model_type = "qwen2", .architecture = "Qwen2ForCausalLM",
        .vocab_size = 151936, .hidden_size = 896, .intermediate_size = 4864, .num_layers = L,
        .num_heads = 14, .num_kv_heads = 2, .head_dim = 64, .max_position_embeddings = 32768,
        .rope_theta = 1e6, .rms_norm_eps = 1e-6, .tie_word_embeddings = true,
        .attention_bias = true, .bos_token_id = -1, .pad_token_id = -1, .n_eos = 0,
        .initializer_range = 0.02f,
    };
    char dir[] = "/tmp/aha_bench_rollout_draw_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    aha_backend *cpu;
    aha_model *m;
    if (aha_backend_open("cpu", 0, &cpu, &err) != AHA_OK || aha_model_init_random(&cfg, 1, cpu, NULL, &m, &err) != AHA_OK ||
        aha_model_save(m, dir, AHA_DT_BF16, 0, &err) != AHA_OK) {
        fprintf(stderr, "bench_rollout_draw: %s\n", err.msg);
        return 1;
    }
    aha_model_free(m);
    aha_backend_free(cpu);
    rb_prompts pr;
    rb_prompts_random(&pr, P, PL, 151936);
    printf("bench_rollout_draw on %s: %d layers of the Qwen2.5-0.5B shape, vocabulary 151,936; %d prompts x %d "
           "samples, prompt %d, %d new tokens, temperature 1\n",
           dev, L, P, N, PL, NT);
    printf("%-6s %10s %14s %12s\n", "draw", "seconds", "new tokens/s", "ms / step");
    int rc = 0;
    aha_engine_draw modes[2] = {AHA_DRAW_HOST, AHA_DRAW_MODEL};
    for (int k = 0; k < 2 && rc == 0; k++) {
        aha_engine_opts o = {.model_dir = dir, .device = dev, .max_batch = P * N, .max_seq_len = PL + NT + 1,
                             .draw = modes[k]};
        aha_engine *e = NULL;
        if (aha_engine_create(&o, &e, &err) != AHA_OK) {
            fprintf(stderr, "bench_rollout_draw: %s\n", err.msg);
            rc = 1;
            break;
        }
        aha_gen_request r = {.n_prompts = P, .prompt_ids = pr.ptr, .prompt_lens = pr.lens, .n = N,
                             .sampling = {.temperature = 1.0f}, .max_new_tokens = NT, .seed = 3,
                             .on_done = rb_count_tokens};
        double warm = 0, secs = 0;
        rc = generate(e, &r, &warm);
        r.seed = 4;
        if (rc == 0) rc = generate(e, &r, &secs);
        if (rc == 0)
            printf("%-6s %10.3f %14.0f %12.2f\n", aha_engine_draw_name(modes[k]), secs,
                   (double)rb_done_tokens / secs, 1e3 * secs / NT);
        aha_engine_free(e);
    }
    aha_remove_tree(dir, NULL);
    rb_prompts_free(&pr);
    return rc;
}
