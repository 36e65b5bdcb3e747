/* loss.cu: the GRPO loss (Eq. 1 of the R1 paper, k3 KL) and the SFT masked cross-entropy on
 * per-token logprobs, with their gradient with respect to the logprobs and summed statistics.
 * Per token t (weight carries mask, 1/|o_i| and the caller's scale):
 *   ratio = exp(lp - old); clipped = clamp(ratio, 1 - eps_low, 1 + eps_high)
 *   surr = min(ratio * A, clipped * A); kl = exp(ref - lp) - (ref - lp) - 1
 *   loss_t = -(surr - beta * kl)
 * d surr / d lp follows torch.minimum + clamp: ratio * A when the unclipped branch is the
 * smaller or equal one (on a tie the clamp is inactive or A = 0, so the halves torch gives
 * each branch add up to ratio * A), else 0 (the clamped branch is constant there). */
#include "common.cuh"

#define LOSS_THREADS 256

/* block sums of up to AHA_GRPO_NSTATS values, one atomic per value per block */
__device__ __forceinline__ void stats_add(float *stats, float *v, int nv)
{
    __shared__ float sh[AHA_GRPO_NSTATS][32];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    for (int k = 0; k < nv; k++) {
        float s = aha__warp_sum(v[k]);
        if (lane == 0) sh[k][w] = s;
    }
    __syncthreads();
    if (threadIdx.x < nv) {
        float s = 0;
        for (int i = 0; i < (int)(blockDim.x >> 5); i++) s += sh[threadIdx.x][i];
        atomicAdd(stats + threadIdx.x, s);
    }
}

__global__ void k_grpo(float *dlp, float *stats, const float *lp, const float *old, const float *ref,
                       const float *adv, const float *weight, const float *mask, int n, float lo,
                       float hi, float beta)
{
    float acc[AHA_GRPO_NSTATS] = {0, 0, 0, 0, 0};
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        float w = weight[i], mk = mask[i], a = adv[i], l = lp[i];
        float ratio = expf(l - old[i]);
        float cl = fminf(fmaxf(ratio, lo), hi);
        float u = ratio * a, c = cl * a;
        float surr = fminf(u, c);
        float dsurr = u <= c ? u : 0.0f;
        float kl = 0.0f, dkl = 0.0f;
        if (ref) {
            float dr = ref[i] - l;
            float e = expf(dr);
            kl = e - dr - 1.0f;
            dkl = 1.0f - e; /* d kl / d lp */
        }
        float loss = -(surr - beta * kl);
        dlp[i] = w * -(dsurr - beta * dkl);
        acc[AHA_GRPO_STAT_LOSS] += w * loss;
        acc[AHA_GRPO_STAT_KL] += mk * kl;
        acc[AHA_GRPO_STAT_CLIPPED] += (mk > 0 && c < u) ? mk : 0.0f;
        acc[AHA_GRPO_STAT_RATIO] += mk * ratio;
        acc[AHA_GRPO_STAT_TOKENS] += mk;
    }
    stats_add(stats, acc, AHA_GRPO_NSTATS);
}

__global__ void k_sft(float *dlp, float *stats, const float *lp, const float *weight, int n)
{
    float acc[2] = {0, 0};
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        float w = weight[i];
        dlp[i] = -w;
        acc[0] += -lp[i] * w;
        acc[1] += w != 0.0f ? 1.0f : 0.0f;
    }
    stats_add(stats, acc, 2);
}

aha_status aha__cu_grpo_loss(aha_backend *be, aha_tensor dlp, aha_tensor stats, aha_tensor lp,
                             aha_tensor old_lp, aha_tensor ref_lp, aha_tensor adv, aha_tensor weight,
                             aha_tensor mask, int n, float eps_low, float eps_high, float beta,
                             aha_err *err)
{
    aha_tensor all[] = {dlp, stats, lp, old_lp, adv, weight, mask};
    for (size_t i = 0; i < AHA_ARRAY_LEN(all); i++)
        if (all[i].dt != AHA_DT_F32) return aha__cu_bad_dtype(err, "grpo_loss", "an argument", all[i].dt);
    bool has_ref = !aha_tensor_is_none(ref_lp);
    if (has_ref && ref_lp.dt != AHA_DT_F32) return aha__cu_bad_dtype(err, "grpo_loss", "ref_lp", ref_lp.dt);
    if (!has_ref && beta != 0.0f)
        return aha_errf(err, AHA_EINVAL, "cuda grpo_loss: beta = %g needs reference logprobs", beta);
    if (n <= 0) return AHA_OK;
    k_grpo<<<aha__blocks(n, LOSS_THREADS, 1024), LOSS_THREADS, 0, aha__cu(be)->stream>>>(
        (float *)dlp.data, (float *)stats.data, (const float *)lp.data, (const float *)old_lp.data,
        has_ref ? (const float *)ref_lp.data : NULL, (const float *)adv.data,
        (const float *)weight.data, (const float *)mask.data, n, 1.0f - eps_low, 1.0f + eps_high, beta);
    AHA_CU_LAUNCHED();
    return AHA_OK;
}

aha_status aha__cu_sft_loss(aha_backend *be, aha_tensor dlp, aha_tensor stats, aha_tensor lp,
                            aha_tensor weight, int n, aha_err *err)
{
    aha_tensor all[] = {dlp, stats, lp, weight};
    for (size_t i = 0; i < AHA_ARRAY_LEN(all); i++)
        if (all[i].dt != AHA_DT_F32) return aha__cu_bad_dtype(err, "sft_loss", "an argument", all[i].dt);
    if (n <= 0) return AHA_OK;
    k_sft<<<aha__blocks(n, LOSS_THREADS, 1024), LOSS_THREADS, 0, aha__cu(be)->stream>>>(
        (float *)dlp.data, (float *)stats.data, (const float *)lp.data, (const float *)weight.data, n);
    AHA_CU_LAUNCHED();
    return AHA_OK;
}
