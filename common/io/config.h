/* config.h: a model's config.json (Qwen2 / Qwen2.5 / Qwen3 dense / Llama) and
 * generation_config.json, read and written as transformers does.
 *
 * rope_theta is read at the top level (transformers 4, published checkpoints) or inside
 * rope_parameters (transformers 5). Unsupported features (rope scaling, sliding window in use,
 * MoE) are refused with AHA_EUNSUPPORTED naming the field, never silently ignored. */
#ifndef AHA_IO_CONFIG_H
#define AHA_IO_CONFIG_H

#include <stdbool.h>

#include "../base/status.h"

typedef enum { AHA_ARCH_QWEN2 = 0, AHA_ARCH_QWEN3, AHA_ARCH_LLAMA } aha_arch;

#define AHA_MAX_EOS 8

typedef struct {
    aha_arch arch;
    char model_type[32];   /* "qwen2", "qwen3", "llama" */
    char architecture[64]; /* "Qwen2ForCausalLM", ... */
    int vocab_size;
    int hidden_size;
    int intermediate_size;
    int num_layers;
    int num_heads;
    int num_kv_heads;
    int head_dim;          /* hidden_size / num_heads unless given */
    int max_position_embeddings;
    double rope_theta;
    double rms_norm_eps;
    bool tie_word_embeddings;
    bool attention_bias;   /* q/k/v projections have a bias (Qwen2: always) */
    bool o_bias;           /* o_proj has a bias (Llama attention_bias) */
    bool mlp_bias;
    bool qk_norm;          /* Qwen3: RMSNorm on q and k per head */
    int bos_token_id;      /* -1 when none */
    int pad_token_id;      /* -1 when none */
    int eos_token_ids[AHA_MAX_EOS];
    int n_eos;
    float initializer_range;
    char dtype[16];        /* "float32", "bfloat16" (config "dtype" or "torch_dtype") */
} aha_model_config;

/* Parse config.json text. path is only used in messages. Wrong JSON types and missing
 * required fields are AHA_EFORMAT, out-of-range values AHA_EINVAL, features the decoder does
 * not implement AHA_EUNSUPPORTED; each message names the file and the field. */
aha_status aha_config_parse(const char *json, size_t len, const char *path, aha_model_config *cfg,
                            aha_err *err);
/* Apply generation_config.json text over cfg: its bos/eos/pad ids win where present. */
aha_status aha_config_parse_generation(const char *json, size_t len, const char *path,
                                       aha_model_config *cfg, aha_err *err);
/* dir/config.json, then dir/generation_config.json (eos/bos ids, optional) if present. */
aha_status aha_config_load(const char *dir, aha_model_config *cfg, aha_err *err);
/* config.json text that transformers loads (malloc'd, free()). */
char *aha_config_to_json(const aha_model_config *cfg);
/* generation_config.json text (bos/eos/pad ids), malloc'd */
char *aha_config_generation_to_json(const aha_model_config *cfg);
/* Write dir/config.json and dir/generation_config.json atomically. */
aha_status aha_config_save(const aha_model_config *cfg, const char *dir, aha_err *err);
/* true when id is one of the EOS ids */
bool aha_config_is_eos(const aha_model_config *cfg, int id);

#endif
