/* model.h: the decoder-only transformer (Qwen2 / Qwen2.5 / Qwen3 dense / Llama) as the services
 * use it: load and save Hugging Face checkpoints, score sequences, train (GRPO and SFT
 * backward, AdamW), and generate with a KV cache. Everything runs through a backend's ops
 * table (backend/backend.h); the weight table, shapes and layer order are defined once in
 * model.c.
 *
 * Packed batches: the tokens of n_seqs sequences are concatenated (no padding);
 * cu_seqlens[s] .. cu_seqlens[s+1]-1 are the rows of sequence s. Per-token logprob arrays use
 * the "logprob layout": sequence s contributes len_s - 1 values, log p(ids[t] | ids[<t]) for
 * t = 1 .. len_s - 1, stored from offset cu_seqlens[s] - s; n_tokens - n_seqs values in all.
 * For a [B, T] batch this is exactly a [B, T-1] array.
 *
 * Threads: one aha_model (and its KV caches and train state) is used by one thread at a time. */
#ifndef AHA_MODEL_MODEL_H
#define AHA_MODEL_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "base/status.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "model/sample.h"

typedef struct aha_model aha_model;
typedef struct aha_train aha_train;
typedef struct aha_kv_cache aha_kv_cache;

typedef struct {
    /* Tokens of the largest packed batch the first forward/backward will see; activation
     * memory is sized for it and grows (one reallocation) if a larger batch arrives. 0 = 512. */
    int max_batch_tokens;
    /* Rows of logits computed at once ((rows, V) act_dtype scratch). 0 = 256. */
    int logits_chunk_rows;
    /* Keep fp32 master weights beside bf16 compute weights (the learner on CUDA; the fp32 CPU
     * backend always trains its only copy). Needed by aha_train_create on bf16 backends. */
    bool training;
} aha_model_opts;

/* ---- lifetime -------------------------------------------------------------------------- */

/* dir holds config.json and model.safetensors or a sharded model.safetensors.index.json.
 * Every tensor of the weight table must be present with the shape config.json implies
 * (AHA_EFORMAT naming the tensor otherwise); tensors the model does not use are ignored.
 * opts may be NULL. */
aha_status aha_model_open(const char *dir, aha_backend *be, const aha_model_opts *opts,
                          aha_model **out, aha_err *err);
/* A fresh model as transformers' _init_weights: matrices and embeddings ~ N(0,
 * initializer_range), norms 1, biases 0; drawn from aha_rng(seed) in weight-table order. */
aha_status aha_model_init_random(const aha_model_config *cfg, uint64_t seed, aha_backend *be,
                                 const aha_model_opts *opts, aha_model **out, aha_err *err);
/* config.json + generation_config.json + model.safetensors (dtype F32 or BF16), loadable by
 * transformers; sharded (model-0000i-of-0000N + index) above max_shard_bytes (0 = 2 GiB).
 * Reads the fp32 master weights when a train state holds them. */
aha_status aha_model_save(aha_model *m, const char *dir, aha_dtype dtype, size_t max_shard_bytes,
                          aha_err *err);
void aha_model_free(aha_model *m);

const aha_model_config *aha_model_cfg(const aha_model *m);
aha_backend *aha_model_backend(const aha_model *m);

/* ---- parameters (weight push, checkpoints, tests) -------------------------------------- */

typedef struct {
    const char *name; /* as in the checkpoint: "model.layers.3.self_attn.q_proj.weight" */
    int ndim;         /* 1 or 2 */
    int64_t shape[2];
    int64_t numel;
} aha_param_info;

int aha_model_n_params(const aha_model *m);
const aha_param_info *aha_model_param(const aha_model *m, int i);
/* index of name, or -1 */
int aha_model_param_find(const aha_model *m, const char *name);
/* elements of the weight (and gradient) buffers: all parameters plus alignment padding
 * between them; aha_model_param_count sums the parameters alone */
int64_t aha_model_numel(const aha_model *m);
int64_t aha_model_param_count(const aha_model *m);
/* Copy parameter i to / from host memory of numel elements. get reads the fp32 master when
 * training, else the compute weights. set writes the compute weights and, when training, the
 * master; the caller validates and stages a whole update first (UpdateWeights is all or
 * nothing) and applies it between decode steps. */
aha_status aha_model_param_get_f32(aha_model *m, int i, float *dst, aha_err *err);
/* Parameter i rounded to bf16 (round to nearest even, as aha_f32_to_bf16). On a bf16 backend
 * this is the compute copy itself, which every update writes as the rounded master: half the
 * bytes of the fp32 master to move, and no conversion on the host. */
