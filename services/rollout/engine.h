/* engine.h: the batching sampler behind aha-rollout.
 *
 * One engine thread owns the model and its KV cache. Generate calls submit requests (prompts
 * as token ids, n samples each); the engine admits their groups into free KV slots, prefills
 * each admitted group's prompt ONCE and copies that prefix to the group's other slots
 * (aha_kv_cache_copy_prefix), then decodes every active sequence together, one token per
 * sequence per step. A sequence that finishes (EOS, a stop string, max_new_tokens) is
 * delivered through the request's callback at once and its slot is free for waiting work
 * at the next step (continuous batching). When fewer slots than a group's samples are free,
 * the part that fits is admitted (one prefill per admitted part).
 *
 * Drawing. Sample j of prompt i has the stream seed S = prompt_seeds[i] when that is nonzero,
 * else aha_mix64(seed, i). Two ways to draw, chosen by aha_engine_opts.draw:
 *  - host: every decode step brings the (n, V) fp32 logits to the host and draws with
 *    aha_sample_token from the sequence's own generator aha_rng_seed(S, j), advanced token by
 *    token (the CPU default);
 *  - model: aha_model_decode_sample draws on the backend (on CUDA: only n ids and logprobs
 *    cross to the host); the draw at position p is a function of (AHA_ENGINE_DRAW_SEED,
 *    rng_id, p) with rng_id = (high 32 bits of aha_mix64(S, 0)) + j, so a group's samples
 *    never share a stream; different prompts collide with probability ~G/2^32 per pair. The
 *    first token (after the prefill) is drawn on the host the way the model's host fallback
 *    draws, from the same (seed, rng_id, position). Slots with different sampling settings
 *    are decoded in one call per setting.
 * Either way a sample's tokens depend only on its stream and the model, not on which other
 * sequences share the batch. Logprobs are log_softmax of the raw logits at the sampled token.
 *
 * Weights: aha_engine_update_weights hands a checked upload to the engine, which applies it
 * between two decode steps and bumps the policy version; sequences in flight then report
 * weights_changed with the version of their first and of their last token. */
#ifndef AHA_ROLLOUT_ENGINE_H
#define AHA_ROLLOUT_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"
#include "model/model.h"
#include "model/sample.h"
#include "model/weightpush.h"
#include "text/tokenizer.h"

typedef struct aha_engine aha_engine;

/* the seed of every model-drawn step (a sequence's identity is its rng_id, above) */
#define AHA_ENGINE_DRAW_SEED 0x61686172756e7331ull

typedef enum {
    AHA_DRAW_AUTO = 0, /* model when the backend draws on the device (CUDA), else host */
    AHA_DRAW_HOST,     /* full logits to the host, aha_sample_token (bitwise the CPU path) */
    AHA_DRAW_MODEL,    /* aha_model_decode_sample (its host fallback on the CPU backend) */
} aha_engine_draw;

/* "auto" | "host" | "model" -> the enum; -1 for anything else */
int aha_engine_draw_parse(const char *s);
const char *aha_engine_draw_name(aha_engine_draw d);

typedef struct {
    const char *model_dir;   /* config.json, safetensors, tokenizer.json (optional) */
    const char *device;      /* "cpu" | "cuda:N" */
    int threads;             /* CPU backend threads (0 = default) */
    int max_batch;           /* KV slots = sequences decoded together (default 64) */
    int max_seq_len;         /* prompt + completion tokens per slot (default 1024) */
    int max_queue;           /* sequences waiting for a slot, over all requests (default 65536) */
    aha_engine_draw draw;    /* where tokens are drawn (default auto) */
} aha_engine_opts;

aha_status aha_engine_create(const aha_engine_opts *o, aha_engine **out, aha_err *err);
/* Stops the thread; requests still running are finished as cancelled. */
void aha_engine_free(aha_engine *e);

/* One finished sample, valid during the callback only. */
typedef struct {
    int prompt;                 /* index of the prompt in the request */
    int index;                  /* sample index within the group */
    const int32_t *ids;         /* the completion's token ids (EOS included when it ended so) */
    const float *logprobs;      /* (n_ids) */
    int n_ids;
    const char *text;           /* decoded completion, stop string and EOS excluded; "" when
                                   the model has no tokenizer */
    size_t text_len;
    const char *finish_reason;  /* "stop" | "length" */
    int64_t version;            /* policy version of the last token */
    int64_t first_version;      /* policy version of the first token */
} aha_completion;

typedef void (*aha_completion_fn)(void *user, const aha_completion *c);

typedef struct {
    int n_prompts;
    const int32_t *const *prompt_ids;
    const int *prompt_lens;
    int n;                      /* samples per prompt */
    aha_sampling sampling;
    int max_new_tokens;
    const char *const *stop;    /* stop strings (matched on the decoded bytes) */
    int n_stop;
    uint64_t seed;
    const uint64_t *prompt_seeds; /* (n_prompts) or NULL; nonzero = that prompt's own seed */
    aha_completion_fn on_done;  /* called on the engine thread; must not block for long */
    void *user;
} aha_gen_request;

typedef struct aha_gen aha_gen;

/* Validate and enqueue. EINVAL for bad parameters or ids, ELIMIT when the request can never
 * fit (prompt + max_new_tokens over max_seq_len) or the queue is full. */
aha_status aha_engine_submit(aha_engine *e, const aha_gen_request *r, aha_gen **out, aha_err *err);
/* Drop the request's sequences at the next step (thread-safe, any thread). */
void aha_gen_cancel(aha_gen *g);
/* Block until every sample was delivered or the request was cancelled, then free it.
 * cancelled(arg) (may be NULL) is polled every 50 ms; when it returns 1 the request is
 * cancelled (a Generate call whose client went away). Returns AHA_OK, AHA_ECANCELLED, or the
 * status of an engine failure. */
aha_status aha_gen_wait(aha_gen *g, int (*cancelled)(void *arg), void *arg, aha_err *err);

/* Apply a finished, checked upload between two decode steps; returns once applied. */
aha_status aha_engine_update_weights(aha_engine *e, const aha_weight_rx *rx, aha_err *err);
/* The same for weights from elsewhere (the NCCL weights group): fn(arg, model) runs on the
 * engine thread between two decode steps; on success the policy version becomes version. */
aha_status aha_engine_update_weights_fn(aha_engine *e, aha_status (*fn)(void *arg, aha_model *m, aha_err *err),
                                        void *arg, int64_t version, aha_err *err);

typedef struct {
    int64_t policy_version;
    int active;                 /* sequences in the batch now */
    int queued;                 /* sequences waiting for a slot */
    int max_batch;
    int64_t tokens_generated;
    int64_t prefill_tokens;
    int64_t prefills;
    int64_t requests;
    int64_t steps;              /* decode steps (one token for every active sequence) */
    int64_t decode_calls;       /* model decode calls: > steps when slots of different
                                   sampling settings shared steps (model draws) */
} aha_engine_stats;
void aha_engine_get_stats(aha_engine *e, aha_engine_stats *s);

const aha_model *aha_engine_model(const aha_engine *e);
/* AHA_DRAW_HOST or AHA_DRAW_MODEL: what auto resolved to */
aha_engine_draw aha_engine_draw_mode(const aha_engine *e);
/* NULL when the model directory has no tokenizer.json */
const aha_tokenizer *aha_engine_tokenizer(const aha_engine *e);

#endif
