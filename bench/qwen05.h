/* qwen05.h: the Qwen2.5-0.5B shape the GPU benchmarks share (bench_gpu, bench_dist; the peer
 * bench/peer/bench_peer.py builds the same), also tests/gpu/test_cuda_model's cpu-vs-cuda
 * model: 494M parameters at 24 layers, vocabulary 151,936,
 * tied embeddings, q/k/v biases, bf16, random init, no bos/pad. */
#ifndef AHA_BENCH_QWEN05_H
#define AHA_BENCH_QWEN05_H

#include <stdio.h>
#include <string.h>

#include "io/config.h"

static inline void bench_qwen05_config(aha_model_config *cfg, int layers)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->arch = AHA_ARCH_QWEN2;
    snprintf(cfg->model_type, sizeof cfg->model_type, "qwen2");
    snprintf(cfg->architecture, sizeof cfg->architecture, "Qwen2ForCausalLM");
    cfg->vocab_size = 151936;
    cfg->hidden_size = 896;
    cfg->intermediate_size = 4864;
    cfg->num_layers = layers;
    cfg->num_heads = 14;
    cfg->num_kv_heads = 2;
    cfg->head_dim = 64;
    cfg->max_position_embeddings = 32768;
    cfg->rope_theta = 1e6;
    cfg->rms_norm_eps = 1e-6;
    cfg->tie_word_embeddings = true;
    cfg->attention_bias = true;
    cfg->bos_token_id = cfg->pad_token_id = -1;
    cfg->initializer_range = 0.02f;
    snprintf(cfg->dtype, sizeof cfg->dtype, "bfloat16");
}

#endif
