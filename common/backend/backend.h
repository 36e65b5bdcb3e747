/* backend.h: the ops table every compute backend implements (CPU fp32 reference, CUDA bf16),
 * in the style of ggml's backend interface. The model (common/model) is written once against
 * this table and never reads or writes tensor memory itself: it only does pointer arithmetic
 * on device addresses (aha_tensor_at) and moves data with to_device / to_host.
 *
 * Conventions every implementation keeps:
 *  - An aha_tensor is a device address plus a dtype. On the CPU backend the address is a host
 *    pointer; on CUDA it is a device pointer. Shapes travel as explicit op arguments, row-major,
 *    written beside each argument as (dim, dim, ...).
 *  - Activations, KV cache and compute weights use be->act_dtype (F32 on CPU, BF16 on CUDA).
 *    Gradients of parameters, fp32 master weights, AdamW moments, logprobs, losses, rstd and
 *    lse statistics are always F32. Index arrays (ids, positions, cu_seqlens, slots) are I32.
 *    Arithmetic accumulates in fp32 whatever the storage dtype.
 *  - An op writes its outputs; arguments named d* that say "+=" accumulate instead.
 *    "accumulate" flags pick between the two where both are needed.
 *  - Every op returns an aha_status (a CUDA error becomes AHA_EDEVICE with the call named in
 *    err); an unsupported dtype is AHA_EUNSUPPORTED. Ops run in order on one stream; to_host
 *    waits for the work queued before it.
 *  - Attention works on PACKED ragged sequences: the tokens of n_seqs sequences concatenated
 *    (N rows), sequence s occupying rows cu_seqlens[s] .. cu_seqlens[s+1]-1, causal within
 *    each sequence, no padding. Nothing in the interface needs a materialised (T, T) matrix.
 *  - Heads: q is (N, H, D), k and v are (N, KV, D); query head h reads kv head h / (H / KV)
 *    (transformers' repeat_kv). Scale 1/sqrt(D).
 *  - RoPE is the rotate-half form of transformers: for i < D/2, angle = pos * theta^(-2i/D),
 *    (x[i], x[i+D/2]) -> (x[i] cos - x[i+D/2] sin, x[i+D/2] cos + x[i] sin).
 *  - KV cache layout per layer: k and v each (slots, max_seq, KV, D), act_dtype. */
#ifndef AHA_BACKEND_BACKEND_H
#define AHA_BACKEND_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "io/safetensors.h" /* aha_dtype, aha_dtype_size */

typedef struct {
    void *data;   /* device address; never dereferenced outside the backend */
    aha_dtype dt; /* F32, BF16 or I32 */
} aha_tensor;

/* The tensor that starts elem elements after t (same dtype). */
static inline aha_tensor aha_tensor_at(aha_tensor t, int64_t elem)
{
    aha_tensor r = {(char *)t.data + (size_t)elem * aha_dtype_size(t.dt), t.dt};
    return r;
}
static inline aha_tensor aha_tensor_none(void)
{
    aha_tensor r = {NULL, AHA_DT_F32};
    return r;
}
static inline bool aha_tensor_is_none(aha_tensor t) { return t.data == NULL; }

typedef struct aha_backend aha_backend;
typedef struct aha_buf aha_buf; /* one device allocation, opaque */

/* Number of statistics the GRPO loss op accumulates (see grpo_loss). */
enum {
    AHA_GRPO_STAT_LOSS = 0,  /* sum of weight * per-token loss (this micro-batch's loss) */
    AHA_GRPO_STAT_KL,        /* sum of mask * k3 KL */
    AHA_GRPO_STAT_CLIPPED,   /* sum of mask * [clipped branch taken] */
    AHA_GRPO_STAT_RATIO,     /* sum of mask * ratio */
    AHA_GRPO_STAT_TOKENS,    /* sum of mask */
    AHA_GRPO_NSTATS
};