aha_status aha_model_param_get_bf16(aha_model *m, int i, uint16_t *dst, aha_err *err);
aha_status aha_model_param_set_f32(aha_model *m, int i, const float *src, aha_err *err);
aha_status aha_model_param_set_bf16(aha_model *m, int i, const uint16_t *src, aha_err *err);
/* A batch of parameter writes (UpdateWeights applying a staged, complete upload): every entry
 * is checked (index in range, dtype F32 or BF16, data present, no parameter twice) before any
 * parameter is written, so a bad list changes nothing. */
typedef struct {
    int param;        /* index as aha_model_param */
    aha_dtype dtype;  /* F32 or BF16 */
    const void *data; /* numel elements of dtype */
} aha_param_update;
aha_status aha_model_set_params_from_host(aha_model *m, const aha_param_update *u, int n, aha_err *err);
/* All compute weights as one contiguous device tensor (parameters in table order, each at
 * the offset aha_model_param_offset gives): for NCCL broadcasts. */
aha_tensor aha_model_weights(aha_model *m, int64_t *numel);
int64_t aha_model_param_offset(const aha_model *m, int i);

/* ---- scoring ----------------------------------------------------------------------------- */

typedef struct {
    const int32_t *ids;        /* (n_tokens) all sequences concatenated */
    const int32_t *cu_seqlens; /* (n_seqs + 1), [0] = 0, increasing, [n_seqs] = n_tokens */
    int n_seqs;                /* every sequence has >= 1 token */
    /* optional (n_seqs), for aha_model_token_logprobs without logits: only positions
     * t >= score_from[s] (>= 1) of sequence s are scored (e.g. the prompt length: the lm_head
     * then skips prompt rows); the other logprob entries are 0. NULL scores every position. */
    const int32_t *score_from;
} aha_batch;

/* total tokens of a batch and the length of its logprob layout */
static inline int aha_batch_tokens(const aha_batch *b) { return b->cu_seqlens[b->n_seqs]; }
static inline int aha_batch_lp_len(const aha_batch *b) { return b->cu_seqlens[b->n_seqs] - b->n_seqs; }

/* Checks ids against the vocabulary and cu_seqlens for shape (AHA_EINVAL naming the entry). */
aha_status aha_batch_check(const aha_model *m, const aha_batch *b, aha_err *err);

/* logprobs (logprob layout, fp32 host); logits (n_tokens, V) fp32 host or NULL. */
aha_status aha_model_token_logprobs(aha_model *m, const aha_batch *b, float *logprobs,
                                    float *logits, aha_err *err);

/* ---- training ---------------------------------------------------------------------------- */

/* fp32 gradients and AdamW moments for every parameter (and fp32 master weights when the
 * backend computes in bf16). One train state per model. Gradients start at zero. */
aha_status aha_train_create(aha_model *m, aha_train **out, aha_err *err);
void aha_train_free(aha_train *t);
aha_status aha_train_zero_grad(aha_train *t, aha_err *err);
/* All gradients as one contiguous F32 device tensor (same offsets as the weights): for the
 * NCCL all-reduce. */
aha_tensor aha_train_grads(aha_train *t, int64_t *numel);
aha_status aha_train_grad_get_f32(aha_train *t, int i, float *dst, aha_err *err);
/* number of AdamW steps taken */
int aha_train_step_count(const aha_train *t);

typedef enum {
    AHA_GRPO_NORM_SEQ = 0, /* 1/|o_i| per sequence (DESIGN.md, the default) */
    AHA_GRPO_NORM_TOKEN,   /* no per-sequence division: scale should be 1/(batch tokens) */
} aha_grpo_norm;

typedef struct {
    const float *mask;         /* logprob layout: 1 on completion tokens, 0 elsewhere */
    const float *old_logprobs; /* logprob layout */
    const float *ref_logprobs; /* logprob layout; NULL when beta == 0 */
    const float *advantages;   /* (n_seqs) */
    float eps_low, eps_high;   /* clip range 1-eps_low .. 1+eps_high (0.2, 0.2) */
    float beta;                /* KL coefficient (0.04) */
    aha_grpo_norm norm;
    /* multiplies every sequence's term so micro-batches add up to the batch loss: 1/(number of
     * sequences in the whole batch) for AHA_GRPO_NORM_SEQ. */
    float scale;
} aha_grpo_args;

typedef struct {
    double loss;       /* this micro-batch's contribution (already scaled) */
    double kl_sum;     /* sum over completion tokens of the k3 KL */
    double clipped;    /* completion tokens whose clipped branch was active */
    double ratio_sum;  /* sum over completion tokens of the ratio */
    double tokens;     /* completion tokens */
} aha_grpo_stats;