typedef struct {
    const char *name; /* "cpu", "cuda" */

    void (*free)(aha_backend *be); /* releases ctx; be itself is freed by aha_backend_free */

    /* --- memory ------------------------------------------------------------------------- */
    /* nbytes of zero-initialised device memory; AHA_ENOMEM when it does not fit. */
    aha_status (*buf_alloc)(aha_backend *be, size_t nbytes, aha_buf **out, aha_err *err);
    void (*buf_free)(aha_backend *be, aha_buf *buf);
    /* base address of buf (aligned to at least 256 bytes), to carve tensors from */
    void *(*buf_base)(aha_buf *buf);
    size_t (*buf_size)(aha_buf *buf);
    aha_status (*to_device)(aha_backend *be, aha_tensor dst, const void *src, size_t nbytes,
                            aha_err *err);
    aha_status (*to_host)(aha_backend *be, void *dst, aha_tensor src, size_t nbytes, aha_err *err);
    aha_status (*synchronize)(aha_backend *be, aha_err *err);

    /* --- elementwise -------------------------------------------------------------------- */
    /* x[0..n) = value (float dtypes) */
    aha_status (*fill)(aha_backend *be, aha_tensor x, int64_t n, float value, aha_err *err);
    /* dst[0..n) = src[0..n), converting dtype when they differ (F32 <-> BF16); no overlap */
    aha_status (*copy)(aha_backend *be, aha_tensor dst, aha_tensor src, int64_t n, aha_err *err);
    /* x *= s */
    aha_status (*scale)(aha_backend *be, aha_tensor x, int64_t n, float s, aha_err *err);
    /* y = a + b; y may alias a or b (residual stream) */
    aha_status (*add)(aha_backend *be, aha_tensor y, aha_tensor a, aha_tensor b, int64_t n,
                      aha_err *err);
    /* acc[0] += sum x^2 (acc F32 (1)); for gradient norms */
    aha_status (*sumsq)(aha_backend *be, aha_tensor acc, aha_tensor x, int64_t n, aha_err *err);

    /* --- embedding (also a general row gather / scatter-add) ----------------------------- */
    /* out (N, C) = table[ids[i]] rows; ids (N) I32, each in [0, V) (checked by the caller) */
    aha_status (*embedding_fwd)(aha_backend *be, aha_tensor out, aha_tensor ids, aha_tensor table,
                                int N, int C, aha_err *err);
    /* dtable (V, C) F32 += scatter of dout (N, C) rows to ids; repeated ids accumulate */
    aha_status (*embedding_bwd)(aha_backend *be, aha_tensor dtable, aha_tensor ids, aha_tensor dout,
                                int N, int C, aha_err *err);

    /* --- RMSNorm over rows of C: out = x / sqrt(mean(x^2) + eps) * w ------------------------
     * Per-head q/k norm (Qwen3) is the same op with N = tokens * heads, C = head_dim.
     * rstd (N) F32 receives 1/sqrt(mean(x^2)+eps) for the backward; may be none. out may
     * alias x when rstd is saved and x is not needed later. */
    aha_status (*rmsnorm_fwd)(aha_backend *be, aha_tensor out, aha_tensor rstd, aha_tensor x,
                              aha_tensor w, int N, int C, float eps, aha_err *err);
    /* dx (N, C) = (or += when accumulate) d/dx; dw (C) F32 += d/dw. x is the forward input,
     * rstd its saved statistic. */
    aha_status (*rmsnorm_bwd)(aha_backend *be, aha_tensor dx, aha_tensor dw, aha_tensor dout,
                              aha_tensor x, aha_tensor w, aha_tensor rstd, int N, int C,
                              bool accumulate, aha_err *err);

    /* --- matmul: y (M, N) = x (M, K) . w (N, K)^T (+ bias (N)), weights as transformers stores
     * them (out_features, in_features). bias may be none. */
    aha_status (*matmul)(aha_backend *be, aha_tensor y, aha_tensor x, aha_tensor w, aha_tensor bias,
                         int M, int K, int N, aha_err *err);
    /* dx (M, K) = (or += when accumulate) dy (M, N) . w (N, K) */
    aha_status (*matmul_bwd_dx)(aha_backend *be, aha_tensor dx, aha_tensor dy, aha_tensor w, int M,
                                int K, int N, bool accumulate, aha_err *err);
    /* dw (N, K) F32 += dy^T . x; dbias (N) F32 += column sums of dy (dbias may be none) */
    aha_status (*matmul_bwd_dw)(aha_backend *be, aha_tensor dw, aha_tensor dbias, aha_tensor dy,
                                aha_tensor x, int M, int K, int N, aha_err *err);

    /* --- RoPE in place on x (N, nh, D) with pos (N) I32 ---------------------------------- */
    aha_status (*rope_fwd)(aha_backend *be, aha_tensor x, aha_tensor pos, int N, int nh, int D,
                           float theta, aha_err *err);
    /* the inverse rotation, applied in place to a gradient */
    aha_status (*rope_bwd)(aha_backend *be, aha_tensor dx, aha_tensor pos, int N, int nh, int D,
                           float theta, aha_err *err);

    /* --- causal GQA attention over packed sequences ---------------------------------------
     * out (N, H, D); lse (N, H) F32 = logsumexp of each query's scaled scores (for the
     * backward); cu_seqlens (n_seqs + 1) I32 on the device; max_seqlen = the longest
     * sequence (a launch bound). */
    aha_status (*attention_fwd)(aha_backend *be, aha_tensor out, aha_tensor lse, aha_tensor q,
                                aha_tensor k, aha_tensor v, aha_tensor cu_seqlens, int n_seqs,
                                int N, int H, int KV, int D, int max_seqlen, aha_err *err);
    /* dq (N, H, D), dk, dv (N, KV, D) written (not accumulated) from dout (N, H, D) and the
     * forward's q, k, v, out, lse. */
    aha_status (*attention_bwd)(aha_backend *be, aha_tensor dq, aha_tensor dk, aha_tensor dv,
                                aha_tensor dout, aha_tensor q, aha_tensor k, aha_tensor v,
                                aha_tensor out, aha_tensor lse, aha_tensor cu_seqlens, int n_seqs,
                                int N, int H, int KV, int D, int max_seqlen, aha_err *err);

    /* --- KV cache ---------------------------------------------------------------------------
     * kv_store: rows k, v (n, KV, D) are written to kc, vc (slots, max_seq, KV, D) at
     * [slots[i], pos[i]]. attention_cached: query i (one row of q (n, H, D)) belongs to slot
     * slots[i] and attends to that slot's cached positions 0 .. lens[i]-1 (its own key
     * included, stored beforehand). Decode is n = active slots, one query each; a prefill of
     * m tokens onto a slot already holding L is n = m queries with lens L+1 .. L+m. */
    aha_status (*kv_store)(aha_backend *be, aha_tensor kc, aha_tensor vc, aha_tensor k, aha_tensor v,
                           aha_tensor slots, aha_tensor pos, int n, int KV, int D, int max_seq,
                           aha_err *err);
    aha_status (*attention_cached)(aha_backend *be, aha_tensor out, aha_tensor q, aha_tensor kc,
                                   aha_tensor vc, aha_tensor slots, aha_tensor lens, int n, int H,
                                   int KV, int D, int max_seq, aha_err *err);

    /* --- SwiGLU: out = silu(g) * u over n elements --------------------------------------- */
    aha_status (*swiglu_fwd)(aha_backend *be, aha_tensor out, aha_tensor g, aha_tensor u, int64_t n,
                             aha_err *err);
    /* dg, du written; may not alias g, u */
    aha_status (*swiglu_bwd)(aha_backend *be, aha_tensor dg, aha_tensor du, aha_tensor dout,
                             aha_tensor g, aha_tensor u, int64_t n, aha_err *err);

    /* --- token logprobs from a chunk of logits rows ---------------------------------------
     * logits (n, V) act_dtype; targets (n) I32, -1 = no target. lp (n) F32 =
     * log_softmax(logits[i])[targets[i]] (0 when no target); lse (n) F32 = logsumexp(logits[i]).
     * The model feeds row chunks so (tokens, V) is never materialised at once. */
    aha_status (*logprob_fwd)(aha_backend *be, aha_tensor lp, aha_tensor lse, aha_tensor logits,
                              aha_tensor targets, int n, int V, aha_err *err);
    /* dlogits (n, V) = dlp[i] * (onehot(targets[i]) - softmax(logits[i])) (0 rows without a
     * target); dlogits may alias logits (overwritten in place). dlp (n) F32. */
    aha_status (*logprob_bwd)(aha_backend *be, aha_tensor dlogits, aha_tensor logits, aha_tensor lse,
                              aha_tensor targets, aha_tensor dlp, int n, int V, aha_err *err);

    /* --- losses on per-token logprobs (all F32, length n) ---------------------------------
     * GRPO, Eq. 1 of the R1 paper with the k3 KL, per token t:
     *   ratio = exp(lp - old); clipped = clamp(ratio, 1 - eps_low, 1 + eps_high)
     *   surr = min(ratio * adv, clipped * adv)   (torch.minimum gradient: the smaller branch)
     *   kl = exp(ref - lp) - (ref - lp) - 1
     *   loss_t = -(surr - beta * kl);  dlp = weight * d loss_t / d lp
     * weight carries mask, 1/|o_i| and the caller's overall scale, so micro-batches add up to
     * the batch mean. stats (AHA_GRPO_NSTATS) F32 += the sums named by AHA_GRPO_STAT_*; a
     * "clipped" token is one where mask > 0 and the clamped branch is strictly smaller.
     * ref may be none when beta == 0. */
    aha_status (*grpo_loss)(aha_backend *be, aha_tensor dlp, aha_tensor stats, aha_tensor lp,
                            aha_tensor old_lp, aha_tensor ref_lp, aha_tensor adv, aha_tensor weight,
                            aha_tensor mask, int n, float eps_low, float eps_high, float beta,
                            aha_err *err);
    /* SFT masked cross-entropy: loss_t = -lp * weight; dlp = -weight; stats[0] += sum loss_t,
     * stats[1] += sum of (weight != 0) (tokens). */
    aha_status (*sft_loss)(aha_backend *be, aha_tensor dlp, aha_tensor stats, aha_tensor lp,
                           aha_tensor weight, int n, aha_err *err);

    /* --- optimizer ------------------------------------------------------------------------
     * torch.optim.AdamW on fp32 master params p, with g scaled by grad_scale first (gradient
     * clipping folded in), step t >= 1:
     *   p *= 1 - lr * wd; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2
     *   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
     * p_out (act_dtype copy for the forward) = p when not none. */
    aha_status (*adamw)(aha_backend *be, aha_tensor p, aha_tensor p_out, aha_tensor g, aha_tensor m,
                        aha_tensor v, int64_t n, float lr, float beta1, float beta2, float eps,
                        float weight_decay, float grad_scale, int step, aha_err *err);

    /* --- row scatter (optional: NULL makes the model compute the training head densely) ---
     * dst rows idx[i] = src rows i for i < n: src (n, C), dst (rows, C), same dtype (act_dtype),
     * idx (n) I32 distinct; other rows of dst untouched. The gather direction is embedding_fwd
     * with dst as the table. Lets the loss head skip rows that carry no loss (prompts). */
    aha_status (*scatter_rows)(aha_backend *be, aha_tensor dst, aha_tensor idx, aha_tensor src, int n, int C,
                               aha_err *err);

    /* --- sampling (optional: NULL when the backend has none; the model then draws on the host)
     * For each row i of logits (n, V) act_dtype: tokens (n) I32 receives a draw from
     * softmax(logits[i] / temperature) restricted by top_k and top_p as model/sample.h defines
     * them (the argmax, lowest index among ties, when temperature == 0); logprobs (n) F32 =
     * log_softmax of the RAW logits at that token. The draw is a function of (seed,
     * rng_ids[i], rng_pos[i]) alone (counter-based), never of how rows were batched. */
    aha_status (*sample)(aha_backend *be, aha_tensor tokens, aha_tensor logprobs, aha_tensor logits,
                         aha_tensor rng_ids, aha_tensor rng_pos, int n, int V, float temperature,
                         int top_k, float top_p, uint64_t seed, aha_err *err);

    /* --- op graphs (optional: NULL = ops always run one by one) --------------------------
     * graph_begin records instead of running the ops queued after it, until graph_end, which
     * keeps the recording under key (replacing one with the same key). graph_launch runs the
     * recording of key (*found = false, nothing run, when there is none). A recording replays
     * the ops with the same arguments and addresses; only the data they read may differ, so no
     * to_device, to_host, buf_alloc or buf_free may come between begin and end, and the caller
     * puts everything the op arguments depend on into key. On error inside a recording,
     * graph_end(be, 0, ...) discards it. For decode steps, whose hundreds of small launches
     * otherwise cost more than their arithmetic. */
    aha_status (*graph_begin)(aha_backend *be, aha_err *err);
    aha_status (*graph_end)(aha_backend *be, uint64_t key, aha_err *err);
    aha_status (*graph_launch)(aha_backend *be, uint64_t key, bool *found, aha_err *err);

    /* --- fusions (optional: NULL makes the model issue the unfused ops) -------------------
     * y (N, C) = a + b, rounded to y's dtype, then out = rmsnorm(y) * w exactly as rmsnorm_fwd
     * computes it from the stored y (rstd (N) F32 saved; may be none). y may alias a or b;
     * out may not alias y, a or b. The residual add and the next layer's norm in one pass. */
    aha_status (*add_rmsnorm)(aha_backend *be, aha_tensor y, aha_tensor out, aha_tensor rstd, aha_tensor a,
                              aha_tensor b, aha_tensor w, int N, int C, float eps, aha_err *err);
    /* rows 0..rows-1 of width elements: dst + r * dst_pitch = src + r * src_pitch (same dtype,
     * pitches in elements, no overlap); one call for a KV-cache fork's 2 * layers segments. */
    aha_status (*copy2d)(aha_backend *be, aha_tensor dst, int64_t dst_pitch, aha_tensor src, int64_t src_pitch,
                         int64_t width, int64_t rows, aha_err *err);
    /* rope_fwd of q (N, H, D) and of k (N, KV, D) with pos (N), then, when kc is not none,
     * kv_store of the rotated k and of v (N, KV, D) into kc, vc at (slots, pos): the same
     * values as rope_fwd, rope_fwd and kv_store, in one launch. slots may be none without kc. */
    aha_status (*rope_qk_store)(aha_backend *be, aha_tensor q, aha_tensor k, aha_tensor v, aha_tensor kc,
                                aha_tensor vc, aha_tensor slots, aha_tensor pos, int N, int H, int KV, int D,
                                int max_seq, float theta, aha_err *err);
    /* rope_qk_store from one fused projection: qkv (N, (H + 2 KV) D) holds each token's q
     * heads, then k heads, then v heads. Writes the rotated q to q (N, H, D), the rotated k and
     * v to k, v (N, KV, D) unless those are none, and, when kc is not none, both into the cache
     * as rope_qk_store does. The same values as splitting qkv then rope_qk_store. */
    aha_status (*rope_qkv)(aha_backend *be, aha_tensor qkv, aha_tensor q, aha_tensor k, aha_tensor v, aha_tensor kc,
                           aha_tensor vc, aha_tensor slots, aha_tensor pos, int N, int H, int KV, int D, int max_seq,
                           float theta, aha_err *err);
    /* nb products sharing x: y_b (M, N) = x (M, K) . w_b^T (+ bias_b) for b < nb, with
     * w_b = w + b * w_stride, bias_b = bias + b * bias_stride, y_b = y + b * y_stride (elements;
     * no overlap). The model's k and v, and gate and up, whose weights sit a fixed distance
     * apart in the weight buffer. */
    aha_status (*matmul_batched)(aha_backend *be, aha_tensor y, int64_t y_stride, aha_tensor x, aha_tensor w,
                                 int64_t w_stride, aha_tensor bias, int64_t bias_stride, int M, int K, int N, int nb,
                                 aha_err *err);
    /* dw_b (N, K) F32 += dy_b^T . x, dbias_b (N) F32 += column sums of dy_b, for b < nb with
     * the same stride convention (dbias may be none) */
    aha_status (*matmul_bwd_dw_batched)(aha_backend *be, aha_tensor dw, int64_t dw_stride, aha_tensor dbias,
                                        int64_t dbias_stride, aha_tensor dy, int64_t dy_stride, aha_tensor x, int M,
                                        int K, int N, int nb, aha_err *err);
} aha_backend_ops;

struct aha_backend {
    /* read-only after creation */
    const aha_backend_ops *ops;
    char device[32];     /* "cpu", "cuda:0" */
    aha_dtype act_dtype; /* activations, KV cache and compute weights */
    /* private */
    void *ctx;
};

/* device: "cpu" or "cuda:N" (AHA_EUNSUPPORTED when this build has no CUDA). threads: CPU
 * threads for BLAS (0 = OpenBLAS default). */
aha_status aha_backend_open(const char *device, int threads, aha_backend **out, aha_err *err);
void aha_backend_free(aha_backend *be);

/* The constructors behind aha_backend_open. */
aha_status aha_backend_cpu_create(int threads, aha_backend **out, aha_err *err);
/* Defined by common/backend/cuda when the CUDA backend is built (AHA_HAVE_CUDA). */
aha_status aha_backend_cuda_create(int device, aha_backend **out, aha_err *err);
bool aha_backend_have_cuda(void);

#endif