/* Forward, GRPO loss (Eq. 1), backward; gradients ADD to t's. stats may be NULL;
 * logprobs (logprob layout) receives the current policy's logprobs when not NULL (at tokens
 * with mask != 0; the loss head may skip the others, which then read 0). */
aha_status aha_model_grpo_backward(aha_model *m, aha_train *t, const aha_batch *b,
                                   const aha_grpo_args *args, aha_grpo_stats *stats,
                                   float *logprobs, aha_err *err);

/* Masked cross-entropy: loss = scale * sum(-logp * loss_mask); gradients ADD to t's. For the
 * masked mean over a batch, scale = 1 / (masked tokens of the whole batch). */
aha_status aha_model_sft_backward(aha_model *m, aha_train *t, const aha_batch *b,
                                  const float *loss_mask, float scale, double *loss, aha_err *err);

/* sqrt of the sum of squares of all gradients */
aha_status aha_train_grad_norm(aha_train *t, double *norm, aha_err *err);
/* Scale gradients so their norm is at most max_norm (torch clip_grad_norm_: coefficient
 * max_norm / (norm + 1e-6) when below 1). Returns the norm before clipping. */
aha_status aha_train_clip(aha_train *t, double max_norm, double *norm_before, aha_err *err);

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
    /* false: decay every parameter (torch.optim.AdamW over model.parameters(), as the fixtures);
     * true: no decay on biases and norm weights (the parameter groups of transformers' Trainer,
     * which TRL's GRPOTrainer inherits) */
    bool no_decay_bias_norm;
} aha_adamw_args;
/* One AdamW step (torch semantics) on every parameter; the compute weights follow. */
aha_status aha_train_adamw_step(aha_train *t, const aha_adamw_args *a, aha_err *err);
/* Moments, step count (and master weights) to / from one safetensors file, for exact resume. */
aha_status aha_train_save(aha_train *t, const char *path, aha_err *err);
aha_status aha_train_load(aha_train *t, const char *path, aha_err *err);

/* ---- generation with a KV cache ------------------------------------------------------ */

/* Bytes a cache of slots x max_seq_len takes for this config on this backend. */
size_t aha_kv_cache_bytes(const aha_model_config *cfg, aha_dtype dt, int max_slots, int max_seq_len);
/* All memory is allocated here (AHA_ENOMEM / AHA_ELIMIT if it cannot be); nothing grows later. */
aha_status aha_kv_cache_create(aha_model *m, int max_slots, int max_seq_len, aha_kv_cache **out,
                               aha_err *err);
void aha_kv_cache_free(aha_kv_cache *c);
int aha_kv_cache_slots(const aha_kv_cache *c);
int aha_kv_cache_max_seq(const aha_kv_cache *c);
/* tokens held by slot */
int aha_kv_cache_len(const aha_kv_cache *c, int slot);
void aha_kv_cache_reset_slot(aha_kv_cache *c, int slot);
/* dst (reset first) takes src's first n positions: a group of G samples shares one prefill. */
aha_status aha_kv_cache_copy_prefix(aha_kv_cache *c, int src, int dst, int n, aha_err *err);

/* Appends n tokens to slot (positions len .. len+n-1); logits_last (V) fp32 host receives the
 * logits after the last of them when not NULL. AHA_ELIMIT when the slot would exceed
 * max_seq_len. The cache is unchanged on error. */
aha_status aha_model_prefill(aha_model *m, aha_kv_cache *c, int slot, const int32_t *ids, int n,
                             float *logits_last, aha_err *err);
/* One new token for each of n_active distinct slots (any subset, each at its own length);
 * logits (n_active, V) fp32 host. */
aha_status aha_model_decode(aha_model *m, aha_kv_cache *c, int n_active, const int *slots,
                            const int32_t *tokens, float *logits, aha_err *err);
/* aha_model_decode followed by a draw for each slot, on the backend when it offers one (only
 * n_active ids and floats cross to the host, not (n_active, V) logits) and on the host
 * otherwise: tokens_out[i] ~ the sampling distribution sp of slot slots[i]'s next position,
 * logprobs_out[i] = raw log-softmax of that token. The draw is a function of (seed, rng_ids[i],
 * the position) alone, so a completion does not depend on the slots decoded beside it. */
aha_status aha_model_decode_sample(aha_model *m, aha_kv_cache *c, int n_active, const int *slots,
                                   const int32_t *tokens, const aha_sampling *sp, uint64_t seed,
                                   const int32_t *rng_ids, int32_t *tokens_out, float *logprobs_out,
                                   aha_err *err);

#endif
